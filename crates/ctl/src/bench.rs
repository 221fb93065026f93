//! `beansctl bench`: open-loop load generator for the memcached text protocol (tools.md §5).
//!
//! Flow: check the target (loopback guard, one test connection), preload the key space,
//! then run `--warmup` + `--duration` of load: open loop (arrivals at `--rate`, latency from
//! the scheduled time, free of coordinated omission) or closed loop (`--rate 0`), and print
//! one report (text or `--json`).

mod conn;
mod report;
pub mod spec;
mod stats;
pub mod workload;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use beansdb_client::Client;
use clap::{Args, ValueEnum};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use self::conn::{Phase, PhaseKind, Shared, Source};
use self::spec::{CountRange, KeyDist, Mix, Op, ValueSize};
use self::stats::{Live, Stats};
use self::workload::{Keyspace, Rng, ValueKind, Values};
use crate::cli::{bad_option, GlobalOpts};
use crate::error::{exit, CliError, CliResult};
use crate::interrupt::Interrupt;
use crate::output::Progress;
use crate::units::{human_duration, parse_duration};

/// Longest `--duration` and `--warmup` (tools.md §5).
const MAX_RUN: Duration = Duration::from_secs(3600);
/// Requests in flight per connection while preloading.
const PRELOAD_WINDOW: usize = 16;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// memcached address of the node, proxy or memcached under test
    #[arg(long, default_value = "127.0.0.1:7905", value_name = "HOST:PORT")]
    pub target: String,
    /// Connections (each with up to --pipeline requests in flight)
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,
    /// Total arrival rate in requests/s; 0 = closed loop (send on reply)
    #[arg(long, default_value_t = 10_000, value_name = "REQ_PER_S")]
    pub rate: u64,
    /// Measured run time after the warmup (at most 1h)
    #[arg(long, default_value = "10s", value_parser = parse_run_duration, value_name = "DUR")]
    pub duration: Duration,
    /// Stop after this many measured requests (whichever of this and --duration comes first)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub requests: Option<u64>,
    /// Load before measuring; requests completing in it are not recorded
    #[arg(long, default_value = "1s", value_parser = parse_warmup, value_name = "DUR")]
    pub warmup: Duration,
    /// Number of distinct keys
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000_000))]
    pub keys: u64,
    /// Key prefix; keys are <prefix><n>, n zero-padded
    #[arg(long, default_value = "bench:", value_name = "P")]
    pub key_prefix: String,
    /// Key popularity: uniform or zipf:S
    #[arg(long, default_value = "uniform", value_name = "uniform|zipf:S")]
    pub key_dist: KeyDist,
    /// Value size: N, MIN..MAX or N1:W1,N2:W2,… (K/M suffixes)
    #[arg(long, default_value = "100", value_name = "SPEC")]
    pub value_size: ValueSize,
    /// Value bytes: random (incompressible) or text (compressible)
    #[arg(long, value_enum, default_value_t = ValueKind::Random)]
    pub value_kind: ValueKind,
    /// Operation weights
    #[arg(long, default_value = "get:80,set:15,getm:5", value_name = "OP:W,…")]
    pub mix: Mix,
    /// Keys per multi-get: N or MIN..MAX (distinct keys)
    #[arg(long, default_value = "10", value_name = "N|MIN..MAX")]
    pub getm_keys: CountRange,
    /// Requests in flight per connection (in-order pipelining)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub pipeline: u32,
    /// Spacing of open-loop arrivals
    #[arg(long, value_enum, default_value_t = Arrival::Uniform)]
    pub arrival: Arrival,
    /// Do not set every key before measuring
    #[arg(long)]
    pub no_preload: bool,
    /// Prefix values with <key>:<len>: and check them on reads (failures count as corrupt)
    #[arg(long)]
    pub verify: bool,
    /// Seed of keys, values and arrivals (default: random)
    #[arg(long)]
    pub seed: Option<u64>,
    /// Allow a target that is not a loopback address
    #[arg(long)]
    pub allow_remote: bool,
    /// Exit 1 when errors + timeouts + corrupt > 0
    #[arg(long)]
    pub fail_if_errors: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Arrival {
    Uniform,
    Poisson,
}

impl Arrival {
    fn name(self) -> &'static str {
        match self {
            Arrival::Uniform => "uniform",
            Arrival::Poisson => "poisson",
        }
    }
}

fn parse_run_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be greater than 0".into());
    }
    if d > MAX_RUN {
        return Err("must be at most 1h".into());
    }
    Ok(d)
}

fn parse_warmup(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > MAX_RUN {
        return Err("must be at most 1h".into());
    }
    Ok(d)
}

