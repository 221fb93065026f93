//! One bench connection: pulls work from its source, keeps up to `window` requests in
//! flight on a pipelined connection, records every reply, and reconnects after failures.
//! Also the open-loop arrival dispatcher.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use beansdb_client::{Client, ClientConfig, Error as ClientError, Request, Response, SetKind};
use beansdb_protocol::ErrorKind;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch, Semaphore};

use super::spec::{CountRange, Mix, Op};
use super::stats::{record, Live, Stats};
use super::workload::{Generator, Keyspace, Rng, Values};
use crate::interrupt::Interrupt;

/// A request sent more than this after its scheduled time counts as `late`.
pub const LATE: Duration = Duration::from_millis(1);
/// Most arrivals waiting for one connection; more are dropped (tools.md §5).
pub const QUEUE_LIMIT: usize = 10_000;

/// State shared by all connections for the whole run.
pub struct Shared {
    pub addr: SocketAddr,
    pub client: ClientConfig,
    pub keyspace: Keyspace,
    pub values: Values,
    pub mix: Mix,
    pub getm: CountRange,
    pub seed: u64,
    pub shards: Vec<Mutex<Stats>>,
    pub live: Live,
    pub preload_ok: AtomicU64,
    pub preload_errors: AtomicU64,
    pub interrupt: Interrupt,
}

/// One phase (preload or measurement) with its own abort signal.
pub struct Phase {
    pub kind: PhaseKind,
    /// Set at the hard deadline: connections stop at once; in-flight requests time out.
    pub abort: watch::Receiver<bool>,
    /// Requests sent after the warmup (closed loop `--requests` budget).
    pub sent_measured: AtomicU64,
}

pub enum PhaseKind {
    Preload,
    Measure {
        /// Completions before this are warmup and not recorded.
        measure_start: Instant,
        /// No request is scheduled at or after this.
        end: Instant,
        budget: Option<u64>,
    },
}

impl Phase {
    fn measuring_at(&self, t: Instant) -> bool {
        match self.kind {
            PhaseKind::Preload => false,
            PhaseKind::Measure { measure_start, .. } => t >= measure_start,
        }
    }
}

/// Where a connection's work comes from.
pub enum Source {
    /// Set keys `next, next + step, …` once each.
    Preload { next: u64, step: u64 },
    /// Closed loop: a new request whenever a pipeline slot frees.
    Closed,
    /// Open loop: scheduled arrival times from the dispatcher.
    Open(mpsc::Receiver<Instant>),
}

enum Next {
    Preload(u64),
    Measure(Instant),
}

impl Source {
    async fn next(&mut self, sh: &Shared, ph: &Phase) -> Option<Next> {
        if sh.interrupt.fired() {
            return None;
        }
        match self {
            Source::Preload { next, step } => {
                if *next >= sh.keyspace.count() {
                    return None;
                }
                let idx = *next;
                *next += *step;
                Some(Next::Preload(idx))
            }
            Source::Closed => {
                let PhaseKind::Measure {
                    measure_start,
                    end,
                    budget,
                } = ph.kind
                else {
                    return None;
                };
                let now = Instant::now();
                if now >= end {
                    return None;
                }
                if let (Some(b), true) = (budget, now >= measure_start) {
                    if ph.sent_measured.fetch_add(1, Ordering::Relaxed) >= b {
                        return None;
                    }
                }
                Some(Next::Measure(now))
            }
            Source::Open(rx) => rx.recv().await.map(Next::Measure),
        }
    }

    /// True when no more work can come (so a failed connection need not be reopened).
    fn exhausted(&self, sh: &Shared, ph: &Phase) -> bool {
        if sh.interrupt.fired() {
            return true;
        }
        match (self, &ph.kind) {
            (Source::Preload { next, .. }, _) => *next >= sh.keyspace.count(),
            (Source::Closed, PhaseKind::Measure { end, budget, .. }) => {
                Instant::now() >= *end
                    || budget.is_some_and(|b| ph.sent_measured.load(Ordering::Relaxed) >= b)
            }
            (Source::Closed, PhaseKind::Preload) => true,
            (Source::Open(rx), _) => rx.is_closed() && rx.is_empty(),
        }
    }
}

