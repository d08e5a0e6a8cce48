//! Declarations: the envelope every declaration shares
//! (`declarative/declarations/declarationbase.yaml`: `Type`, `Identifier`, `ServerToken`,
//! `Payload`, all required) and the payloads `lab` writes and the simulated device reads.

use super::{DdmError, MAX_TOKEN_OCTETS, json_type, parse_json};
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `declarative/declarations/configurations/softwareupdate.enforcement.specific.yaml`.
pub const ENFORCEMENT_SPECIFIC: &str =
    "com.apple.configuration.softwareupdate.enforcement.specific";
/// `declarative/declarations/activations/simple.yaml`.
pub const ACTIVATION_SIMPLE: &str = "com.apple.activation.simple";
/// `declarative/declarations/configurations/management.status-subscriptions.yaml`.
pub const STATUS_SUBSCRIPTIONS: &str = "com.apple.configuration.management.status-subscriptions";

/// The four kinds of declaration: the first segment after `com.apple.` of the `Type`, and the
/// segment of the `declaration/<kind>/<Identifier>` endpoint (`mdm/checkin/declarativemanagement.yaml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeclarationKind {
    Activation,
    Asset,
    Configuration,
    Management,
}

impl DeclarationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeclarationKind::Activation => "activation",
            DeclarationKind::Asset => "asset",
            DeclarationKind::Configuration => "configuration",
            DeclarationKind::Management => "management",
        }
    }

    pub fn parse(s: &str) -> Option<DeclarationKind> {
        match s {
            "activation" => Some(DeclarationKind::Activation),
            "asset" => Some(DeclarationKind::Asset),
            "configuration" => Some(DeclarationKind::Configuration),
            "management" => Some(DeclarationKind::Management),
            _ => None,
        }
    }

    /// The kind a `Type` names: `com.apple.<kind>.…`.
    pub fn of_type(declaration_type: &str) -> Option<DeclarationKind> {
        let rest = declaration_type.strip_prefix("com.apple.")?;
        DeclarationKind::parse(rest.split('.').next()?)
    }
}

/// One declaration as sent to the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Declaration {
    #[serde(rename = "Type")]
    pub declaration_type: String,
    #[serde(rename = "Identifier")]
    pub identifier: String,
    #[serde(rename = "ServerToken")]
    pub server_token: String,
    #[serde(rename = "Payload")]
    pub payload: Map<String, Value>,
}

impl Declaration {
    /// Reads a declaration from untrusted JSON. `ServerToken` may be absent when
    /// `require_token` is false (an operator's upload: the server computes the token, as
    /// KMFDDM does, DDM brief §6).
    pub fn parse(bytes: &[u8], require_token: bool) -> Result<Declaration, DdmError> {
        let v = parse_json(bytes)?;
        let Value::Object(mut o) = v else {
            return Err(DdmError::NotObject);
        };
        let mut string = |key: &'static str, required: bool| -> Result<String, DdmError> {
            match o.remove(key) {
                Some(Value::String(s)) => Ok(s),
                Some(other) => Err(DdmError::WrongType {
                    key: key.into(),
                    expected: "string",
                    got: json_type(&other),
                }),
                None if required => Err(DdmError::Missing(key)),
                None => Ok(String::new()),
            }
        };
        let declaration_type = string("Type", true)?;
        let identifier = string("Identifier", true)?;
        let server_token = string("ServerToken", require_token)?;
        let payload = match o.remove("Payload") {
            Some(Value::Object(p)) => p,
            Some(other) => {
                return Err(DdmError::WrongType {
                    key: "Payload".into(),
                    expected: "object",
                    got: json_type(&other),
                });
            }
            None => return Err(DdmError::Missing("Payload")),
        };
        let d = Declaration {
            declaration_type,
            identifier,
            server_token,
            payload,
        };
        d.check_limits()?;
        Ok(d)
    }

    /// `Identifier` and `ServerToken` ≤ 64 octets (declarationbase.yaml); the identifier must
    /// also be usable as a URL path segment (`declaration/<kind>/<Identifier>`), so `lab`
    /// refuses `/`, control characters and the empty string (**Assumption**: Apple names no
    /// character set; a UUID "is a good choice").
    pub fn check_limits(&self) -> Result<(), DdmError> {
        for (key, v) in [
            ("Identifier", &self.identifier),
            ("ServerToken", &self.server_token),
        ] {
            if v.len() > MAX_TOKEN_OCTETS {
                return Err(DdmError::TooLong {
                    key,
                    len: v.len(),
                    max: MAX_TOKEN_OCTETS,
                });
            }
        }
        if self.identifier.is_empty()
            || self
                .identifier
                .chars()
                .any(|c| c == '/' || c.is_control() || c.is_whitespace())
        {
            return Err(DdmError::Invalid {
                key: "Identifier".into(),
                msg: "must be non-empty, without '/', spaces or control characters".into(),
            });
        }
        if self.kind().is_none() {
            return Err(DdmError::Invalid {
                key: "Type".into(),
                msg: format!(
                    "{:?} is not com.apple.<activation|asset|configuration|management>.…",
                    self.declaration_type
                ),
            });
        }
        Ok(())
    }

    pub fn kind(&self) -> Option<DeclarationKind> {
        DeclarationKind::of_type(&self.declaration_type)
    }

    /// The declaration as the JSON body the device fetches.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A token over the whole content but the token itself: Apple's rule is that "servers must
    /// compute the token over the entire declaration content to ensure the value always changes
    /// whenever there's any change to the content" (`declarative/protocol/declarationitemsresponse.yaml`).
    /// SHA-256 of the canonical JSON (serde_json's maps are sorted), first 16 bytes as hex.
    pub fn content_token(&self) -> String {
        use sha2::{Digest, Sha256};
        let canonical = serde_json::json!({
            "Type": self.declaration_type,
            "Identifier": self.identifier,
            "Payload": self.payload,
        });
        let digest = Sha256::digest(canonical.to_string().as_bytes());
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// With `ServerToken` set to [`Declaration::content_token`].
    pub fn with_content_token(mut self) -> Declaration {
        self.server_token = self.content_token();
        self
    }
}

