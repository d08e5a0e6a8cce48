//! `lab mdm serve`: the embedded MDM server on its own.

use super::CliError;
use crate::mdm_server::identity::IdentityCa;
use crate::mdm_server::push::{Apns, NoPush, SharedPush};
use crate::mdm_server::{ServerConfig, Store};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (loopback unless you say otherwise).
    #[arg(long, default_value = "127.0.0.1:9400")]
    listen: String,
    /// The SQLite file holding enrollments, the queue and every report.
    #[arg(long, default_value = "lab-mdm.sqlite")]
    db: PathBuf,
    /// Environment variable holding the API key (HTTP Basic, user `nanomdm`). Unset: API off.
    #[arg(long, default_value = "LAB_MDM_API_KEY")]
    api_key_env: String,
    /// Header with the device identity certificate (RFC 9440 `:base64:` or URL-escaped PEM).
    #[arg(long, value_name = "NAME")]
    cert_header: Option<String>,
    /// CA (PEM) that device identity certificates must chain to.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// Post MicroMDM-format webhook events here.
    #[arg(long, value_name = "URL")]
    webhook_url: Option<String>,
    /// Environment variable holding the webhook HMAC key (X-Hmac-Signature).
    #[arg(long, value_name = "NAME")]
    webhook_hmac_key_env: Option<String>,
    /// MDM push certificate (PEM); with --apns-key enables push.
    #[arg(long, value_name = "PEM")]
    apns_cert: Option<PathBuf>,
    /// MDM push private key (PEM).
    #[arg(long, value_name = "PEM")]
    apns_key: Option<PathBuf>,
    /// Inject faults (a YAML file: API errors, slow answers, dropped connections, lost or
    /// duplicated webhooks) to rehearse a flaky MDM; see `src/mdm_server/faults.rs`.
    #[arg(long, value_name = "FAULTS.yaml")]
    faults: Option<PathBuf>,
    /// APNs base URL.
    #[arg(long, default_value = crate::mdm_server::push::APNS_PRODUCTION)]
    apns_url: String,
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path)
        .map_err(|e| CliError::BadArgument(format!("{what} {}: {e}", path.display())))
}

fn secret_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub async fn serve(a: ServeArgs) -> Result<u8, CliError> {
    let push: SharedPush = match (&a.apns_cert, &a.apns_key) {
        (Some(c), Some(k)) => Arc::new(
            Apns::new(
                &read(c, "--apns-cert")?,
                &read(k, "--apns-key")?,
                &a.apns_url,
                None,
            )
            .map_err(|e| CliError::BadArgument(e.to_string()))?,
        ),
        (None, None) => Arc::new(NoPush),
        _ => {
            return Err(CliError::BadArgument(
                "--apns-cert and --apns-key go together".into(),
            ));
        }
    };
    let identity_ca = match &a.ca {
        Some(p) => Some(IdentityCa::from_pem(&read(p, "--ca")?).map_err(CliError::BadArgument)?),
        None => None,
    };
    let api_key = secret_env(&a.api_key_env);
    let webhook_hmac_key = match &a.webhook_hmac_key_env {
        Some(name) => Some(
            secret_env(name)
                .ok_or_else(|| {
                    CliError::BadArgument(format!("environment variable {name} is not set"))
                })?
                .into_bytes(),
        ),
        None => None,
    };
    let faults = match &a.faults {
        Some(p) => Some(Arc::new(
            crate::mdm_server::faults::Faults::load(p).map_err(CliError::Input)?,
        )),
        None => None,
    };
    let store =
        Store::open(&a.db).map_err(|e| CliError::Failed(format!("{}: {e}", a.db.display())))?;
    let cfg = ServerConfig {
        api_key: api_key.clone(),
        cert_header: a.cert_header.clone(),
        identity_ca,
        webhook_url: a.webhook_url.clone(),
        webhook_hmac_key,
        push,
        faults,
        ddm_on_enroll: false,
    };
    let server = crate::mdm_server::start(&a.listen, Arc::new(store), cfg)
        .await
        .map_err(|e| CliError::Failed(format!("cannot listen on {}: {e}", a.listen)))?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "lab mdm: listening on {} (store {})",
            server.url(),
            a.db.display()
        );
        if api_key.is_none() {
            let _ = writeln!(
                out,
                "lab mdm: operator API disabled: set {} to enable it",
                a.api_key_env
            );
        }
        let _ = out.flush();
    }
    let _ = tokio::signal::ctrl_c().await;
    Ok(0)
}
