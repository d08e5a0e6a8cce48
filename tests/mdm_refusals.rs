//! An MDM that refuses `lab` makes `lab qualify` and `lab run` stop loudly (issue 17 "Fail
//! loudly", issue 14 "Interop"), through the real HTTP path against a simulated lab in its own
//! process: a wrong API key (401 from the embedded server's API), and webhooks the listener
//! refuses for their HMAC signature. Before, both ended in "no answer" for every device and
//! exit 0.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const FLEET: &str = "seed: 67
clock: { start: \"2026-11-27T09:00:00Z\" }
mdm: { poll_interval: 60s }
catalogue:
  - { version: \"17.6.1\", build: 21G93, download_size: 600 MB, install_size: 1.5 GB, product_types: [\"iPhone12,1\"] }
devices:
  - name: Refused bench iPhone
    count: 2
    product_type: iPhone12,1
    ios: { version: \"17.5.1\", build: 21F90 }
    disk: { total: 64 GB, free: 21 GB }
    battery: { level: 90, charging: true, external_power: true }
";

const WRONG_KEY: &str = "wrong-api-key-5c1d-must-never-leak";
const HMAC_KEY: &str = "webhook-hmac-key-9e7a-must-never-leak";

fn protocol(dir: &Path, sim: &Sim, mdm: &str) -> PathBuf {
    let text = format!(
        "id: refused
title: An MDM refusing lab
lab:
  usbmuxd: [\"{addr}\"]
  mdm: {mdm}
  time_scale: 600
  mdm_api: {{ timeout: 2s, attempts: 3, backoff: 100ms }}
eligibility: {{ supervised: true }}
target: latest
arms:
  - name: one
    install_action: Default
follow_up: {{ poll_interval: 30s, max_duration: 1h, until: updated }}
",
        addr = sim.addr
    );
    let p = dir.join("refused.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn qualify(p: &Path, dir: &Path, env: &[(&str, &str)]) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new(lab_bin())
        .args(["qualify", "--ledger"])
        .arg(dir.join("ledger.jsonl"))
        .arg(p)
        .env("LAB_MDM_API_KEY", TEST_API_KEY)
        .envs(env.iter().copied())
        .env_remove("USBMUXD_SOCKET_ADDRESS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out, start.elapsed())
}

#[test]
fn a_wrong_api_key_stops_qualify_and_run_with_exit_2_naming_the_server_and_the_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = Sim::start(&fleet_file(&tmp, "fleet.yaml", FLEET));
    let mdm = format!(
        "{{ kind: embedded, url: \"{}\", api_key_env: LAB_MDM_API_KEY }}",
        sim.mdm()
    );
    let p = protocol(tmp.path(), &sim, &mdm);
    let (out, took) = qualify(&p, tmp.path(), &[("LAB_MDM_API_KEY", WRONG_KEY)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("the MDM at {} refused lab's API key", sim.mdm())),
        "{err}"
    );
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(err.contains("check lab.mdm.api_key_env"), "{err}");
    assert!(!err.contains(WRONG_KEY) && !stdout(&out).contains(WRONG_KEY));
    // At the first refused call, not after every device's answer timed out (30 s each).
    assert!(took < Duration::from_secs(20), "{took:?}");

    let results = tmp.path().join("results");
    let out = lab_run(&p, &results)
        .env("LAB_MDM_API_KEY", WRONG_KEY)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("refused lab's API key (HTTP 401"), "{err}");
    assert!(err.contains("rerun the same command to resume"), "{err}");
    // Stopped before any dose, the stop journaled; nothing holds the key.
    let dir = run_dir(&results);
    let j = journal_events(&dir);
    assert!(!j.iter().any(|e| e["event"] == "dose_intent"));
    let stop: Vec<_> = j
        .iter()
        .filter(|e| e["event"] == "observation" && e["kind"] == "mdm_refused")
        .collect();
    assert_eq!(stop.len(), 1, "{j:#?}");
    assert_eq!(stop[0]["key"], "api_key");
    let journal = std::fs::read_to_string(dir.join("journal.jsonl")).unwrap();
    assert!(!journal.contains(WRONG_KEY));
}

#[test]
fn webhooks_refused_for_their_signature_stop_qualify_and_run_with_exit_2_naming_the_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The simulated lab's server posts its webhooks unsigned; the listener expects a key.
    let sim = Sim::start_with(
        &fleet_file(&tmp, "fleet.yaml", FLEET),
        &[
            "--mdm-webhook-url",
            &format!("http://127.0.0.1:{port}/webhook"),
        ],
    );
    let mdm = format!(
        "{{ kind: nanomdm, url: \"{}\", api_key_env: LAB_MDM_API_KEY, webhook: {{ listen: \"127.0.0.1:{port}\", hmac_key_env: LAB_TEST_HMAC_KEY }} }}",
        sim.mdm()
    );
    let p = protocol(tmp.path(), &sim, &mdm);
    let env = [("LAB_TEST_HMAC_KEY", HMAC_KEY)];
    let (out, took) = qualify(&p, tmp.path(), &env);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("the MDM's webhooks are refused"), "{err}");
    assert!(err.contains("missing X-Hmac-Signature"), "{err}");
    assert!(
        err.contains("does not match lab.mdm.webhook.hmac_key_env"),
        "{err}"
    );
    assert!(!err.contains(HMAC_KEY));
    assert!(took < Duration::from_secs(20), "{took:?}");

    let results = tmp.path().join("results");
    let out = lab_run(&p, &results).envs(env).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("the MDM's webhooks are refused"), "{err}");
    let j = journal_events(&run_dir(&results));
    assert!(!j.iter().any(|e| e["event"] == "dose_intent"));
    assert!(
        j.iter()
            .any(|e| e["kind"] == "mdm_refused" && e["key"] == "webhook_signature"),
        "{j:#?}"
    );
}
