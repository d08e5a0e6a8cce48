//! The baseline record of one device: every field typed, raw, sourced (issue #2, item 5).
//!
//! Building it from lockdown replies is pure: `Baseline::from_replies` takes what the device
//! answered (or the error it answered with) per domain, and decides nothing else.

use super::field::{Field, FieldType, Source, Via, read};
use crate::models;
use crate::plist_util;
use crate::usb::UsbMode;
use crate::usbmux::DeviceEntry;
use plist::{Dictionary, Value};
use serde::Serialize;

/// lockdown domains the probe reads (brief §6).
pub const DOMAIN_DISK: &str = "com.apple.disk_usage";
pub const DOMAIN_BATTERY: &str = "com.apple.mobile.battery";
pub const DOMAIN_CHAPERONE: &str = "com.apple.mobile.chaperone";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Baseline {
    pub udid: Field<String>,
    pub serial_number: Field<String>,
    pub device_name: Field<String>,
    pub product_type: Field<String>,
    pub marketing_name: Field<String>,
    pub hardware_model: Field<String>,
    pub model_number: Field<String>,
    pub device_class: Field<String>,
    pub product_version: Field<String>,
    pub build_version: Field<String>,
    pub activation_state: Field<String>,
    pub disk: Disk,
    pub battery: Battery,
    pub network: Network,
    pub passcode: Passcode,
    pub supervision: Supervision,
    pub usb: Usb,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disk {
    pub total_disk_capacity: Field<u64>,
    pub total_data_capacity: Field<u64>,
    pub total_data_available: Field<u64>,
    pub amount_data_available: Field<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Battery {
    pub current_capacity: Field<u64>,
    pub is_charging: Field<bool>,
    pub external_connected: Field<bool>,
    pub fully_charged: Field<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Network {
    pub wifi_address: Field<String>,
    pub bluetooth_address: Field<String>,
    pub telephony_capability: Field<bool>,
    pub sim_status: Field<String>,
    pub phone_number: Field<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Passcode {
    pub password_protected: Field<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Supervision {
    pub device_is_chaperoned: Field<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Usb {
    /// The usbmuxd this device was found through.
    pub host: String,
    pub device_id: u32,
    pub connection_type: Field<String>,
    pub location_id: Field<u64>,
    pub product_id: Field<u64>,
    pub connection_speed: Field<u64>,
    pub mode: Field<String>,
    /// Bus-port path from the raw USB scan (absent where USB cannot be read).
    pub port_path: Field<String>,
}

/// What one lockdown read produced: a dictionary, or the reason there is none.
pub type DomainReply = Result<Dictionary, String>;

fn field<T: FieldType>(reply: &DomainReply, domain: Option<&str>, key: &str) -> Field<T> {
    let src = Source::lockdown(domain, key);
    match reply {
        Ok(d) => read(src, d.get(key), "key absent from the device's reply"),
        Err(e) => Field::missing(src, e.clone()),
    }
}

/// The bus-port path the raw USB scan found for a device, or why there is none. Its own
/// function because `lab probe` scans USB while it probes and fills it in afterwards.
pub fn port_path_field(port_path: Option<&str>) -> Field<String> {
    match port_path {
        Some(p) => Field::known(
            Source::other(Via::Usb, "port_path"),
            p.to_string(),
            serde_json::json!(p),
        ),
        None => Field::missing(
            Source::other(Via::Usb, "port_path"),
            "not seen by the raw USB scan",
        ),
    }
}

impl Baseline {
    /// Build the record from the replies of one probe.
    pub fn from_replies(
        host: &str,
        entry: &DeviceEntry,
        global: &DomainReply,
        disk: &DomainReply,
        battery: &DomainReply,
        chaperone: &DomainReply,
        port_path: Option<&str>,
    ) -> Baseline {
        let g = |k: &str| field::<String>(global, None, k);
        let product_type: Field<String> = g("ProductType");
        let marketing_name = match product_type.get() {
            Some(pt) => match models::lookup(pt) {
                Some(m) => Field::known(
                    Source::other(Via::Derived, "ProductType"),
                    m.marketing_name.clone(),
                    serde_json::Value::String(pt.clone()),
                ),
                None => Field::missing(
                    Source::other(Via::Derived, "ProductType"),
                    format!("{pt} is not in data/models.csv"),
                ),
            },
            None => Field::missing(
                Source::other(Via::Derived, "ProductType"),
                "ProductType unknown",
            ),
        };
        let mux = |key: &str, v: Option<u64>| -> Field<u64> {
            let src = Source::other(Via::Usbmuxd, key);
            match v {
                Some(v) => Field::known(src, v, serde_json::json!(v)),
                None => Field::missing(src, "usbmuxd did not report it"),
            }
        };
        let mode = match entry
            .product_id
            .and_then(|p| u16::try_from(p).ok())
            .and_then(UsbMode::from_product_id)
        {
            Some(m) => Field::known(
                Source::other(Via::Usbmuxd, "ProductID"),
                m.as_str().to_string(),
                serde_json::json!(entry.product_id),
            ),
            None => Field::missing(
                Source::other(Via::Usbmuxd, "ProductID"),
                "product id not in Apple's device ranges",
            ),
        };
        Baseline {
            udid: g("UniqueDeviceID"),
            serial_number: g("SerialNumber"),
            device_name: g("DeviceName"),
            product_type,
            marketing_name,
            hardware_model: g("HardwareModel"),
            model_number: g("ModelNumber"),
            device_class: g("DeviceClass"),
            product_version: g("ProductVersion"),
            build_version: g("BuildVersion"),
            activation_state: g("ActivationState"),
            disk: Disk {
                total_disk_capacity: field(disk, Some(DOMAIN_DISK), "TotalDiskCapacity"),
                total_data_capacity: field(disk, Some(DOMAIN_DISK), "TotalDataCapacity"),
                total_data_available: field(disk, Some(DOMAIN_DISK), "TotalDataAvailable"),
                amount_data_available: field(disk, Some(DOMAIN_DISK), "AmountDataAvailable"),
            },
            battery: Battery {
                current_capacity: field(battery, Some(DOMAIN_BATTERY), "BatteryCurrentCapacity"),
                is_charging: field(battery, Some(DOMAIN_BATTERY), "BatteryIsCharging"),
                external_connected: field(battery, Some(DOMAIN_BATTERY), "ExternalConnected"),
                fully_charged: field(battery, Some(DOMAIN_BATTERY), "FullyCharged"),
            },
            network: Network {
                wifi_address: g("WiFiAddress"),
                bluetooth_address: g("BluetoothAddress"),
                telephony_capability: field(global, None, "TelephonyCapability"),
                sim_status: g("SIMStatus"),
                phone_number: g("PhoneNumber"),
            },
            passcode: Passcode {
                password_protected: field(global, None, "PasswordProtected"),
            },
            supervision: Supervision {
                device_is_chaperoned: field(
                    chaperone,
                    Some(DOMAIN_CHAPERONE),
                    "DeviceIsChaperoned",
                ),
            },
            usb: Usb {
                host: host.to_string(),
                device_id: entry.device_id,
                connection_type: Field::known(
                    Source::other(Via::Usbmuxd, "ConnectionType"),
                    entry.connection_type.clone(),
                    serde_json::json!(entry.connection_type),
                ),
                location_id: mux("LocationID", entry.location_id),
                product_id: mux("ProductID", entry.product_id.map(u64::from)),
                connection_speed: mux("ConnectionSpeed", entry.connection_speed),
                mode,
                port_path: port_path_field(port_path),
            },
        }
    }
}

/// A reply value that should be a dictionary (a whole domain).
pub fn as_domain(v: Value) -> DomainReply {
    match v {
        Value::Dictionary(d) => Ok(d),
        other => Err(format!(
            "device sent {} instead of a dictionary: {}",
            plist_util::type_name(&other),
            plist_util::to_json(&other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> DeviceEntry {
        DeviceEntry {
            device_id: 3,
            serial_number: "00008030-001A2D3E0C12802E".into(),
            product_id: Some(0x12a8),
            location_id: Some(65541),
            connection_type: "USB".into(),
            connection_speed: Some(480_000_000),
        }
    }

    #[test]
    fn fields_carry_value_raw_and_source_and_errors_are_kept() {
        let mut g = Dictionary::new();
        g.insert("ProductType".into(), "iPhone12,1".into());
        g.insert("ProductVersion".into(), "17.5.1".into());
        g.insert("PasswordProtected".into(), Value::Boolean(false));
        let mut bat = Dictionary::new();
        bat.insert("BatteryCurrentCapacity".into(), Value::Integer(87.into()));
        bat.insert("BatteryIsCharging".into(), Value::Integer(1.into()));
        let b = Baseline::from_replies(
            "127.0.0.1:27015",
            &entry(),
            &Ok(g),
            &Err("GetProhibited".into()),
            &Ok(bat),
            &Err("MissingValue".into()),
            None,
        );
        assert_eq!(b.product_version.value.as_deref(), Some("17.5.1"));
        assert_eq!(
            b.product_version.source,
            Source::lockdown(None, "ProductVersion")
        );
        assert_eq!(b.marketing_name.value.as_deref(), Some("iPhone 11"));
        assert_eq!(b.battery.current_capacity.value, Some(87));
        assert_eq!(
            b.battery.current_capacity.source.domain.as_deref(),
            Some(DOMAIN_BATTERY)
        );
        assert_eq!(b.battery.is_charging.value, Some(true));
        assert!(b.battery.is_charging.note.is_some());
        assert_eq!(b.battery.fully_charged.value, None);
        assert_eq!(b.disk.total_disk_capacity.value, None);
        assert_eq!(
            b.disk.total_disk_capacity.error.as_deref(),
            Some("GetProhibited")
        );
        assert_eq!(
            b.supervision.device_is_chaperoned.error.as_deref(),
            Some("MissingValue")
        );
        assert_eq!(b.passcode.password_protected.value, Some(false));
        assert_eq!(b.usb.mode.value.as_deref(), Some("normal"));
        assert_eq!(b.usb.location_id.value, Some(65541));
        assert!(b.serial_number.error.is_some());
    }
}
