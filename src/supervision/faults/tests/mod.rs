use std::time::Duration;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cyc(first: u64, last: Option<u64>) -> Cycles {
    Cycles { first, last }
}

#[test]
fn good_specs() {
    use FaultKind::*;
    let one = |n| cyc(n, Some(n));
    let table: Vec<(&str, FaultKind, Cycles, Option<f64>)> = vec![
        ("blk:read-error,cycle=2", ReadError { after_sectors: None, sectors: None }, one(2), None),
        (
            "blk:read-error,after-sectors=4096,cycle=2..",
            ReadError { after_sectors: Some(4096), sectors: None },
            cyc(2, None),
            None,
        ),
        (
            "blk:read-error,cycle=2..4",
            ReadError { after_sectors: None, sectors: None },
            cyc(2, Some(4)),
            None,
        ),
        ("blk:read-error,cycle=3..3", ReadError { after_sectors: None, sectors: None }, one(3), None),
        (
            "blk:write-error,probability=0.1",
            WriteError { after_sectors: None, sectors: None },
            Cycles::ALL,
            Some(0.1),
        ),
        (
            "blk:write-error,probability=1",
            WriteError { after_sectors: None, sectors: None },
            Cycles::ALL,
            Some(1.0),
        ),
        (
            "blk:write-error,probability=0,after-sectors=8",
            WriteError { after_sectors: Some(8), sectors: None },
            Cycles::ALL,
            Some(0.0),
        ),
        (
            "blk:read-error,sectors=2048..4096,cycle=2..",
            ReadError { after_sectors: None, sectors: Some(SectorRange { start: 2048, end: 4096 }) },
            cyc(2, None),
            None,
        ),
        (
            "blk:write-error,sectors=0..1",
            WriteError { after_sectors: None, sectors: Some(SectorRange { start: 0, end: 1 }) },
            Cycles::ALL,
            None,
        ),
        ("blk:flush-error", FlushError, Cycles::ALL, None),
        ("blk:delay=200ms", Delay(ms(200)), Cycles::ALL, None),
        ("blk:delay=1s,cycle=3", Delay(ms(1000)), one(3), None),
        ("blk:delay=250us,probability=0.5", Delay(Duration::from_micros(250)), Cycles::ALL, Some(0.5)),
        ("blk:delay=0ms", Delay(Duration::ZERO), Cycles::ALL, None),
        ("blk:delay=86400s", Delay(MAX_DURATION), Cycles::ALL, None),
        (" blk : read-error , cycle = 2 ", ReadError { after_sectors: None, sectors: None }, one(2), None),
        ("boot:hang,cycle=3", Hang { after: Duration::ZERO, since: HangSince::Boot }, one(3), None),
        ("boot:hang,after=5s,cycle=3", Hang { after: ms(5000), since: HangSince::Boot }, one(3), None),
        ("boot:hang", Hang { after: Duration::ZERO, since: HangSince::Boot }, Cycles::ALL, None),
        (
            "boot:hang,after=5s,since=first-feed,cycle=1",
            Hang { after: ms(5000), since: HangSince::FirstFeed },
            one(1),
            None,
        ),
        (
            "boot:cmdline=root=/dev/nonexistent panic=1,cycle=2",
            Cmdline("root=/dev/nonexistent panic=1".into()),
            one(2),
            None,
        ),
        (
            "boot:cmdline=console=ttyS0,115200 quiet,cycle=2..",
            Cmdline("console=ttyS0,115200 quiet".into()),
            cyc(2, None),
            None,
        ),
        ("boot:cmdline=console=ttyS0,115200", Cmdline("console=ttyS0,115200".into()), Cycles::ALL, None),
        // Verbatim: surrounding spaces are the user's, as is a lone `=`.
        ("boot:cmdline= a=b = ,cycle=1", Cmdline(" a=b = ".into()), one(1), None),
        // Only the last `,cycle=` is ours; other commas belong to the text.
        ("boot:cmdline=a,b=c d,e,cycle=4", Cmdline("a,b=c d,e".into()), one(4), None),
        ("boot:cmdline=init=/bin/sh", Cmdline("init=/bin/sh".into()), Cycles::ALL, None),
    ];
    for (text, kind, cycles, probability) in table {
        let spec = FaultSpec::parse(text);
        let want = FaultSpec { text: text.to_string(), kind, cycles, probability };
        assert_eq!(spec, Ok(want), "{text}");
    }
}

