//! DDM software-update trials end to end (issue 13): `trials/ddm.yaml` run against a simulated
//! lab served by `lab sim serve` (its embedded MDM turns DDM on at enrolment), reached as a
//! bench is (usbmuxd + the MDM's HTTP API). Checked against the MDM server's own records
//! (`GET /v1/ddm/declarations/{udid}`, `GET /v1/history/{udid}`), not only against `lab`'s:
//!
//! - the eligible devices (iOS 17+, DDM on, the target offered for the model) get exactly one
//!   enforcement declaration each, the excluded ones none, with the rule that excluded them;
//! - every outcome is the build the device reports over USB afterwards;
//! - a SIGKILL between the fsynced intent and the declaration upload, then a rerun, leaves each
//!   device with one declaration: the one its journal's intent names, byte for byte.

mod common;
use base64::Engine;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Simulated seconds per real second: an hour in 10 s, so the whole trial (a 2 h deadline,
/// a 4 h follow-up) takes well under a minute.
const SPEED: &str = "360";

/// `trials/ddm.yaml` pointed at the external simulated lab, its feed path made absolute.
fn protocol(sim: &Sim, dir: &Path) -> PathBuf {
    let p = bench_protocol("trials/ddm.yaml", sim, SPEED, dir, None, None, false);
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "gdmf: feeds/gdmf-pmv.json",
        &format!(
            "gdmf: \"{}\"",
            repo_path("trials/feeds/gdmf-pmv.json").display()
        ),
    );
    std::fs::write(&p, text).unwrap();
    p
}

fn start_sim() -> Sim {
    let sim = Sim::start_with(&repo_path("trials/fleets/ddm-8.yaml"), &["--speed", SPEED]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(sim.enrolled(8));
    sim
}

/// The enforcement declarations the server holds for each device (identifier → JSON).
fn server_declarations(sim: &Sim, udids: &[String]) -> BTreeMap<String, Vec<serde_json::Value>> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut out = BTreeMap::new();
        for u in udids {
            let v = sim.api(&format!("/v1/ddm/declarations/{u}")).await;
            let list: Vec<serde_json::Value> = v["declarations"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["Type"] == lab::mdm::ddm::ENFORCEMENT_SPECIFIC)
                .cloned()
                .collect();
            out.insert(u.clone(), list);
        }
        out
    })
}

fn fleet_udids() -> Vec<String> {
    lab::sim::fleet::load(&repo_path("trials/fleets/ddm-8.yaml"))
        .unwrap()
        .iter()
        .map(|d| d.udid.clone())
        .collect()
}

/// Each device's dose intents in a journal: (identifier, declaration bytes).
fn intents(events: &[serde_json::Value]) -> BTreeMap<String, Vec<(String, Vec<u8>)>> {
    let mut out: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for e in events.iter().filter(|e| e["event"] == "dose_intent") {
        assert_eq!(e["request_type"], lab::mdm::ddm::ENFORCEMENT_SPECIFIC);
        assert!(e.get("install_action").is_none(), "{e}");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(e["command_b64"].as_str().unwrap())
            .unwrap();
        out.entry(e["udid"].as_str().unwrap().to_string())
            .or_default()
            .push((e["command_uuid"].as_str().unwrap().to_string(), bytes));
    }
    out
}

