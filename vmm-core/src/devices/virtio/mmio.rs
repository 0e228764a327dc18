//! The virtio-mmio transport, register layout version 2 (virtio 1.x, 4.2).
//!
//! The guest driver walks the device status through ACKNOWLEDGE → DRIVER →
//! (features) FEATURES_OK → (queues) DRIVER_OK. The transport accepts only
//! those forward steps (FAILED at any time, 0 to reset), refuses FEATURES_OK
//! unless the driver took `VIRTIO_F_VERSION_1` and nothing the device did not
//! offer, lets queues be configured only between FEATURES_OK and DRIVER_OK,
//! and at DRIVER_OK checks that every queue is ready, sized and inside guest
//! memory before the device is activated; a failure sets DEVICE_NEEDS_RESET.
//! Every other guest mistake (unknown offsets, odd access widths, writes to
//! read-only registers, a queue size that is not a power of two or too big,
//! a misaligned ring address, a queue index out of range) is logged and
//! ignored. Nothing the guest writes here can panic the host.
//!
//! Snapshots: [`MmioTransport::quiesce`] parks the device and takes its
//! final queue positions, [`MmioTransport::state`] then reads out every
//! register and queue, and [`MmioTransport::restore`] builds a transport from
//! such a state, checking it as strictly as guest writes (it comes from a
//! file), and re-activates the device if the driver had it running. The
//! state types and those two methods live in the child module `persist`;
//! quiescing is run-time control of the device and stays here.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;

use super::mmio_bus::MmioDevice;
use super::{
    status, ActivateError, Activation, Interrupt, QuiesceError, VirtioDevice, VIRTIO_F_VERSION_1,
};
use crate::memory::GuestMemory;

mod persist;

pub use persist::{MmioTransportState, VirtqueueState};

/// "virt" in little endian.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// Register layout version 2 (virtio 1.x, no legacy).
pub const MMIO_VERSION: u32 = 2;
/// Vendor id we report.
pub const VENDOR_ID: u32 = 0;
/// Size of one virtio-mmio window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;

/// Register offsets.
pub mod regs {
    /// Magic value (RO).
    pub const MAGIC_VALUE: u64 = 0x000;
    /// Version (RO).
    pub const VERSION: u64 = 0x004;
    /// Device id (RO).
    pub const DEVICE_ID: u64 = 0x008;
    /// Vendor id (RO).
    pub const VENDOR_ID: u64 = 0x00c;
    /// Device features, 32 bits at `DEVICE_FEATURES_SEL` (RO).
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// Selects the device features word (WO).
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// Driver features, 32 bits at `DRIVER_FEATURES_SEL` (WO).
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// Selects the driver features word (WO).
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// Selects the queue the queue registers refer to (WO).
    pub const QUEUE_SEL: u64 = 0x030;
    /// Largest size of the selected queue (RO).
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// Size of the selected queue (WO).
    pub const QUEUE_NUM: u64 = 0x038;
    /// The selected queue is ready (RW).
    pub const QUEUE_READY: u64 = 0x044;
    /// The driver notifies a queue; the value is the queue index (WO).
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// Interrupt status (RO).
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// Interrupt acknowledge (WO).
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// Device status (RW).
    pub const STATUS: u64 = 0x070;
    /// Descriptor table address, low 32 bits (WO).
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// Descriptor table address, high 32 bits (WO).
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    /// Available ring address, low (WO).
    pub const QUEUE_AVAIL_LOW: u64 = 0x090;
    /// Available ring address, high (WO).
    pub const QUEUE_AVAIL_HIGH: u64 = 0x094;
    /// Used ring address, low (WO).
    pub const QUEUE_USED_LOW: u64 = 0x0a0;
    /// Used ring address, high (WO).
    pub const QUEUE_USED_HIGH: u64 = 0x0a4;
    /// Shared memory region length, low (RO; no regions: all ones).
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    /// Shared memory region length, high (RO).
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    /// Config generation (RO).
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// Start of the device config space.
    pub const CONFIG: u64 = 0x100;
}

/// The kernel command line entry that declares a virtio-mmio window of
/// `len` bytes at `base` with interrupt `irq` (needs the guest kernel's
/// `VIRTIO_MMIO_CMDLINE_DEVICES`), e.g. `virtio_mmio.device=4K@0xd0000000:5`.
pub fn cmdline_entry(base: u64, len: u64, irq: u32) -> String {
    let size = if len & 1023 == 0 {
        format!("{}K", len / 1024)
    } else {
        len.to_string()
    };
    format!("virtio_mmio.device={size}@{base:#x}:{irq}")
}

