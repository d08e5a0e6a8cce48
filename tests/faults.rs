//! A device that sends garbage, closes mid-frame, announces a 4 GiB frame, stays silent or
//! breaks TLS is reported failed with that reason within the timeout, while the rest of the
//! fleet probes fine (issue #2, third acceptance point).

mod common;
use common::*;
use serde_json::Value;

#[test]
fn broken_devices_fail_alone_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("devices:\n");
    text += &device("Good 1", "");
    for (name, fault) in [
        ("Garbage", "garbage"),
        ("Cut", "close_mid_frame"),
        ("Huge", "oversized_frame"),
        ("Silent", "silent"),
        ("BadTLS", "tls_failure"),
    ] {
        text += &device(name, &format!("    fault: {fault}\n"));
    }
    text += &device("Good 2", "");
    let f = fleet_file(&dir, "f.yaml", &text);
    let sim = Sim::start(&f);

    let timeout_s = 1.5;
    let out = run_lab(
        &["probe", "--json", "--timeout", &timeout_s.to_string()],
        Some(&sim.addr),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed device makes the probe exit 1"
    );
    let r = parse_json(&out);
    let devs = r["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 7);
    let by_name = |name: &str| -> &Value {
        let spec = lab::sim::fleet::load(&f)
            .unwrap()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap();
        devs.iter()
            .find(|d| d["udid"] == spec.udid.as_str())
            .unwrap()
    };
    for good in ["Good 1", "Good 2"] {
        let d = by_name(good);
        assert_eq!(d["status"], "ok", "{d}");
        assert_eq!(d["baseline"]["battery"]["current_capacity"]["value"], 80);
    }
    for (name, kind, stage) in [
        ("Garbage", "garbage", "QueryType"),
        ("Cut", "closed_mid_frame", "QueryType"),
        ("Huge", "oversized_frame", "QueryType"),
        ("Silent", "timeout", "QueryType"),
        ("BadTLS", "tls", "TLS"),
    ] {
        let d = by_name(name);
        assert_eq!(d["status"], "failed", "{name}: {d}");
        assert_eq!(d["failure"]["kind"], kind, "{name}: {d}");
        assert_eq!(d["failure"]["stage"], stage, "{name}: {d}");
        let ms = d["elapsed_ms"].as_u64().unwrap();
        assert!(
            ms <= (timeout_s * 1000.0) as u64 + 1000,
            "{name} took {ms} ms, beyond the {timeout_s}s timeout"
        );
        // Fields that were never read say why.
        let b = &d["baseline"]["battery"]["current_capacity"];
        assert!(b["value"].is_null());
        assert!(b["error"].as_str().unwrap().contains("probe failed"), "{b}");
    }
    // The garbage is kept, raw, as evidence.
    let g = by_name("Garbage");
    assert!(
        g["failure"]["raw_base64"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(
        by_name("Huge")["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("4294967295")
    );
}
