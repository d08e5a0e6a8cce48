//! Kept lockdown sessions for the follow-up's re-probes (issue 16): one session (a TLS
//! connection through usbmuxd, after StartSession) per attached device, opened once and asked
//! again each round, instead of a usbmuxd Connect, a StartSession and a TLS handshake per device
//! per round. A re-probe reads the global domain only: the version, build, clock and network
//! keys a follow-up journals all live there.
//!
//! Why it is as faithful as a fresh probe: a real lockdownd keeps a session as long as its
//! connection lives (device-side brief §5.3), and the connection does not outlive the device's
//! presence — a device that restarts (an install) or is unplugged drops it, and usbmuxd gives a
//! re-plugged or restarted device a new DeviceID. So a kept session is dropped, and the device
//! probed afresh, when
//!
//! - the device is missing from the round's usbmuxd listing (detached: nothing is read), or is
//!   listed under another host or DeviceID (re-plugged, restarted);
//! - the kept connection fails in any way (an error, EOF, a timeout): the device closed it;
//! - it sat idle longer than [`MAX_IDLE`] (lockdownd lets an idle connection go after about
//!   60 s, brief §3.1; asking on a dead one would only cost a round trip).
//!
//! The cache holds at most one session per device and at most [`SessionCache::capacity`] in all
//! (half the file descriptors the process may open, as the listeners' caps are sized); a device
//! beyond it is probed afresh each round, as before. [`SessionCache::close_all`] ends every
//! session with StopSession at the end of the follow-up.

use super::baseline::DomainReply;
use super::run::{
    AttachedDevice, DeviceProbe, Failure, ProbeOptions, open_session, read_domain_keys, record,
};
use crate::lockdown::LockdownClient;
use crate::usbmux::{UsbmuxAddr, UsbmuxClient};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A kept session idle for longer than this is closed rather than asked: a real lockdownd
/// closes an idle connection after about 60 s (pymobiledevice3's test suite; the simulator's
/// `listen_limits::IDLE_TIMEOUT`), so half of that leaves a margin.
pub const MAX_IDLE: Duration = Duration::from_secs(30);

/// The global domain's keys a re-probe builds into its record: the version and build, the
/// device clock and UTC offset, and the two network keys the network state reads
/// (`baseline_facts::reprobe_network`). The device still sends the whole domain and all of it
/// is checked; the other ~30 values are read through without being built.
pub const REPROBE_KEYS: &[&str] = &[
    "ProductVersion",
    "BuildVersion",
    "TimeIntervalSince1970",
    "TimeZoneOffsetFromUTC",
    "SIMStatus",
    "TelephonyCapability",
];

/// The lockdown sessions kept open for re-probes, by UDID.
pub struct SessionCache {
    kept: Mutex<HashMap<String, Kept>>,
    opts: ProbeOptions,
    capacity: usize,
}

/// One device's open session and where it was opened.
struct Kept {
    host: String,
    device_id: u32,
    ld: LockdownClient,
    used: Instant,
}

/// How a re-probe was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// By a kept session (no Connect, no StartSession, no TLS handshake).
    Kept,
    /// By a session opened for this re-probe (the first one, or the kept one was dropped).
    Fresh,
    /// The fresh session could not be opened, or was refused: the probe record says why.
    Failed,
}

impl SessionCache {
    /// A cache whose lockdown and usbmuxd messages time out after `timeout`, holding as many
    /// sessions as the descriptor limit allows.
    pub fn new(timeout: Duration) -> SessionCache {
        let budget = crate::listen_limits::fd_budget(crate::listen_limits::soft_nofile());
        Self::with_capacity(timeout, budget)
    }

