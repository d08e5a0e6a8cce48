//! The enrollment profile (`.mobileconfig`) an MDM hands a device, read for what a simulated
//! device needs: the MDM payload (`com.apple.mdm`: `ServerURL`, `CheckInURL`, `Topic`,
//! `SignMessage`) and the SCEP payload (`com.apple.security.scep`, whose `PayloadContent`
//! holds `URL` and `Challenge`). Key names are those of Apple's schema
//! (apple/device-management `mdm/profiles/com.apple.mdm.yaml`,
//! `mdm/profiles/com.apple.security.scep.yaml`; not in the local reference copy). MicroMDM
//! serves its profile at `/mdm/enroll`, possibly signed: a signed profile is a CMS SignedData
//! with the plist inside, and is read the same way (its signature is not checked).

use super::scep_client::ScepSettings;
use crate::plist_util::get_str;
use plist::{Dictionary, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    #[error("enrollment profile: not a plist (nor a signed one): {0}")]
    NotAPlist(String),
    #[error("enrollment profile: no com.apple.mdm payload")]
    NoMdmPayload,
    #[error("enrollment profile: the com.apple.mdm payload has no ServerURL")]
    NoServerUrl,
}

/// What the simulated devices take from an enrollment profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentProfile {
    /// Where command results go (`ServerURL`).
    pub server_url: String,
    /// Where check-ins go (`CheckInURL`; `ServerURL` when absent, brief mdm.md §4).
    pub checkin_url: Option<String>,
    pub topic: Option<String>,
    pub sign_message: bool,
    pub scep: Option<ScepSettings>,
}

impl EnrollmentProfile {
    /// The URL a check-in goes to.
    pub fn checkin(&self) -> &str {
        self.checkin_url.as_deref().unwrap_or(&self.server_url)
    }
}

fn payloads(top: &Dictionary) -> impl Iterator<Item = &Dictionary> {
    top.get("PayloadContent")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_dictionary)
}

/// Read a profile file's bytes.
pub fn parse(bytes: &[u8]) -> Result<EnrollmentProfile, ProfileError> {
    let inner;
    let plist_bytes = if bytes.first() == Some(&0x30) {
        inner = crate::mdm_server::cms::parse_signed(bytes)
            .ok()
            .and_then(|sd| sd.content)
            .ok_or_else(|| {
                ProfileError::NotAPlist("a DER file that is no signed profile".into())
            })?;
        inner.as_slice()
    } else {
        bytes
    };
    let top: Dictionary =
        plist::from_bytes(plist_bytes).map_err(|e| ProfileError::NotAPlist(e.to_string()))?;
    let of_type = |t: &str| payloads(&top).find(|p| get_str(p, "PayloadType") == Some(t));
    let mdm = of_type("com.apple.mdm").ok_or(ProfileError::NoMdmPayload)?;
    let server_url = get_str(mdm, "ServerURL")
        .ok_or(ProfileError::NoServerUrl)?
        .to_string();
    let scep = of_type("com.apple.security.scep").and_then(|p| {
        let c = p.get("PayloadContent").and_then(Value::as_dictionary)?;
        Some(ScepSettings {
            url: get_str(c, "URL")?.to_string(),
            challenge: get_str(c, "Challenge").unwrap_or_default().to_string(),
        })
    });
    Ok(EnrollmentProfile {
        server_url,
        checkin_url: get_str(mdm, "CheckInURL").map(str::to_string),
        topic: get_str(mdm, "Topic").map(str::to_string),
        sign_message: mdm
            .get("SignMessage")
            .and_then(Value::as_boolean)
            .unwrap_or(false),
        scep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of MicroMDM's `/mdm/enroll` profile: separate check-in and command URLs, a
    /// SCEP payload with a challenge.
    const MICROMDM: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
<key>PayloadContent</key><array>
 <dict><key>PayloadType</key><string>com.apple.security.scep</string>
  <key>PayloadContent</key><dict>
   <key>URL</key><string>https://mdm.example/scep</string>
   <key>Challenge</key><string>sekret</string>
   <key>Keysize</key><integer>2048</integer></dict></dict>
 <dict><key>PayloadType</key><string>com.apple.mdm</string>
  <key>ServerURL</key><string>https://mdm.example/mdm/connect</string>
  <key>CheckInURL</key><string>https://mdm.example/mdm/checkin</string>
  <key>Topic</key><string>com.apple.mgmt.External.abc</string>
  <key>SignMessage</key><true/></dict>
</array>
<key>PayloadType</key><string>Configuration</string>
</dict></plist>"#;

    #[test]
    fn micromdm_s_profile_gives_two_urls_scep_and_signing() {
        let p = parse(MICROMDM.as_bytes()).unwrap();
        assert_eq!(p.server_url, "https://mdm.example/mdm/connect");
        assert_eq!(p.checkin(), "https://mdm.example/mdm/checkin");
        assert!(p.sign_message);
        assert_eq!(p.topic.as_deref(), Some("com.apple.mgmt.External.abc"));
        let scep = p.scep.unwrap();
        assert_eq!(scep.url, "https://mdm.example/scep");
        assert_eq!(scep.challenge, "sekret");
    }

    #[test]
    fn one_url_serves_both_and_a_profile_without_mdm_payload_is_refused() {
        let one = MICROMDM.replace(
            "<key>CheckInURL</key><string>https://mdm.example/mdm/checkin</string>",
            "",
        );
        let p = parse(one.as_bytes()).unwrap();
        assert_eq!(p.checkin(), "https://mdm.example/mdm/connect");
        let none = MICROMDM.replace("com.apple.mdm<", "com.apple.other<");
        assert_eq!(parse(none.as_bytes()), Err(ProfileError::NoMdmPayload));
        assert!(matches!(parse(b"junk"), Err(ProfileError::NotAPlist(_))));
    }
}
