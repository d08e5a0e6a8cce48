//! `lab sim serve --fleet FLEET.yaml [--usbmuxd ADDR]... [--speed N]`

use super::CliError;
use crate::sim::{self, SimError};
use crate::usbmux::UsbmuxAddr;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The fleet file (see trials/README.md).
    #[arg(long, value_name = "FLEET.yaml")]
    fleet: PathBuf,
    /// Simulated seconds per real second (attach/detach schedules run this much faster).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = super::args::positive_factor)]
    speed: f64,
    /// Override the fleet's `seed`: generated UDIDs, serial numbers, ECIDs, MAC addresses and
    /// host IDs change with it (the same seed gives the same devices; a `udid` or `serial`
    /// written in the fleet file stays as written). Without it, the fleet's own seed.
    #[arg(long, allow_negative_numbers = true, value_parser = super::args::seed)]
    seed: Option<u64>,
    /// Where the embedded MDM server listens (loopback unless told otherwise).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9400")]
    mdm: String,
    /// Enroll the devices into this NanoMDM-compatible MDM instead of the embedded one. A base
    /// URL (`http://host:9000`): the devices send check-ins and command results to `URL/mdm`,
    /// so do not give `…/mdm` itself.
    #[arg(long, value_name = "URL", conflicts_with = "no_mdm")]
    mdm_url: Option<String>,
    /// Write the PEM of the CA that the simulated devices' MDM identity certificates chain to
    /// (what NanoMDM's `-ca` takes): the simulator's own CA in the certificate-header form, the
    /// embedded SCEP CA otherwise. It is made anew at each start.
    #[arg(long, value_name = "FILE", conflicts_with = "no_mdm")]
    mdm_identity_ca_out: Option<PathBuf>,
    /// Send each device's identity certificate in the `X-Client-Cert` header (NanoMDM
    /// `-cert-header`, for a server behind a TLS proxy) instead of enrolling by SCEP and signing
    /// every message with `Mdm-Signature`, which the devices do by default with the embedded
    /// MDM, and with an external one when `--scep-url` is given.
    #[arg(long, conflicts_with_all = ["no_mdm", "scep_url"])]
    mdm_cert_header: bool,
    /// The form of that header (implies `--mdm-cert-header`): `rfc9440` (`:base64 DER:`, NanoMDM
    /// v0.8 and later) or `escaped-pem` (a URL-escaped PEM, as nginx's
    /// `$ssl_client_escaped_cert` passes it; NanoMDM before v0.8).
    #[arg(long, value_name = "FORM", value_enum, conflicts_with_all = ["no_mdm", "scep_url", "mdm_mtls", "mdm_enrollment_profile"])]
    mdm_cert_header_form: Option<CertHeaderFormArg>,
    /// The SCEP server of the external MDM (`--mdm-url`), e.g. `http://host:8080/scep`: each
    /// device gets its identity there (a CSR with the challenge) and signs every message
    /// (`Mdm-Signature`), as an iPhone with the enrollment profile's SCEP payload does.
    #[arg(long, value_name = "URL", requires = "mdm_url")]
    scep_url: Option<String>,
    /// Serve the embedded MDM over TLS and ask for each device's SCEP identity as TLS client
    /// certificate (mutual TLS, as an iPhone presents it to `ServerURL`); the devices trust the
    /// server's certificate, made at start.
    #[arg(long, conflicts_with_all = ["no_mdm", "mdm_url", "mdm_cert_header", "mdm_enrollment_profile"])]
    mdm_mtls: bool,
    /// Path under `--mdm-url` where check-ins go (the MDM payload's `CheckInURL`), e.g.
    /// `/mdm/checkin` for MicroMDM. Default `/mdm`, NanoMDM's combined endpoint.
    #[arg(long, value_name = "PATH", requires = "mdm_url")]
    mdm_checkin_path: Option<String>,
    /// Path under `--mdm-url` where command results go (the MDM payload's `ServerURL`), e.g.
    /// `/mdm/connect` for MicroMDM. Default `/mdm`.
    #[arg(long, value_name = "PATH", requires = "mdm_url")]
    mdm_server_path: Option<String>,
    /// Enroll as this enrollment profile (`.mobileconfig`, signed or not, e.g. MicroMDM's
    /// `/mdm/enroll`) says: its `ServerURL`, `CheckInURL`, `Topic` and SCEP payload (`URL`,
    /// `Challenge`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["no_mdm", "mdm_url", "mdm_cert_header", "mdm_db", "mdm_faults", "mdm_webhook_url"])]
    mdm_enrollment_profile: Option<PathBuf>,
    /// Environment variable holding the SCEP challenge for `--scep-url` (empty when unset).
    #[arg(long, default_value = "LAB_SCEP_CHALLENGE")]
    scep_challenge_env: String,
    /// No MDM at all: the device side (usbmuxd + lockdownd) only.
    #[arg(long)]
    no_mdm: bool,
    /// Environment variable holding the embedded MDM's API key; when unset, a random key is
    /// written to a file readable only by you and its path is printed.
    #[arg(long, default_value = "LAB_MDM_API_KEY")]
    mdm_api_key_env: String,
    /// Keep the embedded MDM's store (enrollments, queue, every report) in this SQLite file,
    /// created owner-only, so that it survives a restart of `lab sim serve`; without it the
    /// store lives in memory and a restart empties it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["no_mdm", "mdm_url"])]
    mdm_db: Option<PathBuf>,
    /// Make the embedded MDM inject faults (see `src/mdm_server/faults.rs`).
    #[arg(long, value_name = "FAULTS.yaml", conflicts_with_all = ["no_mdm", "mdm_url"])]
    mdm_faults: Option<PathBuf>,
    /// Make the embedded MDM post MicroMDM-format webhooks here (as NanoMDM's `-webhook-url`).
    #[arg(long, value_name = "URL", conflicts_with_all = ["no_mdm", "mdm_url"])]
    mdm_webhook_url: Option<String>,
}

