#![allow(clippy::unwrap_used, clippy::panic)]
//! ACPI end to end: the power button (the watchdog's `shutdown` action and
//! QMP `system_powerdown`), the guest's own power-off (S5) and reboot (the
//! reset register), the grace period for a guest that does not answer,
//! and `--no-acpi`.
//!
//! The tiny 6300ESB guest knows nothing of ACPI, which makes it the hung
//! guest of these tests, on any KVM host. The Linux tests need guest user
//! space (busybox `acpid`, `poweroff`), so they run on real KVM only: the
//! guest kit's kernel and rootfs, and Debian's stock kernel.

mod common;

use std::time::Duration;

use common::qmp::{seconds_between, QmpWatch};
use common::LINUX_BOOT;
use common::{kvm_or_skip, linux_guest, real_kvm_or_skip, start_with_qmp, stock_guest, test_guest, Kennel};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);
/// No `reboot=k`: Linux reboots through the ACPI reset register.
const BASE: &str = "console=ttyS0 panic=1 i6300esb.heartbeat=4";

/// The tiny 6300ESB guest, held until the QMP client connects.
fn tiny(name: &str, cmdline: &str, extra: &[&str]) -> (Kennel, QmpWatch) {
    let args = [&["--memory", "16"], extra].concat();
    start_with_qmp(name, &test_guest("esb"), cmdline, &args)
}

fn data(e: &Value, keys: &[&str]) -> Vec<Value> {
    keys.iter().map(|k| e["data"][k].clone()).collect()
}

/// A guest that cannot answer the button (the tiny guest has no ACPI, as a
/// hung Linux cannot run its handler): the press is reported, the grace
/// runs out, kennel powers it off and says the power-off was forced.
#[test]
fn an_unanswered_button_is_followed_by_a_forced_power_off_after_the_grace() {
    if !kvm_or_skip("an_unanswered_button_is_followed_by_a_forced_power_off_after_the_grace") {
        return;
    }
    let (mut k, mut q) = tiny(
        "grace",
        "heartbeat=1 feeds=1 interval_ms=20",
        &["--watchdog-action", "shutdown", "--shutdown-grace", "2"],
    );
    let wd = q.wait_event("WATCHDOG", Some(1), T).unwrap_or_else(|| panic!("{}", k.transcript()));
    assert_eq!(wd["data"]["action"], "shutdown");
    let press = q.wait_event("POWERDOWN", Some(1), T).unwrap_or_else(|| panic!("{}", k.transcript()));
    assert_eq!(press["data"]["cause"], "watchdog");
    let sd = q.wait_event("SHUTDOWN", Some(1), T).unwrap_or_else(|| panic!("{}", k.transcript()));
    assert_eq!(data(&sd, &["cause", "forced"]), [json!("watchdog"), json!(true)], "{sd}\n{:?}", q.sequence());
    let waited = seconds_between(&press, &sd);
    assert!(waited >= 1.9, "powered off {waited:.2} s after the press; the grace is 2 s");
    let st = k.wait_exit(T).unwrap_or_else(|| panic!("kennel did not exit\n{}", k.transcript()));
    assert_eq!(st.code(), Some(4), "a watchdog power-off exits 4\n{}", k.transcript());
    assert!(k.stderr.iter().any(|l| l.contains("did not power off within")), "{}", k.transcript());
}

/// With `--no-acpi` there is no button to press: the `shutdown` action
/// powers off at once (forced), and `system_powerdown` is an error that
/// says why.
#[test]
fn without_acpi_shutdown_powers_off_at_once_and_system_powerdown_is_refused() {
    if !kvm_or_skip("without_acpi_shutdown_powers_off_at_once_and_system_powerdown_is_refused") {
        return;
    }
    let (mut k, mut q) = tiny("noacpi-qmp", "heartbeat=4 feeds=1000 interval_ms=100", &["--no-acpi"]);
    q.wait_event("WATCHDOG_FIRST_FEED", Some(1), T).unwrap_or_else(|| panic!("{}", k.transcript()));
    let r = q.execute("system_powerdown", json!({}));
    assert!(r["error"].to_string().contains("the VM has no ACPI (--no-acpi)"), "{r}");
    assert_eq!(q.execute("query-status", json!({}))["return"]["status"], "running");
    k.kill();

    let (mut k, mut q) = tiny(
        "noacpi-action",
        "heartbeat=1 feeds=1 interval_ms=20",
        &["--no-acpi", "--watchdog-action", "shutdown", "--shutdown-grace", "60"],
    );
    let sd = q.wait_event("SHUTDOWN", Some(1), T).unwrap_or_else(|| panic!("{}", k.transcript()));
    assert_eq!(data(&sd, &["cause", "forced"]), [json!("watchdog"), json!(true)], "{sd}");
    assert!(!q.sequence().iter().any(|(n, _)| n == "POWERDOWN"), "{:?}", q.sequence());
    assert_eq!(k.wait_exit(T).and_then(|s| s.code()), Some(4), "{}", k.transcript());
}

