//! The MDM refusing `lab` (issue 17 "Fail loudly", issue 14 "Interop"): an API key the server
//! answers with 401/403, or webhooks the listener refuses for their HMAC signature. Either makes
//! every answer vanish — before, `qualify` and `run` then ended in "no answer" with exit 0. Here
//! the refusal is noticed once, kept ([`AccessWatch`]), and the runner stops on it with an
//! [`MdmRefusal`] that names the server (its origin only: no user, password, path or query) and
//! the setting to check, never the key.
//!
//! [`Watched`] and [`WatchedDdm`] wrap any backend (embedded, NanoMDM, MicroMDM; the embedded
//! DDM API, KMFDDM): every call goes through unchanged, and a 401/403 answer is also kept in
//! the watch. The decisions ([`api_key_refusal`], [`webhook_refusal`], [`server_of`]) are pure.

use super::backend::{
    BackendError, BackendNote, BoxFuture, CommandResult, DeliveryCount, Enqueued, MdmBackend,
    MdmDose, RejectedReport, StoreIdentity,
};
use super::command::Command;
use super::ddm_backend::RawStatusReport;
use super::ddm_doses::{DdmDoses, DdmEnrollment};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The protocol setting that holds the MDM's API key.
pub const MDM_KEY_SETTING: &str = "lab.mdm.api_key_env";
/// The protocol setting that holds KMFDDM's API key.
pub const DDM_KEY_SETTING: &str = "lab.mdm.ddm.api_key_env";
/// The protocol setting that holds the key webhooks are signed with.
pub const HMAC_KEY_SETTING: &str = "lab.mdm.webhook.hmac_key_env";

/// How many webhooks refused for their signature in a row, with none accepted in between, stop
/// a run. A wrong key refuses every webhook, and an MDM posts one per check-in and per command
/// answer (NanoMDM posted 1 476 in 60 s of `lab qualify` in issue 14), so three come within the
/// first device's first exchange; a single stray or corrupted post on the listener's port,
/// between accepted webhooks, does not stop a run that is otherwise hearing its MDM.
pub const WEBHOOK_REFUSALS_IN_A_ROW: u64 = 3;

/// The MDM refuses `lab`, or `lab` refuses the MDM: no answer can reach the trial.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MdmRefusal {
    /// The MDM's API answered 401 or 403: the key is wrong, or not this server's.
    #[error(
        "the MDM at {server} refused lab's API key (HTTP {status}{kind}): the API key was refused; check {setting} (the environment variable must hold this server's API key) — nothing more is sent to it"
    )]
    ApiKey {
        /// The server's origin (`scheme://host:port`), nothing else of its URL.
        server: String,
        status: u16,
        /// ` from KMFDDM`, ` from the embedded DDM API`, or empty.
        kind: String,
        setting: &'static str,
    },
    /// The webhook listener refused the MDM's webhooks for their HMAC signature.
    #[error(
        "the MDM's webhooks are refused: {in_a_row} in a row failed the HMAC signature check ({reason}) and none was accepted in between, so no answer reaches lab; their HMAC signature does not match {setting} — set it to the key the MDM signs with (NanoMDM's -webhook-hmac-key), or remove it if the MDM does not sign"
    )]
    WebhookSignature {
        in_a_row: u64,
        reason: String,
        setting: &'static str,
    },
}

impl MdmRefusal {
    /// The journal observation's key: which refusal.
    pub fn key(&self) -> &'static str {
        match self {
            MdmRefusal::ApiKey { .. } => "api_key",
            MdmRefusal::WebhookSignature { .. } => "webhook_signature",
        }
    }
}

/// The server a URL names, as `scheme://host:port` — never its user, password, path or query
/// (an operator may have written the key into the URL). Not a URL: `the configured MDM URL`.
pub fn server_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) if u.has_host() => u.origin().ascii_serialization(),
        _ => "the configured MDM URL".into(),
    }
}

/// An answer that says the API key was refused (HTTP 401 Unauthorized or 403 Forbidden), as a
/// refusal naming the server and `setting`; any other error is not one.
pub fn api_key_refusal(e: &BackendError, setting: &'static str, kind: &str) -> Option<MdmRefusal> {
    match e {
        BackendError::Refused {
            url,
            status: status @ (401 | 403),
            ..
        } => Some(MdmRefusal::ApiKey {
            server: server_of(url),
            status: *status,
            kind: kind.to_string(),
            setting,
        }),
        _ => None,
    }
}

/// What the webhook listener has seen: accepted webhooks, and those refused for their
/// signature (missing or not matching), counted since the last accepted one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookTally {
    pub accepted: u64,
    pub refused_signature: u64,
    /// Refused for the signature since the last accepted webhook.
    pub refused_in_a_row: u64,
    pub last_reason: Option<String>,
}

