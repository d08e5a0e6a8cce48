//! Reading operator-written YAML files (fleets now, trial protocols later) with errors that name
//! the file, line and column.
//!
//! serde-saphyr is used rather than serde_yaml (deprecated) or its libyaml-based forks: it is
//! pure Rust and attaches a location to every error, including unknown keys and wrong types.

use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};

/// A bad input file: where, and what is wrong. Exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub path: PathBuf,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
    /// The offending source line with a caret under the column, when known.
    pub snippet: Option<String>,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.path.display();
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{p}:{l}:{c}: {}", self.message)?,
            (Some(l), None) => write!(f, "{p}:{l}: {}", self.message)?,
            _ => write!(f, "{p}: {}", self.message)?,
        }
        if let Some(s) = &self.snippet {
            write!(f, "\n{s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InputError {}

impl InputError {
    pub fn at(
        path: &Path,
        loc: Option<serde_saphyr::Location>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = match loc {
            Some(l) if l.line() > 0 => (Some(l.line()), Some(l.column())),
            _ => (None, None),
        };
        InputError {
            path: path.to_path_buf(),
            line,
            column,
            message: message.into(),
            snippet: None,
        }
    }

    /// Attach the source line the error points at.
    pub fn with_source(mut self, text: &str) -> Self {
        if let (Some(l), Some(c)) = (self.line, self.column)
            && let Some(src) = text.lines().nth(l.saturating_sub(1) as usize)
        {
            let pad = " ".repeat(c.saturating_sub(1) as usize);
            self.snippet = Some(format!("    {src}\n    {pad}^"));
        }
        self
    }
}

/// Read and parse a YAML file.
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T, InputError> {
    let text = read_text(path)?;
    parse_yaml(path, &text)
}

/// Read a text file: "cannot read" with the OS's reason, or "not UTF-8 text" at the line and
/// column of the first byte that is not.
pub fn read_text(path: &Path) -> Result<String, InputError> {
    let bytes = std::fs::read(path).map_err(|e| InputError {
        path: path.to_path_buf(),
        line: None,
        column: None,
        message: format!("cannot read: {e}"),
        snippet: None,
    })?;
    text_of(path, bytes)
}

/// The bytes as text, or where they stop being UTF-8.
pub fn text_of(path: &Path, bytes: Vec<u8>) -> Result<String, InputError> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        let before = &bytes[..at];
        let line = before.iter().filter(|b| **b == b'\n').count() as u64 + 1;
        let line_start = before
            .iter()
            .rposition(|b| *b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        // Columns count characters, as the YAML errors do.
        let column = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count() as u64
            + 1;
        InputError {
            path: path.to_path_buf(),
            line: Some(line),
            column: Some(column),
            message: format!(
                "not UTF-8 text (byte 0x{:02X}); save the file as UTF-8",
                bytes[at]
            ),
            snippet: None,
        }
    })
}

/// Nothing but blanks and comments.
pub fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#')
    })
}

pub fn parse_yaml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, InputError> {
    if is_blank(text) {
        return Err(InputError::at(
            path,
            None,
            "the file is empty (only blanks and comments)",
        ));
    }
    serde_saphyr::from_str_with_options::<T>(text, options_for(text)).map_err(|e| {
        let loc = e.location();
        let mut msg = match budget_breach(&e) {
            Some(breach) => budget_message(breach, text.len()),
            None => first_line_message(&e.to_string()),
        };
        // serde-saphyr says only "invalid u64" of `-5`: say what a count or seed must be.
        if msg == WHOLE_NUMBER
            && let Some(l) = loc
            && negative_at(text, l.line(), l.column())
        {
            msg = "must be ≥ 0 (a whole number)".to_string();
        }
        if let Some(l) = loc
            && let Some(key) = key_at(text, l.line(), l.column())
            && !msg.contains(&key)
        {
            msg = format!("{key}: {msg}");
        }
        InputError::at(path, loc, msg).with_source(text)
    })
}

