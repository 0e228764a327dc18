//! Thin wrappers over KVM objects, keeping raw ioctls out of the rest of the
//! VMM: [`vm::KvmVm`] (the VM fd: irqchip, PIT, memory slots, irqfds),
//! [`vcpu::Vcpu`] (one vCPU: boot state, the run loop and its exits) and
//! [`control::Control`] (pause, resume and stop of all vCPU threads).

pub mod control;
pub mod vcpu;
pub mod vcpu_state;
pub mod vm;
pub mod vm_state;

/// A KVM or host call failed while the VM was being built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A KVM ioctl failed.
    #[error("{what} failed: {source}")]
    Kvm {
        /// The call.
        what: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// KVM accepted only some of the boot MSRs.
    #[error("KVM_SET_MSRS set {set} of {total} boot MSRs; MSR {failed:#x} was refused")]
    Msrs {
        /// How many were set.
        set: usize,
        /// How many were asked.
        total: usize,
        /// The first refused index.
        failed: u32,
    },
    /// CPUID normalization.
    #[error(transparent)]
    Cpuid(#[from] crate::arch::x86_64::cpuid::CpuidError),
    /// The MP table.
    #[error(transparent)]
    Mptable(#[from] crate::arch::x86_64::mptable::MptableError),
    /// Writing boot structures into guest memory.
    #[error("cannot write {what} into guest memory: {source}")]
    Memory {
        /// Which structure.
        what: &'static str,
        /// The error.
        source: vm_memory::GuestMemoryError,
    },
    /// A fixed-size KVM list overflowed.
    #[error("KVM list too long: {0:?}")]
    Fam(vmm_sys_util::fam::Error),
    /// Device wiring.
    #[error(transparent)]
    Bus(#[from] crate::devices::bus::BusOverlap),
    /// MMIO device wiring.
    #[error(transparent)]
    MmioBus(#[from] crate::devices::virtio::mmio_bus::MmioOverlap),
    /// The vsock device.
    #[error(transparent)]
    Vsock(#[from] crate::devices::virtio::vsock::VsockSetupError),
    /// Saved state that cannot be loaded as it is.
    #[error("saved state is invalid: {0}")]
    BadState(String),
    /// An eventfd or signal handler could not be created.
    #[error("{what}: {source}")]
    Host {
        /// The call.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Shorthand to wrap a KVM error with the name of the call.
pub(crate) fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SetupError {
    move |source| SetupError::Kvm { what, source }
}
