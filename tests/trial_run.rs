//! `lab run` end to end against a simulated lab running as its own process (`lab sim serve`),
//! reached as a real bench is: usbmuxd socket + the MDM's HTTP API. ScheduleOSUpdate doses are
//! counted on the MDM server's side, not by the harness.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SPEED: &str = "600";

/// ScheduleOSUpdate commands the MDM server queued for each device (its own history).
fn doses_on_server(sim: &Sim, udids: &[String]) -> BTreeMap<String, usize> {
    sim.histories(udids)
        .into_iter()
        .map(|(u, h)| {
            let n = h["commands"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["request_type"] == "ScheduleOSUpdate")
                .count();
            (u, n)
        })
        .collect()
}

/// The DDM enforcement declarations the server holds on a device's enrollment.
fn declarations_on_server(sim: &Sim, udid: &str) -> usize {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let v = rt.block_on(sim.api(&format!("/v1/ddm/declarations/{udid}")));
    v["declarations"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter(|x| x["Type"] == lab::mdm::ddm::ENFORCEMENT_SPECIFIC)
        .count()
}

fn summary(
    devices: &[BTreeMap<String, String>],
) -> Vec<(String, String, String, String, String, String)> {
    devices
        .iter()
        .map(|d| {
            (
                d["udid"].clone(),
                d["eligible"].clone(),
                d["exclusion_rules"].clone(),
                d["arm"].clone(),
                d["outcome"].clone(),
                d["final_version"].clone(),
            )
        })
        .collect()
}

fn check_run(sim: &Sim, dir: &Path) -> Vec<BTreeMap<String, String>> {
    let devices = csv_rows(&dir.join("devices.csv"));
    assert_eq!(devices.len(), 12);
    let by_name = |n: &str| {
        devices
            .iter()
            .find(|d| d["device_name"].contains(n))
            .unwrap_or_else(|| panic!("no device {n}"))
    };
    // Eligibility verdicts and reasons.
    // The ScheduleOSUpdate rule first; the DDM arm's own rules after it (issue 13).
    assert_eq!(by_name("10.2")["exclusion_rules"], "min_ios;ddm_min_ios");
    for v in ["11.3", "11.3.1", "11.4"] {
        let d = devices.iter().find(|d| d["product_version"] == v).unwrap();
        assert!(
            d["exclusion_rules"].contains("known_bad_version"),
            "{v}: {d:?}"
        );
    }
    assert!(by_name("unsupervised")["exclusion_rules"].contains("supervised"));
    let low = by_name("low disk");
    assert_eq!(low["exclusion_rules"], "free_disk");
    assert!(
        low["exclusion_messages"].contains("GB") || low["exclusion_messages"].contains("bytes"),
        "{low:?}"
    );
    // Doses counted on the MDM server: exactly one per protocol step.
    let udids: Vec<String> = devices.iter().map(|d| d["udid"].clone()).collect();
    let doses = doses_on_server(sim, &udids);
    for d in &devices {
        let want = match d["arm"].as_str() {
            "default-two-step" => 2,
            "download-only" => 1,
            // The DDM arm's dose is a declaration, never a command (counted below).
            _ => 0,
        };
        let declarations = declarations_on_server(sim, &d["udid"]);
        assert_eq!(
            declarations,
            usize::from(d["arm"] == "ddm-enforcement"),
            "{}",
            d["device_name"]
        );
        assert_eq!(
            doses[&d["udid"]], want,
            "{}: {:?}",
            d["device_name"], d["outcome"]
        );
        // Outcomes match the simulated behaviour.
        match d["arm"].as_str() {
            "default-two-step" => {
                assert_eq!(d["outcome"], "updated", "{d:?}");
                assert_eq!(d["final_version"], "17.6.1");
            }
            "download-only" => assert_eq!(d["outcome"], "downloaded_not_installed", "{d:?}"),
            "ddm-enforcement" => {
                assert_eq!(d["dose_mechanism"], "ddm_enforcement");
                assert_eq!(d["outcome"], "updated", "{d:?}");
                assert_eq!(d["final_version"], "17.6.1");
            }
            _ => assert_eq!(d["outcome"], "excluded"),
        }
    }
    assert_eq!(
        devices.iter().filter(|d| d["eligible"] == "true").count(),
        5
    );
    devices
}

#[test]
fn a_trial_runs_end_to_end_doses_once_per_step_and_reports_regenerate_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = Sim::start_with(
        &repo_path("trials/fleets/rehearsal-12.yaml"),
        &["--speed", SPEED],
    );
    let proto = protocol_for(&sim, tmp.path(), "e2e");
    let results = tmp.path().join("results");
    let out = lab_run(&proto, &results).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = run_dir(&results);
    let devices = check_run(&sim, &dir);

    // lab report reproduces every CSV byte for byte.
    let names = [
        "devices.csv",
        "observations.csv",
        "flow.csv",
        "adverse_events.csv",
    ];
    let before: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(dir.join(n)).unwrap())
        .collect();
    for n in names {
        std::fs::remove_file(dir.join(n)).unwrap();
    }
    let out = run_lab(&["report", dir.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", stderr(&out));
    for (n, b) in names.iter().zip(before) {
        assert_eq!(std::fs::read(dir.join(n)).unwrap(), b, "{n} differs");
    }
    // The frozen protocol and its hash.
    let frozen = std::fs::read(dir.join("protocol.yaml")).unwrap();
    assert_eq!(frozen, std::fs::read(&proto).unwrap());
    let sha = lab::trial::protocol::sha256_hex(&frozen);
    assert!(devices.iter().all(|d| d["protocol_sha256"] == sha));

    // Rerunning the finished protocol starts a new run, but a second protocol never re-doses a
    // device the ledger says was dosed at its current build.
    let other = protocol_for(&sim, tmp.path(), "e2e-second");
    let out = Command::new(lab_bin())
        .args(["qualify", "--json", "--ledger"])
        .arg(results.join("ledger.jsonl"))
        .arg(&other)
        .env("LAB_MDM_API_KEY", TEST_API_KEY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let q = parse_json(&out);
    for d in q["devices"].as_array().unwrap() {
        let row = devices
            .iter()
            .find(|r| r["udid"] == d["udid"].as_str().unwrap())
            .unwrap();
        if row["arm"] == "download-only" {
            let rules: Vec<&str> = d["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["rule"].as_str().unwrap())
                .collect();
            assert!(rules.contains(&"already_dosed"), "{rules:?}");
            assert_eq!(d["eligible"], false);
        }
    }
}

/// Kills and reaps its child when dropped (also when a test panics).
struct Reaper(std::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigkill_during_follow_up_then_rerun_resumes_without_a_second_dose() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = Sim::start_with(
        &repo_path("trials/fleets/rehearsal-12.yaml"),
        &["--speed", SPEED],
    );
    let proto = protocol_for(&sim, tmp.path(), "crash");
    let results = tmp.path().join("results");
    let mut child = Reaper(
        lab_run(&proto, &results)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Kill once follow-up is under way (every dose queued, answers coming in).
    let start = Instant::now();
    let journal_before = loop {
        std::thread::sleep(Duration::from_millis(100));
        let Some(dir) = std::fs::read_dir(&results)
            .ok()
            .and_then(|mut d| d.find_map(|e| e.ok().map(|e| e.path()).filter(|p| p.is_dir())))
        else {
            continue;
        };
        let text = std::fs::read_to_string(dir.join("journal.jsonl")).unwrap_or_default();
        let enqueued = text.matches("\"event\":\"dose_enqueued\"").count();
        let results_seen = text.matches("\"event\":\"mdm_result\"").count();
        if enqueued >= 5 && results_seen >= 8 {
            child.0.kill().unwrap();
            child.0.wait().unwrap();
            break std::fs::read_to_string(dir.join("journal.jsonl")).unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "follow-up never started"
        );
    };
    assert!(!journal_before.contains("run_finished"));
    let out = lab_run(&proto, &results).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("resuming"), "{}", stderr(&out));
    let dir = run_dir(&results);
    // Every event acknowledged before the kill is still there, in order.
    let after = std::fs::read_to_string(dir.join("journal.jsonl")).unwrap();
    let complete: String = journal_before
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .collect();
    assert!(
        after.starts_with(&complete),
        "journal lost or rewrote events"
    );
    assert!(after.contains("\"event\":\"run_resumed\""));
    let crashed = check_run(&sim, &dir);

    // The same trial uninterrupted on a fresh simulated lab gives the same results.
    let sim2 = Sim::start_with(
        &repo_path("trials/fleets/rehearsal-12.yaml"),
        &["--speed", SPEED],
    );
    let proto2 = protocol_for(&sim2, tmp.path(), "crash");
    let results2 = tmp.path().join("results2");
    let out = lab_run(&proto2, &results2).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let clean = csv_rows(&run_dir(&results2).join("devices.csv"));
    assert_eq!(summary(&crashed), summary(&clean));
    // Every column equal apart from times, CommandUUIDs, the lab's addresses (two labs, two
    // protocol hashes) and the live MDM status fields that depend on when polls happened.
    let volatile = |c: &str| {
        c.ends_with("_at")
            || c.ends_with("_s")
            || c.contains("uuid")
            || c.contains("status")
            || c == "protocol_sha256"
            || c == "host"
            || c.starts_with("usb_host")
            || c == "deviations"
    };
    for (a, b) in crashed.iter().zip(&clean) {
        for (k, v) in a {
            if !volatile(k) {
                assert_eq!(v, &b[k], "column {k} of {}", a["udid"]);
            }
        }
    }
    assert_eq!(
        std::fs::read(dir.join("flow.csv")).unwrap(),
        std::fs::read(run_dir(&results2).join("flow.csv")).unwrap(),
        "the CONSORT flow of the resumed run equals the uninterrupted one"
    );
}

#[test]
fn bad_protocols_exit_2_with_a_location_and_create_no_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(repo_path("trials/rehearsal.yaml")).unwrap();
    let fleet = repo_path("trials/fleets/rehearsal-12.yaml");
    let base = base.replace("fleets/rehearsal-12.yaml", fleet.to_str().unwrap());
    let cases = [
        (
            "typo",
            base.replace("allocation_seed:", "alocation_seed:"),
            true,
        ),
        (
            "type",
            base.replace("poll_interval: 30s", "poll_interval: [30]"),
            true,
        ),
        (
            "action",
            base.replace("install_action: DownloadOnly", "install_action: InstallNow"),
            true,
        ),
        (
            "fleet",
            base.replace(fleet.to_str().unwrap(), "/no/such/fleet.yaml"),
            false,
        ),
    ];
    for (what, text, located) in cases {
        assert_ne!(text, base, "{what}: the case must change the protocol");
        let p = tmp.path().join(format!("{what}.yaml"));
        std::fs::write(&p, text).unwrap();
        let results = tmp.path().join(format!("results-{what}"));
        let out = lab_run(&p, &results).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(err.contains(&p.display().to_string()), "{what}: {err}");
        if located {
            let re = format!("{}:", p.display());
            let rest = err.split(&re).nth(1).unwrap_or("");
            let mut parts = rest.splitn(3, ':');
            let line = parts.next().unwrap_or("");
            let col = parts.next().unwrap_or("");
            assert!(
                line.parse::<u32>().is_ok() && col.parse::<u32>().is_ok(),
                "{what}: no line:col in {err}"
            );
        }
        assert!(!results.exists(), "{what}: a results folder was created");
    }
}

#[test]
fn without_yes_a_non_interactive_run_refuses_and_sends_nothing_and_the_next_run_asks_again() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = Sim::start_with(
        &repo_path("trials/fleets/rehearsal-12.yaml"),
        &["--speed", SPEED],
    );
    let proto = protocol_for(&sim, tmp.path(), "noconsent");
    let results = tmp.path().join("results");
    let out = Command::new(lab_bin())
        .args(["run", "--results"])
        .arg(&results)
        .arg(&proto)
        .env("LAB_LEDGER", results.join("ledger.jsonl"))
        .env("LAB_MDM_API_KEY", TEST_API_KEY)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("consent"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("IRREVERSIBLE"),
        "the operator was shown what would be sent"
    );
    let dir = run_dir(&results);
    let journal = std::fs::read_to_string(dir.join("journal.jsonl")).unwrap();
    assert!(journal.contains("consent_refused"));
    let udids: Vec<String> = lab::sim::fleet::load(&repo_path("trials/fleets/rehearsal-12.yaml"))
        .unwrap()
        .into_iter()
        .map(|s| s.udid)
        .collect();
    assert!(doses_on_server(&sim, &udids).values().all(|n| *n == 0));
    // Each arm's dose is named on the consent screen, the DDM arm's as a declaration.
    assert!(
        stderr(&out).contains("ScheduleOSUpdate InstallAction Default")
            && stderr(&out).contains("DDM declaration com.apple.configuration.softwareupdate"),
        "{}",
        stderr(&out)
    );
    // The same command again, now with --yes (issue 15: a refusal ends that attempt only): it
    // says consent was refused before, asks again, and this time the doses go out, once each.
    let again = lab_run(&proto, &results).output().unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let e = stderr(&again);
    assert!(
        e.contains("Consent was refused earlier in this run folder"),
        "{e}"
    );
    assert!(e.contains(&dir.display().to_string()), "{e}");
    let folders = std::fs::read_dir(&results)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(folders, 1, "the same run folder goes on");
    let journal = std::fs::read_to_string(dir.join("journal.jsonl")).unwrap();
    let refused = journal.find("consent_refused").unwrap();
    let given = journal.find("consent_given").expect("asked again");
    assert!(refused < given);
    let doses = doses_on_server(&sim, &udids);
    assert!(doses.values().sum::<usize>() > 0, "{doses:?}");
    assert!(doses.values().all(|n| *n <= 2), "{doses:?}");
}

#[test]
fn ctrl_c_stops_cleanly_with_the_journal_flushed_and_the_run_resumable() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = Sim::start_with(
        &repo_path("trials/fleets/rehearsal-12.yaml"),
        &["--speed", SPEED],
    );
    let proto = protocol_for(&sim, tmp.path(), "ctrlc");
    let results = tmp.path().join("results");
    let mut child = Reaper(
        lab_run(&proto, &results)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let text = std::fs::read_dir(&results)
            .ok()
            .and_then(|mut d| d.find_map(|e| e.ok().map(|e| e.path()).filter(|p| p.is_dir())))
            .map(|d| std::fs::read_to_string(d.join("journal.jsonl")).unwrap_or_default())
            .unwrap_or_default();
        if text.matches("\"event\":\"dose_enqueued\"").count() >= 5 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "dosing never finished"
        );
    }
    let st = Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.0.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("rerun the same command to resume"), "{err}");
    let dir = run_dir(&results);
    let loaded = lab::journal::read(&dir.join("journal.jsonl")).unwrap();
    assert!(loaded.torn_tail.is_none());
    assert_eq!(
        loaded.entries.last().unwrap().event,
        lab::journal::Event::RunInterrupted
    );
    let out = lab_run(&proto, &results).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    check_run(&sim, &dir);
}

