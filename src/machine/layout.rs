//! The machine's address map, in one place: guest physical memory, the I/O
//! ports and the PCI slots with their BARs and interrupts.
//!
//! ```text
//! 0x0000_0500  GDT                      0x0000_9000  PML4 / PDPT / PD (1 GiB identity map)
//! 0x0000_6000  PVH hvm_start_info       0x0002_0000  kernel command line
//! 0x0000_7000  zero page (boot_params)  0x0009_fc00  MP table (EBDA, scanned by Linux)
//! 0x0000_8ff0  boot stack               0x000e_0000  ACPI: RSDP, then DSDT, FADT, MADT, XSDT
//!                                       0x000f_fff0  reset vector: asks kennel for a reset
//!                                       0x0010_0000  high memory (kernel, initrd at the top)
//! 0xc000_0000 .. 0xfec0_0000  32-bit MMIO hole: PCI BARs (RAM above it moves past 4 GiB)
//! 0xfec0_0000  IOAPIC                   0xfee0_0000  local APIC
//! ```
//!
//! | what | where | interrupt |
//! |---|---|---|
//! | i8042 (reset line only) | ports 0x60-0x64 | - |
//! | COM1 8250 UART | ports 0x3f8-0x3ff | IRQ 4 (irqfd) |
//! | PCI config mechanism #1 | ports 0xcf8-0xcff | - |
//! | ACPI sleep control, sleep status, reset, GED event (not with --no-acpi) | ports 0x600-0x603 | GED: GSI 18, edge (irqfd) |
//! | 00:00.0 host bridge | PCI | - |
//! | 00:04.0 Intel 6300ESB | PCI, BAR0 at 0xc000_0000 (16 bytes, fixed) | INTA -> GSI 16 |
//! | 00:05.0 virtio-blk (with --rootfs) | PCI, BAR0 at 0xc000_4000 (16 KiB, fixed) | INTA -> GSI 17 |

pub const GDT_ADDR: u64 = 0x500;
pub const IDT_ADDR: u64 = 0x520;
pub const PVH_INFO_ADDR: u64 = 0x6000;
pub const PVH_MEMMAP_ADDR: u64 = 0x6040;
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
pub const BOOT_STACK: u64 = 0x8ff0;
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
pub const PD_ADDR: u64 = 0xb000;
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Linux's x86 COMMAND_LINE_SIZE.
pub const CMDLINE_MAX: usize = 2048;
pub const EBDA_START: u64 = 0x9fc00;
pub const MPTABLE_ADDR: u64 = EBDA_START;
pub const MPTABLE_MAX: u64 = 0x400;
/// The RSDP, on a 16-byte boundary in the BIOS area Linux scans for it;
/// the other tables follow it, up to `ACPI_MAX` bytes in all.
pub const RSDP_ADDR: u64 = 0xe_0000;
pub const ACPI_MAX: u64 = 0x1_0000;
/// The x86 reset vector (F000:FFF0): see `boot/reset_vector.rs`.
pub const RESET_VECTOR: u64 = 0xf_fff0;
pub const HIMEM_START: u64 = 0x10_0000;
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
pub const PCI_MMIO_END: u64 = 0xfec0_0000;
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
pub const LAPIC_ADDR: u64 = 0xfee0_0000;
pub const FOUR_GIB: u64 = 1 << 32;
/// Where KVM keeps its TSS (three pages): above every device and below the
/// 4 GiB line, where no RAM is.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;

/// COM1: ports 0x3f8-0x3ff, ISA IRQ 4.
pub const SERIAL_PORT: u64 = 0x3f8;
pub const SERIAL_PORT_LEN: u64 = 8;
pub const SERIAL_IRQ: u32 = 4;
/// The hardware-reduced ACPI registers (`kennel_devices::acpi`).
pub const ACPI_PORT: u64 = 0x600;
/// The Generic Event Device's interrupt: above the ISA range, apart from
/// the PCI INTx GSIs.
pub const GED_GSI: u32 = 18;
/// The i8042's data and command ports (0x60-0x64), for its reset line.
pub const I8042_PORT: u64 = 0x60;
pub const I8042_PORT_LEN: u64 = 5;

/// Where a PCI function sits: its slot on bus 0, the GSI its INTA is wired
/// to (IOAPIC pins 16 and up, so no ISA IRQ is shared), and where its BAR0
/// is placed. BAR sizes come from the device itself when it is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciSlot {
    pub slot: u8,
    pub gsi: u8,
    pub bar0: u32,
}

/// 00:00.0, the host bridge: no BAR, no interrupt.
pub const HOST_BRIDGE_SLOT: u8 = 0;
/// 00:04.0, the 6300ESB: BAR0 (16 bytes) at the start of the MMIO hole.
pub const ESB: PciSlot = PciSlot { slot: 4, gsi: 16, bar0: MMIO_HOLE_START as u32 };
/// 00:05.0, virtio-blk with `--rootfs`: BAR0 (16 KiB, aligned to its size)
/// after the 6300ESB's.
pub const BLK: PciSlot = PciSlot { slot: 5, gsi: 17, bar0: MMIO_HOLE_START as u32 + 0x4000 };

