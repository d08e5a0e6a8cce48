//! `adverse_events.csv`: harms, CDASH AE style (AETERM, AESTDTC, AESEV, AESER, AEREL, AEACN,
//! AEOUT). Header only when there are none. Which events there are is decided in
//! `verdicts::adverse` (see its doc); this module writes them.

use super::{seq_refs, to_csv};
use crate::journal::Entry;
use crate::journal::fold::{RunFacts, run_facts};
use crate::verdicts::outcome::{DeviceOutcome, judge_run};

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

pub fn render(entries: &[Entry]) -> String {
    let run = run_facts(entries);
    let outcomes = judge_run(&run, &Default::default());
    render_of(&run, &outcomes)
}

/// [`render`] from facts already gathered and judged.
pub(crate) fn render_of(run: &RunFacts, outcomes: &[DeviceOutcome]) -> String {
    let mut aes = crate::verdicts::adverse::of_run(run, outcomes);
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
    use crate::journal::Event;
    use crate::journal::ObservationSource;
    use crate::report::tests_util::{cell, parse};
    use crate::verdicts::outcome::testkit::J;

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

    /// The stop rule's count from the runner's fold in memory is the one the streamed reading of
    /// the journal gives, on every golden journal.
    #[test]
    fn severe_devices_of_the_fold_match_the_streamed_journal_on_every_golden_run() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        let mut n = 0;
        for case in std::fs::read_dir(&root).unwrap() {
            let path = case.unwrap().path().join("journal.jsonl");
            if !path.exists() {
                continue;
            }
            let loaded = crate::journal::read(&path).unwrap();
            let fold = crate::journal::fold::Fold::of(&loaded.entries);
            let in_memory = crate::verdicts::adverse::severe_devices(&fold, &Default::default());
            let mut obs = tempfile::tempfile().unwrap();
            let streamed = crate::report::digest::Digest::read(&path, &mut obs).unwrap();
            assert_eq!(
                in_memory,
                crate::verdicts::adverse::severe_count(&streamed.run, &streamed.outcomes),
                "{}",
                path.display()
            );
            n += 1;
        }
        assert!(n >= 5, "golden journals: {n}");
    }
}
