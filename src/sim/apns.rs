//! The simulated lab's stand-in for Apple's push service: an HTTP/2 server over TLS with client
//! certificates, answering `POST /3/device/<hex token>` the way APNs does (brief mdm.md §4), and
//! waking the simulated device that registered the token.
//!
//! Simulated devices cannot receive real pushes; this lets the embedded MDM server's real APNs
//! client (`mdm_server::push::Apns`) be exercised end to end, mTLS and HTTP/2 included.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum ApnsStandInError {
    #[error("APNs stand-in certificates: {0}")]
    Certs(#[from] rcgen::Error),
    #[error("APNs stand-in TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("APNs stand-in TLS: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    #[error("APNs stand-in cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
}

/// One push as received, for tests and evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedPush {
    pub token_hex: String,
    pub push_type: Option<String>,
    pub topic: Option<String>,
    pub body: String,
    pub status: u16,
}

#[derive(Default)]
pub struct Registry {
    devices: Mutex<HashMap<String, (String, Arc<Notify>)>>,
    log: Mutex<Vec<ReceivedPush>>,
}

impl Registry {
    /// Register a device's token and PushMagic; the returned `Notify` fires on each push.
    pub fn register(&self, token: &[u8], push_magic: &str) -> Arc<Notify> {
        let hex = hex(token);
        let notify = Arc::new(Notify::new());
        self.devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hex, (push_magic.to_string(), notify.clone()));
        notify
    }

    pub fn received(&self) -> Vec<ReceivedPush> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A running stand-in. The push certificate and key are what an MDM server needs to reach it;
/// the key is a secret and is never logged.
pub struct ApnsStandIn {
    pub url: String,
    pub ca_pem: String,
    pub push_cert_pem: String,
    pub push_key_pem: String,
    pub registry: Arc<Registry>,
}

impl std::fmt::Debug for ApnsStandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsStandIn")
            .field("url", &self.url)
            .field("push_key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "lab simulated APNs CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

/// Start the stand-in on `bind` (e.g. `127.0.0.1:0`).
pub async fn start(bind: &str) -> Result<ApnsStandIn, ApnsStandInError> {
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let ca_params = ca_params()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut sp = CertificateParams::new(vec!["localhost".to_string()])?;
    sp.subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = sp.signed_by(&server_key, &issuer)?;

    let push_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut pp = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    // A real MDM push certificate carries the topic in its subject's UID (brief §4).
    dn.push(DnType::CommonName, "APSP:lab-simulated");
    pp.distinguished_name = dn;
    pp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let push_cert = pp.signed_by(&push_key, &issuer)?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_cert.der().to_vec()))?;
    let provider = crate::tls::provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(server_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let listener = TcpListener::bind(bind)
        .await
        .map_err(|e| ApnsStandInError::Bind(bind.to_string(), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ApnsStandInError::Bind(bind.to_string(), e))?;
    let registry = Arc::new(Registry::default());
    let reg = registry.clone();
    // Listener limits (crate::listen_limits): the TLS handshake within the header timeout, no
    // byte either way for the idle timeout closes the connection, and the connection cap.
    let limits = crate::listen_limits::Limits::current();
    let tracker = crate::listen_limits::ConnTracker::new(limits.max_connections);
    tokio::spawn(async move {
        let counter = Arc::new(AtomicU64::new(1));
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(guard) = tracker.admit() else {
                drop(tcp);
                continue;
            };
            let acceptor = acceptor.clone();
            let reg = reg.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let io = crate::listen_limits::IdleIo::new(tcp, limits.idle_timeout);
                let handshake =
                    tokio::time::timeout(limits.header_read_timeout, acceptor.accept(io));
                let Ok(Ok(tls)) = handshake.await else {
                    return;
                };
                let busy = guard.busy_counter();
                let svc = hyper::service::service_fn(move |req| {
                    let reg = reg.clone();
                    let counter = counter.clone();
                    let mark = crate::listen_limits::BusyGuard::enter(busy.clone());
                    async move {
                        let r = handle(req, &reg, &counter).await;
                        drop(mark);
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = guard.evicted() => {}
                }
            });
        }
    });
    Ok(ApnsStandIn {
        url: format!("https://{}:{}", addr.ip(), addr.port()),
        ca_pem: ca_cert.pem(),
        push_cert_pem: push_cert.pem(),
        push_key_pem: push_key.serialize_pem(),
        registry,
    })
}

