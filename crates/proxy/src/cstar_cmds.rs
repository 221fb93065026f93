//! Commands whose key status involves Cassandra (cassandra.md §5.2–§5.4): C* reads with faked
//! meta, getm split between the stores, and sequential dual writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use beansdb_cassandra::{BdbValue, CassandraError, ErrorKind};
use beansdb_protocol::{is_valid_write_key, response as resp};
use bytes::Bytes;

use crate::cstar::{error_reply, CStar, LiveWrite};
use crate::dualwrite_log::DualOp;
use crate::nwr::{Body, Exec, Reply};
use crate::pool::Item;
use crate::switch::{lookup_key, Dispatch, Status};

/// Which stores a request touched, for `gobeansproxy_total_reqs{store}` and the access log.
#[derive(Debug, Default, Clone, Copy)]
pub struct Touched {
    pub beansdb: bool,
    pub cstar: bool,
    pub cstar_failed: bool,
}

/// A key the C* read side answers: a plain key, or `?key`/`??key` meta (§5.3).
enum CKey<'a> {
    Plain(&'a [u8]),
    Meta { real: &'a [u8], long: bool },
}

fn ckey(key: &[u8]) -> CKey<'_> {
    if let Some(real) = key.strip_prefix(b"??") {
        CKey::Meta { real, long: true }
    } else if let Some(real) = key.strip_prefix(b"?") {
        CKey::Meta { real, long: false }
    } else {
        CKey::Plain(key)
    }
}

/// Whether beansdb answers this read key whatever the status: `@` keys, and `?`/`??` alone
/// (answered locally as in proxy §2.5).
pub fn beansdb_only_key(key: &[u8]) -> bool {
    key.first() == Some(&b'@') || lookup_key(key).is_empty()
}

/// The reply item of a C* row for the requested `key` (plain or meta).
fn item_of(key: &Bytes, v: BdbValue) -> Item {
    match ckey(key) {
        CKey::Plain(_) => {
            let cas = v.cas;
            Item::new(key.clone(), v.flag, Bytes::from(v.body)).with_cas(cas)
        }
        CKey::Meta { long, .. } => {
            let secs = v.rtime_ms.div_euclid(1000);
            let mut body = format!("1 0 {} {} {secs}", v.flag, v.body.len());
            if long {
                body.push_str(" 0 0");
            }
            Item::new(key.clone(), 0, Bytes::from(body))
        }
    }
}

/// The C* lookup key of a read key, or `None` when it cannot have a row (invalid key).
fn select_key(key: &[u8]) -> Option<&[u8]> {
    let real = match ckey(key) {
        CKey::Plain(k) => k,
        CKey::Meta { real, .. } => real,
    };
    is_valid_write_key(real).then_some(real)
}

fn is_stored(r: &Reply) -> bool {
    matches!(r, Reply::Static(s) if *s == resp::STORED)
}

/// The whole reply's failure when the C* half was cut by the dual-write margin.
fn cut_short(dual_deadline: Instant, e: &CassandraError) -> bool {
    e.kind() == ErrorKind::Timeout && Instant::now() >= dual_deadline
}

/// A storage command's fields.
pub struct SetRequest {
    pub key: Bytes,
    pub flag: u32,
    pub exptime: i32,
    pub cas: u64,
    pub body: Arc<Body>,
}

pub struct CstarCtx<'a> {
    pub cstar: &'a Arc<CStar>,
    pub snap: &'a Dispatch,
    pub deadline: Instant,
    pub touched: &'a mut Touched,
}

