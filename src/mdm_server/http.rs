//! HTTP endpoints of the embedded MDM server.
//!
//! Device side (brief mdm.md §3–4): `PUT /mdm` takes both check-ins and command reports,
//! dispatched on the `Content-Type` as NanoMDM does; `PUT /checkin` takes check-ins only.
//! Operator side, NanoMDM-compatible (§5.1): `PUT /v1/enqueue/{ids}` with a raw command plist
//! (`?nopush=1`), `GET /v1/push/{ids}`, HTTP Basic with user `nanomdm`. Additions QA engineers
//! ask for and NanoMDM lacks: `GET /v1/history/{id}` (every command with its deliveries and the
//! raw reports), `GET /v1/history?reports_after=R&deliveries_after=D[&limit=N]` (what every
//! enrollment's history gained since a cursor: one call per follow-up round for the whole lab),
//! `GET /v1/enrollments`, `GET /v1/reports/rejected`, `GET /v1/store` (the store's
//! identity and creation time).

// Handlers return `Result<(), Response>` to short-circuit with a ready HTTP answer; the size of
// an axum `Response` is irrelevant on this path.
#![allow(clippy::result_large_err)]

use super::faults::WebhookFate;
use super::identity::{self, IdentityCa, IdentityError};
use super::push::{PushTarget, SharedPush};
use super::store::{ReportFate, Store, StoreError};
use crate::mdm::API_USER;
use crate::mdm::checkin::{self, CheckinMessage};
use crate::mdm::command::parse_envelope;
use crate::mdm::report::{ReportStatus, parse_report};
use crate::mdm::webhook::{self, AcknowledgeEvent, CheckinEvent, WebhookEvent};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use base64::Engine;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

pub struct ServerConfig {
    /// HTTP Basic password for the operator API; `None` disables the API.
    pub api_key: Option<String>,
    /// Header carrying the device's identity certificate (`None`: identities unchecked).
    pub cert_header: Option<String>,
    pub identity_ca: Option<IdentityCa>,
    pub webhook_url: Option<String>,
    pub webhook_hmac_key: Option<Vec<u8>>,
    pub push: SharedPush,
    /// Injected faults (tests and rehearsals of a flaky MDM; `None` on a real bench).
    pub faults: Option<Arc<super::faults::Faults>>,
    /// Turn DDM on at enrolment: after a device's first TokenUpdate, if its Authenticate said
    /// iOS 15 or later (`mdm/commands/declarativemanagement.yaml`, introduced 15.0), queue a
    /// `DeclarativeManagement` command and push, as DDM-capable MDMs do (DDM brief §1: DDM is
    /// on once the device has done a `DeclarativeManagement` check-in). The simulated lab's
    /// server does; `lab mdm serve` does not unless told.
    pub ddm_on_enroll: bool,
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub cfg: Arc<ServerConfig>,
    http: reqwest::Client,
    /// The UDIDs whose Authenticate said iOS 15 or later ([`ServerConfig::ddm_on_enroll`]).
    ddm_capable: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// SCEP and `Mdm-Signature` ([`super::device_auth`]); off unless set.
    pub auth: Arc<super::device_auth::DeviceAuth>,
}

impl AppState {
    pub fn new(store: Arc<Store>, cfg: ServerConfig) -> AppState {
        AppState {
            store,
            cfg: Arc::new(cfg),
            http: crate::http_client::client(Duration::from_secs(5)),
            ddm_capable: Arc::default(),
            auth: Arc::default(),
        }
    }

    /// Offer SCEP and/or require `Mdm-Signature`.
    pub fn with_device_auth(mut self, auth: super::device_auth::DeviceAuth) -> AppState {
        self.auth = Arc::new(auth);
        self
    }
}

