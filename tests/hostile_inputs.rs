//! Issue 18: hostile devices and hostile network clients. A plist nested 50 000 levels deep fails
//! that device or that request only; unauthenticated clients get no parser; idle and slowloris
//! connections are closed and cannot starve the authenticated API; one certificate, one
//! enrollment. Everything runs through the real sockets of `lab sim serve` / `lab mdm serve`
//! processes (a crash would show as the process dying).

mod common;
use common::*;
use lab::mdm::{CHECKIN_CONTENT_TYPE, CheckinMessage};
use lab::mdm_server::identity::cert_header_value;
use lab::plist_util::hostile::{deep_binary, deep_xml};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const API_KEY: &str = "hostile-api-key-not-secret";
const CERT_HEADER: &str = "X-Client-Cert";
const REPORT_CT: &str = "application/x-apple-aspen-mdm";

// ------------------------------------------------------------------ a device that answers deep

#[test]
fn a_device_answering_a_50000_deep_plist_fails_alone_with_kind_too_deep() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "devices:\n{}{}{}",
        device("Good 1", ""),
        device("Deep", "    fault: deep_plist\n"),
        device("Good 2", "")
    );
    let f = fleet_file(&dir, "f.yaml", &text);
    let sim = Sim::start(&f);
    let out = run_lab(&["probe", "--json", "--timeout", "5"], Some(&sim.addr));
    assert_eq!(
        out.status.code(),
        Some(1),
        "one failed device makes the probe exit 1, it does not abort it: {}",
        stderr(&out)
    );
    let r = parse_json(&out);
    let devs = r["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 3, "every device has its record");
    let udid_of = |name: &str| {
        lab::sim::fleet::load(&f)
            .unwrap()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap()
            .udid
    };
    let by = |name: &str| {
        let u = udid_of(name);
        devs.iter().find(|d| d["udid"] == u.as_str()).unwrap()
    };
    for good in ["Good 1", "Good 2"] {
        assert_eq!(by(good)["status"], "ok", "{}", by(good));
    }
    let deep = by("Deep");
    assert_eq!(deep["status"], "failed");
    assert_eq!(deep["failure"]["kind"], "too_deep", "{deep}");
    assert_eq!(deep["failure"]["stage"], "QueryType");
    let msg = deep["failure"]["message"].as_str().unwrap();
    assert!(msg.contains("deeper than 64"), "{msg}");
    // The start of what the device sent is kept as evidence.
    let raw = deep["failure"]["raw_base64"].as_str().unwrap();
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .unwrap();
    assert!(raw.starts_with(b"<?xml"), "evidence kept raw");
    assert!(raw.len() <= 4096);
}

// ------------------------------------------------------------------ `lab mdm serve` as a process

