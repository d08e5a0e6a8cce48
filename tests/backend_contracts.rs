//! Contract tests for the harness's three MDM backends (`embedded`, `nanomdm`, `micromdm`),
//! each against a server speaking its documented API (MDM brief §0.6–0.9, §5.1, §5.2):
//!
//! - `embedded` and `nanomdm`: lab's embedded server, which speaks NanoMDM's enqueue API and
//!   posts NanoMDM's webhook (signed with `X-Hmac-Signature`) to the harness's receiver;
//! - `micromdm`: a MicroMDM v1 test double defined here (`POST /v1/commands`, HTTP 201,
//!   `{"error": ...}`, a `/mdm/connect` device endpoint that posts MicroMDM webhook events:
//!   no `ids`, `"command_uuid": ""` on Idle, `"url_params": null`, pretty-printed JSON);
//! - small fault servers for the NanoMDM answers the embedded server never gives.
//!
//! The contract is written once ([`contract`]) over `&dyn MdmBackend` and run per backend.

mod common;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{ca, device_cert};
use lab::mdm::backend::{BackendError, CommandResult, MdmBackend, MicroMdm, NanoMdm};
use lab::mdm::webhook_receiver::WebhookReceiver;
use lab::mdm::{
    CHECKIN_CONTENT_TYPE, COMMAND_CONTENT_TYPE, CheckinMessage, Command, InstallAction, UpdateItem,
    hmac_signature, parse_envelope,
};
use lab::mdm_server::identity::{IdentityCa, cert_header_value};
use lab::mdm_server::push::NoPush;
use lab::mdm_server::{ServerConfig, Store};
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// Distinctive, so that a leak into an error message is caught.
const API_KEY: &str = "api-key-7f3a9c-must-never-leak";
const HMAC_KEY: &[u8] = b"contract-webhook-hmac-key";
const CERT_HEADER: &str = "X-Client-Cert";
const UDID: &str = "00008110-000A1B2C3D4E5F60";
/// Client timeout for the fault cases; slow servers answer far later.
const SHORT: Duration = Duration::from_millis(500);
const SLOW: Duration = Duration::from_secs(5);

// ------------------------------------------------------------------ identities (from mdm_server.rs)

// ------------------------------------------------------------------ scripted device

/// A scripted device: raw HTTP PUTs of check-ins and reports to an MDM's device endpoint.
struct Device {
    udid: String,
    url: String,
    cert: Option<Vec<u8>>,
    http: reqwest::Client,
}

impl Device {
    fn new(udid: &str, url: String, cert: Option<Vec<u8>>) -> Device {
        Device {
            udid: udid.into(),
            url,
            cert,
            http: lab::http_client::client(Duration::from_secs(10)),
        }
    }

    async fn put(&self, ct: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let mut req = self.http.put(&self.url).header("content-type", ct);
        if let Some(c) = &self.cert {
            req = req.header(CERT_HEADER, cert_header_value(c));
        }
        let r = req.body(body).send().await.unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }

    async fn enroll(&self) {
        let auth = CheckinMessage::Authenticate {
            topic: "com.apple.mgmt.External.test".into(),
            udid: self.udid.clone(),
            os_version: Some("17.5.1".into()),
            build_version: Some("21F90".into()),
            product_name: Some("iPhone12,1".into()),
            serial_number: None,
            device_name: None,
        };
        assert_eq!(self.put(CHECKIN_CONTENT_TYPE, auth.to_plist()).await.0, 200);
        let tu = CheckinMessage::TokenUpdate {
            topic: "com.apple.mgmt.External.test".into(),
            udid: self.udid.clone(),
            token: self.udid.as_bytes().to_vec(),
            push_magic: format!("magic-{}", self.udid),
            unlock_token: None,
            awaiting_configuration: false,
        };
        assert_eq!(self.put(CHECKIN_CONTENT_TYPE, tu.to_plist()).await.0, 200);
    }

    /// PUT a report; the MDM must answer 200. Returns the next command (empty: none).
    async fn report(&self, raw: &[u8]) -> Vec<u8> {
        let (code, body) = self.put(COMMAND_CONTENT_TYPE, raw.to_vec()).await;
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        body
    }

    async fn idle(&self) -> Vec<u8> {
        self.report(&raw_report(&self.udid, None, "Idle", "")).await
    }
}

/// A device report written by hand, the way a device formats it (tabs, a non-ASCII string),
/// with no RequestType (MDM brief §0.6). Byte-exactness of the stored copy is checked against
/// these bytes.
fn raw_report(udid: &str, uuid: Option<&str>, status: &str, extra: &str) -> Vec<u8> {
    let uuid = uuid
        .map(|u| format!("\t<key>CommandUUID</key>\n\t<string>{u}</string>\n"))
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST \
         1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\">\n\
         <dict>\n{uuid}\t<key>Status</key>\n\t<string>{status}</string>\n\t<key>UDID</key>\n\t\
         <string>{udid}</string>\n{extra}</dict>\n</plist>\n"
    )
    .into_bytes()
}

const UPDATE_RESULTS: &str = "\t<key>UpdateResults</key>\n\t<array>\n\t\t<dict>\n\t\t\t\
    <key>InstallAction</key>\n\t\t\t<string>Default</string>\n\t\t\t<key>ProductKey</key>\n\t\t\t\
    <string>iOSUpdate21G93</string>\n\t\t\t<key>Status</key>\n\t\t\t<string>Idle</string>\n\t\t\
    </dict>\n\t</array>\n\t<key>Note</key>\n\t<string>Grüße, Ωmega</string>\n";

const OS_UPDATE_STATUS: &str = "\t<key>OSUpdateStatus</key>\n\t<array>\n\t\t<dict>\n\t\t\t\
    <key>ProductKey</key>\n\t\t\t<string>iOSUpdate21G93</string>\n\t\t\t<key>IsDownloaded</key>\n\
    \t\t\t<integer>1</integer>\n\t\t\t<key>DownloadPercentComplete</key>\n\t\t\t<real>1</real>\n\
    \t\t\t<key>Status</key>\n\t\t\t<string>Idle</string>\n\t\t</dict>\n\t</array>\n";

fn schedule() -> Command {
    Command::ScheduleOSUpdate {
        updates: vec![UpdateItem {
            product_key: Some("iOSUpdate21G93".into()),
            product_version: Some("17.6.1".into()),
            install_action: InstallAction::Default,
        }],
    }
}

// ------------------------------------------------------------------ servers that can misbehave

/// A listener that, while `drop_all` is set, accepts connections, reads the request and closes
/// the socket without answering.
struct DroppingListener {
    inner: TcpListener,
    drop_all: Arc<AtomicBool>,
}

impl axum::serve::Listener for DroppingListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Ok((mut s, a)) = self.inner.accept().await else {
                continue;
            };
            if !self.drop_all.load(Ordering::SeqCst) {
                return (s, a);
            }
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let _ = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await;
                drop(s);
            });
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

