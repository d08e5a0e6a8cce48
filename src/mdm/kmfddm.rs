//! A client of KMFDDM's operator API (DDM brief §6; `jessepeterson/kmfddm` `http/api/v1.go` at
//! the brief's commit): the DDM server that sits beside NanoMDM. HTTP Basic with user `kmfddm`
//! and the server's `-api` key. `lab` uses it to put the enforcement declaration, tie it to an
//! enrollment through a set, ask KMFDDM to notify the device, and read the raw status reports
//! back (KMFDDM's parsed status values drop `softwareupdate.*`, DDM brief §0.2, so the raw
//! reports are the evidence).
//!
//! Calls: `PUT /v1/declarations` (204 = new or changed, 304 = unchanged, per code and
//! quickstart), `DELETE /v1/declarations/{id}`, `PUT`/`DELETE /v1/set-declarations/{set}?declaration=`,
//! `PUT`/`DELETE /v1/enrollment-sets/{enrollment}?set=`, `GET /v1/declaration-status/{ids}`,
//! `GET /v1/status-report/{id}?index=N` (raw report; `X-Status-Report-ID`, `X-Status-Report-Index`),
//! `POST /v1/notify?id=`. Mutating calls take `nonotify=true`.

use crate::mdm::ddm::Declaration;
use reqwest::{Method, StatusCode};
use std::time::Duration;

/// KMFDDM's API user (`http/api`: HTTP Basic, user `kmfddm`).
pub const KMFDDM_USER: &str = "kmfddm";

#[derive(Debug, thiserror::Error)]
pub enum KmfddmError {
    #[error("KMFDDM {call}: {source}")]
    Http {
        call: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("KMFDDM {call}: HTTP {status}: {body}")]
    Status {
        call: String,
        status: u16,
        body: String,
    },
    #[error("KMFDDM {call}: answer is not JSON: {source}")]
    Json {
        call: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Whether a mutating call changed anything (KMFDDM answers 204 when it did, 304 when not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Changed,
    Unchanged,
}

/// One raw status report as KMFDDM stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawStatusReport {
    pub status_id: Option<String>,
    pub index: Option<String>,
    pub raw: Vec<u8>,
}

pub struct Kmfddm {
    base: String,
    api_key: String,
    http: reqwest::Client,
}

impl Kmfddm {
    pub fn new(base: &str, api_key: &str, timeout: Duration) -> Kmfddm {
        Kmfddm {
            base: base.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
            http: crate::http_client::client(timeout),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, KmfddmError> {
        let name = format!("{method} {path}");
        let url = if query.is_empty() {
            reqwest::Url::parse(&format!("{}{path}", self.base))
        } else {
            reqwest::Url::parse_with_params(&format!("{}{path}", self.base), query)
        }
        .map_err(|e| KmfddmError::Status {
            call: name.clone(),
            status: 0,
            body: format!("bad URL: {e}"),
        })?;
        let mut r = self
            .http
            .request(method, url)
            .basic_auth(KMFDDM_USER, Some(&self.api_key));
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b);
        }
        let resp = r.send().await.map_err(|source| KmfddmError::Http {
            call: name.clone(),
            source,
        })?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(KmfddmError::Status {
            call: name,
            status: status.as_u16(),
            body: body.chars().take(500).collect(),
        })
    }

    fn change(r: &reqwest::Response) -> Change {
        if r.status() == StatusCode::NOT_MODIFIED {
            Change::Unchanged
        } else {
            Change::Changed
        }
    }

    fn notify_q(notify: bool) -> Vec<(&'static str, &'static str)> {
        if notify {
            vec![]
        } else {
            vec![("nonotify", "true")]
        }
    }

    /// `PUT /v1/declarations` (KMFDDM recomputes the `ServerToken`).
    pub async fn put_declaration(
        &self,
        d: &Declaration,
        notify: bool,
    ) -> Result<Change, KmfddmError> {
        let r = self
            .call(
                Method::PUT,
                "/v1/declarations",
                &Self::notify_q(notify),
                Some(d.to_json()),
            )
            .await?;
        Ok(Self::change(&r))
    }

