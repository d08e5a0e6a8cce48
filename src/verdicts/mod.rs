//! Pure verdicts over the journal's one fold: what became of each device ([`outcome`]), which
//! of them suffered adverse events ([`adverse`]), and which departed from Apple's documented
//! MDM behaviour ([`anomalies`]).
//!
//! Every function here reads the facts `journal::fold` builds ([`crate::journal::fold::RunFacts`],
//! one [`crate::journal::fold::Facts`] per device) and nothing else: no clock, no I/O, no
//! knowledge of the runner or of how a report is written. So the runner's stop rule, the
//! reports and the tests all reach the same verdict from the same facts. This layer imports
//! only `journal`, `mdm`, `feeds`, `known_bad`, `version`, `models` and plumbing
//! (`tests/architecture.rs`).

pub mod adverse;
pub mod anomalies;
pub mod outcome;
