//! The VM lifecycle: boot cycles, watchdog meaning, and every lifecycle event.
//!
//! One pure state machine, [`Lifecycle`]. It does no I/O and reads no clock:
//! each [`Input`] comes with `now` (the VMM's pausable monotonic clock, which
//! stands still while the VM is paused) and `wall` (for event timestamps).
//! It answers with an [`Output`]: [`Event`]s for the
//! VMM to pass to its `EventHub`, and [`Action`]s for the VMM to carry out.
//!
//! States: `booting -> armed -> alive -> (disarmed) -> expired -> ...`, with a
//! new boot cycle (numbered from 1, counting up for the life of the process)
//! at every reset, plus `paused` (an overlay that remembers the state
//! underneath) and the terminal `shutdown`.
//!
//! Contract with the VMM: every action the VMM carries out it reports back as
//! the matching input, on the same path as any other reset, stop or pause
//! (`ResetVm` -> `Reset`, `Poweroff` -> `Shutdown`, `PowerButton` ->
//! `PowerButton` then, later, `Shutdown`, `Pause` -> `Pause`), so a
//! watchdog reset and a `system_reset` are numbered and reported alike.
//!
//! Events (every `data` has `cycle`; times in ms on the pausable clock):
//!
//! | event | when | more `data` |
//! |---|---|---|
//! | `BOOT` | a cycle starts | `cause` |
//! | `WATCHDOG_ARMED` | the guest enables the watchdog | `timeout_ms` (stage 1 + 2) |
//! | `WATCHDOG_FIRST_FEED` | first feed of the enabled watchdog; once a cycle | `since_boot_ms`, `since_armed_ms` |
//! | `WATCHDOG_DISARMED` | the guest stops it | |
//! | `WATCHDOG_PRETIMEOUT` | stage 1 ended; at most one a second | `suppressed` (since the last one) |
//! | `WATCHDOG` | stage 2 ended (QEMU's event) | `action` |
//! | `BOOT_DEADLINE_MISSED` | no first feed by the deadline; once a cycle | `deadline_ms`, `armed`, `action` |
//! | `RESET` | the cycle ends in a reset (QEMU's event) | `cause`, `guest`, `reason` |
//! | `POWERDOWN` | the ACPI power button was pressed (QEMU's event) | `cause` |
//! | `SHUTDOWN` | the VM stops for good (QEMU's event) | `cause`, `guest`, `reason`, `forced` |
//! | `STOP` / `RESUME` | pause / continue (QEMU's events) | `cause` |
//!
//! Later feeds are never emitted, nor even reported to the lifecycle: the
//! device counts them (QMP `query-watchdog` shows its count).

mod machine;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use kennel_devices::i6300esb::WatchdogFact;

use crate::supervision::events::{Event, EventName};

pub use machine::{Lifecycle, Status};

/// Errors of the lifecycle module: only parsing of operator-supplied names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("unknown watchdog action '{0}' (expected one of: reset, shutdown, poweroff, pause, none, debug, inject-nmi)")]
    UnknownWatchdogAction(String),
    #[error("unknown boot-deadline action '{0}' (expected one of: none, reset, poweroff, pause)")]
    UnknownDeadlineAction(String),
}

/// Why a boot cycle started, or why the VM was reset, paused, resumed or
/// stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The VMM started the VM for the first time.
    PowerOn,
    /// The watchdog's action.
    Watchdog,
    /// The guest itself: reboot, triple fault, panic reboot, poweroff.
    Guest,
    /// A QMP command (`system_reset`, `stop`, `cont`, `quit`).
    Qmp,
    /// The boot deadline's action.
    BootDeadline,
    /// The VMM got a termination signal.
    Signal,
    /// The VMM hit an error it cannot continue from (e.g. emulation failure).
    Error,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::PowerOn => "power-on",
            Cause::Watchdog => "watchdog",
            Cause::Guest => "guest",
            Cause::Qmp => "qmp",
            Cause::BootDeadline => "boot-deadline",
            Cause::Signal => "signal",
            Cause::Error => "error",
        }
    }

    /// QEMU's `guest` flag and `reason` for a RESET caused by this, so
    /// consumers of QEMU's RESET keep working. A watchdog reset is
    /// `guest-reset` because that is what QEMU reports for it (the guest's
    /// hardware reset it). QEMU has no reason for a host policy such as the
    /// boot deadline; `host-error` is its nearest, and `cause` says exactly.
    pub fn reset_reason(self) -> (bool, &'static str) {
        match self {
            Cause::Guest | Cause::Watchdog => (true, "guest-reset"),
            Cause::Qmp => (false, "host-qmp-system-reset"),
            Cause::Signal => (false, "host-signal"),
            Cause::PowerOn | Cause::BootDeadline | Cause::Error => (false, "host-error"),
        }
    }

    /// QEMU's `guest` flag and `reason` for a SHUTDOWN caused by this. QEMU
    /// reports the watchdog's poweroff as `guest-shutdown`.
    pub fn shutdown_reason(self) -> (bool, &'static str) {
        match self {
            Cause::Guest | Cause::Watchdog => (true, "guest-shutdown"),
            Cause::Qmp => (false, "host-qmp-quit"),
            Cause::Signal => (false, "host-signal"),
            Cause::PowerOn | Cause::BootDeadline | Cause::Error => (false, "host-error"),
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do when the watchdog's second stage expires: the same set and
/// spellings as QEMU's `-action watchdog=`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WatchdogAction {
    #[default]
    Reset,
    /// Reported as `shutdown`, carried out as a poweroff: kennel has no ACPI
    /// through which to ask the guest to shut down.
    Shutdown,
    Poweroff,
    Pause,
    None,
    /// Only the event (and so the log line).
    Debug,
    InjectNmi,
}

impl WatchdogAction {
    pub const ALL: [WatchdogAction; 7] = [
        WatchdogAction::Reset,
        WatchdogAction::Shutdown,
        WatchdogAction::Poweroff,
        WatchdogAction::Pause,
        WatchdogAction::None,
        WatchdogAction::Debug,
        WatchdogAction::InjectNmi,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WatchdogAction::Reset => "reset",
            WatchdogAction::Shutdown => "shutdown",
            WatchdogAction::Poweroff => "poweroff",
            WatchdogAction::Pause => "pause",
            WatchdogAction::None => "none",
            WatchdogAction::Debug => "debug",
            WatchdogAction::InjectNmi => "inject-nmi",
        }
    }
}