    /// `DELETE /v1/declarations/{id}`.
    pub async fn delete_declaration(&self, id: &str) -> Result<Change, KmfddmError> {
        let r = self
            .call(Method::DELETE, &format!("/v1/declarations/{id}"), &[], None)
            .await?;
        Ok(Self::change(&r))
    }

    /// `PUT /v1/set-declarations/{set}?declaration={id}`.
    pub async fn add_to_set(
        &self,
        set: &str,
        declaration: &str,
        notify: bool,
    ) -> Result<Change, KmfddmError> {
        let mut q = vec![("declaration", declaration)];
        q.extend(Self::notify_q(notify));
        let r = self
            .call(
                Method::PUT,
                &format!("/v1/set-declarations/{set}"),
                &q,
                None,
            )
            .await?;
        Ok(Self::change(&r))
    }

    /// `DELETE /v1/set-declarations/{set}?declaration={id}`.
    pub async fn remove_from_set(
        &self,
        set: &str,
        declaration: &str,
        notify: bool,
    ) -> Result<Change, KmfddmError> {
        let mut q = vec![("declaration", declaration)];
        q.extend(Self::notify_q(notify));
        let r = self
            .call(
                Method::DELETE,
                &format!("/v1/set-declarations/{set}"),
                &q,
                None,
            )
            .await?;
        Ok(Self::change(&r))
    }

    /// `PUT /v1/enrollment-sets/{enrollment}?set={set}`: what notifies the device.
    pub async fn assign_set(
        &self,
        enrollment: &str,
        set: &str,
        notify: bool,
    ) -> Result<Change, KmfddmError> {
        let mut q = vec![("set", set)];
        q.extend(Self::notify_q(notify));
        let r = self
            .call(
                Method::PUT,
                &format!("/v1/enrollment-sets/{enrollment}"),
                &q,
                None,
            )
            .await?;
        Ok(Self::change(&r))
    }

    /// `DELETE /v1/enrollment-sets/{enrollment}?set={set}`.
    pub async fn unassign_set(
        &self,
        enrollment: &str,
        set: &str,
        notify: bool,
    ) -> Result<Change, KmfddmError> {
        let mut q = vec![("set", set)];
        q.extend(Self::notify_q(notify));
        let r = self
            .call(
                Method::DELETE,
                &format!("/v1/enrollment-sets/{enrollment}"),
                &q,
                None,
            )
            .await?;
        Ok(Self::change(&r))
    }

    /// `GET /v1/declaration-status/{ids}`: per enrollment, per declaration `active`, `valid`,
    /// `server-token`, `current`, `reasons`; kept as JSON.
    pub async fn declaration_status(&self, ids: &[&str]) -> Result<serde_json::Value, KmfddmError> {
        let path = format!("/v1/declaration-status/{}", ids.join(","));
        let r = self.call(Method::GET, &path, &[], None).await?;
        let bytes = r.bytes().await.map_err(|source| KmfddmError::Http {
            call: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| KmfddmError::Json { call: path, source })
    }

    /// `GET /v1/status-report/{id}?index=N`: the raw report (0 = newest); `None` when KMFDDM
    /// has none at that index (404).
    pub async fn status_report(
        &self,
        id: &str,
        index: u32,
    ) -> Result<Option<RawStatusReport>, KmfddmError> {
        let idx = index.to_string();
        match self
            .call(
                Method::GET,
                &format!("/v1/status-report/{id}"),
                &[("index", &idx)],
                None,
            )
            .await
        {
            Err(KmfddmError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
            Ok(r) => {
                let h = |k: &str| {
                    r.headers()
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let (status_id, index) = (h("X-Status-Report-ID"), h("X-Status-Report-Index"));
                let raw = r.bytes().await.map_err(|source| KmfddmError::Http {
                    call: format!("GET /v1/status-report/{id}"),
                    source,
                })?;
                Ok(Some(RawStatusReport {
                    status_id,
                    index,
                    raw: raw.to_vec(),
                }))
            }
        }
    }

    /// `POST /v1/notify?id={enrollment}`: KMFDDM enqueues a `DeclarativeManagement` command
    /// through its MDM; the CommandUUID never reaches the caller (DDM brief §6).
    pub async fn notify(&self, enrollment: &str) -> Result<(), KmfddmError> {
        self.call(Method::POST, "/v1/notify", &[("id", enrollment)], None)
            .await
            .map(|_| ())
    }
}
