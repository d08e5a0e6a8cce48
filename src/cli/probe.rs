//! `lab probe [--udid U]... [--json] [--sim FLEET]`

use super::{CliError, print_json, table, usbmuxd_addrs};
use crate::mdm::backend::{MdmBackend, MicroMdm, NanoMdm};
use crate::mdm::webhook_receiver::WebhookReceiver;
use crate::probe::mdm_side;
use crate::probe::{
    AttachedDevice, DeviceProbe, HostError, ProbeOptions, ProbeStatus, list_all, probe_all,
};
use crate::usb::{self, UsbScan};
use crate::usbmux::UsbmuxAddr;
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};
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
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true, value_parser = super::args::seconds)]
    timeout: f64,
    /// Start a simulated lab from this fleet file on a loopback port and probe it through its
    /// usbmuxd socket (a rehearsal without hardware).
    #[arg(long, value_name = "FLEET.yaml")]
    sim: Option<PathBuf>,
    /// Also ask each device through this MDM (DeviceInformation, SecurityInfo) and flag facts
    /// lockdown and the MDM disagree on. With --sim, the simulated lab's own MDM is used.
    #[arg(long, value_name = "URL")]
    mdm: Option<String>,
    /// Which API the MDM speaks.
    #[arg(long, value_enum, default_value_t = MdmKind::Embedded)]
    mdm_kind: MdmKind,
    /// Environment variable holding the MDM API key.
    #[arg(long, default_value = "LAB_MDM_API_KEY")]
    mdm_api_key_env: String,
    /// Seconds to wait for the MDM answers.
    #[arg(long, default_value_t = 30.0, allow_negative_numbers = true, value_parser = super::args::seconds)]
    mdm_wait: f64,
    /// Where to receive webhooks (nanomdm, micromdm: point the MDM's webhook URL here).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9401")]
    webhook_listen: String,
    /// Environment variable holding the webhook HMAC key (X-Hmac-Signature is then required).
    #[arg(long, value_name = "NAME")]
    webhook_hmac_key_env: Option<String>,
}

