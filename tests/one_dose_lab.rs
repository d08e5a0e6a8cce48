//! One dose per device across the whole lab, not only across the crashes of one `lab run`
//! (issue 11): two `lab run` of one protocol at once, a second protocol with another
//! `--results`, an MDM that restarts with an empty store while a dose is in flight, a journal
//! cut inside a dose intent. Whole trials against `lab sim serve` running as its own process;
//! commands are counted on the MDM server's own records (`GET /v1/history/{udid}`).

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

const SPEED: &str = "600";
const FLEET: &str = "trials/fleets/rehearsal-12.yaml";
/// What a refused second process says (`trial::run_lock::LockError::Held`).
const LOCK_MESSAGE: &str = "this run is in use by lab run (PID";

fn protocol(sim: &Sim, dir: &Path, id: &str) -> PathBuf {
    bench_protocol(
        "trials/rehearsal.yaml",
        sim,
        SPEED,
        dir,
        Some(id),
        Some("1h"),
        false,
    )
}

fn fleet_udids() -> Vec<String> {
    lab::sim::fleet::load(&repo_path(FLEET))
        .unwrap()
        .into_iter()
        .map(|s| s.udid)
        .collect()
}

/// The doses the MDM server holds for each device: the ScheduleOSUpdate CommandUUIDs it queued
/// and the identifiers of the DDM enforcement declarations on the enrollment.
fn server_doses(sim: &Sim) -> BTreeMap<String, Vec<String>> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    sim.histories(&fleet_udids())
        .into_iter()
        .map(|(u, h)| {
            let mut doses: Vec<String> = h["commands"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .filter(|c| c["request_type"] == "ScheduleOSUpdate")
                .map(|c| c["command_uuid"].as_str().unwrap().to_string())
                .collect();
            // The rehearsal's DDM arm: the enforcement declarations on the enrollment.
            let d = rt.block_on(sim.api(&format!("/v1/ddm/declarations/{u}")));
            doses.extend(
                d["declarations"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
                    .iter()
                    .filter(|x| x["Type"] == lab::mdm::ddm::ENFORCEMENT_SPECIFIC)
                    .filter_map(|x| x["Identifier"].as_str().map(str::to_string)),
            );
            (u, doses)
        })
        .collect()
}

fn journal_text(results: &Path) -> String {
    std::fs::read_dir(results)
        .ok()
        .and_then(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.is_dir())
        })
        .and_then(|d| std::fs::read_to_string(d.join("journal.jsonl")).ok())
        .unwrap_or_default()
}

fn events_named<'a>(events: &'a [serde_json::Value], name: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// Each device's arm and how many steps it calls for.
fn allowed_steps(events: &[serde_json::Value]) -> BTreeMap<String, usize> {
    events_named(events, "allocated")
        .into_iter()
        .map(|e| {
            let arm = e["arm"].as_str().unwrap();
            let steps = if arm == "default-two-step" || arm == "bug-reproduction" {
                2
            } else {
                1
            };
            (e["udid"].as_str().unwrap().to_string(), steps)
        })
        .collect()
}

