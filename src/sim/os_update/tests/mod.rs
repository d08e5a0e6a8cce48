//! Unit tests of the update state machine; shared fixtures here, scenarios in the children.

use super::*;
use crate::sim::clock::{Clock, ManualClock};
use crate::sim::quirks::Behaviour::*;
use chrono::{TimeZone, Timelike};

const KEY: &str = "iOSUpdate21G80";
const GB: u64 = 1_000_000_000;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn state() -> DeviceUpdateState {
    DeviceUpdateState {
        version: "17.5".into(),
        build: "21F79".into(),
        product_type: "iPhone12,1".into(),
        disk_free: 50 * GB,
        battery_level: 80,
        charging: false,
        external_power: true,
        network: NetworkKind::Wifi,
        passcode: false,
        supervised: true,
        dep_enrolled: false,
        unlocked_since_boot: true,
        local_offset_minutes: 0,
    }
}

fn entry(version: &str, build: &str) -> CatalogEntry {
    CatalogEntry {
        version: version.into(),
        build: build.into(),
        product_key: format!("iOSUpdate{build}"),
        download_size: GB,
        install_size: 2 * GB,
        product_types: None,
        is_critical: false,
        restart_required: true,
        allows_install_later: true,
    }
}

/// 1 GB at 10 MB/s: the download takes 100 s; install 600 s; restart 180 s.
fn config(user: UserBehaviour) -> UpdateConfig {
    UpdateConfig {
        catalogue: vec![entry("17.6", "21G80")],
        user,
        timing: Timing {
            download_rate: 10_000_000,
            install: secs(600),
            restart: secs(180),
            defer_interval: secs(3600),
            unlock_after_restart: Some(secs(60)),
        },
    }
}

fn sim_with(st: DeviceUpdateState, user: UserBehaviour, quirks: Quirks) -> OsUpdateSim {
    OsUpdateSim::new(st, config(user), quirks, 42)
}

fn sim() -> OsUpdateSim {
    sim_with(
        state(),
        UserBehaviour::Approve { after: secs(0) },
        Quirks::none(),
    )
}

fn passcode_sim(user: UserBehaviour, quirks: Quirks) -> OsUpdateSim {
    let mut st = state();
    st.passcode = true;
    sim_with(st, user, quirks)
}

fn item(action: &str) -> Value {
    let mut d = Dictionary::new();
    d.insert("ProductKey".into(), KEY.into());
    d.insert("InstallAction".into(), action.into());
    Value::Dictionary(d)
}

fn cmd(request_type: &str, updates: Option<Vec<Value>>) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("RequestType".into(), request_type.into());
    if let Some(u) = updates {
        d.insert("Updates".into(), Value::Array(u));
    }
    d
}

fn schedule(s: &mut OsUpdateSim, now: DateTime<Utc>, uuid: &str, action: &str) -> Outcome {
    s.handle(
        now,
        uuid,
        "ScheduleOSUpdate",
        &cmd("ScheduleOSUpdate", Some(vec![item(action)])),
    )
}

fn status(s: &mut OsUpdateSim, now: DateTime<Utc>) -> Outcome {
    s.handle(now, "st", "OSUpdateStatus", &cmd("OSUpdateStatus", None))
}

fn available(s: &mut OsUpdateSim, now: DateTime<Utc>) -> Outcome {
    s.handle(
        now,
        "av",
        "AvailableOSUpdates",
        &cmd("AvailableOSUpdates", None),
    )
}

fn array<'a>(o: &'a Outcome, key: &str) -> &'a Vec<Value> {
    o.body()
        .and_then(|b| b.get(key))
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no {key} in {o:?}"))
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.as_dictionary()
        .and_then(|d| d.get(key))
        .and_then(Value::as_string)
        .unwrap_or_else(|| panic!("no string {key} in {v:?}"))
}

/// (ProductKey, InstallAction, Status) of the single UpdateResults item.
fn result(o: &Outcome) -> (String, String, String) {
    let a = array(o, "UpdateResults");
    assert_eq!(a.len(), 1, "{o:?}");
    (
        s(&a[0], "ProductKey").into(),
        s(&a[0], "InstallAction").into(),
        s(&a[0], "Status").into(),
    )
}

fn ok(o: &Outcome, action: &str, st: &str) {
    assert_eq!(o.status(), Some("Acknowledged"), "{o:?}");
    assert_eq!(result(o), (KEY.into(), action.into(), st.into()), "{o:?}");
}

/// (IsDownloaded as plist value, DownloadPercentComplete, Status) of the single item.
fn status_one(o: &Outcome) -> (Value, f64, String) {
    let a = array(o, "OSUpdateStatus");
    assert_eq!(a.len(), 1, "{o:?}");
    let d = a[0].as_dictionary().unwrap();
    assert_eq!(s(&a[0], "ProductKey"), KEY);
    (
        d.get("IsDownloaded").unwrap().clone(),
        d.get("DownloadPercentComplete").unwrap().as_real().unwrap(),
        s(&a[0], "Status").into(),
    )
}

fn chain(o: &Outcome) -> Vec<(i64, String)> {
    array(o, "ErrorChain")
        .iter()
        .map(|e| {
            let d = e.as_dictionary().unwrap();
            assert!(d.get("LocalizedDescription").is_some());
            (
                d.get("ErrorCode")
                    .and_then(Value::as_signed_integer)
                    .unwrap(),
                s(e, "ErrorDomain").to_string(),
            )
        })
        .collect()
}

/// Downloads the update (Default, then 100 s) and returns the clock.
fn downloaded(s: &mut OsUpdateSim) -> ManualClock {
    let c = ManualClock::new(t0());
    ok(
        &schedule(s, c.now(), "dl", "Default"),
        "DownloadOnly",
        "Downloading",
    );
    c.advance(secs(100));
    let ev = s.tick(c.now());
    assert!(ev.contains(&UpdateEvent::Downloaded), "{ev:?}");
    c
}

mod quirks_and_odd_commands;
mod timeline_paths;
