//! usbmuxd framing: a 16-byte little-endian header followed by the payload.
//!
//! `../shared/briefs/device-side.md` §1.1: `length` (u32, includes the header), `version`
//! (0 binary, 1 plist), `message` (8 = PLIST), `tag` (echoed). Byte order is little-endian on
//! every real host (libusbmuxd writes the packed struct in host order).

use crate::io::MAX_FRAME_LEN;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const HEADER_LEN: usize = 16;
/// Protocol version 1 is the plist protocol; version 0 is the legacy binary protocol.
pub const VERSION_PLIST: u32 = 1;
pub const VERSION_BINARY: u32 = 0;
/// Message numbers from usbmuxd-proto.h (brief §1.1).
pub const MSG_RESULT: u32 = 1;
pub const MSG_CONNECT: u32 = 2;
pub const MSG_LISTEN: u32 = 3;
pub const MSG_PLIST: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub length: u32,
    pub version: u32,
    pub message: u32,
    pub tag: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.length.to_le_bytes());
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.message.to_le_bytes());
        b[12..16].copy_from_slice(&self.tag.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; HEADER_LEN]) -> Header {
        let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            length: u(0),
            version: u(4),
            message: u(8),
            tag: u(12),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("connection closed in the middle of a frame ({got} of {expected} bytes)")]
    Truncated { got: usize, expected: usize },
    #[error("frame of {announced} bytes refused (limit {limit} bytes)")]
    TooLarge { announced: u64, limit: usize },
    #[error("frame length {0} is shorter than the 16-byte header")]
    TooShort(u32),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Encode one frame. The caller picks version, message and tag.
pub fn encode(version: u32, message: u32, tag: u32, payload: &[u8]) -> Vec<u8> {
    let header = Header {
        length: (HEADER_LEN + payload.len()) as u32,
        version,
        message,
        tag,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(payload);
    out
}

/// Decode a frame from a complete buffer (used by the fuzz targets and tests).
/// Returns the frame and the number of bytes consumed, or `Ok(None)` when more bytes are needed.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let header = Header::decode(buf[..HEADER_LEN].try_into().expect("16 bytes"));
    let total = check_length(header.length)?;
    if buf.len() < total {
        return Ok(None);
    }
    let payload = buf[HEADER_LEN..total].to_vec();
    Ok(Some((Frame { header, payload }, total)))
}

fn check_length(length: u32) -> Result<usize, FrameError> {
    if (length as usize) < HEADER_LEN {
        return Err(FrameError::TooShort(length));
    }
    if length as usize > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            announced: length as u64,
            limit: MAX_FRAME_LEN,
        });
    }
    Ok(length as usize)
}

/// Read one frame. A clean EOF before the first header byte is `Closed`; EOF later is `Truncated`.
pub async fn read_frame<R: AsyncRead + Unpin + ?Sized>(r: &mut R) -> Result<Frame, FrameError> {
    let mut hb = [0u8; HEADER_LEN];
    read_exact_or(r, &mut hb, HEADER_LEN, true).await?;
    let header = Header::decode(&hb);
    let total = check_length(header.length)?;
    let mut payload = vec![0u8; total - HEADER_LEN];
    read_exact_or(r, &mut payload, total, false).await?;
    Ok(Frame { header, payload })
}

/// `read_exact` that distinguishes a clean close from a truncated frame.
pub(crate) async fn read_exact_or<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    buf: &mut [u8],
    expected_total: usize,
    at_frame_start: bool,
) -> Result<(), FrameError> {
    let mut got = 0;
    while got < buf.len() {
        let n = r.read(&mut buf[got..]).await?;
        if n == 0 {
            if got == 0 && at_frame_start {
                return Err(FrameError::Closed);
            }
            let before = if at_frame_start {
                0
            } else {
                expected_total - buf.len()
            };
            return Err(FrameError::Truncated {
                got: before + got,
                expected: expected_total,
            });
        }
        got += n;
    }
    Ok(())
}

pub async fn write_frame<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    version: u32,
    message: u32,
    tag: u32,
    payload: &[u8],
) -> std::io::Result<()> {
    w.write_all(&encode(version, message, tag, payload)).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_little_endian_as_libusbmuxd_sends_it() {
        // brief §1.1: libusbmuxd's ListDevices header, len=428 ver=1 msg=8 tag=1.
        let raw = [0xac, 0x01, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0u8];
        let h = Header::decode(&raw);
        assert_eq!(
            h,
            Header {
                length: 428,
                version: 1,
                message: 8,
                tag: 1
            }
        );
        assert_eq!(h.encode(), raw);
    }

    #[test]
    fn decode_roundtrip_and_partial() {
        let f = encode(1, 8, 7, b"hello");
        assert!(decode(&f[..10]).unwrap().is_none());
        assert!(decode(&f[..f.len() - 1]).unwrap().is_none());
        let (frame, used) = decode(&f).unwrap().unwrap();
        assert_eq!(used, f.len());
        assert_eq!(frame.payload, b"hello");
        assert_eq!(frame.header.tag, 7);
    }

    #[test]
    fn oversized_and_undersized_lengths_are_refused() {
        let mut f = encode(1, 8, 1, b"");
        f[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&f), Err(FrameError::TooLarge { .. })));
        f[0..4].copy_from_slice(&3u32.to_le_bytes());
        assert!(matches!(decode(&f), Err(FrameError::TooShort(3))));
    }

    #[tokio::test]
    async fn read_frame_reports_truncation_and_clean_close() {
        let f = encode(1, 8, 1, b"0123456789");
        let mut short: &[u8] = &f[..20];
        match read_frame(&mut short).await {
            Err(FrameError::Truncated { got, expected }) => {
                assert_eq!((got, expected), (20, 26));
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut empty: &[u8] = &[];
        assert!(matches!(
            read_frame(&mut empty).await,
            Err(FrameError::Closed)
        ));
        let mut half_header: &[u8] = &f[..5];
        assert!(matches!(
            read_frame(&mut half_header).await,
            Err(FrameError::Truncated { got: 5, .. })
        ));
    }
}