fn spawn_run(proto: &Path, results: &Path, env: &[(&str, &str)]) -> Child {
    let mut c = lab_run(proto, results);
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Two `lab run` of one protocol; the second is started once `ready` says so about the first's
/// journal. Exactly one doses (exit 0), the other exits 1 naming the lock's holder; no device
/// gets more ScheduleOSUpdate than its arm's steps (counted on the MDM server).
fn two_runs_at_once(id: &str, first_env: &[(&str, &str)], ready: impl Fn(&str) -> bool) {
    let tmp = tempfile::tempdir().unwrap();
    let sim = Sim::start_with(&repo_path(FLEET), &["--speed", SPEED]);
    let proto = protocol(&sim, tmp.path(), id);
    let results = tmp.path().join("results");
    let first = spawn_run(&proto, &results, first_env);
    wait_for(Duration::from_secs(120), || {
        ready(&journal_text(&results)).then_some(())
    });
    let second = spawn_run(&proto, &results, &[]).wait_with_output().unwrap();
    let first = first.wait_with_output().unwrap();
    let outs = [&first, &second];
    let ok: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
    let refused: Vec<_> = outs.iter().filter(|o| o.status.code() == Some(1)).collect();
    assert_eq!(
        (ok.len(), refused.len()),
        (1, 1),
        "{id}: exactly one runs, the other is refused:\nfirst: {}\nsecond: {}",
        stderr(&first),
        stderr(&second)
    );
    let msg = stderr(refused[0]);
    assert!(msg.contains(LOCK_MESSAGE), "{id}: {msg}");
    assert!(
        msg.contains("wait for it to finish") && msg.contains("kill "),
        "{id}: says what to do: {msg}"
    );
    let dirs: Vec<_> = std::fs::read_dir(&results)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{id}: one run folder");
    let events = journal_events(&dirs[0]);
    assert_eq!(
        events_named(&events, "run_started").len(),
        1,
        "{id}: the refused process wrote nothing"
    );
    assert!(events_named(&events, "run_resumed").is_empty(), "{id}");
    let allowed = allowed_steps(&events);
    let doses = server_doses(&sim);
    let mut dosed = 0;
    for (udid, d) in &doses {
        let max = allowed.get(udid).copied().unwrap_or(0);
        assert!(
            d.len() <= max,
            "{id}: {udid} received {} ScheduleOSUpdate, its arm calls for {max}",
            d.len()
        );
        dosed += d.len();
    }
    assert!(dosed > 0, "{id}: the trial dosed");
    assert!(
        dirs[0].join("report.html").exists(),
        "{id}: reports written"
    );
}

#[test]
fn two_runs_started_at_the_same_instant_one_doses_the_other_exits_1() {
    two_runs_at_once("same-instant", &[], |_| true);
}

#[test]
fn a_second_run_during_the_baseline_is_refused() {
    two_runs_at_once("during-baseline", &[], |j| {
        j.contains("\"event\":\"run_started\"") && !j.contains("\"event\":\"allocated\"")
    });
}

#[test]
fn a_second_run_after_every_step_1_command_was_enqueued_is_refused() {
    // The follow-up's first status query comes once every step-1 dose was answered.
    two_runs_at_once("after-step-1", &[], |j| {
        j.contains("\"event\":\"dose_enqueued\"") && j.contains("\"event\":\"command_sent\"")
    });
}

#[test]
fn a_second_run_and_lab_report_while_the_reports_are_written_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = Sim::start_with(&repo_path(FLEET), &["--speed", SPEED]);
    let proto = protocol(&sim, tmp.path(), "reports");
    let results = tmp.path().join("results");
    let first = spawn_run(
        &proto,
        &results,
        &[("LAB_TEST_PAUSE_BEFORE_REPORTS_MS", "4000")],
    );
    wait_for(Duration::from_secs(120), || {
        journal_text(&results)
            .contains("\"event\":\"run_finished\"")
            .then_some(())
    });
    let second = spawn_run(&proto, &results, &[]).wait_with_output().unwrap();
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(
        stderr(&second).contains(LOCK_MESSAGE),
        "{}",
        stderr(&second)
    );
    let dir = run_dir(&results);
    let report = run_lab(&["report", dir.to_str().unwrap()], None);
    assert_eq!(report.status.code(), Some(1), "{}", stderr(&report));
    assert!(
        stderr(&report).contains("in use by lab run"),
        "{}",
        stderr(&report)
    );
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(dir.join("report.html").exists());
    // Once the run is over the lock is free again: `lab report` works.
    let report = run_lab(&["report", dir.to_str().unwrap()], None);
    assert!(report.status.success(), "{}", stderr(&report));
    let events = journal_events(&dir);
    let allowed = allowed_steps(&events);
    for (udid, d) in server_doses(&sim) {
        assert!(
            d.len() <= allowed.get(&udid).copied().unwrap_or(0),
            "{udid}"
        );
    }
}

