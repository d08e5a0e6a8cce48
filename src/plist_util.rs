//! Small helpers around `plist::Value`: XML encoding (what real devices and usbmuxd send),
//! lenient decoding (XML or binary), and a JSON view for reports that keeps every type visible.

use base64::Engine;
use plist::stream::{BinaryReader, Event, OwnedEvent, XmlReader};
use plist::{Dictionary, Value};
use std::io::Cursor;

pub mod fast;

/// Serialise a value as an XML plist, the form usbmuxd and lockdownd speak (brief §1.3, §3.1).
pub fn to_xml(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    v.to_writer_xml(&mut out)
        .expect("writing a plist to memory cannot fail");
    out
}

pub fn dict_to_xml(d: Dictionary) -> Vec<u8> {
    to_xml(&Value::Dictionary(d))
}

/// How deep arrays and dictionaries may nest in a plist read from a device, an MDM client or a
/// journal. Apple's plists are shallow (the deepest shapes in the briefs, a `SecurityInfo` or
/// `ProfileList` reply, nest fewer than 8 levels); 64 leaves room and matches serde-saphyr's
/// default YAML depth. A deeper plist is refused while it is read, before a value that deep
/// exists: building it is iterative, but dropping or printing it recurses, and 50 000 levels
/// overflow a tokio worker's stack (issue 18).
pub const MAX_PLIST_DEPTH: usize = 64;

/// How many decode events (values, collection starts and ends) a plist may produce per byte of
/// input, plus [`EVENT_ALLOWANCE`]. Every XML value needs several bytes and every binary object
/// reference at least one, so an honest plist stays below one event per byte; a binary plist
/// whose containers share children (a DAG) expands exponentially and is cut off here.
pub const MAX_EVENTS_PER_BYTE: usize = 2;
pub const EVENT_ALLOWANCE: usize = 1024;

/// Why a plist was refused. The text is short and safe to show an operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlistError {
    #[error("empty plist")]
    Empty,
    #[error("neither an XML nor a binary plist")]
    NotPlist,
    #[error("plist nests deeper than {MAX_PLIST_DEPTH} levels of arrays/dictionaries")]
    TooDeep,
    #[error("binary plist expands to more than {0} values (shared containers)")]
    TooManyValues(usize),
    #[error("{0}")]
    Syntax(String),
}

/// Parse an XML or binary plist, refusing one nested deeper than [`MAX_PLIST_DEPTH`] (or a
/// binary one that expands past its event budget) while it is being read.
pub fn parse(bytes: &[u8]) -> Result<Value, String> {
    parse_limited(bytes).map_err(|e| e.to_string())
}

/// [`parse`] with a typed error, for callers that tell "too deep" apart (probe error kinds).
/// The usual XML shapes are read by [`fast::parse`] (the same value, a fraction of the work);
/// anything it declines goes through the crate with the depth gate.
pub fn parse_limited(bytes: &[u8]) -> Result<Value, PlistError> {
    if let Some(v) = fast::parse(bytes) {
        return Ok(v);
    }
    parse_with_crate(bytes)
}

/// [`parse_limited`], building only the dictionary entries `keep` names where the fast reader
/// reads; what it declines the crate reads whole (its value then has every entry).
pub fn parse_limited_keeping(bytes: &[u8], keep: fast::Keep<'_>) -> Result<Value, PlistError> {
    if let Some(v) = fast::parse_keeping(bytes, keep) {
        return Ok(v);
    }
    parse_with_crate(bytes)
}

