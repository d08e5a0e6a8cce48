//! Declarative Device Management in the embedded MDM server (DDM brief §1, issue 13).
//!
//! Device side: the `DeclarativeManagement` check-in (`mdm/checkin/declarativemanagement.yaml`)
//! arrives on the check-in endpoint like any other; [`answer_checkin`] answers its `Endpoint`:
//! `tokens` → the tokens document, `declaration-items` → the manifest,
//! `declaration/<kind>/<Identifier>` → the declaration JSON (404 when absent: the device then
//! deletes its copy), `status` → the report in `Data` is stored byte for byte and answered with
//! an empty 200 (only a 200 counts as delivered, DDM brief §1).
//!
//! Each enrollment's declaration set is the operator's declarations plus two `lab` always
//! serves: a status-subscriptions configuration ([`SUBSCRIPTIONS_ID`]) for
//! [`SUBSCRIBED_ITEMS`], and a simple activation ([`ACTIVATION_ID`]) naming every
//! configuration of the set, so a configuration is active as soon as it is put. Every
//! declaration's `ServerToken` is a hash of its content, and the enrollment's
//! `DeclarationsToken` a hash of the set's (Identifier, ServerToken) pairs: both change exactly
//! when the content changes (`declarative/protocol/declarationitemsresponse.yaml`).
//!
//! Operator side (HTTP Basic, user `nanomdm`, the API key): see `http.rs` for the routes; the
//! store functions are here. Tables live in the same SQLite file as the queue, with the same
//! durability (one transaction per change, committed before the reply).

use super::store::{Result, Store};
use crate::mdm::ddm::declaration::{
    ACTIVATION_SIMPLE, ActivationSimple, Declaration, DeclarationKind, STATUS_SUBSCRIPTIONS,
    StatusSubscriptions, declaration_of,
};
use crate::mdm::ddm::protocol::{DdmCheckin, DeclarationItems, Endpoint, TokensResponse};
use crate::mdm::ddm::status::{SUBSCRIBED_ITEMS, StatusReport};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The activation `lab` serves to every DDM enrollment.
pub const ACTIVATION_ID: &str = "lab.activation";
/// The status-subscriptions configuration `lab` serves to every DDM enrollment.
pub const SUBSCRIPTIONS_ID: &str = "lab.status-subscriptions";

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS ddm_declarations (
    enrollment_id TEXT NOT NULL,
    identifier TEXT NOT NULL,
    type TEXT NOT NULL,
    server_token TEXT NOT NULL,
    json BLOB NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (enrollment_id, identifier)
);
CREATE TABLE IF NOT EXISTS ddm_status (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    enrollment_id TEXT NOT NULL,
    raw BLOB NOT NULL,
    full_report INTEGER NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ddm_status_by_enrollment ON ddm_status (enrollment_id, id);
CREATE TABLE IF NOT EXISTS ddm_checkins (
    enrollment_id TEXT PRIMARY KEY,
    first_at TEXT NOT NULL,
    last_at TEXT NOT NULL,
    last_endpoint TEXT NOT NULL
);
"#;

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// One stored status report, as the history API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRecord {
    pub seq: i64,
    pub received_at: String,
    pub full_report: bool,
    /// The JSON bytes the device sent, base64.
    #[serde(serialize_with = "base64_bytes")]
    pub raw: Vec<u8>,
}

fn base64_bytes<S: serde::Serializer>(b: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    use base64::Engine;
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
}

/// An enrollment's DDM state, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DdmSummary {
    pub enrollment_id: String,
    /// A `DeclarativeManagement` check-in has been seen: DDM is on (it cannot be turned off,
    /// DDM brief §1).
    pub active: bool,
    pub first_checkin_at: Option<String>,
    pub last_checkin_at: Option<String>,
    pub last_endpoint: Option<String>,
    pub declarations_token: String,
    pub declarations: Vec<Declaration>,
}

/// What a put changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PutOutcome {
    pub identifier: String,
    pub server_token: String,
    /// False when the same content was already there (the token does not move).
    pub changed: bool,
    pub declarations_token: String,
}

