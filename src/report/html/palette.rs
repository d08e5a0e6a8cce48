//! Colours and labels: a device's status on its swimlane, outcome and answer classes, badges.

use super::esc;
use crate::verdicts::outcome::Outcome;

/// A device's status at a moment, as the swimlane shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    Enrolled,
    Excluded,
    Eligible,
    Dosed,
    Downloading,
    Downloaded,
    Installing,
    Error,
    Detached,
    Updated,
    WrongVersion,
}

impl Status {
    pub(super) const LEGEND: [Status; 11] = [
        Status::Enrolled,
        Status::Excluded,
        Status::Eligible,
        Status::Dosed,
        Status::Downloading,
        Status::Downloaded,
        Status::Installing,
        Status::Detached,
        Status::Error,
        Status::Updated,
        Status::WrongVersion,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            Status::Enrolled => "enrolled",
            Status::Excluded => "excluded",
            Status::Eligible => "eligible / allocated",
            Status::Dosed => "dosed, waiting",
            Status::Downloading => "downloading",
            Status::Downloaded => "downloaded",
            Status::Installing => "installing",
            Status::Error => "command error",
            Status::Detached => "detached (restart)",
            Status::Updated => "updated",
            Status::WrongVersion => "wrong version",
        }
    }

    pub(super) fn class(self) -> &'static str {
        match self {
            Status::Enrolled => "s-enrolled",
            Status::Excluded => "s-excluded",
            Status::Eligible => "s-eligible",
            Status::Dosed => "s-dosed",
            Status::Downloading => "s-downloading",
            Status::Downloaded => "s-downloaded",
            Status::Installing => "s-installing",
            Status::Error => "s-error",
            Status::Detached => "s-detached",
            Status::Updated => "s-updated",
            Status::WrongVersion => "s-wrong",
        }
    }
}

pub(super) fn outcome_class(o: Outcome) -> &'static str {
    match o {
        Outcome::Updated => "o-good",
        Outcome::DownloadedNotInstalled | Outcome::NotDownloaded => "o-neutral",
        Outcome::WrongVersion | Outcome::CommandError | Outcome::LostToFollowUp => "o-bad",
        Outcome::NoResponse | Outcome::DoseUncertain => "o-warn",
        Outcome::NotDosed | Outcome::Excluded => "o-none",
    }
}

pub(super) fn badge(class: &str, text: &str) -> String {
    format!("<span class=\"badge {class}\">{}</span>", esc(text))
}

pub(super) fn answer_class(status: &str) -> &'static str {
    match status {
        "Acknowledged" => "a-ack",
        "Error" | "CommandFormatError" => "a-err",
        "NotNow" => "a-notnow",
        _ => "a-other",
    }
}
