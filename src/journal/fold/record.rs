//! The record the verdicts and the reports read: per device, every intent, answer, build seen,
//! attach and detach, observation and the end of follow-up, in journal order; per run, its id,
//! consent and stop rules. [`Record`] builds it one entry at a time, as part of the one fold
//! ([`super::Fold::apply`] drives it), or on its own where a report streams a journal and
//! decodes each answer once for every projection ([`Record::push`]).
//!
//! Unlike the runner's per-device facts, the record keeps only devices it saw discovered, and
//! keeps a whole history rather than the latest state: the outcome rules and the detectors read
//! sequences (was a build reported after the first dose? was the device heard from after its
//! last detach?).

use super::answer_facts::{Answer, ReportFacts, Strings, decode_report};
use super::ddm_facts::{DdmDose, DdmReport, read_report};
use super::probe_record::ProbeRecord;
use crate::journal::report_xml::StatusAnswer;
use crate::journal::{Entry, Event, ObservationSource, Reason};
use crate::mdm::report::{Report, query_responses};
use std::sync::Arc;

/// A dose step as the journal tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    pub seq: u64,
    pub at: String,
    pub step: u32,
    pub command_uuid: String,
    pub request_type: String,
    pub install_action: String,
    pub starting_build: String,
    pub enqueued: Option<(u64, String)>,
    /// What the MDM said of the push when it queued the dose (`None`: it said nothing).
    pub pushed: Option<bool>,
    pub failed: Option<(u64, String)>,
    pub uncertain: Option<(u64, String)>,
    /// The enforcement declaration, when this intent is a DDM dose (issue 13).
    pub ddm: Option<DdmDose>,
}

/// A build the device reported.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildSeen {
    pub seq: u64,
    pub at: String,
    pub version: Option<String>,
    pub build: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attach {
    pub seq: u64,
    pub at: String,
    pub attached: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub udid: String,
    pub host: String,
    pub device_id: u32,
    /// The baseline probe record, compact (`probe_record`: kept as text, not a `Value` tree).
    pub probe: Option<ProbeRecord>,
    /// Seq of the (last) `BaselineRecorded`.
    pub baseline_seq: Option<u64>,
    /// Journal time of the (last) `BaselineRecorded`: when the probe's clock reading
    /// (`device_time`) was taken, give or take the probe's length.
    pub baseline_at: Option<String>,
    pub assessed: bool,
    pub eligible: bool,
    pub reasons: Vec<Reason>,
    pub target: serde_json::Value,
    pub arm: Option<String>,
    pub intents: Vec<Intent>,
    pub answers: Vec<Answer>,
    pub builds: Vec<BuildSeen>,
    pub attaches: Vec<Attach>,
    /// OSUpdateStatus answers reporting an item downloaded: (seq, time). The time is empty
    /// where it cannot be the first download after the first dose (the only one read).
    pub downloaded: Vec<(u64, String)>,
    /// A time was kept for a download after the first dose.
    download_time_taken: bool,
    /// Last OSUpdateStatus item status seen: (seq, status).
    pub update_statuses: Vec<(u64, Arc<str>)>,
    pub follow_up_end: Option<(u64, String)>,
    /// The journal time of `follow_up_end`.
    pub follow_up_end_at: Option<String>,
    /// Operator/harness observations about this device, journal order.
    pub observations: Vec<Noted>,
    /// The device's DDM status reports, in journal order, each with the view folded so far.
    pub ddm_reports: Vec<DdmReport>,
}

/// One `Observation` entry as the reports and detectors read it: who recorded it, its kind,
/// key and value, and where it is in the journal (its seq is the evidence a finding cites).
#[derive(Debug, Clone, PartialEq)]
pub struct Noted {
    pub seq: u64,
    pub at: String,
    pub source: ObservationSource,
    pub kind: String,
    pub key: String,
    pub value: String,
}

impl Noted {
    pub fn of(e: &Entry, source: ObservationSource, kind: &str, key: &str, value: &str) -> Noted {
        Noted {
            seq: e.seq,
            at: e.at.clone(),
            source,
            kind: kind.to_string(),
            key: key.to_string(),
            value: value.to_string(),
        }
    }

