//! Engine counters, exported by the node as Prometheus metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub static RECOVERY_TRUNCATED: AtomicU64 = AtomicU64::new(0);
pub static HINT_REBUILDS: AtomicU64 = AtomicU64::new(0);
pub static READ_ERRORS: AtomicU64 = AtomicU64::new(0);
pub static WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);
pub static SAME_VALUE_SKIPS: AtomicU64 = AtomicU64::new(0);
pub static BATCHES: AtomicU64 = AtomicU64::new(0);
pub static BATCH_BYTES: AtomicU64 = AtomicU64::new(0);
pub static FSYNCS: AtomicU64 = AtomicU64::new(0);
pub static FSYNC_MICROS: AtomicU64 = AtomicU64::new(0);

pub fn observe_batch(bytes: usize) {
    BATCHES.fetch_add(1, Ordering::Relaxed);
    BATCH_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
}

pub fn observe_fsync(d: Duration) {
    FSYNCS.fetch_add(1, Ordering::Relaxed);
    FSYNC_MICROS.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
}
