//! `beansctl replay`: re-issue the requests of an access log against a node or proxy
//! (tools.md §4).
//!
//! A reader thread parses the log(s); the dispatcher classifies each line (replay, or skip by
//! reason), computes its scheduled time (original gaps / `--speed`, even spacing at `--rate`,
//! or none with `--max`) and hands it to one of `--connections` connections, each with one
//! request outstanding. Latency runs from the scheduled time to the end of the reply (open
//! loop), so a slow server shows as latency instead of a slower replay.
//!
//! Exit codes: 0 = done (server errors are results); 1 = `--strict` and an unparsable line;
//! 2 = usage or loopback refusal; 3 = target unreachable at start; 130 = interrupted.

pub(crate) mod log;
mod stats;
mod watch;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use beansdb_client::{Client, ClientConfig, ReplyKind, Request, Response};
use clap::{Args, ValueEnum};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use self::log::{filler, open_input, parse_line, parse_time_arg, read_line, LogLine};
use self::stats::{Header, Stats};
use crate::cli::{bad_option, GlobalOpts};
use crate::error::{exit, CliError, CliResult};
use crate::interrupt::Interrupt;
use crate::output::Progress;
use crate::units::parse_duration;

/// Schedule offsets are capped here so absurd `--speed`/`--rate` values cannot overflow the
/// clock arithmetic (the run is bounded long before).
const MAX_OFFSET: Duration = Duration::from_secs(10 * 366 * 86400);

/// Commands that are replayed by default (idempotent reads).
const READS: [&str; 4] = ["GET", "GETS", "GETM", "GETSM"];
/// Commands replayed only with `--allow-writes`.
const WRITES: [&str; 5] = ["SET", "ADD", "REPLACE", "CAS", "DELETE"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Affinity {
    /// Any free connection
    None,
    /// Connection hash(remote) mod N, keeping each client's order
    Client,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// memcached address of the node or proxy to replay against
    #[arg(long, value_name = "HOST:PORT")]
    pub target: String,
    /// Access logs (V1 lines), `-` for stdin, `.gz` read transparently; replayed in order
    #[arg(required = true, value_name = "LOG")]
    pub logs: Vec<String>,
    /// Keep the original gaps divided by F
    #[arg(long, value_name = "F", conflicts_with_all = ["rate", "max"])]
    pub speed: Option<f64>,
    /// Ignore timestamps: R requests/s evenly spaced
    #[arg(long, value_name = "R", conflicts_with = "max")]
    pub rate: Option<f64>,
    /// Closed loop: each connection sends its next request when the reply arrives
    #[arg(long)]
    pub max: bool,
    /// Connections, one request outstanding each
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,
    /// Which connection a request uses
    #[arg(long, value_enum, default_value_t = Affinity::None)]
    pub affinity: Affinity,
    /// Skip lines logged before this time (local, e.g. "2024/05/01 12:00:00")
    #[arg(long, value_parser = parse_time_arg, value_name = "TIME")]
    pub from: Option<i64>,
    /// Skip lines logged after this time
    #[arg(long, value_parser = parse_time_arg, value_name = "TIME")]
    pub to: Option<i64>,
    /// Only these commands (get,gets,getm,getsm; with --allow-writes also set,add,replace,cas,delete)
    #[arg(long, value_delimiter = ',', value_name = "CMD,..")]
    pub cmd: Vec<String>,
    /// Only keys starting with P (other keys of a multi-get are dropped)
    #[arg(long, value_name = "P")]
    pub key_prefix: Option<String>,
    /// Stop after N replayed requests
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Stop after this long
    #[arg(long, value_parser = parse_positive, value_name = "DUR")]
    pub duration: Option<Duration>,
    /// Restart the input when it ends, shifted forward in time (needs --duration)
    #[arg(long = "loop", requires = "duration")]
    pub loop_input: bool,
    /// Also replay keys starting with @ or ? (admin listings and meta)
    #[arg(long)]
    pub include_special: bool,
    /// Replay SET/ADD/REPLACE/CAS as `set` with random bytes of the logged size, DELETE as `delete`
    #[arg(long)]
    pub allow_writes: bool,
    /// Allow a target that is not a loopback address
    #[arg(long)]
    pub allow_remote: bool,
    /// Sample this web URL's buffers and RSS during the run (repeatable)
    #[arg(long, value_name = "URL")]
    pub watch: Vec<String>,
    /// Sampling interval of --watch
    #[arg(long, default_value = "1s", value_parser = parse_positive, value_name = "DUR")]
    pub watch_interval: Duration,
    /// An unparsable line stops the replay (exit 1)
    #[arg(long)]
    pub strict: bool,
}

fn parse_positive(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be greater than 0".into());
    }
    Ok(d)
}

