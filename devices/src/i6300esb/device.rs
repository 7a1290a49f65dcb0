//! The 6300ESB's registers and their effects, and its PCI glue.

use std::sync::Arc;
use std::time::Duration;

use super::regs::*;
use super::timer::{advance, ClockMode, Countdown, Stage};
use super::{
    EsbCounters, EsbError, EsbParams, EsbStatus, InterruptType, TimerState, WatchdogFact, WatchdogObserver,
};
use crate::clock::Clock;
use crate::log_limit::LogLimit;
use crate::pci::config_space::{BarKind, ConfigSpace, PciIdentity, PlacedBar, INTERRUPT_LINE, PIN_INTA};
use crate::pci::IntxPin;
use crate::pci::PciDevice;
use crate::warn_limited;

/// Progress through the 0x80, 0x86 sequence that unlocks one write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unlock {
    Locked,
    GotFirst,
    Unlocked,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    Disabled,
    Counting(Countdown),
    Expired,
    Stopped,
}

#[derive(Default)]
struct Logs {
    refused: LogLimit,
    bad_access: LogLimit,
    output_disabled: LogLimit,
}

pub struct I6300Esb {
    config: ConfigSpace,
    preload1: u32,
    preload2: u32,
    gintsr: bool,
    timeout_flag: bool,
    unlock: Unlock,
    run: Run,
    intx: IntxPin,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn WatchdogObserver>,
    counters: EsbCounters,
    logs: Logs,
}

impl std::fmt::Debug for I6300Esb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I6300Esb").field("run", &self.run).field("timeout_flag", &self.timeout_flag).finish()
    }
}

/// Splits a BAR0 access into (register offset, bit shift); None for
/// accesses that are not 1, 2 or 4 bytes inside one register.
fn decode(offset: u64, len: usize) -> Option<(u64, u32)> {
    let within = offset % 4;
    let ok = matches!(len, 1 | 2 | 4) && offset < u64::from(BAR0_SIZE) && within + len as u64 <= 4;
    ok.then_some((offset - within, within as u32 * 8))
}

/// Whether a config write of `len` bytes at `offset` touches 0x60/0x61 or 0x68.
fn touches_lockable(offset: u16, len: usize) -> bool {
    let (start, end) = (usize::from(offset), usize::from(offset) + len);
    let hits = |r: u16, n: usize| start < usize::from(r) + n && usize::from(r) < end;
    matches!(len, 1 | 2 | 4) && end <= 256 && (hits(CONFIG_REG, 2) || hits(LOCK_REG, 1))
}

impl I6300Esb {
    pub fn new(p: EsbParams) -> Result<Self, EsbError> {
        let mut config = ConfigSpace::new(PciIdentity {
            vendor_id: VENDOR_ID,
            device_id: DEVICE_ID,
            class: CLASS,
            subclass: SUBCLASS,
            interrupt_pin: PIN_INTA,
            ..Default::default()
        });
        config.add_bar(0, p.bar0_addr, BAR0_SIZE, BarKind::Memory32)?;
        config.set_u8(INTERRUPT_LINE, p.irq_line);
        config.set_writable(CONFIG_REG, &CONFIG_WRITABLE.to_le_bytes());
        config.set_writable(LOCK_REG, &[LOCK_WRITABLE]);
        Ok(Self {
            config,
            preload1: PRELOAD_MASK,
            preload2: PRELOAD_MASK,
            gintsr: false,
            timeout_flag: p.timeout_flag,
            unlock: Unlock::Locked,
            run: Run::Disabled,
            intx: IntxPin::new(p.irq),
            clock: p.clock,
            observer: p.observer,
            counters: EsbCounters::default(),
            logs: Logs::default(),
        })
    }

    /// Processes everything due by now: stage ends, flags, the interrupt,
    /// and at most one fact of each kind.
    pub fn poll(&mut self) {
        self.poll_at(self.clock.now());
    }

    /// Brings the device up to `now`. Every access reads the clock once and
    /// uses that time throughout, so what it sees and what it does agree.
    fn poll_at(&mut self, now: Duration) {
        let Run::Counting(cd) = self.run else {
            return;
        };
        let a = advance(cd, now, self.preload1, self.preload2, self.free_running());
        if let Some(next) = a.countdown {
            self.run = Run::Counting(next);
        }
        if let Some(at) = a.last_stage1_end {
            self.gintsr = true;
            self.counters.pre_timeouts = self.counters.pre_timeouts.saturating_add(a.stage1_ends);
            self.update_irq();
            self.observer.report(WatchdogFact::PreTimeout, at);
        }
        if let Some(at) = a.stage2_end {
            if self.output_enabled() {
                self.run = Run::Expired;
                self.timeout_flag = true;
                self.counters.expiries += 1;
                self.observer.report(WatchdogFact::Expired, at);
            } else {
                self.run = Run::Stopped;
                warn_limited!(
                    self.logs.output_disabled,
                    "i6300esb: stage 2 ended with the output disabled; no action"
                );
            }
        }
    }

