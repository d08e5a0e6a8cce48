//! Server → device commands: typed builders for the five commands a trial needs, their plist
//! envelope, the MicroMDM JSON body, and the enqueue-time envelope check.
//!
//! Key names and types follow Apple's schema files bundled in
//! `data/apple-device-management/mdm/commands/` (`system.update.schedule.yaml`,
//! `system.update.status.yaml`, `system.update.available.yaml`, `information.device.yaml`,
//! `information.security.yaml`); `schema::validate_command` checks what is built here against
//! them. The envelope (`{Command: {RequestType, …}, CommandUUID}`) is MDM brief §3.

use crate::plist_util::{self, type_name};
use plist::{Dictionary, Value};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Problems with a command envelope or a command dictionary. Each names what is missing or
/// wrong so that an operator can fix the plist they handed in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("command is not a plist: {0}")]
    NotPlist(String),
    #[error("command envelope is a {0}, not a dictionary")]
    NotDictionary(&'static str),
    #[error("command envelope has no CommandUUID")]
    MissingCommandUuid,
    #[error("command envelope CommandUUID is a {0}, not a string")]
    CommandUuidNotString(&'static str),
    #[error("command envelope has no Command dictionary")]
    MissingCommand,
    #[error("command envelope Command is a {0}, not a dictionary")]
    CommandNotDictionary(&'static str),
    #[error("command has no Command.RequestType")]
    MissingRequestType,
    #[error("command Command.RequestType is a {0}, not a string")]
    RequestTypeNotString(&'static str),
    #[error(
        "unknown InstallAction {0:?} (expected Default, DownloadOnly, InstallASAP, NotifyOnly, InstallLater or InstallForceRestart)"
    )]
    UnknownInstallAction(String),
    #[error("RequestType {0:?} is not one of the commands lab models")]
    UnsupportedRequestType(String),
    #[error("{request_type}: {key} is missing or has the wrong type")]
    BadKey { request_type: String, key: String },
}

/// `UpdatesItem.InstallAction` of ScheduleOSUpdate (MDM brief §1). Only `Default`,
/// `DownloadOnly` and `InstallASAP` exist on iOS; the other three are macOS-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum InstallAction {
    #[default]
    Default,
    DownloadOnly,
    InstallASAP,
    NotifyOnly,
    InstallLater,
    InstallForceRestart,
}

impl InstallAction {
    pub const ALL: [InstallAction; 6] = [
        InstallAction::Default,
        InstallAction::DownloadOnly,
        InstallAction::InstallASAP,
        InstallAction::NotifyOnly,
        InstallAction::InstallLater,
        InstallAction::InstallForceRestart,
    ];

    /// The Apple string, as it appears in the plist and in MicroMDM's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            InstallAction::Default => "Default",
            InstallAction::DownloadOnly => "DownloadOnly",
            InstallAction::InstallASAP => "InstallASAP",
            InstallAction::NotifyOnly => "NotifyOnly",
            InstallAction::InstallLater => "InstallLater",
            InstallAction::InstallForceRestart => "InstallForceRestart",
        }
    }

    /// Exact match on the Apple string; devices and servers are case-sensitive, so are we.
    pub fn parse(s: &str) -> Option<InstallAction> {
        InstallAction::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for InstallAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InstallAction {
    type Err = CommandError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        InstallAction::parse(s).ok_or_else(|| CommandError::UnknownInstallAction(s.to_string()))
    }
}

impl Serialize for InstallAction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for InstallAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One `UpdatesItem`. `product_version` needs iOS 11.3+ and is "required if ProductKey isn't
/// present" (schedule YAML); the schema validator reports that, the builder does not refuse it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_version: Option<String>,
    pub install_action: InstallAction,
}

impl UpdateItem {
    fn to_dict(&self) -> Dictionary {
        let mut d = Dictionary::new();
        if let Some(k) = &self.product_key {
            d.insert("ProductKey".into(), k.clone().into());
        }
        if let Some(v) = &self.product_version {
            d.insert("ProductVersion".into(), v.clone().into());
        }
        d.insert("InstallAction".into(), self.install_action.as_str().into());
        d
    }

    fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        if let Some(k) = &self.product_key {
            m.insert("product_key".into(), k.clone().into());
        }
        if let Some(v) = &self.product_version {
            m.insert("product_version".into(), v.clone().into());
        }
        m.insert("install_action".into(), self.install_action.as_str().into());
        serde_json::Value::Object(m)
    }
}

