//! Command execution against the backends with the N/W/R rules of proxy.md §4.
//!
//! Writes run as spawned tasks so that the reply can go out as soon as W acks arrived while
//! the remaining replicas finish in the background (holding the value, accounted in SetData).
//! Reads are plain futures: when the request deadline drops them, their connections close.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use beansdb_protocol::client::Response;
use beansdb_protocol::response as resp;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tracing::warn;

use crate::buffers::{track, BufKind, Tracked};
use crate::cluster::RoutingState;
use crate::getm::Planner;
use crate::logging::escape;
use crate::metrics;
use crate::pool::{BackendError, Host, Item, Op};
use crate::quorum::{read_outcome, Decision, IncrOutcome, IncrTally, ReadOutcome, WriteQuorum};
use crate::routing::{read_order, KeyRoute, Local};
use crate::trailing::{HostState, Trailing, TrailingWrites, WriteResult};

/// The reply of one request, written by the connection handler.
#[derive(Debug)]
pub enum Reply {
    Static(&'static [u8]),
    /// `VALUE` blocks in order, then `END`.
    Values {
        items: Vec<Item>,
        gets: bool,
    },
    Number(i64),
    Text(String),
}

impl Reply {
    pub fn is_server_error(&self) -> bool {
        match self {
            Reply::Static(s) => s.starts_with(b"SERVER_ERROR"),
            Reply::Text(t) => t.starts_with("SERVER_ERROR"),
            _ => false,
        }
    }
}

/// A storage body, accounted in SetData until the last backend write using it is done.
#[derive(Debug)]
pub struct Body {
    pub data: Bytes,
    _acct: Tracked,
}

impl Body {
    pub fn new(data: Bytes) -> Arc<Body> {
        let acct = track(BufKind::SetData, data.len());
        Arc::new(Body { data, _acct: acct })
    }
}

/// Counts background backend writes so that shutdown can wait for them.
#[derive(Default)]
pub struct Background {
    n: AtomicUsize,
    idle: Notify,
}

pub struct BackgroundGuard(Arc<Background>);

impl Background {
    pub fn enter(self: &Arc<Self>) -> BackgroundGuard {
        self.n.fetch_add(1, Ordering::AcqRel);
        BackgroundGuard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.n.load(Ordering::Acquire)
    }

    /// Waits until no background write is running.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for BackgroundGuard {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Hosts for the access log, deduplicated, in first-success order.
#[derive(Debug, Default, Clone)]
pub struct Targets(pub Vec<String>);

impl Targets {
    pub fn push(&mut self, addr: &str) {
        if !self.0.iter().any(|a| a == addr) {
            self.0.push(addr.to_string());
        }
    }
}

/// Per-request execution context.
pub struct Exec<'a> {
    pub state: Arc<RoutingState>,
    pub deadline: Instant,
    pub r: usize,
    pub w: usize,
    pub score_floor: f64,
    pub deviation: f64,
    pub bg: &'a Arc<Background>,
    pub targets: &'a mut Targets,
    /// This connection's writes still running in the background.
    pub trailing: &'a mut TrailingWrites,
}

fn describe(r: &Result<Response, BackendError>) -> String {
    match r {
        Ok(Response::Error { msg, .. }) => {
            format!("SERVER_ERROR {}", String::from_utf8_lossy(msg))
        }
        Ok(other) => format!("{other:?}"),
        Err(e) => e.to_string(),
    }
}

impl Exec<'_> {
    fn down(&self, h: usize) -> bool {
        self.state.is_down(h)
    }

    /// A host's latency figure for the read order: `max(score, response_time_min)`.
    fn eff(&self, h: usize) -> f64 {
        let floor = self.score_floor;
        self.state
            .host(h)
            .health
            .score()
            .unwrap_or(floor)
            .max(floor)
    }

    fn read_order(&self, replicas: &[usize]) -> Vec<usize> {
        read_order(replicas, |h| self.down(h), |h| self.eff(h), self.deviation)
    }

