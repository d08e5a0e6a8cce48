//! The parts of CMS (RFC 5652) that device enrollment needs: SignedData (attached, detached and
//! certificates-only) and EnvelopedData with RSA key transport.
//!
//! Two users: SCEP (RFC 8894 §3: a pkiMessage is a SignedData whose content is an
//! EnvelopedData) and `Mdm-Signature` (brief mdm.md §4: a base64 detached SignedData over the
//! body, made by the device identity when the MDM payload says `SignMessage`,
//! `mdm/profiles/com.apple.mdm.yaml`). Encoding is DER; decoding accepts BER, since a device's
//! CMS may use indefinite lengths. Keys are RSA for signing and key transport (what SCEP needs
//! to send the certificate back encrypted); signatures by ECDSA keys are verified too.

use aws_lc_rs::cipher::{
    AES_128, AES_192, AES_256, DecryptionContext, PaddedBlockDecryptingKey,
    PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{
    Pkcs1PrivateDecryptingKey, Pkcs1PublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
};
use aws_lc_rs::signature::{self, RsaKeyPair, UnparsedPublicKey};
use yasna::models::ObjectIdentifier;
use yasna::{ASN1Error, BERReader, DERWriter, Tag};

/// Object identifiers (RFC 5652 §4–6, RFC 8894 §3.2.1, RFC 2985, RFC 3565, RFC 8017).
pub mod oid {
    pub const DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 1];
    pub const SIGNED_DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 2];
    pub const ENVELOPED_DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 3];
    pub const CONTENT_TYPE: &[u64] = &[1, 2, 840, 113549, 1, 9, 3];
    pub const MESSAGE_DIGEST: &[u64] = &[1, 2, 840, 113549, 1, 9, 4];
    pub const CHALLENGE_PASSWORD: &[u64] = &[1, 2, 840, 113549, 1, 9, 7];
    pub const SHA1: &[u64] = &[1, 3, 14, 3, 2, 26];
    pub const SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];
    pub const SHA384: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 2];
    pub const SHA512: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 3];
    pub const RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
    pub const EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
    pub const AES128_CBC: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 1, 2];
    pub const AES192_CBC: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 1, 22];
    pub const AES256_CBC: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 1, 42];
}

#[derive(Debug, thiserror::Error)]
pub enum CmsError {
    #[error("malformed CMS: {0}")]
    Asn1(#[from] ASN1Error),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("private key rejected: {0}")]
    Key(String),
    #[error("expected CMS {expected}, found another content type")]
    ContentType { expected: &'static str },
    #[error("the SignedData has no signer")]
    NoSigner,
    #[error("the signer's certificate is not in the SignedData")]
    SignerCertificateMissing,
    #[error("the signed message digest does not match the content")]
    DigestMismatch,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("a detached signature needs the content it signs")]
    NoContent,
    #[error("unsupported algorithm {0}")]
    Unsupported(String),
    #[error("the EnvelopedData is not encrypted to this certificate")]
    NotForUs,
    #[error("cryptographic failure ({0})")]
    Crypto(&'static str),
}

fn o(c: &[u64]) -> ObjectIdentifier {
    ObjectIdentifier::from_slice(c)
}

fn is(id: &ObjectIdentifier, c: &[u64]) -> bool {
    id.components().as_slice() == c
}

/// A DER TLV with a one-byte tag (for pieces copied from a certificate as they are).
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// What CMS needs from a certificate.
struct CertInfo {
    /// DER of `IssuerAndSerialNumber` (RFC 5652 §10.2.4), the signer and recipient identifier.
    issuer_and_serial: Vec<u8>,
    /// DER `SubjectPublicKeyInfo`.
    spki: Vec<u8>,
    key_algorithm: Vec<u64>,
    /// The BIT STRING content: PKCS#1 `RSAPublicKey` or an EC point.
    public_key: Vec<u8>,
}

fn cert_info(der: &[u8]) -> Result<CertInfo, CmsError> {
    use x509_parser::prelude::FromDer;
    let (_, c) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| CmsError::Certificate(e.to_string()))?;
    let mut ias = c.tbs_certificate.issuer.as_raw().to_vec();
    ias.extend(tlv(0x02, c.tbs_certificate.raw_serial()));
    let pk = c.public_key();
    Ok(CertInfo {
        issuer_and_serial: tlv(0x30, &ias),
        spki: pk.raw.to_vec(),
        key_algorithm: pk
            .algorithm
            .algorithm
            .iter()
            .map(|i| i.collect())
            .unwrap_or_default(),
        public_key: pk.subject_public_key.data.to_vec(),
    })
}

/// One signed attribute: its type and the DER of its single value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub oid: Vec<u64>,
    pub value: Vec<u8>,
}

