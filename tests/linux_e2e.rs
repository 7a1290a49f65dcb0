#![allow(clippy::unwrap_used, clippy::panic)]
//! End to end with the real Linux guest from the guest kit: its stock
//! i6300esb driver, the host's feeder (the in-kernel feeder on PVM hosts,
//! busybox `watchdog` in user space on real KVM), and kennel's events read
//! through the real QMP client. About 10 s per boot on a PVM host.

mod common;

use std::time::Duration;

use common::qmp::{seconds_between, QmpWatch};
use common::{
    feeder_cmdline, kvm_or_skip, linux_guest, start_with_qmp, Feeder, Kennel, LINUX_BOOT, RESET_STORY,
};
use serde_json::json;

/// The guest kit with a feeder: `kernel` is the in-kernel feeder's options,
/// `daemon` the rootfs's (busybox `watchdog`); which is used depends on the
/// host (`Feeder::for_host`).
fn start_fed(name: &str, kernel: &str, daemon: &str) -> (Kennel, QmpWatch, Feeder) {
    let feeder = Feeder::for_host();
    let (k, q) = match feeder {
        Feeder::Kernel => start(name, &feeder_cmdline(&format!("i6300esb.heartbeat=4 {kernel}")), &[]),
        Feeder::Daemon => {
            let rootfs = linux_guest().join("rootfs.ext4");
            let cmdline = feeder_cmdline(&format!("i6300esb.heartbeat=4 root=/dev/vda ro {daemon}"));
            start(name, &cmdline, &["--rootfs", rootfs.to_str().unwrap(), "--rootfs-readonly"])
        }
    };
    (k, q, feeder)
}

fn start(name: &str, cmdline: &str, extra: &[&str]) -> (Kennel, QmpWatch) {
    start_with_qmp(name, &linux_guest().join("vmlinux"), cmdline, extra)
}

#[test]
fn linux_boots_the_stock_driver_binds_and_a_healthy_guest_is_reported_alive() {
    if !kvm_or_skip("linux_boots_the_stock_driver_binds_and_a_healthy_guest_is_reported_alive") {
        return;
    }
    let (mut k, mut q, feeder) = start_fed(
        "healthy",
        "kennel_feeder.interval_ms=500 kennel_feeder.count=0",
        "kennel.wdt_period=500ms kennel.wdt_timeout=4",
    );
    let ff = q.wait_event("WATCHDOG_FIRST_FEED", Some(1), LINUX_BOOT);
    assert!(ff.is_some(), "no first feed\n{}", k.transcript());
    // The guest's own account: PCI enumeration shows both functions with
    // the right IDs, class and BAR, and the stock driver bound.
    for needle in [
        "Linux version 6.1",
        "pci 0000:00:00.0: [8086:0d57] type 00 class 0x060000",
        "pci 0000:00:04.0: [8086:25ab] type 00 class 0x088000",
        "pci 0000:00:04.0: BAR 0 [mem 0xc0000000-0xc000000f]",
        "i6300ESB timer 0000:00:04.0: initialized. heartbeat=4 sec",
    ]
    .into_iter()
    .chain(match feeder {
        Feeder::Kernel => ["kennel_feeder: opened /dev/watchdog", "kennel_feeder: bootstatus=0x0"],
        Feeder::Daemon => ["kennel-guest: watchdog bootstatus=0", "kennel-guest: watchdog daemon started"],
    }) {
        assert!(
            k.wait_for(needle, Duration::from_secs(5)).is_some()
                || k.stdout.iter().any(|l| l.contains(needle)),
            "console lacks {needle:?}\n{}",
            k.transcript()
        );
    }
    let seq = q.sequence();
    assert_eq!(
        seq.iter().map(|(n, c)| (n.as_str(), *c)).collect::<Vec<_>>()[..3],
        [("BOOT", 1), ("WATCHDOG_ARMED", 1), ("WATCHDOG_FIRST_FEED", 1)],
        "{seq:?}"
    );
    // Fed every 500 ms with a 4 s heartbeat: two heartbeats pass quietly.
    assert!(q.wait_event("WATCHDOG", None, Duration::from_secs(9)).is_none(), "{:?}", q.sequence());
    let st = q.execute("query-watchdog", json!({}));
    assert!(st["return"]["feeds"].as_u64().unwrap_or(0) >= 10, "{st}");
    assert_eq!(st["return"]["state"], "alive", "{st}");
    q.execute("quit", json!({}));
    assert_eq!(k.wait_exit(Duration::from_secs(20)).and_then(|s| s.code()), Some(0), "{}", k.transcript());
}

#[test]
fn linux_watchdog_reset_and_the_first_feed_after_it() {
    if !kvm_or_skip("linux_watchdog_reset_and_the_first_feed_after_it") {
        return;
    }
    // One feed per boot, then the feeder stops with the device open (the
    // daemon is killed right after its first feed: no magic close).
    let (mut k, mut q, feeder) = start_fed(
        "reset",
        "kennel_feeder.interval_ms=1000 kennel_feeder.count=1 kennel_feeder.close=none",
        "kennel.wdt_period=10 kennel.wdt_timeout=4 kennel.wdt_stop_after=1",
    );
    let ff2 = q.wait_event("WATCHDOG_FIRST_FEED", Some(2), 2 * LINUX_BOOT);
    assert!(ff2.is_some(), "cycle 2 never fed\n{:?}\n{}", q.sequence(), k.transcript());
    let seq: Vec<(String, u64)> = q.sequence();
    let want = RESET_STORY;
    let got: Vec<(&str, u64)> = seq.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    assert_eq!(&got[..want.len()], &want, "{seq:?}");
    let wd = q.wait_event("WATCHDOG", Some(1), Duration::ZERO).unwrap();
    assert_eq!(wd["data"]["action"], "reset");
    assert_eq!(q.wait_event("BOOT", Some(2), Duration::ZERO).unwrap()["data"]["cause"], "watchdog");
    // The action fires one timeout after the last (here: the only) feed:
    // within 10% or 500 ms, as the issue asks (it is far closer).
    let ff1 = q.wait_event("WATCHDOG_FIRST_FEED", Some(1), Duration::ZERO).unwrap();
    let armed = q.wait_event("WATCHDOG_ARMED", Some(1), Duration::ZERO).unwrap();
    let nominal = armed["data"]["timeout_ms"].as_f64().unwrap() / 1000.0;
    assert!((nominal - 4.0265).abs() < 0.01, "heartbeat 4 gives 4096 counts of 983.04 us: {armed}");
    let got = seconds_between(&ff1, &wd);
    match feeder {
        Feeder::Kernel => assert!(
            (got - nominal).abs() < (nominal * 0.1).min(0.5),
            "expired {got:.3}s after the feed, nominal {nominal:.3}s"
        ),
        // busybox feeds twice (its timeout ioctl reloads, then its first
        // write) and events carry only the first: the last feed comes
        // before the daemon is killed, 1 s after it starts. The exact
        // timing is the kernel feeder's and the tiny guests' to prove.
        Feeder::Daemon => assert!(
            got > nominal - 0.05 && got < nominal + 1.0 + 0.5,
            "expired {got:.3}s after the first feed; nominal {nominal:.3}s, daemon killed 1 s after it started"
        ),
    }
    // The next boot's driver saw the card-reset flag the 6300ESB kept.
    let card_reset = feeder.card_reset_line();
    assert!(
        k.wait_for(card_reset, Duration::from_secs(5)).is_some()
            || k.stdout.iter().any(|l| l.contains(card_reset)),
        "cycle 2 did not see the timeout flag\n{}",
        k.transcript()
    );
    k.kill();
}
