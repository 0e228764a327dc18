//! Identity page tables for the 64-bit boot entry.
//!
//! The 64-bit Linux boot protocol enters with paging on, so the VMM builds an
//! identity map of the first [`IDENTITY_MAP_GIB`] GiB with 2 MiB pages: one
//! PML4 entry → one PDPT with one entry per GiB → one page directory per GiB.
//! The kernel replaces these tables early; they only have to cover the kernel,
//! the zero page, the command line and the initrd (all below the MMIO gap).
//! The PVH entry runs with paging off and does not use them.

use vm_memory::{Bytes, GuestAddress};

use super::layout::{IDENTITY_MAP_GIB, PDPT_START, PD_START, PML4_START};
use crate::memory::GuestMemory;

const PRESENT_RW: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;

/// The tables as `(guest address, 512 entries)` pages, ready to be written.
pub fn identity_tables() -> Vec<(u64, Vec<u64>)> {
    let mut pml4 = vec![0u64; 512];
    pml4[0] = PDPT_START | PRESENT_RW;
    let mut pdpt = vec![0u64; 512];
    let mut pages = Vec::new();
    for gib in 0..IDENTITY_MAP_GIB {
        let pd_addr = PD_START + gib * 0x1000;
        pdpt[gib as usize] = pd_addr | PRESENT_RW;
        let pd: Vec<u64> = (0..512u64)
            .map(|i| ((gib << 30) + (i << 21)) | PRESENT_RW | PAGE_SIZE_2M)
            .collect();
        pages.push((pd_addr, pd));
    }
    let mut all = vec![(PML4_START, pml4), (PDPT_START, pdpt)];
    all.extend(pages);
    all
}

/// Write the identity tables into guest memory; returns the CR3 value.
pub fn write_identity_tables(mem: &GuestMemory) -> Result<u64, vm_memory::GuestMemoryError> {
    for (addr, entries) in identity_tables() {
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        mem.write_slice(&bytes, GuestAddress(addr))?;
    }
    Ok(PML4_START)
}

/// Walk the tables the way the MMU would: the physical address `va` maps to.
#[cfg(test)]
fn translate(tables: &[(u64, Vec<u64>)], va: u64) -> Option<u64> {
    let page = |addr: u64| tables.iter().find(|(a, _)| *a == addr).map(|(_, e)| e);
    let pml4e = page(PML4_START)?[((va >> 39) & 0x1ff) as usize];
    if pml4e & 1 == 0 {
        return None;
    }
    let pdpte = page(pml4e & !0xfff)?[((va >> 30) & 0x1ff) as usize];
    if pdpte & 1 == 0 {
        return None;
    }
    let pde = page(pdpte & !0xfff)?[((va >> 21) & 0x1ff) as usize];
    if pde & 1 == 0 || pde & PAGE_SIZE_2M == 0 {
        return None;
    }
    Some((pde & !0x1f_ffff & !(1 << 63)) | (va & 0x1f_ffff))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;

    #[test]
    fn identity_maps_first_gibs() {
        let t = identity_tables();
        assert_eq!(t.len(), 2 + IDENTITY_MAP_GIB as usize);
        for va in [
            0u64,
            0x7000,
            0x100_0000,
            0x3fff_ffff,
            0x4000_0000,
            0xbfff_f000,
            0xffff_ffff,
        ] {
            assert_eq!(translate(&t, va), Some(va), "{va:#x}");
        }
        assert_eq!(translate(&t, IDENTITY_MAP_GIB << 30), None);
        // The PDPT has exactly IDENTITY_MAP_GIB present entries.
        let pdpt = &t[1].1;
        assert_eq!(
            pdpt.iter().filter(|e| *e & 1 == 1).count(),
            IDENTITY_MAP_GIB as usize
        );
    }

    #[test]
    fn written_to_memory() {
        let mem = create_guest_memory(64).unwrap();
        assert_eq!(write_identity_tables(&mem).unwrap(), PML4_START);
        let e: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(e, PDPT_START | 3);
        let e: u64 = mem.read_obj(GuestAddress(PD_START + 8)).unwrap();
        assert_eq!(e, 0x20_0000 | 0x83);
    }
}
