//! Trial protocol YAML: `parse_yaml::<Protocol>` and the post-parse `check` (with the feeds
//! dropped, so that the target never reads files named by the input).
#![no_main]

use lab::trial::protocol::{LoadedProtocol, Protocol, check};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent-fuzz-dir/protocol.yaml");
    let Ok(mut protocol) = lab::input::parse_yaml::<Protocol>(path, text) else {
        return;
    };
    protocol.feeds = None;
    let loaded = LoadedProtocol {
        path: path.to_path_buf(),
        protocol,
        bytes: data.to_vec(),
        sha256: String::new(),
    };
    let _ = check(&loaded);
});
