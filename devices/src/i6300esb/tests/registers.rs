//! Registers: identity, unlock rules, LOCK, reset, gating, odd accesses.

use std::sync::Arc;
use std::time::Duration;

use super::*;

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
    rig.system_reset();
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
    rig.system_reset();
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
    rig.system_reset();
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

#[test]
fn wired_through_config_mechanism_and_mmio_bus() {
    use crate::bus::{Bus, BusDevice};
    use crate::pci::{HostBridge, PciBarRegion, PciBus, PciConfigIo};

    let clock = VirtualClock::new();
    let facts = Arc::new(Facts::default());
    let esb = Arc::new(std::sync::Mutex::new(
        I6300Esb::new(EsbParams {
            bar0_addr: BAR0_ADDR,
            irq_line: 10,
            irq: None,
            clock: Arc::new(clock.clone()),
            observer: facts.clone(),
            timeout_flag: false,
        })
        .unwrap(),
    ));
    let mut pci = PciBus::new();
    pci.add(0, Arc::new(std::sync::Mutex::new(HostBridge::new()))).unwrap();
    pci.add(1, esb.clone()).unwrap();
    let mut cf8 = PciConfigIo::new(pci);
    let mut mmio = Bus::new();
    mmio.insert(Arc::new(PciBarRegion::new(esb.clone(), 0)), u64::from(BAR0_ADDR), 16).unwrap();

    let select =
        |io: &mut PciConfigIo, reg: u32| io.write(0, &(0x8000_0000u32 | 1 << 11 | reg).to_le_bytes());
    let mut d = [0u8; 4];
    select(&mut cf8, 0x00);
    cf8.read(4, &mut d);
    assert_eq!(u32::from_le_bytes(d), 0x25AB_8086);
    select(&mut cf8, 0x10);
    cf8.read(4, &mut d);
    assert_eq!(u32::from_le_bytes(d), BAR0_ADDR);
    select(&mut cf8, 0x04);
    cf8.write(4, &[0x02, 0x00]); // memory space on
    select(&mut cf8, 0x68);
    cf8.write(4, &[LOCK_ENABLE]);

    let base = u64::from(BAR0_ADDR);
    assert!(mmio.write(base + RELOAD_REG, &[0x80, 0]));
    assert!(mmio.write(base + RELOAD_REG, &[0x86, 0]));
    assert!(mmio.write(base + RELOAD_REG, &[0x00, 0x01]));
    let mut t1 = [0u8; 4];
    assert!(mmio.read(base + TIMER1_REG, &mut t1));
    assert_eq!(u32::from_le_bytes(t1), 0xF_FFFF);
    let kinds: Vec<_> = facts.0.lock().unwrap().iter().map(|f| f.0).collect();
    assert!(matches!(kinds[..], [WatchdogFact::Armed { .. }, WatchdogFact::Fed]));
    assert_eq!(crate::bus::lock(&esb).counters().feeds, 1);
}
