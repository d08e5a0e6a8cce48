//! The embedded server's record of Shared iPad user channels: the last user-channel TokenUpdate
//! of each device since it enrolled, and `GET /v1/user_channels/{id}` that reads it (what the
//! harness derives "a user is logged in" from, `journal::fold::baseline_facts::UserChannel`).
//!
//! A user channel's TokenUpdate carries the user's own push token (`mdm/checkin/tokenupdate.yaml`:
//! "It indicates that the token is for the user channel"), so it never replaces the device
//! channel's token, tally or DDM turn-on: `http::handle_checkin` routes it here instead.

use super::http::{AppState, check_api_auth, internal};
use super::store::{Result, Store};
use crate::mdm::user_channel::{ChannelUser, UserChannelRecord};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rusqlite::{OptionalExtension, params};

/// Run by `Store::init` with the rest of the schema.
pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS user_channels (
    enrollment_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    user_short_name TEXT NOT NULL,
    user_long_name TEXT,
    received_at TEXT NOT NULL
);
"#;

/// The user of a check-in body when it came on a user channel; `None` for the device channel
/// (or a body that is no dictionary: the check-in parser has judged it already).
pub(super) fn of_checkin(body: &[u8]) -> Option<ChannelUser> {
    match crate::plist_util::parse(body).ok()? {
        plist::Value::Dictionary(d) => ChannelUser::of_checkin(&d),
        _ => None,
    }
}

impl Store {
    /// Keep `user` as the device's user channel (the last one wins: a Shared iPad has one user
    /// logged in at a time).
    pub fn record_user_channel(&self, udid: &str, user: &ChannelUser) -> Result<()> {
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        self.with(|c| {
            c.execute(
                "INSERT INTO user_channels (enrollment_id, user_id, user_short_name, user_long_name, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(enrollment_id) DO UPDATE SET user_id = ?2, user_short_name = ?3,
                     user_long_name = ?4, received_at = ?5",
                params![udid, user.user_id, user.user_short_name, user.user_long_name, at],
            )?;
            Ok(())
        })
    }

    /// Forget the device's user channel: it enrolled again (Authenticate), and a new
    /// enrollment has no user until its user channel checks in.
    pub fn clear_user_channel(&self, udid: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM user_channels WHERE enrollment_id = ?1",
                params![udid],
            )?;
            Ok(())
        })
    }

    pub fn user_channel(&self, udid: &str) -> Result<UserChannelRecord> {
        let row = self.with(|c| {
            Ok(c.query_row(
                "SELECT user_id, user_short_name, user_long_name, received_at
                 FROM user_channels WHERE enrollment_id = ?1",
                params![udid],
                |r| {
                    Ok((
                        ChannelUser {
                            user_id: r.get(0)?,
                            user_short_name: r.get(1)?,
                            user_long_name: r.get(2)?,
                        },
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()?)
        })?;
        Ok(match row {
            Some((user, at)) => UserChannelRecord {
                user: Some(user),
                received_at: Some(at),
            },
            None => UserChannelRecord {
                user: None,
                received_at: None,
            },
        })
    }
}

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/v1/user_channels/{id}", get(user_channels))
}

/// `GET /v1/user_channels/{id}`: `{"id", "user": {user_id, user_short_name[, user_long_name]} |
/// null[, "received_at"]}`.
async fn user_channels(
    State(st): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check_api_auth(&st, &headers) {
        return r;
    }
    match st.store.user_channel(&id) {
        Ok(rec) => {
            let mut v = serde_json::to_value(rec).expect("a record serialises");
            v["id"] = id.into();
            axum::Json(v).into_response()
        }
        Err(e) => internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdm::user_channel::SHARED_IPAD_USER_ID;

    #[test]
    fn the_last_user_channel_is_kept_until_the_device_enrolls_again() {
        let s = Store::open_in_memory().unwrap();
        assert_eq!(s.user_channel("U").unwrap().user, None);
        let user = |name: &str| ChannelUser {
            user_id: SHARED_IPAD_USER_ID.into(),
            user_short_name: name.into(),
            user_long_name: None,
        };
        s.record_user_channel("U", &user("alice")).unwrap();
        s.record_user_channel("U", &user("bob")).unwrap();
        let r = s.user_channel("U").unwrap();
        assert_eq!(r.user, Some(user("bob")));
        assert!(r.received_at.is_some());
        assert_eq!(s.user_channel("V").unwrap().user, None, "per device");
        s.clear_user_channel("U").unwrap();
        assert_eq!(s.user_channel("U").unwrap().user, None);
    }

    #[test]
    fn only_a_check_in_with_user_keys_is_a_user_channel() {
        let mut d = plist::Dictionary::new();
        d.insert("MessageType".into(), "TokenUpdate".into());
        let body = |d: &plist::Dictionary| crate::plist_util::dict_to_xml(d.clone());
        assert_eq!(of_checkin(&body(&d)), None);
        d.insert("UserShortName".into(), "alice".into());
        assert_eq!(of_checkin(&body(&d)).unwrap().user_short_name, "alice");
        assert_eq!(of_checkin(b"not a plist"), None);
    }
}
