//! `collision.yaml` (spec §4.6): keys whose 64-bit key hashes collide, with their positions.
//!
//! Written in the block style gobeansdb's YAML library produces; read with a general YAML
//! parser so flow style and hand edits load too.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

use serde_norway::{Mapping, Value};
use thiserror::Error;

use crate::hint::write_file_atomic;

pub use crate::hint::COLLISION_FILE_NAME;

/// Position, version and value hash of one colliding key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CollisionEntry {
    pub keyhash: u64,
    pub chunk_id: u32,
    pub offset: u32,
    pub ver: i32,
    pub vhash: u16,
}

/// keyhash → key → entry, plus the largest hint id merged so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollisionTable {
    pub hint_chunk: u32,
    pub hint_split: u32,
    pub items: BTreeMap<u64, BTreeMap<Vec<u8>, CollisionEntry>>,
}

#[derive(Debug, Error)]
pub enum CollisionError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("yaml syntax: {0}")]
    Yaml(#[from] serde_norway::Error),
    #[error("unexpected collision.yaml content: {0}")]
    Shape(String),
}

fn shape(msg: impl Into<String>) -> CollisionError {
    CollisionError::Shape(msg.into())
}

/// YAML 1.1 words that would not load as strings in gobeansdb's YAML library.
const SPECIAL_WORDS: &[&str] = &["y", "n", "yes", "no", "true", "false", "on", "off", "null"];

/// A key as a YAML scalar: plain when that is unambiguous under YAML 1.1 and 1.2, otherwise
/// double-quoted. Plain is restricted to a conservative character set so a key can never turn
/// into a number, bool, null, comment or mapping indicator.
fn yaml_key(key: &[u8]) -> String {
    let s = match std::str::from_utf8(key) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => {
            // YAML strings are Unicode; such keys cannot round-trip (and do not occur).
            tracing::warn!(key = ?key, "non-UTF-8 key in collision table written lossily");
            String::from_utf8_lossy(key)
        }
    };
    let plain_char = |c: char| c.is_alphanumeric() || matches!(c, '_' | '.' | '/' | '-');
    let plain = match s.chars().next() {
        None => false,
        Some(first) => {
            !(first.is_ascii_digit() || matches!(first, '-' | '.' | '+'))
                && s.chars().all(plain_char)
                && !SPECIAL_WORDS.contains(&s.to_ascii_lowercase().as_str())
        }
    };
    if plain {
        return s.into_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn to_u64(v: &Value, what: &str) -> Result<u64, CollisionError> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| shape(format!("{what}: not an unsigned integer: {v:?}")))
}

fn to_i64(v: &Value, what: &str) -> Result<i64, CollisionError> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| shape(format!("{what}: not an integer: {v:?}")))
}

fn as_map<'a>(v: &'a Value, what: &str) -> Result<Option<&'a Mapping>, CollisionError> {
    match v {
        Value::Null => Ok(None),
        Value::Mapping(m) => Ok(Some(m)),
        other => Err(shape(format!("{what}: not a mapping: {other:?}"))),
    }
}