impl Attribute {
    pub fn new(oid: &[u64], value: Vec<u8>) -> Attribute {
        Attribute {
            oid: oid.to_vec(),
            value,
        }
    }
    pub fn printable(oid: &[u64], s: &str) -> Attribute {
        Attribute::new(oid, yasna::construct_der(|w| w.write_printable_string(s)))
    }
    pub fn octets(oid: &[u64], b: &[u8]) -> Attribute {
        Attribute::new(oid, yasna::construct_der(|w| w.write_bytes(b)))
    }
}

/// A certificate and its RSA key (PKCS#8), able to sign.
pub struct Signer {
    pub cert_der: Vec<u8>,
    key: RsaKeyPair,
    info: CertInfo,
}

impl Signer {
    pub fn new(cert_der: Vec<u8>, key_pkcs8: &[u8]) -> Result<Signer, CmsError> {
        let key = RsaKeyPair::from_pkcs8(key_pkcs8).map_err(|e| CmsError::Key(e.to_string()))?;
        let info = cert_info(&cert_der)?;
        Ok(Signer {
            cert_der,
            key,
            info,
        })
    }
}

fn write_alg(w: DERWriter, id: &[u64], null_params: bool) {
    w.write_sequence(|w| {
        w.next().write_oid(&o(id));
        if null_params {
            w.next().write_null();
        }
    });
}

fn write_attrs(w: DERWriter, attrs: &[Attribute]) {
    w.write_set_of(|w| {
        for a in attrs {
            w.next().write_sequence(|w| {
                w.next().write_oid(&o(&a.oid));
                w.next().write_set_of(|w| w.next().write_der(&a.value));
            });
        }
    });
}

/// SignedData over `content` by `signer` (SHA-256, RSA PKCS#1 v1.5), with the signed
/// attributes contentType (id-data), messageDigest and `extra`; the content is left out when
/// `detached`. The signer's certificate and `extra_certs` travel in `certificates`.
pub fn sign(
    signer: &Signer,
    content: &[u8],
    detached: bool,
    extra: &[Attribute],
    extra_certs: &[Vec<u8>],
) -> Result<Vec<u8>, CmsError> {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, content);
    let mut attrs = vec![
        Attribute::new(
            oid::CONTENT_TYPE,
            yasna::construct_der(|w| w.write_oid(&o(oid::DATA))),
        ),
        Attribute::octets(oid::MESSAGE_DIGEST, digest.as_ref()),
    ];
    attrs.extend(extra.iter().cloned());
    // The signature covers the attributes' DER with the SET OF tag (RFC 5652 §5.4).
    let signed_attrs = yasna::construct_der(|w| write_attrs(w, &attrs));
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let mut sig = vec![0u8; signer.key.public_modulus_len()];
    signer
        .key
        .sign(&signature::RSA_PKCS1_SHA256, &rng, &signed_attrs, &mut sig)
        .map_err(|_| CmsError::Crypto("RSA signing"))?;
    let mut certs = vec![signer.cert_der.clone()];
    certs.extend(extra_certs.iter().cloned());
    Ok(signed_data(
        (!detached).then_some(content),
        &certs,
        Some((&signer.info.issuer_and_serial, &attrs, &sig)),
    ))
}

/// A certificates-only ("degenerate") SignedData, as SCEP returns an issued certificate in
/// (RFC 8894 §3.3.2).
pub fn certs_only(certs: &[Vec<u8>]) -> Vec<u8> {
    signed_data(None, certs, None)
}

