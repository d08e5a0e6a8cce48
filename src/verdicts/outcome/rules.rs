//! The outcome rules of one device, as named steps: what it reported after the dose
//! ([`Seen`]), the times since the dose ([`Times`]), the deviations from the protocol
//! ([`deviations`]) and the ladder ([`ladder`]) of the module doc.

use super::{DeviceOutcome, MAX_ARM_STEPS, Outcome};
use crate::journal::fold::{Answer, BuildSeen, DdmReport, Facts, Intent, RunFacts};
use crate::mdm::ddm::InstallState;
use crate::mdm::report::ReportStatus;
use std::collections::{BTreeMap, HashSet};

/// Seconds from `from` to `to` (RFC 3339), when both parse.
pub(crate) fn seconds_between(from: &str, to: &str) -> Option<f64> {
    let a = chrono::DateTime::parse_from_rfc3339(from).ok()?;
    let b = chrono::DateTime::parse_from_rfc3339(to).ok()?;
    Some((b - a).num_milliseconds() as f64 / 1000.0)
}

/// The builds a device reported, read against its start and its target.
struct Seen<'a> {
    starting_build: Option<String>,
    target_build: Option<String>,
    target_builds: Vec<String>,
    first_intent: Option<u64>,
    /// Builds reported after the first dose intent (all builds for an undosed device).
    post: Vec<&'a BuildSeen>,
}

impl<'a> Seen<'a> {
    fn of(d: &'a Facts) -> Seen<'a> {
        let first_intent = d.first_intent_seq();
        Seen {
            starting_build: d.starting_build(),
            target_build: d.target_field("build"),
            target_builds: d.target_builds(),
            first_intent,
            post: d
                .builds
                .iter()
                .filter(|b| first_intent.is_none_or(|s| b.seq > s))
                .collect(),
        }
    }

    fn last(&self) -> Option<&'a BuildSeen> {
        self.post.last().copied()
    }

    /// Is `b` the new build: a target build, or (no resolved target) any other than the start?
    fn is_new(&self, b: &str) -> bool {
        if self.target_builds.is_empty() {
            self.starting_build.as_deref().is_some_and(|s| s != b)
        } else {
            self.target_builds.iter().any(|t| t == b)
        }
    }

    /// The last build after a dose is neither a target nor the starting build.
    fn wrong(&self) -> bool {
        self.first_intent.is_some()
            && self.target_build.is_some()
            && self.last().is_some_and(|b| {
                !self.target_builds.contains(&b.build)
                    && Some(&b.build) != self.starting_build.as_ref()
            })
    }
}

/// When the dose was queued, the download reported and the new build seen, and the seconds
/// between (module doc: times are from the first dose's `DoseEnqueued`).
struct Times {
    dosed_at: Option<String>,
    download_complete_at: Option<String>,
    new_build_at: Option<String>,
    time_to_download_s: Option<f64>,
    time_to_new_build_s: Option<f64>,
}

impl Times {
    fn of(d: &Facts, seen: &Seen) -> Times {
        let dosed_at = d
            .intents
            .iter()
            .find_map(|i| i.enqueued.as_ref().map(|x| x.1.clone()));
        let after_dose = |seq: u64| seen.first_intent.is_some_and(|s| seq > s);
        let download_complete_at = if d.is_ddm_dosed() {
            ddm_downloaded(d).map(|r| r.time().to_string())
        } else {
            d.downloaded
                .iter()
                .find(|(seq, _)| after_dose(*seq))
                .map(|x| x.1.clone())
        };
        let new_build_at = if seen.first_intent.is_some() {
            seen.post
                .iter()
                .find(|b| seen.is_new(&b.build))
                .map(|b| b.at.clone())
        } else {
            None
        };
        let since_dose = |t: &Option<String>| {
            dosed_at
                .as_deref()
                .zip(t.as_deref())
                .and_then(|(a, b)| seconds_between(a, b))
        };
        Times {
            time_to_download_s: since_dose(&download_complete_at),
            time_to_new_build_s: since_dose(&new_build_at),
            dosed_at,
            download_complete_at,
            new_build_at,
        }
    }
}

pub(super) fn judge_device(
    d: &Facts,
    run: &RunFacts,
    arm_steps: &BTreeMap<String, u32>,
) -> DeviceOutcome {
    let seen = Seen::of(d);
    let times = Times::of(d, &seen);
    let uuids = d.dose_uuids();
    let dose_answers: Vec<&Answer> = d
        .answers
        .iter()
        .filter(|a| uuids.contains(&*a.command_uuid))
        .collect();
    let (outcome, reason) = ladder(d, run, &seen, times.download_complete_at.is_some());
    let last_seen = seen.last();
    DeviceOutcome {
        udid: d.udid.clone(),
        arm: d.arm.clone(),
        outcome,
        reason,
        starting_version: d.starting_version(),
        starting_build: seen.starting_build.clone(),
        final_version: last_seen.and_then(|b| b.version.clone()),
        final_build: last_seen.map(|b| b.build.clone()),
        target_build: seen.target_build.clone(),
        dosed_at: times.dosed_at,
        download_complete_at: times.download_complete_at,
        new_build_at: times.new_build_at,
        time_to_download_s: times.time_to_download_s,
        time_to_new_build_s: times.time_to_new_build_s,
        first_mdm_status: dose_answers.first().map(|a| a.status.to_string()),
        last_mdm_status: dose_answers.last().map(|a| a.status.to_string()),
        deviations: deviations(d, &seen, arm_steps),
    }
}

