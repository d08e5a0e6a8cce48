//! Simulated devices as MDM clients of the embedded server, reached by the harness only over
//! the server's HTTP API and the lab's usbmuxd socket.

mod common;
use common::*;
use lab::mdm::backend::{CommandResult, MdmBackend, NanoMdm};
use lab::mdm::{Command, InstallAction, UpdateItem, parse_report};
use plist::Value;
use std::time::{Duration, Instant};

async fn result_of(b: &NanoMdm, udid: &str, uuid: &str, within: Duration) -> CommandResult {
    let start = Instant::now();
    loop {
        if let Some(r) = b
            .results(udid)
            .await
            .unwrap()
            .into_iter()
            .rev()
            .find(|r| r.command_uuid == uuid && r.status != "NotNow")
        {
            return r;
        }
        if start.elapsed() >= within {
            let all: Vec<(String, String)> = b
                .results(udid)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.command_uuid, r.status))
                .collect();
            panic!("no result for {uuid} within {within:?}: {all:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each enrollment's last Authenticate time and TokenUpdate tally, by enrollment id.
async fn authenticated(sim: &Sim) -> std::collections::HashMap<String, (String, u64)> {
    let v = sim.api("/v1/enrollments").await;
    v["enrollments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap_or("").to_string(),
                (
                    e["authenticated_at"].as_str().unwrap_or("").to_string(),
                    e["token_update_tally"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_enrolls_and_answers_device_information_and_security_info() {
    let fleet = repo_path("trials/fleets/bench-5.yaml");
    let specs = lab::sim::fleet::load(&fleet).unwrap();
    let sim = Sim::start(&fleet);
    sim.enrolled(specs.len()).await;
    let b = sim.backend();
    for (i, s) in specs.iter().enumerate() {
        let q = b
            .enqueue(
                &s.udid,
                &Command::baseline_device_information(),
                &format!("di-{i}"),
            )
            .await
            .unwrap();
        assert_eq!(
            q.pushed,
            Some(true),
            "pushed through the simulated APNs: {q:?}"
        );
        b.enqueue(&s.udid, &Command::SecurityInfo, &format!("si-{i}"))
            .await
            .unwrap();
    }
    for (i, s) in specs.iter().enumerate() {
        let r = result_of(&b, &s.udid, &format!("di-{i}"), Duration::from_secs(20)).await;
        assert_eq!(r.status, "Acknowledged");
        assert_eq!(r.request_type.as_deref(), Some("DeviceInformation"));
        let rep = parse_report(&r.raw).unwrap();
        let qr = lab::mdm::query_responses(&rep).unwrap();
        assert_eq!(qr["OSVersion"], Value::from(s.ios_version.as_str()));
        assert_eq!(qr["BuildVersion"], Value::from(s.ios_build.as_str()));
        assert_eq!(qr["IsSupervised"], Value::Boolean(s.supervised));
        assert_eq!(qr["ProductName"], Value::from(s.product_type.as_str()));
        let level = qr["BatteryLevel"].as_real().unwrap();
        assert!((level - s.battery_level as f64 / 100.0).abs() < 1e-9);
        let cap = qr["DeviceCapacity"].as_real().unwrap();
        assert!((cap - s.disk_total as f64 / 1e9).abs() < 1e-6);
        let r = result_of(&b, &s.udid, &format!("si-{i}"), Duration::from_secs(20)).await;
        let rep = parse_report(&r.raw).unwrap();
        let si = lab::mdm::security_info(&rep).unwrap();
        assert_eq!(si["PasscodePresent"], Value::Boolean(s.passcode));
    }
}

const UPDATE_FLEET: &str = r#"
seed: 9
clock: { start: "2026-11-27T10:00:00Z" }
catalogue:
  - version: "17.6.1"
    build: 21G93
    download_size: 600 MB
    install_size: 1.5 GB
devices:
  - name: Updater
    product_type: iPhone12,1
    ios: { version: "17.5.1", build: 21F90 }
    disk: { total: 64 GB, free: 20 GB }
    battery: { level: 90, charging: true, external_power: true }
    update:
      download_rate: 100 MB
      install_duration: 2m
      restart_duration: 1m
  - name: Unknown command target
    product_type: iPhone12,1
    ios: { version: "17.5.1", build: 21F90 }
    disk: { total: 64 GB, free: 20 GB }
    battery: { level: 90 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_step_default_installs_and_the_new_version_shows_on_lockdown_and_mdm() {
    let dir = tempfile::tempdir().unwrap();
    let f = fleet_file(&dir, "update.yaml", UPDATE_FLEET);
    let specs = lab::sim::fleet::load(&f).unwrap();
    let udid = specs[0].udid.clone();
    let sim = Sim::start_with(&f, &["--speed", "60"]);
    sim.enrolled(2).await;
    let b = sim.backend();
    let default = Command::ScheduleOSUpdate {
        updates: vec![UpdateItem {
            product_key: None,
            product_version: Some("17.6.1".into()),
            install_action: InstallAction::Default,
        }],
    };
    // Step 1: the first Default downloads (brief mdm.md §0.2).
    b.enqueue(&udid, &default, "sched-1").await.unwrap();
    let r = result_of(&b, &udid, "sched-1", Duration::from_secs(20)).await;
    assert_eq!(r.status, "Acknowledged");
    let rep = parse_report(&r.raw).unwrap();
    let ur = lab::mdm::update_results(&rep).unwrap();
    assert_eq!(ur[0].install_action.as_deref(), Some("DownloadOnly"));
    assert_eq!(ur[0].product_key.as_deref(), Some("iOSUpdate21G93"));

    // OSUpdateStatus until the download completes.
    let start = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let uuid = format!("status-{n}");
        b.enqueue(&udid, &Command::OSUpdateStatus, &uuid)
            .await
            .unwrap();
        let r = result_of(&b, &udid, &uuid, Duration::from_secs(20)).await;
        let rep = parse_report(&r.raw).unwrap();
        let items = lab::mdm::os_update_status(&rep).unwrap();
        if items.first().and_then(|i| i.is_downloaded.value) == Some(true) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "download never completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Step 2: a second Default installs; the device restarts, leaves usbmuxd, and returns with
    // the new version on lockdown and MDM.
    b.enqueue(&udid, &default, "sched-2").await.unwrap();
    let r = result_of(&b, &udid, "sched-2", Duration::from_secs(20)).await;
    let rep = parse_report(&r.raw).unwrap();
    let ur = lab::mdm::update_results(&rep).unwrap();
    assert_eq!(
        ur[0].install_action.as_deref(),
        Some("InstallASAP"),
        "{ur:?}"
    );

    let probe_version = |addr: &str| -> Option<String> {
        let o = run_lab(&["probe", "--json", "--udid", &udid], Some(addr));
        if !o.status.success() {
            return None;
        }
        parse_json(&o)["devices"][0]["baseline"]["product_version"]["value"]
            .as_str()
            .map(str::to_string)
    };
    let mut saw_gone = false;
    let new = wait_for(Duration::from_secs(30), || match probe_version(&sim.addr) {
        None => {
            saw_gone = true;
            None
        }
        Some(v) if v == "17.6.1" => Some(v),
        Some(_) => None,
    });
    assert_eq!(new, "17.6.1");
    assert!(saw_gone, "the device left usbmuxd while it restarted");

    b.enqueue(&udid, &Command::baseline_device_information(), "di-after")
        .await
        .unwrap();
    let r = result_of(&b, &udid, "di-after", Duration::from_secs(20)).await;
    let rep = parse_report(&r.raw).unwrap();
    let qr = lab::mdm::query_responses(&rep).unwrap();
    assert_eq!(qr["OSVersion"], Value::from("17.6.1"));
    assert_eq!(qr["BuildVersion"], Value::from("21G93"));

    // Anything a device does not know gets Error 12021 in MCMDMErrorDomain (as real devices).
    let other = &specs[1].udid;
    let http = lab::http_client::client(Duration::from_secs(5));
    let raw = br#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict><key>Command</key><dict><key>RequestType</key><string>ProfileList</string></dict><key>CommandUUID</key><string>pl-1</string></dict></plist>"#;
    let resp = http
        .put(format!(
            "{}/v1/enqueue/{other}",
            sim.mdm_url.as_ref().unwrap()
        ))
        .basic_auth("nanomdm", Some(TEST_API_KEY))
        .body(raw.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = result_of(&b, other, "pl-1", Duration::from_secs(20)).await;
    assert_eq!(r.status, "Error");
    let rep = parse_report(&r.raw).unwrap();
    assert_eq!(rep.error_chain[0].code, Some(12021));
    assert_eq!(
        rep.error_chain[0].domain.as_deref(),
        Some("MCMDMErrorDomain")
    );
}

/// `lab sim serve --mdm-db FILE`: the embedded MDM's store outlives the simulator process
/// (killed with SIGKILL, as a crash would), its files are owner-only, and the restarted lab
/// keeps serving the same enrollments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_mdm_store_survives_a_restart_with_mdm_db() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let fleet = repo_path("trials/fleets/bench-5.yaml");
    let specs = lab::sim::fleet::load(&fleet).unwrap();
    let udid = specs[0].udid.clone();
    let db = dir.path().join("sim-mdm.sqlite");
    let db_arg = db.to_str().unwrap();

    let sim = Sim::start_with(&fleet, &["--mdm-db", db_arg]);
    sim.enrolled(specs.len()).await;
    let b = sim.backend();
    b.enqueue(
        &udid,
        &Command::baseline_device_information(),
        "before-restart",
    )
    .await
    .unwrap();
    let before = result_of(&b, &udid, "before-restart", Duration::from_secs(20)).await;
    assert_eq!(before.status, "Acknowledged");
    for suffix in ["", "-wal", "-shm"] {
        let p = dir.path().join(format!("sim-mdm.sqlite{suffix}"));
        let mode = std::fs::metadata(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{} must be owner-only", p.display());
    }
    let before_restart = authenticated(&sim).await;
    drop(sim);

    let sim = Sim::start_with(&fleet, &["--mdm-db", db_arg]);
    // Read at once, before the devices check in again: the history comes from the file.
    let h = sim.api(&format!("/v1/history/{udid}")).await;
    let cmds = h["commands"].as_array().unwrap();
    let kept = cmds
        .iter()
        .find(|c| c["command_uuid"] == "before-restart")
        .unwrap_or_else(|| panic!("history kept across the restart: {h}"));
    assert_eq!(kept["state"], "done");
    assert_eq!(kept["last_status"], "Acknowledged");
    assert_eq!(kept["reports"].as_array().unwrap().len(), 1);
    let enrolled = sim.api("/v1/enrollments").await;
    assert_eq!(
        enrolled["enrollments"].as_array().unwrap().len(),
        specs.len(),
        "every device is still enrolled: {enrolled}"
    );
    // The restarted lab's devices enroll again and keep answering through the same store. The
    // enrollments kept in the file already count as enrolled: wait for each device's new
    // Authenticate and TokenUpdate. A command queued between the two would find no push token
    // (Authenticate clears it, as NanoMDM's does) and wait for the device's next poll.
    let start = Instant::now();
    loop {
        let now = authenticated(&sim).await;
        let again = now
            .iter()
            .filter(|(id, (at, tally))| {
                *tally >= 1 && before_restart.get(*id).is_none_or(|(was, _)| was != at)
            })
            .count();
        if again == specs.len() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{again} of {} devices enrolled again after the restart",
            specs.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = sim.backend();
    b.enqueue(&udid, &Command::SecurityInfo, "after-restart")
        .await
        .unwrap();
    let after = result_of(&b, &udid, "after-restart", Duration::from_secs(20)).await;
    assert_eq!(after.status, "Acknowledged");
    let uuids: Vec<String> = b
        .results(&udid)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.command_uuid)
        .collect();
    assert!(
        uuids.iter().any(|u| u == "before-restart") && uuids.iter().any(|u| u == "after-restart"),
        "{uuids:?}"
    );

    // Without --mdm-db the store is in memory: a restart starts empty (what the flag is for).
    drop(sim);
    let sim = Sim::start(&fleet);
    let h = sim.api(&format!("/v1/history/{udid}")).await;
    // Only what the new store queued itself: DDM turned on at enrolment (iOS 15+).
    let before: Vec<_> = h["commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["request_type"] != "DeclarativeManagement")
        .collect();
    assert!(before.is_empty(), "{h}");
}
