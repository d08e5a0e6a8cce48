//! Saved gdmf pmv JSON: `feeds::gdmf::parse`, then the release queries for every model named.
#![no_main]

use lab::feeds::gdmf;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(feed) = gdmf::parse(Path::new("pmv.json"), text) else {
        return;
    };
    let on = chrono::NaiveDate::from_ymd_opt(2025, 6, 1).expect("date");
    for m in gdmf::models(&feed).iter().take(8) {
        let _ = gdmf::releases_for(&feed, m, on);
        let _ = gdmf::latest_for(&feed, m, on);
    }
    for r in feed
        .entries
        .iter()
        .chain(&feed.background_security_improvements)
    {
        let _ = gdmf::build_key(&r.build);
        let _ = r.parsed_version();
    }
});
