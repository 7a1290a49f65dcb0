//! The countdown: stages, feeds, interrupts, facts, to the nanosecond.

use std::time::Duration;

use super::*;

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
