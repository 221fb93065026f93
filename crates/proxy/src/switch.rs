//! Per-key store lookup (cassandra.md §4): the five read/write statuses, longest-prefix maps
//! and the [`Dispatch`] snapshot a request uses for every key and step.

use std::collections::HashMap;
use std::sync::Arc;

use beansdb_cassandra::CassandraStore;
use parking_lot::RwLock;

pub use beansdb_cassandra::dispatch::{lookup_key, PrefixMap, Status};

/// One snapshot of both dispatchers with the prepared stores of every table they name.
#[derive(Debug, Clone)]
pub struct Dispatch {
    /// Key → status; the default is `default_storage`.
    pub rw: PrefixMap<Status>,
    /// Key → table; the default is `default_table`.
    pub tables: PrefixMap<String>,
    /// Table name → prepared statements; empty while Cassandra is disabled.
    pub stores: HashMap<String, CassandraStore>,
    /// Whether beansdb serves `@` keys (`dstore.enable`).
    pub beansdb: bool,
}

impl Dispatch {
    /// Cassandra disabled: every key is beansdb only.
    pub fn beansdb_only() -> Dispatch {
        Dispatch {
            rw: PrefixMap::with_default(Status::Brw),
            tables: PrefixMap::with_default(String::new()),
            stores: HashMap::new(),
            beansdb: true,
        }
    }

    /// The status of a key as received. `@` keys bypass the switch: listings and raw
    /// records are beansdb's.
    pub fn status(&self, key: &[u8]) -> Status {
        self.status_and_prefix(key).0
    }

    /// The status and the matched prefix (`None` = `default_storage`).
    pub fn status_and_prefix(&self, key: &[u8]) -> (Status, Option<&[u8]>) {
        if key.first() == Some(&b'@') {
            return (Status::Brw, None);
        }
        match self.rw.matched(key) {
            Some((p, s)) => (*s, Some(p)),
            None => (*self.rw.default_value(), None),
        }
    }

    /// The table of a key (§4.5).
    pub fn table(&self, key: &[u8]) -> &str {
        self.tables.get(key)
    }

    /// The prepared store of a key's table.
    pub fn store(&self, key: &[u8]) -> Option<&CassandraStore> {
        self.stores.get(self.table(key))
    }
}

/// The current snapshot; a request takes one and uses it for every key and step (§4.2).
pub struct SwitchHandle {
    cur: RwLock<Arc<Dispatch>>,
}

impl SwitchHandle {
    pub fn new(d: Dispatch) -> SwitchHandle {
        SwitchHandle {
            cur: RwLock::new(Arc::new(d)),
        }
    }

    pub fn snapshot(&self) -> Arc<Dispatch> {
        self.cur.read().clone()
    }

    pub fn replace(&self, d: Dispatch) {
        *self.cur.write() = Arc::new(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, Status)]) -> Dispatch {
        let entries = entries
            .iter()
            .map(|(p, s)| (p.as_bytes().to_vec(), *s))
            .collect();
        Dispatch {
            rw: PrefixMap::new(Status::Brw, entries).expect("valid map"),
            ..Dispatch::beansdb_only()
        }
    }

    #[test]
    fn beansdb_only_answers_brw() {
        let s = Dispatch::beansdb_only();
        for k in [
            &b"a"[..],
            b"?a",
            b"??/x",
            b"@",
            b"@@0123456789abcdef",
            b"\xff",
        ] {
            let st = s.status(k);
            assert_eq!(st, Status::Brw);
            assert!(st.beansdb_read() && st.beansdb_write());
            assert!(!st.cstar_read() && !st.cstar_write() && !st.uses_cstar());
        }
    }

    #[test]
    fn at_keys_bypass_the_switch() {
        let s = map(&[("/test_prefix_c/", Status::BrwCw), ("@", Status::Crw)]);
        assert_eq!(s.status(b"/test_prefix_c/1"), Status::BrwCw);
        assert_eq!(s.status(b"??/test_prefix_c/9"), Status::BrwCw);
        assert_eq!(s.status(b"@3a"), Status::Brw);
        assert_eq!(
            s.status_and_prefix(b"/test_prefix_c/1").1,
            Some(&b"/test_prefix_c/"[..])
        );
        assert_eq!(s.status_and_prefix(b"tes").1, None);
        assert_eq!(Status::Cr.without_beansdb(), Status::Cr);
        assert_eq!(Status::BrwCw.without_beansdb(), Status::Crw);
    }

    #[test]
    fn tables_and_snapshots() {
        let mut d = map(&[("/a", Status::Crw)]);
        d.tables = PrefixMap::new(
            "kvstore".to_string(),
            vec![(b"/ark".to_vec(), "kvstore_ark".to_string())],
        )
        .expect("valid map");
        assert_eq!(d.table(b"/ark/1"), "kvstore_ark");
        assert_eq!(d.table(b"??/ark/1"), "kvstore_ark");
        assert_eq!(d.table(b"/a1"), "kvstore");
        let h = SwitchHandle::new(Dispatch::beansdb_only());
        let snap = h.snapshot();
        h.replace(d);
        assert_eq!(snap.status(b"/a1"), Status::Brw);
        assert_eq!(h.snapshot().status(b"/a1"), Status::Crw);
    }
}