/// What is wrong with one queue of a transport state (or at DRIVER_OK).
#[derive(Debug, thiserror::Error)]
pub enum QueueFault {
    /// The maximum size is not the device's.
    #[error("maximum size {found}, the device's is {expected}")]
    MaxSize {
        /// The device's.
        expected: u16,
        /// The state's.
        found: u16,
    },
    /// Size not a power of two up to the maximum, or a misaligned ring.
    #[error("{0}")]
    Invalid(#[source] virtio_queue::Error),
    /// Event indexes on, but `VIRTIO_RING_F_EVENT_IDX` was not negotiated.
    #[error("event index in use without VIRTIO_RING_F_EVENT_IDX")]
    EventIdx,
    /// Not ready, or a ring lies outside guest memory.
    #[error("not ready, or its rings lie outside guest memory")]
    Unusable,
}

/// A transport state was refused, or the device could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The state is of another device type.
    #[error("state is of virtio device {found}, the device is {expected}")]
    DeviceId {
        /// The device's id.
        expected: u32,
        /// The state's.
        found: u32,
    },
    /// The state has another number of queues than the device.
    #[error("state has {found} queues, the device has {expected}")]
    QueueCount {
        /// The device's.
        expected: usize,
        /// The state's.
        found: usize,
    },
    /// A status the transport never reaches.
    #[error("device status {0:#x} is not one a driver can reach")]
    Status(u32),
    /// Driver features that the status makes impossible.
    #[error(
        "driver features {features:#x} are impossible in status {status:#x} \
         (the device offers {offered:#x})"
    )]
    Features {
        /// The state's driver features.
        features: u64,
        /// The state's status.
        status: u32,
        /// The device's features.
        offered: u64,
    },
    /// Interrupt status bits that do not exist.
    #[error("interrupt status {0:#x} has unknown bits")]
    InterruptStatus(u32),
    /// One queue is wrong.
    #[error("queue {index}: {fault}")]
    Queue {
        /// The queue index.
        index: usize,
        /// What is wrong.
        #[source]
        fault: QueueFault,
    },
    /// The device refused activation.
    #[error("device activation: {0}")]
    Activate(#[from] ActivateError),
}

/// The transport around one device.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemory,
    interrupt: Arc<Interrupt>,
    queues: Vec<Queue>,
    queue_select: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    status: u32,
    activated: bool,
    config_generation: u32,
    quiesced: bool,
}

impl MmioTransport {
    /// Wrap `device`. `mem` is used to check queue addresses and is handed
    /// to the device on activation.
    pub fn new(device: Box<dyn VirtioDevice>, mem: GuestMemory, interrupt: Arc<Interrupt>) -> Self {
        let queues = Self::fresh_queues(device.as_ref());
        Self {
            device,
            mem,
            interrupt,
            queues,
            queue_select: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            status: 0,
            activated: false,
            config_generation: 0,
            quiesced: false,
        }
    }

    /// Park the device ([`VirtioDevice::quiesce`]) and take its queue
    /// positions as final, so [`Self::state`] matches guest memory. On
    /// success (and on [`QuiesceError::QueueCount`]) the device stays
    /// parked until [`Self::unquiesce`].
    pub fn quiesce(&mut self) -> Result<(), QuiesceError> {
        let states = self.device.quiesce()?;
        self.quiesced = true;
        if states.is_empty() {
            return Ok(());
        }
        if states.len() != self.queues.len() {
            return Err(QuiesceError::QueueCount {
                expected: self.queues.len(),
                got: states.len(),
            });
        }
        for (q, s) in self.queues.iter_mut().zip(states) {
            q.set_next_avail(s.next_avail);
            q.set_next_used(s.next_used);
        }
        Ok(())
    }

    /// Let the device continue after [`Self::quiesce`].
    pub fn unquiesce(&mut self) {
        self.device.unquiesce();
        self.quiesced = false;
    }

    fn fresh_queues(device: &dyn VirtioDevice) -> Vec<Queue> {
        device
            .queue_max_sizes()
            .iter()
            .filter_map(|&max| match Queue::new(max) {
                Ok(q) => Some(q),
                Err(e) => {
                    log::error!("virtio-mmio: device queue size {max} refused: {e}");
                    None
                }
            })
            .collect()
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the device has been activated (DRIVER_OK accepted).
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// The device behind the transport.
    pub fn device(&self) -> &dyn VirtioDevice {
        self.device.as_ref()
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_select as usize)
    }