/// QMP `system_powerdown` presses the button and waits for the guest, as
/// QEMU's does: the tiny guest ignores it and runs on until `quit`.
#[test]
fn system_powerdown_presses_the_button_and_waits_for_the_guest() {
    if !kvm_or_skip("system_powerdown_presses_the_button_and_waits_for_the_guest") {
        return;
    }
    let (mut k, mut q) =
        tiny("powerdown", "heartbeat=4 feeds=1000 interval_ms=100", &["--shutdown-grace", "1"]);
    q.wait_event("WATCHDOG_FIRST_FEED", Some(1), T).unwrap_or_else(|| panic!("{}", k.transcript()));
    assert_eq!(q.execute("system_powerdown", json!({})), json!({"return": {}}));
    let press = q.wait_event("POWERDOWN", Some(1), T).unwrap_or_else(|| panic!("{}", k.transcript()));
    assert_eq!(press["data"]["cause"], "qmp");
    // The grace is the watchdog's: a press from QMP is not forced.
    q.pump(Duration::from_secs(2));
    assert!(!q.sequence().iter().any(|(n, _)| n == "SHUTDOWN"), "{:?}", q.sequence());
    assert_eq!(q.execute("query-status", json!({}))["return"]["status"], "running");
    assert_eq!(q.execute("quit", json!({})), json!({"return": {}}));
    assert_eq!(k.wait_exit(T).and_then(|s| s.code()), Some(0), "{}", k.transcript());
}

/// `needle` is on the console, waiting up to `timeout`.
fn console_has(k: &mut Kennel, needle: &str, timeout: Duration) -> bool {
    k.stdout.iter().any(|l| l.contains(needle)) || k.wait_for(needle, timeout).is_some()
}

fn assert_console(k: &mut Kennel, needles: &[&str]) {
    for needle in needles {
        assert!(
            console_has(k, needle, Duration::from_secs(10)),
            "console lacks {needle:?}\n{}",
            k.transcript()
        );
    }
}

/// The guest kit from its root disk (virtio-blk), busybox init and acpid.
fn kit(name: &str, cmdline_extra: &str, extra: &[&str]) -> (Kennel, QmpWatch) {
    let guest = linux_guest();
    let rootfs = guest.join("rootfs.ext4");
    let cmdline = format!("{BASE} root=/dev/vda ro kennel.wdt_period=1 kennel.wdt_timeout=4 {cmdline_extra}");
    let mut args = vec!["--rootfs", rootfs.to_str().unwrap(), "--rootfs-readonly"];
    args.extend_from_slice(extra);
    start_with_qmp(name, &guest.join("vmlinux"), &cmdline, &args)
}

/// What the guest sees of kennel's tables, and that it used them.
const ACPI_SEEN: [&str; 3] = [
    "ACPI: RSDP 0x00000000000E0000",
    "kennel-guest: acpi tables: APIC DSDT FACP",
    "kennel-guest: acpid listening",
];

/// `poweroff` from guest user space: busybox init shuts down in order, the
/// kernel enters S5, and kennel reports SHUTDOWN caused by the guest and
/// exits 0.
#[test]
fn a_poweroff_from_user_space_is_a_guest_shutdown_and_exits_0() {
    if !real_kvm_or_skip("a_poweroff_from_user_space_is_a_guest_shutdown_and_exits_0") {
        return;
    }
    let (mut k, mut q) = kit("poweroff", "kennel.poweroff_after=2", &[]);
    let sd =
        q.wait_event("SHUTDOWN", Some(1), 2 * LINUX_BOOT).unwrap_or_else(|| panic!("{}", k.transcript()));
    assert_eq!(
        data(&sd, &["cause", "guest", "reason", "forced"]),
        [json!("guest"), json!(true), json!("guest-shutdown"), json!(false)],
        "{sd}"
    );
    assert_eq!(k.wait_exit(T).and_then(|s| s.code()), Some(0), "{}", k.transcript());
    assert_console(&mut k, &ACPI_SEEN);
    assert_console(&mut k, &["kennel-guest: powering off from user space", "reboot: Power down"]);
}