    /// Read order, after settling this connection's trailing write of the key. The flag is
    /// true when replicas were dropped because their write failed: they count as failed mains
    /// (so the backups, which may hold the write, are asked).
    async fn settled_order(&mut self, key: &[u8], replicas: &[usize]) -> (Vec<usize>, bool) {
        let order = self.read_order(replicas);
        self.settle_order(key, order).await
    }

    /// [`Self::settled_order`] for a read order computed by the caller.
    async fn settle_order(&mut self, key: &[u8], order: Vec<usize>) -> (Vec<usize>, bool) {
        let before = order.len();
        let state = self.state.clone();
        match self.trailing.get_mut(key) {
            Some(t) => {
                let order = t
                    .settle_read(order, |h| state.table.addr(h).to_string(), self.deadline)
                    .await;
                let dropped = order.len() < before;
                (order, dropped)
            }
            None => (order, false),
        }
    }

    /// Lets this connection's previous write of the key finish first (per-replica order).
    async fn settle_write(&mut self, key: &[u8]) {
        if let Some(t) = self.trailing.get_mut(key) {
            t.settle_write(self.deadline).await;
        }
    }

    fn deadline_passed(&self) -> bool {
        Instant::now() >= self.deadline
    }

    // ---- get --------------------------------------------------------------------------

    /// Single-key get (§4.2), including the special keys.
    pub async fn get(&mut self, key: Bytes, gets: bool) -> Reply {
        let bucket = match self.state.table.route_key(&key) {
            KeyRoute::Local(l) => return local_single(l, key, gets),
            KeyRoute::Bucket(b) => b,
        };
        let replicas = self.state.table.replicas(&key, bucket);
        let (order, dropped) = self.settled_order(&key, &replicas).await;
        let mut main_failed = dropped || replicas.iter().any(|&h| self.down(h));
        let keys = [key.clone()];
        let mut answered = 0;
        let mut answered_by = Vec::new();
        for h in order {
            let host = self.state.host(h).clone();
            match host.get(&keys, Op::Get, self.deadline).await {
                Ok(mut items) => {
                    if let Some(item) = items.pop() {
                        self.targets.push(&host.addr);
                        return Reply::Values {
                            items: vec![item],
                            gets,
                        };
                    }
                    answered += 1;
                    answered_by.push(host.addr.clone());
                }
                Err(_) => main_failed = true,
            }
        }
        if main_failed {
            let backups: Vec<usize> = self.state.table.backups().to_vec();
            for b in backups {
                if self.down(b) {
                    continue;
                }
                metrics::backup_read();
                let host = self.state.host(b).clone();
                if let Ok(mut items) = host.get(&keys, Op::Get, self.deadline).await {
                    if let Some(item) = items.pop() {
                        self.targets.push(&host.addr);
                        return Reply::Values {
                            items: vec![item],
                            gets,
                        };
                    }
                }
            }
        }
        match read_outcome(answered, self.r, self.deadline_passed()) {
            ReadOutcome::Miss => {
                for a in &answered_by {
                    self.targets.push(a);
                }
                Reply::Values {
                    items: Vec::new(),
                    gets,
                }
            }
            ReadOutcome::Timeout => Reply::Static(resp::SERVER_ERROR_TIMEOUT),
            ReadOutcome::Failed => {
                metrics::quorum_failure("get");
                warn!(
                    "get {}: read failed, {answered} of R={} replicas answered",
                    escape(&key),
                    self.r
                );
                Reply::Static(resp::SERVER_ERROR_READ_FAILED)
            }
        }
    }

