//! Adverse events (harms, CDASH AE style), derived from a device's record and its outcome.
//! `report::adverse_events` writes them as `adverse_events.csv`; the runner's stop rule counts
//! the devices with a severe one ([`severe_devices`]) from its in-memory fold, so both read the
//! same rules.
//!
//! Derived events (after the device's first dose intent):
//! - `wrong version installed`: the last build the device reported is neither the target nor
//!   the starting build;
//! - `device lost/not returned after restart`: the device detached and nothing more was heard
//!   of it (no re-probe with it attached, no MDM answer);
//! - `update loop`: [`LOOP_RESTARTS`] or more restarts (detach → re-attach) after which the
//!   device still reported its starting build;
//! - `update install failed`: a DDM dose's status report set `softwareupdate.install-state` to
//!   `failed` (moderate; the detector `ddm_install_failed` flags the same reports);
//! - observations of kind `adverse_event` (term = key, detail = value) and of kind or key
//!   `unenrolled`.

use crate::journal::Entry;
use crate::journal::fold::{Attach, Facts, Fold, Record, RunFacts};
use crate::verdicts::outcome::{DeviceOutcome, Outcome, judge_run};
use std::collections::BTreeMap;

/// Restarts without a version change that make an update loop.
pub const LOOP_RESTARTS: usize = 2;

/// One adverse event, with the CDASH AE fields the CSV carries.
#[derive(Debug, Clone, PartialEq)]
pub struct AdverseEvent {
    pub first_seq: u64,
    pub udid: String,
    pub arm: String,
    pub term: String,
    pub start: String,
    pub severity: &'static str,
    pub serious: &'static str,
    pub relatedness: &'static str,
    pub action: &'static str,
    pub outcome: &'static str,
    pub evidence: Vec<u64>,
    pub detail: String,
}

