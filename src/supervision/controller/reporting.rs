//! What the main loop reports besides events: the metrics file
//! (`--metrics`) and the service manager's status and watchdog (sd_notify),
//! on every event and on a periodic housekeeping timer.

use std::time::{Duration, SystemTime};

use kennel_devices::bus::lock;

use super::Controller;
use crate::interfaces::metrics::{Live, MetricsFile};
use crate::interfaces::systemd::Notifier;
use crate::supervision::events::Event;

/// How often the metrics file is rewritten when no event comes, so that its
/// feed count and "seconds since" figures stay fresh for a scraper.
pub(super) const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(5);

impl Controller {
    pub fn set_metrics(&mut self, m: MetricsFile) {
        self.metrics = Some(m);
        self.arm_housekeeping();
    }

    /// Hands over the service manager's link once kennel is ready.
    pub fn set_notifier(&mut self, n: Notifier) {
        self.notifier = Some(n);
        self.notify_status();
        self.arm_housekeeping();
    }

    pub fn notify_stopping(&mut self) {
        if let Some(n) = &mut self.notifier {
            n.stopping();
        }
    }

    /// Counts `events`, rewrites the metrics file, updates the status.
    pub(super) fn report(&mut self, events: &[Event]) {
        if let Some(m) = &mut self.metrics {
            for e in events {
                m.observe(e);
            }
            self.write_metrics();
        }
        self.notify_status();
    }

    /// The periodic part: fresh metrics, and the service manager's watchdog
    /// fed from the main loop itself, so a wedged loop stops feeding it.
    pub(super) fn housekeeping(&mut self) {
        self.write_metrics();
        if let Some(n) = &mut self.notifier {
            n.watchdog();
        }
    }

    /// Every 5 s, or at half the unit's `WatchdogSec=` if that is sooner;
    /// not at all when there is nothing to keep.
    pub(super) fn arm_housekeeping(&mut self) {
        let ping = self.notifier.as_ref().and_then(Notifier::ping_interval);
        let period = match (self.metrics.is_some(), ping) {
            (_, Some(p)) => p.min(HOUSEKEEPING_PERIOD),
            (true, None) => HOUSEKEEPING_PERIOD,
            (false, None) => return,
        };
        if let Err(e) = self.housekeeping.reset(period, Some(period)) {
            log::error!("cannot arm the housekeeping timer: {e}");
        }
    }

    fn notify_status(&mut self) {
        let Some(n) = &mut self.notifier else { return };
        let s = self.lifecycle.status();
        let paused = if s.paused.is_some() { ", paused" } else { "" };
        let armed = if s.armed { "watchdog armed" } else { "watchdog not armed" };
        n.status(format!("cycle {}: {} ({armed}{paused})", s.cycle, s.state));
    }

    pub(super) fn write_metrics(&mut self) {
        let Some(m) = &self.metrics else { return };
        let Err(e) = m.write(&self.live(), SystemTime::now()) else { return };
        // A full disk must not flood the log at the guest's pace.
        self.metrics_failures += 1;
        if self.metrics_failures % 1000 == 1 {
            log::warn!("{e} ({} failures so far)", self.metrics_failures);
        }
    }

    fn live(&self) -> Live {
        let s = self.lifecycle.status();
        let device = self.vm.as_ref().map_or(0, |vm| lock(&vm.platform.esb).counters().feeds);
        Live {
            cycle: s.cycle,
            state: s.state,
            paused: s.paused.is_some(),
            armed: s.armed,
            feeds: self.feeds_before + device,
            snapshot_bytes: self
                .cfg
                .rootfs
                .as_ref()
                .and_then(|r| r.overlay.as_ref())
                .map(|o| lock(o).bytes()),
        }
    }
}
