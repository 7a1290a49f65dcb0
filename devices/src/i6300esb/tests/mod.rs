//! Guest-visible behaviour of the 6300ESB, driven by a virtual clock and
//! checked to the nanosecond. `Rig` plays the Linux driver's part.

mod registers;
mod timing;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::regs::*;
use super::*;
use crate::clock::VirtualClock;
use crate::pci::config_space::{COMMAND, COMMAND_INTX_DISABLE, COMMAND_MEMORY, STATUS, STATUS_INTERRUPT};
use crate::pci::PciDevice;

pub(super) const BAR0_ADDR: u32 = 0xFEBF_F000;
/// One 1 kHz count: 2^15 PCI clocks of 30 ns.
pub(super) const TICK_1K: u64 = 983_040;
pub(super) const TICK_1M: u64 = 960;

#[derive(Default)]
pub(super) struct Facts(Mutex<Vec<(WatchdogFact, Duration)>>);
impl WatchdogObserver for Facts {
    fn report(&self, fact: WatchdogFact, at: Duration) {
        self.0.lock().unwrap().push((fact, at));
    }
}

pub(super) use crate::irq::testing::RecordingLine as Line;

pub(super) struct Rig {
    pub(super) esb: I6300Esb,
    pub(super) clock: VirtualClock,
    pub(super) facts: Arc<Facts>,
    pub(super) line: Arc<Line>,
}

pub(super) fn ns(n: u64) -> Duration {
    Duration::from_nanos(n)
}

impl Rig {
    pub(super) fn with_flag(timeout_flag: bool) -> Self {
        let clock = VirtualClock::new();
        let facts = Arc::new(Facts::default());
        let line = Arc::new(Line::default());
        let esb = I6300Esb::new(EsbParams {
            bar0_addr: BAR0_ADDR,
            irq_line: 10,
            irq: Some(line.clone()),
            clock: Arc::new(clock.clone()),
            observer: facts.clone(),
            timeout_flag,
        })
        .unwrap();
        let mut rig = Self { esb, clock, facts, line };
        // pci_enable_device
        rig.cfg_w16(COMMAND, COMMAND_MEMORY);
        rig
    }

    pub(super) fn new() -> Self {
        Self::with_flag(false)
    }

    /// A system reset as the VMM does it: a new device (and a new interrupt
    /// controller behind a new line) with only the timeout flag carried
    /// over, on the same clock. Memory decoding is off again.
    pub(super) fn system_reset(&mut self) {
        self.line = Arc::new(Line::default());
        self.esb = I6300Esb::new(EsbParams {
            bar0_addr: BAR0_ADDR,
            irq_line: 10,
            irq: Some(self.line.clone()),
            clock: Arc::new(self.clock.clone()),
            observer: self.facts.clone(),
            timeout_flag: self.esb.timeout_flag(),
        })
        .unwrap();
    }

    pub(super) fn now(&self) -> Duration {
        self.clock.now()
    }

    pub(super) fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Moves the clock to exactly `t` (never backwards).
    pub(super) fn to(&self, t: Duration) {
        self.clock.advance(t - self.now());
    }

    pub(super) fn cfg_r(&mut self, off: u16, len: usize) -> u32 {
        let mut b = [0u8; 4];
        self.esb.config_read(off, &mut b[..len]);
        u32::from_le_bytes(b)
    }
    pub(super) fn cfg_w8(&mut self, off: u16, v: u8) {
        self.esb.config_write(off, &[v]);
    }
    pub(super) fn cfg_w16(&mut self, off: u16, v: u16) {
        self.esb.config_write(off, &v.to_le_bytes());
    }
    pub(super) fn r(&mut self, off: u64, len: usize) -> u32 {
        let mut b = [0u8; 4];
        self.esb.bar_read(0, off, &mut b[..len]);
        u32::from_le_bytes(b)
    }
    pub(super) fn w16(&mut self, off: u64, v: u16) {
        self.esb.bar_write(0, off, &v.to_le_bytes());
    }
    pub(super) fn w32(&mut self, off: u64, v: u32) {
        self.esb.bar_write(0, off, &v.to_le_bytes());
    }

    // The Linux driver's operations, as in drivers/watchdog/i6300esb.c.
    pub(super) fn unlock(&mut self) {
        self.w16(RELOAD_REG, 0x80);
        self.w16(RELOAD_REG, 0x86);
    }
    pub(super) fn keepalive(&mut self) {
        self.unlock();
        self.w16(RELOAD_REG, 0x100);
    }
    pub(super) fn set_heartbeat(&mut self, secs: u32) {
        let val = secs << 9;
        self.unlock();
        self.w32(TIMER1_REG, val);
        self.unlock();
        self.w32(TIMER2_REG, val);
        self.keepalive();
    }
    /// esb_initdevice; returns whether the driver would report CARDRESET.
    pub(super) fn probe(&mut self, heartbeat: u32) -> bool {
        self.cfg_w16(CONFIG_REG, 0x0003);
        let locked = self.cfg_r(LOCK_REG, 1) & 1 != 0;
        assert!(!locked, "nowayout already set");
        self.cfg_w8(LOCK_REG, 0);
        self.unlock();
        let card_reset = self.r(RELOAD_REG, 2) & 0x200 != 0;
        self.unlock();
        self.w16(RELOAD_REG, 0x200 | 0x100);
        self.set_heartbeat(heartbeat);
        card_reset
    }
    pub(super) fn start(&mut self, nowayout: bool) {
        self.keepalive();
        self.cfg_w8(LOCK_REG, LOCK_ENABLE | u8::from(nowayout));
    }
    pub(super) fn stop(&mut self) -> bool {
        self.keepalive();
        self.cfg_w8(LOCK_REG, 0);
        self.cfg_r(LOCK_REG, 1) & u32::from(LOCK_ENABLE) == 0
    }

    pub(super) fn facts(&self) -> Vec<(WatchdogFact, Duration)> {
        std::mem::take(&mut *self.facts.0.lock().unwrap())
    }
}
