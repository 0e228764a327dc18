//! Guest memory to and from its own file.
//!
//! The memory file is the guest RAM regions concatenated in address order,
//! nothing else: region `i` starts at the sum of the lengths before it. Zero
//! pages are holes, so the file costs disk space only for the pages the guest
//! used. Restoring maps the file `MAP_PRIVATE`: no copying, pages fault in on
//! first touch and guest writes are copy-on-write, so the file never changes.
//!
//! Which pages to look at is asked of `/proc/self/pagemap` rather than
//! `mincore()`: mincore reports a swapped-out anonymous page as not resident,
//! and skipping it would lose its data. A page holds data only if it is
//! - anonymous memory: present or swapped (never-touched pages are zero);
//! - a `MAP_PRIVATE` file mapping (a restored guest): a private copy (present
//!   and not a file page, or swapped), or else whatever the backing file has
//!   there, which is zero in the file's holes.
//!
//! Without pagemap (no `/proc`) every page is scanned: slower, same file.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use vm_memory::mmap::{MmapRegion, MmapRegionError};
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};

use super::error::SnapshotError;
use super::format::TempFile;
use crate::memory::GuestMemory;

const PAGE: usize = 4096;
/// Pages looked up in pagemap at a time (32 MiB of guest memory).
const CHUNK_PAGES: usize = 8192;
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAP: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;

/// What [`write_memory`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryFileStats {
    /// Length of the file: all guest RAM.
    pub bytes: u64,
    /// Bytes actually written (non-zero pages); the rest are holes.
    pub data_bytes: u64,
}

/// Write all of `mem` to the memory file `path` (replaced atomically).
///
/// The VM must be paused: memory a vCPU changes meanwhile may be saved torn.
pub fn write_memory(mem: &GuestMemory, path: &Path) -> Result<MemoryFileStats, SnapshotError> {
    let pagemap = match File::open("/proc/self/pagemap") {
        Ok(f) => Some(f),
        Err(e) => {
            log::warn!("cannot open /proc/self/pagemap ({e}): scanning all guest memory");
            None
        }
    };
    write_memory_with(mem, path, pagemap.as_ref())
}

fn write_memory_with(
    mem: &GuestMemory,
    path: &Path,
    pagemap: Option<&File>,
) -> Result<MemoryFileStats, SnapshotError> {
    let bytes: u64 = mem.iter().map(|r| r.len()).sum();
    let tmp = TempFile::create(path)?;
    tmp.file
        .set_len(bytes)
        .map_err(|e| SnapshotError::io(format!("set to {bytes} bytes"), &tmp.tmp, e))?;
    let mut offset = 0;
    let mut data_bytes = 0;
    for region in mem.iter() {
        data_bytes += write_region(&tmp, region, offset, pagemap)?;
        offset += region.len();
    }
    tmp.commit()?;
    Ok(MemoryFileStats { bytes, data_bytes })
}

/// Write the non-zero pages of `region` at `offset`; returns bytes written.
fn write_region(
    tmp: &TempFile,
    region: &GuestRegionMmap<()>,
    offset: u64,
    pagemap: Option<&File>,
) -> Result<u64, SnapshotError> {
    let len = region.len() as usize;
    // SAFETY: the region's mapping is `len` readable bytes, live while
    // `region` is borrowed. Guest memory is plain bytes; the caller has paused the VM,
    // and a vCPU writing anyway could only make the copy inconsistent.
    let host = unsafe { std::slice::from_raw_parts(region.as_ptr().cast_const(), len) };
    let extents = region
        .file_offset()
        .filter(|_| pagemap.is_some())
        .map(|fo| data_extents(fo.file(), fo.start(), len as u64));
    let pages = len.div_ceil(PAGE);
    let mut written = 0;
    let mut maybe = vec![true; CHUNK_PAGES];
    for first in (0..pages).step_by(CHUNK_PAGES) {
        let n = CHUNK_PAGES.min(pages - first);
        let maybe = &mut maybe[..n];
        if let Some(pm) = pagemap {
            let vpage = region.as_ptr() as usize / PAGE + first;
            candidates(pm, vpage, extents.as_deref(), first, maybe);
        }
        // First page of the current run of data pages; the `false` chained
        // after the last page ends the last run.
        let mut run: Option<usize> = None;
        for (i, m) in maybe.iter().copied().chain([false]).enumerate() {
            let data = m && !is_zero(page(host, first + i));
            match (run, data) {
                (None, true) => run = Some(first + i),
                (Some(start), false) => {
                    let (s, e) = (start * PAGE, ((first + i) * PAGE).min(len));
                    tmp.file
                        .write_all_at(&host[s..e], offset + s as u64)
                        .map_err(|err| SnapshotError::io("write", &tmp.tmp, err))?;
                    written += (e - s) as u64;
                    run = None;
                }
                _ => {}
            }
        }
    }
    Ok(written)
}

