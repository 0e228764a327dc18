//! A minimal 16550A UART, enough for Linux's 8250 driver and console.
//!
//! Registers (offset from the base port, DLAB = LCR bit 7):
//! 0 THR/RBR (DLL with DLAB), 1 IER (DLM with DLAB), 2 IIR/FCR, 3 LCR,
//! 4 MCR, 5 LSR, 6 MSR, 7 SCR. Transmission is instant: a byte written to THR
//! goes to the [`ConsoleOut`] at once, so THR and the shifter are always empty
//! (LSR THRE|TEMT). The "THR empty" interrupt is raised when the guest enables
//! it in IER and after each byte, and cleared by reading IIR, as on real
//! hardware; Linux's startup test for a working THRE interrupt depends on
//! exactly that. Received bytes (from [`Serial::push_input`]) raise the
//! "data available" interrupt. Interrupts are edges on an `EventFd` that KVM
//! turns into IRQ 4 through an irqfd. Loopback mode (MCR bit 4) feeds THR back
//! to RBR and mirrors MCR into MSR, which the driver's probe checks.
//!
//! [`Serial::state`] and [`Serial::restore_state`] save and load the
//! register file and the receive buffer for a VM snapshot.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::EventFd;

use super::console::ConsoleOut;
use super::{DeviceEvent, PioDevice};

const DATA: u16 = 0;
const IER: u16 = 1;
const IIR_FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
const MSR: u16 = 6;
const SCR: u16 = 7;

const IER_RDA: u8 = 0x01;
const IER_THRE: u8 = 0x02;
const IER_MASK: u8 = 0x0f;
const IIR_NONE: u8 = 0x01;
const IIR_THRE: u8 = 0x02;
const IIR_RDA: u8 = 0x04;
const IIR_FIFO: u8 = 0xc0;
const FCR_ENABLE: u8 = 0x01;
const FCR_CLEAR_RX: u8 = 0x02;
const LCR_DLAB: u8 = 0x80;
const MCR_LOOP: u8 = 0x10;
const MCR_MASK: u8 = 0x1f;
const LSR_DR: u8 = 0x01;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;
/// DCD | DSR | CTS: a terminal is attached and ready.
const MSR_DEFAULT: u8 = 0xb0;
/// Input bytes buffered before more are refused.
pub const RX_CAPACITY: usize = 4096;

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

/// The UART.
pub struct Serial {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    fifo: bool,
    thre_pending: bool,
    rx: VecDeque<u8>,
    irq: EventFd,
    out: ConsoleOut,
}

impl Serial {
    /// A UART that signals `irq` and writes to `out`.
    pub fn new(irq: EventFd, out: ConsoleOut) -> Self {
        Self {
            ier: 0,
            lcr: 0x03, // 8N1
            mcr: 0x08, // OUT2
            scr: 0,
            dll: 0x0c, // 9600 baud
            dlm: 0,
            fifo: false,
            thre_pending: false,
            rx: VecDeque::new(),
            irq,
            out,
        }
    }

    /// Queue bytes for the guest to read; returns how many fit.
    pub fn push_input(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(RX_CAPACITY - self.rx.len());
        self.rx.extend(&bytes[..n]);
        if n > 0 {
            self.raise();
        }
        n
    }

    /// Flush buffered console output to the sink.
    pub fn flush(&mut self) {
        self.out.flush();
    }

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

    fn iir(&self) -> u8 {
        let fifo = if self.fifo { IIR_FIFO } else { 0 };
        if self.ier & IER_RDA != 0 && !self.rx.is_empty() {
            IIR_RDA | fifo
        } else if self.ier & IER_THRE != 0 && self.thre_pending {
            IIR_THRE | fifo
        } else {
            IIR_NONE | fifo
        }
    }

    /// Signal the interrupt line if an enabled condition is pending.
    fn raise(&self) {
        if self.iir() & IIR_NONE == 0 {
            // An eventfd write fails only if the counter would overflow,
            // which means the interrupt is already pending many times over.
            let _ = self.irq.write(1);
        }
    }

    fn loopback(&self) -> bool {
        self.mcr & MCR_LOOP != 0
    }

    fn msr(&self) -> u8 {
        if self.loopback() {
            // DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
            let m = self.mcr;
            ((m & 0x01) << 5) | ((m & 0x02) << 3) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
        } else {
            MSR_DEFAULT
        }
    }

    fn read_reg(&mut self, offset: u16) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            DATA if dlab => self.dll,
            DATA => self.rx.pop_front().unwrap_or(0),
            IER if dlab => self.dlm,
            IER => self.ier,
            IIR_FCR => {
                let v = self.iir();
                if v & 0x0f == IIR_THRE {
                    // Reading IIR acknowledges the THR-empty interrupt.
                    self.thre_pending = false;
                }
                v
            }
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => LSR_THRE | LSR_TEMT | if self.rx.is_empty() { 0 } else { LSR_DR },
            MSR => self.msr(),
            SCR => self.scr,
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u16, v: u8) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            DATA if dlab => self.dll = v,
            DATA => {
                if self.loopback() {
                    if self.rx.len() < RX_CAPACITY {
                        self.rx.push_back(v);
                    }
                } else {
                    self.out.put(v);
                }
                self.thre_pending = true;
                self.raise();
            }
            IER if dlab => self.dlm = v,
            IER => {
                let newly_thre = v & IER_THRE != 0 && self.ier & IER_THRE == 0;
                self.ier = v & IER_MASK;
                if newly_thre {
                    // THR is empty, so enabling its interrupt fires it.
                    self.thre_pending = true;
                }
                self.raise();
            }
            IIR_FCR => {
                self.fifo = v & FCR_ENABLE != 0;
                if v & FCR_CLEAR_RX != 0 {
                    self.rx.clear();
                }
            }
            LCR => self.lcr = v,
            MCR => self.mcr = v & MCR_MASK,
            SCR => self.scr = v,
            // LSR and MSR are read-only.
            _ => {}
        }
    }
}

