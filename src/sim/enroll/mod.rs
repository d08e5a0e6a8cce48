//! How a simulated device proves who it is to its MDM, as a real iPhone does from its
//! enrollment profile (brief mdm.md §4; `mdm/profiles/com.apple.mdm.yaml`, `SignMessage`;
//! `com.apple.security.scep.yaml`).
//!
//! - [`Credential::Scep`], the default with the embedded server: at enrollment the device gets
//!   its identity certificate by SCEP (a CSR with the challenge; [`scep_client`]) and keeps it;
//!   every check-in and command body then carries `Mdm-Signature`, the base64 of a detached CMS
//!   SignedData over the body by that identity (what `SignMessage: true` makes an iPhone do).
//! - [`Credential::CertHeader`]: a certificate made by the simulator's own CA, sent in a header
//!   as a TLS terminator would pass it (NanoMDM `-cert-header`); for servers behind a proxy.

pub mod profile;
pub mod scep_client;

use crate::mdm_server::cms;
use scep_client::{Issued, ScepSettings};
use std::sync::OnceLock;

/// The header of the detached CMS signature (brief mdm.md §4, NanoMDM `Mdm-Signature`).
pub const MDM_SIGNATURE_HEADER: &str = "Mdm-Signature";

/// How the simulated devices get their identity (`lab sim serve` flags).
#[derive(Debug, Clone, Default)]
pub struct EnrollOptions {
    /// Send a simulator-made certificate in a header instead of enrolling by SCEP (the form for
    /// NanoMDM `-cert-header` behind a proxy). Without an SCEP server to use, an external MDM
    /// gets this form anyway.
    pub cert_header: bool,
    /// How the header carries the certificate when [`EnrollOptions::cert_header`] applies.
    pub cert_header_form: CertHeaderForm,
    /// The SCEP server and challenge of an external MDM (the embedded one offers its own).
    pub scep: Option<ScepSettings>,
    /// The MDM payload's `ServerURL` and `CheckInURL` (an external MDM; without them the
    /// devices use `{base}/mdm` for both, NanoMDM's combined endpoint).
    pub urls: Option<MdmUrls>,
    /// The MDM payload's `Topic`, when a profile names it.
    pub topic: Option<String>,
    /// The embedded MDM serves TLS and asks for the identity as client certificate (mutual
    /// TLS); SCEP only.
    pub mtls: bool,
}

/// The two forms a TLS terminator passes a client certificate in (NanoMDM `-cert-header`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CertHeaderForm {
    /// RFC 9440 `:<base64 DER>:` (NanoMDM v0.8 and later; Envoy, Cloudflare).
    #[default]
    Rfc9440,
    /// A URL-escaped PEM (nginx `$ssl_client_escaped_cert`; NanoMDM before v0.8).
    EscapedPem,
}

impl CertHeaderForm {
    /// The header value for a DER certificate in this form.
    pub fn value(self, der: &[u8]) -> String {
        match self {
            CertHeaderForm::Rfc9440 => crate::mdm_server::identity::cert_header_value(der),
            CertHeaderForm::EscapedPem => {
                crate::mdm_server::identity::escaped_pem_header_value(der)
            }
        }
    }
}

/// Where check-ins and command results go (brief mdm.md §4: check-ins to `CheckInURL`, or
/// `ServerURL` if unset; MicroMDM has only `/mdm/checkin` and `/mdm/connect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdmUrls {
    pub server_url: String,
    pub checkin_url: Option<String>,
}

impl EnrollOptions {
    /// What an enrollment profile says: its URLs, topic and SCEP payload.
    pub fn from_profile(p: profile::EnrollmentProfile) -> EnrollOptions {
        EnrollOptions {
            cert_header: false,
            cert_header_form: CertHeaderForm::default(),
            scep: p.scep,
            urls: Some(MdmUrls {
                server_url: p.server_url,
                checkin_url: p.checkin_url,
            }),
            topic: p.topic,
            mtls: false,
        }
    }
}

/// A device's identity on the MDM connection.
pub enum Credential {
    /// The value (in a [`CertHeaderForm`]) of the header carrying a simulator-made certificate.
    CertHeader(String),
    /// An identity obtained by SCEP at enrollment, signing every body.
    Scep {
        settings: ScepSettings,
        /// The device's RSA key (PKCS#8).
        key_pkcs8: Vec<u8>,
        issued: Box<OnceLock<Issued>>,
    },
}

