//! Probing devices over usbmuxd + lockdownd: the I/O edge of the baseline.

use super::baseline::{
    Baseline, DOMAIN_BATTERY, DOMAIN_CHAPERONE, DOMAIN_DISK, DomainReply, as_domain,
};
use crate::lockdown::{self, LockdownClient, LockdownError, PairRecord};
use crate::usbmux::frame::FrameError;
use crate::usbmux::message::LOCKDOWN_PORT;
use crate::usbmux::{DeviceEntry, UsbmuxAddr, UsbmuxClient, UsbmuxError};
use base64::Engine;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Per-message timeout (usbmuxd replies, lockdown replies, TLS handshake).
    pub timeout: Duration,
    /// How many devices are probed at once.
    pub concurrency: usize,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            timeout: LockdownClient::DEFAULT_TIMEOUT,
            concurrency: 128,
        }
    }
}

/// A device as one usbmuxd reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttachedDevice {
    pub host: String,
    #[serde(flatten)]
    pub entry: DeviceEntry,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostError {
    pub host: String,
    pub error: String,
}

/// List the devices of every usbmuxd, concurrently, in address order.
pub async fn list_all(
    addrs: &[UsbmuxAddr],
    timeout: Duration,
) -> (Vec<AttachedDevice>, Vec<HostError>) {
    let mut set = JoinSet::new();
    for (i, a) in addrs.iter().enumerate() {
        let client = UsbmuxClient {
            addr: a.clone(),
            timeout,
        };
        set.spawn(async move { (i, client.addr.to_string(), client.list_devices().await) });
    }
    let mut results = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(x) = r {
            results.push(x);
        }
    }
    results.sort_by_key(|r| r.0);
    let mut devices = Vec::new();
    let mut errors = Vec::new();
    for (_, host, r) in results {
        match r {
            Ok(list) => devices.extend(list.into_iter().map(|entry| AttachedDevice {
                host: host.clone(),
                entry,
            })),
            Err(e) => errors.push(HostError {
                host,
                error: e.to_string(),
            }),
        }
    }
    (devices, errors)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeStatus {
    /// Every read succeeded (individual keys may still be missing, with their reason).
    Ok,
    /// The device answered but refused the session (not paired, locked, …): pre-session
    /// values only.
    Partial,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    Unreachable,
    Timeout,
    Garbage,
    /// A plist nested past the depth limit (`plist_util::MAX_PLIST_DEPTH`).
    TooDeep,
    OversizedFrame,
    ClosedMidFrame,
    Closed,
    Tls,
    Refused,
    Protocol,
    NotPaired,
    WrongMode,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// The step that failed: connect, QueryType, ReadPairRecord, StartSession, TLS, GetValue …
    pub stage: String,
    pub kind: FailureKind,
    pub message: String,
    /// Raw bytes the device sent instead of a reply, base64 (evidence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_base64: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceProbe {
    pub host: String,
    pub device_id: u32,
    pub udid: String,
    pub status: ProbeStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    pub elapsed_ms: u64,
    pub baseline: Baseline,
    /// The device's answers through the MDM, when an MDM is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mdm: Option<super::mdm_side::MdmFacts>,
    /// Facts lockdown and the MDM report differently.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disagreements: Vec<super::mdm_side::Disagreement>,
    /// The device's clock when it answered the global-domain GetValue of this probe: lockdown
    /// `TimeIntervalSince1970`, seconds since 1970-01-01 UTC (a real on current iOS, an
    /// integer on old versions; both accepted). Compared with the host's clock, or with the
    /// previous probe's, it shows a device clock that jumped. `None` when the key was not read
    /// (no session: real devices do not give it pre-session; or the probe failed). Not part
    /// of the [`Baseline`]: it describes the moment, not the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_time: Option<f64>,
    /// The device's time zone when it answered: lockdown `TimeZoneOffsetFromUTC`, seconds east
    /// of UTC (briefs device-side.md, global domain). A DDM deadline is device-local time with
    /// no zone (enforcement schema `TargetLocalDateTime`): an offset from the dose is turned
    /// into one with it. `None` when not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utc_offset: Option<f64>,
    /// The host's clock (seconds since 1970 UTC) when `device_time` was read (the end of the
    /// probe, within its few milliseconds): a simulated lab's device clock runs faster than the
    /// host's, so the two are read together to tell the device's time later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_time: Option<f64>,
}

/// `TimeZoneOffsetFromUTC` from a global-domain reply, integer or real, within ±18 h (the widest
/// offset in use is +14 h); `None` otherwise.
pub fn utc_offset(global: &DomainReply) -> Option<f64> {
    let v = match global.as_ref().ok()?.get("TimeZoneOffsetFromUTC")? {
        plist::Value::Real(r) => *r,
        plist::Value::Integer(i) => i.as_signed()? as f64,
        _ => return None,
    };
    (v.is_finite() && v.abs() <= 18.0 * 3600.0).then_some(v)
}

