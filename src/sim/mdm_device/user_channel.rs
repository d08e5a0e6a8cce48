//! A simulated Shared iPad's user channel: with `shared_ipad.logged_in_user` in the fleet, the
//! device sends its user's TokenUpdate after its own enrollment, as a real Shared iPad does
//! when a user logs in (`mdm/checkin/tokenupdate.yaml`: `UserShortName`, and `UserID`
//! `FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF` on Shared iPad; `UserLongName` is n/a on iOS, so it is
//! not sent). The user channel has its own push token and PushMagic.

use crate::mdm::checkin::CheckinMessage;
use crate::mdm::user_channel::{ChannelUser, SHARED_IPAD_USER_ID};
use crate::sim::fleet::SimDeviceSpec;
use sha2::{Digest, Sha256};

/// The user-channel TokenUpdate body of a device, or `None` when it is no Shared iPad or nobody
/// is logged in (the login window sends none). Deterministic in the lab's seed.
pub(super) fn token_update(spec: &SimDeviceSpec, topic: &str, seed: u64) -> Option<Vec<u8>> {
    let name = spec.shared_ipad.as_ref()?.logged_in_user.as_ref()?;
    let label = format!("user-channel/{}/{name}", spec.udid);
    let device = CheckinMessage::TokenUpdate {
        topic: topic.to_string(),
        udid: spec.udid.clone(),
        token: Sha256::digest(format!("apns-token/{label}").as_bytes()).to_vec(),
        push_magic: crate::sim::identity::uuid_from(seed, &format!("push-magic/{label}")),
        unlock_token: None,
        awaiting_configuration: false,
    };
    let mut d = device.to_dict();
    ChannelUser {
        user_id: SHARED_IPAD_USER_ID.into(),
        user_short_name: name.clone(),
        user_long_name: None,
    }
    .checkin_keys(&mut d);
    Some(crate::plist_util::dict_to_xml(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> SimDeviceSpec {
        let yaml = format!(
            "devices:\n  - name: Cart\n    product_type: iPad13,1\n    ios: {{ version: '17.5.1', build: 21F90 }}\n    disk: {{ total: 64 GB, free: 20 GB }}\n    battery: {{ level: 80 }}\n{extra}"
        );
        crate::sim::fleet::parse(std::path::Path::new("f.yaml"), &yaml)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn a_logged_in_user_checks_in_on_the_user_channel_only() {
        let s = spec("    shared_ipad: { logged_in_user: alice }\n");
        let body = token_update(&s, "com.apple.mgmt.X", 7).expect("a user is logged in");
        let m = crate::mdm::checkin::parse_checkin(&body).unwrap();
        assert_eq!(m.message_type(), "TokenUpdate");
        assert_eq!(m.udid(), Some(s.udid.as_str()));
        let plist::Value::Dictionary(d) = crate::plist_util::parse(&body).unwrap() else {
            panic!("a dictionary")
        };
        let user = ChannelUser::of_checkin(&d).unwrap();
        assert_eq!(user.user_short_name, "alice");
        assert_eq!(user.user_id, SHARED_IPAD_USER_ID);
        assert!(d.get("UserLongName").is_none());
        // Its own token, not the device channel's.
        let CheckinMessage::TokenUpdate { token, .. } = m else {
            panic!()
        };
        assert_ne!(
            token,
            Sha256::digest(format!("apns-token/{}", s.udid).as_bytes()).to_vec()
        );
        assert_eq!(token_update(&s, "com.apple.mgmt.X", 7), Some(body));
        // The login window, and an iPad that is not shared: no user channel.
        assert_eq!(token_update(&spec("    shared_ipad: {}\n"), "t", 7), None);
        assert_eq!(token_update(&spec(""), "t", 7), None);
    }
}
