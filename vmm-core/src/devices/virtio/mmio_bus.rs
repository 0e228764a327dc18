//! The MMIO bus: maps a guest-physical address in the MMIO gap to the
//! virtio-mmio window that owns it.
//!
//! Built while the VM is set up and then shared read-only by all vCPU
//! threads, like the port bus; each device sits behind its own mutex.
//! Addresses nobody owns read as zero and ignore writes.

use std::sync::{Arc, Mutex};

use crate::devices::range_map::RangeMap;

/// A device in guest-physical address space.
pub trait MmioDevice: Send {
    /// Guest reads `data.len()` bytes at `offset` into the device's window.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest writes `data` at `offset` into the device's window.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A shared MMIO device.
pub type SharedMmioDevice = Arc<Mutex<dyn MmioDevice>>;

/// A window overlaps one already on the bus, or is empty or wraps.
#[derive(Debug, thiserror::Error)]
#[error("MMIO window {base:#x}+{len:#x} is empty, wraps, or overlaps a device on the bus")]
pub struct MmioOverlap {
    /// Start address.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
}

/// The MMIO bus.
#[derive(Default)]
pub struct MmioBus {
    devices: RangeMap<SharedMmioDevice>,
}

impl MmioBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attach `dev` at `base..base+len`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        dev: SharedMmioDevice,
    ) -> Result<(), MmioOverlap> {
        if self.devices.insert(base, len, u64::MAX, dev) {
            Ok(())
        } else {
            Err(MmioOverlap { base, len })
        }
    }

    /// A guest read at `addr`; returns false (and zeros) if nobody owns it.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.devices.find(addr, data.len()) {
            Some((dev, off)) => {
                match dev.lock() {
                    Ok(mut d) => d.read(off, data),
                    Err(_) => data.fill(0xff),
                }
                true
            }
            None => {
                data.fill(0);
                false
            }
        }
    }

    /// A guest write at `addr`; returns false if nobody owns it.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.devices.find(addr, data.len()) {
            Some((dev, off)) => {
                if let Ok(mut d) = dev.lock() {
                    d.write(off, data);
                }
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rec(Vec<(u64, usize)>);
    impl MmioDevice for Rec {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.len()));
        }
    }

    #[test]
    fn routes_and_checks_bounds() {
        let dev = Arc::new(Mutex::new(Rec(Vec::new())));
        let mut bus = MmioBus::new();
        bus.insert(0xd000_0000, 0x1000, dev.clone()).unwrap();
        assert!(bus.insert(0xd000_0800, 0x1000, dev.clone()).is_err());
        assert!(bus.insert(u64::MAX - 4, 0x1000, dev.clone()).is_err());
        assert!(bus.insert(0xd000_1000, 0, dev.clone()).is_err());
        let mut b = [0u8; 4];
        assert!(bus.read(0xd000_0070, &mut b));
        assert_eq!(b, [0x70; 4]);
        // Runs past the window: unowned.
        assert!(!bus.read(0xd000_0ffe, &mut b));
        assert_eq!(b, [0; 4]);
        assert!(bus.write(0xd000_0050, &[0, 0, 0, 0]));
        assert!(!bus.write(0xc000_0000, &[0]));
        assert!(!bus.write(u64::MAX, &[0, 0]));
        assert_eq!(dev.lock().unwrap().0, vec![(0x50, 4)]);
    }
}
