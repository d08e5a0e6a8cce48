//! A SCEP client (RFC 8894) as an iPhone runs it for the SCEP payload of its enrollment profile
//! (`com.apple.security.scep.yaml`: `URL`, `Challenge`, `Subject`): `GetCACaps`, `GetCACert`,
//! then a `PKCSReq` whose CSR carries the challenge, signed by a throw-away self-signed
//! certificate of the device key and encrypted to the CA; the `CertRep` is checked (signed by
//! the CA, same transaction, our nonce back) and opened with the device key.

use crate::mdm_server::cms::{self, Attribute, CmsError, Signer};
use crate::mdm_server::scep::{self, attr};
use base64::Engine;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ScepClientError {
    #[error("SCEP {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("SCEP {operation} answered HTTP {status}: {body}")]
    Status {
        operation: &'static str,
        status: u16,
        body: String,
    },
    #[error("SCEP server does not offer AES (GetCACaps: {0:?}); only AES is implemented")]
    NoAes(String),
    #[error("SCEP GetCACert: {0}")]
    CaCert(String),
    #[error("SCEP: {0}")]
    Cms(#[from] CmsError),
    #[error("SCEP: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("SCEP CertRep: {0}")]
    BadReply(String),
    #[error("SCEP request refused by the server (pkiStatus FAILURE, failInfo {0})")]
    Refused(String),
    #[error("SCEP request is pending manual approval; not supported")]
    Pending,
}

/// Where to get an identity and with which challenge (the SCEP payload's `URL`, `Challenge`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScepSettings {
    pub url: String,
    pub challenge: String,
}

/// An identity issued by SCEP: the certificate and its key, able to sign.
pub struct Issued {
    pub cert_der: Vec<u8>,
    pub signer: Signer,
}