struct Server {
    child: Child,
    url: String,
    addr: String,
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    ca: Ca,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `lab mdm serve` with identities checked against a test CA; `prefix` wraps the command
    /// (e.g. `prlimit --nofile=256:256`).
    fn start(prefix: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, &ca.pem).unwrap();
        let db = dir.path().join("mdm.sqlite");
        let mut cmd = match prefix.split_first() {
            Some((p, rest)) => {
                let mut c = Command::new(p);
                c.args(rest).arg(lab_bin());
                c
            }
            None => Command::new(lab_bin()),
        };
        let mut child = cmd
            .args(["mdm", "serve", "--listen", "127.0.0.1:0"])
            .args(["--cert-header", CERT_HEADER])
            .arg("--db")
            .arg(&db)
            .arg("--ca")
            .arg(&ca_path)
            .env("LAB_MDM_API_KEY", API_KEY)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        let addr = url.trim_start_matches("http://").to_string();
        Server {
            child,
            url,
            addr,
            db,
            _dir: dir,
            ca,
        }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

fn http() -> reqwest::Client {
    lab::http_client::client(Duration::from_secs(20))
}

async fn put(url: &str, ct: &str, cert: Option<&[u8]>, body: Vec<u8>, api: bool) -> (u16, String) {
    let mut r = http().put(url).header("content-type", ct).body(body);
    if let Some(c) = cert {
        r = r.header(CERT_HEADER, cert_header_value(c));
    }
    if api {
        r = r.basic_auth("nanomdm", Some(API_KEY));
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn authenticate(udid: &str) -> Vec<u8> {
    CheckinMessage::Authenticate {
        topic: "com.apple.mgmt.External.test".into(),
        udid: udid.into(),
        os_version: Some("17.5.1".into()),
        build_version: Some("21F90".into()),
        product_name: Some("iPhone12,1".into()),
        serial_number: None,
        device_name: None,
    }
    .to_plist()
}

fn token_update(udid: &str) -> Vec<u8> {
    CheckinMessage::TokenUpdate {
        topic: "com.apple.mgmt.External.test".into(),
        udid: udid.into(),
        token: udid.as_bytes().to_vec(),
        push_magic: format!("magic-{udid}"),
        unlock_token: None,
        awaiting_configuration: false,
    }
    .to_plist()
}

async fn enrollments(url: &str) -> serde_json::Value {
    let r = http()
        .get(format!("{url}/v1/enrollments"))
        .basic_auth("nanomdm", Some(API_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn deep_plists_at_every_mdm_endpoint_are_400_and_the_server_stays_up() {
    let mut s = Server::start(&[], &[]);
    let udid = "00008030-00000000000000D1";
    let cert = device_cert(&s.ca);
    let url = s.url.clone();
    assert_eq!(
        put(
            &format!("{url}/mdm"),
            CHECKIN_CONTENT_TYPE,
            Some(&cert),
            authenticate(udid),
            false
        )
        .await
        .0,
        200
    );
    let bodies = [
        ("50 000 nested arrays (XML)", deep_xml(50_000, false)),
        ("60 000 nested dicts (XML)", deep_xml(60_000, true)),
        ("100 000 nested arrays (binary)", deep_binary(100_000)),
    ];
    let endpoints = [
        ("/mdm", CHECKIN_CONTENT_TYPE, false),
        ("/mdm", REPORT_CT, false),
        ("/checkin", CHECKIN_CONTENT_TYPE, false),
        (
            "/v1/enqueue/00008030-00000000000000D1?nopush=1",
            "application/xml",
            true,
        ),
    ];
    for (what, body) in &bodies {
        for (path, ct, api) in endpoints {
            let target = format!("{url}{path}");
            // Unauthenticated: refused before the body is parsed.
            let (code, text) = put(&target, ct, None, body.clone(), false).await;
            let expected = if api { 401 } else { 400 };
            assert_eq!(code, expected, "{what} at {path} unauthenticated: {text}");
            assert!(!text.contains("deeper"), "refused unread: {text}");
            // Authenticated: parsed with the depth limit, refused as that request's error.
            let (code, text) = put(&target, ct, Some(&cert), body.clone(), api).await;
            assert_eq!(code, 400, "{what} at {path}: {text}");
            assert!(text.contains("deeper than 64"), "{what} at {path}: {text}");
            assert!(s.alive(), "the server died on {what} at {path}");
        }
    }
    // The next normal requests work: a check-in, then the API.
    assert_eq!(
        put(
            &format!("{url}/mdm"),
            CHECKIN_CONTENT_TYPE,
            Some(&cert),
            token_update(udid),
            false
        )
        .await
        .0,
        200
    );
    let e = enrollments(&url).await;
    assert_eq!(e["enrollments"][0]["id"], udid);
    assert_eq!(e["enrollments"][0]["token_update_tally"], 1);
    // The deep reports were kept raw as evidence, attributed through the certificate.
    let r = http()
        .get(format!("{url}/v1/reports/rejected?id={udid}"))
        .basic_auth("nanomdm", Some(API_KEY))
        .send()
        .await
        .unwrap();
    let rejected: serde_json::Value = r.json().await.unwrap();
    let notes: Vec<&str> = rejected["reports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["note"].as_str())
        .collect();
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(
        notes.iter().all(|n| n.contains("deeper than 64")),
        "{notes:?}"
    );
}

#[tokio::test]
async fn one_certificate_one_enrollment_rebinding_is_recorded_empty_udid_is_400() {
    let s = Server::start(&[], &[]);
    let url = format!("{}/mdm", s.url);
    let (u1, u2, u3) = (
        "00008030-0000000000000C01",
        "00008030-0000000000000C02",
        "00008030-0000000000000C03",
    );
    let (a, b, c) = (device_cert(&s.ca), device_cert(&s.ca), device_cert(&s.ca));
    let ck = CHECKIN_CONTENT_TYPE;
    assert_eq!(
        put(&url, ck, Some(&a), authenticate(u1), false).await.0,
        200
    );
    assert_eq!(
        put(&url, ck, Some(&a), token_update(u1), false).await.0,
        200
    );

    // A's certificate cannot authenticate another UDID, nor speak for one.
    let (code, text) = put(&url, ck, Some(&a), authenticate(u2), false).await;
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("bound to another enrollment"), "{text}");
    assert_eq!(
        put(&url, ck, Some(&b), authenticate(u2), false).await.0,
        200
    );
    assert_eq!(
        put(&url, ck, Some(&a), token_update(u2), false).await.0,
        403
    );
    assert_eq!(
        put(&url, ck, Some(&b), token_update(u2), false).await.0,
        200
    );

    // Re-authenticating with the same certificate is a re-enrollment: accepted, not a rebind.
    assert_eq!(
        put(&url, ck, Some(&a), authenticate(u1), false).await.0,
        200
    );
    // A never-seen certificate re-binds u1 (NanoMDM's rule): the old one stops working …
    assert_eq!(
        put(&url, ck, Some(&c), authenticate(u1), false).await.0,
        200
    );
    assert_eq!(
        put(&url, ck, Some(&a), token_update(u1), false).await.0,
        403
    );
    assert_eq!(
        put(&url, ck, Some(&c), token_update(u1), false).await.0,
        200
    );
    // … and stays bound to u1: it cannot enroll a third device either.
    assert_eq!(
        put(&url, ck, Some(&a), authenticate(u3), false).await.0,
        403
    );
    // B (bound to u2) cannot take over u1.
    assert_eq!(
        put(&url, ck, Some(&b), authenticate(u1), false).await.0,
        403
    );

    // An empty UDID is a 400.
    let (code, text) = put(&url, ck, Some(&c), authenticate(""), false).await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("empty UDID"), "{text}");

    // The re-binding is in the server's check-in records, with both fingerprints.
    let db = rusqlite::Connection::open(&s.db).unwrap();
    let rebinds: Vec<(String, String)> = db
        .prepare("SELECT enrollment_id, raw FROM checkins WHERE message_type = 'IdentityRebound'")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                String::from_utf8(r.get::<_, Vec<u8>>(1)?).unwrap(),
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rebinds.len(), 1, "{rebinds:?}");
    assert_eq!(rebinds[0].0, u1);
    let note: serde_json::Value = serde_json::from_str(&rebinds[0].1).unwrap();
    use lab::mdm_server::identity::fingerprint;
    assert_eq!(note["previous_fingerprint"], fingerprint(&a));
    assert_eq!(note["new_fingerprint"], fingerprint(&c));
    // The three refused take-overs are kept as evidence under their own type.
    let refused: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM checkins WHERE message_type = 'AuthenticateRefused'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(refused, 3);
    // Exactly one device per certificate in the enrollments.
    let e = enrollments(&s.url).await;
    let ids: Vec<&str> = e["enrollments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [u1, u2]);
}

// ------------------------------------------------------------------ listeners

/// Read until the peer closes; `true` if it closed (EOF or reset) within `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 256];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn slowloris_connections_are_closed_after_the_header_timeout() {
    let s = Server::start(
        &[],
        &[
            ("LAB_LISTEN_HEADER_TIMEOUT_MS", "600"),
            ("LAB_LISTEN_IDLE_TIMEOUT_MS", "600"),
        ],
    );
    let mut silent: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(&s.addr).unwrap())
        .collect();
    let mut half: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut t = TcpStream::connect(&s.addr).unwrap();
            t.write_all(b"PUT /mdm HTT").unwrap();
            t
        })
        .collect();
    // A trickle of one header byte every 200 ms keeps the connection from being idle; the
    // header timeout still ends it.
    let mut trickle = TcpStream::connect(&s.addr).unwrap();
    trickle.write_all(b"GET /version HTTP/1.1\r\n").unwrap();
    let start = Instant::now();
    let mut trickle_closed = None;
    trickle
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while start.elapsed() < Duration::from_secs(5) {
        if trickle.write_all(b"X").is_err() {
            trickle_closed = Some(start.elapsed());
            break;
        }
        let mut b = [0u8; 256];
        match trickle.read(&mut b) {
            Ok(0) => {
                trickle_closed = Some(start.elapsed());
                break;
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                trickle_closed = Some(start.elapsed());
                break;
            }
        }
    }
    assert!(trickle_closed.is_some(), "a trickled header was held open");
    for (i, c) in silent.iter_mut().chain(half.iter_mut()).enumerate() {
        assert!(
            closed_within(c, Duration::from_secs(5)),
            "connection {i} still open"
        );
    }
    // A normal request afterwards is answered.
    let mut ok = TcpStream::connect(&s.addr).unwrap();
    ok.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    ok.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn at_256_descriptors_300_idle_connections_do_not_starve_the_api() {
    let mut s = Server::start(&["prlimit", "--nofile=256:256"], &[]);
    let flood: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&s.addr).unwrap())
        .collect();
    // Let the server accept them all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let r = lab::http_client::client(Duration::from_secs(1))
        .get(format!("{}/v1/enrollments", s.url))
        .basic_auth("nanomdm", Some(API_KEY))
        .send()
        .await
        .expect("the API answers within a second while 300 idle connections are open");
    assert_eq!(r.status(), 200);
    let took = start.elapsed();
    eprintln!("API answered in {took:?} with 300 idle connections at 256 descriptors");
    assert!(s.alive());
    drop(flood);
}

