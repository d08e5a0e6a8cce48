//! An MDM in memory, for unit tests of the harness's steps: it records every command enqueued
//! with its CommandUUID, answers from a script, and can be told to fail the way real MDMs fail
//! (a timeout, a timeout after the command was queued, a refusal, a store lost with the MDM's
//! restart). No network, no clock but the wall clock for record times.
//!
//! It behaves like `lab`'s own server where the one-dose rule depends on it: a CommandUUID it
//! already holds is refused with HTTP 409, and — when built [`MemoryMdm::with_records`] — its
//! records answer `queued` and `dose_records` for every command it ever queued, under a store
//! identity. Built [`MemoryMdm::without_records`] it is a webhook-fed NanoMDM or MicroMDM: it
//! keeps no records the harness could ask (`None`).

use super::backend::{
    BackendError, BoxFuture, CommandResult, DeliveryCount, Enqueued, MdmBackend, MdmDose,
    StoreIdentity,
};
use super::command::Command;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The URL the in-memory MDM names in its errors.
const URL: &str = "memory://mdm";

/// A command the MDM queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub udid: String,
    pub command_uuid: String,
    pub request_type: String,
}

/// How the next enqueue call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueFault {
    /// The call times out before the MDM took the command: not queued.
    Timeout,
    /// The call times out after the MDM queued the command (the answer was lost on the way).
    TimeoutAfterQueueing,
    /// The MDM restarts with an empty store while the call is in flight: the call times out,
    /// the command is not queued, and the records start afresh under a new store identity.
    LoseStore,
    /// The MDM refuses the command with this HTTP status: not queued.
    Refused(u16),
    /// No connection could be made: the request never left.
    NotConnected,
}

#[derive(Debug, Default)]
struct Inner {
    keeps_records: bool,
    /// `results_many` fails for every device (a bulk call that failed).
    fail_results_many: bool,
    /// It queues one command for many devices in one call (like `lab`'s own server).
    bulk: bool,
    store: Option<StoreIdentity>,
    /// Stores made so far (numbers the store identities).
    stores: u32,
    /// Every command queued, in order (of the current store).
    queued: Vec<Queued>,
    /// Every enqueue call made, as (udid, CommandUUID), whatever came of it.
    calls: Vec<(String, String)>,
    /// Faults for the next enqueue calls, in order; none left: the call succeeds.
    faults: VecDeque<EnqueueFault>,
    /// Doses the records hold that this MDM did not queue in the test (another run's).
    other_doses: HashMap<String, Vec<MdmDose>>,
    /// Scripted answers per device, oldest first.
    results: HashMap<String, Vec<CommandResult>>,
}

/// An MDM in memory. Clones share the same MDM (hand one to the runner, keep one to look).
#[derive(Debug, Clone, Default)]
pub struct MemoryMdm {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryMdm {
    /// An MDM whose records are complete (like `lab`'s embedded server): `queued` and
    /// `dose_records` answer, under a store identity.
    pub fn with_records() -> MemoryMdm {
        let m = MemoryMdm::default();
        {
            let mut i = m.lock();
            i.keeps_records = true;
            new_store(&mut i);
        }
        m
    }

    /// An MDM that keeps no records the harness could ask (NanoMDM, MicroMDM): `queued` and
    /// `dose_records` are `None`, there is no store identity.
    pub fn without_records() -> MemoryMdm {
        MemoryMdm::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("memory MDM lock")
    }

    /// Fail the next enqueue call (faults queue up, one per call).
    pub fn fail_next_enqueue(&self, fault: EnqueueFault) {
        self.lock().faults.push_back(fault);
    }

    /// From now on `results_many` fails for every device, as a bulk call that failed.
    pub fn fail_results_many(&self) {
        self.lock().fail_results_many = true;
    }

    /// Queue one command for many devices in one call (`enqueue_many`), as `lab`'s server.
    pub fn enqueue_in_bulk(&self) {
        self.lock().bulk = true;
    }

    /// Hold `command_uuid` as queued for `udid` (a command that reached the MDM before the
    /// harness could journal the answer).
    pub fn hold(&self, udid: &str, command_uuid: &str, request_type: &str) {
        self.lock().queued.push(Queued {
            udid: udid.into(),
            command_uuid: command_uuid.into(),
            request_type: request_type.into(),
        });
    }

