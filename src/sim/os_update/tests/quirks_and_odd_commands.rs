//! Per-version quirks, AvailableOSUpdates, malformed commands and spec shapes.

use super::*;

#[test]
fn quirk_11_3_is_downloaded_integer() {
    let mut st = state();
    st.version = "11.3".into();
    let mut s = sim_with(st, UserBehaviour::Never, Quirks::for_version("11.3"));
    s.config.catalogue[0].version = "11.4".into();
    let c = ManualClock::new(t0());
    ok(
        &schedule(&mut s, c.now(), "a", "Default"),
        "DownloadOnly",
        "Downloading",
    );
    assert_eq!(
        status_one(&status(&mut s, c.now())).0,
        Value::Integer(0.into())
    );
    c.advance(secs(100));
    s.tick(c.now());
    assert_eq!(
        status_one(&status(&mut s, c.now())).0,
        Value::Integer(1.into())
    );
}

#[test]
fn quirk_11_3_no_update_is_error_2213() {
    let mut st = state();
    st.version = "11.3".into();
    let mut s = sim_with(
        st.clone(),
        UserBehaviour::Never,
        Quirks::for_version("11.3"),
    );
    s.config.catalogue.clear();
    let o = available(&mut s, t0());
    assert_eq!(o.status(), Some("Error"));
    assert_eq!(
        chain(&o),
        vec![
            (2213, "DeviceManagement.error".to_string()),
            (3, "com.apple.softwareupdateservices.errors".to_string())
        ]
    );
    // Documented behaviour: an empty array.
    let mut s = sim_with(st, UserBehaviour::Never, Quirks::for_version("11.2.6"));
    s.config.catalogue.clear();
    let o = available(&mut s, t0());
    assert_eq!(o.status(), Some("Acknowledged"));
    assert!(array(&o, "AvailableOSUpdates").is_empty());
}

#[test]
fn available_updates_lists_the_newest_for_the_model() {
    let mut s = sim();
    let mut other_model = entry("17.7", "21H16");
    other_model.product_types = Some(vec!["iPhone15,2".into()]);
    s.config.catalogue = vec![entry("17.6", "21G80"), entry("17.4", "21E219"), other_model];
    let o = available(&mut s, t0());
    let a = array(&o, "AvailableOSUpdates");
    assert_eq!(a.len(), 1);
    let d = a[0].as_dictionary().unwrap();
    assert_eq!(s_(d, "ProductKey"), KEY);
    assert_eq!(s_(d, "HumanReadableName"), "iOS 17.6");
    assert_eq!(s_(d, "ProductName"), "iOS");
    assert_eq!(s_(d, "Version"), "17.6");
    assert_eq!(s_(d, "Build"), "21G80");
    assert_eq!(
        d.get("DownloadSize").and_then(Value::as_unsigned_integer),
        Some(GB)
    );
    assert_eq!(
        d.get("InstallSize").and_then(Value::as_unsigned_integer),
        Some(2 * GB)
    );
    for k in ["IsCritical", "RestartRequired", "AllowsInstallLater"] {
        assert!(d.get(k).and_then(Value::as_boolean).is_some(), "{k}");
    }
    // ProductVersion selects too (iOS 11.3+), and a missing Updates array means Default.
    let mut by_version = Dictionary::new();
    by_version.insert("ProductVersion".into(), "17.6".into());
    by_version.insert("InstallAction".into(), "DownloadOnly".into());
    let o = s.handle(
        t0(),
        "v",
        "ScheduleOSUpdate",
        &cmd(
            "ScheduleOSUpdate",
            Some(vec![Value::Dictionary(by_version)]),
        ),
    );
    ok(&o, "DownloadOnly", "Downloading");
    let o = s.handle(
        t0(),
        "n",
        "ScheduleOSUpdate",
        &cmd("ScheduleOSUpdate", None),
    );
    ok(&o, "DownloadOnly", "Downloading");
}

fn s_<'a>(d: &'a Dictionary, k: &str) -> &'a str {
    d.get(k).and_then(Value::as_string).unwrap()
}

