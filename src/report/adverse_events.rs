//! `adverse_events.csv`: harms, CDASH AE style (AETERM, AESTDTC, AESEV, AESER, AEREL, AEACN,
//! AEOUT), derived from what the journal supports. Header only when there are none.
//!
//! Derived events (after the device's first dose intent):
//! - `wrong version installed`: the last build the device reported is neither the target nor
//!   the starting build;
//! - `device lost/not returned after restart`: the device detached and nothing more was heard
//!   of it (no re-probe with it attached, no MDM answer);
//! - `update loop`: [`LOOP_RESTARTS`] or more restarts (detach → re-attach) after which the
//!   device still reported its starting build;
//! - observations of kind `adverse_event` (term = key, detail = value) and of kind or key
//!   `unenrolled`.

use super::{seq_refs, to_csv};
use crate::journal::Entry;
use crate::trial::outcome::{self, DeviceOutcome, Facts, Outcome, RunFacts};

pub const HEADER: [&str; 11] = [
    "udid",
    "arm",
    "term",
    "start",
    "severity",
    "serious",
    "relatedness",
    "action",
    "outcome",
    "evidence",
    "detail",
];

/// Restarts without a version change that make an update loop.
pub const LOOP_RESTARTS: usize = 2;

struct Ae {
    first_seq: u64,
    udid: String,
    arm: String,
    term: String,
    start: String,
    severity: &'static str,
    serious: &'static str,
    relatedness: &'static str,
    action: &'static str,
    outcome: &'static str,
    evidence: Vec<u64>,
    detail: String,
}

fn derive(d: &Facts, o: &DeviceOutcome, out: &mut Vec<Ae>) {
    let arm = o.arm.clone().unwrap_or_default();
    let base = |term: &str, start: &str, evidence: Vec<u64>, detail: String| Ae {
        first_seq: evidence.iter().copied().max().unwrap_or(0),
        udid: d.udid.clone(),
        arm: arm.clone(),
        term: term.into(),
        start: start.into(),
        severity: "moderate",
        serious: "no",
        relatedness: "possibly",
        action: "none",
        outcome: "unknown",
        evidence,
        detail,
    };
    let Some(first) = d.first_intent_seq() else {
        observed(d, &arm, out);
        return;
    };
    let intents: Vec<u64> = d.intents.iter().map(|i| i.seq).collect();

    if o.outcome == Outcome::WrongVersion
        && let Some(b) = d
            .builds
            .iter()
            .filter(|b| b.seq > first)
            .find(|b| Some(&b.build) == o.final_build.as_ref())
    {
        let mut ev = intents.clone();
        ev.push(b.seq);
        out.push(Ae {
            relatedness: "related",
            outcome: "not_recovered",
            ..base(
                "wrong version installed",
                &b.at,
                ev,
                format!(
                    "reported {} ({}); target {}; started on {}",
                    b.version.as_deref().unwrap_or("?"),
                    b.build,
                    o.target_build.as_deref().unwrap_or("?"),
                    o.starting_build.as_deref().unwrap_or("?")
                ),
            )
        });
    }

    if let Some(a) = d.detached_never_seen() {
        let installing = d.intents.iter().any(|i| i.install_action == "InstallASAP")
            || d.downloaded.iter().any(|x| x.0 < a.seq)
            || d.update_statuses
                .iter()
                .rev()
                .find(|x| x.0 < a.seq)
                .is_some_and(|x| &*x.1 == "Installing");
        let mut ev = intents.clone();
        ev.push(a.seq);
        out.push(Ae {
            serious: "unknown",
            relatedness: if installing { "related" } else { "possibly" },
            ..base(
                "device lost/not returned after restart",
                &a.at,
                ev,
                format!(
                    "detached{} and never seen again",
                    if installing {
                        " during the install"
                    } else {
                        ""
                    }
                ),
            )
        });
    }

    // Restarts: a detach followed by a re-attach; the build on re-attach tells whether the
    // version changed.
    let mut restarts = Vec::new();
    let mut detached: Option<&outcome::Attach> = None;
    for a in d.attaches.iter().filter(|a| a.seq > first) {
        match (a.attached, detached) {
            (false, None) => detached = Some(a),
            (true, Some(down)) => {
                let build = d.builds.iter().find(|b| b.seq >= a.seq).map(|b| &b.build);
                if build.is_none() || build == o.starting_build.as_ref() {
                    restarts.push((down, a));
                }
                detached = None;
            }
            _ => {}
        }
    }
    if restarts.len() >= LOOP_RESTARTS {
        let ev = intents
            .iter()
            .copied()
            .chain(restarts.iter().flat_map(|(x, y)| [x.seq, y.seq]))
            .collect();
        let recovered = o.outcome == Outcome::Updated;
        out.push(Ae {
            outcome: if recovered {
                "recovered"
            } else {
                "not_recovered"
            },
            ..base(
                "update loop",
                &restarts[0].0.at,
                ev,
                format!("{} restarts without a version change", restarts.len()),
            )
        });
    }
    observed(d, &arm, out);
}

/// Adverse events the operator or the harness recorded as observations.
fn observed(d: &Facts, arm: &str, out: &mut Vec<Ae>) {
    for (seq, at, source, kind, key, value) in &d.observations {
        let unenrolled = kind == "unenrolled" || key == "unenrolled";
        if kind != "adverse_event" && !unenrolled {
            continue;
        }
        if unenrolled && kind != "adverse_event" && matches!(value.as_str(), "false" | "no" | "0") {
            continue;
        }
        let term = if unenrolled {
            "unenrolled"
        } else {
            key.as_str()
        };
        let (severity, serious) = match term {
            "unenrolled" => ("moderate", "yes"),
            "device unusable" => ("severe", "unknown"),
            _ => ("unknown", "unknown"),
        };
        out.push(Ae {
            first_seq: *seq,
            udid: d.udid.clone(),
            arm: arm.to_string(),
            term: term.to_string(),
            start: at.clone(),
            severity,
            serious,
            relatedness: "possibly",
            action: "none",
            outcome: "unknown",
            evidence: vec![*seq],
            detail: format!("{source}: {value}"),
        });
    }
}

