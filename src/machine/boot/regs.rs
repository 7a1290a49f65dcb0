//! Initial vCPU state for the two entry protocols.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::loader::EntryProtocol;
use crate::machine::layout;

/// Errors writing boot page tables and descriptor tables.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("cannot write {what} into guest memory: {source}")]
    Write {
        what: &'static str,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

// GDT: null, 64-bit code, data, TSS, 32-bit code.
const GDT: [u64; 5] = [
    0,
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
    gdt_entry(0xc09b, 0, 0xfffff),
];
const CODE64: u16 = 1;
const DATA: u16 = 2;
const TSS: u16 = 3;
const CODE32: u16 = 4;

const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

fn segment(index: u16) -> kvm_segment {
    let e = GDT[index as usize];
    let flags = (e >> 40) & 0xf0ff;
    let limit = (((e >> 32) & 0x000f_0000) | (e & 0xffff)) as u32;
    let g = ((flags >> 15) & 1) as u8;
    kvm_segment {
        base: 0,
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector: index * 8,
        type_: (flags & 0xf) as u8,
        present: ((flags >> 7) & 1) as u8,
        dpl: ((flags >> 5) & 3) as u8,
        db: ((flags >> 14) & 1) as u8,
        s: ((flags >> 4) & 1) as u8,
        l: ((flags >> 13) & 1) as u8,
        g,
        avl: 0,
        unusable: u8::from((flags >> 7) & 1 == 0),
        padding: 0,
    }
}

fn write<T: vm_memory::ByteValued>(
    mem: &GuestMemoryMmap,
    v: T,
    addr: u64,
    what: &'static str,
) -> Result<(), RegsError> {
    mem.write_obj(v, GuestAddress(addr)).map_err(|e| RegsError::Write { what, source: e })
}

/// Writes the GDT, an empty IDT and (for long mode) identity page tables
/// covering the first GiB with 2 MiB pages.
pub fn write_tables(mem: &GuestMemoryMmap, protocol: EntryProtocol) -> Result<(), RegsError> {
    for (i, e) in GDT.iter().enumerate() {
        write(mem, *e, layout::GDT_ADDR + 8 * i as u64, "the GDT")?;
    }
    write(mem, 0u64, layout::IDT_ADDR, "the IDT")?;
    if protocol == EntryProtocol::Linux64 {
        write(mem, layout::PDPT_ADDR | 0x03, layout::PML4_ADDR, "the PML4")?;
        write(mem, layout::PD_ADDR | 0x03, layout::PDPT_ADDR, "the PDPT")?;
        for i in 0..512u64 {
            write(mem, (i << 21) | 0x83, layout::PD_ADDR + i * 8, "the page directory")?;
        }
    }
    Ok(())
}

/// Adjusts the special registers from KVM's defaults for the protocol.
pub fn setup_sregs(sregs: &mut kvm_sregs, protocol: EntryProtocol) {
    sregs.gdt.base = layout::GDT_ADDR;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = layout::IDT_ADDR;
    sregs.idt.limit = 7;
    let data = segment(DATA);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(TSS);
    match protocol {
        EntryProtocol::Linux64 => {
            sregs.cs = segment(CODE64);
            sregs.cr3 = layout::PML4_ADDR;
            sregs.cr4 |= CR4_PAE;
            sregs.cr0 |= CR0_PE | CR0_PG | CR0_ET;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        EntryProtocol::Pvh => {
            sregs.cs = segment(CODE32);
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
}

pub fn boot_regs(protocol: EntryProtocol, entry: u64) -> kvm_regs {
    let mut r = kvm_regs { rflags: 0x2, rip: entry, ..Default::default() };
    match protocol {
        EntryProtocol::Linux64 => {
            r.rsp = layout::BOOT_STACK;
            r.rbp = layout::BOOT_STACK;
            r.rsi = layout::ZERO_PAGE_ADDR;
        }
        EntryProtocol::Pvh => r.rbx = layout::PVH_INFO_ADDR,
    }
    r
}

pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_decode_to_flat_segments() {
        let cs = segment(CODE64);
        assert_eq!((cs.l, cs.db, cs.present, cs.type_, cs.selector), (1, 0, 1, 0xb, 8));
        assert_eq!(cs.limit, 0xffff_ffff);
        let cs32 = segment(CODE32);
        assert_eq!((cs32.l, cs32.db, cs32.selector), (0, 1, 32));
        let ds = segment(DATA);
        assert_eq!((ds.type_, ds.db, ds.s), (3, 1, 1));
        assert_eq!(segment(0).unusable, 1);
    }

    #[test]
    fn long_mode_and_pvh_sregs_differ_as_the_protocols_require() {
        let mut s = kvm_sregs::default();
        setup_sregs(&mut s, EntryProtocol::Linux64);
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cr3, layout::PML4_ADDR);
        let mut p = kvm_sregs::default();
        setup_sregs(&mut p, EntryProtocol::Pvh);
        assert_eq!(p.cr0 & CR0_PG, 0);
        assert_eq!(p.efer, 0);
        assert_eq!(boot_regs(EntryProtocol::Pvh, 0x1234).rbx, layout::PVH_INFO_ADDR);
        assert_eq!(boot_regs(EntryProtocol::Linux64, 0x1234).rsi, layout::ZERO_PAGE_ADDR);
    }

    #[test]
    fn page_tables_identity_map_first_gib() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_tables(&mem, EntryProtocol::Linux64).unwrap();
        let pde: u64 = mem.read_obj(GuestAddress(layout::PD_ADDR + 8 * 511)).unwrap();
        assert_eq!(pde, (511 << 21) | 0x83);
    }
}
