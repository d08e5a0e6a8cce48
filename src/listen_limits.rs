//! Timeouts and connection caps for every listener `lab` runs: the embedded MDM server, the
//! webhook receiver, and the simulator's usbmuxd (which carries its lockdownd tunnels) and APNs
//! stand-in (issue 18).
//!
//! Without them a client that connects and sends nothing held its connection forever, and a
//! few hundred such connections exhausted the file descriptors so that even authenticated API
//! calls timed out. The rules:
//!
//! - **Header read timeout** ([`HEADER_READ_TIMEOUT`]): an HTTP request head must be complete
//!   within this time of the connection opening or of the previous response (hyper's
//!   `header_read_timeout`, which therefore also bounds keep-alive idleness); a usbmuxd or
//!   lockdown client must send its first complete frame within it.
//! - **Idle timeout** ([`IDLE_TIMEOUT`]): on an HTTP connection, no byte in either direction for
//!   this long (a body upload that stalls) closes it; on a usbmuxd or lockdown connection, the
//!   gap allowed between two requests. A usbmuxd `Listen` connection is exempt: the client
//!   only waits for events there.
//! - **Connection cap** ([`MAX_CONNECTIONS`], lowered to fit the file-descriptor limit, see
//!   [`fd_budget`]): at the cap, a new connection displaces the *oldest idle* one (a connection
//!   with no request in progress: one that has not sent a complete request yet, or a keep-alive
//!   connection between requests). If every connection is busy, the new one is refused cleanly
//!   (HTTP: a `503` with `Connection: close`; raw protocols: closed). Displacing instead of
//!   refusing is what keeps the authenticated API answering while the device side is flooded
//!   with idle connections: a flood can only push out other idle connections, never a request
//!   being served, and the API's connection gets in.
//!
//! Tests and benches shorten the timeouts with the environment variables
//! [`ENV_HEADER_TIMEOUT_MS`], [`ENV_IDLE_TIMEOUT_MS`] and [`ENV_MAX_CONNECTIONS`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Pending connections a TCP listener of `lab`'s queues before the kernel drops SYNs. tokio's
/// `TcpListener::bind` asks for 128: a probe of 128 devices at once, each opening its lockdown
/// tunnel and reading its pair record at the same time, overflowed it, and every dropped SYN
/// cost its device a 1 s retransmission (issue 16; `nstat` TcpExtListenOverflows).
pub const ACCEPT_BACKLOG: u32 = 1024;

/// Bind a TCP listener with [`ACCEPT_BACKLOG`] (the kernel caps it at `net.core.somaxconn`).
pub async fn bind_tcp(
    addr: impl tokio::net::ToSocketAddrs,
) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a) {
            Ok(()) => return socket.listen(ACCEPT_BACKLOG),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")
    }))
}

/// Time allowed for an HTTP request head, or a raw protocol's first frame. hyper's own default
/// (30 s); a device on a slow link sends a few hundred bytes of headers well within it.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// No byte either way for this long ends an HTTP request in progress, or a usbmuxd/lockdown
/// connection between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections per listener, before [`fd_budget`] lowers it.
pub const MAX_CONNECTIONS: usize = 1024;
/// File descriptors kept free of any listener's cap: the store's SQLite files, outgoing webhook
/// and APNs connections, the journal, stdio, the tokio runtime.
pub const FD_RESERVE: u64 = 64;
/// The floor of a listener's cap however low the descriptor limit is.
pub const MIN_CONNECTIONS: usize = 16;

pub const ENV_HEADER_TIMEOUT_MS: &str = "LAB_LISTEN_HEADER_TIMEOUT_MS";
pub const ENV_IDLE_TIMEOUT_MS: &str = "LAB_LISTEN_IDLE_TIMEOUT_MS";
pub const ENV_MAX_CONNECTIONS: &str = "LAB_LISTEN_MAX_CONNECTIONS";

/// The limits one listener applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}={value:?}: expected a whole number greater than 0")]
pub struct LimitsError {
    pub var: &'static str,
    pub value: String,
}

impl Limits {
    /// The defaults, the environment overrides, and the cap lowered to the descriptor budget.
    pub fn from_env() -> Result<Limits, LimitsError> {
        Self::from_lookup(|k| std::env::var(k).ok(), fd_budget(soft_nofile()))
    }

