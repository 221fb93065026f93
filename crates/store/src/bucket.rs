//! One bucket: its data files, index, hint buffers, collision table and write queue.
//!
//! Concurrency: a single mutex (`inner`) is the bucket write lock of node.md §6.1 and also
//! guards the index; it is held only for in-memory work (plus the rare same-value comparison
//! and collision lookups). Data-file reads happen outside it on shared read handles; records
//! not yet written are served from the queue.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::buffers::{track, BufferKind, Tracked};
use crate::collision::{CollisionEntry, CollisionTable};
use crate::compress::{maybe_compress, qlz_header_sizes};
use crate::config::{FsyncPolicy, StoreConfig};
use crate::datafile::{read_record_at, DataStreamReader};
use crate::error::StoreError;
use crate::hint::{
    data_file_name, hint_file_name, htree_file_name, parse_file_name, read_hint_file,
    write_file_atomic, write_hint_file, FileName, HintItem, COLLISION_FILE_NAME, NEXTGC_FILE_NAME,
};
use crate::htree::{HTree, ItemMeta, NodeSum};
use crate::nextgc::read_next_gc;
use crate::record::{padded_size, Record, FLAG_COMPRESSED, FLAG_INCR, HEADER_SIZE};
use crate::writer::WriterSignal;

/// At most 998 chunks (000…997).
pub const MAX_CHUNKS: u32 = 998;

/// A record encoded and queued for the writer.
pub(crate) struct Pending {
    pub chunk: u32,
    pub offset: u32,
    pub data: Arc<Vec<u8>>,
    pub seq: u64,
    _tracked: Tracked,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct HintSlot {
    pub keyhash: u64,
    pub offset: u32,
    pub ver: i32,
    pub vhash: u16,
}

#[derive(Default)]
pub(crate) struct HintSplit {
    pub items: HashMap<Vec<u8>, HintSlot>,
    pub datasize: u32,
    pub dumped: bool,
}

/// In-memory hint splits of one chunk; `first` is the number of the first split here.
pub(crate) struct ChunkHints {
    pub first: u32,
    pub splits: Vec<HintSplit>,
    last_add: Instant,
}

/// The bucket-level stats of BucketInfo (§8.2).
#[derive(Default)]
pub struct BucketCounters {
    pub num_get: AtomicU64,
    pub num_set: AtomicU64,
    pub num_same_vhash: AtomicU64,
    pub size_same_vhash: AtomicU64,
}

pub(crate) struct Inner {
    pub tree: HTree,
    pub collisions: CollisionTable,
    pub head: u32,
    pub head_size: u64,
    pub queue: VecDeque<Pending>,
    next_seq: u64,
    pub(crate) hints: BTreeMap<u32, ChunkHints>,
    pub tree_id: (u32, i32),
    pub next_gc: u32,
    pub write_error: Option<String>,
    /// Bytes on disk per chunk (written by the writer, or found at startup).
    pub chunk_sizes: BTreeMap<u32, u64>,
    pub same_vhash_key: String,
    pub max_dumped_hint: (u32, u32),
}

pub struct Bucket {
    pub id: usize,
    pub dir: PathBuf,
    pub(crate) cfg: Arc<StoreConfig>,
    pub(crate) inner: Mutex<Inner>,
    read_files: RwLock<HashMap<u32, Arc<File>>>,
    durable: watch::Sender<u64>,
    signal: Arc<WriterSignal>,
    pub counters: BucketCounters,
    pub gc_running: AtomicBool,
    /// Bumped whenever GC switches index entries to new positions (read retry, §6.2).
    pub(crate) gc_epoch: AtomicU64,
    pub(crate) gc: Mutex<crate::gc::GcControl>,
    /// HintState bits of BucketInfo (§8.2).
    pub(crate) hint_state: AtomicU32,
}

/// What a read found.
pub struct Found {
    pub record: Record,
    pub ver: i32,
    pub vhash: u16,
    pub chunk: u32,
    pub offset: u32,
    /// Served from the write queue (not yet on disk).
    pub in_buffer: bool,
}

/// Meta of `?key` / `??key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyMeta {
    pub ver: i32,
    pub vhash: u16,
    pub flag: u32,
    pub len: u32,
    pub ts: u32,
    pub chunk: u32,
    pub offset: u32,
}

/// A write that is acknowledged once its batch is on disk (`fsync: always`).
pub struct Durable {
    rx: watch::Receiver<u64>,
    seq: u64,
}

impl Durable {
    pub async fn wait(mut self) {
        let seq = self.seq;
        let _ = self.rx.wait_for(|s| *s >= seq).await;
    }