pub fn router(state: AppState) -> Router {
    let faults = state.cfg.faults.clone().filter(|f| !f.is_empty());
    let r = Router::new()
        .route("/mdm", put(mdm).post(mdm))
        .route("/checkin", put(checkin_only).post(checkin_only))
        .route("/v1/enqueue/{ids}", put(enqueue).post(enqueue))
        .route("/v1/push/{ids}", get(push_api).post(push_api))
        .route("/v1/history/{id}", get(history))
        .route("/v1/history", get(history_since))
        .route("/v1/enrollments", get(enrollments))
        .route("/v1/store", get(store_identity))
        .route("/v1/reports/rejected", get(rejected))
        .route("/version", get(version))
        .merge(super::ddm_api::routes())
        .merge(super::user_channel::routes())
        .merge(super::device_auth::routes())
        .with_state(state);
    match faults {
        Some(f) => r.layer(axum::middleware::from_fn_with_state(
            f,
            super::faults::inject,
        )),
        None => r,
    }
}

fn text(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, msg.into()).into_response()
}

pub(super) fn json_error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, axum::Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

pub(super) fn internal(e: StoreError) -> Response {
    tracing::error!(error = %e, "MDM store failure");
    text(StatusCode::INTERNAL_SERVER_ERROR, "store failure")
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

// ---------------------------------------------------------------- device side

async fn mdm(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with(checkin::CHECKIN_CONTENT_TYPE) {
        handle_checkin(&st, &headers, &body).await
    } else {
        handle_report(&st, &headers, &body).await
    }
}

async fn checkin_only(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    handle_checkin(&st, &headers, &body).await
}

/// The identity certificate's fingerprint, when the server checks identities: from the
/// certificate header when one is configured, else from `Mdm-Signature` when required.
fn presented_identity(
    st: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<String>, IdentityError> {
    let Some(name) = &st.cfg.cert_header else {
        if !st.auth.mdm_signature {
            return Ok(None);
        }
        let der = super::device_auth::signature_identity(headers, body)?;
        if let Some(ca) = &st.cfg.identity_ca {
            ca.verify(&der)?;
        }
        return Ok(Some(identity::fingerprint(&der)));
    };
    let value = headers
        .get(name.as_str())
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| IdentityError::Missing(name.clone()))?;
    let der = identity::parse_cert_header(value)?;
    if let Some(ca) = &st.cfg.identity_ca {
        ca.verify(&der)?;
    }
    Ok(Some(identity::fingerprint(&der)))
}

/// Check that a message for `id` comes from the certificate bound at Authenticate. When the
/// server checks identities, an enrollment with no bound certificate is refused too (NanoMDM's
/// `ErrNoCertAssoc` without `-retro`): binding happens at Authenticate only.
fn check_bound(st: &AppState, id: &str, presented: Option<&str>) -> Result<(), Response> {
    let e = match st.store.enrollment(id) {
        Ok(e) => e,
        Err(e) => return Err(internal(e)),
    };
    let Some(e) = e else {
        return Err(text(
            StatusCode::UNAUTHORIZED,
            IdentityError::NotEnrolled(id.to_string()).to_string(),
        ));
    };
    if let Some(p) = presented
        && e.cert_fingerprint.as_deref() != Some(p)
    {
        return Err(text(
            StatusCode::FORBIDDEN,
            IdentityError::Mismatch(id.to_string()).to_string(),
        ));
    }
    Ok(())
}

fn identity_refusal(e: IdentityError) -> Response {
    let code = match e {
        IdentityError::Mismatch(_)
        | IdentityError::Untrusted(_)
        | IdentityError::BoundElsewhere { .. }
        | IdentityError::BadSignature(_) => StatusCode::FORBIDDEN,
        IdentityError::NotEnrolled(_) => StatusCode::UNAUTHORIZED,
        IdentityError::Missing(_) | IdentityError::Malformed => StatusCode::BAD_REQUEST,
    };
    text(code, e.to_string())
}

/// Authenticate's identity rules, as NanoMDM's cert-auth middleware applies them
/// (`associateNewEnrollment`, without `-allow-dup`):
///
/// - one certificate, one enrollment: a certificate ever bound to another enrollment is
///   refused (403), even if that enrollment has since re-bound to a newer one;
/// - the same certificate again (a re-enrollment with an identity embedded in the profile) is
///   accepted;
/// - a certificate never seen before re-binds the UDID: that is how a wiped or re-enrolled
///   device comes back with a fresh SCEP identity. Its previous certificate stops working. The
///   re-binding is recorded in the check-in records (`message_type` `IdentityRebound`, a JSON
///   body naming both fingerprints) and logged, so a take-over is visible.
fn bind_at_authenticate(
    st: &AppState,
    udid: &str,
    presented: Option<&str>,
) -> Result<(), Response> {
    let Some(fp) = presented else {
        return Ok(());
    };
    let owner = st.store.claim_certificate(fp, udid).map_err(internal)?;
    if owner != udid {
        tracing::warn!(%udid, %owner, "Authenticate with a certificate bound to another enrollment");
        return Err(identity_refusal(IdentityError::BoundElsewhere {
            udid: udid.to_string(),
        }));
    }
    let previous = st
        .store
        .enrollment(udid)
        .map_err(internal)?
        .and_then(|e| e.cert_fingerprint);
    if let Some(prev) = previous
        && prev != fp
    {
        tracing::warn!(%udid, previous = %prev, new = %fp, "enrollment re-bound to a new identity certificate");
        let note = serde_json::json!({ "previous_fingerprint": prev, "new_fingerprint": fp });
        st.store
            .record_checkin(Some(udid), IDENTITY_REBOUND, note.to_string().as_bytes())
            .map_err(internal)?;
    }
    Ok(())
}

/// `message_type` of the check-in record written when an Authenticate re-binds a UDID.
pub const IDENTITY_REBOUND: &str = "IdentityRebound";
/// `message_type` of an Authenticate refused for its certificate (the body is kept as evidence).
pub const AUTHENTICATE_REFUSED: &str = "AuthenticateRefused";

async fn handle_checkin(st: &AppState, headers: &HeaderMap, body: &[u8]) -> Response {
    // Authenticate first, parse second: an unauthenticated client gets no parser (issue 18).
    let presented = match presented_identity(st, headers, body) {
        Ok(p) => p,
        Err(e) => return identity_refusal(e),
    };
    let msg = match checkin::parse_checkin(body) {
        Ok(m) => m,
        Err(e) => {
            let _ = st.store.record_checkin(None, "malformed", body);
            return text(StatusCode::BAD_REQUEST, format!("bad check-in: {e}"));
        }
    };
    let id = msg.udid().unwrap_or_default().to_string();
    if let CheckinMessage::Authenticate { udid, .. } = &msg
        && udid.trim().is_empty()
    {
        let _ = st.store.record_checkin(None, "malformed", body);
        return text(
            StatusCode::BAD_REQUEST,
            "bad check-in: Authenticate with an empty UDID",
        );
    }
    if let CheckinMessage::Authenticate { udid, .. } = &msg
        && let Err(r) = bind_at_authenticate(st, udid, presented.as_deref())
    {
        // Kept as evidence of the attempt, under its own type so it is not taken for an
        // enrollment.
        let _ = st
            .store
            .record_checkin(Some(&id), AUTHENTICATE_REFUSED, body);
        return r;
    }
    if let Err(e) = st.store.record_checkin(Some(&id), msg.message_type(), body) {
        return internal(e);
    }
    let mut tally = None;
    match &msg {
        CheckinMessage::Authenticate {
            topic,
            udid,
            os_version,
            ..
        } => {
            if let Err(e) = st.store.authenticate(udid, topic, presented.as_deref()) {
                return internal(e);
            }
            if let Err(e) = st.store.clear_user_channel(udid) {
                return internal(e);
            }
            if st.cfg.ddm_on_enroll && super::ddm_api::ddm_capable(os_version.as_deref()) {
                st.ddm_capable
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(udid.clone());
            }
        }
        // A Shared iPad user's channel: recorded as such, never as the device's token.
        CheckinMessage::TokenUpdate { udid, .. }
            if let Some(user) = super::user_channel::of_checkin(body) =>
        {
            if let Err(r) = check_bound(st, udid, presented.as_deref()) {
                return r;
            }
            if let Err(e) = st.store.record_user_channel(udid, &user) {
                return internal(e);
            }
        }
        CheckinMessage::TokenUpdate {
            topic,
            udid,
            token,
            push_magic,
            unlock_token,
            ..
        } => {
            if let Err(r) = check_bound(st, udid, presented.as_deref()) {
                return r;
            }
            match st
                .store
                .token_update(udid, topic, token, push_magic, unlock_token.as_deref())
            {
                Ok(t) => tally = Some(t),
                Err(e) => return internal(e),
            }
            let turn_on = tally == Some(1)
                && st
                    .ddm_capable
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(udid.as_str());
            if turn_on {
                super::ddm_api::turn_ddm_on(st, udid);
            }
        }
        CheckinMessage::CheckOut { udid, .. } => {
            if let Err(r) = check_bound(st, udid, presented.as_deref()) {
                return r;
            }
            if let Err(e) = st.store.check_out(udid) {
                return internal(e);
            }
        }
        CheckinMessage::Other { udid, .. } => {
            if let Some(u) = udid
                && let Err(r) = check_bound(st, u, presented.as_deref())
            {
                return r;
            }
        }
    }
    // A DeclarativeManagement check-in is answered with its endpoint's document (ddm.rs); the
    // webhook below carries it as NanoMDM's `mdm.DeclarativeManagement` event does (DDM brief §6).
    let ddm_answer = if msg.message_type() == crate::mdm::ddm::DDM_CHECKIN_MESSAGE_TYPE {
        match super::ddm::answer_checkin(&st.store, body) {
            Ok(a) => Some(a),
            Err(e) => return internal(e),
        }
    } else {
        None
    };
    let mut ev = CheckinEvent::from_checkin(&msg, body);
    ev.token_update_tally = tally;
    send_webhook(
        st,
        WebhookEvent {
            topic: msg.webhook_topic(),
            event_id: event_id(),
            created_at: now_rfc3339(),
            checkin_event: Some(ev),
            acknowledge_event: None,
        },
    );
    if let Some(a) = ddm_answer {
        let code = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (code, [(header::CONTENT_TYPE, a.content_type)], a.body).into_response();
    }
    // Check-ins are answered with an empty 200 (brief §4).
    StatusCode::OK.into_response()
}

async fn handle_report(st: &AppState, headers: &HeaderMap, body: &[u8]) -> Response {
    // Authenticate first, parse second: an unauthenticated client gets no parser (issue 18).
    let presented = match presented_identity(st, headers, body) {
        Ok(p) => p,
        Err(e) => return identity_refusal(e),
    };
    let report = match parse_report(body) {
        Ok(r) => r,
        Err(e) => {
            // Garbage is kept, raw, as evidence; the queue is untouched. It cannot name its
            // enrollment, but the identity certificate that came with it can.
            let note = format!("malformed report: {e}");
            let from = presented
                .as_deref()
                .and_then(|fp| st.store.enrollment_by_fingerprint(fp).ok().flatten());
            if let Err(e) = st
                .store
                .record_report(from.as_deref(), None, None, body, Some(&note))
            {
                return internal(e);
            }
            return text(StatusCode::BAD_REQUEST, note);
        }
    };
    let id = report.enrollment().to_string();
    if let Err(r) = check_bound(st, &id, presented.as_deref()) {
        return r;
    }
    let status = report.status.as_str().to_string();
    if report.status == ReportStatus::Idle {
        if let Err(e) = st.store.touch(&id) {
            return internal(e);
        }
    } else {
        let Some(uuid) = report.command_uuid.as_deref() else {
            let note = "report without CommandUUID";
            if let Err(e) = st
                .store
                .record_report(Some(&id), None, Some(&status), body, Some(note))
            {
                return internal(e);
            }
            return text(StatusCode::BAD_REQUEST, note);
        };
        match st
            .store
            .record_report(Some(&id), Some(uuid), Some(&status), body, None)
        {
            Err(e) => return internal(e),
            Ok(ReportFate::UnknownCommand) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("no command {uuid} was queued for {id}"),
                );
            }
            Ok(ReportFate::Duplicate) => {
                tracing::info!(%id, %uuid, "device reported a command a second time");
            }
            Ok(ReportFate::Recorded) => {}
        }
    }
    send_webhook(
        st,
        WebhookEvent {
            topic: webhook::TOPIC_CONNECT.to_string(),
            event_id: event_id(),
            created_at: now_rfc3339(),
            checkin_event: None,
            acknowledge_event: Some(AcknowledgeEvent::from_report(&report)),
        },
    );
    match st
        .store
        .next_command(&id, report.status == ReportStatus::NotNow)
    {
        Err(e) => internal(e),
        Ok(Some((_, payload))) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
            payload,
        )
            .into_response(),
        // "An empty response body is zero bytes in length" (Apple, brief §3).
        Ok(None) => StatusCode::OK.into_response(),
    }
}