impl CstarCtx<'_> {
    fn store(&self, key: &[u8]) -> Result<&beansdb_cassandra::CassandraStore, CassandraError> {
        self.snap.store(key).ok_or_else(|| {
            CassandraError::Config(format!(
                "no prepared table {:?} for this key",
                self.snap.table(key)
            ))
        })
    }

    fn failed(&mut self, e: &CassandraError) -> Reply {
        self.touched.cstar_failed = true;
        Reply::Text(error_reply(e))
    }

    /// get / gets of one key in a C*-read status.
    pub async fn get(&mut self, key: Bytes, gets: bool) -> Reply {
        let Some(sk) = select_key(&key) else {
            return Reply::Values {
                items: Vec::new(),
                gets,
            };
        };
        self.touched.cstar = true;
        let store = match self.store(sk) {
            Ok(s) => s.clone(),
            Err(e) => return self.failed(&e),
        };
        match self.cstar.read(&store, sk, self.deadline).await {
            Ok(row) => Reply::Values {
                items: row.map(|v| item_of(&key, v)).into_iter().collect(),
                gets,
            },
            Err(e) => self.failed(&e),
        }
    }

    /// The C* part of a getm: hits by requested key. Any failure fails the request (§5.4).
    pub async fn getm_part(
        &mut self,
        keys: &[Bytes],
    ) -> Result<HashMap<Bytes, Item>, CassandraError> {
        // Owned keys: borrowed ones held across the awaits make the future not `Send`.
        let mut by_table: HashMap<String, Vec<(Bytes, Bytes)>> = HashMap::new();
        for k in keys {
            if let Some(sk) = select_key(k) {
                let sk = k.slice(k.len() - sk.len()..);
                by_table
                    .entry(self.snap.table(&sk).to_string())
                    .or_default()
                    .push((k.clone(), sk));
            }
        }
        if by_table.is_empty() {
            return Ok(HashMap::new());
        }
        self.touched.cstar = true;
        let mut out = HashMap::new();
        for (table, ks) in by_table {
            let store =
                self.snap.stores.get(&table).cloned().ok_or_else(|| {
                    CassandraError::Config(format!("no prepared table {table:?}"))
                })?;
            let sks: Vec<Bytes> = ks.iter().map(|(_, sk)| sk.clone()).collect();
            let rows = self.cstar.read_many(&store, &sks, self.deadline).await?;
            for ((k, _), row) in ks.into_iter().zip(rows) {
                if let Some(v) = row {
                    let item = item_of(&k, v);
                    out.insert(k, item);
                }
            }
        }
        Ok(out)
    }

    /// set / add / replace / cas of a valid key whose status writes C* (§5.2).
    pub async fn set(&mut self, ex: &mut Exec<'_>, status: Status, req: SetRequest) -> Reply {
        let SetRequest {
            key,
            flag,
            exptime,
            cas,
            body,
        } = req;
        let ts = self.cstar.next_ts();
        if status.beansdb_write() {
            self.touched.beansdb = true;
            let r = ex.set(key.clone(), flag, exptime, body.clone()).await;
            if !is_stored(&r) {
                return if r.is_server_error() {
                    r
                } else {
                    Reply::Static(resp::SERVER_ERROR_WRITE_FAILED)
                };
            }
        }
        let c = self.cstar.clone();
        let w = LiveWrite {
            key: &key,
            flag,
            exptime,
            // The column is an int: the low 32 bits (cassandra.md §2.1).
            cas: cas as u32,
            body: &body.data,
        };
        self.cstar_half(
            DualOp::Set,
            status,
            &key,
            ts,
            resp::STORED,
            |store, dl| async move { c.write(&store, w, ts, dl).await },
        )
        .await
    }

    /// delete of a valid key whose status writes C* (§5.2).
    pub async fn delete(&mut self, ex: &mut Exec<'_>, status: Status, key: Bytes) -> Reply {
        let ts = self.cstar.next_ts();
        // crw cannot tell whether the row existed: DELETED, as gobeansproxy.
        let mut beansdb_reply = resp::DELETED;
        if status.beansdb_write() {
            self.touched.beansdb = true;
            beansdb_reply = match ex.delete(key.clone()).await {
                Reply::Static(s) if s == resp::DELETED || s == resp::NOT_FOUND => s,
                _ => return Reply::Static(resp::SERVER_ERROR_DELETE_FAILED),
            };
        }
        let c = self.cstar.clone();
        let k = key.clone();
        self.cstar_half(
            DualOp::Del,
            status,
            &key,
            ts,
            beansdb_reply,
            |store, dl| async move { c.remove(&store, &k, ts, dl).await },
        )
        .await
    }

    /// The C* statement of a write. In a dual status (beansdb already succeeded) it must end
    /// 100 ms before the deadline, and a failure is logged; brw_cw then still answers `ok`
    /// (beansdb is the source of truth), bw_crw answers the C* error. In crw the C* result is
    /// the reply.
    async fn cstar_half<F, Fut>(
        &mut self,
        op: DualOp,
        status: Status,
        key: &[u8],
        ts: i64,
        ok: &'static [u8],
        stmt: F,
    ) -> Reply
    where
        F: FnOnce(beansdb_cassandra::CassandraStore, Instant) -> Fut,
        Fut: std::future::Future<Output = Result<(), CassandraError>>,
    {
        self.touched.cstar = true;
        let store = match self.store(key) {
            Ok(s) => s.clone(),
            Err(e) => return self.failed(&e),
        };
        let dual = status.beansdb_write();
        let deadline = if dual {
            CStar::dual_deadline(self.deadline)
        } else {
            self.deadline
        };
        match stmt(store, deadline).await {
            Ok(()) => Reply::Static(ok),
            Err(e) if dual => {
                self.touched.cstar_failed = true;
                self.cstar.dual_write_failed(op, key, status, ts, &e);
                match status {
                    Status::BrwCw => Reply::Static(ok),
                    _ if cut_short(deadline, &e) => Reply::Static(resp::SERVER_ERROR_TIMEOUT),
                    _ => Reply::Text(error_reply(&e)),
                }
            }
            Err(e) => self.failed(&e),
        }
    }
}

