//! `--metrics PATH`: the supervision state in the Prometheus text format, for
//! node_exporter's textfile collector (or anything that reads that format).
//!
//! The file is rewritten whole on every event and every few seconds: written
//! to a temporary file beside it, then renamed over it, so a reader never
//! sees half a file. Counters count since this kennel started (a restart
//! resets them, which Prometheus' `rate()` and `increase()` expect).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::supervision::events::{Event, EventName};
use crate::supervision::lifecycle::State;

/// Errors writing the metrics file.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics path {0} has no file name")]
    NoFileName(PathBuf),
    #[error("cannot write metrics to {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// What only the main loop knows at the moment of writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Live {
    pub cycle: u64,
    pub state: State,
    pub paused: bool,
    pub armed: bool,
    /// Every feed the guest made since kennel started, over all cycles.
    pub feeds: u64,
    /// With `--rootfs-snapshot`: the guest's writes kennel holds in memory.
    pub snapshot_bytes: Option<u64>,
}

/// Counters kept from the events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Counts {
    boots: BTreeMap<String, u64>,
    resets: BTreeMap<String, u64>,
    first_feeds: u64,
    pretimeouts: u64,
    expiries: BTreeMap<String, u64>,
    deadlines_missed: BTreeMap<String, u64>,
    faults: BTreeMap<String, u64>,
    last_first_feed: Option<SystemTime>,
}

fn label(e: &Event, key: &str) -> String {
    e.get(key).and_then(|v| v.as_str()).unwrap_or("unknown").to_string()
}

impl Counts {
    fn observe(&mut self, e: &Event) {
        let bump = |m: &mut BTreeMap<String, u64>, k: String| *m.entry(k).or_default() += 1;
        match e.name {
            EventName::Boot => bump(&mut self.boots, label(e, "cause")),
            EventName::Reset => bump(&mut self.resets, label(e, "cause")),
            EventName::WatchdogFirstFeed => {
                self.first_feeds += 1;
                self.last_first_feed = Some(e.wall);
            }
            EventName::WatchdogPretimeout => {
                // One event stands for itself and the ones it suppressed.
                self.pretimeouts += 1 + e.get("suppressed").and_then(|v| v.as_u64()).unwrap_or(0);
            }
            EventName::Watchdog => bump(&mut self.expiries, label(e, "action")),
            EventName::BootDeadlineMissed => bump(&mut self.deadlines_missed, label(e, "action")),
            EventName::FaultInjected => bump(&mut self.faults, fault_kind(e)),
            EventName::WatchdogArmed
            | EventName::WatchdogDisarmed
            | EventName::Powerdown
            | EventName::Shutdown
            | EventName::Stop
            | EventName::Resume => {}
        }
    }
}

/// `blk:read-error,cycle=2` -> `blk:read-error`: the fault without its
/// options, so the label's values stay few.
fn fault_kind(e: &Event) -> String {
    let spec = label(e, "spec");
    let kind = spec.split(',').next().unwrap_or("unknown");
    // `boot:cmdline=...` carries a whole command line; the kind is enough.
    kind.split('=').next().unwrap_or(kind).to_string()
}

/// The metrics file and the counters behind it.
///
/// The file is written through its directory's descriptor (`openat`,
/// `renameat`), opened at start: the main thread's seccomp filter allows
/// creating files in that one directory and nowhere else
/// ([`MetricsFile::dir_fd`]).
#[derive(Debug)]
pub struct MetricsFile {
    path: PathBuf,
    dir: std::fs::File,
    name: CString,
    tmp: CString,
    counts: Counts,
}

impl MetricsFile {
    /// Opens the file's directory and writes an empty state, so a path
    /// that cannot be written is an error before the VM starts.
    pub fn create(path: &Path) -> Result<Self, MetricsError> {
        let file_name = path.file_name().ok_or_else(|| MetricsError::NoFileName(path.to_path_buf()))?;
        let dir_path = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let dir = std::fs::File::open(dir_path)
            .map_err(|source| MetricsError::Write { path: path.to_path_buf(), source })?;
        let c = |b: &[u8]| CString::new(b).map_err(|_| MetricsError::NoFileName(path.to_path_buf()));
        let name = c(file_name.as_bytes())?;
        // A dot file: the textfile collector reads only `*.prom`, so it never
        // sees the half-written temporary.
        let tmp = c(&[b".", file_name.as_bytes(), b".tmp"].concat())?;
        let m = MetricsFile { path: path.to_path_buf(), dir, name, tmp, counts: Counts::default() };
        let live = Live {
            cycle: 0,
            state: State::Booting,
            paused: false,
            armed: false,
            feeds: 0,
            snapshot_bytes: None,
        };
        m.write(&live, SystemTime::now())?;
        Ok(m)
    }

    /// The directory descriptor the seccomp filter lets the main thread
    /// create files and rename in.
    pub fn dir_fd(&self) -> RawFd {
        self.dir.as_raw_fd()
    }

