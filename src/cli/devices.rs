//! `lab devices [--json] [--watch [--for DURATION]]`

/// What to try when no usbmuxd answers (`lab devices`, `lab probe`).
pub(super) const USBMUXD_HINT: &str = "Is usbmuxd running? Point lab at it with --usbmuxd ADDR or USBMUXD_SOCKET_ADDRESS (e.g. 127.0.0.1:27015 for `lab sim serve`).";

use super::{CliError, print_json, table, usbmuxd_addrs};
use crate::probe::{AttachedDevice, HostError, list_all};
use crate::usb::{self, UsbDevice, UsbMode, UsbScan};
use crate::usbmux::{MuxEvent, UsbmuxClient};
use clap::Args;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct DevicesArgs {
    /// Stable JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Follow attach/detach events (usbmuxd Listen) until Ctrl-C or --for elapses.
    #[arg(long)]
    watch: bool,
    /// With --watch: stop after this long (e.g. 30s, 5m).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    watch_for: Option<Duration>,
    /// Seconds to wait for each usbmuxd.
    #[arg(long, default_value_t = 5.0, allow_negative_numbers = true, value_parser = super::args::seconds)]
    timeout: f64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::units::parse_duration(s)
}

/// What lockdownd tells anyone before pairing (device brief §6: `DeviceName`, `ProductType`,
/// `ProductVersion`, `BuildVersion` are in the pre-session global dict): enough to tell two
/// devices on a bench apart without a pair record or a session.
#[derive(Serialize, Default, Clone, Debug, PartialEq)]
struct PreSession {
    name: Option<String>,
    product_type: Option<String>,
    /// Marketing name from `data/models.csv`.
    model: Option<String>,
    ios_version: Option<String>,
    ios_build: Option<String>,
}

impl PreSession {
    fn from_dict(d: &plist::Dictionary) -> PreSession {
        let s = |k: &str| {
            d.get(k)
                .and_then(plist::Value::as_string)
                .map(str::to_string)
        };
        let product_type = s("ProductType");
        PreSession {
            name: s("DeviceName"),
            model: product_type
                .as_deref()
                .and_then(crate::models::lookup)
                .map(|m| m.marketing_name.clone()),
            product_type,
            ios_version: s("ProductVersion"),
            ios_build: s("BuildVersion"),
        }
    }
}

/// Devices asked at once: well under a usbmuxd's connection cap (listen_limits).
const PRE_SESSION_CONCURRENCY: usize = 64;

/// QueryType + GetValue{} on lockdownd, without a pair record or a session. `None` when the
/// device does not answer (it still shows, from usbmuxd's own record).
async fn pre_session(
    addr: crate::usbmux::UsbmuxAddr,
    device_id: u32,
    timeout: Duration,
) -> Option<PreSession> {
    let mux = UsbmuxClient { addr, timeout };
    let io = mux
        .connect(device_id, crate::usbmux::message::LOCKDOWN_PORT)
        .await
        .ok()?;
    let mut c = crate::lockdown::client::LockdownClient::new(io, "devices", timeout);
    c.query_type().await.ok()?;
    let v = c.get_value(None, None).await.ok()?;
    Some(PreSession::from_dict(v.as_dictionary()?))
}

async fn pre_sessions(
    devices: &[AttachedDevice],
    addrs: &[crate::usbmux::UsbmuxAddr],
    timeout: Duration,
) -> Vec<Option<PreSession>> {
    let mut out = Vec::with_capacity(devices.len());
    for chunk in devices.chunks(PRE_SESSION_CONCURRENCY) {
        let futs = chunk
            .iter()
            .map(|d| {
                let addr = addrs.iter().find(|a| a.to_string() == d.host).cloned();
                let id = d.entry.device_id;
                async move {
                    match addr {
                        Some(a) => pre_session(a, id, timeout).await,
                        None => None,
                    }
                }
            })
            .collect();
        out.extend(crate::join::join_all(futs).await);
    }
    out
}

#[derive(Serialize)]
struct DeviceRow {
    host: Option<String>,
    device_id: Option<u32>,
    udid: Option<String>,
    #[serde(flatten)]
    pre_session: PreSession,
    connection_type: Option<String>,
    product_id: Option<u32>,
    location_id: Option<u64>,
    mode: Option<UsbMode>,
    port_path: Option<String>,
}

