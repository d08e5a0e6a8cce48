//! The decision taken before every dose, fresh or resumed: may this device be sent this step?
//!
//! Pure: the runner gathers the facts under the lab-wide dose lock (`Ledger::dose_lock`) — the
//! device's ledger records, which CommandUUIDs this run's journal holds, the ScheduleOSUpdates
//! the MDM's own records hold — and acts on the answer before releasing it. The rules:
//!
//! 1. An intent of *this* run in the ledger that the journal does not hold (the journal lost
//!    its last lines, cut inside a `dose_intent`) makes the device **dose uncertain**: the
//!    command may have gone out; a fresh dose would be a new CommandUUID, a possible second
//!    dose. It is never sent again.
//! 2. A ScheduleOSUpdate for the device's current build by **any other run** — in the ledger
//!    (an intent not proven failed) or in the MDM's records (whoever sent it) — excludes it as
//!    `already_dosed`, with the evidence: run, CommandUUID, time. A command in the MDM's records
//!    counts at the current build unless the ledger places it at another build, or the device's
//!    last report to that MDM before it was queued shows another build (it has updated since).
//! 3. Otherwise: dose.
//!
//! And for an intent whose enqueue result is unknown: "absent from the MDM's records" proves
//! "never queued" only when those records cover the moment of the intent ([`records_cover`]).

use super::ledger::{LedgerKind, LedgerRecord};
use crate::mdm::backend::{MdmDose, StoreIdentity};
use std::collections::HashSet;

/// One piece of evidence that a device was dosed at its current build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The trial and run that sent it, when the ledger knows; `None` for a command only the
    /// MDM's records hold.
    pub trial_id: Option<String>,
    pub run_dir: Option<String>,
    pub command_uuid: String,
    /// When it was decided (ledger) or queued (MDM).
    pub at: String,
    pub step: Option<u32>,
    pub protocol_sha256: Option<String>,
}

impl Evidence {
    /// One phrase an operator can check: run, CommandUUID, time.
    pub fn describe(&self) -> String {
        match (&self.trial_id, &self.run_dir) {
            (Some(t), Some(r)) => format!(
                "trial {t} (run {r}, CommandUUID {}, {})",
                self.command_uuid, self.at
            ),
            _ => format!(
                "the MDM's records (CommandUUID {}, queued {}, by a run this ledger does not know)",
                self.command_uuid, self.at
            ),
        }
    }

