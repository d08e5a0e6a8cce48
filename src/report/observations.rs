//! `observations.csv`: the observation series — every MDM answer, USB re-probe and
//! operator/harness observation, in journal order, each pointing back at its journal line.

use super::{seq_ref, to_csv};
use crate::mdm::report::{Report, lenient_bool, lenient_real, query_responses};
use crate::plist_util::type_name;
use crate::trial::journal::{Entry, Event};
use crate::trial::outcome::decode_report;
use plist::Value;

pub const HEADER: [&str; 9] = [
    "time",
    "udid",
    "source",
    "kind",
    "key",
    "value",
    "raw_type",
    "command_uuid",
    "raw_ref",
];

struct Rows<'a> {
    rows: Vec<Vec<String>>,
    time: String,
    udid: &'a str,
    source: &'a str,
    kind: String,
    command_uuid: &'a str,
    r: String,
}

impl Rows<'_> {
    fn push(&mut self, key: &str, value: String, raw_type: &str) {
        self.rows.push(vec![
            self.time.clone(),
            self.udid.to_string(),
            self.source.to_string(),
            self.kind.clone(),
            key.to_string(),
            value,
            raw_type.to_string(),
            self.command_uuid.to_string(),
            self.r.clone(),
        ]);
    }
}

fn dicts<'a>(report: &'a Report, key: &str) -> Vec<&'a plist::Dictionary> {
    report
        .body
        .get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_dictionary).collect())
        .unwrap_or_default()
}

fn s(d: &plist::Dictionary, k: &str) -> String {
    d.get(k)
        .and_then(Value::as_string)
        .unwrap_or_default()
        .to_string()
}

fn mdm_rows(rows: &mut Rows, request_type: Option<&str>, status: &str, raw_b64: &str) {
    rows.push("Status", status.to_string(), "");
    let report = match decode_report(raw_b64) {
        Ok(r) => r,
        Err(e) => {
            rows.push("raw", format!("unreadable: {e}"), "");
            return;
        }
    };
    for (i, e) in report.error_chain.iter().enumerate() {
        let v = format!(
            "{} {}: {}",
            e.domain.as_deref().unwrap_or(""),
            e.code.map(|c| c.to_string()).unwrap_or_default(),
            e.us_english_description
                .as_deref()
                .or(e.localized_description.as_deref())
                .unwrap_or("")
        );
        rows.push(&format!("ErrorChain[{i}]"), v, "");
    }
    match request_type {
        Some("ScheduleOSUpdate") => {
            for (i, d) in dicts(&report, "UpdateResults").into_iter().enumerate() {
                let v = format!(
                    "{}:{}:{}",
                    s(d, "ProductKey"),
                    s(d, "InstallAction"),
                    s(d, "Status")
                );
                rows.push(&format!("UpdateResults[{i}]"), v, "");
            }
        }
        Some("OSUpdateStatus") => {
            for (i, d) in dicts(&report, "OSUpdateStatus").into_iter().enumerate() {
                let k = |x: &str| format!("OSUpdateStatus[{i}].{x}");
                rows.push(&k("ProductKey"), s(d, "ProductKey"), "");
                rows.push(&k("Status"), s(d, "Status"), "");
                let pct = d.get("DownloadPercentComplete");
                let v = lenient_real(pct, None)
                    .value
                    .map(|x| format!("{x:.4}"))
                    .unwrap_or_default();
                rows.push(
                    &k("DownloadPercentComplete"),
                    v,
                    pct.map(type_name).unwrap_or("absent"),
                );
                let dl = d.get("IsDownloaded");
                let v = lenient_bool(dl)
                    .value
                    .map(|b| b.to_string())
                    .unwrap_or_default();
                rows.push(&k("IsDownloaded"), v, dl.map(type_name).unwrap_or("absent"));
            }
        }
        Some("DeviceInformation") => {
            if let Some(q) = query_responses(&report) {
                for key in ["OSVersion", "BuildVersion"] {
                    if let Some(v) = q.get(key) {
                        rows.push(key, v.as_string().unwrap_or_default().into(), type_name(v));
                    }
                }
            }
        }
        Some("AvailableOSUpdates") => {
            for (i, d) in dicts(&report, "AvailableOSUpdates").into_iter().enumerate() {
                let v = format!(
                    "{}:{}:{}",
                    s(d, "ProductKey"),
                    s(d, "Version"),
                    s(d, "Build")
                );
                rows.push(&format!("AvailableOSUpdates[{i}]"), v, "");
            }
        }
        _ => {}
    }
}

