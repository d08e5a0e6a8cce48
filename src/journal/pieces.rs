//! A journal read in pieces, so that several threads can decode one journal at once and hand its
//! entries on in order (`report` reads a million-event journal this way: decoding JSON and
//! plists is most of its work).
//!
//! A piece is a byte range `[start, end)` of the file; a line belongs to the piece its first
//! byte is in, so the pieces of `0, C, 2C, …, ∞` hold every line exactly once, whatever the line
//! lengths. Reading a piece reads nothing of the pieces before it but the byte before `start`
//! (to tell whether a line starts there), so the pieces are independent. Line numbers in a
//! piece's errors count from the piece's first line; whoever reads the pieces in order adds the
//! lines of the pieces before ([`JournalError::after_lines`]).

use super::event::{Entry, Event, SCHEMA_VERSION};
use super::file::{JournalError, parse_line};
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

/// How a piece of a journal ended (see [`stream_piece`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// Complete lines read (each one entry).
    pub lines: usize,
    /// Where the byte after the last complete line is; `None` when no complete line was read.
    pub valid_end: Option<u64>,
    /// A last line cut short by a crash: its byte offset and text (not handed on).
    pub torn_tail: Option<(u64, String)>,
}

/// The entries of the lines that start in `[start, end)`, each handed to `each` with the byte
/// offset of its line, in order. Same rules as [`super::stream`], which is the piece
/// `[0, u64::MAX)`: a torn last line is returned, not handed on; a corrupt line or another
/// schema is an error, with a line number counted from the piece's first line.
pub fn stream_piece(
    path: &Path,
    start: u64,
    end: u64,
    mut each: impl FnMut(u64, Entry) -> Result<(), JournalError>,
) -> Result<Piece, JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(io)?;
    let mut pos = start;
    if start > 0 {
        // The line the byte before `start` is in belongs to an earlier piece: skip to its end.
        f.seek(SeekFrom::Start(start - 1)).map_err(io)?;
    }
    let mut r = BufReader::with_capacity(1 << 16, f);
    if start > 0 {
        let mut skipped = Vec::new();
        pos = start - 1 + r.read_until(b'\n', &mut skipped).map_err(io)? as u64;
    }
    let mut piece = Piece {
        lines: 0,
        valid_end: None,
        torn_tail: None,
    };
    let mut line = String::new();
    while pos < end {
        line.clear();
        let got = r.read_line(&mut line).map_err(io)?;
        if got == 0 {
            break;
        }
        if !line.ends_with('\n') {
            // The last write was cut short: keep it as evidence, do not use it.
            piece.torn_tail = Some((pos, std::mem::take(&mut line)));
            break;
        }
        let n = piece.lines + 1;
        let e = parse_line(line.trim_end()).map_err(|e| JournalError::Corrupt {
            path: path.to_path_buf(),
            line: n,
            reason: e.to_string(),
        })?;
        if let Event::RunStarted { schema, .. } = &e.event
            && *schema != SCHEMA_VERSION
        {
            return Err(JournalError::Schema {
                path: path.to_path_buf(),
                found: *schema,
            });
        }
        each(pos, e)?;
        pos += got as u64;
        piece.lines = n;
        piece.valid_end = Some(pos);
    }
    Ok(piece)
}

impl JournalError {
    /// The error of a piece read after `lines` lines of the pieces before it: its line number
    /// counted from the journal's first line.
    pub fn after_lines(self, lines: usize) -> JournalError {
        match self {
            JournalError::Corrupt { path, line, reason } => JournalError::Corrupt {
                path,
                line: line + lines,
                reason,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, pad: usize) -> String {
        format!(
            "{{\"seq\":{seq},\"at\":\"{}\",\"event\":\"run_finished\"}}\n",
            "x".repeat(pad)
        )
    }

    /// Every cut of a journal into pieces hands on every entry once, in order, with the whole
    /// reading's offsets, torn tail and line numbers.
    #[test]
    fn pieces_cut_anywhere_read_as_the_whole_journal() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        let mut text: String = (1..=9).map(|s| line(s, (s as usize * 7) % 23)).collect();
        text.push_str("{\"seq\":10,\"at\":\"x\",\"ev");
        std::fs::write(&p, &text).unwrap();
        let mut whole = Vec::new();
        let tail = crate::journal::stream(&p, |o, e| {
            whole.push((o, e.seq));
            Ok(())
        })
        .unwrap();
        assert_eq!(whole.len(), 9);
        let len = text.len() as u64;
        for cut in 1..len + 3 {
            let mut got = Vec::new();
            let mut torn = None;
            let mut valid = 0;
            let mut start = 0;
            while start < len {
                let end = if start + cut >= len {
                    u64::MAX
                } else {
                    start + cut
                };
                let piece = stream_piece(&p, start, end, |o, e| {
                    got.push((o, e.seq));
                    Ok(())
                })
                .unwrap();
                valid = piece.valid_end.unwrap_or(valid);
                torn = piece.torn_tail.or(torn);
                start = end;
            }
            assert_eq!(got, whole, "cut every {cut} bytes");
            assert_eq!(valid, tail.valid_len, "cut every {cut} bytes");
            assert_eq!(torn.map(|t| t.1), tail.torn_tail, "cut every {cut} bytes");
        }
    }

    #[test]
    fn a_corrupt_line_is_numbered_within_its_piece() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        let text = format!("{}{}not json\n{}", line(1, 0), line(2, 0), line(3, 0));
        std::fs::write(&p, &text).unwrap();
        let second = line(1, 0).len() as u64;
        let err = stream_piece(&p, second, u64::MAX, |_, _| Ok(())).unwrap_err();
        assert!(
            matches!(err, JournalError::Corrupt { line: 2, .. }),
            "{err}"
        );
        let err = err.after_lines(1);
        assert!(
            err.to_string()
                .contains("journal.jsonl:3: not a journal event"),
            "{err}"
        );
    }
}
