//! Hint files `NNN.SSS.idx.s` / `.idx.m` (spec §4.4), bucket file names (§4.1) and the
//! write-to-tmp-then-rename helper shared by all small files.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::record::Record;

/// `indexOffset u64 | numKey u32 | datasize u32`.
pub const HINT_HEADER_SIZE: usize = 16;
/// `keyhash u64 | chunkID u32 | offset u32 | ver i32 | vhash u16 | ksz u8`, then the key.
pub const HINT_ITEM_HEADER_SIZE: usize = 23;
/// `keyhash u64 | fileOffset i64`.
pub const HINT_INDEX_ENTRY_SIZE: usize = 16;
/// `hint_index_interval_str` default (4K).
pub const DEFAULT_HINT_INDEX_INTERVAL: u64 = 4096;
/// Slack gobeansdb subtracts from the interval: one maximal item (23 + 256).
const INDEX_INTERVAL_SLACK: i128 = 279;

/// One key's final state in a hint split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HintItem {
    pub keyhash: u64,
    /// 0 in `.idx.s` files (the chunk is the file's); the real chunk in `.idx.m`.
    pub chunk_id: u32,
    pub offset: u32,
    pub ver: i32,
    pub vhash: u16,
    pub key: Vec<u8>,
}

impl HintItem {
    /// The hint item of a record found at `offset` of a chunk: keyhash of the key, and vhash
    /// of the uncompressed value (0 for tombstones).
    pub fn from_record(record: &Record, chunk_id: u32, offset: u32) -> HintItem {
        let vhash = if record.ver > 0 {
            let (_, value) = record.client_view();
            beansdb_hash::vhash(&value)
        } else {
            0
        };
        HintItem {
            keyhash: beansdb_hash::keyhash(&record.key),
            chunk_id,
            offset,
            ver: record.ver,
            vhash,
            key: record.key.clone(),
        }
    }
}

/// A parsed hint file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HintFile {
    /// End of the data-file prefix the split covers.
    pub datasize: u32,
    /// Items in file order (ascending `(keyhash, key)`).
    pub items: Vec<HintItem>,
}

/// Why a hint file was rejected.
#[derive(Debug, Error)]
pub enum HintError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("hint file too short ({0} bytes)")]
    TooShort(u64),
    #[error("bad index offset {index_offset} (file size {size})")]
    BadIndexOffset { index_offset: u64, size: u64 },
    #[error("index region of {0} bytes is not a multiple of 16")]
    BadIndexSize(u64),
    #[error("bad item at offset {0}")]
    BadItem(u64),
    #[error("items not sorted by keyhash at offset {0}")]
    Unsorted(u64),
    #[error("header says {header} keys, found {found}")]
    KeyCountMismatch { header: u32, found: u64 },
    #[error("sparse index entry {0} points outside the items")]
    BadIndexEntry(usize),
}

/// Sorts hint items by `(keyhash, key)`, the file order.
pub fn sort_hint_items(items: &mut [HintItem]) {
    items.sort_by(|a, b| (a.keyhash, &a.key).cmp(&(b.keyhash, &b.key)));
}

/// Encodes a hint file (items sorted in place first). `index_interval` is
/// `hint_index_interval_str` in bytes.
pub fn encode_hint_file(items: &mut [HintItem], datasize: u32, index_interval: u64) -> Vec<u8> {
    sort_hint_items(items);
    let items_len: usize = items
        .iter()
        .map(|it| HINT_ITEM_HEADER_SIZE + it.key.len().min(u8::MAX as usize))
        .sum();
    let mut out = Vec::with_capacity(HINT_HEADER_SIZE + items_len + 64);
    out.resize(HINT_HEADER_SIZE, 0);
    let threshold = index_interval as i128 - INDEX_INTERVAL_SLACK;
    let mut index: Vec<(u64, u64)> = Vec::new();
    let mut last: u64 = 0;
    for it in items.iter() {
        let o = out.len() as u64;
        // An entry for the item is due once it is more than (interval - 279) past the last one.
        if (o - last) as i128 > threshold {
            index.push((it.keyhash, o));
            last = o;
        }
        // Keys are at most 250 bytes; a longer one would not fit the u8 length, so it is cut
        // rather than making the file unparseable.
        debug_assert!(it.key.len() <= u8::MAX as usize);
        let key = &it.key[..it.key.len().min(u8::MAX as usize)];
        out.extend_from_slice(&it.keyhash.to_le_bytes());
        out.extend_from_slice(&it.chunk_id.to_le_bytes());
        out.extend_from_slice(&it.offset.to_le_bytes());
        out.extend_from_slice(&it.ver.to_le_bytes());
        out.extend_from_slice(&it.vhash.to_le_bytes());
        out.push(key.len() as u8);
        out.extend_from_slice(key);
    }
    let index_offset = out.len() as u64;
    for (kh, off) in index {
        out.extend_from_slice(&kh.to_le_bytes());
        out.extend_from_slice(&off.to_le_bytes());
    }
    out[0..8].copy_from_slice(&index_offset.to_le_bytes());
    out[8..12].copy_from_slice(&(items.len() as u32).to_le_bytes());
    out[12..16].copy_from_slice(&datasize.to_le_bytes());
    out
}

