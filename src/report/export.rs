//! Reports as projections behind one trait (hyperfine's `export` module is the model): the
//! journal is read once into a [`RunView`], and each [`Exporter`] turns that view into its
//! file(s). `report::write_all` walks [`EXPORTERS`](super::exporters::EXPORTERS) and hands each
//! one the same [`Files`], which writes every file atomically; tests hand them an in-memory
//! [`Files`] instead.

use super::ReportError;
use super::digest::Digest;
use super::html::AnomalyLink;
use crate::journal::Entry;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Everything a report reads, computed once per report from the journal: the run and device
/// facts, the judged outcomes, the detectors' findings (`digest`), the adverse events, the
/// anomalies as links to their drafts, and the run folder's frozen protocol.
pub(crate) struct RunView<'a> {
    pub digest: Digest,
    /// `adverse_events.csv` (the HTML report shows it too).
    pub adverse_events: String,
    /// The anomalies found, in the order the HTML report lists them.
    pub anomalies: Vec<AnomalyLink>,
    /// The text of the run folder's `protocol.yaml`, when it is readable (radar steps).
    pub protocol_yaml: Option<String>,
    /// The journal's entries when the view was made from entries in memory; `None` when it was
    /// streamed from a file (raw plists are then read again by offset, `observations.csv` was
    /// written during the read).
    pub entries: Option<&'a [Entry]>,
}

impl<'a> RunView<'a> {
    /// The view of a journal read from its file.
    pub fn of_digest(digest: Digest, protocol_yaml: Option<String>) -> RunView<'static> {
        RunView::new(digest, protocol_yaml, None)
    }

    /// The view of entries in memory (the pure `render(&[Entry])` projections).
    pub fn of_entries(entries: &'a [Entry], protocol_yaml: Option<String>) -> RunView<'a> {
        RunView::new(Digest::of_entries(entries), protocol_yaml, Some(entries))
    }

    fn new(
        digest: Digest,
        protocol_yaml: Option<String>,
        entries: Option<&'a [Entry]>,
    ) -> RunView<'a> {
        let adverse_events = super::adverse_events::render_of(&digest.run, &digest.outcomes);
        let anomalies = super::links(digest.findings.anomalies());
        RunView {
            digest,
            adverse_events,
            anomalies,
            protocol_yaml,
            entries,
        }
    }
}

/// Writes a file's bytes.
pub(crate) type Body<'b> = &'b mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>;

/// Where exporters put their files; paths are relative to the run folder.
pub(crate) trait Files {
    /// A file, its bytes written by `body`.
    fn file(&mut self, rel: &Path, body: Body) -> Result<(), ReportError>;
    /// A file already written while the journal was read (`observations.csv`: one row per
    /// value of every answer, too many to keep until the end of the read).
    fn streamed(&mut self, rel: &Path) -> Result<(), ReportError>;
    /// Remove the folder `rel` and what is in it: an exporter that owns a folder writes it
    /// anew, so nothing stale survives.
    fn fresh_dir(&mut self, rel: &Path) -> Result<(), ReportError>;
}

/// One report format: the files it makes of a run.
pub(crate) trait Exporter: Sync {
    /// Put this format's files into `out`, in a stable order.
    fn export(&self, view: &RunView, out: &mut dyn Files) -> Result<(), ReportError>;

    /// Whether `report::write_all` makes this report on another thread while it writes the
    /// others (into [`Recorded`], done in the run folder when its turn comes): for a report
    /// made whole in memory anyway, and long enough to make, as the radar drafts.
    fn apart(&self) -> bool {
        false
    }
}

/// What an exporter asked of the run folder, in order, to be done there later.
#[derive(Default)]
pub(crate) struct Recorded {
    ops: Vec<Op>,
}

enum Op {
    FreshDir(PathBuf),
    File(PathBuf, Vec<u8>),
}

impl Recorded {
    /// Do in `out` what was recorded, in the same order.
    pub fn replay(self, out: &mut dyn Files) -> Result<(), ReportError> {
        for op in self.ops {
            match op {
                Op::FreshDir(rel) => out.fresh_dir(&rel)?,
                Op::File(rel, bytes) => out.file(&rel, &mut |w| w.write_all(&bytes))?,
            }
        }
        Ok(())
    }
}

impl Files for Recorded {
    fn file(&mut self, rel: &Path, body: Body) -> Result<(), ReportError> {
        let mut bytes = Vec::new();
        body(&mut bytes).map_err(|source| ReportError::Io {
            path: rel.to_path_buf(),
            source,
        })?;
        self.ops.push(Op::File(rel.to_path_buf(), bytes));
        Ok(())
    }

    fn streamed(&mut self, rel: &Path) -> Result<(), ReportError> {
        Err(ReportError::Io {
            path: rel.to_path_buf(),
            source: std::io::Error::other("a report made apart has no streamed file"),
        })
    }

    fn fresh_dir(&mut self, rel: &Path) -> Result<(), ReportError> {
        self.ops.push(Op::FreshDir(rel.to_path_buf()));
        Ok(())
    }
}

/// Files collected in memory, in order: what the exporters make of entries in memory.
#[derive(Default)]
pub(crate) struct InMemory {
    pub files: Vec<(PathBuf, Vec<u8>)>,
}

impl Files for InMemory {
    fn file(&mut self, rel: &Path, body: Body) -> Result<(), ReportError> {
        let mut bytes = Vec::new();
        body(&mut bytes).map_err(|source| ReportError::Io {
            path: rel.to_path_buf(),
            source,
        })?;
        self.files.push((rel.to_path_buf(), bytes));
        Ok(())
    }

    fn streamed(&mut self, rel: &Path) -> Result<(), ReportError> {
        Err(ReportError::Io {
            path: rel.to_path_buf(),
            source: std::io::Error::other("a view in memory has no streamed file"),
        })
    }

    fn fresh_dir(&mut self, rel: &Path) -> Result<(), ReportError> {
        self.files.retain(|(p, _)| !p.starts_with(rel));
        Ok(())
    }
}