#[test]
fn simulated_usbmuxd_closes_silent_clients_but_keeps_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let f = fleet_file(&dir, "f.yaml", &format!("devices:\n{}", device("One", "")));
    let sim = Sim::start_with_env(
        &f,
        &["--no-mdm"],
        &[
            ("LAB_LISTEN_HEADER_TIMEOUT_MS", "500"),
            ("LAB_LISTEN_IDLE_TIMEOUT_MS", "800"),
        ],
    );
    let mux = |msg: &str| {
        let mut d = plist::Dictionary::new();
        d.insert("MessageType".into(), msg.into());
        d.insert("ProgName".into(), "hostile".into());
        let body = lab::plist_util::dict_to_xml(d);
        let mut f = ((16 + body.len()) as u32).to_le_bytes().to_vec();
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&8u32.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&body);
        f
    };
    let mut silent = TcpStream::connect(&sim.addr).unwrap();
    let mut after_one = TcpStream::connect(&sim.addr).unwrap();
    after_one.write_all(&mux("ListDevices")).unwrap();
    let mut listener = TcpStream::connect(&sim.addr).unwrap();
    listener.write_all(&mux("Listen")).unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(5)));
    assert!(closed_within(&mut after_one, Duration::from_secs(5)));
    // Listen is exempt: still open well past the idle timeout.
    assert!(!closed_within(&mut listener, Duration::from_millis(1500)));
}

