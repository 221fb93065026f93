//! Pipelined connections ("lanes") to one backend for gets, deletes and small sets.
//!
//! Nearly all of the proxy's CPU goes to loopback/LAN send and receive calls and the wake-ups
//! they cause (bench/README.md), one pair per backend exchange. Backend requests of many client
//! requests bound for the same host are therefore queued on a few long-lived connections: the
//! lane writes everything queued in one write and the node answers in order, so one read
//! usually carries several replies. memcached text replies come back in request order, which
//! is how replies find their requests.
//!
//! Failure rules (proxy.md §3.6) stay those of an exclusive connection: a request's own I/O
//! error, protocol error or timeout counts against the host; requests that were merely queued
//! behind it on a lane that had to be closed are `Aborted` and retried once on a new lane.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use beansdb_protocol::client::{ReplyKind, Response, ResponseDecoder};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Lanes per host. Requests go to the first lane that is not congested, so under normal load
/// one lane carries nearly everything (larger batches, fewer wake-ups of the node); the second
/// keeps a large value, or a long queue, on the first from stalling every get of the host.
pub const LANES: usize = 2;

/// A lane with more requests than this waiting for replies counts as congested.
const CONGESTED_DEPTH: usize = 64;

/// A reply whose value still has more than this many bytes to arrive marks its lane congested.
const BIG_VALUE: usize = 64 << 10;

/// A lane writes at most this much of its queue in one go.
const WRITE_BATCH: usize = 64 << 10;

/// Before writing, a lane lets the other ready tasks run (at most this many times, while they
/// keep adding requests), so one write carries the requests of every client that is being
/// served at that moment instead of the first one only. A yield costs a pass of the scheduler,
/// no timer: an idle proxy writes at once.
const MAX_YIELDS: usize = 4;

/// Why a queued request got no reply.
#[derive(Debug)]
pub enum LaneError {
    /// The connection failed under this request (counts against the host).
    Io(io::Error),
    /// The reply could not be parsed (counts against the host).
    Proto(String),
    /// The lane was closed for another request's failure, or the backend had closed the idle
    /// connection: not this request's fault.
    Aborted,
}

pub type LaneReply = Result<Response, LaneError>;

struct Job {
    line: BytesMut,
    kind: ReplyKind,
    reply: oneshot::Sender<LaneReply>,
}

/// A request waiting for its reply, in send order.
struct Waiting {
    kind: ReplyKind,
    reply: oneshot::Sender<LaneReply>,
}

/// How busy a lane is, shared by its task and its senders.
#[derive(Default)]
struct Load {
    /// Requests queued or sent and not yet answered.
    pending: AtomicUsize,
    /// A large value is arriving.
    big: AtomicBool,
}

/// The sending end of one lane; dropping the last one closes the lane.
#[derive(Clone)]
pub struct Lane {
    tx: mpsc::UnboundedSender<Job>,
    load: Arc<Load>,
}

impl Lane {
    /// Starts the lane's task on a connected stream.
    pub fn start(stream: TcpStream) -> Lane {
        let (tx, rx) = mpsc::unbounded_channel();
        let load = Arc::new(Load::default());
        tokio::spawn(run(stream, rx, load.clone()));
        Lane { tx, load }
    }

    /// Queues one complete request (line, or header + value + `\r\n`) whose reply is of
    /// `kind`; the receiver gets the reply. `None`: the lane has ended.
    pub fn send(&self, line: BytesMut, kind: ReplyKind) -> Option<oneshot::Receiver<LaneReply>> {
        let (reply, rx) = oneshot::channel();
        self.load.pending.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Job { line, kind, reply }).is_err() {
            self.load.pending.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(rx)
    }

    /// Requests waiting on this lane.
    fn pending(&self) -> usize {
        self.load.pending.load(Ordering::Relaxed)
    }

