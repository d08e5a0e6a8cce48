//! pymobiledevice3, a second conformance judge written independently of libimobiledevice (issue
//! 14): it lists the simulated lab through usbmuxd, opens lockdown sessions with TLS, reads the
//! battery and disk domains, pairs an unpaired device and saves the record through usbmuxd —
//! and agrees with `lab probe` on every value both read.
//!
//! Pointed at the lab with `USBMUXD_SOCKET_ADDRESS=HOST:PORT` (pymobiledevice3's socket layer
//! honours the libusbmuxd variable) and `PYMOBILEDEVICE3_USBMUX` (its `--usbmux` option).
//! Its host key and any pair record it makes live under a temporary `HOME`.

mod common;
use common::*;
use lab::sim::fleet;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

struct Judge<'a> {
    bin: &'a Path,
    usbmuxd: &'a str,
    home: &'a Path,
}

impl Judge<'_> {
    /// Run a pymobiledevice3 command; its stdout as JSON.
    fn json(&self, args: &[&str]) -> Value {
        let out = Command::new(self.bin)
            .arg("--no-color")
            .args(args)
            .env("USBMUXD_SOCKET_ADDRESS", self.usbmuxd)
            .env("PYMOBILEDEVICE3_USBMUX", self.usbmuxd)
            .env("HOME", self.home)
            .output()
            .unwrap_or_else(|e| panic!("run pymobiledevice3: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "pymobiledevice3 {args:?} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {text}"))
    }
}

fn probe(usbmuxd: &str) -> Value {
    parse_json(&run_lab(&["probe", "--json"], Some(usbmuxd)))
}

fn by_udid<'a>(probe: &'a Value, udid: &str) -> &'a Value {
    probe["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["udid"] == udid)
        .unwrap_or_else(|| panic!("lab probe does not list {udid}"))
}

#[test]
fn pymobiledevice3_reads_the_fleet_as_lab_probe_does() {
    let Some(bin) = pymobiledevice3() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let fleet_path = repo_path("trials/fleets/bench-5.yaml");
    let specs = fleet::load(&fleet_path).unwrap();
    let sim = Sim::start(&fleet_path);
    let judge = Judge {
        bin: &bin,
        usbmuxd: &sim.addr,
        home: home.path(),
    };
    let lab = probe(&sim.addr);

    // usbmux ListDevices, then a lockdown connection per device for its public values.
    let listed = judge.json(&["usbmux", "list"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), specs.len(), "{listed:?}");
    for s in &specs {
        let d = listed
            .iter()
            .find(|d| d["UniqueDeviceID"] == s.udid.as_str())
            .unwrap_or_else(|| panic!("{} not listed", s.udid));
        let b = &by_udid(&lab, &s.udid)["baseline"];
        assert_eq!(d["ConnectionType"], "USB");
        assert_eq!(d["ProductVersion"], b["product_version"]["value"]);
        assert_eq!(d["ProductVersion"], s.ios_version.as_str());
        assert_eq!(d["BuildVersion"], b["build_version"]["value"]);
        assert_eq!(d["ProductType"], b["product_type"]["value"]);
        assert_eq!(d["DeviceName"], b["device_name"]["value"]);
    }

    for s in &specs {
        let b = &by_udid(&lab, &s.udid)["baseline"];
        // The battery and disk domains are closed before StartSession (sim::values
        // PRE_SESSION_DOMAINS; device brief §5.3): reading them means pymobiledevice3 validated
        // the pair record from usbmuxd, started a session and spoke TLS to the simulated
        // lockdownd.
        let bat = judge.json(&[
            "lockdown",
            "get",
            "--udid",
            &s.udid,
            "com.apple.mobile.battery",
        ]);
        assert_eq!(bat["BatteryCurrentCapacity"], s.battery_level);
        assert_eq!(
            bat["BatteryCurrentCapacity"],
            b["battery"]["current_capacity"]["value"]
        );
        assert_eq!(
            bat["BatteryIsCharging"],
            b["battery"]["is_charging"]["value"]
        );
        assert_eq!(
            bat["ExternalConnected"],
            b["battery"]["external_connected"]["value"]
        );

        let disk = judge.json(&["lockdown", "get", "--udid", &s.udid, "com.apple.disk_usage"]);
        assert_eq!(disk["TotalDiskCapacity"], s.disk_total);
        assert_eq!(
            disk["TotalDiskCapacity"],
            b["disk"]["total_disk_capacity"]["value"]
        );
        assert_eq!(
            disk["TotalDataAvailable"],
            b["disk"]["total_data_available"]["value"]
        );
        assert_eq!(
            disk["AmountDataAvailable"],
            b["disk"]["amount_data_available"]["value"]
        );
    }

    // The whole global domain in one session.
    let all = judge.json(&["lockdown", "info", "--udid", &specs[0].udid]);
    assert_eq!(all["UniqueDeviceID"], specs[0].udid.as_str());
    assert_eq!(all["SerialNumber"], specs[0].serial.as_str());
    // A literal from the fleet file, not only the parser's reading of it.
    assert_eq!(all["BuildVersion"], "21F90");
}

#[test]
fn pymobiledevice3_pairs_an_unpaired_device_and_lab_then_uses_that_pair_record() {
    let Some(bin) = pymobiledevice3() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = fleet_file(
        &dir,
        "f.yaml",
        &format!("devices:\n{}", device("Fresh", "    paired: false\n")),
    );
    let udid = fleet::load(&f).unwrap()[0].udid.clone();
    let sim = Sim::start(&f);
    let before = probe(&sim.addr);
    assert_eq!(by_udid(&before, &udid)["status"], "partial", "{before}");

    let judge = Judge {
        bin: &bin,
        usbmuxd: &sim.addr,
        home: home.path(),
    };
    // Pair, then SavePairRecord through the simulated usbmuxd (device brief §4.5).
    let out = Command::new(&bin)
        .args(["--no-color", "lockdown", "pair", "--udid", &udid])
        .env("USBMUXD_SOCKET_ADDRESS", &sim.addr)
        .env("PYMOBILEDEVICE3_USBMUX", &sim.addr)
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pair: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let bat = judge.json(&[
        "lockdown",
        "get",
        "--udid",
        &udid,
        "com.apple.mobile.battery",
    ]);
    assert_eq!(bat["BatteryCurrentCapacity"], 80);

    // lab now finds the record pymobiledevice3 saved and opens its own session with it.
    let after = probe(&sim.addr);
    let d = by_udid(&after, &udid);
    assert_eq!(d["status"], "ok", "{after}");
    assert_eq!(d["baseline"]["battery"]["current_capacity"]["value"], 80);
}
