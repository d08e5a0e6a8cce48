//! Several usbmuxd addresses give one device list, each device tagged with its host.

mod common;
use common::*;

#[test]
fn two_hosts_one_list() {
    let dir = tempfile::tempdir().unwrap();
    let a = fleet_file(
        &dir,
        "a.yaml",
        &format!("seed: 1\ndevices:\n{}", device("A", "")),
    );
    let b = fleet_file(
        &dir,
        "b.yaml",
        &format!(
            "seed: 2\ndevices:\n{}{}",
            device("B1", ""),
            device("B2", "")
        ),
    );
    let (sa, sb) = (Sim::start(&a), Sim::start(&b));
    // Comma-separated in one flag …
    let both = format!("{},{}", sa.addr, sb.addr);
    let out = run_lab(&["devices", "--json", "--usbmuxd", &both], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let d = parse_json(&out);
    let hosts: Vec<&str> = d["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["host"].as_str().unwrap())
        .collect();
    assert_eq!(
        hosts,
        vec![sa.addr.as_str(), sb.addr.as_str(), sb.addr.as_str()]
    );
    // … or repeated, with one host down: the others still answer, the dead one is reported.
    let dead = "127.0.0.1:1";
    let out = run_lab(
        &[
            "probe",
            "--json",
            "--usbmuxd",
            &sa.addr,
            "--usbmuxd",
            &sb.addr,
            "--usbmuxd",
            dead,
        ],
        None,
    );
    let p = parse_json(&out);
    assert_eq!(p["devices"].as_array().unwrap().len(), 3);
    assert!(
        p["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["status"] == "ok")
    );
    assert_eq!(p["host_errors"][0]["host"], dead);
}
