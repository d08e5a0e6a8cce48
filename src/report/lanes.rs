//! A device's swimlane as the one pass over the journal (`digest`) keeps it: the entries of the
//! device and the run-level ones, reduced to what the timeline looks at. Data, not HTML: the
//! HTML timelines (`html::timelines`) read it.

use super::format::Instant;
use crate::journal::fold::Noted;
use std::sync::Arc;

/// One journal entry as a device's lane reads it: the entries of the device and the run-level
/// ones (`journal::by_device`) whose time parses, reduced to what [`lane_data`] looks at.
#[derive(Debug)]
pub(crate) struct LaneEv {
    pub seq: u64,
    pub at: Instant,
    pub kind: LaneKind,
}

#[derive(Debug)]
pub(crate) enum LaneKind {
    Discovered,
    Eligibility(bool),
    Command(Arc<str>),
    /// `DoseEnqueued` (ok) or `DoseFailed`/`DoseUncertain` of a command.
    Dose {
        uuid: Box<str>,
        ok: bool,
    },
    /// An `MdmResult`: its time (`received_at` when it parses) and request type (its own, else
    /// that of the device's command with its CommandUUID sent so far).
    Answer {
        at: Instant,
        request_type: Option<Arc<str>>,
        answer: LaneAnswer,
    },
    Reprobe {
        attached: bool,
    },
    /// source, kind, key, value.
    Observation(Box<Noted>),
    FollowUpEnded,
    /// A DDM status report, with the `install-state` it carries.
    DdmStatus {
        install_state: Option<Box<str>>,
    },
    /// Any other entry of the device, or a run-level one.
    Other,
}

/// Which answer: the device's `answers[i]` once it was discovered, else the answer's own
/// status and CommandUUID.
#[derive(Debug)]
pub(crate) enum LaneAnswer {
    Fact(u32),
    Early(Box<(Arc<str>, Box<str>)>),
}
