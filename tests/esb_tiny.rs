#![allow(clippy::unwrap_used, clippy::panic)]
//! The 6300ESB driven by a tiny guest that programs it the way Linux's
//! driver does: fast on any KVM host.

mod common;

use std::time::Duration;

use common::{kvm_or_skip, test_guest, Kennel};

fn esb(cmdline: &str, extra: &[&str]) -> Kennel {
    let kernel = test_guest("esb");
    let mut args = vec!["run", "--kernel", kernel.to_str().unwrap(), "--memory", "16", "--cmdline", cmdline];
    args.extend_from_slice(extra);
    Kennel::start(&args)
}

const T: Duration = Duration::from_secs(20);

#[test]
fn expiry_resets_the_vm_and_the_next_boot_sees_the_timeout_flag() {
    if !kvm_or_skip("expiry_resets_the_vm_and_the_next_boot_sees_the_timeout_flag") {
        return;
    }
    let mut k = esb("heartbeat=1 feeds=2 interval_ms=100", &[]);
    assert!(k.wait_for("esb: timeout_flag=0", T).is_some(), "first boot\n{}", k.transcript());
    assert!(k.wait_for("esb: stopped feeding", T).is_some(), "{}", k.transcript());
    // Second boot: the flag survived the reset, and the guest clears it...
    assert!(k.wait_for("esb: timeout_flag=1", T).is_some(), "no reset or flag lost\n{}", k.transcript());
    // ...so after the next expiry it is set again (not stuck, not lost).
    assert!(k.wait_for("esb: timeout_flag=1", T).is_some(), "third boot\n{}", k.transcript());
    k.kill();
}

#[test]
fn nowayout_lock_refuses_disarm_until_reset() {
    if !kvm_or_skip("nowayout_lock_refuses_disarm_until_reset") {
        return;
    }
    let mut k = esb("heartbeat=1 nowayout feeds=0 disarm", &[]);
    let line = k.wait_for("esb: after disarm attempt", T).expect("guest output");
    // ENABLE and LOCK still set; config 0x60 kept 0x0003 despite the write.
    assert!(line.contains("lock=0x00000003 config=0x00000003"), "{line}\n{}", k.transcript());
    // The guest "disarmed", yet the watchdog still fired and reset the VM.
    assert!(k.wait_for("esb: timeout_flag=1", T).is_some(), "no expiry while locked\n{}", k.transcript());
    // LOCK did not survive the reset.
    assert!(!k.stdout.iter().any(|l| l.contains("lock already set")), "{}", k.transcript());
    k.kill();
}

#[test]
fn a_clean_disarm_means_no_reset() {
    if !kvm_or_skip("a_clean_disarm_means_no_reset") {
        return;
    }
    let mut k = esb("heartbeat=1 feeds=1 interval_ms=100 disarm", &[]);
    assert!(k.wait_for("esb: disarmed", T).is_some(), "{}", k.transcript());
    // Three heartbeats later there has been no second boot.
    assert!(
        k.wait_for("esb: found", Duration::from_secs(3)).is_none(),
        "VM reset after disarm\n{}",
        k.transcript()
    );
    k.kill();
}
