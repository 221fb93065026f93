//! The bench report: the text table and the `--json` document (tools.md §5).

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::spec::Op;
use super::stats::{Latency, Stats};
use super::BenchArgs;
use crate::units::{human_bytes, human_duration};

pub struct Preload {
    pub keys: u64,
    pub ok: u64,
    pub errors: u64,
    pub duration: Duration,
}

pub struct Report<'a> {
    pub args: &'a BenchArgs,
    pub seed: u64,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Measured time: end of warmup to the last completion.
    pub elapsed: Duration,
    pub stats: Stats,
    pub dropped: u64,
    pub preload: Option<Preload>,
    pub interrupted: bool,
}

impl Report<'_> {
    fn per_sec(&self, n: u64) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            n as f64 / s
        } else {
            0.0
        }
    }

    /// Keys asked for by get and getm.
    fn read_keys(&self) -> u64 {
        self.stats.ops[Op::Get.index()].keys + self.stats.ops[Op::Getm.index()].keys
    }

    fn hit_ratio(&self) -> Option<f64> {
        let (h, m) = [Op::Get, Op::Getm]
            .iter()
            .map(|op| &self.stats.ops[op.index()])
            .fold((0, 0), |(h, m), o| (h + o.hits, m + o.misses));
        (h + m > 0).then(|| h as f64 / (h + m) as f64)
    }

    fn late_ratio(&self) -> f64 {
        let n = self.stats.requests();
        if n == 0 {
            0.0
        } else {
            self.stats.late as f64 / n as f64
        }
    }

    pub fn text(&self) -> String {
        let a = self.args;
        let st = &self.stats;
        let mut out = String::new();
        let preload = match &self.preload {
            Some(p) => format!("preload {} keys in {}", p.keys, human_duration(p.duration)),
            None => "no preload".to_string(),
        };
        let _ = writeln!(
            out,
            "bench → {}  conns {}  {}  {}  {}",
            a.target,
            a.connections,
            super::describe_rate(a),
            super::describe_time(a),
            preload
        );
        let mix: Vec<String> = a
            .mix
            .ops()
            .map(|op| format!("{} {}%", op.name(), pct(a.mix.percent(op))))
            .collect();
        let getm = if a.mix.weight(Op::Getm) > 0 {
            format!(" (keys/getm {})", a.getm_keys)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "mix {}{}  keyspace {} {}  value {} B {}{}  seed {}",
            mix.join(" "),
            getm,
            a.keys,
            a.key_dist,
            a.value_size,
            a.value_kind.name(),
            if a.verify { " verified" } else { "" },
            self.seed
        );
        let e = &st.errors;
        let kinds: Vec<String> = e
            .pairs()
            .iter()
            .filter(|(k, n)| *n > 0 && !matches!(*k, "timeout" | "corrupt"))
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let kinds = if kinds.is_empty() {
            String::new()
        } else {
            format!(" ({})", kinds.join(", "))
        };
        let corrupt = if a.verify || e.corrupt > 0 {
            format!("  corrupt {}", e.corrupt)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "requests {}  ok {}  errors {}{}  timeouts {}{}  dropped {}  late {:.2}%",
            st.requests(),
            st.ok(),
            e.failed(),
            kinds,
            e.timeout,
            corrupt,
            self.dropped,
            self.late_ratio() * 100.0
        );
        let per_op: Vec<String> = a
            .mix
            .ops()
            .map(|op| {
                format!(
                    "{} {:.1}",
                    op.name(),
                    self.per_sec(st.ops[op.index()].requests)
                )
            })
            .collect();
        let keys = if a.mix.reads() {
            format!("; keys {:.1}/s", self.per_sec(self.read_keys()))
        } else {
            String::new()
        };
        let hit = self
            .hit_ratio()
            .map_or(String::new(), |h| format!("  hit {:.1}%", h * 100.0));
        let _ = writeln!(
            out,
            "throughput {:.1} req/s ({}{})  in {:.1}s{}",
            self.per_sec(st.requests()),
            per_op.join(", "),
            keys,
            self.elapsed.as_secs_f64(),
            hit
        );
        let _ = writeln!(
            out,
            "{:<14} {:>7} {:>7} {:>7} {:>7} {:>8} {:>7}",
            "latency µs", "p50", "p90", "p99", "p99.9", "max", "mean"
        );
        let mut row = |name: &str, l: Latency| {
            let _ = writeln!(
                out,
                "{:<14} {:>7} {:>7} {:>7} {:>7} {:>8} {:>7.0}",
                name, l.p50, l.p90, l.p99, l.p999, l.max, l.mean
            );
        };
        row("all", Latency::of(&st.all));
        for op in a.mix.ops() {
            row(op.name(), Latency::of(&st.ops[op.index()].hist));
        }
        if st.bytes_sent > 0 || st.bytes_received > 0 {
            let _ = writeln!(
                out,
                "bytes sent {}  received {}{}",
                human_bytes(st.bytes_sent),
                human_bytes(st.bytes_received),
                if st.reconnects > 0 {
                    format!("  reconnects {}", st.reconnects)
                } else {
                    String::new()
                }
            );
        }
        if self.interrupted {
            let _ = writeln!(out, "interrupted: partial results");
        }
        out
    }

    pub fn json(&self) -> Value {
        let a = self.args;
        let st = &self.stats;
        let mut errors = Map::new();
        for (k, n) in st.errors.pairs() {
            errors.insert(k.into(), n.into());
        }
        let mut per_op = Map::new();
        for op in a.mix.ops() {
            let o = &st.ops[op.index()];
            per_op.insert(
                op.name().into(),
                json!({
                    "requests": o.requests,
                    "ok": o.ok,
                    "throughput_rps": round1(self.per_sec(o.requests)),
                    "hits": o.hits,
                    "misses": o.misses,
                    "keys": o.keys,
                    "latency_us": latency_json(Latency::of(&o.hist)),
                }),
            );
        }
        let mut mix = Map::new();
        for op in a.mix.ops() {
            mix.insert(op.name().into(), a.mix.weight(op).into());
        }
        let config = json!({
            "target": a.target,
            "connections": a.connections,
            "rate": a.rate,
            "closed_loop": a.rate == 0,
            "duration_s": a.duration.as_secs_f64(),
            "requests": a.requests,
            "warmup_s": a.warmup.as_secs_f64(),
            "keys": a.keys,
            "key_prefix": a.key_prefix,
            "key_dist": a.key_dist.to_string(),
            "value_size": a.value_size.to_string(),
            "value_kind": a.value_kind.name(),
            "mix": mix,
            "getm_keys": {"min": a.getm_keys.min, "max": a.getm_keys.max},
            "pipeline": a.pipeline,
            "arrival": a.arrival.name(),
            "preload": !a.no_preload && a.mix.reads(),
            "verify": a.verify,
            "seed": self.seed,
            "allow_remote": a.allow_remote,
            "fail_if_errors": a.fail_if_errors,
        });
        json!({
            "tool": "beansctl bench",
            "version": crate::cli::version(),
            "target": a.target,
            "config": config,
            "started_at": self.started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "duration_s": round3(self.elapsed.as_secs_f64()),
            "interrupted": self.interrupted,
            "requests": st.requests(),
            "ok": st.ok(),
            "errors": errors,
            "dropped": self.dropped,
            "late": st.late,
            "late_ratio": self.late_ratio(),
            "max_lag_us": u64::try_from(st.max_lag.as_micros()).unwrap_or(u64::MAX),
            "throughput_rps": round1(self.per_sec(st.requests())),
            "keys_per_s": round1(self.per_sec(self.read_keys())),
            "hit_ratio": self.hit_ratio(),
            "bytes_sent": st.bytes_sent,
            "bytes_received": st.bytes_received,
            "reconnects": st.reconnects,
            "preload": self.preload.as_ref().map(|p| json!({
                "keys": p.keys,
                "ok": p.ok,
                "errors": p.errors,
                "duration_s": round3(p.duration.as_secs_f64()),
            })),
            "latency_us": latency_json(Latency::of(&st.all)),
            "per_op": per_op,
        })
    }
}

fn latency_json(l: Latency) -> Value {
    json!({
        "p50": l.p50,
        "p90": l.p90,
        "p99": l.p99,
        "p999": l.p999,
        "max": l.max,
        "mean": round1(l.mean),
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `80` for whole percentages, else one decimal.
fn pct(p: f64) -> String {
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}")
    } else {
        format!("{p:.1}")
    }
}
