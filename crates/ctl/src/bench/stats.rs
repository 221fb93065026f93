//! Counters and latency histograms. Connections record into a few mutex-guarded shards
//! (not one each: a histogram is ~100 KiB and `--connections` may be 10 000), merged at the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::spec::Op;

/// 1 µs … 60 s with 3 significant digits (tools.md §5).
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(us);
}

#[derive(Debug, Clone)]
pub struct OpStats {
    pub requests: u64,
    pub ok: u64,
    pub hits: u64,
    pub misses: u64,
    /// Keys asked for by reads (1 per get, N per getm).
    pub keys: u64,
    pub hist: Histogram<u64>,
}

impl OpStats {
    fn new() -> OpStats {
        OpStats {
            requests: 0,
            ok: 0,
            hits: 0,
            misses: 0,
            keys: 0,
            hist: new_histogram(),
        }
    }

    fn merge(&mut self, o: &OpStats) {
        self.requests += o.requests;
        self.ok += o.ok;
        self.hits += o.hits;
        self.misses += o.misses;
        self.keys += o.keys;
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&o.hist);
    }
}

/// Error counts by kind (the JSON `errors` object).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Errors {
    pub server_error: u64,
    pub client_error: u64,
    pub timeout: u64,
    pub connection: u64,
    pub protocol: u64,
    pub corrupt: u64,
    /// `NOT_STORED` to a set (beansdb: invalid key; should not happen with bench keys).
    pub not_stored: u64,
}

impl Errors {
    fn merge(&mut self, o: &Errors) {
        self.server_error += o.server_error;
        self.client_error += o.client_error;
        self.timeout += o.timeout;
        self.connection += o.connection;
        self.protocol += o.protocol;
        self.corrupt += o.corrupt;
        self.not_stored += o.not_stored;
    }

    /// Failed requests other than timeouts and corrupt values (the text `errors N`).
    pub fn failed(&self) -> u64 {
        self.server_error + self.client_error + self.connection + self.protocol + self.not_stored
    }

    pub fn pairs(&self) -> [(&'static str, u64); 7] {
        [
            ("server_error", self.server_error),
            ("client_error", self.client_error),
            ("timeout", self.timeout),
            ("connection", self.connection),
            ("protocol", self.protocol),
            ("corrupt", self.corrupt),
            ("not_stored", self.not_stored),
        ]
    }
}

/// Everything recorded by the connections of one shard.
#[derive(Debug, Clone)]
pub struct Stats {
    pub ops: [OpStats; 4],
    pub all: Histogram<u64>,
    pub errors: Errors,
    /// Requests sent more than 1 ms after their scheduled time.
    pub late: u64,
    pub max_lag: Duration,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub reconnects: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            ops: [
                OpStats::new(),
                OpStats::new(),
                OpStats::new(),
                OpStats::new(),
            ],
            all: new_histogram(),
            errors: Errors::default(),
            late: 0,
            max_lag: Duration::ZERO,
            bytes_sent: 0,
            bytes_received: 0,
            reconnects: 0,
        }
    }
}

impl Stats {
    pub fn op(&mut self, op: Op) -> &mut OpStats {
        &mut self.ops[op.index()]
    }

    pub fn merge(&mut self, o: &Stats) {
        for (a, b) in self.ops.iter_mut().zip(o.ops.iter()) {
            a.merge(b);
        }
        let _ = self.all.add(&o.all);
        self.errors.merge(&o.errors);
        self.late += o.late;
        self.max_lag = self.max_lag.max(o.max_lag);
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.reconnects += o.reconnects;
    }

    pub fn requests(&self) -> u64 {
        self.ops.iter().map(|o| o.requests).sum()
    }

    pub fn ok(&self) -> u64 {
        self.ops.iter().map(|o| o.ok).sum()
    }
}

/// Counters read by the progress display while the run goes on.
#[derive(Debug, Default)]
pub struct Live {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub preloaded: AtomicU64,
    pub dropped: AtomicU64,
}

impl Live {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Percentiles of a histogram, in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_percentiles() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        for us in 1..=1000u64 {
            record(&mut a.all, Duration::from_micros(us));
            a.op(Op::Get).requests += 1;
        }
        record(&mut b.all, Duration::from_secs(2));
        b.op(Op::Set).requests += 1;
        b.errors.timeout = 1;
        a.merge(&b);
        assert_eq!(a.requests(), 1001);
        assert_eq!(a.errors.timeout, 1);
        let l = Latency::of(&a.all);
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max);
        assert!((495..=505).contains(&l.p50), "{l:?}");
        assert!(l.max >= 1_999_000, "{l:?}");
        // Sub-microsecond and out-of-range values are clamped, not dropped.
        let mut h = new_histogram();
        record(&mut h, Duration::from_nanos(10));
        record(&mut h, Duration::from_secs(3600));
        assert_eq!(h.len(), 2);
        assert_eq!(Latency::of(&new_histogram()), Latency::default());
    }
}
