//! One fold of the journal: run facts and per-device facts built by applying events one at a
//! time ([`Fold::apply`]), with an explicit per-device [`Phase`].
//!
//! Pure: no I/O, no clock. The runner's resume state, the progress view and the stop rule can
//! all be answered from it instead of each walking the journal its own way (issue 12); a
//! differential test (`trial::runner`'s tests) shows it agrees with the runner's own replay on
//! every prefix of every golden journal.
//!
//! Two views come out of the one pass: the latest state of each device, with its phase
//! ([`DeviceFacts`], what the runner decides with), and the device's history ([`Record`] →
//! [`RunFacts`]/[`Facts`], what the verdicts and the reports read).

mod answer_facts;
pub mod baseline_facts;
mod ddm_facts;
pub mod probe_record;
mod record;

pub use answer_facts::{
    Answer, AvailFacts, Decoded, OsItem, RareFacts, ReportFacts, Strings, decode_answer,
    decode_report, is_final_status,
};
pub use ddm_facts::{DdmDose, DdmReport, seconds_between};
pub use record::{
    Attach, BuildSeen, Facts, Intent, Noted, Record, RunFacts, run_facts, target_builds,
    update_results_of,
};

use super::event::{Entry, Event};
use super::vocab::{DoseKind, FollowUpEndReason};
use std::collections::{BTreeMap, BTreeSet};

/// Where a device stands in the trial, as the journal tells it.
///
/// ```text
/// Discovered → Baselined → Excluded
///                        ↘ Eligible → Allocated → Intended → Enqueued → FollowingUp → Ended
///                                                          ↘ Uncertain | Failed | Withheld
/// ```
/// A second step (`follow_up_step`) goes round `Intended → …` again; `Ended` is final (the
/// runner ends a device's follow-up once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Found on a usbmuxd host.
    Discovered,
    /// Its starting state is on record.
    Baselined,
    /// Assessed and not eligible: never dosed.
    Excluded,
    /// Assessed and eligible, not yet allocated.
    Eligible,
    /// Given an arm.
    Allocated,
    /// A dose intent is durable; whether the MDM took the command is not known yet.
    Intended,
    /// The MDM queued the dose.
    Enqueued,
    /// The enqueue result of an intent is unknown (crash in between): never re-sent.
    Uncertain,
    /// The MDM refused the dose: it was never queued.
    Failed,
    /// The check before the dose found the device already dosed by another run.
    Withheld,
    /// Follow-up commands or re-probes have started after a dose.
    FollowingUp,
    /// Follow-up ended (its `until` condition, its time limit, or no dose reached the MDM).
    Ended,
}

/// The baseline facts the runner decides with, read once from `BaselineRecorded.probe`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProbeFacts {
    pub device_name: Option<String>,
    pub product_version: Option<String>,
    pub build_version: Option<String>,
    pub product_type: Option<String>,
    pub passcode: Option<bool>,
    /// The device clock at the probe (lockdown `TimeIntervalSince1970`, in milliseconds) and
    /// its time zone (`TimeZoneOffsetFromUTC`, seconds east of UTC): a DDM deadline given as
    /// an offset from the dose is device-local time.
    pub device_time_ms: Option<i64>,
    pub utc_offset_s: Option<i64>,
    /// The host's clock when the device clock was read (milliseconds since 1970).
    pub host_time_ms: Option<i64>,
}

impl ProbeFacts {
    /// The fields of a probe record (`probe::DeviceProbe` as JSON: `baseline.<field>.value`).
    pub fn of(probe: &serde_json::Value) -> ProbeFacts {
        let b = &probe["baseline"];
        let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
        ProbeFacts {
            device_name: text(&b["device_name"]["value"]),
            product_version: text(&b["product_version"]["value"]),
            build_version: text(&b["build_version"]["value"]),
            product_type: text(&b["product_type"]["value"]),
            passcode: b["passcode"]["password_protected"]["value"].as_bool(),
            device_time_ms: probe["device_time"]
                .as_f64()
                .filter(|t| t.is_finite())
                .map(|t| (t * 1000.0) as i64),
            utc_offset_s: probe["utc_offset"].as_f64().map(|o| o as i64),
            host_time_ms: probe["host_time"]
                .as_f64()
                .filter(|t| t.is_finite())
                .map(|t| (t * 1000.0) as i64),
        }
    }
}

