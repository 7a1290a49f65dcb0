//! What the main loop reports besides events: the metrics file
//! (`--metrics`), rewritten on every event and on a periodic timer.

use std::time::{Duration, SystemTime};

use kennel_devices::bus::lock;

use super::Controller;
use crate::interfaces::metrics::{Live, MetricsFile};
use crate::supervision::events::Event;

/// How often the metrics file is rewritten when no event comes, so that its
/// feed count and "seconds since" figures stay fresh for a scraper.
pub(super) const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(5);

impl Controller {
    pub fn set_metrics(&mut self, m: MetricsFile) {
        self.metrics = Some(m);
    }

    /// Counts `events` and rewrites the metrics file.
    pub(super) fn report(&mut self, events: &[Event]) {
        if let Some(m) = &mut self.metrics {
            for e in events {
                m.observe(e);
            }
            self.write_metrics();
        }
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
        }
    }
}
