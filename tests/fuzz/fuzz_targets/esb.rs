//! The 6300ESB watchdog on a virtual clock: config and BAR0 accesses of
//! every width and offset, interleaved with clock advances (tiny to huge),
//! `poll()`, `status()` and system resets.
//!
//! A recording observer checks the facts against a model of the arm state:
//! - Armed only while disarmed, Disarmed only while armed; Fed, PreTimeout
//!   and Expired only while armed (so never an Expired for an interval in
//!   which the device was disabled throughout);
//! - no PreTimeout or second Expired after an Expired until a feed or a
//!   new arm; Expired strictly after the arm/feed that started the countdown;
//! - fact times never in the future and never going backwards;
//! - at most one fact of each kind per device call;
//! - after `poll()`, `next_deadline()` is strictly in the future and exists
//!   exactly while the watchdog is enabled and counting;
//! - counters match the facts, the IDs never change, preloads stay 20-bit.
#![no_main]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

use kennel_devices::clock::{Clock, VirtualClock};
use kennel_devices::i6300esb::regs::*;
use kennel_devices::i6300esb::{EsbParams, I6300Esb, TimerState, WatchdogFact, WatchdogObserver};
use kennel_devices::pci::PciDevice;

#[derive(Default)]
struct Recorder(Mutex<Vec<(WatchdogFact, Duration)>>);
impl WatchdogObserver for Recorder {
    fn report(&self, fact: WatchdogFact, at: Duration) {
        self.0.lock().unwrap().push((fact, at));
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    CfgRead {
        offset: u8,
        width: u8,
    },
    CfgWrite {
        offset: u8,
        width: u8,
        value: u32,
    },
    BarRead {
        bar: u8,
        offset: u8,
        width: u8,
    },
    BarWrite {
        bar: u8,
        offset: u8,
        width: u8,
        value: u32,
    },
    /// The driver's unlock sequence followed by one write at `reg`.
    Unlocked {
        reg: u8,
        value: u32,
    },
    /// Advance by a few ticks of either rate.
    Ticks(u16),
    /// Advance by up to ~18 minutes.
    Advance(u32),
    /// Advance by an arbitrary (possibly saturating) number of nanoseconds.
    Jump(u64),
    Poll,
    Status,
    Reset,
}

fn width(w: u8) -> usize {
    match w % 16 {
        0..=4 => 1,
        5..=9 => 2,
        10..=14 => 4,
        _ => [0, 3, 8][usize::from(w >> 6) % 3],
    }
}

#[derive(Debug, Default)]
struct Model {
    armed: bool,
    expired: bool,
    /// When the running countdown last started (Armed or Fed).
    started: Duration,
    last_at: Duration,
    feeds: u64,
    expiries: u64,
}

impl Model {
    fn check(&mut self, facts: &[(WatchdogFact, Duration)], now: Duration) {
        let mut seen = [0u8; 5];
        for &(fact, at) in facts {
            assert!(at <= now, "{fact:?} at {at:?} is in the future (now {now:?})");
            assert!(at >= self.last_at, "{fact:?} at {at:?} goes back before {:?}", self.last_at);
            self.last_at = at;
            let k = match fact {
                WatchdogFact::Armed { .. } => 0,
                WatchdogFact::Fed => 1,
                WatchdogFact::Disarmed => 2,
                WatchdogFact::PreTimeout => 3,
                WatchdogFact::Expired => 4,
            };
            seen[k] += 1;
            assert!(seen[k] <= 1, "two {fact:?} facts from one call: {facts:?}");
            match fact {
                WatchdogFact::Armed { stage1, stage2 } => {
                    assert!(!self.armed, "Armed while armed: {facts:?}");
                    assert!(stage1 > Duration::ZERO && stage2 > Duration::ZERO);
                    (self.armed, self.expired, self.started) = (true, false, at);
                }
                WatchdogFact::Fed => {
                    assert!(self.armed, "Fed while disarmed");
                    (self.expired, self.started) = (false, at);
                    self.feeds += 1;
                }
                WatchdogFact::Disarmed => {
                    assert!(self.armed, "Disarmed while disarmed");
                    self.armed = false;
                }
                WatchdogFact::PreTimeout => {
                    assert!(self.armed && !self.expired, "PreTimeout while disarmed or expired");
                    assert!(at > self.started, "PreTimeout at the instant the countdown started");
                }
                WatchdogFact::Expired => {
                    assert!(self.armed && !self.expired, "Expired while disarmed or already expired");
                    assert!(at > self.started, "Expired at the instant the countdown started");
                    self.expired = true;
                    self.expiries += 1;
                }
            }
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let clock = VirtualClock::new();
    let facts = Arc::new(Recorder::default());
    // A system reset is what the VMM does: a new device keeping only the
    // timeout flag.
    let new_esb = |timeout_flag: bool| {
        I6300Esb::new(EsbParams {
            bar0_addr: 0xFEBF_F000,
            irq_line: 10,
            irq: None,
            clock: Arc::new(clock.clone()),
            observer: facts.clone(),
            timeout_flag,
        })
        .unwrap()
    };
    let mut esb = new_esb(false);
    // pci_enable_device: memory decoding on.
    esb.config_write(0x04, &[0x02, 0x00]);
    let mut model = Model::default();

    for op in ops.into_iter().take(400) {
        let mut polled = false;
        match op {
            Op::CfgRead { offset, width: w } => {
                let mut d = vec![0u8; width(w)];
                esb.config_read(u16::from(offset), &mut d);
            }
            Op::CfgWrite { offset, width: w, value } => {
                let b = u64::from(value).to_le_bytes();
                esb.config_write(u16::from(offset), &b[..width(w)]);
            }
            Op::BarRead { bar, offset, width: w } => {
                let mut d = vec![0u8; width(w)];
                esb.bar_read(usize::from(bar % 8 / 7), u64::from(offset % 32), &mut d);
            }
            Op::BarWrite { bar, offset, width: w, value } => {
                let b = u64::from(value).to_le_bytes();
                esb.bar_write(usize::from(bar % 8 / 7), u64::from(offset % 32), &b[..width(w)]);
            }
            Op::Unlocked { reg, value } => {
                esb.bar_write(0, RELOAD_REG, &UNLOCK1.to_le_bytes());
                esb.bar_write(0, RELOAD_REG, &UNLOCK2.to_le_bytes());
                esb.bar_write(0, u64::from(reg % 4) * 4, &value.to_le_bytes());
            }
            Op::Ticks(n) => clock.advance(Duration::from_nanos(u64::from(n) * 960)),
            Op::Advance(n) => clock.advance(Duration::from_micros(u64::from(n) >> 4)),
            Op::Jump(n) => clock.advance(Duration::from_nanos(n)),
            Op::Poll => {
                esb.poll();
                polled = true;
            }
            Op::Status => {
                let s = esb.status();
                assert!(s.preload1 <= PRELOAD_MASK && s.preload2 <= PRELOAD_MASK);
                assert_eq!(s.enabled, s.timer != TimerState::Disabled, "{s:?}");
                if let TimerState::Counting { deadline, .. } = s.timer {
                    assert!(deadline > clock.now(), "status shows a past deadline: {s:?}");
                }
                polled = true;
            }
            Op::Reset => {
                esb = new_esb(esb.timeout_flag());
                // A new device: disarmed, and counting from zero.
                (model.armed, model.expired) = (false, false);
                (model.feeds, model.expiries) = (0, 0);
            }
        }
        let now = clock.now();
        let new: Vec<_> = std::mem::take(&mut *facts.0.lock().unwrap());
        model.check(&new, now);
        if polled {
            if let Some(d) = esb.next_deadline() {
                assert!(d > now, "next_deadline {d:?} is not after now {now:?}");
            }
        }
        if esb.next_deadline().is_some() {
            assert!(model.armed && !model.expired, "counting while the model says disarmed or expired");
        }
        let c = esb.counters();
        assert_eq!((c.feeds, c.expiries), (model.feeds, model.expiries), "counters disagree with facts");
        let mut id = [0u8; 4];
        esb.config_read(0, &mut id);
        assert_eq!(u32::from_le_bytes(id), u32::from(DEVICE_ID) << 16 | u32::from(VENDOR_ID));
        // That read brings the device up to date too, which may report.
        let new: Vec<_> = std::mem::take(&mut *facts.0.lock().unwrap());
        model.check(&new, now);
    }
});