// ------------------------------------------------------------------ JSON and YAML

#[tokio::test]
async fn deep_json_at_the_webhook_receiver_is_400_and_it_stays_up() {
    let rx = lab::mdm::webhook_receiver::WebhookReceiver::start("127.0.0.1:0", None)
        .await
        .unwrap();
    // In a field the event does not have: serde_json skips it without recursing.
    let deep = format!(
        "{{\"topic\":\"mdm.Connect\",\"extra\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let r = http().post(rx.url()).body(deep).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("not a webhook event"), "{text}");
    let r = http().post(rx.url()).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 400, "the receiver still answers");
    // Where JSON is built into a tree (MDM API answers read as serde_json::Value in
    // mdm::backend), serde_json's recursion limit of 128 refuses the depth before the stack.
    let deep_value = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let e = serde_json::from_str::<serde_json::Value>(&deep_value).unwrap_err();
    assert!(e.to_string().contains("recursion limit exceeded"), "{e}");
    let ok = format!("{}{}", "[".repeat(127), "]".repeat(127));
    assert!(serde_json::from_str::<serde_json::Value>(&ok).is_ok());
}

#[test]
fn deep_yaml_is_a_bad_input_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let deep = format!("devices: {}{}\n", "[".repeat(50_000), "]".repeat(50_000));
    let f = fleet_file(&dir, "deep.yaml", &deep);
    let e = lab::sim::fleet::load(&f).unwrap_err().to_string();
    assert!(e.contains("deep.yaml"), "{e}");
    let deep_map = format!("devices:\n{}", {
        let mut s = String::new();
        for i in 0..2_000 {
            s.push_str(&" ".repeat(i + 1));
            s.push_str("a:\n");
        }
        s
    });
    let f = fleet_file(&dir, "deep2.yaml", &deep_map);
    assert!(lab::sim::fleet::load(&f).is_err());
}