    /// Multi-key get (§4.3).
    pub async fn getm(&mut self, keys: &[Bytes], gets: bool) -> Reply {
        let state = self.state.clone();
        let table = &state.table;
        let mut plan: Planner<Item> = Planner::new(self.r, table.backups().to_vec());
        // Host latency figures, read once per request instead of once per key.
        let floor = self.score_floor;
        let score = |h: usize| state.host(h).health.score().unwrap_or(floor).max(floor);
        let mut effs: Vec<Option<f64>> = vec![None; state.hosts.len()];
        for key in keys {
            if plan.contains(key) {
                continue;
            }
            match table.route_key(key) {
                KeyRoute::Local(Local::EmptyValue) => {
                    plan.add_local(key.clone(), Some(Item::new(key.clone(), 0, Bytes::new())))
                }
                KeyRoute::Local(_) => plan.add_local(key.clone(), None),
                KeyRoute::Bucket(b) => {
                    let replicas = table.replicas(key, b);
                    for &h in &replicas {
                        if let Some(e @ None) = effs.get_mut(h) {
                            *e = Some(score(h));
                        }
                    }
                    let eff = |h: usize| match effs.get(h).copied().flatten() {
                        Some(e) => e,
                        None => score(h),
                    };
                    let order = read_order(&replicas, |h| self.down(h), eff, self.deviation);
                    let (order, dropped) = self.settle_order(key, order).await;
                    let failed = dropped || replicas.iter().any(|&h| self.down(h));
                    plan.add(key.clone(), order, failed);
                }
            }
        }
        loop {
            let groups = plan.round(|h| state.is_down(h));
            if groups.is_empty() {
                break;
            }
            // The groups run concurrently inside this request's task: spawning one task per
            // group costs allocations and cross-thread wake-ups for no gain (they only wait).
            let mut pending: FuturesUnordered<_> = groups
                .iter()
                .enumerate()
                .map(|(gi, g)| {
                    if table.backups().contains(&g.host) {
                        metrics::backup_read();
                    }
                    let host = self.state.host(g.host).clone();
                    let ks: Vec<Bytes> = g.keys.iter().map(|&i| plan.key(i).clone()).collect();
                    let deadline = self.deadline;
                    async move { (gi, host.get(&ks, Op::Getm, deadline).await) }
                })
                .collect();
            while let Some((gi, r)) = pending.next().await {
                let g = &groups[gi];
                match r {
                    Ok(items) => {
                        self.targets.push(self.state.table.addr(g.host));
                        for item in items {
                            if let Some(i) = plan.position(&item.key) {
                                plan.hit(i, item);
                            }
                        }
                        plan.answered(g);
                    }
                    Err(_) => plan.failed(g),
                }
            }
        }
        match plan.finish() {
            Ok(items) => Reply::Values { items, gets },
            Err(f) => {
                if self.deadline_passed() {
                    Reply::Static(resp::SERVER_ERROR_TIMEOUT)
                } else {
                    metrics::quorum_failure("getm");
                    warn!(
                        "getm: read failed for {}: {} of R={} replicas answered",
                        escape(&f.key),
                        f.answered,
                        self.r
                    );
                    Reply::Static(resp::SERVER_ERROR_READ_FAILED)
                }
            }
        }
    }

    // ---- writes -----------------------------------------------------------------------

    fn spawn_write(
        &self,
        h: usize,
        backup: bool,
        tx: &mpsc::UnboundedSender<WriteResult>,
        job: WriteJob,
    ) {
        let host = self.state.host(h).clone();
        let tx = tx.clone();
        let deadline = self.deadline;
        let guard = self.bg.enter();
        tokio::spawn(async move {
            let r = job.run(&host, deadline).await;
            let (ack, found) = job.ack(&r);
            let _ = tx.send(WriteResult {
                host: h,
                addr: host.addr.clone(),
                backup,
                ack,
                found,
                r,
            });
            drop(guard);
        });
    }

    /// set / add / replace / cas (§4.4).
    pub async fn set(&mut self, key: Bytes, flag: u32, exptime: i32, body: Arc<Body>) -> Reply {
        let job = WriteJob::Set {
            key: key.clone(),
            flag,
            exptime,
            body,
        };
        self.write(key, job, "set").await
    }

