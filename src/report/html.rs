//! `report.html`: the trial report for people — one self-contained file (inline CSS and SVG, no
//! script, no network fetches), a pure projection of the journal like the CSV files.
//!
//! Sections: header (trial, protocol hash, lab version, dates, feed file hashes), the CONSORT
//! flow diagram (SVG, counts from [`flow::counts`]), the baseline table by arm, one swimlane
//! timeline per device (status over time, commands, answers, observations, restarts as detached
//! periods; times relative to the first dose), outcomes per arm, adverse events, and anomalies
//! linking to their drafts (`radar/<id>.md`).
//!
//! Every string that comes from the journal (device names, MDM values, operator notes) is
//! escaped. Nothing depends on the clock: the same journal gives the same bytes.

use super::flow;
use crate::trial::journal::{Entry, Event};
use crate::trial::outcome::{self, DeviceOutcome, Facts, Outcome, RunFacts};
use chrono::{DateTime, FixedOffset, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;
use std::rc::Rc;

/// An anomaly to list (and link to its draft, `radar/<id>.md`). The detectors live in
/// `evidence::anomalies`; `report::write_all` passes what they found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalyLink {
    /// Anomaly id; the draft is `radar/<id>.md` next to the journal.
    pub id: String,
    /// One line for the reader.
    pub title: String,
    /// The device it concerns; `None` for a run-level anomaly.
    pub udid: Option<String>,
}

/// Observation `kind` under which a feed file's SHA-256 is recorded (run-level observation,
/// `key` = file name, `value` = hex digest); listed in the header.
pub const FEED_HASH_KIND: &str = "feed_sha256";

/// Escape text for HTML element content and attribute values (also SVG).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab/newline are not allowed in HTML text.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// At most `n` characters, with an ellipsis when cut.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

type Time = DateTime<FixedOffset>;

/// A moment, whatever offset it was written with (lanes only compare and subtract them).
pub(crate) type Instant = DateTime<Utc>;

fn parse_time(s: &str) -> Option<Time> {
    DateTime::parse_from_rfc3339(s).ok()
}

/// An entry's time as an [`Instant`], when it parses.
pub(crate) fn parse_instant(s: &str) -> Option<Instant> {
    parse_time(s).map(|t| t.with_timezone(&Utc))
}

/// Signed seconds as `T+1h02m`, `T+3m05s`, `T+12s`, `T−4s` (relative to the first dose).
pub fn rel(secs: f64) -> String {
    let sign = if secs < -0.5 { "−" } else { "+" };
    let s = secs.abs().round() as i64;
    let body = if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    };
    format!("T{sign}{body}")
}

/// A duration in seconds, unsigned, as `1h02m`, `3m05s`, `12s`, `0.4s`.
fn dur(secs: f64) -> String {
    if secs.abs() < 9.95 {
        return format!("{:.1}s", secs.abs());
    }
    rel(secs.abs()).trim_start_matches("T+").to_string()
}

// ---------------------------------------------------------------------------------------------
// Colours and labels.

/// A device's status at a moment, as the swimlane shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Enrolled,
    Excluded,
    Eligible,
    Dosed,
    Downloading,
    Downloaded,
    Installing,
    Error,
    Detached,
    Updated,
    WrongVersion,
}

impl Status {
    const LEGEND: [Status; 11] = [
        Status::Enrolled,
        Status::Excluded,
        Status::Eligible,
        Status::Dosed,
        Status::Downloading,
        Status::Downloaded,
        Status::Installing,
        Status::Detached,
        Status::Error,
        Status::Updated,
        Status::WrongVersion,
    ];

    fn label(self) -> &'static str {
        match self {
            Status::Enrolled => "enrolled",
            Status::Excluded => "excluded",
            Status::Eligible => "eligible / allocated",
            Status::Dosed => "dosed, waiting",
            Status::Downloading => "downloading",
            Status::Downloaded => "downloaded",
            Status::Installing => "installing",
            Status::Error => "command error",
            Status::Detached => "detached (restart)",
            Status::Updated => "updated",
            Status::WrongVersion => "wrong version",
        }
    }

    fn class(self) -> &'static str {
        match self {
            Status::Enrolled => "s-enrolled",
            Status::Excluded => "s-excluded",
            Status::Eligible => "s-eligible",
            Status::Dosed => "s-dosed",
            Status::Downloading => "s-downloading",
            Status::Downloaded => "s-downloaded",
            Status::Installing => "s-installing",
            Status::Error => "s-error",
            Status::Detached => "s-detached",
            Status::Updated => "s-updated",
            Status::WrongVersion => "s-wrong",
        }
    }
}

fn outcome_class(o: Outcome) -> &'static str {
    match o {
        Outcome::Updated => "o-good",
        Outcome::DownloadedNotInstalled | Outcome::NotDownloaded => "o-neutral",
        Outcome::WrongVersion | Outcome::CommandError | Outcome::LostToFollowUp => "o-bad",
        Outcome::NoResponse | Outcome::DoseUncertain => "o-warn",
        Outcome::NotDosed | Outcome::Excluded => "o-none",
    }
}

fn badge(class: &str, text: &str) -> String {
    format!("<span class=\"badge {class}\">{}</span>", esc(text))
}

fn answer_class(status: &str) -> &'static str {
    match status {
        "Acknowledged" => "a-ack",
        "Error" | "CommandFormatError" => "a-err",
        "NotNow" => "a-notnow",
        _ => "a-other",
    }
}

