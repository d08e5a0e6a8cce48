//! Facts derived from a journaled baseline probe (`BaselineRecorded.probe`, a
//! `probe::DeviceProbe` as JSON), each with where it came from: how the device is enrolled (DEP,
//! User Enrollment, Shared iPad and its logged-in user, the enrollment's access rights) and its
//! network (Wi-Fi, cellular data, tethered, none). Pure: eligibility reads them before it judges
//! a device, and the reports (`crf.csv`) read the same derivation from the journal.
//!
//! Keys: `mdm/commands/information.device.yaml` (`IsMultiUser` iOS 9.3+, `ResidentUsers` 13.4+,
//! `CurrentCarrierNetwork` deprecated 16, `DataRoamingEnabled`, `IsNetworkTethered` 10.3+,
//! `ServiceSubscriptions` 12+) and `mdm/commands/information.security.yaml` (`ManagementStatus`
//! iOS 13+: `EnrolledViaDEP` is marked `n/a` on iOS there, `IsUserEnrollment`); the Shared iPad
//! user channel (`UserShortName`, `UserID`) is `mdm/checkin/tokenupdate.yaml`, MDM brief §4.
//! Lockdown has no Wi-Fi association key (briefs/field.md "Network", device-side.md §6).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A fact and where it came from; `None`: unknown, and `source` says every place looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Known<T> {
    pub value: Option<T>,
    pub source: String,
}

impl<T> Known<T> {
    fn of(value: T, source: impl Into<String>) -> Known<T> {
        Known {
            value: Some(value),
            source: source.into(),
        }
    }
    fn unknown(source: impl Into<String>) -> Known<T> {
        Known {
            value: None,
            source: source.into(),
        }
    }
}

/// What the bench's configuration states about every device's enrollment (the protocol's
/// `eligibility.enrollment`), where neither the device nor the MDM tells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BenchEnrollment {
    pub dep_enrolled: Option<bool>,
    pub access_rights: Option<u64>,
}

/// What the MDM knows of a device's user channel (a Shared iPad's logged-in user checks in on
/// it with `UserID` and `UserShortName`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChannel {
    /// The MDM cannot tell; why.
    Unknown(String),
    /// No user-channel check-in since the device enrolled.
    NoUser,
    /// A user-channel check-in with this `UserShortName`.
    User(String),
}