struct Served {
    addr: SocketAddr,
    drop_all: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(app: Router) -> Served {
    let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let drop_all = Arc::new(AtomicBool::new(false));
    let listener = DroppingListener {
        inner,
        drop_all: drop_all.clone(),
    };
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Served {
        addr,
        drop_all,
        task,
    }
}

/// A URL where nothing listens.
async fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

fn basic_ok(headers: &HeaderMap, user: &str, key: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| B64.decode(b.trim()).ok())
        .is_some_and(|d| d == format!("{user}:{key}").as_bytes())
}

fn json_reply(code: u16, v: serde_json::Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

// ------------------------------------------------------------------ MicroMDM v1 test double

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MicroFault {
    None,
    /// HTTP 500 `{"error": ...}` (MicroMDM's default error code).
    Error500,
    /// HTTP 201 with a body that is not JSON.
    NotJson,
    /// Answers after [`SLOW`].
    Slow,
    /// Closes the connection without answering.
    Drop,
    /// HTTP 201 naming a CommandUUID other than the one sent.
    OtherUuid,
}

struct Queued {
    uuid: String,
    request_type: String,
    not_now: bool,
}

struct MicroState {
    api_key: String,
    webhook_url: String,
    hmac_key: Option<Vec<u8>>,
    fault: Mutex<MicroFault>,
    queues: Mutex<HashMap<String, Vec<Queued>>>,
    /// Every `POST /v1/commands` body accepted.
    received: Mutex<Vec<serde_json::Value>>,
    http: reqwest::Client,
}

struct MicroMdmDouble {
    served: Served,
    st: Arc<MicroState>,
}

impl MicroMdmDouble {
    async fn start(webhook_url: &str, hmac_key: Option<&[u8]>) -> MicroMdmDouble {
        let st = Arc::new(MicroState {
            api_key: API_KEY.into(),
            webhook_url: webhook_url.into(),
            hmac_key: hmac_key.map(<[u8]>::to_vec),
            fault: Mutex::new(MicroFault::None),
            queues: Mutex::default(),
            received: Mutex::default(),
            http: lab::http_client::client(Duration::from_secs(5)),
        });
        let app = Router::new()
            .route("/v1/commands", post(micro_new_command))
            .route("/mdm/connect", any(micro_connect))
            .route("/mdm/checkin", any(|| async { StatusCode::OK }))
            .with_state(st.clone());
        MicroMdmDouble {
            served: serve(app).await,
            st,
        }
    }

    fn url(&self) -> String {
        self.served.url()
    }

    fn set_fault(&self, f: MicroFault) {
        *self.st.fault.lock().unwrap() = f;
        self.served
            .drop_all
            .store(f == MicroFault::Drop, Ordering::SeqCst);
    }

    fn received(&self) -> Vec<serde_json::Value> {
        self.st.received.lock().unwrap().clone()
    }
}

/// `POST /v1/commands` (MDM brief §5.2; micromdm `platform/command/new_command.go`).
async fn micro_new_command(
    State(st): State<Arc<MicroState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !basic_ok(&headers, "micromdm", &st.api_key) {
        return (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
    }
    let fault = *st.fault.lock().unwrap();
    match fault {
        MicroFault::Error500 => {
            return json_reply(
                500,
                json!({"error": "publish mdm command on topic: mdm.Command: bolt: database not open"}),
            );
        }
        MicroFault::NotJson => {
            return (StatusCode::CREATED, "<html><body>Created</body></html>").into_response();
        }
        MicroFault::Slow => tokio::time::sleep(SLOW).await,
        MicroFault::None | MicroFault::Drop | MicroFault::OtherUuid => {}
    }
    let req: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => return json_reply(400, json!({"error": "request body is not a JSON object"})),
        Err(e) => return json_reply(400, json!({"error": format!("decode JSON: {e}")})),
    };
    let udid = req["udid"].as_str().unwrap_or("");
    let request_type = req["request_type"].as_str().unwrap_or("");
    if udid.is_empty() || request_type.is_empty() {
        return json_reply(
            500,
            json!({"error": "request must contain UDID of the device"}),
        );
    }
    if request_type == "ScheduleOSUpdate" {
        let ok = req["updates"].as_array().is_some_and(|u| {
            !u.is_empty() && u.iter().all(|i| i["install_action"].as_str().is_some())
        });
        if !ok {
            return json_reply(
                500,
                json!({"error": "updates[].install_action is required"}),
            );
        }
    }
    let uuid = match req["command_uuid"].as_str() {
        Some(u) if !u.trim().is_empty() => u.to_string(),
        _ => format!("micro-{}", st.received.lock().unwrap().len()),
    };
    let mut command = req.clone();
    let obj = command.as_object_mut().unwrap();
    obj.remove("udid");
    obj.remove("command_uuid");
    st.queues
        .lock()
        .unwrap()
        .entry(udid.to_string())
        .or_default()
        .push(Queued {
            uuid: uuid.clone(),
            request_type: request_type.to_string(),
            not_now: false,
        });
    st.received.lock().unwrap().push(req.clone());
    let echoed = if fault == MicroFault::OtherUuid {
        "5F1C0E4A-0000-4000-8000-000000000000".to_string()
    } else {
        uuid
    };
    json_reply(
        201,
        json!({"payload": {"command_uuid": echoed, "command": command}}),
    )
}

/// The device side, `PUT /mdm/connect`: queue bookkeeping as MicroMDM does it, then the
/// MicroMDM webhook (`workflow/webhook/acknowledge.go`: `command_uuid` has no `omitempty`, so
/// Idle carries `""`; `url_params` is `null` without query parameters; no `ids`).
async fn micro_connect(State(st): State<Arc<MicroState>>, body: Bytes) -> Response {
    let Ok(plist::Value::Dictionary(d)) = plist::from_bytes::<plist::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "bad plist").into_response();
    };
    let s = |k: &str| {
        d.get(k)
            .and_then(|v| v.as_string())
            .unwrap_or("")
            .to_string()
    };
    let (udid, status, cmd_uuid) = (s("UDID"), s("Status"), s("CommandUUID"));
    let event = json!({
        "topic": "mdm.Connect",
        // A fresh id per event, as MicroMDM's uuid.NewV4() (the harness dedupes on it).
        "event_id": format!("ev-{}", NEXT_EVENT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)),
        "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "acknowledge_event": {
            "udid": udid,
            "status": status,
            "command_uuid": cmd_uuid,
            "url_params": null,
            "raw_payload": B64.encode(&body),
        }
    });
    post_signed(&st.http, &st.webhook_url, st.hmac_key.as_deref(), &event).await;
    let next = {
        let mut queues = st.queues.lock().unwrap();
        let q = queues.entry(udid).or_default();
        if !cmd_uuid.is_empty() {
            if status == "NotNow" {
                q.iter_mut()
                    .filter(|c| c.uuid == cmd_uuid)
                    .for_each(|c| c.not_now = true);
            } else {
                q.retain(|c| c.uuid != cmd_uuid);
            }
        }
        q.iter()
            .find(|c| status != "NotNow" || !c.not_now)
            .map(|c| (c.uuid.clone(), c.request_type.clone()))
    };
    match next {
        None => StatusCode::OK.into_response(),
        Some((uuid, rt)) => {
            let mut c = plist::Dictionary::new();
            c.insert("RequestType".into(), rt.into());
            let mut env = plist::Dictionary::new();
            env.insert("Command".into(), plist::Value::Dictionary(c));
            env.insert("CommandUUID".into(), uuid.into());
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/xml")],
                lab::plist_util::dict_to_xml(env),
            )
                .into_response()
        }
    }
}