fn event_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64;
    format!("{:016x}{:08x}", t, n)
}

/// Fire and forget, as NanoMDM does (brief §0.9): a lost webhook never affects the device.
fn send_webhook(st: &AppState, ev: WebhookEvent) {
    let Some(url) = st.cfg.webhook_url.clone() else {
        return;
    };
    let body = match serde_json::to_vec(&ev) {
        Ok(b) => b,
        Err(_) => return,
    };
    let carries_result = ev
        .acknowledge_event
        .as_ref()
        .is_some_and(|a| a.command_uuid.as_deref().is_some_and(|u| !u.is_empty()));
    let fate = st
        .cfg
        .faults
        .as_ref()
        .map(|f| f.webhook_fate(carries_result))
        .unwrap_or(WebhookFate::Send);
    let copies = match fate {
        WebhookFate::Send => 1,
        WebhookFate::Lose => return,
        WebhookFate::Duplicate => 2,
    };
    let mut req = st
        .http
        .post(url)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8");
    if let Some(key) = &st.cfg.webhook_hmac_key {
        req = req.header(webhook::HMAC_HEADER, webhook::hmac_signature(key, &body));
    }
    tokio::spawn(async move {
        for _ in 0..copies {
            let Some(req) = req.try_clone() else { return };
            match req.body(body.clone()).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::warn!(status = %r.status(), "webhook receiver answered non-2xx"),
                Err(e) => tracing::warn!(error = %e, "webhook not delivered"),
            }
        }
    });
}

