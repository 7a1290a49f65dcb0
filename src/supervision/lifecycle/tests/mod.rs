//! Watchdog transitions, cycle numbering and reporting.

mod deadline;

use kennel_devices::i6300esb::WatchdogFact;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::*;

/// Drives a lifecycle on a virtual clock.
pub(super) struct Harness {
    pub lc: Lifecycle,
    pub now: Duration,
}

pub(super) const S1: Duration = Duration::from_secs(15);
pub(super) const S2: Duration = Duration::from_secs(15);

impl Harness {
    pub fn new(config: Config) -> Self {
        Self { lc: Lifecycle::new(config), now: Duration::ZERO }
    }

    /// Powered on, first cycle started.
    pub fn booted(config: Config) -> Self {
        let mut h = Self::new(config);
        let out = h.send(Input::Boot { cause: Cause::PowerOn });
        assert_eq!(out.names(), ["BOOT"]);
        h
    }

    pub fn advance_ms(&mut self, ms: u64) -> &mut Self {
        self.now += Duration::from_millis(ms);
        self
    }

    pub fn wall(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000) + self.now
    }

    pub fn send(&mut self, input: Input) -> Output {
        let wall = self.wall();
        self.lc.handle(self.now, wall, input)
    }

    pub fn arm(&mut self) -> Output {
        self.send(Input::Watchdog(WatchdogFact::Armed { stage1: S1, stage2: S2 }))
    }
}

#[test]
fn power_on_starts_cycle_one() {
    let mut h = Harness::new(Config::default());
    assert_eq!(h.lc.cycle(), 0);
    let out = h.send(Input::Boot { cause: Cause::PowerOn });
    assert_eq!(out.names(), ["BOOT"]);
    assert_eq!(out.events[0].get("cycle"), Some(&json!(1)));
    assert_eq!(out.events[0].get("cause"), Some(&json!("power-on")));
    assert_eq!(out.events[0].wall, h.wall());
    assert!(out.actions.is_empty());
    assert_eq!(h.lc.state(), State::Booting);
    assert_eq!(h.lc.run_state(), RunState::Running);
}

#[test]
fn arming_reports_the_total_timeout() {
    let mut h = Harness::booted(Config::default());
    h.advance_ms(1200);
    let out = h.arm();
    assert_eq!(out.names(), ["WATCHDOG_ARMED"]);
    assert_eq!(out.events[0].get("timeout_ms"), Some(&json!(30_000)));
    assert_eq!(out.events[0].get("cycle"), Some(&json!(1)));
    assert_eq!(h.lc.state(), State::Armed);
    let st = h.lc.status();
    assert!(st.armed);
    assert_eq!(st.armed_after_boot_ms, Some(1200));
    assert_eq!(st.timeout_ms, Some(30_000));
}

#[test]
fn feeds_before_arming_are_not_feeds() {
    let mut h = Harness::booted(Config::default());
    for _ in 0..5 {
        assert!(h.send(Input::Watchdog(WatchdogFact::Fed)).is_empty());
    }
    assert_eq!(h.lc.status().feeds, 0);
    assert_eq!(h.lc.state(), State::Booting);
    h.arm();
    assert_eq!(h.send(Input::Watchdog(WatchdogFact::Fed)).names(), ["WATCHDOG_FIRST_FEED"]);
}

#[test]
fn first_feed_is_emitted_once_and_later_feeds_are_counted() {
    let mut h = Harness::booted(Config::default());
    h.advance_ms(2000);
    h.arm();
    h.advance_ms(300);
    let out = h.send(Input::Watchdog(WatchdogFact::Fed));
    assert_eq!(out.names(), ["WATCHDOG_FIRST_FEED"]);
    let e = &out.events[0];
    assert_eq!(e.get("since_boot_ms"), Some(&json!(2300)));
    assert_eq!(e.get("since_armed_ms"), Some(&json!(300)));
    assert_eq!(h.lc.state(), State::Alive);
    for _ in 0..1000 {
        h.advance_ms(1);
        assert!(h.send(Input::Watchdog(WatchdogFact::Fed)).is_empty(), "later feeds flood no one");
    }
    let st = h.lc.status();
    assert_eq!(st.feeds, 1001);
    assert_eq!(st.first_feed_after_boot_ms, Some(2300));
}

