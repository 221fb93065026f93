//! One bucket's anti-entropy: roots and clocks (§1.3), the merkle walk over the mains,
//! key-level comparison, fetching and resolving differing keys (§1.4–1.6) and the backup
//! pass (§1.7).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use beansdb_client::{ClientConfig, StoreReply};
use beansdb_route::Route;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use super::decide::{decide, Decision, Input, State, TombstoneMinority};
use super::node::{join_all, NodeConn, NodeError, NodeShared};
use super::report::{BucketReport, GuardSkip};
use super::wire::{parse_listing, parse_meta, parse_raw, KeyLine, Listing, RawRecord};
use crate::interrupt::Interrupt;

/// Longest listing path: a full 64-bit khash in hex.
const MAX_PATH: usize = 16;

/// Options that shape the run (from the command line).
#[derive(Debug, Clone)]
pub struct Opts {
    pub dry_run: bool,
    pub hot_seconds: i64,
    pub full: bool,
    pub max_diff_keys: u64,
    pub minority: TombstoneMinority,
    pub allow_partial: bool,
    pub no_backups: bool,
    pub drain_backups: bool,
}

/// Live totals for progress lines.
#[derive(Default)]
pub struct LiveTotals {
    pub buckets_done: AtomicU64,
    pub keys_compared: AtomicU64,
    pub differing: AtomicU64,
    pub repaired: AtomicU64,
}

/// State shared by all bucket workers.
pub struct Shared {
    pub opts: Opts,
    pub route: Route,
    pub nodes: HashMap<String, Arc<NodeShared>>,
    pub client_config: ClientConfig,
    pub decisions: Option<Mutex<File>>,
    pub interrupt: Interrupt,
    pub live: LiveTotals,
}

/// A worker's connections, one per node, kept across buckets.
pub struct Conns {
    shared: Arc<Shared>,
    conns: HashMap<String, NodeConn>,
}

impl Conns {
    pub fn new(shared: Arc<Shared>) -> Conns {
        Conns {
            shared,
            conns: HashMap::new(),
        }
    }

    fn take(&mut self, addr: &str) -> Option<NodeConn> {
        if let Some(c) = self.conns.remove(addr) {
            return Some(c);
        }
        let ns = self.shared.nodes.get(addr)?.clone();
        Some(NodeConn::new(ns, self.shared.client_config.clone()))
    }

    fn put(&mut self, c: NodeConn) {
        self.conns.insert(c.addr().to_string(), c);
    }
}

/// One node as seen while processing a bucket.
struct Peer {
    conn: NodeConn,
    main: bool,
    up: bool,
    /// Node clock − local clock, seconds.
    offset: i64,
    root: (u16, u32),
}

/// What a replica's listing said about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listed {
    /// Not part of this listing (backups in the main walk, mains in the backup pass).
    Unknown,
    Absent,
    Line(KeyLine),
}

fn local_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn hex16(khash: u64) -> String {
    format!("{khash:016x}")
}

/// Listing path of a bucket root: `b` (16 buckets) or `bb` (256).
fn root_path(route: &Route, bucket: usize) -> String {
    route.bucket_hex(bucket)
}

/// Top listing holding the bucket's root, and the digit of the root in it.
fn top_of(route: &Route, bucket: usize) -> (String, usize) {
    if route.numbucket == 256 {
        (format!("{:x}", bucket >> 4), bucket & 15)
    } else {
        (String::new(), bucket)
    }
}

async fn list(conn: &mut NodeConn, path: &str) -> Result<Listing, String> {
    let key = format!("@{path}");
    let body = conn.get(key.as_bytes()).await.map_err(|e| e.0)?;
    parse_listing(body.as_deref(), path).map_err(|e| e.to_string())
}

/// Every key line under a Dir listing: descends into each child with live count > 0.
/// Returns the key lines and the number of Dir listings seen.
async fn enumerate(
    conn: &mut NodeConn,
    path: &str,
    dir: &[(u16, u32); 16],
) -> Result<(Vec<KeyLine>, u64), (String, String)> {
    let mut out = Vec::new();
    let mut dirs = 0u64;
    let push_children = |stack: &mut Vec<String>, p: &str, d: &[(u16, u32); 16]| {
        for (i, &(_, count)) in d.iter().enumerate().rev() {
            if count > 0 {
                stack.push(format!("{p}{i:x}"));
            }
        }
    };
    let mut stack = Vec::new();
    push_children(&mut stack, path, dir);
    while let Some(p) = stack.pop() {
        match list(conn, &p).await {
            Ok(Listing::Keys(k)) => out.extend(k),
            Ok(Listing::Dir(d)) => {
                dirs += 1;
                if p.len() >= MAX_PATH {
                    return Err((p, "dir listing at full key depth".into()));
                }
                push_children(&mut stack, &p, &d);
            }
            Err(e) => return Err((p, e)),
        }
    }
    Ok((out, dirs))
}

