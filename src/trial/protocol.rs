//! The trial protocol (`trials/*.yaml`): what will be done, to whom, and how it is judged.
//! Frozen (copied + SHA-256) into the run folder when a run starts. Every key is documented with
//! examples in `trials/README.md`; unknown keys and wrong types are refused with file:line:col.

use crate::input::InputError;
use crate::mdm::command::InstallAction;
use crate::units::{Bytes, DurationSpec};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocol {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub hypothesis: String,
    /// Radar numbers, links.
    #[serde(default)]
    pub references: Vec<String>,
    pub lab: LabSpec,
    #[serde(default)]
    pub eligibility: EligibilitySpec,
    pub target: TargetSpec,
    pub arms: Vec<ArmSpec>,
    /// Seed of the allocation draw (recorded in the journal).
    #[serde(default)]
    pub allocation_seed: u64,
    #[serde(default)]
    pub follow_up: FollowUpSpec,
    #[serde(default)]
    pub checkpoints: Vec<CheckpointSpec>,
    #[serde(default)]
    pub stop: StopSpec,
    /// Saved copies of Apple's version feeds (`crate::feeds`).
    #[serde(default)]
    pub feeds: Option<FeedsSpec>,
}

/// Saved feed files, relative to the protocol file; read offline, checked when the protocol is
/// loaded.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FeedsSpec {
    /// A saved gdmf pmv (`https://gdmf.apple.com/v2/pmv`).
    pub gdmf: Option<PathBuf>,
    /// Saved ipsw.me device files, one per model.
    #[serde(default)]
    pub ipsw: Vec<PathBuf>,
    /// The trial date the feeds are read at (default: the run date).
    pub date: Option<chrono::NaiveDate>,
}

/// Where the devices are: a simulated lab, or a real bench.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabSpec {
    pub simulated: Option<SimulatedLabSpec>,
    /// Real bench: usbmuxd addresses (`UNIX:/path`, `/path`, `host:port`).
    #[serde(default)]
    pub usbmuxd: Vec<String>,
    pub mdm: Option<MdmSpec>,
    /// A bench that runs this many times faster than real time (a `lab sim serve --speed N`
    /// lab): follow-up intervals are divided by it. Default 1.
    pub time_scale: Option<f64>,
    /// How the harness calls the MDM's API: timeout, bounded retries with backoff.
    #[serde(default)]
    pub mdm_api: MdmApiSpec,
    /// The lab-wide dose ledger, relative to the protocol file (see `trial::ledger` for the
    /// precedence: `--ledger`, then `$LAB_LEDGER`, then this key, then the user's state
    /// directory). Ignored by an in-process simulated lab, whose ledger is in its run folder.
    pub ledger: Option<PathBuf>,
}

/// Timeouts and retries of MDM API calls. A retry of a ScheduleOSUpdate is sent only when the
/// MDM's own records prove the first attempt was not queued (see `trial::runner`); attempts
/// are spaced `backoff`, `2 × backoff`, `4 × backoff`, … apart (real time, not scaled).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MdmApiSpec {
    pub timeout: DurationSpec,
    /// Attempts per call, the first included (≥ 1).
    pub attempts: u32,
    pub backoff: DurationSpec,
}

