#![allow(clippy::unwrap_used, clippy::panic)]
//! Boot-cycle supervision seen through the real QMP client, with the tiny
//! 6300ESB guest: every lifecycle event and QMP command, fast on any KVM host.

mod common;

use std::time::Duration;

use common::qmp::{seconds_between, QmpWatch};
use common::{kvm_or_skip, scratch, test_guest, Kennel, RESET_STORY};
use serde_json::json;

const T: Duration = Duration::from_secs(20);

fn start(name: &str, cmdline: &str, extra: &[&str]) -> (Kennel, QmpWatch, std::path::PathBuf) {
    let sock = scratch(&format!("{name}.qmp"));
    let events = scratch(&format!("{name}.jsonl"));
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&events);
    let kernel = test_guest("esb");
    let mut args = vec![
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--memory",
        "16",
        "--cmdline",
        cmdline,
        "--qmp",
        sock.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        "--start-paused",
    ];
    args.extend_from_slice(extra);
    let k = Kennel::start(&args);
    let q = QmpWatch::connect(&sock, true);
    (k, q, events)
}

/// `want` appears in `seq` in this order (other events may come between).
fn assert_subsequence(seq: &[(String, u64)], want: &[(&str, u64)]) {
    let mut it = seq.iter();
    for (name, cycle) in want {
        assert!(
            it.any(|(n, c)| n == name && c == cycle),
            "missing {name}({cycle}) in order; sequence was {seq:?}"
        );
    }
}

#[test]
fn watchdog_reset_then_first_feed_of_the_next_cycle() {
    if !kvm_or_skip("watchdog_reset_then_first_feed_of_the_next_cycle") {
        return;
    }
    let (mut k, mut q, events) = start("reset-cycle", "heartbeat=1 feeds=3 interval_ms=100", &[]);
    let ff2 = q.wait_event("WATCHDOG_FIRST_FEED", Some(2), T).unwrap_or_else(|| panic!("{}", k.transcript()));
    assert_eq!(ff2["data"]["cycle"], 2);
    let seq = q.sequence();
    assert_subsequence(&seq, &RESET_STORY);
    // Three feeds per cycle, one first feed.
    let ff1 = seq.iter().filter(|(n, c)| n == "WATCHDOG_FIRST_FEED" && *c == 1).count();
    assert_eq!(ff1, 1, "{seq:?}");
    let boot2 = q.wait_event("BOOT", Some(2), T).unwrap();
    assert_eq!(boot2["data"]["cause"], "watchdog");
    let wd = q.wait_event("WATCHDOG", Some(1), T).unwrap();
    assert_eq!(wd["data"]["action"], "reset");
    // QEMU's field names on the QEMU-compatible events.
    let reset = q.wait_event("RESET", Some(1), T).unwrap();
    assert_eq!(
        (reset["data"]["guest"].clone(), reset["data"]["cause"].clone()),
        (json!(true), json!("watchdog"))
    );
    // The events file holds the same story, one JSON object per line.
    let text = std::fs::read_to_string(&events).unwrap();
    let names: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names.starts_with(&["BOOT".to_string(), "WATCHDOG_ARMED".into(), "WATCHDOG_FIRST_FEED".into()]),
        "{names:?}"
    );
    k.kill();
}

#[test]
fn expiry_comes_one_timeout_after_the_last_feed() {
    if !kvm_or_skip("expiry_comes_one_timeout_after_the_last_feed") {
        return;
    }
    // One feed only: the first feed is the last feed.
    let (mut k, mut q, _) = start("timing", "heartbeat=1 feeds=1 interval_ms=50", &[]);
    let ff = q.wait_event("WATCHDOG_FIRST_FEED", Some(1), T).unwrap_or_else(|| panic!("{}", k.transcript()));
    let armed = q.wait_event("WATCHDOG_ARMED", Some(1), T).unwrap();
    let wd = q.wait_event("WATCHDOG", Some(1), T).unwrap();
    let nominal = armed["data"]["timeout_ms"].as_f64().unwrap() / 1000.0;
    assert!((nominal - 1.0066).abs() < 0.001, "timeout_ms for heartbeat 1 should be 1006: {armed}");
    let got = seconds_between(&ff, &wd);
    assert!((got - nominal).abs() < 0.05, "expiry {got:.4}s after the last feed, nominal {nominal:.4}s");
    k.kill();
}