    /// delete (§4.5).
    pub async fn delete(&mut self, key: Bytes) -> Reply {
        let job = WriteJob::Delete { key: key.clone() };
        self.write(key, job, "delete").await
    }

    async fn write(&mut self, key: Bytes, job: WriteJob, cmd: &'static str) -> Reply {
        let is_delete = matches!(job, WriteJob::Delete { .. });
        self.settle_write(&key).await;
        let bucket = self.state.table.bucket_of(&key);
        let replicas = self.state.table.replicas(&key, bucket);
        let backups: Vec<usize> = self.state.table.backups().to_vec();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut q = WriteQuorum::new(self.w);
        let mut results: Vec<(String, String)> = Vec::new();
        // Who is writing, for this connection's later requests of the same key.
        let mut writing: Vec<(String, HostState)> = Vec::new();
        for &h in &replicas {
            let addr = self.state.table.addr(h).to_string();
            if self.down(h) {
                results.push((addr, "down".into()));
            } else {
                q.main_sent();
                self.spawn_write(h, false, &tx, job.clone());
                writing.push((addr, HostState::Pending));
            }
        }
        let start_backups =
            |ex: &Self, q: &mut WriteQuorum, writing: &mut Vec<(String, HostState)>| {
                let mut sent = 0;
                for &b in &backups {
                    if !ex.down(b) {
                        ex.spawn_write(b, true, &tx, job.clone());
                        writing.push((ex.state.table.addr(b).to_string(), HostState::Pending));
                        sent += 1;
                    }
                }
                if sent > 0 {
                    metrics::backup_write();
                }
                q.backups_started(sent);
            };
        if is_delete {
            // Backups always take deletes: an old failover copy must not reappear.
            start_backups(self, &mut q, &mut writing);
        }
        let mut acked_by: Vec<String> = Vec::new();
        loop {
            match q.decide() {
                Decision::Success { found } => {
                    for a in &acked_by {
                        self.targets.push(a);
                    }
                    if q.pending() > 0 {
                        self.trailing.push(Trailing::new(
                            key,
                            is_delete,
                            rx,
                            writing,
                            self.deadline,
                        ));
                    }
                    return Reply::Static(match (is_delete, found) {
                        (false, _) => resp::STORED,
                        (true, true) => resp::DELETED,
                        (true, false) => resp::NOT_FOUND,
                    });
                }
                Decision::Failure => {
                    for a in &acked_by {
                        self.targets.push(a);
                    }
                    metrics::quorum_failure(if is_delete { "del" } else { "set" });
                    warn!(
                        "{cmd} {}: fewer than W={} acks; results {:?}",
                        escape(&key),
                        self.w,
                        results
                    );
                    return Reply::Static(if is_delete {
                        resp::SERVER_ERROR_DELETE_FAILED
                    } else {
                        resp::SERVER_ERROR_WRITE_FAILED
                    });
                }
                Decision::StartBackups => start_backups(self, &mut q, &mut writing),
                Decision::Wait => {
                    let Some(res) = rx.recv().await else {
                        // Every sender is gone with replies missing: a write task died.
                        return Reply::Static(resp::SERVER_ERROR_INTERNAL);
                    };
                    let addr = self.state.table.addr(res.host).to_string();
                    let (ack, found) = (res.ack, res.found);
                    if let Some(w) = writing.iter_mut().find(|(a, _)| *a == addr) {
                        w.1 = if ack {
                            HostState::Acked
                        } else {
                            HostState::Failed
                        };
                    }
                    results.push((addr.clone(), describe(&res.r)));
                    if ack {
                        acked_by.push(addr);
                    }
                    if res.backup {
                        q.backup_result(ack, found);
                    } else {
                        q.main_result(ack, found);
                    }
                }
            }
        }
    }

