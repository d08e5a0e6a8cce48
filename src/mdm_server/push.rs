//! Push: waking a device so it connects to the MDM server.
//!
//! One trait, two providers. `Apns` speaks Apple's HTTP/2 provider API with certificate auth
//! (brief mdm.md §4): `POST /3/device/<hex token>`, header `apns-push-type: mdm`, body exactly
//! `{"mdm":"<PushMagic>"}` and nothing else ("Don't include an aps key"). `NoPush` stands for a
//! server without a push certificate: enqueues still queue, and the enqueue answer carries the
//! push error, as NanoMDM's does. Simulated devices are woken through the simulated lab's APNs
//! stand-in (`sim::apns`), reached by the same `Apns` provider, or poll on their own.

use reqwest::header::HeaderValue;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Production APNs (brief §4); `api.development.push.apple.com` for development profiles.
pub const APNS_PRODUCTION: &str = "https://api.push.apple.com";

#[derive(Debug, Clone)]
pub struct PushTarget {
    pub id: String,
    pub token: Vec<u8>,
    pub push_magic: String,
    pub topic: Option<String>,
}

/// `Ok(apns-id)` or `Err(reason)`.
pub type PushResult = Result<String, String>;

pub type PushFuture<'a> = Pin<Box<dyn Future<Output = Vec<PushResult>> + Send + 'a>>;

pub trait PushProvider: Send + Sync {
    /// Push every target; one result per target, in order.
    fn push<'a>(&'a self, targets: &'a [PushTarget]) -> PushFuture<'a>;
}

/// No push certificate configured.
pub struct NoPush;

impl PushProvider for NoPush {
    fn push<'a>(&'a self, targets: &'a [PushTarget]) -> PushFuture<'a> {
        Box::pin(async move {
            targets
                .iter()
                .map(|_| Err("no push certificate configured".to_string()))
                .collect()
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushSetupError {
    #[error("push certificate: {0}")]
    Certificate(String),
    #[error("push client: {0}")]
    Client(String),
}

/// The APNs body for an MDM push: exactly `{"mdm":"<PushMagic>"}`.
pub fn mdm_payload(push_magic: &str) -> String {
    serde_json::json!({ "mdm": push_magic }).to_string()
}

pub struct Apns {
    client: reqwest::Client,
    base_url: String,
}

impl Apns {
    /// `cert_pem`/`key_pem`: the MDM push certificate and key. `extra_root_pem`: trust this CA
    /// instead of the public roots (the simulated lab's APNs stand-in, tests).
    pub fn new(
        cert_pem: &[u8],
        key_pem: &[u8],
        base_url: &str,
        extra_root_pem: Option<&[u8]>,
    ) -> Result<Apns, PushSetupError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|_| PushSetupError::Certificate("not a PEM certificate".into()))?;
        if certs.is_empty() {
            return Err(PushSetupError::Certificate(
                "no certificate in the PEM".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|_| PushSetupError::Certificate("not a PEM private key".into()))?;
        let mut roots = rustls::RootCertStore::empty();
        match extra_root_pem {
            Some(pem) => {
                for c in CertificateDer::pem_slice_iter(pem) {
                    let c = c.map_err(|_| PushSetupError::Certificate("bad CA PEM".into()))?;
                    roots
                        .add(c)
                        .map_err(|e| PushSetupError::Certificate(e.to_string()))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| PushSetupError::Client(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|_| {
                PushSetupError::Certificate("key does not match the certificate".into())
            })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .http2_prior_knowledge()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| PushSetupError::Client(e.to_string()))?;
        Ok(Apns {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
        })
    }

    async fn push_one(&self, t: &PushTarget) -> PushResult {
        let hex: String = t.token.iter().map(|b| format!("{b:02x}")).collect();
        let mut req = self
            .client
            .post(format!("{}/3/device/{hex}", self.base_url))
            .header("apns-push-type", "mdm")
            .header("content-type", "application/json")
            .body(mdm_payload(&t.push_magic));
        if let Some(topic) = &t.topic {
            req = req.header("apns-topic", topic);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("APNs unreachable: {e}"))?;
        let status = resp.status();
        let apns_id = resp
            .headers()
            .get("apns-id")
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_string);
        if status.is_success() {
            return Ok(apns_id.unwrap_or_default());
        }
        let body = resp.text().await.unwrap_or_default();
        let reason = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["reason"].as_str().map(str::to_string))
            .unwrap_or(body);
        Err(format!("APNs {status}: {reason}"))
    }
}

impl PushProvider for Apns {
    fn push<'a>(&'a self, targets: &'a [PushTarget]) -> PushFuture<'a> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(targets.len());
            // HTTP/2 multiplexes; a few at a time keeps a 1 000-device push quick.
            for chunk in targets.chunks(64) {
                let futs = chunk.iter().map(|t| self.push_one(t));
                let mut set = Vec::new();
                for f in futs {
                    set.push(f);
                }
                for r in crate::join::join_all(set).await {
                    out.push(r);
                }
            }
            out
        })
    }
}

/// A provider shared by the server's handlers.
pub type SharedPush = Arc<dyn PushProvider>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_exactly_the_mdm_key() {
        assert_eq!(mdm_payload("abc-123"), r#"{"mdm":"abc-123"}"#);
        assert_eq!(mdm_payload("a\"b"), r#"{"mdm":"a\"b"}"#);
    }

    #[tokio::test]
    async fn no_push_reports_an_error_per_target() {
        let t = PushTarget {
            id: "U".into(),
            token: vec![1],
            push_magic: "m".into(),
            topic: None,
        };
        let r = NoPush.push(std::slice::from_ref(&t)).await;
        assert_eq!(r.len(), 1);
        assert!(r[0].as_ref().unwrap_err().contains("no push certificate"));
    }
}
