//! Declarative Device Management (DDM) as `lab` speaks it for software-update trials: pure
//! data, no servers, no network (DDM brief `shared/briefs/ddm.md`, cited as "DDM brief §N").
//!
//! - [`declaration`]: the declaration envelope and the three payloads `lab` uses — the
//!   enforcement (`com.apple.configuration.softwareupdate.enforcement.specific`, the dose), the
//!   activation (`com.apple.activation.simple`) and the status subscriptions
//!   (`com.apple.configuration.management.status-subscriptions`).
//! - [`protocol`]: the synchronisation documents (tokens, declaration-items), the
//!   `DeclarativeManagement` check-in message with its `Endpoint`, and the `DeclarativeManagement`
//!   MDM command that turns DDM on.
//! - [`status`]: the device's status report and a typed reading of the `softwareupdate.*` and
//!   `device.operating-system.*` items.
//!
//! Key names follow Apple's schema files in `shared/reference/apple-device-management/`
//! (`declarative/...`, `mdm/checkin/declarativemanagement.yaml`,
//! `mdm/commands/declarativemanagement.yaml`), cited by path in each module.
//!
//! Everything here reads untrusted bytes (a device's report, an operator's declaration) through
//! [`parse_json`], which bounds the size and the nesting depth before anything is typed, as the
//! plist side does with `plist_util::parse_limited`.

pub mod declaration;
pub mod protocol;
pub mod status;

pub use declaration::{
    ACTIVATION_SIMPLE, ActivationSimple, Declaration, DeclarationKind, ENFORCEMENT_SPECIFIC,
    Enforcement, LocalDateTime, STATUS_SUBSCRIPTIONS, StatusSubscriptions,
};
pub use protocol::{
    DDM_CHECKIN_MESSAGE_TYPE, DdmCheckin, DeclarationItems, Endpoint, ManifestDeclarations,
    ManifestItem, SyncTokens, TokensResponse, declarative_management_command,
};
pub use status::{
    FailureReason, InstallReason, InstallState, PendingVersion, SUBSCRIBED_ITEMS,
    SoftwareUpdateView, StatusReport,
};

/// Largest DDM JSON document `lab` reads (a declaration, a manifest, a status report).
/// **Assumption**: Apple sets no limit; a real first status report with client capabilities is
/// a few KiB (KMFDDM `test/e2e/testdata/status.1st.json`, DDM brief §1), so 1 MiB leaves room
/// for large declaration sets while refusing a hostile body.
pub const MAX_DDM_JSON_BYTES: usize = 1024 * 1024;
/// Deepest nesting `lab` reads. The deepest documented shape (a status report's
/// `StatusItems.management.declarations.configurations[].reasons[].details`) is 7 levels.
pub const MAX_DDM_JSON_DEPTH: usize = 32;
/// Apple's size limit for `Identifier` and `ServerToken`: "should not exceed 64 octets"
/// (`declarative/declarations/declarationbase.yaml`).
pub const MAX_TOKEN_OCTETS: usize = 64;
/// Apple's limit for the synchronisation token ("≤ 256 octets", DDM brief §1, AppleDoc
/// synchronizationtokens).
pub const MAX_SYNC_TOKEN_OCTETS: usize = 256;

/// Why a DDM document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DdmError {
    #[error("DDM document of {0} bytes exceeds the {MAX_DDM_JSON_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("DDM document nests deeper than {MAX_DDM_JSON_DEPTH} levels")]
    TooDeep,
    #[error("DDM document is not JSON: {0}")]
    NotJson(String),
    #[error("DDM document is not a JSON object")]
    NotObject,
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{key} is a {got}, not a {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        got: &'static str,
    },
    #[error("{key} is {len} octets, over the {max}-octet limit")]
    TooLong {
        key: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{key}: {msg}")]
    Invalid { key: String, msg: String },
    #[error("unknown payload keys: {0:?}")]
    UnknownPayloadKeys(Vec<String>),
    #[error("check-in is not a plist: {0}")]
    NotPlist(String),
    #[error("Data is not base64: {0}")]
    NotBase64(String),
}

/// Reads untrusted JSON: the size first, then the depth (serde_json's own recursion limit of
/// 128 protects the stack while parsing; [`MAX_DDM_JSON_DEPTH`] is the documented shapes' bound).
pub fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, DdmError> {
    if bytes.len() > MAX_DDM_JSON_BYTES {
        return Err(DdmError::TooLarge(bytes.len()));
    }
    if raw_depth(bytes) > MAX_DDM_JSON_DEPTH {
        return Err(DdmError::TooDeep);
    }
    serde_json::from_slice(bytes).map_err(|e| DdmError::NotJson(e.to_string()))
}

/// The bracket depth of a JSON text, ignoring brackets inside strings: a cheap pre-check that
/// refuses `[[[[…` before the parser builds anything.
fn raw_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// The JSON type's name, for error messages.
pub(crate) fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_depth_are_bounded_before_parsing() {
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert_eq!(parse_json(deep.as_bytes()), Err(DdmError::TooDeep));
        let ok = format!("{}{}", "[".repeat(30), "]".repeat(30));
        assert!(parse_json(ok.as_bytes()).is_ok());
        // Brackets inside strings are text, not nesting.
        let s = format!("{{\"k\": \"{}\"}}", "[".repeat(100));
        assert!(parse_json(s.as_bytes()).is_ok());
        let big = vec![b' '; MAX_DDM_JSON_BYTES + 1];
        assert_eq!(parse_json(&big), Err(DdmError::TooLarge(big.len())));
        assert!(matches!(parse_json(b"{"), Err(DdmError::NotJson(_))));
    }
}
