//! The `mc.max_req` limiter and its `/request/` view (proxy.md §2.6, §7.2).
//!
//! A forwarded request takes a slot after its body was read and keeps it until its reply is
//! written. Each slot remembers its last request for `/request/`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Keys shown per slot in `/request/`.
const SHOWN_KEYS: usize = 10;

#[derive(Debug, Clone)]
struct Slot {
    cmd: String,
    keys: Vec<String>,
    wait: Duration,
    serve_start: SystemTime,
    serve_time: Duration,
    stat: &'static str,
    stat_start: SystemTime,
    working: bool,
    started: Option<Instant>,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            cmd: String::new(),
            keys: Vec::new(),
            wait: Duration::ZERO,
            serve_start: SystemTime::UNIX_EPOCH,
            serve_time: Duration::ZERO,
            stat: "",
            stat_start: SystemTime::UNIX_EPOCH,
            working: false,
            started: None,
        }
    }
}

pub struct Limiter {
    sem: Semaphore,
    slots: Mutex<(Vec<Slot>, Vec<usize>)>,
    waiting: AtomicUsize,
    max_wait_ns: AtomicU64,
    /// The wait histogram's handle, registered on first use.
    wait_hist: OnceLock<metrics::Histogram>,
}

/// A held slot; released (and its history closed) on drop.
pub struct SlotGuard<'a> {
    limiter: &'a Limiter,
    index: usize,
    _permit: SemaphorePermit<'a>,
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Local>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Nanos, false)
}

impl Limiter {
    pub fn new(n: usize) -> Limiter {
        let n = n.max(1);
        Limiter {
            sem: Semaphore::new(n),
            slots: Mutex::new((vec![Slot::default(); n], (0..n).rev().collect())),
            waiting: AtomicUsize::new(0),
            max_wait_ns: AtomicU64::new(0),
            wait_hist: OnceLock::new(),
        }
    }

    /// Waits for a slot until `deadline`; `None` when it passed.
    pub async fn acquire(
        &self,
        cmd: &str,
        keys: &[&[u8]],
        deadline: Instant,
    ) -> Option<SlotGuard<'_>> {
        let t0 = Instant::now();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let r = tokio::time::timeout_at(deadline.into(), self.sem.acquire()).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let wait = t0.elapsed();
        self.max_wait_ns
            .fetch_max(wait.as_nanos() as u64, Ordering::Relaxed);
        self.wait_hist
            .get_or_init(crate::metrics::limiter_wait_histogram)
            .record(wait.as_secs_f64());
        let permit = r.ok()?.ok()?;
        let now = SystemTime::now();
        let mut g = self.slots.lock();
        // The semaphore has as many permits as slots, so a free index exists.
        let index = g.1.pop()?;
        g.0[index] = Slot {
            cmd: cmd.to_string(),
            keys: keys
                .iter()
                .take(SHOWN_KEYS)
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect(),
            wait,
            serve_start: now,
            serve_time: Duration::ZERO,
            stat: "working",
            stat_start: now,
            working: true,
            started: Some(Instant::now()),
        };
        Some(SlotGuard {
            limiter: self,
            index,
            _permit: permit,
        })
    }

    pub fn to_json(&self) -> Value {
        let g = self.slots.lock();
        let histories: Vec<Value> =
            g.0.iter()
                .map(|s| {
                    let serve = match (s.working, s.started) {
                        (true, Some(t)) => t.elapsed(),
                        _ => s.serve_time,
                    };
                    json!({
                        "Cmd": s.cmd,
                        "Keys": s.keys,
                        "WaitTime": s.wait.as_nanos() as u64,
                        "ServeStart": rfc3339(s.serve_start),
                        "ServeTime": serve.as_nanos() as u64,
                        "Stat": s.stat,
                        "StatStart": rfc3339(s.stat_start),
                        "Working": s.working,
                    })
                })
                .collect();
        json!({
            "Histories": histories,
            "NumWait": self.waiting.load(Ordering::Relaxed),
            "MaxWait": self.max_wait_ns.load(Ordering::Relaxed),
        })
    }
}

impl SlotGuard<'_> {
    /// Final status shown for this slot (`ok`, `failed`, `timeout`, …).
    pub fn finish(&self, stat: &'static str) {
        let mut g = self.limiter.slots.lock();
        if let Some(s) = g.0.get_mut(self.index) {
            s.stat = stat;
            s.stat_start = SystemTime::now();
        }
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut g = self.limiter.slots.lock();
        if let Some(s) = g.0.get_mut(self.index) {
            s.working = false;
            s.serve_time = s.started.map(|t| t.elapsed()).unwrap_or_default();
            if s.stat == "working" {
                s.stat = "done";
                s.stat_start = SystemTime::now();
            }
        }
        g.1.push(self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_and_timeout() {
        let l = Limiter::new(1);
        let far = Instant::now() + Duration::from_secs(5);
        let g = l.acquire("get", &[b"a"], far).await.unwrap();
        let j = l.to_json();
        assert_eq!(j["Histories"].as_array().unwrap().len(), 1);
        assert_eq!(j["Histories"][0]["Working"], true);
        assert_eq!(j["Histories"][0]["Keys"][0], "a");
        let soon = Instant::now() + Duration::from_millis(30);
        assert!(l.acquire("get", &[b"b"], soon).await.is_none());
        g.finish("ok");
        drop(g);
        let j = l.to_json();
        assert_eq!(j["Histories"][0]["Working"], false);
        assert_eq!(j["Histories"][0]["Stat"], "ok");
        assert!(l.acquire("set", &[b"c"], far).await.is_some());
    }
}
