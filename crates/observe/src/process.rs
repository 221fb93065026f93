//! Process figures from getrusage(2) and /proc, for `stats`, `/rusage` and metrics.

/// getrusage(RUSAGE_SELF); all zeroes if the call fails.
pub fn rusage() -> libc::rusage {
    // SAFETY: getrusage only writes into the zero-initialised struct passed by pointer, and
    // RUSAGE_SELF is a valid `who`; a zeroed rusage is a valid value of this plain C struct.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            ru = std::mem::zeroed();
        }
        ru
    }
}

/// `{"Sec", "Usec"}` of a Go `syscall.Timeval`.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Timeval {
    #[serde(rename = "Sec")]
    pub sec: libc::time_t,
    #[serde(rename = "Usec")]
    pub usec: libc::suseconds_t,
}

/// The `/rusage` JSON body, field names as Go's `syscall.Rusage` marshals them (C field
/// types kept, so numbers serialize exactly as the raw struct's did).
#[derive(Clone, Copy, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RusageReport {
    pub utime: Timeval,
    pub stime: Timeval,
    pub maxrss: libc::c_long,
    pub minflt: libc::c_long,
    pub majflt: libc::c_long,
    pub inblock: libc::c_long,
    pub oublock: libc::c_long,
    pub nvcsw: libc::c_long,
    pub nivcsw: libc::c_long,
}

impl RusageReport {
    pub fn now() -> RusageReport {
        let ru = rusage();
        let tv = |t: libc::timeval| Timeval {
            sec: t.tv_sec,
            usec: t.tv_usec,
        };
        RusageReport {
            utime: tv(ru.ru_utime),
            stime: tv(ru.ru_stime),
            maxrss: ru.ru_maxrss,
            minflt: ru.ru_minflt,
            majflt: ru.ru_majflt,
            inblock: ru.ru_inblock,
            oublock: ru.ru_oublock,
            nvcsw: ru.ru_nvcsw,
            nivcsw: ru.ru_nivcsw,
        }
    }
}

/// A numeric field of /proc/self/status (`name` with its colon, e.g. `"Threads:"`);
/// 0 when unavailable.
pub fn proc_status_field(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident set size in bytes from /proc/self/statm (4 KiB pages); 0 when unavailable.
pub fn rss_bytes_statm() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures() {
        assert!(proc_status_field("Threads:") >= 1);
        assert!(rss_bytes_statm() > 0);
        let r = RusageReport::now();
        assert!(r.maxrss > 0);
    }
}
