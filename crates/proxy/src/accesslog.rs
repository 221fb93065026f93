//! Access log, V1 line format (proxy.md §7.5):
//! `YYYY/MM/DD HH:MM:SS.uuuuuu V1 <client> <CMD> <SUCC|FAILED> <sizes> <targets> <µs> <keys>`.
//! `beansctl replay` parses the GET/GETM lines. SIGUSR1 reopens the file.

use std::io::Write;
use std::time::Duration;

use beansdb_observe::accesslog::LineFile;

/// Longest time an access-log line waits in memory.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

pub struct AccessLog {
    file: LineFile,
}

/// One line's fields.
pub struct Entry<'a> {
    pub client: &'a str,
    pub cmd: &'a str,
    pub ok: bool,
    pub sizes: &'a str,
    /// Backends in first-success order; the proxy's own `hostname:port` is appended.
    pub targets: &'a [String],
    pub micros: u128,
    pub keys: &'a [&'a [u8]],
}

impl AccessLog {
    /// Missing parent directories are created. Lines are buffered and reach the file within
    /// [`FLUSH_EVERY`]: one `write(2)` per request costs a busy proxy noticeably.
    pub fn open(path: &str) -> std::io::Result<AccessLog> {
        Ok(AccessLog {
            file: LineFile::open_buffered(path, true, FLUSH_EVERY)?,
        })
    }

    /// Writes out buffered lines (at shutdown).
    pub fn flush(&self) {
        self.file.flush();
    }

    pub fn reopen(&self) -> std::io::Result<()> {
        self.file.reopen()
    }

    pub fn write(&self, e: &Entry<'_>, me: &str) {
        self.file.write_line(&format_entry(e, me));
    }
}

/// The line bytes, `\n` included. Keys are written as received (they contain no space).
pub fn format_entry(e: &Entry<'_>, me: &str) -> Vec<u8> {
    let mut line = Vec::with_capacity(128 + e.sizes.len() + 16 * e.keys.len());
    timestamp(&mut line);
    line.extend_from_slice(b" V1 ");
    for field in [e.client, e.cmd, if e.ok { "SUCC" } else { "FAILED" }] {
        line.extend_from_slice(field.as_bytes());
        line.push(b' ');
    }
    line.extend_from_slice(if e.sizes.is_empty() {
        b"0"
    } else {
        e.sizes.as_bytes()
    });
    line.push(b' ');
    if e.targets.is_empty() {
        line.extend_from_slice(b"NoWhere");
    }
    for (i, t) in e.targets.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        line.extend_from_slice(t.as_bytes());
    }
    line.push(b',');
    line.extend_from_slice(me.as_bytes());
    line.push(b' ');
    // Writing to a Vec cannot fail.
    let _ = write!(line, "{} ", e.micros);
    for (i, k) in e.keys.iter().enumerate() {
        if i > 0 {
            line.push(b' ');
        }
        line.extend_from_slice(k);
    }
    line.push(b'\n');
    line
}

/// Appends the local time as `YYYY/MM/DD HH:MM:SS.uuuuuu`. The part up to the seconds is
/// formatted once per second and thread (time-zone lookup and format parsing were a visible
/// share of a busy proxy's CPU).
fn timestamp(out: &mut Vec<u8>) {
    thread_local! {
        static SECOND: std::cell::RefCell<(i64, String)> =
            const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let now = chrono::Utc::now();
    let (secs, micros) = (now.timestamp(), now.timestamp_subsec_micros().min(999_999));
    SECOND.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let local = now.with_timezone(&chrono::Local);
            c.1 = local.format("%Y/%m/%d %H:%M:%S").to_string();
            c.0 = secs;
        }
        out.extend_from_slice(c.1.as_bytes());
    });
    let _ = write!(out, ".{micros:06}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_line() {
        let targets = vec!["127.0.0.1:7981".to_string(), "127.0.0.1:7984".to_string()];
        let keys: [&[u8]; 3] = [b"a", b"b", b"c"];
        let line = format_entry(
            &Entry {
                client: "10.0.0.5:51234",
                cmd: "GETM",
                ok: true,
                sizes: "10,0,7",
                targets: &targets,
                micros: 1210,
                keys: &keys,
            },
            "127.0.0.1:7905",
        );
        let s = String::from_utf8(line).unwrap();
        assert!(
            s.ends_with(
                " V1 10.0.0.5:51234 GETM SUCC 10,0,7 127.0.0.1:7981,127.0.0.1:7984,127.0.0.1:7905 1210 a b c\n"
            ),
            "{s}"
        );
        let line = format_entry(
            &Entry {
                client: "c:1",
                cmd: "SET",
                ok: false,
                sizes: "3",
                targets: &[],
                micros: 5,
                keys: &[b"k"],
            },
            "h:1",
        );
        assert!(String::from_utf8(line)
            .unwrap()
            .ends_with(" V1 c:1 SET FAILED 3 NoWhere,h:1 5 k\n"));
    }

    #[test]
    fn timestamp_is_local_time_to_the_microsecond() {
        for _ in 0..3 {
            let before = chrono::Local::now();
            let mut out = Vec::new();
            timestamp(&mut out);
            let after = chrono::Local::now();
            let s = String::from_utf8(out).unwrap();
            let t = chrono::NaiveDateTime::parse_from_str(&s, "%Y/%m/%d %H:%M:%S%.6f")
                .unwrap_or_else(|e| panic!("{s:?}: {e}"));
            assert_eq!(s.len(), "2026/01/02 15:04:05.123456".len(), "{s}");
            let lo = before.naive_local() - chrono::Duration::microseconds(1);
            assert!(
                t >= lo && t <= after.naive_local(),
                "{s} not within {before} … {after}"
            );
            std::thread::sleep(Duration::from_millis(400));
        }
    }
}
