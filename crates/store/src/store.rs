//! The store: every served bucket of a home, the shared writer, and key routing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use tracing::{info, warn};

use crate::bucket::{Bucket, Durable, KeyMeta, WriteOutcome};
use crate::buffers::{track, BufferKind, Tracked};
use crate::config::StoreConfig;
use crate::error::StoreError;
use crate::gc::{GcError, GcPlan, GcQueryEntry, GcRequest, GcState};
use crate::htree::{hex_val, store_sum, NodeSum};
use crate::writer::{self, WriterSignal};

/// A value read for a reply; its bytes count in `GetData` until it is dropped.
pub struct Value {
    pub flag: u32,
    pub data: Vec<u8>,
    pub ver: i32,
    /// Where it was read from (for the analysis log).
    pub bucket: usize,
    pub chunk: u32,
    pub offset: u32,
    /// Stored (possibly compressed) size.
    pub stored_len: u32,
    pub in_buffer: bool,
    _tracked: Tracked,
}

pub struct Store {
    cfg: Arc<StoreConfig>,
    depth: u32,
    buckets: Vec<Option<Arc<Bucket>>>,
    signal: Arc<WriterSignal>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Store {
    /// Opens (and recovers) every served bucket, in parallel.
    pub fn open(cfg: StoreConfig) -> Result<Store, StoreError> {
        let depth = beansdb_hash::bucket_depth(cfg.numbucket).ok_or_else(|| {
            StoreError::Config(format!("numbucket {} not in 1, 16, 256", cfg.numbucket))
        })?;
        let cfg = Arc::new(cfg);
        let signal = Arc::new(WriterSignal::default());
        let ids: Vec<usize> = (0..cfg.numbucket)
            .filter(|&b| cfg.served.get(b).copied().unwrap_or(false))
            .collect();
        for b in 0..cfg.numbucket {
            if !cfg.served.get(b).copied().unwrap_or(false) {
                let dir = cfg.bucket_dir(b);
                if crate::bucket::dir_size(&dir) > 0 && cfg.numbucket > 1 {
                    warn!(bucket = b, dir = %dir.display(), "bucket has data but is not served; not loaded");
                }
            }
        }
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .min(8);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Mutex<Vec<(usize, Result<Bucket, StoreError>)>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..threads.min(ids.len().max(1)) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&id) = ids.get(i) else { break };
                    let r = Bucket::open(id, cfg.clone(), signal.clone());
                    results.lock().push((id, r));
                });
            }
        });
        let mut buckets: Vec<Option<Arc<Bucket>>> = (0..cfg.numbucket).map(|_| None).collect();
        for (id, r) in results.into_inner() {
            buckets[id] = Some(Arc::new(r?));
        }
        let list: Vec<Arc<Bucket>> = buckets.iter().flatten().cloned().collect();
        let sig = signal.clone();
        let fsync = cfg.fsync;
        let interval = Duration::from_millis(cfg.fsync_interval_ms.max(1));
        let handle = std::thread::Builder::new()
            .name("beansdb-writer".into())
            .spawn(move || writer::run(list, sig, fsync, interval))
            .map_err(|e| StoreError::Config(format!("cannot start writer thread: {e}")))?;
        info!(buckets = ids.len(), home = %cfg.home.display(), "store opened");
        Ok(Store {
            cfg,
            depth,
            buckets,
            signal,
            writer: Mutex::new(Some(handle)),
        })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    pub fn depth(&self) -> u32 {
        self.depth
    }

    pub fn bucket(&self, id: usize) -> Option<&Arc<Bucket>> {
        self.buckets.get(id).and_then(|b| b.as_ref())
    }

    pub fn buckets(&self) -> impl Iterator<Item = &Arc<Bucket>> {
        self.buckets.iter().flatten()
    }

    fn bucket_of(&self, keyhash: u64) -> Option<&Arc<Bucket>> {
        self.bucket(beansdb_hash::bucket_of_hash(keyhash, self.depth))
    }

    /// Plain get: a live value or `None`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Value>, StoreError> {
        let kh = beansdb_hash::keyhash(key);
        let Some(b) = self.bucket_of(kh) else {
            return Ok(None);
        };
        b.counters.num_get.fetch_add(1, Ordering::Relaxed);
        let Some(f) = b.find_live(kh, key)? else {
            return Ok(None);
        };
        if f.ver <= 0 {
            return Ok(None);
        }
        let stored_len = f.record.value.len() as u32;
        let (flag, data) = f.record.into_client_view();
        let t = track(BufferKind::GetData, data.len());
        Ok(Some(Value {
            flag,
            data,
            ver: f.ver,
            bucket: b.id,
            chunk: f.chunk,
            offset: f.offset,
            stored_len,
            in_buffer: f.in_buffer,
            _tracked: t,
        }))
    }

    /// `?key` / `??key` meta.
    pub fn meta(&self, key: &[u8]) -> Result<Option<KeyMeta>, StoreError> {
        let kh = beansdb_hash::keyhash(key);
        let Some(b) = self.bucket_of(kh) else {
            return Ok(None);
        };
        b.meta(kh, key)
    }

    /// `@@khash` raw record bytes.
    pub fn raw(&self, keyhash: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(b) = self.bucket_of(keyhash) else {
            return Ok(None);
        };
        Ok(b.raw(keyhash)?.map(|r| r.raw_for_at_at()))
    }

    fn served(&self, key: &[u8]) -> Result<(u64, &Arc<Bucket>), StoreError> {
        let kh = beansdb_hash::keyhash(key);
        self.bucket_of(kh)
            .map(|b| (kh, b))
            .ok_or(StoreError::NotServed)
    }

    /// set family; `ver` is the request's exptime.
    pub fn set(
        &self,
        key: &[u8],
        flag: u32,
        ver: i32,
        value: &[u8],
        ts: u32,
    ) -> Result<WriteOutcome, StoreError> {
        let (kh, b) = self.served(key)?;
        b.counters.num_set.fetch_add(1, Ordering::Relaxed);
        b.write(kh, key, flag, ver, if ver < 0 { &[] } else { value }, ts)
    }

    pub fn delete(&self, key: &[u8], ts: u32) -> Result<WriteOutcome, StoreError> {
        let (kh, b) = self.served(key)?;
        b.counters.num_set.fetch_add(1, Ordering::Relaxed);
        b.write(kh, key, 0, -1, &[], ts)
    }

    pub fn incr(
        &self,
        key: &[u8],
        delta: i64,
        ts: u32,
    ) -> Result<(i64, Option<Durable>), StoreError> {
        let (kh, b) = self.served(key)?;
        b.counters.num_set.fetch_add(1, Ordering::Relaxed);
        b.incr(kh, key, delta, ts)
    }

    fn bucket_sum(&self, id: usize) -> NodeSum {
        self.bucket(id).map(|b| b.node_sum()).unwrap_or_default()
    }

    /// `get @<path>` listing (§5.4). Invalid paths give an empty listing.
    pub fn list(&self, path: &[u8]) -> String {
        if path.len() > 16 || path.iter().any(|&c| hex_val(c).is_none()) {
            return String::new();
        }
        let depth = self.depth as usize;
        if depth > 0 && path.len() < depth {
            // Store-level node: children are bucket roots (or groups of them).
            let mut prefix = 0usize;
            for &c in path {
                prefix = prefix * 16 + hex_val(c).unwrap_or(0) as usize;
            }
            let mut out = String::new();
            for i in 0..16usize {
                let child = prefix * 16 + i;
                let sum = if path.len() + 1 == depth {
                    self.bucket_sum(child)
                } else {
                    let kids: Vec<NodeSum> =
                        (0..16).map(|j| self.bucket_sum(child * 16 + j)).collect();
                    store_sum(&kids)
                };
                out.push_str(&format!("{:x}/ {} {}\n", i, sum.hash, sum.count));
            }
            return out;
        }
        let mut id = 0usize;
        for &c in &path[..depth] {
            id = id * 16 + hex_val(c).unwrap_or(0) as usize;
        }
        match self.bucket(id) {
            Some(b) => b.list(path),
            None => String::new(),
        }
    }

    /// Exact number of live index entries in served buckets.
    pub fn live_items(&self) -> u64 {
        self.buckets().map(|b| b.live_count()).sum()
    }

    /// Manual GC of one bucket (`/gc/<hex>`, §6.4): resolves the range and, with `run`,
    /// starts it in the background.
    pub fn gc(&self, bucket: usize, req: GcRequest) -> Result<GcPlan, GcError> {
        if bucket >= self.cfg.numbucket {
            return Err(GcError::BadBucket(bucket));
        }
        let b = self.bucket(bucket).ok_or(GcError::NoData(bucket))?;
        b.gc_start(req)
    }

    /// `cancel=true`: the running GC stops before its next source; returns its (src, dst).
    pub fn gc_cancel(&self, bucket: usize) -> Result<(u32, u32), GcError> {
        if bucket >= self.cfg.numbucket {
            return Err(GcError::BadBucket(bucket));
        }
        self.bucket(bucket)
            .ok_or(GcError::NoData(bucket))?
            .gc_cancel()
    }

    /// `LastGC` of a bucket (`None` if unserved or no GC since the store was opened).
    pub fn gc_state(&self, bucket: usize) -> Option<GcState> {
        self.bucket(bucket).and_then(|b| b.gc_state())
    }

    /// Running GCs, for `/gc/query`.
    pub fn gc_query(&self) -> Vec<GcQueryEntry> {
        self.buckets().filter_map(|b| b.gc_query()).collect()
    }

    pub fn gc_running(&self) -> bool {
        self.buckets().any(|b| b.gc_running.load(Ordering::Relaxed))
    }

    /// Bytes queued but not yet written.
    pub fn queued_bytes(&self) -> u64 {
        crate::buffers::BUFFERS.flush_data.snapshot().size.max(0) as u64
    }

    /// Clean shutdown: drain the write queues, then write hints, collision tables and htree
    /// dumps. Idempotent.
    pub fn close(&self) {
        let handle = self.writer.lock().take();
        if let Some(h) = handle {
            // GC threads stop first (at a safe point), so nothing moves during the final dumps.
            for b in self.buckets() {
                b.gc_abort_and_join();
            }
            self.signal.stop();
            let _ = h.join();
            for b in self.buckets() {
                b.close();
            }
            info!("store closed");
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}
