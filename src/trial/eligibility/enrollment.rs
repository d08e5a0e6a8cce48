//! Rules on the MDM enrollment: `app_management_right` (the enrollment's `AccessRights` must
//! grant "Allow app management", which ScheduleOSUpdate needs) and `shared_ipad_with_user` (an
//! update would interrupt a logged-in Shared iPad user). Where the fact is unknown, the
//! protocol's `unknown_facts` decides (default: an unknown user excludes, unknown rights do not).

use super::facts::reason;
use super::{Context, RuleVerdict, rule};
use crate::trial::protocol::UnknownPolicy;
use serde_json::json;

/// `AccessRights` bit "Allow app management" (`AllowAppInstallation`), needed by
/// ScheduleOSUpdate (mdm.md §1).
pub const APP_MANAGEMENT_BIT: u64 = 4096;

pub fn app_management_right(ctx: &Context) -> RuleVerdict {
    if ctx.spec.app_management_right
        && ctx.subject.access_rights.is_none()
        && ctx.spec.unknown_facts.access_rights == UnknownPolicy::Exclude
    {
        let source = &ctx.subject.fact_sources.access_rights;
        return RuleVerdict::Exclude(reason(
            rule::APP_MANAGEMENT_RIGHT,
            format!(
                "The MDM enrollment's AccessRights are unknown ({source}), so whether they grant \
                 \"Allow app management\" (bit {APP_MANAGEMENT_BIT}), which ScheduleOSUpdate \
                 needs, cannot be checked."
            ),
            json!({ "access_rights": null, "needed_bit": APP_MANAGEMENT_BIT, "source": source }),
        ));
    }
    if ctx.spec.app_management_right
        && let Some(rights) = ctx.subject.access_rights
        && rights & APP_MANAGEMENT_BIT == 0
    {
        return RuleVerdict::Exclude(reason(
            rule::APP_MANAGEMENT_RIGHT,
            format!(
                "The MDM enrollment's AccessRights ({rights}) lack \"Allow app management\" \
                 (bit {APP_MANAGEMENT_BIT}), which ScheduleOSUpdate needs."
            ),
            json!({ "access_rights": rights, "needed_bit": APP_MANAGEMENT_BIT }),
        ));
    }
    RuleVerdict::Pass
}