#[test]
fn first_feed_again_in_the_next_cycle_only() {
    let mut h = Harness::booted(Config::default());
    h.arm();
    assert_eq!(h.send(Input::Watchdog(WatchdogFact::Fed)).names(), ["WATCHDOG_FIRST_FEED"]);
    // Disarm and re-arm within the cycle: still not a second first feed.
    assert_eq!(h.send(Input::Watchdog(WatchdogFact::Disarmed)).names(), ["WATCHDOG_DISARMED"]);
    h.arm();
    assert!(h.send(Input::Watchdog(WatchdogFact::Fed)).is_empty());
    assert_eq!(h.lc.state(), State::Alive);

    h.send(Input::Reset { cause: Cause::Guest });
    assert!(h.send(Input::Watchdog(WatchdogFact::Fed)).is_empty(), "not armed in the new cycle yet");
    h.advance_ms(50);
    h.arm();
    h.advance_ms(10);
    let out = h.send(Input::Watchdog(WatchdogFact::Fed));
    assert_eq!(out.names(), ["WATCHDOG_FIRST_FEED"]);
    assert_eq!(out.events[0].get("cycle"), Some(&json!(2)));
    assert_eq!(out.events[0].get("since_boot_ms"), Some(&json!(60)));
    assert_eq!(out.events[0].get("since_armed_ms"), Some(&json!(10)));
}

#[test]
fn disarm_only_when_armed() {
    let mut h = Harness::booted(Config::default());
    assert!(h.send(Input::Watchdog(WatchdogFact::Disarmed)).is_empty());
    h.arm();
    assert_eq!(h.send(Input::Watchdog(WatchdogFact::Disarmed)).names(), ["WATCHDOG_DISARMED"]);
    assert_eq!(h.lc.state(), State::Disarmed);
    assert!(!h.lc.status().armed);
    assert!(
        h.send(Input::Watchdog(WatchdogFact::Fed)).is_empty(),
        "feeds of a stopped watchdog are not feeds"
    );
    assert!(h.send(Input::Watchdog(WatchdogFact::Disarmed)).is_empty());
}

#[test]
fn reset_while_armed_starts_a_new_booting_cycle() {
    let mut h = Harness::booted(Config::default());
    h.arm();
    h.send(Input::Watchdog(WatchdogFact::Fed));
    h.advance_ms(5);
    let out = h.send(Input::Reset { cause: Cause::Qmp });
    assert_eq!(out.names(), ["RESET", "BOOT"]);
    let reset = &out.events[0];
    assert_eq!(reset.get("cycle"), Some(&json!(1)), "RESET belongs to the cycle it ends");
    assert_eq!(reset.get("cause"), Some(&json!("qmp")));
    assert_eq!(reset.get("guest"), Some(&json!(false)));
    assert_eq!(reset.get("reason"), Some(&json!("host-qmp-system-reset")));
    assert_eq!(out.events[1].get("cycle"), Some(&json!(2)));
    assert_eq!(out.events[1].get("cause"), Some(&json!("qmp")));
    assert_eq!(h.lc.state(), State::Booting);
    let st = h.lc.status();
    assert!(!st.armed);
    assert_eq!(st.feeds, 0);
    assert_eq!(st.cause, Cause::Qmp);
    assert_eq!(st.armed_after_boot_ms, None);
}

#[test]
fn cycle_numbers_count_up_across_resets() {
    let mut h = Harness::booted(Config::default());
    let causes = [Cause::Watchdog, Cause::Guest, Cause::Qmp, Cause::BootDeadline, Cause::Guest];
    for (i, cause) in causes.into_iter().enumerate() {
        let out = h.send(Input::Reset { cause });
        let n = i as u64 + 2;
        assert_eq!(out.events[1].get("cycle"), Some(&json!(n)));
        assert_eq!(h.lc.cycle(), n);
    }
}

