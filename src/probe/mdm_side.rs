//! The MDM side of the baseline: what the device says about itself through the MDM
//! (DeviceInformation, SecurityInfo), and where that disagrees with lockdown.
//!
//! `MdmFacts::from_reports` and `compare` are pure; `query` is the I/O edge (enqueue through a
//! backend, wait for the answers).

use super::baseline::Baseline;
use super::field::{Field, FieldType, Source, Via, read};
use crate::mdm::backend::{CommandResult, MdmBackend};
use crate::mdm::command::{BASELINE_QUERIES, Command};
use crate::mdm::report::{parse_report, query_responses, security_info};
use plist::Dictionary;
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MdmFacts {
    pub os_version: Field<String>,
    pub build_version: Field<String>,
    pub product_name: Field<String>,
    pub model_name: Field<String>,
    /// Base-10 GB, as iOS reports it (brief mdm.md §3).
    pub device_capacity_gb: Field<f64>,
    pub available_device_capacity_gb: Field<f64>,
    /// 0.0–1.0, or -1.0 when the device does not know.
    pub battery_level: Field<f64>,
    pub is_supervised: Field<bool>,
    pub cellular_technology: Field<u64>,
    pub wifi_mac: Field<String>,
    pub is_roaming: Field<bool>,
    pub passcode_present: Field<bool>,
    pub passcode_compliant: Field<bool>,
    /// SecurityInfo `ManagementStatus.EnrolledViaDEP` (`mdm/commands/information.security.yaml`:
    /// `ManagementStatus` iOS 13+, but `EnrolledViaDEP` is marked `introduced: n/a` on iOS, so a
    /// real iPhone is expected to leave it out; the bench's configuration then tells).
    pub enrolled_via_dep: Field<bool>,
    /// SecurityInfo `ManagementStatus.IsUserEnrollment` (iOS 13+, same schema file).
    pub is_user_enrollment: Field<bool>,
    /// DeviceInformation `IsMultiUser` (iOS 9.3+): the device is a Shared iPad
    /// (`mdm/commands/information.device.yaml`).
    pub is_multi_user: Field<bool>,
    /// DeviceInformation `ResidentUsers` (iOS 13.4+): users with data on a Shared iPad.
    pub resident_users: Field<u64>,
    /// DeviceInformation `EstimatedResidentUsers` (iOS 14+).
    pub estimated_resident_users: Field<u64>,
    /// DeviceInformation `DataRoamingEnabled` (iOS 5+).
    pub data_roaming_enabled: Field<bool>,
    /// DeviceInformation `IsNetworkTethered` (iOS 10.3+).
    pub is_network_tethered: Field<bool>,
    /// DeviceInformation `CurrentCarrierNetwork` (deprecated iOS 16 for `ServiceSubscriptions`).
    pub current_carrier_network: Field<String>,
    /// `ServiceSubscriptions` as sent (SIM slots, carriers, roaming per slot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_subscriptions: Option<serde_json::Value>,
    /// CommandUUIDs of the commands these facts came from (evidence).
    pub commands: Vec<String>,
}

/// A fact lockdown and the MDM report differently.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disagreement {
    pub fact: &'static str,
    pub lockdown: serde_json::Value,
    pub mdm: serde_json::Value,
}

/// Why an MDM answer is missing, for every field it would have filled.
fn from_dict<T: FieldType>(d: Result<&Dictionary, &str>, command: &str, key: &str) -> Field<T> {
    let src = Source {
        via: Via::Mdm,
        domain: Some(command.to_string()),
        key: key.to_string(),
    };
    match d {
        Ok(d) => read(src, d.get(key), "key absent from the MDM answer"),
        Err(e) => Field::missing(src, e),
    }
}

/// A key of SecurityInfo's `ManagementStatus` dictionary (iOS 13+), sourced as
/// `SecurityInfo.ManagementStatus.<key>`.
fn management_status<T: FieldType>(sq: Result<&Dictionary, &str>, key: &str) -> Field<T> {
    let inner = sq.and_then(|d| match d.get("ManagementStatus") {
        Some(plist::Value::Dictionary(m)) => Ok(m),
        Some(_) => Err("ManagementStatus is not a dictionary"),
        None => Err("ManagementStatus absent from the MDM answer (iOS 13+)"),
    });
    from_dict(inner, "SecurityInfo.ManagementStatus", key)
}

