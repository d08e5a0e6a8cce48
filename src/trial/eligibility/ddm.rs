//! The rules of a DDM enforcement dose (issue 13), from Apple's schema of
//! `com.apple.configuration.softwareupdate.enforcement.specific`
//! (`declarative/declarations/configurations/softwareupdate.enforcement.specific.yaml`:
//! `supportedOS.iOS.introduced: '17.0'`, `allowed-enrollments: [supervised, device]`) and the
//! DDM brief (`shared/briefs/ddm.md` §1: DDM is on once the device has done a
//! `DeclarativeManagement` check-in):
//!
//! - `ddm_min_ios`: iOS 17.0 or later (below it, only this rule of the four is reported).
//! - `ddm_active`: the DDM server has seen the enrollment's `DeclarativeManagement` check-in.
//! - `ddm_enrollment`: a supervised or device enrollment. A User Enrollment is known to the MDM
//!   by an `EnrollmentID`, never by the UDID (MDM brief §0), so an enrollment the DDM server
//!   knows by the device's UDID is a device enrollment.
//! - `ddm_target`: the declaration's `TargetOSVersion` (the protocol's `product_version`, or the
//!   gdmf feed's latest for the model) is newer than the device runs and, with a gdmf feed, the
//!   feed offers it to the device's model on the trial date (a target no feed offers leaves the
//!   configuration active and nothing happens, DDM brief §0.3: no trial to run).

use super::facts::{is_newer, reason};
use super::{Context, ResolvedTarget, RuleVerdict, rule};
use crate::feeds::gdmf;
use crate::trial::protocol::TargetSpec;
use crate::version::Version;
use serde_json::json;

/// The first iOS with the enforcement declaration (schema `supportedOS.iOS.introduced`).
pub const ENFORCEMENT_MIN_IOS: &str = "17.0";

/// Whether iOS `version` knows the enforcement declaration.
pub fn enforcement_available(version: &str) -> bool {
    let min = Version::parse(ENFORCEMENT_MIN_IOS).expect("static version");
    Version::parse(version).is_ok_and(|v| v >= min)
}

pub fn min_ios(ctx: &Context) -> RuleVerdict {
    if enforcement_available(&ctx.device.version.to_string()) {
        return RuleVerdict::Pass;
    }
    RuleVerdict::Exclude(reason(
        rule::DDM_MIN_IOS,
        format!(
            "The device runs iOS {}; the software-update enforcement declaration needs iOS {ENFORCEMENT_MIN_IOS} or later.",
            ctx.device_label
        ),
        json!({ "version": ctx.version, "min_ios": ENFORCEMENT_MIN_IOS }),
    ))
}

pub fn active(ctx: &Context) -> RuleVerdict {
    if !enforcement_available(&ctx.device.version.to_string()) {
        // `ddm_min_ios` says it: whether DDM is on does not matter below 17.0.
        return RuleVerdict::Pass;
    }
    let why = match ctx.subject.ddm_active {
        Some(true) => return RuleVerdict::Pass,
        Some(false) => {
            "DDM is not on for this enrollment: the DDM server has seen no DeclarativeManagement check-in from it (the MDM turns it on with the DeclarativeManagement command)".to_string()
        }
        None => format!(
            "whether DDM is on for this enrollment is unknown ({})",
            ctx.subject
                .ddm_error
                .as_deref()
                .unwrap_or("the lab has no DDM server to ask")
        ),
    };
    RuleVerdict::Exclude(reason(
        rule::DDM_ACTIVE,
        format!(
            "{}; a declaration would never reach the device.",
            capital(&why)
        ),
        json!({ "ddm_active": ctx.subject.ddm_active, "error": ctx.subject.ddm_error }),
    ))
}

pub fn enrollment(ctx: &Context) -> RuleVerdict {
    if enrollment_kind(ctx).is_some() || !enforcement_available(&ctx.device.version.to_string()) {
        return RuleVerdict::Pass;
    }
    let supervised = supervised(ctx);
    RuleVerdict::Exclude(reason(
        rule::DDM_ENROLLMENT,
        "The device is not known to be supervised and the DDM server does not know its enrollment by its UDID, so its enrollment type is unknown; the enforcement declaration is allowed on supervised and device enrollments only.".into(),
        json!({ "supervised": supervised, "enrollment": null }),
    ))
}

/// Lockdown's `DeviceIsChaperoned`, when read.
fn supervised(ctx: &Context) -> Option<bool> {
    ctx.subject
        .probe
        .baseline
        .supervision
        .device_is_chaperoned
        .get()
        .copied()
}

/// The enrollment type as the rule reads it, for the target record.
pub(super) fn enrollment_kind(ctx: &Context) -> Option<&'static str> {
    match (supervised(ctx), ctx.subject.ddm_active) {
        (Some(true), _) => Some("supervised"),
        (_, Some(_)) => Some("device"),
        _ => None,
    }
}

