//! Client connections: socket → shared request codec → command → backends → reply
//! (proxy.md §2, §2.6). Requests of one connection run one after another; replies are
//! buffered and flushed when no further complete request is waiting.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use beansdb_observe::accesslog::get_name_and_sizes;
use beansdb_protocol::request::{Command, Decoded, DecoderConfig, RequestDecoder, SetKind};
use beansdb_protocol::{is_valid_write_key, response as resp};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::error;

use crate::accesslog::{AccessLog, Entry};
use crate::buffers::{track, BufKind, Tracked};
use crate::cluster::Cluster;
use crate::config::{ms, Config};
use crate::cstar::CStar;
use crate::cstar_cmds::{beansdb_only_key, merge_in_order, CstarCtx, SetRequest, Touched};
use crate::limiter::Limiter;
use crate::metrics;
use crate::nwr::{Background, Body, Exec, Reply, Targets};
use crate::shadow::{BeansdbReader, Shadow, ShadowSettings};
use crate::stats::{self, Counters};
use crate::switch::{Dispatch, Status, SwitchHandle};
use crate::trailing::TrailingWrites;

/// The `version` reply; starts with gobeansproxy's `v2.1.1` so tools recognise it.
pub const VERSION: &str = concat!("v2.1.1-rs.", env!("CARGO_PKG_VERSION"));

/// Requests slower than this count in `stats slow_cmd`.
const SLOW: Duration = Duration::from_millis(100);

/// Test hooks, enabled only through `BEANSPROXY_TEST_HOOKS` (e.g. `panic=k1,sleep=k2:500`):
/// a request for the named key panics inside its handler, or sleeps before executing.
#[derive(Default, Clone, Debug)]
pub struct TestHooks {
    /// `http_panic`: the admin server gets `/debug/test-panic`, whose handler panics.
    pub http_panic: bool,
    pub panic_key: Option<Vec<u8>>,
    pub sleep_key: Option<(Vec<u8>, Duration)>,
}

impl TestHooks {
    pub fn from_env() -> TestHooks {
        let mut h = TestHooks::default();
        if let Ok(spec) = std::env::var("BEANSPROXY_TEST_HOOKS") {
            for part in spec.split(',') {
                if part == "http_panic" {
                    h.http_panic = true;
                } else if let Some(k) = part.strip_prefix("panic=") {
                    h.panic_key = Some(k.as_bytes().to_vec());
                } else if let Some((k, v)) =
                    part.strip_prefix("sleep=").and_then(|r| r.rsplit_once(':'))
                {
                    if let Ok(ms) = v.parse() {
                        h.sleep_key = Some((k.as_bytes().to_vec(), Duration::from_millis(ms)));
                    }
                }
            }
        }
        h
    }
}

/// Shared proxy state.
pub struct Proxy {
    pub cfg: Arc<Config>,
    pub cluster: Arc<Cluster>,
    pub switch: SwitchHandle,
    /// The Cassandra backend, when `cassandra.enable`.
    pub cstar: Option<Arc<CStar>>,
    /// Shadow-read verification, when `cassandra.shadow_read.enable`.
    shadow: Option<Arc<Shadow>>,
    pub limiter: Limiter,
    pub counters: Counters,
    pub access: Option<AccessLog>,
    pub bg: Arc<Background>,
    pub started: Instant,
    hooks: TestHooks,
    me: String,
    timeout: Duration,
    req_metrics: metrics::RequestMetrics,
}

enum Flow {
    Continue,
    Close,
}

/// What a request did, for the access log and metrics.
struct Done {
    reply: Reply,
    /// Metric label (`get`, `getm`, `set`, `del`, `incr`), if counted.
    metric: Option<&'static str>,
    touched: Touched,
}

const CSTAR_NO_INCR: &[u8] = b"SERVER_ERROR cstar store do not support incr\r\n";
const CSTAR_NO_APPEND: &[u8] = b"SERVER_ERROR cstar store do not support append\r\n";
const CSTAR_BAD_KEY: &[u8] = b"SERVER_ERROR Key format invalid\r\n";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Runs a future and turns a panic in its `poll` into an `Err` (the request gets
/// `SERVER_ERROR internal error`, the connection goes on).
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.get_mut().0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(move || fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(p) => Poll::Ready(Err(p)),
        }
    }
}

