#![allow(clippy::unwrap_used, clippy::panic)]
//! The operator's story on a real distribution: kennel's Debian guest
//! (`scripts/build-debian-guest`: Debian 12, systemd, udev loading the stock
//! i6300esb, Debian's `watchdog` package) through the named scenarios
//! (`scripts/scenario --guest debian NAME`), each checked event by event,
//! against the reference monitor's alarm and the console.
//!
//! Real KVM only: Debian's user space must run. Each boot takes 40-100 s in
//! the nested KVM host, so the feeder set-ups are compared where they differ
//! (healthy, never-arms) and the failure stories run with the daemon.

mod common;

use common::scenario::{check, ev, Run};
use common::{debian_guest, real_kvm_or_skip};

fn run(name: &str, feeder: &str) -> Run {
    debian_guest();
    common::scenario::run(
        &format!("debian-{feeder}-{name}"),
        name,
        &["--guest", "debian", "--feeder", feeder],
    )
}

fn console_has(r: &Run, needles: &[&str]) {
    for n in needles {
        assert!(r.console.contains(n), "console lacks {n:?}\n{}", r.output);
    }
}

/// What every Debian boot that gets to user space shows: Debian's kernel,
/// its initramfs mounting the root disk, systemd, and udev loading the
/// stock driver from the device's PCI id (nothing else loads it).
const BOOTED: [&str; 4] = [
    "Run /init as init process",
    "EXT4-fs (vda): mounted filesystem",
    "i6300ESB timer 0000:00:04.0: initialized",
    "kennel-demo: serving",
];

#[test]
fn debian_healthy_with_systemds_runtime_watchdog() {
    if !real_kvm_or_skip("debian_healthy_with_systemds_runtime_watchdog") {
        return;
    }
    let r = run("healthy", "systemd");
    check(
        "healthy",
        &r,
        &[ev("BOOT", 1, "power-on"), ev("WATCHDOG_ARMED", 1, ""), ev("WATCHDOG_FIRST_FEED", 1, "")],
    );
    assert!(r.alarms.is_empty(), "alarm on a healthy VM: {:?}", r.alarms);
    console_has(&r, &BOOTED);
    console_has(&r, &["systemd.watchdog_sec=10", "kennel-debian login:"]);
    assert!(!r.console.contains("kennel-debian: watchdog daemon"), "the daemon ran too\n{}", r.output);
}

#[test]
fn debian_healthy_with_the_watchdog_daemon() {
    if !real_kvm_or_skip("debian_healthy_with_the_watchdog_daemon") {
        return;
    }
    let r = run("healthy", "daemon");
    check(
        "healthy",
        &r,
        &[ev("BOOT", 1, "power-on"), ev("WATCHDOG_ARMED", 1, ""), ev("WATCHDOG_FIRST_FEED", 1, "")],
    );
    assert!(r.alarms.is_empty(), "alarm on a healthy VM: {:?}", r.alarms);
    console_has(&r, &BOOTED);
    console_has(&r, &["kennel-debian: watchdog daemon feeding while kennel-service-check passes"]);
}

#[test]
fn debian_hang_then_recover() {
    if !real_kvm_or_skip("debian_hang_then_recover") {
        return;
    }
    let r = run("hang-then-recover", "daemon");
    check(
        "hang-then-recover",
        &r,
        &[
            ev("BOOT", 1, "power-on"),
            ev("WATCHDOG_ARMED", 1, ""),
            ev("WATCHDOG_FIRST_FEED", 1, ""),
            ev("FAULT_INJECTED", 1, "hang"),
            ev("WATCHDOG_PRETIMEOUT", 1, ""),
            ev("WATCHDOG", 1, ""),
            ev("RESET", 1, "watchdog"),
            ev("BOOT", 2, "watchdog"),
            ev("WATCHDOG_ARMED", 2, ""),
            ev("WATCHDOG_FIRST_FEED", 2, ""),
        ],
    );
    assert_eq!(r.alarms, ["raised", "cleared"], "the reference monitor's alarm");
    assert_eq!(r.console.matches("kennel-demo: serving").count(), 2, "{}", r.output);
}

/// The seed story: after a watchdog reset the guest cannot read its root
/// disk, Debian's initramfs stops at its shell, nothing feeds, and the
/// alarm stays raised where a reboot-clears-it monitor would have let go.
#[test]
fn debian_reset_then_io_error() {
    if !real_kvm_or_skip("debian_reset_then_io_error") {
        return;
    }
    let r = run("reset-then-io-error", "daemon");
    check(
        "reset-then-io-error",
        &r,
        &[
            ev("BOOT", 1, "power-on"),
            ev("WATCHDOG_ARMED", 1, ""),
            ev("WATCHDOG_FIRST_FEED", 1, ""),
            ev("FAULT_INJECTED", 1, "hang"),
            ev("WATCHDOG_PRETIMEOUT", 1, ""),
            ev("WATCHDOG", 1, ""),
            ev("RESET", 1, "watchdog"),
            ev("BOOT", 2, "watchdog"),
            ev("FAULT_INJECTED", 2, "read-error"),
            ev("BOOT_DEADLINE_MISSED", 2, ""),
        ],
    );
    assert!(!r.events.iter().any(|e| e.0 == "WATCHDOG_FIRST_FEED" && e.1 == 2), "{:?}", r.events);
    assert_eq!(r.alarms, ["raised"], "the reference monitor's alarm");
    console_has(&r, &["I/O error, dev vda", "(initramfs)"]);
    assert_eq!(r.console.matches("kennel-demo: serving").count(), 1, "{}", r.output);
}

#[test]
fn debian_panic_loop() {
    if !real_kvm_or_skip("debian_panic_loop") {
        return;
    }
    let r = run("panic-loop", "daemon");
    check(
        "panic-loop",
        &r,
        &[
            ev("BOOT", 1, "power-on"),
            ev("WATCHDOG_ARMED", 1, ""),
            ev("WATCHDOG_FIRST_FEED", 1, ""),
            ev("FAULT_INJECTED", 1, "hang"),
            ev("WATCHDOG_PRETIMEOUT", 1, ""),
            ev("WATCHDOG", 1, ""),
            ev("RESET", 1, "watchdog"),
            ev("BOOT", 2, "watchdog"),
            ev("FAULT_INJECTED", 2, "cmdline"),
            ev("RESET", 2, "guest"),
            ev("BOOT", 3, "guest"),
        ],
    );
    assert!(!r.events.iter().any(|e| e.0 == "WATCHDOG_FIRST_FEED" && e.1 >= 2), "{:?}", r.events);
    assert_eq!(r.alarms, ["raised"], "the reference monitor's alarm");
    console_has(&r, &["Gave up waiting for root file system device", "ALERT!  /dev/vdb does not exist"]);
}

#[test]
fn debian_never_arms() {
    if !real_kvm_or_skip("debian_never_arms") {
        return;
    }
    let r = run("never-arms", "daemon");
    check("never-arms", &r, &[ev("BOOT", 1, "power-on"), ev("BOOT_DEADLINE_MISSED", 1, "")]);
    assert!(!r.events.iter().any(|e| e.0.starts_with("WATCHDOG")), "{:?}", r.events);
    // Up to its login prompt, the driver bound: only nobody opened it.
    console_has(&r, &BOOTED);
    console_has(&r, &["kennel-debian login:"]);
}