impl Store {
    /// Put (or replace) an operator declaration for `id`; its `ServerToken` is recomputed from
    /// the content (any supplied value is ignored, as KMFDDM does, DDM brief §6).
    pub fn ddm_put(&self, id: &str, d: &Declaration) -> Result<PutOutcome> {
        let d = d.clone().with_content_token();
        let changed = self.with(|c| {
            let tx = c.transaction()?;
            let old: Option<String> = tx
                .query_row(
                    "SELECT server_token FROM ddm_declarations WHERE enrollment_id = ?1 AND identifier = ?2",
                    params![id, d.identifier],
                    |r| r.get(0),
                )
                .optional()?;
            let changed = old.as_deref() != Some(d.server_token.as_str());
            if changed {
                tx.execute(
                    "INSERT OR REPLACE INTO ddm_declarations (enrollment_id, identifier, type, server_token, json, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![id, d.identifier, d.declaration_type, d.server_token, d.to_json(), now()],
                )?;
            }
            tx.commit()?;
            Ok(changed)
        })?;
        Ok(PutOutcome {
            identifier: d.identifier.clone(),
            server_token: d.server_token.clone(),
            changed,
            declarations_token: self.ddm_token(id)?,
        })
    }

    /// Remove an operator declaration; true if it was there.
    pub fn ddm_remove(&self, id: &str, identifier: &str) -> Result<bool> {
        self.with(|c| {
            let n = c.execute(
                "DELETE FROM ddm_declarations WHERE enrollment_id = ?1 AND identifier = ?2",
                params![id, identifier],
            )?;
            Ok(n > 0)
        })
    }

    /// The operator's declarations for `id`, by identifier.
    pub fn ddm_operator_declarations(&self, id: &str) -> Result<Vec<Declaration>> {
        let raws: Vec<Vec<u8>> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT json FROM ddm_declarations WHERE enrollment_id = ?1 ORDER BY identifier",
            )?;
            let rows = st.query_map(params![id], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        // Stored by `ddm_put` after validation, so every row parses.
        Ok(raws
            .iter()
            .filter_map(|r| Declaration::parse(r, true).ok())
            .collect())
    }

    /// The whole set served to `id`: lab's subscriptions, the operator's declarations, and an
    /// activation naming every configuration.
    pub fn ddm_declarations(&self, id: &str) -> Result<Vec<Declaration>> {
        Ok(served_set(self.ddm_operator_declarations(id)?))
    }

    /// The enrollment's `DeclarationsToken`.
    pub fn ddm_token(&self, id: &str) -> Result<String> {
        Ok(declarations_token(&self.ddm_declarations(id)?))
    }

    fn ddm_saw_checkin(&self, id: &str, endpoint: &str) -> Result<()> {
        self.with(|c| {
            let t = now();
            c.execute(
                "INSERT INTO ddm_checkins (enrollment_id, first_at, last_at, last_endpoint) VALUES (?1, ?2, ?2, ?3)
                 ON CONFLICT (enrollment_id) DO UPDATE SET last_at = ?2, last_endpoint = ?3",
                params![id, t, endpoint],
            )?;
            Ok(())
        })
    }

