//! `lab qualify`, `lab run`, `lab observe`, `lab report`.

use super::{CliError, print_json, table};
use crate::journal::{Event, Journal, ObservationSource};
use crate::trial::protocol;
use crate::trial::runner::{self, RunError, RunOptions, TestPauses};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct QualifyArgs {
    /// The trial protocol.
    trial: PathBuf,
    #[arg(long)]
    json: bool,
    /// The lab-wide dose ledger (devices other protocols dosed are excluded). Default:
    /// $LAB_LEDGER, else the protocol's lab.ledger, else $XDG_STATE_HOME/lab/ledger.jsonl, else
    /// ~/.local/state/lab/ledger.jsonl.
    #[arg(long)]
    ledger: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The trial protocol.
    trial: PathBuf,
    /// Consent given: send the irreversible commands without asking.
    #[arg(long)]
    yes: bool,
    /// Where run folders go.
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// The lab-wide dose ledger. Default: $LAB_LEDGER, else the protocol's lab.ledger, else
    /// $XDG_STATE_HOME/lab/ledger.jsonl, else ~/.local/state/lab/ledger.jsonl (an in-process
    /// simulated lab keeps its ledger in its run folder).
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// Serve the live web view of the run at ADDR (host:port, or a port on loopback).
    #[arg(long, value_name = "ADDR")]
    watch: Option<String>,
}

#[derive(Args, Debug)]
#[command(after_help = observe_help())]
pub struct ObserveArgs {
    /// The run folder (the one holding journal.jsonl).
    run_dir: PathBuf,
    /// The device observed (one of the run's devices); without it, the observation is about
    /// the whole run.
    #[arg(long)]
    udid: Option<String>,
    /// What was seen, in words: it becomes the observation's value (and an adverse event's
    /// detail).
    #[arg(long)]
    note: String,
    /// What kind of observation (see the list below).
    #[arg(long, default_value = "note")]
    kind: String,
    /// What was observed, as a short term: for an `adverse_event`, its term in
    /// adverse_events.csv (`device unusable` is graded severe and counts for the stop rule).
    /// Default: the kind.
    #[arg(long)]
    key: Option<String>,
}

/// The kinds an operator records, with what reads them (docs/reports.md).
pub const OBSERVE_KINDS: &[(&str, &str)] = &[
    (
        "note",
        "free text; observations.csv and the report's timeline",
    ),
    (
        "adverse_event",
        "a harm: a row of adverse_events.csv with --key as its term; `device unusable` is \
         graded severe and counts for the protocol's stop rule",
    ),
    (
        "unenrolled",
        "the device left MDM management: a serious adverse event",
    ),
    (
        "install_scheduled",
        "the device shows an install scheduled for later: read by the install-later detector",
    ),
];

fn observe_help() -> String {
    let mut s = String::from("Kinds:\n");
    for (k, what) in OBSERVE_KINDS {
        s.push_str(&format!("  {k:<18} {what}\n"));
    }
    s.push_str(
        "\nExample:\n  lab observe results/rehearsal-12-20261203T100000Z --udid 00008110-000A1B2C3D4E5F60 \\\n      \
         --kind adverse_event --key 'device unusable' --note 'black screen after the download'",
    );
    s
}

