//! Certificates and pair records of the simulated lab.
//!
//! Each device gets its own certificate (CN = its UDID) signed by the simulated host's root, and
//! a pair record as usbmuxd would hold it after the host paired with the device (brief §5.1):
//! Root/Host/Device certificates, the host's private keys, HostID, SystemBUID, WiFiMACAddress.
//!
//! RSA-2048 as real pair records use. Generating an RSA key takes ~50 ms, so device keys come
//! from a small pool (at most [`KEY_POOL`] keys per lab) while certificates stay per device: no
//! client can tell, and a 1 000-device lab starts in well under a second.

use super::fleet::SimDeviceSpec;
use crate::lockdown::PairRecord;
use crate::tls;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_RSA_SHA256, date_time_ymd,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub const KEY_POOL: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("generating simulated certificates: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
}

/// What a simulated device needs to be a TLS server and what usbmuxd returns as its pair record.
pub struct DeviceIdentity {
    pub server_config: Arc<ServerConfig>,
    pub pair_record: PairRecord,
    /// PEM `RSA PUBLIC KEY` (PKCS#1), served as `DevicePublicKey`: libimobiledevice's pairing
    /// reads it with `PEM_read_bio_RSAPublicKey` (brief §4.5).
    pub public_key_pem: String,
}

/// Deterministic upper-case UUID from a seed and a label (HostID, SystemBUID).
pub fn uuid_from(seed: u64, label: &str) -> String {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(label.as_bytes());
    let b: [u8; 32] = h.finalize().into();
    let hex: String = b[..16].iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-4{}-A{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

fn params(cn: &str, ca: bool) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.not_before = date_time_ymd(2024, 1, 1);
    p.not_after = date_time_ymd(2034, 1, 1);
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
    } else {
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
    }
    Ok(p)
}

fn rsa_keys(n: usize) -> Result<Vec<KeyPair>, rcgen::Error> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| s.spawn(|| KeyPair::generate_for(&PKCS_RSA_SHA256)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("key generation thread"))
            .collect()
    })
}

/// Generate the identities of a whole fleet (blocking; call from `spawn_blocking`).
pub fn generate(
    seed: u64,
    system_buid: &str,
    devices: &[SimDeviceSpec],
) -> Result<Vec<DeviceIdentity>, IdentityError> {
    let pool_size = devices.len().clamp(1, KEY_POOL);
    let mut keys = rsa_keys(2 + pool_size)?;
    let device_keys = keys.split_off(2);
    let host_key = keys.pop().expect("host key");
    let root_key = keys.pop().expect("root key");
    let root_params = params("Root", true)?;
    let root_cert = root_params.self_signed(&root_key)?;
    let issuer = Issuer::new(root_params, &root_key);
    let host_cert = params("Host", false)?.signed_by(&host_key, &issuer)?;
    let root_cert_pem = root_cert.pem().into_bytes();
    let root_key_pem = root_key.serialize_pem().into_bytes();
    let host_cert_pem = host_cert.pem().into_bytes();
    let host_key_pem = host_key.serialize_pem().into_bytes();

    let mut out = Vec::with_capacity(devices.len());
    for (i, d) in devices.iter().enumerate() {
        let key = &device_keys[i % device_keys.len()];
        let cert = params(&d.udid, false)?.signed_by(key, &issuer)?;
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let server_config = Arc::new(tls::server_config(chain, key_der)?);
        let pair_record = PairRecord {
            host_id: uuid_from(seed, &format!("host-id/{}", d.udid)),
            system_buid: system_buid.to_string(),
            host_certificate: host_cert_pem.clone(),
            host_private_key: host_key_pem.clone(),
            root_certificate: root_cert_pem.clone(),
            root_private_key: root_key_pem.clone(),
            device_certificate: cert.pem().into_bytes(),
            wifi_mac_address: Some(d.wifi_address.clone()),
            escrow_bag: Some(Sha256::digest(d.udid.as_bytes()).to_vec()),
            udid: Some(d.udid.clone()),
        };
        out.push(DeviceIdentity {
            server_config,
            pair_record,
            public_key_pem: rsa_public_key_pem(key),
        });
    }
    Ok(out)
}

/// For RSA, the SubjectPublicKeyInfo bit string *is* the PKCS#1 `RSAPublicKey`.
fn rsa_public_key_pem(key: &KeyPair) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(key.public_key_raw());
    let mut pem = String::from("-----BEGIN RSA PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).expect("base64 is ascii"));
        pem.push('\n');
    }
    pem.push_str("-----END RSA PUBLIC KEY-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_stable_and_well_formed() {
        let a = uuid_from(1, "x");
        assert_eq!(a, uuid_from(1, "x"));
        assert_ne!(a, uuid_from(2, "x"));
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert_eq!(a, a.to_uppercase());
    }
}