pub fn render(entries: &[Entry]) -> String {
    let request_types = crate::trial::journal::request_types(entries);
    let mut all = Vec::new();
    for e in entries {
        let r = seq_ref(e.seq);
        match &e.event {
            Event::MdmResult {
                udid,
                command_uuid,
                request_type,
                status,
                raw_b64,
                received_at,
            } => {
                let rt = request_type
                    .as_deref()
                    .or_else(|| request_types.get(command_uuid.as_str()).copied());
                let time = if chrono::DateTime::parse_from_rfc3339(received_at).is_ok() {
                    received_at.clone()
                } else {
                    e.at.clone()
                };
                let mut rows = Rows {
                    rows: Vec::new(),
                    time,
                    udid,
                    source: "mdm",
                    kind: rt.unwrap_or("unknown").to_string(),
                    command_uuid,
                    r,
                };
                mdm_rows(&mut rows, rt, status, raw_b64);
                all.extend(rows.rows);
            }
            Event::DeviceReprobed {
                udid,
                attached,
                product_version,
                build_version,
                error,
            } => {
                let mut rows = Rows {
                    rows: Vec::new(),
                    time: e.at.clone(),
                    udid,
                    source: "usb",
                    kind: "reprobe".into(),
                    command_uuid: "",
                    r,
                };
                rows.push("attached", attached.to_string(), "");
                for (k, v) in [
                    ("product_version", product_version),
                    ("build_version", build_version),
                    ("error", error),
                ] {
                    if let Some(v) = v {
                        rows.push(k, v.clone(), "");
                    }
                }
                all.extend(rows.rows);
            }
            Event::Observation {
                udid,
                source,
                kind,
                key,
                value,
            } => {
                let mut rows = Rows {
                    rows: Vec::new(),
                    time: e.at.clone(),
                    udid: udid.as_deref().unwrap_or(""),
                    source,
                    kind: kind.clone(),
                    command_uuid: "",
                    r,
                };
                rows.push(key, value.clone(), "");
                all.extend(rows.rows);
            }
            _ => {}
        }
    }
    to_csv(&HEADER, &all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests_util::{cell, parse};
    use crate::trial::outcome::testkit::J;
    use plist::Value as P;

    #[test]
    fn mdm_usb_and_operator_rows_with_raw_refs() {
        let mut j = J::new();
        j.device("U", true)
            .allocate("U", "a")
            .consent(&["U"])
            .dose("U", 1, "C1")
            .schedule_answer("U", "C1", "Acknowledged")
            .status("U", "S1", 0.503_018_498_420_715_3, P::Integer(0.into()))
            .reprobe("U", false, None);
        j.push(Event::Observation {
            udid: Some("U".into()),
            source: "operator".into(),
            kind: "prompt".into(),
            key: "update_prompt_shown".into(),
            value: "yes, \"Install Now\"".into(),
        });
        let seq_obs = j.entries.last().unwrap().seq;
        let (h, rows) = parse(&render(&j.entries));
        assert_eq!(h, HEADER);
        let find = |key: &str| {
            rows.iter()
                .find(|r| cell(&h, r, "key") == key)
                .unwrap_or_else(|| panic!("no row {key}"))
        };
        let st = find("Status");
        assert_eq!(cell(&h, st, "source"), "mdm");
        assert_eq!(cell(&h, st, "kind"), "ScheduleOSUpdate");
        assert_eq!(cell(&h, st, "command_uuid"), "C1");
        assert_eq!(
            cell(&h, find("UpdateResults[0]"), "value"),
            "iOSUpdate19H390:DownloadOnly:Downloading"
        );
        let pct = find("OSUpdateStatus[0].DownloadPercentComplete");
        assert_eq!(cell(&h, pct, "value"), "0.5030");
        assert_eq!(cell(&h, pct, "raw_type"), "real");
        assert_eq!(cell(&h, pct, "kind"), "OSUpdateStatus");
        let dl = find("OSUpdateStatus[0].IsDownloaded");
        assert_eq!(cell(&h, dl, "value"), "false");
        assert_eq!(cell(&h, dl, "raw_type"), "integer");
        let at = find("attached");
        assert_eq!(cell(&h, at, "source"), "usb");
        assert_eq!(cell(&h, at, "value"), "false");
        let op = find("update_prompt_shown");
        assert_eq!(cell(&h, op, "source"), "operator");
        assert_eq!(cell(&h, op, "value"), "yes, \"Install Now\"");
        assert_eq!(
            cell(&h, op, "raw_ref"),
            format!("journal.jsonl#seq={seq_obs}")
        );
    }
}
