//! `lab probe` gains the MDM side: the device's own answers through the MDM, each field with
//! source `mdm`, and a flag where lockdown and the MDM disagree.

mod common;
use common::*;

#[test]
fn probe_reads_the_mdm_side_and_flags_disagreements() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "devices:\n{}{}",
        device("Honest", "    passcode: true\n"),
        device(
            "Liar",
            "    mdm_overrides: { PasscodePresent: true, OSVersion: \"17.4\", BatteryLevel: 0.2 }\n"
        ),
    );
    let f = fleet_file(&dir, "f.yaml", &text);
    let specs = lab::sim::fleet::load(&f).unwrap();
    let out = run_lab(&["probe", "--json", "--sim", f.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = parse_json(&out);
    let dev = |name: &str| {
        let u = &specs.iter().find(|s| s.name == name).unwrap().udid;
        r["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["udid"] == u.as_str())
            .unwrap()
            .clone()
    };
    let honest = dev("Honest");
    let m = &honest["mdm"];
    assert_eq!(m["os_version"]["value"], "17.5.1");
    assert_eq!(m["os_version"]["source"]["via"], "mdm");
    assert_eq!(m["os_version"]["source"]["domain"], "DeviceInformation");
    assert_eq!(m["os_version"]["source"]["key"], "OSVersion");
    assert_eq!(m["passcode_present"]["value"], true);
    assert_eq!(m["passcode_present"]["source"]["domain"], "SecurityInfo");
    assert_eq!(m["is_supervised"]["value"], true);
    assert_eq!(m["battery_level"]["value"], 0.8);
    assert!((m["device_capacity_gb"]["value"].as_f64().unwrap() - 64.0).abs() < 1e-9);
    assert_eq!(m["commands"].as_array().unwrap().len(), 2);
    assert!(honest.get("disagreements").is_none(), "{honest}");

    let liar = dev("Liar");
    let facts: Vec<&str> = liar["disagreements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["fact"].as_str().unwrap())
        .collect();
    assert_eq!(facts, vec!["ios_version", "battery_percent", "passcode"]);
    let d0 = &liar["disagreements"][0];
    assert_eq!(d0["lockdown"], "17.5.1");
    assert_eq!(d0["mdm"], "17.4");

    // The table says it too.
    let out = run_lab(&["probe", "--sim", f.to_str().unwrap()], None);
    let t = stdout(&out);
    assert!(
        t.contains("DISAGREES: ios_version, battery_percent, passcode"),
        "{t}"
    );
    assert!(t.contains("agrees"), "{t}");
}

#[test]
fn probe_against_a_running_lab_with_mdm_flag() {
    let sim = Sim::start(&repo_path("trials/fleets/bench-5.yaml"));
    let url = sim.mdm_url.clone().unwrap();
    let mut c = std::process::Command::new(lab_bin());
    c.args(["probe", "--json", "--mdm", &url, "--mdm-wait", "20"])
        .env("USBMUXD_SOCKET_ADDRESS", &sim.addr)
        .env("LAB_MDM_API_KEY", TEST_API_KEY);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let r = parse_json(&out);
    for d in r["devices"].as_array().unwrap() {
        assert_eq!(
            d["mdm"]["os_version"]["value"], d["baseline"]["product_version"]["value"],
            "{d}"
        );
    }
    // Without the key: a clear bad-input error, and the key's value never printed.
    let out = std::process::Command::new(lab_bin())
        .args(["probe", "--mdm", &url])
        .env("USBMUXD_SOCKET_ADDRESS", &sim.addr)
        .env_remove("LAB_MDM_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("LAB_MDM_API_KEY"));
}
