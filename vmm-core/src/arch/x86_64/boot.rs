//! Kernel, initrd and command line: inspect, place, load, and describe them
//! to the guest.
//!
//! Data flow: [`inspect_kernel`] reads just the headers of the kernel file
//! (ELF program headers, or the bzImage setup header) and says how much guest
//! memory it needs and how long a command line it accepts; [`plan`] checks
//! the command line, the kernel and the initrd against the guest's RAM and
//! picks the initrd address (top of low RAM, page aligned), all before any
//! KVM object exists, so bad input fails early with the value and the limit.
//! [`load`] then copies everything into guest memory with linux-loader and
//! writes the boot information: PVH `hvm_start_info` + memmap (vmlinux with
//! a PVH note) or the zero page `boot_params` with the e820 table (bzImage, or
//! a vmlinux without the note), and returns the [`EntryPoint`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryBackend};

use super::e820::{e820_map, E820Entry};
use super::layout::{
    BOOT_GDT_START, BOOT_IDT_START, CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, INITRD_ALIGN,
    PVH_INFO_START, PVH_MEMMAP_MAX_ENTRIES, PVH_MEMMAP_START, PVH_MODLIST_START, ZERO_PAGE_START,
};
use super::regs::EntryPoint;
use crate::memory::GuestMemory;

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const BZIMAGE_MAGIC: u32 = 0x5372_6448; // "HdrS"
const SETUP_HEADER_OFFSET: u64 = 0x1f1;
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
const XLF_KERNEL_64: u16 = 1;
const LOADED_HIGH: u8 = 1;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const ELF_PT_LOAD: u32 = 1;
const ELF_MACHINE_X86_64: u16 = 0x3e;
const MAX_ELF_PHDRS: u16 = 256;

/// The two kernel formats embervm boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// An uncompressed ELF `vmlinux`.
    Elf,
    /// A compressed `bzImage`.
    BzImage,
}

/// Why the kernel, initrd or command line cannot be booted.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A file could not be opened or read.
    #[error("cannot read {what} {path}: {source}")]
    Io {
        /// "kernel" or "initrd".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Neither an ELF nor a bzImage.
    #[error("kernel {path} is neither an x86-64 ELF vmlinux nor a bzImage: {detail}")]
    KernelFormat {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The kernel needs more low memory than the guest has.
    #[error(
        "kernel {path} needs guest memory from {start:#x} to {end:#x}, but RAM below the MMIO \
         gap ends at {ram_end:#x}: give the guest more memory"
    )]
    KernelTooBig {
        /// The file.
        path: PathBuf,
        /// First byte the kernel occupies.
        start: u64,
        /// End of what the kernel needs (exclusive).
        end: u64,
        /// End of low RAM.
        ram_end: u64,
    },
    /// The initrd does not fit between the kernel and the top of low RAM.
    #[error(
        "initrd {path} is {size} bytes but only {available} bytes are free between the kernel \
         (ends {kernel_end:#x}) and the top of low RAM ({top:#x}): give the guest more memory"
    )]
    InitrdTooBig {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The room there is.
        available: u64,
        /// End of the kernel.
        kernel_end: u64,
        /// Highest address the initrd may end at.
        top: u64,
    },
    /// Longer than the kernel accepts.
    #[error("kernel command line is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong {
        /// Its length.
        len: usize,
        /// The limit (without the NUL).
        max: usize,
    },
    /// Contains a NUL byte.
    #[error("kernel command line contains a NUL byte at offset {0}")]
    CmdlineNul(usize),
    /// linux-loader refused the image.
    #[error("cannot load kernel {path}: {source}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What linux-loader said.
        source: linux_loader::loader::Error,
    },
    /// Writing a boot structure into guest memory failed.
    #[error("cannot write {what} into guest memory: {source}")]
    Write {
        /// Which structure.
        what: &'static str,
        /// The memory error.
        source: vm_memory::GuestMemoryError,
    },
    /// The memory map does not fit its table.
    #[error("memory map has {len} entries, at most {max} fit")]
    MemmapTooLong {
        /// Entries.
        len: usize,
        /// Limit.
        max: usize,
    },
}

