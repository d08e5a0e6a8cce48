//! Before any dose: the baseline of every device (USB probe and the MDM's side of it), its
//! eligibility verdict, and the seeded allocation to arms.

use super::*;
use crate::journal::fold::baseline_facts::{self, BenchEnrollment, UserChannel};

/// What the MDM said of a device beyond its answers, for its eligibility: its DDM enrollment
/// (when the protocol has DDM arms) and its user channel (issue 14).
pub(super) struct MdmSide {
    pub ddm: Option<Result<crate::mdm::ddm_doses::DdmEnrollment, String>>,
    pub user: UserChannel,
}

/// The device's user channel as its MDM records it; "unknown", saying why, when the MDM keeps
/// no such record or the call failed (eligibility then decides by the protocol's
/// `unknown_facts`).
async fn user_channel(backend: &dyn crate::mdm::backend::MdmBackend, udid: &str) -> UserChannel {
    use crate::mdm::backend::UserChannels;
    match backend.user_channels(udid).await {
        Ok(UserChannels::Known(r)) => UserChannel::of_record(&r),
        Ok(UserChannels::Unknown(why)) => UserChannel::Unknown(why),
        Err(e) => UserChannel::Unknown(format!("the MDM's user-channel record: {e}")),
    }
}

impl Runner<'_> {
    pub(super) async fn baseline(&mut self) -> Result<(), RunError> {
        if let Some((url, key, n)) = self.lab.enrolled_check.clone() {
            crate::mdm::backend::wait_enrolled(&url, &key, n, Duration::from_secs(30)).await;
        }
        let (devices, host_errors) = probe::list_all(&self.lab.addrs, Duration::from_secs(5)).await;
        for h in host_errors {
            self.log(Event::Observation {
                udid: None,
                source: ObservationSource::Harness,
                kind: "host_unreachable".into(),
                key: h.host,
                value: h.error,
            })?;
        }
        let new: Vec<_> = devices
            .into_iter()
            .filter(|d| {
                self.state
                    .devices
                    .get(&d.entry.serial_number)
                    .is_none_or(|x| x.eligible.is_none())
            })
            .collect();
        if new.is_empty() && self.state.devices.is_empty() {
            return Err(RunError::Lab("no devices attached".into()));
        }
        let discovered: Vec<Event> = new
            .iter()
            .map(|d| Event::DeviceDiscovered {
                udid: d.entry.serial_number.clone(),
                host: d.host.clone(),
                device_id: d.entry.device_id,
            })
            .collect();
        self.log_all(discovered)?;
        let probes = probe::probe_all(
            new.into_iter().map(|d| (d, None)).collect(),
            ProbeOptions {
                timeout: Duration::from_secs(10),
                ..ProbeOptions::default()
            },
        )
        .await;
        let wait = Duration::from_secs(30);
        // The ledger is read once for the whole baseline, not once per device.
        let ledger_records = self.ledger.records()?;
        let mut probes = probes.into_iter();
        loop {
            let chunk: Vec<DeviceProbe> = probes.by_ref().take(CONCURRENCY).collect();
            if chunk.is_empty() {
                break;
            }
            self.check_interrupt()?;
            // The MDM side of a chunk of devices concurrently (each waits for its device to
            // check in and answer) …
            let answers = {
                let backend = self.lab.backend.as_ref();
                let ddm = self.lab.ddm.as_deref().filter(|_| self.has_ddm_arms());
                crate::join::join_all(
                    chunk
                        .iter()
                        .map(|p| mdm_side_of(backend, ddm, p, wait))
                        .collect(),
                )
                .await
            };
            // … then recorded in order, one fsync for the chunk, before anything acts on them.
            let mut events = Vec::new();
            for (mut p, answer) in chunk.into_iter().zip(answers) {
                let (offered, offered_error, offered_event, mdm_doses, ddm, user) = match answer {
                    Some((facts, (event, offered, error), doses, ddm, user, failed)) => {
                        events.extend(failed.into_iter().map(|f| Event::Observation {
                            udid: Some(p.udid.clone()),
                            source: ObservationSource::Harness,
                            kind: "mdm_api_error".into(),
                            key: f.what,
                            value: match f.times {
                                1 => f.error,
                                n => format!("{} ({n} times while the baseline waited)", f.error),
                            },
                        }));
                        p.disagreements = mdm_side::compare(&p.baseline, &facts);
                        p.mdm = Some(facts);
                        (offered, error, event, doses, ddm, user)
                    }
                    None => {
                        let user = UserChannel::Unknown("no baseline".into());
                        (None, Some("no baseline".into()), None, None, None, user)
                    }
                };
                let probe_json = serde_json::to_value(&p).expect("probe serialises");
                events.push(Event::BaselineRecorded {
                    udid: p.udid.clone(),
                    probe: probe_json,
                });
                events.extend(offered_event);
                // Any other run, this protocol's included (a finished run is not resumed, and
                // its devices must not be dosed again), by the ledger or the MDM's records.
                let ledger_hits: Vec<LedgerRecord> = match p.baseline.build_version.get() {
                    Some(b) => match dose_guard::decide(&dose_guard::Facts {
                        udid: &p.udid,
                        build: b,
                        run_dir: &self.run_dir.display().to_string(),
                        journal_uuids: &HashSet::new(),
                        ledger: &ledger_records,
                        mdm: mdm_doses.as_deref(),
                    }) {
                        Decision::AlreadyDosed(ev) => {
                            ev.iter().map(|e| e.as_record(&p.udid, b)).collect()
                        }
                        Decision::Dose | Decision::Uncertain { .. } => Vec::new(),
                    },
                    None => Vec::new(),
                };
                let mdm = MdmSide { ddm, user };
                events.push(self.assess(&p, offered.as_deref(), offered_error, ledger_hits, mdm));
            }
            self.log_all(events)?;
        }
        Ok(())
    }

    /// Whether any arm doses by DDM declaration.
    pub(super) fn has_ddm_arms(&self) -> bool {
        self.p
            .protocol
            .arms
            .iter()
            .any(|a| a.dose_mechanism() == DoseMechanism::DdmEnforcement)
    }

    /// The eligibility verdict of one device, for every dose mechanism the protocol's arms use
    /// (issue 13). With DDM arms the target records `mechanisms`, the doses the device may
    /// receive (allocation reads it: a DDM arm draws only from devices eligible for a
    /// declaration). The verdict recorded is the ScheduleOSUpdate one (with the
    /// bug-reproduction waiver) when it is eligible, else the DDM one; an excluded device
    /// carries every mechanism's reasons, each rule once.
    pub(super) fn assess(
        &self,
        p: &DeviceProbe,
        offered: Option<&[AvailableUpdate]>,
        offered_error: Option<String>,
        ledger_hits: Vec<LedgerRecord>,
        mdm: MdmSide,
    ) -> Event {
        let MdmSide { ddm, user } = mdm;
        let (ddm_active, ddm_error) = match ddm {
            Some(Ok(e)) => (e.active, None),
            Some(Err(e)) => (None, Some(e)),
            None => (None, None),
        };
        // DEP, Shared iPad user and access rights from the probe, the MDM and the bench's
        // configuration (issue 14), each with its source.
        let e = &self.p.protocol.eligibility.enrollment;
        let bench = BenchEnrollment {
            dep_enrolled: e.dep_enrolled,
            access_rights: e.access_rights,
        };
        let probe_json = serde_json::to_value(p).expect("probe serialises");
        let facts = baseline_facts::enrollment(&probe_json, bench, &user);
        let subject = Subject {
            probe: p,
            offered,
            offered_error,
            dosed_by_other_protocols: ledger_hits,
            access_rights: None,
            shared_ipad_user_logged_in: None,
            dep_enrolled: None,
            fact_sources: Default::default(),
            ddm_active,
            ddm_error,
            feeds: self.feeds.as_ref(),
        }
        .with_enrollment(&facts);
        let mechanisms: std::collections::BTreeSet<DoseMechanism> = self
            .p
            .protocol
            .arms
            .iter()
            .map(|a| a.dose_mechanism())
            .collect();
        let ddm = mechanisms
            .contains(&DoseMechanism::DdmEnforcement)
            .then(|| {
                assess_for(
                    DoseMechanism::DdmEnforcement,
                    &self.p.protocol.eligibility,
                    &self.p.protocol.target,
                    &subject,
                )
            });
        let sou = mechanisms
            .contains(&DoseMechanism::ScheduleOsUpdate)
            .then(|| self.assess_schedule_os_update(&subject));
        let (v, may) =
            crate::trial::eligibility::combine(sou, ddm).expect("a protocol has at least one arm");
        let mut target = v.target_json();
        if self.has_ddm_arms()
            && let serde_json::Value::Object(o) = &mut target
        {
            let may: Vec<&str> = may.iter().map(|m| m.as_str()).collect();
            o.insert("mechanisms".into(), serde_json::json!(may));
        }
        Event::EligibilityAssessed {
            udid: p.udid.clone(),
            eligible: v.eligible,
            reasons: v.reasons,
            target,
        }
    }

    /// The ScheduleOSUpdate verdict, with the bug-reproduction waiver.
    fn assess_schedule_os_update(&self, subject: &Subject) -> crate::trial::eligibility::Verdict {
        let mut v = assess(
            &self.p.protocol.eligibility,
            &self.p.protocol.target,
            subject,
        );
        // A bug-reproduction arm may take a device excluded only for its known-bad version:
        // judge it again with that rule waived, and record the waiver as its reason.
        let waiving: Vec<&str> = self
            .p
            .protocol
            .arms
            .iter()
            .filter(|a| a.accept_known_bad)
            .map(|a| a.name.as_str())
            .collect();
        if !v.eligible
            && !waiving.is_empty()
            && !v.reasons.is_empty()
            && v.reasons.iter().all(|r| r.rule == "known_bad_version")
        {
            let mut spec = self.p.protocol.eligibility.clone();
            spec.known_bad_versions = Some(Vec::new());
            let again = assess(&spec, &self.p.protocol.target, subject);
            if again.eligible {
                let original = v.reasons.remove(0);
                v = again;
                v.reasons = vec![crate::journal::Reason {
                    rule: WAIVED_KNOWN_BAD.into(),
                    message: format!(
                        "{} Waived: taken by the bug-reproduction arm {} to reproduce it.",
                        original.message.trim_end_matches('.'),
                        waiving.join(", ")
                    ),
                    values: original.values,
                }];
            }
        }
        v
    }

    /// The seeded allocation of the eligible `candidates` (the `waived` ones only to
    /// bug-reproduction arms). The DDM arms draw first, from the devices eligible for a
    /// declaration; the ScheduleOSUpdate arms share the others that may receive the command (a
    /// target without `mechanisms`: a protocol without DDM arms). Pure in the seed, the
    /// candidates and the verdicts.
    fn draw(
        &self,
        candidates: Vec<Candidate>,
        waived: &HashSet<String>,
    ) -> Result<Vec<(String, String)>, RunError> {
        let seed = self.p.protocol.allocation_seed;
        let may = |c: &Candidate, m: DoseMechanism| {
            let t = &self.state.devices[&c.udid].target["mechanisms"];
            match t.as_array() {
                Some(list) => list.iter().any(|x| x == m.as_str()),
                None => m == DoseMechanism::ScheduleOsUpdate,
            }
        };
        let arms_of = |f: &dyn Fn(&crate::trial::protocol::ArmSpec) -> bool| -> Vec<_> {
            self.p
                .protocol
                .arms
                .iter()
                .filter(|a| f(a))
                .cloned()
                .collect()
        };
        let repro_arms = arms_of(&|a| a.accept_known_bad);
        let ddm_arms = arms_of(&|a| a.dose_mechanism() == DoseMechanism::DdmEnforcement);
        let sou_arms = arms_of(&|a| {
            !a.accept_known_bad && a.dose_mechanism() == DoseMechanism::ScheduleOsUpdate
        });
        let (repro, others): (Vec<Candidate>, Vec<Candidate>) = candidates
            .into_iter()
            .partition(|c| waived.contains(&c.udid));
        let mut alloc = Vec::new();
        // (arms, the dose their devices must be eligible for; `None`: the waived devices).
        let groups = [
            (ddm_arms, Some(DoseMechanism::DdmEnforcement)),
            (sou_arms, Some(DoseMechanism::ScheduleOsUpdate)),
            (repro_arms, None),
        ];
        for (arms, mechanism) in groups {
            let pool = if mechanism.is_none() { &repro } else { &others };
            let cands: Vec<Candidate> = pool
                .iter()
                .filter(|c| mechanism.is_none_or(|m| may(c, m)))
                .filter(|c| !alloc.iter().any(|(u, _): &(String, String)| *u == c.udid))
                .cloned()
                .collect();
            if arms.is_empty() || cands.is_empty() {
                continue;
            }
            alloc.extend(allocate(&arms, &cands, seed).map_err(|e| {
                RunError::BadInput(format!("{}: allocation: {e}", self.p.path.display()))
            })?);
        }
        Ok(alloc)
    }

    /// What [`Runner::allocate`] would draw, journaling nothing: `lab qualify` then catches an
    /// allocation the eligible devices cannot fill (an arm's `count` above them) before any run
    /// folder exists (issue 14).
    pub(super) fn check_allocation(&self) -> Result<(), RunError> {
        let (candidates, waived) = self.candidates()?;
        self.draw(candidates, &waived).map(|_| ())
    }

    pub(super) fn allocate(&mut self) -> Result<(), RunError> {
        if self.state.consented.is_some() {
            return Ok(());
        }
        let (candidates, waived) = self.candidates()?;
        let seed = self.p.protocol.allocation_seed;
        let alloc = self.draw(candidates, &waived)?;
        // The allocation is a pure function of the seed and the candidates: a run killed halfway
        // through it logs the missing devices' arms on resume, and must agree with those logged.
        let mut events = Vec::new();
        for (udid, arm) in alloc {
            match &self.state.devices[&udid].arm {
                Some(a) if *a == arm => {}
                Some(a) => {
                    return Err(RunError::Lab(format!(
                        "allocation of {udid}: the journal says arm {a}, the seed gives {arm}"
                    )));
                }
                None => {
                    events.push(Event::Allocated {
                        udid: udid.clone(),
                        arm: arm.clone(),
                        seed,
                    });
                }
            }
        }
        self.log_all(events)?;
        Ok(())
    }

    /// The eligible devices as allocation sees them, and those eligible only by the
    /// bug-reproduction waiver.
    fn candidates(&self) -> Result<(Vec<Candidate>, HashSet<String>), RunError> {
        let mut waived: HashSet<String> = HashSet::new();
        crate::journal::stream(self.journal.path(), |_, e| {
            if let Event::EligibilityAssessed { udid, reasons, .. } = e.event
                && reasons.iter().any(|r| r.rule == WAIVED_KNOWN_BAD)
            {
                waived.insert(udid);
            }
            Ok(())
        })?;
        let candidates: Vec<Candidate> = self
            .state
            .order
            .iter()
            .filter(|u| self.state.devices[*u].eligible == Some(true))
            .map(|u| {
                let probe = self.state.devices[u].probe.clone().unwrap_or_default();
                Candidate {
                    udid: u.clone(),
                    passcode: probe.passcode,
                    model: probe.product_type,
                }
            })
            .collect();
        Ok((candidates, waived))
    }
}

