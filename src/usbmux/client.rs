//! usbmuxd client (plist protocol, version 1).
//!
//! Like libusbmuxd, every request that expects one reply gets its own socket, closed after the
//! reply (brief §1.6); `Connect` turns its socket into a raw pipe to the device port and `Listen`
//! keeps its socket for the attach/detach stream.

use super::addr::UsbmuxAddr;
use super::frame::{self, FrameError, MSG_PLIST, VERSION_PLIST};
use super::message::{self, DeviceEntry, MuxEvent, RESULT_OK};
use crate::io::BoxIo;
use crate::plist_util::{self, get_str, get_u64};
use plist::{Dictionary, Value};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::net::{TcpStream, UnixStream};

#[derive(Debug, thiserror::Error)]
pub enum UsbmuxError {
    #[error("cannot reach usbmuxd at {addr}: {source}")]
    Unreachable {
        addr: String,
        source: std::io::Error,
    },
    #[error("usbmuxd at {addr} did not answer {request} within {after:?}")]
    Timeout {
        addr: String,
        request: String,
        after: Duration,
    },
    #[error("usbmuxd at {addr}: {request}: {source}")]
    Frame {
        addr: String,
        request: String,
        source: FrameError,
    },
    #[error("usbmuxd at {addr} sent a malformed reply to {request}: {reason}")]
    BadReply {
        addr: String,
        request: String,
        reason: String,
    },
    #[error("usbmuxd at {addr} refused {request}: result {code} ({})", message::result_name(*.code))]
    Refused {
        addr: String,
        request: String,
        code: u64,
    },
}

/// Client of one usbmuxd.
#[derive(Debug, Clone)]
pub struct UsbmuxClient {
    pub addr: UsbmuxAddr,
    pub timeout: Duration,
}

static NEXT_TAG: AtomicU32 = AtomicU32::new(1);

impl UsbmuxClient {
    /// libusbmuxd waits 5 000 ms for a usbmuxd reply (brief §1.6).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    pub fn new(addr: UsbmuxAddr) -> Self {
        UsbmuxClient {
            addr,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Open a new socket to usbmuxd.
    pub async fn open(&self) -> Result<BoxIo, UsbmuxError> {
        let unreachable = |source| UsbmuxError::Unreachable {
            addr: self.host(),
            source,
        };
        let fut = async {
            match &self.addr {
                UsbmuxAddr::Unix(p) => UnixStream::connect(p).await.map(|s| Box::new(s) as BoxIo),
                UsbmuxAddr::Tcp { host, port } => {
                    let s = TcpStream::connect((host.as_str(), *port)).await?;
                    s.set_nodelay(true)?;
                    Ok(Box::new(s) as BoxIo)
                }
            }
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(unreachable),
            Err(_) => Err(unreachable(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection timed out",
            ))),
        }
    }

    async fn send(&self, io: &mut BoxIo, req: Dictionary) -> Result<u32, UsbmuxError> {
        let tag = NEXT_TAG.fetch_add(1, Ordering::Relaxed).max(1);
        let name = get_str(&req, "MessageType").unwrap_or("?").to_string();
        let body = plist_util::dict_to_xml(req);
        frame::write_frame(io, VERSION_PLIST, MSG_PLIST, tag, &body)
            .await
            .map_err(|e| UsbmuxError::Frame {
                addr: self.host(),
                request: name,
                source: e.into(),
            })?;
        Ok(tag)
    }

    async fn recv(
        &self,
        io: &mut BoxIo,
        request: &str,
        tag: Option<u32>,
    ) -> Result<Dictionary, UsbmuxError> {
        let f = match tokio::time::timeout(self.timeout, frame::read_frame(io)).await {
            Err(_) => {
                return Err(UsbmuxError::Timeout {
                    addr: self.host(),
                    request: request.into(),
                    after: self.timeout,
                });
            }
            Ok(r) => r.map_err(|source| UsbmuxError::Frame {
                addr: self.host(),
                request: request.into(),
                source,
            })?,
        };
        self.check_frame(f, request, tag)
    }

    fn check_frame(
        &self,
        f: frame::Frame,
        request: &str,
        tag: Option<u32>,
    ) -> Result<Dictionary, UsbmuxError> {
        let bad = |reason: String| UsbmuxError::BadReply {
            addr: self.host(),
            request: request.into(),
            reason,
        };
        if f.header.version != VERSION_PLIST || f.header.message != MSG_PLIST {
            return Err(bad(format!(
                "header version {} message {} (expected plist protocol 1/8)",
                f.header.version, f.header.message
            )));
        }
        if let Some(t) = tag
            && f.header.tag != t
        {
            return Err(bad(format!("tag {} does not echo {}", f.header.tag, t)));
        }
        plist_util::parse_dict(&f.payload).map_err(bad)
    }

    /// One request on its own socket, one reply.
    pub async fn request(&self, req: Dictionary) -> Result<Dictionary, UsbmuxError> {
        let name = get_str(&req, "MessageType").unwrap_or("?").to_string();
        let mut io = self.open().await?;
        let tag = self.send(&mut io, req).await?;
        self.recv(&mut io, &name, Some(tag)).await
    }

