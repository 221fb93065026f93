//! `beansctl verify` (cassandra.md §9.3): walk the nodes' hash trees like backfill and compare
//! each matching record (all, or a uniform sample) with its Cassandra row. A difference is
//! re-read on both sides after 500 ms; one that disappears counts as `transient`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use beansdb_cassandra::BdbValue;
use clap::Args;
use parking_lot::Mutex;
use serde_json::json;

use crate::backfill::normalize_prefixes;
use crate::cli::GlobalOpts;
use crate::error::{exit, CliResult};
use crate::interrupt::Interrupt;
use crate::migrate::cstar::{self, CstarArgs, CstarTarget};
use crate::migrate::nodes::{BeansValue, Pool, Reader};
use crate::migrate::walk::{self, BucketEnd, RecordSink, WalkProgress};
use crate::migrate::{key_text, select, Counter, Failures, KeyFailure, RecordRate, Skips};
use crate::sync::wire::KeyLine;

/// Delay before a difference is re-read (cassandra.md §9.3).
const RECHECK_DELAY: Duration = Duration::from_millis(500);
/// Sample keys listed per category.
const SAMPLES_PER_CATEGORY: usize = 20;

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// route.yaml path, conf dir, or http://host:port web address serving /route/
    #[arg(long, value_name = "SRC")]
    pub route: String,
    #[command(flatten)]
    pub cstar: CstarArgs,
    /// Key prefix to check (repeatable)
    #[arg(long = "prefix", value_name = "P", required = true)]
    pub prefixes: Vec<String>,
    /// Hex bucket ids (comma list or repeated); default all
    #[arg(long, value_delimiter = ',', value_name = "B[,B..]")]
    pub bucket: Vec<String>,
    /// Check a uniform sample of about N records
    #[arg(long, value_name = "N", conflicts_with = "full",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub sample: Option<u64>,
    /// Check every matching record (the default)
    #[arg(long)]
    pub full: bool,
    /// At most N records checked per second (burst N/10); 0 = unlimited
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub rate: u64,
    /// Concurrent fetch+compare pipelines
    #[arg(long, default_value_t = 4, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
}

/// The outcome of one comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Equal,
    ValueDiff,
    FlagDiff,
    MissingInCstar,
    ExtraInCstar,
}

impl Category {
    fn name(self) -> &'static str {
        match self {
            Category::Equal => "equal",
            Category::ValueDiff => "value_diff",
            Category::FlagDiff => "flag_diff",
            Category::MissingInCstar => "missing_in_cstar",
            Category::ExtraInCstar => "extra_in_cstar",
        }
    }
}

/// beansdb's side of a comparison: a live value with its flag, or nothing (tombstone/absent).
fn compare(beans: Option<(u32, &[u8])>, cstar: Option<&BdbValue>) -> Category {
    match (beans, cstar) {
        (Some(_), None) => Category::MissingInCstar,
        (Some((flag, body)), Some(row)) => {
            if row.body != body {
                Category::ValueDiff
            } else if row.flag != flag {
                Category::FlagDiff
            } else {
                Category::Equal
            }
        }
        (None, Some(_)) => Category::ExtraInCstar,
        (None, None) => Category::Equal,
    }
}

/// Picks records with probability `prob` until `left` reaches 0.
struct Sampler {
    prob: f64,
    left: AtomicU64,
    rng: Mutex<u64>,
}

impl Sampler {
    fn new(n: u64, total: u64) -> Sampler {
        let prob = if total == 0 {
            1.0
        } else {
            (n as f64 / total as f64).min(1.0)
        };
        // Seeded from the clock: a sample should differ between runs.
        let seed = beansdb_cassandra::now_micros() as u64 | 1;
        Sampler {
            prob,
            left: AtomicU64::new(n),
            rng: Mutex::new(seed),
        }
    }

    fn exhausted(&self) -> bool {
        self.left.load(Ordering::Relaxed) == 0
    }

    /// xorshift64*: uniform enough for sampling, no dependency needed.
    fn pick(&self) -> bool {
        if self.exhausted() {
            return false;
        }
        let mut s = self.rng.lock();
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        let r = s.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((r >> 11) as f64 / (1u64 << 53) as f64) < self.prob
    }

