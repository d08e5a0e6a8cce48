//! The outcome of each device, judged from the journal alone (pure, no I/O).
//!
//! **The outcome is judged by the build the device reports afterwards** — a USB re-probe
//! (`DeviceReprobed.build_version`) or a DeviceInformation answer (`QueryResponses.BuildVersion`)
//! recorded after the device's first dose intent — never by the command status: a device that
//! answered `Error` to ScheduleOSUpdate but then reports the target build is `updated`
//! (rdar 45414692).
//!
//! The ladder, first match wins (see `docs/reports.md`):
//!
//! 1. never assessed or not eligible → `excluded`; eligible but no dose intent → `not_dosed`;
//! 2. dosed, and the last build reported after the dose is the target → `updated` (with no
//!    resolved target: any build other than the starting one);
//! 3. … another build than the target and the starting one → `wrong_version` (also a deviation);
//! 4. no intent was enqueued: one uncertain → `dose_uncertain`, else (enqueue failed) `not_dosed`;
//! 5. the device detached after the dose and was never seen again → `lost_to_follow_up`;
//! 6. the last answered dose step was answered `Error`/`CommandFormatError` → `command_error`;
//! 7. no final answer (Acknowledged/Error/CommandFormatError) to any enqueued dose → `no_response`;
//! 8. no build reported after the dose → `lost_to_follow_up`;
//! 9. OSUpdateStatus said `IsDownloaded` after the dose → `downloaded_not_installed`;
//! 10. otherwise `not_downloaded`.
//!
//! Times are seconds from the first dose's `DoseEnqueued`. An MDM answer's time is its
//! `received_at` (when the MDM received it), falling back to the journal time.

use crate::journal::Entry;
pub use crate::journal::fold::{
    Answer, Attach, AvailFacts, BuildSeen, Decoded, Facts, Intent, OsItem, RareFacts,
    Record as Gatherer, ReportFacts, RunFacts, Strings, decode_answer, decode_report,
    is_final_status, run_facts as gather, target_builds, update_results_of,
};
pub use crate::journal::report_xml::StatusAnswer;
use crate::mdm::report::ReportStatus;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// How many ScheduleOSUpdate steps an arm may have at most (a first command and an optional
/// `follow_up_step`, see `protocol::ArmSpec`): the journal does not carry the arm's shape.
pub const MAX_ARM_STEPS: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The final build is the target build.
    Updated,
    /// The final build is neither the target nor the starting build.
    WrongVersion,
    /// OSUpdateStatus reported the update downloaded; the build did not change.
    DownloadedNotInstalled,
    /// The dose was answered; no download was reported and the build did not change.
    NotDownloaded,
    /// ScheduleOSUpdate answered Error/CommandFormatError and the build did not change.
    CommandError,
    /// Dose enqueued, never answered.
    NoResponse,
    /// Detached and never seen again, or follow-up ended without a build observation.
    LostToFollowUp,
    /// Eligible but not dosed (not allocated, consent refused, stop rule, enqueue failed).
    NotDosed,
    /// Not eligible (or never assessed).
    Excluded,
    /// The dose's enqueue result is unknown (crash between intent and enqueue).
    DoseUncertain,
}

