//! `radar/`: one radar-ready draft per anomaly a run showed (`radar/<detector-id>.md`, the
//! openradar layout: Title, Area, Classification, Reproducibility, Summary, Steps to Reproduce,
//! Expected Results, Actual Results, Version/Build, Configuration, Regression, Notes), and the
//! exact command and response plists as attachments (`radar/attachments/`), byte-identical to
//! what the harness queued (`DoseIntent.command_b64`) and the device sent (`MdmResult.raw_b64`,
//! `UpdatesOffered.updates.raw_b64`).
//!
//! Findings on a DDM dose (the `ddm_*` detectors) get a Feedback Assistant draft instead
//! (`feedback/<detector-id>.md`, `report::feedback`), with their attachments in
//! `feedback/attachments/`.
//!
//! Pure: the journal's entries and the text of the run's frozen `protocol.yaml` (for the steps)
//! in, files out. No draft at all when no detector fired.

use super::digest::{Digest, Raw};
use super::feedback;
use super::format::{human_duration, md_cell, md_seq_refs};
use crate::journal::fold::{Facts, RunFacts};
use crate::journal::{Entry, JournalError};
use crate::trial::protocol::{Protocol, TargetSpec, UntilSpec};
use crate::verdicts::anomalies::{self as evidence, Anomaly, Detector, Scope, Tally};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The folder, relative to the run folder.
pub const DIR: &str = "radar";

/// Every draft and attachment: (path relative to the run folder, bytes), in a stable order.
pub fn render(entries: &[Entry], protocol_yaml: Option<&str>) -> Vec<(PathBuf, Vec<u8>)> {
    let digest = Digest::of_entries(entries);
    render_digest(&digest, protocol_yaml, Some(entries)).expect("entries in memory are read")
}

/// [`render`] from a journal already read: the attachments are read again from the journal
/// (from `entries` when the digest was made from entries in memory).
pub(crate) fn render_digest(
    digest: &Digest,
    protocol_yaml: Option<&str>,
    entries: Option<&[Entry]>,
) -> Result<Vec<(PathBuf, Vec<u8>)>, JournalError> {
    let anomalies = digest.findings.anomalies();
    if anomalies.is_empty() {
        return Ok(Vec::new());
    }
    let tallies = digest.findings.tallies();
    let run = &digest.run;
    let protocol: Option<Protocol> =
        protocol_yaml.and_then(|t| crate::input::parse_yaml(Path::new("protocol.yaml"), t).ok());
    let seqs: BTreeSet<u64> = anomalies
        .iter()
        .flat_map(|a| a.responses.iter().chain(&a.evidence).copied())
        .chain(feedback::report_seqs(run, &anomalies))
        .collect();
    let commands: BTreeSet<(String, String)> = anomalies
        .iter()
        .filter_map(|a| Some((a.udid.clone(), a.command_uuid.clone()?)))
        .collect();
    let raw = digest.raw.fetch(entries, &seqs, &commands)?;
    let lab_version = digest.head.lab_version.clone();
    let ctx = Ctx {
        run,
        protocol: protocol.as_ref(),
        raw: &raw,
        lab_version,
    };
    let mut out = Vec::new();
    let mut attachments: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    for det in evidence::DETECTORS {
        let mine: Vec<&Anomaly> = anomalies.iter().filter(|a| a.detector == det.id).collect();
        if mine.is_empty() {
            continue;
        }
        let tally = tallies
            .iter()
            .find(|t| t.detector == det.id)
            .expect("a tally per detector");
        // A DDM dose's finding goes to Feedback Assistant instead (`report::feedback`).
        let to_feedback = feedback::is_feedback(det);
        let dir = if to_feedback { feedback::DIR } else { DIR };
        let mut files = Vec::new();
        for a in &mine {
            let found = if to_feedback {
                feedback::attachments_of(a, run, &raw)
            } else {
                attachments_of(a, &raw)
            };
            for (name, bytes, what) in found {
                files.push((name.clone(), what));
                attachments.insert(Path::new(dir).join("attachments").join(&name), bytes);
            }
        }
        if to_feedback {
            let text = feedback::draft(det, &mine, tally, &files, &ctx);
            out.push((feedback::draft_path(det), text.into_bytes()));
            continue;
        }
        let text = draft(det, &mine, tally, &files, &ctx);
        out.push((
            Path::new(DIR).join(format!("{}.md", det.id)),
            text.into_bytes(),
        ));
    }
    out.extend(attachments);
    Ok(out)
}

