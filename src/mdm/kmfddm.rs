//! KMFDDM, the open-source DDM server that works beside NanoMDM (DDM brief §6; KMFDDM
//! `docs/openapi.yaml`, `http/api/v1.go`): its operator API as a [`DdmBackend`].
//!
//! - HTTP Basic, user [`API_USER`] (`kmfddm`), password = the server's `-api` key.
//! - Declarations: `PUT /v1/declarations` (KMFDDM computes the ServerToken), `GET
//!   /v1/declarations/{id}`.
//! - Sets: `PUT`/`GET /v1/set-declarations/{set}?declaration=`.
//! - Enrollments: `PUT`/`DELETE`/`GET /v1/enrollment-sets/{enrollment}?set=`; assigning a set is
//!   what makes KMFDDM enqueue a `DeclarativeManagement` command through NanoMDM.
//! - Status: `GET /v1/declaration-status/{enrollment}`, and the raw reports one at a time with
//!   `GET /v1/status-report/{enrollment}?index=N` (0 = newest; headers `X-Status-Report-ID`,
//!   `Last-Modified`; 404 past the oldest).
//! - Mutations answer 204 when something changed and 304 when not; `nonotify=true` holds the
//!   push back.
//!
//! KMFDDM never returns the CommandUUID of the `DeclarativeManagement` command it enqueues
//! (DDM brief §6 "Enqueue path"): the record of a dose is the set assignment itself.

use super::backend::{BackendError, BoxFuture, map_send_error};
use super::ddm_backend::{
    Change, DdmBackend, DeclarationStatus, MAX_BODY_BYTES, MAX_REPORTS_PER_CALL, RawStatusReport,
};
use reqwest::{Method, StatusCode, Url};
use std::time::Duration;

/// KMFDDM's API user (DDM brief §6: "HTTP Basic, user `kmfddm`").
pub const API_USER: &str = "kmfddm";

pub struct Kmfddm {
    base: Url,
    api_key: String,
    timeout: Duration,
    http: reqwest::Client,
}

