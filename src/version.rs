//! iOS version numbers and their order, shared by the simulator (quirk rows) and the trial
//! harness (eligibility: minimum iOS, known-bad versions, newer targets).

use std::cmp::Ordering;

/// A dotted numeric iOS version. Missing components count as 0, so "11.3" == "11.3.0" <
/// "11.3.1" < "11.4" < "11.10".
#[derive(Debug, Clone)]
pub struct Version(Vec<u32>);

impl Version {
    /// Parses "17.5.1"; a trailing beta marker is not part of a `Version` (see
    /// [`DeviceVersion::parse`]).
    pub fn parse(s: &str) -> Result<Version, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("empty version".into());
        }
        t.split('.')
            .map(|p| {
                p.parse::<u32>()
                    .map_err(|_| format!("{s:?} is not a version like 11.3.1"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Version)
    }

    pub fn from_parts(parts: &[u32]) -> Version {
        Version(parts.to_vec())
    }

    pub fn components(&self) -> &[u32] {
        &self.0
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.0.len().max(other.0.len());
        (0..n)
            .map(|i| {
                let a = self.0.get(i).copied().unwrap_or(0);
                let b = other.0.get(i).copied().unwrap_or(0);
                a.cmp(&b)
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}
impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Version {}

/// A device's version: the number plus whether it runs a beta build. Betas are a flag, not a
/// lower version, because the radars name them by the release they precede ("11.4 beta").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceVersion {
    pub version: Version,
    pub beta: bool,
}

impl DeviceVersion {
    /// "11.4", "11.4 beta", "11.4-beta", "11.4 beta 3" (the beta number is ignored).
    pub fn parse(s: &str) -> Result<DeviceVersion, String> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.find("beta") {
            Some(i) => Ok(DeviceVersion {
                version: Version::parse(lower[..i].trim_end_matches([' ', '-', '_']))?,
                beta: true,
            }),
            None => Ok(DeviceVersion {
                version: Version::parse(&lower)?,
                beta: false,
            }),
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&parts.join("."))
    }
}
