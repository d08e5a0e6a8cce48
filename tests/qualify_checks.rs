//! Issue 14: `lab qualify` catches an allocation the protocol cannot get — an arm's `count`
//! above the eligible devices, stratified arms that stratify by different things — instead of
//! leaving it to `lab run` after a run folder exists; and it leaves no file behind in the
//! working directory (it used to create an empty `results/ledger.jsonl` there).

mod common;
use common::{lab_bin, repo_path, run_lab, stderr};

/// A protocol on the enrollment-facts fleet (3 of its 5 devices eligible by default) with these
/// arms.
fn protocol_text(arms: &str) -> String {
    let fleet = repo_path("trials/fleets/enrollment-facts.yaml");
    format!(
        "id: alloc\ntitle: Allocation\nhypothesis: qualify checks it\n\
         lab:\n  simulated: {{ fleet: {:?}, speed: 600 }}\ntarget: latest\n\
         arms:\n{arms}allocation_seed: 1\n\
         follow_up: {{ poll_interval: 30s, max_duration: 1h }}\n",
        fleet.display().to_string()
    )
}

/// `lab qualify` of [`protocol_text`].
fn qualify(arms: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let protocol = dir.path().join("p.yaml");
    std::fs::write(&protocol, protocol_text(arms)).unwrap();
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

#[test]
fn qualify_leaves_the_working_directory_as_it_was() {
    let cwd = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("p.yaml"),
        protocol_text("  - { name: a, install_action: Default }\n"),
    )
    .unwrap();
    // No --ledger: the default lab-wide ledger, under this HOME.
    let out = std::process::Command::new(lab_bin())
        .args(["qualify", "p.yaml"])
        .current_dir(cwd.path())
        .env("HOME", home.path())
        .env_remove("LAB_LEDGER")
        .env_remove("XDG_STATE_HOME")
        .env_remove("USBMUXD_SOCKET_ADDRESS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let left: Vec<String> = std::fs::read_dir(cwd.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["p.yaml"], "qualify wrote into the working directory");
    // The ledger it read (under its lock) is the lab-wide one in the state directory, and
    // qualify recorded nothing in it.
    let ledger = home.path().join(".local/state/lab/ledger.jsonl");
    assert_eq!(std::fs::read(&ledger).unwrap_or_default(), b"");
}