/// A device-local date and time without zone: `yyyy-mm-ddThh:mm:ss`, "derived from RFC3339 but
/// doesn't include a time zone offset" (`TargetLocalDateTime`, enforcement schema). The device
/// reads it in its own time zone (DDM brief §0.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalDateTime(pub NaiveDateTime);

impl LocalDateTime {
    pub const FORMAT: &'static str = "%Y-%m-%dT%H:%M:%S";

    /// Strict: exactly 19 characters, no offset, no `Z`, no fraction.
    pub fn parse(s: &str) -> Result<LocalDateTime, DdmError> {
        let bad = |msg: &str| DdmError::Invalid {
            key: "TargetLocalDateTime".into(),
            msg: format!("{s:?}: {msg}"),
        };
        if s.len() != 19 {
            return Err(bad(
                "must be yyyy-mm-ddThh:mm:ss (no zone offset, no fraction)",
            ));
        }
        NaiveDateTime::parse_from_str(s, Self::FORMAT)
            .map(LocalDateTime)
            .map_err(|e| bad(&e.to_string()))
    }

    pub fn to_wire(self) -> String {
        self.0.format(Self::FORMAT).to_string()
    }
}

/// The dose: `com.apple.configuration.softwareupdate.enforcement.specific` (iOS 17.0+,
/// supervised or device enrollment, system scope; `apply: multiple`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforcement {
    /// `TargetOSVersion` (required), e.g. `26.1`; wins over an inconsistent build.
    pub target_os_version: String,
    /// `TargetBuildVersion` (optional), e.g. `20A242` or `20A242a`.
    pub target_build_version: Option<String>,
    /// `TargetLocalDateTime` (required): the forced-install moment, device-local.
    pub target_local_date_time: LocalDateTime,
    /// `DetailsURL` (optional): no scheduling effect.
    pub details_url: Option<String>,
}

const ENFORCEMENT_KEYS: &[&str] = &[
    "TargetOSVersion",
    "TargetBuildVersion",
    "TargetLocalDateTime",
    "DetailsURL",
];

