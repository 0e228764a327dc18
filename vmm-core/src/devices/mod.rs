//! Emulated devices: the port-I/O bus and the legacy PC devices a Linux guest
//! needs to boot and to leave: the 8250 UART (console) and an i8042 that
//! turns the keyboard controller reset into a VM reset. [`virtio`] holds the
//! virtio-mmio transport, its MMIO bus, and the virtio-vsock device.
//!
//! Devices see only offsets inside their own port range, never raw ports,
//! and report guest requests that concern the whole VM (a reset) as a
//! [`DeviceEvent`] returned from the write; the vCPU loop acts on it.

pub mod bus;
pub mod console;
pub mod i8042;
pub mod range_map;
pub mod serial;
pub mod virtio;

/// What a device write asks of the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceEvent {
    /// Nothing beyond the device itself.
    None,
    /// The guest asked for a machine reset.
    Reset,
}

/// A device on the port-I/O bus.
pub trait PioDevice: Send {
    /// Guest reads `data.len()` bytes at `offset` into the device's range.
    fn read(&mut self, offset: u16, data: &mut [u8]);
    /// Guest writes `data` at `offset` into the device's range.
    fn write(&mut self, offset: u16, data: &[u8]) -> DeviceEvent;
}