#[test]
fn after_a_restart_the_quirks_are_those_of_the_new_version() {
    let mut st = state();
    st.version = "11.3.1".into();
    let table = QuirkTable::builtin();
    let mut s = sim_with(st, UserBehaviour::Never, table.for_device("11.3.1", 7, "U"))
        .with_quirks_from(table, 7, "U");
    s.config.catalogue[0].version = "11.4".into();
    let c = ManualClock::new(t0());
    assert_eq!(schedule(&mut s, c.now(), "a", "Default"), Outcome::NoReply);
    c.advance(secs(100));
    s.tick(c.now());
    assert_eq!(schedule(&mut s, c.now(), "b", "Default"), Outcome::NoReply);
    c.advance(secs(780));
    s.tick(c.now());
    assert_eq!(s.version().0, "11.4");
    assert!(!s.quirks().has(ScheduleNoResponse));
    assert!(!s.quirks().has(AvailableUpdatesError2213));
    let o = available(&mut s, c.now());
    assert_eq!(o.status(), Some("Acknowledged"));
    assert!(array(&o, "AvailableOSUpdates").is_empty());
    // A command handled before the restart: Acknowledged, no UpdateResults (brief §0.3).
    let o = schedule(&mut s, c.now(), "b", "Default");
    assert_eq!(o.status(), Some("Acknowledged"));
    assert!(o.body().unwrap().get("UpdateResults").is_none());
}

#[test]
fn quirk_11_3_1_schedule_gets_no_reply_but_runs() {
    let mut st = state();
    st.version = "11.3.1".into();
    let mut s = sim_with(st, UserBehaviour::Never, Quirks::for_version("11.3.1"));
    s.config.catalogue[0].version = "11.4".into();
    assert_eq!(schedule(&mut s, t0(), "a", "Default"), Outcome::NoReply);
    assert_eq!(status_one(&status(&mut s, t0())).2, "Downloading");
}

#[test]
fn quirk_11_4_error_reply_yet_download_and_prompt() {
    let mut st = state();
    st.version = "11.4".into();
    st.passcode = true;
    let mut s = sim_with(st, UserBehaviour::Never, Quirks::for_version("11.4"));
    s.config.catalogue[0].version = "11.4.1".into();
    let c = ManualClock::new(t0());
    let o = schedule(&mut s, c.now(), "a", "Default");
    assert_eq!(o.status(), Some("Error"), "{o:?}");
    assert_eq!(result(&o).1, "Error");
    assert!(!chain(&o).is_empty());
    assert_eq!(
        status_one(&status(&mut s, c.now())).2,
        "Downloading",
        "download proceeds"
    );
    c.advance(secs(100));
    s.tick(c.now());
    let o = schedule(&mut s, c.now(), "b", "InstallASAP");
    assert_eq!(o.status(), Some("Error"));
    assert_eq!(
        s.tick(c.now()),
        vec![UpdateEvent::PromptShown],
        "the modal appears"
    );
}

#[test]
fn quirk_installing_while_scheduled_and_second_command_installs_at_once() {
    let mut s = passcode_sim(UserBehaviour::Later, Quirks::for_version("12.1"));
    assert!(s.quirks().has(InstallingWhileScheduled));
    let c = downloaded(&mut s);
    ok(
        &schedule(&mut s, c.now(), "i", "Default"),
        "InstallASAP",
        "Idle",
    );
    let ev = s.tick(c.now());
    assert!(
        matches!(ev.last(), Some(UpdateEvent::InstallScheduled { .. })),
        "{ev:?}"
    );
    c.advance(secs(60));
    s.tick(c.now());
    let (dl, _, st) = status_one(&status(&mut s, c.now()));
    assert_eq!((dl, st.as_str()), (Value::Boolean(true), "Installing"));
    ok(
        &schedule(&mut s, c.now(), "again", "InstallASAP"),
        "InstallASAP",
        "Installing",
    );
    assert_eq!(s.tick(c.now()), vec![UpdateEvent::InstallStarted]);
    c.advance(secs(780));
    s.tick(c.now());
    assert_eq!(
        s.version().0,
        "17.6",
        "installed hours before the 1–3 AM window"
    );
}