    /// The clock time at which `poll` must next be called; None while
    /// nothing is counting.
    pub fn next_deadline(&self) -> Option<Duration> {
        match self.run {
            Run::Counting(cd) => Some(cd.deadline()),
            _ => None,
        }
    }

    /// What survives a system reset: real hardware keeps this flag so the
    /// guest can tell why it rebooted. The VMM resets by building a new
    /// device with it ([`EsbParams::timeout_flag`]).
    pub fn timeout_flag(&self) -> bool {
        self.timeout_flag
    }

    /// A snapshot, brought up to date first (which may report facts).
    pub fn status(&mut self) -> EsbStatus {
        self.poll();
        let mode = self.clock_mode();
        EsbStatus {
            enabled: self.enabled(),
            locked: self.lock_reg() & LOCK_LOCK != 0,
            free_running: self.free_running(),
            clock_mode: mode,
            output_enabled: self.output_enabled(),
            interrupt_type: self.interrupt_type(),
            preload1: self.preload1,
            preload2: self.preload2,
            stage1: mode.duration(self.preload1),
            stage2: mode.duration(self.preload2),
            timer: match self.run {
                Run::Disabled => TimerState::Disabled,
                Run::Counting(cd) => TimerState::Counting { stage: cd.stage, deadline: cd.deadline() },
                Run::Expired => TimerState::Expired,
                Run::Stopped => TimerState::Stopped,
            },
            gintsr: self.gintsr,
            timeout_flag: self.timeout_flag,
            counters: self.counters,
        }
    }

    pub fn counters(&self) -> EsbCounters {
        self.counters
    }

    fn cfg_reg(&self) -> u16 {
        self.config.u16_at(CONFIG_REG)
    }

    fn lock_reg(&self) -> u8 {
        self.config.u8_at(LOCK_REG)
    }

    fn enabled(&self) -> bool {
        self.lock_reg() & LOCK_ENABLE != 0
    }

    fn free_running(&self) -> bool {
        self.lock_reg() & LOCK_FUNC != 0
    }

    fn output_enabled(&self) -> bool {
        self.cfg_reg() & CONFIG_OUTPUT_DISABLE == 0
    }

    fn clock_mode(&self) -> ClockMode {
        if self.cfg_reg() & CONFIG_FREQ_1MHZ != 0 {
            ClockMode::Mhz1
        } else {
            ClockMode::Khz1
        }
    }

    fn interrupt_type(&self) -> InterruptType {
        match self.cfg_reg() & CONFIG_INT_TYPE {
            INT_TYPE_IRQ => InterruptType::Irq,
            INT_TYPE_SMI => InterruptType::Smi,
            INT_TYPE_DISABLED => InterruptType::Disabled,
            _ => InterruptType::Reserved,
        }
    }

    /// INTA# follows GINTSR while the interrupt type is IRQ and INTx is not
    /// disabled in the command register; only SMI and "disabled" exist
    /// besides, and neither reaches the guest as an interrupt here.
    fn update_irq(&mut self) {
        let pending = self.gintsr && self.interrupt_type() == InterruptType::Irq;
        self.intx.update(&mut self.config, pending);
    }

    fn start_stage1(&mut self, now: Duration) {
        self.run = Run::Counting(Countdown::new(Stage::One, now, self.preload1, self.clock_mode()));
    }

    fn refuse(&mut self, what: std::fmt::Arguments<'_>) {
        self.counters.refused_writes += 1;
        warn_limited!(self.logs.refused, "i6300esb: refused {what}");
    }

    fn write_reload(&mut self, value: u32, now: Duration) {
        if value == UNLOCK1 {
            self.unlock = Unlock::GotFirst;
            return;
        }
        match self.unlock {
            Unlock::GotFirst if value == UNLOCK2 => self.unlock = Unlock::Unlocked,
            Unlock::Unlocked => {
                self.unlock = Unlock::Locked;
                if value & RELOAD_TIMEOUT != 0 {
                    self.timeout_flag = false;
                }
                if value & RELOAD_RELOAD != 0 && self.enabled() {
                    self.start_stage1(now);
                    self.counters.feeds += 1;
                    self.observer.report(WatchdogFact::Fed, now);
                }
            }
            _ => {
                self.unlock = Unlock::Locked;
                self.refuse(format_args!("reload write {value:#x} outside the unlock sequence"));
            }
        }
    }

