//! lockdownd's `Error` names (libimobiledevice 1.3.0 `lockdownd_error_str_map`, brief §3.2).

use serde::Serialize;
use std::fmt;

/// An `Error: "<Name>"` a device answered with. Unknown names are kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum DeviceErrorCode {
    InvalidResponse,
    MissingKey,
    MissingValue,
    GetProhibited,
    SetProhibited,
    RemoveProhibited,
    ImmutableValue,
    PasswordProtected,
    UserDeniedPairing,
    PairingDialogResponsePending,
    MissingHostID,
    InvalidHostID,
    SessionActive,
    SessionInactive,
    MissingSessionID,
    InvalidSessionID,
    MissingService,
    InvalidService,
    ServiceLimit,
    MissingPairRecord,
    SavePairRecordFailed,
    InvalidPairRecord,
    InvalidActivationRecord,
    MissingActivationRecord,
    ServiceProhibited,
    EscrowLocked,
    PairingProhibitedOverThisConnection,
    FMiPProtected,
    MCProtected,
    MCChallengeRequired,
    /// pymobiledevice3 maps this one too.
    InvalidConnection,
    Other(String),
}

const NAMES: &[(&str, DeviceErrorCode)] = {
    use DeviceErrorCode::*;
    &[
        ("InvalidResponse", InvalidResponse),
        ("MissingKey", MissingKey),
        ("MissingValue", MissingValue),
        ("GetProhibited", GetProhibited),
        ("SetProhibited", SetProhibited),
        ("RemoveProhibited", RemoveProhibited),
        ("ImmutableValue", ImmutableValue),
        ("PasswordProtected", PasswordProtected),
        ("UserDeniedPairing", UserDeniedPairing),
        ("PairingDialogResponsePending", PairingDialogResponsePending),
        ("MissingHostID", MissingHostID),
        ("InvalidHostID", InvalidHostID),
        ("SessionActive", SessionActive),
        ("SessionInactive", SessionInactive),
        ("MissingSessionID", MissingSessionID),
        ("InvalidSessionID", InvalidSessionID),
        ("MissingService", MissingService),
        ("InvalidService", InvalidService),
        ("ServiceLimit", ServiceLimit),
        ("MissingPairRecord", MissingPairRecord),
        ("SavePairRecordFailed", SavePairRecordFailed),
        ("InvalidPairRecord", InvalidPairRecord),
        ("InvalidActivationRecord", InvalidActivationRecord),
        ("MissingActivationRecord", MissingActivationRecord),
        ("ServiceProhibited", ServiceProhibited),
        ("EscrowLocked", EscrowLocked),
        (
            "PairingProhibitedOverThisConnection",
            PairingProhibitedOverThisConnection,
        ),
        ("FMiPProtected", FMiPProtected),
        ("MCProtected", MCProtected),
        ("MCChallengeRequired", MCChallengeRequired),
        ("InvalidConnection", InvalidConnection),
    ]
};

impl DeviceErrorCode {
    pub fn from_name(name: &str) -> Self {
        NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| DeviceErrorCode::Other(name.to_string()))
    }

    pub fn name(&self) -> &str {
        match self {
            DeviceErrorCode::Other(s) => s,
            known => NAMES
                .iter()
                .find(|(_, c)| c == known)
                .map(|(n, _)| *n)
                .unwrap_or("?"),
        }
    }

    /// A plain-language hint for the operator, where one helps.
    pub fn hint(&self) -> Option<&'static str> {
        use DeviceErrorCode::*;
        Some(match self {
            InvalidHostID => {
                "the device does not know this host's pair record; re-pair (trust the computer)"
            }
            PasswordProtected => "the device is locked with a passcode; unlock it",
            UserDeniedPairing => "the operator tapped \"Don't Trust\" on the device",
            PairingDialogResponsePending => {
                "the \"Trust This Computer?\" prompt is waiting on the device"
            }
            MissingValue => "the device has no value for this key",
            SessionInactive => "the request needs a lockdown session",
            _ => return None,
        })
    }
}

impl fmt::Display for DeviceErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<DeviceErrorCode> for String {
    fn from(c: DeviceErrorCode) -> String {
        c.name().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip_and_unknown_are_kept() {
        for (n, c) in NAMES {
            assert_eq!(DeviceErrorCode::from_name(n), *c);
            assert_eq!(c.name(), *n);
        }
        let o = DeviceErrorCode::from_name("SomethingNew");
        assert_eq!(o, DeviceErrorCode::Other("SomethingNew".into()));
        assert_eq!(o.to_string(), "SomethingNew");
    }
}
