//! Rule `command_removed` (issue 13, "version truth for the old command"): Apple's schema marks
//! ScheduleOSUpdate, OSUpdateStatus and AvailableOSUpdates deprecated in iOS 26.0 and removed
//! in iOS 27.0 (`data/apple-device-management/mdm/commands/system.update.schedule.yaml`,
//! `system.update.status.yaml`, `system.update.available.yaml`, `supportedOS.iOS`; see
//! `data/apple-device-management/README.md` and `../shared/reference/apple-device-management/`).
//! A ScheduleOSUpdate arm excludes a device where the command is removed; on a version where it
//! is only deprecated the device stays eligible and its verdict carries a note
//! (`command_deprecated`, [`super::Verdict::notes`]).
//!
//! [`SOFTWARE_UPDATE_COMMANDS`] is the one place these thresholds live; a test holds it to the
//! bundled schema files.

use super::facts::reason;
use super::{Context, RuleVerdict, rule};
use crate::version::Version;
use serde_json::json;

/// The iOS versions at which Apple's schema deprecates and removes an MDM command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandLifetime {
    pub request_type: &'static str,
    /// `supportedOS.iOS.deprecated`: still acted on, no longer recommended.
    pub deprecated: &'static str,
    /// `supportedOS.iOS.removed`: answered as an unknown command.
    pub removed: &'static str,
    /// The bundled schema file it comes from.
    pub schema: &'static str,
}

/// The legacy software-update commands, as Apple's OS 27.0 schema (upstream commit `9468f879`)
/// marks them for iOS.
pub const SOFTWARE_UPDATE_COMMANDS: [CommandLifetime; 3] = [
    CommandLifetime {
        request_type: "ScheduleOSUpdate",
        deprecated: "26.0",
        removed: "27.0",
        schema: "data/apple-device-management/mdm/commands/system.update.schedule.yaml",
    },
    CommandLifetime {
        request_type: "OSUpdateStatus",
        deprecated: "26.0",
        removed: "27.0",
        schema: "data/apple-device-management/mdm/commands/system.update.status.yaml",
    },
    CommandLifetime {
        request_type: "AvailableOSUpdates",
        deprecated: "26.0",
        removed: "27.0",
        schema: "data/apple-device-management/mdm/commands/system.update.available.yaml",
    },
];

/// The lifetime of one of [`SOFTWARE_UPDATE_COMMANDS`].
pub fn lifetime(request_type: &str) -> Option<&'static CommandLifetime> {
    SOFTWARE_UPDATE_COMMANDS
        .iter()
        .find(|c| c.request_type == request_type)
}

/// Where a command stands on an iOS version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Supported,
    Deprecated,
    Removed,
}

impl CommandLifetime {
    /// A beta of a version counts as that version (a 27.0 beta has no ScheduleOSUpdate either).
    pub fn standing(&self, ios: &Version) -> Standing {
        let at = |v: &str| Version::parse(v).expect("a sourced version parses");
        if *ios >= at(self.removed) {
            Standing::Removed
        } else if *ios >= at(self.deprecated) {
            Standing::Deprecated
        } else {
            Standing::Supported
        }
    }
}

/// ScheduleOSUpdate on the device's iOS: excluded where removed, a note where deprecated.
pub fn check(ctx: &Context) -> RuleVerdict {
    let c = lifetime("ScheduleOSUpdate").expect("ScheduleOSUpdate is in the table");
    let values = json!({
        "version": ctx.version,
        "request_type": c.request_type,
        "deprecated": c.deprecated,
        "removed": c.removed,
        "schema": c.schema,
    });
    match c.standing(&ctx.device.version) {
        Standing::Supported => RuleVerdict::Pass,
        Standing::Deprecated => RuleVerdict::Note(reason(
            rule::COMMAND_DEPRECATED,
            format!(
                "ScheduleOSUpdate is deprecated on iOS {} (Apple schema: deprecated {}, removed \
                 {}); the device still acts on it.",
                ctx.version, c.deprecated, c.removed
            ),
            values,
        )),
        Standing::Removed => RuleVerdict::Exclude(reason(
            rule::COMMAND_REMOVED,
            format!(
                "ScheduleOSUpdate is removed on iOS {} and later (Apple schema: removed {}); use \
                 a DDM enforcement arm.",
                c.removed, c.removed
            ),
            values,
        )),
    }
}
