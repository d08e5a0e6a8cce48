//! Device-side fault injection in the simulated lab (issue 6): MDM clients that spoil a report
//! (`mdm_fault`), a device unplugged and plugged in again (`reattach_after`), and a device clock
//! that jumps (`clock.jumps`), each seen only through the lab's sockets and the MDM's API.

mod common;
use base64::Engine;
use common::*;
use lab::mdm::backend::MdmBackend;
use lab::mdm::{Command, parse_report};
use lab::sim::fleet;
use serde_json::Value as Json;
use std::time::{Duration, Instant};

/// The server's history of one command once it is answered (state `done`).
async fn answered(sim: &Sim, udid: &str, uuid: &str, within: Duration) -> Json {
    let start = Instant::now();
    loop {
        let h = sim.api(&format!("/v1/history/{udid}")).await;
        if let Some(c) = h["commands"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["command_uuid"] == uuid && c["state"] == "done")
        {
            return c.clone();
        }
        assert!(
            start.elapsed() < within,
            "{uuid} not answered within {within:?}: {h}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn raw(report: &Json) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(report["raw_base64"].as_str().unwrap())
        .unwrap()
}

const FAULT_FLEET: &str = r#"
seed: 5
mdm: { poll_interval: 1s }
catalogue:
  - { version: "17.6.1", build: 21G93, download_size: 600 MB, install_size: 1.5 GB }
devices:
  - name: Wrong UUID
    product_type: iPhone12,1
    ios: { version: "17.5.1", build: 21F90 }
    disk: { total: 64 GB, free: 20 GB }
    battery: { level: 90 }
    mdm_fault: { kind: wrong_command_uuid, on: OSUpdateStatus, times: 1 }
  - name: Malformed
    product_type: iPhone12,1
    ios: { version: "17.5.1", build: 21F90 }
    disk: { total: 64 GB, free: 20 GB }
    battery: { level: 90 }
    mdm_fault: { kind: malformed_report, on: OSUpdateStatus }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoiled_os_update_status_report_is_rejected_and_the_redelivery_answered() {
    let dir = tempfile::tempdir().unwrap();
    let f = fleet_file(&dir, "faults.yaml", FAULT_FLEET);
    let specs = fleet::load(&f).unwrap();
    let (wrong, malformed) = (specs[0].udid.clone(), specs[1].udid.clone());
    let sim = Sim::start(&f);
    sim.enrolled(2).await;
    let b = sim.backend();
    for (udid, tag) in [(&wrong, "wrong"), (&malformed, "malformed")] {
        // A DeviceInformation first: not the faulty RequestType, answered at once.
        b.enqueue(
            udid,
            &Command::baseline_device_information(),
            &format!("di-{tag}"),
        )
        .await
        .unwrap();
        b.enqueue(udid, &Command::OSUpdateStatus, &format!("st-{tag}"))
            .await
            .unwrap();
    }
    for (udid, tag) in [(&wrong, "wrong"), (&malformed, "malformed")] {
        let di = answered(&sim, udid, &format!("di-{tag}"), Duration::from_secs(20)).await;
        assert_eq!(di["deliveries"].as_array().unwrap().len(), 1, "{di}");

        // The spoiled delivery was refused (400) and the command stayed queued; the device
        // got it again on its next poll and answered properly.
        let st = answered(&sim, udid, &format!("st-{tag}"), Duration::from_secs(20)).await;
        assert_eq!(st["last_status"], "Acknowledged", "{st}");
        assert_eq!(st["deliveries"].as_array().unwrap().len(), 2, "{st}");
        let reports = st["reports"].as_array().unwrap();
        assert_eq!(
            reports.len(),
            1,
            "only the proper answer is attributed: {st}"
        );
        let rep = parse_report(&raw(&reports[0])).unwrap();
        assert_eq!(
            rep.command_uuid.as_deref(),
            Some(format!("st-{tag}").as_str())
        );
        assert!(
            lab::mdm::os_update_status(&rep).is_some(),
            "a real OSUpdateStatus answer: {rep:?}"
        );
    }

    // The server kept the spoiled reports as evidence.
    let rejected = sim.api("/v1/reports/rejected").await;
    let rejected = rejected["reports"].as_array().unwrap();
    let wrong_uuid: Vec<_> = rejected
        .iter()
        .filter_map(|r| parse_report(&raw(r)).ok().map(|rep| (r, rep)))
        .filter(|(_, rep)| rep.udid.as_deref() == Some(wrong.as_str()))
        .collect();
    assert_eq!(wrong_uuid.len(), 1, "{rejected:?}");
    let (r, rep) = &wrong_uuid[0];
    assert!(
        r["note"].as_str().unwrap().contains("unknown command"),
        "{r}"
    );
    assert_ne!(rep.command_uuid.as_deref(), Some("st-wrong"));
    assert!(
        lab::mdm::os_update_status(rep).is_some(),
        "the real answer under a made-up CommandUUID: {rep:?}"
    );
    let garbled: Vec<_> = rejected
        .iter()
        .filter(|r| parse_report(&raw(r)).is_err())
        .collect();
    assert_eq!(garbled.len(), 1, "{rejected:?}");
    assert!(
        garbled[0]["note"]
            .as_str()
            .unwrap()
            .contains("malformed report"),
        "{}",
        garbled[0]
    );
    let bytes = raw(garbled[0]);
    assert!(bytes.starts_with(b"<?xml"), "truncated XML");
    assert!(
        String::from_utf8_lossy(&bytes).contains(malformed.as_str()),
        "the malformed device's report, cut off"
    );
}

fn device_ids(sim: &Sim, udid: &str) -> Option<u64> {
    let o = run_lab(&["devices", "--json"], Some(&sim.addr));
    assert!(o.status.success(), "{}", stderr(&o));
    parse_json(&o)["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["udid"] == udid)
        .map(|d| d["device_id"].as_u64().expect("a DeviceID"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reattached_device_comes_back_with_a_new_device_id_and_its_mdm_kept_working() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "devices:\n{}{}",
        device("Stays", ""),
        device(
            "Replugged",
            "    detach_after: 3s\n    reattach_after: 10s\n"
        ),
    );
    let f = fleet_file(&dir, "f.yaml", &text);
    let udid = fleet::load(&f).unwrap()[1].udid.clone();
    let sim = Sim::start(&f);
    let first = device_ids(&sim, &udid).expect("attached at start");
    wait_for(Duration::from_secs(20), || {
        device_ids(&sim, &udid).is_none().then_some(())
    });
    // Unplugged from USB, the device still answers its MDM (USB is not the network).
    sim.enrolled(2).await;
    sim.backend()
        .enqueue(&udid, &Command::SecurityInfo, "si-unplugged")
        .await
        .unwrap();
    answered(&sim, &udid, "si-unplugged", Duration::from_secs(5)).await;
    assert_eq!(
        device_ids(&sim, &udid),
        None,
        "answered while still detached"
    );
    let again = wait_for(Duration::from_secs(30), || device_ids(&sim, &udid));
    assert_ne!(again, first, "a re-plug gets a fresh DeviceID");
    // And lockdown answers again under the new DeviceID.
    let p = parse_json(&run_lab(
        &["probe", "--json", "--udid", &udid],
        Some(&sim.addr),
    ));
    assert_eq!(p["devices"][0]["status"], "ok", "{p}");
    assert_eq!(p["devices"][0]["device_id"], again, "{p}");
}

/// `lab probe --json`'s `device_time` of the one device, and the host instant it was read.
fn probe_time(sim: &Sim) -> (f64, Instant) {
    let before = Instant::now();
    let o = run_lab(&["probe", "--json"], Some(&sim.addr));
    let p = parse_json(&o);
    let t = p["devices"][0]["device_time"]
        .as_f64()
        .unwrap_or_else(|| panic!("no device_time: {p}"));
    // The GetValue happens between the two instants; take the middle.
    (t, before + before.elapsed() / 2)
}

#[test]
fn clock_jumps_show_in_device_time_and_ideviceinfo() {
    let dir = tempfile::tempdir().unwrap();
    let speed = 10.0;
    // At 10×: +3 h after 3 s of real time, −2 h after 6 s.
    let text = format!(
        "clock:\n  start: \"2026-11-27T22:30:00Z\"\n  jumps:\n    - {{ after: 30s, by: 3h }}\n    - {{ after: 60s, by: -2h }}\ndevices:\n{}",
        device("Clock", "")
    );
    let f = fleet_file(&dir, "f.yaml", &text);
    let udid = fleet::load(&f).unwrap()[0].udid.clone();
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-27T22:30:00Z")
        .unwrap()
        .timestamp() as f64;
    let sim = Sim::start_with(&f, &["--speed", "10"]);
    let (t1, r1) = probe_time(&sim);
    assert!(
        (start..start + 30.0).contains(&t1),
        "before the first jump: {t1}"
    );
    // How far the device clock moved beyond what the elapsed time explains.
    let jumped = |(ta, ra): (f64, Instant), (tb, rb): (f64, Instant)| {
        (tb - ta) - rb.duration_since(ra).as_secs_f64() * speed
    };
    let (t2, r2) = wait_for(Duration::from_secs(20), || {
        let p = probe_time(&sim);
        (p.0 > start + 3600.0).then_some(p)
    });
    let forward = jumped((t1, r1), (t2, r2));
    assert!(
        (forward - 3.0 * 3600.0).abs() < 120.0,
        "jumped {forward} s, want about +3 h"
    );
    if have_libimobiledevice() {
        let out = std::process::Command::new("ideviceinfo")
            .args(["-u", &udid, "-k", "TimeIntervalSince1970"])
            .env("USBMUXD_SOCKET_ADDRESS", &sim.addr)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        let t: f64 = text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(
            t > start + 3.0 * 3600.0 && t < start + 4.0 * 3600.0,
            "ideviceinfo sees the jumped clock: {t}"
        );
        let off = std::process::Command::new("ideviceinfo")
            .args(["-u", &udid, "-k", "TimeZoneOffsetFromUTC"])
            .env("USBMUXD_SOCKET_ADDRESS", &sim.addr)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&off.stdout)
                .trim()
                .parse::<f64>()
                .ok(),
            Some(0.0)
        );
    }
    // Less than 2 h can pass at 10× before the test gives up, so a reading below t2 is the
    // backward jump.
    let (t3, r3) = wait_for(Duration::from_secs(20), || {
        let p = probe_time(&sim);
        (p.0 < t2).then_some(p)
    });
    let back = jumped((t2, r2), (t3, r3));
    assert!(
        (back + 2.0 * 3600.0).abs() < 120.0,
        "jumped {back} s, want about −2 h"
    );
    assert!(t3 < t2, "the device clock went back");
}
