//! `lab probe --json` against `lab sim serve`: every baseline field equals the fleet file and
//! carries the right source (issue #2, first acceptance point).

mod common;
use common::*;
use lab::sim::fleet;
use serde_json::{Value, json};

fn field<'a>(dev: &'a Value, path: &str) -> &'a Value {
    let mut v = &dev["baseline"];
    for p in path.split('.') {
        v = &v[p];
    }
    assert!(!v.is_null(), "no field {path} in {dev}");
    v
}

fn check(dev: &Value, path: &str, value: Value, via: &str, domain: Option<&str>, key: &str) {
    let f = field(dev, path);
    assert_eq!(f["value"], value, "{path}: {f}");
    assert_eq!(f["source"]["via"], via, "{path} source: {f}");
    assert_eq!(f["source"]["domain"], json!(domain), "{path} domain: {f}");
    assert_eq!(f["source"]["key"], key, "{path} key: {f}");
    assert!(f.get("error").is_none(), "{path} has an error: {f}");
}

#[test]
fn probe_returns_every_field_equal_to_the_fleet_with_its_source() {
    let fleet_path = repo_path("trials/fleets/bench-5.yaml");
    let specs = fleet::load(&fleet_path).expect("fleet parses");
    let sim = Sim::start(&fleet_path);
    let out = run_lab(&["probe", "--json"], Some(&sim.addr));
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let report = parse_json(&out);
    let devices = report["devices"].as_array().expect("devices array");
    assert_eq!(devices.len(), specs.len());

    const DISK: Option<&str> = Some("com.apple.disk_usage");
    const BAT: Option<&str> = Some("com.apple.mobile.battery");
    for spec in &specs {
        let dev = devices
            .iter()
            .find(|d| d["udid"] == spec.udid.as_str())
            .unwrap_or_else(|| panic!("{} not probed", spec.udid));
        assert_eq!(dev["status"], "ok", "{dev}");
        assert_eq!(dev["host"], sim.addr.as_str());
        let l = "lockdown";
        check(dev, "udid", json!(spec.udid), l, None, "UniqueDeviceID");
        check(
            dev,
            "serial_number",
            json!(spec.serial),
            l,
            None,
            "SerialNumber",
        );
        check(dev, "device_name", json!(spec.name), l, None, "DeviceName");
        check(
            dev,
            "product_type",
            json!(spec.product_type),
            l,
            None,
            "ProductType",
        );
        check(
            dev,
            "marketing_name",
            json!(spec.marketing_name),
            "derived",
            None,
            "ProductType",
        );
        check(
            dev,
            "hardware_model",
            json!(spec.hardware_model),
            l,
            None,
            "HardwareModel",
        );
        check(
            dev,
            "model_number",
            json!(spec.model_number),
            l,
            None,
            "ModelNumber",
        );
        check(
            dev,
            "device_class",
            json!(spec.device_class),
            l,
            None,
            "DeviceClass",
        );
        check(
            dev,
            "product_version",
            json!(spec.ios_version),
            l,
            None,
            "ProductVersion",
        );
        check(
            dev,
            "build_version",
            json!(spec.ios_build),
            l,
            None,
            "BuildVersion",
        );
        check(
            dev,
            "activation_state",
            json!(spec.activation_state),
            l,
            None,
            "ActivationState",
        );
        check(
            dev,
            "disk.total_disk_capacity",
            json!(spec.disk_total),
            l,
            DISK,
            "TotalDiskCapacity",
        );
        check(
            dev,
            "disk.total_data_available",
            json!(spec.disk_free),
            l,
            DISK,
            "TotalDataAvailable",
        );
        check(
            dev,
            "disk.amount_data_available",
            json!(spec.disk_free),
            l,
            DISK,
            "AmountDataAvailable",
        );
        let data_cap = field(dev, "disk.total_data_capacity")["value"]
            .as_u64()
            .unwrap();
        assert!(data_cap < spec.disk_total && data_cap >= spec.disk_free);
        check(
            dev,
            "battery.current_capacity",
            json!(spec.battery_level),
            l,
            BAT,
            "BatteryCurrentCapacity",
        );
        check(
            dev,
            "battery.is_charging",
            json!(spec.charging),
            l,
            BAT,
            "BatteryIsCharging",
        );
        check(
            dev,
            "battery.external_connected",
            json!(spec.external_power),
            l,
            BAT,
            "ExternalConnected",
        );
        check(
            dev,
            "battery.fully_charged",
            json!(spec.battery_level == 100 && spec.external_power),
            l,
            BAT,
            "FullyCharged",
        );
        check(
            dev,
            "network.wifi_address",
            json!(spec.wifi_address),
            l,
            None,
            "WiFiAddress",
        );
        let phone = spec.device_class == "iPhone";
        check(
            dev,
            "network.telephony_capability",
            json!(phone),
            l,
            None,
            "TelephonyCapability",
        );
        if phone {
            let sim_status = if spec.network == fleet::NetworkKind::Cellular {
                "kCTSIMSupportSIMStatusReady"
            } else {
                "kCTSIMSupportSIMStatusNotInserted"
            };
            check(
                dev,
                "network.sim_status",
                json!(sim_status),
                l,
                None,
                "SIMStatus",
            );
        } else {
            // An iPad without telephony has no SIMStatus: recorded missing, not defaulted.
            let f = field(dev, "network.sim_status");
            assert!(f["value"].is_null() && f["error"].is_string(), "{f}");
        }
        check(
            dev,
            "passcode.password_protected",
            json!(spec.passcode),
            l,
            None,
            "PasswordProtected",
        );
        check(
            dev,
            "supervision.device_is_chaperoned",
            json!(spec.supervised),
            l,
            Some("com.apple.mobile.chaperone"),
            "DeviceIsChaperoned",
        );
        check(
            dev,
            "usb.connection_type",
            json!("USB"),
            "usbmuxd",
            None,
            "ConnectionType",
        );
        check(
            dev,
            "usb.mode",
            json!("normal"),
            "usbmuxd",
            None,
            "ProductID",
        );
        assert_eq!(field(dev, "usb.host"), &json!(sim.addr));
        assert!(field(dev, "usb.location_id")["value"].as_u64().unwrap() > 0);
    }

    // Literal values from trials/fleets/bench-5.yaml, so a symmetric bug in the fleet parser
    // cannot hide behind the comparison above.
    let first = devices
        .iter()
        .find(|d| field(d, "device_name")["value"] == "Bench iPhone 11")
        .unwrap();
    assert_eq!(field(first, "battery.current_capacity")["value"], 87);
    assert_eq!(
        field(first, "disk.amount_data_available")["value"],
        21_300_000_000u64
    );
    assert_eq!(field(first, "product_version")["value"], "17.5.1");
    assert_eq!(field(first, "marketing_name")["value"], "iPhone 11");
    let ipad = devices
        .iter()
        .find(|d| field(d, "device_name")["value"] == "Bench iPad")
        .unwrap();
    assert_eq!(
        field(ipad, "supervision.device_is_chaperoned")["value"],
        false
    );
    assert_eq!(field(ipad, "passcode.password_protected")["value"], true);
}

