//! Guest RAM: sizing, the split around the MMIO gap, and the host mapping.
//!
//! Guest memory is anonymous `MAP_PRIVATE | MAP_NORESERVE` memory from
//! vm-memory's mmap backend, so a page costs the host nothing until the guest
//! (or the loader) touches it. RAM runs from 0 up to the MMIO gap; whatever
//! does not fit below the gap continues at 4 GiB. [`ram_ranges`] is the one
//! place that decides this split; the e820 map and the KVM memory slots are
//! both derived from it.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::layout::{MMIO_GAP_END, MMIO_GAP_START};

/// Guest memory as the rest of the VMM sees it.
pub type GuestMemory = GuestMemoryMmap<()>;

/// Smallest guest the VMM builds: room for the fixed boot structures below
/// 1 MiB, a kernel at 16 MiB and some working memory.
pub const MIN_MEMORY_MIB: u32 = 32;
/// Largest guest the VMM builds (1 TiB): stays well inside the 40+ physical
/// address bits every x86-64 host offers.
pub const MAX_MEMORY_MIB: u32 = 1 << 20;

const MIB: u64 = 1 << 20;

/// Why guest memory could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The size is outside [`MIN_MEMORY_MIB`]..=[`MAX_MEMORY_MIB`].
    #[error("memory size {value} MiB is out of range: it must be between {min} and {max} MiB")]
    OutOfRange {
        /// The requested size in MiB.
        value: u64,
        /// Smallest accepted size.
        min: u32,
        /// Largest accepted size.
        max: u32,
    },
    /// The host refused the mapping.
    #[error("cannot map {mib} MiB of guest memory: {source}")]
    Mmap {
        /// The requested size in MiB.
        mib: u32,
        /// What vm-memory reported.
        source: vm_memory::mmap::FromRangesError,
    },
}

/// Check a memory size in MiB against the supported range.
pub fn validate_memory_mib(mib: u32) -> Result<(), MemoryError> {
    if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&mib) {
        return Err(MemoryError::OutOfRange {
            value: u64::from(mib),
            min: MIN_MEMORY_MIB,
            max: MAX_MEMORY_MIB,
        });
    }
    Ok(())
}

/// The RAM ranges `(start, length)` of a guest with `mib` MiB: one below the
/// MMIO gap and, if needed, one from 4 GiB up.
pub fn ram_ranges(mib: u32) -> Vec<(GuestAddress, u64)> {
    let total = u64::from(mib) * MIB;
    let low = total.min(MMIO_GAP_START);
    let mut ranges = vec![(GuestAddress(0), low)];
    if total > low {
        ranges.push((GuestAddress(MMIO_GAP_END), total - low));
    }
    ranges
}

/// End (exclusive) of the RAM below the MMIO gap.
pub fn low_ram_end(mib: u32) -> u64 {
    (u64::from(mib) * MIB).min(MMIO_GAP_START)
}

/// Map guest memory of `mib` MiB (validated first). Pages are allocated on
/// first touch.
pub fn create_guest_memory(mib: u32) -> Result<GuestMemory, MemoryError> {
    validate_memory_mib(mib)?;
    let ranges: Vec<(GuestAddress, usize)> = ram_ranges(mib)
        .into_iter()
        .map(|(a, l)| (a, l as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| MemoryError::Mmap { mib, source })
}

const HUGE_PAGE: u64 = 2 << 20;

/// Ask the host for transparent huge pages over guest range `[start, end)`
/// (widened to 2 MiB boundaries). Used for the ranges the VMM fills at once
/// (kernel image, initrd): one fault per 2 MiB instead of 512 makes loading
/// a 15 MB vmlinux ~5x faster, and the guest kernel runs on huge pages. The
/// rest of RAM stays 4 KiB and lazy. A hint: ignored where THP is off.
pub fn advise_hugepages(mem: &GuestMemory, start: u64, end: u64) {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    let start = start & !(HUGE_PAGE - 1);
    let end = end.saturating_add(HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
    for r in mem.iter() {
        let (rs, re) = (r.start_addr().0, r.start_addr().0 + r.len());
        let (s, e) = (start.max(rs), end.min(re));
        if s >= e {
            continue;
        }
        // SAFETY: `[s, e)` lies inside this region, so the host range is
        // inside its live mapping; MADV_HUGEPAGE changes no contents.
        unsafe {
            libc::madvise(
                r.as_ptr().add((s - rs) as usize).cast(),
                (e - s) as usize,
                libc::MADV_HUGEPAGE,
            );
        }
    }
}

/// Parse a human memory size into whole MiB: `256`, `256M`, `256MiB`, `2G`,
/// `2GiB`, `524288K`, `268435456B`. A bare number means MiB. Sizes that are
/// not a whole number of MiB are refused with the value named.
pub fn parse_memory_size(text: &str) -> Result<u32, ParseMemoryError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || ParseMemoryError::Syntax(text.to_string());
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => 1 << 30,
        "k" | "kb" | "kib" => 1 << 10,
        "b" => 1,
        _ => return Err(bad()),
    };
    let bytes = n.checked_mul(mult).ok_or_else(bad)?;
    if bytes % MIB != 0 {
        return Err(ParseMemoryError::NotWholeMib {
            text: text.to_string(),
            bytes,
        });
    }
    let mib = bytes / MIB;
    u32::try_from(mib)
        .ok()
        .filter(|m| *m <= MAX_MEMORY_MIB)
        .ok_or(ParseMemoryError::Range(MemoryError::OutOfRange {
            value: mib,
            min: MIN_MEMORY_MIB,
            max: MAX_MEMORY_MIB,
        }))
}

