//! The update machinery's clock-driven half: downloads, the simulated user, installs and
//! restarts advance with `tick`, and the conditions (power, disk, network) that hold them.

use super::*;

impl OsUpdateSim {
    // --- time --------------------------------------------------------------------------------

    /// Advances downloads, the simulated user, installs and restarts to `now`, and returns what
    /// happened since the last call (including what `handle` set off).
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<UpdateEvent> {
        self.advance(now);
        if let Phase::Downloading { idx, done } = self.phase {
            let f = self.fraction(idx, done);
            if self.last_progress != Some(f) {
                self.last_progress = Some(f);
                self.events.push(UpdateEvent::DownloadProgress(f));
            }
        }
        std::mem::take(&mut self.events)
    }

    pub(super) fn advance(&mut self, now: DateTime<Utc>) {
        // Bounded: each step moves simulated time forward or changes phase.
        for _ in 0..100_000 {
            match self.next_due() {
                Some(t) if t <= now => {
                    self.account_download(t);
                    self.fire(t);
                }
                _ => break,
            }
        }
        self.account_download(now);
    }

    pub(super) fn next_due(&self) -> Option<DateTime<Utc>> {
        let phase_t = match &self.phase {
            Phase::Downloading { idx, done } => {
                if self.state.network == NetworkKind::None {
                    None
                } else {
                    let size = self.entry(*idx).download_size as f64;
                    let secs = ((size - done).max(0.0)) / self.config.timing.download_rate as f64;
                    self.progress_at.map(|p| {
                        p.checked_add_signed(secs_to_chrono(secs))
                            .unwrap_or(DateTime::<Utc>::MAX_UTC)
                    })
                }
            }
            Phase::AwaitingUser { step, at, .. } => (*step != UserStep::Wait).then_some(*at),
            Phase::InstallScheduled { at, .. } => Some(*at),
            Phase::Installing { until, .. } => Some(*until),
            Phase::Restarting { back_at, .. } => Some(*back_at),
            Phase::Idle | Phase::Downloaded { .. } => None,
        };
        match (phase_t, self.unlock_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Credits download progress from `progress_at` to `to`. The simulation has no time but
    /// the device clock, so a forward clock jump completes part of a download at once; a
    /// backward one never takes progress away, and counting resumes from the earlier time
    /// (otherwise the download would freeze until the clock caught up again).
    pub(super) fn account_download(&mut self, to: DateTime<Utc>) {
        let Some(from) = self.progress_at else {
            return;
        };
        if to < from {
            self.progress_at = Some(to);
            return;
        }
        if to == from {
            return;
        }
        if let Phase::Downloading { idx, done } = self.phase
            && self.state.network != NetworkKind::None
        {
            let secs = (to - from).num_milliseconds() as f64 / 1000.0;
            let size = self.entry(idx).download_size as f64;
            let d = (done + secs * self.config.timing.download_rate as f64).min(size);
            self.phase = Phase::Downloading { idx, done: d };
        }
        self.progress_at = Some(to);
    }

    /// Carries out the transition due at `t`.
    pub(super) fn fire(&mut self, t: DateTime<Utc>) {
        if let Some(u) = self.unlock_at
            && u <= t
        {
            self.unlock_at = None;
            self.state.unlocked_since_boot = true;
            self.events.push(UpdateEvent::FirstUnlock);
            return;
        }
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Downloading { idx, .. } => {
                self.last_progress = Some(1.0);
                self.events.push(UpdateEvent::DownloadProgress(1.0));
                self.events.push(UpdateEvent::Downloaded);
                self.phase = Phase::Downloaded { idx };
            }
            Phase::AwaitingUser {
                idx,
                user,
                step: UserStep::Prompt,
                ..
            } => {
                self.events.push(UpdateEvent::PromptShown);
                self.user_reacts(idx, user, t);
            }
            Phase::AwaitingUser {
                idx,
                step: UserStep::Approve,
                ..
            }
            | Phase::InstallScheduled { idx, .. } => self.try_install(idx, t),
            Phase::Installing { idx, until } => {
                let back_at = after(until, self.config.timing.restart);
                self.events.push(UpdateEvent::RestartBegins { back_at });
                self.phase = Phase::Restarting { idx, back_at };
            }
            Phase::Restarting { idx, back_at } => self.finish_restart(idx, back_at),
            other => self.phase = other,
        }
    }

    /// The user's reaction to a prompt shown at `t` (Apple's note, brief §0.4: limited
    /// deferrals, then a prompt at every return to the Home Screen).
    pub(super) fn user_reacts(&mut self, idx: usize, mut user: UserBehaviour, t: DateTime<Utc>) {
        loop {
            match user {
                UserBehaviour::Approve { after: delay } => {
                    self.phase = Phase::AwaitingUser {
                        idx,
                        user: UserBehaviour::Approve { after: delay },
                        step: UserStep::Approve,
                        at: after(t, delay),
                    };
                    return;
                }
                UserBehaviour::Defer { times: 0, then } => user = *then,
                UserBehaviour::Defer { times, then } => {
                    self.events.push(UpdateEvent::UserDeferred);
                    self.phase = Phase::AwaitingUser {
                        idx,
                        user: UserBehaviour::Defer {
                            times: times - 1,
                            then,
                        },
                        step: UserStep::Prompt,
                        at: after(t, self.config.timing.defer_interval),
                    };
                    return;
                }
                UserBehaviour::Later => {
                    let at = self.next_night_window(t);
                    self.events.push(UpdateEvent::InstallScheduled { at });
                    self.phase = Phase::InstallScheduled { idx, at };
                    return;
                }
                UserBehaviour::Never => {
                    self.phase = Phase::AwaitingUser {
                        idx,
                        user: UserBehaviour::Never,
                        step: UserStep::Wait,
                        at: t,
                    };
                    return;
                }
            }
        }
    }

    /// A seeded minute in the next 01:00–03:00 window, device local time (rdar 45414727). Before
    /// 01:00 that is the same night, otherwise the next.
    pub(super) fn next_night_window(&mut self, t: DateTime<Utc>) -> DateTime<Utc> {
        let off = self.state.local_offset_minutes;
        let local = local_time(t, off);
        let one_am = NaiveTime::from_hms_opt(1, 0, 0).unwrap_or_default();
        let mut day = local.date();
        if local.time() >= one_am {
            day = day.succ_opt().unwrap_or(day);
        }
        let minute = self.rng.below(120) as i64;
        from_local(day.and_time(one_am), off) + ChronoDuration::minutes(minute)
    }

    /// Starts the install if power and space allow, else back to Downloaded (**Assumption**:
    /// the device does not retry on its own; the server has to ask again).
    pub(super) fn try_install(&mut self, idx: usize, t: DateTime<Utc>) {
        match self.install_blocker(idx) {
            Some(status) => {
                self.events.push(UpdateEvent::InstallBlocked {
                    status: status.into(),
                });
                self.phase = Phase::Downloaded { idx };
            }
            None => self.start_install(idx, t),
        }
    }

    pub(super) fn start_install(&mut self, idx: usize, t: DateTime<Utc>) {
        self.events.push(UpdateEvent::InstallStarted);
        self.phase = Phase::Installing {
            idx,
            until: after(t, self.config.timing.install),
        };
    }

    /// The device comes back on the new version. Before the first unlock a passcode device
    /// answers NotNow (a device without passcode is unlocked at boot); the simulated user
    /// unlocks after `unlock_after_restart`. The server will re-send the command that was in
    /// flight (brief §0.3).
    pub(super) fn finish_restart(&mut self, idx: usize, back_at: DateTime<Utc>) {
        let e = self.entry(idx).clone();
        self.state.version = e.version.clone();
        self.state.build = e.build.clone();
        if let Some((table, seed, udid)) = &self.requirk {
            self.quirks = table.for_device(&e.version, *seed, udid);
        }
        self.state.unlocked_since_boot = !self.state.passcode;
        self.unlock_at = if self.state.passcode {
            self.config
                .timing
                .unlock_after_restart
                .map(|d| after(back_at, d))
        } else {
            None
        };
        self.before_restart.extend(self.handled.drain());
        self.phase = Phase::Idle;
        self.progress_at = None;
        self.last_progress = None;
        self.events.push(UpdateEvent::RestartEnds {
            version: e.version,
            build: e.build,
        });
    }

    // --- conditions ---------------------------------------------------------------------------

    pub(super) fn entry(&self, idx: usize) -> &CatalogEntry {
        &self.config.catalogue[idx]
    }

    pub(super) fn fraction(&self, idx: usize, done: f64) -> f64 {
        let size = self.entry(idx).download_size;
        if size == 0 {
            1.0
        } else {
            (done / size as f64).clamp(0.0, 1.0)
        }
    }

    pub(super) fn asset_bytes(&self) -> u64 {
        match self.phase {
            Phase::Idle => 0,
            Phase::Downloading { done, .. } => done as u64,
            Phase::Downloaded { idx }
            | Phase::AwaitingUser { idx, .. }
            | Phase::InstallScheduled { idx, .. }
            | Phase::Installing { idx, .. }
            | Phase::Restarting { idx, .. } => self.entry(idx).download_size,
        }
    }

    pub(super) fn low_power(&self) -> bool {
        self.state.battery_level < MIN_BATTERY_ON_BATTERY_POWER
            && !(self.state.external_power || self.state.charging)
    }

    /// Why a download cannot start, checked in this order (**Assumption**: the order is not
    /// documented):
    /// * `DownloadInsufficientNetwork`: no network. Cellular counts as a network
    ///   (**Assumption**; whether iOS downloads over cellular depends on version and settings).
    /// * `DownloadInsufficientSpace`: free < DownloadSize + InstallSize, Apple's stated rule
    ///   (AvailableOSUpdates notes, brief §2).
    /// * `DownloadInsufficientPower`: see [`MIN_BATTERY_ON_BATTERY_POWER`].
    pub(super) fn download_blocker(&self, idx: usize) -> Option<&'static str> {
        let e = self.entry(idx);
        if self.state.network == NetworkKind::None {
            Some("DownloadInsufficientNetwork")
        } else if self.state.disk_free < e.download_size.saturating_add(e.install_size) {
            Some("DownloadInsufficientSpace")
        } else if self.low_power() {
            Some("DownloadInsufficientPower")
        } else {
            None
        }
    }