/// `TimeIntervalSince1970` from a global-domain reply, integer or real; `None` when absent,
/// of another type, or not finite.
pub fn device_time(global: &DomainReply) -> Option<f64> {
    match global.as_ref().ok()?.get("TimeIntervalSince1970")? {
        plist::Value::Real(r) if r.is_finite() => Some(*r),
        plist::Value::Integer(i) => i
            .as_signed()
            .map(|n| n as f64)
            .or_else(|| i.as_unsigned().map(|n| n as f64)),
        _ => None,
    }
}

fn lockdown_failure(stage: &str, e: &LockdownError) -> Failure {
    let kind = match e {
        LockdownError::Timeout { .. } => FailureKind::Timeout,
        LockdownError::Frame(FrameError::TooLarge { .. }) => FailureKind::OversizedFrame,
        LockdownError::Frame(FrameError::Truncated { .. }) => FailureKind::ClosedMidFrame,
        LockdownError::Frame(_) | LockdownError::Closed => FailureKind::Closed,
        LockdownError::Garbage { .. } => FailureKind::Garbage,
        LockdownError::TooDeep { .. } => FailureKind::TooDeep,
        LockdownError::Tls(_) | LockdownError::TlsSetup(_) => FailureKind::Tls,
        LockdownError::Device { .. } => FailureKind::Refused,
        LockdownError::RequestMismatch { .. } | LockdownError::MissingKey { .. } => {
            FailureKind::Protocol
        }
    };
    let raw_base64 = match e {
        LockdownError::Garbage { raw, .. } | LockdownError::TooDeep { raw, .. } => {
            Some(base64::engine::general_purpose::STANDARD.encode(raw))
        }
        _ => None,
    };
    Failure {
        stage: stage.to_string(),
        kind,
        message: e.to_string(),
        raw_base64,
    }
}

fn usbmux_failure(stage: &str, e: &UsbmuxError) -> Failure {
    let kind = match e {
        UsbmuxError::Unreachable { .. } => FailureKind::Unreachable,
        UsbmuxError::Timeout { .. } => FailureKind::Timeout,
        UsbmuxError::Refused { .. } => FailureKind::Refused,
        UsbmuxError::Frame { .. } | UsbmuxError::BadReply { .. } => FailureKind::Protocol,
    };
    Failure {
        stage: stage.to_string(),
        kind,
        message: e.to_string(),
        raw_base64: None,
    }
}

/// Probe one device. Never panics and never returns early without a record: a failure leaves
/// the fields that were not read marked missing with the failure as their reason.
pub async fn probe_device(
    client: &UsbmuxClient,
    entry: &DeviceEntry,
    opts: &ProbeOptions,
    port_path: Option<&str>,
) -> DeviceProbe {
    let start = Instant::now();
    let host = client.addr.to_string();
    let mut replies: [DomainReply; 4] = std::array::from_fn(|_| Err("not read".to_string()));
    let outcome = probe_steps(client, entry, opts, &mut replies).await;
    record(host, entry, start, outcome, replies, port_path)
}

