//! Download, user, install and restart paths along the clock (including backward jumps).

use super::*;

#[test]
fn the_clock_going_backwards_delays_deadlines_and_keeps_download_progress() {
    let mut s = sim();
    let c = ManualClock::new(t0());
    ok(
        &schedule(&mut s, c.now(), "a", "Default"),
        "DownloadOnly",
        "Downloading",
    );
    c.advance(secs(50));
    assert_eq!(s.tick(c.now()), vec![UpdateEvent::DownloadProgress(0.5)]);
    // Back 30 min mid-download: no panic, no progress lost, no events.
    c.set(c.now() - ChronoDuration::minutes(30));
    assert_eq!(s.tick(c.now()), vec![]);
    let (_, pct, st) = status_one(&status(&mut s, c.now()));
    assert_eq!((pct, st.as_str()), (0.5, "Downloading"));
    // The rest takes 50 s from the earlier time, not 30 min more.
    c.advance(secs(50));
    assert_eq!(
        s.tick(c.now()),
        vec![UpdateEvent::DownloadProgress(1.0), UpdateEvent::Downloaded]
    );
    ok(
        &schedule(&mut s, c.now(), "b", "Default"),
        "InstallASAP",
        "Installing",
    );
    assert_eq!(s.tick(c.now()), vec![UpdateEvent::InstallStarted]);
    let install_end = c.now() + ChronoDuration::seconds(600);
    // Back 1 h mid-install: the install ends when the clock reaches its end again.
    c.set(c.now() - ChronoDuration::hours(1));
    assert_eq!(s.tick(c.now()), vec![]);
    assert!(!s.offline(c.now()));
    assert_eq!(status_one(&status(&mut s, c.now())).2, "Installing");
    c.set(install_end - ChronoDuration::seconds(1));
    assert_eq!(s.tick(c.now()), vec![]);
    c.set(install_end);
    let back = install_end + ChronoDuration::seconds(180);
    assert_eq!(
        s.tick(c.now()),
        vec![UpdateEvent::RestartBegins { back_at: back }]
    );
    // Back again while restarting: still rebooting (no reply, no panic) until `back`
    // comes round, so this restart lasts 10 min longer.
    c.set(install_end - ChronoDuration::minutes(10));
    assert!(s.offline(c.now()));
    assert_eq!(status(&mut s, c.now()), Outcome::NoReply);
    assert_eq!(s.tick(c.now()), vec![]);
    c.set(back);
    assert_eq!(
        s.tick(c.now()),
        vec![UpdateEvent::RestartEnds {
            version: "17.6".into(),
            build: "21G80".into()
        }]
    );
    assert_eq!(s.version(), ("17.6", "21G80"));
}

#[test]
fn a_backward_jump_before_the_night_window_keeps_the_scheduled_install() {
    let mut s = passcode_sim(UserBehaviour::Later, Quirks::none());
    let c = downloaded(&mut s);
    schedule(&mut s, c.now(), "b", "Default");
    let at = s
        .tick(c.now())
        .into_iter()
        .find_map(|e| match e {
            UpdateEvent::InstallScheduled { at } => Some(at),
            _ => None,
        })
        .expect("the user picked Later");
    // The device clock is set back a day: the install waits for 1–3 AM by that clock.
    c.set(c.now() - ChronoDuration::days(1));
    assert_eq!(s.tick(c.now()), vec![]);
    c.set(at - ChronoDuration::seconds(1));
    assert_eq!(s.tick(c.now()), vec![]);
    c.set(at);
    assert_eq!(s.tick(c.now()), vec![UpdateEvent::InstallStarted]);
}

