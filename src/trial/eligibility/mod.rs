//! Eligibility: may this device receive the protocol's ScheduleOSUpdate? Pure rules over the
//! baseline (lockdown first, the MDM's answers where lockdown has no value), the device's own
//! AvailableOSUpdates answer and the dose ledger (DESIGN.md "Eligibility"; briefs mdm.md §1, §2,
//! §7; field.md §5–6).
//!
//! [`assess`] evaluates **every** rule and lists every failing one, each as a [`Reason`] with a
//! stable rule id (see [`RULES`]), one sentence for the operator and the numbers it looked at.
//! A fact that cannot be read never counts as passing: the device is excluded, the reason says
//! the value is unknown and why.
//!
//! Decisions (documented in `trials/README.md` too):
//! - `probe_failed`: a probe with status `failed`, or no readable iOS version (lockdown
//!   `ProductVersion`, else MDM `OSVersion`), is "no usable baseline". Only `probe_failed` and
//!   `already_dosed` are then reported; every other rule would only repeat "unknown".
//! - The target comes from what the device itself offers (AvailableOSUpdates). With
//!   `newer_target` on, a device that does not offer the protocol's target, or offers nothing
//!   newer than it runs, is excluded. With `newer_target` off (an operator's deliberate "send it
//!   anyway" experiment) a `product_version` target the device does not offer still resolves, with
//!   `product_key: None` and unknown sizes (the command then carries `ProductVersion` only, iOS
//!   11.3+); a `product_key` or `latest` target the device does not offer cannot be resolved and
//!   the device is excluded under `no_target`. So `eligible` always implies `target.is_some()`.
//! - `latest` ignores Rapid Security Responses (`IsSecurityResponse: true`); they cannot be
//!   targeted by version (mdm.md §1).
//! - With the protocol's feeds (`crate::feeds`): `latest_for_model` resolves from the gdmf feed
//!   (the device's own offer only supplies the ProductKey, build and sizes when it offers that
//!   version); `newer_target_in_feed` excludes a device whose model the feed offers nothing newer
//!   on the trial date; the target records `feed_builds`, `feed_date` and
//!   `can_restore_to_baseline` (ipsw.me `signed` for the starting build), see
//!   [`Verdict::target_json`].
//! - `command_removed` (issue 13): ScheduleOSUpdate is removed on iOS 27.0 and later (Apple's
//!   schema, [`command_lifetime`]), so a ScheduleOSUpdate dose excludes those devices; on 26.x
//!   the device stays eligible and the verdict carries a `command_deprecated` note, recorded
//!   with the target (`EligibilityAssessed.target.notes`).
//!
//! - Enrollment facts (issue 14): DEP enrolment, whether a Shared iPad has a user logged in and
//!   the enrollment's access rights are read with their sources by
//!   `journal::fold::baseline_facts::enrollment` (SecurityInfo `ManagementStatus`,
//!   DeviceInformation `IsMultiUser`/`ResidentUsers`, the bench's `eligibility.enrollment`) and
//!   handed to [`Subject`]; an unknown one is judged by the protocol's `unknown_facts` (default:
//!   an unknown DEP enrolment counts as not DEP, an unknown Shared iPad user excludes, unknown
//!   access rights do not), and the reason names every place looked at.
//!
//! The rules are a table ([`TABLE`]): each is a named, pure `fn(&Context) -> RuleVerdict` in its
//! own file with its tests, tagged with the dose mechanisms it applies to ([`Applies`]).
//! [`assess`] reads the device's facts once ([`Context`]; `probe_failed` when there is no usable
//! baseline), walks the table in report order, and combines the verdicts: every `Exclude`
//! becomes a reason, every `Note` a note, and the device is eligible when no rule excluded it.
//! A new dose mechanism (the DDM arm of issue 13) adds its own rules to the table, tagged
//! `Applies::Only(its mechanism)`, and is assessed with [`assess_for`].