/// Mark in `maybe` (pages `first..` of a region at virtual page `vpage`)
/// the pages that may hold data. On a pagemap read error all are marked.
fn candidates(
    pagemap: &File,
    vpage: usize,
    extents: Option<&[(u64, u64)]>,
    first: usize,
    maybe: &mut [bool],
) {
    let mut raw = vec![0u8; maybe.len() * 8];
    if let Err(e) = pagemap.read_exact_at(&mut raw, vpage as u64 * 8) {
        log::warn!("cannot read /proc/self/pagemap ({e}): scanning these pages");
        maybe.fill(true);
        return;
    }
    for (m, entry) in maybe.iter_mut().zip(raw.chunks_exact(8)) {
        let mut e = [0u8; 8];
        e.copy_from_slice(entry);
        let e = u64::from_ne_bytes(e);
        *m = match extents {
            None => e & (PM_PRESENT | PM_SWAP) != 0,
            Some(_) => e & PM_SWAP != 0 || e & (PM_PRESENT | PM_FILE) == PM_PRESENT,
        };
    }
    // Pages not privately copied hold the backing file's data there.
    for &(s, e) in extents.unwrap_or(&[]) {
        let lo = (s as usize / PAGE).max(first);
        let hi = (e as usize).div_ceil(PAGE).min(first + maybe.len());
        if lo < hi {
            maybe[lo - first..hi - first].fill(true);
        }
    }
}

/// The data (non-hole) byte ranges of `file` in `[start, start + len)`,
/// relative to `start`. If the file system cannot tell, all of it.
fn data_extents(file: &File, start: u64, len: u64) -> Vec<(u64, u64)> {
    let fd = file.as_raw_fd();
    let end = start + len;
    let seek = |pos: u64, whence: i32| -> Result<Option<u64>, ()> {
        // SAFETY: lseek on a descriptor we hold; it touches no memory. (It
        // moves the file position, which nothing reading this file uses.)
        let r = unsafe { libc::lseek(fd, pos as libc::off_t, whence) };
        if r >= 0 {
            Ok(Some(r as u64))
        } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
            Ok(None) // no data after `pos`
        } else {
            Err(())
        }
    };
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let data = match seek(pos, libc::SEEK_DATA) {
            Ok(Some(d)) if d < end => d,
            Ok(_) => break,
            Err(()) => return vec![(0, len)],
        };
        let hole = match seek(data, libc::SEEK_HOLE) {
            Ok(Some(h)) => h.min(end),
            _ => return vec![(0, len)],
        };
        out.push((data - start, hole - start));
        pos = hole;
    }
    out
}

/// Page `i` of `host` (the last one may be short).
fn page(host: &[u8], i: usize) -> &[u8] {
    &host[i * PAGE..((i + 1) * PAGE).min(host.len())]
}

/// Whether all of `bytes` are zero, compared 16 bytes at a time.
fn is_zero(bytes: &[u8]) -> bool {
    // SAFETY: every bit pattern is a valid u128; align_to only reinterprets.
    let (head, words, tail) = unsafe { bytes.align_to::<u128>() };
    head.iter().all(|&b| b == 0)
        && tail.iter().all(|&b| b == 0)
        && words
            .chunks(8)
            .all(|c| c.iter().fold(0, |a, &w| a | w) == 0)
}

