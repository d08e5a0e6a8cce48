//! Contract test for the harness's KMFDDM backend (`lab::mdm::kmfddm`) against a double that
//! speaks KMFDDM's documented operator API (DDM brief §6; KMFDDM `docs/openapi.yaml`):
//! HTTP Basic user `kmfddm`, 204 = changed / 304 = unchanged on every mutation, `nonotify=true`,
//! empty lists written as JSON `null` (Go's nil slice), raw status reports walked by `index`
//! (0 = newest) with `X-Status-Report-ID` / `Last-Modified`, 404 past the oldest.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use lab::mdm::backend::BackendError;
use lab::mdm::ddm_backend::{Change, DdmBackend, MAX_BODY_BYTES};
use lab::mdm::kmfddm::Kmfddm;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Distinctive, so that a leak into an error message is caught.
const API_KEY: &str = "kmfddm-key-5d1e-must-never-leak";
const ENROLLMENT: &str = "00008110-000A1B2C3D4E5F60";

#[derive(Default)]
struct Double {
    declarations: BTreeMap<String, Value>,
    sets: BTreeMap<String, BTreeSet<String>>,
    enrollment_sets: BTreeMap<String, BTreeSet<String>>,
    /// Oldest first: (id, received, bytes).
    reports: HashMap<String, Vec<(String, String, Vec<u8>)>>,
    /// Every mutation, with whether it asked not to notify.
    mutations: Vec<(String, bool)>,
}

type Shared = Arc<Mutex<Double>>;

fn authorised(h: &HeaderMap) -> bool {
    let want = format!("Basic {}", B64.encode(format!("kmfddm:{API_KEY}")));
    h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(want.as_str())
}

fn changed(yes: bool) -> Response {
    if yes {
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::NOT_MODIFIED.into_response()
    }
}

fn unauthorised() -> Response {
    (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response()
}

/// Go's `json.Marshal` of a nil slice.
fn names(v: Option<&BTreeSet<String>>) -> Response {
    match v {
        Some(s) if !s.is_empty() => axum::Json(s.iter().collect::<Vec<_>>()).into_response(),
        _ => (
            [(header::CONTENT_TYPE, "application/json")],
            "null".to_string(),
        )
            .into_response(),
    }
}

fn nonotify(q: &HashMap<String, String>) -> bool {
    q.get("nonotify").map(String::as_str) == Some("true")
}

async fn put_declaration(
    State(s): State<Shared>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if !authorised(&h) {
        return unauthorised();
    }
    let Ok(mut d) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, r#"{"error":"bad json"}"#).into_response();
    };
    // KMFDDM computes the ServerToken from the content; a supplied one is ignored.
    d.as_object_mut().unwrap().remove("ServerToken");
    let id = d["Identifier"].as_str().unwrap_or_default().to_string();
    let mut s = s.lock().unwrap();
    s.mutations
        .push((format!("PUT declarations {id}"), nonotify(&q)));
    let new = s.declarations.get(&id) != Some(&d);
    s.declarations.insert(id, d);
    changed(new)
}

