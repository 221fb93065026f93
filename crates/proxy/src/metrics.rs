//! Prometheus metrics (proxy.md §7.3): the gobeansproxy names plus `beansproxy_*`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::buffers::BUFFERS;

/// Histogram buckets of every duration metric (seconds).
pub const BUCKETS: [f64; 14] = [
    0.001, 0.003, 0.005, 0.01, 0.03, 0.05, 0.07, 0.1, 0.3, 0.5, 0.7, 1.0, 2.0, 5.0,
];

/// Installs the global recorder; `None` if one is installed already.
pub fn install() -> Option<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets(&BUCKETS)
        .ok()?
        .install_recorder()
        .ok()
}

/// Request-level command label (`get`, `getm`, `set`, `del`, `incr`).
pub fn request(cmd: &'static str, elapsed: Duration, failed: bool) {
    counter!("gobeansproxy_total_reqs", "cmd" => cmd, "store" => "beansdb").increment(1);
    if failed {
        counter!("gobeansproxy_error_reqs", "cmd" => cmd, "store" => "beansdb").increment(1);
    }
    histogram!("gobeansproxy_cmd_e2e_duration_seconds", "cmd" => cmd).record(elapsed.as_secs_f64());
}

pub fn backend_result(host: &str, op: crate::pool::Op, result: &'static str) {
    counter!(
        "beansproxy_backend_requests_total",
        "host" => host.to_string(),
        "op" => op.as_str(),
        "result" => result
    )
    .increment(1);
}

pub fn backend_duration(host: &str, op: crate::pool::Op, d: Duration) {
    histogram!(
        "beansproxy_backend_duration_seconds",
        "host" => host.to_string(),
        "op" => op.as_str()
    )
    .record(d.as_secs_f64());
}

/// `result` labels of `beansproxy_backend_requests_total` whose handles are cached.
const RESULTS: [&str; 8] = [
    "ok",
    "miss",
    "server_error",
    "not_stored",
    "proto_error",
    "timeout",
    "conn_error",
    "skipped_down",
];
const OPS: usize = 6;

fn op_index(op: crate::pool::Op) -> usize {
    use crate::pool::Op;
    match op {
        Op::Get => 0,
        Op::Getm => 1,
        Op::Set => 2,
        Op::Delete => 3,
        Op::Incr => 4,
        Op::Probe => 5,
    }
}

/// One host's backend metric handles. Each series is registered on its first use, exactly
/// like [`backend_result`] and [`backend_duration`] would, and its handle is kept so that
/// later requests skip the label allocation and the registry lookup.
pub struct HostMetrics {
    host: String,
    results: [[OnceLock<Counter>; RESULTS.len()]; OPS],
    durations: [OnceLock<Histogram>; OPS],
}

