//! The MP table builder, checked by parsing what it writes as Linux does
//! (`arch/x86/kernel/mpparse.c`): the floating pointer, the configuration
//! table's header and checksum, and every entry walked by its type.
//!
//! Inputs are what the VMM can hand the builder: 1..=255 vCPUs (the CLI
//! caps at 32; the builder must refuse what does not fit, not truncate it)
//! and PCI INTx routes as the PCI bus makes them (slot < 32, pin 1..=4,
//! GSI < 24).
//!
//! Invariants:
//! - either `TooBig` or a table that fits the reserved region;
//! - both checksums sum to zero; the pointer points at the table; the
//!   header's length and entry count match the entries walked;
//! - one processor entry per vCPU, exactly one BSP, local APIC ids 0..n;
//!   one IOAPIC whose id no CPU uses; every ISA IRQ 0..15 on its own pin;
//!   each PCI route once, as given.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

use kennel::machine::boot::mptable::{build, MpTableError, PciIntx, ISA_BUS_ID, ISA_IRQS, PCI_BUS_ID};
use kennel::machine::layout::MPTABLE_MAX;

#[derive(Arbitrary, Debug)]
struct Input {
    cpus: u8,
    base_page: u8,
    pci: Vec<(u8, u8, u8)>,
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
}

fuzz_target!(|inp: Input| {
    let cpus = inp.cpus.max(1);
    let pci: Vec<PciIntx> = inp
        .pci
        .iter()
        .take(32)
        .map(|&(slot, pin, gsi)| PciIntx { slot: slot % 32, pin: pin % 4 + 1, gsi: 16 + gsi % 8 })
        .collect();
    let base = 0x9_0000 + u64::from(inp.base_page) * 16;
    let t = match build(base, cpus, &pci) {
        Err(MpTableError::TooBig(n)) => {
            assert_eq!(n, cpus);
            return;
        }
        Err(e) => panic!("build failed: {e}"),
        Ok(t) => t,
    };
    assert!(t.len() as u64 <= MPTABLE_MAX, "{} bytes > {MPTABLE_MAX}", t.len());

    // Floating pointer: 16 bytes, checksum, pointer to the table right after.
    assert_eq!(&t[..4], b"_MP_");
    assert_eq!(sum(&t[..16]), 0, "floating pointer checksum");
    let ptr = u64::from(u32::from_le_bytes(t[4..8].try_into().unwrap()));
    assert_eq!(ptr, base + 16);
    assert_eq!(t[8], 1, "pointer length in 16-byte units");

    // Configuration table header.
    let table = &t[16..];
    assert_eq!(&table[..4], b"PCMP");
    let len = usize::from(u16::from_le_bytes([table[4], table[5]]));
    assert_eq!(len, table.len(), "header length");
    assert_eq!(sum(table), 0, "table checksum");
    let count = usize::from(u16::from_le_bytes([table[34], table[35]]));

    // Walk the entries by type, as mpparse does.
    let (mut at, mut n) = (44, 0);
    let (mut apic_ids, mut bsps, mut ioapic) = (Vec::new(), 0, None);
    let mut isa = [0u8; 16];
    let mut routes = Vec::new();
    while at < table.len() {
        let size = match table[at] {
            0 => 20,
            1..=4 => 8,
            other => panic!("entry type {other} at offset {at}"),
        };
        assert!(at + size <= table.len(), "entry at {at} runs past the end");
        let e = &table[at..at + size];
        match e[0] {
            0 => {
                assert_ne!(e[3] & 1, 0, "processor {} disabled", e[1]);
                bsps += usize::from(e[3] & 2 != 0);
                apic_ids.push(e[1]);
            }
            2 => {
                assert!(ioapic.replace(e[1]).is_none(), "two IOAPICs");
            }
            3 if e[4] == ISA_BUS_ID => {
                assert_eq!(e[5], e[7], "ISA IRQ {} on pin {}", e[5], e[7]);
                isa[usize::from(e[5] % 16)] += 1;
            }
            3 if e[4] == PCI_BUS_ID => routes.push((e[5] >> 2, (e[5] & 3) + 1, e[7])),
            _ => {}
        }
        at += size;
        n += 1;
    }
    assert_eq!(n, count, "header entry count");
    assert_eq!(apic_ids, (0..cpus).collect::<Vec<_>>(), "local APIC ids");
    assert_eq!(bsps, 1, "boot processors");
    let ioapic = ioapic.expect("an IOAPIC");
    assert!(!apic_ids.contains(&ioapic), "IOAPIC id {ioapic} is a CPU's");
    assert_eq!(isa, [1; ISA_IRQS as usize], "ISA IRQs");
    let want: Vec<_> = pci.iter().map(|p| (p.slot, p.pin, p.gsi)).collect();
    assert_eq!(routes, want, "PCI routes");
});