impl MdmFacts {
    /// Build from the DeviceInformation and SecurityInfo results (or why they are missing).
    pub fn from_reports(
        device_information: Result<&CommandResult, String>,
        security: Result<&CommandResult, String>,
    ) -> MdmFacts {
        let di = answer(device_information, "DeviceInformation", |r| {
            query_responses(r).cloned()
        });
        let si = answer(security, "SecurityInfo", |r| security_info(r).cloned());
        let dq = di.0.as_ref().map_err(String::as_str);
        let sq = si.0.as_ref().map_err(String::as_str);
        let d = |k: &str| from_dict::<String>(dq, "DeviceInformation", k);
        MdmFacts {
            os_version: d("OSVersion"),
            build_version: d("BuildVersion"),
            product_name: d("ProductName"),
            model_name: d("ModelName"),
            device_capacity_gb: from_dict(dq, "DeviceInformation", "DeviceCapacity"),
            available_device_capacity_gb: from_dict(
                dq,
                "DeviceInformation",
                "AvailableDeviceCapacity",
            ),
            battery_level: from_dict(dq, "DeviceInformation", "BatteryLevel"),
            is_supervised: from_dict(dq, "DeviceInformation", "IsSupervised"),
            cellular_technology: from_dict(dq, "DeviceInformation", "CellularTechnology"),
            wifi_mac: d("WiFiMAC"),
            is_roaming: from_dict(dq, "DeviceInformation", "IsRoaming"),
            passcode_present: from_dict(sq, "SecurityInfo", "PasscodePresent"),
            passcode_compliant: from_dict(sq, "SecurityInfo", "PasscodeCompliant"),
            enrolled_via_dep: management_status(sq, "EnrolledViaDEP"),
            is_user_enrollment: management_status(sq, "IsUserEnrollment"),
            is_multi_user: from_dict(dq, "DeviceInformation", "IsMultiUser"),
            resident_users: from_dict(dq, "DeviceInformation", "ResidentUsers"),
            estimated_resident_users: from_dict(dq, "DeviceInformation", "EstimatedResidentUsers"),
            data_roaming_enabled: from_dict(dq, "DeviceInformation", "DataRoamingEnabled"),
            is_network_tethered: from_dict(dq, "DeviceInformation", "IsNetworkTethered"),
            current_carrier_network: d("CurrentCarrierNetwork"),
            service_subscriptions: dq
                .ok()
                .and_then(|d| d.get("ServiceSubscriptions"))
                .map(crate::plist_util::to_json),
            commands: [di.1, si.1].into_iter().flatten().collect(),
        }
    }
}

/// The dictionary inside an answer, or why there is none; plus the CommandUUID.
fn answer(
    r: Result<&CommandResult, String>,
    command: &str,
    pick: impl Fn(&crate::mdm::report::Report) -> Option<Dictionary>,
) -> (Result<Dictionary, String>, Option<String>) {
    let r = match r {
        Ok(r) => r,
        Err(e) => return (Err(e), None),
    };
    let uuid = Some(r.command_uuid.clone());
    let parsed = match parse_report(&r.raw) {
        Ok(p) => p,
        Err(e) => return (Err(format!("{command} answer unreadable: {e}")), uuid),
    };
    if r.status != "Acknowledged" {
        return (Err(format!("{command} answered {}", r.status)), uuid);
    }
    match pick(&parsed) {
        Some(d) => (Ok(d), uuid),
        None => (
            Err(format!("{command} answer has no response dictionary")),
            uuid,
        ),
    }
}

