//! The protocol between the embervm host and the guest agent.
//!
//! One stream (virtio-vsock port [`AGENT_VSOCK_PORT`] in a real sandbox, a
//! Unix socket in tests) carries length-prefixed frames ([`frame`]) whose
//! payloads are postcard-encoded [`messages`]. Each side first sends a
//! [`Hello`] ([`hello`]) naming its protocol version; a mismatch ends the
//! connection with an error naming both. The host then sends requests
//! (exec, files, ping, sync) and reads their answers; the agent serves each
//! connection on its own thread, so concurrent execs use several
//! connections. [`client::AgentClient`] is the host side over any
//! `Read + Write` stream; the agent's server lives in `embervm-agent`.
//!
//! The full specification is `guest/PROTOCOL.md`.

pub mod client;
pub mod defs;
pub mod error;
pub mod frame;
pub mod hello;
pub mod messages;

pub use client::{AgentClient, ClientError, ClientResult, Output, SyncReport};
pub use defs::*;
pub use error::{ProtocolError, Result};
pub use frame::{decode, encode_frame, read_frame, read_frame_into, write_frame, FrameDecoder};
pub use hello::check_hello;
pub use messages::*;
