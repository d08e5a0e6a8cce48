//! The simulated iPhone's side of ScheduleOSUpdate, OSUpdateStatus and AvailableOSUpdates
//! (mdm brief §1, §2, §7, §8): a pure state machine. Time comes in as arguments (see
//! [`super::clock`]); nothing here reads a clock, sleeps or does I/O, and no command, however
//! malformed, makes it panic — malformed commands get `CommandFormatError`, as on a device.
//!
//! One update is in flight at a time:
//!
//! ```text
//! Idle ─Default/DownloadOnly/InstallASAP─▶ Downloading ─(size/rate)─▶ Downloaded
//! Downloaded ─Default/InstallASAP─▶ Installing                 (no passcode)
//! Downloaded ─Default/InstallASAP─▶ AwaitingUser (prompt) ─approve─▶ Installing
//!                                                     └─"Later"─▶ InstallScheduled (1–3 AM)
//! Installing ─(install)─▶ Restarting (offline) ─(restart)─▶ Idle on the new version
//! ```
//!
//! The reply bodies are built by a few private helpers at the bottom (`result_item`,
//! `status_item`, `available_item`, `error_chain`) so they can be swapped for the shared MDM
//! codecs later.
//!
//! Rules where the sources are silent are marked **Assumption** in the doc comments.
//!
//! Time may go backwards (a fleet's `clock.jumps`, see [`super::clock`]): nothing here
//! subtracts instants without checking their order or converts a negative duration. Deadlines
//! are instants on the device clock, so after a backward jump an install, a restart or the
//! 1–3 AM "Later" window is simply due later (when the clock reaches it again), and a forward
//! jump can make them due at once; a download keeps its progress (see `account_download`).

use super::clock::{after, from_local, local_time};
use super::fleet::{NetworkKind, SimDeviceSpec};
use super::quirks::{Behaviour, DeviceVersion, QuirkTable, Quirks, SplitMix64, Version};
use crate::units::{Bytes, DurationSpec};
use chrono::{DateTime, Duration as ChronoDuration, NaiveTime, Utc};
use plist::{Dictionary, Value};
use serde::Deserialize;
use std::collections::HashSet;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

/// What the update machinery needs to know about the device (mostly from the fleet file).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceUpdateState {
    pub version: String,
    pub build: String,
    pub product_type: String,
    /// Free bytes, not counting a downloaded update asset (see [`OsUpdateSim::disk_free`]).
    pub disk_free: u64,
    pub battery_level: u8,
    pub charging: bool,
    pub external_power: bool,
    pub network: NetworkKind,
    pub passcode: bool,
    pub supervised: bool,
    pub dep_enrolled: bool,
    /// False between a boot and the first unlock (NotNow, Apple "Handling NotNow status
    /// responses").
    pub unlocked_since_boot: bool,
    /// Device local time = UTC + this (for the 1–3 AM "Later" window).
    pub local_offset_minutes: i32,
}

impl DeviceUpdateState {
    /// The state of a fleet device plus the update-specific settings of its spec.
    pub fn from_fleet(d: &SimDeviceSpec, u: &UpdateBehaviourSpec) -> DeviceUpdateState {
        DeviceUpdateState {
            version: d.ios_version.clone(),
            build: d.ios_build.clone(),
            product_type: d.product_type.clone(),
            disk_free: d.disk_free,
            battery_level: d.battery_level,
            charging: d.charging,
            external_power: d.external_power,
            network: d.network,
            passcode: d.passcode,
            supervised: d.supervised,
            dep_enrolled: u.dep_enrolled,
            unlocked_since_boot: u.unlocked_since_boot,
            local_offset_minutes: u.local_offset_minutes,
        }
    }
}

/// One update the simulated Apple servers offer.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    pub version: String,
    pub build: String,
    /// `iOSUpdate<build>` unless given (Apple's example `iOSUpdate17A576`, brief §1).
    pub product_key: String,
    pub download_size: u64,
    pub install_size: u64,
    /// Models it applies to (`iPhone12,1`); `None` = all. Some releases are model-specific
    /// (field brief §6: 15.1.1 only for iPhone 12/13).
    pub product_types: Option<Vec<String>>,
    pub is_critical: bool,
    pub restart_required: bool,
    pub allows_install_later: bool,
}

impl CatalogEntry {
    fn applies_to(&self, product_type: &str) -> bool {
        self.product_types
            .as_ref()
            .is_none_or(|l| l.iter().any(|p| p == product_type))
    }
}

/// What the simulated user does when a passcode device asks to install (brief §0.4).
#[derive(Debug, Clone, PartialEq)]
pub enum UserBehaviour {
    /// Enters the passcode this long after the prompt appears.
    Approve { after: Duration },
    /// Taps "Remind Me Later" `times` times, each time the prompt returns after the defer
    /// interval; then behaves as `then`.
    Defer {
        times: u32,
        then: Box<UserBehaviour>,
    },
    /// Picks "Later": the device installs in the next 1–3 AM window, device local time
    /// (rdar 45414727).
    Later,
    /// Never answers the prompt.
    Never,
}

/// Durations and rates of the simulated update.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// Bytes per simulated second.
    pub download_rate: u64,
    pub install: Duration,
    pub restart: Duration,
    /// How long after a deferral the prompt comes back.
    pub defer_interval: Duration,
    /// How long after a restart the user of a passcode device unlocks it; `None`: never (the
    /// caller may use [`OsUpdateSim::set_unlocked`]).
    pub unlock_after_restart: Option<Duration>,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            download_rate: 20_000_000,
            install: Duration::from_secs(600),
            restart: Duration::from_secs(180),
            defer_interval: Duration::from_secs(3600),
            unlock_after_restart: Some(Duration::from_secs(60)),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpdateConfig {
    pub catalogue: Vec<CatalogEntry>,
    pub user: UserBehaviour,
    pub timing: Timing,
}

// ---------------------------------------------------------------------------------------------
// Spec types (YAML, to be embedded in the fleet file)
// ---------------------------------------------------------------------------------------------

/// The `update:` section of a fleet device:
///
/// ```yaml
/// update:
///   catalogue:
///     - { version: "17.6", build: 21G80, download_size: 6.4 GB, install_size: 2.9 GB }
///     - { version: "18.0", build: 22A3354, download_size: 7 GB, install_size: 3 GB,
///         product_types: ["iPhone12,1"], is_critical: false, restart_required: true,
///         allows_install_later: true, product_key: iOSUpdate22A3354 }
///   user: { approve: { after: 30s } }  # later | never | { defer: { times: 2, then: later } }
///   download_rate: 20 MB               # per simulated second
///   install_duration: 10m
///   restart_duration: 3m
///   defer_interval: 1h
///   unlock_after_restart: 1m           # passcode devices; absent = default 1m
///   dep_enrolled: false
///   unlocked_since_boot: true
///   local_offset_minutes: 120          # device local time = UTC + 2 h
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBehaviourSpec {
    #[serde(default)]
    pub catalogue: Vec<CatalogEntrySpec>,
    #[serde(default = "default_user")]
    pub user: UserBehaviourSpec,
    pub download_rate: Option<Bytes>,
    pub install_duration: Option<DurationSpec>,
    pub restart_duration: Option<DurationSpec>,
    pub defer_interval: Option<DurationSpec>,
    pub unlock_after_restart: Option<DurationSpec>,
    #[serde(default)]
    pub dep_enrolled: bool,
    #[serde(default = "yes")]
    pub unlocked_since_boot: bool,
    #[serde(default)]
    pub local_offset_minutes: i32,
}

impl Default for UpdateBehaviourSpec {
    fn default() -> Self {
        UpdateBehaviourSpec {
            catalogue: Vec::new(),
            user: default_user(),
            download_rate: None,
            install_duration: None,
            restart_duration: None,
            defer_interval: None,
            unlock_after_restart: None,
            dep_enrolled: false,
            unlocked_since_boot: true,
            local_offset_minutes: 0,
        }
    }
}

