//! Backend hosts: a connection pool per address, request execution with timeouts, health
//! bookkeeping and probes (proxy.md §3.6, §5).
//!
//! One outstanding request per connection. Any failure closes the connection; a well-formed
//! reply (including `SERVER_ERROR`) returns it to the idle LIFO.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use beansdb_protocol::client::{
    encode_delete, encode_get, encode_incr, encode_set_header, encode_version, ReplyKind, Response,
    ResponseDecoder, Value,
};
use beansdb_protocol::SetKind;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

use crate::buffers::{track, BufKind, Tracked};
use crate::health::{Health, HealthParams, HealthView};
use crate::lanes::{LaneError, Lanes};
use crate::metrics;

/// Idle connections unused this long are closed.
pub const IDLE_TTL: Duration = Duration::from_secs(60);
/// Values up to this size are copied into the request buffer (one write); larger ones are
/// written from their own buffer.
const INLINE_VALUE: usize = 16 << 10;

/// Backend settings shared by every host (from `dstore:`).
#[derive(Debug, Clone)]
pub struct BackendSettings {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub max_idle: usize,
    pub max_conns: usize,
    /// Replies with fewer value bytes feed the latency score.
    pub item_size_stats: usize,
    pub health: HealthParams,
}

impl Default for BackendSettings {
    fn default() -> Self {
        BackendSettings {
            connect_timeout: Duration::from_millis(300),
            read_timeout: Duration::from_millis(2000),
            write_timeout: Duration::from_millis(2000),
            max_idle: 20,
            max_conns: 512,
            item_size_stats: 4096,
            health: HealthParams::default(),
        }
    }
}

/// Backend operation, for timeouts, retries and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Getm,
    Set,
    Delete,
    Incr,
    Probe,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Getm => "getm",
            Op::Set => "set",
            Op::Delete => "delete",
            Op::Incr => "incr",
            Op::Probe => "probe",
        }
    }
}

/// Why a backend request produced no reply.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("host is down")]
    Down,
    #[error("timed out")]
    Timeout,
    /// The client's deadline ran out first; not a host failure.
    #[error("request deadline passed")]
    Deadline,
    /// No connection slot before the deadline; not a host failure.
    #[error("no free connection before the deadline")]
    PoolFull,
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("i/o: {0}")]
    Io(io::Error),
    #[error("protocol: {0}")]
    Proto(String),
    /// A well-formed error line (`SERVER_ERROR …`): the host is alive but did not answer.
    #[error("error reply: {0}")]
    Reply(String),
}

impl BackendError {
    pub fn label(&self) -> &'static str {
        match self {
            BackendError::Down => "skipped_down",
            BackendError::Timeout | BackendError::Deadline | BackendError::PoolFull => "timeout",
            BackendError::Connect(_) => "conn_error",
            BackendError::Io(_) => "conn_error",
            BackendError::Proto(_) => "proto_error",
            BackendError::Reply(_) => "server_error",
        }
    }
}

/// A value from a backend, accounted in `/buffer/` GetData until dropped.
#[derive(Debug)]
pub struct Item {
    pub key: Bytes,
    pub flag: u32,
    pub data: Bytes,
    /// What `gets` reports: 0 for beansdb (it has no cas), the stored `cas` for C*.
    pub cas: u32,
    _acct: Tracked,
}

impl Item {
    pub fn new(key: Bytes, flag: u32, data: Bytes) -> Item {
        let acct = track(BufKind::GetData, data.len());
        Item {
            key,
            flag,
            data,
            cas: 0,
            _acct: acct,
        }
    }

    pub fn with_cas(mut self, cas: u32) -> Item {
        self.cas = cas;
        self
    }
}

/// The request bytes of one exchange.
enum Wire<'a> {
    Line(BytesMut),
    /// A storage header and its value (written separately when large).
    Set(BytesMut, &'a Bytes),
}

/// How an exchange failed.
enum ExchangeError {
    /// Reading or writing failed; `replied` tells whether any reply byte had arrived.
    Io {
        err: io::Error,
        replied: bool,
    },
    Proto(String),
}

struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    dec: ResponseDecoder,
    last_used: Instant,
    _slot: OwnedSemaphorePermit,
}

