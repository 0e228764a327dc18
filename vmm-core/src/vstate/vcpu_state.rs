//! Everything KVM holds for one vCPU, captured and put back for snapshots.
//!
//! [`VcpuState::capture`] runs on a paused vCPU after [`flush_pending_io`]:
//! the registers, FPU (XSAVE where KVM has it, else the legacy FPU image),
//! XCRs, LAPIC, every MSR KVM lists as saveable, pending events, MP state,
//! debug registers, the TSC frequency and the CPUID the vCPU was given.
//! [`VcpuState::restore`] applies it to a new vCPU in the order KVM needs
//! (CPUID first, the LAPIC before the MSRs so the TSC deadline lands on an
//! armed timer, events last).

use kvm_bindings::{
    kvm_debugregs, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs,
    kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuFd};
use serde::{Deserialize, Serialize};

use super::{kvm_err, SetupError};

/// `MSR_IA32_TSC_DEADLINE`: must be set after the TSC it is relative to.
const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
/// Most MSRs one `KVM_GET_MSRS` call takes (a `Msrs` FAM limit).
const MSR_CHUNK: usize = 256;

/// Which optional vCPU state this host's KVM can move.
#[derive(Debug, Clone, Copy, Default)]
pub struct VcpuCaps {
    /// `KVM_CAP_XSAVE`: XSAVE area instead of the legacy FPU image.
    pub xsave: bool,
    /// `KVM_CAP_XCRS`.
    pub xcrs: bool,
    /// `KVM_CAP_DEBUGREGS`.
    pub debugregs: bool,
    /// `KVM_CAP_GET_TSC_KHZ`.
    pub tsc_khz: bool,
}

impl VcpuCaps {
    /// Ask KVM.
    pub fn probe(kvm: &Kvm) -> Self {
        use kvm_ioctls::Cap;
        Self {
            xsave: kvm.check_extension(Cap::Xsave),
            xcrs: kvm.check_extension(Cap::Xcrs),
            debugregs: kvm.check_extension(Cap::Debugregs),
            tsc_khz: kvm.check_extension(Cap::GetTscKhz),
        }
    }
}

/// What capturing a vCPU's state needs to know about this host.
#[derive(Debug, Clone, Default)]
pub struct SaveInfo {
    /// Optional state KVM supports.
    pub caps: VcpuCaps,
    /// MSRs to save ([`saveable_msrs`]).
    pub msrs: Vec<u32>,
}

impl SaveInfo {
    /// Ask KVM.
    pub fn probe(kvm: &Kvm) -> Result<Self, SetupError> {
        Ok(Self {
            caps: VcpuCaps::probe(kvm),
            msrs: saveable_msrs(kvm)?,
        })
    }
}

/// The FPU/vector state in whichever form KVM gives it.
#[derive(Debug, Serialize, Deserialize)]
pub enum FpuState {
    /// `KVM_GET_XSAVE` (4 KiB area).
    Xsave(Box<kvm_xsave>),
    /// `KVM_GET_FPU` (hosts without XSAVE).
    Legacy(Box<FpuImage>),
}

/// `kvm_fpu` as plain fields (kvm-bindings has no serde for it).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct FpuImage {
    fpr: Vec<u8>,
    fcw: u16,
    fsw: u16,
    ftwx: u8,
    last_opcode: u16,
    last_ip: u64,
    last_dp: u64,
    xmm: Vec<u8>,
    mxcsr: u32,
}

impl FpuImage {
    fn from_kvm(f: &kvm_fpu) -> Self {
        Self {
            fpr: f.fpr.iter().flatten().copied().collect(),
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm.iter().flatten().copied().collect(),
            mxcsr: f.mxcsr,
        }
    }

    fn to_kvm(&self) -> Result<kvm_fpu, SetupError> {
        let mut f = kvm_fpu::default();
        if self.fpr.len() != 8 * 16 || self.xmm.len() != 16 * 16 {
            return Err(SetupError::BadState("FPU image has the wrong size".into()));
        }
        for (dst, src) in f.fpr.iter_mut().zip(self.fpr.chunks_exact(16)) {
            dst.copy_from_slice(src);
        }
        for (dst, src) in f.xmm.iter_mut().zip(self.xmm.chunks_exact(16)) {
            dst.copy_from_slice(src);
        }
        f.fcw = self.fcw;
        f.fsw = self.fsw;
        f.ftwx = self.ftwx;
        f.last_opcode = self.last_opcode;
        f.last_ip = self.last_ip;
        f.last_dp = self.last_dp;
        f.mxcsr = self.mxcsr;
        Ok(f)
    }
}

