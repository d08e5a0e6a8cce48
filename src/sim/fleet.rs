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

use crate::input::{InputError, load_yaml, parse_yaml};
use crate::models;
use crate::sim::os_update::{CatalogEntrySpec, UpdateBehaviourSpec};
use crate::units::{Bytes, DurationSpec, parse_duration};
use serde::Deserialize;
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
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

fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

fn mac(bytes: &[u8]) -> String {
    // Locally administered unicast address, so it never collides with a real vendor's.
    let mut b = [0u8; 6];
    b.copy_from_slice(&bytes[..6]);
    b[0] = (b[0] & 0xfc) | 0x02;
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

const SERIAL_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// Expand a parsed fleet file into devices, generating what it leaves out from `f.seed` (so a
/// caller that overrides the seed, as `lab sim serve --seed` does, sets it before expanding).
pub fn expand(path: &Path, f: FleetFile) -> Result<Vec<SimDeviceSpec>, InputError> {
    let mut out = Vec::new();
    let mut seen_udids = HashSet::new();
    let mut seen_names = HashSet::new();
    if f.devices.is_empty() {
        return Err(InputError::at(path, None, "the fleet has no devices"));
    }
    f.clock_start(path)?;
    f.clock_jumps(path)?;
    // The shared catalogue is checked where it is written, not at the first device using it.
    for e in &f.catalogue {
        if let Err(m) = e.value.to_entry() {
            return Err(InputError::at(path, Some(e.referenced), m));
        }
    }
    let catalogue: Vec<CatalogEntrySpec> = f.catalogue.iter().map(|e| e.value.clone()).collect();
    for spanned in &f.devices {
        let d = &spanned.value;
        let loc = Some(spanned.referenced);
        let err = |m: String| InputError::at(path, loc, format!("device {:?}: {m}", d.name));
        if d.count == 0 {
            return Err(err("count must be at least 1".into()));
        }
        if d.count > 100_000 {
            return Err(err(format!("count {} is more than 100000", d.count)));
        }
        if d.count > 1 && (d.udid.is_some() || d.serial.is_some()) {
            return Err(err(
                "udid and serial cannot be given together with count > 1".into(),
            ));
        }
        if d.disk.free.0 > d.disk.total.0 {
            return Err(err(format!(
                "disk free ({} bytes) is more than disk total ({} bytes)",
                d.disk.free.0, d.disk.total.0
            )));
        }
        if d.ios.version.trim().is_empty()
            || !d.ios.version.split('.').all(|p| p.parse::<u32>().is_ok())
        {
            return Err(err(format!(
                "ios.version {:?} is not a version like 17.5.1",
                d.ios.version
            )));
        }
        if let Some(r) = &d.reattach_after
            && d.detach_after.is_none()
        {
            return Err(InputError::at(
                path,
                Some(r.referenced),
                format!(
                    "device {:?}: reattach_after needs detach_after (a device comes back only after it left)",
                    d.name
                ),
            ));
        }
        let mdm_fault = match &d.mdm_fault {
            None => None,
            Some(m) => {
                let at = |msg: String| {
                    InputError::at(
                        path,
                        Some(m.referenced),
                        format!("device {:?}: mdm_fault: {msg}", d.name),
                    )
                };
                if m.value.times == 0 {
                    return Err(at(
                        "times is 0, so the fault never fires; leave mdm_fault out instead".into(),
                    ));
                }
                if let Some(on) = &m.value.on
                    && !MDM_FAULT_REQUEST_TYPES.contains(&on.as_str())
                {
                    return Err(at(format!(
                        "on: {on:?} is not a RequestType the simulated device answers ({})",
                        MDM_FAULT_REQUEST_TYPES.join(", ")
                    )));
                }
                Some(MdmFault {
                    kind: m.value.kind,
                    on: m.value.on.clone(),
                    times: m.value.times,
                })
            }
        };
        let model = models::lookup(&d.product_type);
        let class = model.map(|m| m.device_class.clone()).unwrap_or_else(|| {
            d.product_type
                .trim_end_matches(|c: char| c.is_ascii_digit() || c == ',')
                .to_string()
        });
        if d.shared_ipad.is_some() && class != "iPad" {
            return Err(err(format!(
                "shared_ipad: {:?} is an {class}; only an iPad can be a Shared iPad",
                d.product_type
            )));
        }
        if !["iPhone", "iPad", "iPod"].contains(&class.as_str()) {
            return Err(err(format!(
                "product_type {:?} is not an iPhone, iPad or iPod (e.g. iPhone12,1)",
                d.product_type
            )));
        }
        for i in 1..=d.count {
            let name = if d.count > 1 {
                format!("{} {}", d.name, i)
            } else {
                d.name.clone()
            };
            if !seen_names.insert(name.clone()) {
                return Err(err(format!("device name {name:?} is used twice")));
            }
            let h = hash(&[&f.seed.to_le_bytes(), name.as_bytes()]);
            let chip = model.map(|m| m.chip_id).unwrap_or(0x8030);
            let ecid = u64::from_be_bytes(h[0..8].try_into().expect("8 bytes")) >> 8;
            let udid = match &d.udid {
                Some(u) => {
                    let ok = (u.len() == 25 && u.as_bytes()[8] == b'-')
                        || (u.len() == 40 && u.chars().all(|c| c.is_ascii_hexdigit()));
                    if !ok {
                        return Err(err(format!(
                            "udid {u:?} is neither 8-16 hex digits with a dash nor 40 hex digits"
                        )));
                    }
                    u.clone()
                }
                None if chip >= 0x8020 => format!("{chip:08X}-{ecid:016X}"),
                None => h[..20].iter().map(|b| format!("{b:02x}")).collect(),
            };
            if !seen_udids.insert(udid.clone()) {
                return Err(err(format!("udid {udid} is used twice")));
            }
            let serial = d.serial.clone().unwrap_or_else(|| {
                h[8..20]
                    .iter()
                    .map(|b| SERIAL_ALPHABET[*b as usize % SERIAL_ALPHABET.len()] as char)
                    .collect()
            });
            let mut update = d.update.clone().unwrap_or_default();
            if update.catalogue.is_empty() {
                update.catalogue = catalogue.clone();
            }
            if let Err(m) = update.config() {
                return Err(err(format!("update: {m}")));
            }
            let model_number = d
                .model_number
                .clone()
                .unwrap_or_else(|| format!("M{}2", serial.chars().take(3).collect::<String>()));
            out.push(SimDeviceSpec {
                name,
                udid,
                serial,
                product_type: d.product_type.clone(),
                marketing_name: model.map(|m| m.marketing_name.clone()),
                hardware_model: model
                    .map(|m| m.hardware_model.clone())
                    .unwrap_or_else(|| "J0AP".into()),
                model_number,
                device_class: class.clone(),
                chip_id: chip,
                ecid,
                ios_version: d.ios.version.clone(),
                ios_build: d.ios.build.clone(),
                disk_total: d.disk.total.0,
                disk_free: d.disk.free.0,
                battery_level: d.battery.level.0,
                charging: d.battery.charging,
                external_power: d.battery.external_power,
                network: d.network,
                passcode: d.passcode,
                supervised: d.supervised,
                activation_state: d.activation_state.clone(),
                paired: d.paired,
                wifi_address: mac(&h[20..26]),
                bluetooth_address: mac(&h[26..32]),
                attach_after: d.attach_after.map(|x| x.0),
                detach_after: d.detach_after.map(|x| x.0),
                reattach_after: d.reattach_after.as_ref().map(|x| x.value.0),
                fault: d.fault,
                mdm_fault: mdm_fault.clone(),
                update,
                enrollment: d.enrollment,
                shared_ipad: d.shared_ipad.clone(),
                mdm_overrides: d.mdm_overrides.clone(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
seed: 7
devices:
  - name: Bench iPhone
    product_type: iPhone12,1
    ios: { version: "17.5.1", build: 21F90 }
    disk: { total: 64 GB, free: 20.5 GB }
    battery: { level: 87, charging: true, external_power: true }
    network: cellular
    passcode: true
    count: 2
  - name: Old one
    product_type: iPhone10,4
    ios: { version: "16.7.8", build: 20H343 }
    disk: { total: 64000000000, free: 1 GiB }
    battery: { level: 40 }
    supervised: false
    detach_after: 1.5s
"#;

    #[test]
    fn expands_counts_and_generates_stable_identities() {
        let a = parse(Path::new("f.yaml"), GOOD).unwrap();
        let b = parse(Path::new("f.yaml"), GOOD).unwrap();
        assert_eq!(a, b, "generation is deterministic");
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].name, "Bench iPhone 1");
        assert_eq!(a[0].disk_total, 64_000_000_000);
        assert_eq!(a[0].disk_free, 20_500_000_000);
        assert!(a[0].udid.starts_with("00008030-"), "{}", a[0].udid);
        assert_ne!(a[0].udid, a[1].udid);
        assert_eq!(a[2].udid.len(), 40, "pre-A12 devices have 40-hex UDIDs");
        assert_eq!(a[2].disk_free, 1 << 30);
        assert_eq!(a[2].detach_after, Some(Duration::from_millis(1500)));
        assert!(!a[2].supervised && a[0].supervised);
        assert_eq!(a[0].serial.len(), 12);
    }

    fn err(text: &str) -> InputError {
        parse(Path::new("fleet.yaml"), text).unwrap_err()
    }

    #[test]
    fn errors_carry_line_and_column() {
        let e = err("devices:\n  - name: x\n    product_type: iPhone12,1\n    colour: red\n");
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.to_string().starts_with("fleet.yaml:4:"), "{e}");
        assert!(e.message.contains("colour"), "{e}");

        let e = err(
            "devices:\n  - name: x\n    product_type: iPhone12,1\n    ios: {version: '17.0', build: A}\n    disk: {total: 1 GB, free: 2 GB}\n    battery: {level: 5}\n",
        );
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("more than disk total"), "{e}");

        let e = err(
            "devices:\n  - name: x\n    product_type: iPhone12,1\n    ios: {version: '17.0', build: A}\n    disk: {total: 1 GB, free: 0}\n    battery: {level: 150}\n",
        );
        assert_eq!(e.line, Some(6), "{e}");
        assert!(e.message.contains("percentage"), "{e}");

        let e = err(
            "devices:\n  - name: x\n    product_type: iPhone12,1\n    ios: {version: '17.0', build: A}\n    disk: {total: 12 parsecs, free: 0}\n    battery: {level: 5}\n",
        );
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.message.contains("unknown unit"), "{e}");
    }

    #[test]
    fn a_non_ascii_serial_gets_a_model_number() {
        // Regression: the default model number took the serial's first 3 *bytes*, which split
        // a multi-byte character (serial "ééé") and panicked.
        let text = "devices:\n  - name: A\n    product_type: iPhone12,1\n    serial: \"ééé\"\n    ios: { version: \"17.5.1\", build: 21F90 }\n    disk: { total: 64 GB, free: 20 GB }\n    battery: { level: 87 }\n";
        let d = parse(Path::new("f.yaml"), text).unwrap();
        assert_eq!(d[0].model_number, "Mééé2");
    }

    fn one_device(extra: &str) -> String {
        format!(
            "devices:\n  - name: x\n    product_type: iPhone12,1\n    ios: {{ version: '17.0', build: A }}\n    disk: {{ total: 1 GB, free: 0 }}\n    battery: {{ level: 5 }}\n{extra}"
        )
    }

    #[test]
    fn reattach_after_needs_detach_after() {
        let d = parse(
            Path::new("f.yaml"),
            &one_device("    detach_after: 5s\n    reattach_after: 2m\n"),
        )
        .unwrap();
        assert_eq!(d[0].reattach_after, Some(Duration::from_secs(120)));
        assert_eq!(d[0].detach_after, Some(Duration::from_secs(5)));

        let e = err(&one_device("    reattach_after: 2m\n"));
        assert_eq!((e.line, e.column), (Some(7), Some(21)), "{e}");
        assert!(e.message.contains("needs detach_after"), "{e}");
        let e = err(&one_device(
            "    detach_after: 5s\n    reattach_after: soon\n",
        ));
        assert_eq!(e.line, Some(8), "{e}");
    }

    #[test]
    fn mdm_fault_is_parsed_and_checked() {
        let d = parse(
            Path::new("f.yaml"),
            &one_device("    mdm_fault: { kind: wrong_command_uuid, on: OSUpdateStatus }\n"),
        )
        .unwrap();
        assert_eq!(
            d[0].mdm_fault,
            Some(MdmFault {
                kind: MdmFaultKind::WrongCommandUuid,
                on: Some("OSUpdateStatus".into()),
                times: 1
            })
        );
        let d = parse(
            Path::new("f.yaml"),
            &one_device("    mdm_fault: { kind: malformed_report, times: 3 }\n"),
        )
        .unwrap();
        let f = d[0].mdm_fault.clone().unwrap();
        assert_eq!(
            (f.kind, f.on, f.times),
            (MdmFaultKind::MalformedReport, None, 3)
        );

        let e = err(&one_device(
            "    mdm_fault: { kind: malformed_report, times: 0 }\n",
        ));
        assert_eq!(e.line, Some(7), "{e}");
        assert!(e.message.contains("never fires"), "{e}");
        let e = err(&one_device(
            "    mdm_fault: { kind: malformed_report, on: OSUpdateStatuss }\n",
        ));
        assert_eq!(e.line, Some(7), "{e}");
        assert!(e.message.contains("OSUpdateStatuss"), "{e}");
        let e = err(&one_device("    mdm_fault: { kind: sulk }\n"));
        assert_eq!(e.line, Some(7), "{e}");
        let e = err(&one_device(
            "    mdm_fault:\n      kind: malformed_report\n      colour: red\n",
        ));
        assert_eq!(e.line, Some(9), "{e}");
    }

    #[test]
    fn clock_jumps_are_signed_and_located() {
        let text = format!(
            "clock:\n  start: \"2026-11-27T22:30:00Z\"\n  jumps:\n    - {{ after: 10m, by: 3h }}\n    - {{ after: 40m, by: -30m }}\n    - {{ after: 50m, by: -90 }}\n{}",
            one_device("")
        );
        let f: FleetFile = crate::input::parse_yaml(Path::new("f.yaml"), &text).unwrap();
        let j = f.clock_jumps(Path::new("f.yaml")).unwrap();
        assert_eq!(j.len(), 3);
        assert_eq!(j[0].after, Duration::from_secs(600));
        assert_eq!(j[0].by, chrono::Duration::hours(3));
        assert_eq!(j[1].by, -chrono::Duration::minutes(30));
        assert_eq!(j[2].by, -chrono::Duration::seconds(90));
        assert!(parse(Path::new("f.yaml"), &text).is_ok());

        let bad = |jumps: &str| err(&format!("clock:\n  jumps:\n{jumps}{}", one_device("")));
        let e = bad("    - { after: 10m, by: 0s }\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("zero"), "{e}");
        let e = bad("    - { after: 10m, by: -3 fortnights }\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("unknown unit"), "{e}");
        let e = bad("    - { after: -10m, by: 1h }\n");
        assert_eq!(e.line, Some(3), "{e}");
        let e = bad("    - { after: 10m }\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("by"), "{e}");
    }

    #[test]
    fn a_huge_number_of_seconds_is_an_error_not_a_panic() {
        // Found by fuzzing (`sim_fleet`); the crashing input is kept in tests/fuzz-regressions.
        for text in [
            "mdm: { poll_interval: 60E216 }\ndevices: []\n",
            include_str!("../../tests/fuzz-regressions/sim_fleet-huge-float-duration.yaml"),
        ] {
            let e = parse(Path::new("fleet.yaml"), text)
                .unwrap_err()
                .to_string();
            assert!(e.contains("fleet.yaml"), "{e}");
        }
        let e = parse(
            Path::new("fleet.yaml"),
            "mdm: { poll_interval: 60E216 }\ndevices: []\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("too long"), "{e}");
    }
}