/// Processes one bucket with the worker's connections.
pub async fn sync_bucket(conns: &mut Conns, bucket: usize) -> BucketReport {
    let shared = conns.shared.clone();
    let route = &shared.route;
    let opts = &shared.opts;
    let start = Instant::now();
    let mains: Vec<String> = route.mains(bucket).iter().map(|s| s.to_string()).collect();
    let backups: Vec<String> = if opts.no_backups {
        Vec::new()
    } else {
        route.backup.clone()
    };
    let mut rep = BucketReport::new(route.bucket_hex(bucket), mains.clone(), backups.clone());
    let mut peers: Vec<Peer> = Vec::new();
    for (addr, main) in mains
        .iter()
        .map(|a| (a, true))
        .chain(backups.iter().map(|a| (a, false)))
    {
        if let Some(conn) = conns.take(addr) {
            peers.push(Peer {
                conn,
                main,
                up: false,
                offset: 0,
                root: (0, 0),
            });
        }
    }

    let mut b = Bucket {
        shared: &shared,
        bucket,
        peers,
        rep: &mut rep,
        resolved: HashSet::new(),
    };
    b.run().await;
    for p in b.peers {
        conns.put(p.conn);
    }
    rep.duration_ms = start.elapsed().as_millis() as u64;
    rep.finish(opts.dry_run);
    shared.live.buckets_done.fetch_add(1, Ordering::Relaxed);
    rep
}

struct Bucket<'a> {
    shared: &'a Shared,
    bucket: usize,
    peers: Vec<Peer>,
    rep: &'a mut BucketReport,
    /// Khashes already resolved by the main walk (the backup pass skips them).
    resolved: HashSet<u64>,
}

