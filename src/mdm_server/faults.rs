//! Faults the embedded MDM server can be told to inject, so that the harness's handling of a
//! flaky MDM is tested against the real HTTP path (issue #6): an operator API that answers 500,
//! answers too late, or drops the connection; webhooks that are lost or sent twice.
//!
//! ```yaml
//! # lab mdm serve --faults F.yaml · lab sim serve --mdm-faults F.yaml · protocol lab.simulated.mdm_faults
//! api:
//!   - { path: /v1/enqueue, fault: error_500, times: 2 }          # the first two enqueues
//!   - { path: /v1/enqueue, fault: drop_after_handling, skip: 3 } # the 4th: queued, no answer
//!   - { path: /v1/history, fault: slow, delay: 5s }               # answered 5 s late
//!   - { path: /v1/enqueue, method: PUT, fault: drop }             # closed before handling
//!   - { path: /v1/enqueue, request_type: ScheduleOSUpdate, fault: error_500 }
//!   - { path: /v1/history, fault: unauthorized, skip: 40 }       # the API key revoked
//! webhooks:
//!   lose_every: 3        # every 3rd command-result webhook is never sent
//!   duplicate_every: 2   # every 2nd is sent twice (same event_id)
//! ```
//!
//! A rule matches requests whose path starts with `path` (and whose method is `method`, when
//! given); it lets the first `skip` matching requests through and then faults the next `times`
//! (default 1); with `request_type`, only enqueued commands of that RequestType match. Each
//! matching request counts for every rule it matches. Device-facing
//! endpoints (`/mdm`, `/checkin`) can be faulted the same way.