impl Enforcement {
    /// Reads the payload as a device does: a missing required key or a malformed date makes the
    /// declaration invalid; unknown keys are reported (`Error.UnknownPayloadKeys`,
    /// declarationbase.yaml).
    pub fn from_payload(p: &Map<String, Value>) -> Result<Enforcement, DdmError> {
        let unknown: Vec<String> = p
            .keys()
            .filter(|k| !ENFORCEMENT_KEYS.contains(&k.as_str()))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(DdmError::UnknownPayloadKeys(unknown));
        }
        let get = |key: &'static str| -> Result<Option<String>, DdmError> {
            match p.get(key) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(DdmError::WrongType {
                    key: key.into(),
                    expected: "string",
                    got: json_type(other),
                }),
            }
        };
        let target_os_version =
            get("TargetOSVersion")?.ok_or(DdmError::Missing("TargetOSVersion"))?;
        if target_os_version.is_empty() || target_os_version.len() > 32 {
            return Err(DdmError::Invalid {
                key: "TargetOSVersion".into(),
                msg: "must be a version such as 26.1".into(),
            });
        }
        let when = get("TargetLocalDateTime")?.ok_or(DdmError::Missing("TargetLocalDateTime"))?;
        Ok(Enforcement {
            target_os_version,
            target_build_version: get("TargetBuildVersion")?,
            target_local_date_time: LocalDateTime::parse(&when)?,
            details_url: get("DetailsURL")?,
        })
    }

    pub fn to_payload(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            "TargetOSVersion".into(),
            self.target_os_version.clone().into(),
        );
        if let Some(b) = &self.target_build_version {
            m.insert("TargetBuildVersion".into(), b.clone().into());
        }
        m.insert(
            "TargetLocalDateTime".into(),
            self.target_local_date_time.to_wire().into(),
        );
        if let Some(u) = &self.details_url {
            m.insert("DetailsURL".into(), u.clone().into());
        }
        m
    }

    /// The full declaration, its token computed over the content.
    pub fn declaration(&self, identifier: &str) -> Declaration {
        Declaration {
            declaration_type: ENFORCEMENT_SPECIFIC.into(),
            identifier: identifier.into(),
            server_token: String::new(),
            payload: self.to_payload(),
        }
        .with_content_token()
    }
}

/// `com.apple.activation.simple`: `StandardConfigurations` (required, identifiers) and an
/// optional `Predicate` (`declarative/declarations/activations/simple.yaml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationSimple {
    #[serde(rename = "StandardConfigurations")]
    pub standard_configurations: Vec<String>,
    #[serde(rename = "Predicate", default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<String>,
}

/// `com.apple.configuration.management.status-subscriptions`: `StatusItems: [{Name}]`
/// (`declarative/declarations/configurations/management.status-subscriptions.yaml`; several
/// declarations combine by set union).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusSubscriptions {
    #[serde(rename = "StatusItems")]
    pub status_items: Vec<StatusItemName>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusItemName {
    #[serde(rename = "Name")]
    pub name: String,
}

