//! The embedded MDM server's DDM over real HTTP: the operator puts an enforcement, syncs, and a
//! scripted device walks the protocol (DeclarativeManagement command → tokens →
//! declaration-items → declarations → status); the status report comes back byte for byte from
//! the history API and in the `mdm.DeclarativeManagement` webhook.

mod common;
use base64::Engine;
use common::{Ca, ca, device_cert};
use lab::mdm::ddm::declaration::{DeclarationKind, ENFORCEMENT_SPECIFIC};
use lab::mdm::ddm::protocol::{
    DdmCheckin, DeclarationItems, Endpoint, TokensResponse, command_tokens,
};
use lab::mdm::ddm::{Declaration, Enforcement};
use lab::mdm::webhook_receiver::WebhookReceiver;
use lab::mdm::{CHECKIN_CONTENT_TYPE, CheckinMessage, parse_envelope, report_dict};
use lab::mdm_server::identity::{IdentityCa, cert_header_value};
use lab::mdm_server::push::NoPush;
use lab::mdm_server::{ServerConfig, Store};
use std::sync::Arc;
use std::time::Duration;

const API_KEY: &str = "test-api-key-not-secret";
const HMAC_KEY: &[u8] = b"webhook-hmac-key";
const CERT_HEADER: &str = "X-Client-Cert";
const UDID: &str = "00008110-000A1B2C3D4E5F60";

struct Device {
    cert: Vec<u8>,
    url: String,
    http: reqwest::Client,
}

impl Device {
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
            udid: UDID.into(),
            os_version: Some("17.5.1".into()),
            build_version: Some("21F90".into()),
            product_name: Some("iPhone14,7".into()),
            serial_number: None,
            device_name: None,
        };
        assert_eq!(self.put(CHECKIN_CONTENT_TYPE, auth.to_plist()).await.0, 200);
    }

    async fn ddm(&self, endpoint: Endpoint, data: Option<Vec<u8>>) -> (u16, Vec<u8>) {
        let c = DdmCheckin {
            enrollment_id: UDID.into(),
            endpoint,
            data,
        };
        self.put(CHECKIN_CONTENT_TYPE, c.to_plist()).await
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

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, serde_json::Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .basic_auth("nanomdm", Some(API_KEY));
        if let Some(b) = body {
            r = r.body(b);
        }
        let r = r.send().await.unwrap();
        let code = r.status().as_u16();
        let v = r.json().await.unwrap_or(serde_json::Value::Null);
        (code, v)
    }
}

fn enforcement(version: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "Type": ENFORCEMENT_SPECIFIC,
        "Identifier": "lab.su.target",
        "ServerToken": "ignored",
        "Payload": {"TargetOSVersion": version, "TargetLocalDateTime": "2026-12-05T19:00:00"}
    }))
    .unwrap()
}

