//! The boot deadline, and how pauses stop it.

use kennel_devices::i6300esb::WatchdogFact;
use std::time::Duration;

use serde_json::json;

use super::super::*;
use super::Harness;

fn with_deadline(secs: u64, action: DeadlineAction) -> Harness {
    Harness::booted(Config {
        boot_deadline: Some(Duration::from_secs(secs)),
        deadline_action: action,
        ..Config::default()
    })
}

#[test]
fn no_deadline_configured_means_no_timer() {
    let mut h = Harness::booted(Config::default());
    assert_eq!(h.lc.next_deadline(), None);
    h.advance_ms(1_000_000);
    assert!(h.send(Input::Tick).is_empty());
}

#[test]
fn deadline_fires_once_when_never_fed() {
    let mut h = with_deadline(60, DeadlineAction::None);
    assert_eq!(h.lc.next_deadline(), Some(Duration::from_secs(60)));
    h.advance_ms(59_999);
    assert!(h.send(Input::Tick).is_empty(), "not yet");
    h.advance_ms(1);
    let out = h.send(Input::Tick);
    assert_eq!(out.names(), ["BOOT_DEADLINE_MISSED"]);
    let e = &out.events[0];
    assert_eq!(e.get("cycle"), Some(&json!(1)));
    assert_eq!(e.get("deadline_ms"), Some(&json!(60_000)));
    assert_eq!(e.get("armed"), Some(&json!(false)));
    assert_eq!(e.get("action"), Some(&json!("none")));
    assert!(out.actions.is_empty());
    assert!(h.lc.status().deadline_missed);
    assert_eq!(h.lc.next_deadline(), None);
    h.advance_ms(120_000);
    assert!(h.send(Input::Tick).is_empty(), "once per cycle");
}

#[test]
fn deadline_reports_whether_the_guest_got_as_far_as_arming() {
    let mut h = with_deadline(10, DeadlineAction::None);
    h.advance_ms(3000);
    h.arm();
    h.advance_ms(7000);
    let out = h.send(Input::Tick);
    assert_eq!(out.events[0].get("armed"), Some(&json!(true)));
}

#[test]
fn first_feed_in_time_cancels_the_deadline() {
    let mut h = with_deadline(60, DeadlineAction::Reset);
    h.advance_ms(1000);
    h.arm();
    h.advance_ms(58_999);
    assert_eq!(h.send(Input::Watchdog(WatchdogFact::Fed)).names(), ["WATCHDOG_FIRST_FEED"]);
    assert_eq!(h.lc.next_deadline(), None);
    h.advance_ms(100_000);
    assert!(h.send(Input::Tick).is_empty());
    assert!(!h.lc.status().deadline_missed);
}

#[test]
fn a_feed_after_the_deadline_does_not_count_as_in_time() {
    // The timer fired late: the feed at 61 s arrives before the Tick.
    let mut h = with_deadline(60, DeadlineAction::None);
    h.arm();
    h.advance_ms(61_000);
    let out = h.send(Input::Watchdog(WatchdogFact::Fed));
    assert_eq!(out.names(), ["BOOT_DEADLINE_MISSED", "WATCHDOG_FIRST_FEED"]);
}

#[test]
fn deadline_actions_map_to_vmm_actions() {
    let cases = [
        (DeadlineAction::None, vec![]),
        (DeadlineAction::Reset, vec![Action::ResetVm { cause: Cause::BootDeadline }]),
        (DeadlineAction::Poweroff, vec![Action::Poweroff { cause: Cause::BootDeadline }]),
        (DeadlineAction::Pause, vec![Action::Pause { cause: Cause::BootDeadline }]),
    ];
    for (action, expected) in cases {
        let mut h = with_deadline(5, action);
        h.advance_ms(5000);
        let out = h.send(Input::Tick);
        assert_eq!(out.events[0].get("action"), Some(&json!(action.to_string())));
        assert_eq!(out.actions, expected, "{action}");
    }
}

#[test]
fn deadline_reset_starts_a_new_cycle_with_its_own_deadline() {
    let mut h = with_deadline(5, DeadlineAction::Reset);
    h.advance_ms(5000);
    h.send(Input::Tick);
    let out = h.send(Input::Reset { cause: Cause::BootDeadline });
    assert_eq!(out.names(), ["RESET", "BOOT"]);
    assert_eq!(out.events[1].get("cause"), Some(&json!("boot-deadline")));
    assert_eq!(h.lc.next_deadline(), Some(Duration::from_secs(10)));
    h.advance_ms(5000);
    let out = h.send(Input::Tick);
    assert_eq!(out.names(), ["BOOT_DEADLINE_MISSED"]);
    assert_eq!(out.events[0].get("cycle"), Some(&json!(2)));
}

#[test]
fn pause_stops_the_deadline_and_resume_continues_it() {
    let mut h = with_deadline(60, DeadlineAction::None);
    h.advance_ms(40_000);
    h.send(Input::Pause { cause: Cause::Qmp });
    assert_eq!(h.lc.next_deadline(), None, "no timer while paused");
    // The pausable clock stands still while paused: an hour of host time
    // passes and `now` does not move, so ticks find nothing due.
    for _ in 0..3 {
        assert!(h.send(Input::Tick).is_empty());
    }
    let out = h.send(Input::Resume { cause: Cause::Qmp });
    assert_eq!(out.names(), ["RESUME"]);
    assert_eq!(h.lc.next_deadline(), Some(Duration::from_secs(60)), "20 s of VM time left");
    h.advance_ms(19_999);
    assert!(h.send(Input::Tick).is_empty());
    h.advance_ms(1);
    assert_eq!(h.send(Input::Tick).names(), ["BOOT_DEADLINE_MISSED"]);
}

#[test]
fn a_cycle_ending_input_drops_the_deadline_action_but_reports_the_miss() {
    let mut h = with_deadline(5, DeadlineAction::Reset);
    h.advance_ms(6000);
    let out = h.send(Input::Reset { cause: Cause::Guest });
    assert_eq!(out.names(), ["BOOT_DEADLINE_MISSED", "RESET", "BOOT"]);
    assert!(out.actions.is_empty(), "the VM is being reset anyway");
}

#[test]
fn no_deadline_before_boot_or_after_shutdown() {
    let h = Harness::new(Config { boot_deadline: Some(Duration::from_secs(1)), ..Config::default() });
    assert_eq!(h.lc.next_deadline(), None);
    let mut h = with_deadline(1, DeadlineAction::Reset);
    h.send(Input::Shutdown { cause: Cause::Guest, by: PowerOff::Guest });
    assert_eq!(h.lc.next_deadline(), None);
    h.advance_ms(5000);
    assert!(h.send(Input::Tick).is_empty());
}
