//! Issue 14's boundary devices through the simulated lab and its MDM (`lab qualify`): a Shared
//! iPad with and without a user, a DEP-enrolled device on 10.2 with and without the bench's
//! statement, and the facts the simulated devices report through the MDM keys
//! (`trials/fleets/enrollment-facts.yaml`).

mod common;
use common::{parse_json, repo_path, run_lab, stderr};
use std::collections::BTreeMap;

/// Each device's name (its first three characters) → (eligible, [(rule, message)]).
type Verdicts = BTreeMap<String, (bool, Vec<(String, String)>)>;

/// `lab qualify --json` of a protocol on the boundary fleet with `eligibility` as given: each
/// device's name → (eligible, [(rule, message)]), and the whole answer.
fn qualify(eligibility: &str) -> (Verdicts, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let fleet = repo_path("trials/fleets/enrollment-facts.yaml");
    let text = format!(
        "id: enrollment-facts\ntitle: Enrollment facts\nhypothesis: the facts decide\n\
         lab:\n  simulated: {{ fleet: {:?}, speed: 600 }}\n{eligibility}target: latest\n\
         arms:\n  - name: a\n    install_action: Default\nallocation_seed: 1\n\
         follow_up: {{ poll_interval: 30s, max_duration: 1h }}\n",
        fleet.display().to_string()
    );
    let protocol = dir.path().join("p.yaml");
    std::fs::write(&protocol, text).unwrap();
    let ledger = dir.path().join("ledger.jsonl");
    let out = run_lab(
        &[
            "qualify",
            protocol.to_str().unwrap(),
            "--ledger",
            ledger.to_str().unwrap(),
            "--json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let j = parse_json(&out);
    let mut v = BTreeMap::new();
    for d in j["devices"].as_array().unwrap() {
        let name = d["baseline"]["baseline"]["device_name"]["value"]
            .as_str()
            .unwrap()[..3]
            .to_string();
        let reasons = d["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["rule"].as_str().unwrap().to_string(),
                    r["message"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.insert(name, (d["eligible"] == true, reasons));
    }
    (v, j)
}

#[test]
fn shared_ipads_dep_and_access_rights_are_judged_from_sourced_facts() {
    let (v, j) = qualify("");
    assert!(v["E01"].0, "{:?}", v["E01"]);
    // At the login window: ResidentUsers 0, nobody can be logged in.
    assert!(v["E02"].0, "{:?}", v["E02"]);
    // alice logged in: her user channel checked in to the simulated MDM, which recorded it;
    // excluded because of that check-in, not because the fact is unknown.
    let (ok, reasons) = &v["E03"];
    assert!(!ok);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert_eq!(reasons[0].0, "shared_ipad_with_user");
    assert_eq!(
        reasons[0].1,
        "The device is a Shared iPad with a user logged in (MDM user-channel check-in \
         (UserShortName alice)); the update would interrupt that user's session."
    );
    assert!(!reasons[0].1.contains("unknown"));
    // iOS 10.2 has no ManagementStatus: DEP unknown, counted as not DEP.
    let (ok, reasons) = &v["E04"];
    assert!(!ok);
    assert_eq!(reasons[0].0, "min_ios");
    assert!(
        reasons[0].1.contains(
            "its DEP enrolment is unknown (MDM SecurityInfo.ManagementStatus.EnrolledViaDEP"
        ),
        "{}",
        reasons[0].1
    );
    assert!(v["E05"].0, "{:?}", v["E05"]);
    // The facts as the devices reported them through the MDM.
    let mdm = |name: &str, key: &str| {
        j["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| {
                d["baseline"]["baseline"]["device_name"]["value"]
                    .as_str()
                    .unwrap()
                    .starts_with(name)
            })
            .unwrap()["baseline"]["mdm"][key]["value"]
            .clone()
    };
    assert_eq!(mdm("E05", "enrolled_via_dep"), true);
    assert_eq!(mdm("E01", "enrolled_via_dep"), false);
    assert_eq!(mdm("E02", "is_multi_user"), true);
    assert_eq!(mdm("E01", "is_multi_user"), false);
    assert_eq!(mdm("E01", "current_carrier_network"), "Simulated Carrier");

    // The bench states DEP and full rights, and the protocol lets an unknown user through: a
    // user the MDM saw check in is no unknown, so E03 stays excluded.
    let (v, _) = qualify(
        "eligibility:\n  enrollment: { dep_enrolled: true, access_rights: 8191 }\n  unknown_facts: { shared_ipad_user: allow }\n",
    );
    assert!(!v["E03"].0, "{:?}", v["E03"]);
    assert!(v["E02"].0, "{:?}", v["E02"]);
    assert!(v["E04"].0, "{:?}", v["E04"]);
    // Rights without app management exclude every ScheduleOSUpdate device.
    let (v, _) = qualify("eligibility:\n  enrollment: { access_rights: 4095 }\n");
    for name in ["E01", "E02", "E05"] {
        let (ok, reasons) = &v[name];
        assert!(!ok);
        assert!(
            reasons
                .iter()
                .any(|r| r.0 == "app_management_right" && r.1.contains("(4095)")),
            "{name}: {reasons:?}"
        );
    }
}
