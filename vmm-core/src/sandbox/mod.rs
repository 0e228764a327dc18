//! The public `Sandbox` API: run untrusted code in a fresh microVM.
//!
//! [`Sandbox::new`] boots the guest (kernel + initramfs whose `/init` is the
//! embervm agent) with a virtio-vsock device, on a runner thread of its own.
//! It waits, signalled and never polled, for the agent's `EMBERVM_READY`
//! console line (or the VM's end, which fails the boot with the console's
//! last lines), connects to the agent on vsock port
//! [`embervm_protocol::AGENT_VSOCK_PORT`], exchanges
//! hellos (an agent of another protocol version is refused) and sends fresh
//! entropy and the wall-clock time (`Sync`).
//!
//! Each request then takes an idle agent connection from a small pool, or
//! opens one (a vsock connect and a hello), so several threads can exec at
//! once in one sandbox (`Sandbox` is `Send + Sync`), each on its own
//! connection, as the protocol wants. A connection that saw an error other
//! than an agent's refusal is dropped, never reused.
//!
//! The host keeps its own deadlines ([`conn::TimedStream`]): a command's
//! timeout plus [`SandboxConfig::grace`], or [`SandboxConfig::io_timeout`]
//! per answer for untimed requests. When one passes, the guest is wedged:
//! the VM is killed and the call returns [`SandboxError::Unresponsive`]; a
//! caller is never held by a guest. Everything the guest sends is checked
//! (the protocol client checks each message against the exchange; exit
//! records, file lengths and call results are checked here), and output kept
//! in memory is bounded on the host side too.
//!
//! [`Sandbox::close`] (or dropping the sandbox) kills the VM and joins its
//! runner thread, which joins the vCPU and device threads: nothing is left.
//!
//! Submodules: [`config`] (what to boot), [`command`] ([`Command`],
//! [`Output`], [`Language`]), [`error`], [`call`] (the function-call
//! runners), [`conn`] (deadlines), [`watch`] (console and VM state).

pub mod call;
pub mod command;
pub mod config;
pub mod conn;
pub mod error;
pub mod watch;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use embervm_protocol::{
    AgentClient, ClientError, ExecRequest, Hello, OutputStream, Stdin, SyncReport, UserSpec,
    AGENT_VSOCK_PORT,
};

pub use embervm_protocol::{ErrorKind, OutputStream as Stream};
pub use serde_json;

pub use command::{Command, Language, Output};
pub use config::SandboxConfig;
pub use error::{CallError, SandboxError};

use crate::devices::console::ConsoleConfig;
use crate::devices::virtio::vsock::{VsockConfig, VsockError, VsockHandle, VsockListener};
use crate::error::VmError;
use crate::paths;
use crate::snapshot::template::{self, TemplateInputs};
use crate::snapshot::SnapshotInfo;
use crate::vm::{RestoreConfig, SetupTimings, Vm, VmConfig, VmHandle};
use conn::{Conn, Deadline, TimedStream};
use error::Result;
use watch::{Ready, VmWatch};

/// The guest CID of every sandbox (each VM has its own vsock device).
pub const SANDBOX_GUEST_CID: u64 = 3;
/// Bytes of entropy sent to the guest on start.
const SYNC_ENTROPY: usize = 64;
/// Stdin up to this size travels inside the exec request; larger stdin is
/// streamed (the frame limit is 16 MiB).
const INLINE_STDIN: usize = 1 << 20;
/// Idle agent connections kept for reuse.
const POOL_MAX: usize = 16;
/// Where code handed to [`Sandbox::run`] and [`Sandbox::call`] is written.
const CODE_DIR: &str = "/tmp/embervm";
/// The Python call runner in the guest (root-owned, read-only).
const PY_RUNNER_PATH: &str = "/opt/embervm/call.py";
/// Longest wait for one agent connection attempt while a sandbox starts
/// (see [`Sandbox::open`]).
const START_ATTEMPT: Duration = Duration::from_secs(10);
/// Longest wait for the VM's end to be recorded after its streams closed.
const EXIT_SETTLE: Duration = Duration::from_secs(2);