/// One dose step of a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Dose {
    pub command_uuid: String,
    /// A DDM declaration (its `command_uuid` is the declaration's identifier), not a command.
    pub declaration: bool,
    /// What the MDM API said: `Some(true)` queued, `Some(false)` refused, `None` not known.
    pub enqueued: Option<bool>,
}

/// A dose intent as journaled: what the check before a dose compares (its store, its time) and
/// what a resumed run re-sends byte for byte when the harness died between the intent and the
/// MDM's answer (`trial::runner::resume`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentFacts {
    pub step: u32,
    /// The MDM store the intent was made against (`None` when not recorded).
    pub store: Option<crate::mdm::records::StoreIdentity>,
    /// The intent's journal time.
    pub at: String,
    pub kind: DoseKind,
    pub install_action: Option<crate::mdm::command::InstallAction>,
    pub starting_build: String,
    /// The exact command plist or declaration JSON, base64.
    pub command_b64: String,
}

/// A USB re-probe during follow-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reprobe {
    pub attached: bool,
    pub product_version: Option<String>,
    pub build_version: Option<String>,
    pub network: Option<baseline_facts::Network>,
}

/// What the journal says so far of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceFacts {
    pub phase: Phase,
    pub host: String,
    pub device_id: u32,
    pub probe: Option<ProbeFacts>,
    /// Journal time of the (last) baseline: when its device clock was read.
    pub baseline_at: Option<String>,
    pub eligible: Option<bool>,
    /// The update the device would get (`EligibilityAssessed.target`).
    pub target: serde_json::Value,
    pub arm: Option<String>,
    pub doses: BTreeMap<u32, Dose>,
    /// CommandUUID of each intent → the intent as journaled.
    pub intents: BTreeMap<String, IntentFacts>,
    /// Dose CommandUUIDs whose enqueue result is unknown.
    pub uncertain: BTreeSet<String>,
    /// Steps withheld by the check before the dose.
    pub withheld: BTreeSet<u32>,
    /// The follow-up command sent and not yet answered (a `NotNow` is no answer).
    pub outstanding: Option<String>,
    /// Every answer taken in, as `CommandUUID|Status|received_at`.
    pub results: BTreeSet<String>,
    /// An OSUpdateStatus answer said the target update is downloaded.
    pub downloaded: bool,
    /// The last `Status` of the target update in an OSUpdateStatus answer.
    pub last_status: Option<String>,
    pub last_reprobe: Option<Reprobe>,
    /// The network keys of the last DeviceInformation answer (the baseline's): a re-probe's
    /// network state is derived with them.
    pub last_device_information: Option<baseline_facts::LastDeviceInformation>,
    pub end: Option<FollowUpEndReason>,
    /// Journal time of the first dose the MDM queued: follow-up's clock starts there.
    pub first_dose_at: Option<String>,
    /// The id of the last DDM status report journaled (the next poll asks for later ones).
    pub ddm_report_after: Option<String>,
    /// What the DDM status reports said so far (the `softwareupdate.*` items, folded: a report
    /// carries only the items that changed, DDM brief §3). Kept here only to set `downloaded`;
    /// the reports read the raw reports through `Facts`.
    ddm_status: crate::mdm::ddm::SoftwareUpdateView,
}

impl DeviceFacts {
    fn new() -> DeviceFacts {
        DeviceFacts {
            phase: Phase::Discovered,
            host: String::new(),
            device_id: 0,
            probe: None,
            baseline_at: None,
            eligible: None,
            target: serde_json::Value::Null,
            arm: None,
            doses: BTreeMap::new(),
            intents: BTreeMap::new(),
            uncertain: BTreeSet::new(),
            withheld: BTreeSet::new(),
            outstanding: None,
            results: BTreeSet::new(),
            downloaded: false,
            last_status: None,
            last_reprobe: None,
            last_device_information: None,
            end: None,
            first_dose_at: None,
            ddm_report_after: None,
            ddm_status: Default::default(),
        }
    }

