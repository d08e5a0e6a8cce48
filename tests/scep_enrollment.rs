//! Issue 17: devices enroll into the embedded MDM as a real iPhone does. The server offers SCEP;
//! a device gets its identity with a CSR carrying the challenge, then signs every check-in and
//! command body (`Mdm-Signature`, a detached CMS SignedData). The server binds the signer to the
//! UDID at Authenticate and refuses unsigned, tampered or another device's messages.

use lab::mdm::{CHECKIN_CONTENT_TYPE, CheckinMessage, report_dict};
use lab::mdm_server::device_auth::DeviceAuth;
use lab::mdm_server::identity::IdentityCa;
use lab::mdm_server::push::NoPush;
use lab::mdm_server::scep::ScepCa;
use lab::mdm_server::{ServerConfig, Store};
use lab::sim::enroll::scep_client::{self, Issued, ScepClientError, ScepSettings};
use lab::sim::enroll::{MDM_SIGNATURE_HEADER, device_keys, mdm_signature};
use std::sync::Arc;

const CHALLENGE: &str = "s3cret-challenge";

async fn server() -> (lab::mdm_server::RunningServer, String) {
    let ca = ScepCa::generate("test SCEP CA", CHALLENGE.into()).unwrap();
    let cfg = ServerConfig {
        api_key: Some("k".into()),
        cert_header: None,
        identity_ca: Some(IdentityCa::from_pem(ca.cert_pem.as_bytes()).unwrap()),
        webhook_url: None,
        webhook_hmac_key: None,
        faults: None,
        ddm_on_enroll: false,
        push: Arc::new(NoPush),
    };
    let auth = DeviceAuth {
        scep: Some(Arc::new(ca)),
        mdm_signature: true,
    };
    let srv = lab::mdm_server::start_with_device_auth(
        "127.0.0.1:0",
        Arc::new(Store::open_in_memory().unwrap()),
        cfg,
        auth,
    )
    .await
    .unwrap();
    let scep = format!("{}/scep", srv.url());
    (srv, scep)
}

fn authenticate(udid: &str) -> Vec<u8> {
    CheckinMessage::Authenticate {
        topic: "com.apple.mgmt.External.t".into(),
        udid: udid.into(),
        os_version: Some("17.5.1".into()),
        build_version: Some("21F90".into()),
        product_name: Some("iPhone12,1".into()),
        serial_number: Some("S".into()),
        device_name: Some("D".into()),
    }
    .to_plist()
}