/// What the reader needs to account for a reply.
struct Tag {
    op: Op,
    scheduled: Instant,
    /// Send time minus scheduled time.
    lag: Duration,
    nkeys: u32,
    preload: bool,
}

/// Why a connection was abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    Timeout,
    Connection,
    Protocol,
}

enum End {
    Done,
    Aborted,
    Failed,
}

/// Runs one connection until its source is exhausted or the phase is aborted.
pub async fn run_connection(
    sh: Arc<Shared>,
    ph: Arc<Phase>,
    idx: usize,
    mut source: Source,
    window: usize,
) {
    let mut gen = Generator::new(Rng::derive(sh.seed, idx as u64), sh.mix.clone(), sh.getm);
    let shard = &sh.shards[idx % sh.shards.len()];
    let mut abort = ph.abort.clone();
    let mut failures = 0u32;
    loop {
        if *abort.borrow() || source.exhausted(&sh, &ph) {
            break;
        }
        let connected = tokio::select! {
            r = Client::connect_addr(sh.addr, sh.client.clone()) => r,
            _ = abort.wait_for(|a| *a) => break,
        };
        let client = match connected {
            Ok(c) => {
                failures = 0;
                c
            }
            Err(e) => {
                failures += 1;
                tracing::debug!("connection {idx}: {e}");
                // Preload has no deadline of its own: give up on a dead server.
                if matches!(ph.kind, PhaseKind::Preload) && failures >= 5 {
                    tracing::warn!("connection {idx}: giving up preload after {e}");
                    break;
                }
                let backoff = Duration::from_millis(50 * u64::from(failures.min(10)));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => continue,
                    _ = abort.wait_for(|a| *a) => break,
                }
            }
        };
        match session(&sh, &ph, shard, &mut source, &mut gen, client, window).await {
            End::Done | End::Aborted => break,
            End::Failed => shard.lock().reconnects += 1,
        }
    }
    // Arrivals that were never sent because the run ended first.
    if let Source::Open(rx) = &mut source {
        rx.close();
        let mut left = 0;
        while rx.try_recv().is_ok() {
            left += 1;
        }
        if !sh.interrupt.fired() {
            Live::add(&sh.live.dropped, left);
        }
    }
}

