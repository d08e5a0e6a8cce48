//! The differential test of issue 12: the runner's own replay (`replay_entry`, the state it
//! resumes from) and the one fold (`journal::fold`) agree after every event of every golden
//! journal, that is on every prefix of them, before the runner's copy is deleted.

use super::*;
use crate::journal::fold::{DeviceFacts, Fold};
use std::collections::BTreeSet;

fn agree(s: &State, f: &Fold, at: &str) {
    assert_eq!(s.started, f.started, "{at}: started");
    assert_eq!(s.consented, f.consented, "{at}: consented");
    assert_eq!(s.finished, f.finished, "{at}: finished");
    assert_eq!(s.rejected_max, f.rejected_max, "{at}: rejected_max");
    assert_eq!(s.order, f.order, "{at}: order");
    assert_eq!(
        s.devices.keys().collect::<Vec<_>>(),
        f.devices.keys().collect::<Vec<_>>(),
        "{at}: devices"
    );
    for (udid, d) in &s.devices {
        device_agrees(d, &f.devices[udid], &format!("{at}: {udid}"));
    }
}

fn device_agrees(d: &Dev, n: &DeviceFacts, at: &str) {
    assert_eq!(d.host, n.host, "{at}: host");
    assert_eq!(d.device_id, n.device_id, "{at}: device_id");
    let probe = |p: &ProbeFacts| {
        (
            p.device_name.clone(),
            p.product_version.clone(),
            p.build_version.clone(),
            p.product_type.clone(),
            p.passcode,
        )
    };
    let fold_probe = n.probe.as_ref().map(|p| {
        (
            p.device_name.clone(),
            p.product_version.clone(),
            p.build_version.clone(),
            p.product_type.clone(),
            p.passcode,
        )
    });
    assert_eq!(d.probe.as_ref().map(probe), fold_probe, "{at}: probe");
    assert_eq!(d.eligible, n.eligible, "{at}: eligible");
    assert_eq!(d.target, n.target, "{at}: target");
    assert_eq!(d.arm, n.arm, "{at}: arm");
    let doses: BTreeMap<u32, (String, Option<bool>)> = n
        .doses
        .iter()
        .map(|(k, v)| (*k, (v.command_uuid.clone(), v.enqueued)))
        .collect();
    assert_eq!(d.doses, doses, "{at}: doses");
    assert_eq!(
        d.uncertain.iter().cloned().collect::<BTreeSet<_>>(),
        n.uncertain,
        "{at}: uncertain"
    );
    let intents: BTreeMap<String, (Option<StoreIdentity>, String)> = d
        .intent_store
        .iter()
        .map(|(k, v)| (k.clone(), (v.store.clone(), v.at.clone())))
        .collect();
    assert_eq!(intents, n.intents, "{at}: intents");
    assert_eq!(
        d.withheld.iter().copied().collect::<BTreeSet<_>>(),
        n.withheld,
        "{at}: withheld"
    );
    assert_eq!(
        d.results.iter().cloned().collect::<BTreeSet<_>>(),
        n.results,
        "{at}: results"
    );
    assert_eq!(d.outstanding, n.outstanding, "{at}: outstanding");
    assert_eq!(d.downloaded, n.downloaded, "{at}: downloaded");
    assert_eq!(d.last_status, n.last_status, "{at}: last_status");
    assert_eq!(
        d.last_reprobe,
        n.last_reprobe.as_ref().map(|r| (
            r.attached,
            r.product_version.clone(),
            r.build_version.clone()
        )),
        "{at}: last_reprobe"
    );
    assert_eq!(d.ended, n.ended(), "{at}: ended");
    assert_eq!(
        d.ended,
        n.phase == crate::journal::fold::Phase::Ended,
        "{at}: phase {:?}",
        n.phase
    );
    let first = n.first_dose_at.as_deref().and_then(|t| {
        chrono::DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    });
    assert_eq!(d.first_dose_at, first, "{at}: first_dose_at");
}

#[test]
fn the_fold_agrees_with_the_runners_replay_on_every_prefix_of_every_golden_journal() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("journal.jsonl").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "golden cases: {cases:?}");
    let mut phases = BTreeSet::new();
    for case in cases {
        let path = case.join("journal.jsonl");
        let loaded = crate::journal::read(&path).unwrap();
        let (mut s, mut f) = (State::default(), Fold::default());
        agree(&s, &f, "empty");
        for e in &loaded.entries {
            replay_entry(&mut s, e);
            f.apply(e);
            agree(&s, &f, &format!("{}:{}", path.display(), e.seq));
            phases.extend(f.devices.values().map(|d| d.phase));
        }
        // Applying events one at a time is the fold of the whole journal.
        assert_eq!(f, Fold::of(&loaded.entries));
    }
    // The golden runs walk the phases a real run goes through.
    use crate::journal::fold::Phase::*;
    for p in [
        Discovered,
        Baselined,
        Excluded,
        Eligible,
        Allocated,
        Intended,
        Enqueued,
        FollowingUp,
        Ended,
    ] {
        assert!(
            phases.contains(&p),
            "no golden journal reaches {p:?}: {phases:?}"
        );
    }
}
