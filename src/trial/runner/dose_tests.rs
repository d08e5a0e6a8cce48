//! The dose step against an MDM in memory (`mdm::memory`): the "never a second dose" promise,
//! one guard at a time — a dose goes out once; an intent whose CommandUUID the MDM's records
//! hold is recorded as enqueued, not re-sent; a ledger entry of another run withholds the dose;
//! a timeout the MDM's records cannot settle leaves the dose uncertain, never re-sent.

use super::*;
use crate::mdm::memory::{EnqueueFault, MemoryMdm};

const PROTOCOL: &str = r#"id: dose-unit
title: "dose step unit test"
hypothesis: A dose goes out once.
lab:
  usbmuxd: ["127.0.0.1:9"]
  mdm: { kind: embedded, url: "http://127.0.0.1:9", api_key_env: LAB_MDM_API_KEY }
  mdm_api: { attempts: 2, backoff: 1ms }
eligibility: {}
target: latest
arms:
  - name: one
    install_action: Default
allocation_seed: 1
follow_up:
  poll_interval: 30s
  max_duration: 1h
  until: updated
"#;

/// A run folder with the protocol, and a runner over it and `mdm` (built per test: the
/// runner borrows them).
struct Bench {
    dir: PathBuf,
    p: LoadedProtocol,
    opts: RunOptions,
}

impl Bench {
    fn new() -> Bench {
        let dir =
            std::env::temp_dir().join(format!("lab-dose-test-{}", crate::tls::random_secret()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("protocol.yaml");
        std::fs::write(&path, PROTOCOL).unwrap();
        let p = crate::trial::protocol::load(&path).unwrap();
        let opts = RunOptions {
            yes: true,
            results_dir: dir.clone(),
            ledger: dir.join("ledger.jsonl"),
            interactive: false,
            pauses: TestPauses::default(),
            reports_written: |_| true,
            progress: Default::default(),
        };
        Bench { dir, p, opts }
    }

    fn runner(&self, mdm: &MemoryMdm) -> Runner<'_> {
        let (journal, loaded) = Journal::open(&self.dir.join("journal.jsonl")).unwrap();
        Runner {
            p: &self.p,
            journal,
            ledger: Ledger::new(&self.opts.ledger),
            state: Fold::of(&loaded.entries),
            lab: Lab::from(LabConnection {
                addrs: Vec::new(),
                backend: Box::new(mdm.clone()),
                time_scale: 1.0,
                simulated: true,
                webhook: None,
                enrolled_check: None,
                ddm: None,
            }),
            progress: Progress::quiet(),
            run_dir: self.dir.clone(),
            opts: &self.opts,
            asked_after_download: HashSet::new(),
            clock_readings: HashMap::new(),
            network_at_reprobe: HashMap::new(),
            interrupted: Arc::new(Interrupt::default()),
            feeds: None,
            stop_dirty: true,
            stop_triggered: false,
        }
    }

    fn events(&self) -> Vec<Event> {
        crate::journal::read(&self.dir.join("journal.jsonl"))
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.event)
            .collect()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Device `A` at build 21F90, eligible for 17.6.1 and allocated to arm `one`.
fn allocate_a(r: &mut Runner<'_>) {
    allocate(r, "A");
}

/// Device `udid` at build 21F90, eligible for 17.6.1 and allocated to arm `one`.
fn allocate(r: &mut Runner<'_>, udid: &str) {
    r.log_all(vec![
        Event::DeviceDiscovered {
            udid: udid.into(),
            host: "h".into(),
            device_id: 1,
        },
        Event::BaselineRecorded {
            udid: udid.into(),
            probe: serde_json::json!({"baseline": {
                "product_version": {"value": "17.5.1"},
                "build_version": {"value": "21F90"},
            }}),
        },
        Event::EligibilityAssessed {
            udid: udid.into(),
            eligible: true,
            reasons: vec![],
            target: serde_json::json!({"version": "17.6.1", "build": "21G93", "product_key": "iOSUpdate21G93"}),
        },
        Event::Allocated {
            udid: udid.into(),
            arm: "one".into(),
            seed: 1,
        },
    ])
    .unwrap();
}

fn count(events: &[Event], f: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}

fn step1() -> Vec<(String, u32, InstallAction)> {
    vec![("A".into(), 1, InstallAction::Default)]
}

#[tokio::test]
async fn a_dose_is_sent_once() {
    let b = Bench::new();
    let mdm = MemoryMdm::with_records();
    let mut r = b.runner(&mdm);
    allocate_a(&mut r);
    r.dose_many(step1()).await.unwrap();
    r.dose_many(step1()).await.unwrap();
    r.first_doses().await.unwrap();
    drop(r);
    // A resumed runner (the journal folded afresh) does not send it again either.
    let mut again = b.runner(&mdm);
    again.first_doses().await.unwrap();
    let sent = mdm.queued_commands();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].request_type, "ScheduleOSUpdate");
    let ev = b.events();
    assert_eq!(count(&ev, |e| matches!(e, Event::DoseIntent { .. })), 1);
    // The intent is in the journal before the command reached the MDM, with its CommandUUID.
    let Some(Event::DoseIntent { command_uuid, .. }) =
        ev.iter().find(|e| matches!(e, Event::DoseIntent { .. }))
    else {
        unreachable!()
    };
    assert_eq!(command_uuid, &sent[0].command_uuid);
    assert_eq!(count(&ev, |e| matches!(e, Event::DoseEnqueued { .. })), 1);
    assert_eq!(
        again.state.devices["A"].phase,
        crate::journal::fold::Phase::Enqueued
    );
}