    /// Takes one slot; false once N records were checked.
    fn take(&self) -> bool {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

#[derive(Default)]
struct Counters {
    scanned: Counter,
    checked: Counter,
    equal: Counter,
    value_diff: Counter,
    flag_diff: Counter,
    missing_in_cstar: Counter,
    extra_in_cstar: Counter,
    transient: Counter,
    errors: Counter,
    skips: Skips,
}

impl Counters {
    fn of(&self, c: Category) -> &Counter {
        match c {
            Category::Equal => &self.equal,
            Category::ValueDiff => &self.value_diff,
            Category::FlagDiff => &self.flag_diff,
            Category::MissingInCstar => &self.missing_in_cstar,
            Category::ExtraInCstar => &self.extra_in_cstar,
        }
    }

    fn differences(&self) -> u64 {
        self.value_diff.get()
            + self.flag_diff.get()
            + self.missing_in_cstar.get()
            + self.extra_in_cstar.get()
    }
}

struct Ctx {
    target: CstarTarget,
    pool: Arc<Pool>,
    reader: Reader,
    prefixes: Vec<String>,
    rate: RecordRate,
    sampler: Option<Sampler>,
    counters: Counters,
    samples: Mutex<BTreeMap<&'static str, Vec<String>>>,
    failures: Failures<KeyFailure>,
}

impl Ctx {
    fn sample(&self, category: &'static str, key: &[u8]) {
        let mut s = self.samples.lock();
        let list = s.entry(category).or_default();
        if list.len() < SAMPLES_PER_CATEGORY {
            list.push(key_text(key));
        }
    }

    fn fail(&self, key: &[u8], error: String) {
        self.counters.errors.inc();
        self.sample("errors", key);
        self.failures.report("verify", key, error);
    }

    /// Compares one record; `Err` is a record error.
    async fn check(&self, key: &[u8], beans: Option<(u32, &[u8])>) -> Result<(), String> {
        let store = self.target.store_for(key)?;
        let row = store.get(key).await.map_err(|e| e.to_string())?;
        let first = compare(beans, row.as_ref());
        let result = if first == Category::Equal {
            Ok(Category::Equal)
        } else {
            // A racing write may explain it: re-read both sides through their read paths.
            tokio::time::sleep(RECHECK_DELAY).await;
            let again = self.reader.stable_read(key).await?;
            let row = store.get(key).await.map_err(|e| e.to_string())?;
            let beans = match &again {
                BeansValue::Live { flag, value, .. } => Some((*flag, value.as_slice())),
                BeansValue::Tomb { .. } | BeansValue::Absent => None,
            };
            match compare(beans, row.as_ref()) {
                Category::Equal => Err(()),
                c => Ok(c),
            }
        };
        let c = &self.counters;
        c.checked.inc();
        match result {
            Ok(cat) => {
                c.of(cat).inc();
                if cat != Category::Equal {
                    self.sample(cat.name(), key);
                }
            }
            Err(()) => {
                c.transient.inc();
                self.sample("transient", key);
            }
        }
        Ok(())
    }
}

impl RecordSink for Ctx {
    async fn process(&self, source: &str, line: KeyLine) -> bool {
        if let Some(s) = &self.sampler {
            if !s.pick() {
                return true;
            }
        }
        let c = &self.counters;
        c.scanned.inc();
        let rec = match walk::fetch(&self.pool, source, line.khash).await {
            Ok(Some(r)) => r,
            Ok(None) => return true,
            Err(e) => {
                self.fail(
                    format!("@@{:016x}", line.khash).as_bytes(),
                    format!("{source}: {e}"),
                );
                return false;
            }
        };
        let selection = select(&self.prefixes, &self.target, &rec.key);
        if c.skips.count(selection) {
            return true;
        }
        if let Some(s) = &self.sampler {
            if !s.take() {
                return true;
            }
        }
        self.rate.acquire().await;
        let beans = (rec.ver > 0).then_some((rec.flag, rec.value.as_slice()));
        match self.check(&rec.key, beans).await {
            Ok(()) => true,
            Err(e) => {
                self.counters.checked.inc();
                self.fail(&rec.key, e);
                false
            }
        }
    }
}

/// Entry point of `beansctl verify`; returns the exit code.
pub fn run(args: VerifyArgs, g: &GlobalOpts) -> CliResult<u8> {
    crate::cli::block_on(run_async(args, g))
}

async fn run_async(args: VerifyArgs, g: &GlobalOpts) -> CliResult<u8> {
    let prefixes = normalize_prefixes(&args.prefixes)?;
    let resolved = cstar::resolve(&args.cstar, g)?;
    let route =
        crate::sync::routesrc::load_with(&args.route, g.connect_timeout, g.timeout, true).await?;
    let buckets = crate::sync::parse_buckets(&args.bucket, route.numbucket)?;
    let target = CstarTarget::open(&resolved, resolved.own_maps()).await?;
    let pool = Arc::new(Pool::new(&route, g.client_config()));

    let sampler = match args.sample {
        None => None,
        Some(n) => {
            // The denominator: live counts of the walked buckets' roots.
            let mut total = 0u64;
            for &b in &buckets {
                if let Ok(src) = walk::pick_source(&route, b, &pool).await {
                    let mut conn = pool.take(&src);
                    total += walk::root_count(&mut conn, &route, b).await.unwrap_or(0);
                    pool.put(conn);
                }
            }
            Some(Sampler::new(n, total))
        }
    };
    let ctx = Arc::new(Ctx {
        target,
        pool: pool.clone(),
        reader: Reader::new(route.clone(), pool.clone()),
        prefixes: prefixes.clone(),
        rate: RecordRate::new(args.rate),
        sampler,
        counters: Counters::default(),
        samples: Mutex::new(BTreeMap::new()),
        failures: Failures::default(),
    });

    let interrupt = Interrupt::install();
    let n = buckets.len();
    let progress = WalkProgress::start("verify", g, n, {
        let ctx = ctx.clone();
        move || {
            let c = &ctx.counters;
            let counts = format!(
                "scanned={} checked={} equal={} differences={} transient={} errors={}",
                c.scanned.get(),
                c.checked.get(),
                c.equal.get(),
                c.differences(),
                c.transient.get(),
                c.errors.get(),
            );
            (counts, c.checked.get())
        }
    });

    let mut unreachable = 0usize;
    for (i, &b) in buckets.iter().enumerate() {
        if interrupt.fired() || ctx.sampler.as_ref().is_some_and(Sampler::exhausted) {
            break;
        }
        progress.at_bucket(i);
        let end = walk::walk_bucket(
            &route,
            &pool,
            b,
            None,
            args.concurrency as usize,
            ctx.as_ref(),
            &interrupt,
            &progress.position,
            |_, _| {},
        )
        .await;
        if let BucketEnd::Failed(e) = end {
            if e.starts_with("no main") {
                unreachable += 1;
            }
            let hexid = route.bucket_hex(b);
            ctx.fail(format!("bucket {hexid}").as_bytes(), e);
        }
    }
    progress.finish();

    let c = &ctx.counters;
    let samples = ctx.samples.lock().clone();
    if g.json {
        let doc = json!({
            "checked": c.checked.get(),
            "equal": c.equal.get(),
            "value_diff": c.value_diff.get(),
            "flag_diff": c.flag_diff.get(),
            "missing_in_cstar": c.missing_in_cstar.get(),
            "extra_in_cstar": c.extra_in_cstar.get(),
            "transient": c.transient.get(),
            "errors": c.errors.get(),
            "samples": samples,
            "scanned": c.scanned.get(),
            "skipped_status": c.skips.status.get(),
            "invalid_key": c.skips.invalid_key.get(),
            "unmatched": c.skips.unmatched.get(),
            "failures": ctx.failures.snapshot(),
            "elapsed_s": (progress.start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            "interrupted": interrupt.fired(),
        });
        println!("{doc}");
    } else {
        println!(
            "verify prefixes={} buckets={n} mode={} checked={}",
            prefixes.join(","),
            match args.sample {
                Some(s) => format!("sample({s})"),
                None => "full".into(),
            },
            c.checked.get()
        );
        for (name, counter) in [
            ("equal", &c.equal),
            ("value_diff", &c.value_diff),
            ("flag_diff", &c.flag_diff),
            ("missing_in_cstar", &c.missing_in_cstar),
            ("extra_in_cstar", &c.extra_in_cstar),
            ("transient", &c.transient),
            ("errors", &c.errors),
        ] {
            println!("  {name:<18} {:>10}", counter.get());
        }
        for (name, keys) in &samples {
            println!("samples {name}: {}", keys.join(" "));
        }
    }
    Ok(if interrupt.fired() {
        exit::INTERRUPTED
    } else if unreachable > 0 {
        exit::RUNTIME
    } else if c.differences() > 0 || c.errors.get() > 0 {
        exit::FOUND
    } else {
        exit::OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(flag: u32, body: &[u8]) -> BdbValue {
        BdbValue {
            flag,
            body: body.to_vec(),
            ..BdbValue::default()
        }
    }

    #[test]
    fn categories() {
        let r = row(1, b"v");
        assert_eq!(compare(Some((1, b"v")), Some(&r)), Category::Equal);
        assert_eq!(compare(Some((1, b"w")), Some(&r)), Category::ValueDiff);
        assert_eq!(compare(Some((2, b"v")), Some(&r)), Category::FlagDiff);
        assert_eq!(compare(Some((1, b"v")), None), Category::MissingInCstar);
        assert_eq!(compare(None, Some(&r)), Category::ExtraInCstar);
        assert_eq!(compare(None, None), Category::Equal);
    }

    #[test]
    fn sampler_stops_at_n() {
        let s = Sampler::new(3, 0);
        assert!(s.pick());
        assert!(s.take() && s.take() && s.take());
        assert!(!s.take());
        assert!(s.exhausted() && !s.pick());
        let rare = Sampler::new(1, 1_000_000);
        let picked = (0..10_000).filter(|_| rare.pick()).count();
        assert!(picked < 100, "{picked}");
    }
}
