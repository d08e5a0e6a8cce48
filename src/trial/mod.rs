//! Trials: the protocol, eligibility, allocation, the journal and the dose ledger, the runner,
//! follow-up and outcome.

pub mod allocation;
pub mod ddm_dose;
pub mod dose_guard;
pub mod eligibility;
pub mod lab_connection;
pub mod ledger;
pub mod live_view;
pub mod progress;
pub mod protocol;
pub mod run_lock;
pub mod runner;
