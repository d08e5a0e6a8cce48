//! The embedded server's histories read since a cursor (`GET /v1/history?reports_after=R&
//! deliveries_after=D`, `lab`'s own extension): one call a follow-up round for the whole lab
//! instead of one `GET /v1/history/{id}` per device, each of which re-sent the device's whole
//! history. What came is kept per device, in the shape the per-device history has (commands in
//! queue order, each with its deliveries and reports in the store's order), so a device's
//! results and deliveries read from here are exactly those its `GET /v1/history/{id}` gives.
//! Kept for every enrollment of the store (a device asked for later must find what came
//! before): the raw reports of the store's enrollments stay in memory while the backend lives.

use super::super::deliveries::{Delivery, DeliverySeen};
use super::super::report::parse_report;
use super::{BackendError, CommandResult, SentMap};
use base64::Engine;
use std::collections::HashMap;

/// How many reports (and deliveries) one answer may carry.
const PAGE: u32 = 5_000;

/// The cursor and everything read up to it.
#[derive(Default)]
pub(super) struct Feed {
    reports_after: i64,
    deliveries_after: i64,
    devices: HashMap<String, Vec<FeedCommand>>,
    /// Per device, the highest report number [`Feed::fresh_results`] has given.
    given: HashMap<String, i64>,
    /// Devices whose deliveries grew since their list was last handed on: `true` while every
    /// new delivery went to the device's last command, so that its list only grew at the end.
    deliveries_grew: HashMap<String, bool>,
    /// Per device, how many deliveries [`Feed::hand_on_deliveries`] last handed on.
    handed: HashMap<String, usize>,
}

struct FeedCommand {
    uuid: String,
    request_type: String,
    seq: i64,
    /// (the store's number, when)
    deliveries: Vec<(i64, String)>,
    reports: Vec<FeedReport>,
}

struct FeedReport {
    id: i64,
    /// The device's report re-read (the server's reading when it is not a report).
    status: String,
    raw: std::sync::Arc<[u8]>,
    received_at: String,
}

/// Why an answer of the history since a cursor cannot be read.
fn bad(url: &str, reason: impl Into<String>) -> BackendError {
    BackendError::BadResponse {
        url: url.to_string(),
        reason: reason.into(),
    }
}

impl Feed {
    /// The query of the next page.
    pub(super) fn next_query(&self) -> String {
        format!(
            "/v1/history?reports_after={}&deliveries_after={}&limit={PAGE}",
            self.reports_after, self.deliveries_after
        )
    }

