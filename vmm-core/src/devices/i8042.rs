//! Just enough of the i8042 keyboard controller to reset the machine.
//!
//! Linux's `reboot=k` writes the pulse-reset command 0xFE to the command port
//! 0x64; the legacy way is command 0xD1 (write output port) followed by a data
//! byte with bit 0 (the CPU reset line) clear. Either becomes
//! [`DeviceEvent::Reset`]. There is no keyboard, and the guest's i8042 driver
//! must learn that at once: the status register reads 0x01, "output buffer
//! full, input buffer empty", for good. The input buffer being empty makes
//! the reset path's `kb_wait()` finish at once; the output buffer never
//! draining makes the driver's first step (`i8042_flush()`, which reads at
//! most 16 bytes) report "No controller found" within a millisecond. With a
//! status of 0 ("both empty") the driver instead sends "read CTR" and polls
//! for the answer 10000 times 50 us: half a second of every boot, measured
//! as ~10000 exits on port 0x64 and "Can't read CTR while initializing
//! i8042" in the guest log.
//!
//! Its only state, a pending "write output port" command, is saved for a
//! snapshot by [`I8042::state`] and loaded by [`I8042::restore_state`]
//! (with [`I8042State`], in the child module `persist`).

use super::{DeviceEvent, PioDevice};

mod persist;

pub use persist::I8042State;

/// Offset of the data port (0x60) in the device's range.
pub const DATA_OFFSET: u16 = 0;
/// Offset of the command/status port (0x64) in the device's range.
pub const COMMAND_OFFSET: u16 = 4;
/// Pulse the reset line.
pub const CMD_RESET_CPU: u8 = 0xfe;
/// Write the next data byte to the output port.
pub const CMD_WRITE_OUTPUT: u8 = 0xd1;
/// Status: output buffer full (OBF), input buffer empty (IBF clear).
pub const STATUS: u8 = 0x01;

/// The i8042.
#[derive(Debug, Default)]
pub struct I8042 {
    pending_output_write: bool,
}

impl I8042 {
    /// A controller with no command in progress.
    pub fn new() -> Self {
        Self::default()
    }
}

impl PioDevice for I8042 {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        // Status: see the module comment. Data: nothing meaningful.
        let v = if offset == COMMAND_OFFSET { STATUS } else { 0 };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = v;
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> DeviceEvent {
        let Some(&v) = data.first() else {
            return DeviceEvent::None;
        };
        match offset {
            COMMAND_OFFSET => {
                self.pending_output_write = v == CMD_WRITE_OUTPUT;
                if v == CMD_RESET_CPU {
                    return DeviceEvent::Reset;
                }
            }
            DATA_OFFSET if self.pending_output_write => {
                self.pending_output_write = false;
                if v & 1 == 0 {
                    return DeviceEvent::Reset;
                }
            }
            _ => {}
        }
        DeviceEvent::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command() {
        let mut k = I8042::new();
        assert_eq!(k.write(COMMAND_OFFSET, &[0xaa]), DeviceEvent::None);
        assert_eq!(
            k.write(COMMAND_OFFSET, &[CMD_RESET_CPU]),
            DeviceEvent::Reset
        );
        assert_eq!(k.write(DATA_OFFSET, &[CMD_RESET_CPU]), DeviceEvent::None);
        let mut s = [0xffu8; 1];
        k.read(COMMAND_OFFSET, &mut s);
        assert_eq!(s, [STATUS]);
    }

    #[test]
    fn status_says_absent_controller_but_ready_for_reset() {
        let mut k = I8042::new();
        let mut s = [0u8; 1];
        k.read(COMMAND_OFFSET, &mut s);
        // OBF set forever: Linux's i8042_flush() gives up after 16 reads.
        assert_eq!(s[0] & 0x01, 0x01);
        // IBF clear: the reset path's kb_wait() does not wait.
        assert_eq!(s[0] & 0x02, 0);
        k.read(DATA_OFFSET, &mut s);
        assert_eq!(s, [0]);
    }

    #[test]
    fn output_port_reset() {
        let mut k = I8042::new();
        k.write(COMMAND_OFFSET, &[CMD_WRITE_OUTPUT]);
        assert_eq!(k.write(DATA_OFFSET, &[0x01]), DeviceEvent::None);
        k.write(COMMAND_OFFSET, &[CMD_WRITE_OUTPUT]);
        assert_eq!(k.write(DATA_OFFSET, &[0xfe]), DeviceEvent::Reset);
        assert_eq!(k.write(DATA_OFFSET, &[0x00]), DeviceEvent::None);
    }
}
