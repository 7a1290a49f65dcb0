//! The scenario harness: `scripts/scenario` run end to end, its events read
//! through a real QMP client and the reference monitor (examples/monitor.py)
//! watching the same socket.

use std::process::Command;
use std::time::{Duration, Instant};

use super::qmp::QmpWatch;
use super::{kennel_bin, repo, scratch};

pub struct Run {
    pub events: Vec<(String, u64, String)>,
    /// What examples/monitor.py said about this VM's alarm, in order:
    /// "raised" or "cleared".
    pub alarms: Vec<String>,
    pub console: String,
    pub svg: String,
    pub ok: bool,
    pub output: String,
    /// kennel's own log lines at warning level or about resets: why the
    /// guest went down, where the console cannot say.
    pub log: String,
}

/// Runs `scripts/scenario NAME` (with `extra` arguments, e.g. `--guest
/// debian`) watched by a QMP client and by examples/monitor.py. `label`
/// names its scratch files.
pub fn run(label: &str, name: &str, extra: &[&str]) -> Run {
    let out = scratch(&format!("scenario-{label}"));
    let sock = scratch(&format!("scenario-{label}.qmp"));
    let _ = std::fs::remove_file(&sock);
    let mut child = Command::new(repo().join("scripts/scenario"))
        .args([name, "--qmp", sock.to_str().unwrap(), "--start-paused", "--out", out.to_str().unwrap()])
        .args(extra)
        .env("KENNEL", kennel_bin())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start scripts/scenario");
    // The reference monitor watches the same socket; the VM starts once it
    // is connected, so it sees every event.
    let mut monitor = Monitor::start(&sock);
    let mut q = QmpWatch::connect(&sock, true);
    let end = Instant::now() + Duration::from_secs(900);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < end, "scenario {name} did not finish");
        q.pump(Duration::from_millis(200));
    };
    q.wait_event("SHUTDOWN", None, Duration::from_secs(5));
    let mut output = String::new();
    if let Some(mut o) = child.stdout.take() {
        use std::io::Read;
        let _ = o.read_to_string(&mut output);
    }
    let events = q
        .events
        .iter()
        .map(|v| {
            let cause = v["data"]["cause"].as_str().or(v["data"]["what"].as_str()).unwrap_or("").to_string();
            (v["event"].as_str().unwrap().to_string(), v["data"]["cycle"].as_u64().unwrap_or(0), cause)
        })
        .collect();
    let alarms = monitor.stop();
    check_metrics(name, &out.join("metrics.prom"), &q.events);
    Run {
        events,
        alarms,
        console: std::fs::read_to_string(out.join("console.log")).unwrap_or_default(),
        svg: std::fs::read_to_string(out.join("timeline.svg")).unwrap_or_default(),
        ok: status.success(),
        output,
        log: std::fs::read_to_string(out.join("kennel.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| ["WARN", "ERROR", "reset", "triple"].iter().any(|k| l.contains(k)))
            .take(40)
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// The metrics file kennel left (`--metrics`), as the reference parser
/// reads it, agrees with the events the QMP client saw.
fn check_metrics(name: &str, path: &std::path::Path, events: &[serde_json::Value]) {
    let m = super::prometheus_samples(path)
        .unwrap_or_else(|e| panic!("scenario {name}: metrics unreadable: {e}"));
    let got = |k: &str| m.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0);
    let count = |ev: &str, key: &str, val: &str| {
        events.iter().filter(|e| e["event"] == ev && (key.is_empty() || e["data"][key] == val)).count() as f64
    };
    let mut want = vec![
        ("kennel_watchdog_first_feeds_total".to_string(), count("WATCHDOG_FIRST_FEED", "", "")),
        (
            "kennel_boot_cycle".to_string(),
            events.iter().filter_map(|e| e["data"]["cycle"].as_f64()).fold(0.0, f64::max),
        ),
    ];
    for (ev, metric, key) in [
        ("BOOT", "kennel_boots_total", "cause"),
        ("RESET", "kennel_resets_total", "cause"),
        ("WATCHDOG", "kennel_watchdog_expiries_total", "action"),
        ("BOOT_DEADLINE_MISSED", "kennel_boot_deadlines_missed_total", "action"),
    ] {
        for e in events.iter().filter(|e| e["event"] == ev) {
            let v = e["data"][key].as_str().unwrap_or("unknown");
            want.push((format!("{metric}|{key}={v}"), count(ev, key, v)));
        }
    }
    let faults = count("FAULT_INJECTED", "", "");
    let fault_total: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("kennel_faults_injected_total|"))
        .filter_map(|(_, v)| v.as_f64())
        .sum();
    assert_eq!(fault_total, faults, "scenario {name}: faults in the metrics {m:?}");
    for (k, v) in want {
        assert_eq!(got(&k), v, "scenario {name}: {k} in the metrics {m:?}");
    }
    // The story ended with the VM stopped by the scenario (SHUTDOWN).
    assert_eq!(got("kennel_lifecycle_state|state=shutdown"), 1.0, "scenario {name}: {m:?}");
}

/// examples/monitor.py on one socket, its JSON lines read as they come.
struct Monitor {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl Monitor {
    fn start(sock: &std::path::Path) -> Monitor {
        let mut child = Command::new(repo().join("target/venv/bin/python"))
            .arg(repo().join("examples/monitor.py"))
            .arg(format!("vm={}", sock.display()))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start examples/monitor.py (scripts/setup installs qemu.qmp)");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(serde_json::from_str(&l).unwrap_or_else(|_| panic!("monitor printed {l:?}")));
            }
        });
        let first: serde_json::Value =
            lines.recv_timeout(Duration::from_secs(60)).expect("the monitor never connected");
        assert_eq!(first["connected"], true, "{first}");
        Monitor { child, lines }
    }

    /// Stops the monitor; its alarm changes, in order.
    fn stop(&mut self) -> Vec<String> {
        // Lines printed for the last events have a moment to arrive.
        std::thread::sleep(Duration::from_millis(500));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut alarms = Vec::new();
        while let Ok(v) = self.lines.recv_timeout(Duration::from_millis(200)) {
            if let Some(a) = v["alarm"].as_str().filter(|_| v.get("connected").is_none()) {
                alarms.push(a.to_string());
            }
        }
        alarms
    }
}

