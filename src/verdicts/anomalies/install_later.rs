//! Detectors of installs the user deferred ("Later" at the install prompt, recorded by the
//! operator) that start anyway.

use super::{
    Ctx, Found, after_first_dose, first_detach_after, first_new_build_after, schedule_intents,
    scheduled_later, status_answers,
};
use crate::journal::fold::{Answer, Facts};

pub(super) fn installing_while_scheduled(d: &Facts, _: &Ctx) -> (bool, Option<Found>) {
    let later = scheduled_later(d);
    if later.is_empty() {
        return (false, None);
    }
    let installing: Vec<&Answer> = status_answers(d)
        .filter(|(a, items)| {
            after_first_dose(d, a.seq)
                && items
                    .iter()
                    .any(|it| it.status.as_deref() == Some("Installing"))
        })
        .map(|(a, _)| a)
        .collect();
    let Some(first) = installing.first() else {
        return (true, None);
    };
    let restarted =
        first_detach_after(d, first.seq).is_some() || first_new_build_after(d, first.seq).is_some();
    let mut evidence = vec![later[0], first.seq];
    if let Some(last) = installing.last() {
        evidence.push(last.seq);
    }
    (
        true,
        Some(Found {
            evidence,
            actual: format!(
                "The operator recorded that the user scheduled the install for later; OSUpdateStatus reported Status Installing in {} answer(s){}.",
                installing.len(),
                if restarted {
                    ""
                } else {
                    ", and the device neither restarted nor changed build during follow-up"
                }
            ),
            command_uuid: Some(first.command_uuid.to_string()),
            responses: vec![first.seq],
        }),
    )
}

pub(super) fn install_after_further_command(d: &Facts, _: &Ctx) -> (bool, Option<Found>) {
    let Some(&later) = scheduled_later(d).first() else {
        return (false, None);
    };
    let mut situation = false;
    let intents: Vec<_> = schedule_intents(d).collect();
    for (k, i) in intents.iter().enumerate() {
        if i.seq < later || i.enqueued.is_none() {
            continue;
        }
        situation = true;
        let until = intents.get(k + 1).map(|n| n.seq).unwrap_or(u64::MAX);
        let answered = d.answers_to(&i.command_uuid).find(|a| {
            a.report
                .update_results()
                .is_some_and(|r| r.iter().any(|x| x.status.as_deref() == Some("Installing")))
        });
        let detach = first_detach_after(d, i.seq).filter(|s| *s < until);
        let build = first_new_build_after(d, i.seq).filter(|b| b.seq < until);
        let mut evidence = vec![later, i.seq];
        let mut what = Vec::new();
        if let Some(a) = answered {
            evidence.push(a.seq);
            what.push("its answer said Installing".to_string());
        }
        if let Some(s) = detach {
            evidence.push(s);
            what.push("the device restarted (detached)".to_string());
        }
        if let Some(b) = build {
            evidence.push(b.seq);
            what.push(format!("the device came back on build {}", b.build));
        }
        if what.is_empty() {
            continue;
        }
        return (
            true,
            Some(Found {
                evidence,
                actual: format!(
                    "After the user scheduled the install for later, ScheduleOSUpdate step {} (InstallAction {}) started the install at once: {}.",
                    i.step,
                    i.install_action,
                    what.join("; ")
                ),
                command_uuid: Some(i.command_uuid.clone()),
                responses: answered.map(|a| vec![a.seq]).unwrap_or_default(),
            }),
        );
    }
    (situation, None)
}
