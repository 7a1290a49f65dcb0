//! The lifecycle state machine itself.

use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use super::{
    Action, Cause, Config, DeadlineAction, Input, Output, PowerOff, RunState, State, WatchdogAction,
};
use crate::supervision::events::{Event, EventName};
use kennel_devices::i6300esb::WatchdogFact;

/// At most one WATCHDOG_PRETIMEOUT per this much VM time: a guest in
/// free-running mode, or with a tiny stage 1, can hit stage 1 thousands of
/// times a second, and that must flood no one.
const PRETIMEOUT_INTERVAL: Duration = Duration::from_secs(1);

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Per-boot-cycle facts; replaced whole when a cycle starts, so nothing from
/// the last cycle can leak into the next.
#[derive(Clone, Debug)]
struct Cycle {
    number: u64,
    cause: Cause,
    state: State,
    started: Duration,
    /// The watchdog is enabled (between Armed and Disarmed).
    armed: bool,
    /// Stage lengths of the latest arming.
    stages: Option<(Duration, Duration)>,
    first_armed: Option<Duration>,
    last_armed: Option<Duration>,
    first_feed: Option<Duration>,
    feeds: u64,
    pretimeouts: u64,
    expiries: u64,
    last_pretimeout_event: Option<Duration>,
    suppressed_pretimeouts: u64,
    deadline_missed: bool,
}

impl Cycle {
    fn new(number: u64, cause: Cause, started: Duration) -> Self {
        Self {
            number,
            cause,
            state: State::Booting,
            started,
            armed: false,
            stages: None,
            first_armed: None,
            last_armed: None,
            first_feed: None,
            feeds: 0,
            pretimeouts: 0,
            expiries: 0,
            last_pretimeout_event: None,
            suppressed_pretimeouts: 0,
            deadline_missed: false,
        }
    }
}

/// A snapshot for `query-watchdog`. Times are milliseconds after the cycle's
/// BOOT on the pausable clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The state underneath any pause.
    pub state: State,
    /// Why the VM is paused, if it is.
    pub paused: Option<Cause>,
    pub cycle: u64,
    pub cause: Cause,
    pub armed: bool,
    /// stage1 + stage2 of the latest arming in this cycle.
    pub timeout_ms: Option<u64>,
    /// When the guest first enabled the watchdog in this cycle.
    pub armed_after_boot_ms: Option<u64>,
    pub first_feed_after_boot_ms: Option<u64>,
    pub feeds: u64,
    pub pretimeouts: u64,
    pub expiries: u64,
    pub action: WatchdogAction,
    pub boot_deadline_ms: Option<u64>,
    pub deadline_action: DeadlineAction,
    pub deadline_missed: bool,
}

impl Status {
    /// The `query-watchdog` reply.
    pub fn to_json(&self) -> Value {
        json!({
            "state": self.state.as_str(),
            "paused": self.paused.is_some(),
            "paused_cause": self.paused.map(|c| c.as_str()),
            "cycle": self.cycle,
            "cause": self.cause.as_str(),
            "armed": self.armed,
            "timeout_ms": self.timeout_ms,
            "armed_after_boot_ms": self.armed_after_boot_ms,
            "first_feed_after_boot_ms": self.first_feed_after_boot_ms,
            "feeds": self.feeds,
            "pretimeouts": self.pretimeouts,
            "expiries": self.expiries,
            "action": self.action.as_str(),
            "boot_deadline_ms": self.boot_deadline_ms,
            "deadline_action": self.deadline_action.as_str(),
            "deadline_missed": self.deadline_missed,
        })
    }
}

/// The lifecycle of one VM across all its boot cycles. See the module docs.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    config: Config,
    cycle: Cycle,
    paused: Option<Cause>,
}

impl Lifecycle {
    /// A lifecycle before its first boot (cycle 0); start it with
    /// `Input::Boot { cause: Cause::PowerOn }`.
    pub fn new(config: Config) -> Self {
        Self { config, cycle: Cycle::new(0, Cause::PowerOn, Duration::ZERO), paused: None }
    }

