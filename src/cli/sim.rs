//! `lab sim serve --fleet FLEET.yaml [--usbmuxd ADDR]... [--speed N]`

use super::CliError;
use crate::sim::{self, SimError};
use crate::usbmux::UsbmuxAddr;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The fleet file (see trials/README.md).
    #[arg(long, value_name = "FLEET.yaml")]
    fleet: PathBuf,
    /// Simulated seconds per real second (attach/detach schedules run this much faster).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Override the fleet's identity seed.
    #[arg(long)]
    seed: Option<u64>,
}

/// Where the simulator listens when no address is given: loopback TCP, the one form every
/// client accepts in USBMUXD_SOCKET_ADDRESS (brief §2).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:27015";

pub async fn serve(flags: &[String], a: ServeArgs) -> Result<u8, CliError> {
    let listen = if flags.is_empty() {
        vec![UsbmuxAddr::parse_listen(DEFAULT_LISTEN).expect("static address")]
    } else {
        let mut v = Vec::new();
        for f in flags {
            for part in f.split(',').filter(|p| !p.trim().is_empty()) {
                v.push(UsbmuxAddr::parse_listen(part)?);
            }
        }
        v
    };
    if !(a.speed > 0.0 && a.speed.is_finite()) {
        return Err(CliError::BadArgument(format!(
            "--speed {} must be a positive number",
            a.speed
        )));
    }
    let running = sim::start(&a.fleet, &listen, a.speed, a.seed)
        .await
        .map_err(|e| match e {
            SimError::Fleet(i) => CliError::Input(i),
            other => CliError::Failed(other.to_string()),
        })?;
    {
        let mut out = std::io::stdout().lock();
        for addr in &running.addrs {
            let _ = writeln!(
                out,
                "lab sim: usbmuxd listening on {addr} ({} devices from {})",
                running.lab.devices.len(),
                a.fleet.display()
            );
        }
        if let Some(tcp) = running
            .addrs
            .iter()
            .find(|a| matches!(a, UsbmuxAddr::Tcp { .. }))
        {
            let _ = writeln!(out, "lab sim: export USBMUXD_SOCKET_ADDRESS={tcp}");
        }
        let _ = out.flush();
    }
    let _ = tokio::signal::ctrl_c().await;
    for addr in &running.addrs {
        if let UsbmuxAddr::Unix(p) = addr {
            let _ = std::fs::remove_file(p);
        }
    }
    Ok(0)
}
