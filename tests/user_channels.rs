//! Issue 14: a Shared iPad user's channel through the embedded MDM server over real HTTP. The
//! user-channel TokenUpdate (`mdm/checkin/tokenupdate.yaml`: `UserShortName`, `UserID`) is
//! recorded per device and read back through `GET /v1/user_channels/{id}` by the backend; it
//! never replaces the device channel's push token or counts as the device's TokenUpdate.

mod common;
use common::{ca, device_cert};
use lab::mdm::backend::{MdmBackend, NanoMdm, UserChannels};
use lab::mdm::user_channel::{ChannelUser, SHARED_IPAD_USER_ID};
use lab::mdm::{CHECKIN_CONTENT_TYPE, CheckinMessage};
use lab::mdm_server::identity::{IdentityCa, cert_header_value};
use lab::mdm_server::push::NoPush;
use lab::mdm_server::{ServerConfig, Store};
use std::sync::Arc;
use std::time::Duration;

const API_KEY: &str = "test-api-key-not-secret";
const CERT_HEADER: &str = "X-Client-Cert";
const TOPIC: &str = "com.apple.mgmt.External.test";
const UDID: &str = "00008030-0000000000000014";

async fn put(base: &str, cert: &[u8], body: Vec<u8>) -> u16 {
    lab::http_client::client(Duration::from_secs(10))
        .put(format!("{base}/mdm"))
        .header("content-type", CHECKIN_CONTENT_TYPE)
        .header(CERT_HEADER, cert_header_value(cert))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn authenticate() -> Vec<u8> {
    CheckinMessage::Authenticate {
        topic: TOPIC.into(),
        udid: UDID.into(),
        os_version: Some("17.5.1".into()),
        build_version: Some("21F90".into()),
        product_name: Some("iPad12,1".into()),
        serial_number: None,
        device_name: None,
    }
    .to_plist()
}

/// A TokenUpdate of the device channel, or of `user`'s channel (its own token).
fn token_update(user: Option<&str>) -> Vec<u8> {
    let mut d = CheckinMessage::TokenUpdate {
        topic: TOPIC.into(),
        udid: UDID.into(),
        token: format!("token/{}", user.unwrap_or("device")).into_bytes(),
        push_magic: "magic".into(),
        unlock_token: None,
        awaiting_configuration: false,
    }
    .to_dict();
    if let Some(u) = user {
        ChannelUser {
            user_id: SHARED_IPAD_USER_ID.into(),
            user_short_name: u.into(),
            user_long_name: None,
        }
        .checkin_keys(&mut d);
    }
    lab::plist_util::dict_to_xml(d)
}

async fn user_of(backend: &NanoMdm) -> Option<String> {
    match backend.user_channels(UDID).await.unwrap() {
        UserChannels::Known(r) => r.user.map(|u| u.user_short_name),
        UserChannels::Unknown(why) => panic!("the embedded server records them: {why}"),
    }
}

#[tokio::test]
async fn a_user_channel_token_update_is_recorded_per_device_and_read_by_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let cfg = ServerConfig {
        api_key: Some(API_KEY.into()),
        cert_header: Some(CERT_HEADER.into()),
        identity_ca: Some(IdentityCa::from_pem(ca.pem.as_bytes()).unwrap()),
        webhook_url: None,
        webhook_hmac_key: None,
        faults: None,
        ddm_on_enroll: false,
        push: Arc::new(NoPush),
    };
    let store = Arc::new(Store::open(&dir.path().join("mdm.sqlite")).unwrap());
    let srv = lab::mdm_server::start("127.0.0.1:0", store.clone(), cfg)
        .await
        .unwrap();
    let base = srv.url();
    let cert = device_cert(&ca);
    let backend = NanoMdm::embedded(&base, API_KEY, Duration::from_secs(5));

    assert_eq!(put(&base, &cert, authenticate()).await, 200);
    assert_eq!(put(&base, &cert, token_update(None)).await, 200);
    assert_eq!(user_of(&backend).await, None, "enrolled, nobody logged in");

    assert_eq!(put(&base, &cert, token_update(Some("alice"))).await, 200);
    assert_eq!(user_of(&backend).await.as_deref(), Some("alice"));
    // The device channel keeps its own token and its tally.
    let e = store.enrollment(UDID).unwrap().unwrap();
    assert_eq!(e.token.as_deref(), Some(&b"token/device"[..]));
    assert_eq!(e.token_update_tally, 1);

    // Another certificate cannot speak for the device's user channel.
    assert_eq!(
        put(&base, &device_cert(&ca), token_update(Some("eve"))).await,
        403
    );
    assert_eq!(user_of(&backend).await.as_deref(), Some("alice"));

    // Enrolled again: no user until the user channel checks in again.
    assert_eq!(put(&base, &cert, authenticate()).await, 200);
    assert_eq!(user_of(&backend).await, None);

    // The API needs its key, like every other endpoint.
    let r = lab::http_client::client(Duration::from_secs(5))
        .get(format!("{base}/v1/user_channels/{UDID}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // An MDM without the endpoint (a NanoMDM): unknown, saying why.
    let inbox = Arc::new(lab::mdm::webhook_receiver::Inbox::default());
    let nano =
        NanoMdm::with_webhooks(&base, API_KEY, Duration::from_secs(5), inbox).without_history();
    match nano.user_channels(UDID).await.unwrap() {
        UserChannels::Unknown(why) => assert_eq!(
            why,
            "the nanomdm API does not report user-channel check-ins"
        ),
        other => panic!("{other:?}"),
    }
}
