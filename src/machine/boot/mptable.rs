//! The Intel MultiProcessor table, so a guest without ACPI finds its CPUs,
//! the IOAPIC and how legacy and PCI interrupts are routed.
//!
//! Written from the MP specification 1.4; Linux scans the EBDA for the
//! floating pointer ("_MP_").

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::machine::layout;

/// Errors building the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    #[error("the MP table for {0} vCPUs does not fit in the {max} bytes reserved for it", max = layout::MPTABLE_MAX)]
    TooBig(u8),
    #[error("cannot write the MP table into guest memory: {0}")]
    Write(#[source] vm_memory::GuestMemoryError),
}

pub const APIC_VERSION: u8 = 0x14;
pub const PCI_BUS_ID: u8 = 0;
pub const ISA_BUS_ID: u8 = 1;
/// Number of IOAPIC pins; GSIs 16..23 are for PCI INTx.
pub const IOAPIC_PINS: u8 = 24;
/// Legacy ISA interrupts, IRQ 0..15, each on the IOAPIC pin of its number.
pub const ISA_IRQS: u8 = 16;
/// Interrupt entry types (MP spec 1.4, table 4-7).
const MP_INT: u8 = 0;
const MP_NMI: u8 = 1;
const MP_EXTINT: u8 = 3;

/// A PCI function's INTx pin routed to an IOAPIC input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciIntx {
    pub slot: u8,
    /// 1 = INTA ... 4 = INTD, as in config register 0x3D.
    pub pin: u8,
    pub gsi: u8,
}

