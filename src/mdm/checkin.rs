//! Check-in messages (MDM brief §4): what a device PUTs to the check-in URL with
//! `Content-Type: application/x-apple-aspen-mdm-checkin`.
//!
//! Keys follow `data/apple-device-management/mdm/checkin/{authenticate,tokenupdate,checkout}.yaml`.
//! Those schemas mark both `UDID` and `EnrollmentID` required: a device enrollment sends the
//! first, a user enrollment (iOS 13+) the second. `lab` enrolls devices, so the parsed message
//! has one `udid` field holding the UDID, or the EnrollmentID when there is no UDID.

use crate::plist_util::{self, type_name};
use plist::{Dictionary, Value};

/// `Content-Type` of check-in PUTs (NanoMDM dispatches on this prefix, MDM brief §5.1).
pub const CHECKIN_CONTENT_TYPE: &str = "application/x-apple-aspen-mdm-checkin";
/// `Content-Type` of command-connection PUTs (reports, Idle polls).
pub const COMMAND_CONTENT_TYPE: &str = "application/x-apple-aspen-mdm";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckinError {
    #[error("check-in is not a plist: {0}")]
    NotPlist(String),
    #[error("check-in is a {0}, not a dictionary")]
    NotDictionary(&'static str),
    #[error("check-in has no MessageType")]
    MissingMessageType,
    #[error("{message_type} check-in has no {key}")]
    MissingKey {
        message_type: String,
        key: &'static str,
    },
    #[error("{message_type} check-in key {key} is a {got}, not {expected}")]
    WrongType {
        message_type: String,
        key: &'static str,
        expected: &'static str,
        got: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckinMessage {
    /// First contact. `device_name` is macOS-only per the schema, but simulators send it.
    Authenticate {
        topic: String,
        udid: String,
        os_version: Option<String>,
        build_version: Option<String>,
        product_name: Option<String>,
        serial_number: Option<String>,
        device_name: Option<String>,
    },
    /// The MDM payload is installed; from now on the server may push (MDM brief §4).
    TokenUpdate {
        topic: String,
        udid: String,
        /// Raw APNs device token; hex-encode it for the APNs URL.
        token: Vec<u8>,
        push_magic: String,
        unlock_token: Option<Vec<u8>>,
        awaiting_configuration: bool,
    },
    CheckOut {
        topic: String,
        udid: String,
    },
    /// UserAuthenticate, SetBootstrapToken, DeclarativeManagement, … kept by name only.
    Other {
        message_type: String,
        udid: Option<String>,
    },
}

impl CheckinMessage {
    pub fn message_type(&self) -> &str {
        match self {
            CheckinMessage::Authenticate { .. } => "Authenticate",
            CheckinMessage::TokenUpdate { .. } => "TokenUpdate",
            CheckinMessage::CheckOut { .. } => "CheckOut",
            CheckinMessage::Other { message_type, .. } => message_type,
        }
    }

    pub fn udid(&self) -> Option<&str> {
        match self {
            CheckinMessage::Authenticate { udid, .. }
            | CheckinMessage::TokenUpdate { udid, .. }
            | CheckinMessage::CheckOut { udid, .. } => Some(udid),
            CheckinMessage::Other { udid, .. } => udid.as_deref(),
        }
    }

    /// The webhook topic NanoMDM/MicroMDM use for this message (MDM brief §5.1).
    pub fn webhook_topic(&self) -> String {
        format!("mdm.{}", self.message_type())
    }

    pub fn to_dict(&self) -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("MessageType".into(), self.message_type().into());
        let mut put = |k: &str, v: Option<&String>| {
            if let Some(v) = v {
                d.insert(k.into(), v.clone().into());
            }
        };
        match self {
            CheckinMessage::Authenticate {
                topic,
                udid,
                os_version,
                build_version,
                product_name,
                serial_number,
                device_name,
            } => {
                put("Topic", Some(topic));
                put("UDID", Some(udid));
                put("OSVersion", os_version.as_ref());
                put("BuildVersion", build_version.as_ref());
                put("ProductName", product_name.as_ref());
                put("SerialNumber", serial_number.as_ref());
                put("DeviceName", device_name.as_ref());
            }
            CheckinMessage::TokenUpdate {
                topic,
                udid,
                token,
                push_magic,
                unlock_token,
                awaiting_configuration,
            } => {
                put("Topic", Some(topic));
                put("UDID", Some(udid));
                put("PushMagic", Some(push_magic));
                d.insert("Token".into(), Value::Data(token.clone()));
                if let Some(u) = unlock_token {
                    d.insert("UnlockToken".into(), Value::Data(u.clone()));
                }
                if *awaiting_configuration {
                    d.insert("AwaitingConfiguration".into(), Value::Boolean(true));
                }
            }
            CheckinMessage::CheckOut { topic, udid } => {
                put("Topic", Some(topic));
                put("UDID", Some(udid));
            }
            CheckinMessage::Other { udid, .. } => put("UDID", udid.as_ref()),
        }
        d
    }

    /// XML plist body for the check-in PUT.
    pub fn to_plist(&self) -> Vec<u8> {
        plist_util::dict_to_xml(self.to_dict())
    }
}

struct Reader<'a> {
    d: &'a Dictionary,
    message_type: &'a str,
}

impl Reader<'_> {
    fn wrong(&self, key: &'static str, expected: &'static str, v: &Value) -> CheckinError {
        CheckinError::WrongType {
            message_type: self.message_type.to_string(),
            key,
            expected,
            got: type_name(v),
        }
    }

    fn missing(&self, key: &'static str) -> CheckinError {
        CheckinError::MissingKey {
            message_type: self.message_type.to_string(),
            key,
        }
    }

    fn opt_str(&self, key: &'static str) -> Result<Option<String>, CheckinError> {
        match self.d.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.wrong(key, "a string", v)),
        }
    }

    fn req_str(&self, key: &'static str) -> Result<String, CheckinError> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    fn opt_data(&self, key: &'static str) -> Result<Option<Vec<u8>>, CheckinError> {
        match self.d.get(key) {
            None => Ok(None),
            Some(Value::Data(b)) => Ok(Some(b.clone())),
            Some(v) => Err(self.wrong(key, "data", v)),
        }
    }

    /// UDID, or EnrollmentID for a user enrollment.
    fn enrollment(&self) -> Result<String, CheckinError> {
        match self.opt_str("UDID")? {
            Some(u) => Ok(u),
            None => self
                .opt_str("EnrollmentID")?
                .ok_or_else(|| self.missing("UDID")),
        }
    }
}

