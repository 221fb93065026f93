//! Shared parts of the Cassandra tools `backfill`, `verify` and `replay-errors`
//! (cassandra.md §7.2, §9): the Cassandra target with its dispatchers, the node hash-tree
//! walk, reads of beansdb through the nodes, record selection, counters and the record-rate
//! limiter.

pub mod cstar;
pub mod nodes;
pub mod walk;

use std::sync::atomic::{AtomicU64, Ordering};

use beansdb_cassandra::BdbValue;
use beansdb_protocol::is_valid_write_key;
use parking_lot::Mutex;
use serde::Serialize;

use self::cstar::CstarTarget;

/// At most this many failures are listed in a summary (the rest are only counted).
pub const MAX_FAILURES: usize = 1000;

/// A key as text for reports: UTF-8 as is, anything else `hex:<bytes>` (cassandra.md §9.3).
pub fn key_text(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) => s.to_string(),
        Err(_) => format!("hex:{}", hex(key)),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lowercase or uppercase hex → bytes; `None` when malformed.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A bounded list of failures: the first [`MAX_FAILURES`] are kept.
pub struct Failures<T> {
    list: Mutex<Vec<T>>,
}

impl<T> Default for Failures<T> {
    fn default() -> Self {
        Failures {
            list: Mutex::new(Vec::new()),
        }
    }
}

impl<T: Clone> Failures<T> {
    pub fn push(&self, f: T) {
        let mut l = self.list.lock();
        if l.len() < MAX_FAILURES {
            l.push(f);
        }
    }

    pub fn snapshot(&self) -> Vec<T> {
        self.list.lock().clone()
    }
}

/// A failure of one key (verify, replay-errors).
#[derive(Debug, Clone, Serialize)]
pub struct KeyFailure {
    pub key: String,
    pub error: String,
}

impl Failures<KeyFailure> {
    /// Prints `error: <tool> <key>: <error>` and keeps the failure for the summary.
    pub fn report(&self, tool: &str, key: &[u8], error: String) {
        eprintln!("error: {tool} {}: {error}", key_text(key));
        self.push(KeyFailure {
            key: key_text(key),
            error,
        });
    }
}

/// A relaxed counter (progress and summary only; no ordering is implied between counters).
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Token bucket on records (or keys) per second, burst max(1, rate/10); 0 = unlimited.
pub struct RecordRate(Option<crate::sync::node::Limiter>);

impl RecordRate {
    pub fn new(rate: u64) -> RecordRate {
        RecordRate((rate > 0).then(|| crate::sync::node::Limiter::new(rate)))
    }

    pub async fn acquire(&self) {
        if let Some(l) = &self.0 {
            l.acquire().await;
        }
    }
}

/// What a walk does with a record of `key` (cassandra.md §9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Under none of the prefixes.
    Unmatched,
    /// A key the proxy never writes to Cassandra.
    InvalidKey,
    /// Its status has no Cassandra writes.
    SkippedStatus,
    Selected,
}

/// Checks `key` against the prefixes, then as the proxy would.
pub fn select(prefixes: &[String], target: &CstarTarget, key: &[u8]) -> Selection {
    if !prefixes.iter().any(|p| key.starts_with(p.as_bytes())) {
        Selection::Unmatched
    } else if !is_valid_write_key(key) {
        Selection::InvalidKey
    } else if !target.status_ok(key) {
        Selection::SkippedStatus
    } else {
        Selection::Selected
    }
}

/// Walked records left alone, by [`Selection`].
#[derive(Default, Debug)]
pub struct Skips {
    pub unmatched: Counter,
    pub invalid_key: Counter,
    pub status: Counter,
}

impl Skips {
    /// Counts a record that is not selected; `true` when it is left alone.
    pub fn count(&self, s: Selection) -> bool {
        match s {
            Selection::Unmatched => self.unmatched.inc(),
            Selection::InvalidKey => self.invalid_key.inc(),
            Selection::SkippedStatus => self.status.inc(),
            Selection::Selected => return false,
        }
        true
    }
}

/// The Cassandra row of a live beansdb record whose second is `ts`.
pub fn record_row(flag: u32, ts: u32, body: Vec<u8>) -> BdbValue {
    BdbValue {
        rtime_ms: i64::from(ts) * 1000,
        flag,
        exptime: 0,
        cas: 0,
        body,
    }
}

/// `max(ts·1 000 000, floor)`: the write timestamp of a beansdb record whose second is `ts`.
pub fn record_ts_micros(ts: u32, floor: i64) -> i64 {
    (i64::from(ts) * 1_000_000).max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_as_text() {
        assert_eq!(key_text(b"/a/b"), "/a/b");
        assert_eq!(key_text(b"\xff\x00a"), "hex:ff0061");
        assert_eq!(unhex("ff0061"), Some(b"\xff\x00a".to_vec()));
        assert_eq!(unhex("FF"), Some(vec![0xff]));
        assert_eq!(unhex("f"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn timestamps() {
        assert_eq!(record_ts_micros(2, 0), 2_000_000);
        assert_eq!(record_ts_micros(2, 2_500_000), 2_500_000);
    }
}
