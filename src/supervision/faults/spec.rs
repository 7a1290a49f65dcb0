//! One `--fault SPEC`: its grammar (documented in `faults/mod.rs`) and parser.

use std::fmt;
use std::time::Duration;

use super::FaultError;

/// Longest duration a spec may give. A larger one is surely a typo, and
/// capping it means the VMM can add it to an `Instant` without overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// What a spec does.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// `blk:read-error`: reads fail once `after_sectors` sectors were read
    /// in the cycle (`None`: from the first read), only those touching
    /// `sectors` when given (a bad region of the disk).
    ReadError { after_sectors: Option<u64>, sectors: Option<SectorRange> },
    /// `blk:write-error`: the same for writes.
    WriteError { after_sectors: Option<u64>, sectors: Option<SectorRange> },
    /// `blk:flush-error`.
    FlushError,
    /// `blk:delay=DUR`: every request is delayed by this long.
    Delay(Duration),
    /// `boot:hang`: stop the vCPUs `after` this long past the cycle's boot
    /// start, or past its first watchdog feed (`since=first-feed`: "hangs
    /// once it is up", whatever the host's speed).
    Hang { after: Duration, since: HangSince },
    /// `boot:cmdline=TEXT`: replaces the user's kernel command line.
    Cmdline(String),
}

/// `sectors=START..END`: 512-byte sectors START up to, not including, END.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectorRange {
    pub start: u64,
    pub end: u64,
}

impl SectorRange {
    /// Whether a request of `count` sectors at `sector` touches the range.
    pub fn overlaps(self, sector: u64, count: u64) -> bool {
        sector < self.end && sector.saturating_add(count.max(1)) > self.start
    }
}

/// What a hang's `after` counts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HangSince {
    #[default]
    Boot,
    FirstFeed,
}

impl HangSince {
    pub fn as_str(self) -> &'static str {
        match self {
            HangSince::Boot => "boot",
            HangSince::FirstFeed => "first-feed",
        }
    }
}

impl FaultKind {
    /// The kind's name as written in a spec and in `FAULT_INJECTED.what`.
    pub fn what(&self) -> &'static str {
        match self {
            FaultKind::ReadError { .. } => "read-error",
            FaultKind::WriteError { .. } => "write-error",
            FaultKind::FlushError => "flush-error",
            FaultKind::Delay(_) => "delay",
            FaultKind::Hang { .. } => "hang",
            FaultKind::Cmdline(_) => "cmdline",
        }
    }

    /// Whether this is a `blk:` fault (the disk asks about those).
    pub fn is_block(&self) -> bool {
        matches!(
            self,
            FaultKind::ReadError { .. }
                | FaultKind::WriteError { .. }
                | FaultKind::FlushError
                | FaultKind::Delay(_)
        )
    }
}

/// The boot cycles a spec applies to: `first..=last` (`last: None`: no end).
/// Cycles count from 1 (the power-on boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cycles {
    pub first: u64,
    pub last: Option<u64>,
}

impl Cycles {
    /// Every cycle: what a spec without `cycle=` means.
    pub const ALL: Cycles = Cycles { first: 1, last: None };

    pub fn contains(&self, cycle: u64) -> bool {
        cycle >= self.first && self.last.is_none_or(|l| cycle <= l)
    }

    /// The first cycle both selectors contain, if any.
    pub fn first_common(&self, other: &Cycles) -> Option<u64> {
        let start = self.first.max(other.first);
        (self.contains(start) && other.contains(start)).then_some(start)
    }
}

impl fmt::Display for Cycles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.last {
            None if self.first == 1 => write!(f, "every cycle"),
            None => write!(f, "cycles {}..", self.first),
            Some(l) if l == self.first => write!(f, "cycle {l}"),
            Some(l) => write!(f, "cycles {}..{l}", self.first),
        }
    }
}

/// A parsed `--fault` spec.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultSpec {
    /// The spec as the user wrote it: events quote it so the operator can
    /// tell which `--fault` fired.
    pub text: String,
    pub kind: FaultKind,
    pub cycles: Cycles,
    /// `blk:` faults only: each matching request is hit with this
    /// probability (`None`: always).
    pub probability: Option<f64>,
}

