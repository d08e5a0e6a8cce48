//! How the harness reaches a declarative-management (DDM) server: one trait, over HTTP.
//!
//! A DDM dose is not a queued command but a set of declarations the device fetches itself
//! (DDM brief §1): the server holds declarations, groups them in sets, and assigning a set to
//! an enrollment is what reaches the device (the server then enqueues a `DeclarativeManagement`
//! command through its MDM). The trait follows that shape, which is KMFDDM's (DDM brief §6), so
//! that the MDM's own record of what a device was given — the sets assigned to its enrollment,
//! the declarations in them — can be read back before every dose, as for ScheduleOSUpdate.
//!
//! Status reports come back raw (the JSON bytes the device sent): they are evidence, and the
//! `softwareupdate.*` items they carry are read by the harness, not by the server (KMFDDM drops
//! them from its parsed values, DDM brief §0.2).

use super::backend::{BackendError, BoxFuture};

/// Whether a mutating call changed the server's state (KMFDDM: HTTP 204 changed, 304 unchanged;
/// DDM brief §6: the code and quickstart agree on that reading, the openapi text reverses it for
/// `PUT /v1/declarations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Changed,
    Unchanged,
}

/// One status report as the server stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawStatusReport {
    /// The server's identifier of the report (KMFDDM: `X-Status-Report-ID`).
    pub id: String,
    /// When the server received it, as the server wrote it (KMFDDM: `Last-Modified`).
    pub received: Option<String>,
    /// The JSON bytes, exactly as stored.
    pub bytes: Vec<u8>,
}

/// A declaration's state on one enrollment, as the device last reported it
/// (`management.declarations`, DDM brief §1 "Errors").
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct DeclarationStatus {
    pub identifier: String,
    #[serde(default)]
    pub active: bool,
    /// `valid`, `invalid` or `unknown`.
    #[serde(default)]
    pub valid: String,
    #[serde(default, rename = "server-token")]
    pub server_token: String,
    /// The device has reported the server's current token for this declaration.
    #[serde(default)]
    pub current: Option<bool>,
    #[serde(default)]
    pub status_received: Option<String>,
    #[serde(default)]
    pub reasons: serde_json::Value,
}

/// At most this many stored reports are walked per call: a device reports on every change and
/// about daily (DDM brief §1 "Subscriptions"), so a follow-up poll sees a handful; the cap bounds
/// what a misbehaving server can make the harness fetch.
pub const MAX_REPORTS_PER_CALL: usize = 256;

/// A stored report or API answer larger than this is refused as garbage: real status reports
/// are a few kilobytes (DDM brief §1 example; KMFDDM's test data).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub trait DdmBackend: Send + Sync {
    fn kind(&self) -> &'static str;

    /// Store a declaration (a JSON object with `Type`, `Identifier`, `Payload`), new or
    /// replacing the one with that identifier. `notify: false` keeps the server from pushing the
    /// change to the enrollments that hold it (used while a set is being built).
    fn put_declaration<'a>(
        &'a self,
        declaration: &'a serde_json::Value,
        notify: bool,
    ) -> BoxFuture<'a, Result<Change, BackendError>>;

    /// The stored declaration with this identifier, `None` when the server has none.
    fn declaration<'a>(
        &'a self,
        identifier: &'a str,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, BackendError>>;

    /// Put a declaration into a set.
    fn add_to_set<'a>(
        &'a self,
        set: &'a str,
        identifier: &'a str,
        notify: bool,
    ) -> BoxFuture<'a, Result<Change, BackendError>>;

    /// The identifiers of the declarations in a set.
    fn set_declarations<'a>(
        &'a self,
        set: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, BackendError>>;

    /// Assign a set to one enrollment: the irreversible step, after which the server tells the
    /// device to sync.
    fn assign_set<'a>(
        &'a self,
        enrollment_id: &'a str,
        set: &'a str,
    ) -> BoxFuture<'a, Result<Change, BackendError>>;

    /// Take a set away from an enrollment (the device then removes its declarations).
    fn unassign_set<'a>(
        &'a self,
        enrollment_id: &'a str,
        set: &'a str,
    ) -> BoxFuture<'a, Result<Change, BackendError>>;

    /// The sets assigned to an enrollment: the MDM's own record of what the device was given.
    fn enrollment_sets<'a>(
        &'a self,
        enrollment_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, BackendError>>;

    /// What the device last reported of each declaration it holds.
    fn declaration_status<'a>(
        &'a self,
        enrollment_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<DeclarationStatus>, BackendError>>;

    /// The stored status reports received after the one with id `after` (all of them when
    /// `None`, at most [`MAX_REPORTS_PER_CALL`]), oldest first.
    fn status_reports<'a>(
        &'a self,
        enrollment_id: &'a str,
        after: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<RawStatusReport>, BackendError>>;
}
