//! A strict, fast reader for the XML plists devices answer with, for the reports.
//!
//! A long run journals a million answers, and reading them with the `plist` crate (an XML
//! event reader, then a value builder) is most of `lab report`'s time. The answers are nearly
//! all the same small shape: an XML declaration and DOCTYPE, `<plist>`, one dictionary of
//! strings, reals, integers, booleans, data, arrays and dictionaries (the plist subset
//! `plist_util::fast` reads). [`parse_report`] reads exactly that subset and gives the same
//! [`Report`] `mdm::report::parse_report` gives; anything outside it — entities, CDATA,
//! comments, CR line ends, attributes, dates, an `ErrorChain`, a missing `Status`, trailing
//! NULs, a binary plist — is declined (`None`) and
//! the caller reads the bytes the general way. So the fast path never decides an outcome on
//! its own: where it reads, it agrees with the crate (tested below), and where it might not,
//! it does not read.

use crate::mdm::report::{Report, ReportStatus};
use crate::plist_util::fast::{self, Reader, close, open};
use plist::Value;

/// The report in `raw`, when it is in the subset this reader reads.
pub fn parse_report(raw: &[u8]) -> Option<Report> {
    if raw.starts_with(b"bplist00") || raw.last() == Some(&0) {
        return None;
    }
    let Value::Dictionary(body) = fast::parse(raw)? else {
        return None;
    };
    let status = match body.get("Status")? {
        Value::String(s) => ReportStatus::parse(s),
        _ => return None,
    };
    let text = |k: &str| body.get(k).and_then(Value::as_string).map(str::to_string);
    let udid = text("UDID");
    let enrollment_id = text("EnrollmentID");
    if (udid.is_none() && enrollment_id.is_none()) || body.contains_key("ErrorChain") {
        return None;
    }
    Some(Report {
        udid,
        enrollment_id,
        command_uuid: text("CommandUUID"),
        status,
        error_chain: Vec::new(),
        body,
        raw: raw.to_vec(),
    })
}

/// An OSUpdateStatus answer in its usual shape, read without a plist tree: a dictionary of
/// exactly `CommandUUID`, `Status`, `UDID` (strings) and `OSUpdateStatus`, an array of
/// dictionaries of exactly `ProductKey`, `Status` (strings), `DownloadPercentComplete` (a real
/// in 0–1) and `IsDownloaded` (a boolean), each key once. Such an answer has no deviation to
/// note, no error chain and nothing else a report reads; anything else is declined (`None`)
/// and read as a [`Report`]. Same subset rules as [`parse_report`] otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusAnswer {
    pub items: Vec<StatusItem>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusItem {
    pub product_key: String,
    pub status: String,
    pub download_percent_complete: f64,
    pub is_downloaded: bool,
}

/// The answer in `raw`, when it is an OSUpdateStatus answer of the usual shape.
pub fn parse_status(raw: &[u8]) -> Option<StatusAnswer> {
    if raw.starts_with(b"bplist00") || raw.last() == Some(&0) {
        return None;
    }
    let mut p = open(raw)?;
    if !p.eat(b"<dict>") {
        return None;
    }
    let (mut uuid, mut status, mut udid, mut items) = (false, false, false, None);
    loop {
        p.ws();
        if p.eat(b"</dict>") {
            break;
        }
        let k = p.key()?;
        p.ws();
        let seen = match k {
            "CommandUUID" => &mut uuid,
            "Status" => &mut status,
            "UDID" => &mut udid,
            "OSUpdateStatus" => {
                if items.is_some() {
                    return None;
                }
                items = Some(p.status_items()?);
                continue;
            }
            _ => return None,
        };
        if std::mem::replace(seen, true) || !matches!(p.value(1)?, Value::String(_)) {
            return None;
        }
    }
    if !(uuid && status && udid && close(p)) {
        return None;
    }
    Some(StatusAnswer { items: items? })
}

