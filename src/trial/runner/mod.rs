//! The trial runner: discover → baseline → eligibility → allocation → consent → dose →
//! follow-up → outcome → reports, as a state machine per device over the journal.
//!
//! Every decision is taken from the one fold of the journal (`journal::fold`: each device's facts
//! and phase), folded once at start and then event by event as the runner appends them, so
//! rerunning the same protocol resumes where the last run stopped. What to do next with a device
//! is a pure function of its facts (`next_action`). Before a ScheduleOSUpdate goes to the MDM its intent is
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
use super::eligibility::{Subject, assess, assess_for};
use super::lab_connection::LabConnection;
use super::ledger::{Ledger, LedgerKind, LedgerRecord};
use super::progress::Progress;
use super::protocol::{DoseMechanism, EnforcementSpec, LoadedProtocol, TargetSpec};
use super::run_lock::{Holder, LockError, RunLock, ShortLock};
use crate::feeds::TrialFeeds;
use crate::journal::fold::{DeviceFacts, Fold, ProbeFacts, REJECTED_REPORT};
use crate::journal::{
    ConsentBy, Entry, Event, Journal, JournalError, ObservationSource, SCHEMA_VERSION,
};
use crate::mdm::backend::{MdmBackend, MdmDose, StoreIdentity};
use crate::mdm::command::{Command, InstallAction, UpdateItem};
use crate::mdm::report::{AvailableUpdate, available_os_updates, parse_report};
use crate::probe::{self, DeviceProbe, ProbeOptions, ProbeStatus, mdm_side};
use base64::Engine;
use std::collections::{HashMap, HashSet};
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
    /// A file the protocol names (a feed) is bad: file:line:col, as the loader says it.
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    #[error("consent not given: {0}")]
    NoConsent(String),
    #[error("interrupted; the journal is flushed — rerun the same command to resume ({0})")]
    Interrupted(String),
    #[error("reports: {0}")]
    Report(String),
    #[error(transparent)]
    Locked(#[from] LockError),
    /// The MDM refuses `lab` (its API key, or its webhooks' signature): `runner::refused`.
    #[error(transparent)]
    MdmRefused(#[from] crate::mdm::access::MdmRefusal),
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
    /// The live views: the board on a terminal, the run folder for `--watch` (issue 15).
    pub progress: super::progress::ProgressOptions,
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

/// Against which MDM store, and when, an intent was made (`DeviceFacts::intents` of the fold).
#[derive(Debug, Default, Clone)]
struct IntentMade {
    store: Option<StoreIdentity>,
    at: String,
}

impl IntentMade {
    /// What the fold knows of the intent `uuid` of a device (nothing: not made in this run).
    fn of(d: &DeviceFacts, uuid: &str) -> IntentMade {
        d.intents
            .get(uuid)
            .map(|i| IntentMade {
                store: i.store.clone(),
                at: i.at.clone(),
            })
            .unwrap_or_default()
    }
}

/// Every dose CommandUUID this run's journal holds for the device (intents, reconciled and
/// uncertain ones): the check before the dose counts them as this run's own.
fn journal_uuids(d: &DeviceFacts) -> HashSet<String> {
    d.doses
        .values()
        .map(|x| x.command_uuid.clone())
        .chain(d.uncertain.iter().cloned())
        .collect()
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
mod dose;
mod enrol;
mod follow_up;
mod next_action;
mod operator;
mod refused;
mod resume;
mod retry;
use next_action::{Action, Moment, next_action};
mod stop_rule;

struct Runner<'a> {
    p: &'a LoadedProtocol,
    journal: Journal,
    ledger: Ledger,
    /// What the journal says so far: folded once from the journal at start, then event by
    /// event as the runner appends them ([`Runner::log_all`]). The one source of truth of
    /// every device's phase; only runtime data (connections, clock readings) lives outside it.
    state: Fold,
    lab: Lab,
    progress: Progress,
    run_dir: PathBuf,
    opts: &'a RunOptions,
    asked_after_download: HashSet<String>,
    /// Each device's last clock reading in the follow-up: host instant, device seconds since
    /// 1970 (not journaled: after a resume the first re-probe starts afresh).
    clock_readings: HashMap<String, (Instant, f64)>,
    /// Each device's network state at its last re-probe and what it was judged from (the
    /// re-probe's lockdown network fields, the time of the DeviceInformation answer used): an
    /// unchanged input is not judged again each round (not journaled; a pure cache).
    network_at_reprobe: HashMap<String, NetworkJudged>,
    /// Set by Ctrl-C; checked between steps so the run stops at a clean point.
    interrupted: Arc<Interrupt>,
    /// The protocol's feeds at the trial date.
    feeds: Option<TrialFeeds>,
    /// The stop rule must be judged again (something was logged since its last verdict).
    stop_dirty: bool,
    /// The stop rule has triggered.
    stop_triggered: bool,
}

/// The lab as the runner holds it: a [`LabConnection`] whose MDM backend is shared, so a call to
/// the MDM can be in flight while the runner journals (the retries of [`Runner::with_retries`]).
struct Lab {
    addrs: Vec<crate::usbmux::UsbmuxAddr>,
    backend: Arc<dyn MdmBackend>,
    time_scale: f64,
    simulated: bool,
    enrolled_check: Option<(String, String, usize)>,
    /// Kept alive with the run (the webhook listener a NanoMDM or MicroMDM backend reads from).
    _webhook: Option<crate::mdm::webhook_receiver::WebhookReceiver>,
    /// The DDM server DDM doses go to.
    ddm: Option<Arc<dyn crate::mdm::ddm_doses::DdmDoses>>,
    /// The first 401/403 any MDM call got (the backend and the DDM server are watched).
    access: Arc<crate::mdm::access::AccessWatch>,
    /// The webhook listener's inbox, for its refused webhooks.
    inbox: Option<Arc<crate::mdm::webhook_receiver::Inbox>>,
    /// The lockdown sessions kept open for the follow-up's re-probes, one per device
    /// (`probe::session`): a re-probe is one GetValue, not a new TLS session.
    sessions: Arc<probe::SessionCache>,
}

impl From<LabConnection> for Lab {
    fn from(c: LabConnection) -> Lab {
        use crate::mdm::access::{AccessWatch, Watched, WatchedDdm};
        let access = AccessWatch::new();
        Lab {
            addrs: c.addrs,
            backend: Arc::new(Watched::new(c.backend, access.clone())),
            time_scale: c.time_scale,
            simulated: c.simulated,
            enrolled_check: c.enrolled_check,
            inbox: c.webhook.as_ref().map(|w| w.inbox.clone()),
            _webhook: c.webhook,
            ddm: c.ddm.map(|d| {
                Arc::new(WatchedDdm::new(d, access.clone()))
                    as Arc<dyn crate::mdm::ddm_doses::DdmDoses>
            }),
            access,
            sessions: Arc::new(probe::SessionCache::new(Duration::from_secs(5))),
        }
    }
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
        // What another process (`lab observe`) appended before these is folded first, in
        // journal order: the fold stays the whole journal's.
        self.fold_foreign();
        for e in &entries {
            self.state.apply(e);
            self.progress.on(e);
        }
        self.progress.after(&self.state);
        Ok(entries)
    }

    /// Fold the entries other processes appended that the journal has read.
    fn fold_foreign(&mut self) {
        for e in self.journal.take_foreign() {
            self.state.apply(&e);
            self.progress.on(&e);
        }
        self.progress.flush();
    }

    fn real(&self, simulated: Duration) -> Duration {
        simulated.div_f64(self.lab.time_scale)
    }
}

/// A re-probe's network state with the inputs it was judged from (`Runner::network_at_reprobe`).
type NetworkJudged = (
    crate::probe::baseline::Network,
    Option<String>,
    crate::journal::fold::baseline_facts::Known<crate::journal::fold::baseline_facts::Network>,
);

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
    // Everything that can be refused as bad input (feeds; the lab, the API key and the webhook
    // when the caller connected) is checked before anything is written: a refused run leaves no
    // folder behind.
    let feeds = load_feeds(p)?;
    let (run_dir, resumed, (run_lock, lock_left_by)) = resume::open_run_folder(p, opts).await?;
    if resumed
        && crate::journal::read(&run_dir.join("journal.jsonl"))?
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
    let state = Fold::of(&loaded.entries);
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
        lab: Lab::from(lab),
        progress: opts.progress.start(
            &run_dir,
            crate::trial::live_view::Limits {
                follow_up_max_s: Some(p.protocol.follow_up.max_duration.0.as_secs_f64()),
            },
        ),
        run_dir: run_dir.clone(),
        opts,
        asked_after_download: HashSet::new(),
        clock_readings: HashMap::new(),
        network_at_reprobe: HashMap::new(),
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
    r.open(lock_left_by)?;
    r.drive().await?;
    test_pause(opts.pauses.before_reports).await;
    Ok(RunSummary {
        run_dir,
        resumed,
        run_lock,
    })
}