async fn get(
    http: &reqwest::Client,
    url: &str,
    operation: &'static str,
) -> Result<(String, Vec<u8>), ScepClientError> {
    let full = format!("{url}?operation={operation}");
    let r = http
        .get(&full)
        .send()
        .await
        .map_err(|source| ScepClientError::Http {
            url: full.clone(),
            source,
        })?;
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = r
        .bytes()
        .await
        .map_err(|source| ScepClientError::Http { url: full, source })?
        .to_vec();
    if status != 200 {
        return Err(ScepClientError::Status {
            operation,
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    Ok((ct, body))
}

/// The certificate to encrypt to: the only one, or, with an RA (`application/x-x509-ca-ra-cert`,
/// a certificates-only SignedData, RFC 8894 §4.2.1.2), the first that is not a CA.
fn recipient(ct: &str, body: &[u8]) -> Result<Vec<u8>, ScepClientError> {
    use x509_parser::prelude::FromDer;
    if !ct.contains("ca-ra-cert") {
        return Ok(body.to_vec());
    }
    let certs = cms::parse_signed(body)?.certs;
    let not_ca = certs.iter().find(|c| {
        x509_parser::certificate::X509Certificate::from_der(c).is_ok_and(|(_, x)| !x.is_ca())
    });
    not_ca
        .or(certs.first())
        .cloned()
        .ok_or_else(|| ScepClientError::CaCert("no certificate in the answer".into()))
}

/// The challenge as a `challengePassword` attribute value set (RFC 2985 §5.4.1: a
/// DirectoryString; PrintableString when it fits, else UTF8String).
fn challenge_attribute(challenge: &str) -> rcgen::Attribute {
    let printable = challenge
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " '()+,-./:=?".contains(c));
    rcgen::Attribute {
        oid: cms::oid::CHALLENGE_PASSWORD,
        values: yasna::construct_der(|w| {
            w.write_set_of(|w| {
                if printable {
                    w.next().write_printable_string(challenge)
                } else {
                    w.next().write_utf8_string(challenge)
                }
            })
        }),
    }
}

/// Enroll `subject_cn` with the RSA key `key_pkcs8`: the issued certificate.
pub async fn enroll(
    http: &reqwest::Client,
    s: &ScepSettings,
    subject_cn: &str,
    key_pkcs8: &[u8],
) -> Result<Issued, ScepClientError> {
    let url = s.url.trim_end_matches('?');
    let (_, caps) = get(http, url, "GetCACaps").await?;
    let caps = String::from_utf8_lossy(&caps).into_owned();
    let has = |c: &str| caps.lines().any(|l| l.trim().eq_ignore_ascii_case(c));
    if !has("AES") && !has("SCEPStandard") {
        return Err(ScepClientError::NoAes(caps));
    }
    let (ct, body) = get(http, url, "GetCACert").await?;
    let ca = recipient(&ct, &body)?;
    let key = KeyPair::try_from(key_pkcs8)?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, subject_cn);
    p.distinguished_name = dn;
    let csr = p.serialize_request_with_attributes(&key, vec![challenge_attribute(&s.challenge)])?;
    let self_signed = p.self_signed(&key)?;
    let requester = Signer::new(self_signed.der().to_vec(), key_pkcs8)?;
    // transactionID: a hash of the public key, printable (RFC 8894 §3.2.1.1).
    let transaction: String = Sha256::digest(key.subject_public_key_info())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let sender_nonce = scep::nonce();
    let envelope = cms::encrypt(csr.der(), &ca)?;
    let msg = cms::sign(
        &requester,
        &envelope,
        false,
        &[
            Attribute::printable(attr::MESSAGE_TYPE, scep::PKCS_REQ),
            Attribute::printable(attr::TRANSACTION_ID, &transaction),
            Attribute::octets(attr::SENDER_NONCE, &sender_nonce),
        ],
        &[],
    )?;
    let reply = pki_operation(http, url, has("POSTPKIOperation"), msg).await?;
    let rep = cms::verify(&reply, None)?;
    let cert = open_cert_rep(&rep, &ca, &body, &transaction, &sender_nonce).and_then(|()| {
        let inner = cms::decrypt(&rep.content, &requester.cert_der, key_pkcs8)?;
        issued_for(&inner, &key.subject_public_key_info())
    })?;
    Ok(Issued {
        signer: Signer::new(cert.clone(), key_pkcs8)?,
        cert_der: cert,
    })
}

async fn pki_operation(
    http: &reqwest::Client,
    url: &str,
    post: bool,
    msg: Vec<u8>,
) -> Result<Vec<u8>, ScepClientError> {
    let req = if post {
        http.post(format!("{url}?operation=PKIOperation"))
            .header("content-type", "application/x-pki-message")
            .body(msg)
    } else {
        // GET carries the message base64, URL-escaped (RFC 8894 §4.1).
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(&msg)
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        http.get(format!("{url}?operation=PKIOperation&message={b64}"))
    };
    let r = req.send().await.map_err(|source| ScepClientError::Http {
        url: url.to_string(),
        source,
    })?;
    let status = r.status().as_u16();
    let body = r
        .bytes()
        .await
        .map_err(|source| ScepClientError::Http {
            url: url.to_string(),
            source,
        })?
        .to_vec();
    if status != 200 {
        return Err(ScepClientError::Status {
            operation: "PKIOperation",
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    Ok(body)
}

/// A CertRep must come from the CA (or its RA), answer our transaction and nonce, and say
/// SUCCESS.
fn open_cert_rep(
    rep: &cms::Verified,
    ca: &[u8],
    ca_answer: &[u8],
    transaction: &str,
    sender_nonce: &[u8],
) -> Result<(), ScepClientError> {
    let from_ca = rep.signer_cert == ca
        || cms::parse_signed(ca_answer).is_ok_and(|sd| sd.certs.contains(&rep.signer_cert))
        || rep.signer_cert == ca_answer;
    if !from_ca {
        return Err(ScepClientError::BadReply(
            "not signed by the CA that GetCACert returned".into(),
        ));
    }
    let text = |id: &[u64]| rep.attr(id).and_then(scep::printable);
    if text(attr::MESSAGE_TYPE).as_deref() != Some(scep::CERT_REP) {
        return Err(ScepClientError::BadReply(
            "messageType is not CertRep".into(),
        ));
    }
    if text(attr::TRANSACTION_ID).as_deref() != Some(transaction) {
        return Err(ScepClientError::BadReply("another transaction".into()));
    }
    if rep
        .attr(attr::RECIPIENT_NONCE)
        .and_then(scep::octets)
        .as_deref()
        != Some(sender_nonce)
    {
        return Err(ScepClientError::BadReply(
            "recipientNonce is not our senderNonce".into(),
        ));
    }
    match text(attr::PKI_STATUS).as_deref() {
        Some(scep::SUCCESS) => Ok(()),
        Some(scep::FAILURE) => Err(ScepClientError::Refused(
            text(attr::FAIL_INFO).unwrap_or_else(|| "absent".into()),
        )),
        Some("3") => Err(ScepClientError::Pending),
        other => Err(ScepClientError::BadReply(format!("pkiStatus {other:?}"))),
    }
}

/// The certificate for our key in a certificates-only SignedData.
fn issued_for(degenerate: &[u8], public_key_der: &[u8]) -> Result<Vec<u8>, ScepClientError> {
    use x509_parser::prelude::FromDer;
    cms::parse_signed(degenerate)?
        .certs
        .into_iter()
        .find(|c| {
            x509_parser::certificate::X509Certificate::from_der(c)
                .is_ok_and(|(_, x)| x.public_key().raw == public_key_der)
        })
        .ok_or_else(|| ScepClientError::BadReply("no certificate for our key".into()))
}