/// DeviceInformation queries a trial baseline needs (MDM brief §3 table). `IsRoaming` is
/// deprecated since iOS 16 but still answered; `ServiceSubscriptions` is its replacement.
pub const BASELINE_QUERIES: &[&str] = &[
    "OSVersion",
    "BuildVersion",
    "ProductName",
    "ModelName",
    "Model",
    "DeviceCapacity",
    "AvailableDeviceCapacity",
    "BatteryLevel",
    "IsSupervised",
    "CellularTechnology",
    "WiFiMAC",
    "IsRoaming",
    "ServiceSubscriptions",
    "DeviceName",
    "SerialNumber",
    "UDID",
    "IsMultiUser",
    // Shared iPad (iOS 13.4+ / 14+) and the network state (DataRoamingEnabled iOS 5+,
    // IsNetworkTethered 10.3+, CurrentCarrierNetwork before ServiceSubscriptions, iOS 12):
    // `mdm/commands/information.device.yaml`.
    "ResidentUsers",
    "EstimatedResidentUsers",
    "DataRoamingEnabled",
    "IsNetworkTethered",
    "CurrentCarrierNetwork",
];

/// The commands `lab` sends. Each knows its `RequestType` and how to become the inner
/// `Command` dictionary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    ScheduleOSUpdate { updates: Vec<UpdateItem> },
    OSUpdateStatus,
    AvailableOSUpdates,
    DeviceInformation { queries: Vec<String> },
    SecurityInfo,
}

impl Command {
    /// DeviceInformation with [`BASELINE_QUERIES`].
    pub fn baseline_device_information() -> Command {
        Command::DeviceInformation {
            queries: BASELINE_QUERIES.iter().map(|q| q.to_string()).collect(),
        }
    }

    pub fn request_type(&self) -> &'static str {
        match self {
            Command::ScheduleOSUpdate { .. } => "ScheduleOSUpdate",
            Command::OSUpdateStatus => "OSUpdateStatus",
            Command::AvailableOSUpdates => "AvailableOSUpdates",
            Command::DeviceInformation { .. } => "DeviceInformation",
            Command::SecurityInfo => "SecurityInfo",
        }
    }

    /// The inner `Command` dictionary, `RequestType` included.
    pub fn to_dict(&self) -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("RequestType".into(), self.request_type().into());
        match self {
            Command::ScheduleOSUpdate { updates } => {
                let items = updates
                    .iter()
                    .map(|u| Value::Dictionary(u.to_dict()))
                    .collect();
                d.insert("Updates".into(), Value::Array(items));
            }
            Command::DeviceInformation { queries } => {
                let qs = queries.iter().map(|q| Value::String(q.clone())).collect();
                d.insert("Queries".into(), Value::Array(qs));
            }
            Command::OSUpdateStatus | Command::AvailableOSUpdates | Command::SecurityInfo => {}
        }
        d
    }

    /// `{Command: {…}, CommandUUID}`: what the server hands the device (MDM brief §3).
    pub fn envelope(&self, command_uuid: &str) -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("Command".into(), Value::Dictionary(self.to_dict()));
        d.insert("CommandUUID".into(), command_uuid.into());
        d
    }

    /// The envelope as an XML plist: the body for NanoMDM's `/v1/enqueue` (MDM brief §5.1).
    pub fn to_plist(&self, command_uuid: &str) -> Vec<u8> {
        plist_util::dict_to_xml(self.envelope(command_uuid))
    }

    /// MicroMDM's `POST /v1/commands` body (MDM brief §5.2): snake_case command fields next to
    /// `udid`/`request_type`; `command_uuid` only when the caller picks it.
    pub fn to_micromdm_json(&self, udid: &str, command_uuid: Option<&str>) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("udid".into(), udid.into());
        m.insert("request_type".into(), self.request_type().into());
        if let Some(u) = command_uuid {
            m.insert("command_uuid".into(), u.into());
        }
        match self {
            Command::ScheduleOSUpdate { updates } => {
                let items = updates.iter().map(UpdateItem::to_json).collect();
                m.insert("updates".into(), serde_json::Value::Array(items));
            }
            Command::DeviceInformation { queries } => {
                m.insert("queries".into(), queries.clone().into());
            }
            Command::OSUpdateStatus | Command::AvailableOSUpdates | Command::SecurityInfo => {}
        }
        serde_json::Value::Object(m)
    }

    /// Read a `Command` dictionary back (the simulated device's side). Strict: a key of the
    /// wrong type is an error, because a real device answers such a command with
    /// `CommandFormatError`. Extra keys are ignored here; `schema::validate_command` reports them.
    pub fn from_dict(command: &Dictionary) -> Result<Command, CommandError> {
        let rt = match command.get("RequestType") {
            None => return Err(CommandError::MissingRequestType),
            Some(Value::String(s)) => s.as_str(),
            Some(other) => return Err(CommandError::RequestTypeNotString(type_name(other))),
        };
        let bad = |key: &str| CommandError::BadKey {
            request_type: rt.to_string(),
            key: key.to_string(),
        };
        match rt {
            "ScheduleOSUpdate" => {
                let items = match command.get("Updates") {
                    Some(Value::Array(a)) => a,
                    _ => return Err(bad("Updates")),
                };
                let mut updates = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let d = item
                        .as_dictionary()
                        .ok_or_else(|| bad(&format!("Updates[{i}]")))?;
                    let opt_str = |key: &str| match d.get(key) {
                        None => Ok(None),
                        Some(Value::String(s)) => Ok(Some(s.clone())),
                        Some(_) => Err(bad(&format!("Updates[{i}].{key}"))),
                    };
                    let action = match d.get("InstallAction") {
                        Some(Value::String(s)) => s.parse::<InstallAction>()?,
                        _ => return Err(bad(&format!("Updates[{i}].InstallAction"))),
                    };
                    updates.push(UpdateItem {
                        product_key: opt_str("ProductKey")?,
                        product_version: opt_str("ProductVersion")?,
                        install_action: action,
                    });
                }
                Ok(Command::ScheduleOSUpdate { updates })
            }
            "OSUpdateStatus" => Ok(Command::OSUpdateStatus),
            "AvailableOSUpdates" => Ok(Command::AvailableOSUpdates),
            "SecurityInfo" => Ok(Command::SecurityInfo),
            "DeviceInformation" => {
                let items = match command.get("Queries") {
                    Some(Value::Array(a)) => a,
                    _ => return Err(bad("Queries")),
                };
                let queries = items
                    .iter()
                    .enumerate()
                    .map(|(i, q)| {
                        q.as_string()
                            .map(str::to_string)
                            .ok_or_else(|| bad(&format!("Queries[{i}]")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Command::DeviceInformation { queries })
            }
            other => Err(CommandError::UnsupportedRequestType(other.to_string())),
        }
    }
}

/// What an MDM server reads from an enqueued command plist.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvelopeInfo {
    pub command_uuid: String,
    pub request_type: String,
    /// The inner `Command` dictionary, `RequestType` included.
    pub command: Dictionary,
}

