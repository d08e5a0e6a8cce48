//! The embedded MDM's SCEP server (RFC 8894), where devices get their identity certificate as
//! a real iPhone does from the SCEP payload of its enrollment profile
//! (`com.apple.security.scep.yaml`: `URL`, `Challenge`, `Subject`, `Keysize`).
//!
//! `GET|POST /scep?operation=…`: `GetCACaps` (RFC 8894 §3.5.2), `GetCACert` (§4.2, one
//! certificate, DER), `PKIOperation` (§4.3; POST body or GET `message=` base64) with a
//! `PKCSReq`: a SignedData by the requester's self-signed certificate, wrapping an EnvelopedData
//! for this CA that holds the CSR. The CSR's `challengePassword` must be the configured
//! challenge. The answer is a `CertRep` signed by the CA, `pkiStatus` SUCCESS with the issued
//! certificate (a certificates-only SignedData encrypted to the requester's certificate), or
//! FAILURE with a `failInfo`. Issued certificates name the CSR's subject and allow client
//! authentication (NanoMDM requires `ExtKeyUsageClientAuth`, brief mdm.md §5.1).

use super::cms::{self, Attribute, CmsError, Signer};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_RSA_SHA256,
    SerialNumber,
};
use std::sync::atomic::{AtomicU64, Ordering};

/// Path of the SCEP endpoint on the embedded server.
pub const SCEP_PATH: &str = "/scep";

/// What `GetCACaps` answers: AES content encryption, POST for PKIOperation, SHA-256, and the
/// RFC 8894 baseline (§3.5.2).
pub const CAPS: &str = "AES\nPOSTPKIOperation\nSHA-256\nSCEPStandard\n";

/// SCEP's signed attributes (RFC 8894 §3.2.1, arc 2.16.840.1.113733.1.9).
pub mod attr {
    pub const MESSAGE_TYPE: &[u64] = &[2, 16, 840, 1, 113733, 1, 9, 2];
    pub const PKI_STATUS: &[u64] = &[2, 16, 840, 1, 113733, 1, 9, 3];
    pub const FAIL_INFO: &[u64] = &[2, 16, 840, 1, 113733, 1, 9, 4];
    pub const SENDER_NONCE: &[u64] = &[2, 16, 840, 1, 113733, 1, 9, 5];
    pub const RECIPIENT_NONCE: &[u64] = &[2, 16, 840, 1, 113733, 1, 9, 6];
    pub const TRANSACTION_ID: &[u64] = &[2, 16, 840, 1, 113733, 1, 9, 7];
}

/// `messageType` values (RFC 8894 §3.2.1.2).
pub const CERT_REP: &str = "3";
pub const RENEWAL_REQ: &str = "17";
pub const PKCS_REQ: &str = "19";
/// `pkiStatus` values (§3.2.1.3).
pub const SUCCESS: &str = "0";
pub const FAILURE: &str = "2";
/// `failInfo` values (§3.2.1.4).
pub const BAD_MESSAGE_CHECK: &str = "1";
pub const BAD_REQUEST: &str = "2";

#[derive(Debug, thiserror::Error)]
pub enum ScepError {
    #[error("SCEP message: {0}")]
    Cms(#[from] CmsError),
    #[error("SCEP certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("SCEP message lacks its {0} attribute")]
    MissingAttribute(&'static str),
    #[error("unsupported SCEP messageType {0}")]
    MessageType(String),
}

/// A refused request, answered as a `CertRep` FAILURE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub fail_info: &'static str,
    pub reason: String,
}

/// The CA that answers SCEP and whose certificates the server trusts as device identities.
pub struct ScepCa {
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    challenge: String,
    issuer: Issuer<'static, KeyPair>,
    signer: Signer,
    key_pkcs8: Vec<u8>,
    serial: AtomicU64,
}

/// Read a PrintableString attribute value.
pub fn printable(v: &[u8]) -> Option<String> {
    yasna::parse_der(v, |r| r.read_printable_string()).ok()
}

/// Read an OCTET STRING attribute value.
pub fn octets(v: &[u8]) -> Option<Vec<u8>> {
    yasna::parse_der(v, |r| r.read_bytes()).ok()
}

/// Random bytes for nonces.
pub fn nonce() -> Vec<u8> {
    let mut n = vec![0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut n);
    n
}

impl ScepCa {
    /// A new RSA-2048 CA (RSA: requesters encrypt their CSR to it, RFC 8894 §3.1) that
    /// accepts `challenge`.
    pub fn generate(name: &str, challenge: String) -> Result<ScepCa, ScepError> {
        let key = KeyPair::generate_for(&PKCS_RSA_SHA256)?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = p.self_signed(&key)?;
        let signer = Signer::new(cert.der().to_vec(), &key.serialize_der())?;
        Ok(ScepCa {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            challenge,
            key_pkcs8: key.serialize_der(),
            issuer: Issuer::new(p, key),
            signer,
            serial: AtomicU64::new(1),
        })
    }