/// `reboot` from guest user space, without `reboot=k`: Linux writes the
/// ACPI reset register, and kennel reports a guest reset and boots cycle 2.
#[test]
fn a_reboot_from_user_space_goes_through_the_acpi_reset_register() {
    if !real_kvm_or_skip("a_reboot_from_user_space_goes_through_the_acpi_reset_register") {
        return;
    }
    let (mut k, mut q) = kit("acpi-reboot", "kennel.reboot_after=2", &[]);
    let boot2 = q.wait_event("BOOT", Some(2), 2 * LINUX_BOOT).unwrap_or_else(|| panic!("{}", k.transcript()));
    assert_eq!(boot2["data"]["cause"], "guest");
    let reset = q.wait_event("RESET", Some(1), Duration::ZERO).unwrap();
    assert_eq!(data(&reset, &["cause", "guest"]), [json!("guest"), json!(true)], "{reset}");
    k.collect();
    assert!(
        k.stderr.iter().any(|l| l.contains("the guest reset itself (ACPI reset register)")),
        "{}",
        k.transcript()
    );
    k.kill();
}

/// `--watchdog-action shutdown` on a live guest whose watchdog daemon dies:
/// kennel presses the button, acpid runs the guest's handler, busybox init
/// shuts down in order, and SHUTDOWN says the watchdog caused it and the
/// guest did it (not forced). Exit status 4, as for any watchdog power-off.
#[test]
fn the_shutdown_action_shuts_a_live_guest_down_in_order() {
    if !real_kvm_or_skip("the_shutdown_action_shuts_a_live_guest_down_in_order") {
        return;
    }
    let (mut k, mut q) = kit("wd-shutdown", "kennel.wdt_stop_after=3", &["--watchdog-action", "shutdown"]);
    let sd =
        q.wait_event("SHUTDOWN", Some(1), 2 * LINUX_BOOT).unwrap_or_else(|| panic!("{}", k.transcript()));
    assert_eq!(
        data(&sd, &["cause", "guest", "forced"]),
        [json!("watchdog"), json!(true), json!(false)],
        "{sd}\n{:?}",
        q.sequence()
    );
    let seq: Vec<String> = q.sequence().into_iter().map(|(n, _)| n).collect();
    let tail: Vec<&str> = seq.iter().map(String::as_str).skip_while(|n| *n != "WATCHDOG").collect();
    assert_eq!(tail, ["WATCHDOG", "POWERDOWN", "SHUTDOWN"], "{seq:?}");
    assert_eq!(k.wait_exit(T).and_then(|s| s.code()), Some(4), "{}", k.transcript());
    assert_console(
        &mut k,
        &[
            "kennel-guest: power button pressed: powering off",
            "The system is going down NOW!",
            "reboot: Power down",
        ],
    );
}

/// `--watchdog-action shutdown` on a Linux guest that hangs (a `boot:hang`
/// fault 2 s after its first feed stops its vCPUs): the watchdog expires,
/// kennel presses the button, nothing in the guest can answer it, and after
/// the grace kennel powers the VM off and SHUTDOWN says it was forced.
#[test]
fn the_shutdown_action_forces_a_hung_guest_off_after_the_grace() {
    if !real_kvm_or_skip("the_shutdown_action_forces_a_hung_guest_off_after_the_grace") {
        return;
    }
    let (mut k, mut q) = kit(
        "wd-shutdown-hung",
        "",
        &[
            "--watchdog-action",
            "shutdown",
            "--shutdown-grace",
            "3",
            "--fault",
            "boot:hang,after=2s,since=first-feed,cycle=1",
        ],
    );
    let sd =
        q.wait_event("SHUTDOWN", Some(1), 2 * LINUX_BOOT).unwrap_or_else(|| panic!("{}", k.transcript()));
    assert_eq!(
        // `guest: true` is QEMU's word for any watchdog power-off; `forced`
        // is what tells this one from an orderly shutdown.
        data(&sd, &["cause", "guest", "forced"]),
        [json!("watchdog"), json!(true), json!(true)],
        "{sd}\n{:?}",
        q.sequence()
    );
    let seq: Vec<String> =
        q.sequence().into_iter().map(|(n, _)| n).filter(|n| n != "WATCHDOG_PRETIMEOUT").collect();
    let tail: Vec<&str> = seq.iter().map(String::as_str).skip_while(|n| *n != "FAULT_INJECTED").collect();
    assert_eq!(tail, ["FAULT_INJECTED", "WATCHDOG", "POWERDOWN", "SHUTDOWN"], "{seq:?}");
    let press = q.wait_event("POWERDOWN", Some(1), Duration::ZERO).unwrap();
    let waited = seconds_between(&press, &sd);
    assert!(waited >= 2.9, "powered off {waited:.2} s after the press; the grace is 3 s");
    assert_eq!(k.wait_exit(T).and_then(|s| s.code()), Some(4), "{}", k.transcript());
    assert!(
        !k.stdout.iter().any(|l| l.contains("power button pressed")),
        "a hung guest ran its button handler\n{}",
        k.transcript()
    );
}

