//! The catalogue of detectors: what each looks for, where that expectation comes from, and
//! what a radar draft says about it (`report::radar`).

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
        description: "A command was answered again after its final answer (Acknowledged/Error/CommandFormatError), i.e. it was delivered again: the NanoMDM kv queue re-delivers an answered command when the last queued one is acknowledged while an earlier one is parked as NotNow. Or a command the device had not answered was delivered again (NanoMDM re-delivered an unanswered ScheduleOSUpdate 13–14 times, and the device installed): deliveries come from the MDM's own record (`lab`'s server) or, for a webhook-fed NanoMDM or MicroMDM, from the device's Idle polls while the command was the oldest one queued and unanswered.",
        source: "MDM brief §5.4 (NanoMDM storage/kv queue_ll.go unlink); Apple, \"Sending MDM commands\"",
        expected: "A command leaves the queue once the device answers Acknowledged or Error; \"It's also possible for the device to send the same status twice\" (Apple, \"Sending MDM commands\"), but a re-delivered ScheduleOSUpdate starts an install at once (rdar 45414727).",
        situation: "devices that gave a final answer to at least one command, or whose dose deliveries were seen",
        classification: "Serious Bug",
        trigger: "Queue two commands, answer the first NotNow and the second Acknowledged, then acknowledge the first; watch what the server sends next. Or queue a ScheduleOSUpdate on an iOS 11.3.1 device (which sends no answer to it, rdar 40161553) and count the deliveries of each Idle poll.",
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
    // DDM software-update doses (issue 13): the enforcement declaration and its status reports.
    Detector {
        id: "ddm_deadline_passed_without_install",
        title: "Software-update enforcement deadline passed without the update being installed",
        description: "A device given com.apple.configuration.softwareupdate.enforcement.specific still ran its starting build (USB) when its follow-up ended, although its own clock had passed the declaration's TargetLocalDateTime by more than an hour by then. The device's local clock is its lockdown TimeIntervalSince1970 plus TimeZoneOffsetFromUTC read at baseline, carried forward by the host's time since that reading times the lab's time scale (a simulated lab's clock runs faster; RunStarted.time_scale). A device detached at the end is not judged.",
        source: "Apple device-management schema, declarative/declarations/configurations/softwareupdate.enforcement.specific.yaml; DDM brief §2, §4, §7 (\"Deadline + 1 h + grace passed with no installing and no version change\")",
        expected: "TargetLocalDateTime is \"the local date time value that specifies when to force install the software update\" (softwareupdate.enforcement.specific.yaml); a deadline already past forces the install about an hour later, a device off at the deadline installs an hour after it restarts (Apple, \"Deploying software updates using declarative management\"; DDM brief §2, §4).",
        situation: "devices given the enforcement declaration whose deadline had passed on their clock (plus 1 h) by the end of follow-up, with a build observed",
        classification: "Serious Bug",
        trigger: "Follow the device past TargetLocalDateTime plus an hour, re-reading its build over USB, with the declaration active and its target offered.",
        scope: Scope::Dose,
    },
    Detector {
        id: "ddm_install_failed",
        title: "Software-update enforcement reports install-state failed",
        description: "After the enforcement declaration was sent, a status report set softwareupdate.install-state to failed; the failure-reason item (count, reason, timestamp) is quoted.",
        source: "Apple device-management schema, declarative/status/softwareupdate.install-state.yaml and softwareupdate.failure-reason.yaml; DDM brief §3, §7",
        expected: "install-state moves waiting → downloading → prepared → installing at the deadline, then none once the new OS reports (Apple, \"Phases of software update enforcement\"; DDM brief §3); failed means \"The software update failed\" (softwareupdate.install-state.yaml).",
        situation: "devices given the enforcement declaration that sent a status report after it",
        classification: "Serious Bug",
        trigger: "Watch the status reports of softwareupdate.install-state and softwareupdate.failure-reason after the declaration is synced.",
        scope: Scope::Dose,
    },
    Detector {
        id: "ddm_pending_version_mismatch",
        title: "Status item softwareupdate.pending-version names another version than the enforcement's TargetOSVersion",
        description: "A status report after the enforcement declaration gave a non-empty softwareupdate.pending-version os-version that is not the declaration's TargetOSVersion (trailing .0 ignored).",
        source: "Apple device-management schema, declarative/status/softwareupdate.pending-version.yaml and softwareupdate.enforcement.specific.yaml; DDM brief §2 (\"Patch conflict\"), §7",
        expected: "pending-version holds \"The OS version of the pending software update\" and its build, empty strings when nothing is pending (softwareupdate.pending-version.yaml; DDM brief §3); the enforcement installs TargetOSVersion, which wins over an inconsistent TargetBuildVersion (softwareupdate.enforcement.specific.yaml).",
        situation: "devices given the enforcement declaration that reported a non-empty pending-version after it",
        classification: "Other Bug",
        trigger: "Compare each status report's softwareupdate.pending-version os-version with the declaration's TargetOSVersion.",
        scope: Scope::Dose,
    },
    Detector {
        id: "ddm_status_silent",
        title: "No software-update status report after the enforcement declaration",
        description: "The enforcement declaration reached the DDM server and no status report came after it before the device's follow-up ended (a device detached and never seen again is not judged); or, with reports coming, the device was silent for more than 25 h (the daily report plus an hour) between two reports or before its last USB sighting.",
        source: "Apple, \"Deploying software updates using declarative management\" (subscribe to softwareupdate.* items); declarative/protocol/statusreport.yaml; DDM brief §1 (\"Subscriptions\", \"Report\"), §7 (\"no status report after enabling\")",
        expected: "A device with an active status subscription reports when the subscription activates, whenever a subscribed value changes, and about every 24 hours (Apple, \"Integrating declarative management\"; DDM brief §1); the declaration's activation changes softwareupdate.install-state and pending-version.",
        situation: "devices given the enforcement declaration (enqueued) whose follow-up ended or that reported after it",
        classification: "Serious Bug",
        trigger: "Sync the declaration and watch the DDM server's status endpoint for the device's reports until follow-up ends.",
        scope: Scope::Dose,
    },
    Detector {
        id: "ddm_status_build_mismatch",
        title: "Status item device.operating-system.build-version disagrees with the build read over USB",
        description: "A status report's device.operating-system.build-version named a build the next USB re-probe (lockdown BuildVersion) contradicted, with no detach (restart) between them, and no later report named the build USB showed.",
        source: "Apple device-management schema, declarative/status/device.operating-system.build-version.yaml; DDM brief §3 (\"Outcome items\")",
        expected: "device.operating-system.build-version is \"The operating system's build version on the device\" (device.operating-system.build-version.yaml), reported again after the update's restart (Apple, \"Phases of software update enforcement\", phase 6): it matches lockdown's BuildVersion in the same boot.",
        situation: "devices given the enforcement declaration with a report naming a build followed by a USB re-probe in the same boot",
        classification: "Other Bug",
        trigger: "Re-read the build over USB (lockdown BuildVersion) after each status report that names one.",
        scope: Scope::Dose,
    },
];

/// The detector with this id.
pub fn detector(id: &str) -> Option<&'static Detector> {
    DETECTORS.iter().find(|d| d.id == id)
}