/// One vCPU's complete KVM state.
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    /// vCPU index (= APIC id).
    pub index: u32,
    /// CPUID entries the vCPU was configured with.
    pub cpuid: Vec<kvm_bindings::kvm_cpuid_entry2>,
    /// MSRs, `MSR_IA32_TSC_DEADLINE` after `MSR_IA32_TSC`.
    pub msrs: Vec<kvm_msr_entry>,
    /// General registers.
    pub regs: kvm_regs,
    /// Segment and control registers.
    pub sregs: kvm_sregs,
    /// FPU, SSE, AVX.
    pub fpu: FpuState,
    /// Extended control registers, if KVM has them.
    pub xcrs: Option<kvm_xcrs>,
    /// Local APIC registers.
    pub lapic: kvm_lapic_state,
    /// Pending exceptions, interrupts, NMIs, SMIs.
    pub events: kvm_vcpu_events,
    /// Runnable, halted, waiting for SIPI.
    pub mp_state: kvm_mp_state,
    /// Debug registers, if KVM has them.
    pub debugregs: Option<kvm_debugregs>,
    /// Guest TSC frequency, if KVM reports it.
    pub tsc_khz: Option<u32>,
}

/// Complete any I/O the vCPU's last exit left pending (an MMIO or port read
/// whose value KVM writes into the registers on the next `KVM_RUN`): enter
/// `KVM_RUN` with `immediate_exit` set, which finishes that work and returns
/// `EINTR` without running guest code. KVM's API documentation asks for this
/// before saving vCPU state.
pub fn flush_pending_io(fd: &mut VcpuFd) -> Result<(), SetupError> {
    fd.set_kvm_immediate_exit(1);
    let r = match fd.run() {
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    fd.set_kvm_immediate_exit(0);
    match r {
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Ok(()),
        Err(e) => Err(SetupError::Kvm {
            what: "KVM_RUN (flush pending I/O)",
            source: e,
        }),
        Ok(_) => Ok(()),
    }
}

/// The MSRs KVM says a VMM should save, TSC deadline last.
pub fn saveable_msrs(kvm: &Kvm) -> Result<Vec<u32>, SetupError> {
    let list = kvm
        .get_msr_index_list()
        .map_err(kvm_err("KVM_GET_MSR_INDEX_LIST"))?;
    Ok(order_msrs(list.as_slice().to_vec()))
}

/// Put `MSR_IA32_TSC_DEADLINE` after every other MSR (it is relative to the
/// TSC, which must be restored first); keep the rest in KVM's order.
pub fn order_msrs(mut list: Vec<u32>) -> Vec<u32> {
    list.dedup();
    let deadline = list.contains(&MSR_IA32_TSC_DEADLINE);
    list.retain(|&m| m != MSR_IA32_TSC_DEADLINE);
    if deadline {
        list.push(MSR_IA32_TSC_DEADLINE);
    }
    list
}

fn get_msrs(fd: &VcpuFd, indices: &[u32]) -> Result<Vec<kvm_msr_entry>, SetupError> {
    let mut out = Vec::with_capacity(indices.len());
    let mut pos = 0;
    while pos < indices.len() {
        let chunk = &indices[pos..indices.len().min(pos + MSR_CHUNK)];
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(SetupError::Fam)?;
        let n = fd
            .get_msrs(&mut msrs)
            .map_err(kvm_err("KVM_GET_MSRS"))?
            .min(chunk.len());
        out.extend_from_slice(&msrs.as_slice()[..n]);
        // KVM stops at the first MSR it cannot read: skip that one.
        pos += if n < chunk.len() { n + 1 } else { n };
    }
    Ok(out)
}

impl VcpuState {
    /// Read the state of a vCPU that is out of `KVM_RUN` (paused, pending
    /// I/O flushed, or never run).
    pub fn capture(
        index: u32,
        fd: &VcpuFd,
        caps: VcpuCaps,
        msr_list: &[u32],
    ) -> Result<Self, SetupError> {
        let cpuid = fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_CPUID2"))?
            .as_slice()
            .to_vec();
        let mp_state = fd.get_mp_state().map_err(kvm_err("KVM_GET_MP_STATE"))?;
        let regs = fd.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
        let sregs = fd.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        let fpu = if caps.xsave {
            FpuState::Xsave(Box::new(fd.get_xsave().map_err(kvm_err("KVM_GET_XSAVE"))?))
        } else {
            FpuState::Legacy(Box::new(FpuImage::from_kvm(
                &fd.get_fpu().map_err(kvm_err("KVM_GET_FPU"))?,
            )))
        };
        let xcrs = if caps.xcrs {
            Some(fd.get_xcrs().map_err(kvm_err("KVM_GET_XCRS"))?)
        } else {
            None
        };
        let debugregs = if caps.debugregs {
            Some(fd.get_debug_regs().map_err(kvm_err("KVM_GET_DEBUGREGS"))?)
        } else {
            None
        };
        let lapic = fd.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
        let msrs = get_msrs(fd, msr_list)?;
        let events = fd
            .get_vcpu_events()
            .map_err(kvm_err("KVM_GET_VCPU_EVENTS"))?;
        let tsc_khz = if caps.tsc_khz {
            fd.get_tsc_khz().ok()
        } else {
            None
        };
        Ok(Self {
            index,
            cpuid,
            msrs,
            regs,
            sregs,
            fpu,
            xcrs,
            lapic,
            events,
            mp_state,
            debugregs,
            tsc_khz,
        })
    }

    /// Load this state into a new vCPU (created, never run).
    pub fn restore(&self, fd: &VcpuFd) -> Result<(), SetupError> {
        let cpuid = CpuId::from_entries(&self.cpuid).map_err(SetupError::Fam)?;
        fd.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
        if let Some(khz) = self.tsc_khz {
            // Scaling may be unsupported; the guest's kvm-clock copes with a
            // different rate, so only a mismatch in capability is ignored.
            if fd.get_tsc_khz().ok() != Some(khz) {
                let _ = fd.set_tsc_khz(khz);
            }
        }
        fd.set_mp_state(self.mp_state)
            .map_err(kvm_err("KVM_SET_MP_STATE"))?;
        fd.set_regs(&self.regs).map_err(kvm_err("KVM_SET_REGS"))?;
        fd.set_sregs(&self.sregs)
            .map_err(kvm_err("KVM_SET_SREGS"))?;
        match &self.fpu {
            FpuState::Xsave(x) => {
                // SAFETY: the area came from KVM_GET_XSAVE on a vCPU with the
                // same CPUID (checked against the host facts before restore),
                // so its size matches what this KVM expects.
                unsafe { fd.set_xsave(x) }.map_err(kvm_err("KVM_SET_XSAVE"))?
            }
            FpuState::Legacy(f) => fd.set_fpu(&f.to_kvm()?).map_err(kvm_err("KVM_SET_FPU"))?,
        }
        if let Some(x) = &self.xcrs {
            fd.set_xcrs(x).map_err(kvm_err("KVM_SET_XCRS"))?;
        }
        if let Some(d) = &self.debugregs {
            fd.set_debug_regs(d).map_err(kvm_err("KVM_SET_DEBUGREGS"))?;
        }
        fd.set_lapic(&self.lapic)
            .map_err(kvm_err("KVM_SET_LAPIC"))?;
        for chunk in self.msrs.chunks(MSR_CHUNK) {
            let msrs = Msrs::from_entries(chunk).map_err(SetupError::Fam)?;
            let set = fd.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
            if set != chunk.len() {
                return Err(SetupError::Msrs {
                    set,
                    total: chunk.len(),
                    failed: chunk.get(set).map(|e| e.index).unwrap_or(0),
                });
            }
        }
        fd.set_vcpu_events(&self.events)
            .map_err(kvm_err("KVM_SET_VCPU_EVENTS"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_deadline_goes_last() {
        let l = order_msrs(vec![0x6e0, 0x10, 0x174, 0x6e0, 0xc0000080]);
        assert_eq!(l, vec![0x10, 0x174, 0xc0000080, 0x6e0]);
        assert_eq!(order_msrs(vec![0x10]), vec![0x10]);
    }

    #[test]
    fn fpu_image_round_trip() {
        let mut f = kvm_fpu::default();
        f.fpr[3][2] = 7;
        f.xmm[15][15] = 9;
        f.mxcsr = 0x1f80;
        f.fcw = 0x37f;
        let img = FpuImage::from_kvm(&f);
        let bytes = postcard::to_allocvec(&img).unwrap();
        let back: FpuImage = postcard::from_bytes(&bytes).unwrap();
        let g = back.to_kvm().unwrap();
        assert_eq!(
            (g.fpr, g.xmm, g.mxcsr, g.fcw),
            (f.fpr, f.xmm, f.mxcsr, f.fcw)
        );
        let bad = FpuImage::default();
        assert!(bad.to_kvm().is_err());
    }
}