#[test]
fn probe_filters_by_udid_and_rejects_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let f = fleet_file(
        &dir,
        "f.yaml",
        &format!("devices:\n{}{}", device("A", ""), device("B", "")),
    );
    let specs = fleet::load(&f).unwrap();
    let sim = Sim::start(&f);
    let out = run_lab(
        &["probe", "--json", "--udid", &specs[1].udid],
        Some(&sim.addr),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let r = parse_json(&out);
    assert_eq!(r["devices"].as_array().unwrap().len(), 1);
    assert_eq!(r["devices"][0]["udid"], specs[1].udid.as_str());

    let out = run_lab(
        &["probe", "--udid", "00000000-0000000000000000"],
        Some(&sim.addr),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not attached"), "{}", stderr(&out));
}

#[test]
fn an_unpaired_device_is_probed_partially_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let f = fleet_file(
        &dir,
        "f.yaml",
        &format!("devices:\n{}", device("Fresh", "    paired: false\n")),
    );
    let sim = Sim::start(&f);
    let out = run_lab(&["probe", "--json"], Some(&sim.addr));
    assert_eq!(out.status.code(), Some(1));
    let d = &parse_json(&out)["devices"][0];
    assert_eq!(d["status"], "partial");
    assert_eq!(d["failure"]["kind"], "not_paired");
    // Pre-session values are still read …
    assert_eq!(field(d, "product_version")["value"], "17.5.1");
    // … session-only ones are missing, with the reason, never defaulted.
    let b = field(d, "battery.current_capacity");
    assert!(b["value"].is_null());
    assert!(
        b["error"].as_str().unwrap().contains("no lockdown session"),
        "{b}"
    );
    let p = field(d, "passcode.password_protected");
    assert!(p["value"].is_null(), "{p}");
}
