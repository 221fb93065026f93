//! Read-only scanner over a data file (`NNN.data`, tools.md §3.1) that reports bad stretches
//! with their first reason instead of skipping them silently.
//!
//! The validity rule and the 256-byte resync are the node's stream reader's (D7): a record is
//! valid iff `1 <= ksz <= 250`, `vsz <= max_value`, its `24 + ksz + vsz` bytes lie inside the
//! file and its CRC matches. After an invalid record the scan tries every following 256-byte
//! boundary until a record validates.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use beansdb_store::compress::qlz_decompress;
use beansdb_store::record::{padded_size_u64, RecordHeader, ALIGN, FLAG_COMPRESSED, HEADER_SIZE};

/// `--max-value` default: 100M accepts C beansdb files too (tools.md §3.1).
pub const DEFAULT_MAX_VALUE: u64 = 100 << 20;

/// Candidates larger than this are CRC-checked in pieces before being loaded, so a garbage
/// header met while resyncing does not allocate its claimed size.
const STREAM_CHECK: u64 = 1 << 20;

/// A valid record.
#[derive(Debug, Clone)]
pub struct Rec {
    pub offset: u64,
    pub header: RecordHeader,
    pub key: Vec<u8>,
    /// The stored value (QuickLZ-compressed iff `flag & 0x10000`).
    pub value: Vec<u8>,
    /// On-disk size (padded to 256).
    pub padded: u64,
    /// Non-zero bytes in the padding that is present.
    pub dirty_padding: u64,
}

/// The value as a client sees it, and what went wrong decoding it.
pub struct Decoded {
    pub value: Vec<u8>,
    /// QuickLZ header or decompression inconsistent (the raw bytes are then used).
    pub error: Option<String>,
}

impl Rec {
    pub fn compressed(&self) -> bool {
        self.header.flag & FLAG_COMPRESSED != 0
    }

    pub fn is_tombstone(&self) -> bool {
        self.header.ver < 0
    }

    /// Decompresses a server-compressed value (others are returned as stored).
    pub fn decode(&self) -> Decoded {
        if !self.compressed() {
            return Decoded {
                value: self.value.clone(),
                error: None,
            };
        }
        match qlz_decompress(&self.value) {
            Ok(v) => Decoded {
                value: v,
                error: None,
            },
            Err(e) => Decoded {
                value: self.value.clone(),
                error: Some(e.to_string()),
            },
        }
    }

    /// vhash over the uncompressed value; 0 for a tombstone (node.md §2).
    pub fn vhash(&self, decoded: &Decoded) -> u16 {
        if self.header.ver < 0 {
            0
        } else {
            beansdb_hash::vhash(&decoded.value)
        }
    }

    pub fn khash(&self) -> u64 {
        beansdb_hash::keyhash(&self.key)
    }
}

/// An invalid stretch `[start, end)`: `end` is the next valid record or the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    pub start: u64,
    pub end: u64,
    /// Why the record at `start` is invalid.
    pub reason: String,
    /// No valid record follows (a torn tail).
    pub to_eof: bool,
}

#[derive(Debug, Clone)]
pub enum Item {
    Rec(Rec),
    Bad(Bad),
}

pub struct Scanner {
    file: File,
    size: u64,
    pos: u64,
    /// Scanning stops at the first record starting at or after this offset.
    stop: u64,
    max_value: u64,
    /// The record that ended a resync, returned by the next call.
    pending: Option<Rec>,
}

