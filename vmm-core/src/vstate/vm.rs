//! The KVM VM fd: in-kernel irqchip (PIC + IOAPIC) and PIT, guest memory
//! slots, irqfds and vCPU creation.
//!
//! Order: VM and TSS area, memory slots, then irqchip and PIT, then vCPUs.
//! KVM needs the irqchip before any vCPU; adding memory slots *after* the
//! irqchip makes KVM rebuild its memslot state (measured 7.6 ms instead of
//! 0.14 ms for 128 MiB on the build machine), so memory goes first.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::{kvm_err, SetupError};
use crate::arch::x86_64::layout::KVM_TSS_ADDRESS;
use crate::memory::GuestMemory;

/// A KVM VM with its interrupt controllers.
pub struct KvmVm {
    fd: VmFd,
}

impl KvmVm {
    /// Create the VM and give KVM its TSS area.
    pub fn new(kvm: &Kvm) -> Result<Self, SetupError> {
        let fd = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        fd.set_tss_address(KVM_TSS_ADDRESS as usize)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        Ok(Self { fd })
    }

    /// The VM fd, for state capture and restore.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Set up the in-kernel PIC/IOAPIC/LAPICs and the PIT.
    /// Call after [`KvmVm::register_memory`] and before creating vCPUs.
    pub fn setup_irqchip(&self) -> Result<(), SetupError> {
        self.fd
            .create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))
    }

    /// Give every region of `mem` to the guest, one memory slot each.
    pub fn register_memory(&self, mem: &GuestMemory) -> Result<(), SetupError> {
        for (slot, region) in mem.iter().enumerate() {
            let r = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
                flags: 0,
            };
            // SAFETY: the host range is a live mapping owned by `mem`, of
            // exactly `memory_size` bytes; the caller keeps `mem` alive for as
            // long as this VM can run (the `Vm` owns both and joins every vCPU
            // thread before dropping the memory).
            unsafe { self.fd.set_user_memory_region(r) }
                .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        }
        Ok(())
    }

    /// Deliver `gsi` whenever `evt` is written.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), SetupError> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(kvm_err("KVM_IRQFD"))
    }

    /// Signal `evt` (instead of exiting to user space) when the guest
    /// writes the 32-bit value `datamatch` at MMIO address `addr`.
    pub fn register_ioevent(
        &self,
        evt: &EventFd,
        addr: u64,
        datamatch: u32,
    ) -> Result<(), SetupError> {
        self.fd
            .register_ioevent(evt, &kvm_ioctls::IoEventAddress::Mmio(addr), datamatch)
            .map_err(kvm_err("KVM_IOEVENTFD"))
    }

    /// Create vCPU `index`.
    pub fn create_vcpu(&self, index: u32) -> Result<VcpuFd, SetupError> {
        self.fd
            .create_vcpu(u64::from(index))
            .map_err(kvm_err("KVM_CREATE_VCPU"))
    }
}
