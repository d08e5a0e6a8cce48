//! One swimlane timeline per device: status over time, doses, commands, answers,
//! observations, detached periods; times relative to the first dose.

use super::header::{device_name, model};
use super::palette::{Status, answer_class, badge, outcome_class};
use super::tables::radar_href;
use super::{AnomalyLink, Instant, Time, clip, dur, esc, rel};
use crate::journal::fold::Facts;
use crate::journal::fold::Noted;
use crate::report::digest::Digest;
use crate::report::lanes::{LaneAnswer, LaneEv, LaneKind};
use crate::verdicts::outcome::{DeviceOutcome, Outcome};
use chrono::Utc;
use rustc_hash::{FxHashMap, FxHashSet};
use std::fmt::Write;
use std::sync::Arc;

/// What one device's lane shows, in journal order.
#[derive(Default)]
struct LaneData {
    /// (time, status) changes.
    changes: Vec<(Instant, Status)>,
    end: Option<Instant>,
    /// (time, step, install action, ok).
    doses: Vec<(Instant, u32, String, bool)>,
    /// (time, request type).
    commands: Vec<(Instant, Arc<str>)>,
    /// (time, request type, status).
    answers: Vec<(Instant, Arc<str>, Arc<str>)>,
    /// (time, observation).
    observations: Vec<(Instant, Noted)>,
}

fn lane_data(events: &[&LaneEv], d: &Facts, o: &DeviceOutcome) -> LaneData {
    let mut l = LaneData::default();
    let mut base = Status::Enrolled;
    let mut detached = false;
    let mut dosed = false;
    let downloaded: FxHashSet<u64> = d.downloaded.iter().map(|x| x.0).collect();
    let statuses: FxHashMap<u64, &str> =
        d.update_statuses.iter().map(|(s, v)| (*s, &**v)).collect();
    let mut builds: FxHashMap<u64, &crate::journal::fold::BuildSeen> = FxHashMap::default();
    for b in &d.builds {
        builds.entry(b.seq).or_insert(b);
    }
    let dose_uuids = d.dose_uuids();
    let unknown: Arc<str> = Arc::from("unknown");
    for e in events {
        let at = e.at;
        let mut at_used = at;
        match &e.kind {
            LaneKind::Eligibility(eligible) => {
                base = if *eligible {
                    Status::Eligible
                } else {
                    Status::Excluded
                };
            }
            LaneKind::Command(request_type) => {
                l.commands.push((at, request_type.clone()));
            }
            LaneKind::Dose { uuid, ok } => {
                if let Some(i) = d.intents.iter().find(|i| *i.command_uuid == **uuid) {
                    l.doses.push((at, i.step, i.install_action.clone(), *ok));
                }
                if *ok && !dosed {
                    dosed = true;
                    base = Status::Dosed;
                }
            }
            LaneKind::Answer {
                at: received,
                request_type,
                answer,
            } => {
                at_used = *received;
                let (status, uuid) = match answer {
                    LaneAnswer::Fact(i) => {
                        let a = &d.answers[*i as usize];
                        (&a.status, &a.command_uuid)
                    }
                    LaneAnswer::Early(x) => (&x.0, &x.1),
                };
                let rt = request_type.clone().unwrap_or_else(|| unknown.clone());
                l.answers.push((at_used, rt, status.clone()));
                detached = false;
                if dose_uuids.contains(&**uuid)
                    && matches!(&**status, "Error" | "CommandFormatError")
                    && !matches!(base, Status::Updated | Status::WrongVersion)
                {
                    base = Status::Error;
                }
                if dosed && !matches!(base, Status::Updated | Status::WrongVersion) {
                    // An item saying it installs wins over its IsDownloaded flag: a device
                    // answering `Installing` (the seed's Later bug) is drawn installing, not
                    // merely downloaded (issue 15).
                    let status = statuses.get(&e.seq);
                    if status.is_some_and(|s| s.contains("Install")) {
                        base = Status::Installing;
                    } else if downloaded.contains(&e.seq) {
                        base = Status::Downloaded;
                    } else if status.is_some_and(|s| s.contains("Download"))
                        && base != Status::Downloaded
                    {
                        base = Status::Downloading;
                    }
                }
            }
            LaneKind::Reprobe { attached } => {
                detached = !*attached;
            }
            LaneKind::Observation(o) => {
                l.observations.push((at, (**o).clone()));
            }
            LaneKind::FollowUpEnded => {
                l.end = Some(at);
            }
            LaneKind::DdmStatus { install_state } => {
                detached = false;
                if let Some(s) = install_state {
                    l.answers
                        .push((at, Arc::from("DDM install-state"), Arc::from(&**s)));
                    if dosed && !matches!(base, Status::Updated | Status::WrongVersion) {
                        // DDM brief §3: none → downloading → prepared → installing; failed.
                        match &**s {
                            "downloading" => base = Status::Downloading,
                            "prepared" => base = Status::Downloaded,
                            "installing" => base = Status::Installing,
                            "failed" => base = Status::Error,
                            _ => {}
                        }
                    }
                }
            }
            LaneKind::Discovered | LaneKind::Other => {}
        }
        // A build report after the dose settles the status.
        if dosed && let Some(b) = builds.get(&e.seq) {
            if o.target_build.as_deref() == Some(b.build.as_str())
                || (o.target_build.is_none()
                    && o.starting_build.as_deref().is_some_and(|s| s != b.build))
            {
                base = Status::Updated;
            } else if o.starting_build.as_deref() != Some(b.build.as_str()) {
                base = Status::WrongVersion;
            }
        }
        let now = if detached { Status::Detached } else { base };
        match l.changes.last() {
            None => {
                if matches!(e.kind, LaneKind::Discovered) {
                    l.changes.push((at, now));
                }
            }
            Some(&(prev_t, prev)) if prev != now => {
                l.changes.push((at_used.min(at).max(prev_t), now));
            }
            Some(_) => {}
        }
    }
    l
}

