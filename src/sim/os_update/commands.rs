//! The update machinery's command half: ScheduleOSUpdate, OSUpdateStatus and
//! AvailableOSUpdates (mdm brief §1, §2), and the plist reply bodies.

use super::*;

impl OsUpdateSim {
    // --- commands -----------------------------------------------------------------------------

    /// Handles one command. `command` is the `Command` dictionary (with `RequestType`).
    ///
    /// Order of checks, for the three update commands:
    /// 1. Rebooting → no reply (the device is not there).
    /// 2. `notnow_before_first_unlock` and not unlocked since boot → `NotNow`.
    /// 3. Not supervised → `Error` (all three need supervision, brief §1/§2).
    /// 4. The command itself.
    pub fn handle(
        &mut self,
        now: DateTime<Utc>,
        command_uuid: &str,
        request_type: &str,
        command: &Dictionary,
    ) -> Outcome {
        self.advance(now);
        if self.offline(now) {
            return Outcome::NoReply;
        }
        if !matches!(
            request_type,
            "ScheduleOSUpdate" | "OSUpdateStatus" | "AvailableOSUpdates"
        ) {
            return reply(
                ERROR,
                with_chain(error_chain(&[(
                    UNKNOWN_COMMAND_CODE,
                    "MCMDMErrorDomain",
                    &format!("Unknown command: {request_type} <MDMClientError:91>"),
                )])),
            );
        }
        if self.quirks.has(Behaviour::NotnowBeforeFirstUnlock) && !self.state.unlocked_since_boot {
            return reply(NOT_NOW, Dictionary::new());
        }
        if !self.state.supervised {
            return not_eligible("The device is not supervised.");
        }
        let out = match request_type {
            "ScheduleOSUpdate" => self.schedule(now, command_uuid, command),
            "OSUpdateStatus" => self.os_update_status(),
            _ => self.available_updates(),
        };
        self.advance(now);
        out
    }

    /// ScheduleOSUpdate (brief §1).
    ///
    /// * A CommandUUID handled before the last restart is answered `Acknowledged` without
    ///   `UpdateResults` (Apple's note, brief §0.3).
    /// * `requires_dep_below_10_3`: without DEP enrolment, or with a passcode → `Error`.
    /// * Malformed `Updates` (not an array, an item not a dictionary, `InstallAction` missing,
    ///   not a string or not in the schema's range list, `ProductKey`/`ProductVersion` not a
    ///   string, neither present) → `CommandFormatError`.
    /// * `Updates` absent: "the device applies the default behavior" — **Assumption**: that is
    ///   `Default` for the update AvailableOSUpdates offers (none → empty `UpdateResults`).
    /// * Each item is answered as in [`Self::schedule_item`]; the envelope is `Acknowledged`
    ///   even when items carry `InstallAction: Error` (the schema puts scheduling errors in
    ///   the item).
    /// * `schedule_no_response` (11.3.1): the command is carried out, no reply is sent.
    /// * `schedule_error_but_prompt` (11.4): when an item started a download or showed the
    ///   prompt, the envelope is `Error` (items `InstallAction: Error`) though it happened.
    pub(super) fn schedule(&mut self, now: DateTime<Utc>, uuid: &str, cmd: &Dictionary) -> Outcome {
        if self.before_restart.contains(uuid) {
            return reply(ACKNOWLEDGED, Dictionary::new());
        }
        if self.quirks.has(Behaviour::RequiresDepBelow10_3)
            && (!self.state.dep_enrolled || self.state.passcode)
        {
            return not_eligible(
                "ScheduleOSUpdate requires a DEP-enrolled device without a passcode before iOS 10.3.",
            );
        }
        let Some(items) = self.parse_updates(cmd) else {
            return reply(FORMAT_ERROR, Dictionary::new());
        };
        self.handled.insert(uuid.to_string());
        let results: Vec<ItemResult> = items
            .into_iter()
            .map(|(sel, echo, action)| self.schedule_item(now, sel, echo, action))
            .collect();
        if self.quirks.has(Behaviour::ScheduleNoResponse) {
            return Outcome::NoReply;
        }
        let hidden = results.iter().any(|r| r.effect != Effect::None);
        if self.quirks.has(Behaviour::ScheduleErrorButPrompt) && hidden {
            let mut body = with_chain(error_chain(&[(
                3,
                "com.apple.softwareupdateservices.errors",
                "The operation couldn’t be completed. (com.apple.softwareupdateservices.errors error 3.)",
            )]));
            body.insert(
                "UpdateResults".into(),
                Value::Array(
                    results
                        .iter()
                        .map(|r| result_item(&r.product_key, "Error", r.status))
                        .collect(),
                ),
            );
            return reply(ERROR, body);
        }
        let mut body = Dictionary::new();
        body.insert(
            "UpdateResults".into(),
            Value::Array(
                results
                    .iter()
                    .map(|r| result_item(&r.product_key, r.install_action, r.status))
                    .collect(),
            ),
        );
        reply(ACKNOWLEDGED, body)
    }

