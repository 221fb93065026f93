//! `stats` counters (proxy.md §2.4) and process figures for `stats`, `/rusage/` and metrics.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Counters {
    pub curr_connections: AtomicU64,
    pub total_connections: AtomicU64,
    pub cmd_get: AtomicU64,
    pub cmd_set: AtomicU64,
    pub cmd_delete: AtomicU64,
    pub slow_cmd: AtomicU64,
    pub get_hits: AtomicU64,
    pub get_misses: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sub(c: &AtomicU64, n: u64) {
        c.fetch_sub(n, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Process figures from getrusage and /proc.
#[derive(Debug, Clone, Default)]
pub struct Process {
    pub utime_s: u64,
    pub stime_s: u64,
    pub cpu_seconds: f64,
    pub maxrss_kib: u64,
    pub rss_bytes: u64,
    pub threads: u64,
    pub open_fds: u64,
}

pub use beansdb_observe::process::rusage;

pub fn process() -> Process {
    let ru = rusage();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Process {
        utime_s: ru.ru_utime.tv_sec.max(0) as u64,
        stime_s: ru.ru_stime.tv_sec.max(0) as u64,
        cpu_seconds: secs(ru.ru_utime) + secs(ru.ru_stime),
        maxrss_kib: ru.ru_maxrss.max(0) as u64,
        rss_bytes: field("VmRSS:") * 1024,
        threads: field("Threads:"),
        open_fds,
    }
}
