//! The DDM synchronisation protocol (DDM brief §1): the tokens document, the declaration-items
//! manifest, the `DeclarativeManagement` check-in message the device sends for every DDM request,
//! and the `DeclarativeManagement` MDM command that turns DDM on.

use super::declaration::{Declaration, DeclarationKind};
use super::{DdmError, MAX_SYNC_TOKEN_OCTETS, parse_json};
use crate::plist_util::{self, type_name};
use plist::{Dictionary, Value};
use serde::{Deserialize, Serialize};

/// `MessageType` of the DDM check-in (`mdm/checkin/declarativemanagement.yaml`) and
/// `RequestType` of the command (`mdm/commands/declarativemanagement.yaml`).
pub const DDM_CHECKIN_MESSAGE_TYPE: &str = "DeclarativeManagement";

/// `SyncTokens` (`declarative/protocol/tokensresponse.yaml`; AppleDoc synchronizationtokens):
/// `DeclarationsToken` (opaque, ≤ 256 octets) and `Timestamp` (`YYYY-mm-ddTHH:MM:SSZ`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncTokens {
    #[serde(rename = "DeclarationsToken")]
    pub declarations_token: String,
    #[serde(rename = "Timestamp")]
    pub timestamp: String,
}

/// The `tokens` endpoint's body, and the JSON inside the command's `Data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokensResponse {
    #[serde(rename = "SyncTokens")]
    pub sync_tokens: SyncTokens,
}

impl TokensResponse {
    pub fn new(declarations_token: &str, timestamp: chrono::DateTime<chrono::Utc>) -> Self {
        TokensResponse {
            sync_tokens: SyncTokens {
                declarations_token: declarations_token.into(),
                timestamp: timestamp.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            },
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn parse(bytes: &[u8]) -> Result<TokensResponse, DdmError> {
        let v = parse_json(bytes)?;
        let t: TokensResponse = serde_json::from_value(v).map_err(|e| DdmError::Invalid {
            key: "SyncTokens".into(),
            msg: e.to_string(),
        })?;
        let len = t.sync_tokens.declarations_token.len();
        if len > MAX_SYNC_TOKEN_OCTETS {
            return Err(DdmError::TooLong {
                key: "DeclarationsToken",
                len,
                max: MAX_SYNC_TOKEN_OCTETS,
            });
        }
        Ok(t)
    }
}

/// One manifest entry: `{Identifier, ServerToken}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestItem {
    #[serde(rename = "Identifier")]
    pub identifier: String,
    #[serde(rename = "ServerToken")]
    pub server_token: String,
}

/// `Declarations` of the manifest: all four lists are required, even when empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestDeclarations {
    #[serde(rename = "Activations")]
    pub activations: Vec<ManifestItem>,
    #[serde(rename = "Configurations")]
    pub configurations: Vec<ManifestItem>,
    #[serde(rename = "Assets")]
    pub assets: Vec<ManifestItem>,
    #[serde(rename = "Management")]
    pub management: Vec<ManifestItem>,
}

/// The `declaration-items` body (`declarative/protocol/declarationitemsresponse.yaml`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclarationItems {
    #[serde(rename = "Declarations")]
    pub declarations: ManifestDeclarations,
    #[serde(rename = "DeclarationsToken")]
    pub declarations_token: String,
}

