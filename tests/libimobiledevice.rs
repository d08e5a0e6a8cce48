//! libimobiledevice's own tools accept the simulated lab (issue #2, second acceptance point).
//! Pointed at it with `USBMUXD_SOCKET_ADDRESS=127.0.0.1:PORT`, the only form libusbmuxd 2.0.2
//! takes for TCP (brief §2).

mod common;
use common::*;
use lab::sim::fleet;
use std::collections::BTreeMap;
use std::process::Command;

fn tool(name: &str, args: &[&str], addr: &str) -> String {
    let out = Command::new(name)
        .args(args)
        .env("USBMUXD_SOCKET_ADDRESS", addr)
        .output()
        .unwrap_or_else(|e| panic!("run {name}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `Key: value` lines as printed by ideviceinfo.
fn kv(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn idevice_id_and_ideviceinfo_read_the_fleet() {
    if !have_libimobiledevice() {
        return;
    }
    let fleet_path = repo_path("trials/fleets/bench-5.yaml");
    let specs = fleet::load(&fleet_path).unwrap();
    let sim = Sim::start(&fleet_path);

    let ids: Vec<String> = tool("idevice_id", &["-l"], &sim.addr)
        .lines()
        .map(str::to_string)
        .collect();
    let mut want: Vec<String> = specs.iter().map(|s| s.udid.clone()).collect();
    let mut got = ids.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "idevice_id -l lists exactly the fleet");

    for s in &specs {
        let v = tool(
            "ideviceinfo",
            &["-u", &s.udid, "-k", "ProductVersion"],
            &sim.addr,
        );
        assert_eq!(v.trim(), s.ios_version, "{}", s.name);

        let bat = kv(&tool(
            "ideviceinfo",
            &["-u", &s.udid, "-q", "com.apple.mobile.battery"],
            &sim.addr,
        ));
        assert_eq!(bat["BatteryCurrentCapacity"], s.battery_level.to_string());
        assert_eq!(bat["BatteryIsCharging"], s.charging.to_string());
        assert_eq!(bat["ExternalConnected"], s.external_power.to_string());

        let disk = kv(&tool(
            "ideviceinfo",
            &["-u", &s.udid, "-q", "com.apple.disk_usage"],
            &sim.addr,
        ));
        assert_eq!(disk["TotalDiskCapacity"], s.disk_total.to_string());
        assert_eq!(disk["TotalDataAvailable"], s.disk_free.to_string());
        assert_eq!(disk["AmountDataAvailable"], s.disk_free.to_string());
    }

    // The whole global domain, through the full handshake (QueryType, pair record, StartSession,
    // TLS, GetValue, StopSession).
    let all = kv(&tool("ideviceinfo", &["-u", &specs[0].udid], &sim.addr));
    assert_eq!(all["UniqueDeviceID"], specs[0].udid);
    assert_eq!(all["SerialNumber"], specs[0].serial);
    assert_eq!(all["ProductType"], specs[0].product_type);
    assert_eq!(all["DeviceName"], specs[0].name);
    // A literal from the fleet file, not only the parser's reading of it.
    assert_eq!(all["BuildVersion"], "21F90");
}

#[test]
fn ideviceinfo_pairs_an_unpaired_device_and_lab_then_uses_that_pair_record() {
    if !have_libimobiledevice() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let f = fleet_file(
        &dir,
        "f.yaml",
        &format!("devices:\n{}", device("Fresh", "    paired: false\n")),
    );
    let udid = fleet::load(&f).unwrap()[0].udid.clone();
    let sim = Sim::start(&f);
    let before = parse_json(&run_lab(&["probe", "--json"], Some(&sim.addr)));
    assert_eq!(before["devices"][0]["status"], "partial");
    // ideviceinfo runs Pair and SavePairRecord through the simulated usbmuxd (brief §4.5).
    let name = tool("ideviceinfo", &["-u", &udid, "-k", "DeviceName"], &sim.addr);
    assert_eq!(name.trim(), "Fresh");
    let after = parse_json(&run_lab(&["probe", "--json"], Some(&sim.addr)));
    assert_eq!(after["devices"][0]["status"], "ok", "{after}");
    assert_eq!(
        after["devices"][0]["baseline"]["battery"]["current_capacity"]["value"],
        80
    );
}

/// Issue 14: without the tools these tests say so on a visible line and pass, except in CI
/// (`CI` set), where the missing tools fail them. Runs this test binary again, with a PATH
/// that holds no `ideviceinfo`.
#[test]
fn missing_tools_skip_visibly_and_fail_in_ci() {
    let empty = tempfile::tempdir().unwrap();
    let run = |ci: bool| {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args([
            "--exact",
            "idevice_id_and_ideviceinfo_read_the_fleet",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PATH", empty.path())
        .env_remove("CI");
        if ci {
            c.env("CI", "true");
        }
        c.output().unwrap()
    };
    let local = run(false);
    let err = String::from_utf8_lossy(&local.stderr);
    assert!(local.status.success(), "{err}");
    assert!(err.contains("SKIPPED: ideviceinfo not installed"), "{err}");
    let ci = run(true);
    let out =
        String::from_utf8_lossy(&ci.stdout).into_owned() + &String::from_utf8_lossy(&ci.stderr);
    assert!(!ci.status.success(), "{out}");
    assert!(out.contains("ideviceinfo is missing in CI"), "{out}");
}