    pub fn wait_blocking(self) {
        let mut rx = self.rx;
        while *rx.borrow_and_update() < self.seq {
            if rx.has_changed().is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

struct Prepared {
    buf: Vec<u8>,
    tail_crc: crc32fast::Hasher,
    vhash: u16,
    tombstone: bool,
}

pub enum WriteOutcome {
    /// Written (or deliberately skipped); `Some` when the caller must wait for durability.
    Done(Option<Durable>),
    NotFound,
}

pub fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

fn pos_key(chunk: u32, offset: u32) -> u64 {
    ((chunk as u64) << 32) | offset as u64
}

impl Bucket {
    // ------------------------------------------------------------------ open / recovery

    pub(crate) fn open(
        id: usize,
        cfg: Arc<StoreConfig>,
        signal: Arc<WriterSignal>,
    ) -> Result<Bucket, StoreError> {
        let dir = cfg.bucket_dir(id);
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let depth = cfg.depth();
        let tree = HTree::new(depth, cfg.tree_height, id)
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let (durable, _) = watch::channel(0u64);
        let b = Bucket {
            id,
            dir: dir.clone(),
            cfg: cfg.clone(),
            inner: Mutex::new(Inner {
                tree,
                collisions: CollisionTable::new(),
                head: 0,
                head_size: 0,
                queue: VecDeque::new(),
                next_seq: 1,
                hints: BTreeMap::new(),
                tree_id: (0, -1),
                next_gc: 0,
                write_error: None,
                chunk_sizes: BTreeMap::new(),
                same_vhash_key: String::new(),
                max_dumped_hint: (0, 0),
            }),
            read_files: RwLock::new(HashMap::new()),
            durable,
            signal,
            counters: BucketCounters::default(),
            gc_running: AtomicBool::new(false),
            gc_epoch: AtomicU64::new(0),
            gc: Mutex::new(crate::gc::GcControl::default()),
            hint_state: AtomicU32::new(0),
        };
        b.recover()?;
        Ok(b)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub(crate) fn fsync_meta(&self) -> bool {
        self.cfg.fsync != FsyncPolicy::Never
    }

    /// node.md §6.3 steps 1–7.
    fn recover(&self) -> Result<(), StoreError> {
        let mut data: BTreeMap<u32, u64> = BTreeMap::new();
        let mut hints: BTreeMap<u32, Vec<(u32, bool)>> = BTreeMap::new();
        let mut trees: Vec<(u32, u32)> = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(|e| StoreError::io(&self.dir, e))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            match parse_file_name(&name) {
                Some(FileName::Tmp) => {
                    info!(bucket = self.id, file = %name, "removing temporary file");
                    let _ = fs::remove_file(e.path());
                }
                Some(FileName::Data(c)) if c < MAX_CHUNKS => {
                    let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                    data.insert(c, size);
                }
                Some(FileName::Hint {
                    chunk,
                    split,
                    merged,
                }) => hints.entry(chunk).or_default().push((split, merged)),
                Some(FileName::HTree { chunk, split }) => trees.push((chunk, split)),
                _ => {}
            }
        }
        // Empty data files carry nothing.
        for (&c, &size) in data.clone().iter() {
            if size == 0 {
                info!(bucket = self.id, chunk = c, "removing empty data file");
                let _ = fs::remove_file(self.path(&data_file_name(c)));
                data.remove(&c);
            }
        }
        let newest = data.keys().next_back().copied();

        // Torn-tail repair.
        let mut truncated = false;
        for (&c, size) in data.iter_mut() {
            if Some(c) != newest && *size % 256 == 0 {
                continue;
            }
            let splits = self.load_splits(c, *size, hints.get(&c));
            let start = splits.iter().map(|s| s.datasize as u64).max().unwrap_or(0);
            let path = self.path(&data_file_name(c));
            let mut reader =
                DataStreamReader::open(&path, start).map_err(|e| StoreError::io(&path, e))?;
            let mut broken = 0;
            while let Some(item) = reader.next_record().map_err(|e| StoreError::io(&path, e))? {
                broken += item.broken_before;
            }
            if broken > 0 {
                warn!(
                    bucket = self.id,
                    chunk = c,
                    bytes = broken,
                    "corrupt records skipped in data file"
                );
            }
            let end = reader.last_valid_end().max(start);
            if end != *size {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| StoreError::io(&path, e))?;
                f.set_len(end).map_err(|e| StoreError::io(&path, e))?;
                if end < *size {
                    warn!(
                        bucket = self.id,
                        file = %path.display(),
                        old_size = *size,
                        new_size = end,
                        "torn tail truncated: file {} from {} to {} bytes",
                        path.display(),
                        *size,
                        end
                    );
                    crate::metrics::RECOVERY_TRUNCATED.fetch_add(*size - end, Ordering::Relaxed);
                    truncated = true;
                    // Splits that claim more than the file holds are stale.
                    if let Some(list) = hints.get_mut(&c) {
                        for (s, m) in list.clone() {
                            let p = self.path(&hint_file_name(c, s, m));
                            if let Ok(h) = read_hint_file(&p) {
                                if h.datasize as u64 > end {
                                    let _ = fs::remove_file(&p);
                                    list.retain(|x| *x != (s, m));
                                }
                            }
                        }
                    }
                }
                *size = end;
            }
        }
        if truncated {
            for &(c, s) in &trees {
                let _ = fs::remove_file(self.path(&htree_file_name(c, s)));
            }
            trees.clear();
        }
        data.retain(|&c, size| {
            if *size == 0 {
                let _ = fs::remove_file(self.path(&data_file_name(c)));
                false
            } else {
                true
            }
        });
        let newest = data.keys().next_back().copied();

        let mut inner = self.inner.lock();
        // Newest valid htree dump.
        trees.sort();
        let mut tree_id: (u32, i32) = (0, -1);
        let mut loaded_tree = false;
        while let Some((c, s)) = trees.pop() {
            let p = self.path(&htree_file_name(c, s));
            if !loaded_tree && newest.is_some_and(|n| c <= n) {
                match fs::read(&p)
                    .map_err(|e| e.to_string())
                    .and_then(|d| inner.tree.load(&d).map_err(|e| e.to_string()))
                {
                    Ok(()) => {
                        tree_id = (c, s as i32);
                        loaded_tree = true;
                        continue;
                    }
                    Err(e) => {
                        warn!(bucket = self.id, file = %p.display(), error = %e, "bad htree dump, rebuilding")
                    }
                }
            }
            let _ = fs::remove_file(&p);
        }

        // Hints of chunks without data are stale.
        for (&c, list) in &hints {
            if !data.contains_key(&c) {
                for &(s, m) in list {
                    let _ = fs::remove_file(self.path(&hint_file_name(c, s, m)));
                }
            }
        }

        for (&c, &size) in &data {
            let mut splits = self.load_splits(c, size, hints.get(&c));
            let covered = splits.iter().map(|s| s.datasize as u64).max().unwrap_or(0);
            if covered < size {
                let rebuilt = self.scan_into_split(c, covered, splits.len() as u32)?;
                if let Some(r) = rebuilt {
                    crate::metrics::HINT_REBUILDS.fetch_add(1, Ordering::Relaxed);
                    splits.push(r);
                }
            }
            if c < tree_id.0 {
                continue;
            }
            for (si, split) in splits.iter().enumerate() {
                if c == tree_id.0 && (si as i32) <= tree_id.1 {
                    continue;
                }
                for it in &split.items {
                    if it.ver > 0 {
                        inner.tree.set(
                            it.keyhash,
                            ItemMeta {
                                chunk: c,
                                offset: it.offset,
                                ver: it.ver,
                                vhash: it.vhash,
                            },
                        );
                    } else {
                        inner.tree.remove(it.keyhash);
                    }
                }
            }
        }
        inner.tree.refresh();
        inner.head = newest.map(|n| n + 1).unwrap_or(0);
        inner.head_size = 0;
        inner.chunk_sizes = data.clone();
        inner.tree_id = tree_id;
        if !loaded_tree && !data.is_empty() {
            self.dump_tree_locked(&mut inner);
        }
        match CollisionTable::load(self.path(COLLISION_FILE_NAME)) {
            Ok(t) => inner.collisions = t,
            Err(e) => {
                warn!(bucket = self.id, error = %e, "unreadable collision.yaml, starting empty")
            }
        }
        match read_next_gc(self.path(NEXTGC_FILE_NAME)) {
            Ok(Some(n)) => inner.next_gc = n,
            Ok(None) => {}
            Err(e) => warn!(bucket = self.id, error = %e, "unreadable nextgc.txt"),
        }
        if inner.head >= MAX_CHUNKS {
            warn!(bucket = self.id, "no chunk left for writes");
        }
        Ok(())
    }

    /// Valid contiguous splits `NNN.000`, `NNN.001`, …; anything after the first bad one is
    /// deleted (§4.4).
    fn load_splits(
        &self,
        chunk: u32,
        data_size: u64,
        present: Option<&Vec<(u32, bool)>>,
    ) -> Vec<crate::hint::HintFile> {
        let mut out = Vec::new();
        let Some(present) = present else { return out };
        let mut nums: Vec<u32> = present
            .iter()
            .filter(|(_, m)| !m)
            .map(|(s, _)| *s)
            .collect();
        nums.sort();
        let mut ok = true;
        for (i, s) in nums.iter().enumerate() {
            let p = self.path(&hint_file_name(chunk, *s, false));
            if ok && *s == i as u32 {
                match read_hint_file(&p) {
                    Ok(h) if h.datasize as u64 <= data_size => {
                        out.push(h);
                        continue;
                    }
                    Ok(_) => {
                        warn!(file = %p.display(), "hint file covers more than its data file, rebuilding")
                    }
                    Err(e) => warn!(file = %p.display(), error = %e, "bad hint file, rebuilding"),
                }
            }
            ok = false;
            let _ = fs::remove_file(&p);
        }
        out
    }

    /// Scans a chunk from `from` and writes the records found as hint split `split`.
    fn scan_into_split(
        &self,
        chunk: u32,
        from: u64,
        split: u32,
    ) -> Result<Option<crate::hint::HintFile>, StoreError> {
        let path = self.path(&data_file_name(chunk));
        let mut reader =
            DataStreamReader::open(&path, from).map_err(|e| StoreError::io(&path, e))?;
        let mut items: HashMap<Vec<u8>, HintItem> = HashMap::new();
        let mut end = from;
        while let Some(it) = reader.next_record().map_err(|e| StoreError::io(&path, e))? {
            end = it.offset as u64 + it.padded_size as u64;
            let h = HintItem::from_record(&it.record, 0, it.offset);
            items.insert(h.key.clone(), h);
        }
        if items.is_empty() {
            return Ok(None);
        }
        let datasize = end.min(reader.file_size()) as u32;
        let mut list: Vec<HintItem> = items.into_values().collect();
        crate::hint::sort_hint_items(&mut list);
        let p = self.path(&hint_file_name(chunk, split, false));
        write_hint_file(
            &p,
            &mut list,
            datasize,
            self.cfg.hint_index_interval,
            self.fsync_meta(),
        )
        .map_err(|e| StoreError::io(&p, e))?;
        info!(
            bucket = self.id,
            chunk,
            split,
            items = list.len(),
            "hint split rebuilt from data"
        );
        Ok(Some(crate::hint::HintFile {
            datasize,
            items: list,
        }))
    }

    // ------------------------------------------------------------------ reads

    fn read_file(&self, chunk: u32) -> io::Result<Arc<File>> {
        if let Some(f) = self.read_files.read().get(&chunk) {
            return Ok(f.clone());
        }
        // Open under the write lock so a concurrent `forget_file` (GC replaced or deleted the
        // file) cannot be overtaken by the insertion of a handle to the old file.
        let mut files = self.read_files.write();
        if let Some(f) = files.get(&chunk) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(self.path(&data_file_name(chunk)))?);
        files.insert(chunk, f.clone());
        Ok(f)
    }

    /// Drops the cached read handle of a chunk whose file GC renamed over or deleted.
    pub(crate) fn forget_file(&self, chunk: u32) {
        self.read_files.write().remove(&chunk);
    }

    /// Current (version, vhash, position) of `key`, collision table first.
    pub(crate) fn lookup(inner: &Inner, keyhash: u64, key: &[u8]) -> Option<ItemMeta> {
        if inner.collisions.contains_keyhash(keyhash) {
            return inner.collisions.get(keyhash, key).map(|e| ItemMeta {
                chunk: e.chunk_id,
                offset: e.offset,
                ver: e.ver,
                vhash: e.vhash,
            });
        }
        inner.tree.get(keyhash)
    }

    fn queued(inner: &Inner, chunk: u32, offset: u32) -> Option<Arc<Vec<u8>>> {
        let k = pos_key(chunk, offset);
        let q = &inner.queue;
        let i = q.partition_point(|p| pos_key(p.chunk, p.offset) < k);
        q.get(i)
            .filter(|p| p.chunk == chunk && p.offset == offset)
            .map(|p| p.data.clone())
    }

    /// Reads the record at a position: from the queue if not yet written, else from disk.
    fn read_at(
        &self,
        queued: Option<Arc<Vec<u8>>>,
        chunk: u32,
        offset: u32,
    ) -> Result<Record, String> {
        if let Some(buf) = queued {
            return Record::decode(&buf)
                .map(|(r, _)| r)
                .map_err(|e| e.to_string());
        }
        let f = self.read_file(chunk).map_err(|e| e.to_string())?;
        read_record_at(&f, offset as u64).map_err(|e| e.to_string())
    }

    /// Finds the record of `key` (live or tombstone).
    pub fn find(&self, keyhash: u64, key: &[u8]) -> Result<Option<Found>, StoreError> {
        self.find_opt(keyhash, key, false)
    }

    /// Finds the live record of `key`; a tombstone is a miss without disk I/O (§3.8).
    pub fn find_live(&self, keyhash: u64, key: &[u8]) -> Result<Option<Found>, StoreError> {
        self.find_opt(keyhash, key, true)
    }

    fn find_opt(
        &self,
        keyhash: u64,
        key: &[u8],
        live_only: bool,
    ) -> Result<Option<Found>, StoreError> {
        for attempt in 0..2 {
            let (meta, q, epoch) = {
                let inner = self.inner.lock();
                let Some(m) = Self::lookup(&inner, keyhash, key) else {
                    return Ok(None);
                };
                if live_only && m.ver <= 0 {
                    return Ok(None);
                }
                let q = Self::queued(&inner, m.chunk, m.offset);
                (m, q, self.gc_epoch.load(Ordering::Acquire))
            };
            // A GC may have moved the record between the lookup and the read: look again once.
            let moved = || {
                attempt == 0
                    && (self.gc_running.load(Ordering::Acquire)
                        || self.gc_epoch.load(Ordering::Acquire) != epoch)
            };
            let in_buffer = q.is_some();
            match self.read_at(q, meta.chunk, meta.offset) {
                Ok(rec) if rec.key == key => {
                    return Ok(Some(Found {
                        record: rec,
                        ver: meta.ver,
                        vhash: meta.vhash,
                        chunk: meta.chunk,
                        offset: meta.offset,
                        in_buffer,
                    }))
                }
                Ok(rec) if beansdb_hash::keyhash(&rec.key) == keyhash => {
                    if attempt == 0 && self.gc_epoch.load(Ordering::Acquire) != epoch {
                        continue;
                    }
                    return self.resolve_collision(keyhash, key, rec, meta);
                }
                Ok(rec) => {
                    if moved() {
                        continue;
                    }
                    crate::metrics::READ_ERRORS.fetch_add(1, Ordering::Relaxed);
                    warn!(bucket = self.id, chunk = meta.chunk, offset = meta.offset,
                        found = %String::from_utf8_lossy(&rec.key), "index points at another key");
                    return Err(StoreError::ReadFailed("key mismatch".into()));
                }
                Err(e) => {
                    if moved() {
                        continue;
                    }
                    crate::metrics::READ_ERRORS.fetch_add(1, Ordering::Relaxed);
                    warn!(bucket = self.id, chunk = meta.chunk, offset = meta.offset, error = %e, "read failed");
                    return Err(StoreError::ReadFailed(e));
                }
            }
        }
        Err(StoreError::ReadFailed("retry failed".into()))
    }

    /// §6.2 step 4: two keys share a keyhash; register both in the collision table.
    fn resolve_collision(
        &self,
        keyhash: u64,
        key: &[u8],
        other: Record,
        other_meta: ItemMeta,
    ) -> Result<Option<Found>, StoreError> {
        let mine = self.newest_hint_of(keyhash, key);
        {
            let mut inner = self.inner.lock();
            let other_vhash = other_meta.vhash;
            Self::collision_put(
                &mut inner.collisions,
                other.key.clone(),
                CollisionEntry {
                    keyhash,
                    chunk_id: other_meta.chunk,
                    offset: other_meta.offset,
                    ver: other_meta.ver,
                    vhash: other_vhash,
                },
                false,
            );
            if let Some(m) = mine {
                Self::collision_put(
                    &mut inner.collisions,
                    key.to_vec(),
                    CollisionEntry {
                        keyhash,
                        chunk_id: m.chunk,
                        offset: m.offset,
                        ver: m.ver,
                        vhash: m.vhash,
                    },
                    false,
                );
            }
        }
        info!(bucket = self.id, keyhash = %format!("{keyhash:016x}"), "keyhash collision registered");
        self.save_collisions();
        match mine {
            None => Ok(None),
            Some(m) => {
                let q = Self::queued(&self.inner.lock(), m.chunk, m.offset);
                let in_buffer = q.is_some();
                let rec = self
                    .read_at(q, m.chunk, m.offset)
                    .map_err(StoreError::ReadFailed)?;
                if rec.key != key {
                    return Err(StoreError::ReadFailed("collision record mismatch".into()));
                }
                Ok(Some(Found {
                    record: rec,
                    ver: m.ver,
                    vhash: m.vhash,
                    chunk: m.chunk,
                    offset: m.offset,
                    in_buffer,
                }))
            }
        }
    }

    /// Table updates from set/get keep the newer position; GC (`force`) overwrites.
    pub(crate) fn collision_put(
        t: &mut CollisionTable,
        key: Vec<u8>,
        e: CollisionEntry,
        force: bool,
    ) {
        if !force {
            if let Some(old) = t.get(e.keyhash, &key) {
                if pos_key(old.chunk_id, old.offset) > pos_key(e.chunk_id, e.offset) {
                    return;
                }
            }
        }
        t.insert(key, e);
    }

    pub(crate) fn save_collisions(&self) {
        let t = self.inner.lock().collisions.clone();
        if let Err(e) = t.save(self.path(COLLISION_FILE_NAME), self.fsync_meta()) {
            warn!(bucket = self.id, error = %e, "writing collision.yaml failed");
        }
    }

    /// Newest hint item of `key`: in-memory splits, then hint files, newest chunk first.
    fn newest_hint_of(&self, keyhash: u64, key: &[u8]) -> Option<ItemMeta> {
        let (mem, chunks) = {
            let inner = self.inner.lock();
            let mut found: Option<ItemMeta> = None;
            for (&c, ch) in inner.hints.iter().rev() {
                for sp in ch.splits.iter().rev() {
                    if let Some(s) = sp.items.get(key) {
                        found = Some(ItemMeta {
                            chunk: c,
                            offset: s.offset,
                            ver: s.ver,
                            vhash: s.vhash,
                        });
                        break;
                    }
                }
                if found.is_some() {
                    break;
                }
            }
            (found, inner.chunk_sizes.keys().copied().collect::<Vec<_>>())
        };
        let mut best = mem;
        for &c in chunks.iter().rev() {
            if best.is_some_and(|b| b.chunk >= c) {
                break;
            }
            let mut s = 0;
            let mut hit = None;
            loop {
                let p = self.path(&hint_file_name(c, s, false));
                let Ok(h) = read_hint_file(&p) else { break };
                if let Some(it) = h
                    .items
                    .iter()
                    .find(|it| it.keyhash == keyhash && it.key == key)
                {
                    hit = Some(ItemMeta {
                        chunk: c,
                        offset: it.offset,
                        ver: it.ver,
                        vhash: it.vhash,
                    });
                }
                s += 1;
            }
            if hit.is_some() {
                best = hit;
                break;
            }
        }
        best
    }

    pub fn meta(&self, keyhash: u64, key: &[u8]) -> Result<Option<KeyMeta>, StoreError> {
        let Some(f) = self.find(keyhash, key)? else {
            return Ok(None);
        };
        let flag = f.record.flag & !FLAG_COMPRESSED;
        let len = if f.record.flag & FLAG_COMPRESSED != 0 {
            qlz_header_sizes(&f.record.value)
                .map(|(_, d)| d as u32)
                .unwrap_or(f.record.value.len() as u32)
        } else {
            f.record.value.len() as u32
        };
        Ok(Some(KeyMeta {
            ver: f.ver,
            vhash: if f.ver > 0 { f.vhash } else { 0 },
            flag,
            len,
            ts: f.record.ts,
            chunk: f.chunk,
            offset: f.offset,
        }))
    }

    /// `@@khash`: the record the index holds for this keyhash.
    pub fn raw(&self, keyhash: u64) -> Result<Option<Record>, StoreError> {
        let (m, q) = {
            let inner = self.inner.lock();
            let Some(m) = inner.tree.get(keyhash) else {
                return Ok(None);
            };
            (m, Self::queued(&inner, m.chunk, m.offset))
        };
        self.read_at(q, m.chunk, m.offset)
            .map(Some)
            .map_err(StoreError::ReadFailed)
    }

    pub fn node_sum(&self) -> NodeSum {
        let mut inner = self.inner.lock();
        inner.tree.refresh();
        inner.tree.root_sum()
    }

    pub fn list(&self, path: &[u8]) -> String {
        let mut inner = self.inner.lock();
        inner.tree.refresh();
        inner.tree.list(path)
    }

    pub fn live_count(&self) -> u64 {
        let mut inner = self.inner.lock();
        inner.tree.refresh();
        inner.tree.live_count()
    }

    // ------------------------------------------------------------------ writes

    /// set / delete. `value` is the uncompressed new value (empty for tombstones).
    pub fn write(
        &self,
        keyhash: u64,
        key: &[u8],
        flag: u32,
        req_ver: i32,
        value: &[u8],
        ts: u32,
    ) -> Result<WriteOutcome, StoreError> {
        let prepared = self.prepare(key, flag, req_ver, value, ts);
        let mut inner = self.inner.lock();
        let r = self.commit(
            &mut inner, keyhash, key, flag, req_ver, value, prepared, true,
        );
        drop(inner);
        self.finish(r)
    }

    fn finish(
        &self,
        r: Result<Option<Option<u64>>, StoreError>,
    ) -> Result<WriteOutcome, StoreError> {
        match r? {
            None => Ok(WriteOutcome::NotFound),
            Some(None) => Ok(WriteOutcome::Done(None)),
            Some(Some(seq)) => {
                self.signal.wake();
                let durable = (self.cfg.fsync == FsyncPolicy::Always).then(|| Durable {
                    rx: self.durable.subscribe(),
                    seq,
                });
                Ok(WriteOutcome::Done(durable))
            }
        }
    }

    /// Compression and encoding of everything but the version and CRC, outside the lock.
    fn prepare(&self, key: &[u8], flag: u32, req_ver: i32, value: &[u8], ts: u32) -> Prepared {
        let tombstone = req_ver < 0;
        let vhash = if tombstone {
            0
        } else {
            beansdb_hash::vhash(value)
        };
        let (stored_flag, stored): (u32, std::borrow::Cow<[u8]>) = if tombstone {
            (0, std::borrow::Cow::Borrowed(&[][..]))
        } else {
            match maybe_compress(key.len(), flag, value, &self.cfg.not_compress) {
                Some(c) => (flag | FLAG_COMPRESSED, std::borrow::Cow::Owned(c)),
                None => (flag, std::borrow::Cow::Borrowed(value)),
            }
        };
        let rec_len = HEADER_SIZE + key.len() + stored.len();
        let padded = padded_size(rec_len);
        let mut buf = Vec::with_capacity(padded);
        buf.resize(HEADER_SIZE, 0);
        buf[4..8].copy_from_slice(&ts.to_le_bytes());
        buf[8..12].copy_from_slice(&stored_flag.to_le_bytes());
        buf[16..20].copy_from_slice(&(key.len() as u32).to_le_bytes());
        buf[20..24].copy_from_slice(&(stored.len() as u32).to_le_bytes());
        buf.extend_from_slice(key);
        buf.extend_from_slice(&stored);
        buf.resize(padded, 0);
        let mut tail_crc = crc32fast::Hasher::new();
        tail_crc.update(&buf[HEADER_SIZE..rec_len]);
        Prepared {
            buf,
            tail_crc,
            vhash,
            tombstone,
        }
    }

    /// Applies the version rules (§3.7) under the write lock and queues the record.
    /// `Ok(None)` = not found (delete of an absent key); `Ok(Some(None))` = nothing written;
    /// `Ok(Some(Some(seq)))` = queued as `seq`.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        inner: &mut Inner,
        keyhash: u64,
        key: &[u8],
        flag: u32,
        req_ver: i32,
        value: &[u8],
        p: Prepared,
        allow_skip: bool,
    ) -> Result<Option<Option<u64>>, StoreError> {
        let Prepared {
            mut buf,
            tail_crc,
            vhash,
            tombstone,
        } = p;
        let padded = buf.len();
        if let Some(e) = &inner.write_error {
            return Err(StoreError::WriteFailed(e.clone()));
        }
        let old = Self::lookup(inner, keyhash, key);
        let old_ver = old.map(|m| m.ver).unwrap_or(0);
        let old_abs = old_ver.unsigned_abs() as i64;

        // Same-value skip (D5): only when the stored bytes are really equal.
        if allow_skip && self.cfg.check_vhash && !tombstone && req_ver >= 0 && old_ver > 0 {
            if let Some(m) = old.filter(|m| m.vhash == vhash) {
                let q = Self::queued(inner, m.chunk, m.offset);
                if let Ok(rec) = self.read_at(q, m.chunk, m.offset) {
                    let (sflag, sval) = rec.client_view();
                    if rec.key == key
                        && sflag & !FLAG_COMPRESSED == flag & !FLAG_COMPRESSED
                        && *sval == *value
                    {
                        self.counters.num_same_vhash.fetch_add(1, Ordering::Relaxed);
                        self.counters
                            .size_same_vhash
                            .fetch_add(value.len() as u64, Ordering::Relaxed);
                        inner.same_vhash_key = String::from_utf8_lossy(key).into_owned();
                        crate::metrics::SAME_VALUE_SKIPS.fetch_add(1, Ordering::Relaxed);
                        if req_ver as i64 > old_abs {
                            let nm = ItemMeta { ver: req_ver, ..m };
                            Self::index_put(inner, keyhash, key, nm);
                        }
                        return Ok(Some(None));
                    }
                }
            }
        }
        let new_ver: i32 = if tombstone {
            if old_ver <= 0 {
                return Ok(None);
            }
            -((old_abs + 1) as i32)
        } else if req_ver == 0 {
            (old_abs + 1) as i32
        } else if req_ver as i64 > old_abs {
            req_ver
        } else {
            return Ok(Some(None));
        };

        if inner.head_size > 0 && inner.head_size + padded as u64 > self.cfg.datafile_max {
            if inner.head + 1 >= MAX_CHUNKS {
                return Err(StoreError::NoChunkLeft);
            }
            inner.head += 1;
            inner.head_size = 0;
        }
        if inner.head >= MAX_CHUNKS {
            return Err(StoreError::NoChunkLeft);
        }
        let chunk = inner.head;
        let offset = inner.head_size as u32;
        buf[12..16].copy_from_slice(&new_ver.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&buf[4..HEADER_SIZE]);
        h.combine(&tail_crc);
        let crc = h.finalize();
        buf[0..4].copy_from_slice(&crc.to_le_bytes());

        let seq = inner.next_seq;
        inner.next_seq += 1;
        let tracked = track(BufferKind::FlushData, padded);
        inner.queue.push_back(Pending {
            chunk,
            offset,
            data: Arc::new(buf),
            seq,
            _tracked: tracked,
        });
        inner.head_size += padded as u64;
        let meta = ItemMeta {
            chunk,
            offset,
            ver: new_ver,
            vhash,
        };
        Self::index_put(inner, keyhash, key, meta);
        let end = offset + padded as u32;
        self.add_hint(
            inner,
            chunk,
            key,
            HintSlot {
                keyhash,
                offset,
                ver: new_ver,
                vhash,
            },
            end,
        );
        Ok(Some(Some(seq)))
    }

