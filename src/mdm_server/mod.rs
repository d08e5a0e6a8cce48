//! The embedded MDM server: device-facing check-in and command endpoints, a durable queue, a
//! NanoMDM-compatible operator API, MicroMDM-format webhooks and push.

pub mod identity;
pub mod push;
pub mod store;
