//! Saved ipsw.me device JSON: `feeds::ipsw::parse`, then the signing queries.
#![no_main]

use lab::feeds::ipsw;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(feed) = ipsw::parse(Path::new("device.json"), text) else {
        return;
    };
    let _ = ipsw::signed_builds(&feed, &feed.identifier);
    for f in feed.firmwares.iter().take(8) {
        let _ = ipsw::is_signed(&feed, &feed.identifier, &f.buildid);
    }
});
