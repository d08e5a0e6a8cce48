//! Reading a journal from a byte offset on, for the event stream: only complete lines are taken
//! (a line still being written, or torn by a crash, waits), as `journal::file::stream` does.

use crate::journal::Entry;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

/// One journal line appended since the offset: where it starts, its entry and its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub offset: u64,
    pub entry: Entry,
    pub text: String,
}

/// The complete lines of `path` from byte `offset` on (at most `max`), and the offset after
/// the last one taken. A missing file is no lines yet; a line that is not a journal entry ends
/// the read there (the page shows what came before it).
pub fn read_from(path: &Path, offset: u64, max: usize) -> std::io::Result<(Vec<Line>, u64)> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(e),
    };
    if f.metadata()?.len() <= offset {
        return Ok((Vec::new(), offset));
    }
    let mut r = BufReader::new(f);
    r.seek(SeekFrom::Start(offset))?;
    let mut at = offset;
    let mut out = Vec::new();
    let mut text = String::new();
    while out.len() < max {
        text.clear();
        let got = r.read_line(&mut text)?;
        if got == 0 || !text.ends_with('\n') {
            break;
        }
        let Ok(entry) = serde_json::from_str::<Entry>(text.trim_end()) else {
            break;
        };
        out.push(Line {
            offset: at,
            entry,
            text: text.trim_end().to_string(),
        });
        at += got as u64;
    }
    Ok((out, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const A: &str = r#"{"seq":1,"at":"2026-12-02T17:36:07.107Z","event":"run_finished"}"#;
    const B: &str = r#"{"seq":2,"at":"2026-12-02T17:36:08.107Z","event":"run_interrupted"}"#;

    #[test]
    fn complete_lines_only_and_the_offset_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        assert_eq!(read_from(&p, 0, 10).unwrap(), (vec![], 0));
        let mut f = std::fs::File::create(&p).unwrap();
        write!(f, "{A}\n{}", &B[..10]).unwrap();
        let (lines, at) = read_from(&p, 0, 10).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text, A);
        assert_eq!(at, A.len() as u64 + 1);
        // The torn line is completed: it is read from where the last read stopped.
        writeln!(f, "{}", &B[10..]).unwrap();
        let (lines, end) = read_from(&p, at, 10).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].entry.seq, 2);
        assert_eq!(lines[0].offset, at);
        assert_eq!(read_from(&p, end, 10).unwrap(), (vec![], end));
        assert_eq!(read_from(&p, 0, 1).unwrap().0.len(), 1);
    }
}
