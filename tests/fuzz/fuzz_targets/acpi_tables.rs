//! The ACPI table builder, checked by walking what it writes as an OS
//! does: the RSDP (both checksums, revision 2), the XSDT and each table it
//! points at (signature, length inside the blob, checksum), the FADT's
//! X_DSDT, and the MADT's entries.
//!
//! Inputs are what the VMM can hand the builder: 1..=255 vCPUs (the CLI
//! caps at 32) and PCI INTx routes as the PCI bus makes them (slot < 32,
//! pin 1..=4, GSI 16..=23).
//!
//! Invariants: either `TooBig` or a blob that fits the reserved region;
//! every table reachable and intact; one enabled local APIC per vCPU with
//! ids 0..n and one IOAPIC whose id no CPU uses; every PCI route present
//! in the DSDT as its `_PRT` package (address, pin, source 0, GSI).
#![no_main]

use std::collections::HashSet;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

use kennel::machine::boot::acpi::{build, AcpiError, AcpiInput};
use kennel::machine::boot::mptable::PciIntx;
use kennel::machine::layout::{ACPI_MAX, IOAPIC_ADDR, RSDP_ADDR};

#[derive(Arbitrary, Debug)]
struct Input {
    cpus: u8,
    pci: Vec<(u8, u8, u8)>,
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn table<'a>(blob: &'a [u8], addr: u64, sig: &[u8; 4]) -> &'a [u8] {
    assert!(addr >= RSDP_ADDR, "{sig:?} at {addr:#x}, below the blob");
    let at = (addr - RSDP_ADDR) as usize;
    assert!(at + 36 <= blob.len(), "{sig:?} header outside the blob");
    assert_eq!(&blob[at..at + 4], sig);
    let len = u32_at(blob, at + 4) as usize;
    assert!(len >= 36 && at + len <= blob.len(), "{sig:?} length {len}");
    let t = &blob[at..at + len];
    assert_eq!(sum(t), 0, "{sig:?} checksum");
    t
}

/// The AML encoding of an integer, as the builder's crate writes it.
fn aml_int(v: u32) -> Vec<u8> {
    match v {
        0 => vec![0x00],
        1 => vec![0x01],
        2..=0xff => vec![0x0a, v as u8],
        0x100..=0xffff => [vec![0x0b], (v as u16).to_le_bytes().to_vec()].concat(),
        _ => [vec![0x0c], v.to_le_bytes().to_vec()].concat(),
    }
}

fuzz_target!(|inp: Input| {
    let cpus = inp.cpus.max(1);
    let pci: Vec<PciIntx> = inp
        .pci
        .iter()
        .take(32)
        .map(|&(slot, pin, gsi)| PciIntx { slot: slot % 32, pin: pin % 4 + 1, gsi: 16 + gsi % 8 })
        .collect();
    let blob = match build(RSDP_ADDR, &AcpiInput { cpus, pci: &pci }) {
        Err(AcpiError::TooBig { size }) => {
            assert!(size as u64 > ACPI_MAX);
            return;
        }
        Err(e) => panic!("build failed: {e}"),
        Ok(b) => b,
    };
    assert!(blob.len() as u64 <= ACPI_MAX);

    assert_eq!(&blob[..8], b"RSD PTR ");
    assert_eq!(sum(&blob[..20]), 0);
    assert_eq!(sum(&blob[..36]), 0);
    assert_eq!(blob[15], 2);
    let xsdt = table(&blob, u64_at(&blob, 24), b"XSDT");
    assert_eq!((xsdt.len() - 36) % 8, 0);
    let entries: Vec<u64> = (36..xsdt.len()).step_by(8).map(|at| u64_at(xsdt, at)).collect();
    assert_eq!(entries.len(), 2);
    let fadt = table(&blob, entries[0], b"FACP");
    assert!(fadt.len() >= 148);
    let dsdt = table(&blob, u64_at(fadt, 140), b"DSDT");
    let madt = table(&blob, entries[1], b"APIC");

    let (mut lapics, mut ioapics) = (Vec::new(), Vec::new());
    let mut at = 44;
    while at < madt.len() {
        assert!(at + 2 <= madt.len());
        let (kind, len) = (madt[at], usize::from(madt[at + 1]));
        assert!(len >= 2 && at + len <= madt.len(), "MADT entry {kind} of {len} bytes at {at}");
        match kind {
            0 => lapics.push((madt[at + 2], madt[at + 3], u32_at(madt, at + 4))),
            1 => ioapics.push((madt[at + 2], u32_at(madt, at + 4))),
            k => panic!("MADT entry type {k}"),
        }
        at += len;
    }
    let want: Vec<_> = (0..cpus).map(|i| (i, i, 1)).collect();
    assert_eq!(lapics, want);
    assert_eq!(ioapics, vec![(cpus, IOAPIC_ADDR as u32)]);

    // Every short package in the DSDT, found once: scanning the DSDT per
    // route (a slice compare at every offset) cost most of each execution
    // under the fuzzer's compare hooks. A short PkgLength is one byte (< 64)
    // counting itself and what follows it.
    let packages: HashSet<&[u8]> = (0..dsdt.len())
        .filter(|&i| dsdt[i] == 0x12)
        .filter_map(|i| {
            let len = usize::from(*dsdt.get(i + 1)?);
            (len < 64).then(|| dsdt.get(i..i + 1 + len)).flatten()
        })
        .collect();
    for p in &pci {
        let addr = (u32::from(p.slot) << 16) | 0xffff;
        let mut pkg = vec![0x12, 0x00, 0x04]; // PackageOp, length (patched below), 4 elements
        let body: Vec<u8> =
            [aml_int(addr), aml_int(u32::from(p.pin - 1)), vec![0x00], aml_int(u32::from(p.gsi))].concat();
        pkg[1] = (body.len() + 2) as u8;
        pkg.extend(body);
        assert!(packages.contains(&pkg[..]), "no _PRT package for {p:?}");
    }
});