    pub fn observe(&mut self, e: &Event) {
        self.counts.observe(e);
    }

    /// Rewrites the file atomically: a temporary beside it, then a rename.
    pub fn write(&self, live: &Live, now: SystemTime) -> Result<(), MetricsError> {
        let text = render(&self.counts, live, now);
        let err = |source| MetricsError::Write { path: self.path.clone(), source };
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC | libc::O_NOFOLLOW;
        // SAFETY: a valid directory fd and a NUL-terminated name; the result is checked.
        let fd = unsafe { libc::openat(self.dir.as_raw_fd(), self.tmp.as_ptr(), flags, 0o644) };
        if fd < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
        f.write_all(text.as_bytes()).map_err(err)?;
        drop(f);
        let d = self.dir.as_raw_fd();
        // SAFETY: valid directory fds and NUL-terminated names; the result is checked.
        if unsafe { libc::renameat(d, self.tmp.as_ptr(), d, self.name.as_ptr()) } != 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn value(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        let _ = write!(self.0, "{name}");
        if !labels.is_empty() {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(self.0, "{{{}}}", l.join(","));
        }
        let _ = writeln!(self.0, " {v}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, v: impl std::fmt::Display) {
        self.head(name, kind, help);
        self.value(name, &[], v);
    }

    fn by(&mut self, name: &str, help: &str, key: &str, m: &BTreeMap<String, u64>) {
        self.head(name, "counter", help);
        for (k, v) in m {
            self.value(name, &[(key, k)], v);
        }
    }
}

/// Label values are the guest's or the user's text at worst (a fault spec):
/// escaped as the format requires.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

const STATES: [State; 6] =
    [State::Booting, State::Armed, State::Alive, State::Disarmed, State::Expired, State::Shutdown];

fn render(c: &Counts, live: &Live, now: SystemTime) -> String {
    let mut o = Out(String::new());
    o.one(
        "kennel_boot_cycle",
        "gauge",
        "The current boot cycle (1 is the first boot; 0 before it).",
        live.cycle,
    );
    o.head(
        "kennel_lifecycle_state",
        "gauge",
        "The watchdog lifecycle state of the current cycle (1 for the state it is in).",
    );
    for s in STATES {
        o.value("kennel_lifecycle_state", &[("state", s.as_str())], u8::from(s == live.state));
    }
    o.one(
        "kennel_paused",
        "gauge",
        "1 while the VM is paused (stop, or a pause action).",
        u8::from(live.paused),
    );
    o.one("kennel_watchdog_armed", "gauge", "1 while the guest's watchdog is enabled.", u8::from(live.armed));
    if let Some(t) = c.last_first_feed {
        o.one(
            "kennel_last_first_feed_timestamp_seconds",
            "gauge",
            "When the guest last fed its watchdog for the first time in a cycle (Unix time).",
            secs(t),
        );
        o.one(
            "kennel_seconds_since_last_first_feed",
            "gauge",
            "Seconds since the last first feed, as of the file's writing.",
            now.duration_since(t).unwrap_or_default().as_secs_f64(),
        );
    }
    o.one("kennel_watchdog_feeds_total", "counter", "Feeds of the running watchdog, all cycles.", live.feeds);
    o.one(
        "kennel_watchdog_first_feeds_total",
        "counter",
        "Cycles whose guest fed its watchdog (WATCHDOG_FIRST_FEED).",
        c.first_feeds,
    );
    o.one(
        "kennel_watchdog_pretimeouts_total",
        "counter",
        "Times the watchdog's first stage ran out.",
        c.pretimeouts,
    );
    o.by(
        "kennel_watchdog_expiries_total",
        "Watchdog expiries (WATCHDOG), by the action taken.",
        "action",
        &c.expiries,
    );
    o.by("kennel_boots_total", "Boot cycles started (BOOT), by cause.", "cause", &c.boots);
    o.by("kennel_resets_total", "VM resets (RESET), by cause.", "cause", &c.resets);
    o.by(
        "kennel_boot_deadlines_missed_total",
        "Cycles that missed their boot deadline (BOOT_DEADLINE_MISSED), by the action taken.",
        "action",
        &c.deadlines_missed,
    );
    o.by("kennel_faults_injected_total", "Faults injected (FAULT_INJECTED), by fault.", "fault", &c.faults);
    if let Some(b) = live.snapshot_bytes {
        o.one(
            "kennel_disk_snapshot_bytes",
            "gauge",
            "With --rootfs-snapshot: the guest's disk writes held in kennel's memory (at most 1 GiB).",
            b,
        );
    }
    o.0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{json, Map, Value};

    use super::*;

    fn ev(name: EventName, data: Value, at: u64) -> Event {
        let Value::Object(map) = data else { return Event::new(name, Map::new(), UNIX_EPOCH) };
        Event::new(name, map, UNIX_EPOCH + Duration::from_secs(at))
    }

    fn live(state: State) -> Live {
        Live { cycle: 2, state, paused: false, armed: true, feeds: 41, snapshot_bytes: None }
    }

    #[test]
    fn counters_follow_the_events() {
        let mut c = Counts::default();
        for e in [
            ev(EventName::Boot, json!({"cycle": 1, "cause": "power-on"}), 10),
            ev(EventName::WatchdogFirstFeed, json!({"cycle": 1}), 12),
            ev(EventName::WatchdogPretimeout, json!({"suppressed": 2}), 20),
            ev(EventName::Watchdog, json!({"action": "reset"}), 21),
            ev(EventName::Reset, json!({"cause": "watchdog"}), 21),
            ev(EventName::Boot, json!({"cycle": 2, "cause": "watchdog"}), 21),
            ev(EventName::BootDeadlineMissed, json!({"action": "none"}), 40),
            ev(EventName::FaultInjected, json!({"spec": "blk:read-error,cycle=2"}), 22),
            ev(EventName::FaultInjected, json!({"spec": "boot:cmdline=root=/dev/x panic=1,cycle=2"}), 22),
        ] {
            c.observe(&e);
        }
        let text = render(&c, &live(State::Armed), UNIX_EPOCH + Duration::from_secs(50));
        for line in [
            "kennel_boot_cycle 2",
            "kennel_lifecycle_state{state=\"armed\"} 1",
            "kennel_lifecycle_state{state=\"alive\"} 0",
            "kennel_watchdog_armed 1",
            "kennel_watchdog_feeds_total 41",
            "kennel_watchdog_first_feeds_total 1",
            "kennel_watchdog_pretimeouts_total 3",
            "kennel_watchdog_expiries_total{action=\"reset\"} 1",
            "kennel_boots_total{cause=\"power-on\"} 1",
            "kennel_boots_total{cause=\"watchdog\"} 1",
            "kennel_resets_total{cause=\"watchdog\"} 1",
            "kennel_boot_deadlines_missed_total{action=\"none\"} 1",
            "kennel_faults_injected_total{fault=\"blk:read-error\"} 1",
            "kennel_faults_injected_total{fault=\"boot:cmdline\"} 1",
            "kennel_last_first_feed_timestamp_seconds 12",
            "kennel_seconds_since_last_first_feed 38",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn the_snapshots_memory_shows_only_with_a_snapshot() {
        let c = Counts::default();
        let at = UNIX_EPOCH;
        assert!(!render(&c, &live(State::Alive), at).contains("kennel_disk_snapshot_bytes"));
        let snap = Live { snapshot_bytes: Some(4096), ..live(State::Alive) };
        let text = render(&c, &snap, at);
        assert!(text.lines().any(|l| l == "kennel_disk_snapshot_bytes 4096"), "{text}");
        assert!(text.contains("# TYPE kennel_disk_snapshot_bytes gauge"), "{text}");
    }

    #[test]
    fn every_sample_has_help_and_type_before_it() {
        let mut c = Counts::default();
        c.observe(&ev(EventName::Reset, json!({"cause": "qmp"}), 1));
        let text = render(&c, &live(State::Alive), UNIX_EPOCH);
        let mut typed = std::collections::BTreeSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap_or_default().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap_or_default();
                assert!(typed.contains(name), "{name} has no TYPE before it");
            }
        }
        assert!(!text.contains("kennel_last_first_feed"), "no first feed yet, so no time of one");
    }

    #[test]
    fn hostile_label_values_are_escaped() {
        let mut c = Counts::default();
        c.observe(&ev(EventName::Reset, json!({"cause": "a\"b\\c\nd"}), 1));
        let text = render(&c, &live(State::Alive), UNIX_EPOCH);
        assert!(text.contains(r#"kennel_resets_total{cause="a\"b\\c\nd"} 1"#), "{text}");
    }

    #[test]
    fn the_file_is_replaced_whole_and_the_temporary_is_gone() {
        let dir = std::env::temp_dir().join(format!("kennel-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("vm.prom");
        let mut m = MetricsFile::create(&path).expect("create");
        assert!(std::fs::read_to_string(&path).expect("read").contains("kennel_boot_cycle 0"));
        m.observe(&ev(EventName::Boot, json!({"cause": "power-on"}), 1));
        m.write(&live(State::Booting), SystemTime::now()).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("kennel_boot_cycle 2") && text.ends_with('\n'), "{text}");
        let left: Vec<_> = std::fs::read_dir(&dir).expect("ls").flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("vm.prom")]);
        drop(m);
        std::fs::remove_dir_all(&dir).expect("clean");
    }

    #[test]
    fn a_path_without_a_file_name_is_a_clear_error() {
        let e = MetricsFile::create(Path::new("/")).expect_err("no file name");
        assert!(e.to_string().contains("has no file name"), "{e}");
    }
}
