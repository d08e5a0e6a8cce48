//! `lab sim serve --mdm-url URL --mdm-identity-ca-out FILE` (issue 14, interop): the CA the
//! simulated devices' identities chain to is written out, so an external MDM (NanoMDM's `-ca`)
//! can verify them; every device's certificate, as it arrives on the device endpoint, verifies
//! against that file and nothing else.

mod common;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use common::*;
use lab::mdm_server::identity::{IdentityCa, parse_cert_header};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// An external MDM that refuses every message but remembers the path and the certificate
/// header of each, the way NanoMDM without the right `-ca` would see them.
async fn refusing_mdm(
    State(seen): State<Seen>,
    uri: axum::http::Uri,
    h: HeaderMap,
    _: Bytes,
) -> StatusCode {
    let cert = h
        .get(lab::sim::mdm_device::CERT_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    seen.lock().unwrap().push((uri.path().to_string(), cert));
    StatusCode::BAD_REQUEST
}

/// A refusing MDM on a loopback port: its base URL.
fn start_refusing_mdm(rt: &tokio::runtime::Runtime, seen: &Seen) -> String {
    rt.block_on(async {
        let app = Router::new()
            .route("/mdm", put(refusing_mdm))
            .with_state(seen.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        format!("http://{addr}")
    })
}

/// A simulated lab (bench-5) enrolling into a refusing MDM, writing its identity CA.
struct External {
    _rt: tokio::runtime::Runtime,
    seen: Seen,
    dir: tempfile::TempDir,
    n: usize,
    _sim: Sim,
}

impl External {
    fn start(extra: &[&str]) -> External {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let seen = Seen::default();
        let base = start_refusing_mdm(&rt, &seen);
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("identity-ca.pem");
        let fleet = repo_path("trials/fleets/bench-5.yaml");
        let n = lab::sim::fleet::load(&fleet).unwrap().len();
        let mut args = vec![
            "--mdm-url",
            &base,
            "--mdm-identity-ca-out",
            ca_path.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let sim = Sim::start_with(&fleet, &args);
        External {
            _rt: rt,
            seen,
            dir,
            n,
            _sim: sim,
        }
    }

    fn ca_path(&self) -> std::path::PathBuf {
        self.dir.path().join("identity-ca.pem")
    }

    /// (path, header) of every message, once `n` distinct identities have arrived.
    fn messages(&self) -> Vec<(String, String)> {
        wait_for(Duration::from_secs(30), || {
            let s = self.seen.lock().unwrap();
            let mut distinct: Vec<&String> = s.iter().map(|(_, c)| c).collect();
            distinct.sort();
            distinct.dedup();
            (distinct.len() >= self.n).then(|| s.clone())
        })
    }
}

/// `--mdm-cert-header-form escaped-pem` (issue 14): the header carries a URL-escaped PEM, as
/// nginx's `$ssl_client_escaped_cert` passes it to NanoMDM before v0.8, and the certificate in
/// it still chains to the exported CA.
#[test]
fn the_escaped_pem_form_sends_a_url_escaped_pem_of_the_same_identity() {
    let ext = External::start(&["--mdm-cert-header-form", "escaped-pem"]);
    let ca = IdentityCa::from_pem(&std::fs::read(ext.ca_path()).unwrap()).unwrap();
    for (_, header) in &ext.messages() {
        assert!(
            header.starts_with("-----BEGIN%20CERTIFICATE-----%0A")
                && header.ends_with("-----END%20CERTIFICATE-----%0A"),
            "a URL-escaped PEM: {header}"
        );
        assert!(!header.contains(['+', '/', '=', ' ']), "{header}");
        let der = parse_cert_header(header).expect("a certificate header");
        ca.verify(&der)
            .expect("the identity chains to the exported CA");
    }
}

/// The embedded MDM reads both header forms: devices sending the escaped PEM enroll.
#[test]
fn devices_sending_the_escaped_pem_form_enroll_into_the_embedded_mdm() {
    let fleet = repo_path("trials/fleets/bench-5.yaml");
    let n = lab::sim::fleet::load(&fleet).unwrap().len();
    let sim = Sim::start_with(&fleet, &["--mdm-cert-header-form", "escaped-pem"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(sim.enrolled(n));
}

#[test]
fn the_exported_ca_verifies_every_device_identity_an_external_mdm_receives() {
    let ext = External::start(&[]);
    let (n, ca_path) = (ext.n, ext.ca_path());
    // Written before "ready" is printed.
    let pem = std::fs::read(&ca_path).expect("the CA file exists once the lab is ready");
    assert!(String::from_utf8_lossy(&pem).starts_with("-----BEGIN CERTIFICATE-----"));
    let ca = IdentityCa::from_pem(&pem).unwrap();
    let certs = ext.messages();
    let mut verified = std::collections::BTreeSet::new();
    for (path, header) in &certs {
        assert_eq!(path, "/mdm", "devices append /mdm to the base URL");
        let der = parse_cert_header(header).expect("a certificate header");
        ca.verify(&der)
            .expect("every device identity chains to the exported CA");
        verified.insert(header.clone());
    }
    assert_eq!(verified.len(), n, "one identity per device");

    // And a CA of another start does not verify them: the file is this lab's own.
    let other_start = External::start(&[]);
    let other_path = other_start.ca_path();
    let other = IdentityCa::from_pem(&std::fs::read(&other_path).unwrap()).unwrap();
    let der = parse_cert_header(&certs[0].1).unwrap();
    assert!(other.verify(&der).is_err());
}
