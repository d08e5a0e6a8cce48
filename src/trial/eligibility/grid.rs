//! The reasons, byte for byte: a digest of every verdict over a grid of cases, recorded before
//! eligibility became a rule table (issue 12).

use super::fixtures::*;

/// The devices of the grid, by name.
fn devices() -> Vec<(&'static str, Dev)> {
    let mut devs: Vec<(&str, Dev)> = vec![
        ("healthy", dev()),
        (
            "failed",
            Dev {
                status: ProbeStatus::Failed,
                ..dev()
            },
        ),
        (
            "no_version",
            Dev {
                version: None,
                ..dev()
            },
        ),
        (
            "bad_version",
            Dev {
                version: Some("seventeen"),
                ..dev()
            },
        ),
        (
            "unsupervised",
            Dev {
                chaperoned: Some(false),
                ..dev()
            },
        ),
        (
            "supervision_unknown",
            Dev {
                chaperoned: None,
                ..dev()
            },
        ),
        (
            "old_passcode",
            Dev {
                version: Some("10.2"),
                build: "14C92",
                passcode: Some(true),
                ..dev()
            },
        ),
        (
            "old_no_passcode",
            Dev {
                version: Some("10.2"),
                build: "14C92",
                passcode: Some(false),
                ..dev()
            },
        ),
        (
            "old_passcode_unknown",
            Dev {
                version: Some("10.2"),
                build: "14C92",
                passcode: None,
                ..dev()
            },
        ),
        (
            "known_bad",
            Dev {
                version: Some("11.3"),
                build: "15E216",
                ..dev()
            },
        ),
        (
            "v16",
            Dev {
                version: Some("16.7.8"),
                build: "20H343",
                ..dev()
            },
        ),
    ];
    devs.extend(devices_in_condition());
    devs
}

/// The grid's devices that differ in battery, disk, passcode or build.
fn devices_in_condition() -> Vec<(&'static str, Dev)> {
    let mut devs: Vec<(&str, Dev)> = vec![
        (
            "low_battery",
            Dev {
                battery: Some(10),
                external: Some(false),
                ..dev()
            },
        ),
        (
            "battery_unknown",
            Dev {
                battery: None,
                external: None,
                ..dev()
            },
        ),
        (
            "low_battery_powered",
            Dev {
                battery: Some(10),
                external: Some(true),
                ..dev()
            },
        ),
        (
            "total_free_only",
            Dev {
                amount_free: None,
                total_free: Some(GB),
                ..dev()
            },
        ),
        (
            "free_unknown",
            Dev {
                amount_free: None,
                total_free: None,
                ..dev()
            },
        ),
        (
            "passcode_unknown",
            Dev {
                passcode: None,
                ..dev()
            },
        ),
        (
            "passcode_on",
            Dev {
                passcode: Some(true),
                ..dev()
            },
        ),
        (
            "on_latest",
            Dev {
                version: Some("17.6.1"),
                build: "21G93",
                ..dev()
            },
        ),
        (
            "beta",
            Dev {
                version: Some("17.6.1"),
                build: "21G5073b",
                ..dev()
            },
        ),
    ];
    devs.push((
        "everything_wrong",
        Dev {
            version: Some("11.3"),
            build: "15E216",
            chaperoned: Some(false),
            passcode: Some(true),
            battery: Some(10),
            external: Some(false),
            amount_free: Some(GB),
            ..dev()
        },
    ));
    devs
}

