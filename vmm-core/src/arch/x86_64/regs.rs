//! Initial register state of the boot vCPU, per boot protocol.
//!
//! Pure functions from an [`EntryPoint`] to `kvm_regs`, `kvm_sregs` and
//! `kvm_fpu`; `vstate::vcpu` applies them. The two protocols:
//!
//! - **PVH** (vmlinux with a `XEN_ELFNOTE_PHYS32_ENTRY` note): 32-bit
//!   protected mode, paging off, flat 32-bit segments, `ebx` = address of
//!   `hvm_start_info`.
//! - **Linux 64-bit** (bzImage at load address + 0x200, or a vmlinux without
//!   the note): long mode with the identity map in CR3, flat 64-bit code
//!   segment, `rsi` = address of the zero page.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};

use super::gdt::{gdt_64bit, gdt_pvh, segment_from_gdt};
use super::layout::{
    BOOT_GDT_ENTRIES, BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PML4_START,
    PVH_INFO_START, ZERO_PAGE_START,
};

/// Where and how the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryPoint {
    /// PVH 32-bit entry at this address.
    Pvh(u64),
    /// 64-bit Linux boot protocol entry at this address.
    Linux64(u64),
}

impl EntryPoint {
    /// The boot GDT this entry expects.
    pub fn gdt(&self) -> [u64; BOOT_GDT_ENTRIES] {
        match self {
            EntryPoint::Pvh(_) => gdt_pvh(),
            EntryPoint::Linux64(_) => gdt_64bit(),
        }
    }
}

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// General-purpose registers at entry.
pub fn boot_regs(entry: EntryPoint) -> kvm_regs {
    match entry {
        EntryPoint::Pvh(rip) => kvm_regs {
            rflags: 0x2,
            rip,
            rbx: PVH_INFO_START,
            ..Default::default()
        },
        EntryPoint::Linux64(rip) => kvm_regs {
            rflags: 0x2,
            rip,
            rsp: BOOT_STACK_POINTER,
            rbp: BOOT_STACK_POINTER,
            rsi: ZERO_PAGE_START,
            ..Default::default()
        },
    }
}

/// Segment and control registers at entry, starting from the vCPU's current
/// `sregs` (which keep KVM's APIC base and interrupt bitmap).
pub fn boot_sregs(mut sregs: kvm_sregs, entry: EntryPoint) -> kvm_sregs {
    let gdt = entry.gdt();
    let code = segment_from_gdt(gdt[1], 1);
    let data = segment_from_gdt(gdt[2], 2);
    let tss = segment_from_gdt(gdt[3], 3);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    match entry {
        EntryPoint::Pvh(_) => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        EntryPoint::Linux64(_) => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            sregs.cr3 = PML4_START;
            sregs.cr4 = X86_CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
        }
    }
    sregs
}

/// FPU state at entry: the x87 and SSE power-on control words.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_entry() {
        let e = EntryPoint::Linux64(0x100_0200);
        let r = boot_regs(e);
        assert_eq!(
            (r.rip, r.rsi, r.rsp, r.rflags),
            (0x100_0200, ZERO_PAGE_START, BOOT_STACK_POINTER, 2)
        );
        let s = boot_sregs(kvm_sregs::default(), e);
        assert_eq!(s.cr3, PML4_START);
        assert_ne!(s.cr0 & X86_CR0_PG, 0);
        assert_eq!(s.efer, EFER_LME | EFER_LMA);
        assert_eq!(
            (s.cs.l, s.cs.selector, s.ds.selector, s.tr.selector),
            (1, 8, 16, 24)
        );
        assert_eq!(s.gdt.limit, 31);
    }

    #[test]
    fn pvh_entry() {
        let e = EntryPoint::Pvh(0x100_0000);
        let r = boot_regs(e);
        assert_eq!((r.rip, r.rbx), (0x100_0000, PVH_INFO_START));
        let s = boot_sregs(kvm_sregs::default(), e);
        assert_eq!(s.cr0, X86_CR0_PE | X86_CR0_ET);
        assert_eq!((s.cr4, s.efer), (0, 0));
        assert_eq!((s.cs.l, s.cs.db), (0, 1));
        assert_eq!(s.tr.limit, 0x67);
    }
}
