//! Follow-up after a dose: status polling, USB re-probes, the second step once downloaded,
//! and the end of follow-up.

use super::*;
use crate::journal::fold::baseline_facts;
use crate::mdm::backend::{BackendError, CommandResult};
use crate::mdm::ddm_backend::RawStatusReport;
impl Runner<'_> {
    pub(super) async fn follow_up(&mut self) -> Result<(), RunError> {
        let fu = self.p.protocol.follow_up.clone();
        let poll = self
            .real(fu.poll_interval.0)
            .max(Duration::from_millis(100));
        let max = self.real(fu.max_duration.0);
        loop {
            let mut active = Vec::new();
            let mut ended = Vec::new();
            for u in &self.state.order {
                match next_action(&self.state.devices[u], Moment::Round) {
                    Action::Poll => active.push(u.clone()),
                    Action::End(reason) => ended.push(Event::FollowUpEnded {
                        udid: u.clone(),
                        reason,
                    }),
                    _ => {}
                }
            }
            self.log_all(ended)?;
            if active.is_empty() {
                self.lab.sessions.close_all().await;
                return Ok(());
            }
            let mut round = RoundClock::start();
            let (attached, _) = probe::list_all(&self.lab.addrs, Duration::from_secs(5)).await;
            // Kept lockdown sessions of devices detached, re-plugged, restarted or no longer
            // followed are closed before anything is asked over them.
            let followed: HashSet<&str> = active.iter().map(String::as_str).collect();
            self.lab
                .sessions
                .retain(&attached, |u| followed.contains(u));
            self.collect_rejected().await?;
            round.phases.list = round.wall.elapsed();
            round.phases = self.poll_devices(&active, &attached, max).await?;
            round.phases.list = round.wall.elapsed().saturating_sub(round.phases.total());
            round.log(active.len());
            self.check_mdm_access()?;
            self.check_interrupt()?;
            let flag = self.interrupted.clone();
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = flag.notified() => {}
            }
            self.check_interrupt()?;
        }
    }

    /// The deliveries of the device's ScheduleOSUpdate doses the backend has seen since the
    /// last ones journaled (`mdm::deliveries`: the MDM's own record, or Idle polls while the
    /// dose was unanswered), one `command_delivered` observation each, raw; the
    /// `command_redelivered` detector folds them (issue 14: NanoMDM re-delivered an unanswered
    /// ScheduleOSUpdate 13–14 times, and that made the device install).
    fn delivery_events(&self, udid: &str) -> Vec<Event> {
        let d = &self.state.devices[udid];
        let doses: Vec<&str> = d
            .doses
            .values()
            .filter(|x| !x.declaration && x.enqueued == Some(true))
            .map(|x| x.command_uuid.as_str())
            .collect();
        if doses.is_empty() {
            return Vec::new();
        }
        let Some(all) = self.lab.backend.deliveries_of(udid, &doses) else {
            return Vec::new();
        };
        let journaled = self
            .state
            .record
            .device(udid)
            .map(|i| {
                crate::verdicts::anomalies::deliveries_journaled(&self.state.record.devices()[i])
            })
            .unwrap_or_default();
        let mut events = Vec::new();
        for uuid in doses {
            let seen = all.iter().filter(|x| x.command_uuid == uuid);
            let already = journaled.get(uuid).copied().unwrap_or(0);
            for x in seen.skip(already) {
                events.push(Event::Observation {
                    udid: Some(udid.into()),
                    source: match x.seen {
                        crate::mdm::backend::DeliverySeen::History => ObservationSource::Mdm,
                        crate::mdm::backend::DeliverySeen::IdlePoll => ObservationSource::Harness,
                    },
                    kind: crate::verdicts::anomalies::COMMAND_DELIVERED.into(),
                    key: uuid.into(),
                    value: format!("{}: {}", x.at, x.seen.as_str()),
                });
            }
        }
        events
    }

    /// Journal a DDM-dosed device's new status reports (the final sweep's; polls fetch them
    /// with the rest of the round).
    pub(super) async fn collect_ddm_reports(&mut self, udid: &str) -> Result<(), RunError> {
        let d = &self.state.devices[udid];
        let Some(ddm) = self.lab.ddm.clone() else {
            return Ok(());
        };
        if !d.doses.values().any(|x| x.declaration) {
            return Ok(());
        }
        let after = d.ddm_report_after.clone();
        let reports = ddm.status_reports(udid, after.as_deref()).await;
        let events = ddm_report_events(udid, Some(reports));
        self.log_all(events)?;
        Ok(())
    }

    /// A device clock that moved differently from the host's since the last reading is an
    /// observation (`device_clock_jump`): the install window and deferrals run on it.
    pub(super) fn clock_reading(
        &mut self,
        udid: &str,
        at: Instant,
        device_time: f64,
    ) -> Option<Event> {
        let (prev_at, prev_time) = self
            .clock_readings
            .insert(udid.to_string(), (at, device_time))?;
        let real = at.saturating_duration_since(prev_at).as_secs_f64();
        let jump =
            crate::evidence::clock::clock_jump(real, device_time - prev_time, self.lab.time_scale)?;
        let when = |t: f64| {
            chrono::DateTime::from_timestamp_millis((t * 1000.0) as i64)
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_else(|| format!("{t}"))
        };
        Some(Event::Observation {
            udid: Some(udid.into()),
            source: ObservationSource::Device,
            kind: "device_clock_jump".into(),
            key: "TimeIntervalSince1970".into(),
            value: format!(
                "the device clock moved {} more than the host's between two probes ({} → {})",
                crate::evidence::clock::describe(jump),
                when(prev_time),
                when(device_time)
            ),
        })
    }

    /// Journal the reports the MDM rejected since the last look (malformed, unknown
    /// CommandUUID): one call for the whole lab. Garbage from a device is evidence: kept raw.
    pub(super) async fn collect_rejected(&mut self) -> Result<(), RunError> {
        let events = match self.lab.backend.rejected(self.state.rejected_max).await {
            Ok(rejected) => {
                let after = self.state.rejected_max;
                let fresh: Vec<_> = rejected.into_iter().filter(|r| r.id > after).collect();
                fresh
                    .into_iter()
                    .map(|r| Event::Observation {
                        udid: r.udid,
                        source: ObservationSource::Mdm,
                        kind: REJECTED_REPORT.into(),
                        key: rejected_report_key(r.id, &r.note),
                        value: base64::engine::general_purpose::STANDARD.encode(&r.raw),
                    })
                    .collect()
            }
            Err(e) => vec![Event::Observation {
                udid: None,
                source: ObservationSource::Harness,
                kind: "mdm_api_error".into(),
                key: "rejected reports".into(),
                value: e.to_string(),
            }],
        };
        self.log_all(events)?;
        Ok(())
    }

    /// After the follow-up: wait for webhooks still in flight, then journal every answer not yet
    /// journaled (a report that came as the last device finished is evidence too).
    pub(super) async fn final_sweep(&mut self) -> Result<(), RunError> {
        let dosed: Vec<String> = self
            .state
            .order
            .iter()
            .filter(|u| !self.state.devices[*u].doses.is_empty())
            .cloned()
            .collect();
        if dosed.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(self.lab.backend.settle_time()).await;
        // Every dosed device's answers in one call where the MDM allows, journaled with one
        // fsync (the same events as a poll's, without the re-probes).
        let results = self.lab.backend.results_many(&dosed).await;
        let fetched = results.into_iter().map(|r| (r, None, None)).collect();
        self.record_poll(&dosed, fetched)?;
        for u in dosed {
            self.collect_ddm_reports(&u).await?;
        }
        self.collect_rejected().await?;
        self.check_mdm_access()?;
        self.count_lost_answers()
    }

    /// On an MDM that neither retries a webhook nor keeps a history `lab` can read (issue 17),
    /// every enqueued dose still without a final answer is journaled as such
    /// (`verdicts::outcome::ANSWER_LOST`): its answer may have come while `lab` was not
    /// listening, and the outcome says lost to follow-up, never "no response".
    fn count_lost_answers(&mut self) -> Result<(), RunError> {
        let keeps_history = self.lab.backend.keeps_history();
        if keeps_history == Some(true) {
            return Ok(());
        }
        let kind = self.lab.backend.kind();
        let mut events = Vec::new();
        for udid in &self.state.order {
            for (step, uuid) in answers_lost(&self.state.devices[udid]) {
                events.push(Event::Observation {
                    udid: Some(udid.clone()),
                    source: ObservationSource::Harness,
                    kind: crate::verdicts::outcome::ANSWER_LOST.into(),
                    key: uuid,
                    value: format!(
                        "no final answer to dose step {step} reached lab by the end of follow-up; the MDM ({kind}) neither retries a webhook nor keeps a history lab can read, so an answer sent while lab was not listening is lost: lost to follow-up"
                    ),
                });
            }
        }
        if !events.is_empty() {
            self.progress.release();
            eprintln!(
                "lab run: {} dose(s) whose answer never came; the MDM ({kind}) keeps no history lab can read and does not retry its webhooks: reported as lost to follow-up",
                events.len()
            );
        }
        self.log_all(events)?;
        Ok(())
    }

    /// One poll of the round's devices: their MDM answers (one call for them all where the MDM
    /// allows, `MdmBackend::fresh_results_many`), DDM status reports and USB re-probes
    /// ([`CONCURRENCY`] devices at once) are fetched concurrently and journaled with one fsync,
    /// and only then acted on (second step, end of follow-up, the next status query). A failed
    /// MDM call is an observation; the next poll asks again. Returns how long each part took.
    pub(super) async fn poll_devices(
        &mut self,
        udids: &[String],
        attached: &[probe::AttachedDevice],
        max: Duration,
    ) -> Result<RoundPhases, RunError> {
        let reprobe = self.p.protocol.follow_up.reprobe;
        let mut phases = RoundPhases::default();
        let t = Instant::now();
        let (results, mdm, devices) = {
            let backend = self.lab.backend.as_ref();
            let ddm = self.lab.ddm.as_deref();
            let devices = &self.state.devices;
            let sessions = self.lab.sessions.as_ref();
            let each = async {
                let mut out = Vec::with_capacity(udids.len());
                for batch in udids.chunks(CONCURRENCY) {
                    out.extend(
                        crate::join::join_all(
                            batch
                                .iter()
                                .map(|udid| async move {
                                    let d = &devices[udid];
                                    let reports = match ddm {
                                        Some(ddm) if d.doses.values().any(|x| x.declaration) => {
                                            Some(
                                                ddm.status_reports(
                                                    udid,
                                                    d.ddm_report_after.as_deref(),
                                                )
                                                .await,
                                            )
                                        }
                                        _ => None,
                                    };
                                    let usb = if reprobe {
                                        Some(reprobe_device(udid, attached, sessions).await)
                                    } else {
                                        None
                                    };
                                    (usb, reports)
                                })
                                .collect(),
                        )
                        .await,
                    );
                }
                out
            };
            let mdm = async {
                let t = Instant::now();
                // What is new since the last round: every result given is journaled below
                // (the fold still tells a result it has from one it has not).
                let r = backend.fresh_results_many(udids).await;
                (r, t.elapsed())
            };
            let ((results, mdm), devices) = tokio::join!(mdm, each);
            (results, mdm, devices)
        };
        phases.fetch = t.elapsed();
        phases.mdm = mdm;
        phases.kept = devices
            .iter()
            .filter(|(usb, _)| usb.as_ref().is_some_and(|u| u.kept))
            .count();
        let fetched: Vec<Fetched> = results
            .into_iter()
            .zip(devices)
            .map(|(r, (usb, reports))| (r, usb, reports))
            .collect();
        let t = Instant::now();
        let now_builds = self.record_poll(udids, fetched)?;
        phases.record = t.elapsed();
        let t = Instant::now();
        phases.doses = self.second_steps(udids).await?;
        let ask = self.end_or_ask(udids, now_builds, max)?;
        self.ask_status(ask).await?;
        phases.act = t.elapsed();
        Ok(phases)
    }

    /// New MDM answers (1) and the re-probes over USB (2), recorded with one fsync before
    /// anything acts on them. Returns the build each device runs now, as its re-probe read it.
    fn record_poll(
        &mut self,
        udids: &[String],
        fetched: Vec<Fetched>,
    ) -> Result<Vec<Option<String>>, RunError> {
        let mut events = Vec::new();
        let mut now_builds = Vec::new();
        for (udid, (results, usb, reports)) in udids.iter().zip(fetched) {
            let results = results.unwrap_or_else(|e| {
                events.push(api_error(udid, "results", &e));
                Vec::new()
            });
            events.extend(ddm_report_events(udid, reports));
            // An answer is new unless the fold has it, or this fetch listed it already; the fold
            // takes the new ones in (outstanding query, update status) when they are logged.
            let mut seen = HashSet::new();
            for r in results {
                let key = result_key(&r.command_uuid, &r.status, &r.received_at);
                if self.state.devices[udid].results.contains(&key) || !seen.insert(key) {
                    continue;
                }
                let raw_b64 = base64::engine::general_purpose::STANDARD.encode(&r.raw);
                events.push(Event::MdmResult {
                    udid: udid.clone(),
                    command_uuid: r.command_uuid,
                    request_type: r.request_type,
                    status: r.status,
                    raw_b64,
                    received_at: r.received_at,
                });
            }
            events.extend(self.delivery_events(udid));
            let now_build = usb.and_then(|u| {
                let build = u.build.clone();
                events.extend(self.reprobe_events(udid, u));
                build
            });
            now_builds.push(now_build);
        }
        for n in self.lab.backend.take_notes() {
            events.push(Event::Observation {
                udid: Some(n.udid),
                source: ObservationSource::Harness,
                kind: n.kind.into(),
                key: n.key,
                value: n.value,
            });
        }
        self.log_all(events)?;
        Ok(now_builds)
    }

    /// The events of one re-probe: the device clock it read, and the re-probe itself with the
    /// network state (issue 14) when it differs from the last one journaled.
    fn reprobe_events(&mut self, udid: &str, u: Reprobe) -> Vec<Event> {
        let mut events = Vec::new();
        if let Some((at, t)) = u.clock
            && let Some(ev) = self.clock_reading(udid, at, t)
        {
            events.push(ev);
        }
        // Detached: no network state (nothing was read).
        let network = u.network.map(|n| self.reprobe_network(udid, n));
        let d = &self.state.devices[udid];
        let snapshot = crate::journal::fold::Reprobe {
            attached: u.attached,
            product_version: u.version.clone(),
            build_version: u.build.clone(),
            network: network.as_ref().and_then(|n| n.value),
        };
        if d.last_reprobe.as_ref() != Some(&snapshot) {
            events.push(Event::DeviceReprobed {
                udid: udid.to_string(),
                attached: u.attached,
                product_version: u.version,
                build_version: u.build,
                error: u.error,
                network: snapshot.network,
                network_source: network.map(|n| n.source),
            });
        }
        events
    }

    /// The network state at a re-probe (`baseline_facts::reprobe_network`), judged again only
    /// when its inputs changed since the device's last re-probe.
    fn reprobe_network(
        &mut self,
        udid: &str,
        lockdown: crate::probe::baseline::Network,
    ) -> baseline_facts::Known<baseline_facts::Network> {
        let last = self.state.devices[udid].last_device_information.as_ref();
        let at = last.map(|l| l.at.clone());
        if let Some((n, a, known)) = self.network_at_reprobe.get(udid)
            && *n == lockdown
            && *a == at
        {
            return known.clone();
        }
        // Only the two network fields the state reads (SIMStatus, TelephonyCapability) go
        // into the JSON it is judged from.
        let probe = serde_json::json!({ "baseline": { "network": {
            "sim_status": lockdown.sim_status,
            "telephony_capability": lockdown.telephony_capability,
        } } });
        let known = baseline_facts::reprobe_network(&probe, last);
        self.network_at_reprobe
            .insert(udid.to_string(), (lockdown, at, known.clone()));
        known
    }

    /// The protocol's follow-up step (3), once downloaded (and the after-download questions).
    /// Returns how many devices were due a dose.
    async fn second_steps(&mut self, udids: &[String]) -> Result<usize, RunError> {
        let mut second = Vec::new();
        for udid in udids {
            if self.state.devices[udid].downloaded && !self.asked_after_download.contains(udid) {
                self.asked_after_download.insert(udid.to_string());
                self.checkpoint(
                    crate::trial::protocol::CheckpointMoment::AfterDownload,
                    Some(udid),
                )?;
            }
            let arms = &self.p.protocol.arms;
            if let Action::Dose { step, action } =
                next_action(&self.state.devices[udid], Moment::SecondDose { arms })
            {
                second.push((udid.clone(), step, action));
            }
        }
        let due = second.len();
        // `dose_many` takes a batch of at most CONCURRENCY (its intents fsynced together).
        while !second.is_empty() {
            let rest = second.split_off(second.len().min(CONCURRENCY));
            self.dose_many(second).await?;
            second = rest;
        }
        Ok(due)
    }

    /// The end of follow-up (4: its `until`, or the time limit), journaled. Returns the devices
    /// to ask their update status.
    fn end_or_ask(
        &mut self,
        udids: &[String],
        now_builds: Vec<Option<String>>,
        max: Duration,
    ) -> Result<Vec<String>, RunError> {
        let mut ended = Vec::new();
        let mut ask = Vec::new();
        for (udid, now_build) in udids.iter().zip(now_builds) {
            let moment = Moment::EndOfPoll {
                until: &self.p.protocol.follow_up.until,
                now_build: now_build.as_deref(),
                now: chrono::Utc::now(),
                max,
            };
            match next_action(&self.state.devices[udid], moment) {
                Action::End(reason) => ended.push(Event::FollowUpEnded {
                    udid: udid.clone(),
                    reason,
                }),
                Action::AskStatus => ask.push(udid.clone()),
                _ => {}
            }
        }
        self.log_all(ended)?;
        Ok(ask)
    }

    /// Ask for the update status (5) (one outstanding at a time: the MDM queue is in order).
    /// Where the MDM queues for many devices in one call (`lab`'s own server), the round's
    /// queries go [`STATUS_IDS`] devices a call under one CommandUUID: a status query is no
    /// dose, and each device's `CommandSent` and answers are its own in the journal (the fold
    /// tracks a device's outstanding query per device). Elsewhere one call per device, each
    /// with its own CommandUUID. A failed call is an observation for each of its devices.
    async fn ask_status(&mut self, ask: Vec<String>) -> Result<(), RunError> {
        let new_uuid = || format!("lab-status-{}", crate::tls::random_secret());
        let backend = self.lab.backend.as_ref();
        let calls: Vec<(&[String], String)> = if backend.enqueues_in_bulk() {
            ask.chunks(STATUS_IDS).map(|c| (c, new_uuid())).collect()
        } else {
            ask.chunks(1).map(|c| (c, new_uuid())).collect()
        };
        let mut sent = Vec::with_capacity(calls.len());
        for batch in calls.chunks(CONCURRENCY) {
            sent.extend(
                crate::join::join_all(
                    batch
                        .iter()
                        .map(|(udids, uuid)| {
                            backend.enqueue_many(udids, &Command::OSUpdateStatus, uuid)
                        })
                        .collect(),
                )
                .await,
            );
        }
        let mut events = Vec::new();
        for ((udids, uuid), answers) in calls.iter().zip(sent) {
            for (udid, answer) in udids.iter().zip(answers) {
                match answer {
                    Ok(_) => events.push(Event::CommandSent {
                        udid: udid.clone(),
                        command_uuid: uuid.clone(),
                        request_type: "OSUpdateStatus".into(),
                    }),
                    // A status query is harmless: the next poll sends a fresh one.
                    Err(e) => events.push(api_error(
                        udid,
                        &format!("enqueue OSUpdateStatus {uuid}"),
                        &e,
                    )),
                }
            }
        }
        self.log_all(events)?;
        Ok(())
    }
}