#[derive(Serialize)]
struct DevicesReport {
    devices: Vec<DeviceRow>,
    usb: UsbScan,
    host_errors: Vec<HostError>,
}

fn merge(devices: &[AttachedDevice], pre: &[Option<PreSession>], usb: &UsbScan) -> Vec<DeviceRow> {
    let usb_devs: &[UsbDevice] = match usb {
        UsbScan::Ok { devices } => devices,
        UsbScan::Unavailable { .. } => &[],
    };
    let mut rows: Vec<DeviceRow> = devices
        .iter()
        .zip(pre.iter().chain(std::iter::repeat(&None)))
        .map(|(d, pre)| {
            let u = usb_devs
                .iter()
                .find(|u| u.udid.as_deref() == Some(d.entry.serial_number.as_str()));
            DeviceRow {
                host: Some(d.host.clone()),
                device_id: Some(d.entry.device_id),
                udid: Some(d.entry.serial_number.clone()),
                pre_session: pre.clone().unwrap_or_default(),
                connection_type: Some(d.entry.connection_type.clone()),
                product_id: d.entry.product_id,
                location_id: d.entry.location_id,
                mode: d
                    .entry
                    .product_id
                    .and_then(|p| u16::try_from(p).ok())
                    .and_then(UsbMode::from_product_id),
                port_path: u.map(|u| u.port_path.clone()),
            }
        })
        .collect();
    // Devices only the raw USB scan sees: Recovery, DFU, or not handled by usbmuxd.
    for u in usb_devs {
        let known = u
            .udid
            .as_ref()
            .is_some_and(|id| devices.iter().any(|d| &d.entry.serial_number == id));
        if !known {
            rows.push(DeviceRow {
                host: None,
                device_id: None,
                udid: u.udid.clone(),
                pre_session: PreSession::default(),
                connection_type: Some("USB (raw)".into()),
                product_id: Some(u.product_id as u32),
                location_id: Some(usb::location_id(u.bus, u.address)),
                mode: Some(u.mode),
                port_path: Some(u.port_path.clone()),
            });
        }
    }
    rows
}

pub async fn run(flags: &[String], a: DevicesArgs) -> Result<u8, CliError> {
    let addrs = usbmuxd_addrs(flags)?;
    let timeout = super::seconds_arg(a.timeout, 0.1, 3600.0);
    if a.watch {
        return watch(addrs, timeout, a.json, a.watch_for).await;
    }
    let (devices, host_errors) = list_all(&addrs, timeout).await;
    let usb = usb::scan_beside().await;
    let usb_ok = matches!(usb, UsbScan::Ok { .. });
    if host_errors.len() == addrs.len() && !usb_ok {
        let mut msg = String::from("no device source is reachable:\n");
        for e in &host_errors {
            msg.push_str(&format!("  - {}\n", e.error));
        }
        if let UsbScan::Unavailable { reason } = &usb {
            msg.push_str(&format!("  - {reason}\n"));
        }
        msg.push_str(USBMUXD_HINT);
        return Err(CliError::Failed(msg));
    }
    let pre = pre_sessions(&devices, &addrs, timeout).await;
    let rows = merge(&devices, &pre, &usb);
    if a.json {
        print_json(&DevicesReport {
            devices: rows,
            usb,
            host_errors,
        });
    } else {
        for e in &host_errors {
            eprintln!("warning: {}", e.error);
        }
        if let UsbScan::Unavailable { reason } = &usb {
            eprintln!("note: {reason}");
        }
        let opt = |o: Option<String>| o.unwrap_or_else(|| "-".into());
        let body: Vec<Vec<String>> = rows
            .into_iter()
            .map(|r| {
                let ios = match (r.pre_session.ios_version, r.pre_session.ios_build) {
                    (Some(v), Some(b)) => Some(format!("{v} ({b})")),
                    (v, _) => v,
                };
                vec![
                    opt(r.udid),
                    opt(r.pre_session.name),
                    opt(r.pre_session.model.or(r.pre_session.product_type)),
                    opt(ios),
                    opt(r.host),
                    opt(r.device_id.map(|x| x.to_string())),
                    opt(r.connection_type),
                    opt(r.mode.map(|m| m.as_str().to_string())),
                    opt(r.product_id.map(|p| format!("0x{p:04x}"))),
                    opt(r.location_id.map(|l| format!("0x{l:x}"))),
                    opt(r.port_path),
                ]
            })
            .collect();
        if body.is_empty() {
            println!("no devices attached");
        } else {
            print!(
                "{}",
                table::render(
                    &[
                        "UDID",
                        "NAME",
                        "MODEL",
                        "IOS",
                        "HOST",
                        "ID",
                        "CONNECTION",
                        "MODE",
                        "PRODUCT",
                        "LOCATION",
                        "PORT"
                    ],
                    &body
                )
            );
        }
    }
    Ok(0)
}