/// Writes a hint file via `<path>.tmp` (+ fsync if asked) and rename.
pub fn write_hint_file(
    path: impl AsRef<Path>,
    items: &mut [HintItem],
    datasize: u32,
    index_interval: u64,
    fsync: bool,
) -> io::Result<()> {
    let bytes = encode_hint_file(items, datasize, index_interval);
    write_file_atomic(path.as_ref(), &bytes, fsync)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Parses and validates a whole hint file (§4.4 "Loading"); the caller checks
/// `datasize <= data file size`.
pub fn parse_hint_file(bytes: &[u8]) -> Result<HintFile, HintError> {
    let size = bytes.len() as u64;
    if bytes.len() < HINT_HEADER_SIZE {
        return Err(HintError::TooShort(size));
    }
    let index_offset = u64_at(bytes, 0);
    let num_key = u32_at(bytes, 8);
    let datasize = u32_at(bytes, 12);
    if index_offset < HINT_HEADER_SIZE as u64 || index_offset > size {
        return Err(HintError::BadIndexOffset { index_offset, size });
    }
    // Entries are 16 bytes (`is_multiple_of` is newer than the MSRV).
    if (size - index_offset) & (HINT_INDEX_ENTRY_SIZE as u64 - 1) != 0 {
        return Err(HintError::BadIndexSize(size - index_offset));
    }
    let end = index_offset as usize;
    // Each item takes at least 24 bytes; do not trust num_key for the allocation.
    let mut items = Vec::with_capacity((num_key as usize).min((end - HINT_HEADER_SIZE) / 24));
    let mut pos = HINT_HEADER_SIZE;
    let mut prev_keyhash = 0u64;
    while pos < end {
        if end - pos < HINT_ITEM_HEADER_SIZE {
            return Err(HintError::BadItem(pos as u64));
        }
        let h = &bytes[pos..pos + HINT_ITEM_HEADER_SIZE];
        let ksz = h[22] as usize;
        let key_end = pos + HINT_ITEM_HEADER_SIZE + ksz;
        if ksz == 0 || key_end > end {
            return Err(HintError::BadItem(pos as u64));
        }
        let keyhash = u64_at(h, 0);
        if keyhash < prev_keyhash {
            return Err(HintError::Unsorted(pos as u64));
        }
        prev_keyhash = keyhash;
        items.push(HintItem {
            keyhash,
            chunk_id: u32_at(h, 8),
            offset: u32_at(h, 12),
            ver: u32_at(h, 16) as i32,
            vhash: u16::from_le_bytes([h[20], h[21]]),
            key: bytes[pos + HINT_ITEM_HEADER_SIZE..key_end].to_vec(),
        });
        pos = key_end;
    }
    if items.len() as u64 != num_key as u64 {
        return Err(HintError::KeyCountMismatch {
            header: num_key,
            found: items.len() as u64,
        });
    }
    // The sparse index is never used for lookups; only check that it points into the items.
    for (i, entry) in bytes[end..].chunks_exact(HINT_INDEX_ENTRY_SIZE).enumerate() {
        let off = u64_at(entry, 8);
        if off < HINT_HEADER_SIZE as u64 || off >= index_offset {
            return Err(HintError::BadIndexEntry(i));
        }
    }
    Ok(HintFile { datasize, items })
}

/// Reads and validates a hint file.
pub fn read_hint_file(path: impl AsRef<Path>) -> Result<HintFile, HintError> {
    let bytes = fs::read(path.as_ref())?;
    parse_hint_file(&bytes)
}

// ------------------------------------------------------------------------------------------------
// File names (§4.1).

/// `NNN.data`.
pub fn data_file_name(chunk: u32) -> String {
    format!("{chunk:03}.data")
}

/// `NNN.SSS.idx.s`, or `NNN.SSS.idx.m` for a merged hint file.
pub fn hint_file_name(chunk: u32, split: u32, merged: bool) -> String {
    let ext = if merged { 'm' } else { 's' };
    format!("{chunk:03}.{split:03}.idx.{ext}")
}

/// `NNN.SSS.idx.hash`.
pub fn htree_file_name(chunk: u32, split: u32) -> String {
    format!("{chunk:03}.{split:03}.idx.hash")
}

pub const COLLISION_FILE_NAME: &str = "collision.yaml";
pub const NEXTGC_FILE_NAME: &str = "nextgc.txt";
pub const TMP_SUFFIX: &str = ".tmp";

/// A file name a bucket directory may contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileName {
    Data(u32),
    Hint {
        chunk: u32,
        split: u32,
        merged: bool,
    },
    HTree {
        chunk: u32,
        split: u32,
    },
    /// `<one of the other names>.tmp` (an interrupted write; deleted at startup).
    Tmp,
    Collision,
    NextGc,
}

