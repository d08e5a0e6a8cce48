//! The DDM dose of an arm, as bytes: the enforcement declaration a device is given (issue 13).
//! Pure: the caller supplies the device's clock and time zone and the time now.
//!
//! The declaration is built once, at the intent, and its exact JSON is journaled
//! (`DoseIntent.command_b64`): a resumed or retried dose re-sends those bytes, never a
//! re-computation (a deadline computed again would be another declaration).

use super::protocol::{DeadlineSpec, EnforcementSpec};
use crate::mdm::ddm::{Enforcement, LocalDateTime};
use chrono::{DateTime, Duration as TimeDelta, NaiveDateTime, Utc};

/// The device's clock now, from the clock its baseline read (`device_ms`, lockdown
/// `TimeIntervalSince1970` in milliseconds, at host time `read_at`): a simulated lab's clock
/// runs `time_scale` times faster than the host's. `None` when the baseline read no clock: the
/// host's clock stands in.
pub fn device_now(
    clock: Option<(i64, DateTime<Utc>)>,
    now: DateTime<Utc>,
    time_scale: f64,
) -> DateTime<Utc> {
    let Some((device_ms, read_at)) = clock else {
        return now;
    };
    let host_ms = (now - read_at).num_milliseconds().max(0) as f64;
    let scale = if time_scale.is_finite() && time_scale > 0.0 {
        time_scale
    } else {
        1.0
    };
    DateTime::from_timestamp_millis(device_ms + (host_ms * scale) as i64).unwrap_or(now)
}

/// The deadline as the device reads it: local time, no zone (enforcement schema,
/// `TargetLocalDateTime`; DDM brief §0.4). An offset from the dose is counted on the device's
/// clock (`device_now`) and shown in its zone (`utc_offset_s`, seconds east of UTC; 0 when
/// unknown). The result is truncated to the second, the format's precision.
pub fn local_deadline(
    spec: &DeadlineSpec,
    device_now: DateTime<Utc>,
    utc_offset_s: i64,
) -> Result<LocalDateTime, String> {
    let local_now = device_now.naive_utc() + TimeDelta::seconds(utc_offset_s);
    let at = |t: NaiveDateTime| {
        let s = t.format(LocalDateTime::FORMAT).to_string();
        LocalDateTime::parse(&s).map_err(|e| e.to_string())
    };
    match spec {
        DeadlineSpec::Local(s) => LocalDateTime::parse(s).map_err(|e| e.to_string()),
        DeadlineSpec::AfterDose(d) => at(local_now + to_delta(d.0)?),
        DeadlineSpec::BeforeDose(d) => at(local_now - to_delta(d.0)?),
    }
}

fn to_delta(d: std::time::Duration) -> Result<TimeDelta, String> {
    TimeDelta::from_std(d).map_err(|_| format!("a deadline offset of {d:?} is out of range"))
}

/// The enforcement a device is given: the target version resolved for it, the arm's build,
/// deadline and details URL.
pub fn enforcement(
    spec: &EnforcementSpec,
    target_version: &str,
    deadline: LocalDateTime,
) -> Enforcement {
    Enforcement {
        target_os_version: target_version.to_string(),
        target_build_version: spec.target_build.clone(),
        target_local_date_time: deadline,
        details_url: spec.details_url.clone(),
    }
}

/// The declaration's exact bytes, identified by `identifier` (the dose's id).
pub fn declaration_bytes(e: &Enforcement, identifier: &str) -> Vec<u8> {
    e.declaration(identifier).to_json()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::DurationSpec;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_device_clock_runs_at_the_labs_speed_from_its_last_reading() {
        let read = t("2026-12-03T10:00:00Z");
        let device = t("2027-01-01T00:00:00Z").timestamp_millis();
        let now = t("2026-12-03T10:01:00Z");
        assert_eq!(
            device_now(Some((device, read)), now, 60.0),
            t("2027-01-01T01:00:00Z")
        );
        assert_eq!(
            device_now(Some((device, read)), now, 1.0),
            t("2027-01-01T00:01:00Z")
        );
        assert_eq!(device_now(None, now, 60.0), now, "no reading: the host's clock");
    }

    #[test]
    fn offsets_are_counted_on_the_device_clock_and_shown_in_its_zone() {
        let now = t("2026-12-03T22:30:00.750Z");
        let two_h = DeadlineSpec::AfterDose(DurationSpec(std::time::Duration::from_secs(7200)));
        // UTC+2: 22:30 UTC is 00:30 the next day, local; two hours on is 02:30.
        assert_eq!(
            local_deadline(&two_h, now, 7200).unwrap().to_wire(),
            "2026-12-04T02:30:00"
        );
        let past = DeadlineSpec::BeforeDose(DurationSpec(std::time::Duration::from_secs(3600)));
        assert_eq!(
            local_deadline(&past, now, -5 * 3600).unwrap().to_wire(),
            "2026-12-03T16:30:00"
        );
        let fixed = DeadlineSpec::Local("2027-01-02T03:04:05".into());
        assert_eq!(
            local_deadline(&fixed, now, 7200).unwrap().to_wire(),
            "2027-01-02T03:04:05",
            "a local date-time is the device's own, whatever its zone"
        );
        assert!(local_deadline(&DeadlineSpec::Local("2027-01-02 03:04".into()), now, 0).is_err());
    }

    #[test]
    fn the_declaration_carries_the_target_the_arm_and_the_deadline() {
        let spec = EnforcementSpec {
            target_build: Some("22H352".into()),
            deadline: DeadlineSpec::Local("2027-01-02T03:04:05".into()),
            details_url: Some("https://example.com/update".into()),
        };
        let d = LocalDateTime::parse("2027-01-02T03:04:05").unwrap();
        let bytes = declaration_bytes(&enforcement(&spec, "18.7.8", d), "lab-ddm-1");
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v["Type"],
            "com.apple.configuration.softwareupdate.enforcement.specific"
        );
        assert_eq!(v["Identifier"], "lab-ddm-1");
        assert_eq!(v["Payload"]["TargetOSVersion"], "18.7.8");
        assert_eq!(v["Payload"]["TargetBuildVersion"], "22H352");
        assert_eq!(v["Payload"]["TargetLocalDateTime"], "2027-01-02T03:04:05");
        assert_eq!(v["Payload"]["DetailsURL"], "https://example.com/update");
        assert!(!v["ServerToken"].as_str().unwrap().is_empty());
        // The same inputs give the same bytes: a resumed dose is the same declaration.
        assert_eq!(
            bytes,
            declaration_bytes(&enforcement(&spec, "18.7.8", d), "lab-ddm-1")
        );
    }
}