    fn check_result(&self, reply: &Dictionary, request: &str) -> Result<(), UsbmuxError> {
        if get_str(reply, "MessageType") == Some("Result") {
            let n = get_u64(reply, "Number").unwrap_or(u64::MAX);
            if n != RESULT_OK {
                return Err(UsbmuxError::Refused {
                    addr: self.host(),
                    request: request.into(),
                    code: n,
                });
            }
        }
        Ok(())
    }

    pub async fn list_devices(&self) -> Result<Vec<DeviceEntry>, UsbmuxError> {
        let reply = self.request(message::request("ListDevices")).await?;
        self.check_result(&reply, "ListDevices")?;
        let list = reply
            .get("DeviceList")
            .and_then(Value::as_array)
            .ok_or_else(|| UsbmuxError::BadReply {
                addr: self.host(),
                request: "ListDevices".into(),
                reason: "no DeviceList array".into(),
            })?;
        let mut out = Vec::new();
        for item in list {
            let d = item.as_dictionary().ok_or_else(|| UsbmuxError::BadReply {
                addr: self.host(),
                request: "ListDevices".into(),
                reason: "a DeviceList entry is not a dictionary".into(),
            })?;
            let e = DeviceEntry::from_attached(d).map_err(|reason| UsbmuxError::BadReply {
                addr: self.host(),
                request: "ListDevices".into(),
                reason,
            })?;
            out.push(e);
        }
        Ok(out)
    }

    pub async fn read_buid(&self) -> Result<String, UsbmuxError> {
        let reply = self.request(message::request("ReadBUID")).await?;
        self.check_result(&reply, "ReadBUID")?;
        get_str(&reply, "BUID")
            .map(str::to_string)
            .ok_or_else(|| UsbmuxError::BadReply {
                addr: self.host(),
                request: "ReadBUID".into(),
                reason: "no BUID string".into(),
            })
    }

    /// The raw pair-record plist bytes for a UDID (binary or XML).
    pub async fn read_pair_record(&self, udid: &str) -> Result<Vec<u8>, UsbmuxError> {
        let mut req = message::request("ReadPairRecord");
        req.insert("PairRecordID".into(), udid.into());
        let reply = self.request(req).await?;
        self.check_result(&reply, "ReadPairRecord")?;
        match reply.get("PairRecordData") {
            Some(Value::Data(d)) => Ok(d.clone()),
            _ => Err(UsbmuxError::BadReply {
                addr: self.host(),
                request: "ReadPairRecord".into(),
                reason: "no PairRecordData".into(),
            }),
        }
    }

    pub async fn save_pair_record(
        &self,
        udid: &str,
        data: Vec<u8>,
        device_id: Option<u32>,
    ) -> Result<(), UsbmuxError> {
        let mut req = message::request("SavePairRecord");
        req.insert("PairRecordID".into(), udid.into());
        req.insert("PairRecordData".into(), Value::Data(data));
        if let Some(id) = device_id {
            req.insert("DeviceID".into(), Value::Integer((id as u64).into()));
        }
        let reply = self.request(req).await?;
        self.check_result(&reply, "SavePairRecord")
    }

    /// Open a raw byte pipe to a TCP port on the device (62078 for lockdownd).
    pub async fn connect(&self, device_id: u32, port: u16) -> Result<BoxIo, UsbmuxError> {
        let mut req = message::request("Connect");
        req.insert("DeviceID".into(), Value::Integer((device_id as u64).into()));
        req.insert(
            "PortNumber".into(),
            Value::Integer(message::port_to_wire(port).into()),
        );
        let mut io = self.open().await?;
        let tag = self.send(&mut io, req).await?;
        let reply = self.recv(&mut io, "Connect", Some(tag)).await?;
        self.check_result(&reply, "Connect")?;
        if get_str(&reply, "MessageType") != Some("Result") {
            return Err(UsbmuxError::BadReply {
                addr: self.host(),
                request: "Connect".into(),
                reason: "no Result".into(),
            });
        }
        Ok(io)
    }

    /// Subscribe to attach/detach events. The current devices arrive first as `Attached`.
    pub async fn listen(&self) -> Result<ListenStream, UsbmuxError> {
        let mut io = self.open().await?;
        let tag = self.send(&mut io, message::request("Listen")).await?;
        let reply = self.recv(&mut io, "Listen", Some(tag)).await?;
        self.check_result(&reply, "Listen")?;
        Ok(ListenStream {
            client: self.clone(),
            io,
        })
    }
}

/// The attach/detach event stream of one usbmuxd.
pub struct ListenStream {
    client: UsbmuxClient,
    io: BoxIo,
}

impl ListenStream {
    /// The next event; `Ok(None)` when usbmuxd closed the stream. Waits without a timeout.
    pub async fn next(&mut self) -> Result<Option<MuxEvent>, UsbmuxError> {
        loop {
            let f = match frame::read_frame(&mut self.io).await {
                Ok(f) => f,
                Err(FrameError::Closed) => return Ok(None),
                Err(source) => {
                    return Err(UsbmuxError::Frame {
                        addr: self.client.host(),
                        request: "Listen".into(),
                        source,
                    });
                }
            };
            let d = self.client.check_frame(f, "Listen", None)?;
            match MuxEvent::from_plist(&d) {
                Ok(ev) => return Ok(Some(ev)),
                // Unknown event types are skipped, as libusbmuxd does.
                Err(reason) => tracing::debug!(%reason, "skipping usbmuxd event"),
            }
        }
    }
}