#[test]
fn expiry_maps_each_action_to_the_vmm_action() {
    let cases = [
        (WatchdogAction::Reset, vec![Action::ResetVm { cause: Cause::Watchdog }]),
        (WatchdogAction::Shutdown, vec![Action::PowerButton { cause: Cause::Watchdog }]),
        (WatchdogAction::Poweroff, vec![Action::Poweroff { cause: Cause::Watchdog }]),
        (WatchdogAction::Pause, vec![Action::Pause { cause: Cause::Watchdog }]),
        (WatchdogAction::None, vec![]),
        (WatchdogAction::Debug, vec![]),
        (WatchdogAction::InjectNmi, vec![Action::InjectNmi]),
    ];
    for (action, expected) in cases {
        let mut h = Harness::booted(Config { watchdog_action: action, ..Config::default() });
        h.arm();
        h.send(Input::Watchdog(WatchdogFact::Fed));
        let out = h.send(Input::Watchdog(WatchdogFact::Expired));
        assert_eq!(out.names(), ["WATCHDOG"], "{action}");
        assert_eq!(out.events[0].get("action"), Some(&json!(action.to_string())));
        assert_eq!(out.events[0].get("cycle"), Some(&json!(1)));
        assert_eq!(out.actions, expected, "{action}");
        assert_eq!(h.lc.state(), State::Expired);
        assert_eq!(h.lc.status().expiries, 1);
    }
}

#[test]
fn watchdog_reset_round_trip_reports_like_qemu() {
    let mut h = Harness::booted(Config::default());
    h.arm();
    let out = h.send(Input::Watchdog(WatchdogFact::Expired));
    assert_eq!(out.actions, [Action::ResetVm { cause: Cause::Watchdog }]);
    // The VMM carries it out and reports it back.
    let out = h.send(Input::Reset { cause: Cause::Watchdog });
    assert_eq!(out.names(), ["RESET", "BOOT"]);
    assert_eq!(out.events[0].get("guest"), Some(&json!(true)));
    assert_eq!(out.events[0].get("reason"), Some(&json!("guest-reset")));
    assert_eq!(out.events[1].get("cause"), Some(&json!("watchdog")));
    assert_eq!(h.lc.status().cause, Cause::Watchdog);
}

#[test]
fn action_can_change_at_run_time() {
    let mut h = Harness::booted(Config::default());
    h.arm();
    h.lc.set_watchdog_action(WatchdogAction::Pause);
    assert_eq!(h.lc.status().action, WatchdogAction::Pause);
    let out = h.send(Input::Watchdog(WatchdogFact::Expired));
    assert_eq!(out.events[0].get("action"), Some(&json!("pause")));
    assert_eq!(out.actions, [Action::Pause { cause: Cause::Watchdog }]);
}

#[test]
fn a_feed_after_an_expiry_without_reset_revives() {
    let mut h = Harness::booted(Config { watchdog_action: WatchdogAction::None, ..Config::default() });
    h.arm();
    h.send(Input::Watchdog(WatchdogFact::Expired));
    // Never fed before expiring: this feed is the cycle's first.
    assert_eq!(h.send(Input::Watchdog(WatchdogFact::Fed)).names(), ["WATCHDOG_FIRST_FEED"]);
    assert_eq!(h.lc.state(), State::Alive);
}

#[test]
fn pretimeouts_are_rate_limited_with_a_suppressed_count() {
    let mut h = Harness::booted(Config::default());
    h.arm();
    let out = h.send(Input::Watchdog(WatchdogFact::PreTimeout));
    assert_eq!(out.names(), ["WATCHDOG_PRETIMEOUT"]);
    assert_eq!(out.events[0].get("suppressed"), Some(&json!(0)));
    // A free-running guest: 999 more within the same second.
    for _ in 0..999 {
        h.advance_ms(1);
        assert!(h.send(Input::Watchdog(WatchdogFact::PreTimeout)).is_empty());
    }
    h.advance_ms(1);
    let out = h.send(Input::Watchdog(WatchdogFact::PreTimeout));
    assert_eq!(out.names(), ["WATCHDOG_PRETIMEOUT"]);
    assert_eq!(out.events[0].get("suppressed"), Some(&json!(999)));
    h.advance_ms(10);
    assert!(h.send(Input::Watchdog(WatchdogFact::PreTimeout)).is_empty());
    assert_eq!(h.lc.status().pretimeouts, 1002);
    // A new cycle starts with a fresh limiter.
    h.send(Input::Reset { cause: Cause::Guest });
    h.arm();
    assert_eq!(h.send(Input::Watchdog(WatchdogFact::PreTimeout)).names(), ["WATCHDOG_PRETIMEOUT"]);
}