fn signed_data(
    content: Option<&[u8]>,
    certs: &[Vec<u8>],
    signer: Option<(&[u8], &[Attribute], &[u8])>,
) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_oid(&o(oid::SIGNED_DATA));
            w.next().write_tagged(Tag::context(0), |w| {
                w.write_sequence(|w| {
                    w.next().write_u8(1);
                    w.next().write_set_of(|w| {
                        if signer.is_some() {
                            write_alg(w.next(), oid::SHA256, true);
                        }
                    });
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&o(oid::DATA));
                        if let Some(c) = content {
                            w.next().write_tagged(Tag::context(0), |w| w.write_bytes(c));
                        }
                    });
                    w.next().write_tagged_implicit(Tag::context(0), |w| {
                        w.write_set_of(|w| {
                            for c in certs {
                                w.next().write_der(c);
                            }
                        })
                    });
                    w.next().write_set_of(|w| {
                        let Some((sid, attrs, sig)) = signer else {
                            return;
                        };
                        w.next().write_sequence(|w| {
                            w.next().write_u8(1);
                            w.next().write_der(sid);
                            write_alg(w.next(), oid::SHA256, true);
                            w.next()
                                .write_tagged_implicit(Tag::context(0), |w| write_attrs(w, attrs));
                            write_alg(w.next(), oid::RSA, true);
                            w.next().write_bytes(sig);
                        });
                    });
                });
            });
        });
    })
}

/// A SignerInfo as read.
struct SignerInfo {
    sid: Vec<u8>,
    digest_alg: Vec<u64>,
    /// Raw `[0]` signed attributes, and the attributes.
    signed_attrs: Option<(Vec<u8>, Vec<Attribute>)>,
    signature: Vec<u8>,
}

/// A SignedData as read: its content (if attached), certificates and signers.
pub struct SignedData {
    pub content: Option<Vec<u8>>,
    pub certs: Vec<Vec<u8>>,
    signers: Vec<SignerInfo>,
}

/// A verified SignedData: who signed, what, with which attributes.
pub struct Verified {
    pub signer_cert: Vec<u8>,
    pub content: Vec<u8>,
    pub certs: Vec<Vec<u8>>,
    pub attrs: Vec<Attribute>,
}

impl Verified {
    /// The DER value of a signed attribute.
    pub fn attr(&self, id: &[u64]) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|a| a.oid == id)
            .map(|a| a.value.as_slice())
    }
}

fn read_alg(r: BERReader) -> Result<Vec<u64>, ASN1Error> {
    r.read_sequence(|r| {
        let id = r.next().read_oid()?;
        // Parameters (NULL, an IV, …) are read by whoever needs them.
        let _ = r.read_optional(|r| r.read_der())?;
        Ok(id.components().clone())
    })
}

fn skip_set(r: BERReader) -> Result<(), ASN1Error> {
    r.read_set_of(|r| r.read_der().map(|_| ()))
}

fn read_attribute(r: BERReader) -> Result<Attribute, ASN1Error> {
    r.read_sequence(|r| {
        let id = r.next().read_oid()?;
        let mut first = None;
        r.next().read_set_of(|r| {
            let v = r.read_der()?;
            first.get_or_insert(v);
            Ok(())
        })?;
        Ok(Attribute {
            oid: id.components().clone(),
            value: first.unwrap_or_default(),
        })
    })
}

fn read_signer_info(r: BERReader) -> Result<SignerInfo, ASN1Error> {
    r.read_sequence(|r| {
        let _version = r.next().read_u8()?;
        let sid = r.next().read_der()?;
        let digest_alg = read_alg(r.next())?;
        // The signature covers the attributes as a DER SET OF: the `[0]` bytes as they came,
        // re-tagged (RFC 5652 §5.4).
        let signed_attrs = r.read_optional(|r| {
            let (attrs, raw) = r.read_with_buffer(|r| {
                r.read_tagged_implicit(Tag::context(0), |r| r.collect_set_of(read_attribute))
            })?;
            let mut set = raw.to_vec();
            set[0] = 0x31;
            Ok((set, attrs))
        })?;
        let _sig_alg = read_alg(r.next())?;
        let signature = r.next().read_bytes()?;
        let _unsigned = r.read_optional(|r| r.read_der())?;
        Ok(SignerInfo {
            sid,
            digest_alg,
            signed_attrs,
            signature,
        })
    })
}

