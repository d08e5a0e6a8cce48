//! Check-in bodies (Authenticate / TokenUpdate / CheckOut / others): `parse_checkin`, and the
//! parsed message written back and re-read.
#![no_main]

use lab::mdm;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = mdm::parse_checkin(data) else {
        return;
    };
    let _ = m.message_type();
    let _ = m.udid();
    let _ = m.webhook_topic();
    let _ = mdm::CheckinEvent::from_checkin(&m, data);
    if !matches!(m, mdm::CheckinMessage::Other { .. }) {
        let again = mdm::parse_checkin(&m.to_plist()).expect("re-encoded check-in parses");
        assert_eq!(again, m);
    }
});
