//! The live web view of a run (issue 15): a page at `/` with the bench's board
//! (`trial::live_view`, the same rows as the terminal view) and the swimlanes (the run's
//! `report.html` rendered from the journal so far, at `/report`), and a server-sent-event stream
//! at `/events` carrying the journal's events as they are appended.
//!
//! Read-only: it only reads the run folder (GET routes, no write action), so it serves a live
//! run (`lab run --watch`) and a finished one (`lab watch RUN_DIR`) alike. It binds to loopback
//! unless given another address, and its page needs no network (inline CSS and script). It runs
//! behind the limits every listener shares (`listen_limits`).

pub mod page;
pub mod tail;

use crate::journal::fold::Fold;
use crate::trial::live_view::{self, Limits};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the view listens when only a port is given, and by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9402";

/// How often the event stream looks for new journal lines.
const POLL: Duration = Duration::from_millis(200);
/// Journal lines read at a time for the event stream.
const BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "{0:?} is not an address to listen on: give host:port (e.g. 127.0.0.1:9402), or a port for loopback"
    )]
    BadAddress(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The address to listen on: `host:port`, or a bare port on loopback.
pub fn listen_addr(s: &str) -> Result<SocketAddr, WatchError> {
    let bad = || WatchError::BadAddress(s.to_string());
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        let port = port.parse::<u16>().map_err(|_| bad())?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| bad())
}

/// Bind the view's listener.
pub async fn bind(s: &str) -> Result<tokio::net::TcpListener, WatchError> {
    let addr = listen_addr(s)?;
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| WatchError::Bind { addr, source })
}

/// The run folder the view reads: known from the start (`lab watch`), or once the runner has
/// opened it (`lab run --watch`).
#[derive(Clone)]
pub struct Source(tokio::sync::watch::Receiver<Option<PathBuf>>);

impl Source {
    pub fn fixed(run_dir: &Path) -> Source {
        Source(tokio::sync::watch::channel(Some(run_dir.to_path_buf())).1)
    }

    /// A source told its folder later, through the sender.
    pub fn pending() -> (tokio::sync::watch::Sender<Option<PathBuf>>, Source) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        (tx, Source(rx))
    }

    fn run_dir(&self) -> Option<PathBuf> {
        self.0.borrow().clone()
    }
}

/// The view's routes (GET only).
pub fn router(src: Source) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/board", get(board))
        .route("/report", get(report))
        .route("/events", get(events))
        .with_state(src)
}

/// Serve the view on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, src: Source) {
    crate::listen_limits::serve_http(
        listener,
        router(src),
        crate::listen_limits::Limits::current(),
    )
    .await
}

/// What the board is drawn from: the journal read now, its complete length, and the limits of
/// the protocol in the run folder.
struct Snapshot {
    trial: String,
    board: String,
    valid_len: u64,
}

/// The protocol's follow-up limit, from the run folder's frozen copy (none if unreadable). It is
/// parsed, not checked: its feeds and fleet are the run's business, and it ran already.
fn limits(run_dir: &Path) -> Limits {
    let path = run_dir.join("protocol.yaml");
    let protocol = std::fs::read(&path)
        .ok()
        .and_then(|b| crate::input::text_of(&path, b).ok())
        .and_then(|t| crate::input::parse_yaml::<crate::trial::protocol::Protocol>(&path, &t).ok());
    Limits {
        follow_up_max_s: protocol.map(|p| p.follow_up.max_duration.0.as_secs_f64()),
    }
}

fn snapshot(run_dir: &Path) -> Result<Snapshot, String> {
    let loaded = crate::journal::read(&run_dir.join("journal.jsonl")).map_err(|e| e.to_string())?;
    let fold = Fold::of(&loaded.entries);
    // A finished run is shown as it ended; a live one at the wall clock.
    let now = match loaded.entries.last() {
        Some(e) if fold.finished => e.at.clone(),
        _ => chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    let b = live_view::board(&fold, limits(run_dir), &now);
    let seq = loaded.entries.last().map(|e| e.seq).unwrap_or(0);
    Ok(Snapshot {
        trial: b.header.trial_id.clone(),
        board: page::board_html(&b, seq),
        valid_len: loaded.valid_len,
    })
}

/// Run `f` on the run folder off the async threads (the fold is not `Send`).
async fn with_run_dir<T: Send + 'static>(
    src: &Source,
    f: impl FnOnce(&Path) -> T + Send + 'static,
) -> Option<T> {
    let dir = src.run_dir()?;
    tokio::task::spawn_blocking(move || f(&dir)).await.ok()
}

