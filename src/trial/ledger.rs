//! The lab-wide dose ledger (`results/ledger.jsonl`): which device, at which starting build, was
//! (or may have been) sent an irreversible command, by which trial. File-locked while read and
//! written, so two runs on one bench cannot both dose a device.
//!
//! An *intent* is written and fsynced before the MDM call; the MDM's answer (`enqueued` /
//! `failed`) after. A device with an intent for its current build is never dosed again by another
//! protocol; its own protocol resumes instead of re-sending.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    Intent,
    Enqueued,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRecord {
    pub udid: String,
    pub starting_build: String,
    pub kind: LedgerKind,
    pub command_uuid: String,
    pub step: u32,
    pub trial_id: String,
    pub protocol_sha256: String,
    pub run_dir: String,
    pub at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("dose ledger {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct Ledger {
    path: PathBuf,
}

impl Ledger {
    pub fn new(path: &Path) -> Ledger {
        Ledger {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_locked(&self) -> Result<File, LedgerError> {
        let io = |source| LedgerError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let f = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(io)?;
        f.lock().map_err(io)?;
        Ok(f)
    }

    fn read_from(f: &File) -> Vec<LedgerRecord> {
        // Unparseable (torn) lines are skipped: a crash mid-append loses at most that record,
        // which the journal also holds.
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }

    /// Every record, read under the lock.
    pub fn records(&self) -> Result<Vec<LedgerRecord>, LedgerError> {
        let f = self.open_locked()?;
        let r = Self::read_from(&f);
        let _ = f.unlock();
        Ok(r)
    }

    /// Records for a device at a starting build.
    pub fn for_device(&self, udid: &str, build: &str) -> Result<Vec<LedgerRecord>, LedgerError> {
        Ok(self
            .records()?
            .into_iter()
            .filter(|r| r.udid == udid && r.starting_build == build)
            .collect())
    }

    /// Append a record durably, under the lock.
    pub fn append(&self, rec: &LedgerRecord) -> Result<(), LedgerError> {
        self.append_all(std::slice::from_ref(rec))
    }

    /// Append records durably with one fsync, under the lock (group commit: every intent of a
    /// batch is on disk before any of its commands is sent).
    pub fn append_all(&self, recs: &[LedgerRecord]) -> Result<(), LedgerError> {
        if recs.is_empty() {
            return Ok(());
        }
        let mut f = self.open_locked()?;
        let io = |source| LedgerError::Io {
            path: self.path.clone(),
            source,
        };
        let mut buf = Vec::new();
        for rec in recs {
            serde_json::to_writer(&mut buf, rec).expect("ledger records serialise");
            buf.push(b'\n');
        }
        f.write_all(&buf).map_err(io)?;
        f.sync_data().map_err(io)?;
        let _ = f.unlock();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(udid: &str, kind: LedgerKind) -> LedgerRecord {
        LedgerRecord {
            udid: udid.into(),
            starting_build: "21F90".into(),
            kind,
            command_uuid: "c".into(),
            step: 1,
            trial_id: "t".into(),
            protocol_sha256: "s".into(),
            run_dir: "r".into(),
            at: "now".into(),
        }
    }

    #[test]
    fn appends_and_filters_by_device_and_build() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::new(&dir.path().join("sub/ledger.jsonl"));
        l.append(&rec("A", LedgerKind::Intent)).unwrap();
        l.append(&rec("A", LedgerKind::Enqueued)).unwrap();
        l.append(&rec("B", LedgerKind::Intent)).unwrap();
        assert_eq!(l.for_device("A", "21F90").unwrap().len(), 2);
        assert!(l.for_device("A", "21G93").unwrap().is_empty());
        assert_eq!(l.records().unwrap().len(), 3);
        l.append_all(&[rec("C", LedgerKind::Intent), rec("C", LedgerKind::Enqueued)])
            .unwrap();
        assert_eq!(l.for_device("C", "21F90").unwrap().len(), 2);
        assert_eq!(l.records().unwrap().len(), 5);
    }
}