/// Read a ContentInfo holding a SignedData.
pub fn parse_signed(der: &[u8]) -> Result<SignedData, CmsError> {
    let (is_signed, sd) = yasna::parse_ber(der, |r| {
        r.read_sequence(|r| {
            let ct = r.next().read_oid()?;
            if !is(&ct, oid::SIGNED_DATA) {
                let _ = r.next().read_der()?;
                return Ok((false, None));
            }
            let sd = r.next().read_tagged(Tag::context(0), |r| {
                r.read_sequence(|r| {
                    let _version = r.next().read_u8()?;
                    r.next().read_set_of(|r| read_alg(r).map(|_| ()))?;
                    let content = r.next().read_sequence(|r| {
                        let _type = r.next().read_oid()?;
                        r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_bytes()))
                    })?;
                    let mut certs = Vec::new();
                    r.read_optional(|r| {
                        r.read_tagged_implicit(Tag::context(0), |r| {
                            r.read_set_of(|r| {
                                certs.push(r.read_der()?);
                                Ok(())
                            })
                        })
                    })?;
                    // (`read_der` would ignore an implicit tag: read the SET OF instead.)
                    let _crls =
                        r.read_optional(|r| r.read_tagged_implicit(Tag::context(1), skip_set))?;
                    let signers = r.next().collect_set_of(read_signer_info)?;
                    Ok(SignedData {
                        content,
                        certs,
                        signers,
                    })
                })
            })?;
            Ok((true, Some(sd)))
        })
    })?;
    match (is_signed, sd) {
        (true, Some(sd)) => Ok(sd),
        _ => Err(CmsError::ContentType {
            expected: "SignedData",
        }),
    }
}

/// Verify a SignedData (attached, or detached over `detached_content`) by its first signer,
/// whose certificate must be in the message. Trust in that certificate is the caller's.
pub fn verify(der: &[u8], detached_content: Option<&[u8]>) -> Result<Verified, CmsError> {
    let sd = parse_signed(der)?;
    let content = match (sd.content, detached_content) {
        (Some(c), _) => c,
        (None, Some(c)) => c.to_vec(),
        (None, None) => return Err(CmsError::NoContent),
    };
    let si = sd.signers.first().ok_or(CmsError::NoSigner)?;
    let signer_cert = sd
        .certs
        .iter()
        .find(|c| cert_info(c).is_ok_and(|i| i.issuer_and_serial == si.sid))
        .ok_or(CmsError::SignerCertificateMissing)?
        .clone();
    let info = cert_info(&signer_cert)?;
    let (digest_alg, verify_alg) = algorithms(&si.digest_alg, &info.key_algorithm)?;
    let digest = aws_lc_rs::digest::digest(digest_alg, &content);
    let (signed, attrs) = match &si.signed_attrs {
        Some((set, attrs)) => {
            let md = attrs
                .iter()
                .find(|a| a.oid == oid::MESSAGE_DIGEST)
                .and_then(|a| yasna::parse_der(&a.value, |r| r.read_bytes()).ok());
            if md.as_deref() != Some(digest.as_ref()) {
                return Err(CmsError::DigestMismatch);
            }
            (set.clone(), attrs.clone())
        }
        None => (content.clone(), Vec::new()),
    };
    UnparsedPublicKey::new(verify_alg, &info.public_key)
        .verify(&signed, &si.signature)
        .map_err(|_| CmsError::BadSignature)?;
    Ok(Verified {
        signer_cert,
        content,
        certs: sd.certs,
        attrs,
    })
}

fn algorithms(
    digest: &[u64],
    key: &[u64],
) -> Result<
    (
        &'static aws_lc_rs::digest::Algorithm,
        &'static dyn signature::VerificationAlgorithm,
    ),
    CmsError,
> {
    use aws_lc_rs::digest as d;
    let rsa = key == oid::RSA;
    let ec = key == oid::EC_PUBLIC_KEY;
    Ok(match digest {
        x if x == oid::SHA256 && rsa => (&d::SHA256, &signature::RSA_PKCS1_2048_8192_SHA256),
        x if x == oid::SHA384 && rsa => (&d::SHA384, &signature::RSA_PKCS1_2048_8192_SHA384),
        x if x == oid::SHA512 && rsa => (&d::SHA512, &signature::RSA_PKCS1_2048_8192_SHA512),
        x if x == oid::SHA1 && rsa => (
            &d::SHA1_FOR_LEGACY_USE_ONLY,
            &signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
        ),
        x if x == oid::SHA256 && ec => (&d::SHA256, &signature::ECDSA_P256_SHA256_ASN1),
        x if x == oid::SHA384 && ec => (&d::SHA384, &signature::ECDSA_P384_SHA384_ASN1),
        _ => return Err(CmsError::Unsupported(format!("{digest:?} with {key:?}"))),
    })
}

