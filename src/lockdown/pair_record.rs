//! Pair records (brief §5.1): what usbmuxd's `ReadPairRecord` returns.
//!
//! The private keys in a pair record are secrets: `Debug` redacts them and nothing in `lab`
//! serialises them anywhere but back to usbmuxd.

use crate::plist_util::{self, get_str};
use plist::{Dictionary, Value};
use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct PairRecord {
    pub host_id: String,
    pub system_buid: String,
    pub host_certificate: Vec<u8>,
    pub host_private_key: Vec<u8>,
    pub root_certificate: Vec<u8>,
    pub root_private_key: Vec<u8>,
    pub device_certificate: Vec<u8>,
    pub wifi_mac_address: Option<String>,
    pub escrow_bag: Option<Vec<u8>>,
    pub udid: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PairRecordError {
    #[error("pair record is not a plist: {0}")]
    NotPlist(String),
    #[error("pair record has no {0}")]
    Missing(&'static str),
}

impl PairRecord {
    pub fn from_bytes(b: &[u8]) -> Result<Self, PairRecordError> {
        let d = plist_util::parse_dict(b).map_err(PairRecordError::NotPlist)?;
        Self::from_dict(&d)
    }

    pub fn from_dict(d: &Dictionary) -> Result<Self, PairRecordError> {
        let data = |k: &'static str| -> Result<Vec<u8>, PairRecordError> {
            match d.get(k) {
                Some(Value::Data(v)) => Ok(v.clone()),
                Some(Value::String(s)) => Ok(s.as_bytes().to_vec()),
                _ => Err(PairRecordError::Missing(k)),
            }
        };
        let string = |k: &'static str| -> Result<String, PairRecordError> {
            get_str(d, k)
                .map(str::to_string)
                .ok_or(PairRecordError::Missing(k))
        };
        Ok(PairRecord {
            host_id: string("HostID")?,
            system_buid: string("SystemBUID")?,
            host_certificate: data("HostCertificate")?,
            host_private_key: data("HostPrivateKey")?,
            root_certificate: data("RootCertificate")?,
            root_private_key: data("RootPrivateKey").unwrap_or_default(),
            device_certificate: data("DeviceCertificate").unwrap_or_default(),
            wifi_mac_address: get_str(d, "WiFiMACAddress").map(str::to_string),
            escrow_bag: match d.get("EscrowBag") {
                Some(Value::Data(v)) => Some(v.clone()),
                _ => None,
            },
            udid: get_str(d, "UDID").map(str::to_string),
        })
    }

    /// The full record, private keys included, as usbmuxd stores it (binary plist, like the
    /// record libimobiledevice saves, brief §4.5).
    pub fn to_plist_bytes(&self) -> Vec<u8> {
        let mut d = Dictionary::new();
        d.insert(
            "DeviceCertificate".into(),
            Value::Data(self.device_certificate.clone()),
        );
        if let Some(e) = &self.escrow_bag {
            d.insert("EscrowBag".into(), Value::Data(e.clone()));
        }
        d.insert(
            "HostCertificate".into(),
            Value::Data(self.host_certificate.clone()),
        );
        d.insert("HostID".into(), self.host_id.clone().into());
        d.insert(
            "HostPrivateKey".into(),
            Value::Data(self.host_private_key.clone()),
        );
        d.insert(
            "RootCertificate".into(),
            Value::Data(self.root_certificate.clone()),
        );
        d.insert(
            "RootPrivateKey".into(),
            Value::Data(self.root_private_key.clone()),
        );
        d.insert("SystemBUID".into(), self.system_buid.clone().into());
        if let Some(u) = &self.udid {
            d.insert("UDID".into(), u.clone().into());
        }
        if let Some(w) = &self.wifi_mac_address {
            d.insert("WiFiMACAddress".into(), w.clone().into());
        }
        let mut out = Vec::new();
        Value::Dictionary(d)
            .to_writer_binary(&mut out)
            .expect("in-memory write");
        out
    }
}

impl fmt::Debug for PairRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairRecord")
            .field("host_id", &self.host_id)
            .field("system_buid", &self.system_buid)
            .field("host_private_key", &"<redacted>")
            .field("root_private_key", &"<redacted>")
            .field("wifi_mac_address", &self.wifi_mac_address)
            .field("udid", &self.udid)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_whose_binary_form_ends_in_a_nul_byte_reads_back() {
        // Fuzz target lockdown_frame: this record's binary plist (as usbmuxd stores it) ends
        // with a 0 byte, which the plist reader used to strip as XML padding.
        let raw = include_bytes!(
            "../../tests/fuzz-regressions/lockdown_frame-pair-record-binary-trailer.plist"
        );
        let r = PairRecord::from_bytes(raw).unwrap();
        let bin = r.to_plist_bytes();
        assert_eq!(bin.last(), Some(&0));
        let again = PairRecord::from_bytes(&bin).unwrap();
        assert_eq!(again.host_id, r.host_id);
        assert_eq!(again.to_plist_bytes(), bin);
    }

    fn sample() -> PairRecord {
        PairRecord {
            host_id: "33852EE6-D5BC-4DFE-9170-42A325FB0211".into(),
            system_buid: "F7E1B3C2-0000-0000-0000-000000000001".into(),
            host_certificate: b"-----BEGIN CERTIFICATE-----".to_vec(),
            host_private_key: b"not-a-real-key-SECRET".to_vec(),
            root_certificate: b"root".to_vec(),
            root_private_key: b"ROOTSECRET".to_vec(),
            device_certificate: b"dev".to_vec(),
            wifi_mac_address: Some("aa:bb:cc:dd:ee:ff".into()),
            escrow_bag: None,
            udid: Some("00008030-001A2D3E0C12802E".into()),
        }
    }

    #[test]
    fn roundtrips_through_binary_plist() {
        let r = sample();
        assert_eq!(PairRecord::from_bytes(&r.to_plist_bytes()).unwrap(), r);
    }

    #[test]
    fn debug_never_shows_private_keys() {
        let s = format!("{:?}", sample());
        assert!(!s.contains("SECRET"), "{s}");
        assert!(s.contains("redacted"));
    }

    #[test]
    fn missing_keys_are_named() {
        let mut d = Dictionary::new();
        d.insert("HostID".into(), "x".into());
        assert_eq!(
            PairRecord::from_dict(&d),
            Err(PairRecordError::Missing("SystemBUID"))
        );
    }
}
