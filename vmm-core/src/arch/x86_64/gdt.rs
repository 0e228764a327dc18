//! The boot GDT and the KVM segment registers derived from it.
//!
//! The guest starts with a flat GDT of four entries (null, code, data, TSS).
//! The same 64-bit descriptors are written to guest memory (so the kernel can
//! reload segments) and decoded into `kvm_segment`s for `KVM_SET_SREGS`, so
//! the hidden segment state always matches the table. PVH enters in 32-bit
//! protected mode and gets a 32-bit code segment instead of a 64-bit one.

use kvm_bindings::kvm_segment;

/// Access/flags word of a 64-bit code segment (L=1, P, S, execute/read, accessed).
pub const CODE64: u16 = 0xa09b;
/// Access/flags word of a flat 32-bit code segment (D/B=1, G=1).
pub const CODE32: u16 = 0xc09b;
/// Access/flags word of a flat read/write data segment.
pub const DATA: u16 = 0xc093;
/// Access/flags word of a 64-bit busy TSS (as used for the Linux 64-bit entry).
pub const TSS64: u16 = 0x808b;
/// Access/flags word of a 32-bit busy TSS (PVH entry).
pub const TSS32: u16 = 0x008b;

/// Build a GDT descriptor from its access/flags word, base and 20-bit limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let base = base as u64;
    let limit = limit as u64;
    let flags = flags as u64;
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

fn base(entry: u64) -> u64 {
    ((entry >> 32) & 0xff00_0000) | ((entry >> 16) & 0x00ff_ffff)
}

fn limit(entry: u64) -> u32 {
    let raw = (((entry >> 32) & 0x000f_0000) | (entry & 0xffff)) as u32;
    // With the granularity bit the limit counts 4 KiB pages.
    if (entry >> 55) & 1 == 1 {
        (raw << 12) | 0xfff
    } else {
        raw
    }
}

/// Decode GDT entry `entry`, found at index `index`, into a KVM segment.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base: base(entry),
        limit: limit(entry),
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: ((entry >> 55) & 1) as u8,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// The boot GDT for the 64-bit Linux entry.
pub fn gdt_64bit() -> [u64; super::layout::BOOT_GDT_ENTRIES] {
    [
        gdt_entry(0, 0, 0),
        gdt_entry(CODE64, 0, 0xfffff),
        gdt_entry(DATA, 0, 0xfffff),
        gdt_entry(TSS64, 0, 0xfffff),
    ]
}

/// The boot GDT for the PVH entry (32-bit protected mode, paging off).
pub fn gdt_pvh() -> [u64; super::layout::BOOT_GDT_ENTRIES] {
    [
        gdt_entry(0, 0, 0),
        gdt_entry(CODE32, 0, 0xfffff),
        gdt_entry(DATA, 0, 0xfffff),
        gdt_entry(TSS32, 0, 0x67),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings() {
        // Values every x86 boot loader uses for a flat 64-bit GDT.
        assert_eq!(gdt_entry(CODE64, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(DATA, 0, 0xfffff), 0x00cf_9300_0000_ffff);
        assert_eq!(gdt_entry(CODE32, 0, 0xfffff), 0x00cf_9b00_0000_ffff);
    }

    #[test]
    fn decode_round_trip() {
        let code = segment_from_gdt(gdt_entry(CODE64, 0, 0xfffff), 1);
        assert_eq!(code.selector, 8);
        assert_eq!(
            (code.l, code.db, code.g, code.present, code.s),
            (1, 0, 1, 1, 1)
        );
        assert_eq!(code.type_, 0xb);
        assert_eq!(code.limit, 0xffff_ffff);
        let data = segment_from_gdt(gdt_entry(DATA, 0, 0xfffff), 2);
        assert_eq!((data.selector, data.type_, data.db, data.l), (16, 3, 1, 0));
        let tss = segment_from_gdt(gdt_entry(TSS32, 0x1234_5678, 0x67), 3);
        assert_eq!(
            (tss.base, tss.limit, tss.g, tss.s),
            (0x1234_5678, 0x67, 0, 0)
        );
        let null = segment_from_gdt(0, 0);
        assert_eq!(null.unusable, 1);
    }
}