/// A running microVM with the agent connected.
pub struct Sandbox {
    config: SandboxConfig,
    vm: VmHandle,
    vsock: VsockHandle,
    watch: Arc<VmWatch>,
    runner: Mutex<Option<JoinHandle<()>>>,
    pool: Mutex<Vec<Conn>>,
    closed: Mutex<Option<String>>,
    agent: Option<Hello>,
    sync: Option<SyncReport>,
    next_id: AtomicU64,
    py_runner: AtomicBool,
    boot_time: Duration,
    origin: Origin,
    vm_setup: SetupTimings,
}

fn check_timeouts(config: &SandboxConfig) -> Result<()> {
    if config.boot_timeout.is_zero() || config.io_timeout.is_zero() {
        return Err(SandboxError::Config(
            "boot_timeout and io_timeout must be above zero".into(),
        ));
    }
    Ok(())
}

fn console_for(watch: &Arc<VmWatch>, echo: bool) -> ConsoleConfig {
    let w = watch.clone();
    ConsoleConfig::callback(move |bytes| w.console(bytes, echo))
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("kernel", &self.config.kernel)
            .field("memory_mib", &self.config.memory_mib)
            .field("vcpus", &self.config.vcpus)
            .field("alive", &self.is_alive())
            .finish()
    }
}

fn check_file(what: &'static str, path: &Path) -> Result<()> {
    if path.is_file() {
        Ok(())
    } else {
        Err(SandboxError::GuestMissing {
            what,
            path: path.to_path_buf(),
        })
    }
}

/// Fresh random bytes from the host kernel.
fn entropy() -> Result<Vec<u8>> {
    let mut buf = vec![0u8; SYNC_ENTROPY];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of
        // `buf`, which lives across the call; getrandom writes at most that.
        let n = unsafe {
            libc::getrandom(
                buf[got..].as_mut_ptr().cast::<libc::c_void>(),
                buf.len() - got,
                0,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(SandboxError::Io {
                what: "getrandom",
                source: e,
            });
        }
        got += n as usize;
    }
    Ok(buf)
}

/// How a sandbox's VM came to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Booted (no template asked for, or this call made the template).
    ColdBoot,
    /// Booted, and this call saved the template at this path.
    MadeTemplate(PathBuf),
    /// Restored from the template or snapshot at this path.
    Restored(PathBuf),
}

impl Sandbox {
    /// Start a sandbox and connect to its agent. With
    /// [`SandboxConfig::use_template`] (the default) the first sandbox of a
    /// shape (kernel, initramfs, memory, vCPUs, command line) boots and
    /// saves a template in the cache; later ones restore it in
    /// milliseconds. A template that cannot be used (damaged, from another
    /// embervm version or another host) is removed and made again.
    pub fn new(config: SandboxConfig) -> Result<Sandbox> {
        if !config.use_template {
            return Self::cold_boot(config);
        }
        check_file("kernel", &config.kernel)?;
        check_file("initramfs", &config.initrd)?;
        let cache = config
            .template_cache
            .clone()
            .unwrap_or_else(paths::cache_dir);
        let cmdline = config.full_cmdline();
        let (kernel, initrd) = (config.kernel.clone(), config.initrd.clone());
        let inputs = TemplateInputs {
            kernel: &kernel,
            initrd: &initrd,
            memory_mib: config.memory_mib,
            vcpus: config.vcpus,
            cmdline: &cmdline,
        };
        let key = template::key(&inputs)?;
        if let Some(dir) = template::lookup(&cache, &key) {
            match Self::from_snapshot(&dir, config.clone()) {
                Ok(sb) => return Ok(sb),
                Err(SandboxError::Vm(VmError::Snapshot(e))) => {
                    log::warn!(
                        "template {} is unusable ({e}); making it again",
                        dir.display()
                    );
                    template::discard(&dir);
                }
                Err(e) => return Err(e),
            }
        }
        let mut sb = Self::cold_boot(config)?;
        // A template that cannot be saved (read-only or full cache) costs
        // the next sandbox a boot, not this one its result.
        match sb.save_template(&cache, &key, &inputs) {
            Ok(dir) => sb.origin = Origin::MadeTemplate(dir),
            Err(e) => log::warn!("could not save a template in {}: {e}", cache.display()),
        }
        Ok(sb)
    }

