//! One vCPU: its boot state and its run loop.
//!
//! [`Vcpu::configure`] applies the arch code's pure results (normalized
//! CPUID, boot MSRs, registers for the entry point, FPU, LAPIC LINT0/LINT1)
//! before any vCPU runs. [`Vcpu::run`] is the body of the vCPU's thread:
//! checkpoint ([`Control`]), `KVM_RUN`, dispatch the exit. Port I/O goes to
//! the [`PioBus`], MMIO to the [`MmioBus`]; a device's reset request, a
//! triple fault or a KVM system event ends the VM with an [`ExitReason`]; an
//! internal error, entry failure or unknown exit ends it with a [`VmError`]
//! that carries the registers. A kernel panic seen on the console turns the
//! following reset into [`VmError::GuestPanic`].

use kvm_bindings::{
    CpuId, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};

use super::control::{set_thread_immediate_exit, Control, Flow};
use super::vcpu_state::{flush_pending_io, SaveInfo, VcpuState};
use super::{kvm_err, SetupError};
use crate::arch::x86_64::{cpuid, interrupts, msr, regs};
use crate::devices::bus::PioBus;
use crate::devices::console::PanicRecord;
use crate::devices::virtio::mmio_bus::MmioBus;
use crate::devices::DeviceEvent;
use crate::error::VmError;
use crate::exit::{ExitReason, ShutdownCause, VcpuFault, VcpuRegisters};

/// A vCPU and its index (= APIC id).
pub struct Vcpu {
    index: u32,
    fd: VcpuFd,
}

/// What the run loop needs besides the vCPU.
pub struct VcpuContext<'a> {
    /// Port-I/O devices.
    pub bus: &'a PioBus,
    /// MMIO devices (virtio-mmio windows).
    pub mmio: &'a MmioBus,
    /// Run state shared by all vCPUs.
    pub control: &'a Control,
    /// Set when the console showed a kernel panic.
    pub panic: &'a PanicRecord,
    /// What a snapshot of this vCPU reads.
    pub save: &'a SaveInfo,
}

enum Action {
    Continue,
    Exit(ExitReason),
    Fault(VcpuFault),
}

impl Vcpu {
    /// Wrap a created vCPU fd.
    pub fn new(index: u32, fd: VcpuFd) -> Self {
        Self { index, fd }
    }

    /// This vCPU's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Set up CPUID, MSRs, registers, FPU and LAPIC for booting at `entry`.
    /// Non-boot vCPUs get the same state; KVM holds them until the boot vCPU
    /// sends INIT/SIPI, which replaces their registers.
    pub fn configure(
        &self,
        supported: &CpuId,
        count: u32,
        entry: regs::EntryPoint,
    ) -> Result<(), SetupError> {
        let mut cpuid = supported.clone();
        cpuid::normalize(&mut cpuid, self.index, count)?;
        self.fd
            .set_cpuid2(&cpuid)
            .map_err(kvm_err("KVM_SET_CPUID2"))?;

        let msrs = msr::boot_msrs().map_err(SetupError::Fam)?;
        let set = self.fd.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
        let total = msrs.as_slice().len();
        if set != total {
            let failed = msrs.as_slice().get(set).map(|e| e.index).unwrap_or(0);
            return Err(SetupError::Msrs { set, total, failed });
        }

        self.fd
            .set_regs(&regs::boot_regs(entry))
            .map_err(kvm_err("KVM_SET_REGS"))?;
        let sregs = self.fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        self.fd
            .set_sregs(&regs::boot_sregs(sregs, entry))
            .map_err(kvm_err("KVM_SET_SREGS"))?;
        self.fd
            .set_fpu(&regs::boot_fpu())
            .map_err(kvm_err("KVM_SET_FPU"))?;

        let mut lapic = self.fd.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
        interrupts::set_lint(&mut lapic);
        self.fd
            .set_lapic(&lapic)
            .map_err(kvm_err("KVM_SET_LAPIC"))?;
        Ok(())
    }

    /// The vCPU's KVM state; call only while it is out of `KVM_RUN`.
    pub fn capture_state(&mut self, info: &SaveInfo) -> Result<VcpuState, SetupError> {
        flush_pending_io(&mut self.fd)?;
        VcpuState::capture(self.index, &self.fd, info.caps, &info.msrs)
    }

    /// Load saved state into this (never run) vCPU.
    pub fn restore_state(&self, state: &VcpuState) -> Result<(), SetupError> {
        state.restore(&self.fd)
    }

    /// The vCPU's registers, if KVM gives them.
    pub fn registers(&self) -> Option<VcpuRegisters> {
        Some(VcpuRegisters {
            regs: self.fd.get_regs().ok()?,
            sregs: self.fd.get_sregs().ok()?,
        })
    }

