//! Device identity on the MDM connection.
//!
//! Simulated devices present a per-device client certificate in a header, as NanoMDM's
//! `-cert-header` mode takes it (brief mdm.md §5.1): RFC 9440 form `:<base64 DER>:` or a
//! URL-escaped PEM. Authenticate binds the certificate (its SHA-256 fingerprint) to the
//! enrollment; every later message must present the same one. A certificate bound to one
//! enrollment never authenticates another, and a new certificate at Authenticate re-binds the
//! UDID (recorded): the rules of NanoMDM's cert-auth middleware, see
//! `http::bind_at_authenticate`. With a CA configured the
//! certificate must also chain to it for client authentication. Real devices sign with
//! `Mdm-Signature` (a CMS detached signature) instead: see [`super::device_auth`].

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("no client certificate in header {0}")]
    Missing(String),
    #[error("client certificate header is neither :base64 DER: nor a URL-escaped PEM")]
    Malformed,
    #[error("Mdm-Signature does not verify: {0}")]
    BadSignature(String),
    #[error("client certificate is not trusted: {0}")]
    Untrusted(String),
    #[error("client certificate does not match the one bound to {0} at Authenticate")]
    Mismatch(String),
    #[error("{0} has not authenticated (no Authenticate check-in)")]
    NotEnrolled(String),
    #[error(
        "client certificate is bound to another enrollment; it cannot authenticate {udid} (one certificate, one enrollment)"
    )]
    BoundElsewhere { udid: String },
}

/// Where a message's identity came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// A certificate passed by a TLS terminator (or a simulated device) in a header.
    CertHeader { der: Vec<u8> },
    /// Not configured: identities are not checked (a bench behind its own TLS terminator).
    Unchecked,
}

/// Parse the header value: RFC 9440 `:<base64>:` or a URL-escaped PEM.
pub fn parse_cert_header(value: &str) -> Result<Vec<u8>, IdentityError> {
    let v = value.trim();
    if let Some(inner) = v.strip_prefix(':').and_then(|x| x.strip_suffix(':')) {
        return base64::engine::general_purpose::STANDARD
            .decode(inner)
            .map_err(|_| IdentityError::Malformed);
    }
    let pem = percent_decode(v).ok_or(IdentityError::Malformed)?;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|_| IdentityError::Malformed)
}

/// RFC 9440 header value for a DER certificate.
pub fn cert_header_value(der: &[u8]) -> String {
    format!(
        ":{}:",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

/// The same certificate as a URL-escaped PEM, the form nginx's `$ssl_client_escaped_cert` passes
/// and NanoMDM before v0.8 reads (`url.QueryUnescape`, then `pem.Decode`): every byte but the
/// RFC 3986 unreserved ones is `%XX`, so base64's `+`, `/` and `=` survive a decoder that reads
/// `+` as a space.
pub fn escaped_pem_header_value(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let mut out = String::with_capacity(pem.len() * 2);
    for b in pem.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Trust anchors for device identity certificates.
pub struct IdentityCa {
    roots: Vec<CertificateDer<'static>>,
}

impl IdentityCa {
    pub fn from_pem(pem: &[u8]) -> Result<IdentityCa, String> {
        let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|_| "identity CA: not a PEM certificate".to_string())?;
        if roots.is_empty() {
            return Err("identity CA: no certificate in the PEM".into());
        }
        Ok(IdentityCa { roots })
    }

    /// The certificate must chain to the CA and allow client authentication (NanoMDM requires
    /// `ExtKeyUsageClientAuth`).
    pub fn verify(&self, der: &[u8]) -> Result<(), IdentityError> {
        let untrusted = |e: String| IdentityError::Untrusted(e);
        let anchors = self
            .roots
            .iter()
            .map(|r| webpki::anchor_from_trusted_cert(r).map_err(|e| untrusted(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let cert = CertificateDer::from(der.to_vec());
        let ee = webpki::EndEntityCert::try_from(&cert).map_err(|e| untrusted(e.to_string()))?;
        let provider = crate::tls::provider();
        ee.verify_for_usage(
            provider.signature_verification_algorithms.all,
            &anchors,
            &[],
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map(|_| ())
        .map_err(|e| untrusted(format!("{e:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        PKCS_ECDSA_P256_SHA256,
    };

    fn ca() -> (rcgen::Certificate, CertificateParams, KeyPair) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let c = p.self_signed(&key).unwrap();
        (c, p, key)
    }

    #[test]
    fn header_forms_and_chain_check() {
        let (ca_cert, ca_params, ca_key) = ca();
        let issuer = Issuer::new(ca_params, &ca_key);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let dev = p.signed_by(&key, &issuer).unwrap();

        let der = dev.der().to_vec();
        assert_eq!(parse_cert_header(&cert_header_value(&der)).unwrap(), der);
        let escaped = dev
            .pem()
            .replace('\n', "%0A")
            .replace(' ', "%20")
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        assert_eq!(parse_cert_header(&escaped).unwrap(), der);
        let ours = escaped_pem_header_value(&der);
        assert!(
            ours.starts_with("-----BEGIN%20CERTIFICATE-----%0A"),
            "{ours}"
        );
        assert!(!ours.contains(['+', '/', '=', ' ', '\n']), "{ours}");
        assert_eq!(parse_cert_header(&ours).unwrap(), der);
        assert_eq!(parse_cert_header("garbage"), Err(IdentityError::Malformed));

        let trusted = IdentityCa::from_pem(ca_cert.pem().as_bytes()).unwrap();
        trusted.verify(&der).unwrap();
        let (other, _, _) = ca();
        let stranger = IdentityCa::from_pem(other.pem().as_bytes()).unwrap();
        assert!(matches!(
            stranger.verify(&der),
            Err(IdentityError::Untrusted(_))
        ));
        assert_eq!(fingerprint(&der).len(), 64);
    }
}