    /// `(selected entry, ProductKey to echo, action)` per item; `None` if malformed.
    #[allow(clippy::type_complexity)]
    pub(super) fn parse_updates(
        &self,
        cmd: &Dictionary,
    ) -> Option<Vec<(Option<usize>, String, Action)>> {
        let Some(updates) = cmd.get("Updates") else {
            return Some(
                self.newest()
                    .map(|i| (Some(i), self.entry(i).product_key.clone(), Action::Default))
                    .into_iter()
                    .collect(),
            );
        };
        // ProductVersion is understood from iOS 11.3 on (brief §1); older devices ignore it.
        let knows_version = Version::parse(&self.state.version)
            .map(|v| v >= Version::from_parts(&[11, 3]))
            .unwrap_or(true);
        let applicable = self.applicable();
        let mut out = Vec::new();
        for item in updates.as_array()? {
            let item = item.as_dictionary()?;
            let action = match item.get("InstallAction")?.as_string()? {
                "Default" => Action::Default,
                "DownloadOnly" => Action::DownloadOnly,
                "InstallASAP" => Action::InstallAsap,
                "NotifyOnly" | "InstallLater" | "InstallForceRestart" => Action::MacOnly,
                _ => return None,
            };
            let key = match item.get("ProductKey") {
                Some(v) => Some(v.as_string()?),
                None => None,
            };
            let version = match item.get("ProductVersion") {
                Some(v) => Some(v.as_string()?),
                None => None,
            };
            if key.is_none() && version.is_none() {
                return None;
            }
            let selected = if let Some(k) = key {
                applicable
                    .iter()
                    .copied()
                    .find(|&i| self.entry(i).product_key == k)
            } else if knows_version {
                let want = version.and_then(|v| Version::parse(v).ok());
                applicable.iter().copied().find(|&i| {
                    want.as_ref().is_some_and(|w| {
                        Version::parse(&self.entry(i).version).ok().as_ref() == Some(w)
                    })
                })
            } else {
                None
            };
            let echo = match selected {
                Some(i) => self.entry(i).product_key.clone(),
                None => key.or(version).unwrap_or_default().to_string(),
            };
            out.push((selected, echo, action));
        }
        Some(out)
    }