// ------------------------------------------------------------------ the fuzz seeds

/// Every deep-nesting seed committed for the fuzz targets (fuzz/make-seeds.py) goes through the
/// target's own decoder and is refused for its depth, not a crash; 1 000 levels run on a small
/// stack to catch a recursive decoder or drop.
#[test]
fn deep_fuzz_seeds_are_refused_by_every_plist_decoder() {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let seeds = |target: &str| {
                let dir = repo_path(&format!("fuzz/corpus/{target}"));
                let mut v: Vec<_> = std::fs::read_dir(&dir)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|p| {
                        let n = p.file_name().unwrap().to_string_lossy().to_string();
                        n.starts_with("deep-") || n.starts_with("shared-")
                    })
                    .collect();
                v.sort();
                assert!(!v.is_empty(), "no deep seeds in {}", dir.display());
                v
            };
            let refused = |what: &std::path::Path, e: String| {
                assert!(
                    e.contains("deeper than 64") || e.contains("expands to more than"),
                    "{}: {e}",
                    what.display()
                );
            };
            for p in seeds("mdm_report") {
                let b = std::fs::read(&p).unwrap();
                refused(
                    &p,
                    lab::mdm::report::parse_report(&b).unwrap_err().to_string(),
                );
            }
            for p in seeds("mdm_checkin") {
                let b = std::fs::read(&p).unwrap();
                refused(
                    &p,
                    lab::mdm::checkin::parse_checkin(&b)
                        .unwrap_err()
                        .to_string(),
                );
            }
            for p in seeds("mdm_envelope") {
                let b = std::fs::read(&p).unwrap();
                refused(&p, lab::mdm::parse_envelope(&b).unwrap_err().to_string());
            }
            for p in seeds("lockdown_frame") {
                let b = std::fs::read(&p).unwrap();
                // Framed seeds and a bare plist (shared-40).
                let payload = match lab::lockdown::frame::decode(&b) {
                    Ok(Some((payload, _))) => payload,
                    _ => b,
                };
                refused(&p, lab::plist_util::parse_dict(&payload).unwrap_err());
            }
            for p in seeds("usbmux_frame") {
                let b = std::fs::read(&p).unwrap();
                let (f, _) = lab::usbmux::frame::decode(&b).unwrap().unwrap();
                refused(&p, lab::plist_util::parse_dict(&f.payload).unwrap_err());
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn a_bad_listener_override_is_a_bad_input() {
    let out = Command::new(lab_bin())
        .args([
            "mdm",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            "/nonexistent/x",
        ])
        .env("LAB_LISTEN_IDLE_TIMEOUT_MS", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("LAB_LISTEN_IDLE_TIMEOUT_MS=\"soon\": expected a whole number"),
        "{err}"
    );
}