fn cmd_keys(cmd: &Command) -> Vec<&[u8]> {
    match cmd {
        Command::Get { keys, .. } => keys.iter().map(|k| k.as_ref()).collect(),
        Command::Set { key, .. }
        | Command::Delete { key, .. }
        | Command::Incr { key, .. }
        | Command::Decr { key, .. } => vec![key.as_ref()],
        _ => Vec::new(),
    }
}

impl Proxy {
    /// `cstar`: the Cassandra backend and its first dispatcher snapshot, when enabled.
    pub fn new(
        cfg: Arc<Config>,
        cluster: Arc<Cluster>,
        access: Option<AccessLog>,
        cstar: Option<(Arc<CStar>, Dispatch)>,
    ) -> Proxy {
        let (cstar, dispatch) = match cstar {
            Some((c, d)) => (Some(c), d),
            None => (None, Dispatch::beansdb_only()),
        };
        let bg = Arc::new(Background::default());
        let sr = &cfg.cassandra.shadow_read;
        let shadow = match &cstar {
            Some(c) if sr.enable => {
                let settings = ShadowSettings {
                    ratio: sr.ratio,
                    prefixes: sr.prefixes.iter().map(|p| p.as_bytes().to_vec()).collect(),
                    max_inflight: sr.max_inflight.max(0) as usize,
                    recheck_delay: ms(sr.recheck_delay_ms),
                    mismatch_log: (!sr.mismatch_log.is_empty())
                        .then(|| std::path::PathBuf::from(&sr.mismatch_log)),
                };
                let reader = BeansdbReader {
                    cluster: cluster.clone(),
                    bg: bg.clone(),
                    r: cfg.r(),
                    score_floor: cfg.dstore.response_time_min as f64,
                    deviation: cfg.dstore.score_deviation as f64,
                    timeout: cfg.timeout(),
                };
                match Shadow::new(settings, reader, c.clone()) {
                    Ok(s) => Some(Arc::new(s)),
                    Err(e) => {
                        error!(
                            "shadow_read.mismatch_log {:?}: {e}; shadow reads are off",
                            sr.mismatch_log
                        );
                        None
                    }
                }
            }
            _ => None,
        };
        Proxy {
            shadow,
            limiter: Limiter::new(cfg.mc.max_req.max(1) as usize),
            switch: SwitchHandle::new(dispatch),
            cstar,
            counters: Counters::default(),
            access,
            bg,
            started: Instant::now(),
            hooks: TestHooks::from_env(),
            me: cfg.self_target(),
            timeout: cfg.timeout(),
            req_metrics: metrics::RequestMetrics::default(),
            cluster,
            cfg,
        }
    }

