//! Golden run folders: the safety net for reworking the journal, its fold and the reports
//! (issue 12). Each `tests/golden/<case>/` holds a real run's inputs (`protocol.yaml`, the frozen
//! copy of the protocol, and `journal.jsonl`) and every file `lab report` wrote from them. The
//! test copies the inputs to a fresh folder, runs the real `lab report` there, and requires the
//! same set of files, byte for byte.
//!
//! `LAB_UPDATE_GOLDEN=1 cargo test --test golden` rewrites the expected files on purpose (then
//! review the diff before committing it). How each case was made: `tests/golden/README.md`.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What `lab report` reads; everything else in a case folder is what it writes.
const INPUTS: [&str; 2] = ["protocol.yaml", "journal.jsonl"];

fn golden_root() -> PathBuf {
    repo_path("tests/golden")
}

fn cases() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(golden_root())
        .expect("tests/golden exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

/// Every file under `dir`, as paths relative to it, inputs left out, and the run lock that
/// `lab report` holds while it writes (its content names a process, not the run).
fn outputs(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out.retain(|p| !INPUTS.iter().any(|i| p == Path::new(i)));
    out.remove(Path::new(lab::trial::run_lock::RUN_LOCK));
    out
}

/// Where two files first differ, for a failure message a person can act on.
fn first_difference(expected: &[u8], actual: &[u8]) -> String {
    let (e, a) = (
        String::from_utf8_lossy(expected),
        String::from_utf8_lossy(actual),
    );
    let cut = |s: &str| -> String {
        let s = s.trim_end_matches(['\r', '\n']);
        if s.chars().count() > 200 {
            format!("{}…", s.chars().take(200).collect::<String>())
        } else {
            s.to_string()
        }
    };
    let (mut el, mut al) = (e.split_inclusive('\n'), a.split_inclusive('\n'));
    let mut n = 0;
    loop {
        n += 1;
        match (el.next(), al.next()) {
            (Some(x), Some(y)) if x == y => continue,
            (Some(x), Some(y)) if cut(x) == cut(y) => {
                return format!(
                    "line {n} differs only in its line end: expected {:?}, actual {:?}",
                    &x[x.trim_end_matches(['\r', '\n']).len()..],
                    &y[y.trim_end_matches(['\r', '\n']).len()..]
                );
            }
            (Some(x), Some(y)) => {
                return format!(
                    "first difference at line {n}:\n      expected: {}\n      actual:   {}",
                    cut(x),
                    cut(y)
                );
            }
            (Some(x), None) => {
                return format!(
                    "actual ends at line {}; expected goes on with: {}",
                    n - 1,
                    cut(x)
                );
            }
            (None, Some(y)) => {
                return format!(
                    "expected ends at line {}; actual goes on with: {}",
                    n - 1,
                    cut(y)
                );
            }
            // Same text, different bytes (invalid UTF-8 read lossily): say so rather than nothing.
            (None, None) => {
                return format!(
                    "same text but different bytes ({} vs {} bytes)",
                    expected.len(),
                    actual.len()
                );
            }
        }
    }
}

/// Run `lab report` on a copy of the case's inputs; the folder it wrote into.
fn regenerate(case: &Path, scratch: &Path) -> PathBuf {
    // The copy sits under a different absolute path, with another folder name, than the case:
    // a report that depended on either would differ.
    let run = scratch.join(format!(
        "copy-of-{}",
        case.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir(&run).unwrap();
    for input in INPUTS {
        let from = case.join(input);
        if from.exists() {
            std::fs::copy(&from, run.join(input)).unwrap();
        }
    }
    let out = Command::new(lab_bin())
        .arg("report")
        .arg(&run)
        // Nothing in a report may depend on the host's time zone or language.
        .env("TZ", "Pacific/Chatham")
        .env("LC_ALL", "de_DE.UTF-8")
        .env("LANG", "de_DE.UTF-8")
        .output()
        .expect("run lab report");
    assert!(
        out.status.success(),
        "lab report {} failed: {}",
        run.display(),
        stderr(&out)
    );
    for input in INPUTS {
        let from = case.join(input);
        if from.exists() {
            assert_eq!(
                std::fs::read(run.join(input)).unwrap(),
                std::fs::read(&from).unwrap(),
                "{}: lab report must not change its input {input}",
                case.display()
            );
        }
    }
    run
}

/// Replace the case's expected files with what `lab report` wrote.
fn update(case: &Path, run: &Path) {
    for rel in outputs(case) {
        std::fs::remove_file(case.join(&rel)).unwrap();
    }
    for rel in outputs(run) {
        let to = case.join(&rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(run.join(&rel), &to).unwrap();
    }
    // Drop folders the new reports no longer have (e.g. `radar/` when no detector fires).
    for e in std::fs::read_dir(case).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && outputs(&p).is_empty() {
            std::fs::remove_dir_all(&p).unwrap();
        }
    }
}

#[test]
fn lab_report_regenerates_every_golden_run_folder_byte_for_byte() {
    let updating = std::env::var("LAB_UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let cases = cases();
    assert!(
        cases.len() >= 5,
        "expected at least five golden cases in {}",
        golden_root().display()
    );
    let scratch = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            case.join("journal.jsonl").is_file() && case.join("protocol.yaml").is_file(),
            "{name}: a golden case needs protocol.yaml and journal.jsonl"
        );
        let run = regenerate(case, scratch.path());
        if updating {
            update(case, &run);
            eprintln!("golden: rewrote {}", case.display());
            continue;
        }
        let (expected, actual) = (outputs(case), outputs(&run));
        assert!(
            !expected.is_empty(),
            "{name}: no expected reports (make them with LAB_UPDATE_GOLDEN=1)"
        );
        for rel in expected.difference(&actual) {
            failures.push(format!(
                "{name}/{}: expected, but lab report no longer writes it",
                rel.display()
            ));
        }
        for rel in actual.difference(&expected) {
            failures.push(format!(
                "{name}/{}: lab report writes it, but it is not in the golden folder",
                rel.display()
            ));
        }
        for rel in expected.intersection(&actual) {
            let (e, a) = (
                std::fs::read(case.join(rel)).unwrap(),
                std::fs::read(run.join(rel)).unwrap(),
            );
            if e != a {
                failures.push(format!(
                    "{name}/{} differs; {}",
                    rel.display(),
                    first_difference(&e, &a)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "lab report no longer reproduces the golden run folders:\n  {}\n\
         If the change is intended, rewrite them with `LAB_UPDATE_GOLDEN=1 cargo test --test \
         golden` and review the diff of tests/golden/.",
        failures.join("\n  ")
    );
}

#[test]
fn the_diff_hint_names_the_first_differing_line() {
    assert_eq!(
        first_difference(b"a\nb\nc\n", b"a\nB\nc\n"),
        "first difference at line 2:\n      expected: b\n      actual:   B"
    );
    assert!(first_difference(b"a\nb\n", b"a\n").starts_with("actual ends at line 1"));
    assert!(first_difference(b"a\n", b"a\nz\n").starts_with("expected ends at line 1"));
    assert!(first_difference(b"a\r\n", b"a\n").contains("only in its line end"));
}

/// Every line of every golden journal reads as an event and writes back byte for byte: the
/// journal's types (closed vocabularies included) keep the format earlier runs wrote.
#[test]
fn golden_journal_lines_round_trip_byte_for_byte() {
    let mut lines = 0;
    for case in cases() {
        let path = case.join("journal.jsonl");
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let entry: lab::journal::Entry = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), n + 1));
            let again = serde_json::to_string(&entry).unwrap();
            assert_eq!(again, line, "{}:{}", path.display(), n + 1);
            lines += 1;
        }
    }
    assert!(lines > 1000, "the golden journals hold {lines} lines");
}