impl DeclarationItems {
    /// The manifest of `declarations`, with the given sync token.
    pub fn of(declarations: &[Declaration], declarations_token: &str) -> DeclarationItems {
        let mut m = ManifestDeclarations::default();
        for d in declarations {
            let item = ManifestItem {
                identifier: d.identifier.clone(),
                server_token: d.server_token.clone(),
            };
            match d.kind() {
                Some(DeclarationKind::Activation) => m.activations.push(item),
                Some(DeclarationKind::Asset) => m.assets.push(item),
                Some(DeclarationKind::Management) => m.management.push(item),
                Some(DeclarationKind::Configuration) | None => m.configurations.push(item),
            }
        }
        DeclarationItems {
            declarations: m,
            declarations_token: declarations_token.into(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn parse(bytes: &[u8]) -> Result<DeclarationItems, DdmError> {
        let v = parse_json(bytes)?;
        serde_json::from_value(v).map_err(|e| DdmError::Invalid {
            key: "Declarations".into(),
            msg: e.to_string(),
        })
    }

    /// Every entry with its kind, for walking the manifest.
    pub fn entries(&self) -> Vec<(DeclarationKind, &ManifestItem)> {
        let d = &self.declarations;
        [
            (DeclarationKind::Activation, &d.activations),
            (DeclarationKind::Configuration, &d.configurations),
            (DeclarationKind::Asset, &d.assets),
            (DeclarationKind::Management, &d.management),
        ]
        .into_iter()
        .flat_map(|(k, v)| v.iter().map(move |i| (k, i)))
        .collect()
    }
}

/// The `Endpoint` of a DDM check-in (`mdm/checkin/declarativemanagement.yaml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tokens,
    DeclarationItems,
    Status,
    /// `declaration/<kind>/<Identifier>`.
    Declaration {
        kind: DeclarationKind,
        identifier: String,
    },
}

impl Endpoint {
    pub fn parse(s: &str) -> Option<Endpoint> {
        match s {
            "tokens" => Some(Endpoint::Tokens),
            "declaration-items" => Some(Endpoint::DeclarationItems),
            "status" => Some(Endpoint::Status),
            _ => {
                let rest = s.strip_prefix("declaration/")?;
                let (kind, identifier) = rest.split_once('/')?;
                if identifier.is_empty() || identifier.contains('/') {
                    return None;
                }
                Some(Endpoint::Declaration {
                    kind: DeclarationKind::parse(kind)?,
                    identifier: identifier.into(),
                })
            }
        }
    }

    pub fn to_wire(&self) -> String {
        match self {
            Endpoint::Tokens => "tokens".into(),
            Endpoint::DeclarationItems => "declaration-items".into(),
            Endpoint::Status => "status".into(),
            Endpoint::Declaration { kind, identifier } => {
                format!("declaration/{}/{identifier}", kind.as_str())
            }
        }
    }
}

/// A `DeclarativeManagement` check-in: `MessageType`, `Endpoint`, optional `Data` (the status
/// report for `status`), and `UDID` (or `EnrollmentID` under User Enrollment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdmCheckin {
    /// The UDID, or the EnrollmentID when there is no UDID.
    pub enrollment_id: String,
    pub endpoint: Endpoint,
    pub data: Option<Vec<u8>>,
}

impl DdmCheckin {
    /// Reads the check-in plist (through the plist depth limit).
    pub fn parse(raw: &[u8]) -> Result<DdmCheckin, DdmError> {
        let d = plist_util::parse_dict(raw).map_err(DdmError::NotPlist)?;
        DdmCheckin::from_dict(&d)
    }

    pub fn from_dict(d: &Dictionary) -> Result<DdmCheckin, DdmError> {
        let string = |key: &'static str| -> Result<Option<&str>, DdmError> {
            match d.get(key) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(other) => Err(DdmError::WrongType {
                    key: key.into(),
                    expected: "string",
                    got: type_name(other),
                }),
            }
        };
        if string("MessageType")? != Some(DDM_CHECKIN_MESSAGE_TYPE) {
            return Err(DdmError::Invalid {
                key: "MessageType".into(),
                msg: format!("must be {DDM_CHECKIN_MESSAGE_TYPE}"),
            });
        }
        let ep = string("Endpoint")?.ok_or(DdmError::Missing("Endpoint"))?;
        let endpoint = Endpoint::parse(ep).ok_or_else(|| DdmError::Invalid {
            key: "Endpoint".into(),
            msg: format!(
                "{ep:?} is not tokens, declaration-items, status or declaration/<kind>/<id>"
            ),
        })?;
        let enrollment_id = match (string("UDID")?, string("EnrollmentID")?) {
            (Some(u), _) if !u.is_empty() => u.to_string(),
            (_, Some(e)) if !e.is_empty() => e.to_string(),
            _ => return Err(DdmError::Missing("UDID")),
        };
        let data = match d.get("Data") {
            None => None,
            Some(Value::Data(b)) => Some(b.clone()),
            Some(other) => {
                return Err(DdmError::WrongType {
                    key: "Data".into(),
                    expected: "data",
                    got: type_name(other),
                });
            }
        };
        Ok(DdmCheckin {
            enrollment_id,
            endpoint,
            data,
        })
    }

    pub fn to_plist(&self) -> Vec<u8> {
        let mut d = Dictionary::new();
        d.insert("MessageType".into(), DDM_CHECKIN_MESSAGE_TYPE.into());
        d.insert("Endpoint".into(), self.endpoint.to_wire().into());
        d.insert("UDID".into(), self.enrollment_id.clone().into());
        if let Some(b) = &self.data {
            d.insert("Data".into(), Value::Data(b.clone()));
        }
        plist_util::dict_to_xml(d)
    }
}

/// The `DeclarativeManagement` command envelope as an XML plist: `RequestType` and, optionally,
/// `Data` holding the tokens JSON (`mdm/commands/declarativemanagement.yaml`: "the
/// base64-encoded Declarative Management JSON request using a TokensResponse"; plist `<data>`
/// is base64 on the wire). With `Data` the device compares the token and skips the `tokens`
/// fetch (DDM brief §1).
pub fn declarative_management_command(
    command_uuid: &str,
    tokens: Option<&TokensResponse>,
) -> Vec<u8> {
    let mut c = Dictionary::new();
    c.insert("RequestType".into(), DDM_CHECKIN_MESSAGE_TYPE.into());
    if let Some(t) = tokens {
        c.insert("Data".into(), Value::Data(t.to_json()));
    }
    let mut env = Dictionary::new();
    env.insert("Command".into(), Value::Dictionary(c));
    env.insert("CommandUUID".into(), command_uuid.into());
    plist_util::dict_to_xml(env)
}