/// Merges the hits of both getm parts in request order (first occurrence of each key).
pub fn merge_in_order(
    keys: &[Bytes],
    mut beansdb: Vec<Item>,
    mut cstar: HashMap<Bytes, Item>,
    gets: bool,
) -> Reply {
    let mut from_b: HashMap<Bytes, Item> = beansdb.drain(..).map(|i| (i.key.clone(), i)).collect();
    let mut items = Vec::with_capacity(from_b.len() + cstar.len());
    for k in keys {
        if let Some(i) = from_b.remove(k).or_else(|| cstar.remove(k)) {
            items.push(i);
        }
    }
    Reply::Values { items, gets }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(flag: u32, body: &[u8], rtime_ms: i64, cas: u32) -> BdbValue {
        BdbValue {
            rtime_ms,
            flag,
            exptime: 0,
            cas,
            body: body.to_vec(),
        }
    }

    #[test]
    fn faked_meta_bodies() {
        let v = row(7, b"hello", 1_772_331_630_999, 0);
        let i = item_of(&Bytes::from_static(b"?/a"), v.clone());
        assert_eq!((i.flag, &i.data[..]), (0, &b"1 0 7 5 1772331630"[..]));
        let i = item_of(&Bytes::from_static(b"??/a"), v.clone());
        assert_eq!(&i.data[..], b"1 0 7 5 1772331630 0 0");
        let i = item_of(&Bytes::from_static(b"/a"), row(7, b"hello", 0, 9));
        assert_eq!((i.flag, &i.data[..], i.cas), (7, &b"hello"[..], 9));
    }

    #[test]
    fn select_keys() {
        assert_eq!(select_key(b"/a"), Some(&b"/a"[..]));
        assert_eq!(select_key(b"??/a"), Some(&b"/a"[..]));
        assert_eq!(select_key(b"?"), None);
        assert_eq!(select_key(b"a b"), None);
        assert!(beansdb_only_key(b"@0"));
        assert!(beansdb_only_key(b"??"));
        assert!(!beansdb_only_key(b"?a"));
    }

    #[test]
    fn getm_merge_keeps_request_order() {
        let keys: Vec<Bytes> = ["a", "b", "c", "d"]
            .iter()
            .map(|k| Bytes::from(*k))
            .collect();
        let b = vec![
            Item::new(Bytes::from("c"), 0, Bytes::from("3")),
            Item::new(Bytes::from("a"), 0, Bytes::from("1")),
        ];
        let mut c = HashMap::new();
        c.insert(
            Bytes::from("b"),
            Item::new(Bytes::from("b"), 0, Bytes::from("2")),
        );
        let Reply::Values { items, .. } = merge_in_order(&keys, b, c, false) else {
            panic!("values");
        };
        let got: Vec<&[u8]> = items.iter().map(|i| &i.key[..]).collect();
        assert_eq!(got, [&b"a"[..], b"b", b"c"]);
    }
}