/// Post a webhook body as MicroMDM does (pretty-printed JSON), signed when a key is set.
/// Returns the receiver's HTTP status.
async fn post_signed(
    http: &reqwest::Client,
    url: &str,
    key: Option<&[u8]>,
    event: &serde_json::Value,
) -> u16 {
    let body = serde_json::to_vec_pretty(event).unwrap();
    post_raw(http, url, body, None, key).await
}

/// Post `body` to `url` with `signature` if given, else signed with `key` if given.
async fn post_raw(
    http: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    signature: Option<String>,
    key: Option<&[u8]>,
) -> u16 {
    let mut req = http
        .post(url)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8");
    if let Some(s) = signature.or_else(|| key.map(|k| hmac_signature(k, &body))) {
        req = req.header("X-Hmac-Signature", s);
    }
    req.body(body).send().await.unwrap().status().as_u16()
}

// ------------------------------------------------------------------ NanoMDM fault server

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NanoFault {
    /// 500 `{"push_error", "command_uuid", "request_type"}`: queued, not pushed (§0.8).
    PushError,
    /// 500 `{"command_error": ...}`.
    CommandError,
    /// 207, our id pushed, another id not.
    MultiStatusOursPushed,
    /// 207, our id's push failed.
    MultiStatusOursFailed,
    /// 200 with a body that is not JSON.
    NotJson,
    /// 200 naming another CommandUUID.
    OtherUuid,
    /// Answers after [`SLOW`].
    Slow,
    /// Closes the connection without answering.
    Drop,
}

/// Answers every request as a NanoMDM in trouble would; checks Basic auth (`nanomdm`), and
/// answers 401 `Unauthorized` (NanoMDM's text, not JSON) to a wrong key.
async fn nano_fault(fault: NanoFault) -> Served {
    let app = Router::new()
        .fallback(any(nano_fault_handler))
        .with_state(fault);
    let s = serve(app).await;
    s.drop_all.store(fault == NanoFault::Drop, Ordering::SeqCst);
    s
}

