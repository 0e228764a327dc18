//! The guest physical memory map, in one place.
//!
//! Every fixed address the VMM writes to or reserves in the guest is a named
//! constant here, so the whole layout reads top to bottom:
//!
//! ```text
//! 0x0000_0500  boot GDT (4 entries), then the IDT stub at 0x520
//! 0x0000_6000  PVH hvm_start_info, modlist at 0x6040, memmap at 0x6100
//! 0x0000_7000  Linux zero page (boot_params) for the 64-bit boot protocol
//! 0x0000_8ff0  boot stack pointer (grows down)
//! 0x0000_9000  PML4, PDPT at 0xa000, 4 page directories at 0xb000..0xf000
//! 0x0002_0000  kernel command line (at most 2048 bytes with the NUL)
//! 0x0009_fc00  MP table (last KiB of base memory, reserved in the e820)
//! 0x000a_0000  end of the low 640 KiB
//! 0x0010_0000  HIMEM_START: kernels load at or above 1 MiB
//! ...          RAM, the initrd at the top of low RAM
//! 0xc000_0000  MMIO gap: devices (virtio-mmio windows from 0xd000_0000,
//!              IOAPIC 0xfec0_0000, LAPIC 0xfee0_0000, KVM TSS 0xfffb_d000)
//! 0x1_0000_0000 RAM above 4 GiB, when the guest has more than 3 GiB
//! ```

/// Start of the boot GDT.
pub const BOOT_GDT_START: u64 = 0x500;
/// Number of entries in the boot GDT (null, code, data, TSS).
pub const BOOT_GDT_ENTRIES: usize = 4;
/// Start of the (empty) boot IDT.
pub const BOOT_IDT_START: u64 = 0x520;

/// Where the PVH `hvm_start_info` goes.
pub const PVH_INFO_START: u64 = 0x6000;
/// Where the PVH module list (the initrd) goes.
pub const PVH_MODLIST_START: u64 = 0x6040;
/// Where the PVH memory map goes.
pub const PVH_MEMMAP_START: u64 = 0x6100;
/// Room for PVH memory map entries before the zero page.
pub const PVH_MEMMAP_MAX_ENTRIES: usize = ((ZERO_PAGE_START - PVH_MEMMAP_START) / 24) as usize;

/// The Linux zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;

/// Top-level page table (PML4) of the boot identity map.
pub const PML4_START: u64 = 0x9000;
/// The one page-directory-pointer table.
pub const PDPT_START: u64 = 0xa000;
/// The first of [`IDENTITY_MAP_GIB`] page directories (2 MiB pages).
pub const PD_START: u64 = 0xb000;
/// GiB of guest-physical space the boot page tables identity-map.
pub const IDENTITY_MAP_GIB: u64 = 4;

/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Most bytes of command line, including the terminating NUL
/// (`COMMAND_LINE_SIZE` of x86 Linux).
pub const CMDLINE_MAX_SIZE: usize = 2048;

/// The MP floating pointer and configuration table.
pub const MPTABLE_START: u64 = 0x9fc00;
/// End of the space reserved for the MP table.
pub const MPTABLE_END: u64 = 0xa0000;
/// End of the low 640 KiB of conventional memory.
pub const LOW_MEMORY_END: u64 = 0xa0000;

/// Kernels are loaded at or above 1 MiB.
pub const HIMEM_START: u64 = 0x10_0000;

/// Start of the MMIO gap below 4 GiB: no RAM from here to [`MMIO_GAP_END`].
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the MMIO gap (4 GiB); RAM continues here when the guest needs it.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// First address for virtio-mmio device windows, inside the MMIO gap.
pub const MMIO_DEVICES_START: u64 = 0xd000_0000;
/// Size of one virtio-mmio window (declared to the guest as `4K@addr:irq`).
pub const VIRTIO_MMIO_WINDOW: u64 = 0x1000;
/// The virtio-vsock device's window: the first one.
pub const VIRTIO_VSOCK_MMIO_BASE: u64 = MMIO_DEVICES_START;
/// The virtio-vsock device's interrupt line (GSI, edge, through an irqfd).
pub const VIRTIO_VSOCK_IRQ: u32 = 5;

/// The IOAPIC registers (KVM in-kernel irqchip).
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// The local APIC registers.
pub const APIC_START: u64 = 0xfee0_0000;
/// Three pages KVM needs for the TSS on Intel (`KVM_SET_TSS_ADDR`).
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;

/// The initrd is placed at a page boundary.
pub const INITRD_ALIGN: u64 = 0x1000;

/// The 8250 UART (COM1) I/O port base.
pub const SERIAL_PORT_BASE: u16 = 0x3f8;
/// Number of UART registers.
pub const SERIAL_PORT_LEN: u16 = 8;
/// The UART's interrupt line (GSI).
pub const SERIAL_IRQ: u32 = 4;
/// The i8042 controller: data port 0x60 .. command/status port 0x64.
pub const I8042_PORT_BASE: u16 = 0x60;
/// Ports covered by the i8042 (0x60..=0x64).
pub const I8042_PORT_LEN: u16 = 5;

/// Interrupt lines of the IOAPIC (and MP table entries).
pub const IOAPIC_PINS: u8 = 24;

// Layout invariants, checked at compile time.
const _: () = {
    assert!(MPTABLE_END <= LOW_MEMORY_END);
    assert!(BOOT_GDT_START + 8 * BOOT_GDT_ENTRIES as u64 <= BOOT_IDT_START);
    // The boot page tables cover all RAM below the MMIO gap.
    assert!(IDENTITY_MAP_GIB << 30 >= MMIO_GAP_START);
    assert!(PD_START + IDENTITY_MAP_GIB * 0x1000 <= CMDLINE_START);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_regions_do_not_overlap() {
        // (start, end) of every fixed structure, in address order.
        let gdt_end = BOOT_GDT_START + BOOT_GDT_ENTRIES as u64 * 8;
        let regions = [
            (BOOT_GDT_START, gdt_end),
            (BOOT_IDT_START, BOOT_IDT_START + 8),
            (PVH_INFO_START, PVH_MODLIST_START),
            (PVH_MODLIST_START, PVH_MEMMAP_START),
            (PVH_MEMMAP_START, ZERO_PAGE_START),
            (ZERO_PAGE_START, ZERO_PAGE_START + 0x1000),
            (BOOT_STACK_POINTER - 0x100, BOOT_STACK_POINTER),
            (PML4_START, PDPT_START),
            (PDPT_START, PD_START),
            (PD_START, PD_START + IDENTITY_MAP_GIB * 0x1000),
            (CMDLINE_START, CMDLINE_START + CMDLINE_MAX_SIZE as u64),
            (MPTABLE_START, MPTABLE_END),
        ];
        for w in regions.windows(2) {
            assert!(w[0].0 < w[0].1, "{w:x?}");
            assert!(w[0].1 <= w[1].0, "overlap: {w:x?}");
        }
    }

    #[test]
    fn devices_sit_in_the_gap() {
        for a in [
            MMIO_DEVICES_START,
            IOAPIC_START,
            APIC_START,
            KVM_TSS_ADDRESS,
        ] {
            assert!((MMIO_GAP_START..MMIO_GAP_END).contains(&a), "{a:#x}");
        }
    }
}
