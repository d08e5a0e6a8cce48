//! Bad trial protocols are refused by `lab::trial::protocol::load` with errors that name the
//! file, and the line and column where the YAML gives them.

use lab::input::InputError;
use lab::trial::protocol::load;
use std::path::{Path, PathBuf};

/// A valid protocol; each test breaks one thing in it.
const GOOD: &str = "\
id: err-test
title: Protocol error test
lab:
  simulated: { fleet: fleet.yaml, speed: 60 }
target: latest
arms:
  - name: two-step
    install_action: Default
    follow_up_step: { install_action: Default }
  - name: download-only
    install_action: DownloadOnly
follow_up:
  poll_interval: 30s
  max_duration: 2h
";

const FLEET: &str = "\
devices:
  - name: One
    product_type: iPhone12,1
    ios: { version: \"17.5.1\", build: 21F90 }
    disk: { total: 64 GB, free: 20 GB }
    battery: { level: 80 }
";

fn write(dir: &tempfile::TempDir, text: &str, with_fleet: bool) -> PathBuf {
    if with_fleet {
        std::fs::write(dir.path().join("fleet.yaml"), FLEET).unwrap();
    }
    let p = dir.path().join("protocol.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn load_err(text: &str) -> (PathBuf, InputError) {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, text, true);
    let e = load(&p).expect_err("the protocol should be refused");
    // Keep the dir alive until the error is read.
    drop(dir);
    (p, e)
}

fn assert_at(e: &InputError, path: &Path, line: u64, column: u64, needle: &str) {
    assert_eq!(e.path, path, "{e}");
    assert_eq!((e.line, e.column), (Some(line), Some(column)), "{e}");
    assert!(e.message.contains(needle), "{needle:?} not in {e}");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{}:{line}:{column}: ", path.display())),
        "{shown}"
    );
}

#[test]
fn the_good_protocol_loads() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, GOOD, true);
    let l = load(&p).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.protocol.arms.len(), 2);
    assert_eq!(l.sha256.len(), 64);
}

#[test]
fn a_typo_in_a_key_is_refused_where_it_is() {
    let (p, e) = load_err(&GOOD.replace("follow_up:\n", "folow_up:\n"));
    assert_at(&e, &p, 12, 1, "folow_up");
    let (p, e) = load_err(&GOOD.replace(
        "    install_action: DownloadOnly",
        "    instal_action: DownloadOnly",
    ));
    assert_at(&e, &p, 11, 5, "instal_action");
}

#[test]
fn a_wrong_type_is_refused_where_it_is() {
    let (p, e) = load_err(&format!("{GOOD}allocation_seed: lots\n"));
    assert_at(&e, &p, 15, 18, "allocation_seed");
    let (p, e) = load_err(&GOOD.replace("speed: 60", "speed: fast"));
    assert_at(&e, &p, 4, 42, "speed");
}

#[test]
fn an_unknown_install_action_is_refused_where_it_is() {
    let (p, e) =
        load_err(&GOOD.replace("install_action: DownloadOnly", "install_action: InstallNow"));
    assert_at(&e, &p, 11, 21, "InstallNow");
}

#[test]
fn a_macos_only_install_action_is_refused_where_it_is() {
    let (p, e) = load_err(&GOOD.replace(
        "install_action: DownloadOnly",
        "install_action: InstallLater",
    ));
    assert_at(&e, &p, 11, 21, "macOS-only");
    assert!(e.message.contains("InstallLater"), "{e}");
    // In the follow-up step too.
    let (p, e) = load_err(&GOOD.replace(
        "follow_up_step: { install_action: Default }",
        "follow_up_step: { install_action: InstallForceRestart }",
    ));
    assert_eq!(e.path, p);
    assert_eq!(e.line, Some(9), "{e}");
    assert!(
        e.message.contains("InstallForceRestart is macOS-only"),
        "{e}"
    );
}

#[test]
fn a_missing_fleet_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, GOOD, false);
    let e = load(&p).unwrap_err();
    assert_eq!(e.path, p);
    assert!(e.message.contains("lab.simulated.fleet"), "{e}");
    assert!(
        e.message
            .contains(&dir.path().join("fleet.yaml").display().to_string()),
        "{e}"
    );
    assert!(e.message.contains("does not exist"), "{e}");
}

#[test]
fn duplicate_arm_names_point_at_the_second() {
    let (p, e) = load_err(&GOOD.replace("name: download-only", "name: two-step"));
    assert_at(&e, &p, 10, 11, "\"two-step\" is used twice");
}

#[test]
fn a_missing_protocol_file_and_bad_versions_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope.yaml");
    let e = load(&p).unwrap_err();
    assert_eq!(e.path, p);
    assert!(e.message.starts_with("cannot read"), "{e}");

    let (p, e) = load_err(&GOOD.replace("target: latest", "target: { product_version: \"17.x\" }"));
    assert_eq!(e.path, p);
    assert!(e.message.contains("target.product_version"), "{e}");
    let (_, e) = load_err(&format!("{GOOD}eligibility: {{ min_ios: ten }}\n"));
    assert!(e.message.contains("eligibility.min_ios"), "{e}");
    let (_, e) = load_err(&format!("{GOOD}eligibility: {{ passcode: sometimes }}\n"));
    assert_eq!(e.line, Some(15), "{e}");
}