#[test]
fn two_step_default_downloads_then_installs_then_restarts() {
    let mut s = sim();
    let c = ManualClock::new(t0());
    assert_eq!(array(&status(&mut s, c.now()), "OSUpdateStatus").len(), 0);
    ok(
        &schedule(&mut s, c.now(), "a", "Default"),
        "DownloadOnly",
        "Downloading",
    );
    c.advance(secs(50));
    assert_eq!(s.tick(c.now()), vec![UpdateEvent::DownloadProgress(0.5)]);
    let (dl, pct, st) = status_one(&status(&mut s, c.now()));
    assert_eq!(
        (dl, pct, st.as_str()),
        (Value::Boolean(false), 0.5, "Downloading")
    );
    assert_eq!(s.disk_free(), 50 * GB - GB / 2, "the asset takes space");
    c.advance(secs(50));
    let ev = s.tick(c.now());
    assert_eq!(
        ev,
        vec![UpdateEvent::DownloadProgress(1.0), UpdateEvent::Downloaded]
    );
    let (dl, pct, st) = status_one(&status(&mut s, c.now()));
    assert_eq!((dl, pct, st.as_str()), (Value::Boolean(true), 1.0, "Idle"));
    // Second Default installs (brief §0.2).
    ok(
        &schedule(&mut s, c.now(), "b", "Default"),
        "InstallASAP",
        "Installing",
    );
    assert_eq!(s.tick(c.now()), vec![UpdateEvent::InstallStarted]);
    assert_eq!(status_one(&status(&mut s, c.now())).2, "Installing");
    c.advance(secs(600));
    let back = c.now() + ChronoDuration::seconds(180);
    assert!(s.offline(c.now()), "offline as soon as the restart is due");
    assert_eq!(
        s.tick(c.now()),
        vec![UpdateEvent::RestartBegins { back_at: back }]
    );
    assert_eq!(status(&mut s, c.now()), Outcome::NoReply);
    c.advance(secs(180));
    assert!(!s.offline(c.now()));
    assert_eq!(
        s.tick(c.now()),
        vec![UpdateEvent::RestartEnds {
            version: "17.6".into(),
            build: "21G80".into()
        }]
    );
    assert_eq!(s.version(), ("17.6", "21G80"));
    assert_eq!(s.disk_free(), 50 * GB);
}

#[test]
fn restart_then_resent_command_is_acknowledged_without_update_results() {
    let mut s = sim();
    let c = downloaded(&mut s);
    ok(
        &schedule(&mut s, c.now(), "install-1", "InstallASAP"),
        "InstallASAP",
        "Installing",
    );
    c.advance(secs(780));
    s.tick(c.now());
    assert_eq!(s.version().0, "17.6");
    assert!(s.answered_before_restart("install-1"));
    let o = schedule(&mut s, c.now(), "install-1", "InstallASAP");
    assert_eq!(o.status(), Some("Acknowledged"));
    assert!(o.body().unwrap().get("UpdateResults").is_none(), "{o:?}");
    // Nothing newer now: nothing in progress, nothing available.
    assert!(array(&status(&mut s, c.now()), "OSUpdateStatus").is_empty());
    assert!(array(&available(&mut s, c.now()), "AvailableOSUpdates").is_empty());
    // A new command for the installed update is an unknown product.
    let o = schedule(&mut s, c.now(), "install-2", "Default");
    assert_eq!(result(&o), (KEY.into(), "Error".into(), "Idle".into()));
}

#[test]
fn passcode_device_locked_after_restart_until_the_user_unlocks() {
    let mut s = passcode_sim(
        UserBehaviour::Approve { after: secs(0) },
        Quirks::only(&[NotnowBeforeFirstUnlock]),
    );
    let c = downloaded(&mut s);
    schedule(&mut s, c.now(), "i", "Default");
    c.advance(secs(780));
    let ev = s.tick(c.now());
    assert!(
        matches!(ev.last(), Some(UpdateEvent::RestartEnds { .. })),
        "{ev:?}"
    );
    assert_eq!(
        schedule(&mut s, c.now(), "i", "Default").status(),
        Some("NotNow")
    );
    c.advance(secs(60));
    assert_eq!(s.tick(c.now()), vec![UpdateEvent::FirstUnlock]);
    let o = schedule(&mut s, c.now(), "i", "Default");
    assert_eq!(o.status(), Some("Acknowledged"));
    assert!(o.body().unwrap().is_empty());
}

#[test]
fn install_asap_before_download_downloads_only() {
    let mut s = sim();
    let c = ManualClock::new(t0());
    ok(
        &schedule(&mut s, c.now(), "a", "InstallASAP"),
        "DownloadOnly",
        "Downloading",
    );
    c.advance(secs(3600));
    let ev = s.tick(c.now());
    assert!(ev.contains(&UpdateEvent::Downloaded));
    assert!(
        !ev.contains(&UpdateEvent::InstallStarted),
        "no install without a command"
    );
    assert_eq!(status_one(&status(&mut s, c.now())).2, "Idle");
    ok(
        &schedule(&mut s, c.now(), "b", "InstallASAP"),
        "InstallASAP",
        "Installing",
    );
}

