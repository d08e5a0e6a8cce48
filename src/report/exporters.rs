//! One [`Exporter`] per report, in the order `report::write_all` writes them. Each is a thin
//! adapter: the projection itself lives in the report's module (`devices`, `observations`,
//! `flow`, `adverse_events`, `radar`, `html`).

use super::export::{Exporter, Files, RunView};
use super::{ReportError, crf, devices, flow, html, observations, radar, summary};
use std::path::Path;

/// Every report, in the order they are written: `report.html` last, so its presence says the
/// others are there too (`report::all_written`).
pub(crate) const EXPORTERS: [&dyn Exporter; 9] = [
    &Devices,
    &Observations,
    &Flow,
    &AdverseEvents,
    &Crf,
    &Radar,
    &DdmEvidence,
    &Summary,
    &Html,
];

/// `summary.txt`, the end-of-run summary `lab run` prints.
pub(crate) struct Summary;

impl Exporter for Summary {
    fn export(&self, view: &RunView, out: &mut dyn Files) -> Result<(), ReportError> {
        let d = &view.digest;
        let text = summary::render(&d.run, &d.outcomes, &view.anomalies);
        out.file(Path::new(summary::FILE), &mut |w| {
            w.write_all(text.as_bytes())
        })
    }
}

/// `devices.csv`.
pub(crate) struct Devices;

impl Exporter for Devices {
    fn export(&self, view: &RunView, out: &mut dyn Files) -> Result<(), ReportError> {
        let d = &view.digest;
        let text = devices::render_of(&d.run, &d.outcomes);
        out.file(Path::new("devices.csv"), &mut |w| {
            w.write_all(text.as_bytes())
        })
    }
}

/// `crf.csv`, the case report form, and the dose answers it names (`crf/`, written anew).
pub(crate) struct Crf;

impl Exporter for Crf {
    fn export(&self, view: &RunView, out: &mut dyn Files) -> Result<(), ReportError> {
        let d = &view.digest;
        let text = crf::render_of(&d.run, &d.outcomes);
        out.file(Path::new("crf.csv"), &mut |w| w.write_all(text.as_bytes()))?;
        out.fresh_dir(Path::new(crf::DIR))?;
        let files = crf::attachments(&d.run);
        let seqs = files.iter().map(|f| f.1).collect();
        let raw = d.raw.fetch(view.entries, &seqs, &Default::default())?;
        for (name, seq) in files {
            if let Some(bytes) = raw.answers.get(&seq) {
                out.file(&Path::new(crf::DIR).join(name), &mut |w| w.write_all(bytes))?;
            }
        }
        Ok(())
    }
}

/// `observations.csv`: written while a journal file is read; rendered here from entries in
/// memory.
pub(crate) struct Observations;

impl Exporter for Observations {
    fn export(&self, view: &RunView, out: &mut dyn Files) -> Result<(), ReportError> {
        let name = Path::new("observations.csv");
        match view.entries {
            None => out.streamed(name),
            Some(entries) => {
                let text = observations::render(entries);
                out.file(name, &mut |w| w.write_all(text.as_bytes()))
            }
        }
    }
}

/// `flow.csv`.
pub(crate) struct Flow;

impl Exporter for Flow {
    fn export(&self, view: &RunView, out: &mut dyn Files) -> Result<(), ReportError> {
        let d = &view.digest;
        let text = flow::render_flow(&flow::counts_of(&d.run, &d.outcomes));
        out.file(Path::new("flow.csv"), &mut |w| w.write_all(text.as_bytes()))
    }
}

/// `adverse_events.csv` (`adverse_events::render_of`, computed once in the view: the HTML
/// report shows it too).
pub(crate) struct AdverseEvents;

impl Exporter for AdverseEvents {
    fn export(&self, view: &RunView, out: &mut dyn Files) -> Result<(), ReportError> {
        out.file(Path::new("adverse_events.csv"), &mut |w| {
            w.write_all(view.adverse_events.as_bytes())
        })
    }
}

/// `radar/`: the drafts and their attachments, the folder written anew each time (absent when
/// no detector fired).
pub(crate) struct Radar;

impl Exporter for Radar {
    fn export(&self, view: &RunView, out: &mut dyn Files) -> Result<(), ReportError> {
        let drafts =
            radar::render_digest(&view.digest, view.protocol_yaml.as_deref(), view.entries)?;
        out.fresh_dir(Path::new(radar::DIR))?;
        out.fresh_dir(Path::new(super::feedback::DIR))?;
        for (rel, bytes) in drafts {
            out.file(&rel, &mut |w| w.write_all(&bytes))?;
        }
        Ok(())
    }

    /// The drafts are made in memory, while `report.html` is written.
    fn apart(&self) -> bool {
        true
    }
}

/// `ddm/`: every DDM declaration as sent and every status report as received, byte for byte
/// (the folder written anew; absent without DDM doses).
pub(crate) struct DdmEvidence;

impl Exporter for DdmEvidence {
    fn export(&self, view: &RunView, out: &mut dyn Files) -> Result<(), ReportError> {
        out.fresh_dir(Path::new(super::digest::DDM_DIR))?;
        for (rel, bytes) in &view.digest.ddm_files {
            out.file(rel, &mut |w| w.write_all(bytes))?;
        }
        Ok(())
    }
}

/// `report.html`, written piece by piece (a long run's report is larger than it is worth
/// holding).
pub(crate) struct Html;

impl Exporter for Html {
    fn export(&self, view: &RunView, out: &mut dyn Files) -> Result<(), ReportError> {
        out.file(Path::new(super::HTML_REPORT), &mut |w| {
            html::render_to(view, w)
        })
    }
}