use crate::input::{InputError, load_yaml};
use crate::units::DurationSpec;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsFile {
    #[serde(default)]
    pub api: Vec<Spanned<ApiFaultSpec>>,
    #[serde(default)]
    pub webhooks: WebhookFaults,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiFaultSpec {
    /// Path prefix, e.g. `/v1/enqueue`.
    pub path: String,
    /// HTTP method (any when absent).
    pub method: Option<String>,
    /// Only commands of this RequestType (read from an enqueued command's plist), e.g.
    /// `ScheduleOSUpdate`: the fault hits the dose, not the status queries around it.
    pub request_type: Option<String>,
    pub fault: ApiFaultKind,
    /// For `slow`: how late the answer comes.
    pub delay: Option<DurationSpec>,
    /// Matching requests let through before the fault starts.
    #[serde(default)]
    pub skip: u64,
    /// Matching requests faulted (default 1).
    #[serde(default = "one")]
    pub times: u64,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiFaultKind {
    /// HTTP 500 with a text body; the request is not handled.
    #[serde(rename = "error_500")]
    Error500,
    /// Handled after `delay` (a client with a shorter timeout gives up first; the request
    /// still takes effect when the delay is over, as with a real overloaded server).
    Slow,
    /// The connection is closed before the request is handled (nothing happened).
    Drop,
    /// The request is handled (a command *is* queued), then the connection is closed before
    /// the answer: the client cannot know.
    DropAfterHandling,
    /// HTTP 401 `Unauthorized` (NanoMDM's answer to a wrong key, MDM brief §5.1), the request
    /// not handled: an API key revoked or rotated on the server mid-run (issue 17).
    Unauthorized,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookFaults {
    /// Every Nth webhook event that carries a command result is never sent.
    pub lose_every: Option<u64>,
    /// Every Nth webhook event that carries a command result is sent twice.
    pub duplicate_every: Option<u64>,
}

/// What to do with one webhook event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFate {
    Send,
    Lose,
    Duplicate,
}

/// The faults of one running server, with their counters.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Vec<(ApiFaultSpec, AtomicU64)>,
    webhooks: WebhookFaults,
    result_webhooks: AtomicU64,
    /// How many faults were injected so far (for the README's figures and for tests).
    pub injected: AtomicU64,
}

impl Faults {
    /// Read and check a faults file; errors name the file, line and column.
    pub fn load(path: &Path) -> Result<Faults, InputError> {
        let f: FaultsFile = load_yaml(path)?;
        Faults::from_file(path, f)
    }

    pub fn from_file(path: &Path, f: FaultsFile) -> Result<Faults, InputError> {
        let mut rules = Vec::new();
        for r in f.api {
            let loc = Some(r.referenced);
            let spec = r.value;
            if !spec.path.starts_with('/') {
                return Err(InputError::at(
                    path,
                    loc,
                    format!(
                        "api fault path {:?} must start with / (like /v1/enqueue)",
                        spec.path
                    ),
                ));
            }
            match (spec.fault, spec.delay) {
                (ApiFaultKind::Slow, None) => {
                    return Err(InputError::at(
                        path,
                        loc,
                        "a slow fault needs a delay (like delay: 5s)",
                    ));
                }
                (k, Some(_)) if k != ApiFaultKind::Slow => {
                    return Err(InputError::at(
                        path,
                        loc,
                        "delay only goes with fault: slow",
                    ));
                }
                _ => {}
            }
            if spec.times == 0 {
                return Err(InputError::at(
                    path,
                    loc,
                    "times: 0 would never fault; leave the rule out instead",
                ));
            }
            rules.push((spec, AtomicU64::new(0)));
        }
        for (n, what) in [
            (f.webhooks.lose_every, "lose_every"),
            (f.webhooks.duplicate_every, "duplicate_every"),
        ] {
            if n == Some(0) {
                return Err(InputError::at(
                    path,
                    None,
                    format!("webhooks.{what} must be at least 1"),
                ));
            }
        }
        Ok(Faults {
            rules,
            webhooks: f.webhooks,
            ..Faults::default()
        })
    }

    fn needs_request_type(&self) -> bool {
        self.rules.iter().any(|(s, _)| s.request_type.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.webhooks == WebhookFaults::default()
    }

    /// The fault (if any) for one request. Every matching rule counts the request.
    fn for_request(
        &self,
        method: &str,
        path: &str,
        request_type: Option<&str>,
    ) -> Option<(ApiFaultKind, Option<DurationSpec>)> {
        let mut chosen = None;
        for (spec, seen) in &self.rules {
            if !path.starts_with(&spec.path)
                || spec
                    .method
                    .as_deref()
                    .is_some_and(|m| !m.eq_ignore_ascii_case(method))
                || spec
                    .request_type
                    .as_deref()
                    .is_some_and(|t| Some(t) != request_type)
            {
                continue;
            }
            let n = seen.fetch_add(1, Ordering::SeqCst);
            if chosen.is_none() && n >= spec.skip && n < spec.skip + spec.times {
                chosen = Some((spec.fault, spec.delay));
            }
        }
        if chosen.is_some() {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        chosen
    }

    /// The fate of the next webhook event; `carries_result` is false for check-ins and Idle
    /// polls, which are never faulted (so that a test can count which results were lost).
    pub fn webhook_fate(&self, carries_result: bool) -> WebhookFate {
        if !carries_result
            || (self.webhooks.lose_every.is_none() && self.webhooks.duplicate_every.is_none())
        {
            return WebhookFate::Send;
        }
        let n = self.result_webhooks.fetch_add(1, Ordering::SeqCst) + 1;
        let fate = if self
            .webhooks
            .lose_every
            .is_some_and(|k| n.is_multiple_of(k))
        {
            WebhookFate::Lose
        } else if self
            .webhooks
            .duplicate_every
            .is_some_and(|k| n.is_multiple_of(k))
        {
            WebhookFate::Duplicate
        } else {
            WebhookFate::Send
        };
        if fate != WebhookFate::Send {
            self.injected.fetch_add(1, Ordering::SeqCst);
            tracing::info!(n, ?fate, "injected webhook fault");
        }
        fate
    }
}

/// A response whose body fails at once: the status line may already be on the wire, then the
/// connection is cut, so the client sees an answer it cannot read — a dropped connection.
fn dropped_connection() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<axum::body::Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "injected fault: connection dropped",
        ))
    });
    Response::new(Body::from_stream(stream))
}

/// The largest body read to find a RequestType (axum's own default limit).
const MAX_BODY: usize = 2 * 1024 * 1024;

