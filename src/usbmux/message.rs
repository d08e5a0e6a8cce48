//! usbmuxd plist messages (protocol version 1), shared by the client and the simulator.
//!
//! Brief §1.3–1.5: request keys, reply shapes, result numbers and the device entry that every
//! client (libusbmuxd, pymobiledevice3, idevice) parses.

use crate::plist_util::{get_str, get_u64};
use plist::{Dictionary, Value};
use serde::Serialize;

/// `Result` numbers (usbmuxd-proto.h, brief §1.4). The pair-record commands put errno values in
/// the same field (ENOENT = 2, EINVAL = 22).
pub const RESULT_OK: u64 = 0;
pub const RESULT_BADCOMMAND: u64 = 1;
pub const RESULT_BADDEV: u64 = 2;
pub const RESULT_CONNREFUSED: u64 = 3;
pub const RESULT_BADVERSION: u64 = 6;
pub const ERRNO_ENOENT: u64 = 2;
pub const ERRNO_EINVAL: u64 = 22;

/// lockdownd's TCP port on the device (brief §1.6).
pub const LOCKDOWN_PORT: u16 = 62078;

/// What `lab` calls itself in `ClientVersionString` / `ProgName`.
pub const CLIENT_VERSION: &str = concat!("lab ", env!("CARGO_PKG_VERSION"));

/// Human name of a usbmuxd result number.
pub fn result_name(n: u64) -> &'static str {
    match n {
        0 => "OK",
        1 => "bad command",
        2 => "no such device (or no pair record)",
        3 => "connection refused by the device",
        4 => "no such service",
        6 => "bad protocol version",
        22 => "invalid argument",
        _ => "unknown error",
    }
}

/// A request dictionary as libusbmuxd builds it (`create_plist_message`, brief §1.3).
pub fn request(message_type: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("ClientVersionString".into(), CLIENT_VERSION.into());
    d.insert("MessageType".into(), message_type.into());
    d.insert("ProgName".into(), "lab".into());
    d.insert("kLibUSBMuxVersion".into(), Value::Integer(3.into()));
    d
}

pub fn result(n: u64) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("MessageType".into(), "Result".into());
    d.insert("Number".into(), Value::Integer(n.into()));
    d
}

/// `PortNumber` is the port in network byte order stored as a plain integer: 62078 is sent as
/// 32498 (brief §1.6).
pub fn port_to_wire(port: u16) -> u64 {
    port.to_be() as u64
}

pub fn port_from_wire(n: u64) -> Option<u16> {
    u16::try_from(n).ok().map(u16::from_be)
}

/// One entry of `DeviceList` / one `Attached` event (brief §1.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceEntry {
    pub device_id: u32,
    pub serial_number: String,
    pub product_id: Option<u32>,
    pub location_id: Option<u64>,
    pub connection_type: String,
    pub connection_speed: Option<u64>,
}

impl DeviceEntry {
    /// The dictionary Linux usbmuxd's `create_device_attached_plist()` sends.
    pub fn to_attached(&self) -> Dictionary {
        let mut p = Dictionary::new();
        if let Some(s) = self.connection_speed {
            p.insert("ConnectionSpeed".into(), Value::Integer(s.into()));
        }
        p.insert("ConnectionType".into(), self.connection_type.clone().into());
        p.insert(
            "DeviceID".into(),
            Value::Integer((self.device_id as u64).into()),
        );
        if let Some(l) = self.location_id {
            p.insert("LocationID".into(), Value::Integer(l.into()));
        }
        if let Some(pid) = self.product_id {
            p.insert("ProductID".into(), Value::Integer((pid as u64).into()));
        }
        p.insert("SerialNumber".into(), self.serial_number.clone().into());
        let mut d = Dictionary::new();
        d.insert(
            "DeviceID".into(),
            Value::Integer((self.device_id as u64).into()),
        );
        d.insert("MessageType".into(), "Attached".into());
        d.insert("Properties".into(), Value::Dictionary(p));
        d
    }

