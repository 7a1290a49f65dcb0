//! `kennel timeline`'s input: an events file is host input (an operator may
//! hand it any file), read by `parse_jsonl` and drawn by `render`.
//!
//! The input is built from a few event lines the fuzzer shapes (names,
//! times, cycles, data members) mixed with raw bytes, so both the parser's
//! error paths and the renderer's layout (many cycles, times out of order,
//! huge or equal timestamps, odd names) are reached.
//!
//! Invariants:
//! - a malformed line is an error naming its line number, never a panic;
//! - whatever parses renders to SVG that an XML parser accepts (names and
//!   data are escaped) and whose root is `<svg>`;
//! - the output stays bounded: no more than a few KiB per event.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

use quick_xml::events::Event;
use quick_xml::Reader;

use kennel::interfaces::timeline::{parse_jsonl, render, TimelineError};

/// XML well-formedness with a streaming reader (tags balanced and matching,
/// attributes and text escaped) and `<svg>` as the root: a tree parser did
/// the same at a third of the speed.
fn well_formed_svg(svg: &str) {
    let mut r = Reader::from_str(svg);
    r.config_mut().check_end_names = true;
    let (mut depth, mut root) = (0usize, None);
    loop {
        match r.read_event() {
            Ok(Event::Start(e)) => {
                if depth == 0 {
                    root = Some(e.name().as_ref().to_vec());
                }
                attributes_escaped(&e);
                depth += 1;
            }
            Ok(Event::Empty(e)) => attributes_escaped(&e),
            Ok(Event::End(_)) => depth -= 1,
            Ok(Event::Text(t)) => {
                t.decode().unwrap_or_else(|err| panic!("bad text: {err}"));
            }
            Ok(Event::GeneralRef(g)) => {
                let name = g.decode().unwrap_or_else(|err| panic!("bad reference: {err}"));
                let known = ["amp", "lt", "gt", "quot", "apos"].contains(&name.as_ref());
                assert!(known || name.starts_with('#'), "unknown entity &{name};");
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("render wrote bad XML at {}: {e}", r.buffer_position()),
        }
    }
    assert_eq!(depth, 0, "unclosed elements");
    assert_eq!(root.as_deref(), Some(&b"svg"[..]), "root element");
}

fn attributes_escaped(e: &quick_xml::events::BytesStart<'_>) {
    for a in e.attributes() {
        let a = a.unwrap_or_else(|err| panic!("bad attribute: {err}"));
        a.unescape_value().unwrap_or_else(|err| panic!("bad attribute value: {err}"));
    }
}

#[derive(Arbitrary, Debug)]
enum Line {
    Event {
        name: u8,
        odd_name: Option<String>,
        seconds: u64,
        micros: u32,
        cycle: Option<u64>,
        extra: Option<(String, String)>,
    },
    Raw(String),
    Blank,
}

const NAMES: [&str; 14] = [
    "BOOT",
    "WATCHDOG_ARMED",
    "WATCHDOG_FIRST_FEED",
    "WATCHDOG_DISARMED",
    "WATCHDOG_PRETIMEOUT",
    "WATCHDOG",
    "BOOT_DEADLINE_MISSED",
    "RESET",
    "SHUTDOWN",
    "STOP",
    "RESUME",
    "FAULT_INJECTED",
    "WATCHDOG_FEED",
    "UNKNOWN_EVENT",
];

fn line_text(l: &Line) -> String {
    match l {
        Line::Event { name, odd_name, seconds, micros, cycle, extra } => {
            let name =
                odd_name.clone().unwrap_or_else(|| NAMES[usize::from(*name) % NAMES.len()].to_string());
            let mut data = serde_json::Map::new();
            if let Some(c) = cycle {
                data.insert("cycle".into(), (*c % 1000).into());
            }
            if let Some((k, v)) = extra {
                data.insert(k.clone(), v.clone().into());
            }
            serde_json::json!({
                "event": name,
                "timestamp": {"seconds": seconds % 4_000_000_000, "microseconds": micros},
                "data": data,
            })
            .to_string()
        }
        Line::Raw(s) => s.clone(),
        Line::Blank => String::new(),
    }
}

fuzz_target!(|lines: Vec<Line>| {
    let text: String = lines.iter().take(16).map(|l| line_text(l) + "\n").collect();
    let events = match parse_jsonl(&text) {
        Ok(e) => e,
        Err(TimelineError::Line { line, .. }) => {
            assert!(
                line >= 1 && line <= text.lines().count(),
                "error names line {line} of {}",
                text.lines().count()
            );
            return;
        }
        Err(TimelineError::NoEvents) => {
            assert!(text.lines().all(|l| l.trim().is_empty()), "NoEvents for a file with content");
            return;
        }
        Err(e) => panic!("unexpected error kind: {e}"),
    };
    let svg = render(&events);
    well_formed_svg(&svg);
    let budget = 8192 + events.len() * 8192 + text.len() * 8;
    assert!(svg.len() <= budget, "{} bytes of SVG for {} events", svg.len(), events.len());
});
