//! The device's status report (`declarative/protocol/statusreport.yaml`: `StatusItems`,
//! `Errors`, `FullReport`) and a typed, lenient reading of the items a software-update trial
//! subscribes to (`declarative/status/softwareupdate.*.yaml`,
//! `declarative/status/device.operating-system.*.yaml`).
//!
//! Items arrive nested: `softwareupdate.install-state` is
//! `StatusItems.softwareupdate["install-state"]` (DDM brief §0.1). Reports are incremental: a
//! report holds only what changed since the last one the server answered with 200, so readers
//! fold them in order ([`SoftwareUpdateView::fold`]). The raw bytes stay the evidence.

use super::{DdmError, json_type, parse_json};
use serde_json::{Map, Value};

/// The items `lab`'s status-subscriptions configuration names (issue 13; Apple advises
/// subscribing to all `softwareupdate.*` and `device.operating-system.*` items, DDM brief §1).
pub const SUBSCRIBED_ITEMS: &[&str] = &[
    "softwareupdate.install-state",
    "softwareupdate.pending-version",
    "softwareupdate.failure-reason",
    "softwareupdate.install-reason",
    "device.operating-system.version",
    "device.operating-system.build-version",
    "device.operating-system.supplemental.build-version",
];

/// A status report, its items kept as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    pub status_items: Map<String, Value>,
    pub errors: Vec<Value>,
    /// `FullReport` (iOS 17+): the daily safety sync, replacing all stored state.
    pub full_report: bool,
}

impl StatusReport {
    /// Reads untrusted bytes; `StatusItems` and `Errors` are required by the schema.
    pub fn parse(bytes: &[u8]) -> Result<StatusReport, DdmError> {
        let Value::Object(mut o) = parse_json(bytes)? else {
            return Err(DdmError::NotObject);
        };
        let status_items = match o.remove("StatusItems") {
            Some(Value::Object(m)) => m,
            Some(v) => return Err(wrong("StatusItems", "object", &v)),
            None => return Err(DdmError::Missing("StatusItems")),
        };
        let errors = match o.remove("Errors") {
            Some(Value::Array(a)) => a,
            Some(v) => return Err(wrong("Errors", "array", &v)),
            None => return Err(DdmError::Missing("Errors")),
        };
        let full_report = match o.remove("FullReport") {
            None => false,
            Some(Value::Bool(b)) => b,
            Some(v) => return Err(wrong("FullReport", "boolean", &v)),
        };
        Ok(StatusReport {
            status_items,
            errors,
            full_report,
        })
    }

    pub fn new() -> StatusReport {
        StatusReport {
            status_items: Map::new(),
            errors: Vec::new(),
            full_report: false,
        }
    }

    /// Sets a dotted item (`softwareupdate.install-state`) at its nested place.
    pub fn set(&mut self, dotted: &str, value: Value) {
        let (parent, leaf) = split_item(dotted);
        let mut m = &mut self.status_items;
        for seg in parent {
            let slot = m
                .entry(seg.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            m = match slot {
                Value::Object(o) => o,
                _ => return,
            };
        }
        m.insert(leaf.to_string(), value);
    }

    /// A dotted item's value, if the report carries it.
    pub fn get(&self, dotted: &str) -> Option<&Value> {
        let (parent, leaf) = split_item(dotted);
        let mut m = &self.status_items;
        for seg in parent {
            m = m.get(seg)?.as_object()?;
        }
        m.get(leaf)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut o = Map::new();
        o.insert(
            "StatusItems".into(),
            Value::Object(self.status_items.clone()),
        );
        o.insert("Errors".into(), Value::Array(self.errors.clone()));
        o.insert("FullReport".into(), Value::Bool(self.full_report));
        serde_json::to_vec(&Value::Object(o)).unwrap_or_default()
    }
}

impl Default for StatusReport {
    fn default() -> Self {
        StatusReport::new()
    }
}

fn wrong(key: &str, expected: &'static str, v: &Value) -> DdmError {
    DdmError::WrongType {
        key: key.into(),
        expected,
        got: json_type(v),
    }
}

/// A dotted status item name as its nested path: Apple nests at every dot, so
/// `softwareupdate.install-state` is `softwareupdate` → `install-state` and
/// `device.operating-system.supplemental.build-version` is `device` → `operating-system` →
/// `supplemental` → `build-version` (DDM brief §0.1; KMFDDM `test/e2e/testdata/status.1st.json`).
fn split_item(dotted: &str) -> (Vec<&str>, &str) {
    let mut segs: Vec<&str> = dotted.split('.').collect();
    let leaf = segs.pop().unwrap_or("");
    (segs, leaf)
}

/// `softwareupdate.install-state` values: the schema's rangelist (`none`, `downloading`,
/// `prepared`, `installing`, `failed`) plus `waiting`, which the prose defines and the rangelist
/// omits (DDM brief §3). Unknown values are kept, not refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallState {
    None,
    Waiting,
    Downloading,
    Prepared,
    Installing,
    Failed,
    Other(String),
}

