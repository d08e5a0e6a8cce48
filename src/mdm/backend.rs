//! How the harness reaches an MDM: one trait, three backends, all over HTTP (no in-process
//! shortcut, even for the embedded server).
//!
//! - `embedded`: `lab`'s own server — the NanoMDM-compatible enqueue API, results read back from
//!   its command-history API.
//! - `nanomdm`: `PUT /v1/enqueue/{id}` with the raw plist (brief mdm.md §5.1); results arrive on
//!   the harness's webhook listener.
//! - `micromdm`: `POST /v1/commands` with MicroMDM's JSON, HTTP 201 (§5.2); webhook as above.
//!
//! Device replies carry no RequestType (§0.6): every backend keeps a CommandUUID → RequestType
//! map of what it enqueued, and results come back tagged with it. A CommandUUID delivered or
//! acknowledged twice is flagged (NanoMDM's kv queue can re-deliver, §5.4).

use super::command::Command;
use super::report::{ReportStatus, parse_report};
use super::webhook_receiver::Inbox;
use base64::Engine;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
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
    /// The push went out (`false`: queued only; the device gets it on its next check-in).
    pub pushed: bool,
    pub push_error: Option<String>,
}

/// One device report as the harness learned of it.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandResult {
    pub command_uuid: String,
    /// From the harness's own map; `None` for a command it did not send.
    pub request_type: Option<String>,
    pub status: String,
    /// The device's plist exactly as received by the MDM.
    pub raw: Vec<u8>,
    pub received_at: String,
}

/// How often the MDM delivered a command and how often the device answered it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryCount {
    pub deliveries: Option<u64>,
    pub final_reports: u64,
}

pub trait MdmBackend: Send + Sync {
    fn kind(&self) -> &'static str;
    /// Queue one command for one device and push.
    fn enqueue<'a>(
        &'a self,
        udid: &'a str,
        command: &'a Command,
        command_uuid: &'a str,
    ) -> BoxFuture<'a, Result<Enqueued, BackendError>>;
    /// Every result the MDM has reported for this device so far, oldest first.
    fn results<'a>(
        &'a self,
        udid: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CommandResult>, BackendError>>;
    /// Deliveries / final answers per CommandUUID (deliveries only where the MDM exposes them).
    fn delivery_counts<'a>(
        &'a self,
        udid: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, DeliveryCount>, BackendError>>;
}

fn client(timeout: Duration) -> reqwest::Client {
    crate::http_client::client(timeout)
}