/// The version the declaration names for this device, and its build where the feed or the
/// device's own offer gives one; `None` when no version can be named.
pub(super) fn target(ctx: &Context, target: &TargetSpec) -> Option<ResolvedTarget> {
    let version = match target {
        TargetSpec::ProductVersion(v) => v.clone(),
        // The feed's latest for the model, or the newest the device itself offers.
        TargetSpec::LatestForModel | TargetSpec::Latest => {
            ctx.resolution.target.as_ref()?.version.clone()
        }
        TargetSpec::ProductKey(_) => return None,
    };
    // The device's own offer of that version (sizes for `free_disk`), when it made one.
    if let Some(t) = &ctx.resolution.target
        && t.version == version
    {
        return Some(t.clone());
    }
    // Else the build the gdmf feed gives that version for the model (the outcome and the
    // follow-up's `until: updated` compare builds), when there is a feed: of two builds of one
    // version (a model-specific `…6083` beside `…83`), the shorter is the general one.
    let build = feed_builds(ctx, &version).into_iter().next();
    Some(ResolvedTarget {
        product_key: None,
        version,
        build,
        download_size: None,
        install_size: None,
    })
}

/// Every build of `version` the gdmf feed offers the device's model on the trial date, the
/// general (shortest) one first; empty without a feed or a known model.
pub(super) fn feed_builds(ctx: &Context, version: &str) -> Vec<String> {
    let (Some((f, g)), Some(pt)) = (
        ctx.subject.feeds.and_then(|f| Some((f, f.gdmf.as_ref()?))),
        ctx.product_type.value.as_deref(),
    ) else {
        return Vec::new();
    };
    let mut builds: Vec<String> = gdmf::releases_for(g, pt, f.date)
        .into_iter()
        .filter(|r| r.version == version)
        .map(|r| r.build)
        .collect();
    builds.sort_by_key(|b| (b.len(), b.clone()));
    builds.dedup();
    builds
}

pub fn target_rule(ctx: &Context) -> RuleVerdict {
    let Some(t) = self::target(ctx, &ctx.target_spec) else {
        return RuleVerdict::Exclude(reason(
            rule::DDM_TARGET,
            "No target version can be named for the declaration (target product_version; latest, when the device offers an update; or latest_for_model, when the gdmf feed offers the model a release).".into(),
            json!({ "target": null }),
        ));
    };
    let newer = Version::parse(&t.version).is_ok_and(|v| is_newer(&v, &ctx.device));
    if !newer {
        return RuleVerdict::Exclude(reason(
            rule::DDM_TARGET,
            format!(
                "The declaration's target {} is not newer than the device's iOS {}.",
                t.version, ctx.device_label
            ),
            json!({ "target": t.version, "device_version": ctx.device_label }),
        ));
    }
    let Some((feeds, g)) = ctx.subject.feeds.and_then(|f| Some((f, f.gdmf.as_ref()?))) else {
        return RuleVerdict::Pass;
    };
    let Some(pt) = ctx.product_type.value.as_deref() else {
        return RuleVerdict::Exclude(reason(
            rule::DDM_TARGET,
            format!(
                "The device's model is unknown ({}), so whether the gdmf feed offers it {} cannot be told.",
                ctx.product_type.source, t.version
            ),
            json!({ "target": t.version, "product_type": null }),
        ));
    };
    let offered = gdmf::releases_for(g, pt, feeds.date);
    if offered.iter().any(|r| r.version == t.version) {
        return RuleVerdict::Pass;
    }
    RuleVerdict::Exclude(reason(
        rule::DDM_TARGET,
        format!(
            "The gdmf feed {} offers {pt} no iOS {} on {}: a target no feed offers leaves the declaration active and the device on its version.",
            g.path.display(),
            t.version,
            feeds.date
        ),
        json!({
            "target": t.version,
            "product_type": pt,
            "trial_date": feeds.date.to_string(),
            "offered": offered.iter().map(|r| format!("{} ({})", r.version, r.build)).collect::<Vec<_>>(),
        }),
    ))
}

