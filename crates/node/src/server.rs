//! The memcached-protocol server: socket → codec → command → engine → codec.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use beansdb_observe::accesslog::get_name_and_sizes;
use beansdb_protocol::request::{Command, Decoded, DecoderConfig, RequestDecoder};
use beansdb_protocol::{is_valid_write_key, response as resp};
use beansdb_store::buffers::{track, BufferKind, Tracked};
use beansdb_store::{Durable, Store, StoreError, WriteOutcome};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, error, warn};

use crate::stats::{self, Counters};

/// The `version` reply: must start with `2.1` so tools treat us as gobeansdb 2.1.
pub const VERSION: &str = concat!("2.1.0.18-rs.", env!("CARGO_PKG_VERSION"));

/// Request-level limits from the `mc` config section.
#[derive(Clone, Debug)]
pub struct McSettings {
    pub max_key_len: usize,
    pub body_max: usize,
    pub body_big: usize,
    pub flush_max: u64,
    pub max_req: usize,
    pub timeout: Duration,
}

/// Test hooks, enabled only through `BEANSDB_TEST_HOOKS` (e.g. `panic=k1,sleep=k2:500`):
/// a request for the named key panics inside its handler, or holds its slot for a while.
#[derive(Default, Clone, Debug)]
pub struct TestHooks {
    pub panic_key: Option<Vec<u8>>,
    pub sleep_key: Option<(Vec<u8>, Duration)>,
}

impl TestHooks {
    pub fn from_env() -> TestHooks {
        let mut h = TestHooks::default();
        if let Ok(spec) = std::env::var("BEANSDB_TEST_HOOKS") {
            for part in spec.split(',') {
                if let Some(k) = part.strip_prefix("panic=") {
                    h.panic_key = Some(k.as_bytes().to_vec());
                } else if let Some(rest) = part.strip_prefix("sleep=") {
                    if let Some((k, ms)) = rest.rsplit_once(':') {
                        if let Ok(ms) = ms.parse() {
                            h.sleep_key = Some((k.as_bytes().to_vec(), Duration::from_millis(ms)));
                        }
                    }
                }
            }
        }
        h
    }
}

pub struct Node {
    pub store: Arc<Store>,
    pub settings: McSettings,
    pub counters: Arc<Counters>,
    slots: Semaphore,
    pub started: Instant,
    pub start_unix: u64,
    hooks: TestHooks,
    pub access_log: Option<Arc<crate::accesslog::AccessLog>>,
    pub analysis_log: Option<Arc<crate::accesslog::AccessLog>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

enum Flow {
    Continue,
    Close,
}

impl Node {
    pub fn new(
        store: Arc<Store>,
        settings: McSettings,
        counters: Arc<Counters>,
        started: Instant,
    ) -> Node {
        let slots = Semaphore::new(settings.max_req.max(1));
        Node {
            store,
            settings,
            counters,
            slots,
            started,
            start_unix: unix_now() - started.elapsed().as_secs(),
            hooks: TestHooks::from_env(),
            access_log: None,
            analysis_log: None,
        }
    }

