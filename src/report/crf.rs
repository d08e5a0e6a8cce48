//! `crf.csv`: the case report form, one row per discovered device with exactly the seed's
//! checklist, one unit per column (bytes, percent, yes/no), and the dose answers it names in
//! `crf/` (issue 14). `devices.csv` stays the full record; this is the page a reviewer reads.
//!
//! UTF-8 with a byte-order mark, so that spreadsheet applications open it as UTF-8. No cell is
//! blank: a fact that could not be read says `unknown`, one that does not apply `none`.

use super::to_csv;
use crate::journal::Entry;
use crate::journal::fold::baseline_facts::{self, Network};
use crate::journal::fold::{Facts, RunFacts};
use crate::verdicts::outcome::{self, DeviceOutcome};
use serde_json::Value;

/// The UTF-8 byte-order mark the file starts with.
pub const BOM: &str = "\u{feff}";

/// The folder of the dose answers the `mdm_response` cells name.
pub const DIR: &str = "crf";

pub const HEADER: [&str; 15] = [
    "udid",
    "model",
    "os_version",
    "os_build",
    "disk_available_bytes",
    "battery_percent",
    "external_power",
    "charging",
    "network",
    "passcode",
    "mdm_command_sent",
    "mdm_response",
    "arm",
    "outcome",
    "exclusion_reason",
];

pub fn render(entries: &[Entry]) -> String {
    let run = crate::journal::fold::run_facts(entries);
    let outcomes = outcome::judge_run(&run, &Default::default());
    render_of(&run, &outcomes)
}

/// [`render`] from facts already gathered and judged.
pub(crate) fn render_of(run: &RunFacts, outcomes: &[DeviceOutcome]) -> String {
    let rows: Vec<Vec<String>> = run
        .devices
        .iter()
        .zip(outcomes)
        .map(|(d, o)| row(d, o))
        .collect();
    format!("{BOM}{}", to_csv(&HEADER, &rows))
}

/// The answer each ScheduleOSUpdate-dosed device's `mdm_response` names: (file under `crf/`,
/// journal seq of the answer).
pub(crate) fn attachments(run: &RunFacts) -> Vec<(String, u64)> {
    run.devices
        .iter()
        .filter_map(|d| {
            let (uuid, seq) = dose_answer(d)?;
            Some((attachment_name(&d.udid, &uuid), seq))
        })
        .collect()
}

fn attachment_name(udid: &str, uuid: &str) -> String {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("{}-{}-response.plist", safe(udid), safe(uuid))
}

fn yes_no(b: Option<bool>) -> String {
    match b {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => "unknown".into(),
    }
}

fn at<'a>(probe: Option<&'a Value>, path: &str) -> Option<&'a Value> {
    probe?.pointer(path).filter(|v| !v.is_null())
}

fn row(d: &Facts, o: &DeviceOutcome) -> Vec<String> {
    // One parse of the compact probe record per row (`journal::fold::probe_record`).
    let parsed = d.probe.as_ref().map(|p| p.value());
    let p = parsed.as_ref();
    let unknown = || "unknown".to_string();
    let lockdown_or_mdm = |l: &str, m: &str| at(p, l).or_else(|| at(p, m)).and_then(Value::as_bool);
    let disk = at(p, "/baseline/disk/amount_data_available/value")
        .and_then(Value::as_u64)
        .or_else(|| {
            let gb = at(p, "/mdm/available_device_capacity_gb/value")?.as_f64()?;
            Some((gb * 1e9).round() as u64)
        });
    let battery = at(p, "/baseline/battery/current_capacity/value")
        .and_then(Value::as_u64)
        .or_else(|| {
            let level = at(p, "/mdm/battery_level/value")?.as_f64()?;
            (level >= 0.0).then(|| (level * 100.0).round() as u64)
        });
    let network = p
        .map(|p| baseline_facts::network(p, operator_network(d)).value)
        .unwrap_or(None);
    vec![
        d.udid.clone(),
        model(p).unwrap_or_else(unknown),
        d.starting_version().unwrap_or_else(unknown),
        d.starting_build().unwrap_or_else(unknown),
        disk.map_or_else(unknown, |b| b.to_string()),
        battery.map_or_else(unknown, |b| b.to_string()),
        yes_no(at(p, "/baseline/battery/external_connected/value").and_then(Value::as_bool)),
        yes_no(at(p, "/baseline/battery/is_charging/value").and_then(Value::as_bool)),
        network.map_or_else(unknown, |n| n.as_str().to_string()),
        yes_no(lockdown_or_mdm(
            "/baseline/passcode/password_protected/value",
            "/mdm/passcode_present/value",
        )),
        command_sent(d),
        response(d),
        d.arm.clone().unwrap_or_else(|| "none".into()),
        o.outcome.to_string(),
        exclusion(d),
    ]
}

