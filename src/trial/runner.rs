//! The trial runner: discover → baseline → eligibility → allocation → consent → dose →
//! follow-up → outcome → reports, as a state machine over the journal.
//!
//! Every decision is taken from the journal as replayed at start, so rerunning the same protocol
//! resumes where the last run stopped. Before a ScheduleOSUpdate goes to the MDM its intent is
//! made durable in the journal *and* the lab-wide ledger; a device whose intent exists is never
//! sent that step again. An intent without a recorded answer (a crash in between) is resolved
//! from the MDM's own records when it exposes them: queued → recorded as enqueued; absent from
//! an MDM whose records are complete (the embedded server) → the interrupted enqueue is
//! completed with the intent's own CommandUUID and bytes (the server refuses a duplicate
//! CommandUUID) — only when those records cover the intent (same MDM store, created before it);
//! otherwise it is marked *dose uncertain* and never re-sent.
//!
//! Across processes: a run holds its folder's run lock (`run_lock`) from start to exit, and every
//! dose is decided under the lab-wide dose lock (`Ledger::dose_lock`) by `dose_guard`, from the
//! ledger, the journal and the MDM's records.

use super::allocation::{Candidate, allocate};
use super::dose_guard::{self, Decision};
use super::eligibility::{Subject, assess};
use super::lab_connection::LabConnection;
use super::ledger::{Ledger, LedgerKind, LedgerRecord};
use super::progress::Progress;
use super::protocol::{LoadedProtocol, StepTrigger, TargetSpec, UntilSpec};
use super::run_lock::{Holder, LockError, RunLock, ShortLock};
use crate::feeds::TrialFeeds;
use crate::journal::fold::{ProbeFacts, REJECTED_REPORT, rejected_report_id};
use crate::journal::{
    ConsentBy, Entry, Event, FollowUpEndReason, Journal, JournalError, ObservationSource,
    SCHEMA_VERSION,
};
use crate::mdm::backend::{MdmBackend, MdmDose, StoreIdentity};
use crate::mdm::command::{Command, InstallAction, UpdateItem};
use crate::mdm::report::{AvailableUpdate, available_os_updates, os_update_status, parse_report};
use crate::probe::{self, DeviceProbe, ProbeOptions, ProbeStatus, mdm_side};
use crate::usbmux::{UsbmuxAddr, UsbmuxClient};
use base64::Engine;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Ledger(#[from] super::ledger::LedgerError),
    #[error("results folder {path}: {source}")]
    Results {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("lab: {0}")]
    Lab(String),
    #[error("{0}")]
    BadInput(String),
    #[error("consent not given: {0}")]
    NoConsent(String),
    #[error("interrupted; the journal is flushed — rerun the same command to resume ({0})")]
    Interrupted(String),
    #[error("reports: {0}")]
    Report(String),
    #[error(transparent)]
    Locked(#[from] LockError),
}

pub struct RunOptions {
    pub yes: bool,
    pub results_dir: PathBuf,
    pub ledger: PathBuf,
    /// Ask checkpoint questions and consent on the terminal.
    pub interactive: bool,
    /// Sleeps at fixed points, for the crash campaign (all zero in a real run).
    pub pauses: TestPauses,
    /// Whether a run folder's reports are all written: a folder whose journal has
    /// `run_finished` but whose reports are not (a run killed while the caller wrote them) is
    /// resumed to write them, not started again. The caller writes the reports, so it says.
    pub reports_written: fn(&Path) -> bool,
}

/// Test hooks for the crash campaign (`tests/crash_campaign.rs`): how long to sleep at a point
/// so a SIGKILL can land exactly there. Zero (as in every real run) does nothing. The command
/// line fills them (from `LAB_TEST_PAUSE_*_MS`); the runner reads no environment for them.
#[derive(Debug, Clone, Copy, Default)]
pub struct TestPauses {
    /// In `dose_many`, right after the batch's intents are fsynced in the journal and the
    /// ledger, before any MDM call.
    pub after_intent: Duration,
    /// After allocation, before consent is recorded.
    pub before_consent: Duration,
    /// After `run_finished`, before the runner returns (and its caller writes the reports).
    pub before_reports: Duration,
}

/// What a run leaves for its caller: the folder, and the folder's run lock, to be held while the
/// caller writes the reports (a concurrent `lab report` or rerun waits for them).
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub resumed: bool,
    pub run_lock: RunLock,
}

/// What the journal says so far, per device.
#[derive(Debug, Default, Clone)]
struct Dev {
    host: String,
    device_id: u32,
    /// The few baseline facts the runner needs (the whole probe stays in the journal).
    probe: Option<ProbeFacts>,
    eligible: Option<bool>,
    target: serde_json::Value,
    arm: Option<String>,
    /// step → (command_uuid, answered by the MDM API: Some(true) enqueued, Some(false) failed)
    doses: BTreeMap<u32, (String, Option<bool>)>,
    uncertain: HashSet<String>,
    /// CommandUUID of each intent → the MDM store it was made against and its journal time.
    intent_store: HashMap<String, IntentMade>,
    /// Steps the check before the dose withheld (already dosed by another run).
    withheld: HashSet<u32>,
    results: HashSet<String>,
    outstanding: Option<String>,
    downloaded: bool,
    last_status: Option<String>,
    last_reprobe: Option<(bool, Option<String>, Option<String>)>,
    ended: bool,
    first_dose_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Against which MDM store, and when, an intent was made.
#[derive(Debug, Default, Clone)]
struct IntentMade {
    store: Option<StoreIdentity>,
    at: String,
}

impl Dev {
    /// Every dose CommandUUID this run's journal holds for the device.
    fn journal_uuids(&self) -> HashSet<String> {
        self.doses
            .values()
            .map(|(u, _)| u.clone())
            .chain(self.uncertain.iter().cloned())
            .collect()
    }
}

#[derive(Debug, Default)]
struct State {
    started: bool,
    consented: Option<bool>,
    devices: BTreeMap<String, Dev>,
    order: Vec<String>,
    finished: bool,
    /// The highest number of a rejected report already journaled (the MDM numbers them).
    rejected_max: i64,
}

/// An MDM answer that says for sure the command was not queued: a 4xx other than 408
/// (timeout), 409 (`lab`'s server: that CommandUUID is already queued) and 429 (busy).
fn is_refusal(e: &crate::mdm::backend::BackendError) -> bool {
    matches!(e, crate::mdm::backend::BackendError::Refused { status, .. }
        if (400..500).contains(status) && ![408, 409, 429].contains(status))
}

/// The key of a rejected-report observation (`journal::fold::REJECTED_REPORT`): `report N:
/// note`, its value the raw bytes in base64 (the MDM numbers the reports it kept but could not
/// attribute).
fn rejected_report_key(id: i64, note: &str) -> String {
    format!("report {id}: {note}")
}

fn result_key(uuid: &str, status: &str, received_at: &str) -> String {
    format!("{uuid}|{status}|{received_at}")
}

fn replay(entries: &[Entry]) -> State {
    let mut s = State::default();
    for e in entries {
        replay_entry(&mut s, e);
    }
    s
}

/// The journal's state, read one line at a time (a 1 000-device journal parsed whole took
/// hundreds of MiB at once).
fn replay_journal(path: &Path) -> Result<State, RunError> {
    let mut s = State::default();
    super::journal::stream(path, |_, e| {
        replay_entry(&mut s, &e);
        Ok(())
    })?;
    Ok(s)
}

fn replay_entry(s: &mut State, e: &Entry) {
    {
        match &e.event {
            Event::RunStarted { .. } => s.started = true,
            Event::DeviceDiscovered {
                udid,
                host,
                device_id,
            } => {
                if !s.devices.contains_key(udid) {
                    s.order.push(udid.clone());
                }
                let d = s.devices.entry(udid.clone()).or_default();
                d.host = host.clone();
                d.device_id = *device_id;
            }
            Event::BaselineRecorded { udid, probe } => {
                s.devices.entry(udid.clone()).or_default().probe = Some(ProbeFacts::of(probe))
            }
            Event::EligibilityAssessed {
                udid,
                eligible,
                target,
                ..
            } => {
                let d = s.devices.entry(udid.clone()).or_default();
                d.eligible = Some(*eligible);
                d.target = target.clone();
            }
            Event::Allocated { udid, arm, .. } => {
                s.devices.entry(udid.clone()).or_default().arm = Some(arm.clone())
            }
            Event::ConsentGiven { .. } => s.consented = Some(true),
            Event::ConsentRefused { .. } => s.consented = Some(false),
            Event::DoseIntent {
                udid,
                step,
                command_uuid,
                mdm_store,
                ..
            } => {
                let d = s.devices.entry(udid.clone()).or_default();
                d.doses.insert(*step, (command_uuid.clone(), None));
                d.intent_store.insert(
                    command_uuid.clone(),
                    IntentMade {
                        store: mdm_store.clone(),
                        at: e.at.clone(),
                    },
                );
            }
            Event::DoseReconciled {
                udid,
                step,
                command_uuid,
                ..
            } => {
                let d = s.devices.entry(udid.clone()).or_default();
                d.doses
                    .entry(*step)
                    .or_insert_with(|| (command_uuid.clone(), None));
                d.uncertain.insert(command_uuid.clone());
            }
            Event::DoseWithheld { udid, step, .. } => {
                s.devices
                    .entry(udid.clone())
                    .or_default()
                    .withheld
                    .insert(*step);
            }
            Event::DoseEnqueued {
                udid, command_uuid, ..
            } => {
                let d = s.devices.entry(udid.clone()).or_default();
                for v in d.doses.values_mut() {
                    if &v.0 == command_uuid {
                        v.1 = Some(true);
                    }
                }
                if d.first_dose_at.is_none() {
                    d.first_dose_at = chrono::DateTime::parse_from_rfc3339(&e.at)
                        .ok()
                        .map(|t| t.with_timezone(&chrono::Utc));
                }
            }
            Event::DoseFailed {
                udid, command_uuid, ..
            } => {
                let d = s.devices.entry(udid.clone()).or_default();
                for v in d.doses.values_mut() {
                    if &v.0 == command_uuid {
                        v.1 = Some(false);
                    }
                }
            }
            Event::DoseUncertain {
                udid, command_uuid, ..
            } => {
                s.devices
                    .entry(udid.clone())
                    .or_default()
                    .uncertain
                    .insert(command_uuid.clone());
            }
            Event::CommandSent {
                udid, command_uuid, ..
            } => {
                s.devices.entry(udid.clone()).or_default().outstanding = Some(command_uuid.clone())
            }
            Event::MdmResult {
                udid,
                command_uuid,
                request_type,
                status,
                raw_b64,
                received_at,
            } => {
                let d = s.devices.entry(udid.clone()).or_default();
                d.results
                    .insert(result_key(command_uuid, status, received_at));
                if d.outstanding.as_deref() == Some(command_uuid.as_str()) && status != "NotNow" {
                    d.outstanding = None;
                }
                if request_type.as_deref() == Some("OSUpdateStatus") {
                    apply_status(d, raw_b64);
                }
            }
            Event::DeviceReprobed {
                udid,
                attached,
                product_version,
                build_version,
                ..
            } => {
                s.devices.entry(udid.clone()).or_default().last_reprobe =
                    Some((*attached, product_version.clone(), build_version.clone()))
            }
            Event::FollowUpEnded { udid, .. } => {
                s.devices.entry(udid.clone()).or_default().ended = true
            }
            Event::Observation { kind, key, .. } if kind == REJECTED_REPORT => {
                if let Some(id) = rejected_report_id(key) {
                    s.rejected_max = s.rejected_max.max(id);
                }
            }
            Event::RunFinished => s.finished = true,
            _ => {}
        }
    }
}

fn apply_status(d: &mut Dev, raw_b64: &str) {
    let Ok(rep) = crate::journal::answer::report(raw_b64) else {
        return;
    };
    if let Some(items) = os_update_status(&rep) {
        let target_key = d.target["product_key"].as_str().map(str::to_string);
        for it in items {
            if target_key.is_some() && it.product_key != target_key {
                continue;
            }
            if it.is_downloaded.value == Some(true) {
                d.downloaded = true;
            }
            d.last_status = it.status.clone();
        }
    }
}

/// A run folder of the same protocol that has not finished, if any.
fn find_unfinished(
    results: &Path,
    trial_id: &str,
    sha: &str,
    reports_written: fn(&Path) -> bool,
) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(results)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{trial_id}-")))
        })
        .collect();
    dirs.sort();
    dirs.into_iter().rev().find(|d| {
        let same = std::fs::read(d.join("protocol.yaml"))
            .map(|b| super::protocol::sha256_hex(&b) == sha)
            .unwrap_or(false);
        let finished = super::journal::read(&d.join("journal.jsonl"))
            .map(|l| l.entries.iter().any(|e| e.event == Event::RunFinished))
            .unwrap_or(false);
        // A run killed while writing its reports has `run_finished` but not all its reports:
        // it is completed, not started again.
        same && (!finished || !reports_written(d))
    })
}