/// A "nice" tick step (seconds) giving at most ~10 ticks over `span`.
pub(super) fn tick_step(span: f64) -> f64 {
    const STEPS: [f64; 16] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
        14400.0, 43200.0,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| span / s <= 10.0)
        .unwrap_or(86400.0 * (span / 86400.0 / 10.0).ceil().max(1.0))
}

const LANE_W: f64 = 1200.0;
const PLOT_X: f64 = 92.0;
const PLOT_R: f64 = 1188.0;

/// The time axis every lane shares: seconds from T+0, the span shown, and x in the SVG.
struct Axis {
    t0: Instant,
    lo: f64,
    hi: f64,
    /// Simulated seconds per real second: a simulated run's lanes are in simulated time.
    scale: f64,
}

impl Axis {
    fn secs(&self, t: &Instant) -> f64 {
        (*t - self.t0).num_milliseconds() as f64 / 1000.0 * self.scale
    }

    fn span(&self) -> f64 {
        self.hi - self.lo
    }

    fn x(&self, s: f64) -> f64 {
        PLOT_X + (s - self.lo) / self.span() * (PLOT_R - PLOT_X)
    }
}

pub(super) fn timelines(
    h: &mut String,
    digest: &Digest,
    t0: Option<&Time>,
    anomalies: &[AnomalyLink],
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let (run, outcomes) = (&digest.run, &digest.outcomes);
    h.push_str("<section id=\"timelines\">\n<h2>Device timelines</h2>\n");
    let (Some(first), Some(last)) = (&digest.head.earliest, &digest.head.latest) else {
        h.push_str("<p>No events.</p>\n</section>\n");
        return Ok(());
    };
    let t0 = t0.map(|t| t.with_timezone(&Utc)).unwrap_or(*first);
    let mut axis = Axis {
        t0,
        lo: 0.0,
        hi: 0.0,
        scale: super::header::time_scale(run),
    };
    axis.lo = axis.secs(first).min(0.0);
    axis.hi = axis.secs(last).max(axis.lo + 1.0);
    legend(h, &axis);
    // Excluded devices' lanes come last, folded away: nothing happened to them after baseline.
    let excluded = |o: &DeviceOutcome| o.outcome == Outcome::Excluded;
    let n_excluded = outcomes.iter().filter(|o| excluded(o)).count();
    let order = run
        .devices
        .iter()
        .zip(outcomes)
        .enumerate()
        .filter(|(_, (_, o))| !excluded(o))
        .chain(
            run.devices
                .iter()
                .zip(outcomes)
                .enumerate()
                .filter(|(_, (_, o))| excluded(o)),
        );
    let order: Vec<_> = order.collect();
    let mut folded = false;
    // Lanes are independent: a window of them is drawn on every core, then written in order
    // (a window, not all: a long run's lanes are a hundred megabytes of HTML).
    for window in order.chunks(LANE_WINDOW) {
        let drawn = on_every_core(window, |(i, (d, o))| {
            lane(*i, d, o, digest, &axis, anomalies)
        });
        for ((_, (_, o)), lane) in window.iter().zip(drawn) {
            // What is written so far goes out before each lane: a long run has a million
            // answers.
            out.write_all(h.as_bytes())?;
            h.clear();
            if excluded(o) && !folded {
                folded = true;
                let _ = writeln!(
                    h,
                    "<details class=\"lanes-excluded\"><summary>{n_excluded} excluded device{} (lanes folded)</summary>",
                    if n_excluded == 1 { "" } else { "s" }
                );
            }
            h.push_str(&lane);
        }
    }
    if folded {
        h.push_str("</details>\n");
    }
    h.push_str("</section>\n");
    Ok(())
}