impl StatusSubscriptions {
    pub fn of(names: &[&str]) -> StatusSubscriptions {
        StatusSubscriptions {
            status_items: names
                .iter()
                .map(|n| StatusItemName {
                    name: n.to_string(),
                })
                .collect(),
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.status_items.iter().map(|s| s.name.as_str())
    }
}

/// A payload struct as a declaration (token computed over the content).
pub fn declaration_of<T: Serialize>(
    declaration_type: &str,
    identifier: &str,
    payload: &T,
) -> Declaration {
    let payload = match serde_json::to_value(payload) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    Declaration {
        declaration_type: declaration_type.into(),
        identifier: identifier.into(),
        server_token: String::new(),
        payload,
    }
    .with_content_token()
}

/// A payload read back into its struct (strict about types, lenient about extra keys).
pub fn payload_as<T: for<'de> Deserialize<'de>>(d: &Declaration) -> Result<T, DdmError> {
    serde_json::from_value(Value::Object(d.payload.clone())).map_err(|e| DdmError::Invalid {
        key: "Payload".into(),
        msg: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enforcement_json(extra: &str) -> String {
        format!(
            r#"{{"Type": "{ENFORCEMENT_SPECIFIC}", "Identifier": "lab.su.target",
                "Payload": {{"TargetOSVersion": "26.4", "TargetLocalDateTime": "2026-11-02T19:00:00"{extra}}}}}"#
        )
    }

    #[test]
    fn the_brief_example_reads_with_apple_key_names() {
        let d = Declaration::parse(enforcement_json("").as_bytes(), false).unwrap();
        assert_eq!(d.kind(), Some(DeclarationKind::Configuration));
        let e = Enforcement::from_payload(&d.payload).unwrap();
        assert_eq!(e.target_os_version, "26.4");
        assert_eq!(e.target_local_date_time.to_wire(), "2026-11-02T19:00:00");
        assert_eq!(e.target_build_version, None);
        // Round trip through the payload keeps Apple's key names.
        let back = e.declaration("lab.su.target");
        let keys: Vec<&str> = back.payload.keys().map(String::as_str).collect();
        assert_eq!(keys, ["TargetLocalDateTime", "TargetOSVersion"]);
        assert_eq!(Enforcement::from_payload(&back.payload).unwrap(), e);
    }

    #[test]
    fn the_deadline_has_no_zone_and_no_fraction() {
        for bad in [
            "2026-11-02T19:00:00Z",
            "2026-11-02T19:00:00+01:00",
            "2026-11-02T19:00:00.5",
            "2026-11-02 19:00:00",
            "2026-13-02T19:00:00",
            "",
        ] {
            assert!(LocalDateTime::parse(bad).is_err(), "{bad}");
        }
        assert!(LocalDateTime::parse("2027-02-28T23:59:59").is_ok());
    }

    #[test]
    fn unknown_or_missing_keys_make_the_enforcement_invalid() {
        let d =
            Declaration::parse(enforcement_json(r#", "Colour": "red""#).as_bytes(), false).unwrap();
        assert_eq!(
            Enforcement::from_payload(&d.payload),
            Err(DdmError::UnknownPayloadKeys(vec!["Colour".into()]))
        );
        let mut p = Map::new();
        p.insert("TargetLocalDateTime".into(), "2026-11-02T19:00:00".into());
        assert_eq!(
            Enforcement::from_payload(&p),
            Err(DdmError::Missing("TargetOSVersion"))
        );
        p.insert("TargetOSVersion".into(), 26.into());
        assert!(matches!(
            Enforcement::from_payload(&p),
            Err(DdmError::WrongType { .. })
        ));
    }

    #[test]
    fn envelope_limits_follow_declarationbase() {
        let long = "x".repeat(65);
        let j = format!(
            r#"{{"Type": "{ENFORCEMENT_SPECIFIC}", "Identifier": "{long}", "Payload": {{}}}}"#
        );
        assert!(matches!(
            Declaration::parse(j.as_bytes(), false),
            Err(DdmError::TooLong {
                key: "Identifier",
                ..
            })
        ));
        let j = format!(
            r#"{{"Type": "{ENFORCEMENT_SPECIFIC}", "Identifier": "a/b", "Payload": {{}}}}"#
        );
        assert!(Declaration::parse(j.as_bytes(), false).is_err());
        let j = r#"{"Type": "org.example.thing", "Identifier": "a", "Payload": {}}"#;
        assert!(Declaration::parse(j.as_bytes(), false).is_err());
        let j =
            format!(r#"{{"Type": "{ENFORCEMENT_SPECIFIC}", "Identifier": "a", "Payload": {{}}}}"#);
        assert_eq!(
            Declaration::parse(j.as_bytes(), true),
            Err(DdmError::Missing("ServerToken"))
        );
        assert!(Declaration::parse(b"[]", false).is_err());
    }

    #[test]
    fn the_content_token_changes_with_any_content_change() {
        let a = Declaration::parse(enforcement_json("").as_bytes(), false)
            .unwrap()
            .with_content_token();
        let b = Declaration::parse(
            enforcement_json(r#", "DetailsURL": "https://example.org""#).as_bytes(),
            false,
        )
        .unwrap()
        .with_content_token();
        assert_ne!(a.server_token, b.server_token);
        assert_eq!(a.server_token.len(), 32);
        assert_eq!(
            a.content_token(),
            a.clone().with_content_token().server_token
        );
    }

    #[test]
    fn activation_and_subscriptions_use_apple_keys() {
        let act = declaration_of(
            ACTIVATION_SIMPLE,
            "lab.activation",
            &ActivationSimple {
                standard_configurations: vec!["lab.su.target".into()],
                predicate: None,
            },
        );
        assert_eq!(
            serde_json::to_value(&act.payload).unwrap(),
            serde_json::json!({"StandardConfigurations": ["lab.su.target"]})
        );
        assert_eq!(act.kind(), Some(DeclarationKind::Activation));
        let subs = declaration_of(
            STATUS_SUBSCRIPTIONS,
            "lab.subs",
            &StatusSubscriptions::of(&["softwareupdate.install-state"]),
        );
        assert_eq!(
            serde_json::to_value(&subs.payload).unwrap(),
            serde_json::json!({"StatusItems": [{"Name": "softwareupdate.install-state"}]})
        );
        let back: StatusSubscriptions = payload_as(&subs).unwrap();
        assert_eq!(
            back.names().collect::<Vec<_>>(),
            ["softwareupdate.install-state"]
        );
    }
}
