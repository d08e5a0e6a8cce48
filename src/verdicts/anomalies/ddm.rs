//! Detectors of DDM software-update doses (issue 13): what the device's status reports say
//! against the declaration it was given and against what USB shows. The flags follow the DDM
//! brief §7 ("Flag as anomalies"); the items are `declarative/status/softwareupdate.*.yaml` and
//! `declarative/status/device.operating-system.*.yaml` (DDM brief §3).
//!
//! Every detector reads a report's **own** items for what the device said at that moment (a
//! report is a delta, DDM brief §0.1), and the view folded so far (`DdmReport::view`) for what
//! it had said by then.

use super::{Ctx, Found};
use crate::journal::fold::{BuildSeen, DdmDose, DdmReport, Facts, Intent};
use serde_json::Value;

/// Grace after the deadline before an install is overdue: a device given a deadline already
/// past installs "about 1 h later", and one off at the deadline 1 h after it restarts (DDM brief
/// §0.4, §2 "Off at the deadline", §4 [VENDOR] fleetdm).
pub const DEADLINE_GRACE_S: i64 = 3600;

/// Longest silence of a device with an active subscription: it reports on every change and
/// "about every 24 h" (DDM brief §1 "Subscriptions"; the daily `FullReport`, §1 "Report"),
/// plus an hour of grace.
pub const MAX_REPORT_GAP_S: f64 = 25.0 * 3600.0;

/// The DDM dose intents that reached the DDM server (enqueued), with their declarations.
fn enqueued_doses(d: &Facts) -> Vec<(&Intent, &DdmDose)> {
    d.ddm_doses()
        .filter(|(i, _)| i.enqueued.is_some())
        .collect()
}

/// The declaration in effect when the entry `seq` was journalled: the last enqueued dose before
/// it (the first one for an earlier entry).
fn dose_at<'a>(doses: &[(&'a Intent, &'a DdmDose)], seq: u64) -> Option<(u64, &'a DdmDose)> {
    doses
        .iter()
        .rev()
        .find(|(i, _)| i.seq < seq)
        .or_else(|| doses.first())
        .map(|(i, dose)| (i.seq, *dose))
}

/// A report's own item at a nested path (`["softwareupdate", "install-state"]`).
fn own<'a>(r: &'a DdmReport, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut v = r.items.get(*first)?;
    for k in rest {
        v = v.get(k)?;
    }
    Some(v)
}

fn own_str<'a>(r: &'a DdmReport, path: &[&str]) -> Option<&'a str> {
    own(r, path).and_then(Value::as_str)
}

/// The builds read over USB (`DeviceReprobed`), not DeviceInformation answers.
fn usb_builds(d: &Facts) -> impl Iterator<Item = &BuildSeen> {
    d.builds
        .iter()
        .filter(|b| d.attaches.iter().any(|a| a.seq == b.seq && a.attached))
}

/// `26.6` and `26.6.0` are the same version: trailing `.0` components do not count.
fn same_version(a: &str, b: &str) -> bool {
    fn trim(v: &str) -> &str {
        let mut v = v.trim();
        while let Some(x) = v.strip_suffix(".0") {
            v = x;
        }
        v
    }
    trim(a) == trim(b)
}

/// The last build seen after the first dose (USB or DeviceInformation).
fn last_build_after_dose(d: &Facts) -> Option<&BuildSeen> {
    let first = d.first_intent_seq()?;
    d.builds.iter().rev().find(|b| b.seq > first)
}

/// `softwareupdate.install-state` `failed` in a report after the DDM dose (DDM brief §3, §7).
pub(super) fn ddm_install_failed(d: &Facts, _: &Ctx) -> (bool, Option<Found>) {
    let doses = enqueued_doses(d);
    let Some((intent, _)) = doses.first() else {
        return (false, None);
    };
    let after: Vec<&DdmReport> = d.ddm_reports_after_dose().collect();
    let failed: Vec<&DdmReport> = after
        .iter()
        .copied()
        .filter(|r| own_str(r, &["softwareupdate", "install-state"]) == Some("failed"))
        .collect();
    let Some(last) = failed.last() else {
        return (!after.is_empty(), None);
    };
    let why = match &last.view.failure_reason {
        Some(f) => format!(
            "failure-reason count {}, reason {}, timestamp {}",
            f.count,
            f.reason.as_deref().unwrap_or("(none)"),
            f.timestamp.as_deref().unwrap_or("(none)")
        ),
        None => "no failure-reason reported".into(),
    };
    let seqs: Vec<u64> = failed.iter().map(|r| r.seq).collect();
    let found = Found {
        evidence: std::iter::once(intent.seq).chain(seqs.clone()).collect(),
        actual: format!(
            "install-state failed was reported {} time(s) after the declaration {} ({why}).",
            failed.len(),
            intent.command_uuid
        ),
        command_uuid: Some(intent.command_uuid.clone()),
        responses: seqs,
    };
    (true, Some(found))
}

