//! Reports: projections of the run journal, and nothing else.
//!
//! The journal is read once per report into a [`RunView`](export::RunView) (the digest: run and
//! device facts, judged outcomes, the detectors' findings, header facts and lanes; plus the
//! adverse events and the anomalies as links). Each format is an [`Exporter`](export::Exporter)
//! (`exporters`: devices, observations, flow, adverse events, radar drafts, HTML) that turns the
//! view into its file(s); [`write_all`] walks them into the run folder atomically,
//! [`render_all`] into memory. No I/O besides that, no clock: `lab report RUN_DIR` regenerates
//! every file byte for byte. Formatting helpers (CSV, cells, times, escaping) are in `format`.
//!
//! CSV files are RFC 4180 (CRLF line ends, quoted where needed), header row first, rows in a
//! stable order, floats with fixed precision. Every column is documented in `docs/reports.md`.
//! `report.html` (`html::render`) is the same journal for people: header, CONSORT diagram,
//! baseline, device timelines, outcomes, anomalies. Each CSV also has a pure
//! `render(&[Entry]) -> String` ([`CSV_REPORTS`]).

pub mod adverse_events;
pub mod crf;
mod decoded;
pub mod devices;
mod digest;
mod export;
mod exporters;
pub mod feedback;
pub mod flow;
pub(crate) mod format;
mod head;
pub mod html;
mod lanes;
pub mod observations;
pub mod radar;
pub mod summary;

use crate::journal::{Entry, JournalError};
use export::{Files, RunView};
/// The formatting helpers, at the paths the reports have always imported them from.
pub(crate) use format::{json_cell, opt, secs, seq_ref, seq_refs, to_csv};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A projection: the journal's entries to the file's text.
pub type Render = fn(&[Entry]) -> String;

/// The CSV projections: file name and renderer, in the order they are written.
pub const CSV_REPORTS: [(&str, Render); 5] = [
    ("devices.csv", devices::render),
    ("observations.csv", observations::render),
    ("flow.csv", flow::render),
    ("adverse_events.csv", adverse_events::render),
    ("crf.csv", crf::render),
];

/// The HTML report's file name (written after the CSV files).
pub const HTML_REPORT: &str = "report.html";

/// Are a run folder's reports all written? `report.html` is the last one [`write_all`] writes,
/// atomically, so its presence says the others are there too.
pub fn all_written(run_dir: &Path) -> bool {
    run_dir.join(HTML_REPORT).exists()
}

/// The anomalies of a run as links for the HTML report.
pub fn anomaly_links(entries: &[Entry]) -> Vec<html::AnomalyLink> {
    links(crate::verdicts::anomalies::detect(entries))
}

fn links(anomalies: Vec<crate::verdicts::anomalies::Anomaly>) -> Vec<html::AnomalyLink> {
    anomalies
        .into_iter()
        .map(|a| html::AnomalyLink {
            id: a.detector.to_string(),
            title: crate::verdicts::anomalies::detector(a.detector)
                .map(|d| d.title.to_string())
                .unwrap_or_else(|| a.detector.to_string()),
            udid: Some(a.udid),
        })
        .collect()
}

/// Every report of entries in memory, as [`write_all`] would write them next to a journal of
/// those entries (with `protocol_yaml` as its frozen protocol): (path relative to the run
/// folder, bytes), in the order written.
pub fn render_all(entries: &[Entry], protocol_yaml: Option<&str>) -> Vec<(PathBuf, Vec<u8>)> {
    let view = RunView::of_entries(entries, protocol_yaml.map(str::to_string));
    let mut files = export::InMemory::default();
    for exporter in exporters::EXPORTERS {
        exporter
            .export(&view, &mut files)
            .expect("entries in memory are read and written to memory");
    }
    files.files
}

