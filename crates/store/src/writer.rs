//! The background writer: group-commits queued records of every bucket to their data files,
//! applies the fsync policy and periodically writes due hint splits.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::bucket::Bucket;
use crate::config::FsyncPolicy;

#[derive(Default)]
pub struct WriterSignal {
    state: Mutex<SignalState>,
    cv: Condvar,
}

#[derive(Default)]
struct SignalState {
    work: bool,
    stop: bool,
}

impl WriterSignal {
    pub fn wake(&self) {
        let mut s = self.state.lock();
        if !s.work {
            s.work = true;
            self.cv.notify_one();
        }
    }

    pub fn stop(&self) {
        let mut s = self.state.lock();
        s.stop = true;
        self.cv.notify_one();
    }

    /// Waits for work or `timeout`; returns (work, stop).
    fn wait(&self, timeout: Duration) -> (bool, bool) {
        let mut s = self.state.lock();
        if !s.work && !s.stop {
            self.cv.wait_for(&mut s, timeout);
        }
        let r = (s.work, s.stop);
        s.work = false;
        r
    }
}

/// Runs until stopped; drains every queue before returning.
pub(crate) fn run(
    buckets: Vec<Arc<Bucket>>,
    signal: Arc<WriterSignal>,
    fsync: FsyncPolicy,
    fsync_interval: Duration,
) {
    let mut files: Vec<HashMap<u32, File>> = buckets.iter().map(|_| HashMap::new()).collect();
    // (bucket index, chunk) → time of the first write not yet fsynced.
    let mut unsynced: HashMap<(usize, u32), Instant> = HashMap::new();
    let mut last_hint_pass = Instant::now();
    let mut failing = false;
    loop {
        let timeout = if failing || unsynced.is_empty() {
            Duration::from_secs(1)
        } else {
            fsync_interval.min(Duration::from_secs(1))
        };
        let (_, stop) = signal.wait(timeout);
        failing = false;
        for (i, b) in buckets.iter().enumerate() {
            match b.flush_queue(&mut files[i]) {
                Ok(touched) => {
                    if fsync == FsyncPolicy::Interval {
                        for c in touched {
                            unsynced.entry((i, c)).or_insert_with(Instant::now);
                        }
                    }
                }
                Err(_) => failing = true,
            }
            // Keep at most the head chunk's write handle open.
            if files[i].len() > 1 {
                let newest = files[i].keys().max().copied().unwrap_or(0);
                files[i].retain(|c, f| {
                    if *c != newest {
                        let _ = f.sync_data();
                    }
                    *c == newest
                });
            }
        }
        let now = Instant::now();
        unsynced.retain(|&(i, c), since| {
            if stop || now.duration_since(*since) >= fsync_interval {
                if let Some(f) = files[i].get(&c) {
                    let t = Instant::now();
                    let _ = f.sync_data();
                    crate::metrics::observe_fsync(t.elapsed());
                }
                false
            } else {
                true
            }
        });
        if last_hint_pass.elapsed() >= Duration::from_secs(5) {
            last_hint_pass = Instant::now();
            for b in &buckets {
                let mut inner = b.inner.lock();
                b.dump_hints_locked(&mut inner, false);
            }
        }
        if stop && !failing && buckets.iter().all(|b| b.queue_len() == 0) {
            for fs in &files {
                for f in fs.values() {
                    let _ = f.sync_data();
                }
            }
            return;
        }
    }
}
