//! How the harness reaches an MDM: one trait, three backends, all over HTTP (no in-process
//! shortcut, even for the embedded server).
//!
//! - `embedded`: `lab`'s own server — the NanoMDM-compatible enqueue API, results read back from
//!   its command-history API.
//! - `nanomdm`: `PUT /v1/enqueue/{id}` with the raw plist (brief mdm.md §5.1); results arrive on
//!   the harness's webhook listener.
//! - `micromdm` (`mdm::micromdm`): `POST /v1/commands` with MicroMDM's JSON, HTTP 201 (§5.2);
//!   webhook as above.
//!
//! Device replies carry no RequestType (§0.6): every backend keeps a CommandUUID → RequestType
//! map of what it enqueued, and results come back tagged with it. A CommandUUID delivered or
//! acknowledged twice is flagged (NanoMDM's kv queue can re-deliver, §5.4).

use super::command::Command;
use super::report::{ReportStatus, parse_report};
use super::webhook_receiver::Inbox;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod enqueue;
mod feed;
mod inbox;
pub(super) use inbox::results_from_inbox;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// No connection was made: the request never left (nothing can have been queued).
    #[error("MDM at {url} cannot be reached: {reason}")]
    NotConnected { url: String, reason: String },
    /// The connection broke after the request was sent: it may or may not have taken effect.
    #[error("MDM at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("MDM at {url} did not answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("MDM at {url} refused the request: HTTP {status}: {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    #[error("MDM at {url} answered something that is not its API's JSON: {reason}")]
    BadResponse { url: String, reason: String },
}

/// What an enqueue achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub command_uuid: String,
    /// What the server said of the push: `Some(true)` it pushed (an APNs id), `Some(false)` it
    /// did not (a push error, `no_push`: the device gets the command on its next check-in),
    /// `None` it said nothing (MicroMDM's 201, KMFDDM): recorded as unknown, never as pushed.
    pub pushed: Option<bool>,
    pub push_error: Option<String>,
}

/// What a NanoMDM-style enqueue answer (`APIResult`, MDM brief §5.1: `status.<id>.push_result`
/// is the APNs id of a push that went out) says of the push to `id`.
pub(crate) fn pushed_by_answer(
    v: &serde_json::Value,
    id: &str,
    push_error: Option<&str>,
) -> Option<bool> {
    if push_error.is_some() || v["no_push"] == true {
        Some(false)
    } else if v["status"][id]["push_result"].is_string() {
        Some(true)
    } else {
        None
    }
}

/// One device report as the harness learned of it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandResult {
    pub command_uuid: String,
    /// From the harness's own map; `None` for a command it did not send.
    pub request_type: Option<String>,
    pub status: String,
    /// The device's plist exactly as received by the MDM. Shared, not copied: a follow-up
    /// round hands every report the backend keeps to the runner, which drops those the journal
    /// has (issue 16: about 8 000 reports by the end of a 1 000-device bench trial).
    pub raw: std::sync::Arc<[u8]>,
    pub received_at: String,
}

/// A device report the MDM kept but could not attribute to a command queued for the device
/// (not a plist, an unknown CommandUUID), exactly as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedReport {
    /// The MDM's own number for it (stable, increasing: used to record each one once).
    pub id: i64,
    /// The device it came from, where the MDM could tell (by its identity certificate).
    pub udid: Option<String>,
    pub note: String,
    pub received_at: String,
    pub raw: Vec<u8>,
}

/// Something the backend noticed and worked around (a webhook lost or sent twice), for the
/// journal. Each is handed out once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendNote {
    pub udid: String,
    /// `webhook_lost`, `webhook_duplicate`.
    pub kind: &'static str,
    pub key: String,
    pub value: String,
}

/// How often the MDM delivered a command and how often the device answered it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryCount {
    pub deliveries: Option<u64>,
    pub final_reports: u64,
}

pub use super::deliveries::{Delivery, DeliverySeen};
pub use super::records::{MdmDose, StoreIdentity};
pub use super::user_channel::{UserChannelRecord, UserChannels};