impl Credential {
    pub fn scep(settings: ScepSettings, key_pkcs8: Vec<u8>) -> Credential {
        Credential::Scep {
            settings,
            key_pkcs8,
            issued: Box::default(),
        }
    }

    /// Get the identity if this credential needs one and has none yet (SCEP, once).
    pub async fn ensure(&self, http: &reqwest::Client, subject_cn: &str) -> Result<(), String> {
        let Credential::Scep {
            settings,
            key_pkcs8,
            issued,
        } = self
        else {
            return Ok(());
        };
        if issued.get().is_some() {
            return Ok(());
        }
        let got = scep_client::enroll(http, settings, subject_cn, key_pkcs8)
            .await
            .map_err(|e| e.to_string())?;
        let _ = issued.set(got);
        Ok(())
    }

    /// The identity certificate, once there is one.
    pub fn certificate(&self) -> Option<&[u8]> {
        match self {
            Credential::CertHeader(_) => None,
            Credential::Scep { issued, .. } => issued.get().map(|i| i.cert_der.as_slice()),
        }
    }

    /// The header that identifies the device on a message with this body.
    pub fn header(&self, body: &[u8]) -> Result<(&'static str, String), String> {
        match self {
            Credential::CertHeader(v) => Ok((super::mdm_device::CERT_HEADER, v.clone())),
            Credential::Scep { issued, .. } => {
                let id = issued
                    .get()
                    .ok_or("no identity yet: SCEP enrollment has not succeeded")?;
                Ok((MDM_SIGNATURE_HEADER, mdm_signature(id, body)?))
            }
        }
    }
}

impl Credential {
    /// The identity as a TLS client certificate and key (PKCS#8), once SCEP gave one.
    pub fn tls_identity(&self) -> Option<(&[u8], &[u8])> {
        match self {
            Credential::CertHeader(_) => None,
            Credential::Scep {
                key_pkcs8, issued, ..
            } => issued
                .get()
                .map(|i| (i.cert_der.as_slice(), key_pkcs8.as_slice())),
        }
    }
}

/// An HTTP client for an MDM served over TLS by a server whose certificate chains to
/// `server_ca` (DER), presenting `identity` (certificate DER, key PKCS#8) when the server asks.
pub fn tls_client(
    server_ca: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<reqwest::Client, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(server_ca.to_vec()))
        .map_err(|e| e.to_string())?;
    let b = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => b
            .with_client_auth_cert(
                vec![CertificateDer::from(cert.to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec())),
            )
            .map_err(|e| e.to_string())?,
        None => b.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(std::time::Duration::from_secs(15))
        .pool_idle_timeout(DEVICE_IDLE_CONNECTION)
        .build()
        .map_err(|e| e.to_string())
}

/// How long a simulated device keeps its connection to the MDM after a request (real time). A
/// device talks to its MDM in short sessions (a wake, then requests back to back until the
/// queue is empty) and holds no connection between them; a pooled connection kept for the
/// client's usual 20 s made a 10 000-device lab hold 20 000 descriptors in one process (the
/// devices' ends and the embedded server's), past a common limit (issue 16).
pub const DEVICE_IDLE_CONNECTION: std::time::Duration = std::time::Duration::from_millis(200);

/// `Mdm-Signature` for a body: base64 of a detached SignedData by the identity.
pub fn mdm_signature(id: &Issued, body: &[u8]) -> Result<String, String> {
    use base64::Engine;
    let sd = cms::sign(&id.signer, body, true, &[], &[]).map_err(|e| e.to_string())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(sd))
}

/// RSA-2048 device keys (PKCS#8), at most [`super::identity::KEY_POOL`] of them, shared
/// round-robin: key generation is the slow part, and each device still gets its own
/// certificate (blocking; call from `spawn_blocking`).
pub fn device_keys(devices: usize) -> Result<Vec<Vec<u8>>, rcgen::Error> {
    let n = devices.clamp(1, super::identity::KEY_POOL);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).map(|k| k.serialize_der())
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("key generation thread"))
            .collect()
    })
}