/// How many devices one bulk status query names (`PUT /v1/enqueue/id1,id2,…`: ~26 bytes of URL
/// a device).
const STATUS_IDS: usize = 128;

/// The enqueued ScheduleOSUpdate doses of a device (step, CommandUUID) with no final answer
/// (Acknowledged, Error, CommandFormatError) journaled. A DDM dose is answered by status
/// reports the DDM server keeps, so it is never one.
fn answers_lost(d: &DeviceFacts) -> Vec<(u32, String)> {
    d.doses
        .iter()
        .filter(|(_, x)| x.enqueued == Some(true) && !x.declaration)
        .filter(|(_, x)| {
            !d.results.iter().any(|k| {
                k.split('|').next() == Some(x.command_uuid.as_str())
                    && k.split('|')
                        .nth(1)
                        .is_some_and(crate::journal::fold::is_final_status)
            })
        })
        .map(|(step, x)| (*step, x.command_uuid.clone()))
        .collect()
}

/// A follow-up re-probe over USB.
struct Reprobe {
    attached: bool,
    version: Option<String>,
    build: Option<String>,
    /// Why the probe failed.
    error: Option<String>,
    /// The device clock (lockdown `TimeIntervalSince1970`) and the host instant it was read at
    /// (the middle of the probe).
    clock: Option<(Instant, f64)>,
    /// The re-probe's lockdown network fields when the device was attached: with the last
    /// DeviceInformation answer they give the network state.
    network: Option<crate::probe::baseline::Network>,
    /// A kept lockdown session answered (not journaled: the facts are the same either way).
    kept: bool,
}

