//! `devices.csv`: the case report form, one row per discovered device (order of discovery).

use super::{json_cell, opt, secs, to_csv};
use crate::journal::Entry;
use crate::journal::fold::{Facts, Intent, RunFacts};
use crate::verdicts::outcome::{self, MAX_ARM_STEPS};
use serde_json::Value;

/// Baseline fields of the probe record: column name and path under `baseline`. Each gets a
/// value column and a `*_source` column.
const IDENT_FIELDS: [(&str, &[&str]); 2] = [
    ("serial_number", &["serial_number"]),
    ("device_name", &["device_name"]),
];

const BASELINE_FIELDS: [(&str, &[&str]); 29] = [
    ("product_type", &["product_type"]),
    ("marketing_name", &["marketing_name"]),
    ("hardware_model", &["hardware_model"]),
    ("model_number", &["model_number"]),
    ("device_class", &["device_class"]),
    ("product_version", &["product_version"]),
    ("build_version", &["build_version"]),
    ("activation_state", &["activation_state"]),
    ("total_disk_capacity", &["disk", "total_disk_capacity"]),
    ("total_data_capacity", &["disk", "total_data_capacity"]),
    ("total_data_available", &["disk", "total_data_available"]),
    ("amount_data_available", &["disk", "amount_data_available"]),
    ("battery_current_capacity", &["battery", "current_capacity"]),
    ("battery_is_charging", &["battery", "is_charging"]),
    (
        "battery_external_connected",
        &["battery", "external_connected"],
    ),
    ("battery_fully_charged", &["battery", "fully_charged"]),
    ("wifi_address", &["network", "wifi_address"]),
    ("bluetooth_address", &["network", "bluetooth_address"]),
    ("telephony_capability", &["network", "telephony_capability"]),
    ("sim_status", &["network", "sim_status"]),
    ("phone_number", &["network", "phone_number"]),
    ("password_protected", &["passcode", "password_protected"]),
    (
        "device_is_chaperoned",
        &["supervision", "device_is_chaperoned"],
    ),
    ("usb_connection_type", &["usb", "connection_type"]),
    ("usb_location_id", &["usb", "location_id"]),
    ("usb_product_id", &["usb", "product_id"]),
    ("usb_connection_speed", &["usb", "connection_speed"]),
    ("usb_mode", &["usb", "mode"]),
    ("usb_port_path", &["usb", "port_path"]),
];

/// MDM fields of the probe record (`mdm.*`, DeviceInformation / SecurityInfo): values only.
const MDM_FIELDS: [&str; 13] = [
    "os_version",
    "build_version",
    "product_name",
    "model_name",
    "device_capacity_gb",
    "available_device_capacity_gb",
    "battery_level",
    "is_supervised",
    "cellular_technology",
    "wifi_mac",
    "is_roaming",
    "passcode_present",
    "passcode_compliant",
];

const STEP_COLUMNS: [&str; 8] = [
    "install_action",
    "command_uuid",
    "intent_at",
    "enqueued_at",
    "dose_result",
    "first_status",
    "last_status",
    "update_results",
];

/// The header, in order.
pub fn header() -> Vec<String> {
    let mut h: Vec<String> = ["protocol_sha256", "trial_id", "udid"]
        .map(String::from)
        .to_vec();
    for (name, _) in IDENT_FIELDS {
        h.push(name.into());
        h.push(format!("{name}_source"));
    }
    h.extend(["host", "device_id", "probe_status"].map(String::from));
    for (name, _) in BASELINE_FIELDS {
        h.push(name.into());
        h.push(format!("{name}_source"));
    }
    h.extend(["baseline_missing", "baseline_notes"].map(String::from));
    h.extend(MDM_FIELDS.iter().map(|m| format!("mdm_{m}")));
    h.push("disagreements".into());
    h.extend(
        [
            "eligible",
            "exclusion_rules",
            "exclusion_messages",
            "target_product_key",
            "target_version",
            "target_build",
            "target_download_size",
            "target_install_size",
            "arm",
            "dose_mechanism",
        ]
        .map(String::from),
    );
    for s in 1..=MAX_ARM_STEPS {
        h.extend(STEP_COLUMNS.iter().map(|c| format!("step{s}_{c}")));
    }
    h.extend(
        [
            "dosed_at",
            "download_complete_at",
            "new_build_at",
            "final_version",
            "final_build",
            "outcome",
            "outcome_reason",
            "time_to_download_s",
            "time_to_new_build_s",
            "first_mdm_status",
            "last_mdm_status",
            "follow_up_end_reason",
            "deviations",
            "can_restore_to_baseline",
        ]
        .map(String::from),
    );
    h
}

