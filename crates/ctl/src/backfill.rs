//! `beansctl backfill` (cassandra.md §9.1, §9.2): copy every record under the given prefixes
//! from the nodes' hash trees into Cassandra, each write carrying the record's own second as
//! its timestamp, so live proxy writes (later timestamps) always win.
//!
//! Buckets are walked one after another; within a bucket each key listing's records are
//! fetched and written by `--concurrency` pipelines, and the listing counts as completed
//! once all of them succeeded. The checkpoint records, per bucket, `done` or the last
//! listing path completed with every listing before it; a listing with a failed record stops
//! that bucket's progress, so `--resume` retries it.

mod checkpoint;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use serde_json::json;

use self::checkpoint::{Checkpoint, DONE};
use crate::cli::GlobalOpts;
use crate::error::{exit, CliError, CliResult};
use crate::interrupt::Interrupt;
use crate::migrate::cstar::{self, CstarArgs, CstarTarget};
use crate::migrate::nodes::Pool;
use crate::migrate::walk::{self, BucketEnd, RecordSink, WalkProgress};
use crate::migrate::{
    key_text, record_row, record_ts_micros, select, Counter, Failures, RecordRate, Selection, Skips,
};
use crate::sync::wire::KeyLine;

/// Checkpoint writes are at most this frequent (and once at exit).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Args)]
pub struct BackfillArgs {
    /// route.yaml path, conf dir, or http://host:port web address serving /route/
    #[arg(long, value_name = "SRC")]
    pub route: String,
    #[command(flatten)]
    pub cstar: CstarArgs,
    /// Key prefix to copy (repeatable)
    #[arg(long = "prefix", value_name = "P", required = true)]
    pub prefixes: Vec<String>,
    /// Hex bucket ids (comma list or repeated); default all
    #[arg(long, value_delimiter = ',', value_name = "B[,B..]")]
    pub bucket: Vec<String>,
    /// At most N records written per second (burst N/10); 0 = unlimited
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub rate: u64,
    /// Concurrent fetch+write pipelines
    #[arg(long, default_value_t = 4, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// Directory of the checkpoint file
    #[arg(long, value_name = "DIR", default_value = "backfill-checkpoints")]
    pub checkpoint: PathBuf,
    /// Continue from an existing checkpoint
    #[arg(long, conflicts_with = "restart")]
    pub resume: bool,
    /// Delete an existing checkpoint and start over
    #[arg(long)]
    pub restart: bool,
    /// Walk and count without writing to Cassandra (no checkpoint either)
    #[arg(long)]
    pub dry_run: bool,
    /// Test hook: sleep this long between fetching a record and writing it
    #[arg(long, hide = true, default_value_t = 0, value_name = "MS")]
    pub debug_delay_write_ms: u64,
}

#[derive(Default)]
struct Counters {
    scanned: Counter,
    matched: Counter,
    skips: Skips,
    vanished: Counter,
    written: Counter,
    deleted: Counter,
    errors: Counter,
}

#[derive(Debug, Clone, Serialize)]
struct Failure {
    key: String,
    khash: String,
    error: String,
}

struct Ctx {
    target: CstarTarget,
    pool: Arc<Pool>,
    prefixes: Vec<String>,
    dry_run: bool,
    delay: Duration,
    rate: RecordRate,
    counters: Counters,
    failures: Failures<Failure>,
}

impl Ctx {
    fn fail(&self, key: &[u8], khash: u64, error: String) {
        self.counters.errors.inc();
        eprintln!(
            "error: backfill {} ({khash:016x}): {error}",
            if key.is_empty() {
                "record".to_string()
            } else {
                key_text(key)
            }
        );
        self.failures.push(Failure {
            key: key_text(key),
            khash: format!("{khash:016x}"),
            error,
        });
    }
}

