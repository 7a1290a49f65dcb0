//! systemd's `Type=notify` protocol (sd_notify(3)), through the `sd-notify`
//! crate: `READY=1` once kennel serves, `STATUS=` with the cycle and the
//! watchdog's state, `WATCHDOG=1` from the main loop when the unit has
//! `WatchdogSec=` (so a wedged kennel is itself restarted), `STOPPING=1` on
//! the way out.
//!
//! Nothing here runs unless the service manager set `NOTIFY_SOCKET`. The
//! crate's socket is blocking, and a datagram socket whose reader lags
//! blocks its sender once the reader's queue is full, so the messages go
//! through a thread of their own: the main loop hands them over and never
//! waits (a message that finds the queue full is dropped). A failed
//! notification is logged once and never stops the VM.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use sd_notify::NotifyState;

#[derive(Debug)]
enum Message {
    Ready,
    Status(String),
    Watchdog,
    Stopping,
}

/// The main loop's link to the service manager.
#[derive(Debug)]
pub struct Notifier {
    /// How often to send `WATCHDOG=1`: half the unit's `WatchdogSec=`, as
    /// sd_watchdog_enabled(3) advises.
    ping: Option<Duration>,
    status: String,
    tx: SyncSender<Message>,
    /// Told when the thread has sent `STOPPING=1`.
    stopped: Receiver<()>,
}

/// Messages waiting for the thread; more means the manager is not reading.
const QUEUE: usize = 64;
/// How long the exit waits for `STOPPING=1` to be sent.
const STOPPING_WAIT: Duration = Duration::from_secs(1);

impl Notifier {
    /// `None` when no service manager listens (no `NOTIFY_SOCKET`). Start it
    /// after the main thread's seccomp filter is on: the thread inherits it.
    pub fn from_env() -> Option<Self> {
        std::env::var_os("NOTIFY_SOCKET")?;
        let ping = sd_notify::watchdog_enabled().map(|d| (d / 2).max(Duration::from_millis(1)));
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let (done, stopped) = mpsc::channel();
        let spawned =
            std::thread::Builder::new().name("kennel-notify".into()).spawn(move || send_all(rx, done));
        if let Err(e) = spawned {
            log::warn!("cannot start the service-manager thread ({e}); not notifying it");
            return None;
        }
        Some(Notifier { ping, status: String::new(), tx, stopped })
    }

    pub fn ping_interval(&self) -> Option<Duration> {
        self.ping
    }

    pub fn ready(&mut self) {
        self.hand_over(Message::Ready);
    }

    /// Sends `STATUS=` when it changed.
    pub fn status(&mut self, s: String) {
        if s != self.status {
            self.status.clone_from(&s);
            self.hand_over(Message::Status(s));
        }
    }

    pub fn watchdog(&mut self) {
        if self.ping.is_some() {
            self.hand_over(Message::Watchdog);
        }
    }

    /// `STOPPING=1`, waiting a moment for it to go out before kennel exits.
    pub fn stopping(&mut self) {
        self.hand_over(Message::Stopping);
        let _ = self.stopped.recv_timeout(STOPPING_WAIT);
    }

    fn hand_over(&self, m: Message) {
        match self.tx.try_send(m) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                log::debug!("the service manager is not reading; a notification dropped")
            }
        }
    }
}

fn send_all(rx: Receiver<Message>, done: mpsc::Sender<()>) {
    let mut failed = false;
    for m in rx {
        let status;
        let state = match &m {
            Message::Ready => NotifyState::Ready,
            Message::Status(s) => {
                status = s.clone();
                NotifyState::Status(&status)
            }
            Message::Watchdog => NotifyState::Watchdog,
            Message::Stopping => NotifyState::Stopping,
        };
        if let Err(e) = sd_notify::notify(&[state]) {
            if !failed {
                log::warn!("cannot notify the service manager (NOTIFY_SOCKET): {e}");
                failed = true;
            }
        }
        if matches!(m, Message::Stopping) {
            let _ = done.send(());
        }
    }
}
