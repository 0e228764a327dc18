//! The transport's snapshot state: [`MmioTransportState`] and
//! [`VirtqueueState`], [`MmioTransport::state`], which reads them out, and
//! [`MmioTransport::restore`], which checks them and builds a transport.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState};

use super::{MmioTransport, QueueFault, RestoreError};
use crate::devices::virtio::{
    status, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_INT_CONFIG, VIRTIO_INT_VRING,
};
use crate::memory::GuestMemory;

/// `VIRTIO_RING_F_EVENT_IDX` (feature bit 29).
const VIRTIO_RING_F_EVENT_IDX: u32 = 29;

/// One virtqueue's registers and ring positions, for a snapshot (the
/// serialisable twin of [`QueueState`]).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct VirtqueueState {
    /// Largest size the device offers.
    pub max_size: u16,
    /// Size the driver chose.
    pub size: u16,
    /// The driver marked the queue ready.
    pub ready: bool,
    /// Guest-physical address of the descriptor table.
    pub desc_table: u64,
    /// Guest-physical address of the available ring.
    pub avail_ring: u64,
    /// Guest-physical address of the used ring.
    pub used_ring: u64,
    /// The device's next index into the available ring.
    pub next_avail: u16,
    /// The device's next index into the used ring.
    pub next_used: u16,
    /// `VIRTIO_RING_F_EVENT_IDX` is in use.
    pub event_idx_enabled: bool,
}

impl From<QueueState> for VirtqueueState {
    fn from(q: QueueState) -> Self {
        Self {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
        }
    }
}

impl From<VirtqueueState> for QueueState {
    fn from(q: VirtqueueState) -> Self {
        Self {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

/// The transport's registers and queues, for a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MmioTransportState {
    /// The virtio device id behind the transport (checked on restore).
    pub device_id: u32,
    /// Device status register.
    pub status: u32,
    /// DeviceFeaturesSel.
    pub device_features_select: u32,
    /// DriverFeaturesSel.
    pub driver_features_select: u32,
    /// Features the driver wrote (the acked features once FEATURES_OK).
    pub driver_features: u64,
    /// QueueSel.
    pub queue_select: u32,
    /// Interrupt status bits not yet acknowledged.
    pub interrupt_status: u32,
    /// ConfigGeneration.
    pub config_generation: u32,
    /// Every queue, in index order.
    pub queues: Vec<VirtqueueState>,
}

impl MmioTransport {
    /// Rebuild a transport from a snapshot `state` around `device` (a new
    /// device of the same type, its eventfds already registered with KVM).
    /// Every field is checked as if the guest had written it: the device
    /// id, the status (a value the driver can reach), the features against
    /// the status, each queue's maximum, size and ring alignment, and, if the
    /// driver had the device running (DRIVER_OK without DEVICE_NEEDS_RESET),
    /// that every queue is ready and inside guest memory. Then the interrupt
    /// status is loaded (pulsing the irqfd if any bit is set) and such a
    /// device is activated with the restored queues, through the same path
    /// as a live DRIVER_OK, so it resumes where it was.
    pub fn restore(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        interrupt: Arc<Interrupt>,
        state: &MmioTransportState,
    ) -> Result<Self, RestoreError> {
        check_registers(device.as_ref(), state)?;
        let queues = restore_queues(device.as_ref(), state)?;
        let mut t = Self {
            device,
            mem,
            interrupt,
            queues,
            queue_select: state.queue_select,
            device_features_select: state.device_features_select,
            driver_features_select: state.driver_features_select,
            driver_features: state.driver_features,
            status: state.status,
            activated: false,
            config_generation: state.config_generation,
            quiesced: false,
        };
        // Before activation: from then on the device may set bits itself.
        t.interrupt.restore_status(state.interrupt_status);
        if t.status & status::DRIVER_OK != 0 && t.status & status::DEVICE_NEEDS_RESET == 0 {
            t.activate()?;
        }
        Ok(t)
    }

    /// Every register and queue, for a snapshot. While the device is
    /// activated its queues move on another thread: call
    /// [`Self::quiesce`] first, or the ring positions may be stale.
    pub fn state(&self) -> MmioTransportState {
        if self.activated && !self.quiesced {
            log::warn!("virtio-mmio: state of an active device that is not quiesced");
        }
        MmioTransportState {
            device_id: self.device.device_id(),
            status: self.status,
            device_features_select: self.device_features_select,
            driver_features_select: self.driver_features_select,
            driver_features: self.driver_features,
            queue_select: self.queue_select,
            interrupt_status: self.interrupt.status(),
            config_generation: self.config_generation,
            queues: self.queues.iter().map(|q| q.state().into()).collect(),
        }
    }
}

/// Whether the transport can reach `s`: a prefix of ACKNOWLEDGE → DRIVER →
/// FEATURES_OK → DRIVER_OK, maybe with FAILED (settable at any time), and
/// DEVICE_NEEDS_RESET only after DRIVER_OK (a failed activation).
fn status_reachable(s: u32) -> bool {
    const A: u32 = status::ACKNOWLEDGE;
    const D: u32 = status::DRIVER;
    const F: u32 = status::FEATURES_OK;
    const ALL: u32 = A | D | F | status::DRIVER_OK;
    let steps = s & !(status::FAILED | status::DEVICE_NEEDS_RESET);
    [0, A, A | D, A | D | F, ALL].contains(&steps)
        && (s & status::DEVICE_NEEDS_RESET == 0 || steps == ALL)
}

/// Check a state's device id, status, features and interrupt status.
fn check_registers(device: &dyn VirtioDevice, st: &MmioTransportState) -> Result<(), RestoreError> {
    let expected = device.device_id();
    if st.device_id != expected {
        return Err(RestoreError::DeviceId {
            expected,
            found: st.device_id,
        });
    }
    if !status_reachable(st.status) {
        return Err(RestoreError::Status(st.status));
    }
    let offered = device.device_features();
    let features_ok = if st.status & status::FEATURES_OK != 0 {
        st.driver_features & !offered == 0 && st.driver_features & (1 << VIRTIO_F_VERSION_1) != 0
    } else {
        // Features are written only once DRIVER is set.
        st.status & status::DRIVER != 0 || st.driver_features == 0
    };
    if !features_ok {
        return Err(RestoreError::Features {
            features: st.driver_features,
            status: st.status,
            offered,
        });
    }
    if st.interrupt_status & !(VIRTIO_INT_VRING | VIRTIO_INT_CONFIG) != 0 {
        return Err(RestoreError::InterruptStatus(st.interrupt_status));
    }
    Ok(())
}

/// Build the queues of a state, checked against the device's.
fn restore_queues(
    device: &dyn VirtioDevice,
    st: &MmioTransportState,
) -> Result<Vec<Queue>, RestoreError> {
    let maxes = device.queue_max_sizes();
    if st.queues.len() != maxes.len() {
        return Err(RestoreError::QueueCount {
            expected: maxes.len(),
            found: st.queues.len(),
        });
    }
    let event_idx = st.driver_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
    st.queues
        .iter()
        .zip(maxes)
        .enumerate()
        .map(|(index, (q, &max))| {
            let fault = |fault| RestoreError::Queue { index, fault };
            if q.max_size != max {
                return Err(fault(QueueFault::MaxSize {
                    expected: max,
                    found: q.max_size,
                }));
            }
            if q.event_idx_enabled && !event_idx {
                return Err(fault(QueueFault::EventIdx));
            }
            Queue::try_from(QueueState::from(*q)).map_err(|e| fault(QueueFault::Invalid(e)))
        })
        .collect()
}
