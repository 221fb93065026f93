//! Access-log input (tools.md §4.1): the gobeansproxy V1 line format, read from files, stdin
//! (`-`) or `.gz` files, several in order.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use chrono::{Local, NaiveDateTime, TimeZone};

/// One parsed line. Keys are the exact bytes of the log, duplicates kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Writer's local time as µs since the epoch, when the line has a timestamp.
    pub time_us: Option<i64>,
    pub remote: Vec<u8>,
    /// Upper-case command (`GET`, `GETM`, `SET`, …).
    pub cmd: String,
    pub ok: bool,
    /// The sizes field: one entry for GET/SET, one per key for GETM (0 = miss).
    pub sizes: Vec<u64>,
    pub micros: u64,
    pub keys: Vec<Vec<u8>>,
}

impl LogLine {
    /// When the request started: `log_time − micros`.
    pub fn start_us(&self) -> Option<i64> {
        self.time_us
            .map(|t| t.saturating_sub(i64::try_from(self.micros).unwrap_or(i64::MAX)))
    }
}

/// Parses one line (without its `\n`). `Err` says why it is unparsable.
pub fn parse_line(line: &[u8]) -> Result<LogLine, String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let tokens: Vec<&[u8]> = line
        .split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
        .collect();
    let v1 = tokens
        .iter()
        .take(3)
        .position(|t| *t == b"V1")
        .ok_or_else(|| "no V1 marker".to_string())?;
    let time_us = match v1 {
        0 => None,
        2 => Some(parse_log_time(tokens[0], tokens[1])?),
        _ => return Err("expected `DATE TIME V1` or `V1` at the start".into()),
    };
    let f = &tokens[v1 + 1..];
    if f.len() < 6 {
        return Err(format!("{} fields after V1, need at least 6", f.len()));
    }
    let micros = std::str::from_utf8(f[5])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| {
            format!(
                "micros field {:?} is not a number",
                String::from_utf8_lossy(f[5])
            )
        })?;
    let cmd = String::from_utf8_lossy(f[1]).to_ascii_uppercase();
    // Sizes only feed statistics: a malformed entry counts as 0 rather than dropping the line.
    let sizes = f[3]
        .split(|&b| b == b',')
        .map(|s| {
            std::str::from_utf8(s)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        })
        .collect();
    Ok(LogLine {
        time_us,
        remote: f[0].to_vec(),
        cmd,
        ok: f[2] == b"SUCC",
        sizes,
        micros,
        keys: f[6..].iter().map(|k| k.to_vec()).collect(),
    })
}

fn parse_log_time(date: &[u8], time: &[u8]) -> Result<i64, String> {
    let s = format!(
        "{} {}",
        String::from_utf8_lossy(date),
        String::from_utf8_lossy(time)
    );
    let naive = NaiveDateTime::parse_from_str(&s, "%Y/%m/%d %H:%M:%S%.f")
        .map_err(|_| format!("bad timestamp {s:?}"))?;
    local_us(naive).ok_or_else(|| format!("timestamp {s:?} does not exist in local time"))
}

fn local_us(naive: NaiveDateTime) -> Option<i64> {
    Local
        .from_local_datetime(&naive)
        .earliest()
        .map(|d| d.timestamp_micros())
}

/// `--from`/`--to`: `YYYY/MM/DD HH:MM:SS[.f]` or `YYYY-MM-DD[T ]HH:MM:SS[.f]` in local time, or
/// RFC 3339 with an offset. Returns µs since the epoch.
pub fn parse_time_arg(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(d.timestamp_micros());
    }
    for fmt in [
        "%Y/%m/%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, fmt) {
            return local_us(n).ok_or_else(|| format!("{s:?} does not exist in local time"));
        }
    }
    Err(format!(
        "{s:?} is not a time (use \"2024/05/01 12:00:00\", 2024-05-01T12:00:00 or RFC 3339)"
    ))
}

/// Opens one input: `-` is stdin; a `.gz` name is decompressed (concatenated members too).
pub fn open_input(name: &str) -> io::Result<Box<dyn BufRead + Send>> {
    if name == "-" {
        return Ok(Box::new(BufReader::new(io::stdin())));
    }
    let f = File::open(Path::new(name))?;
    if name.ends_with(".gz") {
        Ok(Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(
            f,
        ))))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 16, f)))
    }
}

/// Reads one `\n`-terminated line into `buf` (without the `\n`); false at EOF.
pub fn read_line(r: &mut dyn BufRead, buf: &mut Vec<u8>) -> io::Result<bool> {
    buf.clear();
    let n = r.read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(false);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    Ok(true)
}

/// Pseudo-random value bytes for replayed writes (xorshift64*; content is irrelevant).
pub fn filler(len: usize, seed: &mut u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        *seed ^= *seed >> 12;
        *seed ^= *seed << 25;
        *seed ^= *seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_lines() {
        let l = parse_line(
            b"2024/05/01 12:00:00.123456 V1 10.1.2.3:53422 GETM SUCC 10,0,25 10.0.0.2:7900,proxy1:7905 1834 k1 k2 k1",
        )
        .unwrap();
        assert_eq!(l.cmd, "GETM");
        assert!(l.ok);
        assert_eq!(l.sizes, vec![10, 0, 25]);
        assert_eq!(l.micros, 1834);
        assert_eq!(l.keys, vec![b"k1".to_vec(), b"k2".to_vec(), b"k1".to_vec()]);
        assert_eq!(l.remote, b"10.1.2.3:53422");
        let t = l.time_us.unwrap();
        assert_eq!(l.start_us(), Some(t - 1834));
        assert_eq!(t % 1_000_000, 123_456);

        let l = parse_line(b"V1 127.0.0.1:1 GET FAILED 0 NoWhere 12 \xffkey\r").unwrap();
        assert_eq!(l.time_us, None);
        assert_eq!(l.keys, vec![b"\xffkey".to_vec()]);
        assert!(!l.ok);

        let l = parse_line(b"V1 127.0.0.1:1 STATS SUCC 0 localhost 3").unwrap();
        assert!(l.keys.is_empty());

        assert!(parse_line(b"garbage").is_err());
        assert!(parse_line(b"V1 127.0.0.1:1 GET SUCC 0 h").is_err());
        assert!(parse_line(b"V1 127.0.0.1:1 GET SUCC 0 h 1x k").is_err());
        assert!(parse_line(b"2024/13/01 12:00:00 V1 a GET SUCC 0 h 1 k").is_err());
        assert!(parse_line(b"").is_err());
    }

    #[test]
    fn time_args() {
        let a = parse_time_arg("2024/05/01 12:00:00").unwrap();
        let b = parse_time_arg("2024-05-01T12:00:00.5").unwrap();
        assert_eq!(b - a, 500_000);
        assert_eq!(
            parse_time_arg("2024-05-01T12:00:00Z").unwrap(),
            1_714_564_800_000_000
        );
        assert!(parse_time_arg("yesterday").is_err());
    }
}
