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

pub(super) fn model(d: &Facts) -> Option<String> {
    d.baseline_str(&["baseline", "marketing_name"])
        .or_else(|| d.baseline_str(&["baseline", "product_type"]))
        .or_else(|| d.baseline_str(&["mdm", "model_name"]))
}

pub(super) fn header(
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
    for (rule, message) in &run.stop_rules {
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
}
