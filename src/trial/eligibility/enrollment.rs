//! Rules on the MDM enrollment: `app_management_right` (the enrollment's `AccessRights` must
//! grant "Allow app management", which ScheduleOSUpdate needs, where the MDM reports them) and
//! `shared_ipad_with_user` (an update would interrupt a logged-in Shared iPad user).

use super::facts::reason;
use super::{Context, RuleVerdict, rule};
use serde_json::json;

/// `AccessRights` bit "Allow app management" (`AllowAppInstallation`), needed by
/// ScheduleOSUpdate (mdm.md §1).
pub const APP_MANAGEMENT_BIT: u64 = 4096;

pub fn app_management_right(ctx: &Context) -> RuleVerdict {
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
        && ctx.subject.shared_ipad_user_logged_in == Some(true)
    {
        return RuleVerdict::Exclude(reason(
            rule::SHARED_IPAD_WITH_USER,
            "The device is a Shared iPad with a user logged in; the update would interrupt \
             that user's session."
                .into(),
            json!({ "shared_ipad_user_logged_in": true }),
        ));
    }
    RuleVerdict::Pass
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

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
    fn shared_ipad_with_a_user_is_excluded() {
        let p = dev().probe();
        let o = offer();
        let spec = EligibilitySpec::default();
        let mut s = subject(&p, Some(&o));
        s.shared_ipad_user_logged_in = Some(false);
        assert!(assess(&spec, &TargetSpec::Latest, &s).eligible);
        s.shared_ipad_user_logged_in = Some(true);
        let r = only(
            &assess(&spec, &TargetSpec::Latest, &s),
            rule::SHARED_IPAD_WITH_USER,
        );
        assert_eq!(r.values["shared_ipad_user_logged_in"], true);
        let off = EligibilitySpec {
            exclude_shared_ipad_with_user: false,
            ..Default::default()
        };
        assert!(assess(&off, &TargetSpec::Latest, &s).eligible);
    }
}