    /// Feeds one input in. `now` is the pausable monotonic clock, `wall` the
    /// host's wall clock for timestamps.
    pub fn handle(&mut self, now: Duration, wall: SystemTime, input: Input) -> Output {
        let mut out = Output::default();
        // The VM is gone: late device facts or ticks mean nothing any more.
        if self.cycle.state == State::Shutdown {
            return out;
        }
        // The deadline is checked before the input, so a first feed that
        // arrives after the deadline (because the timer fired late) does not
        // count as in time. When the input itself ends the cycle, the
        // deadline's action is dropped: the VM is being reset or stopped
        // anyway, and doing it twice would be wrong.
        let ends_cycle = matches!(input, Input::Boot { .. } | Input::Reset { .. } | Input::Shutdown { .. });
        let deadline_action = self.check_deadline(now, wall, &mut out);
        if let Some(a) = deadline_action.filter(|_| !ends_cycle) {
            out.actions.push(a);
        }
        let c = &mut self.cycle;
        match input {
            Input::Boot { cause } => self.start_cycle(now, wall, cause, &mut out),
            Input::Watchdog(WatchdogFact::Armed { stage1, stage2 }) => {
                c.armed = true;
                c.stages = Some((stage1, stage2));
                c.first_armed.get_or_insert(now);
                c.last_armed = Some(now);
                c.state = State::Armed;
                let timeout_ms = ms(stage1.saturating_add(stage2));
                self.emit(&mut out, wall, EventName::WatchdogArmed, [("timeout_ms", json!(timeout_ms))]);
            }
            // A reload while disabled is the driver setting up, not a sign of
            // life: the device should not report it, but never trust that.
            Input::Watchdog(WatchdogFact::Fed) if !c.armed => {}
            Input::Watchdog(WatchdogFact::Fed) => {
                c.feeds += 1;
                c.state = State::Alive;
                if c.first_feed.is_none() {
                    c.first_feed = Some(now);
                    let since_boot = ms(now.saturating_sub(c.started));
                    let since_armed = ms(now.saturating_sub(c.last_armed.unwrap_or(c.started)));
                    self.emit(
                        &mut out,
                        wall,
                        EventName::WatchdogFirstFeed,
                        [("since_boot_ms", json!(since_boot)), ("since_armed_ms", json!(since_armed))],
                    );
                }
            }
            Input::Watchdog(WatchdogFact::Disarmed) if !c.armed => {}
            Input::Watchdog(WatchdogFact::Disarmed) => {
                c.armed = false;
                c.state = State::Disarmed;
                self.emit(&mut out, wall, EventName::WatchdogDisarmed, []);
            }
            Input::Watchdog(WatchdogFact::PreTimeout) => {
                c.pretimeouts += 1;
                let due =
                    c.last_pretimeout_event.is_none_or(|t| now.saturating_sub(t) >= PRETIMEOUT_INTERVAL);
                if due {
                    c.last_pretimeout_event = Some(now);
                    let suppressed = std::mem::take(&mut c.suppressed_pretimeouts);
                    self.emit(
                        &mut out,
                        wall,
                        EventName::WatchdogPretimeout,
                        [("suppressed", json!(suppressed))],
                    );
                } else {
                    c.suppressed_pretimeouts += 1;
                }
            }
            // Acted on even if we never saw the watchdog armed: an expiry is
            // the device's word that the guest is dead, and missing one would
            // be worse than acting on a fact we did not expect.
            Input::Watchdog(WatchdogFact::Expired) => {
                c.expiries += 1;
                c.state = State::Expired;
                let action = self.config.watchdog_action;
                self.emit(&mut out, wall, EventName::Watchdog, [("action", json!(action.as_str()))]);
                let cause = Cause::Watchdog;
                match action {
                    WatchdogAction::Reset => out.actions.push(Action::ResetVm { cause }),
                    WatchdogAction::Shutdown => out.actions.push(Action::PowerButton { cause }),
                    WatchdogAction::Poweroff => out.actions.push(Action::Poweroff { cause }),
                    WatchdogAction::Pause => out.actions.push(Action::Pause { cause }),
                    WatchdogAction::InjectNmi => out.actions.push(Action::InjectNmi),
                    WatchdogAction::None | WatchdogAction::Debug => {}
                }
            }
            // Pausing a paused VM (or resuming a running one) changes nothing
            // and, as in QEMU, reports nothing.
            Input::Pause { cause } => {
                if self.paused.is_none() {
                    self.paused = Some(cause);
                    self.emit(&mut out, wall, EventName::Stop, [("cause", json!(cause.as_str()))]);
                }
            }
            Input::Resume { cause } => {
                if self.paused.take().is_some() {
                    self.emit(&mut out, wall, EventName::Resume, [("cause", json!(cause.as_str()))]);
                    if let Some(a) = self.check_deadline(now, wall, &mut out) {
                        out.actions.push(a);
                    }
                }
            }
            // RESET carries the number of the cycle it ends; the BOOT after it
            // the next one. A reset does not unpause: the VMM decides that.
            Input::Reset { cause } => {
                let (guest, reason) = cause.reset_reason();
                let data =
                    [("cause", json!(cause.as_str())), ("guest", json!(guest)), ("reason", json!(reason))];
                self.emit(&mut out, wall, EventName::Reset, data);
                self.start_cycle(now, wall, cause, &mut out);
            }
            Input::PowerButton { cause } => {
                self.emit(&mut out, wall, EventName::Powerdown, [("cause", json!(cause.as_str()))]);
            }
            Input::Shutdown { cause, by } => {
                // QEMU's flag and reason say who powered off; `cause` why.
                let (guest, reason) = match by {
                    PowerOff::Guest => (true, "guest-shutdown"),
                    PowerOff::Vmm | PowerOff::Forced => cause.shutdown_reason(),
                };
                let data = [
                    ("cause", json!(cause.as_str())),
                    ("guest", json!(guest)),
                    ("reason", json!(reason)),
                    ("forced", json!(by == PowerOff::Forced)),
                ];
                self.emit(&mut out, wall, EventName::Shutdown, data);
                self.cycle.state = State::Shutdown;
                self.cycle.armed = false;
                self.paused = None;
            }
            Input::Tick => {}
        }
        out
    }

