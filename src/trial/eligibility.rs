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

use super::journal::Reason;
use super::ledger::LedgerRecord;
use super::protocol::{EligibilitySpec, PasscodeRule, TargetSpec};
use crate::feeds::{TrialFeeds, gdmf};
use crate::known_bad;
use crate::mdm::report::AvailableUpdate;
use crate::probe::field::{Field, Source, Via};
use crate::probe::run::{DeviceProbe, ProbeStatus};
use crate::version::{DeviceVersion, Version};
use chrono::NaiveDate;
use serde::Serialize;
use serde_json::{Value, json};

/// Rule ids, in the order reasons are listed.
pub mod rule {
    pub const PROBE_FAILED: &str = "probe_failed";
    pub const SUPERVISED: &str = "supervised";
    pub const MIN_IOS: &str = "min_ios";
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
}

/// Every rule id [`assess`] can report, in report order.
pub const RULES: [&str; 13] = [
    rule::PROBE_FAILED,
    rule::SUPERVISED,
    rule::MIN_IOS,
    rule::KNOWN_BAD_VERSION,
    rule::NEWER_TARGET,
    rule::NO_TARGET,
    rule::NEWER_TARGET_IN_FEED,
    rule::FREE_DISK,
    rule::BATTERY,
    rule::PASSCODE,
    rule::APP_MANAGEMENT_RIGHT,
    rule::SHARED_IPAD_WITH_USER,
    rule::ALREADY_DOSED,
];

/// `AccessRights` bit "Allow app management" (`AllowAppInstallation`), needed by
/// ScheduleOSUpdate (mdm.md §1).
pub const APP_MANAGEMENT_BIT: u64 = 4096;

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
    /// The enrollment's `AccessRights`, when the MDM reports it.
    pub access_rights: Option<u64>,
    pub shared_ipad_user_logged_in: Option<bool>,
    pub dep_enrolled: Option<bool>,
    /// The protocol's feeds (gdmf, ipsw.me) at the trial date; `None`: the protocol names none.
    pub feeds: Option<&'a TrialFeeds>,
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
    /// The resolved target, also for an excluded device when it could be resolved.
    pub target: Option<ResolvedTarget>,
    /// `latest_for_model`: every build of the target version the gdmf feed offers the model
    /// (two when Apple ships two), primary first; empty otherwise.
    pub feed_builds: Vec<String>,
    /// With feeds: the trial date and whether the device's starting build is still signed
    /// (ipsw.me; `None`: unknown). `None` without feeds.
    pub feed_facts: Option<(NaiveDate, Option<bool>)>,
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
    /// `can_restore_to_baseline` (true/false/null). `null` when no target was resolved.
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
        }
        v
    }
}

fn reason(rule: &str, message: String, values: Value) -> Reason {
    Reason {
        rule: rule.to_string(),
        message,
        values,
    }
}

/// "lockdown DeviceIsChaperoned", "MDM DeviceInformation.IsSupervised".
fn source_name(s: &Source) -> String {
    match (s.via, &s.domain) {
        (Via::Lockdown, _) => format!("lockdown {}", s.key),
        (Via::Mdm, Some(d)) => format!("MDM {d}.{}", s.key),
        (Via::Mdm, None) => format!("MDM {}", s.key),
        (_, _) => s.key.clone(),
    }
}

/// A fact read from lockdown or, failing that, the MDM.
struct Fact<T> {
    value: Option<T>,
    /// Where the value came from, or (unknown) every place looked at, with why it is missing.
    source: String,
}

fn why_missing<T>(f: &Field<T>) -> String {
    format!(
        "{}: {}",
        source_name(&f.source),
        f.error.as_deref().unwrap_or("no value")
    )
}

fn fact<T: Clone, U: Clone>(
    lockdown: &Field<T>,
    mdm: Option<&Field<U>>,
    from_mdm: impl Fn(&U) -> Option<T>,
) -> Fact<T> {
    if let Some(v) = lockdown.get() {
        return Fact {
            value: Some(v.clone()),
            source: source_name(&lockdown.source),
        };
    }
    if let Some(m) = mdm
        && let Some(v) = m.get().and_then(&from_mdm)
    {
        return Fact {
            value: Some(v),
            source: source_name(&m.source),
        };
    }
    let mut why = vec![why_missing(lockdown)];
    match mdm {
        Some(m) => why.push(why_missing(m)),
        None => why.push("no MDM answer".into()),
    }
    Fact {
        value: None,
        source: why.join("; "),
    }
}

fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

