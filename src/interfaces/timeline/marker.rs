//! What each event looks like on the timeline, and text escaping.

use crate::supervision::events::EventName;

/// The kinds of marker, one per event the operator cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Boot,
    Armed,
    FirstFeed,
    Pretimeout,
    Expired,
    DeadlineMissed,
    Reset,
    Powerdown,
    Shutdown,
    Fault,
    Stop,
    Resume,
    Disarmed,
    Other,
}

/// Legend order: the watchdog story first, then the rest.
pub(super) const LEGEND: [Kind; 14] = [
    Kind::Boot,
    Kind::Armed,
    Kind::FirstFeed,
    Kind::Pretimeout,
    Kind::Expired,
    Kind::DeadlineMissed,
    Kind::Reset,
    Kind::Powerdown,
    Kind::Shutdown,
    Kind::Fault,
    Kind::Stop,
    Kind::Resume,
    Kind::Disarmed,
    Kind::Other,
];

pub(super) const GREEN: &str = "#1a9c3a";
pub(super) const RED: &str = "#d62728";
pub(super) const ORANGE: &str = "#e8710a";
const BLUE: &str = "#1f6fd1";
const PURPLE: &str = "#8e44ad";
const GREY: &str = "#6b7280";

impl Kind {
    pub(super) fn of(event: &str) -> Kind {
        match EventName::parse(event) {
            Some(EventName::Boot) => Kind::Boot,
            Some(EventName::WatchdogArmed) => Kind::Armed,
            Some(EventName::WatchdogFirstFeed) => Kind::FirstFeed,
            Some(EventName::WatchdogPretimeout) => Kind::Pretimeout,
            Some(EventName::Watchdog) => Kind::Expired,
            Some(EventName::BootDeadlineMissed) => Kind::DeadlineMissed,
            Some(EventName::Reset) => Kind::Reset,
            Some(EventName::Powerdown) => Kind::Powerdown,
            Some(EventName::Shutdown) => Kind::Shutdown,
            Some(EventName::FaultInjected) => Kind::Fault,
            Some(EventName::Stop) => Kind::Stop,
            Some(EventName::Resume) => Kind::Resume,
            Some(EventName::WatchdogDisarmed) => Kind::Disarmed,
            None => Kind::Other,
        }
    }

    /// The marker's `class`, stable for tests and for styling by hand.
    pub(super) fn class(self) -> &'static str {
        match self {
            Kind::Boot => "boot",
            Kind::Armed => "armed",
            Kind::FirstFeed => "first-feed",
            Kind::Pretimeout => "pretimeout",
            Kind::Expired => "watchdog-expired",
            Kind::DeadlineMissed => "deadline-missed",
            Kind::Reset => "reset",
            Kind::Powerdown => "powerdown",
            Kind::Shutdown => "shutdown",
            Kind::Fault => "fault",
            Kind::Stop => "stop",
            Kind::Resume => "resume",
            Kind::Disarmed => "disarmed",
            Kind::Other => "other",
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Kind::Boot => "boot",
            Kind::Armed => "watchdog armed",
            Kind::FirstFeed => "first feed (guest is back)",
            Kind::Pretimeout => "pretimeout",
            Kind::Expired => "watchdog expired",
            Kind::DeadlineMissed => "boot deadline missed",
            Kind::Reset => "reset",
            Kind::Powerdown => "power button pressed",
            Kind::Shutdown => "shutdown",
            Kind::Fault => "fault injected",
            Kind::Stop => "stop (vCPUs paused)",
            Kind::Resume => "resume",
            Kind::Disarmed => "watchdog disarmed",
            Kind::Other => "other event",
        }
    }

    /// Markers drawn later sit on top: the reset bar underneath everything,
    /// the first feed above everything.
    pub(super) fn layer(self) -> u8 {
        match self {
            Kind::Reset | Kind::Shutdown => 0,
            Kind::Other | Kind::Stop | Kind::Resume | Kind::Disarmed | Kind::Boot | Kind::Powerdown => 1,
            Kind::Fault | Kind::Armed | Kind::Pretimeout => 2,
            Kind::DeadlineMissed | Kind::Expired => 3,
            Kind::FirstFeed => 4,
        }
    }

    /// The marker's shape, centred on (0, 0), about 20 px across.
    pub(super) fn shape(self) -> String {
        match self {
            // Just left of the band start, pointing into it.
            Kind::Boot => format!(r##"<path d="M-11,-7 L-1,0 L-11,7 Z" fill="{GREY}"/>"##),
            Kind::Armed => format!(r##"<path d="M0,-7 L7,0 L0,7 L-7,0 Z" fill="{BLUE}"/>"##),
            Kind::Disarmed => {
                format!(
                    r##"<path d="M0,-6 L6,0 L0,6 L-6,0 Z" fill="#fff" stroke="{BLUE}" stroke-width="2"/>"##
                )
            }
            Kind::FirstFeed => format!(
                r##"<circle r="10" fill="{GREEN}" stroke="#fff" stroke-width="1.5"/><path d="M-5,0.5 L-1.5,4 L5,-4" fill="none" stroke="#fff" stroke-width="2.6" stroke-linecap="round" stroke-linejoin="round"/>"##
            ),
            Kind::Pretimeout => {
                r##"<path d="M0,-8 L7.5,6 L-7.5,6 Z" fill="#f2c200" stroke="#8a6d00"/>"##.into()
            }
            Kind::Expired => format!(
                r##"<circle r="9" fill="{RED}"/><path d="M-4,-4 L4,4 M4,-4 L-4,4" stroke="#fff" stroke-width="2.5" stroke-linecap="round"/>"##
            ),
            Kind::DeadlineMissed => format!(
                r##"<circle r="8.5" fill="{ORANGE}"/><path d="M0,-5 L0,0 L3.5,2.5" fill="none" stroke="#fff" stroke-width="2" stroke-linecap="round"/>"##
            ),
            Kind::Reset => r##"<rect x="-2" y="-13" width="4" height="26" fill="#333"/>"##.into(),
            Kind::Shutdown => r##"<rect x="-6" y="-6" width="12" height="12" fill="#111"/>"##.into(),
            // A power symbol: a broken ring with a bar.
            Kind::Powerdown => r##"<path d="M-4.5,-4.5 A6.5,6.5 0 1 0 4.5,-4.5 M0,-8 L0,0" fill="none" stroke="#111" stroke-width="2.2" stroke-linecap="round"/>"##.into(),
            Kind::Fault => {
                format!(r##"<path d="M2,-9 L-5,1 L-0.5,1 L-2,9 L5,-1 L0.5,-1 Z" fill="{PURPLE}"/>"##)
            }
            Kind::Stop => format!(
                r##"<rect x="-5" y="-6" width="3.5" height="12" fill="{GREY}"/><rect x="1.5" y="-6" width="3.5" height="12" fill="{GREY}"/>"##
            ),
            Kind::Resume => {
                format!(r##"<path d="M-4,-6 L5,0 L-4,6 Z" fill="#fff" stroke="{GREY}" stroke-width="2"/>"##)
            }
            Kind::Other => r##"<circle r="5" fill="#fff" stroke="#9ca3af" stroke-width="2"/>"##.into(),
        }
    }
}

/// Text for XML content or attribute values: the five special characters
/// escaped, and characters XML 1.0 forbids (most control characters, which
/// a JSON string can carry as `\u0001`) replaced, so the file always parses.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}
