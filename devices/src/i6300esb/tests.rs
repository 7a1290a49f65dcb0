//! Guest-visible behaviour of the 6300ESB, driven by a virtual clock and
//! checked to the nanosecond.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::regs::*;
use super::*;
use crate::clock::VirtualClock;
use crate::pci::config_space::{COMMAND, COMMAND_INTX_DISABLE, COMMAND_MEMORY, STATUS, STATUS_INTERRUPT};
use crate::pci::PciDevice;

const BAR0_ADDR: u32 = 0xFEBF_F000;
/// One 1 kHz count: 2^15 PCI clocks of 30 ns.
const TICK_1K: u64 = 983_040;
const TICK_1M: u64 = 960;

#[derive(Default)]
struct Facts(Mutex<Vec<(WatchdogFact, Duration)>>);
impl WatchdogObserver for Facts {
    fn report(&self, fact: WatchdogFact, at: Duration) {
        self.0.lock().unwrap().push((fact, at));
    }
}

#[derive(Default)]
struct Line(Mutex<Vec<bool>>);
impl InterruptLine for Line {
    fn set_level(&self, asserted: bool) {
        self.0.lock().unwrap().push(asserted);
    }
}
impl Line {
    fn level(&self) -> bool {
        self.0.lock().unwrap().last().copied().unwrap_or(false)
    }
    fn changes(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

struct Rig {
    esb: I6300Esb,
    clock: VirtualClock,
    facts: Arc<Facts>,
    line: Arc<Line>,
}

fn ns(n: u64) -> Duration {
    Duration::from_nanos(n)
}

impl Rig {
    fn with_flag(timeout_flag: bool) -> Self {
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

    fn new() -> Self {
        Self::with_flag(false)
    }

    fn now(&self) -> Duration {
        self.clock.now()
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Moves the clock to exactly `t` (never backwards).
    fn to(&self, t: Duration) {
        self.clock.advance(t - self.now());
    }

    fn cfg_r(&mut self, off: u16, len: usize) -> u32 {
        let mut b = [0u8; 4];
        self.esb.config_read(off, &mut b[..len]);
        u32::from_le_bytes(b)
    }
    fn cfg_w8(&mut self, off: u16, v: u8) {
        self.esb.config_write(off, &[v]);
    }
    fn cfg_w16(&mut self, off: u16, v: u16) {
        self.esb.config_write(off, &v.to_le_bytes());
    }
    fn r(&mut self, off: u64, len: usize) -> u32 {
        let mut b = [0u8; 4];
        self.esb.bar_read(0, off, &mut b[..len]);
        u32::from_le_bytes(b)
    }
    fn w16(&mut self, off: u64, v: u16) {
        self.esb.bar_write(0, off, &v.to_le_bytes());
    }
    fn w32(&mut self, off: u64, v: u32) {
        self.esb.bar_write(0, off, &v.to_le_bytes());
    }

    // The Linux driver's operations, as in drivers/watchdog/i6300esb.c.
    fn unlock(&mut self) {
        self.w16(RELOAD_REG, 0x80);
        self.w16(RELOAD_REG, 0x86);
    }
    fn keepalive(&mut self) {
        self.unlock();
        self.w16(RELOAD_REG, 0x100);
    }
    fn set_heartbeat(&mut self, secs: u32) {
        let val = secs << 9;
        self.unlock();
        self.w32(TIMER1_REG, val);
        self.unlock();
        self.w32(TIMER2_REG, val);
        self.keepalive();
    }
    /// esb_initdevice; returns whether the driver would report CARDRESET.
    fn probe(&mut self, heartbeat: u32) -> bool {
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
    fn start(&mut self, nowayout: bool) {
        self.keepalive();
        self.cfg_w8(LOCK_REG, LOCK_ENABLE | u8::from(nowayout));
    }
    fn stop(&mut self) -> bool {
        self.keepalive();
        self.cfg_w8(LOCK_REG, 0);
        self.cfg_r(LOCK_REG, 1) & u32::from(LOCK_ENABLE) == 0
    }

    fn facts(&self) -> Vec<(WatchdogFact, Duration)> {
        std::mem::take(&mut *self.facts.0.lock().unwrap())
    }
}

#[test]
fn linux_probe_reads_and_clears_the_timeout_flag() {
    let mut rig = Rig::with_flag(true);
    assert!(rig.esb.timeout_flag());
    assert!(rig.probe(30), "bootstatus must be CARDRESET");
    assert!(!rig.esb.timeout_flag());
    assert_eq!(rig.cfg_r(CONFIG_REG, 2), 0x0003);
    assert_eq!(rig.cfg_r(LOCK_REG, 1), 0);
    assert_eq!((rig.r(TIMER1_REG, 4), rig.r(TIMER2_REG, 4)), (15360, 15360));
    assert!(rig.facts().is_empty(), "reloads while disabled are not feeds");
    assert_eq!(rig.esb.counters(), EsbCounters::default());
    assert_eq!(rig.esb.next_deadline(), None);

    let mut clean = Rig::new();
    assert!(!clean.probe(30));
}

#[test]
fn identity_bar_and_interrupt_pin() {
    let mut rig = Rig::new();
    assert_eq!(rig.cfg_r(0x00, 4), 0x25AB_8086);
    assert_eq!(rig.cfg_r(0x08, 4) >> 8, 0x08_8000);
    assert_eq!(rig.cfg_r(0x0E, 1), 0);
    assert_eq!(rig.cfg_r(0x10, 4), BAR0_ADDR);
    rig.esb.config_write(0x10, &[0xFF; 4]);
    assert_eq!(rig.cfg_r(0x10, 4), 0xFFFF_FFF0, "16 bytes, 32-bit non-prefetchable memory");
    rig.esb.config_write(0x10, &0x1000_0000u32.to_le_bytes());
    assert_eq!(rig.cfg_r(0x10, 4), BAR0_ADDR, "BAR0 does not move");
    assert_eq!(rig.cfg_r(0x3C, 2), 0x010A, "line 10, pin INTA#");
}

#[test]
fn bad_bar0_placement_is_an_error() {
    let r = I6300Esb::new(EsbParams {
        bar0_addr: 0xFEBF_F008,
        irq_line: 0,
        irq: None,
        clock: Arc::new(VirtualClock::new()),
        observer: Arc::new(Facts::default()),
        timeout_flag: false,
    });
    assert!(matches!(r, Err(EsbError::Bar0(_))));
}

#[test]
fn preload_writes_need_one_unlock_each() {
    let mut rig = Rig::new();
    assert_eq!(rig.r(TIMER1_REG, 4), 0xF_FFFF, "power-on preload is the maximum");
    rig.w32(TIMER1_REG, 100);
    assert_eq!(rig.r(TIMER1_REG, 4), 0xF_FFFF);
    rig.unlock();
    rig.w32(TIMER1_REG, 100);
    rig.w32(TIMER2_REG, 200);
    assert_eq!((rig.r(TIMER1_REG, 4), rig.r(TIMER2_REG, 4)), (100, 0xF_FFFF), "one write per unlock");
    rig.unlock();
    rig.w32(TIMER2_REG, 200);
    assert_eq!(rig.r(TIMER2_REG, 4), 200);
    assert_eq!(rig.esb.counters().refused_writes, 2);
}

#[test]
fn broken_unlock_sequences_are_refused() {
    let mut rig = Rig::new();
    // 0x86 without 0x80
    rig.w16(RELOAD_REG, 0x86);
    rig.w32(TIMER1_REG, 1);
    // something in between
    rig.w16(RELOAD_REG, 0x80);
    rig.w16(RELOAD_REG, 0x00);
    rig.w16(RELOAD_REG, 0x86);
    rig.w32(TIMER1_REG, 2);
    // a preload write between the two halves
    rig.w16(RELOAD_REG, 0x80);
    rig.w32(TIMER2_REG, 3);
    rig.w16(RELOAD_REG, 0x86);
    rig.w32(TIMER1_REG, 4);
    assert_eq!((rig.r(TIMER1_REG, 4), rig.r(TIMER2_REG, 4)), (0xF_FFFF, 0xF_FFFF));
    assert_eq!(rig.esb.counters().refused_writes, 8);
    // Byte-wide unlock writes and reads in between are fine; 0x80 restarts.
    rig.esb.bar_write(0, RELOAD_REG, &[0x80]);
    rig.esb.bar_write(0, RELOAD_REG, &[0x80]);
    rig.esb.bar_write(0, RELOAD_REG, &[0x86]);
    let _ = rig.r(RELOAD_REG, 2);
    rig.w32(TIMER1_REG, 5);
    assert_eq!(rig.r(TIMER1_REG, 4), 5);
}

#[test]
fn preloads_are_20_bits_and_merge_partial_writes() {
    let mut rig = Rig::new();
    rig.unlock();
    rig.w32(TIMER1_REG, 0xFFFF_FFFF);
    assert_eq!(rig.r(TIMER1_REG, 4), 0xF_FFFF);
    rig.unlock();
    rig.w32(TIMER1_REG, 0x0123_4567);
    assert_eq!(rig.r(TIMER1_REG, 4), 0x3_4567);
    rig.unlock();
    rig.esb.bar_write(0, TIMER1_REG + 2, &[0x0A]);
    assert_eq!(rig.r(TIMER1_REG, 4), 0xA_4567);
    assert_eq!(rig.r(TIMER1_REG + 1, 1), 0x45);
    assert_eq!(rig.r(TIMER1_REG + 2, 2), 0x000A);
}

#[test]
fn heartbeat_30_at_1khz_expires_exactly() {
    let mut rig = Rig::new();
    rig.probe(30);
    rig.advance(ns(123_456_789));
    rig.start(false);
    let stage = 15360 * TICK_1K; // 15.0994944 s
    let armed_at = rig.now();
    assert_eq!(rig.facts(), vec![(WatchdogFact::Armed { stage1: ns(stage), stage2: ns(stage) }, armed_at)]);
    rig.advance(Duration::from_secs(7));
    rig.keepalive();
    let fed = rig.now();
    assert_eq!(rig.facts(), vec![(WatchdogFact::Fed, fed)]);
    assert_eq!(rig.esb.next_deadline(), Some(fed + ns(stage)));

    rig.to(fed + ns(stage) - ns(1));
    rig.esb.poll();
    assert!(rig.facts().is_empty());
    rig.advance(ns(1));
    rig.esb.poll();
    assert_eq!(rig.facts(), vec![(WatchdogFact::PreTimeout, fed + ns(stage))]);
    // (2 * 15360) * 983.04 us after the last feed
    let expiry = fed + ns(2 * 15360 * TICK_1K);
    assert_eq!(expiry - fed, ns(30_198_988_800));
    assert_eq!(rig.esb.next_deadline(), Some(expiry));
    rig.to(expiry - ns(1));
    rig.esb.poll();
    assert!(rig.facts().is_empty() && !rig.esb.timeout_flag());
    rig.advance(ns(1));
    rig.esb.poll();
    assert_eq!(rig.facts(), vec![(WatchdogFact::Expired, expiry)]);
    assert!(rig.esb.timeout_flag());
    assert_eq!(rig.r(RELOAD_REG, 2), 0x200);
    assert_eq!(rig.esb.next_deadline(), None, "the countdown stops at expiry");
    let c = rig.esb.counters();
    assert_eq!((c.feeds, c.pre_timeouts, c.expiries), (1, 1, 1));
}

#[test]
fn heartbeat_30_at_1mhz_expires_exactly() {
    let mut rig = Rig::new();
    rig.probe(30);
    rig.cfg_w16(CONFIG_REG, 0x0007);
    rig.start(false);
    let t0 = rig.now();
    let stage = 15360 * TICK_1M; // 14.7456 ms
    assert_eq!(rig.facts(), vec![(WatchdogFact::Armed { stage1: ns(stage), stage2: ns(stage) }, t0)]);
    // Late poll: both stages handled at once, each at its own time.
    rig.advance(Duration::from_secs(1));
    rig.esb.poll();
    assert_eq!(
        rig.facts(),
        vec![(WatchdogFact::PreTimeout, t0 + ns(stage)), (WatchdogFact::Expired, t0 + ns(2 * stage))]
    );
    assert_eq!(ns(2 * stage), ns(29_491_200));
}

#[test]
fn feed_in_either_stage_restarts_stage_one() {
    let mut rig = Rig::new();
    rig.unlock();
    rig.w32(TIMER1_REG, 10);
    rig.unlock();
    rig.w32(TIMER2_REG, 20);
    rig.cfg_w8(LOCK_REG, LOCK_ENABLE);
    let t0 = rig.now();
    // stage 1, halfway
    rig.advance(ns(5 * TICK_1K));
    rig.keepalive();
    assert_eq!(rig.esb.next_deadline(), Some(t0 + ns(15 * TICK_1K)));
    // into stage 2
    rig.to(t0 + ns(15 * TICK_1K + 3 * TICK_1K));
    rig.esb.poll();
    assert!(matches!(rig.esb.status().timer, TimerState::Counting { stage: Stage::Two, .. }));
    rig.keepalive();
    let fed = rig.now();
    assert_eq!(
        rig.esb.status().timer,
        TimerState::Counting { stage: Stage::One, deadline: fed + ns(10 * TICK_1K) }
    );
    let kinds: Vec<_> = rig.facts().into_iter().map(|f| f.0).collect();
    assert_eq!(kinds[1..], [WatchdogFact::Fed, WatchdogFact::PreTimeout, WatchdogFact::Fed]);
}

#[test]
fn a_feed_after_expiry_restarts_stage_one() {
    let mut rig = Rig::new();
    rig.set_heartbeat(1);
    rig.cfg_w8(LOCK_REG, LOCK_ENABLE);
    rig.advance(Duration::from_secs(5));
    rig.esb.poll();
    assert_eq!(rig.esb.status().timer, TimerState::Expired);
    rig.keepalive();
    assert_eq!(rig.esb.next_deadline(), Some(rig.now() + ns(512 * TICK_1K)));
    assert!(rig.esb.timeout_flag(), "only writing bit 9 clears the flag");
}

#[test]
fn pre_timeout_sets_gintsr_and_asserts_intx_until_cleared() {
    let mut rig = Rig::new();
    rig.cfg_w16(CONFIG_REG, 0x0000); // interrupt type IRQ
    rig.unlock();
    rig.w32(TIMER1_REG, 3);
    rig.cfg_w8(LOCK_REG, LOCK_ENABLE);
    rig.advance(ns(3 * TICK_1K - 1));
    assert_eq!(rig.r(GINTSR_REG, 4), 0);
    assert!(!rig.line.level());
    rig.advance(ns(1));
    // No poll: the register read itself brings the device up to date.
    assert_eq!(rig.r(GINTSR_REG, 4), 1);
    assert!(rig.line.level());
    assert_eq!(rig.cfg_r(STATUS, 2) & u32::from(STATUS_INTERRUPT), u32::from(STATUS_INTERRUPT));
    assert_eq!(rig.facts().last(), Some(&(WatchdogFact::PreTimeout, ns(3 * TICK_1K))));
    rig.w32(GINTSR_REG, 0);
    assert!(rig.line.level(), "writing 0 clears nothing");
    rig.w32(GINTSR_REG, 1);
    assert_eq!(rig.r(GINTSR_REG, 4), 0);
    assert!(!rig.line.level());
    assert_eq!(rig.cfg_r(STATUS, 2) & u32::from(STATUS_INTERRUPT), 0);
    assert_eq!(rig.line.changes(), 2);
}

#[test]
fn smi_disabled_and_intx_disable_do_not_assert() {
    for (cfg, command) in [
        (0x0002, COMMAND_MEMORY),
        (0x0003, COMMAND_MEMORY),
        (0x0001, COMMAND_MEMORY),
        (0x0000, COMMAND_MEMORY | COMMAND_INTX_DISABLE),
    ] {
        let mut rig = Rig::new();
        rig.cfg_w16(COMMAND, command);
        rig.cfg_w16(CONFIG_REG, cfg);
        rig.unlock();
        rig.w32(TIMER1_REG, 1);
        rig.cfg_w8(LOCK_REG, LOCK_ENABLE);
        rig.advance(ns(TICK_1K));
        assert_eq!(rig.r(GINTSR_REG, 4), 1, "cfg {cfg:#x}");
        assert_eq!(rig.line.changes(), 0, "cfg {cfg:#x} command {command:#x}");
    }
}

#[test]
fn output_disabled_stops_without_flag_or_report() {
    let mut rig = Rig::new();
    rig.cfg_w16(CONFIG_REG, 0x0023);
    rig.set_heartbeat(1);
    rig.cfg_w8(LOCK_REG, LOCK_ENABLE);
    rig.advance(Duration::from_secs(2));
    rig.esb.poll();
    let kinds: Vec<_> = rig.facts().into_iter().map(|f| f.0).collect();
    assert_eq!(kinds[1..], [WatchdogFact::PreTimeout]);
    assert!(!rig.esb.timeout_flag());
    assert_eq!(rig.r(RELOAD_REG, 2), 0);
    assert_eq!(rig.esb.status().timer, TimerState::Stopped);
    assert_eq!(rig.esb.next_deadline(), None);
    assert_eq!(rig.esb.counters().expiries, 0);
}

#[test]
fn free_running_repeats_and_never_expires() {
    let mut rig = Rig::new();
    rig.cfg_w16(CONFIG_REG, 0x0000);
    rig.unlock();
    rig.w32(TIMER1_REG, 2);
    rig.unlock();
    rig.w32(TIMER2_REG, 3);
    rig.cfg_w8(LOCK_REG, LOCK_ENABLE | LOCK_FUNC);
    rig.facts();
    let period = 5 * TICK_1K;
    for k in 0..4u64 {
        rig.to(ns(2 * TICK_1K + k * period));
        rig.esb.poll();
        assert_eq!(rig.facts(), vec![(WatchdogFact::PreTimeout, rig.now())]);
        assert!(rig.line.level());
        rig.w32(GINTSR_REG, 1);
        assert!(!rig.line.level());
        assert_eq!(rig.esb.next_deadline(), Some(rig.now() + ns(3 * TICK_1K)), "stage 2 next");
    }
    assert!(!rig.esb.timeout_flag());
    assert_eq!(rig.esb.counters().expiries, 0);
}

#[test]
fn free_running_catches_up_after_a_huge_jump_in_one_step() {
    let mut rig = Rig::new();
    rig.cfg_w16(CONFIG_REG, 0x0007);
    rig.unlock();
    rig.w32(TIMER1_REG, 1);
    rig.unlock();
    rig.w32(TIMER2_REG, 1);
    rig.cfg_w8(LOCK_REG, LOCK_ENABLE | LOCK_FUNC);
    rig.facts();
    let jump = 10 * 3600 * 1_000_000_000u64 + 7;
    rig.advance(ns(jump));
    let started = std::time::Instant::now();
    rig.esb.poll();
    assert!(started.elapsed() < Duration::from_millis(50), "catch-up must not loop per period");
    // stage-1 ends at 960 + k * 1920
    let ends = (jump - TICK_1M) / (2 * TICK_1M) + 1;
    let last = TICK_1M + (ends - 1) * 2 * TICK_1M;
    assert_eq!(rig.facts(), vec![(WatchdogFact::PreTimeout, ns(last))], "one fact per poll");
    assert_eq!(rig.esb.counters().pre_timeouts, ends);
    let next = rig.esb.next_deadline().unwrap();
    assert!(next > rig.now() && next <= rig.now() + ns(2 * TICK_1M));
}

#[test]
fn zero_preloads_count_as_one_and_never_spin() {
    let mut rig = Rig::new();
    rig.cfg_w16(CONFIG_REG, 0x0007);
    rig.unlock();
    rig.w32(TIMER1_REG, 0);
    rig.unlock();
    rig.w32(TIMER2_REG, 0);
    rig.cfg_w8(LOCK_REG, LOCK_ENABLE | LOCK_FUNC);
    assert_eq!(rig.esb.next_deadline(), Some(rig.now() + ns(TICK_1M)));
    for _ in 0..5 {
        rig.advance(ns(1234));
        rig.esb.poll();
        assert!(rig.esb.next_deadline().unwrap() > rig.now());
    }
}

#[test]
fn lock_makes_config_and_lock_read_only_until_reset() {
    let mut rig = Rig::new();
    rig.probe(30);
    rig.start(true); // nowayout: ENABLE | LOCK
    assert_eq!(rig.cfg_r(LOCK_REG, 1), 0x03);
    assert!(!rig.stop(), "a locked watchdog cannot be stopped");
    rig.cfg_w16(CONFIG_REG, 0x0027);
    rig.esb.config_write(CONFIG_REG, &[0u8; 4]);
    assert_eq!(rig.cfg_r(CONFIG_REG, 2), 0x0003);
    assert_eq!(rig.cfg_r(LOCK_REG, 1), 0x03);
    assert_eq!(rig.esb.counters().refused_writes, 3);
    assert!(rig.esb.status().locked && rig.esb.status().enabled);
    // Other config registers stay writable.
    rig.cfg_w8(0x3C, 5);
    assert_eq!(rig.cfg_r(0x3C, 1), 5);
    rig.esb.reset();
    assert_eq!(rig.cfg_r(LOCK_REG, 1), 0);
    rig.cfg_w16(COMMAND, COMMAND_MEMORY);
    rig.cfg_w8(LOCK_REG, LOCK_FUNC);
    assert_eq!(rig.cfg_r(LOCK_REG, 1), u32::from(LOCK_FUNC));
}

#[test]
fn timeout_flag_survives_reset_and_clears_only_by_writing_bit_9() {
    let mut rig = Rig::new();
    rig.set_heartbeat(1);
    rig.cfg_w16(CONFIG_REG, 0x0000);
    rig.cfg_w8(LOCK_REG, LOCK_ENABLE | LOCK_LOCK);
    rig.advance(Duration::from_secs(2));
    rig.esb.poll();
    assert!(rig.line.level());
    rig.esb.reset();
    assert!(!rig.line.level(), "reset deasserts INTx");
    assert!(rig.esb.timeout_flag());
    rig.cfg_w16(COMMAND, COMMAND_MEMORY);
    assert_eq!(rig.r(RELOAD_REG, 2), 0x200);
    rig.w16(RELOAD_REG, 0x200);
    assert!(rig.esb.timeout_flag(), "not without unlocking");
    rig.unlock();
    rig.w16(RELOAD_REG, 0x000);
    assert!(rig.esb.timeout_flag());
    rig.unlock();
    rig.w16(RELOAD_REG, 0x200);
    assert!(!rig.esb.timeout_flag());
    assert_eq!(rig.r(RELOAD_REG, 4), 0);
}

#[test]
fn reset_restores_power_on_values() {
    let mut rig = Rig::new();
    rig.cfg_w16(CONFIG_REG, 0x0025);
    rig.set_heartbeat(3);
    rig.cfg_w8(LOCK_REG, LOCK_ENABLE | LOCK_FUNC);
    rig.cfg_w8(0x3C, 7);
    rig.unlock();
    let before = rig.esb.counters();
    rig.esb.reset();
    assert_eq!(rig.cfg_r(CONFIG_REG, 2), 0);
    assert_eq!(rig.cfg_r(LOCK_REG, 1), 0);
    assert_eq!(rig.cfg_r(COMMAND, 2), 0);
    assert_eq!(rig.cfg_r(0x3C, 1), 10, "interrupt line back to what the VMM wrote");
    assert_eq!(rig.cfg_r(0x10, 4), BAR0_ADDR);
    assert_eq!(rig.esb.next_deadline(), None);
    rig.cfg_w16(COMMAND, COMMAND_MEMORY);
    assert_eq!((rig.r(TIMER1_REG, 4), rig.r(TIMER2_REG, 4)), (0xF_FFFF, 0xF_FFFF));
    rig.w32(TIMER1_REG, 1);
    assert_eq!(rig.r(TIMER1_REG, 4), 0xF_FFFF, "the unlock did not survive");
    assert_eq!(rig.esb.counters().feeds, before.feeds, "counters are the host's");
    let s = rig.esb.status();
    assert!(!s.enabled && !s.locked && !s.free_running && s.output_enabled);
    assert_eq!(
        (s.clock_mode, s.interrupt_type, s.timer),
        (ClockMode::Khz1, InterruptType::Irq, TimerState::Disabled)
    );
}

#[test]
fn count_register_reads_the_running_stage() {
    let mut rig = Rig::new();
    assert_eq!(rig.cfg_r(COUNT_REG, 4), 0, "nothing counting");
    rig.unlock();
    rig.w32(TIMER1_REG, 100);
    rig.unlock();
    rig.w32(TIMER2_REG, 50);
    rig.cfg_w8(LOCK_REG, LOCK_ENABLE);
    assert_eq!(rig.cfg_r(COUNT_REG, 4), 100);
    rig.advance(ns(TICK_1K - 1));
    assert_eq!(rig.cfg_r(COUNT_REG, 4), 100);
    rig.advance(ns(1));
    assert_eq!(rig.cfg_r(COUNT_REG, 4), 99);
    rig.advance(ns(99 * TICK_1K));
    assert_eq!(rig.cfg_r(COUNT_REG, 4), 50, "stage 2 from preload 2");
    assert_eq!(rig.cfg_r(COUNT_REG, 2), 50);
    rig.advance(ns(30 * TICK_1K));
    assert_eq!(rig.cfg_r(COUNT_REG, 4), 20);
    rig.esb.config_write(COUNT_REG, &[0; 4]);
    assert_eq!(rig.cfg_r(COUNT_REG, 4), 20, "read-only");
}

#[test]
fn clock_select_change_keeps_the_count() {
    let mut rig = Rig::new();
    rig.unlock();
    rig.w32(TIMER1_REG, 100);
    rig.cfg_w8(LOCK_REG, LOCK_ENABLE);
    rig.advance(ns(40 * TICK_1K));
    rig.cfg_w16(CONFIG_REG, 0x0004);
    assert_eq!(rig.cfg_r(COUNT_REG, 4), 60);
    assert_eq!(rig.esb.next_deadline(), Some(rig.now() + ns(60 * TICK_1M)));
}

#[test]
fn preload_changes_apply_from_the_next_stage() {
    let mut rig = Rig::new();
    rig.unlock();
    rig.w32(TIMER1_REG, 10);
    rig.cfg_w8(LOCK_REG, LOCK_ENABLE);
    rig.unlock();
    rig.w32(TIMER1_REG, 20);
    rig.unlock();
    rig.w32(TIMER2_REG, 5);
    assert_eq!(rig.esb.next_deadline(), Some(ns(10 * TICK_1K)));
    rig.to(ns(10 * TICK_1K));
    rig.esb.poll();
    assert_eq!(rig.esb.next_deadline(), Some(ns(15 * TICK_1K)));
    rig.keepalive();
    assert_eq!(rig.esb.next_deadline(), Some(rig.now() + ns(20 * TICK_1K)));
}

#[test]
fn fed_is_reported_only_while_enabled() {
    let mut rig = Rig::new();
    rig.keepalive();
    rig.keepalive();
    assert!(rig.facts().is_empty());
    assert_eq!(rig.esb.counters().feeds, 0);
    rig.cfg_w8(LOCK_REG, LOCK_ENABLE);
    rig.keepalive();
    rig.cfg_w8(LOCK_REG, 0);
    rig.keepalive();
    let kinds: Vec<_> = rig.facts().into_iter().map(|f| f.0).collect();
    assert!(matches!(kinds[..], [WatchdogFact::Armed { .. }, WatchdogFact::Fed, WatchdogFact::Disarmed]));
}

#[test]
fn armed_and_disarmed_only_on_enable_edges() {
    let mut rig = Rig::new();
    rig.cfg_w8(LOCK_REG, 0);
    rig.cfg_w8(LOCK_REG, LOCK_ENABLE);
    rig.advance(ns(5));
    rig.cfg_w8(LOCK_REG, LOCK_ENABLE);
    rig.cfg_w8(LOCK_REG, LOCK_ENABLE | LOCK_FUNC);
    rig.cfg_w16(CONFIG_REG, 0x0003);
    assert_eq!(rig.esb.next_deadline(), Some(ns(0xF_FFFF * TICK_1K)), "re-writing ENABLE does not restart");
    rig.cfg_w8(LOCK_REG, 0);
    rig.cfg_w8(LOCK_REG, 0);
    let stage = ns(0xF_FFFF * TICK_1K);
    assert_eq!(
        rig.facts(),
        vec![(WatchdogFact::Armed { stage1: stage, stage2: stage }, ns(0)), (WatchdogFact::Disarmed, ns(5))]
    );
    assert_eq!(rig.esb.next_deadline(), None);
}

#[test]
fn linux_stop_feeds_then_disarms() {
    let mut rig = Rig::new();
    rig.probe(10);
    rig.start(false);
    rig.advance(Duration::from_secs(1));
    assert!(rig.stop());
    let kinds: Vec<_> = rig.facts().into_iter().map(|f| f.0).collect();
    assert!(matches!(kinds[..], [WatchdogFact::Armed { .. }, WatchdogFact::Fed, WatchdogFact::Disarmed]));
    rig.advance(Duration::from_secs(100));
    rig.esb.poll();
    assert!(rig.facts().is_empty());
}

#[test]
fn memory_space_disable_gates_bar0() {
    let mut rig = Rig::new();
    rig.cfg_w16(COMMAND, 0);
    assert_eq!(rig.r(TIMER1_REG, 4), 0xFFFF_FFFF);
    assert_eq!(rig.r(RELOAD_REG, 2), 0xFFFF);
    rig.unlock();
    rig.w32(TIMER1_REG, 7);
    rig.cfg_w16(COMMAND, COMMAND_MEMORY);
    assert_eq!(rig.r(TIMER1_REG, 4), 0xF_FFFF);
    rig.w32(TIMER1_REG, 7);
    assert_eq!(rig.r(TIMER1_REG, 4), 0xF_FFFF, "the unlock never reached the device");
    assert_eq!(rig.esb.counters().refused_writes, 1);
}

#[test]
fn status_snapshot() {
    let mut rig = Rig::new();
    rig.probe(30);
    rig.start(true);
    rig.keepalive();
    let s = rig.esb.status();
    assert!(s.enabled && s.locked && !s.free_running && s.output_enabled && !s.gintsr && !s.timeout_flag);
    assert_eq!((s.preload1, s.preload2), (15360, 15360));
    assert_eq!((s.stage1, s.stage2), (ns(15360 * TICK_1K), ns(15360 * TICK_1K)));
    assert_eq!(s.interrupt_type, InterruptType::Disabled);
    assert_eq!(s.timer, TimerState::Counting { stage: Stage::One, deadline: ns(15360 * TICK_1K) });
    assert_eq!(s.counters.feeds, 1);
}

#[test]
fn every_offset_and_width_is_safe() {
    let mut rig = Rig::new();
    for bar in 0..7 {
        for off in 0..32u64 {
            for len in [0usize, 1, 2, 3, 4, 8] {
                let mut b = vec![0u8; len];
                rig.esb.bar_read(bar, off, &mut b);
                rig.esb.bar_write(bar, off, &vec![0xFF; len]);
            }
        }
    }
    rig.esb.bar_read(0, u64::MAX, &mut [0u8; 4]);
    rig.esb.bar_write(0, u64::MAX, &[0u8; 4]);
    let mut wide = [0u8; 8];
    rig.esb.bar_read(0, 0, &mut wide);
    assert_eq!(wide, [0xFF; 8], "accesses spanning registers read all ones");
    for off in 0..=260u16 {
        for len in [0usize, 1, 2, 3, 4, 8] {
            let mut b = vec![0u8; len];
            rig.esb.config_read(off, &mut b);
            rig.esb.config_write(off, &vec![0xFF; len]);
        }
    }
    rig.advance(Duration::from_secs(1 << 40));
    rig.esb.poll();
}
