//! The connection state machine: one vsock stream connection, its credit
//! accounting in both directions, and its bounded tx buffer. The muxer owns
//! many of these and routes packets and host readiness to them; nothing here
//! knows about queues, epoll or ports other than its own.

pub mod connection;
pub mod txbuf;

pub use connection::{Addr, Connection, State};
