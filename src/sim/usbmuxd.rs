//! The simulated usbmuxd: plist protocol v1 over a unix socket or TCP (brief §1, §8).

use super::lab::SimLab;
use super::lockdownd;
use crate::io::BoxIo;
use crate::listen_limits::{ConnGuard, ConnTracker, Limits};
use crate::plist_util::{self, get_str, get_u64};
use crate::usbmux::UsbmuxAddr;
use crate::usbmux::frame::{
    self, FrameError, MSG_PLIST, MSG_RESULT, VERSION_BINARY, VERSION_PLIST,
};
use crate::usbmux::message::{self, *};
use plist::{Dictionary, Value};
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UnixListener};

/// A bound usbmuxd listener.
pub enum Listener {
    Unix(UnixListener, std::path::PathBuf),
    Tcp(TcpListener),
}

impl Listener {
    /// Bind an address. TCP binds where told (loopback unless the operator names another).
    pub async fn bind(addr: &UsbmuxAddr) -> std::io::Result<Listener> {
        match addr {
            UsbmuxAddr::Unix(p) => {
                // A stale socket file from a previous run would make bind fail.
                if p.exists() {
                    let _ = std::fs::remove_file(p);
                }
                Ok(Listener::Unix(UnixListener::bind(p)?, p.clone()))
            }
            UsbmuxAddr::Tcp { host, port } => Ok(Listener::Tcp(
                crate::listen_limits::bind_tcp((host.as_str(), *port)).await?,
            )),
        }
    }

    /// The address clients use (with the real port when bound to port 0).
    pub fn local_addr(&self) -> UsbmuxAddr {
        match self {
            Listener::Unix(_, p) => UsbmuxAddr::Unix(p.clone()),
            Listener::Tcp(l) => {
                let a = l.local_addr().expect("bound socket has an address");
                UsbmuxAddr::Tcp {
                    host: a.ip().to_string(),
                    port: a.port(),
                }
            }
        }
    }

    async fn accept(&self) -> std::io::Result<BoxIo> {
        match self {
            Listener::Unix(l, _) => Ok(Box::new(l.accept().await?.0)),
            Listener::Tcp(l) => {
                let (s, _) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok(Box::new(s))
            }
        }
    }
}

