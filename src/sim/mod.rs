//! The simulated lab: devices behind a usbmuxd-compatible socket, each with a lockdownd that
//! speaks the real protocol (TLS included). Reached only through sockets, like a real bench.
//!
//! The simulator shares the codecs (usbmux, lockdown, plist) with the client but none of the
//! harness's decision code.

pub mod apns;
pub mod clock;
pub mod ddm_device;
pub mod enroll;
pub mod fleet;
pub mod identity;
pub mod lab;
pub mod lockdownd;
pub mod mdm_device;
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
    #[error("simulated MDM: device identities: {0}")]
    MdmIdentities(#[source] rcgen::Error),
    #[error("simulated MDM: {0}")]
    ApnsStandIn(#[from] apns::ApnsStandInError),
    #[error("simulated MDM: {0}")]
    Push(#[from] crate::mdm_server::push::PushSetupError),
    #[error("simulated MDM: identity CA: {0}")]
    IdentityCa(String),
    #[error("simulated MDM: {}{source}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Store {
        path: Option<std::path::PathBuf>,
        source: crate::mdm_server::store::StoreError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Which MDM the simulated devices enroll into.
#[derive(Debug, Clone)]
pub enum SimMdm {
    /// No MDM: the device side only.
    None,
    /// `lab`'s embedded MDM server, started with the lab on `listen`, its API protected by
    /// `api_key`; pushes go through the simulated APNs.
    Embedded {
        listen: String,
        api_key: String,
        /// Faults the server injects (`lab sim serve --mdm-faults`, protocol
        /// `lab.simulated.mdm_faults`).
        faults: Option<Arc<crate::mdm_server::faults::Faults>>,
        /// Where the server posts MicroMDM-format webhooks (`--mdm-webhook-url`).
        webhook_url: Option<String>,
    },
    /// Any NanoMDM-compatible server at this base URL (devices PUT to `{url}/mdm`, sending their
    /// identity certificate in `X-Client-Cert`); no push reaches them, they poll.
    External { base_url: String },
}

pub struct SimOptions {
    pub listen: Vec<UsbmuxAddr>,
    pub speed: f64,
    pub seed: Option<u64>,
    pub mdm: SimMdm,
}

/// The MDM side of a running simulated lab.
pub struct RunningSimMdm {
    /// Base URL of the MDM the devices enrolled into.
    pub url: String,
    pub server: Option<crate::mdm_server::RunningServer>,
    pub apns: Option<apns::ApnsStandIn>,
    /// PEM of the CA that signed the devices' MDM identity certificates.
    pub identity_ca_pem: String,
    pub agents: Vec<Arc<mdm_device::MdmAgent>>,
}

/// A running simulated lab.
pub struct RunningSim {
    pub lab: Arc<lab::SimLab>,
    /// Where its usbmuxd answers (ports resolved).
    pub addrs: Vec<UsbmuxAddr>,
    pub mdm: Option<RunningSimMdm>,
}

/// Load a fleet, bind the usbmuxd listeners, start the MDM side, and serve (on the current
/// tokio runtime). An embedded MDM keeps its store in memory: the lab exists only as long as
/// this process.
pub async fn start(fleet_path: &Path, opts: SimOptions) -> Result<RunningSim, SimError> {
    start_with_mdm_db(fleet_path, opts, None).await
}

/// As [`start`], with the embedded MDM's store in the SQLite file `mdm_db` when given
/// (`lab sim serve --mdm-db`): enrollments, queue and every report survive a restart of the
/// simulator, as they survive a restart of a real MDM. The simulated devices themselves start
/// afresh (their OS state is not kept) and enroll again, which rebinds their new identity
/// certificates.
pub async fn start_with_mdm_db(
    fleet_path: &Path,
    opts: SimOptions,
    mdm_db: Option<&Path>,
) -> Result<RunningSim, SimError> {
    start_with(fleet_path, opts, mdm_db, &enroll::EnrollOptions::default()).await
}

/// As [`start_with_mdm_db`], with how the devices get their MDM identity (`enroll`): by
/// default SCEP + `Mdm-Signature` with the embedded MDM, and the certificate header with an
/// external MDM unless an SCEP server is given.
pub async fn start_with(
    fleet_path: &Path,
    opts: SimOptions,
    mdm_db: Option<&Path>,
    enroll: &enroll::EnrollOptions,
) -> Result<RunningSim, SimError> {
    let text = crate::input::read_text(fleet_path)?;
    let mut file: fleet::FleetFile = crate::input::parse_yaml(fleet_path, &text)?;
    // The override replaces the fleet's seed everywhere it is used: generated UDIDs, serial
    // numbers and MAC addresses (fleet expansion), host IDs, the SystemBUID and quirk draws.
    if let Some(s) = opts.seed {
        file.seed = s;
    }
    let seed = file.seed;
    let start_time = file.clock_start(fleet_path)?;
    let jumps = file.clock_jumps(fleet_path)?;
    let poll_interval = file
        .mdm
        .as_ref()
        .and_then(|m| m.poll_interval)
        .map(|d| d.0)
        .unwrap_or(std::time::Duration::from_secs(60));
    let specs = fleet::expand(fleet_path, file)?;
    let speed = opts.speed;
    let lab = tokio::task::spawn_blocking(move || {
        lab::SimLab::new_with_jumps(specs, seed, speed, start_time, jumps)
    })
    .await
    .expect("identity generation thread")?;
    let mut addrs = Vec::new();
    for a in &opts.listen {
        let l = usbmuxd::Listener::bind(a)
            .await
            .map_err(|source| SimError::Bind {
                addr: a.to_string(),
                source,
            })?;
        addrs.push(l.local_addr());
        tokio::spawn(usbmuxd::serve(lab.clone(), l));
    }
    let mdm = start_mdm(&lab, &opts.mdm, poll_interval, mdm_db, enroll).await?;
    // The fleet's attach/detach schedules count from here, once the MDM side is up: making
    // the SCEP CA and the RSA device keys takes a moment, and a `detach_after: 2s` must not
    // have run out before the lab says it is ready.
    lab.start();
    Ok(RunningSim { lab, addrs, mdm })
}

/// The simulated devices' identities: simulator-made certificates for the header form, or
/// RSA keys to enroll by SCEP with.
enum DeviceIds {
    Header(mdm_device::MdmIdentities),
    Scep(Vec<Vec<u8>>),
}

async fn start_mdm(
    lab: &Arc<lab::SimLab>,
    mode: &SimMdm,
    poll_interval: std::time::Duration,
    mdm_db: Option<&Path>,
    enroll: &enroll::EnrollOptions,
) -> Result<Option<RunningSimMdm>, SimError> {
    let use_scep = match mode {
        SimMdm::None => return Ok(None),
        SimMdm::Embedded { .. } => !enroll.cert_header,
        SimMdm::External { .. } => !enroll.cert_header && enroll.scep.is_some(),
    };
    let udids: Vec<String> = lab.devices.iter().map(|d| d.spec.udid.clone()).collect();
    let ids = tokio::task::spawn_blocking(move || {
        if use_scep {
            enroll::device_keys(udids.len()).map(DeviceIds::Scep)
        } else {
            mdm_device::MdmIdentities::generate(&udids).map(DeviceIds::Header)
        }
    })
    .await
    .expect("identity generation thread")
    .map_err(SimError::MdmIdentities)?;
    let mut server_ca = None;
    let (url, server, apns, scep, ca_pem) = match mode {
        SimMdm::None => return Ok(None),
        SimMdm::External { base_url } => {
            let ca_pem = match &ids {
                DeviceIds::Header(h) => h.ca_pem.clone(),
                DeviceIds::Scep(_) => String::new(),
            };
            let url = base_url.trim_end_matches('/').to_string();
            (url, None, None, enroll.scep.clone(), ca_pem)
        }
        SimMdm::Embedded { .. } => {
            let (emb, standin, scep, ca_pem) =
                start_embedded(mode, mdm_db, &ids, enroll.mtls).await?;
            server_ca = emb.tls_ca;
            (
                emb.server.url(),
                Some(emb.server),
                Some(standin),
                scep,
                ca_pem,
            )
        }
    };
    let target = mdm_device::MdmTarget {
        base_url: url.clone(),
        apns: apns.as_ref().map(|a| a.registry.clone()),
        poll_interval,
        topic: enroll.topic.clone().unwrap_or_else(|| {
            format!(
                "com.apple.mgmt.External.{}",
                identity::uuid_from(lab.seed, "mdm-topic").to_lowercase()
            )
        }),
        urls: match mode {
            SimMdm::External { .. } => enroll.urls.clone(),
            _ => None,
        },
        server_ca: server_ca.clone(),
    };
    let mut agents = Vec::new();
    for i in 0..lab.devices.len() {
        let a = match (&ids, &scep) {
            (DeviceIds::Scep(keys), Some(settings)) => mdm_device::MdmAgent::with_credential(
                lab.clone(),
                i,
                enroll::Credential::scep(settings.clone(), keys[i % keys.len()].clone()),
                target.clone(),
            ),
            (DeviceIds::Header(h), _) => mdm_device::MdmAgent::with_credential(
                lab.clone(),
                i,
                enroll::Credential::CertHeader(enroll.cert_header_form.value(&h.certs[i])),
                target.clone(),
            ),
            (DeviceIds::Scep(_), None) => unreachable!("SCEP keys without SCEP settings"),
        };
        let a = Arc::new(a);
        tokio::spawn(a.clone().run());
        agents.push(a);
    }
    Ok(Some(RunningSimMdm {
        url,
        server,
        apns,
        identity_ca_pem: ca_pem,
        agents,
    }))
}

/// The embedded MDM, and the CA (DER) its TLS certificate chains to when it serves TLS.
struct EmbeddedServer {
    server: crate::mdm_server::RunningServer,
    tls_ca: Option<Vec<u8>>,
}

/// A TLS server certificate for the embedded MDM on loopback, from a fresh CA, asking for
/// client certificates from `client_ca`: the config and the CA's DER (what devices trust).
fn mtls_config(client_ca: &[u8]) -> Result<(Arc<rustls::ServerConfig>, Vec<u8>), SimError> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let err = |e: String| SimError::IdentityCa(format!("MDM TLS certificate: {e}"));
    let ca_key = KeyPair::generate().map_err(|e| err(e.to_string()))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| err(e.to_string()))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_der = ca
        .self_signed(&ca_key)
        .map_err(|e| err(e.to_string()))?
        .der()
        .to_vec();
    let key = KeyPair::generate().map_err(|e| err(e.to_string()))?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .and_then(|p| p.signed_by(&key, &Issuer::new(ca, &ca_key)))
        .map_err(|e| err(e.to_string()))?;
    let cfg = crate::mdm_server::mtls::server_config(
        vec![CertificateDer::from(leaf.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        client_ca,
    )
    .map_err(|e| err(e.to_string()))?;
    Ok((Arc::new(cfg), ca_der))
}

/// Start the embedded MDM and its APNs stand-in. With SCEP keys it offers SCEP (a fresh CA and
/// challenge) and requires `Mdm-Signature`; with header identities it takes the certificate
/// header, trusting the simulator's CA. Returns the server, the stand-in, the SCEP settings
/// devices use, and the PEM of the CA their identities chain to.
async fn start_embedded(
    mode: &SimMdm,
    mdm_db: Option<&Path>,
    ids: &DeviceIds,
    mtls: bool,
) -> Result<
    (
        EmbeddedServer,
        apns::ApnsStandIn,
        Option<enroll::scep_client::ScepSettings>,
        String,
    ),
    SimError,
> {
    let SimMdm::Embedded {
        listen,
        api_key,
        faults,
        webhook_url,
    } = mode
    else {
        unreachable!("start_embedded is called for the embedded MDM");
    };
    let standin = apns::start("127.0.0.1:0").await?;
    let push = crate::mdm_server::push::Apns::new(
        standin.push_cert_pem.as_bytes(),
        standin.push_key_pem.as_bytes(),
        &standin.url,
        Some(standin.ca_pem.as_bytes()),
    )?;
    let (ca, cert_header, auth, challenge) = match ids {
        DeviceIds::Header(h) => (
            h.ca_pem.clone(),
            Some(mdm_device::CERT_HEADER.to_string()),
            crate::mdm_server::device_auth::DeviceAuth::default(),
            None,
        ),
        DeviceIds::Scep(_) => {
            let challenge = crate::tls::random_secret();
            let c = challenge.clone();
            let scep_ca = tokio::task::spawn_blocking(move || {
                crate::mdm_server::scep::ScepCa::generate("lab simulated MDM SCEP CA", c)
            })
            .await
            .expect("SCEP CA generation thread")
            .map_err(|e| SimError::IdentityCa(e.to_string()))?;
            (
                scep_ca.cert_pem.clone(),
                None,
                crate::mdm_server::device_auth::DeviceAuth {
                    scep: Some(Arc::new(scep_ca)),
                    mdm_signature: true,
                },
                Some(challenge),
            )
        }
    };
    let cfg = crate::mdm_server::ServerConfig {
        api_key: Some(api_key.clone()),
        cert_header,
        identity_ca: Some(
            crate::mdm_server::identity::IdentityCa::from_pem(ca.as_bytes())
                .map_err(SimError::IdentityCa)?,
        ),
        webhook_url: webhook_url.clone(),
        webhook_hmac_key: None,
        push: Arc::new(push),
        faults: faults.clone(),
        ddm_on_enroll: true,
    };
    let store = match mdm_db {
        Some(p) => crate::mdm_server::Store::open(p).map_err(|source| SimError::Store {
            path: Some(p.to_path_buf()),
            source,
        })?,
        None => crate::mdm_server::Store::open_in_memory()
            .map_err(|source| SimError::Store { path: None, source })?,
    };
    let bind = |source| SimError::Bind {
        addr: listen.clone(),
        source,
    };
    let srv = match auth.scep.clone().filter(|_| mtls) {
        Some(scep_ca) => {
            let (tls, tls_ca) = mtls_config(&scep_ca.cert_der)?;
            let cfg = crate::mdm_server::ServerConfig {
                cert_header: Some(mdm_device::CERT_HEADER.to_string()),
                ..cfg
            };
            let srv = crate::mdm_server::mtls::start(listen, Arc::new(store), cfg, auth, tls)
                .await
                .map_err(bind)?;
            EmbeddedServer {
                server: srv,
                tls_ca: Some(tls_ca),
            }
        }
        None => EmbeddedServer {
            server: crate::mdm_server::start_with_device_auth(listen, Arc::new(store), cfg, auth)
                .await
                .map_err(bind)?,
            tls_ca: None,
        },
    };
    let settings = challenge.map(|challenge| enroll::scep_client::ScepSettings {
        url: format!("{}{}", srv.server.url(), crate::mdm_server::scep::SCEP_PATH),
        challenge,
    });
    Ok((srv, standin, settings, ca))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLEET: &str = "seed: 7\ndevices:\n  - name: Phone\n    count: 2\n    product_type: iPhone12,1\n    ios: { version: \"17.5.1\", build: 21F90 }\n    disk: { total: 64 GB, free: 20 GB }\n    battery: { level: 80 }\n  - name: Old\n    product_type: iPhone9,1\n    ios: { version: \"15.8\", build: 19H370 }\n    disk: { total: 32 GB, free: 10 GB }\n    battery: { level: 80 }\n";

    /// (UDID, serial, Wi-Fi MAC, Bluetooth MAC, ECID, HostID) of each device of a lab started
    /// with this seed override.
    async fn identities(fleet: &Path, seed: Option<u64>) -> Vec<[String; 6]> {
        let opts = SimOptions {
            listen: vec![UsbmuxAddr::parse_listen("127.0.0.1:0").unwrap()],
            speed: 1.0,
            seed,
            mdm: SimMdm::None,
        };
        let sim = start(fleet, opts).await.unwrap();
        sim.lab
            .devices
            .iter()
            .map(|d| {
                [
                    d.spec.udid.clone(),
                    d.spec.serial.clone(),
                    d.spec.wifi_address.clone(),
                    d.spec.bluetooth_address.clone(),
                    d.spec.ecid.to_string(),
                    d.identity.pair_record.host_id.clone(),
                ]
            })
            .collect()
    }

    #[tokio::test]
    async fn the_seed_override_changes_every_generated_identity() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = dir.path().join("fleet.yaml");
        std::fs::write(&fleet, FLEET).unwrap();
        let from_file = identities(&fleet, None).await;
        // No override: the identities the fleet file's own seed gives (what fleet::load sees).
        let loaded = fleet::load(&fleet).unwrap();
        assert_eq!(
            from_file.iter().map(|i| i[0].clone()).collect::<Vec<_>>(),
            loaded.iter().map(|d| d.udid.clone()).collect::<Vec<_>>()
        );
        assert_eq!(
            identities(&fleet, Some(7)).await,
            from_file,
            "seed 7 is the file's"
        );
        let one = identities(&fleet, Some(1)).await;
        assert_eq!(
            identities(&fleet, Some(1)).await,
            one,
            "same seed, same lab"
        );
        let two = identities(&fleet, Some(2)).await;
        for other in [&one, &two] {
            for (a, b) in from_file.iter().zip(other.iter()) {
                for (field, (x, y)) in ["udid", "serial", "wifi", "bluetooth", "ecid", "host_id"]
                    .iter()
                    .zip(a.iter().zip(b.iter()))
                {
                    assert_ne!(x, y, "{field} must change with the seed");
                }
            }
        }
        assert_ne!(one, two);
        // Pre-A12 devices keep their 40-hex form; A12+ keep CHIP-ECID.
        assert_eq!(one[2][0].len(), 40);
        assert!(one[0][0].starts_with("00008030-"), "{}", one[0][0]);
    }
}
