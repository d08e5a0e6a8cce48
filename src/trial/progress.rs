//! The terminal progress view: one line per notable journal event, consumed from the same event
//! vocabulary the reports use (nothing here decides anything).

use super::journal::{Entry, Event};
use std::io::Write;

pub struct Progress {
    quiet: bool,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

fn short(udid: &str) -> &str {
    &udid[..udid.len().min(14)]
}

impl Progress {
    pub fn new() -> Progress {
        Progress { quiet: false }
    }

    pub fn quiet() -> Progress {
        Progress { quiet: true }
    }

    /// A line for the event, or none.
    pub fn line(e: &Entry) -> Option<String> {
        let t = e.at.get(11..19).unwrap_or("");
        let s = match &e.event {
            Event::EligibilityAssessed {
                udid,
                eligible,
                reasons,
                ..
            } => {
                if *eligible {
                    format!("{} eligible", short(udid))
                } else {
                    format!(
                        "{} excluded: {}",
                        short(udid),
                        reasons
                            .iter()
                            .map(|r| r.rule.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            }
            Event::Allocated { udid, arm, .. } => format!("{} → arm {arm}", short(udid)),
            Event::DoseEnqueued {
                udid,
                command_uuid,
                pushed,
                ..
            } => format!(
                "{} ScheduleOSUpdate queued ({command_uuid}){}",
                short(udid),
                if *pushed { ", pushed" } else { "" }
            ),
            Event::DoseFailed { udid, error, .. } => {
                format!("{} dose FAILED: {error}", short(udid))
            }
            Event::DoseUncertain { udid, reason, .. } => {
                format!("{} dose UNCERTAIN: {reason}", short(udid))
            }
            Event::MdmResult {
                udid,
                request_type,
                status,
                ..
            } => format!(
                "{} {} → {status}",
                short(udid),
                request_type.as_deref().unwrap_or("?")
            ),
            Event::DeviceReprobed {
                udid,
                attached,
                product_version,
                build_version,
                ..
            } => {
                if *attached {
                    format!(
                        "{} on USB: iOS {} ({})",
                        short(udid),
                        product_version.as_deref().unwrap_or("?"),
                        build_version.as_deref().unwrap_or("?")
                    )
                } else {
                    format!("{} not on USB (restarting?)", short(udid))
                }
            }
            Event::FollowUpEnded { udid, reason } => {
                format!("{} follow-up ended: {reason}", short(udid))
            }
            Event::RunInterrupted => "interrupted".into(),
            Event::RunFinished => "finished".into(),
            _ => return None,
        };
        Some(format!("[{t}] {s}"))
    }

    pub fn on(&mut self, e: &Entry) {
        if self.quiet {
            return;
        }
        if let Some(l) = Self::line(e) {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{l}");
        }
    }
}
