//! The Intel MultiProcessor (MP 1.4) table, which tells a guest without
//! ACPI how many CPUs it has and how interrupts are wired.
//!
//! Layout at [`MPTABLE_START`] (the last KiB of base memory, one of the places
//! Linux scans): the 16-byte floating pointer structure, then the
//! configuration table: header, one processor entry per vCPU (APIC id = vCPU
//! index, vCPU 0 the bootstrap processor), one ISA bus, the IOAPIC (id =
//! vCPU count), IOAPIC pins 0..23 identity-mapped from the ISA IRQs (KVM's
//! default routing), and LINT0 = ExtINT, LINT1 = NMI. Both structures carry a
//! byte checksum that makes their bytes sum to zero.

use vm_memory::{Bytes, GuestAddress};

use super::layout::{APIC_START, IOAPIC_PINS, IOAPIC_START, MPTABLE_END, MPTABLE_START};
use crate::memory::GuestMemory;

const MPC_SPEC: u8 = 4; // MP spec 1.4
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
/// Family 6 signature; features FPU | APIC.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = 0x201;
const MP_INT: u8 = 0;
const MP_NMI: u8 = 1;
const MP_EXTINT: u8 = 3;
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_INTSRC: u8 = 3;
const ENTRY_LINTSRC: u8 = 4;
const FLOATING_LEN: usize = 16;
const HEADER_LEN: usize = 44;
const PROCESSOR_LEN: usize = 20;
const SMALL_ENTRY_LEN: usize = 8;

/// Most vCPUs the table can describe in its reserved KiB.
pub const MAX_CPUS: u32 = 32;

/// Why the MP table could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    /// More vCPUs than fit.
    #[error("an MP table holds at most {max} vCPUs, {value} asked")]
    TooManyCpus {
        /// Requested vCPUs.
        value: u32,
        /// The limit.
        max: u32,
    },
    /// Guest memory write failed.
    #[error("cannot write the MP table: {0}")]
    Write(vm_memory::GuestMemoryError),
}

/// Byte checksum: the value that makes `bytes` plus it sum to zero (mod 256).
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// The MP table for `cpus` vCPUs, as it will sit at [`MPTABLE_START`].
pub fn mptable_bytes(cpus: u32) -> Result<Vec<u8>, MptableError> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(MptableError::TooManyCpus {
            value: cpus,
            max: MAX_CPUS,
        });
    }
    let ioapic_id = cpus as u8;
    let mut body = Vec::new();
    let mut entries = 0u16;
    for cpu in 0..cpus {
        body.push(ENTRY_PROCESSOR);
        body.push(cpu as u8);
        body.push(APIC_VERSION);
        body.push(CPU_ENABLED | if cpu == 0 { CPU_BOOTPROCESSOR } else { 0 });
        body.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        body.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        body.extend_from_slice(&[0u8; 8]);
        entries += 1;
    }
    body.extend_from_slice(&[ENTRY_BUS, 0]);
    body.extend_from_slice(b"ISA   ");
    entries += 1;
    body.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    body.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    entries += 1;
    for pin in 0..IOAPIC_PINS {
        // type, irqtype, irqflag (conforms to bus), bus 0, bus irq, dst ioapic, dst pin
        body.extend_from_slice(&[ENTRY_INTSRC, MP_INT, 0, 0, 0, pin, ioapic_id, pin]);
        entries += 1;
    }
    // LINT0 ExtINT, LINT1 NMI, to all local APICs (0xff).
    body.extend_from_slice(&[ENTRY_LINTSRC, MP_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    body.extend_from_slice(&[ENTRY_LINTSRC, MP_NMI, 0, 0, 0, 0, 0xff, 1]);
    entries += 2;

    let table_len = HEADER_LEN + body.len();
    debug_assert_eq!(
        body.len(),
        cpus as usize * PROCESSOR_LEN + (usize::from(entries) - cpus as usize) * SMALL_ENTRY_LEN
    );
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&(table_len as u16).to_le_bytes());
    header.push(MPC_SPEC);
    header.push(0); // checksum, filled below
    header.extend_from_slice(b"EMBERVM ");
    header.extend_from_slice(b"EMBERVM-0.1 ");
    header.extend_from_slice(&0u32.to_le_bytes()); // oem table pointer
    header.extend_from_slice(&0u16.to_le_bytes()); // oem table size
    header.extend_from_slice(&entries.to_le_bytes());
    header.extend_from_slice(&(APIC_START as u32).to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes()); // extended table length/checksum
    debug_assert_eq!(header.len(), HEADER_LEN);
    let mut table = header;
    table.extend_from_slice(&body);
    table[7] = checksum(&table);

    let mut floating = Vec::with_capacity(FLOATING_LEN);
    floating.extend_from_slice(b"_MP_");
    floating.extend_from_slice(&((MPTABLE_START + FLOATING_LEN as u64) as u32).to_le_bytes());
    floating.push(1); // length in 16-byte units
    floating.push(MPC_SPEC);
    floating.push(0); // checksum
    floating.extend_from_slice(&[0u8; 5]); // feature bytes: 0 = config table present
    floating[10] = checksum(&floating);

    let mut all = floating;
    all.extend_from_slice(&table);
    debug_assert!(all.len() as u64 <= MPTABLE_END - MPTABLE_START);
    Ok(all)
}