// PCI BARs sit in the MMIO hole, aligned to their size, apart; INTx GSIs
// are above the ISA range and not shared.
const ESB_BAR0_SIZE: u32 = kennel_devices::i6300esb::regs::BAR0_SIZE;
const BLK_BAR0_SIZE: u32 = kennel_devices::virtio_blk::BAR0_SIZE;
const _: () = assert!(ESB.bar0 as u64 >= MMIO_HOLE_START && ESB.bar0 % ESB_BAR0_SIZE == 0);
const _: () = assert!(BLK.bar0 % BLK_BAR0_SIZE == 0 && (BLK.bar0 + BLK_BAR0_SIZE) as u64 <= PCI_MMIO_END);
const _: () = assert!(ESB.bar0 + ESB_BAR0_SIZE <= BLK.bar0);
const _: () = assert!(ESB.slot != BLK.slot && ESB.slot != HOST_BRIDGE_SLOT && BLK.slot != HOST_BRIDGE_SLOT);
const _: () = assert!(ESB.gsi >= 16 && BLK.gsi >= 16 && ESB.gsi != BLK.gsi);
const _: () =
    assert!(GED_GSI >= 16 && GED_GSI < 24 && GED_GSI != ESB.gsi as u32 && GED_GSI != BLK.gsi as u32);
// The ACPI tables stay in the reserved part of the memory map, below 1 MiB.
const _: () =
    assert!(RSDP_ADDR >= EBDA_START + 0x400 && RSDP_ADDR + ACPI_MAX <= HIMEM_START && RSDP_ADDR % 16 == 0);

// The boot stack grows down from between the zero page and the page tables.
const _: () = assert!(BOOT_STACK < PML4_ADDR && BOOT_STACK > ZERO_PAGE_ADDR + 0x1000);

/// The smallest guest that fits our boot structures plus a kernel.
pub const MIN_MEMORY: u64 = 8 << 20;

/// Guest RAM regions `(start, len)`: RAM up to the MMIO hole, and whatever
/// does not fit there continues above 4 GiB.
pub fn ram_regions(mem_bytes: u64) -> Vec<(u64, u64)> {
    let low = mem_bytes.min(MMIO_HOLE_START);
    let mut regions = vec![(0, low)];
    if mem_bytes > low {
        regions.push((FOUR_GIB, mem_bytes - low));
    }
    regions
}

/// The e820 kind of a range handed to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum E820Kind {
    Ram = 1,
    Reserved = 2,
}

/// The memory map the guest is told about. The MMIO hole is left out on
/// purpose: Linux places PCI resources in the largest gap below 4 GiB.
pub fn e820_map(mem_bytes: u64) -> Vec<(u64, u64, E820Kind)> {
    let mut map =
        vec![(0, EBDA_START, E820Kind::Ram), (EBDA_START, 0x10_0000 - EBDA_START, E820Kind::Reserved)];
    for (start, len) in ram_regions(mem_bytes) {
        let (start, len) = if start == 0 { (HIMEM_START, len - HIMEM_START) } else { (start, len) };
        map.push((start, len, E820Kind::Ram));
    }
    map
}

/// Top of RAM below the MMIO hole (exclusive).
pub fn low_ram_end(mem_bytes: u64) -> u64 {
    mem_bytes.min(MMIO_HOLE_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_one_region_and_low_map() {
        let m = 128 << 20;
        assert_eq!(ram_regions(m), vec![(0, m)]);
        let e = e820_map(m);
        assert_eq!(e[0], (0, 0x9fc00, E820Kind::Ram));
        assert_eq!(e[1].2, E820Kind::Reserved);
        assert_eq!(e[2], (0x10_0000, m - 0x10_0000, E820Kind::Ram));
        assert_eq!(e.len(), 3);
    }

    #[test]
    fn large_guest_skips_the_mmio_hole() {
        let m = 4 << 30;
        assert_eq!(ram_regions(m), vec![(0, MMIO_HOLE_START), (FOUR_GIB, m - MMIO_HOLE_START)]);
        let e = e820_map(m);
        assert_eq!(e.last(), Some(&(FOUR_GIB, 1 << 30, E820Kind::Ram)));
        for (s, l, _) in e {
            assert!(s + l <= MMIO_HOLE_START || s >= FOUR_GIB, "map entry {s:#x}+{l:#x} overlaps the hole");
        }
    }

    #[test]
    fn fixed_structures_do_not_overlap() {
        let mut v = [
            (GDT_ADDR, 0x20),
            (IDT_ADDR, 8),
            (PVH_INFO_ADDR, 0x40),
            (PVH_MEMMAP_ADDR, 0x100),
            (ZERO_PAGE_ADDR, 0x1000),
            (PML4_ADDR, 0x1000),
            (PDPT_ADDR, 0x1000),
            (PD_ADDR, 0x1000),
            (CMDLINE_ADDR, CMDLINE_MAX as u64),
            (MPTABLE_ADDR, MPTABLE_MAX),
            (RSDP_ADDR, ACPI_MAX),
            (RESET_VECTOR, 16),
        ];
        v.sort();
        for w in v.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{:#x?} overlaps {:#x?}", w[0], w[1]);
        }
    }
}
