//! The ACPI tables: RSDP, XSDT, FADT, MADT and a DSDT, built with rust-vmm's
//! `acpi_tables` crate and written below 1 MiB, where Linux finds the RSDP
//! by scanning (the zero page and PVH start info also point at it).
//!
//! Hardware-reduced ACPI, as cloud-hypervisor and Firecracker do it: no PM1
//! blocks, PM timer, GPE blocks or SCI to emulate, just the four one-byte
//! registers of `kennel_devices::acpi` (sleep control and status, reset, the
//! GED event register). Linux on a hardware-reduced platform also drops the
//! legacy PIC and the PIT-driven timer set-up (`acpi_generic_reduced_hw_init`),
//! so the `check_timer()` path that oopsed on real KVM is not reached; it
//! runs on the local APIC's TSC-deadline timer kennel offers.
//!
//! The DSDT describes what a hardware-reduced OS cannot find by itself:
//! - `\_SB.PCI0`, the root bridge (bus 0, config ports 0xCF8, the MMIO hole
//!   as its window) with a `_PRT` from the same INTx list as the MP table;
//! - `\_SB.COM1`, so the UART's IRQ 4 gets mapped (there are no legacy IRQs);
//! - `\_SB.PWRB`, the power button, and `\_SB.GED_`, whose `_EVT` reads the
//!   event register and notifies the button;
//! - `\_S5`, the soft-off sleep type.
//!
//! The MADT lists the local APICs and the IOAPIC. It needs no interrupt
//! source override: ISA IRQ n is on IOAPIC pin n, as in the MP table.

use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use kennel_devices::acpi as regs;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::mptable::PciIntx;
use crate::machine::layout;

/// Errors building the ACPI tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("the ACPI tables ({size} bytes) do not fit in the {max} bytes reserved for them", max = layout::ACPI_MAX)]
    TooBig { size: usize },
    #[error("cannot write the ACPI tables into guest memory: {0}")]
    Write(#[source] vm_memory::GuestMemoryError),
}

const OEM_ID: [u8; 6] = *b"KENNEL";
const OEM_REVISION: u32 = 1;
/// FADT "Hypervisor Vendor Identity".
const HYPERVISOR_ID: [u8; 8] = *b"KENNEL\0\0";
/// IA-PC boot architecture flags (ACPI 6.5, table 5.11): no VGA, no MSI, no
/// ASPM control, no CMOS RTC, and neither legacy devices nor an 8042 to
/// probe (kennel's i8042 is only a reset line).
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
const IAPC_MSI_NOT_SUPPORTED: u16 = 1 << 3;
const IAPC_PCIE_ASPM_CONTROLS: u16 = 1 << 4;
const IAPC_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;

/// What the tables describe that varies between VMs.
pub struct AcpiInput<'a> {
    pub cpus: u8,
    pub pci: &'a [PciIntx],
}

fn io_register(port: u64) -> GAS {
    GAS::new(AddressSpace::SystemIo, 8, 0, AccessSize::ByteAccess, port)
}

fn bytes(a: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    a.to_aml_bytes(&mut v);
    v
}

