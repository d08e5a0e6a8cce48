//! The embedded MDM server over real HTTP: enrolment, the NanoMDM-compatible API, the command
//! loop, webhooks with HMAC, identity binding, bad input, and durability across a SIGKILL.

mod common;
use common::{Ca, ca, device_cert};
use lab::mdm::backend::{MdmBackend, NanoMdm};
use lab::mdm::webhook_receiver::WebhookReceiver;
use lab::mdm::{CHECKIN_CONTENT_TYPE, CheckinMessage, Command, parse_envelope, report_dict};
use lab::mdm_server::identity::{IdentityCa, cert_header_value};
use lab::mdm_server::push::{Apns, NoPush};
use lab::mdm_server::{ServerConfig, Store};
use plist::Value;
use std::sync::Arc;
use std::time::Duration;

const API_KEY: &str = "test-api-key-not-secret";
const HMAC_KEY: &[u8] = b"webhook-hmac-key";
const CERT_HEADER: &str = "X-Client-Cert";

/// A scripted device: raw HTTP PUTs of check-ins and reports.
struct Device {
    udid: String,
    cert: Vec<u8>,
    url: String,
    http: reqwest::Client,
}

impl Device {
    fn new(udid: &str, cert: Vec<u8>, base: &str) -> Device {
        Device {
            udid: udid.into(),
            cert,
            url: format!("{base}/mdm"),
            http: lab::http_client::client(Duration::from_secs(10)),
        }
    }

    async fn put(&self, ct: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let r = self
            .http
            .put(&self.url)
            .header("content-type", ct)
            .header(CERT_HEADER, cert_header_value(&self.cert))
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }

    async fn enroll(&self) {
        let auth = CheckinMessage::Authenticate {
            topic: "com.apple.mgmt.External.test".into(),
            udid: self.udid.clone(),
            os_version: Some("17.5.1".into()),
            build_version: Some("21F90".into()),
            product_name: Some("iPhone12,1".into()),
            serial_number: None,
            device_name: None,
        };
        assert_eq!(self.put(CHECKIN_CONTENT_TYPE, auth.to_plist()).await.0, 200);
        let tu = CheckinMessage::TokenUpdate {
            topic: "com.apple.mgmt.External.test".into(),
            udid: self.udid.clone(),
            token: self.udid.as_bytes().to_vec(),
            push_magic: format!("magic-{}", self.udid),
            unlock_token: None,
            awaiting_configuration: false,
        };
        assert_eq!(self.put(CHECKIN_CONTENT_TYPE, tu.to_plist()).await.0, 200);
    }

    async fn report(&self, d: plist::Dictionary) -> (u16, Vec<u8>) {
        self.put(
            "application/x-apple-aspen-mdm",
            lab::plist_util::dict_to_xml(d),
        )
        .await
    }

    async fn idle(&self) -> (u16, Vec<u8>) {
        self.report(report_dict(&self.udid, None, "Idle")).await
    }
}

async fn server(
    db: &std::path::Path,
    ca: &Ca,
    webhook: Option<String>,
) -> lab::mdm_server::RunningServer {
    let cfg = ServerConfig {
        api_key: Some(API_KEY.into()),
        cert_header: Some(CERT_HEADER.into()),
        identity_ca: Some(IdentityCa::from_pem(ca.pem.as_bytes()).unwrap()),
        webhook_url: webhook,
        webhook_hmac_key: Some(HMAC_KEY.to_vec()),
        faults: None,
        ddm_on_enroll: false,
        push: Arc::new(NoPush),
    };
    lab::mdm_server::start("127.0.0.1:0", Arc::new(Store::open(db).unwrap()), cfg)
        .await
        .unwrap()
}

