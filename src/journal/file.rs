//! The journal file: append with `fsync` before the harness acts ("nothing lost"), stream one
//! line at a time, tolerate (and report) a torn last line left by a crash mid-write.

use super::event::{Entry, Event, SCHEMA_VERSION};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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
    each: impl FnMut(u64, Entry) -> Result<(), JournalError>,
) -> Result<Tail, JournalError> {
    let piece = super::pieces::stream_piece(path, 0, u64::MAX, each)?;
    Ok(Tail {
        torn_tail: piece.torn_tail.map(|t| t.1),
        valid_len: piece.valid_end.unwrap_or(0),
    })
}

/// One journal line as its entry. Most lines of a long run are `mdm_result`s, and serde reads
/// an entry (its event flattened and internally tagged) by first buffering every field into a
/// tree of its own; such a line is read straight into its fields instead. Where that reading
/// fails (a field missing, duplicated or of another type), the line is read the general way,
/// so what is accepted, and every error, is the general reading's.
pub(super) fn parse_line(line: &str) -> serde_json::Result<Entry> {
    if looks_like_mdm_result(line)
        && let Ok(l) = serde_json::from_str::<MdmResultLine>(line)
        && l.event == "mdm_result"
    {
        return Ok(Entry {
            seq: l.seq,
            at: l.at,
            event: Event::MdmResult {
                udid: l.udid,
                command_uuid: l.command_uuid,
                request_type: l.request_type,
                status: l.status,
                raw_b64: l.raw_b64,
                received_at: l.received_at,
            },
        });
    }
    serde_json::from_str::<Entry>(line)
}

/// Whether the line's head names the `mdm_result` event (as the journal writes it: seq, at,
/// then the tag). Only a hint for [`parse_line`], which checks the tag it reads.
fn looks_like_mdm_result(line: &str) -> bool {
    const TAG: &[u8] = b"\"event\":\"mdm_result\"";
    let head = &line.as_bytes()[..line.len().min(160)];
    head.windows(TAG.len()).any(|w| w == TAG)
}

