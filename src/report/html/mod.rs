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

/// Where an anomaly's draft is, relative to the run folder (`radar/<id>.md`, or
/// `feedback/<id>.md` for a DDM finding).
pub fn draft_path(id: &str) -> String {
    tables::radar_href(id)
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
    // The first screen (issue 15's 10-second test): the tiles, then every device with what
    // became of it; the run's details, the flow and the lanes come after.
    let scale = header::time_scale(run);
    header::title(&mut h, head, run, outcomes, anomalies.len());
    tables::per_device(&mut h, run, outcomes, scale, anomalies);
    header::run_details(&mut h, head, run, t0.as_ref());
    consort::consort(&mut h, &flow);
    baseline::baseline(&mut h, run, outcomes);
    timelines::timelines(&mut h, digest, t0.as_ref(), anomalies, out)?;
    tables::outcomes_section(&mut h, outcomes, scale);
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

    /// An OSUpdateStatus answer whose item says `status` with IsDownloaded true.
    fn status_item(
        j: &mut crate::verdicts::outcome::testkit::J,
        udid: &str,
        uuid: &str,
        status: &str,
    ) {
        j.status_with(udid, uuid, 1.0, plist::Value::Boolean(true), status);
    }

    /// Issue 15's 10-second test: an Error answer, an anomaly, an uncertain dose and an excluded
    /// device's sentence all show on the first screen, before the run's details.
    #[test]
    fn the_first_screen_counts_what_needs_a_look_and_lists_every_device() {
        use crate::verdicts::outcome::testkit::J;
        let mut j = J::new();
        j.device("A", true)
            .allocate("A", "x")
            .consent(&["A"])
            .dose("A", 1, "S1");
        j.wait(1).schedule_answer("A", "S1", "Error");
        j.wait(1).schedule_answer("A", "S1", "Acknowledged");
        j.device("B", true).allocate("B", "x").consent(&["B"]);
        j.intent("B", 1, "S2", "Default");
        j.push(crate::journal::Event::DoseUncertain {
            udid: "B".into(),
            command_uuid: "S2".into(),
            reason: "crash between intent and enqueue".into(),
        });
        j.device("C", false);
        let links = [AnomalyLink {
            id: "schedule_error_but_proceeds".into(),
            title: "ScheduleOSUpdate answered Error".into(),
            udid: Some("A".into()),
        }];
        let html = render(&j.entries, &links);
        let first = &html[..html.find("<section id=\"run\">").expect("run details")];
        let tile = |label: &str| {
            let end = first.find(&format!("<span>{label}</span>")).expect(label);
            let b = first[..end].rfind("<b>").unwrap();
            first[b + 3..end].trim_end_matches("</b>").to_string()
        };
        assert_eq!(tile("devices with an error answer"), "1");
        assert_eq!(tile("anomalies"), "1");
        assert_eq!(tile("doses uncertain"), "1");
        assert_eq!(tile("devices enrolled"), "3");
        // Every device is in the table on the first screen, the excluded one with its sentence,
        // the one with an anomaly with a link to its draft.
        assert!(first.contains("<section id=\"devices\">"));
        for u in ["A", "B", "C"] {
            assert!(
                first.contains(&format!("<span class=\"mono\">{u}</span>")),
                "{u}"
            );
        }
        let c = j.entries.iter().find_map(|e| match &e.event {
            crate::journal::Event::EligibilityAssessed { udid, reasons, .. } if udid == "C" => {
                reasons.first().map(|r| r.message.clone())
            }
            _ => None,
        });
        assert!(first.contains(&esc(&c.expect("an exclusion sentence"))));
        assert!(first.contains("href=\"radar/schedule_error_but_proceeds.md\""));
        // Not a simulated run: no label.
        assert!(!html.contains("id=\"simulated\""));
    }

    #[test]
    fn a_simulated_run_says_so_with_its_time_scale_and_draws_simulated_time() {
        use crate::verdicts::outcome::testkit::J;
        let mut j = J::new();
        if let crate::journal::Event::RunStarted {
            time_scale,
            simulated,
            ..
        } = &mut j.entries[0].event
        {
            *time_scale = Some(60.0);
            *simulated = true;
        }
        j.device("A", true)
            .allocate("A", "x")
            .consent(&["A"])
            .dose("A", 1, "S1");
        j.wait(10).schedule_answer("A", "S1", "Acknowledged");
        let html = render(&j.entries, &[]);
        assert!(html.contains("id=\"simulated\""), "{html}");
        assert!(html.contains("60× faster"));
        // 10 real seconds after the dose are 10 simulated minutes on the lanes.
        assert!(html.contains("T+10m00s"), "{html}");
    }

    #[test]
    fn installing_is_drawn_and_error_marks_are_drawn_last() {
        use crate::verdicts::outcome::testkit::J;
        let mut j = J::new();
        j.device("A", true)
            .allocate("A", "x")
            .consent(&["A"])
            .dose("A", 1, "S1");
        j.wait(1).schedule_answer("A", "S1", "Error");
        j.wait(1).schedule_answer("A", "S1", "Acknowledged");
        status_item(j.wait(1), "A", "Q1", "Installing");
        let html = render(&j.entries, &[]);
        let lane = &html[html.find("data-udid=\"A\"").unwrap()..];
        assert!(lane.contains("s-installing"), "installing not drawn");
        let err = lane.find("class=\"a-err\"").expect("error mark");
        let ack = lane.rfind("class=\"a-ack\"").expect("ack mark");
        assert!(err > ack, "the error mark is drawn under a later one");
    }
}