#[tokio::test]
async fn an_intent_the_mdm_records_hold_is_recorded_enqueued_not_re_sent() {
    let b = Bench::new();
    let mdm = MemoryMdm::with_records();
    let mut r = b.runner(&mdm);
    allocate_a(&mut r);
    // A run killed between its intent and the enqueue's answer: the command reached the MDM.
    let store = mdm.store_identity().await.unwrap();
    r.log(Event::DoseIntent {
        udid: "A".into(),
        arm: "one".into(),
        step: 1,
        command_uuid: "lab-dose-U1".into(),
        request_type: "ScheduleOSUpdate".into(),
        install_action: Some(InstallAction::Default),
        starting_build: "21F90".into(),
        command_b64: String::new(),
        mdm_store: store,
    })
    .unwrap();
    mdm.hold("A", "lab-dose-U1", "ScheduleOSUpdate");
    drop(r);
    let mut r = b.runner(&mdm);
    r.resolve_unanswered_intents().await.unwrap();
    r.first_doses().await.unwrap();
    assert!(mdm.enqueue_calls().is_empty(), "{:?}", mdm.enqueue_calls());
    let ev = b.events();
    assert!(ev.iter().any(|e| matches!(e,
        Event::DoseEnqueued { command_uuid, push_error: Some(why), .. }
            if command_uuid == "lab-dose-U1" && why.contains("recovered after a crash"))));
    assert_eq!(count(&ev, |e| matches!(e, Event::DoseIntent { .. })), 1);
}

#[tokio::test]
async fn a_ledger_entry_of_another_run_withholds_the_dose() {
    let b = Bench::new();
    let mdm = MemoryMdm::with_records();
    let mut r = b.runner(&mdm);
    allocate_a(&mut r);
    r.ledger
        .append(&LedgerRecord {
            udid: "A".into(),
            starting_build: "21F90".into(),
            // Another run's durable intent at the device's build (the ledger's dose evidence).
            kind: LedgerKind::Intent,
            command_uuid: "lab-dose-OTHER".into(),
            step: 1,
            trial_id: "another-trial".into(),
            protocol_sha256: "0".repeat(64),
            run_dir: "/elsewhere/another-run".into(),
            at: chrono::Utc::now().to_rfc3339(),
        })
        .unwrap();
    r.first_doses().await.unwrap();
    r.first_doses().await.unwrap();
    assert!(mdm.enqueue_calls().is_empty());
    let ev = b.events();
    assert_eq!(count(&ev, |e| matches!(e, Event::DoseWithheld { .. })), 1);
    assert_eq!(count(&ev, |e| matches!(e, Event::DoseIntent { .. })), 0);
    assert_eq!(
        r.state.devices["A"].phase,
        crate::journal::fold::Phase::Withheld
    );
}