/// "iPhone 11 (iPhone12,1)", the ProductType alone, or the MDM's ProductName.
fn model(p: Option<&Value>) -> Option<String> {
    let pt = at(p, "/baseline/product_type/value")
        .or_else(|| at(p, "/mdm/product_name/value"))
        .and_then(Value::as_str);
    let name = at(p, "/baseline/marketing_name/value").and_then(Value::as_str);
    match (name, pt) {
        (Some(n), Some(pt)) => Some(format!("{n} ({pt})")),
        (None, Some(pt)) => Some(pt.to_string()),
        (Some(n), None) => Some(n.to_string()),
        (None, None) => None,
    }
}

/// The operator's answer to a `network` checkpoint (the last one): `wifi`, `cellular`,
/// `tethered` or `none`.
fn operator_network(d: &Facts) -> Option<Network> {
    d.observations
        .iter()
        .rev()
        .find(|o| o.by_operator() && o.kind == "network")
        .and_then(|o| Network::parse(&o.value))
}

/// yes: the MDM queued a dose; no: nothing was sent, or every send failed; unknown: the
/// enqueue result was lost (a crash in between).
fn command_sent(d: &Facts) -> String {
    if d.intents.iter().any(|i| i.enqueued.is_some()) {
        "yes".into()
    } else if d.intents.iter().any(|i| i.uncertain.is_some()) {
        "unknown".into()
    } else {
        "no".into()
    }
}

/// The first dose's answer: (CommandUUID, journal seq), its first final answer, else its last.
fn dose_answer(d: &Facts) -> Option<(String, u64)> {
    let first = d.intents.first().filter(|i| i.ddm.is_none())?;
    let answers: Vec<_> = d.answers_to(&first.command_uuid).collect();
    let a = answers
        .iter()
        .find(|a| a.is_final())
        .or_else(|| answers.last())?;
    Some((first.command_uuid.clone(), a.seq))
}

/// "Acknowledged; crf/<udid>-<uuid>-response.plist", a DDM dose's first status report after
/// it ("status report installing; ddm/<udid>/status-<id>.json"), "no answer", or "none".
fn response(d: &Facts) -> String {
    let Some(first) = d.intents.first() else {
        return "none".into();
    };
    if first.ddm.is_some() {
        let Some(r) = d.ddm_reports.iter().find(|r| r.seq > first.seq) else {
            return "no status report".into();
        };
        let state = r
            .view
            .install_state
            .as_ref()
            .map(|s| format!(" {}", s.as_str()))
            .unwrap_or_default();
        return format!(
            "status report{state}; {}/{}/status-{}.json",
            super::digest::DDM_DIR,
            super::format::file_safe_name(&d.udid),
            super::format::file_safe_name(&r.report_id)
        );
    }
    match dose_answer(d) {
        Some((uuid, seq)) => {
            let status = d
                .answers
                .iter()
                .find(|a| a.seq == seq)
                .map(|a| a.status.to_string())
                .unwrap_or_default();
            format!("{status}; {DIR}/{}", attachment_name(&d.udid, &uuid))
        }
        None => "no answer".into(),
    }
}

