#![allow(clippy::unwrap_used, clippy::panic)]
//! The VMM core with hand-made guests of a few instructions: fast on any
//! KVM host, PVM included.

mod common;

use std::time::Duration;

use common::{kvm_or_skip, test_guest, Kennel};

#[test]
fn hello_guest_prints_on_serial_and_reset_exits_with_no_reboot() {
    if !kvm_or_skip("hello_guest_prints_on_serial_and_reset_exits_with_no_reboot") {
        return;
    }
    let kernel = test_guest("hello");
    let mut k =
        Kennel::start(&["run", "--kernel", kernel.to_str().unwrap(), "--no-reboot", "--memory", "16"]);
    let st = k.wait_exit(Duration::from_secs(60)).expect("kennel did not exit");
    assert!(k.stdout.iter().any(|l| l == "kennel-test-guest: hello"), "{}", k.transcript());
    assert_eq!(st.code(), Some(0), "{}", k.transcript());
}

#[test]
fn guest_reset_without_no_reboot_boots_again() {
    if !kvm_or_skip("guest_reset_without_no_reboot_boots_again") {
        return;
    }
    let kernel = test_guest("hello");
    let mut k = Kennel::start(&["run", "--kernel", kernel.to_str().unwrap(), "--memory", "16"]);
    for n in 1..=3 {
        assert!(
            k.wait_for("kennel-test-guest: hello", Duration::from_secs(30)).is_some(),
            "boot {n} never said hello\n{}",
            k.transcript()
        );
    }
    k.kill();
}