async fn get_declaration(
    State(s): State<Shared>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !authorised(&h) {
        return unauthorised();
    }
    match s.lock().unwrap().declarations.get(&id) {
        Some(d) => {
            let mut d = d.clone();
            d["ServerToken"] = json!(format!("tok-{}", d.to_string().len()));
            axum::Json(d).into_response()
        }
        None => (StatusCode::NOT_FOUND, r#"{"error":"not found"}"#).into_response(),
    }
}

async fn set_declarations(
    State(s): State<Shared>,
    h: HeaderMap,
    Path(set): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    method: axum::http::Method,
) -> Response {
    if !authorised(&h) {
        return unauthorised();
    }
    let mut s = s.lock().unwrap();
    if method == axum::http::Method::GET {
        return names(s.sets.get(&set));
    }
    let Some(decl) = q.get("declaration").cloned() else {
        return (StatusCode::BAD_REQUEST, r#"{"error":"no declaration"}"#).into_response();
    };
    s.mutations
        .push((format!("PUT set {set} {decl}"), nonotify(&q)));
    let new = s.sets.entry(set).or_default().insert(decl);
    changed(new)
}

async fn enrollment_sets(
    State(s): State<Shared>,
    h: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    method: axum::http::Method,
) -> Response {
    if !authorised(&h) {
        return unauthorised();
    }
    let mut s = s.lock().unwrap();
    if method == axum::http::Method::GET {
        return names(s.enrollment_sets.get(&id));
    }
    let Some(set) = q.get("set").cloned() else {
        return (StatusCode::BAD_REQUEST, r#"{"error":"no set"}"#).into_response();
    };
    s.mutations
        .push((format!("{method} enrollment {id} {set}"), nonotify(&q)));
    let entry = s.enrollment_sets.entry(id).or_default();
    let new = if method == axum::http::Method::DELETE {
        entry.remove(&set)
    } else {
        entry.insert(set)
    };
    changed(new)
}

async fn declaration_status(
    State(s): State<Shared>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !authorised(&h) {
        return unauthorised();
    }
    let s = s.lock().unwrap();
    let items: Vec<Value> = s
        .enrollment_sets
        .get(&id)
        .into_iter()
        .flatten()
        .flat_map(|set| s.sets.get(set).into_iter().flatten())
        .map(|d| {
            json!({"identifier": d, "active": true, "valid": "valid", "server-token": "tok",
                   "current": true, "status_received": "2026-12-03T08:00:00Z",
                   "reasons": null, "status_id": "s1"})
        })
        .collect();
    axum::Json(json!({ id: items })).into_response()
}

async fn status_report(
    State(s): State<Shared>,
    h: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !authorised(&h) {
        return unauthorised();
    }
    let s = s.lock().unwrap();
    let index: usize = q.get("index").and_then(|i| i.parse().ok()).unwrap_or(0);
    let reports = s.reports.get(&id).map(Vec::as_slice).unwrap_or_default();
    if index >= reports.len() {
        return (StatusCode::NOT_FOUND, r#"{"error":"not found"}"#).into_response();
    }
    let (rid, received, bytes) = &reports[reports.len() - 1 - index];
    (
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::LAST_MODIFIED, received.clone()),
            (
                header::HeaderName::from_static("x-status-report-id"),
                rid.clone(),
            ),
            (
                header::HeaderName::from_static("x-status-report-index"),
                index.to_string(),
            ),
        ],
        bytes.clone(),
    )
        .into_response()
}

async fn serve(state: Shared) -> String {
    let app = Router::new()
        .route("/v1/declarations", axum::routing::put(put_declaration))
        .route("/v1/declarations/{id}", get(get_declaration))
        .route(
            "/v1/set-declarations/{set}",
            get(set_declarations).put(set_declarations),
        )
        .route(
            "/v1/enrollment-sets/{id}",
            get(enrollment_sets)
                .put(enrollment_sets)
                .delete(enrollment_sets),
        )
        .route("/v1/declaration-status/{id}", get(declaration_status))
        .route("/v1/status-report/{id}", get(status_report))
        .with_state(state);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}/")
}

fn enforcement(version: &str) -> Value {
    // DDM brief §2: the enforcement declaration's keys, as Apple's schema spells them.
    json!({
        "Type": "com.apple.configuration.softwareupdate.enforcement.specific",
        "Identifier": "lab.su.s1",
        "ServerToken": "ignored-by-kmfddm",
        "Payload": {"TargetOSVersion": version, "TargetLocalDateTime": "2026-12-04T19:00:00"}
    })
}

#[tokio::test]
async fn declarations_sets_and_enrollments_round_trip() {
    let state = Shared::default();
    let base = serve(state.clone()).await;
    let k = Kmfddm::new(&base, API_KEY, Duration::from_secs(5)).unwrap();
    assert_eq!(k.kind(), "kmfddm");

    let d = enforcement("18.6");
    assert_eq!(k.put_declaration(&d, false).await.unwrap(), Change::Changed);
    assert_eq!(
        k.put_declaration(&d, false).await.unwrap(),
        Change::Unchanged
    );
    assert_eq!(
        k.put_declaration(&enforcement("18.7"), false)
            .await
            .unwrap(),
        Change::Changed
    );
    let stored = k.declaration("lab.su.s1").await.unwrap().unwrap();
    assert_eq!(stored["Payload"]["TargetOSVersion"], "18.7");
    assert!(k.declaration("lab.absent").await.unwrap().is_none());

    assert!(k.set_declarations("lab-set").await.unwrap().is_empty());
    assert_eq!(
        k.add_to_set("lab-set", "lab.su.s1", false).await.unwrap(),
        Change::Changed
    );
    assert_eq!(
        k.add_to_set("lab-set", "lab.su.s1", false).await.unwrap(),
        Change::Unchanged
    );
    assert_eq!(k.set_declarations("lab-set").await.unwrap(), ["lab.su.s1"]);

    assert!(k.enrollment_sets(ENROLLMENT).await.unwrap().is_empty());
    assert_eq!(
        k.assign_set(ENROLLMENT, "lab-set").await.unwrap(),
        Change::Changed
    );
    assert_eq!(
        k.assign_set(ENROLLMENT, "lab-set").await.unwrap(),
        Change::Unchanged
    );
    assert_eq!(k.enrollment_sets(ENROLLMENT).await.unwrap(), ["lab-set"]);
    let st = k.declaration_status(ENROLLMENT).await.unwrap();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].identifier, "lab.su.s1");
    assert!(st[0].active);
    assert_eq!(st[0].valid, "valid");
    assert_eq!(st[0].server_token, "tok");
    assert_eq!(st[0].current, Some(true));

    assert_eq!(
        k.unassign_set(ENROLLMENT, "lab-set").await.unwrap(),
        Change::Changed
    );
    assert!(k.enrollment_sets(ENROLLMENT).await.unwrap().is_empty());

    // Building the set held the push back; assigning it is what notifies.
    let m = state.lock().unwrap().mutations.clone();
    for (what, quiet) in &m {
        let building = what.starts_with("PUT declarations") || what.starts_with("PUT set");
        assert_eq!(*quiet, building, "{what}");
    }
}

