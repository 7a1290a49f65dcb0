//! Laying out and writing the SVG. Coordinates are printed with one decimal
//! and everything is iterated in a fixed order, so the same events give the
//! same bytes.

use std::collections::BTreeMap;

use super::marker::{escape, Kind, GREEN, LEGEND, ORANGE, RED};
use super::{shorten, TimelineEvent};

const WIDTH: f64 = 1100.0;
/// Left column: "cycle N (cause)".
const PLOT_X0: f64 = 230.0;
/// Right column: how the cycle went.
const PLOT_X1: f64 = WIDTH - 230.0;
const STORY_X: f64 = PLOT_X1 + 24.0;
const TOP: f64 = 78.0;
const ROW: f64 = 42.0;
const BAND_H: f64 = 28.0;
const LEGEND_COLS: usize = 4;
const LEGEND_ROW: f64 = 24.0;

/// One boot cycle's row.
struct Band<'a> {
    cycle: u64,
    start: u64,
    end: u64,
    cause: Option<&'a str>,
    events: Vec<&'a TimelineEvent>,
}

impl Band<'_> {
    fn find(&self, kind: Kind) -> Option<&TimelineEvent> {
        self.events.iter().copied().find(|e| Kind::of(&e.name) == kind)
    }
}

/// Groups events by cycle: `data.cycle` when given, else the latest BOOT's
/// cycle (a BOOT without one starts the next), else 0 ("before boot").
fn bands(events: &[TimelineEvent]) -> Vec<Band<'_>> {
    let mut groups: BTreeMap<u64, Vec<&TimelineEvent>> = BTreeMap::new();
    let mut current: Option<u64> = None;
    for e in events {
        let is_boot = Kind::of(&e.name) == Kind::Boot;
        let cycle = match e.cycle {
            Some(c) => c,
            None if is_boot => current.map_or(1, |c| c.saturating_add(1)),
            None => current.unwrap_or(0),
        };
        if e.cycle.is_some() || is_boot {
            current = Some(cycle);
        }
        groups.entry(cycle).or_default().push(e);
    }
    let last = events.iter().map(|e| e.time_us).max().unwrap_or(0);
    let mut out: Vec<Band<'_>> = groups
        .into_iter()
        .map(|(cycle, events)| {
            let boot = events.iter().find(|e| Kind::of(&e.name) == Kind::Boot);
            let start =
                boot.map(|b| b.time_us).or_else(|| events.iter().map(|e| e.time_us).min()).unwrap_or(0);
            let cause = boot.and_then(|b| b.data_str("cause"));
            Band { cycle, start, end: last, cause, events }
        })
        .collect();
    // A band ends at its RESET/SHUTDOWN; failing that, where the next cycle
    // starts (a log cut short, or a VMM that did not report the reset);
    // failing that, at the last event of the log.
    let next_starts: Vec<Option<u64>> = out.iter().skip(1).map(|b| Some(b.start)).chain([None]).collect();
    for (band, next) in out.iter_mut().zip(next_starts) {
        let ended = band
            .events
            .iter()
            .filter(|e| matches!(Kind::of(&e.name), Kind::Reset | Kind::Shutdown) && e.time_us >= band.start)
            .map(|e| e.time_us)
            .next();
        band.end = ended.or(next.filter(|&n| n >= band.start)).unwrap_or(last).max(band.start);
    }
    out
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) giving at most about
/// eight ticks over `span` seconds.
pub(super) fn tick_step(span: f64) -> f64 {
    let raw = span / 8.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0].into_iter().map(|m| m * mag).find(|&s| s >= raw).unwrap_or(10.0 * mag)
}

/// "2026-03-21 12:00:03 UTC" (civil-from-days, Howard Hinnant's algorithm).
pub(super) fn utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem / 60 % 60, rem % 60)
}

struct Axis {
    t0: u64,
    span: f64,
    step: f64,
}

impl Axis {
    fn x(&self, t_us: u64) -> f64 {
        let secs = t_us.saturating_sub(self.t0) as f64 / 1e6;
        PLOT_X0 + secs / self.span * (PLOT_X1 - PLOT_X0)
    }
}

