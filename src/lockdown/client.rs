//! lockdownd client: QueryType, GetValue, StartSession (+TLS), StopSession.
//!
//! Request/reply rules from brief §3.2: every reply must echo `Request`; failure is an
//! `Error: "<Name>"` key (older firmware: `Result: "Failure"`).

use super::error::DeviceErrorCode;
use super::frame;
use super::pair_record::PairRecord;
use crate::io::BoxIo;
use crate::plist_util::{self, get_str};
use crate::tls;
use crate::usbmux::frame::FrameError;
use plist::{Dictionary, Value};
use std::time::Duration;
use tokio_rustls::TlsConnector;

#[derive(Debug, thiserror::Error)]
pub enum LockdownError {
    #[error("device answered {request} with error {code}{}", .code.hint().map(|h| format!(" ({h})")).unwrap_or_default())]
    Device {
        request: String,
        code: DeviceErrorCode,
    },
    #[error("device did not answer {request} within {after:?}")]
    Timeout { request: String, after: Duration },
    #[error("lockdown connection: {0}")]
    Frame(#[from] FrameError),
    #[error("device sent garbage instead of a plist in reply to {request}: {reason}")]
    Garbage {
        request: String,
        reason: String,
        /// The raw reply, kept as evidence (truncated to 4 KiB).
        raw: Vec<u8>,
    },
    /// A well-formed plist nested past [`plist_util::MAX_PLIST_DEPTH`]: refused while it was
    /// read, so that one hostile device cannot overflow the harness's stack (issue 18).
    #[error(
        "device answered {request} with a plist nested deeper than {} levels (refused)",
        plist_util::MAX_PLIST_DEPTH
    )]
    TooDeep {
        request: String,
        /// The start of the reply, kept as evidence (truncated to 4 KiB).
        raw: Vec<u8>,
    },
    #[error("device reply to {request} echoes Request {got:?}")]
    RequestMismatch {
        request: String,
        got: Option<String>,
    },
    #[error("device reply to {request} lacks {key}")]
    MissingKey { request: String, key: &'static str },
    #[error("TLS session failed: {0}")]
    Tls(String),
    #[error(transparent)]
    TlsSetup(#[from] tls::TlsSetupError),
    #[error("the lockdown connection is closed")]
    Closed,
}

impl LockdownError {
    /// The `Error` name when the device refused, for recording as evidence.
    pub fn device_code(&self) -> Option<&DeviceErrorCode> {
        match self {
            LockdownError::Device { code, .. } => Some(code),
            _ => None,
        }
    }
}

enum Stream {
    Plain(BoxIo),
    Tls(Box<tokio_rustls::client::TlsStream<BoxIo>>),
    Gone,
}

/// An open lockdownd connection (over a usbmuxd `Connect` pipe).
pub struct LockdownClient {
    stream: Stream,
    label: String,
    timeout: Duration,
    session_id: Option<String>,
}

/// What StartSession answered.
#[derive(Debug, Clone)]
pub struct Session {
    pub session_id: String,
    pub ssl: bool,
}

impl LockdownClient {
    /// libimobiledevice waits 30 s per message (brief §3.1); `lab` defaults to 10 s so a silent
    /// device fails a probe in reasonable time.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    pub fn new(io: BoxIo, label: &str, timeout: Duration) -> Self {
        LockdownClient {
            stream: Stream::Plain(io),
            label: label.to_string(),
            timeout,
            session_id: None,
        }
    }

    pub fn in_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), LockdownError> {
        let r = match &mut self.stream {
            Stream::Plain(s) => frame::write_frame(s, bytes).await,
            Stream::Tls(s) => frame::write_frame(s.as_mut(), bytes).await,
            Stream::Gone => return Err(LockdownError::Closed),
        };
        r.map_err(|e| LockdownError::Frame(e.into()))
    }

    async fn read(&mut self) -> Result<Vec<u8>, FrameError> {
        match &mut self.stream {
            Stream::Plain(s) => frame::read_frame(s).await,
            Stream::Tls(s) => frame::read_frame(s.as_mut()).await,
            Stream::Gone => Err(FrameError::Closed),
        }
    }

    /// Send one request and return the reply dictionary, checked for the `Request` echo and
    /// `Error`.
    pub async fn request(&mut self, req: Dictionary) -> Result<Dictionary, LockdownError> {
        self.request_keeping(req, &|_, _| true).await
    }

    /// [`LockdownClient::request`], building only the reply's dictionary entries `keep` names
    /// (`plist_util::fast::Keep`; the reply is checked whole all the same).
    async fn request_keeping(
        &mut self,
        mut req: Dictionary,
        keep: plist_util::fast::Keep<'_>,
    ) -> Result<Dictionary, LockdownError> {
        let name = get_str(&req, "Request").unwrap_or("?").to_string();
        req.insert("Label".into(), self.label.clone().into());
        let body = plist_util::dict_to_xml(req);
        let timeout = self.timeout;
        let exchange = async {
            self.write(&body).await?;
            self.read().await.map_err(LockdownError::Frame)
        };
        let raw = match tokio::time::timeout(timeout, exchange).await {
            Err(_) => {
                self.stream = Stream::Gone;
                return Err(LockdownError::Timeout {
                    request: name,
                    after: timeout,
                });
            }
            Ok(Err(e)) => {
                self.stream = Stream::Gone;
                return Err(e);
            }
            Ok(Ok(raw)) => raw,
        };
        let evidence = || raw.iter().take(4096).copied().collect();
        let reply = match plist_util::parse_limited_keeping(&raw, keep) {
            Ok(plist::Value::Dictionary(d)) => d,
            Err(plist_util::PlistError::TooDeep) => {
                return Err(LockdownError::TooDeep {
                    request: name,
                    raw: evidence(),
                });
            }
            Ok(other) => {
                return Err(LockdownError::Garbage {
                    request: name,
                    reason: format!(
                        "expected a dictionary, got {}",
                        plist_util::type_name(&other)
                    ),
                    raw: evidence(),
                });
            }
            Err(e) => {
                return Err(LockdownError::Garbage {
                    request: name,
                    reason: e.to_string(),
                    raw: evidence(),
                });
            }
        };
        check_reply(&name, reply)
    }

    pub async fn query_type(&mut self) -> Result<String, LockdownError> {
        let mut req = Dictionary::new();
        req.insert("Request".into(), "QueryType".into());
        let reply = self.request(req).await?;
        get_str(&reply, "Type")
            .map(str::to_string)
            .ok_or(LockdownError::MissingKey {
                request: "QueryType".into(),
                key: "Type",
            })
    }

    /// GetValue: one key, a whole domain (no key), or everything (neither).
    pub async fn get_value(
        &mut self,
        domain: Option<&str>,
        key: Option<&str>,
    ) -> Result<Value, LockdownError> {
        let mut req = Dictionary::new();
        req.insert("Request".into(), "GetValue".into());
        if let Some(d) = domain {
            req.insert("Domain".into(), d.into());
        }
        if let Some(k) = key {
            req.insert("Key".into(), k.into());
        }
        let mut reply = self.request(req).await?;
        reply.remove("Value").ok_or(LockdownError::Device {
            request: "GetValue".into(),
            code: DeviceErrorCode::MissingValue,
        })
    }

    /// GetValue of a whole domain (`None`: the global one), of which only `keys` are built
    /// into the value: a follow-up re-probe reads five of the global domain's ~35 values. The
    /// request on the wire is the one [`LockdownClient::get_value`] sends.
    pub async fn get_values(
        &mut self,
        domain: Option<&str>,
        keys: &[&str],
    ) -> Result<Value, LockdownError> {
        let mut req = Dictionary::new();
        req.insert("Request".into(), "GetValue".into());
        if let Some(d) = domain {
            req.insert("Domain".into(), d.into());
        }
        // The reply's own entries (depth 0) are all kept; of its Value (depth 1), the keys.
        let keep = |depth: usize, k: &str| depth != 1 || keys.contains(&k);
        let mut reply = self.request_keeping(req, &keep).await?;
        reply.remove("Value").ok_or(LockdownError::Device {
            request: "GetValue".into(),
            code: DeviceErrorCode::MissingValue,
        })
    }

    /// StartSession with a pair record and the host's BUID; switches to TLS when the device asks.
    pub async fn start_session(
        &mut self,
        pair: &PairRecord,
        system_buid: &str,
    ) -> Result<Session, LockdownError> {
        // Build the TLS config first: a bad pair record fails before the device is touched.
        let config = tls::client_config(&pair.host_certificate, &pair.host_private_key)?;
        let mut req = Dictionary::new();
        req.insert("Request".into(), "StartSession".into());
        req.insert("HostID".into(), pair.host_id.clone().into());
        req.insert("SystemBUID".into(), system_buid.into());
        let reply = self.request(req).await?;
        let session_id =
            get_str(&reply, "SessionID")
                .map(str::to_string)
                .ok_or(LockdownError::MissingKey {
                    request: "StartSession".into(),
                    key: "SessionID",
                })?;
        let ssl = matches!(reply.get("EnableSessionSSL"), Some(Value::Boolean(true)));
        self.session_id = Some(session_id.clone());
        if ssl {
            let io = match std::mem::replace(&mut self.stream, Stream::Gone) {
                Stream::Plain(io) => io,
                _ => return Err(LockdownError::Tls("session already encrypted".into())),
            };
            let connector = TlsConnector::from(config);
            let handshake = connector.connect(tls::device_server_name(), io);
            let tls = match tokio::time::timeout(self.timeout, handshake).await {
                Err(_) => {
                    return Err(LockdownError::Timeout {
                        request: "TLS handshake".into(),
                        after: self.timeout,
                    });
                }
                Ok(Err(e)) => return Err(LockdownError::Tls(e.to_string())),
                Ok(Ok(s)) => s,
            };
            self.stream = Stream::Tls(Box::new(tls));
        }
        Ok(Session { session_id, ssl })
    }

    pub async fn stop_session(&mut self) -> Result<(), LockdownError> {
        let Some(id) = self.session_id.take() else {
            return Ok(());
        };
        let mut req = Dictionary::new();
        req.insert("Request".into(), "StopSession".into());
        req.insert("SessionID".into(), id.into());
        self.request(req).await?;
        if let Stream::Tls(s) = &mut self.stream {
            // close_notify, as libimobiledevice's SSL_shutdown does (brief §5.3).
            use tokio::io::AsyncWriteExt;
            let _ = s.shutdown().await;
        }
        self.stream = Stream::Gone;
        Ok(())
    }
}

