//! Validation of command dictionaries against Apple's schema YAML, for a target iOS version.
//!
//! The schemas are Apple's `apple/device-management` files bundled under
//! `data/apple-device-management/mdm/commands/` (provenance and licence in that folder's
//! README.md and LICENSE.txt; MDM brief §6). Only the request side (`payloadkeys`) is checked:
//! a wrong type is what makes a device answer `CommandFormatError` (NanoMDM PR #37 emitted
//! `MaxUserDeferrals` as a string, MDM brief §1).
//!
//! What the YAML encodes and is checked: `presence: required`, unknown keys (a subkey named
//! `ANY` allows any), plist types, `rangelist`, and `supportedOS.iOS` (`introduced`, `n/a`,
//! `removed`) of the command and of every key. An array's single subkey describes its items;
//! a string's subkeys enumerate its allowed values (DeviceInformation `Queries`).
//!
//! What the YAML only says in prose, encoded here in [`VALUE_SUPPORT`] and [`prose_rules`]:
//! per-value OS support of `InstallAction` (`NotifyOnly`, `InstallLater`,
//! `InstallForceRestart` are macOS-only, MDM brief §1) and "ProductVersion … required if
//! ProductKey isn't present".

use crate::plist_util::type_name;
use plist::{Dictionary, Value};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

/// The bundled command schemas, by file name (relative to `data/apple-device-management/`).
const SCHEMA_FILES: &[(&str, &str)] = &[
    (
        "mdm/commands/system.update.schedule.yaml",
        include_str!("../../data/apple-device-management/mdm/commands/system.update.schedule.yaml"),
    ),
    (
        "mdm/commands/system.update.status.yaml",
        include_str!("../../data/apple-device-management/mdm/commands/system.update.status.yaml"),
    ),
    (
        "mdm/commands/system.update.available.yaml",
        include_str!(
            "../../data/apple-device-management/mdm/commands/system.update.available.yaml"
        ),
    ),
    (
        "mdm/commands/information.device.yaml",
        include_str!("../../data/apple-device-management/mdm/commands/information.device.yaml"),
    ),
    (
        "mdm/commands/information.security.yaml",
        include_str!("../../data/apple-device-management/mdm/commands/information.security.yaml"),
    ),
];

/// Per-value iOS support that the schema states only in the key's `content` text.
/// `(RequestType, key, value, iOS introduced or "n/a")`. Source: the `InstallAction` text of
/// `system.update.schedule.yaml`, summarised in MDM brief §1.
pub const VALUE_SUPPORT: &[(&str, &str, &str, &str)] = &[
    ("ScheduleOSUpdate", "InstallAction", "Default", "9.0"),
    ("ScheduleOSUpdate", "InstallAction", "DownloadOnly", "9.0"),
    ("ScheduleOSUpdate", "InstallAction", "InstallASAP", "9.0"),
    ("ScheduleOSUpdate", "InstallAction", "NotifyOnly", "n/a"),
    ("ScheduleOSUpdate", "InstallAction", "InstallLater", "n/a"),
    (
        "ScheduleOSUpdate",
        "InstallAction",
        "InstallForceRestart",
        "n/a",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ViolationKind {
    /// No bundled schema for this RequestType, or the RequestType itself is missing/wrong.
    NoSchema,
    /// The iOS version given is not `N[.N…]`; OS checks were skipped.
    BadVersion,
    MissingKey,
    UnknownKey,
    WrongType,
    NotInRange,
    /// The command, key or value does not exist on iOS, or not on this iOS version.
    NotOnThisOs,
}

/// One problem. `path` is like `Updates[0].InstallAction`; empty for the command as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaViolation {
    pub path: String,
    pub kind: ViolationKind,
    pub message: String,
}

impl fmt::Display for SchemaViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

// ---- schema model (just the parts we check; serde ignores the rest) ----

/// A YAML scalar: versions are quoted strings mostly, but `4.2.6`/`10.11.5` are plain and a
/// plain `10.7` would read as a number, so accept every scalar and keep its text.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Str(String),
    Int(i64),
    Real(f64),
    Bool(bool),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Str(s) => s.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Real(r) => r.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }

    fn matches(&self, v: &Value) -> bool {
        match (self, v) {
            (Scalar::Str(a), Value::String(b)) => a == b,
            (Scalar::Int(a), Value::Integer(b)) => b.as_signed() == Some(*a),
            (Scalar::Real(a), Value::Real(b)) => a == b,
            (Scalar::Bool(a), Value::Boolean(b)) => a == b,
            _ => false,
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(s.to_string()))
            }
            fn visit_i64<E: de::Error>(self, i: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(i))
            }
            fn visit_u64<E: de::Error>(self, u: u64) -> Result<Scalar, E> {
                i64::try_from(u)
                    .map(Scalar::Int)
                    .map_err(|_| E::custom("integer too large"))
            }
            fn visit_f64<E: de::Error>(self, r: f64) -> Result<Scalar, E> {
                Ok(Scalar::Real(r))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(b))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
