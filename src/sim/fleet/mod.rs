//! The fleet file: what the simulated lab's devices are (issue #2, item 7).
//!
//! ```yaml
//! devices:
//!   - name: Bench iPhone
//!     product_type: iPhone12,1
//!     ios: { version: "17.5.1", build: 21F90 }
//!     disk: { total: 64 GB, free: 20.5 GB }
//!     battery: { level: 87, charging: true, external_power: true }
//!     network: wifi          # wifi | cellular | none
//!     passcode: false
//!     supervised: true
//!     activation_state: Activated
//!     count: 3               # three such devices, named "Bench iPhone 1..3"
//!     detach_after: 30s      # leaves the lab 30 s (simulated) after start
//!     reattach_after: 2m     # and comes back 2 min after leaving, with a new DeviceID
//!     mdm_fault: { kind: wrong_command_uuid, on: OSUpdateStatus, times: 1 }
//! clock:
//!   start: "2026-11-27T22:30:00Z"
//!   jumps: [ { after: 10m, by: 3h }, { after: 40m, by: -30m } ]
//! ```
//! Everything in `trials/README.md`.
//!
//! Fault injection on the device side (issue 6): `reattach_after` (a device unplugged
//! mid-download that comes back), `clock.jumps` (a device clock set forward or back, see
//! [`super::clock`]), `mdm_fault` (an MDM client whose report the server cannot use, see
//! [`MdmFault`]); `fault` covers lockdownd.

mod expand;

pub use expand::expand;

use crate::input::{InputError, load_yaml, parse_yaml};
use crate::sim::os_update::{CatalogEntrySpec, UpdateBehaviourSpec};
use crate::units::{Bytes, DurationSpec, parse_duration};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    /// Seed for generated identities (UDIDs, serials, MACs); fleets with the same seed and
    /// names generate the same identities.
    #[serde(default)]
    pub seed: u64,
    /// The simulated clock: where simulated time starts (RFC 3339; default: now).
    pub clock: Option<ClockSpec>,
    /// The update catalogue every device draws from unless its `update.catalogue` says
    /// otherwise (Apple's AvailableOSUpdates keys, brief mdm.md §2).
    #[serde(default)]
    pub catalogue: Vec<Spanned<CatalogEntrySpec>>,
    /// How simulated devices behave as MDM clients.
    pub mdm: Option<FleetMdmSpec>,
    pub devices: Vec<Spanned<DeviceSpec>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockSpec {
    /// RFC 3339; default: now.
    pub start: Option<Spanned<String>>,
    /// Steps of the device clocks (all devices share the lab's clock).
    #[serde(default)]
    pub jumps: Vec<Spanned<ClockJumpSpec>>,
}

/// `{ after: 10m, by: -30m }`: once `after` of simulated time has run since the start (as the
/// clock would read without jumps), the clock reads `by` later (earlier when negative).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockJumpSpec {
    pub after: DurationSpec,
    pub by: SignedDurationSpec,
}

impl FleetFile {
    /// The clock's jumps, checked (a jump by zero is refused: it would test nothing).
    pub fn clock_jumps(&self, path: &Path) -> Result<Vec<super::clock::ClockJump>, InputError> {
        let Some(c) = &self.clock else {
            return Ok(Vec::new());
        };
        c.jumps
            .iter()
            .map(|j| {
                if j.value.by.0.is_zero() {
                    return Err(InputError::at(
                        path,
                        Some(j.referenced),
                        "clock jump: `by` is zero; give a signed duration like 3h or -30m",
                    ));
                }
                Ok(super::clock::ClockJump {
                    after: j.value.after.0,
                    by: j.value.by.0,
                })
            })
            .collect()
    }