impl Reader<'_> {
    /// The `OSUpdateStatus` array of [`parse_status`].
    fn status_items(&mut self) -> Option<Vec<StatusItem>> {
        let mut items = Vec::new();
        if self.eat(b"<array/>") {
            return Some(items);
        }
        if !self.eat(b"<array>") {
            return None;
        }
        loop {
            self.ws();
            if self.eat(b"</array>") {
                return Some(items);
            }
            if !self.eat(b"<dict>") {
                return None;
            }
            let (mut pk, mut st, mut pct, mut dl) = (None, None, None, None);
            loop {
                self.ws();
                if self.eat(b"</dict>") {
                    break;
                }
                let k = self.key()?;
                self.ws();
                let v = self.value(3)?;
                let fresh = match (k, v) {
                    ("ProductKey", Value::String(s)) => pk.replace(s).is_none(),
                    ("Status", Value::String(s)) => st.replace(s).is_none(),
                    ("DownloadPercentComplete", Value::Real(x)) if (0.0..=1.0).contains(&x) => {
                        pct.replace(x).is_none()
                    }
                    ("IsDownloaded", Value::Boolean(b)) => dl.replace(b).is_none(),
                    _ => false,
                };
                if !fresh {
                    return None;
                }
            }
            items.push(StatusItem {
                product_key: pk?,
                status: st?,
                download_percent_complete: pct?,
                is_downloaded: dl?,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n";

    fn doc(body: &str) -> String {
        format!("{HEAD}<plist version=\"1.0\">\n{body}\n</plist>\n")
    }

    fn status_body(extra: &str) -> String {
        format!(
            "<dict>\n\t<key>CommandUUID</key>\n\t<string>S1</string>\n\t<key>OSUpdateStatus</key>\n\t<array>\n\t\t<dict>\n\t\t\t<key>DownloadPercentComplete</key>\n\t\t\t<real>0.25</real>\n\t\t\t<key>IsDownloaded</key>\n\t\t\t<false/>\n\t\t\t<key>ProductKey</key>\n\t\t\t<string>iOSUpdate21G93</string>\n\t\t\t<key>Status</key>\n\t\t\t<string>Downloading</string>\n\t\t</dict>\n\t</array>\n\t<key>Status</key>\n\t<string>Acknowledged</string>\n\t<key>UDID</key>\n\t<string>U1</string>{extra}\n</dict>"
        )
    }

    /// Answers of every shape the fast readers must read as the crate does, or decline.
    pub(crate) fn cases() -> Vec<String> {
        let mut cases: Vec<String> = vec![
            doc(&status_body("")),
            doc(&status_body(
                "<key>N</key><integer>-12</integer><key>X</key><integer>0x1F</integer>",
            )),
            doc(&status_body(
                "<key>E</key><string/><key>A</key><array/><key>D</key><dict/>",
            )),
            doc(&status_body(
                "<key>R</key><real>1e3</real><key>T</key><true/><key>F</key><false></false>",
            )),
            doc(&status_body("<key>IsDownloaded</key><integer>1</integer>")),
            doc(&status_body(
                "<key>Dup</key><string>a</string><key>Dup</key><string>b</string>",
            )),
            doc(&status_body("<key>Amp</key><string>a &amp; b</string>")),
            doc(&status_body(
                "<key>Cdata</key><string><![CDATA[x]]></string>",
            )),
            doc(&status_body("<!-- note --><key>C</key><string>x</string>")),
            doc(&status_body(
                "<key>ErrorChain</key><array><dict><key>ErrorCode</key><integer>2213</integer></dict></array>",
            )),
            doc(&status_body(
                "<key>Date</key><date>2026-01-01T00:00:00Z</date>",
            )),
            doc(&status_body("<key>Bad</key><real>abc</real>")),
            doc(&status_body("<key>Bad</key><integer>1.5</integer>")),
            doc(&status_body("<key>Attr</key><string a=\"1\">x</string>")),
            doc(&status_body("<key>Sp</key><string>  two  words </string>")),
            doc(&status_body("<key>Uni</key><string>é ✓</string>")),
            doc(
                "<dict><key>Status</key><integer>1</integer><key>UDID</key><string>U</string></dict>",
            ),
            doc("<dict><key>UDID</key><string>U</string></dict>"),
            doc("<dict><key>Status</key><string>Idle</string></dict>"),
            doc("<array><string>x</string></array>"),
            doc(
                "<dict><key>Status</key><string>Idle</string><key>EnrollmentID</key><string>E</string></dict>",
            ),
            format!(
                "<plist><dict><key>Status</key><string>Idle</string><key>UDID</key><string>U</string></dict></plist>"
            ),
            format!("{}\0", doc(&status_body(""))),
            doc(&status_body("")).replace('\n', "\r\n"),
            doc(&status_body("")).replace("</plist>", "</plist><dict/>"),
            doc(&status_body("")).replace("</dict>\n</plist>", "</dict>"),
            doc(&status_body("")).replace("<key>UDID</key>", "<key>UDID</key><key>x</key>"),
            doc(&status_body("")).replace("<plist version=\"1.0\">", "<plist version=\"1.0\"/>"),
            "not a plist".to_string(),
            String::new(),
        ];
        // Every prefix of a real answer: truncated documents are declined or agree.
        let full = doc(&status_body(""));
        for k in (0..full.len()).step_by(7) {
            cases.push(full[..k].to_string());
        }
        // OSUpdateStatus answers around the shape `parse_status` reads.
        let item = |pct: &str, dl: &str, extra: &str| {
            format!(
                "<dict><key>DownloadPercentComplete</key>{pct}<key>IsDownloaded</key>{dl}<key>ProductKey</key><string>iOSUpdate21G93</string><key>Status</key><string>Downloading</string>{extra}</dict>"
            )
        };
        let answer = |items: &str, extra: &str| {
            doc(&format!(
                "<dict><key>CommandUUID</key><string>S1</string><key>OSUpdateStatus</key>{items}<key>Status</key><string>Acknowledged</string><key>UDID</key><string>U1</string>{extra}</dict>"
            ))
        };
        let one = item("<real>0.5</real>", "<false/>", "");
        for (items, extra) in [
            (format!("<array>{one}</array>"), ""),
            (
                format!(
                    "<array>{one}\n{}</array>",
                    item("<real>1</real>", "<true/>", "")
                ),
                "",
            ),
            ("<array/>".to_string(), ""),
            ("<array></array>".to_string(), ""),
            (
                format!("<array>{}</array>", item("<real>1.5</real>", "<true/>", "")),
                "",
            ),
            (
                format!(
                    "<array>{}</array>",
                    item("<real>-0.0</real>", "<true/>", "")
                ),
                "",
            ),
            (
                format!(
                    "<array>{}</array>",
                    item("<integer>1</integer>", "<true/>", "")
                ),
                "",
            ),
            (
                format!(
                    "<array>{}</array>",
                    item("<string>0.5</string>", "<true/>", "")
                ),
                "",
            ),
            (
                format!(
                    "<array>{}</array>",
                    item("<real>0.5</real>", "<integer>1</integer>", "")
                ),
                "",
            ),
            (
                format!(
                    "<array>{}</array>",
                    item("<real>0.5</real>", "<string>yes</string>", "")
                ),
                "",
            ),
            (
                format!(
                    "<array>{}</array>",
                    item(
                        "<real>0.5</real>",
                        "<false/>",
                        "<key>X</key><string>y</string>"
                    )
                ),
                "",
            ),
            (
                format!(
                    "<array>{}</array>",
                    item(
                        "<real>0.5</real>",
                        "<false/>",
                        "<key>Status</key><string>y</string>"
                    )
                ),
                "",
            ),
            (format!("<array>{one}<string>x</string></array>"), ""),
            (
                format!(
                    "<array>{}</array>",
                    one.replace("<key>ProductKey</key><string>iOSUpdate21G93</string>", "")
                ),
                "",
            ),
            (
                format!("<array>{one}</array>"),
                "<key>UpdateResults</key><array/>",
            ),
            (
                format!("<array>{one}</array>"),
                "<key>EnrollmentID</key><string>E</string>",
            ),
            (
                format!("<array>{one}</array>"),
                "<key>UDID</key><string>U2</string>",
            ),
            (
                format!("<array>{one}</array>"),
                "<key>OSUpdateStatus</key><array/>",
            ),
            ("<dict/>".to_string(), ""),
            ("<string>x</string>".to_string(), ""),
        ] {
            cases.push(answer(&items, extra));
        }
        cases.push(
            answer(&format!("<array>{one}</array>"), "")
                .replace("<key>CommandUUID</key><string>S1</string>", ""),
        );
        cases.push(
            answer(&format!("<array>{one}</array>"), "")
                .replace("<string>Acknowledged</string>", "<string>Idle</string>"),
        );
        cases.push(
            answer(&format!("<array>{one}</array>"), "")
                .replace("<string>Acknowledged</string>", "<integer>1</integer>"),
        );
        cases
    }

    /// Where the fast reader reads, it gives what `mdm::report::parse_report` gives.
    #[test]
    fn agrees_with_the_crate_where_it_reads_and_declines_the_rest() {
        let mut read = 0;
        let cases = cases();
        let full = doc(&status_body(""));
        for c in &cases {
            let slow = crate::mdm::report::parse_report(c.as_bytes());
            if let Some(fast) = parse_report(c.as_bytes()) {
                read += 1;
                assert_eq!(Ok(fast), slow, "{c:?}");
            }
        }
        assert!(read >= 8, "the usual shapes are read fast ({read})");
        // The common answer is read fast.
        assert!(parse_report(full.as_bytes()).is_some());
    }

    /// Where `parse_status` reads, the facts are those of the report read by the crate.
    #[test]
    fn status_answers_give_the_facts_of_their_report() {
        use crate::journal::fold::{ReportFacts, Strings};
        use crate::report::observations::Sink;
        let mut read = 0;
        for c in cases() {
            let Some(st) = parse_status(c.as_bytes()) else {
                continue;
            };
            read += 1;
            let slow = crate::mdm::report::parse_report(c.as_bytes()).map_err(|e| e.to_string());
            assert!(slow.is_ok(), "{c:?}");
            let mut strings = Strings::default();
            let want = ReportFacts::of(&slow, Some("OSUpdateStatus"), &mut strings);
            let got = st.facts(&mut strings);
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "{c:?}");
            // And the same observation rows.
            for received_at in ["", "2026-11-27T10:00:00Z"] {
                let e = crate::journal::Entry {
                    seq: 7,
                    at: "2026-11-27T09:00:00.000Z".into(),
                    event: crate::journal::Event::MdmResult {
                        udid: "U1".into(),
                        command_uuid: "S1".into(),
                        request_type: None,
                        status: "Acknowledged".into(),
                        raw_b64: String::new(),
                        received_at: received_at.into(),
                    },
                };
                let rows = |fast: bool| {
                    let mut sink = Sink::new(Vec::new()).unwrap();
                    match fast {
                        true => sink.status_event(&e, &st).unwrap(),
                        false => sink
                            .event(&e, Some((Some("OSUpdateStatus"), &slow)))
                            .unwrap(),
                    }
                    String::from_utf8(sink.finish().unwrap()).unwrap()
                };
                assert_eq!(rows(true), rows(false), "{c:?}");
            }
            assert!(parse_report(c.as_bytes()).is_some(), "{c:?}");
        }
        assert!(read >= 6, "the usual shapes are read ({read})");
        assert!(parse_status(doc(&status_body("")).as_bytes()).is_some());
        // NaN is outside 0–1 (a deviation): read as a report (NaN != NaN keeps it out of
        // `cases`).
        let nan = doc(&status_body("")).replace("<real>0.25</real>", "<real>nan</real>");
        assert!(parse_status(nan.as_bytes()).is_none());
        assert!(parse_report(nan.as_bytes()).is_some());
    }
}
