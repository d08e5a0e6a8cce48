//! Small helpers around `plist::Value`: XML encoding (what real devices and usbmuxd send),
//! lenient decoding (XML or binary), and a JSON view for reports that keeps every type visible.

use base64::Engine;
use plist::{Dictionary, Value};
use std::io::Cursor;

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

/// Parse an XML or binary plist. The error text is short and safe to show an operator.
pub fn parse(bytes: &[u8]) -> Result<Value, String> {
    // Like libimobiledevice: a binary plist starts with `bplist00`, anything else must be XML
    // (brief §3.1). OpenStep/ASCII plists are refused so that noise never parses as a string.
    // A binary plist is read as is: its trailer ends with the offset table's big-endian offset,
    // whose last byte is 0 whenever that offset is a multiple of 256 (found by fuzzing).
    if bytes.starts_with(b"bplist00") {
        return Value::from_reader(Cursor::new(bytes)).map_err(|e| e.to_string());
    }
    let trimmed = trim_nuls(bytes);
    if trimmed.is_empty() {
        return Err("empty plist".to_string());
    }
    let start = trimmed
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    if trimmed[start] != b'<' {
        return Err("neither an XML nor a binary plist".to_string());
    }
    Value::from_reader_xml(Cursor::new(trimmed)).map_err(|e| e.to_string())
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