/// `softwareupdate.pending-version.os-version` (non-empty: something is pending) differs from
/// the declaration's `TargetOSVersion` (DDM brief §2; §7 "Installed version/build ≠ target").
pub(super) fn ddm_pending_version_mismatch(d: &Facts, _: &Ctx) -> (bool, Option<Found>) {
    let doses = enqueued_doses(d);
    let mut in_situation = false;
    let mut hits: Vec<(&DdmReport, String, u64, &str)> = Vec::new();
    for r in d.ddm_reports_after_dose() {
        let Some(pending) = own_str(r, &["softwareupdate", "pending-version", "os-version"])
            .filter(|v| !v.is_empty())
        else {
            continue;
        };
        let Some((seq, dose)) = dose_at(&doses, r.seq) else {
            continue;
        };
        in_situation = true;
        if !same_version(pending, &dose.target_os_version) {
            hits.push((r, pending.to_string(), seq, &dose.target_os_version));
        }
    }
    let Some((first, pending, intent_seq, target)) = hits.first() else {
        return (in_situation, None);
    };
    let uuid = d
        .intents
        .iter()
        .find(|i| i.seq == *intent_seq)
        .map(|i| i.command_uuid.clone());
    let seqs: Vec<u64> = hits.iter().map(|h| h.0.seq).collect();
    let found = Found {
        evidence: std::iter::once(*intent_seq).chain(seqs.clone()).collect(),
        actual: format!(
            "softwareupdate.pending-version os-version {pending} (journal seq {}) while the declaration's TargetOSVersion is {target}; {} report(s) disagree.",
            first.seq,
            hits.len()
        ),
        command_uuid: uuid,
        responses: seqs,
    };
    (true, Some(found))
}

/// The dose enqueued, and no status report after it by the end of follow-up; or, while the
/// device was seen attached, a silence longer than [`MAX_REPORT_GAP_S`] between reports.
pub(super) fn ddm_status_silent(d: &Facts, _: &Ctx) -> (bool, Option<Found>) {
    let doses = enqueued_doses(d);
    let Some((intent, _)) = doses.first() else {
        return (false, None);
    };
    if d.detached_never_seen().is_some() {
        return (false, None);
    }
    let after: Vec<&DdmReport> = d.ddm_reports_after_dose().collect();
    let uuid = Some(intent.command_uuid.clone());
    if after.is_empty() {
        let Some((end, reason)) = &d.follow_up_end else {
            return (false, None);
        };
        let found = Found {
            evidence: vec![intent.seq, *end],
            actual: format!(
                "No status report came after the declaration {} was sent; follow-up ended ({reason}).",
                intent.command_uuid
            ),
            command_uuid: uuid,
            responses: Vec::new(),
        };
        return (true, Some(found));
    }
    // Moments the device was heard from: the dose, each report, then each USB sighting.
    let start = intent
        .enqueued
        .as_ref()
        .map_or(intent.at.as_str(), |e| &e.1);
    let mut marks: Vec<(u64, &str)> = vec![(intent.seq, start)];
    marks.extend(after.iter().map(|r| (r.seq, r.time())));
    let last_seen = usb_builds(d).filter(|b| b.seq > intent.seq).last();
    if let Some(b) = last_seen.filter(|b| b.seq > marks.last().map_or(0, |m| m.0)) {
        marks.push((b.seq, b.at.as_str()));
    }
    let gap = marks.windows(2).find_map(|w| {
        let s = crate::journal::fold::seconds_between(w[0].1, w[1].1)?;
        (s > MAX_REPORT_GAP_S).then_some((w[0], w[1], s))
    });
    let Some((from, to, s)) = gap else {
        return (true, None);
    };
    let found = Found {
        evidence: vec![intent.seq, from.0, to.0],
        actual: format!(
            "No status report for {:.1} h, from {} to {} (journal seqs {} to {}), while the device was followed.",
            s / 3600.0,
            from.1,
            to.1,
            from.0,
            to.0
        ),
        command_uuid: uuid,
        responses: after
            .iter()
            .map(|r| r.seq)
            .filter(|q| *q == from.0)
            .collect(),
    };
    (true, Some(found))
}

/// A report's own `device.operating-system.build-version` that the next USB re-probe, with no
/// detach between them (the same boot), contradicts, and that no later report corrects (no
/// later report names the build USB showed).
pub(super) fn ddm_status_build_mismatch(d: &Facts, _: &Ctx) -> (bool, Option<Found>) {
    let doses = enqueued_doses(d);
    let Some((intent, _)) = doses.first() else {
        return (false, None);
    };
    let build_of = |r: &DdmReport| {
        own_str(r, &["device", "operating-system", "build-version"])
            .filter(|b| !b.is_empty())
            .map(str::to_string)
    };
    let mut in_situation = false;
    let mut hit: Option<(&DdmReport, String, &BuildSeen)> = None;
    for r in &d.ddm_reports {
        let Some(said) = build_of(r) else { continue };
        let Some(usb) = usb_builds(d).find(|b| b.seq > r.seq) else {
            continue;
        };
        if d.attaches
            .iter()
            .any(|a| !a.attached && a.seq > r.seq && a.seq < usb.seq)
        {
            continue;
        }
        in_situation = true;
        let corrected = d
            .ddm_reports
            .iter()
            .any(|l| l.seq > usb.seq && build_of(l).as_deref() == Some(usb.build.as_str()));
        if usb.build != said && !corrected && hit.is_none() {
            hit = Some((r, said, usb));
        }
    }
    let Some((r, said, usb)) = hit else {
        return (in_situation, None);
    };
    let found = Found {
        evidence: vec![intent.seq, r.seq, usb.seq],
        actual: format!(
            "A status report said device.operating-system.build-version {said} (journal seq {}); the next USB re-probe, in the same boot, read BuildVersion {} (journal seq {}), and no later report named {}.",
            r.seq, usb.build, usb.seq, usb.build
        ),
        command_uuid: Some(intent.command_uuid.clone()),
        responses: vec![r.seq],
    };
    (true, Some(found))
}

