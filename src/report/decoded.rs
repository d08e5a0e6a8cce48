//! A journal's entries with each `MdmResult`'s raw plist decoded, read on other threads than
//! the one that takes them in: reading JSON and parsing plists is most of a report's work, and
//! it needs nothing from the entries before.
//!
//! The file is cut into pieces (`journal::pieces`) that the readers take in turn — reader `r`
//! of `n` reads pieces `r`, `r + n`, … — and the caller is handed them back in journal order, so
//! every core decodes while the caller folds. A piece goes back to the reader that read it to be
//! dropped: memory is freed by the thread that allocated it (the allocator's arenas are per
//! thread, and a cross-thread free takes a lock).

use super::ReportError;
use crate::journal::fold::{Decoded, decode_answer};
use crate::journal::pieces::{Piece, stream_piece};
use crate::journal::{self, Entry, Event, JournalError};
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, SyncSender};

/// The bytes of journal in a piece: small enough that a reader can read its next piece while
/// the caller takes in the one before (a few thousand entries at most).
const PIECE: u64 = 1 << 19;
/// Pieces a reader may be ahead of the caller.
const AHEAD: usize = 4;

/// A piece's entries, with the byte offset of each line, and how the piece ended.
type Batch = Vec<(u64, Entry, Option<Decoded>)>;
type Read = (Batch, Result<Piece, JournalError>);

/// The journal at `path`, each entry handed to `each` in journal order with its line's byte
/// offset and, for an `MdmResult`, its decoded answer. `each`'s error stops the reading and is
/// returned; so is the journal's first error (its line numbered in the whole file).
pub(super) fn stream_decoded(
    path: &Path,
    each: impl FnMut(u64, &Entry, Option<&Decoded>) -> Result<(), ReportError>,
) -> Result<journal::Tail, ReportError> {
    let readers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    stream_decoded_in(path, PIECE, readers, each)
}

