//! Configuration mechanism #1: CONFIG_ADDRESS at 0xCF8, CONFIG_DATA at 0xCFC.
//!
//! [`PciConfigIo`] is put on the port I/O bus at 0xCF8 with length 8. There is
//! one bus (0) with single-function devices; everything else reads all ones,
//! which is how a guest learns that nothing is there.

use std::sync::{Arc, Mutex};

use super::bar_region::PciBarRegion;
use super::PciDevice;
use crate::bus::{lock, Bus, BusDevice};

pub const CONFIG_IO_BASE: u64 = 0xCF8;
pub const CONFIG_IO_LEN: u64 = 8;
pub const NUM_SLOTS: usize = 32;

const ENABLE: u32 = 1 << 31;

pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// Errors adding a device to the bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciBusError {
    /// slot out of range
    #[error("PCI slot {0} is out of range (0..32)")]
    SlotOutOfRange(u8),
    /// slot already occupied
    #[error("PCI slot {0} is already occupied")]
    SlotOccupied(u8),
    #[error("cannot place BAR{bar} of the device in PCI slot {slot}: {source}")]
    Bar {
        slot: u8,
        bar: usize,
        #[source]
        source: crate::bus::BusError,
    },
}

/// Bus 0: one device (function 0) per slot.
#[derive(Default)]
pub struct PciBus {
    slots: [Option<SharedPciDevice>; NUM_SLOTS],
}

impl std::fmt::Debug for PciBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used: Vec<usize> = (0..NUM_SLOTS).filter(|&i| self.slots[i].is_some()).collect();
        f.debug_struct("PciBus").field("slots", &used).finish()
    }
}

impl PciBus {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, slot: u8, device: SharedPciDevice) -> Result<(), PciBusError> {
        *self.free_slot(slot)? = Some(device);
        Ok(())
    }

    /// The empty slot `slot`, or why it cannot take a device.
    fn free_slot(&mut self, slot: u8) -> Result<&mut Option<SharedPciDevice>, PciBusError> {
        let entry = self.slots.get_mut(usize::from(slot)).ok_or(PciBusError::SlotOutOfRange(slot))?;
        match entry {
            Some(_) => Err(PciBusError::SlotOccupied(slot)),
            None => Ok(entry),
        }
    }

    /// Puts `device` in `slot` and each of its placed BARs on `mmio`, at the
    /// address and with the size the device declares: the one way a PCI
    /// function joins the machine.
    pub fn attach<D: PciDevice + 'static>(
        &mut self,
        slot: u8,
        device: Arc<Mutex<D>>,
        mmio: &mut Bus,
    ) -> Result<(), PciBusError> {
        // The slot first, so a refused device leaves nothing on the bus.
        self.free_slot(slot)?;
        let shared: SharedPciDevice = device.clone();
        for b in lock(&device).bars() {
            let region = Arc::new(PciBarRegion::new(shared.clone(), b.index));
            mmio.insert(region, b.addr.into(), b.size.into()).map_err(|source| PciBusError::Bar {
                slot,
                bar: b.index,
                source,
            })?;
        }
        self.add(slot, shared)
    }

    pub fn get(&self, slot: u8) -> Option<&SharedPciDevice> {
        self.slots.get(usize::from(slot))?.as_ref()
    }
}

/// The 0xCF8..0xD00 port pair.
#[derive(Debug)]
pub struct PciConfigIo {
    bus: PciBus,
    address: u32,
}

impl PciConfigIo {
    pub fn new(bus: PciBus) -> Self {
        Self { bus, address: 0 }
    }

    pub fn bus(&self) -> &PciBus {
        &self.bus
    }

    /// The device and register CONFIG_ADDRESS selects, for an access at
    /// CONFIG_DATA + `byte`.
    fn target(&self, byte: u64) -> Option<(&SharedPciDevice, u16)> {
        let a = self.address;
        let (bus, slot, func) = ((a >> 16) & 0xFF, (a >> 11) & 0x1F, (a >> 8) & 0x7);
        if a & ENABLE == 0 || bus != 0 || func != 0 {
            return None;
        }
        // slot < 32 and byte < 4, so both conversions are lossless.
        let dev = self.bus.get(slot as u8)?;
        Some((dev, (a & 0xFC) as u16 + byte as u16))
    }
}