    /// Too busy to take more requests while another lane could.
    fn congested(&self) -> bool {
        self.load.big.load(Ordering::Relaxed) || self.pending() > CONGESTED_DEPTH
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    pub fn same(&self, other: &Lane) -> bool {
        self.tx.same_channel(&other.tx)
    }
}

/// The lanes of one host, used round robin; an empty or ended slot is refilled on demand.
pub struct Lanes {
    slots: Vec<tokio::sync::Mutex<Option<Lane>>>,
    next: AtomicUsize,
}

impl Default for Lanes {
    fn default() -> Self {
        Lanes {
            slots: (0..LANES).map(|_| tokio::sync::Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }
}

impl Lanes {
    /// A running lane: the first one that is not congested, else the least loaded; an empty
    /// slot is connected with `connect` when every lane before it is congested. Concurrent
    /// callers of one slot wait for the same connect.
    pub async fn pick<F, Fut, E>(&self, connect: F) -> Result<Lane, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<TcpStream, E>>,
    {
        let mut best: Option<Lane> = None;
        for slot in &self.slots {
            let mut slot = slot.lock().await;
            match slot.as_ref().filter(|l| !l.is_closed()) {
                Some(l) if !l.congested() => return Ok(l.clone()),
                Some(l) => {
                    if best.as_ref().is_none_or(|b| l.pending() < b.pending()) {
                        best = Some(l.clone());
                    }
                }
                // The first lane, or relief for the congested ones before it.
                None => {
                    let lane = Lane::start(connect().await?);
                    *slot = Some(lane.clone());
                    return Ok(lane);
                }
            }
        }
        match best {
            Some(l) => Ok(l),
            // Only with no slots at all.
            None => self.pick_fresh(connect).await,
        }
    }

    /// A lane on a new connection in the next slot (replacing what was there): the retry
    /// after a lane closed under a request must not land on another stale lane.
    pub async fn pick_fresh<F, Fut, E>(&self, connect: F) -> Result<Lane, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<TcpStream, E>>,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        let lane = Lane::start(connect().await?);
        *slot = Some(lane.clone());
        Ok(lane)
    }

    /// Closes `lane` if it is still installed (its queued requests are aborted).
    pub fn discard(&self, lane: &Lane) {
        for s in &self.slots {
            if let Ok(mut g) = s.try_lock() {
                if g.as_ref().is_some_and(|l| l.same(lane)) {
                    *g = None;
                }
            }
        }
    }

    /// Closes every lane (host removed from the route, or gone down).
    pub fn clear(&self) {
        for s in &self.slots {
            if let Ok(mut g) = s.try_lock() {
                *g = None;
            }
        }
    }

    /// Lanes currently connected.
    pub fn open(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| {
                s.try_lock()
                    .map(|g| g.as_ref().is_some_and(|l| !l.is_closed()))
                    .unwrap_or(true)
            })
            .count()
    }
}

/// Fails the oldest waiting request with `first` and aborts the rest.
fn fail_all(waiting: &mut VecDeque<Waiting>, load: &Load, first: LaneError) {
    load.pending.fetch_sub(waiting.len(), Ordering::Relaxed);
    let mut first = Some(first);
    for w in waiting.drain(..) {
        let _ = w
            .reply
            .send(Err(first.take().unwrap_or(LaneError::Aborted)));
    }
}

/// Adds a job to the write buffer and the waiting list.
fn queue(j: Job, wbuf: &mut BytesMut, waiting: &mut VecDeque<Waiting>, dec: &mut ResponseDecoder) {
    if waiting.is_empty() {
        dec.expect(j.kind);
    }
    wbuf.extend_from_slice(&j.line);
    waiting.push_back(Waiting {
        kind: j.kind,
        reply: j.reply,
    });
}

async fn run(stream: TcpStream, mut rx: mpsc::UnboundedReceiver<Job>, load: Arc<Load>) {
    let (mut rd, mut wr) = stream.into_split();
    let mut waiting: VecDeque<Waiting> = VecDeque::new();
    let mut rbuf = BytesMut::with_capacity(16 << 10);
    let mut wbuf = BytesMut::with_capacity(4 << 10);
    let mut dec = ResponseDecoder::new(ReplyKind::Retrieval);
    // Invariant: while requests wait, the decoder expects the reply kind of the oldest.
    // Replies completed on this connection, and whether bytes of the next one have arrived:
    // an EOF on a connection that answered before, with nothing pending, is the backend
    // closing an idle connection (a restart) rather than a failure of the request.
    let mut answered = 0u64;
    let mut partial = false;
    loop {
        tokio::select! {
            r = async {
                let want = match dec.pending_value_len() {
                    Some(len) => (len + 2).saturating_sub(rbuf.len()).clamp(4096, 64 << 20),
                    None => 16 << 10,
                };
                rbuf.reserve(want);
                rd.read_buf(&mut rbuf).await
            } => {
                // Read also while idle, so a connection the backend closes is noticed and
                // replaced before the next request is queued on it.
                let n = match r {
                    Ok(0) if waiting.is_empty() => return,
                    Ok(0) => {
                        let stale = answered > 0 && !partial;
                        let e = io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed");
                        fail_all(&mut waiting, &load, if stale { LaneError::Aborted } else { LaneError::Io(e) });
                        return;
                    }
                    Ok(n) => n,
                    Err(e) => {
                        let stale = answered > 0 && !partial;
                        fail_all(&mut waiting, &load, if stale { LaneError::Aborted } else { LaneError::Io(e) });
                        return;
                    }
                };
                debug_assert!(n > 0);
                if waiting.is_empty() {
                    // Bytes nobody asked for: the stream is out of step.
                    return;
                }
                partial = true;
                loop {
                    match dec.decode(&mut rbuf) {
                        Ok(Some(resp)) => {
                            answered += 1;
                            partial = !rbuf.is_empty();
                            match waiting.pop_front() {
                                Some(w) => {
                                    load.pending.fetch_sub(1, Ordering::Relaxed);
                                    // A caller that gave up (deadline) simply drops its reply.
                                    let _ = w.reply.send(Ok(resp));
                                }
                                None => {
                                    // A reply nobody asked for: the stream is out of step.
                                    return;
                                }
                            }
                            // The decoder parses the next reply as its request expects.
                            if let Some(next) = waiting.front() {
                                dec.expect(next.kind);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            fail_all(&mut waiting, &load, LaneError::Proto(e.to_string()));
                            return;
                        }
                    }
                }
                if waiting.is_empty() && !rbuf.is_empty() {
                    // Bytes nobody asked for.
                    return;
                }
                let arriving = dec
                    .pending_value_len()
                    .map_or(0, |len| (len + 2).saturating_sub(rbuf.len()));
                load.big.store(arriving > BIG_VALUE, Ordering::Relaxed);
                // Values split off the buffer share its allocation: do not pin a large one.
                if rbuf.is_empty() && rbuf.capacity() > (64 << 10) {
                    rbuf = BytesMut::with_capacity(16 << 10);
                }
            }
            job = rx.recv() => {
                let Some(job) = job else {
                    // Closed by the host (discarded, or the host left the route).
                    fail_all(&mut waiting, &load, LaneError::Aborted);
                    return;
                };
                queue(job, &mut wbuf, &mut waiting, &mut dec);
                for _ in 0..MAX_YIELDS {
                    tokio::task::yield_now().await;
                    let before = waiting.len();
                    while wbuf.len() < WRITE_BATCH {
                        match rx.try_recv() {
                            Ok(j) => queue(j, &mut wbuf, &mut waiting, &mut dec),
                            Err(_) => break,
                        }
                    }
                    if waiting.len() == before || wbuf.len() >= WRITE_BATCH {
                        break;
                    }
                }
                if let Err(e) = wr.write_all(&wbuf).await {
                    let stale = answered > 0 && !partial;
                    fail_all(&mut waiting, &load, if stale { LaneError::Aborted } else { LaneError::Io(e) });
                    return;
                }
                wbuf.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_backend::line_backend;
    use std::time::Duration;
    use tokio::sync::Notify;

    /// A backend answering `get k` with the value `k`, except `get big`: half of a 1 MiB value,
    /// then the rest once `release` is notified.
    async fn backend(release: Arc<Notify>) -> (String, Arc<AtomicUsize>) {
        line_backend(move |mut lines, mut wr| {
            let release = release.clone();
            async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    let k = line.trim_start_matches("get ").to_string();
                    if k == "big" {
                        let v = vec![b'x'; 1 << 20];
                        let head = format!("VALUE big 0 {}\r\n", v.len());
                        wr.write_all(head.as_bytes()).await.unwrap();
                        wr.write_all(&v[..v.len() / 2]).await.unwrap();
                        release.notified().await;
                        wr.write_all(&v[v.len() / 2..]).await.unwrap();
                        wr.write_all(b"\r\nEND\r\n").await.unwrap();
                    } else {
                        let r = format!("VALUE {k} 0 {}\r\n{k}\r\nEND\r\n", k.len());
                        wr.write_all(r.as_bytes()).await.unwrap();
                    }
                }
            }
        })
        .await
    }

    async fn get(lanes: &Lanes, addr: &str, key: &str) -> (Lane, oneshot::Receiver<LaneReply>) {
        let lane = lanes
            .pick(|| TcpStream::connect(addr.to_string()))
            .await
            .unwrap();
        let rx = lane
            .send(
                BytesMut::from(format!("get {key}\r\n").as_bytes()),
                ReplyKind::Retrieval,
            )
            .unwrap();
        (lane, rx)
    }

    fn value(r: LaneReply) -> Vec<u8> {
        match r.unwrap() {
            Response::Values(v) => v[0].data.to_vec(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn light_load_stays_on_the_first_lane() {
        let (addr, accepted) = backend(Arc::new(Notify::new())).await;
        let lanes = Lanes::default();
        for i in 0..50 {
            let key = format!("k{i}");
            let (_, rx) = get(&lanes, &addr, &key).await;
            assert_eq!(value(rx.await.unwrap()), key.as_bytes());
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(lanes.open(), 1);
    }

    #[tokio::test]
    async fn a_large_value_arriving_sends_gets_to_the_second_lane() {
        let release = Arc::new(Notify::new());
        let (addr, accepted) = backend(release.clone()).await;
        let lanes = Lanes::default();
        let (big_lane, big) = get(&lanes, &addr, "big").await;
        // Wait until the first half of the value has been read by the lane.
        for _ in 0..500 {
            if big_lane.congested() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            big_lane.congested(),
            "a half-read 1 MiB value congests its lane"
        );
        let (small_lane, small) = get(&lanes, &addr, "small").await;
        assert!(!small_lane.same(&big_lane));
        let v = tokio::time::timeout(Duration::from_secs(5), small).await;
        assert_eq!(
            value(v.expect("the get did not wait for the value").unwrap()),
            b"small"
        );
        release.notify_one();
        assert_eq!(value(big.await.unwrap()).len(), 1 << 20);
        assert!(!big_lane.congested());
        assert_eq!(big_lane.pending(), 0);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // Back to the first lane once it is free again.
        let (again, rx) = get(&lanes, &addr, "again").await;
        assert!(again.same(&big_lane));
        assert_eq!(value(rx.await.unwrap()), b"again");
    }
}
