//! Formatting shared by the reports: CSV text, cells, journal references, times and durations,
//! and escaping for HTML. One place, so a cell or a time reads the same in every report.
//! (`crate::format::json_cell`, shared with the detectors, stays in the plumbing layer.)

use chrono::{DateTime, FixedOffset, Utc};

/// Escape text for HTML element content and attribute values (also SVG).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab/newline are not allowed in HTML text.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// At most `n` characters, with an ellipsis when cut.
pub(crate) fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

pub(crate) type Time = DateTime<FixedOffset>;

/// A moment, whatever offset it was written with (lanes only compare and subtract them).
pub(crate) type Instant = DateTime<Utc>;

pub(crate) fn parse_time(s: &str) -> Option<Time> {
    DateTime::parse_from_rfc3339(s).ok()
}

/// An entry's time as an [`Instant`], when it parses.
pub(crate) fn parse_instant(s: &str) -> Option<Instant> {
    parse_time(s).map(|t| t.with_timezone(&Utc))
}

/// Signed seconds as `T+1h02m`, `T+3m05s`, `T+12s`, `T−4s` (relative to the first dose).
pub fn rel(secs: f64) -> String {
    let sign = if secs < -0.5 { "−" } else { "+" };
    let s = secs.abs().round() as i64;
    let body = if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    };
    format!("T{sign}{body}")
}

/// A duration in seconds, unsigned, as `1h02m`, `3m05s`, `12s`, `0.4s`.
pub(crate) fn dur(secs: f64) -> String {
    if secs.abs() < 9.95 {
        return format!("{:.1}s", secs.abs());
    }
    rel(secs.abs()).trim_start_matches("T+").to_string()
}