impl Conn {
    async fn exchange(
        &mut self,
        req: &Wire<'_>,
        kind: ReplyKind,
    ) -> Result<Response, ExchangeError> {
        let io_err = |err, replied| ExchangeError::Io { err, replied };
        self.dec.expect(kind);
        if !self.rbuf.is_empty() {
            return Err(ExchangeError::Proto(
                "unsolicited bytes before the request".into(),
            ));
        }
        match req {
            Wire::Line(b) => self
                .stream
                .write_all(b)
                .await
                .map_err(|e| io_err(e, false))?,
            Wire::Set(head, value) => {
                if value.len() <= INLINE_VALUE {
                    let mut b = BytesMut::with_capacity(head.len() + value.len() + 2);
                    b.extend_from_slice(head);
                    b.extend_from_slice(value);
                    b.extend_from_slice(b"\r\n");
                    self.stream
                        .write_all(&b)
                        .await
                        .map_err(|e| io_err(e, false))?;
                } else {
                    self.stream
                        .write_all(head)
                        .await
                        .map_err(|e| io_err(e, false))?;
                    self.stream
                        .write_all(value)
                        .await
                        .map_err(|e| io_err(e, false))?;
                    self.stream
                        .write_all(b"\r\n")
                        .await
                        .map_err(|e| io_err(e, false))?;
                }
            }
        }
        let mut replied = false;
        loop {
            match self.dec.decode(&mut self.rbuf) {
                Ok(Some(resp)) => {
                    if !self.rbuf.is_empty() {
                        return Err(ExchangeError::Proto("extra bytes after the reply".into()));
                    }
                    return Ok(resp);
                }
                Ok(None) => {}
                Err(e) => return Err(ExchangeError::Proto(e.to_string())),
            }
            let want = match self.dec.pending_value_len() {
                // Room for the whole value at once: no repeated regrowth for big values.
                Some(len) => (len + 2)
                    .saturating_sub(self.rbuf.len())
                    .clamp(4096, 64 << 20),
                None => 16 << 10,
            };
            self.rbuf.reserve(want);
            let n = self
                .stream
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|e| io_err(e, replied))?;
            if n == 0 {
                return Err(io_err(
                    io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"),
                    replied,
                ));
            }
            replied = true;
        }
    }
}

/// Which lanes a request goes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LaneClass {
    /// Gets and deletes.
    Read,
    /// Sets of values up to [`INLINE_VALUE`], on lanes of their own: a node's write path is
    /// slower than its reads, and gets queued behind sets raised the p99 of a 90/10 mix by
    /// about a millisecond (bench/README.md).
    Write,
}

/// The bytes of a request that goes over a lane, and which lanes. Larger values and `incr`
/// (not idempotent: never sent twice nor queued) keep exclusive connections; probes
/// (`version`) test a new connection.
fn lane_request(req: &Wire<'_>, kind: ReplyKind) -> Option<(BytesMut, LaneClass)> {
    match (req, kind) {
        (Wire::Line(b), ReplyKind::Retrieval | ReplyKind::Delete) => {
            Some((b.clone(), LaneClass::Read))
        }
        (Wire::Set(head, value), ReplyKind::Storage) if value.len() <= INLINE_VALUE => {
            let mut b = BytesMut::with_capacity(head.len() + value.len() + 2);
            b.extend_from_slice(head);
            b.extend_from_slice(value);
            b.extend_from_slice(b"\r\n");
            Some((b, LaneClass::Write))
        }
        _ => None,
    }
}

/// One backend address: pool, health and probe state. Shared by routing states across
/// reloads while the address stays in the route.
pub struct Host {
    pub addr: String,
    pub health: Health,
    metrics: metrics::HostMetrics,
    settings: Arc<BackendSettings>,
    idle: Mutex<Vec<Conn>>,
    slots: Arc<Semaphore>,
    /// Pipelined connections for gets and deletes, and for small sets (no slot taken).
    lanes: Lanes,
    write_lanes: Lanes,
    closed: AtomicBool,
    probing: AtomicBool,
}

/// Connection counts for `/api/hosts` and metrics.
#[derive(Debug, Clone, Copy)]
pub struct ConnCounts {
    pub idle: usize,
    pub busy: usize,
}

