//! Process-wide request counters behind `stats` (node.md §9) and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[derive(Default)]
pub struct Counters {
    pub cmd_get: AtomicU64,
    pub cmd_set: AtomicU64,
    pub cmd_delete: AtomicU64,
    pub get_hits: AtomicU64,
    pub get_misses: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub slow_cmd: AtomicU64,
    pub curr_connections: AtomicU64,
    pub total_connections: AtomicU64,
    pub timeouts: AtomicU64,
    pub panics: AtomicU64,
    pub errors: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

pub struct ProcessInfo {
    pub started: Instant,
    pub start_unix: u64,
}

/// (user seconds, system seconds, max RSS KiB) of this process; zeroes if unavailable.
pub fn rusage() -> (u64, u64, u64) {
    let ru = beansdb_observe::process::rusage();
    (
        ru.ru_utime.tv_sec as u64,
        ru.ru_stime.tv_sec as u64,
        ru.ru_maxrss as u64,
    )
}

/// Number of OS threads (from /proc; 0 when unavailable).
pub fn thread_count() -> u64 {
    beansdb_observe::process::proc_status_field("Threads:")
}

pub use beansdb_observe::process::rss_bytes_statm as rss_bytes;

/// (free, total) bytes of the filesystem holding `path`.
pub fn disk_space(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct; `c` is a valid NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
}

/// Filesystem id, to sum space over distinct filesystems only.
pub fn fs_id(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.dev())
}