#[derive(Debug, Clone, Copy)]
enum Pacing {
    Speed(f64),
    Rate(f64),
    Max,
}

impl Pacing {
    fn text(self) -> String {
        match self {
            Pacing::Speed(f) => format!("speed {f:.1}x"),
            Pacing::Rate(r) => format!("rate {r}/s"),
            Pacing::Max => "max (closed loop)".into(),
        }
    }

    fn json(self) -> serde_json::Value {
        match self {
            Pacing::Speed(f) => json!({"pacing": "speed", "speed": f}),
            Pacing::Rate(r) => json!({"pacing": "rate", "rate": r}),
            Pacing::Max => json!({"pacing": "max"}),
        }
    }
}

/// One request for a connection.
struct Job {
    cmd: String,
    bytes: Vec<u8>,
    reply: ReplyKind,
    /// None with `--max`.
    scheduled: Option<Instant>,
    read: bool,
}

/// What the reader thread sends.
enum Msg {
    Line {
        parsed: Result<LogLine, String>,
        input: usize,
        lineno: u64,
    },
    /// The input starts again (`--loop`).
    Restart,
    ReadError(String),
}

fn validate(a: &ReplayArgs) -> CliResult<Pacing> {
    if a.logs.iter().filter(|l| *l == "-").count() > 1 {
        return Err(bad_option("LOG", "stdin (-) can be given once"));
    }
    if a.loop_input && a.logs.iter().any(|l| l == "-") {
        return Err(bad_option("--loop", "cannot restart stdin; pass files"));
    }
    let known: Vec<String> = READS
        .iter()
        .chain(WRITES.iter())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    for c in &a.cmd {
        if !known.contains(&c.to_ascii_lowercase()) {
            return Err(bad_option(
                "--cmd",
                format!("unknown command {c:?} (use {})", known.join(",")),
            ));
        }
    }
    for w in &a.watch {
        crate::gc::http::parse_url(w).map_err(|e| bad_option("--watch", format!("{e:#}")))?;
    }
    if let (Some(f), Some(t)) = (a.from, a.to) {
        if f > t {
            return Err(bad_option("--from", "is after --to"));
        }
    }
    Ok(match (a.speed, a.rate, a.max) {
        (_, _, true) => Pacing::Max,
        (_, Some(r), _) if r > 0.0 && r.is_finite() => Pacing::Rate(r),
        (_, Some(_), _) => return Err(bad_option("--rate", "must be greater than 0")),
        (Some(f), _, _) if f > 0.0 && f.is_finite() => Pacing::Speed(f),
        (Some(_), _, _) => return Err(bad_option("--speed", "must be greater than 0")),
        _ => Pacing::Speed(1.0),
    })
}

/// Entry point of `beansctl replay`.
pub fn run(args: ReplayArgs, g: &GlobalOpts) -> CliResult<u8> {
    let pacing = validate(&args)?;
    // Unreadable inputs are found before anything is sent.
    for l in args.logs.iter().filter(|l| *l != "-") {
        std::fs::File::open(l).map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                exit::USAGE
            } else {
                exit::RUNTIME
            };
            CliError::new(
                code,
                anyhow::Error::new(e).context(format!("cannot open {l}")),
            )
        })?;
    }
    crate::cli::block_on(run_async(args, pacing, g))
}