/// A CONFIG_DATA access is served only at its natural alignment.
fn data_access(offset: u64, len: usize) -> Option<u64> {
    let byte = offset.checked_sub(4)?;
    let ok = matches!(len, 1 | 2 | 4) && byte < 4 && byte % len as u64 == 0;
    ok.then_some(byte)
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset == 0 && data.len() == 4 {
            data.copy_from_slice(&self.address.to_le_bytes());
            return;
        }
        let target = data_access(offset, data.len()).and_then(|b| self.target(b));
        match target {
            Some((dev, reg)) => lock(dev).config_read(reg, data),
            None => data.fill(0xFF),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 {
            if let Ok(a) = <[u8; 4]>::try_from(data) {
                self.address = u32::from_le_bytes(a);
            }
            return;
        }
        if let Some((dev, reg)) = data_access(offset, data.len()).and_then(|b| self.target(b)) {
            lock(dev).config_write(reg, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::host_bridge::HostBridge;

    /// Config space whose byte at offset n reads n, recording writes.
    #[derive(Default)]
    struct Echo {
        writes: Vec<(u16, Vec<u8>)>,
        bars: Vec<crate::pci::PlacedBar>,
    }
    impl PciDevice for Echo {
        fn bars(&self) -> Vec<crate::pci::PlacedBar> {
            self.bars.clone()
        }
        fn config_read(&mut self, offset: u16, data: &mut [u8]) {
            for (i, d) in data.iter_mut().enumerate() {
                *d = (offset as usize + i) as u8;
            }
        }
        fn config_write(&mut self, offset: u16, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
        fn bar_read(&mut self, _: usize, _: u64, _: &mut [u8]) {}
        fn bar_write(&mut self, _: usize, _: u64, _: &[u8]) {}
    }

    fn setup() -> (PciConfigIo, Arc<Mutex<Echo>>) {
        let echo = Arc::new(Mutex::new(Echo::default()));
        let mut bus = PciBus::new();
        bus.add(0, Arc::new(Mutex::new(HostBridge::new()))).unwrap();
        bus.add(3, echo.clone()).unwrap();
        (PciConfigIo::new(bus), echo)
    }

    fn addr(slot: u32, func: u32, reg: u32) -> u32 {
        ENABLE | slot << 11 | func << 8 | reg
    }

    fn select(io: &mut PciConfigIo, a: u32) {
        io.write(0, &a.to_le_bytes());
    }

    fn read(io: &mut PciConfigIo, offset: u64, len: usize) -> u32 {
        let mut b = [0u8; 4];
        io.read(offset, &mut b[..len]);
        u32::from_le_bytes(b)
    }

    #[test]
    fn config_address_latches_dword_writes_only() {
        let (mut io, _) = setup();
        select(&mut io, 0x8000_1234);
        assert_eq!(read(&mut io, 0, 4), 0x8000_1234);
        // Linux's probe pokes 0xCFB with a byte; that must not disturb it.
        io.write(3, &[0x01]);
        io.write(0, &[0x00, 0x00]);
        io.write(0, &[0x00]);
        assert_eq!(read(&mut io, 0, 4), 0x8000_1234);
        assert_eq!(read(&mut io, 0, 2), 0xFFFF);
        assert_eq!(read(&mut io, 0, 1), 0xFF);
        assert_eq!(read(&mut io, 1, 1), 0xFF);
    }

    #[test]
    fn reads_host_bridge_through_the_mechanism() {
        let (mut io, _) = setup();
        select(&mut io, addr(0, 0, 0));
        assert_eq!(read(&mut io, 4, 4), 0x0d57_8086);
        select(&mut io, addr(0, 0, 8));
        assert_eq!(read(&mut io, 4, 4) >> 16, 0x0600);
    }

    #[test]
    fn byte_word_dword_at_each_data_offset() {
        let (mut io, echo) = setup();
        select(&mut io, addr(3, 0, 0x40));
        assert_eq!(read(&mut io, 4, 4), 0x4342_4140);
        assert_eq!(read(&mut io, 4, 2), 0x4140);
        assert_eq!(read(&mut io, 6, 2), 0x4342);
        for b in 0..4u64 {
            assert_eq!(read(&mut io, 4 + b, 1), 0x40 + b as u32);
        }
        // Low two bits of CONFIG_ADDRESS do not select the byte.
        select(&mut io, addr(3, 0, 0x43));
        assert_eq!(read(&mut io, 5, 1), 0x41);
        io.write(4, &[1, 2, 3, 4]);
        io.write(6, &[5, 6]);
        io.write(7, &[7]);
        let w = echo.lock().unwrap().writes.clone();
        assert_eq!(w, vec![(0x40, vec![1, 2, 3, 4]), (0x42, vec![5, 6]), (0x43, vec![7])]);
    }

    #[test]
    fn misaligned_or_oversized_data_accesses_are_ignored() {
        let (mut io, echo) = setup();
        select(&mut io, addr(3, 0, 0x40));
        assert_eq!(read(&mut io, 5, 2), 0xFFFF);
        assert_eq!(read(&mut io, 6, 4), 0xFFFF_FFFF);
        let mut big = [0u8; 8];
        io.read(0, &mut big);
        assert_eq!(big, [0xFF; 8]);
        io.write(5, &[1, 2]);
        io.write(4, &[0; 8]);
        assert!(echo.lock().unwrap().writes.is_empty());
    }

    #[test]
    fn absent_targets_read_all_ones_and_drop_writes() {
        let (mut io, echo) = setup();
        let cases = [
            addr(3, 0, 0) & !ENABLE, // enable bit clear
            addr(3, 0, 0) | 1 << 16, // bus 1
            addr(3, 1, 0),           // function 1
            addr(4, 0, 0),           // empty slot
            addr(31, 7, 0xFC) | 0xFF << 16,
        ];
        for a in cases {
            select(&mut io, a);
            assert_eq!(read(&mut io, 4, 4), 0xFFFF_FFFF, "{a:#x}");
            assert_eq!(read(&mut io, 6, 2), 0xFFFF, "{a:#x}");
            assert_eq!(read(&mut io, 7, 1), 0xFF, "{a:#x}");
            io.write(4, &[0; 4]);
        }
        assert!(echo.lock().unwrap().writes.is_empty());
    }

    #[test]
    fn slot_errors() {
        let mut bus = PciBus::new();
        bus.add(31, Arc::new(Mutex::new(Echo::default()))).unwrap();
        assert_eq!(bus.add(31, Arc::new(Mutex::new(Echo::default()))), Err(PciBusError::SlotOccupied(31)));
        assert_eq!(bus.add(32, Arc::new(Mutex::new(Echo::default()))), Err(PciBusError::SlotOutOfRange(32)));
        assert!(bus.get(31).is_some() && bus.get(0).is_none() && bus.get(200).is_none());
    }

    #[test]
    fn attach_places_every_bar_the_device_declares_and_nothing_else() {
        use crate::pci::PlacedBar;
        let bars = vec![
            PlacedBar { index: 0, addr: 0x1000, size: 16 },
            PlacedBar { index: 2, addr: 0x4000, size: 0x1000 },
        ];
        let dev = Arc::new(Mutex::new(Echo { bars, ..Echo::default() }));
        let (mut pci, mut mmio) = (PciBus::new(), Bus::new());
        pci.attach(3, dev.clone(), &mut mmio).unwrap();
        assert!(pci.get(3).is_some());
        let mut b = [0u8; 4];
        for (addr, present) in
            [(0x1000, true), (0x100c, true), (0x1010, false), (0x4ffc, true), (0x5000, false)]
        {
            assert_eq!(mmio.read(addr, &mut b), present, "{addr:#x}");
        }
        // The same slot again, or a BAR over one already placed: refused.
        assert_eq!(
            pci.attach(3, Arc::new(Mutex::new(Echo::default())), &mut mmio),
            Err(PciBusError::SlotOccupied(3))
        );
        let clash = Echo { bars: vec![PlacedBar { index: 1, addr: 0x1008, size: 16 }], ..Echo::default() };
        let err = pci.attach(4, Arc::new(Mutex::new(clash)), &mut mmio).unwrap_err();
        assert!(matches!(err, PciBusError::Bar { slot: 4, bar: 1, .. }), "{err:?}");
        assert!(pci.get(4).is_none(), "a device whose BAR could not be placed is not on the bus");
        // A slot that cannot take it: refused before any BAR is placed.
        let far = Echo { bars: vec![PlacedBar { index: 0, addr: 0x8000, size: 16 }], ..Echo::default() };
        assert_eq!(
            pci.attach(40, Arc::new(Mutex::new(far)), &mut mmio),
            Err(PciBusError::SlotOutOfRange(40))
        );
        assert!(!mmio.read(0x8000, &mut b), "no BAR of a refused device");
    }
}