    fn index_put(inner: &mut Inner, keyhash: u64, key: &[u8], meta: ItemMeta) {
        if inner.collisions.contains_keyhash(keyhash) {
            Self::collision_put(
                &mut inner.collisions,
                key.to_vec(),
                CollisionEntry {
                    keyhash,
                    chunk_id: meta.chunk,
                    offset: meta.offset,
                    ver: meta.ver,
                    vhash: meta.vhash,
                },
                false,
            );
        }
        inner.tree.set(keyhash, meta);
    }

    pub(crate) fn add_hint(
        &self,
        inner: &mut Inner,
        chunk: u32,
        key: &[u8],
        slot: HintSlot,
        end: u32,
    ) {
        let cap = self.cfg.hint_split_cap.max(1);
        let ch = inner.hints.entry(chunk).or_insert_with(|| ChunkHints {
            first: self.existing_splits(chunk),
            splits: vec![HintSplit::default()],
            last_add: Instant::now(),
        });
        ch.last_add = Instant::now();
        // A split already written to disk is closed: later items (GC appending to an older
        // chunk) start a new one, else they would never be dumped.
        let full = ch
            .splits
            .last()
            .is_none_or(|s| s.dumped || (s.items.len() >= cap && !s.items.contains_key(key)));
        if full {
            ch.splits.push(HintSplit::default());
        }
        if let Some(sp) = ch.splits.last_mut() {
            sp.items.insert(key.to_vec(), slot);
            sp.datasize = sp.datasize.max(end);
        }
        if full {
            self.dump_hints_locked(inner, false);
        }
    }