    /// Has follow-up of this device ended?
    pub fn ended(&self) -> bool {
        self.end.is_some()
    }

    /// Move to `to`, except out of `Ended`.
    fn enter(&mut self, to: Phase) {
        if self.phase != Phase::Ended {
            self.phase = to;
        }
    }

    /// Take in an OSUpdateStatus answer: the target update's status and whether it is
    /// downloaded (an item for another update is not this device's dose).
    fn take_status(&mut self, raw_b64: &str) {
        let Ok(rep) = super::answer::report(raw_b64) else {
            return;
        };
        let Some(items) = crate::mdm::report::os_update_status(&rep) else {
            return;
        };
        let target_key = self.target["product_key"].as_str().map(str::to_string);
        for it in items {
            if target_key.is_some() && it.product_key != target_key {
                continue;
            }
            if it.is_downloaded.value == Some(true) {
                self.downloaded = true;
            }
            self.last_status = it.status.clone();
        }
    }
}

/// Observation kind of a report the MDM kept but could not attribute (malformed, wrong
/// CommandUUID); its key is `report N: note` (the MDM numbers them), its value the raw bytes in
/// base64.
pub const REJECTED_REPORT: &str = "mdm_rejected_report";

/// The number in a rejected report observation's key.
pub fn rejected_report_id(key: &str) -> Option<i64> {
    key.strip_prefix("report ")?.split(':').next()?.parse().ok()
}

/// The run's facts, folded from its journal one event at a time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fold {
    pub started: bool,
    pub trial_id: Option<String>,
    pub protocol_sha256: Option<String>,
    /// `Some(true)` consent given, `Some(false)` refused.
    pub consented: Option<bool>,
    pub devices: BTreeMap<String, DeviceFacts>,
    /// Devices in the order they were discovered.
    pub order: Vec<String>,
    /// `(rule, message)` of each stop rule that fired.
    pub stop_rules: Vec<(String, String)>,
    pub interrupted: bool,
    pub finished: bool,
    /// The highest number of a rejected report already journaled.
    pub rejected_max: i64,
    /// Every device's history, for the verdicts and the reports.
    pub record: Record,
}

impl Fold {
    /// The fold of a whole journal.
    pub fn of<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Fold {
        let mut f = Fold::default();
        for e in entries {
            f.apply(e);
        }
        f
    }

    fn device(&mut self, udid: &str) -> &mut DeviceFacts {
        self.devices
            .entry(udid.to_string())
            .or_insert_with(DeviceFacts::new)
    }

    /// Take in one event.
    pub fn apply(&mut self, e: &Entry) {
        use Event::*;
        self.record.apply(e);
        match &e.event {
            RunStarted {
                trial_id,
                protocol_sha256,
                ..
            } => {
                // A run has one id: the first `run_started` names it.
                self.started = true;
                self.trial_id.get_or_insert_with(|| trial_id.clone());
                self.protocol_sha256
                    .get_or_insert_with(|| protocol_sha256.clone());
            }
            RunResumed { .. } => self.interrupted = false,
            ConsentGiven { .. } => self.consented = Some(true),
            ConsentRefused { .. } => self.consented = Some(false),
            Observation { kind, key, .. } => {
                if kind == REJECTED_REPORT
                    && let Some(id) = rejected_report_id(key)
                {
                    self.rejected_max = self.rejected_max.max(id);
                }
            }
            StopRuleTriggered { rule, message } => {
                self.stop_rules.push((rule.clone(), message.clone()))
            }
            RunInterrupted => self.interrupted = true,
            RunFinished => self.finished = true,
            UpdatesOffered { .. } | RunLockTakenOver { .. } => {}
            DeviceDiscovered { udid, .. } => {
                if !self.devices.contains_key(udid) {
                    self.order.push(udid.clone());
                }
                self.device(udid).apply(e);
            }
            other => {
                if let Some(udid) = other.udid() {
                    self.device(udid).apply(e);
                }
            }
        }
    }
}

