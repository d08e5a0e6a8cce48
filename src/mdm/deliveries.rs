//! Each delivery of a command to the device, where a backend can see it (issue 14: NanoMDM
//! re-delivered an unanswered ScheduleOSUpdate 13–14 times, and the re-deliveries made the
//! device install; none of it showed in `lab`'s reports).
//!
//! - `lab`'s own server records every delivery with its time (`GET /v1/history/{id}`:
//!   `commands[].deliveries[].at`): read as the MDM's own record.
//! - A webhook-fed NanoMDM or MicroMDM has no such record, but it posts an `mdm.Connect` event
//!   for every Idle poll, and its queue answers a poll with the oldest command still queued for
//!   the device (MDM brief §5.1 "Queue semantics": only a non-`NotNow` report takes a command
//!   out). So an Idle poll while a command is the oldest `lab` queued without a final answer is
//!   a delivery of that command. Commands queued by others, and a command handed out in the
//!   answer to another command's report rather than to a poll, are not seen: the count is a
//!   lower bound.
//!
//! Pure: the backends hand over what they fetched or received.

use super::report::ReportStatus;
use super::webhook_receiver::ReceivedEvent;

/// How a delivery was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliverySeen {
    /// The MDM's own record of the delivery.
    History,
    /// An Idle poll of the device while the command was the oldest queued and unanswered.
    IdlePoll,
}

impl DeliverySeen {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliverySeen::History => "the MDM's record of the delivery",
            DeliverySeen::IdlePoll => {
                "an Idle poll while it was the oldest command queued and unanswered"
            }
        }
    }
}

/// One delivery of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub command_uuid: String,
    /// When: the MDM's time (history), or the poll's webhook's arrival (RFC 3339).
    pub at: String,
    pub seen: DeliverySeen,
}

/// Every delivery in a device's history (`GET /v1/history/{id}`), in the history's order.
pub fn from_history(h: &serde_json::Value) -> Vec<Delivery> {
    let mut out = Vec::new();
    for c in h["commands"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let Some(uuid) = c["command_uuid"].as_str() else {
            continue;
        };
        for d in c["deliveries"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            out.push(Delivery {
                command_uuid: uuid.to_string(),
                at: d["at"]
                    .as_str()
                    .or(d.as_str())
                    .unwrap_or_default()
                    .to_string(),
                seen: DeliverySeen::History,
            });
        }
    }
    out
}

/// The deliveries a webhook-fed MDM's Idle polls reveal (module doc). `sent`: the commands
/// `lab` queued for this device as (CommandUUID, when queued), times on the same clock as the
/// events' `received_at` (the listener's).
pub fn from_polls(
    events: &[ReceivedEvent],
    udid: &str,
    sent: &[(String, String)],
) -> Vec<Delivery> {
    let mut sent: Vec<&(String, String)> = sent.iter().collect();
    sent.sort_by(|a, b| a.1.cmp(&b.1));
    let reports: Vec<(&str, &str, &str)> = events
        .iter()
        .filter_map(|e| {
            let a = e.event.acknowledge_event.as_ref()?;
            let mine = a.udid.as_deref() == Some(udid) || a.enrollment_id.as_deref() == Some(udid);
            mine.then(|| {
                (
                    e.received_at.as_str(),
                    a.status.as_str(),
                    a.command_uuid.as_deref().unwrap_or(""),
                )
            })
        })
        .collect();
    // When each command was first answered for good (it then left the queue).
    let done = |uuid: &str| {
        reports
            .iter()
            .filter(|r| r.2 == uuid && is_final(r.1))
            .map(|r| r.0)
            .min()
    };
    let finals: Vec<Option<&str>> = sent.iter().map(|(u, _)| done(u)).collect();
    let mut out = Vec::new();
    for (at, _, _) in reports.iter().filter(|r| r.1 == "Idle") {
        let oldest = sent
            .iter()
            .zip(&finals)
            .find(|((_, queued), fin)| queued.as_str() < *at && fin.is_none_or(|f| f > *at));
        if let Some(((uuid, _), _)) = oldest {
            out.push(Delivery {
                command_uuid: uuid.clone(),
                at: at.to_string(),
                seen: DeliverySeen::IdlePoll,
            });
        }
    }
    out
}

fn is_final(status: &str) -> bool {
    !matches!(
        ReportStatus::parse(status),
        ReportStatus::NotNow | ReportStatus::Idle
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdm::webhook::{AcknowledgeEvent, WebhookEvent};

    fn event(at: &str, status: &str, uuid: Option<&str>) -> ReceivedEvent {
        ReceivedEvent {
            event: WebhookEvent {
                topic: "mdm.Connect".into(),
                event_id: String::new(),
                created_at: at.into(),
                checkin_event: None,
                acknowledge_event: Some(AcknowledgeEvent {
                    udid: Some("U".into()),
                    enrollment_id: None,
                    status: status.into(),
                    command_uuid: uuid.map(str::to_string),
                    raw_payload: Vec::new(),
                    url_params: None,
                    ids: None,
                }),
            },
            body: Vec::new(),
            received_at: at.into(),
        }
    }

    #[test]
    fn idle_polls_while_a_command_is_the_oldest_unanswered_are_its_deliveries() {
        let sent = vec![
            ("S".to_string(), "t01".to_string()),
            ("Q".to_string(), "t05".to_string()),
        ];
        let events = vec![
            event("t00", "Idle", None),        // before anything was queued
            event("t02", "Idle", None),        // S
            event("t03", "Idle", Some("")),    // S again (MicroMDM's empty CommandUUID)
            event("t06", "Idle", None),        // S: still the oldest, unanswered
            event("t07", "NotNow", Some("S")), // S parked: still queued
            event("t08", "Idle", None),        // S re-delivered after NotNow
            event("t09", "Acknowledged", Some("S")),
            event("t10", "Idle", None), // Q
            event("t11", "Acknowledged", Some("Q")),
            event("t12", "Idle", None), // nothing queued
        ];
        let d = from_polls(&events, "U", &sent);
        let got: Vec<(&str, &str)> = d
            .iter()
            .map(|x| (x.command_uuid.as_str(), x.at.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("S", "t02"),
                ("S", "t03"),
                ("S", "t06"),
                ("S", "t08"),
                ("Q", "t10")
            ]
        );
        assert!(d.iter().all(|x| x.seen == DeliverySeen::IdlePoll));
        // Another device's polls are not this one's.
        assert!(from_polls(&events, "V", &sent).is_empty());
    }

    #[test]
    fn the_history_lists_every_delivery_with_its_time() {
        let h = serde_json::json!({"commands": [
            {"command_uuid": "S", "deliveries": [{"at": "t1"}, {"at": "t2"}, {"at": "t3"}]},
            {"command_uuid": "Q", "deliveries": []},
        ]});
        let d = from_history(&h);
        assert_eq!(d.len(), 3);
        assert!(
            d.iter()
                .all(|x| x.command_uuid == "S" && x.seen == DeliverySeen::History)
        );
        assert_eq!(d[2].at, "t3");
    }
}