#[tokio::test]
async fn a_device_syncs_declarations_and_its_status_is_kept_raw_and_sent_by_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let hook = WebhookReceiver::start("127.0.0.1:0", Some(HMAC_KEY.to_vec()))
        .await
        .unwrap();
    let db = dir.path().join("mdm.sqlite");
    let srv = server(&db, &ca, Some(hook.url())).await;
    let api = Api {
        base: srv.url(),
        http: lab::http_client::client(Duration::from_secs(10)),
    };
    let dev = Device {
        cert: device_cert(&ca),
        url: format!("{}/mdm", srv.url()),
        http: lab::http_client::client(Duration::from_secs(10)),
    };
    dev.enroll().await;

    // Put the enforcement: the server computes the token; the same content again changes nothing.
    let (code, put) = api
        .call(
            reqwest::Method::PUT,
            &format!("/v1/ddm/declarations/{UDID}"),
            Some(enforcement("18.1")),
        )
        .await;
    assert_eq!(code, 200, "{put}");
    assert_eq!(put["changed"], true);
    assert_ne!(put["server_token"], "ignored");
    let (_, again) = api
        .call(
            reqwest::Method::PUT,
            &format!("/v1/ddm/declarations/{UDID}"),
            Some(enforcement("18.1")),
        )
        .await;
    assert_eq!(again["changed"], false);
    assert_eq!(again["declarations_token"], put["declarations_token"]);
    let (_, summary) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/ddm/declarations/{UDID}"),
            None,
        )
        .await;
    assert_eq!(
        summary["active"], false,
        "no DeclarativeManagement check-in yet"
    );

    // Sync: the DeclarativeManagement command carries the tokens as Data.
    let (code, sync) = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/ddm/sync/{UDID}?command_uuid=ddm-1&nopush=1"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{sync}");
    assert_eq!(sync["request_type"], "DeclarativeManagement");
    let (code, _) = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/ddm/sync/{UDID}?command_uuid=ddm-1&nopush=1"),
            None,
        )
        .await;
    assert_eq!(code, 409, "a repeated CommandUUID queues nothing");
    let (code, body) = dev
        .put(
            "application/x-apple-aspen-mdm",
            lab::plist_util::dict_to_xml(report_dict(UDID, None, "Idle")),
        )
        .await;
    assert_eq!(code, 200);
    let env = parse_envelope(&body).unwrap();
    assert_eq!(env.request_type, "DeclarativeManagement");
    let tokens = command_tokens(&env.command).unwrap().unwrap();
    assert_eq!(
        tokens.sync_tokens.declarations_token,
        put["declarations_token"].as_str().unwrap()
    );
    dev.put(
        "application/x-apple-aspen-mdm",
        lab::plist_util::dict_to_xml(report_dict(UDID, Some("ddm-1"), "Acknowledged")),
    )
    .await;

    // The device's walk.
    let (code, t) = dev.ddm(Endpoint::Tokens, None).await;
    assert_eq!(code, 200);
    assert_eq!(
        TokensResponse::parse(&t)
            .unwrap()
            .sync_tokens
            .declarations_token,
        tokens.sync_tokens.declarations_token
    );
    let (_, m) = dev.ddm(Endpoint::DeclarationItems, None).await;
    let manifest = DeclarationItems::parse(&m).unwrap();
    let mut got = Vec::new();
    for (kind, item) in manifest.entries() {
        let (code, d) = dev
            .ddm(
                Endpoint::Declaration {
                    kind,
                    identifier: item.identifier.clone(),
                },
                None,
            )
            .await;
        assert_eq!(code, 200);
        let d = Declaration::parse(&d, true).unwrap();
        assert_eq!(d.server_token, item.server_token);
        got.push(d);
    }
    let e = got
        .iter()
        .find(|d| d.declaration_type == ENFORCEMENT_SPECIFIC)
        .unwrap();
    assert_eq!(
        Enforcement::from_payload(&e.payload)
            .unwrap()
            .target_os_version,
        "18.1"
    );
    let act = got
        .iter()
        .find(|d| d.kind() == Some(DeclarationKind::Activation))
        .unwrap();
    assert!(
        act.payload["StandardConfigurations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "lab.su.target")
    );
    let (code, _) = dev
        .ddm(
            Endpoint::Declaration {
                kind: DeclarationKind::Configuration,
                identifier: "nope".into(),
            },
            None,
        )
        .await;
    assert_eq!(code, 404, "absent declaration: the device deletes its copy");

    // Status, byte for byte.
    let report = br#"{"StatusItems":{"softwareupdate":{"install-state":"downloading","pending-version":{"os-version":"18.1","build-version":"22B83"}}},"Errors":[],"FullReport":false}"#;
    assert_eq!(
        dev.ddm(Endpoint::Status, Some(report.to_vec())).await.0,
        200
    );
    assert_eq!(
        dev.ddm(Endpoint::Status, Some(b"[1,2".to_vec())).await.0,
        400
    );
    let (_, h) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/ddm/status/{UDID}"),
            None,
        )
        .await;
    let reports = h["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 1);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(reports[0]["raw"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw, report.to_vec());
    let seq = reports[0]["seq"].as_i64().unwrap();
    let (_, later) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/ddm/status/{UDID}?after={seq}"),
            None,
        )
        .await;
    assert!(later["reports"].as_array().unwrap().is_empty());
    let (_, summary) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/ddm/declarations/{UDID}"),
            None,
        )
        .await;
    assert_eq!(summary["active"], true);

    // The webhook carries the check-in plist whose Data is the report.
    let mut found = None;
    for _ in 0..100 {
        found = hook.inbox.events().into_iter().find_map(|e| {
            let c = e.event.checkin_event.as_ref()?;
            let ci = DdmCheckin::parse(&c.raw_payload).ok()?;
            (e.event.topic == "mdm.DeclarativeManagement"
                && ci.endpoint == Endpoint::Status
                && ci.data.as_deref() == Some(&report[..]))
            .then_some(())
        });
        if found.is_some() {
            break;
        }
        hook.inbox.wait(Duration::from_millis(100)).await;
    }
    assert!(
        found.is_some(),
        "no mdm.DeclarativeManagement webhook with the report"
    );

    // Removal moves the token; durability: a reopened store has the same history.
    let (_, rm) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/ddm/declarations/{UDID}/lab.su.target"),
            None,
        )
        .await;
    assert_eq!(rm["removed"], true);
    assert_ne!(rm["declarations_token"], put["declarations_token"]);
    srv.stop();
    drop(srv);
    let reopened = Store::open(&db).unwrap();
    assert_eq!(
        reopened.ddm_status_history(UDID, 0).unwrap()[0].raw,
        report.to_vec()
    );
}

#[tokio::test]
async fn the_ddm_api_needs_the_key_and_refuses_bad_declarations() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let srv = server(&dir.path().join("mdm.sqlite"), &ca, None).await;
    let http = lab::http_client::client(Duration::from_secs(10));
    let r = http
        .get(format!("{}/v1/ddm/status/{UDID}", srv.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let api = Api {
        base: srv.url(),
        http,
    };
    let path = format!("/v1/ddm/declarations/{UDID}");
    for bad in [
        br#"{"Type": "com.apple.configuration.softwareupdate.enforcement.specific", "Identifier": "x", "Payload": {"TargetOSVersion": "18.1", "TargetLocalDateTime": "2026-12-05T19:00:00Z"}}"#.to_vec(),
        br#"{"Type": "com.apple.configuration.softwareupdate.enforcement.specific", "Identifier": "x", "Payload": {"TargetLocalDateTime": "2026-12-05T19:00:00"}}"#.to_vec(),
        br#"{"Identifier": "x", "Payload": {}}"#.to_vec(),
        format!("{}{}", "[".repeat(100), "]".repeat(100)).into_bytes(),
    ] {
        let (code, v) = api.call(reqwest::Method::PUT, &path, Some(bad)).await;
        assert_eq!(code, 400, "{v}");
        assert!(v["error"].is_string(), "{v}");
    }
    let (code, v) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/ddm/status/{UDID}?after=x"),
            None,
        )
        .await;
    assert_eq!(code, 400, "{v}");
}
