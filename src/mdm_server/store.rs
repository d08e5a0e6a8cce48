//! The embedded MDM server's durable store: enrollments, the command queue, every delivery and
//! every device report.
//!
//! SQLite (rusqlite, bundled): one file a QA engineer can open with `sqlite3` to see exactly what
//! the server sent and received; WAL with `synchronous=FULL`, so a committed enqueue or report
//! survives a crash or `kill -9` of the server. Every change happens in one transaction that is
//! committed before the HTTP reply goes out.
//!
//! Queue rules (Apple "Sending MDM commands", brief mdm.md §3, and NanoMDM's semantics, §5.1):
//! any report other than `NotNow` ends a command for that enrollment; `NotNow` keeps it queued
//! but skipped while the device keeps answering `NotNow`, and an `Idle` makes it deliverable
//! again. Unlike NanoMDM's kv queue (§5.4) an answered command is never delivered again.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("MDM store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("MDM store file: {0}")]
    File(#[from] std::io::Error),
    #[error("command {0} already exists (CommandUUIDs must be unique)")]
    DuplicateCommand(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS enrollments (
    id TEXT PRIMARY KEY,
    topic TEXT,
    token BLOB,
    push_magic TEXT,
    unlock_token BLOB,
    cert_fingerprint TEXT,
    token_update_tally INTEGER NOT NULL DEFAULT 0,
    enabled INTEGER NOT NULL DEFAULT 1,
    authenticated_at TEXT,
    last_seen_at TEXT
);
CREATE TABLE IF NOT EXISTS commands (
    command_uuid TEXT PRIMARY KEY,
    request_type TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS queue (
    enrollment_id TEXT NOT NULL,
    command_uuid TEXT NOT NULL REFERENCES commands(command_uuid),
    seq INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    deliveries INTEGER NOT NULL DEFAULT 0,
    last_status TEXT,
    answered_at TEXT,
    PRIMARY KEY (enrollment_id, command_uuid)
);
CREATE INDEX IF NOT EXISTS queue_next ON queue (enrollment_id, state, seq);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    enrollment_id TEXT NOT NULL,
    command_uuid TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_by_enrollment ON deliveries (enrollment_id, command_uuid);
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    enrollment_id TEXT,
    command_uuid TEXT,
    status TEXT,
    raw BLOB NOT NULL,
    received_at TEXT NOT NULL,
    note TEXT
);
CREATE INDEX IF NOT EXISTS reports_by_enrollment ON reports (enrollment_id, command_uuid);
-- Every identity certificate ever bound, and to which enrollment: one certificate, one
-- enrollment, even after that enrollment re-bound to a newer certificate (as NanoMDM's
-- cert_auth_associations refuse a hash already seen).
CREATE TABLE IF NOT EXISTS cert_bindings (
    fingerprint TEXT PRIMARY KEY,
    enrollment_id TEXT NOT NULL,
    bound_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkins (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    enrollment_id TEXT,
    message_type TEXT,
    raw BLOB NOT NULL,
    received_at TEXT NOT NULL
);
"#;

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enrollment {
    pub id: String,
    pub topic: Option<String>,
    #[serde(skip)]
    pub token: Option<Vec<u8>>,
    #[serde(skip)]
    pub push_magic: Option<String>,
    pub cert_fingerprint: Option<String>,
    pub token_update_tally: u64,
    pub enabled: bool,
    pub authenticated_at: Option<String>,
    pub last_seen_at: Option<String>,
}

impl Enrollment {
    /// Push needs a token and PushMagic: only after the first TokenUpdate (brief §4).
    pub fn pushable(&self) -> bool {
        self.enabled && self.token.is_some() && self.push_magic.is_some()
    }
}

/// What the store made of a device's report on a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportFate {
    /// A first answer for a queued command.
    Recorded,
    /// The command was already answered: the device sent a status twice (Apple allows it).
    Duplicate,
    /// No such command was queued for this enrollment.
    UnknownCommand,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    pub at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReportRecord {
    pub id: i64,
    /// Set in the rejected-reports list (where reports of every enrollment are mixed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrollment_id: Option<String>,
    pub status: Option<String>,
    pub received_at: String,
    pub note: Option<String>,
    /// The device's plist exactly as received (base64 in JSON).
    #[serde(rename = "raw_base64", serialize_with = "base64_bytes")]
    pub raw: Vec<u8>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandHistory {
    pub command_uuid: String,
    pub request_type: String,
    pub queued_at: String,
    /// pending | notnow | done
    pub state: String,
    pub last_status: Option<String>,
    pub deliveries: Vec<DeliveryRecord>,
    pub reports: Vec<ReportRecord>,
}

/// Where a report or a delivery sits in an enrollment's history (`history_since`).
#[derive(Debug, Clone, Serialize)]
pub struct HistoryPlace {
    pub enrollment_id: String,
    pub command_uuid: String,
    pub request_type: String,
    pub queued_at: String,
    /// The command's place in the enrollment's queue (`history` lists commands in this order).
    pub seq: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryReport {
    #[serde(flatten)]
    pub place: HistoryPlace,
    #[serde(flatten)]
    pub report: ReportRecord,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryDelivery {
    /// The store's number for the delivery (the cursor `deliveries_after` counts these).
    pub id: i64,
    #[serde(flatten)]
    pub place: HistoryPlace,
    pub at: String,
}

/// What the histories gained since a cursor (`Store::history_since`), and the cursor to ask
/// from next (`more`: a page was full, ask again at once).
#[derive(Debug, Clone, Serialize)]
pub struct HistorySince {
    pub reports_after: i64,
    pub deliveries_after: i64,
    pub more: bool,
    pub reports: Vec<HistoryReport>,
    pub deliveries: Vec<HistoryDelivery>,
}

fn base64_bytes<S: serde::Serializer>(b: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    use base64::Engine;
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
}

pub use crate::mdm::records::StoreIdentity;

pub struct Store {
    conn: Mutex<Connection>,
    identity: StoreIdentity,
}

impl Store {
    /// Open (or create, owner-only: see [`crate::private_fs::create_owner_only`]) the store in `path`.
    pub fn open(path: &Path) -> Result<Store> {
        crate::private_fs::create_owner_only(path)?;
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Store> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(super::ddm::SCHEMA)?;
        conn.execute_batch(super::user_channel::SCHEMA)?;
        let mut conn = conn;
        let identity = Self::identity_of(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
            identity,
        })
    }

    /// The store's identity, made (in one transaction) the first time the database is opened.
    fn identity_of(conn: &mut Connection) -> Result<StoreIdentity> {
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?1)",
            params![crate::rng::uuid_v4().to_lowercase()],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('created_at', ?1)",
            params![now()],
        )?;
        let get = |k: &str| -> Result<String> {
            Ok(
                tx.query_row("SELECT value FROM meta WHERE key = ?1", params![k], |r| {
                    r.get(0)
                })?,
            )
        };
        let identity = StoreIdentity {
            store_id: get("store_id")?,
            created_at: get("created_at")?,
        };
        tx.commit()?;
        Ok(identity)
    }

    /// Which store this is and since when it keeps records.
    pub fn identity(&self) -> &StoreIdentity {
        &self.identity
    }

    pub(super) fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        // A panic while holding the lock would poison it; the connection itself is still
        // consistent (SQLite rolled the transaction back), so keep going.
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut c)
    }

    pub fn record_checkin(&self, id: Option<&str>, message_type: &str, raw: &[u8]) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO checkins (enrollment_id, message_type, raw, received_at) VALUES (?1, ?2, ?3, ?4)",
                params![id, message_type, raw, now()],
            )?;
            Ok(())
        })
    }

    /// Claim `fingerprint` for enrollment `id`; returns the enrollment that holds it, which is
    /// `id` unless another enrollment claimed it first (then the caller refuses). Atomic, so two
    /// concurrent Authenticates with one certificate cannot both win.
    pub fn claim_certificate(&self, fingerprint: &str, id: &str) -> Result<String> {
        self.with(|c| {
            c.execute(
                "INSERT INTO cert_bindings (fingerprint, enrollment_id, bound_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(fingerprint) DO NOTHING",
                params![fingerprint, id, now()],
            )?;
            Ok(c.query_row(
                "SELECT enrollment_id FROM cert_bindings WHERE fingerprint = ?1",
                params![fingerprint],
                |r| r.get(0),
            )?)
        })
    }

    /// Authenticate: (re)create the enrollment and bind its identity certificate.
    pub fn authenticate(
        &self,
        id: &str,
        topic: &str,
        cert_fingerprint: Option<&str>,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO enrollments (id, topic, cert_fingerprint, enabled, authenticated_at, last_seen_at, token, push_magic, token_update_tally)
                 VALUES (?1, ?2, ?3, 1, ?4, ?4, NULL, NULL, 0)
                 ON CONFLICT(id) DO UPDATE SET topic = ?2, cert_fingerprint = ?3, enabled = 1,
                    authenticated_at = ?4, last_seen_at = ?4, token = NULL, push_magic = NULL, token_update_tally = 0",
                params![id, topic, cert_fingerprint, now()],
            )?;
            Ok(())
        })
    }

    /// TokenUpdate: store the push token and PushMagic; returns the tally (1 on the first).
    pub fn token_update(
        &self,
        id: &str,
        topic: &str,
        token: &[u8],
        push_magic: &str,
        unlock_token: Option<&[u8]>,
    ) -> Result<u64> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO enrollments (id, topic, token, push_magic, unlock_token, token_update_tally, enabled, last_seen_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 1, 1, ?6)
                 ON CONFLICT(id) DO UPDATE SET topic = ?2, token = ?3, push_magic = ?4,
                    unlock_token = COALESCE(?5, unlock_token), enabled = 1,
                    token_update_tally = token_update_tally + 1, last_seen_at = ?6",
                params![id, topic, token, push_magic, unlock_token, now()],
            )?;
            let tally: i64 = tx.query_row(
                "SELECT token_update_tally FROM enrollments WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )?;
            tx.commit()?;
            Ok(tally as u64)
        })
    }

    pub fn check_out(&self, id: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE enrollments SET enabled = 0, last_seen_at = ?2 WHERE id = ?1",
                params![id, now()],
            )?;
            Ok(())
        })
    }

    fn row_to_enrollment(r: &rusqlite::Row<'_>) -> rusqlite::Result<Enrollment> {
        Ok(Enrollment {
            id: r.get(0)?,
            topic: r.get(1)?,
            token: r.get(2)?,
            push_magic: r.get(3)?,
            cert_fingerprint: r.get(4)?,
            token_update_tally: r.get::<_, i64>(5)? as u64,
            enabled: r.get::<_, i64>(6)? != 0,
            authenticated_at: r.get(7)?,
            last_seen_at: r.get(8)?,
        })
    }

    const ENROLLMENT_COLS: &'static str = "id, topic, token, push_magic, cert_fingerprint, token_update_tally, enabled, authenticated_at, last_seen_at";

    pub fn enrollment(&self, id: &str) -> Result<Option<Enrollment>> {
        self.with(|c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {} FROM enrollments WHERE id = ?1",
                    Self::ENROLLMENT_COLS
                ),
                params![id],
                Self::row_to_enrollment,
            )
            .optional()?)
        })
    }

    pub fn enrollments(&self) -> Result<Vec<Enrollment>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {} FROM enrollments ORDER BY id",
                Self::ENROLLMENT_COLS
            ))?;
            let rows = st.query_map([], Self::row_to_enrollment)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub fn touch(&self, id: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE enrollments SET last_seen_at = ?2 WHERE id = ?1",
                params![id, now()],
            )?;
            Ok(())
        })
    }

    /// Queue a command for enrollments. The raw plist is stored as given and sent verbatim.
    pub fn enqueue(
        &self,
        ids: &[String],
        command_uuid: &str,
        request_type: &str,
        payload: &[u8],
    ) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            let exists: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM commands WHERE command_uuid = ?1",
                    params![command_uuid],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_some() {
                return Err(StoreError::DuplicateCommand(command_uuid.to_string()));
            }
            let at = now();
            tx.execute(
                "INSERT INTO commands (command_uuid, request_type, payload, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![command_uuid, request_type, payload, at],
            )?;
            for id in ids {
                let seq: i64 = tx.query_row(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM queue WHERE enrollment_id = ?1",
                    params![id],
                    |r| r.get(0),
                )?;
                tx.execute(
                    "INSERT INTO queue (enrollment_id, command_uuid, seq) VALUES (?1, ?2, ?3)",
                    params![id, command_uuid, seq],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// The next command for an enrollment, recorded as delivered. `after_not_now`: the device's
    /// current report is `NotNow`, so commands it deferred are skipped for now.
    pub fn next_command(&self, id: &str, after_not_now: bool) -> Result<Option<(String, Vec<u8>)>> {
        self.with(|c| {
            let tx = c.transaction()?;
            let sql = if after_not_now {
                "SELECT q.command_uuid, c.payload FROM queue q JOIN commands c USING (command_uuid)
                 WHERE q.enrollment_id = ?1 AND q.state = 'pending' ORDER BY q.seq LIMIT 1"
            } else {
                "SELECT q.command_uuid, c.payload FROM queue q JOIN commands c USING (command_uuid)
                 WHERE q.enrollment_id = ?1 AND q.state IN ('pending', 'notnow') ORDER BY q.seq LIMIT 1"
            };
            let next: Option<(String, Vec<u8>)> = tx
                .query_row(sql, params![id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((uuid, _)) = &next {
                let at = now();
                tx.execute(
                    "UPDATE queue SET deliveries = deliveries + 1 WHERE enrollment_id = ?1 AND command_uuid = ?2",
                    params![id, uuid],
                )?;
                tx.execute(
                    "INSERT INTO deliveries (enrollment_id, command_uuid, at) VALUES (?1, ?2, ?3)",
                    params![id, uuid, at],
                )?;
            }
            tx.commit()?;
            Ok(next)
        })
    }

    /// Record a device report (raw bytes kept). For a command report, update the queue.
    pub fn record_report(
        &self,
        id: Option<&str>,
        command_uuid: Option<&str>,
        status: Option<&str>,
        raw: &[u8],
        note: Option<&str>,
    ) -> Result<ReportFate> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut fate = ReportFate::Recorded;
            if let (Some(id), Some(uuid), Some(status)) = (id, command_uuid, status) {
                let state: Option<String> = tx
                    .query_row(
                        "SELECT state FROM queue WHERE enrollment_id = ?1 AND command_uuid = ?2",
                        params![id, uuid],
                        |r| r.get(0),
                    )
                    .optional()?;
                fate = match state.as_deref() {
                    None => ReportFate::UnknownCommand,
                    Some("done") => ReportFate::Duplicate,
                    Some(_) => {
                        let new_state = if status == "NotNow" { "notnow" } else { "done" };
                        tx.execute(
                            "UPDATE queue SET state = ?3, last_status = ?4,
                                answered_at = CASE WHEN ?3 = 'done' THEN ?5 ELSE answered_at END
                             WHERE enrollment_id = ?1 AND command_uuid = ?2",
                            params![id, uuid, new_state, status, now()],
                        )?;
                        ReportFate::Recorded
                    }
                };
            }
            let note = match (fate, note) {
                (ReportFate::Recorded, n) => n.map(str::to_string),
                (ReportFate::Duplicate, n) => Some(format!("duplicate report{}", n.map(|x| format!("; {x}")).unwrap_or_default())),
                (ReportFate::UnknownCommand, n) => Some(format!("unknown command{}", n.map(|x| format!("; {x}")).unwrap_or_default())),
            };
            tx.execute(
                "INSERT INTO reports (enrollment_id, command_uuid, status, raw, received_at, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, command_uuid, status, raw, now(), note],
            )?;
            if let Some(id) = id {
                tx.execute(
                    "UPDATE enrollments SET last_seen_at = ?2 WHERE id = ?1",
                    params![id, now()],
                )?;
            }
            tx.commit()?;
            Ok(fate)
        })
    }

    /// Every command queued for an enrollment with its deliveries and reports, oldest first.
    pub fn history(&self, id: &str) -> Result<Vec<CommandHistory>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT q.command_uuid, c.request_type, c.created_at, q.state, q.last_status
                 FROM queue q JOIN commands c USING (command_uuid)
                 WHERE q.enrollment_id = ?1 ORDER BY q.seq",
            )?;
            let cmds = st
                .query_map(params![id], |r| {
                    Ok(CommandHistory {
                        command_uuid: r.get(0)?,
                        request_type: r.get(1)?,
                        queued_at: r.get(2)?,
                        state: r.get(3)?,
                        last_status: r.get(4)?,
                        deliveries: Vec::new(),
                        reports: Vec::new(),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut out = Vec::with_capacity(cmds.len());
            let mut dst = c.prepare(
                "SELECT at FROM deliveries WHERE enrollment_id = ?1 AND command_uuid = ?2 ORDER BY id",
            )?;
            let mut rst = c.prepare(
                "SELECT id, status, received_at, note, raw FROM reports WHERE enrollment_id = ?1 AND command_uuid = ?2 ORDER BY id",
            )?;
            for mut h in cmds {
                h.deliveries = dst
                    .query_map(params![id, h.command_uuid], |r| Ok(DeliveryRecord { at: r.get(0)? }))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                h.reports = rst
                    .query_map(params![id, h.command_uuid], report_record)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                out.push(h);
            }
            Ok(out)
        })
    }

    /// What every enrollment's history (`history`) gained since a cursor: the reports numbered
    /// above `reports_after` and the deliveries numbered above `deliveries_after`, at most
    /// `limit` of each, oldest first, each with its command's place in the enrollment's
    /// history. `lab`'s own extension (`GET /v1/history?…`): a follow-up round reads what is
    /// new for the whole lab in one call instead of every device's whole history.
    pub fn history_since(
        &self,
        reports_after: i64,
        deliveries_after: i64,
        limit: u32,
    ) -> Result<HistorySince> {
        self.with(|c| {
            // Only reports and deliveries of a command queued for that enrollment: what
            // `history` shows (a report of an unknown command is in the rejected list).
            let mut st = c.prepare(
                "SELECT r.id, r.status, r.received_at, r.note, r.raw,
                        r.enrollment_id, r.command_uuid, c.request_type, c.created_at, q.seq
                 FROM reports r
                 JOIN queue q ON q.enrollment_id = r.enrollment_id AND q.command_uuid = r.command_uuid
                 JOIN commands c ON c.command_uuid = r.command_uuid
                 WHERE r.id > ?1 ORDER BY r.id LIMIT ?2",
            )?;
            let reports = st
                .query_map(params![reports_after, limit], |r| {
                    Ok(HistoryReport {
                        place: HistoryPlace {
                            enrollment_id: r.get(5)?,
                            command_uuid: r.get(6)?,
                            request_type: r.get(7)?,
                            queued_at: r.get(8)?,
                            seq: r.get(9)?,
                        },
                        report: report_record(r)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut st = c.prepare(
                "SELECT d.id, d.enrollment_id, d.command_uuid, c.request_type, c.created_at, q.seq, d.at
                 FROM deliveries d
                 JOIN queue q ON q.enrollment_id = d.enrollment_id AND q.command_uuid = d.command_uuid
                 JOIN commands c ON c.command_uuid = d.command_uuid
                 WHERE d.id > ?1 ORDER BY d.id LIMIT ?2",
            )?;
            let deliveries = st
                .query_map(params![deliveries_after, limit], |r| {
                    Ok(HistoryDelivery {
                        id: r.get(0)?,
                        place: HistoryPlace {
                            enrollment_id: r.get(1)?,
                            command_uuid: r.get(2)?,
                            request_type: r.get(3)?,
                            queued_at: r.get(4)?,
                            seq: r.get(5)?,
                        },
                        at: r.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let more = reports.len() as u64 >= u64::from(limit)
                || deliveries.len() as u64 >= u64::from(limit);
            Ok(HistorySince {
                reports_after: reports.last().map_or(reports_after, |r| r.report.id),
                deliveries_after: deliveries.last().map_or(deliveries_after, |d| d.id),
                more,
                reports,
                deliveries,
            })
        })
    }

    /// The enrollment whose identity certificate has this fingerprint, if any.
    pub fn enrollment_by_fingerprint(&self, fingerprint: &str) -> Result<Option<String>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT id FROM enrollments WHERE cert_fingerprint = ?1 LIMIT 1",
                params![fingerprint],
                |r| r.get(0),
            )
            .optional()?)
        })
    }

    /// Reports the server could not attribute to a queued command (malformed, unknown UUID),
    /// of one enrollment or all, numbered above `after` (so a poller asks only for new ones).
    pub fn rejected_reports(&self, id: Option<&str>, after: i64) -> Result<Vec<ReportRecord>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, status, received_at, note, raw, enrollment_id FROM reports
                 WHERE note IS NOT NULL AND (?1 IS NULL OR enrollment_id = ?1) AND id > ?2
                 ORDER BY id",
            )?;
            let rows = st.query_map(params![id, after], |r| {
                Ok(ReportRecord {
                    id: r.get(0)?,
                    enrollment_id: r.get(5)?,
                    status: r.get(1)?,
                    received_at: r.get(2)?,
                    note: r.get(3)?,
                    raw: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// How many commands are still waiting (pending or NotNow) for an enrollment.
    pub fn queued_count(&self, id: &str) -> Result<u64> {
        self.with(|c| {
            let n: i64 = c.query_row(
                "SELECT COUNT(*) FROM queue WHERE enrollment_id = ?1 AND state != 'done'",
                params![id],
                |r| r.get(0),
            )?;
            Ok(n as u64)
        })
    }
}

/// A report from a row whose first columns are `id, status, received_at, note, raw` (both
/// history reads select them so).
fn report_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReportRecord> {
    Ok(ReportRecord {
        id: r.get(0)?,
        enrollment_id: None,
        status: r.get(1)?,
        received_at: r.get(2)?,
        note: r.get(3)?,
        raw: r.get(4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_store_identity_is_made_once_and_kept_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mdm.db");
        let first = Store::open(&path).unwrap().identity().clone();
        assert_eq!(first.store_id.len(), 36, "{first:?}");
        assert!(chrono::DateTime::parse_from_rfc3339(&first.created_at).is_ok());
        let again = Store::open(&path).unwrap().identity().clone();
        assert_eq!(first, again, "reopening a database keeps its identity");
        let other = Store::open_in_memory().unwrap().identity().clone();
        assert_ne!(
            first.store_id, other.store_id,
            "a new store, a new identity"
        );
    }

    #[test]
    fn enrollment_lifecycle() {
        let s = Store::open_in_memory().unwrap();
        s.authenticate("U1", "com.apple.mgmt.x", Some("fp"))
            .unwrap();
        let e = s.enrollment("U1").unwrap().unwrap();
        assert!(!e.pushable(), "no push before the first TokenUpdate");
        assert_eq!(
            s.token_update("U1", "com.apple.mgmt.x", b"tok", "magic", None)
                .unwrap(),
            1
        );
        assert_eq!(
            s.token_update("U1", "com.apple.mgmt.x", b"tok", "magic", None)
                .unwrap(),
            2
        );
        assert!(s.enrollment("U1").unwrap().unwrap().pushable());
        s.check_out("U1").unwrap();
        assert!(!s.enrollment("U1").unwrap().unwrap().pushable());
    }

    #[test]
    fn queue_order_notnow_and_no_redelivery_of_answered_commands() {
        let s = Store::open_in_memory().unwrap();
        s.enqueue(&ids(&["U"]), "A", "ScheduleOSUpdate", b"a")
            .unwrap();
        s.enqueue(&ids(&["U"]), "B", "OSUpdateStatus", b"b")
            .unwrap();
        // The NanoMDM kv sequence of brief §5.4 must not re-deliver an answered command.
        assert_eq!(s.next_command("U", false).unwrap().unwrap().0, "A"); // Idle → A
        s.record_report(Some("U"), Some("A"), Some("NotNow"), b"r", None)
            .unwrap();
        assert_eq!(s.next_command("U", true).unwrap().unwrap().0, "B"); // NotNow(A) → B
        s.record_report(Some("U"), Some("B"), Some("Acknowledged"), b"r", None)
            .unwrap();
        assert_eq!(s.next_command("U", false).unwrap().unwrap().0, "A"); // Ack(B) → A
        s.record_report(Some("U"), Some("A"), Some("Acknowledged"), b"r", None)
            .unwrap();
        assert_eq!(s.next_command("U", false).unwrap(), None); // Ack(A) → nothing
        assert_eq!(s.queued_count("U").unwrap(), 0);
        let h = s.history("U").unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].deliveries.len(), 2);
        assert_eq!(h[0].reports.len(), 2);
        assert_eq!(h[0].state, "done");
    }

    #[test]
    fn duplicates_and_unknown_commands_are_recorded_not_applied() {
        let s = Store::open_in_memory().unwrap();
        s.enqueue(&ids(&["U", "V"]), "A", "DeviceInformation", b"a")
            .unwrap();
        assert!(matches!(
            s.enqueue(&ids(&["U"]), "A", "DeviceInformation", b"a"),
            Err(StoreError::DuplicateCommand(_))
        ));
        s.next_command("U", false).unwrap();
        assert_eq!(
            s.record_report(Some("U"), Some("A"), Some("Acknowledged"), b"1", None)
                .unwrap(),
            ReportFate::Recorded
        );
        assert_eq!(
            s.record_report(Some("U"), Some("A"), Some("Acknowledged"), b"2", None)
                .unwrap(),
            ReportFate::Duplicate
        );
        assert_eq!(
            s.record_report(Some("U"), Some("Z"), Some("Acknowledged"), b"3", None)
                .unwrap(),
            ReportFate::UnknownCommand
        );
        // V still has its own copy of A.
        assert_eq!(s.queued_count("V").unwrap(), 1);
        let rejected = s.rejected_reports(Some("U"), 0).unwrap();
        assert_eq!(rejected.len(), 2);
        assert_eq!(rejected[1].raw, b"3");
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mdm.sqlite");
        {
            let s = Store::open(&p).unwrap();
            s.enqueue(&ids(&["U"]), "A", "SecurityInfo", b"a").unwrap();
            s.enqueue(&ids(&["U"]), "B", "SecurityInfo", b"b").unwrap();
            s.next_command("U", false).unwrap();
            s.record_report(Some("U"), Some("A"), Some("Acknowledged"), b"ra", None)
                .unwrap();
        }
        let s = Store::open(&p).unwrap();
        assert_eq!(s.next_command("U", false).unwrap().unwrap().0, "B");
        assert_eq!(s.history("U").unwrap()[0].reports[0].raw, b"ra");
    }

    #[test]
    fn the_store_and_its_wal_and_shm_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("mdm.sqlite");
        let s = Store::open(&db).unwrap();
        // A write creates the -wal; WAL mode keeps -shm open alongside.
        s.enqueue(&["U".to_string()], "A", "SecurityInfo", b"secret")
            .unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let p = dir.path().join(format!("mdm.sqlite{suffix}"));
            assert!(p.exists(), "{} exists while the store is open", p.display());
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is owner-only", p.display());
        }
    }
}
