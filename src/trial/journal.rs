//! The run journal: every fact of a trial, in order, one JSON object per line.
//!
//! [`Event`] is the vocabulary: the runner writes it, and the terminal progress view, every
//! report and the resume logic only read it. Each event is appended and `fsync`ed before the
//! harness acts on it ("nothing lost"); a torn last line (a crash mid-write) is tolerated on read
//! and reported. The schema is versioned in the first event.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Bumped whenever an event changes shape incompatibly.
pub const SCHEMA_VERSION: u32 = 1;

/// A reason a device is excluded, with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// Stable rule id (`supervised`, `min_ios`, `known_bad_version`, `free_disk`, …).
    pub rule: String,
    /// One sentence for the operator.
    pub message: String,
    /// The values the rule looked at (e.g. `{"free": 3.2e9, "needed": 4.1e9}`).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub values: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// First event of a run.
    RunStarted {
        schema: u32,
        trial_id: String,
        protocol_sha256: String,
        lab_version: String,
    },
    /// The same protocol was run again: the run goes on where it stopped.
    RunResumed {
        protocol_sha256: String,
    },
    /// A device was found on a usbmuxd host.
    DeviceDiscovered {
        udid: String,
        host: String,
        device_id: u32,
    },
    /// The starting state: the whole probe record (lockdown fields with raw values and sources,
    /// MDM fields when an MDM answered).
    BaselineRecorded {
        udid: String,
        probe: serde_json::Value,
    },
    /// What the device offers (AvailableOSUpdates answer, parsed), for eligibility and target.
    UpdatesOffered {
        udid: String,
        command_uuid: String,
        updates: serde_json::Value,
    },
    EligibilityAssessed {
        udid: String,
        eligible: bool,
        reasons: Vec<Reason>,
        /// The update this device would get: `{product_key, version, build, download_size,
        /// install_size}` (null when none could be resolved).
        #[serde(default)]
        target: serde_json::Value,
    },
    Allocated {
        udid: String,
        arm: String,
        seed: u64,
    },
    /// The operator consented to these doses (`by`: "flag" for --yes, "operator" when typed).
    ConsentGiven {
        by: String,
        udids: Vec<String>,
    },
    ConsentRefused {
        reason: String,
    },
    /// Made durable (here and in the ledger) *before* the command goes to the MDM.
    DoseIntent {
        udid: String,
        arm: String,
        step: u32,
        command_uuid: String,
        request_type: String,
        install_action: String,
        starting_build: String,
        /// The exact command plist, base64.
        command_b64: String,
        /// The MDM store the intent was made against (`GET /v1/store` of `lab`'s own server;
        /// absent for an MDM without one, and in journals written before it was recorded):
        /// "absent from the MDM's records" proves "never queued" only within that store
        /// (`trial::dose_guard::records_cover`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mdm_store: Option<crate::mdm::records::StoreIdentity>,
    },
    DoseEnqueued {
        udid: String,
        command_uuid: String,
        pushed: bool,
        push_error: Option<String>,
    },
    DoseFailed {
        udid: String,
        command_uuid: String,
        error: String,
    },
    /// An intent whose enqueue result is unknown (crash in between): never re-sent.
    DoseUncertain {
        udid: String,
        command_uuid: String,
        reason: String,
    },
    /// An intent found in the lab-wide ledger for this run that the journal does not hold (its
    /// line was lost, e.g. the journal cut inside a `dose_intent`): recorded here so the device
    /// is never sent that step again; a `dose_uncertain` follows.
    DoseReconciled {
        udid: String,
        step: u32,
        command_uuid: String,
        starting_build: String,
        reason: String,
    },
    /// A step not sent because the check before the dose (ledger, journal, MDM's records, under
    /// the lab-wide dose lock) found the device already dosed at its build by another run.
    DoseWithheld {
        udid: String,
        step: u32,
        rule: String,
        reason: String,
    },
    /// The run lock was found left by a process that is gone (its lock was free): taken over.
    RunLockTakenOver {
        previous_pid: u32,
        previous_host: String,
        previous_started_at: String,
    },
    /// A follow-up command (OSUpdateStatus, DeviceInformation, AvailableOSUpdates) was sent.
    CommandSent {
        udid: String,
        command_uuid: String,
        request_type: String,
    },
    /// A device's answer through the MDM, raw (base64 plist) and as the MDM stored it.
    MdmResult {
        udid: String,
        command_uuid: String,
        request_type: Option<String>,
        status: String,
        raw_b64: String,
        received_at: String,
    },
    /// A re-probe over USB during follow-up.
    DeviceReprobed {
        udid: String,
        attached: bool,
        product_version: Option<String>,
        build_version: Option<String>,
        error: Option<String>,
    },
    /// A manual or harness observation.
    Observation {
        udid: Option<String>,
        source: String,
        kind: String,
        key: String,
        value: String,
    },
    /// Follow-up of a device ended (its `until` condition, its time limit, or the run stopped).
    FollowUpEnded {
        udid: String,
        reason: String,
    },
    StopRuleTriggered {
        rule: String,
        message: String,
    },
    /// Operator interrupted (Ctrl-C): the run is resumable.
    RunInterrupted,
    RunFinished,
}

