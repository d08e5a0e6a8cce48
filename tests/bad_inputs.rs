//! The bad-input catalogue (`tests/bad_inputs/catalogue.yaml`): every malformed fleet, protocol,
//! feed, device report, check-in, enqueue body and webhook body there is refused with a clear
//! message naming the file, line and column (exit code 2 for the CLI; a 4xx, kept as evidence,
//! over HTTP), never with a panic, and a refused `lab run` leaves no results folder behind.

mod common;
use common::*;
use lab::mdm::{CHECKIN_CONTENT_TYPE, CheckinMessage, Command};
use lab::mdm_server::push::NoPush;
use lab::mdm_server::{ServerConfig, Store};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    kind: Kind,
    file: String,
    #[serde(default = "two")]
    exit: i32,
    #[serde(default)]
    expect: Vec<String>,
    endpoint: Option<String>,
    status: Option<u16>,
    recorded: Option<String>,
    hmac: Option<String>,
}

fn two() -> i32 {
    2
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Fleet,
    Protocol,
    Feed,
    Http,
}

fn dir() -> PathBuf {
    repo_path("tests/bad_inputs")
}

fn catalogue() -> Vec<Case> {
    let p = dir().join("catalogue.yaml");
    let text = std::fs::read_to_string(&p).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn fill(s: &str, file: &Path) -> String {
    s.replace("{file}", &file.display().to_string())
        .replace("{dir}", &dir().display().to_string())
}

/// Run `lab` with a time limit (a bad input must be refused at once, never served).
fn lab(args: &[String], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut c = Process::new(lab_bin());
    c.args(args)
        .env_remove("USBMUXD_SOCKET_ADDRESS")
        .env_remove("LAB_BADINPUT_NO_SUCH_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("spawn lab");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "lab {args:?} still running after 60 s (a bad input was accepted?)\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli_commands(case: &Case, file: &Path, tmp: &Path) -> Vec<Vec<String>> {
    let f = file.display().to_string();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match case.kind {
        Kind::Fleet => vec![
            s(&[
                "sim",
                "serve",
                "--usbmuxd",
                "127.0.0.1:0",
                "--mdm",
                "127.0.0.1:0",
                "--fleet",
                &f,
            ]),
            s(&["probe", "--sim", &f]),
        ],
        Kind::Protocol => vec![
            s(&[
                "run",
                "--yes",
                "--results",
                &tmp.join("results").display().to_string(),
                &f,
            ]),
            s(&[
                "qualify",
                "--ledger",
                &tmp.join("ledger.jsonl").display().to_string(),
                &f,
            ]),
        ],
        Kind::Feed => vec![s(&["feeds", "check", &f])],
        Kind::Http => vec![],
    }
}

#[test]
fn every_malformed_file_is_refused_with_where_and_what_and_exit_code_2() {
    let cases = catalogue();
    let files: Vec<&Case> = cases.iter().filter(|c| c.kind != Kind::Http).collect();
    assert!(files.len() >= 40, "only {} file cases", files.len());
    let mut failures = Vec::new();
    for case in files {
        let file = dir().join(&case.file);
        assert!(file.exists(), "{}: no such case file", file.display());
        let tmp = tempfile::tempdir().unwrap();
        for args in cli_commands(case, &file, tmp.path()) {
            let (code, _out, err) = lab(&args, &[("LAB_BADINPUT_SET_KEY", "set")]);
            let what = format!("{} ({})", case.file, args[0]);
            if err.contains("panicked") {
                failures.push(format!("{what}: panicked:\n{err}"));
                continue;
            }
            if code != Some(case.exit) {
                failures.push(format!(
                    "{what}: exit code {code:?}, expected {}:\n{err}",
                    case.exit
                ));
                continue;
            }
            for e in &case.expect {
                let want = fill(e, &file);
                if !err.contains(&want) {
                    failures.push(format!("{what}: {want:?} not in:\n{err}"));
                }
            }
            if args[0] == "run" {
                let results = tmp.path().join("results");
                if results.exists() {
                    failures.push(format!(
                        "{what}: a refused run left {} behind",
                        results.display()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

const UDID: &str = "00008030-00000000000000B1";
const API_KEY: &str = "bad-inputs-api-key";
const HMAC_KEY: &[u8] = b"bad-inputs-hmac-key";

#[tokio::test]
async fn every_malformed_http_body_is_refused_with_a_4xx_and_kept() {
    let cases: Vec<Case> = catalogue()
        .into_iter()
        .filter(|c| c.kind == Kind::Http)
        .collect();
    assert!(cases.len() >= 10, "{}", cases.len());
    let db = tempfile::tempdir().unwrap();
    let cfg = ServerConfig {
        api_key: Some(API_KEY.into()),
        cert_header: None,
        identity_ca: None,
        webhook_url: None,
        webhook_hmac_key: None,
        faults: None,
        ddm_on_enroll: false,
        push: Arc::new(NoPush),
    };
    let store = Arc::new(Store::open(&db.path().join("mdm.sqlite")).unwrap());
    let srv = lab::mdm_server::start("127.0.0.1:0", store, cfg)
        .await
        .unwrap();
    let hook =
        lab::mdm::webhook_receiver::WebhookReceiver::start("127.0.0.1:0", Some(HMAC_KEY.to_vec()))
            .await
            .unwrap();
    let http = lab::http_client::client(Duration::from_secs(10));
    // The device the reports name is enrolled and has a command queued.
    for msg in [
        CheckinMessage::Authenticate {
            topic: "com.apple.mgmt.External.bad-inputs".into(),
            udid: UDID.into(),
            os_version: Some("17.5.1".into()),
            build_version: Some("21F90".into()),
            product_name: Some("iPhone12,1".into()),
            serial_number: None,
            device_name: None,
        },
        CheckinMessage::TokenUpdate {
            topic: "com.apple.mgmt.External.bad-inputs".into(),
            udid: UDID.into(),
            token: vec![1, 2, 3],
            push_magic: "magic".into(),
            unlock_token: None,
            awaiting_configuration: false,
        },
    ] {
        let r = http
            .put(format!("{}/mdm", srv.url()))
            .header("content-type", CHECKIN_CONTENT_TYPE)
            .body(msg.to_plist())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http
        .put(format!("{}/v1/enqueue/{UDID}?nopush=1", srv.url()))
        .basic_auth("nanomdm", Some(API_KEY))
        .body(Command::OSUpdateStatus.to_plist("bad-input-queued"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let mut failures = Vec::new();
    for case in &cases {
        let file = dir().join(&case.file);
        let body = std::fs::read(&file).unwrap();
        let endpoint = case.endpoint.as_deref().unwrap_or("?");
        let req = match endpoint {
            "report" => http
                .put(format!("{}/mdm", srv.url()))
                .header("content-type", "application/x-apple-aspen-mdm"),
            "checkin" => http
                .put(format!("{}/mdm", srv.url()))
                .header("content-type", CHECKIN_CONTENT_TYPE),
            "enqueue" => http
                .put(format!("{}/v1/enqueue/{UDID}?nopush=1", srv.url()))
                .basic_auth("nanomdm", Some(API_KEY)),
            "webhook" => {
                let r = http
                    .post(hook.url())
                    .header("content-type", "application/json");
                match case.hmac.as_deref() {
                    Some("good") => r.header(
                        lab::mdm::webhook::HMAC_HEADER,
                        lab::mdm::hmac_signature(HMAC_KEY, &body),
                    ),
                    Some("bad") => r.header(
                        lab::mdm::webhook::HMAC_HEADER,
                        lab::mdm::hmac_signature(b"another key", &body),
                    ),
                    _ => r,
                }
            }
            other => panic!("{}: unknown endpoint {other}", case.file),
        };
        let resp = req.body(body.clone()).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let what = format!("{} ({endpoint})", case.file);
        if text.contains("panicked") {
            failures.push(format!("{what}: panicked: {text}"));
        }
        if Some(status) != case.status {
            failures.push(format!(
                "{what}: HTTP {status}, expected {:?}: {text}",
                case.status
            ));
        }
        for e in &case.expect {
            if !text.contains(e.as_str()) {
                failures.push(format!("{what}: {e:?} not in {text}"));
            }
        }
        if endpoint == "enqueue" && serde_json::from_str::<serde_json::Value>(&text).is_err() {
            failures.push(format!("{what}: the API answered no JSON: {text}"));
        }
        if let Some(rec) = &case.recorded {
            if endpoint == "webhook" {
                let last = hook.inbox.refused().pop();
                match last {
                    Some(r) if r.reason.contains(rec.as_str()) && r.body == body => {}
                    other => failures.push(format!("{what}: not kept as refused: {other:?}")),
                }
            } else {
                let v: serde_json::Value = http
                    .get(format!("{}/v1/reports/rejected", srv.url()))
                    .basic_auth("nanomdm", Some(API_KEY))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let last = v["reports"].as_array().and_then(|a| a.last()).cloned();
                let ok = last.as_ref().is_some_and(|r| {
                    r["note"].as_str().unwrap_or("").contains(rec.as_str())
                        && base64_eq(r["raw_base64"].as_str().unwrap_or(""), &body)
                });
                if !ok {
                    failures.push(format!(
                        "{what}: not recorded raw with a note containing {rec:?}: {last:?}"
                    ));
                }
            }
        }
    }
    // Nothing bad reached the webhook inbox; the queued command is still delivered once.
    assert!(hook.inbox.events().is_empty());
    let idle = lab::mdm::report_dict(UDID, None, "Idle");
    let r = http
        .put(format!("{}/mdm", srv.url()))
        .header("content-type", "application/x-apple-aspen-mdm")
        .body(lab::plist_util::dict_to_xml(idle))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let env = lab::mdm::parse_envelope(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(env.command_uuid, "bad-input-queued");
    assert!(
        failures.is_empty(),
        "{} failures:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn base64_eq(b64: &str, bytes: &[u8]) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .is_ok_and(|d| d == bytes)
}