impl Bucket<'_> {
    fn interrupted(&mut self) -> bool {
        if self.shared.interrupt.fired() {
            self.rep.interrupted = true;
        }
        self.rep.interrupted
    }

    async fn run(&mut self) {
        // A copy of the shared reference, so `self` stays free for mutable calls.
        let shared: &Shared = self.shared;
        let route = &shared.route;
        let (top, digit) = top_of(route, self.bucket);
        let top_key = format!("@{top}");
        let results = join_all(
            self.peers
                .iter_mut()
                .map(|p| {
                    let top_key = top_key.clone();
                    let top = top.clone();
                    async move {
                        // Local time taken at the reply, so rate-limit waits do not skew it.
                        let t = p.conn.time().await.map_err(|e| e.0)? - local_now();
                        let body = p.conn.get(top_key.as_bytes()).await.map_err(|e| e.0)?;
                        match parse_listing(body.as_deref(), &top) {
                            Ok(Listing::Dir(d)) => Ok((t, d[digit])),
                            Ok(Listing::Keys(_)) => Err("top listing is not a dir".to_string()),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                })
                .collect(),
        )
        .await;
        for (p, r) in self.peers.iter_mut().zip(results) {
            match r {
                Ok((offset, root)) => {
                    p.up = true;
                    p.offset = offset;
                    p.root = root;
                }
                Err(e) => {
                    if p.main {
                        self.rep.down.push(p.conn.addr().to_string());
                    }
                    self.rep.error(p.conn.addr(), &top, e);
                }
            }
        }
        let up_mains: Vec<usize> = self.main_idx();
        let down = self.rep.down.len();
        if down > 0 && (!self.shared.opts.allow_partial || up_mains.len() < 2) {
            // Comparing without every replica could copy stale data over a down one's news.
            self.rep.skipped = true;
            return;
        }
        self.rep.keys = up_mains
            .iter()
            .map(|&i| u64::from(self.peers[i].root.1))
            .max()
            .unwrap_or(0);
        let first = up_mains.first().map(|&i| self.peers[i].root);
        self.rep.root_equal = up_mains.iter().all(|&i| Some(self.peers[i].root) == first);
        if !self.rep.root_equal || self.shared.opts.full {
            self.walk(root_path(route, self.bucket)).await;
        }
        if !self.interrupted() {
            self.backup_pass().await;
        }
    }

    fn main_idx(&self) -> Vec<usize> {
        (0..self.peers.len())
            .filter(|&i| self.peers[i].main && self.peers[i].up)
            .collect()
    }

    /// Merkle walk over the reachable mains from `root`.
    async fn walk(&mut self, root: String) {
        let mains = self.main_idx();
        let mut stack = vec![root];
        while let Some(path) = stack.pop() {
            if self.interrupted() {
                return;
            }
            let listings = join_all(
                self.peers
                    .iter_mut()
                    .enumerate()
                    .filter(|(i, _)| mains.contains(i))
                    .map(|(_, p)| {
                        let path = path.clone();
                        async move { list(&mut p.conn, &path).await }
                    })
                    .collect(),
            )
            .await;
            let mut ok: Vec<Listing> = Vec::with_capacity(listings.len());
            let mut failed = false;
            for (&i, l) in mains.iter().zip(listings) {
                match l {
                    Ok(l) => ok.push(l),
                    Err(e) => {
                        self.rep.error(self.peers[i].conn.addr(), &path, e);
                        failed = true;
                    }
                }
            }
            if failed {
                // Without every replica's view this subtree cannot be compared.
                continue;
            }
            self.rep.dirs_listed +=
                ok.iter().filter(|l| matches!(l, Listing::Dir(_))).count() as u64;
            let dirs: Vec<&[(u16, u32); 16]> = ok
                .iter()
                .filter_map(|l| match l {
                    Listing::Dir(d) => Some(d),
                    Listing::Keys(_) => None,
                })
                .collect();
            if dirs.len() == ok.len() {
                if path.len() >= MAX_PATH {
                    self.rep.error("", &path, "dir listing at full key depth");
                    continue;
                }
                for d in (0..16).rev() {
                    let counts: Vec<u32> = dirs.iter().map(|x| x[d].1).collect();
                    let (mn, mx) = (
                        counts.iter().copied().min().unwrap_or(0),
                        counts.iter().copied().max().unwrap_or(0),
                    );
                    let child = format!("{path}{d:x}");
                    let max_diff = self.shared.opts.max_diff_keys;
                    if max_diff > 0 && u64::from(mx - mn) > max_diff {
                        let counts = mains
                            .iter()
                            .zip(&counts)
                            .map(|(&i, &c)| (self.peers[i].conn.addr().to_string(), c))
                            .collect();
                        self.rep.guard_skipped.push(GuardSkip {
                            path: child,
                            counts,
                        });
                        continue;
                    }
                    let differ = dirs.iter().any(|x| x[d] != dirs[0][d]);
                    if differ || (self.shared.opts.full && mx > 0) {
                        stack.push(child);
                    }
                }
                continue;
            }
            // Mixed or all Keys: bring every replica down to key lines.
            let enumerated = join_all(
                self.peers
                    .iter_mut()
                    .enumerate()
                    .filter(|(i, _)| mains.contains(i))
                    .zip(ok)
                    .map(|((_, p), l)| {
                        let path = path.clone();
                        async move {
                            match l {
                                Listing::Keys(k) => Ok((k, 0)),
                                Listing::Dir(d) => enumerate(&mut p.conn, &path, &d).await,
                            }
                        }
                    })
                    .collect(),
            )
            .await;
            let mut keys: Vec<Vec<KeyLine>> = Vec::with_capacity(mains.len());
            let mut failed = false;
            for (&i, e) in mains.iter().zip(enumerated) {
                match e {
                    Ok((k, dirs)) => {
                        self.rep.dirs_listed += dirs;
                        keys.push(k);
                    }
                    Err((p, e)) => {
                        self.rep.error(self.peers[i].conn.addr(), &p, e);
                        failed = true;
                    }
                }
            }
            if failed {
                continue;
            }
            self.compare(&mains, keys).await;
        }
    }

    /// Key-level comparison of the mains' key lines; resolves each differing khash.
    async fn compare(&mut self, mains: &[usize], keys: Vec<Vec<KeyLine>>) {
        let mut union: BTreeMap<u64, Vec<Option<KeyLine>>> = BTreeMap::new();
        for (r, lines) in keys.iter().enumerate() {
            for k in lines {
                union
                    .entry(k.khash)
                    .or_insert_with(|| vec![None; keys.len()])[r] = Some(*k);
            }
        }
        self.rep.counters.keys_compared += union.len() as u64;
        self.shared
            .live
            .keys_compared
            .fetch_add(union.len() as u64, Ordering::Relaxed);
        for (khash, per) in union {
            if !differs(&per) {
                continue;
            }
            if self.interrupted() {
                return;
            }
            self.rep.counters.differing += 1;
            self.shared.live.differing.fetch_add(1, Ordering::Relaxed);
            let mut listed = vec![Listed::Unknown; self.peers.len()];
            for (&i, k) in mains.iter().zip(&per) {
                listed[i] = match k {
                    Some(k) => Listed::Line(*k),
                    None => Listed::Absent,
                };
            }
            self.resolved.insert(khash);
            self.resolve(khash, listed, true).await;
        }
    }

    /// §1.7: every live key of each backup with a non-empty root is a candidate.
    async fn backup_pass(&mut self) {
        let root = root_path(&self.shared.route, self.bucket);
        let backups: Vec<usize> = (0..self.peers.len())
            .filter(|&i| !self.peers[i].main && self.peers[i].up && self.peers[i].root.1 > 0)
            .collect();
        for bi in backups {
            if self.interrupted() {
                return;
            }
            let peer = &mut self.peers[bi];
            let lines = match list(&mut peer.conn, &root).await {
                Ok(Listing::Keys(k)) => Ok((k, 0)),
                Ok(Listing::Dir(d)) => {
                    self.rep.dirs_listed += 1;
                    enumerate(&mut peer.conn, &root, &d).await
                }
                Err(e) => Err((root.clone(), e)),
            };
            let lines = match lines {
                Ok((k, dirs)) => {
                    self.rep.dirs_listed += dirs;
                    k
                }
                Err((p, e)) => {
                    let addr = self.peers[bi].conn.addr().to_string();
                    self.rep.error(&addr, &p, e);
                    continue;
                }
            };
            for k in lines {
                // A backup tombstone alone is no write to recover; live copies are.
                if k.ver <= 0 || !self.resolved.insert(k.khash) {
                    continue;
                }
                if self.interrupted() {
                    return;
                }
                self.rep.counters.keys_compared += 1;
                let mut listed = vec![Listed::Unknown; self.peers.len()];
                listed[bi] = Listed::Line(k);
                self.resolve(k.khash, listed, false).await;
            }
        }
    }

    /// §1.4–1.6 for one khash. `counted` says whether `differing` was already incremented
    /// (main walk); backup candidates count only when something actually differs.
    async fn resolve(&mut self, khash: u64, listed: Vec<Listed>, counted: bool) {
        let kh = hex16(khash);
        let mut log = Decided::new(&self.shared.route, self.bucket, &kh);
        let participants: Vec<usize> = (0..self.peers.len())
            .filter(|&i| self.peers[i].up)
            .collect();

        // 1. Raw records from the replicas that list the key, live ones first.
        let mut records: Vec<Option<RawRecord>> = vec![None; self.peers.len()];
        let live_listed: Vec<usize> = participants
            .iter()
            .copied()
            .filter(|&i| matches!(listed[i], Listed::Line(k) if k.ver > 0))
            .collect();
        let tomb_listed: Vec<usize> = participants
            .iter()
            .copied()
            .filter(|&i| matches!(listed[i], Listed::Line(k) if k.ver < 0))
            .collect();
        let fetch_key = format!("@@{kh}");
        let fetched = self
            .fetch_raw(&live_listed, &fetch_key, khash, &listed)
            .await;
        let mut key: Option<Vec<u8>> = None;
        for (&i, r) in live_listed.iter().zip(fetched) {
            match r {
                Fetch::Ok(rec) => {
                    if let Some(k) = &key {
                        if *k != rec.key {
                            return self.end_conflict(&mut log, counted, "khash collision");
                        }
                    }
                    key = Some(rec.key.clone());
                    records[i] = Some(rec);
                }
                Fetch::Miss => return self.end_changed(&mut log, counted),
                Fetch::Err(e) => {
                    let addr = self.peers[i].conn.addr().to_string();
                    return self.end_error(&mut log, counted, &addr, &kh, e);
                }
            }
        }
        for &i in &tomb_listed {
            if key.is_some() {
                break;
            }
            let r = self.fetch_raw(&[i], &fetch_key, khash, &listed).await;
            match r.into_iter().next() {
                Some(Fetch::Ok(rec)) => key = Some(rec.key),
                Some(Fetch::Miss) | None => {}
                Some(Fetch::Err(e)) => {
                    let addr = self.peers[i].conn.addr().to_string();
                    return self.end_error(&mut log, counted, &addr, &kh, e);
                }
            }
        }
        let Some(key) = key else {
            return self.end_changed(&mut log, counted);
        };
        log.key = Some(key.clone());

        // 2. Authoritative states from every replica serving the bucket.
        let metas = match self.metas(&participants, &key).await {
            Ok(m) => m,
            Err((i, e)) => {
                let addr = self.peers[i].conn.addr().to_string();
                return self.end_error(&mut log, counted, &addr, &kh, e);
            }
        };
        let mut states: Vec<State> = vec![State::Absent; self.peers.len()];
        for (&i, s) in participants.iter().zip(&metas) {
            states[i] = *s;
        }
        log.states = self.states_json(&participants, &states);
        for &i in &participants {
            let changed = match (listed[i], states[i]) {
                (Listed::Unknown, _) => false,
                (Listed::Absent, s) => s.is_live(),
                (Listed::Line(k), State::Live { ver, vhash, .. }) => {
                    k.ver != ver || k.vhash != vhash
                }
                (Listed::Line(k), State::Tomb { ver, .. }) => k.ver != ver,
                (Listed::Line(_), State::Absent) => true,
            };
            if changed {
                return self.end_changed(&mut log, counted);
            }
        }
        // Live replicas not fetched yet (backups, unlisted mains): their bytes decide too.
        let missing: Vec<usize> = participants
            .iter()
            .copied()
            .filter(|&i| states[i].is_live() && records[i].is_none())
            .collect();
        let mut expect = listed.clone();
        for &i in &missing {
            if let State::Live { ver, vhash, .. } = states[i] {
                expect[i] = Listed::Line(KeyLine { khash, vhash, ver });
            }
        }
        let fetched = self.fetch_raw(&missing, &fetch_key, khash, &expect).await;
        for (&i, r) in missing.iter().zip(fetched) {
            match r {
                Fetch::Ok(rec) => {
                    if rec.key != key {
                        return self.end_conflict(&mut log, counted, "khash collision");
                    }
                    records[i] = Some(rec);
                }
                Fetch::Miss => return self.end_changed(&mut log, counted),
                Fetch::Err(e) => {
                    let addr = self.peers[i].conn.addr().to_string();
                    return self.end_error(&mut log, counted, &addr, &kh, e);
                }
            }
        }

        // 3. Decide.
        let inputs: Vec<Input<'_>> = (0..self.peers.len())
            .map(|i| Input {
                state: states[i],
                content: match (&states[i], &records[i]) {
                    (State::Live { .. }, Some(r)) => Some((r.flag, r.value.as_slice())),
                    _ => None,
                },
                main: self.peers[i].main,
            })
            .collect();
        let decision = decide(&inputs, self.shared.opts.minority);
        if let Decision::Nothing { .. } = decision {
            if !counted {
                // A backup key the mains already agree on: not a difference.
                self.drain(&key, &states).await;
                return;
            }
        } else if !counted {
            self.rep.counters.differing += 1;
            self.shared.live.differing.fetch_add(1, Ordering::Relaxed);
        }
        log.set_decision(&decision, &self.peers, &states);

        // Hot keys are left alone: a client may be writing them right now.
        if !matches!(decision, Decision::Nothing { .. }) {
            let now = local_now();
            let hot = participants.iter().any(|&i| {
                states[i].ts().is_some_and(|ts| {
                    i64::from(ts) > now + self.peers[i].offset - self.shared.opts.hot_seconds
                })
            });
            if hot {
                self.rep.counters.skipped_hot += 1;
                log.action = "skip_hot";
                log.result = "skipped_hot";
                self.write_log(&log);
                return;
            }
        }

        let (targets, version, winner, live) = match &decision {
            Decision::Nothing { .. } => {
                log.result = "ok";
                self.write_log(&log);
                return;
            }
            Decision::Hold { .. } => {
                self.rep.counters.held += 1;
                log.result = "held";
                self.write_log(&log);
                return;
            }
            Decision::Conflict => {
                self.rep.counters.conflicts += 1;
                log.result = "conflict";
                self.write_log(&log);
                return;
            }
            Decision::Set {
                targets,
                version,
                winner,
                ..
            } => (targets.clone(), *version, *winner, true),
            Decision::Delete {
                targets,
                version,
                winner,
                ..
            } => (targets.clone(), *version, *winner, false),
        };
        if self.shared.opts.dry_run {
            self.rep.counters.would_repair += 1;
            log.result = "dry_run";
            self.write_log(&log);
            return;
        }

        // Re-check right before writing: any change means a client got there first.
        match self.metas(&participants, &key).await {
            Ok(again) if again == metas => {}
            Ok(_) => return self.end_changed(&mut log, counted),
            Err((i, e)) => {
                let addr = self.peers[i].conn.addr().to_string();
                return self.end_error(&mut log, counted, &addr, &kh, e);
            }
        }

        let content: Option<(u32, Vec<u8>)> = records[winner]
            .as_ref()
            .filter(|_| live)
            .map(|r| (r.flag, r.value.clone()));
        let winner_vhash = match states[winner] {
            State::Live { vhash, .. } => vhash,
            _ => 0,
        };
        let outcomes = join_all(
            self.peers
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| targets.contains(i))
                .map(|(i, p)| {
                    let key = key.clone();
                    let content = content.clone();
                    let own = records[i].as_ref().map(|r| (r.flag, r.value.clone()));
                    let state = states[i];
                    async move {
                        write_target(
                            &mut p.conn,
                            &key,
                            content,
                            own,
                            state,
                            version,
                            winner_vhash,
                        )
                        .await
                    }
                })
                .collect(),
        )
        .await;
        let mut failed = false;
        let mut changed = false;
        let mut final_states = states.clone();
        for (&i, o) in targets.iter().zip(outcomes) {
            match o {
                Outcome::Ok { state, misaligned } => {
                    final_states[i] = state;
                    if misaligned {
                        self.rep.counters.version_misaligned += 1;
                    }
                }
                Outcome::Changed => changed = true,
                Outcome::Failed(e) => {
                    tracing::warn!(
                        "sync write of {} to {} failed: {e}",
                        String::from_utf8_lossy(&key),
                        self.peers[i].conn.addr()
                    );
                    failed = true;
                }
            }
        }
        if failed {
            self.rep.counters.failed += 1;
            log.result = "failed";
        } else if changed {
            self.rep.counters.skipped_changed += 1;
            log.result = "skipped_changed";
        } else {
            self.rep.counters.repaired += 1;
            self.shared.live.repaired.fetch_add(1, Ordering::Relaxed);
            log.result = "ok";
            self.drain(&key, &final_states).await;
        }
        self.write_log(&log);
    }

    /// `--drain-backups`: delete a backup's live copy once every main holds |ver| ≥ it.
    async fn drain(&mut self, key: &[u8], states: &[State]) {
        if !self.shared.opts.drain_backups || self.shared.opts.dry_run {
            return;
        }
        let all_mains_up = self.peers.iter().all(|p| !p.main || p.up);
        if !all_mains_up {
            return;
        }
        let main_min = self
            .peers
            .iter()
            .zip(states)
            .filter(|(p, _)| p.main)
            .map(|(_, s)| s.abs_ver())
            .min()
            .flatten();
        let Some(main_min) = main_min else { return };
        for (p, state) in self.peers.iter_mut().zip(states) {
            if p.main || !p.up {
                continue;
            }
            if let State::Live { ver, .. } = *state {
                if main_min >= ver.unsigned_abs() {
                    match p.conn.delete(key).await {
                        Ok(true) => self.rep.counters.drained += 1,
                        Ok(false) => {}
                        Err(e) => {
                            let addr = p.conn.addr().to_string();
                            self.rep.error(&addr, &hex16(beansdb_hash::keyhash(key)), e);
                        }
                    }
                }
            }
        }
    }

    async fn fetch_raw(
        &mut self,
        idx: &[usize],
        fetch_key: &str,
        khash: u64,
        listed: &[Listed],
    ) -> Vec<Fetch> {
        join_all(
            self.peers
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| idx.contains(i))
                .map(|(i, p)| {
                    let expect = match listed[i] {
                        Listed::Line(k) if k.ver > 0 => Some(k.vhash),
                        _ => None,
                    };
                    async move {
                        match p.conn.get(fetch_key.as_bytes()).await {
                            Ok(None) => Fetch::Miss,
                            Ok(Some(body)) => match parse_raw(&body, khash, expect) {
                                Ok(r) => Fetch::Ok(r),
                                Err(e) => Fetch::Err(format!("bad record: {e}")),
                            },
                            Err(e) => Fetch::Err(e.0),
                        }
                    }
                })
                .collect(),
        )
        .await
    }

    /// `?key` on the given peers, in parallel.
    async fn metas(&mut self, idx: &[usize], key: &[u8]) -> Result<Vec<State>, (usize, String)> {
        let mut q = Vec::with_capacity(key.len() + 1);
        q.push(b'?');
        q.extend_from_slice(key);
        let res = join_all(
            self.peers
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| idx.contains(i))
                .map(|(i, p)| {
                    let q = &q;
                    async move {
                        let r = match p.conn.get(q).await {
                            Ok(body) => parse_meta(body.as_deref()),
                            Err(e) => Err(e.0),
                        };
                        r.map_err(|e| (i, e))
                    }
                })
                .collect(),
        )
        .await;
        res.into_iter().collect()
    }

    fn states_json(&self, idx: &[usize], states: &[State]) -> Map<String, Value> {
        let mut m = Map::new();
        for &i in idx {
            m.insert(self.peers[i].conn.addr().to_string(), state_json(states[i]));
        }
        m
    }

    fn end_changed(&mut self, log: &mut Decided, counted: bool) {
        if !counted {
            self.rep.counters.differing += 1;
        }
        self.rep.counters.skipped_changed += 1;
        log.action = "skip_changed";
        log.result = "skipped_changed";
        self.write_log(log);
    }

    fn end_conflict(&mut self, log: &mut Decided, counted: bool, reason: &'static str) {
        if !counted {
            self.rep.counters.differing += 1;
        }
        self.rep.counters.conflicts += 1;
        log.action = "conflict";
        log.reason = reason;
        log.result = "conflict";
        self.write_log(log);
    }

    fn end_error(&mut self, log: &mut Decided, counted: bool, node: &str, kh: &str, e: String) {
        if !counted {
            self.rep.counters.differing += 1;
        }
        self.rep.error(node, kh, &e);
        log.action = "error";
        log.reason = "node_error";
        log.result = "error";
        self.write_log(log);
    }

    fn write_log(&self, log: &Decided) {
        let Some(f) = &self.shared.decisions else {
            return;
        };
        let mut line = log.to_json().to_string();
        line.push('\n');
        if let Err(e) = f.lock().write_all(line.as_bytes()) {
            tracing::warn!("cannot append to the decisions file: {e}");
        }
    }
}

