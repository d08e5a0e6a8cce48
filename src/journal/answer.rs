//! The one decoder of a journalled device answer (`MdmResult.raw_b64`,
//! `UpdatesOffered.updates.raw_b64`): base64 to the plist bytes the device sent, and those bytes
//! to a [`Report`] through `mdm::report::parse_report`, which reads every untrusted plist
//! through `plist_util::parse` and its nesting-depth limit. The runner, the progress view and the
//! reports all take answers in here, so they cannot disagree on what an answer said.

use crate::mdm::report::{Report, ReportError, parse_report};
use base64::Engine;

/// Why a journalled answer could not be read. The texts are the ones the reports print.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("raw_b64 is not base64: {0}")]
    NotBase64(#[source] base64::DecodeError),
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// The bytes the device sent (surrounding whitespace ignored, as a hand-edited line may hold).
pub fn bytes(raw_b64: &str) -> Result<Vec<u8>, AnswerError> {
    base64::engine::general_purpose::STANDARD
        .decode(raw_b64.trim())
        .map_err(AnswerError::NotBase64)
}

/// [`bytes`] into `buf` (cleared first): scratch space a caller decoding many answers keeps.
pub fn bytes_into(raw_b64: &str, buf: &mut Vec<u8>) -> Result<(), AnswerError> {
    buf.clear();
    base64::engine::general_purpose::STANDARD
        .decode_vec(raw_b64.trim(), buf)
        .map_err(AnswerError::NotBase64)
}

/// The answer as a [`Report`] (`Status`, identity, `CommandUUID`, the body).
pub fn report(raw_b64: &str) -> Result<Report, AnswerError> {
    Ok(parse_report(&bytes(raw_b64)?)?)
}

/// Plist bytes already decoded by [`bytes`] as a [`Report`].
pub fn report_of(raw: &[u8]) -> Result<Report, AnswerError> {
    Ok(parse_report(raw)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    const ACK: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict>
<key>Status</key><string>Acknowledged</string>
<key>UDID</key><string>U1</string>
<key>CommandUUID</key><string>C1</string>
</dict></plist>"#;

    #[test]
    fn an_answer_reads_as_the_report_the_device_sent() {
        let r = report(&format!(" {}\n", b64(ACK.as_bytes()))).unwrap();
        assert_eq!(r.udid.as_deref(), Some("U1"));
        assert_eq!(r.command_uuid.as_deref(), Some("C1"));
        let mut buf = vec![1, 2, 3];
        bytes_into(&b64(ACK.as_bytes()), &mut buf).unwrap();
        assert_eq!(buf, ACK.as_bytes());
        assert_eq!(report_of(&buf).unwrap().udid.as_deref(), Some("U1"));
    }

    #[test]
    fn garbage_is_named_for_what_it_is() {
        let e = report("not base64!").unwrap_err();
        assert!(matches!(e, AnswerError::NotBase64(_)), "{e}");
        assert!(e.to_string().starts_with("raw_b64 is not base64: "), "{e}");
        let e = report(&b64(b"hello")).unwrap_err();
        assert!(matches!(e, AnswerError::Report(_)), "{e}");
        // Deeper than the plist depth limit: refused, not a stack overflow.
        let deep = format!(
            "<plist version=\"1.0\">{}{}</plist>",
            "<array>".repeat(10_000),
            "</array>".repeat(10_000)
        );
        assert!(matches!(
            report(&b64(deep.as_bytes())),
            Err(AnswerError::Report(_))
        ));
    }
}
