#![allow(clippy::unwrap_used, clippy::panic)]
//! Every wrong host input, table-driven: one `kennel:` line naming the
//! problem, the documented status (README "Exit status"), no panic, and no
//! QMP socket or events file left behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{kennel_bin, kvm_or_skip, scratch, test_guest, Kennel};

struct Case {
    name: &'static str,
    args: Vec<String>,
    status: i32,
    /// Words the error must contain (the path or option it is about).
    words: Vec<String>,
    /// Needs /dev/kvm to get as far as the check.
    kvm: bool,
    /// Add --qmp and --events at fresh scratch paths, and check afterwards
    /// that neither exists (false when the case is about one of them).
    outputs: bool,
}

fn case(name: &'static str, args: &[&str], status: i32, words: &[&str]) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        status,
        words: words.iter().map(|s| s.to_string()).collect(),
        kvm: false,
        outputs: true,
    }
}

impl Case {
    fn kvm(mut self) -> Self {
        self.kvm = true;
        self
    }
    fn own_outputs(mut self) -> Self {
        self.outputs = false;
        self
    }
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn file(name: &str, bytes: &[u8]) -> String {
    let p = scratch(name);
    std::fs::write(&p, bytes).unwrap();
    s(&p)
}

fn check(c: &Case) {
    let sock = scratch(&format!("{}.qmp", c.name));
    let events = scratch(&format!("{}.jsonl", c.name));
    let mut args = c.args.clone();
    if c.outputs {
        args.extend(["--qmp".into(), s(&sock), "--events".into(), s(&events)]);
    }
    let out = Command::new(kennel_bin()).args(&args).output().expect("run kennel");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let what = format!("{}: {args:?}\n{err}", c.name);
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "panic: {what}");
    assert_eq!(out.status.code(), Some(c.status), "status: {what}");
    let lines: Vec<&str> =
        err.lines().filter(|l| l.starts_with("kennel:") || l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "exactly one error line: {what}");
    for w in &c.words {
        assert!(lines[0].contains(w.as_str()), "error lacks {w:?}: {what}");
    }
    if c.outputs {
        assert!(sock.symlink_metadata().is_err(), "stale QMP socket left: {what}");
        assert!(events.symlink_metadata().is_err(), "events file left: {what}");
    }
}

fn guest() -> String {
    s(&test_guest("hello"))
}

