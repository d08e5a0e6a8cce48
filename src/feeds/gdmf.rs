//! The gdmf `pmv` JSON (`https://gdmf.apple.com/v2/pmv`, field.md §3.1).
//!
//! Decisions:
//! - Entries of `PublicAssetSets` and `AssetSets` are both offerable (field.md §3.4 Q2);
//!   `PublicBackgroundSecurityImprovements` are parsed and listed but never a target.
//! - The `"iOS"` list mixes platforms; an entry's platform is told from its `SupportedDevices`
//!   (`iP…` iOS/iPadOS, `AppleTV…` tvOS, `Watch…` watchOS, `AudioAccessory…` audioOS, the
//!   prefixes blacktop/ipsw uses). Lists keyed `macOS`, `visionOS`/`xrOS` take the key's name.
//! - The same (version, build) may appear several times (both lists, different device subsets,
//!   different dates): [`releases_for`] keeps one [`Release`] per (version, build), offered if any
//!   of its entries for the model is offered on the date (earliest posting, latest expiry of
//!   those, lists merged).
//! - Unknown keys are ignored (Apple adds keys); `ProductVersion`, `Build` and `PostingDate`
//!   are required, `ExpirationDate` and `SupportedDevices` may be missing.

use super::FeedError;
use crate::version::Version;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Platform {
    /// iPhone, iPad, iPod (iOS and iPadOS).
    #[serde(rename = "iOS")]
    IOS,
    #[serde(rename = "tvOS")]
    TvOS,
    #[serde(rename = "watchOS")]
    WatchOS,
    #[serde(rename = "audioOS")]
    AudioOS,
    #[serde(rename = "macOS")]
    MacOS,
    #[serde(rename = "visionOS")]
    VisionOS,
    /// Devices of no known family.
    #[serde(rename = "unknown")]
    Unknown,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::IOS => "iOS",
            Platform::TvOS => "tvOS",
            Platform::WatchOS => "watchOS",
            Platform::AudioOS => "audioOS",
            Platform::MacOS => "macOS",
            Platform::VisionOS => "visionOS",
            Platform::Unknown => "unknown",
        }
    }

    /// The platform of one device identifier (`iPhone14,2`, `AppleTV14,1`, `Watch7,1`).
    pub fn of_device(id: &str) -> Platform {
        if id.starts_with("iP") {
            Platform::IOS
        } else if id.starts_with("AppleTV") {
            Platform::TvOS
        } else if id.starts_with("Watch") {
            Platform::WatchOS
        } else if id.starts_with("AudioAccessory") {
            Platform::AudioOS
        } else {
            Platform::Unknown
        }
    }

    /// The platform of an entry of the list `key`: by the list for `macOS`/`visionOS`/`xrOS`,
    /// by the first device of a known family otherwise (the `iOS` list mixes platforms).
    fn of_entry(key: &str, devices: &[String]) -> Platform {
        match key {
            "macOS" => return Platform::MacOS,
            "visionOS" | "xrOS" => return Platform::VisionOS,
            _ => {}
        }
        devices
            .iter()
            .map(|d| Platform::of_device(d))
            .find(|p| *p != Platform::Unknown)
            .unwrap_or(if devices.is_empty() && key == "iOS" {
                Platform::IOS
            } else {
                Platform::Unknown
            })
    }
}

/// Which list of the pmv an entry is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum AssetList {
    /// `PublicAssetSets`: the latest releases for the general public.
    PublicAssetSets,
    /// `AssetSets`: releases offered to managed devices (older ones included).
    AssetSets,
    /// `PublicBackgroundSecurityImprovements`: never an update target.
    PublicBackgroundSecurityImprovements,
}

/// One entry of the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Release {
    pub platform: Platform,
    pub version: String,
    pub build: String,
    pub posting_date: NaiveDate,
    pub expiration_date: Option<NaiveDate>,
    pub supported_devices: Vec<String>,
    /// The lists the entry (or, merged by [`releases_for`], its duplicates) came from.
    pub lists: Vec<AssetList>,
    /// Background Security Improvements only: `(a)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_extra: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prerequisite_build: Option<String>,
}