/// Re-probe a device over USB during follow-up: over its kept lockdown session when it has one
/// still valid (`probe::session`), else over a new one. A device missing from the round's
/// usbmuxd listing is journaled detached, without a read.
async fn reprobe_device(
    udid: &str,
    attached: &[probe::AttachedDevice],
    sessions: &probe::SessionCache,
) -> Reprobe {
    let Some(a) = attached.iter().find(|a| a.entry.serial_number == udid) else {
        return Reprobe {
            attached: false,
            version: None,
            build: None,
            error: None,
            clock: None,
            network: None,
            kept: false,
        };
    };
    let before = Instant::now();
    let (p, answered) = sessions.reprobe(a).await;
    let at = before + before.elapsed() / 2;
    Reprobe {
        attached: true,
        version: p.baseline.product_version.value.clone(),
        build: p.baseline.build_version.value.clone(),
        error: p.failure.map(|f| f.message),
        clock: p.device_time.map(|t| (at, t)),
        network: Some(p.baseline.network),
        kept: answered == probe::Answered::Kept,
    }
}

/// The harness's time for one follow-up round (listing, MDM answers, re-probes, journaling,
/// second steps and status queries; not the wait before the next round): wall clock and this
/// process's CPU time. Logged at info level (`lab -v run`, or
/// `RUST_LOG=lab::follow_up_round=info`), which `scripts/bench-trial` reads; nothing is
/// journaled, so a run's journal is the same with or without it.
struct RoundClock {
    wall: Instant,
    cpu: Option<Duration>,
    phases: RoundPhases,
}