/// What one API call gave back.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Kmfddm {
    /// `base` is the server's root URL (`http://host:9002/`).
    pub fn new(base: &str, api_key: &str, timeout: Duration) -> Result<Kmfddm, BackendError> {
        let mut base = Url::parse(base).map_err(|e| BackendError::NotConnected {
            url: base.to_string(),
            reason: format!("not a URL: {e}"),
        })?;
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        Ok(Kmfddm {
            base,
            api_key: api_key.to_string(),
            timeout,
            http: crate::http_client::client(timeout),
        })
    }

    /// `segments` are percent-encoded one by one: an enrollment ID or set name can never
    /// reach another path.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut u = self.base.clone();
        {
            let mut p = u.path_segments_mut().expect("an http(s) base has a path");
            p.pop_if_empty();
            p.extend(segments);
        }
        if !query.is_empty() {
            u.query_pairs_mut().extend_pairs(query);
        }
        u
    }

    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, BackendError> {
        let shown = redacted(&url);
        let mut req = self
            .http
            .request(method, url)
            .basic_auth(API_USER, Some(&self.api_key));
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| map_send_error(&shown, self.timeout, e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| map_send_error(&shown, self.timeout, e))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(BackendError::BadResponse {
                    url: shown,
                    reason: format!("answer larger than {MAX_BODY_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// 204 → changed, 304 → unchanged, anything else refused.
    async fn mutate(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<Change, BackendError> {
        let shown = redacted(&url);
        let a = self.call(method, url, body).await?;
        match a.status {
            StatusCode::NO_CONTENT => Ok(Change::Changed),
            StatusCode::NOT_MODIFIED => Ok(Change::Unchanged),
            s => Err(refused(shown, s, &a.body)),
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: Url) -> Result<T, BackendError> {
        let shown = redacted(&url);
        let a = self.call(Method::GET, url, None).await?;
        if a.status != StatusCode::OK {
            return Err(refused(shown, a.status, &a.body));
        }
        serde_json::from_slice(&a.body).map_err(|e| BackendError::BadResponse {
            url: shown,
            reason: e.to_string(),
        })
    }

    /// A list of names, which KMFDDM (Go) writes as `null` when empty.
    async fn names(&self, url: Url) -> Result<Vec<String>, BackendError> {
        Ok(self
            .get_json::<Option<Vec<String>>>(url)
            .await?
            .unwrap_or_default())
    }

    async fn report_at(
        &self,
        enrollment_id: &str,
        index: usize,
    ) -> Result<Option<RawStatusReport>, BackendError> {
        let i = index.to_string();
        let url = self.url(
            &["v1", "status-report", enrollment_id],
            &[("index", i.as_str())],
        );
        let shown = redacted(&url);
        let a = self.call(Method::GET, url, None).await?;
        match a.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            s => return Err(refused(shown, s, &a.body)),
        }
        let header = |n: &str| {
            a.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let Some(id) = header("x-status-report-id") else {
            return Err(BackendError::BadResponse {
                url: shown,
                reason: "a status report without X-Status-Report-ID".into(),
            });
        };
        Ok(Some(RawStatusReport {
            id,
            received: header("last-modified"),
            bytes: a.body,
        }))
    }

    async fn walk_reports(
        &self,
        enrollment_id: &str,
        after: Option<&str>,
    ) -> Result<Vec<RawStatusReport>, BackendError> {
        let mut newest_first: Vec<RawStatusReport> = Vec::new();
        for index in 0..MAX_REPORTS_PER_CALL {
            let Some(r) = self.report_at(enrollment_id, index).await? else {
                break;
            };
            if Some(r.id.as_str()) == after {
                break;
            }
            // A report that arrived during the walk shifts every index by one: the same report
            // is then seen twice, never skipped.
            if !newest_first.iter().any(|s| s.id == r.id) {
                newest_first.push(r);
            }
        }
        newest_first.reverse();
        Ok(newest_first)
    }
}

/// The URL as it may appear in an error: the API key travels in the Authorization header,
/// never in the URL, but a base URL with `user:password@` would carry one.
fn redacted(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

fn refused(url: String, status: StatusCode, body: &[u8]) -> BackendError {
    BackendError::Refused {
        url,
        status: status.as_u16(),
        message: String::from_utf8_lossy(body).chars().take(500).collect(),
    }
}

fn notify_query(notify: bool) -> &'static [(&'static str, &'static str)] {
    if notify { &[] } else { &[("nonotify", "true")] }
}

impl DdmBackend for Kmfddm {
    fn kind(&self) -> &'static str {
        "kmfddm"
    }

    fn put_declaration<'a>(
        &'a self,
        declaration: &'a serde_json::Value,
        notify: bool,
    ) -> BoxFuture<'a, Result<Change, BackendError>> {
        Box::pin(async move {
            let url = self.url(&["v1", "declarations"], notify_query(notify));
            let body = serde_json::to_vec(declaration).expect("a JSON value serialises");
            self.mutate(Method::PUT, url, Some(body)).await
        })
    }

    fn declaration<'a>(
        &'a self,
        identifier: &'a str,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, BackendError>> {
        Box::pin(async move {
            let url = self.url(&["v1", "declarations", identifier], &[]);
            let shown = redacted(&url);
            let a = self.call(Method::GET, url, None).await?;
            match a.status {
                StatusCode::NOT_FOUND => Ok(None),
                StatusCode::OK => serde_json::from_slice(&a.body).map(Some).map_err(|e| {
                    BackendError::BadResponse {
                        url: shown,
                        reason: e.to_string(),
                    }
                }),
                s => Err(refused(shown, s, &a.body)),
            }
        })
    }

    fn add_to_set<'a>(
        &'a self,
        set: &'a str,
        identifier: &'a str,
        notify: bool,
    ) -> BoxFuture<'a, Result<Change, BackendError>> {
        Box::pin(async move {
            let mut q = vec![("declaration", identifier)];
            q.extend_from_slice(notify_query(notify));
            let url = self.url(&["v1", "set-declarations", set], &q);
            self.mutate(Method::PUT, url, None).await
        })
    }

    fn set_declarations<'a>(
        &'a self,
        set: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, BackendError>> {
        Box::pin(async move {
            self.names(self.url(&["v1", "set-declarations", set], &[]))
                .await
        })
    }

    fn assign_set<'a>(
        &'a self,
        enrollment_id: &'a str,
        set: &'a str,
    ) -> BoxFuture<'a, Result<Change, BackendError>> {
        Box::pin(async move {
            let url = self.url(&["v1", "enrollment-sets", enrollment_id], &[("set", set)]);
            self.mutate(Method::PUT, url, None).await
        })
    }

    fn unassign_set<'a>(
        &'a self,
        enrollment_id: &'a str,
        set: &'a str,
    ) -> BoxFuture<'a, Result<Change, BackendError>> {
        Box::pin(async move {
            let url = self.url(&["v1", "enrollment-sets", enrollment_id], &[("set", set)]);
            self.mutate(Method::DELETE, url, None).await
        })
    }

    fn enrollment_sets<'a>(
        &'a self,
        enrollment_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, BackendError>> {
        Box::pin(async move {
            self.names(self.url(&["v1", "enrollment-sets", enrollment_id], &[]))
                .await
        })
    }

    fn declaration_status<'a>(
        &'a self,
        enrollment_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<DeclarationStatus>, BackendError>> {
        Box::pin(async move {
            let url = self.url(&["v1", "declaration-status", enrollment_id], &[]);
            // `{"<enrollment id>": [ {identifier, active, valid, server-token, current, …} ]}`
            let mut by_id: std::collections::HashMap<String, Option<Vec<DeclarationStatus>>> =
                self.get_json(url).await?;
            Ok(by_id.remove(enrollment_id).flatten().unwrap_or_default())
        })
    }

    fn status_reports<'a>(
        &'a self,
        enrollment_id: &'a str,
        after: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<RawStatusReport>, BackendError>> {
        Box::pin(self.walk_reports(enrollment_id, after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded_one_by_one() {
        let k = Kmfddm::new("http://127.0.0.1:9002", "k", Duration::from_secs(1)).unwrap();
        let u = k.url(&["v1", "enrollment-sets", "a/../b c"], &[("set", "x&y")]);
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9002/v1/enrollment-sets/a%2F..%2Fb%20c?set=x%26y"
        );
    }

    #[test]
    fn a_base_with_a_path_keeps_it() {
        let k = Kmfddm::new("http://h:9002/ddm", "k", Duration::from_secs(1)).unwrap();
        assert_eq!(
            k.url(&["v1", "sets"], &[]).as_str(),
            "http://h:9002/ddm/v1/sets"
        );
    }

    #[test]
    fn credentials_in_a_base_url_never_reach_an_error() {
        let u = Url::parse("http://kmfddm:secret-key@h:9002/v1/sets").unwrap();
        let shown = redacted(&u);
        assert!(!shown.contains("secret-key"), "{shown}");
    }

    #[test]
    fn a_base_that_is_not_a_url_is_refused_by_name() {
        let e = Kmfddm::new("not a url", "k", Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(e.to_string().contains("not a URL"), "{e}");
    }
}