async fn put(
    url: &str,
    content_type: &str,
    body: Vec<u8>,
    signature: Option<String>,
) -> (u16, String) {
    let mut req = lab::http_client::client(std::time::Duration::from_secs(10))
        .put(format!("{url}/mdm"))
        .header("content-type", content_type);
    if let Some(s) = signature {
        req = req.header(MDM_SIGNATURE_HEADER, s);
    }
    let r = req.body(body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn signed(url: &str, id: &Issued, content_type: &str, body: Vec<u8>) -> (u16, String) {
    let sig = mdm_signature(id, &body).unwrap();
    put(url, content_type, body, Some(sig)).await
}

#[tokio::test]
async fn scep_identities_sign_every_message_and_are_bound_at_authenticate() {
    let (srv, scep_url) = server().await;
    let url = srv.url();
    let http = lab::http_client::client(std::time::Duration::from_secs(10));
    let keys = device_keys(2).unwrap();
    let settings = ScepSettings {
        url: scep_url.clone(),
        challenge: CHALLENGE.into(),
    };
    let a = scep_client::enroll(&http, &settings, "UDID-A", &keys[0])
        .await
        .unwrap();
    let b = scep_client::enroll(&http, &settings, "UDID-B", &keys[1])
        .await
        .unwrap();
    assert_ne!(a.cert_der, b.cert_der);

    // Signed by its own identity: enrolled, and the identity is bound to the UDID.
    assert_eq!(
        signed(&url, &a, CHECKIN_CONTENT_TYPE, authenticate("UDID-A"))
            .await
            .0,
        200
    );
    let e = srv.store.enrollment("UDID-A").unwrap().unwrap();
    assert_eq!(
        e.cert_fingerprint.as_deref(),
        Some(lab::mdm_server::identity::fingerprint(&a.cert_der).as_str())
    );
    let idle = || lab::plist_util::dict_to_xml(report_dict("UDID-A", None, "Idle"));
    assert_eq!(
        signed(&url, &a, "application/x-apple-aspen-mdm", idle())
            .await
            .0,
        200
    );

    // Unsigned: 400. Signed over another body: 403. Signed by B for A: 403.
    let (code, _) = put(&url, "application/x-apple-aspen-mdm", idle(), None).await;
    assert_eq!(code, 400);
    let other_body = lab::plist_util::dict_to_xml(report_dict("UDID-B", None, "Idle"));
    let sig_of_other = mdm_signature(&a, &other_body).unwrap();
    let (code, msg) = put(
        &url,
        "application/x-apple-aspen-mdm",
        idle(),
        Some(sig_of_other),
    )
    .await;
    assert_eq!(code, 403, "{msg}");
    assert_eq!(
        signed(&url, &b, CHECKIN_CONTENT_TYPE, authenticate("UDID-B"))
            .await
            .0,
        200
    );
    let (code, msg) = signed(&url, &b, "application/x-apple-aspen-mdm", idle()).await;
    assert_eq!(code, 403, "B signs for A: {msg}");
    // A's identity cannot authenticate B's UDID either (one certificate, one enrollment).
    let (code, _) = signed(&url, &a, CHECKIN_CONTENT_TYPE, authenticate("UDID-B")).await;
    assert_eq!(code, 403);
}

#[tokio::test]
async fn a_wrong_challenge_is_refused_and_foreign_signers_are_untrusted() {
    let (srv, scep_url) = server().await;
    let http = lab::http_client::client(std::time::Duration::from_secs(10));
    let keys = device_keys(1).unwrap();
    let wrong = ScepSettings {
        url: scep_url.clone(),
        challenge: "not the challenge".into(),
    };
    match scep_client::enroll(&http, &wrong, "UDID-A", &keys[0]).await {
        Err(ScepClientError::Refused(fail_info)) => assert_eq!(fail_info, "2"),
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("a wrong challenge got a certificate"),
    }
    // An identity from another SCEP CA signs properly but is not trusted.
    let (_other, other_url) = server().await;
    let right = ScepSettings {
        url: other_url,
        challenge: CHALLENGE.into(),
    };
    let foreign = scep_client::enroll(&http, &right, "UDID-A", &keys[0])
        .await
        .unwrap();
    let (code, msg) = signed(
        &srv.url(),
        &foreign,
        CHECKIN_CONTENT_TYPE,
        authenticate("UDID-A"),
    )
    .await;
    assert_eq!(code, 403, "{msg}");
    assert!(msg.contains("not trusted"), "{msg}");
}

/// `lab sim serve --mdm-mtls`: the embedded MDM serves TLS and asks for the SCEP identity as
/// client certificate; every device enrolls with it, and a certificate header sent by a client
/// is never taken for one (the TLS front replaces it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mutual_tls_the_client_certificate_is_the_identity() {
    let fleet = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("trials/fleets/bench-5.yaml");
    let opts = lab::sim::SimOptions {
        listen: vec![lab::usbmux::UsbmuxAddr::parse_listen("127.0.0.1:0").unwrap()],
        speed: 1.0,
        seed: None,
        mdm: lab::sim::SimMdm::Embedded {
            listen: "127.0.0.1:0".into(),
            api_key: "k".into(),
            faults: None,
            webhook_url: None,
        },
    };
    let enroll = lab::sim::enroll::EnrollOptions {
        mtls: true,
        ..Default::default()
    };
    let sim = lab::sim::start_with(&fleet, opts, None, &enroll)
        .await
        .unwrap();
    let mdm = sim.mdm.as_ref().unwrap();
    assert!(mdm.url.starts_with("https://"), "{}", mdm.url);
    let store = mdm.server.as_ref().unwrap().store.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let done =
            mdm.agents.iter().all(|a| {
                let Some(cert) = a.identity_certificate() else {
                    return false;
                };
                let fp = lab::mdm_server::identity::fingerprint(cert);
                store.enrollments().unwrap().iter().any(|e| {
                    e.cert_fingerprint.as_deref() == Some(fp.as_str()) && e.token.is_some()
                })
            });
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "devices did not enroll over mutual TLS"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // A client without a certificate that sends a device's certificate in the header is
    // refused: the header is the TLS front's to write.
    let a = &mdm.agents[0];
    let value = lab::mdm_server::identity::cert_header_value(a.identity_certificate().unwrap());
    let r = http_without_client_cert(mdm)
        .put(format!("{}/mdm", mdm.url))
        .header(lab::sim::mdm_device::CERT_HEADER, value)
        .header("content-type", "application/x-apple-aspen-mdm")
        .body(lab::plist_util::dict_to_xml(report_dict(
            "ANY", None, "Idle",
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

fn http_without_client_cert(_mdm: &lab::sim::RunningSimMdm) -> reqwest::Client {
    // The server's CA is not exported; skip verification for this one probe.
    let config = rustls::ClientConfig::builder_with_provider(lab::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyServer))
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .build()
        .unwrap()
}

#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        lab::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
