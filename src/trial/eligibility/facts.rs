//! The small helpers every rule shares: a [`Reason`] built in one call, where a value came from
//! ("lockdown DeviceIsChaperoned", "MDM DeviceInformation.IsSupervised"), a fact read from
//! lockdown first and the MDM second (briefs/field.md §5–6), sizes as text and "is the target
//! newer".

use crate::journal::Reason;
use crate::probe::field::{Field, Source, Via};
use crate::version::{DeviceVersion, Version};
use serde_json::Value;

pub(super) fn reason(rule: &str, message: String, values: Value) -> Reason {
    Reason {
        rule: rule.to_string(),
        message,
        values,
    }
}

/// "lockdown DeviceIsChaperoned", "MDM DeviceInformation.IsSupervised".
pub(super) fn source_name(s: &Source) -> String {
    match (s.via, &s.domain) {
        (Via::Lockdown, _) => format!("lockdown {}", s.key),
        (Via::Mdm, Some(d)) => format!("MDM {d}.{}", s.key),
        (Via::Mdm, None) => format!("MDM {}", s.key),
        (_, _) => s.key.clone(),
    }
}

/// A fact read from lockdown or, failing that, the MDM.
pub(super) struct Fact<T> {
    pub(super) value: Option<T>,
    /// Where the value came from, or (unknown) every place looked at, with why it is missing.
    pub(super) source: String,
}

pub(super) fn why_missing<T>(f: &Field<T>) -> String {
    format!(
        "{}: {}",
        source_name(&f.source),
        f.error.as_deref().unwrap_or("no value")
    )
}

pub(super) fn fact<T: Clone, U: Clone>(
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

pub(super) fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

/// Is `target` newer than what the device runs? A release is newer than its own beta.
pub(super) fn is_newer(target: &Version, device: &DeviceVersion) -> bool {
    *target > device.version || (*target == device.version && device.beta)
}