    fn queues_configurable(&self) -> bool {
        self.status & status::FEATURES_OK != 0 && self.status & status::DRIVER_OK == 0
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        match offset {
            regs::MAGIC_VALUE => MMIO_MAGIC,
            regs::VERSION => MMIO_VERSION,
            regs::DEVICE_ID => self.device.device_id(),
            regs::VENDOR_ID => VENDOR_ID,
            regs::DEVICE_FEATURES => match self.device_features_select {
                0 => self.device.device_features() as u32,
                1 => (self.device.device_features() >> 32) as u32,
                _ => 0,
            },
            regs::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size().into()),
            regs::QUEUE_READY => self.selected_queue().map_or(0, |q| q.ready().into()),
            regs::INTERRUPT_STATUS => self.interrupt.status(),
            regs::STATUS => self.status,
            regs::SHM_LEN_LOW | regs::SHM_LEN_HIGH => u32::MAX,
            regs::CONFIG_GENERATION => self.config_generation,
            _ => {
                log::debug!("virtio-mmio: read of unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, v: u32) {
        match offset {
            regs::DEVICE_FEATURES_SEL => self.device_features_select = v,
            regs::DRIVER_FEATURES_SEL => self.driver_features_select = v,
            regs::DRIVER_FEATURES => self.write_driver_features(v),
            regs::QUEUE_SEL => self.queue_select = v,
            regs::QUEUE_NUM
            | regs::QUEUE_READY
            | regs::QUEUE_DESC_LOW
            | regs::QUEUE_DESC_HIGH
            | regs::QUEUE_AVAIL_LOW
            | regs::QUEUE_AVAIL_HIGH
            | regs::QUEUE_USED_LOW
            | regs::QUEUE_USED_HIGH => self.write_queue_register(offset, v),
            regs::QUEUE_NOTIFY => self.notify(v),
            regs::INTERRUPT_ACK => self.interrupt.ack(v),
            regs::STATUS => self.write_status(v),
            _ => log::debug!(
                "virtio-mmio: write of {v:#x} to read-only or unknown register {offset:#x}"
            ),
        }
    }

    fn write_driver_features(&mut self, v: u32) {
        let negotiating =
            self.status & status::DRIVER != 0 && self.status & status::FEATURES_OK == 0;
        if !negotiating {
            log::warn!(
                "virtio-mmio: driver features written outside negotiation (status {:#x})",
                self.status
            );
            return;
        }
        match self.driver_features_select {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32),
            s => log::warn!("virtio-mmio: driver features word {s} does not exist"),
        }
    }

    fn write_queue_register(&mut self, offset: u64, v: u32) {
        if !self.queues_configurable() {
            log::warn!(
                "virtio-mmio: queue register {offset:#x} written in status {:#x}",
                self.status
            );
            return;
        }
        let index = self.queue_select;
        let Some(q) = self.selected_queue() else {
            log::warn!("virtio-mmio: queue {index} does not exist");
            return;
        };
        let result = match offset {
            regs::QUEUE_NUM => u16::try_from(v)
                .map_err(|_| virtio_queue::Error::InvalidSize)
                .and_then(|size| q.try_set_size(size)),
            regs::QUEUE_READY => {
                q.set_ready(v == 1);
                Ok(())
            }
            regs::QUEUE_DESC_LOW => q.try_set_desc_table_address(low(q.desc_table(), v)),
            regs::QUEUE_DESC_HIGH => q.try_set_desc_table_address(high(q.desc_table(), v)),
            regs::QUEUE_AVAIL_LOW => q.try_set_avail_ring_address(low(q.avail_ring(), v)),
            regs::QUEUE_AVAIL_HIGH => q.try_set_avail_ring_address(high(q.avail_ring(), v)),
            regs::QUEUE_USED_LOW => q.try_set_used_ring_address(low(q.used_ring(), v)),
            regs::QUEUE_USED_HIGH => q.try_set_used_ring_address(high(q.used_ring(), v)),
            _ => Ok(()),
        };
        if let Err(e) = result {
            log::warn!("virtio-mmio: queue {index}: register {offset:#x} = {v:#x} refused: {e}");
        }
    }

    fn notify(&mut self, index: u32) {
        if !self.activated {
            log::debug!("virtio-mmio: notify of queue {index} before DRIVER_OK");
            return;
        }
        match self.device.queue_events().get(index as usize) {
            Some(evt) => {
                if let Err(e) = evt.write(1) {
                    log::warn!("virtio-mmio: cannot signal queue {index}: {e}");
                }
            }
            None => log::warn!("virtio-mmio: notify of queue {index}, which does not exist"),
        }
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        if v & status::FAILED != 0 {
            self.status |= status::FAILED;
            return;
        }
        let old = self.status & !status::DEVICE_NEEDS_RESET;
        let new = v & !status::DEVICE_NEEDS_RESET;
        // Bits are only ever added, one step at a time, in the spec's order.
        let step = new & !old;
        let ok = new & old == old
            && match step {
                status::ACKNOWLEDGE => old == 0,
                status::DRIVER => old == status::ACKNOWLEDGE,
                status::FEATURES_OK => old == status::ACKNOWLEDGE | status::DRIVER,
                status::DRIVER_OK => {
                    old == status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK
                }
                0 => true,
                _ => false,
            };
        if !ok {
            log::warn!("virtio-mmio: status {old:#x} -> {v:#x} is not a valid step; ignored");
            return;
        }
        match step {
            status::FEATURES_OK => {
                if let Err(why) = self.check_features() {
                    log::warn!("virtio-mmio: FEATURES_OK refused: {why}");
                    return;
                }
                self.status |= status::FEATURES_OK;
            }
            status::DRIVER_OK => {
                self.status |= status::DRIVER_OK;
                if let Err(why) = self.activate() {
                    log::error!(
                        "virtio-mmio: device {} not activated: {why}",
                        self.device.device_id()
                    );
                    self.status |= status::DEVICE_NEEDS_RESET;
                    self.interrupt.signal_config();
                }
            }
            other => self.status |= other,
        }
    }

    fn check_features(&self) -> Result<(), String> {
        let offered = self.device.device_features();
        if self.driver_features & !offered != 0 {
            return Err(format!(
                "driver took features {:#x} the device did not offer ({offered:#x})",
                self.driver_features & !offered
            ));
        }
        if self.driver_features & (1 << VIRTIO_F_VERSION_1) == 0 {
            return Err(
                "driver did not take VIRTIO_F_VERSION_1 (legacy drivers are not supported)".into(),
            );
        }
        Ok(())
    }

    fn activate(&mut self) -> Result<(), RestoreError> {
        let mut queues = Vec::with_capacity(self.queues.len());
        for (index, q) in self.queues.iter().enumerate() {
            let fault = |fault| RestoreError::Queue { index, fault };
            if !q.is_valid(&self.mem) {
                return Err(fault(QueueFault::Unusable));
            }
            queues.push(Queue::try_from(q.state()).map_err(|e| fault(QueueFault::Invalid(e)))?);
        }
        self.device.activate(Activation {
            mem: self.mem.clone(),
            queues,
            interrupt: self.interrupt.clone(),
            features: self.driver_features,
        })?;
        self.activated = true;
        Ok(())
    }

    fn reset(&mut self) {
        if self.activated {
            self.device.reset();
        }
        self.activated = false;
        self.queues = Self::fresh_queues(self.device.as_ref());
        self.queue_select = 0;
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.driver_features = 0;
        self.status = 0;
        self.interrupt.clear();
    }
}

fn low(addr: u64, v: u32) -> GuestAddress {
    GuestAddress((addr & !0xffff_ffff) | u64::from(v))
}

fn high(addr: u64, v: u32) -> GuestAddress {
    GuestAddress((addr & 0xffff_ffff) | (u64::from(v) << 32))
}

impl MmioDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= regs::CONFIG {
            self.device.read_config(offset - regs::CONFIG, data);
            return;
        }
        if data.len() != 4 || offset & 3 != 0 {
            log::warn!(
                "virtio-mmio: {}-byte read at {offset:#x}; registers are 32-bit",
                data.len()
            );
            data.fill(0);
            return;
        }
        let v = self.read_register(offset);
        data.copy_from_slice(&v.to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= regs::CONFIG {
            self.device.write_config(offset - regs::CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            log::warn!(
                "virtio-mmio: {}-byte write at {offset:#x}; registers are 32-bit",
                data.len()
            );
            return;
        };
        if offset & 3 != 0 {
            log::warn!("virtio-mmio: misaligned write at {offset:#x}");
            return;
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests;
