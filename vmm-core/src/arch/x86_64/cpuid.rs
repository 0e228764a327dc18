//! Per-vCPU CPUID, normalized from what KVM supports.
//!
//! The VMM asks KVM once for `KVM_GET_SUPPORTED_CPUID`, then for each vCPU
//! makes a copy and rewrites the leaves that describe *this* vCPU and *this*
//! VM's topology: the initial APIC id (leaf 1, 0xB, 0x1F, AMD 0x8000001E),
//! one socket of N single-threaded cores (leaves 4, 0xB, 0x1F, 0x80000008,
//! 0x8000001D), the hypervisor bit, no PMU (leaf 0xA), and the KVM paravirt
//! leaves (0x40000000 signature, 0x40000001 features with kvm-clock). APIC ids
//! are the vCPU index, which is also what the MP table says.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

/// Leaf 1 ECX: running under a hypervisor.
const HYPERVISOR_BIT: u32 = 1 << 31;
/// Leaf 1 EDX: more than one logical processor per package.
const HTT_BIT: u32 = 1 << 28;
/// KVM paravirt signature leaf.
pub const KVM_CPUID_SIGNATURE: u32 = 0x4000_0000;
/// KVM paravirt feature leaf.
pub const KVM_CPUID_FEATURES: u32 = 0x4000_0001;
/// kvm-clock feature bits (CLOCKSOURCE, CLOCKSOURCE2, CLOCKSOURCE_STABLE).
pub const KVM_CLOCK_FEATURES: u32 = (1 << 0) | (1 << 3) | (1 << 24);

/// The CPU vendor, from leaf 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// GenuineIntel.
    Intel,
    /// AuthenticAMD (or HygonGenuine).
    Amd,
    /// Anything else.
    Other,
}

/// Why CPUID could not be normalized.
#[derive(Debug, thiserror::Error)]
pub enum CpuidError {
    /// The vCPU count is outside 1..=255 (one byte of APIC id).
    #[error("cannot describe {count} vCPUs in CPUID (index {index})")]
    Topology {
        /// vCPU index.
        index: u32,
        /// vCPU count.
        count: u32,
    },
    /// KVM did not report leaf 1, which every x86 CPU has.
    #[error("KVM_GET_SUPPORTED_CPUID has no leaf 1")]
    MissingLeaf1,
    /// Too many entries to add the KVM leaves.
    #[error("cannot add KVM paravirt leaves: {0:?}")]
    Fam(vmm_sys_util::fam::Error),
}

/// The vendor of a CPUID table.
pub fn vendor(cpuid: &[kvm_cpuid_entry2]) -> Vendor {
    let Some(l0) = cpuid.iter().find(|e| e.function == 0) else {
        return Vendor::Other;
    };
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&l0.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&l0.edx.to_le_bytes());
    v[8..].copy_from_slice(&l0.ecx.to_le_bytes());
    match &v {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
        _ => Vendor::Other,
    }
}

