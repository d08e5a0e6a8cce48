//! The DDM detectors on hand-built journals: each fires on its case and stays quiet on the
//! nearest case that is not one.

use crate::journal::Event;
use crate::verdicts::anomalies::{Anomaly, detect, situations};
use crate::verdicts::outcome::testkit::{J, probe};
use serde_json::json;

/// Discovered, baselined with a clock reading (journal time, UTC+1), DDM-dosed for 15.8 with
/// this deadline.
fn ddm(u: &str, deadline: &str) -> J {
    let mut j = J::new();
    j.device(u, true);
    let mut p = probe(u, "15.7", "19H12");
    let now = chrono::DateTime::parse_from_rfc3339(&j.at()).unwrap();
    p["device_time"] = json!(now.timestamp() as f64);
    p["utc_offset"] = json!(3600.0);
    j.push(Event::BaselineRecorded {
        udid: u.into(),
        probe: p,
    });
    j.allocate(u, "a")
        .consent(&[u])
        .ddm_dose(u, "D1", "15.8", deadline);
    j
}

/// The testkit's clock starts at 2023-11-14T22:13:20Z, 23:13:20 on a UTC+1 device.
const DEADLINE: &str = "2023-11-14T23:30:00";

fn fired(j: &J, id: &str) -> Vec<Anomaly> {
    detect(&j.entries)
        .into_iter()
        .filter(|a| a.detector == id)
        .collect()
}

fn in_situation(j: &J, id: &str) -> Vec<String> {
    situations(&j.entries)
        .into_iter()
        .find(|t| t.detector == id)
        .unwrap()
        .in_situation
}

#[test]
fn install_failed_fires_on_failed_with_its_reason_only() {
    let mut j = ddm("U", DEADLINE);
    j.ddm_state("U", "downloading").ddm_report(
        "U",
        json!({"softwareupdate": {"install-state": "failed",
            "failure-reason": {"count": 1, "reason": "no space", "timestamp": "2023-11-14T22:20:00Z"}}}),
    );
    let a = fired(&j, "ddm_install_failed");
    assert_eq!(a.len(), 1);
    assert!(a[0].actual.contains("reason no space"), "{}", a[0].actual);
    assert_eq!(a[0].command_uuid.as_deref(), Some("D1"));
    assert_eq!(a[0].responses.len(), 1);

    let mut j = ddm("U", DEADLINE);
    j.ddm_state("U", "downloading").ddm_state("U", "prepared");
    assert!(fired(&j, "ddm_install_failed").is_empty());
    assert_eq!(in_situation(&j, "ddm_install_failed"), ["U"]);
}

#[test]
fn pending_version_mismatch_fires_on_another_version_not_on_the_target_or_nothing() {
    let pending = |os: &str| json!({"softwareupdate": {"pending-version": {"os-version": os, "build-version": "X"}}});
    let mut j = ddm("U", DEADLINE);
    j.ddm_report("U", pending("15.7.1"));
    let a = fired(&j, "ddm_pending_version_mismatch");
    assert_eq!(a.len(), 1);
    assert!(a[0].actual.contains("15.7.1") && a[0].actual.contains("15.8"));

    let mut j = ddm("U", DEADLINE);
    j.ddm_report("U", pending("15.8.0"))
        .ddm_report("U", pending(""));
    assert!(fired(&j, "ddm_pending_version_mismatch").is_empty());
    assert_eq!(in_situation(&j, "ddm_pending_version_mismatch"), ["U"]);
}

