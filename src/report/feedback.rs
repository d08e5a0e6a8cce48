//! `feedback/`: for an anomaly of a DDM software-update dose (the `ddm_*` detectors, issue 13),
//! a draft for Apple's Feedback Assistant instead of a radar draft (`feedback/<detector-id>.md`,
//! in the form's fields: Title, Area, Type, Description, Steps, Expected, Actual,
//! Configuration), with the same evidence as a radar draft: n of N, the regression grouping,
//! journal references, and attachments byte-identical to what was sent and received — the
//! declaration JSON as the harness journalled it (`DoseIntent.command_b64`) and every status
//! report of the affected devices as the DDM server stored it (`DdmStatusReport.raw_b64`).
//!
//! No feedback or radar number is ever written: the draft is filed by hand. Pure, as
//! `report::radar` (which calls it).

use super::digest::Raw;
use super::format::{human_duration, md_seq_refs};
use super::radar::{self, Ctx};
use crate::journal::fold::{Facts, RunFacts};
use crate::trial::protocol::{DeadlineSpec, TargetSpec, UntilSpec};
use crate::verdicts::anomalies::{self as evidence, Anomaly, Detector, Tally};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The folder, relative to the run folder.
pub const DIR: &str = "feedback";

/// Feedback Assistant's area and type for these drafts (the form's pick lists).
pub const AREA: &str = "Device Management";
pub const TYPE: &str = "Incorrect/Unexpected Behavior";

/// Does this detector's finding go to Feedback Assistant rather than a radar draft? Those of
/// DDM doses (`anomalies::ddm`).
pub fn is_feedback(det: &Detector) -> bool {
    det.id.starts_with("ddm_")
}

/// The path of a detector's draft.
pub fn draft_path(det: &Detector) -> PathBuf {
    Path::new(DIR).join(format!("{}.md", det.id))
}

/// The journal seqs of every status report of the devices `anomalies` concern: all attached.
pub(super) fn report_seqs<'a>(
    run: &'a RunFacts,
    anomalies: &'a [Anomaly],
) -> impl Iterator<Item = u64> + 'a {
    anomalies
        .iter()
        .filter(|a| evidence::detector(a.detector).is_some_and(is_feedback))
        .filter_map(|a| radar::dev(run, &a.udid))
        .flat_map(|d| d.ddm_reports.iter().map(|r| r.seq))
}

/// (file name, bytes, what it is) for one anomaly: the declaration, then every status report
/// of the device in journal order.
pub(super) fn attachments_of(
    a: &Anomaly,
    run: &RunFacts,
    raw: &Raw,
) -> Vec<(String, Vec<u8>, String)> {
    let mut out = Vec::new();
    let udid = radar::safe(&a.udid);
    if let Some(uuid) = &a.command_uuid
        && let Some((rt, bytes)) = raw.commands.get(&(a.udid.clone(), uuid.clone()))
    {
        out.push((
            format!("{udid}-{}-declaration.json", radar::safe(uuid)),
            bytes.clone(),
            format!("the declaration {rt} as posted (Identifier {uuid}), byte for byte"),
        ));
    }
    for r in radar::dev(run, &a.udid)
        .map(|d| d.ddm_reports.as_slice())
        .unwrap_or_default()
    {
        if let Some(bytes) = raw.answers.get(&r.seq) {
            out.push((
                format!("{udid}-status-report-seq{}.json", r.seq),
                bytes.clone(),
                format!(
                    "status report {} as the DDM server received it{} (journal.jsonl#seq={})",
                    r.report_id,
                    r.received_at
                        .as_deref()
                        .map(|t| format!(" at {t}"))
                        .unwrap_or_default(),
                    r.seq
                ),
            ));
        }
    }
    out
}

