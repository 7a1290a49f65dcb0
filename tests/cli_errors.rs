#![allow(clippy::unwrap_used, clippy::panic)]
//! Wrong host input gets one clear line naming the problem, a documented
//! non-zero status, and never a panic.

mod common;

use std::process::Command;

use common::{kennel_bin, scratch};

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(kennel_bin()).args(args).output().expect("run kennel");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "kennel panicked: {err}");
    assert!(!err.contains("RUST_BACKTRACE"), "kennel printed a backtrace hint: {err}");
    (out.status.code().unwrap_or(-1), err)
}

#[test]
fn host_input_errors_are_one_clear_line() {
    let garbage = scratch("garbage.img");
    std::fs::write(&garbage, vec![0x5au8; 8192]).unwrap();
    let empty = scratch("empty.img");
    std::fs::write(&empty, b"").unwrap();
    let mut truncated_elf = b"\x7fELF\x02\x01\x01".to_vec();
    truncated_elf.resize(40, 0);
    let truncated = scratch("truncated.elf");
    std::fs::write(&truncated, &truncated_elf).unwrap();
    let g = garbage.to_str().unwrap();

    // (args, expected status, words the message must contain)
    let cases: Vec<(Vec<&str>, i32, Vec<&str>)> = vec![
        (vec!["run", "--kernel", "/nonexistent/vmlinux"], 1, vec!["/nonexistent/vmlinux", "does not exist"]),
        (vec!["run", "--kernel", g, "--initrd", "/nonexistent/initrd"], 1, vec!["/nonexistent/initrd"]),
        (vec!["run", "--kernel", g, "--memory", "0"], 2, vec!["--memory"]),
        (vec!["run", "--kernel", g, "--memory", "lots"], 2, vec!["--memory"]),
        (vec!["run", "--kernel", g, "--vcpus", "0"], 2, vec!["--vcpus"]),
        (vec!["run", "--kernel", g, "--vcpus", "33"], 2, vec!["--vcpus"]),
        (vec!["run"], 2, vec!["--kernel"]),
        (vec!["frobnicate"], 2, vec!["frobnicate"]),
    ];
    for (args, code, words) in cases {
        let (c, err) = run(&args);
        assert_eq!(c, code, "{args:?} exited {c}: {err}");
        for w in words {
            assert!(err.contains(w), "{args:?}: message lacks {w:?}: {err}");
        }
    }
}

#[test]
fn bad_kernel_images_are_named_when_kvm_is_there() {
    if !common::kvm_or_skip("bad_kernel_images_are_named_when_kvm_is_there") {
        return;
    }
    let garbage = scratch("garbage2.img");
    std::fs::write(&garbage, vec![0x5au8; 8192]).unwrap();
    let empty = scratch("empty2.img");
    std::fs::write(&empty, b"").unwrap();
    let mut t = b"\x7fELF\x02\x01\x01".to_vec();
    t.resize(40, 0);
    let truncated = scratch("truncated2.elf");
    std::fs::write(&truncated, &t).unwrap();
    for (p, word) in [(&garbage, "neither an ELF"), (&empty, "is empty"), (&truncated, "not a loadable ELF")]
    {
        let (c, err) = run(&["run", "--kernel", p.to_str().unwrap(), "--memory", "16"]);
        assert_eq!(c, 1, "{p:?}: {err}");
        assert!(err.contains(p.to_str().unwrap()) && err.contains(word), "{p:?}: {err}");
        assert_eq!(err.trim().lines().filter(|l| l.starts_with("kennel:")).count(), 1, "{err}");
    }
}