    /// Snapshot this freshly booted sandbox as the template `key`, and
    /// drop older templates of the same shape.
    fn save_template(
        &self,
        cache: &Path,
        key: &str,
        inputs: &TemplateInputs<'_>,
    ) -> Result<PathBuf> {
        let staging = template::staging_dir(cache, key)?;
        let saved = self
            .snapshot(&staging)
            .and_then(|_| Ok(template::write_shape(&staging, inputs)?));
        if let Err(e) = saved {
            template::discard(&staging);
            return Err(e);
        }
        let dir = template::publish(&staging, cache, key)?;
        template::prune_same_shape(cache, key, inputs);
        Ok(dir)
    }

    /// Boot a sandbox (no template) and connect to its agent.
    pub fn cold_boot(config: SandboxConfig) -> Result<Sandbox> {
        let start = Instant::now();
        check_file("kernel", &config.kernel)?;
        check_file("initramfs", &config.initrd)?;
        check_timeouts(&config)?;
        let watch = Arc::new(VmWatch::default());
        let mut vmc = VmConfig::new(&config.kernel);
        vmc.initrd = Some(config.initrd.clone());
        vmc.cmdline = config.full_cmdline();
        vmc.memory_mib = config.memory_mib;
        vmc.vcpus = config.vcpus;
        vmc.console = console_for(&watch, config.echo_console);
        vmc.vsock = Some(VsockConfig {
            guest_cid: SANDBOX_GUEST_CID,
            uds_path: config.vsock_uds.clone(),
        });
        let vm = Vm::new(vmc)?;
        let mut sb = Self::launch(vm, config, watch, Origin::ColdBoot)?;
        let deadline = start + sb.config.boot_timeout;
        match sb.watch.wait_ready(deadline) {
            Ready::Line(_) => {}
            Ready::Exited(reason) => {
                return Err(SandboxError::BootFailed {
                    reason,
                    console: sb.watch.tail(),
                })
            }
            Ready::TimedOut => {
                return Err(SandboxError::BootTimeout {
                    waited: start.elapsed(),
                    stage: "no EMBERVM_READY line on the console",
                    console: sb.watch.tail(),
                })
            }
        }
        sb.handshake(start, deadline)?;
        Ok(sb)
    }

    /// Start a sandbox from a snapshot directory (a template, or one saved
    /// with [`Sandbox::snapshot`]). Memory, vCPUs and the guest come from
    /// the snapshot; `config` gives the host side (timeouts, output limits,
    /// console echo, vsock socket path). On first contact the guest gets
    /// fresh entropy and the current time, so no two clones are alike.
    pub fn from_snapshot(dir: &Path, config: SandboxConfig) -> Result<Sandbox> {
        let start = Instant::now();
        check_timeouts(&config)?;
        let watch = Arc::new(VmWatch::default());
        let vm = Vm::restore(
            dir,
            RestoreConfig {
                console: console_for(&watch, config.echo_console),
                vsock_uds: config.vsock_uds.clone(),
            },
        )?;
        let mut sb = Self::launch(vm, config, watch, Origin::Restored(dir.to_path_buf()))?;
        let deadline = start + sb.config.boot_timeout;
        sb.handshake(start, deadline)?;
        Ok(sb)
    }