/// Optional field as u32 (missing → 0, like gobeansdb's decoder).
fn field_u32(m: &Mapping, name: &str) -> Result<u32, CollisionError> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => u32::try_from(to_u64(v, name)?).map_err(|_| shape(format!("{name} too large"))),
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl CollisionTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn get(&self, keyhash: u64, key: &[u8]) -> Option<&CollisionEntry> {
        self.items.get(&keyhash)?.get(key)
    }

    pub fn contains_keyhash(&self, keyhash: u64) -> bool {
        self.items.contains_key(&keyhash)
    }

    /// Inserts or replaces the entry of `key` (its keyhash is `entry.keyhash`).
    pub fn insert(&mut self, key: Vec<u8>, entry: CollisionEntry) {
        self.items
            .entry(entry.keyhash)
            .or_default()
            .insert(key, entry);
    }

    pub fn remove(&mut self, keyhash: u64, key: &[u8]) -> Option<CollisionEntry> {
        let keys = self.items.get_mut(&keyhash)?;
        let e = keys.remove(key);
        if keys.is_empty() {
            self.items.remove(&keyhash);
        }
        e
    }

    /// The YAML document, block style, map keys sorted (keyhash numerically, keys bytewise).
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "hintid:\n  chunk: {}\n  split: {}\n",
            self.hint_chunk, self.hint_split
        );
        if self.items.is_empty() {
            out.push_str("items: {}\n");
            return out;
        }
        out.push_str("items:\n");
        for (keyhash, keys) in &self.items {
            if keys.is_empty() {
                let _ = writeln!(out, "  {keyhash}: {{}}");
                continue;
            }
            let _ = writeln!(out, "  {keyhash}:");
            for (key, e) in keys {
                let k = yaml_key(key);
                let _ = write!(
                    out,
                    "    {k}:\n      hintitemmeta:\n        keyhash: {}\n        pos:\n          \
                     chunkid: {}\n          offset: {}\n        ver: {}\n        vhash: {}\n      \
                     key: {k}\n",
                    e.keyhash, e.chunk_id, e.offset, e.ver, e.vhash
                );
            }
        }
        out
    }

    /// Parses a `collision.yaml` document (block or flow style). An empty document is an
    /// empty table.
    pub fn parse(text: &str) -> Result<Self, CollisionError> {
        let mut table = CollisionTable::default();
        if text.trim().is_empty() {
            return Ok(table);
        }
        let root: Value = serde_norway::from_str(text)?;
        let Some(root) = as_map(&root, "document")? else {
            return Ok(table);
        };
        if let Some(hintid) = root.get("hintid") {
            if let Some(h) = as_map(hintid, "hintid")? {
                table.hint_chunk = field_u32(h, "chunk")?;
                // gobeansdb's split is a signed int; a negative one means "none yet".
                table.hint_split = match h.get("split") {
                    None | Some(Value::Null) => 0,
                    Some(v) => u32::try_from(to_i64(v, "split")?.max(0))
                        .map_err(|_| shape("split too large"))?,
                };
            }
        }
        let Some(items) = root.get("items") else {
            return Ok(table);
        };
        let Some(items) = as_map(items, "items")? else {
            return Ok(table);
        };
        for (kh, keys) in items {
            let keyhash = to_u64(kh, "items keyhash")?;
            let slot = table.items.entry(keyhash).or_default();
            let Some(keys) = as_map(keys, "items entry")? else {
                continue;
            };
            for (k, item) in keys {
                let item = as_map(item, "item")?.ok_or_else(|| shape("empty item"))?;
                let key = match k {
                    Value::String(s) => s.clone(),
                    // A key that a YAML 1.2 reader resolved to another type: prefer the
                    // item's own `key` field.
                    other => item
                        .get("key")
                        .and_then(|v| v.as_str().map(String::from))
                        .or_else(|| scalar_text(other))
                        .ok_or_else(|| shape(format!("bad key {other:?}")))?,
                };
                let mut entry = CollisionEntry {
                    keyhash,
                    ..CollisionEntry::default()
                };
                if let Some(meta) = item.get("hintitemmeta") {
                    if let Some(meta) = as_map(meta, "hintitemmeta")? {
                        if let Some(v) = meta.get("keyhash") {
                            entry.keyhash = to_u64(v, "keyhash")?;
                        }
                        if let Some(pos) = meta.get("pos") {
                            if let Some(pos) = as_map(pos, "pos")? {
                                entry.chunk_id = field_u32(pos, "chunkid")?;
                                entry.offset = field_u32(pos, "offset")?;
                            }
                        }
                        if let Some(v) = meta.get("ver") {
                            entry.ver = i32::try_from(to_i64(v, "ver")?)
                                .map_err(|_| shape("ver out of range"))?;
                        }
                        if let Some(v) = meta.get("vhash") {
                            entry.vhash = u16::try_from(to_u64(v, "vhash")?)
                                .map_err(|_| shape("vhash out of range"))?;
                        }
                    }
                }
                slot.insert(key.into_bytes(), entry);
            }
        }
        Ok(table)
    }

    /// Loads `path`; a missing file is an empty table.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CollisionError> {
        match std::fs::read(path.as_ref()) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| shape("not UTF-8"))?;
                Self::parse(&text)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the table via `<path>.tmp` and rename.
    pub fn save(&self, path: impl AsRef<Path>, fsync: bool) -> io::Result<()> {
        write_file_atomic(path.as_ref(), self.to_yaml().as_bytes(), fsync)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "/subject/10460967/props";
    const K2: &str = "processed_log_backup_text_20140912102821_1020_13301733";
    const KH: u64 = 14415874356564954987;

    const SPEC_DOC: &str = "\
hintid:
  chunk: 0
  split: 0
items:
  14415874356564954987:
    /subject/10460967/props:
      hintitemmeta:
        keyhash: 14415874356564954987
        pos:
          chunkid: 0
          offset: 256
        ver: 2
        vhash: 33296
      key: /subject/10460967/props
    processed_log_backup_text_20140912102821_1020_13301733:
      hintitemmeta:
        keyhash: 14415874356564954987
        pos: {chunkid: 0, offset: 0}
        ver: 1
        vhash: 36303
      key: processed_log_backup_text_20140912102821_1020_13301733
";

    fn spec_table() -> CollisionTable {
        let mut t = CollisionTable::default();
        t.insert(
            K1.as_bytes().to_vec(),
            CollisionEntry {
                keyhash: KH,
                chunk_id: 0,
                offset: 256,
                ver: 2,
                vhash: 33296,
            },
        );
        t.insert(
            K2.as_bytes().to_vec(),
            CollisionEntry {
                keyhash: KH,
                chunk_id: 0,
                offset: 0,
                ver: 1,
                vhash: 36303,
            },
        );
        t
    }

    #[test]
    fn parse_spec_document_block() {
        assert_eq!(beansdb_hash::keyhash(K1.as_bytes()), KH);
        assert_eq!(beansdb_hash::keyhash(K2.as_bytes()), KH);
        let t = CollisionTable::parse(SPEC_DOC).unwrap();
        assert_eq!(t, spec_table());
        assert!(KH > i64::MAX as u64);
        assert_eq!(t.get(KH, K1.as_bytes()).unwrap().offset, 256);
    }

    #[test]
    fn parse_spec_document_flow() {
        let flow = format!(
            "{{hintid: {{chunk: 0, split: 0}}, items: {{{KH}: {{{K1}: {{hintitemmeta: \
             {{keyhash: {KH}, pos: {{chunkid: 0, offset: 256}}, ver: 2, vhash: 33296}}, key: {K1}}}, \
             {K2}: {{hintitemmeta: {{keyhash: {KH}, pos: {{chunkid: 0, offset: 0}}, ver: 1, \
             vhash: 36303}}, key: {K2}}}}}}}}}\n"
        );
        assert_eq!(CollisionTable::parse(&flow).unwrap(), spec_table());
        // Mixed: flow hintid, quoted keyhash key.
        let mixed = SPEC_DOC
            .replace(
                "hintid:\n  chunk: 0\n  split: 0\n",
                "hintid: {chunk: 3, split: 1}\n",
            )
            .replace("  14415874356564954987:\n", "  \"14415874356564954987\":\n");
        let t = CollisionTable::parse(&mixed).unwrap();
        assert_eq!((t.hint_chunk, t.hint_split), (3, 1));
        assert_eq!(t.items, spec_table().items);
    }

    #[test]
    fn writer_block_style() {
        let t = spec_table();
        let yaml = t.to_yaml();
        // Same as the spec document except its one flow-style `pos`.
        let want = SPEC_DOC.replace(
            "pos: {chunkid: 0, offset: 0}",
            "pos:\n          chunkid: 0\n          offset: 0",
        );
        assert_eq!(yaml, want);
        assert_eq!(CollisionTable::parse(&yaml).unwrap(), t);
    }

    #[test]
    fn empty_table_matches_gobeansdb() {
        let empty = CollisionTable::default().to_yaml();
        assert_eq!(empty, "hintid:\n  chunk: 0\n  split: 0\nitems: {}\n");
        let fixture = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/gobeansdb-2.1-home/home/0/collision.yaml"
        ))
        .expect("fixture collision.yaml missing");
        assert_eq!(empty, fixture);
        assert_eq!(
            CollisionTable::parse(&fixture).unwrap(),
            CollisionTable::default()
        );
        assert_eq!(
            CollisionTable::parse("").unwrap(),
            CollisionTable::default()
        );
        assert_eq!(
            CollisionTable::parse("hintid: {chunk: 0, split: 0}\nitems: {}\n").unwrap(),
            CollisionTable::default()
        );
        assert_eq!(
            CollisionTable::parse("items:\n").unwrap(),
            CollisionTable::default()
        );
    }

    #[test]
    fn gobeansdb_fixture_round_trip() {
        let home = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/gobeansdb-2.1-home/home"
        );
        let text = std::fs::read_to_string(format!("{home}/c/collision.yaml"))
            .expect("fixture collision.yaml missing");
        let t = CollisionTable::load(format!("{home}/c/collision.yaml")).unwrap();
        assert_eq!(t.items.len(), 1);
        assert_eq!(t.get(KH, K1.as_bytes()).unwrap().offset, 31488);
        assert_eq!(t.get(KH, K2.as_bytes()).unwrap().ver, 1);
        // Byte-identical output for gobeansdb's own file.
        assert_eq!(t.to_yaml(), text);
        for entry in std::fs::read_dir(home).unwrap() {
            let p = entry.unwrap().path().join("collision.yaml");
            let text = std::fs::read_to_string(&p).unwrap();
            assert_eq!(
                CollisionTable::parse(&text).unwrap().to_yaml(),
                text,
                "{}",
                p.display()
            );
        }
    }

    #[test]
    fn round_trip_with_big_keyhashes_and_odd_keys() {
        let mut t = CollisionTable {
            hint_chunk: 997,
            hint_split: 12,
            ..Default::default()
        };
        let odd_keys: &[&str] = &[
            "yes",
            "No",
            "TRUE",
            "off",
            "null",
            "~",
            "y",
            "123",
            "1e3",
            "0x1F",
            "-1",
            ".inf",
            "+5",
            "a: b",
            "#comment",
            "key#x",
            "a,b",
            "[x]",
            "{y}",
            "&anchor",
            "*alias",
            "!tag",
            "|",
            ">",
            "'q'",
            "\"dq\"",
            "back\\slash",
            "@at",
            "%pct",
            "`tick`",
            "中文/键",
            "x:y",
            "ends:",
            "?q",
            "tab\tkey",
            "ctl\u{1}x",
            "plain_key-1.2/3",
        ];
        for (i, k) in odd_keys.iter().enumerate() {
            let kh = if i % 2 == 0 {
                u64::MAX - i as u64
            } else {
                i as u64
            };
            t.insert(
                k.as_bytes().to_vec(),
                CollisionEntry {
                    keyhash: kh,
                    chunk_id: i as u32,
                    offset: (i as u32) << 8,
                    ver: if i % 3 == 0 {
                        -(i as i32) - 1
                    } else {
                        i as i32 + 1
                    },
                    vhash: u16::MAX - i as u16,
                },
            );
        }
        t.insert(
            b"same".to_vec(),
            CollisionEntry {
                keyhash: u64::MAX,
                chunk_id: 1,
                offset: 2,
                ver: i32::MIN,
                vhash: 0,
            },
        );
        let yaml = t.to_yaml();
        let back = CollisionTable::parse(&yaml).unwrap();
        assert_eq!(back, t, "{yaml}");
        assert!(yaml.contains("  18446744073709551615:\n"));
        assert!(yaml.contains("\n    plain_key-1.2/3:\n"));
        assert!(yaml.contains("\n    \"yes\":\n"));
    }

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(COLLISION_FILE_NAME);
        assert_eq!(CollisionTable::load(&p).unwrap(), CollisionTable::default());
        let t = spec_table();
        t.save(&p, true).unwrap();
        assert!(!dir.path().join("collision.yaml.tmp").exists());
        assert_eq!(CollisionTable::load(&p).unwrap(), t);
        std::fs::write(&p, "items: [1, 2").unwrap();
        assert!(CollisionTable::load(&p).is_err());
        std::fs::write(&p, "items: [1, 2]").unwrap();
        assert!(matches!(
            CollisionTable::load(&p),
            Err(CollisionError::Shape(_))
        ));
        std::fs::write(&p, "items: {abc: {}}").unwrap();
        assert!(CollisionTable::load(&p).is_err());
    }

    #[test]
    fn remove_entries() {
        let mut t = spec_table();
        assert!(t.remove(KH, K1.as_bytes()).is_some());
        assert!(t.contains_keyhash(KH));
        assert!(t.remove(KH, K2.as_bytes()).is_some());
        assert!(t.is_empty());
        assert!(t.remove(KH, K2.as_bytes()).is_none());
    }
}