#[test]
fn download_only_never_installs() {
    let mut s = sim();
    let c = ManualClock::new(t0());
    ok(
        &schedule(&mut s, c.now(), "a", "DownloadOnly"),
        "DownloadOnly",
        "Downloading",
    );
    ok(
        &schedule(&mut s, c.now(), "b", "DownloadOnly"),
        "DownloadOnly",
        "Downloading",
    );
    c.advance(secs(100));
    s.tick(c.now());
    ok(
        &schedule(&mut s, c.now(), "c", "DownloadOnly"),
        "DownloadOnly",
        "Idle",
    );
    assert_eq!(status_one(&status(&mut s, c.now())).2, "Idle");
}

#[test]
fn passcode_approve_after_delay() {
    let mut s = passcode_sim(UserBehaviour::Approve { after: secs(30) }, Quirks::none());
    let c = downloaded(&mut s);
    ok(
        &schedule(&mut s, c.now(), "i", "Default"),
        "InstallASAP",
        "Idle",
    );
    assert_eq!(s.tick(c.now()), vec![UpdateEvent::PromptShown]);
    c.advance(secs(29));
    assert!(s.tick(c.now()).is_empty());
    assert_eq!(status_one(&status(&mut s, c.now())).2, "Idle");
    c.advance(secs(1));
    assert_eq!(s.tick(c.now()), vec![UpdateEvent::InstallStarted]);
}

#[test]
fn passcode_defer_k_times_then_approve() {
    let user = UserBehaviour::Defer {
        times: 2,
        then: Box::new(UserBehaviour::Approve { after: secs(0) }),
    };
    let mut s = passcode_sim(user, Quirks::none());
    let c = downloaded(&mut s);
    ok(
        &schedule(&mut s, c.now(), "i", "Default"),
        "InstallASAP",
        "Idle",
    );
    assert_eq!(
        s.tick(c.now()),
        vec![UpdateEvent::PromptShown, UpdateEvent::UserDeferred]
    );
    c.advance(secs(3600));
    assert_eq!(
        s.tick(c.now()),
        vec![UpdateEvent::PromptShown, UpdateEvent::UserDeferred]
    );
    c.advance(secs(3599));
    assert!(s.tick(c.now()).is_empty());
    c.advance(secs(1));
    assert_eq!(
        s.tick(c.now()),
        vec![UpdateEvent::PromptShown, UpdateEvent::InstallStarted]
    );
}

#[test]
fn passcode_later_installs_between_1_and_3_am_local() {
    let mut st = state();
    st.passcode = true;
    st.local_offset_minutes = 120; // 12:00 UTC is 14:00 local
    let mk = || sim_with(st.clone(), UserBehaviour::Later, Quirks::none());
    let mut s = mk();
    let c = downloaded(&mut s);
    ok(
        &schedule(&mut s, c.now(), "i", "Default"),
        "InstallASAP",
        "Idle",
    );
    let ev = s.tick(c.now());
    let Some(UpdateEvent::InstallScheduled { at }) = ev.last().cloned() else {
        panic!("{ev:?}")
    };
    let local = local_time(at, 120);
    assert!((1..3).contains(&local.hour()), "{local}");
    assert_eq!(
        local.date(),
        local_time(t0(), 120).date().succ_opt().unwrap()
    );
    // Reproducible: the same seed picks the same minute.
    let mut s2 = mk();
    let c2 = downloaded(&mut s2);
    schedule(&mut s2, c2.now(), "i", "Default");
    assert_eq!(s2.tick(c2.now()).last(), ev.last());
    // Without the quirk OSUpdateStatus says Idle, and a second command keeps the choice.
    assert_eq!(status_one(&status(&mut s, c.now())).2, "Idle");
    ok(
        &schedule(&mut s, c.now(), "j", "Default"),
        "InstallLater",
        "Idle",
    );
    c.set(at - ChronoDuration::seconds(1));
    assert!(s.tick(c.now()).is_empty());
    c.set(at);
    assert_eq!(s.tick(c.now()), vec![UpdateEvent::InstallStarted]);
}