fn capital(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{DoseMechanism, assess_for};

    const TARGET: &str = "26.6.1";

    /// A DDM verdict for `d`, DDM on or not, with the sample feed at `date` (if any).
    fn ddm(d: &Dev, active: Option<bool>, date: Option<&str>) -> Verdict {
        let p = d.probe();
        let feeds = date.map(|x| sample_feeds(x, true));
        let s = Subject {
            ddm_active: active,
            feeds: feeds.as_ref(),
            ..subject(&p, Some(&[]))
        };
        assess_for(
            DoseMechanism::DdmEnforcement,
            &EligibilitySpec::default(),
            &TargetSpec::ProductVersion(TARGET.into()),
            &s,
        )
    }

    #[test]
    fn a_ddm_dose_needs_ios_17_ddm_on_and_a_newer_target() {
        let v = ddm(&dev(), Some(true), None);
        assert!(v.eligible, "{:#?}", v.reasons);
        let t = v.target_json();
        assert_eq!(t["version"], TARGET);
        assert_eq!(t["mechanism"], "ddm_enforcement");
        assert_eq!(t["enrollment"], "supervised");
        let old = Dev {
            version: Some("16.7.8"),
            build: "20H343",
            ..dev()
        };
        let r = only(&ddm(&old, Some(true), None), rule::DDM_MIN_IOS);
        assert!(r.message.contains("17.0"), "{}", r.message);
        // Below 17.0, DDM off or unknown adds nothing: the version says it all.
        only(&ddm(&old, None, None), rule::DDM_MIN_IOS);
        let current = Dev {
            version: Some(TARGET),
            build: "23G83",
            ..dev()
        };
        only(&ddm(&current, Some(true), None), rule::DDM_TARGET);
    }

    #[test]
    fn ddm_off_or_unknown_excludes_and_says_which() {
        let off = only(&ddm(&dev(), Some(false), None), rule::DDM_ACTIVE);
        assert!(off.message.contains("no DeclarativeManagement check-in"));
        let v = ddm(&dev(), None, None);
        assert!(v.rules().contains(&rule::DDM_ACTIVE), "{:?}", v.rules());
        assert!(
            v.reason(rule::DDM_ACTIVE)
                .unwrap()
                .message
                .contains("unknown")
        );
    }

    #[test]
    fn an_unsupervised_device_enrollment_is_allowed_an_unknown_one_is_not() {
        let unsupervised = Dev {
            chaperoned: Some(false),
            ..dev()
        };
        let v = ddm(&unsupervised, Some(true), None);
        assert!(v.eligible, "{:#?}", v.reasons);
        assert_eq!(v.target_json()["enrollment"], "device");
        let v = ddm(&unsupervised, None, None);
        assert!(v.rules().contains(&rule::DDM_ENROLLMENT), "{:?}", v.rules());
    }

    #[test]
    fn with_a_feed_the_target_must_be_offered_to_the_model_and_takes_its_build() {
        // The sample feed posts 26.6.1 (23G83) on 2026-08-17 for iPhone12,1.
        let v = ddm(&dev(), Some(true), Some("2026-09-01"));
        assert!(v.eligible, "{:#?}", v.reasons);
        assert_eq!(v.target_json()["build"], "23G83");
        let v = ddm(&dev(), Some(true), Some("2026-08-01"));
        assert!(!v.eligible);
        let r = v.reason(rule::DDM_TARGET).expect("not offered yet");
        assert!(
            r.message.contains("offers iPhone12,1 no iOS 26.6.1"),
            "{}",
            r.message
        );
    }

    #[test]
    fn the_schedule_os_update_rules_do_not_judge_a_ddm_dose() {
        // Unsupervised and on a version ScheduleOSUpdate has removed: no matter for DDM.
        let d = Dev {
            version: Some("27.0"),
            build: "24A5000",
            chaperoned: Some(false),
            ..dev()
        };
        let p = d.probe();
        let s = Subject {
            ddm_active: Some(true),
            ..subject(&p, None)
        };
        let v = assess_for(
            DoseMechanism::DdmEnforcement,
            &EligibilitySpec::default(),
            &TargetSpec::ProductVersion("27.1".into()),
            &s,
        );
        assert!(v.eligible, "{:#?}", v.reasons);
        let sou = assess(
            &EligibilitySpec::default(),
            &TargetSpec::ProductVersion("27.1".into()),
            &s,
        );
        assert!(sou.rules().contains(&rule::COMMAND_REMOVED));
        assert!(sou.rules().contains(&rule::SUPERVISED));
    }
}

#[cfg(test)]
mod combine_tests {
    use super::super::fixtures::*;
    use super::super::{DoseMechanism, assess_for, combine};

    fn both(d: &Dev, active: Option<bool>) -> Option<(Verdict, Vec<DoseMechanism>)> {
        let p = d.probe();
        let o = offer();
        let s = Subject {
            ddm_active: active,
            ..subject(&p, Some(&o))
        };
        let t = TargetSpec::Latest;
        let spec = EligibilitySpec::default();
        combine(
            Some(assess(&spec, &t, &s)),
            Some(assess_for(DoseMechanism::DdmEnforcement, &spec, &t, &s)),
        )
    }

    #[test]
    fn a_device_eligible_for_both_keeps_the_command_verdict_and_may_take_either() {
        let (v, may) = both(&dev(), Some(true)).unwrap();
        assert!(v.eligible);
        assert_eq!(
            may,
            [
                DoseMechanism::ScheduleOsUpdate,
                DoseMechanism::DdmEnforcement
            ]
        );
        assert!(v.mechanism.is_none(), "the ScheduleOSUpdate verdict");
    }

    #[test]
    fn eligible_for_one_only_that_verdict_and_excluded_lists_each_rule_once() {
        let unsupervised = Dev {
            chaperoned: Some(false),
            ..dev()
        };
        let (v, may) = both(&unsupervised, Some(true)).unwrap();
        assert!(v.eligible, "DDM needs no supervision: {:#?}", v.reasons);
        assert_eq!(may, [DoseMechanism::DdmEnforcement]);
        let low = Dev {
            battery: Some(10),
            external: Some(false),
            ..dev()
        };
        let (v, may) = both(&low, Some(false)).unwrap();
        assert!(!v.eligible && may.is_empty());
        assert_eq!(v.rules(), [rule::BATTERY, rule::DDM_ACTIVE]);
        assert!(combine(None, None).is_none());
    }
}