impl Release {
    /// Offered on `on`: `PostingDate ≤ on ≤ ExpirationDate` (no expiry: open-ended).
    pub fn offered_on(&self, on: NaiveDate) -> bool {
        self.posting_date <= on && self.expiration_date.is_none_or(|x| on <= x)
    }

    pub fn supports(&self, product_type: &str) -> bool {
        self.supported_devices.iter().any(|d| d == product_type)
    }

    /// The version, parsed (`None` when it is not a dotted version).
    pub fn parsed_version(&self) -> Option<Version> {
        Version::parse(&self.version).ok()
    }
}

/// A parsed pmv file.
#[derive(Debug, Clone)]
pub struct GdmfFeed {
    pub path: PathBuf,
    /// Every entry of `PublicAssetSets` and `AssetSets`, in file order.
    pub entries: Vec<Release>,
    /// `PublicBackgroundSecurityImprovements` entries.
    pub background_security_improvements: Vec<Release>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "PublicAssetSets")]
    public: Option<BTreeMap<String, Vec<RawEntry>>>,
    #[serde(rename = "AssetSets")]
    managed: Option<BTreeMap<String, Vec<RawEntry>>>,
    #[serde(rename = "PublicBackgroundSecurityImprovements", default)]
    bsi: BTreeMap<String, Vec<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawEntry {
    product_version: String,
    build: String,
    posting_date: NaiveDate,
    #[serde(default)]
    expiration_date: Option<NaiveDate>,
    #[serde(default)]
    supported_devices: Vec<String>,
    #[serde(default)]
    product_version_extra: Option<String>,
    #[serde(default)]
    prerequisite_build: Option<String>,
}

/// Read and parse a saved pmv file.
pub fn load(path: &Path) -> Result<GdmfFeed, FeedError> {
    let text = super::read(path)?;
    parse(path, &text)
}

/// Parse pmv JSON; `path` names the file in errors.
pub fn parse(path: &Path, text: &str) -> Result<GdmfFeed, FeedError> {
    let raw: Raw = serde_json::from_str(text).map_err(|e| FeedError::json(path, &e))?;
    if raw.public.is_none() && raw.managed.is_none() {
        return Err(FeedError::at_start(
            path,
            "not a gdmf pmv file: neither PublicAssetSets nor AssetSets is present",
        ));
    }
    let convert = |map: BTreeMap<String, Vec<RawEntry>>, list: AssetList| -> Vec<Release> {
        let mut out = Vec::new();
        for (key, entries) in map {
            for e in entries {
                out.push(Release {
                    platform: Platform::of_entry(&key, &e.supported_devices),
                    version: e.product_version,
                    build: e.build,
                    posting_date: e.posting_date,
                    expiration_date: e.expiration_date,
                    supported_devices: e.supported_devices,
                    lists: vec![list],
                    version_extra: e.product_version_extra,
                    prerequisite_build: e.prerequisite_build,
                });
            }
        }
        out
    };
    let mut entries = convert(raw.public.unwrap_or_default(), AssetList::PublicAssetSets);
    entries.extend(convert(
        raw.managed.unwrap_or_default(),
        AssetList::AssetSets,
    ));
    Ok(GdmfFeed {
        path: path.to_path_buf(),
        entries,
        background_security_improvements: convert(
            raw.bsi,
            AssetList::PublicBackgroundSecurityImprovements,
        ),
    })
}

/// Sort key of an Apple build (`23G83` < `23G6083` < `23H5`): major number, letter, number,
/// trailing letters.
pub fn build_key(build: &str) -> (u32, String, u32, String) {
    let digits = |s: &str| -> (u32, usize) {
        let n = s.chars().take_while(char::is_ascii_digit).count();
        (s[..n].parse().unwrap_or(0), n)
    };
    let (major, n1) = digits(build);
    let rest = &build[n1..];
    let letters = rest.chars().take_while(char::is_ascii_alphabetic).count();
    let (minor, n2) = digits(&rest[letters..]);
    (
        major,
        rest[..letters].to_string(),
        minor,
        rest[letters + n2..].to_string(),
    )
}