async fn first_connection(
    addrs: &[SocketAddr],
    cfg: &ClientConfig,
    target: &str,
) -> CliResult<SocketAddr> {
    let mut last = None;
    for a in addrs {
        match Client::connect_addr(*a, cfg.clone()).await {
            Ok(_) => return Ok(*a),
            Err(e) => last = Some(e),
        }
    }
    let e = match last {
        Some(beansdb_client::Error::Connect { source, .. }) => anyhow::Error::new(source),
        Some(other) => anyhow::Error::new(other),
        None => anyhow!("no address"),
    };
    Err(
        CliError::runtime(e.context(format!("cannot connect to {target}")))
            .with_hint("is the node or proxy running?"),
    )
}

/// Reads every input in order (again and again with `--loop`) on a plain thread.
fn spawn_reader(
    logs: Vec<String>,
    looping: bool,
    tx: mpsc::Sender<Msg>,
    bytes_read: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        loop {
            for (i, name) in logs.iter().enumerate() {
                let mut r = match open_input(name) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ =
                            tx.blocking_send(Msg::ReadError(format!("cannot open {name}: {e}")));
                        return;
                    }
                };
                let mut lineno = 0u64;
                loop {
                    match read_line(&mut *r, &mut buf) {
                        Ok(false) => break,
                        Ok(true) => {
                            lineno += 1;
                            bytes_read.fetch_add(buf.len() as u64 + 1, Ordering::Relaxed);
                            if buf.iter().all(|b| b.is_ascii_whitespace()) {
                                continue;
                            }
                            let msg = Msg::Line {
                                parsed: parse_line(&buf),
                                input: i,
                                lineno,
                            };
                            if tx.blocking_send(msg).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.blocking_send(Msg::ReadError(format!(
                                "cannot read {name} after line {lineno}: {e}"
                            )));
                            return;
                        }
                    }
                }
            }
            if !looping || tx.blocking_send(Msg::Restart).is_err() {
                return;
            }
        }
    })
}

/// Where the jobs of one connection come from.
enum Source {
    Shared(Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>),
    Own(mpsc::Receiver<Job>),
}

impl Source {
    async fn recv(&mut self) -> Option<Job> {
        match self {
            Source::Shared(rx) => rx.lock().await.recv().await,
            Source::Own(rx) => rx.recv().await,
        }
    }
}

async fn worker(mut src: Source, addr: SocketAddr, cfg: ClientConfig, stats: Arc<Mutex<Stats>>) {
    let mut client: Option<Client> = None;
    while let Some(job) = src.recv().await {
        if let Some(at) = job.scheduled {
            tokio::time::sleep_until(at).await;
        }
        let sent = Instant::now();
        if client.is_none() {
            client = Client::connect_addr(addr, cfg.clone()).await.ok();
        }
        let result = match client.as_mut() {
            Some(c) => c
                .request(&Request::Raw {
                    bytes: &job.bytes,
                    reply: Some(job.reply),
                })
                .await
                .map_err(Some),
            None => Err(None),
        };
        let done = Instant::now();
        let latency = done - job.scheduled.unwrap_or(sent);
        let mut st = stats.lock();
        st.completed += 1;
        if let Some(at) = job.scheduled {
            let lag = sent.saturating_duration_since(at);
            if lag > Duration::from_millis(1) {
                st.late += 1;
            }
            st.max_lag = st.max_lag.max(lag);
        }
        let mut received = 0u64;
        let c = st.cmd(&job.cmd);
        c.record(latency);
        match result {
            Ok(Some(Response::Error { kind, .. })) => {
                let k = match kind {
                    beansdb_protocol::ErrorKind::Server => "server_error",
                    beansdb_protocol::ErrorKind::Client => "client_error",
                    beansdb_protocol::ErrorKind::Error => "error",
                };
                *c.errors.entry(k.into()).or_insert(0) += 1;
            }
            Ok(Some(Response::Values(vals))) => {
                c.ok += 1;
                if job.read {
                    c.hits += vals.len() as u64;
                    received = vals.iter().map(|v| v.data.len() as u64).sum();
                }
            }
            Ok(_) => c.ok += 1,
            Err(Some(e)) if e.is_timeout() => {
                c.timeouts += 1;
                client = None;
            }
            Err(e) => {
                let k = match &e {
                    Some(e) if e.is_connection() => "connection",
                    None => "connection",
                    Some(_) => "protocol",
                };
                *c.errors.entry(k.into()).or_insert(0) += 1;
                // The stream may be out of step: reconnect for the next request.
                client = None;
            }
        }
        st.bytes_received += received;
    }
}