pub trait MdmBackend: Send + Sync {
    fn kind(&self) -> &'static str;
    /// Queue one command for one device and push.
    fn enqueue<'a>(
        &'a self,
        udid: &'a str,
        command: &'a Command,
        command_uuid: &'a str,
    ) -> BoxFuture<'a, Result<Enqueued, BackendError>>;
    /// Whether [`MdmBackend::enqueue_many`] queues for many devices in one call: `lab`'s own
    /// server. The runner shares one CommandUUID among devices only then, and only for a
    /// harmless query (OSUpdateStatus), never a dose.
    fn enqueues_in_bulk(&self) -> bool {
        false
    }
    /// Queue one command under one CommandUUID for many devices; one answer per device, in
    /// order. The default makes one [`MdmBackend::enqueue`] call per device ([`BULK`] at once)
    /// with that same CommandUUID, which most MDMs refuse: call it only where
    /// [`MdmBackend::enqueues_in_bulk`] says so.
    fn enqueue_many<'a>(
        &'a self,
        udids: &'a [String],
        command: &'a Command,
        command_uuid: &'a str,
    ) -> BoxFuture<'a, Vec<Result<Enqueued, BackendError>>> {
        Box::pin(enqueue_each(self, udids, command, command_uuid))
    }
    /// Every result the MDM has reported for this device so far, oldest first.
    fn results<'a>(
        &'a self,
        udid: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CommandResult>, BackendError>>;
    /// The results of many devices (one entry per device, in order), each what
    /// [`MdmBackend::results`] gives for it; a failed call is that device's error. The default
    /// asks device by device, [`BULK`] at once; `lab`'s own server answers for the whole lab in
    /// one call of what is new since the last (`GET /v1/history?…`, its own extension).
    fn results_many<'a>(
        &'a self,
        udids: &'a [String],
    ) -> BoxFuture<'a, Vec<Result<Vec<CommandResult>, BackendError>>> {
        Box::pin(results_each(self, udids))
    }
    /// [`MdmBackend::results_many`] for a caller that journals every result it is given (the
    /// follow-up's rounds): a backend may leave out what an earlier call of this method gave,
    /// so that a round's work does not grow with the length of the run — `lab`'s own server's
    /// history feed does (issue 16: a 900-device round's CPU grew from 112 to 186 ms over 15
    /// rounds, cloning and re-checking every device's whole history). The default gives every
    /// result, as `results_many` does.
    fn fresh_results_many<'a>(
        &'a self,
        udids: &'a [String],
    ) -> BoxFuture<'a, Vec<Result<Vec<CommandResult>, BackendError>>> {
        self.results_many(udids)
    }
    /// Deliveries / final answers per CommandUUID (deliveries only where the MDM exposes them).
    fn delivery_counts<'a>(
        &'a self,
        udid: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, DeliveryCount>, BackendError>>;
    /// Whether the MDM's own records hold this command for this device: `Some(true)` queued,
    /// `Some(false)` proven not queued, `None` the MDM keeps no records that could tell (a
    /// webhook-fed NanoMDM or MicroMDM only reports answers). The one-dose rule rests on this:
    /// a ScheduleOSUpdate whose enqueue failed is sent again only on `Some(false)`.
    fn queued<'a>(
        &'a self,
        udid: &'a str,
        command_uuid: &'a str,
    ) -> BoxFuture<'a, Result<Option<bool>, BackendError>>;
    /// Which store answers and since when its records go back (`GET /v1/store` on `lab`'s own
    /// server); `None` for an MDM that exposes no such identity (NanoMDM, MicroMDM).
    fn store_identity(&self) -> BoxFuture<'_, Result<Option<StoreIdentity>, BackendError>> {
        Box::pin(async { Ok(None) })
    }
    /// Every ScheduleOSUpdate the MDM's own records hold for this device, whoever sent it;
    /// `None` when the MDM keeps no command records (NanoMDM, MicroMDM).
    fn dose_records<'a>(
        &'a self,
        _udid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<MdmDose>>, BackendError>> {
        Box::pin(async { Ok(None) })
    }
    /// Reports the MDM could not attribute to a queued command, numbered above `after`, of
    /// every device (one call per follow-up round, however many devices): where the MDM keeps
    /// them; empty otherwise.
    fn rejected(&self, _after: i64) -> BoxFuture<'_, Result<Vec<RejectedReport>, BackendError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    /// Faults noticed since the last call (lost or duplicated webhooks).
    fn take_notes(&self) -> Vec<BackendNote> {
        Vec::new()
    }
    /// How long answers may still be on their way after the device sent them (webhooks are
    /// posted after the MDM stored the report): waited once before the last collection.
    fn settle_time(&self) -> Duration {
        Duration::ZERO
    }
    /// Whether an answer stays readable after the fact, so that one sent while `lab` was not
    /// listening is not lost: `Some(true)` the MDM keeps a history `lab` reads (`lab`'s own
    /// server); `Some(false)` webhooks are all there is and the MDM never posts one again
    /// (NanoMDM only logs a refused webhook, MicroMDM does not retry: MDM brief §5.1, §5.2,
    /// issue 17); `None` not known yet.
    fn keeps_history(&self) -> Option<bool> {
        None
    }
    /// Each delivery of a command to the device this backend can see (`mdm::deliveries`), as
    /// of the last [`MdmBackend::results`] call (no call of its own); `None`: it sees none.
    fn deliveries(&self, _udid: &str) -> Option<Vec<Delivery>> {
        None
    }
    /// [`MdmBackend::deliveries`] of the commands `uuids` only, in the same order: the
    /// follow-up asks each round for its doses' deliveries, and a device's list holds one for
    /// every status query of the run.
    fn deliveries_of(&self, udid: &str, uuids: &[&str]) -> Option<Vec<Delivery>> {
        self.deliveries(udid).map(|all| {
            all.into_iter()
                .filter(|d| uuids.contains(&d.command_uuid.as_str()))
                .collect()
        })
    }
    /// The MDM's record of the device's user channel (a Shared iPad's logged-in user, issue
    /// 14): `lab`'s own server keeps one (`GET /v1/user_channels/{id}`); the others' APIs tell
    /// nothing of it, so "unknown", saying why.
    fn user_channels<'a>(
        &'a self,
        _udid: &'a str,
    ) -> BoxFuture<'a, Result<UserChannels, BackendError>> {
        let why = format!(
            "MDM backend {} does not report user-channel check-ins",
            self.kind()
        );
        Box::pin(async move { Ok(UserChannels::Unknown(why)) })
    }
}

