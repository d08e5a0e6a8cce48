//! `flow.csv`: the CONSORT flow — enrolment, exclusions by rule, allocation per arm, who
//! received the allocated dose, losses to follow-up, and who is analysed.

use super::to_csv;
use crate::journal::Entry;
use crate::journal::fold::RunFacts;
use crate::verdicts::outcome::{self, DeviceOutcome, Outcome};
use std::collections::BTreeMap;

pub const HEADER: [&str; 4] = ["stage", "arm", "count", "reason"];

/// Why an allocated device did not receive its dose, grouped (the text before the first `:` of
/// the outcome reason for `not_dosed`).
fn not_received_reason(o: &DeviceOutcome) -> Option<String> {
    match o.outcome {
        Outcome::NotDosed => Some(format!(
            "not dosed: {}",
            o.reason
                .as_deref()
                .map(|r| r.split(':').next().unwrap_or(r))
                .unwrap_or("unknown")
        )),
        Outcome::DoseUncertain => Some("dose uncertain".into()),
        Outcome::NoResponse => Some("no answer to the dose".into()),
        Outcome::LostToFollowUp if o.first_mdm_status.is_none() && o.final_build.is_none() => {
            Some("no answer to the dose".into())
        }
        _ => None,
    }
}

fn lost_reason(o: &DeviceOutcome) -> Option<String> {
    (o.outcome == Outcome::LostToFollowUp).then(|| {
        if o.reason
            .as_deref()
            .is_some_and(|r| r.contains("never seen again"))
        {
            "detached, never seen again".into()
        } else {
            "no build observation after the dose".into()
        }
    })
}

/// The CONSORT counts of one arm.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmFlow {
    pub arm: String,
    pub allocated: usize,
    pub received: usize,
    /// Why allocated devices did not receive the dose: (reason, count), sorted by reason.
    pub not_received: Vec<(String, usize)>,
    /// (reason, count), sorted by reason.
    pub lost_to_follow_up: Vec<(String, usize)>,
    pub analysed: usize,
    /// Outcomes that occur, in the order of [`Outcome::ALL`].
    pub outcomes: Vec<(Outcome, usize)>,
}

/// The CONSORT flow as data (what `flow.csv` and the HTML diagram show).
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub enrolled: usize,
    pub not_assessed: usize,
    pub assessed: usize,
    pub excluded: usize,
    /// (rule, count), sorted by rule; a device failing several rules counts under each.
    pub excluded_by_rule: Vec<(String, usize)>,
    pub eligible: usize,
    pub not_allocated: usize,
    /// Arms in order of first allocation.
    pub arms: Vec<ArmFlow>,
}

fn count_reasons(reasons: Vec<String>) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in reasons {
        *counts.entry(r).or_default() += 1;
    }
    counts.into_iter().collect()
}

/// Count the flow from the journal.
pub fn counts(entries: &[Entry]) -> Flow {
    let run = crate::journal::fold::run_facts(entries);
    let outcomes = outcome::judge_run(&run, &Default::default());
    counts_of(&run, &outcomes)
}

/// [`counts`] from facts already gathered and judged.
pub(crate) fn counts_of(run: &RunFacts, outcomes: &[DeviceOutcome]) -> Flow {
    let devices = &run.devices;
    let assessed = devices.iter().filter(|d| d.assessed).count();
    let excluded: Vec<_> = devices
        .iter()
        .filter(|d| d.assessed && !d.eligible)
        .collect();
    let rules = excluded
        .iter()
        .flat_map(|d| {
            let mut r: Vec<String> = d.reasons.iter().map(|r| r.rule.clone()).collect();
            r.dedup();
            if r.is_empty() {
                r.push("unspecified".into());
            }
            r
        })
        .collect();
    let eligible = devices.iter().filter(|d| d.assessed && d.eligible).count();
    let not_allocated = devices
        .iter()
        .filter(|d| d.assessed && d.eligible && d.arm.is_none())
        .count();

    // Arms in order of first allocation.
    let mut arm_names: Vec<&str> = Vec::new();
    for o in outcomes {
        if let Some(a) = o.arm.as_deref()
            && !arm_names.contains(&a)
        {
            arm_names.push(a);
        }
    }
    let arms = arm_names
        .into_iter()
        .map(|arm| {
            let group: Vec<&DeviceOutcome> = outcomes
                .iter()
                .filter(|o| o.arm.as_deref() == Some(arm))
                .collect();
            let not_received: Vec<String> = group
                .iter()
                .filter_map(|o| not_received_reason(o))
                .collect();
            ArmFlow {
                arm: arm.to_string(),
                allocated: group.len(),
                received: group.len() - not_received.len(),
                not_received: count_reasons(not_received),
                lost_to_follow_up: count_reasons(
                    group.iter().filter_map(|o| lost_reason(o)).collect(),
                ),
                analysed: group.iter().filter(|o| o.final_build.is_some()).count(),
                outcomes: Outcome::ALL
                    .iter()
                    .map(|oc| (*oc, group.iter().filter(|o| o.outcome == *oc).count()))
                    .filter(|(_, n)| *n > 0)
                    .collect(),
            }
        })
        .collect();
    Flow {
        enrolled: devices.len(),
        not_assessed: devices.len() - assessed,
        assessed,
        excluded: excluded.len(),
        excluded_by_rule: count_reasons(rules),
        eligible,
        not_allocated,
        arms,
    }
}