async fn nano_fault_handler(
    State(fault): State<NanoFault>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !basic_ok(&headers, "nanomdm", API_KEY) {
        return (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
    }
    let id = uri.path().rsplit('/').next().unwrap_or("").to_string();
    let (uuid, rt) = parse_envelope(&body)
        .map(|e| (e.command_uuid, e.request_type))
        .unwrap_or_default();
    match fault {
        NanoFault::PushError => json_reply(
            500,
            json!({"push_error": "retrieving push cert for topic \"\": no push cert", "command_uuid": uuid, "request_type": rt}),
        ),
        NanoFault::CommandError => json_reply(
            500,
            json!({"command_error": "decoding command: invalid command"}),
        ),
        NanoFault::MultiStatusOursPushed => json_reply(
            207,
            json!({"status": {id: {"push_result": "apns-1"}, "other-id": {"push_error": "no push info"}},
                   "command_uuid": uuid, "request_type": rt}),
        ),
        NanoFault::MultiStatusOursFailed => json_reply(
            207,
            json!({"status": {id: {"push_error": "BadDeviceToken"}, "other-id": {"push_result": "apns-2"}},
                   "command_uuid": uuid, "request_type": rt}),
        ),
        NanoFault::NotJson => (StatusCode::OK, "<html>queued</html>").into_response(),
        NanoFault::OtherUuid => json_reply(
            200,
            json!({"status": {id: {"push_result": "apns-1"}}, "command_uuid": "someone-else", "request_type": rt}),
        ),
        NanoFault::Slow => {
            tokio::time::sleep(SLOW).await;
            json_reply(200, json!({"command_uuid": uuid, "request_type": rt}))
        }
        NanoFault::Drop => StatusCode::OK.into_response(),
    }
}

// ------------------------------------------------------------------ environments

struct Env {
    name: &'static str,
    backend: Box<dyn MdmBackend>,
    device: Device,
    receiver: WebhookReceiver,
    /// `embedded` reads the server's history API (and sees deliveries); the others read webhooks.
    counts_deliveries: bool,
    micro: Option<MicroMdmDouble>,
    _guards: Vec<Box<dyn std::any::Any>>,
}

/// lab's embedded server with its webhook pointed at a receiver that expects [`HMAC_KEY`];
/// the server signs with `server_hmac`.
async fn nano_env(webhook_results: bool, server_hmac: Option<&[u8]>) -> Env {
    let receiver = WebhookReceiver::start("127.0.0.1:0", Some(HMAC_KEY.to_vec()))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let cfg = ServerConfig {
        api_key: Some(API_KEY.into()),
        cert_header: Some(CERT_HEADER.into()),
        identity_ca: Some(IdentityCa::from_pem(ca.pem.as_bytes()).unwrap()),
        webhook_url: Some(receiver.url()),
        webhook_hmac_key: server_hmac.map(<[u8]>::to_vec),
        faults: None,
        ddm_on_enroll: false,
        push: Arc::new(NoPush),
    };
    let store = Arc::new(Store::open(&dir.path().join("mdm.sqlite")).unwrap());
    let srv = lab::mdm_server::start("127.0.0.1:0", store, cfg)
        .await
        .unwrap();
    let timeout = Duration::from_secs(5);
    let backend: Box<dyn MdmBackend> = if webhook_results {
        // `lab`'s server stands in for NanoMDM, which has no history API: webhooks only.
        Box::new(
            NanoMdm::with_webhooks(&srv.url(), API_KEY, timeout, receiver.inbox.clone())
                .without_history(),
        )
    } else {
        Box::new(NanoMdm::embedded(&srv.url(), API_KEY, timeout))
    };
    let device = Device::new(UDID, format!("{}/mdm", srv.url()), Some(device_cert(&ca)));
    device.enroll().await;
    // A second device of the same lab (for `results_many`), enrolled with the same CA.
    let second = Device::new(
        "00008110-000A1B2C3D4E5F61",
        format!("{}/mdm", srv.url()),
        Some(device_cert(&ca)),
    );
    Env {
        name: if webhook_results {
            "nanomdm"
        } else {
            "embedded"
        },
        backend,
        device,
        receiver,
        counts_deliveries: !webhook_results,
        micro: None,
        _guards: vec![Box::new(srv), Box::new(dir), Box::new(second)],
    }
}

async fn micro_env(double_hmac: Option<&[u8]>) -> Env {
    let receiver = WebhookReceiver::start("127.0.0.1:0", Some(HMAC_KEY.to_vec()))
        .await
        .unwrap();
    let double = MicroMdmDouble::start(&receiver.url(), double_hmac).await;
    let backend = MicroMdm::new(
        &double.url(),
        API_KEY,
        Duration::from_secs(5),
        receiver.inbox.clone(),
    );
    let device = Device::new(UDID, format!("{}/mdm/connect", double.url()), None);
    Env {
        name: "micromdm",
        backend: Box::new(backend),
        device,
        receiver,
        counts_deliveries: false,
        micro: Some(double),
        _guards: vec![],
    }
}

static NEXT_EVENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Webhooks are fire-and-forget (§0.9): wait until `n` results are visible, then check there
/// are exactly `n`.
async fn results_n(b: &dyn MdmBackend, udid: &str, n: usize) -> Vec<CommandResult> {
    let r = eventually(&format!("{n} results from {}", b.kind()), async || {
        let r = b.results(udid).await.unwrap();
        (r.len() >= n).then_some(r)
    })
    .await;
    assert_eq!(r.len(), n, "{}: {r:#?}", b.kind());
    r
}

// ------------------------------------------------------------------ the contract

/// What every backend must do, against a server speaking its documented API.
async fn contract(env: &Env) {
    let b = env.backend.as_ref();
    let d = &env.device;
    let udid = d.udid.as_str();
    let who = env.name;

    // Enqueue returns the CommandUUID sent.
    let q = b.enqueue(udid, &schedule(), "sched-1").await.unwrap();
    assert_eq!(q.command_uuid, "sched-1", "{who}");
    let q = b
        .enqueue(udid, &Command::OSUpdateStatus, "status-1")
        .await
        .unwrap();
    assert_eq!(q.command_uuid, "status-1", "{who}");
    assert!(b.results(udid).await.unwrap().is_empty(), "{who}");

    // Idle → ScheduleOSUpdate; the reply (no RequestType) comes back tagged, byte-for-byte.
    let cmd = parse_envelope(&d.idle().await).expect("a command");
    assert_eq!(
        (cmd.command_uuid.as_str(), cmd.request_type.as_str()),
        ("sched-1", "ScheduleOSUpdate"),
        "{who}"
    );
    let ack_sched = raw_report(udid, Some("sched-1"), "Acknowledged", UPDATE_RESULTS);
    let next = parse_envelope(&d.report(&ack_sched).await).expect("the second command");
    assert_eq!(next.command_uuid, "status-1", "{who}");
    results_n(b, udid, 1).await;

    // NotNow keeps the command; the next Idle re-delivers it.
    let not_now = raw_report(udid, Some("status-1"), "NotNow", "");
    assert!(d.report(&not_now).await.is_empty(), "{who}");
    results_n(b, udid, 2).await;
    let again = parse_envelope(&d.idle().await).expect("re-delivery after NotNow");
    assert_eq!(again.command_uuid, "status-1", "{who}");
    let ack_status = raw_report(udid, Some("status-1"), "Acknowledged", OS_UPDATE_STATUS);
    assert!(d.report(&ack_status).await.is_empty(), "{who}");
    results_n(b, udid, 3).await;
    assert!(d.idle().await.is_empty(), "{who}: queue empty");

    // The same command answered twice (after a restart the reply may lack UpdateResults, §0.3).
    let dup_sched = raw_report(udid, Some("sched-1"), "Acknowledged", "");
    assert!(d.report(&dup_sched).await.is_empty(), "{who}");
    let results = results_n(b, udid, 4).await;

    let want = [
        ("sched-1", "ScheduleOSUpdate", "Acknowledged", &ack_sched),
        ("status-1", "OSUpdateStatus", "NotNow", &not_now),
        ("status-1", "OSUpdateStatus", "Acknowledged", &ack_status),
        ("sched-1", "ScheduleOSUpdate", "Acknowledged", &dup_sched),
    ];
    for (r, (uuid, rt, status, raw)) in results.iter().zip(want) {
        assert_eq!(r.command_uuid, uuid, "{who}: {r:?}");
        assert_eq!(r.request_type.as_deref(), Some(rt), "{who}: {r:?}");
        assert_eq!(r.status, status, "{who}: {r:?}");
        assert_eq!(
            &r.raw[..],
            &raw[..],
            "{who}: raw plist must be byte-for-byte"
        );
        assert!(!r.received_at.is_empty(), "{who}");
    }
    // Idle polls are not results, though the MDM reported them (NanoMDM and MicroMDM post a
    // Connect event for every Idle, §0.9).
    assert!(results.iter().all(|r| r.status != "Idle"), "{who}");
    let idle_events = eventually("3 Idle events", async || {
        let n = env
            .receiver
            .inbox
            .events()
            .iter()
            .filter_map(|e| e.event.acknowledge_event.as_ref())
            .filter(|a| a.status == "Idle")
            .count();
        (n >= 3).then_some(n)
    })
    .await;
    assert_eq!(idle_events, 3, "{who}");

    let counts = b.delivery_counts(udid).await.unwrap();
    assert_eq!(counts["sched-1"].final_reports, 2, "{who}: duplicate ack");
    assert_eq!(
        counts["status-1"].final_reports, 1,
        "{who}: NotNow is not final"
    );
    assert_eq!(counts.len(), 2, "{who}: {counts:?}");
    if env.counts_deliveries {
        assert_eq!(counts["sched-1"].deliveries, Some(1), "{who}");
        assert_eq!(counts["status-1"].deliveries, Some(2), "{who}");
    } else {
        assert_eq!(counts["sched-1"].deliveries, None, "{who}");
    }
    assert!(
        b.results("00008110-FFFFFFFFFFFFFFFF")
            .await
            .unwrap()
            .is_empty(),
        "{who}: another device's results"
    );

    // Forged webhooks: refused, kept as evidence, never results.
    let forged_raw = raw_report(udid, Some("sched-1"), "Error", "");
    let forged = serde_json::to_vec(&json!({
        "topic": "mdm.Connect",
        "event_id": "forged",
        "created_at": "2025-01-02T03:04:05Z",
        "acknowledge_event": {"udid": udid, "status": "Error", "command_uuid": "sched-1",
                              "raw_payload": B64.encode(&forged_raw)}
    }))
    .unwrap();
    let http = lab::http_client::client(Duration::from_secs(5));
    let url = env.receiver.url();
    let wrong_sig = hmac_signature(b"not-the-key", &forged);
    assert_eq!(
        post_raw(&http, &url, forged.clone(), Some(wrong_sig), None).await,
        401,
        "{who}: bad HMAC"
    );
    assert_eq!(
        post_raw(&http, &url, forged.clone(), None, None).await,
        401,
        "{who}: missing HMAC"
    );
    assert_eq!(
        post_raw(
            &http,
            &url,
            forged.clone(),
            Some("!!not base64".into()),
            None
        )
        .await,
        401,
        "{who}: garbage HMAC"
    );
    let not_json = b"topic=mdm.Connect&status=Acknowledged".to_vec();
    assert_eq!(
        post_raw(&http, &url, not_json.clone(), None, Some(HMAC_KEY)).await,
        400,
        "{who}: signed but not JSON"
    );
    let refused = env.receiver.inbox.refused();
    assert_eq!(refused.len(), 4, "{who}: {refused:?}");
    for r in &refused[..3] {
        assert_eq!(r.body, forged, "{who}");
        assert!(r.reason.contains("X-Hmac-Signature"), "{who}: {}", r.reason);
    }
    assert_eq!(refused[3].body, not_json, "{who}");
    assert!(refused[3].reason.contains("not a webhook event"), "{who}");
    let after = b.results(udid).await.unwrap();
    assert_eq!(after, results, "{who}: refused events never become results");
    assert_eq!(b.delivery_counts(udid).await.unwrap(), counts, "{who}");
}

#[tokio::test]
async fn embedded_backend_meets_the_contract() {
    let env = nano_env(false, Some(HMAC_KEY)).await;
    contract(&env).await;
}

#[tokio::test]
async fn nanomdm_backend_meets_the_contract() {
    let env = nano_env(true, Some(HMAC_KEY)).await;
    contract(&env).await;
    // The webhook body is NanoMDM's shape (ids present), kept exactly as posted.
    let ev = env.receiver.inbox.events();
    assert!(ev.iter().any(|e| e.event.topic == "mdm.TokenUpdate"));
    let ack = ev
        .iter()
        .find(|e| {
            e.event
                .acknowledge_event
                .as_ref()
                .is_some_and(|a| a.status == "Acknowledged")
        })
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&ack.body).unwrap();
    assert_eq!(j["acknowledge_event"]["ids"]["id"], UDID);
    assert!(j["acknowledge_event"].get("request_type").is_none());
}

