//! Rule `battery`: the battery at least `min_percent`, or (when the protocol allows it) the
//! device on external power (briefs field.md §5). Lockdown's `BatteryCurrentCapacity` first,
//! the MDM's `BatteryLevel` second.

use super::facts::{fact, reason, why_missing};
use super::{Context, RuleVerdict, rule};
use serde_json::json;

pub fn check(ctx: &Context) -> RuleVerdict {
    let r = &ctx.spec.battery;
    if !r.enabled {
        return RuleVerdict::Pass;
    }
    let b = &ctx.subject.probe.baseline;
    let level = fact(
        &b.battery.current_capacity,
        ctx.subject.probe.mdm.as_ref().map(|m| &m.battery_level),
        |l: &f64| (*l >= 0.0).then(|| (l * 100.0).round() as u64),
    );
    let external = b.battery.external_connected.get().copied();
    let powered = r.or_external_power && external == Some(true);
    let high = level.value.is_some_and(|l| l >= u64::from(r.min_percent));
    if high || powered {
        return RuleVerdict::Pass;
    }
    let level_text = match level.value {
        Some(l) => format!("The battery is at {l} %, below {} %", r.min_percent),
        None => format!("The battery level is unknown ({})", level.source),
    };
    let power_text = if !r.or_external_power {
        " (external power does not count in this protocol)".to_string()
    } else {
        match external {
            Some(_) => " and the device is not on external power".to_string(),
            None => format!(
                " and whether it is on external power is unknown ({})",
                why_missing(&b.battery.external_connected)
            ),
        }
    };
    RuleVerdict::Exclude(reason(
        rule::BATTERY,
        format!("{level_text}{power_text}."),
        json!({
            "level_percent": level.value,
            "level_source": level.source,
            "min_percent": r.min_percent,
            "external_power": external,
            "or_external_power": r.or_external_power,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

    #[test]
    fn battery_level_or_external_power() {
        let r = only(
            &run(&Dev {
                battery: Some(41),
                external: Some(false),
                ..dev()
            }),
            rule::BATTERY,
        );
        assert_eq!(r.values["level_percent"], 41);
        assert_eq!(r.values["min_percent"], 50);
        assert_eq!(r.values["external_power"], false);
        assert_eq!(
            r.message,
            "The battery is at 41 %, below 50 % and the device is not on external power."
        );
        assert!(
            run(&Dev {
                battery: Some(50),
                external: Some(false),
                ..dev()
            })
            .eligible
        );
        assert!(
            run(&Dev {
                battery: Some(5),
                external: Some(true),
                ..dev()
            })
            .eligible
        );
        // Unknown level, not plugged in: excluded as unknown.
        let r = only(
            &run(&Dev {
                battery: None,
                ..dev()
            }),
            rule::BATTERY,
        );
        assert_eq!(r.values["level_percent"], Value::Null);
        assert!(r.message.contains("unknown"), "{}", r.message);
        // The MDM's BatteryLevel (0–1) fills in.
        let mut p = Dev {
            battery: None,
            ..dev()
        }
        .probe();
        let mut f = mdm_facts();
        f.battery_level = mdm_known("BatteryLevel", 0.42);
        p.mdm = Some(f);
        let o = offer();
        let r = only(
            &assess(
                &EligibilitySpec::default(),
                &TargetSpec::Latest,
                &subject(&p, Some(&o)),
            ),
            rule::BATTERY,
        );
        assert_eq!(r.values["level_percent"], 42);
        assert_eq!(
            r.values["level_source"],
            "MDM DeviceInformation.BatteryLevel"
        );
        // External power not accepted by this protocol.
        let p = Dev {
            battery: Some(20),
            external: Some(true),
            ..dev()
        }
        .probe();
        let strict = EligibilitySpec {
            battery: crate::trial::protocol::BatteryRule {
                enabled: true,
                min_percent: 30,
                or_external_power: false,
            },
            ..Default::default()
        };
        let r = only(
            &assess(&strict, &TargetSpec::Latest, &subject(&p, Some(&o))),
            rule::BATTERY,
        );
        assert_eq!(r.values["min_percent"], 30);
        assert!(r.message.contains("does not count"), "{}", r.message);
    }
}