    /// As [`SessionCache::new`], holding at most `capacity` sessions.
    pub fn with_capacity(timeout: Duration, capacity: usize) -> SessionCache {
        SessionCache {
            kept: Mutex::new(HashMap::new()),
            opts: ProbeOptions {
                timeout,
                ..ProbeOptions::default()
            },
            capacity,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many sessions are kept now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Close the sessions of devices no longer followed (`keep` says no), or no longer listed
    /// by usbmuxd as they were when their session opened (detached, re-plugged, restarted).
    pub fn retain(&self, attached: &[AttachedDevice], keep: impl Fn(&str) -> bool) {
        self.lock().retain(|udid, k| {
            keep(udid)
                && attached.iter().any(|a| {
                    a.entry.serial_number == *udid
                        && a.host == k.host
                        && a.entry.device_id == k.device_id
                })
        });
    }

    /// Re-probe an attached device: its global domain read over the kept session, or over a
    /// session opened now (kept for the next round) when there is none, it was opened under
    /// another host or DeviceID, it sat idle too long, or it failed.
    pub async fn reprobe(&self, device: &AttachedDevice) -> (DeviceProbe, Answered) {
        let start = Instant::now();
        let udid = &device.entry.serial_number;
        let kept = self.lock().remove(udid);
        if let Some(mut k) = kept
            && k.host == device.host
            && k.device_id == device.entry.device_id
            && k.used.elapsed() <= MAX_IDLE
        {
            match read_domain_keys(&mut k.ld, None, REPROBE_KEYS).await {
                Ok(global) => {
                    let probe = self.reprobe_record(device, start, Ok(None), global);
                    k.used = Instant::now();
                    self.lock().insert(udid.clone(), k);
                    return (probe, Answered::Kept);
                }
                Err(f) => {
                    tracing::debug!(%udid, stage = %f.stage, error = %f.message, "kept lockdown session failed: probing afresh");
                }
            }
        }
        self.fresh(device, start).await
    }

    /// Open a session, read the global domain, keep the session when there is room.
    async fn fresh(&self, device: &AttachedDevice, start: Instant) -> (DeviceProbe, Answered) {
        let failed = |f: Failure| {
            let probe = self.reprobe_record(device, start, Err(f), Err("not read".into()));
            (probe, Answered::Failed)
        };
        let addr = match UsbmuxAddr::parse(&device.host) {
            Ok(a) => a,
            Err(e) => {
                return failed(Failure {
                    stage: "connect".into(),
                    kind: super::FailureKind::Unreachable,
                    message: e.to_string(),
                    raw_base64: None,
                });
            }
        };
        let client = UsbmuxClient {
            addr,
            timeout: self.opts.timeout,
        };
        let (mut ld, refusal) = match open_session(&client, &device.entry, &self.opts).await {
            Ok(x) => x,
            Err(f) => return failed(f),
        };
        let global = match read_domain_keys(&mut ld, None, REPROBE_KEYS).await {
            Ok(g) => g,
            Err(f) => return failed(f),
        };
        if let Some(refusal) = refusal {
            // Pre-session values only; nothing to keep (a later round asks again, as a
            // device may be unlocked or paired meanwhile).
            let probe = self.reprobe_record(device, start, Ok(Some(refusal)), global);
            return (probe, Answered::Failed);
        }
        let probe = self.reprobe_record(device, start, Ok(None), global);
        let full = {
            let mut kept = self.lock();
            if kept.len() < self.capacity {
                kept.insert(
                    device.entry.serial_number.clone(),
                    Kept {
                        host: device.host.clone(),
                        device_id: device.entry.device_id,
                        ld,
                        used: Instant::now(),
                    },
                );
                None
            } else {
                Some(ld)
            }
        };
        if let Some(mut ld) = full
            && let Err(e) = ld.stop_session().await
        {
            tracing::debug!(udid = %device.entry.serial_number, error = %e, "StopSession failed after a re-probe");
        }
        (probe, Answered::Fresh)
    }

    /// A re-probe's record: the global domain's [`REPROBE_KEYS`] as read, the other domains
    /// not read.
    fn reprobe_record(
        &self,
        device: &AttachedDevice,
        start: Instant,
        outcome: Result<Option<Failure>, Failure>,
        global: DomainReply,
    ) -> DeviceProbe {
        let not_read = || Err("not read: a re-probe reads the global domain only".to_string());
        let replies = [global, not_read(), not_read(), not_read()];
        record(
            device.host.clone(),
            &device.entry,
            start,
            outcome,
            replies,
            None,
        )
    }

    /// End every kept session (StopSession, then close), 64 at a time.
    pub async fn close_all(&self) {
        let mut all: Vec<Kept> = self.lock().drain().map(|(_, k)| k).collect();
        for batch in all.chunks_mut(64) {
            crate::join::join_all(
                batch
                    .iter_mut()
                    .map(|k| async move {
                        if let Err(e) = k.ld.stop_session().await {
                            tracing::debug!(error = %e, "StopSession of a kept session failed");
                        }
                    })
                    .collect(),
            )
            .await;
        }
    }
}