/// AML already serialised, to nest in another object: the crate's objects
/// borrow their children, so each device is serialised where it is built.
struct Raw(Vec<u8>);
impl Aml for Raw {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

/// The DSDT's AML body.
fn dsdt_body(pci: &[PciIntx]) -> Vec<u8> {
    use aml::{
        AddressSpace as Space, AddressSpaceCacheable, Device, EISAName, Equal, Field, FieldAccessType,
        FieldEntry, FieldLockRule, FieldUpdateRule, If, Interrupt, Local, Method, Name, Notify, OpRegion,
        OpRegionSpace, Package, Path, ResourceTemplate, Scope, Store, IO, ZERO,
    };

    // The root bridge: bus 0 only, the config ports, all of the I/O space
    // but them, and the MMIO hole up to the IOAPIC (where the BARs are).
    let buses = Space::new_bus_number(0u16, 0u16);
    let cf8 = IO::new(0xcf8, 0xcf8, 1, 8);
    let io_low = Space::new_io(0u16, 0xcf7u16, None);
    let io_high = Space::new_io(0xd00u16, 0xffffu16, None);
    let mmio = Space::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        layout::MMIO_HOLE_START as u32,
        (layout::PCI_MMIO_END - 1) as u32,
        None,
    );
    let pci_crs = ResourceTemplate::new(vec![&buses, &cf8, &io_low, &io_high, &mmio]);
    // _PRT: (slot << 16 | 0xFFFF, pin 0..3, source 0 = a GSI, the GSI).
    let routes: Vec<(u32, u8, u32)> = pci
        .iter()
        .map(|p| ((u32::from(p.slot) << 16) | 0xffff, p.pin.saturating_sub(1) & 3, p.gsi.into()))
        .collect();
    let route_pkgs: Vec<Package> =
        routes.iter().map(|(addr, pin, gsi)| Package::new(vec![addr, pin, &ZERO, gsi])).collect();
    let prt = Package::new(route_pkgs.iter().map(|p| p as &dyn Aml).collect());
    let (hid_pcie, cid_pci) = (EISAName::new("PNP0A08"), EISAName::new("PNP0A03"));
    let pci0 = Raw(bytes(&Device::new(
        Path::new("PCI0"),
        vec![
            &Name::new(Path::new("_HID"), &hid_pcie),
            &Name::new(Path::new("_CID"), &cid_pci),
            &Name::new(Path::new("_ADR"), &ZERO),
            &Name::new(Path::new("_SEG"), &ZERO),
            &Name::new(Path::new("_UID"), &ZERO),
            &Name::new(Path::new("_BBN"), &ZERO),
            &Name::new(Path::new("_CRS"), &pci_crs),
            &Name::new(Path::new("_PRT"), &prt),
        ],
    )));

    let uart = layout::SERIAL_PORT as u16;
    let uart_io = IO::new(uart, uart, 1, layout::SERIAL_PORT_LEN as u8);
    let uart_irq = Interrupt::new(true, true, false, false, layout::SERIAL_IRQ);
    let uart_crs = ResourceTemplate::new(vec![&uart_io, &uart_irq]);
    let hid_uart = EISAName::new("PNP0501");
    let com1 = Raw(bytes(&Device::new(
        Path::new("COM1"),
        vec![
            &Name::new(Path::new("_HID"), &hid_uart),
            &Name::new(Path::new("_UID"), &ZERO),
            &Name::new(Path::new("_CRS"), &uart_crs),
        ],
    )));

    let hid_button = EISAName::new("PNP0C0C");
    let pwrb = Raw(bytes(&Device::new(
        Path::new("PWRB"),
        vec![&Name::new(Path::new("_HID"), &hid_button), &Name::new(Path::new("_UID"), &ZERO)],
    )));

    let ged_irq = Interrupt::new(true, true, false, false, layout::GED_GSI);
    let ged_crs = ResourceTemplate::new(vec![&ged_irq]);
    let event_port = (layout::ACPI_PORT + regs::GED_EVENT) as u32;
    let one_byte = 1u8;
    let region = OpRegion::new(Path::new("GDST"), OpRegionSpace::SystemIO, &event_port, &one_byte);
    let field = Field::new(
        Path::new("GDST"),
        FieldAccessType::Byte,
        FieldLockRule::NoLock,
        FieldUpdateRule::WriteAsZeroes,
        vec![FieldEntry::Named(*b"GDAT", 8)],
    );
    let (events, button) = (Local(0), Local(1));
    let gdat = Path::new("GDAT");
    let read_events = Store::new(&events, &gdat);
    let button_bit = regs::EVENT_POWER_BUTTON;
    let is_button = aml::And::new(&button, &events, &button_bit);
    let pwrb_path = Path::new("\\_SB_.PWRB");
    let button_pressed = 0x80u8;
    let notify = Notify::new(&pwrb_path, &button_pressed);
    let pressed = Equal::new(&button, &button_bit);
    let if_button = If::new(&pressed, vec![&notify]);
    let evt = Method::new(Path::new("_EVT"), 1, true, vec![&read_events, &is_button, &if_button]);
    let ged = Raw(bytes(&Device::new(
        Path::new("GED_"),
        vec![
            &Name::new(Path::new("_HID"), &"ACPI0013"),
            &Name::new(Path::new("_UID"), &ZERO),
            &Name::new(Path::new("_CRS"), &ged_crs),
            &region,
            &field,
            &evt,
        ],
    )));

