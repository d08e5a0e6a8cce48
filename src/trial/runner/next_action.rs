//! What to do next with one device: a pure function of its facts (the one fold of the journal,
//! `journal::fold::DeviceFacts`, with its [`Phase`]), the protocol (its arm, its follow-up),
//! the moment of the run and the time. The runner asks it at each moment for every device and
//! carries out the answer (journal, ledger, MDM); nothing here does I/O.
//!
//! Two gates are not here, because they are not facts of one device: the protocol's stop rule
//! (`stop_rule`, judged over the whole run before a batch of doses), and the check before the
//! dose under the lab-wide lock (`dose_guard`, against the ledger and the MDM's own records).

use crate::journal::FollowUpEndReason;
use crate::journal::fold::{DeviceFacts, Phase};
use crate::mdm::command::InstallAction;
use crate::trial::protocol::{ArmSpec, StepTrigger, UntilSpec};
use std::time::Duration;

/// The moment of the run a device is looked at.
#[derive(Debug, Clone, Copy)]
pub(super) enum Moment<'a> {
    /// The first dose of the allocated devices (after consent).
    FirstDose { arms: &'a [ArmSpec] },
    /// The start of a follow-up round: follow it, or end it if no dose reached the MDM.
    Round,
    /// A poll's answers are journaled: the arm's second step, once downloaded.
    SecondDose { arms: &'a [ArmSpec] },
    /// The end of a poll: the follow-up's `until`, its time limit, or the next status query.
    EndOfPoll {
        until: &'a UntilSpec,
        /// The build the device's re-probe read in this poll.
        now_build: Option<&'a str>,
        /// Now, for the time limit counted from the first dose the MDM queued.
        now: chrono::DateTime<chrono::Utc>,
        /// The follow-up's time limit, in real time.
        max: Duration,
    },
}

/// What to do with the device now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// Send dose `step` (its intent first, then the check before the dose).
    Dose { step: u32, action: InstallAction },
    /// Poll it this round (answers, re-probe).
    Poll,
    /// Ask its update status (OSUpdateStatus).
    AskStatus,
    /// End its follow-up, for this reason.
    End(FollowUpEndReason),
    /// Nothing now, for this reason.
    Wait(Why),
}

/// Why nothing is done with a device at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Why {
    /// Assessed and not eligible: never dosed.
    Excluded,
    /// Not (yet) given an arm.
    NotAllocated,
    /// This step has an intent already (sent, failed, uncertain or reconciled): a step is never
    /// sent twice.
    StepIntended,
    /// The check before the dose withheld this step (another run dosed the device).
    StepWithheld,
    /// The arm has no second step, or not one sent on download.
    NoSecondStep,
    /// The update is not reported downloaded yet.
    NotDownloaded,
    /// Follow-up has ended.
    Ended,
    /// No dose intent: there is nothing to follow.
    NotDosed,
    /// A status query is still unanswered (the MDM queue is in order: one at a time).
    StatusOutstanding,
    /// A DDM dose: the device reports its status itself.
    StatusReported,
}

/// The next action for device `d` at moment `m`.
pub(super) fn next_action(d: &DeviceFacts, m: Moment<'_>) -> Action {
    match m {
        Moment::FirstDose { arms } => match (&d.arm, d.phase) {
            (None, Phase::Excluded) => Action::Wait(Why::Excluded),
            (None, _) => Action::Wait(Why::NotAllocated),
            (Some(arm), _) => {
                let action = arm_spec(arms, arm)
                    .map(ArmSpec::action)
                    .unwrap_or(InstallAction::Default);
                dose_step(d, 1, action)
            }
        },
        Moment::Round => {
            let enqueued = d.doses.values().any(|x| x.enqueued == Some(true));
            if d.ended() {
                Action::Wait(Why::Ended)
            } else if enqueued {
                Action::Poll
            } else if !d.doses.is_empty() {
                Action::End(FollowUpEndReason::NoDoseReachedMdm)
            } else {
                Action::Wait(Why::NotDosed)
            }
        }
        Moment::SecondDose { arms } => {
            if d.ended() {
                return Action::Wait(Why::Ended);
            }
            let step = d
                .arm
                .as_ref()
                .and_then(|a| arm_spec(arms, a))
                .and_then(|a| a.follow_up_step.as_ref())
                .filter(|s| s.when == StepTrigger::Downloaded);
            match step {
                None => Action::Wait(Why::NoSecondStep),
                Some(_) if !d.downloaded => Action::Wait(Why::NotDownloaded),
                Some(s) => dose_step(d, 2, s.install_action),
            }
        }
        Moment::EndOfPoll {
            until,
            now_build,
            now,
            max,
        } => {
            if d.ended() {
                return Action::Wait(Why::Ended);
            }
            let done = match until {
                UntilSpec::Updated => now_build.is_some_and(|b| {
                    crate::journal::fold::target_builds(&d.target)
                        .iter()
                        .any(|t| t == b)
                }),
                UntilSpec::Downloaded => d.downloaded,
                UntilSpec::Status(s) => d.last_status.as_deref() == Some(s.as_str()),
            };
            if done {
                Action::End(FollowUpEndReason::reached(until))
            } else if elapsed(d, now) > max {
                Action::End(FollowUpEndReason::TimeLimit)
            } else if d.doses.values().any(|x| x.declaration) {
                // A DDM dose's status comes from the device's own reports, not a query (and
                // OSUpdateStatus is removed on iOS 27).
                Action::Wait(Why::StatusReported)
            } else if d.outstanding.is_none() {
                Action::AskStatus
            } else {
                Action::Wait(Why::StatusOutstanding)
            }
        }
    }
}

