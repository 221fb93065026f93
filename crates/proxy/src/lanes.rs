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
use std::sync::atomic::{AtomicUsize, Ordering};

use beansdb_protocol::client::{ReplyKind, Response, ResponseDecoder};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Lanes per host. Two keep a large value on one lane from stalling every get of the host.
pub const LANES: usize = 2;

/// A lane writes at most this much of its queue in one go.
const WRITE_BATCH: usize = 64 << 10;

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

/// The sending end of one lane; dropping the last one closes the lane.
#[derive(Clone)]
pub struct Lane {
    tx: mpsc::UnboundedSender<Job>,
}

impl Lane {
    /// Starts the lane's task on a connected stream.
    pub fn start(stream: TcpStream) -> Lane {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(stream, rx));
        Lane { tx }
    }

    /// Queues one complete request (line, or header + value + `\r\n`) whose reply is of
    /// `kind`; the receiver gets the reply. `None`: the lane has ended.
    pub fn send(&self, line: BytesMut, kind: ReplyKind) -> Option<oneshot::Receiver<LaneReply>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { line, kind, reply }).ok()?;
        Some(rx)
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
    /// A running lane, connecting with `connect` when its slot is empty. Concurrent callers of
    /// one slot wait for the same connect.
    pub async fn pick<F, Fut, E>(&self, connect: F) -> Result<Lane, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<TcpStream, E>>,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        if let Some(l) = slot.as_ref().filter(|l| !l.is_closed()) {
            return Ok(l.clone());
        }
        let lane = Lane::start(connect().await?);
        *slot = Some(lane.clone());
        Ok(lane)
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
fn fail_all(waiting: &mut VecDeque<Waiting>, first: LaneError) {
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

async fn run(stream: TcpStream, mut rx: mpsc::UnboundedReceiver<Job>) {
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
                        fail_all(&mut waiting, if stale { LaneError::Aborted } else { LaneError::Io(e) });
                        return;
                    }
                    Ok(n) => n,
                    Err(e) => {
                        let stale = answered > 0 && !partial;
                        fail_all(&mut waiting, if stale { LaneError::Aborted } else { LaneError::Io(e) });
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
                            fail_all(&mut waiting, LaneError::Proto(e.to_string()));
                            return;
                        }
                    }
                }
                if waiting.is_empty() && !rbuf.is_empty() {
                    // Bytes nobody asked for.
                    return;
                }
                // Values split off the buffer share its allocation: do not pin a large one.
                if rbuf.is_empty() && rbuf.capacity() > (64 << 10) {
                    rbuf = BytesMut::with_capacity(16 << 10);
                }
            }
            job = rx.recv() => {
                let Some(job) = job else {
                    // Closed by the host (discarded, or the host left the route).
                    fail_all(&mut waiting, LaneError::Aborted);
                    return;
                };
                queue(job, &mut wbuf, &mut waiting, &mut dec);
                while wbuf.len() < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(j) => queue(j, &mut wbuf, &mut waiting, &mut dec),
                        Err(_) => break,
                    }
                }
                if let Err(e) = wr.write_all(&wbuf).await {
                    let stale = answered > 0 && !partial;
                    fail_all(&mut waiting, if stale { LaneError::Aborted } else { LaneError::Io(e) });
                    return;
                }
                wbuf.clear();
            }
        }
    }
}
