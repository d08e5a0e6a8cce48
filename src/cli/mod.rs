//! The commands behind `main.rs`: each turns arguments into library calls and prints.

pub mod args;
pub mod devices;
pub mod feeds;
pub mod lab_connection;
pub mod mdm;
pub mod probe;
pub mod sim;
pub mod table;
pub mod trial;
pub mod watch;

use crate::input::InputError;
use crate::usbmux::UsbmuxAddr;
use crate::usbmux::addr::AddrError;

/// What a command can fail with, and the exit code each gets.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input: exit 2.
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{0}")]
    BadArgument(String),
    /// The command ran and failed: exit 1.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Input(_) | CliError::BadArgument(_) => 2,
            CliError::Failed(_) => 1,
        }
    }
}

impl From<AddrError> for CliError {
    fn from(e: AddrError) -> Self {
        CliError::BadArgument(format!("--usbmuxd / {}: {e}", crate::usbmux::addr::ENV_VAR))
    }
}

/// The usbmuxd addresses from the flags, else the environment, else the default socket.
pub fn usbmuxd_addrs(flags: &[String]) -> Result<Vec<UsbmuxAddr>, CliError> {
    let env = std::env::var(crate::usbmux::addr::ENV_VAR).ok();
    Ok(UsbmuxAddr::resolve(flags, env.as_deref())?)
}

pub fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("report types serialise")
    );
}

/// A number of seconds from the command line, kept within `lo..=hi` (NaN, which clap accepts as
/// a float, is taken as `lo`): a `Duration` from an unchecked float panics.
pub fn seconds_arg(v: f64, lo: f64, hi: f64) -> std::time::Duration {
    let v = if v.is_nan() { lo } else { v.clamp(lo, hi) };
    std::time::Duration::from_secs_f64(v)
}
