//! Device → server command reports (MDM brief §3 "Device → server"), read leniently.
//!
//! A report is evidence: the raw bytes are always kept, and the typed views never refuse a
//! report because one key has an unexpected type. Where a device is known to deviate from the
//! documented type (`IsDownloaded` as integer on iOS 11.3, rdar 45414737, MDM brief §0.5) the
//! reading says so in [`Lenient::deviation`]. Response keys follow the `responsekeys` of
//! `data/apple-device-management/mdm/commands/system.update.*.yaml`.
//!
//! Reports carry no `RequestType` (MDM brief §0.6): the caller picks the typed view from its
//! own `CommandUUID → RequestType` map.

use crate::plist_util::{self, get_str, get_u64, type_name};
use plist::{Dictionary, Value};
use serde::Serialize;
use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

/// Why bytes PUT to the command endpoint are not a usable report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("report is not a plist: {0}")]
    NotPlist(String),
    #[error("report is a {0}, not a dictionary")]
    NotDictionary(&'static str),
    #[error("report has no Status")]
    MissingStatus,
    #[error("report Status is a {0}, not a string")]
    StatusNotString(&'static str),
    #[error("report has neither UDID nor EnrollmentID")]
    MissingIdentity,
}

/// `Status` of a report. Unknown strings are kept, not refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReportStatus {
    Acknowledged,
    Error,
    CommandFormatError,
    Idle,
    NotNow,
    Other(String),
}

impl ReportStatus {
    pub fn as_str(&self) -> &str {
        match self {
            ReportStatus::Acknowledged => "Acknowledged",
            ReportStatus::Error => "Error",
            ReportStatus::CommandFormatError => "CommandFormatError",
            ReportStatus::Idle => "Idle",
            ReportStatus::NotNow => "NotNow",
            ReportStatus::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> ReportStatus {
        match s {
            "Acknowledged" => ReportStatus::Acknowledged,
            "Error" => ReportStatus::Error,
            "CommandFormatError" => ReportStatus::CommandFormatError,
            "Idle" => ReportStatus::Idle,
            "NotNow" => ReportStatus::NotNow,
            other => ReportStatus::Other(other.to_string()),
        }
    }

    /// Acknowledged or Error (or CommandFormatError): the command is done and leaves the queue.
    /// Apple: don't consider a command executed until one of these arrives (MDM brief §3).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            ReportStatus::Acknowledged | ReportStatus::Error | ReportStatus::CommandFormatError
        )
    }
}

impl FromStr for ReportStatus {
    type Err = Infallible;
    fn from_str(s: &str) -> Result<Self, Infallible> {
        Ok(ReportStatus::parse(s))
    }
}

impl fmt::Display for ReportStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ReportStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One `ErrorChain` entry; "the first item represents the top-level error".
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ErrorChainItem {
    pub code: Option<i64>,
    pub domain: Option<String>,
    pub localized_description: Option<String>,
    pub us_english_description: Option<String>,
}

/// A parsed report. `body` is the whole top-level dictionary; `raw` the bytes as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub udid: Option<String>,
    pub enrollment_id: Option<String>,
    pub command_uuid: Option<String>,
    pub status: ReportStatus,
    pub error_chain: Vec<ErrorChainItem>,
    pub body: Dictionary,
    pub raw: Vec<u8>,
}

impl Report {
    /// UDID for device enrollments, else EnrollmentID (user enrollment).
    pub fn enrollment(&self) -> &str {
        self.udid
            .as_deref()
            .or(self.enrollment_id.as_deref())
            .unwrap_or_default()
    }
}

