//! The default list of iOS versions on which ScheduleOSUpdate itself is reported to misbehave
//! (eligibility rule `known_bad_version`). It is data, not code: the
//! `schedule_os_update_known_bad` list of `data/quirks.yaml`, each entry with its source. The
//! harness reads only that list; the simulator's behaviour code (`sim::quirks`,
//! `sim::os_update`) is not involved.

use crate::version::DeviceVersion;
use serde::Deserialize;
use std::sync::OnceLock;

/// The file shipped with `lab` (the same one the simulator's quirk table comes from).
pub const BUILTIN_YAML: &str = include_str!("../data/quirks.yaml");

/// One known-bad version.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownBad {
    /// Exact version: "11.3" also matches "11.3.0" and the 11.3 betas.
    pub version: String,
    /// Ids of the quirk rows describing the misbehaviour.
    #[serde(default)]
    pub quirks: Vec<String>,
    /// Where the misbehaviour was reported (or why the version is listed anyway).
    pub source: String,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    schedule_os_update_known_bad: Vec<KnownBad>,
}

/// The list in a quirk file; every version must parse.
pub fn parse(text: &str) -> Result<Vec<KnownBad>, String> {
    let f: File =
        serde_saphyr::from_str(text).map_err(|e| format!("schedule_os_update_known_bad: {e}"))?;
    for k in &f.schedule_os_update_known_bad {
        DeviceVersion::parse(&k.version)
            .map_err(|e| format!("schedule_os_update_known_bad: {e}"))?;
    }
    Ok(f.schedule_os_update_known_bad)
}

/// The list in `data/quirks.yaml`, parsed once. A unit test guarantees it parses.
pub fn builtin() -> &'static [KnownBad] {
    static LIST: OnceLock<Vec<KnownBad>> = OnceLock::new();
    LIST.get_or_init(|| parse(BUILTIN_YAML).expect("data/quirks.yaml parses (unit-tested)"))
}

/// The entry matching `version` (compared as versions: "11.3" == "11.3.0"; a beta matches the
/// release it precedes). An unparsable version matches nothing.
pub fn find<'a>(list: &'a [KnownBad], version: &str) -> Option<&'a KnownBad> {
    let v = DeviceVersion::parse(version).ok()?;
    list.iter().find(|k| {
        DeviceVersion::parse(&k.version)
            .map(|b| b.version == v.version)
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_list_is_the_2018_radars_each_sourced() {
        let versions: Vec<&str> = builtin().iter().map(|k| k.version.as_str()).collect();
        assert_eq!(versions, ["11.3", "11.3.1", "11.4", "11.4.1"]);
        assert!(builtin().iter().all(|k| !k.source.trim().is_empty()));
    }

    #[test]
    fn quirk_ids_named_by_the_list_exist_in_the_table() {
        let table = crate::sim::quirks::QuirkTable::builtin();
        for k in builtin() {
            for id in &k.quirks {
                assert!(table.rows.iter().any(|r| &r.id == id), "{id}");
            }
        }
    }

    #[test]
    fn matching_is_by_version_not_by_text() {
        let l = builtin();
        assert_eq!(find(l, "11.3.0").unwrap().version, "11.3");
        assert_eq!(find(l, "11.4 beta 2").unwrap().version, "11.4");
        assert_eq!(find(l, "11.4.1").unwrap().version, "11.4.1");
        assert!(find(l, "11.2.6").is_none());
        assert!(find(l, "11.4.2").is_none());
        assert!(find(l, "12.0").is_none());
        assert!(find(l, "garbage").is_none());
    }

    #[test]
    fn a_bad_version_in_the_list_is_refused() {
        let e =
            parse("quirks: []\nschedule_os_update_known_bad:\n  - { version: 11.x, source: s }\n")
                .unwrap_err();
        assert!(e.contains("11.x"), "{e}");
        assert!(parse("quirks: []\n").unwrap().is_empty());
    }
}