#[test]
fn qmp_commands_stop_cont_action_reset_and_quit() {
    if !kvm_or_skip("qmp_commands_stop_cont_action_reset_and_quit") {
        return;
    }
    let (mut k, mut q, _) = start("commands", "heartbeat=1 feeds=1 interval_ms=50", &[]);
    q.wait_event("WATCHDOG_FIRST_FEED", Some(1), T).expect("first feed");
    assert_eq!(q.execute("query-status", json!({}))["return"]["status"], "running");

    // Paused, the watchdog's clock stands still: no expiry for 2 timeouts.
    q.execute("stop", json!({}));
    q.wait_event("STOP", Some(1), T).expect("STOP");
    assert_eq!(q.execute("query-status", json!({}))["return"]["status"], "paused");
    std::thread::sleep(Duration::from_millis(2200));
    assert!(q.wait_event("WATCHDOG", Some(1), Duration::from_millis(10)).is_none(), "expired while paused");
    let st = q.execute("query-watchdog", json!({}));
    assert_eq!(st["return"]["cycle"], 1, "{st}");
    assert_eq!(st["return"]["device"]["enabled"], true, "{st}");

    // With action none the expiry is reported and nothing else happens.
    assert!(q.execute("watchdog-set-action", json!({"action": "none"})).get("return").is_some());
    assert!(q.execute("watchdog-set-action", json!({"action": "explode"})).get("error").is_some());
    q.execute("cont", json!({}));
    q.wait_event("RESUME", Some(1), T).expect("RESUME");
    let wd = q.wait_event("WATCHDOG", Some(1), T).expect("expiry after cont");
    assert_eq!(wd["data"]["action"], "none");
    assert!(q.wait_event("RESET", Some(1), Duration::from_millis(500)).is_none(), "action none reset the VM");

    q.execute("system_reset", json!({}));
    let b2 = q.wait_event("BOOT", Some(2), T).expect("BOOT after system_reset");
    assert_eq!(b2["data"]["cause"], "qmp");
    q.wait_event("WATCHDOG_FIRST_FEED", Some(2), T).expect("cycle 2 first feed");

    q.execute("quit", json!({}));
    let st = k.wait_exit(T).expect("kennel did not exit after quit");
    assert_eq!(st.code(), Some(0), "{}", k.transcript());
    assert!(
        q.events.iter().any(|e| e["event"] == "SHUTDOWN" && e["data"]["cause"] == "qmp"),
        "{:?}",
        q.sequence()
    );
    assert!(!scratch("commands.qmp").exists(), "socket left behind");
}

#[test]
fn boot_deadline_missed_by_a_guest_that_arms_but_never_feeds() {
    if !kvm_or_skip("boot_deadline_missed_by_a_guest_that_arms_but_never_feeds") {
        return;
    }
    let (mut k, mut q, _) = start(
        "deadline-armed",
        "heartbeat=30 feeds=0",
        &["--boot-deadline", "0.5", "--boot-deadline-action", "reset"],
    );
    let miss =
        q.wait_event("BOOT_DEADLINE_MISSED", Some(1), T).unwrap_or_else(|| panic!("{}", k.transcript()));
    assert_eq!(miss["data"]["armed"], true);
    assert_eq!(miss["data"]["deadline_ms"], 500);
    let boot = q.wait_event("BOOT", Some(1), T).unwrap();
    let late = seconds_between(&boot, &miss);
    assert!((0.5..0.7).contains(&late), "deadline fired {late:.3}s after BOOT");
    let b2 = q.wait_event("BOOT", Some(2), T).expect("deadline action reset");
    assert_eq!(b2["data"]["cause"], "boot-deadline");
    assert!(!q.sequence().iter().any(|(n, _)| n == "WATCHDOG_FIRST_FEED"), "{:?}", q.sequence());
    k.kill();
}

#[test]
fn boot_deadline_not_missed_when_the_first_feed_is_in_time() {
    if !kvm_or_skip("boot_deadline_not_missed_when_the_first_feed_is_in_time") {
        return;
    }
    let (mut k, mut q, _) =
        start("deadline-ok", "heartbeat=30 feeds=100 interval_ms=20", &["--boot-deadline", "0.5"]);
    q.wait_event("WATCHDOG_FIRST_FEED", Some(1), T).unwrap_or_else(|| panic!("{}", k.transcript()));
    assert!(
        q.wait_event("BOOT_DEADLINE_MISSED", None, Duration::from_millis(1000)).is_none(),
        "{:?}",
        q.sequence()
    );
    k.kill();
}