pub fn shared_ipad_with_user(ctx: &Context) -> RuleVerdict {
    if ctx.spec.exclude_shared_ipad_with_user
        && ctx.subject.shared_ipad_user_logged_in.is_none()
        && ctx.spec.unknown_facts.shared_ipad_user == UnknownPolicy::Exclude
    {
        let source = &ctx.subject.fact_sources.shared_ipad_user;
        return RuleVerdict::Exclude(reason(
            rule::SHARED_IPAD_WITH_USER,
            format!(
                "Whether a user is logged in on the device is unknown ({source}); on a Shared \
                 iPad the update would interrupt that user's session."
            ),
            json!({ "shared_ipad_user_logged_in": null, "source": source }),
        ));
    }
    if ctx.spec.exclude_shared_ipad_with_user
        && ctx.subject.shared_ipad_user_logged_in == Some(true)
    {
        let source = &ctx.subject.fact_sources.shared_ipad_user;
        return RuleVerdict::Exclude(reason(
            rule::SHARED_IPAD_WITH_USER,
            format!(
                "The device is a Shared iPad with a user logged in ({source}); the update would \
                 interrupt that user's session."
            ),
            json!({ "shared_ipad_user_logged_in": true, "source": source }),
        ));
    }
    RuleVerdict::Pass
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use crate::trial::protocol::UnknownPolicy;

    #[test]
    fn app_management_right_only_when_known() {
        let p = dev().probe();
        let o = offer();
        let spec = EligibilitySpec::default();
        let mut s = subject(&p, Some(&o));
        assert!(assess(&spec, &TargetSpec::Latest, &s).eligible);
        s.access_rights = Some(8191);
        assert!(assess(&spec, &TargetSpec::Latest, &s).eligible);
        s.access_rights = Some(8191 - 4096);
        let r = only(
            &assess(&spec, &TargetSpec::Latest, &s),
            rule::APP_MANAGEMENT_RIGHT,
        );
        assert_eq!(r.values["access_rights"], 4095);
        assert_eq!(r.values["needed_bit"], 4096);
        let off = EligibilitySpec {
            app_management_right: false,
            ..Default::default()
        };
        assert!(assess(&off, &TargetSpec::Latest, &s).eligible);
    }

    #[test]
    fn unknown_access_rights_exclude_only_when_the_protocol_says_so() {
        let p = dev().probe();
        let o = offer();
        let mut s = subject(&p, Some(&o));
        s.fact_sources.access_rights = "the MDM does not report them".into();
        assert!(assess(&EligibilitySpec::default(), &TargetSpec::Latest, &s).eligible);
        let mut strict = EligibilitySpec::default();
        strict.unknown_facts.access_rights = UnknownPolicy::Exclude;
        let r = only(
            &assess(&strict, &TargetSpec::Latest, &s),
            rule::APP_MANAGEMENT_RIGHT,
        );
        assert_eq!(
            r.message,
            "The MDM enrollment's AccessRights are unknown (the MDM does not report them), so \
             whether they grant \"Allow app management\" (bit 4096), which ScheduleOSUpdate \
             needs, cannot be checked."
        );
        assert_eq!(r.values["access_rights"], Value::Null);
        // Known rights with the bit pass under the strict policy too.
        s.access_rights = Some(APP_MANAGEMENT_BIT);
        assert!(assess(&strict, &TargetSpec::Latest, &s).eligible);
    }

    #[test]
    fn an_unknown_shared_ipad_user_excludes_unless_allowed() {
        let p = dev().probe();
        let o = offer();
        let mut s = subject(&p, Some(&o));
        s.shared_ipad_user_logged_in = None;
        s.fact_sources.shared_ipad_user = "a Shared iPad (MDM DeviceInformation.IsMultiUser); \
            no MDM reports user channels"
            .into();
        let r = only(
            &assess(&EligibilitySpec::default(), &TargetSpec::Latest, &s),
            rule::SHARED_IPAD_WITH_USER,
        );
        assert!(
            r.message
                .starts_with("Whether a user is logged in on the device is unknown (a Shared iPad"),
            "{}",
            r.message
        );
        assert_eq!(r.values["shared_ipad_user_logged_in"], Value::Null);
        let mut lax = EligibilitySpec::default();
        lax.unknown_facts.shared_ipad_user = UnknownPolicy::Allow;
        assert!(assess(&lax, &TargetSpec::Latest, &s).eligible);
    }

    #[test]
    fn shared_ipad_with_a_user_is_excluded() {
        let p = dev().probe();
        let o = offer();
        let spec = EligibilitySpec::default();
        let mut s = subject(&p, Some(&o));
        s.shared_ipad_user_logged_in = Some(false);
        assert!(assess(&spec, &TargetSpec::Latest, &s).eligible);
        s.shared_ipad_user_logged_in = Some(true);
        s.fact_sources.shared_ipad_user = "MDM user-channel check-in (UserShortName alice)".into();
        let r = only(
            &assess(&spec, &TargetSpec::Latest, &s),
            rule::SHARED_IPAD_WITH_USER,
        );
        assert_eq!(r.values["shared_ipad_user_logged_in"], true);
        // The reason names where the user came from.
        assert!(
            r.message.contains(
                "with a user logged in (MDM user-channel check-in (UserShortName alice))"
            ),
            "{}",
            r.message
        );
        assert_eq!(
            r.values["source"],
            "MDM user-channel check-in (UserShortName alice)"
        );
        let off = EligibilitySpec {
            exclude_shared_ipad_with_user: false,
            ..Default::default()
        };
        assert!(assess(&off, &TargetSpec::Latest, &s).eligible);
    }
}