/// Where the simulator listens when no address is given: loopback TCP, the one form every
/// client accepts in USBMUXD_SOCKET_ADDRESS (brief §2).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:27015";

pub async fn serve(flags: &[String], a: ServeArgs) -> Result<u8, CliError> {
    let listen = if flags.is_empty() {
        vec![UsbmuxAddr::parse_listen(DEFAULT_LISTEN).expect("static address")]
    } else {
        let mut v = Vec::new();
        for f in flags {
            for part in f.split(',').filter(|p| !p.trim().is_empty()) {
                v.push(UsbmuxAddr::parse_listen(part)?);
            }
        }
        v
    };
    let mut key_file = None;
    let profile = match &a.mdm_enrollment_profile {
        Some(p) => Some(load_profile(p)?),
        None => None,
    };
    let mdm = mdm_choice(&a, profile.as_ref(), &mut key_file)?;
    let opts = sim::SimOptions {
        listen,
        speed: a.speed,
        seed: a.seed,
        mdm,
    };
    let enroll = match profile {
        Some(p) => sim::enroll::EnrollOptions::from_profile(p),
        None => enroll_options(&a),
    };
    let running = sim::start_with(&a.fleet, opts, a.mdm_db.as_deref(), &enroll)
        .await
        .map_err(|e| match e {
            SimError::Fleet(i) => CliError::Input(i),
            other => CliError::Failed(other.to_string()),
        })?;
    {
        let mut out = std::io::stdout().lock();
        for addr in &running.addrs {
            let _ = writeln!(
                out,
                "lab sim: usbmuxd listening on {addr} ({} from {})",
                crate::format::count(running.lab.devices.len(), "device"),
                a.fleet.display()
            );
        }
        if let Some(tcp) = running
            .addrs
            .iter()
            .find(|a| matches!(a, UsbmuxAddr::Tcp { .. }))
        {
            let _ = writeln!(out, "lab sim: export USBMUXD_SOCKET_ADDRESS={tcp}");
        }
        if let Some(m) = &running.mdm {
            let key = match &key_file {
                Some(p) => format!("API key in {}", p.display()),
                None if m.server.is_some() => format!("API key from ${}", a.mdm_api_key_env),
                None => "external".to_string(),
            };
            let store = match &a.mdm_db {
                Some(p) if m.server.is_some() => format!("; store {}", p.display()),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "lab sim: MDM at {} ({} enrolling; {key}{store})",
                m.url,
                crate::format::count(m.agents.len(), "device")
            );
            let _ = writeln!(
                out,
                "lab sim: {}",
                identity_line(&enroll, m.server.is_some())
            );
            if let Some(p) = a
                .mdm_identity_ca_out
                .as_ref()
                .filter(|_| m.identity_ca_pem.is_empty())
            {
                let _ = writeln!(
                    out,
                    "lab sim: no CA written to {}: the devices get their identity from the MDM's own SCEP server",
                    p.display()
                );
            } else if let Some(p) = &a.mdm_identity_ca_out {
                write_atomically(p, m.identity_ca_pem.as_bytes())
                    .map_err(|e| CliError::Failed(format!("{}: {e}", p.display())))?;
                let _ = writeln!(
                    out,
                    "lab sim: device identity CA written to {} (NanoMDM: -ca {})",
                    p.display(),
                    p.display()
                );
            }
        }
        let _ = writeln!(out, "lab sim: ready (Ctrl-C stops)");
        let _ = out.flush();
    }
    let _ = tokio::signal::ctrl_c().await;
    if let Some(p) = key_file {
        let _ = std::fs::remove_file(p);
    }
    for addr in &running.addrs {
        if let UsbmuxAddr::Unix(p) = addr {
            let _ = std::fs::remove_file(p);
        }
    }
    Ok(0)
}

