//! Dual-write error log lines (cassandra.md §7.1, §7.2): ours and gobeansproxy's (logrus JSON:
//! `msg` instead of `error`, no `status`/`ts_us`, so `time` is the entry's timestamp), and the
//! `--done-file` lines.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::migrate::unhex;

/// One usable log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    /// The failed statement's `USING TIMESTAMP` (µs), or `time` for gobeansproxy lines.
    pub ts_us: i64,
    /// `time` in µs (`ts_us` when the line has no `time`): what `--since`/`--until` filter.
    pub time_us: i64,
}

/// An RFC 3339 time → µs since the epoch.
fn rfc3339_us(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|d| d.timestamp_micros())
}

/// The raw key of a line or done-file entry: the exact `key_hex` when present, else `key`.
fn key_of(obj: &serde_json::Map<String, Value>) -> Option<Vec<u8>> {
    if let Some(h) = obj.get("key_hex").and_then(Value::as_str) {
        return unhex(h);
    }
    obj.get("key")
        .and_then(Value::as_str)
        .map(|k| k.as_bytes().to_vec())
}

/// Parses one line; `None` for anything unusable (counted as a bad line).
pub fn parse_line(line: &[u8]) -> Option<Entry> {
    let v: Value = serde_json::from_slice(line).ok()?;
    let obj = v.as_object()?;
    let key = key_of(obj).filter(|k| !k.is_empty())?;
    let time_us = match obj.get("time") {
        Some(Value::String(s)) => Some(rfc3339_us(s)?),
        None => None,
        Some(_) => return None,
    };
    let ts_us = match obj.get("ts_us") {
        Some(t) => Some(t.as_i64()?),
        None => None,
    };
    let ts_us = ts_us.or(time_us)?;
    Some(Entry {
        key,
        ts_us,
        time_us: time_us.unwrap_or(ts_us),
    })
}

/// `--since`/`--until`: RFC 3339, or unix seconds (fractions allowed). Returns µs.
pub fn parse_time_arg(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if let Some(us) = rfc3339_us(t) {
        return Ok(us);
    }
    if let Ok(secs) = t.parse::<f64>() {
        if (0.0..1e12).contains(&secs) {
            return Ok((secs * 1e6).round() as i64);
        }
    }
    Err(format!(
        "{s:?} is not a time (RFC 3339 such as 2026-03-01T10:20:30+08:00, or unix seconds)"
    ))
}

/// The done-file: key → the largest `ts_entry` finished without error.
pub fn parse_done(text: &str) -> BTreeMap<Vec<u8>, i64> {
    let mut done = BTreeMap::new();
    for line in text.lines() {
        let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let (Some(key), Some(ts)) = (key_of(&obj), obj.get("ts_entry").and_then(Value::as_i64))
        else {
            continue;
        };
        if obj.get("result").and_then(Value::as_str) == Some("error") {
            continue;
        }
        let e = done.entry(key).or_insert(ts);
        *e = (*e).max(ts);
    }
    done
}

/// A done-file line for a finished key.
pub fn done_line(key: &[u8], ts_entry: i64, result: &str) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert(
        "key".into(),
        Value::String(String::from_utf8_lossy(key).into_owned()),
    );
    if std::str::from_utf8(key).is_err() {
        obj.insert("key_hex".into(), Value::String(crate::migrate::hex(key)));
    }
    obj.insert("ts_entry".into(), Value::from(ts_entry));
    obj.insert("result".into(), Value::String(result.into()));
    let mut s = Value::Object(obj).to_string();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_format() {
        let l = br#"{"time":"2026-03-01T10:20:30.123456+08:00","level":"error","op":"set","key":"/test_prefix_c/42","status":"br1w1cr0w1","ts_us":1772331630123456,"error":"timeout: no response in 1000ms","proxy":"127.0.0.1:7905"}"#;
        let e = parse_line(l).expect("valid");
        assert_eq!(e.key, b"/test_prefix_c/42");
        assert_eq!(e.ts_us, 1_772_331_630_123_456);
        assert_eq!(e.time_us, 1_772_331_630_123_456);
        let hex = br#"{"time":"2026-03-01T10:20:30Z","op":"del","key":"\ufffd","key_hex":"ff01","ts_us":5}"#;
        assert_eq!(parse_line(hex).map(|e| e.key), Some(vec![0xff, 0x01]));
    }

    #[test]
    fn gobeansproxy_format() {
        let l = br#"{"key":"/a/1","level":"error","msg":"gocql: no response","op":"set","time":"2023-05-06T07:08:09+08:00"}"#;
        let e = parse_line(l).expect("valid");
        assert_eq!(e.ts_us, 1_683_328_089_000_000);
        assert_eq!(e.time_us, e.ts_us);
    }

    #[test]
    fn bad_lines() {
        for bad in [
            &b"not json"[..],
            b"{}",
            br#"{"key":"/a"}"#,
            br#"{"key":"","ts_us":1}"#,
            br#"{"key":"/a","time":"yesterday"}"#,
            br#"{"key":"/a","ts_us":"x"}"#,
            br#"[1]"#,
        ] {
            assert_eq!(parse_line(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn time_args() {
        assert_eq!(parse_time_arg("10"), Ok(10_000_000));
        assert_eq!(parse_time_arg("1.5"), Ok(1_500_000));
        assert_eq!(parse_time_arg("1970-01-01T00:00:01Z"), Ok(1_000_000));
        assert!(parse_time_arg("soon").is_err());
    }

    #[test]
    fn done_file() {
        let text = done_line(b"/a", 5, "written")
            + &done_line(b"/a", 3, "deleted")
            + &done_line(b"\xff", 7, "deleted")
            + &done_line(b"/b", 9, "error")
            + "garbage\n";
        let d = parse_done(&text);
        assert_eq!(d.get(&b"/a"[..]), Some(&5));
        assert_eq!(d.get(&b"\xff"[..]), Some(&7));
        assert_eq!(d.get(&b"/b"[..]), None);
    }
}