/// Exactly three ASCII digits, as `%03d` writes chunk and split numbers 0..=997.
fn three_digits(s: &str) -> Option<u32> {
    if s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// Classifies a bucket-directory file name; `None` for names the store must not touch.
pub fn parse_file_name(name: &str) -> Option<FileName> {
    if let Some(stem) = name.strip_suffix(TMP_SUFFIX) {
        // Only temporaries of our own files count, so foreign `*.tmp` files are left alone.
        return match parse_file_name(stem) {
            Some(FileName::Tmp) | None => None,
            Some(_) => Some(FileName::Tmp),
        };
    }
    match name {
        COLLISION_FILE_NAME => return Some(FileName::Collision),
        NEXTGC_FILE_NAME => return Some(FileName::NextGc),
        _ => {}
    }
    if let Some(chunk) = name.strip_suffix(".data") {
        return three_digits(chunk).map(FileName::Data);
    }
    let (ids, kind) = name.split_once(".idx.")?;
    let (chunk, split) = ids.split_once('.')?;
    let (chunk, split) = (three_digits(chunk)?, three_digits(split)?);
    match kind {
        "s" => Some(FileName::Hint {
            chunk,
            split,
            merged: false,
        }),
        "m" => Some(FileName::Hint {
            chunk,
            split,
            merged: true,
        }),
        "hash" => Some(FileName::HTree { chunk, split }),
        _ => None,
    }
}

// ------------------------------------------------------------------------------------------------
// Atomic small-file writes.

/// `<path>.tmp`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(TMP_SUFFIX);
    PathBuf::from(s)
}

