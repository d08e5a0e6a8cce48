//! Asking the MDM with bounded retries: the one retry loop of the runner's MDM queries (store
//! identity, the records of one command, a device's dose records). Each failed ask is journaled
//! as an `mdm_api_error` observation; between attempts the runner waits the protocol's backoff,
//! doubled each time (`lab.mdm_api`: attempts, the first included, and the first backoff).
//!
//! The enqueue of a dose has its own loop (`dose::send_dose`): what it does after a failure
//! depends on what the MDM's records say, not only on whether the call failed.

use super::*;
use crate::mdm::backend::{BackendError, BoxFuture};

impl Runner<'_> {
    /// Ask the MDM with bounded retries: `first` is the first attempt's answer when the caller
    /// already made it (a concurrent first round), else `call` makes it. Every failed attempt is
    /// an observation keyed `{what} (attempt N of M)` (for `udid`, or the lab). `None`: no
    /// attempt succeeded.
    pub(super) async fn with_retries<'f, T>(
        &mut self,
        udid: Option<&str>,
        what: &str,
        mut first: Option<Result<T, BackendError>>,
        call: impl Fn() -> BoxFuture<'f, Result<T, BackendError>>,
    ) -> Result<Option<T>, RunError> {
        let api = self.p.protocol.lab.mdm_api.clone();
        let mut wait = api.backoff.0;
        for attempt in 1..=api.attempts {
            let answer = match first.take() {
                Some(a) => a,
                None => call().await,
            };
            match answer {
                Ok(v) => return Ok(Some(v)),
                Err(e) => {
                    self.log(Event::Observation {
                        udid: udid.map(str::to_string),
                        source: ObservationSource::Harness,
                        kind: "mdm_api_error".into(),
                        key: format!("{what} (attempt {attempt} of {})", api.attempts),
                        value: e.to_string(),
                    })?;
                    // A refused API key: retrying cannot help, the run stops.
                    self.check_mdm_access()?;
                    if attempt < api.attempts {
                        tokio::time::sleep(wait).await;
                        wait = wait.saturating_mul(2);
                    }
                }
            }
        }
        Ok(None)
    }

    /// The MDM's store identity now. `None`: the MDM exposes none (NanoMDM, MicroMDM), or never
    /// answered.
    pub(super) async fn current_store(&mut self) -> Result<Option<StoreIdentity>, RunError> {
        let backend = self.lab.backend.clone();
        let store = self
            .with_retries(None, "store identity", None, || backend.store_identity())
            .await?;
        Ok(store.flatten())
    }

    /// The ScheduleOSUpdates the MDM's own records hold for each device, asked concurrently,
    /// then again one device at a time with bounded retries for those that failed. `None` for a
    /// device: the MDM keeps no such records, or never answered — the ledger and the journal
    /// then decide alone.
    pub(super) async fn mdm_dose_records(
        &mut self,
        udids: &[String],
    ) -> Result<Vec<Option<Vec<MdmDose>>>, RunError> {
        let backend = self.lab.backend.clone();
        let first =
            crate::join::join_all(udids.iter().map(|u| backend.dose_records(u)).collect()).await;
        let mut out = Vec::with_capacity(udids.len());
        for (udid, answer) in udids.iter().zip(first) {
            let records = self
                .with_retries(Some(udid), "dose records", Some(answer), || {
                    backend.dose_records(udid)
                })
                .await?;
            out.push(records.flatten());
        }
        Ok(out)
    }

    /// The MDM's records on one command: `Some(true)` queued, `Some(false)` proven not queued,
    /// `None` the MDM keeps no such records, or never answered.
    pub(super) async fn ask_records(
        &mut self,
        udid: &str,
        uuid: &str,
        declaration: bool,
    ) -> Result<Option<bool>, RunError> {
        if declaration {
            // A DDM dose's record: the declarations the enrollment holds (`ddm_doses`).
            let Some(ddm) = self.lab.ddm.clone() else {
                return Ok(None);
            };
            let known = self
                .with_retries(Some(udid), &format!("declarations of {udid}"), None, || {
                    ddm.enrollment(udid)
                })
                .await?;
            return Ok(known.map(|e| e.declarations.iter().any(|d| d == uuid)));
        }
        let backend = self.lab.backend.clone();
        let known = self
            .with_retries(Some(udid), &format!("records of {uuid}"), None, || {
                backend.queued(udid, uuid)
            })
            .await?;
        Ok(known.flatten())
    }
}
