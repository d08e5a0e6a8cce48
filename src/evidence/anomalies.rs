//! The anomaly detectors: known ways iOS devices (and MDM servers) have been seen to depart from
//! Apple's documented MDM OS-update behaviour, checked against a run's journal.
//!
//! [`detect`] runs every detector of [`DETECTORS`] and returns what they found, one [`Anomaly`]
//! per detector and device, in the order of `DETECTORS` and then of first discovery. [`situations`]
//! tells, per detector, which devices were in the situation the detector judges (the `N` of a
//! radar's "n of N") and which of them showed the anomaly (the `n`). Both are pure.

use crate::journal::{Entry, Event};
use crate::mdm::report::ReportStatus;
use crate::trial::outcome::{Answer, AvailFacts, Facts, OsItem, RunFacts, decode_report, gather};
use std::collections::{BTreeSet, HashMap};

/// Whether a detector looks at the baseline (before any dose) or at the doses and follow-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Baseline,
    Dose,
}

/// A detector: what it looks for and where that expectation comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detector {
    /// Stable snake_case id; names the radar draft (`radar/<id>.md`).
    pub id: &'static str,
    /// The radar's title (without the affected versions, which the draft adds).
    pub title: &'static str,
    /// One line: what the detector flags.
    pub description: &'static str,
    /// Radar number or document the behaviour was reported in.
    pub source: &'static str,
    /// What Apple's documented schema / documentation says should happen (Expected Results).
    pub expected: &'static str,
    /// The devices counted in `N`, in words.
    pub situation: &'static str,
    /// Radar classification (Serious Bug, Other Bug, …).
    pub classification: &'static str,
    /// What to do or watch for beyond the protocol's steps to see it.
    pub trigger: &'static str,
    pub scope: Scope,
}

/// Every detector, in report order.
pub const DETECTORS: &[Detector] = &[
    Detector {
        id: "documented_type_mismatch",
        title: "OSUpdateStatus/AvailableOSUpdates value sent with another type than documented (IsDownloaded as an integer)",
        description: "A documented <boolean> or <real> of an OSUpdateStatus or AvailableOSUpdates item (IsDownloaded, DownloadPercentComplete, IsCritical, RestartRequired, AllowsInstallLater, IsSecurityResponse) arrived with another plist type or out of its range.",
        source: "rdar 45414737 (lionheart/openradar-mirror#20593)",
        expected: "OSUpdateStatusItem: IsDownloaded <boolean>, DownloadPercentComplete <real> 0.0–1.0 (Apple device-management schema, mdm/commands/system.update.status.yaml). AvailableOSUpdatesItem: IsCritical, RestartRequired, AllowsInstallLater, IsSecurityResponse <boolean> (system.update.available.yaml).",
        situation: "devices whose OSUpdateStatus or AvailableOSUpdates answers carried update items",
        classification: "Other Bug",
        trigger: "Send OSUpdateStatus while the update downloads and after it has downloaded; read the raw plist's value types.",
        scope: Scope::Dose,
    },
    Detector {
        id: "schedule_error_but_proceeds",
        title: "ScheduleOSUpdate answered Error, yet the device downloads the update or shows the install prompt",
        description: "A ScheduleOSUpdate answered Status Error (or an UpdateResults item InstallAction Error), after which the device downloaded the update, showed the install prompt (operator observation) or installed it.",
        source: "rdar 45414692 (lionheart/openradar-mirror#20595)",
        expected: "Status Error means the command failed (\"See the ErrorChain\"); UpdateResultsItem InstallAction Error means \"An error occurred during scheduling\" (Apple device-management schema, mdm/commands/system.update.schedule.yaml). A command that failed should have no effect.",
        situation: "devices that answered a ScheduleOSUpdate (Acknowledged, Error or CommandFormatError)",
        classification: "Serious Bug",
        trigger: "After the Error answer, poll OSUpdateStatus and watch the device's screen for the install prompt (record it as an operator observation of kind prompt_seen).",
        scope: Scope::Dose,
    },
    Detector {
        id: "schedule_no_response",
        title: "ScheduleOSUpdate is never answered: no Status, no UpdateResults",
        description: "A ScheduleOSUpdate was queued and pushed and no answer of any status came back for it before its window closed: the device restarted or changed build (it carried the command out), or the protocol's follow-up of the device ended.",
        source: "rdar 40161553 (lionheart/openradar-mirror#19740)",
        expected: "The device answers every command it receives with Acknowledged, Error, CommandFormatError or NotNow; a ScheduleOSUpdate answer carries UpdateResults (Apple, \"Sending MDM commands\"; mdm/commands/system.update.schedule.yaml).",
        situation: "devices sent a ScheduleOSUpdate whose answer window closed (restart, new build or end of follow-up)",
        classification: "Serious Bug",
        trigger: "Watch for the answer until the device restarts or its follow-up ends; the MDM's queue stays blocked behind the unanswered command.",
        scope: Scope::Dose,
    },
    Detector {
        id: "installing_while_scheduled",
        title: "OSUpdateStatus reports Installing while the user scheduled the install for later",
        description: "The operator recorded that the user picked \"Later\" at the install prompt (observation kind install_scheduled, value later), and OSUpdateStatus reported Status Installing.",
        source: "rdar 45414727 (lionheart/openradar-mirror#20594)",
        expected: "OSUpdateStatusItem Status is Idle, Downloading (\"downloading and subsequently preparing\") or Installing (Apple device-management schema, mdm/commands/system.update.status.yaml); an install the user scheduled for 1–3 AM is not being installed.",
        situation: "devices whose user scheduled the install for later (operator observation)",
        classification: "Serious Bug",
        trigger: "On a passcode device, when the install prompt appears pick \"Later\" (install between 1 AM and 3 AM), record it (`lab observe RUN --udid U --kind install_scheduled --note later`), then poll OSUpdateStatus.",
        scope: Scope::Dose,
    },
    Detector {
        id: "install_after_further_command",
        title: "A further ScheduleOSUpdate starts an install the user had scheduled for later",
        description: "After the operator recorded that the user picked \"Later\", a further ScheduleOSUpdate was answered Installing, or the device restarted or reported a new build right after it.",
        source: "rdar 45414727 (lionheart/openradar-mirror#20594)",
        expected: "Passcode devices need the user to authorise the update; the user may defer it (Apple device-management schema notes, mdm/commands/system.update.schedule.yaml). An install the user scheduled for later should wait for its window.",
        situation: "devices sent a further ScheduleOSUpdate after their user scheduled the install for later",
        classification: "Serious Bug",
        trigger: "After the user picked \"Later\", send ScheduleOSUpdate again (Default or InstallASAP) and watch whether the device installs at once.",
        scope: Scope::Dose,
    },
    Detector {
        id: "install_action_mismatch",
        title: "ScheduleOSUpdate UpdateResults InstallAction differs from the one requested",
        description: "An UpdateResults item's InstallAction is not what the request asked for (Default may come back as DownloadOnly or InstallASAP; Error items are left to schedule_error_but_proceeds).",
        source: "Apple device-management schema, mdm/commands/system.update.schedule.yaml (\"A device may return a different InstallAction than requested\")",
        expected: "UpdateResultsItem InstallAction is one of Error, DownloadOnly, InstallASAP, NotifyOnly, InstallLater, InstallForceRestart; Default never comes back; NotifyOnly, InstallLater and InstallForceRestart are macOS-only (mdm/commands/system.update.schedule.yaml).",
        situation: "devices whose ScheduleOSUpdate answers carried UpdateResults items",
        classification: "Other Bug",
        trigger: "Compare each UpdateResults item's InstallAction with the command's.",
        scope: Scope::Dose,
    },
    Detector {
        id: "command_redelivered",
        title: "The same CommandUUID is delivered or answered twice",
        description: "A command was answered again after its final answer (Acknowledged/Error/CommandFormatError), i.e. it was delivered again: the NanoMDM kv queue re-delivers an answered command when the last queued one is acknowledged while an earlier one is parked as NotNow.",
        source: "MDM brief §5.4 (NanoMDM storage/kv queue_ll.go unlink); Apple, \"Sending MDM commands\"",
        expected: "A command leaves the queue once the device answers Acknowledged or Error; \"It's also possible for the device to send the same status twice\" (Apple, \"Sending MDM commands\"), but a re-delivered ScheduleOSUpdate starts an install at once (rdar 45414727).",
        situation: "devices that gave a final answer to at least one command",
        classification: "Serious Bug",
        trigger: "Queue two commands, answer the first NotNow and the second Acknowledged, then acknowledge the first; watch what the server sends next.",
        scope: Scope::Dose,
    },
    Detector {
        id: "baseline_disagreement",
        title: "Lockdown and MDM DeviceInformation/SecurityInfo disagree on a baseline fact",
        description: "At baseline, lockdown and the MDM reported a different iOS version, build, battery level, capacity, passcode state, supervision or Wi-Fi MAC for the same device.",
        source: "field brief §2.1 (field map); src/probe/mdm_side.rs compare",
        expected: "DeviceInformation OSVersion, BuildVersion, BatteryLevel (0.0–1.0), DeviceCapacity (GB), IsSupervised, WiFiMAC and SecurityInfo PasscodePresent describe the same device state as lockdown's ProductVersion, BuildVersion, BatteryCurrentCapacity, TotalDiskCapacity, DeviceIsChaperoned, WiFiAddress and PasswordProtected (mdm/commands/information.device.yaml, information.security.yaml).",
        situation: "devices whose baseline has both lockdown and MDM answers",
        classification: "Other Bug",
        trigger: "Read the device over USB (lockdown) and through the MDM (DeviceInformation, SecurityInfo) within a minute of each other.",
        scope: Scope::Baseline,
    },
    Detector {
        id: "acknowledged_not_updated",
        title: "ScheduleOSUpdate install step Acknowledged, build unchanged at the end of follow-up",
        description: "A ScheduleOSUpdate that asked for the install (InstallASAP, a Default sent once the update was downloaded, or an answer promising InstallASAP) was Acknowledged, and the device still reported its starting build when follow-up ended (no deferral recorded by the operator).",
        source: "fleetdm/fleet#32740; field brief §0.2 (\"Acknowledged is not an outcome\")",
        expected: "Default: \"Download or install the update, depending on the current state\"; InstallASAP: \"install a previously downloaded software update\" (mdm/commands/system.update.schedule.yaml). Acknowledged means the command was processed successfully.",
        situation: "devices whose install step was Acknowledged and whose follow-up ended with a build observed",
        classification: "Serious Bug",
        trigger: "Follow the device until the protocol's follow-up ends; compare its build with the starting build.",
        scope: Scope::Dose,
    },
    Detector {
        id: "available_updates_error_2213",
        title: "AvailableOSUpdates answers Error 2213 \"No update available\" instead of an empty list",
        description: "AvailableOSUpdates answered Status Error with ErrorChain DeviceManagement.error 2213 (\"No update available.\") where the documented answer is an empty AvailableOSUpdates array.",
        source: "rdar 39170807 (lionheart/openradar-mirror#19571); rdar 39591791 (#19665)",
        expected: "Status Acknowledged with AvailableOSUpdates <array>, empty when no update is available; iOS lists only the most recent available updates (mdm/commands/system.update.available.yaml).",
        situation: "devices whose AvailableOSUpdates answer said no update is available (Error 2213 or an empty array)",
        classification: "Other Bug",
        trigger: "Send AvailableOSUpdates to a device that runs the newest iOS offered to it.",
        scope: Scope::Baseline,
    },
];

