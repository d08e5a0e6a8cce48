//! The lockdown values of a simulated device, derived from its fleet entry.
//!
//! Which keys exist, their types and which are readable before a session follow brief §6.

use super::fleet::{NetworkKind, SimDeviceSpec};
use chrono::{DateTime, Utc};
use plist::{Dictionary, Value};

/// Keys of the global domain a real device returns before a session (brief §6, from public
/// unpaired dumps of iOS 13 devices).
pub const PRE_SESSION_KEYS: &[&str] = &[
    "BasebandCertId",
    "BasebandKeyHashInformation",
    "BasebandSerialNumber",
    "BasebandVersion",
    "BoardId",
    "BuildVersion",
    "CPUArchitecture",
    "ChipID",
    "DeviceClass",
    "DeviceColor",
    "DeviceName",
    "DieID",
    "HardwareModel",
    "HasSiDP",
    "PartitionType",
    "ProductName",
    "ProductType",
    "ProductVersion",
    "ProductionSOC",
    "ProtocolVersion",
    "SupportedDeviceFamilies",
    "TelephonyCapability",
    "UniqueChipID",
    "UniqueDeviceID",
    "UntrustedHostBUID",
    "WiFiAddress",
];

/// Keys readable pre-session only when asked for by name.
pub const PRE_SESSION_BY_KEY: &[&str] = &["DevicePublicKey"];

/// Domains readable pre-session (brief §6: `com.apple.mobile.iTunes`).
pub const PRE_SESSION_DOMAINS: &[&str] = &["com.apple.mobile.iTunes"];

/// Global-domain keys that tell the device's clock. They are not stored with the other values
/// but read from the lab's simulated clock at the moment of each GetValue (see
/// [`clock_values`]), so a clock jump (`clock.jumps`) shows at once.
pub const CLOCK_KEYS: &[&str] = &["TimeIntervalSince1970", "TimeZoneOffsetFromUTC"];

