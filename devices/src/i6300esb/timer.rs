//! The two-stage countdown as a pure function of time.
//!
//! A running countdown is "stage S started at T with N counts of length L".
//! [`advance`] takes that and the current time and says what happened in
//! between, in O(1) however much time passed: a free-running timer with
//! 0.96 us stages that nobody polled for hours is caught up with one
//! division, not billions of iterations.
//!
//! The device calls `advance` before every register access and whenever the
//! VMM polls, so the preloads and mode passed in are the ones that were in
//! force for the whole interval.

use std::time::Duration;

/// One PCI clock at 100/3 MHz, exactly.
pub const PCI_CLOCK_NS: u64 = 30;

/// The counter's decrement rate (config 0x60 bit 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockMode {
    /// 2^15 PCI clocks per count: 983.04 us.
    Khz1,
    /// 2^5 PCI clocks per count: 0.96 us.
    Mhz1,
}

impl ClockMode {
    pub fn tick_ns(self) -> u64 {
        match self {
            ClockMode::Khz1 => PCI_CLOCK_NS << 15,
            ClockMode::Mhz1 => PCI_CLOCK_NS << 5,
        }
    }

    /// How long `preload` counts last. A preload of 0 counts as 1: the
    /// datasheet leaves 0 undefined, and a zero-length stage would expire at
    /// the instant it starts, over and over in free-running mode.
    pub fn duration(self, preload: u32) -> Duration {
        Duration::from_nanos(u64::from(effective(preload)) * self.tick_ns())
    }
}

/// The number of counts a preload actually lasts.
pub fn effective(preload: u32) -> u32 {
    preload.max(1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    One,
    Two,
}

/// A stage in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Countdown {
    pub stage: Stage,
    pub start: Duration,
    /// Counts this stage lasts from `start` (at least 1).
    pub counts: u32,
    pub tick_ns: u64,
}

fn ns(d: Duration) -> u128 {
    d.as_nanos()
}

fn dur(n: u128) -> Duration {
    const G: u128 = 1_000_000_000;
    // Saturate rather than wrap: beyond u64 seconds nothing is meaningful.
    let secs = u64::try_from(n / G).unwrap_or(u64::MAX);
    Duration::new(secs, (n % G) as u32)
}

impl Countdown {
    pub fn new(stage: Stage, start: Duration, preload: u32, mode: ClockMode) -> Self {
        Self { stage, start, counts: effective(preload), tick_ns: mode.tick_ns() }
    }

    fn len_ns(&self) -> u128 {
        u128::from(self.counts) * u128::from(self.tick_ns)
    }

    /// When this stage ends.
    pub fn deadline(&self) -> Duration {
        dur(ns(self.start) + self.len_ns())
    }

    /// The counter value at `now`: `counts` at the start, 1 during the last
    /// count, 0 once the stage is over.
    pub fn count_at(&self, now: Duration) -> u32 {
        let elapsed = ns(now).saturating_sub(ns(self.start)) / u128::from(self.tick_ns);
        let left = u128::from(self.counts).saturating_sub(elapsed);
        u32::try_from(left).unwrap_or(u32::MAX)
    }

    /// The same stage continuing at another rate from `now`: the counter
    /// keeps its value; the part of the current count already elapsed is
    /// dropped (at most one count of the old rate).
    pub fn rebase(&self, now: Duration, mode: ClockMode) -> Self {
        Self { start: now, counts: self.count_at(now).max(1), tick_ns: mode.tick_ns(), ..*self }
    }
}

/// What happened between a countdown's start and `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advance {
    /// The stage in progress at `now`; None once stage 2 has ended in
    /// watchdog mode.
    pub countdown: Option<Countdown>,
    /// How many times stage 1 ended.
    pub stage1_ends: u64,
    /// When stage 1 last ended.
    pub last_stage1_end: Option<Duration>,
    /// When stage 2 ended (watchdog mode only; the countdown stopped there).
    pub stage2_end: Option<Duration>,
}

