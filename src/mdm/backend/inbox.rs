//! Results from a webhook listener's inbox (NanoMDM, MicroMDM).

use super::super::report::ReportStatus;
use super::super::webhook_receiver::Inbox;
use super::{BackendNote, CommandResult, Notes, SentMap};
use base64::Engine;
use sha2::{Digest, Sha256};

/// Results from webhook events: acknowledge events with a CommandUUID for this device.
///
/// MicroMDM's webhook has no `omitempty` on `command_uuid` (`workflow/webhook/acknowledge.go`),
/// so its Idle polls arrive as `"command_uuid": ""`: an empty CommandUUID, or an Idle status, is
/// a poll, not a result.
pub(in crate::mdm) fn results_from_inbox(
    inbox: &Inbox,
    udid: &str,
    sent: &SentMap,
    notes: &Notes,
) -> Vec<CommandResult> {
    // A webhook posted twice (a retrying proxy, an MDM that re-sends) is one report: the same
    // event_id, or (MDMs that send none) the same body.
    let mut seen = std::collections::HashSet::new();
    inbox
        .events()
        .into_iter()
        .filter(|e| {
            let id = if e.event.event_id.is_empty() {
                format!(
                    "body:{}",
                    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&e.body))
                )
            } else {
                format!("id:{}", e.event.event_id)
            };
            if seen.insert(id.clone()) {
                return true;
            }
            if let Some(ack) = &e.event.acknowledge_event
                && (ack.udid.as_deref() == Some(udid) || ack.enrollment_id.as_deref() == Some(udid))
            {
                notes.add(BackendNote {
                    udid: udid.to_string(),
                    kind: "webhook_duplicate",
                    key: format!(
                        "webhook {} for command {}",
                        e.event.event_id,
                        ack.command_uuid.as_deref().unwrap_or("")
                    ),
                    value: format!(
                        "the MDM posted the same webhook event again ({id}); counted once"
                    ),
                });
            }
            false
        })
        .filter_map(|e| {
            let ack = e.event.acknowledge_event?;
            if ack.udid.as_deref() != Some(udid) && ack.enrollment_id.as_deref() != Some(udid) {
                return None;
            }
            if ReportStatus::parse(&ack.status) == ReportStatus::Idle {
                return None;
            }
            let uuid = ack.command_uuid.filter(|u| !u.is_empty())?;
            Some(CommandResult {
                request_type: sent.get(&uuid),
                command_uuid: uuid,
                status: ack.status,
                raw: ack.raw_payload.into(),
                received_at: e.received_at,
            })
        })
        .collect()
}
