//! Simulated fleet YAML: `sim::fleet::parse` (YAML, then `count` expansion and identities).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(devices) = lab::sim::fleet::parse(Path::new("fleet.yaml"), text) {
        for d in &devices {
            assert!(d.disk_free <= d.disk_total);
            for v in d.mdm_overrides.values() {
                let _ = v.to_plist();
            }
        }
    }
});
