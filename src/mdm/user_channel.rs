//! The user channel of a Shared iPad: the check-ins its logged-in user's channel sends, and what
//! an MDM says of them. Pure data, both sides of the wire: the simulated Shared iPad writes
//! these keys, the embedded server reads them, and the harness reads the server's record.
//!
//! Keys: `mdm/checkin/tokenupdate.yaml` (iOS 9.3+, `sharedipad: required`): `UserShortName`
//! ("the Managed Apple Account identifier of the user on Shared iPad. It indicates that the
//! token is for the user channel") and `UserID` (`FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF` on a
//! Shared iPad: "authentication doesn't occur"); `UserLongName` is `introduced: n/a` on iOS, so
//! it is read when present and never required. MDM brief §3 and §4.

use plist::{Dictionary, Value};
use serde::{Deserialize, Serialize};

/// `UserID` of every Shared iPad user channel (`mdm/checkin/tokenupdate.yaml`).
pub const SHARED_IPAD_USER_ID: &str = "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF";

/// The user of a user-channel check-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelUser {
    pub user_id: String,
    pub user_short_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_long_name: Option<String>,
}

impl ChannelUser {
    /// The user of a check-in dictionary, when it came on a user channel (it carries
    /// `UserShortName` or `UserID`); `None` for the device channel.
    pub fn of_checkin(d: &Dictionary) -> Option<ChannelUser> {
        let s = |k: &str| d.get(k).and_then(Value::as_string).map(str::to_string);
        let (id, short) = (s("UserID"), s("UserShortName"));
        if id.is_none() && short.is_none() {
            return None;
        }
        Some(ChannelUser {
            user_id: id.unwrap_or_default(),
            user_short_name: short.unwrap_or_default(),
            user_long_name: s("UserLongName"),
        })
    }

    /// The check-in keys of this user, to add to a device's TokenUpdate.
    pub fn checkin_keys(&self, d: &mut Dictionary) {
        d.insert("UserID".into(), self.user_id.clone().into());
        d.insert("UserShortName".into(), self.user_short_name.clone().into());
        if let Some(l) = &self.user_long_name {
            d.insert("UserLongName".into(), l.clone().into());
        }
    }
}

/// What an MDM's records say of a device's user channel (`GET /v1/user_channels/{id}` on
/// `lab`'s own server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserChannelRecord {
    /// The last user-channel TokenUpdate since the device enrolled (its Authenticate); `None`:
    /// no user channel has checked in since.
    pub user: Option<ChannelUser>,
    /// When that TokenUpdate came (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<String>,
}

/// What the harness learns of a device's user channel from its MDM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChannels {
    /// The MDM cannot tell (its API has no such record); why.
    Unknown(String),
    /// The MDM's record.
    Known(UserChannelRecord),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_channel_check_in_is_told_by_its_user_keys() {
        let mut d = Dictionary::new();
        d.insert("MessageType".into(), "TokenUpdate".into());
        d.insert("UDID".into(), "U".into());
        assert_eq!(ChannelUser::of_checkin(&d), None, "the device channel");
        let alice = ChannelUser {
            user_id: SHARED_IPAD_USER_ID.into(),
            user_short_name: "alice@school.example".into(),
            user_long_name: None,
        };
        alice.checkin_keys(&mut d);
        assert!(d.get("UserLongName").is_none(), "n/a on iOS");
        assert_eq!(ChannelUser::of_checkin(&d), Some(alice));
        let mut short_only = Dictionary::new();
        short_only.insert("UserShortName".into(), "bob".into());
        let bob = ChannelUser::of_checkin(&short_only).unwrap();
        assert_eq!(
            (bob.user_id.as_str(), bob.user_short_name.as_str()),
            ("", "bob")
        );
    }

    #[test]
    fn the_record_reads_as_the_server_writes_it() {
        let none = r#"{"user":null}"#;
        let r: UserChannelRecord = serde_json::from_str(none).unwrap();
        assert_eq!(r.user, None);
        assert_eq!(serde_json::to_string(&r).unwrap(), none);
    }
}