impl Runner<'_> {
    /// The run's first lines in this process: started or resumed, and a run lock taken over
    /// from a process that is gone.
    fn open(&mut self, lock_left_by: Option<Holder>) -> Result<(), RunError> {
        if !self.state.started {
            self.log(Event::RunStarted {
                schema: SCHEMA_VERSION,
                trial_id: self.p.protocol.id.clone(),
                protocol_sha256: self.p.sha256.clone(),
                lab_version: env!("CARGO_PKG_VERSION").into(),
                time_scale: Some(self.lab.time_scale),
                simulated: self.lab.simulated,
            })?;
        } else {
            self.log(Event::RunResumed {
                protocol_sha256: self.p.sha256.clone(),
            })?;
        }
        if let Some(h) = lock_left_by {
            eprintln!(
                "lab run: the run lock was left by PID {} on {} (started {}), which is gone: taken over",
                h.pid, h.host, h.started_at
            );
            self.log(Event::RunLockTakenOver {
                previous_pid: h.pid,
                previous_host: h.host,
                previous_started_at: h.started_at,
            })?;
        }
        Ok(())
    }

    /// The trial from wherever the journal stands to `run_finished`: baseline → allocation →
    /// consent → dose → follow-up → final sweep.
    async fn drive(&mut self) -> Result<(), RunError> {
        use crate::trial::protocol::CheckpointMoment;
        // Until allocation the baseline is (re)done for every device without a verdict, so a
        // run killed halfway through the baseline assesses the rest on resume (not only when
        // none was).
        if self.state.consented.is_none() && self.state.devices.values().all(|d| d.arm.is_none()) {
            self.baseline_unless_refused().await?;
        }
        self.allocate()?;
        test_pause(self.opts.pauses.before_consent).await;
        self.consent()?;
        let fresh = !self.state.devices.values().any(|d| !d.doses.is_empty());
        if fresh {
            self.checkpoint(CheckpointMoment::Enrolment, None)?;
        }
        self.resolve_unanswered_intents().await?;
        self.check_mdm_access()?;
        self.first_doses().await?;
        if fresh {
            self.checkpoint(CheckpointMoment::AfterDose, None)?;
        }
        self.follow_up().await?;
        self.final_sweep().await?;
        self.checkpoint(CheckpointMoment::End, None)?;
        self.log(Event::RunFinished)?;
        Ok(())
    }
}

/// The protocol's feeds at the trial date (`feeds.date`, else today, UTC).
fn load_feeds(p: &LoadedProtocol) -> Result<Option<TrialFeeds>, RunError> {
    Ok(p.load_feeds(chrono::Utc::now().date_naive())?)
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
        progress: Default::default(),
    };
    let mut r = Runner {
        p,
        journal,
        ledger: Ledger::new(ledger),
        state: Fold::default(),
        lab: Lab::from(lab),
        progress: Progress::quiet(),
        run_dir: scratch.clone(),
        opts: &opts,
        asked_after_download: HashSet::new(),
        clock_readings: HashMap::new(),
        network_at_reprobe: HashMap::new(),
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
        time_scale: Some(r.lab.time_scale),
        simulated: r.lab.simulated,
    })?;
    let done = r.baseline_unless_refused().await;
    let done = done.and_then(|()| r.check_allocation());
    let entries = done.and_then(|()| Ok(crate::journal::read(r.journal.path())?.entries));
    let _ = std::fs::remove_dir_all(&scratch);
    entries
}

#[cfg(test)]
mod dose_tests;
