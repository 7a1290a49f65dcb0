//! Shared helpers for integration tests that start the real `kennel` binary.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

pub mod qmp;
pub mod scenario;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn kennel_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kennel"))
}

/// True when this host can run KVM guests. When it cannot, says so loudly:
/// the test then checks nothing and must not be mistaken for a pass.
pub fn kvm_or_skip(test: &str) -> bool {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => true,
        Err(e) => {
            skip(test, &format!("/dev/kvm is not usable here ({e}); this test needs KVM"));
            false
        }
    }
}

pub fn host_is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// Says loudly that a test cannot run on this host, on the real stderr
/// (not the test harness's captured one), so `scripts/test` can count it.
/// The test then checks nothing and must not be mistaken for a pass.
pub fn skip(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "\n*** SKIPPED {test}: {why} ***\n");
}

/// True on real KVM (VT-x/AMD-V, bare metal or nested), where guest user
/// space runs. On a PVM host it says so loudly and the test must return.
pub fn real_kvm_or_skip(test: &str) -> bool {
    if !kvm_or_skip(test) {
        return false;
    }
    if host_is_pvm() {
        skip(test, "needs real KVM (guest user space or secondary vCPUs); this host's /dev/kvm is PVM");
        return false;
    }
    true
}

/// Who feeds the Linux guest's watchdog: on PVM hosts guest user space
/// cannot make system calls, so the kit's in-kernel feeder stands in; on
/// real KVM the rootfs's busybox init starts busybox `watchdog`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feeder {
    Kernel,
    Daemon,
}

impl Feeder {
    pub fn for_host() -> Feeder {
        if host_is_pvm() {
            Feeder::Kernel
        } else {
            Feeder::Daemon
        }
    }

    /// The console line the next boot prints when the 6300ESB's timeout
    /// flag survived a watchdog reset (WDIOF_CARDRESET, 0x20).
    pub fn card_reset_line(self) -> &'static str {
        match self {
            Feeder::Kernel => "kennel_feeder: bootstatus=0x20 (card reset)",
            Feeder::Daemon => "kennel-guest: watchdog bootstatus=32",
        }
    }
}

/// Builds the tiny test guests once per test binary.
pub fn test_guest(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let out = repo().join("target/test-guests");
        let st = Command::new(repo().join("scripts/build-test-guests"))
            .arg(&out)
            .status()
            .expect("run scripts/build-test-guests");
        assert!(st.success(), "scripts/build-test-guests failed");
        out
    });
    dir.join(format!("{name}.elf"))
}

/// Runs `scripts/build-guest` (cached by a hash of its inputs) with
/// `args` once per test binary and returns the guest directory.
fn built_guest(args: &'static [&'static str]) -> PathBuf {
    let out = std::env::var_os("KENNEL_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/guest"));
    let st = Command::new(repo().join("scripts/build-guest"))
        .args(args)
        .env("KENNEL_GUEST_DIR", &out)
        .status()
        .expect("run scripts/build-guest");
    assert!(st.success(), "scripts/build-guest {args:?} failed");
    out
}

/// The Linux guest kit: the directory holding vmlinux, bzImage,
/// rootfs.ext4 and initrd.cpio.gz.
pub fn linux_guest() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| built_guest(&[])).clone()
}

/// Debian's stock kernel as a guest (`scripts/build-guest --stock`): the
/// directory holding its `vmlinuz`, `initrd.cpio.gz` and `version`.
pub fn stock_guest() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| built_guest(&["--stock"]).join("stock")).clone()
}

/// kennel's Debian guest: the directory holding `vmlinuz`, `initrd.img`
/// and `rootfs.img`. Built beforehand by `scripts/build-debian-guest`
/// (`scripts/test` does), not here: it needs root, apt and the network,
/// and the nested host sees the repository read-only.
pub fn debian_guest() -> PathBuf {
    let dir = std::env::var_os("KENNEL_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/guest"))
        .join("debian");
    for f in ["vmlinuz", "initrd.img", "rootfs.img"] {
        assert!(dir.join(f).exists(), "{} is missing: run scripts/build-debian-guest", dir.join(f).display());
    }
    dir
}

/// A watchdog reset cycle as a monitor sees it: armed, fed, expired, reset,
/// and back to the first feed of cycle 2.
pub const RESET_STORY: [(&str, u64); 9] = [
    ("BOOT", 1),
    ("WATCHDOG_ARMED", 1),
    ("WATCHDOG_FIRST_FEED", 1),
    ("WATCHDOG_PRETIMEOUT", 1),
    ("WATCHDOG", 1),
    ("RESET", 1),
    ("BOOT", 2),
    ("WATCHDOG_ARMED", 2),
    ("WATCHDOG_FIRST_FEED", 2),
];

/// How long a Linux boot may take to reach the watchdog: ~10 s on our PVM
/// hosts, under a second on real KVM; generous for a loaded CI machine.
pub const LINUX_BOOT: Duration = Duration::from_secs(180);