    /// incr (§4.6).
    pub async fn incr(&mut self, key: Bytes, delta: i64) -> Reply {
        self.settle_write(&key).await;
        let bucket = self.state.table.bucket_of(&key);
        let replicas = self.state.table.replicas(&key, bucket);
        let any_down = replicas.iter().any(|&h| self.down(h));
        let mains = self.incr_step(&key, delta, &replicas).await;
        let mut backups_tally = None;
        if !mains.acked() && (mains.any_failed() || any_down) {
            let backups: Vec<usize> = self.state.table.backups().to_vec();
            metrics::backup_write();
            backups_tally = Some(self.incr_step(&key, delta, &backups).await);
        }
        let steps: Vec<&IncrTally> = std::iter::once(&mains)
            .chain(backups_tally.as_ref())
            .collect();
        match IncrTally::outcome(&steps) {
            IncrOutcome::Value(v) => Reply::Number(v),
            IncrOutcome::Zero => Reply::Number(0),
            IncrOutcome::Failed => {
                if self.deadline_passed() {
                    Reply::Static(resp::SERVER_ERROR_TIMEOUT)
                } else {
                    metrics::quorum_failure("incr");
                    warn!("incr {}: no replica acked", escape(&key));
                    Reply::Static(resp::SERVER_ERROR_INCR_FAILED)
                }
            }
        }
    }

    async fn incr_step(&mut self, key: &Bytes, delta: i64, hosts: &[usize]) -> IncrTally {
        let mut tally = IncrTally::default();
        let mut tasks = JoinSet::new();
        for &h in hosts {
            if self.down(h) {
                tally.fail();
                continue;
            }
            let host = self.state.host(h).clone();
            let key = key.clone();
            let deadline = self.deadline;
            let guard = self.bg.enter();
            tasks.spawn(async move {
                let r = host.incr(&key, delta, deadline).await;
                drop(guard);
                (host.addr.clone(), r)
            });
        }
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((addr, Ok(r))) => {
                    let n = match r {
                        Response::Number(n) => Some(n),
                        _ => None,
                    };
                    if n.is_some_and(|n| n > 0) {
                        self.targets.push(&addr);
                    }
                    tally.answer(n);
                }
                _ => tally.fail(),
            }
        }
        tally
    }
}

/// A single-key get answered by the proxy (§2.5).
fn local_single(l: Local, key: Bytes, gets: bool) -> Reply {
    match l {
        Local::BadKeyQ => Reply::Static(resp::SERVER_ERROR_BAD_KEY_Q),
        Local::Miss => Reply::Values {
            items: Vec::new(),
            gets,
        },
        Local::EmptyValue => Reply::Values {
            items: vec![Item::new(key, 0, Bytes::new())],
            gets,
        },
        Local::BadFormat => Reply::Static(resp::SERVER_ERROR_BAD_COMMAND_LINE_FORMAT),
    }
}

#[derive(Clone)]
enum WriteJob {
    Set {
        key: Bytes,
        flag: u32,
        exptime: i32,
        body: Arc<Body>,
    },
    Delete {
        key: Bytes,
    },
}

impl WriteJob {
    /// `(ack, found)` of a reply (§4: `STORED`; `DELETED` or `NOT_FOUND`).
    fn ack(&self, r: &Result<Response, BackendError>) -> (bool, bool) {
        match (self, r) {
            (WriteJob::Set { .. }, Ok(Response::Stored)) => (true, false),
            (WriteJob::Delete { .. }, Ok(Response::Deleted)) => (true, true),
            (WriteJob::Delete { .. }, Ok(Response::NotFound)) => (true, false),
            _ => (false, false),
        }
    }

    async fn run(&self, host: &Arc<Host>, deadline: Instant) -> Result<Response, BackendError> {
        match self {
            WriteJob::Set {
                key,
                flag,
                exptime,
                body,
            } => host.set(key, *flag, *exptime, &body.data, deadline).await,
            WriteJob::Delete { key } => host.delete(key, deadline).await,
        }
    }
}