/// EnvelopedData of `content` for `recipient_cert` (RSA PKCS#1 v1.5 key transport, AES-128-CBC,
/// which SCEP servers announce with the `AES` capability, RFC 8894 §3.5.2). Decryption takes
/// AES-CBC only: DES is behind aws-lc-rs's legacy feature, and a server that answers in DES
/// (one that does not announce `AES`) is refused with a clear error.
pub fn encrypt(content: &[u8], recipient_cert: &[u8]) -> Result<Vec<u8>, CmsError> {
    let info = cert_info(recipient_cert)?;
    if info.key_algorithm != oid::RSA {
        return Err(CmsError::Unsupported(
            "key transport to a non-RSA key".into(),
        ));
    }
    let mut cek = [0u8; 16];
    aws_lc_rs::rand::fill(&mut cek).map_err(|_| CmsError::Crypto("random key"))?;
    let key = UnboundCipherKey::new(&AES_128, &cek).map_err(|_| CmsError::Crypto("AES key"))?;
    let enc = PaddedBlockEncryptingKey::cbc_pkcs7(key).map_err(|_| CmsError::Crypto("AES"))?;
    let mut ct = content.to_vec();
    let ctx = enc
        .encrypt(&mut ct)
        .map_err(|_| CmsError::Crypto("AES-CBC"))?;
    let iv: &[u8] = (&ctx).try_into().map_err(|_| CmsError::Crypto("IV"))?;
    let pk = PublicEncryptingKey::from_der(&info.spki)
        .map_err(|e| CmsError::Certificate(e.to_string()))
        .and_then(|k| Pkcs1PublicEncryptingKey::new(k).map_err(|_| CmsError::Crypto("RSA key")))?;
    let mut ek = vec![0u8; pk.ciphertext_size()];
    let ek = pk
        .encrypt(&cek, &mut ek)
        .map_err(|_| CmsError::Crypto("RSA key transport"))?
        .to_vec();
    Ok(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_oid(&o(oid::ENVELOPED_DATA));
            w.next().write_tagged(Tag::context(0), |w| {
                w.write_sequence(|w| {
                    w.next().write_u8(0);
                    w.next().write_set_of(|w| {
                        w.next().write_sequence(|w| {
                            w.next().write_u8(0);
                            w.next().write_der(&info.issuer_and_serial);
                            write_alg(w.next(), oid::RSA, true);
                            w.next().write_bytes(&ek);
                        })
                    });
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&o(oid::DATA));
                        w.next().write_sequence(|w| {
                            w.next().write_oid(&o(oid::AES128_CBC));
                            w.next().write_bytes(iv);
                        });
                        w.next()
                            .write_tagged_implicit(Tag::context(0), |w| w.write_bytes(&ct));
                    });
                })
            });
        })
    }))
}

