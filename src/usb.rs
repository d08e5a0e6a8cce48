//! Raw USB scan (rusb): Apple devices usbmuxd cannot see, e.g. in Recovery or DFU mode.
//!
//! Always through an explicit `rusb::Context`: the global helpers panic where there is no USB
//! (containers, CI). No USB bus or no permission is reported, not fatal.

use rusb::UsbContext;
use serde::Serialize;

/// Apple's USB vendor id (brief §7).
pub const APPLE_VENDOR_ID: u16 = 0x05ac;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UsbMode {
    /// Booted iOS; usbmuxd talks to it.
    Normal,
    Recovery,
    Dfu,
    /// "WTF" mode of old devices.
    Wtf,
}

impl UsbMode {
    /// Mode from the product id (brief §7): normal 0x1290–0x12af, Recovery 0x1280–0x1283,
    /// DFU 0x1227, WTF 0x1222. Other Apple products (keyboards, …) are `None`.
    pub fn from_product_id(pid: u16) -> Option<UsbMode> {
        match pid {
            0x1290..=0x12af => Some(UsbMode::Normal),
            0x1280..=0x1283 => Some(UsbMode::Recovery),
            0x1227 => Some(UsbMode::Dfu),
            0x1222 => Some(UsbMode::Wtf),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            UsbMode::Normal => "normal",
            UsbMode::Recovery => "recovery",
            UsbMode::Dfu => "dfu",
            UsbMode::Wtf => "wtf",
        }
    }
}

/// UDID from a USB serial string (brief §7): 24 hex characters get a dash after the 8th;
/// 40 hex characters are the old-style UDID as is; a Recovery/DFU serial
/// (`CPID:8030 … ECID:001A2D3E0C12802E …`) gives `00008030-001A2D3E0C12802E`.
pub fn udid_from_serial(serial: &str) -> Option<String> {
    let s = serial.trim();
    let hex = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_hexdigit());
    if s.len() == 24 && hex(s) {
        return Some(format!("{}-{}", &s[..8], &s[8..]));
    }
    if s.len() == 40 && hex(s) {
        return Some(s.to_string());
    }
    if s.len() == 25 && s.as_bytes()[8] == b'-' && hex(&s[..8]) && hex(&s[9..]) {
        return Some(s.to_string());
    }
    let field = |name: &str| {
        s.split_whitespace()
            .find_map(|t| t.strip_prefix(name))
            .filter(|v| hex(v))
    };
    let (cpid, ecid) = (field("CPID:")?, field("ECID:")?);
    let cpid = u32::from_str_radix(cpid, 16).ok()?;
    let ecid = u64::from_str_radix(ecid, 16).ok()?;
    Some(format!("{cpid:08X}-{ecid:016X}"))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsbDevice {
    pub bus: u8,
    pub address: u8,
    /// Port path from the root hub, e.g. "1-2.3".
    pub port_path: String,
    pub product_id: u16,
    pub mode: UsbMode,
    pub serial: Option<String>,
    pub udid: Option<String>,
    /// Why the serial could not be read (usually permissions), if it could not.
    pub serial_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum UsbScan {
    Ok { devices: Vec<UsbDevice> },
    Unavailable { reason: String },
}

/// Whether this host has the device nodes libusb reads USB devices through. On Linux that is
/// usbfs: `/dev/bus/usb`, the older `/proc/bus/usb`, or `/dev/usbdev*` nodes, the places libusb
/// looks before it gives up with "could not find usbfs" (libusb `linux_usbfs.c`,
/// `find_usbfs_path`). A bench or VM without them cannot be scanned; asking first spares the
/// scan its thread, libusb's start-up and its walk of `/dev`: a sixth of a one-device
/// `lab probe` back to back on such a machine, a third interleaved with other processes
/// (issue 16, README "Performance"). Other systems are always scanned.
pub fn usb_nodes_present() -> bool {
    #[cfg(target_os = "linux")]
    {
        let dir = |p: &str| std::path::Path::new(p).is_dir();
        dir("/dev/bus/usb")
            || dir("/proc/bus/usb")
            || std::fs::read_dir("/dev").is_ok_and(|d| {
                d.flatten()
                    .any(|e| e.file_name().as_encoded_bytes().starts_with(b"usbdev"))
            })
    }
    #[cfg(not(target_os = "linux"))]
    true
}

/// What a scan finds on a host without USB device nodes ([`usb_nodes_present`]).
pub fn no_usb_nodes() -> UsbScan {
    UsbScan::Unavailable {
        reason: "no USB access (no usbfs: /dev/bus/usb is missing); raw USB scan skipped".into(),
    }
}

/// The raw scan, on a blocking thread of the runtime, when this host has USB device nodes.
pub async fn scan_beside() -> UsbScan {
    if !usb_nodes_present() {
        return no_usb_nodes();
    }
    tokio::task::spawn_blocking(scan)
        .await
        .unwrap_or(UsbScan::Unavailable {
            reason: "USB scan failed".into(),
        })
}

/// Scan the USB buses for Apple devices.
pub fn scan() -> UsbScan {
    if !usb_nodes_present() {
        return no_usb_nodes();
    }
    let ctx = match rusb::Context::new() {
        Ok(c) => c,
        Err(e) => {
            return UsbScan::Unavailable {
                reason: format!("no USB access ({e}); raw USB scan skipped"),
            };
        }
    };
    let list = match ctx.devices() {
        Ok(l) => l,
        Err(e) => {
            return UsbScan::Unavailable {
                reason: format!("cannot list USB devices ({e})"),
            };
        }
    };
    let mut devices = Vec::new();
    for dev in list.iter() {
        let Ok(desc) = dev.device_descriptor() else {
            continue;
        };
        if desc.vendor_id() != APPLE_VENDOR_ID {
            continue;
        }
        let Some(mode) = UsbMode::from_product_id(desc.product_id()) else {
            continue;
        };
        let ports = dev.port_numbers().unwrap_or_default();
        let port_path = if ports.is_empty() {
            format!("{}", dev.bus_number())
        } else {
            format!(
                "{}-{}",
                dev.bus_number(),
                ports
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(".")
            )
        };
        let (serial, serial_error) = match dev.open() {
            Ok(h) => match h.read_serial_number_string_ascii(&desc) {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e.to_string())),
            },
            Err(e) => (None, Some(format!("cannot open device ({e})"))),
        };
        devices.push(UsbDevice {
            bus: dev.bus_number(),
            address: dev.address(),
            port_path,
            product_id: desc.product_id(),
            mode,
            udid: serial.as_deref().and_then(udid_from_serial),
            serial,
            serial_error,
        });
    }
    UsbScan::Ok { devices }
}

