//! The Cassandra seam: per-key read/write status (cassandra.md §4.1–§4.2).
//!
//! Every command asks a [`PrefixSwitch`] snapshot which stores serve the key. Today the
//! switch has no prefixes and answers `br1w1cr0w0` (beansdb only) for every key; the C*
//! backend will fill it from `prefix_rw_dispatcher_cfg` and swap snapshots on reload.

use std::sync::Arc;

use parking_lot::RwLock;

/// The five statuses of cassandra.md §4.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// br1w1cr0w0: beansdb only.
    Brw,
    /// br1w1cr0w1: dual write, read beansdb.
    BrwCw,
    /// br0w1cr1w1: dual write, read C*.
    BwCrw,
    /// br0w0cr1w1: C* only.
    Crw,
    /// br0w0cr1w0: C* read-only.
    Cr,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Brw,
        Status::BrwCw,
        Status::BwCrw,
        Status::Crw,
        Status::Cr,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Brw => "br1w1cr0w0",
            Status::BrwCw => "br1w1cr0w1",
            Status::BwCrw => "br0w1cr1w1",
            Status::Crw => "br0w0cr1w1",
            Status::Cr => "br0w0cr1w0",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn beansdb_read(self) -> bool {
        matches!(self, Status::Brw | Status::BrwCw)
    }

    pub fn beansdb_write(self) -> bool {
        matches!(self, Status::Brw | Status::BrwCw | Status::BwCrw)
    }

    pub fn cstar_read(self) -> bool {
        matches!(self, Status::BwCrw | Status::Crw | Status::Cr)
    }

    pub fn cstar_write(self) -> bool {
        matches!(self, Status::BrwCw | Status::BwCrw | Status::Crw)
    }
}

/// Longest-prefix status lookup.
#[derive(Debug, Clone)]
pub struct PrefixSwitch {
    default: Status,
    /// Sorted by length, longest first, so the first match wins.
    prefixes: Vec<(Vec<u8>, Status)>,
}

impl PrefixSwitch {
    /// The switch while the Cassandra backend is disabled: everything is beansdb only.
    pub fn beansdb_only() -> PrefixSwitch {
        PrefixSwitch {
            default: Status::Brw,
            prefixes: Vec::new(),
        }
    }

    /// A switch with explicit prefixes (validated by the caller: non-empty, no duplicates).
    pub fn new(default: Status, prefixes: Vec<(Vec<u8>, Status)>) -> PrefixSwitch {
        let mut prefixes = prefixes;
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        PrefixSwitch { default, prefixes }
    }

    /// The status of a key as received (§4.2): `?key`/`??key` use `key`; `@` keys bypass the
    /// switch (listings and raw records are beansdb's).
    pub fn status(&self, key: &[u8]) -> Status {
        if key.first() == Some(&b'@') {
            return Status::Brw;
        }
        let lookup = key
            .strip_prefix(b"??")
            .or_else(|| key.strip_prefix(b"?"))
            .unwrap_or(key);
        self.prefixes
            .iter()
            .find(|(p, _)| lookup.starts_with(p))
            .map(|(_, s)| *s)
            .unwrap_or(self.default)
    }
}

/// The current switch; a request takes one snapshot and uses it for every key and step.
pub struct SwitchHandle {
    cur: RwLock<Arc<PrefixSwitch>>,
}

impl SwitchHandle {
    pub fn new(s: PrefixSwitch) -> SwitchHandle {
        SwitchHandle {
            cur: RwLock::new(Arc::new(s)),
        }
    }

    pub fn snapshot(&self) -> Arc<PrefixSwitch> {
        self.cur.read().clone()
    }

    pub fn replace(&self, s: PrefixSwitch) {
        *self.cur.write() = Arc::new(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beansdb_only_answers_brw() {
        let s = PrefixSwitch::beansdb_only();
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
            assert!(!st.cstar_read() && !st.cstar_write());
        }
    }

    #[test]
    fn longest_prefix_and_meta_keys() {
        let s = PrefixSwitch::new(
            Status::Brw,
            vec![
                (b"/test_".to_vec(), Status::Crw),
                (b"/test_prefix_c/".to_vec(), Status::BrwCw),
            ],
        );
        assert_eq!(s.status(b"/test_prefix_c/1"), Status::BrwCw);
        assert_eq!(s.status(b"?/test_prefix_c/1"), Status::BrwCw);
        assert_eq!(s.status(b"??/test_x"), Status::Crw);
        assert_eq!(s.status(b"/other"), Status::Brw);
        assert_eq!(s.status(b"@/test_"), Status::Brw);
        for st in Status::ALL {
            assert_eq!(Status::parse(st.as_str()), Some(st));
        }
        let h = SwitchHandle::new(PrefixSwitch::beansdb_only());
        let snap = h.snapshot();
        h.replace(s);
        assert_eq!(snap.status(b"/test_a"), Status::Brw);
        assert_eq!(h.snapshot().status(b"/test_a"), Status::Crw);
    }
}
