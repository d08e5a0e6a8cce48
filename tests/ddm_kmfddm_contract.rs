//! Contract test of the KMFDDM client (`lab::mdm::kmfddm`) against a double that speaks
//! KMFDDM's documented API (DDM brief §6; `jessepeterson/kmfddm` `http/api/v1.go`): HTTP Basic
//! user `kmfddm`, `PUT /v1/declarations` answering 204 when new or changed and 304 when not,
//! set and enrollment-set associations with `?declaration=` / `?set=`, `nonotify=true`,
//! `POST /v1/notify?id=`, and `GET /v1/status-report/{id}?index=N` with the raw report and its
//! `X-Status-Report-*` headers (404 when there is none).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine;
use lab::mdm::ddm::declaration::LocalDateTime;
use lab::mdm::ddm::{Declaration, Enforcement};
use lab::mdm::kmfddm::{Change, Kmfddm, KmfddmError};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "kmfddm-key-4b1d-never-leak";
const ENROLLMENT: &str = "00008110-000A1B2C3D4E5F60";

#[derive(Default)]
struct Double {
    /// id → (token, JSON)
    declarations: BTreeMap<String, (String, Vec<u8>)>,
    sets: BTreeMap<String, BTreeSet<String>>,
    enrollment_sets: BTreeMap<String, BTreeSet<String>>,
    notified: Vec<String>,
    reports: BTreeMap<String, Vec<Vec<u8>>>,
}

type Shared = Arc<Mutex<Double>>;

fn authorised(h: &HeaderMap) -> bool {
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("kmfddm:{KEY}"))
    );
    h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(want.as_str())
}

fn changed(c: bool) -> Response {
    if c {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_MODIFIED
    }
    .into_response()
}

