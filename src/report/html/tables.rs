//! Outcomes per arm and per device, adverse events, anomalies.

use super::baseline::arm_names;
use super::header::{device_name, model, version};
use super::palette::{badge, outcome_class};
use super::{AnomalyLink, dur, esc};
use crate::journal::fold::RunFacts;
use crate::verdicts::outcome::{DeviceOutcome, Outcome};
use std::fmt::Write;

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

pub(super) fn outcomes_section(h: &mut String, outcomes: &[DeviceOutcome], scale: f64) {
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
                    .map(|m| format!("{} [{n}]", dur(m * scale)))
                    .unwrap_or_else(|| "—".into());
                let _ = write!(h, "<td class=\"num\">{cell}</td>");
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</tbody></table>\n");
    }

    h.push_str("</section>\n");
}

/// The per-device table, on the first screen: what became of each device and why, with the
/// exclusion sentences (numbers included) and the anomalies found on it, so a row never reads
/// "updated" without the warning its anomaly gives. `scale`: simulated seconds per real second.
pub(super) fn per_device(
    h: &mut String,
    run: &RunFacts,
    outcomes: &[DeviceOutcome],
    scale: f64,
    anomalies: &[AnomalyLink],
) {
    h.push_str(
        "<section id=\"devices\">\n<h2>Devices</h2>\n<table class=\"per-device\">\n<thead><tr><th>#</th><th>Device</th><th>Arm</th>\
         <th>Outcome</th><th>Start → final build</th><th>Target</th><th class=\"num\">To download</th>\
         <th class=\"num\">To new build</th><th>Last dose answer</th><th>Reason / deviations</th></tr></thead>\n<tbody>\n",
    );
    for (i, (d, o)) in run.devices.iter().zip(outcomes).enumerate() {
        let mut notes: Vec<String> = if o.outcome == Outcome::Excluded && !d.reasons.is_empty() {
            d.reasons.iter().map(|r| r.message.clone()).collect()
        } else {
            o.reason.iter().cloned().collect()
        };
        notes.extend(o.deviations.iter().cloned());
        let found: Vec<String> = anomalies
            .iter()
            .filter(|a| a.udid.as_deref() == Some(d.udid.as_str()))
            .map(|a| {
                format!(
                    "<a class=\"anomaly\" href=\"{}\">⚠ {}</a>",
                    esc(&radar_href(&a.id)),
                    esc(&a.title)
                )
            })
            .collect();
        let what = [model(d), version(d)]
            .into_iter()
            .flatten()
            .map(|x| esc(&x))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            h,
            "<tr><td class=\"num\"><a href=\"#dev-{n}\">{n}</a></td><td>{}<br><span class=\"muted\">{what}</span><br><span class=\"mono\">{}</span></td>\
             <td>{}</td><td>{}{}</td><td class=\"nowrap\">{} → {}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td>{}</td><td>{}</td></tr>",
            esc(&device_name(d)),
            esc(&d.udid),
            esc(o.arm.as_deref().unwrap_or("—")),
            badge(outcome_class(o.outcome), o.outcome.as_str()),
            found.iter().map(|f| format!("<br>{f}")).collect::<String>(),
            esc(o.starting_build.as_deref().unwrap_or("?")),
            esc(o.final_build.as_deref().unwrap_or("—")),
            esc(o.target_build.as_deref().unwrap_or("—")),
            o.time_to_download_s
                .map(|s| dur(s * scale))
                .unwrap_or_default(),
            o.time_to_new_build_s
                .map(|s| dur(s * scale))
                .unwrap_or_default(),
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

pub(super) fn adverse(h: &mut String, text: &str, run: &RunFacts) {
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
/// The link to a detector's draft: `radar/<id>.md`, or `feedback/<id>.md` for the findings on
/// DDM doses (`report::feedback`, Feedback Assistant drafts), the id percent-encoded.
pub(super) fn radar_href(id: &str) -> String {
    let dir = if id.starts_with("ddm_") {
        crate::report::feedback::DIR
    } else {
        crate::report::radar::DIR
    };
    let mut out = format!("{dir}/");
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

pub(super) fn anomalies_section(h: &mut String, run: &RunFacts, anomalies: &[AnomalyLink]) {
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