pub(super) struct Ctx<'a> {
    pub run: &'a RunFacts,
    pub protocol: Option<&'a Protocol>,
    pub raw: &'a Raw,
    pub lab_version: Option<String>,
}

/// A file-name-safe piece.
pub(super) fn safe(s: &str) -> String {
    super::format::file_safe(s)
}

/// (file name, bytes, what it is) for one anomaly.
fn attachments_of(a: &Anomaly, raw: &Raw) -> Vec<(String, Vec<u8>, String)> {
    let Some(uuid) = &a.command_uuid else {
        return Vec::new();
    };
    let stem = format!("{}-{}", safe(&a.udid), safe(uuid));
    let mut out = Vec::new();
    if let Some((rt, bytes)) = raw.commands.get(&(a.udid.clone(), uuid.clone())) {
        out.push((
            format!("{stem}-command.plist"),
            bytes.clone(),
            format!("the {rt} command as queued (CommandUUID {uuid})"),
        ));
    }
    for (k, seq) in a.responses.iter().enumerate() {
        let Some(bytes) = raw.answers.get(seq) else {
            continue;
        };
        let name = if k == 0 {
            format!("{stem}-response.plist")
        } else {
            format!("{stem}-response-{}.plist", k + 1)
        };
        out.push((
            name,
            bytes.clone(),
            format!("the device's answer as received (journal.jsonl#seq={seq})"),
        ));
    }
    out
}

/// The baseline probe record's value at a JSON pointer (`/baseline/…/value`), as a cell.
fn baseline(d: &Facts, pointer: &str) -> String {
    let path: Vec<&str> = pointer.split('/').skip(1).collect();
    d.probe
        .as_ref()
        .and_then(|p| p.at(&path))
        .map(|v| super::json_cell(&v))
        .unwrap_or_default()
}

pub(super) fn version(d: &Facts) -> String {
    d.starting_version().unwrap_or_default()
}

pub(super) fn build(d: &Facts) -> String {
    d.starting_build().unwrap_or_default()
}

pub(super) fn model(d: &Facts) -> String {
    let pt = baseline(d, "/baseline/product_type/value");
    let name = baseline(d, "/baseline/marketing_name/value");
    match (pt.is_empty(), name.is_empty()) {
        (false, false) => format!("{name} ({pt})"),
        (false, true) => pt,
        _ => name,
    }
}

fn passcode(d: &Facts) -> String {
    let l = baseline(d, "/baseline/passcode/password_protected/value");
    if l.is_empty() {
        baseline(d, "/mdm/passcode_present/value")
    } else {
        l
    }
}

fn power(d: &Facts) -> String {
    let ext = baseline(d, "/baseline/battery/external_connected/value");
    let level = baseline(d, "/baseline/battery/current_capacity/value");
    let level = if level.is_empty() {
        "unknown".to_string()
    } else {
        format!("{level} %")
    };
    if ext == "true" {
        format!("external power, battery {level}")
    } else {
        format!("battery {level}")
    }
}

pub(super) fn dev<'a>(run: &'a RunFacts, udid: &str) -> Option<&'a Facts> {
    run.devices.iter().find(|d| d.udid == udid)
}