impl fmt::Display for WatchdogAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WatchdogAction {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| Error::UnknownWatchdogAction(s.into()))
    }
}

/// What to do when a boot cycle passes its deadline without a first feed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeadlineAction {
    /// Only the event.
    #[default]
    None,
    Reset,
    Poweroff,
    Pause,
}

impl DeadlineAction {
    pub const ALL: [DeadlineAction; 4] =
        [DeadlineAction::None, DeadlineAction::Reset, DeadlineAction::Poweroff, DeadlineAction::Pause];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadlineAction::None => "none",
            DeadlineAction::Reset => "reset",
            DeadlineAction::Poweroff => "poweroff",
            DeadlineAction::Pause => "pause",
        }
    }
}

impl fmt::Display for DeadlineAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeadlineAction {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| Error::UnknownDeadlineAction(s.into()))
    }
}

/// Operator configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub watchdog_action: WatchdogAction,
    /// `--boot-deadline`: how long after BOOT the guest has to feed its
    /// watchdog for the first time. `None`: no deadline.
    pub boot_deadline: Option<Duration>,
    pub deadline_action: DeadlineAction,
}

/// What happened: the watchdog device's own facts, or the VMM's doings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// A boot cycle starts without a reset before it: the first power-on.
    Boot {
        cause: Cause,
    },
    /// What the 6300ESB reported, as it reported it.
    Watchdog(WatchdogFact),
    Pause {
        cause: Cause,
    },
    Resume {
        cause: Cause,
    },
    /// The VMM is about to reset the VM; ends this cycle and starts the next.
    Reset {
        cause: Cause,
    },
    /// The VMM pressed the ACPI power button.
    PowerButton {
        cause: Cause,
    },
    /// The VM stops for good.
    Shutdown {
        cause: Cause,
        by: PowerOff,
    },
    /// Time passed (e.g. the boot-deadline timer fired).
    Tick,
}

/// Who turned the power off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerOff {
    /// The guest, through ACPI (S5): it shut down in order.
    Guest,
    /// The VMM, at once (the poweroff action, `quit`, a signal, an error).
    Vmm,
    /// The VMM, because the guest did not answer the power button within
    /// the grace period (or has no ACPI to hear it).
    Forced,
}

/// Something the VMM must do. Report it back as an input when done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Reset the VM, then report `Input::Reset { cause }`.
    ResetVm { cause: Cause },
    /// Power the VM off, then report `Input::Shutdown { cause, by: PowerOff::Vmm }`.
    Poweroff { cause: Cause },
    /// Press the ACPI power button and report `Input::PowerButton { cause }`;
    /// report `Input::Shutdown` when the guest has powered off, or when the
    /// VMM had to cut the power (`PowerOff::Forced`).
    PowerButton { cause: Cause },
    /// Pause the vCPUs and the pausable clock, then report `Input::Pause { cause }`.
    Pause { cause: Cause },
    /// Inject an NMI into the guest (the watchdog keeps running).
    InjectNmi,
}

/// The answer to one input.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    /// In the order they happened; emit them all, in order.
    pub events: Vec<Event>,
    pub actions: Vec<Action>,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.actions.is_empty()
    }

    /// The event names, for tests and logs.
    pub fn names(&self) -> Vec<&'static str> {
        self.events.iter().map(|e| e.name.as_str()).collect()
    }

    /// This input brought the cycle's first feed: the guest is back.
    pub fn first_feed(&self) -> bool {
        self.events.iter().any(|e| e.name == EventName::WatchdogFirstFeed)
    }
}

/// Where the current boot cycle is, underneath any pause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The cycle started; the watchdog has not been enabled yet.
    Booting,
    /// Enabled and not fed since it was enabled.
    Armed,
    /// Enabled and fed.
    Alive,
    /// Stopped cleanly by the guest.
    Disarmed,
    /// Stage 2 ran out.
    Expired,
    /// The VM stopped for good.
    Shutdown,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Booting => "booting",
            State::Armed => "armed",
            State::Alive => "alive",
            State::Disarmed => "disarmed",
            State::Expired => "expired",
            State::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the VM runs, in QMP `query-status` terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    Shutdown,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Shutdown => "shutdown",
        }
    }
}
