//! Garbage collection (node.md §6.4, D11): compacts a range of a bucket's chunks in a
//! background thread, dropping superseded records.
//!
//! Crash safety comes from ordering alone: every file GC writes is fsynced before anything it
//! replaces is deleted, an in-place rewrite goes to `NNN.data.tmp` and is renamed over the
//! source, and index entries move only when they still point at the copied record (a
//! concurrent newer write wins). Recovery deletes `*.tmp` and rebuilds hints, so a crash at any
//! point leaves either the untouched source or a complete copy.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tracing::{error, info, warn};

use crate::bucket::{now_secs, Bucket, HintSlot, Inner};
use crate::collision::CollisionEntry;
use crate::datafile::DataStreamReader;
use crate::hint::{
    data_file_name, hint_file_name, htree_file_name, parse_file_name, read_hint_file,
    sync_parent_dir, tmp_path, write_hint_file, FileName, HintItem, NEXTGC_FILE_NAME,
};
use crate::htree::ItemMeta;
use crate::nextgc::write_next_gc;

/// Test hook called at GC's crash-relevant points with their name (`gc_tmp_partial`,
/// `gc_after_rename`, `gc_mid_append`, `gc_before_src_delete`); a test snapshots the home
/// there to simulate a kill -9.
#[doc(hidden)]
pub type FailpointHook = Box<dyn Fn(&str) + Send + Sync>;

#[doc(hidden)]
pub static FAILPOINT: parking_lot::RwLock<Option<FailpointHook>> = parking_lot::RwLock::new(None);

fn failpoint(name: &str) {
    if let Some(f) = FAILPOINT.read().as_ref() {
        f(name);
    }
}

/// HintState bits of BucketInfo (§8.2).
pub const HINT_STATE_DUMP: u32 = 1;
pub const HINT_STATE_MERGE: u32 = 2;
pub const HINT_STATE_GC: u32 = 4;

/// Parameters of `/gc/<bucket>` (§6.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcRequest {
    pub start: Option<u32>,
    pub end: Option<u32>,
    pub no_gc_days: Option<u32>,
    pub merge: bool,
    /// false = dry run: compute and report the range only.
    pub run: bool,
}

/// The range a GC request resolved to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcPlan {
    pub bucket: usize,
    pub start: u32,
    pub end: u32,
    pub merge: bool,
    /// true when nothing was started (`run` was not set).
    pub pretend: bool,
}

/// Request errors; the Display texts are gobeansdb's, which tools match.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GcError {
    #[error("bad bucket id: {0}")]
    BadBucket(usize),
    #[error("no data for bucket id: {0}")]
    NoData(usize),
    #[error("gc on bkt: {0} already running")]
    AlreadyRunning(usize),
    #[error("startChunkID > bkt.datas.newHead ")]
    StartBeyondHead,
    #[error("no file to gc within {days} days, start = {start}")]
    NothingOldEnough { days: u32, start: u32 },
    #[error("end {end} < start {start}, nothing to gc")]
    EndBeforeStart { end: i64, start: u32 },
    #[error("bucket {0} is not gcing")]
    NotRunning(usize),
    #[error("cannot start gc thread: {0}")]
    Spawn(String),
}

/// `GCState` of §8.3 (the most recent GC of a bucket).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcState {
    pub begin_ts: SystemTime,
    /// `None` while running.
    pub end_ts: Option<SystemTime>,
    pub begin: u32,
    pub end: u32,
    /// Source being (or next to be) processed; `end + 1` after a complete run.
    pub src: u32,
    pub dst: u32,
    pub running: bool,
    pub err: Option<String>,
    pub cancel_flag: bool,
    pub num_before: u64,
    pub num_released: u64,
    pub num_released_deleted: u64,
    pub size_before: u64,
    pub size_released: u64,
    pub size_deleted: u64,
    pub size_broken: u64,
    pub num_not_in_htree: u64,
}

impl GcState {
    fn new(plan: &GcPlan) -> GcState {
        GcState {
            begin_ts: SystemTime::now(),
            end_ts: None,
            begin: plan.start,
            end: plan.end,
            src: plan.start,
            dst: plan.start,
            running: true,
            err: None,
            cancel_flag: false,
            num_before: 0,
            num_released: 0,
            num_released_deleted: 0,
            size_before: 0,
            size_released: 0,
            size_deleted: 0,
            size_broken: 0,
            num_not_in_htree: 0,
        }
    }
}

