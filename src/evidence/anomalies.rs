//! Moved to `verdicts::anomalies` (pure detectors over the journal's fold); this re-export keeps
//! the old path compiling until its users move (issue 12).

pub use crate::verdicts::anomalies::*;