    /// Take one page in (`url`: where it came from, for errors). Returns whether the server
    /// has more. A page that cannot be read changes nothing: the cursor stays where it was.
    pub(super) fn take(&mut self, url: &str, v: &serde_json::Value) -> Result<bool, BackendError> {
        let num = |x: &serde_json::Value, k: &str| {
            x[k].as_i64()
                .ok_or_else(|| bad(url, format!("no number {k}")))
        };
        let text = |x: &serde_json::Value, k: &str| {
            x[k].as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(url, format!("no text {k}")))
        };
        let reports_after = num(v, "reports_after")?;
        let deliveries_after = num(v, "deliveries_after")?;
        let more = v["more"].as_bool().unwrap_or(false);
        let list = |k: &str| {
            v[k].as_array()
                .map(Vec::as_slice)
                .ok_or_else(|| bad(url, format!("no {k} array")))
        };
        // Read everything first, then merge: a bad page leaves the feed as it was.
        let mut reports = Vec::new();
        for r in list("reports")? {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(r["raw_base64"].as_str().unwrap_or(""))
                .map_err(|_| bad(url, "raw_base64 is not base64"))?;
            // The server's status is its reading; re-read the raw report (as the per-device
            // history is read).
            let status = parse_report(&raw)
                .map(|p| p.status.as_str().to_string())
                .unwrap_or_else(|_| r["status"].as_str().unwrap_or("").to_string());
            let place = Place::of(r, &num, &text)?;
            reports.push((
                place,
                FeedReport {
                    id: num(r, "id")?,
                    status,
                    raw: raw.into(),
                    received_at: r["received_at"].as_str().unwrap_or("").to_string(),
                },
            ));
        }
        let mut deliveries = Vec::new();
        for d in list("deliveries")? {
            deliveries.push((Place::of(d, &num, &text)?, num(d, "id")?, text(d, "at")?));
        }
        for (p, r) in reports {
            if r.id > self.reports_after {
                let (cmds, i) = self.command(p);
                cmds[i].reports.push(r);
            }
        }
        for (p, id, at) in deliveries {
            if id > self.deliveries_after {
                let device = p.enrollment_id.clone();
                let (cmds, i) = self.command(p);
                cmds[i].deliveries.push((id, at));
                let at_end = i + 1 == cmds.len();
                let grew = self.deliveries_grew.entry(device).or_insert(true);
                *grew &= at_end;
            }
        }
        self.reports_after = self.reports_after.max(reports_after);
        self.deliveries_after = self.deliveries_after.max(deliveries_after);
        Ok(more)
    }

    /// The device's command a report or delivery belongs to, made in queue order if new: the
    /// device's commands and its place among them.
    fn command(&mut self, p: Place) -> (&mut Vec<FeedCommand>, usize) {
        let cmds = self.devices.entry(p.enrollment_id).or_default();
        let i = match cmds.iter().position(|c| c.uuid == p.command_uuid) {
            Some(i) => i,
            None => {
                let i = cmds.partition_point(|c| c.seq <= p.seq);
                cmds.insert(
                    i,
                    FeedCommand {
                        uuid: p.command_uuid,
                        request_type: p.request_type,
                        seq: p.seq,
                        deliveries: Vec::new(),
                        reports: Vec::new(),
                    },
                );
                i
            }
        };
        (cmds, i)
    }

    /// Every report of the device read so far, oldest first: what `results_from_history` makes
    /// of its whole history.
    pub(super) fn results(&self, udid: &str, sent: &SentMap) -> Vec<CommandResult> {
        let mut out: Vec<CommandResult> = self
            .devices
            .get(udid)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .flat_map(|c| {
                c.reports.iter().map(|r| CommandResult {
                    command_uuid: c.uuid.clone(),
                    request_type: sent.get(&c.uuid).or_else(|| Some(c.request_type.clone())),
                    status: r.status.clone(),
                    raw: r.raw.clone(),
                    received_at: r.received_at.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.received_at.cmp(&b.received_at));
        out
    }

    /// The device's reports [`Feed::results`] gives that no earlier call of this one gave
    /// (numbered above the last one given), in the same order.
    pub(super) fn fresh_results(&mut self, udid: &str, sent: &SentMap) -> Vec<CommandResult> {
        let after = self.given.get(udid).copied().unwrap_or(i64::MIN);
        let mut top = after;
        let mut out = Vec::new();
        for c in self.devices.get(udid).map(Vec::as_slice).unwrap_or(&[]) {
            for r in c.reports.iter().filter(|r| r.id > after) {
                top = top.max(r.id);
                out.push(CommandResult {
                    command_uuid: c.uuid.clone(),
                    request_type: sent.get(&c.uuid).or_else(|| Some(c.request_type.clone())),
                    status: r.status.clone(),
                    raw: r.raw.clone(),
                    received_at: r.received_at.clone(),
                });
            }
        }
        if top > after {
            self.given.insert(udid.to_string(), top);
        }
        out.sort_by(|a, b| a.received_at.cmp(&b.received_at));
        out
    }

    /// Bring `kept`'s list of the device up to [`Feed::deliveries`]. A list this feed handed on
    /// last that only grew at its end (the usual round: one more delivery of the newest
    /// command) gets the new deliveries appended; any other is made anew. Making every grown
    /// list anew cost each round a copy of every delivery of the run (issue 16: a steady
    /// 900-device round grew by about a millisecond per round late in a long run).
    pub(super) fn hand_on_deliveries(
        &mut self,
        udid: &str,
        kept: &mut HashMap<String, Vec<Delivery>>,
    ) {
        let grew = self.deliveries_grew.remove(udid);
        let handed = self.handed.get(udid).copied();
        let len = match (grew, kept.get_mut(udid)) {
            (None, Some(_)) => return,
            (Some(true), Some(list)) if handed == Some(list.len()) => {
                list.extend(self.deliveries_after(udid, list.len()));
                list.len()
            }
            _ => {
                let all = self.deliveries(udid);
                let len = all.len();
                kept.insert(udid.to_string(), all);
                len
            }
        };
        self.handed.insert(udid.to_string(), len);
    }

    /// Every delivery of the device read so far, in history order (`deliveries::from_history`).
    pub(super) fn deliveries(&self, udid: &str) -> Vec<Delivery> {
        self.deliveries_after(udid, 0)
    }

    /// [`Feed::deliveries`] without its first `skip`, copied from the end back.
    fn deliveries_after(&self, udid: &str, skip: usize) -> Vec<Delivery> {
        let cmds = self.devices.get(udid).map(Vec::as_slice).unwrap_or(&[]);
        let total: usize = cmds.iter().map(|c| c.deliveries.len()).sum();
        let mut left = total.saturating_sub(skip);
        let mut out = Vec::with_capacity(left);
        for c in cmds.iter().rev() {
            if left == 0 {
                break;
            }
            let take = left.min(c.deliveries.len());
            let from = c.deliveries.len() - take;
            out.extend(c.deliveries[from..].iter().rev().map(|(_, at)| Delivery {
                command_uuid: c.uuid.clone(),
                at: at.clone(),
                seen: DeliverySeen::History,
            }));
            left -= take;
        }
        out.reverse();
        out
    }
}

/// Where a report or delivery sits: its enrollment, command and the command's queue place.
struct Place {
    enrollment_id: String,
    command_uuid: String,
    request_type: String,
    seq: i64,
}

impl Place {
    fn of(
        x: &serde_json::Value,
        num: &impl Fn(&serde_json::Value, &str) -> Result<i64, BackendError>,
        text: &impl Fn(&serde_json::Value, &str) -> Result<String, BackendError>,
    ) -> Result<Place, BackendError> {
        Ok(Place {
            enrollment_id: text(x, "enrollment_id")?,
            command_uuid: text(x, "command_uuid")?,
            request_type: text(x, "request_type")?,
            seq: num(x, "seq")?,
        })
    }
}

impl super::NanoMdm {
    /// [`super::MdmBackend::results_many`] on a server with a history: one read of what every
    /// history gained since the last (paged), then each device's results as its per-device
    /// history gives them — webhooks reconciled with them when the backend is webhook-fed,
    /// deliveries kept for `deliveries()`. A server without the call (HTTP 404/405: not `lab`'s,
    /// or older) is asked device by device, as before. A failed read is every device's error
    /// (webhook-fed: the webhooks are all there is, as when its history fails).
    pub(super) async fn results_from_feed(
        &self,
        udids: &[String],
        fresh: bool,
    ) -> Vec<Result<Vec<CommandResult>, BackendError>> {
        let lock =
            |m: &'_ std::sync::Mutex<Option<bool>>| *m.lock().unwrap_or_else(|p| p.into_inner());
        if lock(&self.history_api) != Some(true) || lock(&self.feed_api) == Some(false) {
            return super::results_each(self, udids).await;
        }
        let mut feed = self.feed.lock().await;
        let read = self.read_feed(&mut feed).await;
        *self.feed_api.lock().unwrap_or_else(|p| p.into_inner()) = match &read {
            Err(BackendError::Refused {
                status: 404 | 405, ..
            }) => Some(false),
            Ok(()) => Some(true),
            Err(_) => lock(&self.feed_api),
        };
        match read {
            Ok(()) => udids
                .iter()
                .map(|u| {
                    // Only what no earlier fresh call gave, where the caller journals all it
                    // is given; webhook-fed, every report (they are reconciled with the
                    // webhooks whole).
                    let history = if fresh && self.inbox.is_none() {
                        feed.fresh_results(u, &self.sent)
                    } else {
                        feed.results(u, &self.sent)
                    };
                    let mut kept = self
                        .history_deliveries
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    feed.hand_on_deliveries(u, &mut kept);
                    drop(kept);
                    Ok(match &self.inbox {
                        None => history,
                        Some(inbox) => {
                            let hooks =
                                super::results_from_inbox(inbox, u, &self.sent, &self.notes);
                            self.reconcile(u, history, hooks)
                        }
                    })
                })
                .collect(),
            Err(BackendError::Refused {
                status: 404 | 405, ..
            }) => {
                drop(feed);
                super::results_each(self, udids).await
            }
            Err(e) => udids
                .iter()
                .map(|u| match &self.inbox {
                    None => Err(e.clone()),
                    Some(inbox) => {
                        let supplied = self.from_history.lock().unwrap_or_else(|p| p.into_inner());
                        Ok(super::results_from_inbox(inbox, u, &self.sent, &self.notes)
                            .into_iter()
                            .filter(|h| !supplied.contains(&super::report_key(h)))
                            .collect())
                    }
                })
                .collect(),
        }
    }

    /// Read pages until the server has no more (at most a bounded number: a server that keeps
    /// saying "more" without moving the cursor is not followed for ever).
    async fn read_feed(&self, feed: &mut Feed) -> Result<(), BackendError> {
        for _ in 0..1_000 {
            let q = feed.next_query();
            let v = self.get_json(&q).await?;
            let before = (feed.reports_after, feed.deliveries_after);
            let more = feed.take(&format!("{}{q}", self.base), &v)?;
            if !more || before == (feed.reports_after, feed.deliveries_after) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(id: i64, uuid: &str, seq: i64, at: &str) -> serde_json::Value {
        let raw = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict><key>CommandUUID</key><string>{uuid}</string><key>Status</key><string>Acknowledged</string><key>UDID</key><string>U</string></dict></plist>"
        );
        json!({
            "id": id, "enrollment_id": "U", "command_uuid": uuid, "request_type": "OSUpdateStatus",
            "seq": seq, "received_at": at, "status": "Acknowledged",
            "raw_base64": base64::engine::general_purpose::STANDARD.encode(raw),
        })
    }

    fn page(after: i64, reports: Vec<serde_json::Value>) -> serde_json::Value {
        json!({ "reports_after": after, "deliveries_after": 0, "more": false,
                "reports": reports, "deliveries": [] })
    }

    /// A page of deliveries only: (store number, command, its queue place).
    fn deliveries_page(list: &[(i64, &str, i64)]) -> serde_json::Value {
        let ds: Vec<serde_json::Value> = list
            .iter()
            .map(|(id, uuid, seq)| {
                json!({ "id": id, "enrollment_id": "U", "command_uuid": uuid,
                        "request_type": "OSUpdateStatus", "seq": seq, "at": format!("t{id}") })
            })
            .collect();
        let last = list.iter().map(|d| d.0).max().unwrap_or(0);
        json!({ "reports_after": 0, "deliveries_after": last, "more": false,
                "reports": [], "deliveries": ds })
    }

    fn delivered(d: &[Delivery]) -> Vec<(&str, &str)> {
        d.iter()
            .map(|d| (d.command_uuid.as_str(), d.at.as_str()))
            .collect()
    }

    /// However the deliveries arrive — at the end of the list, to an older command, to a
    /// command queued before the others — the list handed on is the one made anew from the
    /// whole feed, and a list replaced by someone else is made anew too.
    #[test]
    fn deliveries_handed_on_are_always_the_whole_list() {
        let url = "http://mdm/v1/history";
        let mut feed = Feed::default();
        let mut kept = HashMap::new();
        let steps: [&[(i64, &str, i64)]; 6] = [
            &[(1, "C1", 1), (2, "C2", 2)],
            &[(3, "C2", 2)],               // the last command again: appended
            &[(4, "C3", 3), (5, "C3", 3)], // a new last command: appended
            &[(6, "C1", 1)],               // an older command delivered again
            &[(7, "C0", 0)],               // a command queued before all others
            &[(8, "C3", 3)],
        ];
        for (i, step) in steps.iter().enumerate() {
            feed.take(url, &deliveries_page(step)).unwrap();
            if i == 5 {
                // Replaced meanwhile (a per-device history read keeps its own list).
                kept.insert("U".to_string(), Vec::new());
            }
            feed.hand_on_deliveries("U", &mut kept);
            assert_eq!(
                delivered(&kept["U"]),
                delivered(&feed.deliveries("U")),
                "after step {i}"
            );
        }
        assert_eq!(
            delivered(&kept["U"]),
            [
                ("C0", "t7"),
                ("C1", "t1"),
                ("C1", "t6"),
                ("C2", "t2"),
                ("C2", "t3"),
                ("C3", "t4"),
                ("C3", "t5"),
                ("C3", "t8"),
            ]
        );
        // Nothing new: the list is left as it is.
        let before = kept["U"].len();
        feed.hand_on_deliveries("U", &mut kept);
        assert_eq!(kept["U"].len(), before);
    }

    fn uuids(r: &[CommandResult]) -> Vec<&str> {
        r.iter().map(|r| r.command_uuid.as_str()).collect()
    }

    /// A fresh read gives each report once, in the order the whole history gives them; the
    /// whole history is unchanged by it.
    #[test]
    fn fresh_results_give_each_report_once_and_leave_the_history_whole() {
        let sent = SentMap::default();
        let mut feed = Feed::default();
        let url = "http://mdm/v1/history";
        feed.take(
            url,
            &page(2, vec![report(1, "C1", 1, "t1"), report(2, "C2", 2, "t2")]),
        )
        .unwrap();
        assert_eq!(uuids(&feed.fresh_results("U", &sent)), ["C1", "C2"]);
        assert!(feed.fresh_results("U", &sent).is_empty());
        feed.take(
            url,
            &page(4, vec![report(3, "C3", 3, "t4"), report(4, "C1", 1, "t3")]),
        )
        .unwrap();
        // Only the two new ones, sorted by arrival as `results` sorts them.
        assert_eq!(uuids(&feed.fresh_results("U", &sent)), ["C1", "C3"]);
        assert_eq!(uuids(&feed.results("U", &sent)), ["C1", "C2", "C1", "C3"]);
        assert!(feed.fresh_results("U", &sent).is_empty());
        assert!(feed.fresh_results("V", &sent).is_empty());
    }
}
