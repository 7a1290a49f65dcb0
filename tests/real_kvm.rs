#![allow(clippy::unwrap_used, clippy::panic)]
//! What only real KVM (VT-x/AMD-V, bare metal or the nested tier) can show:
//! secondary vCPUs, guest user space (busybox init and a real watchdog
//! daemon, a reboot from user space), Debian's stock kernel with its stock
//! modules, and an initrd boot. On PVM hosts the tests that need these say
//! SKIPPED; the initrd boot runs on both, with the in-kernel feeder on PVM.

mod common;

use std::time::Duration;

use common::qmp::QmpWatch;
use common::{
    kvm_or_skip, linux_guest, real_kvm_or_skip, start_with_qmp, stock_guest, Feeder, Kennel, LINUX_BOOT,
    RESET_STORY,
};

const BASE: &str = "console=ttyS0 reboot=k panic=1 i6300esb.heartbeat=4";

/// The guest kit from its root disk, busybox init, busybox `watchdog`.
fn kit_from_rootfs(name: &str, cmdline_extra: &str, extra: &[&str]) -> (Kennel, QmpWatch) {
    let guest = linux_guest();
    let rootfs = guest.join("rootfs.ext4");
    let cmdline = format!("{BASE} root=/dev/vda ro {cmdline_extra}");
    let mut args = vec!["--rootfs", rootfs.to_str().unwrap(), "--rootfs-readonly"];
    args.extend_from_slice(extra);
    start_with_qmp(name, &guest.join("vmlinux"), &cmdline, &args)
}

/// `needle` is on the console `n` times or more, waiting up to `timeout`.
fn console_has(k: &mut Kennel, needle: &str, n: usize, timeout: Duration) -> bool {
    let end = std::time::Instant::now() + timeout;
    loop {
        k.collect();
        if k.stdout.iter().filter(|l| l.contains(needle)).count() >= n {
            return true;
        }
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || k.wait_for(needle, left).is_none() {
            return k.stdout.iter().filter(|l| l.contains(needle)).count() >= n;
        }
    }
}

fn assert_prefix(q: &QmpWatch, want: &[(&str, u64)], k: &mut Kennel) {
    let seq = q.sequence();
    let got: Vec<(&str, u64)> = seq.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    assert!(
        got.len() >= want.len() && got[..want.len()] == *want,
        "events {got:?}, want {want:?}\n{}",
        k.transcript()
    );
}

/// Every vCPU comes up, the watchdog works, a watchdog reset rebuilds all
/// of them, and the next boot brings them all up again.
fn smp(vcpus: u8) {
    let name = format!("smp{vcpus}");
    let n = vcpus.to_string();
    let (mut k, mut q) = kit_from_rootfs(
        &name,
        "kennel.wdt_period=1 kennel.wdt_timeout=4 kennel.wdt_stop_after=3",
        &["--vcpus", &n, "--memory", "256"],
    );
    let ff2 = q.wait_event("WATCHDOG_FIRST_FEED", Some(2), 3 * LINUX_BOOT);
    assert!(ff2.is_some(), "{:?}\n{}", q.sequence(), k.transcript());
    assert_prefix(&q, &RESET_STORY, &mut k);
    let brought_up = format!("smp: Brought up 1 node, {vcpus} CPUs");
    let online = format!("kennel-guest: cpus online 0-{}", vcpus - 1);
    for needle in [brought_up.as_str(), online.as_str()] {
        assert!(
            console_has(&mut k, needle, 2, Duration::from_secs(10)),
            "not twice: {needle:?}\n{}",
            k.transcript()
        );
    }
    assert!(
        console_has(&mut k, Feeder::Daemon.card_reset_line(), 1, Duration::from_secs(10)),
        "{}",
        k.transcript()
    );
    // What this tier found: without the TSC-deadline timer Linux calibrated
    // the APIC timer against the PIT, which failed now and then on a busy
    // host, and those guests sometimes never came back. Both boots get it,
    // and no CPU falls back to broadcast ticks.
    assert!(console_has(&mut k, "TSC deadline timer available", 2, Duration::ZERO), "{}", k.transcript());
    for bad in ["APIC timer disabled", "lapic is not functional"] {
        assert!(!k.stdout.iter().any(|l| l.contains(bad)), "{bad:?} on the console\n{}", k.transcript());
    }
    k.kill();
}

#[test]
fn smp_two_vcpus_come_up_and_come_back_after_a_watchdog_reset() {
    if real_kvm_or_skip("smp_two_vcpus_come_up_and_come_back_after_a_watchdog_reset") {
        smp(2);
    }
}

#[test]
fn smp_four_vcpus_come_up_and_come_back_after_a_watchdog_reset() {
    if real_kvm_or_skip("smp_four_vcpus_come_up_and_come_back_after_a_watchdog_reset") {
        smp(4);
    }
}

