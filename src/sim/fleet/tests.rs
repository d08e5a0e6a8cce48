//! The fleet file's tests: parsing, expansion, and errors with their line and column.

use super::*;

const GOOD: &str = r#"
seed: 7
devices:
  - name: Bench iPhone
    product_type: iPhone12,1
    ios: { version: "17.5.1", build: 21F90 }
    disk: { total: 64 GB, free: 20.5 GB }
    battery: { level: 87, charging: true, external_power: true }
    network: cellular
    passcode: true
    count: 2
  - name: Old one
    product_type: iPhone10,4
    ios: { version: "16.7.8", build: 20H343 }
    disk: { total: 64000000000, free: 1 GiB }
    battery: { level: 40 }
    supervised: false
    detach_after: 1.5s
"#;

#[test]
fn expands_counts_and_generates_stable_identities() {
    let a = parse(Path::new("f.yaml"), GOOD).unwrap();
    let b = parse(Path::new("f.yaml"), GOOD).unwrap();
    assert_eq!(a, b, "generation is deterministic");
    assert_eq!(a.len(), 3);
    assert_eq!(a[0].name, "Bench iPhone 1");
    assert_eq!(a[0].disk_total, 64_000_000_000);
    assert_eq!(a[0].disk_free, 20_500_000_000);
    assert!(a[0].udid.starts_with("00008030-"), "{}", a[0].udid);
    assert_ne!(a[0].udid, a[1].udid);
    assert_eq!(a[2].udid.len(), 40, "pre-A12 devices have 40-hex UDIDs");
    assert_eq!(a[2].disk_free, 1 << 30);
    assert_eq!(a[2].detach_after, Some(Duration::from_millis(1500)));
    assert!(!a[2].supervised && a[0].supervised);
    assert_eq!(a[0].serial.len(), 12);
}

fn err(text: &str) -> InputError {
    parse(Path::new("fleet.yaml"), text).unwrap_err()
}

#[test]
fn errors_carry_line_and_column() {
    let e = err("devices:\n  - name: x\n    product_type: iPhone12,1\n    colour: red\n");
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.to_string().starts_with("fleet.yaml:4:"), "{e}");
    assert!(e.message.contains("colour"), "{e}");

    let e = err(
        "devices:\n  - name: x\n    product_type: iPhone12,1\n    ios: {version: '17.0', build: A}\n    disk: {total: 1 GB, free: 2 GB}\n    battery: {level: 5}\n",
    );
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.message.contains("more than disk total"), "{e}");

    let e = err(
        "devices:\n  - name: x\n    product_type: iPhone12,1\n    ios: {version: '17.0', build: A}\n    disk: {total: 1 GB, free: 0}\n    battery: {level: 150}\n",
    );
    assert_eq!(e.line, Some(6), "{e}");
    assert!(e.message.contains("percentage"), "{e}");

    let e = err(
        "devices:\n  - name: x\n    product_type: iPhone12,1\n    ios: {version: '17.0', build: A}\n    disk: {total: 12 parsecs, free: 0}\n    battery: {level: 5}\n",
    );
    assert_eq!(e.line, Some(5), "{e}");
    assert!(e.message.contains("unknown unit"), "{e}");
}

#[test]
fn a_non_ascii_serial_gets_a_model_number() {
    // Regression: the default model number took the serial's first 3 *bytes*, which split
    // a multi-byte character (serial "ééé") and panicked.
    let text = "devices:\n  - name: A\n    product_type: iPhone12,1\n    serial: \"ééé\"\n    ios: { version: \"17.5.1\", build: 21F90 }\n    disk: { total: 64 GB, free: 20 GB }\n    battery: { level: 87 }\n";
    let d = parse(Path::new("f.yaml"), text).unwrap();
    assert_eq!(d[0].model_number, "Mééé2");
}