impl Host {
    pub fn new(addr: &str, settings: Arc<BackendSettings>) -> Arc<Host> {
        let h = Arc::new(Host {
            addr: addr.to_string(),
            health: Health::new(settings.health.clone()),
            metrics: metrics::HostMetrics::new(addr),
            slots: Arc::new(Semaphore::new(settings.max_conns.max(1))),
            lanes: Lanes::default(),
            write_lanes: Lanes::default(),
            settings,
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            probing: AtomicBool::new(false),
        });
        metrics::host_up(&h.addr, true);
        h
    }

    pub fn is_up(&self) -> bool {
        self.health.is_up()
    }

    pub fn view(&self) -> HealthView {
        self.health.view()
    }

    pub fn conns(&self) -> ConnCounts {
        let idle = self.idle.lock().len();
        let open = self
            .settings
            .max_conns
            .max(1)
            .saturating_sub(self.slots.available_permits());
        ConnCounts {
            idle,
            busy: open.saturating_sub(idle) + self.lanes.open() + self.write_lanes.open(),
        }
    }

    /// Removed from the route: stop probing, close idle connections now and busy ones when
    /// they come back.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.idle.lock().clear();
        self.lanes.clear();
        self.write_lanes.clear();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Closes idle connections unused for [`IDLE_TTL`].
    pub fn sweep_idle(&self) {
        self.idle
            .lock()
            .retain(|c| c.last_used.elapsed() < IDLE_TTL);
    }

    // ---- operations ---------------------------------------------------------------------

    /// `get k1 k2 …`; the values returned, validated against the keys asked.
    pub async fn get(
        self: &Arc<Self>,
        keys: &[Bytes],
        op: Op,
        deadline: Instant,
    ) -> Result<Vec<Item>, BackendError> {
        let mut line = BytesMut::with_capacity(keys.iter().map(|k| k.len() + 1).sum::<usize>() + 6);
        encode_get(&mut line, keys).map_err(|e| BackendError::Proto(e.to_string()))?;
        let started = Instant::now();
        let resp = self
            .call(
                op,
                Wire::Line(line),
                ReplyKind::Retrieval,
                self.settings.read_timeout,
                deadline,
                true,
            )
            .await?;
        let values = match resp {
            Response::Values(v) => v,
            Response::Error { msg, .. } => {
                self.metrics.result(op, "server_error");
                return Err(BackendError::Reply(
                    String::from_utf8_lossy(&msg).into_owned(),
                ));
            }
            _ => return Err(self.protocol_failure(op, "unexpected reply to get")),
        };
        let mut items = Vec::with_capacity(values.len());
        let mut bytes = 0usize;
        for Value {
            key, flag, data, ..
        } in values
        {
            if !keys.contains(&key) {
                return Err(self.protocol_failure(op, "VALUE for a key not asked"));
            }
            bytes += data.len();
            items.push(Item::new(key, flag, data));
        }
        if bytes < self.settings.item_size_stats {
            self.health.sample(started.elapsed().as_micros() as f64);
        }
        self.metrics
            .result(op, if items.is_empty() { "miss" } else { "ok" });
        Ok(items)
    }

    /// `set k flags exptime bytes` (never noreply).
    pub async fn set(
        self: &Arc<Self>,
        key: &[u8],
        flag: u32,
        exptime: i32,
        value: &Bytes,
        deadline: Instant,
    ) -> Result<Response, BackendError> {
        let mut head = BytesMut::with_capacity(key.len() + 40);
        encode_set_header(
            &mut head,
            SetKind::Set,
            key,
            flag,
            exptime,
            value.len(),
            false,
        )
        .map_err(|e| BackendError::Proto(e.to_string()))?;
        self.call_counted(
            Op::Set,
            Wire::Set(head, value),
            ReplyKind::Storage,
            self.settings.write_timeout,
            deadline,
            true,
        )
        .await
    }

    pub async fn delete(
        self: &Arc<Self>,
        key: &[u8],
        deadline: Instant,
    ) -> Result<Response, BackendError> {
        let mut line = BytesMut::with_capacity(key.len() + 10);
        encode_delete(&mut line, key, false).map_err(|e| BackendError::Proto(e.to_string()))?;
        self.call_counted(
            Op::Delete,
            Wire::Line(line),
            ReplyKind::Delete,
            self.settings.read_timeout,
            deadline,
            true,
        )
        .await
    }

