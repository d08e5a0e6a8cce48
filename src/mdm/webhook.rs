//! MicroMDM-format webhook events, as NanoMDM and MicroMDM post them (MDM brief §5.1, §5.2;
//! NanoMDM's `service/webhook/event.json`, "MicroMDM webhook event").
//!
//! Absent optional fields are omitted, not `null`, so that the JSON `lab`'s simulated server
//! emits matches NanoMDM's byte shape. Events carry no `request_type` (MDM brief §0.6).

use super::checkin::CheckinMessage;
use super::report::Report;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;

/// Header carrying [`hmac_signature`] when a webhook HMAC key is configured.
pub const HMAC_HEADER: &str = "X-Hmac-Signature";
/// Topic of command-connection events (Idle polls and command reports alike).
pub const TOPIC_CONNECT: &str = "mdm.Connect";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEvent {
    pub topic: String,
    /// NanoMDM's trace id; may be empty.
    #[serde(default)]
    pub event_id: String,
    /// RFC 3339.
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkin_event: Option<CheckinEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledge_event: Option<AcknowledgeEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcknowledgeEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_id: Option<String>,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_uuid: Option<String>,
    /// The device's plist, exactly as received.
    #[serde(with = "base64_bytes")]
    pub raw_payload: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_params: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Ids>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckinEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_id: Option<String>,
    #[serde(with = "base64_bytes")]
    pub raw_payload: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_params: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Ids>,
    /// TokenUpdate only: 1 on the first one for an enrollment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_update_tally: Option<u64>,
}

/// NanoMDM's enrollment ids. `type_` is "Device", "User", "User Enrollment",
/// "User Enrollment (Device)" or "Shared iPad".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ids {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    #[serde(rename = "type")]
    pub type_: String,
}

impl Ids {
    /// A device-channel enrollment: id = UDID.
    pub fn device(udid: &str) -> Ids {
        Ids {
            id: udid.to_string(),
            parent_id: None,
            type_: "Device".to_string(),
        }
    }
}

impl AcknowledgeEvent {
    /// The event a server posts for a command-connection PUT (topic [`TOPIC_CONNECT`]).
    pub fn from_report(report: &Report) -> AcknowledgeEvent {
        AcknowledgeEvent {
            udid: report.udid.clone(),
            enrollment_id: report.enrollment_id.clone(),
            status: report.status.as_str().to_string(),
            command_uuid: report.command_uuid.clone(),
            raw_payload: report.raw.clone(),
            url_params: None,
            ids: report.udid.as_deref().map(Ids::device),
        }
    }
}

impl CheckinEvent {
    /// The event for a check-in; `raw` is the body as received. Post it with
    /// `message.webhook_topic()`.
    pub fn from_checkin(message: &CheckinMessage, raw: &[u8]) -> CheckinEvent {
        CheckinEvent {
            udid: message.udid().map(str::to_string),
            enrollment_id: None,
            raw_payload: raw.to_vec(),
            url_params: None,
            ids: message.udid().map(Ids::device),
            token_update_tally: None,
        }
    }
}

