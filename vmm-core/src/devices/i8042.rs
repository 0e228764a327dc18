//! Just enough of the i8042 keyboard controller to reset the machine.
//!
//! Linux's `reboot=k` writes the pulse-reset command 0xFE to the command port
//! 0x64; the legacy way is command 0xD1 (write output port) followed by a data
//! byte with bit 0 (the CPU reset line) clear. Either becomes
//! [`DeviceEvent::Reset`]. The status register reads as "both buffers empty",
//! so the guest's wait-for-ready loops finish at once; there is no keyboard.

use super::{DeviceEvent, PioDevice};

/// Offset of the data port (0x60) in the device's range.
pub const DATA_OFFSET: u16 = 0;
/// Offset of the command/status port (0x64) in the device's range.
pub const COMMAND_OFFSET: u16 = 4;
/// Pulse the reset line.
pub const CMD_RESET_CPU: u8 = 0xfe;
/// Write the next data byte to the output port.
pub const CMD_WRITE_OUTPUT: u8 = 0xd1;

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
    fn read(&mut self, _offset: u16, data: &mut [u8]) {
        // Status: output and input buffers empty. Data: nothing to read.
        data.fill(0);
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