/// Map the memory file `path` as guest memory with the RAM `ranges` (in
/// address order, as written): private copy-on-write mappings of the file,
/// so this takes the same time whatever the memory size and the file never
/// changes. Refused with [`SnapshotError::MemorySize`] if the file's length
/// is not the sum of the range lengths.
pub fn map_memory(
    path: &Path,
    ranges: &[(GuestAddress, u64)],
) -> Result<GuestMemory, SnapshotError> {
    let file = File::open(path).map_err(|e| SnapshotError::io("open", path, e))?;
    let found = file
        .metadata()
        .map_err(|e| SnapshotError::io("stat", path, e))?
        .size();
    let expected = ranges
        .iter()
        .try_fold(0u64, |sum, &(_, len)| sum.checked_add(len))
        .unwrap_or(u64::MAX);
    if found != expected {
        return Err(SnapshotError::MemorySize {
            path: path.to_path_buf(),
            expected,
            found,
        });
    }
    let mmap_err = |detail: String| SnapshotError::Mmap {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, detail),
    };
    let file = Arc::new(file);
    let mut offset = 0;
    let mut regions = Vec::with_capacity(ranges.len());
    for &(addr, len) in ranges {
        let size = usize::try_from(len)
            .map_err(|_| mmap_err(format!("range at {:#x} is too long", addr.0)))?;
        let mapping = MmapRegion::<()>::build(
            Some(FileOffset::from_arc(Arc::clone(&file), offset)),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        )
        .map_err(|e| match e {
            MmapRegionError::Mmap(source) => SnapshotError::Mmap {
                path: path.to_path_buf(),
                source,
            },
            other => mmap_err(other.to_string()),
        })?;
        let region = GuestRegionMmap::new(mapping, addr)
            .ok_or_else(|| mmap_err(format!("range at {:#x} of {len} bytes overflows", addr.0)))?;
        regions.push(region);
        offset += len;
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| mmap_err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::format::ScratchDir;
    use vm_memory::Bytes;

    const MIB: u64 = 1 << 20;
    const HIGH: u64 = 1 << 32;

    fn small_ranges() -> Vec<(GuestAddress, u64)> {
        vec![(GuestAddress(0), MIB), (GuestAddress(HIGH), MIB / 2)]
    }

    fn small_guest() -> GuestMemory {
        let r: Vec<(GuestAddress, usize)> = small_ranges()
            .into_iter()
            .map(|(a, l)| (a, l as usize))
            .collect();
        let mem = GuestMemoryMmap::from_ranges(&r).unwrap();
        let p = PAGE as u64;
        mem.write_obj(0x11u8, GuestAddress(0)).unwrap();
        mem.write_obj(0x22u8, GuestAddress(MIB - 1)).unwrap(); // end of region 0
        mem.write_obj(0x33u8, GuestAddress(HIGH)).unwrap(); // start of region 1
        mem.write_obj(0x44u8, GuestAddress(HIGH + MIB / 2 - 1))
            .unwrap(); // its end
        mem.write_slice(&[0x55; 3 * PAGE], GuestAddress(10 * p))
            .unwrap(); // one run
        mem.write_obj(0x66u8, GuestAddress(20 * p + p - 1)).unwrap(); // last byte
        mem.write_obj(0u64, GuestAddress(30 * p)).unwrap(); // touched, still zero
        mem
    }

    /// Pages with data in `small_guest`.
    const SMALL_DATA_PAGES: u64 = 8;

    fn contents(mem: &GuestMemory) -> Vec<u8> {
        let mut out = Vec::new();
        for r in mem.iter() {
            let mut buf = vec![0u8; r.len() as usize];
            mem.read_slice(&mut buf, r.start_addr()).unwrap();
            out.extend_from_slice(&buf);
        }
        out
    }

    fn allocated(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn sparse_round_trip_two_regions() {
        let dir = ScratchDir::new("mem-rt");
        let path = dir.0.join("mem");
        let mem = small_guest();
        let stats = write_memory(&mem, &path).unwrap();
        assert_eq!(stats.bytes, MIB + MIB / 2);
        assert_eq!(stats.data_bytes, SMALL_DATA_PAGES * PAGE as u64);
        let file = std::fs::read(&path).unwrap();
        assert_eq!(file, contents(&mem));
        assert!(
            allocated(&path) <= 2 * stats.data_bytes,
            "{}",
            allocated(&path)
        );

        let back = map_memory(&path, &small_ranges()).unwrap();
        assert_eq!(back.num_regions(), 2);
        assert_eq!(contents(&back), file);

        // Guest writes stay private to the mapping.
        back.write_obj(0xaau8, GuestAddress(5 * PAGE as u64))
            .unwrap();
        back.write_obj(0xbbu8, GuestAddress(HIGH + 1)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), file);
    }

    #[test]
    fn rewrite_from_file_backed_mapping() {
        let dir = ScratchDir::new("mem-rw");
        let (a, b, c) = (dir.0.join("a"), dir.0.join("b"), dir.0.join("c"));
        write_memory(&small_guest(), &a).unwrap();
        let back = map_memory(&a, &small_ranges()).unwrap();
        // Read some pages (file pages mapped) and rewrite: identical file.
        let _ = contents(&back);
        let s = write_memory(&back, &b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(s.data_bytes, SMALL_DATA_PAGES * PAGE as u64);

        // Copy-on-write a page in a hole, zero a page that has data in the
        // file: the new file follows the memory, not the old file.
        let p = PAGE as u64;
        back.write_obj(0x77u8, GuestAddress(40 * p + 9)).unwrap();
        back.write_slice(&[0; PAGE], GuestAddress(11 * p)).unwrap();
        let s = write_memory(&back, &c).unwrap();
        assert_eq!(std::fs::read(&c).unwrap(), contents(&back));
        assert_eq!(s.data_bytes, SMALL_DATA_PAGES * PAGE as u64);
        assert_ne!(std::fs::read(&c).unwrap(), std::fs::read(&a).unwrap());
    }

    #[test]
    fn without_pagemap_the_same_file() {
        let dir = ScratchDir::new("mem-nopm");
        let (a, b, c) = (dir.0.join("a"), dir.0.join("b"), dir.0.join("c"));
        let mem = small_guest();
        write_memory(&mem, &a).unwrap();
        let s = write_memory_with(&mem, &b, None).unwrap();
        assert_eq!(s.data_bytes, SMALL_DATA_PAGES * PAGE as u64);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let back = map_memory(&a, &small_ranges()).unwrap();
        write_memory_with(&back, &c, None).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
    }

    #[test]
    fn big_guest_split_around_the_gap() {
        let dir = ScratchDir::new("mem-big");
        let (a, b) = (dir.0.join("a"), dir.0.join("b"));
        let ranges = crate::memory::ram_ranges(4096);
        assert_eq!(ranges.len(), 2);
        let mem = crate::memory::create_guest_memory(4096).unwrap();
        let low_end = ranges[0].1;
        let high = ranges[1].0 .0;
        let high_end = high + ranges[1].1;
        let marks = [(0, 1u8), (low_end - 8, 2), (high, 3), (high_end - 8, 4)];
        for &(at, v) in &marks {
            mem.write_obj(v, GuestAddress(at)).unwrap();
        }
        let s = write_memory(&mem, &a).unwrap();
        assert_eq!(s.bytes, 4096 * MIB);
        let f = File::open(&a).unwrap();
        let file_offset = |at: u64| if at >= high { at - high + low_end } else { at };
        for &(at, v) in &marks {
            let mut byte = [0u8];
            f.read_exact_at(&mut byte, file_offset(at)).unwrap();
            assert_eq!(byte[0], v, "at {at:#x}");
        }
        if File::open("/proc/self/pagemap").is_ok() {
            assert_eq!(s.data_bytes, 4 * PAGE as u64);
            assert!(allocated(&a) < 64 * MIB, "{}", allocated(&a));
        }

        let back = map_memory(&a, &ranges).unwrap();
        for &(at, v) in &marks {
            assert_eq!(back.read_obj::<u8>(GuestAddress(at)).unwrap(), v);
        }
        assert_eq!(back.read_obj::<u64>(GuestAddress(MIB)).unwrap(), 0);
        if File::open("/proc/self/pagemap").is_ok() {
            // Only the file's data is read back, not 4 GiB of holes.
            let s2 = write_memory(&back, &b).unwrap();
            assert_eq!(s2, s);
        }
    }

    #[test]
    fn wrong_size_file_is_refused() {
        let dir = ScratchDir::new("mem-size");
        let path = dir.0.join("mem");
        std::fs::write(&path, vec![0u8; PAGE]).unwrap();
        let e = map_memory(&path, &small_ranges()).unwrap_err();
        let msg = e.to_string();
        match e {
            SnapshotError::MemorySize {
                expected, found, ..
            } => assert_eq!((expected, found), (MIB + MIB / 2, PAGE as u64)),
            e => panic!("{e}"),
        }
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        let e = map_memory(&dir.0.join("absent"), &small_ranges()).unwrap_err();
        assert!(matches!(e, SnapshotError::Io { .. }), "{e}");
    }

    #[test]
    fn zero_check() {
        let mut buf = vec![0u8; PAGE + 3];
        assert!(is_zero(&buf) && is_zero(&buf[1..]) && is_zero(&[]));
        for at in [0, 1, 15, 16, 2047, PAGE - 1, PAGE + 2] {
            buf[at] = 1;
            assert!(!is_zero(&buf) && !is_zero(&buf[at..]));
            buf[at] = 0;
        }
    }
}
