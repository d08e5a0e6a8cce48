//! Moved: the outcome rules are `verdicts::outcome`, the facts they read `journal::fold`'s
//! record. These re-exports keep the old paths compiling until their users move (issue 12).

pub use crate::journal::fold::{
    Answer, Attach, AvailFacts, BuildSeen, Decoded, Facts, Intent, OsItem, RareFacts,
    Record as Gatherer, ReportFacts, RunFacts, Strings, decode_answer, decode_report,
    is_final_status, run_facts as gather, target_builds, update_results_of,
};
pub use crate::journal::report_xml::StatusAnswer;
pub use crate::verdicts::outcome::{
    DeviceOutcome, MAX_ARM_STEPS, Outcome, judge, judge_run, judge_with_arm_steps,
};

#[cfg(test)]
pub(crate) use crate::verdicts::outcome::testkit;
