//! No usbmuxd, no USB, bad input: clear messages, the right exit code, no panic.

mod common;
use common::*;

#[test]
fn devices_without_usbmuxd_or_usb_says_so_and_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("UNIX:{}/no-such-usbmuxd", dir.path().display());
    let out = run_lab(&["devices", "--usbmuxd", &missing], None);
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    // On a machine with USB access the raw scan still works; in CI there is none.
    if matches!(lab::usb::scan(), lab::usb::UsbScan::Unavailable { .. }) {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("no device source is reachable"), "{err}");
        assert!(err.contains("no-such-usbmuxd"), "{err}");
        assert!(err.contains("USB"), "{err}");
    }
    let out = run_lab(&["probe", "--usbmuxd", &missing], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no usbmuxd reachable"),
        "{}",
        stderr(&out)
    );
    // The same hint as `lab devices` (issue 15).
    assert!(
        stderr(&out).contains("Is usbmuxd running? Point lab at it with --usbmuxd"),
        "{}",
        stderr(&out)
    );
}

/// `lab probe`'s table has one header per cell (issue 15: 11 cells under 10 headers); the
/// simulated lab's messages count "1 device".
#[test]
fn the_probe_table_has_a_header_for_every_cell() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let fleet = root.join("trials/fleets/rehearsal-12.yaml");
    let out = run_lab(&["probe", "--sim", fleet.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let header = text.lines().next().unwrap();
    let names: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(names.last(), Some(&"STATUS"), "{header}");
    assert!(names.contains(&"MDM"), "{header}");
    // Every row's last cell (the status) starts under the STATUS header.
    let col = header.find("STATUS").unwrap();
    for row in text.lines().skip(1) {
        assert!(
            row.get(col..).is_some_and(|s| s.starts_with("ok")
                || s.starts_with("partial")
                || s.starts_with("FAILED")),
            "misaligned: {row}\n{header}"
        );
    }
    assert!(stderr(&out).contains("(12 devices)"), "{}", stderr(&out));
}

/// A negative or non-numeric number of seconds is a bad value with exit 2, not an "unexpected
/// argument" (issue 15).
#[test]
fn a_negative_timeout_is_a_bad_value_that_says_what_is_wanted() {
    for (args, wanted) in [
        (
            vec!["probe", "--timeout", "-1"],
            "must be more than 0 seconds (got -1)",
        ),
        (
            vec!["devices", "--timeout", "-5"],
            "must be more than 0 seconds (got -5)",
        ),
        (
            vec!["probe", "--mdm-wait", "soon"],
            "is not a number of seconds",
        ),
        (
            vec!["sim", "serve", "--fleet", "f.yaml", "--speed", "-1"],
            "must be more than 0 (got -1)",
        ),
        (
            vec!["sim", "serve", "--fleet", "f.yaml", "--speed", "0"],
            "must be more than 0 (got 0)",
        ),
        (
            vec!["sim", "serve", "--fleet", "f.yaml", "--seed", "-3"],
            "must be ≥ 0 (got -3)",
        ),
    ] {
        let out = run_lab(&args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(wanted), "{args:?}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("unexpected argument"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn bad_addresses_are_bad_input() {
    for bad in ["relative/path", "host:99999", "host:"] {
        let out = run_lab(&["devices", "--usbmuxd", bad], None);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains("usbmuxd"), "{}", stderr(&out));
    }
    let out = run_lab(&["devices"], Some("nonsense"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("USBMUXD_SOCKET_ADDRESS"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_malformed_fleet_is_rejected_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown key",
            "devices:\n  - name: x\n    colour: red\n",
            3,
            "colour",
        ),
        (
            "wrong type",
            "devices:\n  - name: x\n    product_type: iPhone12,1\n    ios: { version: \"17.0\", build: A }\n    disk: { total: 64 GB, free: 1 GB }\n    battery: { level: lots }\n",
            6,
            "level",
        ),
        ("not yaml", "devices: [\n  - name: x\n", 0, ""),
        (
            "semantic",
            "devices:\n  - name: x\n    product_type: Watch6,1\n    ios: { version: \"10.0\", build: A }\n    disk: { total: 64 GB, free: 1 GB }\n    battery: { level: 5 }\n",
            2,
            "not an iPhone",
        ),
    ];
    for (what, text, line, needle) in cases {
        let f = fleet_file(&dir, "bad.yaml", text);
        for args in [
            vec![
                "sim",
                "serve",
                "--usbmuxd",
                "127.0.0.1:0",
                "--fleet",
                f.to_str().unwrap(),
            ],
            vec!["probe", "--sim", f.to_str().unwrap()],
        ] {
            let out = run_lab(&args, None);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{what}: {err}");
            assert!(!err.contains("panicked"), "{what}: {err}");
            let prefix = format!("{}:", f.display());
            assert!(err.contains(&prefix), "{what}: no file name in {err}");
            if line > 0 {
                assert!(
                    err.contains(&format!("{}:{line}:", f.display())),
                    "{what}: expected line {line} in {err}"
                );
            }
            assert!(err.contains(needle), "{what}: {err}");
        }
    }
    let out = run_lab(&["probe", "--sim", "/no/such/fleet.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/no/such/fleet.yaml: cannot read"));
}

#[test]
fn probe_with_an_embedded_sim_works_in_one_command() {
    let out = run_lab(
        &[
            "probe",
            "--sim",
            repo_path("trials/fleets/bench-5.yaml").to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.starts_with("UDID"), "{table}");
    assert_eq!(table.lines().count(), 6, "{table}");
    assert!(table.contains("Bench iPhone 11") && table.contains("17.5.1 (21F90)"));
}

/// `lab report` on a run folder whose journal has no events (a run killed before its first
/// line) is bad input: exit 2, the journal named, no empty reports written (issue 15).
#[test]
fn report_on_an_empty_journal_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("journal.jsonl"), b"").unwrap();
    let out = run_lab(&["report", dir.path().to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("journal.jsonl"), "{e}");
    assert!(e.contains("no run_started"), "{e}");
    assert!(!dir.path().join("devices.csv").exists());
    assert!(!dir.path().join("report.html").exists());
}

/// Each subcommand's help ends with an example (issue 15).
#[test]
fn every_subcommand_s_help_has_an_example() {
    for cmd in [
        vec!["devices"],
        vec!["probe"],
        vec!["qualify"],
        vec!["run"],
        vec!["observe"],
        vec!["report"],
        vec!["watch"],
        vec!["feeds", "check"],
        vec!["sim", "serve"],
        vec!["mdm", "serve"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let out = run_lab(&args, None);
        assert_eq!(out.status.code(), Some(0), "{cmd:?}");
        let help = stdout(&out);
        assert!(
            help.lines().any(|l| l.starts_with("Example")),
            "{cmd:?} has no example:\n{help}"
        );
        assert!(
            help.contains(&format!("lab {}", cmd.join(" "))),
            "{cmd:?}:\n{help}"
        );
    }
}