    /// Why an install cannot start: `InstallInsufficientPower` (same 50 % rule),
    /// `InstallInsufficientSpace` (free space outside the asset < InstallSize).
    pub(super) fn install_blocker(&self, idx: usize) -> Option<&'static str> {
        if self.low_power() {
            Some("InstallInsufficientPower")
        } else if self
            .state
            .disk_free
            .saturating_sub(self.entry(idx).download_size)
            < self.entry(idx).install_size
        {
            Some("InstallInsufficientSpace")
        } else {
            None
        }
    }

    /// Entries newer than the running version that apply to this model, newest last.
    pub(super) fn applicable(&self) -> Vec<usize> {
        let Ok(current) = DeviceVersion::parse(&self.state.version) else {
            return Vec::new();
        };
        let mut v: Vec<(Version, usize)> = self
            .config
            .catalogue
            .iter()
            .enumerate()
            .filter(|(_, e)| e.applies_to(&self.state.product_type))
            .filter_map(|(i, e)| Version::parse(&e.version).ok().map(|v| (v, i)))
            .filter(|(v, _)| *v > current.version)
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().map(|(_, i)| i).collect()
    }

    /// The update the device offers: on iOS AvailableOSUpdates "contains only the most recent
    /// available updates" (brief §2).
    pub(super) fn newest(&self) -> Option<usize> {
        self.applicable().last().copied()
    }
}

pub(super) fn secs_to_chrono(secs: f64) -> ChronoDuration {
    let s = if secs.is_finite() {
        secs.clamp(0.0, 1e9)
    } else {
        1e9
    };
    ChronoDuration::milliseconds((s * 1000.0).ceil() as i64)
}