/// Lanes drawn at once (on all cores) before they are written.
const LANE_WINDOW: usize = 64;

/// Device `i`'s lane: header, drawing and lists.
fn lane(
    i: usize,
    d: &Facts,
    o: &DeviceOutcome,
    digest: &Digest,
    axis: &Axis,
    anomalies: &[AnomalyLink],
) -> String {
    let mut h = String::new();
    let l = lane_data(&digest.lane(i), d, o);
    lane_header(&mut h, i, d, o, anomalies);
    lane_frame(&mut h, i, axis);
    status_band(&mut h, i, axis, &l);
    dose_marks(&mut h, axis, &l);
    event_marks(&mut h, axis, &l);
    h.push_str("</svg>\n");
    lane_lists(&mut h, axis, &l, d, anomalies);
    h.push_str("</section>\n");
    h
}

/// `f` of every item, in order, the items shared out in runs among the cores.
fn on_every_core<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let run = items.len().div_ceil(cores.max(1)).max(1);
    if run >= items.len() || cores == 1 {
        return items.iter().map(&f).collect();
    }
    let f = &f;
    std::thread::scope(|scope| {
        let mut parts = items.chunks(run);
        let first = parts.next().unwrap_or_default();
        let others: Vec<_> = parts
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut all: Vec<R> = first.iter().map(f).collect();
        for o in others {
            all.extend(o.join().expect("drawing a lane does not panic"));
        }
        all
    })
}

/// The section's introduction and the legend.
fn legend(h: &mut String, axis: &Axis) {
    let _ = writeln!(
        h,
        "<p class=\"sub\">Times are relative to the first dose (T+0 = first <code>DoseEnqueued</code>); \
         one lane per device, in order of discovery. The whole run spans {} before and {} after T+0.</p>",
        dur(-axis.lo),
        dur(axis.hi)
    );
    h.push_str("<div class=\"legend\">");
    for s in Status::LEGEND {
        let _ = write!(
            h,
            "<span><i class=\"{}\"></i>{}</span>",
            s.class(),
            s.label()
        );
    }
    h.push_str(
        "<span>◆ dose (ScheduleOSUpdate)</span><span>| command sent</span>\
         <span>● answer: <b style=\"color:#1f9d55\">Acknowledged</b> / <b style=\"color:#d64545\">Error</b> / \
         <b style=\"color:#7b8794\">NotNow</b></span><span>▲ observation (orange: operator)</span><span>┃ follow-up ended (then the last status, faded)</span></div>\n",
    );
}

/// A lane's heading: number, name, arm, outcome, builds, target, reason.
fn lane_header(h: &mut String, i: usize, d: &Facts, o: &DeviceOutcome, anomalies: &[AnomalyLink]) {
    let _ = write!(
        h,
        "<section class=\"lane\" id=\"dev-{}\" data-udid=\"{}\">\n<header><h3>{}. {}</h3>",
        i + 1,
        esc(&d.udid),
        i + 1,
        esc(&device_name(d))
    );
    if let Some(a) = &d.arm {
        let _ = write!(h, "{}", badge("arm", a));
    }
    let _ = write!(h, "{}", badge(outcome_class(o.outcome), o.outcome.as_str()));
    // The outcome never stands alone when a detector fired on the device (listed under the lane).
    let n = anomalies
        .iter()
        .filter(|a| a.udid.as_deref() == Some(d.udid.as_str()))
        .count();
    if n > 0 {
        let label = format!("⚠ {n} anomal{}", if n == 1 { "y" } else { "ies" });
        let _ = write!(h, "{}", badge("o-bad", &label));
    }
    let builds = format!(
        "{} ({}) → {}",
        o.starting_version.as_deref().unwrap_or("?"),
        o.starting_build.as_deref().unwrap_or("?"),
        match (&o.final_version, &o.final_build) {
            (_, None) => "no build reported".to_string(),
            (v, Some(b)) => format!("{} ({b})", v.as_deref().unwrap_or("?")),
        }
    );
    let _ = writeln!(
        h,
        "<span class=\"facts\"><span class=\"mono\">{}</span> · {} · {}{}{}</span></header>",
        esc(&d.udid),
        esc(&model(d).unwrap_or_default()),
        esc(&builds),
        o.target_build
            .as_deref()
            .map(|t| format!(" · target {}", esc(t)))
            .unwrap_or_default(),
        o.reason
            .as_deref()
            .map(|r| format!(" · {}", esc(r)))
            .unwrap_or_default()
    );
}

