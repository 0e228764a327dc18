//! The errors of the public [`crate::Vm`] API.
//!
//! Setup errors name the offending value and the limit; run-time failures of
//! the guest carry the registers of the vCPU that saw them.

use crate::arch::x86_64::boot::BootError;
use crate::exit::{VcpuFault, VcpuRegisters};
use crate::kvm::KvmOpenError;
use crate::memory::MemoryError;
use crate::vstate::SetupError;

/// Why a VM could not be built or did not end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// `/dev/kvm` could not be opened.
    #[error(transparent)]
    Kvm(#[from] KvmOpenError),
    /// vCPU count out of range.
    #[error(
        "{value} vCPUs asked: a VM has 1 to {max} (guest kernel NR_CPUS and MP table limit \
         {guest_max}{})",
        .kvm_max.map(|k| format!(", KVM_CAP_MAX_VCPUS {k}")).unwrap_or_default()
    )]
    VcpuCount {
        /// Requested.
        value: u32,
        /// The effective limit.
        max: u32,
        /// What KVM allows, once KVM has been asked.
        kvm_max: Option<u32>,
        /// What the guest side allows.
        guest_max: u32,
    },
    /// Guest memory size or mapping.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Kernel, initrd or command line.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// A KVM or host call during setup.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// A snapshot could not be read, checked or loaded.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    /// The guest kernel panicked (seen on its console), then reset or stopped.
    #[error("guest kernel panic on vCPU {vcpu}: {message} [{regs}]")]
    GuestPanic {
        /// The panic line from the console.
        message: String,
        /// The vCPU that then stopped the VM.
        vcpu: u32,
        /// Its registers at that moment.
        regs: Box<VcpuRegisters>,
    },
    /// A vCPU failed.
    #[error("vCPU {vcpu}: {fault}{}", .regs.as_ref().map(|r| format!(" [{r}]")).unwrap_or_default())]
    VcpuFault {
        /// Which vCPU.
        vcpu: u32,
        /// What happened.
        fault: VcpuFault,
        /// Its registers, if they could be read.
        regs: Option<Box<VcpuRegisters>>,
    },
    /// A vCPU thread could not be started.
    #[error("cannot start the thread of vCPU {vcpu}: {source}")]
    Thread {
        /// Which vCPU.
        vcpu: u32,
        /// The OS error.
        source: std::io::Error,
    },
}