#[test]
fn passcode_never_stays_downloaded() {
    let mut s = passcode_sim(UserBehaviour::Never, Quirks::none());
    let c = downloaded(&mut s);
    ok(
        &schedule(&mut s, c.now(), "i", "Default"),
        "InstallASAP",
        "Idle",
    );
    assert_eq!(s.tick(c.now()), vec![UpdateEvent::PromptShown]);
    c.advance(secs(30 * 86400));
    assert!(s.tick(c.now()).is_empty());
    let (dl, _, st) = status_one(&status(&mut s, c.now()));
    assert_eq!((dl, st.as_str()), (Value::Boolean(true), "Idle"));
    ok(
        &schedule(&mut s, c.now(), "j", "InstallASAP"),
        "InstallASAP",
        "Idle",
    );
    assert_eq!(s.version().0, "17.5");
}

#[test]
fn low_disk_low_battery_no_network() {
    let c = ManualClock::new(t0());
    let mut st = state();
    st.disk_free = 3 * GB - 1; // DownloadSize + InstallSize = 3 GB
    let mut s = sim_with(st, UserBehaviour::Never, Quirks::none());
    ok(
        &schedule(&mut s, c.now(), "a", "Default"),
        "DownloadOnly",
        "DownloadInsufficientSpace",
    );
    assert!(array(&status(&mut s, c.now()), "OSUpdateStatus").is_empty());

    let mut st = state();
    st.battery_level = 49;
    st.external_power = false;
    let mut s = sim_with(st, UserBehaviour::Never, Quirks::none());
    ok(
        &schedule(&mut s, c.now(), "a", "Default"),
        "DownloadOnly",
        "DownloadInsufficientPower",
    );
    s.set_power(49, true, true);
    ok(
        &schedule(&mut s, c.now(), "b", "Default"),
        "DownloadOnly",
        "Downloading",
    );

    let mut st = state();
    st.network = NetworkKind::None;
    let mut s = sim_with(st, UserBehaviour::Never, Quirks::none());
    ok(
        &schedule(&mut s, c.now(), "a", "Default"),
        "DownloadOnly",
        "DownloadInsufficientNetwork",
    );
    s.set_network(NetworkKind::Cellular);
    ok(
        &schedule(&mut s, c.now(), "b", "Default"),
        "DownloadOnly",
        "Downloading",
    );
}

#[test]
fn install_conditions_are_checked_at_install_time() {
    let mut s = sim();
    let c = downloaded(&mut s);
    s.set_power(20, false, false);
    ok(
        &schedule(&mut s, c.now(), "i", "Default"),
        "InstallASAP",
        "InstallInsufficientPower",
    );
    s.set_power(20, true, true);
    s.set_disk_free(GB + GB / 2); // the 1 GB asset leaves 0.5 GB < 2 GB InstallSize
    ok(
        &schedule(&mut s, c.now(), "j", "Default"),
        "InstallASAP",
        "InstallInsufficientSpace",
    );
    s.set_disk_free(50 * GB);
    ok(
        &schedule(&mut s, c.now(), "k", "Default"),
        "InstallASAP",
        "Installing",
    );
}

#[test]
fn a_download_stalls_without_network() {
    let mut s = sim();
    let c = ManualClock::new(t0());
    schedule(&mut s, c.now(), "a", "Default");
    c.advance(secs(20));
    s.tick(c.now());
    s.set_network(NetworkKind::None);
    c.advance(secs(1000));
    s.tick(c.now());
    assert_eq!(status_one(&status(&mut s, c.now())).1, 0.2);
    s.set_network(NetworkKind::Wifi);
    c.advance(secs(80));
    assert!(s.tick(c.now()).contains(&UpdateEvent::Downloaded));
}

/// A device needs no clock tick exactly while nothing moves with time: before the command,
/// once downloaded and after the restart; never while a download, install or restart is under
/// way or an event waits to be taken (the device loop ticks such devices every 50 ms).
#[test]
fn quiet_only_while_nothing_moves_with_time() {
    let mut s = sim();
    let c = ManualClock::new(t0());
    assert!(s.quiet(), "a device with nothing to do");
    schedule(&mut s, c.now(), "a", "Default");
    assert!(!s.quiet(), "downloading");
    c.advance(secs(100));
    s.advance(c.now());
    assert!(!s.quiet(), "the Downloaded event not yet taken");
    s.tick(c.now());
    assert!(s.quiet(), "downloaded, waiting for the next command");
    schedule(&mut s, c.now(), "b", "Default");
    assert!(!s.quiet(), "installing");
    c.advance(secs(600));
    s.tick(c.now());
    assert!(!s.quiet(), "restarting");
    c.advance(secs(180));
    s.tick(c.now());
    assert!(s.quiet(), "back on the new version");
}