#[tokio::test]
async fn micromdm_backend_meets_the_contract() {
    let env = micro_env(Some(HMAC_KEY)).await;
    contract(&env).await;
    // What the backend posted is MicroMDM's documented JSON (§5.2).
    let sent = env.micro.as_ref().unwrap().received();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["udid"], UDID);
    assert_eq!(sent[0]["request_type"], "ScheduleOSUpdate");
    assert_eq!(sent[0]["command_uuid"], "sched-1");
    assert_eq!(sent[0]["updates"][0]["install_action"], "Default");
    assert_eq!(sent[0]["updates"][0]["product_key"], "iOSUpdate21G93");
    assert_eq!(sent[1]["request_type"], "OSUpdateStatus");
    // The Idle events really had MicroMDM's shape: `"command_uuid": ""`, no `ids`.
    let idle = env
        .receiver
        .inbox
        .events()
        .into_iter()
        .find(|e| {
            e.event
                .acknowledge_event
                .as_ref()
                .is_some_and(|a| a.status == "Idle")
        })
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&idle.body).unwrap();
    assert_eq!(j["acknowledge_event"]["command_uuid"], "");
    assert!(j["acknowledge_event"].get("ids").is_none());
    assert!(j["acknowledge_event"]["url_params"].is_null());
}

/// An MDM signing with another key, or not at all: every event is refused, none is a result.
async fn signer_mismatch(env: &Env) {
    let b = env.backend.as_ref();
    let who = env.name;
    b.enqueue(UDID, &Command::SecurityInfo, "sec-1")
        .await
        .unwrap();
    let cmd = parse_envelope(&env.device.idle().await).unwrap();
    assert_eq!(cmd.command_uuid, "sec-1");
    let ack = raw_report(UDID, Some("sec-1"), "Acknowledged", "");
    env.device.report(&ack).await;
    let refused = eventually("the refused acknowledgement", async || {
        let r = env.receiver.inbox.refused();
        r.iter()
            .any(|e| String::from_utf8_lossy(&e.body).contains("sec-1"))
            .then_some(r)
    })
    .await;
    assert!(
        refused
            .iter()
            .all(|r| r.reason.contains("X-Hmac-Signature")),
        "{who}: {refused:?}"
    );
    assert!(env.receiver.inbox.events().is_empty(), "{who}");
    assert!(b.results(UDID).await.unwrap().is_empty(), "{who}");
    assert!(b.delivery_counts(UDID).await.unwrap().is_empty(), "{who}");
}

#[tokio::test]
async fn webhooks_signed_with_another_key_or_unsigned_are_refused() {
    signer_mismatch(&nano_env(true, Some(b"another-key")).await).await;
    signer_mismatch(&nano_env(true, None).await).await;
    signer_mismatch(&micro_env(Some(b"another-key")).await).await;
    signer_mismatch(&micro_env(None).await).await;
}

// ------------------------------------------------------------------ error cases

/// The message names the URL and never the API key (nor does the Debug form).
fn names_url(e: &BackendError, url: &str) {
    let msg = e.to_string();
    assert!(msg.contains(url), "{msg:?} does not name {url}");
    for secret in [API_KEY, "wrong-key-0c1d"] {
        assert!(!msg.contains(secret), "{msg:?} leaks the API key");
        assert!(
            !format!("{e:?}").contains(secret),
            "{e:?} leaks the API key"
        );
    }
}

