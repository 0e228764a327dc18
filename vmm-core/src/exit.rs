//! How a VM ended, and the vCPU state attached to a failure.

use kvm_bindings::{kvm_regs, kvm_sregs};

/// Why the guest stopped, when it stopped the way a guest may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest reset the machine: `reboot` with `reboot=k` (i8042 0xFE), or
    /// a KVM reset system event.
    Reset,
    /// The guest shut the machine down.
    Shutdown(ShutdownCause),
    /// The caller killed the VM ([`crate::VmHandle::kill`]).
    Killed,
}

/// How the guest shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownCause {
    /// A triple fault (`KVM_EXIT_SHUTDOWN`), e.g. `reboot` with `reboot=t`.
    TripleFault,
    /// A KVM shutdown system event (power off).
    PowerOff,
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Reset => f.write_str("guest reset"),
            ExitReason::Shutdown(ShutdownCause::TripleFault) => {
                f.write_str("guest shutdown (triple fault)")
            }
            ExitReason::Shutdown(ShutdownCause::PowerOff) => {
                f.write_str("guest shutdown (power off)")
            }
            ExitReason::Killed => f.write_str("killed by the host"),
        }
    }
}

/// What went wrong inside a vCPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuFault {
    /// `KVM_EXIT_INTERNAL_ERROR` with its suberror (1 = emulation failure).
    InternalError {
        /// `kvm_run.internal.suberror`.
        suberror: u32,
    },
    /// `KVM_EXIT_FAIL_ENTRY`: the hardware refused the vCPU state.
    FailEntry {
        /// Hardware entry failure reason.
        reason: u64,
    },
    /// A KVM crash system event.
    Crash,
    /// An exit the VMM does not handle.
    UnhandledExit(String),
    /// `KVM_RUN` itself failed.
    Run(String),
}

impl std::fmt::Display for VcpuFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VcpuFault::InternalError { suberror } => {
                write!(f, "KVM internal error (suberror {suberror})")
            }
            VcpuFault::FailEntry { reason } => write!(f, "KVM entry failure (reason {reason:#x})"),
            VcpuFault::Crash => f.write_str("guest crash event"),
            VcpuFault::UnhandledExit(e) => write!(f, "unhandled exit {e}"),
            VcpuFault::Run(e) => write!(f, "KVM_RUN failed: {e}"),
        }
    }
}

/// A vCPU's registers, captured when something went wrong.
#[derive(Debug, Clone)]
pub struct VcpuRegisters {
    /// General-purpose registers.
    pub regs: kvm_regs,
    /// Segment and control registers.
    pub sregs: kvm_sregs,
}

impl std::fmt::Display for VcpuRegisters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.regs;
        let s = &self.sregs;
        write!(
            f,
            "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} \
             rsi={:#x} rdi={:#x} rbp={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} \
             cs={:#x}(l={} db={})",
            r.rip,
            r.rsp,
            r.rflags,
            r.rax,
            r.rbx,
            r.rcx,
            r.rdx,
            r.rsi,
            r.rdi,
            r.rbp,
            s.cr0,
            s.cr2,
            s.cr3,
            s.cr4,
            s.efer,
            s.cs.selector,
            s.cs.l,
            s.cs.db
        )
    }
}
