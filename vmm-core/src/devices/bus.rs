//! The port-I/O bus: maps a guest port to the device that owns it.
//!
//! Built once while the VM is set up, then shared read-only by all vCPU
//! threads; each device sits behind its own mutex, so vCPUs only contend when
//! they touch the same device. Ports nobody owns read as zero (so probes for
//! absent legacy hardware fail fast) and ignore writes.

use std::sync::{Arc, Mutex};

use super::range_map::RangeMap;
use super::{DeviceEvent, PioDevice};

/// A shared device.
pub type SharedDevice = Arc<Mutex<dyn PioDevice>>;

/// A range overlaps one already on the bus.
#[derive(Debug, thiserror::Error)]
#[error("I/O ports {base:#x}+{len} overlap a device already on the bus")]
pub struct BusOverlap {
    /// First port.
    pub base: u16,
    /// Number of ports.
    pub len: u16,
}

/// The port-I/O bus.
#[derive(Default)]
pub struct PioBus {
    devices: RangeMap<SharedDevice>,
}

impl PioBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attach `dev` at ports `base..base+len`.
    pub fn insert(&mut self, base: u16, len: u16, dev: SharedDevice) -> Result<(), BusOverlap> {
        if self
            .devices
            .insert(u64::from(base), u64::from(len), 0x1_0000, dev)
        {
            Ok(())
        } else {
            Err(BusOverlap { base, len })
        }
    }

    /// The device that owns the whole access and the port's offset in it.
    fn find(&self, port: u16, size: usize) -> Option<(&SharedDevice, u16)> {
        let (dev, off) = self.devices.find(u64::from(port), size)?;
        // Offsets inside a range of at most 0x10000 ports fit in u16.
        Some((dev, u16::try_from(off).ok()?))
    }

    /// A guest read from `port`; returns false (and zeros) if nobody owns it.
    ///
    /// KVM reports string I/O (`rep insb`) as one buffer of count × size
    /// bytes; anything wider than 4 bytes is treated as that many byte reads
    /// of the same port (the devices here are byte-wide).
    pub fn read(&self, port: u16, data: &mut [u8]) -> bool {
        if data.len() > 4 {
            let mut owned = true;
            for b in data.chunks_mut(1) {
                owned &= self.read_one(port, b);
            }
            return owned;
        }
        self.read_one(port, data)
    }

    fn read_one(&self, port: u16, data: &mut [u8]) -> bool {
        match self.find(port, data.len()) {
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

    /// A guest write to `port` (string I/O is split as in [`PioBus::read`]).
    pub fn write(&self, port: u16, data: &[u8]) -> DeviceEvent {
        if data.len() > 4 {
            let mut event = DeviceEvent::None;
            for b in data.chunks(1) {
                if self.write_one(port, b) == DeviceEvent::Reset {
                    event = DeviceEvent::Reset;
                }
            }
            return event;
        }
        self.write_one(port, data)
    }

    fn write_one(&self, port: u16, data: &[u8]) -> DeviceEvent {
        match self.find(port, data.len()) {
            Some((dev, off)) => match dev.lock() {
                Ok(mut d) => d.write(off, data),
                Err(_) => DeviceEvent::None,
            },
            None => DeviceEvent::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(Vec<(u16, u8)>);
    impl PioDevice for Echo {
        fn read(&mut self, offset: u16, data: &mut [u8]) {
            data.fill(offset as u8 + 1);
        }
        fn write(&mut self, offset: u16, data: &[u8]) -> DeviceEvent {
            self.0.push((offset, data[0]));
            DeviceEvent::None
        }
    }

    #[test]
    fn routes_by_offset_and_checks_bounds() {
        let dev = Arc::new(Mutex::new(Echo(Vec::new())));
        let mut bus = PioBus::new();
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        assert!(bus.insert(0x3fc, 8, dev.clone()).is_err());
        assert!(bus.insert(0xfffc, 8, dev.clone()).is_err());
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b, [3]);
        // A 4-byte access at the last port runs past the range: unowned.
        let mut w = [9u8; 4];
        assert!(!bus.read(0x3ff, &mut w));
        assert_eq!(w, [0; 4]);
        assert!(!bus.read(0x2f8, &mut b));
        assert_eq!(bus.write(0x3f9, &[0x42]), DeviceEvent::None);
        assert_eq!(dev.lock().unwrap().0, vec![(1, 0x42)]);
        // String I/O: each byte is its own access to the same port.
        bus.write(0x3f8, b"abcdef");
        assert_eq!(dev.lock().unwrap().0.len(), 7);
        let mut s = [0u8; 6];
        assert!(bus.read(0x3fd, &mut s));
        assert_eq!(s, [6; 6]);
    }
}
