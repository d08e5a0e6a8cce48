//! Connecting to the lab a protocol names, for `lab run` and `lab qualify`: an in-process
//! simulated lab (`lab.simulated`: started here, with the embedded MDM and the protocol's MDM
//! fault plan) or a bench (`lab.usbmuxd` + `lab.mdm`: its addresses, the API key from the
//! environment, the webhook listener). The runner is handed the resulting
//! [`LabConnection`] and reaches both the same way, through usbmuxd sockets and HTTP (issue 12,
//! point 4: the runner does not build the simulated lab).

use crate::mdm::backend::{MdmBackend, MicroMdm, NanoMdm};
use crate::mdm::ddm_doses::{DdmDoses, EmbeddedDdm};
use crate::mdm::webhook_receiver::WebhookReceiver;
use crate::trial::lab_connection::LabConnection;
use crate::trial::protocol::{LoadedProtocol, MdmKind};
use crate::trial::runner::RunError;
use crate::usbmux::UsbmuxAddr;
use std::sync::Arc;

/// A connected lab: what the runner is handed, and the in-process simulated lab behind it if
/// there is one (its servers run as long as this value lives: keep it until the run returns).
pub struct ConnectedLab {
    pub connection: LabConnection,
    pub sim: Option<crate::sim::RunningSim>,
}

/// Start the protocol's simulated lab or connect to its bench. Bad input (a fault plan, a fleet,
/// an address, a missing API key or webhook) is [`RunError::BadInput`], found before any run
/// folder exists.
pub async fn connect(p: &LoadedProtocol) -> Result<ConnectedLab, RunError> {
    let lab = &p.protocol.lab;
    let timeout = lab.mdm_api.timeout.0;
    if let Some(sim) = &lab.simulated {
        let key = crate::tls::random_secret();
        let faults = match &sim.mdm_faults {
            Some(f) => Some(Arc::new(
                crate::mdm_server::faults::Faults::load(&p.resolve(f))
                    .map_err(|e| RunError::BadInput(e.to_string()))?,
            )),
            None => None,
        };
        let opts = crate::sim::SimOptions {
            listen: vec![UsbmuxAddr::parse_listen("127.0.0.1:0").expect("static address")],
            speed: sim.speed,
            seed: sim.seed,
            mdm: crate::sim::SimMdm::Embedded {
                listen: "127.0.0.1:0".into(),
                api_key: key.clone(),
                faults,
                webhook_url: None,
            },
        };
        let running = crate::sim::start(&p.resolve(&sim.fleet), opts)
            .await
            .map_err(|e| match e {
                crate::sim::SimError::Fleet(i) => RunError::BadInput(i.to_string()),
                other => RunError::Lab(other.to_string()),
            })?;
        let url = running
            .mdm
            .as_ref()
            .map(|m| m.url.clone())
            .unwrap_or_default();
        let n = running.lab.devices.len();
        return Ok(ConnectedLab {
            connection: LabConnection {
                addrs: running.addrs.clone(),
                backend: Box::new(NanoMdm::embedded(&url, &key, timeout)),
                time_scale: sim.speed,
                simulated: true,
                webhook: None,
                ddm: Some(Box::new(EmbeddedDdm::new(&url, &key, timeout))),
                enrolled_check: Some((url, key, n)),
            },
            sim: Some(running),
        });
    }
    Ok(ConnectedLab {
        connection: connect_bench(p).await?,
        sim: None,
    })
}

/// A bench: its usbmuxd addresses and its MDM (API key from the environment variable the
/// protocol names; a webhook listener for NanoMDM and MicroMDM).
async fn connect_bench(p: &LoadedProtocol) -> Result<LabConnection, RunError> {
    let lab = &p.protocol.lab;
    let timeout = lab.mdm_api.timeout.0;
    let file = p.path.display();
    let addrs = UsbmuxAddr::parse_list(&lab.usbmuxd)
        .map_err(|e| RunError::BadInput(format!("{file}: lab.usbmuxd: {e}")))?;
    let mdm = lab
        .mdm
        .as_ref()
        .ok_or_else(|| RunError::BadInput(format!("{file}: lab.mdm is needed for a real bench")))?;
    let key = std::env::var(&mdm.api_key_env)
        .ok()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            RunError::BadInput(format!(
                "{file}: lab.mdm.api_key_env: the environment variable {} is not set (it holds the MDM API key)",
                mdm.api_key_env
            ))
        })?;
    let ddm = connect_ddm(p, &key)?;
    let (backend, webhook): (Box<dyn MdmBackend>, Option<WebhookReceiver>) = match mdm.kind {
        MdmKind::Embedded => (Box::new(NanoMdm::embedded(&mdm.url, &key, timeout)), None),
        kind => {
            let wh = mdm.webhook.as_ref().ok_or_else(|| {
                RunError::BadInput(format!(
                    "{file}: lab.mdm.webhook is needed for nanomdm and micromdm"
                ))
            })?;
            let hmac = match &wh.hmac_key_env {
                Some(n) => Some(
                    std::env::var(n)
                        .ok()
                        .filter(|k| !k.is_empty())
                        .ok_or_else(|| {
                            RunError::BadInput(format!(
                                "{file}: lab.mdm.webhook.hmac_key_env: the environment variable {n} is not set"
                            ))
                        })?
                        .into_bytes(),
                ),
                None => None,
            };
            let r = WebhookReceiver::start(&wh.listen, hmac)
                .await
                .map_err(|e| RunError::Lab(format!("webhook listener on {}: {e}", wh.listen)))?;
            let inbox = r.inbox.clone();
            let b: Box<dyn MdmBackend> = if kind == MdmKind::Nanomdm {
                Box::new(NanoMdm::with_webhooks(&mdm.url, &key, timeout, inbox))
            } else {
                Box::new(MicroMdm::new(&mdm.url, &key, timeout, inbox))
            };
            (b, Some(r))
        }
    };
    Ok(LabConnection {
        addrs,
        backend,
        time_scale: lab.time_scale.filter(|t| *t > 0.0).unwrap_or(1.0),
        simulated: false,
        webhook,
        enrolled_check: None,
        ddm,
    })
}

/// A bench's DDM server: `lab.mdm.ddm` (KMFDDM, its key from the environment), else the
/// embedded server itself when `lab.mdm.kind` is `embedded`; none otherwise.
fn connect_ddm(p: &LoadedProtocol, mdm_key: &str) -> Result<Option<Box<dyn DdmDoses>>, RunError> {
    let lab = &p.protocol.lab;
    let timeout = lab.mdm_api.timeout.0;
    let file = p.path.display();
    let Some(mdm) = &lab.mdm else {
        return Ok(None);
    };
    match &mdm.ddm {
        Some(d) => {
            let key = std::env::var(&d.api_key_env)
                .ok()
                .filter(|k| !k.is_empty())
                .ok_or_else(|| {
                    RunError::BadInput(format!(
                        "{file}: lab.mdm.ddm.api_key_env: the environment variable {} is not set (it holds the KMFDDM API key)",
                        d.api_key_env
                    ))
                })?;
            let k = crate::mdm::kmfddm::Kmfddm::new(&d.url, &key, timeout)
                .map_err(|e| RunError::BadInput(format!("{file}: lab.mdm.ddm.url: {e}")))?;
            Ok(Some(Box::new(k)))
        }
        None if mdm.kind == MdmKind::Embedded => {
            Ok(Some(Box::new(EmbeddedDdm::new(&mdm.url, mdm_key, timeout))))
        }
        None => Ok(None),
    }
}