mod already_dosed;
mod battery;
pub mod command_lifetime;
mod context;
pub mod ddm;
mod enrollment;
mod facts;
mod feed;
mod free_disk;
mod known_bad;
mod min_ios;
mod passcode;
mod supervised;
mod target;

pub use context::Context;
pub use enrollment::APP_MANAGEMENT_BIT;
pub use target::Resolution;

use super::ledger::LedgerRecord;
use super::protocol::{DoseMechanism, EligibilitySpec, TargetSpec};
use crate::feeds::TrialFeeds;
use crate::journal::Reason;
use crate::mdm::report::AvailableUpdate;
use crate::probe::run::DeviceProbe;
use chrono::NaiveDate;
use serde::Serialize;
use serde_json::{Value, json};

/// Rule ids, in the order reasons are listed.
pub mod rule {
    pub const PROBE_FAILED: &str = "probe_failed";
    pub const SUPERVISED: &str = "supervised";
    pub const MIN_IOS: &str = "min_ios";
    /// ScheduleOSUpdate is removed on the device's iOS (`command_lifetime`).
    pub const COMMAND_REMOVED: &str = "command_removed";
    pub const KNOWN_BAD_VERSION: &str = "known_bad_version";
    pub const NEWER_TARGET: &str = "newer_target";
    pub const NO_TARGET: &str = "no_target";
    pub const NEWER_TARGET_IN_FEED: &str = "newer_target_in_feed";
    pub const FREE_DISK: &str = "free_disk";
    pub const BATTERY: &str = "battery";
    pub const PASSCODE: &str = "passcode";
    pub const APP_MANAGEMENT_RIGHT: &str = "app_management_right";
    pub const SHARED_IPAD_WITH_USER: &str = "shared_ipad_with_user";
    pub const ALREADY_DOSED: &str = "already_dosed";
    /// A note, not a reason: ScheduleOSUpdate is deprecated on the device's iOS.
    pub const COMMAND_DEPRECATED: &str = "command_deprecated";
    /// DDM arms (`ddm`): iOS 17.0+, DDM on, an allowed enrollment, a target to name.
    pub const DDM_MIN_IOS: &str = "ddm_min_ios";
    pub const DDM_ACTIVE: &str = "ddm_active";
    pub const DDM_ENROLLMENT: &str = "ddm_enrollment";
    pub const DDM_TARGET: &str = "ddm_target";
}

/// Every rule id [`assess`] can report as a reason, in report order.
pub const RULES: [&str; 18] = [
    rule::PROBE_FAILED,
    rule::SUPERVISED,
    rule::MIN_IOS,
    rule::DDM_MIN_IOS,
    rule::DDM_ACTIVE,
    rule::DDM_ENROLLMENT,
    rule::COMMAND_REMOVED,
    rule::KNOWN_BAD_VERSION,
    rule::NEWER_TARGET,
    rule::NO_TARGET,
    rule::DDM_TARGET,
    rule::NEWER_TARGET_IN_FEED,
    rule::FREE_DISK,
    rule::BATTERY,
    rule::PASSCODE,
    rule::APP_MANAGEMENT_RIGHT,
    rule::SHARED_IPAD_WITH_USER,
    rule::ALREADY_DOSED,
];

/// Everything known about one device when it is assessed.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub probe: &'a DeviceProbe,
    /// The device's AvailableOSUpdates answer, parsed; `None`: no usable answer.
    pub offered: Option<&'a [AvailableUpdate]>,
    /// Why there is no (or no useful) answer, e.g. "AvailableOSUpdates answered Error 2213 (No
    /// update available.)".
    pub offered_error: Option<String>,
    /// Ledger records of other protocols for this UDID at its current build.
    pub dosed_by_other_protocols: Vec<LedgerRecord>,
    /// The enrollment's `AccessRights` (the MDM's records or the bench's configuration,
    /// `journal::fold::baseline_facts`); `None`: unknown, [`FactSources`] says why.
    pub access_rights: Option<u64>,
    /// A user is logged in on a Shared iPad (`false` for any other device).
    pub shared_ipad_user_logged_in: Option<bool>,
    pub dep_enrolled: Option<bool>,
    /// Where the three facts above came from, or why they are unknown.
    pub fact_sources: FactSources,
    /// DDM is on for the enrollment (the DDM server saw a `DeclarativeManagement` check-in);
    /// `None`: unknown, [`Subject::ddm_error`] says why.
    pub ddm_active: Option<bool>,
    pub ddm_error: Option<String>,
    /// The protocol's feeds (gdmf, ipsw.me) at the trial date; `None`: the protocol names none.
    pub feeds: Option<&'a TrialFeeds>,
}