/// The sequence with repeats of the same (event, cycle) folded: how many
/// FAULT_INJECTED a failing boot produces is not the point.
pub fn story(r: &Run) -> Vec<(String, u64, String)> {
    let mut s: Vec<(String, u64, String)> = Vec::new();
    for e in &r.events {
        if s.last().is_some_and(|l| l.0 == e.0 && l.1 == e.1) {
            continue;
        }
        s.push(e.clone());
    }
    s
}

pub fn ev(name: &str, cycle: u64, cause: &str) -> (String, u64, String) {
    (name.to_string(), cycle, cause.to_string())
}

impl Run {
    /// The scenario's output and the console's last lines: what a failure
    /// message needs (the console file is gone with the nested host).
    /// Each boot but the last also shows how it ended: a guest that reset
    /// itself (seen with Debian, cause unknown) says why only there.
    pub fn report(&self) -> String {
        let last = |text: &str, n: usize| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        let mut out = format!("{}\n--- kennel's log, warnings and resets ---\n{}", self.output, self.log);
        let boots: Vec<&str> = self.console.split("Linux version ").collect();
        for (i, b) in boots.iter().enumerate().skip(1).take(boots.len().saturating_sub(2)) {
            out += &format!("\n--- console, the end of boot {i} ---\n{}", last(b, 25));
        }
        out + &format!("\n--- console, last 80 lines ---\n{}", last(&self.console, 80))
    }
}

pub fn check(name: &str, r: &Run, want: &[(String, u64, String)]) {
    assert!(r.ok, "scenario {name} failed\n{}", r.report());
    let got = story(r);
    assert_eq!(&got[..want.len().min(got.len())], want, "scenario {name}: events {got:?}\n{}", r.report());
    assert!(r.svg.contains("<svg") && r.svg.contains("cycle 1"), "scenario {name}: no timeline drawn");
}
