//! Shared parts of the Cassandra tools `backfill`, `verify` and `replay-errors`
//! (cassandra.md §7.2, §9): the Cassandra target with its dispatchers, the node hash-tree
//! walk, reads of beansdb through the nodes, counters and the record-rate limiter.

pub mod cstar;
pub mod nodes;
pub mod walk;

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

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