impl WebhookTally {
    pub fn accept(&mut self) {
        self.accepted += 1;
        self.refused_in_a_row = 0;
    }

    pub fn refuse_signature(&mut self, reason: &str) {
        self.refused_signature += 1;
        self.refused_in_a_row += 1;
        self.last_reason = Some(reason.to_string());
    }
}

/// The stop rule for refused webhooks: [`WEBHOOK_REFUSALS_IN_A_ROW`] refused for their
/// signature with none accepted in between.
pub fn webhook_refusal(t: &WebhookTally) -> Option<MdmRefusal> {
    (t.refused_in_a_row >= WEBHOOK_REFUSALS_IN_A_ROW).then(|| MdmRefusal::WebhookSignature {
        in_a_row: t.refused_in_a_row,
        reason: t.last_reason.clone().unwrap_or_default(),
        setting: HMAC_KEY_SETTING,
    })
}

/// The first refusal seen by any watched backend (later ones say nothing new).
#[derive(Debug, Default)]
pub struct AccessWatch {
    first: Mutex<Option<MdmRefusal>>,
    notify: tokio::sync::Notify,
}

impl AccessWatch {
    pub fn new() -> Arc<AccessWatch> {
        Arc::new(AccessWatch::default())
    }

    /// Keep `r` unless a refusal is kept already.
    pub fn raise(&self, r: MdmRefusal) {
        let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(r);
            self.notify.notify_waiters();
        }
    }

    pub fn refusal(&self) -> Option<MdmRefusal> {
        self.first.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Wait until a refusal is kept, or `timeout` passes (then `None`).
    pub async fn wait(&self, timeout: Duration) -> Option<MdmRefusal> {
        let notified = self.notify.notified();
        if let Some(r) = self.refusal() {
            return Some(r);
        }
        let _ = tokio::time::timeout(timeout, notified).await;
        self.refusal()
    }
}

/// An MDM backend whose 401/403 answers are kept in an [`AccessWatch`].
pub struct Watched {
    inner: Box<dyn MdmBackend>,
    watch: Arc<AccessWatch>,
}

impl Watched {
    pub fn new(inner: Box<dyn MdmBackend>, watch: Arc<AccessWatch>) -> Watched {
        Watched { inner, watch }
    }

    fn see<T>(&self, r: Result<T, BackendError>) -> Result<T, BackendError> {
        if let Err(e) = &r
            && let Some(refusal) = api_key_refusal(e, MDM_KEY_SETTING, "")
        {
            self.watch.raise(refusal);
        }
        r
    }
}

impl MdmBackend for Watched {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn enqueue<'a>(
        &'a self,
        udid: &'a str,
        command: &'a Command,
        command_uuid: &'a str,
    ) -> BoxFuture<'a, Result<Enqueued, BackendError>> {
        Box::pin(async move { self.see(self.inner.enqueue(udid, command, command_uuid).await) })
    }

    fn results<'a>(
        &'a self,
        udid: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CommandResult>, BackendError>> {
        Box::pin(async move { self.see(self.inner.results(udid).await) })
    }

    fn enqueues_in_bulk(&self) -> bool {
        self.inner.enqueues_in_bulk()
    }

    fn enqueue_many<'a>(
        &'a self,
        udids: &'a [String],
        command: &'a Command,
        command_uuid: &'a str,
    ) -> BoxFuture<'a, Vec<Result<Enqueued, BackendError>>> {
        Box::pin(async move {
            let all = self.inner.enqueue_many(udids, command, command_uuid).await;
            all.into_iter().map(|r| self.see(r)).collect()
        })
    }

    fn results_many<'a>(
        &'a self,
        udids: &'a [String],
    ) -> BoxFuture<'a, Vec<Result<Vec<CommandResult>, BackendError>>> {
        Box::pin(async move {
            let all = self.inner.results_many(udids).await;
            all.into_iter().map(|r| self.see(r)).collect()
        })
    }

    fn fresh_results_many<'a>(
        &'a self,
        udids: &'a [String],
    ) -> BoxFuture<'a, Vec<Result<Vec<CommandResult>, BackendError>>> {
        Box::pin(async move {
            let all = self.inner.fresh_results_many(udids).await;
            all.into_iter().map(|r| self.see(r)).collect()
        })
    }

    fn delivery_counts<'a>(
        &'a self,
        udid: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, DeliveryCount>, BackendError>> {
        Box::pin(async move { self.see(self.inner.delivery_counts(udid).await) })
    }

    fn queued<'a>(
        &'a self,
        udid: &'a str,
        command_uuid: &'a str,
    ) -> BoxFuture<'a, Result<Option<bool>, BackendError>> {
        Box::pin(async move { self.see(self.inner.queued(udid, command_uuid).await) })
    }

    fn store_identity(&self) -> BoxFuture<'_, Result<Option<StoreIdentity>, BackendError>> {
        Box::pin(async move { self.see(self.inner.store_identity().await) })
    }

    fn dose_records<'a>(
        &'a self,
        udid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<MdmDose>>, BackendError>> {
        Box::pin(async move { self.see(self.inner.dose_records(udid).await) })
    }

    fn rejected(&self, after: i64) -> BoxFuture<'_, Result<Vec<RejectedReport>, BackendError>> {
        Box::pin(async move { self.see(self.inner.rejected(after).await) })
    }

    fn take_notes(&self) -> Vec<BackendNote> {
        self.inner.take_notes()
    }

    fn settle_time(&self) -> Duration {
        self.inner.settle_time()
    }

    fn keeps_history(&self) -> Option<bool> {
        self.inner.keeps_history()
    }

    fn deliveries(&self, udid: &str) -> Option<Vec<super::backend::Delivery>> {
        self.inner.deliveries(udid)
    }

    fn deliveries_of(&self, udid: &str, uuids: &[&str]) -> Option<Vec<super::backend::Delivery>> {
        self.inner.deliveries_of(udid, uuids)
    }

    fn user_channels<'a>(
        &'a self,
        udid: &'a str,
    ) -> BoxFuture<'a, Result<super::backend::UserChannels, BackendError>> {
        Box::pin(async move { self.see(self.inner.user_channels(udid).await) })
    }
}