/// Which MDM the devices enroll into; for the embedded one, its API key (written to a private
/// file, named in `key_file`, when the environment has none).
fn mdm_choice(
    a: &ServeArgs,
    profile: Option<&sim::enroll::profile::EnrollmentProfile>,
    key_file: &mut Option<PathBuf>,
) -> Result<sim::SimMdm, CliError> {
    let mdm = if a.no_mdm {
        sim::SimMdm::None
    } else if let Some(p) = profile {
        sim::SimMdm::External {
            base_url: p.server_url.clone(),
        }
    } else if let Some(url) = &a.mdm_url {
        if let Some(w) = mdm_url_warning(url) {
            eprintln!("lab sim: warning: {w}");
        }
        sim::SimMdm::External {
            base_url: url.clone(),
        }
    } else {
        let api_key = match std::env::var(&a.mdm_api_key_env)
            .ok()
            .filter(|k| !k.is_empty())
        {
            Some(k) => k,
            None => {
                let k = crate::tls::random_secret();
                let path = std::env::temp_dir()
                    .join(format!("lab-sim-{}.mdm-api-key", std::process::id()));
                crate::private_fs::write_private(&path, k.as_bytes())
                    .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
                *key_file = Some(path);
                k
            }
        };
        let faults = match &a.mdm_faults {
            Some(p) => Some(std::sync::Arc::new(
                crate::mdm_server::faults::Faults::load(p).map_err(CliError::Input)?,
            )),
            None => None,
        };
        sim::SimMdm::Embedded {
            listen: a.mdm.clone(),
            api_key,
            faults,
            webhook_url: a.mdm_webhook_url.clone(),
        }
    };
    Ok(mdm)
}

fn load_profile(p: &std::path::Path) -> Result<sim::enroll::profile::EnrollmentProfile, CliError> {
    std::fs::read(p)
        .map_err(|e| e.to_string())
        .and_then(|b| sim::enroll::profile::parse(&b).map_err(|e| e.to_string()))
        .map_err(|e| CliError::BadArgument(format!("{}: {e}", p.display())))
}

/// `--mdm-cert-header-form`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CertHeaderFormArg {
    Rfc9440,
    EscapedPem,
}

