//! `observations.csv`: the observation series — every MDM answer, USB re-probe and
//! operator/harness observation, in journal order, each pointing back at its journal line.

use super::seq_ref;
use crate::journal::fold::decode_report;
use crate::journal::report_xml::StatusAnswer;
use crate::journal::{Entry, Event};
use crate::mdm::report::{Report, lenient_bool, lenient_real, query_responses};
use crate::plist_util::type_name;
use plist::Value;
use std::fmt::Write as _;

pub const HEADER: [&str; 9] = [
    "time",
    "udid",
    "source",
    "kind",
    "key",
    "value",
    "raw_type",
    "command_uuid",
    "raw_ref",
];

/// Writes the rows of one journal event at a time (the series of a long run does not fit in
/// memory as rows of strings).
pub(crate) struct Sink<W: std::io::Write> {
    w: Csv<W>,
}

/// CSV records written as the `csv` crate writes them with CRLF terminators and its default
/// quoting (a field is quoted when it holds a comma, a double quote, CR or LF; quotes in it are
/// doubled), without the crate's byte-at-a-time state machine (a million answers write seven
/// million rows). Records here always have several fields (the crate quotes a lone empty one).
struct Csv<W: std::io::Write> {
    w: W,
    buf: Vec<u8>,
    /// The cells one event's rows share, written once per event ([`Rows::new`]): the first
    /// four, each followed by a comma, and the last two, each after a comma, then CRLF.
    head: Vec<u8>,
    tail: Vec<u8>,
    /// `{x:.4}` of the fractions seen (a run repeats a few hundred download percentages a
    /// million times; formatting a float exactly is slow).
    fixed4: rustc_hash::FxHashMap<u64, Box<str>>,
}

impl<W: std::io::Write> Csv<W> {
    const FLUSH_AT: usize = 1 << 16;

    fn new(w: W) -> Csv<W> {
        Csv {
            w,
            buf: Vec::with_capacity(Self::FLUSH_AT + 1024),
            head: Vec::new(),
            tail: Vec::new(),
            fixed4: Default::default(),
        }
    }

    fn write_record<const N: usize>(&mut self, fields: [&str; N]) -> csv::Result<()> {
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            put_field(&mut self.buf, f);
        }
        self.buf.extend_from_slice(b"\r\n");
        self.flush_full()
    }

    /// A record of the event's shared cells (`head`, `tail`) around these three.
    fn write_row(&mut self, [key, value, raw_type]: [&str; 3]) -> csv::Result<()> {
        self.buf.extend_from_slice(&self.head);
        put_field(&mut self.buf, key);
        self.buf.push(b',');
        put_field(&mut self.buf, value);
        self.buf.push(b',');
        put_field(&mut self.buf, raw_type);
        self.buf.extend_from_slice(&self.tail);
        self.flush_full()
    }

    fn flush_full(&mut self) -> csv::Result<()> {
        if self.buf.len() >= Self::FLUSH_AT {
            self.w.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Append `{x:.4}` to `out`.
    fn fixed4(&mut self, x: f64, out: &mut String) {
        const KEEP: usize = 4096;
        if let Some(t) = self.fixed4.get(&x.to_bits()) {
            out.push_str(t);
            return;
        }
        let from = out.len();
        let _ = write!(out, "{x:.4}");
        if self.fixed4.len() < KEEP {
            self.fixed4.insert(x.to_bits(), out[from..].into());
        }
    }

    fn into_inner(mut self) -> std::io::Result<W> {
        self.w.write_all(&self.buf)?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// One field as the `csv` crate writes it: quoted when it needs to be, quotes doubled.
fn put_field(buf: &mut Vec<u8>, f: &str) {
    let b = f.as_bytes();
    if needs_quotes(b) {
        buf.push(b'"');
        for &c in b {
            if c == b'"' {
                buf.push(b'"');
            }
            buf.push(c);
        }
        buf.push(b'"');
    } else {
        buf.extend_from_slice(b);
    }
}

/// A field holds a comma, a double quote, CR or LF: eight bytes at a time (most fields are
/// short and clean, and there are sixty million of them).
fn needs_quotes(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Non-zero exactly when some byte of `w` is `c` (a zero byte of `w ^ c…c`).
    let has = |w: u64, c: u8| {
        let x = w ^ (ONES * c as u64);
        x.wrapping_sub(ONES) & !x & HIGH
    };
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        if has(w, b',') | has(w, b'"') | has(w, b'\r') | has(w, b'\n') != 0 {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|c| matches!(c, b',' | b'"' | b'\r' | b'\n'))
}

/// The rows of one event: the cells they share are escaped once.
struct Rows<'a, W: std::io::Write> {
    w: &'a mut Csv<W>,
}

impl<'a, W: std::io::Write> Rows<'a, W> {
    /// Rows with these time, udid, source, kind, command_uuid and journal reference.
    fn new(w: &'a mut Csv<W>, [time, udid, source, kind, command_uuid, r]: [&str; 6]) -> Self {
        w.head.clear();
        for f in [time, udid, source, kind] {
            put_field(&mut w.head, f);
            w.head.push(b',');
        }
        w.tail.clear();
        for f in [command_uuid, r] {
            w.tail.push(b',');
            put_field(&mut w.tail, f);
        }
        w.tail.extend_from_slice(b"\r\n");
        Rows { w }
    }

    fn push(&mut self, key: &str, value: &str, raw_type: &str) -> csv::Result<()> {
        self.w.write_row([key, value, raw_type])
    }
}

fn dicts<'a>(report: &'a Report, key: &str) -> Vec<&'a plist::Dictionary> {
    report
        .body
        .get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_dictionary).collect())
        .unwrap_or_default()
}