/// Devices with at least one severe adverse event so far (the protocol's stop rule counts them).
pub fn devices_with_severe_events(entries: &[Entry]) -> usize {
    let run = outcome::gather(entries);
    let outcomes = outcome::judge_run(&run, &Default::default());
    severe_devices(&run, &outcomes)
}

/// [`devices_with_severe_events`] of the journal at `path`, read as a stream (the stop rule,
/// during a run: the journal of a large lab is not held in memory).
pub fn devices_with_severe_events_in(path: &std::path::Path) -> Result<usize, super::ReportError> {
    let d = super::digest::Digest::read_quietly(path)?;
    Ok(severe_devices(&d.run, &d.outcomes))
}

fn severe_devices(run: &RunFacts, outcomes: &[DeviceOutcome]) -> usize {
    let mut aes = Vec::new();
    for (d, o) in run.devices.iter().zip(outcomes) {
        derive(d, o, &mut aes);
    }
    let mut udids: Vec<&str> = aes
        .iter()
        .filter(|a| a.severity == "severe")
        .map(|a| a.udid.as_str())
        .collect();
    udids.sort_unstable();
    udids.dedup();
    udids.len()
}

pub fn render(entries: &[Entry]) -> String {
    let run = outcome::gather(entries);
    let outcomes = outcome::judge_run(&run, &Default::default());
    render_of(&run, &outcomes)
}

/// [`render`] from facts already gathered and judged.
pub(crate) fn render_of(run: &RunFacts, outcomes: &[DeviceOutcome]) -> String {
    let mut aes = Vec::new();
    for (d, o) in run.devices.iter().zip(outcomes) {
        derive(d, o, &mut aes);
    }
    aes.sort_by(|a, b| (a.first_seq, &a.udid, &a.term).cmp(&(b.first_seq, &b.udid, &b.term)));
    let rows: Vec<Vec<String>> = aes
        .into_iter()
        .map(|a| {
            let mut ev = a.evidence;
            ev.sort_unstable();
            ev.dedup();
            vec![
                a.udid,
                a.arm,
                a.term,
                a.start,
                a.severity.into(),
                a.serious.into(),
                a.relatedness.into(),
                a.action.into(),
                a.outcome.into(),
                seq_refs(ev),
                a.detail,
            ]
        })
        .collect();
    to_csv(&HEADER, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::ObservationSource;
    use crate::report::tests_util::{cell, parse};
    use crate::trial::journal::Event;
    use crate::trial::outcome::testkit::J;

    #[test]
    fn header_only_without_harms() {
        let mut j = J::new();
        j.device("U", true)
            .allocate("U", "a")
            .consent(&["U"])
            .dose("U", 1, "C1")
            .schedule_answer("U", "C1", "Acknowledged")
            .reprobe("U", false, None)
            .reprobe("U", true, Some("19H390"));
        let text = render(&j.entries);
        assert_eq!(text, HEADER.join(",") + "\r\n");
    }

    #[test]
    fn wrong_version_lost_loop_and_observed() {
        let mut j = J::new();
        j.device("W", true).device("L", true).device("P", true);
        j.allocate("W", "a").allocate("L", "a").allocate("P", "a");
        j.consent(&["W", "L", "P"]);
        j.dose("W", 1, "C1").reprobe("W", true, Some("19H999"));
        let wrong_seq = j.entries.last().unwrap().seq;
        j.intent("L", 1, "C2", "InstallASAP")
            .enqueued("L", "C2")
            .reprobe("L", false, None);
        let lost_seq = j.entries.last().unwrap().seq;
        j.dose("P", 1, "C3");
        for _ in 0..2 {
            j.reprobe("P", false, None)
                .reprobe("P", true, Some("19H12"));
        }
        j.push(Event::Observation {
            udid: Some("P".into()),
            source: ObservationSource::Harness,
            kind: "mdm".into(),
            key: "unenrolled".into(),
            value: "CheckOut received".into(),
        });
        let (h, rows) = parse(&render(&j.entries));
        assert_eq!(h, HEADER);
        let terms: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (cell(&h, r, "udid"), cell(&h, r, "term")))
            .collect();
        assert_eq!(
            terms,
            [
                ("W", "wrong version installed"),
                ("L", "device lost/not returned after restart"),
                ("P", "update loop"),
                ("P", "unenrolled"),
            ]
        );
        let w = &rows[0];
        assert_eq!(cell(&h, w, "relatedness"), "related");
        assert_eq!(cell(&h, w, "outcome"), "not_recovered");
        assert!(cell(&h, w, "evidence").ends_with(&format!("journal.jsonl#seq={wrong_seq}")));
        let l = &rows[1];
        assert_eq!(cell(&h, l, "relatedness"), "related");
        assert_eq!(cell(&h, l, "serious"), "unknown");
        assert!(cell(&h, l, "evidence").contains(&format!("seq={lost_seq}")));
        assert_eq!(
            cell(&h, &rows[2], "detail"),
            "2 restarts without a version change"
        );
        assert_eq!(cell(&h, &rows[3], "serious"), "yes");
    }
}