/// Where a [`Subject`]'s enrollment facts came from, or every place looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactSources {
    pub access_rights: String,
    pub shared_ipad_user: String,
    pub dep_enrolled: String,
}

impl Default for FactSources {
    fn default() -> Self {
        let none = || "not read".to_string();
        FactSources {
            access_rights: none(),
            shared_ipad_user: none(),
            dep_enrolled: none(),
        }
    }
}

impl<'a> Subject<'a> {
    /// The enrollment facts derived from the probe (`journal::fold::baseline_facts`), with
    /// their sources.
    pub fn with_enrollment(
        mut self,
        f: &crate::journal::fold::baseline_facts::EnrollmentFacts,
    ) -> Self {
        self.access_rights = f.access_rights.value;
        self.shared_ipad_user_logged_in = f.shared_ipad_user_logged_in.value;
        self.dep_enrolled = f.dep_enrolled.value;
        self.fact_sources = FactSources {
            access_rights: f.access_rights.source.clone(),
            shared_ipad_user: f.shared_ipad_user_logged_in.source.clone(),
            dep_enrolled: f.dep_enrolled.source.clone(),
        };
        self
    }
}

/// The update a device would be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedTarget {
    /// `None` only for a `product_version` target the device does not offer, with
    /// `newer_target: false`.
    pub product_key: Option<String>,
    pub version: String,
    pub build: Option<String>,
    pub download_size: Option<u64>,
    pub install_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub eligible: bool,
    pub reasons: Vec<Reason>,
    /// What the operator should know about an eligible (or excluded) device that does not
    /// exclude it, e.g. `command_deprecated` on iOS 26. Recorded in the journal with the target
    /// ([`Verdict::target_json`]).
    pub notes: Vec<Reason>,
    /// The resolved target, also for an excluded device when it could be resolved.
    pub target: Option<ResolvedTarget>,
    /// `latest_for_model`: every build of the target version the gdmf feed offers the model
    /// (two when Apple ships two), primary first; empty otherwise.
    pub feed_builds: Vec<String>,
    /// With feeds: the trial date and whether the device's starting build is still signed
    /// (ipsw.me; `None`: unknown). `None` without feeds.
    pub feed_facts: Option<(NaiveDate, Option<bool>)>,
    /// A DDM verdict: its mechanism and the enrollment type the rules read (recorded with the
    /// target as `mechanism` and `enrollment`); `None` for ScheduleOSUpdate, whose target
    /// record is unchanged.
    pub mechanism: Option<(DoseMechanism, Option<&'static str>)>,
}

impl Verdict {
    /// The rule ids of the reasons, in order.
    pub fn rules(&self) -> Vec<&str> {
        self.reasons.iter().map(|r| r.rule.as_str()).collect()
    }

    pub fn reason(&self, rule: &str) -> Option<&Reason> {
        self.reasons.iter().find(|r| r.rule == rule)
    }