/// The adverse events of one device, given its outcome, appended to `out`.
pub fn derive(d: &Facts, o: &DeviceOutcome, out: &mut Vec<AdverseEvent>) {
    let arm = o.arm.clone().unwrap_or_default();
    let base = |term: &str, start: &str, evidence: Vec<u64>, detail: String| AdverseEvent {
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
        out.push(AdverseEvent {
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
        out.push(AdverseEvent {
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

    if let Some((start, seqs, detail)) = ddm_install_failed(d) {
        let recovered = o.outcome == Outcome::Updated;
        out.push(AdverseEvent {
            relatedness: "related",
            outcome: if recovered {
                "recovered"
            } else {
                "not_recovered"
            },
            ..base(
                "update install failed",
                &start,
                intents.iter().copied().chain(seqs).collect(),
                detail,
            )
        });
    }

    // Restarts: a detach followed by a re-attach; the build on re-attach tells whether the
    // version changed.
    let mut restarts = Vec::new();
    let mut detached: Option<&Attach> = None;
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
        out.push(AdverseEvent {
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

/// A DDM dose's status reports set `softwareupdate.install-state` to `failed` (the anomaly
/// `ddm_install_failed`, DDM brief §3, §7): the first failed report's time, the failed reports'
/// seqs, and the failure reason the device gave.
fn ddm_install_failed(d: &Facts) -> Option<(String, Vec<u64>, String)> {
    let failed: Vec<_> = d
        .ddm_reports_after_dose()
        .filter(|r| {
            r.items
                .get("softwareupdate")
                .and_then(|s| s.get("install-state"))
                .and_then(|v| v.as_str())
                == Some("failed")
        })
        .collect();
    let first = failed.first()?;
    let last = failed.last()?;
    let reason = last
        .view
        .failure_reason
        .as_ref()
        .and_then(|f| f.reason.clone())
        .unwrap_or_else(|| "no reason given".into());
    Some((
        first.time().to_string(),
        failed.iter().map(|r| r.seq).collect(),
        format!("DDM install-state failed ({reason})"),
    ))
}

/// Adverse events the operator or the harness recorded as observations.
pub fn observed(d: &Facts, arm: &str, out: &mut Vec<AdverseEvent>) {
    for o in &d.observations {
        let (seq, kind, value) = (&o.seq, &o.kind, &o.value);
        let unenrolled = o.is("unenrolled");
        if kind != "adverse_event" && !unenrolled {
            continue;
        }
        if unenrolled && kind != "adverse_event" && matches!(value.as_str(), "false" | "no" | "0") {
            continue;
        }
        let term = if unenrolled {
            "unenrolled"
        } else {
            o.key.as_str()
        };
        let (severity, serious) = match term {
            "unenrolled" => ("moderate", "yes"),
            "device unusable" => ("severe", "unknown"),
            _ => ("unknown", "unknown"),
        };
        out.push(AdverseEvent {
            first_seq: *seq,
            udid: d.udid.clone(),
            arm: arm.to_string(),
            term: term.to_string(),
            start: o.at.clone(),
            severity,
            serious,
            relatedness: "possibly",
            action: "none",
            outcome: "unknown",
            evidence: vec![*seq],
            detail: format!("{}: {value}", o.source),
        });
    }
}

/// The adverse events of every device of `run` (one outcome per device, same order), device by
/// device.
pub fn of_run(run: &RunFacts, outcomes: &[DeviceOutcome]) -> Vec<AdverseEvent> {
    let mut out = Vec::new();
    for (d, o) in run.devices.iter().zip(outcomes) {
        derive(d, o, &mut out);
    }
    out
}

/// How many devices have at least one severe adverse event.
pub fn severe_count(run: &RunFacts, outcomes: &[DeviceOutcome]) -> usize {
    let mut udids: Vec<String> = of_run(run, outcomes)
        .into_iter()
        .filter(|a| a.severity == "severe")
        .map(|a| a.udid)
        .collect();
    udids.sort_unstable();
    udids.dedup();
    udids.len()
}

/// Devices with at least one severe adverse event in the journal folded so far: the protocol's
/// stop rule, asked of the runner's fold in memory. `arm_steps` as `outcome::judge_run`'s.
pub fn severe_devices(fold: &Fold, arm_steps: &BTreeMap<String, u32>) -> usize {
    let run = fold.record.run();
    severe_count(run, &judge_run(run, arm_steps))
}

/// Devices with at least one severe adverse event in `entries`.
pub fn devices_with_severe_events(entries: &[Entry]) -> usize {
    let record = Record::of_entries(entries);
    let run = record.run();
    severe_count(run, &judge_run(run, &BTreeMap::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Event, ObservationSource};
    use crate::verdicts::outcome::testkit::J;

    fn unusable(j: &mut J, udid: &str) {
        j.push(Event::Observation {
            udid: Some(udid.into()),
            source: ObservationSource::Operator,
            kind: "adverse_event".into(),
            key: "device unusable".into(),
            value: "boot loop".into(),
        });
    }

    #[test]
    fn severe_devices_counts_each_device_once_from_the_fold_in_memory() {
        let mut j = J::new();
        j.device("A", true).device("B", true).device("C", true);
        j.allocate("A", "a").allocate("B", "a").allocate("C", "a");
        j.consent(&["A", "B", "C"]).dose("A", 1, "C1");
        let mut fold = Fold::default();
        for e in &j.entries {
            fold.apply(e);
        }
        assert_eq!(severe_devices(&fold, &BTreeMap::new()), 0);
        let start = j.entries.len();
        unusable(&mut j, "A");
        unusable(&mut j, "A");
        unusable(&mut j, "B");
        for e in &j.entries[start..] {
            fold.apply(e);
        }
        assert_eq!(severe_devices(&fold, &BTreeMap::new()), 2);
        assert_eq!(devices_with_severe_events(&j.entries), 2);
    }

    #[test]
    fn unenrolled_is_serious_but_not_severe_and_a_no_is_no_event() {
        let mut j = J::new();
        j.device("U", true);
        for value in ["CheckOut received", "no"] {
            j.push(Event::Observation {
                udid: Some("U".into()),
                source: ObservationSource::Harness,
                kind: "mdm".into(),
                key: "unenrolled".into(),
                value: value.into(),
            });
        }
        let run = Record::of_entries(&j.entries).finish();
        let outcomes = judge_run(&run, &BTreeMap::new());
        let aes = of_run(&run, &outcomes);
        assert_eq!(aes.len(), 1, "{aes:?}");
        assert_eq!(
            (aes[0].term.as_str(), aes[0].serious),
            ("unenrolled", "yes")
        );
        assert_eq!(severe_count(&run, &outcomes), 0);
    }

    #[test]
    fn a_ddm_install_failure_is_a_moderate_related_event_and_prepared_is_none() {
        let events = |state: &str| {
            let mut j = J::new();
            j.device("U", true)
                .allocate("U", "a")
                .consent(&["U"])
                .ddm_dose("U", "D1", "15.8", "2026-12-01T11:00:00")
                .ddm_report(
                    "U",
                    serde_json::json!({"softwareupdate": {"install-state": state,
                        "failure-reason": {"count": 1, "reason": "no space"}}}),
                )
                .reprobe("U", true, Some("19H12"))
                .ended("U", "time limit");
            let record = Record::of_entries(&j.entries);
            let run = record.run();
            of_run(run, &judge_run(run, &BTreeMap::new()))
        };
        let failed = events("failed");
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].term, "update install failed");
        assert_eq!(failed[0].severity, "moderate");
        assert_eq!(failed[0].outcome, "not_recovered");
        assert!(failed[0].detail.contains("no space"));
        assert!(events("prepared").is_empty());
    }
}