/// What the DDM server knows of a device's enrollment. DDM is turned on at enrolment
/// (`DeclarativeManagement` command, then the device's check-in), possibly while the baseline
/// runs: a "not on" is asked again for a few seconds before it counts.
async fn ddm_state(
    ddm: &dyn crate::mdm::ddm_doses::DdmDoses,
    udid: &str,
) -> Result<crate::mdm::ddm_doses::DdmEnrollment, String> {
    let start = Instant::now();
    loop {
        match ddm.enrollment(udid).await {
            Ok(e) if e.active == Some(false) && start.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(e) => return Ok(e),
            Err(e) => {
                return Err(format!(
                    "the DDM server ({}) did not answer: {e}",
                    ddm.kind()
                ));
            }
        }
    }
}

/// What the MDM side tells of one probed device at baseline: its DeviceInformation and
/// SecurityInfo facts, its offered updates, the MDM's own dose records, its DDM state, its
/// user channel, and the reads that failed on the way. `None` for a device whose probe failed.
async fn mdm_side_of(
    backend: &dyn crate::mdm::backend::MdmBackend,
    ddm: Option<&dyn crate::mdm::ddm_doses::DdmDoses>,
    p: &DeviceProbe,
    wait: Duration,
) -> Option<MdmSideAnswers> {
    if p.status == ProbeStatus::Failed {
        return None;
    }
    let version = p.baseline.product_version.get().cloned();
    // Every failed read below is journaled (a poll that failed and was retried too), before
    // the baseline it delayed.
    let failed = mdm_side::FailedReads::default();
    let facts = mdm_side::query(backend, &p.udid, version.as_deref(), wait, &failed).await;
    let offered = available_updates(backend, &p.udid, version, wait, &failed).await;
    // The MDM's own dose records, for `already_dosed` (a failed call leaves the ledger; the
    // check before the dose asks again).
    let doses = match backend.dose_records(&p.udid).await {
        Ok(d) => d,
        Err(e) => {
            failed.note("baseline dose records", &e);
            None
        }
    };
    let ddm = match ddm {
        Some(d) => Some(ddm_state(d, &p.udid).await),
        None => None,
    };
    // After the history call above: it tells whether this MDM is `lab`'s own server, the one
    // that records user channels.
    let user = user_channel(backend, &p.udid).await;
    Some((facts, offered, doses, ddm, user, failed.into_inner()))
}

