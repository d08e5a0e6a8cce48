//! Device → server command reports: `parse_report` and every typed reader on the result.
#![no_main]

use lab::mdm;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(report) = mdm::parse_report(data) else {
        return;
    };
    let _ = report.enrollment();
    let _ = mdm::update_results(&report);
    let _ = mdm::os_update_status(&report);
    let _ = mdm::available_os_updates(&report);
    let _ = mdm::query_responses(&report);
    let _ = mdm::security_info(&report);
    let ev = mdm::AcknowledgeEvent::from_report(&report);
    let _ = serde_json::to_vec(&ev).expect("an event always serialises");
    let _ = lab::plist_util::to_json(&plist::Value::Dictionary(report.body.clone()));
});