/// The identity and URL flags as [`sim::enroll::EnrollOptions`].
fn enroll_options(a: &ServeArgs) -> sim::enroll::EnrollOptions {
    let base = a.mdm_url.as_deref().unwrap_or("").trim_end_matches('/');
    let urls = (a.mdm_checkin_path.is_some() || a.mdm_server_path.is_some()).then(|| {
        let at = |p: &Option<String>| format!("{base}{}", p.as_deref().unwrap_or("/mdm"));
        sim::enroll::MdmUrls {
            server_url: at(&a.mdm_server_path),
            checkin_url: Some(at(&a.mdm_checkin_path)),
        }
    });
    sim::enroll::EnrollOptions {
        cert_header: a.mdm_cert_header || a.mdm_cert_header_form.is_some(),
        cert_header_form: match a.mdm_cert_header_form {
            Some(CertHeaderFormArg::EscapedPem) => sim::enroll::CertHeaderForm::EscapedPem,
            Some(CertHeaderFormArg::Rfc9440) | None => sim::enroll::CertHeaderForm::Rfc9440,
        },
        scep: a
            .scep_url
            .as_ref()
            .map(|url| sim::enroll::scep_client::ScepSettings {
                url: url.clone(),
                challenge: std::env::var(&a.scep_challenge_env).unwrap_or_default(),
            }),
        urls,
        topic: None,
        mtls: a.mdm_mtls,
    }
}

/// How the devices identify themselves, as `lab sim serve` prints it.
fn identity_line(e: &sim::enroll::EnrollOptions, embedded: bool) -> String {
    let header = crate::sim::mdm_device::CERT_HEADER;
    let urls = match &e.urls {
        Some(u) => format!(
            "; check-ins to {}, results to {}",
            u.checkin_url.as_deref().unwrap_or(&u.server_url),
            u.server_url
        ),
        None => String::new(),
    };
    let how = match (&e.scep, e.cert_header, embedded) {
        (_, true, _) => {
            let form = match e.cert_header_form {
                sim::enroll::CertHeaderForm::Rfc9440 => "RFC 9440 form",
                sim::enroll::CertHeaderForm::EscapedPem => "URL-escaped PEM form",
            };
            format!("devices send their identity certificate in {header}, {form} (NanoMDM -cert-header)")
        }
        (Some(s), false, _) => {
            format!("devices enroll by SCEP at {} and sign every message (Mdm-Signature)", s.url)
        }
        (None, false, true) => "devices enroll by SCEP at the embedded MDM's /scep and sign every message (Mdm-Signature)".to_string(),
        (None, false, false) => {
            format!("devices send their identity certificate in {header} (no SCEP server given)")
        }
    };
    format!("{how}{urls}")
}

/// A `--mdm-url` that names the device endpoint instead of the server: devices append `/mdm`
/// themselves, so `…/mdm` gives `…/mdm/mdm` and a 404 on every check-in.
fn mdm_url_warning(url: &str) -> Option<String> {
    let path = url.trim_end_matches('/');
    path.ends_with("/mdm").then(|| {
        format!(
            "--mdm-url {url} ends in /mdm; the devices will send to {path}/mdm. Give the \
             server's base URL ({}).",
            path.trim_end_matches("/mdm")
        )
    })
}

/// The CA file is read by another program (an MDM server) that may be started as soon as it
/// appears: it is written whole, then renamed into place.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::mdm_url_warning;

    #[test]
    fn a_url_ending_in_mdm_is_warned_about_with_the_base_to_give() {
        let w = mdm_url_warning("http://h:9000/mdm").unwrap();
        assert!(w.contains("http://h:9000/mdm/mdm"), "{w}");
        assert!(w.contains("(http://h:9000)"), "{w}");
        assert!(mdm_url_warning("http://h:9000/mdm/").is_some());
    }

    #[test]
    fn a_base_url_is_not_warned_about() {
        assert_eq!(mdm_url_warning("http://h:9000"), None);
        assert_eq!(mdm_url_warning("http://h:9000/"), None);
        assert_eq!(mdm_url_warning("http://mdm.example/nanomdm"), None);
    }
}
