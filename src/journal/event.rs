//! The event vocabulary of the run journal: what the runner writes, and what the terminal
//! progress view, every report and the resume logic read. Closed vocabularies are closed enums
//! ([`super::vocab`]) serialised exactly as the strings earlier journals hold.

use super::vocab::{ConsentBy, FollowUpEndReason, ObservationSource};
use crate::mdm::command::InstallAction;
use serde::{Deserialize, Serialize};

/// Bumped whenever an event changes shape incompatibly.
pub const SCHEMA_VERSION: u32 = 1;

/// A reason a device is excluded, with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// Stable rule id (`supervised`, `min_ios`, `known_bad_version`, `free_disk`, …).
    pub rule: String,
    /// One sentence for the operator.
    pub message: String,
    /// The values the rule looked at (e.g. `{"free": 3.2e9, "needed": 4.1e9}`).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub values: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// First event of a run.
    RunStarted {
        schema: u32,
        trial_id: String,
        protocol_sha256: String,
        lab_version: String,
        /// Simulated seconds per real second of the lab (a simulated lab's speed; absent in
        /// journals written before it was recorded, read as 1): the verdicts read a device's
        /// clock with it between two readings.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time_scale: Option<f64>,
        /// The devices are the simulated lab `lab run` started in-process (issue 15: a
        /// rehearsal's reports and drafts say so and cannot pass for evidence from iPhones).
        /// Written only when true; absent in older journals and on a bench.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        simulated: bool,
    },
    /// The same protocol was run again: the run goes on where it stopped.
    RunResumed {
        protocol_sha256: String,
    },
    /// A device was found on a usbmuxd host.
    DeviceDiscovered {
        udid: String,
        host: String,
        device_id: u32,
    },
    /// The starting state: the whole probe record (lockdown fields with raw values and sources,
    /// MDM fields when an MDM answered).
    BaselineRecorded {
        udid: String,
        probe: serde_json::Value,
    },
    /// What the device offers (AvailableOSUpdates answer, parsed), for eligibility and target.
    UpdatesOffered {
        udid: String,
        command_uuid: String,
        updates: serde_json::Value,
    },
    EligibilityAssessed {
        udid: String,
        eligible: bool,
        reasons: Vec<Reason>,
        /// The update this device would get: `{product_key, version, build, download_size,
        /// install_size}` (null when none could be resolved).
        #[serde(default)]
        target: serde_json::Value,
    },
    Allocated {
        udid: String,
        arm: String,
        seed: u64,
    },
    /// The operator consented to these doses (`by`: "flag" for --yes, "operator" when typed).
    ConsentGiven {
        by: ConsentBy,
        udids: Vec<String>,
    },
    ConsentRefused {
        reason: String,
    },
    /// Made durable (here and in the ledger) *before* the command goes to the MDM.
    DoseIntent {
        udid: String,
        arm: String,
        step: u32,
        command_uuid: String,
        /// `ScheduleOSUpdate`, or for a DDM dose the declaration's `Type`
        /// (`com.apple.configuration.softwareupdate.enforcement.specific`).
        request_type: String,
        /// A ScheduleOSUpdate's InstallAction; absent for a DDM dose.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        install_action: Option<InstallAction>,
        starting_build: String,
        /// The exact command plist, base64; for a DDM dose, the exact declaration JSON (its
        /// `Identifier` is `command_uuid`).
        command_b64: String,
        /// The MDM store the intent was made against (`GET /v1/store` of `lab`'s own server;
        /// absent for an MDM without one, and in journals written before it was recorded):
        /// "absent from the MDM's records" proves "never queued" only within that store
        /// (`trial::dose_guard::records_cover`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mdm_store: Option<crate::mdm::records::StoreIdentity>,
    },
    DoseEnqueued {
        udid: String,
        command_uuid: String,
        /// What the MDM said of the push: `true` it pushed, `false` it did not; absent when it
        /// said nothing (MicroMDM's 201, KMFDDM): unknown, never recorded as pushed (issue 17).
        /// Journals written before always hold `true` or `false`, read as they were.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pushed: Option<bool>,
        push_error: Option<String>,
    },
    DoseFailed {
        udid: String,
        command_uuid: String,
        error: String,
    },
    /// An intent whose enqueue result is unknown (crash in between): never re-sent.
    DoseUncertain {
        udid: String,
        command_uuid: String,
        reason: String,
    },
    /// An intent found in the lab-wide ledger for this run that the journal does not hold (its
    /// line was lost, e.g. the journal cut inside a `dose_intent`): recorded here so the device
    /// is never sent that step again; a `dose_uncertain` follows.
    DoseReconciled {
        udid: String,
        step: u32,
        command_uuid: String,
        starting_build: String,
        reason: String,
    },
    /// A step not sent because the check before the dose (ledger, journal, MDM's records, under
    /// the lab-wide dose lock) found the device already dosed at its build by another run.
    DoseWithheld {
        udid: String,
        step: u32,
        rule: String,
        reason: String,
    },
    /// The run lock was found left by a process that is gone (its lock was free): taken over.
    RunLockTakenOver {
        previous_pid: u32,
        previous_host: String,
        previous_started_at: String,
    },
    /// A follow-up command (OSUpdateStatus, DeviceInformation, AvailableOSUpdates) was sent.
    CommandSent {
        udid: String,
        command_uuid: String,
        request_type: String,
    },
    /// A device's answer through the MDM, raw (base64 plist) and as the MDM stored it.
    MdmResult {
        udid: String,
        command_uuid: String,
        request_type: Option<String>,
        status: String,
        raw_b64: String,
        received_at: String,
    },
    /// A DDM status report of the device (issue 13), raw: the JSON bytes as the DDM server
    /// stored them, base64. `report_id` is the server's (the next poll asks for later ones).
    DdmStatusReport {
        udid: String,
        report_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        received_at: Option<String>,
        raw_b64: String,
    },
    /// A re-probe over USB during follow-up.
    DeviceReprobed {
        udid: String,
        attached: bool,
        product_version: Option<String>,
        build_version: Option<String>,
        error: Option<String>,
        /// The network state at the re-probe (issue 14), from its lockdown values and the
        /// device's last DeviceInformation answer (`baseline_facts::reprobe_network`); absent
        /// when unknown or detached, and in journals written before it existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<crate::journal::fold::baseline_facts::Network>,
        /// Where `network` came from, or why it is unknown; absent when the device was detached.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network_source: Option<String>,
    },
    /// A manual or harness observation.
    Observation {
        udid: Option<String>,
        source: ObservationSource,
        /// Free text: `lab observe` and protocol checkpoints take the operator's own kinds.
        kind: String,
        key: String,
        value: String,
    },
    /// Follow-up of a device ended (its `until` condition, its time limit, or the run stopped).
    FollowUpEnded {
        udid: String,
        reason: FollowUpEndReason,
    },
    StopRuleTriggered {
        rule: String,
        message: String,
    },
    /// Operator interrupted (Ctrl-C): the run is resumable.
    RunInterrupted,
    RunFinished,
}

