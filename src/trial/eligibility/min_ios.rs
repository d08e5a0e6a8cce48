//! Rule `min_ios`: below the protocol's minimum iOS, ScheduleOSUpdate works only on DEP-enrolled
//! devices without a passcode (briefs mdm.md §1: before iOS 10.3 the command needs both).

use super::facts::reason;
use super::{Context, RuleVerdict, rule};
use crate::trial::protocol::UnknownPolicy;
use crate::version::Version;
use serde_json::json;

pub fn check(ctx: &Context) -> RuleVerdict {
    let Some(min) = &ctx.spec.min_ios else {
        return RuleVerdict::Pass;
    };
    let s = ctx.subject;
    let version_str = &ctx.version;
    let passcode = &ctx.passcode;
    let values = json!({
        "version": version_str,
        "min_ios": min,
        "dep_enrolled": s.dep_enrolled,
        "passcode": passcode.value,
    });
    let min_v = match Version::parse(min) {
        Err(e) => {
            return RuleVerdict::Exclude(reason(
                rule::MIN_IOS,
                format!("The protocol's min_ios {min:?} is not a version ({e})."),
                values,
            ));
        }
        Ok(min_v) => min_v,
    };
    // An unknown DEP enrolment counts as not DEP unless the protocol allows unknown facts.
    let dep = s.dep_enrolled == Some(true)
        || (s.dep_enrolled.is_none()
            && ctx.spec.unknown_facts.dep_enrolled == UnknownPolicy::Allow);
    let no_passcode = passcode.value == Some(false);
    if ctx.device.version >= min_v || (dep && no_passcode) {
        return RuleVerdict::Pass;
    }
    let mut why = Vec::new();
    if !dep {
        why.push(match s.dep_enrolled {
            None => format!(
                "its DEP enrolment is unknown ({}; counted as not DEP)",
                s.fact_sources.dep_enrolled
            ),
            _ => "it is not DEP-enrolled".into(),
        });
    }
    match passcode.value {
        Some(true) => why.push("it has a passcode".into()),
        None => why.push("whether it has a passcode is unknown".into()),
        Some(false) => {}
    }
    RuleVerdict::Exclude(reason(
        rule::MIN_IOS,
        format!(
            "iOS {version_str} is below {min}; below it ScheduleOSUpdate works \
             only on DEP-enrolled devices without a passcode, and {}.",
            why.join(" and ")
        ),
        values,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

    fn old_device(passcode: Option<bool>) -> DeviceProbe {
        Dev {
            version: Some("10.2"),
            build: "14C92",
            passcode,
            ..dev()
        }
        .probe()
    }

    #[test]
    fn min_ios_below_needs_dep_and_no_passcode() {
        let o = vec![update("10.3.3", "14G60", 300_000_000, 1_000_000_000)];
        let spec = EligibilitySpec::default();
        let t = TargetSpec::Latest;

        let p = old_device(Some(false));
        let mut s = subject(&p, Some(&o));
        // DEP unknown counts as not DEP.
        let v = assess(&spec, &t, &s);
        let r = only(&v, rule::MIN_IOS);
        assert_eq!(r.values["version"], "10.2");
        assert_eq!(r.values["min_ios"], "10.3");
        assert_eq!(r.values["dep_enrolled"], Value::Null);
        assert!(
            r.message.contains("unknown (not read; counted as not DEP)"),
            "{}",
            r.message
        );
        s.fact_sources.dep_enrolled = "MDM SecurityInfo.ManagementStatus.EnrolledViaDEP: \
            ManagementStatus absent from the MDM answer (iOS 13+); the protocol states none"
            .into();
        let r = only(&assess(&spec, &t, &s), rule::MIN_IOS);
        assert!(
            r.message.ends_with(
                "its DEP enrolment is unknown (MDM SecurityInfo.ManagementStatus.EnrolledViaDEP: \
                 ManagementStatus absent from the MDM answer (iOS 13+); the protocol states \
                 none; counted as not DEP)."
            ),
            "{}",
            r.message
        );

        s.dep_enrolled = Some(false);
        let r = only(&assess(&spec, &t, &s), rule::MIN_IOS);
        assert!(r.message.contains("not DEP-enrolled"), "{}", r.message);

        s.dep_enrolled = Some(true);
        let v = assess(&spec, &t, &s);
        assert!(v.eligible, "{:#?}", v.reasons);

        // DEP but a passcode: excluded.
        let p = old_device(Some(true));
        let mut s = subject(&p, Some(&o));
        s.dep_enrolled = Some(true);
        let r = only(&assess(&spec, &t, &s), rule::MIN_IOS);
        assert_eq!(r.values["passcode"], true);
        assert!(r.message.contains("has a passcode"), "{}", r.message);

        // At the minimum exactly: fine.
        let p = Dev {
            version: Some("10.3"),
            ..dev()
        }
        .probe();
        assert!(assess(&spec, &t, &subject(&p, Some(&o))).eligible);

        // DEP unknown, the protocol allowing unknown facts: counted as DEP (boundary: 10.2
        // without a passcode qualifies, with one it does not).
        let mut lax = EligibilitySpec::default();
        lax.unknown_facts.dep_enrolled = crate::trial::protocol::UnknownPolicy::Allow;
        let p = old_device(Some(false));
        assert!(assess(&lax, &t, &subject(&p, Some(&o))).eligible);
        let p = old_device(Some(true));
        let r = only(&assess(&lax, &t, &subject(&p, Some(&o))), rule::MIN_IOS);
        assert!(
            r.message.ends_with("and it has a passcode."),
            "{}",
            r.message
        );

        // Rule off.
        let p = old_device(Some(true));
        let off = EligibilitySpec {
            min_ios: None,
            ..Default::default()
        };
        assert!(assess(&off, &t, &subject(&p, Some(&o))).eligible);
    }
}
