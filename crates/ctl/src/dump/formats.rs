//! Lenient readers for hint files, htree dumps and legacy C hints, plus the display helpers and
//! home-layout discovery shared by `dump` and `check` (tools.md §3.1).
//!
//! The store crate's readers reject a whole file at the first inconsistency, which is right for
//! the node; an inspection tool needs everything that can still be read plus a list of what is
//! wrong, so these parsers keep going and collect problems.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use beansdb_store::compress::qlz_decompress;
use beansdb_store::hint::{
    parse_file_name, FileName, HintItem, HINT_HEADER_SIZE, HINT_INDEX_ENTRY_SIZE,
    HINT_ITEM_HEADER_SIZE,
};

use crate::error::{CliError, CliResult};

// ------------------------------------------------------------------------------------------------
// Display helpers.

/// Keys and text values for one-line output: printable ASCII as is, other bytes (and the
/// space and backslash, which would make a line ambiguous) as `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x21..=0x7e).contains(&b) && b != b'\\' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Names of the flag bits (tools.md §3.1 table).
pub fn flag_names(flag: u32) -> Vec<&'static str> {
    let mut names = Vec::new();
    if flag & 0x0001_0000 != 0 {
        names.push("qlz");
    }
    let client = flag & !0x0001_0000;
    match client {
        0x204 => names.push("counter"),
        0x100 => names.push("append"),
        _ => {
            for (bit, name) in [
                (0x1, "pickle"),
                (0x2, "int"),
                (0x4, "long"),
                (0x8, "bool"),
                (0x10, "zlib"),
                (0x20, "marshal"),
                (0x1000, "chunked"),
            ] {
                if client & bit != 0 {
                    names.push(name);
                }
            }
        }
    }
    names
}

/// `0x00010000[qlz]`, or the bare hex when no bit has a name.
pub fn flag_text(flag: u32) -> String {
    let names = flag_names(flag);
    if names.is_empty() {
        format!("{flag:#010x}")
    } else {
        format!("{flag:#010x}[{}]", names.join(","))
    }
}