#[derive(Serialize)]
struct WatchEvent<'a> {
    event: &'a str,
    host: &'a str,
    device_id: u32,
    udid: Option<&'a str>,
    at: String,
}

async fn watch(
    addrs: Vec<crate::usbmux::UsbmuxAddr>,
    timeout: Duration,
    json: bool,
    watch_for: Option<Duration>,
) -> Result<u8, CliError> {
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<(String, Result<Option<MuxEvent>, String>)>(256);
    let mut started = 0;
    for addr in addrs {
        let client = UsbmuxClient { addr, timeout };
        let host = client.addr.to_string();
        match client.listen().await {
            Ok(mut stream) => {
                started += 1;
                let tx = tx.clone();
                tokio::spawn(async move {
                    loop {
                        let ev = stream.next().await.map_err(|e| e.to_string());
                        let end = !matches!(ev, Ok(Some(_)));
                        if tx.send((host.clone(), ev)).await.is_err() || end {
                            return;
                        }
                    }
                });
            }
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    drop(tx);
    if started == 0 {
        return Err(CliError::Failed(
            "no usbmuxd to watch is reachable (see warnings above)".into(),
        ));
    }
    let deadline = async {
        match watch_for {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut udids: HashMap<(String, u32), String> = HashMap::new();
    loop {
        tokio::select! {
            _ = &mut deadline => return Ok(0),
            _ = tokio::signal::ctrl_c() => return Ok(0),
            msg = rx.recv() => {
                let Some((host, ev)) = msg else { return Ok(0) };
                let (event, id, udid) = match ev {
                    Ok(Some(MuxEvent::Attached(e))) => {
                        udids.insert((host.clone(), e.device_id), e.serial_number.clone());
                        ("attached", e.device_id, Some(e.serial_number))
                    }
                    Ok(Some(MuxEvent::Detached { device_id })) => {
                        ("detached", device_id, udids.remove(&(host.clone(), device_id)))
                    }
                    Ok(Some(MuxEvent::Paired { device_id })) => {
                        ("paired", device_id, udids.get(&(host.clone(), device_id)).cloned())
                    }
                    Ok(None) => { eprintln!("warning: usbmuxd at {host} closed the event stream"); continue; }
                    Err(e) => { eprintln!("warning: {e}"); continue; }
                };
                let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                if json {
                    let line = serde_json::to_string(&WatchEvent { event, host: &host, device_id: id, udid: udid.as_deref(), at }).expect("serialises");
                    println!("{line}");
                } else {
                    println!("{at}  {event:<8}  {}  (device {id} on {host})", udid.as_deref().unwrap_or("?"));
                }
                use std::io::Write;
                let _ = std::io::stdout().flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pre_session_dict_names_the_device_and_its_model() {
        let mut d = plist::Dictionary::new();
        d.insert("DeviceName".into(), "Bench iPhone 11".into());
        d.insert("ProductType".into(), "iPhone12,1".into());
        d.insert("ProductVersion".into(), "17.5.1".into());
        d.insert("BuildVersion".into(), "21F90".into());
        let p = PreSession::from_dict(&d);
        assert_eq!(p.name.as_deref(), Some("Bench iPhone 11"));
        assert_eq!(p.model.as_deref(), Some("iPhone 11"));
        assert_eq!(p.ios_version.as_deref(), Some("17.5.1"));
        assert_eq!(p.ios_build.as_deref(), Some("21F90"));
    }

    #[test]
    fn an_unknown_model_keeps_its_product_type_and_missing_keys_stay_unknown() {
        let mut d = plist::Dictionary::new();
        d.insert("ProductType".into(), "iPhone99,9".into());
        d.insert("ProductVersion".into(), plist::Value::Integer(17.into()));
        let p = PreSession::from_dict(&d);
        assert_eq!(p.model, None);
        assert_eq!(p.product_type.as_deref(), Some("iPhone99,9"));
        assert_eq!(
            p.ios_version, None,
            "a version that is not a string is not guessed"
        );
        assert_eq!(p.name, None);
    }
}
