//! Closed vocabularies of the journal, as enums serialised exactly as the strings earlier
//! journals hold: a journal written before these enums reads back the same, and the reports keep
//! their cells byte for byte (the golden run folders check both).
//!
//! `Observation.kind` stays a string: `lab observe` and protocol checkpoints take the operator's
//! own kinds.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Who recorded an observation. Only the harness writes this field (`lab observe` always
/// writes `operator`), so the set is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObservationSource {
    /// Typed by a person (`lab observe`, a protocol checkpoint, a prompt answered).
    Operator,
    /// Seen by the harness itself (an MDM API error, an unreachable usbmuxd host, …).
    Harness,
    /// Reported by the device (its clock jumped).
    Device,
    /// Reported by the MDM server (a check-in report it rejected).
    Mdm,
}

impl ObservationSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ObservationSource::Operator => "operator",
            ObservationSource::Harness => "harness",
            ObservationSource::Device => "device",
            ObservationSource::Mdm => "mdm",
        }
    }
}

impl fmt::Display for ObservationSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ObservationSource {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// How consent to the doses was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentBy {
    /// `--yes` on the command line.
    Flag,
    /// Typed at the prompt.
    Operator,
}

impl ConsentBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentBy::Flag => "flag",
            ConsentBy::Operator => "operator",
        }
    }
}

impl fmt::Display for ConsentBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a device's follow-up ended. Serialised as one string: `"<until> reached"`,
/// `"follow-up time limit"`, `"no dose reached the MDM"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FollowUpEndReason {
    /// The protocol's `follow_up.until` condition held; holds its text (`updated`,
    /// `downloaded`, `status("installing")`), as the runner spelt it.
    Reached(String),
    /// `follow_up.max` elapsed first.
    TimeLimit,
    /// Every dose of the device failed to reach the MDM: there is nothing to follow.
    NoDoseReachedMdm,
    /// A reason this version of `lab` does not know (a journal from another version): kept
    /// verbatim so that journal still reads.
    Other(String),
}

const REACHED: &str = " reached";
const TIME_LIMIT: &str = "follow-up time limit";
const NO_DOSE: &str = "no dose reached the MDM";

impl FollowUpEndReason {
    /// The reason for an `until` condition, as the runner writes it (`UntilSpec` in `Debug`,
    /// lower-cased).
    pub fn reached(until: impl fmt::Debug) -> Self {
        FollowUpEndReason::Reached(format!("{until:?}").to_lowercase())
    }

    fn parse(s: &str) -> Self {
        match s {
            TIME_LIMIT => FollowUpEndReason::TimeLimit,
            NO_DOSE => FollowUpEndReason::NoDoseReachedMdm,
            _ => match s.strip_suffix(REACHED) {
                Some(until) if !until.is_empty() => FollowUpEndReason::Reached(until.to_string()),
                _ => FollowUpEndReason::Other(s.to_string()),
            },
        }
    }
}

impl From<&str> for FollowUpEndReason {
    fn from(s: &str) -> Self {
        FollowUpEndReason::parse(s)
    }
}

impl fmt::Display for FollowUpEndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FollowUpEndReason::Reached(until) => write!(f, "{until}{REACHED}"),
            FollowUpEndReason::TimeLimit => f.write_str(TIME_LIMIT),
            FollowUpEndReason::NoDoseReachedMdm => f.write_str(NO_DOSE),
            FollowUpEndReason::Other(s) => f.write_str(s),
        }
    }
}

impl Serialize for FollowUpEndReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FollowUpEndReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(FollowUpEndReason::parse(&String::deserialize(d)?))
    }
}

/// What a `DoseIntent` sends, told by its `request_type` (issue 13): an MDM command
/// (ScheduleOSUpdate) or a DDM declaration whose `Type` is the software-update enforcement
/// configuration (`/work/shared/briefs/ddm.md`). The one place this test is written: the fold,
/// the reports and the runner's resume all ask it here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoseKind {
    Command,
    Declaration,
}

impl DoseKind {
    pub fn of_request_type(request_type: &str) -> Self {
        if request_type == crate::mdm::ddm::ENFORCEMENT_SPECIFIC {
            DoseKind::Declaration
        } else {
            DoseKind::Command
        }
    }

    pub fn is_declaration(self) -> bool {
        self == DoseKind::Declaration
    }

    /// The mechanism's name as devices.csv's `dose_mechanism` cell and the protocol spell it.
    pub fn mechanism(self) -> &'static str {
        match self {
            DoseKind::Command => "schedule_os_update",
            DoseKind::Declaration => "ddm_enforcement",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_enforcement_declaration_is_a_declaration() {
        let d = DoseKind::of_request_type(crate::mdm::ddm::ENFORCEMENT_SPECIFIC);
        assert!(d.is_declaration());
        assert_eq!(d.mechanism(), "ddm_enforcement");
        for t in [
            "ScheduleOSUpdate",
            "",
            "com.apple.configuration.softwareupdate.settings",
        ] {
            let c = DoseKind::of_request_type(t);
            assert!(!c.is_declaration(), "{t}");
            assert_eq!(c.mechanism(), "schedule_os_update");
        }
    }

    #[test]
    fn follow_up_reasons_read_back_as_written() {
        for s in [
            "updated reached",
            "downloaded reached",
            "status(\"installing\") reached",
            "follow-up time limit",
            "no dose reached the MDM",
            "something an older lab wrote",
            " reached",
        ] {
            let r = FollowUpEndReason::parse(s);
            assert_eq!(r.to_string(), s);
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<FollowUpEndReason>(&json).unwrap(), r);
        }
        assert_eq!(
            FollowUpEndReason::parse("updated reached"),
            FollowUpEndReason::Reached("updated".into())
        );
        assert_eq!(
            FollowUpEndReason::parse(" reached"),
            FollowUpEndReason::Other(" reached".into())
        );
        #[derive(Debug)]
        #[allow(dead_code)]
        enum Until {
            Updated,
            Status(String),
        }
        assert_eq!(
            FollowUpEndReason::reached(Until::Updated).to_string(),
            "updated reached"
        );
        assert_eq!(
            FollowUpEndReason::reached(Until::Status("Installing".into())).to_string(),
            "status(\"installing\") reached"
        );
    }

    #[test]
    fn closed_sets_refuse_what_no_lab_writes() {
        assert_eq!(
            serde_json::to_string(&ObservationSource::Mdm).unwrap(),
            "\"mdm\""
        );
        assert!(serde_json::from_str::<ObservationSource>("\"usb\"").is_err());
        assert_eq!(serde_json::to_string(&ConsentBy::Flag).unwrap(), "\"flag\"");
        assert!(serde_json::from_str::<ConsentBy>("\"nobody\"").is_err());
    }
}
