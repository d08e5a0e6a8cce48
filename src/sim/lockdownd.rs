//! A simulated device's lockdownd (brief §3, §5.3, §8): QueryType, GetValue with pre-session
//! restrictions, StartSession checking HostID then TLS on the same stream, StopSession, and
//! the faults a fleet can ask for.
//!
//! The global domain also answers `TimeIntervalSince1970` and `TimeZoneOffsetFromUTC` (session
//! only), read from the lab's simulated clock at each GetValue so that clock jumps show
//! (`values::clock_values`; what libimobiledevice's `idevicedate` reads).

use super::clock::Clock;
use super::fleet::Fault;
use super::lab::{SimDevice, SimLab};
use super::values::{PRE_SESSION_BY_KEY, PRE_SESSION_DOMAINS, PRE_SESSION_KEYS, clock_values};
use crate::io::BoxIo;
use crate::lockdown::SERVICE_TYPE;
use crate::lockdown::frame;
use crate::plist_util::{self, get_str};
use crate::usbmux::frame::FrameError;
use plist::{Dictionary, Value};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

enum Conn {
    Plain(BoxIo),
    Tls(Box<tokio_rustls::server::TlsStream<BoxIo>>),
}

impl Conn {
    async fn read(&mut self) -> Result<Vec<u8>, FrameError> {
        match self {
            Conn::Plain(s) => frame::read_frame(s).await,
            Conn::Tls(s) => frame::read_frame(s.as_mut()).await,
        }
    }
    async fn write(&mut self, d: Dictionary) -> std::io::Result<()> {
        let body = plist_util::dict_to_xml(d);
        match self {
            Conn::Plain(s) => frame::write_frame(s, &body).await,
            Conn::Tls(s) => frame::write_frame(s.as_mut(), &body).await,
        }
    }
    async fn write_raw(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => {
                s.write_all(b).await?;
                s.flush().await
            }
            Conn::Tls(s) => {
                s.write_all(b).await?;
                s.flush().await
            }
        }
    }
}

/// Serve one lockdown connection until the client leaves or the device is detached.
pub async fn serve(lab: Arc<SimLab>, dev: Arc<SimDevice>, io: BoxIo) {
    let mut detached = dev.detached.subscribe();
    let udid = dev.spec.udid.clone();
    tokio::select! {
        r = session(lab, dev, io) => {
            if let Err(e) = r {
                tracing::debug!(%udid, error = %e, "lockdown connection ended");
            }
        }
        _ = detached.changed() => {
            tracing::debug!(%udid, "device detached: lockdown connection dropped");
        }
    }
}

fn reply_to(request: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("Request".into(), request.into());
    d
}

fn error_reply(request: &str, name: &str) -> Dictionary {
    let mut d = reply_to(request);
    d.insert("Error".into(), name.into());
    d
}

/// What the connection loop does after one request.
enum Next {
    /// Go on reading requests on this connection (plaintext or TLS).
    Go(Conn),
    /// The connection is over (Goodbye, a fault, a failed handshake).
    End,
}

/// Write one reply and go on.
async fn answer(mut conn: Conn, d: Dictionary) -> Result<Next, FrameError> {
    conn.write(d).await?;
    Ok(Next::Go(conn))
}

/// One lockdown connection's state: which device it speaks for and its session, if any.
struct Session {
    lab: Arc<SimLab>,
    dev: Arc<SimDevice>,
    limits: crate::listen_limits::Limits,
    id: Option<String>,
}

async fn session(lab: Arc<SimLab>, dev: Arc<SimDevice>, io: BoxIo) -> Result<(), FrameError> {
    let mut conn = Conn::Plain(io);
    let mut first_reply = true;
    let mut s = Session {
        lab,
        dev,
        limits: crate::listen_limits::Limits::current(),
        id: None,
    };
    loop {
        // The first request within the header timeout, later ones within the idle timeout
        // (crate::listen_limits): a client that connects and sends nothing is let go.
        let wait = if first_reply {
            s.limits.header_read_timeout
        } else {
            s.limits.idle_timeout
        };
        let raw = match tokio::time::timeout(wait, conn.read()).await {
            Err(_) => {
                tracing::debug!(udid = %s.dev.spec.udid, "lockdown client idle: connection closed");
                return Ok(());
            }
            Ok(Err(FrameError::Closed)) => return Ok(()),
            Ok(r) => r?,
        };
        if first_reply {
            first_reply = false;
            if let Some(f) = s.dev.spec.fault
                && apply_first_reply_fault(f, &mut conn).await?
            {
                return Ok(());
            }
        }
        let Ok(req) = plist_util::parse_dict(&raw) else {
            conn.write(error_reply("", "InvalidResponse")).await?;
            continue;
        };
        conn = match s.handle(conn, &req).await? {
            Next::Go(c) => c,
            Next::End => return Ok(()),
        };
    }
}