fn one_device(extra: &str) -> String {
    format!(
        "devices:\n  - name: x\n    product_type: iPhone12,1\n    ios: {{ version: '17.0', build: A }}\n    disk: {{ total: 1 GB, free: 0 }}\n    battery: {{ level: 5 }}\n{extra}"
    )
}

#[test]
fn reattach_after_needs_detach_after() {
    let d = parse(
        Path::new("f.yaml"),
        &one_device("    detach_after: 5s\n    reattach_after: 2m\n"),
    )
    .unwrap();
    assert_eq!(d[0].reattach_after, Some(Duration::from_secs(120)));
    assert_eq!(d[0].detach_after, Some(Duration::from_secs(5)));

    let e = err(&one_device("    reattach_after: 2m\n"));
    assert_eq!((e.line, e.column), (Some(7), Some(21)), "{e}");
    assert!(e.message.contains("needs detach_after"), "{e}");
    let e = err(&one_device(
        "    detach_after: 5s\n    reattach_after: soon\n",
    ));
    assert_eq!(e.line, Some(8), "{e}");
}

#[test]
fn mdm_fault_is_parsed_and_checked() {
    let d = parse(
        Path::new("f.yaml"),
        &one_device("    mdm_fault: { kind: wrong_command_uuid, on: OSUpdateStatus }\n"),
    )
    .unwrap();
    assert_eq!(
        d[0].mdm_fault,
        Some(MdmFault {
            kind: MdmFaultKind::WrongCommandUuid,
            on: Some("OSUpdateStatus".into()),
            times: 1
        })
    );
    let d = parse(
        Path::new("f.yaml"),
        &one_device("    mdm_fault: { kind: malformed_report, times: 3 }\n"),
    )
    .unwrap();
    let f = d[0].mdm_fault.clone().unwrap();
    assert_eq!(
        (f.kind, f.on, f.times),
        (MdmFaultKind::MalformedReport, None, 3)
    );

    let e = err(&one_device(
        "    mdm_fault: { kind: malformed_report, times: 0 }\n",
    ));
    assert_eq!(e.line, Some(7), "{e}");
    assert!(e.message.contains("never fires"), "{e}");
    let e = err(&one_device(
        "    mdm_fault: { kind: malformed_report, on: OSUpdateStatuss }\n",
    ));
    assert_eq!(e.line, Some(7), "{e}");
    assert!(e.message.contains("OSUpdateStatuss"), "{e}");
    let e = err(&one_device("    mdm_fault: { kind: sulk }\n"));
    assert_eq!(e.line, Some(7), "{e}");
    let e = err(&one_device(
        "    mdm_fault:\n      kind: malformed_report\n      colour: red\n",
    ));
    assert_eq!(e.line, Some(9), "{e}");
}

#[test]
fn clock_jumps_are_signed_and_located() {
    let text = format!(
        "clock:\n  start: \"2026-11-27T22:30:00Z\"\n  jumps:\n    - {{ after: 10m, by: 3h }}\n    - {{ after: 40m, by: -30m }}\n    - {{ after: 50m, by: -90 }}\n{}",
        one_device("")
    );
    let f: FleetFile = crate::input::parse_yaml(Path::new("f.yaml"), &text).unwrap();
    let j = f.clock_jumps(Path::new("f.yaml")).unwrap();
    assert_eq!(j.len(), 3);
    assert_eq!(j[0].after, Duration::from_secs(600));
    assert_eq!(j[0].by, chrono::Duration::hours(3));
    assert_eq!(j[1].by, -chrono::Duration::minutes(30));
    assert_eq!(j[2].by, -chrono::Duration::seconds(90));
    assert!(parse(Path::new("f.yaml"), &text).is_ok());

    let bad = |jumps: &str| err(&format!("clock:\n  jumps:\n{jumps}{}", one_device("")));
    let e = bad("    - { after: 10m, by: 0s }\n");
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("zero"), "{e}");
    let e = bad("    - { after: 10m, by: -3 fortnights }\n");
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("unknown unit"), "{e}");
    let e = bad("    - { after: -10m, by: 1h }\n");
    assert_eq!(e.line, Some(3), "{e}");
    let e = bad("    - { after: 10m }\n");
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("by"), "{e}");
}

