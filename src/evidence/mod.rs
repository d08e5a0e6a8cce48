//! Evidence the runner gathers during follow-up: the device-clock check ([`clock`]).
//!
//! The anomaly detectors that used to live here are `verdicts::anomalies` (pure verdicts over the
//! journal's fold); `report::radar` turns what they find into radar-ready drafts.

pub mod clock;
