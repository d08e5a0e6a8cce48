//! The detector of baselines where lockdown and the MDM disagree.

use super::{Ctx, Found};
use crate::journal::fold::Facts;

pub(super) fn baseline_disagreement(d: &Facts, _: &Ctx) -> (bool, Option<Found>) {
    let Some(probe) = d.probe.as_ref().map(|p| p.value()) else {
        return (false, None);
    };
    let situation = probe.get("mdm").is_some_and(|m| !m.is_null());
    let list = probe
        .get("disagreements")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        return (situation, None);
    }
    let text: Vec<String> = list
        .iter()
        .map(|x| {
            format!(
                "{}: lockdown={} mdm={}",
                x.get("fact").and_then(|f| f.as_str()).unwrap_or("?"),
                crate::format::json_cell(x.get("lockdown").unwrap_or(&serde_json::Value::Null)),
                crate::format::json_cell(x.get("mdm").unwrap_or(&serde_json::Value::Null)),
            )
        })
        .collect();
    let baseline_seq = d.baseline_seq.unwrap_or(0);
    // The MDM answers the facts came from, when the journal holds them.
    let cmds: Vec<String> = probe
        .pointer("/mdm/commands")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let answer = cmds
        .iter()
        .find_map(|u| d.answers_to(u).find(|a| a.is_final()));
    let mut evidence = vec![baseline_seq];
    evidence.extend(answer.map(|a| a.seq));
    (
        true,
        Some(Found {
            evidence,
            actual: format!(
                "At baseline lockdown and the MDM disagreed: {}.",
                text.join("; ")
            ),
            command_uuid: answer.map(|a| a.command_uuid.to_string()),
            responses: answer.map(|a| vec![a.seq]).unwrap_or_default(),
        }),
    )
}