#[test]
fn feeds_are_loaded_with_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let feeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("trials/feeds");
    let text = format!(
        "{}feeds:\n  gdmf: {}\n  ipsw: [\"{}\"]\n  date: 2026-08-22\n",
        GOOD.replace("target: latest\n", "target: latest_for_model\n"),
        feeds.join("gdmf-pmv.json").display(),
        feeds.join("ipsw-iPhone12,1.json").display()
    );
    let p = write(&dir, &text, true);
    let l = load(&p).unwrap_or_else(|e| panic!("{e}"));
    let f = l
        .load_feeds(chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap())
        .unwrap()
        .expect("feeds");
    assert_eq!(f.date.to_string(), "2026-08-22");
    assert!(f.gdmf.is_some());
    assert_eq!(f.ipsw[0].identifier, "iPhone12,1");
    // The alias of the spelling.
    let p = write(
        &dir,
        &text.replace("latest_for_model", "latest-for-model"),
        true,
    );
    load(&p).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_missing_or_malformed_feed_or_a_feedless_latest_for_model_is_refused() {
    let (p, e) = load_err(&format!("{GOOD}feeds:\n  gdmf: no-such-pmv.json\n"));
    assert_eq!(e.path, p.parent().unwrap().join("no-such-pmv.json"), "{e}");
    assert!(e.message.contains("cannot read"), "{e}");
    let bad = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/bad_inputs/feeds/ipsw-signed-not-bool.json");
    let (_, e) = load_err(&format!("{GOOD}feeds:\n  ipsw: [\"{}\"]\n", bad.display()));
    assert_eq!(e.path, bad);
    assert_eq!((e.line, e.column), (Some(6), Some(88)), "{e}");
    let (p, e) = load_err(&GOOD.replace("target: latest\n", "target: latest_for_model\n"));
    assert_eq!(e.path, p);
    assert!(
        e.message.contains("latest_for_model needs a gdmf feed"),
        "{e}"
    );
    let (_, e) = load_err(&format!("{GOOD}feeds:\n  gdmf: x.json\n  colour: blue\n"));
    assert!(e.message.contains("colour"), "{e}");
}

/// A DDM arm (issue 13): `ddm_enforcement` instead of `install_action`, one step, a target that
/// names a version, a deadline that parses. Each mistake is refused where it is written.
#[test]
fn ddm_arms_are_checked_where_they_are_written() {
    let ddm = |arm: &str, target: &str| {
        GOOD.replace("target: latest", target).replace(
            "  - name: download-only\n    install_action: DownloadOnly\n",
            arm,
        )
    };
    let ok = ddm(
        "  - name: ddm\n    ddm_enforcement: { deadline: { after_dose: 2h } }\n",
        "target: { product_version: \"26.6.1\" }",
    );
    let dir = tempfile::tempdir().unwrap();
    let p = load(&write(&dir, &ok, true)).expect("a DDM arm loads");
    let arm = &p.protocol.arms[1];
    assert_eq!(
        arm.dose_mechanism(),
        lab::trial::protocol::DoseMechanism::DdmEnforcement
    );
    assert_eq!(arm.install_action, None);

    let (p, e) = load_err(&ddm(
        "  - name: ddm\n    install_action: Default\n    ddm_enforcement: { deadline: { after_dose: 2h } }\n",
        "target: { product_version: \"26.6.1\" }",
    ));
    assert_at(&e, &p, 10, 11, "takes no install_action");
    let (p, e) = load_err(&ddm(
        "  - name: ddm\n    ddm_enforcement: { deadline: { local: \"2026-12-10 03:00\" } }\n",
        "target: { product_version: \"26.6.1\" }",
    ));
    assert_at(&e, &p, 11, 44, "deadline.local");
    let (p, e) = load_err(&ddm(
        "  - name: ddm\n    ddm_enforcement: { deadline: { after_dose: 2h } }\n",
        "target: { product_key: iOSUpdate23G83 }",
    ));
    assert_at(&e, &p, 5, 9, "not a product key");
    let (p, e) = load_err(&ddm(
        "  - name: ddm\n    ddm_enforcement: { deadline: { in: 2h } }\n",
        "target: { product_version: \"26.6.1\" }",
    ));
    assert_eq!(e.path, p);
    assert!(e.line.is_some(), "{e}");
    let (p, e) = load_err(&ddm(
        "  - name: none\n    allocation: { count: 1 }\n",
        "target: latest",
    ));
    assert_at(&e, &p, 10, 11, "give install_action");
}

/// A webhook HMAC key with MicroMDM, which never signs its webhooks, would make the listener
/// refuse every result (issue 17): refused where it is written.
#[test]
fn an_hmac_key_for_micromdm_is_refused_where_it_is() {
    let bench = |kind: &str| {
        GOOD.replace(
            "lab:\n  simulated: { fleet: fleet.yaml, speed: 60 }\n",
            &format!(
                "lab:\n  usbmuxd: [\"/var/run/usbmuxd\"]\n  mdm:\n    kind: {kind}\n    url: \"http://127.0.0.1:8080\"\n    api_key_env: MDM_KEY\n    webhook: {{ listen: \"127.0.0.1:9000\", hmac_key_env: HOOK_KEY }}\n"
            ),
        )
    };
    let (p, e) = load_err(&bench("micromdm"));
    assert_at(&e, &p, 9, 42, "MicroMDM does not sign its webhooks");
    let dir = tempfile::tempdir().unwrap();
    load(&write(&dir, &bench("nanomdm"), false)).expect("NanoMDM signs them: a key is right");
}
