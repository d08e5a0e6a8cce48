//! The per-iOS-version quirk table (`data/quirks.yaml`) as data: which reported bugs of real
//! iPhones a simulated device of a given version reproduces (mdm brief §7, field brief §6).
//!
//! Keeping the table as data, not code, lets a trial cite the row (`id`, `source`) that explains
//! an odd result, and lets new findings be added without touching the state machine.

use serde::Deserialize;
use std::sync::OnceLock;

/// Moved to [`crate::rng`] and [`crate::version`] (the harness uses them too); re-exported so
/// the simulator API keeps working.
pub use crate::rng::SplitMix64;
pub use crate::version::{DeviceVersion, Version};

/// The table shipped with `lab`.
pub const BUILTIN_YAML: &str = include_str!("../../data/quirks.yaml");

#[derive(Debug, thiserror::Error)]
pub enum QuirksError {
    #[error("quirk table: {0}")]
    Yaml(#[from] serde_saphyr::Error),
    #[error("quirk {id:?}: {message}")]
    Row { id: String, message: String },
    #[error("quirk id {0:?} is used twice")]
    DuplicateId(String),
}

/// What the simulator does differently. One variant per kind of deviation from Apple's
/// documented behaviour; several rows may share one (e.g. the same bug under two sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// OSUpdateStatus `IsDownloaded` as integer 0/1 (rdar 45414737).
    IsDownloadedInteger,
    /// AvailableOSUpdates with nothing available → Error 2213 → softwareupdateservices 3
    /// (rdar 39170807).
    #[serde(rename = "available_updates_error_2213")]
    AvailableUpdatesError2213,
    /// ScheduleOSUpdate is carried out but never answered (rdar 40161553).
    ScheduleNoResponse,
    /// ScheduleOSUpdate answered Error although the prompt appears / the download starts
    /// (rdar 45414692).
    ScheduleErrorButPrompt,
    /// `Installing` while the user's "Later" install waits; another ScheduleOSUpdate installs
    /// at once (rdar 45414727).
    InstallingWhileScheduled,
    /// ScheduleOSUpdate needs DEP enrolment and no passcode (iOS < 10.3).
    #[serde(rename = "requires_dep_below_10_3")]
    RequiresDepBelow10_3,
    /// The update commands answer NotNow before the first unlock after boot.
    NotnowBeforeFirstUnlock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

#[derive(Debug, Clone, PartialEq)]
enum Clause {
    Cmp(Op, Version),
    /// `beta` (true) or `release` (false).
    Beta(bool),
}

/// A conjunction of clauses: `">=11.3, <11.4"`, `"11.3.1"`, `">=11.4, <11.5, beta"`, `"*"`.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionReq(Vec<Clause>);

impl VersionReq {
    pub fn parse(s: &str) -> Result<VersionReq, String> {
        let mut clauses = Vec::new();
        for raw in s.split(',') {
            let c = raw.trim();
            match c {
                "*" | "all" => continue,
                "beta" => clauses.push(Clause::Beta(true)),
                "release" => clauses.push(Clause::Beta(false)),
                _ => {
                    let (op, rest) = [
                        (">=", Op::Ge),
                        ("<=", Op::Le),
                        ("==", Op::Eq),
                        (">", Op::Gt),
                        ("<", Op::Lt),
                        ("=", Op::Eq),
                    ]
                    .iter()
                    .find_map(|(p, op)| c.strip_prefix(p).map(|r| (*op, r)))
                    .unwrap_or((Op::Eq, c));
                    let v = Version::parse(rest).map_err(|e| {
                        format!("{s:?}: {e} (write e.g. \">=11.3, <11.4\" or \"11.3.1\")")
                    })?;
                    clauses.push(Clause::Cmp(op, v));
                }
            }
        }
        Ok(VersionReq(clauses))
    }

