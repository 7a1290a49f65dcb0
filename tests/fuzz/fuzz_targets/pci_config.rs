//! PCI configuration mechanism #1 driven by arbitrary port accesses.
//!
//! A host bridge (slot 0), a 6300ESB (slot 1) and a virtio-blk (slot 3) sit
//! on bus 0 behind `PciConfigIo`. The input is a list of accesses to the
//! 0xCF8..0xD00 port pair (any offset and width, not only the legal ones),
//! plus "select" operations that write a well-formed CONFIG_ADDRESS so the
//! fuzzer reaches the devices' registers quickly.
//!
//! Invariants:
//! - a dword read of CONFIG_ADDRESS returns the last dword written there;
//!   nothing else changes it;
//! - every access that does not select a present device (enable clear,
//!   bus != 0, function != 0, empty slot, misaligned or oddly sized) reads
//!   all ones;
//! - the vendor/device IDs, class and header type of every function never
//!   change, and BAR0 reads either its placed address or its size mask.
#![no_main]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::tempfile::TempFile;

use kennel_devices::bus::BusDevice;
use kennel_devices::clock::VirtualClock;
use kennel_devices::i6300esb::{self, EsbParams, I6300Esb, WatchdogFact, WatchdogObserver};
use kennel_devices::pci::{HostBridge, PciBus, PciConfigIo, PciDevice};
use kennel_devices::virtio_blk::{self, BlkParams, NoFaults, VirtioBlk};

const ESB_BAR: u32 = 0xFEBF_F000;
const BLK_BAR: u32 = 0xE000_0000;

struct Nobody;
impl WatchdogObserver for Nobody {
    fn report(&self, _: WatchdogFact, _: Duration) {}
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// A raw port access at 0xCF8 + offset.
    Read {
        offset: u8,
        width: u8,
    },
    Write {
        offset: u8,
        width: u8,
        value: u32,
    },
    /// CONFIG_ADDRESS = enable | bus | slot | function | register.
    Select {
        enable: bool,
        bus: u8,
        slot: u8,
        func: u8,
        reg: u8,
    },
    /// Advance the watchdog's clock (config reads bring it up to date).
    Tick(u32),
}

fn width(w: u8) -> usize {
    // Mostly legal widths; sometimes 0, 3 and 8 (the bus never sends those,
    // but a BusDevice must survive any length).
    match w % 16 {
        0..=4 => 1,
        5..=9 => 2,
        10..=13 => 4,
        14 => [0, 3][usize::from(w >> 7)],
        _ => 8,
    }
}

/// (vendor, device, class) per populated slot.
const IDS: [(u8, u16, u16, u8); 3] = [
    (0, 0x8086, 0x0d57, 0x06),
    (1, i6300esb::regs::VENDOR_ID, i6300esb::regs::DEVICE_ID, i6300esb::regs::CLASS),
    (3, virtio_blk::regs::VENDOR_ID, virtio_blk::regs::DEVICE_ID, virtio_blk::regs::CLASS),
];

fn cfg32(dev: &Arc<Mutex<dyn PciDevice>>, off: u16) -> u32 {
    let mut b = [0u8; 4];
    dev.lock().unwrap().config_read(off, &mut b);
    u32::from_le_bytes(b)
}

