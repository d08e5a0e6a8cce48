//! Enqueued command plists: `parse_envelope`, then the inner command read back
//! (`Command::from_dict`) and checked against the schema.
#![no_main]

use lab::mdm;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(env) = mdm::parse_envelope(data) else {
        return;
    };
    assert!(!env.command_uuid.is_empty() && !env.request_type.is_empty());
    if let Ok(c) = mdm::Command::from_dict(&env.command) {
        let _ = c.to_micromdm_json("U", Some(&env.command_uuid));
        let again = mdm::parse_envelope(&c.to_plist(&env.command_uuid)).expect("re-encoded");
        assert_eq!(again.request_type, env.request_type);
    }
    let _ = mdm::validate_command(&env.command, "17.5");
});
