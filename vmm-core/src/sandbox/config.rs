//! What a sandbox boots and its defaults: [`SandboxConfig`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::paths;

/// Default guest memory of a sandbox, MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 256;
/// The guest kernel command line of a sandbox ([`crate::vm::DEFAULT_CMDLINE`]:
/// `quiet`, since every console byte is a VM exit).
pub const SANDBOX_CMDLINE: &str = crate::vm::DEFAULT_CMDLINE;
/// How long [`super::Sandbox::new`] waits for the agent after starting the VM.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// How long the host waits past a command's timeout for the agent's answer
/// before it kills the VM.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);
/// How long the host waits for any single answer of a request without a
/// timeout of its own (a file chunk, a ping, a hello).
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Output (stdout and stderr together) kept by default: 64 MiB.
pub const DEFAULT_MAX_OUTPUT: u64 = 64 * 1024 * 1024;
/// The largest file [`super::Sandbox::read_file`] accepts by default: 1 GiB.
pub const DEFAULT_MAX_FILE: u64 = 1 << 30;

/// How to build a [`super::Sandbox`].
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The guest kernel (`vmlinux` or `bzImage`).
    pub kernel: PathBuf,
    /// The initramfs holding the agent (as `/init`).
    pub initrd: PathBuf,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub vcpus: u32,
    /// The guest kernel command line ([`SANDBOX_CMDLINE`]).
    pub cmdline: String,
    /// Words added to the guest kernel command line.
    pub extra_cmdline: String,
    /// Timeout of a command that sets none; `None` lets it run forever.
    pub default_timeout: Option<Duration>,
    /// Host grace past a command's timeout (see [`DEFAULT_GRACE`]).
    pub grace: Duration,
    /// Longest wait for one answer of an untimed request
    /// (see [`DEFAULT_IO_TIMEOUT`]).
    pub io_timeout: Duration,
    /// Longest wait from starting the VM to the agent's hello.
    pub boot_timeout: Duration,
    /// Output kept per command when the command sets no limit.
    pub max_output: u64,
    /// Also expose the vsock device as a Firecracker-style hybrid Unix
    /// socket at this path (host-initiated `CONNECT <port>\n`, guest
    /// connections to `<path>_<port>`).
    pub vsock_uds: Option<PathBuf>,
    /// Copy the guest console to the host's stderr (for debugging boots).
    pub echo_console: bool,
    /// Start from a template (default): the first sandbox of a shape boots
    /// and snapshots itself into the cache; every later one restores that
    /// snapshot. `false` cold-boots every time.
    pub use_template: bool,
    /// The cache directory whose `templates/` holds templates (default:
    /// the embervm cache directory, `$EMBERVM_CACHE_DIR` or
    /// `~/.cache/embervm`).
    pub template_cache: Option<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self::from_image_dir(paths::default_guest_dir())
    }
}

impl SandboxConfig {
    /// The default guest (`make guest`), 256 MiB, 1 vCPU.
    pub fn new() -> Self {
        Self::default()
    }

    /// The guest in `dir` (`vmlinux` and `initramfs.cpio.gz`, as
    /// `make guest` publishes them).
    pub fn from_image_dir(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        Self::from_paths(dir.join(paths::VMLINUX), dir.join(paths::INITRAMFS))
    }

    /// An explicit kernel and initramfs.
    pub fn from_paths(kernel: impl Into<PathBuf>, initrd: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            initrd: initrd.into(),
            memory_mib: DEFAULT_MEMORY_MIB,
            vcpus: 1,
            cmdline: SANDBOX_CMDLINE.to_string(),
            extra_cmdline: String::new(),
            default_timeout: None,
            grace: DEFAULT_GRACE,
            io_timeout: DEFAULT_IO_TIMEOUT,
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            max_output: DEFAULT_MAX_OUTPUT,
            vsock_uds: None,
            echo_console: false,
            use_template: true,
            template_cache: None,
        }
    }

    /// Set the guest memory (MiB).
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Set the vCPU count.
    pub fn vcpus(mut self, n: u32) -> Self {
        self.vcpus = n;
        self
    }

    /// Boot every sandbox instead of restoring a template.
    pub fn cold_boot(mut self) -> Self {
        self.use_template = false;
        self
    }

    /// The full guest kernel command line.
    pub fn full_cmdline(&self) -> String {
        format!("{} {}", self.cmdline, self.extra_cmdline)
            .trim()
            .to_string()
    }

    /// Set the default command timeout.
    pub fn default_timeout(mut self, t: Option<Duration>) -> Self {
        self.default_timeout = t;
        self
    }
}
