//! `data/ddm.yaml` as data: how a simulated iPhone of a given version behaves under DDM
//! software-update enforcement, each fact with its source (or `assumption: true`).

use super::super::quirks::{DeviceVersion, VersionReq};
use serde::Deserialize;
use std::sync::OnceLock;
use std::time::Duration;

/// The table shipped with `lab`.
pub const BUILTIN_YAML: &str = include_str!("../../../data/ddm.yaml");

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fact {
    pub id: String,
    pub versions: String,
    pub value: String,
    pub source: String,
    #[serde(default)]
    pub assumption: bool,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    facts: Vec<Fact>,
}

#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error("data/ddm.yaml: {0}")]
    Yaml(#[from] serde_saphyr::Error),
    #[error("data/ddm.yaml fact {id}: {msg}")]
    Fact { id: String, msg: String },
}

/// The parsed table.
#[derive(Debug, Clone)]
pub struct DdmFacts {
    facts: Vec<(Fact, VersionReq)>,
}

impl DdmFacts {
    pub fn parse(text: &str) -> Result<DdmFacts, FactsError> {
        let f: File = serde_saphyr::from_str(text)?;
        let mut facts = Vec::new();
        for fact in f.facts {
            let req = VersionReq::parse(&fact.versions).map_err(|msg| FactsError::Fact {
                id: fact.id.clone(),
                msg,
            })?;
            if fact.source.trim().is_empty() {
                return Err(FactsError::Fact {
                    id: fact.id,
                    msg: "no source".into(),
                });
            }
            facts.push((fact, req));
        }
        Ok(DdmFacts { facts })
    }

    /// The table shipped with `lab` (checked by a unit test).
    pub fn builtin() -> &'static DdmFacts {
        static T: OnceLock<DdmFacts> = OnceLock::new();
        T.get_or_init(|| DdmFacts::parse(BUILTIN_YAML).unwrap_or(DdmFacts { facts: Vec::new() }))
    }

    /// The fact `id` if it holds for `version`.
    pub fn get(&self, id: &str, version: &str) -> Option<&Fact> {
        let v = DeviceVersion::parse(version).ok()?;
        self.facts
            .iter()
            .find(|(f, r)| f.id == id && r.matches(&v))
            .map(|(f, _)| f)
    }

    pub fn holds(&self, id: &str, version: &str) -> bool {
        self.get(id, version).is_some()
    }

    /// A duration-valued fact (`1h`), if it holds for `version`.
    pub fn duration(&self, id: &str, version: &str) -> Option<Duration> {
        crate::units::parse_duration(&self.get(id, version)?.value).ok()
    }

    pub fn all(&self) -> impl Iterator<Item = &Fact> {
        self.facts.iter().map(|(f, _)| f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_table_parses_and_selects_by_version() {
        let t = DdmFacts::parse(BUILTIN_YAML).unwrap();
        assert!(t.all().count() >= 10);
        assert!(t.holds("enforcement_supported", "17.0"));
        assert!(!t.holds("enforcement_supported", "16.7.10"));
        assert!(!t.holds("legacy_update_commands_removed", "26.1"));
        assert!(t.holds("legacy_update_commands_removed", "27.0"));
        assert_eq!(
            t.duration("past_deadline_install_delay", "18.1"),
            Some(Duration::from_secs(3600))
        );
        // Every assumption says so, and says why.
        for f in t.all().filter(|f| f.assumption) {
            assert!(f.source.len() > 20, "{}", f.id);
        }
        assert!(
            DdmFacts::parse(
                "facts: [{id: x, versions: '*', value: v, source: s, description: d, colour: red}]"
            )
            .is_err()
        );
        assert!(
            DdmFacts::parse(
                "facts: [{id: x, versions: '*', value: v, source: '', description: d}]"
            )
            .is_err()
        );
    }
}
