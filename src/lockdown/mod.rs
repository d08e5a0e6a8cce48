//! The lockdownd protocol: framing, error names, pair records and the client.

pub mod client;
pub mod error;
pub mod frame;
pub mod pair_record;

pub use client::{LockdownClient, LockdownError, Session};
pub use error::DeviceErrorCode;
pub use pair_record::PairRecord;

/// `QueryType` answer of a device in normal mode (brief §3.3).
pub const SERVICE_TYPE: &str = "com.apple.mobile.lockdown";
