//! The header: trial, protocol hash, lab version, dates, feed file hashes, stop rules, the
//! at-a-glance cards and the run-level observations.

use super::{Time, esc};
use crate::journal::fold::{Facts, RunFacts};
use crate::report::head::Head;
use crate::verdicts::outcome::{DeviceOutcome, Outcome};
use std::fmt::Write;

pub(super) fn device_name(d: &Facts) -> String {
    d.baseline_str(&["baseline", "device_name"])
        .unwrap_or_else(|| d.udid.clone())
}

/// The device's starting iOS version, as "iOS 17.5".
pub(super) fn version(d: &Facts) -> Option<String> {
    d.starting_version().map(|v| format!("iOS {v}"))
}

pub(super) fn model(d: &Facts) -> Option<String> {
    d.baseline_str(&["baseline", "marketing_name"])
        .or_else(|| d.baseline_str(&["baseline", "product_type"]))
        .or_else(|| d.baseline_str(&["mdm", "model_name"]))
}

/// The first screen's top: the title, a simulated run's label, the stop rules, the tiles.
pub(super) fn title(
    h: &mut String,
    head: &Head,
    run: &RunFacts,
    outcomes: &[DeviceOutcome],
    anomalies: usize,
) {
    let _ = write!(
        h,
        "<h1>Trial report: {}</h1>\n<p class=\"sub\">OS-update trial run, projected from the run journal.</p>\n",
        esc(head.trial_id.as_deref().unwrap_or("(no RunStarted event)"))
    );
    if run.simulated {
        let _ = writeln!(
            h,
            "<p class=\"sim\" id=\"simulated\"><b>Simulated lab.</b> These devices were simulated by <code>lab</code>: \
             this report is a rehearsal, not evidence from real devices. The simulated clock ran {}× \
             faster than the wall clock; durations and times after the first dose are in simulated time.</p>",
            fmt_scale(time_scale(run))
        );
    }
    for (rule, message) in &run.stop_rules {
        let _ = writeln!(
            h,
            "<p class=\"warn\"><b>Stop rule {}</b>: {}</p>",
            esc(rule),
            esc(message)
        );
    }
    h.push_str("<div class=\"cards\">");
    for t in tiles(run, outcomes, anomalies) {
        let class = if t.alarm && t.n > 0 {
            "card alarm"
        } else {
            "card"
        };
        let _ = write!(
            h,
            "<div class=\"{class}\"><b>{}</b><span>{}</span></div>",
            t.n, t.label
        );
    }
    h.push_str("</div>\n");
}

/// Simulated seconds per real second (1 when not recorded or not positive).
pub(super) fn time_scale(run: &RunFacts) -> f64 {
    run.time_scale.filter(|s| *s > 0.0).unwrap_or(1.0)
}

fn fmt_scale(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s}")
    }
}

/// One tile of the first screen.
#[derive(Debug, PartialEq)]
pub(super) struct Tile {
    pub n: usize,
    pub label: &'static str,
    /// Drawn as a warning when not zero.
    pub alarm: bool,
}

/// The tiles (issue 15's 10-second test): how many devices took part, what became of them, and
/// everything that needs a look — error answers, anomalies, uncertain doses, devices lost —
/// counted so that none of them can read 0 while the tables below show one.
pub(super) fn tiles(run: &RunFacts, outcomes: &[DeviceOutcome], anomalies: usize) -> Vec<Tile> {
    let count = |o: Outcome| outcomes.iter().filter(|x| x.outcome == o).count();
    let allocated = outcomes.iter().filter(|o| o.arm.is_some()).count();
    let eligible = run.devices.iter().filter(|d| d.eligible).count();
    // Devices that answered any command with an error status, whatever their outcome.
    let errors = run
        .devices
        .iter()
        .filter(|d| {
            d.answers
                .iter()
                .any(|a| matches!(&*a.status, "Error" | "CommandFormatError"))
        })
        .count();
    let tile = |n, label, alarm| Tile { n, label, alarm };
    let mut out = vec![
        tile(run.devices.len(), "devices enrolled", false),
        tile(eligible, "eligible", false),
        tile(allocated, "allocated", false),
        tile(count(Outcome::Updated), "updated", false),
        tile(
            count(Outcome::DownloadedNotInstalled),
            "downloaded, not installed",
            true,
        ),
        tile(errors, "devices with an error answer", true),
        tile(anomalies, "anomalies", true),
        tile(count(Outcome::DoseUncertain), "doses uncertain", true),
        tile(count(Outcome::LostToFollowUp), "lost to follow-up", true),
    ];
    for (o, label) in [
        (Outcome::WrongVersion, "wrong version"),
        (Outcome::NoResponse, "no response"),
    ] {
        if count(o) > 0 {
            out.push(tile(count(o), label, true));
        }
    }
    out
}

/// The run's details: trial, protocol hash, versions, times, consent, feeds, and the run-level
/// observations.
pub(super) fn run_details(h: &mut String, head: &Head, run: &RunFacts, t0: Option<&Time>) {
    h.push_str("<section id=\"run\">\n<h2>Run</h2>\n");
    let state = if run.finished {
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
    if !head.notes.is_empty() {
        h.push_str("<h3>Run-level observations</h3>\n<ul class=\"notes\">\n");
        for n in &head.notes {
            let _ = writeln!(
                h,
                "<li><span class=\"mono\">{}</span> [{}] <b>{}</b> {}: {} <span class=\"mono\">(seq {})</span></li>",
                esc(&n.at),
                esc(n.source.as_str()),
                esc(&n.kind),
                esc(&n.key),
                esc(&n.value),
                n.seq
            );
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</section>\n");
}