/// The detector with this id.
pub fn detector(id: &str) -> Option<&'static Detector> {
    DETECTORS.iter().find(|d| d.id == id)
}

/// What one detector found on one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    pub detector: &'static str,
    pub udid: String,
    /// Journal sequence numbers of the events that show it, ascending.
    pub evidence: Vec<u64>,
    /// What happened, in one or two sentences.
    pub actual: String,
    /// The command whose plists are attached (command from its `DoseIntent`, answers below).
    pub command_uuid: Option<String>,
    /// Journal seqs of the answers (`MdmResult`, `UpdatesOffered`) whose raw plists are attached.
    pub responses: Vec<u64>,
}

/// Per detector: the devices in its situation (`N`) and those that showed the anomaly (`n`),
/// each in order of first discovery. `showed` ⊆ `in_situation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub detector: &'static str,
    pub in_situation: Vec<String>,
    pub showed: Vec<String>,
}

/// Radar reproducibility from n of N: `Always` (all), `Sometimes` (at least a third),
/// `Rarely` (fewer), `Unable` (none).
pub fn reproducibility(n: usize, of: usize) -> &'static str {
    if n == 0 || of == 0 {
        "Unable"
    } else if n >= of {
        "Always"
    } else if 3 * n >= of {
        "Sometimes"
    } else {
        "Rarely"
    }
}

/// Every anomaly in the journal: detectors in `DETECTORS` order, devices in discovery order.
pub fn detect(entries: &[Entry]) -> Vec<Anomaly> {
    Findings::of_entries(entries).anomalies()
}

/// Per detector (in `DETECTORS` order), who was in the situation and who showed it.
pub fn situations(entries: &[Entry]) -> Vec<Tally> {
    Findings::of_entries(entries).tallies()
}