    /// When (on the pausable clock) the VMM should send `Input::Tick` for
    /// the boot deadline. `None` while paused (the clock stands still, so the
    /// deadline cannot come), after the first feed, once the deadline has
    /// been missed, before the first boot and after shutdown.
    pub fn next_deadline(&self) -> Option<Duration> {
        let c = &self.cycle;
        if self.paused.is_some()
            || c.number == 0
            || c.state == State::Shutdown
            || c.first_feed.is_some()
            || c.deadline_missed
        {
            return None;
        }
        self.config.boot_deadline.and_then(|d| c.started.checked_add(d))
    }

    /// Changes the watchdog action from the next expiry on
    /// (QMP `watchdog-set-action`).
    pub fn set_watchdog_action(&mut self, action: WatchdogAction) {
        self.config.watchdog_action = action;
    }

    pub fn config(&self) -> Config {
        self.config
    }

    /// The current boot cycle's number; 0 before the first boot.
    pub fn cycle(&self) -> u64 {
        self.cycle.number
    }

    /// The state underneath any pause.
    pub fn state(&self) -> State {
        self.cycle.state
    }

    pub fn run_state(&self) -> RunState {
        match (self.cycle.state, self.paused) {
            (State::Shutdown, _) => RunState::Shutdown,
            (_, Some(_)) => RunState::Paused,
            (_, None) => RunState::Running,
        }
    }

    pub fn status(&self) -> Status {
        let c = &self.cycle;
        let after_boot = |t: Option<Duration>| t.map(|t| ms(t.saturating_sub(c.started)));
        Status {
            state: c.state,
            paused: self.paused,
            cycle: c.number,
            cause: c.cause,
            armed: c.armed,
            timeout_ms: c.stages.map(|(s1, s2)| ms(s1.saturating_add(s2))),
            armed_after_boot_ms: after_boot(c.first_armed),
            first_feed_after_boot_ms: after_boot(c.first_feed),
            feeds: c.feeds,
            pretimeouts: c.pretimeouts,
            expiries: c.expiries,
            action: self.config.watchdog_action,
            boot_deadline_ms: self.config.boot_deadline.map(ms),
            deadline_action: self.config.deadline_action,
            deadline_missed: c.deadline_missed,
        }
    }

    fn start_cycle(&mut self, now: Duration, wall: SystemTime, cause: Cause, out: &mut Output) {
        self.cycle = Cycle::new(self.cycle.number.saturating_add(1), cause, now);
        self.emit(out, wall, EventName::Boot, [("cause", json!(cause.as_str()))]);
    }

    /// Emits BOOT_DEADLINE_MISSED if the deadline has passed, at most once a
    /// cycle, and returns the deadline action for the VMM.
    fn check_deadline(&mut self, now: Duration, wall: SystemTime, out: &mut Output) -> Option<Action> {
        let due = self.next_deadline()?;
        if now < due {
            return None;
        }
        self.cycle.deadline_missed = true;
        let deadline_ms = self.config.boot_deadline.map(ms).unwrap_or_default();
        let action = self.config.deadline_action;
        let data = [
            ("deadline_ms", json!(deadline_ms)),
            ("armed", json!(self.cycle.first_armed.is_some())),
            ("action", json!(action.as_str())),
        ];
        self.emit(out, wall, EventName::BootDeadlineMissed, data);
        let cause = Cause::BootDeadline;
        match action {
            DeadlineAction::None => None,
            DeadlineAction::Reset => Some(Action::ResetVm { cause }),
            DeadlineAction::Poweroff => Some(Action::Poweroff { cause }),
            DeadlineAction::Pause => Some(Action::Pause { cause }),
        }
    }

    /// Every event carries the cycle it belongs to.
    fn emit<const N: usize>(
        &self,
        out: &mut Output,
        wall: SystemTime,
        name: EventName,
        fields: [(&str, Value); N],
    ) {
        let mut data = Map::new();
        data.insert("cycle".into(), json!(self.cycle.number));
        for (k, v) in fields {
            data.insert(k.into(), v);
        }
        out.events.push(Event::new(name, data, wall));
    }
}