/// The SVG's opening, the hatch pattern of detached periods, the grid, ticks and row labels.
fn lane_frame(s: &mut String, i: usize, axis: &Axis) {
    let rows = [
        ("status", 10.0),
        ("doses", 44.0),
        ("commands", 62.0),
        ("answers", 80.0),
        ("notes", 98.0),
    ];
    let height = 132.0;
    let _ = write!(
        s,
        "<svg class=\"swimlane\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {LANE_W:.0} {height:.0}\" \
         role=\"img\" aria-label=\"timeline of device {}\">",
        i + 1
    );
    let _ = write!(
        s,
        "<defs><pattern id=\"hatch-{}\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" \
         patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#fff\"/>\
         <rect width=\"3\" height=\"6\" fill=\"#3e4c59\"/></pattern></defs>",
        i + 1
    );
    let (lo, hi) = (axis.lo, axis.hi);
    let step = tick_step(axis.span());
    let mut t = (lo / step).ceil() * step;
    while t <= hi + 1e-9 {
        let gx = axis.x(t);
        let class = if t.abs() < 1e-9 { "zero" } else { "grid" };
        let _ = write!(
            s,
            "<line class=\"{class}\" x1=\"{gx:.1}\" y1=\"6\" x2=\"{gx:.1}\" y2=\"112\"/>\
             <text class=\"tick\" x=\"{gx:.1}\" y=\"125\" text-anchor=\"middle\">{}</text>",
            rel(t)
        );
        t += step;
    }
    if (lo / step).ceil() * step != 0.0 && lo <= 0.0 {
        let gx = axis.x(0.0);
        let _ = write!(
            s,
            "<line class=\"zero\" x1=\"{gx:.1}\" y1=\"6\" x2=\"{gx:.1}\" y2=\"112\"/>"
        );
    }
    for (label, y) in rows {
        let _ = write!(
            s,
            "<text class=\"rowlabel\" x=\"4\" y=\"{:.1}\">{label}</text>",
            if label == "status" { y + 14.0 } else { y + 4.0 }
        );
    }
}

/// The status band; after follow-up ended, the last status faded.
fn status_band(s: &mut String, i: usize, axis: &Axis, l: &LaneData) {
    let (x, hi) = (|v| axis.x(v), axis.hi);
    let end = l.end.map(|e| axis.secs(&e)).unwrap_or(hi);
    for (j, (start, status)) in l.changes.iter().enumerate() {
        let a = axis.secs(start);
        let b = l
            .changes
            .get(j + 1)
            .map(|c| axis.secs(&c.0))
            .unwrap_or(end)
            .max(a);
        let (xa, xb) = (x(a), x(b).max(x(a) + 1.5));
        let style = if *status == Status::Detached {
            format!(" style=\"fill:url(#hatch-{})\"", i + 1)
        } else {
            String::new()
        };
        let _ = write!(
            s,
            "<rect class=\"{}\"{style} x=\"{xa:.1}\" y=\"10\" width=\"{:.1}\" height=\"20\"><title>{} from {} to {}</title></rect>",
            status.class(),
            xb - xa,
            status.label(),
            rel(a),
            rel(b)
        );
    }
    if end < hi
        && let Some((_, last_status)) = l.changes.last()
    {
        let style = if *last_status == Status::Detached {
            format!(" style=\"fill:url(#hatch-{})\"", i + 1)
        } else {
            String::new()
        };
        let _ = write!(
            s,
            "<rect class=\"{}\"{style} opacity=\"0.35\" x=\"{:.1}\" y=\"15\" width=\"{:.1}\" height=\"10\"><title>follow-up ended at {} ({})</title></rect>\
             <line x1=\"{:.1}\" y1=\"6\" x2=\"{:.1}\" y2=\"34\" style=\"stroke:#102a43;stroke-width:2\"/>",
            last_status.class(),
            x(end),
            x(hi) - x(end),
            rel(end),
            last_status.label(),
            x(end),
            x(end)
        );
    }
}