    fn existing_splits(&self, chunk: u32) -> u32 {
        let mut n = 0;
        while self.path(&hint_file_name(chunk, n, false)).exists() {
            n += 1;
        }
        n
    }

    /// Writes hint splits that are due: full splits always; the last split of an older chunk
    /// after 5 s without writes; everything when `all` (shutdown). Only splits whose data is on
    /// disk are written, so a hint never claims more than its data file holds.
    pub(crate) fn dump_hints_locked(&self, inner: &mut Inner, all: bool) {
        self.dump_hints_inner(inner, all, None);
    }

    /// Also writes the last split of `chunk` now (GC destinations are finished at once).
    pub(crate) fn dump_chunk_hints_locked(&self, inner: &mut Inner, chunk: u32) {
        self.dump_hints_inner(inner, false, Some(chunk));
    }

    fn dump_hints_inner(&self, inner: &mut Inner, all: bool, force: Option<u32>) {
        let head = inner.head;
        let sizes = inner.chunk_sizes.clone();
        let mut dumped = Vec::new();
        for (&c, ch) in inner.hints.iter_mut() {
            let n = ch.splits.len();
            let on_disk = sizes.get(&c).copied().unwrap_or(0);
            let idle = ch.last_add.elapsed() >= Duration::from_secs(5);
            for (i, sp) in ch.splits.iter_mut().enumerate() {
                if sp.dumped || sp.items.is_empty() {
                    continue;
                }
                let last = i + 1 == n;
                let due = all || !last || force == Some(c) || (c < head && idle);
                if !due || sp.datasize as u64 > on_disk {
                    continue;
                }
                let mut items: Vec<HintItem> = sp
                    .items
                    .iter()
                    .map(|(k, s)| HintItem {
                        keyhash: s.keyhash,
                        chunk_id: 0,
                        offset: s.offset,
                        ver: s.ver,
                        vhash: s.vhash,
                        key: k.clone(),
                    })
                    .collect();
                let split = ch.first + i as u32;
                let p = self.path(&hint_file_name(c, split, false));
                match write_hint_file(
                    &p,
                    &mut items,
                    sp.datasize,
                    self.cfg.hint_index_interval,
                    self.fsync_meta(),
                ) {
                    Ok(()) => {
                        sp.dumped = true;
                        sp.items = HashMap::new();
                        dumped.push((c, split));
                    }
                    Err(e) => warn!(file = %p.display(), error = %e, "writing hint file failed"),
                }
            }
        }
        for d in dumped {
            if d > inner.max_dumped_hint {
                inner.max_dumped_hint = d;
            }
        }
        // Drop chunks whose splits are all on disk.
        inner
            .hints
            .retain(|&c, ch| c == head || ch.splits.iter().any(|s| !s.dumped));
    }