#[tokio::test]
async fn status_reports_come_back_raw_oldest_first_and_after_a_known_one() {
    let state = Shared::default();
    let base = serve(state.clone()).await;
    let raw: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            // Not re-serialised by the client: odd spacing survives.
            format!(
                "{{\"StatusItems\":{{\"softwareupdate\":{{\"install-state\" : \"s{i}\"}}}},\"Errors\":[]}}"
            )
            .into_bytes()
        })
        .collect();
    state.lock().unwrap().reports.insert(
        ENROLLMENT.into(),
        raw.iter()
            .enumerate()
            .map(|(i, b)| (format!("r{i}"), format!("t{i}"), b.clone()))
            .collect(),
    );
    let k = Kmfddm::new(&base, API_KEY, Duration::from_secs(5)).unwrap();
    let all = k.status_reports(ENROLLMENT, None).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["r0", "r1", "r2"]
    );
    assert_eq!(all[0].bytes, raw[0]);
    assert_eq!(all[2].received.as_deref(), Some("t2"));
    let newer = k.status_reports(ENROLLMENT, Some("r0")).await.unwrap();
    assert_eq!(
        newer.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["r1", "r2"]
    );
    assert!(
        k.status_reports(ENROLLMENT, Some("r2"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(k.status_reports("other", None).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_oversized_report_is_refused_as_garbage() {
    let state = Shared::default();
    let base = serve(state.clone()).await;
    state.lock().unwrap().reports.insert(
        ENROLLMENT.into(),
        vec![("big".into(), "t".into(), vec![b' '; MAX_BODY_BYTES + 1])],
    );
    let k = Kmfddm::new(&base, API_KEY, Duration::from_secs(5)).unwrap();
    match k.status_reports(ENROLLMENT, None).await {
        Err(BackendError::BadResponse { reason, .. }) => assert!(reason.contains("larger")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_key_is_refused_and_never_echoed() {
    let base = serve(Shared::default()).await;
    let k = Kmfddm::new(&base, "wrong-key-9q", Duration::from_secs(5)).unwrap();
    let e = k
        .put_declaration(&enforcement("18.6"), true)
        .await
        .unwrap_err();
    match &e {
        BackendError::Refused { status, .. } => assert_eq!(*status, 401),
        other => panic!("{other:?}"),
    }
    let shown = e.to_string();
    assert!(!shown.contains("wrong-key-9q") && !shown.contains(API_KEY));
}

#[tokio::test]
async fn a_server_that_is_not_there_is_not_connected() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let k = Kmfddm::new(&format!("http://{addr}/"), API_KEY, Duration::from_secs(2)).unwrap();
    match k.enrollment_sets(ENROLLMENT).await {
        Err(BackendError::NotConnected { .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn answers_that_are_not_the_api_json_are_bad_responses() {
    async fn garbage() -> &'static str {
        "<html>proxy error</html>"
    }
    let app = Router::new().route("/v1/enrollment-sets/{id}", get(garbage));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let k = Kmfddm::new(&format!("http://{addr}/"), API_KEY, Duration::from_secs(5)).unwrap();
    match k.enrollment_sets(ENROLLMENT).await {
        Err(BackendError::BadResponse { .. }) => {}
        other => panic!("{other:?}"),
    }
}

/// The harness's dose path over KMFDDM (`lab::mdm::ddm_doses::DdmDoses`): the declaration goes
/// in unchanged, a set named after it, the set assigned to the enrollment — which is the MDM's
/// record of the dose, read back before every retry. A repeated give changes nothing.
#[tokio::test]
async fn a_dose_given_through_kmfddm_is_one_declaration_one_set_one_assignment() {
    use lab::mdm::ddm_doses::DdmDoses;
    let state = Shared::default();
    let base = serve(state.clone()).await;
    let k = Kmfddm::new(&base, API_KEY, Duration::from_secs(5)).unwrap();
    let before = DdmDoses::enrollment(&k, ENROLLMENT).await.unwrap();
    assert!(before.declarations.is_empty());
    let mut d = enforcement("26.6.1");
    d["Identifier"] = json!("lab-ddm-1");
    let bytes = serde_json::to_vec(&d).unwrap();
    let given = k.give(ENROLLMENT, &bytes, "lab-ddm-1").await.unwrap();
    assert_eq!(given.pushed, None, "KMFDDM does not say whether it pushed");
    k.give(ENROLLMENT, &bytes, "lab-ddm-1").await.unwrap();
    let after = DdmDoses::enrollment(&k, ENROLLMENT).await.unwrap();
    assert_eq!(after.declarations, ["lab-ddm-1"]);
    assert_eq!(
        k.set_declarations("lab-ddm-1").await.unwrap(),
        ["lab-ddm-1"]
    );
    let stored = k.declaration("lab-ddm-1").await.unwrap().unwrap();
    assert_eq!(stored["Payload"]["TargetOSVersion"], "26.6.1");
    let st = state.lock().unwrap();
    assert_eq!(st.declarations.len(), 1);
    assert_eq!(st.enrollment_sets[ENROLLMENT].len(), 1);
}
