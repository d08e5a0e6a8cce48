//! Evidence for bug reports: anomaly detectors over the run journal, and the device-clock check
//! the runner makes during follow-up ([`clock`]).
//!
//! The detectors now live in `verdicts::anomalies` (pure verdicts over the journal's fold);
//! [`anomalies`] re-exports them at their old path until their users move (issue 12).
//! Every detector is a pure function of the journal's entries (no clock, no I/O), has a stable
//! id, a one-line description, its source (a radar number or a document), the text of Apple's
//! documented expectation it is checked against, and the journal events it cites as evidence.
//! `report::radar` turns what they find into radar-ready drafts (`radar/<detector-id>.md`).
//! The ids are documented in `docs/reports.md` ("Anomalies and radar drafts").

pub mod anomalies;
pub mod clock;

pub use anomalies::{
    Anomaly, DETECTORS, Detector, Scope, Tally, detect, detector, reproducibility, situations,
};