    /// `incr`: never retried (not idempotent).
    pub async fn incr(
        self: &Arc<Self>,
        key: &[u8],
        delta: i64,
        deadline: Instant,
    ) -> Result<Response, BackendError> {
        let mut line = BytesMut::with_capacity(key.len() + 30);
        encode_incr(&mut line, key, delta, false)
            .map_err(|e| BackendError::Proto(e.to_string()))?;
        self.call_counted(
            Op::Incr,
            Wire::Line(line),
            ReplyKind::Incr,
            self.settings.read_timeout,
            deadline,
            false,
        )
        .await
    }

    /// A write exchange, its reply counted in the backend result metric.
    async fn call_counted(
        self: &Arc<Self>,
        op: Op,
        req: Wire<'_>,
        kind: ReplyKind,
        timeout: Duration,
        deadline: Instant,
        retry_stale: bool,
    ) -> Result<Response, BackendError> {
        let resp = self
            .call(op, req, kind, timeout, deadline, retry_stale)
            .await?;
        let label = match (op, &resp) {
            (Op::Set, Response::Stored)
            | (Op::Delete, Response::Deleted)
            | (Op::Incr, Response::Number(_)) => "ok",
            (Op::Delete | Op::Incr, Response::NotFound) => "miss",
            (Op::Set, Response::Error { .. }) => "server_error",
            (Op::Set, _) => "not_stored",
            _ => "server_error",
        };
        self.metrics.result(op, label);
        Ok(resp)
    }

    fn protocol_failure(self: &Arc<Self>, op: Op, what: &str) -> BackendError {
        // The connection was already returned; the reply was well framed but wrong. Count it
        // as a host failure all the same.
        self.failed(false);
        self.metrics.result(op, "proto_error");
        BackendError::Proto(what.to_string())
    }

    /// One request with pool checkout, timeouts, the stale-connection retry and health.
    async fn call(
        self: &Arc<Self>,
        op: Op,
        req: Wire<'_>,
        kind: ReplyKind,
        timeout: Duration,
        deadline: Instant,
        retry_stale: bool,
    ) -> Result<Response, BackendError> {
        let started = Instant::now();
        let r = match lane_request(&req, kind) {
            Some((line, class)) => {
                let lanes = match class {
                    LaneClass::Read => &self.lanes,
                    LaneClass::Write => &self.write_lanes,
                };
                self.call_lane(
                    lanes,
                    line,
                    kind,
                    timeout,
                    deadline,
                    retry_stale && kind == ReplyKind::Retrieval,
                )
                .await
            }
            _ => {
                self.call_inner(req, kind, timeout, deadline, retry_stale)
                    .await
            }
        };
        self.metrics.duration(op, started.elapsed());
        if let Err(e) = &r {
            self.metrics.result(op, e.label());
        }
        r
    }

    /// Before each attempt: a down host is not contacted, and a spent deadline would only
    /// burn a connection.
    fn ready(&self, deadline: Instant) -> Result<(), BackendError> {
        if !self.is_up() {
            return Err(BackendError::Down);
        }
        if Instant::now() >= deadline {
            return Err(BackendError::Deadline);
        }
        Ok(())
    }