/// Parse a report. Requires a dictionary with a string `Status` and a `UDID` or
/// `EnrollmentID` (NanoMDM answers 400 to a report without `Status`, MDM brief §5.1).
/// `CommandUUID` is optional (Idle has none); a non-string one is read as absent.
pub fn parse_report(raw: &[u8]) -> Result<Report, ReportError> {
    let body = match plist_util::parse(raw).map_err(|e| ReportError::NotPlist(short(&e)))? {
        Value::Dictionary(d) => d,
        other => return Err(ReportError::NotDictionary(type_name(&other))),
    };
    let status = match body.get("Status") {
        None => return Err(ReportError::MissingStatus),
        Some(Value::String(s)) => ReportStatus::parse(s),
        Some(other) => return Err(ReportError::StatusNotString(type_name(other))),
    };
    let udid = get_str(&body, "UDID").map(str::to_string);
    let enrollment_id = get_str(&body, "EnrollmentID").map(str::to_string);
    if udid.is_none() && enrollment_id.is_none() {
        return Err(ReportError::MissingIdentity);
    }
    let command_uuid = get_str(&body, "CommandUUID").map(str::to_string);
    let error_chain = body
        .get("ErrorChain")
        .map(read_error_chain)
        .unwrap_or_default();
    Ok(Report {
        udid,
        enrollment_id,
        command_uuid,
        status,
        error_chain,
        body,
        raw: raw.to_vec(),
    })
}

// Parser messages can quote long stretches of input; an operator needs the gist.
fn short(s: &str) -> String {
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Items that are not dictionaries are skipped; `ErrorCode` may also arrive as a numeric string.
fn read_error_chain(v: &Value) -> Vec<ErrorChainItem> {
    let Some(items) = v.as_array() else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(Value::as_dictionary)
        .map(|d| ErrorChainItem {
            code: d.get("ErrorCode").and_then(|c| match c {
                Value::Integer(i) => i.as_signed(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            }),
            domain: get_str(d, "ErrorDomain").map(str::to_string),
            localized_description: get_str(d, "LocalizedDescription").map(str::to_string),
            us_english_description: get_str(d, "USEnglishDescription").map(str::to_string),
        })
        .collect()
}

/// The typed reading of a key with a documented type, the value as sent (JSON view, see
/// `plist_util::to_json`), and a note when the device sent something else.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lenient<T> {
    pub value: Option<T>,
    pub raw: Option<serde_json::Value>,
    pub deviation: Option<String>,
}

impl<T> Lenient<T> {
    fn absent() -> Self {
        Lenient {
            value: None,
            raw: None,
            deviation: Some("absent (documented as required)".to_string()),
        }
    }

    fn read(raw: &Value, value: Option<T>, deviation: Option<String>) -> Self {
        Lenient {
            value,
            raw: Some(plist_util::to_json(raw)),
            deviation,
        }
    }
}

/// `<boolean>` read leniently: iOS 11.3 sent integer 0/1 for `IsDownloaded` (rdar 45414737);
/// strings "true"/"false"/"yes"/"no"/"0"/"1" are read too. Anything but a boolean is noted.
pub fn lenient_bool(v: Option<&Value>) -> Lenient<bool> {
    let Some(v) = v else {
        return Lenient::absent();
    };
    match v {
        Value::Boolean(b) => Lenient::read(v, Some(*b), None),
        Value::Integer(i) => {
            let value = match i.as_signed() {
                Some(0) => Some(false),
                Some(1) => Some(true),
                _ => None,
            };
            let note = match value {
                Some(_) => format!("integer {i} where <boolean> is documented (rdar 45414737)"),
                None => format!("integer {i} where <boolean> is documented; not 0 or 1, unread"),
            };
            Lenient::read(v, value, Some(note))
        }
        Value::String(s) => {
            let value = match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Some(true),
                "false" | "no" | "0" => Some(false),
                _ => None,
            };
            let note = match value {
                Some(_) => format!("string {s:?} where <boolean> is documented"),
                None => format!("string {s:?} where <boolean> is documented; unread"),
            };
            Lenient::read(v, value, Some(note))
        }
        other => {
            let note = format!("{} where <boolean> is documented; unread", type_name(other));
            Lenient::read(v, None, Some(note))
        }
    }
}

/// `<real>` read leniently: an integer (or a numeric string) is accepted and noted. Values
/// outside `range` are kept and noted (e.g. a percentage sent as 0–100 instead of 0.0–1.0).
pub fn lenient_real(v: Option<&Value>, range: Option<(f64, f64)>) -> Lenient<f64> {
    let Some(v) = v else {
        return Lenient::absent();
    };
    let (value, mut note) = match v {
        Value::Real(r) => (Some(*r), None),
        Value::Integer(i) => (
            i.as_signed()
                .map(|x| x as f64)
                .or_else(|| i.as_unsigned().map(|x| x as f64)),
            Some(format!("integer {i} where <real> is documented")),
        ),
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => (
                Some(x),
                Some(format!("string {s:?} where <real> is documented")),
            ),
            _ => (
                None,
                Some(format!("string {s:?} where <real> is documented; unread")),
            ),
        },
        other => (
            None,
            Some(format!(
                "{} where <real> is documented; unread",
                type_name(other)
            )),
        ),
    };
    if let (Some(x), Some((lo, hi))) = (value, range)
        && !(lo..=hi).contains(&x)
    {
        let out = format!("{x} is outside the documented {lo}–{hi}");
        note = Some(match note {
            Some(n) => format!("{n}; {out}"),
            None => out,
        });
    }
    Lenient::read(v, value, note)
}

