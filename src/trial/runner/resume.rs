//! Resuming a run: finding the unfinished run folder of a protocol, and settling the intents a
//! killed run left without an answer (under the lab-wide dose lock, from the MDM's records).

use super::dose::Payload;
use super::*;

/// A run folder of the same protocol that has not finished, if any.
fn find_unfinished(
    results: &Path,
    trial_id: &str,
    sha: &str,
    reports_written: fn(&Path) -> bool,
) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(results)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{trial_id}-")))
        })
        .collect();
    dirs.sort();
    dirs.into_iter().rev().find(|d| {
        let same = std::fs::read(d.join("protocol.yaml"))
            .map(|b| crate::trial::protocol::sha256_hex(&b) == sha)
            .unwrap_or(false);
        let finished = crate::journal::read(&d.join("journal.jsonl"))
            .map(|l| l.entries.iter().any(|e| e.event == Event::RunFinished))
            .unwrap_or(false);
        // A run killed while writing its reports has `run_finished` but not all its reports:
        // it is completed, not started again.
        same && (!finished || !reports_written(d))
    })
}

impl Runner<'_> {
    /// Intents without an answer (crash between intent and enqueue): ask the MDM's records,
    /// under the lab-wide dose lock. Queued → recorded as enqueued. Absent, from records that
    /// cover the intent (same store, made since the intent: [`dose_guard::records_cover`]) and
    /// no other run dosed the device meanwhile → the interrupted enqueue is completed (its
    /// ledger intent made sure of first), after the lock is released. Anything else → *dose
    /// uncertain*, never re-sent.
    pub(super) async fn resolve_unanswered_intents(&mut self) -> Result<(), RunError> {
        let pending: Vec<(String, String, bool)> = self
            .state
            .devices
            .iter()
            .flat_map(|(u, d)| {
                d.doses
                    .values()
                    .filter(|x| x.enqueued.is_none() && !d.uncertain.contains(&x.command_uuid))
                    .map(|x| (u.clone(), x.command_uuid.clone(), x.declaration))
                    .collect::<Vec<_>>()
            })
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let dose_lock = self.ledger.dose_lock().await?;
        let store = self.current_store().await?;
        let mut to_send = Vec::new();
        for (udid, uuid, declaration) in pending {
            // `lab`'s own server (also behind an in-process simulated lab) lists every command
            // it ever queued and refuses a second command with a CommandUUID it knows; the
            // webhook-fed NanoMDM and MicroMDM only know the answers that came back.
            match self.ask_records(&udid, &uuid, declaration).await? {
                Some(true) => {
                    self.log(Event::DoseEnqueued {
                        udid,
                        command_uuid: uuid,
                        pushed: Some(false),
                        push_error: Some(
                            "recovered after a crash: the MDM's records show the command queued"
                                .into(),
                        ),
                    })?;
                }
                Some(false) => {
                    let made = IntentMade::of(&self.state.devices[&udid], &uuid);
                    if let Err(why) =
                        dose_guard::records_cover(made.store.as_ref(), &made.at, store.as_ref())
                    {
                        self.log(Event::DoseUncertain {
                            udid,
                            command_uuid: uuid,
                            reason: format!(
                                "intent recorded, enqueue result unknown (the harness stopped in between); absent from the MDM's records, but {why}; not re-sent"
                            ),
                        })?;
                        continue;
                    }
                    if let Some(x) = self.prepare_interrupted_enqueue(&udid, &uuid).await? {
                        to_send.push((udid, uuid, x, made));
                    }
                }
                None => {
                    self.log(Event::DoseUncertain {
                        udid,
                        command_uuid: uuid,
                        reason: "intent recorded, enqueue result unknown (the harness stopped in between); not re-sent".into(),
                    })?;
                }
            }
        }
        drop(dose_lock);
        for (udid, uuid, (payload, rec), made) in to_send {
            // The same bounded retries as any dose: a refusal because a late request of the
            // dead harness got there first (the server's 409) is settled by the MDM's records.
            self.send_dose(&udid, &payload, &uuid, rec, &made, None)
                .await?;
        }
        Ok(())
    }

    /// A crash between an intent and its enqueue, and the MDM's authoritative records (covering
    /// the intent) do not have the command: it never reached the server, so sending it now is
    /// its first and only delivery, not a second dose. Sent with the intent's own CommandUUID
    /// and exact bytes (the server refuses a CommandUUID it already has, so even a request of
    /// the dead harness arriving late cannot make it two); if the bytes cannot be reproduced,
    /// or another run dosed the device meanwhile, it is not sent. Called under the dose lock;
    /// returns what to send once it is released.
    /// (Found by the crash campaign, `tests/crash_campaign.rs`: before, such a device was left
    /// undosed as *dose uncertain* and its outcome differed from an uninterrupted run's.)
    pub(super) async fn prepare_interrupted_enqueue(
        &mut self,
        udid: &str,
        uuid: &str,
    ) -> Result<Option<(Payload, LedgerRecord)>, RunError> {
        // The fold holds every intent of the journal with its bytes.
        let intent = self
            .state
            .devices
            .get(udid)
            .and_then(|d| d.intents.get(uuid))
            .cloned();
        let uncertain = |reason: String| Event::DoseUncertain {
            udid: udid.into(),
            command_uuid: uuid.into(),
            reason,
        };
        let Some(crate::journal::fold::IntentFacts {
            step,
            install_action: action,
            starting_build: build,
            command_b64,
            kind,
            ..
        }) = intent
        else {
            self.log(uncertain(
                "intent not found in the journal; not re-sent".into(),
            ))?;
            return Ok(None);
        };
        if kind.is_declaration() {
            // A declaration is re-sent from the intent's own bytes, never rebuilt (its deadline
            // would move): the same identifier and content cannot make a second enforcement.
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&command_b64) else {
                self.log(uncertain(
                    "intent recorded, but its declaration bytes do not decode; not re-sent".into(),
                ))?;
                return Ok(None);
            };
            let payload = Payload::Declaration {
                identifier: uuid.to_string(),
                bytes,
            };
            return self
                .guard_interrupted(udid, uuid, step, &build, payload)
                .await;
        }
        let cmd = action.map(|a| self.command_for(udid, a));
        let same_bytes = cmd.as_ref().is_some_and(|c| {
            base64::engine::general_purpose::STANDARD.encode(c.to_plist(uuid)) == command_b64
        });
        let (Some(cmd), true) = (cmd, same_bytes) else {
            self.log(uncertain(
                "intent recorded, enqueue result unknown, and the command cannot be reproduced byte for byte; not re-sent".into(),
            ))?;
            return Ok(None);
        };
        let version = self.state.devices[udid]
            .probe
            .as_ref()
            .and_then(|p| p.product_version.clone())
            .unwrap_or_default();
        let violations = crate::mdm::schema::validate_command(&cmd.to_dict(), &version);
        if !violations.is_empty() {
            // `dose` would have refused it too (the crash came before its DoseFailed).
            let msg = violations
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            self.log(Event::DoseFailed {
                udid: udid.into(),
                command_uuid: uuid.into(),
                error: format!(
                    "not sent: the command fails Apple's schema for iOS {version}: {msg}"
                ),
            })?;
            return Ok(None);
        }
        self.guard_interrupted(udid, uuid, step, &build, Payload::Command(cmd))
            .await
    }

    /// The check before the dose, again, for an interrupted enqueue about to be completed: the
    /// ledger, the journal and the MDM's records under the lab-wide lock the caller holds.
    async fn guard_interrupted(
        &mut self,
        udid: &str,
        uuid: &str,
        step: u32,
        build: &str,
        payload: Payload,
    ) -> Result<Option<(Payload, LedgerRecord)>, RunError> {
        let build = build.to_string();
        let run_dir = self.run_dir.display().to_string();
        let intent = LedgerRecord {
            udid: udid.to_string(),
            starting_build: build.clone(),
            kind: LedgerKind::Intent,
            command_uuid: uuid.to_string(),
            step,
            trial_id: self.p.protocol.id.clone(),
            protocol_sha256: self.p.sha256.clone(),
            run_dir: run_dir.clone(),
            at: chrono::Utc::now().to_rfc3339(),
        };
        let ledger = self.ledger.records()?;
        // Another run may have dosed the device since (its decision saw no ledger intent of
        // ours if the kill came before it was appended).
        let mdm = self
            .mdm_dose_records(std::slice::from_ref(&intent.udid))
            .await?
            .pop()
            .flatten();
        let mut journal_uuids = journal_uuids(&self.state.devices[udid]);
        journal_uuids.insert(uuid.to_string());
        if let Decision::AlreadyDosed(ev) = dose_guard::decide(&dose_guard::Facts {
            udid,
            build: &build,
            run_dir: &run_dir,
            journal_uuids: &journal_uuids,
            ledger: &ledger,
            mdm: mdm.as_deref(),
        }) {
            self.ledger.append(&LedgerRecord {
                kind: LedgerKind::Failed,
                ..intent.clone()
            })?;
            self.log(Event::DoseFailed {
                udid: udid.into(),
                command_uuid: uuid.into(),
                error: format!(
                    "not sent (it never reached the MDM): another run dosed this device at build {build} meanwhile: {}",
                    ev.iter()
                        .map(dose_guard::Evidence::describe)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            })?;
            return Ok(None);
        }
        // The kill may have come between the journal's intent and the ledger's: the ledger
        // holds the intent durably before the command goes out, as in `dose_many`.
        if !ledger
            .iter()
            .any(|r| r.command_uuid == uuid && r.kind == LedgerKind::Intent)
        {
            self.ledger.append(&intent)?;
        }
        Ok(Some((payload, intent)))
    }
}