/// How many per-device MDM calls [`MdmBackend::results_many`]'s default makes at once.
pub const BULK: usize = 64;

/// [`MdmBackend::results_many`] device by device, [`BULK`] calls at once.
pub async fn results_each<B: MdmBackend + ?Sized>(
    b: &B,
    udids: &[String],
) -> Vec<Result<Vec<CommandResult>, BackendError>> {
    let mut out = Vec::with_capacity(udids.len());
    for chunk in udids.chunks(BULK) {
        out.extend(crate::join::join_all(chunk.iter().map(|u| b.results(u)).collect()).await);
    }
    out
}

/// [`MdmBackend::enqueue_many`] device by device, [`BULK`] calls at once.
pub async fn enqueue_each<B: MdmBackend + ?Sized>(
    b: &B,
    udids: &[String],
    command: &Command,
    command_uuid: &str,
) -> Vec<Result<Enqueued, BackendError>> {
    let mut out = Vec::with_capacity(udids.len());
    for chunk in udids.chunks(BULK) {
        out.extend(
            crate::join::join_all(
                chunk
                    .iter()
                    .map(|u| b.enqueue(u, command, command_uuid))
                    .collect(),
            )
            .await,
        );
    }
    out
}

pub(super) fn client(timeout: Duration) -> reqwest::Client {
    crate::http_client::client(timeout)
}

pub(crate) fn map_send_error(url: &str, timeout: Duration, e: reqwest::Error) -> BackendError {
    if e.is_timeout() {
        BackendError::Timeout {
            url: url.to_string(),
            after: timeout,
        }
    } else if e.is_connect() {
        BackendError::NotConnected {
            url: url.to_string(),
            reason: error_chain(&e.without_url()),
        }
    } else {
        BackendError::Unreachable {
            url: url.to_string(),
            reason: error_chain(&e.without_url()),
        }
    }
}

/// An error with its sources: reqwest's own message is only "error sending request"; the
/// cause (connection refused, connection closed before the answer) is in the source chain.
/// The URL is left out: the variant already names it.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        source = c.source();
    }
    s
}