    fn write_preload(&mut self, reg: u64, value: u32, mask: u32) {
        if self.unlock != Unlock::Unlocked {
            self.unlock = Unlock::Locked;
            self.refuse(format_args!("preload write {value:#x} at {reg:#x} without unlocking"));
            return;
        }
        self.unlock = Unlock::Locked;
        let p = if reg == TIMER1_REG { &mut self.preload1 } else { &mut self.preload2 };
        *p = ((*p & !mask) | (value & mask)) & PRELOAD_MASK;
    }

    /// Acts on the edges of a config write that got through.
    fn config_changed(&mut self, old_cfg: u16, old_lock: u8, now: Duration) {
        let (cfg, lock) = (self.cfg_reg(), self.lock_reg());
        if lock & LOCK_LOCK != 0 {
            self.config.set_writable(CONFIG_REG, &[0, 0]);
            self.config.set_writable(LOCK_REG, &[0]);
        }
        if (cfg ^ old_cfg) & CONFIG_FREQ_1MHZ != 0 {
            if let Run::Counting(cd) = self.run {
                self.run = Run::Counting(cd.rebase(now, self.clock_mode()));
            }
        }
        let was_enabled = old_lock & LOCK_ENABLE != 0;
        if !was_enabled && self.enabled() {
            self.start_stage1(now);
            let mode = self.clock_mode();
            let fact = WatchdogFact::Armed {
                stage1: mode.duration(self.preload1),
                stage2: mode.duration(self.preload2),
            };
            self.observer.report(fact, now);
        } else if was_enabled && !self.enabled() {
            self.run = Run::Disabled;
            self.observer.report(WatchdogFact::Disarmed, now);
        }
        self.update_irq();
    }
}

impl PciDevice for I6300Esb {
    fn bars(&self) -> Vec<PlacedBar> {
        self.config.placed_bars()
    }

    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        let now = self.clock.now();
        self.poll_at(now);
        let count = match self.run {
            Run::Counting(cd) => cd.count_at(now) & PRELOAD_MASK,
            _ => 0,
        };
        self.config.set_u32(COUNT_REG, count);
        self.config.read(offset, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        let now = self.clock.now();
        self.poll_at(now);
        let (old_cfg, old_lock) = (self.cfg_reg(), self.lock_reg());
        if old_lock & LOCK_LOCK != 0 && touches_lockable(offset, data.len()) {
            self.refuse(format_args!("config write at {offset:#x}: LOCK is set until reset"));
        }
        self.config.write(offset, data);
        self.config_changed(old_cfg, old_lock, now);
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        self.poll();
        let decoded = decode(offset, data.len());
        let Some((reg, shift)) = decoded.filter(|_| bar == 0 && self.config.memory_enabled()) else {
            warn_limited!(
                self.logs.bad_access,
                "i6300esb: BAR{bar} read of {} bytes at {offset:#x} ignored",
                data.len()
            );
            data.fill(0xFF);
            return;
        };
        let value = match reg {
            TIMER1_REG => self.preload1,
            TIMER2_REG => self.preload2,
            GINTSR_REG => u32::from(self.gintsr),
            _ => u32::from(self.timeout_flag) * RELOAD_TIMEOUT,
        };
        let bytes = (value >> shift).to_le_bytes();
        data.copy_from_slice(&bytes[..data.len()]);
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        let now = self.clock.now();
        self.poll_at(now);
        let decoded = decode(offset, data.len());
        let Some((reg, shift)) = decoded.filter(|_| bar == 0 && self.config.memory_enabled()) else {
            warn_limited!(
                self.logs.bad_access,
                "i6300esb: BAR{bar} write of {} bytes at {offset:#x} ignored",
                data.len()
            );
            return;
        };
        let mut bytes = [0u8; 4];
        bytes[..data.len()].copy_from_slice(data);
        let value = u32::from_le_bytes(bytes) << shift;
        let mask = (u32::MAX >> (32 - 8 * data.len() as u32)) << shift;
        match reg {
            GINTSR_REG => {
                if value & GINTSR_INT1 != 0 {
                    self.gintsr = false;
                    self.update_irq();
                }
            }
            RELOAD_REG => self.write_reload(value, now),
            _ => self.write_preload(reg, value, mask),
        }
    }
}