/// Runs `cd` forward to `now`. `preload1`/`preload2` are the raw register
/// values, `free_running` the lock register's FUNC bit.
pub fn advance(cd: Countdown, now: Duration, preload1: u32, preload2: u32, free_running: bool) -> Advance {
    let mut out = Advance { countdown: Some(cd), stage1_ends: 0, last_stage1_end: None, stage2_end: None };
    if now < cd.deadline() {
        return out;
    }
    let tick = cd.tick_ns;
    let stage =
        |stage, start: u128, counts: u32| Countdown { stage, start: dur(start), counts, tick_ns: tick };
    let (c1, c2) = (effective(preload1), effective(preload2));
    let (len1, len2) = (u128::from(c1) * u128::from(tick), u128::from(c2) * u128::from(tick));

    // Normalise to "stage 1 ended at e1".
    let e1 = match cd.stage {
        Stage::One => ns(cd.deadline()),
        Stage::Two => {
            let end = ns(cd.deadline());
            if !free_running {
                out.countdown = None;
                out.stage2_end = Some(dur(end));
                return out;
            }
            let next = stage(Stage::One, end, c1);
            if now < next.deadline() {
                out.countdown = Some(next);
                return out;
            }
            end + len1
        }
    };

    let now = ns(now);
    if !free_running {
        out.stage1_ends = 1;
        out.last_stage1_end = Some(dur(e1));
        if now < e1 + len2 {
            out.countdown = Some(stage(Stage::Two, e1, c2));
        } else {
            out.countdown = None;
            out.stage2_end = Some(dur(e1 + len2));
        }
        return out;
    }

    // Free-running: from e1 the timer cycles stage 2, stage 1, stage 2, ...;
    // every cycle ends with a stage-1 end.
    let period = len1 + len2;
    let cycles = (now - e1) / period;
    let cycle_start = e1 + cycles * period;
    out.stage1_ends = u64::try_from(cycles).unwrap_or(u64::MAX).saturating_add(1);
    out.last_stage1_end = Some(dur(cycle_start));
    out.countdown = Some(if now - cycle_start < len2 {
        stage(Stage::Two, cycle_start, c2)
    } else {
        stage(Stage::One, cycle_start + len2, c1)
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn at(ns: u64) -> Duration {
        Duration::from_nanos(ns)
    }

    #[test]
    fn tick_lengths_are_exact() {
        assert_eq!(ClockMode::Khz1.tick_ns(), 983_040);
        assert_eq!(ClockMode::Mhz1.tick_ns(), 960);
        assert_eq!(ClockMode::Khz1.duration(15360), at(15_099_494_400));
        assert_eq!(ClockMode::Mhz1.duration(0), at(960), "a zero preload lasts one count");
    }

    #[test]
    fn count_runs_down_from_the_preload() {
        let cd = Countdown::new(Stage::One, at(1000), 3, ClockMode::Mhz1);
        assert_eq!(cd.deadline(), at(1000 + 3 * 960));
        assert_eq!(cd.count_at(at(0)), 3);
        assert_eq!(cd.count_at(at(1000)), 3);
        assert_eq!(cd.count_at(at(1959)), 3);
        assert_eq!(cd.count_at(at(1960)), 2);
        assert_eq!(cd.count_at(at(3879)), 1);
        assert_eq!(cd.count_at(at(3880)), 0);
    }

    #[test]
    fn nothing_happens_before_the_deadline() {
        let cd = Countdown::new(Stage::One, at(0), 10, ClockMode::Mhz1);
        let a = advance(cd, at(9599), 10, 10, false);
        assert_eq!(a.countdown, Some(cd));
        assert_eq!((a.stage1_ends, a.last_stage1_end, a.stage2_end), (0, None, None));
    }

    #[test]
    fn watchdog_mode_stage1_then_stage2_then_stop() {
        let cd = Countdown::new(Stage::One, at(0), 10, ClockMode::Mhz1);
        let a = advance(cd, at(9600), 10, 5, false);
        assert_eq!(a.stage1_ends, 1);
        assert_eq!(a.last_stage1_end, Some(at(9600)));
        assert_eq!(
            a.countdown,
            Some(Countdown { stage: Stage::Two, start: at(9600), counts: 5, tick_ns: 960 })
        );
        let b = advance(a.countdown.unwrap(), at(14_399), 10, 5, false);
        assert_eq!(b.countdown, a.countdown);
        let c = advance(a.countdown.unwrap(), at(14_400), 10, 5, false);
        assert_eq!((c.countdown, c.stage2_end, c.stage1_ends), (None, Some(at(14_400)), 0));
    }

    #[test]
    fn watchdog_mode_both_stages_in_one_step() {
        let cd = Countdown::new(Stage::One, at(5), 2, ClockMode::Khz1);
        let a = advance(cd, at(3600 * 1000 * MS), 2, 3, false);
        assert_eq!(a.stage1_ends, 1);
        assert_eq!(a.last_stage1_end, Some(at(5 + 2 * 983_040)));
        assert_eq!(a.stage2_end, Some(at(5 + 5 * 983_040)));
        assert_eq!(a.countdown, None);
    }

    #[test]
    fn free_running_cycles_forever() {
        let cd = Countdown::new(Stage::One, at(0), 2, ClockMode::Mhz1);
        // stage 1 [0, 1920), stage 2 [1920, 4800), stage 1 [4800, 6720), ...
        let a = advance(cd, at(1920), 2, 3, true);
        assert_eq!((a.stage1_ends, a.last_stage1_end), (1, Some(at(1920))));
        let s2 = a.countdown.unwrap();
        assert_eq!((s2.stage, s2.deadline()), (Stage::Two, at(4800)));
        let b = advance(s2, at(4799), 2, 3, true);
        assert_eq!((b.stage1_ends, b.countdown), (0, Some(s2)));
        let b = advance(s2, at(4800), 2, 3, true);
        assert_eq!(b.stage1_ends, 0);
        assert_eq!(
            b.countdown.unwrap(),
            Countdown { stage: Stage::One, start: at(4800), counts: 2, tick_ns: 960 }
        );
        let c = advance(s2, at(6720), 2, 3, true);
        assert_eq!((c.stage1_ends, c.last_stage1_end), (1, Some(at(6720))));
        assert_eq!(c.countdown.unwrap().stage, Stage::Two);
        assert_eq!(c.countdown.unwrap().deadline(), at(9600));
    }

    #[test]
    fn free_running_catches_up_hours_at_once() {
        // preload 1 at 1 MHz: a stage every 0.96 us, for ten hours.
        let cd = Countdown::new(Stage::One, at(0), 1, ClockMode::Mhz1);
        let now = at(36_000 * 1000 * MS + 123);
        let a = advance(cd, now, 1, 1, true);
        // stage-1 ends at 960 + k*1920
        let expected_ends = (36_000_000_000_123u64 - 960) / 1920 + 1;
        assert_eq!(a.stage1_ends, expected_ends);
        let last = 960 + (expected_ends - 1) * 1920;
        assert_eq!(a.last_stage1_end, Some(at(last)));
        let next = a.countdown.unwrap();
        assert!(next.start <= now && now < next.deadline());
        assert_eq!(a.stage2_end, None);
    }

    #[test]
    fn free_running_from_stage_two() {
        let cd = Countdown::new(Stage::Two, at(0), 1, ClockMode::Mhz1);
        // stage 2 ends 960, stage 1 ends 960+1920=2880, then every 2880.
        let a = advance(cd, at(960), 2, 1, true);
        assert_eq!(a.stage1_ends, 0);
        assert_eq!(
            a.countdown.unwrap(),
            Countdown { stage: Stage::One, start: at(960), counts: 2, tick_ns: 960 }
        );
        let b = advance(cd, at(2880 + 2880 * 3), 2, 1, true);
        assert_eq!((b.stage1_ends, b.last_stage1_end), (4, Some(at(2880 * 4))));
    }

    #[test]
    fn rebase_keeps_the_count() {
        let cd = Countdown::new(Stage::One, at(0), 100, ClockMode::Khz1);
        let r = cd.rebase(at(10 * 983_040 + 5), ClockMode::Mhz1);
        assert_eq!(r.counts, 90);
        assert_eq!(r.deadline(), at(10 * 983_040 + 5 + 90 * 960));
    }

    #[test]
    fn saturates_at_the_end_of_time() {
        let cd = Countdown::new(Stage::One, Duration::MAX, 5, ClockMode::Khz1);
        assert_eq!(cd.deadline().as_secs(), u64::MAX);
        let _ = advance(cd, Duration::MAX, 5, 5, true);
        let _ = advance(cd, Duration::MAX, 5, 5, false);
    }
}
