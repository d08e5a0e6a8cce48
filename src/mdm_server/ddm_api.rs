//! The operator API for DDM (issue 13), with the same HTTP Basic auth as the rest of the API
//! (user `nanomdm`, the server's API key). All bodies are JSON.
//!
//! - `PUT /v1/ddm/declarations/{id}`: body = one declaration (`Type`, `Identifier`, `Payload`;
//!   any `ServerToken` is replaced by the content hash). Puts or replaces it for enrollment `id`.
//!   An enforcement payload is checked as a device would read it. → 200
//!   `{"identifier", "server_token", "changed", "declarations_token"}`; 400 `{"error"}`.
//! - `DELETE /v1/ddm/declarations/{id}/{identifier}` → 200 `{"removed", "declarations_token"}`.
//! - `GET /v1/ddm/declarations/{id}` → the enrollment's DDM summary: `active` (a
//!   `DeclarativeManagement` check-in seen), check-in times, `declarations_token`, and every
//!   declaration served (lab's activation and subscriptions included).
//! - `GET /v1/ddm/status/{id}?after=N` → `{"enrollment_id", "reports": [{"seq", "received_at",
//!   "full_report", "raw"}]}`, `raw` being the report's JSON bytes in base64, oldest first.
//! - `POST /v1/ddm/sync/{id}?command_uuid=U&nopush=1`: enqueues a `DeclarativeManagement`
//!   command carrying the current sync tokens as `Data` (and pushes unless `nopush`); answers
//!   as `/v1/enqueue` does (`command_uuid`, `request_type`, per-id push status). A repeated
//!   `command_uuid` is refused with 409, so a retried sync never queues a second command.

#![allow(clippy::result_large_err)]

use super::http::{
    ApiResult, AppState, api_response, check_api_auth, internal, json_error, push_ids,
};
use super::store::StoreError;
use crate::mdm::ddm::declaration::{Declaration, ENFORCEMENT_SPECIFIC, Enforcement};
use crate::mdm::ddm::protocol::{
    DDM_CHECKIN_MESSAGE_TYPE, TokensResponse, declarative_management_command,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use std::collections::HashMap;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/ddm/declarations/{id}",
            put(put_declaration).get(summary),
        )
        .route(
            "/v1/ddm/declarations/{id}/{identifier}",
            axum::routing::delete(remove_declaration),
        )
        .route("/v1/ddm/status/{id}", get(status_history))
        .route("/v1/ddm/sync/{id}", post(sync))
}

/// Whether an Authenticate's `OSVersion` names a device that knows the `DeclarativeManagement`
/// command (iOS 15.0+, `mdm/commands/declarativemanagement.yaml`).
pub(super) fn ddm_capable(os_version: Option<&str>) -> bool {
    let at_least = crate::version::Version::parse("15.0").expect("static version");
    os_version
        .and_then(|v| crate::version::Version::parse(v).ok())
        .is_some_and(|v| v >= at_least)
}

/// Queue a `DeclarativeManagement` command for a device that just enrolled and push it
/// ([`super::http::ServerConfig::ddm_on_enroll`]). Its CommandUUID is derived from the UDID, so
/// a repeated first TokenUpdate cannot queue a second one.
pub(super) fn turn_ddm_on(st: &AppState, udid: &str) {
    let uuid = format!("lab-ddm-on-{udid}");
    let token = match st.store.ddm_token(udid) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(%udid, "DDM at enrolment: {e}");
            return;
        }
    };
    let tokens = TokensResponse::new(&token, chrono::Utc::now());
    let plist = declarative_management_command(&uuid, Some(&tokens));
    let ids = vec![udid.to_string()];
    match st
        .store
        .enqueue(&ids, &uuid, DDM_CHECKIN_MESSAGE_TYPE, &plist)
    {
        Ok(()) => {}
        Err(StoreError::DuplicateCommand(_)) => return,
        Err(e) => {
            tracing::warn!(%udid, "DDM at enrolment: {e}");
            return;
        }
    }
    let st = st.clone();
    tokio::spawn(async move {
        let mut result = ApiResult::default();
        push_ids(&st, &ids, &mut result).await;
    });
}

async fn put_declaration(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check_api_auth(&st, &headers) {
        return r;
    }
    let d = match Declaration::parse(&body, false) {
        Ok(d) => d,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("declaration: {e}")),
    };
    if d.declaration_type == ENFORCEMENT_SPECIFIC
        && let Err(e) = Enforcement::from_payload(&d.payload)
    {
        return json_error(StatusCode::BAD_REQUEST, format!("enforcement payload: {e}"));
    }
    match st.store.ddm_put(&id, &d) {
        Ok(p) => axum::Json(p).into_response(),
        Err(e) => internal(e),
    }
}

async fn remove_declaration(
    State(st): State<AppState>,
    Path((id, identifier)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check_api_auth(&st, &headers) {
        return r;
    }
    let removed = match st.store.ddm_remove(&id, &identifier) {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    match st.store.ddm_token(&id) {
        Ok(t) => axum::Json(serde_json::json!({"removed": removed, "declarations_token": t}))
            .into_response(),
        Err(e) => internal(e),
    }
}

async fn summary(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check_api_auth(&st, &headers) {
        return r;
    }
    match st.store.ddm_summary(&id) {
        Ok(s) => axum::Json(s).into_response(),
        Err(e) => internal(e),
    }
}

async fn status_history(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check_api_auth(&st, &headers) {
        return r;
    }
    let after = match q.get("after").map(|s| s.parse::<i64>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return json_error(StatusCode::BAD_REQUEST, "after must be a number"),
    };
    match st.store.ddm_status_history(&id, after) {
        Ok(v) => axum::Json(serde_json::json!({"enrollment_id": id, "reports": v})).into_response(),
        Err(e) => internal(e),
    }
}

async fn sync(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check_api_auth(&st, &headers) {
        return r;
    }
    let nopush = q.get("nopush").is_some_and(|v| v == "1" || v == "true");
    let uuid = q
        .get("command_uuid")
        .filter(|u| !u.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| crate::rng::uuid_v4().to_uppercase());
    let token = match st.store.ddm_token(&id) {
        Ok(t) => t,
        Err(e) => return internal(e),
    };
    let tokens = TokensResponse::new(&token, chrono::Utc::now());
    let plist = declarative_management_command(&uuid, Some(&tokens));
    let ids = vec![id];
    let mut result = ApiResult {
        no_push: nopush,
        ..Default::default()
    };
    match st
        .store
        .enqueue(&ids, &uuid, DDM_CHECKIN_MESSAGE_TYPE, &plist)
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
    result.command_uuid = Some(uuid);
    result.request_type = Some(DDM_CHECKIN_MESSAGE_TYPE.into());
    if nopush {
        return api_response(StatusCode::OK, result);
    }
    let failed = push_ids(&st, &ids, &mut result).await;
    let code = if failed == 0 {
        StatusCode::OK
    } else {
        result.push_error = Some("push failed".into());
        StatusCode::INTERNAL_SERVER_ERROR
    };
    api_response(code, result)
}

#[cfg(test)]
mod tests {
    /// `ddm_supported` (`data/ddm.yaml`): the DeclarativeManagement command exists from iOS 15.0,
    /// so the server turns DDM on at enrolment only for those devices.
    #[test]
    fn ddm_is_turned_on_from_ios_15() {
        assert!(super::ddm_capable(Some("15.0")));
        assert!(super::ddm_capable(Some("17.5.1")));
        assert!(!super::ddm_capable(Some("14.8.1")));
        assert!(!super::ddm_capable(Some("not a version")));
        assert!(!super::ddm_capable(None));
    }
}
