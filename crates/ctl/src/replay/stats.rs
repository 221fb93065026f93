//! Replay counters, latency histograms and the summary (tools.md §4.5).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use super::watch::WatchReport;
use crate::units::human_bytes;

/// 1 µs … 60 s, 3 significant digits (as bench).
fn new_histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

#[derive(Debug, Clone)]
pub struct CmdStats {
    /// Lines of this command in the log (replayed or not).
    pub log: u64,
    pub replayed: u64,
    pub ok: u64,
    /// Failed requests by kind (`server_error`, `client_error`, `connection`, `protocol`).
    pub errors: BTreeMap<String, u64>,
    pub timeouts: u64,
    /// Keys the replayed read lines asked for, and how many the log shows as hits.
    pub log_keys: u64,
    pub log_hits: u64,
    /// Keys sent and values returned now.
    pub keys: u64,
    pub hits: u64,
    pub hist: Histogram<u64>,
}

impl CmdStats {
    fn new() -> CmdStats {
        CmdStats {
            log: 0,
            replayed: 0,
            ok: 0,
            errors: BTreeMap::new(),
            timeouts: 0,
            log_keys: 0,
            log_hits: 0,
            keys: 0,
            hits: 0,
            hist: new_histogram(),
        }
    }

    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.hist.saturating_record(us);
    }
}

#[derive(Debug)]
pub struct Stats {
    pub lines: u64,
    pub replayed: u64,
    /// Skipped lines by reason: write, special, filtered, unparsable, unsupported.
    pub skipped: BTreeMap<&'static str, u64>,
    pub per_cmd: BTreeMap<String, CmdStats>,
    /// Keys per GETM/GETSM line: in the log, and as replayed.
    pub getm_log: BTreeMap<usize, u64>,
    pub getm_replayed: BTreeMap<usize, u64>,
    pub bytes_received: u64,
    /// Sizes the log shows for the replayed reads.
    pub log_bytes: u64,
    /// Requests sent more than 1 ms after their scheduled time.
    pub late: u64,
    pub max_lag: Duration,
    pub completed: u64,
}

impl Stats {
    pub fn new() -> Stats {
        let mut skipped = BTreeMap::new();
        for r in ["write", "special", "filtered", "unparsable"] {
            skipped.insert(r, 0);
        }
        Stats {
            lines: 0,
            replayed: 0,
            skipped,
            per_cmd: BTreeMap::new(),
            getm_log: BTreeMap::new(),
            getm_replayed: BTreeMap::new(),
            bytes_received: 0,
            log_bytes: 0,
            late: 0,
            max_lag: Duration::ZERO,
            completed: 0,
        }
    }

    pub fn cmd(&mut self, name: &str) -> &mut CmdStats {
        self.per_cmd
            .entry(name.to_string())
            .or_insert_with(CmdStats::new)
    }

    pub fn skip(&mut self, reason: &'static str) {
        *self.skipped.entry(reason).or_insert(0) += 1;
    }

    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
}

/// Everything the summary needs besides the counters.
pub struct Header<'a> {
    pub target: &'a str,
    pub inputs: &'a [String],
    pub mode_text: String,
    pub mode: Value,
    pub connections: u32,
    pub elapsed: Duration,
}

/// `0.21ms`, `1.9ms`, `31ms`.
fn ms(us: u64) -> String {
    let m = us as f64 / 1000.0;
    if m < 1.0 {
        format!("{m:.2}ms")
    } else if m < 10.0 {
        format!("{m:.1}ms")
    } else {
        format!("{m:.0}ms")
    }
}

fn pct(n: u64, d: u64) -> String {
    if d == 0 {
        "-".into()
    } else {
        format!("{:.1}", n as f64 * 100.0 / d as f64)
    }
}

/// Display order: reads first, then the rest alphabetically.
fn cmd_order(stats: &Stats) -> Vec<&String> {
    let rank = |c: &str| match c {
        "GET" => 0,
        "GETS" => 1,
        "GETM" => 2,
        "GETSM" => 3,
        _ => 4,
    };
    let mut v: Vec<&String> = stats.per_cmd.keys().collect();
    v.sort_by(|a, b| (rank(a), *a).cmp(&(rank(b), *b)));
    v
}

/// `mean 23.4 p50 12 p99 200 max 512` of a keys-per-line distribution.
struct Dist {
    lines: u64,
    mean: f64,
    p50: usize,
    p99: usize,
    max: usize,
}

fn dist(m: &BTreeMap<usize, u64>) -> Dist {
    let lines: u64 = m.values().sum();
    let total: u64 = m.iter().map(|(k, n)| *k as u64 * n).sum();
    let quantile = |q: f64| {
        let want = ((lines as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (k, n) in m {
            seen += n;
            if seen >= want {
                return *k;
            }
        }
        0
    };
    Dist {
        lines,
        mean: if lines == 0 {
            0.0
        } else {
            total as f64 / lines as f64
        },
        p50: quantile(0.5),
        p99: quantile(0.99),
        max: m.keys().next_back().copied().unwrap_or(0),
    }
}

fn dist_text(d: &Dist) -> String {
    format!(
        "mean {:.1} p50 {} p99 {} max {}",
        d.mean, d.p50, d.p99, d.max
    )
}

fn dist_json(m: &BTreeMap<usize, u64>) -> Value {
    let d = dist(m);
    let hist: Map<String, Value> = m
        .iter()
        .map(|(k, n)| (k.to_string(), (*n).into()))
        .collect();
    json!({"lines": d.lines, "mean": d.mean, "p50": d.p50, "p99": d.p99, "max": d.max,
           "histogram": hist})
}

fn latency_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"p50": 0, "p90": 0, "p99": 0, "p999": 0, "max": 0, "mean": 0.0});
    }
    json!({
        "p50": h.value_at_quantile(0.5), "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99), "p999": h.value_at_quantile(0.999),
        "max": h.max(), "mean": h.mean(),
    })
}