#[test]
fn bad_specs() -> Result<(), String> {
    // (spec, the error's variant, words the message must contain)
    let table: &[(&str, &str, &[&str])] = &[
        ("", "Empty", &["empty"]),
        ("read-error", "MissingTarget", &["missing target", "`read-error`"]),
        ("disk:read-error", "UnknownTarget", &["unknown target `disk`", "`disk:read-error`"]),
        ("blk:", "MissingKind", &["missing fault kind", "read-error"]),
        ("blk:eat-data", "UnknownKind", &["unknown blk fault `eat-data`"]),
        ("boot:panic,cycle=2", "UnknownKind", &["unknown boot fault `panic`", "hang"]),
        ("boot:read-error", "UnknownKind", &["unknown boot fault"]),
        ("blk:hang", "UnknownKind", &["unknown blk fault `hang`"]),
        ("blk:read-error=1", "UnexpectedValue", &["takes no value"]),
        ("boot:hang=5s", "UnexpectedValue", &["`hang=5s`"]),
        ("blk:read-error,write-error", "SecondKind", &["own --fault", "`write-error`"]),
        ("blk:read-error,cycles=2", "UnknownKey", &["unknown key `cycles`", "did you mean `cycle`"]),
        ("blk:read-error,seed=4", "UnknownKey", &["--fault-seed"]),
        ("blk:read-error,colour=red", "UnknownKey", &["`colour`"]),
        (
            "blk:flush-error,after-sectors=8",
            "KeyNotAllowed",
            &["`after-sectors` does not apply to flush-error"],
        ),
        ("blk:delay=1s,after-sectors=8", "KeyNotAllowed", &["to delay"]),
        ("blk:read-error,after=5s", "KeyNotAllowed", &["`after`"]),
        ("boot:hang,probability=0.5", "KeyNotAllowed", &["to hang"]),
        ("boot:hang,after-sectors=5", "KeyNotAllowed", &["to hang"]),
        ("blk:read-error,cycle=", "MissingValue", &["`cycle` needs a value"]),
        ("blk:read-error,cycle", "MissingValue", &["`cycle` needs a value"]),
        ("blk:delay", "MissingValue", &["`delay` needs a value", "200ms"]),
        ("boot:hang,since=later", "BadSince", &["`since=later`", "first-feed"]),
        ("blk:read-error,since=boot", "KeyNotAllowed", &["`since`", "read-error"]),
        ("blk:delay=", "MissingValue", &["`delay`"]),
        ("boot:hang,after=", "MissingValue", &["`after`"]),
        ("boot:cmdline", "MissingValue", &["`cmdline` needs a value"]),
        ("boot:cmdline=", "MissingValue", &["`cmdline`"]),
        ("boot:cmdline=,cycle=2", "MissingValue", &["`cmdline`"]),
        ("blk:read-error,cycle=1,cycle=2", "DuplicateKey", &["`cycle` given twice"]),
        ("blk:write-error,probability=0.1,probability=0.2", "DuplicateKey", &["`probability`"]),
        ("blk:read-error,", "EmptyItem", &["stray comma"]),
        ("blk:read-error,,cycle=2", "EmptyItem", &["stray comma"]),
        ("blk:read-error,after-sectors=lots", "BadNumber", &["bad number `lots`", "`after-sectors`"]),
        ("blk:read-error,after-sectors=-1", "BadNumber", &["`-1`"]),
        ("blk:read-error,after-sectors=+1", "BadNumber", &["`+1`"]),
        ("blk:read-error,after-sectors=99999999999999999999", "BadNumber", &["99999999999999999999"]),
        ("blk:write-error,probability=often", "BadNumber", &["`often`"]),
        ("blk:write-error,probability=1.5", "ProbabilityRange", &["`1.5` is outside [0, 1]"]),
        ("blk:write-error,probability=-0.1", "ProbabilityRange", &["`-0.1`"]),
        ("blk:write-error,probability=NaN", "ProbabilityRange", &["`NaN`"]),
        ("blk:write-error,probability=inf", "ProbabilityRange", &["`inf`"]),
        ("blk:read-error,cycle=0", "CycleZero", &["count from 1", "`cycle=0`"]),
        ("blk:read-error,cycle=0..", "CycleZero", &["cycle 0"]),
        ("blk:read-error,cycle=5..3", "EmptyRange", &["`cycle=5..3` is an empty range"]),
        ("blk:read-error,cycle=..3", "BadCycle", &["`..3`", "N.."]),
        ("blk:read-error,sectors=4096", "BadSectors", &["`sectors=4096`", "START..END"]),
        ("blk:read-error,sectors=10..10", "BadSectors", &["`sectors=10..10`", "END after START"]),
        ("blk:read-error,sectors=10..2", "BadSectors", &["`sectors=10..2`"]),
        ("blk:read-error,sectors=a..b", "BadSectors", &["`sectors=a..b`"]),
        ("blk:read-error,sectors=1..", "BadSectors", &["`sectors=1..`"]),
        ("blk:delay=1ms,sectors=1..2", "KeyNotAllowed", &["`sectors` does not apply to delay"]),
        ("blk:read-error,range=1..2", "UnknownKey", &["did you mean `sectors`"]),
        ("blk:read-error,cycle=two", "BadCycle", &["`two`"]),
        ("blk:read-error,cycle=1...3", "BadCycle", &["`1...3`"]),
        ("blk:read-error,cycle=1..2..3", "BadCycle", &["`1..2..3`"]),
        ("blk:delay=200", "BadDuration", &["missing unit"]),
        ("blk:delay=1.5s", "BadDuration", &["1500ms"]),
        ("blk:delay=5min", "BadDuration", &["unknown unit"]),
        ("blk:delay=ms", "BadDuration", &["whole number"]),
        ("blk:delay=86401s", "BadDuration", &["24h"]),
        ("blk:delay=99999999999999999999999s", "BadDuration", &["too large"]),
        ("boot:hang,after=soon", "BadDuration", &["`soon`", "`after`"]),
        ("boot:cmdline=quiet,cycles=2", "MisplacedKey", &["`cycles=2`"]),
        ("boot:cmdline=quiet,cycle=2,after=1s", "BadCycle", &["`2,after=1s`"]),
        ("boot:cmdline=quiet,after=1s", "MisplacedKey", &["`after=1s`"]),
        ("boot:cmdline=quiet,cycle=0", "CycleZero", &["cycle 0"]),
        // Ambiguous: a second `,cycle=` inside the text is refused, not guessed at.
        ("boot:cmdline=x,cycle=9 y,cycle=4", "MisplacedKey", &["`cycle=9 y`"]),
    ];
    for (text, variant, words) in table {
        let err = match FaultSpec::parse(text) {
            Ok(s) => return Err(format!("`{text}` parsed as {s:?}")),
            Err(e) => e,
        };
        let debug = format!("{err:?}");
        assert!(debug.starts_with(variant), "`{text}`: wanted {variant}, got {debug}");
        let msg = err.to_string();
        for w in *words {
            assert!(msg.contains(w), "`{text}`: message `{msg}` lacks `{w}`");
        }
        if !text.is_empty() {
            assert!(msg.contains(&format!("`{text}`")), "`{text}`: message `{msg}` does not quote the spec");
        }
    }
    Ok(())
}