impl Scanner {
    pub fn open(path: &Path, max_value: u64) -> io::Result<Scanner> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        Ok(Scanner {
            file,
            size,
            pos: 0,
            stop: u64::MAX,
            max_value,
            pending: None,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Starts at `from` (a record boundary) and stops before `to`.
    pub fn range(mut self, from: u64, to: Option<u64>) -> Scanner {
        self.pos = from;
        self.stop = to.unwrap_or(u64::MAX);
        self
    }

    /// The next record or bad stretch; `None` at the end.
    pub fn next_item(&mut self) -> io::Result<Option<Item>> {
        if let Some(rec) = self.pending.take() {
            self.pos = rec.offset + rec.padded;
            return Ok(Some(Item::Rec(rec)));
        }
        if self.pos >= self.size || self.pos >= self.stop {
            return Ok(None);
        }
        let start = self.pos;
        match self.record_at(start)? {
            Ok(rec) => {
                self.pos = start + rec.padded;
                Ok(Some(Item::Rec(rec)))
            }
            Err(reason) => {
                let mut p = (start & !(ALIGN as u64 - 1)) + ALIGN as u64;
                while p < self.size {
                    if let Ok(rec) = self.record_at(p)? {
                        self.pending = Some(rec);
                        break;
                    }
                    p += ALIGN as u64;
                }
                let end = p.min(self.size);
                self.pos = end;
                Ok(Some(Item::Bad(Bad {
                    start,
                    end,
                    reason,
                    to_eof: self.pending.is_none(),
                })))
            }
        }
    }

    /// The valid record at `offset`, or why there is none. `Err` of the outer result is I/O.
    fn record_at(&self, offset: u64) -> io::Result<Result<Rec, String>> {
        let left = self.size - offset;
        if left < HEADER_SIZE as u64 {
            return Ok(Err(format!(
                "record past EOF: header needs 24 bytes, {left} left"
            )));
        }
        let mut hbuf = [0u8; HEADER_SIZE];
        self.file.read_exact_at(&mut hbuf, offset)?;
        let header = RecordHeader::parse(&hbuf);
        if header.check_key_size().is_err() {
            return Ok(Err(format!(
                "bad header: ksz {} (must be 1..=250)",
                header.ksz
            )));
        }
        if u64::from(header.vsz) > self.max_value {
            return Ok(Err(format!(
                "bad header: vsz {} exceeds the max value {}",
                header.vsz, self.max_value
            )));
        }
        let len = header.record_len();
        if len > left {
            return Ok(Err(format!(
                "record past EOF: needs {len} bytes, {left} left"
            )));
        }
        let body_len = len - HEADER_SIZE as u64;
        if body_len > STREAM_CHECK {
            let computed = self.streaming_crc(&header, offset)?;
            if computed != header.crc {
                return Ok(Err(bad_crc(header.crc, computed)));
            }
        }
        let mut body = vec![0u8; body_len as usize];
        self.file
            .read_exact_at(&mut body, offset + HEADER_SIZE as u64)?;
        let value = body.split_off(header.ksz as usize);
        let key = body;
        let computed = header.compute_crc(&key, &value);
        if computed != header.crc {
            return Ok(Err(bad_crc(header.crc, computed)));
        }
        let padded = padded_size_u64(len);
        let pad_len = padded.min(left) - len;
        let mut pad = vec![0u8; pad_len as usize];
        self.file.read_exact_at(&mut pad, offset + len)?;
        let dirty_padding = pad.iter().filter(|&&b| b != 0).count() as u64;
        Ok(Ok(Rec {
            offset,
            header,
            key,
            value,
            padded,
            dirty_padding,
        }))
    }

    fn streaming_crc(&self, header: &RecordHeader, offset: u64) -> io::Result<u32> {
        let h = header.encode();
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&h[4..]);
        let mut left = header.record_len() - HEADER_SIZE as u64;
        let mut at = offset + HEADER_SIZE as u64;
        let mut buf = vec![0u8; 1 << 16];
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            self.file.read_exact_at(&mut buf[..n], at)?;
            hasher.update(&buf[..n]);
            left -= n as u64;
            at += n as u64;
        }
        Ok(hasher.finalize())
    }
}

fn bad_crc(stored: u32, computed: u32) -> String {
    format!("bad crc (stored {stored:#010x}, computed {computed:#010x})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use beansdb_store::record::Record;
    use std::io::Write;

    fn rec(key: &str, value: &[u8], ver: i32) -> Record {
        Record {
            ts: 1_700_000_000,
            flag: 0,
            ver,
            key: key.as_bytes().to_vec(),
            value: value.to_vec(),
        }
    }

    fn scan_all(path: &Path) -> Vec<Item> {
        let mut s = Scanner::open(path, DEFAULT_MAX_VALUE).unwrap();
        let mut out = Vec::new();
        while let Some(it) = s.next_item().unwrap() {
            out.push(it);
        }
        out
    }

    #[test]
    fn resync_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("000.data");
        let mut bytes = Vec::new();
        bytes.extend(rec("a", b"1", 1).encode_padded());
        let bad_at = bytes.len();
        bytes.extend(rec("b", &[7u8; 300], 1).encode_padded()); // 512 bytes
        bytes.extend(rec("c", b"3", -2).encode_padded());
        bytes[bad_at + 100] ^= 0xff;
        bytes.extend(&rec("d", &[4u8; 100], 1).encode_padded()[..40]);
        let mut f = File::create(&path).unwrap();
        f.write_all(&bytes).unwrap();
        drop(f);
        let items = scan_all(&path);
        assert_eq!(items.len(), 4, "{items:?}");
        assert!(matches!(&items[0], Item::Rec(r) if r.key == b"a"));
        match &items[1] {
            Item::Bad(b) => {
                assert_eq!((b.start, b.end), (256, 768));
                assert!(b.reason.starts_with("bad crc"), "{}", b.reason);
                assert!(!b.to_eof);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&items[2], Item::Rec(r) if r.key == b"c" && r.offset == 768));
        match &items[3] {
            Item::Bad(b) => {
                assert_eq!((b.start, b.end), (1024, 1064));
                assert!(b.to_eof);
                assert!(b.reason.contains("past EOF"), "{}", b.reason);
            }
            other => panic!("{other:?}"),
        }
    }
}