/// The enqueue-time check: NanoMDM refuses a plist without `CommandUUID` or
/// `Command.RequestType` ("decoding command: invalid command", MDM brief §5.1). An empty
/// string counts as missing, as it does there.
pub fn parse_envelope(bytes: &[u8]) -> Result<EnvelopeInfo, CommandError> {
    let top = match plist_util::parse(bytes).map_err(CommandError::NotPlist)? {
        Value::Dictionary(d) => d,
        other => return Err(CommandError::NotDictionary(type_name(&other))),
    };
    let command_uuid = match top.get("CommandUUID") {
        None => return Err(CommandError::MissingCommandUuid),
        Some(Value::String(s)) if s.is_empty() => return Err(CommandError::MissingCommandUuid),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(CommandError::CommandUuidNotString(type_name(other))),
    };
    let command = match top.get("Command") {
        None => return Err(CommandError::MissingCommand),
        Some(Value::Dictionary(d)) => d.clone(),
        Some(other) => return Err(CommandError::CommandNotDictionary(type_name(other))),
    };
    let request_type = match command.get("RequestType") {
        None => return Err(CommandError::MissingRequestType),
        Some(Value::String(s)) if s.is_empty() => return Err(CommandError::MissingRequestType),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(CommandError::RequestTypeNotString(type_name(other))),
    };
    Ok(EnvelopeInfo {
        command_uuid,
        request_type,
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sched() -> Command {
        Command::ScheduleOSUpdate {
            updates: vec![UpdateItem {
                product_key: Some("iOSUpdate17A576".into()),
                product_version: Some("17.6".into()),
                install_action: InstallAction::DownloadOnly,
            }],
        }
    }

    #[test]
    fn install_action_strings_round_trip() {
        for a in InstallAction::ALL {
            assert_eq!(a.as_str().parse::<InstallAction>().unwrap(), a);
            assert_eq!(InstallAction::parse(a.as_str()), Some(a));
            let j = serde_json::to_value(a).unwrap();
            assert_eq!(j, json!(a.as_str()));
            assert_eq!(serde_json::from_value::<InstallAction>(j).unwrap(), a);
        }
        assert_eq!(
            "Sometimes".parse::<InstallAction>(),
            Err(CommandError::UnknownInstallAction("Sometimes".into()))
        );
        assert_eq!(InstallAction::parse("default"), None);
        assert!(serde_json::from_value::<InstallAction>(json!("Sometimes")).is_err());
        assert_eq!(InstallAction::InstallASAP.to_string(), "InstallASAP");
    }

    #[test]
    fn update_item_serde_uses_apple_strings() {
        let u: UpdateItem = serde_json::from_value(
            json!({"product_version": "17.6", "install_action": "InstallASAP"}),
        )
        .unwrap();
        assert_eq!(u.product_key, None);
        assert_eq!(u.install_action, InstallAction::InstallASAP);
        assert_eq!(
            serde_json::to_value(&u).unwrap(),
            json!({"product_version": "17.6", "install_action": "InstallASAP"})
        );
    }

    #[test]
    fn schedule_dict_and_envelope() {
        let c = sched();
        assert_eq!(c.request_type(), "ScheduleOSUpdate");
        let d = c.to_dict();
        assert_eq!(
            d.get("RequestType").unwrap().as_string(),
            Some("ScheduleOSUpdate")
        );
        let item = d.get("Updates").unwrap().as_array().unwrap()[0]
            .as_dictionary()
            .unwrap();
        assert_eq!(
            item.get("ProductKey").unwrap().as_string(),
            Some("iOSUpdate17A576")
        );
        assert_eq!(
            item.get("ProductVersion").unwrap().as_string(),
            Some("17.6")
        );
        assert_eq!(
            item.get("InstallAction").unwrap().as_string(),
            Some("DownloadOnly")
        );

        let env = c.envelope("cmd-1");
        assert_eq!(env.get("CommandUUID").unwrap().as_string(), Some("cmd-1"));
        assert_eq!(env.get("Command").unwrap().as_dictionary(), Some(&d));

        let xml = c.to_plist("cmd-1");
        assert!(xml.starts_with(b"<?xml"));
        let info = parse_envelope(&xml).unwrap();
        assert_eq!(info.command_uuid, "cmd-1");
        assert_eq!(info.request_type, "ScheduleOSUpdate");
        assert_eq!(Command::from_dict(&info.command).unwrap(), c);
    }

    #[test]
    fn optional_product_fields_are_omitted() {
        let c = Command::ScheduleOSUpdate {
            updates: vec![UpdateItem {
                product_key: None,
                product_version: Some("17.6".into()),
                install_action: InstallAction::Default,
            }],
        };
        let d = c.to_dict();
        let item = d.get("Updates").unwrap().as_array().unwrap()[0]
            .as_dictionary()
            .unwrap();
        assert!(item.get("ProductKey").is_none());
        assert_eq!(
            c.to_micromdm_json("U1", None),
            json!({"udid": "U1", "request_type": "ScheduleOSUpdate",
                   "updates": [{"product_version": "17.6", "install_action": "Default"}]})
        );
    }

    #[test]
    fn every_variant_round_trips_through_its_dict() {
        for c in [
            sched(),
            Command::OSUpdateStatus,
            Command::AvailableOSUpdates,
            Command::baseline_device_information(),
            Command::SecurityInfo,
        ] {
            let d = c.to_dict();
            assert_eq!(
                d.get("RequestType").unwrap().as_string(),
                Some(c.request_type())
            );
            assert_eq!(Command::from_dict(&d).unwrap(), c);
        }
        assert_eq!(Command::OSUpdateStatus.to_dict().len(), 1);
        assert_eq!(Command::SecurityInfo.to_dict().len(), 1);
    }

    #[test]
    fn micromdm_json_shapes() {
        assert_eq!(
            sched().to_micromdm_json("U1", Some("cmd-9")),
            json!({"udid": "U1", "request_type": "ScheduleOSUpdate", "command_uuid": "cmd-9",
                   "updates": [{"product_key": "iOSUpdate17A576", "product_version": "17.6",
                                "install_action": "DownloadOnly"}]})
        );
        let di = Command::DeviceInformation {
            queries: vec!["OSVersion".into(), "UDID".into()],
        };
        assert_eq!(
            di.to_micromdm_json("U1", None),
            json!({"udid": "U1", "request_type": "DeviceInformation",
                   "queries": ["OSVersion", "UDID"]})
        );
        assert_eq!(
            Command::OSUpdateStatus.to_micromdm_json("U1", None),
            json!({"udid": "U1", "request_type": "OSUpdateStatus"})
        );
    }

    #[test]
    fn baseline_queries_cover_the_trial_needs() {
        assert_eq!(BASELINE_QUERIES.len(), 22);
        for q in [
            "IsMultiUser",
            "ResidentUsers",
            "IsNetworkTethered",
            "OSVersion",
            "BatteryLevel",
            "IsSupervised",
            "ServiceSubscriptions",
            "UDID",
        ] {
            assert!(BASELINE_QUERIES.contains(&q));
        }
    }

    fn env_bytes(f: impl FnOnce(&mut Dictionary)) -> Vec<u8> {
        let mut env = Command::OSUpdateStatus.envelope("u-1");
        f(&mut env);
        plist_util::dict_to_xml(env)
    }

    #[test]
    fn envelope_errors_name_what_is_missing() {
        assert!(matches!(
            parse_envelope(b"garbage"),
            Err(CommandError::NotPlist(_))
        ));
        assert!(matches!(
            parse_envelope(b""),
            Err(CommandError::NotPlist(_))
        ));
        assert_eq!(
            parse_envelope(&plist_util::to_xml(&Value::Array(vec![]))),
            Err(CommandError::NotDictionary("array"))
        );
        assert_eq!(
            parse_envelope(&env_bytes(|d| {
                d.remove("CommandUUID");
            })),
            Err(CommandError::MissingCommandUuid)
        );
        assert_eq!(
            parse_envelope(&env_bytes(|d| {
                d.insert("CommandUUID".into(), "".into());
            })),
            Err(CommandError::MissingCommandUuid)
        );
        assert_eq!(
            parse_envelope(&env_bytes(|d| {
                d.insert("CommandUUID".into(), Value::Integer(4.into()));
            })),
            Err(CommandError::CommandUuidNotString("integer"))
        );
        assert_eq!(
            parse_envelope(&env_bytes(|d| {
                d.remove("Command");
            })),
            Err(CommandError::MissingCommand)
        );
        assert_eq!(
            parse_envelope(&env_bytes(|d| {
                d.insert("Command".into(), "OSUpdateStatus".into());
            })),
            Err(CommandError::CommandNotDictionary("string"))
        );
        assert_eq!(
            parse_envelope(&env_bytes(|d| {
                d.insert("Command".into(), Value::Dictionary(Dictionary::new()));
            })),
            Err(CommandError::MissingRequestType)
        );
        let mut c = Dictionary::new();
        c.insert("RequestType".into(), Value::Boolean(true));
        assert_eq!(
            parse_envelope(&env_bytes(|d| {
                d.insert("Command".into(), Value::Dictionary(c));
            })),
            Err(CommandError::RequestTypeNotString("boolean"))
        );
        let msg = CommandError::MissingRequestType.to_string();
        assert!(msg.contains("RequestType"), "{msg}");
    }

    #[test]
    fn from_dict_rejects_bad_commands() {
        let mut d = sched().to_dict();
        d.insert("Updates".into(), "x".into());
        assert!(matches!(
            Command::from_dict(&d),
            Err(CommandError::BadKey { key, .. }) if key == "Updates"
        ));
        let mut item = Dictionary::new();
        item.insert("InstallAction".into(), "Sometimes".into());
        d.insert(
            "Updates".into(),
            Value::Array(vec![Value::Dictionary(item)]),
        );
        assert_eq!(
            Command::from_dict(&d),
            Err(CommandError::UnknownInstallAction("Sometimes".into()))
        );
        let mut item = Dictionary::new();
        item.insert("ProductKey".into(), "k".into());
        d.insert(
            "Updates".into(),
            Value::Array(vec![Value::Dictionary(item)]),
        );
        assert!(matches!(
            Command::from_dict(&d),
            Err(CommandError::BadKey { key, .. }) if key == "Updates[0].InstallAction"
        ));
        let mut r = Dictionary::new();
        r.insert("RequestType".into(), "RestartDevice".into());
        assert_eq!(
            Command::from_dict(&r),
            Err(CommandError::UnsupportedRequestType("RestartDevice".into()))
        );
        assert_eq!(
            Command::from_dict(&Dictionary::new()),
            Err(CommandError::MissingRequestType)
        );
        let mut q = Command::baseline_device_information().to_dict();
        q.insert(
            "Queries".into(),
            Value::Array(vec![Value::Integer(1.into())]),
        );
        assert!(matches!(
            Command::from_dict(&q),
            Err(CommandError::BadKey { key, .. }) if key == "Queries[0]"
        ));
    }
}
