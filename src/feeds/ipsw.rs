//! One ipsw.me device file (`https://api.ipsw.me/v4/device/{identifier}?type=ipsw`, field.md
//! §3.3). `signed: true` means Apple currently signs a *restore* of that IPSW for the device:
//! whether a device can be restored to a baseline, not whether an MDM update to it is possible.
//!
//! Required: the top-level `identifier` and `firmwares[]` with `version`, `buildid` and `signed`;
//! everything else is optional and unknown keys are ignored.

use super::FeedError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Firmware {
    /// The model; some clients omit it per firmware (then the file's `identifier` applies).
    #[serde(default)]
    pub identifier: Option<String>,
    pub version: String,
    pub buildid: String,
    pub signed: bool,
    #[serde(default)]
    pub releasedate: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub filesize: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct IpswFeed {
    pub path: PathBuf,
    pub identifier: String,
    /// Marketing name (`iPhone 11`).
    pub name: Option<String>,
    pub firmwares: Vec<Firmware>,
}

#[derive(Deserialize)]
struct Raw {
    identifier: String,
    #[serde(default)]
    name: Option<String>,
    firmwares: Vec<Firmware>,
}

/// Read and parse a saved ipsw.me device file.
pub fn load(path: &Path) -> Result<IpswFeed, FeedError> {
    let text = super::read(path)?;
    parse(path, &text)
}

/// Parse ipsw.me device JSON; `path` names the file in errors.
pub fn parse(path: &Path, text: &str) -> Result<IpswFeed, FeedError> {
    let raw: Raw = serde_json::from_str(text).map_err(|e| FeedError::json(path, &e))?;
    Ok(IpswFeed {
        path: path.to_path_buf(),
        identifier: raw.identifier,
        name: raw.name,
        firmwares: raw.firmwares,
    })
}

impl IpswFeed {
    /// The firmwares of `product_type` (the per-firmware identifier, else the file's).
    pub fn for_model<'a>(&'a self, product_type: &'a str) -> impl Iterator<Item = &'a Firmware> {
        self.firmwares
            .iter()
            .filter(move |f| f.identifier.as_deref().unwrap_or(&self.identifier) == product_type)
    }
}

/// `(version, build)` of every firmware Apple signs for `product_type`, in file order.
pub fn signed_builds(feed: &IpswFeed, product_type: &str) -> Vec<(String, String)> {
    feed.for_model(product_type)
        .filter(|f| f.signed)
        .map(|f| (f.version.clone(), f.buildid.clone()))
        .collect()
}

/// Is `build` signed for `product_type`? `None` when the file does not list it.
pub fn is_signed(feed: &IpswFeed, product_type: &str, build: &str) -> Option<bool> {
    let mut listed = feed.for_model(product_type).filter(|f| f.buildid == build);
    let first = listed.next()?;
    Some(first.signed || listed.any(|f| f.signed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(p: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
    }

    #[test]
    fn signed_builds_of_the_sample() {
        let f = load(&root("trials/feeds/ipsw-iPhone12,1.json")).unwrap();
        assert_eq!(f.identifier, "iPhone12,1");
        assert_eq!(f.name.as_deref(), Some("iPhone 11"));
        assert_eq!(
            signed_builds(&f, "iPhone12,1"),
            [
                ("26.6.1".to_string(), "23G83".to_string()),
                ("26.6".into(), "23G71".into()),
                ("18.7.10".into(), "22H420".into()),
            ]
        );
        assert!(signed_builds(&f, "iPhone14,2").is_empty());
        assert_eq!(is_signed(&f, "iPhone12,1", "23G71"), Some(true));
        assert_eq!(is_signed(&f, "iPhone12,1", "23F84"), Some(false));
        assert_eq!(is_signed(&f, "iPhone12,1", "23G6083"), None);
    }

    #[test]
    fn a_wrong_type_names_the_file_line_and_column() {
        let path = root("tests/bad_inputs/feeds/ipsw-signed-not-bool.json");
        let e = load(&path).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with(&format!("{}:6:", path.display())), "{s}");
        assert!(s.contains("expected a boolean"), "{s}");
    }
}