/// Dose `step`, unless it has an intent already or was withheld.
fn dose_step(d: &DeviceFacts, step: u32, action: InstallAction) -> Action {
    if d.doses.contains_key(&step) {
        Action::Wait(Why::StepIntended)
    } else if d.withheld.contains(&step) {
        Action::Wait(Why::StepWithheld)
    } else {
        Action::Dose { step, action }
    }
}

fn arm_spec<'a>(arms: &'a [ArmSpec], name: &str) -> Option<&'a ArmSpec> {
    arms.iter().find(|a| a.name == name)
}

/// Time since the first dose the MDM queued (zero before it, or if its time does not parse).
fn elapsed(d: &DeviceFacts, now: chrono::DateTime<chrono::Utc>) -> Duration {
    d.first_dose_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            (now - t.with_timezone(&chrono::Utc))
                .to_std()
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::fold::Fold;
    use crate::journal::{Entry, Event};
    use crate::trial::protocol::FollowUpStep;

    const T0: &str = "2026-12-01T10:00:00Z";

    /// The facts of device `A` after `events` (each at [`T0`]).
    fn facts(events: Vec<Event>) -> DeviceFacts {
        let mut all = vec![Event::DeviceDiscovered {
            udid: "A".into(),
            host: "h".into(),
            device_id: 1,
        }];
        all.extend(events);
        let entries: Vec<Entry> = all
            .into_iter()
            .enumerate()
            .map(|(i, event)| Entry {
                seq: i as u64 + 1,
                at: T0.into(),
                event,
            })
            .collect();
        Fold::of(&entries).devices["A"].clone()
    }

    fn baselined() -> Event {
        Event::BaselineRecorded {
            udid: "A".into(),
            probe: serde_json::json!({"baseline": {"build_version": {"value": "21F90"}}}),
        }
    }

    fn assessed(eligible: bool) -> Event {
        Event::EligibilityAssessed {
            udid: "A".into(),
            eligible,
            reasons: vec![],
            target: serde_json::json!({"product_key": "K", "build": "21G93"}),
        }
    }

    fn allocated() -> Event {
        Event::Allocated {
            udid: "A".into(),
            arm: "two-step".into(),
            seed: 1,
        }
    }

    fn intent(step: u32, uuid: &str) -> Event {
        Event::DoseIntent {
            udid: "A".into(),
            arm: "two-step".into(),
            step,
            command_uuid: uuid.into(),
            request_type: "ScheduleOSUpdate".into(),
            install_action: Some(InstallAction::DownloadOnly),
            starting_build: "21F90".into(),
            command_b64: String::new(),
            mdm_store: None,
        }
    }

    fn enqueued(uuid: &str) -> Event {
        Event::DoseEnqueued {
            udid: "A".into(),
            command_uuid: uuid.into(),
            pushed: Some(true),
            push_error: None,
        }
    }

    fn ended() -> Event {
        Event::FollowUpEnded {
            udid: "A".into(),
            reason: FollowUpEndReason::TimeLimit,
        }
    }

    /// An OSUpdateStatus answer for the target update `K`, downloaded or not.
    fn status(downloaded: bool, status: &str) -> Event {
        let mut item = plist::Dictionary::new();
        item.insert("ProductKey".into(), "K".into());
        item.insert("IsDownloaded".into(), downloaded.into());
        item.insert("Status".into(), status.into());
        let mut dict = plist::Dictionary::new();
        dict.insert("UDID".into(), "A".into());
        dict.insert("CommandUUID".into(), "S1".into());
        dict.insert("Status".into(), "Acknowledged".into());
        dict.insert(
            "OSUpdateStatus".into(),
            plist::Value::Array(vec![plist::Value::Dictionary(item)]),
        );
        let mut raw = Vec::new();
        plist::Value::Dictionary(dict)
            .to_writer_xml(&mut raw)
            .unwrap();
        Event::MdmResult {
            udid: "A".into(),
            command_uuid: "S1".into(),
            request_type: Some("OSUpdateStatus".into()),
            status: "Acknowledged".into(),
            raw_b64: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &raw),
            received_at: T0.into(),
        }
    }

    fn arms() -> Vec<ArmSpec> {
        vec![ArmSpec {
            name: "two-step".into(),
            install_action: Some(InstallAction::DownloadOnly),
            ddm_enforcement: None,
            follow_up_step: Some(FollowUpStep {
                install_action: InstallAction::InstallASAP,
                when: StepTrigger::Downloaded,
            }),
            allocation: Default::default(),
            accept_known_bad: false,
        }]
    }

    fn first(d: &DeviceFacts) -> Action {
        next_action(d, Moment::FirstDose { arms: &arms() })
    }

    fn second(d: &DeviceFacts) -> Action {
        next_action(d, Moment::SecondDose { arms: &arms() })
    }

    fn end_of_poll(
        d: &DeviceFacts,
        until: &UntilSpec,
        now_build: Option<&str>,
        after_s: i64,
    ) -> Action {
        let t0 = chrono::DateTime::parse_from_rfc3339(T0)
            .unwrap()
            .with_timezone(&chrono::Utc);
        next_action(
            d,
            Moment::EndOfPoll {
                until,
                now_build,
                now: t0 + chrono::Duration::seconds(after_s),
                max: Duration::from_secs(60),
            },
        )
    }

    #[test]
    fn the_first_dose_goes_only_to_an_allocated_device_without_an_intent() {
        use Action::*;
        // Every phase before allocation: not dosed, with its reason.
        let discovered = facts(vec![]);
        assert_eq!(discovered.phase, Phase::Discovered);
        assert_eq!(first(&discovered), Wait(Why::NotAllocated));
        let b = facts(vec![baselined()]);
        assert_eq!(b.phase, Phase::Baselined);
        assert_eq!(first(&b), Wait(Why::NotAllocated));
        let excluded = facts(vec![baselined(), assessed(false)]);
        assert_eq!(excluded.phase, Phase::Excluded);
        assert_eq!(first(&excluded), Wait(Why::Excluded));
        let eligible = facts(vec![baselined(), assessed(true)]);
        assert_eq!(eligible.phase, Phase::Eligible);
        assert_eq!(first(&eligible), Wait(Why::NotAllocated));
        // Allocated: the arm's action, step 1.
        let a = facts(vec![baselined(), assessed(true), allocated()]);
        assert_eq!(a.phase, Phase::Allocated);
        assert_eq!(
            first(&a),
            Dose {
                step: 1,
                action: InstallAction::DownloadOnly
            }
        );
    }

    #[test]
    fn a_step_with_an_intent_in_any_outcome_is_never_dosed_again() {
        let before = vec![baselined(), assessed(true), allocated(), intent(1, "D1")];
        let with = |extra: Vec<Event>| {
            let mut e = before.clone();
            e.extend(extra);
            facts(e)
        };
        let cases = [
            (with(vec![]), Phase::Intended),
            (with(vec![enqueued("D1")]), Phase::Enqueued),
            (
                with(vec![Event::DoseFailed {
                    udid: "A".into(),
                    command_uuid: "D1".into(),
                    error: "refused".into(),
                }]),
                Phase::Failed,
            ),
            (
                with(vec![Event::DoseUncertain {
                    udid: "A".into(),
                    command_uuid: "D1".into(),
                    reason: "timeout".into(),
                }]),
                Phase::Uncertain,
            ),
            (
                with(vec![
                    enqueued("D1"),
                    Event::CommandSent {
                        udid: "A".into(),
                        command_uuid: "S1".into(),
                        request_type: "OSUpdateStatus".into(),
                    },
                ]),
                Phase::FollowingUp,
            ),
        ];
        for (d, phase) in cases {
            assert_eq!(d.phase, phase);
            assert_eq!(first(&d), Action::Wait(Why::StepIntended), "{phase:?}");
        }
        // An intent only the ledger held, reconciled: a dose of that step too.
        let reconciled = facts(vec![
            baselined(),
            assessed(true),
            allocated(),
            Event::DoseReconciled {
                udid: "A".into(),
                step: 1,
                command_uuid: "D0".into(),
                starting_build: "21F90".into(),
                reason: "ledger".into(),
            },
        ]);
        assert_eq!(reconciled.phase, Phase::Uncertain);
        assert_eq!(first(&reconciled), Action::Wait(Why::StepIntended));
        let withheld = facts(vec![
            baselined(),
            assessed(true),
            allocated(),
            Event::DoseWithheld {
                udid: "A".into(),
                step: 1,
                rule: "already_dosed".into(),
                reason: "another run".into(),
            },
        ]);
        assert_eq!(withheld.phase, Phase::Withheld);
        assert_eq!(first(&withheld), Action::Wait(Why::StepWithheld));
    }

    #[test]
    fn a_round_polls_devices_whose_dose_was_queued_and_ends_those_whose_dose_never_was() {
        let base = vec![baselined(), assessed(true), allocated()];
        let with = |extra: Vec<Event>| {
            let mut e = base.clone();
            e.extend(extra);
            facts(e)
        };
        assert_eq!(
            next_action(&with(vec![]), Moment::Round),
            Action::Wait(Why::NotDosed)
        );
        assert_eq!(
            next_action(&with(vec![intent(1, "D1"), enqueued("D1")]), Moment::Round),
            Action::Poll
        );
        let failed = with(vec![
            intent(1, "D1"),
            Event::DoseFailed {
                udid: "A".into(),
                command_uuid: "D1".into(),
                error: "refused".into(),
            },
        ]);
        assert_eq!(
            next_action(&failed, Moment::Round),
            Action::End(FollowUpEndReason::NoDoseReachedMdm)
        );
        // An intent whose answer is unknown has not reached the MDM as far as the run knows.
        assert_eq!(
            next_action(&with(vec![intent(1, "D1")]), Moment::Round),
            Action::End(FollowUpEndReason::NoDoseReachedMdm)
        );
        let done = with(vec![intent(1, "D1"), enqueued("D1"), ended()]);
        assert_eq!(done.phase, Phase::Ended);
        assert_eq!(next_action(&done, Moment::Round), Action::Wait(Why::Ended));
        assert_eq!(first(&done), Action::Wait(Why::StepIntended));
        assert_eq!(second(&done), Action::Wait(Why::Ended));
    }

    #[test]
    fn the_second_step_goes_once_downloaded_and_once_only() {
        let dosed = vec![
            baselined(),
            assessed(true),
            allocated(),
            intent(1, "D1"),
            enqueued("D1"),
        ];
        let with = |extra: Vec<Event>| {
            let mut e = dosed.clone();
            e.extend(extra);
            facts(e)
        };
        assert_eq!(
            second(&with(vec![status(false, "Downloading")])),
            Action::Wait(Why::NotDownloaded)
        );
        let downloaded = with(vec![status(true, "Idle")]);
        assert!(downloaded.downloaded);
        assert_eq!(
            second(&downloaded),
            Action::Dose {
                step: 2,
                action: InstallAction::InstallASAP
            }
        );
        assert_eq!(
            second(&with(vec![status(true, "Idle"), intent(2, "D2")])),
            Action::Wait(Why::StepIntended)
        );
        assert_eq!(
            second(&with(vec![
                status(true, "Idle"),
                Event::DoseWithheld {
                    udid: "A".into(),
                    step: 2,
                    rule: "already_dosed".into(),
                    reason: "r".into(),
                }
            ])),
            Action::Wait(Why::StepWithheld)
        );
        // An arm without a second step never sends one.
        let one_step = [ArmSpec {
            follow_up_step: None,
            ..arms().remove(0)
        }];
        assert_eq!(
            next_action(&downloaded, Moment::SecondDose { arms: &one_step }),
            Action::Wait(Why::NoSecondStep)
        );
    }

    #[test]
    fn a_poll_ends_on_until_or_the_time_limit_else_asks_the_status_one_at_a_time() {
        let dosed = facts(vec![
            baselined(),
            assessed(true),
            allocated(),
            intent(1, "D1"),
            enqueued("D1"),
        ]);
        let updated = UntilSpec::Updated;
        assert_eq!(
            end_of_poll(&dosed, &updated, Some("21G93"), 1),
            Action::End(FollowUpEndReason::reached(&updated))
        );
        assert_eq!(
            end_of_poll(&dosed, &updated, Some("21F90"), 1),
            Action::AskStatus
        );
        assert_eq!(
            end_of_poll(&dosed, &updated, None, 61),
            Action::End(FollowUpEndReason::TimeLimit)
        );
        // Reaching `until` wins over the time limit.
        assert_eq!(
            end_of_poll(&dosed, &updated, Some("21G93"), 61),
            Action::End(FollowUpEndReason::reached(&updated))
        );
        let asked = facts(vec![
            baselined(),
            assessed(true),
            allocated(),
            intent(1, "D1"),
            enqueued("D1"),
            Event::CommandSent {
                udid: "A".into(),
                command_uuid: "S9".into(),
                request_type: "OSUpdateStatus".into(),
            },
        ]);
        assert_eq!(
            end_of_poll(&asked, &updated, None, 1),
            Action::Wait(Why::StatusOutstanding)
        );
        let downloading = facts(vec![
            baselined(),
            assessed(true),
            allocated(),
            intent(1, "D1"),
            enqueued("D1"),
            status(false, "Downloading"),
        ]);
        let until_status = UntilSpec::Status("Downloading".into());
        assert_eq!(
            end_of_poll(&downloading, &until_status, None, 1),
            Action::End(FollowUpEndReason::reached(&until_status))
        );
        assert_eq!(
            end_of_poll(&downloading, &UntilSpec::Downloaded, None, 1),
            Action::AskStatus
        );
        let mut done = downloading.clone();
        done.end = Some(FollowUpEndReason::TimeLimit);
        assert_eq!(
            end_of_poll(&done, &updated, Some("21G93"), 1),
            Action::Wait(Why::Ended)
        );
    }

    /// A DDM dose: never asked for its status (the device reports it; OSUpdateStatus is removed
    /// on iOS 27), downloaded once a report says `prepared`, done on the target build.
    #[test]
    fn a_ddm_dose_is_followed_by_its_reports_not_by_queries() {
        let ddm_intent = Event::DoseIntent {
            udid: "A".into(),
            arm: "two-step".into(),
            step: 1,
            command_uuid: "lab-ddm-1".into(),
            request_type: crate::mdm::ddm::ENFORCEMENT_SPECIFIC.into(),
            install_action: None,
            starting_build: "21F90".into(),
            command_b64: String::new(),
            mdm_store: None,
        };
        let report = |state: &str| {
            let raw = format!(
                "{{\"StatusItems\":{{\"softwareupdate\":{{\"install-state\":\"{state}\"}}}},\"Errors\":[]}}"
            );
            Event::DdmStatusReport {
                udid: "A".into(),
                report_id: "7".into(),
                received_at: None,
                raw_b64: base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    raw.as_bytes(),
                ),
            }
        };
        let d = facts(vec![
            baselined(),
            assessed(true),
            allocated(),
            ddm_intent.clone(),
            enqueued("lab-ddm-1"),
            report("downloading"),
        ]);
        assert!(d.doses[&1].declaration);
        assert!(!d.downloaded);
        assert_eq!(d.ddm_report_after.as_deref(), Some("7"));
        assert_eq!(
            end_of_poll(&d, &UntilSpec::Updated, Some("21F90"), 1),
            Action::Wait(Why::StatusReported)
        );
        assert_eq!(
            end_of_poll(&d, &UntilSpec::Updated, Some("21G93"), 1),
            Action::End(FollowUpEndReason::reached(&UntilSpec::Updated))
        );
        let prepared = facts(vec![
            baselined(),
            assessed(true),
            allocated(),
            ddm_intent,
            enqueued("lab-ddm-1"),
            report("prepared"),
        ]);
        assert!(prepared.downloaded);
        assert_eq!(
            end_of_poll(&prepared, &UntilSpec::Downloaded, None, 1),
            Action::End(FollowUpEndReason::reached(&UntilSpec::Downloaded))
        );
    }
}