/// Newest first: by version, then build.
fn newest_first(a: &Release, b: &Release) -> std::cmp::Ordering {
    b.parsed_version()
        .cmp(&a.parsed_version())
        .then_with(|| build_key(&b.build).cmp(&build_key(&a.build)))
}

/// The iOS/iPadOS releases offered to `product_type` on `on`: entries of `PublicAssetSets` and
/// `AssetSets` listing the model, posted on or before `on` and not expired before it; one per
/// (version, build), newest first.
pub fn releases_for(feed: &GdmfFeed, product_type: &str, on: NaiveDate) -> Vec<Release> {
    let mut out: Vec<Release> = Vec::new();
    for e in &feed.entries {
        if e.platform != Platform::IOS || !e.supports(product_type) || !e.offered_on(on) {
            continue;
        }
        match out
            .iter_mut()
            .find(|r| r.version == e.version && r.build == e.build)
        {
            Some(r) => {
                r.posting_date = r.posting_date.min(e.posting_date);
                r.expiration_date = match (r.expiration_date, e.expiration_date) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
                for l in &e.lists {
                    if !r.lists.contains(l) {
                        r.lists.push(*l);
                    }
                }
                r.lists.sort();
            }
            None => out.push(e.clone()),
        }
    }
    out.sort_by(newest_first);
    out
}

/// Every build of the newest version offered to `product_type` on `on` (two when Apple ships
/// two builds of a version), primary build (lowest) first; empty when nothing is offered.
pub fn latest_for(feed: &GdmfFeed, product_type: &str, on: NaiveDate) -> Vec<Release> {
    let all = releases_for(feed, product_type, on);
    let Some(newest) = all.iter().find_map(Release::parsed_version) else {
        return Vec::new();
    };
    let mut latest: Vec<Release> = all
        .into_iter()
        .filter(|r| r.parsed_version().as_ref() == Some(&newest))
        .collect();
    latest.sort_by_key(|a| build_key(&a.build));
    latest
}