    /// One exchange over a pipelined lane, with the failure rules of an exclusive connection.
    /// `retry`: a request aborted by the lane closing under it may be sent again (reads; a
    /// write may already have been applied).
    async fn call_lane(
        self: &Arc<Self>,
        lanes: &Lanes,
        line: BytesMut,
        kind: ReplyKind,
        timeout: Duration,
        deadline: Instant,
        retry: bool,
    ) -> Result<Response, BackendError> {
        let mut retried = false;
        loop {
            self.ready(deadline)?;
            let lane = if retried {
                lanes.pick_fresh(|| self.connect(deadline)).await?
            } else {
                lanes.pick(|| self.connect(deadline)).await?
            };
            let Some(rx) = lane.send(line.clone(), kind) else {
                // The lane ended between picking and sending.
                lanes.discard(&lane);
                if !retried {
                    retried = true;
                    continue;
                }
                return Err(BackendError::Io(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "lane closed",
                )));
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let cut_by_deadline = remaining < timeout;
            match tokio::time::timeout(timeout.min(remaining), rx).await {
                Ok(Ok(Ok(resp))) => {
                    self.health.on_success();
                    return Ok(resp);
                }
                Ok(Ok(Err(LaneError::Aborted))) | Ok(Err(_)) if retry && !retried => {
                    // Closed under us for another request, or the backend closed an idle
                    // connection: not this host's failure; once more on a new lane.
                    lanes.discard(&lane);
                    retried = true;
                }
                Ok(Ok(Err(LaneError::Aborted))) | Ok(Err(_)) => {
                    lanes.discard(&lane);
                    if retried {
                        self.failed(false);
                    }
                    return Err(BackendError::Io(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "connection closed under the request",
                    )));
                }
                Ok(Ok(Err(LaneError::Io(e)))) => {
                    lanes.discard(&lane);
                    self.failed(false);
                    return Err(BackendError::Io(e));
                }
                Ok(Ok(Err(LaneError::Proto(m)))) => {
                    lanes.discard(&lane);
                    self.failed(false);
                    return Err(BackendError::Proto(m));
                }
                Err(_) => {
                    if cut_by_deadline {
                        // The late reply is read and dropped by the lane; nothing to close.
                        return Err(BackendError::Deadline);
                    }
                    // The host is stuck on this lane: close it (requests queued behind are
                    // retried) and count the timeout.
                    lanes.discard(&lane);
                    self.failed(false);
                    return Err(BackendError::Timeout);
                }
            }
        }
    }

    /// A new connection within `connect_timeout` and the deadline; a failure marks the host
    /// down (hard, §3.6) unless the deadline cut it.
    async fn connect(self: &Arc<Self>, deadline: Instant) -> Result<TcpStream, BackendError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let budget = self.settings.connect_timeout.min(remaining);
        match tokio::time::timeout(budget, TcpStream::connect(self.addr.as_str())).await {
            Ok(Ok(s)) => {
                tune_socket(&s);
                Ok(s)
            }
            Ok(Err(e)) => {
                self.failed(true);
                Err(BackendError::Connect(e))
            }
            Err(_) => {
                if remaining < self.settings.connect_timeout {
                    return Err(BackendError::Deadline);
                }
                self.failed(true);
                Err(BackendError::Connect(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connect timed out",
                )))
            }
        }
    }

    async fn call_inner(
        self: &Arc<Self>,
        req: Wire<'_>,
        kind: ReplyKind,
        timeout: Duration,
        deadline: Instant,
        retry_stale: bool,
    ) -> Result<Response, BackendError> {
        let mut retried = false;
        loop {
            self.ready(deadline)?;
            let (mut conn, reused) = self.checkout(deadline, retried).await?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let budget = timeout.min(remaining);
            let cut_by_deadline = remaining < timeout;
            match tokio::time::timeout(budget, conn.exchange(&req, kind)).await {
                Ok(Ok(resp)) => {
                    self.health.on_success();
                    self.checkin(conn);
                    return Ok(resp);
                }
                Ok(Err(ExchangeError::Io { err, replied })) => {
                    drop(conn);
                    let stale = reused
                        && !replied
                        && matches!(
                            err.kind(),
                            io::ErrorKind::UnexpectedEof
                                | io::ErrorKind::ConnectionReset
                                | io::ErrorKind::BrokenPipe
                                | io::ErrorKind::ConnectionAborted
                        );
                    if stale && retry_stale && !retried {
                        // A pooled connection the backend closed meanwhile (e.g. a restart);
                        // not the host's fault. Its idle siblings most likely died with it:
                        // drop them and try once on a new connection.
                        self.idle.lock().clear();
                        retried = true;
                        continue;
                    }
                    self.failed(false);
                    return Err(BackendError::Io(err));
                }
                Ok(Err(ExchangeError::Proto(msg))) => {
                    drop(conn);
                    self.failed(false);
                    return Err(BackendError::Proto(msg));
                }
                Err(_) => {
                    // A timed-out connection may still receive the late reply: close it.
                    drop(conn);
                    if cut_by_deadline {
                        return Err(BackendError::Deadline);
                    }
                    self.failed(false);
                    return Err(BackendError::Timeout);
                }
            }
        }
    }

    /// An idle connection (`true`: reused), or a new one when none is idle or `fresh`.
    async fn checkout(
        self: &Arc<Self>,
        deadline: Instant,
        fresh: bool,
    ) -> Result<(Conn, bool), BackendError> {
        if !fresh {
            loop {
                let c = self.idle.lock().pop();
                match c {
                    Some(c) if c.last_used.elapsed() < IDLE_TTL => return Ok((c, true)),
                    Some(_) => continue,
                    None => break,
                }
            }
        }
        let slot = match tokio::time::timeout_at(
            deadline.into(),
            self.slots.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(p)) => p,
            _ => return Err(BackendError::PoolFull),
        };
        let stream = self.connect(deadline).await?;
        Ok((
            Conn {
                stream,
                rbuf: BytesMut::with_capacity(16 << 10),
                dec: ResponseDecoder::new(ReplyKind::Retrieval),
                last_used: Instant::now(),
                _slot: slot,
            },
            false,
        ))
    }

    fn checkin(&self, mut conn: Conn) {
        if self.is_closed() || !conn.rbuf.is_empty() {
            return;
        }
        // A value split off this buffer shares its allocation; start a small one so that an
        // idle connection does not pin a large value's memory.
        if conn.rbuf.capacity() > (64 << 10) {
            conn.rbuf = BytesMut::with_capacity(16 << 10);
        }
        conn.last_used = Instant::now();
        let mut idle = self.idle.lock();
        if idle.len() < self.settings.max_idle {
            idle.push(conn);
        }
    }

    /// Records a failure; starts probing when it took the host down.
    fn failed(self: &Arc<Self>, connect: bool) {
        if let Some(reason) = self.health.on_failure(connect) {
            warn!("host {} down (reason: {})", self.addr, reason.as_str());
            metrics::host_transition(&self.addr, "down", reason.as_str());
            metrics::host_up(&self.addr, false);
            self.idle.lock().clear();
            self.lanes.clear();
            self.write_lanes.clear();
            self.start_probe();
        }
    }

    // ---- probes ---------------------------------------------------------------------------

    fn start_probe(self: &Arc<Self>) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let host = self.clone();
        // Probes need a runtime; outside one (unit tests of the pure parts) health stays down
        // until a probe can run, which is the safe side.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { host.probe_loop().await });
        } else {
            self.probing.store(false, Ordering::Release);
        }
    }

    async fn probe_loop(self: Arc<Self>) {
        loop {
            while !self.is_up() && !self.is_closed() {
                tokio::time::sleep(self.health.until_probe()).await;
                if self.is_closed() {
                    break;
                }
                let started = Instant::now();
                let ok = self.probe_once().await;
                self.metrics.duration(Op::Probe, started.elapsed());
                self.metrics
                    .result(Op::Probe, if ok { "ok" } else { "conn_error" });
                if ok {
                    if self.health.on_probe_success() {
                        warn!("host {} up", self.addr);
                        metrics::host_transition(&self.addr, "up", "probe");
                        metrics::host_up(&self.addr, true);
                    }
                    // Connections from before the down are suspect.
                    self.idle.lock().clear();
                } else {
                    self.health.on_probe_failure();
                }
            }
            self.probing.store(false, Ordering::Release);
            // A failure between the last check and the store above would have found
            // `probing` still set and not started a loop: re-check.
            if self.is_up() || self.is_closed() || self.probing.swap(true, Ordering::AcqRel) {
                break;
            }
        }
        if self.is_closed() {
            info!("host {} removed from the route; probes stopped", self.addr);
        }
    }

    /// `version` on a fresh connection, outside the pool.
    async fn probe_once(&self) -> bool {
        let t = self.settings.read_timeout;
        let attempt = async {
            let mut s = tokio::time::timeout(
                self.settings.connect_timeout.max(t),
                TcpStream::connect(self.addr.as_str()),
            )
            .await
            .ok()?
            .ok()?;
            tune_socket(&s);
            let mut line = BytesMut::new();
            encode_version(&mut line);
            s.write_all(&line).await.ok()?;
            let mut dec = ResponseDecoder::new(ReplyKind::Version);
            let mut buf = BytesMut::with_capacity(256);
            loop {
                if let Some(r) = dec.decode(&mut buf).ok()? {
                    return Some(matches!(r, Response::Version(_)));
                }
                if s.read_buf(&mut buf).await.ok()? == 0 {
                    return None;
                }
            }
        };
        matches!(tokio::time::timeout(t, attempt).await, Ok(Some(true)))
    }
}

