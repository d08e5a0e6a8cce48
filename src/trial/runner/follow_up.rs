//! Follow-up after a dose: status polling, USB re-probes, the second step once downloaded,
//! and the end of follow-up.

use super::*;
use crate::mdm::backend::{BackendError, CommandResult};
impl Runner<'_> {
    pub(super) async fn follow_up(&mut self) -> Result<(), RunError> {
        let fu = self.p.protocol.follow_up.clone();
        let poll = self
            .real(fu.poll_interval.0)
            .max(Duration::from_millis(100));
        let max = self.real(fu.max_duration.0);
        loop {
            let active: Vec<String> = self
                .state
                .order
                .iter()
                .filter(|u| {
                    let d = &self.state.devices[*u];
                    !d.ended && d.doses.values().any(|(_, a)| *a == Some(true))
                })
                .cloned()
                .collect();
            let unanswered_dosed: Vec<String> = self
                .state
                .order
                .iter()
                .filter(|u| {
                    let d = &self.state.devices[*u];
                    !d.ended
                        && !d.doses.is_empty()
                        && !d.doses.values().any(|(_, a)| *a == Some(true))
                })
                .cloned()
                .collect();
            let mut ended = Vec::new();
            for u in unanswered_dosed {
                ended.push(Event::FollowUpEnded {
                    udid: u.clone(),
                    reason: FollowUpEndReason::NoDoseReachedMdm,
                });
                self.state.devices.get_mut(&u).expect("known").ended = true;
            }
            self.log_all(ended)?;
            if active.is_empty() {
                return Ok(());
            }
            let (attached, _) = probe::list_all(&self.lab.addrs, Duration::from_secs(5)).await;
            self.collect_rejected().await?;
            for batch in active.chunks(CONCURRENCY) {
                self.poll_devices(batch, &attached, max).await?;
            }
            self.check_interrupt()?;
            let flag = self.interrupted.clone();
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = flag.notified() => {}
            }
            self.check_interrupt()?;
        }
    }

    /// Journal the MDM's new answers for a device, the backend's notes (lost or duplicated
    /// webhooks) and the reports the MDM rejected. A failed call is an observation.
    pub(super) async fn collect_results(&mut self, udid: &str) -> Result<(), RunError> {
        let results = match self.lab.backend.results(udid).await {
            Ok(r) => r,
            Err(e) => {
                self.log(Event::Observation {
                    udid: Some(udid.into()),
                    source: ObservationSource::Harness,
                    kind: "mdm_api_error".into(),
                    key: "results".into(),
                    value: e.to_string(),
                })?;
                Vec::new()
            }
        };
        for n in self.lab.backend.take_notes() {
            self.log(Event::Observation {
                udid: Some(n.udid),
                source: ObservationSource::Harness,
                kind: n.kind.into(),
                key: n.key,
                value: n.value,
            })?;
        }
        for r in results {
            let key = result_key(&r.command_uuid, &r.status, &r.received_at);
            if self.state.devices[udid].results.contains(&key) {
                continue;
            }
            let raw_b64 = base64::engine::general_purpose::STANDARD.encode(&r.raw);
            let ev = Event::MdmResult {
                udid: udid.into(),
                command_uuid: r.command_uuid.clone(),
                request_type: r.request_type.clone(),
                status: r.status.clone(),
                raw_b64: raw_b64.clone(),
                received_at: r.received_at.clone(),
            };
            self.log(ev)?;
            let d = self.state.devices.get_mut(udid).expect("known");
            d.results.insert(key);
            if d.outstanding.as_deref() == Some(r.command_uuid.as_str()) && r.status != "NotNow" {
                d.outstanding = None;
            }
            if r.request_type.as_deref() == Some("OSUpdateStatus") {
                apply_status(d, &raw_b64);
            }
        }
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
                if let Some(max) = fresh.iter().map(|r| r.id).max() {
                    self.state.rejected_max = max;
                }
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
        for u in dosed {
            self.collect_results(&u).await?;
        }
        self.collect_rejected().await?;
        Ok(())
    }
    /// rejected reports and USB re-probes are fetched concurrently and journaled with one fsync,
    /// and only then acted on (second step, end of follow-up, the next status query). A failed
    /// MDM call is an observation; the next poll asks again.
    pub(super) async fn poll_devices(
        &mut self,
        udids: &[String],
        attached: &[probe::AttachedDevice],
        max: Duration,
    ) -> Result<(), RunError> {
        let reprobe = self.p.protocol.follow_up.reprobe;
        let fetched = {
            let backend = self.lab.backend.as_ref();
            crate::join::join_all(
                udids
                    .iter()
                    .map(|udid| async move {
                        let results = backend.results(udid).await;
                        let usb = if reprobe {
                            Some(reprobe_device(udid, attached).await)
                        } else {
                            None
                        };
                        (results, usb)
                    })
                    .collect(),
            )
            .await
        };
        let now_builds = self.record_poll(udids, fetched)?;
        self.second_steps(udids).await?;
        let ask = self.end_or_ask(udids, now_builds, max)?;
        self.ask_status(ask).await
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
        for (udid, (results, usb)) in udids.iter().zip(fetched) {
            let results = results.unwrap_or_else(|e| {
                events.push(api_error(udid, "results", &e));
                Vec::new()
            });
            for r in results {
                let key = result_key(&r.command_uuid, &r.status, &r.received_at);
                if self.state.devices[udid].results.contains(&key) {
                    continue;
                }
                let raw_b64 = base64::engine::general_purpose::STANDARD.encode(&r.raw);
                let d = self.state.devices.get_mut(udid).expect("known");
                d.results.insert(key);
                if d.outstanding.as_deref() == Some(r.command_uuid.as_str()) && r.status != "NotNow"
                {
                    d.outstanding = None;
                }
                if r.request_type.as_deref() == Some("OSUpdateStatus") {
                    apply_status(d, &raw_b64);
                }
                events.push(Event::MdmResult {
                    udid: udid.clone(),
                    command_uuid: r.command_uuid,
                    request_type: r.request_type,
                    status: r.status,
                    raw_b64,
                    received_at: r.received_at,
                });
            }
            let mut now_build = None;
            if let Some(u) = usb {
                now_build = u.build.clone();
                if let Some((at, t)) = u.clock
                    && let Some(ev) = self.clock_reading(udid, at, t)
                {
                    events.push(ev);
                }
                let snapshot = (u.attached, u.version.clone(), u.build.clone());
                let d = self.state.devices.get_mut(udid).expect("known");
                if d.last_reprobe.as_ref() != Some(&snapshot) {
                    d.last_reprobe = Some(snapshot);
                    events.push(Event::DeviceReprobed {
                        udid: udid.clone(),
                        attached: u.attached,
                        product_version: u.version,
                        build_version: u.build,
                        error: u.error,
                    });
                }
            }
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

    /// The protocol's follow-up step (3), once downloaded (and the after-download questions).
    async fn second_steps(&mut self, udids: &[String]) -> Result<(), RunError> {
        let mut second = Vec::new();
        for udid in udids {
            if self.state.devices[udid].downloaded && !self.asked_after_download.contains(udid) {
                self.asked_after_download.insert(udid.to_string());
                self.checkpoint(
                    crate::trial::protocol::CheckpointMoment::AfterDownload,
                    Some(udid),
                )?;
            }
            let arm = self.state.devices[udid].arm.clone();
            let step2 = arm
                .as_ref()
                .and_then(|a| self.p.protocol.arms.iter().find(|x| &x.name == a))
                .and_then(|a| a.follow_up_step.clone());
            if let Some(s) = step2
                && s.when == StepTrigger::Downloaded
                && self.state.devices[udid].downloaded
                && !self.state.devices[udid].doses.contains_key(&2)
            {
                second.push((udid.clone(), 2, s.install_action));
            }
        }
        self.dose_many(second).await?;
        Ok(())
    }

    /// The end of follow-up (4: its `until`, or the time limit), journaled. Returns the devices
    /// to ask their update status, each with the CommandUUID to use.
    fn end_or_ask(
        &mut self,
        udids: &[String],
        now_builds: Vec<Option<String>>,
        max: Duration,
    ) -> Result<Vec<(String, String)>, RunError> {
        let mut ended = Vec::new();
        let mut ask = Vec::new();
        for (udid, now_build) in udids.iter().zip(now_builds) {
            let d = &self.state.devices[udid];
            let done = match &self.p.protocol.follow_up.until {
                UntilSpec::Updated => now_build
                    .as_ref()
                    .is_some_and(|b| crate::trial::outcome::target_builds(&d.target).contains(b)),
                UntilSpec::Downloaded => d.downloaded,
                UntilSpec::Status(s) => d.last_status.as_deref() == Some(s.as_str()),
            };
            let elapsed = d
                .first_dose_at
                .map(|t| (chrono::Utc::now() - t).to_std().unwrap_or_default())
                .unwrap_or_default();
            if done || elapsed > max {
                let reason = if done {
                    FollowUpEndReason::reached(&self.p.protocol.follow_up.until)
                } else {
                    FollowUpEndReason::TimeLimit
                };
                ended.push(Event::FollowUpEnded {
                    udid: udid.clone(),
                    reason,
                });
                self.state.devices.get_mut(udid).expect("known").ended = true;
            } else if d.outstanding.is_none() {
                ask.push((
                    udid.clone(),
                    format!("lab-status-{}", crate::tls::random_secret()),
                ));
            }
        }
        self.log_all(ended)?;
        Ok(ask)
    }

    /// Ask for the update status (5) (one outstanding at a time: the MDM queue is in order).
    async fn ask_status(&mut self, ask: Vec<(String, String)>) -> Result<(), RunError> {
        let sent = {
            let backend = self.lab.backend.as_ref();
            crate::join::join_all(
                ask.iter()
                    .map(|(udid, uuid)| async move {
                        backend.enqueue(udid, &Command::OSUpdateStatus, uuid).await
                    })
                    .collect(),
            )
            .await
        };
        let mut events = Vec::new();
        for ((udid, uuid), answer) in ask.into_iter().zip(sent) {
            match answer {
                Ok(_) => {
                    events.push(Event::CommandSent {
                        udid: udid.clone(),
                        command_uuid: uuid.clone(),
                        request_type: "OSUpdateStatus".into(),
                    });
                    self.state
                        .devices
                        .get_mut(&udid)
                        .expect("known")
                        .outstanding = Some(uuid);
                }
                // A status query is harmless: the next poll sends a fresh one.
                Err(e) => events.push(api_error(
                    &udid,
                    &format!("enqueue OSUpdateStatus {uuid}"),
                    &e,
                )),
            }
        }
        self.log_all(events)?;
        Ok(())
    }
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
}

/// Re-probe a device over USB during follow-up.
async fn reprobe_device(udid: &str, attached: &[probe::AttachedDevice]) -> Reprobe {
    let Some(a) = attached.iter().find(|a| a.entry.serial_number == udid) else {
        return Reprobe {
            attached: false,
            version: None,
            build: None,
            error: None,
            clock: None,
        };
    };
    let client = UsbmuxClient {
        addr: UsbmuxAddr::parse(&a.host).expect("listed host parses"),
        timeout: Duration::from_secs(5),
    };
    let before = Instant::now();
    let p: DeviceProbe = probe::probe_device(
        &client,
        &a.entry,
        &ProbeOptions {
            timeout: Duration::from_secs(5),
            ..ProbeOptions::default()
        },
        None,
    )
    .await;
    let at = before + before.elapsed() / 2;
    Reprobe {
        attached: true,
        version: p.baseline.product_version.value.clone(),
        build: p.baseline.build_version.value.clone(),
        error: p.failure.map(|f| f.message),
        clock: p.device_time.map(|t| (at, t)),
    }
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
type Fetched = (Result<Vec<CommandResult>, BackendError>, Option<Reprobe>);
