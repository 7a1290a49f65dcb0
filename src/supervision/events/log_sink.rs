//! Events as human-readable log lines.

use super::{Error, Event, EventSink};

/// Logs each event as one `info` line, e.g.
/// `event WATCHDOG_FIRST_FEED cycle=2 since_armed_ms=40 since_boot_ms=2300`.
#[derive(Debug, Default)]
pub struct LogSink;

impl LogSink {
    pub fn new() -> Self {
        Self
    }

    /// The line `emit` logs, separate so tests need not install a logger.
    pub fn format(event: &Event) -> String {
        format!("event {event}")
    }
}

impl EventSink for LogSink {
    fn name(&self) -> &str {
        "log"
    }

    fn emit(&mut self, event: &Event) -> Result<(), Error> {
        log::info!("{}", Self::format(event));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use serde_json::{json, Map};

    use super::*;

    #[test]
    fn one_readable_line() {
        let mut data = Map::new();
        data.insert("cycle".into(), json!(3));
        data.insert("action".into(), json!("reset"));
        data.insert("armed".into(), json!(false));
        let e =
            Event::new(crate::supervision::events::EventName::BootDeadlineMissed, data, SystemTime::now());
        let line = LogSink::format(&e);
        assert_eq!(line, "event BOOT_DEADLINE_MISSED cycle=3 action=reset armed=false");
        assert!(!line.contains('\n'));
        assert!(LogSink::new().emit(&e).is_ok());
    }
}
