//! The backfill checkpoint file (cassandra.md §9.2): per bucket `"done"` or the last
//! completed listing path, written atomically (temporary file + rename).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CliError, CliResult};

/// Bucket state meaning "walked completely".
pub const DONE: &str = "done";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointCounters {
    pub scanned: u64,
    pub written: u64,
    pub deleted: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub prefixes: Vec<String>,
    pub numbucket: usize,
    /// Bucket hex id → `"done"` or the last completed listing path; absent = not started.
    pub buckets: BTreeMap<String, String>,
    /// Totals over every run that used this file.
    pub counters: CheckpointCounters,
    pub updated: String,
}

/// 64-bit FNV-1a (standard: unsigned bytes).
fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `DIR/backfill-<16 hex of fnv1a64(sorted prefixes joined by NUL)>.json`; `prefixes` must be
/// sorted already.
pub fn path_for(dir: &Path, prefixes: &[String]) -> PathBuf {
    let joined = prefixes.join("\0");
    dir.join(format!("backfill-{:016x}.json", fnv1a64(joined.as_bytes())))
}

impl Checkpoint {
    pub fn new(prefixes: &[String], numbucket: usize) -> Checkpoint {
        Checkpoint {
            version: 1,
            prefixes: prefixes.to_vec(),
            numbucket,
            buckets: BTreeMap::new(),
            counters: CheckpointCounters::default(),
            updated: String::new(),
        }
    }

    /// Reads `path`; exit 2 when unreadable, malformed, or made for another numbucket.
    pub fn load(path: &Path, numbucket: usize) -> CliResult<Checkpoint> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CliError::usage(format!("cannot read checkpoint {}: {e}", path.display()))
        })?;
        let cp: Checkpoint = serde_json::from_str(&text).map_err(|e| {
            CliError::usage(format!("checkpoint {} is malformed: {e}", path.display()))
                .with_hint("pass --restart to start over")
        })?;
        if cp.version != 1 {
            return Err(CliError::usage(format!(
                "checkpoint {} has unknown version {}",
                path.display(),
                cp.version
            )));
        }
        if cp.numbucket != numbucket {
            return Err(CliError::usage(format!(
                "checkpoint {} was made for numbucket {}",
                path.display(),
                cp.numbucket
            )));
        }
        Ok(cp)
    }

    pub fn is_done(&self, bucket_hex: &str) -> bool {
        self.buckets.get(bucket_hex).is_some_and(|s| s == DONE)
    }

    /// The last completed listing path of a started bucket.
    pub fn path_of(&self, bucket_hex: &str) -> Option<String> {
        self.buckets
            .get(bucket_hex)
            .filter(|s| s.as_str() != DONE)
            .cloned()
    }

    /// Writes the file atomically: a temporary file in the same directory, then a rename.
    pub fn save(&mut self, path: &Path) -> std::io::Result<()> {
        self.updated = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let text = serde_json::to_string(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_vectors() {
        // Standard FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        let p = path_for(Path::new("d"), &["/a/".to_string(), "/b/".to_string()]);
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(name.starts_with("backfill-") && name.ends_with(".json") && name.len() == 30);
    }

    #[test]
    fn roundtrip_and_numbucket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/cp.json");
        let mut cp = Checkpoint::new(&["/a/".into()], 16);
        cp.buckets.insert("0".into(), DONE.into());
        cp.buckets.insert("1".into(), "1a3".into());
        cp.save(&path).expect("save");
        let back = Checkpoint::load(&path, 16).expect("load");
        assert_eq!(back, cp);
        assert!(back.is_done("0") && !back.is_done("1"));
        assert_eq!(back.path_of("1").as_deref(), Some("1a3"));
        let e = Checkpoint::load(&path, 256).expect_err("numbucket");
        assert!(e.error.to_string().ends_with("was made for numbucket 16"));
    }
}