/// Checks that need several options together.
fn validate(a: &BenchArgs) -> CliResult<()> {
    let ks = Keyspace::new(&a.key_prefix, a.keys, a.key_dist);
    let sample = ks.key(a.keys - 1);
    if a.key_prefix.is_empty() && sample.is_empty() {
        return Err(bad_option("--key-prefix", "keys would be empty"));
    }
    if !beansdb_protocol::is_valid_write_key(&sample) {
        return Err(bad_option(
            "--key-prefix",
            format!(
                "key {:?} is not a valid beansdb key (at most 250 bytes, printable, no spaces, \
                 not starting with ? or @)",
                String::from_utf8_lossy(&sample)
            ),
        ));
    }
    if a.mix.weight(Op::Getm) > 0 && u64::from(a.getm_keys.min) > a.keys {
        return Err(bad_option(
            "--getm-keys",
            format!(
                "{} distinct keys per getm but only {} keys",
                a.getm_keys.min, a.keys
            ),
        ));
    }
    Ok(())
}

/// Entry point of `beansctl bench`; returns the exit code.
pub fn run(args: BenchArgs, g: &GlobalOpts) -> CliResult<u8> {
    validate(&args)?;
    crate::cli::block_on(run_async(args, g))
}

async fn run_async(args: BenchArgs, g: &GlobalOpts) -> CliResult<u8> {
    let addrs = crate::target::resolve_target(&args.target, args.allow_remote).await?;
    let client_cfg = g.client_config();
    // One connection up front turns an unreachable target into exit 3 instead of a report
    // full of connection errors; it also picks the address all connections use.
    let mut first_err = None;
    let mut addr = None;
    for a in &addrs {
        match Client::connect_addr(*a, client_cfg.clone()).await {
            Ok(_) => {
                addr = Some(*a);
                break;
            }
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    let Some(addr) = addr else {
        // The client's "cannot connect to ADDR" would repeat the headline: keep its cause.
        let e = match first_err {
            Some(beansdb_client::Error::Connect { source, .. }) => anyhow::Error::new(source),
            Some(other) => anyhow::Error::new(other),
            None => anyhow::anyhow!("no address"),
        };
        return Err(CliError::runtime(
            e.context(format!("cannot connect to target {}", args.target)),
        )
        .with_hint("is the server running and listening on that port?"));
    };

    let seed = args.seed.unwrap_or_else(random_seed);
    let interrupt = Interrupt::install();
    let nshards = (args.connections as usize).clamp(1, 16);
    let sh = Arc::new(Shared {
        addr,
        client: client_cfg,
        keyspace: Keyspace::new(&args.key_prefix, args.keys, args.key_dist),
        values: Values::new(args.value_size.clone(), args.value_kind, args.verify, seed),
        mix: args.mix.clone(),
        getm: args.getm_keys,
        seed,
        shards: (0..nshards).map(|_| Mutex::new(Stats::default())).collect(),
        live: Live::default(),
        preload_ok: AtomicU64::new(0),
        preload_errors: AtomicU64::new(0),
        interrupt: interrupt.clone(),
    });
    let progress = Progress::new("bench", g);
    let started_at = chrono::Utc::now();

    let preload = if args.mix.reads() && !args.no_preload {
        let t = Instant::now();
        run_preload(&sh, &args, g, &progress).await;
        let ok = Live::get(&sh.preload_ok);
        let errors = Live::get(&sh.preload_errors);
        if errors > 0 {
            progress.warn(&format!("preload: {errors} of {} sets failed", args.keys));
        }
        Some(report::Preload {
            keys: args.keys,
            ok,
            errors,
            duration: t.elapsed(),
        })
    } else {
        None
    };

    let measured = if interrupt.fired() {
        None
    } else {
        Some(run_measure(&sh, &args, g, &progress).await)
    };
    progress.finish();

    let mut total = Stats::default();
    for s in &sh.shards {
        total.merge(&s.lock());
    }
    let rep = report::Report {
        args: &args,
        seed,
        started_at,
        elapsed: measured.unwrap_or(Duration::ZERO),
        stats: total,
        dropped: Live::get(&sh.live.dropped),
        preload,
        interrupted: interrupt.fired(),
    };
    if g.json {
        println!("{}", rep.json());
    } else {
        print!("{}", rep.text());
    }
    if rep.interrupted {
        return Ok(exit::INTERRUPTED);
    }
    let e = &rep.stats.errors;
    if args.fail_if_errors && e.failed() + e.timeout + e.corrupt > 0 {
        return Ok(exit::FOUND);
    }
    Ok(exit::OK)
}

fn random_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // Hashed so that close timestamps give unrelated seeds.
    Rng::new(t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)).next_u64()
}

/// Arms the abort signal at `deadline`, or `grace` after an interrupt, whichever is first.
fn arm_abort(
    tx: watch::Sender<bool>,
    deadline: Option<Instant>,
    grace: Duration,
    interrupt: Interrupt,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let at_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = at_deadline => {}
            _ = async { interrupt.wait().await; tokio::time::sleep(grace).await } => {}
        }
        let _ = tx.send(true);
    })
}

