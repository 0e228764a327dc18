//! The in-process face of the vsock backend: [`VsockHandle::connect`] opens
//! a connection to a guest port and hands back a [`UnixStream`];
//! [`VsockHandle::listen`] takes guest-initiated connections to a host port
//! as [`UnixStream`]s from a [`VsockListener`].
//!
//! A handle only sends `Command`s to the device thread (a channel plus an
//! eventfd to wake it) and waits for the answer, so it is cheap to clone and
//! usable from any thread. The streams are one end of a socketpair whose
//! other end the muxer bridges to the guest connection: reading, writing,
//! `shutdown(Write)` (half-close) and dropping behave as on any socket.

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use virtio_queue::QueueState;
use vmm_sys_util::eventfd::EventFd;

use super::defs::CONNECT_TIMEOUT_MS;
use crate::devices::virtio::Activation;

/// Why a vsock operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The VM was configured without a vsock device.
    #[error("this VM has no vsock device (set VmConfig::vsock)")]
    NotConfigured,
    /// The device thread is gone: the VM ended.
    #[error("the vsock device has stopped (the VM ended)")]
    Stopped,
    /// The guest answered with RST: nothing listens on that port.
    #[error("the guest refused the connection to vsock port {0} (nothing listens there)")]
    Refused(u32),
    /// The guest did not answer in time (driver not up, or guest stuck).
    #[error("no answer from the guest on vsock port {port} within {ms} ms")]
    Timeout {
        /// Guest port.
        port: u32,
        /// How long we waited.
        ms: u64,
    },
    /// Someone already listens on that host port.
    #[error("host vsock port {0} already has a listener")]
    PortInUse(u32),
    /// The connection limit is reached.
    #[error("too many open vsock connections (limit {0})")]
    TooManyConnections(usize),
    /// A host socket call failed.
    #[error("vsock host socket: {0}")]
    Io(#[from] std::io::Error),
}

/// What the device thread is asked to do.
pub(crate) enum Command {
    /// The driver set DRIVER_OK: start serving the queues.
    Activate(Activation),
    /// The driver reset the device.
    Reset,
    /// Open a connection to guest `port`.
    Connect {
        port: u32,
        timeout: Duration,
        reply: SyncSender<Result<UnixStream, VsockError>>,
    },
    /// Deliver guest connections to host `port` to `sink`.
    Listen {
        port: u32,
        id: u64,
        sink: SyncSender<UnixStream>,
        reply: SyncSender<Result<(), VsockError>>,
    },
    /// Stop listening (the listener was dropped).
    Unlisten { port: u32, id: u64 },
    /// Send VIRTIO_VSOCK_EVENT_TRANSPORT_RESET and drop every connection.
    TransportReset { reply: SyncSender<()> },
    /// Stop touching guest memory and queues; reply with the queue states.
    Quiesce { reply: SyncSender<Vec<QueueState>> },
    /// Continue after `Quiesce`.
    Unquiesce,
}

/// Sends commands to the device thread.
#[derive(Clone)]
pub(crate) struct CommandSender {
    tx: Sender<Command>,
    wake: Arc<EventFd>,
}

impl CommandSender {
    pub(crate) fn new(tx: Sender<Command>, wake: Arc<EventFd>) -> Self {
        Self { tx, wake }
    }

    pub(crate) fn send(&self, cmd: Command) -> Result<(), VsockError> {
        self.tx.send(cmd).map_err(|_| VsockError::Stopped)?;
        self.wake.write(1).map_err(VsockError::Io)
    }
}

static NEXT_LISTENER_ID: AtomicU64 = AtomicU64::new(1);

/// Opens and accepts vsock connections from the host side.
#[derive(Clone)]
pub struct VsockHandle {
    cmd: CommandSender,
    guest_cid: u64,
}

impl VsockHandle {
    pub(crate) fn new(cmd: CommandSender, guest_cid: u64) -> Self {
        Self { cmd, guest_cid }
    }

    /// The guest's CID.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// Connect to guest `port`; returns once the guest accepted. Waits up to
    /// 2 s for an answer (the guest driver must be up).
    pub fn connect(&self, port: u32) -> Result<UnixStream, VsockError> {
        self.connect_timeout(port, Duration::from_millis(CONNECT_TIMEOUT_MS))
    }

    /// Connect to guest `port`, waiting at most `timeout` for its answer.
    pub fn connect_timeout(&self, port: u32, timeout: Duration) -> Result<UnixStream, VsockError> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.cmd.send(Command::Connect {
            port,
            timeout,
            reply,
        })?;
        // The device thread enforces the timeout; the margin only guards
        // against a thread that died without answering.
        match rx.recv_timeout(timeout + Duration::from_secs(1)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(VsockError::Timeout {
                port,
                ms: timeout.as_millis() as u64,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(VsockError::Stopped),
        }
    }

    /// Accept guest-initiated connections to host `port`.
    pub fn listen(&self, port: u32) -> Result<VsockListener, VsockError> {
        let id = NEXT_LISTENER_ID.fetch_add(1, Ordering::Relaxed);
        let (sink, incoming) = mpsc::sync_channel(super::defs::LISTEN_BACKLOG);
        let (reply, rx) = mpsc::sync_channel(1);
        self.cmd.send(Command::Listen {
            port,
            id,
            sink,
            reply,
        })?;
        rx.recv().map_err(|_| VsockError::Stopped)??;
        Ok(VsockListener {
            port,
            id,
            incoming,
            cmd: self.cmd.clone(),
        })
    }

    /// Send the guest VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (after a snapshot
    /// restore) and drop every open connection; returns once done.
    pub fn transport_reset(&self) -> Result<(), VsockError> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.cmd.send(Command::TransportReset { reply })?;
        rx.recv().map_err(|_| VsockError::Stopped)
    }
}

/// Guest-initiated connections to one host port.
pub struct VsockListener {
    port: u32,
    id: u64,
    incoming: Receiver<UnixStream>,
    cmd: CommandSender,
}

impl VsockListener {
    /// The host port.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Wait for the next connection.
    pub fn accept(&self) -> Result<UnixStream, VsockError> {
        self.incoming.recv().map_err(|_| VsockError::Stopped)
    }

    /// Wait at most `timeout` for the next connection; `Ok(None)` on timeout.
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Option<UnixStream>, VsockError> {
        match self.incoming.recv_timeout(timeout) {
            Ok(s) => Ok(Some(s)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(VsockError::Stopped),
        }
    }
}

impl Drop for VsockListener {
    fn drop(&mut self) {
        // If the device is gone there is nothing to unregister.
        let _ = self.cmd.send(Command::Unlisten {
            port: self.port,
            id: self.id,
        });
    }
}