    /// Pure part of [`Limits::from_env`].
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        budget: usize,
    ) -> Result<Limits, LimitsError> {
        let num = |var: &'static str| -> Result<Option<u64>, LimitsError> {
            match get(var) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(Some(n)),
                    _ => Err(LimitsError { var, value: v }),
                },
            }
        };
        let ms = |var, default: Duration| -> Result<Duration, LimitsError> {
            Ok(num(var)?.map(Duration::from_millis).unwrap_or(default))
        };
        let max = num(ENV_MAX_CONNECTIONS)?
            .map(|n| n as usize)
            .unwrap_or(MAX_CONNECTIONS);
        Ok(Limits {
            header_read_timeout: ms(ENV_HEADER_TIMEOUT_MS, HEADER_READ_TIMEOUT)?,
            idle_timeout: ms(ENV_IDLE_TIMEOUT_MS, IDLE_TIMEOUT)?,
            max_connections: max.min(budget),
        })
    }

    /// The limits of this process, read once (`main` checks them at start, so that a bad
    /// override is an exit 2 there; here it falls back to the defaults).
    pub fn current() -> Limits {
        static CURRENT: OnceLock<Limits> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            Limits::from_env().unwrap_or(Limits {
                header_read_timeout: HEADER_READ_TIMEOUT,
                idle_timeout: IDLE_TIMEOUT,
                max_connections: MAX_CONNECTIONS.min(fd_budget(soft_nofile())),
            })
        })
    }
}

/// How many connections one listener may hold under a soft descriptor limit of `soft`: half of
/// what [`FD_RESERVE`] leaves, so that two flooded listeners (the simulator runs usbmuxd, the
/// MDM server and APNs in one process) still leave descriptors for everything else.
pub fn fd_budget(soft: u64) -> usize {
    let half = soft.saturating_sub(FD_RESERVE) / 2;
    (half.min(usize::MAX as u64) as usize).max(MIN_CONNECTIONS)
}

/// The current soft RLIMIT_NOFILE (a large number when unlimited or unknown).
pub fn soft_nofile() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return u64::MAX;
    }
    rl.rlim_cur
}

/// Raise the soft RLIMIT_NOFILE to the hard limit (a soft limit of 1 024 is common while the
/// hard one is far higher). Returns (before, after); an error leaves the limit as it was.
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let before = rl.rlim_cur;
        if rl.rlim_cur >= rl.rlim_max {
            return Ok((before, before));
        }
        rl.rlim_cur = rl.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((before, rl.rlim_cur))
    }
}

// ------------------------------------------------------------------ connection tracking

/// The open connections of one listener, oldest first.
pub struct ConnTracker {
    max: usize,
    inner: Mutex<TrackerInner>,
}

#[derive(Default)]
struct TrackerInner {
    next_id: u64,
    open: BTreeMap<u64, Tracked>,
}

struct Tracked {
    busy: Arc<AtomicUsize>,
    evict: Arc<Notify>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl ConnTracker {
    pub fn new(max: usize) -> Arc<ConnTracker> {
        Arc::new(ConnTracker {
            max: max.max(1),
            inner: Mutex::new(TrackerInner::default()),
        })
    }

    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admit a new connection; at the cap, displace the oldest idle one, or refuse.
    pub fn admit(self: &Arc<Self>) -> Result<ConnGuard, Full> {
        let mut g = self.lock();
        if g.open.len() >= self.max {
            let victim = g
                .open
                .iter()
                .find(|(_, t)| t.busy.load(Ordering::SeqCst) == 0)
                .map(|(id, _)| *id);
            let Some(victim) = victim else {
                return Err(Full);
            };
            if let Some(t) = g.open.remove(&victim) {
                // `notify_one` keeps the permit if the connection is not waiting yet.
                t.evict.notify_one();
            }
        }
        let id = g.next_id;
        g.next_id += 1;
        let busy = Arc::new(AtomicUsize::new(0));
        let evict = Arc::new(Notify::new());
        g.open.insert(
            id,
            Tracked {
                busy: busy.clone(),
                evict: evict.clone(),
            },
        );
        Ok(ConnGuard {
            id,
            tracker: self.clone(),
            busy,
            evict,
        })
    }
}

/// One admitted connection; dropping it frees its place.
pub struct ConnGuard {
    id: u64,
    tracker: Arc<ConnTracker>,
    busy: Arc<AtomicUsize>,
    evict: Arc<Notify>,
}

impl ConnGuard {
    /// Resolves when a newer connection displaced this one: end the connection then.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }

    /// Mark a request in progress until the returned guard drops (busy connections are never
    /// displaced).
    pub fn busy(&self) -> BusyGuard {
        BusyGuard::enter(self.busy.clone())
    }