impl Session {
    /// Answer one request (brief §5.3 for the request names and error strings).
    async fn handle(&mut self, conn: Conn, req: &Dictionary) -> Result<Next, FrameError> {
        let request = get_str(req, "Request").unwrap_or("").to_string();
        match request.as_str() {
            "QueryType" => {
                let mut d = reply_to("QueryType");
                d.insert("Type".into(), SERVICE_TYPE.into());
                answer(conn, d).await
            }
            "GetValue" => {
                let d = get_value(&self.lab, &self.dev, req, self.id.is_some());
                answer(conn, d).await
            }
            "StartSession" => self.start(conn, req).await,
            "StopSession" => self.stop(conn, req).await,
            "ValidatePair" => {
                let host_id = req
                    .get("PairRecord")
                    .and_then(Value::as_dictionary)
                    .and_then(|p| get_str(p, "HostID"));
                if host_id.is_some_and(|h| self.host_accepted(h)) {
                    answer(conn, reply_to("ValidatePair")).await
                } else {
                    answer(conn, error_reply("ValidatePair", "InvalidHostID")).await
                }
            }
            "Pair" => answer(conn, self.pair()).await,
            "StartService" => {
                let code = if self.id.is_none() {
                    "SessionInactive"
                } else {
                    "InvalidService"
                };
                answer(conn, error_reply("StartService", code)).await
            }
            "Goodbye" => {
                let mut d = reply_to("Goodbye");
                d.insert("Result".into(), "Success".into());
                let mut conn = conn;
                conn.write(d).await?;
                Ok(Next::End)
            }
            other => answer(conn, error_reply(other, "InvalidRequest")).await,
        }
    }

    fn host_accepted(&self, host_id: &str) -> bool {
        self.lab
            .accepted_host_ids(&self.dev)
            .iter()
            .any(|h| h == host_id)
    }

    /// StartSession: check the HostID, answer with a SessionID, then TLS on the same stream.
    async fn start(&mut self, mut conn: Conn, req: &Dictionary) -> Result<Next, FrameError> {
        if self.id.is_some() {
            return answer(conn, error_reply("StartSession", "SessionActive")).await;
        }
        let Some(host_id) = get_str(req, "HostID") else {
            return answer(conn, error_reply("StartSession", "MissingHostID")).await;
        };
        if !self.host_accepted(host_id) {
            return answer(conn, error_reply("StartSession", "InvalidHostID")).await;
        }
        let id = crate::sim::identity::uuid_from(
            rand_seed(),
            &format!("session/{}", self.dev.spec.udid),
        );
        let mut d = reply_to("StartSession");
        d.insert("EnableSessionSSL".into(), Value::Boolean(true));
        d.insert("SessionID".into(), id.clone().into());
        conn.write(d).await?;
        self.id = Some(id);
        self.dev
            .sessions_started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.dev.spec.fault == Some(Fault::TlsFailure) {
            conn.write_raw(b"HTTP/1.1 400 Bad Request\r\n\r\nthis is not TLS")
                .await?;
            return Ok(Next::End);
        }
        let Conn::Plain(io) = conn else {
            unreachable!("a session starts in plaintext")
        };
        let acceptor = TlsAcceptor::from(self.dev.identity.server_config.clone());
        let handshake = tokio::time::timeout(self.limits.header_read_timeout, acceptor.accept(io));
        let Ok(tls) = handshake.await else {
            return Ok(Next::End);
        };
        Ok(Next::Go(Conn::Tls(Box::new(tls?))))
    }

    /// StopSession: the SessionID must match; then back to plaintext if the client goes on.
    async fn stop(&mut self, conn: Conn, req: &Dictionary) -> Result<Next, FrameError> {
        if self.id.is_none() {
            return answer(conn, error_reply("StopSession", "SessionInactive")).await;
        }
        if get_str(req, "SessionID") != self.id.as_deref() {
            return answer(conn, error_reply("StopSession", "InvalidSessionID")).await;
        }
        let mut d = reply_to("StopSession");
        d.insert("Result".into(), "Success".into());
        let mut conn = conn;
        conn.write(d).await?;
        self.id = None;
        // The client ends TLS with close_notify and may go on in plaintext (brief §5.3);
        // EOF or RST are just as fine.
        let Conn::Tls(mut s) = conn else {
            return Ok(Next::Go(conn));
        };
        let mut probe = [0u8; 1];
        match s.read(&mut probe).await {
            Ok(0) => {
                let (io, _) = s.into_inner();
                Ok(Next::Go(Conn::Plain(io)))
            }
            _ => Ok(Next::End),
        }
    }