/// Bits needed to number `n` items (0 for 1).
pub fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Rewrite `cpuid` (a copy of the supported table) for vCPU `index` of `count`.
pub fn normalize(cpuid: &mut CpuId, index: u32, count: u32) -> Result<(), CpuidError> {
    if count == 0 || count > 255 || index >= count {
        return Err(CpuidError::Topology { index, count });
    }
    let vendor = vendor(cpuid.as_slice());
    let apic_id = index;
    let core_bits = bits_for(count);
    let mut has_leaf1 = false;
    let mut has_sig = false;
    let mut has_features = false;
    for e in cpuid.as_mut_slice() {
        match e.function {
            0x1 => {
                has_leaf1 = true;
                // EBX: [31:24] APIC id, [23:16] logical processors, [15:8] CLFLUSH/8.
                e.ebx = (apic_id << 24) | (count << 16) | (8 << 8) | (e.ebx & 0xff);
                e.ecx |= HYPERVISOR_BIT;
                if count > 1 {
                    e.edx |= HTT_BIT;
                } else {
                    e.edx &= !HTT_BIT;
                }
            }
            0x4 if vendor == Vendor::Intel => {
                let cache_type = e.eax & 0x1f;
                if cache_type != 0 {
                    let level = (e.eax >> 5) & 0x7;
                    let sharing = if level >= 3 { count - 1 } else { 0 };
                    e.eax =
                        (e.eax & 0x3fff) | ((sharing & 0xfff) << 14) | (((count - 1) & 0x3f) << 26);
                }
            }
            0xa => {
                // No virtual PMU.
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            0xb | 0x1f => {
                let (eax, ebx, level_type) = match e.index {
                    0 => (0, 1, 1),             // SMT level: one thread per core.
                    1 => (core_bits, count, 2), // Core level: `count` cores.
                    _ => (0, 0, 0),             // Invalid level ends the list.
                };
                e.eax = eax;
                e.ebx = ebx;
                e.ecx = (level_type << 8) | (e.index & 0xff);
                e.edx = apic_id;
            }
            0x8000_0008 if vendor == Vendor::Amd => {
                e.ecx = (core_bits << 12) | (count - 1);
            }
            0x8000_001d if vendor == Vendor::Amd => {
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                e.eax = (e.eax & !(0xfff << 14)) | ((sharing & 0xfff) << 14);
            }
            0x8000_001e if vendor == Vendor::Amd => {
                e.eax = apic_id;
                e.ebx = index & 0xff; // core id, one thread per core
                e.ecx = 0; // node 0, one node
                e.edx = 0;
            }
            KVM_CPUID_SIGNATURE => {
                has_sig = true;
                e.eax = e.eax.max(KVM_CPUID_FEATURES);
            }
            KVM_CPUID_FEATURES => {
                has_features = true;
            }
            _ => {}
        }
    }
    if !has_leaf1 {
        return Err(CpuidError::MissingLeaf1);
    }
    if !has_sig {
        cpuid
            .push(kvm_cpuid_entry2 {
                function: KVM_CPUID_SIGNATURE,
                eax: KVM_CPUID_FEATURES,
                ebx: u32::from_le_bytes(*b"KVMK"),
                ecx: u32::from_le_bytes(*b"VMKV"),
                edx: u32::from_le_bytes(*b"M\0\0\0"),
                ..Default::default()
            })
            .map_err(CpuidError::Fam)?;
    }
    if !has_features {
        cpuid
            .push(kvm_cpuid_entry2 {
                function: KVM_CPUID_FEATURES,
                eax: KVM_CLOCK_FEATURES,
                ..Default::default()
            })
            .map_err(CpuidError::Fam)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        function: u32,
        index: u32,
        eax: u32,
        ebx: u32,
        ecx: u32,
        edx: u32,
    ) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        }
    }

    fn leaf0(vendor: &[u8; 12]) -> kvm_cpuid_entry2 {
        let w =
            |i: usize| u32::from_le_bytes([vendor[i], vendor[i + 1], vendor[i + 2], vendor[i + 3]]);
        entry(0, 0, 0x1f, w(0), w(8), w(4))
    }

    fn table(vendor: &[u8; 12]) -> CpuId {
        CpuId::from_entries(&[
            leaf0(vendor),
            entry(1, 0, 0x806f8, 0xff00_0800, 0x0, 0x1000_0000),
            entry(4, 0, 0x121, 0, 0, 0),
            entry(4, 1, 0x163, 0, 0, 0),
            entry(0xa, 0, 0x0760_0001, 1, 2, 3),
            entry(0xb, 0, 1, 2, 0x100, 9),
            entry(0xb, 1, 4, 8, 0x201, 9),
            entry(0xb, 2, 0, 0, 2, 9),
            entry(0x8000_0008, 0, 0x3030, 0, 0xffff, 0),
            entry(0x8000_001e, 0, 7, 0x100, 1, 0),
        ])
        .unwrap()
    }

    fn get(c: &CpuId, f: u32, i: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == f && e.index == i)
            .unwrap()
    }

    #[test]
    fn vendor_is_read() {
        assert_eq!(vendor(table(b"GenuineIntel").as_slice()), Vendor::Intel);
        assert_eq!(vendor(table(b"AuthenticAMD").as_slice()), Vendor::Amd);
        assert_eq!(vendor(table(b"SomethingElz").as_slice()), Vendor::Other);
    }

    #[test]
    fn bits() {
        assert_eq!(
            [
                bits_for(1),
                bits_for(2),
                bits_for(3),
                bits_for(4),
                bits_for(5),
                bits_for(32)
            ],
            [0, 1, 2, 2, 3, 5]
        );
    }

    #[test]
    fn leaf1_per_vcpu() {
        let mut c = table(b"GenuineIntel");
        normalize(&mut c, 3, 4).unwrap();
        let l1 = get(&c, 1, 0);
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_eq!((l1.ebx >> 8) & 0xff, 8);
        assert_ne!(l1.ecx & HYPERVISOR_BIT, 0);
        assert_ne!(l1.edx & HTT_BIT, 0);

        let mut c = table(b"GenuineIntel");
        normalize(&mut c, 0, 1).unwrap();
        assert_eq!(get(&c, 1, 0).edx & HTT_BIT, 0);
    }

    #[test]
    fn topology_leaves() {
        let mut c = table(b"GenuineIntel");
        normalize(&mut c, 2, 3).unwrap();
        let smt = get(&c, 0xb, 0);
        let core = get(&c, 0xb, 1);
        let end = get(&c, 0xb, 2);
        assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 2));
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (2, 3, 0x201, 2));
        assert_eq!((end.eax, end.ebx, end.ecx, end.edx), (0, 0, 2, 2));
        // Leaf 4: 3 cores per package, L1 private.
        assert_eq!(get(&c, 4, 0).eax >> 26, 2);
        assert_eq!((get(&c, 4, 0).eax >> 14) & 0xfff, 0);
        // No PMU.
        let pmu = get(&c, 0xa, 0);
        assert_eq!((pmu.eax, pmu.ebx, pmu.ecx, pmu.edx), (0, 0, 0, 0));
    }

    #[test]
    fn amd_leaves() {
        let mut c = table(b"AuthenticAMD");
        normalize(&mut c, 1, 2).unwrap();
        assert_eq!(get(&c, 0x8000_0008, 0).ecx, (1 << 12) | 1);
        let e = get(&c, 0x8000_001e, 0);
        assert_eq!((e.eax, e.ebx, e.ecx), (1, 1, 0));
        // Intel-only leaf 4 is left alone on AMD.
        assert_eq!(get(&c, 4, 0).eax, 0x121);
    }

    #[test]
    fn kvm_leaves_added_when_missing() {
        let mut c = table(b"GenuineIntel");
        normalize(&mut c, 0, 1).unwrap();
        let sig = get(&c, KVM_CPUID_SIGNATURE, 0);
        assert_eq!(sig.eax, KVM_CPUID_FEATURES);
        let mut s = Vec::new();
        for r in [sig.ebx, sig.ecx, sig.edx] {
            s.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&s[..9], b"KVMKVMKVM");
        assert_eq!(
            get(&c, KVM_CPUID_FEATURES, 0).eax & KVM_CLOCK_FEATURES,
            KVM_CLOCK_FEATURES
        );
    }

    #[test]
    fn kvm_leaves_kept_when_present() {
        let mut c = table(b"GenuineIntel");
        c.push(entry(KVM_CPUID_SIGNATURE, 0, 0x4000_0001, 1, 2, 3))
            .unwrap();
        c.push(entry(KVM_CPUID_FEATURES, 0, 0x0100_7afb, 0, 0, 0))
            .unwrap();
        let before = c.as_slice().len();
        normalize(&mut c, 0, 1).unwrap();
        assert_eq!(c.as_slice().len(), before);
        assert_eq!(get(&c, KVM_CPUID_FEATURES, 0).eax, 0x0100_7afb);
    }

    #[test]
    fn bad_topology_is_an_error() {
        let mut c = table(b"GenuineIntel");
        assert!(normalize(&mut c, 0, 0).is_err());
        assert!(normalize(&mut c, 2, 2).is_err());
    }
}