impl InstallState {
    pub fn parse(s: &str) -> InstallState {
        match s {
            "none" => InstallState::None,
            "waiting" => InstallState::Waiting,
            "downloading" => InstallState::Downloading,
            "prepared" => InstallState::Prepared,
            "installing" => InstallState::Installing,
            "failed" => InstallState::Failed,
            other => InstallState::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            InstallState::None => "none",
            InstallState::Waiting => "waiting",
            InstallState::Downloading => "downloading",
            InstallState::Prepared => "prepared",
            InstallState::Installing => "installing",
            InstallState::Failed => "failed",
            InstallState::Other(s) => s,
        }
    }
}

/// `softwareupdate.pending-version`: `os-version`, `build-version` (empty when nothing is
/// pending) and, on newer schemas, `target-local-date-time` while enforced. iOS 26 was seen
/// sending it in UTC under `softwareupdate.target-local-date-time` (Apple forums 829210, DDM
/// brief §3): both names are read, the raw value kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingVersion {
    pub os_version: String,
    pub build_version: String,
    pub target_local_date_time: Option<String>,
}

/// `softwareupdate.failure-reason`: `count` (0 when none), optional `reason`, `timestamp`
/// (RFC 3339).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureReason {
    pub count: i64,
    pub reason: Option<String>,
    pub timestamp: Option<String>,
}

/// `softwareupdate.install-reason`: `reason` (empty = nothing pending) and `declaration-id`
/// (only with `declaration`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallReason {
    pub reason: Vec<String>,
    pub declaration_id: Option<String>,
}

/// What the subscribed items say, folded over reports in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SoftwareUpdateView {
    pub install_state: Option<InstallState>,
    pub pending_version: Option<PendingVersion>,
    pub failure_reason: Option<FailureReason>,
    pub install_reason: Option<InstallReason>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub supplemental_build_version: Option<String>,
}

impl SoftwareUpdateView {
    /// Applies one report: a `FullReport` replaces everything, an incremental one overwrites
    /// only the items it carries. Values of an unexpected type are skipped, not fatal.
    pub fn fold(&mut self, r: &StatusReport) {
        if r.full_report {
            *self = SoftwareUpdateView::default();
        }
        let s = |v: &Value| v.as_str().map(str::to_string);
        if let Some(v) = r
            .get("softwareupdate.install-state")
            .and_then(Value::as_str)
        {
            self.install_state = Some(InstallState::parse(v));
        }
        if let Some(o) = r
            .get("softwareupdate.pending-version")
            .and_then(Value::as_object)
        {
            let f = |k: &str| o.get(k).and_then(s).unwrap_or_default();
            self.pending_version = Some(PendingVersion {
                os_version: f("os-version"),
                build_version: f("build-version"),
                target_local_date_time: o
                    .get("target-local-date-time")
                    .or_else(|| o.get("softwareupdate.target-local-date-time"))
                    .and_then(s),
            });
        }
        if let Some(o) = r
            .get("softwareupdate.failure-reason")
            .and_then(Value::as_object)
        {
            self.failure_reason = Some(FailureReason {
                count: o.get("count").and_then(Value::as_i64).unwrap_or(0),
                reason: o.get("reason").and_then(s),
                timestamp: o.get("timestamp").and_then(s),
            });
        }
        if let Some(o) = r
            .get("softwareupdate.install-reason")
            .and_then(Value::as_object)
        {
            self.install_reason = Some(InstallReason {
                reason: o
                    .get("reason")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(s).collect())
                    .unwrap_or_default(),
                declaration_id: o.get("declaration-id").and_then(s),
            });
        }
        for (item, slot) in [
            ("device.operating-system.version", &mut self.os_version),
            (
                "device.operating-system.build-version",
                &mut self.build_version,
            ),
            (
                "device.operating-system.supplemental.build-version",
                &mut self.supplemental_build_version,
            ),
        ] {
            if let Some(v) = r.get(item).and_then(s) {
                *slot = Some(v);
            }
        }
    }
}

/// Builders for the items, as a device writes them.
pub mod items {
    use super::*;
    use serde_json::json;

    pub fn pending_version(os: &str, build: &str, target_local_date_time: Option<&str>) -> Value {
        let mut v = json!({"os-version": os, "build-version": build});
        if let Some(t) = target_local_date_time {
            v["target-local-date-time"] = t.into();
        }
        v
    }

