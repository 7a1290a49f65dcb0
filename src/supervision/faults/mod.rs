//! Fault injection: the `--fault SPEC` language and the pure decisions the
//! VMM asks of it. No I/O here: the VMM applies the decisions and emits the
//! events.
//!
//! # Grammar
//!
//! ```text
//! SPEC      := TARGET ':' KIND (',' KEY '=' VALUE)*
//! blk KIND  := read-error | write-error | flush-error | delay=DURATION
//! boot KIND := hang | cmdline=TEXT
//! KEY       := cycle=CYCLES                  any kind; absent: every cycle
//!            | probability=P                 blk kinds; P in [0, 1]
//!            | after-sectors=N               read-error, write-error
//!            | sectors=START..END            read-error, write-error: only
//!                                            requests touching these sectors
//!            | after=DURATION                hang; absent: 0
//!            | since=boot|first-feed         hang: what `after` counts from;
//!                                            absent: boot (the cycle's start)
//! CYCLES    := N | N.. | N..M                inclusive, N >= 1, N <= M
//! DURATION  := whole number + us | ms | s    at most 24h (1500ms, not 1.5s)
//! ```
//!
//! One kind per spec; `--fault` is repeatable. Keys may come in any order,
//! each at most once; spaces around items are ignored.
//!
//! `boot:cmdline=TEXT` is the exception: TEXT is free text (spaces, `=`,
//! commas of its own), so it is everything after `cmdline=` up to the LAST
//! `,cycle=` in the spec, taken verbatim; without `,cycle=` it runs to the
//! end of the spec and applies to every cycle. No quoting: the shell's
//! quotes are enough.
//!
//! ```text
//! boot:cmdline=root=/dev/nonexistent panic=1,cycle=2
//!     -> "root=/dev/nonexistent panic=1" in cycle 2
//! boot:cmdline=console=ttyS0,115200 quiet,cycle=2..
//!     -> "console=ttyS0,115200 quiet" in cycles 2 and after
//! boot:cmdline=console=ttyS0,115200
//!     -> "console=ttyS0,115200" in every cycle
//! boot:cmdline=quiet,cycles=2
//!     -> error: if the text's own last comma-separated piece starts with
//!        `cycle`, `cycles`, `probability`, `after`, `after-sectors` or `since`, it
//!        is taken for a misplaced key, not kernel text
//! boot:cmdline=a,cycle=9 b,cycle=4
//!     -> the same error (`cycle=9 b`): ambiguous, so refused
//! ```
//!
//! Two `boot:cmdline` (or two `boot:hang`) specs naming the same cycle are
//! an error. Disk specs stack: see [`BlockFaultState::decide`].
//!
//! # Cycles
//!
//! Cycle 1 is the power-on boot; each reset starts the next. The VMM asks
//! [`FaultPlan::cmdline_for`], [`FaultPlan::hang_for`] and
//! [`FaultPlan::block_faults`] at the start of every cycle.

mod block;
pub mod disk_hook;
mod hang;
mod spec;
#[cfg(test)]
mod tests;

use std::time::Duration;

use serde_json::json;

pub use block::{BlockFaultState, FaultCount, Injected};
pub use hang::HangFault;
/// The disk's own request kinds and decisions: the fault policy speaks the
/// device's language, so nothing is translated on the way.
pub use kennel_devices::virtio_blk::{BlockOp, FaultDecision};
pub use spec::{Cycles, FaultKind, FaultSpec, HangSince, SectorRange, MAX_DURATION};

/// `--fault-seed`'s default: fixed, so two runs with the same specs inject
/// the same faults.
pub const DEFAULT_SEED: u64 = 0x6b65_6e6e_656c; // "kennel"

