//! The `--fault` language on arbitrary text.
//!
//! Invariants:
//! - parsing never panics and is deterministic; a parsed spec keeps its text;
//! - values are in range: cycles from 1 with first <= last, probability in
//!   [0, 1], durations at most `MAX_DURATION`;
//! - round trip: a canonical spelling of a parsed spec (every key explicit,
//!   durations in microseconds) parses back to the same kind, cycles and
//!   probability;
//! - `FaultPlan::parse_all` accepts exactly the lists whose specs all parse
//!   and whose boot faults of one kind share no cycle; its answers for each
//!   cycle agree with the specs.
#![no_main]

use libfuzzer_sys::fuzz_target;

use kennel::supervision::faults::{
    BlockOp, Cycles, FaultDecision, FaultError, FaultKind, FaultPlan, FaultSpec, MAX_DURATION,
};

fn canonical(s: &FaultSpec) -> String {
    let cycles = match s.cycles.last {
        Some(l) => format!("{}..{l}", s.cycles.first),
        None => format!("{}..", s.cycles.first),
    };
    let us = |d: std::time::Duration| format!("{}us", d.as_micros());
    let mut out = match &s.kind {
        FaultKind::Cmdline(c) => return format!("boot:cmdline={c},cycle={cycles}"),
        FaultKind::Hang { after, since } => {
            format!("boot:hang,after={},since={}", us(*after), since.as_str())
        }
        FaultKind::ReadError { after_sectors, sectors } | FaultKind::WriteError { after_sectors, sectors } => {
            let mut k = format!("blk:{}", s.kind.what());
            if let Some(n) = after_sectors {
                k += &format!(",after-sectors={n}");
            }
            if let Some(r) = sectors {
                k += &format!(",sectors={}..{}", r.start, r.end);
            }
            k
        }
        FaultKind::FlushError => "blk:flush-error".to_string(),
        FaultKind::Delay(d) => format!("blk:delay={}", us(*d)),
    };
    out += &format!(",cycle={cycles}");
    if let Some(p) = s.probability {
        out += &format!(",probability={p:?}");
    }
    out
}

fn check_spec(text: &str, s: &FaultSpec) {
    assert_eq!(s.text, text);
    assert!(s.cycles.first >= 1 && s.cycles.last.is_none_or(|l| l >= s.cycles.first), "{s:?}");
    if let Some(p) = s.probability {
        assert!((0.0..=1.0).contains(&p) && s.kind.is_block(), "{s:?}");
    }
    match &s.kind {
        FaultKind::Delay(d) | FaultKind::Hang { after: d, .. } => assert!(*d <= MAX_DURATION, "{s:?}"),
        FaultKind::Cmdline(c) => assert!(!c.trim().is_empty(), "{s:?}"),
        _ => {}
    }
    let c = canonical(s);
    match FaultSpec::parse(&c) {
        Ok(r) => assert_eq!(
            (&r.kind, r.cycles, r.probability),
            (&s.kind, s.cycles, s.probability),
            "`{text}` -> `{c}` does not round-trip"
        ),
        Err(e) => panic!("`{text}` parsed, but its canonical form `{c}` does not: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let one = FaultSpec::parse(&text);
    assert_eq!(one, FaultSpec::parse(&text), "parsing is not deterministic");
    if let Ok(s) = &one {
        check_spec(&text, s);
    }
    let _ = one.as_ref().map_err(FaultError::to_string);

    // One spec per line: a run's --fault list.
    let list: Vec<String> = text.split('\n').take(8).map(String::from).collect();
    let parsed: Vec<_> = list.iter().map(|l| FaultSpec::parse(l)).collect();
    match FaultPlan::parse_all(&list, 42) {
        Ok(plan) => {
            assert!(parsed.iter().all(Result::is_ok));
            let specs = plan.specs();
            assert_eq!(specs.len(), list.len());
            let mut cycles: Vec<u64> = vec![1, 2, 3, u64::MAX];
            cycles.extend(specs.iter().map(|s| s.cycles.first));
            for &cycle in &cycles {
                let applies = |s: &&FaultSpec| s.cycles.contains(cycle);
                let cmdlines: Vec<_> = specs
                    .iter()
                    .filter(applies)
                    .filter(|s| matches!(s.kind, FaultKind::Cmdline(_)))
                    .collect();
                let hangs: Vec<_> = specs
                    .iter()
                    .filter(applies)
                    .filter(|s| matches!(s.kind, FaultKind::Hang { .. }))
                    .collect();
                assert!(cmdlines.len() <= 1 && hangs.len() <= 1, "conflicting specs accepted");
                assert_eq!(plan.cmdline_for(cycle).is_some(), cmdlines.len() == 1);
                assert_eq!(plan.hang_for(cycle).is_some(), hangs.len() == 1);
                let blk = plan.block_faults(cycle);
                for (op, kind) in [
                    (BlockOp::Read, "read-error"),
                    (BlockOp::Write, "write-error"),
                    (BlockOp::Flush, "flush-error"),
                    (BlockOp::GetId, ""),
                ] {
                    for sector in [0, 7, u64::MAX - 1] {
                        let (d, _) = blk.decide(op, sector, 1);
                        let can_fail = specs.iter().filter(applies).any(|s| s.kind.what() == kind);
                        let can_delay =
                            specs.iter().filter(applies).any(|s| matches!(s.kind, FaultKind::Delay(_)));
                        match d {
                            FaultDecision::Proceed => {}
                            FaultDecision::IoError => assert!(can_fail, "{op:?} failed with no spec for it"),
                            FaultDecision::Delay(_) => {
                                assert!(can_delay, "{op:?} delayed with no delay spec")
                            }
                        }
                    }
                }
            }
        }
        Err(_) => {
            // Either a spec is bad, or two boot faults of a kind share a cycle.
            if parsed.iter().all(Result::is_ok) {
                let specs: Vec<_> = parsed.into_iter().map(Result::unwrap).collect();
                let clash = specs.iter().enumerate().any(|(i, a)| {
                    specs[i + 1..].iter().any(|b| {
                        std::mem::discriminant(&a.kind) == std::mem::discriminant(&b.kind)
                            && matches!(a.kind, FaultKind::Cmdline(_) | FaultKind::Hang { .. })
                            && a.cycles.first_common(&b.cycles).is_some()
                    })
                });
                assert!(clash, "parse_all refused specs that each parse and do not clash");
            }
        }
    }
    let _ = Cycles::ALL;
});
