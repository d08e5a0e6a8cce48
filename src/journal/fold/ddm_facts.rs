//! What the record keeps of DDM software-update doses (issue 13): the enforcement declaration an
//! intent carries ([`DdmDose`], read from the exact JSON the harness journalled) and every
//! status report the device sent ([`DdmReport`]), each with the view folded so far.
//!
//! Reports are incremental: a report holds only the items that changed since the last one the
//! server answered with 200, so the view after a report is the fold of every earlier report
//! of the device, in journal order (DDM brief §0.1, §1 "Report";
//! `declarative/protocol/statusreport.yaml`). The record folds as it reads, once.

use super::record::{Facts, Intent};
use crate::journal::DoseKind;
use crate::mdm::ddm::{Declaration, LocalDateTime, SoftwareUpdateView, StatusReport};
use serde_json::{Map, Value};

/// The enforcement declaration of a DDM dose intent
/// (`declarative/declarations/configurations/softwareupdate.enforcement.specific.yaml`, DDM
/// brief §2), read leniently: what the harness sent, even where a device would refuse it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdmDose {
    /// `Payload.TargetOSVersion` (required by the schema; empty when absent).
    pub target_os_version: String,
    /// `Payload.TargetBuildVersion` (optional).
    pub target_build_version: Option<String>,
    /// `Payload.TargetLocalDateTime` as sent (device-local, no zone, DDM brief §0.4).
    pub target_local_date_time_raw: Option<String>,
    /// The same, parsed (`None` when absent or malformed).
    pub target_local_date_time: Option<LocalDateTime>,
}

impl DdmDose {
    /// The declaration a `DoseIntent` carries, when its request type is the enforcement
    /// declaration's `Type` and its bytes read as a declaration; `None` otherwise.
    pub fn of_intent(request_type: &str, command_b64: &str) -> Option<DdmDose> {
        if !DoseKind::of_request_type(request_type).is_declaration() {
            return None;
        }
        let bytes = crate::journal::answer::bytes(command_b64).ok()?;
        let d = Declaration::parse(&bytes, false).ok()?;
        let s = |k: &str| d.payload.get(k).and_then(Value::as_str).map(str::to_string);
        let raw = s("TargetLocalDateTime");
        Some(DdmDose {
            target_os_version: s("TargetOSVersion").unwrap_or_default(),
            target_build_version: s("TargetBuildVersion"),
            target_local_date_time: raw.as_deref().and_then(|t| LocalDateTime::parse(t).ok()),
            target_local_date_time_raw: raw,
        })
    }
}

/// One `DdmStatusReport` of a device, in journal order.
#[derive(Debug, Clone, PartialEq)]
pub struct DdmReport {
    pub seq: u64,
    /// Journal time.
    pub at: String,
    /// The DDM server's id of the report.
    pub report_id: String,
    /// When the DDM server received it (RFC 3339), when it said.
    pub received_at: Option<String>,
    /// The report's own `StatusItems` (not folded); empty when it did not parse.
    pub items: Map<String, Value>,
    /// Why the report did not parse (`None` when it did).
    pub unreadable: Option<String>,
    /// The device's software-update view after this report: every readable report so far,
    /// folded in journal order.
    pub view: SoftwareUpdateView,
}

impl DdmReport {
    /// When the report came: the server's `received_at` when it parses, else the journal time.
    pub fn time(&self) -> &str {
        match &self.received_at {
            Some(r) if chrono::DateTime::parse_from_rfc3339(r).is_ok() => r,
            _ => &self.at,
        }
    }
}

impl Facts {
    /// The device was given a DDM dose: an intent whose request type is the enforcement
    /// declaration's `Type` (`Event::DoseIntent`'s doc), readable or not.
    pub fn is_ddm_dosed(&self) -> bool {
        self.intents
            .iter()
            .any(|i| DoseKind::of_request_type(&i.request_type).is_declaration())
    }

    /// The DDM dose intents with their declarations (unreadable ones left out).
    pub fn ddm_doses(&self) -> impl Iterator<Item = (&Intent, &DdmDose)> {
        self.intents
            .iter()
            .filter_map(|i| i.ddm.as_ref().map(|d| (i, d)))
    }

    /// The status reports sent after the first DDM dose intent: journalled after it and, when
    /// both times read, received no earlier than its journal time. A report the server stored
    /// before the dose (the subscription's first report) can be journalled after the intent,
    /// as the follow-up fetches reports in batches.
    pub fn ddm_reports_after_dose(&self) -> impl Iterator<Item = &DdmReport> {
        let first = self
            .intents
            .iter()
            .find(|i| DoseKind::of_request_type(&i.request_type).is_declaration());
        self.ddm_reports.iter().filter(move |r| {
            first.is_some_and(|i| {
                r.seq > i.seq && seconds_between(&i.at, r.time()).is_none_or(|s| s >= 0.0)
            })
        })
    }
}

/// Seconds from `from` to `to` (RFC 3339), when both parse.
pub fn seconds_between(from: &str, to: &str) -> Option<f64> {
    let a = chrono::DateTime::parse_from_rfc3339(from).ok()?;
    let b = chrono::DateTime::parse_from_rfc3339(to).ok()?;
    Some((b - a).num_milliseconds() as f64 / 1000.0)
}