/// Notes waiting to be journaled, each handed out once.
#[derive(Default)]
pub(super) struct Notes {
    pending: Mutex<Vec<BackendNote>>,
    given: Mutex<std::collections::HashSet<(String, String)>>,
}

impl Notes {
    pub(super) fn add(&self, n: BackendNote) {
        let fresh = self
            .given
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((n.udid.clone(), n.key.clone()));
        if fresh {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(n);
        }
    }
    pub(super) fn take(&self) -> Vec<BackendNote> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// What the backend queued: CommandUUID → (RequestType, device, when queued, on the webhook
/// listener's clock: `mdm::deliveries::from_polls` compares it with the events' arrival).
#[derive(Default)]
pub(super) struct SentMap(Mutex<HashMap<String, (String, String, String)>>);

impl SentMap {
    pub(super) fn insert(&self, uuid: &str, request_type: &str, udid: &str) {
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(
            uuid.to_string(),
            (request_type.to_string(), udid.to_string(), at),
        );
    }
    pub(super) fn get(&self, uuid: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uuid)
            .map(|x| x.0.clone())
    }
    /// The commands queued for `udid`, as (CommandUUID, when queued).
    pub(super) fn sent_to(&self, udid: &str) -> Vec<(String, String)> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, x)| x.1 == udid)
            .map(|(u, x)| (u.clone(), x.2.clone()))
            .collect()
    }
}

pub(super) fn counts_from_results(results: &[CommandResult]) -> HashMap<String, DeliveryCount> {
    let mut m: HashMap<String, DeliveryCount> = HashMap::new();
    for r in results {
        let final_ = ReportStatus::parse(&r.status) != ReportStatus::NotNow;
        let e = m.entry(r.command_uuid.clone()).or_default();
        if final_ {
            e.final_reports += 1;
        }
    }
    m
}

/// NanoMDM-compatible API: used by the `nanomdm` and `embedded` backends.
pub struct NanoMdm {
    base: String,
    api_key: String,
    http: reqwest::Client,
    timeout: Duration,
    sent: SentMap,
    /// Results source: `None` → the embedded server's history API; `Some` → webhook events,
    /// reconciled with the history API when the server has one.
    inbox: Option<Arc<Inbox>>,
    kind: &'static str,
    /// Whether the server has `/v1/history` (`lab`'s own server does, NanoMDM does not):
    /// `None` until asked.
    history_api: Mutex<Option<bool>>,
    notes: Notes,
    /// Reports taken from the history because their webhook never came, by (CommandUUID,
    /// SHA-256 of the raw report): from then on they always come from the history, so that a
    /// webhook arriving very late is not a second report.
    from_history: Mutex<std::collections::HashSet<(String, Vec<u8>)>>,
    /// Each device's deliveries in the history the last `results` call read.
    history_deliveries: Mutex<HashMap<String, Vec<Delivery>>>,
    /// The histories read since a cursor (`results_many` on `lab`'s own server).
    feed: tokio::sync::Mutex<feed::Feed>,
    /// Whether the server answers `GET /v1/history?…`: `None` until asked.
    feed_api: Mutex<Option<bool>>,
}

/// One report, as webhook and history both carry it: its CommandUUID and a digest of its raw
/// bytes (their `received_at` differ: the receiver's clock and the server's).
fn report_key(r: &CommandResult) -> (String, Vec<u8>) {
    (r.command_uuid.clone(), Sha256::digest(&r.raw).to_vec())
}

/// A report in the server's history with no webhook for this long is a lost webhook (the
/// webhook is posted after the report is stored, so a fresh one may still be on its way).
const WEBHOOK_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(3);

impl NanoMdm {
    /// The embedded server: results from its history API.
    pub fn embedded(base: &str, api_key: &str, timeout: Duration) -> NanoMdm {
        NanoMdm {
            base: base.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
            http: client(timeout),
            timeout,
            sent: SentMap::default(),
            inbox: None,
            kind: "embedded",
            history_api: Mutex::new(Some(true)),
            notes: Notes::default(),
            from_history: Mutex::default(),
            history_deliveries: Mutex::default(),
            feed: Default::default(),
            feed_api: Mutex::new(None),
        }
    }