impl Event {
    /// The device an event is about; `None` for run-level events.
    /// `(CommandUUID, RequestType)` of a command the harness sent: a dose intent, a follow-up
    /// command, or the AvailableOSUpdates whose answer `UpdatesOffered` records. Device replies
    /// carry no RequestType (MDM brief §0.6), so readers match answers through this.
    pub fn sent_command(&self) -> Option<(&str, &str)> {
        match self {
            Event::DoseIntent {
                command_uuid,
                request_type,
                ..
            }
            | Event::CommandSent {
                command_uuid,
                request_type,
                ..
            } => Some((command_uuid.as_str(), request_type.as_str())),
            Event::UpdatesOffered { command_uuid, .. } => {
                Some((command_uuid.as_str(), "AvailableOSUpdates"))
            }
            _ => None,
        }
    }

    pub fn udid(&self) -> Option<&str> {
        use Event::*;
        match self {
            DeviceDiscovered { udid, .. }
            | BaselineRecorded { udid, .. }
            | UpdatesOffered { udid, .. }
            | EligibilityAssessed { udid, .. }
            | Allocated { udid, .. }
            | DoseIntent { udid, .. }
            | DoseEnqueued { udid, .. }
            | DoseFailed { udid, .. }
            | DoseUncertain { udid, .. }
            | DoseReconciled { udid, .. }
            | DoseWithheld { udid, .. }
            | CommandSent { udid, .. }
            | MdmResult { udid, .. }
            | DdmStatusReport { udid, .. }
            | DeviceReprobed { udid, .. }
            | FollowUpEnded { udid, .. } => Some(udid),
            Observation { udid, .. } => udid.as_deref(),
            RunStarted { .. }
            | RunResumed { .. }
            | ConsentGiven { .. }
            | ConsentRefused { .. }
            | StopRuleTriggered { .. }
            | RunLockTakenOver { .. }
            | RunInterrupted
            | RunFinished => None,
        }
    }
}