    /// Save this sandbox's whole state (memory, files, running processes)
    /// into `dir`; [`Sandbox::from_snapshot`] forks new sandboxes from it.
    /// The VM pauses for the duration and then continues; open agent
    /// connections of this sandbox keep working.
    pub fn snapshot(&self, dir: &Path) -> Result<SnapshotInfo> {
        self.check_open()?;
        if !self.vm.pause() {
            return Err(self.exited_error());
        }
        let r = self.vm.snapshot(dir);
        self.vm.resume();
        Ok(r.map_err(VmError::Snapshot)?)
    }

    /// How long each phase of building the VM took (boot or restore),
    /// before its vCPUs started.
    pub fn vm_setup_timings(&self) -> &SetupTimings {
        &self.vm_setup
    }

    /// How this sandbox's VM was started.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Run `vm` on a thread of its own and wrap it; dropping the result
    /// kills the VM and joins the thread.
    fn launch(
        vm: Vm,
        config: SandboxConfig,
        watch: Arc<VmWatch>,
        origin: Origin,
    ) -> Result<Sandbox> {
        let handle = vm.handle();
        let vm_setup = vm.setup_timings().clone();
        let vsock = vm
            .vsock()
            .ok_or(SandboxError::Vsock(VsockError::NotConfigured))?;
        let w = watch.clone();
        let runner = std::thread::Builder::new()
            .name("ember-sandbox".into())
            .spawn(move || {
                let how = match vm.run() {
                    Ok(r) => r.to_string(),
                    Err(e) => e.to_string(),
                };
                w.exited(how);
            })
            .map_err(|source| SandboxError::Io {
                what: "cannot start the VM thread",
                source,
            })?;
        Ok(Sandbox {
            config,
            vm: handle,
            vsock,
            watch,
            runner: Mutex::new(Some(runner)),
            pool: Mutex::new(Vec::new()),
            closed: Mutex::new(None),
            agent: None,
            sync: None,
            next_id: AtomicU64::new(1),
            py_runner: AtomicBool::new(false),
            boot_time: Duration::ZERO,
            origin,
            vm_setup,
        })
    }

    /// Connect to the agent and send it fresh entropy and the time.
    fn handshake(&mut self, start: Instant, deadline: Instant) -> Result<()> {
        let mut conn = self.open(Some(deadline))?;
        let sync = conn
            .client
            .sync(&entropy()?, SystemTime::now())
            .map_err(|e| self.fail(e, &conn.deadline, start.elapsed()))?;
        self.agent = Some(conn.client.agent_hello().clone());
        self.sync = Some(sync);
        self.put_back(conn);
        self.boot_time = start.elapsed();
        Ok(())
    }

