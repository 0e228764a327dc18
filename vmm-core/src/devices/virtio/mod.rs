//! Virtio devices over the virtio-mmio transport (virtio 1.x).
//!
//! Three rooms:
//! - [`mmio`]: the transport. It owns the guest-visible register file
//!   (features, device status, queue setup, interrupt status) and is driven by
//!   vCPU threads through the [`mmio_bus::MmioBus`]. When the driver sets
//!   `DRIVER_OK` it checks every queue against guest memory and hands the
//!   queues to the device ([`VirtioDevice::activate`]); a write of 0 to the
//!   status register resets both.
//! - [`VirtioDevice`]: what a device tells the transport (id, features, queue
//!   sizes, config space) and how it is activated and reset. The device does
//!   its real work elsewhere (the vsock device on its own event thread).
//! - [`vsock`]: the virtio-vsock device and its host backends.
//!
//! Snapshots: [`VirtioDevice::quiesce`] parks whatever works on a device's
//! queues and hands back their final state, so the transport's
//! [`mmio::MmioTransport::state`] is consistent with guest memory;
//! [`VirtioDevice::unquiesce`] lets it continue. The device's own state is
//! opaque bytes ([`VirtioDevice::device_state`]); each device type has its
//! own typed restore constructor.
//!
//! Notifications never need our event loop when KVM can help: each queue has
//! an [`EventFd`] that the VMM registers as a KVM ioeventfd on the
//! `QueueNotify` register (datamatch = queue index), so a guest notify wakes
//! the device thread straight from KVM. Interrupts go the other way through an
//! irqfd ([`Interrupt`]). The transport still signals the queue eventfd itself
//! when a `QueueNotify` write does reach it (no ioeventfd, or unit tests).

pub mod mmio;
pub mod mmio_bus;
pub mod vsock;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::{Queue, QueueState};
use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestMemory;

/// `VIRTIO_F_VERSION_1`: the device speaks virtio 1.x (feature bit 32).
pub const VIRTIO_F_VERSION_1: u32 = 32;
/// Interrupt status bit: a used ring was updated.
pub const VIRTIO_INT_VRING: u32 = 1;
/// Interrupt status bit: the configuration space changed.
pub const VIRTIO_INT_CONFIG: u32 = 2;

/// Device status bits (virtio 1.x, 2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready: queues are live.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error and needs a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// Raises the device's interrupt: sets a bit in the interrupt status register
/// the guest reads and acknowledges, then pulses the irqfd.
#[derive(Debug)]
pub struct Interrupt {
    status: AtomicU32,
    irqfd: EventFd,
}

impl Interrupt {
    /// An interrupt that pulses `irqfd` (registered with KVM as an irqfd).
    pub fn new(irqfd: EventFd) -> Self {
        Self {
            status: AtomicU32::new(0),
            irqfd,
        }
    }

    /// Tell the guest a used ring changed.
    pub fn signal_used_queue(&self) {
        self.signal(VIRTIO_INT_VRING);
    }

    /// Tell the guest the configuration space changed.
    pub fn signal_config(&self) {
        self.signal(VIRTIO_INT_CONFIG);
    }

    fn signal(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.irqfd.write(1) {
            log::warn!("virtio: cannot raise interrupt: {e}");
        }
    }

    /// The interrupt status register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// The guest acknowledged the bits in `bits`.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Clear everything (device reset).
    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }

    /// Load the status register from a snapshot and, if any bit is set,
    /// pulse the irqfd, so an interrupt the guest had not taken yet is not
    /// lost (a spurious one is harmless: the driver finds nothing to do).
    pub fn restore_status(&self, bits: u32) {
        self.status.store(bits, Ordering::SeqCst);
        if bits != 0 {
            if let Err(e) = self.irqfd.write(1) {
                log::warn!("virtio: cannot raise interrupt: {e}");
            }
        }
    }

    /// The eventfd behind the interrupt (for KVM irqfd registration).
    pub fn irqfd(&self) -> &EventFd {
        &self.irqfd
    }
}

/// Everything a device gets when the driver sets `DRIVER_OK`.
pub struct Activation {
    /// Guest memory (a cheap clone that keeps the mapping alive).
    pub mem: GuestMemory,
    /// The queues, checked against guest memory, in queue-index order.
    pub queues: Vec<Queue>,
    /// The device's interrupt.
    pub interrupt: Arc<Interrupt>,
    /// Features the driver accepted.
    pub features: u64,
}