fn unavailable(why: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the journal cannot be read: {why}\n"),
    )
        .into_response()
}

async fn index(State(src): State<Source>) -> Response {
    match with_run_dir(&src, snapshot).await {
        None => Html(page::waiting()).into_response(),
        Some(Ok(s)) => Html(page::page(&s.trial, &s.board, s.valid_len)).into_response(),
        Some(Err(e)) => unavailable(e),
    }
}

async fn board(State(src): State<Source>) -> Response {
    match with_run_dir(&src, snapshot).await {
        None => Html("<p>Waiting for the run folder…</p>".to_string()).into_response(),
        Some(Ok(s)) => Html(s.board).into_response(),
        Some(Err(e)) => unavailable(e),
    }
}

/// The run's report.html as the journal stands: its swimlanes are the page's.
async fn report(State(src): State<Source>) -> Response {
    let html = with_run_dir(&src, |dir| {
        let entries = crate::journal::read(&dir.join("journal.jsonl"))
            .map_err(|e| e.to_string())?
            .entries;
        let links = crate::report::anomaly_links(&entries);
        Ok::<_, String>(crate::report::html::render(&entries, &links))
    })
    .await;
    match html {
        None => Html("<p>Waiting for the run folder…</p>".to_string()).into_response(),
        Some(Ok(h)) => Html(h).into_response(),
        Some(Err(e)) => unavailable(e),
    }
}

#[derive(serde::Deserialize)]
struct From {
    from: Option<u64>,
}

/// The journal's events from a byte offset on (`?from=`, or the `Last-Event-ID` a reconnecting
/// browser sends; else the whole journal), each as one `data:` line holding the journal line,
/// its `id:` the offset after it. Polls the file: it works the same on a run of this process, of
/// another process, or one finished long ago.
async fn events(State(src): State<Source>, headers: HeaderMap, Query(q): Query<From>) -> Response {
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let start = last_id.or(q.from).unwrap_or(0);
    let stream = futures_util::stream::unfold(
        (src, start, VecDeque::<tail::Line>::new()),
        |(src, mut offset, mut buf)| async move {
            loop {
                if let Some(l) = buf.pop_front() {
                    let next = l.offset + l.text.len() as u64 + 1;
                    let ev = SseEvent::default().id(next.to_string()).data(l.text);
                    return Some((Ok::<_, std::convert::Infallible>(ev), (src, offset, buf)));
                }
                let read = with_run_dir(&src, move |dir| {
                    tail::read_from(&dir.join("journal.jsonl"), offset, BATCH)
                })
                .await;
                match read {
                    Some(Ok((lines, end))) if !lines.is_empty() => {
                        offset = end;
                        buf.extend(lines);
                    }
                    _ => tokio::time::sleep(POLL).await,
                }
            }
        },
    );
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_follow_up_limit_is_read_from_the_frozen_protocol_alone() {
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/rehearsal");
        let dir = tempfile::tempdir().unwrap();
        // Without its fleet and feeds beside it (a copied run folder).
        std::fs::copy(
            golden.join("protocol.yaml"),
            dir.path().join("protocol.yaml"),
        )
        .unwrap();
        assert_eq!(limits(dir.path()).follow_up_max_s, Some(7200.0));
        assert_eq!(limits(&dir.path().join("none")).follow_up_max_s, None);
    }

    #[test]
    fn a_bare_port_is_loopback_and_other_hosts_must_be_named() {
        assert_eq!(listen_addr("9402").unwrap().to_string(), "127.0.0.1:9402");
        assert_eq!(
            listen_addr("localhost:80").unwrap().to_string(),
            "127.0.0.1:80"
        );
        assert_eq!(
            listen_addr("0.0.0.0:9402").unwrap().to_string(),
            "0.0.0.0:9402"
        );
        assert_eq!(listen_addr("[::1]:1").unwrap().to_string(), "[::1]:1");
        assert!(matches!(
            listen_addr("nowhere"),
            Err(WatchError::BadAddress(_))
        ));
    }
}