/// Starts kennel held at `--start-paused` with a QMP socket and a real QMP
/// client connected (which lets it run), so no event is missed.
pub fn start_with_qmp(name: &str, kernel: &Path, cmdline: &str, extra: &[&str]) -> (Kennel, qmp::QmpWatch) {
    let sock = scratch(&format!("{name}.qmp"));
    let _ = std::fs::remove_file(&sock);
    let mut args = vec![
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--cmdline",
        cmdline,
        "--qmp",
        sock.to_str().unwrap(),
        "--start-paused",
    ];
    args.extend_from_slice(extra);
    let k = Kennel::start(&args);
    let q = qmp::QmpWatch::connect(&sock, true);
    (k, q)
}

/// The guest command line for the feeder scenarios.
pub fn feeder_cmdline(extra: &str) -> String {
    format!("console=ttyS0 reboot=k panic=1 {extra}")
}

/// A unique scratch path for this test process.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kennel-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

/// A running kennel whose stdout (guest console) and stderr (log) lines are
/// collected as they arrive.
pub struct Kennel {
    child: Child,
    lines: Receiver<(bool, String)>,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    /// Its threads when `wait_exit` gave up on it.
    stuck: Option<String>,
}

impl Kennel {
    pub fn start(args: &[&str]) -> Kennel {
        Self::start_env(args, &[])
    }

    /// As `start`, with these variables added to kennel's environment.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Kennel {
        let mut child = Command::new(kennel_bin())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kennel");
        let (tx, rx) = channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for (is_err, stream) in
            [(false, Box::new(out) as Box<dyn std::io::Read + Send>), (true, Box::new(err))]
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send((is_err, line));
                }
            });
        }
        Kennel { child, lines: rx, stdout: Vec::new(), stderr: Vec::new(), stuck: None }
    }

    fn take(&mut self, (is_err, line): (bool, String)) -> String {
        if is_err {
            self.stderr.push(line.clone());
        } else {
            self.stdout.push(line.clone());
        }
        line
    }

    /// Waits for a line (stdout or stderr) containing `needle`; returns it,
    /// or None at the deadline or when kennel has exited.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let line = self.take(l);
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Waits for kennel to exit; kills it at the deadline.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.drain();
                return Some(st);
            }
            if Instant::now() > end {
                // Where it was stuck, for the assertion message: on a
                // nested host a stall inside the host kernel shows only here.
                self.stuck = Some(threads_report(self.child.id()));
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.drain();
                return None;
            }
            while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(20)) {
                self.take(l);
            }
        }
    }

    /// Takes in the lines that have arrived, without waiting.
    pub fn collect(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.take(l);
        }
    }

    fn drain(&mut self) {
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(100)) {
            self.take(l);
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.drain();
    }

    /// Everything kennel printed so far (lines not yet waited for
    /// included), for assertion messages.
    pub fn transcript(&mut self) -> String {
        self.collect();
        let mut t =
            format!("--- stdout ---\n{}\n--- stderr ---\n{}", self.stdout.join("\n"), self.stderr.join("\n"));
        if let Some(stuck) = &self.stuck {
            t.push_str("\n--- its threads when it did not exit in time ---\n");
            t.push_str(stuck);
        }
        t
    }
}

/// Each thread of `pid`: name, state, wait channel and kernel stack (the
/// stack needs root; without it the line says so).
pub fn threads_report(pid: u32) -> String {
    let mut out = String::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("(no /proc/{pid}/task)\n");
    };
    for task in tasks.flatten() {
        let p = task.path();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
        let stat = read("stat");
        let state =
            stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()).unwrap_or("?").to_string();
        out.push_str(&format!(
            "{} {} state={state} wchan={}\n",
            task.file_name().to_string_lossy(),
            read("comm").trim(),
            read("wchan")
        ));
        match std::fs::read_to_string(p.join("stack")) {
            Ok(stack) => stack.lines().take(16).for_each(|l| out.push_str(&format!("    {l}\n"))),
            Err(e) => out.push_str(&format!("    (kernel stack: {e})\n")),
        }
    }
    out
}

impl Drop for Kennel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A metrics file (`--metrics`) as the reference Prometheus parser
/// (`prometheus_client`, in the venv scripts/setup makes) reads it: one key
/// per sample, `NAME|label=value|...` (labels sorted) to its value, and
/// `type:FAMILY` to the family's type. Err: what the parser said.
pub fn prometheus_samples(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in fam.samples:
        out[s.name + ''.join('|%s=%s' % kv for kv in sorted(s.labels.items()))] = s.value
    out['type:' + fam.name] = fam.type
print(json.dumps(out))
"#;
    let out = Command::new(repo().join("target/venv/bin/python"))
        .args(["-c", PARSE])
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run the venv's python: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("parser output is not JSON: {e}"))
}
