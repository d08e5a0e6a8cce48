//! The baseline table by arm.

use super::esc;
use super::header::model;
use crate::journal::fold::{Facts, RunFacts};
use crate::verdicts::outcome::DeviceOutcome;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The `value` of a baseline field (`path` to the field), `None` when absent or null.
fn json_at(d: &Facts, path: &[&str]) -> Option<serde_json::Value> {
    let path: Vec<&str> = path.iter().copied().chain(["value"]).collect();
    d.probe.as_ref()?.at(&path).filter(|x| !x.is_null())
}

fn baseline_num(d: &Facts, path: &[&str]) -> Option<f64> {
    json_at(d, path)?.as_f64()
}

fn baseline_bool(d: &Facts, path: &[&str]) -> Option<bool> {
    json_at(d, path)?.as_bool()
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
pub(super) fn arm_names(outcomes: &[DeviceOutcome]) -> Vec<String> {
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

pub(super) fn baseline(h: &mut String, run: &RunFacts, outcomes: &[DeviceOutcome]) {
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
                            .and_then(|p| p.at(&["status"]))
                            .is_none_or(|s| s.as_str() != Some("ok"))
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