fn tune_socket(s: &TcpStream) {
    let _ = s.set_nodelay(true);
    let _ = socket2::SockRef::from(s).set_keepalive(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_backend::{line_backend, serve_on};
    use tokio::net::TcpListener;

    /// What the fake backend does with a request line.
    #[derive(Clone)]
    enum Act {
        Reply(&'static [u8]),
        ReplyThenClose(&'static [u8]),
        Silent,
    }

    /// A backend answering every command line with `act(line)`.
    async fn fake_on(listener: TcpListener, act: fn(&str) -> Act) {
        serve_on(listener, move |mut lines, mut wr| async move {
            while let Ok(Some(line)) = lines.next_line().await {
                match act(&line) {
                    Act::Reply(r) => {
                        if wr.write_all(r).await.is_err() {
                            return;
                        }
                    }
                    Act::ReplyThenClose(r) => {
                        let _ = wr.write_all(r).await;
                        return;
                    }
                    Act::Silent => {}
                }
            }
        });
    }

    async fn fake(act: fn(&str) -> Act) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        fake_on(l, act).await;
        addr
    }

    fn settings() -> Arc<BackendSettings> {
        Arc::new(BackendSettings {
            read_timeout: Duration::from_millis(100),
            write_timeout: Duration::from_millis(100),
            health: HealthParams {
                max_errors: 3,
                dial_silence: Duration::from_millis(50),
                probe_interval: Duration::from_millis(50),
                ..HealthParams::default()
            },
            ..BackendSettings::default()
        })
    }

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    fn keys(k: &[&'static str]) -> Vec<Bytes> {
        k.iter().map(|s| Bytes::from_static(s.as_bytes())).collect()
    }

    /// Concurrent gets share at most [`crate::lanes::LANES`] connections, and every caller
    /// gets the reply to its own request (replies are matched by order).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelined_gets_share_lanes_and_get_their_own_replies() {
        let (addr, accepted) = line_backend(|mut lines, mut wr| async move {
            while let Ok(Some(line)) = lines.next_line().await {
                // `get k`: the value is the key reversed; a miss for keys ending in 0.
                let k = line.trim_start_matches("get ");
                let reply = if k.ends_with('0') {
                    "END\r\n".to_string()
                } else {
                    let v: String = k.chars().rev().collect();
                    format!("VALUE {k} 0 {}\r\n{v}\r\nEND\r\n", v.len())
                };
                if wr.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
        })
        .await;
        let mut s = (*settings()).clone();
        s.read_timeout = Duration::from_secs(5);
        let h = Host::new(&addr, Arc::new(s));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..400 {
            let h = h.clone();
            tasks.spawn(async move {
                let k = format!("key{i}");
                let items = h
                    .get(&[Bytes::from(k.clone())], Op::Get, soon(5000))
                    .await
                    .unwrap();
                (k, items)
            });
        }
        while let Some(r) = tasks.join_next().await {
            let (k, items) = r.unwrap();
            if k.ends_with('0') {
                assert!(items.is_empty(), "{k}");
            } else {
                let want: String = k.chars().rev().collect();
                assert_eq!(items.len(), 1, "{k}");
                assert_eq!(&items[0].data[..], want.as_bytes(), "{k}");
            }
        }
        assert!(
            accepted.load(Ordering::Relaxed) <= crate::lanes::LANES,
            "{} connections for 400 gets",
            accepted.load(Ordering::Relaxed)
        );
        assert_eq!(h.view().failures, 0);
    }

    #[tokio::test]
    async fn values_are_checked_against_the_keys_asked() {
        let addr = fake(|line| match line {
            "get a b" => Act::Reply(b"VALUE b 5 2\r\nhi\r\nEND\r\n"),
            _ => Act::Reply(b"VALUE zzz 0 1\r\nx\r\nEND\r\n"),
        })
        .await;
        let h = Host::new(&addr, settings());
        let items = h
            .get(&keys(&["a", "b"]), Op::Getm, soon(1000))
            .await
            .unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(
            (&items[0].key[..], items[0].flag, &items[0].data[..]),
            (&b"b"[..], 5, &b"hi"[..])
        );
        assert!(
            h.health.score().is_some(),
            "small replies feed the latency score"
        );
        let e = h.get(&keys(&["c"]), Op::Get, soon(1000)).await.unwrap_err();
        assert!(matches!(e, BackendError::Proto(_)), "{e:?}");
        assert_eq!(h.view().failures, 1);
    }

    #[tokio::test]
    async fn error_replies_are_not_failures() {
        let addr = fake(|_| Act::Reply(b"SERVER_ERROR bucket not served\r\n")).await;
        let h = Host::new(&addr, settings());
        let e = h.get(&keys(&["a"]), Op::Get, soon(1000)).await.unwrap_err();
        assert!(matches!(e, BackendError::Reply(_)), "{e:?}");
        let r = h.delete(b"a", soon(1000)).await.unwrap();
        assert!(matches!(r, Response::Error { .. }));
        assert_eq!(h.view().failures, 0);
        assert!(
            h.lanes.open() >= 1,
            "a well-formed reply keeps the (pipelined) connection"
        );
    }

    #[tokio::test]
    async fn timeouts_count_unless_the_deadline_cut_them() {
        let addr = fake(|_| Act::Silent).await;
        let h = Host::new(&addr, settings());
        let e = h.get(&keys(&["a"]), Op::Get, soon(40)).await.unwrap_err();
        assert!(matches!(e, BackendError::Deadline), "{e:?}");
        assert_eq!(h.view().failures, 0);
        for _ in 0..2 {
            let e = h.get(&keys(&["a"]), Op::Get, soon(1000)).await.unwrap_err();
            assert!(matches!(e, BackendError::Timeout), "{e:?}");
        }
        assert!(h.is_up());
        assert_eq!(h.conns().idle, 0, "timed-out connections are closed");
        let _ = h.get(&keys(&["a"]), Op::Get, soon(1000)).await;
        assert!(!h.is_up(), "max_errors timeouts take the host down");
        let t0 = Instant::now();
        let e = h.get(&keys(&["a"]), Op::Get, soon(1000)).await.unwrap_err();
        assert!(matches!(e, BackendError::Down));
        assert!(t0.elapsed() < Duration::from_millis(20));
    }

    #[tokio::test]
    async fn stale_pooled_connections_are_retried_once() {
        let addr = fake(|line| match line {
            "version" => Act::Reply(b"VERSION 1\r\n"),
            _ => Act::ReplyThenClose(b"END\r\n"),
        })
        .await;
        let h = Host::new(&addr, settings());
        for _ in 0..5 {
            let items = h.get(&keys(&["a"]), Op::Get, soon(1000)).await.unwrap();
            assert!(items.is_empty());
            // Let the server's close reach us before the connection is reused.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(h.is_up());
        assert_eq!(h.view().failures, 0);
    }

    #[tokio::test]
    async fn connect_refused_is_hard_down_and_a_probe_brings_it_back() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sa = l.local_addr().unwrap();
        drop(l);
        let h = Host::new(&sa.to_string(), settings());
        let e = h.get(&keys(&["a"]), Op::Get, soon(1000)).await.unwrap_err();
        assert!(matches!(e, BackendError::Connect(_)), "{e:?}");
        assert!(!h.is_up());
        let l = TcpListener::bind(sa).await.unwrap();
        fake_on(l, |line| match line {
            "version" => Act::Reply(b"VERSION 2.1\r\n"),
            _ => Act::Reply(b"END\r\n"),
        })
        .await;
        let t0 = Instant::now();
        while !h.is_up() {
            assert!(
                t0.elapsed() < Duration::from_secs(3),
                "probe did not bring it up"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(h
            .get(&keys(&["a"]), Op::Get, soon(1000))
            .await
            .unwrap()
            .is_empty());
        h.close();
        assert_eq!(h.conns().idle, 0);
    }
}
