//! The follow-up's re-probes keep one lockdown session per device (issue 16: no StartSession and
//! TLS handshake per round) and still see a device that restarted, closed its connection or
//! left usbmuxd. The simulator counts the sessions each device started.

mod common;
use common::*;
use lab::probe::{self, Answered, AttachedDevice, ProbeStatus, SessionCache};
use lab::sim::{RunningSim, SimMdm, SimOptions};
use lab::usbmux::UsbmuxAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

async fn start(dir: &tempfile::TempDir) -> RunningSim {
    let text = format!("devices:\n{}{}", device("One", ""), device("Two", ""));
    let f = fleet_file(dir, "f.yaml", &text);
    lab::sim::start(
        &f,
        SimOptions {
            listen: vec![UsbmuxAddr::Unix(dir.path().join("usbmuxd.sock"))],
            speed: 1.0,
            seed: None,
            mdm: SimMdm::None,
        },
    )
    .await
    .expect("simulated lab starts")
}

async fn listed(sim: &RunningSim, udid: &str) -> Option<AttachedDevice> {
    let (all, errors) = probe::list_all(&sim.addrs, T).await;
    assert!(errors.is_empty(), "{errors:?}");
    all.into_iter().find(|a| a.entry.serial_number == udid)
}

fn started(sim: &RunningSim, udid: &str) -> u64 {
    let i = sim.lab.index_of(udid).expect("device in the fleet");
    sim.lab.devices[i].sessions_started.load(Ordering::Relaxed)
}

/// The first device's UDID and its listing.
async fn first(sim: &RunningSim) -> (String, AttachedDevice) {
    let udid = sim.lab.devices[0].spec.udid.clone();
    let a = listed(sim, &udid).await.expect("attached at start");
    (udid, a)
}

#[tokio::test]
async fn consecutive_reprobes_reuse_one_session() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(&dir).await;
    let (udid, a) = first(&sim).await;
    let cache = SessionCache::new(T);
    for round in 0..4 {
        let (p, how) = cache.reprobe(&a).await;
        let expected = if round == 0 {
            Answered::Fresh
        } else {
            Answered::Kept
        };
        assert_eq!(how, expected, "round {round}: {:?}", p.failure);
        assert_eq!(p.status, ProbeStatus::Ok);
        assert_eq!(
            p.baseline.product_version.get().map(String::as_str),
            Some("17.5.1")
        );
        assert_eq!(
            p.baseline.build_version.get().map(String::as_str),
            Some("21F90")
        );
        assert!(p.device_time.is_some(), "the clock is read each round");
        assert!(p.baseline.network.sim_status.get().is_some());
    }
    assert_eq!(
        started(&sim, &udid),
        1,
        "one StartSession for four re-probes"
    );
    assert_eq!(cache.len(), 1);
    cache.close_all().await;
    assert!(cache.is_empty());
}

#[tokio::test]
async fn a_restarted_device_is_seen_with_its_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(&dir).await;
    let (udid, before) = first(&sim).await;
    let cache = SessionCache::new(T);
    assert_eq!(cache.reprobe(&before).await.1, Answered::Fresh);
    // An install's restart, as the simulated device does it: off USB, new version, back with a
    // fresh DeviceID.
    let i = sim.lab.index_of(&udid).unwrap();
    sim.lab.detach(i);
    sim.lab.devices[i].update_live(|l| {
        l.ios_version = "17.6.1".into();
        l.ios_build = "21G93".into();
    });
    sim.lab.attach(i);
    // Asked with the listing from before the restart, the kept session is gone with the
    // connection and the old DeviceID leads nowhere: a failure, never the old version.
    let (p, how) = cache.reprobe(&before).await;
    assert_eq!(how, Answered::Failed);
    assert_eq!(p.status, ProbeStatus::Failed);
    assert_eq!(p.baseline.build_version.get(), None);
    // With the next listing: a new session, and the new build.
    let after = listed(&sim, &udid).await.expect("back after the restart");
    assert_ne!(after.entry.device_id, before.entry.device_id);
    cache.retain(std::slice::from_ref(&after), |_| true);
    let (p, how) = cache.reprobe(&after).await;
    assert_eq!(how, Answered::Fresh);
    assert_eq!(
        p.baseline.build_version.get().map(String::as_str),
        Some("21G93")
    );
    assert_eq!(started(&sim, &udid), 2);
    assert_eq!(cache.reprobe(&after).await.1, Answered::Kept);
}

#[tokio::test]
async fn a_session_opened_under_another_device_id_is_not_asked() {
    // The restart fell between two rounds: the listing already shows the new DeviceID.
    let dir = tempfile::tempdir().unwrap();
    let sim = start(&dir).await;
    let (udid, before) = first(&sim).await;
    let cache = SessionCache::new(T);
    cache.reprobe(&before).await;
    let i = sim.lab.index_of(&udid).unwrap();
    sim.lab.detach(i);
    sim.lab.attach(i);
    let after = listed(&sim, &udid).await.unwrap();
    // Without `retain` first, the re-probe itself refuses the session of the old DeviceID.
    let (p, how) = cache.reprobe(&after).await;
    assert_eq!(how, Answered::Fresh, "{:?}", p.failure);
    assert_eq!(started(&sim, &udid), 2);
}

#[tokio::test]
async fn a_detached_device_loses_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(&dir).await;
    let (udid, a) = first(&sim).await;
    let other = sim.lab.devices[1].spec.udid.clone();
    let b = listed(&sim, &other).await.unwrap();
    let cache = SessionCache::new(T);
    cache.reprobe(&a).await;
    cache.reprobe(&b).await;
    assert_eq!(cache.len(), 2);
    sim.lab.detach(sim.lab.index_of(&udid).unwrap());
    assert!(listed(&sim, &udid).await.is_none(), "gone from usbmuxd");
    let (now, _) = probe::list_all(&sim.addrs, T).await;
    cache.retain(&now, |_| true);
    assert_eq!(cache.len(), 1, "the detached device's session is closed");
    // A device no longer followed loses its session too.
    cache.retain(&now, |u| u != other);
    assert!(cache.is_empty());
}

#[tokio::test]
async fn a_connection_the_device_closed_is_replaced_by_a_fresh_session() {
    // lockdownd closes an idle connection (or the device drops it) while the device stays
    // listed under the same DeviceID: the next re-probe opens a new session and reads on.
    let dir = tempfile::tempdir().unwrap();
    let sim = start(&dir).await;
    let (udid, a) = first(&sim).await;
    let cache = SessionCache::new(T);
    cache.reprobe(&a).await;
    let i = sim.lab.index_of(&udid).unwrap();
    // What a detach does to open lockdown connections, without leaving usbmuxd.
    sim.lab.devices[i].detached.send_modify(|g| *g += 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (p, how) = cache.reprobe(&a).await;
    assert_eq!(how, Answered::Fresh, "{:?}", p.failure);
    assert_eq!(p.status, ProbeStatus::Ok);
    assert_eq!(started(&sim, &udid), 2);
}

#[tokio::test]
async fn past_its_capacity_the_cache_probes_afresh_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(&dir).await;
    let (udid, a) = first(&sim).await;
    let cache = SessionCache::with_capacity(T, 0);
    for _ in 0..3 {
        let (p, how) = cache.reprobe(&a).await;
        assert_eq!(how, Answered::Fresh);
        assert_eq!(p.status, ProbeStatus::Ok);
    }
    assert!(cache.is_empty());
    assert_eq!(started(&sim, &udid), 3);
}