/// `2023-11-14T22:13:20Z`.
pub fn utc(ts: u32) -> String {
    chrono::DateTime::from_timestamp(i64::from(ts), 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".to_string())
}

/// Puts a key into a JSON object as `key` (UTF-8) or `key_hex`.
pub fn json_key(obj: &mut serde_json::Map<String, serde_json::Value>, key: &[u8]) {
    match std::str::from_utf8(key) {
        Ok(s) => obj.insert("key".into(), s.into()),
        Err(_) => obj.insert("key_hex".into(), hex(key).into()),
    };
}

// ------------------------------------------------------------------------------------------------
// Hint files.

/// One item with the file offset it was read from.
#[derive(Debug, Clone)]
pub struct HintEntry {
    pub file_offset: u64,
    pub item: HintItem,
}

/// Everything readable from a hint file, and what is wrong with it.
#[derive(Debug, Default)]
pub struct HintParse {
    pub size: u64,
    pub index_offset: u64,
    pub num_keys: u32,
    pub data_size: u32,
    pub items: Vec<HintEntry>,
    /// Sparse index entries `(khash, item file offset)`.
    pub index: Vec<(u64, i64)>,
    /// `HINT_BAD_FILE` reasons.
    pub problems: Vec<String>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Parses a `.idx.s`/`.idx.m` file as far as it goes (tools.md §3.1, node.md §4.4).
pub fn parse_hint(bytes: &[u8]) -> HintParse {
    let size = bytes.len() as u64;
    let mut p = HintParse {
        size,
        ..HintParse::default()
    };
    if bytes.len() < HINT_HEADER_SIZE {
        p.problems
            .push(format!("header truncated: file has {size} bytes, needs 16"));
        return p;
    }
    p.index_offset = u64_at(bytes, 0);
    p.num_keys = u32_at(bytes, 8);
    p.data_size = u32_at(bytes, 12);
    let items_end = if p.index_offset < HINT_HEADER_SIZE as u64 || p.index_offset > size {
        p.problems.push(format!(
            "index_offset {} outside the file ({size} bytes)",
            p.index_offset
        ));
        // Items are still read up to the end, so a bad header does not hide them.
        bytes.len()
    } else {
        // Entries are 16 bytes (a mask, as `is_multiple_of` is newer than the MSRV).
        if (size - p.index_offset) & (HINT_INDEX_ENTRY_SIZE as u64 - 1) != 0 {
            p.problems.push(format!(
                "index region of {} bytes is not a multiple of 16",
                size - p.index_offset
            ));
        }
        p.index_offset as usize
    };
    let mut pos = HINT_HEADER_SIZE;
    let mut unsorted_reported = false;
    while pos < items_end {
        if items_end - pos < HINT_ITEM_HEADER_SIZE {
            p.problems.push(format!(
                "item at {pos} truncated: {} bytes left, header needs 23",
                items_end - pos
            ));
            break;
        }
        let h = &bytes[pos..pos + HINT_ITEM_HEADER_SIZE];
        let ksz = h[22] as usize;
        let key_end = pos + HINT_ITEM_HEADER_SIZE + ksz;
        if ksz == 0 {
            p.problems.push(format!("item at {pos} has an empty key"));
            break;
        }
        if key_end > items_end {
            p.problems.push(format!(
                "item at {pos} truncated: key of {ksz} bytes, {} left",
                items_end - pos - HINT_ITEM_HEADER_SIZE
            ));
            break;
        }
        let item = HintItem {
            keyhash: u64_at(h, 0),
            chunk_id: u32_at(h, 8),
            offset: u32_at(h, 12),
            ver: u32_at(h, 16) as i32,
            vhash: u16::from_le_bytes([h[20], h[21]]),
            key: bytes[pos + HINT_ITEM_HEADER_SIZE..key_end].to_vec(),
        };
        if let Some(prev) = p.items.last() {
            let ordered = (prev.item.keyhash, &prev.item.key) <= (item.keyhash, &item.key);
            if !ordered && !unsorted_reported {
                p.problems.push(format!(
                    "items unsorted: item at {pos} (khash {:016x}) sorts before the previous one",
                    item.keyhash
                ));
                unsorted_reported = true;
            }
        }
        p.items.push(HintEntry {
            file_offset: pos as u64,
            item,
        });
        pos = key_end;
    }
    if p.items.len() as u64 != u64::from(p.num_keys) {
        p.problems.push(format!(
            "num_keys {} in the header, {} items found",
            p.num_keys,
            p.items.len()
        ));
    }
    if items_end == p.index_offset as usize {
        for (i, e) in bytes[items_end..]
            .chunks_exact(HINT_INDEX_ENTRY_SIZE)
            .enumerate()
        {
            let kh = u64_at(e, 0);
            let off = u64_at(e, 8) as i64;
            p.index.push((kh, off));
            let hit = p
                .items
                .binary_search_by_key(&(off as u64), |it| it.file_offset)
                .ok()
                .map(|i| p.items[i].item.keyhash);
            if hit != Some(kh) {
                p.problems.push(format!(
                    "index entry {i} (khash {kh:016x}, offset {off}) is not at an item with that khash"
                ));
            }
        }
    }
    p
}

/// A legacy C beansdb `NNN.hint.qlz` entry.
#[derive(Debug, Clone)]
pub struct LegacyHint {
    pub offset: u32,
    pub ver: i32,
    pub vhash: u16,
    pub key: Vec<u8>,
}

/// Parses a legacy C `NNN.hint.qlz`: one QuickLZ block of `u32 w | ver i32 | vhash u16 | key
/// | NUL` entries, with ksz = w & 0xff and offset = w & 0xffffff00.
pub fn parse_legacy_hint(bytes: &[u8]) -> Result<Vec<LegacyHint>, String> {
    let plain = qlz_decompress(bytes).map_err(|e| format!("not a QuickLZ block: {e}"))?;
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < plain.len() {
        if plain.len() - pos < 10 {
            return Err(format!("entry at {pos} truncated"));
        }
        let w = u32_at(&plain, pos);
        let ksz = (w & 0xff) as usize;
        let key_start = pos + 10;
        let end = key_start + ksz + 1;
        if end > plain.len() {
            return Err(format!("entry at {pos} truncated"));
        }
        out.push(LegacyHint {
            offset: w & 0xffff_ff00,
            ver: u32_at(&plain, pos + 4) as i32,
            vhash: u16::from_le_bytes([plain[pos + 8], plain[pos + 9]]),
            key: plain[key_start..key_start + ksz].to_vec(),
        });
        pos = end;
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------------
// Htree dumps.

/// Bytes of khash kept per item, indexed by `depth + height - 1` (node.md §4.5).
const KHASH_LENS: [usize; 8] = [8, 8, 7, 7, 6, 6, 5, 5];

#[derive(Debug, Clone)]
pub struct HtreeItem {
    pub khash: u64,
    pub ver: i32,
    pub vhash: u16,
    pub offset: u32,
    pub chunk: u32,
}

#[derive(Debug, Clone)]
pub struct HtreeLeaf {
    pub count: u32,
    pub hash: u16,
    pub items: Vec<HtreeItem>,
}

impl HtreeLeaf {
    /// Count and hash recomputed from the items (live ones only).
    pub fn computed(&self) -> (u32, u16) {
        let mut count = 0u32;
        let mut hash = 0u16;
        for it in self.items.iter().filter(|it| it.ver > 0) {
            count += 1;
            hash = hash.wrapping_add(it.vhash.wrapping_mul((it.khash >> 32) as u16));
        }
        (count, hash)
    }
}

/// Parses a `.idx.hash` of bucket `bucket` in a store of `numbucket` buckets, tree `height`.
pub fn parse_htree(
    bytes: &[u8],
    numbucket: usize,
    height: u32,
    bucket: usize,
) -> Result<Vec<HtreeLeaf>, String> {
    let depth = beansdb_hash::bucket_depth(numbucket)
        .ok_or_else(|| format!("numbucket {numbucket} is not 1, 16 or 256"))?;
    if height < 1 || (depth + height) as usize > KHASH_LENS.len() {
        return Err(format!(
            "height {height} invalid for numbucket {numbucket} (need 1 <= height <= {})",
            KHASH_LENS.len() as u32 - depth
        ));
    }
    let klen = KHASH_LENS[(depth + height - 1) as usize];
    let item_size = klen + 11;
    let leaves = 1usize << (4 * (height - 1));
    if bytes.len() < 10 * leaves {
        return Err(format!(
            "{} bytes is too short for {leaves} leaves (at least {})",
            bytes.len(),
            10 * leaves
        ));
    }
    let mut out = Vec::with_capacity(leaves);
    let mut pos = 6 * leaves;
    for li in 0..leaves {
        let Some(lb) = bytes.get(pos..pos + 4) else {
            return Err(format!("leaf {li}: length truncated at {pos}"));
        };
        let len = u32_at(lb, 0) as usize;
        pos += 4;
        if len.checked_rem(item_size) != Some(0) {
            return Err(format!(
                "leaf {li}: length {len} is not a multiple of the item size {item_size}"
            ));
        }
        let Some(data) = bytes.get(pos..pos + len) else {
            return Err(format!("leaf {li}: {len} item bytes truncated at {pos}"));
        };
        pos += len;
        let path_bits = 4 * (depth + height - 1);
        let path = ((bucket as u64) << (4 * (height - 1))) | li as u64;
        let top = if path_bits == 0 {
            0
        } else {
            path << (64 - path_bits)
        };
        let mask = if klen == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * klen)) - 1
        };
        let items = data
            .chunks_exact(item_size)
            .map(|it| {
                let mut kb = [0u8; 8];
                kb[..klen].copy_from_slice(&it[..klen]);
                let low = u64::from_le_bytes(kb);
                let k = klen;
                HtreeItem {
                    khash: (low & mask) | (top & !mask),
                    ver: i32::from_le_bytes([it[k], it[k + 1], it[k + 2], it[k + 3]]),
                    vhash: u16::from_le_bytes([it[k + 4], it[k + 5]]),
                    offset: u32::from_le_bytes([it[k + 6], it[k + 7], it[k + 8], 0]) << 8,
                    chunk: u32::from(u16::from_le_bytes([it[k + 9], it[k + 10]])),
                }
            })
            .collect();
        let c = &bytes[6 * li..6 * li + 6];
        out.push(HtreeLeaf {
            count: u32_at(c, 0),
            hash: u16::from_le_bytes([c[4], c[5]]),
            items,
        });
    }
    if pos != bytes.len() {
        return Err(format!(
            "{} bytes after the last leaf (file {} bytes, expected {pos})",
            bytes.len() - pos,
            bytes.len()
        ));
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------------
// Home layout.

/// One bucket directory to inspect.
#[derive(Debug, Clone)]
pub struct BucketDir {
    /// Bucket id, when the layout tells it.
    pub id: Option<usize>,
    pub dir: PathBuf,
    /// Path relative to the inspected PATH (`3`, `a/3`), empty for PATH itself.
    pub rel: String,
}

impl BucketDir {
    /// `3/000.data`, or just the name for a bucket directory given directly.
    pub fn show(&self, name: &str) -> String {
        if self.rel.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.rel)
        }
    }
}

#[derive(Debug)]
pub enum Layout {
    File(PathBuf),
    Buckets {
        numbucket: usize,
        buckets: Vec<BucketDir>,
    },
}

fn is_hex_digit_name(p: &Path) -> Option<usize> {
    let name = p.file_name()?.to_str()?;
    if name.len() == 1 {
        usize::from_str_radix(name, 16).ok().filter(|_| {
            name.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
    } else {
        None
    }
}

/// Whether `dir` holds any file a bucket directory has.
fn has_bucket_files(dir: &Path) -> std::io::Result<bool> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        if let Some(name) = e.file_name().to_str() {
            if matches!(
                parse_file_name(name),
                Some(FileName::Data(_) | FileName::Hint { .. } | FileName::HTree { .. })
            ) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn hex_subdirs(dir: &Path) -> std::io::Result<Vec<(usize, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if let Some(d) = is_hex_digit_name(&p) {
            if p.is_dir() {
                out.push((d, p));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn io_err(path: &Path, e: std::io::Error) -> CliError {
    CliError::runtime(anyhow::Error::new(e).context(format!("cannot read {}", path.display())))
}

/// A data file, a bucket directory, or a home (tools.md §3.3); numbucket is inferred from the
/// depth of the hex directories unless given.
pub fn discover(path: &Path, numbucket: Option<usize>) -> CliResult<Layout> {
    let meta = fs::metadata(path).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            crate::error::exit::USAGE
        } else {
            crate::error::exit::RUNTIME
        };
        CliError::new(
            code,
            anyhow::Error::new(e).context(format!("cannot open {}", path.display())),
        )
    })?;
    if meta.is_file() {
        return Ok(Layout::File(path.to_path_buf()));
    }
    if has_bucket_files(path).map_err(|e| io_err(path, e))? || numbucket == Some(1) {
        let name_digit = is_hex_digit_name(path);
        let parent_digit = path.parent().and_then(is_hex_digit_name);
        let (nb, id) = match (numbucket, name_digit) {
            (Some(256), Some(d)) => (256, parent_digit.map(|p| p * 16 + d)),
            (Some(16), Some(d)) => (16, Some(d)),
            (Some(n), _) if n != 1 => (n, None),
            (None, Some(d)) => (16, Some(d)),
            _ => (1, Some(0)),
        };
        return Ok(Layout::Buckets {
            numbucket: nb,
            buckets: vec![BucketDir {
                id,
                dir: path.to_path_buf(),
                rel: String::new(),
            }],
        });
    }
    let top = hex_subdirs(path).map_err(|e| io_err(path, e))?;
    if top.is_empty() {
        return Err(CliError::usage(format!(
            "{} holds no data files and no hex bucket directories",
            path.display()
        )));
    }
    let nb = match numbucket {
        Some(n) => n,
        None => {
            let mut deep = false;
            for (_, d) in &top {
                if !hex_subdirs(d).map_err(|e| io_err(d, e))?.is_empty()
                    && !has_bucket_files(d).map_err(|e| io_err(d, e))?
                {
                    deep = true;
                    break;
                }
            }
            if deep {
                256
            } else {
                16
            }
        }
    };
    let mut buckets = Vec::new();
    for (hi, d) in top {
        if nb == 256 {
            for (lo, d2) in hex_subdirs(&d).map_err(|e| io_err(&d, e))? {
                buckets.push(BucketDir {
                    id: Some(hi * 16 + lo),
                    dir: d2,
                    rel: format!("{hi:x}/{lo:x}"),
                });
            }
        } else {
            buckets.push(BucketDir {
                id: Some(hi),
                dir: d,
                rel: format!("{hi:x}"),
            });
        }
    }
    Ok(Layout::Buckets {
        numbucket: nb,
        buckets,
    })
}

/// The files of a bucket directory, classified.
#[derive(Debug, Default)]
pub struct BucketFiles {
    /// `(chunk, path)` sorted by chunk.
    pub data: Vec<(u32, PathBuf)>,
    /// `(chunk, split, merged, path)` sorted.
    pub hints: Vec<(u32, u32, bool, PathBuf)>,
    /// `(chunk, split, path)` sorted.
    pub htrees: Vec<(u32, u32, PathBuf)>,
}

pub fn list_bucket(dir: &Path) -> std::io::Result<BucketFiles> {
    let mut f = BucketFiles::default();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let path = e.path();
        match parse_file_name(&name) {
            Some(FileName::Data(c)) => f.data.push((c, path)),
            Some(FileName::Hint {
                chunk,
                split,
                merged,
            }) => f.hints.push((chunk, split, merged, path)),
            Some(FileName::HTree { chunk, split }) => f.htrees.push((chunk, split, path)),
            _ => {}
        }
    }
    f.data.sort();
    f.hints.sort();
    f.htrees.sort();
    Ok(f)
}

/// Whether the file was modified in the last 60 s (a live node may be writing it).
pub fn is_active(path: &Path) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() < 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use beansdb_store::hint::encode_hint_file;

    #[test]
    fn escapes_and_flags() {
        assert_eq!(escape(b"hello"), "hello");
        assert_eq!(escape(b"a b\\\xff"), "a\\x20b\\x5c\\xff");
        assert_eq!(flag_text(0), "0x00000000");
        assert_eq!(flag_text(0x10000), "0x00010000[qlz]");
        assert_eq!(flag_text(0x204), "0x00000204[counter]");
        assert_eq!(flag_text(0x11), "0x00000011[pickle,zlib]");
        assert_eq!(flag_text(0x100), "0x00000100[append]");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    fn item(kh: u64, key: &str) -> HintItem {
        HintItem {
            keyhash: kh,
            chunk_id: 0,
            offset: 0,
            ver: 1,
            vhash: 7,
            key: key.as_bytes().to_vec(),
        }
    }

    #[test]
    fn hint_parse_ok_and_broken() {
        let mut items = vec![item(5, "b"), item(1, "a")];
        let bytes = encode_hint_file(&mut items, 512, 4096);
        let p = parse_hint(&bytes);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(p.items.len(), 2);
        assert_eq!(p.data_size, 512);
        assert_eq!(p.items[0].item.key, b"a");

        let p = parse_hint(&bytes[..bytes.len() - 3]);
        assert!(!p.problems.is_empty());

        let mut bad = bytes.clone();
        bad[8] = 3; // num_keys
        let p = parse_hint(&bad);
        assert!(
            p.problems.iter().any(|m| m.contains("num_keys 3")),
            "{:?}",
            p.problems
        );
    }

    #[test]
    fn htree_khash_rebuilt_from_path() {
        // node.md §4.5 example: 16 buckets, height 2, bucket 4 holding only `hello`.
        let mut bytes = vec![0u8; 6 * 16];
        bytes[90..96].copy_from_slice(&[1, 0, 0, 0, 0x28, 0x3e]);
        for _ in 0..15 {
            bytes.extend_from_slice(&[0, 0, 0, 0]);
        }
        bytes.extend_from_slice(&[
            0x12, 0, 0, 0, 0x47, 0xfa, 0x8b, 0x24, 0xab, 0x2c, 0x9f, 1, 0, 0, 0, 0x78, 0xea, 0, 0,
            0, 0, 0,
        ]);
        assert_eq!(bytes.len(), 178);
        let leaves = parse_htree(&bytes, 16, 2, 4).unwrap();
        assert_eq!(leaves.len(), 16);
        let it = &leaves[15].items[0];
        assert_eq!(it.khash, 0x4f9f_2cab_248b_fa47);
        assert_eq!(it.ver, 1);
        assert_eq!(leaves[15].computed(), (1, 0x3e28));
        assert_eq!((leaves[15].count, leaves[15].hash), (1, 0x3e28));
    }
}
