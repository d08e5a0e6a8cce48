//! `lab feeds check FILE`: validate a saved feed (gdmf pmv or ipsw.me device file) and print what
//! it offers per model. `lab feeds fetch`: a stub (this build reads saved copies only).

use super::{CliError, print_json, table};
use crate::feeds::{self, Feed, GdmfFeed, IpswFeed, Release, gdmf, ipsw};
use crate::input::InputError;
use chrono::NaiveDate;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// A saved gdmf pmv JSON or ipsw.me device JSON.
    file: PathBuf,
    /// Only what is offered on this date (gdmf: PostingDate ≤ DATE ≤ ExpirationDate), merged per
    /// version and build.
    #[arg(long, value_name = "YYYY-MM-DD")]
    date: Option<NaiveDate>,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct FetchArgs {}

pub async fn check(a: CheckArgs) -> Result<u8, CliError> {
    let feed = feeds::load(&a.file).map_err(InputError::from)?;
    match feed {
        Feed::Gdmf(g) => print_gdmf(&g, a.date, a.json),
        Feed::Ipsw(f) => print_ipsw(&f, a.json),
    }
    Ok(0)
}

pub async fn fetch(_: FetchArgs) -> Result<u8, CliError> {
    Err(CliError::Failed(
        "feeds fetch is not implemented: this build reads saved copies only. Save \
         https://gdmf.apple.com/v2/pmv (its TLS chains to Apple's own root) and \
         https://api.ipsw.me/v4/device/IDENTIFIER?type=ipsw, check them with `lab feeds check`, \
         and name them under `feeds:` in the protocol."
            .into(),
    ))
}

/// Per model, the entries naming it: all of them, or (with a date) those offered on it, merged
/// per (version, build) like `gdmf::releases_for` but for every platform.
fn per_model(g: &GdmfFeed, date: Option<NaiveDate>) -> Vec<(String, Vec<Release>)> {
    gdmf::models(g)
        .into_iter()
        .map(|m| {
            let rs: Vec<Release> = match date {
                Some(d) if gdmf::Platform::of_device(&m) == gdmf::Platform::IOS => {
                    gdmf::releases_for(g, &m, d)
                }
                _ => g
                    .entries
                    .iter()
                    .filter(|e| e.supports(&m) && date.is_none_or(|d| e.offered_on(d)))
                    .cloned()
                    .collect(),
            };
            (m, rs)
        })
        .collect()
}

fn lists(r: &Release) -> String {
    r.lists
        .iter()
        .map(|l| format!("{l:?}"))
        .collect::<Vec<_>>()
        .join("+")
}

fn print_gdmf(g: &GdmfFeed, date: Option<NaiveDate>, as_json: bool) {
    let models = per_model(g, date);
    if as_json {
        let m: serde_json::Map<String, serde_json::Value> =
            models.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        print_json(&json!({
            "file": g.path.display().to_string(),
            "format": "gdmf",
            "date": date.map(|d| d.to_string()),
            "entries": g.entries.len(),
            "background_security_improvements": g.background_security_improvements,
            "models": m,
        }));
        return;
    }
    let count = |l: feeds::AssetList| g.entries.iter().filter(|e| e.lists == [l]).count();
    let mut platforms: std::collections::BTreeMap<&str, usize> = Default::default();
    for e in &g.entries {
        *platforms.entry(e.platform.as_str()).or_default() += 1;
    }
    println!(
        "{}: gdmf pmv, {} entries (PublicAssetSets {}, AssetSets {}), {} background security \
         improvements, {} models; platforms: {}",
        g.path.display(),
        g.entries.len(),
        count(feeds::AssetList::PublicAssetSets),
        count(feeds::AssetList::AssetSets),
        g.background_security_improvements.len(),
        models.len(),
        platforms
            .iter()
            .map(|(p, n)| format!("{p} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(d) = date {
        println!("offered on {d}:");
    }
    let rows: Vec<Vec<String>> = models
        .iter()
        .flat_map(|(m, rs)| {
            rs.iter().map(move |r| {
                vec![
                    m.clone(),
                    r.platform.as_str().to_string(),
                    r.version.clone(),
                    r.build.clone(),
                    r.posting_date.to_string(),
                    r.expiration_date
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "-".into()),
                    lists(r),
                ]
            })
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "MODEL", "PLATFORM", "VERSION", "BUILD", "POSTED", "EXPIRES", "LISTS"
            ],
            &rows
        )
    );
}

fn print_ipsw(f: &IpswFeed, as_json: bool) {
    let signed = ipsw::signed_builds(f, &f.identifier);
    if as_json {
        print_json(&json!({
            "file": f.path.display().to_string(),
            "format": "ipsw",
            "identifier": f.identifier,
            "name": f.name,
            "signed": signed
                .iter()
                .map(|(v, b)| json!({"version": v, "build": b}))
                .collect::<Vec<_>>(),
            "firmwares": f.firmwares,
        }));
        return;
    }
    println!(
        "{}: ipsw.me device file, {}{}, {} firmwares, signed (restorable): {}",
        f.path.display(),
        f.identifier,
        f.name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        f.firmwares.len(),
        if signed.is_empty() {
            "none".to_string()
        } else {
            signed
                .iter()
                .map(|(v, b)| format!("{v} ({b})"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let rows: Vec<Vec<String>> = f
        .firmwares
        .iter()
        .map(|fw| {
            vec![
                fw.identifier
                    .clone()
                    .unwrap_or_else(|| f.identifier.clone()),
                fw.version.clone(),
                fw.buildid.clone(),
                fw.signed.to_string(),
                fw.releasedate.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(&["MODEL", "VERSION", "BUILD", "SIGNED", "RELEASED"], &rows)
    );
}