/// Why a line is not replayed, or the request it becomes.
enum Decision {
    Skip(&'static str),
    Send {
        bytes: Vec<u8>,
        reply: ReplyKind,
        read: bool,
        keys: Vec<Vec<u8>>,
    },
}

fn decide(a: &ReplayArgs, l: &LogLine, seed: &mut u64) -> Decision {
    let read = READS.contains(&l.cmd.as_str());
    let write = WRITES.contains(&l.cmd.as_str());
    if read && l.keys.is_empty() {
        return Decision::Skip("unparsable");
    }
    if write && !a.allow_writes {
        return Decision::Skip("write");
    }
    if !read && !write {
        return Decision::Skip("unsupported");
    }
    if !a.cmd.is_empty() && !a.cmd.iter().any(|c| c.eq_ignore_ascii_case(&l.cmd)) {
        return Decision::Skip("filtered");
    }
    if let Some(t) = l.time_us {
        if a.from.is_some_and(|f| t < f) || a.to.is_some_and(|to| t > to) {
            return Decision::Skip("filtered");
        }
    }
    let mut keys = l.keys.clone();
    if let Some(p) = &a.key_prefix {
        keys.retain(|k| k.starts_with(p.as_bytes()));
        if keys.is_empty() {
            return Decision::Skip("filtered");
        }
    }
    if !a.include_special
        && keys
            .iter()
            .any(|k| k.starts_with(b"@") || k.starts_with(b"?"))
    {
        return Decision::Skip("special");
    }
    if read {
        let verb: &[u8] = if l.cmd.starts_with("GETS") {
            b"gets"
        } else {
            b"get"
        };
        let mut bytes = verb.to_vec();
        for k in &keys {
            bytes.push(b' ');
            bytes.extend_from_slice(k);
        }
        bytes.extend_from_slice(b"\r\n");
        return Decision::Send {
            bytes,
            reply: ReplyKind::Retrieval,
            read: true,
            keys,
        };
    }
    if keys.len() != 1 {
        return Decision::Skip("unparsable");
    }
    let key = &keys[0];
    let (bytes, reply) = if l.cmd == "DELETE" {
        let mut b = b"delete ".to_vec();
        b.extend_from_slice(key);
        b.extend_from_slice(b"\r\n");
        (b, ReplyKind::Delete)
    } else {
        let size = l.sizes.first().copied().unwrap_or(0) as usize;
        let mut b = b"set ".to_vec();
        b.extend_from_slice(key);
        b.extend_from_slice(format!(" 0 0 {size}\r\n").as_bytes());
        b.extend_from_slice(&filler(size, seed));
        b.extend_from_slice(b"\r\n");
        (b, ReplyKind::Storage)
    };
    Decision::Send {
        bytes,
        reply,
        read: false,
        keys,
    }
}

async fn run_async(a: ReplayArgs, pacing: Pacing, g: &GlobalOpts) -> CliResult<u8> {
    let addrs = crate::target::resolve_target(&a.target, a.allow_remote).await?;
    let cfg = g.client_config();
    let addr = first_connection(&addrs, &cfg, &a.target).await?;
    let intr = Interrupt::install();
    let watchers = (!a.watch.is_empty()).then(|| {
        watch::Watchers::start(
            &a.watch,
            a.watch_interval,
            g.connect_timeout,
            g.timeout,
            !g.quiet,
        )
    });

    let stats = Arc::new(Mutex::new(Stats::new()));
    let n = a.connections as usize;
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    match a.affinity {
        Affinity::None => {
            let (tx, rx) = mpsc::channel::<Job>(n);
            let shared = Arc::new(tokio::sync::Mutex::new(rx));
            for _ in 0..n {
                workers.push(tokio::spawn(worker(
                    Source::Shared(shared.clone()),
                    addr,
                    cfg.clone(),
                    stats.clone(),
                )));
            }
            senders.push(tx);
        }
        Affinity::Client => {
            for _ in 0..n {
                let (tx, rx) = mpsc::channel::<Job>(64);
                workers.push(tokio::spawn(worker(
                    Source::Own(rx),
                    addr,
                    cfg.clone(),
                    stats.clone(),
                )));
                senders.push(tx);
            }
        }
    }

    let total_bytes: u64 = a
        .logs
        .iter()
        .filter(|l| *l != "-" && !l.ends_with(".gz"))
        .filter_map(|l| std::fs::metadata(l).ok().map(|m| m.len()))
        .sum();
    let bytes_read = Arc::new(AtomicU64::new(0));
    let (ltx, mut lrx) = mpsc::channel::<Msg>(1024);
    let reader = spawn_reader(a.logs.clone(), a.loop_input, ltx, bytes_read.clone());
    let progress = Progress::new("replay", g);

    let t0 = Instant::now();
    let deadline = a.duration.map(|d| t0 + d);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    // Timeline: the replay offset of the first replayed line of the current pass, and the
    // log time it corresponds to.
    let mut pass_offset = Duration::ZERO;
    let mut origin: Option<i64> = None;
    let mut prev_start: Option<i64> = None;
    let mut last_rel = Duration::ZERO;
    let mut replayed = 0u64;
    let mut strict_error: Option<String> = None;
    let mut read_error: Option<String> = None;
    let mut last_progress = std::time::Instant::now();

    'lines: while let Some(msg) = tokio::select! {
        m = lrx.recv() => m,
        _ = intr.wait() => None,
        _ = sleep_until_opt(deadline) => None,
    } {
        let (parsed, input, lineno) = match msg {
            Msg::Restart => {
                // The next pass continues right after the last scheduled request.
                pass_offset = last_rel;
                origin = None;
                prev_start = None;
                continue;
            }
            Msg::ReadError(e) => {
                read_error = Some(e);
                break;
            }
            Msg::Line {
                parsed,
                input,
                lineno,
            } => (parsed, input, lineno),
        };
        let l = {
            let mut st = stats.lock();
            st.lines += 1;
            match parsed {
                Err(reason) => {
                    st.skip("unparsable");
                    if a.strict {
                        strict_error = Some(format!(
                            "{}:{lineno}: unparsable line: {reason}",
                            a.logs[input]
                        ));
                        break 'lines;
                    }
                    continue;
                }
                Ok(l) => {
                    st.cmd(&l.cmd).log += 1;
                    if l.cmd.starts_with("GETM") || l.cmd == "GETSM" {
                        *st.getm_log.entry(l.keys.len()).or_insert(0) += 1;
                    }
                    l
                }
            }
        };
        let (bytes, reply, read, keys) = match decide(&a, &l, &mut seed) {
            Decision::Skip(reason) => {
                stats.lock().skip(reason);
                continue;
            }
            Decision::Send {
                bytes,
                reply,
                read,
                keys,
            } => (bytes, reply, read, keys),
        };
        // Schedule (tools.md §4.3): timestamps clamped to be non-decreasing.
        let rel = match pacing {
            Pacing::Max => None,
            Pacing::Rate(r) => Some(
                Duration::try_from_secs_f64(replayed as f64 / r)
                    .unwrap_or(MAX_OFFSET)
                    .min(MAX_OFFSET),
            ),
            Pacing::Speed(f) => {
                let start = match (l.start_us(), prev_start) {
                    (Some(s), Some(p)) => s.max(p),
                    (Some(s), None) => s,
                    (None, Some(p)) => p,
                    (None, None) => 0,
                };
                prev_start = Some(start);
                let o = *origin.get_or_insert(start);
                let gap_us = (start - o).max(0) as f64 / f;
                Some(
                    pass_offset
                        .saturating_add(Duration::from_micros(gap_us as u64))
                        .min(MAX_OFFSET),
                )
            }
        };
        if let Some(r) = rel {
            last_rel = r;
        }
        let scheduled = rel.map(|r| t0 + r);
        if let Some(at) = scheduled {
            if deadline.is_some_and(|d| at >= d) {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = intr.wait() => break,
            }
        }
        {
            let mut st = stats.lock();
            st.replayed += 1;
            let c = st.cmd(&l.cmd);
            c.replayed += 1;
            if read {
                c.keys += keys.len() as u64;
                let (log_hits, log_bytes) = if l.cmd.starts_with("GETM") || l.cmd == "GETSM" {
                    (
                        l.sizes.iter().filter(|s| **s > 0).count() as u64,
                        l.sizes.iter().sum::<u64>(),
                    )
                } else {
                    let s = l.sizes.first().copied().unwrap_or(0);
                    (u64::from(s > 0), s)
                };
                c.log_keys += l.keys.len() as u64;
                c.log_hits += log_hits;
                st.log_bytes += log_bytes;
                if l.cmd.starts_with("GETM") || l.cmd == "GETSM" {
                    *st.getm_replayed.entry(keys.len()).or_insert(0) += 1;
                }
            }
        }
        let job = Job {
            cmd: l.cmd.clone(),
            bytes,
            reply,
            scheduled,
            read,
        };
        let tx = match a.affinity {
            Affinity::None => &senders[0],
            Affinity::Client => {
                let h = beansdb_hash::fnv1a(&l.remote) as usize;
                &senders[h % senders.len()]
            }
        };
        let sent = tokio::select! {
            r = tx.send(job) => r.is_ok(),
            _ = intr.wait() => false,
            _ = sleep_until_opt(deadline) => false,
        };
        if !sent {
            break;
        }
        replayed += 1;
        if last_progress.elapsed() >= Duration::from_millis(200) {
            last_progress = std::time::Instant::now();
            let (pos, len) = match (a.limit, a.duration) {
                (Some(n), _) => (replayed, n),
                (None, Some(d)) => (t0.elapsed().as_millis() as u64, d.as_millis() as u64),
                _ => (bytes_read.load(Ordering::Relaxed), total_bytes.max(1)),
            };
            let st = stats.lock();
            progress.update(
                pos,
                len,
                &format!(
                    "lines {} replayed {} skipped {} done {} rate {:.0}/s",
                    st.lines,
                    st.replayed,
                    st.skipped_total(),
                    st.completed,
                    st.completed as f64 / t0.elapsed().as_secs_f64().max(1e-3)
                ),
            );
        }
        if a.limit.is_some_and(|lim| replayed >= lim) {
            break;
        }
    }
    // Closing the channels lets every worker finish its in-flight request and exit.
    drop(lrx);
    drop(senders);
    for w in workers {
        let _ = w.await;
    }
    let elapsed = t0.elapsed();
    progress.finish();
    // The reader stops at its next send now that the channel is closed.
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    let watch = watchers.map(watch::Watchers::finish).unwrap_or_default();