fn map_send_error(url: &str, timeout: Duration, e: reqwest::Error) -> BackendError {
    if e.is_timeout() {
        BackendError::Timeout {
            url: url.to_string(),
            after: timeout,
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

#[derive(Default)]
struct SentMap(Mutex<HashMap<String, String>>);

impl SentMap {
    fn insert(&self, uuid: &str, request_type: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uuid.to_string(), request_type.to_string());
    }
    fn get(&self, uuid: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uuid)
            .cloned()
    }
}

/// Results from webhook events: acknowledge events with a CommandUUID for this device.
///
/// MicroMDM's webhook has no `omitempty` on `command_uuid` (`workflow/webhook/acknowledge.go`),
/// so its Idle polls arrive as `"command_uuid": ""`: an empty CommandUUID, or an Idle status, is
/// a poll, not a result.
fn results_from_inbox(inbox: &Inbox, udid: &str, sent: &SentMap) -> Vec<CommandResult> {
    inbox
        .events()
        .into_iter()
        .filter_map(|e| {
            let ack = e.event.acknowledge_event?;
            if ack.udid.as_deref() != Some(udid) && ack.enrollment_id.as_deref() != Some(udid) {
                return None;
            }
            if ReportStatus::parse(&ack.status) == ReportStatus::Idle {
                return None;
            }
            let uuid = ack.command_uuid.filter(|u| !u.is_empty())?;
            Some(CommandResult {
                request_type: sent.get(&uuid),
                command_uuid: uuid,
                status: ack.status,
                raw: ack.raw_payload,
                received_at: e.received_at,
            })
        })
        .collect()
}

fn counts_from_results(results: &[CommandResult]) -> HashMap<String, DeliveryCount> {
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
    /// Results source: `None` → the embedded server's history API; `Some` → webhook events.
    inbox: Option<Arc<Inbox>>,
    kind: &'static str,
}

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
            ..NanoMdm::embedded(base, api_key, timeout)
        }
    }

    async fn get_json(&self, path: &str) -> Result<serde_json::Value, BackendError> {
        let url = format!("{}{}", self.base, path);
        let resp = self
            .http
            .get(&url)
            .basic_auth(crate::mdm_server::http::API_USER, Some(&self.api_key))
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
            let url = format!("{}/v1/enqueue/{udid}", self.base);
            // The map entry is made before sending: a reply may arrive before the HTTP answer.
            self.sent.insert(command_uuid, command.request_type());
            let resp = self
                .http
                .put(&url)
                .basic_auth(crate::mdm_server::http::API_USER, Some(&self.api_key))
                .body(command.to_plist(command_uuid))
                .send()
                .await
                .map_err(|e| map_send_error(&url, self.timeout, e))?;
            let status = resp.status().as_u16();
            let text = resp
                .text()
                .await
                .map_err(|e| map_send_error(&url, self.timeout, e))?;
            let v: serde_json::Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                // NanoMDM answers a wrong key with 401 and the text `Unauthorized` (brief
                // §5.1): a non-2xx answer that is not JSON is a refusal, not a bad response.
                Err(_) if !(200..300).contains(&status) => {
                    return Err(BackendError::Refused {
                        url,
                        status,
                        message: text.chars().take(500).collect(),
                    });
                }
                Err(e) => {
                    return Err(BackendError::BadResponse {
                        url,
                        reason: format!("HTTP {status}: {e}"),
                    });
                }
            };
            if let Some(err) = v["command_error"].as_str() {
                return Err(BackendError::Refused {
                    url,
                    status,
                    message: err.to_string(),
                });
            }
            let queued_uuid = v["command_uuid"].as_str();
            if queued_uuid.is_some_and(|u| u != command_uuid) {
                return Err(BackendError::BadResponse {
                    url,
                    reason: format!("queued as {queued_uuid:?}, not {command_uuid}"),
                });
            }
            let push_error = v["status"][udid]["push_error"]
                .as_str()
                .or(v["push_error"].as_str())
                .map(str::to_string);
            match status {
                200 | 207 => Ok(Enqueued {
                    command_uuid: command_uuid.to_string(),
                    pushed: push_error.is_none(),
                    push_error,
                }),
                // Queued but not pushed (brief §0.8): NanoMDM says so with command_uuid.
                500 if queued_uuid.is_some() => Ok(Enqueued {
                    command_uuid: command_uuid.to_string(),
                    pushed: false,
                    push_error: push_error.or(Some("push failed".into())),
                }),
                _ => Err(BackendError::Refused {
                    url,
                    status,
                    message: text.chars().take(500).collect(),
                }),
            }
        })
    }

    fn results<'a>(
        &'a self,
        udid: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CommandResult>, BackendError>> {
        Box::pin(async move {
            if let Some(inbox) = &self.inbox {
                return Ok(results_from_inbox(inbox, udid, &self.sent));
            }
            let h = self.history(udid).await?;
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
                        raw,
                        received_at: r["received_at"].as_str().unwrap_or("").to_string(),
                    });
                }
            }
            out.sort_by(|a, b| a.received_at.cmp(&b.received_at));
            Ok(out)
        })
    }

    fn delivery_counts<'a>(
        &'a self,
        udid: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, DeliveryCount>, BackendError>> {
        Box::pin(async move {
            let results = self.results(udid).await?;
            let mut counts = counts_from_results(&results);
            if self.inbox.is_none() {
                let h = self.history(udid).await?;
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
}

/// MicroMDM v1: JSON commands, HTTP 201, results by webhook (brief §5.2).
pub struct MicroMdm {
    base: String,
    api_key: String,
    http: reqwest::Client,
    timeout: Duration,
    sent: SentMap,
    inbox: Arc<Inbox>,
}

/// MicroMDM's API user name (brief §5.2).
pub const MICROMDM_USER: &str = "micromdm";

impl MicroMdm {
    pub fn new(base: &str, api_key: &str, timeout: Duration, inbox: Arc<Inbox>) -> MicroMdm {
        MicroMdm {
            base: base.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
            http: client(timeout),
            timeout,
            sent: SentMap::default(),
            inbox,
        }
    }
}

impl MdmBackend for MicroMdm {
    fn kind(&self) -> &'static str {
        "micromdm"
    }

    fn enqueue<'a>(
        &'a self,
        udid: &'a str,
        command: &'a Command,
        command_uuid: &'a str,
    ) -> BoxFuture<'a, Result<Enqueued, BackendError>> {
        Box::pin(async move {
            let url = format!("{}/v1/commands", self.base);
            self.sent.insert(command_uuid, command.request_type());
            let resp = self
                .http
                .post(&url)
                .basic_auth(MICROMDM_USER, Some(&self.api_key))
                .json(&command.to_micromdm_json(udid, Some(command_uuid)))
                .send()
                .await
                .map_err(|e| map_send_error(&url, self.timeout, e))?;
            let status = resp.status().as_u16();
            let text = resp
                .text()
                .await
                .map_err(|e| map_send_error(&url, self.timeout, e))?;
            let v: Result<serde_json::Value, _> = serde_json::from_str(&text);
            match (status, v) {
                (201, Ok(v)) => {
                    let got = v["payload"]["command_uuid"].as_str();
                    match got {
                        Some(u) if u == command_uuid => Ok(Enqueued {
                            command_uuid: command_uuid.to_string(),
                            // MicroMDM pushes by itself after queueing.
                            pushed: true,
                            push_error: None,
                        }),
                        other => Err(BackendError::BadResponse {
                            url,
                            reason: format!("queued as {other:?}, not {command_uuid}"),
                        }),
                    }
                }
                (201, Err(e)) => Err(BackendError::BadResponse {
                    url,
                    reason: e.to_string(),
                }),
                (s, Ok(v)) => Err(BackendError::Refused {
                    url,
                    status: s,
                    message: v["error"]
                        .as_str()
                        .unwrap_or(&text)
                        .chars()
                        .take(500)
                        .collect(),
                }),
                (s, Err(_)) => Err(BackendError::Refused {
                    url,
                    status: s,
                    message: text.chars().take(500).collect(),
                }),
            }
        })
    }

    fn results<'a>(
        &'a self,
        udid: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CommandResult>, BackendError>> {
        Box::pin(async move { Ok(results_from_inbox(&self.inbox, udid, &self.sent)) })
    }

    fn delivery_counts<'a>(
        &'a self,
        udid: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, DeliveryCount>, BackendError>> {
        Box::pin(async move {
            Ok(counts_from_results(&results_from_inbox(
                &self.inbox,
                udid,
                &self.sent,
            )))
        })
    }
}

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
                .basic_auth(crate::mdm_server::http::API_USER, Some(key))
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
