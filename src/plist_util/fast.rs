//! A strict, fast reader for the XML plists devices, usbmuxd and MDM clients send.
//!
//! The `plist` crate reads XML through an event reader and a value builder, a few allocations
//! and passes per node; at a 1 000-device follow-up round that was a quarter of the harness's
//! CPU (each re-probe's lockdown reply, each MDM answer, the usbmuxd device list). Nearly every
//! plist on the wire is the same small subset: an optional XML declaration and DOCTYPE,
//! `<plist>`, then dictionaries, arrays, strings, reals, integers that fit an `i64`, booleans
//! and base64 data. [`parse`] reads exactly that subset and gives the value the crate gives;
//! anything outside it — entities, CDATA, comments, CR line ends, attributes on values, dates,
//! hex or 64-bit unsigned integers, undecodable data, nesting at the depth limit, trailing NULs,
//! a binary plist — is declined (`None`) and the caller reads the bytes the crate's way
//! (`plist_util::parse_limited` does, so every limit and every error stays the crate's). Where
//! it reads, it agrees with the crate: tested below on every shape, and on every prefix of a
//! real reply.

use super::MAX_PLIST_DEPTH;
use base64::Engine;
use plist::{Dictionary, Integer, Value};

/// The plist in `raw`, when it is in the subset.
pub fn parse(raw: &[u8]) -> Option<Value> {
    parse_keeping(raw, &|_, _| true)
}

/// Which dictionary entries to build: `keep(depth, key)`, `depth` being how many collections
/// hold the dictionary (0: the top one). An entry not kept is still read through, by the same
/// rules, so a document is declined or read whatever is kept.
pub type Keep<'k> = &'k (dyn Fn(usize, &str) -> bool + Sync);

/// [`parse`], building only the dictionary entries `keep` names: a re-probe reads five of the
/// global domain's ~35 values, and building the rest was most of its cost.
pub fn parse_keeping(raw: &[u8], keep: Keep<'_>) -> Option<Value> {
    if raw.starts_with(b"bplist00") || raw.last() == Some(&0) {
        return None;
    }
    let mut p = open(raw)?;
    let v = p.value_keeping(0, keep)?;
    close(p).then_some(v)
}

/// The reader at the plist's value: past the XML declaration, the DOCTYPE and `<plist …>`.
pub(crate) fn open(raw: &[u8]) -> Option<Reader<'_>> {
    let doc = std::str::from_utf8(raw).ok()?;
    let mut p = Reader { doc, i: 0 };
    p.ws();
    if p.eat(b"<?xml") {
        p.past(b"?>")?;
        p.ws();
    }
    if p.eat(b"<!DOCTYPE") {
        let end = p.find(b'>')?;
        if p.s()[p.i..end].iter().any(|b| matches!(b, b'[' | b'<')) {
            return None;
        }
        p.i = end + 1;
        p.ws();
    }
    if !p.eat(b"<plist") {
        return None;
    }
    // Attributes (version="1.0"): skipped, as the crate does; no `/>`, no `<` in them.
    let end = p.find(b'>')?;
    let attrs = &p.s()[p.i..end];
    if !(attrs.is_empty() || attrs[0] == b' ') || attrs.iter().any(|b| matches!(b, b'<' | b'/')) {
        return None;
    }
    p.i = end + 1;
    p.ws();
    Some(p)
}

/// After the plist's value: `</plist>` and nothing else.
pub(crate) fn close(mut p: Reader<'_>) -> bool {
    p.ws();
    if !p.eat(b"</plist>") {
        return false;
    }
    p.ws();
    p.i == p.s().len()
}

/// A position in a plist document known to be UTF-8.
pub(crate) struct Reader<'a> {
    /// The document, validated once: text is sliced from it, not validated again (that was
    /// ~3 % of `lab report`'s CPU on a million answers).
    doc: &'a str,
    i: usize,
}