#[test]
fn pause_is_an_overlay_and_idempotent() {
    let mut h = Harness::booted(Config::default());
    h.arm();
    h.send(Input::Watchdog(WatchdogFact::Fed));
    let out = h.send(Input::Pause { cause: Cause::Qmp });
    assert_eq!(out.names(), ["STOP"]);
    assert_eq!(out.events[0].get("cause"), Some(&json!("qmp")));
    assert!(h.send(Input::Pause { cause: Cause::Watchdog }).is_empty());
    assert_eq!(h.lc.run_state(), RunState::Paused);
    assert_eq!(h.lc.state(), State::Alive, "the state underneath is remembered");
    assert_eq!(h.lc.status().paused, Some(Cause::Qmp));
    let out = h.send(Input::Resume { cause: Cause::Qmp });
    assert_eq!(out.names(), ["RESUME"]);
    assert!(h.send(Input::Resume { cause: Cause::Qmp }).is_empty());
    assert_eq!(h.lc.run_state(), RunState::Running);
    assert_eq!(h.lc.state(), State::Alive);
}

#[test]
fn reset_while_paused_stays_paused() {
    let mut h = Harness::booted(Config::default());
    h.send(Input::Pause { cause: Cause::Qmp });
    assert_eq!(h.send(Input::Reset { cause: Cause::Qmp }).names(), ["RESET", "BOOT"]);
    assert_eq!(h.lc.run_state(), RunState::Paused);
    assert_eq!(h.lc.state(), State::Booting);
}

#[test]
fn shutdown_is_final() {
    let mut h = Harness::booted(Config::default());
    h.arm();
    h.send(Input::Pause { cause: Cause::Qmp });
    let out = h.send(Input::Shutdown { cause: Cause::Qmp, by: PowerOff::Vmm });
    assert_eq!(out.names(), ["SHUTDOWN"]);
    assert_eq!(out.events[0].get("forced"), Some(&json!(false)));
    assert_eq!(out.events[0].get("reason"), Some(&json!("host-qmp-quit")));
    assert_eq!(out.events[0].get("guest"), Some(&json!(false)));
    assert_eq!(out.events[0].get("cause"), Some(&json!("qmp")));
    assert_eq!(h.lc.run_state(), RunState::Shutdown);
    for input in [
        Input::Watchdog(WatchdogFact::Fed),
        Input::Watchdog(WatchdogFact::Expired),
        Input::Tick,
        Input::Reset { cause: Cause::Guest },
        Input::Resume { cause: Cause::Qmp },
    ] {
        assert!(h.send(input).is_empty(), "{input:?} after shutdown");
    }
    assert_eq!(h.lc.cycle(), 1);
}

#[test]
fn guest_and_watchdog_shutdowns_report_guest_shutdown() {
    for (cause, by) in [(Cause::Guest, PowerOff::Guest), (Cause::Watchdog, PowerOff::Vmm)] {
        let mut h = Harness::booted(Config::default());
        let out = h.send(Input::Shutdown { cause, by });
        assert_eq!(out.events[0].get("guest"), Some(&json!(true)));
        assert_eq!(out.events[0].get("reason"), Some(&json!("guest-shutdown")));
    }
    let mut h = Harness::booted(Config::default());
    let out = h.send(Input::Shutdown { cause: Cause::Signal, by: PowerOff::Vmm });
    assert_eq!(out.events[0].get("reason"), Some(&json!("host-signal")));
}

/// `shutdown` presses the power button (QEMU's meaning); `poweroff` pulls
/// the plug. The press is reported as POWERDOWN; the cycle is not over
/// until the VMM reports the power-off.
#[test]
fn the_shutdown_action_presses_the_button_and_poweroff_does_not() {
    let cfg = |a| Config { watchdog_action: a, ..Config::default() };
    let mut h = Harness::booted(cfg(WatchdogAction::Poweroff));
    h.arm();
    let out = h.send(Input::Watchdog(WatchdogFact::Expired));
    assert_eq!(out.actions, [Action::Poweroff { cause: Cause::Watchdog }]);

    let mut h = Harness::booted(cfg(WatchdogAction::Shutdown));
    h.arm();
    let out = h.send(Input::Watchdog(WatchdogFact::Expired));
    assert_eq!(out.names(), ["WATCHDOG"]);
    assert_eq!(out.actions, [Action::PowerButton { cause: Cause::Watchdog }]);
    let out = h.send(Input::PowerButton { cause: Cause::Watchdog });
    assert_eq!(out.names(), ["POWERDOWN"]);
    assert_eq!(out.events[0].get("cause"), Some(&json!("watchdog")));
    assert_eq!(out.events[0].get("cycle"), Some(&json!(1)));
    assert_ne!(h.lc.run_state(), RunState::Shutdown, "pressing the button stops nothing");
}

