//! Per-cycle disk fault decisions: which request fails or waits, and which
//! of those become `FAULT_INJECTED` events.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde_json::json;

use kennel_devices::virtio_blk::{BlockOp, FaultDecision};

use super::spec::{FaultKind, FaultSpec};

/// One injection worth an event: "what, where". Only some injections are
/// reported (see [`BlockFaultState::decide`]); `occurrence` says how many
/// this spec has injected in the cycle so far, this one included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injected {
    /// The `--fault` spec text.
    pub spec: String,
    /// The fault kind: "read-error", "write-error", "flush-error", "delay".
    pub what: &'static str,
    pub op: BlockOp,
    pub sector: u64,
    pub sectors: u64,
    pub cycle: u64,
    pub occurrence: u64,
}

impl Injected {
    /// The `data` member of the `FAULT_INJECTED` event, the shape
    /// `kennel timeline` reads.
    pub fn event_data(&self) -> serde_json::Value {
        json!({
            "cycle": self.cycle,
            "spec": self.spec,
            "what": self.what,
            "op": self.op.name(),
            "sector": self.sector,
            "sectors": self.sectors,
            "occurrence": self.occurrence,
        })
    }
}

/// How often one spec fired in a cycle, for an end-of-cycle summary of
/// what the rate limit left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultCount {
    pub spec: String,
    pub what: &'static str,
    pub injected: u64,
    /// Injections returned by `decide` as events.
    pub reported: u64,
}

impl FaultCount {
    pub fn suppressed(&self) -> u64 {
        self.injected.saturating_sub(self.reported)
    }
}

/// A guest that retries a failed read 10 000 times must not produce 10 000
/// events, yet the first ones and signs of the storm going on matter: report
/// occurrences 1..=3, then 10, 100, 1000, ...
fn worth_reporting(n: u64) -> bool {
    if n <= 3 {
        return true;
    }
    let mut p = 10u64;
    while p < n {
        match p.checked_mul(10) {
            Some(q) => p = q,
            None => return false,
        }
    }
    p == n
}

/// SplitMix64: tiny, good enough to pick which requests fail, and the same
/// sequence for the same seed on every host.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One stream per (seed, cycle, spec): a cycle's draws do not depend on how
/// many requests earlier cycles made, nor on the other specs.
fn stream(seed: u64, cycle: u64, index: usize) -> Rng {
    let mut r = Rng(seed);
    let a = r.next_u64();
    let mut r = Rng(a ^ cycle);
    let b = r.next_u64();
    Rng(b ^ (index as u64).wrapping_mul(0xd1b5_4a32_d192_ed03))
}

#[derive(Debug)]
struct Rule {
    text: String,
    kind: FaultKind,
    probability: Option<f64>,
}

impl Rule {
    fn applies_to(&self, op: BlockOp) -> bool {
        match self.kind {
            FaultKind::ReadError { .. } => op == BlockOp::Read,
            FaultKind::WriteError { .. } => op == BlockOp::Write,
            FaultKind::FlushError => op == BlockOp::Flush,
            // "every request is delayed": a slow disk is slow for all.
            FaultKind::Delay(_) => true,
            FaultKind::Hang { .. } | FaultKind::Cmdline(_) => false,
        }
    }
}

#[derive(Debug)]
struct Counters {
    /// Sectors actually transferred this cycle (failed requests move none).
    read: u64,
    written: u64,
    rngs: Vec<Rng>,
    injected: Vec<u64>,
    reported: Vec<u64>,
}

/// The disk faults of one boot cycle. Build a new one per cycle with
/// [`super::FaultPlan::block_faults`]; share it between vCPU threads.
#[derive(Debug)]
pub struct BlockFaultState {
    cycle: u64,
    rules: Vec<Rule>,
    counters: Mutex<Counters>,
}

impl BlockFaultState {
    pub(super) fn new(specs: &[FaultSpec], seed: u64, cycle: u64) -> Self {
        let rules: Vec<Rule> = specs
            .iter()
            .filter(|s| s.kind.is_block() && s.cycles.contains(cycle))
            .map(|s| Rule { text: s.text.clone(), kind: s.kind.clone(), probability: s.probability })
            .collect();
        let n = rules.len();
        let counters = Counters {
            read: 0,
            written: 0,
            rngs: (0..n).map(|i| stream(seed, cycle, i)).collect(),
            injected: vec![0; n],
            reported: vec![0; n],
        };
        Self { cycle, rules, counters: Mutex::new(counters) }
    }

