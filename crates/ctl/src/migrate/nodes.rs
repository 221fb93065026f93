//! Reading beansdb directly from the nodes: pooled connections per node, and the read of one
//! key across the replicas of its bucket (the "NWR read path" of verify's recheck and of
//! replay-errors, cassandra.md §7.2 step 2, §9.3).
//!
//! Read rule: every main holding the key's bucket is asked `?key` (in route order, in
//! parallel); if a main fails, the backups are asked too. The copy with the highest
//! |version| (then the newest ts) wins, so a key missing on the first replica but present on
//! another is still found, and a newer tombstone beats an older live copy. At least one main
//! or backup must answer, else the read fails. The value is then read from the replica that
//! holds the winning copy.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use beansdb_client::ClientConfig;
use beansdb_route::Route;
use parking_lot::Mutex;

use crate::sync::decide::State;
use crate::sync::node::{join_all, NodeConn, NodeShared};
use crate::sync::wire::parse_meta;

/// Idle connections per node, handed out to concurrent tasks.
pub struct Pool {
    nodes: HashMap<String, Arc<NodeShared>>,
    idle: Mutex<HashMap<String, Vec<NodeConn>>>,
    config: ClientConfig,
}

impl Pool {
    pub fn new(route: &Route, config: ClientConfig) -> Pool {
        let total = Arc::new(AtomicU64::new(0));
        let nodes = route
            .main
            .iter()
            .map(|s| s.addr.clone())
            .chain(route.backup.iter().cloned())
            .map(|a| {
                let shared = Arc::new(NodeShared::new(&a, 0, total.clone()));
                (a, shared)
            })
            .collect();
        Pool {
            nodes,
            idle: Mutex::new(HashMap::new()),
            config,
        }
    }

    /// A connection to `addr` (reused when one is idle).
    pub fn take(&self, addr: &str) -> NodeConn {
        if let Some(c) = self.idle.lock().get_mut(addr).and_then(Vec::pop) {
            return c;
        }
        let shared = self
            .nodes
            .get(addr)
            .cloned()
            .unwrap_or_else(|| Arc::new(NodeShared::new(addr, 0, Arc::new(AtomicU64::new(0)))));
        NodeConn::new(shared, self.config.clone())
    }

    /// Returns a connection for reuse (a broken one reconnects on its next request).
    pub fn put(&self, c: NodeConn) {
        self.idle
            .lock()
            .entry(c.addr().to_string())
            .or_default()
            .push(c);
    }

    /// Whether any node has answered any request so far.
    pub fn any_answered(&self) -> bool {
        self.nodes
            .values()
            .any(|n| n.answered.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// beansdb's state of one key, with the value of a live copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeansValue {
    Live {
        ver: i32,
        flag: u32,
        ts: u32,
        value: Vec<u8>,
    },
    Tomb {
        ver: i32,
        ts: u32,
    },
    Absent,
}

/// Orders copies: higher |version| wins, then the newer ts; anything beats Absent.
fn rank(s: &State) -> Option<(u32, u32)> {
    match *s {
        State::Live { ver, ts, .. } | State::Tomb { ver, ts } => Some((ver.unsigned_abs(), ts)),
        State::Absent => None,
    }
}

/// Reads keys across replicas (see the module doc for the rule).
pub struct Reader {
    pub route: Route,
    pub pool: Arc<Pool>,
    depth: u32,
}

impl Reader {
    pub fn new(route: Route, pool: Arc<Pool>) -> Reader {
        let depth = route.depth();
        Reader { route, pool, depth }
    }

    async fn meta_on(&self, addr: &str, key: &[u8]) -> Result<State, String> {
        let mut q = Vec::with_capacity(key.len() + 1);
        q.push(b'?');
        q.extend_from_slice(key);
        let mut c = self.pool.take(addr);
        let r = c.get(&q).await;
        self.pool.put(c);
        let body = r.map_err(|e| format!("{addr}: {e}"))?;
        parse_meta(body.as_deref()).map_err(|e| format!("{addr}: {e}"))
    }

    /// The winning meta of `key` and the address holding it (`None` for Absent).
    pub async fn meta(&self, key: &[u8]) -> Result<(State, Option<String>), String> {
        let bucket = beansdb_hash::bucket_of_key(key, self.depth);
        let mains: Vec<String> = self
            .route
            .mains(bucket)
            .into_iter()
            .map(str::to_string)
            .collect();
        let mut answers: Vec<(String, State)> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        let results = join_all(mains.iter().map(|a| self.meta_on(a, key)).collect()).await;
        for (a, r) in mains.iter().zip(results) {
            match r {
                Ok(s) => answers.push((a.clone(), s)),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            // As the proxy: with a main down, the backups may hold what it missed.
            let backups = self.route.backup.clone();
            let results = join_all(backups.iter().map(|a| self.meta_on(a, key)).collect()).await;
            for (a, r) in backups.iter().zip(results) {
                match r {
                    Ok(s) => answers.push((a.clone(), s)),
                    Err(e) => errors.push(e),
                }
            }
        }
        if answers.is_empty() {
            return Err(format!("read failed: {}", errors.join("; ")));
        }
        let mut best: (State, Option<String>) = (State::Absent, None);
        for (a, s) in answers {
            if rank(&s) > rank(&best.0) {
                best = (s, Some(a));
            }
        }
        Ok(best)
    }

    /// One read: winning meta, then the value from the replica holding it.
    async fn read_once(&self, key: &[u8]) -> Result<(State, BeansValue), String> {
        let (meta, addr) = self.meta(key).await?;
        let v = match (meta, addr) {
            (State::Live { ver, flag, ts, .. }, Some(addr)) => {
                let mut c = self.pool.take(&addr);
                let r = c.get(key).await;
                self.pool.put(c);
                match r.map_err(|e| format!("{addr}: {e}"))? {
                    Some(value) => BeansValue::Live {
                        ver,
                        flag,
                        ts,
                        value: value.to_vec(),
                    },
                    // Deleted between the meta and the get: the caller's recheck sees it.
                    None => BeansValue::Absent,
                }
            }
            (State::Tomb { ver, ts }, _) => BeansValue::Tomb { ver, ts },
            _ => BeansValue::Absent,
        };
        Ok((meta, v))
    }

    /// `m1 = ?key, v = key, m2 = ?key`, retried up to 5 times while `m1 ≠ m2` or `v` does not
    /// match `m1` (cassandra.md §7.2 step 2); then the error `unstable`.
    pub async fn stable_read(&self, key: &[u8]) -> Result<BeansValue, String> {
        for _ in 0..5 {
            let (m1, v) = self.read_once(key).await?;
            let (m2, _) = self.meta(key).await?;
            let consistent = match (&m1, &v) {
                (State::Live { vhash, .. }, BeansValue::Live { value, .. }) => {
                    beansdb_hash::vhash(value) == *vhash
                }
                (State::Live { .. }, _) => false,
                _ => true,
            };
            if m1 == m2 && consistent {
                return Ok(v);
            }
        }
        Err("unstable".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking() {
        let live = State::Live {
            ver: 5,
            vhash: 1,
            flag: 0,
            ts: 10,
        };
        let tomb = State::Tomb { ver: -6, ts: 9 };
        let older_live = State::Live {
            ver: 5,
            vhash: 1,
            flag: 0,
            ts: 9,
        };
        assert!(rank(&tomb) > rank(&live));
        assert!(rank(&live) > rank(&older_live));
        assert!(rank(&older_live) > rank(&State::Absent));
    }
}