    /// A handle for marking requests from inside a service closure.
    pub fn busy_counter(&self) -> Arc<AtomicUsize> {
        self.busy.clone()
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.tracker.lock().open.remove(&self.id);
    }
}

pub struct BusyGuard(Arc<AtomicUsize>);

impl BusyGuard {
    pub fn enter(counter: Arc<AtomicUsize>) -> BusyGuard {
        counter.fetch_add(1, Ordering::SeqCst);
        BusyGuard(counter)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

// ------------------------------------------------------------------ idle timeout on a stream

/// A stream that fails with `TimedOut` once no byte has moved either way for `idle` while a
/// read is waiting.
pub struct IdleIo<T> {
    inner: T,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<T> IdleIo<T> {
    pub fn new(inner: T, idle: Duration) -> IdleIo<T> {
        IdleIo {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn touch(&mut self) {
        let at = tokio::time::Instant::now() + self.idle;
        self.deadline.as_mut().reset(at);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connection idle for too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ------------------------------------------------------------------ HTTP/1.1 serving

/// The answer to a connection refused at the cap: written best-effort, then closed.
const REFUSAL_503: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n";

/// Serve an axum app over HTTP/1.1 with the [`Limits`]. Devices and the NanoMDM-style API
/// clients speak HTTP/1.1 to an MDM server (h2c is not offered; Go's client would not use it
/// either), so hyper's HTTP/1 connection, which has a header read timeout, is enough.
pub async fn serve_http(listener: tokio::net::TcpListener, app: axum::Router, limits: Limits) {
    use hyper::service::Service as _;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let tracker = ConnTracker::new(limits.max_connections);
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // EMFILE and friends: wait for descriptors to free up rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let guard = match tracker.admit() {
            Ok(g) => g,
            Err(Full) => {
                let _ = tcp.try_write(REFUSAL_503);
                drop(tcp);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let tower = TowerToHyperService::new(app);
            let busy = guard.busy_counter();
            let svc = hyper::service::service_fn(move |req| {
                let mark = BusyGuard::enter(busy.clone());
                let fut = tower.call(req);
                async move {
                    let r = fut.await;
                    drop(mark);
                    r
                }
            });
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let io = TokioIo::new(IdleIo::new(tcp, limits.idle_timeout));
            let conn = b.serve_connection(io, svc);
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "HTTP connection ended");
                    }
                }
                _ = guard.evicted() => {
                    tracing::debug!("idle HTTP connection displaced by a newer one at the cap");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_are_read_and_checked() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let l = Limits::from_lookup(env(&[]), 10_000).unwrap();
        assert_eq!(l.header_read_timeout, HEADER_READ_TIMEOUT);
        assert_eq!(l.idle_timeout, IDLE_TIMEOUT);
        assert_eq!(l.max_connections, MAX_CONNECTIONS);
        let l = Limits::from_lookup(
            env(&[
                (ENV_HEADER_TIMEOUT_MS, "500"),
                (ENV_IDLE_TIMEOUT_MS, "700"),
                (ENV_MAX_CONNECTIONS, "5000"),
            ]),
            96,
        )
        .unwrap();
        assert_eq!(l.header_read_timeout, Duration::from_millis(500));
        assert_eq!(l.idle_timeout, Duration::from_millis(700));
        assert_eq!(l.max_connections, 96, "never above the descriptor budget");
        for bad in ["0", "-1", "soon"] {
            let get = move |k: &str| (k == ENV_IDLE_TIMEOUT_MS).then(|| bad.to_string());
            let e = Limits::from_lookup(get, 100).unwrap_err();
            assert_eq!(e.var, ENV_IDLE_TIMEOUT_MS);
        }
    }

    #[test]
    fn descriptor_budget_leaves_a_reserve_for_two_listeners() {
        assert_eq!(fd_budget(256), 96);
        assert_eq!(fd_budget(1024), 480);
        assert_eq!(fd_budget(10), MIN_CONNECTIONS);
        assert!(fd_budget(u64::MAX) >= MAX_CONNECTIONS);
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_idle_connection_is_displaced_never_a_busy_one() {
        let t = ConnTracker::new(2);
        let a = t.admit().unwrap();
        let b = t.admit().unwrap();
        let _busy_a = a.busy();
        // `a` is busy, `b` idle: a third connection displaces `b`.
        let c = t.admit().unwrap();
        tokio::time::timeout(Duration::from_secs(1), b.evicted())
            .await
            .expect("b was told to close");
        assert_eq!(t.open(), 2);
        let _busy_c = c.busy();
        // Everything busy: refused.
        assert!(t.admit().is_err());
        drop(_busy_c);
        let _d = t.admit().unwrap();
        drop(b);
        assert_eq!(
            t.open(),
            2,
            "a displaced guard dropping does not free another's place"
        );
    }

    #[tokio::test]
    async fn an_idle_stream_times_out_an_active_one_does_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, mut b) = tokio::io::duplex(64);
        let mut io = IdleIo::new(a, Duration::from_millis(200));
        let writer = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                b.write_all(b"x").await.unwrap();
            }
            b
        });
        let mut buf = [0u8; 1];
        for _ in 0..4 {
            io.read_exact(&mut buf).await.unwrap();
        }
        let _b = writer.await.unwrap();
        let e = io.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    }

    #[test]
    fn raising_the_descriptor_limit_never_lowers_it() {
        let before = soft_nofile();
        if let Ok((b, a)) = raise_nofile_limit() {
            assert_eq!(b, before);
            assert!(a >= b);
        }
        assert!(soft_nofile() >= before);
    }
}
