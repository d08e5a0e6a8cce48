//! Rule `known_bad_version`: iOS versions with known ScheduleOSUpdate bugs. By default the list
//! derived from `data/quirks.yaml` (`crate::known_bad`); a protocol may give its own
//! (`eligibility.known_bad_versions`, `[]` turns the rule off).

use super::facts::reason;
use super::{Context, RuleVerdict, rule};
use crate::known_bad;
use serde_json::json;

pub fn check(ctx: &Context) -> RuleVerdict {
    let version_str = &ctx.version;
    let hit: Option<(String, Vec<String>, String, &str)> = match &ctx.spec.known_bad_versions {
        None => known_bad::find(known_bad::builtin(), version_str).map(|k| {
            (
                k.version.clone(),
                k.quirks.clone(),
                k.source.clone(),
                "data/quirks.yaml",
            )
        }),
        Some(list) => {
            let entries: Vec<known_bad::KnownBad> = list
                .iter()
                .map(|v| known_bad::KnownBad {
                    version: v.clone(),
                    quirks: Vec::new(),
                    source: "protocol eligibility.known_bad_versions".into(),
                })
                .collect();
            known_bad::find(&entries, version_str)
                .map(|k| (k.version.clone(), Vec::new(), k.source.clone(), "protocol"))
        }
    };
    let Some((listed, quirks, source, list)) = hit else {
        return RuleVerdict::Pass;
    };
    RuleVerdict::Exclude(reason(
        rule::KNOWN_BAD_VERSION,
        format!(
            "iOS {version_str} has known ScheduleOSUpdate bugs (listed as {listed}; source: \
             {source})."
        ),
        json!({
            "version": version_str,
            "listed": listed,
            "quirks": quirks,
            "source": source,
            "list": list,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

    #[test]
    fn known_bad_versions_default_to_the_sourced_list() {
        let o = vec![update("12.0", "16A366", 2_000_000_000, 3_000_000_000)];
        let spec = EligibilitySpec::default();
        for (version, listed) in [
            ("11.3", "11.3"),
            ("11.3.0", "11.3"),
            ("11.3.1", "11.3.1"),
            ("11.4", "11.4"),
            ("11.4.1", "11.4.1"),
        ] {
            let p = Dev {
                version: Some(version),
                ..dev()
            }
            .probe();
            let v = assess(&spec, &TargetSpec::Latest, &subject(&p, Some(&o)));
            let r = only(&v, rule::KNOWN_BAD_VERSION);
            assert_eq!(r.values["listed"], listed);
            assert_eq!(r.values["list"], "data/quirks.yaml");
            assert!(r.message.contains("rdar") || r.message.contains("Precaution"));
            assert_eq!(v.target.as_ref().unwrap().version, "12.0");
        }
        let p = Dev {
            version: Some("11.3.1"),
            ..dev()
        }
        .probe();
        let v = assess(&spec, &TargetSpec::Latest, &subject(&p, Some(&o)));
        assert_eq!(
            v.reasons[0].values["quirks"],
            json!([
                "schedule_no_response",
                "available_updates_error_2213",
                "is_downloaded_integer"
            ])
        );
        for ok in ["11.2.6", "11.4.2", "12.0"] {
            let p = Dev {
                version: Some(ok),
                ..dev()
            }
            .probe();
            let o = vec![update("12.1", "16B92", GB, GB)];
            assert!(
                assess(&spec, &TargetSpec::Latest, &subject(&p, Some(&o))).eligible,
                "{ok}"
            );
        }
        // A protocol's own list replaces the default; [] switches the rule off.
        let p = Dev {
            version: Some("11.3"),
            ..dev()
        }
        .probe();
        let own = EligibilitySpec {
            known_bad_versions: Some(vec!["11.2".into(), "11.3.0".into()]),
            ..Default::default()
        };
        let r = only(
            &assess(&own, &TargetSpec::Latest, &subject(&p, Some(&o))),
            rule::KNOWN_BAD_VERSION,
        );
        assert_eq!(r.values["list"], "protocol");
        assert_eq!(r.values["listed"], "11.3.0");
        let off = EligibilitySpec {
            known_bad_versions: Some(vec![]),
            ..Default::default()
        };
        assert!(assess(&off, &TargetSpec::Latest, &subject(&p, Some(&o))).eligible);
    }
}