impl RecordSink for Ctx {
    async fn process(&self, source: &str, line: KeyLine) -> bool {
        let c = &self.counters;
        c.scanned.inc();
        let rec = match walk::fetch(&self.pool, source, line.khash).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                c.vanished.inc();
                return true;
            }
            Err(e) => {
                self.fail(b"", line.khash, format!("{source}: {e}"));
                return false;
            }
        };
        let selection = select(&self.prefixes, &self.target, &rec.key);
        if selection != Selection::Unmatched {
            c.matched.inc();
        }
        if c.skips.count(selection) {
            return true;
        }
        if rec.ver == 0 {
            self.fail(&rec.key, rec.khash, "record has version 0".into());
            return false;
        }
        if self.dry_run {
            if rec.ver > 0 { &c.written } else { &c.deleted }.inc();
            return true;
        }
        self.rate.acquire().await;
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let store = match self.target.store_for(&rec.key) {
            Ok(s) => s,
            Err(e) => {
                self.fail(&rec.key, rec.khash, e);
                return false;
            }
        };
        let ts_us = record_ts_micros(rec.ts, 0);
        let res = if rec.ver > 0 {
            let v = record_row(rec.flag, rec.ts, rec.value);
            store
                .set_value(&rec.key, &v, ts_us)
                .await
                .map(|_| &c.written)
        } else {
            store.delete(&rec.key, ts_us).await.map(|_| &c.deleted)
        };
        match res {
            Ok(counter) => {
                counter.inc();
                true
            }
            Err(e) => {
                self.fail(&rec.key, rec.khash, e.to_string());
                false
            }
        }
    }
}

/// Entry point of `beansctl backfill`; returns the exit code.
pub fn run(args: BackfillArgs, g: &GlobalOpts) -> CliResult<u8> {
    crate::cli::block_on(run_async(args, g))
}

/// Sorted, deduplicated, non-empty prefixes (the checkpoint name depends on this order).
pub(crate) fn normalize_prefixes(list: &[String]) -> CliResult<Vec<String>> {
    if list.iter().any(String::is_empty) {
        return Err(CliError::usage(
            "invalid value for --prefix: an empty prefix is not allowed",
        ));
    }
    let mut p = list.to_vec();
    p.sort();
    p.dedup();
    Ok(p)
}