/// A DDM server whose 401/403 answers are kept in an [`AccessWatch`].
pub struct WatchedDdm {
    inner: Box<dyn DdmDoses>,
    watch: Arc<AccessWatch>,
}

impl WatchedDdm {
    pub fn new(inner: Box<dyn DdmDoses>, watch: Arc<AccessWatch>) -> WatchedDdm {
        WatchedDdm { inner, watch }
    }

    fn see<T>(&self, r: Result<T, BackendError>) -> Result<T, BackendError> {
        if let Err(e) = &r {
            // KMFDDM has its own key; the embedded server's DDM API takes the MDM's.
            let (setting, kind) = match self.inner.kind() {
                "kmfddm" => (DDM_KEY_SETTING, " from KMFDDM"),
                _ => (MDM_KEY_SETTING, " from the DDM API"),
            };
            if let Some(refusal) = api_key_refusal(e, setting, kind) {
                self.watch.raise(refusal);
            }
        }
        r
    }
}

impl DdmDoses for WatchedDdm {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn enrollment<'a>(
        &'a self,
        enrollment_id: &'a str,
    ) -> BoxFuture<'a, Result<DdmEnrollment, BackendError>> {
        Box::pin(async move { self.see(self.inner.enrollment(enrollment_id).await) })
    }

    fn give<'a>(
        &'a self,
        enrollment_id: &'a str,
        declaration: &'a [u8],
        identifier: &'a str,
    ) -> BoxFuture<'a, Result<Enqueued, BackendError>> {
        Box::pin(async move {
            self.see(
                self.inner
                    .give(enrollment_id, declaration, identifier)
                    .await,
            )
        })
    }

    fn status_reports<'a>(
        &'a self,
        enrollment_id: &'a str,
        after: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<RawStatusReport>, BackendError>> {
        Box::pin(async move { self.see(self.inner.status_reports(enrollment_id, after).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str, status: u16) -> BackendError {
        BackendError::Refused {
            url: url.into(),
            status,
            message: "Unauthorized".into(),
        }
    }

    #[test]
    fn the_server_is_named_by_its_origin_only() {
        assert_eq!(
            server_of("https://nanomdm:s3cret@mdm.example:9000/v1/enqueue/X?key=s3cret"),
            "https://mdm.example:9000"
        );
        assert_eq!(server_of("http://127.0.0.1:9400"), "http://127.0.0.1:9400");
        assert_eq!(server_of(""), "the configured MDM URL");
    }

    #[test]
    fn only_401_and_403_are_a_refused_key() {
        let e = refused("http://u:key@h:1/v1/history/A", 401);
        let r = api_key_refusal(&e, MDM_KEY_SETTING, "").unwrap();
        let m = r.to_string();
        assert!(m.contains("the MDM at http://h:1 refused"), "{m}");
        assert!(m.contains("HTTP 401"), "{m}");
        assert!(m.contains("check lab.mdm.api_key_env"), "{m}");
        assert!(!m.contains("key@") && !m.contains("/v1/history"), "{m}");
        assert!(api_key_refusal(&refused("http://h:1", 403), MDM_KEY_SETTING, "").is_some());
        for status in [400, 404, 409, 429, 500] {
            assert_eq!(
                api_key_refusal(&refused("http://h:1", status), MDM_KEY_SETTING, ""),
                None
            );
        }
        let timeout = BackendError::Timeout {
            url: "http://h:1".into(),
            after: Duration::from_secs(1),
        };
        assert_eq!(api_key_refusal(&timeout, MDM_KEY_SETTING, ""), None);
    }

    #[test]
    fn three_refused_webhooks_in_a_row_stop_one_between_accepted_ones_does_not() {
        let mut t = WebhookTally::default();
        t.refuse_signature("bad X-Hmac-Signature");
        t.refuse_signature("bad X-Hmac-Signature");
        assert_eq!(webhook_refusal(&t), None, "two in a row");
        t.accept();
        t.refuse_signature("bad X-Hmac-Signature");
        t.accept();
        t.refuse_signature("missing X-Hmac-Signature");
        t.refuse_signature("missing X-Hmac-Signature");
        assert_eq!(
            webhook_refusal(&t),
            None,
            "a stray post between accepted ones"
        );
        t.refuse_signature("missing X-Hmac-Signature");
        let r = webhook_refusal(&t).expect("three in a row");
        let m = r.to_string();
        assert!(m.starts_with("the MDM's webhooks are refused"), "{m}");
        assert!(m.contains("missing X-Hmac-Signature"), "{m}");
        assert!(m.contains("lab.mdm.webhook.hmac_key_env"), "{m}");
        assert_eq!(r.key(), "webhook_signature");
        // A key rotated on the MDM mid-run: accepted ones first, then only refusals.
        let mut t = WebhookTally::default();
        (0..100).for_each(|_| t.accept());
        (0..3).for_each(|_| t.refuse_signature("bad X-Hmac-Signature"));
        assert!(webhook_refusal(&t).is_some());
    }

    /// A DDM server answering 401: KMFDDM has its own key setting, the embedded server's DDM
    /// API takes the MDM's.
    struct RefusingDdm(&'static str);

    impl DdmDoses for RefusingDdm {
        fn kind(&self) -> &'static str {
            self.0
        }
        fn enrollment<'a>(
            &'a self,
            _: &'a str,
        ) -> BoxFuture<'a, Result<DdmEnrollment, BackendError>> {
            Box::pin(async { Err(refused("http://kmfddm:key@ddm.example:9002/v1/x", 401)) })
        }
        fn give<'a>(
            &'a self,
            _: &'a str,
            _: &'a [u8],
            _: &'a str,
        ) -> BoxFuture<'a, Result<Enqueued, BackendError>> {
            Box::pin(async { Err(refused("http://ddm.example:9002", 500)) })
        }
        fn status_reports<'a>(
            &'a self,
            _: &'a str,
            _: Option<&'a str>,
        ) -> BoxFuture<'a, Result<Vec<RawStatusReport>, BackendError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    #[tokio::test]
    async fn a_refused_ddm_key_names_its_own_setting() {
        for (kind, setting) in [("kmfddm", DDM_KEY_SETTING), ("embedded", MDM_KEY_SETTING)] {
            let watch = AccessWatch::new();
            let d = WatchedDdm::new(Box::new(RefusingDdm(kind)), watch.clone());
            assert!(d.give("A", b"{}", "x").await.is_err());
            assert_eq!(watch.refusal(), None, "a 500 is no refused key");
            assert!(d.enrollment("A").await.is_err());
            let m = watch.refusal().expect("kept").to_string();
            assert!(
                m.contains("the MDM at http://ddm.example:9002 refused"),
                "{m}"
            );
            assert!(m.contains(&format!("check {setting}")), "{m}");
            assert!(!m.contains("key@"), "{m}");
        }
    }

    #[tokio::test]
    async fn a_watched_backend_keeps_the_first_refusal_and_passes_every_answer_on() {
        use crate::mdm::memory::{EnqueueFault, MemoryMdm};
        let mdm = MemoryMdm::with_records();
        let watch = AccessWatch::new();
        let b = Watched::new(Box::new(mdm.clone()), watch.clone());
        b.enqueue("A", &Command::OSUpdateStatus, "U1")
            .await
            .unwrap();
        assert_eq!(watch.refusal(), None);
        mdm.fail_next_enqueue(EnqueueFault::Refused(500));
        assert!(
            b.enqueue("A", &Command::OSUpdateStatus, "U2")
                .await
                .is_err()
        );
        assert_eq!(watch.refusal(), None, "a 500 is no refused key");
        mdm.fail_next_enqueue(EnqueueFault::Refused(403));
        mdm.fail_next_enqueue(EnqueueFault::Refused(401));
        assert!(matches!(
            b.enqueue("A", &Command::OSUpdateStatus, "U3").await,
            Err(BackendError::Refused { status: 403, .. })
        ));
        assert!(
            b.enqueue("A", &Command::OSUpdateStatus, "U4")
                .await
                .is_err()
        );
        match watch.wait(Duration::from_millis(1)).await {
            Some(MdmRefusal::ApiKey { status: 403, .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