/// Who powered off decides QEMU's `guest` and `reason`; `cause` says why;
/// `forced` says kennel cut the power after an unanswered button.
#[test]
fn shutdown_data_says_who_powered_off_and_whether_it_was_forced() {
    let cases = [
        (Cause::Watchdog, PowerOff::Guest, true, "guest-shutdown", false),
        (Cause::Qmp, PowerOff::Guest, true, "guest-shutdown", false),
        (Cause::Guest, PowerOff::Guest, true, "guest-shutdown", false),
        (Cause::Watchdog, PowerOff::Forced, true, "guest-shutdown", true),
        (Cause::Qmp, PowerOff::Vmm, false, "host-qmp-quit", false),
    ];
    for (cause, by, guest, reason, forced) in cases {
        let mut h = Harness::booted(Config::default());
        let out = h.send(Input::Shutdown { cause, by });
        let e = &out.events[0];
        let got = (e.get("cause"), e.get("guest"), e.get("reason"), e.get("forced"));
        let want =
            (Some(&json!(cause.as_str())), Some(&json!(guest)), Some(&json!(reason)), Some(&json!(forced)));
        assert_eq!(got, want, "{cause:?} by {by:?}");
    }
}

#[test]
fn action_names_round_trip() {
    for a in WatchdogAction::ALL {
        assert_eq!(a.to_string().parse::<WatchdogAction>(), Ok(a));
    }
    for a in DeadlineAction::ALL {
        assert_eq!(a.to_string().parse::<DeadlineAction>(), Ok(a));
    }
    assert_eq!("inject-nmi".parse::<WatchdogAction>(), Ok(WatchdogAction::InjectNmi));
    assert_eq!(WatchdogAction::default(), WatchdogAction::Reset);
    assert_eq!(DeadlineAction::default(), DeadlineAction::None);
    let err = "dump".parse::<WatchdogAction>().expect_err("unknown");
    assert!(err.to_string().contains("'dump'"));
    assert!("debug".parse::<DeadlineAction>().is_err());
}

#[test]
fn status_json_has_every_field() {
    let mut h = Harness::booted(Config::default());
    h.arm();
    let v = h.lc.status().to_json();
    assert_eq!(v["state"], "armed");
    assert_eq!(v["cycle"], 1);
    assert_eq!(v["cause"], "power-on");
    assert_eq!(v["armed"], true);
    assert_eq!(v["action"], "reset");
    assert_eq!(v["paused"], false);
    assert_eq!(v["first_feed_after_boot_ms"], serde_json::Value::Null);
    assert_eq!(v["boot_deadline_ms"], serde_json::Value::Null);
    assert_eq!(v["deadline_action"], "none");
}

#[test]
fn pretimeout_and_tick_leave_the_state_alone() {
    let mut h = Harness::booted(Config::default());
    h.arm();
    h.send(Input::Watchdog(WatchdogFact::Fed));
    h.send(Input::Watchdog(WatchdogFact::PreTimeout));
    assert!(h.send(Input::Tick).is_empty());
    assert_eq!(h.lc.state(), State::Alive);
}

#[test]
fn expired_then_paused_then_resumed_is_still_expired() {
    let mut h = Harness::booted(Config { watchdog_action: WatchdogAction::Pause, ..Config::default() });
    h.arm();
    let out = h.send(Input::Watchdog(WatchdogFact::Expired));
    assert_eq!(out.actions, [Action::Pause { cause: Cause::Watchdog }]);
    let out = h.send(Input::Pause { cause: Cause::Watchdog });
    assert_eq!(out.events[0].get("cause"), Some(&json!("watchdog")));
    h.send(Input::Resume { cause: Cause::Qmp });
    assert_eq!(h.lc.state(), State::Expired);
}