fn draft(
    det: &Detector,
    mine: &[&Anomaly],
    tally: &Tally,
    files: &[(String, String)],
    ctx: &Ctx,
) -> String {
    let run = ctx.run;
    let affected: Vec<&Facts> = mine.iter().filter_map(|a| dev(run, &a.udid)).collect();
    let mut versions: Vec<String> = Vec::new();
    for d in &affected {
        let v = format!("iOS {} ({})", md_cell(&version(d)), md_cell(&build(d)));
        if !versions.contains(&v) {
            versions.push(v);
        }
    }
    let short_versions: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for d in &affected {
            let x = version(d);
            if !x.is_empty() && !v.contains(&x) {
                v.push(x);
            }
        }
        v
    };
    let n = tally.showed.len();
    let of = tally.in_situation.len();

    let mut s = String::new();
    let title = if short_versions.is_empty() {
        det.title.to_string()
    } else {
        format!("{} (iOS {})", det.title, short_versions.join(", "))
    };
    let _ = writeln!(s, "# {title}\n");
    simulated_banner(&mut s, run);
    let _ = writeln!(s, "- **Title:** {title}");
    let _ = writeln!(s, "- **Area:** Device Management");
    let _ = writeln!(s, "- **Classification:** {}", det.classification);
    provenance(&mut s, det, tally, run);

    let _ = writeln!(s, "\n## Summary\n");
    let _ = writeln!(
        s,
        "{} Seen on {n} of {of} devices in the same situation in a controlled trial run by `lab`.",
        det.description
    );

    let _ = writeln!(s, "\n## Steps to Reproduce\n");
    for (k, step) in steps(det, &affected, ctx).iter().enumerate() {
        let _ = writeln!(s, "{}. {step}", k + 1);
    }

    let _ = writeln!(s, "\n## Expected Results\n\n{}", det.expected);

    let _ = writeln!(s, "\n## Actual Results\n");
    for a in mine {
        let d = dev(run, &a.udid);
        let who = d
            .map(|d| format!("{}, iOS {} ({})", model(d), version(d), build(d)))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "- `{}` ({}): {} Evidence: {}.{}",
            a.udid,
            who,
            a.actual,
            md_seq_refs(&a.evidence),
            d.and_then(|d| occurred(d, &a.evidence, ctx.raw))
                .unwrap_or_default()
        );
    }

    let _ = writeln!(s, "\n## Version/Build\n");
    let _ = writeln!(s, "{}", versions.join(", "));
    let _ = writeln!(s, "\nTarget: {}.", targets(&affected));
    let _ = writeln!(s, "\nMDM server: {}.", mdm_server(ctx));
    if let Some(v) = &ctx.lab_version {
        let _ = writeln!(s, "\nHarness: lab {v}.");
    }

    configuration(&mut s, &affected);
    regression(&mut s, det, tally, run);
    notes(&mut s, det, mine, files, ctx);
    s
}

/// When it happened, by the journal's clock (UTC), to match the device's own logs (a
/// sysdiagnose): the times of the evidence the journal dates.
pub(super) fn occurred(d: &Facts, evidence: &[u64], raw: &Raw) -> Option<String> {
    let times: Vec<&str> = evidence
        .iter()
        .filter_map(|s| d.time_of(*s).or(raw.times.get(s).map(String::as_str)))
        .collect();
    let (first, last) = (times.iter().min()?, times.iter().max()?);
    Some(if first == last {
        format!(" Occurred at {first} (UTC, journal time).")
    } else {
        format!(" Occurred between {first} and {last} (UTC, journal time).")
    })
}

