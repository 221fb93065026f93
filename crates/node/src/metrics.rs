//! Prometheus metrics (node.md §8.5). Counters live in atomics on the hot path; they are
//! copied into the `metrics` recorder when `/metrics` is scraped.

use std::sync::atomic::Ordering;

use beansdb_store::buffers::BUFFERS;
use beansdb_store::metrics as sm;
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::server::Node;
use crate::stats::{self, Counters};

pub fn install() -> Option<PrometheusHandle> {
    PrometheusBuilder::new().install_recorder().ok()
}

pub fn refresh(node: &Node) {
    let c = &node.counters;
    let g = |a: &std::sync::atomic::AtomicU64| Counters::get(a);
    counter!("beansdb_requests_total", "cmd" => "get", "result" => "hit").absolute(g(&c.get_hits));
    counter!("beansdb_requests_total", "cmd" => "get", "result" => "miss")
        .absolute(g(&c.get_misses));
    counter!("beansdb_requests_total", "cmd" => "set", "result" => "all").absolute(g(&c.cmd_set));
    counter!("beansdb_requests_total", "cmd" => "delete", "result" => "all")
        .absolute(g(&c.cmd_delete));
    counter!("beansdb_requests_total", "cmd" => "any", "result" => "timeout")
        .absolute(g(&c.timeouts));
    gauge!("beansdb_connections").set(g(&c.curr_connections) as f64);
    counter!("beansdb_connections_total").absolute(g(&c.total_connections));
    counter!("beansdb_bytes_read_total").absolute(g(&c.bytes_read));
    counter!("beansdb_bytes_written_total").absolute(g(&c.bytes_written));
    counter!("beansdb_slow_requests_total").absolute(g(&c.slow_cmd));
    counter!("beansdb_panics_total").absolute(g(&c.panics));
    for (name, s) in BUFFERS.all() {
        gauge!("beansdb_buffer_bytes", "kind" => name).set(s.size as f64);
        gauge!("beansdb_buffer_count", "kind" => name).set(s.count as f64);
    }
    gauge!("beansdb_write_queue_bytes").set(node.store.queued_bytes() as f64);
    let mut index_bytes = 0u64;
    for b in node.store.buckets() {
        let info = b.info();
        let id = format!("{:x}", b.id);
        gauge!("beansdb_items", "bucket" => id.clone()).set(b.live_count() as f64);
        gauge!("beansdb_bucket_disk_bytes", "bucket" => id.clone()).set(info.du as f64);
        gauge!("beansdb_bucket_head_chunk", "bucket" => id.clone()).set(info.head as f64);
        gauge!("beansdb_gc_running", "bucket" => id).set(if info.gc_running { 1.0 } else { 0.0 });
        index_bytes += b.index_bytes() as u64;
    }
    gauge!("beansdb_index_bytes").set(index_bytes as f64);
    let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    counter!("beansdb_recovery_truncated_bytes_total").absolute(l(&sm::RECOVERY_TRUNCATED));
    counter!("beansdb_hint_rebuilds_total").absolute(l(&sm::HINT_REBUILDS));
    counter!("beansdb_read_errors_total", "kind" => "any").absolute(l(&sm::READ_ERRORS));
    counter!("beansdb_write_errors_total", "kind" => "any").absolute(l(&sm::WRITE_ERRORS));
    counter!("beansdb_same_value_skips_total").absolute(l(&sm::SAME_VALUE_SKIPS));
    counter!("beansdb_write_batches_total").absolute(l(&sm::BATCHES));
    counter!("beansdb_write_batch_bytes_total").absolute(l(&sm::BATCH_BYTES));
    counter!("beansdb_fsyncs_total").absolute(l(&sm::FSYNCS));
    gauge!("beansdb_fsync_seconds_total").set(l(&sm::FSYNC_MICROS) as f64 / 1e6);
    let (avail, total) = node.disk_space();
    gauge!("beansdb_disk_free_bytes").set(avail as f64);
    gauge!("beansdb_disk_total_bytes").set(total as f64);
    gauge!("process_resident_memory_bytes").set(stats::rss_bytes() as f64);
    let (ut, st, _) = stats::rusage();
    gauge!("process_cpu_seconds_total").set((ut + st) as f64);
    gauge!("process_threads").set(stats::thread_count() as f64);
}