    /// The target as the journal records it (`EligibilityAssessed.target`): the
    /// [`ResolvedTarget`] plus, where known, `feed_builds` and, with feeds, `feed_date` and
    /// `can_restore_to_baseline` (true/false/null), and the [`Verdict::notes`] when there are
    /// any (`notes`: `[{rule, message, values}]`). `null` when no target was resolved.
    pub fn target_json(&self) -> Value {
        let Some(t) = &self.target else {
            return Value::Null;
        };
        let mut v = serde_json::to_value(t).expect("target serialises");
        if let Value::Object(o) = &mut v {
            if !self.feed_builds.is_empty() {
                o.insert("feed_builds".into(), json!(self.feed_builds));
            }
            if let Some((date, restore)) = self.feed_facts {
                o.insert("feed_date".into(), json!(date.to_string()));
                o.insert("can_restore_to_baseline".into(), json!(restore));
            }
            if !self.notes.is_empty() {
                o.insert("notes".into(), json!(self.notes));
            }
            if let Some((m, enrollment)) = self.mechanism {
                o.insert("mechanism".into(), json!(m.as_str()));
                o.insert("enrollment".into(), json!(enrollment));
            }
        }
        v
    }
}

/// What one rule says about one device.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleVerdict {
    /// Nothing to say (the rule holds, or the protocol turned it off).
    Pass,
    /// The device stays eligible, and the verdict records this.
    Note(Reason),
    /// The device is excluded, for this reason.
    Exclude(Reason),
}

impl From<Option<Reason>> for RuleVerdict {
    fn from(r: Option<Reason>) -> Self {
        r.map_or(RuleVerdict::Pass, RuleVerdict::Exclude)
    }
}

/// The doses a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    /// Any dose: facts about the device and the run, whatever is sent.
    Every,
    /// One mechanism's requirements (Apple's schema for that command or declaration).
    Only(DoseMechanism),
}

impl Applies {
    pub fn to(self, mechanism: DoseMechanism) -> bool {
        match self {
            Applies::Every => true,
            Applies::Only(m) => m == mechanism,
        }
    }
}

/// One named eligibility rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The id its reasons carry (`target` reports `newer_target` or `no_target`).
    pub id: &'static str,
    pub applies: Applies,
    pub check: fn(&Context) -> RuleVerdict,
}

const SCHEDULE_OS_UPDATE: Applies = Applies::Only(DoseMechanism::ScheduleOsUpdate);
const DDM_ENFORCEMENT: Applies = Applies::Only(DoseMechanism::DdmEnforcement);

/// Every rule after `probe_failed`, in report order (see [`RULES`]).
pub const TABLE: &[Rule] = &[
    Rule {
        id: rule::SUPERVISED,
        applies: SCHEDULE_OS_UPDATE,
        check: supervised::check,
    },
    Rule {
        id: rule::MIN_IOS,
        applies: SCHEDULE_OS_UPDATE,
        check: min_ios::check,
    },
    Rule {
        id: rule::DDM_MIN_IOS,
        applies: DDM_ENFORCEMENT,
        check: ddm::min_ios,
    },
    Rule {
        id: rule::DDM_ACTIVE,
        applies: DDM_ENFORCEMENT,
        check: ddm::active,
    },
    Rule {
        id: rule::DDM_ENROLLMENT,
        applies: DDM_ENFORCEMENT,
        check: ddm::enrollment,
    },
    Rule {
        id: rule::COMMAND_REMOVED,
        applies: SCHEDULE_OS_UPDATE,
        check: command_lifetime::check,
    },
    Rule {
        id: rule::KNOWN_BAD_VERSION,
        applies: SCHEDULE_OS_UPDATE,
        check: known_bad::check,
    },
    Rule {
        id: rule::NEWER_TARGET,
        applies: SCHEDULE_OS_UPDATE,
        check: target::check,
    },
    Rule {
        id: rule::DDM_TARGET,
        applies: DDM_ENFORCEMENT,
        check: ddm::target_rule,
    },
    Rule {
        id: rule::NEWER_TARGET_IN_FEED,
        applies: Applies::Every,
        check: feed::check,
    },
    Rule {
        id: rule::FREE_DISK,
        applies: Applies::Every,
        check: free_disk::check,
    },
    Rule {
        id: rule::BATTERY,
        applies: Applies::Every,
        check: battery::check,
    },
    Rule {
        id: rule::PASSCODE,
        applies: Applies::Every,
        check: passcode::check,
    },
    Rule {
        id: rule::APP_MANAGEMENT_RIGHT,
        applies: SCHEDULE_OS_UPDATE,
        check: enrollment::app_management_right,
    },
    Rule {
        id: rule::SHARED_IPAD_WITH_USER,
        applies: Applies::Every,
        check: enrollment::shared_ipad_with_user,
    },
    Rule {
        id: rule::ALREADY_DOSED,
        applies: Applies::Every,
        check: already_dosed::check,
    },
];

