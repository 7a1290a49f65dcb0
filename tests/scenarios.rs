#![allow(clippy::unwrap_used, clippy::panic)]
//! Every named boot-failure scenario (`scripts/scenario NAME`) end to end on
//! this machine's KVM with the real guest kit, reading the events through
//! the real QMP client and checking the guest console tells the same story.

mod common;

use std::process::Command;

use common::scenario::{check, ev, Run};
use common::{kvm_or_skip, linux_guest, repo, Feeder};

fn run(name: &str) -> Run {
    linux_guest();
    common::scenario::run(name, name, &[])
}

#[test]
fn scenario_healthy() {
    if !kvm_or_skip("scenario_healthy") {
        return;
    }
    let r = run("healthy");
    check(
        "healthy",
        &r,
        &[ev("BOOT", 1, "power-on"), ev("WATCHDOG_ARMED", 1, ""), ev("WATCHDOG_FIRST_FEED", 1, "")],
    );
    assert!(!r.events.iter().any(|e| e.0 == "WATCHDOG" || e.0 == "BOOT_DEADLINE_MISSED"), "{:?}", r.events);
    assert!(r.alarms.is_empty(), "the reference monitor raised an alarm on a healthy VM: {:?}", r.alarms);
    assert!(r.console.contains("EXT4-fs (vda): mounted filesystem"), "root disk not mounted");
    match Feeder::for_host() {
        Feeder::Kernel => assert!(r.console.contains("Run /sbin/kennel-spin as init process")),
        Feeder::Daemon => {
            assert!(r.console.contains("Run /sbin/init as init process"), "{}", r.console);
            assert!(r.console.contains("kennel-guest: watchdog daemon started"), "{}", r.console);
            assert!(r.console.contains("kennel-guest: watchdog bootstatus=0"), "{}", r.console);
        }
    }
}

#[test]
fn scenario_hang_then_recover() {
    if !kvm_or_skip("scenario_hang_then_recover") {
        return;
    }
    let r = run("hang-then-recover");
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
    assert!(r.console.contains(Feeder::for_host().card_reset_line()), "cycle 2 missed the card reset");
    // Raised on WATCHDOG, kept through RESET and BOOT, cleared by cycle 2's first feed.
    assert_eq!(r.alarms, ["raised", "cleared"], "the reference monitor's alarm");
}

#[test]
fn scenario_reset_then_io_error() {
    if !kvm_or_skip("scenario_reset_then_io_error") {
        return;
    }
    let r = run("reset-then-io-error");
    check(
        "reset-then-io-error",
        &r,
        &[
            ev("BOOT", 1, "power-on"),
            ev("WATCHDOG_ARMED", 1, ""),
            ev("WATCHDOG_FIRST_FEED", 1, ""),
            ev("WATCHDOG_PRETIMEOUT", 1, ""),
            ev("WATCHDOG", 1, ""),
            ev("RESET", 1, "watchdog"),
            ev("BOOT", 2, "watchdog"),
            ev("FAULT_INJECTED", 2, "read-error"),
            ev("BOOT_DEADLINE_MISSED", 2, ""),
        ],
    );
    assert!(!r.events.iter().any(|e| e.0 == "WATCHDOG_FIRST_FEED" && e.1 == 2), "{:?}", r.events);
    // Raised on WATCHDOG and still raised at the end: the reboot proved nothing.
    assert_eq!(r.alarms, ["raised"], "the reference monitor's alarm");
    assert!(r.console.contains("I/O error, dev vda"), "no disk I/O errors on the console");
    if Feeder::for_host() == Feeder::Daemon {
        assert!(r.console.contains("kennel-guest: watchdog daemon killed after 3s"), "{}", r.console);
    }
    assert!(r.console.contains("VFS: Unable to mount root fs"), "no root mount failure on the console");
}

#[test]
fn scenario_panic_loop() {
    if !kvm_or_skip("scenario_panic_loop") {
        return;
    }
    let r = run("panic-loop");
    check(
        "panic-loop",
        &r,
        &[
            ev("BOOT", 1, "power-on"),
            ev("WATCHDOG_ARMED", 1, ""),
            ev("WATCHDOG_FIRST_FEED", 1, ""),
            ev("WATCHDOG_PRETIMEOUT", 1, ""),
            ev("WATCHDOG", 1, ""),
            ev("RESET", 1, "watchdog"),
            ev("BOOT", 2, "watchdog"),
            ev("FAULT_INJECTED", 2, "cmdline"),
            ev("RESET", 2, "guest"),
            ev("BOOT", 3, "guest"),
            ev("FAULT_INJECTED", 3, "cmdline"),
            ev("RESET", 3, "guest"),
            ev("BOOT", 4, "guest"),
        ],
    );
    assert!(!r.events.iter().any(|e| e.0 == "WATCHDOG_FIRST_FEED" && e.1 >= 2), "{:?}", r.events);
    assert!(
        r.console.contains("Kernel panic - not syncing: VFS: Unable to mount root fs"),
        "no panic on the console"
    );
}

#[test]
fn scenario_never_arms() {
    if !kvm_or_skip("scenario_never_arms") {
        return;
    }
    let r = run("never-arms");
    check("never-arms", &r, &[ev("BOOT", 1, "power-on"), ev("BOOT_DEADLINE_MISSED", 1, "")]);
    assert_eq!(r.alarms, ["raised"], "the reference monitor's alarm");
    let miss = r.events.iter().position(|e| e.0 == "BOOT_DEADLINE_MISSED").unwrap();
    assert!(!r.events[..miss].iter().any(|e| e.0 == "WATCHDOG_ARMED"), "{:?}", r.events);
    assert!(r.console.contains("i6300ESB timer 0000:00:04.0: initialized"), "the driver should still bind");
    if Feeder::for_host() == Feeder::Daemon {
        assert!(r.console.contains("kennel-guest: watchdog daemon not started"), "{}", r.console);
    }
}

#[test]
fn unknown_scenario_is_a_clear_error() {
    let out = Command::new(repo().join("scripts/scenario")).arg("nope").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scenario 'nope'"));
}
