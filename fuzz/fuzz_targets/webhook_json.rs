//! MicroMDM-format webhook bodies as NanoMDM posts them, and the raw plists inside.
#![no_main]

use lab::mdm;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(ev) = serde_json::from_slice::<mdm::WebhookEvent>(data) else {
        return;
    };
    let back = serde_json::to_vec(&ev).expect("an event always serialises");
    let again: mdm::WebhookEvent = serde_json::from_slice(&back).expect("round trip");
    assert_eq!(again, ev);
    if let Some(a) = &ev.acknowledge_event {
        let _ = mdm::parse_report(&a.raw_payload);
    }
    if let Some(c) = &ev.checkin_event {
        let _ = mdm::parse_checkin(&c.raw_payload);
    }
});