/// `true`/`false` from the target's `can_restore_to_baseline` (ipsw.me `signed` for the
/// starting build), `unknown` otherwise.
fn restore_cell(target: &Value) -> String {
    match target.get("can_restore_to_baseline") {
        Some(Value::Bool(b)) => b.to_string(),
        _ => "unknown".into(),
    }
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, p| v.get(p))
}

/// `via:domain/key`, or `via:key` for lockdown's global domain.
fn source_cell(field: &Value) -> String {
    let Some(s) = field.get("source") else {
        return String::new();
    };
    let via = s.get("via").and_then(Value::as_str).unwrap_or("");
    let key = s.get("key").and_then(Value::as_str).unwrap_or("");
    match s.get("domain").and_then(Value::as_str) {
        Some(d) => format!("{via}:{d}/{key}"),
        None => format!("{via}:{key}"),
    }
}

fn push_field(
    row: &mut Vec<String>,
    missing: &mut Vec<String>,
    notes: &mut Vec<String>,
    name: &str,
    field: Option<&Value>,
) {
    let f = field.unwrap_or(&Value::Null);
    row.push(f.get("value").map(json_cell).unwrap_or_default());
    row.push(source_cell(f));
    if let Some(e) = f.get("error").and_then(Value::as_str) {
        missing.push(format!("{name}={e}"));
    }
    if let Some(n) = f.get("note").and_then(Value::as_str) {
        notes.push(format!("{name}={n}"));
    }
}

/// `schedule_os_update` or `ddm_enforcement` (issue 13): what the device's dose intents are;
/// empty for a device never dosed.
fn dose_mechanism(d: &Facts) -> Option<&'static str> {
    let i = d.intents.first()?;
    Some(crate::journal::DoseKind::of_request_type(&i.request_type).mechanism())
}

fn step_cells(d: &Facts, intent: Option<&Intent>) -> Vec<String> {
    let Some(i) = intent else {
        return vec![String::new(); STEP_COLUMNS.len()];
    };
    let answers: Vec<_> = d.answers_to(&i.command_uuid).collect();
    let result = if let Some((_, e)) = &i.failed {
        format!("failed: {e}")
    } else if let Some((_, r)) = &i.uncertain {
        format!("uncertain: {r}")
    } else if i.enqueued.is_some() {
        "enqueued".into()
    } else {
        "pending".into()
    };
    vec![
        i.install_action.clone(),
        i.command_uuid.clone(),
        i.at.clone(),
        i.enqueued.as_ref().map(|x| x.1.clone()).unwrap_or_default(),
        result,
        answers
            .first()
            .map(|a| a.status.to_string())
            .unwrap_or_default(),
        answers
            .last()
            .map(|a| a.status.to_string())
            .unwrap_or_default(),
        crate::journal::fold::update_results_of(d, &i.command_uuid).unwrap_or_default(),
    ]
}

pub fn render(entries: &[Entry]) -> String {
    let run = crate::journal::fold::run_facts(entries);
    let outcomes = outcome::judge_run(&run, &Default::default());
    render_of(&run, &outcomes)
}