/// Renders the events as a standalone SVG document.
pub fn render(events: &[TimelineEvent]) -> String {
    let bands = bands(events);
    let t0 = events.iter().map(|e| e.time_us).min().unwrap_or(0);
    let t1 = events.iter().map(|e| e.time_us).max().unwrap_or(0);
    let data_span = (t1.saturating_sub(t0) as f64 / 1e6).max(0.001);
    let step = tick_step(data_span);
    // End the axis on a tick so the scale reads cleanly.
    let axis = Axis { t0, span: (data_span / step).ceil().max(1.0) * step, step };

    let legend_y = TOP + bands.len() as f64 * ROW + 30.0;
    let legend_rows = LEGEND.len().div_ceil(LEGEND_COLS);
    let height = legend_y + legend_rows as f64 * LEGEND_ROW + 10.0;

    let mut s = String::new();
    s.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    s.push('\n');
    s.push_str(&format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0}" height="{height:.0}" viewBox="0 0 {WIDTH:.0} {height:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="13">"##
    ));
    s.push('\n');
    s.push_str("<title>kennel timeline</title>\n");
    s.push_str(r##"<rect width="100%" height="100%" fill="#fff"/>"##);
    s.push('\n');
    header(&mut s, events, &bands, t0, t1);
    axis_and_grid(&mut s, &axis, bands.len());
    for (i, band) in bands.iter().enumerate() {
        draw_band(&mut s, band, &axis, TOP + i as f64 * ROW);
    }
    legend(&mut s, legend_y);
    s.push_str("</svg>\n");
    s
}