    fn ddm_record_status(&self, id: &str, raw: &[u8], full_report: bool) -> Result<i64> {
        self.with(|c| {
            c.execute(
                "INSERT INTO ddm_status (enrollment_id, raw, full_report, received_at) VALUES (?1, ?2, ?3, ?4)",
                params![id, raw, full_report, now()],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Every status report of `id` after sequence number `after`, oldest first.
    pub fn ddm_status_history(&self, id: &str, after: i64) -> Result<Vec<StatusRecord>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, received_at, full_report, raw FROM ddm_status WHERE enrollment_id = ?1 AND id > ?2 ORDER BY id",
            )?;
            let rows = st.query_map(params![id, after], |r| {
                Ok(StatusRecord {
                    seq: r.get(0)?,
                    received_at: r.get(1)?,
                    full_report: r.get(2)?,
                    raw: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub fn ddm_summary(&self, id: &str) -> Result<DdmSummary> {
        let seen: Option<(String, String, String)> = self.with(|c| {
            Ok(c.query_row(
                "SELECT first_at, last_at, last_endpoint FROM ddm_checkins WHERE enrollment_id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
        })?;
        let declarations = self.ddm_declarations(id)?;
        let (first, last, endpoint) = match seen {
            Some((a, b, c)) => (Some(a), Some(b), Some(c)),
            None => (None, None, None),
        };
        Ok(DdmSummary {
            enrollment_id: id.into(),
            active: first.is_some(),
            first_checkin_at: first,
            last_checkin_at: last,
            last_endpoint: endpoint,
            declarations_token: declarations_token(&declarations),
            declarations,
        })
    }
}

/// lab's subscriptions + `operator` + an activation of every configuration (pure).
pub fn served_set(operator: Vec<Declaration>) -> Vec<Declaration> {
    let subs = declaration_of(
        STATUS_SUBSCRIPTIONS,
        SUBSCRIPTIONS_ID,
        &StatusSubscriptions::of(SUBSCRIBED_ITEMS),
    );
    let mut set = vec![subs];
    set.extend(
        operator
            .into_iter()
            .filter(|d| d.identifier != SUBSCRIPTIONS_ID && d.identifier != ACTIVATION_ID),
    );
    let configurations = set
        .iter()
        .filter(|d| d.kind() == Some(DeclarationKind::Configuration))
        .map(|d| d.identifier.clone())
        .collect();
    set.push(declaration_of(
        ACTIVATION_SIMPLE,
        ACTIVATION_ID,
        &ActivationSimple {
            standard_configurations: configurations,
            predicate: None,
        },
    ));
    set
}

/// SHA-256 over the sorted (Identifier, ServerToken) pairs, first 16 bytes as hex (pure).
pub fn declarations_token(set: &[Declaration]) -> String {
    let mut pairs: Vec<(&str, &str)> = set
        .iter()
        .map(|d| (d.identifier.as_str(), d.server_token.as_str()))
        .collect();
    pairs.sort();
    let mut h = Sha256::new();
    for (i, t) in pairs {
        h.update(i.as_bytes());
        h.update([0]);
        h.update(t.as_bytes());
        h.update([0]);
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The HTTP answer to a DDM check-in: status code, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdmAnswer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl DdmAnswer {
    fn json(body: Vec<u8>) -> DdmAnswer {
        DdmAnswer {
            status: 200,
            content_type: "application/json",
            body,
        }
    }

    fn text(status: u16, msg: String) -> DdmAnswer {
        DdmAnswer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: msg.into_bytes(),
        }
    }
}

/// Answers one `DeclarativeManagement` check-in (raw plist) for its enrollment.
pub fn answer_checkin(store: &Store, raw: &[u8]) -> Result<DdmAnswer> {
    let c = match DdmCheckin::parse(raw) {
        Ok(c) => c,
        Err(e) => {
            return Ok(DdmAnswer::text(
                400,
                format!("bad DeclarativeManagement check-in: {e}"),
            ));
        }
    };
    let id = c.enrollment_id.as_str();
    store.ddm_saw_checkin(id, &c.endpoint.to_wire())?;
    Ok(match &c.endpoint {
        Endpoint::Tokens => {
            let token = store.ddm_token(id)?;
            DdmAnswer::json(TokensResponse::new(&token, chrono::Utc::now()).to_json())
        }
        Endpoint::DeclarationItems => {
            let set = store.ddm_declarations(id)?;
            DdmAnswer::json(DeclarationItems::of(&set, &declarations_token(&set)).to_json())
        }
        Endpoint::Declaration { kind, identifier } => {
            let set = store.ddm_declarations(id)?;
            match set
                .iter()
                .find(|d| &d.identifier == identifier && d.kind() == Some(*kind))
            {
                Some(d) => DdmAnswer::json(d.to_json()),
                None => DdmAnswer::text(404, format!("no declaration {kind:?}/{identifier}")),
            }
        }
        Endpoint::Status => {
            let Some(data) = &c.data else {
                return Ok(DdmAnswer::text(400, "status check-in without Data".into()));
            };
            match StatusReport::parse(data) {
                Ok(r) => {
                    store.ddm_record_status(id, data, r.full_report)?;
                    DdmAnswer {
                        status: 200,
                        content_type: "text/plain; charset=utf-8",
                        body: Vec::new(),
                    }
                }
                Err(e) => DdmAnswer::text(400, format!("bad status report: {e}")),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdm::ddm::declaration::{Enforcement, LocalDateTime};

    fn enforcement(version: &str) -> Declaration {
        Enforcement {
            target_os_version: version.into(),
            target_build_version: None,
            target_local_date_time: LocalDateTime::parse("2026-12-01T19:00:00").unwrap(),
            details_url: None,
        }
        .declaration("lab.su")
    }

    #[test]
    fn the_token_moves_exactly_when_the_set_changes() {
        let s = Store::open_in_memory().unwrap();
        let t0 = s.ddm_token("U").unwrap();
        let p = s.ddm_put("U", &enforcement("26.1")).unwrap();
        assert!(p.changed);
        assert_ne!(p.declarations_token, t0);
        let again = s.ddm_put("U", &enforcement("26.1")).unwrap();
        assert!(!again.changed);
        assert_eq!(again.declarations_token, p.declarations_token);
        let other = s.ddm_put("U", &enforcement("26.2")).unwrap();
        assert_ne!(other.declarations_token, p.declarations_token);
        assert_ne!(other.server_token, p.server_token);
        assert!(s.ddm_remove("U", "lab.su").unwrap());
        assert!(!s.ddm_remove("U", "lab.su").unwrap());
        assert_eq!(s.ddm_token("U").unwrap(), t0);
        // Per enrollment.
        s.ddm_put("V", &enforcement("26.1")).unwrap();
        assert_eq!(s.ddm_token("U").unwrap(), t0);
    }

    #[test]
    fn the_activation_names_every_configuration() {
        let set = served_set(vec![enforcement("26.1")]);
        let act = set.iter().find(|d| d.identifier == ACTIVATION_ID).unwrap();
        assert_eq!(
            act.payload["StandardConfigurations"],
            serde_json::json!([SUBSCRIPTIONS_ID, "lab.su"])
        );
        let subs = set
            .iter()
            .find(|d| d.identifier == SUBSCRIPTIONS_ID)
            .unwrap();
        assert_eq!(
            subs.payload["StatusItems"].as_array().unwrap().len(),
            SUBSCRIBED_ITEMS.len()
        );
    }

    #[test]
    fn checkins_are_answered_per_endpoint() {
        let s = Store::open_in_memory().unwrap();
        s.ddm_put("U", &enforcement("26.1")).unwrap();
        let ask = |ep: Endpoint, data: Option<Vec<u8>>| {
            let c = DdmCheckin {
                enrollment_id: "U".into(),
                endpoint: ep,
                data,
            };
            answer_checkin(&s, &c.to_plist()).unwrap()
        };
        let t = ask(Endpoint::Tokens, None);
        let tokens = TokensResponse::parse(&t.body).unwrap();
        assert_eq!(
            tokens.sync_tokens.declarations_token,
            s.ddm_token("U").unwrap()
        );
        let m = DeclarationItems::parse(&ask(Endpoint::DeclarationItems, None).body).unwrap();
        assert_eq!(m.declarations.configurations.len(), 2);
        assert_eq!(m.declarations.activations.len(), 1);
        let d = ask(
            Endpoint::Declaration {
                kind: DeclarationKind::Configuration,
                identifier: "lab.su".into(),
            },
            None,
        );
        assert_eq!(
            Declaration::parse(&d.body, true).unwrap(),
            enforcement("26.1")
        );
        let missing = ask(
            Endpoint::Declaration {
                kind: DeclarationKind::Activation,
                identifier: "lab.su".into(),
            },
            None,
        );
        assert_eq!(missing.status, 404);
        let report =
            br#"{"StatusItems": {"softwareupdate": {"install-state": "none"}}, "Errors": []}"#;
        assert_eq!(ask(Endpoint::Status, Some(report.to_vec())).status, 200);
        assert_eq!(ask(Endpoint::Status, Some(b"{".to_vec())).status, 400);
        assert_eq!(ask(Endpoint::Status, None).status, 400);
        let h = s.ddm_status_history("U", 0).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].raw, report.to_vec());
        assert!(s.ddm_summary("U").unwrap().active);
        assert!(!s.ddm_summary("W").unwrap().active);
    }
}