/// QMP `system_powerdown` on a live guest: the guest powers off in order;
/// SHUTDOWN has cause `qmp` and `guest: true` (QEMU's `guest-shutdown`).
#[test]
fn system_powerdown_shuts_a_live_guest_down() {
    if !real_kvm_or_skip("system_powerdown_shuts_a_live_guest_down") {
        return;
    }
    let (mut k, mut q) = kit("qmp-powerdown", "", &[]);
    q.wait_event("WATCHDOG_FIRST_FEED", Some(1), 2 * LINUX_BOOT)
        .unwrap_or_else(|| panic!("{}", k.transcript()));
    assert_console(&mut k, &["kennel-guest: acpid listening"]);
    assert_eq!(q.execute("system_powerdown", json!({})), json!({"return": {}}));
    let sd = q.wait_event("SHUTDOWN", Some(1), LINUX_BOOT).unwrap_or_else(|| panic!("{}", k.transcript()));
    assert_eq!(
        data(&sd, &["cause", "guest", "reason", "forced"]),
        [json!("qmp"), json!(true), json!("guest-shutdown"), json!(false)],
        "{sd}"
    );
    assert_eq!(k.wait_exit(T).and_then(|s| s.code()), Some(0), "{}", k.transcript());
}

/// Debian's stock kernel on kennel's ACPI tables: it takes them (RSDP,
/// hardware-reduced FADT), its stock i6300esb driver binds and is fed, a
/// disk is read through its PCI INTx as routed by the DSDT's `_PRT`, a
/// reboot from user space goes through the reset register, and in the next
/// cycle (whose command line, by a `boot:cmdline` fault, no longer
/// reboots) the power button powers it off. (Its watchdog reset on ACPI is
/// `real_kvm`'s stock-kernel test.)
#[test]
fn debian_stock_kernel_runs_on_kennels_acpi() {
    if !real_kvm_or_skip("debian_stock_kernel_runs_on_kennels_acpi") {
        return;
    }
    let stock = stock_guest();
    let initrd = stock.join("initrd.cpio.gz");
    let rootfs = linux_guest().join("rootfs.ext4");
    let cycle2 = format!("{BASE} kennel.wdt_period=1 kennel.wdt_timeout=4");
    let cmdline = format!("{cycle2} kennel.reboot_after=2");
    let fault = format!("boot:cmdline={cycle2},cycle=2");
    let (mut k, mut q) = start_with_qmp(
        "stock-acpi",
        &stock.join("vmlinuz"),
        &cmdline,
        &[
            "--initrd",
            initrd.to_str().unwrap(),
            "--memory",
            "256",
            "--rootfs",
            rootfs.to_str().unwrap(),
            "--rootfs-readonly",
            "--fault",
            &fault,
        ],
    );
    let ff2 = q.wait_event("WATCHDOG_FIRST_FEED", Some(2), 3 * LINUX_BOOT);
    assert!(ff2.is_some(), "{:?}\n{}", q.sequence(), k.transcript());
    let reset = q.wait_event("RESET", Some(1), Duration::ZERO).unwrap();
    assert_eq!(data(&reset, &["cause", "guest"]), [json!("guest"), json!(true)], "{reset}");
    k.collect();
    assert!(k.stderr.iter().any(|l| l.contains("(ACPI reset register)")), "{}", k.transcript());
    assert_console(
        &mut k,
        &[
            "ACPI: RSDP 0x00000000000E0000",
            "ACPI: FACP 0x",
            "Power Button [PWRB]",
            "i6300ESB timer 0000:00:04.0: initialized. heartbeat=4 sec",
            "kennel-initrd: read 1 MiB from /dev/vda",
            "kennel-guest: acpi tables: APIC DSDT FACP",
            "kennel-guest: acpid listening",
        ],
    );
    assert_eq!(q.execute("system_powerdown", json!({})), json!({"return": {}}));
    let sd = q.wait_event("SHUTDOWN", Some(2), LINUX_BOOT).unwrap_or_else(|| panic!("{}", k.transcript()));
    assert_eq!(data(&sd, &["cause", "guest", "forced"]), [json!("qmp"), json!(true), json!(false)], "{sd}");
    assert_eq!(k.wait_exit(T).and_then(|s| s.code()), Some(0), "{}", k.transcript());
    assert!(!k.stdout.iter().any(|l| l.contains("Oops") || l.contains("BUG:")), "{}", k.transcript());
}