/// Doses; the labels of doses too close to label apart are joined after the last one.
fn dose_marks(s: &mut String, axis: &Axis, l: &LaneData) {
    let mut groups: Vec<(f64, Vec<String>)> = Vec::new();
    for (t, step_n, action, ok) in &l.doses {
        let px = axis.x(axis.secs(t));
        let label = format!("S{step_n} {}", clip(action, 14));
        let class = if *ok { "dose" } else { "dosefail" };
        let _ = write!(
            s,
            "<path class=\"{class}\" d=\"M{px:.1},38 l6,6 l-6,6 l-6,-6 z\"><title>dose step {step_n} {} at {}{}</title></path>",
            esc(action),
            rel(axis.secs(t)),
            if *ok { "" } else { " (not enqueued)" },
        );
        match groups.last_mut() {
            Some((last, labels))
                if px < *last + 8.0 + labels.join(" · ").chars().count() as f64 * 5.8 =>
            {
                *last = px;
                labels.push(label);
            }
            _ => groups.push((px, vec![label])),
        }
    }
    for (px, labels) in &groups {
        let _ = write!(
            s,
            "<text class=\"dlabel\" x=\"{:.1}\" y=\"48\">{}</text>",
            px + 8.0,
            esc(&labels.join(" · "))
        );
    }
}

/// Commands, answers and observations.
fn event_marks(s: &mut String, axis: &Axis, l: &LaneData) {
    for (t, rt) in &l.commands {
        let px = axis.x(axis.secs(t));
        let _ = write!(
            s,
            "<line class=\"cmd\" x1=\"{px:.1}\" y1=\"56\" x2=\"{px:.1}\" y2=\"68\"><title>{} sent at {}</title></line>",
            esc(rt),
            rel(axis.secs(t))
        );
    }
    // Error answers are drawn last, on top: a later green dot never hides a red one.
    let is_error = |st: &str| matches!(st, "Error" | "CommandFormatError");
    let (errors, others): (Vec<_>, Vec<_>) = l.answers.iter().partition(|a| is_error(&a.2));
    for (t, rt, st) in others.into_iter().chain(errors) {
        let px = axis.x(axis.secs(t));
        let _ = write!(
            s,
            "<circle class=\"{}\" cx=\"{px:.1}\" cy=\"80\" r=\"3.2\"><title>{} answered {} at {}</title></circle>",
            answer_class(st),
            esc(rt),
            esc(st),
            rel(axis.secs(t))
        );
    }
    for (n, (t, o)) in l.observations.iter().enumerate() {
        let px = axis.x(axis.secs(t));
        let class = if o.by_operator() {
            "obs-operator"
        } else {
            "obs-harness"
        };
        let _ = write!(
            s,
            "<path class=\"{class}\" d=\"M{px:.1},91 l6,11 l-12,0 z\"><title>[{}] {} {}: {}</title></path>\
             <text class=\"dlabel\" x=\"{:.1}\" y=\"102\">{}</text>",
            esc(o.source.as_str()),
            esc(&o.kind),
            esc(&o.key),
            esc(&o.value),
            px + 7.0,
            n + 1
        );
    }
}

/// Under the SVG: the lane's observations, then its anomalies linked to their drafts.
fn lane_lists(h: &mut String, axis: &Axis, l: &LaneData, d: &Facts, anomalies: &[AnomalyLink]) {
    if !l.observations.is_empty() {
        h.push_str("<ol class=\"obs\">");
        for (t, o) in &l.observations {
            let _ = write!(
                h,
                "<li><span class=\"mono\">{}</span> [{}] <b>{}</b> {}: {} <span class=\"mono\">(seq {})</span></li>",
                rel(axis.secs(t)),
                esc(o.source.as_str()),
                esc(&o.kind),
                esc(&o.key),
                esc(&o.value),
                o.seq
            );
        }
        h.push_str("</ol>\n");
    }
    let mine: Vec<&AnomalyLink> = anomalies
        .iter()
        .filter(|a| a.udid.as_deref() == Some(d.udid.as_str()))
        .collect();
    if !mine.is_empty() {
        h.push_str("<ul class=\"lane-anomalies\">");
        for a in mine {
            let _ = write!(
                h,
                "<li>Anomaly <a href=\"{}\">{}</a>: {}</li>",
                esc(&radar_href(&a.id)),
                esc(&a.id),
                esc(&a.title)
            );
        }
        h.push_str("</ul>\n");
    }
}