/// serde-saphyr's limits against hostile YAML (alias bombs, deep nesting), except that the node
/// and event counts grow with the file: an alias expansion is what they guard against, and a
/// plain file cannot hold more nodes than a quarter of its bytes (`- 1` is the shortest entry).
/// A 24 000-device fleet (~250 000 nodes in ~3 MB) then reads, where the fixed default of
/// 250 000 nodes refused it.
fn options_for(text: &str) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = budget.max_nodes.max(text.len() / NODES_PER_BYTE_DIVISOR);
    budget.max_events = budget.max_events.max(text.len() / 2);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// One node per this many bytes of input is allowed beyond serde-saphyr's default.
const NODES_PER_BYTE_DIVISOR: usize = 4;

/// The budget breach inside an error, under its snippet and alias wrappers.
fn budget_breach(e: &serde_saphyr::Error) -> Option<&serde_saphyr::budget::BudgetBreach> {
    let mut e = e;
    loop {
        match e {
            serde_saphyr::Error::Budget { breach, .. } => return Some(breach),
            serde_saphyr::Error::WithSnippet { error, .. }
            | serde_saphyr::Error::AliasError { error, .. } => e = error,
            _ => return None,
        }
    }
}

/// Which limit a file crossed, and what to do about it, instead of serde-saphyr's `Debug` text
/// ("budget breached: Nodes { nodes: 250001 }").
fn budget_message(breach: &serde_saphyr::budget::BudgetBreach, len: usize) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    let d = serde_saphyr::Budget::default();
    let limit = |what: &str, n: usize| {
        format!(
            "more {what} than lab reads from one file ({n}, a limit against hostile YAML such as \
             alias bombs): split the file (one fleet file per `lab sim serve`, one per host), or \
             write the entries out instead of repeating them through anchors and aliases"
        )
    };
    match breach {
        B::Nodes { .. } => limit("YAML nodes", d.max_nodes.max(len / NODES_PER_BYTE_DIVISOR)),
        B::Events { .. } => limit("YAML events", d.max_events.max(len / 2)),
        B::Aliases { .. } => limit("aliases (*name)", d.max_aliases),
        B::Anchors { .. } => limit("anchors (&name)", d.max_anchors),
        B::Depth { .. } => limit("levels of nesting", d.max_depth),
        other => format!("the file crosses a limit against hostile YAML: {other:?}"),
    }
}

/// The mapping key nearest before (line, column): `level` in `battery: { level: lots }`.
pub fn key_at(text: &str, line: u64, column: u64) -> Option<String> {
    let src = text.lines().nth(line.checked_sub(1)? as usize)?;
    let upto: String = src
        .chars()
        .take(column.saturating_sub(1) as usize)
        .collect();
    let colon = upto
        .trim_end()
        .strip_suffix(':')
        .map(str::len)
        .or_else(|| upto.rfind(": "))?;
    let before = upto[..colon].trim_end().trim_end_matches('"');
    let start = before
        .char_indices()
        .rfind(|&(_, c)| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .map(|(i, c)| i + c.len_utf8())
        .unwrap_or(0);
    let key = before[start..].trim();
    (!key.is_empty()).then(|| key.to_string())
}

const WHOLE_NUMBER: &str = "expected a whole number";

/// Whether the scalar at (line, column) is a negative number (`-5`, `-0.5`).
fn negative_at(text: &str, line: u64, column: u64) -> bool {
    let Some(src) = line
        .checked_sub(1)
        .and_then(|l| text.lines().nth(l as usize))
    else {
        return false;
    };
    let rest: String = src
        .chars()
        .skip(column.saturating_sub(1) as usize)
        .collect();
    let rest = rest.trim_start().trim_start_matches(['"', '\'']);
    rest.strip_prefix('-')
        .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit() || c == '.'))
}