/// Where a round's wall time went: the usbmuxd listing and rejected reports; the concurrent
/// fetch (MDM answers and re-probes), journaling it (one group commit for the round), and
/// acting on it (second steps, ends, status queries sent and journaled).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct RoundPhases {
    list: Duration,
    fetch: Duration,
    /// Of `fetch`: the MDM's answers (one call for the round on `lab`'s own server), fetched
    /// while the re-probes run.
    mdm: Duration,
    record: Duration,
    act: Duration,
    /// Re-probes a kept lockdown session answered.
    kept: usize,
    /// Devices due their follow-up dose this round (a round that doses does more than poll).
    doses: usize,
}

impl RoundPhases {
    /// The time of the poll's parts (not the listing).
    fn total(&self) -> Duration {
        self.fetch + self.record + self.act
    }
}

impl RoundClock {
    fn start() -> RoundClock {
        RoundClock {
            wall: Instant::now(),
            cpu: process_cpu_time(),
            phases: RoundPhases::default(),
        }
    }

    fn log(self, devices: usize) {
        let wall_ms = self.wall.elapsed().as_secs_f64() * 1000.0;
        let cpu_ms = match (self.cpu, process_cpu_time()) {
            (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64() * 1000.0,
            _ => f64::NAN,
        };
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
        let p = self.phases;
        tracing::info!(
            target: "lab::follow_up_round",
            devices,
            wall_ms = %format!("{wall_ms:.1}"),
            cpu_ms = %format!("{cpu_ms:.1}"),
            list_ms = %ms(p.list),
            fetch_ms = %ms(p.fetch),
            mdm_ms = %ms(p.mdm),
            record_ms = %ms(p.record),
            act_ms = %ms(p.act),
            kept_sessions = p.kept,
            doses = p.doses,
            "follow-up round"
        );
    }
}

/// CPU time of this process so far, every thread (`CLOCK_PROCESS_CPUTIME_ID`).
fn process_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct we own and reads nothing else.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return None;
    }
    Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// A failed MDM call of the follow-up, as an observation (the next poll asks again).