const STYLE: &str = r#"
:root{--ink:#1f2933;--muted:#616e7c;--line:#cbd2d9;--bg:#ffffff;--panel:#f5f7fa;
--enrolled:#9aa5b1;--excluded:#d9dee4;--eligible:#7b8794;--dosed:#2f80ed;--downloading:#f2a516;
--downloaded:#8e5cf5;--installing:#e8590c;--error:#d64545;--detached:#3e4c59;--updated:#1f9d55;
--wrong:#ab091e;--ended:#e4e7eb}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 "Liberation Sans","Helvetica Neue",Arial,sans-serif}
main{max-width:1360px;margin:0 auto;padding:20px 28px 40px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:19px;margin:32px 0 10px;padding-bottom:4px;border-bottom:2px solid var(--line)}
h3{font-size:15px;margin:0}
code,.mono{font-family:"DejaVu Sans Mono","Liberation Mono",Menlo,monospace;font-size:12px}
a{color:#1d5fbf}
.sub{color:var(--muted);margin:0 0 12px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--panel);font-weight:600}
tbody tr:nth-child(even) td{background:#fafbfc}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.meta th{width:190px}
table.meta td{word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:22px}
.card span{color:var(--muted);font-size:12px}
.badge{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;font-weight:600;white-space:nowrap}
.o-good{background:#d3f2e0;color:#0e5a2f}.o-bad{background:#fbd9d9;color:#8a1c1c}
.o-warn{background:#fff0c2;color:#7a5200}.o-neutral{background:#e3e8ff;color:#2a3a8c}
.o-none{background:#e4e7eb;color:#3e4c59}.arm{background:#e0ecfb;color:#1d4f91}
.warn{background:#fff6db;border:1px solid #f0c36d;border-radius:6px;padding:6px 10px}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;font-size:12px;color:var(--muted);margin:6px 0 12px}
.legend i{display:inline-block;width:22px;height:11px;border-radius:2px;vertical-align:-1px;margin-right:5px;border:1px solid rgba(0,0,0,.15)}
.lane{border:1px solid var(--line);border-radius:6px;padding:8px 12px 6px;margin:0 0 12px;break-inside:avoid;page-break-inside:avoid}
.lane header{display:flex;flex-wrap:wrap;gap:4px 12px;align-items:baseline}
.lane header .facts{color:var(--muted);font-size:12px}
.lane svg{display:block;width:100%;height:auto;margin-top:4px}
.lane ol,.lane ul{margin:2px 0 4px;padding-left:22px;font-size:12px}
svg text{font-family:"Liberation Sans",Arial,sans-serif}
.consort{display:block;width:100%;max-width:1100px;height:auto;margin:8px 0}
.consort rect{fill:#fff;stroke:#52606d;stroke-width:1.2}
.consort rect.side{fill:var(--panel)}
.consort rect.arm{fill:#eef4fd}
.consort text{font-size:13px;fill:var(--ink)}
.consort text.t{font-weight:700}
.consort text.d{font-size:12px;fill:var(--muted)}
.consort line,.consort path{stroke:#52606d;stroke-width:1.4;fill:none}
.s-enrolled{fill:var(--enrolled);background:var(--enrolled)}
.s-excluded{fill:var(--excluded);background:var(--excluded)}
.s-eligible{fill:var(--eligible);background:var(--eligible)}
.s-dosed{fill:var(--dosed);background:var(--dosed)}
.s-downloading{fill:var(--downloading);background:var(--downloading)}
.s-downloaded{fill:var(--downloaded);background:var(--downloaded)}
.s-installing{fill:var(--installing);background:var(--installing)}
.s-error{fill:var(--error);background:var(--error)}
.s-detached{background:repeating-linear-gradient(45deg,var(--detached) 0 3px,#fff 3px 6px)}
.s-updated{fill:var(--updated);background:var(--updated)}
.s-wrong{fill:var(--wrong);background:var(--wrong)}
.a-ack{fill:var(--updated)}.a-err{fill:var(--error)}.a-notnow{fill:#9aa5b1}.a-other{fill:#f2a516}
.lane .grid{stroke:#e4e7eb;stroke-width:1}
.lane .zero{stroke:#2f80ed;stroke-width:1.5;stroke-dasharray:4 3}
.lane .rowlabel{font-size:11px;fill:var(--muted)}
.lane .tick{font-size:10.5px;fill:var(--muted)}
.lane .dose{fill:#2f80ed;stroke:#102a43;stroke-width:1}
.lane .dosefail{fill:#fff;stroke:var(--error);stroke-width:2}
.lane .cmd{stroke:#7b8794;stroke-width:1}
.lane .obs-operator{fill:#e8590c;stroke:#7a2e0e;stroke-width:.8}
.lane .obs-harness{fill:#9aa5b1;stroke:#52606d;stroke-width:.8}
.lane .dlabel{font-size:10.5px;fill:#102a43}
footer{margin-top:30px;color:var(--muted);font-size:12px;border-top:1px solid var(--line);padding-top:8px}
@media print{
 @page{size:A4 landscape;margin:10mm}
 body{font-size:11px;-webkit-print-color-adjust:exact;print-color-adjust:exact}
 main{max-width:none;padding:0}
 h2{break-after:avoid;page-break-after:avoid}
 section.flow,table{break-inside:avoid;page-break-inside:avoid}
 a{color:inherit;text-decoration:none}
}
"#;

// ---------------------------------------------------------------------------------------------
// The document.

/// Render `report.html` from the journal and the anomalies found (may be empty).
pub fn render(entries: &[Entry], anomalies: &[AnomalyLink]) -> String {
    let digest = super::digest::Digest::of_entries(entries);
    let mut out = Vec::new();
    render_to(&digest, anomalies, &mut out).expect("writing to memory");
    String::from_utf8(out).expect("HTML is UTF-8")
}

/// [`render`] from a journal already read, written piece by piece (a long run's report is
/// larger than it is worth holding).
pub(crate) fn render_to(
    digest: &super::digest::Digest,
    anomalies: &[AnomalyLink],
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let run = &digest.run;
    let outcomes = &digest.outcomes;
    let flow = flow::counts_of(run, outcomes);
    let head = &digest.head;
    let t0 = head.first_dose_time();

    let mut h = String::new();
    let title = format!(
        "Trial report — {}",
        head.trial_id.as_deref().unwrap_or("(no trial id)")
    );
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        esc(&title)
    );
    header(&mut h, head, run, outcomes, t0.as_ref());
    consort(&mut h, &flow);
    baseline(&mut h, run, outcomes);
    timelines(&mut h, digest, t0.as_ref(), anomalies, out)?;
    outcomes_section(&mut h, run, outcomes);
    adverse(&mut h, &digest.adverse_events, run);
    anomalies_section(&mut h, run, anomalies);
    let _ = write!(
        h,
        "<footer>A projection of <code>journal.jsonl</code> ({} events, last seq {}); \
         regenerate with <code>lab report RUN_DIR</code>. Columns and outcome rules: \
         <code>docs/reports.md</code>.</footer>\n</main>\n</body>\n</html>\n",
        head.events, head.last_seq
    );
    out.write_all(h.as_bytes())
}

/// The run-level facts of the header, and what the timelines need of the whole journal,
/// gathered one entry at a time ([`Head::push`]).
#[derive(Default)]
pub(crate) struct Head {
    trial_id: Option<String>,
    protocol_sha256: Option<String>,
    pub(crate) lab_version: Option<String>,
    started: Option<String>,
    last: Option<String>,
    resumed: usize,
    interrupted: usize,
    finished: bool,
    feeds: Vec<(String, String)>,
    notes: Vec<(u64, String, String, String, String, String)>,
    consent: Option<String>,
    stop_rules: Vec<(String, String)>,
    /// Entries, and the seq of the last one.
    events: usize,
    last_seq: u64,
    /// Times of the first `DoseEnqueued`, the first `DoseIntent`, the first entry.
    first_enqueued: Option<String>,
    first_intent: Option<String>,
    /// Earliest and latest parseable entry times.
    earliest: Option<Instant>,
    latest: Option<Instant>,
}

impl Head {
    /// Take in the next entry; `at` is its time, parsed.
    pub(crate) fn push(&mut self, e: &Entry, at: Option<Instant>) {
        let h = self;
        if h.events == 0 {
            h.started = Some(e.at.clone());
        }
        h.events += 1;
        h.last_seq = e.seq;
        match &mut h.last {
            Some(l) => l.clone_from(&e.at),
            None => h.last = Some(e.at.clone()),
        }
        if let Some(t) = at {
            h.earliest = Some(h.earliest.map_or(t, |x| x.min(t)));
            h.latest = Some(h.latest.map_or(t, |x| x.max(t)));
        }
        match &e.event {
            Event::RunStarted {
                trial_id,
                protocol_sha256,
                lab_version,
                ..
            } if h.trial_id.is_none() => {
                h.trial_id = Some(trial_id.clone());
                h.protocol_sha256 = Some(protocol_sha256.clone());
                h.lab_version = Some(lab_version.clone());
            }
            Event::RunResumed { .. } => {
                h.resumed += 1;
                h.finished = false;
            }
            Event::RunInterrupted => h.interrupted += 1,
            Event::RunFinished => h.finished = true,
            Event::ConsentGiven { by, udids } => {
                h.consent = Some(format!("given by {by} for {} device(s)", udids.len()));
            }
            Event::ConsentRefused { reason } => {
                h.consent = Some(format!("refused: {reason}"));
            }
            Event::StopRuleTriggered { rule, message } => {
                h.stop_rules.push((rule.clone(), message.clone()));
            }
            Event::Observation {
                udid: None,
                source,
                kind,
                key,
                value,
            } => {
                if kind == FEED_HASH_KIND {
                    h.feeds.push((key.clone(), value.clone()));
                } else {
                    h.notes.push((
                        e.seq,
                        e.at.clone(),
                        source.to_string(),
                        kind.clone(),
                        key.clone(),
                        value.clone(),
                    ));
                }
            }
            Event::DoseEnqueued { .. } if h.first_enqueued.is_none() => {
                h.first_enqueued = Some(e.at.clone());
            }
            Event::DoseIntent { .. } if h.first_intent.is_none() => {
                h.first_intent = Some(e.at.clone());
            }
            _ => {}
        }
    }

    /// Time zero: the first dose's `DoseEnqueued` (else its first `DoseIntent`, else the first
    /// event).
    fn first_dose_time(&self) -> Option<Time> {
        self.first_enqueued
            .as_deref()
            .or(self.first_intent.as_deref())
            .or(self.started.as_deref())
            .and_then(parse_time)
    }
}

fn device_name(d: &Facts) -> String {
    d.baseline_str(&["baseline", "device_name"])
        .unwrap_or_else(|| d.udid.clone())
}

fn model(d: &Facts) -> Option<String> {
    d.baseline_str(&["baseline", "marketing_name"])
        .or_else(|| d.baseline_str(&["baseline", "product_type"]))
        .or_else(|| d.baseline_str(&["mdm", "model_name"]))
}

fn header(
    h: &mut String,
    head: &Head,
    run: &RunFacts,
    outcomes: &[DeviceOutcome],
    t0: Option<&Time>,
) {
    let _ = write!(
        h,
        "<h1>Trial report: {}</h1>\n<p class=\"sub\">OS-update trial run, projected from the run journal.</p>\n",
        esc(head.trial_id.as_deref().unwrap_or("(no RunStarted event)"))
    );
    let state = if head.finished {
        "finished"
    } else if head.interrupted > 0 {
        "interrupted (resumable)"
    } else {
        "in progress or stopped without a RunFinished event"
    };
    let mut rows: Vec<(String, String)> = vec![
        (
            "Trial id".into(),
            esc(head.trial_id.as_deref().unwrap_or("")),
        ),
        (
            "Protocol SHA-256".into(),
            format!(
                "<code class=\"sha\">{}</code>",
                esc(head.protocol_sha256.as_deref().unwrap_or(""))
            ),
        ),
        (
            "Lab version".into(),
            esc(head.lab_version.as_deref().unwrap_or("")),
        ),
        (
            "Run started".into(),
            esc(head.started.as_deref().unwrap_or("")),
        ),
        (
            "First dose (T+0)".into(),
            esc(&t0
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_else(|| "no dose".into())),
        ),
        ("Last event".into(), esc(head.last.as_deref().unwrap_or(""))),
        (
            "Run state".into(),
            format!(
                "{}{}",
                esc(state),
                if head.resumed > 0 {
                    format!(", resumed {} time(s)", head.resumed)
                } else {
                    String::new()
                }
            ),
        ),
    ];
    if let Some(c) = &head.consent {
        rows.push(("Consent".into(), esc(c)));
    }
    for (name, sha) in &head.feeds {
        rows.push((
            format!("Feed file <code>{}</code>", esc(name)),
            format!("<code class=\"feed\">{}</code>", esc(sha)),
        ));
    }
    h.push_str("<table class=\"meta\" id=\"header\">\n");
    for (k, v) in rows {
        let _ = writeln!(h, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    h.push_str("</table>\n");
    for (rule, message) in &head.stop_rules {
        let _ = writeln!(
            h,
            "<p class=\"warn\"><b>Stop rule {}</b>: {}</p>",
            esc(rule),
            esc(message)
        );
    }

    // At a glance.
    let count = |o: Outcome| outcomes.iter().filter(|x| x.outcome == o).count();
    let allocated = outcomes.iter().filter(|o| o.arm.is_some()).count();
    let eligible = run.devices.iter().filter(|d| d.eligible).count();
    let cards = [
        (run.devices.len(), "devices enrolled"),
        (eligible, "eligible"),
        (allocated, "allocated"),
        (count(Outcome::Updated), "updated"),
        (
            count(Outcome::WrongVersion)
                + count(Outcome::CommandError)
                + count(Outcome::LostToFollowUp),
            "wrong version / error / lost",
        ),
    ];
    h.push_str("<div class=\"cards\">");
    for (n, label) in cards {
        let _ = write!(
            h,
            "<div class=\"card\"><b>{n}</b><span>{label}</span></div>"
        );
    }
    h.push_str("</div>\n");
    if !head.notes.is_empty() {
        h.push_str("<h3>Run-level observations</h3>\n<ul class=\"notes\">\n");
        for (seq, at, source, kind, key, value) in &head.notes {
            let _ = writeln!(
                h,
                "<li><span class=\"mono\">{}</span> [{}] <b>{}</b> {}: {} <span class=\"mono\">(seq {seq})</span></li>",
                esc(at),
                esc(source),
                esc(kind),
                esc(key),
                esc(value)
            );
        }
        h.push_str("</ul>\n");
    }
}

// ---------------------------------------------------------------------------------------------
// CONSORT diagram.

struct FlowBox {
    x: f64,
    y: f64,
    w: f64,
    title: String,
    lines: Vec<String>,
    class: &'static str,
}

const LINE_H: f64 = 16.0;
const CHAR_W: f64 = 6.6;

impl FlowBox {
    fn h(&self) -> f64 {
        26.0 + self.lines.len() as f64 * LINE_H
    }

    fn svg(&self, out: &mut String) {
        let max = ((self.w - 16.0) / CHAR_W) as usize;
        let _ = write!(
            out,
            "<rect class=\"{}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"4\"/>",
            self.class,
            self.x,
            self.y,
            self.w,
            self.h()
        );
        let _ = write!(
            out,
            "<text class=\"t\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            self.x + 8.0,
            self.y + 18.0,
            esc(&clip(&self.title, max))
        );
        for (i, l) in self.lines.iter().enumerate() {
            let _ = write!(
                out,
                "<text class=\"d\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                self.x + 14.0,
                self.y + 18.0 + LINE_H * (i as f64 + 1.0),
                esc(&clip(l, max - 1))
            );
        }
        out.push('\n');
    }
}

fn arrow(out: &mut String, x1: f64, y1: f64, x2: f64, y2: f64) {
    let _ = writeln!(
        out,
        "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" marker-end=\"url(#arrowhead)\"/>"
    );
}

fn reasons(list: &[(String, usize)]) -> Vec<String> {
    list.iter().map(|(r, n)| format!("{r}: {n}")).collect()
}

fn consort(h: &mut String, f: &flow::Flow) {
    h.push_str("<section class=\"flow\" id=\"consort\">\n<h2>CONSORT flow</h2>\n");
    let k = f.arms.len().max(1) as f64;
    let col_w = 300.0f64;
    let gap = 30.0;
    let width = (k * col_w + (k - 1.0) * gap + 40.0).max(1000.0);
    let cx = width / 2.0;
    let main_w = 320.0;
    let side_w = 290.0;
    let side_x = cx + main_w / 2.0 + 36.0;
    let mut body = String::new();

    let mut y = 14.0;
    let mut enrolled_lines = vec![format!("assessed for eligibility: {}", f.assessed)];
    if f.not_assessed > 0 {
        enrolled_lines.push(format!("not assessed: {}", f.not_assessed));
    }
    let enrolled = FlowBox {
        x: cx - main_w / 2.0,
        y,
        w: main_w,
        title: format!("Enrolled (discovered): n = {}", f.enrolled),
        lines: enrolled_lines,
        class: "main",
    };
    let excluded = FlowBox {
        x: side_x,
        y: y + enrolled.h() + 18.0,
        w: side_w,
        title: format!("Excluded: n = {}", f.excluded),
        lines: reasons(&f.excluded_by_rule),
        class: "side",
    };
    let ey = excluded.y + excluded.h() + 18.0;
    y = ey.max(enrolled.y + enrolled.h() + 40.0);
    let mut eligible_lines = Vec::new();
    if f.not_allocated > 0 {
        eligible_lines.push(format!("not allocated: {}", f.not_allocated));
    }
    let eligible = FlowBox {
        x: cx - main_w / 2.0,
        y,
        w: main_w,
        title: format!("Eligible: n = {}", f.eligible),
        lines: eligible_lines,
        class: "main",
    };
    enrolled.svg(&mut body);
    excluded.svg(&mut body);
    eligible.svg(&mut body);
    arrow(
        &mut body,
        cx,
        enrolled.y + enrolled.h(),
        cx,
        eligible.y - 2.0,
    );
    let mid = excluded.y + excluded.h() / 2.0;
    arrow(&mut body, cx, mid, side_x - 2.0, mid);

    // Per-arm columns.
    let total_w = k * col_w + (k - 1.0) * gap;
    let left = cx - total_w / 2.0;
    let branch_y = eligible.y + eligible.h() + 18.0;
    let row0 = branch_y + 22.0;
    if !f.arms.is_empty() {
        let _ = writeln!(
            body,
            "<line x1=\"{cx:.1}\" y1=\"{:.1}\" x2=\"{cx:.1}\" y2=\"{branch_y:.1}\"/>",
            eligible.y + eligible.h()
        );
        let xs: Vec<f64> = (0..f.arms.len())
            .map(|i| left + i as f64 * (col_w + gap) + col_w / 2.0)
            .collect();
        let _ = writeln!(
            body,
            "<line x1=\"{:.1}\" y1=\"{branch_y:.1}\" x2=\"{:.1}\" y2=\"{branch_y:.1}\"/>",
            xs[0].min(cx),
            xs[xs.len() - 1].max(cx)
        );
        for x in &xs {
            arrow(&mut body, *x, branch_y, *x, row0 - 2.0);
        }
    }
    // Four rows of boxes, aligned across arms.
    let stages: Vec<Vec<(String, Vec<String>)>> = f
        .arms
        .iter()
        .map(|a| {
            vec![
                (
                    format!("Allocated to {}: n = {}", a.arm, a.allocated),
                    vec![],
                ),
                (
                    format!("Received the dose: n = {}", a.received),
                    reasons(&a.not_received)
                        .into_iter()
                        .map(|r| format!("not received, {r}"))
                        .collect(),
                ),
                (
                    format!(
                        "Lost to follow-up: n = {}",
                        a.lost_to_follow_up.iter().map(|x| x.1).sum::<usize>()
                    ),
                    reasons(&a.lost_to_follow_up),
                ),
                (
                    format!("Analysed: n = {}", a.analysed),
                    a.outcomes
                        .iter()
                        .map(|(o, n)| format!("{o}: {n}"))
                        .collect(),
                ),
            ]
        })
        .collect();
    let mut row_y = row0;
    for stage in 0..4 {
        let boxes: Vec<FlowBox> = stages
            .iter()
            .enumerate()
            .map(|(i, s)| FlowBox {
                x: left + i as f64 * (col_w + gap),
                y: row_y,
                w: col_w,
                title: s[stage].0.clone(),
                lines: s[stage].1.clone(),
                class: if stage == 0 { "arm" } else { "main" },
            })
            .collect();
        let tallest = boxes.iter().map(FlowBox::h).fold(0.0, f64::max);
        for b in &boxes {
            b.svg(&mut body);
            if stage < 3 {
                let x = b.x + col_w / 2.0;
                arrow(&mut body, x, b.y + b.h(), x, row_y + tallest + 28.0 - 2.0);
            }
        }
        row_y += tallest + 28.0;
    }
    if f.arms.is_empty() {
        let _ = write!(
            body,
            "<text class=\"d\" x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">No device was allocated to an arm.</text>",
            row0 + 10.0
        );
        row_y = row0 + 30.0;
    }
    let height = row_y;
    let _ = write!(
        h,
        "<svg class=\"consort\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width:.0} {height:.0}\" \
         role=\"img\" aria-label=\"CONSORT flow diagram\">\n<defs><marker id=\"arrowhead\" viewBox=\"0 0 10 10\" \
         refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" \
         style=\"fill:#52606d;stroke:none\"/></marker></defs>\n{body}</svg>\n</section>\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Baseline table.

fn json_at<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a serde_json::Value> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.get("value").filter(|x| !x.is_null())
}

fn baseline_num(d: &Facts, path: &[&str]) -> Option<f64> {
    json_at(d.probe.as_ref()?, path)?.as_f64()
}

fn baseline_bool(d: &Facts, path: &[&str]) -> Option<bool> {
    json_at(d.probe.as_ref()?, path)?.as_bool()
}

/// `a ×2, b ×1`, most frequent first, then alphabetical.
fn tally(values: impl Iterator<Item = String>) -> String {
    let mut m: BTreeMap<String, usize> = BTreeMap::new();
    for v in values {
        *m.entry(v).or_default() += 1;
    }
    let mut v: Vec<(String, usize)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.iter()
        .map(|(k, n)| format!("{} ×{n}", esc(k)))
        .collect::<Vec<_>>()
        .join("<br>")
}

fn median_range(mut xs: Vec<f64>, fmt: impl Fn(f64) -> String) -> String {
    if xs.is_empty() {
        return "—".into();
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    let med = if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    };
    format!("{} [{}–{}]", fmt(med), fmt(xs[0]), fmt(xs[n - 1]))
}

fn count_of(group: &[&Facts], f: impl Fn(&Facts) -> Option<bool>) -> String {
    let known: Vec<bool> = group.iter().filter_map(|d| f(d)).collect();
    let yes = known.iter().filter(|x| **x).count();
    if known.len() == group.len() {
        format!("{yes}")
    } else {
        format!("{yes} ({} unknown)", group.len() - known.len())
    }
}

/// Arms in order of first allocation.
fn arm_names(outcomes: &[DeviceOutcome]) -> Vec<String> {
    let mut arms: Vec<String> = Vec::new();
    for o in outcomes {
        if let Some(a) = &o.arm
            && !arms.contains(a)
        {
            arms.push(a.clone());
        }
    }
    arms
}

fn baseline(h: &mut String, run: &RunFacts, outcomes: &[DeviceOutcome]) {
    h.push_str("<section id=\"baseline\">\n<h2>Baseline by arm</h2>\n");
    let arms = arm_names(outcomes);
    let mut groups: Vec<(String, Vec<&Facts>)> = arms
        .iter()
        .map(|a| {
            (
                format!("Arm {a}"),
                run.devices
                    .iter()
                    .filter(|d| d.arm.as_deref() == Some(a.as_str()))
                    .collect(),
            )
        })
        .collect();
    let rest: Vec<&Facts> = run.devices.iter().filter(|d| d.arm.is_none()).collect();
    if !rest.is_empty() {
        groups.push(("Not allocated".into(), rest));
    }
    groups.push(("All devices".into(), run.devices.iter().collect()));
    type Row = (&'static str, Box<dyn Fn(&[&Facts]) -> String>);
    let rows: Vec<Row> = vec![
        ("Devices", Box::new(|g: &[&Facts]| g.len().to_string())),
        (
            "Model",
            Box::new(|g: &[&Facts]| tally(g.iter().map(|d| model(d).unwrap_or("unknown".into())))),
        ),
        (
            "iOS at baseline (build)",
            Box::new(|g: &[&Facts]| {
                tally(g.iter().map(|d| {
                    format!(
                        "{} ({})",
                        d.starting_version().unwrap_or("?".into()),
                        d.starting_build().unwrap_or("?".into())
                    )
                }))
            }),
        ),
        (
            "Battery %, median [range]",
            Box::new(|g: &[&Facts]| {
                median_range(
                    g.iter()
                        .filter_map(|d| {
                            baseline_num(d, &["baseline", "battery", "current_capacity"])
                        })
                        .collect(),
                    |x| format!("{x:.0}"),
                )
            }),
        ),
        (
            "On external power",
            Box::new(|g: &[&Facts]| {
                count_of(g, |d| {
                    baseline_bool(d, &["baseline", "battery", "external_connected"])
                })
            }),
        ),
        (
            "Free space GB, median [range]",
            Box::new(|g: &[&Facts]| {
                median_range(
                    g.iter()
                        .filter_map(|d| {
                            baseline_num(d, &["baseline", "disk", "amount_data_available"])
                        })
                        .map(|b| b / 1e9)
                        .collect(),
                    |x| format!("{x:.1}"),
                )
            }),
        ),
        (
            "Supervised",
            Box::new(|g: &[&Facts]| {
                count_of(g, |d| {
                    baseline_bool(d, &["baseline", "supervision", "device_is_chaperoned"])
                })
            }),
        ),
        (
            "Passcode set",
            Box::new(|g: &[&Facts]| {
                count_of(g, |d| {
                    baseline_bool(d, &["baseline", "passcode", "password_protected"])
                })
            }),
        ),
        (
            "Baseline probe not ok",
            Box::new(|g: &[&Facts]| {
                g.iter()
                    .filter(|d| {
                        d.probe
                            .as_ref()
                            .and_then(|p| p.get("status"))
                            .and_then(|s| s.as_str())
                            != Some("ok")
                    })
                    .count()
                    .to_string()
            }),
        ),
    ];
    h.push_str("<table class=\"baseline\">\n<thead><tr><th></th>");
    for (name, _) in &groups {
        let _ = write!(h, "<th>{}</th>", esc(name));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for (label, f) in &rows {
        let _ = write!(h, "<tr><th>{label}</th>");
        for (_, g) in &groups {
            let _ = write!(h, "<td>{}</td>", f(g));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table>\n</section>\n");
}

// ---------------------------------------------------------------------------------------------
// Swimlanes.

/// One journal entry as a device's lane reads it: the entries of the device and the run-level
/// ones (`journal::by_device`) whose time parses, reduced to what [`lane_data`] looks at.
#[derive(Debug)]
pub(crate) struct LaneEv {
    pub seq: u64,
    pub at: Instant,
    pub kind: LaneKind,
}

#[derive(Debug)]
pub(crate) enum LaneKind {
    Discovered,
    Eligibility(bool),
    Command(Rc<str>),
    /// `DoseEnqueued` (ok) or `DoseFailed`/`DoseUncertain` of a command.
    Dose {
        uuid: Box<str>,
        ok: bool,
    },
    /// An `MdmResult`: its time (`received_at` when it parses) and request type (its own, else
    /// that of the device's command with its CommandUUID sent so far).
    Answer {
        at: Instant,
        request_type: Option<Rc<str>>,
        answer: LaneAnswer,
    },
    Reprobe {
        attached: bool,
    },
    /// source, kind, key, value.
    Observation(Box<[String; 4]>),
    FollowUpEnded,
    /// Any other entry of the device, or a run-level one.
    Other,
}

/// Which answer: the device's `answers[i]` once it was discovered, else the answer's own
/// status and CommandUUID.
#[derive(Debug)]
pub(crate) enum LaneAnswer {
    Fact(u32),
    Early(Box<(Rc<str>, Box<str>)>),
}

/// What one device's lane shows, in journal order.
#[derive(Default)]
struct LaneData {
    /// (time, status) changes.
    changes: Vec<(Instant, Status)>,
    end: Option<Instant>,
    /// (time, step, install action, ok).
    doses: Vec<(Instant, u32, String, bool)>,
    /// (time, request type).
    commands: Vec<(Instant, Rc<str>)>,
    /// (time, request type, status).
    answers: Vec<(Instant, Rc<str>, Rc<str>)>,
    /// (time, source, kind, key, value, seq).
    observations: Vec<(Instant, String, String, String, String, u64)>,
}

fn lane_data(events: &[&LaneEv], d: &Facts, o: &DeviceOutcome) -> LaneData {
    let mut l = LaneData::default();
    let mut base = Status::Enrolled;
    let mut detached = false;
    let mut dosed = false;
    let downloaded: HashSet<u64> = d.downloaded.iter().map(|x| x.0).collect();
    let statuses: HashMap<u64, &str> = d.update_statuses.iter().map(|(s, v)| (*s, &**v)).collect();
    let mut builds: HashMap<u64, &outcome::BuildSeen> = HashMap::new();
    for b in &d.builds {
        builds.entry(b.seq).or_insert(b);
    }
    let dose_uuids = d.dose_uuids();
    let unknown: Rc<str> = Rc::from("unknown");
    for e in events {
        let at = e.at;
        let mut at_used = at;
        match &e.kind {
            LaneKind::Eligibility(eligible) => {
                base = if *eligible {
                    Status::Eligible
                } else {
                    Status::Excluded
                };
            }
            LaneKind::Command(request_type) => {
                l.commands.push((at, request_type.clone()));
            }
            LaneKind::Dose { uuid, ok } => {
                if let Some(i) = d.intents.iter().find(|i| *i.command_uuid == **uuid) {
                    l.doses.push((at, i.step, i.install_action.clone(), *ok));
                }
                if *ok && !dosed {
                    dosed = true;
                    base = Status::Dosed;
                }
            }
            LaneKind::Answer {
                at: received,
                request_type,
                answer,
            } => {
                at_used = *received;
                let (status, uuid) = match answer {
                    LaneAnswer::Fact(i) => {
                        let a = &d.answers[*i as usize];
                        (&a.status, &a.command_uuid)
                    }
                    LaneAnswer::Early(x) => (&x.0, &x.1),
                };
                let rt = request_type.clone().unwrap_or_else(|| unknown.clone());
                l.answers.push((at_used, rt, status.clone()));
                detached = false;
                if dose_uuids.contains(&**uuid)
                    && matches!(&**status, "Error" | "CommandFormatError")
                    && !matches!(base, Status::Updated | Status::WrongVersion)
                {
                    base = Status::Error;
                }
                if dosed && !matches!(base, Status::Updated | Status::WrongVersion) {
                    if downloaded.contains(&e.seq) {
                        base = Status::Downloaded;
                    } else if let Some(s) = statuses.get(&e.seq) {
                        if s.contains("Install") {
                            base = Status::Installing;
                        } else if s.contains("Download") && base != Status::Downloaded {
                            base = Status::Downloading;
                        }
                    }
                }
            }
            LaneKind::Reprobe { attached } => {
                detached = !*attached;
            }
            LaneKind::Observation(o) => {
                let [source, kind, key, value] = &**o;
                l.observations.push((
                    at,
                    source.clone(),
                    kind.clone(),
                    key.clone(),
                    value.clone(),
                    e.seq,
                ));
            }
            LaneKind::FollowUpEnded => {
                l.end = Some(at);
            }
            LaneKind::Discovered | LaneKind::Other => {}
        }
        // A build report after the dose settles the status.
        if dosed && let Some(b) = builds.get(&e.seq) {
            if o.target_build.as_deref() == Some(b.build.as_str())
                || (o.target_build.is_none()
                    && o.starting_build.as_deref().is_some_and(|s| s != b.build))
            {
                base = Status::Updated;
            } else if o.starting_build.as_deref() != Some(b.build.as_str()) {
                base = Status::WrongVersion;
            }
        }
        let now = if detached { Status::Detached } else { base };
        match l.changes.last() {
            None => {
                if matches!(e.kind, LaneKind::Discovered) {
                    l.changes.push((at, now));
                }
            }
            Some(&(prev_t, prev)) if prev != now => {
                l.changes.push((at_used.min(at).max(prev_t), now));
            }
            Some(_) => {}
        }
    }
    l
}

/// A "nice" tick step (seconds) giving at most ~10 ticks over `span`.
fn tick_step(span: f64) -> f64 {
    const STEPS: [f64; 16] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
        14400.0, 43200.0,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| span / s <= 10.0)
        .unwrap_or(86400.0 * (span / 86400.0 / 10.0).ceil().max(1.0))
}

const LANE_W: f64 = 1200.0;
const PLOT_X: f64 = 92.0;
const PLOT_R: f64 = 1188.0;

fn timelines(
    h: &mut String,
    digest: &super::digest::Digest,
    t0: Option<&Time>,
    anomalies: &[AnomalyLink],
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let (run, outcomes) = (&digest.run, &digest.outcomes);
    h.push_str("<section id=\"timelines\">\n<h2>Device timelines</h2>\n");
    let (Some(first), Some(last)) = (&digest.head.earliest, &digest.head.latest) else {
        h.push_str("<p>No events.</p>\n</section>\n");
        return Ok(());
    };
    let t0 = t0.map(|t| t.with_timezone(&Utc)).unwrap_or(*first);
    let secs = |t: &Instant| (*t - t0).num_milliseconds() as f64 / 1000.0;
    let lo = secs(first).min(0.0);
    let hi = secs(last).max(lo + 1.0);
    let span = hi - lo;
    let x = |s: f64| PLOT_X + (s - lo) / span * (PLOT_R - PLOT_X);
    let _ = writeln!(
        h,
        "<p class=\"sub\">Times are relative to the first dose (T+0 = first <code>DoseEnqueued</code>); \
         one lane per device, in order of discovery. The whole run spans {} before and {} after T+0.</p>",
        dur(-lo),
        dur(hi)
    );
    h.push_str("<div class=\"legend\">");
    for s in Status::LEGEND {
        let _ = write!(
            h,
            "<span><i class=\"{}\"></i>{}</span>",
            s.class(),
            s.label()
        );
    }
    h.push_str(
        "<span>◆ dose (ScheduleOSUpdate)</span><span>| command sent</span>\
         <span>● answer: <b style=\"color:#1f9d55\">Acknowledged</b> / <b style=\"color:#d64545\">Error</b> / \
         <b style=\"color:#7b8794\">NotNow</b></span><span>▲ observation (orange: operator)</span><span>┃ follow-up ended (then the last status, faded)</span></div>\n",
    );
    let step = tick_step(span);
    for (i, (d, o)) in run.devices.iter().zip(outcomes).enumerate() {
        // What is written so far goes out before each lane: a long run has a million answers.
        out.write_all(h.as_bytes())?;
        h.clear();
        let l = lane_data(&digest.lane(i), d, o);
        let _ = write!(
            h,
            "<section class=\"lane\" id=\"dev-{}\" data-udid=\"{}\">\n<header><h3>{}. {}</h3>",
            i + 1,
            esc(&d.udid),
            i + 1,
            esc(&device_name(d))
        );
        if let Some(a) = &d.arm {
            let _ = write!(h, "{}", badge("arm", a));
        }
        let _ = write!(h, "{}", badge(outcome_class(o.outcome), o.outcome.as_str()));
        let builds = format!(
            "{} ({}) → {}",
            o.starting_version.as_deref().unwrap_or("?"),
            o.starting_build.as_deref().unwrap_or("?"),
            match (&o.final_version, &o.final_build) {
                (_, None) => "no build reported".to_string(),
                (v, Some(b)) => format!("{} ({b})", v.as_deref().unwrap_or("?")),
            }
        );
        let _ = writeln!(
            h,
            "<span class=\"facts\"><span class=\"mono\">{}</span> · {} · {}{}{}</span></header>",
            esc(&d.udid),
            esc(&model(d).unwrap_or_default()),
            esc(&builds),
            o.target_build
                .as_deref()
                .map(|t| format!(" · target {}", esc(t)))
                .unwrap_or_default(),
            o.reason
                .as_deref()
                .map(|r| format!(" · {}", esc(r)))
                .unwrap_or_default()
        );

        // The SVG.
        let rows = [
            ("status", 10.0),
            ("doses", 44.0),
            ("commands", 62.0),
            ("answers", 80.0),
            ("notes", 98.0),
        ];
        let height = 132.0;
        let mut s = String::new();
        let _ = write!(
            s,
            "<svg class=\"swimlane\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {LANE_W:.0} {height:.0}\" \
             role=\"img\" aria-label=\"timeline of device {}\">",
            i + 1
        );
        let _ = write!(
            s,
            "<defs><pattern id=\"hatch-{}\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" \
             patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#fff\"/>\
             <rect width=\"3\" height=\"6\" fill=\"#3e4c59\"/></pattern></defs>",
            i + 1
        );
        // Grid and ticks.
        let mut t = (lo / step).ceil() * step;
        while t <= hi + 1e-9 {
            let gx = x(t);
            let class = if t.abs() < 1e-9 { "zero" } else { "grid" };
            let _ = write!(
                s,
                "<line class=\"{class}\" x1=\"{gx:.1}\" y1=\"6\" x2=\"{gx:.1}\" y2=\"112\"/>\
                 <text class=\"tick\" x=\"{gx:.1}\" y=\"125\" text-anchor=\"middle\">{}</text>",
                rel(t)
            );
            t += step;
        }
        if (lo / step).ceil() * step != 0.0 && lo <= 0.0 {
            let gx = x(0.0);
            let _ = write!(
                s,
                "<line class=\"zero\" x1=\"{gx:.1}\" y1=\"6\" x2=\"{gx:.1}\" y2=\"112\"/>"
            );
        }
        for (label, y) in rows {
            let _ = write!(
                s,
                "<text class=\"rowlabel\" x=\"4\" y=\"{:.1}\">{label}</text>",
                if label == "status" { y + 14.0 } else { y + 4.0 }
            );
        }
        // Status band.
        let end = l.end.map(|e| secs(&e)).unwrap_or(hi);
        for (j, (start, status)) in l.changes.iter().enumerate() {
            let a = secs(start);
            let b = l
                .changes
                .get(j + 1)
                .map(|c| secs(&c.0))
                .unwrap_or(end)
                .max(a);
            let (xa, xb) = (x(a), x(b).max(x(a) + 1.5));
            let style = if *status == Status::Detached {
                format!(" style=\"fill:url(#hatch-{})\"", i + 1)
            } else {
                String::new()
            };
            let _ = write!(
                s,
                "<rect class=\"{}\"{style} x=\"{xa:.1}\" y=\"10\" width=\"{:.1}\" height=\"20\"><title>{} from {} to {}</title></rect>",
                status.class(),
                xb - xa,
                status.label(),
                rel(a),
                rel(b)
            );
        }
        if end < hi
            && let Some((_, last_status)) = l.changes.last()
        {
            let style = if *last_status == Status::Detached {
                format!(" style=\"fill:url(#hatch-{})\"", i + 1)
            } else {
                String::new()
            };
            let _ = write!(
                s,
                "<rect class=\"{}\"{style} opacity=\"0.35\" x=\"{:.1}\" y=\"15\" width=\"{:.1}\" height=\"10\"><title>follow-up ended at {} ({})</title></rect>\
                 <line x1=\"{:.1}\" y1=\"6\" x2=\"{:.1}\" y2=\"34\" style=\"stroke:#102a43;stroke-width:2\"/>",
                last_status.class(),
                x(end),
                x(hi) - x(end),
                rel(end),
                last_status.label(),
                x(end),
                x(end)
            );
        }
        // Doses; the labels of doses too close to label apart are joined after the last one.
        let mut groups: Vec<(f64, Vec<String>)> = Vec::new();
        for (t, step_n, action, ok) in &l.doses {
            let px = x(secs(t));
            let label = format!("S{step_n} {}", clip(action, 14));
            let class = if *ok { "dose" } else { "dosefail" };
            let _ = write!(
                s,
                "<path class=\"{class}\" d=\"M{px:.1},38 l6,6 l-6,6 l-6,-6 z\"><title>dose step {step_n} {} at {}{}</title></path>",
                esc(action),
                rel(secs(t)),
                if *ok { "" } else { " (not enqueued)" },
            );
            match groups.last_mut() {
                Some((last, labels))
                    if px < *last + 8.0 + labels.join(" · ").chars().count() as f64 * 5.8 =>
                {
                    *last = px;
                    labels.push(label);
                }
                _ => groups.push((px, vec![label])),
            }
        }
        for (px, labels) in &groups {
            let _ = write!(
                s,
                "<text class=\"dlabel\" x=\"{:.1}\" y=\"48\">{}</text>",
                px + 8.0,
                esc(&labels.join(" · "))
            );
        }
        // Commands.
        for (t, rt) in &l.commands {
            let px = x(secs(t));
            let _ = write!(
                s,
                "<line class=\"cmd\" x1=\"{px:.1}\" y1=\"56\" x2=\"{px:.1}\" y2=\"68\"><title>{} sent at {}</title></line>",
                esc(rt),
                rel(secs(t))
            );
        }
        // Answers.
        for (t, rt, st) in &l.answers {
            let px = x(secs(t));
            let _ = write!(
                s,
                "<circle class=\"{}\" cx=\"{px:.1}\" cy=\"80\" r=\"3.2\"><title>{} answered {} at {}</title></circle>",
                answer_class(st),
                esc(rt),
                esc(st),
                rel(secs(t))
            );
        }
        // Observations.
        for (n, (t, source, kind, key, value, _)) in l.observations.iter().enumerate() {
            let px = x(secs(t));
            let class = if source == "operator" {
                "obs-operator"
            } else {
                "obs-harness"
            };
            let _ = write!(
                s,
                "<path class=\"{class}\" d=\"M{px:.1},91 l6,11 l-12,0 z\"><title>[{}] {} {}: {}</title></path>\
                 <text class=\"dlabel\" x=\"{:.1}\" y=\"102\">{}</text>",
                esc(source),
                esc(kind),
                esc(key),
                esc(value),
                px + 7.0,
                n + 1
            );
        }
        s.push_str("</svg>\n");
        h.push_str(&s);
        if !l.observations.is_empty() {
            h.push_str("<ol class=\"obs\">");
            for (t, source, kind, key, value, seq) in &l.observations {
                let _ = write!(
                    h,
                    "<li><span class=\"mono\">{}</span> [{}] <b>{}</b> {}: {} <span class=\"mono\">(seq {seq})</span></li>",
                    rel(secs(t)),
                    esc(source),
                    esc(kind),
                    esc(key),
                    esc(value)
                );
            }
            h.push_str("</ol>\n");
        }
        let mine: Vec<&AnomalyLink> = anomalies
            .iter()
            .filter(|a| a.udid.as_deref() == Some(d.udid.as_str()))
            .collect();
        if !mine.is_empty() {
            h.push_str("<ul class=\"lane-anomalies\">");
            for a in mine {
                let _ = write!(
                    h,
                    "<li>Anomaly <a href=\"{}\">{}</a>: {}</li>",
                    esc(&radar_href(&a.id)),
                    esc(&a.id),
                    esc(&a.title)
                );
            }
            h.push_str("</ul>\n");
        }
        h.push_str("</section>\n");
    }
    h.push_str("</section>\n");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Outcomes, adverse events, anomalies.

fn pct(n: usize, of: usize) -> String {
    if of == 0 {
        format!("{n}")
    } else {
        format!("{n} ({:.0}%)", n as f64 * 100.0 / of as f64)
    }
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

fn outcomes_section(h: &mut String, run: &RunFacts, outcomes: &[DeviceOutcome]) {
    h.push_str("<section id=\"outcomes\">\n<h2>Outcomes per arm</h2>\n");
    let arms = arm_names(outcomes);
    if arms.is_empty() {
        h.push_str("<p>No device was allocated to an arm.</p>\n");
    } else {
        let groups: Vec<Vec<&DeviceOutcome>> = arms
            .iter()
            .map(|a| {
                outcomes
                    .iter()
                    .filter(|o| o.arm.as_deref() == Some(a.as_str()))
                    .collect()
            })
            .collect();
        h.push_str("<table class=\"outcomes\">\n<thead><tr><th>Outcome</th>");
        for (a, g) in arms.iter().zip(&groups) {
            let _ = write!(h, "<th class=\"num\">{} (n = {})</th>", esc(a), g.len());
        }
        h.push_str("</tr></thead>\n<tbody>\n");
        for oc in Outcome::ALL {
            if !groups.iter().flatten().any(|o| o.outcome == oc) {
                continue;
            }
            let _ = write!(h, "<tr><th>{}</th>", badge(outcome_class(oc), oc.as_str()));
            for g in &groups {
                let n = g.iter().filter(|o| o.outcome == oc).count();
                let _ = write!(h, "<td class=\"num\">{}</td>", pct(n, g.len()));
            }
            h.push_str("</tr>\n");
        }
        type Pick = fn(&DeviceOutcome) -> Option<f64>;
        let timing: [(&str, Pick); 2] = [
            ("Time to download, median [n]", |o| o.time_to_download_s),
            ("Time to new build, median [n]", |o| o.time_to_new_build_s),
        ];
        for (label, pick) in timing {
            let _ = write!(h, "<tr><th>{label}</th>");
            for g in &groups {
                let xs: Vec<f64> = g.iter().filter_map(|o| pick(o)).collect();
                let n = xs.len();
                let cell = median(xs)
                    .map(|m| format!("{} [{n}]", dur(m)))
                    .unwrap_or_else(|| "—".into());
                let _ = write!(h, "<td class=\"num\">{cell}</td>");
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</tbody></table>\n");
    }

    h.push_str(
        "<h3>Per device</h3>\n<table class=\"per-device\">\n<thead><tr><th>#</th><th>Device</th><th>Arm</th>\
         <th>Outcome</th><th>Start → final build</th><th>Target</th><th class=\"num\">To download</th>\
         <th class=\"num\">To new build</th><th>Last dose answer</th><th>Reason / deviations</th></tr></thead>\n<tbody>\n",
    );
    for (i, (d, o)) in run.devices.iter().zip(outcomes).enumerate() {
        let mut notes: Vec<String> = o.reason.iter().cloned().collect();
        notes.extend(o.deviations.iter().cloned());
        let _ = writeln!(
            h,
            "<tr><td class=\"num\"><a href=\"#dev-{n}\">{n}</a></td><td>{}<br><span class=\"mono\">{}</span></td>\
             <td>{}</td><td>{}</td><td>{} → {}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td>{}</td><td>{}</td></tr>",
            esc(&device_name(d)),
            esc(&d.udid),
            esc(o.arm.as_deref().unwrap_or("—")),
            badge(outcome_class(o.outcome), o.outcome.as_str()),
            esc(o.starting_build.as_deref().unwrap_or("?")),
            esc(o.final_build.as_deref().unwrap_or("—")),
            esc(o.target_build.as_deref().unwrap_or("—")),
            o.time_to_download_s.map(dur).unwrap_or_default(),
            o.time_to_new_build_s.map(dur).unwrap_or_default(),
            esc(o.last_mdm_status.as_deref().unwrap_or("")),
            notes
                .iter()
                .map(|n| esc(n))
                .collect::<Vec<_>>()
                .join("<br>"),
            n = i + 1
        );
    }
    h.push_str("</tbody></table>\n</section>\n");
}

fn adverse(h: &mut String, text: &str, run: &RunFacts) {
    h.push_str("<section id=\"adverse-events\">\n<h2>Adverse events</h2>\n");
    let mut r = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let header: Vec<String> = r
        .headers()
        .map(|h| h.iter().map(str::to_string).collect())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = r
        .records()
        .filter_map(Result::ok)
        .map(|x| x.iter().map(str::to_string).collect())
        .collect();
    if rows.is_empty() {
        h.push_str(
            "<p>None recorded or derived (see <code>adverse_events.csv</code>).</p>\n</section>\n",
        );
        return;
    }
    let col = |row: &[String], name: &str| {
        header
            .iter()
            .position(|c| c == name)
            .and_then(|i| row.get(i).cloned())
            .unwrap_or_default()
    };
    h.push_str(
        "<table class=\"ae\">\n<thead><tr><th>Device</th><th>Arm</th><th>Term</th><th>Start</th><th>Severity</th>\
         <th>Serious</th><th>Related</th><th>Outcome</th><th>Detail</th></tr></thead>\n<tbody>\n",
    );
    for row in &rows {
        let udid = col(row, "udid");
        let device = match run.devices.iter().position(|d| d.udid == udid) {
            Some(i) => format!(
                "<a href=\"#dev-{}\">{}</a>",
                i + 1,
                esc(&device_name(&run.devices[i]))
            ),
            None => esc(&udid),
        };
        let sev = col(row, "severity");
        let sev_class = match sev.as_str() {
            "severe" => "o-bad",
            "moderate" => "o-warn",
            "mild" => "o-neutral",
            _ => "o-none",
        };
        let _ = writeln!(
            h,
            "<tr><td>{device}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&col(row, "arm")),
            esc(&col(row, "term")),
            esc(&col(row, "start")),
            badge(sev_class, &sev),
            esc(&col(row, "serious")),
            esc(&col(row, "relatedness")),
            esc(&col(row, "outcome")),
            esc(&col(row, "detail"))
        );
    }
    h.push_str("</tbody></table>\n</section>\n");
}

/// `radar/<id>.md`, with anything but `[A-Za-z0-9._-]` in the id percent-encoded (no `..`
/// path tricks, no scheme).
fn radar_href(id: &str) -> String {
    let mut out = String::from("radar/");
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && !id.contains(".."))
        {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out.push_str(".md");
    out
}

fn anomalies_section(h: &mut String, run: &RunFacts, anomalies: &[AnomalyLink]) {
    h.push_str("<section id=\"anomalies\">\n<h2>Anomalies</h2>\n");
    if anomalies.is_empty() {
        h.push_str("<p>No anomalies were reported for this run.</p>\n</section>\n");
        return;
    }
    h.push_str(
        "<table class=\"anomalies\">\n<thead><tr><th>Anomaly</th><th>Title</th><th>Device</th></tr></thead>\n<tbody>\n",
    );
    for a in anomalies {
        let device = match &a.udid {
            None => "run".to_string(),
            Some(u) => match run.devices.iter().position(|d| &d.udid == u) {
                Some(i) => format!(
                    "<a href=\"#dev-{}\">{}</a>",
                    i + 1,
                    esc(&device_name(&run.devices[i]))
                ),
                None => esc(u),
            },
        };
        let _ = writeln!(
            h,
            "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{device}</td></tr>",
            esc(&radar_href(&a.id)),
            esc(&a.id),
            esc(&a.title)
        );
    }
    h.push_str("</tbody></table>\n</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_relative_times() {
        assert_eq!(
            esc("<img src=x onerror='a'>&\"\u{1}"),
            "&lt;img src=x onerror=&#39;a&#39;&gt;&amp;&quot;\u{FFFD}"
        );
        assert_eq!(rel(0.0), "T+0s");
        assert_eq!(rel(-12.0), "T−12s");
        assert_eq!(rel(185.0), "T+3m05s");
        assert_eq!(rel(3720.0), "T+1h02m");
        assert_eq!(radar_href("A-1"), "radar/A-1.md");
        assert_eq!(radar_href("../x"), "radar/%2E%2E%2Fx.md");
        assert_eq!(tick_step(50.0), 5.0);
        assert_eq!(tick_step(7200.0), 900.0);
    }
}
