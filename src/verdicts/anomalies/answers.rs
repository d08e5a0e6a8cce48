//! Detectors of answers that depart from their documented shape: value types, the
//! InstallAction answered, a command answered twice, AvailableOSUpdates error 2213.

use super::{Ctx, Found, schedule_intents, status_answers};
use crate::journal::fold::{Answer, Facts};
use crate::mdm::report::ReportStatus;
use std::collections::{BTreeSet, HashMap};

pub(super) fn documented_type_mismatch(d: &Facts, ctx: &Ctx) -> (bool, Option<Found>) {
    let mut situation = false;
    let mut notes: Vec<String> = Vec::new();
    let mut evidence = Vec::new();
    let mut first: Option<(String, u64)> = None;
    let mut note = |seq: u64, uuid: &str, what: String, notes: &mut Vec<String>| {
        evidence.push(seq);
        if first.is_none() {
            first = Some((uuid.to_string(), seq));
        }
        if !notes.contains(&what) {
            notes.push(what);
        }
    };
    for (a, items) in status_answers(d) {
        if items.is_empty() {
            continue;
        }
        situation = true;
        for what in a.report.type_notes() {
            note(a.seq, &a.command_uuid, what.clone(), &mut notes);
        }
    }
    for a in ctx.avail.get(&d.udid).into_iter().flatten() {
        let Some(r) = &a.report else { continue };
        if !r.has_items {
            continue;
        }
        situation = true;
        for what in &r.type_notes {
            note(a.seq, &a.uuid, what.clone(), &mut notes);
        }
    }
    let found = first.map(|(uuid, seq)| Found {
        actual: format!(
            "{} ({} answer(s)).",
            notes.join("; "),
            evidence.iter().collect::<BTreeSet<_>>().len()
        ),
        evidence: evidence.clone(),
        command_uuid: Some(uuid),
        responses: vec![seq],
    });
    (situation, found)
}

/// Whether an UpdateResults InstallAction answers the requested one (`Default` never comes
/// back; it downloads or installs depending on the state).
fn action_consistent(requested: &str, answered: &str) -> bool {
    match requested {
        "Default" => matches!(answered, "DownloadOnly" | "InstallASAP"),
        other => other == answered,
    }
}

pub(super) fn install_action_mismatch(d: &Facts, _: &Ctx) -> (bool, Option<Found>) {
    let mut situation = false;
    for i in schedule_intents(d) {
        for a in d.answers_to(&i.command_uuid) {
            let Some(results) = a.report.update_results() else {
                continue;
            };
            for r in results {
                let Some(got) = r.install_action.as_deref() else {
                    continue;
                };
                situation = true;
                if got == "Error" || action_consistent(&i.install_action, got) {
                    continue;
                }
                return (
                    true,
                    Some(Found {
                        evidence: vec![i.seq, a.seq],
                        actual: format!(
                            "ScheduleOSUpdate step {} asked for InstallAction {}; the UpdateResults item for {} came back InstallAction {} with Status {}.",
                            i.step,
                            i.install_action,
                            r.product_key.as_deref().unwrap_or("?"),
                            got,
                            r.status.as_deref().unwrap_or("?")
                        ),
                        command_uuid: Some(i.command_uuid.clone()),
                        responses: vec![a.seq],
                    }),
                );
            }
        }
    }
    (situation, None)
}

/// The observation kind the runner journals for each delivery of a dose the backend saw
/// (`mdm::deliveries`), key the CommandUUID, value `time: how it was seen`.
pub const COMMAND_DELIVERED: &str = "command_delivered";

/// How many deliveries of each command are journaled (CommandUUID → count): the fold of the
/// `command_delivered` observations.
pub fn deliveries_journaled(d: &Facts) -> HashMap<String, usize> {
    let mut m: HashMap<String, usize> = HashMap::new();
    for o in d
        .observations
        .iter()
        .filter(|o| o.kind == COMMAND_DELIVERED)
    {
        *m.entry(o.key.clone()).or_default() += 1;
    }
    m
}

/// Deliveries of a command the device had not answered: each answer (any status) accounts for
/// one delivery, and the last delivery of a command without a final answer may still be on
/// its way to an answer. Pure arithmetic, no clocks compared (the MDM's and the listener's
/// differ).
pub fn unanswered_redeliveries(deliveries: usize, answers: usize, has_final: bool) -> usize {
    deliveries.saturating_sub(answers + usize::from(!has_final))
}

pub(super) fn command_redelivered(d: &Facts, ctx: &Ctx) -> (bool, Option<Found>) {
    let delivered = deliveries_journaled(d);
    let (situation, found) = redelivered_after_final(d, ctx);
    if found.is_some() {
        return (true, found);
    }
    let found = redelivered_unanswered(d, &delivered);
    (situation || !delivered.is_empty() || found.is_some(), found)
}