/// Writes `data` to `<path>.tmp`, fsyncs it (and the directory after the rename) if asked, and
/// renames it over `path`, so readers see either the old or the complete new file.
pub fn write_file_atomic(path: &Path, data: &[u8], fsync: bool) -> io::Result<()> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        if fsync {
            f.sync_all()?;
        }
        drop(f);
        fs::rename(&tmp, path)?;
        if fsync {
            sync_parent_dir(path)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes a rename in `path`'s directory durable.
pub fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    fn item(keyhash: u64, key: &[u8], offset: u32) -> HintItem {
        HintItem {
            keyhash,
            chunk_id: 0,
            offset,
            ver: 1,
            vhash: 7,
            key: key.to_vec(),
        }
    }

    fn fixture_home() -> PathBuf {
        let p = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/gobeansdb-2.1-home/home"
        ));
        assert!(p.is_dir(), "fixture home missing: {}", p.display());
        p
    }

    /// Sparse-index entries as stored in an encoded file.
    fn index_entries(bytes: &[u8]) -> Vec<(u64, u64)> {
        let io = u64_at(bytes, 0) as usize;
        bytes[io..]
            .chunks_exact(16)
            .map(|e| (u64_at(e, 0), u64_at(e, 8)))
            .collect()
    }

    #[test]
    fn spec_example_bytes() {
        let key = b"hello";
        let mut items = vec![HintItem {
            keyhash: beansdb_hash::keyhash(key),
            chunk_id: 0,
            offset: 0,
            ver: 1,
            vhash: beansdb_hash::vhash(b"world"),
            key: key.to_vec(),
        }];
        let bytes = encode_hint_file(&mut items, 256, DEFAULT_HINT_INDEX_INTERVAL);
        let want = hex("2c 00 00 00 00 00 00 00 01 00 00 00 00 01 00 00 \
             47 fa 8b 24 ab 2c 9f 4f 00 00 00 00 00 00 00 00 01 00 00 00 78 ea 05 \
             68 65 6c 6c 6f");
        assert_eq!(bytes.len(), 44);
        assert_eq!(bytes, want);
        let hf = parse_hint_file(&bytes).unwrap();
        assert_eq!(hf.datasize, 256);
        assert_eq!(hf.items, items);
    }

    #[test]
    fn empty_hint_file() {
        let bytes = encode_hint_file(&mut [], 0, DEFAULT_HINT_INDEX_INTERVAL);
        assert_eq!(
            bytes,
            hex("10 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00")
        );
        let hf = parse_hint_file(&bytes).unwrap();
        assert!(hf.items.is_empty());
    }

    #[test]
    fn sort_order_equal_keyhash_by_key() {
        let mut items = vec![
            item(5, b"zz", 0),
            item(5, b"b", 256),
            item(1, b"y", 512),
            item(u64::MAX, b"a", 768),
            item(5, b"ba", 1024),
            item(5, b"a", 1280),
        ];
        let bytes = encode_hint_file(&mut items, 2048, DEFAULT_HINT_INDEX_INTERVAL);
        let hf = parse_hint_file(&bytes).unwrap();
        let order: Vec<(u64, &[u8])> = hf.items.iter().map(|i| (i.keyhash, &i.key[..])).collect();
        assert_eq!(
            order,
            [
                (1, &b"y"[..]),
                (5, b"a"),
                (5, b"b"),
                (5, b"ba"),
                (5, b"zz"),
                (u64::MAX, b"a")
            ]
        );
        assert_eq!(hf.items, items, "items are sorted in place too");
    }

    /// Independent statement of the §4.4 rule: an entry before the item at offset `o` when
    /// `o - last > interval - 279`, then `last = o`; `last` starts at 0.
    fn expected_index(items: &[HintItem], interval: i64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut o: i64 = 16;
        let mut last: i64 = 0;
        for it in items {
            if o - last > interval - 279 {
                out.push((it.keyhash, o as u64));
                last = o;
            }
            o += 23 + it.key.len() as i64;
        }
        out
    }

    #[test]
    fn sparse_index_positions() {
        let mut items: Vec<HintItem> = (0..1000u32)
            .map(|i| {
                let key = format!("key-{i}-{}", "x".repeat((i % 40) as usize)).into_bytes();
                HintItem {
                    keyhash: beansdb_hash::keyhash(&key),
                    chunk_id: 0,
                    offset: i * 256,
                    ver: i as i32 + 1,
                    vhash: i as u16,
                    key,
                }
            })
            .collect();
        sort_hint_items(&mut items);
        for interval in [4096u64, 1024] {
            let bytes = encode_hint_file(&mut items.clone(), 1000 * 256, interval);
            let want = expected_index(&items, interval as i64);
            assert!(want.len() > 5, "interval {interval} yields entries");
            assert_eq!(index_entries(&bytes), want, "interval {interval}");
            let items_end = 16 + items.iter().map(|i| 23 + i.key.len()).sum::<usize>();
            assert_eq!(u64_at(&bytes, 0) as usize, items_end);
            assert_eq!(bytes.len(), items_end + 16 * want.len());
            // Every entry points at the item with that keyhash.
            for (kh, off) in &want {
                assert_eq!(u64_at(&bytes, *off as usize), *kh);
            }
            let hf = parse_hint_file(&bytes).unwrap();
            assert_eq!(hf.items, items);
            assert_eq!(hf.datasize, 256_000);
        }
        // Spacing: consecutive entries are more than interval-279 apart, and no gap between
        // entries (or before the first) exceeds the interval.
        let bytes = encode_hint_file(&mut items.clone(), 0, 1024);
        let e = index_entries(&bytes);
        assert!(e[0].1 > 1024 - 279);
        for w in e.windows(2) {
            assert!(w[1].1 - w[0].1 > 1024 - 279 && w[1].1 - w[0].1 <= 1024 - 279 + 23 + 250);
        }
        // Tiny intervals put an entry before every item (interval - 279 is negative).
        let bytes = encode_hint_file(&mut items.clone(), 0, 0);
        assert_eq!(index_entries(&bytes).len(), 1000);
        assert!(parse_hint_file(&bytes).is_ok());
    }

    #[test]
    fn reader_round_trip_via_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut items: Vec<HintItem> = (0..300i32)
            .map(|i| {
                let key = vec![b'a' + (i % 26) as u8; 1 + (i as usize * 7) % 250];
                HintItem {
                    keyhash: beansdb_hash::keyhash(&key) ^ i as u64,
                    chunk_id: (i % 3) as u32,
                    offset: i as u32 * 512,
                    ver: if i % 5 == 0 { -(i + 1) } else { i + 1 },
                    vhash: if i % 5 == 0 { 0 } else { (i * 31) as u16 },
                    key,
                }
            })
            .collect();
        let path = dir.path().join(hint_file_name(3, 1, false));
        write_hint_file(&path, &mut items, 300 * 512, 4096, true).unwrap();
        assert!(!tmp_path(&path).exists());
        let hf = read_hint_file(&path).unwrap();
        assert_eq!(hf.items, items);
        assert_eq!(hf.datasize, 300 * 512);
        // Overwrite is atomic and replaces the content.
        write_hint_file(&path, &mut items[..1], 512, 4096, false).unwrap();
        assert_eq!(read_hint_file(&path).unwrap().items.len(), 1);
    }

    #[test]
    fn reader_rejects_corrupt_files() {
        let mut items: Vec<HintItem> = (0..200u32)
            .map(|i| item(i as u64 * 1000, format!("k{i}").as_bytes(), i * 256))
            .collect();
        let good = encode_hint_file(&mut items, 51200, 1024);
        assert!(!index_entries(&good).is_empty());
        assert!(parse_hint_file(&good).is_ok());
        let io = u64_at(&good, 0) as usize;

        // Every truncation is rejected, except dropping whole sparse-index entries, which the
        // format cannot detect (and which does not matter: the index is never used).
        for cut in 0..good.len() {
            let r = parse_hint_file(&good[..cut]);
            if cut >= io && (cut - io) & 15 == 0 {
                assert!(r.is_ok(), "cut at {cut}");
            } else {
                assert!(r.is_err(), "cut at {cut}");
            }
        }
        assert!(matches!(
            parse_hint_file(&good[..10]),
            Err(HintError::TooShort(10))
        ));
        // Extra bytes.
        let mut b = good.clone();
        b.push(0);
        assert!(parse_hint_file(&b).is_err());
        // Header fields.
        let mut b = good.clone();
        b[0..8].copy_from_slice(&0u64.to_le_bytes()); // unpatched header
        assert!(matches!(
            parse_hint_file(&b),
            Err(HintError::BadIndexOffset { .. })
        ));
        let mut b = good.clone();
        b[0..8].copy_from_slice(&(good.len() as u64 + 16).to_le_bytes());
        assert!(matches!(
            parse_hint_file(&b),
            Err(HintError::BadIndexOffset { .. })
        ));
        let mut b = good.clone();
        b[0..8].copy_from_slice(&(io as u64 + 1).to_le_bytes());
        assert!(matches!(
            parse_hint_file(&b),
            Err(HintError::BadIndexSize(_))
        ));
        let mut b = good.clone();
        b[0..8].copy_from_slice(&(io as u64 + 16).to_le_bytes());
        assert!(parse_hint_file(&b).is_err());
        let mut b = good.clone();
        b[8..12].copy_from_slice(&201u32.to_le_bytes());
        assert!(matches!(
            parse_hint_file(&b),
            Err(HintError::KeyCountMismatch {
                header: 201,
                found: 200
            })
        ));
        // An item's key length.
        let mut b = good.clone();
        b[16 + 22] = 0;
        assert!(parse_hint_file(&b).is_err());
        let mut b = good.clone();
        b[16 + 22] = 200;
        assert!(parse_hint_file(&b).is_err());
        // Unsorted keyhashes.
        let mut b = good.clone();
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(parse_hint_file(&b), Err(HintError::Unsorted(_))));
        // An index entry pointing outside the items.
        let mut b = good.clone();
        b[io + 8..io + 16].copy_from_slice(&(io as u64).to_le_bytes());
        assert!(matches!(
            parse_hint_file(&b),
            Err(HintError::BadIndexEntry(0))
        ));
        // Random bytes.
        let mut seed = 0x1234_5678_9abc_def0u64;
        for len in [16usize, 40, 100, 1000] {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 56) as u8
                })
                .collect();
            assert!(parse_hint_file(&junk).is_err());
        }
        // Missing file.
        assert!(matches!(
            read_hint_file("/nonexistent/000.000.idx.s"),
            Err(HintError::Io(_))
        ));
    }

    /// Every `.idx.s` written by gobeansdb parses, and re-encoding its items with the default
    /// 4K interval reproduces the file byte for byte.
    #[test]
    fn gobeansdb_fixture_hint_files() {
        let home = fixture_home();
        let mut n = 0;
        for bucket in fs::read_dir(&home).unwrap() {
            let bucket = bucket.unwrap().path();
            for entry in fs::read_dir(&bucket).unwrap() {
                let p = entry.unwrap().path();
                let name = p.file_name().unwrap().to_str().unwrap().to_string();
                let Some(FileName::Hint {
                    chunk,
                    split,
                    merged: false,
                }) = parse_file_name(&name)
                else {
                    continue;
                };
                assert_eq!(hint_file_name(chunk, split, false), name);
                n += 1;
                let original = fs::read(&p).unwrap();
                let hf =
                    parse_hint_file(&original).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                assert!(!hf.items.is_empty());
                let data_len = fs::metadata(bucket.join(data_file_name(chunk)))
                    .unwrap()
                    .len();
                assert!(hf.datasize as u64 <= data_len);
                let mut items = hf.items.clone();
                let again = encode_hint_file(&mut items, hf.datasize, DEFAULT_HINT_INDEX_INTERVAL);
                assert_eq!(again, original, "{}", p.display());
                assert_eq!(
                    items,
                    hf.items,
                    "{}: already in (keyhash, key) order",
                    p.display()
                );
            }
        }
        assert!(n >= 30, "found only {n} hint files");
    }

    #[test]
    fn file_names() {
        assert_eq!(data_file_name(0), "000.data");
        assert_eq!(data_file_name(997), "997.data");
        assert_eq!(hint_file_name(0, 0, false), "000.000.idx.s");
        assert_eq!(hint_file_name(12, 3, true), "012.003.idx.m");
        assert_eq!(htree_file_name(1, 0), "001.000.idx.hash");

        assert_eq!(parse_file_name("000.data"), Some(FileName::Data(0)));
        assert_eq!(parse_file_name("997.data"), Some(FileName::Data(997)));
        assert_eq!(
            parse_file_name("000.000.idx.s"),
            Some(FileName::Hint {
                chunk: 0,
                split: 0,
                merged: false
            })
        );
        assert_eq!(
            parse_file_name("012.003.idx.m"),
            Some(FileName::Hint {
                chunk: 12,
                split: 3,
                merged: true
            })
        );
        assert_eq!(
            parse_file_name("001.000.idx.hash"),
            Some(FileName::HTree { chunk: 1, split: 0 })
        );
        assert_eq!(parse_file_name("collision.yaml"), Some(FileName::Collision));
        assert_eq!(parse_file_name("nextgc.txt"), Some(FileName::NextGc));
        for tmp in [
            "000.data.tmp",
            "001.002.idx.s.tmp",
            "001.002.idx.m.tmp",
            "001.000.idx.hash.tmp",
            "collision.yaml.tmp",
            "nextgc.txt.tmp",
        ] {
            assert_eq!(parse_file_name(tmp), Some(FileName::Tmp), "{tmp}");
        }
        for other in [
            "",
            "0.data",
            "0000.data",
            "abc.data",
            "000.data.bak",
            "00a.000.idx.s",
            "000.00.idx.s",
            "000.000.idx.x",
            "000.000.idx.hash.old",
            "000.000.000.idx.s",
            "+12.data",
            "foo.tmp",
            "000.data.tmp.tmp",
            ".tmp",
            "README",
            "collision.yml",
        ] {
            assert_eq!(parse_file_name(other), None, "{other}");
        }
    }

    #[test]
    fn atomic_write_replaces_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.bin");
        write_file_atomic(&p, b"one", true).unwrap();
        write_file_atomic(&p, b"two!", false).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two!");
        assert!(!tmp_path(&p).exists());
        assert_eq!(
            tmp_path(Path::new("a/000.000.idx.s")),
            Path::new("a/000.000.idx.s.tmp")
        );
        // Failure (missing directory) reports an error and leaves nothing behind.
        let bad = dir.path().join("missing").join("x");
        assert!(write_file_atomic(&bad, b"x", true).is_err());
    }
}
