//! Devices, offers, feeds and ledger records the eligibility tests share.

pub(super) use super::{APP_MANAGEMENT_BIT, RULES, ResolvedTarget, Subject, Verdict, assess, rule};
pub(super) use crate::feeds::{TrialFeeds, gdmf};
pub(super) use crate::journal::Reason;
pub(super) use crate::mdm::report::AvailableUpdate;
use crate::probe::baseline::Baseline;
pub(super) use crate::probe::field::{Field, Source, Via};
pub(super) use crate::probe::mdm_side::MdmFacts;
pub(super) use crate::probe::run::{DeviceProbe, Failure, FailureKind, ProbeStatus};
pub(super) use crate::trial::ledger::{LedgerKind, LedgerRecord};
pub(super) use crate::trial::protocol::{EligibilitySpec, PasscodeRule, TargetSpec};
pub(super) use crate::units::Bytes;
use crate::usbmux::DeviceEntry;
use plist::{Dictionary, Value as P};
pub(super) use serde::Serialize;
pub(super) use serde_json::{Value, json};

/// A device as lockdown describes it; `None` = the key is absent from the reply.
#[derive(Clone)]
pub(super) struct Dev {
    pub(super) version: Option<&'static str>,
    pub(super) build: &'static str,
    pub(super) chaperoned: Option<bool>,
    pub(super) passcode: Option<bool>,
    pub(super) battery: Option<u64>,
    pub(super) external: Option<bool>,
    pub(super) amount_free: Option<u64>,
    pub(super) total_free: Option<u64>,
    pub(super) status: ProbeStatus,
}

pub(super) const GB: u64 = 1_000_000_000;

pub(super) fn dev() -> Dev {
    Dev {
        version: Some("17.5.1"),
        build: "21F90",
        chaperoned: Some(true),
        passcode: Some(false),
        battery: Some(87),
        external: Some(false),
        amount_free: Some(20 * GB),
        total_free: Some(20 * GB),
        status: ProbeStatus::Ok,
    }
}

pub(super) fn put(d: &mut Dictionary, k: &str, v: Option<P>) {
    if let Some(v) = v {
        d.insert(k.into(), v);
    }
}

impl Dev {
    pub(super) fn probe(&self) -> DeviceProbe {
        let mut g = Dictionary::new();
        g.insert("ProductType".into(), "iPhone12,1".into());
        put(&mut g, "ProductVersion", self.version.map(P::from));
        g.insert("BuildVersion".into(), self.build.into());
        put(&mut g, "PasswordProtected", self.passcode.map(P::Boolean));
        let mut disk = Dictionary::new();
        put(
            &mut disk,
            "AmountDataAvailable",
            self.amount_free.map(|v| P::Integer(v.into())),
        );
        put(
            &mut disk,
            "TotalDataAvailable",
            self.total_free.map(|v| P::Integer(v.into())),
        );
        let mut bat = Dictionary::new();
        put(
            &mut bat,
            "BatteryCurrentCapacity",
            self.battery.map(|v| P::Integer(v.into())),
        );
        put(&mut bat, "ExternalConnected", self.external.map(P::Boolean));
        let mut ch = Dictionary::new();
        put(
            &mut ch,
            "DeviceIsChaperoned",
            self.chaperoned.map(P::Boolean),
        );
        let entry = DeviceEntry {
            device_id: 1,
            serial_number: "UDID-1".into(),
            product_id: Some(0x12a8),
            location_id: None,
            connection_type: "USB".into(),
            connection_speed: None,
        };
        let baseline =
            Baseline::from_replies("sim", &entry, &Ok(g), &Ok(disk), &Ok(bat), &Ok(ch), None);
        DeviceProbe {
            host: "sim".into(),
            device_id: 1,
            udid: "UDID-1".into(),
            status: self.status,
            failure: (self.status == ProbeStatus::Failed).then(|| Failure {
                stage: "connect".into(),
                kind: FailureKind::Unreachable,
                message: "connection refused".into(),
                raw_base64: None,
            }),
            elapsed_ms: 1,
            baseline,
            mdm: None,
            disagreements: Vec::new(),
            device_time: None,
            utc_offset: None,
            host_time: None,
        }
    }
}

pub(super) fn mdm_missing<T>(key: &str) -> Field<T> {
    Field::missing(mdm_src(key), "DeviceInformation answered NotNow")
}
pub(super) fn mdm_src(key: &str) -> Source {
    Source {
        via: Via::Mdm,
        domain: Some("DeviceInformation".into()),
        key: key.into(),
    }
}
pub(super) fn mdm_known<T: Serialize + Clone>(key: &str, v: T) -> Field<T> {
    Field::known(mdm_src(key), v.clone(), json!(v))
}