// ---------------------------------------------------------------- operator API

pub(super) fn check_api_auth(st: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(key) = &st.cfg.api_key else {
        return Err(json_error(
            StatusCode::FORBIDDEN,
            "the API is disabled: the server was started without an API key",
        ));
    };
    let ok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|d| String::from_utf8(d).ok())
        .map(|cred| constant_time_eq(cred.as_bytes(), format!("{API_USER}:{key}").as_bytes()))
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err((
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"lab-mdm\"")],
            "Unauthorized",
        )
            .into_response())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// NanoMDM's `APIResult` (api/types.go, brief §5.1).
#[derive(Debug, Default, Serialize)]
pub struct ApiResult {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub status: BTreeMap<String, IdResult>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_push: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_type: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct IdResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_error: Option<String>,
}

fn split_ids(ids: &str) -> Vec<String> {
    ids.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Push the ids; fills `result.status` and returns how many pushes failed.
pub(super) async fn push_ids(st: &AppState, ids: &[String], result: &mut ApiResult) -> usize {
    let mut targets = Vec::new();
    let mut failed = 0;
    for id in ids {
        match st.store.enrollment(id) {
            Ok(Some(e)) if e.pushable() => targets.push(PushTarget {
                id: id.clone(),
                token: e.token.clone().unwrap_or_default(),
                push_magic: e.push_magic.clone().unwrap_or_default(),
                topic: e.topic.clone(),
            }),
            Ok(_) => {
                failed += 1;
                result.status.entry(id.clone()).or_default().push_error =
                    Some("no push token: the device has not sent a TokenUpdate".into());
            }
            Err(e) => {
                failed += 1;
                result.status.entry(id.clone()).or_default().push_error = Some(e.to_string());
            }
        }
    }
    let push: &SharedPush = &st.cfg.push;
    let results = push.push(&targets).await;
    for (t, r) in targets.iter().zip(results) {
        let entry = result.status.entry(t.id.clone()).or_default();
        match r {
            Ok(id) => entry.push_result = Some(id),
            Err(e) => {
                failed += 1;
                entry.push_error = Some(e);
            }
        }
    }
    failed
}

pub(super) fn api_response(code: StatusCode, r: ApiResult) -> Response {
    (code, axum::Json(r)).into_response()
}

async fn enqueue(
    State(st): State<AppState>,
    Path(ids): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check_api_auth(&st, &headers) {
        return r;
    }
    let ids = split_ids(&ids);
    if ids.is_empty() {
        return json_error(StatusCode::BAD_REQUEST, "no enrollment id in the URL");
    }
    let nopush = q.get("nopush").is_some_and(|v| v == "1" || v == "true");
    let mut result = ApiResult {
        no_push: nopush,
        ..Default::default()
    };
    if !body.is_empty() {
        let env = match parse_envelope(&body) {
            Ok(e) => e,
            Err(e) => {
                result.command_error = Some(format!("decoding command: {e}"));
                return api_response(StatusCode::BAD_REQUEST, result);
            }
        };
        match st
            .store
            .enqueue(&ids, &env.command_uuid, &env.request_type, &body)
        {
            Ok(()) => {}
            Err(StoreError::DuplicateCommand(u)) => {
                result.command_error = Some(format!(
                    "command {u} was already enqueued (CommandUUIDs must be unique)"
                ));
                return api_response(StatusCode::CONFLICT, result);
            }
            Err(e) => return internal(e),
        }
        result.command_uuid = Some(env.command_uuid);
        result.request_type = Some(env.request_type);
    } else if nopush {
        return json_error(
            StatusCode::BAD_REQUEST,
            "empty body with nopush: nothing to do",
        );
    }
    if nopush {
        return api_response(StatusCode::OK, result);
    }
    let failed = push_ids(&st, &ids, &mut result).await;
    let code = if failed == 0 {
        StatusCode::OK
    } else if failed < ids.len() {
        StatusCode::MULTI_STATUS
    } else {
        // NanoMDM answers 500 with command_uuid + push_error when the command was queued but
        // could not be pushed (brief §0.8): the command *is* queued.
        result.push_error = Some("push failed for every enrollment".into());
        StatusCode::INTERNAL_SERVER_ERROR
    };
    api_response(code, result)
}

async fn push_api(
    State(st): State<AppState>,
    Path(ids): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check_api_auth(&st, &headers) {
        return r;
    }
    let ids = split_ids(&ids);
    let mut result = ApiResult::default();
    let failed = push_ids(&st, &ids, &mut result).await;
    let code = if failed == 0 {
        StatusCode::OK
    } else if failed < ids.len() {
        StatusCode::MULTI_STATUS
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    api_response(code, result)
}

async fn history(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check_api_auth(&st, &headers) {
        return r;
    }
    match st.store.history(&id) {
        Ok(h) => axum::Json(serde_json::json!({ "id": id, "commands": h })).into_response(),
        Err(e) => internal(e),
    }
}

/// The most reports (and deliveries) one `GET /v1/history?…` answer carries, and the default.
pub const HISTORY_PAGE_MAX: u32 = 10_000;
const HISTORY_PAGE_DEFAULT: u32 = 5_000;

/// `GET /v1/history?reports_after=R&deliveries_after=D[&limit=N]`: `lab`'s own extension
/// (NanoMDM has no such call). The reports and deliveries every enrollment's history gained
/// since the cursor (R, D: the numbers of the last ones the caller has; 0 for all), at most N
/// of each (≤ [`HISTORY_PAGE_MAX`]), with the cursor to ask from next and `more` when a page
/// was full. Anything else in the query is refused: the input is three small numbers.
async fn history_since(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check_api_auth(&st, &headers) {
        return r;
    }
    if let Some(k) = q
        .keys()
        .find(|k| !matches!(k.as_str(), "reports_after" | "deliveries_after" | "limit"))
    {
        return json_error(
            StatusCode::BAD_REQUEST,
            format!(
                "unknown parameter {:?}: the history since a cursor takes reports_after, deliveries_after and limit",
                k.chars().take(64).collect::<String>()
            ),
        );
    }
    let number = |k: &str| -> Result<Option<i64>, Response> {
        match q.get(k) {
            None => Ok(None),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if n >= 0 => Ok(Some(n)),
                _ => Err(json_error(
                    StatusCode::BAD_REQUEST,
                    format!("{k} must be a whole number, 0 or more"),
                )),
            },
        }
    };
    let (reports_after, deliveries_after, limit) = match (
        number("reports_after"),
        number("deliveries_after"),
        number("limit"),
    ) {
        (Ok(r), Ok(d), Ok(l)) => (r.unwrap_or(0), d.unwrap_or(0), l),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e,
    };
    let limit = match limit {
        None => HISTORY_PAGE_DEFAULT,
        Some(n) if (1..=i64::from(HISTORY_PAGE_MAX)).contains(&n) => n as u32,
        Some(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("limit must be between 1 and {HISTORY_PAGE_MAX}"),
            );
        }
    };
    match st
        .store
        .history_since(reports_after, deliveries_after, limit)
    {
        Ok(h) => axum::Json(h).into_response(),
        Err(e) => internal(e),
    }
}

