//! Issue 17, contract: `lab sim serve --mdm-enrollment-profile` enrolls into a double that
//! enforces MicroMDM's rules (micro@c4878e2, brief mdm.md §5.2 and issue 17): check-ins only at
//! `/mdm/checkin`, command results only at `/mdm/connect` (no combined `/mdm`); no certificate
//! header is read; every message must carry `Mdm-Signature` by an identity its own SCEP server
//! issued, and that identity is tied to the UDID at Authenticate.

mod common;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::{get, put};
use base64::Engine;
use common::*;
use lab::mdm::checkin::{CheckinMessage, parse_checkin};
use lab::mdm::report::parse_report;
use lab::mdm_server::identity::{IdentityCa, fingerprint};
use lab::mdm_server::scep::{CAPS, ScepCa};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CHALLENGE: &str = "micromdm-challenge";

struct Double {
    ca: ScepCa,
    trust: IdentityCa,
    /// UDID → fingerprint of the identity bound at Authenticate.
    bound: Mutex<HashMap<String, String>>,
    /// (path, what, UDID) of each accepted message.
    accepted: Mutex<Vec<(String, String, String)>>,
    /// (path, why) of each refused one.
    refused: Mutex<Vec<(String, String)>>,
}

type St = State<Arc<Double>>;

async fn scep(State(d): St, Query(q): Query<HashMap<String, String>>, body: Bytes) -> Vec<u8> {
    match q.get("operation").map(String::as_str) {
        Some("GetCACaps") => CAPS.as_bytes().to_vec(),
        Some("GetCACert") => d.ca.cert_der.clone(),
        _ => d.ca.pki_operation(&body).unwrap(),
    }
}

/// MicroMDM's signature rule: a detached CMS signature over the body, by a certificate its CA
/// issued. Returns the signer's fingerprint.
fn signer(d: &Double, h: &HeaderMap, body: &[u8]) -> Result<String, String> {
    let sig = h
        .get("Mdm-Signature")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Mdm-Signature (a certificate header is not read)")?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(sig)
        .map_err(|e| e.to_string())?;
    let v = lab::mdm_server::cms::verify(&der, Some(body)).map_err(|e| e.to_string())?;
    d.trust.verify(&v.signer_cert).map_err(|e| e.to_string())?;
    Ok(fingerprint(&v.signer_cert))
}

fn refuse(d: &Double, uri: &Uri, why: String, code: StatusCode) -> StatusCode {
    d.refused
        .lock()
        .unwrap()
        .push((uri.path().to_string(), why));
    code
}

async fn checkin(State(d): St, uri: Uri, h: HeaderMap, body: Bytes) -> StatusCode {
    let fp = match signer(&d, &h, &body) {
        Ok(fp) => fp,
        Err(e) => return refuse(&d, &uri, e, StatusCode::BAD_REQUEST),
    };
    let Ok(msg) = parse_checkin(&body) else {
        return refuse(&d, &uri, "not a check-in".into(), StatusCode::BAD_REQUEST);
    };
    let udid = msg.udid().unwrap_or_default().to_string();
    if let CheckinMessage::Authenticate { .. } = msg {
        d.bound.lock().unwrap().insert(udid.clone(), fp);
    } else if d.bound.lock().unwrap().get(&udid) != Some(&fp) {
        return refuse(
            &d,
            &uri,
            format!("{udid}: not its identity"),
            StatusCode::FORBIDDEN,
        );
    }
    d.accepted
        .lock()
        .unwrap()
        .push((uri.path().into(), msg.message_type().into(), udid));
    StatusCode::OK
}

async fn connect(State(d): St, uri: Uri, h: HeaderMap, body: Bytes) -> StatusCode {
    let fp = match signer(&d, &h, &body) {
        Ok(fp) => fp,
        Err(e) => return refuse(&d, &uri, e, StatusCode::BAD_REQUEST),
    };
    let Ok(r) = parse_report(&body) else {
        return refuse(
            &d,
            &uri,
            "not a command result".into(),
            StatusCode::BAD_REQUEST,
        );
    };
    let udid = r.enrollment().to_string();
    if d.bound.lock().unwrap().get(&udid) != Some(&fp) {
        return refuse(
            &d,
            &uri,
            format!("{udid}: not its identity"),
            StatusCode::FORBIDDEN,
        );
    }
    d.accepted
        .lock()
        .unwrap()
        .push((uri.path().into(), r.status.as_str().into(), udid));
    StatusCode::OK
}

fn profile(base: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict><key>PayloadContent</key><array>
<dict><key>PayloadType</key><string>com.apple.security.scep</string>
<key>PayloadContent</key><dict><key>URL</key><string>{base}/scep</string>
<key>Challenge</key><string>{CHALLENGE}</string></dict></dict>
<dict><key>PayloadType</key><string>com.apple.mdm</string>
<key>ServerURL</key><string>{base}/mdm/connect</string>
<key>CheckInURL</key><string>{base}/mdm/checkin</string>
<key>Topic</key><string>com.apple.mgmt.External.micromdm-double</string>
<key>SignMessage</key><true/></dict>
</array><key>PayloadType</key><string>Configuration</string></dict></plist>"#
    )
}

#[test]
fn the_simulated_lab_enrolls_into_a_double_with_micromdm_s_rules() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ca = ScepCa::generate("MicroMDM double SCEP CA", CHALLENGE.into()).unwrap();
    let d = Arc::new(Double {
        trust: IdentityCa::from_pem(ca.cert_pem.as_bytes()).unwrap(),
        ca,
        bound: Mutex::default(),
        accepted: Mutex::default(),
        refused: Mutex::default(),
    });
    let base = rt.block_on(async {
        let app = Router::new()
            .route("/scep", get(scep).post(scep))
            .route("/mdm/checkin", put(checkin))
            .route("/mdm/connect", put(connect))
            .with_state(d.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        format!("http://{addr}")
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("enroll.mobileconfig");
    std::fs::write(&path, profile(&base)).unwrap();
    let fleet = repo_path("trials/fleets/bench-5.yaml");
    let udids: Vec<String> = lab::sim::fleet::load(&fleet)
        .unwrap()
        .into_iter()
        .map(|d| d.udid)
        .collect();
    // 60 simulated seconds per real one: the one-minute poll comes every second.
    let _sim = Sim::start_with(
        &fleet,
        &[
            "--mdm-enrollment-profile",
            path.to_str().unwrap(),
            "--speed",
            "60",
        ],
    );
    let has = |path: &str, what: &str, udid: &str| {
        d.accepted
            .lock()
            .unwrap()
            .iter()
            .any(|(p, w, u)| p == path && w == what && u == udid)
    };
    wait_for(Duration::from_secs(60), || {
        udids
            .iter()
            .all(|u| {
                has("/mdm/checkin", "Authenticate", u)
                    && has("/mdm/checkin", "TokenUpdate", u)
                    && has("/mdm/connect", "Idle", u)
            })
            .then_some(())
    });
    let refused = d.refused.lock().unwrap().clone();
    assert!(refused.is_empty(), "the double refused: {refused:?}");
    // Each device has its own identity.
    let bound = d.bound.lock().unwrap();
    let mut fps: Vec<&String> = bound.values().collect();
    fps.sort();
    fps.dedup();
    assert_eq!(fps.len(), udids.len());
}
