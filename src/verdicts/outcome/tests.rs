use super::testkit::*;
use super::*;
use crate::journal::Event;
use plist::Value;
use std::collections::BTreeMap;

fn one(j: &J) -> DeviceOutcome {
    let mut v = judge(&j.entries);
    assert_eq!(v.len(), 1, "{v:?}");
    v.remove(0)
}

fn dosed(u: &str) -> J {
    let mut j = J::new();
    j.device(u, true)
        .allocate(u, "a")
        .consent(&[u])
        .dose(u, 1, "C1");
    j
}

#[test]
fn updated_judged_by_build_with_times() {
    let mut j = dosed("U");
    j.wait(9)
        .schedule_answer("U", "C1", "Acknowledged")
        .wait(20)
        .status("U", "S1", 1.0, Value::Integer(1.into()))
        .wait(100)
        .reprobe("U", true, Some("19H390"))
        .ended("U", "updated");
    let o = one(&j);
    assert_eq!(o.outcome, Outcome::Updated);
    assert_eq!(o.arm.as_deref(), Some("a"));
    assert_eq!(o.starting_build.as_deref(), Some("19H12"));
    assert_eq!(o.starting_version.as_deref(), Some("15.7"));
    assert_eq!(o.final_build.as_deref(), Some("19H390"));
    assert_eq!(o.final_version.as_deref(), Some("15.8"));
    assert_eq!(o.target_build.as_deref(), Some("19H390"));
    // Enqueued at t, answer at +10, CommandSent +21, status answer +31, reprobe at +132.
    assert_eq!(o.time_to_download_s, Some(32.0));
    assert_eq!(o.time_to_new_build_s, Some(133.0));
    assert_eq!(o.first_mdm_status.as_deref(), Some("Acknowledged"));
    assert!(o.deviations.is_empty(), "{:?}", o.deviations);
}

#[test]
fn error_answer_but_new_build_is_updated() {
    // rdar 45414692: the command status does not decide the outcome.
    let mut j = dosed("U");
    j.schedule_answer("U", "C1", "Error")
        .device_info("U", "D1", "15.8", "19H390");
    let o = one(&j);
    assert_eq!(o.outcome, Outcome::Updated);
    assert_eq!(o.last_mdm_status.as_deref(), Some("Error"));
}

#[test]
fn command_error_when_build_unchanged() {
    let mut j = dosed("U");
    j.schedule_answer("U", "C1", "CommandFormatError")
        .reprobe("U", true, Some("19H12"));
    let o = one(&j);
    assert_eq!(o.outcome, Outcome::CommandError);
    assert_eq!(o.final_build.as_deref(), Some("19H12"));
}

#[test]
fn downloaded_not_installed_and_not_downloaded() {
    let mut j = dosed("U");
    j.schedule_answer("U", "C1", "Acknowledged")
        .status("U", "S1", 1.0, Value::Boolean(true))
        .reprobe("U", true, Some("19H12"));
    assert_eq!(one(&j).outcome, Outcome::DownloadedNotInstalled);

    let mut j = dosed("U");
    j.schedule_answer("U", "C1", "Acknowledged")
        .status("U", "S1", 0.4, Value::Boolean(false))
        .reprobe("U", true, Some("19H12"));
    let o = one(&j);
    assert_eq!(o.outcome, Outcome::NotDownloaded);
    assert_eq!(o.download_complete_at, None);
    assert_eq!(o.time_to_download_s, None);
}

#[test]
fn no_response_when_dose_unanswered() {
    let mut j = dosed("U");
    j.result("U", "C1", Some("ScheduleOSUpdate"), "NotNow", |_| {})
        .reprobe("U", true, Some("19H12"));
    let o = one(&j);
    assert_eq!(o.outcome, Outcome::NoResponse);
    assert_eq!(o.first_mdm_status.as_deref(), Some("NotNow"));
}