pub fn text(h: &Header<'_>, s: &Stats, watch: &[WatchReport]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "replay {} → {}  {}  elapsed {:.1}s  connections {}",
        h.inputs.join(" "),
        h.target,
        h.mode_text,
        h.elapsed.as_secs_f64(),
        h.connections
    );
    let reasons: Vec<String> = s
        .skipped
        .iter()
        .filter(|(r, n)| **n > 0 || matches!(**r, "write" | "special" | "filtered" | "unparsable"))
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let _ = writeln!(
        o,
        "lines {}  replayed {}  skipped {} ({})",
        s.lines,
        s.replayed,
        s.skipped_total(),
        reasons.join(", ")
    );
    let _ = writeln!(
        o,
        "{:<6} {:<8} {:<8} {:<8} {:<4} {:<7} {:<14} {:<6} {:<6} {:<6} {:<6} max",
        "CMD",
        "LOG",
        "REPLAYED",
        "OK",
        "ERR",
        "TIMEOUT",
        "HIT%(log/now)",
        "p50",
        "p90",
        "p99",
        "p99.9"
    );
    for name in cmd_order(s) {
        let c = &s.per_cmd[name];
        let errs: u64 = c.errors.values().sum();
        let (p50, p90, p99, p999, max) = if c.hist.is_empty() {
            ("-".into(), "-".into(), "-".into(), "-".into(), "-".into())
        } else {
            (
                ms(c.hist.value_at_quantile(0.5)),
                ms(c.hist.value_at_quantile(0.9)),
                ms(c.hist.value_at_quantile(0.99)),
                ms(c.hist.value_at_quantile(0.999)),
                ms(c.hist.max()),
            )
        };
        let hit = if c.log_keys == 0 && c.keys == 0 {
            "-".to_string()
        } else {
            format!("{}/{}", pct(c.log_hits, c.log_keys), pct(c.hits, c.keys))
        };
        let _ = writeln!(
            o,
            "{:<6} {:<8} {:<8} {:<8} {:<4} {:<7} {:<14} {:<6} {:<6} {:<6} {:<6} {}",
            name, c.log, c.replayed, c.ok, errs, c.timeouts, hit, p50, p90, p99, p999, max
        );
    }
    if !s.getm_log.is_empty() || !s.getm_replayed.is_empty() {
        let same = s.getm_log == s.getm_replayed;
        let _ = writeln!(
            o,
            "keys/getm  log: {}   replayed: {}",
            dist_text(&dist(&s.getm_log)),
            if same {
                "identical".to_string()
            } else {
                dist_text(&dist(&s.getm_replayed))
            }
        );
    }
    let late_pct = if s.completed == 0 {
        0.0
    } else {
        s.late as f64 * 100.0 / s.completed as f64
    };
    let _ = writeln!(
        o,
        "bytes received {} (log sizes {})   late {late_pct:.1}% (max lag {})",
        human_bytes(s.bytes_received),
        human_bytes(s.log_bytes),
        ms(u64::try_from(s.max_lag.as_micros()).unwrap_or(u64::MAX))
    );
    for w in watch {
        let _ = writeln!(o, "{}", w.text());
    }
    o
}

pub fn json(h: &Header<'_>, s: &Stats, watch: &[WatchReport], exit_code: u8) -> Value {
    let per_cmd: Map<String, Value> = s
        .per_cmd
        .iter()
        .map(|(name, c)| {
            (
                name.clone(),
                json!({
                    "log": c.log, "replayed": c.replayed, "ok": c.ok, "errors": c.errors,
                    "timeouts": c.timeouts, "log_keys": c.log_keys, "log_hits": c.log_hits,
                    "keys": c.keys, "hits": c.hits, "latency_us": latency_json(&c.hist),
                }),
            )
        })
        .collect();
    json!({
        "tool": "beansctl replay",
        "version": crate::cli::version(),
        "target": h.target,
        "input": h.inputs,
        "mode": h.mode,
        "connections": h.connections,
        "elapsed_s": h.elapsed.as_secs_f64(),
        "lines": s.lines,
        "replayed": s.replayed,
        "skipped": s.skipped,
        "per_cmd": per_cmd,
        "keys_per_getm": {"log": dist_json(&s.getm_log), "replayed": dist_json(&s.getm_replayed),
                          "identical": s.getm_log == s.getm_replayed},
        "bytes_received": s.bytes_received,
        "log_bytes": s.log_bytes,
        "late": s.late,
        "max_lag_us": u64::try_from(s.max_lag.as_micros()).unwrap_or(u64::MAX),
        "watch": watch.iter().map(WatchReport::json).collect::<Vec<_>>(),
        "exit_code": exit_code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions() {
        let mut m = BTreeMap::new();
        m.insert(2usize, 3u64);
        m.insert(10, 1);
        let d = dist(&m);
        assert_eq!((d.lines, d.p50, d.p99, d.max), (4, 2, 10, 10));
        assert!((d.mean - 4.0).abs() < 1e-9);
        assert_eq!(ms(210), "0.21ms");
        assert_eq!(ms(1900), "1.9ms");
        assert_eq!(ms(31_000), "31ms");
    }
}