async fn run_async(args: BackfillArgs, g: &GlobalOpts) -> CliResult<u8> {
    let prefixes = normalize_prefixes(&args.prefixes)?;
    let resolved = cstar::resolve(&args.cstar, g)?;
    let route =
        crate::sync::routesrc::load_with(&args.route, g.connect_timeout, g.timeout, true).await?;
    let buckets = crate::sync::parse_buckets(&args.bucket, route.numbucket)?;

    let cp_path = checkpoint::path_for(&args.checkpoint, &prefixes);
    let mut cp = if args.dry_run {
        Checkpoint::new(&prefixes, route.numbucket)
    } else if cp_path.exists() {
        if args.restart {
            std::fs::remove_file(&cp_path).map_err(|e| {
                CliError::runtime(anyhow::anyhow!(
                    "cannot delete checkpoint {}: {e}",
                    cp_path.display()
                ))
            })?;
            Checkpoint::new(&prefixes, route.numbucket)
        } else if args.resume {
            Checkpoint::load(&cp_path, route.numbucket)?
        } else {
            return Err(CliError::usage(format!(
                "checkpoint {} exists; pass --resume or --restart",
                cp_path.display()
            )));
        }
    } else {
        Checkpoint::new(&prefixes, route.numbucket)
    };

    let target = CstarTarget::open(&resolved, resolved.own_maps()).await?;
    let pool = Arc::new(Pool::new(&route, g.client_config()));
    let ctx = Arc::new(Ctx {
        target,
        pool: pool.clone(),
        prefixes: prefixes.clone(),
        dry_run: args.dry_run,
        delay: Duration::from_millis(args.debug_delay_write_ms),
        rate: RecordRate::new(args.rate),
        counters: Counters::default(),
        failures: Failures::default(),
    });
    // Counters of earlier runs, so the checkpoint's totals span all of them.
    let base = cp.counters.clone();

    let interrupt = Interrupt::install();
    let n = buckets.len();
    let progress = WalkProgress::start("backfill", g, n, {
        let ctx = ctx.clone();
        move || {
            let c = &ctx.counters;
            let counts = format!(
                "scanned={} matched={} written={} deleted={} skipped={} errors={}",
                c.scanned.get(),
                c.matched.get(),
                c.written.get(),
                c.deleted.get(),
                c.skips.status.get() + c.skips.invalid_key.get(),
                c.errors.get(),
            );
            (counts, c.written.get() + c.deleted.get())
        }
    });

    let mut last_save = Instant::now();
    let mut unreachable = 0usize;
    let mut save_error: Option<String> = None;
    let save = |cp: &mut Checkpoint, ctx: &Ctx, save_error: &mut Option<String>| {
        if args.dry_run {
            return;
        }
        let c = &ctx.counters;
        cp.counters.scanned = base.scanned + c.scanned.get();
        cp.counters.written = base.written + c.written.get();
        cp.counters.deleted = base.deleted + c.deleted.get();
        cp.counters.errors = base.errors + c.errors.get();
        if let Err(e) = cp.save(&cp_path) {
            *save_error = Some(format!(
                "cannot write checkpoint {}: {e}",
                cp_path.display()
            ));
        }
    };
    for (i, &b) in buckets.iter().enumerate() {
        if interrupt.fired() {
            break;
        }
        progress.at_bucket(i);
        let hexid = route.bucket_hex(b);
        if cp.is_done(&hexid) {
            continue;
        }
        let done_upto = cp.path_of(&hexid);
        let mut progressing = true;
        let end = walk::walk_bucket(
            &route,
            &pool,
            b,
            done_upto,
            args.concurrency as usize,
            ctx.as_ref(),
            &interrupt,
            &progress.position,
            |path, clean| {
                // A listing with a failed record ends this bucket's progress: resume redoes it.
                progressing &= clean;
                if progressing {
                    cp.buckets.insert(hexid.clone(), path.to_string());
                }
                if last_save.elapsed() >= CHECKPOINT_EVERY {
                    save(&mut cp, &ctx, &mut save_error);
                    last_save = Instant::now();
                }
            },
        )
        .await;
        match end {
            BucketEnd::Walked { clean: true } => {
                cp.buckets.insert(hexid.clone(), DONE.to_string());
            }
            BucketEnd::Walked { clean: false } | BucketEnd::Interrupted => {}
            BucketEnd::Failed(e) => {
                if !pool.any_answered() || e.starts_with("no main") {
                    unreachable += 1;
                }
                ctx.fail(b"", 0, format!("bucket {hexid}: {e}"));
            }
        }
    }
    save(&mut cp, &ctx, &mut save_error);
    progress.finish();
    if let Some(e) = &save_error {
        eprintln!("error: {e}");
    }

    let c = &ctx.counters;
    let buckets_done = buckets
        .iter()
        .filter(|&&b| cp.is_done(&route.bucket_hex(b)))
        .count();
    let elapsed = progress.start.elapsed().as_secs_f64();
    let failures = ctx.failures.snapshot();
    if g.json {
        let doc = json!({
            "buckets_done": buckets_done,
            "scanned": c.scanned.get(),
            "matched": c.matched.get(),
            "written": c.written.get(),
            "deleted": c.deleted.get(),
            "skipped_status": c.skips.status.get(),
            "invalid_key": c.skips.invalid_key.get(),
            "errors": c.errors.get(),
            "failures": failures,
            "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
            "unmatched": c.skips.unmatched.get(),
            "vanished": c.vanished.get(),
            "buckets": n,
            "dry_run": args.dry_run,
            "checkpoint": (!args.dry_run).then(|| cp_path.display().to_string()),
            "interrupted": interrupt.fired(),
        });
        println!("{doc}");
    } else {
        println!(
            "backfill {}prefixes={} buckets_done={buckets_done}/{n} scanned={} matched={} \
             written={} deleted={} skipped_status={} invalid_key={} errors={} elapsed={elapsed:.1}s",
            if args.dry_run { "(dry run) " } else { "" },
            prefixes.join(","),
            c.scanned.get(),
            c.matched.get(),
            c.written.get(),
            c.deleted.get(),
            c.skips.status.get(),
            c.skips.invalid_key.get(),
            c.errors.get(),
        );
        if !args.dry_run {
            println!("checkpoint {}", cp_path.display());
        }
    }
    Ok(if interrupt.fired() {
        exit::INTERRUPTED
    } else if unreachable > 0 || save_error.is_some() {
        exit::RUNTIME
    } else if c.errors.get() > 0 {
        exit::FOUND
    } else {
        exit::OK
    })
}