    /// The operator recorded it (`lab observe`), rather than the harness.
    pub fn by_operator(&self) -> bool {
        self.source == ObservationSource::Operator
    }

    /// Its kind is `name`, or (the older form) its key is.
    pub fn is(&self, name: &str) -> bool {
        self.kind == name || self.key == name
    }
}

impl Facts {
    pub fn baseline_str(&self, path: &[&str]) -> Option<String> {
        let path: Vec<&str> = path.iter().copied().chain(["value"]).collect();
        self.probe.as_ref()?.at(&path)?.as_str().map(str::to_string)
    }

    pub fn starting_version(&self) -> Option<String> {
        self.baseline_str(&["baseline", "product_version"])
            .or_else(|| self.baseline_str(&["mdm", "os_version"]))
    }

    pub fn starting_build(&self) -> Option<String> {
        self.baseline_str(&["baseline", "build_version"])
            .or_else(|| self.baseline_str(&["mdm", "build_version"]))
            .or_else(|| {
                self.intents
                    .first()
                    .map(|i| i.starting_build.clone())
                    .filter(|b| !b.is_empty())
            })
    }

    pub fn target_field(&self, key: &str) -> Option<String> {
        match self.target.get(key)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// Every build that counts as the target: `build`, plus the gdmf feed's other builds of
    /// the same version (`feed_builds`, `latest_for_model`: the device picks one of them).
    pub fn target_builds(&self) -> Vec<String> {
        target_builds(&self.target)
    }

    /// The journal time of the event `seq` of this device, where the fold keeps one (intents,
    /// enqueues, builds, attaches, observations, DDM reports; an answer's own time is not kept).
    pub fn time_of(&self, seq: u64) -> Option<&str> {
        let intent = self.intents.iter().find_map(|i| {
            if i.seq == seq {
                Some(i.at.as_str())
            } else {
                i.enqueued
                    .as_ref()
                    .filter(|(s, _)| *s == seq)
                    .map(|(_, at)| at.as_str())
            }
        });
        intent
            .or_else(|| {
                self.builds
                    .iter()
                    .find(|b| b.seq == seq)
                    .map(|b| b.at.as_str())
            })
            .or_else(|| {
                self.attaches
                    .iter()
                    .find(|a| a.seq == seq)
                    .map(|a| a.at.as_str())
            })
            .or_else(|| {
                self.observations
                    .iter()
                    .find(|o| o.seq == seq)
                    .map(|o| o.at.as_str())
            })
            .or_else(|| {
                self.ddm_reports
                    .iter()
                    .find(|r| r.seq == seq)
                    .map(|r| r.at.as_str())
            })
    }

    pub fn first_intent_seq(&self) -> Option<u64> {
        self.intents.first().map(|i| i.seq)
    }

    /// The CommandUUIDs of the device's doses (Fx-hashed: the outcome and the timeline look up
    /// every answer of the device in it, a million at 1 M events).
    pub fn dose_uuids(&self) -> rustc_hash::FxHashSet<&str> {
        self.intents
            .iter()
            .map(|i| i.command_uuid.as_str())
            .collect()
    }

    /// The answers to one command, in journal order.
    pub fn answers_to<'a>(&'a self, uuid: &'a str) -> impl Iterator<Item = &'a Answer> + 'a {
        self.answers
            .iter()
            .filter(move |a| *a.command_uuid == *uuid)
    }

