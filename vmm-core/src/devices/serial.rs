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
//! register file and the receive buffer for a VM snapshot; they and
//! [`SerialState`] live in the child module `persist`.

use std::collections::VecDeque;

use vmm_sys_util::eventfd::EventFd;

use super::console::ConsoleOut;
use super::{DeviceEvent, PioDevice};

mod persist;

pub use persist::SerialState;

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

    pub(super) fn uart() -> (Serial, ConsoleBuffer, EventFd) {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let (cfg, buf) = ConsoleConfig::buffer();
        let s = Serial::new(
            evt.try_clone().unwrap(),
            ConsoleOut::new(cfg, PanicRecord::default()),
        );
        (s, buf, evt)
    }

    pub(super) fn rd(s: &mut Serial, off: u16) -> u8 {
        let mut b = [0u8];
        s.read(off, &mut b);
        b[0]
    }

    pub(super) fn irqs(evt: &EventFd) -> u64 {
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
