//! The usbmuxd protocol: framing, messages, addresses and the client.

pub mod addr;
pub mod client;
pub mod frame;
pub mod message;

pub use addr::UsbmuxAddr;
pub use client::{ListenStream, UsbmuxClient, UsbmuxError};
pub use message::{DeviceEntry, MuxEvent};