struct OsSupport {
    introduced: Option<Scalar>,
    removed: Option<Scalar>,
    deprecated: Option<Scalar>,
}

type SupportedOs = BTreeMap<String, Option<OsSupport>>;

#[derive(Debug, Deserialize)]
struct KeyDef {
    key: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    presence: Option<String>,
    #[serde(default)]
    rangelist: Option<Vec<Scalar>>,
    #[serde(rename = "supportedOS", default)]
    supported_os: Option<SupportedOs>,
    #[serde(default)]
    subkeys: Vec<KeyDef>,
}

#[derive(Debug, Deserialize)]
struct PayloadDef {
    requesttype: String,
    #[serde(rename = "supportedOS", default)]
    supported_os: Option<SupportedOs>,
}

#[derive(Debug, Deserialize)]
struct CommandSchema {
    payload: PayloadDef,
    #[serde(default)]
    payloadkeys: Vec<KeyDef>,
}

fn schemas() -> Result<&'static [CommandSchema], &'static str> {
    static CELL: OnceLock<Result<Vec<CommandSchema>, String>> = OnceLock::new();
    CELL.get_or_init(|| {
        SCHEMA_FILES
            .iter()
            .map(|(name, text)| {
                serde_saphyr::from_str::<CommandSchema>(text)
                    .map_err(|e| format!("bundled schema {name} is unreadable: {e}"))
            })
            .collect()
    })
    .as_deref()
    .map_err(String::as_str)
}

/// RequestTypes that have a bundled schema.
pub fn known_request_types() -> Vec<&'static str> {
    schemas()
        .map(|s| s.iter().map(|c| c.payload.requesttype.as_str()).collect())
        .unwrap_or_default()
}

// ---- versions ----

fn parse_version(s: &str) -> Option<Vec<u64>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    s.split('.').map(|p| p.parse::<u64>().ok()).collect()
}

fn cmp_version(a: &[u64], b: &[u64]) -> Ordering {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            a.get(i)
                .copied()
                .unwrap_or(0)
                .cmp(&b.get(i).copied().unwrap_or(0))
        })
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// Why `what` cannot be used on `ios` per a `supportedOS` block, if it cannot. With no iOS
/// entry, nothing is said (keys inherit their command's support).
fn os_problem(supported: Option<&SupportedOs>, ios: Option<&[u64]>, what: &str) -> Option<String> {
    let entry = supported?.get("iOS")?.as_ref()?;
    os_problem_texts(
        entry.introduced.as_ref().map(Scalar::text).as_deref(),
        entry.removed.as_ref().map(Scalar::text).as_deref(),
        ios,
        what,
    )
}

fn os_problem_texts(
    introduced: Option<&str>,
    removed: Option<&str>,
    ios: Option<&[u64]>,
    what: &str,
) -> Option<String> {
    if introduced.is_some_and(|i| i.trim() == "n/a") {
        return Some(format!("{what} is not available on iOS"));
    }
    let ios = ios?;
    if let Some(i) = introduced
        && let Some(iv) = parse_version(i)
        && cmp_version(ios, &iv).is_lt()
    {
        return Some(format!("{what} needs iOS {i} or later"));
    }
    if let Some(r) = removed
        && let Some(rv) = parse_version(r)
        && cmp_version(ios, &rv).is_ge()
    {
        return Some(format!("{what} was removed in iOS {r}"));
    }
    None
}