async fn run_preload(sh: &Arc<Shared>, args: &BenchArgs, g: &GlobalOpts, progress: &Progress) {
    let (abort_tx, abort_rx) = watch::channel(false);
    let ph = Arc::new(Phase {
        kind: PhaseKind::Preload,
        abort: abort_rx,
        sent_measured: AtomicU64::new(0),
    });
    let abort = arm_abort(
        abort_tx,
        None,
        g.timeout + Duration::from_secs(1),
        sh.interrupt.clone(),
    );
    let conns = u64::from(args.connections).min(args.keys);
    let mut set = JoinSet::new();
    for i in 0..conns {
        let source = Source::Preload {
            next: i,
            step: conns,
        };
        set.spawn(conn::run_connection(
            sh.clone(),
            ph.clone(),
            i as usize,
            source,
            PRELOAD_WINDOW,
        ));
    }
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            r = set.join_next() => if r.is_none() { break },
            _ = tick.tick() => {
                let done = Live::get(&sh.live.preloaded);
                progress.update(done, args.keys, &format!("preload {done}/{} keys", args.keys));
            }
        }
    }
    abort.abort();
}

/// The measured phase; returns the measured time (warmup end to last completion).
async fn run_measure(
    sh: &Arc<Shared>,
    args: &BenchArgs,
    g: &GlobalOpts,
    progress: &Progress,
) -> Duration {
    let t0 = Instant::now();
    let measure_start = t0 + args.warmup;
    let end = measure_start + args.duration;
    let (abort_tx, abort_rx) = watch::channel(false);
    let ph = Arc::new(Phase {
        kind: PhaseKind::Measure {
            measure_start,
            end,
            budget: args.requests,
        },
        abort: abort_rx,
        sent_measured: AtomicU64::new(0),
    });
    // In-flight requests get one timeout after the end; then the run is cut.
    let grace = g.timeout + Duration::from_secs(1);
    let abort = arm_abort(abort_tx, Some(end + grace), grace, sh.interrupt.clone());
    let conns = args.connections as usize;
    let window = args.pipeline as usize;
    let mut set = JoinSet::new();
    let mut senders = Vec::new();
    for i in 0..conns {
        let source = if args.rate == 0 {
            Source::Closed
        } else {
            let (tx, rx) = mpsc::channel(conn::QUEUE_LIMIT);
            senders.push(tx);
            Source::Open(rx)
        };
        set.spawn(conn::run_connection(
            sh.clone(),
            ph.clone(),
            i,
            source,
            window,
        ));
    }
    if args.rate > 0 {
        let sh2 = sh.clone();
        let rate = args.rate as f64;
        let poisson = args.arrival == Arrival::Poisson;
        let budget = args.requests;
        let rng = Rng::derive(sh.seed, u64::MAX - 1);
        tokio::task::spawn_blocking(move || {
            conn::dispatch(
                senders,
                t0,
                measure_start,
                end,
                budget,
                rate,
                poisson,
                rng,
                &sh2,
            )
        });
    }
    let total = args.warmup + args.duration;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last = (Instant::now(), 0u64);
    let mut shown_rate = 0.0;
    loop {
        tokio::select! {
            r = set.join_next() => if r.is_none() { break },
            _ = tick.tick() => {
                let now = Instant::now();
                let done = Live::get(&sh.live.requests);
                let dt = now.duration_since(last.0).as_secs_f64();
                if dt >= 1.0 {
                    shown_rate = (done - last.1) as f64 / dt;
                    last = (now, done);
                }
                let msg = if now < measure_start {
                    "warmup".to_string()
                } else {
                    format!(
                        "requests {done}  rate {shown_rate:.0}/s  errors {}  dropped {}",
                        Live::get(&sh.live.errors),
                        Live::get(&sh.live.dropped)
                    )
                };
                let (pos, len) = match args.requests {
                    Some(b) => (done, b),
                    None => (
                        now.duration_since(t0).as_millis() as u64,
                        total.as_millis() as u64,
                    ),
                };
                progress.update(pos, len, &msg);
            }
        }
    }
    abort.abort();
    Instant::now().saturating_duration_since(measure_start)
}

/// Human text of the run shape, shared by the report and tests.
pub fn describe_rate(args: &BenchArgs) -> String {
    if args.rate == 0 {
        format!("rate closed-loop (pipeline {})", args.pipeline)
    } else {
        let mut s = format!("rate {}/s open-loop ({})", args.rate, args.arrival.name());
        if args.pipeline > 1 {
            s.push_str(&format!(" pipeline {}", args.pipeline));
        }
        s
    }
}

fn describe_time(args: &BenchArgs) -> String {
    let mut s = human_duration(args.duration);
    if !args.warmup.is_zero() {
        s.push_str(&format!(" (+{} warmup)", human_duration(args.warmup)));
    }
    if let Some(n) = args.requests {
        s.push_str(&format!(" max {n} requests"));
    }
    s
}
