//! Rule `newer_target_in_feed`: with a gdmf feed (`crate::feeds`), the feed must offer the
//! device's model a release newer than the device runs on the trial date.

use super::facts::{Fact, is_newer, reason};
use super::target::{releases_json, releases_phrase};
use super::{Context, RuleVerdict, Subject, rule};
use crate::feeds::gdmf;
use crate::journal::Reason;
use crate::version::DeviceVersion;
use serde_json::json;

pub fn check(ctx: &Context) -> RuleVerdict {
    if !ctx.spec.newer_target_in_feed {
        return RuleVerdict::Pass;
    }
    newer_in_feed(
        ctx.subject,
        &ctx.device,
        &ctx.device_label,
        &ctx.product_type,
    )
    .into()
}

/// `newer_target_in_feed`: does the gdmf feed offer the model anything newer on the trial date?
fn newer_in_feed(
    s: &Subject,
    device: &DeviceVersion,
    device_label: &str,
    product_type: &Fact<String>,
) -> Option<Reason> {
    let feeds = s.feeds?;
    let g = feeds.gdmf.as_ref()?;
    let feed = g.path.display().to_string();
    let date = feeds.date.to_string();
    let Some(pt) = product_type.value.as_deref() else {
        return Some(reason(
            rule::NEWER_TARGET_IN_FEED,
            format!(
                "The device's model is unknown ({}), so whether the gdmf feed offers it a newer                  release cannot be told.",
                product_type.source
            ),
            json!({
                "product_type": null,
                "source": product_type.source,
                "device_version": device_label,
                "trial_date": date,
                "feed": feed,
            }),
        ));
    };
    let offered = gdmf::releases_for(g, pt, feeds.date);
    let newer: Vec<gdmf::Release> = offered
        .iter()
        .filter(|r| r.parsed_version().is_some_and(|v| is_newer(&v, device)))
        .cloned()
        .collect();
    if !newer.is_empty() {
        return None;
    }
    Some(reason(
        rule::NEWER_TARGET_IN_FEED,
        format!(
            "The gdmf feed offers {pt} nothing newer than iOS {device_label} on {date}: it offers              {}.",
            releases_phrase(&offered)
        ),
        json!({
            "product_type": pt,
            "device_version": device_label,
            "trial_date": date,
            "feed": feed,
            "offered_in_feed": releases_json(&offered),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

    #[test]
    fn newer_target_in_feed_excludes_a_model_the_feed_offers_nothing_newer() {
        let spec = EligibilitySpec::default();
        // 2026-08-22: 26.x is offered to iPhone12,1, newer than 17.5.1.
        let f = sample_feeds("2026-08-22", true);
        let v = with_feeds(&dev(), &spec, &TargetSpec::Latest, &offer(), &f);
        assert!(v.eligible, "{:#?}", v.reasons);
        // 2024-01-01: nothing posted yet; the device's own offer does not help.
        let f = sample_feeds("2024-01-01", true);
        let v = with_feeds(&dev(), &spec, &TargetSpec::Latest, &offer(), &f);
        let r = only(&v, rule::NEWER_TARGET_IN_FEED);
        assert_eq!(r.values["product_type"], "iPhone12,1");
        assert_eq!(r.values["trial_date"], "2024-01-01");
        assert!(
            r.message.contains("nothing newer than iOS 17.5.1 (21F90)"),
            "{}",
            r.message
        );
        // 2026-12-01: every entry has expired.
        let f = sample_feeds("2026-12-01", true);
        let v = with_feeds(&dev(), &spec, &TargetSpec::Latest, &offer(), &f);
        only(&v, rule::NEWER_TARGET_IN_FEED);
        // On 26.6.1 only 26.6.1 and older are offered: nothing newer.
        let f = sample_feeds("2026-08-22", true);
        let d = Dev {
            version: Some("26.6.1"),
            build: "23G6083",
            ..dev()
        };
        let o = vec![update("26.7", "23H5", 600_000_000, 1_500_000_000)];
        let v = with_feeds(&d, &spec, &TargetSpec::Latest, &o, &f);
        let r = only(&v, rule::NEWER_TARGET_IN_FEED);
        assert_eq!(r.values["offered_in_feed"][0]["build"], "23G6083");
        // The rule off, or no gdmf feed: no reason.
        let off = EligibilitySpec {
            newer_target_in_feed: false,
            ..EligibilitySpec::default()
        };
        assert!(with_feeds(&d, &off, &TargetSpec::Latest, &o, &f).eligible);
        let f = sample_feeds("2026-08-22", false);
        let v = with_feeds(&d, &spec, &TargetSpec::Latest, &o, &f);
        assert!(v.eligible, "{:#?}", v.reasons);
        // ipsw.me only: 23G6083 is not listed, so restore is unknown, but the key is recorded.
        assert_eq!(v.target_json()["can_restore_to_baseline"], Value::Null);
        assert_eq!(v.target_json()["feed_date"], "2026-08-22");
    }
}
