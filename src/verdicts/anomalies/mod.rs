//! The anomaly detectors: known ways iOS devices (and MDM servers) have been seen to depart from
//! Apple's documented MDM OS-update behaviour, checked against a run's journal.
//!
//! [`detect`] runs every detector of [`DETECTORS`] and returns what they found, one [`Anomaly`]
//! per detector and device, in the order of `DETECTORS` and then of first discovery. [`situations`]
//! tells, per detector, which devices were in the situation the detector judges (the `N` of a
//! radar's "n of N") and which of them showed the anomaly (the `n`). Both are pure.

//!
//! The detectors live by family: answers that depart from their documented shape
//! ([`answers`]), what follows a ScheduleOSUpdate ([`schedule`]), installs the user deferred
//! ([`install_later`]), the baseline ([`baseline`]) and DDM doses' status reports ([`ddm`]);
//! [`catalogue`] describes them all.

mod answers;
mod baseline;
mod catalogue;
mod ddm;
mod install_later;
mod schedule;

pub use answers::{COMMAND_DELIVERED, deliveries_journaled, unanswered_redeliveries};
pub use catalogue::{DETECTORS, Detector, Scope, detector};

use crate::journal::fold::{
    Answer, AvailFacts, BuildSeen, Facts, Intent, OsItem, RunFacts, decode_report, run_facts,
};
use crate::journal::{Entry, Event};
use answers::{
    available_updates_error_2213, command_redelivered, documented_type_mismatch,
    install_action_mismatch,
};
use baseline::baseline_disagreement;
use ddm::{
    ddm_deadline_passed_without_install, ddm_install_failed, ddm_pending_version_mismatch,
    ddm_status_build_mismatch, ddm_status_silent,
};
use install_later::{install_after_further_command, installing_while_scheduled};
use schedule::{acknowledged_not_updated, schedule_error_but_proceeds, schedule_no_response};
use std::collections::{BTreeSet, HashMap};

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
pub struct Findings(Vec<(&'static Detector, Vec<Finding>)>);

impl Findings {
    fn of_entries(entries: &[Entry]) -> Findings {
        let facts = run_facts(entries);
        let offered = offered_answers(entries);
        Findings::of(&facts, offered)
    }

    /// Run the detectors over the gathered facts and the `UpdatesOffered` answers of the
    /// journal (journal order; see [`offered_answer`]).
    pub fn of(facts: &RunFacts, offered: Vec<(String, Avail)>) -> Findings {
        let ctx = Ctx {
            avail: avail_answers(offered, facts),
            time_scale: facts
                .time_scale
                .filter(|s| s.is_finite() && *s > 0.0)
                .unwrap_or(1.0),
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
pub struct Avail {
    seq: u64,
    uuid: String,
    report: Option<AvailFacts>,
}

/// The AvailableOSUpdates answer an `UpdatesOffered` event carries (`updates.raw_b64`), with
/// its device, decoded once.
pub fn offered_answer(e: &Entry) -> Option<(String, Avail)> {
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
    /// Simulated seconds per real second (`RunFacts::time_scale`, 1 when not recorded).
    time_scale: f64,
}

type Check = fn(&Facts, &Ctx) -> (bool, Option<Found>);

/// An anomaly before it is tied to its detector and device.
struct Found {
    evidence: Vec<u64>,
    actual: String,
    command_uuid: Option<String>,
    responses: Vec<u64>,
}

fn checks() -> [(&'static str, Check); 15] {
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
        (
            "ddm_deadline_passed_without_install",
            ddm_deadline_passed_without_install,
        ),
        ("ddm_install_failed", ddm_install_failed),
        ("ddm_pending_version_mismatch", ddm_pending_version_mismatch),
        ("ddm_status_silent", ddm_status_silent),
        ("ddm_status_build_mismatch", ddm_status_build_mismatch),
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
fn schedule_intents(d: &Facts) -> impl Iterator<Item = &Intent> {
    d.intents
        .iter()
        .filter(|i| i.request_type == "ScheduleOSUpdate")
}

/// Operator observations that the user scheduled the install for later: their seqs.
fn scheduled_later(d: &Facts) -> Vec<u64> {
    d.observations
        .iter()
        .filter(|o| {
            o.by_operator()
                && o.is("install_scheduled")
                && o.value.trim().to_ascii_lowercase().starts_with("later")
        })
        .map(|o| o.seq)
        .collect()
}

fn yes(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "yes" | "y" | "true" | "1" | "shown" | "seen"
    )
}

fn first_new_build_after(d: &Facts, after: u64) -> Option<&BuildSeen> {
    let start = d.starting_build()?;
    d.builds.iter().find(|b| b.seq > after && b.build != start)
}

fn first_detach_after(d: &Facts, after: u64) -> Option<u64> {
    d.attaches
        .iter()
        .find(|a| a.seq > after && !a.attached)
        .map(|a| a.seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::ObservationSource;
    use crate::mdm::report::{error_chain, report_dict};
    use crate::verdicts::outcome::testkit::{J, b64};
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
        j.status_with(udid, uuid, 1.0, Value::Boolean(downloaded), status);
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

    /// Issue 17: the draft says "pushed" only when the MDM said so (MicroMDM's 201 does not).
    #[test]
    fn schedule_no_response_says_pushed_only_when_the_mdm_said_so() {
        let mut j = J::new();
        j.device("A", true).allocate("A", "a").consent(&["A"]);
        j.intent("A", 1, "C0A", "Default");
        j.push(Event::DoseEnqueued {
            udid: "A".into(),
            command_uuid: "C0A".into(),
            pushed: None,
            push_error: None,
        });
        j.reprobe("A", true, Some("19H12"))
            .ended("A", "follow-up time limit");
        let f = fired(&j, "schedule_no_response");
        assert!(
            f[0].actual
                .contains("was queued and the MDM did not say whether it pushed,"),
            "{}",
            f[0].actual
        );
        let j = {
            let mut j = dosed(&["A"]);
            j.reprobe("A", true, Some("19H12"))
                .ended("A", "follow-up time limit");
            j
        };
        let f = fired(&j, "schedule_no_response");
        assert!(
            f[0].actual.contains("was queued and pushed,"),
            "{}",
            f[0].actual
        );
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

    /// Issue 14: a dose the device never answered, delivered again and again (NanoMDM, an
    /// 11.3.1 device), from the journaled deliveries; a NotNow followed by a re-delivery is
    /// the queue working, and a delivery still on its way to an answer is no re-delivery.
    #[test]
    fn command_redelivered_while_unanswered_from_the_deliveries_seen() {
        let mut j = dosed(&["A", "B", "C"]);
        let delivered = |j: &mut J, u: &str, uuid: &str, n: usize| {
            for k in 0..n {
                j.push(Event::Observation {
                    udid: Some(u.into()),
                    source: crate::journal::ObservationSource::Harness,
                    kind: COMMAND_DELIVERED.into(),
                    key: uuid.into(),
                    value: format!("t{k}: an Idle poll"),
                });
            }
        };
        delivered(&mut j, "A", "C0A", 14);
        delivered(&mut j, "B", "C1B", 2);
        j.result("B", "C1B", Some("ScheduleOSUpdate"), "NotNow", |_| {})
            .schedule_answer("B", "C1B", "Acknowledged");
        delivered(&mut j, "C", "C2C", 1);
        let f = fired(&j, "command_redelivered");
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].udid, "A");
        assert!(
            f[0].actual
                .contains("ScheduleOSUpdate C0A was delivered 14 times and never answered"),
            "{}",
            f[0].actual
        );
        assert!(f[0].actual.contains("again 13 time(s)"), "{}", f[0].actual);
        assert_eq!(f[0].evidence.len(), 15, "the intent and 14 deliveries");
        let (situation, showed) = tally(&j, "command_redelivered");
        assert_eq!(situation, ["A", "B", "C"]);
        assert_eq!(showed, ["A"]);
        assert_eq!(unanswered_redeliveries(14, 1, true), 13, "a late answer");
        assert_eq!(unanswered_redeliveries(1, 0, false), 0, "in flight");
    }

    #[test]
    fn baseline_disagreement_from_the_probe_record() {
        let mut j = J::new();
        j.device("A", true).device("B", true);
        let mut probe = crate::verdicts::outcome::testkit::probe("A", "15.7", "19H12");
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