impl std::str::FromStr for FaultSpec {
    type Err = FaultError;
    fn from_str(s: &str) -> Result<Self, FaultError> {
        FaultSpec::parse(s)
    }
}

const BLK_KINDS: &str = "read-error, write-error, flush-error or delay=DURATION";
const BOOT_KINDS: &str = "hang or cmdline=TEXT";
const KIND_NAMES: [&str; 6] = ["read-error", "write-error", "flush-error", "delay", "hang", "cmdline"];
const KEYS: [&str; 6] = ["cycle", "probability", "after-sectors", "sectors", "after", "since"];

/// A `key=value` item after the kind.
struct Item<'a> {
    key: &'a str,
    value: &'a str,
}

impl FaultSpec {
    /// Parses one spec. Errors quote the spec and name the problem.
    pub fn parse(text: &str) -> Result<FaultSpec, FaultError> {
        let spec = text.to_string();
        if text.trim().is_empty() {
            return Err(FaultError::Empty);
        }
        let Some((target, rest)) = text.split_once(':') else {
            return Err(FaultError::MissingTarget { spec });
        };
        let target = target.trim();
        let expected = match target {
            "blk" => BLK_KINDS,
            "boot" => BOOT_KINDS,
            _ => return Err(FaultError::UnknownTarget { spec, target: target.to_string() }),
        };
        if rest.trim().is_empty() {
            return Err(FaultError::MissingKind { spec, target: target.to_string(), expected });
        }

        // The command line is free text with spaces, `=` and commas of its
        // own (console=ttyS0,115200), so it cannot be split on commas.
        if target == "boot" {
            if let Some(value) = rest.trim_start().strip_prefix("cmdline=") {
                return parse_cmdline(text, value);
            }
        }

        let mut parts = rest.split(',');
        let kind_item = parts.next().unwrap_or_default().trim();
        let (kind_name, kind_value) = match kind_item.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (kind_item, None),
        };
        let items = collect_items(text, parts)?;
        let mut keys = Keys { spec: text, items, used: Vec::new() };

        let kind = match (target, kind_name) {
            ("blk", "read-error" | "write-error" | "flush-error") | ("boot", "hang") => {
                if let Some(v) = kind_value {
                    return Err(FaultError::UnexpectedValue {
                        spec,
                        kind: kind_name.to_string(),
                        value: v.to_string(),
                    });
                }
                match kind_name {
                    "read-error" => FaultKind::ReadError {
                        after_sectors: keys.number("after-sectors")?,
                        sectors: keys.take("sectors").map(|v| parse_sectors(text, v)).transpose()?,
                    },
                    "write-error" => FaultKind::WriteError {
                        after_sectors: keys.number("after-sectors")?,
                        sectors: keys.take("sectors").map(|v| parse_sectors(text, v)).transpose()?,
                    },
                    "flush-error" => FaultKind::FlushError,
                    _ => FaultKind::Hang {
                        after: match keys.take("after") {
                            Some(v) => parse_duration(text, "after", v)?,
                            None => Duration::ZERO,
                        },
                        since: match keys.take("since") {
                            None | Some("boot") => HangSince::Boot,
                            Some("first-feed") => HangSince::FirstFeed,
                            Some(v) => return Err(FaultError::BadSince { spec, value: v.to_string() }),
                        },
                    },
                }
            }
            ("blk", "delay") => match kind_value {
                Some(v) if !v.is_empty() => FaultKind::Delay(parse_duration(text, "delay", v)?),
                _ => {
                    return Err(FaultError::MissingValue {
                        spec,
                        key: "delay".into(),
                        example: "delay=200ms",
                    })
                }
            },
            ("boot", "cmdline") => {
                return Err(FaultError::MissingValue { spec, key: "cmdline".into(), example: "cmdline=TEXT" })
            }
            _ => {
                return Err(FaultError::UnknownKind {
                    spec,
                    target: target.to_string(),
                    kind: kind_name.to_string(),
                    expected,
                })
            }
        };