enum Fetch {
    Ok(RawRecord),
    Miss,
    Err(String),
}

enum Outcome {
    Ok { state: State, misaligned: bool },
    Changed,
    Failed(String),
}

/// Whether the replicas' key lines for one khash differ (§1.3): liveness disagrees, or two
/// live entries differ in vhash or version. Tombstone-only differences are not differences.
fn differs(per: &[Option<KeyLine>]) -> bool {
    let live: Vec<&KeyLine> = per.iter().flatten().filter(|k| k.ver > 0).collect();
    if live.is_empty() {
        return false;
    }
    if live.len() != per.len() {
        return true;
    }
    live.iter()
        .any(|k| k.vhash != live[0].vhash || k.ver != live[0].ver)
}

/// Writes the winner to one target and verifies it with `?key` (§1.6).
async fn write_target(
    conn: &mut NodeConn,
    key: &[u8],
    content: Option<(u32, Vec<u8>)>,
    own: Option<(u32, Vec<u8>)>,
    state: State,
    version: i32,
    winner_vhash: u16,
) -> Outcome {
    let mut misaligned = false;
    let sent: Result<(), NodeError> = match &content {
        Some((flag, value)) => match conn.set(key, *flag, version, value).await {
            Ok(StoreReply::Stored) => Ok(()),
            Ok(other) => Err(NodeError(format!("set answered {other:?}"))),
            Err(e) => Err(e),
        },
        None => {
            // Version-aligned delete: raise the live copy to T−1 with its own bytes (readers
            // see no change), so the tombstone lands at −T like on the other replicas.
            if let (State::Live { ver, .. }, Some((flag, value))) = (state, &own) {
                if ver.saturating_add(1) < version {
                    match conn.set(key, *flag, version - 1, value).await {
                        Ok(StoreReply::Stored) => {}
                        _ => misaligned = true,
                    }
                }
            } else if let State::Live { ver, .. } = state {
                misaligned = ver.saturating_add(1) < version;
            }
            conn.delete(key).await.map(|_| ())
        }
    };
    if let Err(e) = sent {
        return Outcome::Failed(e.0);
    }
    let mut q = Vec::with_capacity(key.len() + 1);
    q.push(b'?');
    q.extend_from_slice(key);
    let after = match conn.get(&q).await {
        Ok(body) => match parse_meta(body.as_deref()) {
            Ok(s) => s,
            Err(e) => return Outcome::Failed(e),
        },
        Err(e) => return Outcome::Failed(e.0),
    };
    match (content.is_some(), after) {
        (true, State::Live { ver, vhash, .. }) if ver == version && vhash == winner_vhash => {
            Outcome::Ok {
                state: after,
                misaligned: false,
            }
        }
        (false, State::Tomb { ver, .. }) => Outcome::Ok {
            state: after,
            misaligned: misaligned || ver != -version,
        },
        (_, s) if s.abs_ver().is_some_and(|v| v > version.unsigned_abs()) => Outcome::Changed,
        (_, s) => Outcome::Failed(format!("verify: state after write is {s:?}")),
    }
}

