//! `lab probe [--udid U]... [--json] [--sim FLEET]`

use super::{CliError, print_json, table, usbmuxd_addrs};
use crate::probe::{DeviceProbe, HostError, ProbeOptions, ProbeStatus, list_all, probe_all};
use crate::usb::{self, UsbScan};
use crate::usbmux::UsbmuxAddr;
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// Only these devices (repeatable).
    #[arg(long = "udid", value_name = "UDID")]
    udids: Vec<String>,
    /// Stable JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for each reply of a device (a silent device fails after this).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Start a simulated lab from this fleet file on a loopback port and probe it through its
    /// usbmuxd socket (a rehearsal without hardware).
    #[arg(long, value_name = "FLEET.yaml")]
    sim: Option<PathBuf>,
}

#[derive(Serialize)]
struct ProbeReport {
    lab_version: &'static str,
    probed_at: String,
    devices: Vec<DeviceProbe>,
    host_errors: Vec<HostError>,
}

pub async fn run(flags: &[String], a: ProbeArgs) -> Result<u8, CliError> {
    let timeout = Duration::from_secs_f64(a.timeout.clamp(0.05, 3600.0));
    let (addrs, _sim) = match &a.sim {
        Some(fleet) => {
            let listen = UsbmuxAddr::parse_listen("127.0.0.1:0").expect("static address");
            let opts = crate::sim::SimOptions {
                listen: vec![listen],
                speed: 1.0,
                seed: None,
                mdm: crate::sim::SimMdm::None,
            };
            let sim = crate::sim::start(fleet, opts).await.map_err(|e| match e {
                crate::sim::SimError::Fleet(i) => CliError::Input(i),
                other => CliError::Failed(other.to_string()),
            })?;
            if !a.json {
                eprintln!(
                    "simulated lab from {} on {} ({} devices)",
                    fleet.display(),
                    sim.addrs[0],
                    sim.lab.devices.len()
                );
            }
            (sim.addrs.clone(), Some(sim))
        }
        None => (usbmuxd_addrs(flags)?, None),
    };
    let (mut devices, host_errors) = list_all(&addrs, timeout.min(Duration::from_secs(5))).await;
    if host_errors.len() == addrs.len() {
        let msgs: Vec<String> = host_errors.iter().map(|e| e.error.clone()).collect();
        return Err(CliError::Failed(format!(
            "no usbmuxd reachable: {}",
            msgs.join("; ")
        )));
    }
    if !a.udids.is_empty() {
        for u in &a.udids {
            if !devices.iter().any(|d| &d.entry.serial_number == u) {
                return Err(CliError::Failed(format!("device {u} is not attached")));
            }
        }
        devices.retain(|d| a.udids.contains(&d.entry.serial_number));
    }
    let usb = tokio::task::spawn_blocking(usb::scan)
        .await
        .unwrap_or(UsbScan::Unavailable {
            reason: "USB scan failed".into(),
        });
    let with_ports = devices
        .into_iter()
        .map(|d| {
            let port = match &usb {
                UsbScan::Ok { devices } => devices
                    .iter()
                    .find(|u| u.udid.as_deref() == Some(d.entry.serial_number.as_str()))
                    .map(|u| u.port_path.clone()),
                UsbScan::Unavailable { .. } => None,
            };
            (d, port)
        })
        .collect();
    let probes = probe_all(
        with_ports,
        ProbeOptions {
            timeout,
            ..ProbeOptions::default()
        },
    )
    .await;
    let all_ok = probes.iter().all(|p| p.status == ProbeStatus::Ok);
    let none = probes.is_empty();
    if a.json {
        print_json(&ProbeReport {
            lab_version: env!("CARGO_PKG_VERSION"),
            probed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            devices: probes,
            host_errors,
        });
    } else {
        for e in &host_errors {
            eprintln!("warning: {}", e.error);
        }
        print_table(&probes);
    }
    if none {
        eprintln!("no devices attached");
        return Ok(1);
    }
    Ok(if all_ok { 0 } else { 1 })
}

fn gb(b: Option<&u64>) -> String {
    b.map(|b| format!("{:.1} GB", *b as f64 / 1e9))
        .unwrap_or_else(|| "?".into())
}

fn yn(b: Option<&bool>) -> String {
    match b {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => "?".into(),
    }
}

fn print_table(probes: &[DeviceProbe]) {
    let rows: Vec<Vec<String>> = probes
        .iter()
        .map(|p| {
            let b = &p.baseline;
            let s =
                |f: &crate::probe::Field<String>| f.get().cloned().unwrap_or_else(|| "?".into());
            let power = match (
                b.battery.is_charging.get(),
                b.battery.external_connected.get(),
            ) {
                (Some(true), _) => "charging",
                (_, Some(true)) => "external",
                (Some(false), Some(false)) => "battery",
                _ => "?",
            };
            let status = match (&p.status, &p.failure) {
                (ProbeStatus::Ok, _) => "ok".to_string(),
                (st, Some(f)) => format!(
                    "{}: {} at {}: {}",
                    if *st == ProbeStatus::Partial {
                        "partial"
                    } else {
                        "FAILED"
                    },
                    serde_json::to_value(f.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    f.stage,
                    f.message
                ),
                (_, None) => "?".into(),
            };
            vec![
                p.udid.clone(),
                s(&b.device_name),
                b.marketing_name
                    .get()
                    .cloned()
                    .unwrap_or_else(|| s(&b.product_type)),
                format!("{} ({})", s(&b.product_version), s(&b.build_version)),
                b.battery
                    .current_capacity
                    .get()
                    .map(|c| format!("{c}%"))
                    .unwrap_or_else(|| "?".into()),
                power.into(),
                gb(b.disk.amount_data_available.get()),
                yn(b.passcode.password_protected.get()),
                yn(b.supervision.device_is_chaperoned.get()),
                status,
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "UDID",
                "NAME",
                "MODEL",
                "iOS",
                "BATTERY",
                "POWER",
                "FREE",
                "PASSCODE",
                "SUPERVISED",
                "STATUS"
            ],
            &rows
        )
    );
}