    /// Serves one client until EOF, `quit`, a fatal codec error or shutdown.
    pub async fn connection(self: Arc<Self>, sock: TcpStream, mut shutdown: watch::Receiver<bool>) {
        let _ = sock.set_nodelay(true);
        let remote = sock
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "unknown".into());
        Counters::add(&self.counters.curr_connections, 1);
        Counters::add(&self.counters.total_connections, 1);
        metrics::client_connections(Counters::get(&self.counters.curr_connections));
        let (mut rd, wr) = sock.into_split();
        let mut wr = BufWriter::with_capacity(64 << 10, wr);
        let mut dec = RequestDecoder::new(DecoderConfig {
            max_key_len: self.cfg.mc.max_key_len.max(1) as usize,
            body_max: usize::try_from(self.cfg.mc.body_max).unwrap_or(usize::MAX),
            ..DecoderConfig::default()
        });
        let mut buf = BytesMut::with_capacity(16 << 10);
        // SetData accounting of a body still arriving.
        let mut upload: Option<Tracked> = None;
        let mut trailing = TrailingWrites::default();
        let mut draining = *shutdown.borrow();
        'conn: loop {
            loop {
                match dec.decode(&mut buf) {
                    Decoded::NeedMore => break,
                    Decoded::Reply { reply, close } => {
                        if wr.write_all(reply).await.is_err() {
                            break 'conn;
                        }
                        if close {
                            let _ = wr.flush().await;
                            break 'conn;
                        }
                    }
                    Decoded::Request(cmd) => {
                        upload = None;
                        trailing.prune();
                        match self.request(cmd, &remote, &mut wr, &mut trailing).await {
                            Ok(Flow::Continue) => {}
                            Ok(Flow::Close) | Err(_) => {
                                let _ = wr.flush().await;
                                break 'conn;
                            }
                        }
                    }
                }
            }
            upload = match dec.pending_body_len() {
                Some(n) if n > 0 => match upload {
                    Some(g) if g.size() == n => Some(g),
                    _ => Some(track(BufKind::SetData, n)),
                },
                _ => None,
            };
            if wr.flush().await.is_err() {
                break;
            }
            draining |= *shutdown.borrow();
            let mid_request = dec.pending_body().is_some() || !buf.is_empty();
            if draining && !mid_request {
                break;
            }
            if buf.is_empty() && buf.capacity() > (1 << 20) {
                buf = BytesMut::with_capacity(16 << 10);
            }
            match dec.pending_body() {
                Some(p) => buf.reserve((p.len + 2).saturating_sub(buf.len()).min(64 << 20)),
                None if buf.capacity() - buf.len() < 4096 => buf.reserve(16 << 10),
                None => {}
            }
            tokio::select! {
                r = rd.read_buf(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                },
                _ = shutdown.changed(), if !draining => {
                    draining = true;
                }
            }
        }
        drop(upload);
        Counters::sub(&self.counters.curr_connections, 1);
        metrics::client_connections(Counters::get(&self.counters.curr_connections));
    }

    /// Executes one request and writes its reply (unless `noreply`).
    async fn request<W: AsyncWrite + Unpin>(
        &self,
        cmd: Command,
        remote: &str,
        wr: &mut W,
        trailing: &mut TrailingWrites,
    ) -> io::Result<Flow> {
        let recv = Instant::now();
        let deadline = recv + self.timeout;
        if let Command::Quit = cmd {
            return Ok(Flow::Close);
        }
        let noreply = cmd.noreply();
        let mut targets = Targets::default();
        let done = self.execute(&cmd, deadline, &mut targets, trailing).await;
        let elapsed = recv.elapsed();
        if elapsed > SLOW {
            Counters::add(&self.counters.slow_cmd, 1);
        }
        let failed = done.reply.is_server_error();
        if let Some(m) = done.metric {
            let t = done.touched;
            self.req_metrics
                .request(m, elapsed, (t.beansdb || !t.cstar).then_some(failed));
            if t.cstar {
                metrics::cstar_request(m, t.cstar_failed);
            }
        }
        let sizes = self.account(&cmd, &done.reply);
        if let Some(log) = &self.access {
            self.log_access(log, &cmd, remote, &done.reply, &sizes, &targets, elapsed);
        }
        if !noreply {
            write_reply(wr, done.reply).await?;
        }
        Ok(Flow::Continue)
    }

    /// Updates `stats` counters; returns per-requested-key sizes for gets.
    fn account(&self, cmd: &Command, reply: &Reply) -> Vec<usize> {
        let c = &self.counters;
        match (cmd, reply) {
            (Command::Get { keys, .. }, r) => {
                Counters::add(&c.cmd_get, keys.len() as u64);
                let items: &[crate::pool::Item] = match r {
                    Reply::Values { items, .. } => items,
                    _ => &[],
                };
                let hits = items.len() as u64;
                let bytes: usize = items.iter().map(|i| i.data.len()).sum();
                Counters::add(&c.get_hits, hits);
                Counters::add(&c.get_misses, (keys.len() as u64).saturating_sub(hits));
                Counters::add(&c.bytes_written, bytes as u64);
                let size_of: HashMap<&[u8], usize> = items
                    .iter()
                    .map(|i| (i.key.as_ref(), i.data.len()))
                    .collect();
                keys.iter()
                    .map(|k| size_of.get(k.as_ref()).copied().unwrap_or(0))
                    .collect()
            }
            (Command::Set { value, .. }, _) => {
                Counters::add(&c.cmd_set, 1);
                Counters::add(&c.bytes_read, value.len() as u64);
                Vec::new()
            }
            (Command::Incr { .. }, _) => {
                Counters::add(&c.cmd_set, 1);
                Vec::new()
            }
            (Command::Delete { .. }, _) => {
                Counters::add(&c.cmd_delete, 1);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn log_access(
        &self,
        log: &AccessLog,
        cmd: &Command,
        remote: &str,
        reply: &Reply,
        sizes: &[usize],
        targets: &Targets,
        elapsed: Duration,
    ) {
        let keys = cmd_keys(cmd);
        let (name, ok, size_text) = match cmd {
            Command::Get { keys, gets } => {
                let total: usize = sizes.iter().sum();
                let (name, text) = get_name_and_sizes(keys.len(), *gets, sizes);
                (name.to_string(), total > 0, text)
            }
            Command::Set { kind, value, .. } => (
                kind.name().to_ascii_uppercase(),
                !reply.is_server_error(),
                value.len().to_string(),
            ),
            other => (
                other.name().to_ascii_uppercase(),
                !reply.is_server_error(),
                "0".to_string(),
            ),
        };
        log.write(
            &Entry {
                client: remote,
                cmd: &name,
                ok,
                sizes: &size_text,
                targets: &targets.0,
                micros: elapsed.as_micros(),
                keys: &keys,
            },
            &self.me,
        );
    }

    fn hook(&self, cmd: &Command) -> Option<Duration> {
        if self.hooks.panic_key.is_none() && self.hooks.sleep_key.is_none() {
            return None;
        }
        let keys = cmd_keys(cmd);
        if let Some(k) = &self.hooks.panic_key {
            if keys.iter().any(|x| x == k) {
                panic!("test hook: panic on key");
            }
        }
        match &self.hooks.sleep_key {
            Some((k, d)) if keys.iter().any(|x| x == k) => Some(*d),
            _ => None,
        }
    }

    async fn execute(
        &self,
        cmd: &Command,
        deadline: Instant,
        targets: &mut Targets,
        trailing: &mut TrailingWrites,
    ) -> Done {
        let local = |reply: Reply| Done {
            reply,
            metric: None,
            touched: Touched::default(),
        };
        let counted = |reply: Reply, metric: &'static str| Done {
            reply,
            metric: Some(metric),
            touched: Touched::default(),
        };
        // One snapshot for every key and step of this request (cassandra.md §4.2).
        let snap = self.switch.snapshot();
        // Local commands and refusals that need no backend.
        let metric = match cmd {
            Command::Version => return local(Reply::Text(format!("VERSION {VERSION}\r\n"))),
            Command::Verbosity { .. } | Command::FlushAll { .. } => {
                return local(Reply::Static(resp::OK))
            }
            Command::Stats { names } => return local(Reply::Text(self.stats_text(names))),
            Command::Decr { .. } => return local(Reply::Static(resp::SERVER_ERROR_NOT_SUPPORT)),
            Command::OptimizeStat | Command::Quit => return local(Reply::Static(resp::ERROR)),
            Command::Set { kind, key, .. } if !kind.stores() => {
                return local(Reply::Static(if snap.status(key).uses_cstar() {
                    CSTAR_NO_APPEND
                } else {
                    resp::SERVER_ERROR_NOT_SUPPORT
                }));
            }
            Command::Get { keys, .. } => {
                if keys.len() > 1 {
                    "getm"
                } else {
                    "get"
                }
            }
            Command::Set { key, .. } => {
                if !is_valid_write_key(key) {
                    let reply = match snap.status(key) {
                        Status::Crw => CSTAR_BAD_KEY,
                        Status::Cr => resp::NOT_STORED,
                        _ => resp::SERVER_ERROR_WRITE_FAILED,
                    };
                    return counted(Reply::Static(reply), "set");
                }
                "set"
            }
            Command::Delete { key, .. } => {
                if !is_valid_write_key(key) {
                    return counted(Reply::Static(resp::NOT_FOUND), "del");
                }
                "del"
            }
            Command::Incr { key, .. } => {
                if snap.status(key).uses_cstar() {
                    return counted(Reply::Static(CSTAR_NO_INCR), "incr");
                }
                if !is_valid_write_key(key) {
                    return counted(Reply::Number(0), "incr");
                }
                "incr"
            }
        };
        if self.cstar.is_some() {
            metrics::requests_by_status(metric, cmd_keys(cmd).iter().map(|k| snap.status(k)));
        }
        // The body is ours now: SetData until the last backend write using it ends.
        let body = match cmd {
            Command::Set { value, .. } => Some(Body::new(value.clone())),
            _ => None,
        };
        let keys = cmd_keys(cmd);
        let Some(slot) = self.limiter.acquire(cmd.name(), &keys, deadline).await else {
            metrics::timeout(metric);
            return counted(Reply::Static(resp::SERVER_ERROR_TIMEOUT), metric);
        };
        let mut touched = Touched::default();
        let run = self.forward(cmd, body, deadline, targets, trailing, &snap, &mut touched);
        let reply = match tokio::time::timeout_at(deadline.into(), CatchUnwind(Box::pin(run))).await
        {
            Ok(Ok(r)) => r,
            Ok(Err(panic)) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                error!("request handler panicked ({}): {what}", cmd.name());
                Reply::Static(resp::SERVER_ERROR_INTERNAL)
            }
            Err(_) => {
                metrics::timeout(metric);
                Reply::Static(resp::SERVER_ERROR_TIMEOUT)
            }
        };
        slot.finish(if reply.is_server_error() {
            "failed"
        } else {
            "ok"
        });
        Done {
            reply,
            metric: Some(metric),
            touched,
        }
    }

    /// The forwarded part of a request, run under the deadline and the panic guard.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        cmd: &Command,
        body: Option<Arc<Body>>,
        deadline: Instant,
        targets: &mut Targets,
        trailing: &mut TrailingWrites,
        snap: &Dispatch,
        touched: &mut Touched,
    ) -> Reply {
        if let Some(d) = self.hook(cmd) {
            tokio::time::sleep(d).await;
        }
        let d = &self.cfg.dstore;
        let mut ex = Exec {
            state: self.cluster.current(),
            deadline,
            r: self.cfg.r(),
            w: self.cfg.w(),
            score_floor: d.response_time_min as f64,
            deviation: d.score_deviation as f64,
            bg: &self.bg,
            targets,
            trailing,
        };
        let beansdb_reads = |k: &[u8]| beansdb_only_key(k) || snap.status(k).beansdb_read();
        // With the beansdb-only snapshot every key reads and writes beansdb, so the C*
        // branches below are reached only when the backend exists.
        let cstar = self.cstar.as_ref();
        let cstar_ctx = |cstar, touched| CstarCtx {
            cstar,
            snap,
            deadline,
            touched,
        };
        let reply = match (cmd, cstar) {
            (Command::Get { keys, gets }, _) if keys.iter().all(|k| beansdb_reads(k)) => {
                if !snap.beansdb {
                    return Reply::Values {
                        items: Vec::new(),
                        gets: *gets,
                    };
                }
                touched.beansdb = true;
                let reply = if keys.len() == 1 {
                    ex.get(keys[0].clone(), *gets).await
                } else {
                    ex.getm(keys, *gets).await
                };
                if let Some(sh) = &self.shadow {
                    sh.after_read(snap, keys, &reply);
                }
                reply
            }
            (Command::Get { keys, gets }, Some(c)) => {
                let mut ctx = cstar_ctx(c, &mut *touched);
                let reply = if keys.len() == 1 {
                    ctx.get(keys[0].clone(), *gets).await
                } else {
                    let (bkeys, ckeys): (Vec<Bytes>, Vec<Bytes>) =
                        keys.iter().cloned().partition(|k| beansdb_reads(k));
                    let use_b = !bkeys.is_empty() && snap.beansdb;
                    ctx.touched.beansdb = use_b;
                    let b_part = async {
                        if use_b {
                            ex.getm(&bkeys, *gets).await
                        } else {
                            Reply::Values {
                                items: Vec::new(),
                                gets: *gets,
                            }
                        }
                    };
                    let (b, c_part) = tokio::join!(b_part, ctx.getm_part(&ckeys));
                    match (b, c_part) {
                        (_, Err(e)) => {
                            ctx.touched.cstar_failed = true;
                            Reply::Text(crate::cstar::error_reply(&e))
                        }
                        (Reply::Values { items, .. }, Ok(hits)) => {
                            merge_in_order(keys, items, hits, *gets)
                        }
                        (failed, Ok(_)) => failed,
                    }
                };
                if let Some(sh) = &self.shadow {
                    sh.after_read(snap, keys, &reply);
                }
                reply
            }
            (
                Command::Set {
                    kind: SetKind::Set | SetKind::Add | SetKind::Replace | SetKind::Cas,
                    key,
                    flag,
                    exptime,
                    cas,
                    ..
                },
                c,
            ) => {
                let Some(b) = body else {
                    return Reply::Static(resp::SERVER_ERROR_INTERNAL);
                };
                match (snap.status(key), c) {
                    (Status::Brw, _) => {
                        touched.beansdb = true;
                        ex.set(key.clone(), *flag, *exptime, b).await
                    }
                    (Status::Cr, _) => Reply::Static(resp::NOT_STORED),
                    (st, Some(c)) => {
                        cstar_ctx(c, &mut *touched)
                            .set(
                                &mut ex,
                                st,
                                SetRequest {
                                    key: key.clone(),
                                    flag: *flag,
                                    exptime: *exptime,
                                    cas: *cas,
                                    body: b,
                                },
                            )
                            .await
                    }
                    (_, None) => Reply::Static(resp::SERVER_ERROR_INTERNAL),
                }
            }
            (Command::Delete { key, .. }, c) => match (snap.status(key), c) {
                (Status::Brw, _) => {
                    touched.beansdb = true;
                    ex.delete(key.clone()).await
                }
                (Status::Cr, _) => Reply::Static(resp::NOT_FOUND),
                (st, Some(c)) => {
                    cstar_ctx(c, &mut *touched)
                        .delete(&mut ex, st, key.clone())
                        .await
                }
                (_, None) => Reply::Static(resp::SERVER_ERROR_INTERNAL),
            },
            (Command::Incr { key, delta, .. }, _) => {
                touched.beansdb = true;
                ex.incr(key.clone(), *delta).await
            }
            _ => Reply::Static(resp::ERROR),
        };
        if touched.cstar {
            if let Some(c) = cstar {
                ex.targets.push(&c.cluster_name);
            }
        }
        reply
    }

    /// `stats` (§2.4): all lines in order, or the named ones.
    fn stats_text(&self, names: &[Bytes]) -> String {
        let all = self.stat_values();
        let mut out = String::new();
        let mut push = |name: &str, v: &str| {
            out.push_str("STAT ");
            out.push_str(name);
            out.push(' ');
            out.push_str(v);
            out.push_str("\r\n");
        };
        if names.is_empty() {
            for (n, v) in &all {
                push(n, v);
            }
        } else {
            for n in names {
                let name = String::from_utf8_lossy(n);
                let v = all
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("0");
                push(&name, v);
            }
        }
        out.push_str("END\r\n");
        out
    }

    pub fn stat_values(&self) -> Vec<(&'static str, String)> {
        let c = &self.counters;
        let p = stats::process();
        let g = |a: &std::sync::atomic::AtomicU64| Counters::get(a).to_string();
        vec![
            ("pid", std::process::id().to_string()),
            ("uptime", self.started.elapsed().as_secs().to_string()),
            ("time", unix_now().to_string()),
            ("version", VERSION.to_string()),
            ("rusage_user", p.utime_s.to_string()),
            ("rusage_system", p.stime_s.to_string()),
            ("rusage_maxrss", p.maxrss_kib.to_string()),
            ("curr_connections", g(&c.curr_connections)),
            ("total_connections", g(&c.total_connections)),
            ("cmd_get", g(&c.cmd_get)),
            ("cmd_set", g(&c.cmd_set)),
            ("cmd_delete", g(&c.cmd_delete)),
            ("slow_cmd", g(&c.slow_cmd)),
            ("get_hits", g(&c.get_hits)),
            ("get_misses", g(&c.get_misses)),
            ("curr_items", "0".into()),
            ("total_items", "0".into()),
            ("avail_space", "0".into()),
            ("total_space", "0".into()),
            ("bytes_read", g(&c.bytes_read)),
            ("bytes_written", g(&c.bytes_written)),
            ("threads", p.threads.to_string()),
        ]
    }

    pub fn hooks(&self) -> &TestHooks {
        &self.hooks
    }

    /// How long a graceful drain may take before the exit code says it did not finish.
    pub fn drain_limit(&self) -> Duration {
        self.timeout + ms(2000)
    }
}

/// Writes one reply. Values are written from their own buffers (no copy of large values)
/// and released as soon as they are handed to the socket buffer.
async fn write_reply<W: AsyncWrite + Unpin>(wr: &mut W, reply: Reply) -> io::Result<()> {
    match reply {
        Reply::Static(b) => wr.write_all(b).await,
        Reply::Text(t) => wr.write_all(t.as_bytes()).await,
        Reply::Number(n) => {
            let mut b = BytesMut::with_capacity(24);
            resp::number(&mut b, n);
            wr.write_all(&b).await
        }
        Reply::Values { items, gets } => {
            let mut head = BytesMut::with_capacity(300);
            for item in items {
                head.clear();
                let cas = gets.then_some(u64::from(item.cas));
                resp::value_header_cas(&mut head, &item.key, item.flag, item.data.len(), cas);
                wr.write_all(&head).await?;
                wr.write_all(&item.data).await?;
                wr.write_all(b"\r\n").await?;
            }
            wr.write_all(resp::END).await
        }
    }
}