/// Is `target` newer than what the device runs? A release is newer than its own beta.
fn is_newer(target: &Version, device: &DeviceVersion) -> bool {
    *target > device.version || (*target == device.version && device.beta)
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
fn offered_phrase(s: &Subject) -> String {
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
fn releases_phrase(rs: &[gdmf::Release]) -> String {
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

fn releases_json(rs: &[gdmf::Release]) -> Value {
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

/// Assess one device against the protocol's eligibility rules and target. Pure.
pub fn assess(spec: &EligibilitySpec, target: &TargetSpec, s: &Subject) -> Verdict {
    let p = s.probe;
    let b = &p.baseline;
    let m = p.mdm.as_ref();
    let mut reasons = Vec::new();

    let already_dosed =
        (spec.not_already_dosed && !s.dosed_by_other_protocols.is_empty()).then(|| {
            let doses: Vec<Value> = s
                .dosed_by_other_protocols
                .iter()
                .map(|r| {
                    json!({
                        "trial_id": r.trial_id,
                        "command_uuid": r.command_uuid,
                        "protocol_sha256": r.protocol_sha256,
                        "kind": r.kind,
                        "step": r.step,
                        "starting_build": r.starting_build,
                        "run_dir": r.run_dir,
                        "at": r.at,
                    })
                })
                .collect();
            let cited: Vec<String> = s
                .dosed_by_other_protocols
                .iter()
                .map(|r| {
                    if r.protocol_sha256.is_empty() {
                        // Evidence only the MDM's records hold (`trial::dose_guard`).
                        format!(
                            "the MDM's records (CommandUUID {}, queued {}, by a run the ledger does not know)",
                            r.command_uuid, r.at
                        )
                    } else {
                        format!(
                            "trial {} (run {}, CommandUUID {}, {})",
                            r.trial_id, r.run_dir, r.command_uuid, r.at
                        )
                    }
                })
                .collect();
            reason(
                rule::ALREADY_DOSED,
                format!(
                    "Another run already sent this device an update command at build {}: {}.",
                    s.dosed_by_other_protocols[0].starting_build,
                    cited.join(", ")
                ),
                json!({ "doses": doses }),
            )
        });

    // --- probe_failed ---------------------------------------------------------------------
    let version_fact = fact(&b.product_version, m.map(|m| &m.os_version), |v| {
        Some(v.clone())
    });
    let parsed = version_fact
        .value
        .as_deref()
        .map(|v| DeviceVersion::parse(v).map(|d| (v.to_string(), d)));
    let failed = if p.status == ProbeStatus::Failed {
        let f = p.failure.as_ref();
        Some(reason(
            rule::PROBE_FAILED,
            format!(
                "The device could not be probed ({}), so there is no baseline to judge it by.",
                f.map(|f| format!("{}: {}", f.stage, f.message))
                    .unwrap_or_else(|| "no detail".into())
            ),
            json!({
                "status": p.status,
                "stage": f.map(|f| &f.stage),
                "kind": f.map(|f| f.kind),
                "error": f.map(|f| &f.message),
            }),
        ))
    } else {
        match &parsed {
            None => Some(reason(
                rule::PROBE_FAILED,
                format!(
                    "The device's iOS version could not be read ({}), so there is no usable \
                     baseline.",
                    version_fact.source
                ),
                json!({ "status": p.status, "version": null }),
            )),
            Some(Err(e)) => Some(reason(
                rule::PROBE_FAILED,
                format!(
                    "The device reported iOS version {:?} ({}), which is not a version ({e}).",
                    version_fact.value.as_deref().unwrap_or(""),
                    version_fact.source
                ),
                json!({ "status": p.status, "version": version_fact.value }),
            )),
            Some(Ok(_)) => None,
        }
    };
    let (version_str, device) = match (failed, parsed) {
        (None, Some(Ok(v))) => v,
        (f, _) => {
            reasons.extend(f);
            reasons.extend(already_dosed);
            return Verdict {
                eligible: false,
                reasons,
                target: None,
                feed_builds: Vec::new(),
                feed_facts: None,
            };
        }
    };
    let build = b
        .build_version
        .get()
        .or_else(|| m.and_then(|m| m.build_version.get()))
        .cloned();
    let device_label = match &build {
        Some(bv) => format!("{version_str} ({bv})"),
        None => version_str.clone(),
    };
    let passcode = fact(
        &b.passcode.password_protected,
        m.map(|m| &m.passcode_present),
        |v| Some(*v),
    );

    // --- supervised -------------------------------------------------------------------------
    if spec.supervised {
        let sup = fact(
            &b.supervision.device_is_chaperoned,
            m.map(|m| &m.is_supervised),
            |v| Some(*v),
        );
        let values = json!({ "supervised": sup.value, "source": sup.source });
        match sup.value {
            Some(true) => {}
            Some(false) => reasons.push(reason(
                rule::SUPERVISED,
                format!(
                    "The device is not supervised ({} is false); ScheduleOSUpdate works only on \
                     supervised devices.",
                    sup.source
                ),
                values,
            )),
            None => reasons.push(reason(
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

    // --- min_ios ----------------------------------------------------------------------------
    if let Some(min) = &spec.min_ios {
        let values = json!({
            "version": version_str,
            "min_ios": min,
            "dep_enrolled": s.dep_enrolled,
            "passcode": passcode.value,
        });
        match Version::parse(min) {
            Err(e) => reasons.push(reason(
                rule::MIN_IOS,
                format!("The protocol's min_ios {min:?} is not a version ({e})."),
                values,
            )),
            Ok(min_v) if device.version < min_v => {
                let dep = s.dep_enrolled == Some(true);
                let no_passcode = passcode.value == Some(false);
                if !(dep && no_passcode) {
                    let mut why = Vec::new();
                    if !dep {
                        why.push(match s.dep_enrolled {
                            None => "its DEP enrolment is unknown (counted as not DEP)",
                            _ => "it is not DEP-enrolled",
                        });
                    }
                    match passcode.value {
                        Some(true) => why.push("it has a passcode"),
                        None => why.push("whether it has a passcode is unknown"),
                        Some(false) => {}
                    }
                    reasons.push(reason(
                        rule::MIN_IOS,
                        format!(
                            "iOS {version_str} is below {min}; below it ScheduleOSUpdate works \
                             only on DEP-enrolled devices without a passcode, and {}.",
                            why.join(" and ")
                        ),
                        values,
                    ));
                }
            }
            Ok(_) => {}
        }
    }

    // --- known_bad_version ------------------------------------------------------------------
    let hit: Option<(String, Vec<String>, String, &str)> = match &spec.known_bad_versions {
        None => known_bad::find(known_bad::builtin(), &version_str).map(|k| {
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
            known_bad::find(&entries, &version_str)
                .map(|k| (k.version.clone(), Vec::new(), k.source.clone(), "protocol"))
        }
    };
    if let Some((listed, quirks, source, list)) = hit {
        reasons.push(reason(
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
        ));
    }

    // --- newer_target / no_target / newer_target_in_feed --------------------------------------
    let product_type = fact(&b.product_type, m.map(|m| &m.product_name), |v| {
        Some(v.clone())
    });
    let (resolved, target_reason, feed_builds) = if *target == TargetSpec::LatestForModel {
        resolve_from_feed(spec, s, &device, &device_label, &product_type)
    } else {
        let (r, why) = resolve_target(spec, target, s, &device, &device_label);
        (r, why, Vec::new())
    };
    reasons.extend(target_reason);
    if spec.newer_target_in_feed {
        reasons.extend(newer_in_feed(s, &device, &device_label, &product_type));
    }
    let feed_facts = s.feeds.map(|f| {
        let restore = match (product_type.value.as_deref(), build.as_deref()) {
            (Some(pt), Some(bv)) => f.can_restore(pt, bv),
            _ => None,
        };
        (f.date, restore)
    });

    // --- free_disk --------------------------------------------------------------------------
    if spec.free_disk.enabled {
        let disk = &b.disk;
        let mdm_free = m.map(|m| &m.available_device_capacity_gb);
        let (free, metric) = if let Some(v) = disk.amount_data_available.get() {
            (Some(*v), source_name(&disk.amount_data_available.source))
        } else if let Some(v) = disk.total_data_available.get() {
            (Some(*v), source_name(&disk.total_data_available.source))
        } else if let Some(f) = mdm_free
            && let Some(g) = f.get().filter(|g| **g >= 0.0)
        {
            (
                Some((g * 1e9).round() as u64),
                format!("{} (GB × 10^9)", source_name(&f.source)),
            )
        } else {
            let mut why = vec![
                why_missing(&disk.amount_data_available),
                why_missing(&disk.total_data_available),
            ];
            why.push(mdm_free.map(why_missing).unwrap_or("no MDM answer".into()));
            (None, why.join("; "))
        };
        let sizes = resolved
            .as_ref()
            .and_then(|t| Some((t.download_size?, t.install_size?)));
        let (needed, needed_from) = match sizes {
            Some((d, i)) => (d.saturating_add(i), "DownloadSize + InstallSize"),
            None => (spec.free_disk.fallback_min.0, "fallback_min"),
        };
        let values = json!({
            "free_bytes": free,
            "free_metric": metric,
            "needed_bytes": needed,
            "needed_from": needed_from,
            "download_size": resolved.as_ref().and_then(|t| t.download_size),
            "install_size": resolved.as_ref().and_then(|t| t.install_size),
        });
        let needed_text = match sizes {
            Some((d, i)) => format!(
                "the update needs {} (DownloadSize {} + InstallSize {})",
                gb(needed),
                gb(d),
                gb(i)
            ),
            None => format!(
                "the protocol's fallback_min is {} (the device's offer gives no sizes)",
                gb(needed)
            ),
        };
        match free {
            Some(f) if f >= needed => {}
            Some(f) => reasons.push(reason(
                rule::FREE_DISK,
                format!("Only {} free ({metric}), but {needed_text}.", gb(f)),
                values,
            )),
            None => reasons.push(reason(
                rule::FREE_DISK,
                format!("Free space is unknown ({metric}), and {needed_text}."),
                values,
            )),
        }
    }

    // --- battery ----------------------------------------------------------------------------
    if spec.battery.enabled {
        let r = &spec.battery;
        let level = fact(
            &b.battery.current_capacity,
            m.map(|m| &m.battery_level),
            |l: &f64| (*l >= 0.0).then(|| (l * 100.0).round() as u64),
        );
        let external = b.battery.external_connected.get().copied();
        let powered = r.or_external_power && external == Some(true);
        let high = level.value.is_some_and(|l| l >= u64::from(r.min_percent));
        if !(high || powered) {
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
            reasons.push(reason(
                rule::BATTERY,
                format!("{level_text}{power_text}."),
                json!({
                    "level_percent": level.value,
                    "level_source": level.source,
                    "min_percent": r.min_percent,
                    "external_power": external,
                    "or_external_power": r.or_external_power,
                }),
            ));
        }
    }

    // --- passcode ---------------------------------------------------------------------------
    if spec.passcode != PasscodeRule::Any {
        let want = spec.passcode == PasscodeRule::Required;
        if passcode.value != Some(want) {
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
            reasons.push(reason(
                rule::PASSCODE,
                format!("The protocol {what}, and {has}."),
                json!({
                    "passcode": passcode.value,
                    "required": if want { "required" } else { "absent" },
                    "source": passcode.source,
                }),
            ));
        }
    }

    // --- app_management_right ---------------------------------------------------------------
    if spec.app_management_right
        && let Some(rights) = s.access_rights
        && rights & APP_MANAGEMENT_BIT == 0
    {
        reasons.push(reason(
            rule::APP_MANAGEMENT_RIGHT,
            format!(
                "The MDM enrollment's AccessRights ({rights}) lack \"Allow app management\" \
                 (bit {APP_MANAGEMENT_BIT}), which ScheduleOSUpdate needs."
            ),
            json!({ "access_rights": rights, "needed_bit": APP_MANAGEMENT_BIT }),
        ));
    }

    // --- shared_ipad_with_user --------------------------------------------------------------
    if spec.exclude_shared_ipad_with_user && s.shared_ipad_user_logged_in == Some(true) {
        reasons.push(reason(
            rule::SHARED_IPAD_WITH_USER,
            "The device is a Shared iPad with a user logged in; the update would interrupt \
             that user's session."
                .into(),
            json!({ "shared_ipad_user_logged_in": true }),
        ));
    }

    // --- already_dosed ----------------------------------------------------------------------
    reasons.extend(already_dosed);

    Verdict {
        eligible: reasons.is_empty(),
        reasons,
        target: resolved,
        feed_builds,
        feed_facts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::baseline::Baseline;
    use crate::probe::mdm_side::MdmFacts;
    use crate::probe::run::{Failure, FailureKind};
    use crate::trial::ledger::LedgerKind;
    use crate::units::Bytes;
    use crate::usbmux::DeviceEntry;
    use plist::{Dictionary, Value as P};

    /// A device as lockdown describes it; `None` = the key is absent from the reply.
    #[derive(Clone)]
    struct Dev {
        version: Option<&'static str>,
        build: &'static str,
        chaperoned: Option<bool>,
        passcode: Option<bool>,
        battery: Option<u64>,
        external: Option<bool>,
        amount_free: Option<u64>,
        total_free: Option<u64>,
        status: ProbeStatus,
    }

    const GB: u64 = 1_000_000_000;

    fn dev() -> Dev {
        Dev {
            version: Some("17.5.1"),
            build: "21F90",
            chaperoned: Some(true),
            passcode: Some(false),
            battery: Some(87),
            external: Some(false),
            amount_free: Some(20 * GB),
            total_free: Some(20 * GB),
            status: ProbeStatus::Ok,
        }
    }

    fn put(d: &mut Dictionary, k: &str, v: Option<P>) {
        if let Some(v) = v {
            d.insert(k.into(), v);
        }
    }

    impl Dev {
        fn probe(&self) -> DeviceProbe {
            let mut g = Dictionary::new();
            g.insert("ProductType".into(), "iPhone12,1".into());
            put(&mut g, "ProductVersion", self.version.map(P::from));
            g.insert("BuildVersion".into(), self.build.into());
            put(&mut g, "PasswordProtected", self.passcode.map(P::Boolean));
            let mut disk = Dictionary::new();
            put(
                &mut disk,
                "AmountDataAvailable",
                self.amount_free.map(|v| P::Integer(v.into())),
            );
            put(
                &mut disk,
                "TotalDataAvailable",
                self.total_free.map(|v| P::Integer(v.into())),
            );
            let mut bat = Dictionary::new();
            put(
                &mut bat,
                "BatteryCurrentCapacity",
                self.battery.map(|v| P::Integer(v.into())),
            );
            put(&mut bat, "ExternalConnected", self.external.map(P::Boolean));
            let mut ch = Dictionary::new();
            put(
                &mut ch,
                "DeviceIsChaperoned",
                self.chaperoned.map(P::Boolean),
            );
            let entry = DeviceEntry {
                device_id: 1,
                serial_number: "UDID-1".into(),
                product_id: Some(0x12a8),
                location_id: None,
                connection_type: "USB".into(),
                connection_speed: None,
            };
            let baseline =
                Baseline::from_replies("sim", &entry, &Ok(g), &Ok(disk), &Ok(bat), &Ok(ch), None);
            DeviceProbe {
                host: "sim".into(),
                device_id: 1,
                udid: "UDID-1".into(),
                status: self.status,
                failure: (self.status == ProbeStatus::Failed).then(|| Failure {
                    stage: "connect".into(),
                    kind: FailureKind::Unreachable,
                    message: "connection refused".into(),
                    raw_base64: None,
                }),
                elapsed_ms: 1,
                baseline,
                mdm: None,
                disagreements: Vec::new(),
                device_time: None,
            }
        }
    }

    fn mdm_missing<T>(key: &str) -> Field<T> {
        Field::missing(mdm_src(key), "DeviceInformation answered NotNow")
    }
    fn mdm_src(key: &str) -> Source {
        Source {
            via: Via::Mdm,
            domain: Some("DeviceInformation".into()),
            key: key.into(),
        }
    }
    fn mdm_known<T: Serialize + Clone>(key: &str, v: T) -> Field<T> {
        Field::known(mdm_src(key), v.clone(), json!(v))
    }

    /// MDM facts with every field missing.
    fn mdm_facts() -> MdmFacts {
        MdmFacts {
            os_version: mdm_missing("OSVersion"),
            build_version: mdm_missing("BuildVersion"),
            product_name: mdm_missing("ProductName"),
            model_name: mdm_missing("ModelName"),
            device_capacity_gb: mdm_missing("DeviceCapacity"),
            available_device_capacity_gb: mdm_missing("AvailableDeviceCapacity"),
            battery_level: mdm_missing("BatteryLevel"),
            is_supervised: mdm_missing("IsSupervised"),
            cellular_technology: mdm_missing("CellularTechnology"),
            wifi_mac: mdm_missing("WiFiMAC"),
            is_roaming: mdm_missing("IsRoaming"),
            passcode_present: mdm_missing("PasscodePresent"),
            passcode_compliant: mdm_missing("PasscodeCompliant"),
            service_subscriptions: None,
            commands: vec!["uuid-di".into()],
        }
    }

    fn update(version: &str, build: &str, dl: u64, inst: u64) -> AvailableUpdate {
        AvailableUpdate {
            product_key: Some(format!("iOSUpdate{build}")),
            human_readable_name: Some(format!("iOS {version}")),
            product_name: Some("iOS".into()),
            version: Some(version.into()),
            build: Some(build.into()),
            download_size: Some(dl),
            install_size: Some(inst),
            is_critical: Some(false),
            restart_required: Some(true),
            allows_install_later: Some(false),
            is_security_response: None,
        }
    }

    fn offer() -> Vec<AvailableUpdate> {
        vec![update("17.6.1", "21G93", 600_000_000, 1_500_000_000)]
    }

    fn subject<'a>(p: &'a DeviceProbe, offered: Option<&'a [AvailableUpdate]>) -> Subject<'a> {
        Subject {
            probe: p,
            offered,
            offered_error: None,
            dosed_by_other_protocols: Vec::new(),
            access_rights: None,
            shared_ipad_user_logged_in: None,
            dep_enrolled: None,
            feeds: None,
        }
    }

    fn run(d: &Dev) -> Verdict {
        let p = d.probe();
        let o = offer();
        assess(
            &EligibilitySpec::default(),
            &TargetSpec::Latest,
            &subject(&p, Some(&o)),
        )
    }

    fn only(v: &Verdict, rule: &str) -> Reason {
        assert_eq!(v.rules(), [rule], "{:#?}", v.reasons);
        assert!(!v.eligible);
        v.reasons[0].clone()
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
    fn probe_failed_reports_the_failure_and_nothing_it_cannot_judge() {
        let v = run(&Dev {
            status: ProbeStatus::Failed,
            ..dev()
        });
        let r = only(&v, rule::PROBE_FAILED);
        assert_eq!(r.values["stage"], "connect");
        assert_eq!(r.values["error"], "connection refused");
        assert!(r.message.contains("connection refused"), "{}", r.message);
        assert_eq!(v.target, None);

        // No version anywhere: also no usable baseline.
        let r = only(
            &run(&Dev {
                version: None,
                ..dev()
            }),
            rule::PROBE_FAILED,
        );
        assert!(r.message.contains("ProductVersion"), "{}", r.message);
        assert!(r.message.contains("MDM"), "{}", r.message);

        // A version that is not one.
        let r = only(
            &run(&Dev {
                version: Some("seventeen"),
                ..dev()
            }),
            rule::PROBE_FAILED,
        );
        assert_eq!(r.values["version"], "seventeen");
    }

    #[test]
    fn probe_failed_still_reports_an_earlier_dose() {
        let p = Dev {
            status: ProbeStatus::Failed,
            ..dev()
        }
        .probe();
        let mut s = subject(&p, None);
        s.dosed_by_other_protocols = vec![dose()];
        let v = assess(&EligibilitySpec::default(), &TargetSpec::Latest, &s);
        assert_eq!(v.rules(), [rule::PROBE_FAILED, rule::ALREADY_DOSED]);
    }

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
            r.message.contains("unknown (counted as not DEP)"),
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

        // Rule off.
        let p = old_device(Some(true));
        let off = EligibilitySpec {
            min_ios: None,
            ..Default::default()
        };
        assert!(assess(&off, &t, &subject(&p, Some(&o))).eligible);
    }

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

    #[test]
    fn free_disk_uses_the_offered_sizes_and_names_the_metric() {
        // 2.0 GB free, needs 0.6 + 1.5 = 2.1 GB.
        let r = only(
            &run(&Dev {
                amount_free: Some(2 * GB),
                ..dev()
            }),
            rule::FREE_DISK,
        );
        assert_eq!(r.values["free_bytes"], 2 * GB);
        assert_eq!(r.values["needed_bytes"], 2_100_000_000u64);
        assert_eq!(r.values["download_size"], 600_000_000u64);
        assert_eq!(r.values["install_size"], 1_500_000_000u64);
        assert_eq!(r.values["needed_from"], "DownloadSize + InstallSize");
        assert_eq!(r.values["free_metric"], "lockdown AmountDataAvailable");
        assert_eq!(
            r.message,
            "Only 2.00 GB free (lockdown AmountDataAvailable), but the update needs 2.10 GB \
             (DownloadSize 0.60 GB + InstallSize 1.50 GB)."
        );
        // Exactly enough passes.
        assert!(
            run(&Dev {
                amount_free: Some(2_100_000_000),
                ..dev()
            })
            .eligible
        );
        // AmountDataAvailable missing: TotalDataAvailable is used, and said so.
        let r = only(
            &run(&Dev {
                amount_free: None,
                total_free: Some(GB),
                ..dev()
            }),
            rule::FREE_DISK,
        );
        assert_eq!(r.values["free_metric"], "lockdown TotalDataAvailable");
        assert_eq!(r.values["free_bytes"], GB);
        // No sizes in the offer: fallback_min.
        let p = Dev {
            amount_free: Some(5 * GB),
            ..dev()
        }
        .probe();
        let mut o = offer();
        o[0].download_size = None;
        let v = assess(
            &EligibilitySpec::default(),
            &TargetSpec::Latest,
            &subject(&p, Some(&o)),
        );
        let r = only(&v, rule::FREE_DISK);
        assert_eq!(r.values["needed_from"], "fallback_min");
        assert_eq!(r.values["needed_bytes"], 6 * GB);
        assert!(
            r.message.contains("fallback_min is 6.00 GB"),
            "{}",
            r.message
        );
        let lower = EligibilitySpec {
            free_disk: crate::trial::protocol::FreeDiskRule {
                enabled: true,
                fallback_min: Bytes(4 * GB),
            },
            ..Default::default()
        };
        assert!(assess(&lower, &TargetSpec::Latest, &subject(&p, Some(&o))).eligible);
        // Nothing known: excluded as unknown; the MDM's capacity is the last resort.
        let mut p = Dev {
            amount_free: None,
            total_free: None,
            ..dev()
        }
        .probe();
        let o = offer();
        let r = only(
            &assess(
                &EligibilitySpec::default(),
                &TargetSpec::Latest,
                &subject(&p, Some(&o)),
            ),
            rule::FREE_DISK,
        );
        assert_eq!(r.values["free_bytes"], Value::Null);
        assert!(
            r.message.starts_with("Free space is unknown"),
            "{}",
            r.message
        );
        let mut f = mdm_facts();
        f.available_device_capacity_gb = mdm_known("AvailableDeviceCapacity", 1.25);
        p.mdm = Some(f);
        let r = only(
            &assess(
                &EligibilitySpec::default(),
                &TargetSpec::Latest,
                &subject(&p, Some(&o)),
            ),
            rule::FREE_DISK,
        );
        assert_eq!(r.values["free_bytes"], 1_250_000_000u64);
        // Rule off.
        let p = Dev {
            amount_free: Some(0),
            ..dev()
        }
        .probe();
        let off = EligibilitySpec {
            free_disk: crate::trial::protocol::FreeDiskRule {
                enabled: false,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(assess(&off, &TargetSpec::Latest, &subject(&p, Some(&o))).eligible);
    }

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

    fn dose() -> LedgerRecord {
        LedgerRecord {
            udid: "UDID-1".into(),
            starting_build: "21F90".into(),
            kind: LedgerKind::Intent,
            command_uuid: "5A1C-DOSE".into(),
            step: 1,
            trial_id: "other-trial".into(),
            protocol_sha256: "ab".repeat(32),
            run_dir: "results/other-trial".into(),
            at: "2026-11-27T22:30:00Z".into(),
        }
    }

    #[test]
    fn already_dosed_cites_the_trial_and_command() {
        let p = dev().probe();
        let o = offer();
        let mut s = subject(&p, Some(&o));
        s.dosed_by_other_protocols = vec![dose()];
        let r = only(
            &assess(&EligibilitySpec::default(), &TargetSpec::Latest, &s),
            rule::ALREADY_DOSED,
        );
        assert_eq!(
            r.message,
            "Another run already sent this device an update command at build 21F90: trial \
             other-trial (run results/other-trial, CommandUUID 5A1C-DOSE, 2026-11-27T22:30:00Z)."
        );
        assert_eq!(r.values["doses"][0]["trial_id"], "other-trial");
        assert_eq!(r.values["doses"][0]["command_uuid"], "5A1C-DOSE");
        assert_eq!(r.values["doses"][0]["kind"], "intent");
        let off = EligibilitySpec {
            not_already_dosed: false,
            ..Default::default()
        };
        assert!(assess(&off, &TargetSpec::Latest, &s).eligible);
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

    // --- feeds: latest_for_model, newer_target_in_feed, can_restore_to_baseline -------------

    fn sample_feeds(date: &str, with_gdmf: bool) -> TrialFeeds {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("trials/feeds");
        TrialFeeds {
            gdmf: with_gdmf.then(|| gdmf::load(&root.join("gdmf-pmv.json")).unwrap()),
            ipsw: vec![crate::feeds::ipsw::load(&root.join("ipsw-iPhone12,1.json")).unwrap()],
            date: date.parse().unwrap(),
        }
    }

    fn with_feeds(
        d: &Dev,
        spec: &EligibilitySpec,
        target: &TargetSpec,
        offered: &[AvailableUpdate],
        feeds: &TrialFeeds,
    ) -> Verdict {
        let p = d.probe();
        let s = Subject {
            feeds: Some(feeds),
            ..subject(&p, Some(offered))
        };
        assess(spec, target, &s)
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

    #[test]
    fn without_feeds_the_target_json_is_the_resolved_target() {
        let v = run(&dev());
        let j = v.target_json();
        assert_eq!(j, serde_json::to_value(v.target.as_ref().unwrap()).unwrap());
        assert!(j.get("can_restore_to_baseline").is_none());
    }

    // --- the reasons, byte for byte ----------------------------------------------------------

    /// Every verdict of a grid of devices, protocols, targets, offers and feeds, one JSON line
    /// each: `(case, eligible, reasons, target_json)`. Devices below iOS 26 only (the version
    /// rules of the old command change verdicts from 26.0 on, by design).
    fn grid_dump() -> String {
        let mut devs: Vec<(&str, Dev)> = vec![
            ("healthy", dev()),
            (
                "failed",
                Dev {
                    status: ProbeStatus::Failed,
                    ..dev()
                },
            ),
            (
                "no_version",
                Dev {
                    version: None,
                    ..dev()
                },
            ),
            (
                "bad_version",
                Dev {
                    version: Some("seventeen"),
                    ..dev()
                },
            ),
            (
                "unsupervised",
                Dev {
                    chaperoned: Some(false),
                    ..dev()
                },
            ),
            (
                "supervision_unknown",
                Dev {
                    chaperoned: None,
                    ..dev()
                },
            ),
            (
                "old_passcode",
                Dev {
                    version: Some("10.2"),
                    build: "14C92",
                    passcode: Some(true),
                    ..dev()
                },
            ),
            (
                "old_no_passcode",
                Dev {
                    version: Some("10.2"),
                    build: "14C92",
                    passcode: Some(false),
                    ..dev()
                },
            ),
            (
                "old_passcode_unknown",
                Dev {
                    version: Some("10.2"),
                    build: "14C92",
                    passcode: None,
                    ..dev()
                },
            ),
            (
                "known_bad",
                Dev {
                    version: Some("11.3"),
                    build: "15E216",
                    ..dev()
                },
            ),
            (
                "v16",
                Dev {
                    version: Some("16.7.8"),
                    build: "20H343",
                    ..dev()
                },
            ),
            (
                "low_battery",
                Dev {
                    battery: Some(10),
                    external: Some(false),
                    ..dev()
                },
            ),
            (
                "battery_unknown",
                Dev {
                    battery: None,
                    external: None,
                    ..dev()
                },
            ),
            (
                "low_battery_powered",
                Dev {
                    battery: Some(10),
                    external: Some(true),
                    ..dev()
                },
            ),
            (
                "total_free_only",
                Dev {
                    amount_free: None,
                    total_free: Some(GB),
                    ..dev()
                },
            ),
            (
                "free_unknown",
                Dev {
                    amount_free: None,
                    total_free: None,
                    ..dev()
                },
            ),
            (
                "passcode_unknown",
                Dev {
                    passcode: None,
                    ..dev()
                },
            ),
            (
                "passcode_on",
                Dev {
                    passcode: Some(true),
                    ..dev()
                },
            ),
            (
                "on_latest",
                Dev {
                    version: Some("17.6.1"),
                    build: "21G93",
                    ..dev()
                },
            ),
            (
                "beta",
                Dev {
                    version: Some("17.6.1"),
                    build: "21G5073b",
                    ..dev()
                },
            ),
        ];
        devs.push((
            "everything_wrong",
            Dev {
                version: Some("11.3"),
                build: "15E216",
                chaperoned: Some(false),
                passcode: Some(true),
                battery: Some(10),
                external: Some(false),
                amount_free: Some(GB),
                ..dev()
            },
        ));
        let specs: Vec<(&str, EligibilitySpec)> = vec![
            ("default", EligibilitySpec::default()),
            (
                "passcode_required",
                EligibilitySpec {
                    passcode: PasscodeRule::Required,
                    ..Default::default()
                },
            ),
            (
                "passcode_absent_any_target",
                EligibilitySpec {
                    passcode: PasscodeRule::Absent,
                    newer_target: false,
                    ..Default::default()
                },
            ),
            (
                "protocol_known_bad",
                EligibilitySpec {
                    known_bad_versions: Some(vec!["17.5.1".into(), "11.3".into()]),
                    ..Default::default()
                },
            ),
            (
                "min_ios_high",
                EligibilitySpec {
                    min_ios: Some("17.6".into()),
                    ..Default::default()
                },
            ),
            (
                "battery_strict",
                EligibilitySpec {
                    battery: crate::trial::protocol::BatteryRule {
                        enabled: true,
                        min_percent: 90,
                        or_external_power: false,
                    },
                    ..Default::default()
                },
            ),
            (
                "fallback_big",
                EligibilitySpec {
                    free_disk: crate::trial::protocol::FreeDiskRule {
                        enabled: true,
                        fallback_min: Bytes(50 * GB),
                    },
                    ..Default::default()
                },
            ),
            (
                "all_off",
                EligibilitySpec {
                    supervised: false,
                    min_ios: None,
                    known_bad_versions: Some(vec![]),
                    free_disk: crate::trial::protocol::FreeDiskRule {
                        enabled: false,
                        fallback_min: Bytes(0),
                    },
                    battery: crate::trial::protocol::BatteryRule {
                        enabled: false,
                        min_percent: 0,
                        or_external_power: false,
                    },
                    passcode: PasscodeRule::Any,
                    newer_target: false,
                    app_management_right: false,
                    exclude_shared_ipad_with_user: false,
                    not_already_dosed: false,
                    newer_target_in_feed: false,
                },
            ),
        ];
        let targets = [
            TargetSpec::Latest,
            TargetSpec::ProductVersion("17.6.1".into()),
            TargetSpec::ProductVersion("17.5".into()),
            TargetSpec::ProductVersion("18.0".into()),
            TargetSpec::ProductKey("iOSUpdate21G93".into()),
            TargetSpec::ProductKey("iOSUpdateNOPE".into()),
            TargetSpec::LatestForModel,
        ];
        let mut rsr = update("17.6.2", "21G100", 100, 200);
        rsr.is_security_response = Some(true);
        type Offer<'a> = (&'a str, Option<Vec<AvailableUpdate>>, Option<&'a str>);
        let offers: Vec<Offer> = vec![
            ("offer", Some(offer()), None),
            (
                "none_2213",
                Some(vec![]),
                Some("AvailableOSUpdates answered Error 2213 (No update available.)"),
            ),
            ("missing", None, Some("no answer within 30s")),
            ("missing_silent", None, None),
            (
                "rsr_and_two",
                Some(vec![
                    rsr,
                    update("17.6", "21G80", GB, GB),
                    offer().remove(0),
                ]),
                None,
            ),
            (
                "no_sizes",
                Some(vec![AvailableUpdate {
                    download_size: None,
                    install_size: None,
                    ..offer().remove(0)
                }]),
                Some("partial"),
            ),
        ];
        let feeds = [
            ("no_feeds", None),
            ("gdmf_aug", Some(sample_feeds("2026-08-22", true))),
            ("gdmf_2024", Some(sample_feeds("2024-01-01", true))),
            ("ipsw_only", Some(sample_feeds("2026-08-22", false))),
        ];
        let mut mdm = mdm_facts();
        mdm.is_supervised = mdm_known("IsSupervised", true);
        mdm.battery_level = mdm_known("BatteryLevel", 0.93);
        mdm.available_device_capacity_gb = mdm_known("AvailableDeviceCapacity", 12.5);
        mdm.passcode_present = mdm_known("PasscodePresent", false);
        mdm.product_name = mdm_known("ProductName", "iPhone12,1".to_string());
        mdm.os_version = mdm_known("OSVersion", "17.5.1".to_string());
        // The full cross product (`LAB_ELIGIBILITY_FULL=1`, 84 672 cases, ~40 s) or, by
        // default, every device under every protocol on two targets, and every target, offer
        // and feed on the devices whose target resolution differs.
        let full = std::env::var_os("LAB_ELIGIBILITY_FULL").is_some();
        let mut out = String::new();
        for (dn, d) in &devs {
            let around_target = ["healthy", "on_latest", "beta", "everything_wrong"].contains(dn);
            for (with_mdm, extras) in [
                (None, false),
                (Some(&mdm), true),
                (Some(&mdm_facts()), false),
            ] {
                if !full && with_mdm.is_some() && !extras {
                    continue;
                }
                let mut p = d.probe();
                p.mdm = with_mdm.cloned();
                for (sn, spec) in &specs {
                    let spec_wide = ["default", "passcode_absent_any_target"].contains(sn);
                    for (ti, t) in targets.iter().enumerate() {
                        for (oi, (on, o, err)) in offers.iter().enumerate() {
                            for (fi, (fname, f)) in feeds.iter().enumerate() {
                                let narrow = (ti == 0 && oi == 0 && fi == 0)
                                    || (ti == 6 && oi == 0 && fi == 1);
                                if !(full || narrow || around_target && spec_wide) {
                                    continue;
                                }
                                let mut s = subject(&p, o.as_deref());
                                s.offered_error = err.map(str::to_string);
                                s.feeds = f.as_ref();
                                if extras {
                                    s.access_rights = Some(8191 - APP_MANAGEMENT_BIT);
                                    s.shared_ipad_user_logged_in = Some(true);
                                    s.dep_enrolled = Some(true);
                                    s.dosed_by_other_protocols = vec![
                                        dose(),
                                        LedgerRecord {
                                            protocol_sha256: String::new(),
                                            ..dose()
                                        },
                                    ];
                                }
                                let v = assess(spec, t, &s);
                                let case = format!(
                                    "{dn}/{}/{sn}/{t:?}/{on}/{fname}",
                                    with_mdm.is_some() as u8 + extras as u8
                                );
                                out.push_str(
                                    &serde_json::to_string(&json!([
                                        case,
                                        v.eligible,
                                        v.reasons,
                                        v.target_json()
                                    ]))
                                    .unwrap(),
                                );
                                out.push('\n');
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// The SHA-256 of [`grid_dump`] as the reasons were before eligibility became a rule table
    /// (issue 12): every reason, its order, message and values, and every target, byte for
    /// byte. A deliberate change of a reason changes it: set `LAB_ELIGIBILITY_DUMP=FILE` to
    /// write the dump, diff it against the previous commit's, then record the new digest.
    const GRID_SHA256: &str = "ae04246fc46e262797ced62358d3dbb67488ac74c3c1d7d667bb9abcd64419e7";

    #[test]
    fn the_reasons_of_every_grid_case_are_unchanged() {
        let dump = grid_dump();
        if let Ok(path) = std::env::var("LAB_ELIGIBILITY_DUMP") {
            std::fs::write(path, &dump).unwrap();
        }
        assert_eq!(
            crate::trial::protocol::sha256_hex(dump.as_bytes()),
            GRID_SHA256
        );
    }
}