/// A note when the command is deprecated (not removed) on this iOS version, e.g.
/// ScheduleOSUpdate on iOS 26 (MDM brief §0.1). Not a violation: the command still works.
pub fn deprecation_note(request_type: &str, ios_version: &str) -> Option<String> {
    let ios = parse_version(ios_version)?;
    let schema = schemas()
        .ok()?
        .iter()
        .find(|s| s.payload.requesttype == request_type)?;
    let entry = schema.payload.supported_os.as_ref()?.get("iOS")?.as_ref()?;
    let dep = entry.deprecated.as_ref()?.text();
    let dv = parse_version(&dep)?;
    cmp_version(&ios, &dv)
        .is_ge()
        .then(|| format!("{request_type} is deprecated since iOS {dep}"))
}

// ---- validation ----

struct Ctx<'a> {
    request_type: &'a str,
    ios: Option<Vec<u64>>,
    out: Vec<SchemaViolation>,
}

impl Ctx<'_> {
    fn push(&mut self, path: &str, kind: ViolationKind, message: String) {
        self.out.push(SchemaViolation {
            path: path.to_string(),
            kind,
            message,
        });
    }
}

fn plist_type(v: &Value) -> String {
    format!("<{}>", type_name(v))
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Validate the inner `Command` dictionary (with `RequestType`) for a device on `ios_version`
/// (e.g. "17.5"). An empty result means the command is well-formed for that device.
pub fn validate_command(command: &Dictionary, ios_version: &str) -> Vec<SchemaViolation> {
    let ios = parse_version(ios_version);
    let mut ctx = Ctx {
        request_type: "",
        ios: ios.clone(),
        out: Vec::new(),
    };
    if ios.is_none() {
        ctx.push(
            "",
            ViolationKind::BadVersion,
            format!("cannot read iOS version {ios_version:?}; OS support not checked"),
        );
    }
    let all = match schemas() {
        Ok(s) => s,
        Err(e) => {
            ctx.push("", ViolationKind::NoSchema, e.to_string());
            return ctx.out;
        }
    };
    let rt = match command.get("RequestType") {
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            ctx.push(
                "RequestType",
                ViolationKind::WrongType,
                format!("expected <string>, got {}", plist_type(other)),
            );
            return ctx.out;
        }
        None => {
            ctx.push(
                "RequestType",
                ViolationKind::MissingKey,
                "required key is missing".to_string(),
            );
            return ctx.out;
        }
    };
    let Some(schema) = all.iter().find(|s| s.payload.requesttype == rt) else {
        ctx.push(
            "RequestType",
            ViolationKind::NoSchema,
            format!(
                "no bundled schema for {rt:?} (known: {})",
                known_request_types().join(", ")
            ),
        );
        return ctx.out;
    };
    ctx.request_type = rt;
    if let Some(msg) = os_problem(schema.payload.supported_os.as_ref(), ctx.ios.as_deref(), rt) {
        ctx.push("RequestType", ViolationKind::NotOnThisOs, msg);
    }
    let body: Dictionary = command
        .iter()
        .filter(|(k, _)| k.as_str() != "RequestType")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    check_dict(&mut ctx, &body, &schema.payloadkeys, "");
    prose_rules(&mut ctx, command);
    ctx.out
}