#[test]
fn quirk_below_10_3_requires_dep_and_no_passcode() {
    let mut st = state();
    st.version = "10.2.1".into();
    let q = Quirks::for_version("10.2.1");
    let mut s = sim_with(st.clone(), UserBehaviour::Never, q.clone());
    s.config.catalogue[0].version = "10.3".into();
    let o = schedule(&mut s, t0(), "a", "Default");
    assert_eq!(o.status(), Some("Error"));
    assert_eq!(chain(&o)[0].1, "MCMDMErrorDomain");
    st.dep_enrolled = true;
    st.passcode = true;
    let mut s = sim_with(st.clone(), UserBehaviour::Never, q.clone());
    s.config.catalogue[0].version = "10.3".into();
    assert_eq!(
        schedule(&mut s, t0(), "a", "Default").status(),
        Some("Error")
    );
    st.passcode = false;
    let mut s = sim_with(st, UserBehaviour::Never, q);
    s.config.catalogue[0].version = "10.3".into();
    // Before 11.3 ProductVersion is unknown, ProductKey works.
    ok(
        &schedule(&mut s, t0(), "a", "Default"),
        "DownloadOnly",
        "Downloading",
    );
}

#[test]
fn quirk_notnow_before_first_unlock() {
    let mut st = state();
    st.unlocked_since_boot = false;
    let mut s = sim_with(st, UserBehaviour::Never, Quirks::for_version("17.5"));
    assert_eq!(
        schedule(&mut s, t0(), "a", "Default").status(),
        Some("NotNow")
    );
    assert_eq!(status(&mut s, t0()).status(), Some("NotNow"));
    assert_eq!(available(&mut s, t0()).status(), Some("NotNow"));
    s.set_unlocked(true);
    ok(
        &schedule(&mut s, t0(), "a", "Default"),
        "DownloadOnly",
        "Downloading",
    );
}

#[test]
fn odd_commands_never_panic() {
    let mut s = sim();
    let fmt = |s: &mut OsUpdateSim, updates: Value| {
        let mut d = cmd("ScheduleOSUpdate", None);
        d.insert("Updates".into(), updates);
        s.handle(t0(), "x", "ScheduleOSUpdate", &d)
            .status()
            .map(str::to_string)
    };
    let cfe = Some("CommandFormatError".to_string());
    assert_eq!(fmt(&mut s, Value::String("no".into())), cfe);
    assert_eq!(fmt(&mut s, Value::Array(vec![Value::Boolean(true)])), cfe);
    let mut d = Dictionary::new();
    d.insert("ProductKey".into(), KEY.into());
    assert_eq!(
        fmt(&mut s, Value::Array(vec![Value::Dictionary(d.clone())])),
        cfe
    );
    d.insert("InstallAction".into(), "Whenever".into());
    assert_eq!(
        fmt(&mut s, Value::Array(vec![Value::Dictionary(d.clone())])),
        cfe
    );
    d.insert("InstallAction".into(), Value::Integer(1.into()));
    assert_eq!(
        fmt(&mut s, Value::Array(vec![Value::Dictionary(d.clone())])),
        cfe
    );
    d.insert("InstallAction".into(), "Default".into());
    d.insert("ProductKey".into(), Value::Integer(7.into()));
    assert_eq!(
        fmt(&mut s, Value::Array(vec![Value::Dictionary(d.clone())])),
        cfe
    );
    d.remove("ProductKey");
    assert_eq!(fmt(&mut s, Value::Array(vec![Value::Dictionary(d)])), cfe);
    assert!(
        array(&status(&mut s, t0()), "OSUpdateStatus").is_empty(),
        "no effect"
    );

    // Unknown product and macOS-only actions: an Error item.
    let mut d = Dictionary::new();
    d.insert("ProductKey".into(), "iOSUpdate99Z1".into());
    d.insert("InstallAction".into(), "Default".into());
    let o = s.handle(
        t0(),
        "u",
        "ScheduleOSUpdate",
        &cmd("ScheduleOSUpdate", Some(vec![Value::Dictionary(d)])),
    );
    assert_eq!(
        result(&o),
        ("iOSUpdate99Z1".into(), "Error".into(), "Idle".into())
    );
    let o = schedule(&mut s, t0(), "m", "InstallForceRestart");
    assert_eq!(result(&o), (KEY.into(), "Error".into(), "Idle".into()));
    assert_eq!(
        s.handle(t0(), "e", "ScheduleOSUpdate", &Dictionary::new())
            .status(),
        Some("Acknowledged")
    );

    let o = s.handle(
        t0(),
        "q",
        "DeviceInformation",
        &cmd("DeviceInformation", None),
    );
    assert_eq!(o.status(), Some("Error"));
    assert_eq!(chain(&o), vec![(12021, "MCMDMErrorDomain".to_string())]);

    let mut st = state();
    st.supervised = false;
    let mut u = sim_with(st, UserBehaviour::Never, Quirks::none());
    assert_eq!(
        schedule(&mut u, t0(), "a", "Default").status(),
        Some("Error")
    );
    assert_eq!(available(&mut u, t0()).status(), Some("Error"));
}

