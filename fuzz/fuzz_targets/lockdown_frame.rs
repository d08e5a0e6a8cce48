//! lockdownd frames: `frame::decode`, then the payload as a reply (`check_reply`) and as a pair
//! record (`PairRecord::from_bytes`).
#![no_main]

use lab::lockdown::client::check_reply;
use lab::lockdown::{PairRecord, frame};
use lab::plist_util;
use libfuzzer_sys::fuzz_target;

fn payload(p: &[u8]) {
    if let Ok(d) = plist_util::parse_dict(p) {
        let request = plist_util::get_str(&d, "Request")
            .unwrap_or("GetValue")
            .to_string();
        let _ = check_reply(&request, d.clone());
        let _ = check_reply("StartSession", d);
    }
    if let Ok(r) = PairRecord::from_bytes(p) {
        // What is read back must survive a round trip.
        let again = PairRecord::from_bytes(&r.to_plist_bytes()).expect("re-encoded record parses");
        assert_eq!(again.host_id, r.host_id);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((p, used))) = frame::decode(rest) {
        assert!(used >= frame::LEN_PREFIX && used <= rest.len());
        payload(&p);
        rest = &rest[used..];
    }
    payload(data);
});
