//! The target a device would be sent, and the rules `newer_target` / `no_target` that judge it
//! (DESIGN.md "Eligibility"; briefs mdm.md §1–2). Resolved once per assessment, before the rules
//! run, because `free_disk` needs the resolved sizes: from the device's own AvailableOSUpdates
//! offer, or for `latest_for_model` from the gdmf feed (`crate::feeds`).

use super::facts::{Fact, is_newer, reason};
use super::{Context, ResolvedTarget, RuleVerdict, Subject, rule};
use crate::feeds::gdmf;
use crate::journal::Reason;
use crate::mdm::report::AvailableUpdate;
use crate::trial::protocol::{EligibilitySpec, TargetSpec};
use crate::version::{DeviceVersion, Version};
use serde_json::{Value, json};

/// The target as resolved for one device, and why it does not qualify (if it does not).
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub target: Option<ResolvedTarget>,
    /// A `newer_target` or `no_target` reason.
    pub reason: Option<Reason>,
    /// `latest_for_model`: every build of the target version the gdmf feed offers the model.
    pub feed_builds: Vec<String>,
}

/// Resolve the protocol's target for a device on `device` (labelled `device_label`, e.g.
/// "17.5.1 (21F90)") of model `product_type`.
pub(super) fn resolve(
    spec: &EligibilitySpec,
    target: &TargetSpec,
    s: &Subject,
    device: &DeviceVersion,
    device_label: &str,
    product_type: &Fact<String>,
) -> Resolution {
    let (target, reason, feed_builds) = if *target == TargetSpec::LatestForModel {
        resolve_from_feed(spec, s, device, device_label, product_type)
    } else {
        let (r, why) = resolve_target(spec, target, s, device, device_label);
        (r, why, Vec::new())
    };
    Resolution {
        target,
        reason,
        feed_builds,
    }
}

/// Rules `newer_target` and `no_target`: the reason the resolution gave, if any.
pub fn check(ctx: &Context) -> RuleVerdict {
    ctx.resolution.reason.clone().into()
}

fn target_label(t: &TargetSpec) -> String {
    match t {
        TargetSpec::ProductVersion(v) => format!("product_version {v}"),
        TargetSpec::ProductKey(k) => format!("product_key {k}"),
        TargetSpec::Latest => "latest".into(),
        TargetSpec::LatestForModel => "latest_for_model".into(),
    }
}

fn offered_json(offered: Option<&[AvailableUpdate]>) -> Value {
    match offered {
        None => Value::Null,
        Some(list) => Value::Array(
            list.iter()
                .map(|u| {
                    json!({
                        "version": u.version,
                        "build": u.build,
                        "product_key": u.product_key,
                        "is_security_response": u.is_security_response,
                    })
                })
                .collect(),
        ),
    }
}

/// What the device offered, for a message: "it offers 17.6.1 (21G93)", "it offers nothing", ….
pub(super) fn offered_phrase(s: &Subject) -> String {
    let err = s.offered_error.as_deref().map(|e| {
        if e.contains("2213") {
            format!("{e} — the iOS 11.3 way of saying no update is available")
        } else {
            e.to_string()
        }
    });
    match (s.offered, err) {
        (Some(list), err) if !list.is_empty() => {
            let items: Vec<String> = list
                .iter()
                .map(|u| {
                    format!(
                        "{} ({})",
                        u.version.as_deref().unwrap_or("?"),
                        u.build
                            .as_deref()
                            .or(u.product_key.as_deref())
                            .unwrap_or("?")
                    )
                })
                .collect();
            let tail = err.map(|e| format!("; {e}")).unwrap_or_default();
            format!("it offers {}{tail}", items.join(", "))
        }
        (Some(_), None) => "it offers no update".into(),
        (_, Some(e)) => format!("it offers no update ({e})"),
        (None, None) => "its AvailableOSUpdates answer is missing".into(),
    }
}

fn from_offer(u: &AvailableUpdate, version: &str) -> ResolvedTarget {
    ResolvedTarget {
        product_key: u.product_key.clone(),
        version: u.version.clone().unwrap_or_else(|| version.to_string()),
        build: u.build.clone(),
        download_size: u.download_size,
        install_size: u.install_size,
    }
}