/// [`mdm_side_of`]'s answer, in that order.
type MdmSideAnswers = (
    mdm_side::MdmFacts,
    (Option<Event>, Option<Vec<AvailableUpdate>>, Option<String>),
    Option<Vec<crate::mdm::backend::MdmDose>>,
    Option<Result<crate::mdm::ddm_doses::DdmEnrollment, String>>,
    UserChannel,
    Vec<mdm_side::FailedRead>,
);

/// Ask a device what it offers (AvailableOSUpdates) and wait for the answer: the event recording
/// it (for the caller to log), the parsed offer, and why there is none.
pub(super) async fn available_updates(
    backend: &dyn MdmBackend,
    udid: &str,
    version: Option<String>,
    wait: Duration,
    failed: &mdm_side::FailedReads,
) -> (Option<Event>, Option<Vec<AvailableUpdate>>, Option<String>) {
    let uuid = format!("lab-avail-{}", crate::tls::random_secret());
    if let Some(v) = &version {
        let violations =
            crate::mdm::schema::validate_command(&Command::AvailableOSUpdates.to_dict(), v);
        if !violations.is_empty() {
            return (
                None,
                None,
                Some(format!(
                    "AvailableOSUpdates not sent: not available on iOS {v}"
                )),
            );
        }
    }
    if let Err(e) = backend
        .enqueue(udid, &Command::AvailableOSUpdates, &uuid)
        .await
    {
        return (
            None,
            None,
            Some(format!("AvailableOSUpdates could not be sent: {e}")),
        );
    }
    let start = Instant::now();
    loop {
        let results = backend.results(udid).await.unwrap_or_else(|e| {
            failed.note("baseline results", &e);
            Vec::new()
        });
        if let Some(r) = results
            .iter()
            .find(|r| r.command_uuid == uuid && r.status != "NotNow")
        {
            let rep = parse_report(&r.raw).ok();
            let updates = rep.as_ref().and_then(available_os_updates);
            let event = Event::UpdatesOffered {
                udid: udid.to_string(),
                command_uuid: uuid.clone(),
                updates: serde_json::json!({
                    "status": r.status,
                    "raw_b64": base64::engine::general_purpose::STANDARD.encode(&r.raw),
                    "updates": updates.as_ref().map(|u| u.iter().map(|x| serde_json::json!({
                        "product_key": x.product_key, "version": x.version, "build": x.build,
                        "download_size": x.download_size, "install_size": x.install_size,
                    })).collect::<Vec<_>>()),
                }),
            };
            let err = (r.status != "Acknowledged").then(|| {
                let chain = rep
                    .map(|x| {
                        x.error_chain
                            .iter()
                            .map(|c| {
                                format!(
                                    "{} {}",
                                    c.domain.clone().unwrap_or_default(),
                                    c.code.unwrap_or_default()
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(" → ")
                    })
                    .unwrap_or_default();
                format!("AvailableOSUpdates answered {} {chain}", r.status)
            });
            return (Some(event), updates, err);
        }
        if start.elapsed() > wait {
            return (
                None,
                None,
                Some(format!("AvailableOSUpdates unanswered within {wait:?}")),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