#[tokio::test]
async fn nanomdm_enqueue_answers_the_embedded_server_never_gives() {
    let receiver = WebhookReceiver::start("127.0.0.1:0", Some(HMAC_KEY.to_vec()))
        .await
        .unwrap();
    let backend = |url: &str| NanoMdm::with_webhooks(url, API_KEY, SHORT, receiver.inbox.clone());

    // 500 with command_uuid + push_error: queued, not pushed (§0.8) — and its result is still
    // tagged with the request type.
    let srv = nano_fault(NanoFault::PushError).await;
    let b = backend(&srv.url());
    let q = b.enqueue(UDID, &schedule(), "pe-1").await.unwrap();
    assert_eq!(q.command_uuid, "pe-1");
    assert_eq!(q.pushed, Some(false));
    assert!(
        q.push_error.as_deref().unwrap().contains("push cert"),
        "{q:?}"
    );
    let raw = raw_report(UDID, Some("pe-1"), "Acknowledged", "");
    let ev = json!({"topic": "mdm.Connect", "created_at": "2025-01-02T03:04:05Z",
        "acknowledge_event": {"udid": UDID, "status": "Acknowledged", "command_uuid": "pe-1",
            "raw_payload": B64.encode(&raw), "ids": {"id": UDID, "type": "Device"}}});
    let http = lab::http_client::client(Duration::from_secs(5));
    assert_eq!(
        post_signed(&http, &receiver.url(), Some(HMAC_KEY), &ev).await,
        200
    );
    let r = b.results(UDID).await.unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].request_type.as_deref(), Some("ScheduleOSUpdate"));
    assert_eq!(r[0].raw[..], raw[..]);

    // 207: the push outcome is our enrollment's.
    let srv = nano_fault(NanoFault::MultiStatusOursPushed).await;
    let q = backend(&srv.url())
        .enqueue(UDID, &schedule(), "ms-1")
        .await
        .unwrap();
    assert!(q.pushed == Some(true) && q.push_error.is_none(), "{q:?}");
    let srv = nano_fault(NanoFault::MultiStatusOursFailed).await;
    let q = backend(&srv.url())
        .enqueue(UDID, &schedule(), "ms-2")
        .await
        .unwrap();
    assert_eq!(q.pushed, Some(false), "{q:?}");
    assert_eq!(q.push_error.as_deref(), Some("BadDeviceToken"));

    // Errors: the specific variant, naming the URL, never the key.
    for fault in [
        NanoFault::CommandError,
        NanoFault::NotJson,
        NanoFault::OtherUuid,
        NanoFault::Slow,
        NanoFault::Drop,
    ] {
        let srv = nano_fault(fault).await;
        let url = format!("{}/v1/enqueue/{UDID}", srv.url());
        let e = backend(&srv.url())
            .enqueue(UDID, &schedule(), "f-1")
            .await
            .unwrap_err();
        names_url(&e, &url);
        match (fault, &e) {
            (
                NanoFault::CommandError,
                BackendError::Refused {
                    status, message, ..
                },
            ) => {
                assert_eq!(*status, 500);
                assert!(message.contains("decoding command: invalid command"), "{e}");
            }
            (NanoFault::NotJson, BackendError::BadResponse { .. }) => {}
            (NanoFault::OtherUuid, BackendError::BadResponse { reason, .. }) => {
                assert!(
                    reason.contains("someone-else") && reason.contains("f-1"),
                    "{e}"
                );
            }
            (NanoFault::Slow, BackendError::Timeout { after, .. }) => assert_eq!(*after, SHORT),
            (NanoFault::Drop, BackendError::Unreachable { reason, .. }) => {
                assert!(reason.contains("connection closed"), "{e}");
            }
            _ => panic!("{fault:?}: unexpected {e:?}"),
        }
    }

    // A wrong API key: NanoMDM answers 401 with the text `Unauthorized` (not JSON).
    let srv = nano_fault(NanoFault::MultiStatusOursPushed).await;
    let url = format!("{}/v1/enqueue/{UDID}", srv.url());
    let e = NanoMdm::with_webhooks(&srv.url(), "wrong-key-0c1d", SHORT, receiver.inbox.clone())
        .enqueue(UDID, &schedule(), "k-1")
        .await
        .unwrap_err();
    names_url(&e, &url);
    assert!(
        matches!(&e, BackendError::Refused { status: 401, message, .. } if message.contains("Unauthorized")),
        "{e:?}"
    );

    // Nothing listening.
    let dead = dead_url().await;
    let e = backend(&dead)
        .enqueue(UDID, &schedule(), "d-1")
        .await
        .unwrap_err();
    names_url(&e, &format!("{dead}/v1/enqueue/{UDID}"));
    assert!(
        matches!(&e, BackendError::NotConnected { reason, .. } if reason.contains("refused")),
        "{e:?}"
    );
}

#[tokio::test]
async fn embedded_backend_errors_name_the_url() {
    // The history API in trouble.
    for fault in [NanoFault::NotJson, NanoFault::Slow, NanoFault::Drop] {
        let srv = nano_fault(fault).await;
        let url = format!("{}/v1/history/{UDID}", srv.url());
        let b = NanoMdm::embedded(&srv.url(), API_KEY, SHORT);
        for e in [
            b.results(UDID).await.unwrap_err(),
            b.delivery_counts(UDID).await.unwrap_err(),
        ] {
            names_url(&e, &url);
            match (fault, &e) {
                (NanoFault::NotJson, BackendError::BadResponse { .. })
                | (NanoFault::Slow, BackendError::Timeout { .. })
                | (NanoFault::Drop, BackendError::Unreachable { .. }) => {}
                _ => panic!("{fault:?}: unexpected {e:?}"),
            }
        }
    }

    // The real embedded server: wrong key, a reused CommandUUID, then gone.
    let env = nano_env(false, Some(HMAC_KEY)).await;
    let base = env._guards[0]
        .downcast_ref::<lab::mdm_server::RunningServer>()
        .unwrap()
        .url();
    let enqueue_url = format!("{base}/v1/enqueue/{UDID}");
    let e = NanoMdm::embedded(&base, "wrong-key-0c1d", SHORT)
        .enqueue(UDID, &schedule(), "w-1")
        .await
        .unwrap_err();
    names_url(&e, &enqueue_url);
    assert!(
        matches!(&e, BackendError::Refused { status: 401, .. }),
        "{e:?}"
    );
    let e = NanoMdm::embedded(&base, "wrong-key-0c1d", SHORT)
        .results(UDID)
        .await
        .unwrap_err();
    names_url(&e, &format!("{base}/v1/history/{UDID}"));
    assert!(
        matches!(&e, BackendError::Refused { status: 401, .. }),
        "{e:?}"
    );
    let b = env.backend.as_ref();
    b.enqueue(UDID, &schedule(), "u-1").await.unwrap();
    let e = b.enqueue(UDID, &schedule(), "u-1").await.unwrap_err();
    names_url(&e, &enqueue_url);
    assert!(
        matches!(&e, BackendError::Refused { status: 409, message, .. } if message.contains("already enqueued")),
        "{e:?}"
    );
    env._guards[0]
        .downcast_ref::<lab::mdm_server::RunningServer>()
        .unwrap()
        .stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = NanoMdm::embedded(&base, API_KEY, SHORT)
        .enqueue(UDID, &schedule(), "g-1")
        .await
        .unwrap_err();
    names_url(&e, &enqueue_url);
    assert!(
        matches!(&e, BackendError::NotConnected { reason, .. } if reason.contains("refused")),
        "{e:?}"
    );
}