    /// A NanoMDM: results from the webhook listener's inbox.
    pub fn with_webhooks(
        base: &str,
        api_key: &str,
        timeout: Duration,
        inbox: Arc<Inbox>,
    ) -> NanoMdm {
        NanoMdm {
            inbox: Some(inbox),
            kind: "nanomdm",
            history_api: Mutex::new(None),
            ..NanoMdm::embedded(base, api_key, timeout)
        }
    }

    /// Webhooks only, never the history API (an MDM known to keep none).
    pub fn without_history(self) -> NanoMdm {
        *self.history_api.lock().unwrap_or_else(|p| p.into_inner()) = Some(false);
        self
    }

    /// The history, or `None` when the server has no history API (HTTP 404: NanoMDM).
    async fn history_if_any(&self, udid: &str) -> Result<Option<serde_json::Value>, BackendError> {
        if *self.history_api.lock().unwrap_or_else(|p| p.into_inner()) == Some(false) {
            return Ok(None);
        }
        match self.history(udid).await {
            Ok(h) => {
                *self.history_api.lock().unwrap_or_else(|p| p.into_inner()) = Some(true);
                Ok(Some(h))
            }
            Err(BackendError::Refused {
                status: 404 | 405, ..
            }) if self.inbox.is_some()
                && self
                    .history_api
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_none() =>
            {
                *self.history_api.lock().unwrap_or_else(|p| p.into_inner()) = Some(false);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Keep the deliveries of a history just read, for [`MdmBackend::deliveries`].
    fn keep_deliveries(&self, udid: &str, h: &serde_json::Value) -> &Self {
        self.history_deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(udid.to_string(), super::deliveries::from_history(h));
        self
    }

    /// Every report in the server's history for this device, oldest first.
    fn results_from_history(
        &self,
        udid: &str,
        h: &serde_json::Value,
    ) -> Result<Vec<CommandResult>, BackendError> {
        let mut out = Vec::new();
        let bad = |reason: &str| BackendError::BadResponse {
            url: format!("{}/v1/history/{udid}", self.base),
            reason: reason.to_string(),
        };
        for c in h["commands"]
            .as_array()
            .ok_or_else(|| bad("no commands array"))?
        {
            let uuid = c["command_uuid"]
                .as_str()
                .ok_or_else(|| bad("no command_uuid"))?;
            for r in c["reports"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(r["raw_base64"].as_str().unwrap_or(""))
                    .map_err(|_| bad("raw_base64 is not base64"))?;
                // The history's status is the server's reading; re-read the raw report.
                let status = parse_report(&raw)
                    .map(|p| p.status.as_str().to_string())
                    .unwrap_or_else(|_| r["status"].as_str().unwrap_or("").to_string());
                out.push(CommandResult {
                    command_uuid: uuid.to_string(),
                    request_type: self
                        .sent
                        .get(uuid)
                        .or_else(|| c["request_type"].as_str().map(str::to_string)),
                    status,
                    raw: raw.into(),
                    received_at: r["received_at"].as_str().unwrap_or("").to_string(),
                });
            }
        }
        out.sort_by(|a, b| a.received_at.cmp(&b.received_at));
        Ok(out)
    }

    /// Webhook results checked against the server's history: a report in the history whose
    /// webhook has not come after a grace period is a lost webhook — noted, and from then on
    /// taken from the history. Returns the webhook results (minus those) plus those.
    fn reconcile(
        &self,
        udid: &str,
        history: Vec<CommandResult>,
        hooks: Vec<CommandResult>,
    ) -> Vec<CommandResult> {
        let mut supplied = self.from_history.lock().unwrap_or_else(|p| p.into_inner());
        let mut unmatched: Vec<(String, Vec<u8>)> = hooks.iter().map(report_key).collect();
        let now = chrono::Utc::now();
        let mut out: Vec<CommandResult> = Vec::new();
        for r in history {
            let k = report_key(&r);
            let hook = unmatched.iter().position(|h| *h == k);
            if let Some(i) = hook {
                unmatched.swap_remove(i);
            }
            if supplied.contains(&k) {
                out.push(r);
                continue;
            }
            if hook.is_some() {
                continue;
            }
            let old_enough = chrono::DateTime::parse_from_rfc3339(&r.received_at)
                .map(|t| now - t.with_timezone(&chrono::Utc) > WEBHOOK_GRACE)
                .unwrap_or(true);
            if old_enough {
                self.notes.add(BackendNote {
                    udid: udid.to_string(),
                    kind: "webhook_lost",
                    key: format!(
                        "{} report for command {} received {}",
                        r.status, r.command_uuid, r.received_at
                    ),
                    value: "the MDM's history holds this report but its webhook never came; taken from the history".into(),
                });
                supplied.insert(k);
                out.push(r);
            }
        }
        out.extend(
            hooks
                .into_iter()
                .filter(|h| !supplied.contains(&report_key(h))),
        );
        out
    }

    async fn get_json(&self, path: &str) -> Result<serde_json::Value, BackendError> {
        let url = format!("{}{}", self.base, path);
        let resp = self
            .http
            .get(&url)
            .basic_auth(super::API_USER, Some(&self.api_key))
            .send()
            .await
            .map_err(|e| map_send_error(&url, self.timeout, e))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| map_send_error(&url, self.timeout, e))?;
        if !status.is_success() {
            return Err(BackendError::Refused {
                url,
                status: status.as_u16(),
                message: text.chars().take(500).collect(),
            });
        }
        serde_json::from_str(&text).map_err(|e| BackendError::BadResponse {
            url,
            reason: e.to_string(),
        })
    }

    async fn history(&self, udid: &str) -> Result<serde_json::Value, BackendError> {
        self.get_json(&format!("/v1/history/{udid}")).await
    }
}

impl MdmBackend for NanoMdm {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn enqueue<'a>(
        &'a self,
        udid: &'a str,
        command: &'a Command,
        command_uuid: &'a str,
    ) -> BoxFuture<'a, Result<Enqueued, BackendError>> {
        Box::pin(async move {
            let mut one = self.enqueue_ids(&[udid], command, command_uuid).await?;
            Ok(one.remove(0))
        })
    }

