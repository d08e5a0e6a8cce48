//! Rule `supervised`: ScheduleOSUpdate works only on supervised devices (Apple's schema,
//! `supportedOS.iOS.supervised: true`; briefs mdm.md §1). Lockdown's `DeviceIsChaperoned`
//! first, the MDM's `IsSupervised` second; unknown excludes.

use super::facts::{fact, reason};
use super::{Context, RuleVerdict, rule};
use serde_json::json;

pub fn check(ctx: &Context) -> RuleVerdict {
    if !ctx.spec.supervised {
        return RuleVerdict::Pass;
    }
    let sup = fact(
        &ctx.subject.probe.baseline.supervision.device_is_chaperoned,
        ctx.subject.probe.mdm.as_ref().map(|m| &m.is_supervised),
        |v| Some(*v),
    );
    let values = json!({ "supervised": sup.value, "source": sup.source });
    match sup.value {
        Some(true) => RuleVerdict::Pass,
        Some(false) => RuleVerdict::Exclude(reason(
            rule::SUPERVISED,
            format!(
                "The device is not supervised ({} is false); ScheduleOSUpdate works only on \
                 supervised devices.",
                sup.source
            ),
            values,
        )),
        None => RuleVerdict::Exclude(reason(
            rule::SUPERVISED,
            format!(
                "Whether the device is supervised is unknown ({}); ScheduleOSUpdate works \
                 only on supervised devices, so it is excluded.",
                sup.source
            ),
            values,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

    #[test]
    fn supervised_from_lockdown_then_mdm_and_unknown_excludes() {
        let r = only(
            &run(&Dev {
                chaperoned: Some(false),
                ..dev()
            }),
            rule::SUPERVISED,
        );
        assert_eq!(r.values["supervised"], false);
        assert_eq!(r.values["source"], "lockdown DeviceIsChaperoned");

        // Lockdown silent, MDM says supervised: eligible.
        let mut p = Dev {
            chaperoned: None,
            ..dev()
        }
        .probe();
        let mut f = mdm_facts();
        f.is_supervised = mdm_known("IsSupervised", true);
        p.mdm = Some(f.clone());
        let o = offer();
        let v = assess(
            &EligibilitySpec::default(),
            &TargetSpec::Latest,
            &subject(&p, Some(&o)),
        );
        assert!(v.eligible, "{:#?}", v.reasons);

        // MDM says not supervised.
        f.is_supervised = mdm_known("IsSupervised", false);
        p.mdm = Some(f);
        let v = assess(
            &EligibilitySpec::default(),
            &TargetSpec::Latest,
            &subject(&p, Some(&o)),
        );
        let r = only(&v, rule::SUPERVISED);
        assert_eq!(r.values["source"], "MDM DeviceInformation.IsSupervised");

        // Neither knows: excluded as unknown, both reasons cited.
        let r = only(
            &run(&Dev {
                chaperoned: None,
                ..dev()
            }),
            rule::SUPERVISED,
        );
        assert_eq!(r.values["supervised"], Value::Null);
        assert!(r.message.contains("unknown"), "{}", r.message);
        assert!(r.message.contains("key absent"), "{}", r.message);

        // Rule off.
        let p = Dev {
            chaperoned: Some(false),
            ..dev()
        }
        .probe();
        let spec = EligibilitySpec {
            supervised: false,
            ..Default::default()
        };
        assert!(assess(&spec, &TargetSpec::Latest, &subject(&p, Some(&o))).eligible);
    }
}
