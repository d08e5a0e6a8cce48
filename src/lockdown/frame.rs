//! lockdownd framing: a 4-byte big-endian length followed by a plist (brief §3.1).

use crate::io::MAX_FRAME_LEN;
use crate::usbmux::frame::{FrameError, read_exact_or};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

pub const LEN_PREFIX: usize = 4;

pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(LEN_PREFIX + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Decode from a complete buffer: `Ok(None)` when more bytes are needed.
pub fn decode(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, FrameError> {
    if buf.len() < LEN_PREFIX {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let len = check(len)?;
    if buf.len() < LEN_PREFIX + len {
        return Ok(None);
    }
    Ok(Some((
        buf[LEN_PREFIX..LEN_PREFIX + len].to_vec(),
        LEN_PREFIX + len,
    )))
}

fn check(len: u32) -> Result<usize, FrameError> {
    if len as usize > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            announced: len as u64,
            limit: MAX_FRAME_LEN,
        });
    }
    Ok(len as usize)
}

/// Read one frame's payload; the length is checked before anything is allocated.
pub async fn read_frame<R: AsyncRead + Unpin + ?Sized>(r: &mut R) -> Result<Vec<u8>, FrameError> {
    let mut lb = [0u8; LEN_PREFIX];
    read_exact_or(r, &mut lb, LEN_PREFIX, true).await?;
    let len = check(u32::from_be_bytes(lb))?;
    let mut payload = vec![0u8; len];
    read_exact_or(r, &mut payload, LEN_PREFIX + len, false).await?;
    Ok(payload)
}

pub async fn write_frame<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    payload: &[u8],
) -> std::io::Result<()> {
    w.write_all(&encode(payload)).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_is_big_endian() {
        assert_eq!(&encode(b"abc")[..4], &[0, 0, 0, 3]);
        let (p, n) = decode(&encode(b"abc")).unwrap().unwrap();
        assert_eq!((p.as_slice(), n), (&b"abc"[..], 7));
        assert!(decode(&[0, 0, 0, 9, 1]).unwrap().is_none());
    }

    #[tokio::test]
    async fn four_gib_announcement_is_refused_without_allocating() {
        let mut r: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        match read_frame(&mut r).await {
            Err(FrameError::TooLarge { announced, .. }) => assert_eq!(announced, 0xffff_ffff),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn close_mid_frame_is_truncation() {
        let mut r: &[u8] = &[0, 0, 0, 100, b'<', b'?'];
        assert!(matches!(
            read_frame(&mut r).await,
            Err(FrameError::Truncated {
                got: 6,
                expected: 104
            })
        ));
    }
}