/// A reboot from guest user space (busybox `reboot -f`, through the
/// keyboard controller with reboot=k) is a guest reset: RESET cause guest,
/// then BOOT(2) cause guest.
#[test]
fn a_reboot_from_user_space_is_a_guest_reset() {
    if !real_kvm_or_skip("a_reboot_from_user_space_is_a_guest_reset") {
        return;
    }
    let (mut k, mut q) =
        kit_from_rootfs("reboot", "kennel.wdt_period=1 kennel.wdt_timeout=4 kennel.reboot_after=2", &[]);
    let boot2 = q.wait_event("BOOT", Some(2), 2 * LINUX_BOOT);
    assert!(boot2.is_some(), "{:?}\n{}", q.sequence(), k.transcript());
    assert_eq!(boot2.unwrap()["data"]["cause"], "guest");
    let reset = q.wait_event("RESET", Some(1), Duration::ZERO).unwrap();
    assert_eq!(reset["data"]["cause"], "guest", "{reset}");
    assert_eq!(reset["data"]["guest"], true, "{reset}");
    assert!(!q.sequence().iter().any(|(n, _)| n == "WATCHDOG"), "{:?}", q.sequence());
    assert!(
        console_has(&mut k, "kennel-guest: rebooting from user space", 1, Duration::ZERO),
        "{}",
        k.transcript()
    );
    k.kill();
}

/// Debian's stock kernel (its bzImage, not the kit's) with an initrd that
/// loads its stock watchdog.ko and i6300esb.ko: the driver binds, busybox
/// `watchdog` feeds, is killed, the watchdog resets the VM, and the next
/// boot feeds again.
#[test]
fn debian_stock_kernel_binds_its_stock_driver_and_comes_back_after_a_watchdog_reset() {
    let name = "debian_stock_kernel_binds_its_stock_driver_and_comes_back_after_a_watchdog_reset";
    if !real_kvm_or_skip(name) {
        return;
    }
    let stock = stock_guest();
    let initrd = stock.join("initrd.cpio.gz");
    let cmdline = format!("{BASE} kennel.wdt_period=1 kennel.wdt_timeout=4 kennel.wdt_stop_after=3");
    let (mut k, mut q) = start_with_qmp(
        "stock",
        &stock.join("vmlinuz"),
        &cmdline,
        &["--initrd", initrd.to_str().unwrap(), "--memory", "256"],
    );
    let ff2 = q.wait_event("WATCHDOG_FIRST_FEED", Some(2), 3 * LINUX_BOOT);
    assert!(ff2.is_some(), "{:?}\n{}", q.sequence(), k.transcript());
    assert_prefix(&q, &RESET_STORY, &mut k);
    let version = std::fs::read_to_string(stock.join("version")).unwrap();
    for needle in [
        format!("Linux version {}", version.trim()),
        "kennel-initrd: loaded watchdog.ko".into(),
        "kennel-initrd: loaded i6300esb.ko heartbeat=4".into(),
        "i6300ESB timer 0000:00:04.0: initialized. heartbeat=4 sec".into(),
        "kennel-guest: watchdog daemon started".into(),
        Feeder::Daemon.card_reset_line().into(),
    ] {
        assert!(
            console_has(&mut k, &needle, 1, Duration::from_secs(10)),
            "console lacks {needle:?}\n{}",
            k.transcript()
        );
    }
    assert!(!k.stdout.iter().any(|l| l.contains("Oops") || l.contains("BUG:")), "{}", k.transcript());
    k.kill();
}

/// The kit's bzImage with `--initrd`: the kernel finds and unpacks the
/// initramfs, and a feeder reaches the watchdog. On real KVM the initrd's
/// own /init and busybox `watchdog` run; on PVM (no user space) the
/// in-kernel feeder holds the boot before init.
#[test]
fn bzimage_with_an_initrd_boots_and_feeds() {
    if !kvm_or_skip("bzimage_with_an_initrd_boots_and_feeds") {
        return;
    }
    let guest = linux_guest();
    let initrd = guest.join("initrd.cpio.gz");
    let feeder = Feeder::for_host();
    let cmdline = match feeder {
        Feeder::Kernel => format!("{BASE} kennel_feeder.interval_ms=500"),
        Feeder::Daemon => format!("{BASE} kennel.wdt_period=1 kennel.wdt_timeout=4"),
    };
    let (mut k, mut q) =
        start_with_qmp("initrd", &guest.join("bzImage"), &cmdline, &["--initrd", initrd.to_str().unwrap()]);
    let ff = q.wait_event("WATCHDOG_FIRST_FEED", Some(1), 2 * LINUX_BOOT);
    assert!(ff.is_some(), "{:?}\n{}", q.sequence(), k.transcript());
    // The kernel found the initrd where kennel put it. Unpacking runs in
    // the background; on PVM (emulated, ~1.6 M instructions/s) a 1 MiB
    // gzip takes longer than the test waits, so only real KVM waits for it.
    assert!(console_has(&mut k, "Unpacking initramfs...", 1, Duration::from_secs(10)), "{}", k.transcript());
    if feeder == Feeder::Daemon {
        assert!(
            console_has(&mut k, "Freeing initrd memory", 1, Duration::from_secs(10)),
            "{}",
            k.transcript()
        );
        assert!(!k.stdout.iter().any(|l| l.contains("Initramfs unpacking failed")), "{}", k.transcript());
        for needle in ["kennel-initrd: init started", "kennel-guest: watchdog daemon started"] {
            assert!(
                console_has(&mut k, needle, 1, Duration::from_secs(10)),
                "console lacks {needle:?}\n{}",
                k.transcript()
            );
        }
    }
    k.kill();
}
