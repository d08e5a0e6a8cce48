//! `lab devices` names each device (issue 15: "no name, model or iOS version"): the pre-session
//! lockdown values every device gives without pairing (device brief §6), next to usbmuxd's
//! own record.

mod common;
use common::*;
use lab::sim::fleet;

#[test]
fn devices_shows_name_model_and_ios_of_each_device_even_unpaired() {
    let dir = tempfile::tempdir().unwrap();
    let f = fleet_file(
        &dir,
        "f.yaml",
        &format!(
            "devices:\n{}{}",
            device("Paired One", ""),
            device("Never Paired", "    paired: false\n")
        ),
    );
    let specs = fleet::load(&f).unwrap();
    let sim = Sim::start(&f);

    let j = parse_json(&run_lab(&["devices", "--json"], Some(&sim.addr)));
    let rows = j["devices"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{j}");
    for s in &specs {
        let r = rows
            .iter()
            .find(|r| r["udid"] == s.udid.as_str())
            .unwrap_or_else(|| panic!("{} missing: {j}", s.udid));
        assert_eq!(r["name"], s.name.as_str());
        assert_eq!(r["product_type"], "iPhone12,1");
        assert_eq!(r["model"], "iPhone 11");
        assert_eq!(r["ios_version"], "17.5.1");
        assert_eq!(r["ios_build"], "21F90");
    }

    let out = run_lab(&["devices"], Some(&sim.addr));
    assert!(out.status.success());
    let table = stdout(&out);
    let header = table.lines().next().unwrap();
    for col in ["UDID", "NAME", "MODEL", "IOS"] {
        assert!(header.contains(col), "{table}");
    }
    assert!(table.contains("Never Paired"), "{table}");
    assert!(table.contains("17.5.1 (21F90)"), "{table}");
}