/// Accept clients forever, with the limits of [`crate::listen_limits`]: a client must send its
/// first request within the header timeout and the next ones within the idle timeout (a
/// `Listen` client is exempt: it only waits), and at the connection cap a client that has not
/// sent a request yet gives its place to the newcomer; if every client has, the newcomer is
/// closed at once.
pub async fn serve(lab: Arc<SimLab>, listener: Listener) {
    let limits = Limits::current();
    let tracker = ConnTracker::new(limits.max_connections);
    loop {
        match listener.accept().await {
            Ok(io) => {
                let Ok(guard) = tracker.admit() else {
                    tracing::debug!("usbmuxd connection refused: at the connection cap");
                    drop(io);
                    continue;
                };
                let lab = lab.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        r = handle_client(lab, io, &guard, limits) => {
                            if let Err(e) = r {
                                tracing::debug!(error = %e, "usbmuxd client ended");
                            }
                        }
                        _ = guard.evicted() => {
                            tracing::debug!("silent usbmuxd client displaced at the connection cap");
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "usbmuxd accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn reply(io: &mut BoxIo, tag: u32, d: Dictionary) -> std::io::Result<()> {
    frame::write_frame(
        io,
        VERSION_PLIST,
        MSG_PLIST,
        tag,
        &plist_util::dict_to_xml(d),
    )
    .await
}

async fn handle_client(
    lab: Arc<SimLab>,
    mut io: BoxIo,
    guard: &ConnGuard,
    limits: Limits,
) -> Result<(), FrameError> {
    let mut established = None;
    loop {
        let wait = if established.is_none() {
            limits.header_read_timeout
        } else {
            limits.idle_timeout
        };
        let f = match tokio::time::timeout(wait, frame::read_frame(&mut io)).await {
            Err(_) => {
                tracing::debug!("usbmuxd client idle: connection closed");
                return Ok(());
            }
            Ok(Err(FrameError::Closed)) => return Ok(()),
            Ok(r) => r?,
        };
        // A client that completed a request is no longer displaced at the cap.
        established.get_or_insert_with(|| guard.busy());
        let tag = f.header.tag;
        if f.header.version != VERSION_PLIST || f.header.message != MSG_PLIST {
            // Only the plist protocol is spoken (the binary one is unusable in libusbmuxd 2.0.2,
            // brief §1.2); answer as usbmuxd does to a version it does not take.
            frame::write_frame(
                &mut io,
                VERSION_BINARY,
                MSG_RESULT,
                tag,
                &(RESULT_BADVERSION as u32).to_le_bytes(),
            )
            .await?;
            continue;
        }
        let Ok(req) = plist_util::parse_dict(&f.payload) else {
            reply(&mut io, tag, result(RESULT_BADCOMMAND)).await?;
            continue;
        };
        match get_str(&req, "MessageType").unwrap_or("") {
            "ListDevices" => {
                let list: Vec<Value> = lab
                    .list()
                    .iter()
                    .map(|e| Value::Dictionary(e.to_attached()))
                    .collect();
                let mut d = Dictionary::new();
                d.insert("DeviceList".into(), Value::Array(list));
                reply(&mut io, tag, d).await?;
            }
            "ReadBUID" => {
                let mut d = Dictionary::new();
                d.insert("BUID".into(), lab.buid.clone().into());
                reply(&mut io, tag, d).await?;
            }
            "ReadPairRecord" => match get_str(&req, "PairRecordID") {
                None => reply(&mut io, tag, result(ERRNO_EINVAL)).await?,
                Some(udid) => match lab.pair_record(udid) {
                    Some(bytes) => {
                        let mut d = Dictionary::new();
                        d.insert("PairRecordData".into(), Value::Data(bytes));
                        reply(&mut io, tag, d).await?;
                    }
                    None => reply(&mut io, tag, result(ERRNO_ENOENT)).await?,
                },
            },
            "SavePairRecord" => match (get_str(&req, "PairRecordID"), req.get("PairRecordData")) {
                (Some(udid), Some(Value::Data(data))) => {
                    lab.save_pair_record(udid, data.clone());
                    reply(&mut io, tag, result(RESULT_OK)).await?;
                }
                _ => reply(&mut io, tag, result(ERRNO_EINVAL)).await?,
            },
            "DeletePairRecord" => match get_str(&req, "PairRecordID") {
                Some(udid) => {
                    let n = if lab.delete_pair_record(udid) {
                        RESULT_OK
                    } else {
                        ERRNO_ENOENT
                    };
                    reply(&mut io, tag, result(n)).await?;
                }
                None => reply(&mut io, tag, result(ERRNO_EINVAL)).await?,
            },
            "Listen" => return listen(lab, io, tag).await,
            "Connect" => {
                let id = get_u64(&req, "DeviceID").and_then(|i| u32::try_from(i).ok());
                let port = get_u64(&req, "PortNumber").and_then(message::port_from_wire);
                let dev = id.and_then(|id| lab.by_device_id(id));
                match (dev, port) {
                    (None, _) | (_, None) => reply(&mut io, tag, result(RESULT_BADDEV)).await?,
                    (Some(_), Some(p)) if p != LOCKDOWN_PORT => {
                        reply(&mut io, tag, result(RESULT_CONNREFUSED)).await?
                    }
                    (Some(dev), Some(_)) => {
                        reply(&mut io, tag, result(RESULT_OK)).await?;
                        // From here the socket is a raw pipe to the device's lockdownd.
                        lockdownd::serve(lab.clone(), dev, io).await;
                        return Ok(());
                    }
                }
            }
            _ => reply(&mut io, tag, result(RESULT_BADCOMMAND)).await?,
        }
    }
}

async fn listen(lab: Arc<SimLab>, mut io: BoxIo, tag: u32) -> Result<(), FrameError> {
    let (current, mut rx) = lab.subscribe();
    reply(&mut io, tag, result(RESULT_OK)).await?;
    for e in current {
        reply(&mut io, 0, e.to_attached()).await?;
    }
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => reply(&mut io, 0, ev.to_plist()).await?,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "a Listen client fell behind");
                }
                Err(_) => return Ok(()),
            },
            n = io.read(&mut buf) => match n {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {} // clients send nothing after Listen; ignore
            },
        }
    }
}
