//! The live view of the bench (issue 15): one row per device and a header, computed from the
//! journal's one fold ([`Fold`]: each device's [`DeviceFacts`] with its [`Phase`], and its
//! history in [`Fold::record`]) and the time now. Pure: the terminal view (`trial::progress`)
//! and the web view (`watch`) draw what [`board`] returns; neither reads the journal its own way.
//!
//! Times are lab time: on a simulated lab the wall-clock seconds between two journal times are
//! multiplied by the lab's time scale (`RunStarted.time_scale`), so a follow-up limit of 2 h
//! counts down as 2 h however fast the simulation runs.

use crate::journal::fold::{DeviceFacts, Fold, Phase, seconds_between};

/// Every phase, in the order the header counts them.
pub const PHASES: [Phase; 12] = [
    Phase::Discovered,
    Phase::Baselined,
    Phase::Excluded,
    Phase::Eligible,
    Phase::Allocated,
    Phase::Intended,
    Phase::Enqueued,
    Phase::Uncertain,
    Phase::Failed,
    Phase::Withheld,
    Phase::FollowingUp,
    Phase::Ended,
];

/// A phase in words, as the views show it.
pub fn phase_word(p: Phase) -> &'static str {
    match p {
        Phase::Discovered => "discovered",
        Phase::Baselined => "baselined",
        Phase::Excluded => "excluded",
        Phase::Eligible => "eligible",
        Phase::Allocated => "allocated",
        Phase::Intended => "dose intended",
        Phase::Enqueued => "dosed",
        Phase::Uncertain => "dose uncertain",
        Phase::Failed => "dose failed",
        Phase::Withheld => "dose withheld",
        Phase::FollowingUp => "following up",
        Phase::Ended => "ended",
    }
}

/// The column titles of a [`Row`], in order.
pub const COLUMNS: [&str; 8] = [
    "device",
    "model",
    "iOS",
    "arm",
    "phase",
    "download",
    "last answer",
    "since dose",
];

/// One device's row: every cell already text (`-` where the journal has nothing yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub udid: String,
    pub phase: Phase,
    pub cells: [String; 8],
}

/// The header: the trial, T+ (lab time since the first dose), the follow-up time left and
/// how many devices are in each phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub trial_id: String,
    /// `T+3m05s`, or `before the first dose`.
    pub t_plus: String,
    /// `1h12m left`, `over`, or `-` when no device is in follow-up.
    pub follow_up_left: String,
    /// Non-zero counts, in [`PHASES`] order.
    pub counts: Vec<(Phase, usize)>,
    /// `lab time ×60` when the lab's time runs faster than the wall clock (a simulated lab).
    pub time_scale: Option<String>,
    /// `finished`, `interrupted`, `stopped by rule …` or `running`.
    pub state: String,
}

/// What the views draw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Board {
    pub header: Header,
    pub rows: Vec<Row>,
}

/// What the views need besides the fold: the protocol's follow-up limit (lab time).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub follow_up_max_s: Option<f64>,
}

/// The board at `now` (an RFC 3339 time, like the journal's).
pub fn board(fold: &Fold, limits: Limits, now: &str) -> Board {
    let scale = fold.record.run().time_scale.unwrap_or(1.0);
    let lab_since = |at: &str| seconds_between(at, now).map(|s| s * scale);
    let first_dose = fold
        .devices
        .values()
        .filter_map(|d| d.first_dose_at.as_deref())
        .min();
    let t_plus = first_dose
        .and_then(lab_since)
        .map(|s| format!("T+{}", span(s)))
        .unwrap_or_else(|| "before the first dose".into());
    let left = fold
        .devices
        .values()
        .filter(|d| !d.ended())
        .filter_map(|d| Some(limits.follow_up_max_s? - lab_since(d.first_dose_at.as_deref()?)?))
        .reduce(f64::max);
    let follow_up_left = match left {
        Some(s) if s > 0.0 => format!("{} left", span(s)),
        Some(_) => "over".into(),
        None => "-".into(),
    };
    let counts = PHASES
        .iter()
        .map(|p| (*p, fold.devices.values().filter(|d| d.phase == *p).count()))
        .filter(|(_, n)| *n > 0)
        .collect();
    let state = if fold.finished {
        "finished".to_string()
    } else if let Some((rule, _)) = fold.stop_rules.first() {
        format!("stopped by rule {rule}")
    } else if fold.interrupted {
        "interrupted".into()
    } else {
        "running".into()
    };
    let header = Header {
        trial_id: fold.trial_id.clone().unwrap_or_else(|| "-".into()),
        t_plus,
        follow_up_left,
        counts,
        time_scale: match (fold.record.run().simulated, scale != 1.0) {
            (true, _) => Some(format!("simulated lab, time ×{}", num(scale))),
            (false, true) => Some(format!("lab time ×{}", num(scale))),
            (false, false) => None,
        },
        state,
    };
    let rows = fold
        .order
        .iter()
        .filter_map(|u| Some(row(fold, u, fold.devices.get(u)?, now, scale)))
        .collect();
    Board { header, rows }
}