impl ProbeArgs {
    /// One named device on the bench's usbmuxd, nothing else started or asked.
    pub fn one_device(&self) -> bool {
        self.udids.len() == 1 && self.sim.is_none() && self.mdm.is_none()
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MdmKind {
    Embedded,
    Nanomdm,
    Micromdm,
}

#[derive(Serialize)]
struct ProbeReport {
    lab_version: &'static str,
    probed_at: String,
    devices: Vec<DeviceProbe>,
    host_errors: Vec<HostError>,
}

pub async fn run(flags: &[String], a: ProbeArgs) -> Result<u8, CliError> {
    let timeout = super::seconds_arg(a.timeout, 0.05, 3600.0);
    let sim_key = crate::tls::random_secret();
    let sim = match &a.sim {
        Some(fleet) => Some(start_sim(fleet, &sim_key, a.json).await?),
        None => None,
    };
    let addrs = match &sim {
        Some(sim) => sim.addrs.clone(),
        None => usbmuxd_addrs(flags)?,
    };
    // The raw USB scan (bus-port paths, for the output only) runs beside the listing and the
    // probes instead of before them; on a host without USB device nodes it is not started at
    // all (`usb::scan_beside`, issue 16).
    let usb = tokio::spawn(usb::scan_beside());
    let (devices, host_errors) = attached(&addrs, &a.udids, timeout).await?;
    let mut probes = probe_all(
        devices.into_iter().map(|d| (d, None)).collect(),
        ProbeOptions {
            timeout,
            ..ProbeOptions::default()
        },
    )
    .await;
    add_usb_ports(&mut probes, usb.await);
    let mdm = match (&sim, &a.mdm) {
        (Some(sim), _) => sim
            .mdm
            .as_ref()
            .map(|m| (m.url.clone(), MdmKind::Embedded, Some(sim_key.clone()))),
        (None, Some(url)) => Some((url.clone(), a.mdm_kind, None)),
        (None, None) => None,
    };
    // Keep the webhook listener alive while the answers come in.
    let mut _receiver = None;
    if let Some((url, kind, key)) = mdm {
        let key = match key {
            Some(k) => k,
            None => env_secret(&a.mdm_api_key_env).ok_or_else(|| {
                CliError::BadArgument(format!(
                    "--mdm needs the API key in the environment variable {}",
                    a.mdm_api_key_env
                ))
            })?,
        };
        let (backend, receiver) = mdm_backend(&a, kind, &url, &key, timeout).await?;
        _receiver = receiver;
        if let Some(sim) = &sim {
            crate::mdm::backend::wait_enrolled(
                &url,
                &key,
                sim.lab.devices.len(),
                Duration::from_secs(20),
            )
            .await;
        }
        let wait = super::seconds_arg(a.mdm_wait, 0.1, 3600.0);
        add_mdm_facts(backend.as_ref(), &mut probes, wait).await;
    }
    Ok(print(a.json, probes, host_errors))
}

/// `--sim`: a simulated lab from the fleet file, its usbmuxd and embedded MDM on loopback.
async fn start_sim(
    fleet: &Path,
    sim_key: &str,
    quiet: bool,
) -> Result<crate::sim::RunningSim, CliError> {
    let listen = UsbmuxAddr::parse_listen("127.0.0.1:0").expect("static address");
    let opts = crate::sim::SimOptions {
        listen: vec![listen],
        speed: 1.0,
        seed: None,
        mdm: crate::sim::SimMdm::Embedded {
            listen: "127.0.0.1:0".into(),
            api_key: sim_key.to_string(),
            faults: None,
            webhook_url: None,
        },
    };
    let sim = crate::sim::start(fleet, opts).await.map_err(|e| match e {
        crate::sim::SimError::Fleet(i) => CliError::Input(i),
        other => CliError::Failed(other.to_string()),
    })?;
    if !quiet {
        eprintln!(
            "simulated lab from {} on {} ({})",
            fleet.display(),
            sim.addrs[0],
            crate::format::count(sim.lab.devices.len(), "device")
        );
    }
    Ok(sim)
}

/// The devices attached to the usbmuxd hosts (only `udids` when given; each must be there),
/// and the hosts that did not answer. An error when none answered.
async fn attached(
    addrs: &[UsbmuxAddr],
    udids: &[String],
    timeout: Duration,
) -> Result<(Vec<AttachedDevice>, Vec<HostError>), CliError> {
    let (mut devices, host_errors) = list_all(addrs, timeout.min(Duration::from_secs(5))).await;
    if host_errors.len() == addrs.len() {
        let msgs: Vec<String> = host_errors.iter().map(|e| e.error.clone()).collect();
        return Err(CliError::Failed(format!(
            "no usbmuxd reachable: {}\n{}",
            msgs.join("; "),
            super::devices::USBMUXD_HINT
        )));
    }
    if !udids.is_empty() {
        for u in udids {
            if !devices.iter().any(|d| &d.entry.serial_number == u) {
                return Err(CliError::Failed(format!("device {u} is not attached")));
            }
        }
        devices.retain(|d| udids.contains(&d.entry.serial_number));
    }
    Ok((devices, host_errors))
}

/// Each probed device's USB port path, where the raw USB scan found it.
fn add_usb_ports(probes: &mut [DeviceProbe], usb: Result<UsbScan, tokio::task::JoinError>) {
    let UsbScan::Ok { devices } = usb.unwrap_or(UsbScan::Unavailable {
        reason: "USB scan failed".into(),
    }) else {
        return;
    };
    for p in probes {
        let port = devices
            .iter()
            .find(|u| u.udid.as_deref() == Some(p.udid.as_str()))
            .map(|u| u.port_path.as_str());
        p.baseline.usb.port_path = crate::probe::baseline::port_path_field(port);
    }
}

/// A non-empty environment variable.
fn env_secret(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|k| !k.is_empty())
}

/// The client of the MDM at `url`, and the webhook listener it reads answers from (nanomdm,
/// micromdm), which must stay alive while the answers come in.
async fn mdm_backend(
    a: &ProbeArgs,
    kind: MdmKind,
    url: &str,
    key: &str,
    timeout: Duration,
) -> Result<(Box<dyn MdmBackend>, Option<WebhookReceiver>), CliError> {
    if kind == MdmKind::Embedded {
        return Ok((Box::new(NanoMdm::embedded(url, key, timeout)), None));
    }
    let hmac = match &a.webhook_hmac_key_env {
        Some(n) => Some(
            env_secret(n)
                .ok_or_else(|| {
                    CliError::BadArgument(format!("environment variable {n} is not set"))
                })?
                .into_bytes(),
        ),
        None => None,
    };
    let r = WebhookReceiver::start(&a.webhook_listen, hmac)
        .await
        .map_err(|e| CliError::Failed(format!("webhook listener on {}: {e}", a.webhook_listen)))?;
    let inbox = r.inbox.clone();
    let backend: Box<dyn MdmBackend> = if kind == MdmKind::Nanomdm {
        Box::new(NanoMdm::with_webhooks(url, key, timeout, inbox))
    } else {
        Box::new(MicroMdm::new(url, key, timeout, inbox))
    };
    Ok((backend, Some(r)))
}

/// Ask the MDM about every probed device (DeviceInformation, SecurityInfo) and record where it
/// and lockdown disagree.
async fn add_mdm_facts(backend: &dyn MdmBackend, probes: &mut [DeviceProbe], wait: Duration) {
    // A read that failed and was retried leaves no trace in a probe's output: a field the MDM
    // never answered says why (`Field::missing`), and `lab probe` keeps no journal.
    let failed = mdm_side::FailedReads::default();
    let answers = probes
        .iter()
        .filter(|p| p.status != ProbeStatus::Failed)
        .map(|p| {
            mdm_side::query(
                backend,
                &p.udid,
                p.baseline.product_version.get().map(String::as_str),
                wait,
                &failed,
            )
        });
    let facts = crate::join::join_all(answers.collect()).await;
    let mut it = facts.into_iter();
    for p in probes
        .iter_mut()
        .filter(|p| p.status != ProbeStatus::Failed)
    {
        if let Some(f) = it.next() {
            p.disagreements = mdm_side::compare(&p.baseline, &f);
            p.mdm = Some(f);
        }
    }
}

/// Print the probes (JSON or a table); the exit code: 0 when every device was probed, 1 when
/// one failed or none is attached.
fn print(json: bool, probes: Vec<DeviceProbe>, host_errors: Vec<HostError>) -> u8 {
    let all_ok = probes.iter().all(|p| p.status == ProbeStatus::Ok);
    let none = probes.is_empty();
    if json {
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
        return 1;
    }
    if all_ok { 0 } else { 1 }
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
                match &p.mdm {
                    None => "-".to_string(),
                    Some(m) if m.os_version.value.is_none() => "no answer".to_string(),
                    Some(_) if p.disagreements.is_empty() => "agrees".to_string(),
                    Some(_) => format!(
                        "DISAGREES: {}",
                        p.disagreements
                            .iter()
                            .map(|d| d.fact)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                },
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
                "MDM",
                "STATUS"
            ],
            &rows
        )
    );
}
