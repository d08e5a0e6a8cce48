//! Devices that misbehave during a trial (issue #6, fault injection): an MDM client that answers
//! with a wrong CommandUUID or a malformed plist, a device unplugged mid-download that comes back
//! later, a device clock that jumps. For each the trial goes on, the fault is journaled as an
//! observation (raw where the device sent garbage), and the MDM server's own records show
//! exactly the doses the protocol calls for.

mod common;
use base64::Engine;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn protocol(dir: &Path, sim: &Sim, speed: u32, arm: &str, follow_up: &str) -> PathBuf {
    let text = format!(
        "id: device-faults
title: Misbehaving devices
lab:
  usbmuxd: [\"{addr}\"]
  mdm: {{ kind: embedded, url: \"{url}\", api_key_env: LAB_MDM_API_KEY }}
  time_scale: {speed}
eligibility: {{ supervised: true }}
target: latest
arms:
{arm}
follow_up: {follow_up}
",
        addr = sim.addr,
        url = sim.mdm_url.as_ref().unwrap()
    );
    let p = dir.join("device-faults.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn run(protocol: &Path, results: &Path) -> PathBuf {
    let out = lab_run(protocol, results).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run_dir(results)
}

/// Deliveries of each ScheduleOSUpdate command queued for a device, from the server.
fn doses_on_server(sim: &Sim, udid: &str) -> Vec<usize> {
    sim.histories(&[udid.to_string()])[udid]["commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["request_type"] == "ScheduleOSUpdate")
        .map(|c| c["deliveries"].as_array().unwrap().len())
        .collect()
}

fn udid_of(dir: &Path, name: &str) -> String {
    csv_rows(&dir.join("devices.csv"))
        .into_iter()
        .find(|d| d["device_name"] == name)
        .unwrap_or_else(|| panic!("no device {name}"))["udid"]
        .clone()
}

const DEVICE: &str = "    product_type: iPhone12,1
    ios: { version: \"17.5.1\", build: 21F90 }
    disk: { total: 64 GB, free: 21 GB }
    battery: { level: 90, charging: true, external_power: true }
";

#[test]
fn spoiled_reports_and_an_unplugged_device_leave_the_trial_going_with_one_dose_per_step() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = fleet_file(
        &tmp,
        "fleet.yaml",
        &format!(
            "seed: 67
clock: {{ start: \"2026-11-27T09:00:00Z\" }}
mdm: {{ poll_interval: 60s }}
catalogue:
  - {{ version: \"17.6.1\", build: 21G93, download_size: 600 MB, install_size: 1.5 GB, product_types: [\"iPhone12,1\"] }}
devices:
  - name: Control
{DEVICE}  - name: Wrong UUID
{DEVICE}    mdm_fault: {{ kind: wrong_command_uuid, on: OSUpdateStatus, times: 2 }}
  - name: Malformed
{DEVICE}    mdm_fault: {{ kind: malformed_report, on: OSUpdateStatus }}
  - name: Unplugged
{DEVICE}    update: {{ download_rate: 100 KB }}   # 6 000 s of download
    detach_after: 60m
    reattach_after: 20m
"
        ),
    );
    let sim = Sim::start_with(&fleet, &["--speed", "600"]);
    let p = protocol(
        tmp.path(),
        &sim,
        600,
        "  - name: two-step
    install_action: Default
    follow_up_step: { install_action: Default, when: downloaded }",
        "{ poll_interval: 30s, max_duration: 4h, until: updated }",
    );
    let dir = run(&p, &tmp.path().join("results"));
    let j = journal_events(&dir);
    let devices = csv_rows(&dir.join("devices.csv"));
    for d in &devices {
        assert_eq!(d["outcome"], "updated", "{d:?}");
        assert_eq!(
            doses_on_server(&sim, &d["udid"]),
            [1, 1],
            "{}: two doses, each delivered once",
            d["device_name"]
        );
    }

    // The spoiled reports, journaled raw from the server's rejected reports.
    let rejected = |udid: &str| -> Vec<(String, Vec<u8>)> {
        j.iter()
            .filter(|e| {
                e["event"] == "observation"
                    && e["kind"] == "mdm_rejected_report"
                    && e["udid"] == udid
            })
            .map(|e| {
                (
                    e["key"].as_str().unwrap().to_string(),
                    base64::engine::general_purpose::STANDARD
                        .decode(e["value"].as_str().unwrap())
                        .unwrap(),
                )
            })
            .collect()
    };
    let wrong = rejected(&udid_of(&dir, "Wrong UUID"));
    assert_eq!(wrong.len(), 2, "{wrong:?}");
    let sent: Vec<&str> = j
        .iter()
        .filter_map(|e| e["command_uuid"].as_str())
        .collect();
    for (key, raw) in &wrong {
        assert!(key.contains("unknown command"), "{key}");
        let rep = lab::mdm::parse_report(raw).expect("a well-formed report");
        let uuid = rep.command_uuid.unwrap();
        assert!(!sent.contains(&uuid.as_str()), "{uuid} is not one of ours");
    }
    let malformed = rejected(&udid_of(&dir, "Malformed"));
    assert_eq!(malformed.len(), 1, "{malformed:?}");
    assert!(malformed[0].0.contains("malformed report"), "{malformed:?}");
    assert!(lab::mdm::parse_report(&malformed[0].1).is_err());
    assert!(rejected(&udid_of(&dir, "Control")).is_empty());

    // Unplugged while downloading (before the downloaded-triggered second dose), back later.
    let u = udid_of(&dir, "Unplugged");
    let seq_of = |pred: &dyn Fn(&Value) -> bool| {
        j.iter()
            .find(|e| e["udid"] == u.as_str() && pred(e))
            .map(|e| e["seq"].as_u64().unwrap())
    };
    let first_dose = seq_of(&|e| e["event"] == "dose_enqueued").unwrap();
    let gone = seq_of(&|e| e["event"] == "device_reprobed" && e["attached"] == false)
        .expect("the unplugged device is seen gone");
    let back = j
        .iter()
        .filter(|e| e["udid"] == u.as_str() && e["event"] == "device_reprobed")
        .find(|e| e["attached"] == true && e["seq"].as_u64().unwrap() > gone)
        .expect("and back")["seq"]
        .as_u64()
        .unwrap();
    let second_intent = seq_of(&|e| e["event"] == "dose_intent" && e["step"] == 2).unwrap();
    assert!(
        first_dose < gone && gone < second_intent,
        "{first_dose} {gone} {second_intent}"
    );
    assert!(back > gone);
    // Issue 14: an attached re-probe carries the network state and its source; a detached one
    // read nothing, so has neither.
    let reprobe_at = |seq: u64| j.iter().find(|e| e["seq"] == seq).unwrap();
    let back = reprobe_at(back);
    assert!(back["network"].is_string(), "{back}");
    assert!(
        back["network_source"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{back}"
    );
    let gone = reprobe_at(gone);
    assert!(
        gone.get("network").is_none() && gone.get("network_source").is_none(),
        "{gone}"
    );
}

#[test]
fn a_device_clock_that_jumps_is_an_observation_and_the_trial_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = fleet_file(
        &tmp,
        "fleet.yaml",
        &format!(
            "seed: 68
clock:
  start: \"2026-11-27T09:00:00Z\"
  jumps: [ {{ after: 24m, by: 3h }}, {{ after: 28m, by: -1h }} ]
mdm: {{ poll_interval: 60s }}
catalogue:
  - {{ version: \"17.6.1\", build: 21G93, download_size: 600 MB, install_size: 1.5 GB, product_types: [\"iPhone12,1\"] }}
devices:
  - name: Clocked
    count: 2
{DEVICE}"
        ),
    );
    let sim = Sim::start_with(&fleet, &["--speed", "120"]);
    // DownloadOnly: the devices stay in follow-up until its time limit, across both jumps. The
    // jumps come 12 s of real time after the start (at speed 120), so that a loaded machine
    // still doses before them (at 6 s, a CI run under load saw none: both fell before the dose).
    let p = protocol(
        tmp.path(),
        &sim,
        120,
        "  - name: download-only
    install_action: DownloadOnly",
        "{ poll_interval: 30s, max_duration: 34m, until: updated }",
    );
    let dir = run(&p, &tmp.path().join("results"));
    let j = journal_events(&dir);
    let jumps: Vec<&str> = j
        .iter()
        .filter(|e| e["event"] == "observation" && e["kind"] == "device_clock_jump")
        .map(|e| e["value"].as_str().unwrap())
        .collect();
    assert!(
        jumps
            .iter()
            .any(|v| v.contains("moved +3h") || v.contains("moved +2h 5")),
        "{jumps:#?}"
    );
    assert!(
        jumps
            .iter()
            .any(|v| v.contains("moved -1h") || v.contains("moved -5")),
        "{jumps:#?}"
    );
    for d in csv_rows(&dir.join("devices.csv")) {
        assert_eq!(d["outcome"], "downloaded_not_installed", "{d:?}");
        assert_eq!(doses_on_server(&sim, &d["udid"]), [1], "{d:?}");
    }
}
