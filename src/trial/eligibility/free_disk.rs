//! Rule `free_disk`: enough free space for the update, per the sizes the device's offer gives
//! (`DownloadSize` + `InstallSize`, briefs mdm.md §2), else the protocol's `fallback_min`.
//! Lockdown's `AmountDataAvailable`, then `TotalDataAvailable`, then the MDM's
//! `AvailableDeviceCapacity` (GB); unknown excludes.

use super::facts::{gb, reason, source_name, why_missing};
use super::{Context, RuleVerdict, rule};
use serde_json::json;

/// Free bytes and where they were read, or (unknown) every place looked at.
fn free_bytes(ctx: &Context) -> (Option<u64>, String) {
    let disk = &ctx.subject.probe.baseline.disk;
    let mdm_free = ctx
        .subject
        .probe
        .mdm
        .as_ref()
        .map(|m| &m.available_device_capacity_gb);
    if let Some(v) = disk.amount_data_available.get() {
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
    }
}

pub fn check(ctx: &Context) -> RuleVerdict {
    if !ctx.spec.free_disk.enabled {
        return RuleVerdict::Pass;
    }
    let (free, metric) = free_bytes(ctx);
    let resolved = &ctx.resolution.target;
    let sizes = resolved
        .as_ref()
        .and_then(|t| Some((t.download_size?, t.install_size?)));
    let (needed, needed_from) = match sizes {
        Some((d, i)) => (d.saturating_add(i), "DownloadSize + InstallSize"),
        None => (ctx.spec.free_disk.fallback_min.0, "fallback_min"),
    };
    let values = json!({
        "free_bytes": free,
        "free_metric": metric,
        "needed_bytes": needed,
        "needed_from": needed_from,
        "download_size": resolved.as_ref().and_then(|t| t.download_size),
        "install_size": resolved.as_ref().and_then(|t| t.install_size),
    });
    // Where rounding to 0.01 GB would show both sides equal ("5.30 GB free … needs 5.30 GB"),
    // both are given in bytes (issue 14).
    let exact = free.is_some_and(|f| f < needed && gb(f) == gb(needed));
    let amount = |b: u64| if exact { format!("{b} bytes") } else { gb(b) };
    let needed_text = match sizes {
        Some((d, i)) => format!(
            "the update needs {} (DownloadSize {} + InstallSize {})",
            amount(needed),
            gb(d),
            gb(i)
        ),
        None => format!(
            "the protocol's fallback_min is {} (the device's offer gives no sizes)",
            gb(needed)
        ),
    };
    match free {
        Some(f) if f >= needed => RuleVerdict::Pass,
        Some(f) => RuleVerdict::Exclude(reason(
            rule::FREE_DISK,
            format!("Only {} free ({metric}), but {needed_text}.", amount(f)),
            values,
        )),
        None => RuleVerdict::Exclude(reason(
            rule::FREE_DISK,
            format!("Free space is unknown ({metric}), and {needed_text}."),
            values,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

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
        // One byte short: both sides in bytes, since 0.01 GB would show them equal.
        let r = only(
            &run(&Dev {
                amount_free: Some(2_099_999_999),
                ..dev()
            }),
            rule::FREE_DISK,
        );
        assert_eq!(
            r.message,
            "Only 2099999999 bytes free (lockdown AmountDataAvailable), but the update needs \
             2100000000 bytes (DownloadSize 0.60 GB + InstallSize 1.50 GB)."
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
}
