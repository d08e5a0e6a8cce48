//! A flaky MDM (issue #6, fault injection): the simulated lab's MDM server answers 500, answers
//! too late, drops connections, loses and duplicates webhooks. Each test shows the trial going
//! on to its outcomes, the fault journaled as an observation, and — counted on the MDM server's
//! own records — exactly the doses the protocol calls for.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const FLEET: &str = "seed: 66
clock: { start: \"2026-11-27T09:00:00Z\" }
mdm: { poll_interval: 60s }
catalogue:
  - { version: \"17.6.1\", build: 21G93, download_size: 600 MB, install_size: 1.5 GB, product_types: [\"iPhone12,1\"] }
devices:
  - name: Faulty bench iPhone
    count: 3
    product_type: iPhone12,1
    ios: { version: \"17.5.1\", build: 21F90 }
    disk: { total: 64 GB, free: 21 GB }
    battery: { level: 90, charging: true, external_power: true }
";

/// A two-step protocol (Default, then Default once downloaded) against an external sim.
fn protocol(dir: &Path, sim: &Sim, mdm: &str) -> PathBuf {
    let text = format!(
        "id: faults
title: Flaky MDM
lab:
  usbmuxd: [\"{addr}\"]
  mdm: {mdm}
  time_scale: 600
  mdm_api: {{ timeout: 1s, attempts: 4, backoff: 200ms }}
eligibility: {{ supervised: true }}
target: latest
arms:
  - name: two-step
    install_action: Default
    follow_up_step: {{ install_action: Default, when: downloaded }}
follow_up: {{ poll_interval: 30s, max_duration: 2h, until: updated }}
",
        addr = sim.addr
    );
    let p = dir.join("faults.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Every device updated, with exactly two ScheduleOSUpdate commands queued and each delivered
/// once — on the server's records.
fn assert_two_doses_each_and_updated(sim: &Sim, dir: &Path) {
    let devices = csv_rows(&dir.join("devices.csv"));
    assert_eq!(devices.len(), 3);
    let udids: Vec<String> = devices.iter().map(|d| d["udid"].clone()).collect();
    for (u, h) in sim.histories(&udids) {
        let doses: Vec<&Value> = h["commands"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["request_type"] == "ScheduleOSUpdate")
            .collect();
        assert_eq!(doses.len(), 2, "{u}: {h:#}");
        for d in doses {
            assert_eq!(d["deliveries"].as_array().unwrap().len(), 1, "{u}: {d:#}");
        }
    }
    for d in &devices {
        assert_eq!(d["outcome"], "updated", "{d:?}");
        assert_eq!(d["final_version"], "17.6.1", "{d:?}");
    }
}

/// The three-device lab with an MDM that injects `faults` (a `--mdm-faults` file's text), and
/// the two-step trial run against it to its end: the simulator and the run folder.
fn faulted_trial(tmp: &tempfile::TempDir, faults: &str) -> (Sim, PathBuf) {
    let fleet = fleet_file(tmp, "fleet.yaml", FLEET);
    let faults = fleet_file(tmp, "faults.yaml", faults);
    let sim = Sim::start_with(
        &fleet,
        &["--speed", "600", "--mdm-faults", faults.to_str().unwrap()],
    );
    let mdm = format!(
        "{{ kind: embedded, url: \"{}\", api_key_env: LAB_MDM_API_KEY }}",
        sim.mdm_url.as_ref().unwrap()
    );
    let p = protocol(tmp.path(), &sim, &mdm);
    let results = tmp.path().join("results");
    let out = lab_run(&p, &results).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = run_dir(&results);
    (sim, dir)
}

fn observations<'a>(j: &'a [Value], kind: &str) -> Vec<&'a Value> {
    j.iter()
        .filter(|e| e["event"] == "observation" && e["kind"] == kind)
        .collect()
}

#[test]
fn api_errors_slow_answers_and_dropped_connections_never_make_a_second_dose() {
    let tmp = tempfile::tempdir().unwrap();
    // The first three ScheduleOSUpdate enqueues to reach the server: one answered 500 (not
    // queued); one queued but the connection dropped before the answer; one answered after the
    // client gave up (queued late, after the harness's retry: the server must refuse it as a
    // duplicate CommandUUID).
    // Plus: status queries dropped, and history calls failing.
    let (sim, dir) = faulted_trial(
        &tmp,
        "api:
  - { path: /v1/enqueue, request_type: ScheduleOSUpdate, fault: error_500 }
  - { path: /v1/enqueue, request_type: ScheduleOSUpdate, fault: drop_after_handling, skip: 1 }
  - { path: /v1/enqueue, request_type: ScheduleOSUpdate, fault: slow, delay: 2500ms, skip: 2 }
  - { path: /v1/enqueue, request_type: OSUpdateStatus, fault: drop, skip: 1, times: 2 }
  - { path: /v1/history, fault: error_500, skip: 25, times: 3 }
",
    );
    assert_two_doses_each_and_updated(&sim, &dir);

    let j = journal_events(&dir);
    let errors = observations(&j, "mdm_api_error");
    let keys: Vec<&str> = errors.iter().map(|e| e["key"].as_str().unwrap()).collect();
    // Three failed ScheduleOSUpdate attempts, each recorded with what the MDM did.
    let dose_errors: Vec<&&Value> = errors
        .iter()
        .filter(|e| {
            e["key"]
                .as_str()
                .unwrap()
                .starts_with("enqueue ScheduleOSUpdate")
        })
        .collect();
    assert_eq!(dose_errors.len(), 3, "{keys:#?}");
    let values: Vec<&str> = dose_errors
        .iter()
        .map(|e| e["value"].as_str().unwrap())
        .collect();
    // (The first doses go out concurrently, so the order varies.)
    for kind in ["HTTP 500", "did not answer within", "is unreachable"] {
        assert_eq!(
            values.iter().filter(|v| v.contains(kind)).count(),
            1,
            "{kind}: {values:#?}"
        );
    }
    assert!(
        keys.iter().any(|k| k.starts_with("enqueue OSUpdateStatus")),
        "{keys:#?}"
    );
    // The three failed history calls are journaled whichever reads they hit — the baseline's
    // polls, a round's results, the records of a command, or the dose guard's records before
    // a second step: how many history reads come first depends on timing (the baseline polls
    // every 100 ms until its answers come; a round reads the whole lab in one call).
    let history_errors = errors
        .iter()
        .filter(|e| {
            let k = e["key"].as_str().unwrap();
            [
                "results",
                "records",
                "dose records",
                "baseline results",
                "baseline dose records",
            ]
            .iter()
            .any(|p| k.starts_with(p))
        })
        .count();
    assert!(history_errors >= 1, "{keys:#?}");
    // The dropped-after-queueing dose was found in the server's records, not re-sent.
    let recovered = j
        .iter()
        .filter(|e| {
            e["event"] == "dose_enqueued"
                && e["push_error"]
                    .as_str()
                    .is_some_and(|m| m.contains("records show the command queued"))
        })
        .count();
    assert_eq!(recovered, 1);
    // The retried ones reused their CommandUUID: one intent per dose, no uncertain dose.
    let intents = j.iter().filter(|e| e["event"] == "dose_intent").count();
    assert_eq!(intents, 6);
    assert!(!j.iter().any(|e| e["event"] == "dose_uncertain"));
    // The faults are in the observations report too.
    let obs = std::fs::read_to_string(dir.join("observations.csv")).unwrap();
    assert!(obs.contains("mdm_api_error"), "{obs}");
}

#[test]
fn lost_and_duplicated_webhooks_are_reconciled_from_the_servers_history() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = fleet_file(&tmp, "fleet.yaml", FLEET);
    let faults = fleet_file(
        &tmp,
        "faults.yaml",
        "webhooks: { lose_every: 3, duplicate_every: 2 }\n",
    );
    // The harness's webhook listener, on a port chosen now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hook = format!("http://127.0.0.1:{port}/webhook");
    let sim = Sim::start_with(
        &fleet,
        &[
            "--speed",
            "600",
            "--mdm-faults",
            faults.to_str().unwrap(),
            "--mdm-webhook-url",
            &hook,
        ],
    );
    // The embedded server in NanoMDM's place: results come by webhook.
    let mdm = format!(
        "{{ kind: nanomdm, url: \"{}\", api_key_env: LAB_MDM_API_KEY, webhook: {{ listen: \"127.0.0.1:{port}\" }} }}",
        sim.mdm_url.as_ref().unwrap()
    );
    let p = protocol(tmp.path(), &sim, &mdm);
    let results = tmp.path().join("results");
    let out = lab_run(&p, &results).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = run_dir(&results);
    assert_two_doses_each_and_updated(&sim, &dir);

    let j = journal_events(&dir);
    let lost = observations(&j, "webhook_lost");
    let dup = observations(&j, "webhook_duplicate");
    assert!(!lost.is_empty(), "no lost webhook noticed");
    assert!(!dup.is_empty(), "no duplicated webhook noticed");
    // Each report journaled once: no (CommandUUID, status, raw) twice.
    let mut seen = std::collections::HashSet::new();
    for e in j.iter().filter(|e| e["event"] == "mdm_result") {
        let k = (
            e["command_uuid"].as_str().unwrap().to_string(),
            e["raw_b64"].as_str().unwrap().to_string(),
        );
        assert!(seen.insert(k), "journaled twice: {e}");
    }
    // Every ScheduleOSUpdate answer is in the journal, lost webhook or not.
    let doses: Vec<&str> = j
        .iter()
        .filter(|e| e["event"] == "dose_intent")
        .map(|e| e["command_uuid"].as_str().unwrap())
        .collect();
    assert_eq!(doses.len(), 6);
    for d in doses {
        assert!(
            j.iter()
                .any(|e| e["event"] == "mdm_result" && e["command_uuid"] == d),
            "no answer journaled for {d}"
        );
    }
}

#[test]
fn a_faults_file_with_a_mistake_is_refused_with_its_location() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = fleet_file(&tmp, "fleet.yaml", FLEET);
    let faults = fleet_file(
        &tmp,
        "faults.yaml",
        "api:\n  - { path: /v1/enqueue, fault: slow }\n",
    );
    let out = Command::new(lab_bin())
        .args(["sim", "serve", "--fleet"])
        .arg(&fleet)
        .args([
            "--usbmuxd",
            "127.0.0.1:0",
            "--mdm",
            "127.0.0.1:0",
            "--mdm-faults",
        ])
        .arg(&faults)
        .env("LAB_MDM_API_KEY", TEST_API_KEY)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("faults.yaml:2:"), "{err}");
    assert!(err.contains("needs a delay"), "{err}");
}

/// Issue 17: the API key refused after the doses went out (here the first status query gets
/// 401, as a key revoked on the server would) stops `lab run` with exit 2 once the round is
/// journaled; the rerun resumes the same run and finishes it, and the server's own records
/// hold exactly the doses the protocol calls for.
#[test]
fn a_key_refused_after_the_dose_stops_the_run_and_a_rerun_resumes_it_without_a_second_dose() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = fleet_file(&tmp, "fleet.yaml", FLEET);
    let faults = fleet_file(
        &tmp,
        "faults.yaml",
        "api:\n  - { path: /v1/enqueue, request_type: OSUpdateStatus, fault: unauthorized }\n",
    );
    let sim = Sim::start_with(
        &fleet,
        &["--speed", "600", "--mdm-faults", faults.to_str().unwrap()],
    );
    let mdm = format!(
        "{{ kind: embedded, url: \"{}\", api_key_env: LAB_MDM_API_KEY }}",
        sim.mdm()
    );
    let p = protocol(tmp.path(), &sim, &mdm);
    let results = tmp.path().join("results");
    let out = lab_run(&p, &results).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("refused lab's API key (HTTP 401"), "{err}");
    let dir = run_dir(&results);
    let j = journal_events(&dir);
    let enqueued = j.iter().filter(|e| e["event"] == "dose_enqueued").count();
    assert_eq!(enqueued, 3, "every first dose answered before the stop");
    assert_eq!(observations(&j, "mdm_refused").len(), 1);
    assert!(!j.iter().any(|e| e["event"] == "run_finished"));

    let out = lab_run(&p, &results).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(run_dir(&results), dir, "the same run, resumed");
    assert_two_doses_each_and_updated(&sim, &dir);
    let j = journal_events(&dir);
    assert!(j.iter().any(|e| e["event"] == "run_resumed"));
    assert!(!j.iter().any(|e| e["event"] == "dose_uncertain"));
}