fn opt_string(d: &Dictionary, key: &str) -> Option<String> {
    get_str(d, key).map(str::to_string)
}

fn opt_bool(d: &Dictionary, key: &str) -> Option<bool> {
    d.get(key).and_then(|v| lenient_bool(Some(v)).value)
}

fn items<'a>(report: &'a Report, key: &str) -> Option<impl Iterator<Item = &'a Dictionary>> {
    let arr = report.body.get(key)?.as_array()?;
    Some(arr.iter().filter_map(Value::as_dictionary))
}

/// One `UpdateResultsItem` of a ScheduleOSUpdate reply. `install_action` may differ from the
/// request, and is `Error` when scheduling failed (schedule YAML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateResult {
    pub product_key: Option<String>,
    pub install_action: Option<String>,
    pub status: Option<String>,
    pub error_chain: Vec<ErrorChainItem>,
}

/// `UpdateResults` of a ScheduleOSUpdate reply. `None` when the key is absent, which is normal
/// for a command re-sent after the device restarted (MDM brief §0.3).
pub fn update_results(report: &Report) -> Option<Vec<UpdateResult>> {
    Some(
        items(report, "UpdateResults")?
            .map(|d| UpdateResult {
                product_key: opt_string(d, "ProductKey"),
                install_action: opt_string(d, "InstallAction"),
                status: opt_string(d, "Status"),
                error_chain: d
                    .get("ErrorChain")
                    .map(read_error_chain)
                    .unwrap_or_default(),
            })
            .collect(),
    )
}

/// One `OSUpdateStatusItem`. `status` is free text (no rangelist): Idle, Downloading,
/// Installing are documented.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OsUpdateStatusItem {
    pub product_key: Option<String>,
    pub is_downloaded: Lenient<bool>,
    pub download_percent_complete: Lenient<f64>,
    pub status: Option<String>,
}

/// `OSUpdateStatus` of an OSUpdateStatus reply; empty when no update is in progress.
pub fn os_update_status(report: &Report) -> Option<Vec<OsUpdateStatusItem>> {
    Some(
        items(report, "OSUpdateStatus")?
            .map(|d| OsUpdateStatusItem {
                product_key: opt_string(d, "ProductKey"),
                is_downloaded: lenient_bool(d.get("IsDownloaded")),
                download_percent_complete: lenient_real(
                    d.get("DownloadPercentComplete"),
                    Some((0.0, 1.0)),
                ),
                status: opt_string(d, "Status"),
            })
            .collect(),
    )
}

/// The iOS-relevant keys of an `AvailableOSUpdatesItem` (MDM brief §2 table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AvailableUpdate {
    pub product_key: Option<String>,
    pub human_readable_name: Option<String>,
    pub product_name: Option<String>,
    pub version: Option<String>,
    pub build: Option<String>,
    pub download_size: Option<u64>,
    pub install_size: Option<u64>,
    pub is_critical: Option<bool>,
    pub restart_required: Option<bool>,
    pub allows_install_later: Option<bool>,
    pub is_security_response: Option<bool>,
}

/// `AvailableOSUpdates` of an AvailableOSUpdates reply. On iOS 11.3/11.4 "no update" came back
/// as `Status=Error` without this key (rdar 39170807): that is `None` here, not an empty list.
pub fn available_os_updates(report: &Report) -> Option<Vec<AvailableUpdate>> {
    Some(
        items(report, "AvailableOSUpdates")?
            .map(|d| AvailableUpdate {
                product_key: opt_string(d, "ProductKey"),
                human_readable_name: opt_string(d, "HumanReadableName"),
                product_name: opt_string(d, "ProductName"),
                version: opt_string(d, "Version"),
                build: opt_string(d, "Build"),
                download_size: get_u64(d, "DownloadSize"),
                install_size: get_u64(d, "InstallSize"),
                is_critical: opt_bool(d, "IsCritical"),
                restart_required: opt_bool(d, "RestartRequired"),
                allows_install_later: opt_bool(d, "AllowsInstallLater"),
                is_security_response: opt_bool(d, "IsSecurityResponse"),
            })
            .collect(),
    )
}

