//! The i8042's snapshot state: [`I8042State`], and [`I8042::state`] and
//! [`I8042::restore_state`], which save and load it.

use serde::{Deserialize, Serialize};

use super::I8042;

/// The i8042's state, for a snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct I8042State {
    /// Command 0xD1 was written: the next data byte goes to the output port.
    pub pending_output_write: bool,
}

impl I8042 {
    /// The controller's state, for a snapshot.
    pub fn state(&self) -> I8042State {
        I8042State {
            pending_output_write: self.pending_output_write,
        }
    }

    /// Load `state` (from a snapshot). Raises nothing: the i8042 has no
    /// interrupt here.
    pub fn restore_state(&mut self, state: &I8042State) {
        self.pending_output_write = state.pending_output_write;
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;

    #[test]
    fn state_round_trip() {
        let mut k = I8042::new();
        k.write(COMMAND_OFFSET, &[CMD_WRITE_OUTPUT]);
        let state = k.state();
        assert!(state.pending_output_write);
        let mut r = I8042::new();
        r.restore_state(&state);
        assert_eq!(r.state(), state);
        assert_eq!(r.write(DATA_OFFSET, &[0x00]), DeviceEvent::Reset);
    }
}