/// Facts where lockdown and the MDM disagree. Battery may move a little between the two reads
/// (5 points of slack); capacities are compared loosely (iOS reports the MDM capacities in GB
/// of another partition accounting, 10 % of slack); the rest must be equal.
pub fn compare(b: &Baseline, m: &MdmFacts) -> Vec<Disagreement> {
    let mut out = Vec::new();
    let mut eq = |fact: &'static str,
                  l: Option<serde_json::Value>,
                  r: Option<serde_json::Value>,
                  same: bool| {
        if let (Some(l), Some(r)) = (l, r)
            && !same
        {
            out.push(Disagreement {
                fact,
                lockdown: l,
                mdm: r,
            });
        }
    };
    let j = |v: Option<&String>| v.map(|s| serde_json::json!(s));
    if let (Some(l), Some(r)) = (b.product_version.get(), m.os_version.get()) {
        eq("ios_version", j(Some(l)), j(Some(r)), l == r);
    }
    if let (Some(l), Some(r)) = (b.build_version.get(), m.build_version.get()) {
        eq("build_version", j(Some(l)), j(Some(r)), l == r);
    }
    if let (Some(l), Some(r)) = (b.battery.current_capacity.get(), m.battery_level.get())
        && *r >= 0.0
    {
        let same = (*l as f64 - r * 100.0).abs() <= 5.0;
        eq(
            "battery_percent",
            Some(serde_json::json!(l)),
            Some(serde_json::json!(r * 100.0)),
            same,
        );
    }
    if let (Some(l), Some(r)) = (b.disk.total_disk_capacity.get(), m.device_capacity_gb.get()) {
        let lg = *l as f64 / 1e9;
        let same = (lg - r).abs() <= 0.10 * lg.max(1.0);
        eq(
            "capacity_gb",
            Some(serde_json::json!(lg)),
            Some(serde_json::json!(r)),
            same,
        );
    }
    if let (Some(l), Some(r)) = (
        b.passcode.password_protected.get(),
        m.passcode_present.get(),
    ) {
        eq(
            "passcode",
            Some(serde_json::json!(l)),
            Some(serde_json::json!(r)),
            l == r,
        );
    }
    if let (Some(l), Some(r)) = (
        b.supervision.device_is_chaperoned.get(),
        m.is_supervised.get(),
    ) {
        eq(
            "supervised",
            Some(serde_json::json!(l)),
            Some(serde_json::json!(r)),
            l == r,
        );
    }
    if let (Some(l), Some(r)) = (b.network.wifi_address.get(), m.wifi_mac.get()) {
        eq(
            "wifi_mac",
            j(Some(l)),
            j(Some(r)),
            l.eq_ignore_ascii_case(r),
        );
    }
    out
}

/// The baseline DeviceInformation for a device on `ios_version`: only the queries Apple's
/// schema allows on that version (e.g. `ServiceSubscriptions` needs iOS 12), so that every
/// command the harness sends passes the schema check. Unknown version: every query.
pub fn baseline_device_information(ios_version: Option<&str>) -> Command {
    let queries = BASELINE_QUERIES
        .iter()
        .filter(|q| {
            let Some(v) = ios_version else { return true };
            let one = Command::DeviceInformation {
                queries: vec![q.to_string()],
            };
            crate::mdm::schema::validate_command(&one.to_dict(), v).is_empty()
        })
        .map(|q| q.to_string())
        .collect();
    Command::DeviceInformation { queries }
}

/// The MDM reads that failed while the baseline waited for its answers, each message with how
/// many times it came. A failed call is evidence even when a later poll succeeded ("nothing
/// lost"): the runner journals these as `mdm_api_error` observations, one per message (a poll
/// every 100 ms would otherwise journal the same error hundreds of times).
#[derive(Debug, Default)]
pub struct FailedReads(std::sync::Mutex<Vec<FailedRead>>);

/// One kind of failed read: what was asked, the error, how many times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRead {
    pub what: String,
    pub error: String,
    pub times: u32,
}

impl FailedReads {
    /// Note one failed call (`what`: the observation's key).
    pub fn note(&self, what: &str, error: &dyn std::fmt::Display) {
        let error = error.to_string();
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match v.iter_mut().find(|f| f.what == what && f.error == error) {
            Some(f) => f.times += 1,
            None => v.push(FailedRead {
                what: what.to_string(),
                error,
                times: 1,
            }),
        }
    }