    /// The seq of the detach after the dose after which nothing more was heard of the device.
    pub fn detached_never_seen(&self) -> Option<&Attach> {
        let first = self.first_intent_seq()?;
        let last = self.attaches.iter().rev().find(|a| a.seq > first)?;
        if last.attached {
            return None;
        }
        let heard = self.answers.iter().any(|a| a.seq > last.seq)
            || self.builds.iter().any(|b| b.seq > last.seq);
        (!heard).then_some(last)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFacts {
    /// The lab's time scale (`RunStarted.time_scale`; `None` in older journals: 1).
    pub time_scale: Option<f64>,
    /// The devices were the in-process simulated lab (`RunStarted.simulated`).
    pub simulated: bool,
    pub trial_id: Option<String>,
    pub protocol_sha256: Option<String>,
    pub devices: Vec<Facts>,
    pub consent: Option<Vec<String>>,
    pub consent_refused: Option<String>,
    pub stop_rules: Vec<(String, String)>,
    pub finished: bool,
}

/// The builds of an `EligibilityAssessed.target` (see [`Facts::target_builds`]).
pub fn target_builds(target: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = target
        .get("build")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .into_iter()
        .collect();
    for b in target
        .get("feed_builds")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
    {
        if !out.iter().any(|x| x == b) {
            out.push(b.to_string());
        }
    }
    out
}

/// `ProductKey:InstallAction:Status` items of the last answer to `uuid` carrying
/// `UpdateResults` (a command re-sent after a restart answers without it, MDM brief §0.3).
pub fn update_results_of(d: &Facts, uuid: &str) -> Option<String> {
    let results = d
        .answers_to(uuid)
        .filter_map(|a| a.report.update_results())
        .last()?;
    Some(
        results
            .iter()
            .map(|r| {
                format!(
                    "{}:{}:{}",
                    r.product_key.as_deref().unwrap_or(""),
                    r.install_action.as_deref().unwrap_or(""),
                    r.status.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join(";"),
    )
}

/// An answer's plist as the record takes it in.
enum Answered<'r> {
    Report(&'r Result<Report, String>),
    Status(&'r StatusAnswer),
}

/// Builds the [`RunFacts`] one entry at a time.
///
/// An answer is labelled with its command's RequestType (answers carry none, MDM brief §0.6):
/// through [`Record::apply`], the one the commands journalled so far give, or, built by
/// [`Record::of_entries`], the one the whole journal gives (the same unless a command is
/// journalled after an answer to it); through [`Record::push`], the one the caller resolved.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Record {
    run: RunFacts,
    index: rustc_hash::FxHashMap<String, usize>,
    /// Interned statuses and request types, shared with a caller that labels answers itself.
    pub strings: Strings,
    /// CommandUUID → RequestType of the commands journalled (see the type's doc).
    types: rustc_hash::FxHashMap<Box<str>, Arc<str>>,
    /// `types` is the whole journal's: do not learn from the entries.
    whole: bool,
}

/// The record of a whole journal in memory.
pub fn run_facts(entries: &[Entry]) -> RunFacts {
    Record::of_entries(entries).finish()
}

impl Record {
    /// A record that labels answers with the request types of the whole of `entries`, then
    /// takes `entries` in.
    pub fn of_entries(entries: &[Entry]) -> Record {
        let mut r = Record {
            whole: true,
            ..Record::default()
        };
        for (uuid, t) in crate::journal::request_types(entries) {
            let t = r.strings.get(t);
            r.types.insert(uuid.into(), t);
        }
        for e in entries {
            r.apply(e);
        }
        r
    }

    /// The facts so far.
    pub fn run(&self) -> &RunFacts {
        &self.run
    }

    /// The index of a discovered device in [`RunFacts::devices`].
    pub fn device(&self, udid: &str) -> Option<usize> {
        self.index.get(udid).copied()
    }

    pub fn devices(&self) -> &[Facts] {
        &self.run.devices
    }

    pub fn finish(self) -> RunFacts {
        self.run
    }

    /// Take in one entry, decoding an answer's plist and labelling it (see the type's doc).
    pub fn apply(&mut self, e: &Entry) {
        if !self.whole
            && let Some((uuid, t)) = e.event.sent_command()
        {
            let t = self.strings.get(t);
            self.types.insert(uuid.into(), t);
        }
        match &e.event {
            Event::MdmResult {
                command_uuid,
                request_type,
                raw_b64,
                ..
            } => {
                let rt = match request_type {
                    Some(t) => Some(self.strings.get(t)),
                    None => self.types.get(command_uuid.as_str()).cloned(),
                };
                let report = decode_report(raw_b64);
                self.push(e, Some((&report, rt.as_deref())));
            }
            _ => self.push(e, None),
        }
    }

    /// Take in one entry; an `MdmResult` comes with its decoded report and request type.
    pub fn push(&mut self, e: &Entry, answer: Option<(&Result<Report, String>, Option<&str>)>) {
        self.push_answered(e, answer.map(|(r, t)| (Answered::Report(r), t)));
    }

    /// Take in an `MdmResult` answering an OSUpdateStatus command, read without a plist tree
    /// (`report_xml::parse_status`): the same as [`Record::push`] with its report.
    pub fn push_status(&mut self, e: &Entry, st: &StatusAnswer) {
        self.push_answered(e, Some((Answered::Status(st), Some("OSUpdateStatus"))));
    }

    fn push_answered(&mut self, e: &Entry, answer: Option<(Answered, Option<&str>)>) {
        if let Event::MdmResult { .. } = &e.event {
            if let Some((report, request_type)) = answer {
                self.take_answer(e, report, request_type);
            }
            return;
        }
        if self.apply_run(&e.event) {
            return;
        }
        let Some(udid) = e.event.udid() else { return };
        if let Event::DeviceDiscovered {
            udid,
            host,
            device_id,
        } = &e.event
        {
            if !self.index.contains_key(udid) {
                self.index.insert(udid.clone(), self.run.devices.len());
                self.run.devices.push(Facts {
                    udid: udid.clone(),
                    host: host.clone(),
                    device_id: *device_id,
                    target: serde_json::Value::Null,
                    ..Facts::default()
                });
            }
            return;
        }
        let Some(i) = self.device(udid) else { return };
        self.run.devices[i].apply(e);
    }

    /// A run-level event; `false` when `event` is not one.
    fn apply_run(&mut self, event: &Event) -> bool {
        let run = &mut self.run;
        match event {
            Event::RunStarted {
                trial_id,
                protocol_sha256,
                time_scale,
                simulated,
                ..
            } => {
                if run.time_scale.is_none() {
                    run.time_scale = *time_scale;
                }
                run.simulated |= *simulated;
                run.trial_id.get_or_insert_with(|| trial_id.clone());
                run.protocol_sha256
                    .get_or_insert_with(|| protocol_sha256.clone());
            }
            Event::RunResumed { protocol_sha256 } => {
                run.protocol_sha256
                    .get_or_insert_with(|| protocol_sha256.clone());
                run.finished = false;
            }
            Event::ConsentGiven { udids, .. } => {
                run.consent
                    .get_or_insert_with(Vec::new)
                    .extend(udids.clone());
                // Asked again after a refusal (a rerun asks again): the later answer stands.
                run.consent_refused = None;
            }
            Event::ConsentRefused { reason } => run.consent_refused = Some(reason.clone()),
            Event::StopRuleTriggered { rule, message } => {
                run.stop_rules.push((rule.clone(), message.clone()));
            }
            Event::RunFinished => run.finished = true,
            _ => return false,
        }
        true
    }

    /// An `MdmResult` of a discovered device, with its plist and request type.
    fn take_answer(&mut self, e: &Entry, report: Answered, request_type: Option<&str>) {
        let Event::MdmResult {
            udid,
            command_uuid,
            status,
            received_at,
            ..
        } = &e.event
        else {
            return;
        };
        let Some(i) = self.device(udid) else { return };
        let d = &mut self.run.devices[i];
        let strings = &mut self.strings;
        let (facts, ok) = match report {
            Answered::Report(r) => (
                ReportFacts::of(r, request_type, strings),
                r.as_ref().ok().map(Some),
            ),
            Answered::Status(st) => (st.facts(strings), Some(None)),
        };
        if status == "Acknowledged"
            && let Some(r) = ok
        {
            // An MDM answer's time is when the MDM received it, else its journal time.
            let at = || {
                if chrono::DateTime::parse_from_rfc3339(received_at).is_ok() {
                    received_at.clone()
                } else {
                    e.at.clone()
                }
            };
            match request_type {
                Some("OSUpdateStatus") => d.take_status(e.seq, &facts, at),
                Some("DeviceInformation") => {
                    if let Some(r) = r {
                        d.take_device_information(e.seq, r, at);
                    }
                }
                _ => {}
            }
        }
        d.answers.push(Answer {
            seq: e.seq,
            command_uuid: command_uuid.as_str().into(),
            request_type: request_type.map(|t| strings.get(t)),
            status: strings.get(status),
            report: facts,
        });
    }
}

impl Facts {
    /// Take in an event about this (discovered) device, other than an answer.
    fn apply(&mut self, e: &Entry) {
        match &e.event {
            Event::BaselineRecorded { probe, .. } => {
                self.probe = Some(ProbeRecord::of(probe));
                self.baseline_seq = Some(e.seq);
                self.baseline_at = Some(e.at.clone());
            }
            Event::EligibilityAssessed {
                eligible,
                reasons,
                target,
                ..
            } => {
                self.assessed = true;
                self.eligible = *eligible;
                self.reasons = reasons.clone();
                self.target = target.clone();
            }
            Event::Allocated { arm, .. } => self.arm = Some(arm.clone()),
            Event::DoseIntent { .. }
            | Event::DoseEnqueued { .. }
            | Event::DoseFailed { .. }
            | Event::DoseUncertain { .. } => self.apply_dose(e),
            Event::DeviceReprobed {
                attached,
                product_version,
                build_version,
                ..
            } => {
                self.attaches.push(Attach {
                    seq: e.seq,
                    at: e.at.clone(),
                    attached: *attached,
                });
                if let Some(b) = build_version.as_ref().filter(|b| !b.is_empty()) {
                    self.builds.push(BuildSeen {
                        seq: e.seq,
                        at: e.at.clone(),
                        version: product_version.clone(),
                        build: b.clone(),
                    });
                }
            }
            Event::Observation {
                source,
                kind,
                key,
                value,
                ..
            } => self
                .observations
                .push(Noted::of(e, *source, kind, key, value)),
            Event::FollowUpEnded { reason, .. } => {
                self.follow_up_end = Some((e.seq, reason.to_string()));
                self.follow_up_end_at = Some(e.at.clone());
            }
            Event::DdmStatusReport {
                report_id,
                received_at,
                raw_b64,
                ..
            } => {
                let before = self.ddm_reports.last().map(|r| &r.view);
                let r = read_report(
                    e.seq,
                    &e.at,
                    report_id,
                    received_at.as_ref(),
                    raw_b64,
                    before,
                );
                self.ddm_reports.push(r);
            }
            _ => {}
        }
    }

    /// A dose intent, or what became of it at the MDM.
    fn apply_dose(&mut self, e: &Entry) {
        if let Event::DoseIntent {
            step,
            command_uuid,
            request_type,
            install_action,
            starting_build,
            command_b64,
            ..
        } = &e.event
        {
            self.intents.push(Intent {
                seq: e.seq,
                at: e.at.clone(),
                step: *step,
                command_uuid: command_uuid.clone(),
                request_type: request_type.clone(),
                install_action: install_action.map(|a| a.to_string()).unwrap_or_default(),
                starting_build: starting_build.clone(),
                enqueued: None,
                failed: None,
                uncertain: None,
                pushed: None,
                ddm: DdmDose::of_intent(request_type, command_b64),
            });
            return;
        }
        let (Event::DoseEnqueued { command_uuid, .. }
        | Event::DoseFailed { command_uuid, .. }
        | Event::DoseUncertain { command_uuid, .. }) = &e.event
        else {
            return;
        };
        let Some(intent) = self
            .intents
            .iter_mut()
            .find(|x| &x.command_uuid == command_uuid)
        else {
            return;
        };
        let mark = Some((e.seq, e.at.clone()));
        match &e.event {
            Event::DoseEnqueued { pushed, .. } => {
                if intent.enqueued.is_none() {
                    intent.pushed = *pushed;
                }
                intent.enqueued = intent.enqueued.take().or(mark);
            }
            Event::DoseFailed { error, .. } => intent.failed = Some((e.seq, error.clone())),
            Event::DoseUncertain { reason, .. } => {
                intent.uncertain = Some((e.seq, reason.clone()));
            }
            _ => {}
        }
    }

    /// An Acknowledged OSUpdateStatus answer: whether an item is downloaded, the last status.
    fn take_status(&mut self, seq: u64, facts: &ReportFacts, at: impl FnOnce() -> String) {
        let items = facts.os_items.as_deref().unwrap_or_default();
        if items.iter().any(|x| x.is_downloaded == Some(true)) {
            // Only the first download reported after the first dose has its time read
            // (`download_complete_at`); the first dose is the first intent journalled, so once
            // it is known, later entries need no time (a million of them would add up).
            let time = match self.intents.first() {
                None => at(),
                Some(i0) if seq > i0.seq && !self.download_time_taken => {
                    self.download_time_taken = true;
                    at()
                }
                Some(_) => String::new(),
            };
            self.downloaded.push((seq, time));
        }
        if let Some(s) = items.iter().rev().find_map(|x| x.status.clone()) {
            self.update_statuses.push((seq, s));
        }
    }

    /// An Acknowledged DeviceInformation answer: the build it reports.
    fn take_device_information(&mut self, seq: u64, r: &Report, at: impl FnOnce() -> String) {
        if let Some(q) = query_responses(r)
            && let Some(b) = q.get("BuildVersion").and_then(|v| v.as_string())
        {
            self.builds.push(BuildSeen {
                seq,
                at: at(),
                version: q
                    .get("OSVersion")
                    .and_then(|v| v.as_string())
                    .map(str::to_string),
                build: b.to_string(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::fold::Fold;
    use std::path::Path;

    fn entry(seq: u64, event: Event) -> Entry {
        Entry {
            seq,
            at: format!("2026-01-01T00:00:{seq:02}.000Z"),
            event,
        }
    }

    fn discovered(udid: &str) -> Event {
        Event::DeviceDiscovered {
            udid: udid.into(),
            host: "h".into(),
            device_id: 1,
        }
    }

    /// An answer with no RequestType of its own, to command `uuid`.
    fn answer(udid: &str, uuid: &str) -> Event {
        Event::MdmResult {
            udid: udid.into(),
            command_uuid: uuid.into(),
            request_type: None,
            status: "Acknowledged".into(),
            raw_b64: String::new(),
            received_at: String::new(),
        }
    }

    fn sent(udid: &str, uuid: &str) -> Event {
        Event::CommandSent {
            udid: udid.into(),
            command_uuid: uuid.into(),
            request_type: "OSUpdateStatus".into(),
        }
    }

    #[test]
    fn only_discovered_devices_are_recorded_once_in_discovery_order() {
        let entries: Vec<Entry> = [
            answer("X", "S0"),
            discovered("B"),
            discovered("A"),
            discovered("B"),
            Event::Allocated {
                udid: "X".into(),
                arm: "a".into(),
                seed: 1,
            },
        ]
        .into_iter()
        .enumerate()
        .map(|(i, e)| entry(i as u64 + 1, e))
        .collect();
        let run = run_facts(&entries);
        let udids: Vec<&str> = run.devices.iter().map(|d| d.udid.as_str()).collect();
        assert_eq!(udids, ["B", "A"]);
        assert!(run.devices.iter().all(|d| d.answers.is_empty()));
    }

    #[test]
    fn an_answer_is_labelled_by_its_command_and_a_whole_journal_labels_late_commands_too() {
        let entries: Vec<Entry> = [
            discovered("A"),
            sent("A", "S1"),
            answer("A", "S1"),
            // Journalled after its answer: only the whole journal's map knows it.
            answer("A", "S2"),
            sent("A", "S2"),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, e)| entry(i as u64 + 1, e))
        .collect();
        let labels = |run: &RunFacts| -> Vec<Option<String>> {
            run.devices[0]
                .answers
                .iter()
                .map(|a| a.request_type.as_deref().map(str::to_string))
                .collect()
        };
        let status = Some("OSUpdateStatus".to_string());
        assert_eq!(
            labels(&run_facts(&entries)),
            [status.clone(), status.clone()]
        );
        let streamed = Fold::of(&entries).record.finish();
        assert_eq!(labels(&streamed), [status, None]);
    }

    /// The record the runner's fold builds event by event is the one the reports read, on
    /// every golden journal (no golden journal records a command after its answer).
    #[test]
    fn the_folds_record_is_the_whole_journals_on_every_golden_journal() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        let mut n = 0;
        for case in std::fs::read_dir(&root).unwrap() {
            let path = case.unwrap().path().join("journal.jsonl");
            if !path.exists() {
                continue;
            }
            let entries = crate::journal::read(&path).unwrap().entries;
            let mut fold = Fold::default();
            for e in &entries {
                fold.apply(e);
            }
            assert_eq!(
                fold.record.finish(),
                run_facts(&entries),
                "{}",
                path.display()
            );
            n += 1;
        }
        assert!(n >= 5, "golden journals: {n}");
    }
}