impl<'a> Reader<'a> {
    /// The document's bytes.
    fn s(&self) -> &'a [u8] {
        self.doc.as_bytes()
    }

    pub(crate) fn ws(&mut self) {
        while self
            .s()
            .get(self.i)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n'))
        {
            self.i += 1;
        }
    }

    pub(crate) fn eat(&mut self, t: &[u8]) -> bool {
        if self.s()[self.i..].starts_with(t) {
            self.i += t.len();
            true
        } else {
            false
        }
    }

    fn find(&self, b: u8) -> Option<usize> {
        memchr(b, &self.s()[self.i..]).map(|k| self.i + k)
    }

    fn past(&mut self, t: &[u8]) -> Option<()> {
        let k = self.s()[self.i..].windows(t.len()).position(|w| w == t)?;
        self.i += k + t.len();
        Some(())
    }

    /// Text up to the next `<`: plain characters only (no entity, no CR). The document is
    /// UTF-8 and text starts after a `>` and ends before a `<`, both ASCII, so the slice is on
    /// character boundaries (`str::get` checks just those two).
    fn text(&mut self) -> Option<&'a str> {
        let end = self.find(b'<')?;
        let doc: &'a str = self.doc;
        let t = doc.get(self.i..end)?;
        if t.bytes().any(|b| matches!(b, b'&' | b'\r')) {
            return None;
        }
        self.i = end;
        Some(t)
    }

    /// `<key>text</key>`.
    pub(crate) fn key(&mut self) -> Option<&'a str> {
        if !self.eat(b"<key>") {
            return None;
        }
        let k = self.text()?;
        self.eat(b"</key>").then_some(k)
    }

    /// `<name>text</name>`, after the `<name` has been read.
    fn content(&mut self, name: &str) -> Option<&'a str> {
        if self.eat(b"/>") {
            return Some("");
        }
        if !self.eat(b">") {
            return None;
        }
        let t = self.text()?;
        (self.eat(b"</") && self.eat(name.as_bytes()) && self.eat(b">")).then_some(t)
    }

    /// The value here, `depth` collections deep. At the crate's depth limit the reader
    /// declines, so that the crate refuses the plist with its own error.
    pub(crate) fn value(&mut self, depth: usize) -> Option<Value> {
        self.value_keeping(depth, &|_, _| true)
    }

    /// [`Reader::value`], building only the dictionary entries `keep` names.
    fn value_keeping(&mut self, depth: usize, keep: Keep<'_>) -> Option<Value> {
        match self.item(depth, keep, true)? {
            Item::Value(v) => Some(v),
            Item::Skipped => None,
        }
    }

    /// Read one value, building it when `build` (else only checking it is in the subset).
    fn item(&mut self, depth: usize, keep: Keep<'_>, build: bool) -> Option<Item> {
        if depth >= MAX_PLIST_DEPTH || !self.eat(b"<") {
            return None;
        }
        let start = self.i;
        while self.s().get(self.i).is_some_and(u8::is_ascii_lowercase) {
            self.i += 1;
        }
        let doc: &'a str = self.doc;
        let name = doc.get(start..self.i)?;
        let built = |v: Value| Some(if build { Item::Value(v) } else { Item::Skipped });
        match name {
            "dict" => {
                let mut d = Dictionary::new();
                if self.eat(b"/>") {
                    return built(Value::Dictionary(d));
                }
                if !self.eat(b">") {
                    return None;
                }
                loop {
                    self.ws();
                    if self.eat(b"</dict>") {
                        return built(Value::Dictionary(d));
                    }
                    let k = self.key()?;
                    self.ws();
                    let wanted = build && keep(depth, k);
                    if let Item::Value(v) = self.item(depth + 1, keep, wanted)? {
                        d.insert(k.to_string(), v);
                    }
                }
            }
            "array" => {
                let mut a = Vec::new();
                if self.eat(b"/>") {
                    return built(Value::Array(a));
                }
                if !self.eat(b">") {
                    return None;
                }
                loop {
                    self.ws();
                    if self.eat(b"</array>") {
                        return built(Value::Array(a));
                    }
                    if let Item::Value(v) = self.item(depth + 1, keep, build)? {
                        a.push(v);
                    }
                }
            }
            "string" => {
                let t = self.content("string")?;
                if !build {
                    return Some(Item::Skipped);
                }
                built(Value::String(t.to_string()))
            }
            "real" => built(Value::Real(self.content("real")?.parse().ok()?)),
            // What fits an i64 is read the crate's way (it tries i64 first); hex and larger
            // values are left to it.
            "integer" => built(Value::Integer(Integer::from(
                self.content("integer")?.parse::<i64>().ok()?,
            ))),
            "true" | "false" => {
                let t = self.content(name)?;
                if !t.is_empty() {
                    return None;
                }
                built(Value::Boolean(name == "true"))
            }
            // As the crate reads data: ASCII whitespace dropped, then standard base64 with
            // padding; what does not decode is left to the crate (its error).
            "data" => {
                let t = self.content("data")?;
                let compact: Vec<u8> = t.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .ok()?;
                built(Value::Data(bytes))
            }
            _ => None,
        }
    }
}