fn default_user() -> UserBehaviourSpec {
    UserBehaviourSpec::Approve { after: None }
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntrySpec {
    pub version: String,
    pub build: String,
    pub product_key: Option<String>,
    pub download_size: Bytes,
    pub install_size: Bytes,
    pub product_types: Option<Vec<String>>,
    #[serde(default)]
    pub is_critical: bool,
    #[serde(default = "yes")]
    pub restart_required: bool,
    #[serde(default)]
    pub allows_install_later: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum UserBehaviourSpec {
    /// `{ approve: { after: 30s } }`; `after` defaults to 0.
    Approve {
        after: Option<DurationSpec>,
    },
    /// `{ defer: { times: 2, then: later } }`
    Defer {
        times: u32,
        then: Box<UserBehaviourSpec>,
    },
    Later,
    Never,
}

impl UserBehaviourSpec {
    pub fn to_behaviour(&self) -> UserBehaviour {
        match self {
            UserBehaviourSpec::Approve { after } => UserBehaviour::Approve {
                after: after.map(|d| d.0).unwrap_or_default(),
            },
            UserBehaviourSpec::Defer { times, then } => UserBehaviour::Defer {
                times: *times,
                then: Box::new(then.to_behaviour()),
            },
            UserBehaviourSpec::Later => UserBehaviour::Later,
            UserBehaviourSpec::Never => UserBehaviour::Never,
        }
    }
}

impl CatalogEntrySpec {
    pub fn to_entry(&self) -> Result<CatalogEntry, String> {
        Version::parse(&self.version)
            .map_err(|e| format!("catalogue version {:?}: {e}", self.version))?;
        if self.build.trim().is_empty() {
            return Err(format!(
                "catalogue entry {:?} has an empty build",
                self.version
            ));
        }
        Ok(CatalogEntry {
            version: self.version.clone(),
            build: self.build.clone(),
            product_key: self
                .product_key
                .clone()
                .unwrap_or_else(|| format!("iOSUpdate{}", self.build)),
            download_size: self.download_size.0,
            install_size: self.install_size.0,
            product_types: self.product_types.clone(),
            is_critical: self.is_critical,
            restart_required: self.restart_required,
            allows_install_later: self.allows_install_later,
        })
    }
}

impl UpdateBehaviourSpec {
    /// Checked runtime configuration; the error names the offending field.
    pub fn config(&self) -> Result<UpdateConfig, String> {
        let d = Timing::default();
        let rate = self.download_rate.map(|b| b.0).unwrap_or(d.download_rate);
        if rate == 0 {
            return Err("download_rate must be above 0".into());
        }
        Ok(UpdateConfig {
            catalogue: self
                .catalogue
                .iter()
                .map(CatalogEntrySpec::to_entry)
                .collect::<Result<_, _>>()?,
            user: self.user.to_behaviour(),
            timing: Timing {
                download_rate: rate,
                install: self.install_duration.map(|x| x.0).unwrap_or(d.install),
                restart: self.restart_duration.map(|x| x.0).unwrap_or(d.restart),
                defer_interval: self.defer_interval.map(|x| x.0).unwrap_or(d.defer_interval),
                unlock_after_restart: self
                    .unlock_after_restart
                    .map(|x| x.0)
                    .or(d.unlock_after_restart),
            },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------------

/// The device's answer to one command.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `status` is the envelope Status (`Acknowledged`, `Error`, `NotNow`,
    /// `CommandFormatError`); `body` holds the command-specific keys (`UpdateResults`,
    /// `OSUpdateStatus`, `AvailableOSUpdates`) and `ErrorChain`, without UDID/CommandUUID.
    Reply { status: String, body: Dictionary },
    /// The device sends nothing (rebooting, or the 11.3.1 quirk).
    NoReply,
}

impl Outcome {
    pub fn status(&self) -> Option<&str> {
        match self {
            Outcome::Reply { status, .. } => Some(status),
            Outcome::NoReply => None,
        }
    }
    pub fn body(&self) -> Option<&Dictionary> {
        match self {
            Outcome::Reply { body, .. } => Some(body),
            Outcome::NoReply => None,
        }
    }
}

/// What happened on the device between calls, for logs and for the caller (USB detach etc.).
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateEvent {
    /// Fraction 0.0–1.0 of the download.
    DownloadProgress(f64),
    Downloaded,
    /// The passcode prompt to install appears.
    PromptShown,
    UserDeferred,
    /// The user picked "Later"; the install starts at `at`.
    InstallScheduled {
        at: DateTime<Utc>,
    },
    InstallStarted,
    /// An install could not start (`InstallInsufficientPower` / `InstallInsufficientSpace`);
    /// the update stays downloaded.
    InstallBlocked {
        status: String,
    },
    /// The device reboots: detached from USB, no check-ins, until `back_at`.
    RestartBegins {
        back_at: DateTime<Utc>,
    },
    RestartEnds {
        version: String,
        build: String,
    },
    /// The simulated user unlocked the device after a restart.
    FirstUnlock,
}

// ---------------------------------------------------------------------------------------------
// The state machine
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum UserStep {
    /// Show the prompt at `at` and let the user react.
    Prompt,
    /// The user enters the passcode at `at`.
    Approve,
    /// The user never answers.
    Wait,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Idle,
    Downloading {
        idx: usize,
        done: f64,
    },
    Downloaded {
        idx: usize,
    },
    AwaitingUser {
        idx: usize,
        user: UserBehaviour,
        step: UserStep,
        at: DateTime<Utc>,
    },
    InstallScheduled {
        idx: usize,
        at: DateTime<Utc>,
    },
    Installing {
        idx: usize,
        until: DateTime<Utc>,
    },
    Restarting {
        idx: usize,
        back_at: DateTime<Utc>,
    },
}

impl Phase {
    fn idx(&self) -> Option<usize> {
        match *self {
            Phase::Idle => None,
            Phase::Downloading { idx, .. }
            | Phase::Downloaded { idx }
            | Phase::AwaitingUser { idx, .. }
            | Phase::InstallScheduled { idx, .. }
            | Phase::Installing { idx, .. }
            | Phase::Restarting { idx, .. } => Some(idx),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    Default,
    DownloadOnly,
    InstallAsap,
    /// `NotifyOnly`, `InstallLater`, `InstallForceRestart`: macOS only (brief §1).
    MacOnly,
}

/// Whether handling an item had the effect the 11.4 quirk hides behind an Error reply.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Effect {
    None,
    DownloadStarted,
    Prompted,
}

struct ItemResult {
    product_key: String,
    install_action: &'static str,
    status: &'static str,
    effect: Effect,
}

/// The simulated device's update machinery.
#[derive(Debug, Clone)]
pub struct OsUpdateSim {
    state: DeviceUpdateState,
    config: UpdateConfig,
    quirks: Quirks,
    rng: SplitMix64,
    phase: Phase,
    /// Time up to which download progress has been accounted.
    progress_at: Option<DateTime<Utc>>,
    unlock_at: Option<DateTime<Utc>>,
    events: Vec<UpdateEvent>,
    last_progress: Option<f64>,
    /// ScheduleOSUpdate CommandUUIDs handled since the last boot.
    handled: HashSet<String>,
    /// ScheduleOSUpdate CommandUUIDs handled before a restart (brief §0.3).
    before_restart: HashSet<String>,
    /// Where the quirks of the version a restart brings come from (table, fleet seed, UDID);
    /// `None`: the quirks given to `new` stay.
    requirk: Option<(&'static QuirkTable, u64, String)>,
}

const ACKNOWLEDGED: &str = "Acknowledged";
const ERROR: &str = "Error";
const NOT_NOW: &str = "NotNow";
const FORMAT_ERROR: &str = "CommandFormatError";

/// **Assumption** (no primary source; brief §7 "Not verified"): downloads and installs need
/// 50 % battery unless on external power. The only public trace of a 50 % threshold is the
/// precondition list of rdar 45414692 ("plugged in, >50% battery").
const MIN_BATTERY_ON_BATTERY_POWER: u8 = 50;

/// `MCMDMErrorDomain` code mdmb uses (imitating iOS) for unknown commands (brief §3).
const UNKNOWN_COMMAND_CODE: i64 = 12021;
/// **Assumption**: the code a device sends when it refuses ScheduleOSUpdate for lack of
/// supervision / DEP. No source gives the real one; a stand-in in Apple's MDM error domain.
const NOT_ELIGIBLE_CODE: i64 = 12070;

impl OsUpdateSim {
    /// `seed` drives the simulator's own choices (the minute in the 1–3 AM window); derive it
    /// with [`super::quirks::device_seed`] from the fleet seed and the UDID.
    pub fn new(
        state: DeviceUpdateState,
        config: UpdateConfig,
        quirks: Quirks,
        seed: u64,
    ) -> OsUpdateSim {
        OsUpdateSim {
            state,
            config,
            quirks,
            rng: SplitMix64::new(seed),
            phase: Phase::Idle,
            progress_at: None,
            unlock_at: None,
            events: Vec::new(),
            last_progress: None,
            handled: HashSet::new(),
            before_restart: HashSet::new(),
            requirk: None,
        }
    }

    /// Quirk rows are per iOS version: after an update's restart the device has the rows of
    /// its new version, drawn from `table` as [`QuirkTable::for_device`] does.
    pub fn with_quirks_from(
        mut self,
        table: &'static QuirkTable,
        fleet_seed: u64,
        udid: &str,
    ) -> Self {
        self.requirk = Some((table, fleet_seed, udid.to_string()));
        self
    }

    // --- accessors and setters ---------------------------------------------------------------

    /// Current (OS version, build).
    pub fn version(&self) -> (&str, &str) {
        (&self.state.version, &self.state.build)
    }

    /// Free bytes as the device reports them: the downloaded (or downloading) asset takes space
    /// until the install has finished. **Assumption**: after the restart the asset is gone and
    /// the new OS takes as much space as the old one.
    pub fn disk_free(&self) -> u64 {
        self.state.disk_free.saturating_sub(self.asset_bytes())
    }

    pub fn state(&self) -> &DeviceUpdateState {
        &self.state
    }

    pub fn quirks(&self) -> &Quirks {
        &self.quirks
    }

    /// True while the device reboots into the new OS: detached from USB, no check-ins, no
    /// replies. Computed from `now` alone, so it is right even before the next `tick`.
    pub fn offline(&self, now: DateTime<Utc>) -> bool {
        match self.phase {
            Phase::Restarting { back_at, .. } => now < back_at,
            Phase::Installing { until, .. } => {
                now >= until && now < after(until, self.config.timing.restart)
            }
            _ => false,
        }
    }

    /// Whether a ScheduleOSUpdate with this CommandUUID was handled before the last restart;
    /// if the server re-sends it, the device answers Acknowledged without UpdateResults.
    pub fn answered_before_restart(&self, command_uuid: &str) -> bool {
        self.before_restart.contains(command_uuid)
    }

    /// Call `tick(now)` first so that progress up to now is accounted at the old values.
    pub fn set_power(&mut self, battery_level: u8, charging: bool, external_power: bool) {
        self.state.battery_level = battery_level.min(100);
        self.state.charging = charging;
        self.state.external_power = external_power;
    }

    /// A download stalls (keeps its progress) while the network is `None`. Call `tick(now)`
    /// first.
    pub fn set_network(&mut self, network: NetworkKind) {
        self.state.network = network;
    }

    /// Free bytes, not counting the update asset.
    pub fn set_disk_free(&mut self, bytes: u64) {
        self.state.disk_free = bytes;
    }

    pub fn set_unlocked(&mut self, unlocked_since_boot: bool) {
        self.state.unlocked_since_boot = unlocked_since_boot;
        if unlocked_since_boot {
            self.unlock_at = None;
        }
    }

    // --- time --------------------------------------------------------------------------------

    /// Advances downloads, the simulated user, installs and restarts to `now`, and returns what
    /// happened since the last call (including what `handle` set off).
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<UpdateEvent> {
        self.advance(now);
        if let Phase::Downloading { idx, done } = self.phase {
            let f = self.fraction(idx, done);
            if self.last_progress != Some(f) {
                self.last_progress = Some(f);
                self.events.push(UpdateEvent::DownloadProgress(f));
            }
        }
        std::mem::take(&mut self.events)
    }

    fn advance(&mut self, now: DateTime<Utc>) {
        // Bounded: each step moves simulated time forward or changes phase.
        for _ in 0..100_000 {
            match self.next_due() {
                Some(t) if t <= now => {
                    self.account_download(t);
                    self.fire(t);
                }
                _ => break,
            }
        }
        self.account_download(now);
    }

    fn next_due(&self) -> Option<DateTime<Utc>> {
        let phase_t = match &self.phase {
            Phase::Downloading { idx, done } => {
                if self.state.network == NetworkKind::None {
                    None
                } else {
                    let size = self.entry(*idx).download_size as f64;
                    let secs = ((size - done).max(0.0)) / self.config.timing.download_rate as f64;
                    self.progress_at.map(|p| {
                        p.checked_add_signed(secs_to_chrono(secs))
                            .unwrap_or(DateTime::<Utc>::MAX_UTC)
                    })
                }
            }
            Phase::AwaitingUser { step, at, .. } => (*step != UserStep::Wait).then_some(*at),
            Phase::InstallScheduled { at, .. } => Some(*at),
            Phase::Installing { until, .. } => Some(*until),
            Phase::Restarting { back_at, .. } => Some(*back_at),
            Phase::Idle | Phase::Downloaded { .. } => None,
        };
        match (phase_t, self.unlock_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Credits download progress from `progress_at` to `to`. The simulation has no time but
    /// the device clock, so a forward clock jump completes part of a download at once; a
    /// backward one never takes progress away, and counting resumes from the earlier time
    /// (otherwise the download would freeze until the clock caught up again).
    fn account_download(&mut self, to: DateTime<Utc>) {
        let Some(from) = self.progress_at else {
            return;
        };
        if to < from {
            self.progress_at = Some(to);
            return;
        }
        if to == from {
            return;
        }
        if let Phase::Downloading { idx, done } = self.phase
            && self.state.network != NetworkKind::None
        {
            let secs = (to - from).num_milliseconds() as f64 / 1000.0;
            let size = self.entry(idx).download_size as f64;
            let d = (done + secs * self.config.timing.download_rate as f64).min(size);
            self.phase = Phase::Downloading { idx, done: d };
        }
        self.progress_at = Some(to);
    }

    /// Carries out the transition due at `t`.
    fn fire(&mut self, t: DateTime<Utc>) {
        if let Some(u) = self.unlock_at
            && u <= t
        {
            self.unlock_at = None;
            self.state.unlocked_since_boot = true;
            self.events.push(UpdateEvent::FirstUnlock);
            return;
        }
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Downloading { idx, .. } => {
                self.last_progress = Some(1.0);
                self.events.push(UpdateEvent::DownloadProgress(1.0));
                self.events.push(UpdateEvent::Downloaded);
                self.phase = Phase::Downloaded { idx };
            }
            Phase::AwaitingUser {
                idx,
                user,
                step: UserStep::Prompt,
                ..
            } => {
                self.events.push(UpdateEvent::PromptShown);
                self.user_reacts(idx, user, t);
            }
            Phase::AwaitingUser {
                idx,
                step: UserStep::Approve,
                ..
            }
            | Phase::InstallScheduled { idx, .. } => self.try_install(idx, t),
            Phase::Installing { idx, until } => {
                let back_at = after(until, self.config.timing.restart);
                self.events.push(UpdateEvent::RestartBegins { back_at });
                self.phase = Phase::Restarting { idx, back_at };
            }
            Phase::Restarting { idx, back_at } => self.finish_restart(idx, back_at),
            other => self.phase = other,
        }
    }

    /// The user's reaction to a prompt shown at `t` (Apple's note, brief §0.4: limited
    /// deferrals, then a prompt at every return to the Home Screen).
    fn user_reacts(&mut self, idx: usize, mut user: UserBehaviour, t: DateTime<Utc>) {
        loop {
            match user {
                UserBehaviour::Approve { after: delay } => {
                    self.phase = Phase::AwaitingUser {
                        idx,
                        user: UserBehaviour::Approve { after: delay },
                        step: UserStep::Approve,
                        at: after(t, delay),
                    };
                    return;
                }
                UserBehaviour::Defer { times: 0, then } => user = *then,
                UserBehaviour::Defer { times, then } => {
                    self.events.push(UpdateEvent::UserDeferred);
                    self.phase = Phase::AwaitingUser {
                        idx,
                        user: UserBehaviour::Defer {
                            times: times - 1,
                            then,
                        },
                        step: UserStep::Prompt,
                        at: after(t, self.config.timing.defer_interval),
                    };
                    return;
                }
                UserBehaviour::Later => {
                    let at = self.next_night_window(t);
                    self.events.push(UpdateEvent::InstallScheduled { at });
                    self.phase = Phase::InstallScheduled { idx, at };
                    return;
                }
                UserBehaviour::Never => {
                    self.phase = Phase::AwaitingUser {
                        idx,
                        user: UserBehaviour::Never,
                        step: UserStep::Wait,
                        at: t,
                    };
                    return;
                }
            }
        }
    }

    /// A seeded minute in the next 01:00–03:00 window, device local time (rdar 45414727). Before
    /// 01:00 that is the same night, otherwise the next.
    fn next_night_window(&mut self, t: DateTime<Utc>) -> DateTime<Utc> {
        let off = self.state.local_offset_minutes;
        let local = local_time(t, off);
        let one_am = NaiveTime::from_hms_opt(1, 0, 0).unwrap_or_default();
        let mut day = local.date();
        if local.time() >= one_am {
            day = day.succ_opt().unwrap_or(day);
        }
        let minute = self.rng.below(120) as i64;
        from_local(day.and_time(one_am), off) + ChronoDuration::minutes(minute)
    }

    /// Starts the install if power and space allow, else back to Downloaded (**Assumption**:
    /// the device does not retry on its own; the server has to ask again).
    fn try_install(&mut self, idx: usize, t: DateTime<Utc>) {
        match self.install_blocker(idx) {
            Some(status) => {
                self.events.push(UpdateEvent::InstallBlocked {
                    status: status.into(),
                });
                self.phase = Phase::Downloaded { idx };
            }
            None => self.start_install(idx, t),
        }
    }

    fn start_install(&mut self, idx: usize, t: DateTime<Utc>) {
        self.events.push(UpdateEvent::InstallStarted);
        self.phase = Phase::Installing {
            idx,
            until: after(t, self.config.timing.install),
        };
    }

    /// The device comes back on the new version. Before the first unlock a passcode device
    /// answers NotNow (a device without passcode is unlocked at boot); the simulated user
    /// unlocks after `unlock_after_restart`. The server will re-send the command that was in
    /// flight (brief §0.3).
    fn finish_restart(&mut self, idx: usize, back_at: DateTime<Utc>) {
        let e = self.entry(idx).clone();
        self.state.version = e.version.clone();
        self.state.build = e.build.clone();
        if let Some((table, seed, udid)) = &self.requirk {
            self.quirks = table.for_device(&e.version, *seed, udid);
        }
        self.state.unlocked_since_boot = !self.state.passcode;
        self.unlock_at = if self.state.passcode {
            self.config
                .timing
                .unlock_after_restart
                .map(|d| after(back_at, d))
        } else {
            None
        };
        self.before_restart.extend(self.handled.drain());
        self.phase = Phase::Idle;
        self.progress_at = None;
        self.last_progress = None;
        self.events.push(UpdateEvent::RestartEnds {
            version: e.version,
            build: e.build,
        });
    }

    // --- conditions ---------------------------------------------------------------------------

    fn entry(&self, idx: usize) -> &CatalogEntry {
        &self.config.catalogue[idx]
    }

    fn fraction(&self, idx: usize, done: f64) -> f64 {
        let size = self.entry(idx).download_size;
        if size == 0 {
            1.0
        } else {
            (done / size as f64).clamp(0.0, 1.0)
        }
    }

    fn asset_bytes(&self) -> u64 {
        match self.phase {
            Phase::Idle => 0,
            Phase::Downloading { done, .. } => done as u64,
            Phase::Downloaded { idx }
            | Phase::AwaitingUser { idx, .. }
            | Phase::InstallScheduled { idx, .. }
            | Phase::Installing { idx, .. }
            | Phase::Restarting { idx, .. } => self.entry(idx).download_size,
        }
    }

    fn low_power(&self) -> bool {
        self.state.battery_level < MIN_BATTERY_ON_BATTERY_POWER
            && !(self.state.external_power || self.state.charging)
    }

    /// Why a download cannot start, checked in this order (**Assumption**: the order is not
    /// documented):
    /// * `DownloadInsufficientNetwork`: no network. Cellular counts as a network
    ///   (**Assumption**; whether iOS downloads over cellular depends on version and settings).
    /// * `DownloadInsufficientSpace`: free < DownloadSize + InstallSize, Apple's stated rule
    ///   (AvailableOSUpdates notes, brief §2).
    /// * `DownloadInsufficientPower`: see [`MIN_BATTERY_ON_BATTERY_POWER`].
    fn download_blocker(&self, idx: usize) -> Option<&'static str> {
        let e = self.entry(idx);
        if self.state.network == NetworkKind::None {
            Some("DownloadInsufficientNetwork")
        } else if self.state.disk_free < e.download_size.saturating_add(e.install_size) {
            Some("DownloadInsufficientSpace")
        } else if self.low_power() {
            Some("DownloadInsufficientPower")
        } else {
            None
        }
    }

    /// Why an install cannot start: `InstallInsufficientPower` (same 50 % rule),
    /// `InstallInsufficientSpace` (free space outside the asset < InstallSize).
    fn install_blocker(&self, idx: usize) -> Option<&'static str> {
        if self.low_power() {
            Some("InstallInsufficientPower")
        } else if self
            .state
            .disk_free
            .saturating_sub(self.entry(idx).download_size)
            < self.entry(idx).install_size
        {
            Some("InstallInsufficientSpace")
        } else {
            None
        }
    }

    /// Entries newer than the running version that apply to this model, newest last.
    fn applicable(&self) -> Vec<usize> {
        let Ok(current) = DeviceVersion::parse(&self.state.version) else {
            return Vec::new();
        };
        let mut v: Vec<(Version, usize)> = self
            .config
            .catalogue
            .iter()
            .enumerate()
            .filter(|(_, e)| e.applies_to(&self.state.product_type))
            .filter_map(|(i, e)| Version::parse(&e.version).ok().map(|v| (v, i)))
            .filter(|(v, _)| *v > current.version)
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().map(|(_, i)| i).collect()
    }

    /// The update the device offers: on iOS AvailableOSUpdates "contains only the most recent
    /// available updates" (brief §2).
    fn newest(&self) -> Option<usize> {
        self.applicable().last().copied()
    }

    // --- commands -----------------------------------------------------------------------------

    /// Handles one command. `command` is the `Command` dictionary (with `RequestType`).
    ///
    /// Order of checks, for the three update commands:
    /// 1. Rebooting → no reply (the device is not there).
    /// 2. `notnow_before_first_unlock` and not unlocked since boot → `NotNow`.
    /// 3. Not supervised → `Error` (all three need supervision, brief §1/§2).
    /// 4. The command itself.
    pub fn handle(
        &mut self,
        now: DateTime<Utc>,
        command_uuid: &str,
        request_type: &str,
        command: &Dictionary,
    ) -> Outcome {
        self.advance(now);
        if self.offline(now) {
            return Outcome::NoReply;
        }
        if !matches!(
            request_type,
            "ScheduleOSUpdate" | "OSUpdateStatus" | "AvailableOSUpdates"
        ) {
            return reply(
                ERROR,
                with_chain(error_chain(&[(
                    UNKNOWN_COMMAND_CODE,
                    "MCMDMErrorDomain",
                    &format!("Unknown command: {request_type} <MDMClientError:91>"),
                )])),
            );
        }
        if self.quirks.has(Behaviour::NotnowBeforeFirstUnlock) && !self.state.unlocked_since_boot {
            return reply(NOT_NOW, Dictionary::new());
        }
        if !self.state.supervised {
            return not_eligible("The device is not supervised.");
        }
        let out = match request_type {
            "ScheduleOSUpdate" => self.schedule(now, command_uuid, command),
            "OSUpdateStatus" => self.os_update_status(),
            _ => self.available_updates(),
        };
        self.advance(now);
        out
    }

    /// ScheduleOSUpdate (brief §1).
    ///
    /// * A CommandUUID handled before the last restart is answered `Acknowledged` without
    ///   `UpdateResults` (Apple's note, brief §0.3).
    /// * `requires_dep_below_10_3`: without DEP enrolment, or with a passcode → `Error`.
    /// * Malformed `Updates` (not an array, an item not a dictionary, `InstallAction` missing,
    ///   not a string or not in the schema's range list, `ProductKey`/`ProductVersion` not a
    ///   string, neither present) → `CommandFormatError`.
    /// * `Updates` absent: "the device applies the default behavior" — **Assumption**: that is
    ///   `Default` for the update AvailableOSUpdates offers (none → empty `UpdateResults`).
    /// * Each item is answered as in [`Self::schedule_item`]; the envelope is `Acknowledged`
    ///   even when items carry `InstallAction: Error` (the schema puts scheduling errors in
    ///   the item).
    /// * `schedule_no_response` (11.3.1): the command is carried out, no reply is sent.
    /// * `schedule_error_but_prompt` (11.4): when an item started a download or showed the
    ///   prompt, the envelope is `Error` (items `InstallAction: Error`) though it happened.
    fn schedule(&mut self, now: DateTime<Utc>, uuid: &str, cmd: &Dictionary) -> Outcome {
        if self.before_restart.contains(uuid) {
            return reply(ACKNOWLEDGED, Dictionary::new());
        }
        if self.quirks.has(Behaviour::RequiresDepBelow10_3)
            && (!self.state.dep_enrolled || self.state.passcode)
        {
            return not_eligible(
                "ScheduleOSUpdate requires a DEP-enrolled device without a passcode before iOS 10.3.",
            );
        }
        let Some(items) = self.parse_updates(cmd) else {
            return reply(FORMAT_ERROR, Dictionary::new());
        };
        self.handled.insert(uuid.to_string());
        let results: Vec<ItemResult> = items
            .into_iter()
            .map(|(sel, echo, action)| self.schedule_item(now, sel, echo, action))
            .collect();
        if self.quirks.has(Behaviour::ScheduleNoResponse) {
            return Outcome::NoReply;
        }
        let hidden = results.iter().any(|r| r.effect != Effect::None);
        if self.quirks.has(Behaviour::ScheduleErrorButPrompt) && hidden {
            let mut body = with_chain(error_chain(&[(
                3,
                "com.apple.softwareupdateservices.errors",
                "The operation couldn’t be completed. (com.apple.softwareupdateservices.errors error 3.)",
            )]));
            body.insert(
                "UpdateResults".into(),
                Value::Array(
                    results
                        .iter()
                        .map(|r| result_item(&r.product_key, "Error", r.status))
                        .collect(),
                ),
            );
            return reply(ERROR, body);
        }
        let mut body = Dictionary::new();
        body.insert(
            "UpdateResults".into(),
            Value::Array(
                results
                    .iter()
                    .map(|r| result_item(&r.product_key, r.install_action, r.status))
                    .collect(),
            ),
        );
        reply(ACKNOWLEDGED, body)
    }

    /// `(selected entry, ProductKey to echo, action)` per item; `None` if malformed.
    #[allow(clippy::type_complexity)]
    fn parse_updates(&self, cmd: &Dictionary) -> Option<Vec<(Option<usize>, String, Action)>> {
        let Some(updates) = cmd.get("Updates") else {
            return Some(
                self.newest()
                    .map(|i| (Some(i), self.entry(i).product_key.clone(), Action::Default))
                    .into_iter()
                    .collect(),
            );
        };
        // ProductVersion is understood from iOS 11.3 on (brief §1); older devices ignore it.
        let knows_version = Version::parse(&self.state.version)
            .map(|v| v >= Version::from_parts(&[11, 3]))
            .unwrap_or(true);
        let applicable = self.applicable();
        let mut out = Vec::new();
        for item in updates.as_array()? {
            let item = item.as_dictionary()?;
            let action = match item.get("InstallAction")?.as_string()? {
                "Default" => Action::Default,
                "DownloadOnly" => Action::DownloadOnly,
                "InstallASAP" => Action::InstallAsap,
                "NotifyOnly" | "InstallLater" | "InstallForceRestart" => Action::MacOnly,
                _ => return None,
            };
            let key = match item.get("ProductKey") {
                Some(v) => Some(v.as_string()?),
                None => None,
            };
            let version = match item.get("ProductVersion") {
                Some(v) => Some(v.as_string()?),
                None => None,
            };
            if key.is_none() && version.is_none() {
                return None;
            }
            let selected = if let Some(k) = key {
                applicable
                    .iter()
                    .copied()
                    .find(|&i| self.entry(i).product_key == k)
            } else if knows_version {
                let want = version.and_then(|v| Version::parse(v).ok());
                applicable.iter().copied().find(|&i| {
                    want.as_ref().is_some_and(|w| {
                        Version::parse(&self.entry(i).version).ok().as_ref() == Some(w)
                    })
                })
            } else {
                None
            };
            let echo = match selected {
                Some(i) => self.entry(i).product_key.clone(),
                None => key.or(version).unwrap_or_default().to_string(),
            };
            out.push((selected, echo, action));
        }
        Some(out)
    }

    /// One `UpdatesItem`:
    ///
    /// * Unknown product (not offered to this model/version), or a macOS-only action →
    ///   `InstallAction: Error`, `Status: Idle`. `Error` is the schema's value for "an error
    ///   occurred during scheduling"; **Assumption**: `Idle` because nothing is in progress and
    ///   the status list has no "not found".
    /// * Another update already in flight → `Error` with that update's status
    ///   (**Assumption**: one update at a time).
    /// * Nothing in flight: `Default`, `DownloadOnly` and `InstallASAP` all start the download
    ///   → `DownloadOnly`/`Downloading`, or `DownloadOnly` with a `Download…` failure status.
    ///   `Default` downloading first is Apple's two-step rule (brief §0.2). For `InstallASAP`
    ///   Apple says it installs "a previously downloaded" update; **Assumption**: without one
    ///   it downloads and says so (`DownloadOnly`, "a device may return a different
    ///   InstallAction than requested"), and does not install by itself afterwards.
    /// * Downloading → `DownloadOnly`/`Downloading`.
    /// * Downloaded: `DownloadOnly` → `DownloadOnly`/`Idle`; `Default`/`InstallASAP` install:
    ///   `InstallASAP` with `InstallInsufficientPower`/`InstallInsufficientSpace`, or without a
    ///   passcode `InstallASAP`/`Installing` at once, or with a passcode the prompt
    ///   (`InstallASAP`/`Idle`: nothing installs until the user agrees, brief §0.4).
    /// * Prompt showing → `InstallASAP`/`Idle`, no second prompt.
    /// * User chose "Later": with `installing_while_scheduled`, `Default`/`InstallASAP` installs
    ///   at once (`InstallASAP`/`Installing`, rdar 45414727); without it **Assumption**: the
    ///   user's choice stands, `InstallLater`/`Idle`.
    /// * Installing → `InstallASAP`/`Installing`.
    fn schedule_item(
        &mut self,
        now: DateTime<Utc>,
        selected: Option<usize>,
        product_key: String,
        action: Action,
    ) -> ItemResult {
        let r = |install_action, status, effect| ItemResult {
            product_key: product_key.clone(),
            install_action,
            status,
            effect,
        };
        let Some(idx) = selected else {
            return r(ERROR, "Idle", Effect::None);
        };
        if action == Action::MacOnly {
            return r(ERROR, "Idle", Effect::None);
        }
        if let Some(other) = self.phase.idx()
            && other != idx
        {
            return r(ERROR, self.phase_status(), Effect::None);
        }
        let install = matches!(action, Action::Default | Action::InstallAsap);
        match self.phase.clone() {
            Phase::Idle => match self.download_blocker(idx) {
                Some(status) => r("DownloadOnly", status, Effect::None),
                None => {
                    self.phase = Phase::Downloading { idx, done: 0.0 };
                    self.progress_at = Some(now);
                    self.last_progress = None;
                    r("DownloadOnly", "Downloading", Effect::DownloadStarted)
                }
            },
            Phase::Downloading { .. } => r("DownloadOnly", "Downloading", Effect::None),
            Phase::Downloaded { .. } if !install => r("DownloadOnly", "Idle", Effect::None),
            Phase::Downloaded { .. } => match self.install_blocker(idx) {
                Some(status) => r("InstallASAP", status, Effect::None),
                None if self.state.passcode => {
                    self.phase = Phase::AwaitingUser {
                        idx,
                        user: self.config.user.clone(),
                        step: UserStep::Prompt,
                        at: now,
                    };
                    r("InstallASAP", "Idle", Effect::Prompted)
                }
                None => {
                    self.start_install(idx, now);
                    r("InstallASAP", "Installing", Effect::None)
                }
            },
            Phase::AwaitingUser { .. } => r("InstallASAP", "Idle", Effect::None),
            Phase::InstallScheduled { .. } if !install => r("DownloadOnly", "Idle", Effect::None),
            Phase::InstallScheduled { .. } => {
                if self.quirks.has(Behaviour::InstallingWhileScheduled) {
                    match self.install_blocker(idx) {
                        Some(status) => r("InstallASAP", status, Effect::None),
                        None => {
                            self.start_install(idx, now);
                            r("InstallASAP", "Installing", Effect::None)
                        }
                    }
                } else {
                    r("InstallLater", "Idle", Effect::None)
                }
            }
            Phase::Installing { .. } | Phase::Restarting { .. } => {
                r("InstallASAP", "Installing", Effect::None)
            }
        }
    }

    /// The `Status` OSUpdateStatus reports for the update in flight: `Downloading` while
    /// downloading, `Installing` while installing, `Idle` when downloaded and waiting (rdar
    /// 45414692 shows `Idle` + `IsDownloaded`), and for a "Later" install `Installing` with the
    /// `installing_while_scheduled` quirk, else `Idle` (**Assumption**: there is no
    /// "Scheduled" value).
    fn phase_status(&self) -> &'static str {
        match self.phase {
            Phase::Idle | Phase::Downloaded { .. } | Phase::AwaitingUser { .. } => "Idle",
            Phase::Downloading { .. } => "Downloading",
            Phase::InstallScheduled { .. } => {
                if self.quirks.has(Behaviour::InstallingWhileScheduled) {
                    "Installing"
                } else {
                    "Idle"
                }
            }
            Phase::Installing { .. } | Phase::Restarting { .. } => "Installing",
        }
    }

    /// OSUpdateStatus (brief §2): one item for the update in flight, an empty array when none
    /// ("The array is empty if there are no software updates currently in progress").
    /// `IsDownloaded` is an integer 0/1 with `is_downloaded_integer` (rdar 45414737).
    fn os_update_status(&self) -> Outcome {
        let items = match self.phase {
            Phase::Idle => vec![],
            Phase::Downloading { idx, done } => vec![(idx, false, self.fraction(idx, done))],
            Phase::Downloaded { idx }
            | Phase::AwaitingUser { idx, .. }
            | Phase::InstallScheduled { idx, .. }
            | Phase::Installing { idx, .. }
            | Phase::Restarting { idx, .. } => vec![(idx, true, 1.0)],
        };
        let int = self.quirks.has(Behaviour::IsDownloadedInteger);
        let mut body = Dictionary::new();
        body.insert(
            "OSUpdateStatus".into(),
            Value::Array(
                items
                    .into_iter()
                    .map(|(idx, downloaded, pct)| {
                        status_item(
                            &self.entry(idx).product_key,
                            downloaded,
                            pct,
                            self.phase_status(),
                            int,
                        )
                    })
                    .collect(),
            ),
        );
        reply(ACKNOWLEDGED, body)
    }

    /// AvailableOSUpdates (brief §2): the newest update for this model, or an empty array; with
    /// `available_updates_error_2213` "none" is `Error` 2213 → softwareupdateservices 3
    /// (rdar 39170807).
    fn available_updates(&self) -> Outcome {
        let newest = self.newest();
        if newest.is_none() && self.quirks.has(Behaviour::AvailableUpdatesError2213) {
            return reply(
                ERROR,
                with_chain(error_chain(&[
                    (2213, "DeviceManagement.error", "No update available."),
                    (
                        3,
                        "com.apple.softwareupdateservices.errors",
                        "The operation couldn’t be completed. (com.apple.softwareupdateservices.errors error 3.)",
                    ),
                ])),
            );
        }
        let mut body = Dictionary::new();
        body.insert(
            "AvailableOSUpdates".into(),
            Value::Array(
                newest
                    .map(|i| available_item(self.entry(i)))
                    .into_iter()
                    .collect(),
            ),
        );
        reply(ACKNOWLEDGED, body)
    }
}

fn secs_to_chrono(secs: f64) -> ChronoDuration {
    let s = if secs.is_finite() {
        secs.clamp(0.0, 1e9)
    } else {
        1e9
    };
    ChronoDuration::milliseconds((s * 1000.0).ceil() as i64)
}

// ---------------------------------------------------------------------------------------------
// Plist building (swap for the shared MDM codecs later)
// ---------------------------------------------------------------------------------------------

fn reply(status: &str, body: Dictionary) -> Outcome {
    Outcome::Reply {
        status: status.to_string(),
        body,
    }
}

fn not_eligible(msg: &str) -> Outcome {
    reply(
        ERROR,
        with_chain(error_chain(&[(NOT_ELIGIBLE_CODE, "MCMDMErrorDomain", msg)])),
    )
}

fn with_chain(chain: Value) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("ErrorChain".into(), chain);
    d
}

/// `ErrorChain`: the first item is the top-level error (brief §3).
fn error_chain(items: &[(i64, &str, &str)]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|(code, domain, text)| {
                let mut d = Dictionary::new();
                d.insert("ErrorCode".into(), Value::Integer((*code).into()));
                d.insert("ErrorDomain".into(), Value::String((*domain).into()));
                d.insert("LocalizedDescription".into(), Value::String((*text).into()));
                d.insert("USEnglishDescription".into(), Value::String((*text).into()));
                Value::Dictionary(d)
            })
            .collect(),
    )
}

/// `UpdateResultsItem`: `ProductKey`, `InstallAction`, `Status` (brief §1).
fn result_item(product_key: &str, install_action: &str, status: &str) -> Value {
    let mut d = Dictionary::new();
    d.insert("ProductKey".into(), Value::String(product_key.into()));
    d.insert("InstallAction".into(), Value::String(install_action.into()));
    d.insert("Status".into(), Value::String(status.into()));
    Value::Dictionary(d)
}

/// `OSUpdateStatusItem` (brief §2).
fn status_item(
    product_key: &str,
    downloaded: bool,
    percent: f64,
    status: &str,
    downloaded_as_integer: bool,
) -> Value {
    let mut d = Dictionary::new();
    d.insert("ProductKey".into(), Value::String(product_key.into()));
    d.insert(
        "IsDownloaded".into(),
        if downloaded_as_integer {
            Value::Integer(i64::from(downloaded).into())
        } else {
            Value::Boolean(downloaded)
        },
    );
    d.insert("DownloadPercentComplete".into(), Value::Real(percent));
    d.insert("Status".into(), Value::String(status.into()));
    Value::Dictionary(d)
}

/// `AvailableOSUpdatesItem`, iOS keys only (brief §2, Apple's example2.plist).
fn available_item(e: &CatalogEntry) -> Value {
    let mut d = Dictionary::new();
    d.insert("ProductKey".into(), Value::String(e.product_key.clone()));
    d.insert(
        "HumanReadableName".into(),
        Value::String(format!("iOS {}", e.version)),
    );
    d.insert("ProductName".into(), Value::String("iOS".into()));
    d.insert("Version".into(), Value::String(e.version.clone()));
    d.insert("Build".into(), Value::String(e.build.clone()));
    d.insert(
        "DownloadSize".into(),
        Value::Integer(e.download_size.into()),
    );
    d.insert("InstallSize".into(), Value::Integer(e.install_size.into()));
    d.insert("IsCritical".into(), Value::Boolean(e.is_critical));
    d.insert("RestartRequired".into(), Value::Boolean(e.restart_required));
    d.insert(
        "AllowsInstallLater".into(),
        Value::Boolean(e.allows_install_later),
    );
    Value::Dictionary(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::clock::{Clock, ManualClock};
    use crate::sim::quirks::Behaviour::*;
    use chrono::{TimeZone, Timelike};

    const KEY: &str = "iOSUpdate21G80";
    const GB: u64 = 1_000_000_000;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn state() -> DeviceUpdateState {
        DeviceUpdateState {
            version: "17.5".into(),
            build: "21F79".into(),
            product_type: "iPhone12,1".into(),
            disk_free: 50 * GB,
            battery_level: 80,
            charging: false,
            external_power: true,
            network: NetworkKind::Wifi,
            passcode: false,
            supervised: true,
            dep_enrolled: false,
            unlocked_since_boot: true,
            local_offset_minutes: 0,
        }
    }

    fn entry(version: &str, build: &str) -> CatalogEntry {
        CatalogEntry {
            version: version.into(),
            build: build.into(),
            product_key: format!("iOSUpdate{build}"),
            download_size: GB,
            install_size: 2 * GB,
            product_types: None,
            is_critical: false,
            restart_required: true,
            allows_install_later: true,
        }
    }

    /// 1 GB at 10 MB/s: the download takes 100 s; install 600 s; restart 180 s.
    fn config(user: UserBehaviour) -> UpdateConfig {
        UpdateConfig {
            catalogue: vec![entry("17.6", "21G80")],
            user,
            timing: Timing {
                download_rate: 10_000_000,
                install: secs(600),
                restart: secs(180),
                defer_interval: secs(3600),
                unlock_after_restart: Some(secs(60)),
            },
        }
    }

    fn sim_with(st: DeviceUpdateState, user: UserBehaviour, quirks: Quirks) -> OsUpdateSim {
        OsUpdateSim::new(st, config(user), quirks, 42)
    }

    fn sim() -> OsUpdateSim {
        sim_with(
            state(),
            UserBehaviour::Approve { after: secs(0) },
            Quirks::none(),
        )
    }

    fn passcode_sim(user: UserBehaviour, quirks: Quirks) -> OsUpdateSim {
        let mut st = state();
        st.passcode = true;
        sim_with(st, user, quirks)
    }

    fn item(action: &str) -> Value {
        let mut d = Dictionary::new();
        d.insert("ProductKey".into(), KEY.into());
        d.insert("InstallAction".into(), action.into());
        Value::Dictionary(d)
    }

    fn cmd(request_type: &str, updates: Option<Vec<Value>>) -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("RequestType".into(), request_type.into());
        if let Some(u) = updates {
            d.insert("Updates".into(), Value::Array(u));
        }
        d
    }

    fn schedule(s: &mut OsUpdateSim, now: DateTime<Utc>, uuid: &str, action: &str) -> Outcome {
        s.handle(
            now,
            uuid,
            "ScheduleOSUpdate",
            &cmd("ScheduleOSUpdate", Some(vec![item(action)])),
        )
    }

    fn status(s: &mut OsUpdateSim, now: DateTime<Utc>) -> Outcome {
        s.handle(now, "st", "OSUpdateStatus", &cmd("OSUpdateStatus", None))
    }

    fn available(s: &mut OsUpdateSim, now: DateTime<Utc>) -> Outcome {
        s.handle(
            now,
            "av",
            "AvailableOSUpdates",
            &cmd("AvailableOSUpdates", None),
        )
    }

    fn array<'a>(o: &'a Outcome, key: &str) -> &'a Vec<Value> {
        o.body()
            .and_then(|b| b.get(key))
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("no {key} in {o:?}"))
    }

    fn s<'a>(v: &'a Value, key: &str) -> &'a str {
        v.as_dictionary()
            .and_then(|d| d.get(key))
            .and_then(Value::as_string)
            .unwrap_or_else(|| panic!("no string {key} in {v:?}"))
    }

    /// (ProductKey, InstallAction, Status) of the single UpdateResults item.
    fn result(o: &Outcome) -> (String, String, String) {
        let a = array(o, "UpdateResults");
        assert_eq!(a.len(), 1, "{o:?}");
        (
            s(&a[0], "ProductKey").into(),
            s(&a[0], "InstallAction").into(),
            s(&a[0], "Status").into(),
        )
    }

    fn ok(o: &Outcome, action: &str, st: &str) {
        assert_eq!(o.status(), Some("Acknowledged"), "{o:?}");
        assert_eq!(result(o), (KEY.into(), action.into(), st.into()), "{o:?}");
    }

    /// (IsDownloaded as plist value, DownloadPercentComplete, Status) of the single item.
    fn status_one(o: &Outcome) -> (Value, f64, String) {
        let a = array(o, "OSUpdateStatus");
        assert_eq!(a.len(), 1, "{o:?}");
        let d = a[0].as_dictionary().unwrap();
        assert_eq!(s(&a[0], "ProductKey"), KEY);
        (
            d.get("IsDownloaded").unwrap().clone(),
            d.get("DownloadPercentComplete").unwrap().as_real().unwrap(),
            s(&a[0], "Status").into(),
        )
    }

    fn chain(o: &Outcome) -> Vec<(i64, String)> {
        array(o, "ErrorChain")
            .iter()
            .map(|e| {
                let d = e.as_dictionary().unwrap();
                assert!(d.get("LocalizedDescription").is_some());
                (
                    d.get("ErrorCode")
                        .and_then(Value::as_signed_integer)
                        .unwrap(),
                    s(e, "ErrorDomain").to_string(),
                )
            })
            .collect()
    }

    /// Downloads the update (Default, then 100 s) and returns the clock.
    fn downloaded(s: &mut OsUpdateSim) -> ManualClock {
        let c = ManualClock::new(t0());
        ok(
            &schedule(s, c.now(), "dl", "Default"),
            "DownloadOnly",
            "Downloading",
        );
        c.advance(secs(100));
        let ev = s.tick(c.now());
        assert!(ev.contains(&UpdateEvent::Downloaded), "{ev:?}");
        c
    }

    #[test]
    fn the_clock_going_backwards_delays_deadlines_and_keeps_download_progress() {
        let mut s = sim();
        let c = ManualClock::new(t0());
        ok(
            &schedule(&mut s, c.now(), "a", "Default"),
            "DownloadOnly",
            "Downloading",
        );
        c.advance(secs(50));
        assert_eq!(s.tick(c.now()), vec![UpdateEvent::DownloadProgress(0.5)]);
        // Back 30 min mid-download: no panic, no progress lost, no events.
        c.set(c.now() - ChronoDuration::minutes(30));
        assert_eq!(s.tick(c.now()), vec![]);
        let (_, pct, st) = status_one(&status(&mut s, c.now()));
        assert_eq!((pct, st.as_str()), (0.5, "Downloading"));
        // The rest takes 50 s from the earlier time, not 30 min more.
        c.advance(secs(50));
        assert_eq!(
            s.tick(c.now()),
            vec![UpdateEvent::DownloadProgress(1.0), UpdateEvent::Downloaded]
        );
        ok(
            &schedule(&mut s, c.now(), "b", "Default"),
            "InstallASAP",
            "Installing",
        );
        assert_eq!(s.tick(c.now()), vec![UpdateEvent::InstallStarted]);
        let install_end = c.now() + ChronoDuration::seconds(600);
        // Back 1 h mid-install: the install ends when the clock reaches its end again.
        c.set(c.now() - ChronoDuration::hours(1));
        assert_eq!(s.tick(c.now()), vec![]);
        assert!(!s.offline(c.now()));
        assert_eq!(status_one(&status(&mut s, c.now())).2, "Installing");
        c.set(install_end - ChronoDuration::seconds(1));
        assert_eq!(s.tick(c.now()), vec![]);
        c.set(install_end);
        let back = install_end + ChronoDuration::seconds(180);
        assert_eq!(
            s.tick(c.now()),
            vec![UpdateEvent::RestartBegins { back_at: back }]
        );
        // Back again while restarting: still rebooting (no reply, no panic) until `back`
        // comes round, so this restart lasts 10 min longer.
        c.set(install_end - ChronoDuration::minutes(10));
        assert!(s.offline(c.now()));
        assert_eq!(status(&mut s, c.now()), Outcome::NoReply);
        assert_eq!(s.tick(c.now()), vec![]);
        c.set(back);
        assert_eq!(
            s.tick(c.now()),
            vec![UpdateEvent::RestartEnds {
                version: "17.6".into(),
                build: "21G80".into()
            }]
        );
        assert_eq!(s.version(), ("17.6", "21G80"));
    }

    #[test]
    fn a_backward_jump_before_the_night_window_keeps_the_scheduled_install() {
        let mut s = passcode_sim(UserBehaviour::Later, Quirks::none());
        let c = downloaded(&mut s);
        schedule(&mut s, c.now(), "b", "Default");
        let at = s
            .tick(c.now())
            .into_iter()
            .find_map(|e| match e {
                UpdateEvent::InstallScheduled { at } => Some(at),
                _ => None,
            })
            .expect("the user picked Later");
        // The device clock is set back a day: the install waits for 1–3 AM by that clock.
        c.set(c.now() - ChronoDuration::days(1));
        assert_eq!(s.tick(c.now()), vec![]);
        c.set(at - ChronoDuration::seconds(1));
        assert_eq!(s.tick(c.now()), vec![]);
        c.set(at);
        assert_eq!(s.tick(c.now()), vec![UpdateEvent::InstallStarted]);
    }

    #[test]
    fn two_step_default_downloads_then_installs_then_restarts() {
        let mut s = sim();
        let c = ManualClock::new(t0());
        assert_eq!(array(&status(&mut s, c.now()), "OSUpdateStatus").len(), 0);
        ok(
            &schedule(&mut s, c.now(), "a", "Default"),
            "DownloadOnly",
            "Downloading",
        );
        c.advance(secs(50));
        assert_eq!(s.tick(c.now()), vec![UpdateEvent::DownloadProgress(0.5)]);
        let (dl, pct, st) = status_one(&status(&mut s, c.now()));
        assert_eq!(
            (dl, pct, st.as_str()),
            (Value::Boolean(false), 0.5, "Downloading")
        );
        assert_eq!(s.disk_free(), 50 * GB - GB / 2, "the asset takes space");
        c.advance(secs(50));
        let ev = s.tick(c.now());
        assert_eq!(
            ev,
            vec![UpdateEvent::DownloadProgress(1.0), UpdateEvent::Downloaded]
        );
        let (dl, pct, st) = status_one(&status(&mut s, c.now()));
        assert_eq!((dl, pct, st.as_str()), (Value::Boolean(true), 1.0, "Idle"));
        // Second Default installs (brief §0.2).
        ok(
            &schedule(&mut s, c.now(), "b", "Default"),
            "InstallASAP",
            "Installing",
        );
        assert_eq!(s.tick(c.now()), vec![UpdateEvent::InstallStarted]);
        assert_eq!(status_one(&status(&mut s, c.now())).2, "Installing");
        c.advance(secs(600));
        let back = c.now() + ChronoDuration::seconds(180);
        assert!(s.offline(c.now()), "offline as soon as the restart is due");
        assert_eq!(
            s.tick(c.now()),
            vec![UpdateEvent::RestartBegins { back_at: back }]
        );
        assert_eq!(status(&mut s, c.now()), Outcome::NoReply);
        c.advance(secs(180));
        assert!(!s.offline(c.now()));
        assert_eq!(
            s.tick(c.now()),
            vec![UpdateEvent::RestartEnds {
                version: "17.6".into(),
                build: "21G80".into()
            }]
        );
        assert_eq!(s.version(), ("17.6", "21G80"));
        assert_eq!(s.disk_free(), 50 * GB);
    }

    #[test]
    fn restart_then_resent_command_is_acknowledged_without_update_results() {
        let mut s = sim();
        let c = downloaded(&mut s);
        ok(
            &schedule(&mut s, c.now(), "install-1", "InstallASAP"),
            "InstallASAP",
            "Installing",
        );
        c.advance(secs(780));
        s.tick(c.now());
        assert_eq!(s.version().0, "17.6");
        assert!(s.answered_before_restart("install-1"));
        let o = schedule(&mut s, c.now(), "install-1", "InstallASAP");
        assert_eq!(o.status(), Some("Acknowledged"));
        assert!(o.body().unwrap().get("UpdateResults").is_none(), "{o:?}");
        // Nothing newer now: nothing in progress, nothing available.
        assert!(array(&status(&mut s, c.now()), "OSUpdateStatus").is_empty());
        assert!(array(&available(&mut s, c.now()), "AvailableOSUpdates").is_empty());
        // A new command for the installed update is an unknown product.
        let o = schedule(&mut s, c.now(), "install-2", "Default");
        assert_eq!(result(&o), (KEY.into(), "Error".into(), "Idle".into()));
    }

    #[test]
    fn passcode_device_locked_after_restart_until_the_user_unlocks() {
        let mut s = passcode_sim(
            UserBehaviour::Approve { after: secs(0) },
            Quirks::only(&[NotnowBeforeFirstUnlock]),
        );
        let c = downloaded(&mut s);
        schedule(&mut s, c.now(), "i", "Default");
        c.advance(secs(780));
        let ev = s.tick(c.now());
        assert!(
            matches!(ev.last(), Some(UpdateEvent::RestartEnds { .. })),
            "{ev:?}"
        );
        assert_eq!(
            schedule(&mut s, c.now(), "i", "Default").status(),
            Some("NotNow")
        );
        c.advance(secs(60));
        assert_eq!(s.tick(c.now()), vec![UpdateEvent::FirstUnlock]);
        let o = schedule(&mut s, c.now(), "i", "Default");
        assert_eq!(o.status(), Some("Acknowledged"));
        assert!(o.body().unwrap().is_empty());
    }

    #[test]
    fn install_asap_before_download_downloads_only() {
        let mut s = sim();
        let c = ManualClock::new(t0());
        ok(
            &schedule(&mut s, c.now(), "a", "InstallASAP"),
            "DownloadOnly",
            "Downloading",
        );
        c.advance(secs(3600));
        let ev = s.tick(c.now());
        assert!(ev.contains(&UpdateEvent::Downloaded));
        assert!(
            !ev.contains(&UpdateEvent::InstallStarted),
            "no install without a command"
        );
        assert_eq!(status_one(&status(&mut s, c.now())).2, "Idle");
        ok(
            &schedule(&mut s, c.now(), "b", "InstallASAP"),
            "InstallASAP",
            "Installing",
        );
    }

    #[test]
    fn download_only_never_installs() {
        let mut s = sim();
        let c = ManualClock::new(t0());
        ok(
            &schedule(&mut s, c.now(), "a", "DownloadOnly"),
            "DownloadOnly",
            "Downloading",
        );
        ok(
            &schedule(&mut s, c.now(), "b", "DownloadOnly"),
            "DownloadOnly",
            "Downloading",
        );
        c.advance(secs(100));
        s.tick(c.now());
        ok(
            &schedule(&mut s, c.now(), "c", "DownloadOnly"),
            "DownloadOnly",
            "Idle",
        );
        assert_eq!(status_one(&status(&mut s, c.now())).2, "Idle");
    }

    #[test]
    fn passcode_approve_after_delay() {
        let mut s = passcode_sim(UserBehaviour::Approve { after: secs(30) }, Quirks::none());
        let c = downloaded(&mut s);
        ok(
            &schedule(&mut s, c.now(), "i", "Default"),
            "InstallASAP",
            "Idle",
        );
        assert_eq!(s.tick(c.now()), vec![UpdateEvent::PromptShown]);
        c.advance(secs(29));
        assert!(s.tick(c.now()).is_empty());
        assert_eq!(status_one(&status(&mut s, c.now())).2, "Idle");
        c.advance(secs(1));
        assert_eq!(s.tick(c.now()), vec![UpdateEvent::InstallStarted]);
    }

    #[test]
    fn passcode_defer_k_times_then_approve() {
        let user = UserBehaviour::Defer {
            times: 2,
            then: Box::new(UserBehaviour::Approve { after: secs(0) }),
        };
        let mut s = passcode_sim(user, Quirks::none());
        let c = downloaded(&mut s);
        ok(
            &schedule(&mut s, c.now(), "i", "Default"),
            "InstallASAP",
            "Idle",
        );
        assert_eq!(
            s.tick(c.now()),
            vec![UpdateEvent::PromptShown, UpdateEvent::UserDeferred]
        );
        c.advance(secs(3600));
        assert_eq!(
            s.tick(c.now()),
            vec![UpdateEvent::PromptShown, UpdateEvent::UserDeferred]
        );
        c.advance(secs(3599));
        assert!(s.tick(c.now()).is_empty());
        c.advance(secs(1));
        assert_eq!(
            s.tick(c.now()),
            vec![UpdateEvent::PromptShown, UpdateEvent::InstallStarted]
        );
    }

    #[test]
    fn passcode_later_installs_between_1_and_3_am_local() {
        let mut st = state();
        st.passcode = true;
        st.local_offset_minutes = 120; // 12:00 UTC is 14:00 local
        let mk = || sim_with(st.clone(), UserBehaviour::Later, Quirks::none());
        let mut s = mk();
        let c = downloaded(&mut s);
        ok(
            &schedule(&mut s, c.now(), "i", "Default"),
            "InstallASAP",
            "Idle",
        );
        let ev = s.tick(c.now());
        let Some(UpdateEvent::InstallScheduled { at }) = ev.last().cloned() else {
            panic!("{ev:?}")
        };
        let local = local_time(at, 120);
        assert!((1..3).contains(&local.hour()), "{local}");
        assert_eq!(
            local.date(),
            local_time(t0(), 120).date().succ_opt().unwrap()
        );
        // Reproducible: the same seed picks the same minute.
        let mut s2 = mk();
        let c2 = downloaded(&mut s2);
        schedule(&mut s2, c2.now(), "i", "Default");
        assert_eq!(s2.tick(c2.now()).last(), ev.last());
        // Without the quirk OSUpdateStatus says Idle, and a second command keeps the choice.
        assert_eq!(status_one(&status(&mut s, c.now())).2, "Idle");
        ok(
            &schedule(&mut s, c.now(), "j", "Default"),
            "InstallLater",
            "Idle",
        );
        c.set(at - ChronoDuration::seconds(1));
        assert!(s.tick(c.now()).is_empty());
        c.set(at);
        assert_eq!(s.tick(c.now()), vec![UpdateEvent::InstallStarted]);
    }

    #[test]
    fn passcode_never_stays_downloaded() {
        let mut s = passcode_sim(UserBehaviour::Never, Quirks::none());
        let c = downloaded(&mut s);
        ok(
            &schedule(&mut s, c.now(), "i", "Default"),
            "InstallASAP",
            "Idle",
        );
        assert_eq!(s.tick(c.now()), vec![UpdateEvent::PromptShown]);
        c.advance(secs(30 * 86400));
        assert!(s.tick(c.now()).is_empty());
        let (dl, _, st) = status_one(&status(&mut s, c.now()));
        assert_eq!((dl, st.as_str()), (Value::Boolean(true), "Idle"));
        ok(
            &schedule(&mut s, c.now(), "j", "InstallASAP"),
            "InstallASAP",
            "Idle",
        );
        assert_eq!(s.version().0, "17.5");
    }

    #[test]
    fn low_disk_low_battery_no_network() {
        let c = ManualClock::new(t0());
        let mut st = state();
        st.disk_free = 3 * GB - 1; // DownloadSize + InstallSize = 3 GB
        let mut s = sim_with(st, UserBehaviour::Never, Quirks::none());
        ok(
            &schedule(&mut s, c.now(), "a", "Default"),
            "DownloadOnly",
            "DownloadInsufficientSpace",
        );
        assert!(array(&status(&mut s, c.now()), "OSUpdateStatus").is_empty());

        let mut st = state();
        st.battery_level = 49;
        st.external_power = false;
        let mut s = sim_with(st, UserBehaviour::Never, Quirks::none());
        ok(
            &schedule(&mut s, c.now(), "a", "Default"),
            "DownloadOnly",
            "DownloadInsufficientPower",
        );
        s.set_power(49, true, true);
        ok(
            &schedule(&mut s, c.now(), "b", "Default"),
            "DownloadOnly",
            "Downloading",
        );

        let mut st = state();
        st.network = NetworkKind::None;
        let mut s = sim_with(st, UserBehaviour::Never, Quirks::none());
        ok(
            &schedule(&mut s, c.now(), "a", "Default"),
            "DownloadOnly",
            "DownloadInsufficientNetwork",
        );
        s.set_network(NetworkKind::Cellular);
        ok(
            &schedule(&mut s, c.now(), "b", "Default"),
            "DownloadOnly",
            "Downloading",
        );
    }

    #[test]
    fn install_conditions_are_checked_at_install_time() {
        let mut s = sim();
        let c = downloaded(&mut s);
        s.set_power(20, false, false);
        ok(
            &schedule(&mut s, c.now(), "i", "Default"),
            "InstallASAP",
            "InstallInsufficientPower",
        );
        s.set_power(20, true, true);
        s.set_disk_free(GB + GB / 2); // the 1 GB asset leaves 0.5 GB < 2 GB InstallSize
        ok(
            &schedule(&mut s, c.now(), "j", "Default"),
            "InstallASAP",
            "InstallInsufficientSpace",
        );
        s.set_disk_free(50 * GB);
        ok(
            &schedule(&mut s, c.now(), "k", "Default"),
            "InstallASAP",
            "Installing",
        );
    }

    #[test]
    fn a_download_stalls_without_network() {
        let mut s = sim();
        let c = ManualClock::new(t0());
        schedule(&mut s, c.now(), "a", "Default");
        c.advance(secs(20));
        s.tick(c.now());
        s.set_network(NetworkKind::None);
        c.advance(secs(1000));
        s.tick(c.now());
        assert_eq!(status_one(&status(&mut s, c.now())).1, 0.2);
        s.set_network(NetworkKind::Wifi);
        c.advance(secs(80));
        assert!(s.tick(c.now()).contains(&UpdateEvent::Downloaded));
    }

    #[test]
    fn quirk_11_3_is_downloaded_integer() {
        let mut st = state();
        st.version = "11.3".into();
        let mut s = sim_with(st, UserBehaviour::Never, Quirks::for_version("11.3"));
        s.config.catalogue[0].version = "11.4".into();
        let c = ManualClock::new(t0());
        ok(
            &schedule(&mut s, c.now(), "a", "Default"),
            "DownloadOnly",
            "Downloading",
        );
        assert_eq!(
            status_one(&status(&mut s, c.now())).0,
            Value::Integer(0.into())
        );
        c.advance(secs(100));
        s.tick(c.now());
        assert_eq!(
            status_one(&status(&mut s, c.now())).0,
            Value::Integer(1.into())
        );
    }

    #[test]
    fn quirk_11_3_no_update_is_error_2213() {
        let mut st = state();
        st.version = "11.3".into();
        let mut s = sim_with(
            st.clone(),
            UserBehaviour::Never,
            Quirks::for_version("11.3"),
        );
        s.config.catalogue.clear();
        let o = available(&mut s, t0());
        assert_eq!(o.status(), Some("Error"));
        assert_eq!(
            chain(&o),
            vec![
                (2213, "DeviceManagement.error".to_string()),
                (3, "com.apple.softwareupdateservices.errors".to_string())
            ]
        );
        // Documented behaviour: an empty array.
        let mut s = sim_with(st, UserBehaviour::Never, Quirks::for_version("11.2.6"));
        s.config.catalogue.clear();
        let o = available(&mut s, t0());
        assert_eq!(o.status(), Some("Acknowledged"));
        assert!(array(&o, "AvailableOSUpdates").is_empty());
    }

    #[test]
    fn available_updates_lists_the_newest_for_the_model() {
        let mut s = sim();
        let mut other_model = entry("17.7", "21H16");
        other_model.product_types = Some(vec!["iPhone15,2".into()]);
        s.config.catalogue = vec![entry("17.6", "21G80"), entry("17.4", "21E219"), other_model];
        let o = available(&mut s, t0());
        let a = array(&o, "AvailableOSUpdates");
        assert_eq!(a.len(), 1);
        let d = a[0].as_dictionary().unwrap();
        assert_eq!(s_(d, "ProductKey"), KEY);
        assert_eq!(s_(d, "HumanReadableName"), "iOS 17.6");
        assert_eq!(s_(d, "ProductName"), "iOS");
        assert_eq!(s_(d, "Version"), "17.6");
        assert_eq!(s_(d, "Build"), "21G80");
        assert_eq!(
            d.get("DownloadSize").and_then(Value::as_unsigned_integer),
            Some(GB)
        );
        assert_eq!(
            d.get("InstallSize").and_then(Value::as_unsigned_integer),
            Some(2 * GB)
        );
        for k in ["IsCritical", "RestartRequired", "AllowsInstallLater"] {
            assert!(d.get(k).and_then(Value::as_boolean).is_some(), "{k}");
        }
        // ProductVersion selects too (iOS 11.3+), and a missing Updates array means Default.
        let mut by_version = Dictionary::new();
        by_version.insert("ProductVersion".into(), "17.6".into());
        by_version.insert("InstallAction".into(), "DownloadOnly".into());
        let o = s.handle(
            t0(),
            "v",
            "ScheduleOSUpdate",
            &cmd(
                "ScheduleOSUpdate",
                Some(vec![Value::Dictionary(by_version)]),
            ),
        );
        ok(&o, "DownloadOnly", "Downloading");
        let o = s.handle(
            t0(),
            "n",
            "ScheduleOSUpdate",
            &cmd("ScheduleOSUpdate", None),
        );
        ok(&o, "DownloadOnly", "Downloading");
    }

    fn s_<'a>(d: &'a Dictionary, k: &str) -> &'a str {
        d.get(k).and_then(Value::as_string).unwrap()
    }

    #[test]
    fn after_a_restart_the_quirks_are_those_of_the_new_version() {
        let mut st = state();
        st.version = "11.3.1".into();
        let table = QuirkTable::builtin();
        let mut s = sim_with(st, UserBehaviour::Never, table.for_device("11.3.1", 7, "U"))
            .with_quirks_from(table, 7, "U");
        s.config.catalogue[0].version = "11.4".into();
        let c = ManualClock::new(t0());
        assert_eq!(schedule(&mut s, c.now(), "a", "Default"), Outcome::NoReply);
        c.advance(secs(100));
        s.tick(c.now());
        assert_eq!(schedule(&mut s, c.now(), "b", "Default"), Outcome::NoReply);
        c.advance(secs(780));
        s.tick(c.now());
        assert_eq!(s.version().0, "11.4");
        assert!(!s.quirks().has(ScheduleNoResponse));
        assert!(!s.quirks().has(AvailableUpdatesError2213));
        let o = available(&mut s, c.now());
        assert_eq!(o.status(), Some("Acknowledged"));
        assert!(array(&o, "AvailableOSUpdates").is_empty());
        // A command handled before the restart: Acknowledged, no UpdateResults (brief §0.3).
        let o = schedule(&mut s, c.now(), "b", "Default");
        assert_eq!(o.status(), Some("Acknowledged"));
        assert!(o.body().unwrap().get("UpdateResults").is_none());
    }

    #[test]
    fn quirk_11_3_1_schedule_gets_no_reply_but_runs() {
        let mut st = state();
        st.version = "11.3.1".into();
        let mut s = sim_with(st, UserBehaviour::Never, Quirks::for_version("11.3.1"));
        s.config.catalogue[0].version = "11.4".into();
        assert_eq!(schedule(&mut s, t0(), "a", "Default"), Outcome::NoReply);
        assert_eq!(status_one(&status(&mut s, t0())).2, "Downloading");
    }

    #[test]
    fn quirk_11_4_error_reply_yet_download_and_prompt() {
        let mut st = state();
        st.version = "11.4".into();
        st.passcode = true;
        let mut s = sim_with(st, UserBehaviour::Never, Quirks::for_version("11.4"));
        s.config.catalogue[0].version = "11.4.1".into();
        let c = ManualClock::new(t0());
        let o = schedule(&mut s, c.now(), "a", "Default");
        assert_eq!(o.status(), Some("Error"), "{o:?}");
        assert_eq!(result(&o).1, "Error");
        assert!(!chain(&o).is_empty());
        assert_eq!(
            status_one(&status(&mut s, c.now())).2,
            "Downloading",
            "download proceeds"
        );
        c.advance(secs(100));
        s.tick(c.now());
        let o = schedule(&mut s, c.now(), "b", "InstallASAP");
        assert_eq!(o.status(), Some("Error"));
        assert_eq!(
            s.tick(c.now()),
            vec![UpdateEvent::PromptShown],
            "the modal appears"
        );
    }

    #[test]
    fn quirk_installing_while_scheduled_and_second_command_installs_at_once() {
        let mut s = passcode_sim(UserBehaviour::Later, Quirks::for_version("12.1"));
        assert!(s.quirks().has(InstallingWhileScheduled));
        let c = downloaded(&mut s);
        ok(
            &schedule(&mut s, c.now(), "i", "Default"),
            "InstallASAP",
            "Idle",
        );
        let ev = s.tick(c.now());
        assert!(
            matches!(ev.last(), Some(UpdateEvent::InstallScheduled { .. })),
            "{ev:?}"
        );
        c.advance(secs(60));
        s.tick(c.now());
        let (dl, _, st) = status_one(&status(&mut s, c.now()));
        assert_eq!((dl, st.as_str()), (Value::Boolean(true), "Installing"));
        ok(
            &schedule(&mut s, c.now(), "again", "InstallASAP"),
            "InstallASAP",
            "Installing",
        );
        assert_eq!(s.tick(c.now()), vec![UpdateEvent::InstallStarted]);
        c.advance(secs(780));
        s.tick(c.now());
        assert_eq!(
            s.version().0,
            "17.6",
            "installed hours before the 1–3 AM window"
        );
    }

    #[test]
    fn quirk_below_10_3_requires_dep_and_no_passcode() {
        let mut st = state();
        st.version = "10.2.1".into();
        let q = Quirks::for_version("10.2.1");
        let mut s = sim_with(st.clone(), UserBehaviour::Never, q.clone());
        s.config.catalogue[0].version = "10.3".into();
        let o = schedule(&mut s, t0(), "a", "Default");
        assert_eq!(o.status(), Some("Error"));
        assert_eq!(chain(&o)[0].1, "MCMDMErrorDomain");
        st.dep_enrolled = true;
        st.passcode = true;
        let mut s = sim_with(st.clone(), UserBehaviour::Never, q.clone());
        s.config.catalogue[0].version = "10.3".into();
        assert_eq!(
            schedule(&mut s, t0(), "a", "Default").status(),
            Some("Error")
        );
        st.passcode = false;
        let mut s = sim_with(st, UserBehaviour::Never, q);
        s.config.catalogue[0].version = "10.3".into();
        // Before 11.3 ProductVersion is unknown, ProductKey works.
        ok(
            &schedule(&mut s, t0(), "a", "Default"),
            "DownloadOnly",
            "Downloading",
        );
    }

    #[test]
    fn quirk_notnow_before_first_unlock() {
        let mut st = state();
        st.unlocked_since_boot = false;
        let mut s = sim_with(st, UserBehaviour::Never, Quirks::for_version("17.5"));
        assert_eq!(
            schedule(&mut s, t0(), "a", "Default").status(),
            Some("NotNow")
        );
        assert_eq!(status(&mut s, t0()).status(), Some("NotNow"));
        assert_eq!(available(&mut s, t0()).status(), Some("NotNow"));
        s.set_unlocked(true);
        ok(
            &schedule(&mut s, t0(), "a", "Default"),
            "DownloadOnly",
            "Downloading",
        );
    }

    #[test]
    fn odd_commands_never_panic() {
        let mut s = sim();
        let fmt = |s: &mut OsUpdateSim, updates: Value| {
            let mut d = cmd("ScheduleOSUpdate", None);
            d.insert("Updates".into(), updates);
            s.handle(t0(), "x", "ScheduleOSUpdate", &d)
                .status()
                .map(str::to_string)
        };
        let cfe = Some("CommandFormatError".to_string());
        assert_eq!(fmt(&mut s, Value::String("no".into())), cfe);
        assert_eq!(fmt(&mut s, Value::Array(vec![Value::Boolean(true)])), cfe);
        let mut d = Dictionary::new();
        d.insert("ProductKey".into(), KEY.into());
        assert_eq!(
            fmt(&mut s, Value::Array(vec![Value::Dictionary(d.clone())])),
            cfe
        );
        d.insert("InstallAction".into(), "Whenever".into());
        assert_eq!(
            fmt(&mut s, Value::Array(vec![Value::Dictionary(d.clone())])),
            cfe
        );
        d.insert("InstallAction".into(), Value::Integer(1.into()));
        assert_eq!(
            fmt(&mut s, Value::Array(vec![Value::Dictionary(d.clone())])),
            cfe
        );
        d.insert("InstallAction".into(), "Default".into());
        d.insert("ProductKey".into(), Value::Integer(7.into()));
        assert_eq!(
            fmt(&mut s, Value::Array(vec![Value::Dictionary(d.clone())])),
            cfe
        );
        d.remove("ProductKey");
        assert_eq!(fmt(&mut s, Value::Array(vec![Value::Dictionary(d)])), cfe);
        assert!(
            array(&status(&mut s, t0()), "OSUpdateStatus").is_empty(),
            "no effect"
        );

        // Unknown product and macOS-only actions: an Error item.
        let mut d = Dictionary::new();
        d.insert("ProductKey".into(), "iOSUpdate99Z1".into());
        d.insert("InstallAction".into(), "Default".into());
        let o = s.handle(
            t0(),
            "u",
            "ScheduleOSUpdate",
            &cmd("ScheduleOSUpdate", Some(vec![Value::Dictionary(d)])),
        );
        assert_eq!(
            result(&o),
            ("iOSUpdate99Z1".into(), "Error".into(), "Idle".into())
        );
        let o = schedule(&mut s, t0(), "m", "InstallForceRestart");
        assert_eq!(result(&o), (KEY.into(), "Error".into(), "Idle".into()));
        assert_eq!(
            s.handle(t0(), "e", "ScheduleOSUpdate", &Dictionary::new())
                .status(),
            Some("Acknowledged")
        );

        let o = s.handle(
            t0(),
            "q",
            "DeviceInformation",
            &cmd("DeviceInformation", None),
        );
        assert_eq!(o.status(), Some("Error"));
        assert_eq!(chain(&o), vec![(12021, "MCMDMErrorDomain".to_string())]);

        let mut st = state();
        st.supervised = false;
        let mut u = sim_with(st, UserBehaviour::Never, Quirks::none());
        assert_eq!(
            schedule(&mut u, t0(), "a", "Default").status(),
            Some("Error")
        );
        assert_eq!(available(&mut u, t0()).status(), Some("Error"));
    }

    #[test]
    fn extreme_durations_do_not_panic() {
        let mut st = state();
        st.passcode = true;
        let mut s = OsUpdateSim::new(
            st,
            UpdateConfig {
                catalogue: vec![entry("17.6", "21G80")],
                user: UserBehaviour::Approve {
                    after: Duration::MAX,
                },
                timing: Timing {
                    download_rate: 1,
                    install: Duration::MAX,
                    restart: Duration::MAX,
                    defer_interval: Duration::MAX,
                    unlock_after_restart: Some(Duration::MAX),
                },
            },
            Quirks::for_version("17.5"),
            1,
        );
        ok(
            &schedule(&mut s, t0(), "a", "Default"),
            "DownloadOnly",
            "Downloading",
        );
        let far = DateTime::<Utc>::MAX_UTC;
        s.tick(far);
        ok(
            &schedule(&mut s, far, "b", "Default"),
            "InstallASAP",
            "Idle",
        );
        s.tick(far);
        assert!(!s.offline(far));
    }

    #[test]
    fn spec_yaml_shapes() {
        let y = r#"
catalogue:
  - { version: "17.6", build: 21G80, download_size: 6.4 GB, install_size: 2.9 GB }
  - version: "18.0"
    build: 22A3354
    download_size: 7 GB
    install_size: 3 GB
    product_types: ["iPhone12,1"]   # quoted: in a YAML flow list the comma separates
    is_critical: true
user: { defer: { times: 2, then: { approve: { after: 30s } } } }
download_rate: 20 MB
install_duration: 10m
restart_duration: 3m
defer_interval: 1h
dep_enrolled: true
local_offset_minutes: -300
"#;
        let spec: UpdateBehaviourSpec = serde_saphyr::from_str(y).unwrap();
        let cfg = spec.config().unwrap();
        assert_eq!(cfg.catalogue[0].product_key, "iOSUpdate21G80");
        assert_eq!(cfg.catalogue[0].download_size, 6_400_000_000);
        assert_eq!(
            cfg.catalogue[1].product_types,
            Some(vec!["iPhone12,1".to_string()])
        );
        assert_eq!(cfg.timing.download_rate, 20_000_000);
        assert_eq!(cfg.timing.install, secs(600));
        assert_eq!(
            cfg.user,
            UserBehaviour::Defer {
                times: 2,
                then: Box::new(UserBehaviour::Approve { after: secs(30) })
            }
        );
        assert!(spec.dep_enrolled && spec.unlocked_since_boot);
        for (text, want) in [
            ("user: later", UserBehaviour::Later),
            ("user: never", UserBehaviour::Never),
            ("{}", UserBehaviour::Approve { after: secs(0) }),
        ] {
            let spec: UpdateBehaviourSpec = serde_saphyr::from_str(text).unwrap();
            assert_eq!(spec.config().unwrap().user, want, "{text}");
        }
        assert!(serde_saphyr::from_str::<UpdateBehaviourSpec>("colour: red").is_err());
        assert!(serde_saphyr::from_str::<UpdateBehaviourSpec>("user: sometimes").is_err());
        let bad: UpdateBehaviourSpec = serde_saphyr::from_str("download_rate: 0").unwrap();
        assert!(bad.config().is_err());
    }
}