fn api_error(udid: &str, key: &str, e: &BackendError) -> Event {
    Event::Observation {
        udid: Some(udid.into()),
        source: ObservationSource::Harness,
        kind: "mdm_api_error".into(),
        key: key.into(),
        value: e.to_string(),
    }
}

/// What one poll fetched for a device: its MDM answers, and its re-probe when the protocol asks.
type Fetched = (
    Result<Vec<CommandResult>, BackendError>,
    Option<Reprobe>,
    Option<Result<Vec<RawStatusReport>, BackendError>>,
);

/// The DDM status reports of one poll as journal events, raw (a failed call is an
/// observation; the next poll asks again from the same report).
fn ddm_report_events(
    udid: &str,
    reports: Option<Result<Vec<RawStatusReport>, BackendError>>,
) -> Vec<Event> {
    match reports {
        None => Vec::new(),
        Some(Err(e)) => vec![api_error(udid, "DDM status reports", &e)],
        Some(Ok(list)) => list
            .into_iter()
            .map(|r| Event::DdmStatusReport {
                udid: udid.to_string(),
                report_id: r.id,
                received_at: r.received,
                raw_b64: base64::engine::general_purpose::STANDARD.encode(&r.bytes),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdicts::outcome::testkit::J;

    #[test]
    fn a_dose_without_a_final_answer_is_one_whose_answer_may_be_lost() {
        let mut j = J::new();
        j.device("U", true)
            .allocate("U", "a")
            .consent(&["U"])
            .dose("U", 1, "C1")
            .result("U", "C1", Some("ScheduleOSUpdate"), "NotNow", |_| {});
        let fold = Fold::of(&j.entries);
        assert_eq!(
            answers_lost(&fold.devices["U"]),
            vec![(1, "C1".to_string())]
        );
        j.schedule_answer("U", "C1", "Acknowledged")
            .dose("U", 2, "C2");
        let fold = Fold::of(&j.entries);
        assert_eq!(
            answers_lost(&fold.devices["U"]),
            vec![(2, "C2".to_string())]
        );
        j.schedule_answer("U", "C2", "Error");
        assert!(answers_lost(&Fold::of(&j.entries).devices["U"]).is_empty());
        // An intent never enqueued (failed, uncertain) has no answer to lose.
        let mut j = J::new();
        j.device("V", true)
            .allocate("V", "a")
            .consent(&["V"])
            .intent("V", 1, "C1", "Default");
        assert!(answers_lost(&Fold::of(&j.entries).devices["V"]).is_empty());
    }
}
