//! The simulated lab: devices behind a usbmuxd-compatible socket, each with a lockdownd that
//! speaks the real protocol (TLS included). Reached only through sockets, like a real bench.
//!
//! The simulator shares the codecs (usbmux, lockdown, plist) with the client but none of the
//! harness's decision code.

pub mod apns;
pub mod clock;
pub mod fleet;
pub mod identity;
pub mod lab;
pub mod lockdownd;
pub mod os_update;
pub mod quirks;
pub mod usbmuxd;
pub mod values;

use crate::input::InputError;
use crate::usbmux::UsbmuxAddr;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Fleet(#[from] InputError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A running simulated lab.
pub struct RunningSim {
    pub lab: Arc<lab::SimLab>,
    /// Where its usbmuxd answers (ports resolved).
    pub addrs: Vec<UsbmuxAddr>,
}

/// Load a fleet, bind the usbmuxd listeners and start serving (on the current tokio runtime).
pub async fn start(
    fleet_path: &Path,
    listen: &[UsbmuxAddr],
    speed: f64,
    seed_override: Option<u64>,
) -> Result<RunningSim, SimError> {
    let text = std::fs::read_to_string(fleet_path).map_err(|e| InputError {
        path: fleet_path.to_path_buf(),
        line: None,
        column: None,
        message: format!("cannot read: {e}"),
        snippet: None,
    })?;
    let file: fleet::FleetFile = crate::input::parse_yaml(fleet_path, &text)?;
    let seed = seed_override.unwrap_or(file.seed);
    let specs = fleet::parse(fleet_path, &text)?;
    let lab = tokio::task::spawn_blocking(move || lab::SimLab::new(specs, seed, speed))
        .await
        .expect("identity generation thread")?;
    let mut addrs = Vec::new();
    for a in listen {
        let l = usbmuxd::Listener::bind(a)
            .await
            .map_err(|source| SimError::Bind {
                addr: a.to_string(),
                source,
            })?;
        addrs.push(l.local_addr());
        tokio::spawn(usbmuxd::serve(lab.clone(), l));
    }
    lab.start();
    Ok(RunningSim { lab, addrs })
}