#[tokio::test]
async fn a_timeout_the_records_cannot_settle_leaves_the_dose_uncertain_never_re_sent() {
    // An MDM without records (NanoMDM, MicroMDM): nothing can tell whether it was queued.
    let b = Bench::new();
    let mdm = MemoryMdm::without_records();
    mdm.fail_next_enqueue(EnqueueFault::Timeout);
    let mut r = b.runner(&mdm);
    allocate_a(&mut r);
    r.first_doses().await.unwrap();
    r.first_doses().await.unwrap();
    r.resolve_unanswered_intents().await.unwrap();
    assert_eq!(mdm.enqueue_calls().len(), 1);
    let ev = b.events();
    assert_eq!(count(&ev, |e| matches!(e, Event::DoseUncertain { .. })), 1);
    assert_eq!(count(&ev, |e| matches!(e, Event::DoseEnqueued { .. })), 0);
    assert_eq!(
        r.state.devices["A"].phase,
        crate::journal::fold::Phase::Uncertain
    );

    // An MDM with records that restarted with an empty store during the call: "absent from
    // the records" proves nothing about the store the intent was made against.
    let b = Bench::new();
    let mdm = MemoryMdm::with_records();
    mdm.fail_next_enqueue(EnqueueFault::LoseStore);
    let mut r = b.runner(&mdm);
    allocate_a(&mut r);
    r.first_doses().await.unwrap();
    assert_eq!(mdm.enqueue_calls().len(), 1);
    assert!(mdm.queued_commands().is_empty());
    let ev = b.events();
    assert!(ev.iter().any(|e| matches!(e,
        Event::DoseUncertain { reason, .. } if reason.contains("not re-sent"))));

    // A timeout after the MDM queued it: its records say so, and it is not sent again.
    let b = Bench::new();
    let mdm = MemoryMdm::with_records();
    mdm.fail_next_enqueue(EnqueueFault::TimeoutAfterQueueing);
    let mut r = b.runner(&mdm);
    allocate_a(&mut r);
    r.first_doses().await.unwrap();
    assert_eq!(mdm.enqueue_calls().len(), 1);
    assert_eq!(mdm.queued_commands().len(), 1);
    assert_eq!(
        count(&b.events(), |e| matches!(e, Event::DoseEnqueued { .. })),
        1
    );
}

/// Issue 17: a 401 on the dose's enqueue stops the run once the batch's answers are journaled
/// (the refused enqueue is `dose_failed`: never queued), with the stop journaled; a rerun
/// never sends that step again.
#[tokio::test]
async fn a_refused_api_key_stops_the_run_after_the_batch_is_journaled_never_a_second_dose() {
    let b = Bench::new();
    let mdm = MemoryMdm::with_records();
    let mut r = b.runner(&mdm);
    allocate_a(&mut r);
    mdm.fail_next_enqueue(EnqueueFault::Refused(401));
    let e = r.dose_many(step1()).await.unwrap_err();
    let RunError::MdmRefused(refusal) = &e else {
        panic!("{e:?}")
    };
    let m = refusal.to_string();
    assert!(
        m.contains("HTTP 401") && m.contains("lab.mdm.api_key_env"),
        "{m}"
    );
    drop(r);
    let ev = b.events();
    let failed = ev
        .iter()
        .position(|e| matches!(e, Event::DoseFailed { .. }));
    let stop = ev.iter().position(|e| {
        matches!(e, Event::Observation { kind, key, .. }
            if kind == super::refused::MDM_REFUSED && key == "api_key")
    });
    assert!(failed.is_some() && stop > failed, "{ev:#?}");
    // The rerun (the key fixed): the step has its intent, nothing is sent again.
    let mut again = b.runner(&mdm);
    again.first_doses().await.unwrap();
    assert_eq!(mdm.enqueue_calls().len(), 1, "{:?}", mdm.enqueue_calls());
    assert!(mdm.queued_commands().is_empty());
}

/// A refusal already seen (here by the baseline) stops a dose batch before any intent.
#[tokio::test]
async fn a_refusal_seen_before_a_dose_batch_stops_it_before_any_intent() {
    let b = Bench::new();
    let mdm = MemoryMdm::with_records();
    let mut r = b.runner(&mdm);
    allocate_a(&mut r);
    mdm.fail_next_enqueue(EnqueueFault::Refused(403));
    let _ = r
        .lab
        .backend
        .enqueue("A", &Command::DeviceInformation { queries: vec![] }, "q1")
        .await;
    assert!(matches!(
        r.dose_many(step1()).await,
        Err(RunError::MdmRefused(_))
    ));
    drop(r);
    let ev = b.events();
    assert_eq!(count(&ev, |e| matches!(e, Event::DoseIntent { .. })), 0);
    assert_eq!(mdm.enqueue_calls().len(), 1, "only the query");
}

/// Issue 17: on an MDM with no history `lab` can read (and no webhook retries), the final sweep
/// journals each dose whose answer never came, and its device is judged lost to follow-up,
/// never "no response"; with a history, nothing is journaled and it stays `no_response`.
#[tokio::test]
async fn a_dose_whose_answer_never_came_is_lost_to_follow_up_without_a_history() {
    for (mdm, lost) in [
        (MemoryMdm::without_records(), true),
        (MemoryMdm::with_records(), false),
    ] {
        let b = Bench::new();
        let mut r = b.runner(&mdm);
        allocate_a(&mut r);
        r.dose_many(step1()).await.unwrap();
        r.final_sweep().await.unwrap();
        drop(r);
        let entries = crate::journal::read(&b.dir.join("journal.jsonl"))
            .unwrap()
            .entries;
        let noted = entries.iter().any(|e| {
            matches!(&e.event, Event::Observation { kind, .. }
                if kind == crate::verdicts::outcome::ANSWER_LOST)
        });
        assert_eq!(noted, lost);
        let o = &crate::verdicts::outcome::judge(&entries)[0];
        let want = if lost {
            crate::verdicts::outcome::Outcome::LostToFollowUp
        } else {
            crate::verdicts::outcome::Outcome::NoResponse
        };
        assert_eq!(o.outcome, want, "{o:?}");
    }
}

