//! Every fixed number of the protocol, in one place.

/// The wire protocol version. Bump it on any change to a message layout;
/// the hello refuses a peer whose number differs.
pub const PROTOCOL_VERSION: u32 = 1;

/// The four bytes every hello payload starts with ("EMBV").
pub const HELLO_MAGIC: [u8; 4] = *b"EMBV";

/// The vsock port the agent listens on.
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// Largest frame payload either side accepts (16 MiB). A length prefix above
/// this is an error before anything is allocated.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Largest data chunk (stdout, stderr, stdin, file data) in one frame.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// Stdin chunks the agent lets the host have in flight (credit window).
pub const STDIN_WINDOW: u32 = 4;

/// The unprivileged user that runs user code by default.
pub const DEFAULT_UID: u32 = 1000;

/// The group of [`DEFAULT_UID`].
pub const DEFAULT_GID: u32 = 1000;

/// Home directory of [`DEFAULT_UID`] in the guest.
pub const DEFAULT_HOME: &str = "/home/user";

/// The version of this crate, sent in the hello as the software version.
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");