/// Departures from the protocol, in this order: never assessed, uncertain doses, commands
/// answered twice, too many ScheduleOSUpdate steps, a wrong version installed.
fn deviations(d: &Facts, seen: &Seen, arm_steps: &BTreeMap<String, u32>) -> Vec<String> {
    let mut out = Vec::new();
    if !d.assessed {
        out.push("eligibility never assessed".to_string());
    }
    for i in &d.intents {
        if let Some((_, reason)) = &i.uncertain {
            out.push(format!(
                "dose uncertain: step {} {}: {reason}",
                i.step, i.command_uuid
            ));
        }
    }
    out.extend(answered_twice(d));
    if let Some(too_many) = too_many_steps(d, arm_steps) {
        out.push(too_many);
    }
    if seen.wrong()
        && let Some(b) = seen.last()
    {
        out.push(format!(
            "wrong version installed: {} ({}), target {}",
            b.version.as_deref().unwrap_or("?"),
            b.build,
            seen.target_build.as_deref().unwrap_or("?")
        ));
    }
    out
}

/// Commands given a final answer more than once, in the order of their second final answer.
fn answered_twice(d: &Facts) -> Vec<String> {
    let mut finals: rustc_hash::FxHashMap<&str, usize> = Default::default();
    let mut order: Vec<&str> = Vec::new();
    for a in d.answers.iter().filter(|a| a.is_final()) {
        let n = finals.entry(&*a.command_uuid).or_insert(0);
        *n += 1;
        if *n == 2 {
            order.push(&*a.command_uuid);
        }
    }
    order
        .into_iter()
        .map(|u| {
            format!(
                "CommandUUID {u} answered {} times",
                finals.get(u).copied().unwrap_or(0)
            )
        })
        .collect()
}

/// More ScheduleOSUpdate intents than the arm has steps, or a step sent twice.
fn too_many_steps(d: &Facts, arm_steps: &BTreeMap<String, u32>) -> Option<String> {
    let schedule: Vec<&Intent> = d
        .intents
        .iter()
        .filter(|i| i.request_type == "ScheduleOSUpdate")
        .collect();
    let allowed = d
        .arm
        .as_ref()
        .and_then(|a| arm_steps.get(a))
        .copied()
        .unwrap_or(MAX_ARM_STEPS);
    let mut steps_seen = HashSet::new();
    let repeated_step = schedule.iter().any(|i| !steps_seen.insert(i.step));
    (schedule.len() as u32 > allowed || repeated_step).then(|| {
        format!(
            "{} ScheduleOSUpdate intents for an arm of at most {allowed} step(s)",
            schedule.len()
        )
    })
}

/// The ladder of the module doc, first match wins.
fn ladder(d: &Facts, run: &RunFacts, seen: &Seen, downloaded: bool) -> (Outcome, Option<String>) {
    let last_seen = seen.last();
    if !d.assessed {
        (Outcome::Excluded, Some("eligibility never assessed".into()))
    } else if !d.eligible {
        let rules: Vec<&str> = d.reasons.iter().map(|r| r.rule.as_str()).collect();
        (Outcome::Excluded, Some(rules.join(";")))
    } else if d.intents.is_empty() {
        (Outcome::NotDosed, Some(not_dosed_reason(d, run)))
    } else if last_seen.is_some_and(|b| seen.is_new(&b.build)) {
        (Outcome::Updated, None)
    } else if seen.wrong() {
        (Outcome::WrongVersion, None)
    } else if d.intents.iter().all(|i| i.enqueued.is_none()) {
        never_enqueued(d)
    } else if let Some(a) = d.detached_never_seen() {
        (
            Outcome::LostToFollowUp,
            Some(format!("detached at {} and never seen again", a.at)),
        )
    } else if d.is_ddm_dosed() {
        ddm_ladder(d, last_seen.is_some(), downloaded)
    } else if let Some(status) = last_answered_step_error(d) {
        (Outcome::CommandError, Some(status))
    } else if !d
        .intents
        .iter()
        .filter(|i| i.enqueued.is_some())
        .any(|i| d.answers_to(&i.command_uuid).any(Answer::is_final))
    {
        no_final_answer(d)
    } else if last_seen.is_none() {
        lost_without_build(d)
    } else if downloaded {
        (Outcome::DownloadedNotInstalled, None)
    } else {
        (Outcome::NotDownloaded, None)
    }
}

