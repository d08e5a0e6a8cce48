//! Asking the MDM with bounded retries: each failed ask an observation.

use super::*;
impl Runner<'_> {
    /// The MDM's store identity now (bounded retries, failed asks are observations). `None`:
    /// the MDM exposes none (NanoMDM, MicroMDM), or never answered.
    pub(super) async fn current_store(&mut self) -> Result<Option<StoreIdentity>, RunError> {
        let api = self.p.protocol.lab.mdm_api.clone();
        let mut wait = api.backoff.0;
        for attempt in 1..=api.attempts {
            match self.lab.backend.store_identity().await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    self.log(Event::Observation {
                        udid: None,
                        source: ObservationSource::Harness,
                        kind: "mdm_api_error".into(),
                        key: format!("store identity (attempt {attempt} of {})", api.attempts),
                        value: e.to_string(),
                    })?;
                    if attempt < api.attempts {
                        tokio::time::sleep(wait).await;
                        wait = wait.saturating_mul(2);
                    }
                }
            }
        }
        Ok(None)
    }

    /// The ScheduleOSUpdates the MDM's own records hold for each device, asked concurrently,
    /// then again one device at a time with bounded retries for those that failed (each failure
    /// an observation). `None` for a device: the MDM keeps no such records, or never answered —
    /// the ledger and the journal then decide alone.
    pub(super) async fn mdm_dose_records(
        &mut self,
        udids: &[String],
    ) -> Result<Vec<Option<Vec<MdmDose>>>, RunError> {
        let first = {
            let backend = self.lab.backend.as_ref();
            crate::join::join_all(
                udids
                    .iter()
                    .map(|u| async move { backend.dose_records(u).await })
                    .collect(),
            )
            .await
        };
        let api = self.p.protocol.lab.mdm_api.clone();
        let mut out = Vec::with_capacity(udids.len());
        for (udid, answer) in udids.iter().zip(first) {
            let mut answer = answer;
            let mut wait = api.backoff.0;
            let mut attempt = 1;
            let records = loop {
                match answer {
                    Ok(r) => break r,
                    Err(e) => {
                        self.log(Event::Observation {
                            udid: Some(udid.clone()),
                            source: ObservationSource::Harness,
                            kind: "mdm_api_error".into(),
                            key: format!("dose records (attempt {attempt} of {})", api.attempts),
                            value: e.to_string(),
                        })?;
                        if attempt >= api.attempts {
                            break None;
                        }
                        tokio::time::sleep(wait).await;
                        wait = wait.saturating_mul(2);
                        attempt += 1;
                        answer = self.lab.backend.dose_records(udid).await;
                    }
                }
            };
            out.push(records);
        }
        Ok(out)
    }

    /// The MDM's records on one command, asked with bounded retries (failed asks are
    /// observations too). `None`: the MDM keeps no such records, or never answered.
    pub(super) async fn ask_records(
        &mut self,
        udid: &str,
        uuid: &str,
    ) -> Result<Option<bool>, RunError> {
        let api = self.p.protocol.lab.mdm_api.clone();
        let mut wait = api.backoff.0;
        for attempt in 1..=api.attempts {
            match self.lab.backend.queued(udid, uuid).await {
                Ok(known) => return Ok(known),
                Err(e) => {
                    self.log(Event::Observation {
                        udid: Some(udid.into()),
                        source: ObservationSource::Harness,
                        kind: "mdm_api_error".into(),
                        key: format!("records of {uuid} (attempt {attempt} of {})", api.attempts),
                        value: e.to_string(),
                    })?;
                    if attempt < api.attempts {
                        tokio::time::sleep(wait).await;
                        wait = wait.saturating_mul(2);
                    }
                }
            }
        }
        Ok(None)
    }
}
