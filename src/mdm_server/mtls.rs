//! Mutual TLS on the embedded MDM (brief mdm.md §4: on a push the device opens TLS to
//! `ServerURL` with its identity certificate as TLS client certificate). The server presents
//! its own certificate and asks for, without requiring, a client certificate chaining to the
//! device-identity CA: SCEP runs before a device has one. A verified client certificate is
//! handed to the app in the certificate header, exactly as the TLS terminator in front of
//! NanoMDM's `-cert-header` does (any header of that name sent by the client is dropped
//! first), so identity binding is the certificate-header path of [`super::http`].

use super::device_auth::DeviceAuth;
use super::identity::cert_header_value;
use super::{AppState, RunningServer, ServerConfig, Store};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum MtlsError {
    #[error("mutual TLS: client CA: {0}")]
    ClientCa(String),
    #[error("mutual TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A TLS server config that presents `chain`/`key` and asks for a client certificate from
/// `client_ca` (DER).
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: &[u8],
) -> Result<rustls::ServerConfig, MtlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(client_ca.to_vec()))
        .map_err(|e| MtlsError::ClientCa(e.to_string()))?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::tls::provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| MtlsError::ClientCa(e.to_string()))?;
    Ok(
        rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?,
    )
}

/// Serve the MDM over TLS on `listen`; `cfg.cert_header` names the header the verified client
/// certificate is passed in (it must be set: that is how the app sees the identity).
pub async fn start(
    listen: &str,
    store: Arc<Store>,
    cfg: ServerConfig,
    auth: DeviceAuth,
    tls: Arc<rustls::ServerConfig>,
) -> std::io::Result<RunningServer> {
    let header = cfg
        .cert_header
        .clone()
        .unwrap_or_else(|| "X-Client-Cert".into());
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = super::http::router(AppState::new(store.clone(), cfg).with_device_auth(auth));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let (acceptor, app, header) = (acceptor.clone(), app.clone(), header.clone());
            tokio::spawn(async move {
                if let Err(e) = serve_one(acceptor, tcp, app, header).await {
                    tracing::debug!(error = %e, "mutual-TLS connection ended");
                }
            });
        }
    });
    Ok(RunningServer {
        addr,
        store,
        task,
        tls: true,
    })
}

async fn serve_one(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    app: axum::Router,
    header: String,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use hyper::service::Service as _;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let stream =
        tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await??;
    let peer = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| cert_header_value(c));
    let name = axum::http::HeaderName::try_from(header)?;
    let tower = TowerToHyperService::new(app);
    let svc = hyper::service::service_fn(move |mut req: axum::http::Request<_>| {
        req.headers_mut().remove(&name);
        if let Some(v) = peer.as_deref().and_then(|v| v.parse().ok()) {
            req.headers_mut().insert(name.clone(), v);
        }
        tower.call(req)
    });
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(crate::listen_limits::Limits::current().header_read_timeout);
    b.serve_connection(TokioIo::new(stream), svc).await?;
    Ok(())
}