fn specs() -> Vec<(&'static str, EligibilitySpec)> {
    let specs: Vec<(&str, EligibilitySpec)> = vec![
        ("default", EligibilitySpec::default()),
        (
            "passcode_required",
            EligibilitySpec {
                passcode: PasscodeRule::Required,
                ..Default::default()
            },
        ),
        (
            "passcode_absent_any_target",
            EligibilitySpec {
                passcode: PasscodeRule::Absent,
                newer_target: false,
                ..Default::default()
            },
        ),
        (
            "protocol_known_bad",
            EligibilitySpec {
                known_bad_versions: Some(vec!["17.5.1".into(), "11.3".into()]),
                ..Default::default()
            },
        ),
        (
            "min_ios_high",
            EligibilitySpec {
                min_ios: Some("17.6".into()),
                ..Default::default()
            },
        ),
        (
            "battery_strict",
            EligibilitySpec {
                battery: crate::trial::protocol::BatteryRule {
                    enabled: true,
                    min_percent: 90,
                    or_external_power: false,
                },
                ..Default::default()
            },
        ),
        (
            "fallback_big",
            EligibilitySpec {
                free_disk: crate::trial::protocol::FreeDiskRule {
                    enabled: true,
                    fallback_min: Bytes(50 * GB),
                },
                ..Default::default()
            },
        ),
        (
            "all_off",
            EligibilitySpec {
                supervised: false,
                min_ios: None,
                known_bad_versions: Some(vec![]),
                free_disk: crate::trial::protocol::FreeDiskRule {
                    enabled: false,
                    fallback_min: Bytes(0),
                },
                battery: crate::trial::protocol::BatteryRule {
                    enabled: false,
                    min_percent: 0,
                    or_external_power: false,
                },
                passcode: PasscodeRule::Any,
                newer_target: false,
                app_management_right: false,
                exclude_shared_ipad_with_user: false,
                not_already_dosed: false,
                newer_target_in_feed: false,
                enrollment: Default::default(),
                unknown_facts: Default::default(),
            },
        ),
    ];
    specs
}

fn targets() -> [TargetSpec; 7] {
    [
        TargetSpec::Latest,
        TargetSpec::ProductVersion("17.6.1".into()),
        TargetSpec::ProductVersion("17.5".into()),
        TargetSpec::ProductVersion("18.0".into()),
        TargetSpec::ProductKey("iOSUpdate21G93".into()),
        TargetSpec::ProductKey("iOSUpdateNOPE".into()),
        TargetSpec::LatestForModel,
    ]
}

type Offer = (
    &'static str,
    Option<Vec<AvailableUpdate>>,
    Option<&'static str>,
);

fn offers() -> Vec<Offer> {
    let mut rsr = update("17.6.2", "21G100", 100, 200);
    rsr.is_security_response = Some(true);
    let offers: Vec<Offer> = vec![
        ("offer", Some(offer()), None),
        (
            "none_2213",
            Some(vec![]),
            Some("AvailableOSUpdates answered Error 2213 (No update available.)"),
        ),
        ("missing", None, Some("no answer within 30s")),
        ("missing_silent", None, None),
        (
            "rsr_and_two",
            Some(vec![
                rsr,
                update("17.6", "21G80", GB, GB),
                offer().remove(0),
            ]),
            None,
        ),
        (
            "no_sizes",
            Some(vec![AvailableUpdate {
                download_size: None,
                install_size: None,
                ..offer().remove(0)
            }]),
            Some("partial"),
        ),
    ];
    offers
}