pub fn render(entries: &[Entry]) -> String {
    render_flow(&counts(entries))
}

/// `flow.csv` of the counts.
pub(crate) fn render_flow(f: &Flow) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let row = |stage: &str, arm: &str, n: usize, reason: &str| {
        vec![stage.into(), arm.into(), n.to_string(), reason.into()]
    };
    let by = |rows: &mut Vec<Vec<String>>, stage: &str, arm: &str, counts: &[(String, usize)]| {
        for (reason, n) in counts {
            rows.push(row(stage, arm, *n, reason));
        }
    };
    rows.push(row("enrolled", "", f.enrolled, ""));
    if f.not_assessed > 0 {
        rows.push(row("not_assessed", "", f.not_assessed, ""));
    }
    rows.push(row("assessed", "", f.assessed, ""));
    rows.push(row("excluded", "", f.excluded, ""));
    by(&mut rows, "excluded", "", &f.excluded_by_rule);
    rows.push(row("eligible", "", f.eligible, ""));
    if f.not_allocated > 0 {
        rows.push(row("not_allocated", "", f.not_allocated, ""));
    }
    for a in &f.arms {
        rows.push(row("allocated", &a.arm, a.allocated, ""));
        rows.push(row("received", &a.arm, a.received, ""));
        by(&mut rows, "not_received", &a.arm, &a.not_received);
        by(&mut rows, "lost_to_follow_up", &a.arm, &a.lost_to_follow_up);
        rows.push(row("analysed", &a.arm, a.analysed, ""));
        for (oc, n) in &a.outcomes {
            rows.push(row("outcome", &a.arm, *n, oc.as_str()));
        }
    }
    to_csv(&HEADER, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Event, Reason};
    use crate::report::tests_util::parse;
    use crate::verdicts::outcome::testkit::J;

    #[test]
    fn consort_counts() {
        let mut j = J::new();
        j.device("X1", false)
            .device("X2", false)
            .device("A1", true)
            .device("A2", true);
        j.device("B1", true).device("B2", true);
        j.push(Event::DeviceDiscovered {
            udid: "Z".into(),
            host: "h".into(),
            device_id: 9,
        });
        // X2 fails only the battery rule.
        if let Event::EligibilityAssessed { reasons, .. } = &mut j.entries[6].event {
            *reasons = vec![Reason {
                rule: "battery".into(),
                message: "12%".into(),
                values: serde_json::Value::Null,
            }];
        } else {
            panic!("fixture moved");
        }
        j.allocate("A1", "asap")
            .allocate("A2", "asap")
            .allocate("B1", "default")
            .allocate("B2", "default");
        j.consent(&["A1", "A2", "B1"])
            .dose("A1", 1, "C1")
            .schedule_answer("A1", "C1", "Acknowledged")
            .reprobe("A1", true, Some("19H390"))
            .dose("A2", 1, "C2")
            .reprobe("A2", false, None)
            .dose("B1", 1, "C3")
            .schedule_answer("B1", "C3", "Error")
            .reprobe("B1", true, Some("19H12"));
        let (_, rows) = parse(&render(&j.entries));
        let got: Vec<String> = rows.iter().map(|r| r.join(",")).collect();
        assert_eq!(
            got,
            [
                "enrolled,,7,",
                "not_assessed,,1,",
                "assessed,,6,",
                "excluded,,2,",
                "excluded,,1,battery",
                "excluded,,1,free_disk",
                "excluded,,1,supervised",
                "eligible,,4,",
                "allocated,asap,2,",
                "received,asap,1,",
                "not_received,asap,1,no answer to the dose",
                "lost_to_follow_up,asap,1,detached, never seen again",
                "analysed,asap,1,",
                "outcome,asap,1,updated",
                "outcome,asap,1,lost_to_follow_up",
                "allocated,default,2,",
                "received,default,1,",
                "not_received,default,1,not dosed: not in the consented list",
                "analysed,default,1,",
                "outcome,default,1,command_error",
                "outcome,default,1,not_dosed",
            ]
        );
    }
}