fn check_dict(ctx: &mut Ctx, d: &Dictionary, keys: &[KeyDef], prefix: &str) {
    let any = keys.iter().find(|k| k.key == "ANY");
    for k in keys.iter().filter(|k| k.key != "ANY") {
        let required = k.presence.as_deref() == Some("required");
        // A required key that does not exist on this iOS is not missing.
        let usable = os_problem(k.supported_os.as_ref(), ctx.ios.as_deref(), &k.key).is_none();
        if required && usable && !d.contains_key(&k.key) {
            ctx.push(
                &join(prefix, &k.key),
                ViolationKind::MissingKey,
                "required key is missing".to_string(),
            );
        }
    }
    for (name, v) in d {
        let path = join(prefix, name);
        match keys.iter().find(|k| &k.key == name).or(any) {
            Some(def) => check_value(ctx, v, def, &path),
            None => {
                let known: Vec<&str> = keys.iter().map(|k| k.key.as_str()).collect();
                ctx.push(
                    &path,
                    ViolationKind::UnknownKey,
                    format!("unknown key (allowed: {})", known.join(", ")),
                );
            }
        }
    }
}

fn type_ok(expected: &str, v: &Value) -> bool {
    matches!(
        (expected, v),
        ("<any>", _)
            | ("<string>", Value::String(_))
            | ("<integer>", Value::Integer(_))
            | ("<boolean>", Value::Boolean(_))
            | ("<array>", Value::Array(_))
            | ("<dictionary>", Value::Dictionary(_))
            | ("<real>", Value::Real(_))
            | ("<date>", Value::Date(_))
            | ("<data>", Value::Data(_))
    )
}

fn check_value(ctx: &mut Ctx, v: &Value, def: &KeyDef, path: &str) {
    if let Some(msg) = os_problem(def.supported_os.as_ref(), ctx.ios.as_deref(), &def.key) {
        ctx.push(path, ViolationKind::NotOnThisOs, msg);
    }
    if !type_ok(&def.ty, v) {
        ctx.push(
            path,
            ViolationKind::WrongType,
            format!("expected {}, got {}", def.ty, plist_type(v)),
        );
        return;
    }
    if let Some(range) = &def.rangelist
        && !matches!(v, Value::Array(_) | Value::Dictionary(_))
    {
        if !range.iter().any(|r| r.matches(v)) {
            let allowed: Vec<String> = range.iter().map(Scalar::text).collect();
            ctx.push(
                path,
                ViolationKind::NotInRange,
                format!("{} is not one of {}", shown(v), allowed.join(", ")),
            );
        } else if let Value::String(s) = v {
            value_support(ctx, &def.key, s, path);
        }
    }
    match v {
        Value::Dictionary(d) if !def.subkeys.is_empty() => check_dict(ctx, d, &def.subkeys, path),
        Value::Array(items) => {
            if let Some(item_def) = def.subkeys.first() {
                for (i, item) in items.iter().enumerate() {
                    check_value(ctx, item, item_def, &format!("{path}[{i}]"));
                }
            }
        }
        Value::String(s) if !def.subkeys.is_empty() => {
            // The subkeys enumerate the allowed strings, each with its own OS support.
            match def.subkeys.iter().find(|k| &k.key == s) {
                Some(k) => {
                    if let Some(msg) = os_problem(k.supported_os.as_ref(), ctx.ios.as_deref(), s) {
                        ctx.push(path, ViolationKind::NotOnThisOs, msg);
                    }
                }
                None => ctx.push(
                    path,
                    ViolationKind::NotInRange,
                    format!("{s:?} is not a value {} knows", def.key),
                ),
            }
        }
        _ => {}
    }
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => crate::plist_util::to_json(other).to_string(),
    }
}

fn value_support(ctx: &mut Ctx, key: &str, value: &str, path: &str) {
    let row = VALUE_SUPPORT
        .iter()
        .find(|(rt, k, val, _)| *rt == ctx.request_type && *k == key && *val == value);
    if let Some((_, _, _, introduced)) = row
        && let Some(msg) = os_problem_texts(
            Some(introduced),
            None,
            ctx.ios.as_deref(),
            &format!("{key} {value}"),
        )
    {
        ctx.push(path, ViolationKind::NotOnThisOs, msg);
    }
}