    /// Parse an entry; what is required is what libusbmuxd requires (brief §1.5).
    pub fn from_attached(d: &Dictionary) -> Result<DeviceEntry, String> {
        let props = d
            .get("Properties")
            .and_then(Value::as_dictionary)
            .ok_or("device entry has no Properties dictionary")?;
        let device_id = get_u64(props, "DeviceID")
            .or_else(|| get_u64(d, "DeviceID"))
            .ok_or("device entry has no integer DeviceID")?;
        let device_id = u32::try_from(device_id)
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| format!("device entry has an invalid DeviceID {device_id}"))?;
        let serial = get_str(props, "SerialNumber")
            .ok_or("device entry has no SerialNumber")?
            .to_string();
        let connection_type = get_str(props, "ConnectionType")
            .ok_or("device entry has no ConnectionType")?
            .to_string();
        Ok(DeviceEntry {
            device_id,
            serial_number: sanitize_udid(&serial),
            product_id: get_u64(props, "ProductID").and_then(|p| u32::try_from(p).ok()),
            location_id: get_u64(props, "LocationID"),
            connection_type,
            connection_speed: get_u64(props, "ConnectionSpeed"),
        })
    }
}

/// A 24-hex-char serial gets a dash after the 8th character, as libusbmuxd's `sanitize_udid`
/// and usbmuxd's `get_serial_callback` do (brief §1.5, §7).
pub fn sanitize_udid(serial: &str) -> String {
    if serial.len() == 24 && serial.chars().all(|c| c.is_ascii_hexdigit()) {
        format!("{}-{}", &serial[..8], &serial[8..])
    } else {
        serial.to_string()
    }
}

/// An event of the `Listen` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MuxEvent {
    Attached(DeviceEntry),
    Detached { device_id: u32 },
    Paired { device_id: u32 },
}

impl MuxEvent {
    pub fn to_plist(&self) -> Dictionary {
        match self {
            MuxEvent::Attached(e) => e.to_attached(),
            MuxEvent::Detached { device_id } | MuxEvent::Paired { device_id } => {
                let mut d = Dictionary::new();
                d.insert(
                    "DeviceID".into(),
                    Value::Integer((*device_id as u64).into()),
                );
                let t = if matches!(self, MuxEvent::Detached { .. }) {
                    "Detached"
                } else {
                    "Paired"
                };
                d.insert("MessageType".into(), t.into());
                d
            }
        }
    }

    pub fn from_plist(d: &Dictionary) -> Result<MuxEvent, String> {
        let id = || {
            get_u64(d, "DeviceID")
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| "event has no DeviceID".to_string())
        };
        match get_str(d, "MessageType") {
            Some("Attached") => Ok(MuxEvent::Attached(DeviceEntry::from_attached(d)?)),
            Some("Detached") => Ok(MuxEvent::Detached { device_id: id()? }),
            Some("Paired") => Ok(MuxEvent::Paired { device_id: id()? }),
            Some(other) => Err(format!("unknown event {other:?}")),
            None => Err("event has no MessageType".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockdown_port_goes_over_the_wire_as_32498() {
        assert_eq!(port_to_wire(LOCKDOWN_PORT), 32498);
        assert_eq!(port_from_wire(32498), Some(62078));
        assert_eq!(port_from_wire(1 << 20), None);
    }

    #[test]
    fn device_entry_roundtrips_and_requires_what_libusbmuxd_requires() {
        let e = DeviceEntry {
            device_id: 7,
            serial_number: "00008030-001A2D3E0C12802E".into(),
            product_id: Some(0x12a8),
            location_id: Some(65541),
            connection_type: "USB".into(),
            connection_speed: Some(480_000_000),
        };
        let d = e.to_attached();
        assert_eq!(DeviceEntry::from_attached(&d).unwrap(), e);
        let mut no_serial = d.clone();
        no_serial
            .get_mut("Properties")
            .and_then(Value::as_dictionary_mut)
            .unwrap()
            .remove("SerialNumber");
        assert!(DeviceEntry::from_attached(&no_serial).is_err());
        let mut zero = d.clone();
        zero.get_mut("Properties")
            .and_then(Value::as_dictionary_mut)
            .unwrap()
            .insert("DeviceID".into(), Value::Integer(0.into()));
        assert!(DeviceEntry::from_attached(&zero).is_err());
    }

    #[test]
    fn udids_get_their_dash() {
        assert_eq!(
            sanitize_udid("00008030001A2D3E0C12802E"),
            "00008030-001A2D3E0C12802E"
        );
        let old = "c16b08b1a1b2c3d4e5f6a7b8c9d0e1f2a3b469fd";
        assert_eq!(sanitize_udid(old), old);
    }
}
