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
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => {
                write!(f, "{}:{}:{}: {}", self.path.display(), l, c, self.message)
            }
            (Some(l), None) => write!(f, "{}:{}: {}", self.path.display(), l, self.message),
            _ => write!(f, "{}: {}", self.path.display(), self.message),
        }
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
        }
    }
}

/// Read and parse a YAML file.
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T, InputError> {
    let text = std::fs::read_to_string(path).map_err(|e| InputError {
        path: path.to_path_buf(),
        line: None,
        column: None,
        message: format!("cannot read: {e}"),
    })?;
    parse_yaml(path, &text)
}

pub fn parse_yaml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, InputError> {
    serde_saphyr::from_str::<T>(text).map_err(|e| {
        let loc = e.location();
        InputError::at(path, loc, first_line_message(&e.to_string()))
    })
}

/// serde-saphyr renders a snippet after the message; the operator gets the message, the
/// location is printed by `InputError` itself.
fn first_line_message(rendered: &str) -> String {
    let first = rendered.lines().next().unwrap_or(rendered).trim();
    // Drop a leading "line X column Y:" style prefix if present; we print our own.
    let msg = match first.find(": ") {
        Some(i) if first[..i].contains("line") && first[..i].contains("column") => &first[i + 2..],
        _ => first,
    };
    msg.trim_start_matches("error: ").to_string()
}
