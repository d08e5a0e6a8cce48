//! The hooks a DDM software-update enforcement drives (`sim::ddm_device`): the same download,
//! user, install and restart machinery as ScheduleOSUpdate, entered by the declaration instead
//! of a command, and the machine's phase read as `softwareupdate.*` status values
//! (`declarative/status/softwareupdate.install-state.yaml`, DDM brief §3).

use super::*;

/// A failed start of an enforced download or install: the `UpdateResults`-style status that
/// blocked it (e.g. `DownloadInsufficientPower`), reported as `failure-reason.reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked(pub &'static str);

impl OsUpdateSim {
    /// The catalogue entry a target names, if it is offered to this model and newer than the
    /// running version: `TargetOSVersion` decides, a build only narrows when consistent
    /// (enforcement schema: "the target OS version takes precedence").
    pub fn offered_target(&self, version: &str, build: Option<&str>) -> Option<usize> {
        let candidates: Vec<usize> = self
            .applicable()
            .into_iter()
            .filter(|&i| self.entry(i).version == version)
            .collect();
        build
            .and_then(|b| {
                candidates
                    .iter()
                    .copied()
                    .find(|&i| self.entry(i).build == b)
            })
            .or_else(|| candidates.last().copied())
    }

    /// `(version, build)` of catalogue entry `idx`.
    pub fn entry_version(&self, idx: usize) -> (String, String) {
        let e = self.entry(idx);
        (e.version.clone(), e.build.clone())
    }

    /// The entry in flight, if any.
    pub fn in_flight(&self) -> Option<usize> {
        self.phase.idx()
    }

    /// Starts downloading entry `idx` for an enforcement (no-op when it is already in flight).
    pub fn enforced_download(&mut self, now: DateTime<Utc>, idx: usize) -> Result<(), Blocked> {
        self.advance(now);
        if self.phase.idx().is_some() {
            return Ok(());
        }
        if let Some(b) = self.download_blocker(idx) {
            return Err(Blocked(b));
        }
        self.phase = Phase::Downloading { idx, done: 0.0 };
        self.progress_at = Some(now);
        self.last_progress = None;
        Ok(())
    }

    /// The enforced install moment has come: a downloaded update installs, through the
    /// simulated user when the device has a passcode (Apple's note, mdm brief §0.4; Iru,
    /// DDM brief §4). Returns `Ok(false)` while the download is not done yet.
    pub fn enforced_install(&mut self, now: DateTime<Utc>) -> Result<bool, Blocked> {
        self.advance(now);
        let Phase::Downloaded { idx } = self.phase else {
            return Ok(matches!(
                self.phase,
                Phase::AwaitingUser { .. }
                    | Phase::InstallScheduled { .. }
                    | Phase::Installing { .. }
                    | Phase::Restarting { .. }
            ));
        };
        if let Some(b) = self.install_blocker(idx) {
            return Err(Blocked(b));
        }
        if self.state.passcode {
            self.phase = Phase::AwaitingUser {
                idx,
                user: self.config.user.clone(),
                step: UserStep::Prompt,
                at: now,
            };
        } else {
            self.start_install(idx, now);
        }
        Ok(true)
    }

    /// The phase as `softwareupdate.install-state`: `none`, `downloading`, `prepared` (downloaded,
    /// waiting for the deadline or the user), `installing` (installing or rebooting).
    pub fn install_state(&self) -> &'static str {
        match self.phase {
            Phase::Idle => "none",
            Phase::Downloading { .. } => "downloading",
            Phase::Downloaded { .. }
            | Phase::AwaitingUser { .. }
            | Phase::InstallScheduled { .. } => "prepared",
            Phase::Installing { .. } | Phase::Restarting { .. } => "installing",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sim(passcode: bool) -> OsUpdateSim {
        let state = DeviceUpdateState {
            version: "17.5".into(),
            build: "21F79".into(),
            product_type: "iPhone14,7".into(),
            disk_free: 50_000_000_000,
            battery_level: 80,
            charging: false,
            external_power: true,
            network: NetworkKind::Wifi,
            passcode,
            supervised: true,
            dep_enrolled: true,
            unlocked_since_boot: true,
            local_offset_minutes: 0,
        };
        let entry = |v: &str, b: &str| CatalogEntry {
            product_key: format!("iOSUpdate{b}"),
            version: v.into(),
            build: b.into(),
            download_size: 1_000,
            install_size: 1_000,
            product_types: None,
            is_critical: false,
            restart_required: true,
            allows_install_later: true,
        };
        let config = UpdateConfig {
            catalogue: vec![entry("17.6", "21G80"), entry("18.1", "22B83")],
            user: UserBehaviour::Approve {
                after: Duration::from_secs(60),
            },
            timing: Timing::default(),
        };
        OsUpdateSim::new(state, config, Quirks::default(), 1)
    }

    #[test]
    fn an_enforced_update_walks_the_install_states_and_lands_on_the_target() {
        let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        let mut s = sim(false);
        assert_eq!(s.offered_target("19.0", None), None, "not offered");
        assert_eq!(s.offered_target("17.5", None), None, "not newer");
        let idx = s.offered_target("18.1", Some("22B83")).unwrap();
        assert_eq!(s.install_state(), "none");
        s.enforced_download(t0, idx).unwrap();
        assert_eq!(s.install_state(), "downloading");
        let t1 = t0 + ChronoDuration::hours(1);
        s.tick(t1);
        assert_eq!(s.install_state(), "prepared");
        assert_eq!(s.enforced_install(t1), Ok(true));
        assert_eq!(s.install_state(), "installing");
        s.tick(t1 + ChronoDuration::hours(2));
        assert_eq!(s.version(), ("18.1", "22B83"));
        assert_eq!(s.install_state(), "none");
    }

    #[test]
    fn a_passcode_device_waits_for_the_user_and_a_flat_battery_blocks() {
        let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        let mut s = sim(true);
        let idx = s.offered_target("18.1", None).unwrap();
        s.enforced_download(t0, idx).unwrap();
        let t1 = t0 + ChronoDuration::hours(1);
        s.tick(t1);
        assert_eq!(s.enforced_install(t1), Ok(true));
        assert_eq!(
            s.install_state(),
            "prepared",
            "prompted, the user has not approved yet"
        );
        s.tick(t1 + ChronoDuration::seconds(61));
        assert_eq!(s.install_state(), "installing");
        let mut flat = sim(false);
        flat.set_power(10, false, false);
        assert_eq!(
            flat.enforced_download(t0, idx),
            Err(Blocked("DownloadInsufficientPower"))
        );
    }
}