/// Steps 6–10 for a DDM dose: the device answers a declaration with status reports, not
/// command answers (DDM brief §1 "Report", §3), so step 6 has no DDM counterpart (a `failed`
/// install-state is not a command error: the declaration was taken, the install failed), step
/// 7 reads "no status report after the dose", and step 9 reads `install-state` `prepared` or
/// `installing` (the update is downloaded and prepared, DDM brief §3; Apple's phases article).
fn ddm_ladder(d: &Facts, build_seen: bool, downloaded: bool) -> (Outcome, Option<String>) {
    if d.ddm_reports_after_dose().next().is_none() {
        (
            Outcome::NoResponse,
            Some("no DDM status report after the declaration".into()),
        )
    } else if !build_seen {
        lost_without_build(d)
    } else if let Some(r) = downloaded.then(|| ddm_downloaded(d)).flatten() {
        // No journal seq in the reason, as for a ScheduleOSUpdate dose: a resumed run's journal
        // numbers differ from an uninterrupted one's, its outcomes must not (crash campaign).
        let state = r.view.install_state.as_ref().map_or("", |s| s.as_str());
        (
            Outcome::DownloadedNotInstalled,
            Some(format!("a status report said install-state {state}")),
        )
    } else {
        (Outcome::NotDownloaded, ddm_last_state(d))
    }
}

/// The first status report after the DDM dose whose install-state says the update is
/// downloaded: `prepared` or `installing` (DDM brief §3).
fn ddm_downloaded(d: &Facts) -> Option<&DdmReport> {
    d.ddm_reports_after_dose().find(|r| {
        matches!(
            r.view.install_state,
            Some(InstallState::Prepared | InstallState::Installing)
        )
    })
}

/// The last install-state reported after the DDM dose, with its failure reason if any.
fn ddm_last_state(d: &Facts) -> Option<String> {
    let v = &d.ddm_reports_after_dose().last()?.view;
    let state = v.install_state.as_ref()?.as_str().to_string();
    match v.failure_reason.as_ref().and_then(|f| f.reason.as_deref()) {
        Some(why) if state == "failed" => Some(format!("last install-state failed: {why}")),
        _ => Some(format!("last install-state {state}")),
    }
}

/// Step 7: no final answer to any enqueued dose. On an MDM that neither retries a webhook nor
/// keeps a history `lab` can read, the runner journals each such dose as an
/// [`ANSWER_LOST`](super::ANSWER_LOST) observation: its answer may have been posted while `lab`
/// was not listening, so the device is lost to follow-up, not unanswered (issue 17).
fn no_final_answer(d: &Facts) -> (Outcome, Option<String>) {
    // Distinct doses: a run resumed after its final sweep journals them again.
    let lost = d
        .observations
        .iter()
        .filter(|o| o.kind == super::ANSWER_LOST)
        .map(|o| &o.key)
        .collect::<HashSet<_>>()
        .len();
    if lost == 0 {
        return (Outcome::NoResponse, None);
    }
    (
        Outcome::LostToFollowUp,
        Some(format!(
            "no final answer to {lost} dose(s) ever reached lab, and the MDM neither retries a webhook nor keeps a history lab can read: an answer sent while lab was not listening is lost"
        )),
    )
}

/// Step 8: follow-up ended, or never did, without a build observation after the dose.
fn lost_without_build(d: &Facts) -> (Outcome, Option<String>) {
    let why = match &d.follow_up_end {
        Some((_, r)) => format!("follow-up ended ({r}) without a build observation"),
        None => "no build observation after the dose".into(),
    };
    (Outcome::LostToFollowUp, Some(why))
}

/// No intent reached the MDM's queue: one uncertain → `dose_uncertain`, else `not_dosed`.
fn never_enqueued(d: &Facts) -> (Outcome, Option<String>) {
    if d.intents.iter().any(|i| i.uncertain.is_some()) {
        return (
            Outcome::DoseUncertain,
            Some("enqueue result unknown".into()),
        );
    }
    let err = d.intents.iter().find_map(|i| i.failed.as_ref());
    (
        Outcome::NotDosed,
        Some(format!(
            "enqueue failed: {}",
            err.map(|e| e.1.as_str()).unwrap_or("no result recorded")
        )),
    )
}

/// Why an eligible device got no dose intent.
fn not_dosed_reason(d: &Facts, run: &RunFacts) -> String {
    if d.arm.is_none() {
        return "eligible, not allocated".into();
    }
    if let Some(r) = &run.consent_refused {
        return format!("consent refused: {r}");
    }
    if let Some(c) = &run.consent
        && !c.contains(&d.udid)
    {
        return "not in the consented list".into();
    }
    if let Some((rule, message)) = run.stop_rules.first() {
        return format!("stop rule {rule}: {message}");
    }
    if run.consent.is_none() {
        return "no consent recorded".into();
    }
    if !run.finished {
        return "run unfinished".into();
    }
    "no dose intent recorded".into()
}

/// The status of the last dose step's final answer, when it is Error or CommandFormatError.
fn last_answered_step_error(d: &Facts) -> Option<String> {
    let last = d.intents.iter().rev().find_map(|i| {
        d.answers_to(&i.command_uuid)
            .filter(|a| a.is_final())
            .last()
    })?;
    match ReportStatus::parse(&last.status) {
        ReportStatus::Error | ReportStatus::CommandFormatError => Some(format!(
            "{} answered {}",
            last.request_type.as_deref().unwrap_or("dose"),
            last.status
        )),
        _ => None,
    }
}
