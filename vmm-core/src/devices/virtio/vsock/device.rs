//! The virtio-vsock device as the transport sees it.
//!
//! [`VsockDevice::new`] binds the host backends (the hybrid socket, if
//! configured), creates the queue eventfds and starts the device thread
//! ([`super::worker`]) at once, so host listeners work before the guest
//! driver is up and connects made early simply wait for it. The device
//! itself only answers the transport: id 19, `VIRTIO_F_VERSION_1`, three
//! queues, an 8-byte config space holding the guest CID; activation and
//! reset are forwarded to the thread as commands. Dropping the device stops
//! the thread and joins it; every host stream it held is closed, which is
//! how connections end when the VM ends.
//!
//! Snapshots save only the guest CID and the acked features
//! ([`VsockState`]); connections are not saved. [`VsockDevice::restore`]
//! starts a device with a transport reset event due, posted when the
//! restored transport activates it, so the guest drops its stale
//! connections. [`VirtioDevice::quiesce`] parks the device thread. The
//! snapshot state and its save/restore live in the child module `persist`.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use virtio_queue::QueueState;
use vmm_sys_util::eventfd::EventFd;

use super::defs::{DEFAULT_GUEST_CID, HOST_CID, QUEUE_SIZES, VIRTIO_ID_VSOCK};
use super::host::{Command, CommandSender, VsockError, VsockHandle};
use super::muxer::Muxer;
use super::worker::Worker;
use crate::devices::virtio::{
    read_config_bytes, ActivateError, Activation, DeviceStateError, QuiesceError, VirtioDevice,
    VIRTIO_F_VERSION_1,
};

mod persist;

pub use persist::VsockState;

/// Features the device offers.
const DEVICE_FEATURES: u64 = 1 << VIRTIO_F_VERSION_1;
/// How long [`VirtioDevice::quiesce`] waits for the device thread to park.
pub const QUIESCE_TIMEOUT: Duration = Duration::from_secs(5);

/// How the vsock device is set up.
#[derive(Debug, Clone)]
pub struct VsockConfig {
    /// The guest's CID (3 or more).
    pub guest_cid: u64,
    /// Where to listen for Firecracker-style hybrid connections, if at all.
    pub uds_path: Option<PathBuf>,
}

impl Default for VsockConfig {
    fn default() -> Self {
        Self {
            guest_cid: DEFAULT_GUEST_CID,
            uds_path: None,
        }
    }
}

/// The device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum VsockSetupError {
    /// CIDs 0-2 are reserved (hypervisor, loopback, host); u32::MAX too.
    #[error("guest CID {0} is reserved: use 3 or more (below 2^32 - 1)")]
    Cid(u64),
    /// The hybrid socket could not be bound.
    #[error("cannot listen on the vsock socket {path}: {source}")]
    Bind {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An eventfd, epoll or thread could not be created.
    #[error("vsock device setup: {0}")]
    Host(#[from] std::io::Error),
    /// The configuration's CID is not the snapshot's (the guest knows its
    /// CID).
    #[error("snapshot has guest CID {snapshot}, the configuration {config}: use the snapshot's")]
    CidMismatch {
        /// The snapshot's.
        snapshot: u64,
        /// The configuration's.
        config: u64,
    },
    /// The snapshot's acked features are not all offered by the device.
    #[error("snapshot has acked features {acked:#x}, the device offers only {offered:#x}")]
    Features {
        /// The snapshot's.
        acked: u64,
        /// The device's.
        offered: u64,
    },
}

/// The virtio-vsock device front.
pub struct VsockDevice {
    guest_cid: u64,
    acked_features: u64,
    queue_evts: Vec<EventFd>,
    cmd: CommandSender,
    kill: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl VsockDevice {
    /// Bind the backends and start the device thread.
    pub fn new(config: &VsockConfig) -> Result<Self, VsockSetupError> {
        Self::start(config, false)
    }

    fn start(config: &VsockConfig, transport_reset: bool) -> Result<Self, VsockSetupError> {
        let cid = config.guest_cid;
        if cid <= HOST_CID || cid >= u64::from(u32::MAX) {
            return Err(VsockSetupError::Cid(cid));
        }
        let muxer = Muxer::new(cid, config.uds_path.as_deref()).map_err(|source| {
            VsockSetupError::Bind {
                path: config.uds_path.clone().unwrap_or_default(),
                source,
            }
        })?;
        let queue_evts = QUEUE_SIZES
            .iter()
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()?;
        let worker_evts = queue_evts
            .iter()
            .map(EventFd::try_clone)
            .collect::<Result<Vec<_>, _>>()?;
        let kill = EventFd::new(libc::EFD_NONBLOCK)?;
        let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK)?);
        let (tx, rx) = mpsc::channel();
        let mut worker = Worker::new(cid, kill.try_clone()?, wake.clone(), worker_evts, rx, muxer)?;
        if transport_reset {
            worker.schedule_transport_reset();
        }
        let thread = std::thread::Builder::new()
            .name("ember-vsock".into())
            .spawn(move || worker.run())?;
        Ok(Self {
            guest_cid: cid,
            acked_features: 0,
            queue_evts,
            cmd: CommandSender::new(tx, wake),
            kill,
            thread: Some(thread),
        })
    }

    /// A handle for host-side connections (cheap to clone, any thread).
    pub fn handle(&self) -> VsockHandle {
        VsockHandle::new(self.cmd.clone(), self.guest_cid)
    }

    /// The guest CID.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }
}

impl VirtioDevice for VsockDevice {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn device_features(&self) -> u64 {
        DEVICE_FEATURES
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.guest_cid.to_le_bytes(), offset, data);
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if activation.queues.len() != QUEUE_SIZES.len() {
            return Err(ActivateError::QueueCount {
                expected: QUEUE_SIZES.len(),
                got: activation.queues.len(),
            });
        }
        let features = activation.features;
        self.cmd
            .send(Command::Activate(activation))
            .map_err(|_: VsockError| ActivateError::WorkerGone)?;
        self.acked_features = features;
        Ok(())
    }

    fn reset(&mut self) {
        self.acked_features = 0;
        if self.cmd.send(Command::Reset).is_err() {
            log::warn!("vsock: reset after the device thread stopped");
        }
    }

    fn quiesce(&mut self) -> Result<Vec<QueueState>, QuiesceError> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.cmd
            .send(Command::Quiesce { reply })
            .map_err(|_| QuiesceError::WorkerGone)?;
        rx.recv_timeout(QUIESCE_TIMEOUT).map_err(|e| match e {
            RecvTimeoutError::Timeout => QuiesceError::Timeout(QUIESCE_TIMEOUT),
            RecvTimeoutError::Disconnected => QuiesceError::WorkerGone,
        })
    }

    fn unquiesce(&mut self) {
        if self.cmd.send(Command::Unquiesce).is_err() {
            log::warn!("vsock: unquiesce after the device thread stopped");
        }
    }

    fn device_state(&self) -> Result<Vec<u8>, DeviceStateError> {
        self.state().to_bytes()
    }
}

impl Drop for VsockDevice {
    fn drop(&mut self) {
        if let Err(e) = self.kill.write(1) {
            log::error!("vsock: cannot stop the device thread: {e}");
            return;
        }
        if let Some(t) = self.thread.take() {
            // A panicked device thread has nothing more to report.
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests;
