//! What an MDM's own records say, as the harness reads them through a backend: which store
//! answers (so that "absent from the records" can be weighed) and which ScheduleOSUpdates it
//! holds for a device. Shared by the embedded server (which makes them) and the client
//! backends (which read them), so neither imports the other.

use serde::{Deserialize, Serialize};

/// Which store this is and since when it keeps records: created with the store, never changed.
///
/// The one-dose rule rests on it: "this command is absent from the MDM's records" proves "it was
/// never queued" only when those records cover the moment the harness decided to send it — the
/// same store (an MDM restarted with an empty or another database has a new `store_id`) and an
/// intent no older than `created_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreIdentity {
    /// A random UUID, made when the store was created.
    pub store_id: String,
    /// When the store was created (RFC 3339, UTC).
    pub created_at: String,
}

/// A ScheduleOSUpdate the MDM's own records hold for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdmDose {
    pub command_uuid: String,
    /// When the MDM queued it (its own clock).
    pub queued_at: String,
    /// The device's build as last reported to this MDM before the command was queued (a
    /// DeviceInformation answer with `BuildVersion`), if any: tells a dose at an older build
    /// (the device has updated since) from one at its current build.
    pub build_before: Option<String>,
}