/// Builds the table bytes (floating pointer followed by the configuration
/// table) for a table placed at `base`.
pub fn build(base: u64, cpus: u8, pci: &[PciIntx]) -> Result<Vec<u8>, MpTableError> {
    let ioapic_id = cpus;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..cpus {
        // processor entry: type 0, apic id, version, flags (enabled, BSP), signature, features
        let flags = 1 | if cpu == 0 { 2 } else { 0 };
        entries.extend_from_slice(&[0, cpu, APIC_VERSION, flags]);
        entries.extend_from_slice(&0x600u32.to_le_bytes());
        entries.extend_from_slice(&0x201u32.to_le_bytes()); // FPU | APIC
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    for (id, name) in [(PCI_BUS_ID, b"PCI   "), (ISA_BUS_ID, b"ISA   ")] {
        entries.extend_from_slice(&[1, id]);
        entries.extend_from_slice(name);
        count += 1;
    }
    entries.extend_from_slice(&[2, ioapic_id, APIC_VERSION, 1]);
    entries.extend_from_slice(&(layout::IOAPIC_ADDR as u32).to_le_bytes());
    count += 1;
    // ISA IRQ n is an ordinary (INT) interrupt on IOAPIC pin n, IRQ 0
    // included: KVM's default routing sends GSI n to PIC input n and IOAPIC
    // pin n, and its in-kernel PIT raises GSI 0. An ExtINT entry for pin 0
    // (as on old chipsets with the 8259 cascaded into the IOAPIC) makes
    // Linux's check_timer() take the "ExtINT not setup in hardware" path,
    // which oopses on real KVM; the virtual wire stays on LINT0 below.
    for irq in 0..ISA_IRQS {
        entries.extend_from_slice(&[3, MP_INT, 0, 0, ISA_BUS_ID, irq, ioapic_id, irq]);
        count += 1;
    }
    for p in pci {
        // PCI INTx: level-triggered, active low (flags 0b1111).
        let src = (p.slot << 2) | (p.pin.saturating_sub(1) & 3);
        entries.extend_from_slice(&[3, MP_INT, 0x0f, 0, PCI_BUS_ID, src, ioapic_id, p.gsi]);
        count += 1;
    }
    // Local interrupts: LINT0 ExtINT, LINT1 NMI, to every local APIC.
    entries.extend_from_slice(&[4, MP_EXTINT, 0, 0, ISA_BUS_ID, 0, 0xff, 0]);
    entries.extend_from_slice(&[4, MP_NMI, 0, 0, ISA_BUS_ID, 0, 0xff, 1]);
    count += 2;

    let table_addr = base + 16;
    let mut table = Vec::with_capacity(44 + entries.len());
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum, below
    table.extend_from_slice(b"KENNEL  ");
    table.extend_from_slice(b"000000000000");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&(layout::LAPIC_ADDR as u32).to_le_bytes());
    table.extend_from_slice(&[0; 4]); // extended table length + checksum, reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut fp = Vec::with_capacity(16);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&(table_addr as u32).to_le_bytes());
    fp.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // length in 16-byte units, rev 1.4, checksum, features
    fp[10] = checksum(&fp);

    fp.extend_from_slice(&table);
    if fp.len() as u64 > layout::MPTABLE_MAX {
        return Err(MpTableError::TooBig(cpus));
    }
    Ok(fp)
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

pub fn write(mem: &GuestMemoryMmap, cpus: u8, pci: &[PciIntx]) -> Result<(), MpTableError> {
    let bytes = build(layout::MPTABLE_ADDR, cpus, pci)?;
    mem.write_slice(&bytes, GuestAddress(layout::MPTABLE_ADDR)).map_err(MpTableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn checksums_and_counts_are_right() {
        let pci = [PciIntx { slot: 4, pin: 1, gsi: 16 }];
        let t = build(layout::MPTABLE_ADDR, 2, &pci).unwrap();
        assert_eq!(&t[0..4], b"_MP_");
        assert_eq!(sum(&t[0..16]), 0);
        let addr = u32::from_le_bytes(t[4..8].try_into().unwrap()) as u64;
        assert_eq!(addr, layout::MPTABLE_ADDR + 16);
        let table = &t[16..];
        assert_eq!(&table[0..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(sum(table), 0);
        let count = u16::from_le_bytes([table[34], table[35]]);
        // 2 cpus + 2 buses + ioapic + 16 ISA + 1 PCI + 2 local
        assert_eq!(count, 24);
        // The PCI INTx entry names slot 4 pin A on the PCI bus, to GSI 16.
        let pos = table.windows(8).position(|w| w == [3, 0, 0x0f, 0, PCI_BUS_ID, 4 << 2, 2, 16]);
        assert!(pos.is_some(), "PCI routing entry missing");
    }

    #[test]
    fn only_first_cpu_is_bsp() {
        let t = build(layout::MPTABLE_ADDR, 3, &[]).unwrap();
        let entries = &t[16 + 44..];
        let flags: Vec<u8> = (0..3).map(|i| entries[i * 20 + 3]).collect();
        assert_eq!(flags, vec![3, 1, 1]);
    }

    /// The I/O interrupt entries (type 3) of a table, as
    /// (kind, bus, source irq, destination pin).
    fn io_interrupts(t: &[u8]) -> Vec<(u8, u8, u8, u8)> {
        let table = &t[16..];
        let count = u16::from_le_bytes([table[34], table[35]]);
        let mut at = 44;
        let mut out = Vec::new();
        for _ in 0..count {
            let len = if table[at] == 0 { 20 } else { 8 };
            if table[at] == 3 {
                out.push((table[at + 1], table[at + 4], table[at + 5], table[at + 7]));
            }
            at += len;
        }
        assert_eq!(at, table.len(), "entries fill the table exactly");
        out
    }

    /// The rule real KVM needs (Linux's check_timer() oopses otherwise):
    /// every ISA IRQ, the timer's IRQ 0 included, is an ordinary INT entry
    /// on the IOAPIC pin of the same number, and nothing is ExtINT through
    /// the IOAPIC (the PIC's virtual wire is LINT0, a local entry).
    #[test]
    fn every_isa_irq_is_an_int_entry_on_its_own_pin() {
        let t = build(layout::MPTABLE_ADDR, 1, &[PciIntx { slot: 5, pin: 1, gsi: 17 }]).unwrap();
        let io = io_interrupts(&t);
        let isa: Vec<_> = io.iter().filter(|e| e.1 == ISA_BUS_ID).collect();
        assert_eq!(isa.len(), 16);
        for irq in 0..16u8 {
            assert!(isa.contains(&&(MP_INT, ISA_BUS_ID, irq, irq)), "ISA IRQ {irq}: {isa:?}");
        }
        assert!(io.iter().all(|e| e.0 == MP_INT), "no ExtINT/NMI/SMI through the IOAPIC: {io:?}");
        // PCI INTx goes to pins above the ISA range.
        assert!(io.contains(&(MP_INT, PCI_BUS_ID, 5 << 2, 17)), "{io:?}");
        assert!(io.iter().filter(|e| e.1 == PCI_BUS_ID).all(|e| e.3 >= ISA_IRQS && e.3 < IOAPIC_PINS));
    }

    #[test]
    fn too_many_cpus_is_an_error_not_a_panic() {
        assert!(matches!(build(layout::MPTABLE_ADDR, 255, &[]), Err(MpTableError::TooBig(255))));
        assert!(build(layout::MPTABLE_ADDR, crate::machine::boot::MAX_VCPUS, &[]).is_ok());
    }
}