/// Issue 17: on an MDM without a history `lab` can read and without webhook retries, a dose
/// whose answer never came is lost to follow-up (the runner journaled it so), not unanswered.
#[test]
fn a_dose_whose_answer_was_lost_is_lost_to_follow_up_not_no_response() {
    let mut j = dosed("U");
    j.reprobe("U", true, Some("19H12"));
    let before = one(&j);
    assert_eq!(
        before.outcome,
        Outcome::NoResponse,
        "no lost answer journaled"
    );
    j.push(Event::Observation {
        udid: Some("U".into()),
        source: crate::journal::ObservationSource::Harness,
        kind: ANSWER_LOST.into(),
        key: "C1".into(),
        value: "no final answer".into(),
    });
    let o = one(&j);
    assert_eq!(o.outcome, Outcome::LostToFollowUp);
    let why = o.reason.unwrap();
    assert!(why.contains("no final answer to 1 dose(s)"), "{why}");
    assert!(
        why.contains("neither retries a webhook nor keeps a history"),
        "{why}"
    );
    // An answer of the device still decides: an update seen is an update.
    j.reprobe("U", true, Some("19H390"));
    assert_eq!(one(&j).outcome, Outcome::Updated);
}

#[test]
fn lost_to_follow_up_detached_or_unobserved() {
    let mut j = dosed("U");
    j.schedule_answer("U", "C1", "Acknowledged")
        .reprobe("U", false, None)
        .ended("U", "max_duration");
    let o = one(&j);
    assert_eq!(o.outcome, Outcome::LostToFollowUp);
    assert!(o.reason.unwrap().contains("never seen again"));

    // Detached, then back: not lost.
    let mut j = dosed("U");
    j.schedule_answer("U", "C1", "Acknowledged")
        .reprobe("U", false, None)
        .reprobe("U", true, Some("19H12"));
    assert_eq!(one(&j).outcome, Outcome::NotDownloaded);

    // Answered, but no build observation before follow-up ended.
    let mut j = dosed("U");
    j.schedule_answer("U", "C1", "Acknowledged")
        .ended("U", "max_duration");
    let o = one(&j);
    assert_eq!(o.outcome, Outcome::LostToFollowUp);
    assert!(o.reason.unwrap().contains("max_duration"));
}

#[test]
fn not_dosed_excluded_and_consent_refused() {
    let mut j = J::new();
    j.device("E", false).device("N", true).allocate("N", "a");
    j.push(Event::ConsentRefused {
        reason: "operator typed no".into(),
    });
    let v = judge(&j.entries);
    assert_eq!(v[0].udid, "E");
    assert_eq!(v[0].outcome, Outcome::Excluded);
    assert_eq!(v[0].reason.as_deref(), Some("supervised;free_disk"));
    assert_eq!(v[1].outcome, Outcome::NotDosed);
    assert!(
        v[1].reason
            .as_deref()
            .unwrap()
            .starts_with("consent refused")
    );

    let mut j = J::new();
    j.device("N", true).allocate("N", "a").consent(&["N"]);
    j.push(Event::StopRuleTriggered {
        rule: "max_errors".into(),
        message: "2 errors".into(),
    });
    let o = one(&j);
    assert_eq!(o.outcome, Outcome::NotDosed);
    assert!(o.reason.unwrap().contains("max_errors"));

    let mut j = J::new();
    j.device("N", true)
        .allocate("N", "a")
        .consent(&["N"])
        .intent("N", 1, "C1", "Default");
    j.push(Event::DoseFailed {
        udid: "N".into(),
        command_uuid: "C1".into(),
        error: "HTTP 500".into(),
    });
    let o = one(&j);
    assert_eq!(o.outcome, Outcome::NotDosed);
    assert_eq!(o.reason.as_deref(), Some("enqueue failed: HTTP 500"));
}

#[test]
fn dose_uncertain_is_an_outcome_and_a_deviation() {
    let mut j = J::new();
    j.device("U", true)
        .allocate("U", "a")
        .consent(&["U"])
        .intent("U", 1, "C1", "Default");
    j.push(Event::RunInterrupted);
    j.push(Event::RunResumed {
        protocol_sha256: SHA.into(),
    });
    j.push(Event::DoseUncertain {
        udid: "U".into(),
        command_uuid: "C1".into(),
        reason: "crash between intent and enqueue".into(),
    });
    let o = one(&j);
    assert_eq!(o.outcome, Outcome::DoseUncertain);
    assert_eq!(o.deviations.len(), 1);
    assert!(o.deviations[0].starts_with("dose uncertain"));
}