    /// Where simulated time starts: `clock.start` (RFC 3339), else now.
    pub fn clock_start(&self, path: &Path) -> Result<chrono::DateTime<chrono::Utc>, InputError> {
        let Some(c) = self.clock.as_ref().and_then(|c| c.start.as_ref()) else {
            return Ok(chrono::Utc::now());
        };
        chrono::DateTime::parse_from_rfc3339(&c.value)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|e| {
                InputError::at(
                    path,
                    Some(c.referenced),
                    format!(
                        "clock.start {:?} is not an RFC 3339 time (like 2026-11-27T22:30:00Z): {e}",
                        c.value
                    ),
                )
            })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetMdmSpec {
    /// Devices connect on their own this often (simulated time) even without a push.
    pub poll_interval: Option<DurationSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    pub name: String,
    #[serde(default = "one")]
    pub count: u32,
    pub udid: Option<String>,
    pub serial: Option<String>,
    pub product_type: String,
    pub model_number: Option<String>,
    pub ios: IosSpec,
    pub disk: DiskSpec,
    pub battery: BatterySpec,
    #[serde(default)]
    pub network: NetworkKind,
    #[serde(default)]
    pub passcode: bool,
    #[serde(default = "yes")]
    pub supervised: bool,
    #[serde(default = "activated")]
    pub activation_state: String,
    /// `false`: usbmuxd has no pair record for the device (the "Trust" prompt never answered).
    #[serde(default = "yes")]
    pub paired: bool,
    /// Absent at start; attaches after this long (simulated time).
    pub attach_after: Option<DurationSpec>,
    /// Detaches after this long (simulated time).
    pub detach_after: Option<DurationSpec>,
    /// Comes back this long (simulated time) after `detach_after` detached it: a device
    /// unplugged mid-download and plugged in again. Needs `detach_after`.
    pub reattach_after: Option<Spanned<DurationSpec>>,
    /// Misbehaviour of this device's lockdownd, for testing the harness.
    pub fault: Option<Fault>,
    /// Misbehaviour of this device's MDM client (see [`MdmFault`]).
    pub mdm_fault: Option<Spanned<MdmFaultSpec>>,
    /// OS-update behaviour: catalogue, simulated user, timings (see `sim::os_update`).
    pub update: Option<UpdateBehaviourSpec>,
    /// How the device is enrolled in the MDM beyond DEP (`update.dep_enrolled`): see
    /// [`EnrollmentSpec`].
    #[serde(default)]
    pub enrollment: EnrollmentSpec,
    /// The device is a Shared iPad (DeviceInformation `IsMultiUser`); see [`SharedIpadSpec`].
    pub shared_ipad: Option<SharedIpadSpec>,
    /// Values the device reports through the MDM instead of the true ones (DeviceInformation
    /// `QueryResponses` or `SecurityInfo` keys), to rehearse lockdown/MDM disagreements.
    #[serde(default)]
    pub mdm_overrides: std::collections::BTreeMap<String, MdmValue>,
}

/// `enrollment: { user_enrollment: true }`: a User Enrollment (SecurityInfo
/// `ManagementStatus.IsUserEnrollment`, iOS 13+).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentSpec {
    #[serde(default)]
    pub user_enrollment: bool,
}

/// `shared_ipad: { logged_in_user: alice, resident_users: 3 }`: a Shared iPad (iPads only).
/// `logged_in_user` absent: nobody is logged in (the login window).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SharedIpadSpec {
    pub logged_in_user: Option<String>,
    /// DeviceInformation `ResidentUsers` (default: 1 with a user logged in, else 0).
    pub resident_users: Option<u64>,
}

/// A scalar value in `mdm_overrides`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum MdmValue {
    Bool(bool),
    Int(i64),
    Real(f64),
    Text(String),
}

impl MdmValue {
    pub fn to_plist(&self) -> plist::Value {
        match self {
            MdmValue::Bool(b) => plist::Value::Boolean(*b),
            MdmValue::Int(i) => plist::Value::Integer((*i).into()),
            MdmValue::Real(r) => plist::Value::Real(*r),
            MdmValue::Text(s) => plist::Value::String(s.clone()),
        }
    }
}

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn activated() -> String {
    "Activated".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IosSpec {
    pub version: String,
    pub build: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    pub total: Bytes,
    pub free: Bytes,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BatterySpec {
    pub level: Percent,
    #[serde(default)]
    pub charging: bool,
    #[serde(default)]
    pub external_power: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkKind {
    #[default]
    Wifi,
    Cellular,
    None,
}

/// Ways a simulated lockdownd misbehaves (on its first reply unless stated).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// A well-framed reply whose body is not a plist.
    Garbage,
    /// Announces a frame, sends part of it, closes the connection.
    CloseMidFrame,
    /// Announces a 4 GiB frame.
    OversizedFrame,
    /// Accepts the connection and never answers.
    Silent,
    /// Answers StartSession, then sends garbage instead of a TLS ServerHello.
    TlsFailure,
    /// A well-formed XML plist nested [`DEEP_PLIST_LEVELS`] arrays deep (issue 18: it used to
    /// overflow the harness's stack).
    DeepPlist,
}

/// How deep the `deep_plist` fault nests: the 50 000 `<array>`s of issue 18 (about 800 KB,
/// well under lockdown's 16 MiB frame limit).
pub const DEEP_PLIST_LEVELS: usize = 50_000;

/// How a faulty MDM client spoils its report (`mdm_fault.kind`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MdmFaultKind {
    /// The report body is not a plist (the real report cut off inside its closing tags).
    MalformedReport,
    /// The real report, but with a made-up CommandUUID the server never queued.
    WrongCommandUuid,
}

/// `mdm_fault: { kind: wrong_command_uuid, on: OSUpdateStatus, times: 1 }` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MdmFaultSpec {
    pub kind: MdmFaultKind,
    /// RequestType of the commands to spoil; absent: any.
    pub on: Option<String>,
    #[serde(default = "one")]
    pub times: u32,
}