/// The target resolved against the device's offer, and why it does not qualify (rule on) or
/// cannot be resolved (rule off).
fn resolve_target(
    spec: &EligibilitySpec,
    target: &TargetSpec,
    s: &Subject,
    device: &DeviceVersion,
    device_label: &str,
) -> (Option<ResolvedTarget>, Option<Reason>) {
    // Items naming a version and a product key (both required by Apple's schema).
    let usable: Vec<(&AvailableUpdate, Version)> = s
        .offered
        .unwrap_or(&[])
        .iter()
        .filter(|u| u.product_key.is_some())
        .filter_map(|u| {
            let v = Version::parse(u.version.as_deref()?).ok()?;
            Some((u, v))
        })
        .collect();
    let found: Option<&(&AvailableUpdate, Version)> = match target {
        TargetSpec::ProductVersion(want) => match Version::parse(want) {
            Ok(w) => usable.iter().find(|(_, v)| *v == w),
            Err(_) => None,
        },
        TargetSpec::ProductKey(k) => usable
            .iter()
            .find(|(u, _)| u.product_key.as_deref() == Some(k.as_str())),
        TargetSpec::Latest => usable
            .iter()
            .filter(|(u, _)| u.is_security_response != Some(true))
            .fold(
                None,
                |best: Option<&(&AvailableUpdate, Version)>, x| match best {
                    Some(b) if b.1 >= x.1 => Some(b),
                    _ => Some(x),
                },
            ),
        // Resolved from the feed by `resolve_from_feed`.
        TargetSpec::LatestForModel => None,
    };
    let values = |resolved: Option<&ResolvedTarget>| {
        json!({
            "device_version": device_label,
            "target": target_label(target),
            "resolved": resolved,
            "offered": offered_json(s.offered),
            "offered_error": s.offered_error,
        })
    };
    let resolved = found.map(|(u, v)| from_offer(u, &v.to_string()));
    if !spec.newer_target {
        return match (resolved, target) {
            (Some(r), _) => (Some(r), None),
            (None, TargetSpec::ProductVersion(v)) => (
                Some(ResolvedTarget {
                    product_key: None,
                    version: v.clone(),
                    build: None,
                    download_size: None,
                    install_size: None,
                }),
                None,
            ),
            (None, _) => (
                None,
                Some(reason(
                    rule::NO_TARGET,
                    format!(
                        "No target can be resolved: the protocol asks for {}, but {}, and \
                         without the device's offer neither the command nor the outcome can be \
                         defined.",
                        target_label(target),
                        offered_phrase(s)
                    ),
                    values(None),
                )),
            ),
        };
    }
    match (found, resolved) {
        (Some((_, v)), Some(r)) => {
            if is_newer(v, device) {
                (Some(r), None)
            } else {
                let msg = format!(
                    "The device already runs iOS {device_label}; the target {} is not newer.",
                    r.version
                );
                let vals = values(Some(&r));
                (Some(r), Some(reason(rule::NEWER_TARGET, msg, vals)))
            }
        }
        _ => {
            let msg = match target {
                TargetSpec::ProductVersion(want)
                    if Version::parse(want).is_ok_and(|w| !is_newer(&w, device)) =>
                {
                    format!(
                        "The device already runs iOS {device_label}; the target {want} is not newer."
                    )
                }
                TargetSpec::ProductVersion(want) => format!(
                    "The device does not offer iOS {want}: {}.",
                    offered_phrase(s)
                ),
                TargetSpec::ProductKey(k) => {
                    format!("The device does not offer {k}: {}.", offered_phrase(s))
                }
                TargetSpec::Latest | TargetSpec::LatestForModel => format!(
                    "No update newer than iOS {device_label} is available: {}.",
                    offered_phrase(s)
                ),
            };
            (None, Some(reason(rule::NEWER_TARGET, msg, values(None))))
        }
    }
}

