//! The vsock device's snapshot state: [`VsockState`] (the guest CID and
//! the acked features; connections are not saved) with its encoding,
//! [`VsockDevice::state`], which reads it out, and
//! [`VsockDevice::restore`], which starts a device from it.

use serde::{Deserialize, Serialize};

use super::{VsockConfig, VsockDevice, VsockSetupError, DEVICE_FEATURES};
use crate::devices::virtio::DeviceStateError;

/// The device's state for a snapshot (connections are not part of it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VsockState {
    /// The guest's CID.
    pub guest_cid: u64,
    /// Features the driver accepted (0 if it never activated the device).
    pub acked_features: u64,
}

impl VsockState {
    /// Encode, as [`VirtioDevice::device_state`] returns it.
    ///
    /// [`VirtioDevice::device_state`]: crate::devices::virtio::VirtioDevice::device_state
    pub fn to_bytes(&self) -> Result<Vec<u8>, DeviceStateError> {
        postcard::to_allocvec(self).map_err(DeviceStateError::Encode)
    }

    /// Decode what [`VirtioDevice::device_state`] returned.
    ///
    /// [`VirtioDevice::device_state`]: crate::devices::virtio::VirtioDevice::device_state
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DeviceStateError> {
        postcard::from_bytes(bytes).map_err(DeviceStateError::Decode)
    }
}

impl VsockDevice {
    /// A device for a VM restored from a snapshot taken with `state`, with
    /// the host backends of `config` (whose `guest_cid` must be the
    /// snapshot's; `uds_path` may differ). Once the transport activates it,
    /// it posts one VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (when the guest offers
    /// an event buffer, and before any packet to the guest).
    pub fn restore(config: &VsockConfig, state: &VsockState) -> Result<Self, VsockSetupError> {
        if state.guest_cid != config.guest_cid {
            return Err(VsockSetupError::CidMismatch {
                snapshot: state.guest_cid,
                config: config.guest_cid,
            });
        }
        if state.acked_features & !DEVICE_FEATURES != 0 {
            return Err(VsockSetupError::Features {
                acked: state.acked_features,
                offered: DEVICE_FEATURES,
            });
        }
        let mut dev = Self::start(config, true)?;
        dev.acked_features = state.acked_features;
        Ok(dev)
    }

    /// The device's state for a snapshot.
    pub fn state(&self) -> VsockState {
        VsockState {
            guest_cid: self.guest_cid,
            acked_features: self.acked_features,
        }
    }
}