    let code = if intr.fired() {
        exit::INTERRUPTED
    } else if strict_error.is_some() {
        exit::FOUND
    } else if read_error.is_some() {
        exit::RUNTIME
    } else {
        exit::OK
    };
    let header = Header {
        target: &a.target,
        inputs: &a.logs,
        mode_text: pacing.text(),
        mode: {
            let mut m = pacing.json();
            m["affinity"] = json!(format!("{:?}", a.affinity).to_ascii_lowercase());
            m["allow_writes"] = json!(a.allow_writes);
            m["include_special"] = json!(a.include_special);
            m["loop"] = json!(a.loop_input);
            m["strict"] = json!(a.strict);
            m["cmd"] = json!(a.cmd);
            m["limit"] = json!(a.limit);
            m["duration_s"] = json!(a.duration.map(|d| d.as_secs_f64()));
            m
        },
        connections: a.connections,
        elapsed,
    };
    {
        let st = stats.lock();
        if g.json {
            println!("{}", stats::json(&header, &st, &watch, code));
        } else {
            print!("{}", stats::text(&header, &st, &watch));
        }
    }
    if let Some(e) = strict_error {
        eprintln!("error: {e}");
        eprintln!("hint: without --strict unparsable lines are counted and skipped");
    }
    if let Some(e) = read_error {
        return Err(CliError::runtime(anyhow!(e)));
    }
    Ok(code)
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
