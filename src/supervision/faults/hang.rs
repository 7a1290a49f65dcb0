//! A `boot:hang` fault within one boot cycle: when it is due and whether it
//! has struck. The controller owns one of these and a timer; everything the
//! fault decides lives here, driven by plain times so tests need no VM.

use std::time::Duration;

use super::{FaultPlan, HangSince};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HangFault {
    /// When the vCPUs stop, on the controller's pausable clock.
    due: Option<Duration>,
    /// A `since=first-feed` hang still waiting for the cycle's first feed.
    after_first_feed: Option<Duration>,
    /// The vCPUs were stopped by this fault: a `cont` must not wake them.
    struck: bool,
}

impl HangFault {
    /// The hang (if any) the plan gives boot cycle `cycle`, starting `now`.
    pub fn for_cycle(plan: &FaultPlan, cycle: u64, now: Duration) -> Self {
        match plan.hang_for(cycle) {
            Some((after, HangSince::Boot)) => {
                Self { due: Some(now.saturating_add(after)), ..Self::default() }
            }
            Some((after, HangSince::FirstFeed)) => Self { after_first_feed: Some(after), ..Self::default() },
            None => Self::default(),
        }
    }

    /// The cycle's first feed came at `now`. Returns true when that made
    /// the hang due (the timer needs arming).
    pub fn first_feed(&mut self, now: Duration) -> bool {
        match self.after_first_feed.take() {
            Some(after) => {
                self.due = Some(now.saturating_add(after));
                true
            }
            None => false,
        }
    }

    pub fn due(&self) -> Option<Duration> {
        self.due
    }

    /// The timer fired. Returns true when the hang strikes now (once).
    pub fn strike(&mut self) -> bool {
        if self.due.take().is_none() {
            return false;
        }
        self.struck = true;
        true
    }

    pub fn struck(&self) -> bool {
        self.struck
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(spec: &str) -> FaultPlan {
        FaultPlan::parse_all(&[spec.to_string()], 1).unwrap()
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_hang_since_boot_is_due_after_the_cycle_starts_and_strikes_once() {
        let mut h = HangFault::for_cycle(&plan("boot:hang,after=3s,cycle=2"), 2, 10 * S);
        assert_eq!(h.due(), Some(13 * S));
        assert!(!h.first_feed(11 * S), "a boot hang ignores the first feed");
        assert!(h.strike());
        assert!(h.struck());
        assert!(!h.strike(), "strikes once");
    }

    #[test]
    fn a_hang_since_first_feed_waits_for_it() {
        let mut h = HangFault::for_cycle(&plan("boot:hang,after=2s,since=first-feed"), 1, S);
        assert_eq!(h.due(), None);
        assert!(!h.strike(), "not before the first feed");
        assert!(h.first_feed(5 * S));
        assert_eq!(h.due(), Some(7 * S));
        assert!(!h.first_feed(6 * S), "the first feed comes once");
        assert!(h.strike());
    }

    #[test]
    fn a_cycle_the_spec_does_not_name_has_no_hang() {
        let mut h = HangFault::for_cycle(&plan("boot:hang,cycle=2"), 1, S);
        assert_eq!(h, HangFault::default());
        assert!(!h.first_feed(S));
        assert!(!h.strike());
        assert!(!h.struck());
    }
}