/// `QueryResponses` of a DeviceInformation reply, untyped: the probe layer owns field meaning.
pub fn query_responses(report: &Report) -> Option<&Dictionary> {
    report.body.get("QueryResponses")?.as_dictionary()
}

/// `SecurityInfo` of a SecurityInfo reply (`PasscodePresent` decides whether an install needs
/// a human, MDM brief §3).
pub fn security_info(report: &Report) -> Option<&Dictionary> {
    report.body.get("SecurityInfo")?.as_dictionary()
}

/// Device side: the generic part of a report. `command_uuid` is `None` for Idle.
pub fn report_dict(udid: &str, command_uuid: Option<&str>, status: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("UDID".into(), udid.into());
    if let Some(u) = command_uuid {
        d.insert("CommandUUID".into(), u.into());
    }
    d.insert("Status".into(), status.into());
    d
}

/// Device side: an `ErrorChain` from `(code, domain, description)` triples; the description
/// fills both `LocalizedDescription` and `USEnglishDescription`.
pub fn error_chain(items: &[(i64, &str, &str)]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|(code, domain, desc)| {
                let mut d = Dictionary::new();
                d.insert("ErrorCode".into(), Value::Integer((*code).into()));
                d.insert("ErrorDomain".into(), (*domain).into());
                d.insert("LocalizedDescription".into(), (*desc).into());
                d.insert("USEnglishDescription".into(), (*desc).into());
                Value::Dictionary(d)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plist_util::dict_to_xml;
    use serde_json::json;

    const UDID: &str = "00008020-000915083C80012E";

    fn report(f: impl FnOnce(&mut Dictionary)) -> Report {
        let mut d = report_dict(UDID, Some("cmd-1"), "Acknowledged");
        f(&mut d);
        parse_report(&dict_to_xml(d)).unwrap()
    }

    fn dict(pairs: &[(&str, Value)]) -> Value {
        let mut d = Dictionary::new();
        for (k, v) in pairs {
            d.insert((*k).into(), v.clone());
        }
        Value::Dictionary(d)
    }

    #[test]
    fn status_strings() {
        for s in [
            "Acknowledged",
            "Error",
            "CommandFormatError",
            "Idle",
            "NotNow",
        ] {
            let st = ReportStatus::parse(s);
            assert!(!matches!(st, ReportStatus::Other(_)));
            assert_eq!(st.as_str(), s);
            assert_eq!(s.parse::<ReportStatus>(), Ok(st));
        }
        let odd = ReportStatus::parse("Pending");
        assert_eq!(odd, ReportStatus::Other("Pending".into()));
        assert_eq!(odd.as_str(), "Pending");
        assert!(ReportStatus::Error.is_final());
        assert!(!ReportStatus::NotNow.is_final());
        assert_eq!(
            serde_json::to_value(&ReportStatus::Idle).unwrap(),
            json!("Idle")
        );
    }

    #[test]
    fn apple_schedule_example_reads() {
        // ADM@9468f879 examples/mdm/commands/system.update.schedule/example2.plist (brief §1).
        let r = report(|d| {
            d.insert(
                "UpdateResults".into(),
                Value::Array(vec![dict(&[
                    ("InstallAction", "DownloadOnly".into()),
                    ("ProductKey", "iOSUpdate17A576".into()),
                    ("Status", "Downloading".into()),
                ])]),
            );
        });
        assert_eq!(r.udid.as_deref(), Some(UDID));
        assert_eq!(r.enrollment(), UDID);
        assert_eq!(r.command_uuid.as_deref(), Some("cmd-1"));
        assert_eq!(r.status, ReportStatus::Acknowledged);
        assert!(r.error_chain.is_empty());
        let u = update_results(&r).unwrap();
        assert_eq!(
            u,
            vec![UpdateResult {
                product_key: Some("iOSUpdate17A576".into()),
                install_action: Some("DownloadOnly".into()),
                status: Some("Downloading".into()),
                error_chain: vec![],
            }]
        );
        assert_eq!(parse_report(&r.raw).unwrap(), r);
    }

    #[test]
    fn missing_update_results_after_restart_is_none() {
        let r = report(|_| {});
        assert_eq!(update_results(&r), None);
        assert_eq!(os_update_status(&r), None);
        assert_eq!(available_os_updates(&r), None);
        assert_eq!(query_responses(&r), None);
        assert_eq!(security_info(&r), None);
    }

    #[test]
    fn update_result_error_chain() {
        let r = report(|d| {
            d.insert(
                "UpdateResults".into(),
                Value::Array(vec![dict(&[
                    ("InstallAction", "Error".into()),
                    ("ProductKey", "iOSUpdate17A576".into()),
                    ("Status", "DownloadInsufficientSpace".into()),
                    ("ErrorChain", error_chain(&[(7, "SUErr", "no space")])),
                ])]),
            );
        });
        let u = update_results(&r).unwrap();
        assert_eq!(u[0].error_chain[0].code, Some(7));
        assert_eq!(u[0].error_chain[0].domain.as_deref(), Some("SUErr"));
    }

    #[test]
    fn os_update_status_documented_types() {
        let r = report(|d| {
            d.insert(
                "OSUpdateStatus".into(),
                Value::Array(vec![dict(&[
                    ("DownloadPercentComplete", Value::Real(0.5030184984207153)),
                    ("IsDownloaded", Value::Boolean(false)),
                    ("ProductKey", "iOSUpdate17A576".into()),
                    ("Status", "Downloading".into()),
                ])]),
            );
        });
        let s = os_update_status(&r).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].product_key.as_deref(), Some("iOSUpdate17A576"));
        assert_eq!(s[0].is_downloaded.value, Some(false));
        assert_eq!(s[0].is_downloaded.deviation, None);
        assert_eq!(s[0].is_downloaded.raw, Some(json!(false)));
        assert_eq!(
            s[0].download_percent_complete.value,
            Some(0.5030184984207153)
        );
        assert_eq!(s[0].download_percent_complete.deviation, None);
        assert_eq!(s[0].status.as_deref(), Some("Downloading"));
        // Empty array: no update in progress.
        let r = report(|d| {
            d.insert("OSUpdateStatus".into(), Value::Array(vec![]));
        });
        assert_eq!(os_update_status(&r), Some(vec![]));
    }

    #[test]
    fn is_downloaded_integer_of_ios_11_3() {
        let b = lenient_bool(Some(&Value::Integer(1.into())));
        assert_eq!(b.value, Some(true));
        assert_eq!(b.raw, Some(json!(1)));
        assert!(b.deviation.unwrap().contains("45414737"));
        let b = lenient_bool(Some(&Value::Integer(0.into())));
        assert_eq!(b.value, Some(false));
        assert!(b.deviation.is_some());
        let b = lenient_bool(Some(&Value::Integer(2.into())));
        assert_eq!(b.value, None);
        assert!(b.deviation.unwrap().contains("unread"));
    }

    #[test]
    fn bool_from_strings_and_junk() {
        for (s, want) in [
            ("true", true),
            ("false", false),
            ("0", false),
            ("1", true),
            ("YES", true),
        ] {
            let b = lenient_bool(Some(&Value::String(s.into())));
            assert_eq!(b.value, Some(want), "{s}");
            assert!(b.deviation.is_some());
        }
        let b = lenient_bool(Some(&Value::String("maybe".into())));
        assert_eq!(b.value, None);
        assert!(b.deviation.is_some());
        let b = lenient_bool(Some(&Value::Real(1.0)));
        assert_eq!(b.value, None);
        assert!(b.deviation.unwrap().starts_with("real"));
        let b = lenient_bool(None);
        assert_eq!((b.value, b.raw), (None, None));
        assert!(b.deviation.unwrap().contains("absent"));
    }

    #[test]
    fn real_leniency() {
        let r = lenient_real(Some(&Value::Integer(1.into())), Some((0.0, 1.0)));
        assert_eq!(r.value, Some(1.0));
        assert!(r.deviation.unwrap().contains("integer"));
        let r = lenient_real(Some(&Value::Real(0.25)), Some((0.0, 1.0)));
        assert_eq!((r.value, r.deviation), (Some(0.25), None));
        let r = lenient_real(Some(&Value::Integer(50.into())), Some((0.0, 1.0)));
        assert_eq!(r.value, Some(50.0));
        let note = r.deviation.unwrap();
        assert!(
            note.contains("integer") && note.contains("outside"),
            "{note}"
        );
        let r = lenient_real(Some(&Value::String("0.5".into())), None);
        assert_eq!(r.value, Some(0.5));
        assert!(r.deviation.is_some());
        let r = lenient_real(Some(&Value::String("NaN".into())), None);
        assert_eq!(r.value, None);
        let r = lenient_real(Some(&Value::Boolean(true)), None);
        assert_eq!(r.value, None);
        assert!(r.deviation.unwrap().starts_with("boolean"));
        assert!(lenient_real(None, None).deviation.is_some());
    }

    #[test]
    fn available_updates_apple_example() {
        // ADM@9468f879 examples/.../system.update.available/example2.plist (brief §2).
        let r = report(|d| {
            d.insert(
                "AvailableOSUpdates".into(),
                Value::Array(vec![dict(&[
                    ("AllowsInstallLater", Value::Boolean(false)),
                    ("Build", "17A576".into()),
                    ("DownloadSize", Value::Integer(251607570.into())),
                    ("HumanReadableName", "iOS 13.0".into()),
                    ("InstallSize", Value::Integer(1809842176.into())),
                    ("IsCritical", Value::Boolean(false)),
                    ("ProductKey", "iOSUpdate17A576".into()),
                    ("ProductName", "iOS".into()),
                    ("RestartRequired", Value::Boolean(true)),
                    ("Version", "13.0".into()),
                ])]),
            );
        });
        let a = available_os_updates(&r).unwrap();
        assert_eq!(
            a,
            vec![AvailableUpdate {
                product_key: Some("iOSUpdate17A576".into()),
                human_readable_name: Some("iOS 13.0".into()),
                product_name: Some("iOS".into()),
                version: Some("13.0".into()),
                build: Some("17A576".into()),
                download_size: Some(251607570),
                install_size: Some(1809842176),
                is_critical: Some(false),
                restart_required: Some(true),
                allows_install_later: Some(false),
                is_security_response: None,
            }]
        );
    }

    #[test]
    fn ios_11_3_no_update_error_and_error_chain() {
        let r = report(|d| {
            d.insert("Status".into(), "Error".into());
            d.insert(
                "ErrorChain".into(),
                error_chain(&[
                    (2213, "DeviceManagement.error", "no updates"),
                    (3, "com.apple.softwareupdateservices.errors", "SU error 3"),
                ]),
            );
        });
        assert_eq!(r.status, ReportStatus::Error);
        assert_eq!(available_os_updates(&r), None);
        assert_eq!(r.error_chain.len(), 2);
        assert_eq!(
            r.error_chain[0],
            ErrorChainItem {
                code: Some(2213),
                domain: Some("DeviceManagement.error".into()),
                localized_description: Some("no updates".into()),
                us_english_description: Some("no updates".into()),
            }
        );
    }

    #[test]
    fn odd_error_chains_do_not_fail_the_report() {
        let r = report(|d| {
            d.insert(
                "ErrorChain".into(),
                Value::Array(vec![
                    "not a dict".into(),
                    dict(&[("ErrorCode", "12021".into())]),
                    dict(&[("ErrorCode", Value::Real(1.5))]),
                ]),
            );
        });
        assert_eq!(r.error_chain.len(), 2);
        assert_eq!(r.error_chain[0].code, Some(12021));
        assert_eq!(r.error_chain[1], ErrorChainItem::default());
        let r = report(|d| {
            d.insert("ErrorChain".into(), "x".into());
        });
        assert!(r.error_chain.is_empty());
    }

    #[test]
    fn query_responses_and_security_info() {
        let r = report(|d| {
            d.insert(
                "QueryResponses".into(),
                dict(&[("OSVersion", "17.5".into())]),
            );
            d.insert(
                "SecurityInfo".into(),
                dict(&[("PasscodePresent", Value::Boolean(true))]),
            );
        });
        assert_eq!(
            get_str(query_responses(&r).unwrap(), "OSVersion"),
            Some("17.5")
        );
        assert_eq!(
            security_info(&r).unwrap().get("PasscodePresent"),
            Some(&Value::Boolean(true))
        );
    }

    #[test]
    fn idle_and_user_enrollment() {
        let d = report_dict(UDID, None, "Idle");
        assert!(d.get("CommandUUID").is_none());
        let r = parse_report(&dict_to_xml(d)).unwrap();
        assert_eq!((r.status, r.command_uuid), (ReportStatus::Idle, None));
        let mut d = Dictionary::new();
        d.insert("EnrollmentID".into(), "E-1".into());
        d.insert("Status".into(), "NotNow".into());
        d.insert("CommandUUID".into(), Value::Integer(5.into()));
        let r = parse_report(&dict_to_xml(d)).unwrap();
        assert_eq!(r.udid, None);
        assert_eq!(r.enrollment(), "E-1");
        assert_eq!(r.command_uuid, None);
        // Binary plists are reports too.
        let mut bin = Vec::new();
        Value::Dictionary(report_dict(UDID, Some("c"), "Acknowledged"))
            .to_writer_binary(&mut bin)
            .unwrap();
        assert_eq!(parse_report(&bin).unwrap().raw, bin);
    }

    #[test]
    fn every_error_path() {
        assert!(matches!(
            parse_report(b"garbage"),
            Err(ReportError::NotPlist(_))
        ));
        assert!(matches!(parse_report(b""), Err(ReportError::NotPlist(_))));
        let long_bad = format!("<plist>{}", "<x>".repeat(500));
        if let Err(ReportError::NotPlist(m)) = parse_report(long_bad.as_bytes()) {
            assert!(m.chars().count() <= 201, "{m}");
        } else {
            panic!("expected NotPlist");
        }
        assert_eq!(
            parse_report(&plist_util::to_xml(&Value::String("x".into()))),
            Err(ReportError::NotDictionary("string"))
        );
        let mut d = report_dict(UDID, Some("c"), "Idle");
        d.remove("Status");
        assert_eq!(
            parse_report(&dict_to_xml(d.clone())),
            Err(ReportError::MissingStatus)
        );
        d.insert("Status".into(), Value::Integer(1.into()));
        assert_eq!(
            parse_report(&dict_to_xml(d)),
            Err(ReportError::StatusNotString("integer"))
        );
        let mut d = report_dict(UDID, Some("c"), "Idle");
        d.remove("UDID");
        assert_eq!(
            parse_report(&dict_to_xml(d)),
            Err(ReportError::MissingIdentity)
        );
        assert!(ReportError::MissingIdentity.to_string().contains("UDID"));
    }

    #[test]
    fn truncated_and_flipped_bytes_never_panic() {
        let mut d = report_dict(UDID, Some("c"), "Acknowledged");
        d.insert("ErrorChain".into(), error_chain(&[(1, "D", "x")]));
        let mut bin = Vec::new();
        Value::Dictionary(d.clone())
            .to_writer_binary(&mut bin)
            .unwrap();
        let xml = dict_to_xml(d);
        for src in [&bin, &xml] {
            for cut in 0..src.len() {
                let _ = parse_report(&src[..cut]);
                let _ = crate::mdm::checkin::parse_checkin(&src[..cut]);
                let _ = crate::mdm::command::parse_envelope(&src[..cut]);
            }
            for i in 0..src.len() {
                let mut b = src.clone();
                b[i] ^= 0xff;
                let _ = parse_report(&b);
                let _ = crate::mdm::command::parse_envelope(&b);
            }
        }
    }

    #[test]
    fn error_chain_builder_shape() {
        let v = error_chain(&[(12021, "MCMDMErrorDomain", "Unknown command")]);
        let item = v.as_array().unwrap()[0].as_dictionary().unwrap();
        assert_eq!(item.get("ErrorCode"), Some(&Value::Integer(12021.into())));
        assert_eq!(get_str(item, "ErrorDomain"), Some("MCMDMErrorDomain"));
        assert_eq!(
            get_str(item, "LocalizedDescription"),
            Some("Unknown command")
        );
        assert_eq!(
            get_str(item, "USEnglishDescription"),
            Some("Unknown command")
        );
    }
}