/// One value read: built, or read through and left out.
enum Item {
    Value(Value),
    Skipped,
}

/// The first `b` in `s`.
fn memchr(b: u8, s: &[u8]) -> Option<usize> {
    s.iter().position(|x| *x == b)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const HEAD: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n";

    fn doc(body: &str) -> String {
        format!("{HEAD}<plist version=\"1.0\">\n{body}\n</plist>\n")
    }

    /// Nested arrays, `n` deep, around a string.
    fn nested(n: usize) -> String {
        format!(
            "{}<string>x</string>{}",
            "<array>".repeat(n),
            "</array>".repeat(n)
        )
    }

    /// Documents around the subset: each is read as the crate reads it, or declined.
    fn cases() -> Vec<String> {
        let reply = crate::plist_util::dict_to_xml({
            let mut d = Dictionary::new();
            d.insert("Request".into(), "GetValue".into());
            d.insert(
                "DevicePublicKey".into(),
                Value::Data(
                    b"-----BEGIN RSA PUBLIC KEY-----\nMIIBCgKCAQEA\n-----END RSA PUBLIC KEY-----\n"
                        .repeat(4),
                ),
            );
            d.insert(
                "UniqueChipID".into(),
                Value::Integer(1_234_567_890_123u64.into()),
            );
            d.insert(
                "TimeIntervalSince1970".into(),
                Value::Real(1_764_000_000.25),
            );
            d.insert(
                "SupportedDeviceFamilies".into(),
                Value::Array(vec![1.into(), 2.into()]),
            );
            d.insert("TelephonyCapability".into(), Value::Boolean(true));
            d.insert("Empty".into(), Value::Dictionary(Dictionary::new()));
            d
        });
        let reply = String::from_utf8(reply).unwrap();
        let mut cases = vec![
            reply.clone(),
            doc("<data>aGVsbG8=</data>"),
            doc("<data>\n\taGVs\n\tbG8=\n</data>"),
            doc("<data></data>"),
            doc("<data/>"),
            doc("<data>aGVsbG8</data>"),
            doc("<data>a*b=</data>"),
            doc("<data>aGVs\x0cbG8=</data>"),
            doc("<integer>18446744073709551615</integer>"),
            doc("<integer>9223372036854775807</integer>"),
            doc("<integer>-9223372036854775808</integer>"),
            doc("<integer>0x10</integer>"),
            doc("<integer> 5</integer>"),
            doc("<real>1e308</real>"),
            doc("<date>2026-01-01T00:00:00Z</date>"),
            doc("<string>a &lt; b</string>"),
            doc("<string>é ✓</string>"),
            doc("<dict><key>A</key><string>1</string><key>A</key><string>2</string></dict>"),
            doc("<dict><key>A</key></dict>"),
            doc("<dict><string>x</string></dict>"),
            doc("<true/><false/>"),
            doc("<false/>"),
            doc("<array><true/><false></false><true>x</true></array>"),
            doc(&nested(MAX_PLIST_DEPTH - 1)),
            doc(&nested(MAX_PLIST_DEPTH)),
            doc(&nested(MAX_PLIST_DEPTH + 1)),
            format!("  {}", doc("<string>x</string>")),
            format!("{}\0", doc("<string>x</string>")),
            doc("<string>x</string>").replace('\n', "\r\n"),
            "<plist><string>x</string></plist>".to_string(),
            "<string>x</string>".to_string(),
            String::new(),
        ];
        for k in (0..reply.len()).step_by(5) {
            cases.push(reply[..k].to_string());
        }
        cases
    }

    /// Where the fast reader reads, it gives what the crate gives (through the same depth
    /// gate); the usual shapes are read.
    #[test]
    fn agrees_with_the_crate_where_it_reads_and_declines_the_rest() {
        let mut read = 0;
        for c in cases() {
            let slow = crate::plist_util::parse_with_crate(c.as_bytes());
            if let Some(fast) = parse(c.as_bytes()) {
                read += 1;
                assert_eq!(Ok(fast), slow, "{c:?}");
            }
        }
        assert!(read >= 12, "the usual shapes are read fast ({read})");
        for must in [0usize, 1, 2, 3, 4] {
            assert!(parse(cases()[must].as_bytes()).is_some(), "case {must}");
        }
        // At the depth limit the crate's refusal is kept.
        assert!(parse(doc(&nested(MAX_PLIST_DEPTH)).as_bytes()).is_none());
        assert!(parse(doc(&nested(MAX_PLIST_DEPTH - 1)).as_bytes()).is_some());
    }

    /// What the crate reads, without the top-level-dictionary-inside entries `keep` leaves out.
    fn kept(v: Value, keep: Keep<'_>, depth: usize) -> Value {
        match v {
            Value::Dictionary(d) => Value::Dictionary(
                d.into_iter()
                    .filter(|(k, _)| keep(depth, k))
                    .map(|(k, v)| (k, kept(v, keep, depth + 1)))
                    .collect(),
            ),
            Value::Array(a) => {
                Value::Array(a.into_iter().map(|v| kept(v, keep, depth + 1)).collect())
            }
            other => other,
        }
    }

    /// Building only some entries reads the same documents and gives the crate's value less
    /// the entries left out; an entry left out is still checked (a bad one declines it all).
    #[test]
    fn keeping_some_entries_gives_the_crates_value_without_the_others() {
        let keep: Keep<'_> =
            &|depth, k| depth != 0 || matches!(k, "TimeIntervalSince1970" | "A" | "Empty");
        let mut read = 0;
        for c in cases() {
            let slow = crate::plist_util::parse_with_crate(c.as_bytes());
            let fast = parse_keeping(c.as_bytes(), keep);
            assert_eq!(fast.is_some(), parse(c.as_bytes()).is_some(), "{c:?}");
            if let Some(fast) = fast {
                read += 1;
                assert_eq!(Ok(fast), slow.map(|v| kept(v, keep, 0)), "{c:?}");
            }
        }
        assert!(read >= 12, "{read}");
        let reply = &cases()[0];
        let Some(Value::Dictionary(d)) = parse_keeping(reply.as_bytes(), keep) else {
            panic!("the reply is read");
        };
        assert_eq!(
            d.keys().collect::<Vec<_>>(),
            ["TimeIntervalSince1970", "Empty"]
        );
        // A value left out is checked all the same.
        let bad = reply.replace("<true/>", "<true>x</true>");
        assert!(parse_keeping(bad.as_bytes(), keep).is_none());
    }
}