        let cycles = match keys.take("cycle") {
            Some(v) => parse_cycles(text, v)?,
            None => Cycles::ALL,
        };
        let probability = if kind.is_block() {
            match keys.take("probability") {
                Some(v) => Some(parse_probability(text, v)?),
                None => None,
            }
        } else {
            None
        };
        keys.finish(&kind)?;
        Ok(FaultSpec { text: spec, kind, cycles, probability })
    }
}

/// `boot:cmdline=`: the value is everything up to the last `,cycle=`.
fn parse_cmdline(text: &str, value: &str) -> Result<FaultSpec, FaultError> {
    let (cmdline, cycles) = match value.rfind(",cycle=") {
        Some(i) => {
            let sel = value.get(i + ",cycle=".len()..).unwrap_or_default();
            (value.get(..i).unwrap_or_default(), parse_cycles(text, sel)?)
        }
        None => (value, Cycles::ALL),
    };
    if cmdline.trim().is_empty() {
        return Err(FaultError::MissingValue {
            spec: text.to_string(),
            key: "cmdline".into(),
            example: "cmdline=TEXT",
        });
    }
    // `cmdline=a b,cycles=2` would otherwise silently boot the kernel with
    // "a b,cycles=2": catch keys that are ours (or near misses) at the end.
    if let Some((_, tail)) = cmdline.rsplit_once(',') {
        let key = tail.split('=').next().unwrap_or_default().trim();
        if KEYS.contains(&key) || key == "cycles" {
            return Err(FaultError::MisplacedKey { spec: text.to_string(), tail: tail.to_string() });
        }
    }
    Ok(FaultSpec {
        text: text.to_string(),
        kind: FaultKind::Cmdline(cmdline.to_string()),
        cycles,
        probability: None,
    })
}

fn collect_items<'a>(spec: &str, parts: impl Iterator<Item = &'a str>) -> Result<Vec<Item<'a>>, FaultError> {
    let mut items: Vec<Item<'a>> = Vec::new();
    for part in parts {
        let part = part.trim();
        if part.is_empty() {
            return Err(FaultError::EmptyItem { spec: spec.to_string() });
        }
        let (key, value) = match part.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (part, ""),
        };
        if KIND_NAMES.contains(&key) {
            return Err(FaultError::SecondKind { spec: spec.to_string(), kind: key.to_string() });
        }
        if !KEYS.contains(&key) {
            return Err(FaultError::UnknownKey {
                spec: spec.to_string(),
                key: key.to_string(),
                hint: hint(key),
            });
        }
        if items.iter().any(|i| i.key == key) {
            return Err(FaultError::DuplicateKey { spec: spec.to_string(), key: key.to_string() });
        }
        if value.is_empty() {
            return Err(FaultError::MissingValue {
                spec: spec.to_string(),
                key: key.to_string(),
                example: example(key),
            });
        }
        items.push(Item { key, value });
    }
    Ok(items)
}

/// The keys of one spec, consumed by the kind that accepts them; whatever is
/// left over does not apply to that kind.
struct Keys<'a> {
    spec: &'a str,
    items: Vec<Item<'a>>,
    used: Vec<&'a str>,
}

impl<'a> Keys<'a> {
    fn take(&mut self, key: &'a str) -> Option<&'a str> {
        self.used.push(key);
        self.items.iter().find(|i| i.key == key).map(|i| i.value)
    }

    fn number(&mut self, key: &'a str) -> Result<Option<u64>, FaultError> {
        self.take(key).map(|v| parse_u64(self.spec, key, v)).transpose()
    }

    fn finish(self, kind: &FaultKind) -> Result<(), FaultError> {
        match self.items.iter().find(|i| !self.used.contains(&i.key)) {
            Some(i) => Err(FaultError::KeyNotAllowed {
                spec: self.spec.to_string(),
                key: i.key.to_string(),
                kind: kind.what(),
            }),
            None => Ok(()),
        }
    }
}

fn hint(key: &str) -> String {
    let near = match key {
        "cycles" | "cyc" => "cycle",
        "p" | "prob" | "probabilty" => "probability",
        "after_sectors" | "after-sector" => "after-sectors",
        "sector" | "range" => "sectors",
        "seed" => return " (the seed is --fault-seed N, for all specs)".into(),
        _ => return " (expected cycle, probability, after-sectors, sectors, after or since)".into(),
    };
    format!(" (did you mean `{near}`?)")
}

fn example(key: &str) -> &'static str {
    match key {
        "cycle" => "cycle=2, cycle=2.. or cycle=2..4",
        "probability" => "probability=0.1",
        "after-sectors" => "after-sectors=4096",
        "sectors" => "sectors=2048..4096",
        _ => "after=5s",
    }
}