    pub fn matches(&self, v: &DeviceVersion) -> bool {
        self.0.iter().all(|c| match c {
            Clause::Beta(b) => v.beta == *b,
            Clause::Cmp(op, r) => {
                let o = v.version.cmp(r);
                match op {
                    Op::Lt => o.is_lt(),
                    Op::Le => o.is_le(),
                    Op::Gt => o.is_gt(),
                    Op::Ge => o.is_ge(),
                    Op::Eq => o.is_eq(),
                }
            }
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuirkFile {
    quirks: Vec<QuirkRow>,
    /// The trial harness's default exclusion list (read by `crate::known_bad`); not simulator
    /// behaviour.
    #[serde(default)]
    #[allow(dead_code)]
    schedule_os_update_known_bad: serde::de::IgnoredAny,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum VersionsField {
    One(String),
    Any(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuirkRow {
    id: String,
    versions: VersionsField,
    behaviour: Behaviour,
    #[serde(default = "one")]
    probability: f64,
    source: String,
    description: String,
}

fn one() -> f64 {
    1.0
}

/// One row of the table, parsed and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Quirk {
    pub id: String,
    /// Matches when any of these matches.
    pub versions: Vec<VersionReq>,
    pub behaviour: Behaviour,
    pub probability: f64,
    pub source: String,
    pub description: String,
}

impl Quirk {
    pub fn applies_to(&self, v: &DeviceVersion) -> bool {
        self.versions.iter().any(|r| r.matches(v))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct QuirkTable {
    pub rows: Vec<Quirk>,
}

impl QuirkTable {
    pub fn parse(text: &str) -> Result<QuirkTable, QuirksError> {
        let file: QuirkFile = serde_saphyr::from_str(text)?;
        let mut rows: Vec<Quirk> = Vec::new();
        for r in file.quirks {
            let err = |message: String| QuirksError::Row {
                id: r.id.clone(),
                message,
            };
            if r.id.is_empty()
                || !r
                    .id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(err("id must be snake_case (a-z, 0-9, _)".into()));
            }
            if rows.iter().any(|q| q.id == r.id) {
                return Err(QuirksError::DuplicateId(r.id));
            }
            if !(0.0..=1.0).contains(&r.probability) {
                return Err(err(format!(
                    "probability {} is not between 0 and 1",
                    r.probability
                )));
            }
            let reqs = match &r.versions {
                VersionsField::One(s) => vec![s.clone()],
                VersionsField::Any(v) if v.is_empty() => {
                    return Err(err("versions is an empty list".into()));
                }
                VersionsField::Any(v) => v.clone(),
            };
            let versions = reqs
                .iter()
                .map(|s| VersionReq::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            rows.push(Quirk {
                id: r.id,
                versions,
                behaviour: r.behaviour,
                probability: r.probability,
                source: r.source,
                description: r.description,
            });
        }
        Ok(QuirkTable { rows })
    }

    /// The table in `data/quirks.yaml`, parsed once. A unit test guarantees it parses.
    pub fn builtin() -> &'static QuirkTable {
        static TABLE: OnceLock<QuirkTable> = OnceLock::new();
        TABLE.get_or_init(|| {
            QuirkTable::parse(BUILTIN_YAML).expect("data/quirks.yaml parses (unit-tested)")
        })
    }

    /// Every row matching `version`, drawing the probabilistic ones per device: each row's draw
    /// comes from a PRNG seeded with the fleet seed, the UDID and the row id, so a device keeps
    /// or lacks a quirk for the whole run, the same way on every run, and adding a row does not
    /// change other rows' draws. An unparsable version matches no rows.
    pub fn for_device(&self, version: &str, fleet_seed: u64, udid: &str) -> Quirks {
        let dseed = device_seed(fleet_seed, udid);
        self.select(version, |q| {
            q.probability >= 1.0 || {
                let mut rng = SplitMix64::new(dseed ^ fnv1a(q.id.as_bytes()));
                rng.next_f64() < q.probability
            }
        })
    }

    /// Every row matching `version` whose probability is above zero (no draw).
    pub fn for_version(&self, version: &str) -> Quirks {
        self.select(version, |q| q.probability > 0.0)
    }

    fn select(&self, version: &str, keep: impl Fn(&Quirk) -> bool) -> Quirks {
        let Ok(v) = DeviceVersion::parse(version) else {
            return Quirks::none();
        };
        Quirks {
            active: self
                .rows
                .iter()
                .filter(|q| q.applies_to(&v) && keep(q))
                .cloned()
                .collect(),
        }
    }
}

/// The quirks one simulated device has.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Quirks {
    active: Vec<Quirk>,
}

impl Quirks {
    /// Rows of the built-in table for `version` ("11.3.1", "11.4 beta"); probabilistic rows are
    /// all included. Use [`QuirkTable::for_device`] for the per-device draw.
    pub fn for_version(version: &str) -> Quirks {
        QuirkTable::builtin().for_version(version)
    }

    /// A device that behaves exactly as Apple documents.
    pub fn none() -> Quirks {
        Quirks::default()
    }

    /// Exactly these behaviours (for tests and for forcing a quirk on a device).
    pub fn only(behaviours: &[Behaviour]) -> Quirks {
        Quirks {
            active: behaviours
                .iter()
                .map(|b| Quirk {
                    id: format!("{b:?}"),
                    versions: vec![],
                    behaviour: *b,
                    probability: 1.0,
                    source: "forced".into(),
                    description: String::new(),
                })
                .collect(),
        }
    }

    pub fn has(&self, b: Behaviour) -> bool {
        self.active.iter().any(|q| q.behaviour == b)
    }

    /// The active rows, for reports ("this device reproduced rdar …").
    pub fn active(&self) -> &[Quirk] {
        &self.active
    }
}

/// FNV-1a, 64 bit: a stable string hash (std's hasher is randomised per process).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The seed of one device's random choices: fleet seed and UDID, so that two devices of a fleet
/// differ and a rerun with the same seed repeats.
pub fn device_seed(fleet_seed: u64, udid: &str) -> u64 {
    SplitMix64::new(fleet_seed ^ fnv1a(udid.as_bytes())).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn version_order() {
        assert!(v("11.3") < v("11.3.1"));
        assert!(v("11.3.1") < v("11.4"));
        assert!(v("11.4") < v("11.10"));
        assert_eq!(v("11.3"), v("11.3.0"));
        assert!(v("9.3.5") < v("10.3"));
        assert!(Version::parse("11.x").is_err());
        assert!(Version::parse("").is_err());
        let b = DeviceVersion::parse("11.4 beta 2").unwrap();
        assert!(b.beta && b.version == v("11.4"));
        assert!(!DeviceVersion::parse("11.4").unwrap().beta);
    }

    #[test]
    fn requirements() {
        let r = VersionReq::parse(">=11.3, <11.4").unwrap();
        let d = |s: &str| DeviceVersion::parse(s).unwrap();
        assert!(r.matches(&d("11.3")) && r.matches(&d("11.3.1")));
        assert!(!r.matches(&d("11.4")) && !r.matches(&d("11.2.6")));
        let e = VersionReq::parse("11.3.1").unwrap();
        assert!(e.matches(&d("11.3.1")) && !e.matches(&d("11.3")));
        let b = VersionReq::parse(">=11.4, <11.5, beta").unwrap();
        assert!(b.matches(&d("11.4 beta")) && !b.matches(&d("11.4")));
        assert!(VersionReq::parse("*").unwrap().matches(&d("1.0")));
        assert!(VersionReq::parse("~11").is_err());
    }

    #[test]
    fn builtin_table_parses_and_selects_by_version() {
        let t = QuirkTable::parse(BUILTIN_YAML).unwrap();
        for id in [
            "is_downloaded_integer",
            "available_updates_error_2213",
            "schedule_no_response",
            "schedule_error_but_prompt",
            "installing_while_scheduled",
            "requires_dep_below_10_3",
            "notnow_before_first_unlock",
        ] {
            assert!(t.rows.iter().any(|q| q.id == id), "{id} missing");
        }
        use Behaviour::*;
        let q = Quirks::for_version("11.3");
        assert!(q.has(IsDownloadedInteger) && q.has(AvailableUpdatesError2213));
        assert!(!q.has(ScheduleNoResponse));
        assert!(Quirks::for_version("11.3.1").has(ScheduleNoResponse));
        assert!(Quirks::for_version("11.4").has(ScheduleErrorButPrompt));
        assert!(!Quirks::for_version("11.4").has(AvailableUpdatesError2213));
        assert!(Quirks::for_version("11.4 beta").has(AvailableUpdatesError2213));
        assert!(Quirks::for_version("12.1").has(InstallingWhileScheduled));
        assert!(!Quirks::for_version("27.0").has(InstallingWhileScheduled));
        assert!(Quirks::for_version("10.2.1").has(RequiresDepBelow10_3));
        assert!(!Quirks::for_version("10.3").has(RequiresDepBelow10_3));
        let all = Quirks::for_version("18.1");
        assert!(all.has(NotnowBeforeFirstUnlock));
        assert!(!all.has(IsDownloadedInteger));
        assert!(Quirks::for_version("garbage").active().is_empty());
    }

    #[test]
    fn unknown_fields_and_bad_rows_are_errors() {
        let bad = "quirks:\n  - id: x\n    versions: '*'\n    behaviour: schedule_no_response\n    source: s\n    description: d\n    colour: red\n";
        assert!(matches!(QuirkTable::parse(bad), Err(QuirksError::Yaml(_))));
        let bad = "quirks:\n  - id: x\n    versions: '~1'\n    behaviour: schedule_no_response\n    source: s\n    description: d\n";
        assert!(matches!(
            QuirkTable::parse(bad),
            Err(QuirksError::Row { .. })
        ));
        let bad = "quirks:\n  - id: x\n    versions: '*'\n    behaviour: made_up\n    source: s\n    description: d\n";
        assert!(QuirkTable::parse(bad).is_err());
    }

    #[test]
    fn probabilistic_rows_are_drawn_reproducibly_per_device() {
        let t = QuirkTable::parse(
            "quirks:\n  - id: flaky\n    versions: '*'\n    behaviour: schedule_no_response\n    probability: 0.5\n    source: s\n    description: d\n",
        )
        .unwrap();
        let has = |seed, udid: &str| {
            t.for_device("17.0", seed, udid)
                .has(Behaviour::ScheduleNoResponse)
        };
        let n = (0..400).filter(|i| has(7, &format!("udid-{i}"))).count();
        assert!((150..250).contains(&n), "about half the devices: {n}");
        for i in 0..20 {
            let u = format!("udid-{i}");
            assert_eq!(has(7, &u), has(7, &u), "same seed, same draw");
        }
        assert!(t.for_version("17.0").has(Behaviour::ScheduleNoResponse));
    }

    #[test]
    fn splitmix_is_deterministic() {
        let mut a = SplitMix64::new(1);
        let mut b = SplitMix64::new(1);
        assert_eq!(a.next_u64(), b.next_u64());
        assert!((0.0..1.0).contains(&a.next_f64()));
        assert!(a.below(120) < 120);
        assert_ne!(device_seed(1, "a"), device_seed(1, "b"));
    }
}
