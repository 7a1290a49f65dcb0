//! Every event name kennel emits, typed: the lifecycle, the controller, the
//! timeline and the tests all name events through [`EventName`], so a
//! misspelt name is a compile error and a new event is one variant here.

use std::fmt;

/// An event's QMP name. Six are QEMU's own (`WATCHDOG`, `RESET`,
/// `SHUTDOWN`, `POWERDOWN`, `STOP`, `RESUME`), spelt and shaped as QEMU
/// reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventName {
    Boot,
    WatchdogArmed,
    WatchdogFirstFeed,
    WatchdogDisarmed,
    WatchdogPretimeout,
    /// QEMU's: the watchdog's second stage ran out.
    Watchdog,
    BootDeadlineMissed,
    Reset,
    /// QEMU's: the power button was pressed.
    Powerdown,
    Shutdown,
    Stop,
    Resume,
    FaultInjected,
}

impl EventName {
    pub const ALL: [EventName; 13] = [
        EventName::Boot,
        EventName::WatchdogArmed,
        EventName::WatchdogFirstFeed,
        EventName::WatchdogDisarmed,
        EventName::WatchdogPretimeout,
        EventName::Watchdog,
        EventName::BootDeadlineMissed,
        EventName::Reset,
        EventName::Powerdown,
        EventName::Shutdown,
        EventName::Stop,
        EventName::Resume,
        EventName::FaultInjected,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EventName::Boot => "BOOT",
            EventName::WatchdogArmed => "WATCHDOG_ARMED",
            EventName::WatchdogFirstFeed => "WATCHDOG_FIRST_FEED",
            EventName::WatchdogDisarmed => "WATCHDOG_DISARMED",
            EventName::WatchdogPretimeout => "WATCHDOG_PRETIMEOUT",
            EventName::Watchdog => "WATCHDOG",
            EventName::BootDeadlineMissed => "BOOT_DEADLINE_MISSED",
            EventName::Reset => "RESET",
            EventName::Powerdown => "POWERDOWN",
            EventName::Shutdown => "SHUTDOWN",
            EventName::Stop => "STOP",
            EventName::Resume => "RESUME",
            EventName::FaultInjected => "FAULT_INJECTED",
        }
    }

    /// The name as written in an events file; `None` for a name kennel
    /// never emits (a newer kennel's, or another tool's).
    pub fn parse(name: &str) -> Option<EventName> {
        Self::ALL.into_iter().find(|n| n.as_str() == name)
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_and_names_are_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for n in EventName::ALL {
            assert_eq!(EventName::parse(n.as_str()), Some(n));
            assert!(seen.insert(n.as_str()), "{n} twice");
            assert!(n.as_str().bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{n}");
        }
        assert_eq!(EventName::parse("boot"), None);
    }
}
