//! Byte-stream plumbing shared by the usbmuxd and lockdownd codecs, client and simulator.
//!
//! A usbmuxd connection can be a unix socket or TCP (a remote host's usbmuxd exposed over the
//! network), and after `Connect` the same socket carries lockdownd and later TLS. Everything above
//! the socket is therefore written against one boxed stream type.

use tokio::io::{AsyncRead, AsyncWrite};

/// Any bidirectional async byte stream.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A boxed stream: unix socket, TCP socket or TLS over either.
pub type BoxIo = Box<dyn Io>;

/// The largest frame any codec in `lab` accepts. Pair records are a few KiB and a 1 000-device
/// `DeviceList` well under 1 MiB, so 16 MiB is generous; a length above it is refused before any
/// buffer is allocated (a hostile or broken peer can announce 4 GiB).
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;