/// Assess one device for a ScheduleOSUpdate dose (every arm today) against the protocol's
/// eligibility rules and target. Pure.
pub fn assess(spec: &EligibilitySpec, target: &TargetSpec, s: &Subject) -> Verdict {
    assess_for(DoseMechanism::ScheduleOsUpdate, spec, target, s)
}

/// Assess one device for a dose by `mechanism`: the rules of [`TABLE`] that apply to it. Pure.
pub fn assess_for(
    mechanism: DoseMechanism,
    spec: &EligibilitySpec,
    target: &TargetSpec,
    s: &Subject,
) -> Verdict {
    let ctx = match Context::read(spec, target, s) {
        Ok(ctx) => ctx,
        Err(probe_failed) => {
            let mut reasons = vec![probe_failed];
            reasons.extend(already_dosed::already_dosed(spec, s));
            return Verdict {
                eligible: false,
                reasons,
                notes: Vec::new(),
                target: None,
                feed_builds: Vec::new(),
                feed_facts: None,
                mechanism: None,
            };
        }
    };
    let (mut reasons, mut notes) = (Vec::new(), Vec::new());
    for r in TABLE.iter().filter(|r| r.applies.to(mechanism)) {
        match (r.check)(&ctx) {
            RuleVerdict::Pass => {}
            RuleVerdict::Note(n) => notes.push(n),
            RuleVerdict::Exclude(x) => reasons.push(x),
        }
    }
    let feed_facts = ctx.feed_facts();
    let (target, mechanism, feed_builds) = match mechanism {
        DoseMechanism::ScheduleOsUpdate => (
            ctx.resolution.target.clone(),
            None,
            ctx.resolution.feed_builds.clone(),
        ),
        DoseMechanism::DdmEnforcement => {
            let t = ddm::target(&ctx, target);
            let builds = t
                .as_ref()
                .map(|t| ddm::feed_builds(&ctx, &t.version))
                .unwrap_or_default();
            (t, Some((mechanism, ddm::enrollment_kind(&ctx))), builds)
        }
    };
    Verdict {
        eligible: reasons.is_empty(),
        reasons,
        notes,
        target,
        feed_builds,
        feed_facts,
        mechanism,
    }
}

/// One device's verdicts for the two mechanisms (`None`: the protocol has no arm of that kind)
/// as one: the ScheduleOSUpdate verdict when it is eligible, else the DDM one when that is,
/// else the ScheduleOSUpdate one with the DDM reasons it lacks appended (each rule once). Also
/// the mechanisms the device may receive, for allocation. `None` without any verdict. Pure.
pub fn combine(
    sou: Option<Verdict>,
    ddm: Option<Verdict>,
) -> Option<(Verdict, Vec<DoseMechanism>)> {
    let mut may = Vec::new();
    if sou.as_ref().is_some_and(|v| v.eligible) {
        may.push(DoseMechanism::ScheduleOsUpdate);
    }
    if ddm.as_ref().is_some_and(|v| v.eligible) {
        may.push(DoseMechanism::DdmEnforcement);
    }
    let v = match (sou, ddm) {
        (Some(s), _) if s.eligible => s,
        (_, Some(d)) if d.eligible => d,
        (Some(mut s), Some(d)) => {
            for r in d.reasons {
                if s.reason(&r.rule).is_none() {
                    s.reasons.push(r);
                }
            }
            s
        }
        (Some(s), None) => s,
        (None, Some(d)) => d,
        (None, None) => return None,
    };
    Some((v, may))
}