/// Versions and builds, for a message: "26.6.1 (23G83, 23G6083), 26.6 (23G71)".
pub(super) fn releases_phrase(rs: &[gdmf::Release]) -> String {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for r in rs {
        match out.iter_mut().find(|(v, _)| *v == r.version) {
            Some((_, b)) => b.push(r.build.clone()),
            None => out.push((r.version.clone(), vec![r.build.clone()])),
        }
    }
    if out.is_empty() {
        return "nothing".into();
    }
    out.iter()
        .map(|(v, b)| format!("{v} ({})", b.join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn releases_json(rs: &[gdmf::Release]) -> Value {
    Value::Array(
        rs.iter()
            .map(|r| json!({"version": r.version, "build": r.build}))
            .collect(),
    )
}

/// `latest_for_model`: the newest release the gdmf feed offers the device's model on the trial
/// date. The device's own offer of that version (one of the feed's builds) supplies the product
/// key, the build it will install and the sizes; without it the command carries
/// `ProductVersion` and the primary build is recorded, with every feed build in `feed_builds`.
fn resolve_from_feed(
    spec: &EligibilitySpec,
    s: &Subject,
    device: &DeviceVersion,
    device_label: &str,
    product_type: &Fact<String>,
) -> (Option<ResolvedTarget>, Option<Reason>, Vec<String>) {
    let no_target = |why: String, values: Value| {
        (
            None,
            Some(reason(
                rule::NO_TARGET,
                format!("No target can be resolved for latest_for_model: {why}."),
                values,
            )),
            Vec::new(),
        )
    };
    let Some((feeds, g)) = s.feeds.and_then(|f| Some((f, f.gdmf.as_ref()?))) else {
        return no_target(
            "the protocol gives no gdmf feed".into(),
            json!({ "target": "latest_for_model", "feed": null }),
        );
    };
    let feed = g.path.display().to_string();
    let Some(pt) = product_type.value.as_deref() else {
        return no_target(
            format!("the device's model is unknown ({})", product_type.source),
            json!({
                "target": "latest_for_model",
                "product_type": null,
                "source": product_type.source,
                "feed": feed,
            }),
        );
    };
    let latest = gdmf::latest_for(g, pt, feeds.date);
    let builds: Vec<String> = latest.iter().map(|r| r.build.clone()).collect();
    let Some(first) = latest.first() else {
        return no_target(
            format!(
                "the gdmf feed {feed} offers {pt} no iOS release on {}",
                feeds.date
            ),
            json!({
                "target": "latest_for_model",
                "product_type": pt,
                "trial_date": feeds.date.to_string(),
                "feed": feed,
            }),
        );
    };
    let version = first.version.clone();
    let want = Version::parse(&version).ok();
    let offer = s.offered.unwrap_or(&[]).iter().find(|u| {
        u.product_key.is_some()
            && u.version.as_deref().and_then(|v| Version::parse(v).ok()) == want
            && u.build.as_ref().is_none_or(|b| builds.contains(b))
    });
    let resolved = ResolvedTarget {
        product_key: offer.and_then(|u| u.product_key.clone()),
        version: version.clone(),
        build: offer
            .and_then(|u| u.build.clone())
            .or_else(|| builds.first().cloned()),
        download_size: offer.and_then(|u| u.download_size),
        install_size: offer.and_then(|u| u.install_size),
    };
    let newer = want.as_ref().is_some_and(|w| is_newer(w, device));
    let why = (spec.newer_target && !newer).then(|| {
        reason(
            rule::NEWER_TARGET,
            format!(
                "The device already runs iOS {device_label}; the newest release the gdmf feed                  offers {pt} on {} is {}, which is not newer.",
                feeds.date,
                releases_phrase(&latest)
            ),
            json!({
                "device_version": device_label,
                "target": "latest_for_model",
                "product_type": pt,
                "trial_date": feeds.date.to_string(),
                "feed": feed,
                "resolved": resolved,
                "feed_builds": builds,
            }),
        )
    });
    (Some(resolved), why, builds)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

    #[test]
    fn newer_target_resolves_version_key_and_latest() {
        let p = dev().probe();
        let o = vec![
            update("17.6", "21G80", 500, 600),
            update("17.6.1", "21G93", 700, 800),
        ];
        let spec = EligibilitySpec::default();
        let s = subject(&p, Some(&o));
        let v = assess(&spec, &TargetSpec::Latest, &s);
        assert_eq!(v.target.as_ref().unwrap().build.as_deref(), Some("21G93"));
        let v = assess(&spec, &TargetSpec::ProductVersion("17.6".into()), &s);
        assert!(v.eligible);
        assert_eq!(v.target.as_ref().unwrap().download_size, Some(500));
        let v = assess(&spec, &TargetSpec::ProductKey("iOSUpdate21G93".into()), &s);
        assert!(v.eligible);
        assert_eq!(v.target.as_ref().unwrap().version, "17.6.1");

        // Not offered.
        let v = assess(&spec, &TargetSpec::ProductVersion("18.0".into()), &s);
        let r = only(&v, rule::NEWER_TARGET);
        assert_eq!(v.target, None);
        assert_eq!(
            r.message,
            "The device does not offer iOS 18.0: it offers 17.6 (21G80), 17.6.1 (21G93)."
        );
        assert_eq!(r.values["device_version"], "17.5.1 (21F90)");
        assert_eq!(r.values["offered"][1]["build"], "21G93");
        let r = only(
            &assess(&spec, &TargetSpec::ProductKey("iOSUpdate99".into()), &s),
            rule::NEWER_TARGET,
        );
        assert!(r.message.contains("iOSUpdate99"), "{}", r.message);

        // Already on the target (or newer).
        let v = assess(&spec, &TargetSpec::ProductVersion("17.5.1".into()), &s);
        let r = only(&v, rule::NEWER_TARGET);
        assert!(
            r.message.contains("already runs iOS 17.5.1 (21F90)"),
            "{}",
            r.message
        );
        let stale = vec![update("17.5.1", "21F90", 1, 1)];
        let v = assess(&spec, &TargetSpec::Latest, &subject(&p, Some(&stale)));
        let r = only(&v, rule::NEWER_TARGET);
        assert!(r.message.contains("not newer"), "{}", r.message);
        assert_eq!(v.target.unwrap().version, "17.5.1");
    }

    #[test]
    fn newer_target_cites_why_nothing_is_offered() {
        let p = Dev {
            version: Some("11.2.6"),
            ..dev()
        }
        .probe();
        let spec = EligibilitySpec::default();
        let mut s = subject(&p, None);
        s.offered_error =
            Some("AvailableOSUpdates answered Error 2213 (No update available.)".into());
        let r = only(&assess(&spec, &TargetSpec::Latest, &s), rule::NEWER_TARGET);
        assert_eq!(
            r.values["offered_error"],
            "AvailableOSUpdates answered Error 2213 (No update available.)"
        );
        assert!(r.message.contains("Error 2213"), "{}", r.message);
        assert!(
            r.message.contains("no update is available"),
            "{}",
            r.message
        );
        let empty: Vec<AvailableUpdate> = vec![];
        let r = only(
            &assess(&spec, &TargetSpec::Latest, &subject(&p, Some(&empty))),
            rule::NEWER_TARGET,
        );
        assert!(r.message.ends_with("it offers no update."), "{}", r.message);
        // Rapid Security Responses are not "latest".
        let mut rsr = update("11.2.6", "15D100a", 1, 1);
        rsr.is_security_response = Some(true);
        let r = only(
            &assess(&spec, &TargetSpec::Latest, &subject(&p, Some(&[rsr]))),
            rule::NEWER_TARGET,
        );
        assert_eq!(r.values["resolved"], Value::Null);
    }

    #[test]
    fn newer_target_off_resolves_a_version_without_an_offer_or_says_no_target() {
        let p = dev().probe();
        let spec = EligibilitySpec {
            newer_target: false,
            ..Default::default()
        };
        let s = subject(&p, None);
        let v = assess(&spec, &TargetSpec::ProductVersion("17.6.1".into()), &s);
        assert!(v.eligible, "{:#?}", v.reasons);
        assert_eq!(
            v.target,
            Some(ResolvedTarget {
                product_key: None,
                version: "17.6.1".into(),
                build: None,
                download_size: None,
                install_size: None,
            })
        );
        // Even the version it runs (a deliberate "what does it do" experiment).
        assert!(assess(&spec, &TargetSpec::ProductVersion("17.5.1".into()), &s).eligible);
        let v = assess(&spec, &TargetSpec::Latest, &s);
        let r = only(&v, rule::NO_TARGET);
        assert!(r.message.contains("missing"), "{}", r.message);
        assert_eq!(v.target, None);
        only(
            &assess(&spec, &TargetSpec::ProductKey("iOSUpdate21G93".into()), &s),
            rule::NO_TARGET,
        );
    }

    #[test]
    fn latest_for_model_takes_the_newest_feed_release_for_the_model() {
        let f = sample_feeds("2026-08-22", true);
        let v = with_feeds(
            &dev(),
            &EligibilitySpec::default(),
            &TargetSpec::LatestForModel,
            &offer(),
            &f,
        );
        assert!(v.eligible, "{:#?}", v.reasons);
        // The device offers 17.6.1, not 26.6.1: the command carries ProductVersion, the primary
        // build is recorded and both builds count.
        assert_eq!(
            v.target,
            Some(ResolvedTarget {
                product_key: None,
                version: "26.6.1".into(),
                build: Some("23G83".into()),
                download_size: None,
                install_size: None,
            })
        );
        assert_eq!(v.feed_builds, ["23G83", "23G6083"]);
        let j = v.target_json();
        assert_eq!(j["feed_builds"], json!(["23G83", "23G6083"]));
        assert_eq!(j["feed_date"], "2026-08-22");
        // 21F90 is not in the ipsw.me file: unknown.
        assert_eq!(j["can_restore_to_baseline"], Value::Null);
    }

    #[test]
    fn latest_for_model_uses_the_build_the_device_offers() {
        let f = sample_feeds("2026-08-22", true);
        let o = vec![update("26.6.1", "23G6083", 7_000_000_000, 9_000_000_000)];
        let v = with_feeds(
            &Dev {
                amount_free: Some(30 * GB),
                ..dev()
            },
            &EligibilitySpec::default(),
            &TargetSpec::LatestForModel,
            &o,
            &f,
        );
        assert!(v.eligible, "{:#?}", v.reasons);
        let t = v.target.unwrap();
        assert_eq!(t.product_key.as_deref(), Some("iOSUpdate23G6083"));
        assert_eq!(t.build.as_deref(), Some("23G6083"));
        assert_eq!(t.download_size, Some(7_000_000_000));
    }

    #[test]
    fn latest_for_model_on_the_latest_build_is_not_newer_and_can_be_restored() {
        let f = sample_feeds("2026-08-22", true);
        let d = Dev {
            version: Some("26.6.1"),
            build: "23G83",
            ..dev()
        };
        let v = with_feeds(
            &d,
            &EligibilitySpec::default(),
            &TargetSpec::LatestForModel,
            &[],
            &f,
        );
        assert_eq!(
            v.rules(),
            [rule::NEWER_TARGET, rule::NEWER_TARGET_IN_FEED],
            "{:#?}",
            v.reasons
        );
        let r = v.reason(rule::NEWER_TARGET).unwrap();
        assert!(
            r.message.contains("26.6.1 (23G83, 23G6083)"),
            "{}",
            r.message
        );
        assert_eq!(v.target_json()["can_restore_to_baseline"], true);
    }

    #[test]
    fn latest_for_model_without_a_release_or_a_feed_has_no_target() {
        // Before anything was posted.
        let f = sample_feeds("2024-01-01", true);
        let spec = EligibilitySpec::default();
        let v = with_feeds(&dev(), &spec, &TargetSpec::LatestForModel, &offer(), &f);
        assert!(v.rules().contains(&rule::NO_TARGET), "{:#?}", v.reasons);
        assert_eq!(v.target, None);
        assert!(
            v.reason(rule::NO_TARGET)
                .unwrap()
                .message
                .contains("offers iPhone12,1 no iOS release on 2024-01-01")
        );
        // No gdmf feed at all.
        let f = sample_feeds("2026-08-22", false);
        let v = with_feeds(&dev(), &spec, &TargetSpec::LatestForModel, &offer(), &f);
        assert_eq!(v.rules(), [rule::NO_TARGET]);
    }
}