#[test]
fn host_input_errors() {
    let kvm = kvm_or_skip("host_input_errors (KVM cases)");
    let hello = guest();
    let garbage = file("bad-garbage", &[0x5a; 8192]);
    let empty = file("bad-empty", b"");
    let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
    elf.resize(40, 0);
    let truncated = file("bad-truncated.elf", &elf);
    let big_initrd = file("bad-big.initrd", &vec![0u8; 20 << 20]);
    let ro = file("bad-ro.img", &[0; 4096]);
    std::fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();
    let existing = file("bad-existing.sock", b"precious");
    let dir = scratch("bad-dir");
    std::fs::create_dir_all(&dir).unwrap();
    let dir = s(&dir);
    let k = |extra: &[&str]| {
        let mut v = vec!["run", "--kernel", hello.as_str()];
        if !extra.contains(&"--memory") {
            v.extend(["--memory", "16"]);
        }
        v.extend_from_slice(extra);
        v.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let with = |name, extra: &[&str], status, words: &[&str]| {
        let mut c = case(name, &[], status, words);
        c.args = k(extra);
        c
    };
    let kernel = |name, path: &str, words: &[&str]| {
        case(name, &["run", "--kernel", path, "--memory", "16"], 1, words).kvm()
    };
    let cases = vec![
        kernel("missing-kernel", "/nonexistent/vmlinux", &["/nonexistent/vmlinux", "does not exist"]),
        kernel("empty-kernel", &empty, &[&empty, "is empty"]).kvm(),
        kernel("garbage-kernel", &garbage, &[&garbage, "neither an ELF"]),
        kernel("truncated-kernel", &truncated, &[&truncated, "not a loadable ELF"]),
        with("missing-initrd", &["--initrd", "/nonexistent/initrd"], 1, &["/nonexistent/initrd"]),
        with("initrd-too-big", &["--initrd", &big_initrd], 1, &[&big_initrd, "does not fit"]).kvm(),
        with("rootfs-missing", &["--rootfs", "/nonexistent/disk.img"], 1, &["/nonexistent/disk.img"]),
        with("rootfs-read-only", &["--rootfs", &ro], 1, &[&ro, "--rootfs-readonly"]),
        with("rootfs-directory", &["--rootfs", &dir], 1, &[&dir, "rootfs"]),
        with("memory-zero", &["--memory", "0"], 2, &["--memory"]),
        with("memory-beyond-host", &["--memory", "1048576"], 1, &["--memory 1048576", "MemTotal"]),
        with("memory-garbage", &["--memory", "lots"], 2, &["--memory"]),
        with("vcpus-zero", &["--vcpus", "0"], 2, &["--vcpus"]),
        with("fault-unknown", &["--fault", "blk:frob"], 1, &["blk:frob"]),
        with("fault-bad-cycle", &["--fault", "blk:read-error,cycle=x"], 1, &["cycle=x"]),
        with("fault-no-target", &["--fault", "nonsense"], 1, &["nonsense"]),
        with("qmp-exists", &["--qmp", &existing], 1, &[&existing, "already exists"]).own_outputs().kvm(),
        with("qmp-no-dir", &["--qmp", "/nonexistent/q.sock"], 1, &["/nonexistent/q.sock"])
            .own_outputs()
            .kvm(),
        with("qmp-unwritable-dir", &["--qmp", "/proc/kennel.sock"], 1, &["/proc/kennel.sock"])
            .own_outputs()
            .kvm(),
        with("events-is-dir", &["--events", &dir], 1, &[&dir, "events file"]).own_outputs().kvm(),
        with("events-no-dir", &["--events", "/nonexistent/ev.jsonl"], 1, &["/nonexistent/ev.jsonl"])
            .own_outputs()
            .kvm(),
    ];
    for c in &cases {
        if c.kvm && !kvm {
            continue;
        }
        check(c);
    }
    assert_eq!(
        std::fs::read(&existing).unwrap(),
        b"precious",
        "an existing file at the QMP path is left alone"
    );

    // Outputs that fail after the socket exists: the socket must go too.
    if kvm {
        let sock = scratch("late.qmp");
        check(&Case {
            name: "events-fail-after-qmp",
            args: k(&["--qmp", &s(&sock), "--events", &dir]),
            status: 1,
            words: vec![dir.clone()],
            kvm: true,
            outputs: false,
        });
        assert!(sock.symlink_metadata().is_err(), "QMP socket left after a later error");
    }
}

#[test]
fn rootfs_locked_by_another_kennel() {
    if !kvm_or_skip("rootfs_locked_by_another_kennel") {
        return;
    }
    let disk: PathBuf = scratch("locked.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let hello = guest();
    let mut first = Kennel::start(&[
        "run",
        "--kernel",
        &hello,
        "--memory",
        "16",
        "--cmdline",
        "halt",
        "--rootfs",
        &s(&disk),
    ]);
    first.wait_for("BOOT", Duration::from_secs(20)).unwrap_or_else(|| panic!("{}", first.transcript()));
    for ro in [false, true] {
        let mut c = case("rootfs-locked", &[], 1, &[&s(&disk), "in use by another process"]);
        c.args =
            ["run", "--kernel", &hello, "--memory", "16", "--rootfs", &s(&disk)].map(String::from).to_vec();
        if ro {
            c.args.push("--rootfs-readonly".into());
        }
        check(&c);
    }
    first.kill();
}
