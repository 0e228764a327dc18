//! The messages, host to agent ([`Request`]) and agent to host ([`Response`]).
//!
//! A connection is a sequence of frames (see [`crate::frame`]): one [`Hello`]
//! each way, then requests from the host, each answered by one or more
//! responses from the agent. Requests on one connection are handled one at a
//! time; concurrent work uses several connections. Data-bearing fields are
//! `serde_bytes` so they encode as one length plus raw bytes.

use serde::{Deserialize, Serialize};

/// Which side of a connection sent a [`Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The host (VMM, CLI, tests).
    Host,
    /// The guest agent.
    Agent,
}

/// The first frame in each direction.
///
/// Its first three fields (`magic`, `protocol`, `software`) are frozen for
/// every protocol version, so that two different versions can still read
/// each other's version numbers and fail with a clear message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`crate::HELLO_MAGIC`].
    pub magic: [u8; 4],
    /// The sender's [`crate::PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The sender's software version (crate version of the agent or host).
    pub software: String,
    /// Who sent it.
    pub role: Role,
    /// What the agent can enforce (all `false` in a host's hello).
    pub capabilities: Capabilities,
}

/// The frozen head of a [`Hello`]: decoded first, whatever the version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloHead {
    /// See [`Hello::magic`].
    pub magic: [u8; 4],
    /// See [`Hello::protocol`].
    pub protocol: u32,
    /// See [`Hello::software`].
    pub software: String,
}

/// What the agent can do where it runs; a degraded agent (a test server on
/// a host, not PID 1, not root) says here what it will not enforce.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Exec limits (memory, pids, cpu) are enforced with cgroup v2, and a
    /// timeout kills the whole cgroup.
    pub cgroups: bool,
    /// The agent can run code as another user (it is root).
    pub switch_user: bool,
    /// `Sync` really sets the clock and reseeds the RNG (the agent is PID 1).
    pub sync: bool,
    /// Free text on anything degraded, empty when nothing is.
    pub notes: String,
}

/// A wall-clock time: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WallClock {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub secs: i64,
    /// Nanoseconds, below 1e9.
    pub nanos: u32,
}

/// The user code runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    /// User id.
    pub uid: u32,
    /// Primary group id (no supplementary groups).
    pub gid: u32,
}

/// CPU bandwidth: `quota_us` of CPU time per `period_us` (cgroup `cpu.max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuQuota {
    /// Microseconds of CPU per period (e.g. 50000 of 100000 = half a CPU).
    pub quota_us: u64,
    /// The period in microseconds (1000..=1000000).
    pub period_us: u64,
}

/// Resource limits of one exec; `None` means no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// `memory.max` in bytes (swap is off for user code).
    pub memory_bytes: Option<u64>,
    /// `pids.max`: processes and threads at once.
    pub pids: Option<u32>,
    /// `cpu.max`.
    pub cpu: Option<CpuQuota>,
}

/// Where the command's stdin comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stdin {
    /// `/dev/null`.
    #[default]
    Null,
    /// These bytes, then end of file.
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Streamed by the host as [`Request::StdinData`] frames ending with
    /// [`Request::StdinEof`], paced by [`Response::StdinCredit`].
    Stream,
}

/// Run a command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program and arguments; `argv[0]` without a `/` is looked up in `PATH`.
    pub argv: Vec<String>,
    /// Environment added to (and overriding) the agent's base environment
    /// (`PATH`, `HOME`, `USER`, `LOGNAME`, `LANG`).
    pub env: Vec<(String, String)>,
    /// Working directory; `None` is the user's home.
    pub cwd: Option<String>,
    /// Standard input.
    pub stdin: Stdin,
    /// Kill the whole process tree after this many milliseconds.
    pub timeout_ms: Option<u64>,
    /// Resource limits.
    pub limits: Limits,
    /// Run as this user; `None` is the agent's default (uid/gid 1000 in the
    /// guest).
    pub user: Option<UserSpec>,
    /// Keep at most this many bytes of stdout and stderr together; the rest
    /// is read and dropped and [`ExitInfo::truncated`] is set.
    pub max_output: Option<u64>,
}

