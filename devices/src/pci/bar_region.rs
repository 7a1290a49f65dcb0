//! A BAR's placed range as a bus target.
//!
//! The VMM inserts one of these on the MMIO bus at each BAR's placed address
//! with the BAR's size. Because BARs never move, that mapping is made once
//! when the VM is built; the device still decides per access whether its
//! command register lets the access through. The region holds no state of
//! its own, so it needs no lock: an access locks only the device.

use crate::bus::{lock, BusTarget};
use crate::pci::config_io::SharedPciDevice;

pub struct PciBarRegion {
    pub device: SharedPciDevice,
    pub bar: usize,
}

impl std::fmt::Debug for PciBarRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciBarRegion").field("bar", &self.bar).finish()
    }
}

impl PciBarRegion {
    pub fn new(device: SharedPciDevice, bar: usize) -> Self {
        Self { device, bar }
    }
}

impl BusTarget for PciBarRegion {
    fn read(&self, offset: u64, data: &mut [u8]) {
        lock(&self.device).bar_read(self.bar, offset, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        lock(&self.device).bar_write(self.bar, offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Bus;
    use crate::pci::PciDevice;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Rec(Vec<(usize, u64, Vec<u8>)>);
    impl PciDevice for Rec {
        fn bars(&self) -> Vec<crate::pci::PlacedBar> {
            Vec::new()
        }
        fn config_read(&mut self, _: u16, _: &mut [u8]) {}
        fn config_write(&mut self, _: u16, _: &[u8]) {}
        fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
            data.fill((bar as u8) << 4 | offset as u8);
        }
        fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
            self.0.push((bar, offset, data.to_vec()));
        }
    }

    #[test]
    fn forwards_bar_accesses_with_offsets() {
        let dev = Arc::new(Mutex::new(Rec::default()));
        let mut bus = Bus::new();
        bus.insert(Arc::new(PciBarRegion::new(dev.clone(), 2)), 0xFEBF_0000, 16).unwrap();
        let mut b = [0u8; 2];
        assert!(bus.read(0xFEBF_0004, &mut b));
        assert_eq!(b, [0x24, 0x24]);
        assert!(bus.write(0xFEBF_000C, &[0x80, 0]));
        assert_eq!(dev.lock().unwrap().0, vec![(2, 0xC, vec![0x80, 0])]);
    }
}