/// Read `run_dir/journal.jsonl` (a torn last line is ignored) and write every report next to
/// it ([`exporters::EXPORTERS`], in order), each through a temporary file and a rename so no
/// report is ever half-written: the CSV projections, then the radar drafts (`radar/`, removed
/// and written anew each time, absent when no detector fired; their steps come from the run
/// folder's frozen `protocol.yaml`), then `report.html`.
///
/// The journal is read once, as a stream (see `digest`), into the [`RunView`] every exporter
/// reads: `observations.csv` is written while it is read, the other reports from the view (the
/// radar drafts on another thread, while `report.html` is written; files are renamed into place
/// in the exporters' order all the same).
pub fn write_all(run_dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let journal_path = run_dir.join("journal.jsonl");
    let obs_path = run_dir.join("observations.csv");
    let obs_tmp = tmp_path(&obs_path);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    let mut obs = create_private(&obs_tmp).map_err(io(&obs_tmp))?;
    let digest = match digest::Digest::read(&journal_path, &mut obs) {
        Ok(d) => d,
        Err(e) => {
            drop(obs);
            let _ = std::fs::remove_file(&obs_tmp);
            return Err(e);
        }
    };
    let protocol = std::fs::read_to_string(run_dir.join("protocol.yaml")).ok();
    let view = RunView::of_digest(digest, protocol);
    // observations.csv is complete and by far the largest report: its bytes go to disk while
    // the other reports are made, so the one sync at the end has little left to wait for.
    let early = obs.try_clone().map_err(io(&obs_tmp))?;
    let mut files = RunFolder {
        dir: run_dir,
        batch: Batch::default(),
        streamed: Some((obs, obs_tmp.clone(), obs_path)),
    };
    let view = &view;
    std::thread::scope(|scope| {
        let synced = scope.spawn(move || early.sync_data());
        let mut apart = Vec::new();
        for (i, &exporter) in exporters::EXPORTERS.iter().enumerate() {
            files.batch.order = i;
            if exporter.apart() {
                apart.push((
                    i,
                    scope.spawn(move || {
                        let mut r = export::Recorded::default();
                        exporter.export(view, &mut r).map(|()| r)
                    }),
                ));
            } else {
                exporter.export(view, &mut files)?;
            }
        }
        for (i, made) in apart {
            files.batch.order = i;
            made.join()
                .expect("an exporter does not panic")?
                .replay(&mut files)?;
        }
        let synced = synced.join().expect("a file sync does not panic");
        synced.map_err(io(&obs_tmp))?;
        files.batch.commit(run_dir)
    })
}

/// The run folder as exporters write to it: each file under a temporary name, renamed into
/// place once every report is written and on disk ([`Batch`]).
struct RunFolder<'d> {
    dir: &'d Path,
    batch: Batch,
    /// The file written while the journal was read: (file, temporary path, final path).
    streamed: Option<(std::fs::File, PathBuf, PathBuf)>,
}

impl Files for RunFolder<'_> {
    fn file(&mut self, rel: &Path, body: export::Body) -> Result<(), ReportError> {
        let path = self.dir.join(rel);
        if let Some(parent) = path.parent() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|source| ReportError::Io {
                    path: parent.to_path_buf(),
                    source,
                })?;
        }
        self.batch.write(&path, body)
    }

    fn streamed(&mut self, rel: &Path) -> Result<(), ReportError> {
        let path = self.dir.join(rel);
        match self.streamed.take() {
            Some((f, tmp, final_path)) if final_path == path => {
                self.batch.adopt(f, tmp, final_path);
                Ok(())
            }
            other => {
                self.streamed = other;
                Err(ReportError::Io {
                    path,
                    source: std::io::Error::other("no such file was written while reading"),
                })
            }
        }
    }

    fn fresh_dir(&mut self, rel: &Path) -> Result<(), ReportError> {
        let dir = self.dir.join(rel);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|source| ReportError::Io { path: dir, source })?;
        }
        Ok(())
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("report");
    path.with_file_name(format!(".{name}.tmp"))
}

/// Reports written under temporary names, made durable, then renamed into place, in order.
/// A run's reports can be a thousand radar attachments: one filesystem sync for all of them
/// (`syncfs`, on Linux) instead of a disk flush per file, with the same guarantee that no file
/// is renamed into place before its bytes are on disk.
#[derive(Default)]
struct Batch {
    /// (exporter, temporary path, final path), in the order they were written.
    files: Vec<(usize, PathBuf, PathBuf)>,
    /// The exporter (its place in `EXPORTERS`) whose files are being written: files are
    /// renamed in the exporters' order, whatever order they were written in.
    order: usize,
}

impl Batch {
    fn write(&mut self, path: &Path, write: export::Body) -> Result<(), ReportError> {
        let io = |source| ReportError::Io {
            path: path.to_path_buf(),
            source,
        };
        let tmp = tmp_path(path);
        let f = create_private(&tmp).map_err(io)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 16, f);
        write(&mut w).map_err(io)?;
        let f = w.into_inner().map_err(|e| io(e.into_error()))?;
        self.adopt(f, tmp, path.to_path_buf());
        Ok(())
    }

    /// A report already written to `tmp` through `f`.
    fn adopt(&mut self, f: std::fs::File, tmp: PathBuf, path: PathBuf) {
        #[cfg(not(target_os = "linux"))]
        let _ = f.sync_all();
        drop(f);
        self.files.push((self.order, tmp, path));
    }

    /// Make every file durable, then rename them into place; the final paths, in order.
    fn commit(mut self, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ReportError::Io { path, source }
        };
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let d = std::fs::File::open(dir).map_err(io(dir))?;
            // SAFETY: syncfs only reads the descriptor, which `d` keeps open.
            if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
                return Err(io(dir)(std::io::Error::last_os_error()));
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = dir;
        self.files.sort_by_key(|f| f.0);
        let mut written = Vec::with_capacity(self.files.len());
        for (_, tmp, path) in self.files {
            std::fs::rename(&tmp, &path).map_err(io(&path))?;
            written.push(path);
        }
        Ok(written)
    }
}