    /// Accepts connections until `shutdown` turns true, then waits up to 2 s for them.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((sock, _)) => {
                        let node = self.clone();
                        let sd = shutdown.clone();
                        tasks.spawn(async move { node.connection(sock, sd).await });
                    }
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown.changed() => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        drop(listener);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
    }

    async fn connection(self: Arc<Self>, mut sock: TcpStream, mut shutdown: watch::Receiver<bool>) {
        let _ = sock.set_nodelay(true);
        let remote = sock.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        Counters::add(&self.counters.curr_connections, 1);
        Counters::add(&self.counters.total_connections, 1);
        let mut dec = RequestDecoder::new(DecoderConfig {
            max_key_len: self.settings.max_key_len,
            body_max: self.settings.body_max,
            ..DecoderConfig::default()
        });
        let mut buf = BytesMut::with_capacity(16 << 10);
        let mut out = BytesMut::with_capacity(16 << 10);
        // Receive time of a command whose body is still arriving.
        let mut line_seen: Option<(Instant, u32)> = None;
        let mut body_guard: Option<Tracked> = None;
        let mut stopping = *shutdown.borrow();
        'conn: loop {
            loop {
                let decoded = dec.decode(&mut buf);
                match decoded {
                    Decoded::NeedMore => {
                        if let Some(p) = dec.pending_body() {
                            if line_seen.is_none() {
                                line_seen = Some((Instant::now(), unix_now() as u32));
                                // §3.4.3: refuse big bodies while the write queue is full.
                                if p.len > self.settings.body_big
                                    && self.store.queued_bytes() > self.settings.flush_max
                                {
                                    let noreply = p.noreply;
                                    dec.skip_pending_body();
                                    line_seen = None;
                                    if !noreply {
                                        out.extend_from_slice(resp::SERVER_ERROR_OUT_OF_MEMORY);
                                    }
                                    continue;
                                }
                            }
                        }
                        break;
                    }
                    Decoded::Reply { reply, close } => {
                        out.extend_from_slice(reply);
                        if close {
                            let _ = sock.write_all(&out).await;
                            break 'conn;
                        }
                    }
                    Decoded::Request(cmd) => {
                        let (t0, ts) = line_seen
                            .take()
                            .unwrap_or_else(|| (Instant::now(), unix_now() as u32));
                        body_guard = None;
                        if let Flow::Close = self.request(cmd, t0, ts, &remote, &mut out).await {
                            let _ = sock.write_all(&out).await;
                            break 'conn;
                        }
                        // Keep replies of a long pipeline from piling up in memory.
                        if out.len() > (1 << 20) {
                            if sock.write_all(&out).await.is_err() {
                                break 'conn;
                            }
                            out.clear();
                        }
                    }
                }
            }
            body_guard = match dec.pending_body_len() {
                Some(n) if n > 0 => {
                    if body_guard.as_ref().map(|g| g.size()) == Some(n) {
                        body_guard
                    } else {
                        drop(body_guard);
                        Some(track(BufferKind::SetData, n))
                    }
                }
                _ => None,
            };
            if !out.is_empty() {
                if sock.write_all(&out).await.is_err() {
                    break;
                }
                out.clear();
                if out.capacity() > (4 << 20) {
                    out = BytesMut::with_capacity(16 << 10);
                }
            }
            if buf.is_empty() && buf.capacity() > (4 << 20) {
                buf = BytesMut::with_capacity(16 << 10);
            }
            if let Some(p) = dec.pending_body() {
                buf.reserve((p.len + 2).saturating_sub(buf.len()).min(64 << 20));
            } else if buf.capacity() - buf.len() < 4096 {
                buf.reserve(16 << 10);
            }
            // On shutdown, finish a request whose body is arriving, then close.
            if stopping && dec.pending_body().is_none() {
                break;
            }
            tokio::select! {
                r = sock.read_buf(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                },
                _ = shutdown.changed(), if !stopping => stopping = true,
            }
        }
        drop(body_guard);
        Counters::add(&self.counters.curr_connections, u64::MAX); // wrapping -1
    }

    /// Executes one request and appends its reply (if any) to `out`.
    async fn request(
        &self,
        cmd: Command,
        t0: Instant,
        ts: u32,
        remote: &str,
        out: &mut BytesMut,
    ) -> Flow {
        let needs_slot = matches!(
            cmd,
            Command::Get { .. }
                | Command::Set { .. }
                | Command::Delete { .. }
                | Command::Incr { .. }
        );
        match &cmd {
            Command::Quit => return Flow::Close,
            Command::Version => {
                resp::version(out, VERSION);
                return Flow::Continue;
            }
            Command::Verbosity { noreply } | Command::FlushAll { noreply } => {
                if !noreply {
                    out.extend_from_slice(resp::OK);
                }
                return Flow::Continue;
            }
            Command::OptimizeStat => {
                out.extend_from_slice(if self.store.gc_running() {
                    resp::RUNNING
                } else {
                    resp::NONE
                });
                return Flow::Continue;
            }
            Command::Stats { names } => {
                self.stats(names, out);
                return Flow::Continue;
            }
            Command::Decr { noreply, .. } => {
                if !noreply {
                    out.extend_from_slice(resp::SERVER_ERROR_NOT_SUPPORT);
                }
                return Flow::Continue;
            }
            _ => {}
        }
        let noreply = cmd.noreply();
        // The body is ours now; account it until it is queued or dropped.
        let _body = match &cmd {
            Command::Set { value, .. } => Some(track(BufferKind::SetData, value.len())),
            _ => None,
        };
        let _permit = if needs_slot {
            let left = self.settings.timeout.saturating_sub(t0.elapsed());
            match tokio::time::timeout(left, self.slots.acquire()).await {
                Ok(Ok(p)) => Some(p),
                _ => {
                    Counters::add(&self.counters.timeouts, 1);
                    if !noreply {
                        out.extend_from_slice(resp::SERVER_ERROR_TIMEOUT);
                    }
                    return Flow::Continue;
                }
            }
        } else {
            None
        };
        if t0.elapsed() > self.settings.timeout {
            Counters::add(&self.counters.timeouts, 1);
            if !noreply {
                out.extend_from_slice(resp::SERVER_ERROR_TIMEOUT);
            }
            return Flow::Continue;
        }
        let started = Instant::now();
        if let Some((k, d)) = &self.hooks.sleep_key {
            if cmd_has_key(&cmd, k) {
                tokio::time::sleep(*d).await;
            }
        }
        // Replies go straight into `out`; a panic or `noreply` truncates back to `mark`.
        let mark = out.len();
        let mut sizes: Vec<usize> = Vec::new();
        let r =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.execute(&cmd, ts, out, &mut sizes)));
        let durable = match r {
            Ok(d) => d,
            Err(_) => {
                Counters::add(&self.counters.panics, 1);
                error!(cmd = cmd.name(), "request handler panicked");
                out.truncate(mark);
                out.extend_from_slice(resp::SERVER_ERROR_INTERNAL);
                None
            }
        };
        drop(_body);
        if let Some(d) = durable {
            d.wait().await;
        }
        if started.elapsed() > Duration::from_millis(100) {
            Counters::add(&self.counters.slow_cmd, 1);
        }
        if let Some(log) = &self.access_log {
            self.log_access(
                log,
                &cmd,
                remote,
                &out[mark..],
                &sizes,
                started.elapsed().as_micros(),
            );
        }
        if noreply {
            out.truncate(mark);
        }
        Flow::Continue
    }

    fn log_access(
        &self,
        log: &crate::accesslog::AccessLog,
        cmd: &Command,
        remote: &str,
        reply: &[u8],
        sizes: &[usize],
        micros: u128,
    ) {
        let failed = reply.starts_with(b"SERVER_ERROR")
            || reply.starts_with(b"CLIENT_ERROR")
            || reply.starts_with(b"NOT_");
        match cmd {
            Command::Get { keys, gets } => {
                let total: usize = sizes.iter().sum();
                let (name, sz) = get_name_and_sizes(keys.len(), *gets, sizes);
                let ks: Vec<&[u8]> = keys.iter().map(|k| k.as_ref()).collect();
                log.write(remote, name, total > 0 && !failed, &sz, micros, &ks);
            }
            Command::Set {
                kind, key, value, ..
            } => {
                let name = kind.name().to_ascii_uppercase();
                log.write(
                    remote,
                    &name,
                    !failed,
                    &value.len().to_string(),
                    micros,
                    &[key.as_ref()],
                );
            }
            Command::Delete { key, .. } => {
                log.write(remote, "DELETE", !failed, "0", micros, &[key.as_ref()])
            }
            Command::Incr { key, .. } => {
                log.write(remote, "INCR", !failed, "0", micros, &[key.as_ref()])
            }
            _ => {}
        }
    }

    fn execute(
        &self,
        cmd: &Command,
        ts: u32,
        out: &mut BytesMut,
        sizes: &mut Vec<usize>,
    ) -> Option<Durable> {
        if let Some(k) = &self.hooks.panic_key {
            if cmd_has_key(cmd, k) {
                panic!("test hook: panic on key");
            }
        }
        let c = &self.counters;
        match cmd {
            Command::Get { keys, gets } => {
                self.get(keys, *gets, out, sizes);
                None
            }
            Command::Set {
                kind,
                key,
                flag,
                exptime,
                value,
                ..
            } => {
                Counters::add(&c.cmd_set, 1);
                Counters::add(&c.bytes_read, value.len() as u64);
                if !kind.stores() {
                    out.extend_from_slice(resp::SERVER_ERROR_NOT_SUPPORT);
                    return None;
                }
                if !is_valid_write_key(key) {
                    out.extend_from_slice(resp::NOT_STORED);
                    return None;
                }
                match self.store.set(key, *flag, *exptime, value, ts) {
                    Ok(WriteOutcome::Done(d)) => {
                        out.extend_from_slice(resp::STORED);
                        d
                    }
                    Ok(WriteOutcome::NotFound) => {
                        out.extend_from_slice(resp::SERVER_ERROR_NOT_FOUND);
                        None
                    }
                    Err(e) => {
                        store_error(out, &e);
                        None
                    }
                }
            }
            Command::Delete { key, .. } => {
                Counters::add(&c.cmd_delete, 1);
                if !is_valid_write_key(key) {
                    out.extend_from_slice(resp::NOT_FOUND);
                    return None;
                }
                match self.store.delete(key, ts) {
                    Ok(WriteOutcome::Done(d)) => {
                        out.extend_from_slice(resp::DELETED);
                        d
                    }
                    Ok(WriteOutcome::NotFound) => {
                        out.extend_from_slice(resp::NOT_FOUND);
                        None
                    }
                    Err(e) => {
                        store_error(out, &e);
                        None
                    }
                }
            }
            Command::Incr { key, delta, .. } => {
                Counters::add(&c.cmd_set, 1);
                Counters::add(&c.bytes_read, delta.to_string().len() as u64);
                if !is_valid_write_key(key) {
                    resp::number(out, 0);
                    return None;
                }
                match self.store.incr(key, *delta, ts) {
                    Ok((n, d)) => {
                        resp::number(out, n);
                        d
                    }
                    Err(e) => {
                        store_error(out, &e);
                        None
                    }
                }
            }
            _ => None,
        }
    }

    /// Multi-key get; `sizes` receives one returned size per requested key (duplicates too).
    fn get(&self, keys: &[Bytes], gets: bool, out: &mut BytesMut, sizes: &mut Vec<usize>) {
        let c = &self.counters;
        let single = keys.len() == 1;
        let mut seen: HashMap<&[u8], usize> = HashMap::new();
        for key in keys {
            if !single {
                if let Some(&n) = seen.get(key.as_ref()) {
                    sizes.push(n);
                    continue;
                }
            }
            Counters::add(&c.cmd_get, 1);
            let got = self.get_one(key);
            let n = match &got {
                Ok(Some((_, d))) => d.len(),
                _ => 0,
            };
            if !single {
                seen.insert(key.as_ref(), n);
            }
            sizes.push(n);
            match got {
                Ok(Some((flag, data))) => {
                    Counters::add(&c.get_hits, 1);
                    Counters::add(&c.bytes_written, data.len() as u64);
                    resp::value(out, key, flag, &data, gets);
                }
                Ok(None) => Counters::add(&c.get_misses, 1),
                Err(msg) => {
                    Counters::add(&c.get_misses, 1);
                    if single {
                        out.extend_from_slice(msg);
                        return;
                    }
                }
            }
        }
        out.extend_from_slice(resp::END);
    }

    /// One key of a get, including the special keys of §3.6. `Err` carries the single-key
    /// error reply.
    fn get_one(&self, key: &[u8]) -> Result<Option<(u32, ValueBytes)>, &'static [u8]> {
        if let Some(rest) = key.strip_prefix(b"?") {
            let (with_pos, real) = match rest.strip_prefix(b"?") {
                Some(r) => (true, r),
                None => (false, rest),
            };
            if real.is_empty() {
                return if with_pos {
                    Ok(None)
                } else {
                    Err(resp::SERVER_ERROR_BAD_KEY_Q)
                };
            }
            return match self.store.meta(real) {
                Ok(Some(m)) => {
                    let s = if with_pos {
                        format!(
                            "{} {} {} {} {} {} {}",
                            m.ver, m.vhash, m.flag, m.len, m.ts, m.chunk, m.offset
                        )
                    } else {
                        format!("{} {} {} {} {}", m.ver, m.vhash, m.flag, m.len, m.ts)
                    };
                    Ok(Some((0, ValueBytes::Plain(s.into_bytes()))))
                }
                Ok(None) => Ok(None),
                Err(_) => Ok(None),
            };
        }
        if let Some(rest) = key.strip_prefix(b"@") {
            if let Some(hex) = rest.strip_prefix(b"@") {
                if hex.len() != 16 {
                    return Err(resp::SERVER_ERROR_BAD_COMMAND_LINE_FORMAT);
                }
                let kh = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                    .ok_or(resp::SERVER_ERROR_BAD_COMMAND_LINE_FORMAT)?;
                return match self.store.raw(kh) {
                    Ok(Some(raw)) => Ok(Some((0, ValueBytes::Plain(raw)))),
                    Ok(None) => Ok(None),
                    Err(_) => Err(resp::SERVER_ERROR_READ_FAILED),
                };
            }
            if key.len() > 11 && key.starts_with(b"@collision_") {
                if key.len() > 15 && key.starts_with(b"@collision_all_") {
                    return Ok(None);
                }
                return Ok(Some((0, ValueBytes::Plain(b"0 0 0 0".to_vec()))));
            }
            let listing = self.store.list(rest);
            return Ok(Some((0, ValueBytes::Plain(listing.into_bytes()))));
        }
        let t0 = Instant::now();
        match self.store.get(key) {
            Ok(Some(v)) => {
                if let Some(log) = &self.analysis_log {
                    // V2 <unix ts> <read ms> BKT_<id> <chunk> <offset> <stored size> <in buffer> <key>
                    let mut line = format!(
                        "V2 {} {:.3} BKT_{:02x} {} {} {} {} ",
                        unix_now(),
                        t0.elapsed().as_secs_f64() * 1000.0,
                        v.bucket,
                        v.chunk,
                        v.offset,
                        v.stored_len,
                        v.in_buffer as u8
                    )
                    .into_bytes();
                    line.extend_from_slice(key);
                    line.push(b'\n');
                    log.write_line(&line);
                }
                Ok(Some((v.flag, ValueBytes::Stored(v))))
            }
            Ok(None) => Ok(None),
            Err(StoreError::NotServed) => Ok(None),
            Err(_) => Err(resp::SERVER_ERROR_READ_FAILED),
        }
    }

    fn stats(&self, names: &[Bytes], out: &mut BytesMut) {
        let all = self.stat_values();
        if names.is_empty() {
            for (n, v) in &all {
                resp::stat(out, n.as_bytes(), v);
            }
        } else {
            for n in names {
                let v = all
                    .iter()
                    .find(|(k, _)| k.as_bytes() == n.as_ref())
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| "0".into());
                resp::stat(out, n, v);
            }
        }
        out.extend_from_slice(resp::END);
    }

    /// `stats` lines in the order of node.md §9.
    pub fn stat_values(&self) -> Vec<(&'static str, String)> {
        let c = &self.counters;
        let (ut, st, maxrss) = stats::rusage();
        let items = self.store.live_items();
        let (avail, total) = self.disk_space();
        vec![
            ("pid", std::process::id().to_string()),
            ("uptime", self.started.elapsed().as_secs().to_string()),
            ("time", unix_now().to_string()),
            ("version", VERSION.to_string()),
            ("rusage_user", ut.to_string()),
            ("rusage_system", st.to_string()),
            ("rusage_maxrss", maxrss.to_string()),
            (
                "curr_connections",
                Counters::get(&c.curr_connections).to_string(),
            ),
            (
                "total_connections",
                Counters::get(&c.total_connections).to_string(),
            ),
            ("cmd_get", Counters::get(&c.cmd_get).to_string()),
            ("cmd_set", Counters::get(&c.cmd_set).to_string()),
            ("cmd_delete", Counters::get(&c.cmd_delete).to_string()),
            ("slow_cmd", Counters::get(&c.slow_cmd).to_string()),
            ("get_hits", Counters::get(&c.get_hits).to_string()),
            ("get_misses", Counters::get(&c.get_misses).to_string()),
            ("curr_items", items.to_string()),
            ("total_items", items.to_string()),
            ("avail_space", avail.to_string()),
            ("total_space", total.to_string()),
            ("bytes_read", Counters::get(&c.bytes_read).to_string()),
            ("bytes_written", Counters::get(&c.bytes_written).to_string()),
            ("threads", stats::thread_count().to_string()),
        ]
    }

    /// Free/total bytes summed over the distinct filesystems holding served buckets.
    pub fn disk_space(&self) -> (u64, u64) {
        let mut seen = HashSet::new();
        let (mut avail, mut total) = (0, 0);
        for b in self.store.buckets() {
            if let Some(id) = stats::fs_id(&b.dir) {
                if seen.insert(id) {
                    if let Some((f, t)) = stats::disk_space(&b.dir) {
                        avail += f;
                        total += t;
                    }
                }
            }
        }
        (avail, total)
    }
}

/// A reply value: engine values keep their `GetData` accounting until written.
enum ValueBytes {
    Plain(Vec<u8>),
    Stored(beansdb_store::Value),
}

impl std::ops::Deref for ValueBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ValueBytes::Plain(v) => v,
            ValueBytes::Stored(v) => &v.data,
        }
    }
}

fn store_error(out: &mut BytesMut, e: &StoreError) {
    match e {
        StoreError::NotServed => out.extend_from_slice(resp::SERVER_ERROR_BUCKET_NOT_SERVED),
        other => {
            debug!(error = ?other, "storage error");
            resp::server_error(out, other);
        }
    }
}

fn cmd_has_key(cmd: &Command, k: &[u8]) -> bool {
    match cmd {
        Command::Get { keys, .. } => keys.iter().any(|x| x.as_ref() == k),
        Command::Set { key, .. } | Command::Delete { key, .. } | Command::Incr { key, .. } => {
            key.as_ref() == k
        }
        _ => false,
    }
}