#[tokio::test]
async fn devices_enroll_commands_round_trip_results_are_stored_and_webhooks_are_signed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let hook = WebhookReceiver::start("127.0.0.1:0", Some(HMAC_KEY.to_vec()))
        .await
        .unwrap();
    let srv = server(&dir.path().join("mdm.sqlite"), &ca, Some(hook.url())).await;
    let backend = NanoMdm::embedded(&srv.url(), API_KEY, Duration::from_secs(5));

    let n = 8;
    let devices: Vec<Device> = (0..n)
        .map(|i| {
            Device::new(
                &format!("00008030-00000000000000{i:02}"),
                device_cert(&ca),
                &srv.url(),
            )
        })
        .collect();
    for d in &devices {
        d.enroll().await;
    }
    for (i, d) in devices.iter().enumerate() {
        let cmd = Command::baseline_device_information();
        let q = backend
            .enqueue(&d.udid, &cmd, &format!("cmd-{i}"))
            .await
            .unwrap();
        // No push certificate: NanoMDM's "queued, not pushed" (HTTP 500 + command_uuid).
        assert_eq!(q.pushed, Some(false));
        assert!(q.push_error.is_some());
    }
    for (i, d) in devices.iter().enumerate() {
        let (code, body) = d.idle().await;
        assert_eq!(code, 200);
        let env = parse_envelope(&body).expect("a command plist");
        assert_eq!(env.command_uuid, format!("cmd-{i}"));
        assert_eq!(env.request_type, "DeviceInformation");
        let mut r = report_dict(&d.udid, Some(&env.command_uuid), "Acknowledged");
        let mut qr = plist::Dictionary::new();
        qr.insert("OSVersion".into(), "17.5.1".into());
        r.insert("QueryResponses".into(), Value::Dictionary(qr));
        let (code, body) = d.report(r).await;
        assert_eq!(code, 200);
        assert!(body.is_empty(), "no more commands: a zero-length body");
    }
    for (i, d) in devices.iter().enumerate() {
        let res = backend.results(&d.udid).await.unwrap();
        assert_eq!(res.len(), 1, "{res:?}");
        assert_eq!(res[0].command_uuid, format!("cmd-{i}"));
        assert_eq!(res[0].request_type.as_deref(), Some("DeviceInformation"));
        assert_eq!(res[0].status, "Acknowledged");
        let parsed = lab::mdm::parse_report(&res[0].raw).unwrap();
        assert_eq!(
            lab::mdm::query_responses(&parsed).unwrap()["OSVersion"],
            Value::from("17.5.1")
        );
        let counts = backend.delivery_counts(&d.udid).await.unwrap();
        assert_eq!(counts[&format!("cmd-{i}")].deliveries, Some(1));
        assert_eq!(counts[&format!("cmd-{i}")].final_reports, 1);
    }
    // Webhooks: Authenticate, TokenUpdate, Idle and Acknowledged per device, all with a valid
    // HMAC (the receiver refuses bad ones).
    let want = 4 * n;
    for _ in 0..100 {
        if hook.inbox.events().len() >= want {
            break;
        }
        hook.inbox.wait(Duration::from_millis(100)).await;
    }
    let events = hook.inbox.events();
    assert_eq!(events.len(), want);
    assert!(hook.inbox.refused().is_empty());
    let count = |t: &str| events.iter().filter(|e| e.event.topic == t).count();
    assert_eq!(count("mdm.Authenticate"), n);
    assert_eq!(count("mdm.TokenUpdate"), n);
    assert_eq!(count("mdm.Connect"), 2 * n);
    let tu = events
        .iter()
        .find(|e| e.event.topic == "mdm.TokenUpdate")
        .unwrap();
    assert_eq!(
        tu.event.checkin_event.as_ref().unwrap().token_update_tally,
        Some(1)
    );
    let ack = events
        .iter()
        .filter_map(|e| e.event.acknowledge_event.as_ref())
        .find(|a| a.status == "Acknowledged")
        .unwrap();
    assert!(ack.command_uuid.as_deref().unwrap().starts_with("cmd-"));
    assert!(lab::mdm::parse_report(&ack.raw_payload).is_ok());
}

#[tokio::test]
async fn bad_reports_get_4xx_are_recorded_and_leave_the_queue_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let srv = server(&dir.path().join("mdm.sqlite"), &ca, None).await;
    let backend = NanoMdm::embedded(&srv.url(), API_KEY, Duration::from_secs(5));
    let d = Device::new("00008030-0000000000000001", device_cert(&ca), &srv.url());
    d.enroll().await;
    backend
        .enqueue(&d.udid, &Command::SecurityInfo, "sec-1")
        .await
        .unwrap();

    let (code, _) = d
        .put("application/x-apple-aspen-mdm", b"\x00garbage".to_vec())
        .await;
    assert_eq!(code, 400);
    let mut no_status = plist::Dictionary::new();
    no_status.insert("UDID".into(), d.udid.clone().into());
    assert_eq!(d.report(no_status).await.0, 400);
    assert_eq!(
        d.report(report_dict(
            &d.udid,
            Some("no-such-command"),
            "Acknowledged"
        ))
        .await
        .0,
        400
    );
    // The queued command is still delivered, once, and answered normally.
    let (code, body) = d.idle().await;
    assert_eq!(code, 200);
    assert_eq!(parse_envelope(&body).unwrap().command_uuid, "sec-1");
    assert_eq!(
        d.report(report_dict(&d.udid, Some("sec-1"), "Acknowledged"))
            .await,
        (200, vec![])
    );
    let rejected: serde_json::Value = lab::http_client::client(Duration::from_secs(10))
        .get(format!("{}/v1/reports/rejected", srv.url()))
        .basic_auth("nanomdm", Some(API_KEY))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let notes: Vec<&str> = rejected["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["note"].as_str().unwrap())
        .collect();
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(notes[0].contains("malformed"));
    assert!(notes[1].contains("Status"));
    assert!(notes[2].contains("unknown command"));
    assert_eq!(rejected["reports"][0]["raw_base64"], "AGdhcmJhZ2U=");
}