/// Reads one report's bytes and folds it onto `before` (the view after the previous report).
pub(super) fn read_report(
    seq: u64,
    at: &str,
    report_id: &str,
    received_at: Option<&String>,
    raw_b64: &str,
    before: Option<&SoftwareUpdateView>,
) -> DdmReport {
    let mut view = before.cloned().unwrap_or_default();
    let parsed = crate::journal::answer::bytes(raw_b64)
        .map_err(|e| e.to_string())
        .and_then(|b| StatusReport::parse(&b).map_err(|e| e.to_string()));
    let (items, unreadable) = match parsed {
        Ok(r) => {
            view.fold(&r);
            (r.status_items, None)
        }
        Err(e) => (Map::new(), Some(e)),
    };
    DdmReport {
        seq,
        at: at.to_string(),
        report_id: report_id.to_string(),
        received_at: received_at.cloned(),
        items,
        unreadable,
        view,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdm::ddm::ENFORCEMENT_SPECIFIC;
    use base64::Engine;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn an_enforcement_intent_reads_its_target_and_deadline_and_a_schedule_intent_is_none() {
        let json = r#"{"Type":"com.apple.configuration.softwareupdate.enforcement.specific","Identifier":"lab-ddm-1","ServerToken":"t","Payload":{"TargetLocalDateTime":"2026-12-01T11:00:30","TargetOSVersion":"26.6.1"}}"#;
        let d = DdmDose::of_intent(ENFORCEMENT_SPECIFIC, &b64(json)).unwrap();
        assert_eq!(d.target_os_version, "26.6.1");
        assert_eq!(d.target_build_version, None);
        assert_eq!(
            d.target_local_date_time.map(|t| t.to_wire()).as_deref(),
            Some("2026-12-01T11:00:30")
        );
        assert_eq!(DdmDose::of_intent("ScheduleOSUpdate", &b64(json)), None);
        assert_eq!(DdmDose::of_intent(ENFORCEMENT_SPECIFIC, "%%"), None);
    }

    #[test]
    fn reports_fold_as_deltas_and_an_unreadable_one_keeps_the_view() {
        let first = r#"{"StatusItems":{"softwareupdate":{"install-state":"downloading","pending-version":{"os-version":"26.6.1","build-version":"23G83"}}},"Errors":[]}"#;
        let second =
            r#"{"StatusItems":{"softwareupdate":{"install-state":"prepared"}},"Errors":[]}"#;
        let a = read_report(1, "t1", "r1", None, &b64(first), None);
        let b = read_report(2, "t2", "r2", None, &b64(second), Some(&a.view));
        let c = read_report(3, "t3", "r3", None, &b64("not json"), Some(&b.view));
        assert_eq!(
            b.view
                .pending_version
                .as_ref()
                .map(|p| p.os_version.as_str()),
            Some("26.6.1")
        );
        assert_eq!(
            b.view.install_state.as_ref().map(|s| s.as_str()),
            Some("prepared")
        );
        assert!(b.items["softwareupdate"].get("pending-version").is_none());
        assert!(c.unreadable.is_some() && c.items.is_empty());
        assert_eq!(c.view, b.view);
        assert_eq!(c.time(), "t3");
    }

    /// The record keeps the intent's declaration and every report in order; only reports
    /// received after the dose count as after it.
    #[test]
    fn the_record_keeps_ddm_doses_and_reports_and_tells_which_came_after_the_dose() {
        use crate::journal::{Entry, Event};
        let decl = r#"{"Type":"com.apple.configuration.softwareupdate.enforcement.specific","Identifier":"D1","ServerToken":"t","Payload":{"TargetLocalDateTime":"2026-12-01T11:00:30","TargetOSVersion":"26.6.1"}}"#;
        let report = |id: &str, received: &str, state: &str| Event::DdmStatusReport {
            udid: "A".into(),
            report_id: id.into(),
            received_at: Some(received.into()),
            raw_b64: b64(&format!(
                r#"{{"StatusItems":{{"softwareupdate":{{"install-state":"{state}"}}}},"Errors":[]}}"#
            )),
        };
        let events = [
            Event::DeviceDiscovered {
                udid: "A".into(),
                host: "h".into(),
                device_id: 1,
            },
            Event::DoseIntent {
                udid: "A".into(),
                arm: "a".into(),
                step: 1,
                command_uuid: "D1".into(),
                request_type: ENFORCEMENT_SPECIFIC.into(),
                install_action: None,
                starting_build: "23F77".into(),
                command_b64: b64(decl),
                mdm_store: None,
            },
            // Stored by the server before the dose, fetched after it.
            report("r1", "2026-01-01T00:00:01.000Z", "none"),
            report("r2", "2026-01-01T00:00:09.000Z", "downloading"),
        ];
        let entries: Vec<Entry> = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Entry {
                seq: i as u64 + 1,
                at: format!("2026-01-01T00:00:0{}.000Z", i + 2),
                event,
            })
            .collect();
        let run = crate::journal::fold::run_facts(&entries);
        let d = &run.devices[0];
        assert!(d.is_ddm_dosed());
        assert_eq!(d.ddm_doses().next().unwrap().1.target_os_version, "26.6.1");
        assert_eq!(d.ddm_reports.len(), 2);
        let after: Vec<&str> = d
            .ddm_reports_after_dose()
            .map(|r| r.report_id.as_str())
            .collect();
        assert_eq!(after, ["r2"]);
        assert_eq!(
            d.ddm_reports[1]
                .view
                .install_state
                .as_ref()
                .map(|s| s.as_str()),
            Some("downloading")
        );
    }
}
