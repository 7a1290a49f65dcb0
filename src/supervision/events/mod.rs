//! One event type, fanned out to every sink.
//!
//! The lifecycle produces [`Event`]s; the VMM hands each to its [`EventHub`],
//! which writes it to every registered [`EventSink`]: the JSON-lines file
//! (`--events PATH`), the log, and the QMP clients (`crate::interfaces::qmp::QmpEventSink`).
//! Events are shaped like QEMU's QMP events so existing consumers can read them:
//! `{"event": NAME, "data": {...}, "timestamp": {"seconds": S, "microseconds": U}}`.

mod file;
mod log_sink;
mod name;

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

pub use file::JsonLinesSink;
pub use log_sink::LogSink;
pub use name::EventName;

/// Errors of the event sinks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open event file {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("cannot write event to {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// One event, as every sink sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub name: EventName,
    pub data: Map<String, Value>,
    /// Host wall-clock time the event happened (not the VM's paused clock:
    /// operators correlate these timestamps with other logs).
    pub wall: SystemTime,
}

impl Event {
    pub fn new(name: EventName, data: Map<String, Value>, wall: SystemTime) -> Self {
        Self { name, data, wall }
    }

    /// The `data` member's field, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.data.get(key)
    }

    /// Seconds and microseconds since the Unix epoch, as QMP reports them.
    /// A wall clock set before 1970 is reported as the epoch rather than
    /// failing: a timestamp is never worth losing an event over.
    pub fn timestamp(&self) -> (u64, u32) {
        let since = self.wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        (since.as_secs(), since.subsec_micros())
    }

    /// The event as a QMP JSON value.
    pub fn to_json(&self) -> Value {
        let (seconds, microseconds) = self.timestamp();
        serde_json::json!({
            "event": self.name.as_str(),
            "data": Value::Object(self.data.clone()),
            "timestamp": {"seconds": seconds, "microseconds": microseconds},
        })
    }

    /// The event as one line of compact JSON, members in the order QMP
    /// documents them (event, data, timestamp), without a line terminator.
    pub fn to_line(&self) -> String {
        let (seconds, microseconds) = self.timestamp();
        // Serialising a &str and a Map of Values cannot fail.
        let name = serde_json::to_string(self.name.as_str()).unwrap_or_default();
        let data = serde_json::to_string(&self.data).unwrap_or_else(|_| String::from("{}"));
        format!(
            "{{\"event\":{name},\"data\":{data},\"timestamp\":{{\"seconds\":{seconds},\"microseconds\":{microseconds}}}}}"
        )
    }
}

impl fmt::Display for Event {
    /// Human-readable: `NAME key=value ...`, with `cycle` first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name.as_str())?;
        let cycle = self.data.get("cycle");
        if let Some(c) = cycle {
            write!(f, " cycle={c}")?;
        }
        for (k, v) in self.data.iter().filter(|(k, _)| k.as_str() != "cycle") {
            match v {
                // Strings without quotes read better in a log line.
                Value::String(s) => write!(f, " {k}={s}")?,
                other => write!(f, " {k}={other}")?,
            }
        }
        Ok(())
    }
}

/// Somewhere events go.
pub trait EventSink: Send {
    /// A short name for log messages about this sink's failures.
    fn name(&self) -> &str;
    fn emit(&mut self, event: &Event) -> Result<(), Error>;
}

struct SinkSlot {
    sink: Box<dyn EventSink>,
    failures: u64,
}

/// Writes every event to every sink. A failing sink never stops the others
/// or the VM: its failures are logged (the first, then every 1000th, since a
/// full disk would otherwise flood the log at the guest's pace) and counted.
#[derive(Default)]
pub struct EventHub {
    sinks: Vec<SinkSlot>,
}

impl fmt::Debug for EventHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.sinks.iter().map(|s| s.sink.name()).collect();
        f.debug_struct("EventHub").field("sinks", &names).finish()
    }
}

impl EventHub {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_sink(&mut self, sink: Box<dyn EventSink>) {
        self.sinks.push(SinkSlot { sink, failures: 0 });
    }

    pub fn emit(&mut self, event: &Event) {
        for slot in &mut self.sinks {
            if let Err(e) = slot.sink.emit(event) {
                slot.failures += 1;
                if slot.failures % 1000 == 1 {
                    log::warn!(
                        "event sink {} failed ({} failures so far): {e}",
                        slot.sink.name(),
                        slot.failures
                    );
                }
            }
        }
    }

    pub fn emit_all<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) {
        for e in events {
            self.emit(e);
        }
    }

    /// Total failed writes over all sinks, for tests and diagnostics.
    pub fn failures(&self) -> u64 {
        self.sinks.iter().map(|s| s.failures).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn sample() -> Event {
        let mut data = Map::new();
        data.insert("cycle".into(), json!(2));
        data.insert("cause".into(), json!("watchdog"));
        Event::new(EventName::Boot, data, UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789))
    }

    #[test]
    fn line_has_qmp_shape_and_order() {
        let line = sample().to_line();
        assert_eq!(
            line,
            r#"{"event":"BOOT","data":{"cause":"watchdog","cycle":2},"timestamp":{"seconds":1700000000,"microseconds":123456}}"#
        );
        let parsed: Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(parsed, sample().to_json());
    }

    #[test]
    fn wall_before_epoch_is_clamped() {
        let e = Event::new(EventName::Stop, Map::new(), UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(e.timestamp(), (0, 0));
    }

    #[test]
    fn display_puts_cycle_first_and_unquotes_strings() {
        assert_eq!(sample().to_string(), "BOOT cycle=2 cause=watchdog");
    }

    struct Recorder(Arc<Mutex<Vec<&'static str>>>);
    impl EventSink for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        fn emit(&mut self, event: &Event) -> Result<(), Error> {
            self.0
                .lock()
                .map_err(|_| Error::Write {
                    path: "poisoned".into(),
                    source: std::io::Error::other("poisoned"),
                })?
                .push(event.name.as_str());
            Ok(())
        }
    }
    struct Failing;
    impl EventSink for Failing {
        fn name(&self) -> &str {
            "failing"
        }
        fn emit(&mut self, _: &Event) -> Result<(), Error> {
            Err(Error::Write { path: "nowhere".into(), source: std::io::Error::other("disk full") })
        }
    }

    #[test]
    fn hub_fans_out_and_survives_a_failing_sink() {
        let seen_a = Arc::new(Mutex::new(Vec::new()));
        let seen_b = Arc::new(Mutex::new(Vec::new()));
        let mut hub = EventHub::new();
        hub.add_sink(Box::new(Recorder(seen_a.clone())));
        hub.add_sink(Box::new(Failing));
        hub.add_sink(Box::new(Recorder(seen_b.clone())));
        let e = sample();
        hub.emit_all([&e, &e]);
        assert_eq!(*seen_a.lock().expect("lock"), vec!["BOOT", "BOOT"]);
        assert_eq!(*seen_b.lock().expect("lock"), vec!["BOOT", "BOOT"]);
        assert_eq!(hub.failures(), 2);
    }
}
