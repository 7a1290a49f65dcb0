//! The `--events PATH` sink: one JSON object per line, appended.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{Error, Event, EventSink};

/// Appends each event as one line of JSON.
///
/// Each line goes to the kernel in one `write` on a file opened with
/// `O_APPEND`, so `tail -f | jq` never sees half a line from us, concurrent
/// appenders do not interleave inside a line, and an event is in the page
/// cache before `emit` returns: killing the VMM right after an event loses
/// nothing. (No fsync: surviving a host crash is not worth a disk flush per
/// event at the guest's pace.)
#[derive(Debug)]
pub struct JsonLinesSink {
    file: File,
    path: PathBuf,
}

impl JsonLinesSink {
    /// Opens (creating if needed) `path` for appending.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        // Owner-only when created, like the QMP socket: the events describe
        // the guest and the operator's supervision of it.
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| Error::Open { path: path.display().to_string(), source })?;
        Ok(Self { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl EventSink for JsonLinesSink {
    fn name(&self) -> &str {
        "events-file"
    }

    fn emit(&mut self, event: &Event) -> Result<(), Error> {
        let mut line = event.to_line();
        line.push('\n');
        // write_all only loops if the kernel takes part of the line, which a
        // regular file does only when the disk is full; File has no user-space
        // buffer, so the flush is a no-op kept for types that might have one.
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|source| Error::Write { path: self.path.display().to_string(), source })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::{json, Map, Value};
    use vmm_sys_util::tempdir::TempDir;

    use super::*;

    fn event(name: &'static str, cycle: u64) -> Event {
        let mut data = Map::new();
        data.insert("cycle".into(), json!(cycle));
        let name = crate::supervision::events::EventName::parse(name).expect("a kennel event name");
        Event::new(name, data, UNIX_EPOCH + Duration::from_secs(10))
    }

    #[test]
    fn appends_one_line_per_event_and_keeps_existing_content() {
        let dir = TempDir::new_with_prefix("/tmp/kennel-events").expect("tempdir");
        let path = dir.as_path().join("events.jsonl");
        std::fs::write(&path, "{\"old\":1}\n").expect("seed");
        let mut sink = JsonLinesSink::open(&path).expect("open");
        sink.emit(&event("BOOT", 1)).expect("emit");
        // Visible at once, without dropping the sink: a reader tailing the
        // file (or a VMM killed now) sees the complete line.
        sink.emit(&event("WATCHDOG_ARMED", 1)).expect("emit");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "{\"old\":1}");
        let second: Value = serde_json::from_str(lines[2]).expect("json");
        assert_eq!(second["event"], "WATCHDOG_ARMED");
        assert_eq!(second["data"]["cycle"], 1);
        assert_eq!(second["timestamp"]["seconds"], 10);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn reopening_appends() {
        let dir = TempDir::new_with_prefix("/tmp/kennel-events").expect("tempdir");
        let path = dir.as_path().join("e.jsonl");
        JsonLinesSink::open(&path).expect("open").emit(&event("BOOT", 1)).expect("emit");
        JsonLinesSink::open(&path).expect("open").emit(&event("BOOT", 2)).expect("emit");
        assert_eq!(std::fs::read_to_string(&path).expect("read").lines().count(), 2);
    }

    #[test]
    fn open_error_names_the_path() {
        let err = JsonLinesSink::open("/nonexistent-dir-kennel/events.jsonl").expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent-dir-kennel/events.jsonl"), "{msg}");
    }
}