impl DeviceFacts {
    /// Take in one event about this device.
    fn apply(&mut self, e: &Entry) {
        use Event::*;
        match &e.event {
            DoseIntent { .. }
            | DoseReconciled { .. }
            | DoseWithheld { .. }
            | DoseEnqueued { .. }
            | DoseFailed { .. }
            | DoseUncertain { .. } => self.apply_dose(e),
            CommandSent { .. }
            | MdmResult { .. }
            | DeviceReprobed { .. }
            | FollowUpEnded { .. } => self.apply_follow_up(&e.event),
            DdmStatusReport {
                report_id, raw_b64, ..
            } => {
                self.ddm_report_after = Some(report_id.clone());
                if let Some(r) = super::answer::bytes(raw_b64)
                    .ok()
                    .and_then(|b| crate::mdm::ddm::StatusReport::parse(&b).ok())
                {
                    self.ddm_status.fold(&r);
                    // A DDM update is downloaded once the device prepared it (install-state,
                    // DDM brief §3): what `until: downloaded` waits for.
                    use crate::mdm::ddm::InstallState;
                    if matches!(
                        self.ddm_status.install_state,
                        Some(InstallState::Prepared | InstallState::Installing)
                    ) {
                        self.downloaded = true;
                    }
                }
                self.enter(Phase::FollowingUp);
            }
            DeviceDiscovered {
                host, device_id, ..
            } => {
                self.host = host.clone();
                self.device_id = *device_id;
            }
            BaselineRecorded { probe, .. } => {
                self.probe = Some(ProbeFacts::of(probe));
                self.baseline_at = Some(e.at.clone());
                if let Some(di) = baseline_facts::LastDeviceInformation::of(probe, &e.at) {
                    self.last_device_information = Some(di);
                }
                if self.phase == Phase::Discovered {
                    self.phase = Phase::Baselined;
                }
            }
            EligibilityAssessed {
                eligible, target, ..
            } => {
                self.eligible = Some(*eligible);
                self.target = target.clone();
                self.enter(if *eligible {
                    Phase::Eligible
                } else {
                    Phase::Excluded
                });
            }
            Allocated { arm, .. } => {
                self.arm = Some(arm.clone());
                self.enter(Phase::Allocated);
            }
            _ => {}
        }
    }

    /// A dose step's intent, its outcome at the MDM, or the check that withheld it.
    fn apply_dose(&mut self, e: &Entry) {
        use Event::*;
        match &e.event {
            DoseIntent {
                step,
                command_uuid,
                mdm_store,
                request_type,
                install_action,
                starting_build,
                command_b64,
                ..
            } => {
                let kind = DoseKind::of_request_type(request_type);
                self.doses.insert(
                    *step,
                    Dose {
                        command_uuid: command_uuid.clone(),
                        declaration: kind.is_declaration(),
                        enqueued: None,
                    },
                );
                let made = IntentFacts {
                    step: *step,
                    store: mdm_store.clone(),
                    at: e.at.clone(),
                    kind,
                    install_action: *install_action,
                    starting_build: starting_build.clone(),
                    command_b64: command_b64.clone(),
                };
                self.intents.insert(command_uuid.clone(), made);
                self.enter(Phase::Intended);
            }
            DoseReconciled {
                step, command_uuid, ..
            } => {
                self.doses.entry(*step).or_insert_with(|| Dose {
                    command_uuid: command_uuid.clone(),
                    declaration: false,
                    enqueued: None,
                });
                self.uncertain.insert(command_uuid.clone());
                self.enter(Phase::Uncertain);
            }
            DoseWithheld { step, .. } => {
                self.withheld.insert(*step);
                self.enter(Phase::Withheld);
            }
            DoseEnqueued { command_uuid, .. } => {
                set_enqueued(self, command_uuid, true);
                if self.first_dose_at.is_none() {
                    self.first_dose_at = Some(e.at.clone());
                }
                self.enter(Phase::Enqueued);
            }
            DoseFailed { command_uuid, .. } => {
                set_enqueued(self, command_uuid, false);
                self.enter(Phase::Failed);
            }
            DoseUncertain { command_uuid, .. } => {
                self.uncertain.insert(command_uuid.clone());
                self.enter(Phase::Uncertain);
            }
            _ => {}
        }
    }