/// [`render`] from facts already gathered and judged.
pub(crate) fn render_of(run: &RunFacts, outcomes: &[outcome::DeviceOutcome]) -> String {
    let header = header();
    let null = Value::Null;
    let mut rows = Vec::new();
    for (d, o) in run.devices.iter().zip(outcomes) {
        // One parse of the compact probe record per row (`journal::fold::probe_record`).
        let parsed = d.probe.as_ref().map(|p| p.value());
        let probe = parsed.as_ref().unwrap_or(&null);
        let baseline = probe.get("baseline").unwrap_or(&null);
        let (mut missing, mut notes) = (Vec::new(), Vec::new());
        let mut row = vec![
            opt(&run.protocol_sha256),
            opt(&run.trial_id),
            d.udid.clone(),
        ];
        for (name, path) in IDENT_FIELDS {
            push_field(&mut row, &mut missing, &mut notes, name, at(baseline, path));
        }
        row.push(d.host.clone());
        row.push(d.device_id.to_string());
        row.push(probe.get("status").map(json_cell).unwrap_or_default());
        for (name, path) in BASELINE_FIELDS {
            push_field(&mut row, &mut missing, &mut notes, name, at(baseline, path));
        }
        row.push(missing.join(";"));
        row.push(notes.join(";"));
        for m in MDM_FIELDS {
            let v = at(probe, &["mdm", m, "value"]);
            row.push(v.map(json_cell).unwrap_or_default());
        }
        let disagreements = probe
            .get("disagreements")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|x| {
                        format!(
                            "{}: lockdown={} mdm={}",
                            x.get("fact").map(json_cell).unwrap_or_default(),
                            x.get("lockdown").map(json_cell).unwrap_or_default(),
                            x.get("mdm").map(json_cell).unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(";")
            })
            .unwrap_or_default();
        row.push(disagreements);
        row.push(if d.assessed {
            d.eligible.to_string()
        } else {
            String::new()
        });
        row.push(
            d.reasons
                .iter()
                .map(|r| r.rule.as_str())
                .collect::<Vec<_>>()
                .join(";"),
        );
        row.push(
            d.reasons
                .iter()
                .map(|r| r.message.as_str())
                .collect::<Vec<_>>()
                .join(";"),
        );
        for k in [
            "product_key",
            "version",
            "build",
            "download_size",
            "install_size",
        ] {
            row.push(d.target_field(k).unwrap_or_default());
        }
        row.push(opt(&d.arm));
        row.push(dose_mechanism(d).unwrap_or_default().to_string());
        for s in 1..=MAX_ARM_STEPS {
            let intent = d.intents.iter().find(|i| i.step == s);
            row.extend(step_cells(d, intent));
        }
        row.extend([
            opt(&o.dosed_at),
            opt(&o.download_complete_at),
            opt(&o.new_build_at),
            opt(&o.final_version),
            opt(&o.final_build),
            o.outcome.to_string(),
            opt(&o.reason),
            secs(o.time_to_download_s),
            secs(o.time_to_new_build_s),
            opt(&o.first_mdm_status),
            opt(&o.last_mdm_status),
            d.follow_up_end
                .as_ref()
                .map(|x| x.1.clone())
                .unwrap_or_default(),
            o.deviations.join(";"),
            restore_cell(&d.target),
        ]);
        rows.push(row);
    }
    let h: Vec<&str> = header.iter().map(String::as_str).collect();
    to_csv(&h, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests_util::{cell, parse};
    use crate::verdicts::outcome::testkit::{J, SHA};
    use plist::Value as P;

    #[test]
    fn one_row_per_device_with_baseline_sources_doses_and_outcome() {
        let mut j = J::new();
        j.device("U1", true)
            .device("U2", false)
            .allocate("U1", "download")
            .consent(&["U1"])
            .dose("U1", 1, "C1")
            .wait(4)
            .schedule_answer("U1", "C1", "Acknowledged")
            .status("U1", "S1", 1.0, P::Boolean(true))
            .intent("U1", 2, "C2", "InstallASAP")
            .enqueued("U1", "C2")
            .result("U1", "C2", Some("ScheduleOSUpdate"), "NotNow", |_| {})
            .result("U1", "C2", Some("ScheduleOSUpdate"), "Acknowledged", |_| {})
            .wait(60)
            .reprobe("U1", true, Some("19H390"))
            .ended("U1", "updated");
        let (h, rows) = parse(&render(&j.entries));
        assert_eq!(h, header());
        assert_eq!(rows.len(), 2);
        let r = &rows[0];
        assert_eq!(cell(&h, r, "protocol_sha256"), SHA);
        assert_eq!(cell(&h, &rows[1], "protocol_sha256"), SHA);
        assert_eq!(cell(&h, r, "udid"), "U1");
        assert_eq!(cell(&h, r, "serial_number"), "SN-U1");
        assert_eq!(cell(&h, r, "serial_number_source"), "lockdown:SerialNumber");
        assert_eq!(cell(&h, r, "battery_current_capacity"), "87");
        assert_eq!(
            cell(&h, r, "battery_current_capacity_source"),
            "lockdown:com.apple.mobile.battery/BatteryCurrentCapacity"
        );
        assert_eq!(cell(&h, r, "battery_is_charging"), "");
        assert_eq!(
            cell(&h, r, "baseline_missing"),
            "battery_is_charging=key absent from the device's reply"
        );
        assert_eq!(cell(&h, r, "device_is_chaperoned"), "true");
        assert_eq!(cell(&h, r, "mdm_os_version"), "15.7");
        assert_eq!(cell(&h, r, "mdm_battery_level"), "0.870");
        assert_eq!(cell(&h, r, "eligible"), "true");
        assert_eq!(cell(&h, r, "target_build"), "19H390");
        assert_eq!(cell(&h, r, "target_download_size"), "1000");
        assert_eq!(cell(&h, r, "arm"), "download");
        assert_eq!(cell(&h, r, "dose_mechanism"), "schedule_os_update");
        assert_eq!(cell(&h, r, "step1_install_action"), "Default");
        assert_eq!(cell(&h, r, "step1_command_uuid"), "C1");
        assert_eq!(cell(&h, r, "step1_dose_result"), "enqueued");
        assert_eq!(cell(&h, r, "step1_first_status"), "Acknowledged");
        assert_eq!(
            cell(&h, r, "step1_update_results"),
            "iOSUpdate19H390:DownloadOnly:Downloading"
        );
        assert_eq!(cell(&h, r, "step2_install_action"), "InstallASAP");
        assert_eq!(cell(&h, r, "step2_first_status"), "NotNow");
        assert_eq!(cell(&h, r, "step2_last_status"), "Acknowledged");
        assert_eq!(cell(&h, r, "step2_update_results"), "");
        assert_eq!(cell(&h, r, "outcome"), "updated");
        assert_eq!(cell(&h, r, "final_build"), "19H390");
        assert_eq!(cell(&h, r, "final_version"), "15.8");
        assert_eq!(cell(&h, r, "time_to_download_s"), "7.000");
        assert_eq!(cell(&h, r, "follow_up_end_reason"), "updated");
        assert_eq!(cell(&h, r, "deviations"), "");
        assert_eq!(cell(&h, r, "can_restore_to_baseline"), "unknown");
        let e = &rows[1];
        assert_eq!(cell(&h, e, "eligible"), "false");
        assert_eq!(cell(&h, e, "exclusion_rules"), "supervised;free_disk");
        assert_eq!(
            cell(&h, e, "exclusion_messages"),
            "not supervised;3.2 GB free; 6 GB needed"
        );
        assert_eq!(cell(&h, e, "outcome"), "excluded");
        assert_eq!(cell(&h, e, "step1_command_uuid"), "");
    }

    #[test]
    fn can_restore_to_baseline_comes_from_the_target() {
        let t = serde_json::json!({"version": "26.6.1", "can_restore_to_baseline": true});
        assert_eq!(restore_cell(&t), "true");
        let t = serde_json::json!({"version": "26.6.1", "can_restore_to_baseline": false});
        assert_eq!(restore_cell(&t), "false");
        let t = serde_json::json!({"version": "26.6.1", "can_restore_to_baseline": null});
        assert_eq!(restore_cell(&t), "unknown");
        assert_eq!(restore_cell(&Value::Null), "unknown");
    }
}