#[test]
fn wrong_version_duplicate_answers_and_extra_intents() {
    let mut j = dosed("U");
    j.schedule_answer("U", "C1", "Acknowledged")
        .schedule_answer("U", "C1", "Acknowledged")
        .dose("U", 2, "C2")
        .dose("U", 2, "C3")
        .reprobe("U", true, Some("19H999"));
    let o = one(&j);
    assert_eq!(o.outcome, Outcome::WrongVersion);
    let all = o.deviations.join("\n");
    assert!(all.contains("CommandUUID C1 answered 2 times"), "{all}");
    assert!(all.contains("3 ScheduleOSUpdate intents"), "{all}");
    assert!(all.contains("wrong version installed"), "{all}");

    let mut steps = BTreeMap::new();
    steps.insert("a".to_string(), 1);
    let mut j = dosed("U");
    j.dose("U", 2, "C2");
    let o = judge_with_arm_steps(&j.entries, &steps).remove(0);
    assert!(o.deviations.iter().any(|d| d.contains("at most 1 step")));
    assert!(judge(&j.entries)[0].deviations.is_empty());
}

#[test]
fn observations_before_the_dose_do_not_count() {
    let mut j = J::new();
    j.device("U", true)
        .allocate("U", "a")
        .device_info("U", "D0", "15.8", "19H390")
        .consent(&["U"])
        .dose("U", 1, "C1");
    assert_eq!(one(&j).outcome, Outcome::NoResponse);
}

#[test]
fn devices_in_order_of_first_discovery_once() {
    let mut j = J::new();
    j.device("B", false).device("A", false).device("B", false);
    let v = judge(&j.entries);
    assert_eq!(
        v.iter().map(|o| o.udid.as_str()).collect::<Vec<_>>(),
        ["B", "A"]
    );
}

/// A device given the enforcement declaration for 15.8 (the testkit's target).
fn ddm_dosed(u: &str) -> J {
    let mut j = J::new();
    j.device(u, true).allocate(u, "a").consent(&[u]).ddm_dose(
        u,
        "D1",
        "15.8",
        "2026-12-01T11:00:00",
    );
    j
}

#[test]
fn ddm_without_a_status_report_after_the_dose_is_no_response() {
    let mut j = ddm_dosed("U");
    j.reprobe("U", true, Some("19H12")).ended("U", "time limit");
    let o = one(&j);
    assert_eq!(o.outcome, Outcome::NoResponse);
    assert_eq!(
        o.reason.as_deref(),
        Some("no DDM status report after the declaration")
    );
}

#[test]
fn ddm_prepared_is_downloaded_not_installed_with_its_time() {
    let mut j = ddm_dosed("U");
    j.wait(8)
        .ddm_state("U", "downloading")
        .wait(10)
        .ddm_state("U", "prepared")
        .ddm_state("U", "failed")
        .reprobe("U", true, Some("19H12"))
        .ended("U", "time limit");
    let o = one(&j);
    assert_eq!(o.outcome, Outcome::DownloadedNotInstalled);
    // Enqueued at t, downloading at +9, prepared at +20.
    assert_eq!(o.time_to_download_s, Some(20.0));
    assert_eq!(o.first_mdm_status, None);
}

#[test]
fn ddm_failed_without_a_download_is_not_downloaded_not_a_command_error() {
    let mut j = ddm_dosed("U");
    j.ddm_report(
        "U",
        serde_json::json!({"softwareupdate": {"install-state": "failed",
            "failure-reason": {"count": 1, "reason": "no space"}}}),
    )
    .reprobe("U", true, Some("19H12"))
    .ended("U", "time limit");
    let o = one(&j);
    assert_eq!(o.outcome, Outcome::NotDownloaded);
    assert_eq!(
        o.reason.as_deref(),
        Some("last install-state failed: no space")
    );
}

#[test]
fn ddm_outcome_is_the_usb_build_not_the_status_report() {
    let mut j = ddm_dosed("U");
    j.ddm_state("U", "installing")
        .reprobe("U", true, Some("19H390"))
        .ended("U", "updated");
    assert_eq!(one(&j).outcome, Outcome::Updated);
    // The report claims the target build; USB still shows the start: not updated.
    let mut j = ddm_dosed("U");
    j.ddm_report(
        "U",
        serde_json::json!({"device": {"operating-system": {"build-version": "19H390"}}}),
    )
    .reprobe("U", true, Some("19H12"))
    .ended("U", "time limit");
    assert_eq!(one(&j).outcome, Outcome::NotDownloaded);
}