/// `GET /v1/store`: `{"store_id", "created_at"}` — which store answers and since when its
/// records go back (the harness trusts "absent from the history" only within them).
async fn store_identity(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = check_api_auth(&st, &headers) {
        return r;
    }
    axum::Json(st.store.identity().clone()).into_response()
}

async fn enrollments(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = check_api_auth(&st, &headers) {
        return r;
    }
    match st.store.enrollments() {
        Ok(v) => axum::Json(serde_json::json!({ "enrollments": v })).into_response(),
        Err(e) => internal(e),
    }
}

/// `GET /v1/reports/rejected[?id=ENROLLMENT][&after=N]`: reports the server could not
/// attribute to a queued command (malformed, unknown CommandUUID), raw, numbered above N.
async fn rejected(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check_api_auth(&st, &headers) {
        return r;
    }
    let after = match q.get("after").map(|a| a.parse::<i64>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return json_error(StatusCode::BAD_REQUEST, "after must be a number"),
    };
    match st
        .store
        .rejected_reports(q.get("id").map(String::as_str), after)
    {
        Ok(v) => axum::Json(serde_json::json!({ "reports": v })).into_response(),
        Err(e) => internal(e),
    }
}

async fn version() -> Response {
    axum::Json(serde_json::json!({ "version": concat!("lab-mdm ", env!("CARGO_PKG_VERSION")) }))
        .into_response()
}
