//! The outcome of each device, judged from the journal alone (pure, no I/O).
//!
//! **The outcome is judged by the build the device reports afterwards** — a USB re-probe
//! (`DeviceReprobed.build_version`) or a DeviceInformation answer (`QueryResponses.BuildVersion`)
//! recorded after the device's first dose intent — never by the command status: a device that
//! answered `Error` to ScheduleOSUpdate but then reports the target build is `updated`
//! (rdar 45414692).
//!
//! The ladder, first match wins (see `docs/reports.md`):
//!
//! 1. never assessed or not eligible → `excluded`; eligible but no dose intent → `not_dosed`;
//! 2. dosed, and the last build reported after the dose is the target → `updated` (with no
//!    resolved target: any build other than the starting one);
//! 3. … another build than the target and the starting one → `wrong_version` (also a deviation);
//! 4. no intent was enqueued: one uncertain → `dose_uncertain`, else (enqueue failed) `not_dosed`;
//! 5. the device detached after the dose and was never seen again → `lost_to_follow_up`;
//! 6. the last answered dose step was answered `Error`/`CommandFormatError` → `command_error`;
//! 7. no final answer (Acknowledged/Error/CommandFormatError) to any enqueued dose → `no_response`;
//!    but `lost_to_follow_up` when the run journaled a dose's answer as lost ([`ANSWER_LOST`]:
//!    an MDM that neither retries a webhook nor keeps a history `lab` can read, issue 17);
//! 8. no build reported after the dose → `lost_to_follow_up`;
//! 9. OSUpdateStatus said `IsDownloaded` after the dose → `downloaded_not_installed`;
//! 10. otherwise `not_downloaded`.
//!
//! A DDM dose (an intent whose request type is the enforcement declaration's `Type`, issue 13)
//! is answered by status reports, not command answers, so after step 5 its ladder is
//! `rules::ddm_ladder`: 6 has no counterpart (a `failed` install-state is no command error);
//! 7. no status report after the dose → `no_response`; 8. as above; 9. a report after the dose
//! left `softwareupdate.install-state` at `prepared` or `installing` → `downloaded_not_installed`
//! (its time is the report's); 10. otherwise `not_downloaded`, the reason naming the last
//! install-state. Steps 2–3 read builds as for any dose (USB, DeviceInformation), never the
//! report's own `device.operating-system.build-version` (DDM brief §3 "Outcome items").
//!
//! Times are seconds from the first dose's `DoseEnqueued`. An MDM answer's time is its
//! `received_at` (when the MDM received it), falling back to the journal time.

mod rules;

use crate::journal::Entry;
use crate::journal::fold::{Record, RunFacts};
use serde::Serialize;
use std::collections::BTreeMap;

/// The observation kind the runner journals, at the end of follow-up, for each enqueued dose
/// with no final answer when the MDM neither retries a webhook nor keeps a history `lab` can
/// read (MicroMDM; NanoMDM, which only logs a webhook it could not post): its answer may have
/// come while `lab` was not listening. Key: the dose's CommandUUID. Step 7 of the ladder then
/// says `lost_to_follow_up`, never `no_response`.
pub const ANSWER_LOST: &str = "dose_answer_lost";

/// How many ScheduleOSUpdate steps an arm may have at most (a first command and an optional
/// `follow_up_step`, see `protocol::ArmSpec`): the journal does not carry the arm's shape.
pub const MAX_ARM_STEPS: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The final build is the target build.
    Updated,
    /// The final build is neither the target nor the starting build.
    WrongVersion,
    /// OSUpdateStatus reported the update downloaded (DDM: install-state `prepared` or
    /// `installing` reported); the build did not change.
    DownloadedNotInstalled,
    /// The dose was answered; no download was reported and the build did not change.
    NotDownloaded,
    /// ScheduleOSUpdate answered Error/CommandFormatError and the build did not change.
    CommandError,
    /// Dose enqueued, never answered (DDM: no status report after the dose).
    NoResponse,
    /// Detached and never seen again, or follow-up ended without a build observation.
    LostToFollowUp,
    /// Eligible but not dosed (not allocated, consent refused, stop rule, enqueue failed).
    NotDosed,
    /// Not eligible (or never assessed).
    Excluded,
    /// The dose's enqueue result is unknown (crash between intent and enqueue).
    DoseUncertain,
}

impl Outcome {
    pub const ALL: [Outcome; 10] = [
        Outcome::Updated,
        Outcome::WrongVersion,
        Outcome::DownloadedNotInstalled,
        Outcome::NotDownloaded,
        Outcome::CommandError,
        Outcome::NoResponse,
        Outcome::LostToFollowUp,
        Outcome::NotDosed,
        Outcome::Excluded,
        Outcome::DoseUncertain,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Updated => "updated",
            Outcome::WrongVersion => "wrong_version",
            Outcome::DownloadedNotInstalled => "downloaded_not_installed",
            Outcome::NotDownloaded => "not_downloaded",
            Outcome::CommandError => "command_error",
            Outcome::NoResponse => "no_response",
            Outcome::LostToFollowUp => "lost_to_follow_up",
            Outcome::NotDosed => "not_dosed",
            Outcome::Excluded => "excluded",
            Outcome::DoseUncertain => "dose_uncertain",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceOutcome {
    pub udid: String,
    pub arm: Option<String>,
    pub outcome: Outcome,
    /// Why this outcome, in a few words (e.g. `consent refused: …`, `detached at … and never
    /// seen again`).
    pub reason: Option<String>,
    pub starting_version: Option<String>,
    pub starting_build: Option<String>,
    pub final_version: Option<String>,
    pub final_build: Option<String>,
    pub target_build: Option<String>,
    pub dosed_at: Option<String>,
    pub download_complete_at: Option<String>,
    pub new_build_at: Option<String>,
    pub time_to_download_s: Option<f64>,
    pub time_to_new_build_s: Option<f64>,
    /// Statuses of the answers to the dose commands, in journal order.
    pub first_mdm_status: Option<String>,
    pub last_mdm_status: Option<String>,
    pub deviations: Vec<String>,
}

/// Judge every discovered device, in order of first discovery.
pub fn judge(entries: &[Entry]) -> Vec<DeviceOutcome> {
    judge_with_arm_steps(entries, &BTreeMap::new())
}

/// As [`judge`], with the number of ScheduleOSUpdate steps of each arm (from the protocol);
/// an arm not in the map may have up to [`MAX_ARM_STEPS`] steps, numbered 1…n.
pub fn judge_with_arm_steps(
    entries: &[Entry],
    arm_steps: &BTreeMap<String, u32>,
) -> Vec<DeviceOutcome> {
    judge_run(Record::of_entries(entries).run(), arm_steps)
}

/// [`judge_with_arm_steps`] over facts already gathered.
pub fn judge_run(run: &RunFacts, arm_steps: &BTreeMap<String, u32>) -> Vec<DeviceOutcome> {
    run.devices
        .iter()
        .map(|d| rules::judge_device(d, run, arm_steps))
        .collect()
}

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;