fn s<'a>(d: &'a plist::Dictionary, k: &str) -> &'a str {
    d.get(k).and_then(Value::as_string).unwrap_or_default()
}

fn mdm_rows<W: std::io::Write>(
    rows: &mut Rows<W>,
    request_type: Option<&str>,
    status: &str,
    report: &Result<Report, String>,
) -> csv::Result<()> {
    rows.push("Status", status, "")?;
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            return rows.push("raw", &format!("unreadable: {e}"), "");
        }
    };
    for (i, e) in report.error_chain.iter().enumerate() {
        let v = format!(
            "{} {}: {}",
            e.domain.as_deref().unwrap_or(""),
            e.code.map(|c| c.to_string()).unwrap_or_default(),
            e.us_english_description
                .as_deref()
                .or(e.localized_description.as_deref())
                .unwrap_or("")
        );
        rows.push(&format!("ErrorChain[{i}]"), &v, "")?;
    }
    match request_type {
        Some("ScheduleOSUpdate") => {
            for (i, d) in dicts(report, "UpdateResults").into_iter().enumerate() {
                let v = format!(
                    "{}:{}:{}",
                    s(d, "ProductKey"),
                    s(d, "InstallAction"),
                    s(d, "Status")
                );
                rows.push(&format!("UpdateResults[{i}]"), &v, "")?;
            }
        }
        Some("OSUpdateStatus") => {
            let mut k = String::new();
            for (i, d) in dicts(report, "OSUpdateStatus").into_iter().enumerate() {
                let pct = d.get("DownloadPercentComplete");
                let dl = d.get("IsDownloaded");
                status_item_rows(
                    rows,
                    &mut k,
                    i,
                    [s(d, "ProductKey"), s(d, "Status")],
                    (
                        lenient_real(pct, None).value,
                        pct.map(type_name).unwrap_or("absent"),
                    ),
                    (
                        lenient_bool(dl).value,
                        dl.map(type_name).unwrap_or("absent"),
                    ),
                )?;
            }
        }
        Some("DeviceInformation") => {
            if let Some(q) = query_responses(report) {
                for key in ["OSVersion", "BuildVersion"] {
                    if let Some(v) = q.get(key) {
                        rows.push(key, v.as_string().unwrap_or_default(), type_name(v))?;
                    }
                }
            }
        }
        Some("AvailableOSUpdates") => {
            for (i, d) in dicts(report, "AvailableOSUpdates").into_iter().enumerate() {
                let v = format!(
                    "{}:{}:{}",
                    s(d, "ProductKey"),
                    s(d, "Version"),
                    s(d, "Build")
                );
                rows.push(&format!("AvailableOSUpdates[{i}]"), &v, "")?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The rows of one `OSUpdateStatus` item: product key and status, then the percentage and
/// `IsDownloaded` read leniently, each with its raw type. `k` is scratch space.
fn status_item_rows<W: std::io::Write>(
    rows: &mut Rows<W>,
    k: &mut String,
    i: usize,
    [product_key, status]: [&str; 2],
    (pct, pct_type): (Option<f64>, &str),
    (dl, dl_type): (Option<bool>, &str),
) -> csv::Result<()> {
    // `OSUpdateStatus[{i}].` once, then each name after it.
    k.clear();
    let _ = write!(k, "OSUpdateStatus[{i}].");
    let at = k.len();
    let key = |k: &mut String, x: &str| {
        k.truncate(at);
        k.push_str(x);
    };
    key(k, "ProductKey");
    rows.push(k, product_key, "")?;
    key(k, "Status");
    rows.push(k, status, "")?;
    let mut v = String::new();
    if let Some(x) = pct {
        rows.w.fixed4(x, &mut v);
    }
    key(k, "DownloadPercentComplete");
    rows.push(k, &v, pct_type)?;
    let v = match dl {
        Some(true) => "true",
        Some(false) => "false",
        None => "",
    };
    key(k, "IsDownloaded");
    rows.push(k, v, dl_type)
}

impl<W: std::io::Write> Sink<W> {
    /// The rows of an `MdmResult` answering an OSUpdateStatus command, read without a plist
    /// tree: the same as [`Sink::event`] with its report.
    pub fn status_event(&mut self, e: &Entry, st: &StatusAnswer) -> csv::Result<()> {
        let Event::MdmResult {
            udid,
            command_uuid,
            status,
            received_at,
            ..
        } = &e.event
        else {
            return Ok(());
        };
        let r = seq_ref(e.seq);
        let mut rows = Rows::new(
            &mut self.w,
            [
                answer_time(e, received_at),
                udid,
                "mdm",
                "OSUpdateStatus",
                command_uuid,
                &r,
            ],
        );
        rows.push("Status", status, "")?;
        let mut k = String::new();
        for (i, it) in st.items.iter().enumerate() {
            status_item_rows(
                &mut rows,
                &mut k,
                i,
                [&it.product_key, &it.status],
                (Some(it.download_percent_complete), "real"),
                (Some(it.is_downloaded), "boolean"),
            )?;
        }
        Ok(())
    }

    /// Start the file: the header row.
    pub fn new(w: W) -> csv::Result<Sink<W>> {
        let mut w = Csv::new(w);
        w.write_record(HEADER)?;
        Ok(Sink { w })
    }

    /// The rows of one entry; an `MdmResult` comes with its request type (its own, else the
    /// one of its CommandUUID) and its decoded report.
    pub fn event(
        &mut self,
        e: &Entry,
        answer: Option<(Option<&str>, &Result<Report, String>)>,
    ) -> csv::Result<()> {
        let r = seq_ref(e.seq);
        match &e.event {
            Event::MdmResult {
                udid,
                command_uuid,
                status,
                received_at,
                ..
            } => {
                let Some((rt, report)) = answer else {
                    return Ok(());
                };
                let mut rows = Rows::new(
                    &mut self.w,
                    [
                        answer_time(e, received_at),
                        udid,
                        "mdm",
                        rt.unwrap_or("unknown"),
                        command_uuid,
                        &r,
                    ],
                );
                mdm_rows(&mut rows, rt, status, report)?;
            }
            Event::DeviceReprobed {
                udid,
                attached,
                product_version,
                build_version,
                error,
                network,
                network_source,
            } => {
                let mut rows = Rows::new(&mut self.w, [&e.at, udid, "usb", "reprobe", "", &r]);
                rows.push("attached", if *attached { "true" } else { "false" }, "")?;
                for (k, v) in [
                    ("product_version", product_version),
                    ("build_version", build_version),
                    ("error", error),
                ] {
                    if let Some(v) = v {
                        rows.push(k, v, "")?;
                    }
                }
                // The network state (issue 14), in re-probes journaled since it exists.
                if let Some(n) = network {
                    rows.push("network", n.as_str(), "")?;
                }
                if let Some(s) = network_source {
                    rows.push("network_source", s, "")?;
                }
            }
            Event::Observation {
                udid,
                source,
                kind,
                key,
                value,
            } => {
                let mut rows = Rows::new(
                    &mut self.w,
                    [
                        &e.at,
                        udid.as_deref().unwrap_or(""),
                        source.as_str(),
                        kind,
                        "",
                        &r,
                    ],
                );
                rows.push(key, value, "")?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Flush the rows and hand back the writer.
    pub fn finish(self) -> std::io::Result<W> {
        self.w.into_inner()
    }
}

/// The time of an answer: when it was received, else when it was journalled.
fn answer_time<'a>(e: &'a Entry, received_at: &'a str) -> &'a str {
    if super::format::parse_time(received_at).is_some() {
        received_at
    } else {
        &e.at
    }
}

pub fn render(entries: &[Entry]) -> String {
    let request_types = crate::journal::request_types(entries);
    let mut sink = Sink::new(Vec::new()).expect("writing to memory");
    for e in entries {
        let report;
        let mut answer = None;
        if let Event::MdmResult {
            command_uuid,
            request_type,
            raw_b64,
            ..
        } = &e.event
        {
            let rt = request_type
                .as_deref()
                .or_else(|| request_types.get(command_uuid.as_str()).copied());
            report = decode_report(raw_b64);
            answer = Some((rt, &report));
        }
        sink.event(e, answer).expect("writing to memory");
    }
    String::from_utf8(sink.finish().expect("writing to memory")).expect("CSV of strings is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::ObservationSource;
    use crate::report::tests_util::{cell, parse};
    use crate::verdicts::outcome::testkit::J;
    use plist::Value as P;

    #[test]
    fn mdm_usb_and_operator_rows_with_raw_refs() {
        let mut j = J::new();
        j.device("U", true)
            .allocate("U", "a")
            .consent(&["U"])
            .dose("U", 1, "C1")
            .schedule_answer("U", "C1", "Acknowledged")
            .status("U", "S1", 0.503_018_498_420_715_3, P::Integer(0.into()))
            .reprobe("U", false, None);
        j.push(Event::Observation {
            udid: Some("U".into()),
            source: ObservationSource::Operator,
            kind: "prompt".into(),
            key: "update_prompt_shown".into(),
            value: "yes, \"Install Now\"".into(),
        });
        let seq_obs = j.entries.last().unwrap().seq;
        let (h, rows) = parse(&render(&j.entries));
        assert_eq!(h, HEADER);
        let find = |key: &str| {
            rows.iter()
                .find(|r| cell(&h, r, "key") == key)
                .unwrap_or_else(|| panic!("no row {key}"))
        };
        let st = find("Status");
        assert_eq!(cell(&h, st, "source"), "mdm");
        assert_eq!(cell(&h, st, "kind"), "ScheduleOSUpdate");
        assert_eq!(cell(&h, st, "command_uuid"), "C1");
        assert_eq!(
            cell(&h, find("UpdateResults[0]"), "value"),
            "iOSUpdate19H390:DownloadOnly:Downloading"
        );
        let pct = find("OSUpdateStatus[0].DownloadPercentComplete");
        assert_eq!(cell(&h, pct, "value"), "0.5030");
        assert_eq!(cell(&h, pct, "raw_type"), "real");
        assert_eq!(cell(&h, pct, "kind"), "OSUpdateStatus");
        let dl = find("OSUpdateStatus[0].IsDownloaded");
        assert_eq!(cell(&h, dl, "value"), "false");
        assert_eq!(cell(&h, dl, "raw_type"), "integer");
        let at = find("attached");
        assert_eq!(cell(&h, at, "source"), "usb");
        assert_eq!(cell(&h, at, "value"), "false");
        let op = find("update_prompt_shown");
        assert_eq!(cell(&h, op, "source"), "operator");
        assert_eq!(cell(&h, op, "value"), "yes, \"Install Now\"");
        assert_eq!(
            cell(&h, op, "raw_ref"),
            format!("journal.jsonl#seq={seq_obs}")
        );
    }

    /// Issue 14: a re-probe's network state and its source are rows of the re-probe.
    #[test]
    fn a_reprobe_shows_its_network_state_and_source() {
        let mut j = J::new();
        j.device("U", true).reprobe("U", false, None);
        j.push(Event::DeviceReprobed {
            udid: "U".into(),
            attached: true,
            product_version: Some("17.5.1".into()),
            build_version: Some("21F90".into()),
            error: None,
            network: Some(crate::journal::fold::baseline_facts::Network::Wifi),
            network_source: Some("inferred (DeviceInformation answered t0)".into()),
        });
        let (h, rows) = parse(&render(&j.entries));
        let keyed = |key: &str| -> Vec<&Vec<String>> {
            rows.iter().filter(|r| cell(&h, r, "key") == key).collect()
        };
        // Only the attached re-probe has one (the detached one read nothing).
        let n = keyed("network");
        assert_eq!(n.len(), 1, "{rows:?}");
        assert_eq!(cell(&h, n[0], "value"), "wifi");
        assert_eq!(cell(&h, n[0], "source"), "usb");
        assert_eq!(cell(&h, n[0], "kind"), "reprobe");
        let s = keyed("network_source");
        assert_eq!(
            cell(&h, s[0], "value"),
            "inferred (DeviceInformation answered t0)"
        );
        assert_eq!(cell(&h, s[0], "raw_ref"), cell(&h, n[0], "raw_ref"));
    }

    /// The rows are those the `csv` crate writes.
    #[test]
    fn csv_records_as_the_crate_writes_them() {
        let cells = [
            "",
            "plain",
            "a,b",
            "say \"hi\"",
            "\"",
            "cr\rlf",
            "lf\n",
            "crlf\r\n",
            "é ✓",
            "#x",
            " sp ",
            "tab\t",
            "back\\slash",
            "'q'",
            ",",
            "\"\"",
        ];
        let mut ours = Csv::new(Vec::new());
        let mut theirs = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(Vec::new());
        for (i, a) in cells.iter().enumerate() {
            for b in &cells {
                let rec = [*a, *b, cells[(i + 3) % cells.len()]];
                ours.write_record(rec).unwrap();
                theirs.write_record(rec).unwrap();
            }
        }
        ours.write_record(["", "", ""]).unwrap();
        theirs.write_record(["", "", ""]).unwrap();
        assert_eq!(
            String::from_utf8(ours.into_inner().unwrap()).unwrap(),
            String::from_utf8(theirs.into_inner().unwrap()).unwrap()
        );
    }

    /// The rows of one event (shared cells escaped once) are the records the crate writes,
    /// and the word-at-a-time scan finds every special byte at every place in a field.
    #[test]
    fn rows_of_an_event_and_the_quoting_scan() {
        let mut ours = Csv::new(Vec::new());
        let mut theirs = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(Vec::new());
        let shared = [
            "2026-11-27T10:00:00Z",
            "U,1",
            "mdm",
            "k\"",
            "C\r\n",
            "journal.jsonl#seq=1",
        ];
        let mut rows = Rows::new(&mut ours, shared);
        for row in [["a", "b", ""], ["x,y", "", "real"], ["", "", ""]] {
            rows.push(row[0], row[1], row[2]).unwrap();
            let [t, u, so, k, c, r] = shared;
            theirs
                .write_record([t, u, so, k, row[0], row[1], row[2], c, r])
                .unwrap();
        }
        assert_eq!(
            String::from_utf8(ours.into_inner().unwrap()).unwrap(),
            String::from_utf8(theirs.into_inner().unwrap()).unwrap()
        );
        for len in 0..20 {
            for at in 0..len {
                for c in 0..=255u8 {
                    let mut b = vec![b'a'; len];
                    b[at] = c;
                    assert_eq!(
                        needs_quotes(&b),
                        matches!(c, b',' | b'"' | b'\r' | b'\n'),
                        "{len} {at} {c}"
                    );
                }
            }
            assert!(!needs_quotes(&vec![b'a'; len]));
        }
        let mut w = Csv::new(Vec::new());
        for x in [0.0, 0.01, 0.125, 0.33, 0.99995, 1.0, 0.12345] {
            for _ in 0..2 {
                let mut v = String::new();
                w.fixed4(x, &mut v);
                assert_eq!(v, format!("{x:.4}"));
            }
        }
    }
}
