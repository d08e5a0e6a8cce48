//! The MicroMDM v1 backend (MDM brief §5.2): JSON commands to `POST /v1/commands` answered
//! with HTTP 201, results by webhook only — MicroMDM's API lists no results and it does not
//! retry a webhook, so an answer posted while `lab` is not listening is lost (issue 17).

use super::backend::{
    BackendError, BackendNote, BoxFuture, CommandResult, DeliveryCount, Enqueued, MdmBackend,
    Notes, SentMap, client, counts_from_results, map_send_error, results_from_inbox,
};
use super::command::Command;
use super::webhook_receiver::Inbox;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// MicroMDM v1: JSON commands, HTTP 201, results by webhook (brief §5.2).
pub struct MicroMdm {
    base: String,
    api_key: String,
    http: reqwest::Client,
    timeout: Duration,
    sent: SentMap,
    inbox: Arc<Inbox>,
    notes: Notes,
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
            notes: Notes::default(),
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
            self.sent.insert(command_uuid, command.request_type(), udid);
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
                            // MicroMDM pushes by itself after queueing (brief §5.2), but its
                            // 201 says nothing of the push: it may have no push certificate
                            // (issue 17). Unknown, never "pushed".
                            pushed: None,
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
        Box::pin(async move {
            Ok(results_from_inbox(
                &self.inbox,
                udid,
                &self.sent,
                &self.notes,
            ))
        })
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
                &self.notes,
            )))
        })
    }

    /// MicroMDM's API lists no command history: it cannot tell.
    fn queued<'a>(
        &'a self,
        _udid: &'a str,
        _command_uuid: &'a str,
    ) -> BoxFuture<'a, Result<Option<bool>, BackendError>> {
        Box::pin(async { Ok(None) })
    }

    fn take_notes(&self) -> Vec<BackendNote> {
        self.notes.take()
    }

    fn settle_time(&self) -> Duration {
        Duration::from_secs(1)
    }

    /// MicroMDM's API lists no results, and it does not retry a webhook (issue 17).
    fn keeps_history(&self) -> Option<bool> {
        Some(false)
    }

    /// Its Idle polls, read against what was queued (`mdm::deliveries::from_polls`).
    fn deliveries(&self, udid: &str) -> Option<Vec<super::backend::Delivery>> {
        Some(super::deliveries::from_polls(
            &self.inbox.events(),
            udid,
            &self.sent.sent_to(udid),
        ))
    }
}
