//! Stopping when the MDM refuses `lab` (issue 17 "Fail loudly", issue 14 "Interop"): its API
//! refusing the key (401/403, from any backend, at any call) or the webhook listener refusing
//! its webhooks for their HMAC signature (`mdm::access`). Either means no answer can reach the
//! trial, so going on would only end in "no answer" for every device.
//!
//! Where the stop lands:
//! - in the baseline (`qualify`, and `run` before any dose) the step is abandoned at once: it
//!   only asks questions, so nothing is left half done, and a rerun does the baseline again;
//! - in a dose batch, only at its edges: before any intent, or after every intent's answer is
//!   journaled (a refused enqueue is the dose path's own `dose_failed`: never queued);
//! - in an MDM query with retries, at the first refused attempt (retrying cannot help): an
//!   intent whose enqueue failed and whose records could not be read is then left as a killed
//!   run leaves it, for the resume to settle from the MDM's records (`resume.rs`), never sent
//!   twice;
//! - in the follow-up, after a round is journaled.
//!
//! The stop is journaled (a run-level `mdm_refused` observation) and returned as
//! [`RunError::MdmRefused`]; a rerun with the setting fixed resumes.

use super::*;
use crate::mdm::access::{AccessWatch, MdmRefusal};
use crate::mdm::webhook_receiver::Inbox;

/// The observation kind of a stop on a refusing MDM.
pub const MDM_REFUSED: &str = "mdm_refused";

impl Runner<'_> {
    /// The refusal the lab's MDM has shown so far, if any.
    fn mdm_refusal(&self) -> Option<MdmRefusal> {
        refusal(&self.lab.access, self.lab.inbox.as_deref())
    }

    /// Stop here if the MDM refuses `lab`: journaled, then [`RunError::MdmRefused`].
    pub(super) fn check_mdm_access(&mut self) -> Result<(), RunError> {
        let Some(r) = self.mdm_refusal() else {
            return Ok(());
        };
        self.log(Event::Observation {
            udid: None,
            source: ObservationSource::Harness,
            kind: MDM_REFUSED.into(),
            key: r.key().into(),
            value: r.to_string(),
        })?;
        Err(RunError::MdmRefused(r))
    }

    /// The baseline, abandoned as soon as the MDM refuses `lab` (it only asks: DeviceInformation,
    /// SecurityInfo, AvailableOSUpdates), instead of waiting out every device's answers.
    pub(super) async fn baseline_unless_refused(&mut self) -> Result<(), RunError> {
        let access = self.lab.access.clone();
        let inbox = self.lab.inbox.clone();
        tokio::select! {
            r = self.baseline() => r?,
            _ = refused(access, inbox) => {}
        }
        self.check_mdm_access()
    }
}

fn refusal(access: &AccessWatch, inbox: Option<&Inbox>) -> Option<MdmRefusal> {
    access
        .refusal()
        .or_else(|| inbox.and_then(Inbox::signature_refusal))
}

/// Resolves once the MDM has refused `lab`.
async fn refused(access: Arc<AccessWatch>, inbox: Option<Arc<Inbox>>) {
    loop {
        if refusal(&access, inbox.as_deref()).is_some() {
            return;
        }
        // The watch wakes this at once; a refused webhook is seen within 100 ms.
        access.wait(Duration::from_millis(100)).await;
    }
}
