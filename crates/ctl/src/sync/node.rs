//! Talking to one node: a per-node token bucket shared by all workers, and a worker's
//! connection that reconnects after any failure (tools.md §1.1: a connection is dropped after
//! a protocol error or timeout).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use beansdb_client::{Client, ClientConfig, StoreReply};
use parking_lot::Mutex;

/// Token bucket: `rate` requests/s with a burst of max(1, rate/10) (tools.md §1).
pub struct Limiter {
    rate: f64,
    burst: f64,
    /// (tokens, last refill); tokens go negative while callers wait for their reservation.
    state: Mutex<(f64, Instant)>,
}

impl Limiter {
    pub fn new(rate: u64) -> Limiter {
        let burst = (rate / 10).max(1) as f64;
        Limiter {
            rate: rate as f64,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Reserves one request and returns how long to wait before sending it. Reserving under
    /// the lock (instead of retrying) keeps the bucket fair between concurrent workers.
    fn reserve(&self) -> Duration {
        let mut st = self.state.lock();
        let now = Instant::now();
        let refill = now.duration_since(st.1).as_secs_f64() * self.rate;
        let tokens = (st.0 + refill).min(self.burst) - 1.0;
        *st = (tokens, now);
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / self.rate)
        }
    }

    pub async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// What all workers share about one node.
pub struct NodeShared {
    pub addr: String,
    limiter: Option<Limiter>,
    /// Requests sent (for the progress rate).
    pub requests: AtomicU64,
    /// Set once any request got an answer: "no node reachable at all" is exit 3.
    pub answered: AtomicBool,
    total_requests: Arc<AtomicU64>,
}

impl NodeShared {
    pub fn new(addr: &str, rate: u64, total_requests: Arc<AtomicU64>) -> NodeShared {
        NodeShared {
            addr: addr.to_string(),
            limiter: (rate > 0).then(|| Limiter::new(rate)),
            requests: AtomicU64::new(0),
            answered: AtomicBool::new(false),
            total_requests,
        }
    }
}

/// A failed request, rendered short for reports (`timeout`, `connection refused`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeError(pub String);

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<beansdb_client::Error> for NodeError {
    fn from(e: beansdb_client::Error) -> NodeError {
        use beansdb_client::Error as E;
        let msg = match &e {
            E::Timeout(_) | E::ConnectTimeout { .. } => "timeout".to_string(),
            E::Connect { source, .. } => format!("cannot connect: {source}"),
            E::Server { kind, msg } => format!("{kind} {msg}"),
            other => {
                let mut s = other.to_string();
                let mut src = std::error::Error::source(other);
                while let Some(c) = src {
                    s.push_str(": ");
                    s.push_str(&c.to_string());
                    src = c.source();
                }
                s
            }
        };
        NodeError(msg)
    }
}

pub type NodeResult<T> = Result<T, NodeError>;

/// One worker's connection to one node.
pub struct NodeConn {
    pub shared: Arc<NodeShared>,
    config: ClientConfig,
    client: Option<Client>,
}

impl NodeConn {
    pub fn new(shared: Arc<NodeShared>, config: ClientConfig) -> NodeConn {
        NodeConn {
            shared,
            config,
            client: None,
        }
    }

    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// Rate-limits, (re)connects, and hands out the client for one request.
    async fn ready(&mut self) -> NodeResult<&mut Client> {
        if let Some(l) = &self.shared.limiter {
            l.acquire().await;
        }
        self.shared.requests.fetch_add(1, Ordering::Relaxed);
        self.shared.total_requests.fetch_add(1, Ordering::Relaxed);
        if self.client.as_ref().is_some_and(|c| !c.is_usable()) {
            self.client = None;
        }
        if self.client.is_none() {
            let c = Client::connect_with(&self.shared.addr, self.config.clone()).await?;
            self.client = Some(c);
        }
        self.client
            .as_mut()
            .ok_or_else(|| NodeError("not connected".into()))
    }

    fn note<T>(&mut self, r: Result<T, beansdb_client::Error>) -> NodeResult<T> {
        match r {
            Ok(v) => {
                self.shared.answered.store(true, Ordering::Relaxed);
                Ok(v)
            }
            Err(e) => {
                // An error line leaves the stream in step; anything else does not.
                if e.is_server_reply() {
                    self.shared.answered.store(true, Ordering::Relaxed);
                } else {
                    self.client = None;
                }
                Err(e.into())
            }
        }
    }

    /// `get <key>`: the value bytes, `None` on a miss.
    pub async fn get(&mut self, key: &[u8]) -> NodeResult<Option<bytes::Bytes>> {
        let c = self.ready().await?;
        let r = c.get(key).await.map(|v| v.map(|v| v.data));
        self.note(r)
    }

    /// `version`: whether the node answers at all (the Cassandra tools' source choice).
    pub async fn version(&mut self) -> NodeResult<String> {
        let c = self.ready().await?;
        let r = c.version().await;
        self.note(r)
    }

    /// `stats time`: the node's unix time.
    pub async fn time(&mut self) -> NodeResult<i64> {
        let c = self.ready().await?;
        let r = c.stats(&["time"]).await;
        let stats = self.note(r)?;
        stats
            .get("time")
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| NodeError("stats has no numeric time".into()))
    }

    /// `set <key> <flag> <ver> <len>`, never `noreply`.
    pub async fn set(
        &mut self,
        key: &[u8],
        flag: u32,
        ver: i32,
        value: &[u8],
    ) -> NodeResult<StoreReply> {
        let c = self.ready().await?;
        let r = c.set(key, flag, ver, value, false).await;
        self.note(r)
    }

    /// `delete <key>`: true for `DELETED`, false for `NOT_FOUND`.
    pub async fn delete(&mut self, key: &[u8]) -> NodeResult<bool> {
        let c = self.ready().await?;
        let r = c.delete(key).await;
        self.note(r)
    }
}

/// Runs futures concurrently on the current task and returns their outputs in order (the
/// replicas of a bucket are queried in parallel without spawning, so they can borrow).
pub async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limiter_paces_after_the_burst() {
        let l = Limiter::new(100); // burst 10
        let start = Instant::now();
        for _ in 0..30 {
            l.acquire().await;
        }
        // 10 free, then 20 at 10 ms each.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(180), "{took:?}");
        assert!(took < Duration::from_millis(1000), "{took:?}");
    }

    #[tokio::test]
    async fn join_all_keeps_order() {
        let futs: Vec<_> = (0..4u64)
            .map(|i| async move {
                tokio::time::sleep(Duration::from_millis(40 - i * 10)).await;
                i
            })
            .collect();
        assert_eq!(join_all(futs).await, vec![0, 1, 2, 3]);
    }
}
