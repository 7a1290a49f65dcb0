//! systemd's `Type=notify` protocol (sd_notify(3)), through the `sd-notify`
//! crate: `READY=1` once kennel serves, `STATUS=` with the cycle and the
//! watchdog's state, `WATCHDOG=1` from the main loop when the unit has
//! `WatchdogSec=` (so a wedged kennel is itself restarted), `STOPPING=1` on
//! the way out.
//!
//! Nothing here runs unless the service manager set `NOTIFY_SOCKET`; a
//! failed notification is logged once and never stops the VM.

use std::time::Duration;

use sd_notify::NotifyState;

/// The main loop's link to the service manager.
#[derive(Debug)]
pub struct Notifier {
    /// How often to send `WATCHDOG=1`: half the unit's `WatchdogSec=`, as
    /// sd_watchdog_enabled(3) advises.
    ping: Option<Duration>,
    status: String,
    failed: bool,
}

impl Notifier {
    /// `None` when no service manager listens (no `NOTIFY_SOCKET`).
    pub fn from_env() -> Option<Self> {
        std::env::var_os("NOTIFY_SOCKET")?;
        let ping = sd_notify::watchdog_enabled().map(|d| (d / 2).max(Duration::from_millis(1)));
        Some(Notifier { ping, status: String::new(), failed: false })
    }

    pub fn ping_interval(&self) -> Option<Duration> {
        self.ping
    }

    pub fn ready(&mut self) {
        self.send(&[NotifyState::Ready]);
    }

    /// Sends `STATUS=` when it changed.
    pub fn status(&mut self, s: String) {
        if s != self.status {
            self.send(&[NotifyState::Status(&s)]);
            self.status = s;
        }
    }

    pub fn watchdog(&mut self) {
        if self.ping.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping]);
    }

    fn send(&mut self, state: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(state) {
            if !self.failed {
                log::warn!("cannot notify the service manager (NOTIFY_SOCKET): {e}");
                self.failed = true;
            }
        }
    }
}