    /// Pair: succeeds unless the device is locked; the record the client then saves through
    /// usbmuxd is accepted by StartSession.
    fn pair(&self) -> Dictionary {
        if self.dev.spec.passcode {
            return error_reply("Pair", "PasswordProtected");
        }
        let mut d = reply_to("Pair");
        let bag = self.dev.identity.pair_record.escrow_bag.clone();
        d.insert("EscrowBag".into(), Value::Data(bag.unwrap_or_default()));
        d
    }
}

fn rand_seed() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// `Ok(true)` when the connection is to end after the fault.
async fn apply_first_reply_fault(f: Fault, conn: &mut Conn) -> Result<bool, FrameError> {
    match f {
        Fault::Garbage => {
            let junk = b"\x00\x13\x37 this is not a plist \xff\xfe";
            let mut framed = (junk.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(junk);
            conn.write_raw(&framed).await?;
            Ok(true)
        }
        Fault::CloseMidFrame => {
            let mut framed = 1000u32.to_be_bytes().to_vec();
            framed.extend_from_slice(b"<?xml vers");
            conn.write_raw(&framed).await?;
            Ok(true)
        }
        Fault::OversizedFrame => {
            conn.write_raw(&[0xff, 0xff, 0xff, 0xff, b'<', b'?'])
                .await?;
            hold_open(conn).await;
            Ok(true)
        }
        Fault::Silent => {
            hold_open(conn).await;
            Ok(true)
        }
        Fault::TlsFailure => Ok(false),
        Fault::DeepPlist => {
            let deep = plist_util::hostile::deep_xml(crate::sim::fleet::DEEP_PLIST_LEVELS, false);
            let mut framed = (deep.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(&deep);
            conn.write_raw(&framed).await?;
            hold_open(conn).await;
            Ok(true)
        }
    }
}

/// Keep the connection open, reading and discarding, until the client goes away.
async fn hold_open(conn: &mut Conn) {
    let mut buf = [0u8; 1024];
    loop {
        let n = match conn {
            Conn::Plain(s) => s.read(&mut buf).await,
            Conn::Tls(s) => s.read(&mut buf).await,
        };
        if !matches!(n, Ok(x) if x > 0) {
            return;
        }
    }
}

/// GetValue with a real device's pre-session restrictions (brief §6). The clock keys are
/// added to the global domain here, at the moment of the request.
fn get_value(lab: &SimLab, dev: &SimDevice, req: &Dictionary, in_session: bool) -> Dictionary {
    let domain = get_str(req, "Domain");
    let key = get_str(req, "Key");
    let mut d = reply_to("GetValue");
    if let Some(dm) = domain {
        d.insert("Domain".into(), dm.into());
    }
    if let Some(k) = key {
        d.insert("Key".into(), k.into());
    }
    let Some(mut values) = dev.domain(domain) else {
        d.insert("Error".into(), "MissingValue".into());
        return d;
    };
    if domain.is_none() {
        let offset = dev.spec.update.local_offset_minutes;
        for (k, v) in clock_values(lab.clock.now(), offset) {
            values.insert(k.into(), v);
        }
    }
    let domain_open = in_session || domain.is_some_and(|x| PRE_SESSION_DOMAINS.contains(&x));
    let value = match (domain, key) {
        (None, None) if in_session => Some(Value::Dictionary(values.clone())),
        (None, None) => {
            let mut pre = Dictionary::new();
            for k in PRE_SESSION_KEYS {
                if let Some(v) = values.get(k) {
                    pre.insert((*k).into(), v.clone());
                }
            }
            Some(Value::Dictionary(pre))
        }
        (None, Some(k)) => {
            if in_session || PRE_SESSION_KEYS.contains(&k) || PRE_SESSION_BY_KEY.contains(&k) {
                values.get(k).cloned()
            } else {
                d.insert("Error".into(), "GetProhibited".into());
                return d;
            }
        }
        (Some(_), _) if !domain_open => {
            d.insert("Error".into(), "GetProhibited".into());
            return d;
        }
        (Some(_), None) => Some(Value::Dictionary(values.clone())),
        (Some(_), Some(k)) => values.get(k).cloned(),
    };
    match value {
        Some(v) => {
            d.insert("Value".into(), v);
        }
        None => {
            d.insert("Error".into(), "MissingValue".into());
        }
    }
    d
}
