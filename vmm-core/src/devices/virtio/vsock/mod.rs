//! virtio-vsock (device id 19): stream sockets between the guest and the
//! host, with our own device in user space (no vhost-vsock here).
//!
//! The device is split as Firecracker splits it, so each concern has a room:
//! - [`device`]: the virtio device front (features, config = guest CID,
//!   activation) and the owner of the device thread;
//! - [`worker`]: the device thread: queues in, queues out, packet checks;
//! - [`packet`]: the 44-byte header and descriptor-chain I/O;
//! - [`csm`]: one connection: state machine, credit, bounded tx buffer;
//! - [`muxer`]: ports → connections, new connections, the rx round-robin;
//! - [`host`]: the in-process face ([`VsockHandle::connect`]/`listen`);
//! - [`unix`]: the Firecracker-compatible hybrid Unix socket;
//! - [`defs`]: numbers and limits.
//!
//! Snapshots keep the guest CID and acked features only ([`VsockState`]);
//! a restored device sends the guest a transport reset so it drops the
//! connections the snapshot froze.
//!
//! Data path, guest → host: guest notify → (KVM ioeventfd) → worker pops tx
//! chains → [`packet::read_tx`] → checks → [`muxer::Muxer::send_pkt`] →
//! connection → host stream. Host → guest: host stream readable → muxer
//! epoll → connection queued → worker pops an rx chain → muxer asks the
//! connection for a packet of at most that size and the guest's credit →
//! [`packet::RxBuffer::write`] → used ring → (irqfd) interrupt.

pub mod csm;
pub mod defs;
pub mod device;
pub mod host;
pub mod muxer;
pub mod packet;
pub mod unix;
pub mod worker;

#[cfg(test)]
pub(crate) mod testutil;

pub use device::{VsockConfig, VsockDevice, VsockSetupError, VsockState};
pub use host::{VsockError, VsockHandle, VsockListener};
