//! Units an operator writes in YAML files (fleet, trial protocol, MDM fault plans): a byte count
//! with a unit and a duration with a unit. They are plumbing: the simulator, the trial protocol
//! and the embedded MDM server's fault plans all read them, so they live below all three
//! (issue 12: shared units out of `sim/`).

use serde::Deserialize;
use std::time::Duration;

/// A byte count: an integer, or a string with a unit (`64 GB`, `512MB`, `1.5 TB`, `32 GiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "NumberOrString")]
pub struct Bytes(pub u64);

/// A duration: `500ms`, `10s`, `2m`, `1h`, or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "NumberOrString")]
pub struct DurationSpec(pub Duration);

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    N(u64),
    F(f64),
    S(String),
}

impl TryFrom<NumberOrString> for Bytes {
    type Error = String;
    fn try_from(v: NumberOrString) -> Result<Self, String> {
        match v {
            NumberOrString::N(n) => Ok(Bytes(n)),
            NumberOrString::F(f) => Err(format!("{f} is not a whole number of bytes")),
            NumberOrString::S(s) => parse_bytes(&s).map(Bytes),
        }
    }
}

impl TryFrom<NumberOrString> for DurationSpec {
    type Error = String;
    fn try_from(v: NumberOrString) -> Result<Self, String> {
        match v {
            NumberOrString::N(n) => Ok(DurationSpec(Duration::from_secs(n))),
            // Found by fuzzing (`sim_fleet`): `60E216` overflowed `Duration` and panicked.
            NumberOrString::F(f) if (0.0..=MAX_DURATION_SECS).contains(&f) => {
                Ok(DurationSpec(Duration::from_secs_f64(f)))
            }
            NumberOrString::F(f) if f > MAX_DURATION_SECS => Err(format!("{f:e} s is too long")),
            NumberOrString::F(f) => Err(format!("{f} is not a duration")),
            NumberOrString::S(s) => parse_duration(&s).map(DurationSpec),
        }
    }
}

pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (t[..split].trim(), t[split..].trim());
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 64 GB, 512 MB, 1073741824)"))?;
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0f64.powi(4),
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            ));
        }
    };
    let v = n * mult;
    if !v.is_finite() || v > u64::MAX as f64 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(v.round() as u64)
}

/// The longest duration a file may give (about 31 years): anything longer is a typo.
const MAX_DURATION_SECS: f64 = 1e9;

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (t[..split].trim(), t[split..].trim());
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 10s, 2m, 1h)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m, h)")),
    };
    if !secs.is_finite() || secs > MAX_DURATION_SECS {
        return Err(format!("{s:?} is too long"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_bytes("64GB").unwrap(), 64_000_000_000);
        assert_eq!(parse_bytes("2 KiB").unwrap(), 2048);
        assert!(parse_bytes("lots").is_err());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2 fortnights").is_err());
    }
}