/// How an exec ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code, when the process exited.
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
    /// The agent killed it because `timeout_ms` passed.
    pub timed_out: bool,
    /// The kernel's OOM killer killed something in its cgroup.
    pub oom_killed: bool,
    /// Output beyond `max_output` was dropped.
    pub truncated: bool,
    /// User CPU time in microseconds (whole cgroup when cgroups are on).
    pub cpu_user_us: u64,
    /// System CPU time in microseconds.
    pub cpu_sys_us: u64,
    /// Wall time from spawn to exit in microseconds.
    pub wall_us: u64,
    /// Every requested limit was enforced (false on a degraded agent).
    pub limits_enforced: bool,
}

/// Which output stream a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Host to agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Fresh entropy and the current time, sent first on a fresh connection
    /// (a restored snapshot shares RNG state and a stale clock). Answer:
    /// [`Response::Synced`].
    Sync {
        /// Bytes mixed into the guest RNG (RNDADDENTROPY), then reseeded.
        #[serde(with = "serde_bytes")]
        entropy: Vec<u8>,
        /// Set as CLOCK_REALTIME.
        wall_clock: WallClock,
    },
    /// Answer: [`Response::Pong`] with the same nonce.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Run a command. Answer: [`Response::Started`], then output chunks and
    /// [`Response::Exit`]; or one [`Response::Error`].
    Exec(ExecRequest),
    /// A stdin chunk of the running exec (`Stdin::Stream`), at most
    /// [`crate::CHUNK_SIZE`] bytes, one per credit.
    StdinData(#[serde(with = "serde_bytes")] Vec<u8>),
    /// End of the streamed stdin.
    StdinEof,
    /// Send a signal to the running exec's process group.
    Signal {
        /// Signal number (e.g. 15 for SIGTERM).
        signal: i32,
    },
    /// Write a file: followed by [`Request::FileData`] frames with `len`
    /// bytes in total and [`Request::FileEnd`]. Answer:
    /// [`Response::FileWritten`] or [`Response::Error`] (sent after
    /// `FileEnd`, the data is always consumed).
    WriteFile {
        /// Absolute path; missing parent directories are created.
        path: String,
        /// Permission bits (e.g. 0o644).
        mode: u32,
        /// Total bytes that follow.
        len: u64,
        /// Owner; `None` is the agent's default user.
        owner: Option<UserSpec>,
    },
    /// A chunk of the file being written.
    FileData(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The end of the file being written.
    FileEnd,
    /// Read a file. Answer: [`Response::FileData`] chunks and
    /// [`Response::FileEnd`], or [`Response::Error`].
    ReadFile {
        /// Absolute path.
        path: String,
        /// Refuse (error `TooLarge`) a file longer than this.
        max_len: u64,
    },
}

/// Agent to host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Sync`]: what was really done.
    Synced {
        /// Entropy was added and the CRNG reseeded.
        entropy_added: bool,
        /// The clock was set.
        clock_set: bool,
    },
    /// Answer to [`Request::Ping`].
    Pong {
        /// The request's nonce.
        nonce: u64,
    },
    /// The command started.
    Started {
        /// Its pid in the guest.
        pid: u32,
    },
    /// Output of the running exec, at most [`crate::CHUNK_SIZE`] bytes.
    Output {
        /// Stdout or stderr.
        stream: OutputStream,
        /// The bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The host may send this many more [`Request::StdinData`] frames.
    StdinCredit {
        /// Additional chunks allowed.
        chunks: u32,
    },
    /// The exec ended; the last frame of an exec.
    Exit(ExitInfo),
    /// Answer to a complete [`Request::WriteFile`].
    FileWritten {
        /// Bytes written.
        len: u64,
    },
    /// A chunk of the file being read.
    FileData(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The end of the file being read.
    FileEnd {
        /// Total bytes sent.
        len: u64,
    },
    /// The request failed.
    Error(ErrorReply),
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// A path or program does not exist.
    NotFound,
    /// The operation is not allowed.
    PermissionDenied,
    /// The request is malformed or arrives in the wrong state.
    BadRequest,
    /// A file or message exceeds a limit.
    TooLarge,
    /// A limit could not be set up.
    Limits,
    /// The command could not be started for another reason.
    SpawnFailed,
    /// The peer speaks another protocol version.
    VersionMismatch,
    /// The agent is at its connection limit.
    Busy,
    /// Any other I/O error.
    Io,
    /// A bug in the agent.
    Internal,
}

/// An error answer: a kind for programs and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong, for programs.
    pub kind: ErrorKind,
    /// What went wrong, for people.
    pub message: String,
}

impl ErrorReply {
    /// An error reply of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ErrorReply {
        ErrorReply {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}