/// The builds the affected devices were to reach.
pub(super) fn targets(affected: &[&Facts]) -> String {
    let mut out: Vec<String> = Vec::new();
    for d in affected {
        let v = d.target.get("version").and_then(|v| v.as_str());
        for b in d.target_builds() {
            let t = match v {
                Some(v) => format!("iOS {} ({})", md_cell(v), md_cell(&b)),
                None => md_cell(&b),
            };
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    if out.is_empty() {
        "not recorded".into()
    } else {
        out.join(", ")
    }
}

/// The MDM server the doses went through, from the frozen protocol.
pub(super) fn mdm_server(ctx: &Ctx) -> String {
    let lab = ctx.protocol.map(|p| &p.lab);
    let embedded = |how: &str| match &ctx.lab_version {
        Some(v) => format!("`lab`'s embedded MDM server, lab {v}{how}"),
        None => format!("`lab`'s embedded MDM server{how}"),
    };
    match lab {
        Some(l) if l.simulated.is_some() => embedded(", in the simulated lab"),
        Some(l) => match &l.mdm {
            Some(m) => match m.kind {
                crate::trial::protocol::MdmKind::Embedded => embedded(""),
                crate::trial::protocol::MdmKind::Nanomdm => {
                    "NanoMDM (its version is not recorded by lab)".into()
                }
                crate::trial::protocol::MdmKind::Micromdm => {
                    "MicroMDM (its version is not recorded by lab)".into()
                }
            },
            None => "not recorded".into(),
        },
        None => "not recorded (no protocol.yaml in the run folder)".into(),
    }
}

/// Configuration: the baseline of the affected devices.
pub(super) fn configuration(s: &mut String, affected: &[&Facts]) {
    let _ = writeln!(s, "\n## Configuration\n");
    let _ = writeln!(
        s,
        "Baseline of the affected devices (journal `BaselineRecorded`).\n"
    );
    let _ = writeln!(
        s,
        "| UDID | Name | Model | iOS | Build | Supervised | Passcode | Battery % | Charging | External power | Free bytes (AmountDataAvailable) | Total disk bytes | MDM OSVersion | MDM BuildVersion | MDM BatteryLevel | MDM PasscodePresent | Arm |"
    );
    let _ = writeln!(s, "|{}", "---|".repeat(17));
    for d in affected {
        let row = [
            d.udid.clone(),
            baseline(d, "/baseline/device_name/value"),
            model(d),
            version(d),
            build(d),
            baseline(d, "/baseline/supervision/device_is_chaperoned/value"),
            passcode(d),
            baseline(d, "/baseline/battery/current_capacity/value"),
            baseline(d, "/baseline/battery/is_charging/value"),
            baseline(d, "/baseline/battery/external_connected/value"),
            baseline(d, "/baseline/disk/amount_data_available/value"),
            baseline(d, "/baseline/disk/total_disk_capacity/value"),
            baseline(d, "/mdm/os_version/value"),
            baseline(d, "/mdm/build_version/value"),
            baseline(d, "/mdm/battery_level/value"),
            baseline(d, "/mdm/passcode_present/value"),
            d.arm.clone().unwrap_or_default(),
        ];
        let _ = writeln!(
            s,
            "| {} |",
            row.iter()
                .map(|c| md_cell(c))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
}

/// Regression: the devices in the same situation grouped by version, model, passcode and
/// power, and which groups showed it.
pub(super) fn regression(s: &mut String, det: &Detector, tally: &Tally, run: &RunFacts) {
    let _ = writeln!(s, "\n## Regression\n");
    let _ = writeln!(
        s,
        "Devices in the same situation ({}), grouped by version, model, passcode and power state.\n",
        det.situation
    );
    let _ = writeln!(
        s,
        "| iOS | Build | Model | Passcode | Power | Devices | Showed it |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    let mut groups: Vec<([String; 5], usize, usize)> = Vec::new();
    for u in &tally.in_situation {
        let Some(d) = dev(run, u) else { continue };
        let key = [version(d), build(d), model(d), passcode(d), power(d)];
        let showed = tally.showed.contains(u) as usize;
        match groups.iter_mut().find(|g| g.0 == key) {
            Some(g) => {
                g.1 += 1;
                g.2 += showed;
            }
            None => groups.push((key, 1, showed)),
        }
    }
    for (k, total, showed) in &groups {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {total} | {showed} of {total} |",
            md_cell(&k[0]),
            md_cell(&k[1]),
            md_cell(&k[2]),
            md_cell(&k[3]),
            md_cell(&k[4]),
        );
    }
    let did: Vec<String> = groups
        .iter()
        .filter(|g| g.2 > 0)
        .map(|g| format!("iOS {} on {}", md_cell(&g.0[0]), md_cell(&g.0[2])))
        .collect();
    let did_not: Vec<String> = groups
        .iter()
        .filter(|g| g.2 < g.1)
        .map(|g| format!("iOS {} on {}", md_cell(&g.0[0]), md_cell(&g.0[2])))
        .collect();
    let _ = writeln!(
        s,
        "\nShowed it: {}. Did not: {}.",
        if did.is_empty() {
            "none".into()
        } else {
            did.join("; ")
        },
        if did_not.is_empty() {
            "none".into()
        } else {
            did_not.join("; ")
        }
    );
}

/// Notes and the list of attachments.
fn notes(s: &mut String, det: &Detector, mine: &[&Anomaly], files: &[(String, String)], ctx: &Ctx) {
    let _ = writeln!(s, "\n## Notes\n");
    let _ = writeln!(s, "- Detector `{}`: {}", det.id, det.description);
    let _ = writeln!(
        s,
        "- Expected Results quote Apple's documented schema and documentation; the evidence is in the run's `journal.jsonl` at the sequence numbers given under Actual Results."
    );
    let _ = writeln!(
        s,
        "- Reproducibility is n of N over the devices of this run like those that showed it (same iOS version and build, model and passcode state), with the figure over all devices in the same situation beside it: Always = all, Sometimes = at least a third, Rarely = fewer."
    );
    if mine.iter().any(|a| {
        a.command_uuid
            .as_ref()
            .is_some_and(|u| !ctx.raw.commands.contains_key(&(a.udid.clone(), u.clone())))
    }) {
        let _ = writeln!(
            s,
            "- Query commands (AvailableOSUpdates, OSUpdateStatus, DeviceInformation, SecurityInfo) carry no keys besides RequestType; the journal keeps the bytes of dose commands only, so only their answers are attached for those."
        );
    }
    let _ = writeln!(
        s,
        "- Attachments are byte-identical to what the harness queued (`DoseIntent.command_b64`) and what the device sent (`MdmResult.raw_b64`). A sysdiagnose and an `mdmclient` log excerpt of the affected devices should be added by hand before filing."
    );
    attachments_section(s, files);
}

/// The lines of a draft (radar or Feedback Assistant) that say how often it was seen, which
/// detector and source, and in which trial.
pub(crate) fn provenance(s: &mut String, det: &Detector, tally: &Tally, run: &RunFacts) {
    let (n, of) = (tally.showed.len(), tally.in_situation.len());
    let like = LikeThose::of(tally, run);
    let _ = writeln!(
        s,
        "- **Reproducibility:** {} ({} of {} devices like those that showed it: {}; {n} of {of} of all devices in the same situation: {})",
        evidence::reproducibility(like.showed, like.total),
        like.showed,
        like.total,
        if like.groups.is_empty() {
            "none".to_string()
        } else {
            like.groups.join("; ")
        },
        det.situation
    );
    let _ = writeln!(s, "- **Detector:** `{}`", det.id);
    let _ = writeln!(s, "- **Source:** {}", det.source);
    if let Some(t) = &run.trial_id {
        let _ = writeln!(
            s,
            "- **Trial:** `{t}` (protocol sha256 `{}`)",
            run.protocol_sha256.as_deref().unwrap_or("unknown")
        );
    }
}

/// The devices "like those that showed it": the same iOS version and build, model and passcode
/// state as a device that showed the anomaly (issue 15: a bug seen on the one 11.3.1 device is
/// 1 of 1 there, not "Rarely (1 of 8)" over every version in the run).
pub(crate) struct LikeThose {
    pub showed: usize,
    pub total: usize,
    /// Each such group, as "iOS 11.3.1 (15E302), iPhone 8 (iPhone10,4), passcode false".
    pub groups: Vec<String>,
}

impl LikeThose {
    pub(crate) fn of(tally: &Tally, run: &RunFacts) -> LikeThose {
        let key = |d: &Facts| [version(d), build(d), model(d), passcode(d)];
        let showing: Vec<[String; 4]> = tally
            .showed
            .iter()
            .filter_map(|u| dev(run, u))
            .map(key)
            .fold(Vec::new(), |mut v, k| {
                if !v.contains(&k) {
                    v.push(k);
                }
                v
            });
        let (mut showed, mut total) = (0, 0);
        for u in &tally.in_situation {
            let Some(d) = dev(run, u) else { continue };
            if showing.contains(&key(d)) {
                total += 1;
                showed += tally.showed.contains(u) as usize;
            }
        }
        let groups = showing
            .iter()
            .map(|k| {
                format!(
                    "iOS {} ({}), {}, passcode {}",
                    md_cell(&k[0]),
                    md_cell(&k[1]),
                    md_cell(&k[2]),
                    md_cell(if k[3].is_empty() { "unknown" } else { &k[3] })
                )
            })
            .collect();
        LikeThose {
            showed,
            total,
            groups,
        }
    }
}

/// A draft from a simulated run says so first (issue 15): it must not pass for evidence from
/// real devices.
pub(crate) fn simulated_banner(s: &mut String, run: &RunFacts) {
    if run.simulated {
        let scale = run.time_scale.filter(|t| *t > 0.0).unwrap_or(1.0);
        let _ = writeln!(
            s,
            "> **Rehearsal on simulated devices — not evidence; do not file.** The devices were \
             `lab`'s simulated lab, its clock running {scale}× faster than the wall clock.\n"
        );
    }
}

/// The last note and the `## Attachments` list of a draft (radar or Feedback Assistant).
pub(crate) fn attachments_section(s: &mut String, files: &[(String, String)]) {
    let _ = writeln!(
        s,
        "- Generated by `lab report` from the run folder; regenerating gives the same bytes."
    );
    let _ = writeln!(s, "\n## Attachments\n");
    if files.is_empty() {
        let _ = writeln!(s, "None recorded in the journal.");
    }
    for (name, what) in files {
        let _ = writeln!(s, "- `attachments/{name}`: {what}");
    }
}

/// Steps to Reproduce: from the frozen protocol when it parses, else from the journal.
fn steps(det: &Detector, affected: &[&Facts], ctx: &Ctx) -> Vec<String> {
    let mut out = vec![
        "Take a supervised iPhone enrolled in an MDM server and connected over USB, in the state given under Configuration.".to_string(),
        "Record its baseline over lockdown (usbmuxd) and through the MDM (DeviceInformation, SecurityInfo), then send AvailableOSUpdates.".to_string(),
    ];
    if det.scope == Scope::Dose {
        let p = ctx.protocol;
        let target = match p.map(|p| &p.target) {
            Some(TargetSpec::ProductVersion(v)) => format!("ProductVersion {v}"),
            Some(TargetSpec::ProductKey(k)) => format!("ProductKey {k}"),
            _ => {
                "the ProductKey of the newest update the device's AvailableOSUpdates answer offers"
                    .to_string()
            }
        };
        let mut arms: Vec<String> = Vec::new();
        for d in affected {
            if let Some(a) = &d.arm
                && !arms.contains(a)
            {
                arms.push(a.clone());
            }
        }
        let specs: Vec<_> = p
            .map(|p| {
                p.arms
                    .iter()
                    .filter(|a| arms.contains(&a.name))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if !specs.is_empty() {
            for a in specs {
                let mut step = match a.install_action {
                    Some(action) => format!(
                        "Arm `{}`: send ScheduleOSUpdate with Updates = [{{{target}, InstallAction: {}}}].",
                        a.name,
                        action.as_str()
                    ),
                    None => format!(
                        "Arm `{}`: post the DDM declaration {} ({target}) to the enrollment and sync it.",
                        a.name,
                        crate::mdm::ddm::ENFORCEMENT_SPECIFIC
                    ),
                };
                if let Some(f) = &a.follow_up_step {
                    let _ = write!(
                        step,
                        " Once OSUpdateStatus reports IsDownloaded, send ScheduleOSUpdate again with InstallAction {}.",
                        f.install_action.as_str()
                    );
                }
                out.push(step);
            }
        } else {
            // No (readable) protocol: the steps the journal shows were sent.
            let mut seen: Vec<(u32, String)> = Vec::new();
            for d in affected {
                for i in d
                    .intents
                    .iter()
                    .filter(|i| i.request_type == "ScheduleOSUpdate")
                {
                    let k = (i.step, i.install_action.clone());
                    if !seen.contains(&k) {
                        seen.push(k);
                    }
                }
            }
            seen.sort();
            for (step, action) in seen {
                out.push(format!(
                    "Step {step}: send ScheduleOSUpdate with Updates = [{{{target}, InstallAction: {action}}}]."
                ));
            }
        }
        if let Some(p) = p {
            let f = &p.follow_up;
            let until = match &f.until {
                UntilSpec::Updated => "the device reports the target build".to_string(),
                UntilSpec::Downloaded => "OSUpdateStatus reports the update downloaded".into(),
                UntilSpec::Status(st) => format!("OSUpdateStatus reports {st}"),
            };
            out.push(format!(
                "Poll OSUpdateStatus every {}{} for up to {}, or until {until}.",
                human_duration(f.poll_interval.0),
                if f.reprobe {
                    " and re-read ProductVersion/BuildVersion over USB"
                } else {
                    ""
                },
                human_duration(f.max_duration.0)
            ));
        } else {
            out.push("Poll OSUpdateStatus and re-read the build over USB until the follow-up window closes.".into());
        }
    }
    out.push(det.trigger.to_string());
    if let Some(p) = ctx.protocol {
        out.push(format!(
            "The whole protocol is trial `{}` (\"{}\"), frozen in the run folder as `protocol.yaml`.",
            p.id, p.title
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Event;
    use crate::report::digest::b64;
    use crate::verdicts::outcome::testkit::J;
    use plist::Value;

    fn quirky() -> J {
        let mut j = J::new();
        j.device("U1", true)
            .device("U2", true)
            .allocate("U1", "a")
            .allocate("U2", "a")
            .consent(&["U1", "U2"])
            .dose("U1", 1, "C1")
            .dose("U2", 1, "C2")
            .schedule_answer("U1", "C1", "Acknowledged")
            .schedule_answer("U2", "C2", "Acknowledged")
            .status("U1", "S1", 0.5, Value::Integer(0.into()))
            .status("U2", "S2", 0.5, Value::Boolean(false));
        j
    }

    #[test]
    fn a_simulated_run_s_draft_says_it_is_no_evidence_first() {
        let mut j = quirky();
        let md = |j: &J| String::from_utf8(render(&j.entries, None)[0].1.clone()).unwrap();
        assert!(!md(&j).contains("simulated"), "{}", md(&j));
        if let Event::RunStarted {
            simulated,
            time_scale,
            ..
        } = &mut j.entries[0].event
        {
            *simulated = true;
            *time_scale = Some(120.0);
        }
        let text = md(&j);
        let after_title = text.split_once("\n\n").unwrap().1;
        assert!(
            after_title
                .starts_with("> **Rehearsal on simulated devices — not evidence; do not file.**"),
            "{text}"
        );
        assert!(text.contains("120× faster"));
    }

    /// Issue 15: reproducibility within the devices like those that showed it (version, build,
    /// model, passcode), with the all-devices figure beside it; when, the target and the MDM.
    #[test]
    fn reproducibility_is_counted_among_devices_like_those_that_showed_it() {
        let mut j = J::new();
        for u in ["U1", "U2", "U3"] {
            j.device(u, true).allocate(u, "a");
        }
        // U3 runs another version: not like U1, which shows the anomaly; U2 is like it.
        for e in &mut j.entries {
            if let Event::BaselineRecorded { udid, probe } = &mut e.event
                && udid == "U3"
            {
                *probe = crate::verdicts::outcome::testkit::probe("U3", "16.1", "20B82");
            }
        }
        j.consent(&["U1", "U2", "U3"]);
        for (u, c, s) in [("U1", "C1", "S1"), ("U2", "C2", "S2"), ("U3", "C3", "S3")] {
            j.dose(u, 1, c).schedule_answer(u, c, "Acknowledged");
            let downloaded = if u == "U1" {
                Value::Integer(0.into())
            } else {
                Value::Boolean(false)
            };
            j.status(u, s, 0.5, downloaded);
        }
        let files = render(&j.entries, None);
        let md = String::from_utf8(files[0].1.clone()).unwrap();
        assert!(
            md.contains("- **Reproducibility:** Sometimes (1 of 2 devices like those that showed it: iOS 15.7 (19H12), iPhone10,3, passcode unknown; 1 of 3 of all devices in the same situation"),
            "{md}"
        );
        assert!(
            md.contains("Occurred at 2023-11-14T22:13:38.000Z (UTC, journal time)."),
            "{md}"
        );
        assert!(md.contains("Target: iOS 15.8 (19H390)."), "{md}");
        assert!(md.contains("MDM server: not recorded (no protocol.yaml in the run folder)."));
    }

    #[test]
    fn one_draft_per_detector_with_n_of_n_and_byte_identical_attachments() {
        let j = quirky();
        let files = render(&j.entries, None);
        let names: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
        assert_eq!(
            names,
            [
                "radar/documented_type_mismatch.md",
                "radar/attachments/U1-S1-response.plist"
            ]
        );
        let md = String::from_utf8(files[0].1.clone()).unwrap();
        assert!(
            md.contains("- **Reproducibility:** Sometimes (1 of 2 devices"),
            "{md}"
        );
        for h in [
            "## Summary",
            "## Steps to Reproduce",
            "## Expected Results",
            "## Actual Results",
            "## Version/Build",
            "## Configuration",
            "## Regression",
            "## Notes",
            "- **Area:** Device Management",
            "- **Classification:** Other Bug",
        ] {
            assert!(md.contains(h), "{h}\n{md}");
        }
        assert!(md.contains("| 15.7 | 19H12 | iPhone10,3 |"), "{md}");
        assert!(md.contains("| 2 | 1 of 2 |"), "{md}");
        // The attachment is the raw answer of the journal.
        let raw = j
            .entries
            .iter()
            .find_map(|e| match &e.event {
                Event::MdmResult {
                    command_uuid,
                    raw_b64,
                    ..
                } if command_uuid == "S1" => b64(raw_b64),
                _ => None,
            })
            .unwrap();
        assert_eq!(files[1].1, raw);
        // Deterministic.
        assert_eq!(render(&j.entries, None), files);
    }

    #[test]
    fn dose_commands_are_attached_and_protocol_steps_are_used() {
        let mut j = J::new();
        j.device("U1", true)
            .allocate("U1", "two-step")
            .consent(&["U1"])
            .dose("U1", 1, "C1")
            .result("U1", "C1", Some("ScheduleOSUpdate"), "Error", |_| {})
            .status("U1", "S1", 0.3, Value::Boolean(false));
        let proto = "id: q\ntitle: Q\nlab: { usbmuxd: [\"/x\"] }\ntarget: latest\narms:\n  - name: two-step\n    install_action: Default\n    follow_up_step: { install_action: Default, when: downloaded }\nfollow_up: { poll_interval: 30s, max_duration: 1h }\n";
        let files = render(&j.entries, Some(proto));
        let md = files
            .iter()
            .find(|(p, _)| p.ends_with("schedule_error_but_proceeds.md"))
            .map(|(_, b)| String::from_utf8(b.clone()).unwrap())
            .unwrap();
        assert!(md.contains("Arm `two-step`: send ScheduleOSUpdate"), "{md}");
        assert!(md.contains("send ScheduleOSUpdate again with InstallAction Default"));
        assert!(md.contains("every 30 s"), "{md}");
        assert!(md.contains("for up to 1 h"), "{md}");
        let cmd = files
            .iter()
            .find(|(p, _)| p.ends_with("attachments/U1-C1-command.plist"))
            .unwrap();
        assert_eq!(cmd.1, b"\0\0\0".to_vec(), "DoseIntent.command_b64 AAAA");
        assert!(
            files
                .iter()
                .any(|(p, _)| p.ends_with("attachments/U1-C1-response.plist"))
        );
    }

    #[test]
    fn nothing_when_nothing_was_seen() {
        let mut j = J::new();
        j.device("U1", true)
            .allocate("U1", "a")
            .consent(&["U1"])
            .dose("U1", 1, "C1");
        assert!(render(&j.entries, None).is_empty());
        assert!(render(&[], None).is_empty());
    }
}
