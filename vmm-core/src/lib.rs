//! embervm-core: the embervm virtual machine monitor.
//!
//! Boots the embervm guest (or any x86-64 Linux `vmlinux`/`bzImage`) under
//! KVM: [`VmConfig`] says what to boot, [`Vm::new`] checks it and builds the
//! VM, [`Vm::run`] runs it to its [`ExitReason`], and a [`VmHandle`] pauses,
//! resumes or kills it from another thread.
//!
//! Modules, one concern each:
//! - [`arch::x86_64`]: memory layout, e820, kernel loading and boot
//!   protocols (PVH, 64-bit Linux), GDT, page tables, registers, CPUID, MSRs,
//!   LAPIC, MP table: plain data and pure functions.
//! - [`memory`]: guest RAM sizing and the lazy host mapping.
//! - [`vstate`]: thin wrappers over the KVM VM and vCPU fds, and the vCPU
//!   run control (pause/resume/stop with a signal kick).
//! - [`devices`]: the port-I/O bus, the 8250 UART with its console sink, and
//!   the i8042 reset.
//! - [`vm`], [`exit`], [`error`]: the public API, how a VM ended, and errors.
//! - [`kvm`], [`paths`]: opening `/dev/kvm`, and where the guest lives.
//! - [`sandbox`]: the public [`Sandbox`] API: boot, connect to the guest
//!   agent, exec, run code, call functions, move files.

pub mod arch;
pub mod devices;
pub mod error;
pub mod exit;
pub mod kvm;
pub mod memory;
pub mod paths;
pub mod sandbox;
pub mod snapshot;
pub mod vm;
pub mod vstate;

pub use devices::console::{ConsoleBuffer, ConsoleConfig, ConsoleSink};
pub use error::VmError;
pub use exit::{ExitReason, ShutdownCause, VcpuFault, VcpuRegisters};
pub use sandbox::{CallError, Command, Language, Output, Sandbox, SandboxConfig, SandboxError};
pub use vm::{Vm, VmConfig, VmHandle};
