//! Numbers of the virtio-vsock device (virtio 1.2, 5.10) and our limits.

/// The virtio device id of vsock.
pub const VIRTIO_ID_VSOCK: u32 = 19;
/// The host's CID: packets from the guest must be addressed to it.
pub const HOST_CID: u64 = 2;
/// The guest CID when the configuration gives none.
pub const DEFAULT_GUEST_CID: u64 = 3;

/// Queue indexes.
pub const RXQ: usize = 0;
/// Guest → host packets.
pub const TXQ: usize = 1;
/// Device → driver events.
pub const EVQ: usize = 2;
/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Sizes of the three queues, in index order.
pub const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];

/// Size of the packet header on the wire.
pub const HDR_SIZE: usize = 44;
/// Largest payload of one packet (Linux's `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub const MAX_PKT_PAYLOAD: u32 = 64 * 1024;

/// Socket type: stream (the only one we support).
pub const TYPE_STREAM: u16 = 1;

/// Packet operations.
pub mod op {
    /// Open a connection.
    pub const REQUEST: u16 = 1;
    /// Accept a connection.
    pub const RESPONSE: u16 = 2;
    /// Refuse or abort a connection.
    pub const RST: u16 = 3;
    /// Close one or both directions.
    pub const SHUTDOWN: u16 = 4;
    /// Data.
    pub const RW: u16 = 5;
    /// Tell the peer our credit.
    pub const CREDIT_UPDATE: u16 = 6;
    /// Ask the peer for its credit.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// Event id of a transport reset (after a snapshot restore).
pub const EVENT_TRANSPORT_RESET: u32 = 0;

/// Bytes we buffer per connection from the guest toward the host stream; also
/// the credit (`buf_alloc`) we advertise, so a guest that obeys the protocol
/// never overflows it.
pub const CONN_TX_BUF_SIZE: u32 = 256 * 1024;
/// Send a credit update once the guest believes it has less free credit
/// than this and we have freed some.
pub const CONN_CREDIT_UPDATE_THRESHOLD: u32 = CONN_TX_BUF_SIZE / 4;
/// Most connections open at once (host- and guest-initiated together).
pub const MAX_CONNECTIONS: usize = 1024;
/// Most RST replies to unknown connections waiting for rx buffers; more are
/// dropped (the guest times out instead).
pub const MAX_PENDING_RSTS: usize = 256;
/// How long a host-initiated connection waits for the guest's RESPONSE.
pub const CONNECT_TIMEOUT_MS: u64 = 2000;
/// Host-initiated connections use local ports from here up.
pub const FIRST_EPHEMERAL_PORT: u32 = 1 << 30;
/// Guest-initiated connections queued on an in-process listener.
pub const LISTEN_BACKLOG: usize = 128;
/// Hybrid-socket clients that have not yet sent their `CONNECT` line.
pub const MAX_PENDING_HANDSHAKES: usize = 64;
/// Longest `CONNECT <port>\n` line accepted.
pub const MAX_HANDSHAKE_LINE: usize = 32;