impl PioDevice for Serial {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        let Some((first, rest)) = data.split_first_mut() else {
            return;
        };
        *first = self.read_reg(offset);
        rest.fill(0);
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> DeviceEvent {
        if let Some(v) = data.first() {
            self.write_reg(offset, *v);
        }
        DeviceEvent::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::console::{ConsoleBuffer, ConsoleConfig, PanicRecord};

    fn uart() -> (Serial, ConsoleBuffer, EventFd) {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let (cfg, buf) = ConsoleConfig::buffer();
        let s = Serial::new(
            evt.try_clone().unwrap(),
            ConsoleOut::new(cfg, PanicRecord::default()),
        );
        (s, buf, evt)
    }

    fn rd(s: &mut Serial, off: u16) -> u8 {
        let mut b = [0u8];
        s.read(off, &mut b);
        b[0]
    }

    fn irqs(evt: &EventFd) -> u64 {
        evt.read().unwrap_or(0)
    }

    #[test]
    fn transmit_reaches_console() {
        let (mut s, buf, _evt) = uart();
        for b in b"hi\n" {
            s.write(DATA, &[*b]);
        }
        assert_eq!(&*buf.lock().unwrap(), b"hi\n");
        assert_eq!(rd(&mut s, LSR) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
    }

    #[test]
    fn thre_interrupt_like_linux_expects() {
        let (mut s, _buf, evt) = uart();
        assert_eq!(rd(&mut s, IIR_FCR) & 0x0f, IIR_NONE);
        // Enabling THRE fires at once; reading IIR clears it.
        s.write(IER, &[IER_THRE]);
        assert_eq!(irqs(&evt), 1);
        assert_eq!(rd(&mut s, IIR_FCR) & 0x0f, IIR_THRE);
        assert_eq!(rd(&mut s, IIR_FCR) & 0x0f, IIR_NONE);
        // Disable and re-enable: fires again (the driver's THRE test).
        s.write(IER, &[0]);
        s.write(IER, &[IER_THRE]);
        assert_eq!(rd(&mut s, IIR_FCR) & 0x0f, IIR_THRE);
        // Each transmitted byte makes THR empty again.
        s.write(DATA, b"x");
        assert!(irqs(&evt) >= 1);
        assert_eq!(rd(&mut s, IIR_FCR) & 0x0f, IIR_THRE);
        // With THRE disabled, no interrupt.
        s.write(IER, &[0]);
        s.write(DATA, b"y");
        assert_eq!(irqs(&evt), 0);
    }

    #[test]
    fn fifo_scratch_divisor() {
        let (mut s, _b, _e) = uart();
        s.write(IIR_FCR, &[FCR_ENABLE]);
        assert_eq!(rd(&mut s, IIR_FCR) & 0xc0, 0xc0);
        s.write(SCR, &[0x5a]);
        assert_eq!(rd(&mut s, SCR), 0x5a);
        s.write(LCR, &[LCR_DLAB | 3]);
        s.write(DATA, &[1]);
        s.write(IER, &[2]);
        assert_eq!((rd(&mut s, DATA), rd(&mut s, IER)), (1, 2));
        s.write(LCR, &[3]);
        assert_eq!(rd(&mut s, IER), 0);
    }

    #[test]
    fn loopback_and_input() {
        let (mut s, buf, evt) = uart();
        s.write(MCR, &[MCR_LOOP | 0x0a]);
        assert_eq!(rd(&mut s, MSR) & 0xf0, 0x90);
        s.write(DATA, &[0x55]);
        assert!(buf.lock().unwrap().is_empty());
        assert_eq!(rd(&mut s, LSR) & LSR_DR, LSR_DR);
        assert_eq!(rd(&mut s, DATA), 0x55);
        s.write(MCR, &[0x08]);
        assert_eq!(rd(&mut s, MSR), MSR_DEFAULT);
        s.write(IER, &[IER_RDA]);
        let _ = irqs(&evt);
        assert_eq!(s.push_input(b"ok"), 2);
        assert_eq!(irqs(&evt), 1);
        assert_eq!(rd(&mut s, IIR_FCR) & 0x0f, IIR_RDA);
        assert_eq!((rd(&mut s, DATA), rd(&mut s, DATA)), (b'o', b'k'));
        assert_eq!(rd(&mut s, LSR) & LSR_DR, 0);
    }

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

    #[test]
    fn wide_and_odd_accesses_are_safe() {
        let (mut s, _b, _e) = uart();
        let mut w = [0xffu8; 4];
        s.read(LSR, &mut w);
        assert_eq!(&w[1..], &[0, 0, 0]);
        s.write(7, &[]);
        s.read(9, &mut w[..1]);
    }
}