#[test]
fn a_clean_disarm_is_reported_and_nothing_expires() {
    if !kvm_or_skip("a_clean_disarm_is_reported_and_nothing_expires") {
        return;
    }
    let (mut k, mut q, _) = start("disarm", "heartbeat=1 feeds=2 interval_ms=50 disarm", &[]);
    let d = q.wait_event("WATCHDOG_DISARMED", Some(1), T).unwrap_or_else(|| panic!("{}", k.transcript()));
    assert_eq!(d["data"]["cycle"], 1);
    assert!(q.wait_event("WATCHDOG", None, Duration::from_millis(2500)).is_none(), "{:?}", q.sequence());
    assert_eq!(q.execute("query-watchdog", json!({}))["return"]["state"], "disarmed");
    k.kill();
}

/// Each watchdog action, as QEMU's `-action watchdog=` defines it.
#[test]
fn every_watchdog_action_does_what_it_says() {
    if !kvm_or_skip("every_watchdog_action_does_what_it_says") {
        return;
    }
    for action in ["poweroff", "shutdown", "pause", "debug", "inject-nmi"] {
        let (mut k, mut q, _) = start(
            &format!("action-{action}"),
            "heartbeat=1 feeds=1 interval_ms=20",
            // The tiny guest has no ACPI: shutdown's button press goes
            // unanswered, and the grace ends it.
            &["--watchdog-action", action, "--shutdown-grace", "0.5"],
        );
        let wd =
            q.wait_event("WATCHDOG", Some(1), T).unwrap_or_else(|| panic!("{action}: {}", k.transcript()));
        assert_eq!(wd["data"]["action"], action);
        match action {
            "poweroff" | "shutdown" => {
                let st = k.wait_exit(T).expect("kennel should exit");
                assert_eq!(st.code(), Some(4), "{action}: {}", k.transcript());
                let sd = q.wait_event("SHUTDOWN", Some(1), T).expect("SHUTDOWN");
                assert_eq!(sd["data"]["cause"], "watchdog", "{sd}");
                assert_eq!(sd["data"]["forced"], action == "shutdown", "{sd}");
                let pressed = q.sequence().iter().any(|(n, _)| n == "POWERDOWN");
                assert_eq!(pressed, action == "shutdown", "{:?}", q.sequence());
            }
            "pause" => {
                let stop = q.wait_event("STOP", Some(1), T).expect("STOP");
                assert_eq!(stop["data"]["cause"], "watchdog");
                assert_eq!(q.execute("query-status", json!({}))["return"]["status"], "paused");
            }
            "debug" => {
                assert!(
                    q.wait_event("RESET", None, Duration::from_millis(500)).is_none(),
                    "{:?}",
                    q.sequence()
                );
                assert_eq!(q.execute("query-status", json!({}))["return"]["status"], "running");
            }
            "inject-nmi" => {
                // The test guest has no IDT: the NMI it receives escalates to
                // a triple fault, which kennel turns into a guest reset.
                let r = q.wait_event("RESET", Some(1), T).expect("the NMI never reached the guest");
                assert_eq!(r["data"]["cause"], "guest", "{r}");
            }
            _ => unreachable!(),
        }
        k.kill();
    }
}

#[test]
fn a_guest_that_never_arms_misses_its_deadline_unarmed() {
    if !kvm_or_skip("a_guest_that_never_arms_misses_its_deadline_unarmed") {
        return;
    }
    let sock = scratch("never-arms.qmp");
    let _ = std::fs::remove_file(&sock);
    let hello = test_guest("hello");
    let mut k = Kennel::start(&[
        "run",
        "--kernel",
        hello.to_str().unwrap(),
        "--memory",
        "16",
        "--cmdline",
        "halt",
        "--qmp",
        sock.to_str().unwrap(),
        "--start-paused",
        "--boot-deadline",
        "0.3",
    ]);
    let mut q = QmpWatch::connect(&sock, true);
    let miss =
        q.wait_event("BOOT_DEADLINE_MISSED", Some(1), T).unwrap_or_else(|| panic!("{}", k.transcript()));
    assert_eq!(miss["data"]["armed"], false);
    assert_eq!(miss["data"]["action"], "none");
    // Once per cycle.
    assert!(q.wait_event("BOOT", Some(2), Duration::from_millis(800)).is_none());
    assert_eq!(q.events.iter().filter(|e| e["event"] == "BOOT_DEADLINE_MISSED").count(), 1);
    k.kill();
}

