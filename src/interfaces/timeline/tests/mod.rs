use std::error::Error;

use super::*;

type R = Result<(), Box<dyn Error>>;

const T0: u64 = 1_774_094_400; // 2026-03-21 12:00:00 UTC

fn ev(name: &str, ms: u64, data: &str) -> String {
    let (s, us) = (T0 + ms / 1000, (ms % 1000) * 1000);
    format!(r#"{{"event": "{name}", "data": {data}, "timestamp": {{"seconds": {s}, "microseconds": {us}}}}}"#)
}

/// Four cycles: the watchdog fires, the guest comes back and reboots
/// itself, the boot deadline passes, a clean shutdown.
fn sample() -> String {
    [
        ev("BOOT", 0, r#"{"cycle": 1, "cause": "power-on"}"#),
        ev("WATCHDOG_ARMED", 1200, r#"{"cycle": 1, "timeout_ms": 30000}"#),
        ev("FAULT_INJECTED", 2000, r#"{"cycle": 1, "spec": "blk:read-error,cycle=1", "what": "read-error", "op": "read", "sector": 2048, "sectors": 8, "occurrence": 1}"#),
        ev("FAULT_INJECTED", 2100, r#"{"cycle": 1, "spec": "blk:read-error,cycle=1", "what": "read-error", "op": "read", "sector": 2048, "sectors": 8, "occurrence": 2}"#),
        ev("WATCHDOG_PRETIMEOUT", 16200, r#"{"cycle": 1}"#),
        ev("WATCHDOG", 31200, r#"{"cycle": 1, "action": "reset"}"#),
        ev("RESET", 31200, r#"{"cycle": 1, "guest": false, "reason": "watchdog"}"#),
        ev("BOOT", 31300, r#"{"cycle": 2, "cause": "watchdog"}"#),
        ev("WATCHDOG_ARMED", 32500, r#"{"cycle": 2, "timeout_ms": 30000}"#),
        ev("WATCHDOG_FIRST_FEED", 33100, r#"{"cycle": 2, "since_boot_ms": 1800}"#),
        ev("RESET", 50000, r#"{"cycle": 2, "guest": true}"#),
        ev("BOOT", 50100, r#"{"cycle": 3, "cause": "guest"}"#),
        ev("BOOT_DEADLINE_MISSED", 80100, r#"{"cycle": 3, "deadline_ms": 30000, "armed": false}"#),
        ev("RESET", 80100, r#"{"cycle": 3}"#),
        ev("BOOT", 80200, r#"{"cycle": 4, "cause": "boot-deadline"}"#),
        ev("WATCHDOG_ARMED", 81000, r#"{"cycle": 4, "timeout_ms": 30000}"#),
        ev("WATCHDOG_FIRST_FEED", 82000, r#"{"cycle": 4, "since_boot_ms": 1800}"#),
        ev("STOP", 90000, r#"{"cycle": 4}"#),
        ev("RESUME", 92000, r#"{"cycle": 4, "cause": "qmp"}"#),
        ev("GUEST_PANICKED_MAYBE", 95000, r#"{"cycle": 4}"#),
        ev("WATCHDOG_DISARMED", 99000, r#"{"cycle": 4}"#),
        ev("SHUTDOWN", 100000, r#"{"cycle": 4, "guest": true}"#),
    ]
    .join("\n")
}

fn markers<'a>(doc: &'a roxmltree::Document<'a>, cycle: &str, class: &str) -> Vec<roxmltree::Node<'a, 'a>> {
    doc.descendants()
        .filter(|n| n.attribute("class") == Some("band") && n.attribute("data-cycle") == Some(cycle))
        .flat_map(|b| b.descendants())
        .filter(|n| n.attribute("class") == Some(&format!("marker {class}")))
        .collect()
}

fn title_of<'a>(n: roxmltree::Node<'a, 'a>) -> Option<&'a str> {
    n.children().find(|c| c.has_tag_name("title")).and_then(|t| t.text())
}

#[test]
fn parses_events_and_skips_blank_lines() -> R {
    let text = format!(
        "\n{}\n   \n{}\n",
        ev("BOOT", 0, r#"{"cycle": 1, "cause": "power-on"}"#),
        ev("X", 1500, "{}")
    );
    let events = parse_jsonl(&text)?;
    assert_eq!(events.len(), 2);
    assert_eq!((events[0].line, events[0].name.as_str(), events[0].cycle), (2, "BOOT", Some(1)));
    assert_eq!(events[0].data_str("cause"), Some("power-on"));
    assert_eq!(events[1].time_us - events[0].time_us, 1_500_000);
    assert_eq!((events[1].line, events[1].cycle), (4, None));
    // `data` may be missing altogether.
    let e = parse_jsonl(r#"{"event": "RESET", "timestamp": {"seconds": 1, "microseconds": 0}}"#)?;
    assert_eq!((e[0].cycle, &e[0].data), (None, &serde_json::Value::Null));
    Ok(())
}

#[test]
fn malformed_lines_are_errors_naming_the_line() -> R {
    let good = ev("BOOT", 0, r#"{"cycle": 1}"#);
    let cases = [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (r#"{"timestamp": {"seconds": 1, "microseconds": 0}}"#, "no `event`"),
        (r#"{"event": 7, "timestamp": {"seconds": 1, "microseconds": 0}}"#, "`event` is not"),
        (r#"{"event": "BOOT"}"#, "no `timestamp`"),
        (r#"{"event": "BOOT", "timestamp": {"seconds": -1, "microseconds": 0}}"#, "timestamp.seconds"),
        (
            r#"{"event": "BOOT", "timestamp": {"seconds": 1, "microseconds": 1000000}}"#,
            "timestamp.microseconds",
        ),
        (
            r#"{"event": "BOOT", "timestamp": {"seconds": 18446744073709551615, "microseconds": 0}}"#,
            "out of range",
        ),
        (
            r#"{"event": "BOOT", "data": {"cycle": "two"}, "timestamp": {"seconds": 1, "microseconds": 0}}"#,
            "data.cycle",
        ),
    ];
    for (bad, problem) in cases {
        let text = format!("{good}\n\n{bad}\n{good}");
        match parse_jsonl(&text) {
            Err(e @ TimelineError::Line { line: 3, .. }) => {
                let msg = e.to_string();
                assert!(msg.starts_with("line 3: ") && msg.contains(problem), "{bad}: {msg}");
            }
            other => return Err(format!("{bad}: {other:?}").into()),
        }
    }
    assert!(matches!(parse_jsonl(""), Err(TimelineError::NoEvents)));
    assert!(matches!(parse_jsonl("\n  \n"), Err(TimelineError::NoEvents)));
    // A long bad line is quoted shortened, on a character boundary.
    let long = format!("{{{}", "é".repeat(500));
    let msg = parse_jsonl(&long).map(|_| ()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.ends_with("…`") && msg.chars().count() < 200, "{msg}");
    Ok(())
}

#[test]
fn renders_well_formed_svg_with_one_band_per_cycle() -> R {
    let svg = render(&parse_jsonl(&sample())?);
    let doc = roxmltree::Document::parse(&svg)?;
    assert!(doc.root_element().has_tag_name(("http://www.w3.org/2000/svg", "svg")));
    let bands: Vec<_> = doc.descendants().filter(|n| n.attribute("class") == Some("band")).collect();
    let cycles: Vec<_> = bands.iter().filter_map(|b| b.attribute("data-cycle")).collect();
    assert_eq!(cycles, ["1", "2", "3", "4"]);
    let labels: Vec<_> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("band-label"))
        .filter_map(|n| n.text())
        .collect();
    assert_eq!(
        labels,
        ["cycle 1 (power-on)", "cycle 2 (watchdog)", "cycle 3 (guest)", "cycle 4 (boot-deadline)"]
    );

    // The story: no feed in 1, first feed in 2 and 4, expiry in 1, deadline in 3.
    assert!(markers(&doc, "1", "first-feed").is_empty());
    let feed = markers(&doc, "2", "first-feed");
    assert_eq!(feed.len(), 1);
    assert!(title_of(feed[0]).is_some_and(|t| t.contains(r#""since_boot_ms": 1800"#)));
    assert_eq!(markers(&doc, "4", "first-feed").len(), 1);
    assert_eq!(markers(&doc, "1", "watchdog-expired").len(), 1);
    assert_eq!(markers(&doc, "1", "fault").len(), 2);
    assert_eq!(markers(&doc, "3", "deadline-missed").len(), 1);
    for class in ["stop", "resume", "other", "disarmed", "shutdown"] {
        assert_eq!(markers(&doc, "4", class).len(), 1, "{class}");
    }
    // Every event is one marker with its JSON as the tooltip.
    let all: Vec<_> = doc.descendants().filter(|n| n.attribute("data-event").is_some()).collect();
    assert_eq!(all.len(), sample().lines().count());
    assert!(all.iter().all(|m| title_of(*m).is_some_and(|t| t.starts_with(r#"{"event": ""#))));

    let stories: Vec<String> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("story"))
        .map(|n| {
            n.descendants().filter(|t| t.is_text()).filter_map(|t| t.text()).collect::<Vec<_>>().join(" | ")
        })
        .collect();
    assert_eq!(
        stories,
        [
            "armed, never fed | \u{2717} watchdog expired (reset)",
            "\u{2713} first feed at +1.80 s | reset",
            "watchdog not armed | \u{2717} boot deadline missed",
            "\u{2713} first feed at +1.80 s | shut down",
        ]
    );
    let legend =
        doc.descendants().filter(|n| n.attribute("class").is_some_and(|c| c.starts_with("legend-item")));
    assert_eq!(legend.count(), 14);
    assert!(svg.contains("2026-03-21 12:00:00 UTC"), "header names the start time");
    if let Some(path) = std::env::var_os("KENNEL_TIMELINE_SAMPLE_OUT") {
        // For looking at the result: KENNEL_TIMELINE_SAMPLE_OUT=/tmp/t.svg cargo test timeline
        std::fs::write(path, &svg)?;
    }
    Ok(())
}

fn band_rect(doc: &roxmltree::Document<'_>, cycle: &str) -> Option<(f64, f64)> {
    let band = doc.descendants().find(|n| n.attribute("data-cycle") == Some(cycle))?;
    let rect = band.children().find(|n| n.attribute("class") == Some("band-rect"))?;
    let x: f64 = rect.attribute("x")?.parse().ok()?;
    let w: f64 = rect.attribute("width")?.parse().ok()?;
    Some((x, x + w))
}

#[test]
fn bands_end_at_reset_else_next_boot_else_last_event() -> R {
    let text = [
        ev("BOOT", 0, r#"{"cycle": 1}"#),
        ev("RESET", 2000, r#"{"cycle": 1}"#),
        ev("X", 3000, r#"{"cycle": 1}"#), // after the reset: outside the band
        ev("BOOT", 4000, r#"{"cycle": 2}"#),
        ev("BOOT", 6000, r#"{"cycle": 3}"#),
        ev("X", 10_000, r#"{"cycle": 3}"#),
    ]
    .join("\n");
    let svg = render(&parse_jsonl(&text)?);
    let doc = roxmltree::Document::parse(&svg)?;
    let px = |ms: f64| 230.0 + ms / 10_000.0 * (870.0 - 230.0);
    let close = |a: f64, b: f64| (a - b).abs() < 0.2;
    let (b1, b2, b3) = (band_rect(&doc, "1"), band_rect(&doc, "2"), band_rect(&doc, "3"));
    assert!(b1.is_some_and(|(a, b)| close(a, px(0.0)) && close(b, px(2000.0))), "{b1:?}");
    assert!(b2.is_some_and(|(a, b)| close(a, px(4000.0)) && close(b, px(6000.0))), "{b2:?}");
    assert!(b3.is_some_and(|(a, b)| close(a, px(6000.0)) && close(b, px(10_000.0))), "{b3:?}");
    Ok(())
}

#[test]
fn cycles_are_inferred_when_events_do_not_carry_them() -> R {
    let text = [
        ev("EARLY", 0, "{}"),
        ev("BOOT", 100, r#"{"cause": "power-on"}"#),
        ev("WATCHDOG_ARMED", 200, "{}"),
        ev("RESET", 300, "{}"),
        ev("BOOT", 400, r#"{"cause": "guest"}"#),
        ev("WATCHDOG_FIRST_FEED", 500, "{}"),
    ]
    .join("\n");
    let svg = render(&parse_jsonl(&text)?);
    let doc = roxmltree::Document::parse(&svg)?;
    let labels: Vec<_> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("band-label"))
        .filter_map(|n| n.text())
        .collect();
    assert_eq!(labels, ["before boot", "cycle 1 (power-on)", "cycle 2 (guest)"]);
    assert_eq!(markers(&doc, "1", "armed").len(), 1);
    assert_eq!(markers(&doc, "2", "first-feed").len(), 1);
    Ok(())
}

#[test]
fn text_is_escaped() -> R {
    let text = [
        ev("BOOT", 0, r#"{"cycle": 1, "cause": "<&\"'\u0001>"}"#),
        ev("<script>&", 10, r#"{"cycle": 1, "note": "]]> </title>"}"#),
    ]
    .join("\n");
    let svg = render(&parse_jsonl(&text)?);
    let doc = roxmltree::Document::parse(&svg)?;
    let label = doc.descendants().find(|n| n.attribute("class") == Some("band-label")).and_then(|n| n.text());
    assert_eq!(label, Some("cycle 1 (<&\"'\u{fffd}>)"));
    let odd = doc.descendants().find(|n| n.attribute("data-event") == Some("<script>&"));
    assert!(odd.and_then(title_of).is_some_and(|t| t.contains("]]> </title>")));
    assert!(!doc.descendants().any(|n| n.has_tag_name("script")));
    Ok(())
}

#[test]
fn output_is_deterministic_and_survives_edge_cases() -> R {
    let events = parse_jsonl(&sample())?;
    assert_eq!(render(&events), render(&events));
    // No events, one event, all at one instant: still valid documents.
    for text in [None, Some(ev("BOOT", 0, "{}")), Some(format!("{}\n{}", ev("A", 5, "{}"), ev("B", 5, "{}")))]
    {
        let events = match text {
            Some(t) => parse_jsonl(&t)?,
            None => Vec::new(),
        };
        let svg = render(&events);
        roxmltree::Document::parse(&svg)?;
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }
    Ok(())
}

#[test]
fn ticks_and_dates() {
    assert_eq!(svg_tick(100.0), 20.0);
    assert_eq!(svg_tick(8.0), 1.0);
    assert_eq!(svg_tick(0.001), 0.0002);
    assert_eq!(svg_tick(35.0), 5.0);
    assert_eq!(svg::utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(svg::utc(T0 + 3661), "2026-03-21 13:01:01 UTC");
    assert_eq!(svg::utc(951_782_400), "2000-02-29 00:00:00 UTC");
}

fn svg_tick(span: f64) -> f64 {
    // Rounded so 2e-4 compares equal whatever the float noise.
    (svg::tick_step(span) * 1e9).round() / 1e9
}

#[test]
fn run_reads_and_writes_files_and_names_them() -> R {
    let dir = std::env::temp_dir().join(format!("kennel-timeline-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (input, output) = (dir.join("events.jsonl"), dir.join("timeline.svg"));
    std::fs::write(&input, sample())?;
    run(&input, &output)?;
    roxmltree::Document::parse(&std::fs::read_to_string(&output)?)?;

    let missing = dir.join("missing.jsonl");
    let msg = run(&missing, &output).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.starts_with(&format!("cannot read {}", missing.display())), "{msg}");
    std::fs::write(&input, format!("{}\noops", sample()))?;
    let msg = run(&input, &output).err().map(|e| e.to_string()).unwrap_or_default();
    let lines = sample().lines().count() + 1;
    assert!(msg.starts_with(&format!("{}: line {lines}: not JSON", input.display())), "{msg}");
    std::fs::write(&input, [0xff, 0xfe, 0x00])?;
    let msg = run(&input, &output).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("cannot read") && msg.contains("events.jsonl"), "{msg}");
    std::fs::write(&input, sample())?;
    let msg = run(&input, &dir.join("no/such/dir.svg")).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.starts_with("cannot write") && msg.contains("dir.svg"), "{msg}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