/// What every detector found on every device: computed once per report run and read by the
/// radar drafts (anomalies and tallies) and the HTML report (links).
pub(crate) struct Findings(Vec<(&'static Detector, Vec<Finding>)>);

impl Findings {
    fn of_entries(entries: &[Entry]) -> Findings {
        let facts = gather(entries);
        let offered = offered_answers(entries);
        Findings::of(&facts, offered)
    }

    /// Run the detectors over the gathered facts and the `UpdatesOffered` answers of the
    /// journal (journal order; see [`offered_answer`]).
    pub fn of(facts: &RunFacts, offered: Vec<(String, Avail)>) -> Findings {
        let ctx = Ctx {
            avail: avail_answers(offered, facts),
        };
        Findings(run(facts, &ctx))
    }

    pub fn anomalies(&self) -> Vec<Anomaly> {
        self.0
            .iter()
            .flat_map(|(_, findings)| findings.iter().filter_map(|f| f.anomaly.clone()))
            .collect()
    }

    pub fn tallies(&self) -> Vec<Tally> {
        self.0
            .iter()
            .map(|(det, findings)| {
                let mut t = Tally {
                    detector: det.id,
                    in_situation: Vec::new(),
                    showed: Vec::new(),
                };
                for f in findings {
                    if f.in_situation || f.anomaly.is_some() {
                        t.in_situation.push(f.udid.clone());
                    }
                    if f.anomaly.is_some() {
                        t.showed.push(f.udid.clone());
                    }
                }
                t
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------

struct Finding {
    udid: String,
    in_situation: bool,
    anomaly: Option<Anomaly>,
}

/// An AvailableOSUpdates answer (from `UpdatesOffered` or an `MdmResult`), first per UUID;
/// `report` is `None` when its plist is unreadable.
pub(crate) struct Avail {
    seq: u64,
    uuid: String,
    report: Option<AvailFacts>,
}

/// The AvailableOSUpdates answer an `UpdatesOffered` event carries (`updates.raw_b64`), with
/// its device, decoded once.
pub(crate) fn offered_answer(e: &Entry) -> Option<(String, Avail)> {
    if let Event::UpdatesOffered {
        udid,
        command_uuid,
        updates,
    } = &e.event
        && let Some(b64) = updates.get("raw_b64").and_then(|v| v.as_str())
    {
        return Some((
            udid.clone(),
            Avail {
                seq: e.seq,
                uuid: command_uuid.clone(),
                report: decode_report(b64).ok().map(|r| AvailFacts::of(&r)),
            },
        ));
    }
    None
}

fn offered_answers(entries: &[Entry]) -> Vec<(String, Avail)> {
    entries.iter().filter_map(offered_answer).collect()
}

struct Ctx {
    avail: HashMap<String, Vec<Avail>>,
}

type Check = fn(&Facts, &Ctx) -> (bool, Option<Found>);

/// An anomaly before it is tied to its detector and device.
struct Found {
    evidence: Vec<u64>,
    actual: String,
    command_uuid: Option<String>,
    responses: Vec<u64>,
}

fn checks() -> [(&'static str, Check); 10] {
    [
        ("documented_type_mismatch", documented_type_mismatch),
        ("schedule_error_but_proceeds", schedule_error_but_proceeds),
        ("schedule_no_response", schedule_no_response),
        ("installing_while_scheduled", installing_while_scheduled),
        (
            "install_after_further_command",
            install_after_further_command,
        ),
        ("install_action_mismatch", install_action_mismatch),
        ("command_redelivered", command_redelivered),
        ("baseline_disagreement", baseline_disagreement),
        ("acknowledged_not_updated", acknowledged_not_updated),
        ("available_updates_error_2213", available_updates_error_2213),
    ]
}

fn run(facts: &RunFacts, ctx: &Ctx) -> Vec<(&'static Detector, Vec<Finding>)> {
    checks()
        .into_iter()
        .map(|(id, check)| {
            let det = detector(id).expect("every check has a detector");
            let findings = facts
                .devices
                .iter()
                .map(|d| {
                    let (in_situation, found) = check(d, ctx);
                    Finding {
                        udid: d.udid.clone(),
                        in_situation,
                        anomaly: found.map(|mut f| {
                            f.evidence.sort_unstable();
                            f.evidence.dedup();
                            Anomaly {
                                detector: det.id,
                                udid: d.udid.clone(),
                                evidence: f.evidence,
                                actual: f.actual,
                                command_uuid: f.command_uuid,
                                responses: f.responses,
                            }
                        }),
                    }
                })
                .collect();
            (det, findings)
        })
        .collect()
}

fn avail_answers(offered: Vec<(String, Avail)>, facts: &RunFacts) -> HashMap<String, Vec<Avail>> {
    let mut out: HashMap<String, Vec<Avail>> = HashMap::new();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut push = |udid: &str, a: Avail| {
        if seen.insert((udid.to_string(), a.uuid.clone())) {
            out.entry(udid.to_string()).or_default().push(a);
        }
    };
    // Journal order: UpdatesOffered (baseline) and MdmResult answers interleave by seq.
    let mut all: Vec<(u64, String, Avail)> = offered
        .into_iter()
        .map(|(udid, a)| (a.seq, udid, a))
        .collect();
    for d in &facts.devices {
        for a in &d.answers {
            if a.request_type.as_deref() == Some("AvailableOSUpdates") {
                all.push((
                    a.seq,
                    d.udid.clone(),
                    Avail {
                        seq: a.seq,
                        uuid: a.command_uuid.to_string(),
                        report: a.report.rare.as_ref().and_then(|r| r.avail.clone()),
                    },
                ));
            }
        }
    }
    all.sort_by_key(|x| x.0);
    for (_, udid, a) in all {
        push(&udid, a);
    }
    out
}

fn after_first_dose(d: &Facts, seq: u64) -> bool {
    d.first_intent_seq().is_some_and(|s| seq > s)
}

/// OSUpdateStatus answers (readable, with an `OSUpdateStatus` array) with their items.
fn status_answers(d: &Facts) -> impl Iterator<Item = (&Answer, &[OsItem])> {
    d.answers.iter().filter_map(|a| {
        if a.request_type.as_deref() != Some("OSUpdateStatus") {
            return None;
        }
        Some((a, a.report.os_items.as_deref()?))
    })
}

/// ScheduleOSUpdate dose intents.
fn schedule_intents(d: &Facts) -> impl Iterator<Item = &crate::trial::outcome::Intent> {
    d.intents
        .iter()
        .filter(|i| i.request_type == "ScheduleOSUpdate")
}

/// Operator observations that the user scheduled the install for later: their seqs.
fn scheduled_later(d: &Facts) -> Vec<u64> {
    d.observations
        .iter()
        .filter(|(_, _, source, kind, key, value)| {
            source == "operator"
                && (kind == "install_scheduled" || key == "install_scheduled")
                && value.trim().to_ascii_lowercase().starts_with("later")
        })
        .map(|o| o.0)
        .collect()
}

fn yes(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "yes" | "y" | "true" | "1" | "shown" | "seen"
    )
}

fn first_new_build_after(d: &Facts, after: u64) -> Option<&crate::trial::outcome::BuildSeen> {
    let start = d.starting_build()?;
    d.builds.iter().find(|b| b.seq > after && b.build != start)
}

fn first_detach_after(d: &Facts, after: u64) -> Option<u64> {
    d.attaches
        .iter()
        .find(|a| a.seq > after && !a.attached)
        .map(|a| a.seq)
}

// ---------------------------------------------------------------------------------------------
// The detectors.

fn documented_type_mismatch(d: &Facts, ctx: &Ctx) -> (bool, Option<Found>) {
    let mut situation = false;
    let mut notes: Vec<String> = Vec::new();
    let mut evidence = Vec::new();
    let mut first: Option<(String, u64)> = None;
    let mut note = |seq: u64, uuid: &str, what: String, notes: &mut Vec<String>| {
        evidence.push(seq);
        if first.is_none() {
            first = Some((uuid.to_string(), seq));
        }
        if !notes.contains(&what) {
            notes.push(what);
        }
    };
    for (a, items) in status_answers(d) {
        if items.is_empty() {
            continue;
        }
        situation = true;
        for what in a.report.type_notes() {
            note(a.seq, &a.command_uuid, what.clone(), &mut notes);
        }
    }
    for a in ctx.avail.get(&d.udid).into_iter().flatten() {
        let Some(r) = &a.report else { continue };
        if !r.has_items {
            continue;
        }
        situation = true;
        for what in &r.type_notes {
            note(a.seq, &a.uuid, what.clone(), &mut notes);
        }
    }
    let found = first.map(|(uuid, seq)| Found {
        actual: format!(
            "{} ({} answer(s)).",
            notes.join("; "),
            evidence.iter().collect::<BTreeSet<_>>().len()
        ),
        evidence: evidence.clone(),
        command_uuid: Some(uuid),
        responses: vec![seq],
    });
    (situation, found)
}

fn schedule_error_but_proceeds(d: &Facts, _: &Ctx) -> (bool, Option<Found>) {
    let mut situation = false;
    for i in schedule_intents(d) {
        let answers: Vec<&Answer> = d.answers_to(&i.command_uuid).collect();
        if answers.iter().any(|a| a.is_final()) {
            situation = true;
        }
        let Some(err) = answers.iter().find(|a| {
            a.is_final()
                && (ReportStatus::parse(&a.status) == ReportStatus::Error
                    || a.report.update_results().is_some_and(|r| {
                        r.iter()
                            .any(|x| x.install_action.as_deref() == Some("Error"))
                    }))
        }) else {
            continue;
        };
        // Downloaded before the command? Then IsDownloaded afterwards proves nothing.
        let downloaded_before = d.downloaded.iter().any(|(s, _)| *s < i.seq);
        let mut proof: Option<(u64, String)> = None;
        for (a, items) in status_answers(d).filter(|(a, _)| a.seq > err.seq) {
            if let Some(it) = items.iter().find(|it| {
                matches!(it.status.as_deref(), Some("Downloading" | "Installing"))
                    || (!downloaded_before && it.is_downloaded == Some(true))
            }) {
                proof = Some((
                    a.seq,
                    format!(
                        "OSUpdateStatus then reported {} (IsDownloaded {}, {:.0} % downloaded)",
                        it.status.as_deref().unwrap_or("?"),
                        it.is_downloaded
                            .map(|b| b.to_string())
                            .unwrap_or_else(|| "?".into()),
                        it.download_percent_complete.unwrap_or(0.0) * 100.0
                    ),
                ));
                break;
            }
        }
        let prompt = d.observations.iter().find(|o| {
            o.0 > i.seq
                && o.2 == "operator"
                && (o.3 == "prompt_seen" || o.4 == "prompt_seen")
                && yes(&o.5)
        });
        if let Some(o) = prompt
            && proof.as_ref().is_none_or(|p| o.0 < p.0)
        {
            proof = Some((o.0, "the operator saw the install prompt".into()));
        }
        if let Some(b) = first_new_build_after(d, err.seq)
            && proof.as_ref().is_none_or(|p| b.seq < p.0)
        {
            proof = Some((
                b.seq,
                format!(
                    "the device then reported build {} ({})",
                    b.build,
                    b.version.as_deref().unwrap_or("?")
                ),
            ));
        }
        if let Some((seq, what)) = proof {
            let chain = Some(
                err.report
                    .error_chain()
                    .iter()
                    .map(|c| {
                        format!(
                            "{} {}",
                            c.domain.as_deref().unwrap_or("?"),
                            c.code.map(|x| x.to_string()).unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" → "),
            )
            .filter(|s| !s.is_empty())
            .map(|s| format!(" (ErrorChain {s})"))
            .unwrap_or_default();
            return (
                true,
                Some(Found {
                    evidence: vec![i.seq, err.seq, seq],
                    actual: format!(
                        "ScheduleOSUpdate step {} (InstallAction {}) was answered {}{chain}; {what}.",
                        i.step, i.install_action, err.status
                    ),
                    command_uuid: Some(i.command_uuid.clone()),
                    responses: vec![err.seq],
                }),
            );
        }
    }
    (situation, None)
}

fn schedule_no_response(d: &Facts, _: &Ctx) -> (bool, Option<Found>) {
    let end = d.follow_up_end.clone();
    let mut situation = false;
    for i in schedule_intents(d) {
        let Some((enq_seq, _)) = &i.enqueued else {
            continue;
        };
        // The window closes when the device restarts or changes build (it carried the command
        // out), or when the protocol's follow-up of the device ends, whichever comes first.
        let restart = first_detach_after(d, *enq_seq)
            .filter(|s| {
                d.attaches.iter().any(|a| a.seq > *s && a.attached)
                    || d.answers.iter().any(|a| a.seq > *s)
                    || d.builds.iter().any(|b| b.seq > *s)
            })
            .map(|s| (s, "the device restarted".to_string()));
        let build = first_new_build_after(d, *enq_seq)
            .map(|b| (b.seq, format!("the device reported build {}", b.build)));
        let ended = end
            .as_ref()
            .filter(|(s, _)| s > enq_seq)
            .map(|(s, r)| (*s, format!("follow-up ended ({r})")));
        // An answer without UpdateResults is Apple's sign of one given only after the install's
        // restart (brief mdm.md §0.3): a restart the harness may have polled past.
        let after_restart = d
            .answers_to(&i.command_uuid)
            .next()
            .filter(|a| {
                &*a.status == "Acknowledged"
                    && a.report.update_results().is_none()
            })
            .map(|a| {
                (
                    a.seq,
                    "the device restarted (its first answer carries no UpdateResults, as answers given after an install's restart do)".to_string(),
                )
            });
        let Some((close, why)) = [restart, build, ended, after_restart]
            .into_iter()
            .flatten()
            .min_by_key(|x| x.0)
        else {
            continue;
        };
        if d.detached_never_seen().is_some() {
            continue;
        }
        situation = true;
        if d.answers_to(&i.command_uuid).any(|a| a.seq < close) {
            continue;
        }
        let late = d.answers_to(&i.command_uuid).next();
        let mut evidence = vec![i.seq, *enq_seq, close];
        evidence.extend(late.map(|a| a.seq));
        let after = match late {
            Some(a) => format!(
                " The first answer, {}{}, came only after that.",
                a.status,
                if a.report.update_results().is_none() {
                    " without UpdateResults"
                } else {
                    ""
                }
            ),
            None => String::new(),
        };
        return (
            true,
            Some(Found {
                evidence,
                actual: format!(
                    "ScheduleOSUpdate step {} (InstallAction {}) was queued and pushed, and no answer of any status (no Status, no UpdateResults) came back before {why}.{after}",
                    i.step, i.install_action
                ),
                command_uuid: Some(i.command_uuid.clone()),
                responses: late.map(|a| vec![a.seq]).unwrap_or_default(),
            }),
        );
    }
    (situation, None)
}

fn installing_while_scheduled(d: &Facts, _: &Ctx) -> (bool, Option<Found>) {
    let later = scheduled_later(d);
    if later.is_empty() {
        return (false, None);
    }
    let installing: Vec<&Answer> = status_answers(d)
        .filter(|(a, items)| {
            after_first_dose(d, a.seq)
                && items
                    .iter()
                    .any(|it| it.status.as_deref() == Some("Installing"))
        })
        .map(|(a, _)| a)
        .collect();
    let Some(first) = installing.first() else {
        return (true, None);
    };
    let restarted =
        first_detach_after(d, first.seq).is_some() || first_new_build_after(d, first.seq).is_some();
    let mut evidence = vec![later[0], first.seq];
    if let Some(last) = installing.last() {
        evidence.push(last.seq);
    }
    (
        true,
        Some(Found {
            evidence,
            actual: format!(
                "The operator recorded that the user scheduled the install for later; OSUpdateStatus reported Status Installing in {} answer(s){}.",
                installing.len(),
                if restarted {
                    ""
                } else {
                    ", and the device neither restarted nor changed build during follow-up"
                }
            ),
            command_uuid: Some(first.command_uuid.to_string()),
            responses: vec![first.seq],
        }),
    )
}

fn install_after_further_command(d: &Facts, _: &Ctx) -> (bool, Option<Found>) {
    let Some(&later) = scheduled_later(d).first() else {
        return (false, None);
    };
    let mut situation = false;
    let intents: Vec<_> = schedule_intents(d).collect();
    for (k, i) in intents.iter().enumerate() {
        if i.seq < later || i.enqueued.is_none() {
            continue;
        }
        situation = true;
        let until = intents.get(k + 1).map(|n| n.seq).unwrap_or(u64::MAX);
        let answered = d.answers_to(&i.command_uuid).find(|a| {
            a.report
                .update_results()
                .is_some_and(|r| r.iter().any(|x| x.status.as_deref() == Some("Installing")))
        });
        let detach = first_detach_after(d, i.seq).filter(|s| *s < until);
        let build = first_new_build_after(d, i.seq).filter(|b| b.seq < until);
        let mut evidence = vec![later, i.seq];
        let mut what = Vec::new();
        if let Some(a) = answered {
            evidence.push(a.seq);
            what.push("its answer said Installing".to_string());
        }
        if let Some(s) = detach {
            evidence.push(s);
            what.push("the device restarted (detached)".to_string());
        }
        if let Some(b) = build {
            evidence.push(b.seq);
            what.push(format!("the device came back on build {}", b.build));
        }
        if what.is_empty() {
            continue;
        }
        return (
            true,
            Some(Found {
                evidence,
                actual: format!(
                    "After the user scheduled the install for later, ScheduleOSUpdate step {} (InstallAction {}) started the install at once: {}.",
                    i.step,
                    i.install_action,
                    what.join("; ")
                ),
                command_uuid: Some(i.command_uuid.clone()),
                responses: answered.map(|a| vec![a.seq]).unwrap_or_default(),
            }),
        );
    }
    (situation, None)
}

/// Whether an UpdateResults InstallAction answers the requested one (`Default` never comes
/// back; it downloads or installs depending on the state).
fn action_consistent(requested: &str, answered: &str) -> bool {
    match requested {
        "Default" => matches!(answered, "DownloadOnly" | "InstallASAP"),
        other => other == answered,
    }
}

fn install_action_mismatch(d: &Facts, _: &Ctx) -> (bool, Option<Found>) {
    let mut situation = false;
    for i in schedule_intents(d) {
        for a in d.answers_to(&i.command_uuid) {
            let Some(results) = a.report.update_results() else {
                continue;
            };
            for r in results {
                let Some(got) = r.install_action.as_deref() else {
                    continue;
                };
                situation = true;
                if got == "Error" || action_consistent(&i.install_action, got) {
                    continue;
                }
                return (
                    true,
                    Some(Found {
                        evidence: vec![i.seq, a.seq],
                        actual: format!(
                            "ScheduleOSUpdate step {} asked for InstallAction {}; the UpdateResults item for {} came back InstallAction {} with Status {}.",
                            i.step,
                            i.install_action,
                            r.product_key.as_deref().unwrap_or("?"),
                            got,
                            r.status.as_deref().unwrap_or("?")
                        ),
                        command_uuid: Some(i.command_uuid.clone()),
                        responses: vec![a.seq],
                    }),
                );
            }
        }
    }
    (situation, None)
}

fn command_redelivered(d: &Facts, _: &Ctx) -> (bool, Option<Found>) {
    let situation = d.answers.iter().any(Answer::is_final);
    // Answers grouped by CommandUUID, in order of first answer (one pass: a device may have
    // answered a million status polls).
    let mut order: Vec<&str> = Vec::new();
    let mut by_uuid: HashMap<&str, Vec<&Answer>> = HashMap::new();
    for a in &d.answers {
        if a.command_uuid.is_empty() {
            continue;
        }
        by_uuid
            .entry(&a.command_uuid)
            .or_insert_with(|| {
                order.push(&a.command_uuid);
                Vec::new()
            })
            .push(a);
    }
    for uuid in order {
        let answers = &by_uuid[uuid];
        let Some(k) = answers.iter().position(|a| a.is_final()) else {
            continue;
        };
        let again: Vec<&&Answer> = answers[k + 1..].iter().collect();
        if again.is_empty() {
            continue;
        }
        let rt = answers[k]
            .request_type
            .clone()
            .unwrap_or_else(|| "command".into());
        let mut evidence: Vec<u64> = d
            .intents
            .iter()
            .filter(|i| i.command_uuid == uuid)
            .map(|i| i.seq)
            .collect();
        evidence.push(answers[k].seq);
        evidence.extend(again.iter().map(|a| a.seq));
        let statuses: Vec<&str> = again.iter().map(|a| &*a.status).collect();
        return (
            true,
            Some(Found {
                evidence,
                actual: format!(
                    "{rt} {uuid} was answered {} and then answered again ({}): it was delivered again after it had left the queue.",
                    answers[k].status,
                    statuses.join(", ")
                ),
                command_uuid: Some(uuid.to_string()),
                responses: std::iter::once(answers[k].seq)
                    .chain(again.iter().map(|a| a.seq))
                    .collect(),
            }),
        );
    }
    (situation, None)
}

fn baseline_disagreement(d: &Facts, _: &Ctx) -> (bool, Option<Found>) {
    let Some(probe) = &d.probe else {
        return (false, None);
    };
    let situation = probe.get("mdm").is_some_and(|m| !m.is_null());
    let list = probe
        .get("disagreements")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        return (situation, None);
    }
    let text: Vec<String> = list
        .iter()
        .map(|x| {
            format!(
                "{}: lockdown={} mdm={}",
                x.get("fact").and_then(|f| f.as_str()).unwrap_or("?"),
                crate::format::json_cell(x.get("lockdown").unwrap_or(&serde_json::Value::Null)),
                crate::format::json_cell(x.get("mdm").unwrap_or(&serde_json::Value::Null)),
            )
        })
        .collect();
    let baseline_seq = d.baseline_seq.unwrap_or(0);
    // The MDM answers the facts came from, when the journal holds them.
    let cmds: Vec<String> = probe
        .pointer("/mdm/commands")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let answer = cmds
        .iter()
        .find_map(|u| d.answers_to(u).find(|a| a.is_final()));
    let mut evidence = vec![baseline_seq];
    evidence.extend(answer.map(|a| a.seq));
    (
        true,
        Some(Found {
            evidence,
            actual: format!(
                "At baseline lockdown and the MDM disagreed: {}.",
                text.join("; ")
            ),
            command_uuid: answer.map(|a| a.command_uuid.to_string()),
            responses: answer.map(|a| vec![a.seq]).unwrap_or_default(),
        }),
    )
}

fn acknowledged_not_updated(d: &Facts, _: &Ctx) -> (bool, Option<Found>) {
    let Some((end_seq, end_reason)) = d.follow_up_end.clone() else {
        return (false, None);
    };
    let Some(start) = d.starting_build() else {
        return (false, None);
    };
    // The last install step answered Acknowledged before follow-up ended.
    let mut install_ack: Option<(&crate::trial::outcome::Intent, &Answer)> = None;
    for i in schedule_intents(d) {
        let downloaded_before = d.downloaded.iter().any(|(s, _)| *s < i.seq);
        let Some(ack) = d.answers_to(&i.command_uuid).find(|a| {
            a.seq < end_seq && ReportStatus::parse(&a.status) == ReportStatus::Acknowledged
        }) else {
            continue;
        };
        let promised = ack.report.update_results().is_some_and(|r| {
            r.iter()
                .any(|x| x.install_action.as_deref() == Some("InstallASAP"))
        });
        let asks_install = i.install_action == "InstallASAP"
            || (i.install_action == "Default" && downloaded_before)
            || promised;
        if asks_install {
            install_ack = Some((i, ack));
        }
    }
    let Some((i, ack)) = install_ack else {
        return (false, None);
    };
    // Re-probes are journalled when something changed: the last build seen after the first dose
    // is the build at the end.
    let last = d
        .builds
        .iter()
        .rfind(|b| after_first_dose(d, b.seq) && b.seq < end_seq);
    let Some(last) = last else {
        return (false, None);
    };
    if last.build != start || !scheduled_later(d).is_empty() {
        return (true, None);
    }
    (
        true,
        Some(Found {
            evidence: vec![i.seq, ack.seq, last.seq, end_seq],
            actual: format!(
                "ScheduleOSUpdate step {} (InstallAction {}) was Acknowledged, and the device still reported its starting build {} when follow-up ended ({end_reason}).",
                i.step, i.install_action, start
            ),
            command_uuid: Some(i.command_uuid.clone()),
            responses: vec![ack.seq],
        }),
    )
}

fn available_updates_error_2213(d: &Facts, ctx: &Ctx) -> (bool, Option<Found>) {
    let mut situation = false;
    for a in ctx.avail.get(&d.udid).into_iter().flatten() {
        let Some(r) = &a.report else { continue };
        let is_2213 =
            r.status == ReportStatus::Error && r.error_chain.iter().any(|c| c.code == Some(2213));
        let empty = r.status == ReportStatus::Acknowledged && r.empty_list;
        if empty {
            situation = true;
        }
        if !is_2213 {
            continue;
        }
        let chain = r
            .error_chain
            .iter()
            .map(|c| {
                format!(
                    "{} {} \"{}\"",
                    c.domain.as_deref().unwrap_or("?"),
                    c.code.map(|x| x.to_string()).unwrap_or_default(),
                    c.localized_description.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join(" → ");
        return (
            true,
            Some(Found {
                evidence: vec![a.seq],
                actual: format!(
                    "AvailableOSUpdates was answered Status Error with ErrorChain {chain}, and no AvailableOSUpdates array."
                ),
                command_uuid: Some(a.uuid.clone()),
                responses: vec![a.seq],
            }),
        );
    }
    (situation, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::ObservationSource;
    use crate::mdm::report::{error_chain, report_dict};
    use crate::trial::outcome::testkit::{J, b64};
    use plist::{Dictionary, Value};

    fn ids(j: &J) -> Vec<(&'static str, String)> {
        detect(&j.entries)
            .into_iter()
            .map(|a| (a.detector, a.udid))
            .collect()
    }

    fn fired(j: &J, id: &str) -> Vec<Anomaly> {
        detect(&j.entries)
            .into_iter()
            .filter(|a| a.detector == id)
            .collect()
    }

    fn tally(j: &J, id: &str) -> (Vec<String>, Vec<String>) {
        let t = situations(&j.entries)
            .into_iter()
            .find(|t| t.detector == id)
            .unwrap();
        (t.in_situation, t.showed)
    }

    fn dosed(udids: &[&str]) -> J {
        let mut j = J::new();
        for u in udids {
            j.device(u, true).allocate(u, "a");
        }
        j.consent(udids);
        for (k, u) in udids.iter().enumerate() {
            j.dose(u, 1, &format!("C{k}{u}"));
        }
        j
    }

    /// An OSUpdateStatus answer with one item of this status.
    fn status_item(j: &mut J, udid: &str, uuid: &str, status: &str, downloaded: bool) {
        j.push(Event::CommandSent {
            udid: udid.into(),
            command_uuid: uuid.into(),
            request_type: "OSUpdateStatus".into(),
        });
        j.result(udid, uuid, None, "Acknowledged", |d| {
            let mut item = Dictionary::new();
            item.insert("ProductKey".into(), "iOSUpdate19H390".into());
            item.insert("IsDownloaded".into(), Value::Boolean(downloaded));
            item.insert("DownloadPercentComplete".into(), Value::Real(1.0));
            item.insert("Status".into(), status.into());
            d.insert(
                "OSUpdateStatus".into(),
                Value::Array(vec![Value::Dictionary(item)]),
            );
        });
    }

    fn update_item(action: &str, status: &str) -> Value {
        let mut item = Dictionary::new();
        item.insert("ProductKey".into(), "iOSUpdate19H390".into());
        item.insert("InstallAction".into(), action.into());
        item.insert("Status".into(), status.into());
        Value::Dictionary(item)
    }

    fn schedule_reply(j: &mut J, udid: &str, uuid: &str, status: &str, action: &str, st: &str) {
        j.result(udid, uuid, Some("ScheduleOSUpdate"), status, |d| {
            d.insert(
                "UpdateResults".into(),
                Value::Array(vec![update_item(action, st)]),
            );
        });
    }

    fn operator(j: &mut J, udid: &str, kind: &str, value: &str) {
        j.push(Event::Observation {
            udid: Some(udid.into()),
            source: ObservationSource::Operator,
            kind: kind.into(),
            key: kind.into(),
            value: value.into(),
        });
    }

    fn offered(j: &mut J, udid: &str, uuid: &str, body: Dictionary) {
        let status = body
            .get("Status")
            .and_then(|v| v.as_string())
            .unwrap()
            .to_string();
        j.push(Event::UpdatesOffered {
            udid: udid.into(),
            command_uuid: uuid.into(),
            updates: serde_json::json!({"status": status, "raw_b64": b64(body), "updates": null}),
        });
    }

    #[test]
    fn every_detector_has_a_check_and_unique_id() {
        let ids: Vec<&str> = DETECTORS.iter().map(|d| d.id).collect();
        let checks: Vec<&str> = checks().iter().map(|c| c.0).collect();
        assert_eq!(ids, checks);
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        for d in DETECTORS {
            assert!(!d.source.is_empty() && !d.expected.is_empty() && !d.situation.is_empty());
            assert!(!d.description.contains('\n'));
        }
        assert!(detect(&[]).is_empty());
    }

    #[test]
    fn reproducibility_from_n_of_n() {
        assert_eq!(reproducibility(3, 3), "Always");
        assert_eq!(reproducibility(1, 3), "Sometimes");
        assert_eq!(reproducibility(1, 4), "Rarely");
        assert_eq!(reproducibility(0, 4), "Unable");
    }

    #[test]
    fn documented_type_mismatch_fires_on_integer_is_downloaded_only() {
        let mut j = dosed(&["A", "B"]);
        j.status("A", "SA", 1.0, Value::Integer(1.into()))
            .status("A", "SA2", 1.0, Value::Integer(1.into()))
            .status("B", "SB", 1.0, Value::Boolean(true));
        let f = fired(&j, "documented_type_mismatch");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].udid, "A");
        assert!(
            f[0].actual.contains("integer 1 where <boolean>"),
            "{}",
            f[0].actual
        );
        assert!(f[0].actual.contains("(2 answer(s))"), "{}", f[0].actual);
        assert_eq!(f[0].command_uuid.as_deref(), Some("SA"));
        assert_eq!(f[0].evidence.len(), 2);
        assert_eq!(
            tally(&j, "documented_type_mismatch"),
            (vec!["A".into(), "B".into()], vec!["A".into()])
        );

        // AvailableOSUpdates booleans too.
        let mut j = J::new();
        j.device("C", true);
        let mut body = report_dict("C", Some("AV"), "Acknowledged");
        let mut item = Dictionary::new();
        item.insert("ProductKey".into(), "iOSUpdate19H390".into());
        item.insert("IsCritical".into(), Value::String("no".into()));
        body.insert(
            "AvailableOSUpdates".into(),
            Value::Array(vec![Value::Dictionary(item)]),
        );
        offered(&mut j, "C", "AV", body);
        let f = fired(&j, "documented_type_mismatch");
        assert_eq!(f.len(), 1);
        assert!(f[0].actual.contains("IsCritical"), "{}", f[0].actual);
    }

    #[test]
    fn schedule_error_but_proceeds_needs_an_error_and_a_proof() {
        // Error, then the download runs.
        let mut j = dosed(&["A"]);
        let uuid = "C0A";
        schedule_reply(&mut j, "A", uuid, "Error", "Error", "Idle");
        status_item(&mut j, "A", "S1", "Downloading", false);
        let f = fired(&j, "schedule_error_but_proceeds");
        assert_eq!(f.len(), 1);
        assert!(f[0].actual.contains("answered Error"), "{}", f[0].actual);
        assert!(f[0].actual.contains("Downloading"), "{}", f[0].actual);
        assert_eq!(f[0].evidence.len(), 3);

        // Error, then the operator saw the prompt.
        let mut j = dosed(&["A"]);
        schedule_reply(&mut j, "A", uuid, "Error", "Error", "Idle");
        operator(&mut j, "A", "prompt_seen", "yes");
        assert!(
            fired(&j, "schedule_error_but_proceeds")[0]
                .actual
                .contains("prompt")
        );

        // Error and nothing happens: no anomaly (but in the situation).
        let mut j = dosed(&["A"]);
        schedule_reply(&mut j, "A", uuid, "Error", "Error", "Idle");
        j.result("A", "S1", None, "Acknowledged", |d| {
            d.insert("OSUpdateStatus".into(), Value::Array(vec![]));
        });
        j.push(Event::CommandSent {
            udid: "A".into(),
            command_uuid: "S1".into(),
            request_type: "OSUpdateStatus".into(),
        });
        operator(&mut j, "A", "prompt_seen", "no");
        assert!(fired(&j, "schedule_error_but_proceeds").is_empty());
        assert_eq!(
            tally(&j, "schedule_error_but_proceeds").0,
            vec!["A".to_string()]
        );

        // Acknowledged and downloading: normal.
        let mut j = dosed(&["A"]);
        j.schedule_answer("A", uuid, "Acknowledged");
        status_item(&mut j, "A", "S1", "Downloading", false);
        assert!(fired(&j, "schedule_error_but_proceeds").is_empty());
    }

    #[test]
    fn schedule_no_response_when_the_window_closes_unanswered() {
        let mut j = dosed(&["A", "B"]);
        j.reprobe("A", true, Some("19H12"))
            .reprobe("B", true, Some("19H12"));
        j.schedule_answer("B", "C1B", "Acknowledged");
        j.ended("A", "follow-up time limit")
            .ended("B", "follow-up time limit");
        let f = fired(&j, "schedule_no_response");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].udid, "A");
        assert_eq!(f[0].command_uuid.as_deref(), Some("C0A"));
        assert!(f[0].responses.is_empty());
        assert!(
            f[0].actual.contains("before follow-up ended"),
            "{}",
            f[0].actual
        );
        assert_eq!(tally(&j, "schedule_no_response").0.len(), 2);

        // 11.3.1 in the simulator: carried out (download, install, restart) unanswered; the
        // re-sent command is acknowledged after the restart without UpdateResults.
        let mut j = dosed(&["A", "B"]);
        j.reprobe("A", false, None)
            .reprobe("A", true, Some("19H390"));
        j.result("A", "C0A", Some("ScheduleOSUpdate"), "Acknowledged", |_| {});
        j.schedule_answer("B", "C1B", "Acknowledged")
            .reprobe("B", false, None)
            .reprobe("B", true, Some("19H390"));
        let f = fired(&j, "schedule_no_response");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].udid, "A");
        assert!(
            f[0].actual.contains("before the device restarted"),
            "{}",
            f[0].actual
        );
        assert!(
            f[0].actual.contains("Acknowledged without UpdateResults"),
            "{}",
            f[0].actual
        );
        assert_eq!(f[0].responses.len(), 1);
        assert_eq!(f[0].evidence.len(), 4);
        assert_eq!(tally(&j, "schedule_no_response").0.len(), 2);

        // NotNow is an answer; an open window is not judged; a lost device is not this.
        let mut j = dosed(&["A"]);
        j.result("A", "C0A", Some("ScheduleOSUpdate"), "NotNow", |_| {})
            .ended("A", "follow-up time limit");
        assert!(fired(&j, "schedule_no_response").is_empty());
        let j = dosed(&["A"]);
        assert!(fired(&j, "schedule_no_response").is_empty());
        let mut j = dosed(&["A"]);
        j.reprobe("A", false, None)
            .ended("A", "follow-up time limit");
        assert!(fired(&j, "schedule_no_response").is_empty());
    }

    #[test]
    fn installing_while_scheduled_needs_the_operators_later() {
        let mut j = dosed(&["A"]);
        status_item(&mut j, "A", "S1", "Installing", true);
        status_item(&mut j, "A", "S2", "Installing", true);
        assert!(fired(&j, "installing_while_scheduled").is_empty());
        assert!(tally(&j, "installing_while_scheduled").0.is_empty());
        operator(&mut j, "A", "install_scheduled", "later");
        let f = fired(&j, "installing_while_scheduled");
        assert_eq!(f.len(), 1);
        assert!(f[0].actual.contains("2 answer(s)"), "{}", f[0].actual);
        assert!(f[0].actual.contains("neither restarted"), "{}", f[0].actual);
        assert_eq!(f[0].command_uuid.as_deref(), Some("S1"));

        let mut j = dosed(&["A"]);
        operator(&mut j, "A", "install_scheduled", "Later (1-3 AM)");
        status_item(&mut j, "A", "S1", "Idle", true);
        assert!(fired(&j, "installing_while_scheduled").is_empty());
        assert_eq!(
            tally(&j, "installing_while_scheduled").0,
            vec!["A".to_string()]
        );
        // Only the operator's word counts.
        let mut j = dosed(&["A"]);
        j.push(Event::Observation {
            udid: Some("A".into()),
            source: ObservationSource::Harness,
            kind: "install_scheduled".into(),
            key: "install_scheduled".into(),
            value: "later".into(),
        });
        status_item(&mut j, "A", "S1", "Installing", true);
        assert!(fired(&j, "installing_while_scheduled").is_empty());
    }

    #[test]
    fn install_after_further_command_fires_when_it_installs_at_once() {
        let mut j = dosed(&["A"]);
        operator(&mut j, "A", "install_scheduled", "later");
        j.dose("A", 2, "C2");
        schedule_reply(
            &mut j,
            "A",
            "C2",
            "Acknowledged",
            "InstallASAP",
            "Installing",
        );
        j.reprobe("A", false, None);
        let f = fired(&j, "install_after_further_command");
        assert_eq!(f.len(), 1);
        assert!(
            f[0].actual.contains("answer said Installing"),
            "{}",
            f[0].actual
        );
        assert!(f[0].actual.contains("restarted"), "{}", f[0].actual);
        assert_eq!(f[0].command_uuid.as_deref(), Some("C2"));

        // The user's choice stands.
        let mut j = dosed(&["A"]);
        operator(&mut j, "A", "install_scheduled", "later");
        j.dose("A", 2, "C2");
        schedule_reply(&mut j, "A", "C2", "Acknowledged", "InstallLater", "Idle");
        assert!(fired(&j, "install_after_further_command").is_empty());
        assert_eq!(
            tally(&j, "install_after_further_command").0,
            vec!["A".to_string()]
        );
        // No further command: not in the situation.
        let mut j = dosed(&["A"]);
        operator(&mut j, "A", "install_scheduled", "later");
        assert!(tally(&j, "install_after_further_command").0.is_empty());
    }

    #[test]
    fn install_action_mismatch_ignores_default_and_error() {
        let mut j = J::new();
        j.device("A", true).device("B", true).device("C", true);
        j.consent(&["A", "B", "C"])
            .intent("A", 1, "CA", "DownloadOnly")
            .enqueued("A", "CA")
            .intent("B", 1, "CB", "Default")
            .enqueued("B", "CB")
            .intent("C", 1, "CC", "InstallASAP")
            .enqueued("C", "CC");
        schedule_reply(
            &mut j,
            "A",
            "CA",
            "Acknowledged",
            "InstallASAP",
            "Installing",
        );
        schedule_reply(
            &mut j,
            "B",
            "CB",
            "Acknowledged",
            "DownloadOnly",
            "Downloading",
        );
        schedule_reply(&mut j, "C", "CC", "Acknowledged", "Error", "Idle");
        let f = fired(&j, "install_action_mismatch");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].udid, "A");
        assert!(f[0].actual.contains("asked for InstallAction DownloadOnly"));
        assert!(f[0].actual.contains("came back InstallAction InstallASAP"));
        assert_eq!(tally(&j, "install_action_mismatch").0.len(), 3);
    }

    #[test]
    fn command_redelivered_after_a_final_answer() {
        let mut j = dosed(&["A", "B"]);
        j.schedule_answer("A", "C0A", "Acknowledged")
            .schedule_answer("A", "C0A", "Acknowledged");
        j.result("B", "C1B", Some("ScheduleOSUpdate"), "NotNow", |_| {})
            .schedule_answer("B", "C1B", "Acknowledged");
        let f = fired(&j, "command_redelivered");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].udid, "A");
        assert_eq!(f[0].responses.len(), 2);
        assert_eq!(f[0].evidence.len(), 3, "intent + two answers");
        assert!(
            f[0].actual.contains("answered again (Acknowledged)"),
            "{}",
            f[0].actual
        );
    }

    #[test]
    fn baseline_disagreement_from_the_probe_record() {
        let mut j = J::new();
        j.device("A", true).device("B", true);
        let mut probe = crate::trial::outcome::testkit::probe("A", "15.7", "19H12");
        probe["disagreements"] = serde_json::json!([
            {"fact": "passcode", "lockdown": true, "mdm": false},
            {"fact": "battery_percent", "lockdown": 87, "mdm": 40.0}
        ]);
        j.push(Event::BaselineRecorded {
            udid: "A".into(),
            probe,
        });
        let f = fired(&j, "baseline_disagreement");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].udid, "A");
        assert!(
            f[0].actual.contains("passcode: lockdown=true mdm=false"),
            "{}",
            f[0].actual
        );
        assert!(
            f[0].actual
                .contains("battery_percent: lockdown=87 mdm=40.000"),
            "{}",
            f[0].actual
        );
        assert_eq!(tally(&j, "baseline_disagreement").0.len(), 2);
    }

    #[test]
    fn acknowledged_not_updated_only_for_install_steps() {
        let two_step = |final_build: &str| {
            let mut j = dosed(&["A"]);
            j.schedule_answer("A", "C0A", "Acknowledged")
                .status("A", "S1", 1.0, Value::Boolean(true))
                .dose("A", 2, "C2");
            schedule_reply(&mut j, "A", "C2", "Acknowledged", "InstallASAP", "Idle");
            j.reprobe("A", true, Some(final_build))
                .ended("A", "follow-up time limit");
            j
        };
        let j = two_step("19H12");
        let f = fired(&j, "acknowledged_not_updated");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].command_uuid.as_deref(), Some("C2"));
        assert!(
            f[0].actual.contains("starting build 19H12"),
            "{}",
            f[0].actual
        );
        assert!(fired(&two_step("19H390"), "acknowledged_not_updated").is_empty());
        // Explained by the user's choice.
        let mut j = two_step("19H12");
        operator(&mut j, "A", "install_scheduled", "later");
        assert!(fired(&j, "acknowledged_not_updated").is_empty());
        // A single Default step only downloads: not in the situation.
        let mut j = dosed(&["A"]);
        j.schedule_answer("A", "C0A", "Acknowledged")
            .reprobe("A", true, Some("19H12"))
            .ended("A", "follow-up time limit");
        assert!(fired(&j, "acknowledged_not_updated").is_empty());
        assert!(tally(&j, "acknowledged_not_updated").0.is_empty());
    }

    #[test]
    fn available_updates_error_2213_versus_an_empty_list() {
        let mut j = J::new();
        j.device("A", false).device("B", false);
        let mut err = report_dict("A", Some("AV1"), "Error");
        err.insert(
            "ErrorChain".into(),
            error_chain(&[
                (2213, "DeviceManagement.error", "No update available."),
                (3, "com.apple.softwareupdateservices.errors", "error 3"),
            ]),
        );
        offered(&mut j, "A", "AV1", err);
        let mut empty = report_dict("B", Some("AV2"), "Acknowledged");
        empty.insert("AvailableOSUpdates".into(), Value::Array(vec![]));
        offered(&mut j, "B", "AV2", empty);
        // The same answer seen again through the MDM's results is not counted twice.
        let again = match &j.entries.iter().rev().nth(1).unwrap().event {
            Event::UpdatesOffered { updates, .. } => {
                updates["raw_b64"].as_str().unwrap().to_string()
            }
            _ => unreachable!(),
        };
        j.push(Event::MdmResult {
            udid: "A".into(),
            command_uuid: "AV1".into(),
            request_type: Some("AvailableOSUpdates".into()),
            status: "Error".into(),
            raw_b64: again,
            received_at: "x".into(),
        });
        let f = fired(&j, "available_updates_error_2213");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].udid, "A");
        assert_eq!(f[0].evidence.len(), 1);
        assert!(
            f[0].actual.contains("DeviceManagement.error 2213"),
            "{}",
            f[0].actual
        );
        assert_eq!(
            tally(&j, "available_updates_error_2213"),
            (vec!["A".into(), "B".into()], vec!["A".into()])
        );
    }

    #[test]
    fn detect_orders_by_detector_then_discovery() {
        let mut j = dosed(&["B", "A"]);
        j.status("A", "SA", 1.0, Value::Integer(1.into())).status(
            "B",
            "SB",
            1.0,
            Value::Integer(0.into()),
        );
        schedule_reply(&mut j, "B", "C0B", "Error", "Error", "Idle");
        status_item(&mut j, "B", "SB2", "Downloading", false);
        assert_eq!(
            ids(&j),
            [
                ("documented_type_mismatch", "B".to_string()),
                ("documented_type_mismatch", "A".to_string()),
                ("schedule_error_but_proceeds", "B".to_string()),
            ]
        );
        assert_eq!(detect(&j.entries), detect(&j.entries));
    }
}