/// MDM facts with every field missing.
pub(super) fn mdm_facts() -> MdmFacts {
    MdmFacts {
        os_version: mdm_missing("OSVersion"),
        build_version: mdm_missing("BuildVersion"),
        product_name: mdm_missing("ProductName"),
        model_name: mdm_missing("ModelName"),
        device_capacity_gb: mdm_missing("DeviceCapacity"),
        available_device_capacity_gb: mdm_missing("AvailableDeviceCapacity"),
        battery_level: mdm_missing("BatteryLevel"),
        is_supervised: mdm_missing("IsSupervised"),
        cellular_technology: mdm_missing("CellularTechnology"),
        wifi_mac: mdm_missing("WiFiMAC"),
        is_roaming: mdm_missing("IsRoaming"),
        passcode_present: mdm_missing("PasscodePresent"),
        passcode_compliant: mdm_missing("PasscodeCompliant"),
        enrolled_via_dep: mdm_missing("EnrolledViaDEP"),
        is_user_enrollment: mdm_missing("IsUserEnrollment"),
        is_multi_user: mdm_missing("IsMultiUser"),
        resident_users: mdm_missing("ResidentUsers"),
        estimated_resident_users: mdm_missing("EstimatedResidentUsers"),
        data_roaming_enabled: mdm_missing("DataRoamingEnabled"),
        is_network_tethered: mdm_missing("IsNetworkTethered"),
        current_carrier_network: mdm_missing("CurrentCarrierNetwork"),
        service_subscriptions: None,
        commands: vec!["uuid-di".into()],
    }
}

pub(super) fn update(version: &str, build: &str, dl: u64, inst: u64) -> AvailableUpdate {
    AvailableUpdate {
        product_key: Some(format!("iOSUpdate{build}")),
        human_readable_name: Some(format!("iOS {version}")),
        product_name: Some("iOS".into()),
        version: Some(version.into()),
        build: Some(build.into()),
        download_size: Some(dl),
        install_size: Some(inst),
        is_critical: Some(false),
        restart_required: Some(true),
        allows_install_later: Some(false),
        is_security_response: None,
    }
}

pub(super) fn offer() -> Vec<AvailableUpdate> {
    vec![update("17.6.1", "21G93", 600_000_000, 1_500_000_000)]
}

pub(super) fn subject<'a>(
    p: &'a DeviceProbe,
    offered: Option<&'a [AvailableUpdate]>,
) -> Subject<'a> {
    Subject {
        probe: p,
        offered,
        offered_error: None,
        dosed_by_other_protocols: Vec::new(),
        access_rights: None,
        // An iPhone: never a Shared iPad (the fail-safe default excludes an unknown user).
        shared_ipad_user_logged_in: Some(false),
        dep_enrolled: None,
        fact_sources: Default::default(),
        ddm_active: None,
        ddm_error: None,
        feeds: None,
    }
}

pub(super) fn run(d: &Dev) -> Verdict {
    let p = d.probe();
    let o = offer();
    assess(
        &EligibilitySpec::default(),
        &TargetSpec::Latest,
        &subject(&p, Some(&o)),
    )
}

pub(super) fn only(v: &Verdict, rule: &str) -> Reason {
    assert_eq!(v.rules(), [rule], "{:#?}", v.reasons);
    assert!(!v.eligible);
    v.reasons[0].clone()
}

pub(super) fn dose() -> LedgerRecord {
    LedgerRecord {
        udid: "UDID-1".into(),
        starting_build: "21F90".into(),
        kind: LedgerKind::Intent,
        command_uuid: "5A1C-DOSE".into(),
        step: 1,
        trial_id: "other-trial".into(),
        protocol_sha256: "ab".repeat(32),
        run_dir: "results/other-trial".into(),
        at: "2026-11-27T22:30:00Z".into(),
    }
}

pub(super) fn sample_feeds(date: &str, with_gdmf: bool) -> TrialFeeds {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("trials/feeds");
    TrialFeeds {
        gdmf: with_gdmf.then(|| gdmf::load(&root.join("gdmf-pmv.json")).unwrap()),
        ipsw: vec![crate::feeds::ipsw::load(&root.join("ipsw-iPhone12,1.json")).unwrap()],
        date: date.parse().unwrap(),
    }
}

pub(super) fn with_feeds(
    d: &Dev,
    spec: &EligibilitySpec,
    target: &TargetSpec,
    offered: &[AvailableUpdate],
    feeds: &TrialFeeds,
) -> Verdict {
    let p = d.probe();
    let s = Subject {
        feeds: Some(feeds),
        ..subject(&p, Some(offered))
    };
    assess(spec, target, &s)
}
