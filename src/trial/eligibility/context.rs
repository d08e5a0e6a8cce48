//! What every rule reads, gathered once per device: the baseline facts the rules share (the iOS
//! version, the build, the passcode, the model) and the resolved target. Reading them is also
//! the first rule, `probe_failed`: a probe with status `failed`, or no readable iOS version
//! (lockdown `ProductVersion`, else MDM `OSVersion`), is "no usable baseline", and no other rule
//! runs on it (each would only repeat "unknown").

use super::facts::{Fact, fact, reason};
use super::target::{self, Resolution};
use super::{Subject, rule};
use crate::journal::Reason;
use crate::probe::run::ProbeStatus;
use crate::trial::protocol::{EligibilitySpec, TargetSpec};
use crate::version::DeviceVersion;
use chrono::NaiveDate;
use serde_json::json;

/// One device as the rules see it. Built only from a usable baseline.
pub struct Context<'a> {
    pub(super) spec: &'a EligibilitySpec,
    pub(super) subject: &'a Subject<'a>,
    /// The iOS version as the device reported it ("17.5.1").
    pub(super) version: String,
    pub(super) device: DeviceVersion,
    /// "17.5.1 (21F90)", or the version alone when no build is known.
    pub(super) device_label: String,
    pub(super) build: Option<String>,
    pub(super) passcode: Fact<bool>,
    pub(super) product_type: Fact<String>,
    pub(super) resolution: Resolution,
    /// The protocol's target, as written.
    pub(super) target_spec: TargetSpec,
}

impl<'a> Context<'a> {
    /// The facts of a device, or the `probe_failed` reason when it has no usable baseline.
    pub(super) fn read(
        spec: &'a EligibilitySpec,
        target: &TargetSpec,
        s: &'a Subject<'a>,
    ) -> Result<Context<'a>, Reason> {
        let b = &s.probe.baseline;
        let m = s.probe.mdm.as_ref();
        let (version, device) = usable_version(s)?;
        let build = b
            .build_version
            .get()
            .or_else(|| m.and_then(|m| m.build_version.get()))
            .cloned();
        let device_label = match &build {
            Some(bv) => format!("{version} ({bv})"),
            None => version.clone(),
        };
        let passcode = fact(
            &b.passcode.password_protected,
            m.map(|m| &m.passcode_present),
            |v| Some(*v),
        );
        let product_type = fact(&b.product_type, m.map(|m| &m.product_name), |v| {
            Some(v.clone())
        });
        let resolution = target::resolve(spec, target, s, &device, &device_label, &product_type);
        Ok(Context {
            spec,
            subject: s,
            version,
            device,
            device_label,
            build,
            passcode,
            product_type,
            resolution,
            target_spec: target.clone(),
        })
    }

    /// With feeds: the trial date and whether the device's starting build is still signed
    /// (ipsw.me; `None`: unknown).
    pub(super) fn feed_facts(&self) -> Option<(NaiveDate, Option<bool>)> {
        self.subject.feeds.map(|f| {
            let restore = match (self.product_type.value.as_deref(), self.build.as_deref()) {
                (Some(pt), Some(bv)) => f.can_restore(pt, bv),
                _ => None,
            };
            (f.date, restore)
        })
    }
}

/// Rule `probe_failed`: the device's iOS version as read and parsed, or why there is none.
fn usable_version(s: &Subject) -> Result<(String, DeviceVersion), Reason> {
    let p = s.probe;
    let m = p.mdm.as_ref();
    let version_fact = fact(&p.baseline.product_version, m.map(|m| &m.os_version), |v| {
        Some(v.clone())
    });
    if p.status == ProbeStatus::Failed {
        let f = p.failure.as_ref();
        return Err(reason(
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
        ));
    }
    let Some(v) = version_fact.value.as_deref() else {
        return Err(reason(
            rule::PROBE_FAILED,
            format!(
                "The device's iOS version could not be read ({}), so there is no usable \
                 baseline.",
                version_fact.source
            ),
            json!({ "status": p.status, "version": null }),
        ));
    };
    match DeviceVersion::parse(v) {
        Ok(d) => Ok((v.to_string(), d)),
        Err(e) => Err(reason(
            rule::PROBE_FAILED,
            format!(
                "The device reported iOS version {:?} ({}), which is not a version ({e}).",
                version_fact.value.as_deref().unwrap_or(""),
                version_fact.source
            ),
            json!({ "status": p.status, "version": version_fact.value }),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

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
}
