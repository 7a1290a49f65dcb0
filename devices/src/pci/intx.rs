//! A function's INTx pin, the way PCI defines it for every device: the
//! status register's interrupt bit follows the device's "interrupt pending"
//! whatever the command register says, and the pin is asserted while it is
//! pending and INTx is not disabled. Only changes reach the line.

use std::sync::Arc;

use super::ConfigSpace;
use crate::irq::InterruptLine;

pub struct IntxPin {
    line: Option<Arc<dyn InterruptLine>>,
    level: bool,
}

impl std::fmt::Debug for IntxPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntxPin").field("wired", &self.line.is_some()).field("level", &self.level).finish()
    }
}

impl IntxPin {
    /// `None`: the pin is not wired; the status bit still works.
    pub fn new(line: Option<Arc<dyn InterruptLine>>) -> Self {
        Self { line, level: false }
    }

    /// Brings the status bit and the pin in line with `pending`.
    pub fn update(&mut self, config: &mut ConfigSpace, pending: bool) {
        config.set_interrupt_status(pending);
        self.set(pending && !config.intx_disabled());
    }

    pub fn level(&self) -> bool {
        self.level
    }

    fn set(&mut self, level: bool) {
        if level != self.level {
            self.level = level;
            if let Some(line) = &self.line {
                line.set_level(level);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::testing::RecordingLine;
    use crate::pci::PciIdentity;

    fn config() -> ConfigSpace {
        ConfigSpace::new(PciIdentity {
            vendor_id: 0x1234,
            device_id: 0x5678,
            class: 0xff,
            subclass: 0,
            prog_if: 0,
            revision: 0,
            subsystem_vendor_id: 0,
            subsystem_id: 0,
            interrupt_pin: 1,
        })
    }

    #[test]
    fn pin_follows_pending_unless_intx_is_disabled_and_signals_changes_only() {
        let line = Arc::new(RecordingLine::default());
        let mut pin = IntxPin::new(Some(line.clone()));
        let mut c = config();
        pin.update(&mut c, true);
        pin.update(&mut c, true);
        assert!(pin.level() && line.level());
        assert_eq!(line.changes(), 1, "no repeat for an unchanged level");
        // INTx disable (command bit 10) drops the pin; the status bit stays.
        c.write(0x04, &0x0400u16.to_le_bytes());
        pin.update(&mut c, true);
        assert!(!pin.level() && !line.level());
        let mut status = [0u8; 2];
        c.read(0x06, &mut status);
        assert_ne!(u16::from_le_bytes(status) & 0x08, 0, "status interrupt bit follows pending");
        pin.update(&mut c, false);
        c.read(0x06, &mut status);
        assert_eq!(u16::from_le_bytes(status) & 0x08, 0);
    }
}