async fn put_declaration(
    State(s): State<Shared>,
    h: HeaderMap,
    q: Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if !authorised(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Ok(d) = Declaration::parse(&body, false) else {
        return (StatusCode::BAD_REQUEST, "bad declaration").into_response();
    };
    // KMFDDM computes the token itself; any supplied value is ignored.
    let token = d.content_token();
    let mut g = s.lock().unwrap();
    let c = g.declarations.get(&d.identifier).map(|x| &x.0) != Some(&token);
    g.declarations
        .insert(d.identifier.clone(), (token, body.to_vec()));
    if c && q.get("nonotify").is_none() {
        g.notified.push(format!("declaration:{}", d.identifier));
    }
    changed(c)
}

async fn delete_declaration(
    State(s): State<Shared>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !authorised(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    changed(s.lock().unwrap().declarations.remove(&id).is_some())
}

async fn set_declarations(
    State(s): State<Shared>,
    h: HeaderMap,
    Path(set): Path<String>,
    q: Query<HashMap<String, String>>,
    method: axum::http::Method,
) -> Response {
    if !authorised(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(d) = q.get("declaration") else {
        return (StatusCode::BAD_REQUEST, "no declaration").into_response();
    };
    let mut g = s.lock().unwrap();
    let e = g.sets.entry(set).or_default();
    changed(if method == axum::http::Method::PUT {
        e.insert(d.clone())
    } else {
        e.remove(d)
    })
}

async fn enrollment_sets(
    State(s): State<Shared>,
    h: HeaderMap,
    Path(id): Path<String>,
    q: Query<HashMap<String, String>>,
    method: axum::http::Method,
) -> Response {
    if !authorised(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(set) = q.get("set") else {
        return (StatusCode::BAD_REQUEST, "no set").into_response();
    };
    let mut g = s.lock().unwrap();
    let c = {
        let e = g.enrollment_sets.entry(id.clone()).or_default();
        if method == axum::http::Method::PUT {
            e.insert(set.clone())
        } else {
            e.remove(set)
        }
    };
    if c && q.get("nonotify").is_none() {
        g.notified.push(id);
    }
    changed(c)
}

async fn notify(
    State(s): State<Shared>,
    h: HeaderMap,
    q: Query<HashMap<String, String>>,
) -> Response {
    if !authorised(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match q.get("id") {
        Some(id) => {
            s.lock().unwrap().notified.push(id.clone());
            StatusCode::NO_CONTENT.into_response()
        }
        None => (StatusCode::BAD_REQUEST, "no id").into_response(),
    }
}

async fn status_report(
    State(s): State<Shared>,
    h: HeaderMap,
    Path(id): Path<String>,
    q: Query<HashMap<String, String>>,
) -> Response {
    if !authorised(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let index: usize = q.get("index").and_then(|i| i.parse().ok()).unwrap_or(0);
    let g = s.lock().unwrap();
    let Some(all) = g.reports.get(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // 0 = newest.
    match all.iter().rev().nth(index) {
        Some(raw) => (
            [
                ("X-Status-Report-ID", format!("sr-{}", all.len() - index)),
                ("X-Status-Report-Index", index.to_string()),
            ],
            raw.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn declaration_status(
    State(s): State<Shared>,
    h: HeaderMap,
    Path(ids): Path<String>,
) -> Response {
    if !authorised(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let g = s.lock().unwrap();
    let mut out = serde_json::Map::new();
    for id in ids.split(',') {
        let sets = g.enrollment_sets.get(id).cloned().unwrap_or_default();
        let decls: Vec<serde_json::Value> = sets
            .iter()
            .flat_map(|set| g.sets.get(set).cloned().unwrap_or_default())
            .filter_map(|d| g.declarations.get(&d).map(|(t, _)| (d, t.clone())))
            .map(|(d, t)| serde_json::json!({"identifier": d, "active": true, "valid": "valid", "server-token": t, "current": true}))
            .collect();
        out.insert(id.to_string(), decls.into());
    }
    axum::Json(serde_json::Value::Object(out)).into_response()
}

async fn double(state: Shared) -> String {
    let app = Router::new()
        .route("/v1/declarations", put(put_declaration))
        .route(
            "/v1/declarations/{id}",
            axum::routing::delete(delete_declaration),
        )
        .route(
            "/v1/set-declarations/{set}",
            put(set_declarations).delete(set_declarations),
        )
        .route(
            "/v1/enrollment-sets/{id}",
            put(enrollment_sets).delete(enrollment_sets),
        )
        .route("/v1/notify", post(notify))
        .route("/v1/status-report/{id}", get(status_report))
        .route("/v1/declaration-status/{ids}", get(declaration_status))
        .with_state(state);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

fn enforcement(version: &str) -> Declaration {
    Enforcement {
        target_os_version: version.into(),
        target_build_version: Some("23G83".into()),
        target_local_date_time: LocalDateTime::parse("2026-12-05T19:00:00").unwrap(),
        details_url: None,
    }
    .declaration("lab.su.target")
}

#[tokio::test]
async fn the_kmfddm_client_puts_assigns_notifies_and_reads_raw_reports() {
    let state: Shared = Arc::default();
    let base = double(state.clone()).await;
    let k = Kmfddm::new(&format!("{base}/"), KEY, Duration::from_secs(5));

    assert_eq!(
        k.put_declaration(&enforcement("26.6.1"), false)
            .await
            .unwrap(),
        Change::Changed
    );
    assert_eq!(
        k.put_declaration(&enforcement("26.6.1"), false)
            .await
            .unwrap(),
        Change::Unchanged
    );
    assert_eq!(
        k.add_to_set("lab.trial", "lab.su.target", false)
            .await
            .unwrap(),
        Change::Changed
    );
    assert_eq!(
        k.add_to_set("lab.trial", "lab.su.target", false)
            .await
            .unwrap(),
        Change::Unchanged
    );
    assert!(
        state.lock().unwrap().notified.is_empty(),
        "nonotify=true was sent"
    );
    assert_eq!(
        k.assign_set(ENROLLMENT, "lab.trial", true).await.unwrap(),
        Change::Changed
    );
    assert_eq!(state.lock().unwrap().notified, [ENROLLMENT]);
    k.notify(ENROLLMENT).await.unwrap();
    assert_eq!(state.lock().unwrap().notified.len(), 2);
    let st = k.declaration_status(&[ENROLLMENT]).await.unwrap();
    assert_eq!(st[ENROLLMENT][0]["identifier"], "lab.su.target");
    // The declaration KMFDDM stored is the one lab built, key names and all.
    let stored = state.lock().unwrap().declarations["lab.su.target"]
        .1
        .clone();
    let d = Declaration::parse(&stored, true).unwrap();
    assert_eq!(d.payload["TargetOSVersion"], "26.6.1");
    assert_eq!(d.payload["TargetLocalDateTime"], "2026-12-05T19:00:00");

    assert_eq!(k.status_report(ENROLLMENT, 0).await.unwrap(), None);
    let r1 = br#"{"StatusItems":{"softwareupdate":{"install-state":"downloading"}},"Errors":[]}"#
        .to_vec();
    let r2 =
        br#"{"StatusItems":{"softwareupdate":{"install-state":"prepared"}},"Errors":[]}"#.to_vec();
    state
        .lock()
        .unwrap()
        .reports
        .insert(ENROLLMENT.into(), vec![r1.clone(), r2.clone()]);
    let newest = k.status_report(ENROLLMENT, 0).await.unwrap().unwrap();
    assert_eq!(newest.raw, r2, "byte for byte");
    assert_eq!(newest.index.as_deref(), Some("0"));
    assert_eq!(
        k.status_report(ENROLLMENT, 1).await.unwrap().unwrap().raw,
        r1
    );
    assert_eq!(k.status_report(ENROLLMENT, 2).await.unwrap(), None);

    assert_eq!(
        k.unassign_set(ENROLLMENT, "lab.trial", false)
            .await
            .unwrap(),
        Change::Changed
    );
    assert_eq!(
        k.remove_from_set("lab.trial", "lab.su.target", false)
            .await
            .unwrap(),
        Change::Changed
    );
    assert_eq!(
        k.delete_declaration("lab.su.target").await.unwrap(),
        Change::Changed
    );
    assert_eq!(
        k.delete_declaration("lab.su.target").await.unwrap(),
        Change::Unchanged
    );
}

#[tokio::test]
async fn a_wrong_key_is_an_error_that_does_not_leak_the_key() {
    let base = double(Arc::default()).await;
    let k = Kmfddm::new(&base, "wrong-key-never-leak", Duration::from_secs(5));
    let e = k
        .put_declaration(&enforcement("26.6.1"), true)
        .await
        .unwrap_err();
    assert!(matches!(e, KmfddmError::Status { status: 401, .. }), "{e}");
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains("wrong-key-never-leak") && !text.contains(KEY),
        "{text}"
    );
}