    fn enqueues_in_bulk(&self) -> bool {
        // `lab`'s own server only: a NanoMDM backend keeps one call per device, as before.
        self.inbox.is_none()
    }

    fn enqueue_many<'a>(
        &'a self,
        udids: &'a [String],
        command: &'a Command,
        command_uuid: &'a str,
    ) -> BoxFuture<'a, Vec<Result<Enqueued, BackendError>>> {
        Box::pin(async move {
            if !self.enqueues_in_bulk() {
                return enqueue_each(self, udids, command, command_uuid).await;
            }
            let ids: Vec<&str> = udids.iter().map(String::as_str).collect();
            match self.enqueue_ids(&ids, command, command_uuid).await {
                Ok(all) => all.into_iter().map(Ok).collect(),
                Err(e) => udids.iter().map(|_| Err(e.clone())).collect(),
            }
        })
    }

    fn results<'a>(
        &'a self,
        udid: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CommandResult>, BackendError>> {
        Box::pin(async move {
            let Some(inbox) = &self.inbox else {
                let h = self.history(udid).await?;
                self.keep_deliveries(udid, &h);
                return self.results_from_history(udid, &h);
            };
            let hooks = results_from_inbox(inbox, udid, &self.sent, &self.notes);
            // Where the server has a history API (`lab`'s own server in NanoMDM's place), the
            // webhooks are checked against it and lost ones filled in from it. Without one
            // (NanoMDM), or while it fails, the webhooks are all there is.
            match self.history_if_any(udid).await {
                Ok(Some(h)) => match self
                    .keep_deliveries(udid, &h)
                    .results_from_history(udid, &h)
                {
                    Ok(history) => Ok(self.reconcile(udid, history, hooks)),
                    Err(_) => Ok(hooks),
                },
                Ok(None) | Err(_) => {
                    let supplied = self.from_history.lock().unwrap_or_else(|p| p.into_inner());
                    Ok(hooks
                        .into_iter()
                        .filter(|h| !supplied.contains(&report_key(h)))
                        .collect())
                }
            }
        })
    }

    fn results_many<'a>(
        &'a self,
        udids: &'a [String],
    ) -> BoxFuture<'a, Vec<Result<Vec<CommandResult>, BackendError>>> {
        Box::pin(self.results_from_feed(udids, false))
    }

    fn fresh_results_many<'a>(
        &'a self,
        udids: &'a [String],
    ) -> BoxFuture<'a, Vec<Result<Vec<CommandResult>, BackendError>>> {
        Box::pin(self.results_from_feed(udids, true))
    }

    fn delivery_counts<'a>(
        &'a self,
        udid: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, DeliveryCount>, BackendError>> {
        Box::pin(async move {
            let results = self.results(udid).await?;
            let mut counts = counts_from_results(&results);
            let history = match self.history_if_any(udid).await {
                Ok(h) => h,
                // Webhook-fed: the deliveries are a bonus; without them the answers still count.
                Err(_) if self.inbox.is_some() => None,
                Err(e) => return Err(e),
            };
            if let Some(h) = history {
                for c in h["commands"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    if let Some(uuid) = c["command_uuid"].as_str() {
                        let n = c["deliveries"]
                            .as_array()
                            .map(|d| d.len() as u64)
                            .unwrap_or(0);
                        counts.entry(uuid.to_string()).or_default().deliveries = Some(n);
                    }
                }
            }
            Ok(counts)
        })
    }

    fn queued<'a>(
        &'a self,
        udid: &'a str,
        command_uuid: &'a str,
    ) -> BoxFuture<'a, Result<Option<bool>, BackendError>> {
        Box::pin(async move {
            Ok(self.history_if_any(udid).await?.map(|h| {
                h["commands"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["command_uuid"] == command_uuid))
            }))
        })
    }

    fn store_identity(&self) -> BoxFuture<'_, Result<Option<StoreIdentity>, BackendError>> {
        Box::pin(async move {
            if *self.history_api.lock().unwrap_or_else(|p| p.into_inner()) == Some(false) {
                return Ok(None);
            }
            match self.get_json("/v1/store").await {
                Ok(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
                    BackendError::BadResponse {
                        url: format!("{}/v1/store", self.base),
                        reason: format!("not a store identity ({e}): {v}"),
                    }
                }),
                // A NanoMDM has no such endpoint.
                Err(BackendError::Refused {
                    status: 404 | 405, ..
                }) if self.inbox.is_some() => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn dose_records<'a>(
        &'a self,
        udid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<MdmDose>>, BackendError>> {
        Box::pin(async move {
            Ok(self
                .history_if_any(udid)
                .await?
                .map(|h| doses_in_history(&h)))
        })
    }

    fn rejected(&self, after: i64) -> BoxFuture<'_, Result<Vec<RejectedReport>, BackendError>> {
        Box::pin(async move {
            if *self.history_api.lock().unwrap_or_else(|p| p.into_inner()) != Some(true) {
                // Only `lab`'s own server keeps rejected reports (it is the one with a history).
                return Ok(Vec::new());
            }
            let url_path = format!("/v1/reports/rejected?after={after}");
            let v = self.get_json(&url_path).await?;
            let bad = |reason: &str| BackendError::BadResponse {
                url: format!("{}{url_path}", self.base),
                reason: reason.to_string(),
            };
            let mut out = Vec::new();
            for r in v["reports"]
                .as_array()
                .ok_or_else(|| bad("no reports array"))?
            {
                out.push(RejectedReport {
                    id: r["id"].as_i64().ok_or_else(|| bad("a report without id"))?,
                    udid: r["enrollment_id"].as_str().map(str::to_string),
                    note: r["note"].as_str().unwrap_or("").to_string(),
                    received_at: r["received_at"].as_str().unwrap_or("").to_string(),
                    raw: base64::engine::general_purpose::STANDARD
                        .decode(r["raw_base64"].as_str().unwrap_or(""))
                        .map_err(|_| bad("raw_base64 is not base64"))?,
                });
            }
            Ok(out)
        })
    }

    fn take_notes(&self) -> Vec<BackendNote> {
        self.notes.take()
    }

    fn user_channels<'a>(
        &'a self,
        udid: &'a str,
    ) -> BoxFuture<'a, Result<UserChannels, BackendError>> {
        Box::pin(async move {
            // Only `lab`'s own server (the one with a history) records user channels; NanoMDM's
            // API has no such endpoint.
            if *self.history_api.lock().unwrap_or_else(|p| p.into_inner()) != Some(true) {
                return Ok(UserChannels::Unknown(format!(
                    "the {} API does not report user-channel check-ins",
                    self.kind
                )));
            }
            let v = self.get_json(&format!("/v1/user_channels/{udid}")).await?;
            serde_json::from_value(v)
                .map(UserChannels::Known)
                .map_err(|e| BackendError::BadResponse {
                    url: format!("{}/v1/user_channels/{udid}", self.base),
                    reason: e.to_string(),
                })
        })
    }

    fn keeps_history(&self) -> Option<bool> {
        match self.inbox {
            None => Some(true),
            Some(_) => *self.history_api.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    fn deliveries(&self, udid: &str) -> Option<Vec<Delivery>> {
        match (&self.inbox, self.keeps_history()) {
            (Some(inbox), Some(false)) => Some(super::deliveries::from_polls(
                &inbox.events(),
                udid,
                &self.sent.sent_to(udid),
            )),
            _ => self
                .history_deliveries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(udid)
                .cloned(),
        }
    }

    fn deliveries_of(&self, udid: &str, uuids: &[&str]) -> Option<Vec<Delivery>> {
        if matches!((&self.inbox, self.keeps_history()), (Some(_), Some(false))) {
            let all = self.deliveries(udid)?;
            return Some(
                all.into_iter()
                    .filter(|d| uuids.contains(&d.command_uuid.as_str()))
                    .collect(),
            );
        }
        // Only the asked commands' deliveries are copied out of the kept list.
        self.history_deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(udid)
            .map(|all| {
                all.iter()
                    .filter(|d| uuids.contains(&d.command_uuid.as_str()))
                    .cloned()
                    .collect()
            })
    }

    fn settle_time(&self) -> Duration {
        match self.inbox {
            // Past the grace period a report without its webhook is taken from the history.
            Some(_) => (WEBHOOK_GRACE + chrono::TimeDelta::milliseconds(500))
                .to_std()
                .unwrap_or_default(),
            None => Duration::ZERO,
        }
    }
}

/// The ScheduleOSUpdate commands in a device's history (`GET /v1/history/{id}`), each with the
/// build the device last reported (DeviceInformation `BuildVersion`) before it was queued.
pub fn doses_in_history(h: &serde_json::Value) -> Vec<MdmDose> {
    let commands = h["commands"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    // (received_at, BuildVersion) of every report that carries one. The server writes its
    // times in one RFC 3339 format (UTC, microseconds), so they order as text.
    let mut builds: Vec<(String, String)> = commands
        .iter()
        .flat_map(|c| c["reports"].as_array().map(Vec::as_slice).unwrap_or(&[]))
        .filter_map(|r| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(r["raw_base64"].as_str()?)
                .ok()?;
            let rep = parse_report(&raw).ok()?;
            let build = super::report::query_responses(&rep)?
                .get("BuildVersion")?
                .as_string()?
                .to_string();
            Some((r["received_at"].as_str()?.to_string(), build))
        })
        .collect();
    builds.sort();
    commands
        .iter()
        .filter(|c| c["request_type"] == "ScheduleOSUpdate")
        .filter_map(|c| {
            let queued_at = c["queued_at"].as_str().unwrap_or("").to_string();
            Some(MdmDose {
                command_uuid: c["command_uuid"].as_str()?.to_string(),
                build_before: builds
                    .iter()
                    .rev()
                    .find(|(at, _)| *at <= queued_at)
                    .map(|(_, b)| b.clone()),
                queued_at,
            })
        })
        .collect()
}

pub use super::micromdm::{MICROMDM_USER, MicroMdm};

/// Wait until `n` devices have sent their first TokenUpdate to `lab`'s embedded MDM (its
/// `/v1/enrollments` API), or `limit` passes. Used where the harness starts a simulated lab and
/// must not send commands to devices that cannot be pushed yet.
pub async fn wait_enrolled(url: &str, key: &str, n: usize, limit: Duration) {
    let http = client(Duration::from_secs(5));
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        let ready = async {
            let v: serde_json::Value = http
                .get(format!("{url}/v1/enrollments"))
                .basic_auth(super::API_USER, Some(key))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            Some(
                v["enrollments"]
                    .as_array()?
                    .iter()
                    .filter(|e| e["token_update_tally"].as_u64().unwrap_or(0) >= 1)
                    .count(),
            )
        }
        .await
        .unwrap_or(0);
        if ready >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