/// CommandUUID → RequestType of every command the harness sent (device replies carry none,
/// MDM brief §0.6): dose intents, follow-up commands, and AvailableOSUpdates at baseline.
pub fn request_types(entries: &[Entry]) -> std::collections::HashMap<&str, &str> {
    entries
        .iter()
        .filter_map(|e| e.event.sent_command())
        .collect()
}

/// Entries grouped by device (run-level events go to every device's list), in journal order:
/// projections that walk the journal once per device use it to stay linear.
pub fn by_device(entries: &[Entry]) -> std::collections::HashMap<&str, Vec<&Entry>> {
    let mut run_level: Vec<&Entry> = Vec::new();
    let mut map: std::collections::HashMap<&str, Vec<&Entry>> = std::collections::HashMap::new();
    for e in entries {
        match e.event.udid() {
            Some(u) => map.entry(u).or_default().push(e),
            None => run_level.push(e),
        }
    }
    if !run_level.is_empty() {
        for list in map.values_mut() {
            list.extend(run_level.iter().copied());
            list.sort_by_key(|e| e.seq);
        }
    }
    map
}

/// One journal line: sequence number, time, event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub at: String,
    #[serde(flatten)]
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17: `pushed` is known only when the MDM said so. Earlier journals (always `true`
    /// or `false`) read and write back byte for byte; an unknown push is left out, not `false`.
    #[test]
    fn pushed_reads_old_journals_as_they_were_and_omits_an_unknown_push() {
        for line in [
            r#"{"event":"dose_enqueued","udid":"A","command_uuid":"C","pushed":true,"push_error":null}"#,
            r#"{"event":"dose_enqueued","udid":"A","command_uuid":"C","pushed":false,"push_error":"no push cert"}"#,
        ] {
            let e: Event = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_string(&e).unwrap(), line);
        }
        let unknown = Event::DoseEnqueued {
            udid: "A".into(),
            command_uuid: "C".into(),
            pushed: None,
            push_error: None,
        };
        let line = serde_json::to_string(&unknown).unwrap();
        assert_eq!(
            line,
            r#"{"event":"dose_enqueued","udid":"A","command_uuid":"C","push_error":null}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), unknown);
    }

    /// Issue 14: a re-probe carries its network state; a re-probe journaled before that reads
    /// and writes back byte for byte.
    #[test]
    fn reprobe_network_is_optional_and_old_reprobes_read_as_they_were() {
        let old = r#"{"event":"device_reprobed","udid":"A","attached":true,"product_version":"17.5.1","build_version":"21F90","error":null}"#;
        let e: Event = serde_json::from_str(old).unwrap();
        assert_eq!(serde_json::to_string(&e).unwrap(), old);
        let new = r#"{"event":"device_reprobed","udid":"A","attached":true,"product_version":"17.5.1","build_version":"21F90","error":null,"network":"cellular","network_source":"MDM DeviceInformation.CurrentCarrierNetwork"}"#;
        let e: Event = serde_json::from_str(new).unwrap();
        let Event::DeviceReprobed { network, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(
            *network,
            Some(crate::journal::fold::baseline_facts::Network::Cellular)
        );
        assert_eq!(serde_json::to_string(&e).unwrap(), new);
    }
}