mod base64_bytes {
    use super::B64;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length (long ones are hashed), so this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// Base64 (standard, padded) of HMAC-SHA256 over the body: NanoMDM's `-webhook-hmac-key`
/// signature, sent in [`HMAC_HEADER`].
pub fn hmac_signature(key: &[u8], body: &[u8]) -> String {
    let mut m = mac(key);
    m.update(body);
    B64.encode(m.finalize().into_bytes())
}

/// Check a received signature in constant time. A header that is not base64 fails.
pub fn verify_hmac(key: &[u8], body: &[u8], header_value: &str) -> bool {
    let Ok(sig) = B64.decode(header_value.trim().as_bytes()) else {
        return false;
    };
    let mut m = mac(key);
    m.update(body);
    m.verify_slice(&sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdm::report::{parse_report, report_dict};
    use crate::plist_util::dict_to_xml;
    use serde_json::json;

    // Vectors computed independently with Python's hmac/hashlib/base64 modules; the second is
    // the well-known "quick brown fox" HMAC-SHA256 vector.
    #[test]
    fn hmac_fixed_vectors() {
        assert_eq!(
            hmac_signature(b"secret-key", br#"{"topic":"mdm.Connect"}"#),
            "78YyYKOXwlNRBPvaoX9uOtc9GUNl+S+SrMK8W7CcwGg="
        );
        assert_eq!(
            hmac_signature(b"key", b"The quick brown fox jumps over the lazy dog"),
            "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg="
        );
    }

    #[test]
    fn hmac_verify() {
        let body = br#"{"topic":"mdm.Connect"}"#;
        let sig = "78YyYKOXwlNRBPvaoX9uOtc9GUNl+S+SrMK8W7CcwGg=";
        assert!(verify_hmac(b"secret-key", body, sig));
        assert!(verify_hmac(b"secret-key", body, &format!(" {sig}\n")));
        assert!(!verify_hmac(b"other-key", body, sig));
        assert!(!verify_hmac(b"secret-key", b"{}", sig));
        assert!(!verify_hmac(b"secret-key", body, "not base64!"));
        assert!(!verify_hmac(b"secret-key", body, ""));
        assert!(!verify_hmac(b"secret-key", body, &sig[..20]));
        let long_key = vec![7u8; 200];
        assert!(verify_hmac(
            &long_key,
            body,
            &hmac_signature(&long_key, body)
        ));
    }

    #[test]
    fn acknowledge_event_json_shape() {
        let raw = dict_to_xml(report_dict("U1", Some("cmd-1"), "Acknowledged"));
        let r = parse_report(&raw).unwrap();
        let ev = WebhookEvent {
            topic: TOPIC_CONNECT.into(),
            event_id: "e1".into(),
            created_at: "2025-01-02T03:04:05Z".into(),
            checkin_event: None,
            acknowledge_event: Some(AcknowledgeEvent::from_report(&r)),
        };
        let j = serde_json::to_value(&ev).unwrap();
        assert_eq!(
            j,
            json!({
                "topic": "mdm.Connect",
                "event_id": "e1",
                "created_at": "2025-01-02T03:04:05Z",
                "acknowledge_event": {
                    "udid": "U1",
                    "status": "Acknowledged",
                    "command_uuid": "cmd-1",
                    "raw_payload": B64.encode(&raw),
                    "ids": {"id": "U1", "type": "Device"}
                }
            })
        );
        let back: WebhookEvent = serde_json::from_value(j).unwrap();
        assert_eq!(back, ev);
        assert_eq!(back.acknowledge_event.unwrap().raw_payload, raw);
    }

    #[test]
    fn idle_connect_has_no_command_uuid() {
        let raw = dict_to_xml(report_dict("U1", None, "Idle"));
        let ack = AcknowledgeEvent::from_report(&parse_report(&raw).unwrap());
        let j = serde_json::to_value(&ack).unwrap();
        assert!(j.get("command_uuid").is_none());
        assert!(j.get("enrollment_id").is_none());
        assert!(j.get("url_params").is_none());
    }

    #[test]
    fn checkin_event_and_nanomdm_json_parse() {
        // Shape of a TokenUpdate event as NanoMDM posts it (MDM brief §5.1).
        let j = json!({
            "topic": "mdm.TokenUpdate",
            "event_id": "",
            "created_at": "2025-01-02T03:04:05.123456Z",
            "checkin_event": {
                "udid": "U1",
                "raw_payload": "AAEC",
                "url_params": {"a": "b"},
                "ids": {"id": "U1", "type": "Device"},
                "token_update_tally": 1
            }
        });
        let ev: WebhookEvent = serde_json::from_value(j.clone()).unwrap();
        let c = ev.checkin_event.as_ref().unwrap();
        assert_eq!(c.raw_payload, vec![0, 1, 2]);
        assert_eq!(c.token_update_tally, Some(1));
        assert_eq!(c.ids.as_ref().unwrap().type_, "Device");
        assert_eq!(serde_json::to_value(&ev).unwrap(), j);
        // Bad base64 is a deserialisation error, not a panic.
        let mut bad = j;
        bad["checkin_event"]["raw_payload"] = json!("***");
        assert!(serde_json::from_value::<WebhookEvent>(bad).is_err());
    }

    #[test]
    fn checkin_event_from_message() {
        let m = CheckinMessage::CheckOut {
            topic: "t".into(),
            udid: "U9".into(),
        };
        let raw = m.to_plist();
        let c = CheckinEvent::from_checkin(&m, &raw);
        assert_eq!(c.udid.as_deref(), Some("U9"));
        assert_eq!(c.raw_payload, raw);
        assert_eq!(c.ids, Some(Ids::device("U9")));
        assert_eq!(c.token_update_tally, None);
    }
}
