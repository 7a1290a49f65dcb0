#![allow(clippy::unwrap_used, clippy::panic)]
//! kennel as a systemd service: the shipped template unit passes
//! `systemd-analyze verify`, and kennel speaks the sd_notify protocol to
//! whatever listens on `NOTIFY_SOCKET` (here the test, as systemd would).

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::qmp::QmpWatch;
use common::{kvm_or_skip, repo, scratch, skip, test_guest, Kennel};

#[test]
fn the_template_unit_passes_systemd_analyze_verify() {
    let name = "the_template_unit_passes_systemd_analyze_verify";
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        skip(name, "systemd-analyze is not installed (scripts/setup installs it)");
        return;
    }
    let unit = std::fs::read_to_string(repo().join("resources/systemd/kennel@.service")).unwrap();
    // As installed: the binary where the unit says it is.
    let bin = common::kennel_bin();
    let unit = unit.replace("/usr/local/bin/kennel", bin.to_str().unwrap());
    let dir = scratch("units");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kennel@web1.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&path).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "verify failed: {said}");
    // verify only warns about a misspelt setting; a warning is a failure here.
    let about_unit: Vec<&str> = said.lines().filter(|l| l.contains("kennel@")).collect();
    assert!(about_unit.is_empty(), "verify complained: {about_unit:?}");
}

/// Takes in the datagrams kennel sends for `how_long`, or until `done`
/// says enough.
fn receive(
    sock: &UnixDatagram,
    seen: &mut Vec<String>,
    how_long: Duration,
    done: impl Fn(&[String]) -> bool,
) {
    let end = Instant::now() + how_long;
    let mut buf = [0u8; 4096];
    while Instant::now() < end && !done(seen) {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

/// Reads the datagrams kennel sent until `want` is among them.
fn wait_for(sock: &UnixDatagram, seen: &mut Vec<String>, want: &str, timeout: Duration) -> bool {
    let has = |seen: &[String]| seen.iter().any(|m| m.lines().any(|l| l.starts_with(want)));
    receive(sock, seen, timeout, has);
    has(seen)
}

/// `kennel run` of the tiny 6300ESB guest, which feeds its watchdog for as
/// long as it runs, held at `--start-paused` with its QMP socket at `qmp`.
fn feeding_guest_args(qmp: &std::path::Path) -> Vec<String> {
    let kernel = test_guest("esb");
    [
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--memory",
        "16",
        "--cmdline",
        "heartbeat=1 feeds=1000000 interval_ms=100",
        "--qmp",
        qmp.to_str().unwrap(),
        "--start-paused",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn sd_notify_ready_status_watchdog_and_stopping() {
    if !kvm_or_skip("sd_notify_ready_status_watchdog_and_stopping") {
        return;
    }
    let notify = scratch("notify.sock");
    let _ = std::fs::remove_file(&notify);
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let qmp = scratch("notify.qmp");
    let _ = std::fs::remove_file(&qmp);
    let args = feeding_guest_args(&qmp);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // WatchdogSec=1s: kennel must ping every half second.
    let env = [("NOTIFY_SOCKET", notify.to_str().unwrap()), ("WATCHDOG_USEC", "1000000")];
    let mut k = Kennel::start_env(&args, &env);
    // The QMP client first (it lets the VM run), as in every tiny-guest
    // test: in an emulated nested host a spinning guest can starve a client
    // started later.
    let mut q = QmpWatch::connect(&qmp, true);
    // A service manager that does not read: the pings pile up past the
    // socket's queue (net.unix.max_dgram_qlen, 10 by default), and kennel's
    // main loop must go on serving regardless.
    assert!(
        q.wait_event("WATCHDOG_FIRST_FEED", Some(1), Duration::from_secs(60)).is_some(),
        "{}",
        k.transcript()
    );
    std::thread::sleep(Duration::from_secs(8));
    let st = q.execute("query-status", serde_json::json!({}));
    assert_eq!(st["return"]["status"], "running", "{st}\n{}", k.transcript());
    let mut seen = Vec::new();
    assert!(wait_for(&sock, &mut seen, "READY=1", Duration::from_secs(20)), "{seen:?}\n{}", k.transcript());
    assert!(
        wait_for(&sock, &mut seen, "STATUS=cycle 1: alive (watchdog armed)", Duration::from_secs(20)),
        "{seen:?}\n{}",
        k.transcript()
    );
    // Pings keep coming from the main loop: 10 due in 5 s, at least 4 even
    // on a slow emulated host.
    let before = seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    receive(&sock, &mut seen, Duration::from_secs(5), |_| false);
    let pings = seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() - before;
    assert!(pings >= 4, "{pings} WATCHDOG=1 in 5 s with WatchdogSec=1s: {seen:?}");
    q.execute("quit", serde_json::json!({}));
    assert!(k.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()), "{}", k.transcript());
    assert!(wait_for(&sock, &mut seen, "STOPPING=1", Duration::from_secs(2)), "{seen:?}");
    let _ = std::fs::remove_file(&notify);
}

/// What a supervisor that starts a second kennel for the same VM sees: a
/// clear error naming the socket, status 1, and the first kennel untouched.
#[test]
fn a_second_kennel_on_a_live_qmp_socket_is_refused() {
    if !kvm_or_skip("a_second_kennel_on_a_live_qmp_socket_is_refused") {
        return;
    }
    let qmp = scratch("twice.qmp");
    let _ = std::fs::remove_file(&qmp);
    let args = feeding_guest_args(&qmp);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut first = Kennel::start(&args);
    let mut q = QmpWatch::connect(&qmp, true);
    let ff = q.wait_event("WATCHDOG_FIRST_FEED", Some(1), Duration::from_secs(60));
    assert!(ff.is_some(), "{}", first.transcript());
    let second = Command::new(common::kennel_bin()).args(args).output().unwrap();
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("is in use: a process listens on it"), "{err}");
    assert!(err.contains(qmp.to_str().unwrap()), "{err}");
    // The first one still serves its socket.
    assert_eq!(q.execute("query-status", serde_json::json!({}))["return"]["status"], "running");
    first.kill();
}
