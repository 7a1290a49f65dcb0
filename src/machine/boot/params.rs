//! Boot information handed to the guest: the Linux zero page, or the PVH
//! `hvm_start_info` with its memory map.

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::loader::LoadedInitrd;
use crate::machine::layout::{self, E820Kind};

/// Errors writing boot information.
#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error("the memory map has {0} entries, more than the zero page holds")]
    TooManyE820(usize),
    #[error("cannot write boot information into guest memory: {0}")]
    Write(#[source] linux_loader::configurator::Error),
}

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x0100_0000;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

pub struct ZeroPageInput<'a> {
    pub mem_bytes: u64,
    pub cmdline_len: usize,
    pub setup_header: Option<setup_header>,
    pub initrd: Option<&'a LoadedInitrd>,
    /// Where the ACPI RSDP is (boot protocol 2.14's `acpi_rsdp_addr`).
    pub rsdp: Option<u64>,
}

/// Builds the zero page (`boot_params`) as a bootloader would.
pub fn build_zero_page(input: &ZeroPageInput<'_>) -> Result<boot_params, ParamsError> {
    let mut p = boot_params::default();
    if let Some(h) = input.setup_header {
        p.hdr = h;
    }
    p.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    p.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    p.hdr.header = KERNEL_HDR_MAGIC;
    p.hdr.cmd_line_ptr = layout::CMDLINE_ADDR as u32;
    p.hdr.cmdline_size = input.cmdline_len as u32;
    if p.hdr.kernel_alignment == 0 {
        p.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    }
    if let Some(rd) = input.initrd {
        p.hdr.ramdisk_image = rd.addr as u32;
        p.hdr.ramdisk_size = rd.size as u32;
    }
    let map = layout::e820_map(input.mem_bytes);
    if map.len() > p.e820_table.len() {
        return Err(ParamsError::TooManyE820(map.len()));
    }
    for (i, (addr, size, kind)) in map.iter().enumerate() {
        p.e820_table[i] = boot_e820_entry { addr: *addr, size: *size, r#type: *kind as u32 };
    }
    p.e820_entries = map.len() as u8;
    p.acpi_rsdp_addr = input.rsdp.unwrap_or(0);
    Ok(p)
}

pub fn write_zero_page(mem: &GuestMemoryMmap, p: &boot_params) -> Result<(), ParamsError> {
    let bp = BootParams::new::<boot_params>(p, GuestAddress(layout::ZERO_PAGE_ADDR));
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(&bp, mem).map_err(ParamsError::Write)
}

/// Writes `hvm_start_info`, its memory map and (for an initrd) one module.
pub fn write_pvh_info(
    mem: &GuestMemoryMmap,
    mem_bytes: u64,
    initrd: Option<&LoadedInitrd>,
    rsdp: Option<u64>,
) -> Result<(), ParamsError> {
    let memmap: Vec<hvm_memmap_table_entry> = layout::e820_map(mem_bytes)
        .into_iter()
        .map(|(addr, size, kind)| hvm_memmap_table_entry {
            addr,
            size,
            type_: if kind == E820Kind::Ram { 1 } else { 2 },
            reserved: 0,
        })
        .collect();
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: layout::CMDLINE_ADDR,
        memmap_paddr: layout::PVH_MEMMAP_ADDR,
        memmap_entries: memmap.len() as u32,
        rsdp_paddr: rsdp.unwrap_or(0),
        ..Default::default()
    };
    let modules_addr = layout::PVH_MEMMAP_ADDR + (memmap.len() * 24) as u64;
    if initrd.is_some() {
        info.nr_modules = 1;
        info.modlist_paddr = modules_addr;
    }
    let mut bp = BootParams::new::<hvm_start_info>(&info, GuestAddress(layout::PVH_INFO_ADDR));
    bp.set_sections::<hvm_memmap_table_entry>(&memmap, GuestAddress(layout::PVH_MEMMAP_ADDR));
    if let Some(rd) = initrd {
        let m = hvm_modlist_entry { paddr: rd.addr, size: rd.size, ..Default::default() };
        bp.set_modules::<hvm_modlist_entry>(&[m], GuestAddress(modules_addr));
    }
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&bp, mem).map_err(ParamsError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn zero_page_carries_cmdline_initrd_and_e820() {
        let rd = LoadedInitrd { addr: 0x700_0000, size: 1234 };
        let p = build_zero_page(&ZeroPageInput {
            mem_bytes: 128 << 20,
            cmdline_len: 42,
            setup_header: None,
            initrd: Some(&rd),
            rsdp: Some(layout::RSDP_ADDR),
        })
        .unwrap();
        assert_eq!({ p.acpi_rsdp_addr }, layout::RSDP_ADDR);
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.header }, 0x5372_6448);
        assert_eq!({ p.hdr.cmd_line_ptr }, layout::CMDLINE_ADDR as u32);
        assert_eq!({ p.hdr.cmdline_size }, 42);
        assert_eq!(({ p.hdr.ramdisk_image }, { p.hdr.ramdisk_size }), (0x700_0000, 1234));
        assert_eq!(p.e820_entries, 3);
        let last = p.e820_table[2];
        assert_eq!(({ last.addr }, { last.size }, { last.r#type }), (0x10_0000, (128 << 20) - 0x10_0000, 1));
    }

    #[test]
    fn pvh_info_is_written_with_magic_and_memmap() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        write_pvh_info(&mem, 16 << 20, None, Some(layout::RSDP_ADDR)).unwrap();
        let info: hvm_start_info = mem.read_obj(GuestAddress(layout::PVH_INFO_ADDR)).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(info.rsdp_paddr, layout::RSDP_ADDR);
        assert_eq!(info.memmap_entries, 3);
        let e: hvm_memmap_table_entry = mem.read_obj(GuestAddress(layout::PVH_MEMMAP_ADDR + 48)).unwrap();
        assert_eq!((e.addr, e.type_), (0x10_0000, 1));
    }
}
