//! The NanoMDM enqueue call (`PUT /v1/enqueue/{ids}`, brief §5.1): one command, one
//! CommandUUID, for one enrollment id or several (comma-separated; the answer's `status` map
//! says each id's push).

use super::{BackendError, Enqueued, NanoMdm, map_send_error, pushed_by_answer};
use crate::mdm::command::Command;

impl NanoMdm {
    /// Queue `command` under `command_uuid` for every id in one call; one `Enqueued` per id,
    /// in order. An answer that refuses the command refuses it for every id.
    pub(super) async fn enqueue_ids(
        &self,
        ids: &[&str],
        command: &Command,
        command_uuid: &str,
    ) -> Result<Vec<Enqueued>, BackendError> {
        let url = format!("{}/v1/enqueue/{}", self.base, ids.join(","));
        // The map entry is made before sending: a reply may arrive before the HTTP answer.
        for udid in ids {
            self.sent.insert(command_uuid, command.request_type(), udid);
        }
        let resp = self
            .http
            .put(&url)
            .basic_auth(crate::mdm::API_USER, Some(&self.api_key))
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
        let queued = match status {
            200 | 207 => true,
            // Queued but not pushed (brief §0.8): NanoMDM says so with command_uuid.
            500 if queued_uuid.is_some() => false,
            _ => {
                return Err(BackendError::Refused {
                    url,
                    status,
                    message: text.chars().take(500).collect(),
                });
            }
        };
        // Each id's push, from its entry of the answer's `status` map.
        Ok(ids
            .iter()
            .map(|udid| {
                let push_error = v["status"][udid]["push_error"]
                    .as_str()
                    .or(v["push_error"].as_str())
                    .map(str::to_string);
                if queued {
                    Enqueued {
                        command_uuid: command_uuid.to_string(),
                        pushed: pushed_by_answer(&v, udid, push_error.as_deref()),
                        push_error,
                    }
                } else {
                    Enqueued {
                        command_uuid: command_uuid.to_string(),
                        pushed: Some(false),
                        push_error: push_error.or(Some("push failed".into())),
                    }
                }
            })
            .collect())
    }
}
