//! x86-64 boot: the memory layout, e820, kernel loading and boot protocols,
//! the boot GDT, identity page tables, registers, CPUID, MSRs, LAPIC wiring
//! and the MP table. Everything here is plain data and pure functions over
//! guest memory; the KVM calls that apply it live in [`crate::vstate`].

pub mod boot;
pub mod cpuid;
pub mod e820;
pub mod gdt;
pub mod interrupts;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod paging;
pub mod regs;