/// Middleware applying the API faults.
pub async fn inject(State(faults): State<Arc<Faults>>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    // A rule on the RequestType needs the command's plist: read the body, then put it back.
    let (req, request_type) = if faults.needs_request_type() {
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
            return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
        };
        let rt = crate::mdm::command::parse_envelope(&bytes)
            .ok()
            .map(|e| e.request_type);
        (Request::from_parts(parts, Body::from(bytes)), rt)
    } else {
        (req, None)
    };
    let Some((kind, delay)) = faults.for_request(&method, &path, request_type.as_deref()) else {
        return next.run(req).await;
    };
    tracing::info!(%method, %path, ?kind, "injected MDM API fault");
    match kind {
        ApiFaultKind::Error500 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected fault: internal server error",
        )
            .into_response(),
        // Handled in a task of its own, so that it takes effect even when the client has
        // given up and closed the connection (as a real server's database write would).
        ApiFaultKind::Slow => {
            let delay = delay.map(|d| d.0).unwrap_or_default();
            let handled = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                next.run(req).await
            });
            handled.await.unwrap_or_else(|_| {
                (StatusCode::INTERNAL_SERVER_ERROR, "handler failed").into_response()
            })
        }
        ApiFaultKind::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response(),
        ApiFaultKind::Drop => dropped_connection(),
        ApiFaultKind::DropAfterHandling => {
            let _ = tokio::spawn(next.run(req)).await;
            dropped_connection()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Faults, InputError> {
        let p = Path::new("faults.yaml");
        let f: FaultsFile = crate::input::parse_yaml(p, text)?;
        Faults::from_file(p, f)
    }

    #[test]
    fn skip_and_times_choose_which_requests_fault() {
        let f = parse("api:\n  - { path: /v1/enqueue, fault: error_500, skip: 1, times: 2 }\n")
            .unwrap();
        let got: Vec<bool> = (0..5)
            .map(|_| f.for_request("PUT", "/v1/enqueue/abc", None).is_some())
            .collect();
        assert_eq!(got, [false, true, true, false, false]);
        assert!(f.for_request("GET", "/v1/history/abc", None).is_none());
        assert_eq!(f.injected.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn method_filters_and_first_matching_rule_wins() {
        let f = parse(
            "api:\n  - { path: /v1/, method: GET, fault: drop }\n  - { path: /v1/enqueue, fault: slow, delay: 2s }\n",
        )
        .unwrap();
        assert_eq!(
            f.for_request("PUT", "/v1/enqueue/x", None).map(|x| x.0),
            Some(ApiFaultKind::Slow)
        );
        assert_eq!(
            f.for_request("get", "/v1/history/x", None).map(|x| x.0),
            Some(ApiFaultKind::Drop)
        );
    }

    #[test]
    fn request_type_rules_match_only_that_command() {
        let f = parse(
            "api:\n  - { path: /v1/enqueue, request_type: ScheduleOSUpdate, fault: error_500 }\n",
        )
        .unwrap();
        assert!(f.needs_request_type());
        assert!(
            f.for_request("PUT", "/v1/enqueue/x", Some("OSUpdateStatus"))
                .is_none()
        );
        assert!(f.for_request("PUT", "/v1/enqueue/x", None).is_none());
        assert!(
            f.for_request("PUT", "/v1/enqueue/x", Some("ScheduleOSUpdate"))
                .is_some()
        );
        assert!(
            f.for_request("PUT", "/v1/enqueue/x", Some("ScheduleOSUpdate"))
                .is_none(),
            "times defaults to 1"
        );
    }

    #[test]
    fn webhook_faults_count_result_events_only() {
        let f = parse("webhooks: { lose_every: 3, duplicate_every: 2 }\n").unwrap();
        assert_eq!(f.webhook_fate(false), WebhookFate::Send);
        let fates: Vec<WebhookFate> = (0..6).map(|_| f.webhook_fate(true)).collect();
        use WebhookFate::*;
        assert_eq!(fates, [Send, Duplicate, Lose, Duplicate, Send, Lose]);
    }

    #[test]
    fn bad_rules_are_refused_with_their_location() {
        for (text, needle) in [
            (
                "api:\n  - { path: /v1/enqueue, fault: slow }\n",
                "needs a delay",
            ),
            (
                "api:\n  - { path: /v1/enqueue, fault: drop, delay: 1s }\n",
                "delay only goes with fault: slow",
            ),
            (
                "api:\n  - { path: v1/enqueue, fault: drop }\n",
                "must start with /",
            ),
            (
                "api:\n  - { path: /x, fault: drop, times: 0 }\n",
                "times: 0",
            ),
            ("api:\n  - { path: /x, fault: explode }\n", "explode"),
            ("webhooks: { lose_every: 0 }\n", "at least 1"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(e.contains("faults.yaml"), "{e}");
        }
        let e = parse("api:\n  - { path: /x, fault: slow }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":2:"), "the rule's line: {e}");
    }
}
