//! The harness's webhook listener: receives MicroMDM-format events from NanoMDM, MicroMDM or
//! the embedded server, verifies the HMAC when a key is set, and keeps every event (raw) per
//! enrollment. Binds to loopback unless told otherwise.

use super::access::{MdmRefusal, WebhookTally, webhook_refusal};
use super::webhook::{self, WebhookEvent};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One event as received.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    pub event: WebhookEvent,
    /// The JSON body exactly as posted.
    pub body: Vec<u8>,
    pub received_at: String,
}

/// A body that was refused (bad HMAC, not JSON), kept as evidence.
#[derive(Debug, Clone)]
pub struct RefusedEvent {
    pub reason: String,
    pub body: Vec<u8>,
}

#[derive(Default)]
pub struct Inbox {
    events: Mutex<Vec<ReceivedEvent>>,
    refused: Mutex<Vec<RefusedEvent>>,
    /// Accepted and signature-refused webhooks, for the stop rule of `mdm::access`.
    tally: Mutex<WebhookTally>,
    notify: tokio::sync::Notify,
}

impl Inbox {
    pub fn events(&self) -> Vec<ReceivedEvent> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn refused(&self) -> Vec<RefusedEvent> {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn tally(&self) -> WebhookTally {
        self.tally.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The MDM's webhooks are refused for their signature (`mdm::access::webhook_refusal`):
    /// the run must stop, no answer can reach it.
    pub fn signature_refusal(&self) -> Option<MdmRefusal> {
        webhook_refusal(&self.tally())
    }

    /// Wait until a new event arrives (or `timeout`).
    pub async fn wait(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.notify.notified()).await;
    }
}

#[derive(Clone)]
struct St {
    inbox: Arc<Inbox>,
    hmac_key: Option<Arc<Vec<u8>>>,
}

pub struct WebhookReceiver {
    pub addr: SocketAddr,
    pub inbox: Arc<Inbox>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WebhookReceiver {
    pub fn url(&self) -> String {
        format!("http://{}/webhook", self.addr)
    }

    pub async fn start(listen: &str, hmac_key: Option<Vec<u8>>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let inbox = Arc::new(Inbox::default());
        let st = St {
            inbox: inbox.clone(),
            hmac_key: hmac_key.map(Arc::new),
        };
        let app = Router::new()
            .route("/webhook", post(receive))
            .route("/", post(receive))
            .with_state(st);
        let task = tokio::spawn(async move {
            crate::listen_limits::serve_http(
                listener,
                app,
                crate::listen_limits::Limits::current(),
            )
            .await;
        });
        Ok(WebhookReceiver { addr, inbox, task })
    }
}

async fn receive(State(st): State<St>, headers: HeaderMap, body: Bytes) -> Response {
    let refuse = |reason: String, code: StatusCode| {
        st.inbox
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(RefusedEvent {
                reason: reason.clone(),
                body: body.to_vec(),
            });
        (code, reason).into_response()
    };
    if let Some(key) = &st.hmac_key {
        let sig = headers
            .get(webhook::HMAC_HEADER)
            .and_then(|v| v.to_str().ok());
        let bad = match sig {
            None => Some("missing X-Hmac-Signature"),
            Some(s) if !webhook::verify_hmac(key, &body, s) => Some("bad X-Hmac-Signature"),
            _ => None,
        };
        if let Some(reason) = bad {
            st.inbox
                .tally
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .refuse_signature(reason);
            return refuse(reason.into(), StatusCode::UNAUTHORIZED);
        }
    }
    let event: WebhookEvent = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => return refuse(format!("not a webhook event: {e}"), StatusCode::BAD_REQUEST),
    };
    st.inbox
        .events
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(ReceivedEvent {
            event,
            body: body.to_vec(),
            received_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
    st.inbox
        .tally
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .accept();
    st.inbox.notify.notify_waiters();
    StatusCode::OK.into_response()
}
