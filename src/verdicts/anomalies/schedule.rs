//! Detectors of what follows a ScheduleOSUpdate: an Error answer the device acts on anyway,
//! no answer at all, an Acknowledged answer with no update.

use super::{
    Ctx, Found, after_first_dose, first_detach_after, first_new_build_after, schedule_intents,
    scheduled_later, status_answers, yes,
};
use crate::journal::fold::{Answer, Facts};
use crate::mdm::report::ReportStatus;

pub(super) fn schedule_error_but_proceeds(d: &Facts, _: &Ctx) -> (bool, Option<Found>) {
    let mut situation = false;
    for i in schedule_intents(d) {
        let answers: Vec<&Answer> = d.answers_to(&i.command_uuid).collect();
        if answers.iter().any(|a| a.is_final()) {
            situation = true;
        }
        let Some(err) = answers.iter().find(|a| {
            a.is_final()
                && (ReportStatus::parse(&a.status) == ReportStatus::Error
                    || a.report.update_results().is_some_and(|r| {
                        r.iter()
                            .any(|x| x.install_action.as_deref() == Some("Error"))
                    }))
        }) else {
            continue;
        };
        // Downloaded before the command? Then IsDownloaded afterwards proves nothing.
        let downloaded_before = d.downloaded.iter().any(|(s, _)| *s < i.seq);
        let mut proof: Option<(u64, String)> = None;
        for (a, items) in status_answers(d).filter(|(a, _)| a.seq > err.seq) {
            if let Some(it) = items.iter().find(|it| {
                matches!(it.status.as_deref(), Some("Downloading" | "Installing"))
                    || (!downloaded_before && it.is_downloaded == Some(true))
            }) {
                proof = Some((
                    a.seq,
                    format!(
                        "OSUpdateStatus then reported {} (IsDownloaded {}, {:.0} % downloaded)",
                        it.status.as_deref().unwrap_or("?"),
                        it.is_downloaded
                            .map(|b| b.to_string())
                            .unwrap_or_else(|| "?".into()),
                        it.download_percent_complete.unwrap_or(0.0) * 100.0
                    ),
                ));
                break;
            }
        }
        let prompt = d
            .observations
            .iter()
            .find(|o| o.seq > i.seq && o.by_operator() && o.is("prompt_seen") && yes(&o.value));
        if let Some(o) = prompt
            && proof.as_ref().is_none_or(|p| o.seq < p.0)
        {
            proof = Some((o.seq, "the operator saw the install prompt".into()));
        }
        if let Some(b) = first_new_build_after(d, err.seq)
            && proof.as_ref().is_none_or(|p| b.seq < p.0)
        {
            proof = Some((
                b.seq,
                format!(
                    "the device then reported build {} ({})",
                    b.build,
                    b.version.as_deref().unwrap_or("?")
                ),
            ));
        }
        if let Some((seq, what)) = proof {
            let chain = Some(
                err.report
                    .error_chain()
                    .iter()
                    .map(|c| {
                        format!(
                            "{} {}",
                            c.domain.as_deref().unwrap_or("?"),
                            c.code.map(|x| x.to_string()).unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" → "),
            )
            .filter(|s| !s.is_empty())
            .map(|s| format!(" (ErrorChain {s})"))
            .unwrap_or_default();
            return (
                true,
                Some(Found {
                    evidence: vec![i.seq, err.seq, seq],
                    actual: format!(
                        "ScheduleOSUpdate step {} (InstallAction {}) was answered {}{chain}; {what}.",
                        i.step, i.install_action, err.status
                    ),
                    command_uuid: Some(i.command_uuid.clone()),
                    responses: vec![err.seq],
                }),
            );
        }
    }
    (situation, None)
}

pub(super) fn schedule_no_response(d: &Facts, _: &Ctx) -> (bool, Option<Found>) {
    let end = d.follow_up_end.clone();
    let mut situation = false;
    for i in schedule_intents(d) {
        let Some((enq_seq, _)) = &i.enqueued else {
            continue;
        };
        // The window closes when the device restarts or changes build (it carried the command
        // out), or when the protocol's follow-up of the device ends, whichever comes first.
        let restart = first_detach_after(d, *enq_seq)
            .filter(|s| {
                d.attaches.iter().any(|a| a.seq > *s && a.attached)
                    || d.answers.iter().any(|a| a.seq > *s)
                    || d.builds.iter().any(|b| b.seq > *s)
            })
            .map(|s| (s, "the device restarted".to_string()));
        let build = first_new_build_after(d, *enq_seq)
            .map(|b| (b.seq, format!("the device reported build {}", b.build)));
        let ended = end
            .as_ref()
            .filter(|(s, _)| s > enq_seq)
            .map(|(s, r)| (*s, format!("follow-up ended ({r})")));
        // An answer without UpdateResults is Apple's sign of one given only after the install's
        // restart (brief mdm.md §0.3): a restart the harness may have polled past.
        let after_restart = d
            .answers_to(&i.command_uuid)
            .next()
            .filter(|a| {
                &*a.status == "Acknowledged"
                    && a.report.update_results().is_none()
            })
            .map(|a| {
                (
                    a.seq,
                    "the device restarted (its first answer carries no UpdateResults, as answers given after an install's restart do)".to_string(),
                )
            });
        let Some((close, why)) = [restart, build, ended, after_restart]
            .into_iter()
            .flatten()
            .min_by_key(|x| x.0)
        else {
            continue;
        };
        if d.detached_never_seen().is_some() {
            continue;
        }
        situation = true;
        if d.answers_to(&i.command_uuid).any(|a| a.seq < close) {
            continue;
        }
        let late = d.answers_to(&i.command_uuid).next();
        let mut evidence = vec![i.seq, *enq_seq, close];
        evidence.extend(late.map(|a| a.seq));
        let after = match late {
            Some(a) => format!(
                " The first answer, {}{}, came only after that.",
                a.status,
                if a.report.update_results().is_none() {
                    " without UpdateResults"
                } else {
                    ""
                }
            ),
            None => String::new(),
        };
        return (
            true,
            Some(Found {
                evidence,
                actual: format!(
                    "ScheduleOSUpdate step {} (InstallAction {}) was queued and {}, and no answer of any status (no Status, no UpdateResults) came back before {why}.{after}",
                    i.step,
                    i.install_action,
                    // Issue 17: only what the MDM said of the push (journals before always say).
                    match i.pushed {
                        Some(false) => "not pushed",
                        Some(true) => "pushed",
                        None => "the MDM did not say whether it pushed",
                    }
                ),
                command_uuid: Some(i.command_uuid.clone()),
                responses: late.map(|a| vec![a.seq]).unwrap_or_default(),
            }),
        );
    }
    (situation, None)
}

pub(super) fn acknowledged_not_updated(d: &Facts, _: &Ctx) -> (bool, Option<Found>) {
    let Some((end_seq, end_reason)) = d.follow_up_end.clone() else {
        return (false, None);
    };
    let Some(start) = d.starting_build() else {
        return (false, None);
    };
    // The last install step answered Acknowledged before follow-up ended.
    let mut install_ack: Option<(&crate::journal::fold::Intent, &Answer)> = None;
    for i in schedule_intents(d) {
        let downloaded_before = d.downloaded.iter().any(|(s, _)| *s < i.seq);
        let Some(ack) = d.answers_to(&i.command_uuid).find(|a| {
            a.seq < end_seq && ReportStatus::parse(&a.status) == ReportStatus::Acknowledged
        }) else {
            continue;
        };
        let promised = ack.report.update_results().is_some_and(|r| {
            r.iter()
                .any(|x| x.install_action.as_deref() == Some("InstallASAP"))
        });
        let asks_install = i.install_action == "InstallASAP"
            || (i.install_action == "Default" && downloaded_before)
            || promised;
        if asks_install {
            install_ack = Some((i, ack));
        }
    }
    let Some((i, ack)) = install_ack else {
        return (false, None);
    };
    // Re-probes are journalled when something changed: the last build seen after the first dose
    // is the build at the end.
    let last = d
        .builds
        .iter()
        .rfind(|b| after_first_dose(d, b.seq) && b.seq < end_seq);
    let Some(last) = last else {
        return (false, None);
    };
    if last.build != start || !scheduled_later(d).is_empty() {
        return (true, None);
    }
    (
        true,
        Some(Found {
            evidence: vec![i.seq, ack.seq, last.seq, end_seq],
            actual: format!(
                "ScheduleOSUpdate step {} (InstallAction {}) was Acknowledged, and the device still reported its starting build {} when follow-up ended ({end_reason}).",
                i.step, i.install_action, start
            ),
            command_uuid: Some(i.command_uuid.clone()),
            responses: vec![ack.seq],
        }),
    )
}
