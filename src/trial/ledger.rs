//! The lab-wide dose ledger: which device, at which starting build, was (or may have been) sent
//! an irreversible command, by which trial and run. File-locked while read and written.
//!
//! It guards devices, not results folders, so its place does not depend on `--results` (see
//! [`default_path`]): `--ledger FILE`, else `$LAB_LEDGER`, else the protocol's `lab.ledger`,
//! else `$XDG_STATE_HOME/lab/ledger.jsonl`, else `~/.local/state/lab/ledger.jsonl`. An
//! in-process simulated lab keeps its own in its run folder (its devices exist only for that
//! run). Deciding a dose happens under [`Ledger::dose_lock`], one lock for the whole lab.
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

    /// The lab-wide dose lock (`LEDGER.lock`, next to the ledger): held while a run reads the
    /// ledger, its journal and the MDM's records, decides which devices to dose and makes the
    /// intents durable; released before the commands go to the MDM. Two runs — of one protocol
    /// or of two — can never decide on the same device at once. (A file of its own: the ledger
    /// file's lock is taken for each read and append made under it.)
    pub async fn dose_lock(&self) -> Result<super::run_lock::ShortLock, LedgerError> {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        super::run_lock::ShortLock::acquire(&path)
            .await
            .map_err(|e| LedgerError::Io {
                path: path.clone(),
                source: match e {
                    super::run_lock::LockError::Io { source, .. } => source,
                    other => std::io::Error::other(other.to_string()),
                },
            })
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

/// Where the lab-wide ledger is when `--ledger` is not given: `$LAB_LEDGER` (non-empty), else
/// the protocol's `lab.ledger` (already resolved against the protocol file), else
/// `$XDG_STATE_HOME/lab/ledger.jsonl` (absolute), else `$HOME/.local/state/lab/ledger.jsonl`
/// (the XDG default). `None` when none is known (no `$HOME`). Pure: the caller passes the
/// environment.
pub fn default_path(
    env_ledger: Option<&str>,
    protocol_key: Option<PathBuf>,
    xdg_state_home: Option<&str>,
    home: Option<&str>,
) -> Option<PathBuf> {
    let set = |v: Option<&str>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    set(env_ledger)
        .or(protocol_key)
        .or_else(|| {
            set(xdg_state_home)
                .filter(|p| p.is_absolute())
                .map(|p| p.join("lab/ledger.jsonl"))
        })
        .or_else(|| set(home).map(|h| h.join(".local/state/lab/ledger.jsonl")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_ledger_is_lab_wide_with_env_then_protocol_then_state_dir() {
        let key = Some(PathBuf::from("/bench/ledger.jsonl"));
        assert_eq!(
            default_path(Some("/x/l.jsonl"), key.clone(), Some("/s"), Some("/h")),
            Some(PathBuf::from("/x/l.jsonl"))
        );
        assert_eq!(
            default_path(Some(""), key.clone(), Some("/s"), Some("/h")),
            key
        );
        assert_eq!(
            default_path(None, None, Some("/s"), Some("/h")),
            Some(PathBuf::from("/s/lab/ledger.jsonl"))
        );
        // A relative XDG_STATE_HOME is invalid (XDG spec): ignored.
        assert_eq!(
            default_path(None, None, Some("rel"), Some("/h")),
            Some(PathBuf::from("/h/.local/state/lab/ledger.jsonl"))
        );
        assert_eq!(default_path(None, None, None, None), None);
    }

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