#[test]
fn cycles_display_and_overlap() {
    assert_eq!(Cycles::ALL.to_string(), "every cycle");
    assert_eq!(cyc(2, None).to_string(), "cycles 2..");
    assert_eq!(cyc(2, Some(2)).to_string(), "cycle 2");
    assert_eq!(cyc(2, Some(5)).to_string(), "cycles 2..5");
    assert_eq!(cyc(2, Some(5)).first_common(&cyc(5, None)), Some(5));
    assert_eq!(cyc(2, Some(4)).first_common(&cyc(5, None)), None);
    assert_eq!(cyc(7, None).first_common(&Cycles::ALL), Some(7));
}

fn plan(specs: &[&str]) -> Result<FaultPlan, FaultError> {
    FaultPlan::parse_all(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>(), DEFAULT_SEED)
}

#[test]
fn plan_answers_boot_questions_per_cycle() -> Result<(), FaultError> {
    let p = plan(&["boot:cmdline=root=/dev/nonexistent panic=1,cycle=2", "boot:hang,after=5s,cycle=3.."])?;
    assert_eq!(p.cmdline_for(1), None);
    assert_eq!(p.cmdline_for(2), Some("root=/dev/nonexistent panic=1"));
    assert_eq!(p.cmdline_for(3), None);
    assert_eq!(p.hang_for(2), None);
    assert_eq!(p.hang_for(3), Some((ms(5000), HangSince::Boot)));
    assert_eq!(p.hang_for(u64::MAX), Some((ms(5000), HangSince::Boot)));
    let ev = p.boot_event_data(3, BootFault::Hang);
    assert_eq!(ev.as_ref().and_then(|v| v["after_ms"].as_u64()), Some(5000));
    assert_eq!(ev.as_ref().and_then(|v| v["what"].as_str()), Some("hang"));
    let ev = p.boot_event_data(2, BootFault::Cmdline);
    assert_eq!(ev.as_ref().and_then(|v| v["cmdline"].as_str()), Some("root=/dev/nonexistent panic=1"));
    assert_eq!(p.boot_event_data(1, BootFault::Cmdline), None);
    assert!(!p.block_faults(2).is_active());
    assert!(plan(&[])?.is_empty());
    Ok(())
}

