//! The run-level facts of `report.html`'s header, gathered one entry at a time while the
//! journal is read once for every report (`digest`). Data, not HTML: the HTML module reads it.

use super::format::{Instant, Time, parse_time};
use crate::journal::fold::Noted;
use crate::journal::{Entry, Event};

/// Observation `kind` under which a feed file's SHA-256 is recorded (run-level observation,
/// `key` = file name, `value` = hex digest); listed in the header.
pub const FEED_HASH_KIND: &str = "feed_sha256";

/// The run-level facts of the header, and what the timelines need of the whole journal,
/// gathered one entry at a time ([`Head::push`]). What the gathered run facts hold already
/// (`RunFacts::finished`, `RunFacts::stop_rules`) is read there, not kept twice.
#[derive(Default)]
pub(crate) struct Head {
    pub(crate) trial_id: Option<String>,
    pub(crate) protocol_sha256: Option<String>,
    pub(crate) lab_version: Option<String>,
    pub(crate) started: Option<String>,
    pub(crate) last: Option<String>,
    pub(crate) resumed: usize,
    pub(crate) interrupted: usize,
    pub(crate) feeds: Vec<(String, String)>,
    /// Run-level observations other than feed hashes.
    pub(crate) notes: Vec<Noted>,
    pub(crate) consent: Option<String>,
    /// Entries, and the seq of the last one.
    pub(crate) events: usize,
    pub(crate) last_seq: u64,
    /// Times of the first `DoseEnqueued`, the first `DoseIntent`, the first entry.
    pub(crate) first_enqueued: Option<String>,
    pub(crate) first_intent: Option<String>,
    /// Earliest and latest parseable entry times.
    pub(crate) earliest: Option<Instant>,
    pub(crate) latest: Option<Instant>,
}

impl Head {
    /// Take in the next entry; `at` is its time, parsed.
    pub(crate) fn push(&mut self, e: &Entry, at: Option<Instant>) {
        let h = self;
        if h.events == 0 {
            h.started = Some(e.at.clone());
        }
        h.events += 1;
        h.last_seq = e.seq;
        match &mut h.last {
            Some(l) => l.clone_from(&e.at),
            None => h.last = Some(e.at.clone()),
        }
        if let Some(t) = at {
            h.earliest = Some(h.earliest.map_or(t, |x| x.min(t)));
            h.latest = Some(h.latest.map_or(t, |x| x.max(t)));
        }
        match &e.event {
            Event::RunStarted {
                trial_id,
                protocol_sha256,
                lab_version,
                ..
            } if h.trial_id.is_none() => {
                h.trial_id = Some(trial_id.clone());
                h.protocol_sha256 = Some(protocol_sha256.clone());
                h.lab_version = Some(lab_version.clone());
            }
            Event::RunResumed { .. } => h.resumed += 1,
            Event::RunInterrupted => h.interrupted += 1,
            Event::ConsentGiven { by, udids } => {
                h.consent = Some(format!(
                    "given by {by} for {}",
                    crate::format::count(udids.len(), "device")
                ));
            }
            Event::ConsentRefused { reason } => {
                h.consent = Some(format!("refused: {reason}"));
            }
            Event::Observation {
                udid: None,
                source,
                kind,
                key,
                value,
            } => {
                if kind == FEED_HASH_KIND {
                    h.feeds.push((key.clone(), value.clone()));
                } else {
                    h.notes.push(Noted::of(e, *source, kind, key, value));
                }
            }
            Event::DoseEnqueued { .. } if h.first_enqueued.is_none() => {
                h.first_enqueued = Some(e.at.clone());
            }
            Event::DoseIntent { .. } if h.first_intent.is_none() => {
                h.first_intent = Some(e.at.clone());
            }
            _ => {}
        }
    }

    /// Time zero: the first dose's `DoseEnqueued` (else its first `DoseIntent`, else the first
    /// event).
    pub(crate) fn first_dose_time(&self) -> Option<Time> {
        self.first_enqueued
            .as_deref()
            .or(self.first_intent.as_deref())
            .or(self.started.as_deref())
            .and_then(parse_time)
    }
}