/// The device's clock as lockdownd reports it: `TimeIntervalSince1970` (real, seconds since
/// 1970 UTC, fractional) and `TimeZoneOffsetFromUTC` (real, seconds east of UTC; here the
/// fleet's `update.local_offset_minutes`, 0 by default). `TimeIntervalSince1970` in the global
/// domain is what libimobiledevice's `idevicedate` reads (and sets) to show the device's date
/// (tools/idevicedate.c: `lockdownd_get_value(client, NULL, "TimeIntervalSince1970", …)`);
/// current iOS sends it as a real, old versions as an integer.
pub fn clock_values(now: DateTime<Utc>, offset_minutes: i32) -> [(&'static str, Value); 2] {
    let secs = now.timestamp() as f64 + f64::from(now.timestamp_subsec_micros()) / 1e6;
    [
        ("TimeIntervalSince1970", Value::Real(secs)),
        (
            "TimeZoneOffsetFromUTC",
            Value::Real(f64::from(super::clock::offset_seconds(offset_minutes))),
        ),
    ]
}

fn int(n: u64) -> Value {
    Value::Integer(n.into())
}

/// `TotalSystemCapacity` of the simulated device: a tenth of the disk, at most 16 GB.
pub fn system_capacity(total: u64) -> u64 {
    (total / 10).min(16_000_000_000)
}

pub fn telephony_capable(d: &SimDeviceSpec) -> bool {
    d.device_class == "iPhone"
}

/// Every value of a simulated device, by domain (`None` = the global domain).
pub fn domains(
    d: &SimDeviceSpec,
    public_key_pem: &str,
    buid: &str,
) -> Vec<(Option<String>, Dictionary)> {
    let mut g = Dictionary::new();
    let s = |v: &str| Value::String(v.to_string());
    g.insert("ActivationState".into(), s(&d.activation_state));
    g.insert("ActivationStateAcknowledged".into(), Value::Boolean(true));
    g.insert("BasebandVersion".into(), s("5.00.00"));
    g.insert("BluetoothAddress".into(), s(&d.bluetooth_address));
    g.insert("BoardId".into(), int(8));
    g.insert("BrickState".into(), Value::Boolean(false));
    g.insert("BuildVersion".into(), s(&d.ios_build));
    g.insert("CPUArchitecture".into(), s("arm64e"));
    g.insert("ChipID".into(), int(d.chip_id as u64));
    g.insert("DeviceClass".into(), s(&d.device_class));
    g.insert("DeviceColor".into(), s("1"));
    g.insert("DeviceName".into(), s(&d.name));
    g.insert(
        "DevicePublicKey".into(),
        Value::Data(public_key_pem.as_bytes().to_vec()),
    );
    g.insert("HardwareModel".into(), s(&d.hardware_model));
    g.insert("HostAttached".into(), Value::Boolean(true));
    g.insert("ModelNumber".into(), s(&d.model_number));
    g.insert("RegionInfo".into(), s("LL/A"));
    g.insert("PasswordProtected".into(), Value::Boolean(d.passcode));
    g.insert("ProductName".into(), s("iPhone OS"));
    g.insert("ProductType".into(), s(&d.product_type));
    g.insert("ProductVersion".into(), s(&d.ios_version));
    g.insert("ProtocolVersion".into(), s("2"));
    g.insert("SerialNumber".into(), s(&d.serial));
    let families = if d.device_class == "iPad" {
        vec![int(1), int(2)]
    } else {
        vec![int(1)]
    };
    g.insert("SupportedDeviceFamilies".into(), Value::Array(families));
    let telephony = telephony_capable(d);
    g.insert("TelephonyCapability".into(), Value::Boolean(telephony));
    if telephony {
        let sim = if d.network == NetworkKind::Cellular {
            "kCTSIMSupportSIMStatusReady"
        } else {
            "kCTSIMSupportSIMStatusNotInserted"
        };
        g.insert("SIMStatus".into(), s(sim));
        if d.network == NetworkKind::Cellular {
            g.insert(
                "PhoneNumber".into(),
                s(&format!(
                    "+1 (555) 01{:02}-{:04}",
                    d.ecid % 100,
                    d.ecid % 10_000
                )),
            );
        }
    }
    g.insert("TrustedHostAttached".into(), Value::Boolean(true));
    g.insert("UniqueChipID".into(), int(d.ecid));
    g.insert("UniqueDeviceID".into(), s(&d.udid));
    g.insert("UntrustedHostBUID".into(), s(buid));
    g.insert("WiFiAddress".into(), s(&d.wifi_address));

    let mut disk = Dictionary::new();
    let system = system_capacity(d.disk_total);
    disk.insert("AmountDataAvailable".into(), int(d.disk_free));
    disk.insert("AmountDataReserved".into(), int(0));
    disk.insert("TotalDataAvailable".into(), int(d.disk_free));
    disk.insert("TotalDataCapacity".into(), int(d.disk_total - system));
    disk.insert("TotalDiskCapacity".into(), int(d.disk_total));
    disk.insert("TotalSystemAvailable".into(), int(system / 4));
    disk.insert("TotalSystemCapacity".into(), int(system));

    let mut battery = Dictionary::new();
    battery.insert("BatteryCurrentCapacity".into(), int(d.battery_level as u64));
    battery.insert("BatteryIsCharging".into(), Value::Boolean(d.charging));
    battery.insert("ExternalChargeCapable".into(), Value::Boolean(true));
    battery.insert("ExternalConnected".into(), Value::Boolean(d.external_power));
    battery.insert(
        "FullyCharged".into(),
        Value::Boolean(d.battery_level >= 100 && d.external_power),
    );
    battery.insert("GasGaugeCapability".into(), Value::Boolean(true));
    battery.insert("HasBattery".into(), Value::Boolean(true));

    let mut chaperone = Dictionary::new();
    chaperone.insert("DeviceIsChaperoned".into(), Value::Boolean(d.supervised));

    let mut itunes = Dictionary::new();
    itunes.insert("MinITunesVersion".into(), s("12.8"));
    itunes.insert("MinMacOSVersion".into(), s("10.13"));

    let mut wireless = Dictionary::new();
    wireless.insert("SupportsWifi".into(), Value::Boolean(true));
    wireless.insert("EnableWifiConnections".into(), Value::Boolean(false));

    vec![
        (None, g),
        (Some("com.apple.disk_usage".into()), disk),
        (Some("com.apple.mobile.battery".into()), battery),
        (Some("com.apple.mobile.chaperone".into()), chaperone),
        (Some("com.apple.mobile.iTunes".into()), itunes),
        (Some("com.apple.mobile.wireless_lockdown".into()), wireless),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn clock_values_are_reals_in_seconds() {
        let t = Utc.with_ymd_and_hms(2026, 11, 27, 22, 30, 0).unwrap()
            + chrono::Duration::milliseconds(250);
        let [(k1, v1), (k2, v2)] = clock_values(t, -300);
        assert_eq!((k1, k2), (CLOCK_KEYS[0], CLOCK_KEYS[1]));
        assert_eq!(v1, Value::Real(t.timestamp() as f64 + 0.25));
        assert_eq!(v2, Value::Real(-18_000.0));
        // Out-of-range offsets count as UTC, as the 1–3 AM window does.
        assert_eq!(clock_values(t, 100_000)[1].1, Value::Real(0.0));
    }
}