#[test]
fn a_ddm_trial_doses_by_declaration_and_judges_by_the_reported_build() {
    let sim = start_sim();
    let tmp = tempfile::tempdir().unwrap();
    let proto = protocol(&sim, tmp.path());
    let results = tmp.path().join("results");
    let out = lab_run(&proto, &results).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = run_dir(&results);
    let rows = csv_rows(&dir.join("devices.csv"));
    let by_name: BTreeMap<String, &BTreeMap<String, String>> = rows
        .iter()
        .map(|r| (r["device_name"][..3].to_string(), r))
        .collect();
    // The excluded devices, each for the rule that reads its situation.
    for (name, rule) in [
        ("D05", "battery"),
        ("D06", "ddm_target"),
        ("D07", "ddm_min_ios"),
    ] {
        let r = by_name[name];
        assert_eq!(r["eligible"], "false", "{name}");
        assert!(
            r["exclusion_rules"].split(';').any(|x| x.trim() == rule),
            "{name}: {}",
            r["exclusion_rules"]
        );
        assert_eq!(r["dose_mechanism"], "", "{name} was not allocated");
    }
    // The eligible devices: a DDM dose each, an outcome that is the build seen on USB.
    let events = journal_events(&dir);
    let intents = intents(&events);
    let declarations = server_declarations(&sim, &fleet_udids());
    for name in ["D01", "D02", "D03", "D04", "D08"] {
        let r = by_name[name];
        let udid = &r["udid"];
        assert_eq!(r["eligible"], "true", "{name}: {}", r["exclusion_messages"]);
        assert_eq!(r["dose_mechanism"], "ddm_enforcement", "{name}");
        assert!(r["arm"].starts_with("ddm-deadline-"), "{name}");
        let mine = &intents[udid.as_str()];
        assert_eq!(mine.len(), 1, "{name}: one declaration intent");
        let on_server = &declarations[udid.as_str()];
        assert_eq!(on_server.len(), 1, "{name}: {on_server:?}");
        assert_eq!(on_server[0]["Identifier"], mine[0].0.as_str(), "{name}");
        let sent: serde_json::Value = serde_json::from_slice(&mine[0].1).unwrap();
        assert_eq!(
            sent, on_server[0],
            "{name}: the server holds the journaled bytes"
        );
        assert_eq!(sent["Payload"]["TargetOSVersion"], "26.6.1");
        // The outcome is the build the last USB re-probe read.
        let last_build = events
            .iter()
            .rev()
            .filter(|e| e["event"] == "device_reprobed" && e["udid"] == udid.as_str())
            .find_map(|e| e["build_version"].as_str())
            .unwrap_or_default()
            .to_string();
        assert_eq!(r["final_build"], last_build, "{name}");
        if last_build == "23G83" {
            assert_eq!(r["outcome"], "updated", "{name}");
        } else {
            assert_ne!(r["outcome"], "updated", "{name}");
        }
    }
    // The passcode device whose user never approves does not install; the others do. Past its
    // deadline (+1 h) by the end of follow-up, it is a finding, drafted for Feedback Assistant
    // with the declaration and its status reports attached.
    assert_ne!(by_name["D04"]["final_build"], "23G83");
    assert_eq!(by_name["D04"]["outcome"], "downloaded_not_installed");
    if by_name["D04"]["arm"] == "ddm-deadline-future" {
        let draft =
            std::fs::read_to_string(dir.join("feedback/ddm_deadline_passed_without_install.md"))
                .expect("a Feedback Assistant draft");
        assert!(draft.contains(by_name["D04"]["udid"].as_str()), "{draft}");
        assert!(draft.contains("**Area:** Device Management"), "{draft}");
    }
    for name in ["D01", "D02", "D03", "D08"] {
        assert_eq!(by_name[name]["outcome"], "updated", "{name}");
    }
    for name in ["D05", "D06", "D07"] {
        let u = &by_name[name]["udid"];
        assert!(
            declarations[u.as_str()].is_empty(),
            "{name} got a declaration"
        );
    }
    // Status reports are journaled raw, and the run folder holds every declaration and every
    // report byte for byte (`ddm/<udid>/`).
    let reports: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "ddm_status_report")
        .collect();
    assert!(reports.len() >= 5, "{}", reports.len());
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    for r in &reports {
        let f = dir
            .join("ddm")
            .join(r["udid"].as_str().unwrap())
            .join(format!("status-{}.json", r["report_id"].as_str().unwrap()));
        assert_eq!(
            std::fs::read(&f).unwrap(),
            b64(&r["raw_b64"]),
            "{}",
            f.display()
        );
    }
    for (udid, mine) in &intents {
        let f = dir
            .join("ddm")
            .join(udid)
            .join(format!("declaration-{}.json", mine[0].0));
        assert_eq!(std::fs::read(&f).unwrap(), mine[0].1, "{}", f.display());
    }
}

#[test]
fn a_kill_between_the_intent_and_the_upload_gives_no_second_declaration() {
    let sim = start_sim();
    let tmp = tempfile::tempdir().unwrap();
    let proto = protocol(&sim, tmp.path());
    let results = tmp.path().join("results");
    // The hook holds the run right after the intents are fsynced, before any MDM call.
    let mut child = lab_run(&proto, &results)
        .env("LAB_TEST_PAUSE_AFTER_INTENT_MS", "4000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let journal = || {
        std::fs::read_dir(&results)
            .ok()
            .and_then(|mut d| d.find_map(|e| e.ok().filter(|e| e.path().is_dir())))
            .and_then(|e| std::fs::read_to_string(e.path().join("journal.jsonl")).ok())
            .unwrap_or_default()
    };
    let start = Instant::now();
    while !journal().contains("\"dose_intent\"") {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no intent was written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let udids = fleet_udids();
    let text = journal();
    assert!(
        !text.contains("\"dose_enqueued\""),
        "the kill landed after an upload"
    );
    let before = server_declarations(&sim, &udids);
    assert!(
        before.values().all(Vec::is_empty),
        "nothing was uploaded before the kill: {before:?}"
    );
    // The rerun resumes: the interrupted uploads are completed with the intents' own bytes.
    let out = lab_run(&proto, &results).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let events = journal_events(&run_dir(&results));
    let intents = intents(&events);
    let after = server_declarations(&sim, &udids);
    assert!(!intents.is_empty());
    for (udid, mine) in &intents {
        assert_eq!(mine.len(), 1, "{udid}: one intent, never a second");
        let held = &after[udid.as_str()];
        assert_eq!(held.len(), 1, "{udid}: {held:?}");
        assert_eq!(held[0]["Identifier"], mine[0].0.as_str());
        let sent: serde_json::Value = serde_json::from_slice(&mine[0].1).unwrap();
        assert_eq!(
            sent, held[0],
            "{udid}: the journaled bytes, not a rebuilt declaration"
        );
    }
    // One sync command per dose in the server's own history, the one derived from the
    // declaration (the DeclarativeManagement of enrolment has another CommandUUID).
    for (udid, h) in sim.histories(&intents.keys().cloned().collect::<Vec<_>>()) {
        let syncs: Vec<&serde_json::Value> = h["commands"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| {
                c["request_type"] == "DeclarativeManagement"
                    && c["command_uuid"].as_str().unwrap().ends_with("-sync")
            })
            .collect();
        assert_eq!(syncs.len(), 1, "{udid}: {syncs:?}");
    }
}
