//! The host bridge at 00:00.0.
//!
//! It does nothing but exist: Linux's `pci_sanity_check` accepts
//! configuration mechanism #1 only if it finds a host bridge (or VGA, or an
//! Intel/Compaq function) on bus 0, and lspci shows a familiar root.

use super::config_space::{ConfigSpace, PciIdentity, PlacedBar};
use super::PciDevice;

pub const VENDOR_INTEL: u16 = 0x8086;
/// An Intel host bridge ID that no Linux driver binds to with quirks.
pub const HOST_BRIDGE_DEVICE_ID: u16 = 0x0d57;
pub const CLASS_BRIDGE: u8 = 0x06;
pub const SUBCLASS_HOST_BRIDGE: u8 = 0x00;

#[derive(Debug)]
pub struct HostBridge {
    config: ConfigSpace,
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl HostBridge {
    pub fn new() -> Self {
        let config = ConfigSpace::new(PciIdentity {
            vendor_id: VENDOR_INTEL,
            device_id: HOST_BRIDGE_DEVICE_ID,
            class: CLASS_BRIDGE,
            subclass: SUBCLASS_HOST_BRIDGE,
            ..Default::default()
        });
        Self { config }
    }
}

impl PciDevice for HostBridge {
    fn bars(&self) -> Vec<PlacedBar> {
        self.config.placed_bars()
    }

    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.config.write(offset, data);
    }

    fn bar_read(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xFF);
    }

    fn bar_write(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read32(d: &mut HostBridge, off: u16) -> u32 {
        let mut b = [0u8; 4];
        d.config_read(off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn identity() {
        let mut h = HostBridge::new();
        assert_eq!(read32(&mut h, 0x00), 0x0d57_8086);
        // class 06, subclass 00, prog-if 00, revision 00
        assert_eq!(read32(&mut h, 0x08), 0x0600_0000);
        // header type 0, single function
        assert_eq!(read32(&mut h, 0x0C) >> 16 & 0xFF, 0);
        assert_eq!(read32(&mut h, 0x3C) >> 8 & 0xFF, 0, "no interrupt pin");
        for bar in 0..6 {
            h.config_write(0x10 + 4 * bar, &[0xFF; 4]);
            assert_eq!(read32(&mut h, 0x10 + 4 * bar), 0, "no BARs");
        }
        let mut b = [0u8; 4];
        h.bar_read(0, 0, &mut b);
        assert_eq!(b, [0xFF; 4]);
    }
}