#[test]
fn plan_rejects_overlapping_boot_faults_and_names_both() -> Result<(), String> {
    let err = plan(&["boot:cmdline=a,cycle=2..4", "blk:flush-error", "boot:cmdline=b,cycle=4.."]);
    let Err(e @ FaultError::Conflict { cycle: 4, .. }) = err else { return Err(format!("{err:?}")) };
    let msg = e.to_string();
    assert!(
        msg.contains("`boot:cmdline=a,cycle=2..4`") && msg.contains("`boot:cmdline=b,cycle=4..`"),
        "{msg}"
    );
    assert!(matches!(plan(&["boot:hang", "boot:hang,cycle=9"]), Err(FaultError::Conflict { cycle: 9, .. })));
    // Disjoint cycles and different kinds are fine.
    assert!(plan(&["boot:hang,cycle=1", "boot:hang,cycle=2..", "boot:cmdline=x,cycle=1"]).is_ok());
    // The first bad spec is the one reported.
    assert!(matches!(plan(&["blk:flush-error", "disk:x"]), Err(FaultError::UnknownTarget { .. })));
    Ok(())
}

#[test]
fn read_error_hits_reads_of_its_cycles_only() -> Result<(), FaultError> {
    let p = plan(&["blk:read-error,cycle=2"])?;
    let c1 = p.block_faults(1);
    assert!(!c1.is_active());
    assert_eq!(c1.decide(BlockOp::Read, 0, 8).0, FaultDecision::Proceed);
    let c2 = p.block_faults(2);
    let (d, ev) = c2.decide(BlockOp::Read, 2048, 8);
    assert_eq!(d, FaultDecision::IoError);
    let ev = ev.ok_or(FaultError::Empty)?;
    assert_eq!(
        (ev.what, ev.op, ev.sector, ev.sectors, ev.cycle, ev.occurrence),
        ("read-error", BlockOp::Read, 2048, 8, 2, 1)
    );
    assert_eq!(ev.spec, "blk:read-error,cycle=2");
    assert_eq!(ev.event_data()["op"], "read");
    for op in [BlockOp::Write, BlockOp::Flush, BlockOp::GetId] {
        assert_eq!(c2.decide(op, 0, 8), (FaultDecision::Proceed, None), "{op:?}");
    }
    assert_eq!(p.block_faults(3).decide(BlockOp::Read, 0, 8).0, FaultDecision::Proceed);
    Ok(())
}