fn parse_u64(spec: &str, key: &str, value: &str) -> Result<u64, FaultError> {
    // u64's FromStr takes a leading '+'; a spec has no use for one.
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_number(spec, key, value));
    }
    value.parse().map_err(|_| bad_number(spec, key, value))
}

fn bad_number(spec: &str, key: &str, value: &str) -> FaultError {
    FaultError::BadNumber { spec: spec.to_string(), key: key.to_string(), value: value.to_string() }
}

/// `N`, `N..` or `N..M` (inclusive), cycles counted from 1.
fn parse_cycles(spec: &str, value: &str) -> Result<Cycles, FaultError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(FaultError::MissingValue {
            spec: spec.into(),
            key: "cycle".into(),
            example: example("cycle"),
        });
    }
    let bad = || FaultError::BadCycle { spec: spec.to_string(), value: value.to_string() };
    let num = |s: &str| parse_u64(spec, "cycle", s).map_err(|_| bad());
    let (first, last) = match value.split_once("..") {
        None => {
            let n = num(value)?;
            (n, Some(n))
        }
        Some((a, "")) => (num(a)?, None),
        Some((a, b)) => (num(a)?, Some(num(b)?)),
    };
    if first == 0 || last == Some(0) {
        return Err(FaultError::CycleZero { spec: spec.to_string(), value: value.to_string() });
    }
    if last.is_some_and(|l| l < first) {
        return Err(FaultError::EmptyRange { spec: spec.to_string(), value: value.to_string() });
    }
    Ok(Cycles { first, last })
}

/// `START..END`, sector numbers, END after START.
fn parse_sectors(spec: &str, value: &str) -> Result<SectorRange, FaultError> {
    let bad = || FaultError::BadSectors { spec: spec.to_string(), value: value.to_string() };
    let (a, b) = value.trim().split_once("..").ok_or_else(bad)?;
    let start = parse_u64(spec, "sectors", a.trim()).map_err(|_| bad())?;
    let end = parse_u64(spec, "sectors", b.trim()).map_err(|_| bad())?;
    if end <= start {
        return Err(bad());
    }
    Ok(SectorRange { start, end })
}

/// A whole number followed by `us`, `ms` or `s`, at most [`MAX_DURATION`].
fn parse_duration(spec: &str, key: &str, value: &str) -> Result<Duration, FaultError> {
    let bad = |reason: &'static str| FaultError::BadDuration {
        spec: spec.to_string(),
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };
    let split = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    if digits.is_empty() {
        return Err(bad("expected a whole number followed by us, ms or s (e.g. 500ms)"));
    }
    let n: u64 = digits.parse().map_err(|_| bad("number too large"))?;
    let d = match unit {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "" => return Err(bad("missing unit: add us, ms or s")),
        _ => return Err(bad("unknown unit: use us, ms or s (whole numbers: 1500ms, not 1.5s)")),
    };
    if d > MAX_DURATION {
        return Err(bad("longer than 24h"));
    }
    Ok(d)
}

fn parse_probability(spec: &str, value: &str) -> Result<f64, FaultError> {
    let p: f64 = value.parse().map_err(|_| bad_number(spec, "probability", value))?;
    // NaN and infinities parse as f64 but are no probability.
    if !(0.0..=1.0).contains(&p) {
        return Err(FaultError::ProbabilityRange { spec: spec.to_string(), value: value.to_string() });
    }
    Ok(p)
}