    /// Writes `.idx.hash` named after the newest hint split on disk; removes older dumps.
    pub(crate) fn dump_tree_locked(&self, inner: &mut Inner) {
        let mut newest: Option<(u32, u32)> = None;
        let mut old_trees = Vec::new();
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                match parse_file_name(&e.file_name().to_string_lossy()) {
                    Some(FileName::Hint {
                        chunk,
                        split,
                        merged: false,
                    }) if newest.is_none_or(|n| (chunk, split) > n) => {
                        newest = Some((chunk, split));
                    }
                    Some(FileName::HTree { chunk, split }) => old_trees.push((chunk, split)),
                    _ => {}
                }
            }
        }
        let Some((c, s)) = newest else { return };
        // Everything replayed must be covered by hint files, else a restart would skip it.
        if inner.hints.values().any(|ch| {
            ch.splits
                .iter()
                .any(|sp| !sp.dumped && !sp.items.is_empty())
        }) {
            return;
        }
        let data = inner.tree.dump();
        let p = self.path(&htree_file_name(c, s));
        match write_file_atomic(&p, &data, self.fsync_meta()) {
            Ok(()) => {
                inner.tree_id = (c, s as i32);
                for t in old_trees {
                    if t != (c, s) {
                        let _ = fs::remove_file(self.path(&htree_file_name(t.0, t.1)));
                    }
                }
            }
            Err(e) => warn!(file = %p.display(), error = %e, "writing htree dump failed"),
        }
    }

    // ------------------------------------------------------------------ incr

    /// incr under the bucket write lock (D4f): read, add, write with the set version rule.
    pub fn incr(
        &self,
        keyhash: u64,
        key: &[u8],
        delta: i64,
        ts: u32,
    ) -> Result<(i64, Option<Durable>), StoreError> {
        let mut inner = self.inner.lock();
        let old = match Self::lookup(&inner, keyhash, key) {
            Some(m) if m.ver > 0 => {
                let q = Self::queued(&inner, m.chunk, m.offset);
                let rec = self
                    .read_at(q, m.chunk, m.offset)
                    .map_err(StoreError::ReadFailed)?;
                let (flag, v) = rec.client_view();
                if rec.key != key {
                    0
                } else if flag != FLAG_INCR || v.len() > 22 {
                    return Ok((0, None));
                } else {
                    match std::str::from_utf8(&v)
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                    {
                        Some(n) => n,
                        None => return Ok((0, None)),
                    }
                }
            }
            _ => 0,
        };
        let new = old.wrapping_add(delta);
        let text = new.to_string();
        let p = self.prepare(key, FLAG_INCR, 0, text.as_bytes(), ts);
        // incr is written like a set but never skipped as a same-value write (§3.8).
        let r = self.commit(
            &mut inner,
            keyhash,
            key,
            FLAG_INCR,
            0,
            text.as_bytes(),
            p,
            false,
        );
        drop(inner);
        match self.finish(r)? {
            WriteOutcome::Done(d) => Ok((new, d)),
            WriteOutcome::NotFound => Ok((0, None)),
        }
    }

    // ------------------------------------------------------------------ writer side

    /// Writes everything queued. Returns the files touched (for interval fsync).
    pub(crate) fn flush_queue(
        &self,
        files: &mut HashMap<u32, File>,
    ) -> Result<Vec<u32>, StoreError> {
        let batch: Vec<(u32, u32, Arc<Vec<u8>>, u64)> = {
            let inner = self.inner.lock();
            inner
                .queue
                .iter()
                .map(|p| (p.chunk, p.offset, p.data.clone(), p.seq))
                .collect()
        };
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut touched: Vec<u32> = Vec::new();
        let mut scratch: Vec<u8> = Vec::new();
        let mut scratch_at: (u32, u64) = (0, 0);
        let cap = self.cfg.bufio_cap.max(4096);
        let mut ends: HashMap<u32, u64> = HashMap::new();
        let res: Result<(), StoreError> = (|| {
            for (chunk, offset, data, _) in &batch {
                if !files.contains_key(chunk) {
                    let p = self.path(&data_file_name(*chunk));
                    let f = OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .read(true)
                        .write(true)
                        .open(&p)
                        .map_err(|e| StoreError::io(&p, e))?;
                    let len = f.metadata().map_err(|e| StoreError::io(&p, e))?.len();
                    if len != *offset as u64 {
                        return Err(StoreError::WriteFailed(format!(
                            "{} has {} bytes, expected {}",
                            p.display(),
                            len,
                            offset
                        )));
                    }
                    files.insert(*chunk, f);
                }
                if !touched.contains(chunk) {
                    touched.push(*chunk);
                }
                let contiguous = !scratch.is_empty()
                    && scratch_at.0 == *chunk
                    && scratch_at.1 + scratch.len() as u64 == *offset as u64;
                if !scratch.is_empty() && (!contiguous || scratch.len() + data.len() > cap) {
                    self.write_out(files, scratch_at, &scratch)?;
                    scratch.clear();
                }
                if data.len() >= cap {
                    self.write_out(files, (*chunk, *offset as u64), data)?;
                } else {
                    if scratch.is_empty() {
                        scratch_at = (*chunk, *offset as u64);
                    }
                    scratch.extend_from_slice(data);
                }
                ends.insert(*chunk, *offset as u64 + data.len() as u64);
            }
            if !scratch.is_empty() {
                self.write_out(files, scratch_at, &scratch)?;
            }
            if self.cfg.fsync == FsyncPolicy::Always {
                for c in &touched {
                    if let Some(f) = files.get(c) {
                        let t = Instant::now();
                        f.sync_data()
                            .map_err(|e| StoreError::WriteFailed(e.to_string()))?;
                        crate::metrics::observe_fsync(t.elapsed());
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            let mut inner = self.inner.lock();
            if inner.write_error.is_none() {
                tracing::error!(bucket = self.id, error = %e, "data write failed; writes refused until it succeeds");
            }
            inner.write_error = Some(e.to_string());
            crate::metrics::WRITE_ERRORS.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        let max_seq = batch.iter().map(|b| b.3).max().unwrap_or(0);
        {
            let mut inner = self.inner.lock();
            for _ in 0..batch.len() {
                inner.queue.pop_front();
            }
            for (c, end) in ends {
                let e = inner.chunk_sizes.entry(c).or_insert(0);
                *e = (*e).max(end);
            }
            inner.write_error = None;
        }
        crate::metrics::observe_batch(batch.iter().map(|b| b.2.len()).sum());
        self.durable.send_replace(max_seq);
        Ok(touched)
    }

    fn write_out(
        &self,
        files: &HashMap<u32, File>,
        at: (u32, u64),
        data: &[u8],
    ) -> Result<(), StoreError> {
        let f = files
            .get(&at.0)
            .ok_or_else(|| StoreError::WriteFailed("file not open".into()))?;
        f.write_all_at(data, at.1)
            .map_err(|e| StoreError::WriteFailed(e.to_string()))
    }

    pub fn queue_len(&self) -> usize {
        self.inner.lock().queue.len()
    }

    /// Clean shutdown: hints, collision table and htree dump (the queue is already written).
    pub(crate) fn close(&self) {
        let mut inner = self.inner.lock();
        self.dump_hints_locked(&mut inner, true);
        if !inner.collisions.is_empty() || self.path(COLLISION_FILE_NAME).exists() {
            let t = inner.collisions.clone();
            if let Err(e) = t.save(self.path(COLLISION_FILE_NAME), self.fsync_meta()) {
                warn!(bucket = self.id, error = %e, "writing collision.yaml failed");
            }
        }
        if !inner.chunk_sizes.is_empty() {
            self.dump_tree_locked(&mut inner);
        }
    }

    pub fn info(&self) -> BucketInfo {
        // Taken before the bucket lock: GC start holds its own lock while planning under the
        // bucket lock, so the opposite order could deadlock.
        let last_gc = self.gc_state();
        let du = dir_size(&self.dir);
        let inner = self.inner.lock();
        BucketInfo {
            id: self.id,
            home: self.dir.clone(),
            tree_id: inner.tree_id,
            next_gc: inner.next_gc,
            head: inner.head,
            head_size: inner.head_size,
            gc_running: self.gc_running.load(Ordering::Relaxed),
            max_dumped_hint: inner.max_dumped_hint,
            du,
            num_same_vhash: self.counters.num_same_vhash.load(Ordering::Relaxed),
            size_same_vhash: self.counters.size_same_vhash.load(Ordering::Relaxed),
            same_vhash_key: inner.same_vhash_key.clone(),
            num_set: self.counters.num_set.load(Ordering::Relaxed),
            num_get: self.counters.num_get.load(Ordering::Relaxed),
            hint_state: self.hint_state.load(Ordering::Relaxed),
            last_gc,
        }
    }
}

#[derive(Clone, Debug)]
pub struct BucketInfo {
    pub id: usize,
    pub home: PathBuf,
    pub tree_id: (u32, i32),
    pub next_gc: u32,
    pub head: u32,
    pub head_size: u64,
    pub gc_running: bool,
    pub max_dumped_hint: (u32, u32),
    pub du: u64,
    pub num_same_vhash: u64,
    pub size_same_vhash: u64,
    pub same_vhash_key: String,
    pub num_set: u64,
    pub num_get: u64,
    /// Bits: 1 hint dump, 2 merge/collision scan, 4 GC running.
    pub hint_state: u32,
    /// `LastGC` (§8.3).
    pub last_gc: Option<crate::gc::GcState>,
}

pub fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