/// Check the `Request` echo and the `Error` key of a reply (brief §3.2).
pub fn check_reply(request: &str, reply: Dictionary) -> Result<Dictionary, LockdownError> {
    if let Some(err) = get_str(&reply, "Error") {
        return Err(LockdownError::Device {
            request: request.to_string(),
            code: DeviceErrorCode::from_name(err),
        });
    }
    if get_str(&reply, "Result") == Some("Failure") {
        return Err(LockdownError::Device {
            request: request.to_string(),
            code: DeviceErrorCode::Other("Failure".into()),
        });
    }
    let echoed = get_str(&reply, "Request");
    if echoed != Some(request) {
        return Err(LockdownError::RequestMismatch {
            request: request.to_string(),
            got: echoed.map(str::to_string),
        });
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(pairs: &[(&str, &str)]) -> Dictionary {
        let mut d = Dictionary::new();
        for (k, v) in pairs {
            d.insert((*k).into(), (*v).into());
        }
        d
    }

    #[test]
    fn errors_and_missing_echo_are_refused() {
        let e = check_reply(
            "StartSession",
            reply(&[("Request", "StartSession"), ("Error", "InvalidHostID")]),
        )
        .unwrap_err();
        assert_eq!(e.device_code(), Some(&DeviceErrorCode::InvalidHostID));
        assert!(e.to_string().contains("re-pair"));
        assert!(matches!(
            check_reply("GetValue", reply(&[("Value", "x")])),
            Err(LockdownError::RequestMismatch { got: None, .. })
        ));
        assert!(check_reply("GetValue", reply(&[("Request", "GetValue")])).is_ok());
        assert!(
            check_reply(
                "GetValue",
                reply(&[("Request", "GetValue"), ("Result", "Failure")])
            )
            .is_err()
        );
    }
}
