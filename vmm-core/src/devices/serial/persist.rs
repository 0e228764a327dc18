//! The UART's snapshot state: [`SerialState`], and [`Serial::state`] and
//! [`Serial::restore_state`], which save and load it.

use serde::{Deserialize, Serialize};

use super::{Serial, IER_MASK, MCR_MASK, RX_CAPACITY};

/// The UART's registers and receive buffer, for a snapshot.
///
/// IIR, LSR and MSR are not stored: they are functions of these fields
/// (pending interrupts of `ier`, `thre_pending` and `rx`; LSR of `rx`; MSR
/// of `mcr`), exactly as the live UART computes them. Transmission is
/// instant, so there is no transmit state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SerialState {
    /// Interrupt enable register.
    pub ier: u8,
    /// Line control register (bit 7: DLAB).
    pub lcr: u8,
    /// Modem control register.
    pub mcr: u8,
    /// Scratch register.
    pub scr: u8,
    /// Divisor latch, low byte.
    pub dll: u8,
    /// Divisor latch, high byte.
    pub dlm: u8,
    /// FIFOs enabled (FCR bit 0).
    pub fifo_enabled: bool,
    /// A "THR empty" interrupt is pending (cleared by reading IIR).
    pub thre_pending: bool,
    /// Received bytes the guest has not read yet, oldest first.
    pub rx: Vec<u8>,
}

impl Serial {
    /// The registers and receive buffer, for a snapshot.
    pub fn state(&self) -> SerialState {
        SerialState {
            ier: self.ier,
            lcr: self.lcr,
            mcr: self.mcr,
            scr: self.scr,
            dll: self.dll,
            dlm: self.dlm,
            fifo_enabled: self.fifo,
            thre_pending: self.thre_pending,
            rx: self.rx.iter().copied().collect(),
        }
    }

    /// Load `state` (from a snapshot) and raise the interrupt if the state
    /// has one pending, as the live UART would have. Bits no register can
    /// hold are masked off and input beyond [`RX_CAPACITY`] is dropped, so
    /// any state is safe to load. The irqfd must already be registered with
    /// KVM, and the irqchip restored, for that interrupt to reach the guest.
    pub fn restore_state(&mut self, state: &SerialState) {
        if state.rx.len() > RX_CAPACITY {
            log::warn!(
                "serial: snapshot holds {} input bytes; keeping the first {RX_CAPACITY}",
                state.rx.len()
            );
        }
        self.ier = state.ier & IER_MASK;
        self.lcr = state.lcr;
        self.mcr = state.mcr & MCR_MASK;
        self.scr = state.scr;
        self.dll = state.dll;
        self.dlm = state.dlm;
        self.fifo = state.fifo_enabled;
        self.thre_pending = state.thre_pending;
        self.rx = state.rx.iter().take(RX_CAPACITY).copied().collect();
        self.raise();
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{irqs, rd, uart};
    use super::super::*;

    /// Every guest-visible register, read without side effects first
    /// (IIR clears THRE, DATA pops a byte, so those come last).
    fn all_reads(s: &mut Serial) -> Vec<u8> {
        let mut v: Vec<u8> = [IER, LCR, MCR, LSR, MSR, SCR]
            .iter()
            .map(|&o| rd(s, o))
            .collect();
        let lcr = rd(s, LCR);
        s.write(LCR, &[lcr | LCR_DLAB]);
        v.extend([rd(s, DATA), rd(s, IER)]);
        s.write(LCR, &[lcr]);
        v.push(rd(s, IIR_FCR));
        v.extend((0..4).map(|_| rd(s, DATA)));
        v.push(rd(s, IIR_FCR));
        v
    }

    #[test]
    fn state_round_trip() {
        let (mut s, _b, _e) = uart();
        s.write(IIR_FCR, &[FCR_ENABLE]);
        s.write(SCR, &[0xa5]);
        s.write(LCR, &[LCR_DLAB | 0x1b]);
        s.write(DATA, &[0x01]);
        s.write(IER, &[0x02]);
        s.write(LCR, &[0x1b]);
        s.write(MCR, &[0x0b]);
        s.write(IER, &[IER_RDA | IER_THRE]);
        s.push_input(b"abc");
        let state = s.state();
        let bytes = postcard::to_allocvec(&state).unwrap();
        let back: SerialState = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, state);

        let (mut r, _b2, evt) = uart();
        r.restore_state(&back);
        assert_eq!(r.state(), state);
        // Data is pending and enabled: the restore raised the interrupt.
        assert_eq!(irqs(&evt), 1);
        let reads = all_reads(&mut r);
        assert_eq!(reads, all_reads(&mut s));
        assert_eq!(
            &reads[8..],
            &[IIR_RDA | IIR_FIFO, b'a', b'b', b'c', 0, IIR_THRE | IIR_FIFO]
        );
    }

    #[test]
    fn restore_masks_bad_state_and_stays_quiet_without_interrupts() {
        let (mut s, _b, evt) = uart();
        let state = SerialState {
            ier: 0xff,
            lcr: 3,
            mcr: 0xff,
            scr: 0,
            dll: 1,
            dlm: 0,
            fifo_enabled: false,
            thre_pending: false,
            rx: vec![7; RX_CAPACITY + 10],
        };
        s.restore_state(&state);
        assert_eq!(
            (s.ier, s.mcr, s.rx.len()),
            (IER_MASK, MCR_MASK, RX_CAPACITY)
        );
        let _ = irqs(&evt);
        s.restore_state(&SerialState {
            ier: 0,
            mcr: 0x08,
            rx: Vec::new(),
            ..state
        });
        assert_eq!(irqs(&evt), 0);
        assert_eq!(rd(&mut s, IIR_FCR) & 0x0f, IIR_NONE);
    }
}