/// Why a memory size string was refused.
#[derive(Debug, thiserror::Error)]
pub enum ParseMemoryError {
    /// Not a number with an optional unit.
    #[error("memory size {0:?} is not a size: use e.g. 256, 256M, 2G")]
    Syntax(String),
    /// Not a multiple of 1 MiB.
    #[error("memory size {text:?} is {bytes} bytes, not a whole number of MiB (1048576 bytes)")]
    NotWholeMib {
        /// The text given.
        text: String,
        /// Its value in bytes.
        bytes: u64,
    },
    /// Outside the supported range.
    #[error(transparent)]
    Range(MemoryError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn small_guest_is_one_range() {
        assert_eq!(ram_ranges(128), vec![(GuestAddress(0), 128 * MIB)]);
        assert_eq!(ram_ranges(3072), vec![(GuestAddress(0), 3072 * MIB)]);
        assert_eq!(low_ram_end(128), 128 * MIB);
    }

    #[test]
    fn big_guest_continues_above_4g() {
        let r = ram_ranges(4096);
        assert_eq!(
            r,
            vec![(GuestAddress(0), 3 << 30), (GuestAddress(4 << 30), 1 << 30)]
        );
        assert_eq!(low_ram_end(4096), MMIO_GAP_START);
        let total: u64 = r.iter().map(|x| x.1).sum();
        assert_eq!(total, 4096 * MIB);
    }

    #[test]
    fn mapping_is_lazy_and_sized() {
        let m = create_guest_memory(4096).expect("map 4 GiB lazily");
        assert_eq!(m.num_regions(), 2);
        let sizes: Vec<u64> = m.iter().map(|r| r.len()).collect();
        assert_eq!(sizes, vec![3 << 30, 1 << 30]);
    }

    #[test]
    fn huge_page_advice_is_harmless() {
        let m = create_guest_memory(64).unwrap();
        advise_hugepages(&m, 0x100_0000, 0x180_0123);
        advise_hugepages(&m, 0x3f0_0000, 0x500_0000); // runs past the end
        advise_hugepages(&m, 0x500_0000, 0x600_0000); // outside RAM
        use vm_memory::Bytes;
        m.write_obj(7u64, GuestAddress(0x100_0000)).unwrap();
    }

    #[test]
    fn size_limits() {
        assert!(validate_memory_mib(MIN_MEMORY_MIB).is_ok());
        let e = validate_memory_mib(8).unwrap_err().to_string();
        assert!(e.contains("8 MiB") && e.contains("32"), "{e}");
        assert!(validate_memory_mib(MAX_MEMORY_MIB + 1).is_err());
    }

    #[test]
    fn parse_sizes() {
        assert_eq!(parse_memory_size("256").unwrap(), 256);
        assert_eq!(parse_memory_size("256M").unwrap(), 256);
        assert_eq!(parse_memory_size("2G").unwrap(), 2048);
        assert_eq!(parse_memory_size("2GiB").unwrap(), 2048);
        assert_eq!(parse_memory_size("131072k").unwrap(), 128);
        let e = parse_memory_size("1000K").unwrap_err().to_string();
        assert!(
            e.contains("1024000 bytes") && e.contains("whole number of MiB"),
            "{e}"
        );
        assert!(parse_memory_size("1.5G").is_err());
        assert!(parse_memory_size("lots").is_err());
        assert!(parse_memory_size("99999999G").is_err());
    }
}
