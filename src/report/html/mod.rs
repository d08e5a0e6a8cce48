//! `report.html`: the trial report for people — one self-contained file (inline CSS and SVG, no
//! script, no network fetches), a pure projection of the journal like the CSV files.
//!
//! Sections: header (trial, protocol hash, lab version, dates, feed file hashes), the CONSORT
//! flow diagram (SVG, counts from [`flow::counts`]), the baseline table by arm, one swimlane
//! timeline per device (status over time, commands, answers, observations, restarts as detached
//! periods; times relative to the first dose), outcomes per arm, adverse events, and anomalies
//! linking to their drafts (`radar/<id>.md`).
//!
//! Every string that comes from the journal (device names, MDM values, operator notes) is
//! escaped. Nothing depends on the clock: the same journal gives the same bytes.

mod baseline;
mod consort;
mod header;
mod palette;
mod style;
mod tables;
mod timelines;

use super::flow;
pub(crate) use super::format::{Instant, Time, clip, dur};
pub use super::format::{esc, rel};
pub use super::head::FEED_HASH_KIND;
use crate::journal::Entry;
use crate::report::export::RunView;
use std::fmt::Write;

/// An anomaly to list (and link to its draft, `radar/<id>.md`). The detectors live in
/// `verdicts::anomalies`; `report::write_all` passes what they found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalyLink {
    /// Anomaly id; the draft is `radar/<id>.md` next to the journal.
    pub id: String,
    /// One line for the reader.
    pub title: String,
    /// The device it concerns; `None` for a run-level anomaly.
    pub udid: Option<String>,
}

/// Render `report.html` from the journal and the anomalies found (may be empty).
pub fn render(entries: &[Entry], anomalies: &[AnomalyLink]) -> String {
    let mut view = RunView::of_entries(entries, None);
    view.anomalies = anomalies.to_vec();
    let mut out = Vec::new();
    render_to(&view, &mut out).expect("writing to memory");
    String::from_utf8(out).expect("HTML is UTF-8")
}

/// [`render`] from a journal already read, written piece by piece (a long run's report is
/// larger than it is worth holding).
pub(crate) fn render_to(view: &RunView, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let (digest, anomalies) = (&view.digest, &view.anomalies[..]);
    let run = &digest.run;
    let outcomes = &digest.outcomes;
    let flow = flow::counts_of(run, outcomes);
    let head = &digest.head;
    let t0 = head.first_dose_time();

    let mut h = String::new();
    let title = format!(
        "Trial report — {}",
        head.trial_id.as_deref().unwrap_or("(no trial id)")
    );
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{}</style>\n</head>\n<body>\n<main>\n",
        esc(&title),
        style::STYLE
    );
    header::header(&mut h, head, run, outcomes, t0.as_ref());
    consort::consort(&mut h, &flow);
    baseline::baseline(&mut h, run, outcomes);
    timelines::timelines(&mut h, digest, t0.as_ref(), anomalies, out)?;
    tables::outcomes_section(&mut h, run, outcomes);
    tables::adverse(&mut h, &view.adverse_events, run);
    tables::anomalies_section(&mut h, run, anomalies);
    let _ = write!(
        h,
        "<footer>A projection of <code>journal.jsonl</code> ({} events, last seq {}); \
         regenerate with <code>lab report RUN_DIR</code>. Columns and outcome rules: \
         <code>docs/reports.md</code>.</footer>\n</main>\n</body>\n</html>\n",
        head.events, head.last_seq
    );
    out.write_all(h.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::tables::radar_href;
    use super::timelines::tick_step;
    use super::*;

    #[test]
    fn escaping_and_relative_times() {
        assert_eq!(
            esc("<img src=x onerror='a'>&\"\u{1}"),
            "&lt;img src=x onerror=&#39;a&#39;&gt;&amp;&quot;\u{FFFD}"
        );
        assert_eq!(rel(0.0), "T+0s");
        assert_eq!(rel(-12.0), "T−12s");
        assert_eq!(rel(185.0), "T+3m05s");
        assert_eq!(rel(3720.0), "T+1h02m");
        assert_eq!(radar_href("A-1"), "radar/A-1.md");
        assert_eq!(radar_href("../x"), "radar/%2E%2E%2Fx.md");
        assert_eq!(
            radar_href("ddm_install_failed"),
            "feedback/ddm_install_failed.md"
        );
        assert_eq!(tick_step(50.0), 5.0);
        assert_eq!(tick_step(7200.0), 900.0);
    }
}