/// Rules stated only in `content` text. ScheduleOSUpdate: "ProductVersion … which the system
/// requires if ProductKey isn't present" (schedule YAML).
fn prose_rules(ctx: &mut Ctx, command: &Dictionary) {
    if ctx.request_type != "ScheduleOSUpdate" {
        return;
    }
    let Some(Value::Array(items)) = command.get("Updates") else {
        return;
    };
    for (i, item) in items.iter().enumerate() {
        if let Value::Dictionary(d) = item
            && !d.contains_key("ProductKey")
            && !d.contains_key("ProductVersion")
        {
            ctx.push(
                &format!("Updates[{i}]"),
                ViolationKind::MissingKey,
                "needs ProductKey or ProductVersion".to_string(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdm::command::{Command, InstallAction, UpdateItem};

    fn sched(key: Option<&str>, version: Option<&str>, action: InstallAction) -> Command {
        Command::ScheduleOSUpdate {
            updates: vec![UpdateItem {
                product_key: key.map(str::to_string),
                product_version: version.map(str::to_string),
                install_action: action,
            }],
        }
    }

    fn one(v: Vec<SchemaViolation>) -> SchemaViolation {
        assert_eq!(v.len(), 1, "{v:#?}");
        v.into_iter().next().unwrap()
    }

    fn item(pairs: &[(&str, Value)]) -> Dictionary {
        let mut cmd = Dictionary::new();
        cmd.insert("RequestType".into(), "ScheduleOSUpdate".into());
        let mut it = Dictionary::new();
        for (k, v) in pairs {
            it.insert((*k).into(), v.clone());
        }
        cmd.insert("Updates".into(), Value::Array(vec![Value::Dictionary(it)]));
        cmd
    }

    #[test]
    fn bundled_schemas_parse() {
        let mut known = known_request_types();
        known.sort();
        assert_eq!(
            known,
            [
                "AvailableOSUpdates",
                "DeviceInformation",
                "OSUpdateStatus",
                "ScheduleOSUpdate",
                "SecurityInfo"
            ]
        );
    }

    #[test]
    fn every_built_command_is_clean_on_17_5() {
        for c in [
            sched(Some("iOSUpdate21F90"), None, InstallAction::Default),
            sched(
                Some("iOSUpdate21F90"),
                Some("17.6"),
                InstallAction::DownloadOnly,
            ),
            sched(None, Some("17.6"), InstallAction::InstallASAP),
            Command::ScheduleOSUpdate { updates: vec![] },
            Command::OSUpdateStatus,
            Command::AvailableOSUpdates,
            Command::baseline_device_information(),
            Command::SecurityInfo,
        ] {
            assert_eq!(validate_command(&c.to_dict(), "17.5"), vec![], "{c:?}");
        }
    }

    #[test]
    fn product_version_needs_11_3() {
        let c = sched(Some("k"), Some("11.4"), InstallAction::Default).to_dict();
        let v = one(validate_command(&c, "11.2"));
        assert_eq!(v.path, "Updates[0].ProductVersion");
        assert_eq!(v.kind, ViolationKind::NotOnThisOs);
        assert!(v.message.contains("11.3"), "{v}");
        assert_eq!(validate_command(&c, "11.3"), vec![]);
        assert_eq!(validate_command(&c, "11.3.1"), vec![]);
    }

    #[test]
    fn unknown_key() {
        let mut c = Command::OSUpdateStatus.to_dict();
        c.insert("Force".into(), Value::Boolean(true));
        let v = one(validate_command(&c, "17.5"));
        assert_eq!(
            (v.path.as_str(), v.kind),
            ("Force", ViolationKind::UnknownKey)
        );
        let c = item(&[
            ("ProductKey", "k".into()),
            ("InstallAction", "Default".into()),
            ("Deadline", "tomorrow".into()),
        ]);
        let v = one(validate_command(&c, "17.5"));
        assert_eq!(v.path, "Updates[0].Deadline");
        assert_eq!(v.kind, ViolationKind::UnknownKey);
        assert!(v.message.contains("InstallAction"), "{v}");
    }

    #[test]
    fn max_user_deferrals_as_string_nanomdm_pr_37() {
        // On macOS 12 the only problem is the type; on iOS the key does not exist at all.
        let c = item(&[
            ("ProductKey", "k".into()),
            ("InstallAction", "Default".into()),
            ("MaxUserDeferrals", "3".into()),
        ]);
        let v = validate_command(&c, "17.5");
        let wrong = v
            .iter()
            .find(|x| x.kind == ViolationKind::WrongType)
            .expect("type violation");
        assert_eq!(wrong.path, "Updates[0].MaxUserDeferrals");
        assert_eq!(wrong.message, "expected <integer>, got <string>");
        assert!(v.iter().any(
            |x| x.kind == ViolationKind::NotOnThisOs && x.path == "Updates[0].MaxUserDeferrals"
        ));
        assert_eq!(v.len(), 2, "{v:#?}");
    }

    #[test]
    fn install_action_out_of_range() {
        let c = item(&[
            ("ProductKey", "k".into()),
            ("InstallAction", "Sometimes".into()),
        ]);
        let v = one(validate_command(&c, "17.5"));
        assert_eq!(v.path, "Updates[0].InstallAction");
        assert_eq!(v.kind, ViolationKind::NotInRange);
        assert!(v.message.contains("\"Sometimes\"") && v.message.contains("InstallASAP"));
    }

    #[test]
    fn missing_install_action() {
        let c = item(&[("ProductKey", "k".into())]);
        let v = one(validate_command(&c, "17.5"));
        assert_eq!(v.path, "Updates[0].InstallAction");
        assert_eq!(v.kind, ViolationKind::MissingKey);
    }

    #[test]
    fn macos_only_install_actions_on_ios() {
        for a in [
            InstallAction::InstallLater,
            InstallAction::NotifyOnly,
            InstallAction::InstallForceRestart,
        ] {
            let c = sched(Some("k"), None, a).to_dict();
            let v = one(validate_command(&c, "17.5"));
            assert_eq!(v.path, "Updates[0].InstallAction");
            assert_eq!(v.kind, ViolationKind::NotOnThisOs);
            assert_eq!(
                v.message,
                format!("InstallAction {a} is not available on iOS")
            );
        }
    }

    #[test]
    fn removed_in_27() {
        let c = sched(Some("k"), None, InstallAction::Default).to_dict();
        let v = one(validate_command(&c, "27.0"));
        assert_eq!(v.path, "RequestType");
        assert_eq!(v.kind, ViolationKind::NotOnThisOs);
        assert_eq!(v.message, "ScheduleOSUpdate was removed in iOS 27.0");
        assert_eq!(
            one(validate_command(&Command::OSUpdateStatus.to_dict(), "27.1")).kind,
            ViolationKind::NotOnThisOs
        );
        // Deprecated is a note, not a violation.
        assert_eq!(validate_command(&c, "26.0"), vec![]);
        assert_eq!(
            deprecation_note("ScheduleOSUpdate", "26.0").as_deref(),
            Some("ScheduleOSUpdate is deprecated since iOS 26.0")
        );
        assert_eq!(deprecation_note("ScheduleOSUpdate", "18.1"), None);
        assert_eq!(deprecation_note("DeviceInformation", "26.0"), None);
        // Introduced-after: no ScheduleOSUpdate before iOS 9.
        // (InstallAction Default also dates from iOS 9.0, so it is reported too.)
        let v = validate_command(&c, "8.4");
        assert_eq!(v[0].path, "RequestType");
        assert_eq!(v[0].message, "ScheduleOSUpdate needs iOS 9.0 or later");
        assert_eq!(v[1].message, "InstallAction Default needs iOS 9.0 or later");
    }

    #[test]
    fn neither_product_key_nor_version() {
        let c = sched(None, None, InstallAction::Default).to_dict();
        let v = one(validate_command(&c, "17.5"));
        assert_eq!(
            (v.path.as_str(), v.kind),
            ("Updates[0]", ViolationKind::MissingKey)
        );
    }

    #[test]
    fn wrong_container_types() {
        let mut c = Command::SecurityInfo.to_dict();
        c.insert("RequestType".into(), "ScheduleOSUpdate".into());
        let v = one(validate_command(&c, "17.5"));
        assert_eq!(
            (v.path.as_str(), v.kind),
            ("Updates", ViolationKind::MissingKey)
        );
        c.insert("Updates".into(), "all".into());
        let v = one(validate_command(&c, "17.5"));
        assert_eq!(
            (v.path.as_str(), v.kind),
            ("Updates", ViolationKind::WrongType)
        );
        c.insert("Updates".into(), Value::Array(vec!["x".into()]));
        let v = one(validate_command(&c, "17.5"));
        assert_eq!(
            (v.path.as_str(), v.kind),
            ("Updates[0]", ViolationKind::WrongType)
        );
        assert_eq!(
            v.to_string(),
            "Updates[0]: expected <dictionary>, got <string>"
        );
    }

    #[test]
    fn device_information_queries() {
        let q = |names: &[&str]| {
            Command::DeviceInformation {
                queries: names.iter().map(|s| s.to_string()).collect(),
            }
            .to_dict()
        };
        let v = one(validate_command(&q(&["OSVersion", "Frobnicate"]), "17.5"));
        assert_eq!(
            (v.path.as_str(), v.kind),
            ("Queries[1]", ViolationKind::NotInRange)
        );
        let v = one(validate_command(&q(&["ProvisioningUDID"]), "17.5"));
        assert_eq!(
            (v.path.as_str(), v.kind),
            ("Queries[0]", ViolationKind::NotOnThisOs)
        );
        let v = one(validate_command(&q(&["ServiceSubscriptions"]), "11.4"));
        assert!(v.message.contains("needs iOS 12.0"), "{v}");
        let mut c = q(&["UDID"]);
        c.insert("DeviceAttestationNonce".into(), Value::Data(vec![1, 2]));
        assert_eq!(validate_command(&c, "17.5"), vec![]);
        let v = one(validate_command(&c, "15.0"));
        assert_eq!(v.path, "DeviceAttestationNonce");
        c.remove("Queries");
        let v = validate_command(&c, "17.5");
        assert_eq!(one(v).path, "Queries");
    }

    #[test]
    fn request_type_problems() {
        assert_eq!(
            one(validate_command(&Dictionary::new(), "17.5")).kind,
            ViolationKind::MissingKey
        );
        let mut c = Dictionary::new();
        c.insert("RequestType".into(), Value::Integer(1.into()));
        assert_eq!(
            one(validate_command(&c, "17.5")).kind,
            ViolationKind::WrongType
        );
        c.insert("RequestType".into(), "RestartDevice".into());
        let v = one(validate_command(&c, "17.5"));
        assert_eq!(v.kind, ViolationKind::NoSchema);
        assert!(v.message.contains("ScheduleOSUpdate"), "{v}");
    }

    #[test]
    fn bad_version_skips_os_checks_only() {
        let c = sched(Some("k"), None, InstallAction::InstallLater).to_dict();
        let v = validate_command(&c, "seventeen");
        assert_eq!(v[0].kind, ViolationKind::BadVersion);
        // n/a holds on every iOS version, so it is still reported.
        assert!(v.iter().any(|x| x.kind == ViolationKind::NotOnThisOs));
        assert_eq!(
            validate_command(
                &sched(Some("k"), Some("1"), InstallAction::Default).to_dict(),
                ""
            )
            .len(),
            1
        );
    }

    #[test]
    fn version_compare() {
        let v = |s: &str| parse_version(s).unwrap();
        assert!(cmp_version(&v("11.3"), &v("11.3.0")).is_eq());
        assert!(cmp_version(&v("11.2.9"), &v("11.3")).is_lt());
        assert!(cmp_version(&v("27"), &v("27.0")).is_eq());
        assert!(cmp_version(&v("10.11.5"), &v("10.9")).is_gt());
        assert_eq!(parse_version("17.x"), None);
        assert_eq!(parse_version(" "), None);
    }
}