/// The tokens a received `DeclarativeManagement` command carries, if any (the device's side).
pub fn command_tokens(command: &Dictionary) -> Result<Option<TokensResponse>, DdmError> {
    match command.get("Data") {
        None => Ok(None),
        Some(Value::Data(b)) => TokensResponse::parse(b).map(Some),
        Some(other) => Err(DdmError::WrongType {
            key: "Data".into(),
            expected: "data",
            got: type_name(other),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdm::command::parse_envelope;
    use crate::mdm::ddm::declaration::{ENFORCEMENT_SPECIFIC, declaration_of};

    #[test]
    fn endpoints_round_trip_and_odd_ones_are_refused() {
        for s in [
            "tokens",
            "declaration-items",
            "status",
            "declaration/configuration/lab.su",
        ] {
            assert_eq!(Endpoint::parse(s).unwrap().to_wire(), s);
        }
        for s in [
            "",
            "declaration",
            "declaration/configuration/",
            "declaration/x/y",
            "declaration/asset/a/b",
            "Tokens",
        ] {
            assert_eq!(Endpoint::parse(s), None, "{s}");
        }
    }

    #[test]
    fn a_checkin_round_trips_and_user_enrollment_uses_enrollment_id() {
        let c = DdmCheckin {
            enrollment_id: "UDID-1".into(),
            endpoint: Endpoint::Status,
            data: Some(br#"{"StatusItems": {}, "Errors": []}"#.to_vec()),
        };
        assert_eq!(DdmCheckin::parse(&c.to_plist()).unwrap(), c);
        let mut d = Dictionary::new();
        d.insert("MessageType".into(), "DeclarativeManagement".into());
        d.insert("Endpoint".into(), "tokens".into());
        d.insert("EnrollmentID".into(), "E-1".into());
        assert_eq!(DdmCheckin::from_dict(&d).unwrap().enrollment_id, "E-1");
        d.remove("EnrollmentID");
        assert_eq!(DdmCheckin::from_dict(&d), Err(DdmError::Missing("UDID")));
        d.insert("UDID".into(), "U".into());
        d.insert("Data".into(), "not data".into());
        assert!(matches!(
            DdmCheckin::from_dict(&d),
            Err(DdmError::WrongType { .. })
        ));
    }

    #[test]
    fn the_command_carries_the_tokens_as_data() {
        let t = TokensResponse::new("tok-1", chrono::DateTime::UNIX_EPOCH);
        let raw = declarative_management_command("CMD-1", Some(&t));
        let env = parse_envelope(&raw).unwrap();
        assert_eq!(env.request_type, "DeclarativeManagement");
        assert_eq!(env.command_uuid, "CMD-1");
        assert_eq!(command_tokens(&env.command).unwrap(), Some(t.clone()));
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&t.to_json()).unwrap(),
            serde_json::json!({"SyncTokens": {"DeclarationsToken": "tok-1", "Timestamp": "1970-01-01T00:00:00Z"}})
        );
        let bare = parse_envelope(&declarative_management_command("CMD-2", None)).unwrap();
        assert_eq!(command_tokens(&bare.command).unwrap(), None);
    }

    #[test]
    fn the_manifest_sorts_declarations_by_kind() {
        let e = declaration_of(ENFORCEMENT_SPECIFIC, "lab.su", &serde_json::json!({}));
        let a = declaration_of(
            "com.apple.activation.simple",
            "lab.act",
            &serde_json::json!({}),
        );
        let m = DeclarationItems::of(&[e.clone(), a], "T");
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v["Declarations"]["Configurations"][0]["Identifier"],
            "lab.su"
        );
        assert_eq!(
            v["Declarations"]["Configurations"][0]["ServerToken"],
            e.server_token.as_str()
        );
        assert_eq!(v["Declarations"]["Activations"][0]["Identifier"], "lab.act");
        assert_eq!(v["Declarations"]["Assets"], serde_json::json!([]));
        assert_eq!(v["DeclarationsToken"], "T");
        assert_eq!(DeclarationItems::parse(&m.to_json()).unwrap(), m);
        assert_eq!(m.entries().len(), 2);
        let long = "x".repeat(300);
        let t = format!(r#"{{"SyncTokens": {{"DeclarationsToken": "{long}", "Timestamp": "x"}}}}"#);
        assert!(matches!(
            TokensResponse::parse(t.as_bytes()),
            Err(DdmError::TooLong { .. })
        ));
    }
}
