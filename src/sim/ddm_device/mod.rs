//! Simulated iPhones speaking DDM (iOS 17+, issue 13; DDM brief §7 "a faithful simulated
//! iPhone"): on the `DeclarativeManagement` command the device turns DDM on and synchronises —
//! the tokens (from the command's `Data`, else the `tokens` endpoint), `declaration-items`, the
//! new or changed declarations — then applies the active enforcement on the same update machine
//! as ScheduleOSUpdate (`sim::os_update`), along the simulator's virtual clock, and sends the
//! subscribed status items whenever they change (only a 200 counts as delivered).
//!
//! Behaviour by iOS version comes from `data/ddm.yaml` ([`facts`]). Every request is a
//! `DeclarativeManagement` check-in plist ([`crate::mdm::ddm::protocol::DdmCheckin`]).
//!
//! Not modelled yet: `management.declarations` status entries (valid/active per declaration),
//! the daily `FullReport`, several enforcements one after another, the 18+ supplemental rules.

pub mod engine;
pub mod facts;

pub use engine::DdmClient;
pub use facts::DdmFacts;

use crate::mdm::ddm::declaration::Declaration;
use crate::mdm::ddm::protocol::{DdmCheckin, DeclarationItems, Endpoint, TokensResponse};
use crate::sim::os_update::OsUpdateSim;
use std::future::Future;
use std::sync::Mutex;

/// How the device reaches the server: one DDM check-in, answered with (HTTP status, body).
pub trait DdmTransport {
    fn checkin(&self, c: DdmCheckin)
    -> impl Future<Output = Result<(u16, Vec<u8>), String>> + Send;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One synchronisation (DDM brief §1): tokens, then, if the token moved, the manifest and the
/// declarations it names; then the result is applied. Locks are never held across a request.
pub async fn sync<T: DdmTransport>(
    t: &T,
    udid: &str,
    tokens: Option<TokensResponse>,
    client: &Mutex<DdmClient>,
    os: &Mutex<OsUpdateSim>,
    now: impl Fn() -> chrono::DateTime<chrono::Utc>,
    facts: &DdmFacts,
) -> Result<(), String> {
    let ask = |endpoint: Endpoint| DdmCheckin {
        enrollment_id: udid.to_string(),
        endpoint,
        data: None,
    };
    let tokens = match tokens {
        Some(t) => t,
        None => {
            let (code, body) = t.checkin(ask(Endpoint::Tokens)).await?;
            if code != 200 {
                return Err(format!("tokens: HTTP {code}"));
            }
            TokensResponse::parse(&body).map_err(|e| e.to_string())?
        }
    };
    if lock(client).token() == Some(tokens.sync_tokens.declarations_token.as_str()) {
        return Ok(());
    }
    let (code, body) = t.checkin(ask(Endpoint::DeclarationItems)).await?;
    if code != 200 {
        return Err(format!("declaration-items: HTTP {code}"));
    }
    let manifest = DeclarationItems::parse(&body).map_err(|e| e.to_string())?;
    let wanted = lock(client).to_fetch(&manifest);
    let mut fetched = Vec::new();
    for (kind, identifier) in wanted {
        let (code, body) = t
            .checkin(ask(Endpoint::Declaration { kind, identifier }))
            .await?;
        // A 404 means the server dropped it; the manifest walk drops it too.
        if code == 200
            && let Ok(d) = Declaration::parse(&body, true)
        {
            fetched.push(d);
        }
    }
    let now = now();
    let os = lock(os);
    lock(client).apply_manifest(&manifest, fetched, now, &os, facts);
    Ok(())
}

/// Sends the subscribed items that changed, if any; returns whether a report was delivered.
pub async fn send_status<T: DdmTransport>(
    t: &T,
    udid: &str,
    client: &Mutex<DdmClient>,
    os: &Mutex<OsUpdateSim>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool, String> {
    let (values, report) = {
        let c = lock(client);
        let values = c.values(now, &lock(os));
        let report = c.report(&values);
        (values, report)
    };
    let Some(report) = report else {
        return Ok(false);
    };
    let sent = t
        .checkin(DdmCheckin {
            enrollment_id: udid.to_string(),
            endpoint: Endpoint::Status,
            data: Some(report.to_json()),
        })
        .await;
    match sent {
        Ok((200, _)) => {
            lock(client).delivered(values);
            Ok(true)
        }
        // Not delivered: the same items go again next time (DDM brief §1).
        Ok((code, _)) => {
            lock(client).set_delivered(false);
            Err(format!("status: HTTP {code}"))
        }
        Err(e) => {
            lock(client).set_delivered(false);
            Err(e)
        }
    }
}