/// The device's local clock at journal time `at`: its clock reading at baseline
/// (`probe.device_time`, lockdown `TimeIntervalSince1970`, plus `probe.utc_offset`,
/// `TimeZoneOffsetFromUTC`) moved on by the host time since that reading (`probe.host_time`,
/// else the baseline's journal time, a little after it) times the lab's time scale (a simulated
/// lab's clock runs that much faster; `RunStarted.time_scale`).
fn device_local_at(d: &Facts, at: &str, time_scale: f64) -> Option<chrono::NaiveDateTime> {
    let probe = d.probe.as_ref()?;
    let clock = probe.at(&["device_time"])?.as_f64()?;
    let offset = probe.at(&["utc_offset"])?.as_f64()?;
    let at_s = chrono::DateTime::parse_from_rfc3339(at)
        .ok()?
        .timestamp_millis() as f64
        / 1000.0;
    let read_s = match probe
        .at(&["host_time"])
        .as_ref()
        .and_then(serde_json::Value::as_f64)
    {
        Some(h) => h,
        None => {
            chrono::DateTime::parse_from_rfc3339(d.baseline_at.as_deref()?)
                .ok()?
                .timestamp_millis() as f64
                / 1000.0
        }
    };
    let local = clock + offset + (at_s - read_s).max(0.0) * time_scale;
    if !local.is_finite() {
        return None;
    }
    let secs = local.floor() as i64;
    chrono::DateTime::from_timestamp(secs, 0).map(|t| t.naive_utc())
}

/// Follow-up ended with the build over USB unchanged and the device attached, after the
/// device's own clock (read at baseline, carried forward by the host's time and the lab's time
/// scale) had passed the declaration's `TargetLocalDateTime` by more than [`DEADLINE_GRACE_S`]
/// when follow-up ended. (A re-probe is journaled only when what it reads changes: the build
/// last journaled is the build the device still ran at the end.)
pub(super) fn ddm_deadline_passed_without_install(d: &Facts, ctx: &Ctx) -> (bool, Option<Found>) {
    let doses = enqueued_doses(d);
    let Some(&(intent, dose)) = doses.last() else {
        return (false, None);
    };
    let (Some(deadline), Some((end, reason)), Some(start)) = (
        dose.target_local_date_time,
        d.follow_up_end.as_ref(),
        d.starting_build(),
    ) else {
        return (false, None);
    };
    let Some(last) = last_build_after_dose(d) else {
        return (false, None);
    };
    if d.attaches.last().is_some_and(|a| !a.attached) {
        // Detached at the end: what it runs is not known.
        return (false, None);
    }
    let Some(local) = d
        .follow_up_end_at
        .as_deref()
        .and_then(|at| device_local_at(d, at, ctx.time_scale))
    else {
        return (false, None);
    };
    let due = deadline.0 + chrono::Duration::seconds(DEADLINE_GRACE_S);
    if local <= due {
        return (false, None);
    }
    if last.build != start {
        return (true, None);
    }
    let state = d
        .ddm_reports_after_dose()
        .last()
        .map(|r| {
            let v = &r.view;
            format!(
                "; the last status report (journal seq {}) said install-state {}, pending-version {}",
                r.seq,
                v.install_state.as_ref().map_or("(none)", |s| s.as_str()),
                v.pending_version
                    .as_ref()
                    .map_or("(none)".to_string(), |p| format!("{} ({})", p.os_version, p.build_version))
            )
        })
        .unwrap_or_default();
    let mut evidence = vec![intent.seq, last.seq, *end];
    evidence.extend(d.ddm_reports_after_dose().last().map(|r| r.seq));
    let found = Found {
        evidence,
        actual: format!(
            "TargetLocalDateTime {} passed on the device's clock (about {} local when follow-up ended, journal seq {end}), yet the device still ran {start} (last build observation, journal seq {}) when follow-up ended ({reason}){state}.",
            deadline.to_wire(),
            local.format("%Y-%m-%dT%H:%M:%S"),
            last.seq
        ),
        command_uuid: Some(intent.command_uuid.clone()),
        responses: d
            .ddm_reports_after_dose()
            .last()
            .map(|r| r.seq)
            .into_iter()
            .collect(),
    };
    (true, Some(found))
}

#[cfg(test)]
#[path = "ddm_tests.rs"]
mod tests;
