//! TLS for lockdown sessions, client and simulated-device server.
//!
//! One crypto provider (aws-lc-rs) is passed explicitly to every config: installing a
//! process-wide default clashes when two providers are linked (brief §5.4).
//!
//! Devices present self-signed certificates and no host client verifies them (libimobiledevice
//! `SSL_set_verify(ssl, 0)`, pymobiledevice3 `CERT_NONE`, brief §5.3), so the client's verifier
//! accepts any certificate. The simulated device does not request a client certificate:
//! libimobiledevice presents a SHA-1, serial-0, empty-DN root certificate that strict verifiers
//! reject (brief §5.3).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("pair record: {0} is not a PEM certificate")]
    BadCertificate(&'static str),
    #[error("pair record: {0} is not a PEM private key")]
    BadKey(&'static str),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Client config for a lockdown session: present the pair record's host certificate, accept any
/// server certificate. TLS 1.2 and 1.3 (rustls has nothing older, so iOS < 5 is out of reach).
///
/// Every pair record of a host carries the same host certificate and key, and reading an RSA
/// key checks it (aws-lc's `RSA_check_key`): a fifth of a 1 000-device probe's CPU when it was
/// done once per device (issue 16). So the config is made once per (certificate, key) and
/// shared; what identifies an entry is a SHA-256 of both, kept in memory only. The shared
/// config remembers no TLS session: each device is a different server behind the same SNI
/// (`Device`), so a resumption attempt would only ever be offered to the wrong one, and the
/// ClientHello stays the one a fresh config sends.
pub fn client_config(
    host_cert_pem: &[u8],
    host_key_pem: &[u8],
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    /// Hosts a process talks to (a bench has one; tests a few): beyond it, no new entries.
    const MAX_ENTRIES: usize = 32;
    static CONFIGS: OnceLock<Mutex<HashMap<[u8; 32], Arc<ClientConfig>>>> = OnceLock::new();
    let mut h = Sha256::new();
    h.update((host_cert_pem.len() as u64).to_le_bytes());
    h.update(host_cert_pem);
    h.update(host_key_pem);
    let id: [u8; 32] = h.finalize().into();
    let cache = CONFIGS.get_or_init(Mutex::default);
    if let Some(c) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
        return Ok(c.clone());
    }
    let config = Arc::new(build_client_config(host_cert_pem, host_key_pem)?);
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() < MAX_ENTRIES {
        map.insert(id, config.clone());
    }
    Ok(config)
}

fn build_client_config(
    host_cert_pem: &[u8],
    host_key_pem: &[u8],
) -> Result<ClientConfig, TlsSetupError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(host_cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsSetupError::BadCertificate("HostCertificate"))?;
    if certs.is_empty() {
        return Err(TlsSetupError::BadCertificate("HostCertificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(host_key_pem)
        .map_err(|_| TlsSetupError::BadKey("HostPrivateKey"))?;
    let provider = provider();
    let verifier = Arc::new(AcceptAnyDeviceCertificate {
        provider: provider.clone(),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certs, key)
        // The error text of a key mismatch may quote key material; keep it out of messages.
        .map_err(|_| TlsSetupError::BadKey("HostPrivateKey (does not match HostCertificate)"))?;
    config.resumption = rustls::client::Resumption::in_memory_sessions(0);
    Ok(config)
}

/// Server config for a simulated device's lockdownd.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsSetupError> {
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(cert_chain, key)
        .map_err(TlsSetupError::Config)
}

/// The name the client puts in SNI; devices ignore it (brief §5.4).
pub fn device_server_name() -> ServerName<'static> {
    ServerName::try_from("Device").expect("static name is valid")
}

#[derive(Debug)]
struct AcceptAnyDeviceCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyDeviceCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `n` random bytes from the crypto provider's CSPRNG.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    provider()
        .secure_random
        .fill(&mut b)
        .expect("the system CSPRNG is available");
    b
}

/// A random secret as 32 hex characters (API keys of simulated labs).
pub fn random_secret() -> String {
    random_bytes(16)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_identity() -> (Vec<u8>, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["host".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
    }

    /// One config per host identity (the key is read and checked once), another for another
    /// identity; a bad pair record is refused every time.
    #[test]
    fn one_client_config_per_host_identity() {
        let (cert_a, key_a) = host_identity();
        let (cert_b, key_b) = host_identity();
        let a1 = client_config(&cert_a, &key_a).unwrap();
        let a2 = client_config(&cert_a, &key_a).unwrap();
        let b = client_config(&cert_b, &key_b).unwrap();
        assert!(Arc::ptr_eq(&a1, &a2));
        assert!(!Arc::ptr_eq(&a1, &b));
        assert!(a1.client_auth_cert_resolver.has_certs());
        // A key that does not match the certificate is refused, every time (never cached).
        for _ in 0..2 {
            assert!(matches!(
                client_config(&cert_a, &key_b),
                Err(TlsSetupError::BadKey(_))
            ));
        }
        assert!(matches!(
            client_config(b"not pem", &key_a),
            Err(TlsSetupError::BadCertificate(_))
        ));
    }
}