    /// Boot a sandbox with the default guest and configuration.
    pub fn with_defaults() -> Result<Sandbox> {
        Sandbox::new(SandboxConfig::default())
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// The agent's hello: its version and what it enforces.
    pub fn agent_hello(&self) -> Option<&Hello> {
        self.agent.as_ref()
    }

    /// What the start-up `Sync` did in the guest (entropy, clock).
    pub fn sync_report(&self) -> Option<SyncReport> {
        self.sync
    }

    /// Time from [`Sandbox::new`] to the agent being connected and synced.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// The last lines of the guest console.
    pub fn console_tail(&self) -> String {
        self.watch.tail()
    }

    /// Whether the VM is still running and the sandbox open.
    pub fn is_alive(&self) -> bool {
        self.closed_reason().is_none() && self.watch.exit_reason().is_none()
    }

    /// A handle to pause, resume or kill the VM.
    pub fn vm_handle(&self) -> VmHandle {
        self.vm.clone()
    }

    /// The vsock device's host side, for connections of your own.
    pub fn vsock(&self) -> VsockHandle {
        self.vsock.clone()
    }

    /// Connect to a guest vsock port (something in the guest must listen).
    pub fn connect(&self, port: u32) -> Result<std::os::unix::net::UnixStream> {
        Ok(self.vsock.connect(port)?)
    }

    /// Accept guest-initiated vsock connections to host `port` (the guest
    /// connects to CID 2, `port`).
    pub fn listen(&self, port: u32) -> Result<VsockListener> {
        Ok(self.vsock.listen(port)?)
    }

    fn closed_reason(&self) -> Option<String> {
        self.closed.lock().map(|c| c.clone()).unwrap_or(None)
    }

    fn check_open(&self) -> Result<()> {
        if let Some(r) = self.closed_reason() {
            return Err(SandboxError::Closed(Some(r).filter(|r| !r.is_empty())));
        }
        if let Some(reason) = self.watch.exit_reason() {
            return Err(SandboxError::VmExited {
                reason,
                console: self.watch.tail(),
            });
        }
        Ok(())
    }

    /// Open a new agent connection. With `boot_deadline` (a sandbox that is
    /// starting), a refused connection is retried until then (the agent
    /// prints its ready line just before it listens), and so is an attempt
    /// that gets no answer within [`START_ATTEMPT`]: right after a restore
    /// the guest may still be handling the vsock transport reset, which can
    /// swallow a connection made before it; a fresh one then works.
    fn open(&self, boot_deadline: Option<Instant>) -> Result<Conn> {
        let start = Instant::now();
        let mut backoff = Duration::from_millis(1);
        loop {
            let attempt = boot_deadline.map(|d| d.min(Instant::now() + START_ATTEMPT));
            let wait = match attempt {
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(self.config.io_timeout),
                None => self.config.io_timeout,
            };
            let retry_left = boot_deadline.is_some_and(|d| Instant::now() + backoff < d);
            let stream = match self.vsock.connect_timeout(AGENT_VSOCK_PORT, wait) {
                Ok(s) => s,
                Err(VsockError::Refused(_)) if retry_left => {
                    // The agent is between its ready line and listen():
                    // a refusal is an immediate answer, so back off briefly.
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                    continue;
                }
                Err(VsockError::Stopped) => return Err(self.exited_error()),
                Err(VsockError::Timeout { .. }) if retry_left => {
                    log::info!("agent connect: no answer in {wait:?}, trying again");
                    continue;
                }
                Err(VsockError::Timeout { .. }) if boot_deadline.is_some() => {
                    return Err(SandboxError::BootTimeout {
                        waited: start.elapsed(),
                        stage: "no answer on the agent's vsock port",
                        console: self.watch.tail(),
                    })
                }
                Err(e) => return Err(e.into()),
            };
            let deadline = Arc::new(Deadline::default());
            deadline.set(attempt, Some(self.config.io_timeout));
            match AgentClient::connect(TimedStream::new(stream, deadline.clone())) {
                Ok(client) => {
                    deadline.set(boot_deadline, Some(self.config.io_timeout));
                    return Ok(Conn { client, deadline });
                }
                Err(e)
                    if deadline.expired() && boot_deadline.is_some_and(|d| Instant::now() < d) =>
                {
                    log::info!("agent connect: no hello in time ({e}), trying again");
                    continue;
                }
                Err(e) => return Err(self.fail(e, &deadline, start.elapsed())),
            }
        }
    }

    /// An idle connection from the pool, or a new one.
    fn take(&self) -> Result<Conn> {
        self.check_open()?;
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        match pooled {
            Some(c) => Ok(c),
            None => self.open(None),
        }
    }

    fn put_back(&self, conn: Conn) {
        conn.deadline.set(None, Some(self.config.io_timeout));
        if self.closed_reason().is_some() {
            return;
        }
        if let Ok(mut p) = self.pool.lock() {
            if p.len() < POOL_MAX {
                p.push(conn);
            }
        }
    }

    fn exited_error(&self) -> SandboxError {
        let reason = self
            .watch
            .wait_exit(Instant::now() + EXIT_SETTLE)
            .unwrap_or_else(|| "the vsock device stopped".into());
        SandboxError::VmExited {
            reason,
            console: self.watch.tail(),
        }
    }

    /// Classify a failed exchange: the host deadline (kill the VM), the VM's
    /// end, or a protocol violation.
    fn fail(&self, e: ClientError, deadline: &Deadline, waited: Duration) -> SandboxError {
        if deadline.expired() {
            self.shutdown(Some(format!(
                "the guest did not answer within {:.1} s; the VM was killed",
                waited.as_secs_f64()
            )));
            return SandboxError::Unresponsive { waited };
        }
        match e {
            ClientError::Closed(_)
            | ClientError::Protocol(embervm_protocol::ProtocolError::Truncated { .. })
            | ClientError::Protocol(embervm_protocol::ProtocolError::Io(_))
                if self.watch.wait_exit(Instant::now() + EXIT_SETTLE).is_some() =>
            {
                self.exited_error()
            }
            other => SandboxError::from_client(other),
        }
    }

    /// Run a command and collect its output (bounded by its `max_output`).
    pub fn exec(&self, cmd: &Command) -> Result<Output> {
        let max = self.max_output(cmd);
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut host_truncated = false;
        let mut out = self.exec_inner(cmd, None, &mut |stream, data| {
            let room = max.saturating_sub((stdout.len() + stderr.len()) as u64);
            let take = usize::try_from(room).unwrap_or(usize::MAX).min(data.len());
            host_truncated |= take < data.len();
            match stream {
                OutputStream::Stdout => stdout.extend_from_slice(&data[..take]),
                OutputStream::Stderr => stderr.extend_from_slice(&data[..take]),
            }
        })?;
        out.stdout = stdout;
        out.stderr = stderr;
        out.truncated |= host_truncated;
        Ok(out)
    }

    /// Run a command, handing each stdout/stderr chunk to `on_output` as it
    /// arrives (the returned [`Output`] has empty `stdout`/`stderr`). With
    /// `stdin`, the command's stdin is streamed from it (and
    /// [`Command::stdin`] is ignored).
    pub fn exec_streaming(
        &self,
        cmd: &Command,
        stdin: Option<&mut dyn Read>,
        on_output: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<Output> {
        let max = self.max_output(cmd);
        let mut seen: u64 = 0;
        let mut host_truncated = false;
        let mut out = self.exec_inner(cmd, stdin, &mut |stream, data| {
            let room = max.saturating_sub(seen);
            let take = usize::try_from(room).unwrap_or(usize::MAX).min(data.len());
            host_truncated |= take < data.len();
            seen += take as u64;
            if take > 0 {
                on_output(stream, &data[..take]);
            }
        })?;
        out.truncated |= host_truncated;
        Ok(out)
    }

    fn max_output(&self, cmd: &Command) -> u64 {
        cmd.max_output.unwrap_or(self.config.max_output)
    }

    fn exec_inner(
        &self,
        cmd: &Command,
        stdin: Option<&mut dyn Read>,
        on_output: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<Output> {
        if cmd.argv.is_empty() {
            return Err(SandboxError::Invalid("argv is empty".into()));
        }
        let limits = cmd.limits()?;
        let timeout = cmd.timeout.or(self.config.default_timeout);
        let mut inline_src: &[u8];
        let (stdin_req, source): (Stdin, Option<&mut dyn Read>) = match (stdin, &cmd.stdin) {
            (Some(r), _) => (Stdin::Stream, Some(r)),
            (None, None) => (Stdin::Null, None),
            (None, Some(b)) if b.len() <= INLINE_STDIN => (Stdin::Bytes(b.clone()), None),
            (None, Some(b)) => {
                inline_src = b;
                (Stdin::Stream, Some(&mut inline_src))
            }
        };
        let req = ExecRequest {
            argv: cmd.argv.clone(),
            env: cmd.env.clone(),
            cwd: cmd.cwd.clone(),
            stdin: stdin_req,
            timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            limits,
            user: cmd.as_root.then_some(UserSpec { uid: 0, gid: 0 }),
            max_output: Some(self.max_output(cmd)),
        };
        let mut conn = self.take()?;
        let start = Instant::now();
        conn.deadline
            .set(timeout.map(|t| start + t + self.config.grace), None);
        match conn.client.exec(&req, source, |s, d| on_output(s, d)) {
            Ok(exit) => {
                let out = Output::from_exit(&exit, start.elapsed())?;
                self.put_back(conn);
                Ok(out)
            }
            Err(ClientError::Agent(reply)) => {
                // The agent refused before starting: the connection is in step.
                self.put_back(conn);
                Err(SandboxError::from_reply(reply))
            }
            Err(e) => Err(self.fail(e, &conn.deadline, start.elapsed())),
        }
    }

    /// Write `data` to the absolute `path` in the guest (mode 0644, owned by
    /// the sandbox user; parent directories are created).
    pub fn write_file(&self, path: &str, data: &[u8]) -> Result<()> {
        self.write_file_as(path, data, 0o644, None)
    }

    /// Write `data` to `path` with permission bits `mode`, owned by `owner`
    /// (`None`: the sandbox user).
    pub fn write_file_as(
        &self,
        path: &str,
        data: &[u8],
        mode: u32,
        owner: Option<UserSpec>,
    ) -> Result<()> {
        let mut conn = self.take()?;
        let start = Instant::now();
        let mut src = data;
        match conn
            .client
            .write_file_from(path, mode, owner, &mut src, data.len() as u64)
        {
            Ok(n) if n == data.len() as u64 => {
                self.put_back(conn);
                Ok(())
            }
            Ok(n) => Err(SandboxError::BadReply(format!(
                "the agent wrote {n} bytes of {} to {path}",
                data.len()
            ))),
            Err(ClientError::Agent(reply)) => {
                self.put_back(conn);
                Err(SandboxError::from_reply(reply))
            }
            Err(e) => Err(self.fail(e, &conn.deadline, start.elapsed())),
        }
    }

    /// Read the file at the absolute `path` in the guest (at most 1 GiB).
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        self.read_file_max(path, config::DEFAULT_MAX_FILE)
    }

    /// Read the file at `path`, refusing one longer than `max_len` bytes.
    pub fn read_file_max(&self, path: &str, max_len: u64) -> Result<Vec<u8>> {
        let mut conn = self.take()?;
        let start = Instant::now();
        match conn.client.read_file(path, max_len) {
            Ok(data) => {
                self.put_back(conn);
                Ok(data)
            }
            Err(ClientError::Agent(reply)) => {
                self.put_back(conn);
                Err(SandboxError::from_reply(reply))
            }
            Err(ClientError::TooLarge { max }) => Err(SandboxError::Agent {
                kind: ErrorKind::TooLarge,
                message: format!("{path} is larger than the limit of {max} bytes"),
            }),
            Err(e) => Err(self.fail(e, &conn.deadline, start.elapsed())),
        }
    }

    /// Round trip a ping to the agent.
    pub fn ping(&self) -> Result<Duration> {
        let mut conn = self.take()?;
        let start = Instant::now();
        match conn.client.ping() {
            Ok(d) => {
                self.put_back(conn);
                Ok(d)
            }
            Err(e) => Err(self.fail(e, &conn.deadline, start.elapsed())),
        }
    }

    fn code_path(&self, stem: &str, lang: Language) -> String {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{CODE_DIR}/{stem}-{id}.{}", lang.extension())
    }

    /// Write `code` to a file in the guest and return the command that runs
    /// it with `opts` (env, cwd, stdin, timeout, limits; `opts.argv` become
    /// the script's arguments).
    pub fn prepare_run(&self, code: &str, lang: Language, opts: &Command) -> Result<Command> {
        let path = self.code_path("run", lang);
        self.write_file(&path, code.as_bytes())?;
        let mut cmd = opts.clone();
        let mut argv: Vec<String> = lang.interpreter().iter().map(|s| s.to_string()).collect();
        argv.push(path);
        argv.extend(opts.argv.iter().cloned());
        cmd.argv = argv;
        Ok(cmd)
    }

    /// Run `code` in `lang` and collect its output.
    pub fn run(&self, code: &str, lang: Language) -> Result<Output> {
        self.run_with(code, lang, &Command::default())
    }

    /// Run `code` in `lang` with the options of `opts` (see
    /// [`Sandbox::prepare_run`]).
    pub fn run_with(&self, code: &str, lang: Language, opts: &Command) -> Result<Output> {
        let cmd = self.prepare_run(code, lang, opts)?;
        self.exec(&cmd)
    }

    /// Call `entrypoint` in `code` with JSON arguments and return its JSON
    /// result. `args` is the positional arguments when it is an array,
    /// otherwise the one argument. In JavaScript `entrypoint` names an
    /// export (`default` for `export default`); in Python a module-level
    /// function (an `async def` is awaited). The result must be
    /// JSON-serialisable. Runs with the sandbox's default timeout.
    pub fn call(
        &self,
        lang: Language,
        code: &str,
        entrypoint: &str,
        args: &serde_json::Value,
    ) -> std::result::Result<serde_json::Value, CallError> {
        self.call_with(lang, code, entrypoint, args, &Command::default())
    }

    /// [`Sandbox::call`] with the options of `opts` (timeout, limits, env).
    pub fn call_with(
        &self,
        lang: Language,
        code: &str,
        entrypoint: &str,
        args: &serde_json::Value,
        opts: &Command,
    ) -> std::result::Result<serde_json::Value, CallError> {
        let path = self.code_path("call", lang);
        let argv: Vec<String> = match lang {
            Language::Shell => return Err(CallError::Unsupported("shell")),
            Language::JavaScript => vec![
                "qjs".into(),
                "--call".into(),
                entrypoint.into(),
                path.clone(),
            ],
            Language::Python => {
                self.ensure_py_runner()?;
                vec![
                    "python3".into(),
                    PY_RUNNER_PATH.into(),
                    path.clone(),
                    entrypoint.into(),
                ]
            }
        };
        self.write_file(&path, code.as_bytes())?;
        let mut cmd = opts.clone();
        cmd.argv = argv;
        cmd.stdin = Some(call::args_array(args));
        let out = self.exec(&cmd)?;
        call::parse_result(&out)
    }

    fn ensure_py_runner(&self) -> Result<()> {
        if self.py_runner.load(Ordering::Acquire) {
            return Ok(());
        }
        // Root-owned and read-only, so user code cannot replace it.
        self.write_file_as(
            PY_RUNNER_PATH,
            call::PYTHON_RUNNER.as_bytes(),
            0o444,
            Some(UserSpec { uid: 0, gid: 0 }),
        )?;
        self.py_runner.store(true, Ordering::Release);
        Ok(())
    }

    /// Mark the sandbox closed, drop its connections, kill the VM and join
    /// the runner thread.
    fn shutdown(&self, reason: Option<String>) {
        if let Ok(mut c) = self.closed.lock() {
            if c.is_none() {
                *c = Some(reason.unwrap_or_default());
            }
        }
        if let Ok(mut p) = self.pool.lock() {
            p.clear();
        }
        self.vm.kill();
        let runner = self.runner.lock().ok().and_then(|mut r| r.take());
        if let Some(t) = runner {
            // The runner only records how the VM ended; a panic there has
            // nothing more to report.
            let _ = t.join();
        }
    }

    /// Kill the VM and wait until every thread of it has ended.
    pub fn close(self) {
        // Drop does the work.
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.shutdown(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn sandbox_is_send_and_sync() {
        assert_send_sync::<Sandbox>();
    }

    #[test]
    fn missing_guest_is_named() {
        let cfg = SandboxConfig::from_image_dir("/nonexistent-embervm-guest");
        let e = Sandbox::new(cfg).unwrap_err().to_string();
        assert!(
            e.contains("make guest") && e.contains("/nonexistent-embervm-guest"),
            "{e}"
        );
    }

    #[test]
    fn entropy_is_fresh() {
        let (a, b) = (entropy().unwrap(), entropy().unwrap());
        assert_eq!(a.len(), SYNC_ENTROPY);
        assert_ne!(a, b);
    }
}