#[test]
fn a_huge_number_of_seconds_is_an_error_not_a_panic() {
    // Found by fuzzing (`sim_fleet`); the crashing input is kept in tests/fuzz-regressions.
    for text in [
        "mdm: { poll_interval: 60E216 }\ndevices: []\n",
        include_str!("../../../tests/fuzz-regressions/sim_fleet-huge-float-duration.yaml"),
    ] {
        let e = parse(Path::new("fleet.yaml"), text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fleet.yaml"), "{e}");
    }
    let e = parse(
        Path::new("fleet.yaml"),
        "mdm: { poll_interval: 60E216 }\ndevices: []\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("too long"), "{e}");
}

#[test]
fn enrollment_and_shared_ipad_are_parsed_and_checked() {
    let ipad = "devices:\n  - name: Cart\n    product_type: iPad13,1\n    ios: { version: '17.5.1', build: 21F90 }\n    disk: { total: 64 GB, free: 20 GB }\n    battery: { level: 80 }\n    shared_ipad: { logged_in_user: alice }\n    enrollment: { user_enrollment: false }\n";
    let d = parse(Path::new("f.yaml"), ipad).unwrap();
    assert_eq!(
        d[0].shared_ipad,
        Some(SharedIpadSpec {
            logged_in_user: Some("alice".into()),
            resident_users: None
        })
    );
    assert!(!d[0].enrollment.user_enrollment);
    // Defaults: no Shared iPad, a device enrollment.
    let d = parse(Path::new("f.yaml"), &one_device("")).unwrap();
    assert_eq!(d[0].shared_ipad, None);
    assert_eq!(d[0].enrollment, EnrollmentSpec::default());
    // Only an iPad can be a Shared iPad.
    let e = err(&one_device("    shared_ipad: {}\n"));
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.message.contains("only an iPad"), "{e}");
    let e = err(&one_device("    enrollment: { dep: true }\n"));
    assert_eq!(e.line, Some(7), "{e}");
}

/// Issue 14: a device's own empty `update.catalogue: []` means nothing is offered to it; only an
/// absent one takes the fleet's catalogue.
#[test]
fn an_empty_device_catalogue_offers_nothing() {
    let text = "catalogue:\n  - { version: '17.6.1', build: 21G93, download_size: 600 MB, install_size: 1.5 GB }\n\
        devices:\n  - name: Own\n    product_type: iPhone12,1\n    ios: { version: '17.5.1', build: 21F90 }\n    \
        disk: { total: 64 GB, free: 20 GB }\n    battery: { level: 80 }\n    update: { catalogue: [] }\n  \
        - name: Shared\n    product_type: iPhone12,1\n    ios: { version: '17.5.1', build: 21F90 }\n    \
        disk: { total: 64 GB, free: 20 GB }\n    battery: { level: 80 }\n";
    let d = parse(Path::new("f.yaml"), text).unwrap();
    assert_eq!(d[0].update.catalogue, Some(Vec::new()));
    assert!(d[0].update.config().unwrap().catalogue.is_empty());
    let shared = d[1].update.config().unwrap().catalogue;
    assert_eq!(shared.len(), 1);
    assert_eq!(shared[0].build, "21G93");
}

/// Issue 14: a negative battery level or seed says it must be ≥ 0, with its line.
#[test]
fn a_negative_battery_or_seed_must_be_at_least_zero() {
    let e = err(&one_device("").replace("level: 5", "level: -5"));
    assert_eq!(e.message, "level: must be ≥ 0 (a whole number)");
    assert_eq!(e.line, Some(6), "{e}");
    let e = err(&format!("seed: -3\n{}", one_device("")));
    assert_eq!(e.message, "seed: must be ≥ 0 (a whole number)");
}
