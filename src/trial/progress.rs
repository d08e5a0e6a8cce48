//! The terminal progress view: one line per notable journal event, consumed from the same event
//! vocabulary the reports use (nothing here decides anything).

use crate::journal::{Entry, Event};
use std::io::Write;

/// What an OS-update answer says, in a few words: "Downloading 45%", "DownloadOnly/Downloading".
fn update_detail(request_type: Option<&str>, raw_b64: &str) -> String {
    let Ok(rep) = crate::journal::answer::report(raw_b64) else {
        return String::new();
    };
    match request_type {
        Some("OSUpdateStatus") => crate::mdm::report::os_update_status(&rep)
            .and_then(|items| items.into_iter().next())
            .map(|i| {
                let pct = i
                    .download_percent_complete
                    .value
                    .map(|p| format!(" {:.0}%", p * 100.0))
                    .unwrap_or_default();
                let dl = if i.is_downloaded.value == Some(true) {
                    ", downloaded"
                } else {
                    ""
                };
                format!(": {}{pct}{dl}", i.status.unwrap_or_default())
            })
            .unwrap_or_else(|| ": nothing in progress".into()),
        Some("ScheduleOSUpdate") => crate::mdm::report::update_results(&rep)
            .and_then(|r| r.into_iter().next())
            .map(|u| {
                format!(
                    ": {}/{}",
                    u.install_action.unwrap_or_default(),
                    u.status.unwrap_or_default()
                )
            })
            .unwrap_or_else(|| ": no UpdateResults".into()),
        _ => String::new(),
    }
}

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
                "{} {} ({command_uuid}){}",
                short(udid),
                // `lab-ddm-<UUID>` is a DDM declaration's identifier (`runner::dose`).
                if command_uuid.starts_with("lab-ddm-") {
                    "DDM enforcement declaration given"
                } else {
                    "ScheduleOSUpdate queued"
                },
                match pushed {
                    Some(true) => ", pushed",
                    Some(false) => "",
                    None => ", push not reported by the MDM",
                }
            ),
            Event::DdmStatusReport { udid, raw_b64, .. } => format!(
                "{} DDM status: install-state {}",
                short(udid),
                crate::journal::answer::bytes(raw_b64)
                    .ok()
                    .and_then(|b| crate::mdm::ddm::StatusReport::parse(&b).ok())
                    .and_then(|r| r
                        .get("softwareupdate.install-state")
                        .and_then(|v| v.as_str())
                        .map(str::to_string))
                    .unwrap_or_else(|| "(not in this report)".into())
            ),
            Event::DoseFailed { udid, error, .. } => {
                format!("{} dose FAILED: {error}", short(udid))
            }
            Event::DoseUncertain { udid, reason, .. } => {
                format!("{} dose UNCERTAIN: {reason}", short(udid))
            }
            Event::DoseWithheld {
                udid, step, reason, ..
            } => format!("{} step {step} NOT SENT: {reason}", short(udid)),
            Event::DoseReconciled { udid, reason, .. } => {
                format!("{} dose reconciled from the ledger: {reason}", short(udid))
            }
            Event::MdmResult {
                udid,
                request_type,
                status,
                raw_b64,
                ..
            } => format!(
                "{} {} → {status}{}",
                short(udid),
                request_type.as_deref().unwrap_or("?"),
                update_detail(request_type.as_deref(), raw_b64)
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
