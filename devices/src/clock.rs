//! Time sources for devices.
//!
//! Devices never read the host clock themselves: they are given a [`Clock`],
//! so unit tests drive them with a [`VirtualClock`] to the nanosecond and the
//! VMM gives them a monotonic clock that stands still while the VM is paused.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A monotonic clock. `now()` never goes backwards.
pub trait Clock: Send + Sync {
    fn now(&self) -> Duration;
}

/// A clock moved only by hand; clones share the same time.
#[derive(Clone, Debug, Default)]
pub struct VirtualClock {
    nanos: Arc<AtomicU64>,
}

impl VirtualClock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // fetch_update never fails with a closure that always returns Some.
        let _ = self.nanos.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| Some(n.saturating_add(by)));
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

/// The host's monotonic clock, minus the time spent paused.
#[derive(Debug)]
pub struct PausableClock {
    origin: Instant,
    // nanoseconds spent paused before the current pause, and the start of
    // the current pause (u64::MAX when running)
    paused_total: AtomicU64,
    paused_at: AtomicU64,
}

const RUNNING: u64 = u64::MAX;

impl Default for PausableClock {
    fn default() -> Self {
        Self::new()
    }
}

impl PausableClock {
    pub fn new() -> Self {
        Self { origin: Instant::now(), paused_total: AtomicU64::new(0), paused_at: AtomicU64::new(RUNNING) }
    }

    fn raw(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }

    pub fn pause(&self) {
        let _ = self.paused_at.compare_exchange(RUNNING, self.raw(), Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        let at = self.paused_at.swap(RUNNING, Ordering::SeqCst);
        if at != RUNNING {
            self.paused_total.fetch_add(self.raw().saturating_sub(at), Ordering::SeqCst);
        }
    }
}

impl Clock for PausableClock {
    fn now(&self) -> Duration {
        let at = self.paused_at.load(Ordering::SeqCst);
        let raw = if at == RUNNING { self.raw() } else { at };
        Duration::from_nanos(raw.saturating_sub(self.paused_total.load(Ordering::SeqCst)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_moves_only_when_advanced_and_clones_share_time() {
        let c = VirtualClock::new();
        let d = c.clone();
        assert_eq!(c.now(), Duration::ZERO);
        d.advance(Duration::from_micros(1500));
        assert_eq!(c.now(), Duration::from_micros(1500));
        c.advance(Duration::MAX);
        assert_eq!(d.now(), Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn pausable_clock_stands_still_while_paused() {
        let c = PausableClock::new();
        c.pause();
        let a = c.now();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(c.now(), a);
        c.resume();
        std::thread::sleep(Duration::from_millis(5));
        let b = c.now();
        assert!(b >= a + Duration::from_millis(5));
        assert!(b < a + Duration::from_millis(20), "paused time leaked into the clock: {b:?} vs {a:?}");
    }
}