fn header(s: &mut String, events: &[TimelineEvent], bands: &[Band<'_>], t0: u64, t1: u64) {
    if events.is_empty() {
        s.push_str(r##"<text x="20" y="28" font-size="18" fill="#111">kennel timeline: no events</text>"##);
        return;
    }
    let cycles = bands.iter().filter(|b| b.cycle > 0).count();
    let plural = if cycles == 1 { "" } else { "s" };
    let summary = format!(
        "{cycles} boot cycle{plural}, {} events over {:.1} s, from {}",
        events.len(),
        t1.saturating_sub(t0) as f64 / 1e6,
        utc(t0 / 1_000_000)
    );
    s.push_str(&format!(
        r##"<text x="20" y="28" font-size="18" font-weight="bold" fill="#111">kennel timeline</text><text x="{PLOT_X0:.0}" y="28" fill="#444">{}</text>"##,
        escape(&summary)
    ));
    s.push('\n');
}

fn axis_and_grid(s: &mut String, axis: &Axis, rows: usize) {
    let y = TOP - 16.0;
    let bottom = TOP + rows as f64 * ROW - (ROW - BAND_H);
    let decimals = if axis.step >= 1.0 { 0 } else { (-axis.step.log10()).ceil().clamp(0.0, 6.0) as usize };
    s.push_str(r#"<g id="axis">"#);
    s.push('\n');
    s.push_str(&format!(
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#666" font-size="11">seconds since first event</text>"##,
        PLOT_X0 - 18.0,
        y - 6.0
    ));
    s.push_str(&format!(
        r##"<line x1="{PLOT_X0:.1}" y1="{y:.1}" x2="{PLOT_X1:.1}" y2="{y:.1}" stroke="#999"/>"##
    ));
    s.push('\n');
    let ticks = (axis.span / axis.step).round() as u64;
    for k in 0..=ticks.min(100) {
        let secs = k as f64 * axis.step;
        let x = PLOT_X0 + secs / axis.span * (PLOT_X1 - PLOT_X0);
        s.push_str(&format!(
            r##"<g class="tick"><line x1="{x:.1}" y1="{y:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="#e3e7ed"/><line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{y:.1}" stroke="#999"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#444" font-size="11">{secs:.decimals$}</text></g>"##,
            y - 4.0,
            y - 7.0
        ));
        s.push('\n');
    }
    s.push_str("</g>\n");
}

fn draw_band(s: &mut String, band: &Band<'_>, axis: &Axis, top: f64) {
    let mid = top + BAND_H / 2.0;
    let (x0, x1) = (axis.x(band.start), axis.x(band.end));
    let fed = band.find(Kind::FirstFeed);
    let expired = band.find(Kind::Expired);
    let missed = band.find(Kind::DeadlineMissed);
    // The fill says how the cycle went before any marker is read.
    let (fill, stroke) = if expired.is_some() {
        ("#fbe3e3", "#e9a3a3")
    } else if missed.is_some() {
        ("#fdeedd", "#efb98a")
    } else if fed.is_some() {
        ("#e4f4e7", "#9fd3aa")
    } else {
        ("#eef1f5", "#c5cdd8")
    };
    let label = match (band.cycle, band.cause) {
        (0, _) => "before boot".to_string(),
        (c, Some(cause)) => format!("cycle {c} ({})", shorten(cause, 14)),
        (c, None) => format!("cycle {c}"),
    };
    let span = format!(
        "{label}: {:.3} s to {:.3} s",
        band.start.saturating_sub(axis.t0) as f64 / 1e6,
        band.end.saturating_sub(axis.t0) as f64 / 1e6
    );
    s.push_str(&format!(r#"<g class="band" data-cycle="{}">"#, band.cycle));
    s.push('\n');
    s.push_str(&format!(
        r##"<text class="band-label" x="{:.1}" y="{:.1}" text-anchor="end" font-weight="bold" fill="#222">{}</text>"##,
        PLOT_X0 - 18.0,
        mid + 4.5,
        escape(&label)
    ));
    s.push_str(&format!(
        r##"<rect class="band-rect" x="{x0:.1}" y="{top:.1}" width="{:.1}" height="{BAND_H:.1}" rx="4" fill="{fill}" stroke="{stroke}"><title>{}</title></rect>"##,
        (x1 - x0).max(2.0),
        escape(&span)
    ));
    s.push('\n');
    // From the first feed on, the guest is known to be alive: a green strip.
    if let Some(f) = fed {
        let fx = axis.x(f.time_us);
        s.push_str(&format!(
            r##"<rect class="alive" x="{fx:.1}" y="{:.1}" width="{:.1}" height="4" fill="{GREEN}" opacity="0.7"/>"##,
            top + BAND_H - 5.0,
            (x1 - fx).max(0.0)
        ));
        s.push('\n');
    }
    let mut markers: Vec<&TimelineEvent> = band.events.clone();
    markers.sort_by_key(|e| Kind::of(&e.name).layer());
    for e in markers {
        let kind = Kind::of(&e.name);
        s.push_str(&format!(
            r#"<g class="marker {}" data-event="{}" transform="translate({:.1},{mid:.1})"><title>{}</title>{}</g>"#,
            kind.class(),
            escape(&e.name),
            axis.x(e.time_us),
            escape(&e.json),
            kind.shape()
        ));
        s.push('\n');
    }
    story(s, band, fed, expired, missed, mid);
    s.push_str("</g>\n");
}

/// The right-hand column: did the guest come back, and how did the cycle end.
fn story(
    s: &mut String,
    band: &Band<'_>,
    fed: Option<&TimelineEvent>,
    expired: Option<&TimelineEvent>,
    missed: Option<&TimelineEvent>,
    mid: f64,
) {
    let (first, first_colour) = match fed {
        Some(f) => {
            let ms = f.data_u64("since_boot_ms").unwrap_or(f.time_us.saturating_sub(band.start) / 1000);
            (format!("\u{2713} first feed at +{:.2} s", ms as f64 / 1000.0), GREEN)
        }
        None if band.find(Kind::Armed).is_some() => ("armed, never fed".to_string(), "#555"),
        None if band.cycle == 0 => (String::new(), "#555"),
        None => ("watchdog not armed".to_string(), "#555"),
    };
    let (second, second_colour) = if let Some(e) = expired {
        let action = e.data_str("action").map(|a| format!(" ({})", shorten(a, 12))).unwrap_or_default();
        (format!("\u{2717} watchdog expired{action}"), RED)
    } else if missed.is_some() {
        ("\u{2717} boot deadline missed".to_string(), ORANGE)
    } else if band.find(Kind::Reset).is_some() {
        ("reset".to_string(), "#333")
    } else if band.find(Kind::Shutdown).is_some() {
        ("shut down".to_string(), "#333")
    } else {
        ("log ends".to_string(), "#888")
    };
    s.push_str(&format!(
        r#"<text class="story" x="{STORY_X:.1}" y="{:.1}" font-size="12"><tspan fill="{first_colour}" font-weight="bold">{}</tspan><tspan x="{STORY_X:.1}" dy="15" fill="{second_colour}">{}</tspan></text>"#,
        mid - 3.0,
        escape(&first),
        escape(&second)
    ));
    s.push('\n');
}

fn legend(s: &mut String, y: f64) {
    let col_w = (WIDTH - 40.0) / LEGEND_COLS as f64;
    s.push_str(r#"<g id="legend">"#);
    s.push('\n');
    for (i, kind) in LEGEND.iter().enumerate() {
        let x = 30.0 + (i % LEGEND_COLS) as f64 * col_w;
        let yy = y + (i / LEGEND_COLS) as f64 * LEGEND_ROW;
        s.push_str(&format!(
            r##"<g class="legend-item {}"><g transform="translate({x:.1},{yy:.1}) scale(0.8)">{}</g><text x="{:.1}" y="{:.1}" fill="#333" font-size="12">{}</text></g>"##,
            kind.class(),
            kind.shape(),
            x + 16.0,
            yy + 4.5,
            escape(kind.label())
        ));
        s.push('\n');
    }
    s.push_str("</g>\n");
}