    /// Follow-up: commands sent, answers, re-probes, its end.
    fn apply_follow_up(&mut self, event: &Event) {
        use Event::*;
        match event {
            CommandSent { command_uuid, .. } => {
                self.outstanding = Some(command_uuid.clone());
                self.enter(Phase::FollowingUp);
            }
            MdmResult {
                command_uuid,
                request_type,
                status,
                raw_b64,
                received_at,
                ..
            } => {
                self.results
                    .insert(format!("{command_uuid}|{status}|{received_at}"));
                if self.outstanding.as_deref() == Some(command_uuid.as_str()) && status != "NotNow"
                {
                    self.outstanding = None;
                }
                if request_type.as_deref() == Some("OSUpdateStatus") {
                    self.take_status(raw_b64);
                }
            }
            DeviceReprobed {
                attached,
                product_version,
                build_version,
                network,
                ..
            } => {
                self.last_reprobe = Some(Reprobe {
                    attached: *attached,
                    product_version: product_version.clone(),
                    build_version: build_version.clone(),
                    network: *network,
                });
                if self.phase == Phase::Enqueued {
                    self.phase = Phase::FollowingUp;
                }
            }
            FollowUpEnded { reason, .. } => {
                self.end = Some(reason.clone());
                self.phase = Phase::Ended;
            }
            _ => {}
        }
    }
}