pub(crate) use crate::private_fs::create_private;
pub use crate::private_fs::write_private;

#[cfg(test)]
pub(crate) mod tests_util {
    /// Parse CSV text back: (header, rows).
    pub fn parse(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
        let mut r = csv::ReaderBuilder::new().from_reader(text.as_bytes());
        let header = r.headers().unwrap().iter().map(str::to_string).collect();
        let rows = r
            .records()
            .map(|x| x.unwrap().iter().map(str::to_string).collect())
            .collect();
        (header, rows)
    }

    /// The cell of `row` under column `col`.
    pub fn cell<'a>(header: &[String], row: &'a [String], col: &str) -> &'a str {
        let i = header
            .iter()
            .position(|h| h == col)
            .unwrap_or_else(|| panic!("no column {col}"));
        &row[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdicts::outcome::testkit::J;
    use plist::Value;

    fn journal_text(j: &J) -> String {
        j.entries
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect()
    }

    fn sample() -> J {
        let mut j = J::new();
        j.device("U1", true)
            .device("U2", false)
            .allocate("U1", "a")
            .consent(&["U1"])
            .dose("U1", 1, "C1")
            .schedule_answer("U1", "C1", "Acknowledged")
            .status("U1", "S1", 1.0, Value::Integer(1.into()))
            .reprobe("U1", false, None)
            .reprobe("U1", true, Some("19H390"))
            .ended("U1", "updated");
        j.push(crate::journal::Event::RunFinished);
        j
    }

    #[test]
    fn write_all_is_byte_identical_and_tolerates_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let j = sample();
        let mut text = journal_text(&j);
        text.push_str("{\"seq\":99,\"at\":\"x\",\"event\":\"run_fin");
        std::fs::write(dir.path().join("journal.jsonl"), text).unwrap();
        let paths = write_all(dir.path()).unwrap();
        // The CSVs, the dose answers crf.csv names, the radar drafts (the sample's
        // IsDownloaded is an integer), the summary, then the HTML.
        let crf = paths
            .iter()
            .filter(|p| p.starts_with(dir.path().join(crf::DIR)))
            .count();
        assert_eq!(crf, 1, "{paths:?}");
        let radar_from = CSV_REPORTS.len() + crf;
        assert!(paths.len() > radar_from + 2);
        assert!(
            paths[radar_from..paths.len() - 2]
                .iter()
                .all(|p| p.starts_with(dir.path().join("radar")))
        );
        assert!(paths[paths.len() - 2].ends_with(summary::FILE));
        assert!(paths.last().unwrap().ends_with(HTML_REPORT));
        let first: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
        let again = write_all(dir.path()).unwrap();
        let second: Vec<Vec<u8>> = again.iter().map(|p| std::fs::read(p).unwrap()).collect();
        assert_eq!(first, second);
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        // Each file is the pure render of the journal.
        for ((name, render), bytes) in CSV_REPORTS.iter().zip(&first) {
            assert_eq!(render(&j.entries).as_bytes(), bytes.as_slice(), "{name}");
        }
        let drafts = radar::render(&j.entries, None);
        assert_eq!(drafts.len(), paths.len() - radar_from - 2);
        let run = crate::journal::fold::run_facts(&j.entries);
        let outcomes = crate::verdicts::outcome::judge_run(&run, &Default::default());
        let links = anomaly_links(&j.entries);
        assert_eq!(
            summary::render(&run, &outcomes, &links).as_bytes(),
            first[paths.len() - 2].as_slice(),
            "summary.txt"
        );
        for ((rel, bytes), got) in drafts.iter().zip(&first[radar_from..]) {
            assert_eq!(bytes, got, "{}", rel.display());
        }
        assert_eq!(
            html::render(&j.entries, &anomaly_links(&j.entries)).as_bytes(),
            first.last().unwrap().as_slice(),
            "report.html"
        );
        // A stale draft does not survive regeneration; no anomaly, no radar folder.
        std::fs::write(dir.path().join("radar/stale.md"), "x").unwrap();
        write_all(dir.path()).unwrap();
        assert!(!dir.path().join("radar/stale.md").exists());
        let mut clean = J::new();
        clean.device("U1", false);
        std::fs::write(dir.path().join("journal.jsonl"), journal_text(&clean)).unwrap();
        // The CSVs, the summary and report.html.
        assert_eq!(write_all(dir.path()).unwrap().len(), CSV_REPORTS.len() + 2);
        assert!(!dir.path().join("radar").exists());
    }

    /// A streamed read labels an answer with the commands seen so far; when a command is
    /// journalled after an answer to it, the reports must still be those of the whole journal.
    #[test]
    fn an_answer_journalled_before_its_command_reads_as_the_whole_journal_says() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = sample();
        j.result("U1", "S9", None, "Acknowledged", |d| {
            let mut item = plist::Dictionary::new();
            item.insert("IsDownloaded".into(), Value::Integer(1.into()));
            item.insert("Status".into(), "Downloading".into());
            d.insert(
                "OSUpdateStatus".into(),
                Value::Array(vec![Value::Dictionary(item)]),
            );
        });
        j.push(crate::journal::Event::CommandSent {
            udid: "U1".into(),
            command_uuid: "S9".into(),
            request_type: "OSUpdateStatus".into(),
        });
        std::fs::write(dir.path().join("journal.jsonl"), journal_text(&j)).unwrap();
        let paths = write_all(dir.path()).unwrap();
        let obs = std::fs::read_to_string(&paths[1]).unwrap();
        assert_eq!(obs, observations::render(&j.entries));
        assert!(obs.contains("OSUpdateStatus[0].IsDownloaded"), "{obs}");
        assert_eq!(
            std::fs::read_to_string(paths.last().unwrap()).unwrap(),
            html::render(&j.entries, &anomaly_links(&j.entries))
        );
        for ((name, render), path) in CSV_REPORTS.iter().zip(&paths) {
            assert_eq!(
                render(&j.entries),
                std::fs::read_to_string(path).unwrap(),
                "{name}"
            );
        }
    }

    /// The exporters over a view of entries in memory give the files a streamed read of the
    /// same journal writes, path for path and byte for byte.
    #[test]
    fn every_exporter_gives_in_memory_what_write_all_writes() {
        let dir = tempfile::tempdir().unwrap();
        let j = sample();
        std::fs::write(dir.path().join("journal.jsonl"), journal_text(&j)).unwrap();
        let written: Vec<(PathBuf, Vec<u8>)> = write_all(dir.path())
            .unwrap()
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p.strip_prefix(dir.path()).unwrap().to_path_buf(), bytes)
            })
            .collect();
        let in_memory = render_all(&j.entries, None);
        assert!(in_memory.len() > 5, "the sample has radar drafts");
        assert_eq!(written, in_memory);
    }

    #[test]
    fn a_corrupt_journal_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = journal_text(&sample());
        text.push_str("not json\n{\"seq\":99}\n");
        std::fs::write(dir.path().join("journal.jsonl"), text).unwrap();
        assert!(matches!(
            write_all(dir.path()),
            Err(ReportError::Journal(JournalError::Corrupt { .. }))
        ));
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["journal.jsonl".to_string()]);
    }

    #[test]
    fn every_csv_parses_with_exactly_the_documented_header() {
        let doc =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reports.md"))
                .unwrap();
        let j = sample();
        for (name, render) in CSV_REPORTS {
            let text = render(&j.entries);
            assert!(text.ends_with("\r\n"), "{name}");
            let (header, rows) = tests_util::parse(&text);
            assert!(rows.iter().all(|r| r.len() == header.len()), "{name}");
            let documented = documented_header(&doc, name);
            assert_eq!(
                header, documented,
                "{name}: header differs from docs/reports.md"
            );
            // Empty journal: the header (flow.csv still counts zeros).
            let (h, rows) = tests_util::parse(&render(&[]));
            assert_eq!(h, documented);
            assert!(rows.is_empty() || name == "flow.csv", "{name}");
        }
    }

    /// The column names of the table under `## name` in docs/reports.md (first cell of each
    /// row, in backticks).
    fn documented_header(doc: &str, name: &str) -> Vec<String> {
        let start = doc
            .find(&format!("## `{name}`"))
            .unwrap_or_else(|| panic!("docs/reports.md has no section for {name}"));
        let rest = &doc[start + 3..];
        let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
        section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cell = l.trim_start_matches("| `");
                cell[..cell.find('`').unwrap()].to_string()
            })
            .collect()
    }
}