#[tokio::test]
async fn micromdm_faults_are_specific_errors_that_name_the_url() {
    let receiver = WebhookReceiver::start("127.0.0.1:0", Some(HMAC_KEY.to_vec()))
        .await
        .unwrap();
    let double = MicroMdmDouble::start(&receiver.url(), Some(HMAC_KEY)).await;
    let url = format!("{}/v1/commands", double.url());
    // A fresh backend per case, so no pooled connection bypasses a fault.
    let backend = |key: &str| MicroMdm::new(&double.url(), key, SHORT, receiver.inbox.clone());

    // The double speaks the documented API (auth, validation, 201 shape).
    let http = lab::http_client::client(Duration::from_secs(5));
    let r = http.post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(&url)
        .basic_auth("micromdm", Some(API_KEY))
        .json(&json!({"udid": UDID, "request_type": "SecurityInfo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let j: serde_json::Value = r.json().await.unwrap();
    assert!(j["payload"]["command_uuid"].as_str().is_some());
    assert_eq!(j["payload"]["command"]["request_type"], "SecurityInfo");

    for fault in [
        MicroFault::Error500,
        MicroFault::NotJson,
        MicroFault::Slow,
        MicroFault::Drop,
        MicroFault::OtherUuid,
    ] {
        double.set_fault(fault);
        let e = backend(API_KEY)
            .enqueue(UDID, &schedule(), "m-1")
            .await
            .unwrap_err();
        names_url(&e, &url);
        match (fault, &e) {
            (
                MicroFault::Error500,
                BackendError::Refused {
                    status, message, ..
                },
            ) => {
                assert_eq!(*status, 500);
                assert!(message.contains("bolt: database not open"), "{e}");
            }
            (MicroFault::NotJson, BackendError::BadResponse { .. }) => {}
            (MicroFault::Slow, BackendError::Timeout { after, .. }) => assert_eq!(*after, SHORT),
            (MicroFault::Drop, BackendError::Unreachable { reason, .. }) => {
                assert!(reason.contains("connection closed"), "{e}");
            }
            (MicroFault::OtherUuid, BackendError::BadResponse { reason, .. }) => {
                assert!(reason.contains("m-1"), "{e}");
            }
            _ => panic!("{fault:?}: unexpected {e:?}"),
        }
    }
    double.set_fault(MicroFault::None);

    // Wrong key → 401; a request MicroMDM refuses → its `{"error"}` text.
    let e = backend("wrong-key-0c1d")
        .enqueue(UDID, &schedule(), "m-2")
        .await
        .unwrap_err();
    names_url(&e, &url);
    assert!(
        matches!(&e, BackendError::Refused { status: 401, .. }),
        "{e:?}"
    );
    let e = backend(API_KEY)
        .enqueue("", &Command::OSUpdateStatus, "m-3")
        .await
        .unwrap_err();
    names_url(&e, &url);
    assert!(
        matches!(&e, BackendError::Refused { status: 500, message, .. } if message == "request must contain UDID of the device"),
        "{e:?}"
    );
    // Still fine afterwards.
    let q = backend(API_KEY)
        .enqueue(UDID, &schedule(), "m-4")
        .await
        .unwrap();
    assert_eq!(q.command_uuid, "m-4");
    // Issue 17: MicroMDM's 201 says nothing of the push (it may have no push certificate):
    // unknown, never "pushed".
    assert_eq!(q.pushed, None, "{q:?}");
    assert_eq!(q.push_error, None, "{q:?}");

    let dead = dead_url().await;
    let e = MicroMdm::new(&dead, API_KEY, SHORT, receiver.inbox.clone())
        .enqueue(UDID, &schedule(), "m-5")
        .await
        .unwrap_err();
    names_url(&e, &format!("{dead}/v1/commands"));
    assert!(
        matches!(&e, BackendError::NotConnected { reason, .. } if reason.contains("refused")),
        "{e:?}"
    );
}

/// Issue 17: a wrong API key, on every backend (the embedded server's history, NanoMDM's
/// enqueue, MicroMDM's commands), is kept by the watch the runner stops on, as a refusal that
/// names the server by its origin and the setting to check, never the key; the backend's own
/// answer goes on unchanged.
#[tokio::test]
async fn a_wrong_api_key_is_a_refusal_naming_the_server_never_the_key() {
    use lab::mdm::access::{AccessWatch, MdmRefusal, Watched};
    let wrong = "wrong-key-2b9e-must-never-leak";
    let receiver = WebhookReceiver::start("127.0.0.1:0", Some(HMAC_KEY.to_vec()))
        .await
        .unwrap();
    let nano = nano_fault(NanoFault::MultiStatusOursPushed).await;
    let micro = MicroMdmDouble::start(&receiver.url(), Some(HMAC_KEY)).await;
    let cases: Vec<(String, Box<dyn MdmBackend>)> = vec![
        (
            nano.url(),
            Box::new(NanoMdm::embedded(&nano.url(), wrong, SHORT)),
        ),
        (
            nano.url(),
            Box::new(NanoMdm::with_webhooks(
                &nano.url(),
                wrong,
                SHORT,
                receiver.inbox.clone(),
            )),
        ),
        (
            micro.url(),
            Box::new(MicroMdm::new(
                &micro.url(),
                wrong,
                SHORT,
                receiver.inbox.clone(),
            )),
        ),
    ];
    for (url, inner) in cases {
        let kind = inner.kind();
        let watch = AccessWatch::new();
        let b = Watched::new(inner, watch.clone());
        // The embedded backend reads its results from the history API; the webhook-fed ones
        // meet the key at their first enqueue.
        let e = if kind == "embedded" {
            b.results(UDID).await.unwrap_err()
        } else {
            b.enqueue(UDID, &schedule(), "k-1").await.unwrap_err()
        };
        assert!(
            matches!(e, BackendError::Refused { status: 401, .. }),
            "{kind}: {e:?}"
        );
        let r = watch
            .refusal()
            .unwrap_or_else(|| panic!("{kind}: not kept"));
        let m = r.to_string();
        let origin = url.trim_end_matches('/');
        assert!(
            matches!(&r, MdmRefusal::ApiKey { server, status: 401, .. } if server == origin),
            "{kind}: {r:?}"
        );
        assert!(m.contains("check lab.mdm.api_key_env"), "{kind}: {m}");
        assert!(!m.contains(wrong) && !m.contains(API_KEY), "{kind}: {m}");
    }
}

/// Issue 14: a ScheduleOSUpdate the device does not answer is delivered at every Idle poll;
/// each backend sees those deliveries — the embedded server in its own record, a webhook-fed
/// NanoMDM (no history) and MicroMDM from the device's Idle polls while the command was the
/// oldest unanswered — and an answer stops them.
#[tokio::test]
async fn every_backend_sees_the_re_deliveries_of_an_unanswered_command() {
    use lab::mdm::backend::DeliverySeen;
    for env in [
        nano_env(false, Some(HMAC_KEY)).await,
        nano_env(true, Some(HMAC_KEY)).await,
        micro_env(Some(HMAC_KEY)).await,
    ] {
        let (b, d, who) = (env.backend.as_ref(), &env.device, env.name);
        let udid = d.udid.clone();
        b.enqueue(&udid, &schedule(), "unanswered-1").await.unwrap();
        for _ in 0..3 {
            let cmd = parse_envelope(&d.idle().await).expect("the command again");
            assert_eq!(cmd.command_uuid, "unanswered-1", "{who}");
        }
        let seen = eventually("3 deliveries", async || {
            b.results(&udid).await.unwrap();
            let v: Vec<_> = b
                .deliveries(&udid)?
                .into_iter()
                .filter(|x| x.command_uuid == "unanswered-1")
                .collect();
            (v.len() >= 3).then_some(v)
        })
        .await;
        assert_eq!(seen.len(), 3, "{who}: {seen:?}");
        let how = if env.counts_deliveries {
            DeliverySeen::History
        } else {
            DeliverySeen::IdlePoll
        };
        assert!(seen.iter().all(|x| x.seen == how), "{who}: {seen:?}");
        // Answered: it leaves the queue, and later polls are no deliveries of it.
        let ack = raw_report(&udid, Some("unanswered-1"), "Acknowledged", UPDATE_RESULTS);
        d.report(&ack).await;
        assert!(d.idle().await.is_empty(), "{who}");
        results_n(b, &udid, 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.results(&udid).await.unwrap();
        let after = b
            .deliveries(&udid)
            .unwrap()
            .into_iter()
            .filter(|x| x.command_uuid == "unanswered-1")
            .count();
        assert_eq!(after, 3, "{who}");
    }
}

/// `results_many` (one call for many devices: `GET /v1/history?…` since a cursor on `lab`'s
/// own server) gives each device exactly what its per-device `results` gives — every report,
/// raw, tagged, sorted — and the deliveries its history holds, round after round as the cursor
/// moves; on a webhook-fed NanoMDM (no such call) it is the per-device path.
#[tokio::test]
async fn results_of_many_devices_in_one_call_equal_the_per_device_results() {
    for webhook_results in [false, true] {
        let env = nano_env(webhook_results, Some(HMAC_KEY)).await;
        let b = env.backend.as_ref();
        let who = env.name;
        let other = env._guards[2].downcast_ref::<Device>().unwrap();
        other.enroll().await;
        let devices = [&env.device, other];
        let udids: Vec<String> = devices.iter().map(|d| d.udid.clone()).collect();
        // A device that never answered anything is in the answer too, with nothing.
        let mut asked = udids.clone();
        asked.push("00008110-FFFFFFFFFFFFFFFF".into());
        let mut total = 0;
        for round in 0..3 {
            for d in devices {
                let uuid = format!("status-{round}-{}", &d.udid[d.udid.len() - 2..]);
                b.enqueue(&d.udid, &Command::OSUpdateStatus, &uuid)
                    .await
                    .unwrap();
                let cmd = parse_envelope(&d.idle().await).expect("a command");
                assert_eq!(cmd.command_uuid, uuid, "{who}");
                if round == 1 {
                    // Deferred, delivered again, then answered.
                    d.report(&raw_report(&d.udid, Some(&uuid), "NotNow", ""))
                        .await;
                    parse_envelope(&d.idle().await).expect("re-delivery");
                }
                d.report(&raw_report(
                    &d.udid,
                    Some(&uuid),
                    "Acknowledged",
                    OS_UPDATE_STATUS,
                ))
                .await;
            }
            total += if round == 1 { 2 } else { 1 };
            for d in devices {
                results_n(b, &d.udid, total).await;
            }
            let many = b.results_many(&asked).await;
            assert_eq!(many.len(), asked.len(), "{who}");
            for (u, r) in asked.iter().zip(many) {
                let one = b.results(u).await.unwrap();
                let r = r.unwrap();
                assert_eq!(r, one, "{who}, round {round}, {u}");
                if udids.contains(u) {
                    assert_eq!(r.len(), total, "{who}, round {round}, {u}");
                } else {
                    assert!(r.is_empty(), "{who}: {r:?}");
                }
            }
            // The deliveries seen through the bulk call are those of the per-device history.
            let by_bulk: Vec<_> = udids.iter().map(|u| b.deliveries(u)).collect();
            for u in &udids {
                b.results(u).await.unwrap();
            }
            let by_one: Vec<_> = udids.iter().map(|u| b.deliveries(u)).collect();
            assert_eq!(by_bulk, by_one, "{who}, round {round}");
            if !webhook_results {
                let n = by_bulk[0].as_ref().map_or(0, Vec::len);
                // One delivery per answer: each Idle, and the Idle after the NotNow.
                assert_eq!(n, total, "{who}: {by_bulk:?}");
            }
        }
    }
}

/// A bulk call that fails is every device's error (the runner journals one `mdm_api_error`
/// per device, as when each per-device call failed), and the server's refusal of a wrong key is
/// seen as such.
#[tokio::test]
async fn a_failed_bulk_call_is_an_error_for_every_device() {
    let udids: Vec<String> = vec![UDID.into(), "00008110-000A1B2C3D4E5F61".into()];
    for fault in [NanoFault::NotJson, NanoFault::Drop] {
        let srv = nano_fault(fault).await;
        let b = NanoMdm::embedded(&srv.url(), API_KEY, SHORT);
        let many = b.results_many(&udids).await;
        assert_eq!(many.len(), 2, "{fault:?}");
        for r in many {
            let e = r.unwrap_err();
            assert!(
                e.to_string().contains(&srv.url()),
                "{fault:?}: the error names the server: {e}"
            );
        }
    }
    let env = nano_env(false, Some(HMAC_KEY)).await;
    let base = env._guards[0]
        .downcast_ref::<lab::mdm_server::RunningServer>()
        .unwrap()
        .url();
    let many = NanoMdm::embedded(&base, "wrong-key-0c1d", SHORT)
        .results_many(&udids)
        .await;
    for r in many {
        let e = r.unwrap_err();
        assert!(
            matches!(&e, BackendError::Refused { status: 401, .. }),
            "{e:?}"
        );
        assert!(!e.to_string().contains(API_KEY));
    }
    let dead = dead_url().await;
    let many = NanoMdm::embedded(&dead, API_KEY, SHORT)
        .results_many(&udids)
        .await;
    assert!(
        many.iter()
            .all(|r| matches!(r, Err(BackendError::NotConnected { .. }))),
        "{many:?}"
    );
}

/// `lab`'s own server queues one status query for many devices in one call (`PUT
/// /v1/enqueue/id1,id2`, one CommandUUID): each device is delivered it, answers it, and its
/// answer comes back as its own; a webhook-fed NanoMDM backend says it does not (one call per
/// device, as before).
#[tokio::test]
async fn a_status_query_is_queued_for_many_devices_in_one_call_on_the_embedded_server() {
    let env = nano_env(false, Some(HMAC_KEY)).await;
    let b = env.backend.as_ref();
    assert!(b.enqueues_in_bulk());
    let other = env._guards[2].downcast_ref::<Device>().unwrap();
    other.enroll().await;
    let udids = vec![env.device.udid.clone(), other.udid.clone()];
    let sent = b
        .enqueue_many(&udids, &Command::OSUpdateStatus, "status-bulk-1")
        .await;
    assert_eq!(sent.len(), 2);
    for s in sent {
        assert_eq!(s.unwrap().command_uuid, "status-bulk-1");
    }
    for d in [&env.device, other] {
        let cmd = parse_envelope(&d.idle().await).expect("the shared query");
        assert_eq!(
            (cmd.command_uuid.as_str(), cmd.request_type.as_str()),
            ("status-bulk-1", "OSUpdateStatus")
        );
        d.report(&raw_report(
            &d.udid,
            Some("status-bulk-1"),
            "Acknowledged",
            OS_UPDATE_STATUS,
        ))
        .await;
    }
    for (u, r) in udids.iter().zip(b.results_many(&udids).await) {
        let r = r.unwrap();
        assert_eq!(r.len(), 1, "{u}: {r:?}");
        assert_eq!(r[0].request_type.as_deref(), Some("OSUpdateStatus"));
        assert!(String::from_utf8_lossy(&r[0].raw).contains(u.as_str()));
    }
    // A reused CommandUUID is refused for every device of the call.
    let again = b
        .enqueue_many(&udids, &Command::OSUpdateStatus, "status-bulk-1")
        .await;
    assert!(
        again
            .iter()
            .all(|r| matches!(r, Err(BackendError::Refused { status: 409, .. }))),
        "{again:?}"
    );
    let env = nano_env(true, Some(HMAC_KEY)).await;
    assert!(!env.backend.enqueues_in_bulk());
}