/// A dose delivered again while the device had not answered it (issue 14: NanoMDM re-delivered
/// an unanswered ScheduleOSUpdate 13–14 times, and the device installed).
fn redelivered_unanswered(d: &Facts, delivered: &HashMap<String, usize>) -> Option<Found> {
    for i in &d.intents {
        let Some(&n) = delivered.get(&i.command_uuid) else {
            continue;
        };
        let answers: Vec<&Answer> = d.answers_to(&i.command_uuid).collect();
        let has_final = answers.iter().any(|a| a.is_final());
        let again = unanswered_redeliveries(n, answers.len(), has_final);
        if again == 0 {
            continue;
        }
        let mut evidence = vec![i.seq];
        evidence.extend(
            d.observations
                .iter()
                .filter(|o| o.kind == COMMAND_DELIVERED && o.key == i.command_uuid)
                .map(|o| o.seq),
        );
        evidence.extend(answers.iter().map(|a| a.seq));
        evidence.sort_unstable();
        let statuses: Vec<&str> = answers.iter().map(|a| &*a.status).collect();
        let answered = if statuses.is_empty() {
            "never answered".to_string()
        } else {
            format!(
                "answered {} time(s) ({})",
                statuses.len(),
                statuses.join(", ")
            )
        };
        return Some(Found {
            evidence,
            actual: format!(
                "{} {} was delivered {n} times and {answered}: it was delivered again {again} time(s) while the device had not answered it.",
                i.request_type, i.command_uuid
            ),
            command_uuid: Some(i.command_uuid.clone()),
            responses: answers.iter().map(|a| a.seq).collect(),
        });
    }
    None
}

/// A command answered again after its final answer: delivered again after it left the queue.
fn redelivered_after_final(d: &Facts, _: &Ctx) -> (bool, Option<Found>) {
    let situation = d.answers.iter().any(Answer::is_final);
    // The first CommandUUID, in order of first answer, answered again after a final answer:
    // one pass with a small state per CommandUUID (a device may have answered a million status
    // polls, each to its own command), then that one command's answers.
    let Some(uuid) = first_answered_after_final(&d.answers) else {
        return (situation, None);
    };
    let answers: Vec<&Answer> = d.answers_to(uuid).collect();
    let k = answers
        .iter()
        .position(|a| a.is_final())
        .expect("answered again after a final answer");
    let again: Vec<&&Answer> = answers[k + 1..].iter().collect();
    let rt = answers[k]
        .request_type
        .clone()
        .unwrap_or_else(|| "command".into());
    let mut evidence: Vec<u64> = d
        .intents
        .iter()
        .filter(|i| i.command_uuid == uuid)
        .map(|i| i.seq)
        .collect();
    evidence.push(answers[k].seq);
    evidence.extend(again.iter().map(|a| a.seq));
    let statuses: Vec<&str> = again.iter().map(|a| &*a.status).collect();
    (
        true,
        Some(Found {
            evidence,
            actual: format!(
                "{rt} {uuid} was answered {} and then answered again ({}): it was delivered again after it had left the queue.",
                answers[k].status,
                statuses.join(", ")
            ),
            command_uuid: Some(uuid.to_string()),
            responses: std::iter::once(answers[k].seq)
                .chain(again.iter().map(|a| a.seq))
                .collect(),
        }),
    )
}

/// The first CommandUUID, in order of first answer, with an answer after a final answer to it.
fn first_answered_after_final(answers: &[Answer]) -> Option<&str> {
    // Per CommandUUID: (index of its first answer, 0 none final yet / 1 final / 2 again after).
    let mut state: rustc_hash::FxHashMap<&str, (usize, u8)> = Default::default();
    for (n, a) in answers.iter().enumerate() {
        if a.command_uuid.is_empty() {
            continue;
        }
        let s = state.entry(&a.command_uuid).or_insert((n, 0));
        s.1 = match s.1 {
            0 if a.is_final() => 1,
            1 => 2,
            x => x,
        };
    }
    state
        .into_iter()
        .filter(|(_, s)| s.1 == 2)
        .min_by_key(|(_, s)| s.0)
        .map(|(u, _)| u)
}

pub(super) fn available_updates_error_2213(d: &Facts, ctx: &Ctx) -> (bool, Option<Found>) {
    let mut situation = false;
    for a in ctx.avail.get(&d.udid).into_iter().flatten() {
        let Some(r) = &a.report else { continue };
        let is_2213 =
            r.status == ReportStatus::Error && r.error_chain.iter().any(|c| c.code == Some(2213));
        let empty = r.status == ReportStatus::Acknowledged && r.empty_list;
        if empty {
            situation = true;
        }
        if !is_2213 {
            continue;
        }
        let chain = r
            .error_chain
            .iter()
            .map(|c| {
                format!(
                    "{} {} \"{}\"",
                    c.domain.as_deref().unwrap_or("?"),
                    c.code.map(|x| x.to_string()).unwrap_or_default(),
                    c.localized_description.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join(" → ");
        return (
            true,
            Some(Found {
                evidence: vec![a.seq],
                actual: format!(
                    "AvailableOSUpdates was answered Status Error with ErrorChain {chain}, and no AvailableOSUpdates array."
                ),
                command_uuid: Some(a.uuid.clone()),
                responses: vec![a.seq],
            }),
        );
    }
    (situation, None)
}