/// Write the MP table for `cpus` vCPUs into guest memory.
pub fn write_mptable(mem: &GuestMemory, cpus: u32) -> Result<(), MptableError> {
    let bytes = mptable_bytes(cpus)?;
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(MptableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn checksums_sum_to_zero() {
        for cpus in [1, 2, 7, MAX_CPUS] {
            let t = mptable_bytes(cpus).unwrap();
            assert_eq!(&t[..4], b"_MP_");
            assert_eq!(sum(&t[..FLOATING_LEN]), 0, "floating, {cpus} cpus");
            let table = &t[FLOATING_LEN..];
            assert_eq!(&table[..4], b"PCMP");
            let len = u16::from_le_bytes([table[4], table[5]]) as usize;
            assert_eq!(len, table.len());
            assert_eq!(sum(table), 0, "table, {cpus} cpus");
        }
    }

    #[test]
    fn entries_and_size() {
        let cpus = 4;
        let t = mptable_bytes(cpus).unwrap();
        let table = &t[FLOATING_LEN..];
        let count = u16::from_le_bytes([table[34], table[35]]) as u32;
        assert_eq!(count, cpus + 2 + u32::from(IOAPIC_PINS) + 2);
        assert_eq!(
            table.len(),
            HEADER_LEN
                + cpus as usize * PROCESSOR_LEN
                + (count as usize - cpus as usize) * SMALL_ENTRY_LEN
        );
        // The floating pointer points at the table.
        let ptr = u32::from_le_bytes([t[4], t[5], t[6], t[7]]) as u64;
        assert_eq!(ptr, MPTABLE_START + 16);
        // vCPU 0 is the BSP, vCPU 1 is not.
        let p0 = &table[HEADER_LEN..HEADER_LEN + PROCESSOR_LEN];
        let p1 = &table[HEADER_LEN + PROCESSOR_LEN..HEADER_LEN + 2 * PROCESSOR_LEN];
        assert_eq!((p0[1], p0[3]), (0, 3));
        assert_eq!((p1[1], p1[3]), (1, 1));
        // The biggest table fits the reserved KiB.
        assert!(mptable_bytes(MAX_CPUS).unwrap().len() as u64 <= MPTABLE_END - MPTABLE_START);
    }

    #[test]
    fn too_many_cpus() {
        let e = mptable_bytes(33).unwrap_err().to_string();
        assert!(e.contains("33") && e.contains("32"), "{e}");
        assert!(mptable_bytes(0).is_err());
    }
}