impl UserChannel {
    /// What an MDM's record of the device's user channel says (`mdm::user_channel`).
    pub fn of_record(r: &crate::mdm::user_channel::UserChannelRecord) -> UserChannel {
        match &r.user {
            Some(u) => UserChannel::User(u.user_short_name.clone()),
            None => UserChannel::NoUser,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnrollmentFacts {
    pub dep_enrolled: Known<bool>,
    pub user_enrollment: Known<bool>,
    pub shared_ipad: Known<bool>,
    pub shared_ipad_user_logged_in: Known<bool>,
    pub access_rights: Known<u64>,
}

/// A probe field (`{value, source, error}`) as its value and its source's name, or why it
/// has no value.
fn field<'a>(probe: &'a Value, path: &[&str]) -> Result<(&'a Value, String), String> {
    let f = path.iter().try_fold(probe, |v, p| v.get(p));
    let name = f.map(source_name).unwrap_or_else(|| path.join("."));
    match f.and_then(|f| f.get("value")).filter(|v| !v.is_null()) {
        Some(v) => Ok((v, name)),
        None => {
            let why = f
                .and_then(|f| f.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("not read");
            Err(format!("{name}: {why}"))
        }
    }
}

/// "MDM DeviceInformation.IsMultiUser", "lockdown DeviceClass" (as eligibility names them).
fn source_name(f: &Value) -> String {
    let s = &f["source"];
    let key = s["key"].as_str().unwrap_or("");
    match (s["via"].as_str(), s["domain"].as_str()) {
        (Some("lockdown"), _) => format!("lockdown {key}"),
        (Some("mdm"), Some(d)) => format!("MDM {d}.{key}"),
        (Some("mdm"), None) => format!("MDM {key}"),
        _ => key.to_string(),
    }
}

fn bool_at(probe: &Value, path: &[&str]) -> Result<(bool, String), String> {
    let (v, s) = field(probe, path)?;
    v.as_bool()
        .map(|b| (b, s.clone()))
        .ok_or_else(|| format!("{s}: not a boolean"))
}

/// The enrollment facts of one probe. Pure.
pub fn enrollment(probe: &Value, bench: BenchEnrollment, user: &UserChannel) -> EnrollmentFacts {
    let dep_enrolled = match bool_at(probe, &["mdm", "enrolled_via_dep"]) {
        Ok((b, s)) => Known::of(b, s),
        Err(why) => match bench.dep_enrolled {
            Some(b) => Known::of(b, "protocol eligibility.enrollment.dep_enrolled"),
            None => Known::unknown(format!("{why}; the protocol states none")),
        },
    };
    let user_enrollment = match bool_at(probe, &["mdm", "is_user_enrollment"]) {
        Ok((b, s)) => Known::of(b, s),
        Err(why) => match version(probe) {
            // User Enrollment exists from iOS 13 (information.security.yaml).
            Some(v) if v < 13 => Known::of(false, "iOS before 13 has no User Enrollment"),
            _ => Known::unknown(why),
        },
    };
    let shared_ipad = shared_ipad(probe);
    let shared_ipad_user_logged_in = logged_in(probe, &shared_ipad, user);
    let access_rights = match bench.access_rights {
        Some(r) => Known::of(r, "protocol eligibility.enrollment.access_rights"),
        None => Known::unknown(
            "the MDM does not report the enrollment's AccessRights; the protocol states none",
        ),
    };
    EnrollmentFacts {
        dep_enrolled,
        user_enrollment,
        shared_ipad,
        shared_ipad_user_logged_in,
        access_rights,
    }
}

/// The major iOS version of the probe (lockdown, else the MDM).
fn version(probe: &Value) -> Option<u32> {
    field(probe, &["baseline", "product_version"])
        .or_else(|_| field(probe, &["mdm", "os_version"]))
        .ok()?
        .0
        .as_str()?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// `IsMultiUser`, else "not an iPad" from the device class (Shared iPad is iPad-only).
fn shared_ipad(probe: &Value) -> Known<bool> {
    let why = match bool_at(probe, &["mdm", "is_multi_user"]) {
        Ok((b, s)) => return Known::of(b, s),
        Err(why) => why,
    };
    let class = field(probe, &["baseline", "device_class"])
        .ok()
        .and_then(|(v, s)| Some((v.as_str()?.to_string(), s)))
        .or_else(|| {
            let (v, s) = field(probe, &["baseline", "product_type"]).ok()?;
            let pt = v.as_str()?;
            let class = pt.trim_end_matches(|c: char| c.is_ascii_digit() || c == ',');
            Some((class.to_string(), s))
        });
    match class {
        Some((c, s)) if !c.is_empty() && c != "iPad" => {
            Known::of(false, format!("{s} {c}: only an iPad can be a Shared iPad"))
        }
        _ => Known::unknown(why),
    }
}

fn logged_in(probe: &Value, shared: &Known<bool>, user: &UserChannel) -> Known<bool> {
    match shared.value {
        None => return Known::unknown(format!("whether it is a Shared iPad: {}", shared.source)),
        Some(false) => return Known::of(false, format!("not a Shared iPad ({})", shared.source)),
        Some(true) => {}
    }
    match user {
        UserChannel::User(name) => Known::of(
            true,
            format!("MDM user-channel check-in (UserShortName {name})"),
        ),
        UserChannel::NoUser => Known::of(false, "MDM: no user-channel check-in"),
        UserChannel::Unknown(why) => {
            // A logged-in user is a resident user: none resident, nobody logged in.
            if let Ok((v, s)) = field(probe, &["mdm", "resident_users"])
                && v.as_u64() == Some(0)
            {
                return Known::of(false, format!("{s} 0"));
            }
            let resident = field(probe, &["mdm", "resident_users"])
                .map(|(v, s)| format!(", {s} {v}"))
                .unwrap_or_default();
            Known::unknown(format!("{} true{resident}; {why}", shared.source))
        }
    }
}

/// The network a device had at a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// Cellular data on a carrier network.
    Cellular,
    /// Through the host's network (`IsNetworkTethered`).
    Tethered,
    /// Reached over the network without cellular data or tethering: Wi-Fi (or another
    /// network), inferred, since no key tells Wi-Fi association.
    Wifi,
    /// No network: the MDM could not reach the device and it has no carrier network.
    None,
}

impl Network {
    /// An operator's answer (`wifi`, `wi-fi`, `cellular`, `tethered`, `none`), any case.
    pub fn parse(s: &str) -> Option<Network> {
        match s.trim().to_ascii_lowercase().as_str() {
            "wifi" | "wi-fi" => Some(Network::Wifi),
            "cellular" => Some(Network::Cellular),
            "tethered" => Some(Network::Tethered),
            "none" => Some(Network::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Network::Cellular => "cellular",
            Network::Tethered => "tethered",
            Network::Wifi => "wifi",
            Network::None => "none",
        }
    }
}

/// The network state at a probe, from the best source available: `IsNetworkTethered`; a
/// carrier network with data (`ServiceSubscriptions[]` preferred for data, else the older
/// `CurrentCarrierNetwork`, with `DataRoamingEnabled` false while `IsRoaming` meaning no
/// data); the operator's checkpoint answer (`operator`) when the keys cannot tell; else Wi-Fi
/// when the device answered the MDM over the network, none when it did not and lockdown shows
/// no SIM. Pure.
pub fn network(probe: &Value, operator: Option<Network>) -> Known<Network> {
    network_of(probe.get("mdm"), &probe["baseline"]["network"], operator)
}

/// [`network`] over its two parts: the probe's `mdm` section (absent: no MDM was asked) and
/// its lockdown `baseline.network` fields. A re-probe passes the last DeviceInformation answer
/// as the first without building a probe record around it. Pure.
fn network_of(mdm: Option<&Value>, lockdown: &Value, operator: Option<Network>) -> Known<Network> {
    let m = mdm.unwrap_or(&Value::Null);
    if let Ok((true, s)) = bool_at(m, &["is_network_tethered"]) {
        return Known::of(Network::Tethered, s);
    }
    if let Some(s) = cellular_data(m) {
        return Known::of(Network::Cellular, s);
    }
    if let Some(n) = operator {
        return Known::of(n, "operator checkpoint");
    }
    let answered = m["commands"].as_array().is_some_and(|c| !c.is_empty())
        && field(m, &["os_version"]).is_ok();
    if answered {
        return Known::of(
            Network::Wifi,
            "answered the MDM over the network with no carrier network (inferred: no key tells \
             Wi-Fi association)",
        );
    }
    let no_sim = field(lockdown, &["sim_status"])
        .ok()
        .and_then(|(v, _)| v.as_str().map(|s| s.ends_with("NotInserted")))
        .unwrap_or(false)
        || bool_at(lockdown, &["telephony_capability"]).is_ok_and(|(b, _)| !b);
    if no_sim && mdm.is_some() {
        return Known::of(
            Network::None,
            "no answer through the MDM and no SIM (lockdown SIMStatus / TelephonyCapability)",
        );
    }
    Known::unknown("no MDM answer and no carrier network: ask the operator")
}

/// The MDM keys `network` reads (`probe::MdmFacts` as JSON, the `mdm` of a probe record).
const NETWORK_KEYS: [&str; 7] = [
    "commands",
    "os_version",
    "is_network_tethered",
    "is_roaming",
    "data_roaming_enabled",
    "current_carrier_network",
    "service_subscriptions",
];

/// The device's last DeviceInformation answer as far as the network goes: what a re-probe's
/// network state is derived with, since a USB re-probe reads lockdown only and lockdown has
/// no key for Wi-Fi association or carrier data (briefs/field.md "Network").
#[derive(Debug, Clone, PartialEq)]
pub struct LastDeviceInformation {
    /// Journal time of the event that carried the answer (the baseline).
    pub at: String,
    /// The answer's network keys (`NETWORK_KEYS` of `probe::MdmFacts` as JSON).
    pub mdm: Value,
}

impl LastDeviceInformation {
    /// The network keys of a probe record's `mdm` section; `None` when the probe has none.
    pub fn of(probe: &Value, at: &str) -> Option<LastDeviceInformation> {
        let m = probe.get("mdm")?.as_object()?;
        let mdm = NETWORK_KEYS
            .iter()
            .filter_map(|k| Some((k.to_string(), m.get(*k)?.clone())))
            .collect::<serde_json::Map<_, _>>();
        Some(LastDeviceInformation {
            at: at.to_string(),
            mdm: Value::Object(mdm),
        })
    }
}

/// The network state at a follow-up re-probe: `network` over the re-probe's lockdown values
/// (`reprobe`, a `probe::DeviceProbe` as JSON) and the last DeviceInformation answer, whose
/// time the source names when the state came from it (the answer may be hours older than the
/// re-probe). No operator is asked at a re-probe. Pure.
pub fn reprobe_network(reprobe: &Value, last: Option<&LastDeviceInformation>) -> Known<Network> {
    let mut n = network_of(last.map(|l| &l.mdm), &reprobe["baseline"]["network"], None);
    if let Some(l) = last
        && !n.source.contains("lockdown")
    {
        n.source = format!("{} (DeviceInformation answered {})", n.source, l.at);
    }
    n
}

/// Where cellular data comes from, when the device has it (`mdm`: a probe record's `mdm`
/// section).
fn cellular_data(mdm: &Value) -> Option<String> {
    let roaming = bool_at(mdm, &["is_roaming"]).is_ok_and(|(b, _)| b);
    let data_roaming_off = bool_at(mdm, &["data_roaming_enabled"]).is_ok_and(|(b, _)| !b);
    let blocked = |roams: bool| roams && data_roaming_off;
    if let Some(subs) = mdm["service_subscriptions"].as_array() {
        let with_data = subs.iter().find(|s| {
            let carrier = s["CurrentCarrierNetwork"]
                .as_str()
                .is_some_and(|c| !c.is_empty());
            let preferred = s["IsDataPreferred"].as_bool() != Some(false);
            carrier && preferred && !blocked(s["IsRoaming"].as_bool() == Some(true))
        })?;
        let slot = with_data["Slot"].as_str().unwrap_or("?");
        return Some(format!(
            "MDM DeviceInformation.ServiceSubscriptions[{slot}].CurrentCarrierNetwork"
        ));
    }
    let (v, s) = field(mdm, &["current_carrier_network"]).ok()?;
    (v.as_str().is_some_and(|c| !c.is_empty()) && !blocked(roaming)).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mdm(key: &str, v: Value) -> Value {
        json!({ "value": v, "source": { "via": "mdm", "domain": "DeviceInformation", "key": key } })
    }

    fn probe(class: &str, version: &str, mdm_fields: &[(&str, &str, Value)]) -> Value {
        let mut m =
            json!({ "commands": ["di", "si"], "os_version": mdm("OSVersion", json!(version)) });
        for (name, key, v) in mdm_fields {
            m[*name] = mdm(key, v.clone());
        }
        json!({
            "baseline": {
                "product_version": { "value": version, "source": { "via": "lockdown", "key": "ProductVersion" } },
                "device_class": { "value": class, "source": { "via": "lockdown", "key": "DeviceClass" } },
                "network": {}
            },
            "mdm": m
        })
    }

    const NO_CHANNEL: fn() -> UserChannel =
        || UserChannel::Unknown("no MDM reports user channels".into());

    #[test]
    fn dep_from_the_device_then_the_bench_then_unknown() {
        let p = probe(
            "iPhone",
            "17.5.1",
            &[("enrolled_via_dep", "EnrolledViaDEP", json!(true))],
        );
        let f = enrollment(&p, BenchEnrollment::default(), &NO_CHANNEL());
        assert_eq!(
            f.dep_enrolled,
            Known::of(true, "MDM DeviceInformation.EnrolledViaDEP")
        );
        // An iOS 10.2 device has no ManagementStatus: the bench's configuration tells.
        let old = probe("iPhone", "10.2", &[]);
        let bench = BenchEnrollment {
            dep_enrolled: Some(true),
            access_rights: None,
        };
        let f = enrollment(&old, bench, &NO_CHANNEL());
        assert_eq!(f.dep_enrolled.value, Some(true));
        assert_eq!(
            f.dep_enrolled.source,
            "protocol eligibility.enrollment.dep_enrolled"
        );
        assert_eq!(
            f.user_enrollment.value,
            Some(false),
            "{}",
            f.user_enrollment.source
        );
        let f = enrollment(&old, BenchEnrollment::default(), &NO_CHANNEL());
        assert_eq!(f.dep_enrolled.value, None);
        assert!(
            f.dep_enrolled.source.ends_with("the protocol states none"),
            "{}",
            f.dep_enrolled.source
        );
    }

    #[test]
    fn shared_ipad_with_and_without_a_user() {
        // An iPhone is never a Shared iPad, even without an MDM answer.
        let phone = probe("iPhone", "17.5.1", &[]);
        let f = enrollment(&phone, BenchEnrollment::default(), &NO_CHANNEL());
        assert_eq!(f.shared_ipad.value, Some(false));
        assert_eq!(f.shared_ipad_user_logged_in.value, Some(false));
        // An iPad that does not say: unknown.
        let ipad = probe("iPad", "17.5.1", &[]);
        let f = enrollment(&ipad, BenchEnrollment::default(), &NO_CHANNEL());
        assert_eq!(f.shared_ipad.value, None);
        assert_eq!(f.shared_ipad_user_logged_in.value, None);
        // A Shared iPad: the user channel tells.
        let shared = |resident: u64| {
            probe(
                "iPad",
                "17.5.1",
                &[
                    ("is_multi_user", "IsMultiUser", json!(true)),
                    ("resident_users", "ResidentUsers", json!(resident)),
                ],
            )
        };
        let user = UserChannel::User("alice".into());
        let f = enrollment(&shared(1), BenchEnrollment::default(), &user);
        assert_eq!(f.shared_ipad_user_logged_in.value, Some(true));
        assert!(f.shared_ipad_user_logged_in.source.contains("alice"));
        let f = enrollment(&shared(1), BenchEnrollment::default(), &UserChannel::NoUser);
        assert_eq!(f.shared_ipad_user_logged_in.value, Some(false));
        // Without a user channel: nobody resident means nobody logged in; else unknown.
        let f = enrollment(&shared(0), BenchEnrollment::default(), &NO_CHANNEL());
        assert_eq!(
            f.shared_ipad_user_logged_in,
            Known::of(false, "MDM DeviceInformation.ResidentUsers 0")
        );
        let f = enrollment(&shared(2), BenchEnrollment::default(), &NO_CHANNEL());
        assert_eq!(f.shared_ipad_user_logged_in.value, None);
        assert!(
            f.shared_ipad_user_logged_in
                .source
                .contains("no MDM reports user channels")
        );
    }

    /// Issue 14: the embedded server's record of the user channel decides, whatever
    /// `ResidentUsers` says; an MDM that cannot tell leaves it to `ResidentUsers`.
    #[test]
    fn the_user_channel_record_decides_a_shared_ipad_s_user() {
        use crate::mdm::user_channel::{ChannelUser, SHARED_IPAD_USER_ID, UserChannelRecord};
        let shared = probe(
            "iPad",
            "17.5.1",
            &[
                ("is_multi_user", "IsMultiUser", json!(true)),
                ("resident_users", "ResidentUsers", json!(0)),
            ],
        );
        let rec = UserChannelRecord {
            user: Some(ChannelUser {
                user_id: SHARED_IPAD_USER_ID.into(),
                user_short_name: "alice".into(),
                user_long_name: None,
            }),
            received_at: Some("t".into()),
        };
        let user = UserChannel::of_record(&rec);
        assert_eq!(user, UserChannel::User("alice".into()));
        let f = enrollment(&shared, BenchEnrollment::default(), &user);
        assert_eq!(
            f.shared_ipad_user_logged_in,
            Known::of(
                true,
                "MDM user-channel check-in (UserShortName alice)".to_string()
            )
        );
        let nobody = UserChannel::of_record(&UserChannelRecord {
            user: None,
            received_at: None,
        });
        let f = enrollment(&shared, BenchEnrollment::default(), &nobody);
        assert_eq!(
            f.shared_ipad_user_logged_in,
            Known::of(false, "MDM: no user-channel check-in".to_string())
        );
        // An iPhone with a (stray) user channel is still no Shared iPad.
        let phone = probe("iPhone", "17.5.1", &[]);
        let f = enrollment(&phone, BenchEnrollment::default(), &user);
        assert_eq!(f.shared_ipad_user_logged_in.value, Some(false));
    }

    #[test]
    fn access_rights_from_the_bench_or_unknown() {
        let p = probe("iPhone", "17.5.1", &[]);
        let f = enrollment(
            &p,
            BenchEnrollment {
                dep_enrolled: None,
                access_rights: Some(8191),
            },
            &NO_CHANNEL(),
        );
        assert_eq!(f.access_rights.value, Some(8191));
        let f = enrollment(&p, BenchEnrollment::default(), &NO_CHANNEL());
        assert_eq!(f.access_rights.value, None);
    }

    #[test]
    fn network_at_a_reprobe_from_lockdown_and_the_last_device_information() {
        let mut baseline = probe(
            "iPhone",
            "17.5.1",
            &[("is_network_tethered", "IsNetworkTethered", json!(false))],
        );
        baseline["mdm"]["service_subscriptions"] = json!([{ "Slot": "CTSubscriptionSlotOne",
            "CurrentCarrierNetwork": "Carrier", "IsDataPreferred": true, "IsRoaming": false }]);
        baseline["mdm"]["wifi_mac"] = mdm("WiFiMAC", json!("aa:bb"));
        let last = LastDeviceInformation::of(&baseline, "2026-12-03T10:00:00Z").unwrap();
        // Only the keys the network state reads are kept.
        assert!(last.mdm.get("wifi_mac").is_none());
        assert!(last.mdm.get("service_subscriptions").is_some());
        let usb = json!({ "baseline": { "network": {} } });
        let n = reprobe_network(&usb, Some(&last));
        assert_eq!(n.value, Some(Network::Cellular));
        assert!(
            n.source
                .ends_with("(DeviceInformation answered 2026-12-03T10:00:00Z)"),
            "{}",
            n.source
        );
        // A device that answered without a carrier: Wi-Fi, inferred, from the same answer.
        let wifi = LastDeviceInformation::of(&probe("iPad", "17.5.1", &[]), "t0").unwrap();
        let n = reprobe_network(&usb, Some(&wifi));
        assert_eq!(n.value, Some(Network::Wifi));
        assert!(n.source.contains("inferred") && n.source.ends_with("answered t0)"));
        // No MDM answer at all: lockdown alone tells "none" only without a SIM.
        let no_sim = json!({ "baseline": { "network": { "sim_status": {
            "value": "kCTSIMSupportSIMStatusNotInserted",
            "source": { "via": "lockdown", "key": "SIMStatus" } } } } });
        let silent = LastDeviceInformation::of(&json!({ "mdm": { "commands": [] } }), "t0");
        let n = reprobe_network(&no_sim, silent.as_ref());
        assert_eq!(n.value, Some(Network::None), "{}", n.source);
        assert!(!n.source.contains("answered t0"), "{}", n.source);
        assert_eq!(reprobe_network(&usb, None).value, None);
        assert!(LastDeviceInformation::of(&json!({ "baseline": {} }), "t0").is_none());
    }

    #[test]
    fn network_states_from_the_best_source() {
        let sub = |carrier: &str, roaming: bool| {
            json!([{ "Slot": "CTSubscriptionSlotOne", "CurrentCarrierNetwork": carrier,
                     "IsDataPreferred": true, "IsRoaming": roaming }])
        };
        let mut cell = probe("iPhone", "17.5.1", &[]);
        cell["mdm"]["service_subscriptions"] = sub("Carrier", false);
        let n = network(&cell, None);
        assert_eq!(n.value, Some(Network::Cellular));
        assert!(
            n.source
                .contains("ServiceSubscriptions[CTSubscriptionSlotOne]"),
            "{}",
            n.source
        );
        // Roaming with data roaming off: no cellular data, so Wi-Fi (it answered the MDM).
        cell["mdm"]["service_subscriptions"] = sub("Carrier", true);
        cell["mdm"]["data_roaming_enabled"] = mdm("DataRoamingEnabled", json!(false));
        assert_eq!(network(&cell, None).value, Some(Network::Wifi));
        // Before iOS 12: CurrentCarrierNetwork.
        let old = probe(
            "iPhone",
            "11.4",
            &[(
                "current_carrier_network",
                "CurrentCarrierNetwork",
                json!("Carrier"),
            )],
        );
        assert_eq!(
            network(&old, None).source,
            "MDM DeviceInformation.CurrentCarrierNetwork"
        );
        // Tethered wins.
        let t = probe(
            "iPhone",
            "17.5.1",
            &[("is_network_tethered", "IsNetworkTethered", json!(true))],
        );
        assert_eq!(network(&t, None).value, Some(Network::Tethered));
        // No carrier, answered: Wi-Fi, inferred; the operator's answer overrides the inference.
        let w = probe("iPad", "17.5.1", &[]);
        let n = network(&w, None);
        assert_eq!(n.value, Some(Network::Wifi));
        assert!(n.source.contains("inferred"));
        assert_eq!(
            network(&w, Some(Network::None)),
            Known::of(Network::None, "operator checkpoint")
        );
        // No MDM answer: none when there is no SIM, else unknown.
        let mut silent = json!({ "baseline": { "network": {
            "sim_status": { "value": "kCTSIMSupportSIMStatusNotInserted" } } },
            "mdm": { "commands": [] } });
        assert_eq!(network(&silent, None).value, Some(Network::None));
        silent["baseline"]["network"]["sim_status"]["value"] = json!("kCTSIMSupportSIMStatusReady");
        assert_eq!(network(&silent, None).value, None);
    }
}
