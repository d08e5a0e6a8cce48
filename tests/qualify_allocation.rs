//! Issue 14: `lab qualify` catches an allocation the protocol cannot get — an arm's `count`
//! above the eligible devices, stratified arms that stratify by different things — instead of
//! leaving it to `lab run` after a run folder exists.

mod common;
use common::{repo_path, run_lab, stderr};

/// `lab qualify` of a protocol on the enrollment-facts fleet (3 of its 5 devices eligible by
/// default) with these arms.
fn qualify(arms: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let fleet = repo_path("trials/fleets/enrollment-facts.yaml");
    let text = format!(
        "id: alloc\ntitle: Allocation\nhypothesis: qualify checks it\n\
         lab:\n  simulated: {{ fleet: {:?}, speed: 600 }}\ntarget: latest\n\
         arms:\n{arms}allocation_seed: 1\n\
         follow_up: {{ poll_interval: 30s, max_duration: 1h }}\n",
        fleet.display().to_string()
    );
    let protocol = dir.path().join("p.yaml");
    std::fs::write(&protocol, text).unwrap();
    let ledger = dir.path().join("ledger.jsonl");
    run_lab(
        &[
            "qualify",
            protocol.to_str().unwrap(),
            "--ledger",
            ledger.to_str().unwrap(),
        ],
        None,
    )
}

#[test]
fn qualify_refuses_counts_above_the_eligible_devices_and_mixed_strata() {
    let out = qualify("  - { name: a, install_action: Default, allocation: { count: 9 } }\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("allocation: arm \"a\" needs 9 devices drawn at random, but only 3 eligible devices are left for it"),
        "{err}"
    );
    // Mixed strata: refused with the protocol file, before the lab is even started.
    let out = qualify(
        "  - { name: a, install_action: Default, allocation: { stratify: passcode } }\n  \
         - { name: b, install_action: Default, allocation: { stratify: model } }\n",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("allocation: stratified arms must stratify by the same thing: \"a\" by Passcode, \"b\" by Model"),
        "{err}"
    );
    // A count the eligible devices fill qualifies.
    let out = qualify("  - { name: a, install_action: Default, allocation: { count: 3 } }\n");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