fuzz_target!(|ops: Vec<Op>| {
    let clock = VirtualClock::new();
    let esb: Arc<Mutex<dyn PciDevice>> = Arc::new(Mutex::new(
        I6300Esb::new(EsbParams {
            bar0_addr: ESB_BAR,
            irq_line: 10,
            irq: None,
            clock: Arc::new(clock.clone()),
            observer: Arc::new(Nobody),
            timeout_flag: false,
        })
        .unwrap(),
    ));
    let disk = TempFile::new().unwrap();
    disk.as_file().set_len(4096).unwrap();
    let mem = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 10)]).unwrap());
    let blk: Arc<Mutex<dyn PciDevice>> = Arc::new(Mutex::new(
        VirtioBlk::new(BlkParams {
            disk: disk.as_file().try_clone().unwrap(),
            readonly: false,
            bar0_addr: BLK_BAR,
            irq_line: 11,
            irq: None,
            mem,
            faults: Arc::new(NoFaults),
            overlay: None,
        })
        .unwrap(),
    ));
    let bridge: Arc<Mutex<dyn PciDevice>> = Arc::new(Mutex::new(HostBridge::new()));
    let devs = [(0u8, bridge, 0u32), (1, esb, ESB_BAR), (3, blk, BLK_BAR)];
    let mut bus = PciBus::new();
    for (slot, d, _) in &devs {
        bus.add(*slot, d.clone()).unwrap();
    }
    let mut io = PciConfigIo::new(bus);

    // The model of CONFIG_ADDRESS.
    let mut address = 0u32;
    for op in ops.into_iter().take(512) {
        match op {
            Op::Tick(ns) => clock.advance(Duration::from_nanos(u64::from(ns) << 8)),
            Op::Select { enable, bus, slot, func, reg } => {
                let a = u32::from(enable) << 31
                    | u32::from(bus % 2) << 16
                    | u32::from(slot % 32) << 11
                    | u32::from(func % 2) << 8
                    | u32::from(reg);
                io.write(0, &a.to_le_bytes());
                address = a;
            }
            Op::Write { offset, width: w, value } => {
                let offset = u64::from(offset % 12);
                let len = width(w);
                let bytes = u64::from(value).to_le_bytes();
                io.write(offset, &bytes[..len]);
                if offset == 0 && len == 4 {
                    address = value;
                }
            }
            Op::Read { offset, width: w } => {
                let offset = u64::from(offset % 12);
                let len = width(w);
                let mut data = vec![0x5Au8; len];
                io.read(offset, &mut data);
                if offset == 0 && len == 4 {
                    assert_eq!(u32::from_le_bytes(data[..].try_into().unwrap()), address);
                    continue;
                }
                let (bus, slot, func) = ((address >> 16) & 0xFF, (address >> 11) & 0x1F, (address >> 8) & 7);
                let present = devs.iter().any(|(s, _, _)| u32::from(*s) == slot);
                let selects = address >> 31 == 1 && bus == 0 && func == 0 && present;
                let aligned =
                    matches!(len, 1 | 2 | 4) && (4..8).contains(&offset) && (offset - 4) % len as u64 == 0;
                if !(selects && aligned) {
                    assert!(
                        data.iter().all(|&b| b == 0xFF),
                        "absent target read {data:x?} at {address:#x}+{offset}"
                    );
                } else {
                    let reg = (address & 0xFC) as u64 + offset - 4;
                    let (_, vendor, device, _) =
                        IDS.iter().find(|i| u32::from(i.0) == slot).copied().unwrap();
                    let mut expect = vendor.to_le_bytes().to_vec();
                    expect.extend_from_slice(&device.to_le_bytes());
                    if reg < 4 {
                        let r = reg as usize;
                        assert_eq!(data[..], expect[r..r + len], "ID register changed");
                    }
                }
            }
        }
        for (slot, dev, bar) in &devs {
            let (_, vendor, device, class) = IDS.iter().find(|i| i.0 == *slot).copied().unwrap();
            assert_eq!(cfg32(dev, 0), u32::from(device) << 16 | u32::from(vendor), "slot {slot} IDs");
            assert_eq!((cfg32(dev, 8) >> 24) as u8, class, "slot {slot} class");
            assert_eq!((cfg32(dev, 0x0C) >> 16) & 0xFF, 0, "slot {slot} header type");
            let bar0 = cfg32(dev, 0x10);
            if *bar == 0 {
                assert_eq!(bar0, 0, "the host bridge has no BARs");
            } else {
                let size = if *slot == 1 { 16 } else { virtio_blk::BAR0_SIZE };
                assert!(bar0 == *bar || bar0 == !(size - 1), "slot {slot} BAR0 moved: {bar0:#x}");
            }
        }
    }
});