async fn session(
    sh: &Shared,
    ph: &Phase,
    shard: &Mutex<Stats>,
    source: &mut Source,
    gen: &mut Generator,
    client: Client,
    window: usize,
) -> End {
    let Ok((w, mut r)) = client.into_pipeline::<Tag>() else {
        return End::Failed;
    };
    let sem = Semaphore::new(window);
    let mut abort = ph.abort.clone();
    let mut bytes_sent = 0u64;
    let end = {
        let writer = async {
            let mut w = w;
            loop {
                match sem.acquire().await {
                    Ok(p) => p.forget(),
                    Err(_) => break,
                }
                let Some(next) = source.next(sh, ph).await else {
                    break;
                };
                queue_request(sh, gen, &mut w, next)?;
                w.flush().await?;
                bytes_sent = w.bytes_written();
            }
            w.finish().await
        };
        let reader = async {
            while let Some((tag, res)) = r.recv().await {
                sem.add_permits(1);
                account(sh, ph, shard, tag, res)?;
            }
            Ok(())
        };
        tokio::pin!(writer);
        tokio::pin!(reader);
        // The write half is held until the last reply: dropping it would send a FIN.
        let mut _half = None;
        let mut writer_done = false;
        loop {
            tokio::select! {
                res = &mut writer, if !writer_done => {
                    writer_done = true;
                    match res {
                        Ok(h) => _half = Some(h),
                        Err(e) => {
                            tracing::debug!("send failed: {e}");
                            break (End::Failed, Some(Fail::Connection));
                        }
                    }
                }
                res = &mut reader => break match res {
                    Ok(()) => (End::Done, None),
                    Err(f) => (End::Failed, Some(f)),
                },
                _ = abort.wait_for(|a| *a) => break (End::Aborted, Some(Fail::Timeout)),
            }
        }
    };
    // Requests still without a reply share the connection's fate.
    let (end, fail) = end;
    let left = r.drain();
    let now = Instant::now();
    let mut st = shard.lock();
    st.bytes_sent += if ph.measuring_at(now) { bytes_sent } else { 0 };
    st.bytes_received += if ph.measuring_at(now) {
        r.bytes_read()
    } else {
        0
    };
    if let Some(f) = fail {
        for tag in left {
            if tag.preload {
                sh.preload_errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if !ph.measuring_at(now) {
                continue;
            }
            let op = st.op(tag.op);
            op.requests += 1;
            if f == Fail::Timeout {
                let d = now - tag.scheduled;
                record(&mut op.hist, d);
                record(&mut st.all, d);
                st.errors.timeout += 1;
            } else {
                st.errors.connection += 1;
            }
            Live::add(&sh.live.requests, 1);
            Live::add(&sh.live.errors, 1);
        }
    }
    end
}

/// Builds the next request and queues it with its tag.
fn queue_request(
    sh: &Shared,
    gen: &mut Generator,
    w: &mut beansdb_client::PipelineWriter<Tag>,
    next: Next,
) -> Result<(), ClientError> {
    let now = Instant::now();
    let (op, scheduled, preload) = match next {
        Next::Preload(idx) => {
            gen.key.clear();
            sh.keyspace.write_key(idx, &mut gen.key);
            (Op::Set, now, true)
        }
        Next::Measure(s) => {
            let op = gen.next_op();
            if op != Op::Getm {
                gen.draw_key(&sh.keyspace);
            }
            (op, s, false)
        }
    };
    let mut tag = Tag {
        op,
        scheduled,
        lag: now.saturating_duration_since(scheduled),
        nkeys: 1,
        preload,
    };
    match op {
        Op::Get => w.queue(
            &Request::Get {
                keys: &[gen.key.as_slice()],
            },
            tag,
        ),
        Op::Set => {
            let value = sh.values.value(&gen.key, &mut gen.rng, &mut gen.scratch);
            let req = Request::Set {
                kind: SetKind::Set,
                key: &gen.key,
                flag: 0,
                exptime: 0,
                value,
                noreply: false,
            };
            w.queue(&req, tag)
        }
        Op::Delete => w.queue(
            &Request::Delete {
                key: &gen.key,
                noreply: false,
            },
            tag,
        ),
        Op::Getm => {
            let keys = gen.draw_multi(&sh.keyspace);
            tag.nkeys = keys.len() as u32;
            w.queue(&Request::Get { keys: &keys }, tag)
        }
    }
    .map(|_| ())
}

/// Records one reply. `Err` means the connection must be dropped.
fn account(
    sh: &Shared,
    ph: &Phase,
    shard: &Mutex<Stats>,
    tag: Tag,
    res: Result<Response, ClientError>,
) -> Result<(), Fail> {
    let fail = match &res {
        Err(e) if e.is_timeout() => Some(Fail::Timeout),
        Err(ClientError::Protocol(_)) => Some(Fail::Protocol),
        Err(_) => Some(Fail::Connection),
        Ok(_) => None,
    };
    if tag.preload {
        let counter = match &res {
            Ok(Response::Stored) => &sh.preload_ok,
            _ => &sh.preload_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Live::add(&sh.live.preloaded, 1);
        return fail.map_or(Ok(()), Err);
    }
    let now = Instant::now();
    if !ph.measuring_at(now) {
        return fail.map_or(Ok(()), Err);
    }
    let latency = now - tag.scheduled;
    let mut st = shard.lock();
    let st = &mut *st;
    if tag.lag > LATE {
        st.late += 1;
    }
    st.max_lag = st.max_lag.max(tag.lag);
    let op = &mut st.ops[tag.op.index()];
    op.requests += 1;
    let mut ok = false;
    let mut timed = true;
    match res {
        Err(_) => match fail {
            Some(Fail::Timeout) => st.errors.timeout += 1,
            Some(Fail::Protocol) => st.errors.protocol += 1,
            _ => {
                st.errors.connection += 1;
                timed = false;
            }
        },
        Ok(Response::Error { kind, .. }) => match kind {
            ErrorKind::Server => st.errors.server_error += 1,
            ErrorKind::Client | ErrorKind::Error => st.errors.client_error += 1,
        },
        Ok(Response::Values(values)) if tag.op.reads() => {
            op.keys += u64::from(tag.nkeys);
            let hits = values.len() as u64;
            op.hits += hits;
            op.misses += u64::from(tag.nkeys).saturating_sub(hits);
            ok = true;
            if sh.values.verify() {
                let bad = values
                    .iter()
                    .filter(|v| !sh.values.check(&v.key, &v.data))
                    .count() as u64;
                if bad > 0 {
                    st.errors.corrupt += bad;
                    ok = false;
                }
            }
        }
        Ok(Response::Stored) if tag.op == Op::Set => ok = true,
        Ok(Response::NotStored | Response::Exists | Response::NotFound) if tag.op == Op::Set => {
            st.errors.not_stored += 1
        }
        Ok(Response::Deleted) if tag.op == Op::Delete => {
            op.hits += 1;
            ok = true;
        }
        Ok(Response::NotFound) if tag.op == Op::Delete => {
            op.misses += 1;
            ok = true;
        }
        Ok(_) => st.errors.protocol += 1,
    }
    if ok {
        op.ok += 1;
    } else {
        Live::add(&sh.live.errors, 1);
    }
    if timed {
        record(&mut op.hist, latency);
        record(&mut st.all, latency);
    }
    Live::add(&sh.live.requests, 1);
    fail.map_or(Ok(()), Err)
}

/// Open-loop arrivals: `rate` per second in total, evenly spaced or Poisson, dealt
/// round-robin from `t0` until `end` (or the `budget` of measured arrivals). Runs on a
/// blocking thread because tokio timers have 1 ms granularity, which would show up as lag.
#[allow(clippy::too_many_arguments)]
pub fn dispatch(
    senders: Vec<mpsc::Sender<Instant>>,
    t0: Instant,
    measure_start: Instant,
    end: Instant,
    budget: Option<u64>,
    rate: f64,
    poisson: bool,
    mut rng: Rng,
    sh: &Shared,
) {
    let n = senders.len();
    let mut k: u64 = 0;
    let mut next = t0;
    let mut conn = 0;
    let mut measured = 0u64;
    while next < end && !sh.interrupt.fired() {
        let now = Instant::now();
        if next > now {
            // Short sleeps keep Ctrl-C responsive at low rates.
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
            continue;
        }
        let counts = next >= measure_start;
        if counts {
            if budget.is_some_and(|b| measured >= b) {
                break;
            }
            measured += 1;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = senders[conn].try_send(next) {
            if counts {
                Live::add(&sh.live.dropped, 1);
            }
        }
        conn = (conn + 1) % n;
        k += 1;
        next = if poisson {
            // Exponential gaps; 1 - u is in (0, 1] so ln is finite.
            next + Duration::from_secs_f64(-(1.0 - rng.next_f64()).ln() / rate)
        } else {
            // From t0 each time, so rounding never accumulates into drift.
            t0 + Duration::from_secs_f64(k as f64 / rate)
        };
    }
}