impl Event {
    /// The device an event is about; `None` for run-level events.
    pub fn udid(&self) -> Option<&str> {
        use Event::*;
        match self {
            DeviceDiscovered { udid, .. }
            | BaselineRecorded { udid, .. }
            | UpdatesOffered { udid, .. }
            | EligibilityAssessed { udid, .. }
            | Allocated { udid, .. }
            | DoseIntent { udid, .. }
            | DoseEnqueued { udid, .. }
            | DoseFailed { udid, .. }
            | DoseUncertain { udid, .. }
            | DoseReconciled { udid, .. }
            | DoseWithheld { udid, .. }
            | CommandSent { udid, .. }
            | MdmResult { udid, .. }
            | DeviceReprobed { udid, .. }
            | FollowUpEnded { udid, .. } => Some(udid),
            Observation { udid, .. } => udid.as_deref(),
            RunStarted { .. }
            | RunResumed { .. }
            | ConsentGiven { .. }
            | ConsentRefused { .. }
            | StopRuleTriggered { .. }
            | RunLockTakenOver { .. }
            | RunInterrupted
            | RunFinished => None,
        }
    }
}

/// CommandUUID → RequestType of every command the harness sent (device replies carry none,
/// MDM brief §0.6): dose intents, follow-up commands, and AvailableOSUpdates at baseline.
pub fn request_types(entries: &[Entry]) -> std::collections::HashMap<&str, &str> {
    let mut m = std::collections::HashMap::new();
    for e in entries {
        match &e.event {
            Event::DoseIntent {
                command_uuid,
                request_type,
                ..
            }
            | Event::CommandSent {
                command_uuid,
                request_type,
                ..
            } => {
                m.insert(command_uuid.as_str(), request_type.as_str());
            }
            Event::UpdatesOffered { command_uuid, .. } => {
                m.insert(command_uuid.as_str(), "AvailableOSUpdates");
            }
            _ => {}
        }
    }
    m
}

/// Entries grouped by device (run-level events go to every device's list), in journal order:
/// projections that walk the journal once per device use it to stay linear.
pub fn by_device(entries: &[Entry]) -> std::collections::HashMap<&str, Vec<&Entry>> {
    let mut run_level: Vec<&Entry> = Vec::new();
    let mut map: std::collections::HashMap<&str, Vec<&Entry>> = std::collections::HashMap::new();
    for e in entries {
        match e.event.udid() {
            Some(u) => map.entry(u).or_default().push(e),
            None => run_level.push(e),
        }
    }
    if !run_level.is_empty() {
        for list in map.values_mut() {
            list.extend(run_level.iter().copied());
            list.sort_by_key(|e| e.seq);
        }
    }
    map
}

/// One journal line: sequence number, time, event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub at: String,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal {path}:{line}: not a journal event: {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("journal {path} has schema {found}; this lab reads schema {SCHEMA_VERSION}")]
    Schema { path: PathBuf, found: u32 },
}

/// What reading a journal found.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub entries: Vec<Entry>,
    /// A last line cut short by a crash (ignored; the writer truncates it before appending).
    pub torn_tail: Option<String>,
    /// Byte length of the complete lines.
    pub valid_len: u64,
}

pub fn read(path: &Path) -> Result<Loaded, JournalError> {
    let mut entries = Vec::new();
    let tail = stream(path, |_, e| {
        entries.push(e);
        Ok(())
    })?;
    Ok(Loaded {
        entries,
        torn_tail: tail.torn_tail,
        valid_len: tail.valid_len,
    })
}

