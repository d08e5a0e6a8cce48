//! Formatting shared by the reports: CSV text, cells, journal references, times and durations,
//! and escaping for HTML. One place, so a cell or a time reads the same in every report.
//! (`crate::format::json_cell`, shared with the detectors, stays in the plumbing layer.)

use chrono::{DateTime, FixedOffset, Utc};

pub(crate) use crate::format::json_cell;

/// RFC 4180 text: the header, then the rows.
pub(crate) fn to_csv(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    w.write_record(header).expect("writing to memory");
    for r in rows {
        debug_assert_eq!(r.len(), header.len(), "row width for {header:?}");
        w.write_record(r).expect("writing to memory");
    }
    String::from_utf8(w.into_inner().expect("writing to memory")).expect("CSV of strings is UTF-8")
}

/// A journal string as a piece of a file name: anything but ASCII letters, digits, `-`, `_` and
/// `.` becomes `_` (the journal is trusted, but a path is a path).
pub(crate) fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// [`file_safe`] without leading dots (no hidden file, no `..`): how the `ddm/` evidence files
/// and the answers `crf.csv` names are called.
pub(crate) fn file_safe_name(s: &str) -> String {
    file_safe(s).trim_start_matches('.').to_string()
}

/// `journal.jsonl#seq=N`: where a row's evidence is.
pub(crate) fn seq_ref(seq: u64) -> String {
    format!("journal.jsonl#seq={seq}")
}

pub(crate) fn seq_refs(seqs: impl IntoIterator<Item = u64>) -> String {
    seqs.into_iter().map(seq_ref).collect::<Vec<_>>().join(";")
}

pub(crate) fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

/// Seconds with millisecond precision.
pub(crate) fn secs(x: Option<f64>) -> String {
    x.map(|x| format!("{x:.3}")).unwrap_or_default()
}

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

/// An RFC 3339 time, as chrono's `parse_from_rfc3339` reads it. The harness writes every time
/// as `YYYY-MM-DDTHH:MM:SS[.f…]Z`; that form is read by [`utc_z`], any other by chrono (on
/// 1 M journal events chrono's general parser was ~1.5 % of `lab report`'s CPU, all of it on
/// the folding thread).
pub(crate) fn parse_time(s: &str) -> Option<Time> {
    match utc_z(s.as_bytes()) {
        Some(t) => Some(t.fixed_offset()),
        None => DateTime::parse_from_rfc3339(s).ok(),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` or `YYYY-MM-DDTHH:MM:SS.fZ` with 1–9 fraction digits, a valid date
/// and a second below 60; `None` for anything else (chrono then decides, leap seconds
/// included).
fn utc_z(b: &[u8]) -> Option<Instant> {
    if b.len() < 20 || b.len() > 30 || *b.last()? != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let nanos = match b[19] {
        b'Z' if b.len() == 20 => 0,
        b'.' if (22..=30).contains(&b.len()) => {
            let digits = b.len() - 21;
            num(20..b.len() - 1)? * 10u32.pow(9 - digits as u32)
        }
        _ => return None,
    };
    if sec >= 60 {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let time = chrono::NaiveTime::from_hms_nano_opt(hour, min, sec, nanos)?;
    Some(date.and_time(time).and_utc())
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

/// A Markdown table cell: pipes escaped, line breaks as spaces, `unknown` when empty.
pub(crate) fn md_cell(s: &str) -> String {
    let s = s.replace('|', "\\|").replace(['\r', '\n'], " ");
    if s.is_empty() { "unknown".into() } else { s }
}

/// Journal references in Markdown: `` `journal.jsonl#seq=N` ``, comma-separated.
pub(crate) fn md_seq_refs(seqs: &[u64]) -> String {
    seqs.iter()
        .map(|s| format!("`journal.jsonl#seq={s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A protocol duration as a person writes it: `2 h`, `5 min`, `30 s`, `250 ms`.
pub(crate) fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s > 0 && s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else if s > 0 && s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else if d.subsec_millis() == 0 {
        format!("{s} s")
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The fast reading of the harness's own time form agrees with chrono's on that form and
    /// on its near misses (which it leaves to chrono).
    #[test]
    fn times_read_as_chrono_reads_them() {
        let cases = [
            "2026-11-27T10:00:00Z",
            "2026-11-27T10:00:00.001Z",
            "2026-11-27T10:00:00.123456789Z",
            "2026-11-27T10:00:00.1234567891Z",
            "2026-11-27T10:00:00.Z",
            "2026-11-27T23:59:60Z",
            "2016-12-31T23:59:60.5Z",
            "2026-02-29T10:00:00Z",
            "2024-02-29T10:00:00Z",
            "2026-13-01T10:00:00Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27t10:00:00z",
            "2026-11-27 10:00:00Z",
            "2026-11-27T10:00:00+02:00",
            "2026-11-27T10:00:00.5-00:30",
            "2026-11-27T10:0a:00Z",
            "+026-11-27T10:00:00Z",
            "0000-01-01T00:00:00Z",
            "2026-11-27T10:00:00",
            "",
            "Z",
            "2026-11-27T10:00:00.0000000000000000Z",
        ];
        for c in cases {
            let chrono = DateTime::parse_from_rfc3339(c).ok();
            assert_eq!(parse_time(c), chrono, "{c:?}");
            assert_eq!(
                parse_instant(c),
                chrono.map(|t| t.with_timezone(&Utc)),
                "{c:?}"
            );
        }
        assert!(
            utc_z(b"2026-11-27T10:00:00.001Z").is_some(),
            "the fast path is taken"
        );
    }

    #[test]
    fn cells_references_and_durations_read_as_the_reports_print_them() {
        assert_eq!(md_cell("a|b\r\nc"), "a\\|b  c");
        assert_eq!(md_cell(""), "unknown");
        assert_eq!(
            md_seq_refs(&[3, 7]),
            "`journal.jsonl#seq=3`, `journal.jsonl#seq=7`"
        );
        assert_eq!(seq_refs([1, 2]), "journal.jsonl#seq=1;journal.jsonl#seq=2");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2 h");
        assert_eq!(human_duration(Duration::from_secs(300)), "5 min");
        assert_eq!(human_duration(Duration::from_secs(45)), "45 s");
        assert_eq!(human_duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(secs(Some(1.23456)), "1.235");
        assert_eq!(secs(None), "");
        assert_eq!(dur(4.04), "4.0s");
        assert_eq!(dur(-185.0), "3m05s");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(
            to_csv(&["a", "b"], &[vec!["x,y".into(), "z".into()]]),
            "a,b\r\n\"x,y\",z\r\n"
        );
    }
}