    let sb = Scope::new(Path::new("\\_SB_"), vec![&pci0, &com1, &pwrb, &ged]);
    // \_S5: SLP_TYPa, SLP_TYPb, two reserved.
    let s5_typ = regs::S5_SLP_TYP;
    let mut body = bytes(&sb);
    body.extend(bytes(&Name::new(Path::new("_S5_"), &Package::new(vec![&s5_typ, &s5_typ, &ZERO, &ZERO]))));
    body
}

fn fadt(dsdt: u64) -> Vec<u8> {
    let control = io_register(layout::ACPI_PORT + regs::SLEEP_CONTROL);
    let status = io_register(layout::ACPI_PORT + regs::SLEEP_STATUS);
    let mut f = FADTBuilder::new(OEM_ID, *b"KENNELFA", OEM_REVISION)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        // The buttons are control-method devices (in the DSDT), not fixed hardware.
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .dsdt_64(dsdt);
    f.iapc_boot_arch =
        (IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_SUPPORTED | IAPC_PCIE_ASPM_CONTROLS | IAPC_CMOS_RTC_NOT_PRESENT)
            .into();
    f.reset_reg = io_register(layout::ACPI_PORT + regs::RESET);
    f.reset_value = regs::RESET_VALUE;
    f.sleep_control_reg = control;
    f.sleep_status_reg = status;
    f.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_ID).into();
    bytes(&f.finalize())
}