    /// What failed, in the order first seen.
    pub fn into_inner(self) -> Vec<FailedRead> {
        self.0.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

/// Ask the device through the MDM and wait for both answers (or `wait`).
pub async fn query(
    backend: &dyn MdmBackend,
    udid: &str,
    ios_version: Option<&str>,
    wait: Duration,
    failed: &FailedReads,
) -> MdmFacts {
    let tag = crate::tls::random_secret();
    let di_uuid = format!("lab-probe-di-{tag}");
    let si_uuid = format!("lab-probe-si-{tag}");
    let di_cmd = baseline_device_information(ios_version);
    let mut errors = Vec::new();
    for (cmd, uuid) in [(&di_cmd, &di_uuid), (&Command::SecurityInfo, &si_uuid)] {
        if let Err(e) = backend.enqueue(udid, cmd, uuid).await {
            errors.push((uuid.clone(), e.to_string()));
        }
    }
    let start = Instant::now();
    let mut results: Vec<CommandResult> = Vec::new();
    loop {
        match backend.results(udid).await {
            Ok(r) => results = r,
            Err(e) => failed.note("baseline results", &e),
        }
        let have = |u: &str| {
            results
                .iter()
                .any(|r| r.command_uuid == u && r.status != "NotNow")
        };
        let pending_di = !have(&di_uuid) && !errors.iter().any(|e| e.0 == di_uuid);
        let pending_si = !have(&si_uuid) && !errors.iter().any(|e| e.0 == si_uuid);
        if (!pending_di && !pending_si) || start.elapsed() >= wait {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let find = |u: &str| -> Result<&CommandResult, String> {
        if let Some((_, e)) = errors.iter().find(|e| e.0 == u) {
            return Err(format!("could not enqueue: {e}"));
        }
        results
            .iter()
            .rev()
            .find(|r| r.command_uuid == u && r.status != "NotNow")
            .ok_or_else(|| format!("no answer through the MDM within {wait:?}"))
    };
    MdmFacts::from_reports(find(&di_uuid), find(&si_uuid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdm::report::report_dict;
    use crate::usbmux::DeviceEntry;
    use plist::Value;

    #[test]
    fn failed_reads_count_each_message_once_in_order() {
        let f = super::FailedReads::default();
        f.note("baseline results", &"HTTP 500");
        f.note("baseline dose records", &"HTTP 500");
        f.note("baseline results", &"HTTP 500");
        f.note("baseline results", &"timed out");
        let v = f.into_inner();
        let got: Vec<(&str, &str, u32)> = v
            .iter()
            .map(|x| (x.what.as_str(), x.error.as_str(), x.times))
            .collect();
        assert_eq!(
            got,
            [
                ("baseline results", "HTTP 500", 2),
                ("baseline dose records", "HTTP 500", 1),
                ("baseline results", "timed out", 1),
            ]
        );
    }

    fn result(uuid: &str, body: Dictionary) -> CommandResult {
        let mut r = report_dict("U", Some(uuid), "Acknowledged");
        for (k, v) in body {
            r.insert(k, v);
        }
        CommandResult {
            command_uuid: uuid.into(),
            request_type: None,
            status: "Acknowledged".into(),
            raw: crate::plist_util::dict_to_xml(r).into(),
            received_at: String::new(),
        }
    }

    fn baseline(version: &str, battery: u64, passcode: bool) -> Baseline {
        let mut g = Dictionary::new();
        g.insert("ProductVersion".into(), version.into());
        g.insert("BuildVersion".into(), "21F90".into());
        g.insert("PasswordProtected".into(), Value::Boolean(passcode));
        g.insert("WiFiAddress".into(), "aa:bb:cc:dd:ee:ff".into());
        let mut bat = Dictionary::new();
        bat.insert(
            "BatteryCurrentCapacity".into(),
            Value::Integer(battery.into()),
        );
        let mut disk = Dictionary::new();
        disk.insert(
            "TotalDiskCapacity".into(),
            Value::Integer(64_000_000_000u64.into()),
        );
        let mut ch = Dictionary::new();
        ch.insert("DeviceIsChaperoned".into(), Value::Boolean(true));
        let e = DeviceEntry {
            device_id: 1,
            serial_number: "U".into(),
            product_id: Some(0x12a8),
            location_id: None,
            connection_type: "USB".into(),
            connection_speed: None,
        };
        Baseline::from_replies("h", &e, &Ok(g), &Ok(disk), &Ok(bat), &Ok(ch), None)
    }

    fn facts(version: &str, battery: f64, passcode: bool) -> MdmFacts {
        let mut qr = Dictionary::new();
        qr.insert("OSVersion".into(), version.into());
        qr.insert("BuildVersion".into(), "21F90".into());
        qr.insert("BatteryLevel".into(), Value::Real(battery));
        qr.insert("DeviceCapacity".into(), Value::Real(64.0));
        qr.insert("IsSupervised".into(), Value::Boolean(true));
        qr.insert("WiFiMAC".into(), "AA:BB:CC:DD:EE:FF".into());
        let mut di = Dictionary::new();
        di.insert("QueryResponses".into(), Value::Dictionary(qr));
        let mut s = Dictionary::new();
        s.insert("PasscodePresent".into(), Value::Boolean(passcode));
        let mut si = Dictionary::new();
        si.insert("SecurityInfo".into(), Value::Dictionary(s));
        MdmFacts::from_reports(Ok(&result("d", di)), Ok(&result("s", si)))
    }

    #[test]
    fn agreeing_sources_give_no_disagreement_and_fields_carry_the_mdm_source() {
        let f = facts("17.5.1", 0.87, false);
        assert_eq!(f.os_version.value.as_deref(), Some("17.5.1"));
        assert_eq!(f.os_version.source.via, Via::Mdm);
        assert_eq!(
            f.os_version.source.domain.as_deref(),
            Some("DeviceInformation")
        );
        assert_eq!(
            f.passcode_present.source.domain.as_deref(),
            Some("SecurityInfo")
        );
        assert_eq!(f.commands, vec!["d".to_string(), "s".to_string()]);
        assert!(compare(&baseline("17.5.1", 85, false), &f).is_empty());
    }

    #[test]
    fn management_status_and_shared_ipad_keys_are_read_with_their_sources() {
        let mut ms = Dictionary::new();
        ms.insert("EnrolledViaDEP".into(), Value::Boolean(true));
        ms.insert("IsUserEnrollment".into(), Value::Boolean(false));
        let mut s = Dictionary::new();
        s.insert("ManagementStatus".into(), Value::Dictionary(ms));
        let mut si = Dictionary::new();
        si.insert("SecurityInfo".into(), Value::Dictionary(s));
        let mut qr = Dictionary::new();
        qr.insert("IsMultiUser".into(), Value::Boolean(true));
        qr.insert("ResidentUsers".into(), Value::Integer(2.into()));
        qr.insert("IsNetworkTethered".into(), Value::Boolean(false));
        let mut di = Dictionary::new();
        di.insert("QueryResponses".into(), Value::Dictionary(qr));
        let f = MdmFacts::from_reports(Ok(&result("d", di)), Ok(&result("s", si)));
        assert_eq!(f.enrolled_via_dep.value, Some(true));
        assert_eq!(
            f.enrolled_via_dep.source.domain.as_deref(),
            Some("SecurityInfo.ManagementStatus")
        );
        assert_eq!(f.is_user_enrollment.value, Some(false));
        assert_eq!(f.is_multi_user.value, Some(true));
        assert_eq!(f.resident_users.value, Some(2));
        assert_eq!(f.is_network_tethered.value, Some(false));
        // Before iOS 13 there is no ManagementStatus: missing, with the reason.
        let old = facts("12.5.7", 0.5, false);
        assert!(
            old.enrolled_via_dep
                .error
                .as_deref()
                .is_some_and(|e| e.contains("iOS 13")),
            "{:?}",
            old.enrolled_via_dep
        );
    }

    #[test]
    fn disagreements_are_flagged_with_both_values() {
        let f = facts("17.6", 0.40, true);
        let d = compare(&baseline("17.5.1", 87, false), &f);
        let facts: Vec<&str> = d.iter().map(|x| x.fact).collect();
        assert_eq!(facts, vec!["ios_version", "battery_percent", "passcode"]);
        assert_eq!(d[0].lockdown, serde_json::json!("17.5.1"));
        assert_eq!(d[0].mdm, serde_json::json!("17.6"));
    }

    #[test]
    fn every_probe_command_passes_the_schema_check() {
        for v in [
            "9.3.5", "10.3", "11.4.1", "12.0", "16.7.8", "17.5.1", "18.1", "26.0",
        ] {
            for c in [baseline_device_information(Some(v)), Command::SecurityInfo] {
                let violations = crate::mdm::schema::validate_command(&c.to_dict(), v);
                assert!(violations.is_empty(), "iOS {v}: {violations:?}");
            }
        }
        let Command::DeviceInformation { queries } = baseline_device_information(Some("11.4.1"))
        else {
            unreachable!()
        };
        assert!(!queries.iter().any(|q| q == "ServiceSubscriptions"));
        assert!(queries.iter().any(|q| q == "OSVersion"));
    }

    #[test]
    fn missing_answers_leave_fields_missing_with_the_reason() {
        let f = MdmFacts::from_reports(
            Err("no answer through the MDM within 5s".into()),
            Err("x".into()),
        );
        assert!(f.os_version.value.is_none());
        assert!(f.os_version.error.as_deref().unwrap().contains("no answer"));
        assert!(compare(&baseline("17.5.1", 87, false), &f).is_empty());
    }
}