/// The reasons' sentences, or `none` for an eligible device (`not assessed` when it never was).
fn exclusion(d: &Facts) -> String {
    if !d.assessed {
        return "not assessed".into();
    }
    if d.eligible || d.reasons.is_empty() {
        return "none".into();
    }
    d.reasons
        .iter()
        .map(|r| r.message.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests_util::{cell, parse};
    use crate::verdicts::outcome::testkit::J;
    use plist::Value as P;

    #[test]
    fn one_row_per_device_in_one_unit_each_with_a_bom_and_no_blank_cell() {
        let mut j = J::new();
        j.device("U1", true)
            .device("U2", false)
            .allocate("U1", "download")
            .consent(&["U1"])
            .dose("U1", 1, "C1")
            .wait(4)
            .schedule_answer("U1", "C1", "Acknowledged")
            .status("U1", "S1", 1.0, P::Boolean(true))
            .wait(60)
            .reprobe("U1", true, Some("19H390"))
            .ended("U1", "updated");
        let text = render(&j.entries);
        assert!(text.starts_with(BOM));
        let (h, rows) = parse(text.trim_start_matches(BOM));
        assert_eq!(h, HEADER);
        assert_eq!(rows.len(), 2);
        let r = &rows[0];
        assert_eq!(cell(&h, r, "udid"), "U1");
        assert_eq!(cell(&h, r, "battery_percent"), "87");
        assert_eq!(cell(&h, r, "mdm_command_sent"), "yes");
        assert_eq!(
            cell(&h, r, "mdm_response"),
            "Acknowledged; crf/U1-C1-response.plist"
        );
        assert_eq!(cell(&h, r, "arm"), "download");
        assert_eq!(cell(&h, r, "outcome"), "updated");
        assert_eq!(cell(&h, r, "exclusion_reason"), "none");
        assert!(r.iter().all(|c| !c.is_empty()), "{r:?}");
        // The excluded device: nothing sent, its reasons.
        let x = &rows[1];
        assert_eq!(cell(&h, x, "mdm_command_sent"), "no");
        assert_eq!(cell(&h, x, "mdm_response"), "none");
        assert_eq!(cell(&h, x, "arm"), "none");
        assert_ne!(cell(&h, x, "exclusion_reason"), "none");
        assert_eq!(
            attachments(&crate::journal::fold::run_facts(&j.entries))
                .iter()
                .map(|a| a.0.as_str())
                .collect::<Vec<_>>(),
            ["U1-C1-response.plist"]
        );
    }

    #[test]
    fn a_ddm_dose_names_its_first_status_report_and_an_unanswered_dose_says_so() {
        let mut j = J::new();
        j.device("U1", true)
            .device("U2", true)
            .allocate("U1", "ddm")
            .allocate("U2", "a")
            .consent(&["U1", "U2"])
            .ddm_dose("U1", "D1", "17.6.1", "2026-11-28T02:00:00")
            .dose("U2", 1, "C2")
            .wait(5)
            .ddm_state("U1", "downloading")
            .ddm_state("U1", "installing");
        let text = render(&j.entries);
        let (h, rows) = parse(text.trim_start_matches(BOM));
        let r = &rows[0];
        assert_eq!(cell(&h, r, "mdm_command_sent"), "yes");
        let resp = cell(&h, r, "mdm_response");
        assert!(
            resp.starts_with("status report downloading; ddm/U1/status-r"),
            "{resp}"
        );
        assert!(resp.ends_with(".json"), "{resp}");
        assert_eq!(cell(&h, &rows[1], "mdm_response"), "no answer");
        // Only ScheduleOSUpdate answers are copied under crf/ (a DDM report is under ddm/).
        assert!(attachments(&crate::journal::fold::run_facts(&j.entries)).is_empty());
    }
}