    /// Whether any disk fault applies this cycle (if not, `decide` always
    /// says `Proceed`).
    pub fn is_active(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Decides one request of `sectors` sectors at `sector` (0 and 0 for
    /// flush and get-id). Every applicable spec is consulted in command-line
    /// order: an error beats a delay (the first erroring spec is the one
    /// counted), delays of several specs add up. The second value is an event
    /// to emit, rate-limited per spec (occurrences 1, 2, 3, 10, 100, ...).
    pub fn decide(&self, op: BlockOp, sector: u64, sectors: u64) -> (FaultDecision, Option<Injected>) {
        if !self.is_active() {
            return (FaultDecision::Proceed, None);
        }
        // Nothing panics while the lock is held, but a poisoned lock would
        // still hold consistent counters: carry on with them.
        let mut c = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        let mut error: Option<usize> = None;
        let mut delays: Vec<usize> = Vec::new();
        let mut delay = Duration::ZERO;
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.applies_to(op) {
                continue;
            }
            let done = match op {
                BlockOp::Read => c.read,
                BlockOp::Write => c.written,
                BlockOp::Flush | BlockOp::GetId => 0,
            };
            if let FaultKind::ReadError { after_sectors, sectors: range }
            | FaultKind::WriteError { after_sectors, sectors: range } = rule.kind
            {
                if after_sectors.is_some_and(|n| done < n)
                    || range.is_some_and(|r| !r.overlaps(sector, sectors))
                {
                    continue;
                }
            }
            // Draw whenever the rule applies, whatever other rules decide, so
            // each spec's sequence depends only on the requests it sees.
            if let Some(p) = rule.probability {
                let draw = c.rngs.get_mut(i).map_or(1.0, Rng::next_f64);
                if draw >= p {
                    continue;
                }
            }
            match rule.kind {
                FaultKind::Delay(d) => {
                    delay = delay.saturating_add(d);
                    delays.push(i);
                }
                _ => {
                    error.get_or_insert(i);
                }
            }
        }

        let (decision, fired) = match error {
            Some(i) => (FaultDecision::IoError, vec![i]),
            None if !delays.is_empty() => (FaultDecision::Delay(delay), delays),
            None => (FaultDecision::Proceed, Vec::new()),
        };
        if decision != FaultDecision::IoError {
            match op {
                BlockOp::Read => c.read = c.read.saturating_add(sectors),
                BlockOp::Write => c.written = c.written.saturating_add(sectors),
                BlockOp::Flush | BlockOp::GetId => {}
            }
        }

        let mut event = None;
        for i in fired {
            let (Some(rule), Some(count)) = (self.rules.get(i), c.injected.get_mut(i)) else { continue };
            *count = count.saturating_add(1);
            let occurrence = *count;
            if event.is_none() && worth_reporting(occurrence) {
                if let Some(r) = c.reported.get_mut(i) {
                    *r = r.saturating_add(1);
                }
                event = Some(Injected {
                    spec: rule.text.clone(),
                    what: rule.kind.what(),
                    op,
                    sector,
                    sectors,
                    cycle: self.cycle,
                    occurrence,
                });
            }
        }
        (decision, event)
    }

    /// Per spec that applies this cycle: how often it fired and how many of
    /// those were reported. Spec order is command-line order.
    pub fn counts(&self) -> Vec<FaultCount> {
        let c = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        self.rules
            .iter()
            .zip(c.injected.iter().zip(c.reported.iter()))
            .map(|(r, (&injected, &reported))| FaultCount {
                spec: r.text.clone(),
                what: r.kind.what(),
                injected,
                reported,
            })
            .collect()
    }

    /// Injections the rate limit kept quiet, over all specs.
    pub fn suppressed(&self) -> u64 {
        self.counts().iter().map(FaultCount::suppressed).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_first_three_then_powers_of_ten() {
        let reported: Vec<u64> = (1..=100_000).filter(|&n| worth_reporting(n)).collect();
        assert_eq!(reported, vec![1, 2, 3, 10, 100, 1000, 10_000, 100_000]);
        assert!(!worth_reporting(u64::MAX));
    }

    #[test]
    fn rng_is_uniform_enough_and_seeded() {
        let mut a = stream(1, 2, 0);
        let mut b = stream(1, 2, 0);
        let xs: Vec<f64> = (0..1000).map(|_| a.next_f64()).collect();
        let ys: Vec<f64> = (0..1000).map(|_| b.next_f64()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / 1000.0;
        assert!((0.45..0.55).contains(&mean), "mean {mean}");
        assert_ne!(stream(1, 2, 0).next_u64(), stream(1, 3, 0).next_u64());
        assert_ne!(stream(1, 2, 0).next_u64(), stream(1, 2, 1).next_u64());
        assert_ne!(stream(1, 2, 0).next_u64(), stream(2, 2, 0).next_u64());
    }
}