/// [`parse_limited`] without the fast reader: the `plist` crate behind the depth gate.
pub(crate) fn parse_with_crate(bytes: &[u8]) -> Result<Value, PlistError> {
    // Like libimobiledevice: a binary plist starts with `bplist00`, anything else must be XML
    // (brief §3.1). OpenStep/ASCII plists are refused so that noise never parses as a string.
    // A binary plist is read as is: its trailer ends with the offset table's big-endian offset,
    // whose last byte is 0 whenever that offset is a multiple of 256 (found by fuzzing).
    let budget = bytes
        .len()
        .saturating_mul(MAX_EVENTS_PER_BYTE)
        .saturating_add(EVENT_ALLOWANCE);
    if bytes.starts_with(b"bplist00") {
        return build_limited(BinaryReader::new(Cursor::new(bytes)), budget);
    }
    let trimmed = trim_nuls(bytes);
    if trimmed.is_empty() {
        return Err(PlistError::Empty);
    }
    let start = trimmed
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    if trimmed[start] != b'<' {
        return Err(PlistError::NotPlist);
    }
    build_limited(XmlReader::new(Cursor::new(trimmed)), budget)
}

/// Feed the reader's events to plist's own (iterative) builder through a gate that counts
/// nesting and events, and ends the stream at the first one over a limit. The builder then fails
/// on the truncated stream and drops what it holds, which is at most `MAX_PLIST_DEPTH` deep.
fn build_limited<I>(events: I, budget: usize) -> Result<Value, PlistError>
where
    I: Iterator<Item = Result<OwnedEvent, plist::Error>>,
{
    let mut gate = DepthGate {
        inner: events,
        depth: 0,
        events: 0,
        budget,
        breach: None,
    };
    let built = Value::from_events(&mut gate);
    if let Some(b) = gate.breach {
        return Err(b);
    }
    // The builder reads the stream to its end, so data after the top value is an error there.
    built.map_err(|e| PlistError::Syntax(e.to_string()))
}

struct DepthGate<I> {
    inner: I,
    depth: usize,
    events: usize,
    budget: usize,
    breach: Option<PlistError>,
}

impl<I> Iterator for DepthGate<I>
where
    I: Iterator<Item = Result<OwnedEvent, plist::Error>>,
{
    type Item = Result<OwnedEvent, plist::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.breach.is_some() {
            return None;
        }
        let ev = self.inner.next()?;
        self.events += 1;
        if self.events > self.budget {
            self.breach = Some(PlistError::TooManyValues(self.budget));
            return None;
        }
        match &ev {
            Ok(Event::StartArray(_) | Event::StartDictionary(_)) => {
                self.depth += 1;
                if self.depth > MAX_PLIST_DEPTH {
                    self.breach = Some(PlistError::TooDeep);
                    return None;
                }
            }
            Ok(Event::EndCollection) => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        Some(ev)
    }
}

/// Parse and require a dictionary at the top.
pub fn parse_dict(bytes: &[u8]) -> Result<Dictionary, String> {
    match parse(bytes)? {
        Value::Dictionary(d) => Ok(d),
        other => Err(format!("expected a dictionary, got {}", type_name(&other))),
    }
}

// Some peers pad XML plists with a trailing NUL; libplist tolerates it, so do we.
fn trim_nuls(b: &[u8]) -> &[u8] {
    let mut end = b.len();
    while end > 0 && b[end - 1] == 0 {
        end -= 1;
    }
    &b[..end]
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "array",
        Value::Dictionary(_) => "dictionary",
        Value::Boolean(_) => "boolean",
        Value::Data(_) => "data",
        Value::Date(_) => "date",
        Value::Real(_) => "real",
        Value::Integer(_) => "integer",
        Value::String(_) => "string",
        Value::Uid(_) => "uid",
        _ => "unknown",
    }
}

/// JSON view of a plist value. Data becomes `{"$data": base64}`, dates `{"$date": rfc3339}` so
/// that a reader can tell a string from data; integers stay numbers.
pub fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Array(a) => J::Array(a.iter().map(to_json).collect()),
        Value::Dictionary(d) => J::Object(
            d.iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect::<serde_json::Map<_, _>>(),
        ),
        Value::Boolean(b) => J::Bool(*b),
        Value::Data(d) => serde_json::json!({
            "$data": base64::engine::general_purpose::STANDARD.encode(d)
        }),
        Value::Date(d) => serde_json::json!({ "$date": d.to_xml_format() }),
        Value::Real(r) => serde_json::Number::from_f64(*r)
            .map(J::Number)
            .unwrap_or(J::Null),
        Value::Integer(i) => {
            if let Some(u) = i.as_unsigned() {
                J::from(u)
            } else if let Some(s) = i.as_signed() {
                J::from(s)
            } else {
                J::Null
            }
        }
        Value::String(s) => J::String(s.clone()),
        Value::Uid(u) => serde_json::json!({ "$uid": u.get() }),
        _ => J::Null,
    }
}