#[test]
fn the_rehearsal_reproduces_each_seeded_quirk_as_a_radar_draft() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = Sim::start_with(
        &repo_path("trials/fleets/rehearsal-12.yaml"),
        &["--speed", SPEED],
    );
    let proto = protocol_for_with(&sim, tmp.path(), "repro", true);
    let results = tmp.path().join("results");
    let out = lab_run(&proto, &results).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = run_dir(&results);
    let devices = csv_rows(&dir.join("devices.csv"));
    for v in ["11.3", "11.3.1", "11.4"] {
        let d = devices.iter().find(|d| d["product_version"] == v).unwrap();
        assert_eq!(d["arm"], "bug-reproduction", "{d:?}");
        assert_eq!(d["eligible"], "true");
        assert_eq!(d["exclusion_rules"], "known_bad_version_waived");
    }
    // The 10.2 device stays excluded: only known-bad versions are waived.
    let old = devices
        .iter()
        .find(|d| d["product_version"] == "10.2")
        .unwrap();
    assert_eq!(old["exclusion_rules"], "min_ios;ddm_min_ios");
    let mut drafts: Vec<String> = std::fs::read_dir(dir.join("radar"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .collect();
    drafts.sort();
    assert_eq!(
        drafts,
        vec![
            // Issue 14: the unanswered ScheduleOSUpdate of the 11.3.1 device is re-delivered at
            // each of its polls, and the MDM's record of the deliveries shows it.
            "command_redelivered.md",
            "documented_type_mismatch.md",
            "schedule_error_but_proceeds.md",
            "schedule_no_response.md"
        ]
    );
    let d = std::fs::read_to_string(dir.join("radar/schedule_no_response.md")).unwrap();
    assert!(d.contains("11.3.1"), "{d}");
    assert!(d.contains("of 8 devices") || d.contains("of "), "{d}");
    // Doses counted on the server: two per bug-reproduction device (Default, then Default).
    let udids: Vec<String> = devices.iter().map(|d| d["udid"].clone()).collect();
    let doses = doses_on_server(&sim, &udids);
    for d in &devices {
        if d["arm"] == "bug-reproduction" {
            assert!(doses[&d["udid"]] <= 2, "{d:?}");
        }
    }
}

/// The rehearsal pointed at the external sim, without its bug-reproduction arm (these tests check
/// issue 4's verdicts: the known-bad devices stay excluded).
fn protocol_for(sim: &Sim, dir: &Path, id: &str) -> PathBuf {
    bench_protocol(
        "trials/rehearsal.yaml",
        sim,
        SPEED,
        dir,
        Some(id),
        Some("1h"),
        true,
    )
}

fn protocol_for_with(sim: &Sim, dir: &Path, id: &str, keep_bug_reproduction: bool) -> PathBuf {
    bench_protocol(
        "trials/rehearsal.yaml",
        sim,
        SPEED,
        dir,
        Some(id),
        Some("1h"),
        !keep_bug_reproduction,
    )
}