    /// One `UpdatesItem`:
    ///
    /// * Unknown product (not offered to this model/version), or a macOS-only action →
    ///   `InstallAction: Error`, `Status: Idle`. `Error` is the schema's value for "an error
    ///   occurred during scheduling"; **Assumption**: `Idle` because nothing is in progress and
    ///   the status list has no "not found".
    /// * Another update already in flight → `Error` with that update's status
    ///   (**Assumption**: one update at a time).
    /// * Nothing in flight: `Default`, `DownloadOnly` and `InstallASAP` all start the download
    ///   → `DownloadOnly`/`Downloading`, or `DownloadOnly` with a `Download…` failure status.
    ///   `Default` downloading first is Apple's two-step rule (brief §0.2). For `InstallASAP`
    ///   Apple says it installs "a previously downloaded" update; **Assumption**: without one
    ///   it downloads and says so (`DownloadOnly`, "a device may return a different
    ///   InstallAction than requested"), and does not install by itself afterwards.
    /// * Downloading → `DownloadOnly`/`Downloading`.
    /// * Downloaded: `DownloadOnly` → `DownloadOnly`/`Idle`; `Default`/`InstallASAP` install:
    ///   `InstallASAP` with `InstallInsufficientPower`/`InstallInsufficientSpace`, or without a
    ///   passcode `InstallASAP`/`Installing` at once, or with a passcode the prompt
    ///   (`InstallASAP`/`Idle`: nothing installs until the user agrees, brief §0.4).
    /// * Prompt showing → `InstallASAP`/`Idle`, no second prompt.
    /// * User chose "Later": with `installing_while_scheduled`, `Default`/`InstallASAP` installs
    ///   at once (`InstallASAP`/`Installing`, rdar 45414727); without it **Assumption**: the
    ///   user's choice stands, `InstallLater`/`Idle`.
    /// * Installing → `InstallASAP`/`Installing`.
    pub(super) fn schedule_item(
        &mut self,
        now: DateTime<Utc>,
        selected: Option<usize>,
        product_key: String,
        action: Action,
    ) -> ItemResult {
        let r = |install_action, status, effect| ItemResult {
            product_key: product_key.clone(),
            install_action,
            status,
            effect,
        };
        let Some(idx) = selected else {
            return r(ERROR, "Idle", Effect::None);
        };
        if action == Action::MacOnly {
            return r(ERROR, "Idle", Effect::None);
        }
        if let Some(other) = self.phase.idx()
            && other != idx
        {
            return r(ERROR, self.phase_status(), Effect::None);
        }
        let install = matches!(action, Action::Default | Action::InstallAsap);
        match self.phase.clone() {
            Phase::Idle => match self.download_blocker(idx) {
                Some(status) => r("DownloadOnly", status, Effect::None),
                None => {
                    self.phase = Phase::Downloading { idx, done: 0.0 };
                    self.progress_at = Some(now);
                    self.last_progress = None;
                    r("DownloadOnly", "Downloading", Effect::DownloadStarted)
                }
            },
            Phase::Downloading { .. } => r("DownloadOnly", "Downloading", Effect::None),
            Phase::Downloaded { .. } if !install => r("DownloadOnly", "Idle", Effect::None),
            Phase::Downloaded { .. } => match self.install_blocker(idx) {
                Some(status) => r("InstallASAP", status, Effect::None),
                None if self.state.passcode => {
                    self.phase = Phase::AwaitingUser {
                        idx,
                        user: self.config.user.clone(),
                        step: UserStep::Prompt,
                        at: now,
                    };
                    r("InstallASAP", "Idle", Effect::Prompted)
                }
                None => {
                    self.start_install(idx, now);
                    r("InstallASAP", "Installing", Effect::None)
                }
            },
            Phase::AwaitingUser { .. } => r("InstallASAP", "Idle", Effect::None),
            Phase::InstallScheduled { .. } if !install => r("DownloadOnly", "Idle", Effect::None),
            Phase::InstallScheduled { .. } => {
                if self.quirks.has(Behaviour::InstallingWhileScheduled) {
                    match self.install_blocker(idx) {
                        Some(status) => r("InstallASAP", status, Effect::None),
                        None => {
                            self.start_install(idx, now);
                            r("InstallASAP", "Installing", Effect::None)
                        }
                    }
                } else {
                    r("InstallLater", "Idle", Effect::None)
                }
            }
            Phase::Installing { .. } | Phase::Restarting { .. } => {
                r("InstallASAP", "Installing", Effect::None)
            }
        }
    }

    /// The `Status` OSUpdateStatus reports for the update in flight: `Downloading` while
    /// downloading, `Installing` while installing, `Idle` when downloaded and waiting (rdar
    /// 45414692 shows `Idle` + `IsDownloaded`), and for a "Later" install `Installing` with the
    /// `installing_while_scheduled` quirk, else `Idle` (**Assumption**: there is no
    /// "Scheduled" value).
    pub(super) fn phase_status(&self) -> &'static str {
        match self.phase {
            Phase::Idle | Phase::Downloaded { .. } | Phase::AwaitingUser { .. } => "Idle",
            Phase::Downloading { .. } => "Downloading",
            Phase::InstallScheduled { .. } => {
                if self.quirks.has(Behaviour::InstallingWhileScheduled) {
                    "Installing"
                } else {
                    "Idle"
                }
            }
            Phase::Installing { .. } | Phase::Restarting { .. } => "Installing",
        }
    }

    /// OSUpdateStatus (brief §2): one item for the update in flight, an empty array when none
    /// ("The array is empty if there are no software updates currently in progress").
    /// `IsDownloaded` is an integer 0/1 with `is_downloaded_integer` (rdar 45414737).
    pub(super) fn os_update_status(&self) -> Outcome {
        let items = match self.phase {
            Phase::Idle => vec![],
            Phase::Downloading { idx, done } => vec![(idx, false, self.fraction(idx, done))],
            Phase::Downloaded { idx }
            | Phase::AwaitingUser { idx, .. }
            | Phase::InstallScheduled { idx, .. }
            | Phase::Installing { idx, .. }
            | Phase::Restarting { idx, .. } => vec![(idx, true, 1.0)],
        };
        let int = self.quirks.has(Behaviour::IsDownloadedInteger);
        let mut body = Dictionary::new();
        body.insert(
            "OSUpdateStatus".into(),
            Value::Array(
                items
                    .into_iter()
                    .map(|(idx, downloaded, pct)| {
                        status_item(
                            &self.entry(idx).product_key,
                            downloaded,
                            pct,
                            self.phase_status(),
                            int,
                        )
                    })
                    .collect(),
            ),
        );
        reply(ACKNOWLEDGED, body)
    }

    /// AvailableOSUpdates (brief §2): the newest update for this model, or an empty array; with
    /// `available_updates_error_2213` "none" is `Error` 2213 → softwareupdateservices 3
    /// (rdar 39170807).
    pub(super) fn available_updates(&self) -> Outcome {
        let newest = self.newest();
        if newest.is_none() && self.quirks.has(Behaviour::AvailableUpdatesError2213) {
            return reply(
                ERROR,
                with_chain(error_chain(&[
                    (2213, "DeviceManagement.error", "No update available."),
                    (
                        3,
                        "com.apple.softwareupdateservices.errors",
                        "The operation couldn’t be completed. (com.apple.softwareupdateservices.errors error 3.)",
                    ),
                ])),
            );
        }
        let mut body = Dictionary::new();
        body.insert(
            "AvailableOSUpdates".into(),
            Value::Array(
                newest
                    .map(|i| available_item(self.entry(i)))
                    .into_iter()
                    .collect(),
            ),
        );
        reply(ACKNOWLEDGED, body)
    }
}