pub fn get_str<'a>(d: &'a Dictionary, key: &str) -> Option<&'a str> {
    d.get(key).and_then(Value::as_string)
}

pub fn get_u64(d: &Dictionary, key: &str) -> Option<u64> {
    d.get(key).and_then(|v| match v {
        Value::Integer(i) => i.as_unsigned(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_and_binary_both_parse() {
        let mut d = Dictionary::new();
        d.insert("Request".into(), "GetValue".into());
        d.insert("Value".into(), Value::Integer(87.into()));
        let xml = dict_to_xml(d.clone());
        assert!(xml.starts_with(b"<?xml"));
        assert_eq!(parse_dict(&xml).unwrap(), d);
        let mut bin = Vec::new();
        Value::Dictionary(d.clone())
            .to_writer_binary(&mut bin)
            .unwrap();
        assert_eq!(parse_dict(&bin).unwrap(), d);
        let mut padded = xml.clone();
        padded.push(0);
        assert_eq!(parse_dict(&padded).unwrap(), d);
    }

    #[test]
    fn binary_plist_ending_in_a_nul_byte_parses() {
        // Regression (fuzz target lockdown_frame): a binary plist whose offset table starts at a
        // multiple of 256 ends with a 0 byte; trimming it as XML padding broke the trailer.
        let mut found = 0;
        for n in 0..600 {
            let mut d = Dictionary::new();
            d.insert("HostID".into(), "x".repeat(n).into());
            let mut bin = Vec::new();
            Value::Dictionary(d.clone())
                .to_writer_binary(&mut bin)
                .unwrap();
            if bin.last() == Some(&0) {
                found += 1;
                assert_eq!(parse_dict(&bin).unwrap(), d, "{n}-byte string");
            }
        }
        assert!(found > 0, "no binary plist ending in 0 was produced");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse(b"\x00\x01garbage").is_err());
        assert!(parse(b"").is_err());
        assert!(parse_dict(&to_xml(&Value::Boolean(true))).is_err());
    }

    #[test]
    fn json_view_keeps_types_visible() {
        let v = Value::Data(vec![1, 2, 3]);
        assert_eq!(to_json(&v)["$data"], "AQID");
        assert_eq!(to_json(&Value::Integer(5.into())), serde_json::json!(5));
    }
}

/// Hostile shapes shared by the unit tests here and the integration tests (through `lab`'s
/// public API): a plist nested `depth` levels deep, in XML and binary.
pub mod hostile {
    /// `depth` nested `<array>`s (`dicts`: nested `<dict><key>k</key>…</dict>`) around a string.
    pub fn deep_xml(depth: usize, dicts: bool) -> Vec<u8> {
        let (open, close) = if dicts {
            ("<dict><key>k</key>", "</dict>")
        } else {
            ("<array>", "</array>")
        };
        let mut s =
            String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\">");
        s.reserve(depth * (open.len() + close.len()) + 64);
        for _ in 0..depth {
            s.push_str(open);
        }
        s.push_str("<string>x</string>");
        for _ in 0..depth {
            s.push_str(close);
        }
        s.push_str("</plist>");
        s.into_bytes()
    }

    /// A binary plist (bplist00) of `depth` one-element arrays, each holding the next; written
    /// by hand because the plist crate's writer would recurse as deep.
    pub fn deep_binary(depth: usize) -> Vec<u8> {
        let objects = depth + 1;
        let ref_size: usize = if objects <= 0xff {
            1
        } else if objects <= 0xffff {
            2
        } else {
            4
        };
        let mut out = b"bplist00".to_vec();
        let mut offsets = Vec::with_capacity(objects);
        for i in 0..depth {
            offsets.push(out.len());
            out.push(0xA1); // array of one object reference
            out.extend_from_slice(&((i + 1) as u32).to_be_bytes()[4 - ref_size..]);
        }
        offsets.push(out.len());
        out.extend_from_slice(&[0x51, b'x']); // ASCII string "x"
        let table = out.len();
        let off_size: usize = if table <= 0xffff { 2 } else { 4 };
        for o in offsets {
            out.extend_from_slice(&(o as u32).to_be_bytes()[4 - off_size..]);
        }
        out.extend_from_slice(&[0; 6]);
        out.push(off_size as u8);
        out.push(ref_size as u8);
        out.extend_from_slice(&(objects as u64).to_be_bytes());
        out.extend_from_slice(&0u64.to_be_bytes()); // top object
        out.extend_from_slice(&(table as u64).to_be_bytes());
        out
    }

    /// A small binary plist whose `levels` arrays each hold the next one twice: 2^levels values.
    pub fn shared_binary(levels: usize) -> Vec<u8> {
        let mut out = b"bplist00".to_vec();
        let mut offsets = Vec::new();
        for i in 0..levels {
            offsets.push(out.len());
            out.push(0xA2);
            out.push((i + 1) as u8);
            out.push((i + 1) as u8);
        }
        offsets.push(out.len());
        out.extend_from_slice(&[0x51, b'x']);
        let table = out.len();
        for o in &offsets {
            out.extend_from_slice(&(*o as u16).to_be_bytes());
        }
        out.extend_from_slice(&[0; 6]);
        out.push(2);
        out.push(1);
        out.extend_from_slice(&(offsets.len() as u64).to_be_bytes());
        out.extend_from_slice(&0u64.to_be_bytes());
        out.extend_from_slice(&(table as u64).to_be_bytes());
        out
    }
}

#[cfg(test)]
mod depth_tests {
    use super::hostile::*;
    use super::*;

    #[test]
    fn depth_at_the_limit_parses_one_more_is_refused() {
        for dicts in [false, true] {
            assert!(
                parse(&deep_xml(MAX_PLIST_DEPTH, dicts)).is_ok(),
                "dicts={dicts}"
            );
            assert_eq!(
                parse_limited(&deep_xml(MAX_PLIST_DEPTH + 1, dicts)),
                Err(PlistError::TooDeep)
            );
        }
        assert!(parse(&deep_binary(MAX_PLIST_DEPTH)).is_ok());
        assert_eq!(
            parse_limited(&deep_binary(MAX_PLIST_DEPTH + 1)),
            Err(PlistError::TooDeep)
        );
    }

    #[test]
    fn hostile_depths_are_errors_not_stack_overflows() {
        // The shapes of issue 18: 50 000 arrays, 60 000 dicts, a 100 000-array binary chain.
        // Run on a small stack so that a regression overflows here, not only in a server.
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                assert_eq!(
                    parse_limited(&deep_xml(50_000, false)),
                    Err(PlistError::TooDeep)
                );
                assert_eq!(
                    parse_limited(&deep_xml(60_000, true)),
                    Err(PlistError::TooDeep)
                );
                assert_eq!(
                    parse_limited(&deep_binary(100_000)),
                    Err(PlistError::TooDeep)
                );
                let e = parse_dict(&deep_xml(50_000, false)).unwrap_err();
                assert!(e.contains("deeper than 64"), "{e}");
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn shared_binary_containers_cannot_expand_exponentially() {
        // 40 levels of [x, x] would be 2^40 values; honest shapes of the same size still parse.
        let bomb = shared_binary(40);
        assert!(matches!(
            parse_limited(&bomb),
            Err(PlistError::TooManyValues(_))
        ));
        assert!(parse(&shared_binary(4)).is_ok());
    }

    #[test]
    fn trailing_values_and_truncation_stay_errors() {
        let mut two = to_xml(&Value::Boolean(true));
        two.extend_from_slice(b"<true/>");
        assert!(parse(&two).is_err(), "a second top value");
        let half = deep_xml(10, false);
        assert!(parse(&half[..half.len() / 2]).is_err());
    }
}
