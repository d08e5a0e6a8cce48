//! Apple's version feeds, read offline from saved copies (briefs field.md §3):
//!
//! - [`gdmf`]: the Apple Software Lookup Service (`https://gdmf.apple.com/v2/pmv`), which
//!   releases are offered to which model (`ProductType` in `SupportedDevices`) between
//!   `PostingDate` and `ExpirationDate` — the source of MDM/DDM update targets (Q2);
//! - [`ipsw`]: one ipsw.me device file (`https://api.ipsw.me/v4/device/{id}?type=ipsw`), which
//!   builds Apple still signs for a *restore* (Q1: can the device go back to its baseline?).
//!
//! Nothing here touches the network. Every error names the file, and the line and column where
//! the JSON gives them.

pub mod gdmf;
pub mod ipsw;

pub use gdmf::{AssetList, GdmfFeed, Platform, Release};
pub use ipsw::{Firmware, IpswFeed};

use crate::input::InputError;
use chrono::NaiveDate;
use std::path::{Path, PathBuf};

/// A feed file that cannot be used. Exit code 2.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FeedError {
    #[error("{}: cannot read: {message}", path.display())]
    Read { path: PathBuf, message: String },
    /// Not JSON, or JSON of the wrong shape; line and column are 1-based.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

impl FeedError {
    pub fn path(&self) -> &Path {
        match self {
            FeedError::Read { path, .. } | FeedError::Parse { path, .. } => path,
        }
    }

    pub(crate) fn json(path: &Path, e: &serde_json::Error) -> Self {
        // serde_json renders "… at line L column C"; the location is printed by us.
        let full = e.to_string();
        let message = match full.rfind(" at line ") {
            Some(i) => full[..i].to_string(),
            None => full,
        };
        let message = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!("not valid JSON: {message}")
            }
            _ => message,
        };
        FeedError::Parse {
            path: path.to_path_buf(),
            line: e.line().max(1),
            column: e.column().max(1),
            message,
        }
    }

    pub(crate) fn at_start(path: &Path, message: impl Into<String>) -> Self {
        FeedError::Parse {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
            message: message.into(),
        }
    }
}

impl From<FeedError> for InputError {
    fn from(e: FeedError) -> Self {
        match e {
            FeedError::Read { path, message } => InputError {
                path,
                line: None,
                column: None,
                message: format!("cannot read: {message}"),
                snippet: None,
            },
            FeedError::Parse {
                path,
                line,
                column,
                message,
            } => {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                // chrono's words for a date it cannot read.
                let mut message = match message.as_str() {
                    "input is out of range"
                    | "input contains invalid characters"
                    | "premature end of input"
                    | "trailing input"
                    | "no possible date and time matching input" => {
                        format!("not a date (YYYY-MM-DD): {message}")
                    }
                    _ => message,
                };
                // Name the key the value belongs to, as the YAML errors do.
                if let Some(key) = crate::input::key_at(&text, line as u64, column as u64)
                    && !message.contains(&key)
                    && !message.starts_with("not valid JSON")
                {
                    message = format!("{key}: {message}");
                }
                InputError {
                    path,
                    line: Some(line as u64),
                    column: Some(column as u64),
                    message,
                    snippet: None,
                }
                .with_source(&text)
            }
        }
    }
}

pub(crate) fn read(path: &Path) -> Result<String, FeedError> {
    let bytes = std::fs::read(path).map_err(|e| FeedError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let text = crate::input::text_of(path, bytes).map_err(|e| FeedError::Parse {
        path: path.to_path_buf(),
        line: e.line.unwrap_or(1) as usize,
        column: e.column.unwrap_or(1) as usize,
        message: e.message,
    })?;
    if text.trim().is_empty() {
        return Err(FeedError::at_start(
            path,
            "the file is empty (expected a gdmf pmv or an ipsw.me device file)",
        ));
    }
    Ok(text)
}

/// A saved feed file of either kind.
#[derive(Debug, Clone)]
pub enum Feed {
    Gdmf(GdmfFeed),
    Ipsw(IpswFeed),
}

/// Read a saved feed and tell its kind from its top-level keys (`PublicAssetSets`/`AssetSets`:
/// gdmf pmv; `firmwares`: ipsw.me device).
pub fn load(path: &Path) -> Result<Feed, FeedError> {
    let text = read(path)?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| FeedError::json(path, &e))?;
    let Some(obj) = v.as_object() else {
        return Err(FeedError::at_start(
            path,
            "expected a JSON object (a gdmf pmv or an ipsw.me device file)",
        ));
    };
    if obj.contains_key("PublicAssetSets") || obj.contains_key("AssetSets") {
        gdmf::parse(path, &text).map(Feed::Gdmf)
    } else if obj.contains_key("firmwares") {
        ipsw::parse(path, &text).map(Feed::Ipsw)
    } else {
        Err(FeedError::at_start(
            path,
            "neither a gdmf pmv file (PublicAssetSets / AssetSets) nor an ipsw.me device file \
             (firmwares)",
        ))
    }
}

/// The feeds of a trial, parsed, with the date they are read at.
#[derive(Debug, Clone)]
pub struct TrialFeeds {
    pub gdmf: Option<GdmfFeed>,
    /// One ipsw.me file per model.
    pub ipsw: Vec<IpswFeed>,
    /// The trial date: releases are offered on it when `PostingDate ≤ date ≤ ExpirationDate`.
    pub date: NaiveDate,
}

impl TrialFeeds {
    /// The ipsw.me file of a model.
    pub fn ipsw_for(&self, product_type: &str) -> Option<&IpswFeed> {
        self.ipsw.iter().find(|f| f.identifier == product_type)
    }

    /// Can a device of this model be restored to `build` (ipsw.me says Apple signs it)? `None`:
    /// unknown (no ipsw.me file for the model, or the build is not listed in it).
    pub fn can_restore(&self, product_type: &str, build: &str) -> Option<bool> {
        ipsw::is_signed(self.ipsw_for(product_type)?, product_type, build)
    }
}