/// What the kernel's headers say, before anything is loaded.
#[derive(Debug, Clone)]
pub struct KernelInfo {
    /// The file.
    pub path: PathBuf,
    /// Its format.
    pub format: KernelFormat,
    /// Lowest guest address the kernel occupies.
    pub start: u64,
    /// End (exclusive) of the memory the kernel needs to boot, including
    /// bss and, for a bzImage, room to decompress.
    pub end: u64,
    /// Longest command line the kernel accepts, without the NUL.
    pub cmdline_max: usize,
    /// Highest address (inclusive) the initrd may occupy.
    pub initrd_addr_max: u64,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BootError + 'a {
    move |source| BootError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Read the kernel's headers and say what it needs.
pub fn inspect_kernel(path: &Path) -> Result<KernelInfo, BootError> {
    let mut f = File::open(path).map_err(io("kernel", path))?;
    let len = f.metadata().map_err(io("kernel", path))?.len();
    let mut head = [0u8; 0x210];
    let n = read_up_to(&mut f, &mut head).map_err(io("kernel", path))?;
    let head = &head[..n];
    let bad = |detail: String| BootError::KernelFormat {
        path: path.to_path_buf(),
        detail,
    };
    if head.len() >= 4 && head[..4] == ELF_MAGIC {
        inspect_elf(path, &mut f, head, len).map_err(bad)
    } else if head.len() >= 0x206
        && u32::from_le_bytes([head[0x202], head[0x203], head[0x204], head[0x205]]) == BZIMAGE_MAGIC
    {
        inspect_bzimage(path, &mut f, len).map_err(bad)
    } else {
        Err(bad(format!(
            "no ELF magic at offset 0 and no \"HdrS\" at offset 0x202 ({len} bytes)"
        )))
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

fn inspect_elf(path: &Path, f: &mut File, head: &[u8], len: u64) -> Result<KernelInfo, String> {
    if head.len() < 64 {
        return Err(format!("ELF header truncated ({len} bytes)"));
    }
    if head[4] != 2 || head[5] != 1 {
        return Err("ELF is not 64-bit little-endian".into());
    }
    let machine = u16_at(head, 18);
    if machine != ELF_MACHINE_X86_64 {
        return Err(format!(
            "ELF machine {machine:#x}, expected x86-64 ({ELF_MACHINE_X86_64:#x})"
        ));
    }
    let phoff = u64_at(head, 32);
    let phentsize = u16_at(head, 54);
    let phnum = u16_at(head, 56);
    if phentsize != 56 || phnum == 0 || phnum > MAX_ELF_PHDRS {
        return Err(format!("bad program headers: {phnum} of {phentsize} bytes"));
    }
    let table_len = u64::from(phnum) * 56;
    if phoff.checked_add(table_len).is_none_or(|e| e > len) {
        return Err(format!(
            "program headers at {phoff:#x} run past the end ({len} bytes)"
        ));
    }
    let mut table = vec![0u8; table_len as usize];
    f.seek(SeekFrom::Start(phoff)).map_err(|e| e.to_string())?;
    f.read_exact(&mut table).map_err(|e| e.to_string())?;
    let (mut start, mut end) = (u64::MAX, 0u64);
    for ph in table.chunks_exact(56) {
        if u32_at(ph, 0) != ELF_PT_LOAD {
            continue;
        }
        let (offset, paddr, filesz, memsz) = (
            u64_at(ph, 8),
            u64_at(ph, 24),
            u64_at(ph, 32),
            u64_at(ph, 40),
        );
        if offset.checked_add(filesz).is_none_or(|e| e > len) || filesz > memsz {
            return Err(format!(
                "segment at file offset {offset:#x} (+{filesz:#x}) is outside the file"
            ));
        }
        let seg_end = paddr
            .checked_add(memsz)
            .ok_or_else(|| format!("segment at {paddr:#x} + {memsz:#x} overflows"))?;
        start = start.min(paddr);
        end = end.max(seg_end);
    }
    if end == 0 {
        return Err("no loadable segment".into());
    }
    if start < HIMEM_START {
        return Err(format!("loads at {start:#x}, below 1 MiB"));
    }
    Ok(KernelInfo {
        path: path.to_path_buf(),
        format: KernelFormat::Elf,
        start,
        end,
        cmdline_max: CMDLINE_MAX_SIZE - 1,
        initrd_addr_max: u64::from(u32::MAX),
    })
}

fn read_setup_header(f: &mut File) -> std::io::Result<setup_header> {
    let mut hdr = setup_header::default();
    f.seek(SeekFrom::Start(SETUP_HEADER_OFFSET))?;
    f.read_exact(hdr.as_mut_slice())?;
    Ok(hdr)
}

fn inspect_bzimage(path: &Path, f: &mut File, len: u64) -> Result<KernelInfo, String> {
    let hdr = read_setup_header(f).map_err(|e| format!("setup header: {e}"))?;
    let version = hdr.version;
    let (xloadflags, loadflags) = (hdr.xloadflags, hdr.loadflags);
    if version < 0x020c || xloadflags & XLF_KERNEL_64 == 0 || loadflags & LOADED_HIGH == 0 {
        return Err(format!(
            "bzImage boot protocol {}.{:02} without a 64-bit entry (needs 2.12+ with XLF_KERNEL_64)",
            version >> 8,
            version & 0xff
        ));
    }
    let setup_sects = if hdr.setup_sects == 0 {
        4
    } else {
        u64::from(hdr.setup_sects)
    };
    let setup_len = (setup_sects + 1) * 512;
    let payload = len
        .checked_sub(setup_len)
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{len} bytes is shorter than its setup code ({setup_len})"))?;
    let load = u64::from(hdr.code32_start);
    if load < HIMEM_START {
        return Err(format!("code32_start {load:#x} is below 1 MiB"));
    }
    let runtime = hdr.pref_address.max(load);
    let end = (load + payload).max(runtime + u64::from(hdr.init_size));
    let cmdline_size = hdr.cmdline_size as usize;
    Ok(KernelInfo {
        path: path.to_path_buf(),
        format: KernelFormat::BzImage,
        start: load,
        end,
        cmdline_max: cmdline_size.min(CMDLINE_MAX_SIZE - 1),
        initrd_addr_max: u64::from(hdr.initrd_addr_max),
    })
}

/// Where things go, decided before any memory is touched.
#[derive(Debug, Clone)]
pub struct BootPlan {
    /// The kernel.
    pub kernel: KernelInfo,
    /// The command line (validated).
    pub cmdline: String,
    /// The initrd: file, guest address and size.
    pub initrd: Option<(PathBuf, u64, u64)>,
}

/// Check the command line against the kernel's limit.
pub fn validate_cmdline(cmdline: &str, max: usize) -> Result<(), BootError> {
    if let Some(pos) = cmdline.bytes().position(|b| b == 0) {
        return Err(BootError::CmdlineNul(pos));
    }
    if cmdline.len() > max {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    Ok(())
}

/// The initrd's guest address: as high as allowed below `low_ram_end`, page
/// aligned, above the kernel.
pub fn initrd_address(
    path: &Path,
    size: u64,
    kernel_end: u64,
    low_ram_end: u64,
    addr_max: u64,
) -> Result<u64, BootError> {
    let top = low_ram_end.min(addr_max.saturating_add(1));
    let kernel_end = kernel_end.div_ceil(INITRD_ALIGN) * INITRD_ALIGN;
    let available = top.saturating_sub(kernel_end) & !(INITRD_ALIGN - 1);
    let start = top.checked_sub(size).map(|s| s & !(INITRD_ALIGN - 1));
    match start {
        Some(s) if s >= kernel_end => Ok(s),
        _ => Err(BootError::InitrdTooBig {
            path: path.to_path_buf(),
            size,
            available,
            kernel_end,
            top,
        }),
    }
}

/// Check everything against a guest whose low RAM ends at `low_ram_end`.
pub fn plan(
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
    low_ram_end: u64,
) -> Result<BootPlan, BootError> {
    let info = inspect_kernel(kernel)?;
    validate_cmdline(cmdline, info.cmdline_max)?;
    if info.end > low_ram_end {
        return Err(BootError::KernelTooBig {
            path: info.path.clone(),
            start: info.start,
            end: info.end,
            ram_end: low_ram_end,
        });
    }
    let initrd = match initrd {
        None => None,
        Some(p) => {
            let size = std::fs::metadata(p).map_err(io("initrd", p))?.len();
            let addr = initrd_address(p, size, info.end, low_ram_end, info.initrd_addr_max)?;
            Some((p.to_path_buf(), addr, size))
        }
    };
    Ok(BootPlan {
        kernel: info,
        cmdline: cmdline.to_string(),
        initrd,
    })
}

fn write<T: ByteValued>(
    mem: &GuestMemory,
    what: &'static str,
    v: T,
    at: u64,
) -> Result<(), BootError> {
    mem.write_obj(v, GuestAddress(at))
        .map_err(|source| BootError::Write { what, source })
}

/// Load the planned kernel, initrd and command line and write the boot
/// information; returns where the boot vCPU starts.
pub fn load(mem: &GuestMemory, plan: &BootPlan) -> Result<EntryPoint, BootError> {
    let kpath = &plan.kernel.path;
    let mut kfile = File::open(kpath).map_err(io("kernel", kpath))?;
    let himem = Some(GuestAddress(HIMEM_START));
    let load_err = |source| BootError::Load {
        path: kpath.clone(),
        source,
    };
    let (entry, setup) = match plan.kernel.format {
        KernelFormat::Elf => {
            let r = Elf::load(mem, None, &mut kfile, himem).map_err(load_err)?;
            match r.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(a) => (EntryPoint::Pvh(a.0), None),
                _ => (EntryPoint::Linux64(r.kernel_load.0), None),
            }
        }
        KernelFormat::BzImage => {
            let r = BzImage::load(mem, None, &mut kfile, himem).map_err(load_err)?;
            (
                EntryPoint::Linux64(r.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET),
                r.setup_header,
            )
        }
    };

    let mut cmdline = plan.cmdline.as_bytes().to_vec();
    cmdline.push(0);
    mem.write_slice(&cmdline, GuestAddress(CMDLINE_START))
        .map_err(|source| BootError::Write {
            what: "command line",
            source,
        })?;

    if let Some((path, addr, size)) = &plan.initrd {
        let mut f = File::open(path).map_err(io("initrd", path))?;
        mem.read_exact_volatile_from(GuestAddress(*addr), &mut f, *size as usize)
            .map_err(|source| BootError::Write {
                what: "initrd",
                source,
            })?;
    }

    let gdt = entry.gdt();
    for (i, e) in gdt.iter().enumerate() {
        write(mem, "GDT", *e, BOOT_GDT_START + 8 * i as u64)?;
    }
    write(mem, "IDT", 0u64, BOOT_IDT_START)?;

    let ram: Vec<(GuestAddress, u64)> = mem.iter().map(region_range).collect();
    let map = e820_map(&ram);
    match entry {
        EntryPoint::Pvh(_) => write_pvh_info(mem, plan, &map)?,
        EntryPoint::Linux64(_) => write_zero_page(mem, plan, setup, &map)?,
    }
    Ok(entry)
}

fn region_range(r: &vm_memory::GuestRegionMmap<()>) -> (GuestAddress, u64) {
    use vm_memory::GuestMemoryRegion;
    (r.start_addr(), r.len())
}

fn write_pvh_info(mem: &GuestMemory, plan: &BootPlan, map: &[E820Entry]) -> Result<(), BootError> {
    if map.len() > PVH_MEMMAP_MAX_ENTRIES {
        return Err(BootError::MemmapTooLong {
            len: map.len(),
            max: PVH_MEMMAP_MAX_ENTRIES,
        });
    }
    for (i, e) in map.iter().enumerate() {
        let entry = hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        };
        let at = PVH_MEMMAP_START + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        write(mem, "PVH memmap", entry, at)?;
    }
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    if let Some((_, addr, size)) = &plan.initrd {
        let module = hvm_modlist_entry {
            paddr: *addr,
            size: *size,
            ..Default::default()
        };
        write(mem, "PVH modlist", module, PVH_MODLIST_START)?;
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST_START;
    }
    write(mem, "PVH start info", info, PVH_INFO_START)
}

fn write_zero_page(
    mem: &GuestMemory,
    plan: &BootPlan,
    setup: Option<setup_header>,
    map: &[E820Entry],
) -> Result<(), BootError> {
    let mut params = boot_params::default();
    match setup {
        Some(hdr) => params.hdr = hdr,
        None => params.hdr.kernel_alignment = 0x100_0000,
    }
    params.hdr.type_of_loader = 0xff;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = BZIMAGE_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = plan.cmdline.len() as u32;
    if let Some((_, addr, size)) = &plan.initrd {
        params.hdr.ramdisk_image = *addr as u32;
        params.hdr.ramdisk_size = *size as u32;
        params.ext_ramdisk_image = (*addr >> 32) as u32;
        params.ext_ramdisk_size = (*size >> 32) as u32;
    }
    if map.len() > params.e820_table.len() {
        return Err(BootError::MemmapTooLong {
            len: map.len(),
            max: params.e820_table.len(),
        });
    }
    for (slot, e) in params.e820_table.iter_mut().zip(map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = map.len() as u8;
    write(mem, "zero page", params, ZERO_PAGE_START)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp(name: &str, bytes: &[u8]) -> PathBuf {
        let p = std::env::temp_dir().join(format!("embervm-boot-{}-{name}", std::process::id()));
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }

    /// A minimal x86-64 ELF with one PT_LOAD segment at `paddr`.
    fn tiny_elf(paddr: u64, memsz: u64) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56 + 16];
        b[..4].copy_from_slice(&ELF_MAGIC);
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&2u16.to_le_bytes());
        b[18..20].copy_from_slice(&ELF_MACHINE_X86_64.to_le_bytes());
        b[24..32].copy_from_slice(&paddr.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[52..54].copy_from_slice(&64u16.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = &mut b[64..120];
        ph[0..4].copy_from_slice(&ELF_PT_LOAD.to_le_bytes());
        ph[8..16].copy_from_slice(&120u64.to_le_bytes());
        ph[16..24].copy_from_slice(&paddr.to_le_bytes());
        ph[24..32].copy_from_slice(&paddr.to_le_bytes());
        ph[32..40].copy_from_slice(&16u64.to_le_bytes());
        ph[40..48].copy_from_slice(&memsz.to_le_bytes());
        b
    }

    #[test]
    fn rejects_garbage_kernel() {
        let p = temp("garbage", b"this is not a kernel at all");
        let e = inspect_kernel(&p).unwrap_err();
        assert!(matches!(e, BootError::KernelFormat { .. }), "{e}");
        assert!(e.to_string().contains("neither"), "{e}");
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn elf_extent_and_fit() {
        let p = temp("elf", &tiny_elf(0x100_0000, 0x40_0000));
        let info = inspect_kernel(&p).unwrap();
        assert_eq!(info.format, KernelFormat::Elf);
        assert_eq!((info.start, info.end), (0x100_0000, 0x140_0000));
        assert_eq!(info.cmdline_max, 2047);
        let e = plan(&p, None, "", 0x120_0000).unwrap_err();
        assert!(
            matches!(
                e,
                BootError::KernelTooBig {
                    end: 0x140_0000,
                    ..
                }
            ),
            "{e}"
        );
        assert!(plan(&p, None, "console=ttyS0", 32 << 20).is_ok());
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn elf_for_another_machine() {
        let mut b = tiny_elf(0x100_0000, 0x1000);
        b[18] = 0xb7; // aarch64
        let p = temp("arm", &b);
        let e = inspect_kernel(&p).unwrap_err().to_string();
        assert!(e.contains("machine 0xb7"), "{e}");
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn cmdline_limits() {
        assert!(validate_cmdline(&"a".repeat(2047), 2047).is_ok());
        let e = validate_cmdline(&"a".repeat(2048), 2047)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2048") && e.contains("2047"), "{e}");
        assert!(matches!(
            validate_cmdline("a\0b", 2047),
            Err(BootError::CmdlineNul(1))
        ));
    }

    #[test]
    fn initrd_at_top_of_low_ram() {
        let p = Path::new("initrd");
        let a = initrd_address(p, 1_000_000, 0x200_0000, 128 << 20, u64::from(u32::MAX)).unwrap();
        assert_eq!(a % INITRD_ALIGN, 0);
        assert!(a + 1_000_000 <= 128 << 20);
        assert!((128 << 20) - a < 1_000_000 + INITRD_ALIGN);
        // initrd_addr_max caps the top.
        let a = initrd_address(p, 0x1000, 0x200_0000, 0xc000_0000, 0x7fff_ffff).unwrap();
        assert_eq!(a, 0x8000_0000 - 0x1000);
        // Too big: names size and room.
        let e =
            initrd_address(p, 200 << 20, 0x200_0000, 128 << 20, u64::from(u32::MAX)).unwrap_err();
        match e {
            BootError::InitrdTooBig {
                size, available, ..
            } => {
                assert_eq!(size, 200 << 20);
                assert_eq!(available, (128 << 20) - 0x200_0000);
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn loads_tiny_elf_with_zero_page() {
        let p = temp("load", &tiny_elf(0x100_0000, 0x1000));
        let ip = temp("initrd", &[7u8; 5000]);
        let mem = crate::memory::create_guest_memory(64).unwrap();
        let plan = plan(&p, Some(&ip), "console=ttyS0", 64 << 20).unwrap();
        let entry = load(&mem, &plan).unwrap();
        assert_eq!(entry, EntryPoint::Linux64(0x100_0000));
        let params: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        let (ptr, image, size, n) = (
            params.hdr.cmd_line_ptr,
            params.hdr.ramdisk_image,
            params.hdr.ramdisk_size,
            params.e820_entries,
        );
        assert_eq!(ptr as u64, CMDLINE_START);
        assert_eq!(
            (image as u64, size),
            (plan.initrd.as_ref().unwrap().1, 5000)
        );
        assert_eq!(n, 3);
        let mut c = [0u8; 14];
        mem.read_slice(&mut c, GuestAddress(CMDLINE_START)).unwrap();
        assert_eq!(&c, b"console=ttyS0\0");
        let b: u8 = mem.read_obj(GuestAddress(image as u64 + 4999)).unwrap();
        assert_eq!(b, 7);
        let _ = std::fs::remove_file(p);
        let _ = std::fs::remove_file(ip);
    }
}
