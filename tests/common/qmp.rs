//! Drives `tests/qmp_watch.py`, a real QMP client (Python `qemu.qmp`), so
//! the tests check kennel against what existing QMP consumers use.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::repo;

pub struct QmpWatch {
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<Value>,
    /// Every event received so far, in order.
    pub events: Vec<Value>,
}

impl QmpWatch {
    /// Connects to `socket` (waiting for it to appear); with `cont`, starts
    /// a VM that kennel holds with --start-paused.
    pub fn connect(socket: &Path, cont: bool) -> QmpWatch {
        let python = repo().join("target/venv/bin/python");
        assert!(python.exists(), "{} is missing: run scripts/setup (it installs qemu.qmp)", python.display());
        let mut cmd = Command::new(python);
        cmd.arg(repo().join("tests/qmp_watch.py")).arg(socket);
        if cont {
            cmd.arg("--cont");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start qmp_watch.py");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let mut w = QmpWatch { child, stdin, rx, events: Vec::new() };
        // Generous: Python's start-up alone takes seconds on an emulated
        // nested KVM host.
        let first = w.next(Duration::from_secs(120)).expect("qmp_watch.py said nothing");
        assert_eq!(first, json!({"connected": true}), "QMP connection failed");
        w
    }

    /// The next non-event message; events met on the way are recorded.
    fn next(&mut self, timeout: Duration) -> Option<Value> {
        let end = Instant::now() + timeout;
        loop {
            let v = self.rx.recv_timeout(end.saturating_duration_since(Instant::now())).ok()?;
            if v.get("event").is_some() {
                self.events.push(v);
            } else {
                return Some(v);
            }
        }
    }

    /// Waits for event `name` (in boot cycle `cycle`, if given), looking at
    /// events already received first.
    pub fn wait_event(&mut self, name: &str, cycle: Option<u64>, timeout: Duration) -> Option<Value> {
        let matches =
            |v: &Value| v["event"] == name && cycle.is_none_or(|c| v["data"]["cycle"].as_u64() == Some(c));
        if let Some(v) = self.events.iter().find(|v| matches(v)) {
            return Some(v.clone());
        }
        let end = Instant::now() + timeout;
        loop {
            let v = self.rx.recv_timeout(end.saturating_duration_since(Instant::now())).ok()?;
            if v.get("event").is_some() {
                self.events.push(v.clone());
                if matches(&v) {
                    return Some(v);
                }
            }
        }
    }

    /// Records whatever events arrive within `timeout` (only while no
    /// command is in flight: anything else that arrives is dropped).
    pub fn pump(&mut self, timeout: Duration) {
        let end = Instant::now() + timeout;
        while let Ok(v) = self.rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            if v.get("event").is_some() {
                self.events.push(v);
            }
        }
    }

    /// Runs a command; returns `{"return": ...}` or `{"error": ...}`.
    pub fn execute(&mut self, name: &str, args: Value) -> Value {
        let line = json!({"execute": name, "arguments": args}).to_string();
        writeln!(self.stdin, "{line}").expect("write to qmp_watch.py");
        self.next(Duration::from_secs(10)).unwrap_or_else(|| json!({"error": "no reply"}))
    }

    /// (name, cycle) of every event so far, for sequence assertions.
    pub fn sequence(&self) -> Vec<(String, u64)> {
        self.events
            .iter()
            .map(|v| {
                (v["event"].as_str().unwrap_or("?").to_string(), v["data"]["cycle"].as_u64().unwrap_or(0))
            })
            .collect()
    }
}

impl Drop for QmpWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seconds between two events' QMP timestamps.
pub fn seconds_between(a: &Value, b: &Value) -> f64 {
    let t = |v: &Value| {
        v["timestamp"]["seconds"].as_f64().unwrap_or(0.0)
            + v["timestamp"]["microseconds"].as_f64().unwrap_or(0.0) / 1e6
    };
    t(b) - t(a)
}