/// serde-saphyr renders a snippet after the message; the operator gets the message, the
/// location is printed by `InputError` itself.
fn first_line_message(rendered: &str) -> String {
    let first = rendered.lines().next().unwrap_or(rendered).trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // Drop a leading "line X column Y:" style prefix if present; we print our own.
    let msg = match first.find(": ") {
        Some(i) if first[..i].contains("line") && first[..i].contains("column") => &first[i + 2..],
        _ => first,
    };
    // A trailing " at line L, column C" repeats what `InputError` prints.
    let msg = match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains("column") => &msg[..i],
        _ => msg,
    };
    match msg {
        "invalid u64" | "invalid u32" | "invalid u8" | "invalid usize" => WHOLE_NUMBER.to_string(),
        "invalid bool" | "invalid boolean" => "expected true or false".to_string(),
        "invalid floating point" | "invalid f64" => "expected a number".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Items {
        #[allow(dead_code)]
        items: Vec<serde_json::Value>,
    }

    /// A 300 000-entry list: past serde-saphyr's fixed 250 000 nodes, well within a quarter of
    /// its bytes.
    #[test]
    fn a_large_plain_file_is_read() {
        let mut text = String::from("items:\n");
        for i in 0..300_000 {
            text.push_str(&format!("  - {i}\n"));
        }
        let r: Result<Items, _> = parse_yaml(Path::new("big.yaml"), &text);
        assert!(r.is_ok(), "{:?}", r.err());
    }

    /// Aliases that repeat an anchored list: few bytes, many nodes. Refused, with the limit
    /// named and what to do.
    #[test]
    fn an_alias_bomb_is_refused_by_name() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = "a".to_string();
        for level in 0..7 {
            let name = format!("l{level}");
            let refs = vec![format!("*{prev}"); 10].join(", ");
            text.push_str(&format!("{name}: &{name} [{refs}]\n"));
            prev = name;
        }
        text.push_str(&format!("items: [*{prev}]\n"));
        let e = parse_yaml::<Items>(Path::new("bomb.yaml"), &text).unwrap_err();
        let shown = e.to_string();
        assert!(shown.contains("bomb.yaml"), "{shown}");
        assert!(shown.contains("hostile YAML"), "{shown}");
        assert!(shown.contains("split the file"), "{shown}");
        assert!(!shown.contains("Nodes {"), "{shown}");
    }

    #[test]
    fn keys_are_found_before_the_column() {
        let t = "a:\n  battery: { level: lots }\n";
        assert_eq!(key_at(t, 2, 21).as_deref(), Some("level"));
        assert_eq!(key_at(t, 1, 1), None);
    }

    #[test]
    fn a_key_after_a_multibyte_character_is_found() {
        // Fuzz target trial_protocol: the key scan stepped one byte past a non-key character,
        // into the middle of '–' (3 bytes), and panicked.
        assert_eq!(key_at("a: x–key: 1", 1, 11).as_deref(), Some("key"));
        let raw =
            include_str!("../tests/fuzz-regressions/trial_protocol-key-after-multibyte-char.yaml");
        let e =
            parse_yaml::<crate::trial::protocol::Protocol>(Path::new("p.yaml"), raw).unwrap_err();
        assert_eq!(e.line, Some(2));
    }

    /// Issue 14: a negative count or seed says what it must be, not "expected a whole number".
    #[test]
    fn a_negative_whole_number_says_it_must_be_at_least_zero() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct F {
            seed: u64,
            battery: Option<B>,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct B {
            level: u8,
        }
        for (text, key) in [
            ("seed: -1\n", "seed"),
            ("seed: 1\nbattery: { level: -5 }\n", "level"),
            ("seed: 1\nbattery:\n  level: -5\n", "level"),
        ] {
            let e = parse_yaml::<F>(Path::new("f.yaml"), text).unwrap_err();
            assert_eq!(
                e.message,
                format!("{key}: must be ≥ 0 (a whole number)"),
                "{text}"
            );
        }
        let e = parse_yaml::<F>(Path::new("f.yaml"), "seed: lots\n").unwrap_err();
        assert_eq!(e.message, "seed: expected a whole number");
    }

    #[test]
    fn messages_lose_the_duplicate_location() {
        assert_eq!(
            first_line_message("error: line 6 column 23: invalid u64\n --> x"),
            "expected a whole number"
        );
        assert_eq!(first_line_message("unknown field `x`"), "unknown field `x`");
    }
}