/// The probe record of what a device answered (`replies`: global, disk, battery, chaperone)
/// and how the probe ended (`outcome`, as [`probe_steps`] returns it).
pub(crate) fn record(
    host: String,
    entry: &DeviceEntry,
    start: Instant,
    outcome: Result<Option<Failure>, Failure>,
    mut replies: [DomainReply; 4],
    port_path: Option<&str>,
) -> DeviceProbe {
    let (status, failure) = match outcome {
        Ok(None) => (ProbeStatus::Ok, None),
        Ok(Some(f)) => (ProbeStatus::Partial, Some(f)),
        Err(f) => {
            for r in replies.iter_mut() {
                if let Err(reason) = r {
                    *reason = format!("probe failed at {}: {}", f.stage, f.message);
                }
            }
            (ProbeStatus::Failed, Some(f))
        }
    };
    let [global, disk, battery, chaperone] = &replies;
    let baseline =
        Baseline::from_replies(&host, entry, global, disk, battery, chaperone, port_path);
    let device_time = device_time(global);
    let utc_offset = utc_offset(global);
    let host_time = device_time.map(|_| chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
    DeviceProbe {
        host,
        device_id: entry.device_id,
        udid: entry.serial_number.clone(),
        status,
        failure,
        elapsed_ms: start.elapsed().as_millis() as u64,
        baseline,
        mdm: None,
        disagreements: Vec::new(),
        device_time,
        utc_offset,
        host_time,
    }
}

/// `Ok(None)`: full probe. `Ok(Some(f))`: session refused, pre-session values read.
/// `Err(f)`: the device could not be probed.
async fn probe_steps(
    client: &UsbmuxClient,
    entry: &DeviceEntry,
    opts: &ProbeOptions,
    replies: &mut [DomainReply; 4],
) -> Result<Option<Failure>, Failure> {
    let (mut ld, refusal) = open_session(client, entry, opts).await?;
    if let Some(refusal) = refusal {
        // Without a session only the pre-session values can be read (brief §6).
        replies[0] = read_domain(&mut ld, None).await?;
        for r in replies[1..].iter_mut() {
            *r = Err(format!("no lockdown session: {}", refusal.message));
        }
        return Ok(Some(refusal));
    }
    replies[0] = read_domain(&mut ld, None).await?;
    replies[1] = read_domain(&mut ld, Some(DOMAIN_DISK)).await?;
    replies[2] = read_domain(&mut ld, Some(DOMAIN_BATTERY)).await?;
    replies[3] = read_domain(&mut ld, Some(DOMAIN_CHAPERONE)).await?;
    if let Err(e) = ld.stop_session().await {
        tracing::debug!(udid = %entry.serial_number, error = %e, "StopSession failed after a complete probe");
    }
    Ok(None)
}

/// Open a lockdown connection to the device through usbmuxd and start a session on it (TLS
/// after StartSession). `Ok((client, None))`: in session. `Ok((client, Some(f)))`: the device
/// answered but refused the session (not paired, locked …); the connection is still open for
/// pre-session reads. `Err(f)`: the device could not be reached or spoke nonsense.
pub(crate) async fn open_session(
    client: &UsbmuxClient,
    entry: &DeviceEntry,
    opts: &ProbeOptions,
) -> Result<(LockdownClient, Option<Failure>), Failure> {
    // The pair record and the BUID are usbmuxd's to give, on connections of their own: they
    // are read while the device answers QueryType rather than after it, two round trips fewer
    // on the way to StartSession (issue 16). The order in which failures are judged is as
    // before: the connection, the device's mode, then the pair record.
    let udid = entry.serial_number.clone();
    let lockdown = async {
        let io = client
            .connect(entry.device_id, LOCKDOWN_PORT)
            .await
            .map_err(|e| usbmux_failure("connect", &e))?;
        let mut ld = LockdownClient::new(io, "lab", opts.timeout);
        let ty = ld
            .query_type()
            .await
            .map_err(|e| lockdown_failure("QueryType", &e))?;
        Ok::<_, Failure>((ld, ty))
    };
    // The pair record is parsed, and the TLS config its host key makes is built (and cached,
    // `tls::client_config`), as soon as usbmuxd hands it over: reading an RSA key checks it,
    // which took as long as the QueryType round trip it now overlaps (issue 16). Its errors
    // are judged below, in their place; `start_session` finds the config in the cache.
    let pair = async {
        let bytes = client.read_pair_record(&udid).await?;
        let parsed = PairRecord::from_bytes(&bytes);
        if let Ok(p) = &parsed {
            // A config error is reported by `start_session`, before the device is touched.
            let _ = crate::tls::client_config(&p.host_certificate, &p.host_private_key);
        }
        Ok::<_, UsbmuxError>(parsed)
    };
    let (ld, pair, buid) = tokio::join!(lockdown, pair, client.read_buid());
    let (mut ld, ty) = ld?;
    if ty != lockdown::SERVICE_TYPE {
        return Err(Failure {
            stage: "QueryType".into(),
            kind: FailureKind::WrongMode,
            message: format!("device answers as {ty:?}, not a booted iOS lockdownd"),
            raw_base64: None,
        });
    }
    let refusal = match (pair, buid) {
        (Err(UsbmuxError::Refused { .. }), _) => Some(Failure {
            stage: "ReadPairRecord".into(),
            kind: FailureKind::NotPaired,
            message: "usbmuxd has no pair record for this device; trust this computer on the device (or pair it) first".into(),
            raw_base64: None,
        }),
        (Err(e), _) => return Err(usbmux_failure("ReadPairRecord", &e)),
        (_, Err(e)) => return Err(usbmux_failure("ReadBUID", &e)),
        (Ok(parsed), Ok(buid)) => match parsed {
            Err(e) => Some(Failure {
                stage: "ReadPairRecord".into(),
                kind: FailureKind::NotPaired,
                message: e.to_string(),
                raw_base64: None,
            }),
            Ok(pair) => match ld.start_session(&pair, &buid).await {
                Ok(_) => None,
                Err(e @ LockdownError::Device { .. }) => {
                    Some(lockdown_failure("StartSession", &e))
                }
                Err(e) => {
                    let stage = if matches!(e, LockdownError::Tls(_))
                        || (matches!(e, LockdownError::Timeout { .. })
                            && e.to_string().contains("TLS"))
                    {
                        "TLS"
                    } else {
                        "StartSession"
                    };
                    return Err(lockdown_failure(stage, &e));
                }
            },
        },
    };
    Ok((ld, refusal))
}

/// One GetValue of a whole domain. A device refusal becomes a per-field reason; a broken
/// connection fails the device.
pub(crate) async fn read_domain(
    ld: &mut LockdownClient,
    domain: Option<&str>,
) -> Result<DomainReply, Failure> {
    domain_reply(domain, ld.get_value(domain, None).await)
}

/// [`read_domain`], building only `keys` of the domain's values (the rest are read through).
pub(crate) async fn read_domain_keys(
    ld: &mut LockdownClient,
    domain: Option<&str>,
    keys: &[&str],
) -> Result<DomainReply, Failure> {
    domain_reply(domain, ld.get_values(domain, keys).await)
}

/// A GetValue's answer as the domain's reply, or the device's failure.
fn domain_reply(
    domain: Option<&str>,
    answer: Result<plist::Value, LockdownError>,
) -> Result<DomainReply, Failure> {
    match answer {
        Ok(v) => Ok(as_domain(v)),
        Err(LockdownError::Device { code, .. }) => Ok(Err(code.name().to_string())),
        Err(e) => Err(lockdown_failure(
            &format!("GetValue {}", domain.unwrap_or("(global)")),
            &e,
        )),
    }
}

/// Probe many devices concurrently; results come back in input order.
pub async fn probe_all(
    devices: Vec<(AttachedDevice, Option<String>)>,
    opts: ProbeOptions,
) -> Vec<DeviceProbe> {
    let sem = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let opts = Arc::new(opts);
    let mut set = JoinSet::new();
    for (i, (dev, port_path)) in devices.into_iter().enumerate() {
        let sem = sem.clone();
        let opts = opts.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore open");
            let addr = UsbmuxAddr::parse(&dev.host).expect("host came from a parsed address");
            let client = UsbmuxClient {
                addr,
                timeout: opts.timeout,
            };
            // The overall deadline guards against a device that trickles bytes forever.
            let deadline = opts.timeout * 8;
            let probe = probe_device(&client, &dev.entry, &opts, port_path.as_deref());
            let r = match tokio::time::timeout(deadline, probe).await {
                Ok(p) => p,
                Err(_) => {
                    let fail = Failure {
                        stage: "probe".into(),
                        kind: FailureKind::Timeout,
                        message: format!("probe did not finish within {deadline:?}"),
                        raw_base64: None,
                    };
                    let msg = format!("probe failed: {}", fail.message);
                    DeviceProbe {
                        host: dev.host.clone(),
                        device_id: dev.entry.device_id,
                        udid: dev.entry.serial_number.clone(),
                        status: ProbeStatus::Failed,
                        baseline: Baseline::from_replies(
                            &dev.host,
                            &dev.entry,
                            &Err(msg.clone()),
                            &Err(msg.clone()),
                            &Err(msg.clone()),
                            &Err(msg),
                            port_path.as_deref(),
                        ),
                        failure: Some(fail),
                        elapsed_ms: deadline.as_millis() as u64,
                        mdm: None,
                        disagreements: Vec::new(),
                        device_time: None,
                        utc_offset: None,
                        host_time: None,
                    }
                }
            };
            (i, r)
        });
    }
    let mut out: Vec<(usize, DeviceProbe)> = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(x) => out.push(x),
            Err(e) => tracing::error!(error = %e, "probe task panicked"),
        }
    }
    out.sort_by_key(|x| x.0);
    out.into_iter().map(|x| x.1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use plist::{Dictionary, Value};

    fn global(v: Option<Value>) -> DomainReply {
        let mut d = Dictionary::new();
        d.insert("ProductVersion".into(), "17.5.1".into());
        if let Some(v) = v {
            d.insert("TimeIntervalSince1970".into(), v);
        }
        Ok(d)
    }

    #[test]
    fn device_time_takes_reals_and_integers() {
        assert_eq!(
            device_time(&global(Some(Value::Real(1_795_905_000.25)))),
            Some(1_795_905_000.25)
        );
        // Old iOS versions send an integer.
        assert_eq!(
            device_time(&global(Some(Value::Integer(1_795_905_000u64.into())))),
            Some(1_795_905_000.0)
        );
        assert_eq!(device_time(&global(None)), None);
        assert_eq!(device_time(&global(Some("soon".into()))), None);
        assert_eq!(device_time(&global(Some(Value::Real(f64::NAN)))), None);
        assert_eq!(device_time(&Err("no session".into())), None);
    }
}