fn set_enqueued(d: &mut DeviceFacts, command_uuid: &str, to: bool) {
    for dose in d.doses.values_mut() {
        if dose.command_uuid == command_uuid {
            dose.enqueued = Some(to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::ConsentBy;
    use crate::mdm::command::InstallAction;

    fn entry(seq: u64, event: Event) -> Entry {
        Entry {
            seq,
            at: format!("2026-01-01T00:00:{seq:02}.000Z"),
            event,
        }
    }

    fn journal(events: Vec<Event>) -> Vec<Entry> {
        events
            .into_iter()
            .enumerate()
            .map(|(i, e)| entry(i as u64 + 1, e))
            .collect()
    }

    fn intent(udid: &str, step: u32, uuid: &str) -> Event {
        Event::DoseIntent {
            udid: udid.into(),
            arm: "a".into(),
            step,
            command_uuid: uuid.into(),
            request_type: "ScheduleOSUpdate".into(),
            install_action: Some(InstallAction::Default),
            starting_build: "19H12".into(),
            command_b64: String::new(),
            mdm_store: None,
        }
    }

    fn discovered(udid: &str) -> Event {
        Event::DeviceDiscovered {
            udid: udid.into(),
            host: "h".into(),
            device_id: 7,
        }
    }

    fn assessed(udid: &str, eligible: bool) -> Event {
        Event::EligibilityAssessed {
            udid: udid.into(),
            eligible,
            reasons: vec![],
            target: serde_json::json!({"product_key": "K"}),
        }
    }

    /// The phase of `A` after each event.
    fn phases(events: Vec<Event>) -> Vec<Phase> {
        let mut f = Fold::default();
        journal(events)
            .iter()
            .map(|e| {
                f.apply(e);
                f.devices["A"].phase
            })
            .collect()
    }

    #[test]
    fn a_dosed_device_walks_every_phase_in_order() {
        use Phase::*;
        let got = phases(vec![
            discovered("A"),
            Event::BaselineRecorded {
                udid: "A".into(),
                probe: serde_json::json!({"baseline": {"build_version": {"value": "19H12"}}}),
            },
            assessed("A", true),
            Event::Allocated {
                udid: "A".into(),
                arm: "a".into(),
                seed: 1,
            },
            intent("A", 1, "D1"),
            Event::DoseEnqueued {
                udid: "A".into(),
                command_uuid: "D1".into(),
                pushed: Some(true),
                push_error: None,
            },
            Event::CommandSent {
                udid: "A".into(),
                command_uuid: "S1".into(),
                request_type: "OSUpdateStatus".into(),
            },
            Event::FollowUpEnded {
                udid: "A".into(),
                reason: FollowUpEndReason::TimeLimit,
            },
            // Nothing moves a device out of Ended.
            intent("A", 2, "D2"),
        ]);
        assert_eq!(
            got,
            [
                Discovered,
                Baselined,
                Eligible,
                Allocated,
                Intended,
                Enqueued,
                FollowingUp,
                Ended,
                Ended
            ]
        );
        let f = Fold::of(&journal(vec![
            discovered("A"),
            intent("A", 1, "D1"),
            Event::DoseEnqueued {
                udid: "A".into(),
                command_uuid: "D1".into(),
                pushed: Some(true),
                push_error: None,
            },
        ]));
        let d = &f.devices["A"];
        assert_eq!(d.doses[&1].enqueued, Some(true));
        assert_eq!(d.first_dose_at.as_deref(), Some("2026-01-01T00:00:03.000Z"));
        assert_eq!(f.order, ["A"]);
    }

    #[test]
    fn excluded_failed_uncertain_and_withheld_are_their_own_phases() {
        use Phase::*;
        assert_eq!(
            phases(vec![discovered("A"), assessed("A", false)]),
            [Discovered, Excluded]
        );
        assert_eq!(
            phases(vec![
                discovered("A"),
                intent("A", 1, "D1"),
                Event::DoseFailed {
                    udid: "A".into(),
                    command_uuid: "D1".into(),
                    error: "refused".into(),
                },
            ]),
            [Discovered, Intended, Failed]
        );
        let f = Fold::of(&journal(vec![
            discovered("A"),
            Event::DoseReconciled {
                udid: "A".into(),
                step: 1,
                command_uuid: "D1".into(),
                starting_build: "19H12".into(),
                reason: "ledger".into(),
            },
            Event::DoseWithheld {
                udid: "A".into(),
                step: 2,
                rule: "already_dosed".into(),
                reason: "r".into(),
            },
        ]));
        let d = &f.devices["A"];
        assert_eq!(d.phase, Withheld);
        assert!(d.uncertain.contains("D1"));
        assert_eq!(d.doses[&1].enqueued, None);
        assert!(d.withheld.contains(&2));
    }

    #[test]
    fn run_facts_and_answers_are_taken_in() {
        let f = Fold::of(&journal(vec![
            Event::RunStarted {
                schema: 1,
                trial_id: "t".into(),
                protocol_sha256: "s".into(),
                lab_version: "0".into(),
                time_scale: None,
                simulated: false,
            },
            Event::ConsentGiven {
                by: ConsentBy::Flag,
                udids: vec!["A".into()],
            },
            discovered("A"),
            Event::CommandSent {
                udid: "A".into(),
                command_uuid: "S1".into(),
                request_type: "OSUpdateStatus".into(),
            },
            Event::MdmResult {
                udid: "A".into(),
                command_uuid: "S1".into(),
                request_type: Some("OSUpdateStatus".into()),
                status: "NotNow".into(),
                raw_b64: "garbage".into(),
                received_at: "r1".into(),
            },
            Event::Observation {
                udid: None,
                source: crate::journal::ObservationSource::Mdm,
                kind: REJECTED_REPORT.into(),
                key: "report 12: bad".into(),
                value: String::new(),
            },
            Event::StopRuleTriggered {
                rule: "severe_adverse_events".into(),
                message: "m".into(),
            },
            Event::RunInterrupted,
        ]));
        assert!(f.started && f.interrupted && !f.finished);
        assert_eq!(f.trial_id.as_deref(), Some("t"));
        assert_eq!(f.consented, Some(true));
        assert_eq!(f.rejected_max, 12);
        assert_eq!(f.stop_rules.len(), 1);
        let d = &f.devices["A"];
        // A NotNow is no answer: the command is still outstanding.
        assert_eq!(d.outstanding.as_deref(), Some("S1"));
        assert!(d.results.contains("S1|NotNow|r1"));
        assert_eq!(d.last_status, None);
    }
}
