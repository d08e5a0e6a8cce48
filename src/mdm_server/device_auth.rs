//! How the embedded server knows which device sent a message, the way a real iPhone proves it:
//! an identity certificate from the server's own SCEP CA ([`super::scep`]), and on every
//! check-in and command body an `Mdm-Signature` header, the base64 of a detached CMS
//! SignedData over the body by that identity (brief mdm.md §4–5.1; `SignMessage` in
//! `mdm/profiles/com.apple.mdm.yaml`). The signer certificate then plays the part the header
//! certificate plays in NanoMDM's `-cert-header` form ([`super::identity`]): bound to the UDID
//! at Authenticate, and a message signed by another device's identity is refused.

use super::http::AppState;
use super::identity::IdentityError;
use super::scep::{self, ScepCa};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use std::collections::HashMap;
use std::sync::Arc;

/// The header of the detached signature (brief mdm.md §4).
pub const MDM_SIGNATURE_HEADER: &str = "Mdm-Signature";

/// Device identity settings beyond [`super::ServerConfig`]'s certificate header.
#[derive(Default, Clone)]
pub struct DeviceAuth {
    /// Offer SCEP at [`scep::SCEP_PATH`] with this CA.
    pub scep: Option<Arc<ScepCa>>,
    /// Require `Mdm-Signature` on every device message (when no certificate header is
    /// configured) and take its signer as the device's identity.
    pub mdm_signature: bool,
}

/// The signer certificate of the body's `Mdm-Signature`, the signature verified. Trust in the
/// certificate (its CA) is checked by the caller.
pub fn signature_identity(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, IdentityError> {
    let value = headers
        .get(MDM_SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| IdentityError::Missing(MDM_SIGNATURE_HEADER.into()))?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| IdentityError::BadSignature("not base64".into()))?;
    super::cms::verify(&der, Some(body))
        .map(|v| v.signer_cert)
        .map_err(|e| IdentityError::BadSignature(e.to_string()))
}

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(scep::SCEP_PATH, get(scep_endpoint).post(scep_endpoint))
}

fn answer(content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        body.into(),
    )
        .into_response()
}

/// `GET|POST /scep?operation=…` (RFC 8894 §4).
async fn scep_endpoint(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let Some(ca) = st.auth.scep.clone() else {
        return (StatusCode::NOT_FOUND, "this server does not offer SCEP").into_response();
    };
    match q.get("operation").map(String::as_str) {
        Some("GetCACaps") => answer("text/plain", scep::CAPS),
        Some("GetCACert") => answer("application/x-x509-ca-cert", ca.cert_der.clone()),
        Some("PKIOperation") => {
            let msg = if body.is_empty() {
                // GET: `message` is base64; a `+` left unescaped arrives as a space.
                let m = q.get("message").map(|m| m.replace(' ', "+"));
                match m.and_then(|m| base64::engine::general_purpose::STANDARD.decode(m).ok()) {
                    Some(m) => m,
                    None => {
                        return (StatusCode::BAD_REQUEST, "PKIOperation without a message")
                            .into_response();
                    }
                }
            } else {
                body.to_vec()
            };
            match tokio::task::spawn_blocking(move || ca.pki_operation(&msg)).await {
                Ok(Ok(rep)) => answer("application/x-pki-message", rep),
                Ok(Err(e)) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }
        _ => (
            StatusCode::BAD_REQUEST,
            "operation must be GetCACaps, GetCACert or PKIOperation",
        )
            .into_response(),
    }
}
