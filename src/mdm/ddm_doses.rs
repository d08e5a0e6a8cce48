//! How the trial runner gives a device a DDM dose and reads what became of it: one trait
//! ([`DdmDoses`]), over HTTP, for the embedded server and for KMFDDM.
//!
//! A DDM dose is one declaration (`com.apple.configuration.softwareupdate.enforcement.specific`,
//! its `Identifier` unique per dose) put on the device's enrollment and followed by a
//! `DeclarativeManagement` sync (DDM brief §1). Both steps are idempotent by construction: the
//! same identifier with the same bytes leaves the server's token unchanged (the `ServerToken`
//! is the content's hash, DDM brief §6), and the sync command's CommandUUID is derived from the
//! identifier, so a server refuses a second one (409). A retried or resumed dose with the
//! intent's own bytes can therefore never give the device a second enforcement; the runner
//! still asks the MDM's record ([`DdmEnrollment::declarations`]) before every retry, as for
//! ScheduleOSUpdate.

use super::backend::{BackendError, BoxFuture, Enqueued, map_send_error};
use super::ddm_backend::{DdmBackend, MAX_BODY_BYTES, MAX_REPORTS_PER_CALL, RawStatusReport};
use super::kmfddm::Kmfddm;
use base64::Engine;
use std::time::Duration;

/// What the MDM knows of an enrollment's DDM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DdmEnrollment {
    /// A `DeclarativeManagement` check-in was seen (DDM is on); `None`: the server cannot say.
    pub active: Option<bool>,
    /// The identifiers of the declarations the enrollment holds: the MDM's own record of what
    /// the device was given.
    pub declarations: Vec<String>,
}

/// The sync command's CommandUUID for a dose's declaration: derived, so that a repeat is refused.
pub fn sync_command_uuid(identifier: &str) -> String {
    format!("{identifier}-sync")
}

pub trait DdmDoses: Send + Sync {
    fn kind(&self) -> &'static str;

    /// The enrollment's DDM state and the declarations it holds.
    fn enrollment<'a>(
        &'a self,
        enrollment_id: &'a str,
    ) -> BoxFuture<'a, Result<DdmEnrollment, BackendError>>;

    /// Put the declaration (exact bytes) on the enrollment and make the device sync.
    fn give<'a>(
        &'a self,
        enrollment_id: &'a str,
        declaration: &'a [u8],
        identifier: &'a str,
    ) -> BoxFuture<'a, Result<Enqueued, BackendError>>;

    /// The status reports stored after the one with id `after`, oldest first, raw.
    fn status_reports<'a>(
        &'a self,
        enrollment_id: &'a str,
        after: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<RawStatusReport>, BackendError>>;
}

/// `lab`'s own server (`mdm_server::ddm_api`): declarations per enrollment, a sync endpoint
/// that queues the `DeclarativeManagement` command, and the raw status history.
pub struct EmbeddedDdm {
    base: String,
    api_key: String,
    timeout: Duration,
    http: reqwest::Client,
}

impl EmbeddedDdm {
    pub fn new(base: &str, api_key: &str, timeout: Duration) -> EmbeddedDdm {
        EmbeddedDdm {
            base: base.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
            timeout,
            http: crate::http_client::client(timeout),
        }
    }

    /// One call: (HTTP status, body), the body capped at [`MAX_BODY_BYTES`].
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, serde_json::Value, String), BackendError> {
        let url = format!("{}{path}", self.base);
        let mut r = self
            .http
            .request(method, &url)
            .basic_auth(super::API_USER, Some(&self.api_key));
        if let Some(b) = body {
            r = r.body(b);
        }
        let resp = r
            .send()
            .await
            .map_err(|e| map_send_error(&url, self.timeout, e))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| map_send_error(&url, self.timeout, e))?;
        if bytes.len() > MAX_BODY_BYTES {
            return Err(BackendError::BadResponse {
                url,
                reason: format!("an answer of {} bytes", bytes.len()),
            });
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok((status, json, text))
    }

    fn refused(&self, path: &str, status: u16, text: &str) -> BackendError {
        BackendError::Refused {
            url: format!("{}{path}", self.base),
            status,
            message: text.chars().take(500).collect(),
        }
    }

    fn bad(&self, path: &str, reason: String) -> BackendError {
        BackendError::BadResponse {
            url: format!("{}{path}", self.base),
            reason,
        }
    }
}

