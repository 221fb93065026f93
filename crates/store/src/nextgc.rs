//! `nextgc.txt` (spec §4.7): the chunk id where the next GC starts, in decimal, no newline.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use thiserror::Error;

use crate::hint::write_file_atomic;

pub use crate::hint::NEXTGC_FILE_NAME;

/// Readers look at no more than this many bytes (as gobeansdb).
const MAX_READ: u64 = 10;

#[derive(Debug, Error)]
pub enum NextGcError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("bad nextgc content {0:?}")]
    Parse(String),
}

/// Parses file content: at most the first 10 bytes, whitespace trimmed, decimal.
pub fn parse_next_gc(bytes: &[u8]) -> Result<u32, NextGcError> {
    let head = &bytes[..bytes.len().min(MAX_READ as usize)];
    let text = String::from_utf8_lossy(head);
    let t = text.trim();
    t.parse::<u32>()
        .map_err(|_| NextGcError::Parse(t.to_string()))
}

/// Reads `path`; `Ok(None)` if the file does not exist.
pub fn read_next_gc(path: impl AsRef<Path>) -> Result<Option<u32>, NextGcError> {
    let f = match File::open(path.as_ref()) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut buf = Vec::with_capacity(MAX_READ as usize);
    f.take(MAX_READ).read_to_end(&mut buf)?;
    parse_next_gc(&buf).map(Some)
}

/// Writes `chunk` via `<path>.tmp` and rename.
pub fn write_next_gc(path: impl AsRef<Path>, chunk: u32, fsync: bool) -> io::Result<()> {
    write_file_atomic(path.as_ref(), chunk.to_string().as_bytes(), fsync)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rules() {
        assert_eq!(parse_next_gc(b"0").unwrap(), 0);
        assert_eq!(parse_next_gc(b"12").unwrap(), 12);
        assert_eq!(parse_next_gc(b" 7\n").unwrap(), 7);
        assert_eq!(parse_next_gc(b"\t997\r\n").unwrap(), 997);
        // Only 10 bytes are considered.
        assert_eq!(parse_next_gc(b"        42").unwrap(), 42);
        assert_eq!(parse_next_gc(b"         42").unwrap(), 4);
        assert!(parse_next_gc(b"").is_err());
        assert!(parse_next_gc(b"abc").is_err());
        assert!(parse_next_gc(b"-1").is_err());
        assert!(parse_next_gc(b"1 2").is_err());
    }

    #[test]
    fn write_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(NEXTGC_FILE_NAME);
        assert_eq!(read_next_gc(&p).unwrap(), None);
        write_next_gc(&p, 5, true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"5", "no newline");
        assert_eq!(read_next_gc(&p).unwrap(), Some(5));
        write_next_gc(&p, 123, false).unwrap();
        assert_eq!(read_next_gc(&p).unwrap(), Some(123));
        assert!(!dir.path().join("nextgc.txt.tmp").exists());
        std::fs::write(&p, "x").unwrap();
        assert!(matches!(read_next_gc(&p), Err(NextGcError::Parse(_))));
    }

    #[test]
    fn gobeansdb_fixture() {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/gobeansdb-2.1-home/home/3/nextgc.txt"
        );
        let raw = std::fs::read(p).expect("fixture nextgc.txt missing");
        let v = read_next_gc(p).unwrap().unwrap();
        assert_eq!(raw, v.to_string().as_bytes());
    }
}
