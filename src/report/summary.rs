//! `summary.txt`: the end of a run in a screenful, after nextest's and hyperfine's final
//! summaries — where the report is, what became of each arm, why devices were excluded, which
//! anomalies fired (with the path of their drafts), the deviations and the stop rules. `lab run`
//! prints it when the reports are written; it is a projection of the journal like every other
//! report, so `lab report` writes the same file again.

use super::html::AnomalyLink;
use crate::format::count;
use crate::journal::fold::RunFacts;
use crate::verdicts::outcome::{DeviceOutcome, Outcome};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The file's name in the run folder.
pub const FILE: &str = "summary.txt";

/// The summary of a judged run; `anomalies` as the HTML report lists them.
pub fn render(run: &RunFacts, outcomes: &[DeviceOutcome], anomalies: &[AnomalyLink]) -> String {
    let mut s = String::new();
    let trial = run.trial_id.as_deref().unwrap_or("(no trial id)");
    let state = if run.finished {
        "finished"
    } else {
        "not finished"
    };
    let _ = write!(
        s,
        "{trial}: {state}, {}",
        count(run.devices.len(), "device")
    );
    if run.simulated {
        let scale = run.time_scale.filter(|t| *t > 0.0).unwrap_or(1.0);
        let _ = write!(
            s,
            " (simulated lab, clock ×{scale}: a rehearsal, not evidence)"
        );
    }
    let _ = writeln!(s, "\n  report: {}", super::HTML_REPORT);

    for (rule, message) in &run.stop_rules {
        let _ = writeln!(s, "\nSTOP RULE {rule}: {message}");
    }

    let _ = writeln!(s, "\nOutcomes by arm");
    let mut arms: Vec<Option<&str>> = Vec::new();
    for o in outcomes {
        let a = o.arm.as_deref();
        if o.outcome != Outcome::Excluded && !arms.contains(&a) {
            arms.push(a);
        }
    }
    if arms.is_empty() {
        let _ = writeln!(s, "  no device was eligible");
    }
    let width = arms
        .iter()
        .map(|a| a.unwrap_or("not allocated").chars().count())
        .max()
        .unwrap_or(0);
    for a in &arms {
        let mine: Vec<&DeviceOutcome> = outcomes
            .iter()
            .filter(|o| o.arm.as_deref() == *a && o.outcome != Outcome::Excluded)
            .collect();
        let cells: Vec<String> = Outcome::ALL
            .iter()
            .filter_map(|oc| {
                let n = mine.iter().filter(|o| o.outcome == *oc).count();
                (n > 0).then(|| format!("{} {n}", oc.as_str()))
            })
            .collect();
        let _ = writeln!(
            s,
            "  {:<width$}  n={:<3} {}",
            a.unwrap_or("not allocated"),
            mine.len(),
            cells.join(", ")
        );
    }

    let excluded: Vec<&DeviceOutcome> = outcomes
        .iter()
        .filter(|o| o.outcome == Outcome::Excluded)
        .collect();
    let _ = writeln!(
        s,
        "\nExcluded: {} (devices per rule below; a device may fail several)",
        excluded.len()
    );
    let mut by_rule: BTreeMap<&str, usize> = BTreeMap::new();
    for d in run.devices.iter().filter(|d| !d.eligible) {
        for r in &d.reasons {
            *by_rule.entry(r.rule.as_str()).or_default() += 1;
        }
        if d.reasons.is_empty() {
            *by_rule.entry("not assessed").or_default() += 1;
        }
    }
    for (rule, n) in &by_rule {
        let _ = writeln!(s, "  {rule:<24} {n}");
    }

    let _ = writeln!(s, "\nAnomalies: {}", anomalies.len());
    for a in anomalies {
        let who = a
            .udid
            .as_deref()
            .and_then(|u| run.devices.iter().find(|d| d.udid == u))
            .map(|d| {
                d.baseline_str(&["baseline", "device_name"])
                    .unwrap_or_else(|| d.udid.clone())
            })
            .unwrap_or_else(|| "run".into());
        let _ = writeln!(
            s,
            "  {}  {who}: {}",
            super::html::draft_path(&a.id),
            a.title
        );
    }

    let deviations: Vec<(&str, &str)> = outcomes
        .iter()
        .flat_map(|o| o.deviations.iter().map(|d| (o.udid.as_str(), d.as_str())))
        .collect();
    let _ = writeln!(s, "\nDeviations: {}", deviations.len());
    for (udid, d) in deviations {
        let _ = writeln!(s, "  {udid}: {d}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdicts::outcome::testkit::J;

    #[test]
    fn the_summary_gives_the_report_outcomes_by_arm_exclusions_anomalies_and_deviations() {
        let mut j = J::new();
        j.device("A", true).allocate("A", "fast").consent(&["A"]);
        j.dose("A", 1, "S1")
            .schedule_answer("A", "S1", "Acknowledged");
        j.device_info("A", "I1", "15.8", "19H390");
        j.device("X", false);
        j.push(crate::journal::Event::RunFinished);
        let run = crate::journal::fold::run_facts(&j.entries);
        let outcomes = crate::verdicts::outcome::judge_run(&run, &Default::default());
        let links = [AnomalyLink {
            id: "schedule_no_response".into(),
            title: "never answered".into(),
            udid: Some("A".into()),
        }];
        let s = render(&run, &outcomes, &links);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "t1: finished, 2 devices");
        assert_eq!(lines[1], "  report: report.html");
        assert!(s.contains("\n  fast  n=1   updated 1\n"), "{s}");
        assert!(s.contains("\nExcluded: 1 (devices per rule below"), "{s}");
        assert!(s.contains("  supervised               1\n"), "{s}");
        assert!(s.contains("  free_disk                1\n"), "{s}");
        assert!(
            s.contains(
                "\nAnomalies: 1\n  radar/schedule_no_response.md  iPhone A: never answered\n"
            ),
            "{s}"
        );
        assert!(s.contains("\nDeviations: 0\n"), "{s}");
    }
}