/// Every model named in the feed's iOS/iPadOS, tvOS, watchOS, … entries, sorted.
pub fn models(feed: &GdmfFeed) -> Vec<String> {
    let mut m: Vec<String> = feed
        .entries
        .iter()
        .flat_map(|e| e.supported_devices.iter().cloned())
        .collect();
    m.sort();
    m.dedup();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GdmfFeed {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("trials/feeds/gdmf-pmv.json");
        load(&path).expect("the shipped sample parses")
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn vb(rs: &[Release]) -> Vec<(String, String)> {
        rs.iter()
            .map(|r| (r.version.clone(), r.build.clone()))
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn the_sample_has_every_list_and_platform() {
        let f = sample();
        assert!(
            f.entries
                .iter()
                .any(|e| e.lists == [AssetList::PublicAssetSets])
        );
        assert!(f.entries.iter().any(|e| e.lists == [AssetList::AssetSets]));
        assert_eq!(f.background_security_improvements.len(), 1);
        let bsi = &f.background_security_improvements[0];
        assert_eq!(bsi.version_extra.as_deref(), Some("(a)"));
        assert_eq!(bsi.prerequisite_build.as_deref(), Some("23D8133"));
        let platforms: std::collections::BTreeSet<Platform> =
            f.entries.iter().map(|e| e.platform).collect();
        assert!(platforms.contains(&Platform::IOS));
        assert!(platforms.contains(&Platform::TvOS));
        assert!(platforms.contains(&Platform::WatchOS));
        assert!(platforms.contains(&Platform::MacOS));
    }

    #[test]
    fn a_version_with_two_builds_yields_both() {
        let f = sample();
        let latest = latest_for(&f, "iPhone14,2", d("2026-08-22"));
        assert_eq!(
            vb(&latest),
            pairs(&[("26.6.1", "23G83"), ("26.6.1", "23G6083")])
        );
        // Listed in both lists: merged into one release per build.
        assert_eq!(
            latest[0].lists,
            [AssetList::PublicAssetSets, AssetList::AssetSets]
        );
    }

    #[test]
    fn releases_are_newest_first_and_respect_posting_and_expiry() {
        let f = sample();
        let on = d("2026-08-22");
        assert_eq!(
            vb(&releases_for(&f, "iPhone14,2", on)),
            pairs(&[
                ("26.6.1", "23G6083"),
                ("26.6.1", "23G83"),
                ("26.6", "23G71"),
                ("26.5.2", "23F84"),
                ("26.5", "23F77"),
                ("18.7.8", "22H6352"),
                ("18.7.8", "22H352"),
            ])
        );
        // Before 26.6.1 was posted (2026-08-17) it is not offered.
        let before = releases_for(&f, "iPhone14,2", d("2026-08-16"));
        assert_eq!(before[0].version, "26.6");
    }

    #[test]
    fn an_expired_entry_is_left_out_for_its_devices_only() {
        let f = sample();
        // 26.5 23F77 expires 2026-08-30 for iPhone18,1 but 2026-09-27 for iPhone14,2.
        let on = d("2026-09-01");
        let has_265 = |pt: &str| {
            releases_for(&f, pt, on)
                .iter()
                .any(|r| r.version == "26.5" && r.build == "23F77")
        };
        assert!(has_265("iPhone14,2"));
        assert!(!has_265("iPhone18,1"));
        // On its last day it is still offered.
        assert!(
            releases_for(&f, "iPhone18,1", d("2026-08-30"))
                .iter()
                .any(|r| r.version == "26.5")
        );
        // 17.7.2 expired for everyone.
        assert!(
            !releases_for(&f, "iPhone12,1", d("2026-08-22"))
                .iter()
                .any(|r| r.version == "17.7.2")
        );
    }

    #[test]
    fn a_model_specific_release_is_offered_to_its_model_only() {
        let f = sample();
        let on = d("2026-08-22");
        // 18.7.10 is device-specific: iPhone12,1 gets it, iPhone14,2 does not.
        assert_eq!(latest_for(&f, "iPhone12,1", on)[0].version, "26.6.1");
        assert!(
            releases_for(&f, "iPhone12,1", on)
                .iter()
                .any(|r| r.version == "18.7.10")
        );
        assert!(
            !releases_for(&f, "iPhone14,2", on)
                .iter()
                .any(|r| r.version == "18.7.10")
        );
        // iPhone8,1 stays on 15.x: its latest is the model-specific 15.8.5.
        assert_eq!(
            vb(&latest_for(&f, "iPhone8,1", on)),
            pairs(&[("15.8.5", "19H394")])
        );
    }

    #[test]
    fn tvos_and_watchos_entries_of_the_ios_list_are_not_ios_releases() {
        let f = sample();
        let tv = f
            .entries
            .iter()
            .find(|e| e.build == "23L773")
            .expect("tvOS entry");
        assert_eq!(tv.platform, Platform::TvOS);
        let on = d("2026-08-22");
        assert!(releases_for(&f, "AppleTV14,1", on).is_empty());
        assert!(releases_for(&f, "Watch7,1", on).is_empty());
        assert!(latest_for(&f, "iPhone99,9", on).is_empty());
    }

    #[test]
    fn builds_sort_by_number_not_text() {
        assert!(build_key("23G83") < build_key("23G6083"));
        assert!(build_key("23G6083") < build_key("23H5"));
        assert!(build_key("9A334") < build_key("23A341"));
    }

    #[test]
    fn a_malformed_file_names_the_file_line_and_column() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/bad_inputs/feeds/gdmf-truncated.json");
        let e = load(&path).unwrap_err();
        let FeedError::Parse {
            path: p,
            line,
            column,
            message,
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(p, &path);
        assert!(*line > 1 && *column > 0, "{e}");
        assert!(!message.is_empty());
        assert!(e.to_string().contains("gdmf-truncated.json:"), "{e}");
        // A wrong date is located too.
        let e = parse(
            Path::new("x.json"),
            "{\"AssetSets\": {\"iOS\": [\n {\"ProductVersion\": \"1.0\", \"Build\": \"1A1\", \"PostingDate\": \"2026-13-01\"}]}}",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("x.json:2:"), "{e}");
        // JSON of another shape is refused.
        let e = parse(Path::new("y.json"), "{\"firmwares\": []}").unwrap_err();
        assert!(
            e.to_string().contains("y.json:1:1: not a gdmf pmv file"),
            "{e}"
        );
    }
}