/// Decrypt an EnvelopedData addressed to `cert` with its RSA key (PKCS#8).
pub fn decrypt(der: &[u8], cert: &[u8], key_pkcs8: &[u8]) -> Result<Vec<u8>, CmsError> {
    let me = cert_info(cert)?;
    let (recipients, cipher, iv, ct) = yasna::parse_ber(der, |r| {
        r.read_sequence(|r| {
            let ct = r.next().read_oid()?;
            if !is(&ct, oid::ENVELOPED_DATA) {
                return Err(ASN1Error::new(yasna::ASN1ErrorKind::Invalid));
            }
            r.next().read_tagged(Tag::context(0), |r| {
                r.read_sequence(|r| {
                    let _version = r.next().read_u8()?;
                    let _originator = r.read_optional(|r| {
                        r.read_tagged_implicit(Tag::context(0), |r| {
                            r.read_sequence(|r| {
                                while r.read_optional(|r| r.read_der())?.is_some() {}
                                Ok(())
                            })
                        })
                    })?;
                    let recipients = r.next().collect_set_of(|r| {
                        r.read_sequence(|r| {
                            let _v = r.next().read_u8()?;
                            let rid = r.next().read_der()?;
                            let _alg = read_alg(r.next())?;
                            let ek = r.next().read_bytes()?;
                            Ok((rid, ek))
                        })
                    })?;
                    let (cipher, iv, ct) = r.next().read_sequence(|r| {
                        let _type = r.next().read_oid()?;
                        let (cipher, iv) = r.next().read_sequence(|r| {
                            let id = r.next().read_oid()?;
                            let iv = r.next().read_bytes()?;
                            Ok((id.components().clone(), iv))
                        })?;
                        let ct = r
                            .next()
                            .read_tagged_implicit(Tag::context(0), |r| r.read_bytes())?;
                        Ok((cipher, iv, ct))
                    })?;
                    let _unprotected = r.read_optional(|r| r.read_der())?;
                    Ok((recipients, cipher, iv, ct))
                })
            })
        })
    })
    .map_err(|_| CmsError::ContentType {
        expected: "EnvelopedData",
    })?;
    let ek = recipients
        .iter()
        .find(|(rid, _)| *rid == me.issuer_and_serial)
        .map(|(_, ek)| ek)
        .ok_or(CmsError::NotForUs)?;
    let sk =
        PrivateDecryptingKey::from_pkcs8(key_pkcs8).map_err(|e| CmsError::Key(e.to_string()))?;
    let sk = Pkcs1PrivateDecryptingKey::new(sk).map_err(|_| CmsError::Crypto("RSA key"))?;
    let mut buf = vec![0u8; sk.min_output_size()];
    let cek = sk
        .decrypt(ek, &mut buf)
        .map_err(|_| CmsError::Crypto("RSA key transport"))?
        .to_vec();
    let alg = match cipher.as_slice() {
        c if c == oid::AES128_CBC => &AES_128,
        c if c == oid::AES192_CBC => &AES_192,
        c if c == oid::AES256_CBC => &AES_256,
        other => return Err(CmsError::Unsupported(format!("content cipher {other:?}"))),
    };
    let ctx = match iv.len() {
        16 => DecryptionContext::Iv128(FixedLength::from(
            <[u8; 16]>::try_from(iv.as_slice()).expect("16 bytes"),
        )),
        _ => return Err(CmsError::Crypto("IV length")),
    };
    let key = UnboundCipherKey::new(alg, &cek).map_err(|_| CmsError::Crypto("content key"))?;
    let dec = PaddedBlockDecryptingKey::cbc_pkcs7(key).map_err(|_| CmsError::Crypto("cipher"))?;
    let mut ct = ct;
    let plain = dec
        .decrypt(&mut ct, ctx)
        .map_err(|_| CmsError::Crypto("content decryption"))?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, PKCS_RSA_SHA256};

    fn identity(cn: &str) -> (Vec<u8>, Vec<u8>) {
        let key = KeyPair::generate_for(&PKCS_RSA_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        (
            p.self_signed(&key).unwrap().der().to_vec(),
            key.serialize_der(),
        )
    }

    #[test]
    fn a_detached_signature_verifies_over_its_body_only() {
        let (cert, key) = identity("device");
        let signer = Signer::new(cert.clone(), &key).unwrap();
        let body = b"<plist>check-in</plist>";
        let sig = sign(&signer, body, true, &[], &[]).unwrap();
        let v = verify(&sig, Some(body)).unwrap();
        assert_eq!(v.signer_cert, cert);
        assert_eq!(v.content, body);
        assert!(matches!(
            verify(&sig, Some(b"<plist>tampered</plist>")),
            Err(CmsError::DigestMismatch)
        ));
        assert!(matches!(verify(&sig, None), Err(CmsError::NoContent)));
        // A flipped signature bit is caught.
        let mut bad = sig.clone();
        let n = bad.len();
        bad[n - 5] ^= 1;
        assert!(matches!(
            verify(&bad, Some(body)),
            Err(CmsError::BadSignature)
        ));
    }

    #[test]
    fn attached_content_and_attributes_come_back() {
        let (cert, key) = identity("device");
        let signer = Signer::new(cert.clone(), &key).unwrap();
        let extra = [Attribute::printable(
            &[2, 16, 840, 1, 113733, 1, 9, 2],
            "19",
        )];
        let sd = sign(&signer, b"inner", false, &extra, &[]).unwrap();
        let v = verify(&sd, None).unwrap();
        assert_eq!(v.content, b"inner");
        let mt = v.attr(&[2, 16, 840, 1, 113733, 1, 9, 2]).unwrap();
        assert_eq!(
            yasna::parse_der(mt, |r| r.read_printable_string()).unwrap(),
            "19"
        );
        let only = certs_only(std::slice::from_ref(&cert));
        let parsed = parse_signed(&only).unwrap();
        assert_eq!(parsed.certs, vec![cert]);
        assert!(matches!(verify(&only, Some(b"x")), Err(CmsError::NoSigner)));
    }

    #[test]
    fn enveloped_data_opens_for_its_recipient_only() {
        let (cert, key) = identity("ca");
        let (other, other_key) = identity("someone else");
        let env = encrypt(b"a CSR", &cert).unwrap();
        assert_eq!(decrypt(&env, &cert, &key).unwrap(), b"a CSR");
        assert!(matches!(
            decrypt(&env, &other, &other_key),
            Err(CmsError::NotForUs)
        ));
    }
}
