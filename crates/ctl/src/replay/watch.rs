//! `--watch URL` (tools.md §4.4): samples a node's or proxy's buffer counters and RSS during a
//! replay, for reproducing memory growth under getm traffic.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::gc::http;
use crate::units::{hms, human_bytes};

/// The four buffer counters of `/buffers` (`/buffer/` on the proxy).
const COUNTERS: [&str; 4] = ["AllocRL", "GetData", "SetData", "FlushData"];

#[derive(Debug, Clone)]
pub struct Sample {
    pub t: Duration,
    pub rss: Option<u64>,
    /// counter → (Count, Size).
    pub buffers: BTreeMap<String, (u64, u64)>,
}

#[derive(Debug, Clone)]
pub struct WatchReport {
    pub url: String,
    pub samples: Vec<Sample>,
    pub errors: u64,
    pub last_error: Option<String>,
}

impl WatchReport {
    fn rss(&self) -> (Option<u64>, Option<u64>, Option<u64>) {
        let v: Vec<u64> = self.samples.iter().filter_map(|s| s.rss).collect();
        (
            v.first().copied(),
            v.iter().max().copied(),
            v.last().copied(),
        )
    }

    fn counter(&self, name: &str) -> Option<(u64, u64)> {
        let sizes: Vec<u64> = self
            .samples
            .iter()
            .filter_map(|s| s.buffers.get(name).map(|c| c.1))
            .collect();
        Some((*sizes.last()?, *sizes.iter().max()?))
    }

    /// `watch URL  rss 512 MiB → max 1.9 GiB → end 1.9 GiB   GetData.Size end 0 max 800 MiB …`.
    pub fn text(&self) -> String {
        let mut s = format!("watch {}  ", self.url);
        match self.rss() {
            (Some(a), Some(m), Some(e)) => s.push_str(&format!(
                "rss {} → max {} → end {}",
                human_bytes(a),
                human_bytes(m),
                human_bytes(e)
            )),
            _ => s.push_str("rss n/a"),
        }
        for c in COUNTERS {
            if let Some((end, max)) = self.counter(c) {
                s.push_str(&format!(
                    "   {c}.Size end {} max {}",
                    human_bytes(end),
                    human_bytes(max)
                ));
            }
        }
        if self.samples.is_empty() {
            s.push_str(&format!(
                "   no samples ({})",
                self.last_error.as_deref().unwrap_or("no answer")
            ));
        }
        s
    }

    pub fn json(&self) -> Value {
        let (start, max, end) = self.rss();
        let samples: Vec<Value> = self
            .samples
            .iter()
            .map(|s| {
                let b: BTreeMap<&String, Value> = s
                    .buffers
                    .iter()
                    .map(|(k, (c, z))| (k, json!({"Count": c, "Size": z})))
                    .collect();
                json!({"t_ms": s.t.as_millis() as u64, "rss": s.rss, "buffers": b})
            })
            .collect();
        let buffers: BTreeMap<&str, Value> = COUNTERS
            .iter()
            .filter_map(|c| {
                self.counter(c)
                    .map(|(end, max)| (*c, json!({"end": end, "max": max})))
            })
            .collect();
        json!({"url": self.url, "samples": samples, "rss": {"start": start, "max": max, "end": end},
               "buffers": buffers, "errors": self.errors, "last_error": self.last_error})
    }
}

/// Background samplers, one thread per URL.
pub struct Watchers {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<WatchReport>>,
}

impl Watchers {
    pub fn start(
        urls: &[String],
        every: Duration,
        connect_timeout: Duration,
        timeout: Duration,
        live: bool,
    ) -> Watchers {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = urls
            .iter()
            .map(|u| {
                let url = u.trim_end_matches('/').to_string();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    sample_loop(url, every, connect_timeout, timeout, live, stop)
                })
            })
            .collect();
        Watchers { stop, handles }
    }

    pub fn finish(self) -> Vec<WatchReport> {
        self.stop.store(true, Ordering::SeqCst);
        self.handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .collect()
    }
}

fn sample_loop(
    url: String,
    every: Duration,
    connect_timeout: Duration,
    timeout: Duration,
    live: bool,
    stop: Arc<AtomicBool>,
) -> WatchReport {
    let start = Instant::now();
    let mut rep = WatchReport {
        url: url.clone(),
        samples: Vec::new(),
        errors: 0,
        last_error: None,
    };
    let mut buffers_path = "/buffers";
    let mut next = start;
    // One final sample after the stop request gives the "end" values.
    let mut last_round = false;
    loop {
        let t = start.elapsed();
        let mut buffers = BTreeMap::new();
        let mut ok = false;
        match http::get(&url, buffers_path, connect_timeout, timeout) {
            Ok(r) if r.status == 404 && buffers_path == "/buffers" => {
                // The proxy serves the same counters at /buffer/.
                buffers_path = "/buffer/";
                continue;
            }
            Ok(r) if r.status == 200 => {
                if let Ok(v) = serde_json::from_slice::<Value>(&r.body) {
                    for c in COUNTERS {
                        let e = &v[c];
                        if e.is_object() {
                            buffers.insert(
                                c.to_string(),
                                (
                                    e["Count"].as_u64().unwrap_or(0),
                                    e["Size"].as_u64().unwrap_or(0),
                                ),
                            );
                        }
                    }
                    ok = true;
                }
            }
            Ok(r) => rep.last_error = Some(format!("{buffers_path}: HTTP {}", r.status)),
            Err(e) => rep.last_error = Some(format!("{e:#}")),
        }
        let rss = http::get(&url, "/metrics", connect_timeout, timeout)
            .ok()
            .filter(|r| r.status == 200)
            .and_then(|r| metric(&r.text(), "process_resident_memory_bytes"));
        if ok || rss.is_some() {
            if live {
                let mut line = format!("[watch {url} {}]", hms(t));
                line.push_str(&match rss {
                    Some(r) => format!(" rss {}", human_bytes(r)),
                    None => " rss n/a".into(),
                });
                for (k, (c, z)) in &buffers {
                    line.push_str(&format!(" {k} {c}/{}", human_bytes(*z)));
                }
                eprintln!("{line}");
            }
            rep.samples.push(Sample { t, rss, buffers });
        } else {
            rep.errors += 1;
        }
        if last_round {
            return rep;
        }
        next += every;
        while Instant::now() < next {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20).min(every));
        }
        if stop.load(Ordering::SeqCst) {
            last_round = true;
        }
    }
}

/// The value of an unlabelled Prometheus sample.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let v = rest.strip_prefix(' ')?.split_whitespace().next()?;
        v.parse::<f64>().ok().map(|f| f as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_value() {
        let t = "# HELP x\nprocess_resident_memory_bytes 1.2345e7\nprocess_resident_memory_bytes_other 1\n";
        assert_eq!(metric(t, "process_resident_memory_bytes"), Some(12_345_000));
        assert_eq!(metric("", "process_resident_memory_bytes"), None);
    }
}