fn reply(
    status: StatusCode,
    reason: Option<&str>,
    apns_id: Option<String>,
) -> Response<Full<Bytes>> {
    let body = reason
        .map(|r| serde_json::json!({ "reason": r }).to_string())
        .unwrap_or_default();
    let mut b = Response::builder().status(status);
    if let Some(id) = apns_id {
        b = b.header("apns-id", id);
    }
    b.body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    reg: &Registry,
    counter: &AtomicU64,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let push_type = req
        .headers()
        .get("apns-push-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let topic = req
        .headers()
        .get("apns-topic")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let is_post = req.method() == hyper::Method::POST;
    let body = match req.into_body().collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let token_hex = path.strip_prefix("/3/device/").unwrap_or("").to_string();
    let log = |status: u16| {
        reg.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ReceivedPush {
                token_hex: token_hex.clone(),
                push_type: push_type.clone(),
                topic: topic.clone(),
                body: body.clone(),
                status,
            });
    };
    if !is_post {
        log(405);
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            Some("MethodNotAllowed"),
            None,
        );
    }
    if push_type.as_deref() != Some("mdm") {
        log(400);
        return reply(StatusCode::BAD_REQUEST, Some("InvalidPushType"), None);
    }
    // The payload must be exactly {"mdm": "<PushMagic>"}.
    let magic = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let o = v.as_object()?;
            (o.len() == 1).then(|| o.get("mdm")?.as_str().map(str::to_string))?
        });
    let Some(magic) = magic else {
        log(400);
        return reply(StatusCode::BAD_REQUEST, Some("BadPayload"), None);
    };
    let device = reg
        .devices
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&token_hex)
        .cloned();
    let Some((expected, notify)) = device else {
        log(400);
        return reply(StatusCode::BAD_REQUEST, Some("BadDeviceToken"), None);
    };
    if magic != expected {
        log(400);
        return reply(StatusCode::BAD_REQUEST, Some("BadPushMagic"), None);
    }
    log(200);
    notify.notify_one();
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let id = crate::sim::identity::uuid_from(n, &token_hex);
    reply(StatusCode::OK, None, Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdm_server::push::{Apns, PushProvider, PushTarget};

    #[tokio::test]
    async fn apns_client_pushes_over_http2_with_client_certificate() {
        let standin = start("127.0.0.1:0").await.unwrap();
        let wake = standin.registry.register(&[0xab, 0xcd], "magic-1");
        let apns = Apns::new(
            standin.push_cert_pem.as_bytes(),
            standin.push_key_pem.as_bytes(),
            &standin.url,
            Some(standin.ca_pem.as_bytes()),
        )
        .unwrap();
        let targets = vec![
            PushTarget {
                id: "U1".into(),
                token: vec![0xab, 0xcd],
                push_magic: "magic-1".into(),
                topic: Some("com.apple.mgmt.External.test".into()),
            },
            PushTarget {
                id: "U2".into(),
                token: vec![0x01],
                push_magic: "other".into(),
                topic: None,
            },
        ];
        let woken = tokio::spawn(async move { wake.notified().await });
        let r = apns.push(&targets).await;
        assert!(r[0].as_ref().is_ok_and(|id| id.len() == 36), "{r:?}");
        assert!(
            r[1].as_ref().unwrap_err().contains("BadDeviceToken"),
            "{r:?}"
        );
        tokio::time::timeout(std::time::Duration::from_secs(5), woken)
            .await
            .expect("device woken")
            .unwrap();
        let log = standin.registry.received();
        assert_eq!(log[0].body, r#"{"mdm":"magic-1"}"#);
        assert_eq!(log[0].push_type.as_deref(), Some("mdm"));
        assert_eq!(log[0].token_hex, "abcd");
        assert_eq!(
            log[0].topic.as_deref(),
            Some("com.apple.mgmt.External.test")
        );
    }

    #[tokio::test]
    async fn a_client_without_the_push_certificate_is_refused() {
        let standin = start("127.0.0.1:0").await.unwrap();
        standin.registry.register(&[1], "m");
        // A certificate from another CA: the TLS handshake must fail.
        let other = start("127.0.0.1:0").await.unwrap();
        let apns = Apns::new(
            other.push_cert_pem.as_bytes(),
            other.push_key_pem.as_bytes(),
            &standin.url,
            Some(standin.ca_pem.as_bytes()),
        )
        .unwrap();
        let r = apns
            .push(&[PushTarget {
                id: "U".into(),
                token: vec![1],
                push_magic: "m".into(),
                topic: None,
            }])
            .await;
        assert!(r[0].is_err(), "{r:?}");
        assert!(standin.registry.received().is_empty());
    }
}
