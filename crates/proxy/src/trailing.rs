//! Writes that are still running after their reply (§4.4: the reply goes out after W acks),
//! remembered per client connection so that the connection reads its own writes.
//!
//! With W < N a replica may not have applied a write when its `STORED` reaches the client. A
//! later request of the same connection for the same key therefore first settles the write:
//! after a set, a read waits only while the first replica it would ask is still pending (the
//! read stops at the first acked replica); after a delete, a read goes on through the misses,
//! so it waits for every pending replica. Either way it skips replicas whose write failed (they
//! hold an older value). A write waits for every pending replica, so that each replica applies
//! the connection's writes in order.

use std::time::Instant;

use beansdb_protocol::client::Response;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::pool::BackendError;

/// Keys remembered per connection; older entries are dropped first.
const MAX_TRAILING: usize = 64;

/// One backend write's outcome.
pub(crate) struct WriteResult {
    pub host: usize,
    pub addr: String,
    pub backup: bool,
    pub ack: bool,
    /// `DELETED` (delete only).
    pub found: bool,
    pub r: Result<Response, BackendError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostState {
    Pending,
    Acked,
    Failed,
}

pub(crate) struct Trailing {
    key: Bytes,
    /// A delete: reads must not find the value on a lagging replica.
    delete: bool,
    rx: mpsc::UnboundedReceiver<WriteResult>,
    hosts: Vec<(String, HostState)>,
    /// The write's own deadline: no result arrives after it.
    deadline: Instant,
}

impl Trailing {
    pub fn new(
        key: Bytes,
        delete: bool,
        rx: mpsc::UnboundedReceiver<WriteResult>,
        hosts: Vec<(String, HostState)>,
        deadline: Instant,
    ) -> Trailing {
        Trailing {
            key,
            delete,
            rx,
            hosts,
            deadline,
        }
    }

    fn apply(&mut self, r: WriteResult) {
        if let Some(h) = self.hosts.iter_mut().find(|(a, _)| *a == r.addr) {
            h.1 = if r.ack {
                HostState::Acked
            } else {
                HostState::Failed
            };
        }
    }

    fn state(&self, addr: &str) -> Option<HostState> {
        self.hosts.iter().find(|(a, _)| a == addr).map(|(_, s)| *s)
    }

    fn pending(&self) -> bool {
        self.hosts.iter().any(|(_, s)| *s == HostState::Pending)
    }

    /// Takes the results that arrived; true when nothing more is expected.
    fn poll_done(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(r) => self.apply(r),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return true,
            }
        }
        !self.pending() || Instant::now() >= self.deadline
    }

    async fn next(&mut self, deadline: Instant) -> bool {
        let until = deadline.min(self.deadline);
        match tokio::time::timeout_at(until.into(), self.rx.recv()).await {
            Ok(Some(r)) => {
                self.apply(r);
                true
            }
            _ => false,
        }
    }

    /// Before a read: waits while the first host of `order` that took part in the write is
    /// pending, then drops the hosts whose write failed.
    pub async fn settle_read(
        &mut self,
        order: Vec<usize>,
        addr: impl Fn(usize) -> String,
        deadline: Instant,
    ) -> Vec<usize> {
        if self.delete {
            self.settle_write(deadline).await;
        }
        loop {
            let first = order
                .iter()
                .filter_map(|&h| self.state(&addr(h)))
                .find(|s| *s != HostState::Failed);
            if first != Some(HostState::Pending) || !self.next(deadline).await {
                break;
            }
        }
        order
            .into_iter()
            .filter(|&h| self.state(&addr(h)) != Some(HostState::Failed))
            .collect()
    }

    /// Before a write: waits for every pending replica.
    pub async fn settle_write(&mut self, deadline: Instant) {
        while self.pending() && self.next(deadline).await {}
    }
}

/// A connection's trailing writes.
#[derive(Default)]
pub struct TrailingWrites {
    list: Vec<Trailing>,
}

impl TrailingWrites {
    /// Forgets the writes that finished.
    pub fn prune(&mut self) {
        self.list.retain_mut(|t| !t.poll_done());
    }

    pub(crate) fn push(&mut self, t: Trailing) {
        // The newest write of a key decides what a later read must see.
        self.list.retain(|x| x.key != t.key);
        if self.list.len() >= MAX_TRAILING {
            self.list.remove(0);
        }
        self.list.push(t);
    }

    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut Trailing> {
        self.list.iter_mut().find(|t| t.key == key)
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn result(addr: &str, ack: bool) -> WriteResult {
        WriteResult {
            host: 0,
            addr: addr.into(),
            backup: false,
            ack,
            found: false,
            r: Ok(Response::Stored),
        }
    }

    fn addrs(h: usize) -> String {
        format!("h:{h}")
    }

    #[tokio::test]
    async fn read_waits_for_a_pending_first_replica_and_skips_failed_ones() {
        let (tx, rx) = mpsc::unbounded_channel();
        let far = Instant::now() + Duration::from_secs(5);
        let hosts = vec![
            ("h:1".to_string(), HostState::Pending),
            ("h:2".to_string(), HostState::Acked),
            ("h:3".to_string(), HostState::Acked),
        ];
        let mut t = Trailing::new(Bytes::from_static(b"k"), false, rx, hosts, far);
        // h:2 first in the read order: it has the value, no wait.
        let order = t.settle_read(vec![2, 1, 3], addrs, far).await;
        assert_eq!(order, vec![2, 1, 3]);
        // h:1 first: wait for its result; it failed, so it is skipped.
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            tx.send(result("h:1", false)).ok();
            tx
        });
        let t0 = Instant::now();
        let order = t.settle_read(vec![1, 2, 3], addrs, far).await;
        assert!(t0.elapsed() >= Duration::from_millis(25));
        assert_eq!(order, vec![2, 3]);
        let _tx = sender.await.unwrap();
        assert!(t.poll_done());
    }

    #[tokio::test]
    async fn waits_are_bounded_by_the_deadline() {
        let (_tx, rx) = mpsc::unbounded_channel();
        let far = Instant::now() + Duration::from_secs(5);
        let hosts = vec![("h:1".to_string(), HostState::Pending)];
        let mut t = Trailing::new(Bytes::from_static(b"k"), false, rx, hosts, far);
        let t0 = Instant::now();
        t.settle_write(Instant::now() + Duration::from_millis(30))
            .await;
        assert!(t0.elapsed() < Duration::from_millis(500));
        let mut all = TrailingWrites::default();
        all.push(t);
        all.prune();
        assert!(!all.is_empty(), "still pending");
        assert!(all.get_mut(b"k").is_some());
    }
}
