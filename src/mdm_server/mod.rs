//! The embedded MDM server: device-facing check-in and command endpoints, a durable queue, a
//! NanoMDM-compatible operator API, MicroMDM-format webhooks and push.
//!
//! It speaks plain HTTP and binds to loopback unless told otherwise; on a real bench it sits
//! behind the TLS terminator that presents the MDM server certificate (as NanoMDM does), which
//! passes the device's client certificate in a header.

pub mod cms;
pub mod ddm;
mod ddm_api;
pub mod device_auth;
pub mod faults;
pub mod http;
pub mod identity;
pub mod mtls;
pub mod push;
pub mod scep;
pub mod store;
pub mod user_channel;

pub use http::{AppState, ServerConfig};
pub use store::Store;

use std::net::SocketAddr;
use std::sync::Arc;

/// A server running on the current tokio runtime.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub store: Arc<Store>,
    task: tokio::task::JoinHandle<()>,
    /// Served over (mutual) TLS ([`mtls`]).
    tls: bool,
}

impl RunningServer {
    /// `http://IP:PORT` (`https://` over TLS)
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stop accepting connections (the store stays open for inspection).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Bind `listen` (e.g. `127.0.0.1:0`) and serve, with the listener limits of
/// [`crate::listen_limits`] (header and idle timeouts, a connection cap).
pub async fn start(
    listen: &str,
    store: Arc<Store>,
    cfg: ServerConfig,
) -> std::io::Result<RunningServer> {
    start_with_device_auth(listen, store, cfg, device_auth::DeviceAuth::default()).await
}

/// As [`start`], offering SCEP and/or requiring `Mdm-Signature` ([`device_auth`]).
pub async fn start_with_device_auth(
    listen: &str,
    store: Arc<Store>,
    cfg: ServerConfig,
    auth: device_auth::DeviceAuth,
) -> std::io::Result<RunningServer> {
    let listener = crate::listen_limits::bind_tcp(listen).await?;
    let addr = listener.local_addr()?;
    let app = http::router(AppState::new(store.clone(), cfg).with_device_auth(auth));
    let task = tokio::spawn(async move {
        crate::listen_limits::serve_http(listener, app, crate::listen_limits::Limits::current())
            .await;
    });
    Ok(RunningServer {
        addr,
        store,
        task,
        tls: false,
    })
}