fn state_json(s: State) -> Value {
    match s {
        State::Live { ver, vhash, ts, .. } => json!({"ver": ver, "vhash": vhash, "ts": ts}),
        State::Tomb { ver, ts } => json!({"ver": ver, "vhash": 0, "ts": ts}),
        State::Absent => Value::Null,
    }
}

/// One line of the `--decisions` file.
struct Decided {
    bucket: String,
    khash: String,
    key: Option<Vec<u8>>,
    action: &'static str,
    reason: &'static str,
    winner: Value,
    version: Option<i32>,
    targets: Vec<String>,
    states: Map<String, Value>,
    result: &'static str,
}

impl Decided {
    fn new(route: &Route, bucket: usize, khash: &str) -> Decided {
        Decided {
            bucket: route.bucket_hex(bucket),
            khash: khash.to_string(),
            key: None,
            action: "error",
            reason: "",
            winner: Value::Null,
            version: None,
            targets: Vec::new(),
            states: Map::new(),
            result: "",
        }
    }

    fn set_decision(&mut self, d: &Decision, peers: &[Peer], states: &[State]) {
        let winner_json = |w: usize| {
            let s = states[w];
            let mut v = state_json(s);
            if let Value::Object(m) = &mut v {
                m.insert("node".into(), json!(peers[w].conn.addr()));
                m.insert("live".into(), json!(s.is_live()));
            }
            v
        };
        let names = |t: &[usize]| -> Vec<String> {
            t.iter()
                .map(|&i| peers[i].conn.addr().to_string())
                .collect()
        };
        match d {
            Decision::Nothing { reason } => {
                self.action = "none";
                self.reason = reason;
            }
            Decision::Set {
                action,
                reason,
                winner,
                version,
                targets,
            } => {
                self.action = action;
                self.reason = reason;
                self.winner = winner_json(*winner);
                self.version = Some(*version);
                self.targets = names(targets);
            }
            Decision::Delete {
                reason,
                winner,
                version,
                targets,
            } => {
                self.action = "delete";
                self.reason = reason;
                self.winner = winner_json(*winner);
                self.version = Some(-*version);
                self.targets = names(targets);
            }
            Decision::Hold { winner } => {
                self.action = "hold";
                self.reason = "minority_tombstone";
                self.winner = winner_json(*winner);
            }
            Decision::Conflict => {
                self.action = "conflict";
                self.reason = "no_majority";
            }
        }
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "ts".into(),
            json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        );
        m.insert("bucket".into(), json!(self.bucket));
        m.insert("khash".into(), json!(self.khash));
        if let Some(k) = &self.key {
            match std::str::from_utf8(k) {
                Ok(s) => m.insert("key".into(), json!(s)),
                Err(_) => m.insert(
                    "key_hex".into(),
                    json!(k.iter().map(|b| format!("{b:02x}")).collect::<String>()),
                ),
            };
        }
        m.insert("action".into(), json!(self.action));
        m.insert("reason".into(), json!(self.reason));
        m.insert("winner".into(), self.winner.clone());
        if let Some(v) = self.version {
            m.insert("version".into(), json!(v));
        }
        m.insert("targets".into(), json!(self.targets));
        m.insert("states".into(), Value::Object(self.states.clone()));
        m.insert("result".into(), json!(self.result));
        Value::Object(m)
    }
}