fn madt(cpus: u8) -> Vec<u8> {
    let mut m = MADT::new(
        OEM_ID,
        *b"KENNELAP",
        OEM_REVISION,
        LocalInterruptController::Address(layout::LAPIC_ADDR as u32),
    );
    for id in 0..cpus {
        m.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    // The IOAPIC's id follows the CPUs', as in the MP table.
    m.add_structure(IoApic::new(cpus, layout::IOAPIC_ADDR as u32, 0));
    bytes(&m)
}

fn align8(v: &mut Vec<u8>) {
    v.resize(v.len().next_multiple_of(8), 0);
}

/// Builds the tables for a blob placed at `base`: the RSDP first (so `base`
/// is the RSDP's address), then DSDT, FADT, MADT and XSDT.
pub fn build(base: u64, input: &AcpiInput<'_>) -> Result<Vec<u8>, AcpiError> {
    let mut blob = vec![0u8; Rsdp::len()];
    align8(&mut blob);

    let dsdt_addr = base + blob.len() as u64;
    let mut dsdt = Sdt::new(*b"DSDT", 36, 2, OEM_ID, *b"KENNELDS", OEM_REVISION);
    dsdt.append_slice(&dsdt_body(input.pci));
    blob.extend_from_slice(dsdt.as_slice());
    align8(&mut blob);

    let fadt_addr = base + blob.len() as u64;
    blob.extend(fadt(dsdt_addr));
    align8(&mut blob);

    let madt_addr = base + blob.len() as u64;
    blob.extend(madt(input.cpus));
    align8(&mut blob);

    let xsdt_addr = base + blob.len() as u64;
    let mut xsdt = XSDT::new(OEM_ID, *b"KENNELXS", OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    blob.extend(bytes(&xsdt));

    let rsdp = bytes(&Rsdp::new(OEM_ID, xsdt_addr));
    blob[..rsdp.len()].copy_from_slice(&rsdp);
    if blob.len() as u64 > layout::ACPI_MAX {
        return Err(AcpiError::TooBig { size: blob.len() });
    }
    Ok(blob)
}

/// Builds the tables and writes them at `layout::RSDP_ADDR`.
pub fn write(mem: &GuestMemoryMmap, input: &AcpiInput<'_>) -> Result<(), AcpiError> {
    let blob = build(layout::RSDP_ADDR, input)?;
    mem.write_slice(&blob, GuestAddress(layout::RSDP_ADDR)).map_err(AcpiError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = layout::RSDP_ADDR;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// The table at guest address `addr` in a blob placed at BASE, checked:
    /// its length fits, its checksum sums to zero, its signature is `sig`.
    fn table<'a>(blob: &'a [u8], addr: u64, sig: &[u8; 4]) -> &'a [u8] {
        let at = (addr - BASE) as usize;
        assert_eq!(&blob[at..at + 4], sig);
        let len = u32_at(blob, at + 4) as usize;
        assert!(len >= 36 && at + len <= blob.len(), "{sig:?}: length {len}");
        let t = &blob[at..at + len];
        assert_eq!(sum(t), 0, "{sig:?} checksum");
        t
    }

    struct Parsed {
        fadt: Vec<u8>,
        madt: Vec<u8>,
        dsdt: Vec<u8>,
    }

    /// Walks the tables as an OS does: RSDP, XSDT, then each entry.
    fn parse(blob: &[u8]) -> Parsed {
        assert_eq!(&blob[..8], b"RSD PTR ");
        assert_eq!(sum(&blob[..20]), 0, "RSDP checksum (ACPI 1.0 part)");
        assert_eq!(sum(&blob[..36]), 0, "RSDP extended checksum");
        assert_eq!(blob[15], 2, "RSDP revision 2: use the XSDT");
        let xsdt = table(blob, u64_at(blob, 24), b"XSDT");
        let entries: Vec<u64> = (36..xsdt.len()).step_by(8).map(|at| u64_at(xsdt, at)).collect();
        assert_eq!(entries.len(), 2);
        let fadt = table(blob, entries[0], b"FACP").to_vec();
        let madt = table(blob, entries[1], b"APIC").to_vec();
        // X_DSDT at offset 140; the 32-bit DSDT field (40) is 0.
        assert_eq!(u32_at(&fadt, 40), 0);
        let dsdt = table(blob, u64_at(&fadt, 140), b"DSDT").to_vec();
        Parsed { fadt, madt, dsdt }
    }

    fn input(cpus: u8) -> (u8, Vec<PciIntx>) {
        (cpus, vec![PciIntx { slot: 4, pin: 1, gsi: 16 }, PciIntx { slot: 5, pin: 1, gsi: 17 }])
    }

    #[test]
    fn every_table_is_reachable_and_sums_to_zero() {
        let (cpus, pci) = input(2);
        let blob = build(BASE, &AcpiInput { cpus, pci: &pci }).unwrap();
        assert!(blob.len() as u64 <= layout::ACPI_MAX);
        parse(&blob);
    }

    /// GAS at `at`: (space, bit width, bit offset, access size, address).
    fn gas(t: &[u8], at: usize) -> (u8, u8, u8, u8, u64) {
        (t[at], t[at + 1], t[at + 2], t[at + 3], u64_at(t, at + 4))
    }

    #[test]
    fn the_fadt_is_hardware_reduced_with_kennels_registers() {
        let (cpus, pci) = input(1);
        let p = parse(&build(BASE, &AcpiInput { cpus, pci: &pci }).unwrap());
        let f = &p.fadt;
        assert_eq!(f.len(), 276, "FADT 6.5 length");
        let flags = u32_at(f, 112);
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        let port = |r| layout::ACPI_PORT + r;
        // Linux's acpi_reboot() wants an 8-bit register at bit 0.
        assert_eq!(gas(f, 116), (1, 8, 0, 1, port(regs::RESET)));
        assert_eq!(f[128], regs::RESET_VALUE);
        assert_eq!(gas(f, 244), (1, 8, 0, 1, port(regs::SLEEP_CONTROL)));
        assert_eq!(gas(f, 256), (1, 8, 0, 1, port(regs::SLEEP_STATUS)));
        let boot_arch = u16::from_le_bytes([f[109], f[110]]);
        assert_eq!(boot_arch & 0b11, 0, "no legacy devices, no 8042 to probe");
        assert_ne!(boot_arch & IAPC_CMOS_RTC_NOT_PRESENT, 0);
    }

    #[test]
    fn the_madt_lists_each_cpu_and_the_ioapic() {
        for cpus in [1, 4, crate::machine::boot::MAX_VCPUS] {
            let (cpus, pci) = input(cpus);
            let p = parse(&build(BASE, &AcpiInput { cpus, pci: &pci }).unwrap());
            let m = &p.madt;
            assert_eq!(u32_at(m, 36), layout::LAPIC_ADDR as u32);
            let mut at = 44;
            let (mut lapics, mut ioapics) = (Vec::new(), Vec::new());
            while at < m.len() {
                let (kind, len) = (m[at], m[at + 1] as usize);
                match kind {
                    0 => lapics.push((m[at + 2], m[at + 3], u32_at(m, at + 4))),
                    1 => ioapics.push((m[at + 2], u32_at(m, at + 4), u32_at(m, at + 8))),
                    k => panic!("unexpected MADT entry type {k}"),
                }
                at += len;
            }
            assert_eq!(at, m.len());
            let want: Vec<_> = (0..cpus).map(|i| (i, i, 1)).collect();
            assert_eq!(lapics, want, "uid = APIC id = vCPU index, enabled");
            assert_eq!(ioapics, vec![(cpus, layout::IOAPIC_ADDR as u32, 0)]);
        }
    }

    /// The DSDT through ACPICA's own tools: `iasl -d` disassembles it and
    /// the result must compile again without errors.
    #[test]
    fn iasl_disassembles_and_recompiles_the_dsdt() {
        let (cpus, pci) = input(2);
        let p = parse(&build(BASE, &AcpiInput { cpus, pci: &pci }).unwrap());
        let dir = std::env::temp_dir().join(format!("kennel-dsdt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("dsdt.dat"), &p.dsdt).unwrap();
        let iasl =
            |args: &[&str]| match std::process::Command::new("iasl").args(args).current_dir(&dir).output() {
                Ok(o) => o,
                Err(e) => panic!("cannot run iasl ({e}): install acpica-tools (scripts/setup does)"),
            };
        let out = iasl(&["-d", "dsdt.dat"]);
        assert!(out.status.success(), "iasl -d: {}", String::from_utf8_lossy(&out.stderr));
        let dsl = std::fs::read_to_string(dir.join("dsdt.dsl")).unwrap();
        for want in [
            "PNP0A08",
            "_PRT",
            "0x0004FFFF",
            "0x0005FFFF",
            "PNP0501",
            "PNP0C0C",
            "\"ACPI0013\"",
            "Method (_EVT, 1, Serialized)",
            "Notify (\\_SB.PWRB, 0x80)",
            "Name (_S5, Package",
            "SystemIO, 0x0603",
        ] {
            assert!(dsl.contains(want), "{want:?} missing from\n{dsl}");
        }
        let out = iasl(&["-p", "recompiled", "dsdt.dsl"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains(" 0 Errors"), "iasl compile:\n{text}\n{dsl}");
        if std::env::var_os("KENNEL_KEEP_DSDT").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn the_largest_vcpu_count_fits_the_region() {
        let (cpus, pci) = input(255);
        let blob = build(BASE, &AcpiInput { cpus, pci: &pci }).unwrap();
        assert!(blob.len() as u64 <= layout::ACPI_MAX);
        parse(&blob);
    }
}
