//! The walk of one bucket's hash tree on one node (cassandra.md §9.1): `get @<path>`
//! listings, depth first in ascending digit order, down to key listings whose records are
//! fetched with `get @@<khash>`.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use beansdb_route::Route;
use futures::StreamExt;
use parking_lot::Mutex;

use crate::cli::GlobalOpts;
use crate::interrupt::Interrupt;
use crate::output::{Progress, Ticker};
use crate::sync::node::NodeConn;
use crate::sync::wire::{parse_listing, parse_raw, KeyLine, Listing};
use crate::units::hms;

use super::nodes::Pool;

/// One record of the walk, as the `@@` reply has it (its ver/ts win over the listing's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkRecord {
    pub khash: u64,
    pub key: Vec<u8>,
    pub flag: u32,
    pub value: Vec<u8>,
    /// Negative: a tombstone.
    pub ver: i32,
    /// Unix seconds of the record.
    pub ts: u32,
}

/// The root path of `bucket`: `%x` for 16 buckets, `%02x` for 256, empty for 1.
pub fn bucket_path(route: &Route, bucket: usize) -> String {
    if route.numbucket == 1 {
        String::new()
    } else {
        route.bucket_hex(bucket)
    }
}

/// The first main of `bucket` in route order that answers `version`.
pub async fn pick_source(route: &Route, bucket: usize, pool: &Pool) -> Result<String, String> {
    let mut errors = Vec::new();
    for addr in route.mains(bucket) {
        let mut c = pool.take(addr);
        let r = c.version().await;
        pool.put(c);
        match r {
            Ok(_) => return Ok(addr.to_string()),
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
    }
    Err(format!(
        "no main of bucket {} answers: {}",
        route.bucket_hex(bucket),
        errors.join("; ")
    ))
}

/// `get @<path>`, parsed.
pub async fn list(conn: &mut NodeConn, path: &str) -> Result<Listing, String> {
    let key = format!("@{path}");
    let body = conn
        .get(key.as_bytes())
        .await
        .map_err(|e| format!("{} get {key}: {e}", conn.addr()))?;
    parse_listing(body.as_deref(), path).map_err(|e| format!("{} get {key}: {e}", conn.addr()))
}

/// `get @@<khash>` on `source` over a pooled connection: the record, or `None` when it
/// vanished since the listing.
pub async fn fetch(pool: &Pool, source: &str, khash: u64) -> Result<Option<WalkRecord>, String> {
    let key = format!("@@{khash:016x}");
    let mut conn = pool.take(source);
    let body = conn.get(key.as_bytes()).await;
    pool.put(conn);
    let body = body.map_err(|e| format!("get {key}: {e}"))?;
    let Some(body) = body else {
        return Ok(None);
    };
    // The listing's vhash may be stale under concurrent writes; the CRC is what must hold.
    let r = parse_raw(&body, khash, None).map_err(|e| format!("get {key}: {e}"))?;
    Ok(Some(WalkRecord {
        khash,
        key: r.key,
        flag: r.flag,
        value: r.value,
        ver: r.disk_ver,
        ts: r.ts,
    }))
}

/// The live count of a bucket's root, from its parent listing (the `--sample` denominator).
pub async fn root_count(conn: &mut NodeConn, route: &Route, bucket: usize) -> Result<u64, String> {
    let path = bucket_path(route, bucket);
    let (parent, digit) = match path.len() {
        0 => {
            // One bucket: the root is `@` itself.
            return Ok(match list(conn, "").await? {
                Listing::Dir(d) => d.iter().map(|(_, c)| u64::from(*c)).sum(),
                Listing::Keys(k) => k.iter().filter(|k| k.ver > 0).count() as u64,
            });
        }
        n => (&path[..n - 1], &path[n - 1..]),
    };
    let d = usize::from_str_radix(digit, 16).map_err(|_| format!("bad bucket path {path:?}"))?;
    match list(conn, parent).await? {
        Listing::Dir(dirs) => Ok(u64::from(dirs[d].1)),
        Listing::Keys(_) => Err(format!("@{parent} is not a directory listing")),
    }
}

/// Whether node path `q` was completed before checkpoint path `c` (cassandra.md §9.2): `q`
/// lies under `c`, or at their first differing position `q`'s digit is lower.
pub fn completed_before(q: &str, c: &str) -> bool {
    if q.starts_with(c) {
        return true;
    }
    q.bytes()
        .zip(c.bytes())
        .find(|(a, b)| a != b)
        .is_some_and(|(a, b)| a < b)
}

/// Depth-first walk of one bucket, one key listing ("leaf") at a time.
pub struct Walker {
    /// Paths still to list; the top is next.
    stack: Vec<String>,
    /// Paths completed by an earlier run (resume), skipped with their subtrees.
    done_upto: Option<String>,
}

impl Walker {
    pub fn new(root: String, done_upto: Option<String>) -> Walker {
        Walker {
            stack: vec![root],
            done_upto,
        }
    }

    /// The next key listing: its path and key lines. `None` when the bucket is walked.
    pub async fn next_leaf(
        &mut self,
        conn: &mut NodeConn,
    ) -> Result<Option<(String, Vec<KeyLine>)>, String> {
        while let Some(path) = self.stack.pop() {
            if self
                .done_upto
                .as_deref()
                .is_some_and(|c| completed_before(&path, c))
            {
                continue;
            }
            match list(conn, &path).await? {
                Listing::Keys(keys) => return Ok(Some((path, keys))),
                Listing::Dir(dirs) => {
                    if path.len() >= 16 {
                        return Err(format!("@{path}: directory below the deepest level"));
                    }
                    // Pushed in reverse so the lowest digit is listed first.
                    for d in (0..16).rev() {
                        if dirs[d].1 > 0 {
                            self.stack.push(format!("{path}{d:x}"));
                        }
                    }
                }
            }
        }
        Ok(None)
    }
}

/// What the per-record pipelines do with one key line of a listing; `false` = a record
/// error (the listing then does not count as completed).
pub trait RecordSink: Sync {
    fn process(&self, source: &str, line: KeyLine) -> impl Future<Output = bool> + Send;
}

/// How the walk of one bucket ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketEnd {
    /// Every listing was walked (`clean`: without record errors).
    Walked {
        clean: bool,
    },
    /// No source, or a listing failed: the rest of the bucket was not walked.
    Failed(String),
    Interrupted,
}