/// Linux usbmuxd's `LocationID` is `(bus << 16) | address` (brief §1.5).
pub fn location_id(bus: u8, address: u8) -> u64 {
    ((bus as u64) << 16) | address as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host without USB device nodes is not handed to libusb, and says so; one with them is.
    #[test]
    fn the_scan_is_skipped_exactly_where_usb_nodes_are_missing() {
        let skipped = scan() == no_usb_nodes();
        assert_eq!(skipped, !usb_nodes_present());
        let beside = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(scan_beside());
        assert_eq!(beside == no_usb_nodes(), !usb_nodes_present());
    }

    #[test]
    fn modes_from_product_ids() {
        assert_eq!(UsbMode::from_product_id(0x12a8), Some(UsbMode::Normal));
        assert_eq!(UsbMode::from_product_id(0x1290), Some(UsbMode::Normal));
        assert_eq!(UsbMode::from_product_id(0x12af), Some(UsbMode::Normal));
        assert_eq!(UsbMode::from_product_id(0x1281), Some(UsbMode::Recovery));
        assert_eq!(UsbMode::from_product_id(0x1227), Some(UsbMode::Dfu));
        assert_eq!(UsbMode::from_product_id(0x1222), Some(UsbMode::Wtf));
        assert_eq!(UsbMode::from_product_id(0x12b0), None);
        assert_eq!(UsbMode::from_product_id(0x0250), None);
    }

    #[test]
    fn udids_from_serial_strings() {
        assert_eq!(
            udid_from_serial("00008030001A2D3E0C12802E").as_deref(),
            Some("00008030-001A2D3E0C12802E")
        );
        let old = "c16b08b1a1b2c3d4e5f6a7b8c9d0e1f2a3b469fd";
        assert_eq!(udid_from_serial(old).as_deref(), Some(old));
        assert_eq!(
            udid_from_serial("CPID:8030 CPRV:11 CPFM:03 SCEP:01 BDID:04 ECID:001A2D3E0C12802E IBFL:3C SRTG:[iBoot-7459.0.0]").as_deref(),
            Some("00008030-001A2D3E0C12802E")
        );
        assert_eq!(udid_from_serial("not a serial"), None);
        assert_eq!(udid_from_serial(""), None);
    }

    #[test]
    fn location_id_as_linux_usbmuxd_builds_it() {
        assert_eq!(location_id(1, 5), 65541);
    }

    #[test]
    fn scan_never_panics_without_usb() {
        // In CI there is no USB bus: the scan must say so, not panic.
        match scan() {
            UsbScan::Ok { devices } => assert!(devices.iter().all(|d| d.product_id != 0)),
            UsbScan::Unavailable { reason } => assert!(reason.contains("USB")),
        }
    }
}