#[test]
fn extreme_durations_do_not_panic() {
    let mut st = state();
    st.passcode = true;
    let mut s = OsUpdateSim::new(
        st,
        UpdateConfig {
            catalogue: vec![entry("17.6", "21G80")],
            user: UserBehaviour::Approve {
                after: Duration::MAX,
            },
            timing: Timing {
                download_rate: 1,
                install: Duration::MAX,
                restart: Duration::MAX,
                defer_interval: Duration::MAX,
                unlock_after_restart: Some(Duration::MAX),
            },
        },
        Quirks::for_version("17.5"),
        1,
    );
    ok(
        &schedule(&mut s, t0(), "a", "Default"),
        "DownloadOnly",
        "Downloading",
    );
    let far = DateTime::<Utc>::MAX_UTC;
    s.tick(far);
    ok(
        &schedule(&mut s, far, "b", "Default"),
        "InstallASAP",
        "Idle",
    );
    s.tick(far);
    assert!(!s.offline(far));
}

#[test]
fn spec_yaml_shapes() {
    let y = r#"
catalogue:
  - { version: "17.6", build: 21G80, download_size: 6.4 GB, install_size: 2.9 GB }
  - version: "18.0"
    build: 22A3354
    download_size: 7 GB
    install_size: 3 GB
    product_types: ["iPhone12,1"]   # quoted: in a YAML flow list the comma separates
    is_critical: true
user: { defer: { times: 2, then: { approve: { after: 30s } } } }
download_rate: 20 MB
install_duration: 10m
restart_duration: 3m
defer_interval: 1h
dep_enrolled: true
local_offset_minutes: -300
"#;
    let spec: UpdateBehaviourSpec = serde_saphyr::from_str(y).unwrap();
    let cfg = spec.config().unwrap();
    assert_eq!(cfg.catalogue[0].product_key, "iOSUpdate21G80");
    assert_eq!(cfg.catalogue[0].download_size, 6_400_000_000);
    assert_eq!(
        cfg.catalogue[1].product_types,
        Some(vec!["iPhone12,1".to_string()])
    );
    assert_eq!(cfg.timing.download_rate, 20_000_000);
    assert_eq!(cfg.timing.install, secs(600));
    assert_eq!(
        cfg.user,
        UserBehaviour::Defer {
            times: 2,
            then: Box::new(UserBehaviour::Approve { after: secs(30) })
        }
    );
    assert!(spec.dep_enrolled && spec.unlocked_since_boot);
    for (text, want) in [
        ("user: later", UserBehaviour::Later),
        ("user: never", UserBehaviour::Never),
        ("{}", UserBehaviour::Approve { after: secs(0) }),
    ] {
        let spec: UpdateBehaviourSpec = serde_saphyr::from_str(text).unwrap();
        assert_eq!(spec.config().unwrap().user, want, "{text}");
    }
    assert!(serde_saphyr::from_str::<UpdateBehaviourSpec>("colour: red").is_err());
    assert!(serde_saphyr::from_str::<UpdateBehaviourSpec>("user: sometimes").is_err());
    let bad: UpdateBehaviourSpec = serde_saphyr::from_str("download_rate: 0").unwrap();
    assert!(bad.config().is_err());
}