impl DdmDoses for EmbeddedDdm {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn enrollment<'a>(
        &'a self,
        enrollment_id: &'a str,
    ) -> BoxFuture<'a, Result<DdmEnrollment, BackendError>> {
        Box::pin(async move {
            let path = format!("/v1/ddm/declarations/{enrollment_id}");
            let (status, v, text) = self.call(reqwest::Method::GET, &path, None).await?;
            if status != 200 {
                return Err(self.refused(&path, status, &text));
            }
            let Some(list) = v["declarations"].as_array() else {
                return Err(self.bad(&path, "no declarations list".into()));
            };
            Ok(DdmEnrollment {
                active: v["active"].as_bool(),
                declarations: list
                    .iter()
                    .filter_map(|d| d["Identifier"].as_str().map(str::to_string))
                    .collect(),
            })
        })
    }

    fn give<'a>(
        &'a self,
        enrollment_id: &'a str,
        declaration: &'a [u8],
        identifier: &'a str,
    ) -> BoxFuture<'a, Result<Enqueued, BackendError>> {
        Box::pin(async move {
            let path = format!("/v1/ddm/declarations/{enrollment_id}");
            let (status, _, text) = self
                .call(reqwest::Method::PUT, &path, Some(declaration.to_vec()))
                .await?;
            if status != 200 {
                return Err(self.refused(&path, status, &text));
            }
            let uuid = sync_command_uuid(identifier);
            let path = format!("/v1/ddm/sync/{enrollment_id}?command_uuid={uuid}");
            let (status, v, text) = self.call(reqwest::Method::POST, &path, None).await?;
            let push_error = v["status"][enrollment_id]["push_error"]
                .as_str()
                .or(v["push_error"].as_str())
                .map(str::to_string);
            match status {
                200 => Ok(Enqueued {
                    command_uuid: uuid,
                    pushed: super::backend::pushed_by_answer(
                        &v,
                        enrollment_id,
                        push_error.as_deref(),
                    ),
                    push_error,
                }),
                // The sync command is already queued: an earlier attempt got through.
                409 => Ok(Enqueued {
                    command_uuid: uuid,
                    pushed: Some(false),
                    push_error: Some(
                        "the sync command was already queued by an earlier attempt".into(),
                    ),
                }),
                500 if v["command_uuid"].is_string() => Ok(Enqueued {
                    command_uuid: uuid,
                    pushed: Some(false),
                    push_error: push_error.or(Some("push failed".into())),
                }),
                _ => Err(self.refused(&path, status, &text)),
            }
        })
    }

    fn status_reports<'a>(
        &'a self,
        enrollment_id: &'a str,
        after: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<RawStatusReport>, BackendError>> {
        Box::pin(async move {
            let after = after.unwrap_or("0");
            let path = format!("/v1/ddm/status/{enrollment_id}?after={after}");
            let (status, v, text) = self.call(reqwest::Method::GET, &path, None).await?;
            if status != 200 {
                return Err(self.refused(&path, status, &text));
            }
            let Some(list) = v["reports"].as_array() else {
                return Err(self.bad(&path, "no reports list".into()));
            };
            let mut out = Vec::new();
            for r in list.iter().take(MAX_REPORTS_PER_CALL) {
                let (Some(seq), Some(raw)) = (r["seq"].as_i64(), r["raw"].as_str()) else {
                    return Err(self.bad(&path, "a report without seq or raw".into()));
                };
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(raw)
                    .map_err(|e| {
                        self.bad(&path, format!("report {seq}: raw is not base64: {e}"))
                    })?;
                out.push(RawStatusReport {
                    id: seq.to_string(),
                    received: r["received_at"].as_str().map(str::to_string),
                    bytes,
                });
            }
            Ok(out)
        })
    }
}

/// KMFDDM: one set per dose, named as the declaration, assigned to the enrollment (assigning is
/// what makes KMFDDM queue the `DeclarativeManagement` command through NanoMDM, DDM brief §6).
/// The enrollment's sets are the MDM's record of the doses; KMFDDM says nothing of the check-in
/// itself, so `active` is known only once the device reported a declaration's status.
impl DdmDoses for Kmfddm {
    fn kind(&self) -> &'static str {
        "kmfddm"
    }

    fn enrollment<'a>(
        &'a self,
        enrollment_id: &'a str,
    ) -> BoxFuture<'a, Result<DdmEnrollment, BackendError>> {
        Box::pin(async move {
            let sets = self.enrollment_sets(enrollment_id).await?;
            let reported = self.declaration_status(enrollment_id).await?;
            Ok(DdmEnrollment {
                active: (!reported.is_empty()).then_some(true),
                declarations: sets,
            })
        })
    }

    fn give<'a>(
        &'a self,
        enrollment_id: &'a str,
        declaration: &'a [u8],
        identifier: &'a str,
    ) -> BoxFuture<'a, Result<Enqueued, BackendError>> {
        Box::pin(async move {
            let v: serde_json::Value =
                serde_json::from_slice(declaration).map_err(|e| BackendError::BadResponse {
                    url: String::new(),
                    reason: format!("the declaration to give is not JSON: {e}"),
                })?;
            self.put_declaration(&v, false).await?;
            self.add_to_set(identifier, identifier, false).await?;
            self.assign_set(enrollment_id, identifier).await?;
            // KMFDDM queues the DeclarativeManagement command through its MDM and does not
            // say whether it pushed: unknown.
            Ok(Enqueued {
                command_uuid: String::new(),
                pushed: None,
                push_error: None,
            })
        })
    }

    fn status_reports<'a>(
        &'a self,
        enrollment_id: &'a str,
        after: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<RawStatusReport>, BackendError>> {
        DdmBackend::status_reports(self, enrollment_id, after)
    }
}
