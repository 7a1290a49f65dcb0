//! `kennel timeline EVENTS.jsonl -o timeline.svg`: draws a run's boot cycles
//! from its event log, so an operator sees at a glance which cycles came back
//! (first watchdog feed), which the watchdog or the boot deadline ended, and
//! where faults were injected.
//!
//! # Input
//!
//! One QMP-shaped event per line:
//! `{"event": NAME, "data": {"cycle": N, ...}, "timestamp": {"seconds": S, "microseconds": U}}`.
//! Blank lines are ignored. Any other line that is not such an event is an
//! error naming its line number: a log that does not parse is not one we can
//! vouch for, and a timeline that silently drops an event (say the one
//! WATCHDOG expiry) would mislead. `data` may be absent; an event without
//! `data.cycle` belongs to the cycle of the latest BOOT before it (a BOOT
//! without one starts the next cycle; events before any BOOT go to a
//! "before boot" row). Unknown event names are drawn as a grey marker.
//!
//! # Output
//!
//! A standalone SVG, the same bytes for the same input: one band per cycle
//! from its BOOT to its RESET/SHUTDOWN (or the next cycle's start, or the
//! last event), markers with a legend, each marker's `<title>` tooltip
//! holding the event's JSON line.

mod marker;
mod svg;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde_json::Value;

pub use svg::render;

/// A problem with the input or output, naming the file or line.
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("line {line}: {problem}: `{text}`")]
    Line { line: usize, problem: String, text: String },
    #[error("no events: the input is empty or only blank lines")]
    NoEvents,
    /// A parse error of `run`'s input, with the path in front.
    #[error("{}: {error}", path.display())]
    Input { path: PathBuf, error: Box<TimelineError> },
}

/// One event of the log.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineEvent {
    /// 1-based line number in the input.
    pub line: usize,
    pub name: String,
    /// The host time, in microseconds since the Unix epoch.
    pub time_us: u64,
    /// `data.cycle`, when the event carries one.
    pub cycle: Option<u64>,
    /// `data` (`Null` when absent).
    pub data: Value,
    /// The line as written (trimmed): what the marker's tooltip shows.
    pub json: String,
}

impl TimelineEvent {
    /// A string member of `data`, if present.
    pub fn data_str(&self, key: &str) -> Option<&str> {
        self.data.get(key).and_then(Value::as_str)
    }

    /// A whole-number member of `data`, if present.
    pub fn data_u64(&self, key: &str) -> Option<u64> {
        self.data.get(key).and_then(Value::as_u64)
    }
}

/// Parses a JSON-lines event log (see the module docs for what is accepted).
pub fn parse_jsonl(text: &str) -> Result<Vec<TimelineEvent>, TimelineError> {
    let mut events = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        events.push(parse_line(line, trimmed)?);
    }
    if events.is_empty() {
        return Err(TimelineError::NoEvents);
    }
    Ok(events)
}

fn parse_line(line: usize, text: &str) -> Result<TimelineEvent, TimelineError> {
    let bad = |problem: String| TimelineError::Line { line, problem, text: shorten(text, 80) };
    let v: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON ({e})")))?;
    let Value::Object(obj) = v else {
        return Err(bad("not a JSON object".into()));
    };
    let name = match obj.get("event") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(bad("`event` is not a non-empty string".into())),
        None => return Err(bad("no `event` member".into())),
    };
    let time_us = timestamp(obj.get("timestamp")).map_err(|p| bad(p.into()))?;
    let data = obj.get("data").cloned().unwrap_or(Value::Null);
    let cycle = match data.get("cycle") {
        None => None,
        Some(c) => Some(c.as_u64().ok_or_else(|| bad("`data.cycle` is not a whole number".into()))?),
    };
    Ok(TimelineEvent { line, name, time_us, cycle, data, json: shorten(text, 2000) })
}

/// QMP's `{"seconds": S, "microseconds": U}` as microseconds.
fn timestamp(ts: Option<&Value>) -> Result<u64, &'static str> {
    let ts = ts.ok_or("no `timestamp` member")?;
    let secs =
        ts.get("seconds").and_then(Value::as_u64).ok_or("`timestamp.seconds` is not a whole number")?;
    let us = ts
        .get("microseconds")
        .and_then(Value::as_u64)
        .filter(|&u| u < 1_000_000)
        .ok_or("`timestamp.microseconds` is not a whole number below 1000000")?;
    secs.checked_mul(1_000_000).and_then(|s| s.checked_add(us)).ok_or("`timestamp` is out of range")
}

/// At most `max` characters, cut at a character boundary, with an ellipsis.
pub(crate) fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or_default()),
        None => s.to_string(),
    }
}

/// Reads `input`, writes the SVG timeline to `output`.
pub fn run(input: &Path, output: &Path) -> Result<(), TimelineError> {
    let text = std::fs::read_to_string(input)
        .map_err(|source| TimelineError::Read { path: input.to_path_buf(), source })?;
    let events = parse_jsonl(&text)
        .map_err(|e| TimelineError::Input { path: input.to_path_buf(), error: Box::new(e) })?;
    std::fs::write(output, render(&events))
        .map_err(|source| TimelineError::Write { path: output.to_path_buf(), source })
}