#[test]
fn after_sectors_counts_sectors_transferred_in_the_cycle() -> Result<(), FaultError> {
    let p = plan(&["blk:read-error,after-sectors=4096,cycle=2..", "blk:write-error,after-sectors=16"])?;
    let s = p.block_faults(2);
    // 4095 sectors, then one request that crosses the line: it still starts
    // below 4096 and succeeds; the next one fails, and so do all after.
    for i in 0..4095 {
        assert_eq!(s.decide(BlockOp::Read, i, 1).0, FaultDecision::Proceed, "read {i}");
    }
    assert_eq!(s.decide(BlockOp::Read, 9, 8).0, FaultDecision::Proceed);
    assert_eq!(s.decide(BlockOp::Read, 0, 1).0, FaultDecision::IoError);
    assert_eq!(s.decide(BlockOp::Read, 0, 1).0, FaultDecision::IoError);
    // Writes have their own count.
    assert_eq!(s.decide(BlockOp::Write, 0, 16).0, FaultDecision::Proceed);
    assert_eq!(s.decide(BlockOp::Write, 0, 1).0, FaultDecision::IoError);
    // A new cycle starts counting again.
    let s3 = p.block_faults(3);
    assert_eq!(s3.decide(BlockOp::Read, 0, 4096).0, FaultDecision::Proceed);
    assert_eq!(s3.decide(BlockOp::Read, 0, 1).0, FaultDecision::IoError);
    Ok(())
}

/// A bad region of the disk: only requests that touch it fail, however
/// much else the guest reads.
#[test]
fn sectors_limits_errors_to_requests_touching_the_range() -> Result<(), FaultError> {
    let p = plan(&["blk:read-error,sectors=2048..4096"])?;
    let s = p.block_faults(1);
    for (sector, count, fails) in [
        (0, 2048, false),
        (0, 2049, true),
        (2047, 1, false),
        (2048, 1, true),
        (4095, 1, true),
        (4095, 8, true),
        (4096, 8, false),
        (1 << 30, 8, false),
        (u64::MAX - 1, 8, false),
    ] {
        let want = if fails { FaultDecision::IoError } else { FaultDecision::Proceed };
        assert_eq!(s.decide(BlockOp::Read, sector, count).0, want, "read of {count} at {sector}");
    }
    assert_eq!(s.decide(BlockOp::Write, 2048, 1).0, FaultDecision::Proceed, "writes are not read errors");
    Ok(())
}

#[test]
fn failed_requests_do_not_count_as_transferred() -> Result<(), FaultError> {
    let p = plan(&["blk:read-error,probability=0.5", "blk:read-error,after-sectors=100"])?;
    let s = p.block_faults(1);
    let mut ok = 0u64;
    while ok < 100 {
        if s.decide(BlockOp::Read, 0, 1).0 == FaultDecision::Proceed {
            ok += 1;
        }
    }
    assert!(s.counts()[0].injected > 0);
    assert_eq!(s.counts()[1].injected, 0);
    assert_eq!(s.decide(BlockOp::Read, 0, 1).0, FaultDecision::IoError);
    Ok(())
}

#[test]
fn probability_is_seeded_and_roughly_right() -> Result<(), FaultError> {
    let specs = vec!["blk:write-error,probability=0.1".to_string()];
    let run = |seed, cycle| -> Result<Vec<bool>, FaultError> {
        let s = FaultPlan::parse_all(&specs, seed)?.block_faults(cycle);
        Ok((0..10_000).map(|i| s.decide(BlockOp::Write, i, 1).0 == FaultDecision::IoError).collect())
    };
    let a = run(DEFAULT_SEED, 1)?;
    assert_eq!(a, run(DEFAULT_SEED, 1)?, "same seed, same faults");
    assert_ne!(a, run(DEFAULT_SEED + 1, 1)?, "another seed, other faults");
    assert_ne!(a, run(DEFAULT_SEED, 2)?, "another cycle, other faults");
    let hits = a.iter().filter(|&&x| x).count();
    // Binomial(10000, 0.1): sd 30, so +-150 is five sigma.
    assert!((850..=1150).contains(&hits), "{hits} hits");
    // 0 and 1 are exact.
    for (p, want) in [("0", 0), ("1", 1000)] {
        let s = plan(&[&format!("blk:flush-error,probability={p}")])?.block_faults(1);
        let n = (0..1000).filter(|_| s.decide(BlockOp::Flush, 0, 0).0 == FaultDecision::IoError).count();
        assert_eq!(n, want, "probability {p}");
    }
    Ok(())
}