struct Runner<'a> {
    p: &'a LoadedProtocol,
    journal: Journal,
    ledger: Ledger,
    state: State,
    lab: LabConnection,
    progress: Progress,
    run_dir: PathBuf,
    opts: &'a RunOptions,
    asked_after_download: HashSet<String>,
    /// Each device's last clock reading in the follow-up: host instant, device seconds since
    /// 1970 (not journaled: after a resume the first re-probe starts afresh).
    clock_readings: HashMap<String, (Instant, f64)>,
    /// Set by Ctrl-C; checked between steps so the run stops at a clean point.
    interrupted: Arc<Interrupt>,
    /// The protocol's feeds at the trial date.
    feeds: Option<TrialFeeds>,
    /// The stop rule must be judged again (something was logged since its last verdict).
    stop_dirty: bool,
    /// The stop rule has triggered.
    stop_triggered: bool,
}

/// Ctrl-C, noticed between steps rather than killing the process mid-write.
#[derive(Default)]
pub struct Interrupt {
    hit: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Interrupt {
    /// Catch Ctrl-C for the rest of the process.
    pub fn install() -> Arc<Interrupt> {
        let i = Arc::new(Interrupt::default());
        let j = i.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                j.hit.store(true, std::sync::atomic::Ordering::SeqCst);
                j.notify.notify_waiters();
            }
        });
        i
    }

    pub fn is_set(&self) -> bool {
        self.hit.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn notified(&self) {
        if !self.is_set() {
            self.notify.notified().await;
        }
    }
}