#[test]
fn a_hang_after_the_first_feed_is_caught_by_the_watchdog() {
    if !kvm_or_skip("a_hang_after_the_first_feed_is_caught_by_the_watchdog") {
        return;
    }
    let (mut k, mut q, _) = start(
        "hang",
        "heartbeat=1 feeds=1000 interval_ms=50",
        &["--fault", "boot:hang,after=300ms,since=first-feed,cycle=1"],
    );
    let ff = q.wait_event("WATCHDOG_FIRST_FEED", Some(1), T).unwrap_or_else(|| panic!("{}", k.transcript()));
    let hang = q.wait_event("FAULT_INJECTED", Some(1), T).expect("hang injected");
    assert_eq!(
        (hang["data"]["what"].as_str(), hang["data"]["since"].as_str()),
        (Some("hang"), Some("first-feed"))
    );
    let after = seconds_between(&ff, &hang);
    assert!((0.25..0.6).contains(&after), "hang {after:.3}s after the first feed, asked for 0.3s");
    // The vCPUs stopped but the watchdog's clock ran on: it fired.
    let wd = q.wait_event("WATCHDOG", Some(1), T).expect("the watchdog should catch the hang");
    assert!(seconds_between(&hang, &wd) < 1.2, "{wd}");
    let b2 = q
        .wait_event("BOOT", Some(2), T)
        .unwrap_or_else(|| panic!("no reset: {:?}\n{}", q.sequence(), k.transcript()));
    assert_eq!(b2["data"]["cause"], "watchdog");
    // Cycle 2 has no hang: it keeps feeding.
    q.wait_event("WATCHDOG_FIRST_FEED", Some(2), T).expect("cycle 2 first feed");
    assert!(q.wait_event("WATCHDOG", Some(2), Duration::from_millis(1500)).is_none(), "{:?}", q.sequence());
    k.kill();
}

/// `--metrics`: after a watchdog reset and the next cycle's first feed, the
/// file holds the story in the Prometheus text format, as parsed by the
/// reference parser (`prometheus_client`), and no temporary is left beside it.
#[test]
fn metrics_file_tells_the_reset_story_to_a_prometheus_parser() {
    if !kvm_or_skip("metrics_file_tells_the_reset_story_to_a_prometheus_parser") {
        return;
    }
    let dir = scratch("metrics-dir");
    std::fs::create_dir_all(&dir).unwrap();
    let prom = dir.join("vm.prom");
    let (mut k, mut q, _) =
        start("metrics", "heartbeat=1 feeds=3 interval_ms=100", &["--metrics", prom.to_str().unwrap()]);
    q.wait_event("WATCHDOG_FIRST_FEED", Some(2), T).unwrap_or_else(|| panic!("{}", k.transcript()));
    // Rewritten on every event: the first feed's write is done once the
    // event reached QMP, as both happen in the same main-loop step.
    let m = serde_json::Value::Object(
        common::prometheus_samples(&prom)
            .unwrap_or_else(|e| panic!("prometheus_client refused the file: {e}")),
    );
    let v = |k: &str| m[k].as_f64().unwrap_or_else(|| panic!("no {k} in {m}"));
    assert!(v("kennel_boot_cycle") >= 2.0, "{m}");
    assert_eq!(v("kennel_boots_total|cause=power-on"), 1.0, "{m}");
    assert!(v("kennel_boots_total|cause=watchdog") >= 1.0, "{m}");
    assert!(v("kennel_resets_total|cause=watchdog") >= 1.0, "{m}");
    assert!(v("kennel_watchdog_expiries_total|action=reset") >= 1.0, "{m}");
    assert!(v("kennel_watchdog_first_feeds_total") >= 2.0, "{m}");
    // Three feeds in cycle 1 and at least the first of cycle 2.
    assert!(v("kennel_watchdog_feeds_total") >= 4.0, "{m}");
    assert_eq!(v("kennel_lifecycle_state|state=booting"), 0.0, "{m}");
    assert!(v("kennel_seconds_since_last_first_feed") >= 0.0, "{m}");
    // Counters are typed as counters (the parser strips `_total`).
    assert_eq!(m["type:kennel_resets"], "counter", "{m}");
    assert_eq!(m["type:kennel_boot_cycle"], "gauge", "{m}");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("vm.prom")]);
    k.kill();
}