fn feeds() -> [(&'static str, Option<TrialFeeds>); 4] {
    [
        ("no_feeds", None),
        ("gdmf_aug", Some(sample_feeds("2026-08-22", true))),
        ("gdmf_2024", Some(sample_feeds("2024-01-01", true))),
        ("ipsw_only", Some(sample_feeds("2026-08-22", false))),
    ]
}

fn mdm_with_values() -> MdmFacts {
    let mut mdm = mdm_facts();
    mdm.is_supervised = mdm_known("IsSupervised", true);
    mdm.battery_level = mdm_known("BatteryLevel", 0.93);
    mdm.available_device_capacity_gb = mdm_known("AvailableDeviceCapacity", 12.5);
    mdm.passcode_present = mdm_known("PasscodePresent", false);
    mdm.product_name = mdm_known("ProductName", "iPhone12,1".to_string());
    mdm.os_version = mdm_known("OSVersion", "17.5.1".to_string());
    // The full cross product (`LAB_ELIGIBILITY_FULL=1`, 84 672 cases, ~40 s) or, by
    // default, every device under every protocol on two targets, and every target, offer
    // and feed on the devices whose target resolution differs.
    mdm
}

/// Every verdict of a grid of devices, protocols, targets, offers and feeds, one JSON line
/// each: `(case, eligible, reasons, target_json)`. Devices below iOS 26 only (the version
/// rules of the old command change verdicts from 26.0 on, by design).
fn grid_dump() -> String {
    let (devs, specs, targets, offers, feeds, mdm) = (
        devices(),
        specs(),
        targets(),
        offers(),
        feeds(),
        mdm_with_values(),
    );
    let full = std::env::var_os("LAB_ELIGIBILITY_FULL").is_some();
    let mut out = String::new();
    for (dn, d) in &devs {
        let around_target = ["healthy", "on_latest", "beta", "everything_wrong"].contains(dn);
        for (with_mdm, extras) in [
            (None, false),
            (Some(&mdm), true),
            (Some(&mdm_facts()), false),
        ] {
            if !full && with_mdm.is_some() && !extras {
                continue;
            }
            let mut p = d.probe();
            p.mdm = with_mdm.cloned();
            for (sn, spec) in &specs {
                let spec_wide = ["default", "passcode_absent_any_target"].contains(sn);
                for (ti, t) in targets.iter().enumerate() {
                    for (oi, (on, o, err)) in offers.iter().enumerate() {
                        for (fi, (fname, f)) in feeds.iter().enumerate() {
                            let narrow =
                                (ti == 0 && oi == 0 && fi == 0) || (ti == 6 && oi == 0 && fi == 1);
                            if !(full || narrow || around_target && spec_wide) {
                                continue;
                            }
                            let mut s = subject(&p, o.as_deref());
                            s.offered_error = err.map(str::to_string);
                            s.feeds = f.as_ref();
                            if extras {
                                s.access_rights = Some(8191 - APP_MANAGEMENT_BIT);
                                s.shared_ipad_user_logged_in = Some(true);
                                s.dep_enrolled = Some(true);
                                s.dosed_by_other_protocols = vec![
                                    dose(),
                                    LedgerRecord {
                                        protocol_sha256: String::new(),
                                        ..dose()
                                    },
                                ];
                            }
                            let v = assess(spec, t, &s);
                            let case = format!(
                                "{dn}/{}/{sn}/{t:?}/{on}/{fname}",
                                with_mdm.is_some() as u8 + extras as u8
                            );
                            out.push_str(
                                &serde_json::to_string(&json!([
                                    case,
                                    v.eligible,
                                    v.reasons,
                                    v.target_json()
                                ]))
                                .unwrap(),
                            );
                            out.push('\n');
                        }
                    }
                }
            }
        }
    }
    out
}

/// The SHA-256 of [`grid_dump`] as the reasons were before eligibility became a rule table
/// (issue 12): every reason, its order, message and values, and every target, byte for
/// byte. A deliberate change of a reason changes it: set `LAB_ELIGIBILITY_DUMP=FILE` to
/// write the dump, diff it against the previous commit's, then record the new digest.
const GRID_SHA256: &str = "2f72a58a375507118e85ed56928dc85a9961dc6d8f68768746e7d2694a843874";

#[test]
fn the_reasons_of_every_grid_case_are_unchanged() {
    // Feed paths in the reasons are absolute: the digest must not depend on where the
    // repository was cloned.
    let dump = grid_dump().replace(env!("CARGO_MANIFEST_DIR"), "<repo>");
    if let Ok(path) = std::env::var("LAB_ELIGIBILITY_DUMP") {
        std::fs::write(path, &dump).unwrap();
    }
    assert_eq!(
        crate::trial::protocol::sha256_hex(dump.as_bytes()),
        GRID_SHA256
    );
}