/// Every dose intent of a journal: CommandUUID → (udid, starting build).
fn intents(events: &[serde_json::Value]) -> BTreeMap<String, (String, String)> {
    events_named(events, "dose_intent")
        .into_iter()
        .map(|e| {
            (
                e["command_uuid"].as_str().unwrap().to_string(),
                (
                    e["udid"].as_str().unwrap().to_string(),
                    e["starting_build"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

#[test]
fn a_second_protocol_with_another_results_folder_never_doses_a_device_again_at_its_build() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = Sim::start_with(&repo_path(FLEET), &["--speed", SPEED]);
    let ledger = tmp.path().join("state/lab/ledger.jsonl");
    let ledger_s = ledger.to_str().unwrap();
    let first = tmp.path().join("first");
    let out = lab_run(&protocol(&sim, tmp.path(), "first"), &first)
        .env("LAB_LEDGER", ledger_s)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let first_events = journal_events(&run_dir(&first));
    let first_intents = intents(&first_events);
    assert!(!first_intents.is_empty());
    // A second protocol, another results folder: the same lab-wide ledger (the default no
    // longer depends on --results), and a third with a ledger of its own — the MDM's records
    // still show the first protocol's doses.
    for (id, ledger) in [
        ("second", ledger.clone()),
        ("third", tmp.path().join("elsewhere/ledger.jsonl")),
    ] {
        let results = tmp.path().join(id);
        let out = lab_run(&protocol(&sim, tmp.path(), id), &results)
            .env("LAB_LEDGER", &ledger)
            .output()
            .unwrap();
        assert!(out.status.success(), "{id}: {}", stderr(&out));
        let events = journal_events(&run_dir(&results));
        let again = intents(&events);
        let dosed_at: BTreeSet<&(String, String)> = first_intents.values().collect();
        for (uuid, key) in &again {
            assert!(
                !dosed_at.contains(key),
                "{id}: {} dosed again at build {} ({uuid})",
                key.0,
                key.1
            );
        }
        // Those still at the build they were dosed at are excluded, the evidence named.
        let mut excluded = 0;
        for e in events_named(&events, "eligibility_assessed") {
            let udid = e["udid"].as_str().unwrap();
            let Some(r) = e["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["rule"] == "already_dosed")
            else {
                continue;
            };
            excluded += 1;
            let msg = r["message"].as_str().unwrap();
            let cited = first_intents
                .iter()
                .any(|(uuid, (u, _))| u == udid && msg.contains(uuid.as_str()));
            assert!(cited, "{id}: {udid}: the reason names the dose: {msg}");
            if id == "second" {
                assert!(
                    msg.contains("trial first") && msg.contains("run "),
                    "{id}: {msg}"
                );
            } else {
                assert!(msg.contains("the MDM's records"), "{id}: {msg}");
            }
        }
        assert!(
            excluded > 0,
            "{id}: some device was still at its dosed build"
        );
    }
    // Every dose on the server has an intent in one of the three journals.
    let mut all = first_intents.clone();
    for id in ["second", "third"] {
        all.extend(intents(&journal_events(&run_dir(&tmp.path().join(id)))));
    }
    for (udid, doses) in server_doses(&sim) {
        for d in doses {
            assert_eq!(all.get(&d).map(|x| &x.0), Some(&udid), "{d}");
        }
    }
}

/// Start a run that pauses right after its step-1 intents are durable (journal and ledger),
/// and SIGKILL it there: the doses are "in flight".
fn kill_with_intents_in_flight(proto: &Path, results: &Path) {
    let mut child = spawn_run(
        proto,
        results,
        &[("LAB_TEST_PAUSE_AFTER_INTENT_MS", "20000")],
    );
    let ledger = results.join("ledger.jsonl");
    wait_for(Duration::from_secs(120), || {
        let journal = journal_text(results)
            .matches("\"event\":\"dose_intent\"")
            .count();
        let ledger = std::fs::read_to_string(&ledger)
            .unwrap_or_default()
            .matches("\"kind\":\"intent\"")
            .count();
        (journal > 0 && ledger == journal).then_some(())
    });
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn an_mdm_restarted_with_an_empty_store_while_a_dose_is_in_flight_gets_nothing_again() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = repo_path(FLEET);
    let mut sim = Sim::start_with(&fleet, &["--speed", SPEED]);
    let proto = protocol(&sim, tmp.path(), "restart");
    let results = tmp.path().join("results");
    kill_with_intents_in_flight(&proto, &results);
    let before = intents(&journal_events(&run_dir(&results)));
    assert!(!before.is_empty());
    // The simulator's MDM keeps its store in memory: restarting it is an MDM that lost its
    // records. Same addresses, so the protocol (and its hash) is unchanged.
    sim.restart(&fleet, &["--speed", SPEED]);
    let out = lab_run(&proto, &results).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("resuming"), "{}", stderr(&out));
    for (udid, d) in server_doses(&sim) {
        assert!(
            d.is_empty(),
            "{udid}: sent again after the MDM restarted: {d:?}"
        );
    }
    let events = journal_events(&run_dir(&results));
    assert_eq!(intents(&events), before, "no new intent, no step 2");
    let uncertain: BTreeMap<&str, &str> = events_named(&events, "dose_uncertain")
        .into_iter()
        .map(|e| {
            (
                e["command_uuid"].as_str().unwrap(),
                e["reason"].as_str().unwrap(),
            )
        })
        .collect();
    for uuid in before.keys() {
        let reason = uncertain
            .get(uuid.as_str())
            .unwrap_or_else(|| panic!("{uuid} is not dose uncertain"));
        assert!(reason.contains("store changed"), "{reason}");
    }
    let csv = csv_rows(&run_dir(&results).join("devices.csv"));
    assert!(
        csv.iter()
            .any(|r| r.values().any(|v| v.contains("uncertain")))
    );
}

#[test]
fn a_journal_cut_inside_a_dose_intent_with_the_ledger_intact_sends_no_new_command_uuid() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = Sim::start_with(&repo_path(FLEET), &["--speed", SPEED]);
    let proto = protocol(&sim, tmp.path(), "cut");
    let results = tmp.path().join("results");
    kill_with_intents_in_flight(&proto, &results);
    let dir = run_dir(&results);
    let journal = dir.join("journal.jsonl");
    let text = std::fs::read_to_string(&journal).unwrap();
    let before = intents(&journal_events(&dir));
    // Cut the journal inside its last dose_intent (the lines after it go too).
    let at = text.rfind("{\"seq\"").unwrap();
    let last = text[at..].to_string();
    assert!(last.contains("\"event\":\"dose_intent\""), "{last}");
    let cut_line: serde_json::Value = serde_json::from_str(last.trim()).unwrap();
    let (lost_udid, lost_uuid) = (
        cut_line["udid"].as_str().unwrap().to_string(),
        cut_line["command_uuid"].as_str().unwrap().to_string(),
    );
    std::fs::write(&journal, &text[..at + last.len() / 2]).unwrap();
    let ledger = std::fs::read_to_string(results.join("ledger.jsonl")).unwrap();
    assert!(ledger.contains(&lost_uuid), "the ledger is intact");

    let out = lab_run(&proto, &results).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let events = journal_events(&dir);
    // No new CommandUUID for that device, on the server or in the journal.
    let doses = server_doses(&sim);
    assert!(
        doses[&lost_udid].iter().all(|d| *d == lost_uuid),
        "{lost_udid}: {:?}",
        doses[&lost_udid]
    );
    assert!(
        intents(&events).values().all(|(u, _)| *u != lost_udid),
        "{lost_udid}: a fresh dose intent"
    );
    let reconciled = events_named(&events, "dose_reconciled");
    assert_eq!(reconciled.len(), 1, "{reconciled:?}");
    assert_eq!(reconciled[0]["command_uuid"], lost_uuid.as_str());
    assert!(
        events_named(&events, "dose_uncertain")
            .iter()
            .any(|e| e["command_uuid"] == lost_uuid.as_str())
    );
    // The other devices' interrupted enqueues were completed, once each.
    let allowed = allowed_steps(&events);
    for (uuid, (udid, _)) in &before {
        if *uuid == lost_uuid {
            continue;
        }
        assert!(doses[udid].contains(uuid), "{udid}: {uuid} completed");
        assert!(doses[udid].len() <= allowed[udid], "{udid}");
    }
}
