//! The differential test of issue 12 against the outcome's gathering ([`Gatherer`], which every
//! report reads): for the facts both hold, it and the one fold (`journal::fold`) agree after
//! every event of every golden journal, that is on every prefix of them.

use super::*;
use crate::journal::fold::{Fold, ProbeFacts};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn agree(g: &Gatherer, f: &Fold, at: &str) {
    let run = &g.run;
    assert_eq!(run.trial_id, f.trial_id, "{at}: trial_id");
    assert_eq!(
        run.protocol_sha256, f.protocol_sha256,
        "{at}: protocol_sha256"
    );
    assert_eq!(
        run.consent.is_some(),
        f.consented == Some(true),
        "{at}: consent"
    );
    assert_eq!(
        run.consent_refused.is_some(),
        f.consented == Some(false),
        "{at}: consent refused"
    );
    assert_eq!(run.stop_rules, f.stop_rules, "{at}: stop rules");
    assert_eq!(run.finished, f.finished, "{at}: finished");
    let udids: Vec<&str> = run.devices.iter().map(|d| d.udid.as_str()).collect();
    assert_eq!(udids, f.order, "{at}: devices");
    for d in &run.devices {
        let n = &f.devices[&d.udid];
        let at = format!("{at}: {}", d.udid);
        assert_eq!(d.host, n.host, "{at}: host");
        assert_eq!(d.device_id, n.device_id, "{at}: device_id");
        assert_eq!(d.probe.as_ref().map(ProbeFacts::of), n.probe, "{at}: probe");
        assert_eq!(
            d.assessed.then_some(d.eligible),
            n.eligible,
            "{at}: eligible"
        );
        assert_eq!(d.target, n.target, "{at}: target");
        assert_eq!(d.arm, n.arm, "{at}: arm");
        assert_eq!(
            d.follow_up_end.as_ref().map(|(_, r)| r.clone()),
            n.end.as_ref().map(|r| r.to_string()),
            "{at}: follow-up end"
        );
        let intents: BTreeSet<&str> = d.intents.iter().map(|i| i.command_uuid.as_str()).collect();
        assert_eq!(
            intents,
            n.intents.keys().map(String::as_str).collect(),
            "{at}: intents"
        );
        // A step's last intent and what the MDM said of it.
        for i in &d.intents {
            let Some(dose) = n.doses.get(&i.step) else {
                panic!("{at}: step {} not in the fold", i.step)
            };
            if dose.command_uuid == i.command_uuid {
                let said = match (&i.enqueued, &i.failed) {
                    (Some(_), _) => Some(true),
                    (None, Some(_)) => Some(false),
                    (None, None) => None,
                };
                assert_eq!(said, dose.enqueued, "{at}: step {} enqueued", i.step);
            }
            assert_eq!(
                i.uncertain.is_some(),
                n.uncertain.contains(&i.command_uuid),
                "{at}: {} uncertain",
                i.command_uuid
            );
        }
    }
}

#[test]
fn the_fold_agrees_with_the_outcomes_gathering_on_every_prefix_of_every_golden_journal() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("journal.jsonl").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "golden cases: {cases:?}");
    for case in cases {
        let path = case.join("journal.jsonl");
        let entries = crate::journal::read(&path).unwrap().entries;
        let (mut g, mut f) = (Gatherer::default(), Fold::default());
        for e in &entries {
            // Answers are the outcome's own (the fold keeps no decoded answers): pushed bare.
            g.push(e, None);
            f.apply(e);
            agree(&g, &f, &format!("{}:{}", path.display(), e.seq));
        }
    }
}