/// A device could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The device's worker is gone.
    #[error("the device's worker thread is not running")]
    WorkerGone,
    /// The number of queues is not what the device needs.
    #[error("device needs {expected} queues, got {got}")]
    QueueCount {
        /// Needed.
        expected: usize,
        /// Given.
        got: usize,
    },
}

/// A device could not be quiesced.
#[derive(Debug, thiserror::Error)]
pub enum QuiesceError {
    /// The device's worker is gone.
    #[error("the device's worker thread is not running")]
    WorkerGone,
    /// The worker did not park in time.
    #[error("the device's worker did not park within {0:?}")]
    Timeout(std::time::Duration),
    /// The device reported a number of queue states other than its queues.
    #[error("device reported {got} queue states for {expected} queues")]
    QueueCount {
        /// Queues the transport has.
        expected: usize,
        /// States the device reported.
        got: usize,
    },
}

/// A device's snapshot state could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum DeviceStateError {
    /// Encoding failed.
    #[error("cannot encode the device state: {0}")]
    Encode(#[source] postcard::Error),
    /// The bytes are not a state of this device type.
    #[error("device state is damaged or of another device type: {0}")]
    Decode(#[source] postcard::Error),
}

/// A virtio device behind a transport.
pub trait VirtioDevice: Send {
    /// The virtio device id (19 for vsock).
    fn device_id(&self) -> u32;
    /// Feature bits the device offers.
    fn device_features(&self) -> u64;
    /// Largest size of each queue (powers of two); the length is the queue count.
    fn queue_max_sizes(&self) -> &[u16];
    /// The eventfd of each queue, signalled on a guest notify.
    fn queue_events(&self) -> &[EventFd];
    /// Read `data.len()` bytes of the config space at `offset`. Reads past
    /// the end return zeros.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// The guest writes the config space (ignored by default).
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let _ = (offset, data);
    }
    /// Start work on the given queues.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;
    /// Return to the state before activation (the driver wrote 0 to status).
    fn reset(&mut self);
    /// Stop touching guest memory and queues until [`Self::unquiesce`];
    /// return only once whatever works on the queues is parked. Returns the
    /// state of every queue as the device last left it (its `next_avail` and
    /// `next_used` are final until unquiesce), in queue-index order, or an
    /// empty list if the device is not activated or keeps no queue state of
    /// its own. The default does nothing and returns an empty list: right
    /// for a device that works only inside the transport's calls.
    fn quiesce(&mut self) -> Result<Vec<QueueState>, QuiesceError> {
        Ok(Vec::new())
    }
    /// Continue after [`Self::quiesce`] exactly as before (existing
    /// connections and queues keep working). The default does nothing.
    fn unquiesce(&mut self) {}
    /// The device's own state for a snapshot, as opaque bytes that the
    /// device type's restore constructor reads back (the transport's state
    /// is saved separately). The default, for a stateless device, is empty.
    fn device_state(&self) -> Result<Vec<u8>, DeviceStateError> {
        Ok(Vec::new())
    }
}

/// Copy the bytes of a little-endian config space `config` at `offset` into
/// `data`; bytes past the end read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_are_bounded() {
        let cfg = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let mut d = [0xffu8; 4];
        read_config_bytes(&cfg, 6, &mut d);
        assert_eq!(d, [7, 8, 0, 0]);
        read_config_bytes(&cfg, 100, &mut d);
        assert_eq!(d, [0; 4]);
        read_config_bytes(&cfg, u64::MAX, &mut d);
        assert_eq!(d, [0; 4]);
    }

    #[test]
    fn interrupt_status_and_ack() {
        let irq = Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        irq.signal_used_queue();
        irq.signal_config();
        assert_eq!(irq.status(), 3);
        assert_eq!(irq.irqfd().read().unwrap(), 2);
        irq.ack(VIRTIO_INT_VRING);
        assert_eq!(irq.status(), VIRTIO_INT_CONFIG);
        irq.clear();
        assert_eq!(irq.status(), 0);
        irq.restore_status(0);
        assert!(irq.irqfd().read().is_err());
        irq.restore_status(VIRTIO_INT_VRING);
        assert_eq!((irq.status(), irq.irqfd().read().unwrap()), (1, 1));
    }
}
