//! Rule `passcode`: the protocol may require a passcode, or its absence (`any` by default).
//! Lockdown's `PasswordProtected` first, the MDM's `PasscodePresent` second; unknown excludes.

use super::facts::reason;
use super::{Context, RuleVerdict, rule};
use crate::trial::protocol::PasscodeRule;
use serde_json::json;

pub fn check(ctx: &Context) -> RuleVerdict {
    if ctx.spec.passcode == PasscodeRule::Any {
        return RuleVerdict::Pass;
    }
    let passcode = &ctx.passcode;
    let want = ctx.spec.passcode == PasscodeRule::Required;
    if passcode.value == Some(want) {
        return RuleVerdict::Pass;
    }
    let what = if want {
        "requires a passcode"
    } else {
        "requires no passcode"
    };
    let has = match passcode.value {
        Some(true) => format!("the device has one ({})", passcode.source),
        Some(false) => format!("the device has none ({})", passcode.source),
        None => format!(
            "whether the device has one is unknown ({})",
            passcode.source
        ),
    };
    RuleVerdict::Exclude(reason(
        rule::PASSCODE,
        format!("The protocol {what}, and {has}."),
        json!({
            "passcode": passcode.value,
            "required": if want { "required" } else { "absent" },
            "source": passcode.source,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

    #[test]
    fn passcode_required_absent_any() {
        let o = offer();
        let with = Dev {
            passcode: Some(true),
            ..dev()
        }
        .probe();
        let without = dev().probe();
        let unknown = Dev {
            passcode: None,
            ..dev()
        }
        .probe();
        let spec = |r| EligibilitySpec {
            passcode: r,
            ..Default::default()
        };
        let t = TargetSpec::Latest;
        for p in [&with, &without, &unknown] {
            assert!(assess(&spec(PasscodeRule::Any), &t, &subject(p, Some(&o))).eligible);
        }
        assert!(assess(&spec(PasscodeRule::Required), &t, &subject(&with, Some(&o))).eligible);
        let r = only(
            &assess(
                &spec(PasscodeRule::Required),
                &t,
                &subject(&without, Some(&o)),
            ),
            rule::PASSCODE,
        );
        assert_eq!(r.values["passcode"], false);
        assert_eq!(r.values["required"], "required");
        assert!(
            assess(
                &spec(PasscodeRule::Absent),
                &t,
                &subject(&without, Some(&o))
            )
            .eligible
        );
        let r = only(
            &assess(&spec(PasscodeRule::Absent), &t, &subject(&with, Some(&o))),
            rule::PASSCODE,
        );
        assert_eq!(r.values["passcode"], true);
        let r = only(
            &assess(
                &spec(PasscodeRule::Absent),
                &t,
                &subject(&unknown, Some(&o)),
            ),
            rule::PASSCODE,
        );
        assert_eq!(r.values["passcode"], Value::Null);
        assert!(r.message.contains("unknown"), "{}", r.message);
    }
}