#[test]
fn status_silent_fires_without_a_report_or_after_a_long_silence() {
    let mut j = ddm("U", DEADLINE);
    j.reprobe("U", true, Some("19H12")).ended("U", "time limit");
    assert_eq!(fired(&j, "ddm_status_silent").len(), 1);

    // Reports, then 26 h with the device attached and no report.
    let mut j = ddm("U", DEADLINE);
    j.ddm_state("U", "downloading")
        .wait(26 * 3600)
        .reprobe("U", true, Some("19H12"))
        .ended("U", "time limit");
    let a = fired(&j, "ddm_status_silent");
    assert_eq!(a.len(), 1);
    assert!(a[0].actual.contains("26.0 h"), "{}", a[0].actual);

    let mut j = ddm("U", DEADLINE);
    j.ddm_state("U", "downloading")
        .wait(3600)
        .reprobe("U", true, Some("19H12"))
        .ended("U", "time limit");
    assert!(fired(&j, "ddm_status_silent").is_empty());
    assert_eq!(in_situation(&j, "ddm_status_silent"), ["U"]);
}

#[test]
fn status_build_mismatch_needs_the_same_boot_and_no_correction() {
    let build = |b: &str| json!({"device": {"operating-system": {"build-version": b}}});
    let mut j = ddm("U", DEADLINE);
    j.ddm_report("U", build("19H390"))
        .reprobe("U", true, Some("19H12"));
    let a = fired(&j, "ddm_status_build_mismatch");
    assert_eq!(a.len(), 1);
    assert!(a[0].actual.contains("19H390") && a[0].actual.contains("19H12"));

    // A restart between the report and the re-probe explains the change.
    let mut j = ddm("U", DEADLINE);
    j.ddm_report("U", build("19H12"))
        .reprobe("U", false, None)
        .reprobe("U", true, Some("19H390"));
    assert!(fired(&j, "ddm_status_build_mismatch").is_empty());

    // A later report corrects it.
    let mut j = ddm("U", DEADLINE);
    j.ddm_report("U", build("19H390"))
        .reprobe("U", true, Some("19H12"))
        .ddm_report("U", build("19H12"));
    assert!(fired(&j, "ddm_status_build_mismatch").is_empty());
    assert_eq!(in_situation(&j, "ddm_status_build_mismatch"), ["U"]);
}

#[test]
fn deadline_passed_without_install_reads_the_devices_clock() {
    // 3 h later the device's clock reads 02:13, past 23:30 + 1 h.
    let mut j = ddm("U", DEADLINE);
    j.ddm_state("U", "prepared")
        .wait(3 * 3600)
        .reprobe("U", true, Some("19H12"))
        .ended("U", "time limit");
    let a = fired(&j, "ddm_deadline_passed_without_install");
    assert_eq!(a.len(), 1);
    assert!(
        a[0].actual.contains("2023-11-14T23:30:00") && a[0].actual.contains("prepared"),
        "{}",
        a[0].actual
    );

    // Within the hour of grace: not yet due.
    let mut j = ddm("U", DEADLINE);
    j.ddm_state("U", "prepared")
        .wait(3600)
        .reprobe("U", true, Some("19H12"))
        .ended("U", "time limit");
    assert!(fired(&j, "ddm_deadline_passed_without_install").is_empty());
    assert!(in_situation(&j, "ddm_deadline_passed_without_install").is_empty());

    // Installed: in the situation, not an anomaly.
    let mut j = ddm("U", DEADLINE);
    j.wait(3 * 3600)
        .reprobe("U", true, Some("19H390"))
        .ended("U", "updated");
    assert!(fired(&j, "ddm_deadline_passed_without_install").is_empty());
    assert_eq!(
        in_situation(&j, "ddm_deadline_passed_without_install"),
        ["U"]
    );
}

#[test]
fn a_schedule_os_update_dose_is_never_in_a_ddm_situation() {
    let mut j = J::new();
    j.device("U", true)
        .allocate("U", "a")
        .consent(&["U"])
        .dose("U", 1, "C1")
        .reprobe("U", true, Some("19H12"))
        .ended("U", "time limit");
    for t in situations(&j.entries)
        .into_iter()
        .filter(|t| t.detector.starts_with("ddm_"))
    {
        assert!(t.in_situation.is_empty(), "{}", t.detector);
    }
}