#[test]
fn adding_a_spec_does_not_change_another_specs_draws() -> Result<(), FaultError> {
    let alone = plan(&["blk:write-error,probability=0.3"])?.block_faults(1);
    let with = plan(&["blk:write-error,probability=0.3", "blk:delay=1ms,probability=0.5"])?.block_faults(1);
    for i in 0..1000 {
        let a = alone.decide(BlockOp::Write, i, 1).0 == FaultDecision::IoError;
        let b = with.decide(BlockOp::Write, i, 1).0 == FaultDecision::IoError;
        assert_eq!(a, b, "request {i}");
    }
    Ok(())
}

#[test]
fn delays_add_up_and_errors_beat_them() -> Result<(), FaultError> {
    let p = plan(&["blk:delay=200ms", "blk:delay=1s,cycle=3", "blk:flush-error,cycle=3"])?;
    let (d, ev) = p.block_faults(1).decide(BlockOp::GetId, 0, 0);
    assert_eq!(d, FaultDecision::Delay(ms(200)));
    assert_eq!(ev.map(|e| e.what), Some("delay"));
    let s3 = p.block_faults(3);
    assert_eq!(s3.decide(BlockOp::Read, 0, 8).0, FaultDecision::Delay(ms(1200)));
    let (d, ev) = s3.decide(BlockOp::Flush, 0, 0);
    assert_eq!(d, FaultDecision::IoError);
    assert_eq!(ev.map(|e| e.what), Some("flush-error"));
    let counts = s3.counts();
    assert_eq!(counts.iter().map(|c| c.injected).collect::<Vec<_>>(), vec![1, 1, 1]);
    Ok(())
}

#[test]
fn a_retry_storm_produces_few_events_and_a_count() -> Result<(), FaultError> {
    let s = plan(&["blk:read-error,cycle=2"])?.block_faults(2);
    let events: Vec<Injected> = (0..10_000).filter_map(|_| s.decide(BlockOp::Read, 77, 8).1).collect();
    let occ: Vec<u64> = events.iter().map(|e| e.occurrence).collect();
    assert_eq!(occ, vec![1, 2, 3, 10, 100, 1000, 10_000]);
    let c = &s.counts()[0];
    assert_eq!((c.injected, c.reported, c.suppressed()), (10_000, 7, 9_993));
    assert_eq!(s.suppressed(), 9_993);
    Ok(())
}

#[test]
fn two_delays_at_once_report_one_and_count_the_other() -> Result<(), FaultError> {
    let s = plan(&["blk:delay=1ms", "blk:delay=2ms"])?.block_faults(1);
    let ev = s.decide(BlockOp::Read, 0, 1).1;
    assert_eq!(ev.map(|e| e.spec), Some("blk:delay=1ms".to_string()));
    let counts = s.counts();
    assert_eq!((counts[0].injected, counts[0].reported), (1, 1));
    assert_eq!((counts[1].injected, counts[1].suppressed()), (1, 1));
    Ok(())
}

#[test]
fn state_is_shared_between_threads() -> Result<(), FaultError> {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    let s = std::sync::Arc::new(plan(&["blk:write-error,after-sectors=1000"])?.block_faults(1));
    assert_send_sync(&*s);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                (0..500).filter(|_| s.decide(BlockOp::Write, 0, 1).0 == FaultDecision::IoError).count()
            })
        })
        .collect();
    let failed: usize = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    // Exactly the first 1000 sector writes succeed, whatever the interleaving.
    assert_eq!(failed, 1000);
    Ok(())
}