/// A follow-up poll of two devices.
fn ab() -> Vec<String> {
    vec!["A".to_string(), "B".to_string()]
}

async fn dosed_ab<'a>(b: &'a Bench, mdm: &MemoryMdm) -> Runner<'a> {
    let mut r = b.runner(mdm);
    allocate(&mut r, "A");
    allocate(&mut r, "B");
    r.dose_many(vec![
        ("A".into(), 1, InstallAction::Default),
        ("B".into(), 1, InstallAction::Default),
    ])
    .await
    .unwrap();
    r
}

/// A round's MDM answers come in one call for every device where the MDM allows; when that
/// call fails, each device gets its `mdm_api_error` observation, journaled before anything
/// acts on the round, and the round goes on (status queries sent).
#[tokio::test]
async fn a_failed_bulk_results_call_is_an_observation_for_every_device() {
    let b = Bench::new();
    let mdm = MemoryMdm::with_records();
    let mut r = dosed_ab(&b, &mdm).await;
    mdm.fail_results_many();
    r.poll_devices(&ab(), &[], Duration::from_secs(3600))
        .await
        .unwrap();
    drop(r);
    let ev = b.events();
    for u in ["A", "B"] {
        let errors = count(&ev, |e| {
            matches!(e, Event::Observation { udid: Some(x), kind, key, .. }
                if x == u && kind == "mdm_api_error" && key == "results")
        });
        assert_eq!(errors, 1, "{u}");
        let asked = count(
            &ev,
            |e| matches!(e, Event::CommandSent { udid, .. } if udid == u),
        );
        assert_eq!(asked, 1, "{u}");
    }
}

/// On an MDM that queues in bulk, a round's status queries share one CommandUUID, yet each
/// device's query is its own: an answer from one device settles that device's query only (the
/// other is still outstanding and not asked again), and doses stay one per device.
#[tokio::test]
async fn a_shared_status_query_is_settled_per_device() {
    let b = Bench::new();
    let mdm = MemoryMdm::with_records();
    mdm.enqueue_in_bulk();
    let mut r = dosed_ab(&b, &mdm).await;
    let doses = mdm.queued_commands().len();
    assert_eq!(doses, 2);
    let max = Duration::from_secs(3600);
    r.poll_devices(&ab(), &[], max).await.unwrap();
    let sent: Vec<(String, String)> = b
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::CommandSent {
                udid, command_uuid, ..
            } => Some((udid, command_uuid)),
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].1, sent[1].1, "one CommandUUID for the round");
    let uuid = sent[0].1.clone();
    let raw = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><plist version=\"1.0\"><dict>\
         <key>CommandUUID</key><string>{uuid}</string><key>Status</key><string>Acknowledged</string>\
         <key>UDID</key><string>A</string><key>OSUpdateStatus</key><array/></dict></plist>"
    );
    mdm.answer(
        "A",
        crate::mdm::backend::CommandResult {
            command_uuid: uuid.clone(),
            request_type: Some("OSUpdateStatus".into()),
            status: "Acknowledged".into(),
            raw: raw.into_bytes().into(),
            received_at: "2025-01-01T00:00:00Z".into(),
        },
    );
    assert_eq!(
        r.state.devices["A"].outstanding.as_deref(),
        Some(uuid.as_str())
    );
    r.poll_devices(&ab(), &[], max).await.unwrap();
    assert_ne!(
        r.state.devices["A"].outstanding.as_deref(),
        Some(uuid.as_str())
    );
    assert_eq!(
        r.state.devices["B"].outstanding.as_deref(),
        Some(uuid.as_str())
    );
    drop(r);
    let ev = b.events();
    let asked = |u: &str| {
        count(
            &ev,
            |e| matches!(e, Event::CommandSent { udid, .. } if udid == u),
        )
    };
    assert_eq!((asked("A"), asked("B")), (2, 1));
    let results = |u: &str| {
        count(
            &ev,
            |e| matches!(e, Event::MdmResult { udid, .. } if udid == u),
        )
    };
    assert_eq!((results("A"), results("B")), (1, 0));
    assert_eq!(count(&ev, |e| matches!(e, Event::DoseIntent { .. })), 2);
}
