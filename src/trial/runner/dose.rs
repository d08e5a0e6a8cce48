//! The dose: intent (journal + lab-wide ledger, fsynced) → the check before the dose under the
//! lab lock (`dose_guard`) → the MDM, and the bounded retries of an enqueue that failed.

use super::*;
impl Runner<'_> {
    pub(super) fn command_for(&self, udid: &str, action: InstallAction) -> Command {
        let d = &self.state.devices[udid];
        let item = match (&self.p.protocol.target, d.target["product_key"].as_str()) {
            (TargetSpec::ProductVersion(v), _) => UpdateItem {
                product_key: None,
                product_version: Some(v.clone()),
                install_action: action,
            },
            (_, Some(k)) => UpdateItem {
                product_key: Some(k.to_string()),
                product_version: None,
                install_action: action,
            },
            (TargetSpec::ProductKey(k), None) => UpdateItem {
                product_key: Some(k.clone()),
                product_version: None,
                install_action: action,
            },
            (TargetSpec::Latest | TargetSpec::LatestForModel, None) => UpdateItem {
                product_key: None,
                product_version: d.target["version"].as_str().map(str::to_string),
                install_action: action,
            },
        };
        Command::ScheduleOSUpdate {
            updates: vec![item],
        }
    }

    /// The first step of every allocated device, in batches of [`CONCURRENCY`] (Ctrl-C is
    /// honoured between batches).
    pub(super) async fn first_doses(&mut self) -> Result<(), RunError> {
        // Batched over every allocated device, as journaled batches always were (a resumed run
        // groups its commits as the first run did); each device's own next action decides.
        let allocated: Vec<String> = self
            .state
            .order
            .iter()
            .filter(|u| self.state.devices[*u].arm.is_some())
            .cloned()
            .collect();
        for batch in allocated.chunks(CONCURRENCY) {
            let arms = &self.p.protocol.arms;
            let items = batch
                .iter()
                .filter_map(|udid| {
                    match next_action(&self.state.devices[udid], Moment::FirstDose { arms }) {
                        Action::Dose { step, action } => Some((udid.clone(), step, action)),
                        _ => None,
                    }
                })
                .collect();
            self.check_interrupt()?;
            self.dose_many(items).await?;
        }
        Ok(())
    }

    /// Send each `(udid, step, action)` of a batch (at most [`CONCURRENCY`]): every intent
    /// (journal + ledger, fsynced once for the batch) → the MDM, concurrently → the answers.
    /// A step a device already has an intent for is never sent again.
    pub(super) async fn dose_many(
        &mut self,
        items: Vec<(String, u32, InstallAction)>,
    ) -> Result<(), RunError> {
        let items: Vec<_> = items
            .into_iter()
            .filter(|(udid, step, _)| {
                let d = &self.state.devices[udid];
                !d.doses.contains_key(step) && !d.withheld.contains(step)
            })
            .collect();
        if items.is_empty() || self.stopped()? {
            return Ok(());
        }
        // An MDM refusing `lab` stops the run before any intent, or once every answer of the
        // batch is journaled (`runner::refused`), never between.
        self.check_mdm_access()?;
        let prepared = self.record_intents(items).await?;
        test_pause(self.opts.pauses.after_intent).await;
        self.send_prepared(prepared).await?;
        self.check_mdm_access()
    }

    /// The decision and the durable intents, under the lab-wide dose lock: the ledger, this
    /// run's journal and the MDM's own records are read, and the intents fsynced (journal, then
    /// ledger), before any other run can decide on these devices. The commands go out after the
    /// lock is released, by the caller.
    async fn record_intents(
        &mut self,
        items: Vec<(String, u32, InstallAction)>,
    ) -> Result<Vec<Prepared>, RunError> {
        let dose_lock = self.ledger.dose_lock().await?;
        let ledger = self.ledger.records()?;
        let store = self.current_store().await?;
        let udids: Vec<String> = items.iter().map(|x| x.0.clone()).collect();
        let mdm = self.mdm_dose_records(&udids).await?;
        let run_dir = self.run_dir.display().to_string();
        let mut reconciled = Vec::new();
        let mut intents = Vec::new();
        let mut prepared = Vec::new();
        for ((udid, step, action), mdm) in items.into_iter().zip(mdm) {
            let d = &self.state.devices[&udid];
            let probe = d.probe.clone().unwrap_or_default();
            let build = probe.build_version.clone().unwrap_or_default();
            let decision = dose_guard::decide(&dose_guard::Facts {
                udid: &udid,
                build: &build,
                run_dir: &run_dir,
                journal_uuids: &journal_uuids(d),
                ledger: &ledger,
                mdm: mdm.as_deref(),
            });
            if let Some(events) = self.not_dosed(&udid, step, &build, decision) {
                reconciled.extend(events);
                continue;
            }
            let (intent, x) = self.intent(&udid, step, action, &probe, &store, &run_dir);
            intents.push(intent);
            prepared.push(x);
        }
        self.log_all(reconciled)?;
        let logged = self.log_all(intents)?;
        for (x, e) in prepared.iter_mut().zip(&logged) {
            x.made = IntentMade {
                store: store.clone(),
                at: e.at.clone(),
            };
        }
        let recs: Vec<LedgerRecord> = prepared.iter().map(|x| x.rec.clone()).collect();
        self.ledger.append_all(&recs)?;
        drop(dose_lock);
        Ok(prepared)
    }

    /// What the check before the dose journals instead of a dose: withheld (another run dosed
    /// the device), or a lost intent of this run found in the ledger (dose uncertain). `None`:
    /// dose.
    fn not_dosed(
        &self,
        udid: &str,
        step: u32,
        build: &str,
        decision: Decision,
    ) -> Option<Vec<Event>> {
        match decision {
            Decision::Dose => None,
            Decision::AlreadyDosed(ev) => {
                Some(vec![Event::DoseWithheld {
                    udid: udid.into(),
                    step,
                    rule: crate::trial::eligibility::rule::ALREADY_DOSED.into(),
                    reason: format!(
                        "another run already sent this device an update command at build {build}: {}; not sent",
                        ev.iter()
                            .map(dose_guard::Evidence::describe)
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                }])
            }
            Decision::Uncertain {
                command_uuid,
                step: lost_step,
                at,
            } => {
                Some(vec![
                    Event::DoseReconciled {
                        udid: udid.into(),
                        step: lost_step,
                        command_uuid: command_uuid.clone(),
                        starting_build: build.into(),
                        reason: format!(
                            "the lab-wide ledger holds this run's intent {command_uuid} (step {lost_step}, {at}) but the journal lost its line"
                        ),
                    },
                    Event::DoseUncertain {
                        udid: udid.into(),
                        command_uuid,
                        reason: "intent found only in the lab-wide ledger: whether it reached the MDM is unknown; never re-sent, and no fresh dose".into(),
                    },
                ])
            }
        }
    }

    /// A DDM arm's dose for a device: the declaration's identifier and exact bytes, built once
    /// here (`trial::ddm_dose`), the deadline counted on the device's own clock and zone.
    fn declaration_for(&self, udid: &str, spec: &EnforcementSpec) -> Result<Payload, String> {
        let d = &self.state.devices[udid];
        let probe = d.probe.clone().unwrap_or_default();
        // When the clock was read: the probe's own host time, else (older journals) the time
        // the baseline was journaled, a little later.
        let read_at = probe
            .host_time_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .or_else(|| {
                d.baseline_at
                    .as_deref()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&chrono::Utc))
            });
        let clock = probe.device_time_ms.zip(read_at);
        let now =
            crate::trial::ddm_dose::device_now(clock, chrono::Utc::now(), self.lab.time_scale);
        let deadline = crate::trial::ddm_dose::local_deadline(
            &spec.deadline,
            now,
            probe.utc_offset_s.unwrap_or(0),
        )?;
        let version = d.target["version"]
            .as_str()
            .ok_or("no target version was resolved for the device")?;
        let e = crate::trial::ddm_dose::enforcement(spec, version, deadline);
        let identifier = format!("lab-ddm-{}", uuid_v4());
        Ok(Payload::Declaration {
            bytes: crate::trial::ddm_dose::declaration_bytes(&e, &identifier),
            identifier,
        })
    }

    /// What a dose of `arm` sends to `udid` (on iOS `version`), its id, and why it may not be
    /// sent: a command failing Apple's schema for that version, or a declaration the device's
    /// iOS does not know or whose deadline cannot be told.
    fn payload_for(
        &self,
        udid: &str,
        arm: &str,
        action: InstallAction,
        version: &str,
    ) -> (Payload, String, Vec<String>) {
        let enforcement = self
            .p
            .protocol
            .arms
            .iter()
            .find(|a| a.name == arm)
            .and_then(|a| a.ddm_enforcement.clone());
        let Some(spec) = enforcement else {
            let cmd = self.command_for(udid, action);
            let violations = crate::mdm::schema::validate_command(&cmd.to_dict(), version)
                .iter()
                .map(|v| v.to_string())
                .collect();
            return (
                Payload::Command(cmd),
                format!("lab-dose-{}", uuid_v4()),
                violations,
            );
        };
        let (payload, mut violations) = match self.declaration_for(udid, &spec) {
            Ok(p) => (p, Vec::new()),
            Err(why) => (
                Payload::Declaration {
                    identifier: format!("lab-ddm-{}", uuid_v4()),
                    bytes: Vec::new(),
                },
                vec![why],
            ),
        };
        if !crate::trial::eligibility::ddm::enforcement_available(version) {
            violations.push(format!(
                "the enforcement declaration needs iOS {} or later",
                crate::trial::eligibility::ddm::ENFORCEMENT_MIN_IOS
            ));
        }
        let uuid = payload.identifier().unwrap_or_default().to_string();
        (payload, uuid, violations)
    }

    /// A fresh dose of `step`: its intent event and what to send once the intent is durable.
    fn intent(
        &self,
        udid: &str,
        step: u32,
        action: InstallAction,
        probe: &ProbeFacts,
        store: &Option<StoreIdentity>,
        run_dir: &str,
    ) -> (Event, Prepared) {
        let version = probe.product_version.clone().unwrap_or_default();
        let build = probe.build_version.clone().unwrap_or_default();
        let arm = self.state.devices[udid].arm.clone().unwrap_or_default();
        let (payload, uuid, violations) = self.payload_for(udid, &arm, action, &version);
        let bytes = payload.bytes(&uuid);
        let intent = Event::DoseIntent {
            udid: udid.into(),
            arm,
            step,
            command_uuid: uuid.clone(),
            request_type: payload.request_type().into(),
            install_action: payload.install_action(),
            starting_build: build.clone(),
            command_b64: base64::engine::general_purpose::STANDARD.encode(&bytes),
            mdm_store: store.clone(),
        };
        let rec = LedgerRecord {
            udid: udid.into(),
            starting_build: build,
            kind: LedgerKind::Intent,
            command_uuid: uuid.clone(),
            step,
            trial_id: self.p.protocol.id.clone(),
            protocol_sha256: self.p.sha256.clone(),
            run_dir: run_dir.into(),
            at: chrono::Utc::now().to_rfc3339(),
        };
        let prepared = Prepared {
            udid: udid.into(),
            version,
            payload,
            violations,
            rec,
            made: IntentMade::default(),
        };
        (intent, prepared)
    }

    /// The prepared doses to the MDM, concurrently (a command failing Apple's schema is not
    /// sent), and their answers journaled with one fsync; an enqueue that failed goes to
    /// [`Runner::send_dose`]'s retries, one device at a time.
    async fn send_prepared(&mut self, prepared: Vec<Prepared>) -> Result<(), RunError> {
        let answers = {
            let backend = self.lab.backend.as_ref();
            let ddm = self.lab.ddm.as_deref();
            crate::join::join_all(
                prepared
                    .iter()
                    .map(|x| async move {
                        if !x.violations.is_empty() {
                            return None;
                        }
                        Some(
                            x.payload
                                .send(backend, ddm, &x.udid, &x.rec.command_uuid)
                                .await,
                        )
                    })
                    .collect(),
            )
            .await
        };
        let mut recs = Vec::new();
        let mut events = Vec::new();
        let mut failed = Vec::new();
        let with = |r: &LedgerRecord, kind| LedgerRecord {
            kind,
            at: chrono::Utc::now().to_rfc3339(),
            ..r.clone()
        };
        for (x, answer) in prepared.into_iter().zip(answers) {
            let (udid, command_uuid) = (x.udid.clone(), x.rec.command_uuid.clone());
            match answer {
                None => {
                    recs.push(with(&x.rec, LedgerKind::Failed));
                    events.push(Event::DoseFailed {
                        udid,
                        command_uuid,
                        error: format!(
                            "not sent: the {} fails Apple's schema for iOS {}: {}",
                            x.payload.noun(),
                            x.version,
                            x.violations.join("; ")
                        ),
                    });
                }
                Some(Ok(q)) => {
                    recs.push(with(&x.rec, LedgerKind::Enqueued));
                    events.push(Event::DoseEnqueued {
                        udid,
                        command_uuid,
                        pushed: q.pushed,
                        push_error: q.push_error,
                    });
                }
                // Rare: handled one device at a time, with the MDM's records and retries.
                Some(Err(e)) => failed.push((x, e)),
            }
        }
        self.ledger.append_all(&recs)?;
        self.log_all(events)?;
        for (x, e) in failed {
            self.send_dose(
                &x.udid,
                &x.payload,
                &x.rec.command_uuid.clone(),
                x.rec,
                &x.made,
                Some(e),
            )
            .await?;
        }
        Ok(())
    }

    /// Enqueue a dose whose intent is durable, with bounded retries.
    ///
    /// An attempt that fails without a clear refusal (timeout, dropped connection, HTTP 5xx,
    /// an answer that cannot be read) may still have queued the command, so before any retry
    /// the MDM's own records are asked: queued → the dose is recorded as enqueued; proven not
    /// queued → the same command (same CommandUUID, same bytes — the server refuses a
    /// CommandUUID it already has, so a late first attempt cannot make two) is sent again after
    /// a backoff; no records to ask (NanoMDM, MicroMDM) → dose uncertain, never re-sent. Every
    /// failed attempt is journaled as an observation.
    pub(super) async fn send_dose(
        &mut self,
        udid: &str,
        cmd: &Payload,
        uuid: &str,
        template: LedgerRecord,
        made: &IntentMade,
        mut first_error: Option<crate::mdm::backend::BackendError>,
    ) -> Result<(), RunError> {
        let rec = |kind| LedgerRecord {
            kind,
            at: chrono::Utc::now().to_rfc3339(),
            ..template.clone()
        };
        let api = self.p.protocol.lab.mdm_api.clone();
        let mut wait = api.backoff.0;
        for attempt in 1..=api.attempts {
            let answer = match first_error.take() {
                Some(e) => Err(e),
                None => {
                    cmd.send(
                        self.lab.backend.as_ref(),
                        self.lab.ddm.as_deref(),
                        udid,
                        uuid,
                    )
                    .await
                }
            };
            let err = match answer {
                Ok(q) => {
                    self.ledger.append(&rec(LedgerKind::Enqueued))?;
                    self.log(Event::DoseEnqueued {
                        udid: udid.into(),
                        command_uuid: uuid.into(),
                        pushed: q.pushed,
                        push_error: q.push_error,
                    })?;
                    return Ok(());
                }
                Err(e) => e,
            };
            self.log(Event::Observation {
                udid: Some(udid.into()),
                source: ObservationSource::Harness,
                kind: "mdm_api_error".into(),
                key: format!(
                    "enqueue {} {uuid} (attempt {attempt} of {})",
                    cmd.request_type(),
                    api.attempts
                ),
                value: err.to_string(),
            })?;
            if matches!(err, crate::mdm::backend::BackendError::NotConnected { .. }) {
                // Never sent: retrying cannot make a second dose.
                if attempt < api.attempts {
                    self.check_interrupt()?;
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2);
                    continue;
                }
                self.ledger.append(&rec(LedgerKind::Failed))?;
                self.log(Event::DoseFailed {
                    udid: udid.into(),
                    command_uuid: uuid.into(),
                    error: format!("not sent in {} attempts: {err}", api.attempts),
                })?;
                return Ok(());
            }
            if is_refusal(&err) {
                self.ledger.append(&rec(LedgerKind::Failed))?;
                self.log(Event::DoseFailed {
                    udid: udid.into(),
                    command_uuid: uuid.into(),
                    error: err.to_string(),
                })?;
                return Ok(());
            }
            match self.ask_records(udid, uuid, cmd.is_declaration()).await? {
                Some(true) => {
                    self.ledger.append(&rec(LedgerKind::Enqueued))?;
                    self.log(Event::DoseEnqueued {
                        udid: udid.into(),
                        command_uuid: uuid.into(),
                        pushed: Some(false),
                        push_error: Some(format!(
                            "the enqueue call failed ({err}) but the MDM's records show the command queued; not re-sent"
                        )),
                    })?;
                    return Ok(());
                }
                None => {
                    self.log(Event::DoseUncertain {
                        udid: udid.into(),
                        command_uuid: uuid.into(),
                        reason: format!(
                            "{err}; the MDM's records cannot tell whether it was queued; not re-sent"
                        ),
                    })?;
                    return Ok(());
                }
                Some(false) if attempt < api.attempts => {
                    // "Not in the records" proves "not queued" only if the records are those
                    // of the store the intent was made against (the MDM may have restarted
                    // with an empty store meanwhile).
                    let now = self.current_store().await?;
                    if let Err(why) =
                        dose_guard::records_cover(made.store.as_ref(), &made.at, now.as_ref())
                    {
                        self.log(Event::DoseUncertain {
                            udid: udid.into(),
                            command_uuid: uuid.into(),
                            reason: format!(
                                "{err}; absent from the MDM's records, but {why}; not re-sent"
                            ),
                        })?;
                        return Ok(());
                    }
                    self.check_interrupt()?;
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2);
                }
                Some(false) => {
                    if matches!(err, crate::mdm::backend::BackendError::Timeout { .. }) {
                        // A request that timed out may still be on its way to the server.
                        self.log(Event::DoseUncertain {
                            udid: udid.into(),
                            command_uuid: uuid.into(),
                            reason: format!(
                                "not in the MDM's records after {} attempts, the last timed out ({err}); it may still arrive; not re-sent",
                                api.attempts
                            ),
                        })?;
                    } else {
                        self.ledger.append(&rec(LedgerKind::Failed))?;
                        self.log(Event::DoseFailed {
                            udid: udid.into(),
                            command_uuid: uuid.into(),
                            error: format!(
                                "not queued after {} attempts (the MDM's records confirm): {err}",
                                api.attempts
                            ),
                        })?;
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// What a dose sends: a ScheduleOSUpdate command, or a DDM declaration (its identifier is the
/// dose's id, its bytes exactly those journaled with the intent).
pub(super) enum Payload {
    Command(Command),
    Declaration { identifier: String, bytes: Vec<u8> },
}

impl Payload {
    pub(super) fn request_type(&self) -> &'static str {
        match self {
            Payload::Command(c) => c.request_type(),
            Payload::Declaration { .. } => crate::mdm::ddm::ENFORCEMENT_SPECIFIC,
        }
    }

    fn install_action(&self) -> Option<InstallAction> {
        match self {
            Payload::Command(Command::ScheduleOSUpdate { updates }) => {
                updates.first().map(|u| u.install_action)
            }
            _ => None,
        }
    }

    pub(super) fn is_declaration(&self) -> bool {
        matches!(self, Payload::Declaration { .. })
    }

    fn noun(&self) -> &'static str {
        if self.is_declaration() {
            "declaration"
        } else {
            "command"
        }
    }

    /// A declaration's identifier (its dose's id); `None` for a command, whose id is given.
    fn identifier(&self) -> Option<&str> {
        match self {
            Payload::Command(_) => None,
            Payload::Declaration { identifier, .. } => Some(identifier),
        }
    }

    /// The exact bytes the intent journals.
    fn bytes(&self, uuid: &str) -> Vec<u8> {
        match self {
            Payload::Command(c) => c.to_plist(uuid),
            Payload::Declaration { bytes, .. } => bytes.clone(),
        }
    }

    /// Send it: a command to the MDM's queue, a declaration to the DDM server (no DDM server:
    /// refused, never sent).
    pub(super) async fn send(
        &self,
        backend: &dyn MdmBackend,
        ddm: Option<&dyn crate::mdm::ddm_doses::DdmDoses>,
        udid: &str,
        uuid: &str,
    ) -> Result<crate::mdm::backend::Enqueued, crate::mdm::backend::BackendError> {
        match self {
            Payload::Command(c) => backend.enqueue(udid, c, uuid).await,
            Payload::Declaration { identifier, bytes } => match ddm {
                Some(d) => d.give(udid, bytes, identifier).await,
                None => Err(crate::mdm::backend::BackendError::Refused {
                    url: String::new(),
                    status: 501,
                    message: "the lab's MDM has no DDM server: lab.mdm.ddm".into(),
                }),
            },
        }
    }
}

/// A dose whose intent is decided, waiting to be made durable and sent.
struct Prepared {
    udid: String,
    version: String,
    payload: Payload,
    violations: Vec<String>,
    rec: LedgerRecord,
    made: IntentMade,
}