    /// Run until the VM stops. Returns the outcome if this vCPU caused it.
    pub fn run(&mut self, ctx: &VcpuContext<'_>) -> Option<Result<ExitReason, VmError>> {
        let immediate_exit: *mut u8 = &mut self.fd.get_kvm_run().immediate_exit;
        set_thread_immediate_exit(immediate_exit);
        let outcome = self.run_loop(ctx);
        set_thread_immediate_exit(std::ptr::null_mut());
        outcome
    }

    fn run_loop(&mut self, ctx: &VcpuContext<'_>) -> Option<Result<ExitReason, VmError>> {
        let mut first = self.index == 0;
        let mut seen = 0;
        loop {
            let flow = {
                let mut save = || self.capture_state(ctx.save);
                ctx.control.checkpoint(&mut seen, &mut save)
            };
            if flow == Flow::Stop {
                return None;
            }
            if first {
                ctx.control.mark_first_run();
                first = false;
            }
            let action = match self.fd.run() {
                Ok(exit) => Self::dispatch(exit, ctx.bus, ctx.mmio),
                Err(e) if e.errno() == libc::EINTR => {
                    // Kicked: clear the flag before looking at the state again.
                    self.fd.set_kvm_immediate_exit(0);
                    Action::Continue
                }
                Err(e) if e.errno() == libc::EAGAIN => Action::Continue,
                Err(e) => Action::Fault(VcpuFault::Run(e.to_string())),
            };
            match action {
                Action::Continue => {}
                Action::Exit(reason) => return Some(self.finish(reason, ctx)),
                Action::Fault(fault) => {
                    let fault = match fault {
                        VcpuFault::InternalError { .. } => VcpuFault::InternalError {
                            suberror: self.internal_suberror(),
                        },
                        f => f,
                    };
                    return Some(Err(VmError::VcpuFault {
                        vcpu: self.index,
                        fault,
                        regs: self.registers().map(Box::new),
                    }));
                }
            }
        }
    }

    fn internal_suberror(&mut self) -> u32 {
        let run = self.fd.get_kvm_run();
        // SAFETY: read right after a KVM_EXIT_INTERNAL_ERROR exit, for which
        // the kernel fills the `internal` member of the union.
        unsafe { run.__bindgen_anon_1.internal.suberror }
    }

    fn finish(&self, reason: ExitReason, ctx: &VcpuContext<'_>) -> Result<ExitReason, VmError> {
        if let Some(message) = ctx.panic.get() {
            if let Some(regs) = self.registers() {
                return Err(VmError::GuestPanic {
                    message: message.clone(),
                    vcpu: self.index,
                    regs: Box::new(regs),
                });
            }
        }
        Ok(reason)
    }

    fn dispatch(exit: VcpuExit<'_>, bus: &PioBus, mmio: &MmioBus) -> Action {
        match exit {
            VcpuExit::IoIn(port, data) => {
                bus.read(port, data);
                Action::Continue
            }
            VcpuExit::IoOut(port, data) => match bus.write(port, data) {
                DeviceEvent::Reset => Action::Exit(ExitReason::Reset),
                DeviceEvent::None => Action::Continue,
            },
            VcpuExit::MmioRead(addr, data) => {
                mmio.read(addr, data);
                Action::Continue
            }
            VcpuExit::MmioWrite(addr, data) => {
                mmio.write(addr, data);
                Action::Continue
            }
            VcpuExit::Hlt | VcpuExit::IrqWindowOpen | VcpuExit::Intr => Action::Continue,
            VcpuExit::Shutdown => Action::Exit(ExitReason::Shutdown(ShutdownCause::TripleFault)),
            VcpuExit::SystemEvent(kind, _) => match kind {
                KVM_SYSTEM_EVENT_RESET => Action::Exit(ExitReason::Reset),
                KVM_SYSTEM_EVENT_SHUTDOWN => {
                    Action::Exit(ExitReason::Shutdown(ShutdownCause::PowerOff))
                }
                KVM_SYSTEM_EVENT_CRASH => Action::Fault(VcpuFault::Crash),
                other => Action::Fault(VcpuFault::UnhandledExit(format!("system event {other}"))),
            },
            VcpuExit::InternalError => Action::Fault(VcpuFault::InternalError { suberror: 0 }),
            VcpuExit::FailEntry(reason, _) => Action::Fault(VcpuFault::FailEntry { reason }),
            other => Action::Fault(VcpuFault::UnhandledExit(format!("{other:?}"))),
        }
    }
}