impl HostMetrics {
    pub fn new(host: &str) -> HostMetrics {
        HostMetrics {
            host: host.to_string(),
            results: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            durations: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    pub fn result(&self, op: crate::pool::Op, result: &'static str) {
        match RESULTS.iter().position(|r| *r == result) {
            Some(ri) => self.results[op_index(op)][ri]
                .get_or_init(|| {
                    counter!(
                        "beansproxy_backend_requests_total",
                        "host" => self.host.clone(),
                        "op" => op.as_str(),
                        "result" => result
                    )
                })
                .increment(1),
            None => backend_result(&self.host, op, result),
        }
    }

    pub fn duration(&self, op: crate::pool::Op, d: Duration) {
        self.durations[op_index(op)]
            .get_or_init(|| {
                histogram!(
                    "beansproxy_backend_duration_seconds",
                    "host" => self.host.clone(),
                    "op" => op.as_str()
                )
            })
            .record(d.as_secs_f64());
    }
}

/// Request-level metric handles of one proxy, each registered on its first use like
/// [`request`] would (the error counter only once a request failed).
#[derive(Default)]
pub struct RequestMetrics {
    ok: [OnceLock<(Counter, Histogram)>; 5],
    errors: [OnceLock<Counter>; 5],
}

impl RequestMetrics {
    /// One request: the e2e histogram, and the beansdb counters when `beansdb` is
    /// `Some(failed)` (the request touched beansdb).
    pub fn request(&self, cmd: &'static str, elapsed: Duration, beansdb: Option<bool>) {
        let i = match cmd {
            "get" => 0,
            "getm" => 1,
            "set" => 2,
            "del" => 3,
            "incr" => 4,
            _ => return request(cmd, elapsed, beansdb.unwrap_or(false)),
        };
        let (total, hist) = self.ok[i].get_or_init(|| {
            (
                counter!("gobeansproxy_total_reqs", "cmd" => cmd, "store" => "beansdb"),
                histogram!("gobeansproxy_cmd_e2e_duration_seconds", "cmd" => cmd),
            )
        });
        hist.record(elapsed.as_secs_f64());
        let Some(failed) = beansdb else {
            return;
        };
        total.increment(1);
        if failed {
            self.errors[i]
                .get_or_init(
                    || counter!("gobeansproxy_error_reqs", "cmd" => cmd, "store" => "beansdb"),
                )
                .increment(1);
        }
    }
}

/// `beansproxy_requests_by_status_total`: once per request for each status among its keys.
pub fn requests_by_status(
    cmd: &'static str,
    statuses: impl Iterator<Item = beansdb_cassandra::Status>,
) {
    let mut seen = [false; 5];
    for s in statuses {
        let i = beansdb_cassandra::Status::ALL
            .iter()
            .position(|x| *x == s)
            .unwrap_or(0);
        if !std::mem::replace(&mut seen[i], true) {
            counter!("beansproxy_requests_by_status_total", "status" => s.as_str(), "cmd" => cmd)
                .increment(1);
        }
    }
}

/// A request served (partly) by Cassandra (cassandra.md §5.6).
pub fn cstar_request(cmd: &'static str, failed: bool) {
    counter!("gobeansproxy_total_reqs", "cmd" => cmd, "store" => "cstar").increment(1);
    if failed {
        counter!("gobeansproxy_error_reqs", "cmd" => cmd, "store" => "cstar").increment(1);
    }
}

pub fn host_up(host: &str, up: bool) {
    gauge!("beansproxy_host_up", "host" => host.to_string()).set(if up { 1.0 } else { 0.0 });
}

pub fn host_transition(host: &str, to: &'static str, reason: &'static str) {
    counter!(
        "beansproxy_host_transitions_total",
        "host" => host.to_string(),
        "to" => to,
        "reason" => reason
    )
    .increment(1);
}

pub fn backup_write() {
    counter!("beansproxy_backup_writes_total").increment(1);
}

pub fn backup_read() {
    counter!("beansproxy_backup_reads_total").increment(1);
}

pub fn quorum_failure(cmd: &'static str) {
    counter!("beansproxy_quorum_failures_total", "cmd" => cmd).increment(1);
}

pub fn timeout(cmd: &'static str) {
    counter!("beansproxy_timeouts_total", "cmd" => cmd).increment(1);
}

pub fn client_connections(n: u64) {
    gauge!("beansproxy_client_connections").set(n as f64);
}

pub fn limiter_wait(d: Duration) {
    histogram!("beansproxy_limiter_wait_seconds").record(d.as_secs_f64());
}

/// The handle behind [`limiter_wait`], for callers that keep it.
pub fn limiter_wait_histogram() -> Histogram {
    histogram!("beansproxy_limiter_wait_seconds")
}

pub fn route_reload(ok: bool) {
    counter!("beansproxy_route_reloads_total", "result" => if ok { "ok" } else { "error" })
        .increment(1);
}

/// Gauges refreshed at scrape time: buffers, hosts, process.
pub fn refresh(hosts: &[std::sync::Arc<crate::pool::Host>]) {
    for (name, s) in BUFFERS.all() {
        gauge!("beansproxy_buffer_bytes", "kind" => name).set(s.size as f64);
        gauge!("beansproxy_buffer_count", "kind" => name).set(s.count as f64);
    }
    for h in hosts {
        let v = h.view();
        gauge!("beansproxy_host_up", "host" => h.addr.clone()).set(if v.up { 1.0 } else { 0.0 });
        gauge!("beansproxy_host_score_microseconds", "host" => h.addr.clone())
            .set(v.score.unwrap_or(0.0));
        let c = h.conns();
        gauge!("beansproxy_backend_connections", "host" => h.addr.clone(), "state" => "idle")
            .set(c.idle as f64);
        gauge!("beansproxy_backend_connections", "host" => h.addr.clone(), "state" => "busy")
            .set(c.busy as f64);
    }
    let p = crate::stats::process();
    gauge!("process_resident_memory_bytes").set(p.rss_bytes as f64);
    gauge!("process_cpu_seconds_total").set(p.cpu_seconds);
    gauge!("process_open_fds").set(p.open_fds as f64);
    gauge!("process_threads").set(p.threads as f64);
}