/// The run folder to use, chosen under a lock of this protocol in this results folder: the
/// newest unfinished run of the same protocol (resumed), else a new folder with the protocol
/// frozen in it. Returns it, whether it is resumed, and its run lock (with the holder a lock
/// left behind by a process that is gone). Two processes started at the same instant cannot
/// both create a folder: the second finds the first's folder locked and stops.
pub(super) async fn open_run_folder(
    p: &LoadedProtocol,
    opts: &RunOptions,
) -> Result<(PathBuf, bool, (RunLock, Option<Holder>)), RunError> {
    let results_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunError::Results {
            path: path.clone(),
            source,
        }
    };
    std::fs::create_dir_all(&opts.results_dir).map_err(results_err(&opts.results_dir))?;
    let choosing = ShortLock::acquire(&opts.results_dir.join(format!(
        ".{}-{}.lock",
        p.protocol.id,
        &p.sha256[..16]
    )))
    .await?;
    let me = Holder::me("lab run");
    let chosen = match find_unfinished(
        &opts.results_dir,
        &p.protocol.id,
        &p.sha256,
        opts.reports_written,
    ) {
        Some(d) => {
            let lock = RunLock::acquire(&d, &me)?;
            (d, true, lock)
        }
        None => {
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
            let d = opts.results_dir.join(format!("{}-{stamp}", p.protocol.id));
            create_private_dir(&d).map_err(results_err(&d))?;
            let lock = RunLock::acquire(&d, &me)?;
            let frozen = d.join("protocol.yaml");
            write_private(&frozen, &p.bytes).map_err(results_err(&frozen))?;
            (d, false, lock)
        }
    };
    drop(choosing);
    // The run lock is held until the caller has written the reports (the OS releases it if the
    // process dies).
    Ok(chosen)
}