/// Parse a check-in body. Required keys missing or of the wrong type are errors naming the key;
/// unknown keys are ignored (real devices send more than the schema subset modelled here).
pub fn parse_checkin(raw: &[u8]) -> Result<CheckinMessage, CheckinError> {
    let d = match plist_util::parse(raw).map_err(CheckinError::NotPlist)? {
        Value::Dictionary(d) => d,
        other => return Err(CheckinError::NotDictionary(type_name(&other))),
    };
    let message_type = match d.get("MessageType") {
        None => return Err(CheckinError::MissingMessageType),
        Some(Value::String(s)) => s.as_str(),
        Some(v) => {
            return Err(CheckinError::WrongType {
                message_type: "(unknown)".to_string(),
                key: "MessageType",
                expected: "a string",
                got: type_name(v),
            });
        }
    };
    let r = Reader {
        d: &d,
        message_type,
    };
    Ok(match message_type {
        "Authenticate" => CheckinMessage::Authenticate {
            topic: r.req_str("Topic")?,
            udid: r.enrollment()?,
            os_version: r.opt_str("OSVersion")?,
            build_version: r.opt_str("BuildVersion")?,
            product_name: r.opt_str("ProductName")?,
            serial_number: r.opt_str("SerialNumber")?,
            device_name: r.opt_str("DeviceName")?,
        },
        "TokenUpdate" => CheckinMessage::TokenUpdate {
            topic: r.req_str("Topic")?,
            udid: r.enrollment()?,
            token: r.opt_data("Token")?.ok_or_else(|| r.missing("Token"))?,
            push_magic: r.req_str("PushMagic")?,
            unlock_token: r.opt_data("UnlockToken")?,
            awaiting_configuration: match d.get("AwaitingConfiguration") {
                None => false,
                Some(Value::Boolean(b)) => *b,
                Some(v) => return Err(r.wrong("AwaitingConfiguration", "a boolean", v)),
            },
        },
        "CheckOut" => CheckinMessage::CheckOut {
            topic: r.req_str("Topic")?,
            udid: r.enrollment()?,
        },
        other => CheckinMessage::Other {
            message_type: other.to_string(),
            udid: plist_util::get_str(&d, "UDID")
                .or_else(|| plist_util::get_str(&d, "EnrollmentID"))
                .map(str::to_string),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plist_util::dict_to_xml;

    const TOPIC: &str = "com.apple.mgmt.External.0000";

    fn auth() -> CheckinMessage {
        CheckinMessage::Authenticate {
            topic: TOPIC.into(),
            udid: "U1".into(),
            os_version: Some("17.5".into()),
            build_version: Some("21F79".into()),
            product_name: Some("iPhone15,2".into()),
            serial_number: Some("F00".into()),
            device_name: None,
        }
    }

    fn token_update() -> CheckinMessage {
        CheckinMessage::TokenUpdate {
            topic: TOPIC.into(),
            udid: "U1".into(),
            token: vec![0xde, 0xad],
            push_magic: "fakePushMagic".into(),
            unlock_token: Some(vec![1]),
            awaiting_configuration: true,
        }
    }

    #[test]
    fn round_trips() {
        for m in [
            auth(),
            token_update(),
            CheckinMessage::TokenUpdate {
                topic: TOPIC.into(),
                udid: "U1".into(),
                token: vec![],
                push_magic: "m".into(),
                unlock_token: None,
                awaiting_configuration: false,
            },
            CheckinMessage::CheckOut {
                topic: TOPIC.into(),
                udid: "U1".into(),
            },
            CheckinMessage::Other {
                message_type: "UserAuthenticate".into(),
                udid: Some("U1".into()),
            },
            CheckinMessage::Other {
                message_type: "GetToken".into(),
                udid: None,
            },
        ] {
            let back = parse_checkin(&m.to_plist()).unwrap();
            assert_eq!(back, m);
        }
        assert_eq!(auth().message_type(), "Authenticate");
        assert_eq!(auth().udid(), Some("U1"));
        assert_eq!(token_update().webhook_topic(), "mdm.TokenUpdate");
        let d = token_update().to_dict();
        assert_eq!(d.get("Token"), Some(&Value::Data(vec![0xde, 0xad])));
        assert!(CHECKIN_CONTENT_TYPE.starts_with(COMMAND_CONTENT_TYPE));
    }

    #[test]
    fn enrollment_id_stands_in_for_udid() {
        let mut d = CheckinMessage::CheckOut {
            topic: TOPIC.into(),
            udid: "x".into(),
        }
        .to_dict();
        d.remove("UDID");
        d.insert("EnrollmentID".into(), "E-1".into());
        let m = parse_checkin(&dict_to_xml(d)).unwrap();
        assert_eq!(m.udid(), Some("E-1"));
    }

    fn with(
        m: CheckinMessage,
        f: impl FnOnce(&mut Dictionary),
    ) -> Result<CheckinMessage, CheckinError> {
        let mut d = m.to_dict();
        f(&mut d);
        parse_checkin(&dict_to_xml(d))
    }

    #[test]
    fn errors_name_the_key() {
        assert!(matches!(
            parse_checkin(b"nope"),
            Err(CheckinError::NotPlist(_))
        ));
        assert_eq!(
            parse_checkin(&plist_util::to_xml(&Value::Boolean(true))),
            Err(CheckinError::NotDictionary("boolean"))
        );
        assert_eq!(
            with(auth(), |d| {
                d.remove("MessageType");
            }),
            Err(CheckinError::MissingMessageType)
        );
        assert!(matches!(
            with(auth(), |d| {
                d.insert("MessageType".into(), Value::Integer(1.into()));
            }),
            Err(CheckinError::WrongType {
                key: "MessageType",
                ..
            })
        ));
        assert_eq!(
            with(auth(), |d| {
                d.remove("Topic");
            }),
            Err(CheckinError::MissingKey {
                message_type: "Authenticate".into(),
                key: "Topic"
            })
        );
        assert_eq!(
            with(auth(), |d| {
                d.remove("UDID");
            }),
            Err(CheckinError::MissingKey {
                message_type: "Authenticate".into(),
                key: "UDID"
            })
        );
        assert!(matches!(
            with(auth(), |d| {
                d.insert("OSVersion".into(), Value::Real(17.5));
            }),
            Err(CheckinError::WrongType {
                key: "OSVersion",
                got: "real",
                ..
            })
        ));
        assert_eq!(
            with(token_update(), |d| {
                d.remove("Token");
            }),
            Err(CheckinError::MissingKey {
                message_type: "TokenUpdate".into(),
                key: "Token"
            })
        );
        let e = with(token_update(), |d| {
            d.insert("Token".into(), "deadbeef".into());
        })
        .unwrap_err();
        assert_eq!(
            e,
            CheckinError::WrongType {
                message_type: "TokenUpdate".into(),
                key: "Token",
                expected: "data",
                got: "string"
            }
        );
        assert_eq!(
            e.to_string(),
            "TokenUpdate check-in key Token is a string, not data"
        );
        assert!(matches!(
            with(token_update(), |d| {
                d.remove("PushMagic");
            }),
            Err(CheckinError::MissingKey {
                key: "PushMagic",
                ..
            })
        ));
        assert!(matches!(
            with(token_update(), |d| {
                d.insert("UnlockToken".into(), "x".into());
            }),
            Err(CheckinError::WrongType {
                key: "UnlockToken",
                ..
            })
        ));
        assert!(matches!(
            with(token_update(), |d| {
                d.insert("AwaitingConfiguration".into(), Value::Integer(1.into()));
            }),
            Err(CheckinError::WrongType {
                key: "AwaitingConfiguration",
                ..
            })
        ));
        assert!(matches!(
            with(
                CheckinMessage::CheckOut {
                    topic: TOPIC.into(),
                    udid: "U".into()
                },
                |d| {
                    d.remove("Topic");
                }
            ),
            Err(CheckinError::MissingKey { key: "Topic", .. })
        ));
    }
}