/// An observation the journal may take: a known kind, and a device of this run. Pure, so the
/// refusals are unit-tested.
fn check_observation(kind: &str, udid: Option<&str>, devices: &[String]) -> Result<(), String> {
    if !OBSERVE_KINDS.iter().any(|(k, _)| *k == kind) {
        let known: Vec<&str> = OBSERVE_KINDS.iter().map(|(k, _)| *k).collect();
        return Err(format!(
            "--kind {kind}: not a kind lab reads; one of: {}",
            known.join(", ")
        ));
    }
    if let Some(u) = udid
        && !devices.iter().any(|d| d == u)
    {
        let listed = if devices.is_empty() {
            "this run has discovered no device yet".to_string()
        } else {
            format!("its devices: {}", devices.join(", "))
        };
        return Err(format!("--udid {u}: not a device of this run ({listed})"));
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    run_dir: PathBuf,
}

/// Load and check a protocol; for a simulated lab, read its fleet file too, so a malformed fleet
/// is refused with its own file, line and column before the lab starts or any run folder exists.
fn load(path: &Path) -> Result<protocol::LoadedProtocol, CliError> {
    let p = protocol::load(path)?;
    if let Some(sim) = &p.protocol.lab.simulated {
        crate::sim::fleet::load(&p.resolve(&sim.fleet))?;
    }
    Ok(p)
}

/// The ledger: `--ledger`, else the lab-wide default (`trial::ledger::default_path`).
fn ledger_path(cli: Option<PathBuf>, p: &protocol::LoadedProtocol) -> Result<PathBuf, CliError> {
    if let Some(l) = cli {
        return Ok(l);
    }
    let env = |k: &str| std::env::var(k).ok();
    crate::trial::ledger::default_path(
        env("LAB_LEDGER").as_deref(),
        p.protocol.lab.ledger.as_ref().map(|l| p.resolve(l)),
        env("XDG_STATE_HOME").as_deref(),
        env("HOME").as_deref(),
    )
    .ok_or_else(|| {
        CliError::BadArgument(
            "no place for the lab-wide dose ledger: give --ledger FILE or set LAB_LEDGER (HOME is not set)".into(),
        )
    })
}

/// A run error as the exit code says: bad input, and an MDM refusing `lab` (a wrong API key,
/// webhooks signed with another key: configuration to fix, issue 17), exit 2; the rest 1.
fn run_error(e: RunError) -> CliError {
    match e {
        RunError::BadInput(m) => CliError::BadArgument(m),
        RunError::Input(e) => CliError::BadArgument(e.to_string()),
        RunError::MdmRefused(r) => CliError::BadArgument(r.to_string()),
        other => CliError::Failed(other.to_string()),
    }
}

pub async fn qualify(a: QualifyArgs) -> Result<u8, CliError> {
    let p = load(&a.trial)?;
    let ledger = ledger_path(a.ledger.clone(), &p)?;
    let lab = super::lab_connection::connect(&p)
        .await
        .map_err(run_error)?;
    let entries = runner::qualify(&p, &ledger, lab.connection)
        .await
        .map_err(run_error)?;
    drop(lab.sim);
    // The facts the outcome module gathers: one device per assessment, in the order the
    // qualification recorded them (discovery order), with the probe of its baseline.
    let verdicts: Vec<serde_json::Value> = crate::journal::fold::run_facts(&entries)
        .devices
        .iter()
        .filter(|d| d.assessed)
        .map(|d| {
            serde_json::json!({
                "udid": d.udid,
                "eligible": d.eligible,
                "reasons": d.reasons,
                "target": d.target,
                "baseline": d.probe.as_ref().map(|p| p.value()),
            })
        })
        .collect();
    if a.json {
        print_json(&serde_json::json!({
            "trial_id": p.protocol.id,
            "protocol_sha256": p.sha256,
            "devices": verdicts,
        }));
    } else {
        let rows: Vec<Vec<String>> = verdicts
            .iter()
            .map(|v| {
                let b = &v["baseline"]["baseline"];
                vec![
                    v["udid"].as_str().unwrap_or("?").to_string(),
                    b["device_name"]["value"]
                        .as_str()
                        .unwrap_or("?")
                        .to_string(),
                    b["product_version"]["value"]
                        .as_str()
                        .unwrap_or("?")
                        .to_string(),
                    if v["eligible"] == true {
                        "eligible".into()
                    } else {
                        "EXCLUDED".into()
                    },
                    v["reasons"]
                        .as_array()
                        .map(|r| {
                            r.iter()
                                .map(|x| x["message"].as_str().unwrap_or("").to_string())
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                        .unwrap_or_default(),
                ]
            })
            .collect();
        print!(
            "{}",
            table::render(&["UDID", "NAME", "iOS", "VERDICT", "REASONS"], &rows)
        );
    }
    Ok(0)
}

pub async fn run(a: RunArgs) -> Result<u8, CliError> {
    let p = load(&a.trial)?;
    let opts = RunOptions {
        yes: a.yes,
        ledger: if p.protocol.lab.simulated.is_some() {
            // Unused: the in-process lab's ledger is in its run folder.
            a.ledger.clone().unwrap_or_default()
        } else {
            ledger_path(a.ledger.clone(), &p)?
        },
        results_dir: a.results.clone(),
        interactive: runner::stdin_is_tty(),
        pauses: test_pauses_from_env(),
        reports_written: crate::report::all_written,
        progress: super::watch::progress(a.watch.as_deref()).await?,
    };
    let lab = super::lab_connection::connect(&p)
        .await
        .map_err(run_error)?;
    let summary = runner::run(&p, &opts, lab.connection)
        .await
        .map_err(|e| match e {
            RunError::MdmRefused(r) => CliError::BadArgument(format!(
                "{r}\nlab run: stopped, the journal flushed; once that is fixed, rerun the same command to resume"
            )),
            other => run_error(other),
        })?;
    // The reports are written under the run lock the runner hands back (a concurrent `lab
    // report` or rerun waits); a kill while they are written leaves `run_finished` without
    // every report, and the rerun writes them (`RunOptions::reports_written`).
    let reports = crate::report::write_all(&summary.run_dir)
        .map_err(|e| run_error(RunError::Report(e.to_string())))?;
    drop(summary.run_lock);
    drop(lab.sim);
    // The end-of-run summary (nextest's and hyperfine's style): report.html first, then what
    // became of each arm, exclusions, anomalies with their drafts, deviations.
    let report_html = summary.run_dir.join(crate::report::HTML_REPORT);
    match std::fs::read_to_string(summary.run_dir.join(crate::report::summary::FILE)) {
        Ok(text) => print!(
            "\n{}",
            text.replacen(
                "  report: report.html",
                &format!("  report: {}", report_html.display()),
                1
            )
        ),
        Err(_) => {
            for r in &reports {
                println!("  {}", r.display());
            }
        }
    }
    println!("\nrun folder: {}", summary.run_dir.display());
    Ok(0)
}

/// The crash campaign's pauses (`tests/crash_campaign.rs`): `LAB_TEST_PAUSE_AFTER_INTENT_MS`,
/// `LAB_TEST_PAUSE_BEFORE_CONSENT_MS`, `LAB_TEST_PAUSE_BEFORE_REPORTS_MS`, each a number of
/// milliseconds (see [`TestPauses`]). Unset or not a number (as in every real run): no pause.
fn test_pauses_from_env() -> TestPauses {
    let ms = |var: &str| {
        std::time::Duration::from_millis(
            std::env::var(var)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0),
        )
    };
    TestPauses {
        after_intent: ms("LAB_TEST_PAUSE_AFTER_INTENT_MS"),
        before_consent: ms("LAB_TEST_PAUSE_BEFORE_CONSENT_MS"),
        before_reports: ms("LAB_TEST_PAUSE_BEFORE_REPORTS_MS"),
    }
}

pub async fn observe(a: ObserveArgs) -> Result<u8, CliError> {
    let path = a.run_dir.join("journal.jsonl");
    if !path.exists() {
        return Err(CliError::BadArgument(format!(
            "{}: no journal here (is it a run folder?)",
            a.run_dir.display()
        )));
    }
    let (mut j, loaded) = Journal::open(&path).map_err(|e| CliError::Failed(e.to_string()))?;
    let fold = crate::journal::fold::Fold::of(&loaded.entries);
    check_observation(&a.kind, a.udid.as_deref(), &fold.order).map_err(CliError::BadArgument)?;
    let e = j
        .append(Event::Observation {
            udid: a.udid.clone(),
            source: ObservationSource::Operator,
            kind: a.kind.clone(),
            key: a.key.clone().unwrap_or_else(|| a.kind.clone()),
            value: a.note.clone(),
        })
        .map_err(|e| CliError::Failed(e.to_string()))?;
    println!("recorded as journal event {}", e.seq);
    Ok(0)
}

pub async fn report(a: ReportArgs) -> Result<u8, CliError> {
    if !a.run_dir.join("journal.jsonl").exists() {
        return Err(CliError::BadArgument(format!(
            "{}: no journal.jsonl (is it a run folder?)",
            a.run_dir.display()
        )));
    }
    if !journal_has_a_start(&a.run_dir.join("journal.jsonl")) {
        return Err(CliError::BadArgument(format!(
            "{}: the journal has no run_started event (empty, or cut before its first line): nothing to report; run the protocol again",
            a.run_dir.join("journal.jsonl").display()
        )));
    }
    // Not while a `lab run` (or another `lab report`) holds the run: both write these files.
    let _lock = crate::trial::run_lock::RunLock::acquire(
        &a.run_dir,
        &crate::trial::run_lock::Holder::me("lab report"),
    )
    .map_err(|e| CliError::Failed(e.to_string()))?;
    let written =
        crate::report::write_all(&a.run_dir).map_err(|e| CliError::Failed(e.to_string()))?;
    for w in written {
        println!("{}", w.display());
    }
    Ok(0)
}

/// Whether a journal's first line is a complete `run_started` event (every run writes it first):
/// read the first line only, so a large journal costs nothing more.
fn journal_has_a_start(path: &std::path::Path) -> bool {
    use std::io::{BufRead, Read};
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let mut line = Vec::new();
    // A run_started line is well under 4 KiB.
    let mut r = std::io::BufReader::new(f).take(64 * 1024);
    if r.read_until(b'\n', &mut line).is_err() || line.last() != Some(&b'\n') {
        return false;
    }
    serde_json::from_slice::<crate::journal::Entry>(&line)
        .is_ok_and(|e| matches!(e.event, crate::journal::Event::RunStarted { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_without_its_start_is_told_from_one_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        std::fs::write(&p, b"").unwrap();
        assert!(!journal_has_a_start(&p));
        std::fs::write(
            &p,
            b"{\"seq\":1,\"at\":\"2026-12-03T10:00:00Z\",\"event\":\"run_st",
        )
        .unwrap();
        assert!(!journal_has_a_start(&p), "a torn first line");
        std::fs::write(&p, b"{\"seq\":1,\"at\":\"2026-12-03T10:00:00Z\",\"event\":\"run_started\",\"schema\":1,\"trial_id\":\"t\",\"protocol_sha256\":\"s\",\"lab_version\":\"0\"}\n").unwrap();
        assert!(journal_has_a_start(&p));
        assert!(!journal_has_a_start(&dir.path().join("absent")));
    }

    fn devs() -> Vec<String> {
        vec!["00008110-000A".into(), "00008110-000B".into()]
    }

    #[test]
    fn a_known_kind_about_a_device_of_the_run_is_taken() {
        assert_eq!(check_observation("note", None, &devs()), Ok(()));
        assert_eq!(
            check_observation("adverse_event", Some("00008110-000B"), &devs()),
            Ok(())
        );
    }

    #[test]
    fn a_misspelt_kind_is_refused_with_the_kinds_listed() {
        let e = check_observation("adverse-event", None, &devs()).unwrap_err();
        assert!(e.contains("--kind adverse-event"), "{e}");
        assert!(e.contains("adverse_event, unenrolled"), "{e}");
    }

    #[test]
    fn an_unknown_udid_is_refused_with_the_run_devices_listed() {
        let e = check_observation("note", Some("00008110-000C"), &devs()).unwrap_err();
        assert!(e.contains("not a device of this run"), "{e}");
        assert!(e.contains("00008110-000A, 00008110-000B"), "{e}");
        let e = check_observation("note", Some("x"), &[]).unwrap_err();
        assert!(e.contains("no device yet"), "{e}");
    }
}