// ---------------------------------------------------------------------------------------------
// Plist building (swap for the shared MDM codecs later)
// ---------------------------------------------------------------------------------------------

pub(super) fn reply(status: &str, body: Dictionary) -> Outcome {
    Outcome::Reply {
        status: status.to_string(),
        body,
    }
}

pub(super) fn not_eligible(msg: &str) -> Outcome {
    reply(
        ERROR,
        with_chain(error_chain(&[(NOT_ELIGIBLE_CODE, "MCMDMErrorDomain", msg)])),
    )
}

pub(super) fn with_chain(chain: Value) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("ErrorChain".into(), chain);
    d
}

/// `ErrorChain`: the first item is the top-level error (brief §3).
pub(super) fn error_chain(items: &[(i64, &str, &str)]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|(code, domain, text)| {
                let mut d = Dictionary::new();
                d.insert("ErrorCode".into(), Value::Integer((*code).into()));
                d.insert("ErrorDomain".into(), Value::String((*domain).into()));
                d.insert("LocalizedDescription".into(), Value::String((*text).into()));
                d.insert("USEnglishDescription".into(), Value::String((*text).into()));
                Value::Dictionary(d)
            })
            .collect(),
    )
}

/// `UpdateResultsItem`: `ProductKey`, `InstallAction`, `Status` (brief §1).
pub(super) fn result_item(product_key: &str, install_action: &str, status: &str) -> Value {
    let mut d = Dictionary::new();
    d.insert("ProductKey".into(), Value::String(product_key.into()));
    d.insert("InstallAction".into(), Value::String(install_action.into()));
    d.insert("Status".into(), Value::String(status.into()));
    Value::Dictionary(d)
}

/// `OSUpdateStatusItem` (brief §2).
pub(super) fn status_item(
    product_key: &str,
    downloaded: bool,
    percent: f64,
    status: &str,
    downloaded_as_integer: bool,
) -> Value {
    let mut d = Dictionary::new();
    d.insert("ProductKey".into(), Value::String(product_key.into()));
    d.insert(
        "IsDownloaded".into(),
        if downloaded_as_integer {
            Value::Integer(i64::from(downloaded).into())
        } else {
            Value::Boolean(downloaded)
        },
    );
    d.insert("DownloadPercentComplete".into(), Value::Real(percent));
    d.insert("Status".into(), Value::String(status.into()));
    Value::Dictionary(d)
}

/// `AvailableOSUpdatesItem`, iOS keys only (brief §2, Apple's example2.plist).
pub(super) fn available_item(e: &CatalogEntry) -> Value {
    let mut d = Dictionary::new();
    d.insert("ProductKey".into(), Value::String(e.product_key.clone()));
    d.insert(
        "HumanReadableName".into(),
        Value::String(format!("iOS {}", e.version)),
    );
    d.insert("ProductName".into(), Value::String("iOS".into()));
    d.insert("Version".into(), Value::String(e.version.clone()));
    d.insert("Build".into(), Value::String(e.build.clone()));
    d.insert(
        "DownloadSize".into(),
        Value::Integer(e.download_size.into()),
    );
    d.insert("InstallSize".into(), Value::Integer(e.install_size.into()));
    d.insert("IsCritical".into(), Value::Boolean(e.is_critical));
    d.insert("RestartRequired".into(), Value::Boolean(e.restart_required));
    d.insert(
        "AllowsInstallLater".into(),
        Value::Boolean(e.allows_install_later),
    );
    Value::Dictionary(d)
}