#[tokio::test]
async fn identity_is_bound_at_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let srv = server(&dir.path().join("mdm.sqlite"), &ca, None).await;
    let d = Device::new("00008030-0000000000000002", device_cert(&ca), &srv.url());
    d.enroll().await;
    // Same UDID, another (valid) certificate: refused.
    let impostor = Device::new(&d.udid, device_cert(&ca), &srv.url());
    assert_eq!(impostor.idle().await.0, 403);
    // A certificate from another CA: refused.
    let stranger = Device::new(&d.udid, device_cert(&self::ca()), &srv.url());
    assert_eq!(stranger.idle().await.0, 403);
    // Not enrolled at all.
    let unknown = Device::new("00008030-00000000000000FF", device_cert(&ca), &srv.url());
    assert_eq!(unknown.idle().await.0, 401);
    // No certificate header.
    let r = lab::http_client::client(Duration::from_secs(10))
        .put(format!("{}/mdm", srv.url()))
        .body(lab::plist_util::dict_to_xml(report_dict(
            &d.udid, None, "Idle",
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(d.idle().await.0, 200);
}

#[tokio::test]
async fn the_api_refuses_bad_requests_with_clear_json() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let srv = server(&dir.path().join("mdm.sqlite"), &ca, None).await;
    let http = lab::http_client::client(Duration::from_secs(10));
    let url = format!("{}/v1/enqueue/U1", srv.url());
    let cmd = Command::OSUpdateStatus.to_plist("u-1");
    assert_eq!(
        http.put(&url)
            .body(cmd.clone())
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let wrong = http
        .put(&url)
        .basic_auth("nanomdm", Some("wrong"))
        .body(cmd.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let bad = http
        .put(&url)
        .basic_auth("nanomdm", Some(API_KEY))
        .body("not a plist")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let j: serde_json::Value = bad.json().await.unwrap();
    assert!(
        j["command_error"]
            .as_str()
            .unwrap()
            .contains("decoding command"),
        "{j}"
    );
    let ok = http
        .put(format!("{url}?nopush=1"))
        .basic_auth("nanomdm", Some(API_KEY))
        .body(cmd.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let j: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(j["command_uuid"], "u-1");
    assert_eq!(j["request_type"], "OSUpdateStatus");
    assert_eq!(j["no_push"], true);
    // The history since a cursor (lab's own extension): the same key, and three small numbers.
    let since = format!("{}/v1/history", srv.url());
    assert_eq!(http.get(&since).send().await.unwrap().status(), 401);
    let wrong = http
        .get(&since)
        .basic_auth("nanomdm", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    for (query, says) in [
        ("?limit=10001", "limit must be between 1 and 10000"),
        ("?limit=0", "limit must be between 1 and 10000"),
        ("?reports_after=-1", "reports_after must be a whole number"),
        (
            "?deliveries_after=x",
            "deliveries_after must be a whole number",
        ),
        ("?ids=U1,U2", "unknown parameter \"ids\""),
    ] {
        let r = http
            .get(format!("{since}{query}"))
            .basic_auth("nanomdm", Some(API_KEY))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let j: serde_json::Value = r.json().await.unwrap();
        assert!(j["error"].as_str().unwrap().contains(says), "{query}: {j}");
    }
    let r = http
        .get(format!(
            "{since}?reports_after=0&deliveries_after=0&limit=10000"
        ))
        .basic_auth("nanomdm", Some(API_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["more"], false, "{j}");
    assert!(j["reports"].as_array().unwrap().is_empty(), "{j}");
    let dup = http
        .put(format!("{url}?nopush=1"))
        .basic_auth("nanomdm", Some(API_KEY))
        .body(cmd)
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), 409);
    let j: serde_json::Value = dup.json().await.unwrap();
    assert!(
        j["command_error"]
            .as_str()
            .unwrap()
            .contains("already enqueued")
    );
}

#[tokio::test]
async fn enqueue_pushes_through_apns_over_http2() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let standin = lab::sim::apns::start("127.0.0.1:0").await.unwrap();
    let udid = "00008030-0000000000000003";
    let wake = standin
        .registry
        .register(udid.as_bytes(), &format!("magic-{udid}"));
    let cfg = ServerConfig {
        api_key: Some(API_KEY.into()),
        cert_header: Some(CERT_HEADER.into()),
        identity_ca: Some(IdentityCa::from_pem(ca.pem.as_bytes()).unwrap()),
        webhook_url: None,
        webhook_hmac_key: None,
        faults: None,
        ddm_on_enroll: false,
        push: Arc::new(
            Apns::new(
                standin.push_cert_pem.as_bytes(),
                standin.push_key_pem.as_bytes(),
                &standin.url,
                Some(standin.ca_pem.as_bytes()),
            )
            .unwrap(),
        ),
    };
    let srv = lab::mdm_server::start(
        "127.0.0.1:0",
        Arc::new(Store::open(&dir.path().join("m.sqlite")).unwrap()),
        cfg,
    )
    .await
    .unwrap();
    let d = Device::new(udid, device_cert(&ca), &srv.url());
    d.enroll().await;
    let woken = tokio::spawn(async move { wake.notified().await });
    let backend = NanoMdm::embedded(&srv.url(), API_KEY, Duration::from_secs(5));
    let q = backend
        .enqueue(udid, &Command::AvailableOSUpdates, "avail-1")
        .await
        .unwrap();
    assert_eq!(q.pushed, Some(true), "{q:?}");
    tokio::time::timeout(Duration::from_secs(5), woken)
        .await
        .unwrap()
        .unwrap();
    let log = standin.registry.received();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].body, format!("{{\"mdm\":\"magic-{udid}\"}}"));
    assert_eq!(
        log[0].topic.as_deref(),
        Some("com.apple.mgmt.External.test")
    );
}

/// `lab mdm serve` as a process on `db`; returns the child and its URL.
fn spawn_server(db: &std::path::Path, ca_pem: &std::path::Path) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(common::lab_bin())
        .args([
            "mdm",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cert-header",
            CERT_HEADER,
        ])
        .arg("--db")
        .arg(db)
        .arg("--ca")
        .arg(ca_pem)
        .env("LAB_MDM_API_KEY", API_KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
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
    (child, url)
}

#[tokio::test]
async fn sigkill_mid_queue_loses_no_queued_command_and_no_stored_result() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let db = dir.path().join("mdm.sqlite");
    let cert = device_cert(&ca);
    let udid = "00008030-0000000000000004";

    let (mut child, url) = spawn_server(&db, &ca_path);
    let d = Device::new(udid, cert.clone(), &url);
    d.enroll().await;
    let backend = NanoMdm::embedded(&url, API_KEY, Duration::from_secs(5));
    for i in 0..3 {
        backend
            .enqueue(udid, &Command::SecurityInfo, &format!("k-{i}"))
            .await
            .unwrap();
    }
    let (_, body) = d.idle().await;
    assert_eq!(parse_envelope(&body).unwrap().command_uuid, "k-0");
    let (_, body) = d
        .report(report_dict(udid, Some("k-0"), "Acknowledged"))
        .await;
    assert_eq!(parse_envelope(&body).unwrap().command_uuid, "k-1");
    // k-1 is delivered but unanswered when the server dies.
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, url) = spawn_server(&db, &ca_path);
    let d = Device::new(udid, cert, &url);
    // The device was enrolled before the crash: its binding survived.
    let (code, body) = d.idle().await;
    assert_eq!(code, 200);
    assert_eq!(
        parse_envelope(&body).unwrap().command_uuid,
        "k-1",
        "re-delivered"
    );
    let (_, body) = d
        .report(report_dict(udid, Some("k-1"), "Acknowledged"))
        .await;
    assert_eq!(parse_envelope(&body).unwrap().command_uuid, "k-2");
    let (_, body) = d
        .report(report_dict(udid, Some("k-2"), "Acknowledged"))
        .await;
    assert!(body.is_empty());
    let backend = NanoMdm::embedded(&url, API_KEY, Duration::from_secs(5));
    let results = backend.results(udid).await.unwrap();
    let uuids: Vec<&str> = results.iter().map(|r| r.command_uuid.as_str()).collect();
    assert_eq!(uuids, vec!["k-0", "k-1", "k-2"]);
    let counts = backend.delivery_counts(udid).await.unwrap();
    assert_eq!(
        counts["k-1"].deliveries,
        Some(2),
        "delivered before and after the crash"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
