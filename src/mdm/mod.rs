//! The MDM protocol model: pure data, no servers, no network.
//!
//! - [`command`]: server → device commands (ScheduleOSUpdate, OSUpdateStatus,
//!   AvailableOSUpdates, DeviceInformation, SecurityInfo), their plist envelope and MicroMDM's
//!   JSON body, and the enqueue-time envelope check.
//! - [`report`]: device → server reports, read leniently and kept byte-for-byte as evidence.
//! - [`checkin`]: Authenticate / TokenUpdate / CheckOut check-in messages.
//! - [`schema`]: validation of commands against Apple's schema YAML for a target iOS version.
//! - [`webhook`]: MicroMDM-format webhook events (NanoMDM, MicroMDM) and their HMAC signature.
//! - [`user_channel`]: a Shared iPad's user channel (its check-in keys, an MDM's record of it).
//! - [`records`]: what an MDM's own records say (store identity, the ScheduleOSUpdates it holds).
//!
//! Facts come from the MDM brief (`shared/briefs/mdm.md`, cited as "MDM brief §N") and from
//! Apple's `apple/device-management` schema files bundled in `data/apple-device-management/`
//! (MIT-style licence in `data/apple-device-management/LICENSE.txt`).

/// The NanoMDM API user name (brief §5.1): the HTTP Basic user of the operator API. Part of the
/// protocol model because both sides speak it: the client backends send it, the embedded server
/// checks it.
pub const API_USER: &str = "nanomdm";

pub mod checkin;
pub mod command;
pub mod ddm;
pub mod records;
pub mod report;
pub mod schema;
pub mod user_channel;
pub mod webhook;

pub use checkin::{
    CHECKIN_CONTENT_TYPE, COMMAND_CONTENT_TYPE, CheckinError, CheckinMessage, parse_checkin,
};
pub use command::{
    BASELINE_QUERIES, Command, CommandError, EnvelopeInfo, InstallAction, UpdateItem,
    parse_envelope,
};
pub use report::{
    AvailableUpdate, ErrorChainItem, Lenient, OsUpdateStatusItem, Report, ReportError,
    ReportStatus, UpdateResult, available_os_updates, error_chain, lenient_bool, lenient_real,
    os_update_status, parse_report, query_responses, report_dict, security_info, update_results,
};
pub use schema::{
    SchemaViolation, ViolationKind, deprecation_note, known_request_types, validate_command,
};
pub use webhook::{AcknowledgeEvent, CheckinEvent, Ids, WebhookEvent, hmac_signature, verify_hmac};

// The harness's side of an MDM: backends and the webhook listener (I/O at the edge).
pub mod access;
pub mod backend;
pub mod ddm_backend;
pub mod ddm_doses;
pub mod deliveries;
pub mod kmfddm;
pub mod memory;
pub mod micromdm;
pub mod webhook_receiver;
