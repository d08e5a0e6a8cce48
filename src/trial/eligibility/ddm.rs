//! The rules of a DDM enforcement dose (issue 13), from Apple's schema of
//! `com.apple.configuration.softwareupdate.enforcement.specific`
//! (`declarative/declarations/configurations/softwareupdate.enforcement.specific.yaml`:
//! `supportedOS.iOS.introduced: '17.0'`, `allowed-enrollments: [supervised, device]`) and the
//! DDM brief (`shared/briefs/ddm.md` §1: DDM is on once the device has done a
//! `DeclarativeManagement` check-in):
//!
//! - `ddm_min_ios`: iOS 17.0 or later.
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
        format!("{}; a declaration would never reach the device.", capital(&why)),
        json!({ "ddm_active": ctx.subject.ddm_active, "error": ctx.subject.ddm_error }),
    ))
}

pub fn enrollment(ctx: &Context) -> RuleVerdict {
    if enrollment_kind(ctx).is_some() {
        return RuleVerdict::Pass;
    }
    let supervised = ctx
        .subject
        .probe
        .baseline
        .supervision
        .device_is_chaperoned
        .get()
        .copied();
    RuleVerdict::Exclude(reason(
        rule::DDM_ENROLLMENT,
        "The device is not known to be supervised and the DDM server does not know its enrollment by its UDID, so its enrollment type is unknown; the enforcement declaration is allowed on supervised and device enrollments only.".into(),
        json!({ "supervised": supervised, "enrollment": null }),
    ))
}

/// The enrollment type as the rule reads it, for the target record.
pub(super) fn enrollment_kind(ctx: &Context) -> Option<&'static str> {
    let supervised = ctx
        .subject
        .probe
        .baseline
        .supervision
        .device_is_chaperoned
        .get()
        .copied();
    match (supervised, ctx.subject.ddm_active) {
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
        TargetSpec::LatestForModel => ctx.resolution.target.as_ref()?.version.clone(),
        TargetSpec::ProductKey(_) | TargetSpec::Latest => return None,
    };
    // The device's own offer of that version (sizes for `free_disk`), when it made one.
    if let Some(t) = &ctx.resolution.target
        && t.version == version
    {
        return Some(t.clone());
    }
    Some(ResolvedTarget {
        product_key: None,
        version,
        build: None,
        download_size: None,
        install_size: None,
    })
}

pub fn target_rule(ctx: &Context) -> RuleVerdict {
    let Some(t) = self::target(ctx, &ctx.target_spec) else {
        return RuleVerdict::Exclude(reason(
            rule::DDM_TARGET,
            "No target version can be named for the declaration (give target product_version, or latest_for_model with a gdmf feed that offers the model a release).".into(),
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
    let Some((feeds, g)) = ctx
        .subject
        .feeds
        .and_then(|f| Some((f, f.gdmf.as_ref()?)))
    else {
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