/// The draft of one detector's findings.
pub(super) fn draft(
    det: &Detector,
    mine: &[&Anomaly],
    tally: &Tally,
    files: &[(String, String)],
    ctx: &Ctx,
) -> String {
    let run = ctx.run;
    let affected: Vec<&Facts> = mine
        .iter()
        .filter_map(|a| radar::dev(run, &a.udid))
        .collect();
    let mut versions: Vec<String> = Vec::new();
    for d in &affected {
        let v = radar::version(d);
        if !v.is_empty() && !versions.contains(&v) {
            versions.push(v);
        }
    }
    let (n, of) = (tally.showed.len(), tally.in_situation.len());
    let title = if versions.is_empty() {
        det.title.to_string()
    } else {
        format!("{} (iOS {})", det.title, versions.join(", "))
    };
    let mut s = String::new();
    let _ = writeln!(s, "# {title}\n");
    radar::simulated_banner(&mut s, run);
    let _ = writeln!(
        s,
        "Draft for Feedback Assistant (not filed: no feedback number is assigned until it is).\n"
    );
    let _ = writeln!(s, "- **Title:** {title}");
    let _ = writeln!(s, "- **Area:** {AREA}");
    let _ = writeln!(s, "- **Type:** {TYPE}");
    super::radar::provenance(&mut s, det, tally, run);
    let _ = writeln!(s, "\n## Description\n");
    let _ = writeln!(
        s,
        "{} Seen on {n} of {of} devices in the same situation in a controlled trial run by `lab`, which gave each device the declaration `{}` through declarative device management.",
        det.description,
        crate::mdm::ddm::ENFORCEMENT_SPECIFIC
    );
    let _ = writeln!(s, "\n## Steps\n");
    for (k, step) in steps(det, &affected, ctx).iter().enumerate() {
        let _ = writeln!(s, "{}. {step}", k + 1);
    }
    let _ = writeln!(s, "\n## Expected\n\n{}", det.expected);
    let _ = writeln!(s, "\n## Actual\n");
    for a in mine {
        let who = radar::dev(run, &a.udid)
            .map(|d| {
                format!(
                    "{}, iOS {} ({})",
                    radar::model(d),
                    radar::version(d),
                    radar::build(d)
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "- `{}` ({who}): {} Evidence: {}.{}",
            a.udid,
            a.actual,
            md_seq_refs(&a.evidence),
            radar::dev(run, &a.udid)
                .and_then(|d| radar::occurred(d, &a.evidence, ctx.raw))
                .unwrap_or_default()
        );
    }
    radar::configuration(&mut s, &affected);
    let _ = writeln!(s, "\nTarget: {}.", radar::targets(&affected));
    let _ = writeln!(s, "\nMDM server: {}.", radar::mdm_server(ctx));
    if let Some(v) = &ctx.lab_version {
        let _ = writeln!(s, "\nHarness: lab {v}.");
    }
    radar::regression(&mut s, det, tally, run);
    notes(&mut s, files);
    s
}

/// Steps: from the frozen protocol (the affected devices' arms, the follow-up), else the
/// journal's declarations.
fn steps(det: &Detector, affected: &[&Facts], ctx: &Ctx) -> Vec<String> {
    let mut out = vec![
        "Take a supervised iPhone enrolled in an MDM server and connected over USB, in the state given under Configuration.".to_string(),
        "Turn on declarative management (the DeclarativeManagement command) and post a com.apple.configuration.management.status-subscriptions declaration for every softwareupdate.* and device.operating-system.* status item, activated by com.apple.activation.simple; sync the enrollment.".to_string(),
    ];
    let p = ctx.protocol;
    let target = match p.map(|p| &p.target) {
        Some(TargetSpec::ProductVersion(v)) => format!("TargetOSVersion {v}"),
        _ => "TargetOSVersion the newest version the device is offered".to_string(),
    };
    let mut arms: Vec<&str> = Vec::new();
    for d in affected {
        if let Some(a) = d.arm.as_deref()
            && !arms.contains(&a)
        {
            arms.push(a);
        }
    }
    let specs: Vec<_> = p
        .map(|p| {
            p.arms
                .iter()
                .filter(|a| arms.contains(&a.name.as_str()))
                .collect()
        })
        .unwrap_or_default();
    for a in &specs {
        let deadline = match a.ddm_enforcement.as_ref().map(|e| &e.deadline) {
            Some(DeadlineSpec::Local(t)) => format!("TargetLocalDateTime {t}"),
            Some(DeadlineSpec::AfterDose(d)) => format!(
                "TargetLocalDateTime {} after the post, on the device's clock",
                human_duration(d.0)
            ),
            Some(DeadlineSpec::BeforeDose(d)) => format!(
                "TargetLocalDateTime {} before the post (already past), on the device's clock",
                human_duration(d.0)
            ),
            None => "its TargetLocalDateTime".into(),
        };
        out.push(format!(
            "Arm `{}`: post the declaration {} ({target}, {deadline}) to the enrollment and sync it; the exact JSON is attached.",
            a.name,
            crate::mdm::ddm::ENFORCEMENT_SPECIFIC
        ));
    }
    if specs.is_empty() {
        out.push(format!(
            "Post the declaration {} attached (its TargetOSVersion and TargetLocalDateTime as sent) to the enrollment and sync it.",
            crate::mdm::ddm::ENFORCEMENT_SPECIFIC
        ));
    }
    match p.map(|p| &p.follow_up) {
        Some(f) => {
            let until = match &f.until {
                UntilSpec::Updated => "the device reports the target build".to_string(),
                UntilSpec::Downloaded => "the update is reported downloaded".into(),
                UntilSpec::Status(st) => format!("the status reports {st}"),
            };
            out.push(format!(
                "Collect the device's status reports every {}{} for up to {}, or until {until}.",
                human_duration(f.poll_interval.0),
                if f.reprobe {
                    " and re-read ProductVersion/BuildVersion over USB"
                } else {
                    ""
                },
                human_duration(f.max_duration.0)
            ));
        }
        None => out.push(
            "Collect the device's status reports and re-read its build over USB until the follow-up window closes.".into(),
        ),
    }
    out.push(det.trigger.to_string());
    if let Some(p) = p {
        out.push(format!(
            "The whole protocol is trial `{}` (\"{}\"), frozen in the run folder as `protocol.yaml`.",
            p.id, p.title
        ));
    }
    out
}

fn notes(s: &mut String, files: &[(String, String)]) {
    let _ = writeln!(s, "\n## Notes\n");
    let _ = writeln!(
        s,
        "- Expected quotes Apple's documented schema and documentation; the evidence is in the run's `journal.jsonl` at the sequence numbers given under Actual."
    );
    let _ = writeln!(
        s,
        "- Reproducibility is n of N over the devices of this run like those that showed it (same iOS version and build, model and passcode state), with the figure over all devices in the same situation beside it: Always = all, Sometimes = at least a third, Rarely = fewer."
    );
    let _ = writeln!(
        s,
        "- Status reports are incremental (each holds what changed since the last one the server accepted): read them in order. Attachments are byte-identical to the declaration as posted and to each report as received. A sysdiagnose of the affected devices should be added by hand before filing."
    );
    super::radar::attachments_section(s, files);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdicts::outcome::testkit::J;
    use serde_json::json;

    /// Two devices given the declaration; `F` reports failed, `P` prepared.
    fn failed_and_prepared() -> J {
        let mut j = J::new();
        for u in ["F", "P"] {
            j.device(u, true).allocate(u, "a");
        }
        j.consent(&["F", "P"]);
        j.ddm_dose("F", "DF", "15.8", "2026-12-01T11:00:00")
            .ddm_dose("P", "DP", "15.8", "2026-12-01T11:00:00")
            .ddm_state("F", "downloading")
            .ddm_report(
                "F",
                json!({"softwareupdate": {"install-state": "failed",
                    "failure-reason": {"count": 1, "reason": "no space"}}}),
            )
            .ddm_state("P", "prepared");
        j
    }

    fn file<'a>(files: &'a [(PathBuf, Vec<u8>)], path: &str) -> Option<&'a [u8]> {
        files
            .iter()
            .find(|(p, _)| p == Path::new(path))
            .map(|(_, b)| b.as_slice())
    }

    #[test]
    fn a_ddm_finding_gets_a_feedback_draft_not_a_radar_draft() {
        let j = failed_and_prepared();
        let files = radar::render(&j.entries, None);
        assert!(
            files.iter().all(|(p, _)| !p.starts_with(radar::DIR)),
            "{files:?}"
        );
        let md = String::from_utf8(
            file(&files, "feedback/ddm_install_failed.md")
                .expect("the draft")
                .to_vec(),
        )
        .unwrap();
        for field in [
            "- **Area:** Device Management",
            "- **Type:** Incorrect/Unexpected Behavior",
            "## Description",
            "## Steps",
            "## Expected",
            "## Actual",
            "## Configuration",
            "## Regression",
            "1 of 2 devices in the same situation",
            "reason no space",
        ] {
            assert!(md.contains(field), "{field} missing:\n{md}");
        }
        assert!(!md.contains("rdar") && !md.contains("FB1"), "{md}");
    }

    #[test]
    fn the_declaration_and_every_status_report_are_attached_byte_for_byte() {
        let j = failed_and_prepared();
        let files = radar::render(&j.entries, None);
        let decl = J::declaration("DF", "15.8", "2026-12-01T11:00:00");
        assert_eq!(
            file(&files, "feedback/attachments/F-DF-declaration.json"),
            Some(decl.as_bytes())
        );
        let reports: Vec<(u64, Vec<u8>)> = j
            .entries
            .iter()
            .filter_map(|e| match &e.event {
                crate::journal::Event::DdmStatusReport { udid, raw_b64, .. } if udid == "F" => {
                    Some((e.seq, crate::journal::answer::bytes(raw_b64).unwrap()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(reports.len(), 2);
        for (seq, bytes) in reports {
            let name = format!("feedback/attachments/F-status-report-seq{seq}.json");
            assert_eq!(file(&files, &name), Some(bytes.as_slice()), "{name}");
        }
        // The device that did not show it has nothing attached.
        assert!(
            files
                .iter()
                .all(|(p, _)| !p.to_string_lossy().contains("attachments/P-"))
        );
    }
}
