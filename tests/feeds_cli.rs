//! `lab feeds check` on the shipped samples (exit 0, what each model is offered) and on malformed
//! files (exit 2, file:line:col); a protocol with a malformed feed is refused before any run
//! folder exists. No network.

mod common;
use common::*;

#[test]
fn a_gdmf_sample_is_listed_per_model() {
    let f = repo_path("trials/feeds/gdmf-pmv.json");
    let out = run_lab(&["feeds", "check", f.to_str().unwrap()], None);
    let (o, e) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{e}");
    assert!(o.contains("gdmf pmv, 16 entries"), "{o}");
    assert!(o.contains("tvOS"), "{o}");
    let row = |needle: &[&str]| {
        o.lines()
            .any(|l| needle.iter().all(|n| l.split_whitespace().any(|c| c == *n)))
    };
    // Two builds of 26.6.1, a model-specific 18.7.10, the expired 17.7.2 (listed, no date).
    assert!(row(&["iPhone12,1", "26.6.1", "23G83"]), "{o}");
    assert!(row(&["iPhone12,1", "26.6.1", "23G6083"]), "{o}");
    assert!(row(&["iPhone12,1", "18.7.10"]), "{o}");
    assert!(!row(&["iPhone14,2", "18.7.10"]), "{o}");
    assert!(row(&["iPhone12,1", "17.7.2", "2025-03-01"]), "{o}");
}

#[test]
fn a_gdmf_sample_on_a_date_as_json() {
    let f = repo_path("trials/feeds/gdmf-pmv.json");
    let out = run_lab(
        &[
            "feeds",
            "check",
            f.to_str().unwrap(),
            "--date",
            "2026-09-01",
            "--json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let j = parse_json(&out);
    assert_eq!(j["format"], "gdmf");
    let builds = |m: &str| -> Vec<String> {
        j["models"][m]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r["version"].as_str().unwrap(),
                    r["build"].as_str().unwrap()
                )
            })
            .collect()
    };
    // 17.7.2 expired; 26.5 expired on 2026-08-30 for iPhone18,1 only.
    assert!(!builds("iPhone12,1").iter().any(|b| b.starts_with("17.7.2")));
    assert!(builds("iPhone14,2").contains(&"26.5 23F77".to_string()));
    assert!(!builds("iPhone18,1").iter().any(|b| b.starts_with("26.5 ")));
    assert_eq!(builds("iPhone8,1"), ["15.8.5 19H394"]);
    assert_eq!(builds("AppleTV14,1"), ["26.6 23L773"]);
    assert_eq!(j["models"]["AppleTV14,1"][0]["platform"], "tvOS");
}

#[test]
fn an_ipsw_sample_lists_signed_builds() {
    let f = repo_path("trials/feeds/ipsw-iPhone12,1.json");
    let out = run_lab(&["feeds", "check", f.to_str().unwrap()], None);
    let o = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        o.contains("signed (restorable): 26.6.1 (23G83), 26.6 (23G71), 18.7.10 (22H420)"),
        "{o}"
    );
    let out = run_lab(&["feeds", "check", f.to_str().unwrap(), "--json"], None);
    let j = parse_json(&out);
    assert_eq!(j["format"], "ipsw");
    assert_eq!(j["identifier"], "iPhone12,1");
    assert_eq!(j["signed"].as_array().unwrap().len(), 3);
}