impl Runner<'_> {
    /// Stop here (journal flushed, run resumable) if the operator pressed Ctrl-C.
    fn check_interrupt(&mut self) -> Result<(), RunError> {
        if self.interrupted.is_set() {
            self.log(Event::RunInterrupted)?;
            return Err(RunError::Interrupted(self.run_dir.display().to_string()));
        }
        Ok(())
    }

    fn log(&mut self, event: Event) -> Result<Entry, RunError> {
        let mut v = self.log_all(vec![event])?;
        Ok(v.pop().expect("one event logged"))
    }

    /// Log events observed or decided together with one fsync (group commit): all of them are
    /// durable before the caller acts on any.
    fn log_all(&mut self, events: Vec<Event>) -> Result<Vec<Entry>, RunError> {
        // Severe adverse events (the stop rule) come from observations and outcomes; queueing a
        // command or an allocation adds none, so those leave the stop rule's last verdict valid.
        if events.iter().any(|e| {
            !matches!(
                e,
                Event::DoseIntent { .. }
                    | Event::DoseEnqueued { .. }
                    | Event::CommandSent { .. }
                    | Event::Allocated { .. }
            )
        }) {
            self.stop_dirty = true;
        }
        let entries = self.journal.append_all(events)?;
        for e in &entries {
            self.progress.on(e);
        }
        Ok(entries)
    }

    fn real(&self, simulated: Duration) -> Duration {
        simulated.div_f64(self.lab.time_scale)
    }

    async fn baseline(&mut self) -> Result<(), RunError> {
        if let Some((url, key, n)) = self.lab.enrolled_check.clone() {
            crate::mdm::backend::wait_enrolled(&url, &key, n, Duration::from_secs(30)).await;
        }
        let (devices, host_errors) = probe::list_all(&self.lab.addrs, Duration::from_secs(5)).await;
        for h in host_errors {
            self.log(Event::Observation {
                udid: None,
                source: ObservationSource::Harness,
                kind: "host_unreachable".into(),
                key: h.host,
                value: h.error,
            })?;
        }
        let new: Vec<_> = devices
            .into_iter()
            .filter(|d| {
                self.state
                    .devices
                    .get(&d.entry.serial_number)
                    .is_none_or(|x| x.eligible.is_none())
            })
            .collect();
        if new.is_empty() && self.state.devices.is_empty() {
            return Err(RunError::Lab("no devices attached".into()));
        }
        let discovered: Vec<Event> = new
            .iter()
            .map(|d| Event::DeviceDiscovered {
                udid: d.entry.serial_number.clone(),
                host: d.host.clone(),
                device_id: d.entry.device_id,
            })
            .collect();
        self.log_all(discovered)?;
        let probes = probe::probe_all(
            new.into_iter().map(|d| (d, None)).collect(),
            ProbeOptions {
                timeout: Duration::from_secs(10),
                ..ProbeOptions::default()
            },
        )
        .await;
        let wait = Duration::from_secs(30);
        // The ledger is read once for the whole baseline, not once per device.
        let ledger_records = self.ledger.records()?;
        let mut probes = probes.into_iter();
        loop {
            let chunk: Vec<DeviceProbe> = probes.by_ref().take(CONCURRENCY).collect();
            if chunk.is_empty() {
                break;
            }
            self.check_interrupt()?;
            // The MDM side of a chunk of devices concurrently (each waits for its device to
            // check in and answer) …
            let answers = {
                let backend = self.lab.backend.as_ref();
                crate::join::join_all(
                    chunk
                        .iter()
                        .map(|p| async move {
                            if p.status == ProbeStatus::Failed {
                                return None;
                            }
                            let version = p.baseline.product_version.get().cloned();
                            let facts =
                                mdm_side::query(backend, &p.udid, version.as_deref(), wait).await;
                            let offered = available_updates(backend, &p.udid, version, wait).await;
                            // The MDM's own dose records, for `already_dosed` (a failed call
                            // leaves the ledger; the check before the dose asks again).
                            let doses = backend.dose_records(&p.udid).await.ok().flatten();
                            Some((facts, offered, doses))
                        })
                        .collect(),
                )
                .await
            };
            // … then recorded in order, one fsync for the chunk, before anything acts on them.
            let mut events = Vec::new();
            for (mut p, answer) in chunk.into_iter().zip(answers) {
                let (offered, offered_error, offered_event, mdm_doses) = match answer {
                    Some((facts, (event, offered, error), doses)) => {
                        p.disagreements = mdm_side::compare(&p.baseline, &facts);
                        p.mdm = Some(facts);
                        (offered, error, event, doses)
                    }
                    None => (None, Some("no baseline".into()), None, None),
                };
                let probe_json = serde_json::to_value(&p).expect("probe serialises");
                events.push(Event::BaselineRecorded {
                    udid: p.udid.clone(),
                    probe: probe_json,
                });
                events.extend(offered_event);
                // Any other run, this protocol's included (a finished run is not resumed, and
                // its devices must not be dosed again), by the ledger or the MDM's records.
                let ledger_hits: Vec<LedgerRecord> = match p.baseline.build_version.get() {
                    Some(b) => match dose_guard::decide(&dose_guard::Facts {
                        udid: &p.udid,
                        build: b,
                        run_dir: &self.run_dir.display().to_string(),
                        journal_uuids: &HashSet::new(),
                        ledger: &ledger_records,
                        mdm: mdm_doses.as_deref(),
                    }) {
                        Decision::AlreadyDosed(ev) => {
                            ev.iter().map(|e| e.as_record(&p.udid, b)).collect()
                        }
                        Decision::Dose | Decision::Uncertain { .. } => Vec::new(),
                    },
                    None => Vec::new(),
                };
                events.push(self.assess(&p, offered.as_deref(), offered_error, ledger_hits));
            }
            self.log_all(events)?;
        }
        Ok(())
    }

    /// The eligibility verdict of one device (with the bug-reproduction waiver).
    fn assess(
        &self,
        p: &DeviceProbe,
        offered: Option<&[AvailableUpdate]>,
        offered_error: Option<String>,
        ledger_hits: Vec<LedgerRecord>,
    ) -> Event {
        let subject = Subject {
            probe: p,
            offered,
            offered_error,
            dosed_by_other_protocols: ledger_hits,
            access_rights: None,
            shared_ipad_user_logged_in: None,
            dep_enrolled: None,
            feeds: self.feeds.as_ref(),
        };
        let mut v = assess(
            &self.p.protocol.eligibility,
            &self.p.protocol.target,
            &subject,
        );
        // A bug-reproduction arm may take a device excluded only for its known-bad version:
        // judge it again with that rule waived, and record the waiver as its reason.
        let waiving: Vec<&str> = self
            .p
            .protocol
            .arms
            .iter()
            .filter(|a| a.accept_known_bad)
            .map(|a| a.name.as_str())
            .collect();
        if !v.eligible
            && !waiving.is_empty()
            && !v.reasons.is_empty()
            && v.reasons.iter().all(|r| r.rule == "known_bad_version")
        {
            let mut spec = self.p.protocol.eligibility.clone();
            spec.known_bad_versions = Some(Vec::new());
            let again = assess(&spec, &self.p.protocol.target, &subject);
            if again.eligible {
                let original = v.reasons.remove(0);
                v = again;
                v.reasons = vec![super::journal::Reason {
                    rule: WAIVED_KNOWN_BAD.into(),
                    message: format!(
                        "{} Waived: taken by the bug-reproduction arm {} to reproduce it.",
                        original.message.trim_end_matches('.'),
                        waiving.join(", ")
                    ),
                    values: original.values,
                }];
            }
        }
        let target = v.target_json();
        Event::EligibilityAssessed {
            udid: p.udid.clone(),
            eligible: v.eligible,
            reasons: v.reasons,
            target,
        }
    }

    fn allocate(&mut self) -> Result<(), RunError> {
        if self.state.consented.is_some() {
            return Ok(());
        }
        let mut waived: HashSet<String> = HashSet::new();
        super::journal::stream(self.journal.path(), |_, e| {
            if let Event::EligibilityAssessed { udid, reasons, .. } = e.event
                && reasons.iter().any(|r| r.rule == WAIVED_KNOWN_BAD)
            {
                waived.insert(udid);
            }
            Ok(())
        })?;
        let candidates: Vec<Candidate> = self
            .state
            .order
            .iter()
            .filter(|u| self.state.devices[*u].eligible == Some(true))
            .map(|u| {
                let probe = self.state.devices[u].probe.clone().unwrap_or_default();
                Candidate {
                    udid: u.clone(),
                    passcode: probe.passcode,
                    model: probe.product_type,
                }
            })
            .collect();
        let seed = self.p.protocol.allocation_seed;
        // Waived devices go only to bug-reproduction arms; the others only to the other arms.
        let (repro, normal): (Vec<Candidate>, Vec<Candidate>) = candidates
            .into_iter()
            .partition(|c| waived.contains(&c.udid));
        let (repro_arms, normal_arms): (Vec<_>, Vec<_>) = self
            .p
            .protocol
            .arms
            .iter()
            .cloned()
            .partition(|a| a.accept_known_bad);
        let mut alloc = Vec::new();
        for (arms, cands) in [(normal_arms, normal), (repro_arms, repro)] {
            if arms.is_empty() || cands.is_empty() {
                continue;
            }
            alloc.extend(allocate(&arms, &cands, seed).map_err(|e| {
                RunError::BadInput(format!("{}: allocation: {e}", self.p.path.display()))
            })?);
        }
        // The allocation is a pure function of the seed and the candidates: a run killed halfway
        // through it logs the missing devices' arms on resume, and must agree with those logged.
        let mut events = Vec::new();
        for (udid, arm) in alloc {
            match &self.state.devices[&udid].arm {
                Some(a) if *a == arm => {}
                Some(a) => {
                    return Err(RunError::Lab(format!(
                        "allocation of {udid}: the journal says arm {a}, the seed gives {arm}"
                    )));
                }
                None => {
                    events.push(Event::Allocated {
                        udid: udid.clone(),
                        arm: arm.clone(),
                        seed,
                    });
                    self.state.devices.get_mut(&udid).expect("known").arm = Some(arm);
                }
            }
        }
        self.log_all(events)?;
        Ok(())
    }

    fn command_for(&self, udid: &str, action: InstallAction) -> Command {
        let d = &self.state.devices[udid];
        let item = match (&self.p.protocol.target, d.target["product_key"].as_str()) {
            (TargetSpec::ProductVersion(v), _) => UpdateItem {
                product_key: None,
                product_version: Some(v.clone()),
                install_action: action,
            },
            (_, Some(k)) => UpdateItem {
                product_key: Some(k.to_string()),
                product_version: None,
                install_action: action,
            },
            (TargetSpec::ProductKey(k), None) => UpdateItem {
                product_key: Some(k.clone()),
                product_version: None,
                install_action: action,
            },
            (TargetSpec::Latest | TargetSpec::LatestForModel, None) => UpdateItem {
                product_key: None,
                product_version: d.target["version"].as_str().map(str::to_string),
                install_action: action,
            },
        };
        Command::ScheduleOSUpdate {
            updates: vec![item],
        }
    }

    fn consent(&mut self) -> Result<(), RunError> {
        match self.state.consented {
            Some(true) => return Ok(()),
            Some(false) => return Err(RunError::NoConsent("refused earlier in this run".into())),
            None => {}
        }
        let allocated: Vec<(String, String)> = self
            .state
            .order
            .iter()
            .filter_map(|u| self.state.devices[u].arm.clone().map(|a| (u.clone(), a)))
            .collect();
        let mut out = std::io::stderr().lock();
        let _ = writeln!(
            out,
            "\nThese devices will receive an IRREVERSIBLE ScheduleOSUpdate (an update cannot be undone):"
        );
        for (u, arm) in &allocated {
            let spec = self.p.protocol.arms.iter().find(|a| &a.name == arm);
            let d = &self.state.devices[u];
            let _ = writeln!(
                out,
                "  {u}  {}  iOS {} → {}  arm {arm}: InstallAction {}{}",
                d.probe
                    .as_ref()
                    .and_then(|p| p.device_name.as_deref())
                    .unwrap_or("?"),
                d.probe
                    .as_ref()
                    .and_then(|p| p.product_version.as_deref())
                    .unwrap_or("?"),
                d.target["version"].as_str().unwrap_or("?"),
                spec.map(|s| s.install_action.as_str()).unwrap_or("?"),
                spec.and_then(|s| s.follow_up_step.as_ref())
                    .map(|f| format!(", then {} once downloaded", f.install_action.as_str()))
                    .unwrap_or_default()
            );
        }
        drop(out);
        let udids: Vec<String> = allocated.iter().map(|x| x.0.clone()).collect();
        if self.opts.yes {
            self.log(Event::ConsentGiven {
                by: ConsentBy::Flag,
                udids,
            })?;
            return Ok(());
        }
        if !self.opts.interactive {
            let reason = "non-interactive run without --yes".to_string();
            self.log(Event::ConsentRefused {
                reason: reason.clone(),
            })?;
            return Err(RunError::NoConsent(reason));
        }
        eprint!("Type the trial id ({}) to proceed: ", self.p.protocol.id);
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        if line.trim() == self.p.protocol.id {
            self.log(Event::ConsentGiven {
                by: ConsentBy::Operator,
                udids,
            })?;
            Ok(())
        } else {
            let reason = format!("the operator typed {:?}", line.trim());
            self.log(Event::ConsentRefused {
                reason: reason.clone(),
            })?;
            Err(RunError::NoConsent(reason))
        }
    }

    /// The protocol's stop rule: once k devices had a severe adverse event, dosing halts.
    fn stopped(&mut self) -> Result<bool, RunError> {
        let Some(k) = self.p.protocol.stop.severe_adverse_events else {
            return Ok(false);
        };
        if self.stop_triggered {
            return Ok(true);
        }
        // Judged again only when something that could add a severe adverse event was logged
        // since (by this run, or by `lab observe` from another process): re-reading the whole
        // journal before every dose made dosing quadratic in the number of devices.
        if !self.stop_dirty && !self.journal.appended_by_others()? {
            return Ok(false);
        }
        self.stop_dirty = false;
        // Streamed: the journal of a 1 000-device run parsed whole took ~150 MiB at once.
        let mut already = false;
        super::journal::stream(self.journal.path(), |_, e| {
            already |= matches!(e.event, Event::StopRuleTriggered { .. });
            Ok(())
        })?;
        if already {
            self.stop_triggered = true;
            return Ok(true);
        }
        let n = crate::report::adverse_events::devices_with_severe_events_in(self.journal.path())
            .map_err(|e| RunError::Report(e.to_string()))?;
        if n as u32 >= k {
            self.log(Event::StopRuleTriggered {
                rule: "severe_adverse_events".into(),
                message: format!(
                    "{n} devices had a severe adverse event (limit {k}): no more doses"
                ),
            })?;
            self.stop_triggered = true;
            return Ok(true);
        }
        Ok(false)
    }

    /// Send each `(udid, step, action)` of a batch (at most [`CONCURRENCY`]): every intent
    /// (journal + ledger, fsynced once for the batch) → the MDM, concurrently → the answers.
    /// A step a device already has an intent for is never sent again.
    async fn dose_many(
        &mut self,
        items: Vec<(String, u32, InstallAction)>,
    ) -> Result<(), RunError> {
        let items: Vec<_> = items
            .into_iter()
            .filter(|(udid, step, _)| {
                let d = &self.state.devices[udid];
                !d.doses.contains_key(step) && !d.withheld.contains(step)
            })
            .collect();
        if items.is_empty() || self.stopped()? {
            return Ok(());
        }
        struct Prepared {
            udid: String,
            version: String,
            cmd: Command,
            violations: Vec<String>,
            rec: LedgerRecord,
            made: IntentMade,
        }
        // The decision and the durable intents, under the lab-wide dose lock: the ledger, this
        // run's journal and the MDM's own records are read, and the intents fsynced, before any
        // other run can decide on these devices (the commands go out after it is released).
        let dose_lock = self.ledger.dose_lock().await?;
        let ledger = self.ledger.records()?;
        let store = self.current_store().await?;
        let udids: Vec<String> = items.iter().map(|x| x.0.clone()).collect();
        let mdm = self.mdm_dose_records(&udids).await?;
        let run_dir = self.run_dir.display().to_string();
        let mut reconciled = Vec::new();
        let mut intents = Vec::new();
        let mut prepared = Vec::new();
        for ((udid, step, action), mdm) in items.into_iter().zip(mdm) {
            let d = &self.state.devices[&udid];
            let arm = d.arm.clone().unwrap_or_default();
            let probe = d.probe.clone().unwrap_or_default();
            let version = probe.product_version.unwrap_or_default();
            let build = probe.build_version.unwrap_or_default();
            let decision = dose_guard::decide(&dose_guard::Facts {
                udid: &udid,
                build: &build,
                run_dir: &run_dir,
                journal_uuids: &d.journal_uuids(),
                ledger: &ledger,
                mdm: mdm.as_deref(),
            });
            match decision {
                Decision::Dose => {}
                Decision::AlreadyDosed(ev) => {
                    reconciled.push(Event::DoseWithheld {
                        udid: udid.clone(),
                        step,
                        rule: super::eligibility::rule::ALREADY_DOSED.into(),
                        reason: format!(
                            "another run already sent this device an update command at build {build}: {}; not sent",
                            ev.iter()
                                .map(dose_guard::Evidence::describe)
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                    });
                    let d = self.state.devices.get_mut(&udid).expect("device known");
                    d.withheld.insert(step);
                    continue;
                }
                Decision::Uncertain {
                    command_uuid,
                    step: lost_step,
                    at,
                } => {
                    reconciled.push(Event::DoseReconciled {
                        udid: udid.clone(),
                        step: lost_step,
                        command_uuid: command_uuid.clone(),
                        starting_build: build.clone(),
                        reason: format!(
                            "the lab-wide ledger holds this run's intent {command_uuid} (step {lost_step}, {at}) but the journal lost its line"
                        ),
                    });
                    reconciled.push(Event::DoseUncertain {
                        udid: udid.clone(),
                        command_uuid: command_uuid.clone(),
                        reason: "intent found only in the lab-wide ledger: whether it reached the MDM is unknown; never re-sent, and no fresh dose".into(),
                    });
                    let d = self.state.devices.get_mut(&udid).expect("device known");
                    d.doses
                        .entry(lost_step)
                        .or_insert_with(|| (command_uuid.clone(), None));
                    d.uncertain.insert(command_uuid);
                    continue;
                }
            }
            let cmd = self.command_for(&udid, action);
            let uuid = format!("lab-dose-{}", uuid_v4());
            let violations: Vec<String> =
                crate::mdm::schema::validate_command(&cmd.to_dict(), &version)
                    .iter()
                    .map(|v| v.to_string())
                    .collect();
            let bytes = cmd.to_plist(&uuid);
            intents.push(Event::DoseIntent {
                udid: udid.clone(),
                arm,
                step,
                command_uuid: uuid.clone(),
                request_type: cmd.request_type().into(),
                install_action: action,
                starting_build: build.clone(),
                command_b64: base64::engine::general_purpose::STANDARD.encode(&bytes),
                mdm_store: store.clone(),
            });
            let rec = LedgerRecord {
                udid: udid.clone(),
                starting_build: build,
                kind: LedgerKind::Intent,
                command_uuid: uuid.clone(),
                step,
                trial_id: self.p.protocol.id.clone(),
                protocol_sha256: self.p.sha256.clone(),
                run_dir: run_dir.clone(),
                at: chrono::Utc::now().to_rfc3339(),
            };
            self.state
                .devices
                .get_mut(&udid)
                .expect("device known")
                .doses
                .insert(step, (uuid, None));
            prepared.push(Prepared {
                udid,
                version,
                cmd,
                violations,
                rec,
                made: IntentMade::default(),
            });
        }
        self.log_all(reconciled)?;
        let logged = self.log_all(intents)?;
        for (x, e) in prepared.iter_mut().zip(&logged) {
            x.made = IntentMade {
                store: store.clone(),
                at: e.at.clone(),
            };
        }
        let recs: Vec<LedgerRecord> = prepared.iter().map(|x| x.rec.clone()).collect();
        self.ledger.append_all(&recs)?;
        drop(dose_lock);
        test_pause(self.opts.pauses.after_intent).await;
        let answers = {
            let backend = self.lab.backend.as_ref();
            crate::join::join_all(
                prepared
                    .iter()
                    .map(|x| async move {
                        if !x.violations.is_empty() {
                            return None;
                        }
                        Some(backend.enqueue(&x.udid, &x.cmd, &x.rec.command_uuid).await)
                    })
                    .collect(),
            )
            .await
        };
        let mut recs = Vec::new();
        let mut events = Vec::new();
        let mut failed = Vec::new();
        let with = |r: &LedgerRecord, kind| LedgerRecord {
            kind,
            at: chrono::Utc::now().to_rfc3339(),
            ..r.clone()
        };
        for (x, answer) in prepared.into_iter().zip(answers) {
            let (udid, command_uuid) = (x.udid.clone(), x.rec.command_uuid.clone());
            match answer {
                None => {
                    recs.push(with(&x.rec, LedgerKind::Failed));
                    events.push(Event::DoseFailed {
                        udid,
                        command_uuid,
                        error: format!(
                            "not sent: the command fails Apple's schema for iOS {}: {}",
                            x.version,
                            x.violations.join("; ")
                        ),
                    });
                }
                Some(Ok(q)) => {
                    recs.push(with(&x.rec, LedgerKind::Enqueued));
                    events.push(Event::DoseEnqueued {
                        udid,
                        command_uuid,
                        pushed: q.pushed,
                        push_error: q.push_error,
                    });
                }
                // Rare: handled one device at a time, with the MDM's records and retries.
                Some(Err(e)) => failed.push((x, e)),
            }
        }
        self.ledger.append_all(&recs)?;
        self.log_all(events)?;
        for (x, e) in failed {
            self.send_dose(
                &x.udid,
                &x.cmd,
                &x.rec.command_uuid.clone(),
                x.rec,
                &x.made,
                Some(e),
            )
            .await?;
        }
        Ok(())
    }

    /// Enqueue a dose whose intent is durable, with bounded retries.
    ///
    /// An attempt that fails without a clear refusal (timeout, dropped connection, HTTP 5xx,
    /// an answer that cannot be read) may still have queued the command, so before any retry
    /// the MDM's own records are asked: queued → the dose is recorded as enqueued; proven not
    /// queued → the same command (same CommandUUID, same bytes — the server refuses a
    /// CommandUUID it already has, so a late first attempt cannot make two) is sent again after
    /// a backoff; no records to ask (NanoMDM, MicroMDM) → dose uncertain, never re-sent. Every
    /// failed attempt is journaled as an observation.
    async fn send_dose(
        &mut self,
        udid: &str,
        cmd: &Command,
        uuid: &str,
        template: LedgerRecord,
        made: &IntentMade,
        mut first_error: Option<crate::mdm::backend::BackendError>,
    ) -> Result<(), RunError> {
        let rec = |kind| LedgerRecord {
            kind,
            at: chrono::Utc::now().to_rfc3339(),
            ..template.clone()
        };
        let api = self.p.protocol.lab.mdm_api.clone();
        let mut wait = api.backoff.0;
        for attempt in 1..=api.attempts {
            let answer = match first_error.take() {
                Some(e) => Err(e),
                None => self.lab.backend.enqueue(udid, cmd, uuid).await,
            };
            let err = match answer {
                Ok(q) => {
                    self.ledger.append(&rec(LedgerKind::Enqueued))?;
                    self.log(Event::DoseEnqueued {
                        udid: udid.into(),
                        command_uuid: uuid.into(),
                        pushed: q.pushed,
                        push_error: q.push_error,
                    })?;
                    return Ok(());
                }
                Err(e) => e,
            };
            self.log(Event::Observation {
                udid: Some(udid.into()),
                source: ObservationSource::Harness,
                kind: "mdm_api_error".into(),
                key: format!(
                    "enqueue {} {uuid} (attempt {attempt} of {})",
                    cmd.request_type(),
                    api.attempts
                ),
                value: err.to_string(),
            })?;
            if matches!(err, crate::mdm::backend::BackendError::NotConnected { .. }) {
                // Never sent: retrying cannot make a second dose.
                if attempt < api.attempts {
                    self.check_interrupt()?;
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2);
                    continue;
                }
                self.ledger.append(&rec(LedgerKind::Failed))?;
                self.log(Event::DoseFailed {
                    udid: udid.into(),
                    command_uuid: uuid.into(),
                    error: format!("not sent in {} attempts: {err}", api.attempts),
                })?;
                return Ok(());
            }
            if is_refusal(&err) {
                self.ledger.append(&rec(LedgerKind::Failed))?;
                self.log(Event::DoseFailed {
                    udid: udid.into(),
                    command_uuid: uuid.into(),
                    error: err.to_string(),
                })?;
                return Ok(());
            }
            match self.ask_records(udid, uuid).await? {
                Some(true) => {
                    self.ledger.append(&rec(LedgerKind::Enqueued))?;
                    self.log(Event::DoseEnqueued {
                        udid: udid.into(),
                        command_uuid: uuid.into(),
                        pushed: false,
                        push_error: Some(format!(
                            "the enqueue call failed ({err}) but the MDM's records show the command queued; not re-sent"
                        )),
                    })?;
                    return Ok(());
                }
                None => {
                    self.log(Event::DoseUncertain {
                        udid: udid.into(),
                        command_uuid: uuid.into(),
                        reason: format!(
                            "{err}; the MDM's records cannot tell whether it was queued; not re-sent"
                        ),
                    })?;
                    return Ok(());
                }
                Some(false) if attempt < api.attempts => {
                    // "Not in the records" proves "not queued" only if the records are those
                    // of the store the intent was made against (the MDM may have restarted
                    // with an empty store meanwhile).
                    let now = self.current_store().await?;
                    if let Err(why) =
                        dose_guard::records_cover(made.store.as_ref(), &made.at, now.as_ref())
                    {
                        self.log(Event::DoseUncertain {
                            udid: udid.into(),
                            command_uuid: uuid.into(),
                            reason: format!(
                                "{err}; absent from the MDM's records, but {why}; not re-sent"
                            ),
                        })?;
                        return Ok(());
                    }
                    self.check_interrupt()?;
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2);
                }
                Some(false) => {
                    if matches!(err, crate::mdm::backend::BackendError::Timeout { .. }) {
                        // A request that timed out may still be on its way to the server.
                        self.log(Event::DoseUncertain {
                            udid: udid.into(),
                            command_uuid: uuid.into(),
                            reason: format!(
                                "not in the MDM's records after {} attempts, the last timed out ({err}); it may still arrive; not re-sent",
                                api.attempts
                            ),
                        })?;
                    } else {
                        self.ledger.append(&rec(LedgerKind::Failed))?;
                        self.log(Event::DoseFailed {
                            udid: udid.into(),
                            command_uuid: uuid.into(),
                            error: format!(
                                "not queued after {} attempts (the MDM's records confirm): {err}",
                                api.attempts
                            ),
                        })?;
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The MDM's store identity now (bounded retries, failed asks are observations). `None`:
    /// the MDM exposes none (NanoMDM, MicroMDM), or never answered.
    async fn current_store(&mut self) -> Result<Option<StoreIdentity>, RunError> {
        let api = self.p.protocol.lab.mdm_api.clone();
        let mut wait = api.backoff.0;
        for attempt in 1..=api.attempts {
            match self.lab.backend.store_identity().await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    self.log(Event::Observation {
                        udid: None,
                        source: ObservationSource::Harness,
                        kind: "mdm_api_error".into(),
                        key: format!("store identity (attempt {attempt} of {})", api.attempts),
                        value: e.to_string(),
                    })?;
                    if attempt < api.attempts {
                        tokio::time::sleep(wait).await;
                        wait = wait.saturating_mul(2);
                    }
                }
            }
        }
        Ok(None)
    }

    /// The ScheduleOSUpdates the MDM's own records hold for each device, asked concurrently,
    /// then again one device at a time with bounded retries for those that failed (each failure
    /// an observation). `None` for a device: the MDM keeps no such records, or never answered —
    /// the ledger and the journal then decide alone.
    async fn mdm_dose_records(
        &mut self,
        udids: &[String],
    ) -> Result<Vec<Option<Vec<MdmDose>>>, RunError> {
        let first = {
            let backend = self.lab.backend.as_ref();
            crate::join::join_all(
                udids
                    .iter()
                    .map(|u| async move { backend.dose_records(u).await })
                    .collect(),
            )
            .await
        };
        let api = self.p.protocol.lab.mdm_api.clone();
        let mut out = Vec::with_capacity(udids.len());
        for (udid, answer) in udids.iter().zip(first) {
            let mut answer = answer;
            let mut wait = api.backoff.0;
            let mut attempt = 1;
            let records = loop {
                match answer {
                    Ok(r) => break r,
                    Err(e) => {
                        self.log(Event::Observation {
                            udid: Some(udid.clone()),
                            source: ObservationSource::Harness,
                            kind: "mdm_api_error".into(),
                            key: format!("dose records (attempt {attempt} of {})", api.attempts),
                            value: e.to_string(),
                        })?;
                        if attempt >= api.attempts {
                            break None;
                        }
                        tokio::time::sleep(wait).await;
                        wait = wait.saturating_mul(2);
                        attempt += 1;
                        answer = self.lab.backend.dose_records(udid).await;
                    }
                }
            };
            out.push(records);
        }
        Ok(out)
    }

    /// The MDM's records on one command, asked with bounded retries (failed asks are
    /// observations too). `None`: the MDM keeps no such records, or never answered.
    async fn ask_records(&mut self, udid: &str, uuid: &str) -> Result<Option<bool>, RunError> {
        let api = self.p.protocol.lab.mdm_api.clone();
        let mut wait = api.backoff.0;
        for attempt in 1..=api.attempts {
            match self.lab.backend.queued(udid, uuid).await {
                Ok(known) => return Ok(known),
                Err(e) => {
                    self.log(Event::Observation {
                        udid: Some(udid.into()),
                        source: ObservationSource::Harness,
                        kind: "mdm_api_error".into(),
                        key: format!("records of {uuid} (attempt {attempt} of {})", api.attempts),
                        value: e.to_string(),
                    })?;
                    if attempt < api.attempts {
                        tokio::time::sleep(wait).await;
                        wait = wait.saturating_mul(2);
                    }
                }
            }
        }
        Ok(None)
    }

    /// Intents without an answer (crash between intent and enqueue): ask the MDM's records,
    /// under the lab-wide dose lock. Queued → recorded as enqueued. Absent, from records that
    /// cover the intent (same store, made since the intent: [`dose_guard::records_cover`]) and
    /// no other run dosed the device meanwhile → the interrupted enqueue is completed (its
    /// ledger intent made sure of first), after the lock is released. Anything else → *dose
    /// uncertain*, never re-sent.
    async fn resolve_unanswered_intents(&mut self) -> Result<(), RunError> {
        let pending: Vec<(String, String)> = self
            .state
            .devices
            .iter()
            .flat_map(|(u, d)| {
                d.doses
                    .values()
                    .filter(|(uuid, ans)| ans.is_none() && !d.uncertain.contains(uuid))
                    .map(|(uuid, _)| (u.clone(), uuid.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let dose_lock = self.ledger.dose_lock().await?;
        let store = self.current_store().await?;
        let mut to_send = Vec::new();
        for (udid, uuid) in pending {
            // `lab`'s own server (also behind an in-process simulated lab) lists every command
            // it ever queued and refuses a second command with a CommandUUID it knows; the
            // webhook-fed NanoMDM and MicroMDM only know the answers that came back.
            match self.ask_records(&udid, &uuid).await? {
                Some(true) => {
                    self.log(Event::DoseEnqueued {
                        udid,
                        command_uuid: uuid,
                        pushed: false,
                        push_error: Some(
                            "recovered after a crash: the MDM's records show the command queued"
                                .into(),
                        ),
                    })?;
                }
                Some(false) => {
                    let made = self.state.devices[&udid]
                        .intent_store
                        .get(&uuid)
                        .cloned()
                        .unwrap_or_default();
                    if let Err(why) =
                        dose_guard::records_cover(made.store.as_ref(), &made.at, store.as_ref())
                    {
                        self.log(Event::DoseUncertain {
                            udid,
                            command_uuid: uuid,
                            reason: format!(
                                "intent recorded, enqueue result unknown (the harness stopped in between); absent from the MDM's records, but {why}; not re-sent"
                            ),
                        })?;
                        continue;
                    }
                    if let Some(x) = self.prepare_interrupted_enqueue(&udid, &uuid).await? {
                        to_send.push((udid, uuid, x, made));
                    }
                }
                None => {
                    self.log(Event::DoseUncertain {
                        udid,
                        command_uuid: uuid,
                        reason: "intent recorded, enqueue result unknown (the harness stopped in between); not re-sent".into(),
                    })?;
                }
            }
        }
        drop(dose_lock);
        for (udid, uuid, (cmd, rec), made) in to_send {
            // The same bounded retries as any dose: a refusal because a late request of the
            // dead harness got there first (the server's 409) is settled by the MDM's records.
            self.send_dose(&udid, &cmd, &uuid, rec, &made, None).await?;
        }
        Ok(())
    }

    /// A crash between an intent and its enqueue, and the MDM's authoritative records (covering
    /// the intent) do not have the command: it never reached the server, so sending it now is
    /// its first and only delivery, not a second dose. Sent with the intent's own CommandUUID
    /// and exact bytes (the server refuses a CommandUUID it already has, so even a request of
    /// the dead harness arriving late cannot make it two); if the bytes cannot be reproduced,
    /// or another run dosed the device meanwhile, it is not sent. Called under the dose lock;
    /// returns what to send once it is released.
    /// (Found by the crash campaign, `tests/crash_campaign.rs`: before, such a device was left
    /// undosed as *dose uncertain* and its outcome differed from an uninterrupted run's.)
    async fn prepare_interrupted_enqueue(
        &mut self,
        udid: &str,
        uuid: &str,
    ) -> Result<Option<(Command, LedgerRecord)>, RunError> {
        let intent = super::journal::read(self.journal.path())?
            .entries
            .into_iter()
            .find_map(|e| match e.event {
                Event::DoseIntent {
                    udid: u,
                    step,
                    command_uuid,
                    install_action,
                    starting_build,
                    command_b64,
                    ..
                } if u == udid && command_uuid == uuid => {
                    Some((step, install_action, starting_build, command_b64))
                }
                _ => None,
            });
        let uncertain = |reason: String| Event::DoseUncertain {
            udid: udid.into(),
            command_uuid: uuid.into(),
            reason,
        };
        let Some((step, action, build, command_b64)) = intent else {
            self.log(uncertain(
                "intent not found in the journal; not re-sent".into(),
            ))?;
            return Ok(None);
        };
        let cmd = Some(self.command_for(udid, action));
        let same_bytes = cmd.as_ref().is_some_and(|c| {
            base64::engine::general_purpose::STANDARD.encode(c.to_plist(uuid)) == command_b64
        });
        let (Some(cmd), true) = (cmd, same_bytes) else {
            self.log(uncertain(
                "intent recorded, enqueue result unknown, and the command cannot be reproduced byte for byte; not re-sent".into(),
            ))?;
            return Ok(None);
        };
        let version = self.state.devices[udid]
            .probe
            .as_ref()
            .and_then(|p| p.product_version.clone())
            .unwrap_or_default();
        let violations = crate::mdm::schema::validate_command(&cmd.to_dict(), &version);
        if !violations.is_empty() {
            // `dose` would have refused it too (the crash came before its DoseFailed).
            let msg = violations
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            self.log(Event::DoseFailed {
                udid: udid.into(),
                command_uuid: uuid.into(),
                error: format!(
                    "not sent: the command fails Apple's schema for iOS {version}: {msg}"
                ),
            })?;
            return Ok(None);
        }
        let run_dir = self.run_dir.display().to_string();
        let intent = LedgerRecord {
            udid: udid.to_string(),
            starting_build: build.clone(),
            kind: LedgerKind::Intent,
            command_uuid: uuid.to_string(),
            step,
            trial_id: self.p.protocol.id.clone(),
            protocol_sha256: self.p.sha256.clone(),
            run_dir: run_dir.clone(),
            at: chrono::Utc::now().to_rfc3339(),
        };
        let ledger = self.ledger.records()?;
        // Another run may have dosed the device since (its decision saw no ledger intent of
        // ours if the kill came before it was appended).
        let mdm = self
            .mdm_dose_records(std::slice::from_ref(&intent.udid))
            .await?
            .pop()
            .flatten();
        let mut journal_uuids = self.state.devices[udid].journal_uuids();
        journal_uuids.insert(uuid.to_string());
        if let Decision::AlreadyDosed(ev) = dose_guard::decide(&dose_guard::Facts {
            udid,
            build: &build,
            run_dir: &run_dir,
            journal_uuids: &journal_uuids,
            ledger: &ledger,
            mdm: mdm.as_deref(),
        }) {
            self.ledger.append(&LedgerRecord {
                kind: LedgerKind::Failed,
                ..intent.clone()
            })?;
            self.log(Event::DoseFailed {
                udid: udid.into(),
                command_uuid: uuid.into(),
                error: format!(
                    "not sent (it never reached the MDM): another run dosed this device at build {build} meanwhile: {}",
                    ev.iter()
                        .map(dose_guard::Evidence::describe)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            })?;
            return Ok(None);
        }
        // The kill may have come between the journal's intent and the ledger's: the ledger
        // holds the intent durably before the command goes out, as in `dose_many`.
        if !ledger
            .iter()
            .any(|r| r.command_uuid == uuid && r.kind == LedgerKind::Intent)
        {
            self.ledger.append(&intent)?;
        }
        Ok(Some((cmd, intent)))
    }

    async fn follow_up(&mut self) -> Result<(), RunError> {
        let fu = self.p.protocol.follow_up.clone();
        let poll = self
            .real(fu.poll_interval.0)
            .max(Duration::from_millis(100));
        let max = self.real(fu.max_duration.0);
        loop {
            let active: Vec<String> = self
                .state
                .order
                .iter()
                .filter(|u| {
                    let d = &self.state.devices[*u];
                    !d.ended && d.doses.values().any(|(_, a)| *a == Some(true))
                })
                .cloned()
                .collect();
            let unanswered_dosed: Vec<String> = self
                .state
                .order
                .iter()
                .filter(|u| {
                    let d = &self.state.devices[*u];
                    !d.ended
                        && !d.doses.is_empty()
                        && !d.doses.values().any(|(_, a)| *a == Some(true))
                })
                .cloned()
                .collect();
            let mut ended = Vec::new();
            for u in unanswered_dosed {
                ended.push(Event::FollowUpEnded {
                    udid: u.clone(),
                    reason: FollowUpEndReason::NoDoseReachedMdm,
                });
                self.state.devices.get_mut(&u).expect("known").ended = true;
            }
            self.log_all(ended)?;
            if active.is_empty() {
                return Ok(());
            }
            let (attached, _) = probe::list_all(&self.lab.addrs, Duration::from_secs(5)).await;
            self.collect_rejected().await?;
            for batch in active.chunks(CONCURRENCY) {
                self.poll_devices(batch, &attached, max).await?;
            }
            self.check_interrupt()?;
            let flag = self.interrupted.clone();
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = flag.notified() => {}
            }
            self.check_interrupt()?;
        }
    }

    /// Journal the MDM's new answers for a device, the backend's notes (lost or duplicated
    /// webhooks) and the reports the MDM rejected. A failed call is an observation.
    async fn collect_results(&mut self, udid: &str) -> Result<(), RunError> {
        let results = match self.lab.backend.results(udid).await {
            Ok(r) => r,
            Err(e) => {
                self.log(Event::Observation {
                    udid: Some(udid.into()),
                    source: ObservationSource::Harness,
                    kind: "mdm_api_error".into(),
                    key: "results".into(),
                    value: e.to_string(),
                })?;
                Vec::new()
            }
        };
        for n in self.lab.backend.take_notes() {
            self.log(Event::Observation {
                udid: Some(n.udid),
                source: ObservationSource::Harness,
                kind: n.kind.into(),
                key: n.key,
                value: n.value,
            })?;
        }
        for r in results {
            let key = result_key(&r.command_uuid, &r.status, &r.received_at);
            if self.state.devices[udid].results.contains(&key) {
                continue;
            }
            let raw_b64 = base64::engine::general_purpose::STANDARD.encode(&r.raw);
            let ev = Event::MdmResult {
                udid: udid.into(),
                command_uuid: r.command_uuid.clone(),
                request_type: r.request_type.clone(),
                status: r.status.clone(),
                raw_b64: raw_b64.clone(),
                received_at: r.received_at.clone(),
            };
            self.log(ev)?;
            let d = self.state.devices.get_mut(udid).expect("known");
            d.results.insert(key);
            if d.outstanding.as_deref() == Some(r.command_uuid.as_str()) && r.status != "NotNow" {
                d.outstanding = None;
            }
            if r.request_type.as_deref() == Some("OSUpdateStatus") {
                apply_status(d, &raw_b64);
            }
        }
        Ok(())
    }

    /// A device clock that moved differently from the host's since the last reading is an
    /// observation (`device_clock_jump`): the install window and deferrals run on it.
    fn clock_reading(&mut self, udid: &str, at: Instant, device_time: f64) -> Option<Event> {
        let (prev_at, prev_time) = self
            .clock_readings
            .insert(udid.to_string(), (at, device_time))?;
        let real = at.saturating_duration_since(prev_at).as_secs_f64();
        let jump =
            crate::evidence::clock::clock_jump(real, device_time - prev_time, self.lab.time_scale)?;
        let when = |t: f64| {
            chrono::DateTime::from_timestamp_millis((t * 1000.0) as i64)
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_else(|| format!("{t}"))
        };
        Some(Event::Observation {
            udid: Some(udid.into()),
            source: ObservationSource::Device,
            kind: "device_clock_jump".into(),
            key: "TimeIntervalSince1970".into(),
            value: format!(
                "the device clock moved {} more than the host's between two probes ({} → {})",
                crate::evidence::clock::describe(jump),
                when(prev_time),
                when(device_time)
            ),
        })
    }

    /// Journal the reports the MDM rejected since the last look (malformed, unknown
    /// CommandUUID): one call for the whole lab. Garbage from a device is evidence: kept raw.
    async fn collect_rejected(&mut self) -> Result<(), RunError> {
        let events = match self.lab.backend.rejected(self.state.rejected_max).await {
            Ok(rejected) => {
                let after = self.state.rejected_max;
                let fresh: Vec<_> = rejected.into_iter().filter(|r| r.id > after).collect();
                if let Some(max) = fresh.iter().map(|r| r.id).max() {
                    self.state.rejected_max = max;
                }
                fresh
                    .into_iter()
                    .map(|r| Event::Observation {
                        udid: r.udid,
                        source: ObservationSource::Mdm,
                        kind: REJECTED_REPORT.into(),
                        key: rejected_report_key(r.id, &r.note),
                        value: base64::engine::general_purpose::STANDARD.encode(&r.raw),
                    })
                    .collect()
            }
            Err(e) => vec![Event::Observation {
                udid: None,
                source: ObservationSource::Harness,
                kind: "mdm_api_error".into(),
                key: "rejected reports".into(),
                value: e.to_string(),
            }],
        };
        self.log_all(events)?;
        Ok(())
    }

    /// After the follow-up: wait for webhooks still in flight, then journal every answer not yet
    /// journaled (a report that came as the last device finished is evidence too).
    async fn final_sweep(&mut self) -> Result<(), RunError> {
        let dosed: Vec<String> = self
            .state
            .order
            .iter()
            .filter(|u| !self.state.devices[*u].doses.is_empty())
            .cloned()
            .collect();
        if dosed.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(self.lab.backend.settle_time()).await;
        for u in dosed {
            self.collect_results(&u).await?;
        }
        self.collect_rejected().await?;
        Ok(())
    }
}

impl Runner<'_> {
    /// One follow-up poll of a batch of devices (at most [`CONCURRENCY`]): their new MDM answers,
    /// rejected reports and USB re-probes are fetched concurrently and journaled with one fsync,
    /// and only then acted on (second step, end of follow-up, the next status query). A failed
    /// MDM call is an observation; the next poll asks again.
    async fn poll_devices(
        &mut self,
        udids: &[String],
        attached: &[probe::AttachedDevice],
        max: Duration,
    ) -> Result<(), RunError> {
        let reprobe = self.p.protocol.follow_up.reprobe;
        let fetched = {
            let backend = self.lab.backend.as_ref();
            crate::join::join_all(
                udids
                    .iter()
                    .map(|udid| async move {
                        let results = backend.results(udid).await;
                        let usb = if reprobe {
                            Some(reprobe_device(udid, attached).await)
                        } else {
                            None
                        };
                        (results, usb)
                    })
                    .collect(),
            )
            .await
        };
        // 1. New MDM answers and 2. the re-probes over USB, recorded before anything acts on them.
        let mut events = Vec::new();
        let mut now_builds = Vec::new();
        let api_error =
            |udid: &str, key: &str, e: &crate::mdm::backend::BackendError| Event::Observation {
                udid: Some(udid.into()),
                source: ObservationSource::Harness,
                kind: "mdm_api_error".into(),
                key: key.into(),
                value: e.to_string(),
            };
        for (udid, (results, usb)) in udids.iter().zip(fetched) {
            let results = results.unwrap_or_else(|e| {
                events.push(api_error(udid, "results", &e));
                Vec::new()
            });
            for r in results {
                let key = result_key(&r.command_uuid, &r.status, &r.received_at);
                if self.state.devices[udid].results.contains(&key) {
                    continue;
                }
                let raw_b64 = base64::engine::general_purpose::STANDARD.encode(&r.raw);
                let d = self.state.devices.get_mut(udid).expect("known");
                d.results.insert(key);
                if d.outstanding.as_deref() == Some(r.command_uuid.as_str()) && r.status != "NotNow"
                {
                    d.outstanding = None;
                }
                if r.request_type.as_deref() == Some("OSUpdateStatus") {
                    apply_status(d, &raw_b64);
                }
                events.push(Event::MdmResult {
                    udid: udid.clone(),
                    command_uuid: r.command_uuid,
                    request_type: r.request_type,
                    status: r.status,
                    raw_b64,
                    received_at: r.received_at,
                });
            }
            let mut now_build = None;
            if let Some(u) = usb {
                now_build = u.build.clone();
                if let Some((at, t)) = u.clock
                    && let Some(ev) = self.clock_reading(udid, at, t)
                {
                    events.push(ev);
                }
                let snapshot = (u.attached, u.version.clone(), u.build.clone());
                let d = self.state.devices.get_mut(udid).expect("known");
                if d.last_reprobe.as_ref() != Some(&snapshot) {
                    d.last_reprobe = Some(snapshot);
                    events.push(Event::DeviceReprobed {
                        udid: udid.clone(),
                        attached: u.attached,
                        product_version: u.version,
                        build_version: u.build,
                        error: u.error,
                    });
                }
            }
            now_builds.push(now_build);
        }
        for n in self.lab.backend.take_notes() {
            events.push(Event::Observation {
                udid: Some(n.udid),
                source: ObservationSource::Harness,
                kind: n.kind.into(),
                key: n.key,
                value: n.value,
            });
        }
        self.log_all(events)?;
        // 3. The protocol's follow-up step, once downloaded (and the after-download questions).
        let mut second = Vec::new();
        for udid in udids {
            if self.state.devices[udid].downloaded && !self.asked_after_download.contains(udid) {
                self.asked_after_download.insert(udid.to_string());
                self.checkpoint(super::protocol::CheckpointMoment::AfterDownload, Some(udid))?;
            }
            let arm = self.state.devices[udid].arm.clone();
            let step2 = arm
                .as_ref()
                .and_then(|a| self.p.protocol.arms.iter().find(|x| &x.name == a))
                .and_then(|a| a.follow_up_step.clone());
            if let Some(s) = step2
                && s.when == StepTrigger::Downloaded
                && self.state.devices[udid].downloaded
                && !self.state.devices[udid].doses.contains_key(&2)
            {
                second.push((udid.clone(), 2, s.install_action));
            }
        }
        self.dose_many(second).await?;
        // 4. Until / time limit.
        let mut ended = Vec::new();
        let mut ask = Vec::new();
        for (udid, now_build) in udids.iter().zip(now_builds) {
            let d = &self.state.devices[udid];
            let done = match &self.p.protocol.follow_up.until {
                UntilSpec::Updated => now_build
                    .as_ref()
                    .is_some_and(|b| super::outcome::target_builds(&d.target).contains(b)),
                UntilSpec::Downloaded => d.downloaded,
                UntilSpec::Status(s) => d.last_status.as_deref() == Some(s.as_str()),
            };
            let elapsed = d
                .first_dose_at
                .map(|t| (chrono::Utc::now() - t).to_std().unwrap_or_default())
                .unwrap_or_default();
            if done || elapsed > max {
                let reason = if done {
                    FollowUpEndReason::reached(&self.p.protocol.follow_up.until)
                } else {
                    FollowUpEndReason::TimeLimit
                };
                ended.push(Event::FollowUpEnded {
                    udid: udid.clone(),
                    reason,
                });
                self.state.devices.get_mut(udid).expect("known").ended = true;
            } else if d.outstanding.is_none() {
                ask.push((
                    udid.clone(),
                    format!("lab-status-{}", crate::tls::random_secret()),
                ));
            }
        }
        self.log_all(ended)?;
        // 5. Ask for the update status (one outstanding at a time: the MDM queue is in order).
        let sent = {
            let backend = self.lab.backend.as_ref();
            crate::join::join_all(
                ask.iter()
                    .map(|(udid, uuid)| async move {
                        backend.enqueue(udid, &Command::OSUpdateStatus, uuid).await
                    })
                    .collect(),
            )
            .await
        };
        let mut events = Vec::new();
        for ((udid, uuid), answer) in ask.into_iter().zip(sent) {
            match answer {
                Ok(_) => {
                    events.push(Event::CommandSent {
                        udid: udid.clone(),
                        command_uuid: uuid.clone(),
                        request_type: "OSUpdateStatus".into(),
                    });
                    self.state
                        .devices
                        .get_mut(&udid)
                        .expect("known")
                        .outstanding = Some(uuid);
                }
                // A status query is harmless: the next poll sends a fresh one.
                Err(e) => events.push(api_error(
                    &udid,
                    &format!("enqueue OSUpdateStatus {uuid}"),
                    &e,
                )),
            }
        }
        self.log_all(events)?;
        Ok(())
    }
}

/// A follow-up re-probe over USB.
struct Reprobe {
    attached: bool,
    version: Option<String>,
    build: Option<String>,
    /// Why the probe failed.
    error: Option<String>,
    /// The device clock (lockdown `TimeIntervalSince1970`) and the host instant it was read at
    /// (the middle of the probe).
    clock: Option<(Instant, f64)>,
}

/// Re-probe a device over USB during follow-up.
async fn reprobe_device(udid: &str, attached: &[probe::AttachedDevice]) -> Reprobe {
    let Some(a) = attached.iter().find(|a| a.entry.serial_number == udid) else {
        return Reprobe {
            attached: false,
            version: None,
            build: None,
            error: None,
            clock: None,
        };
    };
    let client = UsbmuxClient {
        addr: UsbmuxAddr::parse(&a.host).expect("listed host parses"),
        timeout: Duration::from_secs(5),
    };
    let before = Instant::now();
    let p: DeviceProbe = probe::probe_device(
        &client,
        &a.entry,
        &ProbeOptions {
            timeout: Duration::from_secs(5),
            ..ProbeOptions::default()
        },
        None,
    )
    .await;
    let at = before + before.elapsed() / 2;
    Reprobe {
        attached: true,
        version: p.baseline.product_version.value.clone(),
        build: p.baseline.build_version.value.clone(),
        error: p.failure.map(|f| f.message),
        clock: p.device_time.map(|t| (at, t)),
    }
}

impl Runner<'_> {
    /// Ask the protocol's questions for `moment` on the terminal; answers are observations with
    /// source `operator`. Without a terminal the questions are skipped (and that is recorded).
    fn checkpoint(
        &mut self,
        moment: super::protocol::CheckpointMoment,
        udid: Option<&str>,
    ) -> Result<(), RunError> {
        let questions: Vec<_> = self
            .p
            .protocol
            .checkpoints
            .iter()
            .filter(|c| c.at == moment)
            .cloned()
            .collect();
        for q in questions {
            if !self.opts.interactive {
                self.log(Event::Observation {
                    udid: udid.map(str::to_string),
                    source: ObservationSource::Harness,
                    kind: "checkpoint_skipped".into(),
                    key: q.kind.clone(),
                    value: format!("no terminal to ask: {}", q.question),
                })?;
                continue;
            }
            eprint!(
                "[checkpoint{}] {} ",
                udid.map(|u| format!(" {u}")).unwrap_or_default(),
                q.question
            );
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            self.log(Event::Observation {
                udid: udid.map(str::to_string),
                source: ObservationSource::Operator,
                kind: q.kind.clone(),
                key: q.question.clone(),
                value: line.trim().to_string(),
            })?;
        }
        Ok(())
    }
}

/// Ask a device what it offers (AvailableOSUpdates) and wait for the answer: the event recording
/// it (for the caller to log), the parsed offer, and why there is none.
async fn available_updates(
    backend: &dyn MdmBackend,
    udid: &str,
    version: Option<String>,
    wait: Duration,
) -> (Option<Event>, Option<Vec<AvailableUpdate>>, Option<String>) {
    let uuid = format!("lab-avail-{}", crate::tls::random_secret());
    if let Some(v) = &version {
        let violations =
            crate::mdm::schema::validate_command(&Command::AvailableOSUpdates.to_dict(), v);
        if !violations.is_empty() {
            return (
                None,
                None,
                Some(format!(
                    "AvailableOSUpdates not sent: not available on iOS {v}"
                )),
            );
        }
    }
    if let Err(e) = backend
        .enqueue(udid, &Command::AvailableOSUpdates, &uuid)
        .await
    {
        return (
            None,
            None,
            Some(format!("AvailableOSUpdates could not be sent: {e}")),
        );
    }
    let start = Instant::now();
    loop {
        let results = backend.results(udid).await.unwrap_or_default();
        if let Some(r) = results
            .iter()
            .find(|r| r.command_uuid == uuid && r.status != "NotNow")
        {
            let rep = parse_report(&r.raw).ok();
            let updates = rep.as_ref().and_then(available_os_updates);
            let event = Event::UpdatesOffered {
                udid: udid.to_string(),
                command_uuid: uuid.clone(),
                updates: serde_json::json!({
                    "status": r.status,
                    "raw_b64": base64::engine::general_purpose::STANDARD.encode(&r.raw),
                    "updates": updates.as_ref().map(|u| u.iter().map(|x| serde_json::json!({
                        "product_key": x.product_key, "version": x.version, "build": x.build,
                        "download_size": x.download_size, "install_size": x.install_size,
                    })).collect::<Vec<_>>()),
                }),
            };
            let err = (r.status != "Acknowledged").then(|| {
                let chain = rep
                    .map(|x| {
                        x.error_chain
                            .iter()
                            .map(|c| {
                                format!(
                                    "{} {}",
                                    c.domain.clone().unwrap_or_default(),
                                    c.code.unwrap_or_default()
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(" → ")
                    })
                    .unwrap_or_default();
                format!("AvailableOSUpdates answered {} {chain}", r.status)
            });
            return (Some(event), updates, err);
        }
        if start.elapsed() > wait {
            return (
                None,
                None,
                Some(format!("AvailableOSUpdates unanswered within {wait:?}")),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The reason recorded for a known-bad-version device a bug-reproduction arm takes.
pub const WAIVED_KNOWN_BAD: &str = "known_bad_version_waived";

/// How many devices the harness talks to at once (MDM queries, enqueues, re-probes), and the
/// size of a group commit of the journal.
const CONCURRENCY: usize = 64;

/// Sleep for a crash-campaign pause ([`TestPauses`]); zero does nothing.
async fn test_pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

pub use crate::rng::uuid_v4;

/// Run (or resume) a trial on the lab `lab` reaches. The caller writes the reports after it
/// returns, holding the returned run lock.
pub async fn run(
    p: &LoadedProtocol,
    opts: &RunOptions,
    lab: LabConnection,
) -> Result<RunSummary, RunError> {
    let results_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunError::Results {
            path: path.clone(),
            source,
        }
    };
    // Everything that can be refused as bad input (feeds; the lab, the API key and the webhook
    // when the caller connected) is checked before anything is written: a refused run leaves no
    // folder behind.
    let feeds = load_feeds(p)?;
    std::fs::create_dir_all(&opts.results_dir).map_err(results_err(&opts.results_dir))?;
    // Choosing the run folder (resume or create) and taking its run lock happen under a lock of
    // this protocol in this results folder: two processes started at the same instant cannot
    // both create a folder, and the second finds the first's folder locked and stops.
    let choosing = ShortLock::acquire(&opts.results_dir.join(format!(
        ".{}-{}.lock",
        p.protocol.id,
        &p.sha256[..16]
    )))
    .await?;
    let me = Holder::me("lab run");
    let (run_dir, resumed, run_lock) = match find_unfinished(
        &opts.results_dir,
        &p.protocol.id,
        &p.sha256,
        opts.reports_written,
    ) {
        Some(d) => {
            let lock = RunLock::acquire(&d, &me)?;
            (d, true, lock)
        }
        None => {
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
            let d = opts.results_dir.join(format!("{}-{stamp}", p.protocol.id));
            create_private_dir(&d).map_err(results_err(&d))?;
            let lock = RunLock::acquire(&d, &me)?;
            let frozen = d.join("protocol.yaml");
            write_private(&frozen, &p.bytes).map_err(results_err(&frozen))?;
            (d, false, lock)
        }
    };
    drop(choosing);
    // Held until the caller has written the reports (the OS releases it if the process dies).
    let (run_lock, lock_left_by) = run_lock;
    if resumed
        && super::journal::read(&run_dir.join("journal.jsonl"))?
            .entries
            .iter()
            .any(|e| e.event == Event::RunFinished)
    {
        // Killed after `run_finished`, while writing the reports: the journal is complete, so
        // only the reports are written, by the caller (nothing is sent, nothing is appended).
        eprintln!(
            "lab run: {} finished; writing its reports in {}",
            p.protocol.id,
            run_dir.display()
        );
        return Ok(RunSummary {
            run_dir,
            resumed,
            run_lock,
        });
    }
    let (journal, loaded) = Journal::open(&run_dir.join("journal.jsonl"))?;
    let state = replay(&loaded.entries);
    // Devices of an in-process simulated lab exist only for this run: their doses go to a
    // ledger in the run folder, not the lab-wide one (which guards real devices).
    let ledger_path = if p.protocol.lab.simulated.is_some() {
        run_dir.join("ledger.jsonl")
    } else {
        opts.ledger.clone()
    };
    let mut r = Runner {
        p,
        journal,
        ledger: Ledger::new(&ledger_path),
        state,
        lab,
        progress: Progress::new(),
        run_dir: run_dir.clone(),
        opts,
        asked_after_download: HashSet::new(),
        clock_readings: HashMap::new(),
        interrupted: Interrupt::install(),
        feeds,
        stop_dirty: true,
        stop_triggered: false,
    };
    eprintln!(
        "lab run: {} ({}) — {}",
        p.protocol.id,
        &p.sha256[..12],
        if resumed { "resuming" } else { "starting" }
    );
    eprintln!("lab run: results in {}", run_dir.display());
    if !r.state.started {
        r.log(Event::RunStarted {
            schema: SCHEMA_VERSION,
            trial_id: p.protocol.id.clone(),
            protocol_sha256: p.sha256.clone(),
            lab_version: env!("CARGO_PKG_VERSION").into(),
        })?;
    } else {
        r.log(Event::RunResumed {
            protocol_sha256: p.sha256.clone(),
        })?;
    }
    if let Some(h) = lock_left_by {
        eprintln!(
            "lab run: the run lock was left by PID {} on {} (started {}), which is gone: taken over",
            h.pid, h.host, h.started_at
        );
        r.log(Event::RunLockTakenOver {
            previous_pid: h.pid,
            previous_host: h.host,
            previous_started_at: h.started_at,
        })?;
    }
    // Until allocation the baseline is (re)done for every device without a verdict, so a run
    // killed halfway through the baseline assesses the rest on resume (not only when none was).
    if r.state.consented.is_none() && r.state.devices.values().all(|d| d.arm.is_none()) {
        r.baseline().await?;
        r.state = replay_journal(r.journal.path())?;
    }
    r.allocate()?;
    r.state = replay_journal(r.journal.path())?;
    test_pause(opts.pauses.before_consent).await;
    r.consent()?;
    let fresh = !r.state.devices.values().any(|d| !d.doses.is_empty());
    if fresh {
        r.checkpoint(super::protocol::CheckpointMoment::Enrolment, None)?;
    }
    r.resolve_unanswered_intents().await?;
    r.state = replay_journal(r.journal.path())?;
    let allocated: Vec<(String, String)> = r
        .state
        .order
        .iter()
        .filter_map(|u| r.state.devices[u].arm.clone().map(|a| (u.clone(), a)))
        .collect();
    for batch in allocated.chunks(CONCURRENCY) {
        let items = batch
            .iter()
            .map(|(udid, arm)| {
                let action = p
                    .protocol
                    .arms
                    .iter()
                    .find(|a| &a.name == arm)
                    .map(|a| a.install_action)
                    .unwrap_or(InstallAction::Default);
                (udid.clone(), 1, action)
            })
            .collect();
        r.check_interrupt()?;
        r.dose_many(items).await?;
    }
    r.state = replay_journal(r.journal.path())?;
    if fresh {
        r.checkpoint(super::protocol::CheckpointMoment::AfterDose, None)?;
    }
    r.follow_up().await?;
    r.final_sweep().await?;
    r.checkpoint(super::protocol::CheckpointMoment::End, None)?;
    r.log(Event::RunFinished)?;
    test_pause(opts.pauses.before_reports).await;
    Ok(RunSummary {
        run_dir,
        resumed,
        run_lock,
    })
}

/// The protocol's feeds at the trial date (`feeds.date`, else today, UTC).
fn load_feeds(p: &LoadedProtocol) -> Result<Option<TrialFeeds>, RunError> {
    p.load_feeds(chrono::Utc::now().date_naive())
        .map_err(|e| RunError::BadInput(e.to_string()))
}

use crate::private_fs::{create_private_dir, write_private};

/// Is standard input a terminal (consent and checkpoint prompts)?
pub fn stdin_is_tty() -> bool {
    std::io::stdin().is_terminal()
}

/// Baseline and eligibility only: nothing irreversible is sent (the MDM is asked
/// DeviceInformation, SecurityInfo and AvailableOSUpdates). The journal goes to a scratch
/// folder; the events are returned.
pub async fn qualify(
    p: &LoadedProtocol,
    ledger: &Path,
    lab: LabConnection,
) -> Result<Vec<Entry>, RunError> {
    let scratch = std::env::temp_dir().join(format!("lab-qualify-{}", crate::tls::random_secret()));
    create_private_dir(&scratch).map_err(|source| RunError::Results {
        path: scratch.clone(),
        source,
    })?;
    let feeds = load_feeds(p)?;
    let (journal, _) = Journal::open(&scratch.join("journal.jsonl"))?;
    let opts = RunOptions {
        yes: false,
        results_dir: scratch.clone(),
        ledger: ledger.to_path_buf(),
        interactive: false,
        pauses: TestPauses::default(),
        // Never asked: a qualification has no run folder to resume.
        reports_written: |_| true,
    };
    let mut r = Runner {
        p,
        journal,
        ledger: Ledger::new(ledger),
        state: State::default(),
        lab,
        progress: Progress::quiet(),
        run_dir: scratch.clone(),
        opts: &opts,
        asked_after_download: HashSet::new(),
        clock_readings: HashMap::new(),
        interrupted: Arc::new(Interrupt::default()),
        feeds,
        stop_dirty: true,
        stop_triggered: false,
    };
    r.log(Event::RunStarted {
        schema: SCHEMA_VERSION,
        trial_id: p.protocol.id.clone(),
        protocol_sha256: p.sha256.clone(),
        lab_version: env!("CARGO_PKG_VERSION").into(),
    })?;
    r.baseline().await?;
    let entries = super::journal::read(r.journal.path())?.entries;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, event: Event) -> Entry {
        Entry {
            seq,
            at: "2026-12-01T10:00:00Z".into(),
            event,
        }
    }

    #[test]
    fn replay_keeps_reconciled_withheld_and_the_intents_store() {
        let store = StoreIdentity {
            store_id: "s1".into(),
            created_at: "2026-12-01T09:00:00Z".into(),
        };
        let s = replay(&[
            entry(
                1,
                Event::DoseIntent {
                    udid: "A".into(),
                    arm: "a".into(),
                    step: 1,
                    command_uuid: "U1".into(),
                    request_type: "ScheduleOSUpdate".into(),
                    install_action: InstallAction::Default,
                    starting_build: "21F90".into(),
                    command_b64: String::new(),
                    mdm_store: Some(store.clone()),
                },
            ),
            entry(
                2,
                Event::DoseReconciled {
                    udid: "B".into(),
                    step: 1,
                    command_uuid: "U2".into(),
                    starting_build: "21F90".into(),
                    reason: "lost".into(),
                },
            ),
            entry(
                3,
                Event::DoseWithheld {
                    udid: "C".into(),
                    step: 1,
                    rule: "already_dosed".into(),
                    reason: "r".into(),
                },
            ),
        ]);
        let a = &s.devices["A"];
        assert_eq!(a.intent_store["U1"].store.as_ref(), Some(&store));
        assert_eq!(a.intent_store["U1"].at, "2026-12-01T10:00:00Z");
        // A reconciled intent is a dose of that step (never sent again) and uncertain.
        let b = &s.devices["B"];
        assert_eq!(b.doses.get(&1), Some(&("U2".to_string(), None)));
        assert!(b.uncertain.contains("U2"));
        assert!(b.journal_uuids().contains("U2"));
        assert!(s.devices["C"].withheld.contains(&1));
        assert!(s.devices["C"].doses.is_empty());
    }
}

#[cfg(test)]
mod fold_differential;