/// The fields of an `mdm_result` line (`Event::MdmResult` with the entry's `seq` and `at`).
#[derive(serde::Deserialize)]
struct MdmResultLine<'a> {
    seq: u64,
    at: String,
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    udid: String,
    command_uuid: String,
    request_type: Option<String>,
    status: String,
    raw_b64: String,
    received_at: String,
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
    /// Entries another process appended that this one has read but its caller has not yet been
    /// handed ([`Journal::take_foreign`]): a runner folds them, in order, before its own.
    foreign: Vec<Entry>,
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
                foreign: Vec::new(),
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
            self.read_foreign_locked()?;
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

    /// Under the file lock: when another process appended since this one last did, read what
    /// it appended (kept for [`Journal::take_foreign`]) and continue its numbering.
    fn read_foreign_locked(&mut self) -> Result<(), JournalError> {
        let path = self.path.clone();
        let io = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        let len = self.file.metadata().map_err(io)?.len();
        if len == self.expected_len {
            return Ok(());
        }
        self.foreign_appends += 1;
        let loaded = read(&self.path)?;
        let from = self.next_seq;
        self.foreign
            .extend(loaded.entries.iter().filter(|e| e.seq >= from).cloned());
        self.next_seq = loaded.entries.last().map(|e| e.seq + 1).unwrap_or(1);
        if loaded.torn_tail.is_some() {
            self.file.set_len(loaded.valid_len).map_err(io)?;
        }
        self.expected_len = loaded.valid_len;
        Ok(())
    }

    /// Read what other processes appended since this one last looked, without appending.
    pub fn catch_up(&mut self) -> Result<(), JournalError> {
        let path = self.path.clone();
        self.file.lock().map_err(|source| JournalError::Io {
            path: path.clone(),
            source,
        })?;
        let r = self.read_foreign_locked();
        let _ = self.file.unlock();
        r
    }

    /// The entries other processes appended that this one read (on an append or a
    /// [`Journal::catch_up`]) since the last call, in journal order: all of them precede the
    /// entries this process appended after reading them.
    pub fn take_foreign(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.foreign)
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
    use crate::journal::vocab::ConsentBy;

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
                time_scale: None,
                simulated: false,
            })
            .unwrap();
            j.append(Event::ConsentGiven {
                by: ConsentBy::Flag,
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
        let foreign: Vec<u64> = a.take_foreign().iter().map(|e| e.seq).collect();
        assert_eq!(foreign, vec![3], "the other process's entry, handed over");
        assert!(a.take_foreign().is_empty(), "each handed over once");
        let seqs: Vec<u64> = read(&p).unwrap().entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
    }

    #[test]
    fn catching_up_reads_other_writers_without_appending() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        let (mut a, _) = Journal::open(&p).unwrap();
        let (mut b, _) = Journal::open(&p).unwrap();
        a.append(Event::RunInterrupted).unwrap();
        b.append_all(vec![Event::RunFinished, Event::RunFinished])
            .unwrap();
        a.catch_up().unwrap();
        assert!(!a.appended_by_others().unwrap(), "caught up");
        let seqs: Vec<u64> = a.take_foreign().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
        a.catch_up().unwrap();
        assert!(a.take_foreign().is_empty(), "nothing new");
        assert_eq!(a.append(Event::RunFinished).unwrap().seq, 4);
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

    /// The direct reading of `mdm_result` lines gives what the general one gives, on every line
    /// shape, and declines (to the general reading and its error) wherever they could differ.
    #[test]
    fn mdm_result_lines_read_as_the_general_reading_does() {
        let lines = [
            r#"{"seq":7,"at":"2026-11-27T10:00:00.007Z","event":"mdm_result","udid":"U","command_uuid":"C","request_type":"OSUpdateStatus","status":"Acknowledged","raw_b64":"PD94","received_at":""}"#,
            r#"{"seq":7,"at":"t","event":"mdm_result","udid":"U\u00e9\n","command_uuid":"C\"","request_type":null,"status":"Error","raw_b64":"","received_at":"x"}"#,
            r#"{"seq":7,"at":"t","event":"mdm_result","udid":"U","command_uuid":"C","status":"Error","raw_b64":"","received_at":"x"}"#,
            r#"{"seq":7,"at":"t","event":"mdm_result","udid":"U","command_uuid":"C","status":"Error","raw_b64":"","received_at":"x","extra":[1,{"a":2}]}"#,
            r#"{"event":"mdm_result","seq":7,"at":"t","udid":"U","command_uuid":"C","request_type":"R","status":"S","raw_b64":"","received_at":""}"#,
            r#"{"seq":7,"at":"t","event":"mdm_result","udid":"U","udid":"V","command_uuid":"C","status":"S","raw_b64":"","received_at":""}"#,
            r#"{"seq":7,"at":"t","event":"mdm_result","event":"run_finished","udid":"U","command_uuid":"C","status":"S","raw_b64":"","received_at":""}"#,
            r#"{"seq":7,"at":"t","event":"mdm_result","udid":"U","command_uuid":"C","status":"S","raw_b64":"","received_at":null}"#,
            r#"{"seq":7,"at":"t","event":"mdm_result","udid":"U","command_uuid":"C","status":"S","raw_b64":""}"#,
            r#"{"seq":-1,"at":"t","event":"mdm_result","udid":"U","command_uuid":"C","status":"S","raw_b64":"","received_at":""}"#,
            r#"{"seq":7,"at":"t","event":"mdm_resultx","udid":"U","command_uuid":"C","status":"S","raw_b64":"","received_at":""}"#,
            r#"{"seq":7,"at":"t","event":"device_reprobed","udid":"U","attached":true,"product_version":null,"build_version":null,"error":null}"#,
        ];
        for line in lines {
            let general = serde_json::from_str::<Entry>(line).map_err(|e| e.to_string());
            let direct = parse_line(line).map_err(|e| e.to_string());
            assert_eq!(direct, general, "{line}");
        }
        assert!(parse_line(lines[0]).is_ok() && looks_like_mdm_result(lines[0]));
    }
}
