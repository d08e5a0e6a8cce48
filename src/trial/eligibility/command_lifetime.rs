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

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    /// A healthy device on `version` that is offered a newer update.
    fn on(version: &'static str, build: &'static str) -> Verdict {
        let p = Dev {
            version: Some(version),
            build,
            ..dev()
        }
        .probe();
        let o = vec![update("27.1", "25B70", 600_000_000, 1_500_000_000)];
        assess(
            &EligibilitySpec::default(),
            &TargetSpec::Latest,
            &subject(&p, Some(&o)),
        )
    }

    #[test]
    fn before_26_nothing_is_said() {
        let v = on("25.4", "24E100");
        assert!(v.eligible, "{:#?}", v.reasons);
        assert!(v.notes.is_empty(), "{:#?}", v.notes);
        assert!(v.target_json().get("notes").is_none());
    }

    #[test]
    fn on_26_the_device_stays_eligible_with_a_deprecation_note() {
        for (version, build) in [("26.0", "23A341"), ("26.4", "23E200")] {
            let v = on(version, build);
            assert!(v.eligible, "{version}: {:#?}", v.reasons);
            assert_eq!(v.notes.len(), 1, "{version}");
            let n = &v.notes[0];
            assert_eq!(n.rule, rule::COMMAND_DEPRECATED);
            assert_eq!(
                n.message,
                format!(
                    "ScheduleOSUpdate is deprecated on iOS {version} (Apple schema: deprecated \
                     26.0, removed 27.0); the device still acts on it."
                )
            );
            assert_eq!(n.values["version"], version);
            // The journal records it with the target.
            assert_eq!(v.target_json()["notes"][0]["rule"], "command_deprecated");
        }
    }

    #[test]
    fn from_27_a_schedule_os_update_arm_excludes_the_device() {
        let v = on("27.0", "25A300");
        assert!(!v.eligible);
        assert_eq!(v.rules(), [rule::COMMAND_REMOVED], "{:#?}", v.reasons);
        let r = v.reason(rule::COMMAND_REMOVED).unwrap();
        assert_eq!(
            r.message,
            "ScheduleOSUpdate is removed on iOS 27.0 and later (Apple schema: removed 27.0); use \
             a DDM enforcement arm."
        );
        assert_eq!(r.values["removed"], "27.0");
        assert_eq!(r.values["schema"], SOFTWARE_UPDATE_COMMANDS[0].schema);
        assert!(v.notes.is_empty());
        // A beta of 27.0 has no ScheduleOSUpdate either.
        assert_eq!(on("27.0", "25A5279m").rules(), [rule::COMMAND_REMOVED]);
    }

    #[test]
    fn standing_follows_the_thresholds() {
        let c = lifetime("ScheduleOSUpdate").unwrap();
        let at = |v: &str| c.standing(&Version::parse(v).unwrap());
        assert_eq!(at("25.9.9"), Standing::Supported);
        assert_eq!(at("26.0"), Standing::Deprecated);
        assert_eq!(at("26.4"), Standing::Deprecated);
        assert_eq!(at("27.0"), Standing::Removed);
        assert_eq!(at("28.1"), Standing::Removed);
        assert_eq!(lifetime("DeviceInformation"), None);
    }

    /// The table says what the bundled Apple schema files say (`supportedOS.iOS`).
    #[test]
    fn the_thresholds_are_the_bundled_schemas() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for c in SOFTWARE_UPDATE_COMMANDS {
            let text = std::fs::read_to_string(root.join(c.schema)).unwrap();
            let y: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
            assert_eq!(y["payload"]["requesttype"], c.request_type, "{}", c.schema);
            let ios = &y["payload"]["supportedOS"]["iOS"];
            assert_eq!(ios["deprecated"], c.deprecated, "{}", c.request_type);
            assert_eq!(ios["removed"], c.removed, "{}", c.request_type);
        }
    }
}
