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

mod commands;
mod enforced;
mod spec;
mod timeline;

pub use enforced::Blocked;
pub use spec::{CatalogEntrySpec, UpdateBehaviourSpec, UserBehaviourSpec};

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
    /// A time the device is switched off (from, until): offline, as during a restart.
    off: Option<(DateTime<Utc>, DateTime<Utc>)>,
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
            off: None,
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

    /// True while the device reboots into the new OS, or is switched off ([`Self::set_off`]):
    /// detached from USB, no check-ins, no replies. Computed from `now` alone, so it is right
    /// even before the next `tick`.
    pub fn offline(&self, now: DateTime<Utc>) -> bool {
        if self
            .off
            .is_some_and(|(from, until)| now >= from && now < until)
        {
            return true;
        }
        match self.phase {
            Phase::Restarting { back_at, .. } => now < back_at,
            Phase::Installing { until, .. } => {
                now >= until && now < after(until, self.config.timing.restart)
            }
            _ => false,
        }
    }

    /// Nothing this machinery does can change with time alone until a command arrives: no
    /// download, user, install or restart under way or scheduled, no unlock pending, no
    /// switched-off time, no event waiting to be taken. The device then needs no clock tick.
    pub fn quiet(&self) -> bool {
        matches!(self.phase, Phase::Idle | Phase::Downloaded { .. })
            && self.next_due().is_none()
            && self.off.is_none()
            && self.events.is_empty()
    }

    /// Switch the device off from `from` until `until` (the DDM deadline rule for a device that
    /// was off, `data/ddm.yaml` `off_at_deadline_install_delay`).
    pub fn set_off(&mut self, from: DateTime<Utc>, until: DateTime<Utc>) {
        self.off = Some((from, until));
    }

    /// When an offline device is back: the end of its switched-off time or of its restart;
    /// `None` when it is not offline at `now`.
    pub fn back_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !self.offline(now) {
            return None;
        }
        if let Some((from, until)) = self.off
            && now >= from
            && now < until
        {
            return Some(until);
        }
        match self.phase {
            Phase::Restarting { back_at, .. } => Some(back_at),
            Phase::Installing { until, .. } => Some(after(until, self.config.timing.restart)),
            _ => Some(now),
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
}

#[cfg(test)]
mod tests;
