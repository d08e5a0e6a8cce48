//! Detaching a device while `lab devices --watch --json` watches, or between two listings, is
//! seen and reported (issue #2, fourth acceptance point).

mod common;
use common::*;
use lab::sim::fleet;
use std::time::Duration;

#[test]
fn watch_reports_attach_and_detach_events() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "devices:\n{}{}{}",
        device("Stays", ""),
        device("Leaves", "    detach_after: 600ms\n"),
        device("Arrives", "    attach_after: 900ms\n"),
    );
    let f = fleet_file(&dir, "f.yaml", &text);
    let specs = fleet::load(&f).unwrap();
    let udid = |n: &str| specs.iter().find(|s| s.name == n).unwrap().udid.clone();
    let sim = Sim::start(&f);
    let out = run_lab(
        &["devices", "--watch", "--json", "--for", "3s"],
        Some(&sim.addr),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let events: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let has = |ev: &str, u: &str| events.iter().any(|e| e["event"] == ev && e["udid"] == u);
    // The sim may already have detached "Leaves" before the watch started; then it is simply
    // not in the initial list. Either way a detach of a device seen attached must be reported.
    assert!(has("attached", &udid("Stays")), "{events:?}");
    assert!(has("attached", &udid("Arrives")), "{events:?}");
    if has("attached", &udid("Leaves")) {
        assert!(has("detached", &udid("Leaves")), "{events:?}");
    }
    assert!(!has("detached", &udid("Stays")), "{events:?}");
    for e in &events {
        assert_eq!(e["host"], sim.addr.as_str());
    }
}

#[test]
fn a_detach_between_two_listings_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "devices:\n{}{}",
        device("Stays", ""),
        device("Leaves", "    detach_after: 2s\n"),
    );
    let f = fleet_file(&dir, "f.yaml", &text);
    let specs = fleet::load(&f).unwrap();
    let sim = Sim::start(&f);
    let list = || -> Vec<String> {
        let o = run_lab(&["devices", "--json"], Some(&sim.addr));
        assert!(o.status.success(), "{}", stderr(&o));
        parse_json(&o)["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["udid"].as_str().unwrap().to_string())
            .collect()
    };
    let first = list();
    assert_eq!(first.len(), 2, "{first:?}");
    let second = wait_for(Duration::from_secs(10), || {
        let l = list();
        (l.len() == 1).then_some(l)
    });
    assert_eq!(second, vec![specs[0].udid.clone()]);
    // A probe after the detach covers only what is still attached.
    let p = parse_json(&run_lab(&["probe", "--json"], Some(&sim.addr)));
    assert_eq!(p["devices"].as_array().unwrap().len(), 1);
}

#[test]
fn a_device_detached_mid_connection_drops_its_lockdown_connection() {
    // Detach while a lockdown connection to a silent device is open: the probe must end
    // (connection closed) instead of waiting for its full timeout.
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "devices:\n{}",
        device("Unplugged", "    fault: silent\n    detach_after: 800ms\n"),
    );
    let f = fleet_file(&dir, "f.yaml", &text);
    let sim = Sim::start(&f);
    let out = run_lab(&["probe", "--json", "--timeout", "20"], Some(&sim.addr));
    let r = parse_json(&out);
    let d = &r["devices"][0];
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["failure"]["kind"], "closed", "{d}");
    assert!(d["elapsed_ms"].as_u64().unwrap() < 10_000, "{d}");
}
