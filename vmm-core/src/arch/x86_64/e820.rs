//! The e820 memory map the guest kernel reads (in the zero page for the
//! Linux boot protocol, as the PVH memmap otherwise).
//!
//! Derived from [`crate::memory::ram_ranges`]: the low 640 KiB (minus the
//! last KiB, which holds the MP table and is reserved), then RAM from 1 MiB to
//! the MMIO gap, then RAM above 4 GiB if any. The 640 KiB..1 MiB hole (legacy
//! VGA and BIOS area) is left out, so the kernel treats it as reserved.

use vm_memory::GuestAddress;

use super::layout::{HIMEM_START, MPTABLE_END, MPTABLE_START};

/// e820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type: reserved.
pub const E820_RESERVED: u32 = 2;

/// One e820 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// First address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// Build the e820 map from the RAM ranges.
pub fn e820_map(ram: &[(GuestAddress, u64)]) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: MPTABLE_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: MPTABLE_START,
            size: MPTABLE_END - MPTABLE_START,
            kind: E820_RESERVED,
        },
    ];
    for &(start, len) in ram {
        let start = start.0;
        let end = start + len;
        // The first range begins at 0: its part below 1 MiB is covered above.
        let from = start.max(HIMEM_START);
        if end > from {
            map.push(E820Entry {
                addr: from,
                size: end - from,
                kind: E820_RAM,
            });
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::ram_ranges;

    #[test]
    fn map_of_128_mib() {
        let m = e820_map(&ram_ranges(128));
        assert_eq!(
            m,
            vec![
                E820Entry {
                    addr: 0,
                    size: 0x9fc00,
                    kind: E820_RAM
                },
                E820Entry {
                    addr: 0x9fc00,
                    size: 0x400,
                    kind: E820_RESERVED
                },
                E820Entry {
                    addr: 0x10_0000,
                    size: (128 << 20) - 0x10_0000,
                    kind: E820_RAM
                },
            ]
        );
    }

    #[test]
    fn map_above_gap_and_sum() {
        let ram = ram_ranges(6144);
        let m = e820_map(&ram);
        assert_eq!(m.len(), 4);
        assert_eq!(m[2].addr + m[2].size, 0xc000_0000);
        assert_eq!(
            m[3],
            E820Entry {
                addr: 1 << 32,
                size: 3 << 30,
                kind: E820_RAM
            }
        );
        // Usable RAM = all memory minus the 640K..1M hole and the MP table KiB.
        let usable: u64 = m
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert_eq!(usable, (6144u64 << 20) - (0x10_0000 - 0x9fc00));
        // Sorted, non-overlapping.
        for w in m.windows(2) {
            assert!(w[0].addr + w[0].size <= w[1].addr);
        }
    }
}