/// Where the walk is, for progress lines.
#[derive(Default)]
pub struct WalkPosition {
    /// Index of the bucket being walked in the tool's bucket list.
    pub bucket: Mutex<usize>,
    /// The key listing being processed (set by [`walk_bucket`]).
    pub path: Mutex<String>,
}

/// The progress line of a walk over buckets (cassandra.md §9.1), with where the walk is and
/// when it began.
pub struct WalkProgress {
    pub position: Arc<WalkPosition>,
    pub start: Instant,
    ticker: Ticker,
}

impl WalkProgress {
    /// Starts refreshing `<name>: bucket <i>/<n> path <p> <counts> rate=<r>/s elapsed=<t>`,
    /// where `counts()` gives the tool's counters and the number of records the rate is about.
    pub fn start(
        name: &'static str,
        g: &GlobalOpts,
        n: usize,
        counts: impl Fn() -> (String, u64) + Send + 'static,
    ) -> WalkProgress {
        let position = Arc::new(WalkPosition::default());
        let start = Instant::now();
        let at = position.clone();
        let ticker = Ticker::start(Progress::new_raw(name, g), move || {
            let secs = start.elapsed().as_secs_f64().max(0.001);
            let (counts, done) = counts();
            let i = *at.bucket.lock();
            let msg = format!(
                "{name}: bucket {}/{n} path {} {counts} rate={:.0}/s elapsed={}",
                (i + 1).min(n),
                at.path.lock(),
                done as f64 / secs,
                hms(start.elapsed()),
            );
            (i as u64, n as u64, msg)
        });
        WalkProgress {
            position,
            start,
            ticker,
        }
    }

    /// Marks bucket number `i` of the tool's list as the one being walked.
    pub fn at_bucket(&self, i: usize) {
        *self.position.bucket.lock() = i;
    }

    pub fn finish(&self) {
        self.ticker.finish();
    }
}

/// Walks `bucket` on its first answering main, processing each key listing's records with
/// `concurrency` pipelines; `on_leaf(path, clean)` runs after every listing is finished.
#[allow(clippy::too_many_arguments)]
pub async fn walk_bucket<S: RecordSink>(
    route: &Route,
    pool: &Pool,
    bucket: usize,
    done_upto: Option<String>,
    concurrency: usize,
    sink: &S,
    interrupt: &Interrupt,
    position: &WalkPosition,
    mut on_leaf: impl FnMut(&str, bool),
) -> BucketEnd {
    let source = match pick_source(route, bucket, pool).await {
        Ok(s) => s,
        Err(e) => return BucketEnd::Failed(e),
    };
    let root = bucket_path(route, bucket);
    let mut walker = Walker::new(root, done_upto);
    let mut conn = pool.take(&source);
    let mut clean = true;
    let end = loop {
        if interrupt.fired() {
            break BucketEnd::Interrupted;
        }
        let leaf = match walker.next_leaf(&mut conn).await {
            Ok(Some(leaf)) => leaf,
            Ok(None) => break BucketEnd::Walked { clean },
            Err(e) => break BucketEnd::Failed(e),
        };
        let (path, lines) = leaf;
        *position.path.lock() = path.clone();
        let results: Vec<bool> = futures::stream::iter(lines)
            .map(|line| sink.process(&source, line))
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let leaf_clean = results.iter().all(|ok| *ok);
        clean &= leaf_clean;
        on_leaf(&path, leaf_clean);
    };
    pool.put(conn);
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_paths() {
        // Under the checkpoint path, or before it in depth-first ascending order.
        assert!(completed_before("3a7", "3a7"));
        assert!(completed_before("3a70", "3a7"));
        assert!(completed_before("3a6", "3a7"));
        assert!(completed_before("3a", "3b"));
        assert!(completed_before("30f", "3a7"));
        // Ancestors and later paths are not.
        assert!(!completed_before("3a", "3a7"));
        assert!(!completed_before("3", "3a7"));
        assert!(!completed_before("3a8", "3a7"));
        assert!(!completed_before("3b", "3a7"));
    }

    #[test]
    fn root_paths() {
        let r16 = Route::all_local("a:1", 16);
        assert_eq!(bucket_path(&r16, 10), "a");
        let r256 = Route::all_local("a:1", 256);
        assert_eq!(bucket_path(&r256, 10), "0a");
        let r1 = Route::all_local("a:1", 1);
        assert_eq!(bucket_path(&r1, 0), "");
    }
}