    /// Answer a PKIOperation message: a `CertRep`, SUCCESS or FAILURE. An error means the
    /// message could not be read as SCEP at all (HTTP 400).
    pub fn pki_operation(&self, msg: &[u8]) -> Result<Vec<u8>, ScepError> {
        let req = cms::verify(msg, None)?;
        let get =
            |id: &[u64], name: &'static str| req.attr(id).ok_or(ScepError::MissingAttribute(name));
        let message_type = printable(get(attr::MESSAGE_TYPE, "messageType")?).unwrap_or_default();
        let transaction = printable(get(attr::TRANSACTION_ID, "transactionID")?)
            .ok_or(ScepError::MissingAttribute("transactionID"))?;
        let sender_nonce = octets(get(attr::SENDER_NONCE, "senderNonce")?)
            .ok_or(ScepError::MissingAttribute("senderNonce"))?;
        if message_type != PKCS_REQ && message_type != RENEWAL_REQ {
            return Err(ScepError::MessageType(message_type));
        }
        let outcome = cms::decrypt(&req.content, &self.cert_der, &self.key_pkcs8)
            .map_err(|e| Refusal {
                fail_info: BAD_MESSAGE_CHECK,
                reason: format!("cannot open the request: {e}"),
            })
            .and_then(|csr| self.issue(&csr));
        let mut attrs = vec![
            Attribute::printable(attr::MESSAGE_TYPE, CERT_REP),
            Attribute::printable(attr::TRANSACTION_ID, &transaction),
            Attribute::octets(attr::RECIPIENT_NONCE, &sender_nonce),
            Attribute::octets(attr::SENDER_NONCE, &nonce()),
        ];
        let content = match outcome {
            Ok(cert) => {
                attrs.push(Attribute::printable(attr::PKI_STATUS, SUCCESS));
                let degenerate = cms::certs_only(&[cert]);
                cms::encrypt(&degenerate, &req.signer_cert)?
            }
            Err(refusal) => {
                tracing::warn!(%transaction, reason = %refusal.reason, "SCEP request refused");
                attrs.push(Attribute::printable(attr::PKI_STATUS, FAILURE));
                attrs.push(Attribute::printable(attr::FAIL_INFO, refusal.fail_info));
                Vec::new()
            }
        };
        Ok(cms::sign(&self.signer, &content, false, &attrs, &[])?)
    }

    /// Issue a certificate for a CSR whose challenge matches.
    fn issue(&self, csr_der: &[u8]) -> Result<Vec<u8>, Refusal> {
        use x509_parser::prelude::FromDer;
        let bad = |reason: String| Refusal {
            fail_info: BAD_REQUEST,
            reason,
        };
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
                .map_err(|e| bad(format!("not a CSR: {e}")))?;
        let challenge = csr
            .certification_request_info
            .attributes()
            .iter()
            .find_map(|a| match a.parsed_attribute() {
                x509_parser::cri_attributes::ParsedCriAttribute::ChallengePassword(c) => {
                    Some(c.0.clone())
                }
                _ => None,
            });
        let ok = challenge
            .as_deref()
            .is_some_and(|c| constant_time_eq(c.as_bytes(), self.challenge.as_bytes()));
        if !ok {
            return Err(bad("wrong or missing challenge password".into()));
        }
        let mut req = CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())
            .map_err(|e| bad(format!("CSR refused: {e}")))?;
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        req.params.serial_number = Some(SerialNumber::from(n.to_be_bytes().to_vec()));
        req.params.is_ca = IsCa::ExplicitNoCa;
        req.params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        req.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        // From yesterday (clock skew) for a year.
        use chrono::Datelike;
        let ymd =
            |d: chrono::NaiveDate| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
        let today = chrono::Utc::now().date_naive();
        req.params.not_before = ymd(today.pred_opt().unwrap_or(today));
        req.params.not_after = ymd(today
            .checked_add_days(chrono::Days::new(365))
            .unwrap_or(today));
        let cert = req
            .signed_by(&self.issuer)
            .map_err(|e| bad(format!("issuing: {e}")))?;
        Ok(cert.der().to_vec())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