// Test-only modules are declared after the production code: `tests/architecture.rs` reads a
// file up to its first test attribute.
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod grid;
#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::{Applies, DoseMechanism, TABLE};

    #[test]
    fn the_table_runs_in_report_order_after_probe_failed() {
        let pos = |id: &str| RULES.iter().position(|x| *x == id).unwrap();
        let ids: Vec<usize> = TABLE.iter().map(|r| pos(r.id)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert!(ids[0] > pos(rule::PROBE_FAILED));
        // Each mechanism's rules are tagged with it; the rest apply to every dose.
        for m in [
            DoseMechanism::ScheduleOsUpdate,
            DoseMechanism::DdmEnforcement,
        ] {
            assert!(Applies::Every.to(m));
            assert!(TABLE.iter().any(|r| r.applies == Applies::Only(m)));
        }
        let sou = Applies::Only(DoseMechanism::ScheduleOsUpdate);
        assert!(!sou.to(DoseMechanism::DdmEnforcement));
        let ddm_ids: Vec<&str> = TABLE
            .iter()
            .filter(|r| r.applies == Applies::Only(DoseMechanism::DdmEnforcement))
            .map(|r| r.id)
            .collect();
        assert_eq!(
            ddm_ids,
            [
                rule::DDM_MIN_IOS,
                rule::DDM_ACTIVE,
                rule::DDM_ENROLLMENT,
                rule::DDM_TARGET
            ]
        );
    }

    #[test]
    fn a_healthy_device_is_eligible_with_the_target_it_offers() {
        let v = run(&dev());
        assert!(v.eligible, "{:#?}", v.reasons);
        assert!(v.reasons.is_empty());
        assert_eq!(
            v.target,
            Some(ResolvedTarget {
                product_key: Some("iOSUpdate21G93".into()),
                version: "17.6.1".into(),
                build: Some("21G93".into()),
                download_size: Some(600_000_000),
                install_size: Some(1_500_000_000),
            })
        );
    }

    #[test]
    fn every_failing_rule_is_reported_in_rule_order() {
        let p = Dev {
            version: Some("11.3"),
            build: "15E216",
            chaperoned: Some(false),
            passcode: Some(true),
            battery: Some(10),
            external: Some(false),
            amount_free: Some(GB),
            ..dev()
        }
        .probe();
        let o = vec![update("11.4.1", "15G77", GB, 2 * GB)];
        let mut s = subject(&p, Some(&o));
        s.access_rights = Some(0);
        s.shared_ipad_user_logged_in = Some(true);
        s.dosed_by_other_protocols = vec![dose()];
        let spec = EligibilitySpec {
            passcode: PasscodeRule::Absent,
            ..Default::default()
        };
        let v = assess(&spec, &TargetSpec::ProductVersion("12.0".into()), &s);
        assert!(!v.eligible);
        assert_eq!(
            v.rules(),
            [
                rule::SUPERVISED,
                rule::KNOWN_BAD_VERSION,
                rule::NEWER_TARGET,
                rule::FREE_DISK,
                rule::BATTERY,
                rule::PASSCODE,
                rule::APP_MANAGEMENT_RIGHT,
                rule::SHARED_IPAD_WITH_USER,
                rule::ALREADY_DOSED,
            ]
        );
        // No target: the disk rule fell back to fallback_min.
        assert_eq!(
            v.reason(rule::FREE_DISK).unwrap().values["needed_from"],
            "fallback_min"
        );
        let ordered: Vec<usize> = v
            .reasons
            .iter()
            .map(|r| RULES.iter().position(|x| *x == r.rule).unwrap())
            .collect();
        assert!(ordered.windows(2).all(|w| w[0] < w[1]));
        for r in &v.reasons {
            assert!(r.message.ends_with('.'), "{}", r.message);
            assert!(!r.values.is_null(), "{}", r.rule);
        }
    }

    #[test]
    fn without_feeds_the_target_json_is_the_resolved_target() {
        let v = run(&dev());
        let j = v.target_json();
        assert_eq!(j, serde_json::to_value(v.target.as_ref().unwrap()).unwrap());
        assert!(j.get("can_restore_to_baseline").is_none());
    }
}
