//! The errors of the [`super::Sandbox`] API.
//!
//! A command that exits non-zero, is killed by a signal, times out (in the
//! guest) or is OOM-killed is *not* an error: that is an [`super::Output`].
//! [`SandboxError`] is for everything that keeps a result from being had at
//! all: no guest image, a VM that would not boot, an agent of another
//! version, a guest that stopped answering, an agent that refused a request.
//! [`CallError`] adds what a function call ([`super::Sandbox::call`]) can end
//! in: the function threw, or the runner died without a result.

use std::path::PathBuf;
use std::time::Duration;

use embervm_protocol::{ClientError, ErrorKind, ErrorReply};

use crate::devices::virtio::vsock::VsockError;
use crate::error::VmError;

/// Why a sandbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The guest kernel or initramfs is not there.
    #[error("guest {what} not found at {}: build it with `make guest`", .path.display())]
    GuestMissing {
        /// "kernel" or "initramfs".
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The configuration is not usable (checked before booting).
    #[error("invalid sandbox configuration: {0}")]
    Config(String),
    /// The VM could not be built.
    #[error("cannot create the VM: {0}")]
    Vm(#[from] VmError),
    /// A snapshot or template could not be written or found.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    /// The VM ended (or failed) before the agent was ready.
    #[error("the guest failed to boot: {reason}\n--- last console lines ---\n{console}")]
    BootFailed {
        /// How the VM ended.
        reason: String,
        /// The last lines of the guest console.
        console: String,
    },
    /// The agent did not come up in time.
    #[error(
        "the guest agent did not answer within {:.1} s of boot ({stage})\n--- last console lines ---\n{console}",
        .waited.as_secs_f64()
    )]
    BootTimeout {
        /// How long we waited.
        waited: Duration,
        /// What we were waiting for.
        stage: &'static str,
        /// The last lines of the guest console.
        console: String,
    },
    /// The agent speaks another protocol version (the message names both
    /// versions and the fix).
    #[error("{0}")]
    AgentVersion(String),
    /// The agent refused a request; `kind` says why for programs.
    #[error("the guest agent refused the request: {message}")]
    Agent {
        /// The agent's error kind.
        kind: ErrorKind,
        /// The agent's message (names the path, program or limit).
        message: String,
    },
    /// The agent broke the protocol (a malformed or out-of-place reply, a
    /// value out of range): the connection is dropped; the VM is not trusted
    /// for that request.
    #[error("bad reply from the guest agent: {0}")]
    BadReply(String),
    /// The guest did not answer before the host's own deadline (the
    /// command's timeout plus the grace period): the VM has been killed.
    #[error(
        "the guest did not answer within {:.1} s (timeout plus grace); the sandbox VM was killed",
        .waited.as_secs_f64()
    )]
    Unresponsive {
        /// How long the host waited.
        waited: Duration,
    },
    /// The VM has ended (killed, crashed, or the guest rebooted).
    #[error("the sandbox VM has ended: {reason}\n--- last console lines ---\n{console}")]
    VmExited {
        /// How it ended.
        reason: String,
        /// The last lines of the guest console.
        console: String,
    },
    /// [`super::Sandbox::close`] was called, or a fatal error closed it.
    #[error("the sandbox is closed{}", .0.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed(Option<String>),
    /// The request is not valid as given (nothing was sent).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A host-side vsock operation failed.
    #[error("vsock: {0}")]
    Vsock(#[from] VsockError),
    /// A host-side I/O operation failed (thread, socket options, stdin).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

impl SandboxError {
    /// The agent's error kind, when the agent refused the request.
    pub fn agent_kind(&self) -> Option<ErrorKind> {
        match self {
            SandboxError::Agent { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    pub(crate) fn from_reply(e: ErrorReply) -> Self {
        SandboxError::Agent {
            kind: e.kind,
            message: e.message,
        }
    }

    /// A client error that is not a timeout or a closed stream (those are
    /// classified by the caller, which knows the VM's state).
    pub(crate) fn from_client(e: ClientError) -> Self {
        match e {
            ClientError::Agent(r) => Self::from_reply(r),
            ClientError::Invalid(m) => SandboxError::Invalid(m),
            ClientError::StdinSource(source) => SandboxError::Io {
                what: "reading the command's stdin",
                source,
            },
            ClientError::Protocol(embervm_protocol::ProtocolError::VersionMismatch { .. }) => {
                SandboxError::AgentVersion(e.to_string())
            }
            other => SandboxError::BadReply(other.to_string()),
        }
    }
}

/// Result with a [`SandboxError`].
pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// Why [`super::Sandbox::call`] gave no value.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The sandbox could not run the call.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The function (or loading the code) threw; `name`, `message` and
    /// `stack` come from the guest.
    #[error("{name}: {message}")]
    Thrown {
        /// The exception's class or name (`ValueError`, `TypeError`, ...).
        name: String,
        /// Its message.
        message: String,
        /// Its traceback or stack, possibly empty.
        stack: String,
    },
    /// The runner ended without a result: killed by a signal, timed out,
    /// OOM-killed, or exited (e.g. `sys.exit()`/`process.exit()` in the
    /// called code).
    #[error("the call ended without a result ({status}); stderr: {stderr}")]
    NoResult {
        /// How the process ended, in words.
        status: String,
        /// Whether it timed out.
        timed_out: bool,
        /// Whether it was OOM-killed.
        oom_killed: bool,
        /// The last few KiB of its stderr (lossy UTF-8).
        stderr: String,
    },
    /// The runner printed something that is not a result line.
    #[error("the call printed no valid result: {0}")]
    BadResult(String),
    /// The language has no call mode (shell).
    #[error("{0} code has no functions to call; use python or javascript")]
    Unsupported(&'static str),
}