impl Default for MdmApiSpec {
    fn default() -> Self {
        MdmApiSpec {
            timeout: DurationSpec(std::time::Duration::from_secs(15)),
            attempts: 4,
            backoff: DurationSpec(std::time::Duration::from_secs(1)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedLabSpec {
    /// Fleet file, relative to the protocol file.
    pub fleet: PathBuf,
    #[serde(default = "one")]
    pub speed: f64,
    pub seed: Option<u64>,
    /// Faults the simulated lab's MDM server injects (relative to the protocol file; see
    /// `src/mdm_server/faults.rs`), to rehearse a flaky MDM.
    pub mdm_faults: Option<PathBuf>,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MdmKind {
    Embedded,
    Nanomdm,
    Micromdm,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MdmSpec {
    pub kind: MdmKind,
    pub url: String,
    /// Name of the environment variable holding the API key (never the key itself).
    pub api_key_env: String,
    pub webhook: Option<WebhookSpec>,
    /// The DDM server beside the MDM (KMFDDM, DDM brief §6), for `ddm_enforcement` arms. An
    /// `embedded` MDM speaks DDM itself and needs none.
    pub ddm: Option<DdmServerSpec>,
}

/// A KMFDDM server: its root URL and the environment variable holding its API key (HTTP Basic
/// user `kmfddm`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DdmServerSpec {
    pub url: String,
    pub api_key_env: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    pub listen: String,
    pub hmac_key_env: Option<String>,
}

/// Eligibility rules; every rule can be turned off or tuned. Defaults come from the field
/// (briefs/field.md, mdm.md §1 and §7).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EligibilitySpec {
    /// ScheduleOSUpdate needs a supervised device (Apple's schema).
    pub supervised: bool,
    /// Minimum iOS; below it only DEP-enrolled devices without a passcode qualify.
    pub min_ios: Option<String>,
    /// Versions with known ScheduleOSUpdate bugs. `None`: the list derived from
    /// `data/quirks.yaml` (11.3, 11.3.1, 11.4, 11.4.1); `Some([])`: rule off.
    pub known_bad_versions: Option<Vec<String>>,
    pub free_disk: FreeDiskRule,
    pub battery: BatteryRule,
    pub passcode: PasscodeRule,
    /// A newer target than the device's version must exist for it.
    pub newer_target: bool,
    /// The MDM enrollment must grant app management (AccessRights bit 4096) where the MDM
    /// reports it.
    pub app_management_right: bool,
    /// A Shared iPad with a user logged in is excluded.
    pub exclude_shared_ipad_with_user: bool,
    /// Devices another protocol already dosed at their current build are excluded.
    pub not_already_dosed: bool,
    /// With a gdmf feed: the feed must offer the device's model a release newer than the
    /// device's version on the trial date.
    pub newer_target_in_feed: bool,
    /// What the bench's configuration states of every device's enrollment, where neither the
    /// device nor the MDM tells (issue 14).
    pub enrollment: BenchEnrollmentSpec,
    /// What a fact that cannot be known does to a device (issue 14; fail-safe by default).
    pub unknown_facts: UnknownFactsSpec,
}

/// `eligibility.enrollment: { dep_enrolled: true, access_rights: 8191 }`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BenchEnrollmentSpec {
    /// Every device was enrolled through DEP (Automated Device Enrollment).
    pub dep_enrolled: Option<bool>,
    /// The `AccessRights` of the MDM payload the bench's devices were enrolled with (MDM brief
    /// §4 bits; 4096 "Allow app management").
    pub access_rights: Option<u64>,
}

/// Per fact: `exclude` (the device is excluded, the reason says the fact is unknown) or
/// `allow` (the rule does not fire on an unknown fact).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownPolicy {
    Exclude,
    Allow,
}

/// `eligibility.unknown_facts: { dep_enrolled: exclude, shared_ipad_user: exclude,
/// access_rights: allow }` (the defaults). No MDM `lab` speaks to reports the enrollment's
/// access rights, so excluding on unknown rights is opt-in.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnknownFactsSpec {
    /// Below `min_ios`, an unknown DEP enrolment counts as not DEP (`allow`: as DEP).
    pub dep_enrolled: UnknownPolicy,
    pub shared_ipad_user: UnknownPolicy,
    pub access_rights: UnknownPolicy,
}

impl Default for UnknownFactsSpec {
    fn default() -> Self {
        UnknownFactsSpec {
            dep_enrolled: UnknownPolicy::Exclude,
            shared_ipad_user: UnknownPolicy::Exclude,
            access_rights: UnknownPolicy::Allow,
        }
    }
}

impl Default for EligibilitySpec {
    fn default() -> Self {
        EligibilitySpec {
            supervised: true,
            min_ios: Some("10.3".into()),
            known_bad_versions: None,
            free_disk: FreeDiskRule::default(),
            battery: BatteryRule::default(),
            passcode: PasscodeRule::Any,
            newer_target: true,
            app_management_right: true,
            exclude_shared_ipad_with_user: true,
            not_already_dosed: true,
            newer_target_in_feed: true,
            enrollment: BenchEnrollmentSpec::default(),
            unknown_facts: UnknownFactsSpec::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FreeDiskRule {
    pub enabled: bool,
    /// Needed when the device's AvailableOSUpdates gives no sizes.
    pub fallback_min: Bytes,
}

impl Default for FreeDiskRule {
    fn default() -> Self {
        FreeDiskRule {
            enabled: true,
            fallback_min: Bytes(6_000_000_000),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatteryRule {
    pub enabled: bool,
    pub min_percent: u8,
    /// External power satisfies the rule whatever the level.
    pub or_external_power: bool,
}

impl Default for BatteryRule {
    fn default() -> Self {
        BatteryRule {
            enabled: true,
            min_percent: 50,
            or_external_power: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PasscodeRule {
    #[default]
    Any,
    Required,
    Absent,
}

/// What to update to.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TargetSpec {
    ProductVersion(String),
    ProductKey(String),
    /// The newest update the device itself offers (AvailableOSUpdates).
    Latest,
    /// The newest iOS release the gdmf feed (`feeds.gdmf`) offers the device's model on the
    /// trial date.
    #[serde(alias = "latest-for-model")]
    LatestForModel,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmSpec {
    pub name: String,
    /// A ScheduleOSUpdate arm: `Default`, `DownloadOnly` or `InstallASAP`; the macOS-only actions
    /// are refused where they are written. An arm has this or `ddm_enforcement`, not both.
    #[serde(default, deserialize_with = "ios_install_action_opt")]
    pub install_action: Option<InstallAction>,
    /// A DDM arm (issue 13): the dose is a software-update enforcement declaration
    /// (`com.apple.configuration.softwareupdate.enforcement.specific`) whose `TargetOSVersion`
    /// is the protocol's target.
    pub ddm_enforcement: Option<EnforcementSpec>,
    /// A second command sent only when the protocol says so (iOS installs in two steps).
    pub follow_up_step: Option<FollowUpStep>,
    #[serde(default)]
    pub allocation: AllocationSpec,
    /// A bug-reproduction arm: it takes the devices excluded *only* because they run a version
    /// with known ScheduleOSUpdate bugs (rule `known_bad_version`), to reproduce those bugs on
    /// purpose, and no other device. The waiver is recorded with each device's verdict.
    #[serde(default)]
    pub accept_known_bad: bool,
}

/// How an arm's dose reaches the device. Eligibility picks its rules by it
/// (`trial::eligibility::TABLE`), and devices.csv names it (`dose_mechanism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DoseMechanism {
    /// The MDM command ScheduleOSUpdate (briefs mdm.md §1).
    ScheduleOsUpdate,
    /// The DDM configuration `com.apple.configuration.softwareupdate.enforcement.specific`
    /// (briefs ddm.md §2), posted to the device's enrollment and synced.
    DdmEnforcement,
}

impl DoseMechanism {
    /// As devices.csv and the journal's targets write it.
    pub fn as_str(self) -> &'static str {
        match self {
            DoseMechanism::ScheduleOsUpdate => "schedule_os_update",
            DoseMechanism::DdmEnforcement => "ddm_enforcement",
        }
    }

    pub fn parse(s: &str) -> Option<DoseMechanism> {
        match s {
            "schedule_os_update" => Some(DoseMechanism::ScheduleOsUpdate),
            "ddm_enforcement" => Some(DoseMechanism::DdmEnforcement),
            _ => None,
        }
    }
}

impl ArmSpec {
    pub fn dose_mechanism(&self) -> DoseMechanism {
        if self.ddm_enforcement.is_some() {
            DoseMechanism::DdmEnforcement
        } else {
            DoseMechanism::ScheduleOsUpdate
        }
    }

    /// The first step's InstallAction (`Default` for a DDM arm, which has none).
    pub fn action(&self) -> InstallAction {
        self.install_action.unwrap_or(InstallAction::Default)
    }
}

/// A DDM arm's enforcement (enforcement schema `softwareupdate.enforcement.specific.yaml`):
/// the target version is the protocol's `target` (`product_version`; `latest`, the newest the
/// device offers; or `latest_for_model`, resolved per device from the gdmf feed).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnforcementSpec {
    /// `TargetBuildVersion` (optional; the version wins when the two disagree).
    pub target_build: Option<String>,
    /// `TargetLocalDateTime`: when the device force-installs.
    pub deadline: DeadlineSpec,
    /// `DetailsURL` (optional).
    pub details_url: Option<String>,
}

/// When an enforcement's deadline falls. The declaration carries a device-local date-time
/// without zone (enforcement schema, `TargetLocalDateTime`); an offset is turned into one at
/// the dose, from the device's own clock and time zone as its baseline probe read them.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DeadlineSpec {
    /// `yyyy-mm-ddThh:mm:ss`, the device's local time.
    Local(String),
    /// This long after the dose, in device time.
    AfterDose(DurationSpec),
    /// This long before the dose: a deadline already past when the device gets it (it prompts
    /// at once and installs about an hour later, briefs ddm.md §4).
    BeforeDose(DurationSpec),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowUpStep {
    #[serde(deserialize_with = "ios_install_action")]
    pub install_action: InstallAction,
    /// When to send it.
    #[serde(default)]
    pub when: StepTrigger,
}

/// [`ios_install_action`] for an optional key.
fn ios_install_action_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<InstallAction>, D::Error> {
    ios_install_action(d).map(Some)
}

/// An `InstallAction` iOS knows (mdm.md §1); the error carries the YAML location.
fn ios_install_action<'de, D: serde::Deserializer<'de>>(d: D) -> Result<InstallAction, D::Error> {
    let a = InstallAction::deserialize(d)?;
    if is_ios_action(a) {
        Ok(a)
    } else {
        Err(serde::de::Error::custom(format!(
            "install_action {} is macOS-only; on iOS use Default, DownloadOnly or InstallASAP",
            a.as_str()
        )))
    }
}

fn is_ios_action(a: InstallAction) -> bool {
    matches!(
        a,
        InstallAction::Default | InstallAction::DownloadOnly | InstallAction::InstallASAP
    )
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum StepTrigger {
    /// Once OSUpdateStatus reports the update downloaded.
    #[default]
    Downloaded,
}

/// Which eligible devices go to an arm (`trial::allocation`): listed `udids` first, then
/// `count` devices drawn at random, then `stratify`d arms share the pool balanced by stratum; the
/// arms without any allocation share what is left, round-robin.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AllocationSpec {
    pub udids: Vec<String>,
    pub count: Option<usize>,
    pub stratify: Option<Stratum>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Stratum {
    Passcode,
    Model,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FollowUpSpec {
    pub poll_interval: DurationSpec,
    pub max_duration: DurationSpec,
    pub until: UntilSpec,
    /// Re-probe the device over USB at each poll (version, build, attached).
    pub reprobe: bool,
}

impl Default for FollowUpSpec {
    fn default() -> Self {
        FollowUpSpec {
            poll_interval: DurationSpec(std::time::Duration::from_secs(30)),
            max_duration: DurationSpec(std::time::Duration::from_secs(2 * 3600)),
            until: UntilSpec::Updated,
            reprobe: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UntilSpec {
    /// The device reports the target build.
    #[default]
    Updated,
    /// OSUpdateStatus says the update is downloaded.
    Downloaded,
    /// OSUpdateStatus reports this status.
    Status(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    pub at: CheckpointMoment,
    pub question: String,
    /// Observation kind the answer is recorded under.
    pub kind: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointMoment {
    Enrolment,
    AfterDose,
    AfterDownload,
    End,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StopSpec {
    /// Stop dosing once this many devices had a severe adverse event.
    pub severe_adverse_events: Option<u32>,
}

/// A protocol read from a file, with its bytes and SHA-256 (frozen into the run folder).
#[derive(Debug, Clone)]
pub struct LoadedProtocol {
    pub path: PathBuf,
    pub protocol: Protocol,
    pub bytes: Vec<u8>,
    pub sha256: String,
}

impl LoadedProtocol {
    /// A path in the protocol (e.g. the fleet), resolved against the protocol's folder.
    /// The protocol's feeds, read and parsed, at the trial date (`feeds.date`, else `run_date`).
    /// `None`: the protocol names no feed.
    pub fn load_feeds(
        &self,
        run_date: chrono::NaiveDate,
    ) -> Result<Option<crate::feeds::TrialFeeds>, InputError> {
        let Some(spec) = &self.protocol.feeds else {
            return Ok(None);
        };
        let gdmf = match &spec.gdmf {
            Some(g) => Some(crate::feeds::gdmf::load(&self.resolve(g))?),
            None => None,
        };
        let mut ipsw: Vec<crate::feeds::IpswFeed> = Vec::new();
        for f in &spec.ipsw {
            let feed = crate::feeds::ipsw::load(&self.resolve(f))?;
            if let Some(other) = ipsw.iter().find(|o| o.identifier == feed.identifier) {
                return Err(InputError::at(
                    &self.path,
                    None,
                    format!(
                        "feeds.ipsw: {} and {} both describe {}",
                        other.path.display(),
                        feed.path.display(),
                        feed.identifier
                    ),
                ));
            }
            ipsw.push(feed);
        }
        Ok(Some(crate::feeds::TrialFeeds {
            gdmf,
            ipsw,
            date: spec.date.unwrap_or(run_date),
        }))
    }

    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            return p.to_path_buf();
        }
        self.path
            .parent()
            .map(|d| d.join(p))
            .unwrap_or_else(|| p.to_path_buf())
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Read, parse and check a protocol. Every error names the file (and line and column where the
/// YAML gives them).
pub fn load(path: &Path) -> Result<LoadedProtocol, InputError> {
    let bytes = std::fs::read(path).map_err(|e| InputError {
        path: path.to_path_buf(),
        line: None,
        column: None,
        message: format!("cannot read: {e}"),
        snippet: None,
    })?;
    let text = crate::input::text_of(path, bytes.clone())?;
    let protocol: Protocol = crate::input::parse_yaml(path, &text)?;
    let loaded = LoadedProtocol {
        path: path.to_path_buf(),
        sha256: sha256_hex(&bytes),
        protocol,
        bytes,
    };
    check(&loaded)?;
    Ok(loaded)
}

/// Checks serde cannot express (each names the file and what is wrong), in this order: the id,
/// at least one arm, the MDM API settings, the arms, the versions, the target's feed, the lab.
pub fn check(p: &LoadedProtocol) -> Result<(), InputError> {
    let text = String::from_utf8_lossy(&p.bytes);
    let at = Locate {
        path: &p.path,
        text: &text,
    };
    let pr = &p.protocol;
    check_id(pr, &at)?;
    if pr.arms.is_empty() {
        return Err(at.err_at(
            "arms: at least one arm is needed".into(),
            locate_key(&text, "arms").map(|k| (k.0, k.1)),
        ));
    }
    check_mdm_api(&pr.lab.mdm_api, &at)?;
    check_arms(pr, &at)?;
    check_versions(pr, &at)?;
    let battery = pr.eligibility.battery.min_percent;
    if battery > 100 {
        return Err(at.err_at(
            format!("eligibility.battery.min_percent {battery} must be a percentage, 0 to 100"),
            locate_key(&text, "min_percent").map(|k| (k.0, k.2)),
        ));
    }
    let has_gdmf = pr.feeds.as_ref().is_some_and(|f| f.gdmf.is_some());
    if pr.target == TargetSpec::LatestForModel && !has_gdmf {
        return Err(at.err_at(
            "target latest_for_model needs a gdmf feed: feeds: { gdmf: PATH }".into(),
            locate_key(&text, "target").map(|k| (k.0, k.2)),
        ));
    }
    // Missing or malformed feed files are protocol errors (exit 2, before any run folder).
    p.load_feeds(chrono::Utc::now().date_naive())?;
    check_lab(p, &at)
}

/// The protocol file and its text, to point an error found after parsing at where the YAML
/// says it.
struct Locate<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Locate<'_> {
    fn err(&self, m: String) -> InputError {
        InputError::at(self.path, None, m)
    }

    /// An error at `loc` (line, column) when that could be found.
    fn err_at(&self, m: String, loc: Option<(u64, u64)>) -> InputError {
        let mut e = self.err(m);
        if let Some((line, column)) = loc {
            e.line = Some(line);
            e.column = Some(column);
            e = e.with_source(self.text);
        }
        e
    }
}

/// The id names the run folder: letters, digits, '-', '_' or '.'.
fn check_id(pr: &Protocol, at: &Locate) -> Result<(), InputError> {
    if pr.id.trim().is_empty()
        || !pr
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(at.err_at(
            format!(
                "id {:?} must be letters, digits, '-', '_' or '.' (it names the run folder)",
                pr.id
            ),
            locate_key(at.text, "id").map(|k| (k.0, k.2)),
        ));
    }
    Ok(())
}

/// Arm names used once, iOS install actions, a UDID allocated to one arm.
fn check_arms(pr: &Protocol, at: &Locate) -> Result<(), InputError> {
    let text = at.text;
    let mut names = std::collections::HashSet::new();
    for a in &pr.arms {
        if !names.insert(a.name.as_str()) {
            return Err(at.err_at(
                format!("arms: the name {:?} is used twice", a.name),
                locate_value(text, "name", &a.name, 2),
            ));
        }
        check_arm_dose(pr, a, at)?;
        for action in a
            .install_action
            .into_iter()
            .chain(a.follow_up_step.as_ref().map(|s| s.install_action))
        {
            if !is_ios_action(action) {
                return Err(at.err(format!(
                    "arm {:?}: install_action {} is macOS-only; on iOS use Default, DownloadOnly or InstallASAP",
                    a.name,
                    action.as_str()
                )));
            }
        }
    }
    if let Err(e) = super::allocation::check_strata(&pr.arms) {
        let at_key = locate_key(text, "stratify").map(|k| (k.0, k.2));
        return Err(at.err_at(format!("allocation: {e}"), at_key));
    }
    // A UDID listed in two arms' allocations.
    let mut listed: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for a in &pr.arms {
        for u in &a.allocation.udids {
            if let Some(first) = listed.insert(u.as_str(), a.name.as_str())
                && first != a.name
            {
                return Err(at.err_at(
                    format!(
                        "allocation: {u} is listed in arms {first:?} and {:?} (a device goes to one arm)",
                        a.name
                    ),
                    locate_token(text, u, 2),
                ));
            }
        }
    }
    Ok(())
}

/// An arm doses one way: `install_action` (ScheduleOSUpdate) or `ddm_enforcement`; a DDM arm
/// has one step, no bug-reproduction waiver (that rule is about ScheduleOSUpdate), a target
/// that names a version, and a deadline that parses.
fn check_arm_dose(pr: &Protocol, a: &ArmSpec, at: &Locate) -> Result<(), InputError> {
    let here = || locate_value(at.text, "name", &a.name, 1);
    let Some(e) = &a.ddm_enforcement else {
        if a.install_action.is_none() {
            return Err(at.err_at(
                format!(
                    "arm {:?}: give install_action (a ScheduleOSUpdate arm) or ddm_enforcement (a DDM arm)",
                    a.name
                ),
                here(),
            ));
        }
        return Ok(());
    };
    let refuse = |what: &str| {
        Err(at.err_at(
            format!("arm {:?}: a ddm_enforcement arm {what}", a.name),
            here(),
        ))
    };
    if a.install_action.is_some() {
        return refuse(
            "takes no install_action (that is ScheduleOSUpdate's); the declaration's deadline says when",
        );
    }
    if a.follow_up_step.is_some() {
        return refuse("has one step: the declaration (no follow_up_step)");
    }
    if a.accept_known_bad {
        return refuse("cannot accept_known_bad: the known-bad versions are ScheduleOSUpdate bugs");
    }
    if let TargetSpec::ProductKey(_) = pr.target {
        return Err(at.err_at(
            format!(
                "arm {:?}: a ddm_enforcement arm needs target product_version, latest or latest_for_model (the declaration's TargetOSVersion names a version, not a product key)",
                a.name
            ),
            locate_key(at.text, "target").map(|k| (k.0, k.2)),
        ));
    }
    if let DeadlineSpec::Local(t) = &e.deadline
        && let Err(err) = crate::mdm::ddm::LocalDateTime::parse(t)
    {
        return Err(at.err_at(
            format!("arm {:?}: ddm_enforcement.deadline.local: {err}", a.name),
            locate_token(at.text, t, 1),
        ));
    }
    for (key, v) in [
        ("target_build", &e.target_build),
        ("details_url", &e.details_url),
    ] {
        if v.as_ref()
            .is_some_and(|v| v.trim().is_empty() || v.len() > 1024)
        {
            return refuse(&format!(
                "has an empty (or over 1024-byte) ddm_enforcement.{key}"
            ));
        }
    }
    Ok(())
}

/// Bounded attempts and a timeout the MDM can meet.
fn check_mdm_api(api: &MdmApiSpec, at: &Locate) -> Result<(), InputError> {
    if api.attempts == 0 || api.attempts > 20 {
        return Err(at.err_at(
            format!(
                "lab.mdm_api.attempts {} must be between 1 and 20 (the first attempt included)",
                api.attempts
            ),
            locate_key(at.text, "attempts").map(|k| (k.0, k.2)),
        ));
    }
    if api.timeout.0 < std::time::Duration::from_millis(100) {
        return Err(at.err_at(
            "lab.mdm_api.timeout must be at least 100ms".into(),
            locate_key(at.text, "timeout").map(|k| (k.0, k.2)),
        ));
    }
    Ok(())
}

/// Every version the protocol writes (`min_ios`, `known_bad_versions`, `product_version`).
fn check_versions(pr: &Protocol, at: &Locate) -> Result<(), InputError> {
    let version = |what: &str, key: &str, v: &str| {
        crate::version::Version::parse(v).map(|_| ()).map_err(|e| {
            at.err_at(
                format!("{what}: {e}"),
                locate_value(at.text, key, v, 1).or_else(|| locate_token(at.text, v, 1)),
            )
        })
    };
    if let Some(v) = &pr.eligibility.min_ios {
        version("eligibility.min_ios", "min_ios", v)?;
    }
    for v in pr.eligibility.known_bad_versions.iter().flatten() {
        version("eligibility.known_bad_versions", "known_bad_versions", v)?;
    }
    if let TargetSpec::ProductVersion(v) = &pr.target {
        version("target.product_version", "product_version", v)?;
    }
    Ok(())
}

/// Either a simulated lab (its fleet file there, a positive speed) or a real bench (an MDM and
/// usbmuxd addresses that parse).
fn check_lab(p: &LoadedProtocol, at: &Locate) -> Result<(), InputError> {
    let pr = &p.protocol;
    match (&pr.lab.simulated, pr.lab.usbmuxd.is_empty(), &pr.lab.mdm) {
        (Some(sim), true, _) => {
            let fleet = p.resolve(&sim.fleet);
            if !fleet.exists() {
                return Err(at.err(format!(
                    "lab.simulated.fleet: {} does not exist",
                    fleet.display()
                )));
            }
            if !(sim.speed > 0.0 && sim.speed.is_finite()) {
                return Err(at.err_at(
                    format!("lab.simulated.speed {} must be positive", sim.speed),
                    locate_key(at.text, "speed").map(|k| (k.0, k.2)),
                ));
            }
            // The fleet's own content is the simulator's to read: the command line checks it
            // right after this (`cli::trial`), before any run folder exists.
        }
        (Some(_), false, _) => {
            return Err(at.err_at(
                "lab: give either simulated or usbmuxd (a real bench), not both".into(),
                locate_key(at.text, "usbmuxd").map(|k| (k.0, k.1)),
            ));
        }
        (None, true, _) => {
            return Err(at.err("lab: give simulated: {fleet: …} or usbmuxd: [ADDR…]".into()));
        }
        (None, false, None) => {
            return Err(at.err("lab.mdm is needed for a real bench".into()));
        }
        (None, false, Some(mdm)) => {
            for a in &pr.lab.usbmuxd {
                crate::usbmux::UsbmuxAddr::parse(a)
                    .map_err(|e| at.err(format!("lab.usbmuxd: {e}")))?;
            }
            check_webhook(mdm, at)?;
        }
    }
    Ok(())
}

/// MicroMDM never signs its webhooks (issue 17; MicroMDM's webhook has no HMAC): with a key,
/// the listener would refuse every result with 401 and the trial would see no answers.
fn check_webhook(mdm: &MdmSpec, at: &Locate) -> Result<(), InputError> {
    if mdm.kind == MdmKind::Micromdm
        && mdm
            .webhook
            .as_ref()
            .is_some_and(|w| w.hmac_key_env.is_some())
    {
        return Err(at.err_at(
            "lab.mdm.webhook.hmac_key_env: MicroMDM does not sign its webhooks, so with a key every result would be refused (401) and no answer would reach the trial; remove the key for kind: micromdm".into(),
            locate_key(at.text, "hmac_key_env").map(|k| (k.0, k.1)),
        ));
    }
    Ok(())
}

/// Line, key column and value column (1-based) of the first `key:` in block or flow style.
fn locate_key(text: &str, key: &str) -> Option<(u64, u64, u64)> {
    for (i, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(pos) = line[from..].find(key).map(|p| p + from) {
            from = pos + key.len();
            let before_ok = line[..pos]
                .chars()
                .last()
                .is_none_or(|c| matches!(c, ' ' | '\t' | '-' | '{' | ','));
            let Some(rest) = line[from..].strip_prefix(':') else {
                continue;
            };
            if !before_ok || line.trim_start().starts_with('#') {
                continue;
            }
            let vstart = line.len() - rest.trim_start().len();
            let col = |b: usize| line[..b].chars().count() as u64 + 1;
            return Some((i as u64 + 1, col(pos), col(vstart)));
        }
    }
    None
}

/// Line and column of the `nth` occurrence of `token` as a whole word (quoted or not).
fn locate_token(text: &str, token: &str, nth: usize) -> Option<(u64, u64)> {
    let mut seen = 0;
    for (i, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(pos) = line[from..].find(token).map(|p| p + from) {
            from = pos + token.len();
            let word = |c: char| c.is_alphanumeric() || c == '_' || c == '-' || c == '.';
            let before = line[..pos].chars().last().is_none_or(|c| !word(c));
            let after = line[from..].chars().next().is_none_or(|c| !word(c));
            if before && after {
                seen += 1;
                if seen == nth {
                    return Some((i as u64 + 1, line[..pos].chars().count() as u64 + 1));
                }
            }
        }
    }
    None
}

/// Line and column (1-based) of the `nth` (1-based) value `value` of key `key` in block or flow
/// style (`name: x`, `- name: "x"`, `{name: x, …}`); for errors found after parsing.
fn locate_value(text: &str, key: &str, value: &str, nth: usize) -> Option<(u64, u64)> {
    let mut seen = 0;
    for (i, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(pos) = line[from..].find(key).map(|p| p + from) {
            from = pos + key.len();
            let before_ok = line[..pos]
                .chars()
                .last()
                .is_none_or(|c| matches!(c, ' ' | '\t' | '-' | '{' | ','));
            let Some(rest) = line[from..].strip_prefix(':') else {
                continue;
            };
            if !before_ok {
                continue;
            }
            let trimmed = rest.trim_start();
            let vstart = line.len() - trimmed.len();
            let unquoted = trimmed.trim_start_matches(['"', '\'']);
            let matches = unquoted.strip_prefix(value).is_some_and(|after| {
                after.is_empty() || after.starts_with(['"', '\'', ',', '}', ' ', '#'])
            });
            if matches {
                seen += 1;
                if seen == nth {
                    return Some((i as u64 + 1, line[..vstart].chars().count() as u64 + 1));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_value_finds_block_and_flow_keys() {
        let t = "arms:\n  - name: a\n    x: 1\n  - { name: \"a\", y: 2 }\n  - rename: a\n";
        assert_eq!(locate_value(t, "name", "a", 1), Some((2, 11)));
        assert_eq!(locate_value(t, "name", "a", 2), Some((4, 13)));
        assert_eq!(locate_value(t, "name", "a", 3), None);
        assert_eq!(locate_value(t, "name", "ab", 1), None);
    }

    /// Issue 14: a battery minimum above 100 % is refused where it is written (a u8 took 150).
    #[test]
    fn a_battery_minimum_above_100_percent_is_refused() {
        let protocol = |min: u32| {
            let text = format!(
                "id: t\ntitle: t\nhypothesis: h\nlab:\n  simulated: {{ fleet: f.yaml }}\n\
                 target: latest\narms:\n  - name: a\n    install_action: Default\n\
                 allocation_seed: 1\nfollow_up: {{ poll_interval: 30s, max_duration: 1h }}\n\
                 eligibility:\n  battery: {{ min_percent: {min} }}\n"
            );
            let path = Path::new("p.yaml");
            LoadedProtocol {
                path: path.to_path_buf(),
                sha256: String::new(),
                protocol: crate::input::parse_yaml(path, &text).unwrap(),
                bytes: text.into_bytes(),
            }
        };
        let e = check(&protocol(150)).unwrap_err();
        assert_eq!(
            e.message,
            "eligibility.battery.min_percent 150 must be a percentage, 0 to 100"
        );
        assert_eq!(e.line, Some(13), "{e}");
        // 100 % passes this check (whatever the rest of the file then says).
        let ok = check(&protocol(100));
        assert!(
            ok.as_ref()
                .err()
                .is_none_or(|e| !e.message.contains("min_percent")),
            "{ok:?}"
        );
    }
}

#[cfg(test)]
mod enrollment_keys {
    use super::*;

    fn eligibility(yaml: &str) -> Result<EligibilitySpec, crate::input::InputError> {
        crate::input::parse_yaml(std::path::Path::new("p.yaml"), yaml)
    }

    #[test]
    fn bench_enrollment_and_unknown_facts_read_with_fail_safe_defaults() {
        let d = eligibility("{}").unwrap();
        assert_eq!(d.enrollment.dep_enrolled, None);
        assert_eq!(d.enrollment.access_rights, None);
        assert_eq!(d.unknown_facts.dep_enrolled, UnknownPolicy::Exclude);
        assert_eq!(d.unknown_facts.shared_ipad_user, UnknownPolicy::Exclude);
        assert_eq!(d.unknown_facts.access_rights, UnknownPolicy::Allow);
        let e = eligibility(
            "enrollment: { dep_enrolled: true, access_rights: 8191 }\nunknown_facts: { access_rights: exclude }\n",
        )
        .unwrap();
        assert_eq!(e.enrollment.dep_enrolled, Some(true));
        assert_eq!(e.enrollment.access_rights, Some(8191));
        assert_eq!(e.unknown_facts.access_rights, UnknownPolicy::Exclude);
        assert_eq!(e.unknown_facts.shared_ipad_user, UnknownPolicy::Exclude);
        let bad = eligibility("unknown_facts: { shared_ipad_user: maybe }\n").unwrap_err();
        assert_eq!(bad.line, Some(1), "{bad}");
        assert!(eligibility("enrollment: { dep: true }\n").is_err());
    }
}