/// [`stream_decoded`] with pieces of `piece` bytes and `readers` threads.
fn stream_decoded_in(
    path: &Path,
    piece: u64,
    readers: usize,
    mut each: impl FnMut(u64, &Entry, Option<&Decoded>) -> Result<(), ReportError>,
) -> Result<journal::Tail, ReportError> {
    let len = std::fs::metadata(path)
        .map_err(|source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let pieces = (len / piece).max(1);
    let readers = readers.clamp(1, pieces.min(64) as usize);
    std::thread::scope(|scope| {
        let mut from = Vec::with_capacity(readers);
        let mut back = Vec::with_capacity(readers);
        for r in 0..readers {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Read>(AHEAD);
            let (back_tx, back_rx) = std::sync::mpsc::channel::<Batch>();
            let mine = (r as u64..pieces).step_by(readers);
            scope.spawn(move || read_pieces(path, piece, pieces, mine, tx, back_rx));
            from.push(rx);
            back.push(back_tx);
        }
        take_in_order(pieces, &from, &back, &mut each)
        // Dropping the channels here stops the readers and lets them drop what came back.
    })
}

/// A reader: its pieces, in order, each sent whole with how it ended; stops at the first error
/// or when the caller is gone.
fn read_pieces(
    path: &Path,
    size: u64,
    pieces: u64,
    mine: impl Iterator<Item = u64>,
    tx: SyncSender<Read>,
    back: Receiver<Batch>,
) {
    let mut buf = Vec::new();
    for p in mine {
        let mut batch = match back.try_recv() {
            Ok(mut done) => {
                done.clear();
                done
            }
            Err(_) => Vec::new(),
        };
        let end = if p + 1 == pieces {
            u64::MAX
        } else {
            (p + 1) * size
        };
        let read = stream_piece(path, p * size, end, |offset, e| {
            let report = match &e.event {
                Event::MdmResult { raw_b64, .. } => Some(decode_answer(raw_b64, &mut buf)),
                _ => None,
            };
            batch.push((offset, e, report));
            Ok(())
        });
        let failed = read.is_err();
        if tx.send((batch, read)).is_err() || failed {
            break;
        }
    }
    drop(tx);
    // Drop what comes back until the caller is done.
    for done in back {
        drop(done);
    }
}

/// The caller's side: piece `p` from reader `p % n`, its entries to `each`, its batch back.
fn take_in_order(
    pieces: u64,
    from: &[Receiver<Read>],
    back: &[Sender<Batch>],
    each: &mut impl FnMut(u64, &Entry, Option<&Decoded>) -> Result<(), ReportError>,
) -> Result<journal::Tail, ReportError> {
    let mut lines = 0;
    let mut tail = journal::Tail {
        torn_tail: None,
        valid_len: 0,
    };
    for p in 0..pieces as usize {
        let r = p % from.len();
        let (batch, read) = from[r]
            .recv()
            .expect("a reader sends every piece up to its first error");
        for (offset, e, report) in &batch {
            each(*offset, e, report.as_ref())?;
        }
        let _ = back[r].send(batch);
        let piece = read.map_err(|e| e.after_lines(lines))?;
        lines += piece.lines;
        if let Some(end) = piece.valid_end {
            tail.valid_len = end;
        }
        if let Some((_, text)) = piece.torn_tail {
            tail.torn_tail = Some(text);
        }
    }
    Ok(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However the journal is cut and however many readers share it, the entries come in
    /// journal order with their offsets, and the first corrupt line is named by its number in
    /// the whole file.
    #[test]
    fn any_cut_and_any_readers_read_as_one_reader() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        let mut text: String = (1..=40)
            .map(|s| {
                format!(
                    "{{\"seq\":{s},\"at\":\"{}\",\"event\":\"run_finished\"}}\n",
                    "y".repeat(s * 13 % 31)
                )
            })
            .collect();
        text.push_str("{\"seq\":41,");
        std::fs::write(&p, &text).unwrap();
        let mut whole = Vec::new();
        let one = journal::stream(&p, |o, e| {
            whole.push((o, e.seq));
            Ok(())
        })
        .unwrap();
        for piece in [1, 7, 64, 100, 1 << 19] {
            for readers in 1..=3 {
                let mut got = Vec::new();
                let tail = stream_decoded_in(&p, piece, readers, |o, e, _| {
                    got.push((o, e.seq));
                    Ok(())
                })
                .unwrap();
                assert_eq!(got, whole, "pieces of {piece}, {readers} readers");
                assert_eq!(tail, one, "pieces of {piece}, {readers} readers");
            }
        }
        // Line 30 corrupt: the error names it, whoever read it.
        let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
        lines[29] = "{\"seq\":30}\n";
        std::fs::write(&p, lines.concat()).unwrap();
        for piece in [1, 50, 1 << 19] {
            for readers in 1..=3 {
                let mut seen = 0;
                let err = stream_decoded_in(&p, piece, readers, |_, _, _| {
                    seen += 1;
                    Ok(())
                })
                .unwrap_err();
                assert!(err.to_string().contains("journal.jsonl:30: "), "{err}");
                assert_eq!(seen, 29, "pieces of {piece}, {readers} readers");
            }
        }
    }

    /// The caller's error stops the reading and is the one returned.
    #[test]
    fn the_callers_error_stops_the_readers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        let text: String = (1..=200)
            .map(|s| format!("{{\"seq\":{s},\"at\":\"t\",\"event\":\"run_finished\"}}\n"))
            .collect();
        std::fs::write(&p, text).unwrap();
        let mut seen = 0;
        let err = stream_decoded_in(&p, 40, 2, |_, e, _| {
            seen += 1;
            if e.seq == 17 {
                return Err(ReportError::Io {
                    path: "x".into(),
                    source: std::io::Error::other("full disk"),
                });
            }
            Ok(())
        })
        .unwrap_err();
        assert!(err.to_string().contains("full disk"), "{err}");
        assert_eq!(seen, 17);
    }
}
