//! HTTP clients for MDM APIs, webhooks and simulated devices.
//!
//! reqwest is built without a default crypto provider; every client gets a rustls config with
//! the one provider `lab` uses (aws-lc-rs) and the public web roots, passed explicitly.

use std::time::Duration;

/// A client with `timeout` per request.
pub fn client(timeout: Duration) -> reqwest::Client {
    // Below the servers' keep-alive limit (listen_limits::HEADER_READ_TIMEOUT, 30 s), so a
    // pooled connection is dropped here before the server closes it under a request.
    client_with_idle(timeout, Duration::from_secs(20))
}

/// A client with `timeout` per request that closes a connection once it has been idle for
/// `idle`.
pub fn client_with_idle(timeout: Duration, idle: Duration) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(idle)
        .build()
        .expect("a client with a preconfigured rustls config builds")
}