/// RequestTypes the simulated MDM client implements; `mdm_fault.on` must name one of them
/// (a misspelt `on` would otherwise silently never fire).
pub const MDM_FAULT_REQUEST_TYPES: &[&str] = &[
    "ScheduleOSUpdate",
    "OSUpdateStatus",
    "AvailableOSUpdates",
    "DeviceInformation",
    "SecurityInfo",
];

/// A simulated device's MDM client misbehaving: for the first `times` commands whose
/// RequestType is `on` (any when `None`), the device carries the command out as usual but
/// sends a spoiled report instead of its real one. The embedded MDM server answers HTTP 400
/// and keeps the command queued, so the device gets it again on its next connect and, the
/// fault spent, answers properly. A spoiled ScheduleOSUpdate is therefore acted on twice (two
/// deliveries, both counted by the server), as if the server had sent it twice. A command
/// the device does not answer at all (the 11.3.1 ScheduleOSUpdate quirk) spends no fault:
/// there is no report to spoil.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdmFault {
    pub kind: MdmFaultKind,
    pub on: Option<String>,
    pub times: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u64")]
pub struct Percent(pub u8);

/// A signed duration (clock jumps): a [`DurationSpec`] with an optional leading `-`
/// (`3h`, `-30m`, `-1800`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SignedNumberOrString")]
pub struct SignedDurationSpec(pub chrono::Duration);

#[derive(Deserialize)]
#[serde(untagged)]
enum SignedNumberOrString {
    I(i64),
    F(f64),
    S(String),
}

impl TryFrom<SignedNumberOrString> for SignedDurationSpec {
    type Error = String;
    fn try_from(v: SignedNumberOrString) -> Result<Self, String> {
        let (negative, magnitude) = match v {
            SignedNumberOrString::I(n) => (n < 0, Duration::from_secs(n.unsigned_abs())),
            SignedNumberOrString::F(f) if f.is_finite() && f.abs() <= 1e9 => {
                (f < 0.0, Duration::from_secs_f64(f.abs()))
            }
            SignedNumberOrString::F(f) => return Err(format!("{f} is not a duration")),
            SignedNumberOrString::S(s) => {
                let t = s.trim();
                let (negative, rest) = match t.strip_prefix('-') {
                    Some(r) => (true, r),
                    None => (false, t.strip_prefix('+').unwrap_or(t)),
                };
                (
                    negative,
                    parse_duration(rest).map_err(|e| format!("{s:?}: {e}"))?,
                )
            }
        };
        let d = super::clock::to_chrono(magnitude);
        Ok(SignedDurationSpec(if negative { -d } else { d }))
    }
}

impl TryFrom<u64> for Percent {
    type Error = String;
    fn try_from(v: u64) -> Result<Self, String> {
        if v > 100 {
            return Err(format!("battery level {v} is not a percentage (0–100)"));
        }
        Ok(Percent(v as u8))
    }
}

/// One simulated device after expanding `count` and generating what the file leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct SimDeviceSpec {
    pub name: String,
    pub udid: String,
    pub serial: String,
    pub product_type: String,
    pub marketing_name: Option<String>,
    pub hardware_model: String,
    pub model_number: String,
    pub device_class: String,
    pub chip_id: u32,
    pub ecid: u64,
    pub ios_version: String,
    pub ios_build: String,
    pub disk_total: u64,
    pub disk_free: u64,
    pub battery_level: u8,
    pub charging: bool,
    pub external_power: bool,
    pub network: NetworkKind,
    pub passcode: bool,
    pub supervised: bool,
    pub activation_state: String,
    pub paired: bool,
    pub wifi_address: String,
    pub bluetooth_address: String,
    pub attach_after: Option<Duration>,
    pub detach_after: Option<Duration>,
    /// Back this long after the detach (needs `detach_after`).
    pub reattach_after: Option<Duration>,
    pub fault: Option<Fault>,
    pub mdm_fault: Option<MdmFault>,
    pub update: UpdateBehaviourSpec,
    pub enrollment: EnrollmentSpec,
    pub shared_ipad: Option<SharedIpadSpec>,
    pub mdm_overrides: std::collections::BTreeMap<String, MdmValue>,
}

/// Read a fleet file; every error names the file, line and column.
pub fn load(path: &Path) -> Result<Vec<SimDeviceSpec>, InputError> {
    let f: FleetFile = load_yaml(path)?;
    expand(path, f)
}

pub fn parse(path: &Path, text: &str) -> Result<Vec<SimDeviceSpec>, InputError> {
    let f: FleetFile = parse_yaml(path, text)?;
    expand(path, f)
}

// Test-only modules are declared after the production code: `tests/architecture.rs` reads a
// file up to its first test attribute.
#[cfg(test)]
mod tests;