fn row(fold: &Fold, udid: &str, d: &DeviceFacts, now: &str, scale: f64) -> Row {
    let history = fold.record.device(udid).map(|i| &fold.record.devices()[i]);
    let probe = d.probe.as_ref();
    let name = probe
        .and_then(|p| p.device_name.clone())
        .unwrap_or_else(|| udid.chars().take(14).collect());
    let model = probe
        .and_then(|p| p.product_type.as_deref())
        .map(|t| {
            crate::models::lookup(t)
                .map(|m| m.marketing_name.clone())
                .unwrap_or_else(|| t.to_string())
        })
        .unwrap_or_else(|| "-".into());
    let before = probe.and_then(|p| p.product_version.clone());
    let now_v = d
        .last_reprobe
        .as_ref()
        .filter(|r| r.attached)
        .and_then(|r| r.product_version.clone());
    let ios = match (before, now_v) {
        (Some(b), Some(n)) if b != n => format!("{b} → {n}"),
        (Some(b), _) => b,
        (None, Some(n)) => n,
        (None, None) => "-".into(),
    };
    let pct = history.and_then(|h| {
        h.answers
            .iter()
            .rev()
            .filter_map(|a| a.report.os_items.as_deref()?.first())
            .find_map(|i| i.download_percent_complete)
    });
    let download = if d.downloaded {
        "downloaded".to_string()
    } else if let Some(p) = pct {
        format!("{:.0}%", p * 100.0)
    } else {
        "-".into()
    };
    let answer = history
        .and_then(|h| h.answers.last())
        .map(|a| {
            let item = a
                .report
                .os_items
                .as_deref()
                .and_then(|i| i.first())
                .and_then(|i| i.status.as_deref().map(|s| format!(": {s}")))
                .unwrap_or_default();
            format!(
                "{} {}{item}",
                a.request_type.as_deref().unwrap_or("?"),
                a.status
            )
        })
        .or_else(|| {
            history
                .and_then(|h| h.ddm_reports.last())
                .map(|_| "DDM status report".to_string())
        })
        .unwrap_or_else(|| "-".into());
    let since_dose = d
        .first_dose_at
        .as_deref()
        .and_then(|at| seconds_between(at, now))
        .map(|s| span(s * scale))
        .unwrap_or_else(|| "-".into());
    Row {
        udid: udid.to_string(),
        phase: d.phase,
        cells: [
            name,
            model,
            ios,
            d.arm.clone().unwrap_or_else(|| "-".into()),
            phase_word(d.phase).to_string(),
            download,
            answer,
            since_dose,
        ],
    }
}

/// A number without a needless `.0`.
fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// Seconds as `45s`, `3m05s`, `1h02m` (negative as `0s`).
pub fn span(s: f64) -> String {
    let s = if s.is_finite() { s.max(0.0) as u64 } else { 0 };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// The header as two lines of text: the run and its clock, then the counts per phase (a narrow
/// terminal cuts lines; the counts keep a line of their own).
pub fn header_lines(h: &Header) -> [String; 2] {
    let counts = h
        .counts
        .iter()
        .map(|(p, n)| format!("{n} {}", phase_word(*p)))
        .collect::<Vec<_>>()
        .join(" · ");
    [
        format!(
            "{} — {}{} · {} · follow-up {}",
            h.trial_id,
            h.state,
            h.time_scale
                .as_deref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default(),
            h.t_plus,
            h.follow_up_left,
        ),
        if counts.is_empty() {
            "no devices yet".into()
        } else {
            counts
        },
    ]
}

/// The board as aligned text lines: the header, the column titles, one line per device. Cells
/// are cut to `width` characters per line at most (a terminal's width; `None`: no limit).
pub fn lines(b: &Board, width: Option<usize>) -> Vec<String> {
    let mut w: Vec<usize> = COLUMNS.iter().map(|c| c.chars().count()).collect();
    for r in &b.rows {
        for (i, c) in r.cells.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let fmt = |cells: &[&str]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(c);
            if i + 1 < cells.len() {
                s.extend(std::iter::repeat_n(' ', w[i] - c.chars().count()));
            }
        }
        s
    };
    let [run, counts] = header_lines(&b.header);
    let mut out = vec![run, counts, fmt(&COLUMNS)];
    for r in &b.rows {
        let cells: Vec<&str> = r.cells.iter().map(String::as_str).collect();
        out.push(fmt(&cells));
    }
    if let Some(width) = width {
        for l in &mut out {
            if l.chars().count() > width {
                *l = l.chars().take(width.saturating_sub(1)).collect::<String>() + "…";
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "live_view_tests.rs"]
mod tests;