impl GcState {
    /// The §8.3 JSON object. `ts` formats a timestamp as RFC 3339 (the node's local time);
    /// a running GC's `EndTS` is `"0001-01-01T00:00:00Z"`.
    pub fn to_json(&self, ts: impl Fn(SystemTime) -> String) -> String {
        let end_ts = match self.end_ts {
            Some(t) => ts(t),
            None => "0001-01-01T00:00:00Z".to_string(),
        };
        let err = match &self.err {
            Some(e) => json_string(e),
            None => "null".to_string(),
        };
        format!(
            "{{\"BeginTS\":{},\"EndTS\":{},\"Begin\":{},\"End\":{},\"Src\":{},\"Dst\":{},\"Running\":{},\
             \"Err\":{},\"CancelFlag\":{},\"NumBefore\":{},\"NumReleased\":{},\"NumReleasedDeleted\":{},\
             \"SizeBefore\":{},\"SizeReleased\":{},\"SizeDeleted\":{},\"SizeBroken\":{},\"NumNotInHtree\":{}}}",
            json_string(&ts(self.begin_ts)),
            json_string(&end_ts),
            self.begin,
            self.end,
            self.src,
            self.dst,
            self.running,
            err,
            self.cancel_flag,
            self.num_before,
            self.num_released,
            self.num_released_deleted,
            self.size_before,
            self.size_released,
            self.size_deleted,
            self.size_broken,
            self.num_not_in_htree,
        )
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One running GC as `/gc/query` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcQueryEntry {
    pub bucket: usize,
    /// `/` + the first component of the bucket directory's real path (the `/du` root).
    pub root: String,
    pub src: u32,
    pub end: u32,
    /// Non-empty chunks from `src` to `end`.
    pub remain: u32,
}

impl GcQueryEntry {
    /// `bkt: %02x, start -> %d, end -> %d, remain -> %d`.
    pub fn line(&self) -> String {
        format!(
            "bkt: {:02x}, start -> {}, end -> {}, remain -> {}",
            self.bucket, self.src, self.end, self.remain
        )
    }
}

/// `/` + the first component of `dir`'s resolved path (`/` if it has none).
pub fn disk_root(dir: &Path) -> String {
    let real = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    real.components()
        .find_map(|c| match c {
            std::path::Component::Normal(n) => Some(format!("/{}", n.to_string_lossy())),
            _ => None,
        })
        .unwrap_or_else(|| "/".to_string())
}

/// Per-bucket GC bookkeeping, behind `Bucket::gc`.
#[derive(Default)]
pub(crate) struct GcControl {
    pub state: Option<GcState>,
    cancel: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Bucket {
    /// Resolves a request to a range (§6.4 "Range") without starting anything.
    pub(crate) fn gc_plan(&self, req: &GcRequest) -> Result<GcPlan, GcError> {
        let (next_gc, head, sizes) = {
            let inner = self.inner.lock();
            (inner.next_gc, inner.head, inner.chunk_sizes.clone())
        };
        let nonempty = |c: u32| sizes.get(&c).is_some_and(|&s| s > 0);
        let mut start = req.start.unwrap_or(next_gc);
        if start > head {
            return Err(GcError::StartBeyondHead);
        }
        while start < head && !nonempty(start) {
            start += 1;
        }
        let days = req.no_gc_days.unwrap_or(self.cfg.no_gc_days);
        let mut end = (head as i64 - 1).min(req.end.map_or(i64::MAX, i64::from));
        let now = now_secs() as i64;
        let mut found = false;
        let mut next = end + 1;
        // The newest chunk that may be collected is the one before the first chunk (from the
        // top) whose first record is older than `days`: chunks written recently stay intact.
        while next > start as i64 {
            let n = next as u32;
            if nonempty(n) {
                if let Some(ts) = self.first_record_ts(n) {
                    if now - ts as i64 > days as i64 * 86400 {
                        end = (start..n)
                            .rev()
                            .find(|&c| nonempty(c))
                            .map_or(start as i64 - 1, i64::from);
                        found = true;
                        break;
                    }
                }
            }
            next -= 1;
        }
        if !found {
            return Err(GcError::NothingOldEnough { days, start });
        }
        if end < start as i64 {
            return Err(GcError::EndBeforeStart { end, start });
        }
        Ok(GcPlan {
            bucket: self.id,
            start,
            end: end as u32,
            merge: req.merge,
            pretend: !req.run,
        })
    }

    fn first_record_ts(&self, chunk: u32) -> Option<u32> {
        let mut r = DataStreamReader::open(self.path(&data_file_name(chunk)), 0).ok()?;
        r.next_record().ok().flatten().map(|it| it.record.ts)
    }

    /// Computes the plan and, with `run`, starts the GC thread.
    pub(crate) fn gc_start(self: &Arc<Self>, req: GcRequest) -> Result<GcPlan, GcError> {
        let mut ctl = self.gc.lock();
        if self.gc_running.load(Ordering::Acquire) {
            return Err(GcError::AlreadyRunning(self.id));
        }
        let plan = self.gc_plan(&req)?;
        if !req.run {
            return Ok(plan);
        }
        if let Some(h) = ctl.handle.take() {
            let _ = h.join();
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let abort = Arc::new(AtomicBool::new(false));
        ctl.cancel = cancel.clone();
        ctl.abort = abort.clone();
        ctl.state = Some(GcState::new(&plan));
        self.gc_running.store(true, Ordering::Release);
        self.hint_state.fetch_or(HINT_STATE_GC, Ordering::AcqRel);
        let b = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("beansdb-gc-{:x}", self.id))
            .spawn(move || run(b, plan, cancel, abort));
        match spawned {
            Ok(h) => {
                ctl.handle = Some(h);
                info!(
                    bucket = self.id,
                    start = plan.start,
                    end = plan.end,
                    "gc started"
                );
                Ok(plan)
            }
            Err(e) => {
                self.gc_running.store(false, Ordering::Release);
                self.hint_state.fetch_and(!HINT_STATE_GC, Ordering::AcqRel);
                if let Some(st) = ctl.state.as_mut() {
                    st.running = false;
                    st.err = Some(e.to_string());
                    st.end_ts = Some(SystemTime::now());
                }
                Err(GcError::Spawn(e.to_string()))
            }
        }
    }

    /// Asks a running GC to stop before its next source chunk; returns its (src, dst).
    pub fn gc_cancel(&self) -> Result<(u32, u32), GcError> {
        let mut ctl = self.gc.lock();
        if !self.gc_running.load(Ordering::Acquire) {
            return Err(GcError::NotRunning(self.id));
        }
        ctl.cancel.store(true, Ordering::Release);
        match ctl.state.as_mut() {
            Some(st) => {
                st.cancel_flag = true;
                Ok((st.src, st.dst))
            }
            None => Err(GcError::NotRunning(self.id)),
        }
    }

    /// The most recent GC of this bucket since the store was opened.
    pub fn gc_state(&self) -> Option<GcState> {
        self.gc.lock().state.clone()
    }

    /// Waits for a running GC to finish.
    pub fn gc_wait(&self) {
        let h = self.gc.lock().handle.take();
        if let Some(h) = h {
            let _ = h.join();
        }
    }

    /// Shutdown: stops a running GC as soon as it is safe (mid-source) and waits for it.
    pub(crate) fn gc_abort_and_join(&self) {
        let h = {
            let mut ctl = self.gc.lock();
            ctl.abort.store(true, Ordering::Release);
            ctl.cancel.store(true, Ordering::Release);
            ctl.handle.take()
        };
        if let Some(h) = h {
            let _ = h.join();
        }
    }

    pub(crate) fn gc_query(&self) -> Option<GcQueryEntry> {
        if !self.gc_running.load(Ordering::Acquire) {
            return None;
        }
        let st = self.gc.lock().state.clone()?;
        let remain = {
            let inner = self.inner.lock();
            inner
                .chunk_sizes
                .range(st.src..=st.end.max(st.src))
                .filter(|(&c, &s)| s > 0 && c <= st.end)
                .count() as u32
        };
        Some(GcQueryEntry {
            bucket: self.id,
            root: disk_root(&self.dir),
            src: st.src,
            end: st.end,
            remain,
        })
    }

    fn publish(&self, st: &GcState) {
        let mut ctl = self.gc.lock();
        let cancel_flag = ctl.state.as_ref().is_some_and(|s| s.cancel_flag);
        let mut s = st.clone();
        s.cancel_flag |= cancel_flag;
        ctl.state = Some(s);
    }
}

/// Body of the GC thread.
fn run(b: Arc<Bucket>, plan: GcPlan, cancel: Arc<AtomicBool>, abort: Arc<AtomicBool>) {
    let mut gc = Gc {
        b: &b,
        start: plan.start,
        end: plan.end,
        dst: plan.start,
        out: None,
        st: GcState::new(&plan),
        cancel,
        abort,
        throttle: Throttle::new(b.cfg.gc_max_mb_per_sec),
        since_publish: 0,
    };
    let res = gc.go(plan.merge);
    let mut st = gc.st.clone();
    if let Err(e) = &res {
        // An in-place rewrite of the current source may have been left behind; the source
        // itself is intact.
        let _ = fs::remove_file(tmp_path(&b.path(&data_file_name(gc.st.src))));
        error!(bucket = b.id, error = %e, "gc failed");
        st.err = Some(e.to_string());
    }
    st.running = false;
    st.end_ts = Some(SystemTime::now());
    b.publish(&st);
    b.hint_state
        .fetch_and(!(HINT_STATE_GC | HINT_STATE_MERGE), Ordering::AcqRel);
    b.gc_running.store(false, Ordering::Release);
    info!(
        bucket = b.id,
        src = st.src,
        dst = st.dst,
        released = st.num_released,
        size_released = st.size_released,
        broken = st.size_broken,
        "gc finished"
    );
}

/// Keep/drop verdict for one record (§6.4 rules 1–3).
struct Verdict {
    keep: bool,
    /// The index entry of the key is a tombstone (for NumReleasedDeleted).
    index_tombstone: bool,
    not_in_htree: bool,
    /// vhash for the hint item when the index knows the key.
    vhash: Option<u16>,
}

/// Destination being appended to (dst ≠ src).
struct AppendOut {
    chunk: u32,
    file: File,
    size: u64,
    /// Hint items of records written since the last fsync; added to the bucket's hint buffer
    /// only once the data is durable.
    hints: Vec<(Vec<u8>, HintSlot, u32)>,
}

/// In-place rewrite of a source (dst == src) into `NNN.data.tmp`.
struct InPlace {
    chunk: u32,
    tmp: PathBuf,
    writer: BufWriter<File>,
    size: u64,
    moves: Vec<Move>,
}

struct Move {
    keyhash: u64,
    key: Vec<u8>,
    old: u32,
    slot: HintSlot,
    end: u32,
}

struct Throttle {
    bytes_per_sec: u64,
    began: Instant,
    bytes: u64,
}

impl Throttle {
    fn new(mb_per_sec: u32) -> Throttle {
        Throttle {
            bytes_per_sec: mb_per_sec as u64 * (1 << 20),
            began: Instant::now(),
            bytes: 0,
        }
    }

    /// Sleeps as long as the average rate since the start exceeds the limit.
    fn account(&mut self, n: u64, abort: &AtomicBool) {
        if self.bytes_per_sec == 0 {
            return;
        }
        self.bytes += n;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec as f64);
        loop {
            let el = self.began.elapsed();
            if el >= due || abort.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep((due - el).min(Duration::from_millis(50)));
        }
    }
}

struct Gc<'a> {
    b: &'a Bucket,
    start: u32,
    end: u32,
    dst: u32,
    out: Option<AppendOut>,
    st: GcState,
    cancel: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
    throttle: Throttle,
    since_publish: u32,
}

fn io_err(what: &str, path: &Path, e: io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

impl Gc<'_> {
    fn go(&mut self, merge: bool) -> Result<(), String> {
        if !self.wait_queue()? {
            return Ok(());
        }
        self.before(merge)?;
        self.dst = self.initial_dst();
        self.st.dst = self.dst;
        self.b.publish(&self.st);
        let mut src = self.start;
        while src <= self.end {
            if self.cancel.load(Ordering::Acquire) {
                info!(bucket = self.b.id, src, "gc cancelled");
                break;
            }
            self.st.src = src;
            self.b.publish(&self.st);
            let size = self
                .b
                .inner
                .lock()
                .chunk_sizes
                .get(&src)
                .copied()
                .unwrap_or(0);
            if size > 0 && !self.process(src)? {
                // Aborted by shutdown in the middle of `src`.
                break;
            }
            self.set_next_gc(src + 1);
            src += 1;
            self.st.src = src;
        }
        self.sync_out()?;
        self.out = None;
        // Positions of colliding keys may have moved.
        let t = {
            let inner = self.b.inner.lock();
            (!inner.collisions.is_empty()).then(|| inner.collisions.clone())
        };
        if let Some(t) = t {
            if let Err(e) = t.save(
                self.b.path(crate::hint::COLLISION_FILE_NAME),
                self.b.fsync_meta(),
            ) {
                warn!(bucket = self.b.id, error = %e, "writing collision.yaml failed");
            }
        }
        Ok(())
    }

    /// Records for chunks in the range may still be queued right after a rotation. Returns
    /// false if shutdown interrupted the wait.
    fn wait_queue(&self) -> Result<bool, String> {
        let t = Instant::now();
        loop {
            let pending = self
                .b
                .inner
                .lock()
                .queue
                .front()
                .is_some_and(|p| p.chunk <= self.end);
            if !pending {
                return Ok(true);
            }
            if self.abort.load(Ordering::Acquire) {
                return Ok(false);
            }
            if t.elapsed() > Duration::from_secs(60) {
                return Err("write queue of the gc range not drained".into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn list_dir(&self) -> Result<Vec<FileName>, String> {
        let rd = fs::read_dir(&self.b.dir).map_err(|e| io_err("listing", &self.b.dir, e))?;
        Ok(rd
            .flatten()
            .filter_map(|e| parse_file_name(&e.file_name().to_string_lossy()))
            .collect())
    }

    /// §6.4 "Before": drop htree dumps, merge or drop `.idx.m`, collision scan.
    fn before(&mut self, merge: bool) -> Result<(), String> {
        let names = self.list_dir()?;
        {
            let mut inner = self.b.inner.lock();
            for n in &names {
                if let FileName::HTree { chunk, split } = n {
                    let _ = fs::remove_file(self.b.path(&htree_file_name(*chunk, *split)));
                }
            }
            // The tree no longer matches any dump; a restart replays all hints.
            inner.tree_id = (0, 0);
        }
        self.b
            .hint_state
            .fetch_or(HINT_STATE_MERGE, Ordering::AcqRel);
        let mut hints: Vec<(u32, u32)> = names
            .iter()
            .filter_map(|n| match n {
                FileName::Hint {
                    chunk,
                    split,
                    merged: false,
                } => Some((*chunk, *split)),
                _ => None,
            })
            .collect();
        hints.sort_unstable();
        let merged: Vec<(u32, u32)> = names
            .iter()
            .filter_map(|n| match n {
                FileName::Hint {
                    chunk,
                    split,
                    merged: true,
                } => Some((*chunk, *split)),
                _ => None,
            })
            .collect();
        let keep_merged = if merge && !self.b.cfg.hint_no_merged {
            self.write_merged(&hints)
        } else {
            None
        };
        for (c, s) in merged {
            if Some((c, s)) != keep_merged {
                let _ = fs::remove_file(self.b.path(&hint_file_name(c, s, true)));
            }
        }
        self.collision_scan(&hints);
        self.b
            .hint_state
            .fetch_and(!HINT_STATE_MERGE, Ordering::AcqRel);
        Ok(())
    }

    /// k-way merge of all `.idx.s` into one `.idx.m` (equal keys keep the later position).
    fn write_merged(&self, hints: &[(u32, u32)]) -> Option<(u32, u32)> {
        let last = *hints.last()?;
        let mut all: HashMap<(u64, Vec<u8>), HintItem> = HashMap::new();
        for &(c, s) in hints {
            let Ok(h) = read_hint_file(self.b.path(&hint_file_name(c, s, false))) else {
                continue;
            };
            for mut it in h.items {
                it.chunk_id = c;
                // Files are visited in (chunk, split) order, so a later one is newer.
                all.insert((it.keyhash, it.key.clone()), it);
            }
        }
        let mut items: Vec<HintItem> = all.into_values().collect();
        let p = self.b.path(&hint_file_name(last.0, last.1, true));
        match write_hint_file(
            &p,
            &mut items,
            0,
            self.b.cfg.hint_index_interval,
            self.b.fsync_meta(),
        ) {
            Ok(()) => Some(last),
            Err(e) => {
                warn!(file = %p.display(), error = %e, "writing merged hint file failed");
                None
            }
        }
    }

    /// Registers every keyhash with two or more distinct keys in the collision table (newest
    /// position per key) and writes `collision.yaml`.
    fn collision_scan(&self, hints: &[(u32, u32)]) {
        fn sig(key: &[u8]) -> u64 {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut h);
            h.finish()
        }
        // Pass 1: find colliding keyhashes while remembering one key signature per keyhash.
        let mut first: HashMap<u64, u64> = HashMap::new();
        let mut colliding: HashSet<u64> = HashSet::new();
        let mut visit = |kh: u64, key: &[u8]| {
            let s = sig(key);
            if *first.entry(kh).or_insert(s) != s {
                colliding.insert(kh);
            }
        };
        // Hint files are read one at a time (twice) so memory stays at the per-keyhash map.
        let read = |&(c, s): &(u32, u32)| {
            read_hint_file(self.b.path(&hint_file_name(c, s, false)))
                .ok()
                .map(|h| (c, h))
        };
        for (_, h) in hints.iter().filter_map(read) {
            for it in &h.items {
                visit(it.keyhash, &it.key);
            }
        }
        {
            let inner = self.b.inner.lock();
            for ch in inner.hints.values() {
                for sp in &ch.splits {
                    for (k, s) in &sp.items {
                        visit(s.keyhash, k);
                    }
                }
            }
        }
        drop(first);
        if colliding.is_empty() {
            return;
        }
        // Pass 2: newest position of every key of those keyhashes.
        let mut newest: HashMap<(u64, Vec<u8>), CollisionEntry> = HashMap::new();
        let mut note = |key: &[u8], e: CollisionEntry| {
            let k = (e.keyhash, key.to_vec());
            let newer = newest
                .get(&k)
                .is_none_or(|o| (o.chunk_id, o.offset) <= (e.chunk_id, e.offset));
            if newer {
                newest.insert(k, e);
            }
        };
        for (c, h) in hints.iter().filter_map(read) {
            for it in h.items.iter().filter(|it| colliding.contains(&it.keyhash)) {
                note(
                    &it.key,
                    CollisionEntry {
                        keyhash: it.keyhash,
                        chunk_id: c,
                        offset: it.offset,
                        ver: it.ver,
                        vhash: it.vhash,
                    },
                );
            }
        }
        let mut inner = self.b.inner.lock();
        for (&c, ch) in &inner.hints {
            for sp in &ch.splits {
                for (k, s) in sp
                    .items
                    .iter()
                    .filter(|(_, s)| colliding.contains(&s.keyhash))
                {
                    note(
                        k,
                        CollisionEntry {
                            keyhash: s.keyhash,
                            chunk_id: c,
                            offset: s.offset,
                            ver: s.ver,
                            vhash: s.vhash,
                        },
                    );
                }
            }
        }
        for ((_, key), e) in newest {
            Bucket::collision_put(&mut inner.collisions, key, e, false);
        }
        if let Some(&(c, s)) = hints.last() {
            inner.collisions.hint_chunk = c;
            inner.collisions.hint_split = s;
        }
        let t = inner.collisions.clone();
        drop(inner);
        info!(
            bucket = self.b.id,
            keyhashes = colliding.len(),
            "collision scan registered colliding keys"
        );
        if let Err(e) = t.save(
            self.b.path(crate::hint::COLLISION_FILE_NAME),
            self.b.fsync_meta(),
        ) {
            warn!(bucket = self.b.id, error = %e, "writing collision.yaml failed");
        }
    }

    /// §6.4 "Destination".
    fn initial_dst(&self) -> u32 {
        let inner = self.b.inner.lock();
        let below = inner
            .chunk_sizes
            .range(..self.start)
            .rev()
            .find(|(_, &s)| s > 0)
            .map(|(&c, &s)| (c, s));
        match below {
            None => self.start,
            Some((i, size)) => {
                if size < self.b.cfg.datafile_max.saturating_sub(self.b.cfg.body_max) {
                    i
                } else if i + 1 < self.start {
                    i + 1
                } else {
                    self.start
                }
            }
        }
    }

    fn set_next_gc(&mut self, next: u32) {
        let mut inner = self.b.inner.lock();
        if next > inner.next_gc {
            inner.next_gc = next;
        }
        let n = inner.next_gc;
        drop(inner);
        if let Err(e) = write_next_gc(self.b.path(NEXTGC_FILE_NAME), n, true) {
            warn!(bucket = self.b.id, error = %e, "writing nextgc.txt failed");
        }
    }

    /// Rules 1–3 of §6.4 for the record of `key` at (`src`, `off`) with version `ver`.
    fn verdict(
        &self,
        inner: &Inner,
        keyhash: u64,
        key: &[u8],
        src: u32,
        off: u32,
        ver: i32,
    ) -> Verdict {
        let here = (src, off);
        if let Some(e) = inner.collisions.get(keyhash, key) {
            return Verdict {
                keep: (e.chunk_id, e.offset) == here,
                index_tombstone: e.ver < 0,
                not_in_htree: false,
                vhash: Some(e.vhash),
            };
        }
        match inner.tree.get(keyhash) {
            Some(m) if (m.chunk, m.offset) == here => Verdict {
                keep: true,
                index_tombstone: m.ver < 0,
                not_in_htree: false,
                vhash: Some(m.vhash),
            },
            Some(m) => {
                // The entry may belong to another key with the same keyhash: then this key is
                // kept iff this is its newest known position.
                let keep = inner.collisions.contains_keyhash(keyhash)
                    && newest_mem_hint(inner, key).is_none_or(|p| p == here);
                Verdict {
                    keep,
                    index_tombstone: m.ver < 0,
                    not_in_htree: false,
                    vhash: None,
                }
            }
            None => Verdict {
                keep: ver < 0 && self.start > 0,
                index_tombstone: false,
                not_in_htree: true,
                vhash: None,
            },
        }
    }

    /// Compacts one source chunk. Returns false if aborted by shutdown.
    fn process(&mut self, src: u32) -> Result<bool, String> {
        let b = self.b;
        // Its hints are rewritten from what is kept (a crash in between rebuilds them).
        b.inner.lock().hints.remove(&src);
        for n in self.list_dir()? {
            if let FileName::Hint {
                chunk,
                split,
                merged: false,
            } = n
            {
                if chunk == src {
                    let _ = fs::remove_file(b.path(&hint_file_name(chunk, split, false)));
                }
            }
        }
        let path = b.path(&data_file_name(src));
        let mut reader =
            DataStreamReader::open(&path, 0).map_err(|e| io_err("opening", &path, e))?;
        self.st.size_before += reader.file_size();
        let mut inplace = if self.dst == src {
            self.sync_out()?;
            self.out = None;
            Some(self.open_inplace(src)?)
        } else {
            None
        };
        let mut n = 0u64;
        while let Some(item) = reader
            .next_record()
            .map_err(|e| io_err("reading", &path, e))?
        {
            if self.abort.load(Ordering::Acquire) {
                if let Some(ip) = inplace.take() {
                    drop(ip.writer);
                    let _ = fs::remove_file(&ip.tmp);
                }
                self.sync_out()?;
                return Ok(false);
            }
            n += 1;
            let padded = item.padded_size as u64;
            self.st.num_before += 1;
            let rec = &item.record;
            let kh = beansdb_hash::keyhash(&rec.key);
            let v = {
                let inner = b.inner.lock();
                self.verdict(&inner, kh, &rec.key, src, item.offset, rec.ver)
            };
            if v.not_in_htree {
                self.st.num_not_in_htree += 1;
            }
            if !v.keep {
                self.st.num_released += 1;
                self.st.size_released += padded;
                if v.index_tombstone {
                    self.st.num_released_deleted += 1;
                    self.st.size_deleted += padded;
                }
                self.throttle.account(padded, &self.abort);
                self.maybe_publish();
                continue;
            }
            let vhash = if rec.ver < 0 {
                0
            } else {
                v.vhash
                    .unwrap_or_else(|| HintItem::from_record(rec, 0, 0).vhash)
            };
            let bytes = rec.encode_padded();
            if inplace.is_none() {
                self.ensure_out()?;
                let full = self
                    .out
                    .as_ref()
                    .is_some_and(|o| o.size > 0 && o.size + padded > b.cfg.datafile_max);
                if full {
                    // The destination is full: finish it and move on (never beyond `src`;
                    // chunks between are empty).
                    self.sync_out()?;
                    self.out = None;
                    self.dst += 1;
                    self.st.dst = self.dst;
                    if self.dst == src {
                        inplace = Some(self.open_inplace(src)?);
                    } else {
                        self.ensure_out()?;
                    }
                }
            }
            let slot = HintSlot {
                keyhash: kh,
                offset: 0,
                ver: rec.ver,
                vhash,
            };
            match inplace.as_mut() {
                Some(ip) => {
                    let new = ip.size as u32;
                    ip.writer
                        .write_all(&bytes)
                        .map_err(|e| io_err("writing", &ip.tmp, e))?;
                    if ip.size == 0 && FAILPOINT.read().is_some() {
                        let _ = ip.writer.flush();
                        failpoint("gc_tmp_partial");
                    }
                    ip.size += padded;
                    ip.moves.push(Move {
                        keyhash: kh,
                        key: rec.key.clone(),
                        old: item.offset,
                        slot: HintSlot {
                            offset: new,
                            ..slot
                        },
                        end: ip.size as u32,
                    });
                }
                None => {
                    let first = self.out.as_ref().is_some_and(|o| o.hints.is_empty());
                    self.append(src, item.offset, &rec.key, slot, &bytes)?;
                    if first {
                        failpoint("gc_mid_append");
                    }
                }
            }
            self.throttle.account(padded * 2, &self.abort);
            self.maybe_publish();
        }
        let broken = reader.total_broken();
        self.st.size_broken += broken;
        self.st.size_released += broken;
        if broken > 0 {
            warn!(
                bucket = b.id,
                chunk = src,
                bytes = broken,
                "gc skipped broken bytes"
            );
        }
        match inplace {
            Some(ip) => self.commit_inplace(ip)?,
            None => {
                // Copies are durable before the source goes away.
                self.sync_out()?;
                failpoint("gc_before_src_delete");
                let mut inner = b.inner.lock();
                fs::remove_file(&path).map_err(|e| io_err("removing", &path, e))?;
                b.forget_file(src);
                inner.chunk_sizes.remove(&src);
                b.gc_epoch.fetch_add(1, Ordering::AcqRel);
            }
        }
        info!(
            bucket = b.id,
            chunk = src,
            records = n,
            dst = self.dst,
            "gc source done"
        );
        b.publish(&self.st);
        Ok(true)
    }

    fn maybe_publish(&mut self) {
        self.since_publish += 1;
        if self.since_publish >= 64 {
            self.since_publish = 0;
            self.b.publish(&self.st);
        }
    }

    fn open_inplace(&self, src: u32) -> Result<InPlace, String> {
        let tmp = tmp_path(&self.b.path(&data_file_name(src)));
        let f = File::create(&tmp).map_err(|e| io_err("creating", &tmp, e))?;
        Ok(InPlace {
            chunk: src,
            tmp,
            writer: BufWriter::with_capacity(self.b.cfg.bufio_cap.max(1 << 16), f),
            size: 0,
            moves: Vec::new(),
        })
    }

    /// Opens `dst` for appending (creating it if needed) unless it is open already.
    fn ensure_out(&mut self) -> Result<(), String> {
        if self.out.as_ref().is_some_and(|o| o.chunk == self.dst) {
            return Ok(());
        }
        self.sync_out()?;
        let p = self.b.path(&data_file_name(self.dst));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&p)
            .map_err(|e| io_err("opening", &p, e))?;
        let len = file.metadata().map_err(|e| io_err("stat", &p, e))?.len();
        // Records start on 256-byte boundaries.
        let size = len.div_ceil(256) * 256;
        self.out = Some(AppendOut {
            chunk: self.dst,
            file,
            size,
            hints: Vec::new(),
        });
        Ok(())
    }

    /// Appends one kept record to `dst` and moves its index entry there.
    fn append(
        &mut self,
        src: u32,
        old: u32,
        key: &[u8],
        slot: HintSlot,
        bytes: &[u8],
    ) -> Result<(), String> {
        let b = self.b;
        let Some(out) = self.out.as_mut() else {
            return Err("no gc destination".into());
        };
        let new = out.size as u32;
        out.file
            .write_all_at(bytes, out.size)
            .map_err(|e| format!("writing chunk {}: {e}", out.chunk))?;
        out.size += bytes.len() as u64;
        let end = out.size as u32;
        out.hints.push((
            key.to_vec(),
            HintSlot {
                offset: new,
                ..slot
            },
            end,
        ));
        let dst = out.chunk;
        let mut inner = b.inner.lock();
        switch_entry(&mut inner, slot.keyhash, key, (src, old), (dst, new));
        let e = inner.chunk_sizes.entry(dst).or_insert(0);
        *e = (*e).max(end as u64);
        b.gc_epoch.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// fsyncs the append destination, then publishes its hint items and writes them.
    fn sync_out(&mut self) -> Result<(), String> {
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        out.file
            .sync_data()
            .map_err(|e| format!("fsync chunk {}: {e}", out.chunk))?;
        if out.hints.is_empty() {
            return Ok(());
        }
        let mut inner = self.b.inner.lock();
        for (key, slot, end) in out.hints.drain(..) {
            self.b.add_hint(&mut inner, out.chunk, &key, slot, end);
        }
        self.b.dump_chunk_hints_locked(&mut inner, out.chunk);
        Ok(())
    }

    /// Replaces the source by its compacted copy and moves the index entries (§6.4).
    fn commit_inplace(&mut self, ip: InPlace) -> Result<(), String> {
        let b = self.b;
        let InPlace {
            chunk,
            tmp,
            writer,
            size,
            moves,
        } = ip;
        let f = writer
            .into_inner()
            .map_err(|e| io_err("flushing", &tmp, e.into_error()))?;
        f.sync_all().map_err(|e| io_err("fsync", &tmp, e))?;
        drop(f);
        let path = b.path(&data_file_name(chunk));
        let mut inner = b.inner.lock();
        if size == 0 {
            fs::remove_file(&path).map_err(|e| io_err("removing", &path, e))?;
            let _ = fs::remove_file(&tmp);
            b.forget_file(chunk);
            inner.chunk_sizes.remove(&chunk);
            b.gc_epoch.fetch_add(1, Ordering::AcqRel);
            return Ok(());
        }
        fs::rename(&tmp, &path).map_err(|e| io_err("renaming", &tmp, e))?;
        if let Err(e) = sync_parent_dir(&path) {
            warn!(file = %path.display(), error = %e, "fsync of the bucket directory failed");
        }
        b.forget_file(chunk);
        failpoint("gc_after_rename");
        for m in &moves {
            switch_entry(
                &mut inner,
                m.keyhash,
                &m.key,
                (chunk, m.old),
                (chunk, m.slot.offset),
            );
        }
        inner.chunk_sizes.insert(chunk, size);
        b.gc_epoch.fetch_add(1, Ordering::AcqRel);
        for m in moves {
            b.add_hint(&mut inner, chunk, &m.key, m.slot, m.end);
        }
        b.dump_chunk_hints_locked(&mut inner, chunk);
        Ok(())
    }
}

/// Moves the index (and collision-table) entry of `key` from `from` to `to` if it still points
/// at `from`: a newer concurrent write wins.
fn switch_entry(inner: &mut Inner, keyhash: u64, key: &[u8], from: (u32, u32), to: (u32, u32)) {
    if let Some(e) = inner.collisions.get(keyhash, key).copied() {
        if (e.chunk_id, e.offset) == from {
            Bucket::collision_put(
                &mut inner.collisions,
                key.to_vec(),
                CollisionEntry {
                    chunk_id: to.0,
                    offset: to.1,
                    ..e
                },
                true,
            );
        }
    }
    if let Some(m) = inner.tree.get(keyhash) {
        if (m.chunk, m.offset) == from {
            inner.tree.set(
                keyhash,
                ItemMeta {
                    chunk: to.0,
                    offset: to.1,
                    ..m
                },
            );
        }
    }
}

/// Newest position of `key` in the in-memory hint buffers.
fn newest_mem_hint(inner: &Inner, key: &[u8]) -> Option<(u32, u32)> {
    for (&c, ch) in inner.hints.iter().rev() {
        for sp in ch.splits.iter().rev() {
            if let Some(s) = sp.items.get(key) {
                return Some((c, s.offset));
            }
        }
    }
    None
}