/// Counters for a bucket that was never started (interrupt before it began).
pub fn not_started(route: &Route, bucket: usize, no_backups: bool) -> BucketReport {
    let mut r = BucketReport::new(
        route.bucket_hex(bucket),
        route.mains(bucket).iter().map(|s| s.to_string()).collect(),
        if no_backups {
            Vec::new()
        } else {
            route.backup.clone()
        },
    );
    r.interrupted = true;
    r.finish(false);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(vhash: u16, ver: i32) -> Option<KeyLine> {
        Some(KeyLine {
            khash: 1,
            vhash,
            ver,
        })
    }

    #[test]
    fn difference_rules() {
        assert!(!differs(&[k(5, 2), k(5, 2), k(5, 2)]));
        assert!(differs(&[k(5, 2), k(5, 3), k(5, 2)]));
        assert!(differs(&[k(5, 2), k(6, 2)]));
        assert!(differs(&[k(5, 2), None]));
        assert!(differs(&[k(5, 2), k(0, -3)]));
        // Tombstones that differ only in version, and Tomb vs Absent, are not differences.
        assert!(!differs(&[k(0, -2), k(0, -5)]));
        assert!(!differs(&[k(0, -2), None]));
    }

    #[test]
    fn paths() {
        let r16 = Route::all_local("a:1", 16);
        assert_eq!(top_of(&r16, 0xa), (String::new(), 0xa));
        assert_eq!(root_path(&r16, 0xa), "a");
        let r256 = Route::all_local("a:1", 256);
        assert_eq!(top_of(&r256, 0xa9), ("a".to_string(), 9));
        assert_eq!(root_path(&r256, 0xa9), "a9");
    }
}