/// How a streamed journal ended (see [`stream`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Tail {
    pub torn_tail: Option<String>,
    pub valid_len: u64,
}

/// Read a journal one line at a time, handing each entry and the byte offset of its line to
/// `each`, in order, without holding the journal in memory (a long run's journal is larger than
/// what a report needs of it). Same rules as [`read`]: a torn last line is returned, not handed
/// on; a corrupt line or another schema is an error.
pub fn stream(
    path: &Path,
    mut each: impl FnMut(u64, Entry) -> Result<(), JournalError>,
) -> Result<Tail, JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(io)?;
    let mut r = BufReader::with_capacity(1 << 16, f);
    let mut valid_len = 0u64;
    let mut torn_tail = None;
    let mut line = String::new();
    let mut n = 0;
    loop {
        line.clear();
        let got = r.read_line(&mut line).map_err(io)?;
        if got == 0 {
            break;
        }
        n += 1;
        if !line.ends_with('\n') {
            // The last write was cut short: keep it as evidence, do not use it.
            torn_tail = Some(line.clone());
            break;
        }
        match serde_json::from_str::<Entry>(line.trim_end()) {
            Ok(e) => {
                if let Event::RunStarted { schema, .. } = &e.event
                    && *schema != SCHEMA_VERSION
                {
                    return Err(JournalError::Schema {
                        path: path.to_path_buf(),
                        found: *schema,
                    });
                }
                each(valid_len, e)?;
                valid_len += got as u64;
            }
            Err(e) => {
                return Err(JournalError::Corrupt {
                    path: path.to_path_buf(),
                    line: n,
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(Tail {
        torn_tail,
        valid_len,
    })
}

/// The entry on the line that starts at byte `offset` (as [`stream`] gave it).
pub fn entry_at(path: &Path, offset: u64) -> Result<Entry, JournalError> {
    use std::io::{Seek, SeekFrom};
    let io = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(io)?;
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut line = String::new();
    BufReader::new(f).read_line(&mut line).map_err(io)?;
    serde_json::from_str(line.trim_end()).map_err(|e| JournalError::Corrupt {
        path: path.to_path_buf(),
        line: 0,
        reason: format!("at byte {offset}: {e}"),
    })
}

/// Appends events durably. Several processes may append to one journal (`lab observe` while a
/// run is active): every append takes an exclusive lock on the file and re-reads the last
/// sequence number when another process appended since.
pub struct Journal {
    path: PathBuf,
    file: File,
    next_seq: u64,
    expected_len: u64,
    foreign_appends: u64,
}

impl Journal {
    /// Open (creating) a journal; a torn tail is cut off first so appends stay line-aligned.
    pub fn open(path: &Path) -> Result<(Journal, Loaded), JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let loaded = if path.exists() {
            read(path)?
        } else {
            Loaded {
                entries: Vec::new(),
                torn_tail: None,
                valid_len: 0,
            }
        };
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        if loaded.torn_tail.is_some() {
            file.set_len(loaded.valid_len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let next_seq = loaded.entries.last().map(|e| e.seq + 1).unwrap_or(1);
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
                next_seq,
                expected_len: loaded.valid_len,
                foreign_appends: 0,
            },
            loaded,
        ))
    }

    /// Append one event and make it durable (fsync) before returning.
    pub fn append(&mut self, event: Event) -> Result<Entry, JournalError> {
        let mut v = self.append_all(vec![event])?;
        Ok(v.pop().expect("one event appended"))
    }

    /// Append several events in order and make them durable with one fsync before returning
    /// (group commit): the events a caller observed together are all on disk before it acts on
    /// any of them. A crash mid-batch leaves a prefix of it (and perhaps a torn line, cut on the
    /// next open), as separate appends would.
    pub fn append_all(&mut self, events: Vec<Event>) -> Result<Vec<Entry>, JournalError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let path = self.path.clone();
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        self.file.lock().map_err(io)?;
        let result = (|| {
            let len = self.file.metadata().map_err(io)?.len();
            if len != self.expected_len {
                // Another process appended: continue its numbering.
                self.foreign_appends += 1;
                let loaded = read(&self.path)?;
                self.next_seq = loaded.entries.last().map(|e| e.seq + 1).unwrap_or(1);
                if loaded.torn_tail.is_some() {
                    self.file.set_len(loaded.valid_len).map_err(io)?;
                }
            }
            let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let mut buf = Vec::new();
            let mut entries = Vec::with_capacity(events.len());
            for (i, event) in events.into_iter().enumerate() {
                let entry = Entry {
                    seq: self.next_seq + i as u64,
                    at: at.clone(),
                    event,
                };
                serde_json::to_writer(&mut buf, &entry).expect("events serialise");
                buf.push(b'\n');
                entries.push(entry);
            }
            self.file.write_all(&buf).map_err(io)?;
            self.file.sync_data().map_err(io)?;
            self.expected_len = self.file.metadata().map_err(io)?.len();
            self.next_seq += entries.len() as u64;
            Ok(entries)
        })();
        let _ = self.file.unlock();
        result
    }

    /// Has another process (`lab observe`) appended since this journal's last append?
    pub fn appended_by_others(&self) -> Result<bool, JournalError> {
        let len = self
            .file
            .metadata()
            .map_err(|source| JournalError::Io {
                path: self.path.clone(),
                source,
            })?
            .len();
        Ok(len != self.expected_len)
    }

    /// How many times another process (`lab observe`) was found to have appended since this
    /// journal was opened.
    pub fn foreign_appends(&self) -> u64 {
        self.foreign_appends
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        {
            let (mut j, loaded) = Journal::open(&p).unwrap();
            assert!(loaded.entries.is_empty());
            j.append(Event::RunStarted {
                schema: SCHEMA_VERSION,
                trial_id: "t".into(),
                protocol_sha256: "abc".into(),
                lab_version: "0".into(),
            })
            .unwrap();
            j.append(Event::ConsentGiven {
                by: "flag".into(),
                udids: vec!["U".into()],
            })
            .unwrap();
        }
        // A crash mid-write leaves half a line.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"seq\":3,\"at\":\"x\",\"event\":\"run_fin")
            .unwrap();
        drop(f);
        let loaded = read(&p).unwrap();
        assert_eq!(loaded.entries.len(), 2);
        assert!(loaded.torn_tail.is_some());
        let (mut j, _) = Journal::open(&p).unwrap();
        let e = j.append(Event::RunFinished).unwrap();
        assert_eq!(e.seq, 3);
        let loaded = read(&p).unwrap();
        assert_eq!(loaded.entries.len(), 3);
        assert!(loaded.torn_tail.is_none());
        assert_eq!(loaded.entries[2].event, Event::RunFinished);
    }

    #[test]
    fn a_batch_is_numbered_in_order_and_sees_other_writers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        let (mut a, _) = Journal::open(&p).unwrap();
        let (mut b, _) = Journal::open(&p).unwrap();
        let got = a
            .append_all(vec![Event::RunFinished, Event::RunInterrupted])
            .unwrap();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert!(a.append_all(Vec::new()).unwrap().is_empty());
        assert!(!a.appended_by_others().unwrap());
        b.append(Event::RunFinished).unwrap();
        assert!(a.appended_by_others().unwrap());
        a.append_all(vec![Event::RunFinished]).unwrap();
        assert_eq!(a.foreign_appends(), 1);
        let seqs: Vec<u64> = read(&p).unwrap().entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
    }

    #[test]
    fn two_writers_keep_one_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        let (mut a, _) = Journal::open(&p).unwrap();
        let (mut b, _) = Journal::open(&p).unwrap();
        a.append(Event::RunFinished).unwrap();
        b.append(Event::RunInterrupted).unwrap();
        a.append(Event::RunFinished).unwrap();
        let seqs: Vec<u64> = read(&p).unwrap().entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[test]
    fn corrupt_middle_lines_and_other_schemas_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        std::fs::write(&p, "{\"seq\":1}\nnot json\n").unwrap();
        assert!(matches!(
            read(&p),
            Err(JournalError::Corrupt { line: 1, .. })
        ));
        std::fs::write(
            &p,
            "{\"seq\":1,\"at\":\"x\",\"event\":\"run_started\",\"schema\":99,\"trial_id\":\"t\",\"protocol_sha256\":\"a\",\"lab_version\":\"0\"}\n",
        )
        .unwrap();
        assert!(matches!(
            read(&p),
            Err(JournalError::Schema { found: 99, .. })
        ));
    }
}