#[test]
fn failed_history_reads_while_the_baseline_waits_are_journaled() {
    let tmp = tempfile::tempdir().unwrap();
    // The first history reads are the baseline's: it polls each device's history until the
    // DeviceInformation, SecurityInfo and AvailableOSUpdates answers are there, and a poll
    // that fails is retried 100 ms later — once silently, now as evidence.
    let (sim, dir) = faulted_trial(
        &tmp,
        "api:\n  - { path: /v1/history, fault: error_500, times: 2 }\n",
    );
    let j = journal_events(&dir);
    let baseline_errors: Vec<&Value> = observations(&j, "mdm_api_error")
        .into_iter()
        .filter(|e| e["key"].as_str().unwrap().starts_with("baseline "))
        .collect();
    let times: usize = baseline_errors
        .iter()
        .map(|e| {
            let v = e["value"].as_str().unwrap();
            assert!(v.contains("HTTP 500"), "{v}");
            assert!(e["udid"].is_string(), "{e}");
            v.split(" (")
                .nth(1)
                .and_then(|t| t.split(' ').next())
                .map_or(1, |n| n.parse().unwrap())
        })
        .sum();
    assert_eq!(times, 2, "{baseline_errors:#?}");
    // Each is journaled before the baseline of its device.
    for e in &baseline_errors {
        let baseline = j
            .iter()
            .find(|x| x["event"] == "baseline_recorded" && x["udid"] == e["udid"])
            .unwrap();
        assert!(e["seq"].as_u64() < baseline["seq"].as_u64(), "{e}");
    }
    // The trial went on: every device dosed as its protocol says and updated.
    assert_two_doses_each_and_updated(&sim, &dir);
}