    /// As a ledger record, the form eligibility's `already_dosed` rule cites.
    pub fn as_record(&self, udid: &str, build: &str) -> LedgerRecord {
        LedgerRecord {
            udid: udid.to_string(),
            starting_build: build.to_string(),
            kind: LedgerKind::Enqueued,
            command_uuid: self.command_uuid.clone(),
            step: self.step.unwrap_or(0),
            trial_id: self
                .trial_id
                .clone()
                .unwrap_or_else(|| "(not in the lab-wide ledger)".into()),
            protocol_sha256: self.protocol_sha256.clone().unwrap_or_default(),
            run_dir: self
                .run_dir
                .clone()
                .unwrap_or_else(|| "(the MDM's records)".into()),
            at: self.at.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Dose,
    /// Another run dosed this device at its current build.
    AlreadyDosed(Vec<Evidence>),
    /// This run's intent is in the ledger but not in the journal: reconcile, never re-send.
    Uncertain {
        command_uuid: String,
        step: u32,
        at: String,
    },
}

/// What the runner knows about one device when deciding.
pub struct Facts<'a> {
    pub udid: &'a str,
    /// The device's build now (its baseline).
    pub build: &'a str,
    /// This run's folder, as the ledger records it.
    pub run_dir: &'a str,
    /// Every dose CommandUUID this run's journal holds for the device.
    pub journal_uuids: &'a HashSet<String>,
    /// The whole ledger (records of every device).
    pub ledger: &'a [LedgerRecord],
    /// The MDM's ScheduleOSUpdates for the device; `None`: the MDM keeps no such records.
    pub mdm: Option<&'a [MdmDose]>,
}

/// May this device be dosed? See the module comment for the rules.
pub fn decide(f: &Facts) -> Decision {
    let mine = |r: &LedgerRecord| r.run_dir == f.run_dir;
    let device: Vec<&LedgerRecord> = f.ledger.iter().filter(|r| r.udid == f.udid).collect();
    // 1. This run's intent, lost from the journal.
    if let Some(r) = device.iter().find(|r| {
        mine(r)
            && r.kind == LedgerKind::Intent
            && r.starting_build == f.build
            && !f.journal_uuids.contains(&r.command_uuid)
    }) {
        return Decision::Uncertain {
            command_uuid: r.command_uuid.clone(),
            step: r.step,
            at: r.at.clone(),
        };
    }
    // 2. Another run's dose at this build: the ledger …
    let failed: HashSet<&str> = device
        .iter()
        .filter(|r| r.kind == LedgerKind::Failed)
        .map(|r| r.command_uuid.as_str())
        .collect();
    let from_ledger = |r: &LedgerRecord| Evidence {
        trial_id: Some(r.trial_id.clone()),
        run_dir: Some(r.run_dir.clone()),
        command_uuid: r.command_uuid.clone(),
        at: r.at.clone(),
        step: Some(r.step),
        protocol_sha256: Some(r.protocol_sha256.clone()),
    };
    let mut evidence: Vec<Evidence> = device
        .iter()
        .filter(|r| {
            !mine(r)
                && r.kind == LedgerKind::Intent
                && r.starting_build == f.build
                && !failed.contains(r.command_uuid.as_str())
        })
        .map(|r| from_ledger(r))
        .collect();
    // … and the MDM's records (which win over a ledger that says "failed").
    for d in f.mdm.unwrap_or(&[]) {
        if f.journal_uuids.contains(&d.command_uuid)
            || evidence.iter().any(|e| e.command_uuid == d.command_uuid)
        {
            continue;
        }
        let known = device
            .iter()
            .find(|r| r.command_uuid == d.command_uuid && r.kind == LedgerKind::Intent);
        match known {
            Some(r) if r.starting_build != f.build => {}
            // This run's own intent whose journal line is gone was rule 1 (same build).
            Some(r) if mine(r) => {}
            Some(r) => evidence.push(from_ledger(r)),
            None => {
                if d.build_before.as_deref().is_none_or(|b| b == f.build) {
                    evidence.push(Evidence {
                        trial_id: None,
                        run_dir: None,
                        command_uuid: d.command_uuid.clone(),
                        at: d.queued_at.clone(),
                        step: None,
                        protocol_sha256: None,
                    });
                }
            }
        }
    }
    if evidence.is_empty() {
        Decision::Dose
    } else {
        Decision::AlreadyDosed(evidence)
    }
}

/// Do the MDM's records cover the moment of an intent, so that "absent from them" proves "never
/// queued"? Only when they are the records of the same store the intent was made against, and
/// that store existed at the intent. `Err` says why not (the device is then dose uncertain).
pub fn records_cover(
    intent_store: Option<&StoreIdentity>,
    intent_at: &str,
    now: Option<&StoreIdentity>,
) -> Result<(), String> {
    let Some(then) = intent_store else {
        return Err(
            "the intent does not record which MDM store it was made against (older journal, or the MDM exposes no store identity)"
                .into(),
        );
    };
    let Some(now) = now else {
        return Err("the MDM does not say which store answers now".into());
    };
    if then.store_id != now.store_id {
        return Err(format!(
            "the MDM's store changed since the intent (store {} then, {} created {} now): the MDM lost or replaced its records",
            then.store_id, now.store_id, now.created_at
        ));
    }
    let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
    match (t(intent_at), t(&now.created_at)) {
        (Some(i), Some(c)) if i >= c => Ok(()),
        (Some(_), Some(_)) => Err(format!(
            "the intent ({intent_at}) is older than the MDM's store ({})",
            now.created_at
        )),
        _ => Err(format!(
            "the times cannot be compared (intent {intent_at}, store created {})",
            now.created_at
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "results/t-1";

    fn rec(run: &str, uuid: &str, kind: LedgerKind, build: &str) -> LedgerRecord {
        LedgerRecord {
            udid: "D1".into(),
            starting_build: build.into(),
            kind,
            command_uuid: uuid.into(),
            step: 1,
            trial_id: "t".into(),
            protocol_sha256: "s".into(),
            run_dir: run.into(),
            at: "2026-12-01T10:00:00+00:00".into(),
        }
    }

    fn dose(uuid: &str, build_before: Option<&str>) -> MdmDose {
        MdmDose {
            command_uuid: uuid.into(),
            queued_at: "2026-12-01T10:00:01.000000Z".into(),
            build_before: build_before.map(str::to_string),
        }
    }

    fn decide_with(journal: &[&str], ledger: &[LedgerRecord], mdm: Option<&[MdmDose]>) -> Decision {
        let journal_uuids: HashSet<String> = journal.iter().map(|s| s.to_string()).collect();
        decide(&Facts {
            udid: "D1",
            build: "21F90",
            run_dir: RUN,
            journal_uuids: &journal_uuids,
            ledger,
            mdm,
        })
    }

    #[test]
    fn a_clean_device_is_dosed() {
        assert_eq!(decide_with(&[], &[], Some(&[])), Decision::Dose);
        assert_eq!(decide_with(&[], &[], None), Decision::Dose);
    }

    #[test]
    fn another_runs_intent_at_this_build_excludes_with_its_evidence() {
        let ledger = [rec("other/t-0", "A", LedgerKind::Intent, "21F90")];
        let Decision::AlreadyDosed(ev) = decide_with(&[], &ledger, None) else {
            panic!()
        };
        assert_eq!(ev.len(), 1);
        let d = ev[0].describe();
        assert!(
            d.contains("other/t-0") && d.contains("CommandUUID A") && d.contains("10:00:00"),
            "{d}"
        );
    }

    #[test]
    fn a_dose_at_an_older_build_or_proven_failed_does_not_exclude() {
        let ledger = [
            rec("other/t-0", "A", LedgerKind::Intent, "20A100"),
            rec("other/t-0", "B", LedgerKind::Intent, "21F90"),
            rec("other/t-0", "B", LedgerKind::Failed, "21F90"),
        ];
        assert_eq!(decide_with(&[], &ledger, Some(&[])), Decision::Dose);
        // The MDM holds A (placed at 20A100 by the ledger): still not this build.
        assert_eq!(
            decide_with(&[], &ledger, Some(&[dose("A", None)])),
            Decision::Dose
        );
        // But the MDM holding B overrides the ledger's "failed".
        assert!(matches!(
            decide_with(&[], &ledger, Some(&[dose("B", None)])),
            Decision::AlreadyDosed(_)
        ));
    }

    #[test]
    fn a_command_only_the_mdm_knows_counts_unless_it_was_at_another_build() {
        let Decision::AlreadyDosed(ev) = decide_with(&[], &[], Some(&[dose("X", Some("21F90"))]))
        else {
            panic!()
        };
        assert!(ev[0].describe().contains("the MDM's records"), "{ev:?}");
        assert!(matches!(
            decide_with(&[], &[], Some(&[dose("X", None)])),
            Decision::AlreadyDosed(_)
        ));
        assert_eq!(
            decide_with(&[], &[], Some(&[dose("X", Some("20A100"))])),
            Decision::Dose
        );
    }

    #[test]
    fn this_runs_own_doses_in_the_journal_are_not_evidence() {
        let ledger = [rec(RUN, "M", LedgerKind::Intent, "21F90")];
        assert_eq!(
            decide_with(&["M"], &ledger, Some(&[dose("M", Some("21F90"))])),
            Decision::Dose
        );
    }

    #[test]
    fn this_runs_intent_lost_from_the_journal_is_uncertain_never_a_fresh_dose() {
        let ledger = [rec(RUN, "M", LedgerKind::Intent, "21F90")];
        for mdm in [None, Some(&[][..]), Some(&[dose("M", None)][..])] {
            assert_eq!(
                decide_with(&[], &ledger, mdm),
                Decision::Uncertain {
                    command_uuid: "M".into(),
                    step: 1,
                    at: "2026-12-01T10:00:00+00:00".into()
                }
            );
        }
    }

    #[test]
    fn absence_from_the_records_counts_only_within_the_same_store_since_its_creation() {
        let s = StoreIdentity {
            store_id: "s1".into(),
            created_at: "2026-12-01T09:00:00.000000Z".into(),
        };
        let later = "2026-12-01T10:00:00+00:00";
        assert_eq!(records_cover(Some(&s), later, Some(&s)), Ok(()));
        let other = StoreIdentity {
            store_id: "s2".into(),
            ..s.clone()
        };
        let e = records_cover(Some(&s), later, Some(&other)).unwrap_err();
        assert!(e.contains("store changed"), "{e}");
        let e = records_cover(Some(&s), "2026-12-01T08:00:00+00:00", Some(&s)).unwrap_err();
        assert!(e.contains("older than the MDM's store"), "{e}");
        assert!(records_cover(None, later, Some(&s)).is_err());
        assert!(records_cover(Some(&s), later, None).is_err());
        assert!(records_cover(Some(&s), "garbage", Some(&s)).is_err());
    }
}
