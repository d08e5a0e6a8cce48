//! Secrets never reach results, logs or error messages; servers bind to loopback; the operator
//! API refuses strangers; run folders are owner-only.
//!
//! A rehearsal trial runs against `lab -vv sim serve` (its own process, a known API key), next to
//! `lab -vv mdm serve` posting HMAC-signed webhooks to a receiver; every command's stdout and
//! stderr and both servers' logs are captured, and every file of the run folder and every log is
//! searched for the pair records' private keys (read back through usbmuxd `ReadPairRecord`), the
//! API key and the webhook HMAC key.

mod common;
use common::*;
use lab::lockdown::PairRecord;
use lab::usbmux::{UsbmuxAddr, UsbmuxClient};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const API_KEY: &str = "secret-api-key-5f1c9a7e3b2d4c6a";
const HMAC_KEY: &str = "secret-hmac-key-8e2b4d6f0a1c3e5b";

/// A server process whose stdout is read line by line (and kept) and whose stderr goes to a file;
/// killed on drop.
struct Server {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    stdout_log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    fn spawn(mut c: Command, stderr_log: &Path) -> Server {
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr_log).unwrap())
            .spawn()
            .expect("spawn lab");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                log2.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        Server {
            child,
            lines: rx,
            stdout_log: log,
        }
    }

    /// Lines up to (and including) the first that contains `marker`.
    fn until(&self, marker: &str) -> Vec<String> {
        let mut v = Vec::new();
        loop {
            let l = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no {marker:?} from the server: {v:?}"));
            let done = l.contains(marker);
            v.push(l);
            if done {
                return v;
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn word_after<'a>(lines: &'a [String], marker: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.split(marker).nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {marker:?} in {lines:?}"))
}

/// Run `lab` to completion, keeping its stdout and stderr as log files.
fn lab_logged(args: &[&str], logs: &Path, name: &str, usbmuxd: Option<&str>) -> bool {
    let mut c = Command::new(lab_bin());
    c.args(args)
        .env("LAB_MDM_API_KEY", API_KEY)
        .env_remove("USBMUXD_SOCKET_ADDRESS")
        .stdin(Stdio::null());
    if let Some(a) = usbmuxd {
        c.env("USBMUXD_SOCKET_ADDRESS", a);
    }
    let out = c.output().expect("run lab");
    std::fs::write(logs.join(format!("{name}.stdout")), &out.stdout).unwrap();
    std::fs::write(logs.join(format!("{name}.stderr")), &out.stderr).unwrap();
    let ok = out.status.success();
    assert!(
        ok,
        "lab {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    ok
}

/// The rehearsal protocol pointed at an external simulated lab.
fn protocol_for(usbmuxd: &str, mdm_url: &str, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_path("trials/rehearsal.yaml")).unwrap();
    let mut out = String::new();
    let mut skip = false;
    for line in text.lines() {
        if line.starts_with("lab:") {
            out.push_str(&format!(
                "lab:\n  usbmuxd: [\"{usbmuxd}\"]\n  mdm: {{ kind: embedded, url: \"{mdm_url}\", api_key_env: LAB_MDM_API_KEY }}\n  time_scale: 600\n"
            ));
            skip = true;
            continue;
        }
        if skip && line.starts_with("  ") {
            continue;
        }
        skip = false;
        let line = if line.starts_with("id:") {
            "id: secrets".to_string()
        } else if line.trim_start().starts_with("max_duration:") {
            "  max_duration: 1h".to_string()
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    let p = dir.join("secrets.yaml");
    std::fs::write(&p, out).unwrap();
    p
}

/// The base64 body lines of a PEM (what a leak of the key would contain).
fn pem_body_lines(pem: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(pem)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .map(str::to_string)
        .collect()
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn secrets_never_reach_results_or_logs_servers_are_loopback_and_results_owner_only() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir(&logs).unwrap();

    // Default listen addresses are loopback.
    assert!(
        lab::cli::sim::DEFAULT_LISTEN.starts_with("127."),
        "{}",
        lab::cli::sim::DEFAULT_LISTEN
    );
    for cmd in [["sim", "serve"], ["mdm", "serve"]] {
        let out = run_lab(&[cmd[0], cmd[1], "--help"], None);
        let help = stdout(&out);
        let defaults: Vec<&str> = help
            .split("[default: ")
            .skip(1)
            .filter_map(|r| r.split(']').next())
            .filter(|d| d.contains(':') && d.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .collect();
        assert!(!defaults.is_empty(), "no default address in {help}");
        for d in defaults {
            assert!(
                d.starts_with("127."),
                "lab {cmd:?}: default {d} is not loopback"
            );
        }
    }

    // The simulated lab, its own process, at -vv.
    let mut c = Command::new(lab_bin());
    c.args(["-vv", "sim", "serve", "--fleet"])
        .arg(repo_path("trials/fleets/rehearsal-12.yaml"))
        .args(["--usbmuxd", "127.0.0.1:0", "--mdm", "127.0.0.1:0"])
        .args(["--speed", "600"])
        .env("LAB_MDM_API_KEY", API_KEY)
        .env_remove("USBMUXD_SOCKET_ADDRESS");
    let sim = Server::spawn(c, &logs.join("sim.stderr"));
    let lines = sim.until("lab sim: ready");
    let usbmuxd = word_after(&lines, "listening on ").to_string();
    let mdm_url = word_after(&lines, "MDM at ").to_string();
    assert!(usbmuxd.starts_with("127.") && mdm_url.contains("//127."));

    // The embedded MDM server on its own, posting HMAC-signed webhooks to a receiver.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hook = rt
        .block_on(lab::mdm::webhook_receiver::WebhookReceiver::start(
            "127.0.0.1:0",
            Some(HMAC_KEY.as_bytes().to_vec()),
        ))
        .unwrap();
    let mut c = Command::new(lab_bin());
    c.args(["-vv", "mdm", "serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(tmp.path().join("mdm.sqlite"))
        .args(["--webhook-url", &hook.url()])
        .args(["--webhook-hmac-key-env", "LAB_TEST_HMAC_KEY"])
        .env("LAB_MDM_API_KEY", API_KEY)
        .env("LAB_TEST_HMAC_KEY", HMAC_KEY);
    let mdm = Server::spawn(c, &logs.join("mdm.stderr"));
    let lines = mdm.until("listening on ");
    let mdm2 = word_after(&lines, "listening on ").to_string();
    assert!(mdm2.contains("//127."), "{mdm2}");

    let http = lab::http_client::client(Duration::from_secs(10));
    // Unauthenticated (or wrongly authenticated) API calls are refused.
    rt.block_on(async {
        for base in [&mdm_url, &mdm2] {
            for path in ["/v1/enrollments", "/v1/reports/rejected", "/v1/history/x"] {
                let r = http.get(format!("{base}{path}")).send().await.unwrap();
                assert_eq!(r.status(), 401, "{base}{path} without credentials");
                let body = r.text().await.unwrap();
                assert!(!body.contains(API_KEY), "{body}");
                let r = http
                    .get(format!("{base}{path}"))
                    .basic_auth("nanomdm", Some("wrong"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 401, "{base}{path} with a wrong key");
            }
            let r = http
                .put(format!("{base}/v1/enqueue/x"))
                .body(lab::mdm::Command::OSUpdateStatus.to_plist("no-auth"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401);
            let r = http
                .get(format!("{base}/v1/enrollments"))
                .basic_auth("nanomdm", Some(API_KEY))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{base}");
        }
        // A device checks in with the stand-alone server: signed webhooks follow.
        let auth = lab::mdm::CheckinMessage::Authenticate {
            topic: "com.apple.mgmt.External.secrets".into(),
            udid: "00008030-00000000000000C1".into(),
            os_version: Some("17.5.1".into()),
            build_version: Some("21F90".into()),
            product_name: Some("iPhone12,1".into()),
            serial_number: None,
            device_name: None,
        };
        let r = http
            .put(format!("{mdm2}/mdm"))
            .header("content-type", lab::mdm::CHECKIN_CONTENT_TYPE)
            .body(auth.to_plist())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        for _ in 0..50 {
            if !hook.inbox.events().is_empty() {
                break;
            }
            hook.inbox.wait(Duration::from_millis(100)).await;
        }
        assert!(!hook.inbox.events().is_empty(), "no webhook arrived");
        assert!(
            hook.inbox.refused().is_empty(),
            "{:?}",
            hook.inbox.refused()
        );
    });
    let mut webhook_log = String::new();
    for e in hook.inbox.events() {
        webhook_log.push_str(&String::from_utf8_lossy(&e.body));
        webhook_log.push('\n');
    }
    std::fs::write(logs.join("webhooks.jsonl"), webhook_log).unwrap();

    // The pair records' private keys, as usbmuxd hands them out.
    let mut needles: Vec<(String, Vec<u8>)> = vec![
        ("API key".into(), API_KEY.as_bytes().to_vec()),
        ("HMAC key".into(), HMAC_KEY.as_bytes().to_vec()),
    ];
    {
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("nanomdm:{API_KEY}"));
        needles.push(("API key (HTTP Basic)".into(), basic.into_bytes()));
    }
    let records = rt.block_on(async {
        let client = UsbmuxClient::new(UsbmuxAddr::parse(&usbmuxd).unwrap());
        let devices = client.list_devices().await.unwrap();
        assert_eq!(devices.len(), 12);
        let mut v = Vec::new();
        for d in devices {
            let bytes = client.read_pair_record(&d.serial_number).await.unwrap();
            v.push((
                d.serial_number.clone(),
                PairRecord::from_bytes(&bytes).unwrap(),
            ));
        }
        v
    });
    for (udid, r) in &records {
        for (what, pem) in [
            ("host_private_key", &r.host_private_key),
            ("root_private_key", &r.root_private_key),
        ] {
            let body = pem_body_lines(pem);
            assert!(body.len() > 10, "{udid} {what}: not a PEM key");
            for l in body {
                needles.push((format!("{udid} {what}"), l.into_bytes()));
            }
        }
    }

    // The trial and the commands around it, every one at -vv.
    let proto = protocol_for(&usbmuxd, &mdm_url, tmp.path());
    let results = tmp.path().join("results");
    let proto_s = proto.to_str().unwrap();
    let results_s = results.to_str().unwrap();
    let ledger = results.join("ledger.jsonl");
    lab_logged(&["-vv", "probe", "--json"], &logs, "probe", Some(&usbmuxd));
    lab_logged(
        &["-vv", "devices", "--json"],
        &logs,
        "devices",
        Some(&usbmuxd),
    );
    lab_logged(
        &[
            "-vv",
            "run",
            "--yes",
            "--results",
            results_s,
            "--ledger",
            ledger.to_str().unwrap(),
            proto_s,
        ],
        &logs,
        "run",
        None,
    );
    let run_dir = std::fs::read_dir(&results)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_dir())
        .expect("a run folder");
    lab_logged(
        &[
            "-vv",
            "qualify",
            "--json",
            "--ledger",
            ledger.to_str().unwrap(),
            proto_s,
        ],
        &logs,
        "qualify",
        None,
    );
    lab_logged(
        &[
            "-vv",
            "observe",
            run_dir.to_str().unwrap(),
            "--note",
            "checked",
        ],
        &logs,
        "observe",
        None,
    );
    lab_logged(
        &["-vv", "report", run_dir.to_str().unwrap()],
        &logs,
        "report",
        None,
    );
    // A refused run (bad key) must not print the key it was given either.
    let out = Command::new(lab_bin())
        .args(["-vv", "run", "--yes", "--results", results_s, proto_s])
        .env("LAB_LEDGER", &ledger)
        .env("LAB_MDM_API_KEY", format!("{API_KEY}-wrong"))
        .env_remove("USBMUXD_SOCKET_ADDRESS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    std::fs::write(logs.join("run-wrong-key.stdout"), &out.stdout).unwrap();
    std::fs::write(logs.join("run-wrong-key.stderr"), &out.stderr).unwrap();

    let (sim_out, mdm_out) = (sim.stdout_log.clone(), mdm.stdout_log.clone());
    drop(mdm);
    drop(sim);
    std::thread::sleep(Duration::from_millis(200));
    save_stdout(&sim_out, &logs.join("sim.stdout"));
    save_stdout(&mdm_out, &logs.join("mdm.stdout"));

    // Search every file of the run folder and every log.
    let mut files = Vec::new();
    files_under(&results, &mut files);
    let n_results = files.len();
    files_under(&logs, &mut files);
    assert!(n_results >= 8, "{files:?}");
    let sim_err = std::fs::read(logs.join("sim.stderr")).unwrap();
    assert!(
        String::from_utf8_lossy(&sim_err).contains("DEBUG"),
        "the simulator did not log at -vv"
    );
    let mut leaks = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for (what, n) in &needles {
            if contains(&bytes, n) {
                leaks.push(format!("{}: {what}", f.display()));
            }
        }
    }
    leaks.sort();
    leaks.dedup();
    assert!(leaks.is_empty(), "secrets found:\n{}", leaks.join("\n"));

    // Owner-only: the run folder, everything in it, and the ledger.
    use std::os::unix::fs::PermissionsExt;
    let mut paths = vec![run_dir.clone()];
    let mut inside = Vec::new();
    files_under(&run_dir, &mut inside);
    paths.extend(inside.iter().cloned());
    for e in walk_dirs(&run_dir) {
        paths.push(e);
    }
    if ledger.exists() {
        paths.push(ledger.clone());
    }
    let mut open = Vec::new();
    for p in &paths {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            open.push(format!("{} is {mode:o}", p.display()));
        }
    }
    assert!(open.is_empty(), "not owner-only:\n{}", open.join("\n"));
}

fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(walk_dirs(&p));
            v.push(p);
        }
    }
    v
}

/// Keep the servers' stdout too (it names the API-key source, never the key).
fn save_stdout(s: &std::sync::Mutex<String>, path: &Path) {
    std::fs::write(path, s.lock().unwrap().as_bytes()).unwrap();
}