/// A `--fault` spec that cannot be used, naming the spec and the problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultError {
    #[error("--fault: empty spec")]
    Empty,
    #[error("--fault `{spec}`: missing target: expected `blk:KIND` or `boot:KIND`")]
    MissingTarget { spec: String },
    #[error("--fault `{spec}`: unknown target `{target}` (expected `blk` or `boot`)")]
    UnknownTarget { spec: String, target: String },
    #[error("--fault `{spec}`: missing fault kind after `{target}:` (expected {expected})")]
    MissingKind { spec: String, target: String, expected: &'static str },
    #[error("--fault `{spec}`: unknown {target} fault `{kind}` (expected {expected})")]
    UnknownKind { spec: String, target: String, kind: String, expected: &'static str },
    #[error("--fault `{spec}`: `{kind}` takes no value, found `{kind}={value}`")]
    UnexpectedValue { spec: String, kind: String, value: String },
    #[error("--fault `{spec}`: one fault kind per spec: give `{kind}` its own --fault")]
    SecondKind { spec: String, kind: String },
    #[error("--fault `{spec}`: unknown key `{key}`{hint}")]
    UnknownKey { spec: String, key: String, hint: String },
    #[error("--fault `{spec}`: `{key}` does not apply to {kind}")]
    KeyNotAllowed { spec: String, key: String, kind: &'static str },
    #[error("--fault `{spec}`: `{key}` needs a value (e.g. {example})")]
    MissingValue { spec: String, key: String, example: &'static str },
    #[error("--fault `{spec}`: `{key}` given twice")]
    DuplicateKey { spec: String, key: String },
    #[error("--fault `{spec}`: empty item (a stray comma?)")]
    EmptyItem { spec: String },
    #[error("--fault `{spec}`: bad number `{value}` for `{key}`")]
    BadNumber { spec: String, key: String, value: String },
    #[error("--fault `{spec}`: bad duration `{value}` for `{key}`: {reason}")]
    BadDuration { spec: String, key: String, value: String, reason: &'static str },
    #[error(
        "--fault `{spec}`: bad `sectors={value}` (expected START..END, sector numbers, END after START)"
    )]
    BadSectors { spec: String, value: String },
    #[error("--fault `{spec}`: `since={value}` must be `boot` or `first-feed`")]
    BadSince { spec: String, value: String },
    #[error("--fault `{spec}`: probability `{value}` is outside [0, 1]")]
    ProbabilityRange { spec: String, value: String },
    #[error("--fault `{spec}`: cycles count from 1, but `cycle={value}` names cycle 0")]
    CycleZero { spec: String, value: String },
    #[error("--fault `{spec}`: `cycle={value}` is an empty range (its start is after its end)")]
    EmptyRange { spec: String, value: String },
    #[error("--fault `{spec}`: bad cycle selector `{value}` (expected N, N.. or N..M)")]
    BadCycle { spec: String, value: String },
    #[error(
        "--fault `{spec}`: the command line ends in `{tail}`, which looks like a misplaced key; \
         boot:cmdline takes only a final `,cycle=`"
    )]
    MisplacedKey { spec: String, tail: String },
    #[error("--fault `{first}` and --fault `{second}` both set the {what} of cycle {cycle}")]
    Conflict { first: String, second: String, what: &'static str, cycle: u64 },
}

/// Which boot fault an event is about, for [`FaultPlan::boot_event_data`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootFault {
    Cmdline,
    Hang,
}

/// Every `--fault` of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultPlan {
    specs: Vec<FaultSpec>,
    seed: u64,
}

impl FaultPlan {
    /// Parses every spec (stopping at the first bad one) and checks that no
    /// two boot faults of one kind claim the same cycle.
    pub fn parse_all(specs: &[String], seed: u64) -> Result<Self, FaultError> {
        let specs = specs.iter().map(|s| FaultSpec::parse(s)).collect::<Result<Vec<_>, _>>()?;
        for (i, a) in specs.iter().enumerate() {
            for b in specs.iter().skip(i + 1) {
                let what = match (&a.kind, &b.kind) {
                    (FaultKind::Cmdline(_), FaultKind::Cmdline(_)) => "kernel command line",
                    (FaultKind::Hang { .. }, FaultKind::Hang { .. }) => "hang time",
                    _ => continue,
                };
                if let Some(cycle) = a.cycles.first_common(&b.cycles) {
                    return Err(FaultError::Conflict {
                        first: a.text.clone(),
                        second: b.text.clone(),
                        what,
                        cycle,
                    });
                }
            }
        }
        Ok(Self { specs, seed })
    }

    pub fn specs(&self) -> &[FaultSpec] {
        &self.specs
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    fn boot_spec(&self, cycle: u64, fault: BootFault) -> Option<&FaultSpec> {
        self.specs.iter().find(|s| {
            s.cycles.contains(cycle)
                && matches!(
                    (fault, &s.kind),
                    (BootFault::Cmdline, FaultKind::Cmdline(_)) | (BootFault::Hang, FaultKind::Hang { .. })
                )
        })
    }

    /// The `boot:cmdline` text that replaces the user's command line in
    /// `cycle` (the VMM still appends its own host settings).
    pub fn cmdline_for(&self, cycle: u64) -> Option<&str> {
        match self.boot_spec(cycle, BootFault::Cmdline).map(|s| &s.kind) {
            Some(FaultKind::Cmdline(c)) => Some(c),
            _ => None,
        }
    }

    /// How long after `cycle`'s boot start `boot:hang` stops the vCPUs.
    pub fn hang_for(&self, cycle: u64) -> Option<(Duration, HangSince)> {
        match self.boot_spec(cycle, BootFault::Hang).map(|s| &s.kind) {
            Some(FaultKind::Hang { after, since }) => Some((*after, *since)),
            _ => None,
        }
    }

    /// Fresh disk fault state for `cycle`: counters start at zero and the
    /// random draws are a function of (seed, cycle, spec), so a cycle is
    /// reproducible whatever happened before it.
    pub fn block_faults(&self, cycle: u64) -> BlockFaultState {
        BlockFaultState::new(&self.specs, self.seed, cycle)
    }

    /// The `data` of the `FAULT_INJECTED` event for a boot fault applied in
    /// `cycle` (`None` if that fault does not apply to the cycle).
    pub fn boot_event_data(&self, cycle: u64, fault: BootFault) -> Option<serde_json::Value> {
        let spec = self.boot_spec(cycle, fault)?;
        Some(match &spec.kind {
            FaultKind::Cmdline(c) => {
                json!({"cycle": cycle, "spec": spec.text, "what": "cmdline", "cmdline": c})
            }
            FaultKind::Hang { after, since } => json!({
                "cycle": cycle, "spec": spec.text, "what": "hang",
                "after_ms": u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
                "since": since.as_str(),
            }),
            _ => return None,
        })
    }
}