impl Outcome {
    pub const ALL: [Outcome; 10] = [
        Outcome::Updated,
        Outcome::WrongVersion,
        Outcome::DownloadedNotInstalled,
        Outcome::NotDownloaded,
        Outcome::CommandError,
        Outcome::NoResponse,
        Outcome::LostToFollowUp,
        Outcome::NotDosed,
        Outcome::Excluded,
        Outcome::DoseUncertain,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Updated => "updated",
            Outcome::WrongVersion => "wrong_version",
            Outcome::DownloadedNotInstalled => "downloaded_not_installed",
            Outcome::NotDownloaded => "not_downloaded",
            Outcome::CommandError => "command_error",
            Outcome::NoResponse => "no_response",
            Outcome::LostToFollowUp => "lost_to_follow_up",
            Outcome::NotDosed => "not_dosed",
            Outcome::Excluded => "excluded",
            Outcome::DoseUncertain => "dose_uncertain",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceOutcome {
    pub udid: String,
    pub arm: Option<String>,
    pub outcome: Outcome,
    /// Why this outcome, in a few words (e.g. `consent refused: …`, `detached at … and never
    /// seen again`).
    pub reason: Option<String>,
    pub starting_version: Option<String>,
    pub starting_build: Option<String>,
    pub final_version: Option<String>,
    pub final_build: Option<String>,
    pub target_build: Option<String>,
    pub dosed_at: Option<String>,
    pub download_complete_at: Option<String>,
    pub new_build_at: Option<String>,
    pub time_to_download_s: Option<f64>,
    pub time_to_new_build_s: Option<f64>,
    /// Statuses of the answers to the dose commands, in journal order.
    pub first_mdm_status: Option<String>,
    pub last_mdm_status: Option<String>,
    pub deviations: Vec<String>,
}

/// Judge every discovered device, in order of first discovery.
pub fn judge(entries: &[Entry]) -> Vec<DeviceOutcome> {
    judge_with_arm_steps(entries, &BTreeMap::new())
}

/// As [`judge`], with the number of ScheduleOSUpdate steps of each arm (from the protocol);
/// an arm not in the map may have up to [`MAX_ARM_STEPS`] steps, numbered 1…n.
pub fn judge_with_arm_steps(
    entries: &[Entry],
    arm_steps: &BTreeMap<String, u32>,
) -> Vec<DeviceOutcome> {
    judge_run(&gather(entries), arm_steps)
}

/// [`judge_with_arm_steps`] over facts already gathered.
pub(crate) fn judge_run(run: &RunFacts, arm_steps: &BTreeMap<String, u32>) -> Vec<DeviceOutcome> {
    run.devices
        .iter()
        .map(|d| judge_device(d, run, arm_steps))
        .collect()
}

/// Seconds from `from` to `to` (RFC 3339), when both parse.
pub(crate) fn seconds_between(from: &str, to: &str) -> Option<f64> {
    let a = chrono::DateTime::parse_from_rfc3339(from).ok()?;
    let b = chrono::DateTime::parse_from_rfc3339(to).ok()?;
    Some((b - a).num_milliseconds() as f64 / 1000.0)
}

fn not_dosed_reason(d: &Facts, run: &RunFacts) -> String {
    if d.arm.is_none() {
        return "eligible, not allocated".into();
    }
    if let Some(r) = &run.consent_refused {
        return format!("consent refused: {r}");
    }
    if let Some(c) = &run.consent
        && !c.contains(&d.udid)
    {
        return "not in the consented list".into();
    }
    if let Some((rule, message)) = run.stop_rules.first() {
        return format!("stop rule {rule}: {message}");
    }
    if run.consent.is_none() {
        return "no consent recorded".into();
    }
    if !run.finished {
        return "run unfinished".into();
    }
    "no dose intent recorded".into()
}

fn judge_device(d: &Facts, run: &RunFacts, arm_steps: &BTreeMap<String, u32>) -> DeviceOutcome {
    let starting_version = d.starting_version();
    let starting_build = d.starting_build();
    let target_build = d.target_field("build");
    let target_builds = d.target_builds();
    let first_intent = d.first_intent_seq();
    let mut deviations = Vec::new();

    // Builds reported after the first dose intent (all builds for an undosed device).
    let post: Vec<&BuildSeen> = d
        .builds
        .iter()
        .filter(|b| first_intent.is_none_or(|s| b.seq > s))
        .collect();
    let last_seen = post.last().copied();
    let is_new = |b: &str| {
        if target_builds.is_empty() {
            starting_build.as_deref().is_some_and(|s| s != b)
        } else {
            target_builds.iter().any(|t| t == b)
        }
    };

    let dosed_at = d
        .intents
        .iter()
        .find_map(|i| i.enqueued.as_ref().map(|x| x.1.clone()));
    let after_dose = |seq: u64| first_intent.is_some_and(|s| seq > s);
    let download_complete_at = d
        .downloaded
        .iter()
        .find(|(seq, _)| after_dose(*seq))
        .map(|x| x.1.clone());
    let new_build_at = if first_intent.is_some() {
        post.iter().find(|b| is_new(&b.build)).map(|b| b.at.clone())
    } else {
        None
    };
    let since_dose = |t: &Option<String>| {
        dosed_at
            .as_deref()
            .zip(t.as_deref())
            .and_then(|(a, b)| seconds_between(a, b))
    };
    let time_to_download_s = since_dose(&download_complete_at);
    let time_to_new_build_s = since_dose(&new_build_at);

    let uuids = d.dose_uuids();
    let dose_answers: Vec<&Answer> = d
        .answers
        .iter()
        .filter(|a| uuids.contains(&*a.command_uuid))
        .collect();
    let first_mdm_status = dose_answers.first().map(|a| a.status.to_string());
    let last_mdm_status = dose_answers.last().map(|a| a.status.to_string());

    // Deviations.
    if !d.assessed {
        deviations.push("eligibility never assessed".to_string());
    }
    for i in &d.intents {
        if let Some((_, reason)) = &i.uncertain {
            deviations.push(format!(
                "dose uncertain: step {} {}: {reason}",
                i.step, i.command_uuid
            ));
        }
    }
    let mut finals: BTreeMap<&str, usize> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for a in d.answers.iter().filter(|a| a.is_final()) {
        let n = finals.entry(&*a.command_uuid).or_insert(0);
        *n += 1;
        if *n == 2 {
            order.push(&*a.command_uuid);
        }
    }
    for u in order {
        deviations.push(format!(
            "CommandUUID {u} answered {} times",
            finals.get(u).copied().unwrap_or(0)
        ));
    }
    let schedule: Vec<&Intent> = d
        .intents
        .iter()
        .filter(|i| i.request_type == "ScheduleOSUpdate")
        .collect();
    let allowed = d
        .arm
        .as_ref()
        .and_then(|a| arm_steps.get(a))
        .copied()
        .unwrap_or(MAX_ARM_STEPS);
    let mut steps_seen = HashSet::new();
    let repeated_step = schedule.iter().any(|i| !steps_seen.insert(i.step));
    if schedule.len() as u32 > allowed || repeated_step {
        deviations.push(format!(
            "{} ScheduleOSUpdate intents for an arm of at most {allowed} step(s)",
            schedule.len()
        ));
    }
    let wrong = first_intent.is_some()
        && target_build.is_some()
        && last_seen.is_some_and(|b| {
            !target_builds.contains(&b.build) && Some(&b.build) != starting_build.as_ref()
        });
    if wrong && let Some(b) = last_seen {
        deviations.push(format!(
            "wrong version installed: {} ({}), target {}",
            b.version.as_deref().unwrap_or("?"),
            b.build,
            target_build.as_deref().unwrap_or("?")
        ));
    }

    // The ladder.
    let (outcome, reason) = if !d.assessed {
        (Outcome::Excluded, Some("eligibility never assessed".into()))
    } else if !d.eligible {
        let rules: Vec<&str> = d.reasons.iter().map(|r| r.rule.as_str()).collect();
        (Outcome::Excluded, Some(rules.join(";")))
    } else if d.intents.is_empty() {
        (Outcome::NotDosed, Some(not_dosed_reason(d, run)))
    } else if last_seen.is_some_and(|b| is_new(&b.build)) {
        (Outcome::Updated, None)
    } else if wrong {
        (Outcome::WrongVersion, None)
    } else if d.intents.iter().all(|i| i.enqueued.is_none()) {
        if d.intents.iter().any(|i| i.uncertain.is_some()) {
            (
                Outcome::DoseUncertain,
                Some("enqueue result unknown".into()),
            )
        } else {
            let err = d.intents.iter().find_map(|i| i.failed.as_ref());
            (
                Outcome::NotDosed,
                Some(format!(
                    "enqueue failed: {}",
                    err.map(|e| e.1.as_str()).unwrap_or("no result recorded")
                )),
            )
        }
    } else if let Some(a) = d.detached_never_seen() {
        (
            Outcome::LostToFollowUp,
            Some(format!("detached at {} and never seen again", a.at)),
        )
    } else if let Some(status) = last_answered_step_error(d) {
        (Outcome::CommandError, Some(status))
    } else if !d
        .intents
        .iter()
        .filter(|i| i.enqueued.is_some())
        .any(|i| d.answers_to(&i.command_uuid).any(Answer::is_final))
    {
        (Outcome::NoResponse, None)
    } else if last_seen.is_none() {
        let why = match &d.follow_up_end {
            Some((_, r)) => format!("follow-up ended ({r}) without a build observation"),
            None => "no build observation after the dose".into(),
        };
        (Outcome::LostToFollowUp, Some(why))
    } else if download_complete_at.is_some() {
        (Outcome::DownloadedNotInstalled, None)
    } else {
        (Outcome::NotDownloaded, None)
    };

    let (final_version, final_build) = match last_seen {
        Some(b) => (b.version.clone(), Some(b.build.clone())),
        None => (None, None),
    };
    DeviceOutcome {
        udid: d.udid.clone(),
        arm: d.arm.clone(),
        outcome,
        reason,
        starting_version,
        starting_build,
        final_version,
        final_build,
        target_build,
        dosed_at,
        download_complete_at,
        new_build_at,
        time_to_download_s,
        time_to_new_build_s,
        first_mdm_status,
        last_mdm_status,
        deviations,
    }
}

/// The status of the last dose step's final answer, when it is Error or CommandFormatError.
fn last_answered_step_error(d: &Facts) -> Option<String> {
    let last = d.intents.iter().rev().find_map(|i| {
        d.answers_to(&i.command_uuid)
            .filter(|a| a.is_final())
            .last()
    })?;
    match ReportStatus::parse(&last.status) {
        ReportStatus::Error | ReportStatus::CommandFormatError => Some(format!(
            "{} answered {}",
            last.request_type.as_deref().unwrap_or("dose"),
            last.status
        )),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod testkit {
    //! Hand-built journals for the outcome and report tests.
    use super::*;
    use crate::journal::{Event, Reason};
    use crate::mdm::report::report_dict;
    use crate::plist_util::dict_to_xml;
    use base64::Engine;
    use plist::{Dictionary, Value};
    use serde_json::json;

    pub const SHA: &str = "5ha256";

    #[derive(Default)]
    pub struct J {
        pub entries: Vec<Entry>,
        t: i64,
    }

    pub fn b64(d: Dictionary) -> String {
        base64::engine::general_purpose::STANDARD.encode(dict_to_xml(d))
    }

    pub fn probe(udid: &str, version: &str, build: &str) -> serde_json::Value {
        let f = |v: serde_json::Value, domain: serde_json::Value, key: &str| json!({"value": v, "raw": v, "source": {"via": "lockdown", "domain": domain, "key": key}});
        json!({
            "host": "UNIX:/var/run/usbmuxd", "device_id": 1, "udid": udid, "status": "ok",
            "elapsed_ms": 12,
            "baseline": {
                "udid": f(json!(udid), json!(null), "UniqueDeviceID"),
                "serial_number": f(json!(format!("SN-{udid}")), json!(null), "SerialNumber"),
                "device_name": f(json!(format!("iPhone {udid}")), json!(null), "DeviceName"),
                "product_type": f(json!("iPhone10,3"), json!(null), "ProductType"),
                "product_version": f(json!(version), json!(null), "ProductVersion"),
                "build_version": f(json!(build), json!(null), "BuildVersion"),
                "disk": {"amount_data_available": f(json!(12_000_000_000u64), json!("com.apple.disk_usage"), "AmountDataAvailable")},
                "battery": {
                    "current_capacity": f(json!(87), json!("com.apple.mobile.battery"), "BatteryCurrentCapacity"),
                    "is_charging": {"value": null, "raw": null, "source": {"via": "lockdown", "domain": "com.apple.mobile.battery", "key": "BatteryIsCharging"}, "error": "key absent from the device's reply"}
                },
                "supervision": {"device_is_chaperoned": f(json!(true), json!("com.apple.mobile.chaperone"), "DeviceIsChaperoned")},
                "usb": {"host": "UNIX:/var/run/usbmuxd", "device_id": 1}
            },
            "mdm": {
                "os_version": {"value": version, "raw": version, "source": {"via": "mdm", "domain": "DeviceInformation", "key": "OSVersion"}},
                "battery_level": {"value": 0.87, "raw": 0.87, "source": {"via": "mdm", "domain": "DeviceInformation", "key": "BatteryLevel"}},
                "commands": []
            }
        })
    }

    impl J {
        pub fn new() -> J {
            let mut j = J::default();
            j.push(Event::RunStarted {
                schema: crate::trial::journal::SCHEMA_VERSION,
                trial_id: "t1".into(),
                protocol_sha256: SHA.into(),
                lab_version: "0.1.0".into(),
            });
            j
        }

        pub fn at(&self) -> String {
            chrono::DateTime::from_timestamp(1_700_000_000 + self.t, 0)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        }

        /// Advance the clock by `s` seconds.
        pub fn wait(&mut self, s: i64) -> &mut Self {
            self.t += s;
            self
        }

        pub fn push(&mut self, event: Event) -> &mut Self {
            let seq = self.entries.len() as u64 + 1;
            let at = self.at();
            self.entries.push(Entry { seq, at, event });
            self.t += 1;
            self
        }

        /// Discovered, baselined, assessed (target 15.8 / 19H390 when eligible).
        pub fn device(&mut self, udid: &str, eligible: bool) -> &mut Self {
            self.push(Event::DeviceDiscovered {
                udid: udid.into(),
                host: "UNIX:/var/run/usbmuxd".into(),
                device_id: 1,
            });
            self.push(Event::BaselineRecorded {
                udid: udid.into(),
                probe: probe(udid, "15.7", "19H12"),
            });
            let reasons = if eligible {
                vec![]
            } else {
                vec![
                    Reason {
                        rule: "supervised".into(),
                        message: "not supervised".into(),
                        values: serde_json::Value::Null,
                    },
                    Reason {
                        rule: "free_disk".into(),
                        message: "3.2 GB free; 6 GB needed".into(),
                        values: json!({"free": 3.2e9}),
                    },
                ]
            };
            let target = if eligible {
                json!({"product_key": "iOSUpdate19H390", "version": "15.8", "build": "19H390",
                       "download_size": 1000, "install_size": 2000})
            } else {
                serde_json::Value::Null
            };
            self.push(Event::EligibilityAssessed {
                udid: udid.into(),
                eligible,
                reasons,
                target,
            })
        }

        pub fn allocate(&mut self, udid: &str, arm: &str) -> &mut Self {
            self.push(Event::Allocated {
                udid: udid.into(),
                arm: arm.into(),
                seed: 7,
            })
        }

        pub fn consent(&mut self, udids: &[&str]) -> &mut Self {
            self.push(Event::ConsentGiven {
                by: crate::journal::ConsentBy::Flag,
                udids: udids.iter().map(|s| s.to_string()).collect(),
            })
        }

        pub fn intent(&mut self, udid: &str, step: u32, uuid: &str, action: &str) -> &mut Self {
            self.push(Event::DoseIntent {
                udid: udid.into(),
                arm: "a".into(),
                step,
                command_uuid: uuid.into(),
                request_type: "ScheduleOSUpdate".into(),
                install_action: action.parse().expect("an Apple InstallAction"),
                starting_build: "19H12".into(),
                command_b64: "AAAA".into(),
                mdm_store: None,
            })
        }

        pub fn enqueued(&mut self, udid: &str, uuid: &str) -> &mut Self {
            self.push(Event::DoseEnqueued {
                udid: udid.into(),
                command_uuid: uuid.into(),
                pushed: true,
                push_error: None,
            })
        }

        /// Intent + enqueue of step `step`.
        pub fn dose(&mut self, udid: &str, step: u32, uuid: &str) -> &mut Self {
            self.intent(udid, step, uuid, "Default")
                .enqueued(udid, uuid)
        }

        pub fn result(
            &mut self,
            udid: &str,
            uuid: &str,
            request_type: Option<&str>,
            status: &str,
            fill: impl FnOnce(&mut Dictionary),
        ) -> &mut Self {
            let mut d = report_dict(udid, Some(uuid), status);
            fill(&mut d);
            let received_at = self.at();
            self.push(Event::MdmResult {
                udid: udid.into(),
                command_uuid: uuid.into(),
                request_type: request_type.map(str::to_string),
                status: status.into(),
                raw_b64: b64(d),
                received_at,
            })
        }

        /// A ScheduleOSUpdate answer with one UpdateResults item.
        pub fn schedule_answer(&mut self, udid: &str, uuid: &str, status: &str) -> &mut Self {
            self.result(udid, uuid, Some("ScheduleOSUpdate"), status, |d| {
                let mut item = Dictionary::new();
                item.insert("ProductKey".into(), "iOSUpdate19H390".into());
                item.insert("InstallAction".into(), "DownloadOnly".into());
                item.insert("Status".into(), "Downloading".into());
                d.insert(
                    "UpdateResults".into(),
                    Value::Array(vec![Value::Dictionary(item)]),
                );
            })
        }

        /// An OSUpdateStatus answer; `downloaded` as the given plist value.
        pub fn status(&mut self, udid: &str, uuid: &str, pct: f64, downloaded: Value) -> &mut Self {
            self.push(Event::CommandSent {
                udid: udid.into(),
                command_uuid: uuid.into(),
                request_type: "OSUpdateStatus".into(),
            });
            self.result(udid, uuid, None, "Acknowledged", |d| {
                let mut item = Dictionary::new();
                item.insert("ProductKey".into(), "iOSUpdate19H390".into());
                item.insert("IsDownloaded".into(), downloaded);
                item.insert("DownloadPercentComplete".into(), Value::Real(pct));
                item.insert("Status".into(), "Downloading".into());
                d.insert(
                    "OSUpdateStatus".into(),
                    Value::Array(vec![Value::Dictionary(item)]),
                );
            })
        }

        pub fn device_info(
            &mut self,
            udid: &str,
            uuid: &str,
            version: &str,
            build: &str,
        ) -> &mut Self {
            self.result(udid, uuid, Some("DeviceInformation"), "Acknowledged", |d| {
                let mut q = Dictionary::new();
                q.insert("OSVersion".into(), version.into());
                q.insert("BuildVersion".into(), build.into());
                d.insert("QueryResponses".into(), Value::Dictionary(q));
            })
        }

        pub fn reprobe(&mut self, udid: &str, attached: bool, build: Option<&str>) -> &mut Self {
            self.push(Event::DeviceReprobed {
                udid: udid.into(),
                attached,
                product_version: build
                    .map(|b| if b == "19H390" { "15.8" } else { "15.7" }.to_string()),
                build_version: build.map(str::to_string),
                error: (!attached).then(|| "device not attached".to_string()),
            })
        }

        pub fn ended(&mut self, udid: &str, reason: &str) -> &mut Self {
            self.push(Event::FollowUpEnded {
                udid: udid.into(),
                reason: reason.into(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;
    use crate::journal::Event;
    use plist::Value;

    fn one(j: &J) -> DeviceOutcome {
        let mut v = judge(&j.entries);
        assert_eq!(v.len(), 1, "{v:?}");
        v.remove(0)
    }

    fn dosed(u: &str) -> J {
        let mut j = J::new();
        j.device(u, true)
            .allocate(u, "a")
            .consent(&[u])
            .dose(u, 1, "C1");
        j
    }

    #[test]
    fn updated_judged_by_build_with_times() {
        let mut j = dosed("U");
        j.wait(9)
            .schedule_answer("U", "C1", "Acknowledged")
            .wait(20)
            .status("U", "S1", 1.0, Value::Integer(1.into()))
            .wait(100)
            .reprobe("U", true, Some("19H390"))
            .ended("U", "updated");
        let o = one(&j);
        assert_eq!(o.outcome, Outcome::Updated);
        assert_eq!(o.arm.as_deref(), Some("a"));
        assert_eq!(o.starting_build.as_deref(), Some("19H12"));
        assert_eq!(o.starting_version.as_deref(), Some("15.7"));
        assert_eq!(o.final_build.as_deref(), Some("19H390"));
        assert_eq!(o.final_version.as_deref(), Some("15.8"));
        assert_eq!(o.target_build.as_deref(), Some("19H390"));
        // Enqueued at t, answer at +10, CommandSent +21, status answer +31, reprobe at +132.
        assert_eq!(o.time_to_download_s, Some(32.0));
        assert_eq!(o.time_to_new_build_s, Some(133.0));
        assert_eq!(o.first_mdm_status.as_deref(), Some("Acknowledged"));
        assert!(o.deviations.is_empty(), "{:?}", o.deviations);
    }

    #[test]
    fn error_answer_but_new_build_is_updated() {
        // rdar 45414692: the command status does not decide the outcome.
        let mut j = dosed("U");
        j.schedule_answer("U", "C1", "Error")
            .device_info("U", "D1", "15.8", "19H390");
        let o = one(&j);
        assert_eq!(o.outcome, Outcome::Updated);
        assert_eq!(o.last_mdm_status.as_deref(), Some("Error"));
    }

    #[test]
    fn command_error_when_build_unchanged() {
        let mut j = dosed("U");
        j.schedule_answer("U", "C1", "CommandFormatError")
            .reprobe("U", true, Some("19H12"));
        let o = one(&j);
        assert_eq!(o.outcome, Outcome::CommandError);
        assert_eq!(o.final_build.as_deref(), Some("19H12"));
    }

    #[test]
    fn downloaded_not_installed_and_not_downloaded() {
        let mut j = dosed("U");
        j.schedule_answer("U", "C1", "Acknowledged")
            .status("U", "S1", 1.0, Value::Boolean(true))
            .reprobe("U", true, Some("19H12"));
        assert_eq!(one(&j).outcome, Outcome::DownloadedNotInstalled);

        let mut j = dosed("U");
        j.schedule_answer("U", "C1", "Acknowledged")
            .status("U", "S1", 0.4, Value::Boolean(false))
            .reprobe("U", true, Some("19H12"));
        let o = one(&j);
        assert_eq!(o.outcome, Outcome::NotDownloaded);
        assert_eq!(o.download_complete_at, None);
        assert_eq!(o.time_to_download_s, None);
    }

    #[test]
    fn no_response_when_dose_unanswered() {
        let mut j = dosed("U");
        j.result("U", "C1", Some("ScheduleOSUpdate"), "NotNow", |_| {})
            .reprobe("U", true, Some("19H12"));
        let o = one(&j);
        assert_eq!(o.outcome, Outcome::NoResponse);
        assert_eq!(o.first_mdm_status.as_deref(), Some("NotNow"));
    }

    #[test]
    fn lost_to_follow_up_detached_or_unobserved() {
        let mut j = dosed("U");
        j.schedule_answer("U", "C1", "Acknowledged")
            .reprobe("U", false, None)
            .ended("U", "max_duration");
        let o = one(&j);
        assert_eq!(o.outcome, Outcome::LostToFollowUp);
        assert!(o.reason.unwrap().contains("never seen again"));

        // Detached, then back: not lost.
        let mut j = dosed("U");
        j.schedule_answer("U", "C1", "Acknowledged")
            .reprobe("U", false, None)
            .reprobe("U", true, Some("19H12"));
        assert_eq!(one(&j).outcome, Outcome::NotDownloaded);

        // Answered, but no build observation before follow-up ended.
        let mut j = dosed("U");
        j.schedule_answer("U", "C1", "Acknowledged")
            .ended("U", "max_duration");
        let o = one(&j);
        assert_eq!(o.outcome, Outcome::LostToFollowUp);
        assert!(o.reason.unwrap().contains("max_duration"));
    }

    #[test]
    fn not_dosed_excluded_and_consent_refused() {
        let mut j = J::new();
        j.device("E", false).device("N", true).allocate("N", "a");
        j.push(Event::ConsentRefused {
            reason: "operator typed no".into(),
        });
        let v = judge(&j.entries);
        assert_eq!(v[0].udid, "E");
        assert_eq!(v[0].outcome, Outcome::Excluded);
        assert_eq!(v[0].reason.as_deref(), Some("supervised;free_disk"));
        assert_eq!(v[1].outcome, Outcome::NotDosed);
        assert!(
            v[1].reason
                .as_deref()
                .unwrap()
                .starts_with("consent refused")
        );

        let mut j = J::new();
        j.device("N", true).allocate("N", "a").consent(&["N"]);
        j.push(Event::StopRuleTriggered {
            rule: "max_errors".into(),
            message: "2 errors".into(),
        });
        let o = one(&j);
        assert_eq!(o.outcome, Outcome::NotDosed);
        assert!(o.reason.unwrap().contains("max_errors"));

        let mut j = J::new();
        j.device("N", true)
            .allocate("N", "a")
            .consent(&["N"])
            .intent("N", 1, "C1", "Default");
        j.push(Event::DoseFailed {
            udid: "N".into(),
            command_uuid: "C1".into(),
            error: "HTTP 500".into(),
        });
        let o = one(&j);
        assert_eq!(o.outcome, Outcome::NotDosed);
        assert_eq!(o.reason.as_deref(), Some("enqueue failed: HTTP 500"));
    }

    #[test]
    fn dose_uncertain_is_an_outcome_and_a_deviation() {
        let mut j = J::new();
        j.device("U", true)
            .allocate("U", "a")
            .consent(&["U"])
            .intent("U", 1, "C1", "Default");
        j.push(Event::RunInterrupted);
        j.push(Event::RunResumed {
            protocol_sha256: SHA.into(),
        });
        j.push(Event::DoseUncertain {
            udid: "U".into(),
            command_uuid: "C1".into(),
            reason: "crash between intent and enqueue".into(),
        });
        let o = one(&j);
        assert_eq!(o.outcome, Outcome::DoseUncertain);
        assert_eq!(o.deviations.len(), 1);
        assert!(o.deviations[0].starts_with("dose uncertain"));
    }

    #[test]
    fn wrong_version_duplicate_answers_and_extra_intents() {
        let mut j = dosed("U");
        j.schedule_answer("U", "C1", "Acknowledged")
            .schedule_answer("U", "C1", "Acknowledged")
            .dose("U", 2, "C2")
            .dose("U", 2, "C3")
            .reprobe("U", true, Some("19H999"));
        let o = one(&j);
        assert_eq!(o.outcome, Outcome::WrongVersion);
        let all = o.deviations.join("\n");
        assert!(all.contains("CommandUUID C1 answered 2 times"), "{all}");
        assert!(all.contains("3 ScheduleOSUpdate intents"), "{all}");
        assert!(all.contains("wrong version installed"), "{all}");

        let mut steps = BTreeMap::new();
        steps.insert("a".to_string(), 1);
        let mut j = dosed("U");
        j.dose("U", 2, "C2");
        let o = judge_with_arm_steps(&j.entries, &steps).remove(0);
        assert!(o.deviations.iter().any(|d| d.contains("at most 1 step")));
        assert!(judge(&j.entries)[0].deviations.is_empty());
    }

    #[test]
    fn observations_before_the_dose_do_not_count() {
        let mut j = J::new();
        j.device("U", true)
            .allocate("U", "a")
            .device_info("U", "D0", "15.8", "19H390")
            .consent(&["U"])
            .dose("U", 1, "C1");
        assert_eq!(one(&j).outcome, Outcome::NoResponse);
    }

    #[test]
    fn devices_in_order_of_first_discovery_once() {
        let mut j = J::new();
        j.device("B", false).device("A", false).device("B", false);
        let v = judge(&j.entries);
        assert_eq!(
            v.iter().map(|o| o.udid.as_str()).collect::<Vec<_>>(),
            ["B", "A"]
        );
    }
}