    pub fn failure_reason(count: i64, reason: Option<&str>, timestamp: Option<&str>) -> Value {
        let mut v = json!({ "count": count });
        if let Some(r) = reason {
            v["reason"] = r.into();
        }
        if let Some(t) = timestamp {
            v["timestamp"] = t.into();
        }
        v
    }

    pub fn install_reason(reasons: &[&str], declaration_id: Option<&str>) -> Value {
        let mut v = json!({ "reason": reasons });
        if let Some(d) = declaration_id {
            v["declaration-id"] = d.into();
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The brief's example report (DDM brief §1), values illustrative.
    const EXAMPLE: &str = r#"{"StatusItems": {
       "softwareupdate": {"install-state": "downloading",
         "pending-version": {"os-version": "26.4", "build-version": "23E200",
                             "target-local-date-time": "2026-11-02T19:00:00"},
         "install-reason": {"reason": ["declaration"], "declaration-id": "lab.su.target"},
         "failure-reason": {"count": 0}},
       "management": {"declarations": {"activations": [], "assets": [], "management": [],
         "configurations": [{"identifier": "lab.su.target", "active": true, "valid": "valid", "server-token": "t7"}]}}},
     "Errors": [], "FullReport": false}"#;

    #[test]
    fn the_brief_example_reads_nested() {
        let r = StatusReport::parse(EXAMPLE.as_bytes()).unwrap();
        let mut v = SoftwareUpdateView::default();
        v.fold(&r);
        assert_eq!(v.install_state, Some(InstallState::Downloading));
        let p = v.pending_version.unwrap();
        assert_eq!(
            (p.os_version.as_str(), p.build_version.as_str()),
            ("26.4", "23E200")
        );
        assert_eq!(
            p.target_local_date_time.as_deref(),
            Some("2026-11-02T19:00:00")
        );
        assert_eq!(
            v.install_reason.unwrap().declaration_id.as_deref(),
            Some("lab.su.target")
        );
        assert_eq!(v.failure_reason.unwrap().count, 0);
    }

    #[test]
    fn reports_fold_incrementally_and_a_full_report_replaces() {
        let mut a = StatusReport::new();
        a.set("softwareupdate.install-state", "prepared".into());
        a.set("device.operating-system.version", "17.5".into());
        a.set(
            "device.operating-system.supplemental.build-version",
            "21F79".into(),
        );
        let back = StatusReport::parse(&a.to_json()).unwrap();
        assert_eq!(back, a);
        assert_eq!(
            serde_json::from_slice::<Value>(&a.to_json()).unwrap()["StatusItems"]["device"]["operating-system"]
                ["supplemental"]["build-version"],
            "21F79"
        );
        let mut b = StatusReport::new();
        b.set("softwareupdate.install-state", "installing".into());
        let mut v = SoftwareUpdateView::default();
        v.fold(&a);
        v.fold(&b);
        assert_eq!(v.install_state, Some(InstallState::Installing));
        assert_eq!(v.os_version.as_deref(), Some("17.5"));
        let mut full = StatusReport::new();
        full.full_report = true;
        full.set("softwareupdate.install-state", "none".into());
        v.fold(&full);
        assert_eq!(v.os_version, None);
        assert_eq!(v.install_state, Some(InstallState::None));
    }

    #[test]
    fn odd_values_are_lenient_and_odd_shapes_refused() {
        let r = StatusReport::parse(
            br#"{"StatusItems": {"softwareupdate": {"install-state": "rebooting",
                "pending-version": {"os-version": "26.5", "build-version": "",
                "softwareupdate.target-local-date-time": "2026-11-02T13:30:00Z"}}}, "Errors": []}"#,
        )
        .unwrap();
        let mut v = SoftwareUpdateView::default();
        v.fold(&r);
        assert_eq!(
            v.install_state,
            Some(InstallState::Other("rebooting".into()))
        );
        assert_eq!(
            v.pending_version.unwrap().target_local_date_time.as_deref(),
            Some("2026-11-02T13:30:00Z")
        );
        assert!(StatusReport::parse(br#"{"Errors": []}"#).is_err());
        assert!(StatusReport::parse(br#"{"StatusItems": [], "Errors": []}"#).is_err());
        assert!(
            StatusReport::parse(br#"{"StatusItems": {}, "Errors": [], "FullReport": 1}"#).is_err()
        );
        for s in [
            "none",
            "waiting",
            "downloading",
            "prepared",
            "installing",
            "failed",
        ] {
            assert_eq!(InstallState::parse(s).as_str(), s);
        }
    }
}
