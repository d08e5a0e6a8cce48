//! The protocol's stop rule, reached the way an operator reaches it: while `lab run` follows a
//! two-step trial up, `lab observe … --kind adverse_event --key 'device unusable'` (another
//! process) records a severe adverse event; the runner folds that append into its own view of
//! the journal, the rule fires, and no step-2 dose follows. Also `lab observe`'s refusals.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const FLEET: &str = r#"seed: 12
clock: { start: "2026-11-27T09:00:00Z" }
catalogue:
  - version: "17.6.1"
    build: 21G93
    download_size: 600 MB
    install_size: 1.5 GB
devices:
  - name: S1 plugged in
    product_type: iPhone12,1
    ios: { version: "17.5.1", build: 21F90 }
    disk: { total: 64 GB, free: 20 GB }
    battery: { level: 90, charging: true, external_power: true }
    update: { download_rate: 2 MB, install_duration: 2m, restart_duration: 1m }
  - name: S2 on battery
    product_type: iPhone12,1
    ios: { version: "17.5.1", build: 21F90 }
    disk: { total: 64 GB, free: 20 GB }
    battery: { level: 80 }
    update: { download_rate: 2 MB, install_duration: 2m, restart_duration: 1m }
"#;

const PROTOCOL: &str = r#"id: stop-rule-cli
title: "Stop rule from lab observe"
hypothesis: Devices sent Default, then Default again once downloaded, report the target build.
lab:
  simulated: { fleet: fleet.yaml, speed: 60 }
eligibility:
  free_disk: { enabled: true, fallback_min: 6 GB }
  battery: { enabled: true, min_percent: 50, or_external_power: true }
target: latest
arms:
  - name: default-two-step
    install_action: Default
    follow_up_step: { install_action: Default, when: downloaded }
allocation_seed: 12
follow_up:
  poll_interval: 30s
  max_duration: 10m
  until: updated
  reprobe: true
stop:
  severe_adverse_events: 1
"#;

fn run_dir(results: &Path) -> Option<PathBuf> {
    std::fs::read_dir(results)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.join("journal.jsonl").exists())
}

fn journal_lines(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn observe(args: &[&str]) -> std::process::Output {
    Command::new(lab_bin())
        .arg("observe")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_severe_adverse_event_recorded_by_lab_observe_stops_the_second_dose() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fleet.yaml"), FLEET).unwrap();
    let protocol = dir.path().join("p.yaml");
    std::fs::write(&protocol, PROTOCOL).unwrap();
    let results = dir.path().join("results");
    let mut child = Command::new(lab_bin())
        .args(["run", "--yes", "--ledger"])
        .arg(dir.path().join("ledger.jsonl"))
        .arg("--results")
        .arg(&results)
        .arg(&protocol)
        .env_remove("USBMUXD_SOCKET_ADDRESS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Once step 1 is enqueued on a device (the download takes ~5 s of real time at speed 60).
    let (run, udid) = wait_for(Duration::from_secs(120), || {
        let run = run_dir(&results)?;
        let udid = journal_lines(&run)
            .into_iter()
            .find(|e| e["event"] == "dose_enqueued")?["udid"]
            .as_str()?
            .to_string();
        Some((run, udid))
    });
    let run_s = run.to_str().unwrap();

    // What lab observe refuses, with exit code 2 and nothing appended.
    let before = journal_lines(&run).len();
    let bad_kind = observe(&[
        run_s,
        "--udid",
        &udid,
        "--kind",
        "adverse-event",
        "--note",
        "x",
    ]);
    assert_eq!(bad_kind.status.code(), Some(2), "{}", stderr(&bad_kind));
    assert!(
        stderr(&bad_kind).contains("adverse_event"),
        "{}",
        stderr(&bad_kind)
    );
    let bad_udid = observe(&[run_s, "--udid", "00008030-0000000000000000", "--note", "x"]);
    assert_eq!(bad_udid.status.code(), Some(2), "{}", stderr(&bad_udid));
    assert!(
        stderr(&bad_udid).contains(&udid),
        "the run's devices are listed: {}",
        stderr(&bad_udid)
    );

    let ok = observe(&[
        run_s,
        "--udid",
        &udid,
        "--kind",
        "adverse_event",
        "--key",
        "device unusable",
        "--note",
        "black screen after the download",
    ]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let status = child.wait().unwrap();
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "lab run: {err}");

    let j = journal_lines(&run);
    assert!(j.len() > before);
    let observed: Vec<_> = j
        .iter()
        .filter(|e| e["event"] == "observation" && e["source"] == "operator")
        .collect();
    assert_eq!(
        observed.len(),
        1,
        "only the accepted observation: {observed:?}"
    );
    assert_eq!(observed[0]["key"], "device unusable");
    assert_eq!(observed[0]["kind"], "adverse_event");
    let stop = j
        .iter()
        .find(|e| e["event"] == "stop_rule_triggered")
        .expect("the stop rule fired");
    assert!(stop["seq"].as_u64() > observed[0]["seq"].as_u64());
    assert!(
        !j.iter()
            .any(|e| e["event"] == "dose_intent" && e["step"] == 2),
        "no step-2 dose after a severe adverse event"
    );
    let ae = std::fs::read_to_string(run.join("adverse_events.csv")).unwrap();
    assert!(
        ae.contains("device unusable") && ae.contains("severe"),
        "{ae}"
    );
}