#[test]
fn malformed_feeds_exit_2_naming_file_line_and_column() {
    let cases = [
        (
            "tests/bad_inputs/feeds/gdmf-truncated.json",
            ":23:6: not valid JSON",
        ),
        (
            "tests/bad_inputs/feeds/ipsw-signed-not-bool.json",
            ":6:88: signed: invalid type: string \"yes\", expected a boolean",
        ),
    ];
    for (rel, want) in cases {
        let f = repo_path(rel);
        let out = run_lab(&["feeds", "check", f.to_str().unwrap()], None);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{rel}: {e}");
        assert!(e.contains(&format!("{}{want}", f.display())), "{e}");
        assert!(!e.contains("panicked"), "{e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.json");
    std::fs::write(&other, "{\"x\": 1}").unwrap();
    let out = run_lab(&["feeds", "check", other.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("other.json:1:1: neither a gdmf"),
        "{}",
        stderr(&out)
    );
    let missing = dir.path().join("missing.json");
    let out = run_lab(&["feeds", "check", missing.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("missing.json: cannot read"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn fetch_is_a_stub_that_says_so() {
    let out = run_lab(&["feeds", "fetch"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not implemented"), "{}", stderr(&out));
    // …and is not offered in the help.
    let help = stdout(&run_lab(&["feeds", "--help"], None));
    assert!(help.contains("check"), "{help}");
    assert!(!help.contains("fetch"), "{help}");
}

#[test]
fn a_protocol_with_a_malformed_feed_is_refused_before_any_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = repo_path("trials/fleets/rehearsal-12.yaml");
    let bad = repo_path("tests/bad_inputs/feeds/gdmf-truncated.json");
    let protocol = dir.path().join("p.yaml");
    std::fs::write(
        &protocol,
        format!(
            "id: feeds-bad\ntitle: t\nlab:\n  simulated: {{ fleet: {} }}\ntarget: latest_for_model\n\
             arms:\n  - name: a\n    install_action: Default\nfeeds:\n  gdmf: {}\n",
            fleet.display(),
            bad.display()
        ),
    )
    .unwrap();
    let results = dir.path().join("results");
    let out = run_lab(
        &[
            "run",
            protocol.to_str().unwrap(),
            "--yes",
            "--results",
            results.to_str().unwrap(),
        ],
        None,
    );
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(e.contains(&format!("{}:23:6:", bad.display())), "{e}");
    let runs = std::fs::read_dir(&results).map(|d| d.count()).unwrap_or(0);
    assert_eq!(runs, 0, "no run folder");
}

#[test]
fn qualify_with_feeds_records_the_feed_facts_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    let rehearsal = std::fs::read_to_string(repo_path("trials/rehearsal.yaml")).unwrap();
    let text = format!(
        "{}\nfeeds:\n  gdmf: {}\n  ipsw: [\"{}\"]\n  date: 2026-08-22\n",
        rehearsal.replace(
            "fleets/rehearsal-12.yaml",
            repo_path("trials/fleets/rehearsal-12.yaml")
                .to_str()
                .unwrap()
        ),
        repo_path("trials/feeds/gdmf-pmv.json").display(),
        repo_path("trials/feeds/ipsw-iPhone12,1.json").display()
    );
    let protocol = dir.path().join("p.yaml");
    std::fs::write(&protocol, text).unwrap();
    let ledger = dir.path().join("ledger.jsonl");
    let out = run_lab(
        &[
            "qualify",
            protocol.to_str().unwrap(),
            "--ledger",
            ledger.to_str().unwrap(),
            "--json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let j = parse_json(&out);
    let devices = j["devices"].as_array().unwrap();
    let model = |d: &serde_json::Value| {
        d["baseline"]["baseline"]["product_type"]["value"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let rules = |d: &serde_json::Value| -> Vec<String> {
        d["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule"].as_str().unwrap().to_string())
            .collect()
    };
    // iPhone12,1 is offered 26.x by the sample feed: eligible, with the feed facts recorded.
    let d = devices.iter().find(|d| model(d) == "iPhone12,1").unwrap();
    assert_eq!(d["eligible"], true, "{d}");
    assert_eq!(d["target"]["feed_date"], "2026-08-22");
    assert_eq!(
        d["target"]["can_restore_to_baseline"],
        serde_json::Value::Null
    );
    // iPhone15,4 is not in the sample feed: nothing newer is offered to it, and the rehearsal's
    // DDM arm cannot name it a target the feed offers either.
    let d = devices.iter().find(|d| model(d) == "iPhone15,4").unwrap();
    assert_eq!(rules(d), ["newer_target_in_feed", "ddm_target"], "{d}");
}