    /// A dose another run sent the device, as the records hold it.
    pub fn record_other_dose(&self, udid: &str, dose: MdmDose) {
        self.lock()
            .other_doses
            .entry(udid.into())
            .or_default()
            .push(dose);
    }

    /// An answer the device sent, returned by `results` from now on.
    pub fn answer(&self, udid: &str, result: CommandResult) {
        self.lock()
            .results
            .entry(udid.into())
            .or_default()
            .push(result);
    }

    /// The MDM restarts with an empty store: every record is gone, the store identity is new.
    pub fn lose_store(&self) {
        new_store(&mut self.lock());
    }

    /// Every command queued (in the current store), in order.
    pub fn queued_commands(&self) -> Vec<Queued> {
        self.lock().queued.clone()
    }

    /// Every enqueue call made as (udid, CommandUUID), in order, whatever came of it.
    pub fn enqueue_calls(&self) -> Vec<(String, String)> {
        self.lock().calls.clone()
    }
}

fn new_store(i: &mut Inner) {
    i.stores += 1;
    i.queued.clear();
    i.other_doses.clear();
    if i.keeps_records {
        i.store = Some(StoreIdentity {
            store_id: format!("memory-store-{}", i.stores),
            created_at: chrono::Utc::now().to_rfc3339(),
        });
    }
}

fn timeout() -> BackendError {
    BackendError::Timeout {
        url: URL.into(),
        after: Duration::from_secs(30),
    }
}

impl MdmBackend for MemoryMdm {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn enqueue<'a>(
        &'a self,
        udid: &'a str,
        command: &'a Command,
        command_uuid: &'a str,
    ) -> BoxFuture<'a, Result<Enqueued, BackendError>> {
        let answer = {
            let mut i = self.lock();
            i.calls.push((udid.into(), command_uuid.into()));
            let queued = Queued {
                udid: udid.into(),
                command_uuid: command_uuid.into(),
                request_type: command.request_type().into(),
            };
            match i.faults.pop_front() {
                Some(EnqueueFault::Timeout) => Err(timeout()),
                Some(EnqueueFault::TimeoutAfterQueueing) => {
                    i.queued.push(queued);
                    Err(timeout())
                }
                Some(EnqueueFault::LoseStore) => {
                    new_store(&mut i);
                    Err(timeout())
                }
                Some(EnqueueFault::Refused(status)) => Err(BackendError::Refused {
                    url: URL.into(),
                    status,
                    message: "refused by the script".into(),
                }),
                Some(EnqueueFault::NotConnected) => Err(BackendError::NotConnected {
                    url: URL.into(),
                    reason: "connection refused by the script".into(),
                }),
                // Like `lab`'s server: a CommandUUID it already holds is refused.
                None if i.queued.iter().any(|q| q.command_uuid == command_uuid) => {
                    Err(BackendError::Refused {
                        url: URL.into(),
                        status: 409,
                        message: format!("CommandUUID {command_uuid} is already queued"),
                    })
                }
                None => {
                    i.queued.push(queued);
                    Ok(Enqueued {
                        command_uuid: command_uuid.into(),
                        pushed: Some(true),
                        push_error: None,
                    })
                }
            }
        };
        Box::pin(async move { answer })
    }

    fn results<'a>(
        &'a self,
        udid: &'a str,
    ) -> BoxFuture<'a, Result<Vec<CommandResult>, BackendError>> {
        let r = self.lock().results.get(udid).cloned().unwrap_or_default();
        Box::pin(async move { Ok(r) })
    }

    fn results_many<'a>(
        &'a self,
        udids: &'a [String],
    ) -> BoxFuture<'a, Vec<Result<Vec<CommandResult>, BackendError>>> {
        if self.lock().fail_results_many {
            let all = udids.iter().map(|_| Err(timeout())).collect();
            return Box::pin(async move { all });
        }
        Box::pin(super::backend::results_each(self, udids))
    }

    fn enqueues_in_bulk(&self) -> bool {
        self.lock().bulk
    }

    fn enqueue_many<'a>(
        &'a self,
        udids: &'a [String],
        command: &'a Command,
        command_uuid: &'a str,
    ) -> BoxFuture<'a, Vec<Result<Enqueued, BackendError>>> {
        if !self.lock().bulk {
            return Box::pin(super::backend::enqueue_each(
                self,
                udids,
                command,
                command_uuid,
            ));
        }
        let mut i = self.lock();
        let answers = udids
            .iter()
            .map(|udid| {
                i.calls.push((udid.clone(), command_uuid.into()));
                i.queued.push(Queued {
                    udid: udid.clone(),
                    command_uuid: command_uuid.into(),
                    request_type: command.request_type().into(),
                });
                Ok(Enqueued {
                    command_uuid: command_uuid.into(),
                    pushed: Some(true),
                    push_error: None,
                })
            })
            .collect();
        Box::pin(async move { answers })
    }

    /// Its answers are kept as long as its records are: without records it stands for a
    /// webhook-fed NanoMDM or MicroMDM.
    fn keeps_history(&self) -> Option<bool> {
        Some(self.lock().keeps_records)
    }

    fn delivery_counts<'a>(
        &'a self,
        _udid: &'a str,
    ) -> BoxFuture<'a, Result<HashMap<String, DeliveryCount>, BackendError>> {
        Box::pin(async { Ok(HashMap::new()) })
    }

    fn queued<'a>(
        &'a self,
        udid: &'a str,
        command_uuid: &'a str,
    ) -> BoxFuture<'a, Result<Option<bool>, BackendError>> {
        let i = self.lock();
        let known = i.keeps_records.then(|| {
            i.queued
                .iter()
                .any(|q| q.udid == udid && q.command_uuid == command_uuid)
        });
        Box::pin(async move { Ok(known) })
    }

    fn store_identity(&self) -> BoxFuture<'_, Result<Option<StoreIdentity>, BackendError>> {
        let s = self.lock().store.clone();
        Box::pin(async move { Ok(s) })
    }

    fn dose_records<'a>(
        &'a self,
        udid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<MdmDose>>, BackendError>> {
        let i = self.lock();
        let doses = i.keeps_records.then(|| {
            let mut d: Vec<MdmDose> = i.other_doses.get(udid).cloned().unwrap_or_default();
            d.extend(
                i.queued
                    .iter()
                    .filter(|q| q.udid == udid && q.request_type == "ScheduleOSUpdate")
                    .map(|q| MdmDose {
                        command_uuid: q.command_uuid.clone(),
                        queued_at: i
                            .store
                            .as_ref()
                            .map(|s| s.created_at.clone())
                            .unwrap_or_default(),
                        build_before: None,
                    }),
            );
            d
        });
        Box::pin(async move { Ok(doses) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<T>(f: BoxFuture<'_, T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn it_records_refuses_a_known_uuid_and_fails_as_scripted() {
        let m = MemoryMdm::with_records();
        let c = Command::OSUpdateStatus;
        assert!(block(m.enqueue("A", &c, "U1")).is_ok());
        // The same CommandUUID again: refused like `lab`'s server (409).
        assert!(matches!(
            block(m.enqueue("A", &c, "U1")),
            Err(BackendError::Refused { status: 409, .. })
        ));
        m.fail_next_enqueue(EnqueueFault::TimeoutAfterQueueing);
        assert!(matches!(
            block(m.enqueue("A", &c, "U2")),
            Err(BackendError::Timeout { .. })
        ));
        assert_eq!(block(m.queued("A", "U2")).unwrap(), Some(true));
        m.fail_next_enqueue(EnqueueFault::Timeout);
        assert!(block(m.enqueue("A", &c, "U3")).is_err());
        assert_eq!(block(m.queued("A", "U3")).unwrap(), Some(false));
        assert_eq!(m.enqueue_calls().len(), 4);
        let before = block(m.store_identity()).unwrap();
        m.lose_store();
        assert_ne!(block(m.store_identity()).unwrap(), before);
        assert_eq!(block(m.queued("A", "U1")).unwrap(), Some(false));
        let n = MemoryMdm::without_records();
        assert_eq!(block(n.queued("A", "U1")).unwrap(), None);
        assert_eq!(block(n.dose_records("A")).unwrap(), None);
    }
}
