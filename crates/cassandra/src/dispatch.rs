//! The prefix switcher and the table dispatcher (spec §4): per-prefix statuses and tables,
//! looked up by longest byte prefix, loaded from the static maps of proxy.yaml plus the rows
//! of the config tables.
//!
//! [`PrefixMap`] is generic over the value so both dispatchers share the lookup rule;
//! [`Dispatchers::load`] builds and validates both from a [`CassandraConfig`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use scylla::client::session::Session;

use crate::cfgtable::ConfigTable;
use crate::config::{valid_name, CassandraConfig, DispatcherCfg, STATUSES};
use crate::error::CassandraError;

/// The five per-prefix statuses (spec §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// `br1w1cr0w0`: beansdb only.
    Brw,
    /// `br1w1cr0w1`: dual write, read beansdb.
    BrwCw,
    /// `br0w1cr1w1`: dual write, read C*.
    BwCrw,
    /// `br0w0cr1w1`: C* only.
    Crw,
    /// `br0w0cr1w0`: C* read-only.
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

    /// The status string of proxy.yaml, the config tables and `/cstar-cfg`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Brw => STATUSES[0],
            Status::BrwCw => STATUSES[1],
            Status::BwCrw => STATUSES[2],
            Status::Crw => STATUSES[3],
            Status::Cr => STATUSES[4],
        }
    }

    /// The short name used in prose and logs (`brw_cw`).
    pub fn alias(self) -> &'static str {
        match self {
            Status::Brw => "brw",
            Status::BrwCw => "brw_cw",
            Status::BwCrw => "bw_crw",
            Status::Crw => "crw",
            Status::Cr => "cr",
        }
    }

    /// Parses a status string (exact, as gobeansproxy).
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

    /// Both stores are written (brw_cw, bw_crw): the statuses backfill, verify and
    /// replay-errors act on.
    pub fn dual_write(self) -> bool {
        matches!(self, Status::BrwCw | Status::BwCrw)
    }

    /// Involves Cassandra at all (the proxy refuses incr/append for such keys, §5.2).
    pub fn uses_cstar(self) -> bool {
        self != Status::Brw
    }

    /// What the status becomes with `dstore.enable: false` (§4.2 rule 2): statuses that need
    /// beansdb become crw; cr stays cr.
    pub fn without_beansdb(self) -> Status {
        match self {
            Status::Cr => Status::Cr,
            _ => Status::Crw,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The key a dispatcher looks up (spec §4.2 rule 4): `?key` and `??key` use `key`, anything
/// else is used as received.
pub fn lookup_key(key: &[u8]) -> &[u8] {
    key.strip_prefix(b"??")
        .or_else(|| key.strip_prefix(b"?"))
        .unwrap_or(key)
}

/// Why a [`PrefixMap`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixMapError {
    #[error("empty prefix is not allowed")]
    EmptyPrefix,
    #[error("prefix {:?} configured twice", String::from_utf8_lossy(.0))]
    Duplicate(Vec<u8>),
}

/// Longest-byte-prefix lookup with a default (spec §4.2 rule 5). Prefixes are non-empty and
/// unique, so there is never a tie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixMap<V> {
    default: V,
    /// Longest first, so the first match is the longest.
    entries: Vec<(Vec<u8>, V)>,
}

impl<V> PrefixMap<V> {
    /// A map without prefixes: every key gets `default`.
    pub fn with_default(default: V) -> Self {
        PrefixMap {
            default,
            entries: Vec::new(),
        }
    }

    pub fn new(default: V, entries: Vec<(Vec<u8>, V)>) -> Result<Self, PrefixMapError> {
        let mut entries = entries;
        if entries.iter().any(|(p, _)| p.is_empty()) {
            return Err(PrefixMapError::EmptyPrefix);
        }
        // Stable sort: equal prefixes end up adjacent whatever their lengths' neighbours.
        entries.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        if let Some(w) = entries.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(PrefixMapError::Duplicate(w[0].0.clone()));
        }
        Ok(PrefixMap { default, entries })
    }

    pub fn default_value(&self) -> &V {
        &self.default
    }

    /// `(prefix, value)` pairs, longest prefix first.
    pub fn entries(&self) -> &[(Vec<u8>, V)] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(prefix, value)` pairs, longest prefix first.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.entries.iter().map(|(p, v)| (p.as_slice(), v))
    }

    /// The longest configured prefix of the lookup key of `key` and its value.
    pub fn matched(&self, key: &[u8]) -> Option<(&[u8], &V)> {
        let k = lookup_key(key);
        self.entries
            .iter()
            .find(|(p, _)| k.starts_with(p))
            .map(|(p, v)| (p.as_slice(), v))
    }

    /// The value for `key` as received (`?`/`??` stripped), or the default.
    pub fn get(&self, key: &[u8]) -> &V {
        self.matched(key).map_or(&self.default, |(_, v)| v)
    }
}

/// Which dispatcher a map belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatcher {
    /// `prefix_rw_dispatcher_cfg`: prefix → status.
    Rw,
    /// `prefix_table_dispatcher_cfg`: prefix → table.
    Table,
}

impl Dispatcher {
    pub fn config_key(self) -> &'static str {
        match self {
            Dispatcher::Rw => "prefix_rw_dispatcher_cfg",
            Dispatcher::Table => "prefix_table_dispatcher_cfg",
        }
    }

    /// The `config` query value of `/cstar-cfg`, and a metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Dispatcher::Rw => "rwswitcher",
            Dispatcher::Table => "tablefinder",
        }
    }

    pub fn parse_label(s: &str) -> Option<Dispatcher> {
        match s {
            "rwswitcher" => Some(Dispatcher::Rw),
            "tablefinder" => Some(Dispatcher::Table),
            _ => None,
        }
    }

    /// Whether `value` is acceptable here: a status, or a table name.
    pub fn value_ok(self, value: &str) -> bool {
        match self {
            Dispatcher::Rw => Status::parse(value).is_some(),
            Dispatcher::Table => valid_name(value),
        }
    }
}

/// A rule of §3.2 that a candidate map breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapError {
    EmptyPrefix,
    BadValue {
        value: String,
        prefix: Vec<u8>,
    },
    /// The same prefix from two sources: (source, value) of each.
    Twice {
        prefix: Vec<u8>,
        first: (String, String),
        second: (String, String),
    },
}

/// A prefix for messages (lossy UTF-8).
pub fn show_prefix(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

impl MapError {
    /// The startup / reload wording of §3.2, e.g.
    /// `config: cassandra.prefix_rw_dispatcher_cfg: empty prefix is not allowed`.
    pub fn config_message(&self, d: Dispatcher) -> String {
        let what = match self {
            MapError::EmptyPrefix => "empty prefix is not allowed".to_string(),
            MapError::BadValue { value, prefix } => match d {
                Dispatcher::Rw => format!(
                    "unknown status {value:?} for prefix {:?} (valid: {})",
                    show_prefix(prefix),
                    STATUSES.join(", ")
                ),
                Dispatcher::Table => format!(
                    "bad table name {value:?} for prefix {:?} (letters, digits, _; max 48)",
                    show_prefix(prefix)
                ),
            },
            MapError::Twice {
                prefix,
                first,
                second,
            } => format!(
                "prefix {:?} configured twice ({}: {}; {}: {})",
                show_prefix(prefix),
                first.0,
                first.1,
                second.0,
                second.1
            ),
        };
        format!("config: cassandra.{}: {what}", d.config_key())
    }
}

/// Merges a dispatcher's static entries (`value → [prefix…]`) and its config-table rows
/// (`prefix, value`) into one map, checking: no empty prefix, known values, no prefix twice.
/// `table_label` names the config table in the "configured twice" message. Pure, so the proxy
/// validates a candidate map with it before writing any row.
pub fn merge<'a>(
    d: Dispatcher,
    static_: impl IntoIterator<Item = (&'a String, &'a Vec<String>)>,
    rows: &[(Vec<u8>, String)],
    table_label: &str,
) -> Result<Vec<(Vec<u8>, String)>, MapError> {
    let mut out: BTreeMap<Vec<u8>, (String, String)> = BTreeMap::new();
    let entries = static_
        .into_iter()
        .flat_map(|(v, ps)| {
            ps.iter()
                .map(move |p| (p.as_bytes().to_vec(), v.clone(), "static".to_string()))
        })
        .chain(
            rows.iter()
                .map(|(p, v)| (p.clone(), v.clone(), format!("table {table_label}"))),
        );
    for (prefix, value, source) in entries {
        if prefix.is_empty() {
            return Err(MapError::EmptyPrefix);
        }
        if !d.value_ok(&value) {
            return Err(MapError::BadValue { value, prefix });
        }
        if let Some(prev) = out.get(&prefix) {
            return Err(MapError::Twice {
                prefix,
                first: prev.clone(),
                second: (source, value),
            });
        }
        out.insert(prefix, (source, value));
    }
    Ok(out.into_iter().map(|(p, (_, v))| (p, v)).collect())
}

/// Whether `prefix` is one of a dispatcher's static entries.
pub fn in_static<'a>(
    static_: impl IntoIterator<Item = (&'a String, &'a Vec<String>)>,
    prefix: &[u8],
) -> bool {
    static_
        .into_iter()
        .any(|(_, ps)| ps.iter().any(|p| p.as_bytes() == prefix))
}

/// Both dispatchers of one config snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatchers {
    /// Key → status (`default_storage` when nothing matches or the dispatcher is off).
    pub rw: PrefixMap<Status>,
    /// Key → table in `default_key_space` (`default_table` when nothing matches or off).
    pub tables: PrefixMap<String>,
}

/// The static entries plus the config-table rows of one dispatcher, validated.
async fn load_entries(
    which: Dispatcher,
    d: &DispatcherCfg,
    session: Option<&Arc<Session>>,
) -> Result<Vec<(Vec<u8>, String)>, CassandraError> {
    let err = |m: String| {
        CassandraError::Config(format!("config: cassandra.{}: {m}", which.config_key()))
    };
    if !d.enable {
        return Ok(Vec::new());
    }
    if d.cfg_table.is_empty() != d.cfg_keyspace.is_empty() {
        return Err(err("cfg_table and cfg_keyspace must be set together".into()));
    }
    let mut rows = Vec::new();
    let mut label = String::new();
    if !d.cfg_table.is_empty() {
        let session = session.ok_or_else(|| {
            err(format!(
                "cfg_table {}.{} needs a Cassandra session",
                d.cfg_keyspace, d.cfg_table
            ))
        })?;
        let table = ConfigTable::new(session.clone(), &d.cfg_keyspace, &d.cfg_table).await?;
        label = table.table().to_string();
        rows = table.load().await?;
    }
    merge(which, &d.static_, &rows, &label)
        .map_err(|e| CassandraError::Config(e.config_message(which)))
}

impl Dispatchers {
    /// Every key is `default` in `table` (no proxy.yaml: the tools' no-filter mode).
    pub fn fixed(default: Status, table: &str) -> Self {
        Dispatchers {
            rw: PrefixMap::with_default(default),
            tables: PrefixMap::with_default(table.to_string()),
        }
    }

    /// Builds both dispatchers from `cfg` (static maps, plus the config tables through
    /// `session` when `cfg_table`/`cfg_keyspace` are set), with the checks of spec §3.2.
    pub async fn load(
        cfg: &CassandraConfig,
        session: Option<&Arc<Session>>,
    ) -> Result<Self, CassandraError> {
        let default = Status::parse(&cfg.default_storage).ok_or_else(|| {
            CassandraError::Config(if cfg.default_storage.is_empty() {
                "config: cassandra.default_storage is required".to_string()
            } else {
                format!(
                    "config: cassandra.default_storage: unknown status {:?} (valid: {})",
                    cfg.default_storage,
                    STATUSES.join(", ")
                )
            })
        })?;
        if !valid_name(&cfg.default_table) {
            return Err(CassandraError::Config(format!(
                "config: cassandra.default_table: bad name {:?} (letters, digits, _; max 48)",
                cfg.default_table
            )));
        }
        let rw_entries =
            load_entries(Dispatcher::Rw, &cfg.prefix_rw_dispatcher_cfg, session).await?;
        let table_entries =
            load_entries(Dispatcher::Table, &cfg.prefix_table_dispatcher_cfg, session).await?;
        let rw_entries = rw_entries
            .into_iter()
            .filter_map(|(p, v)| Status::parse(&v).map(|s| (p, s)))
            .collect();
        // Validated above (non-empty, unique), so these cannot fail; map the error anyway.
        let map_err = |section: &str, e: PrefixMapError| {
            CassandraError::Config(format!("config: cassandra.{section}: {e}"))
        };
        Ok(Dispatchers {
            rw: PrefixMap::new(default, rw_entries)
                .map_err(|e| map_err("prefix_rw_dispatcher_cfg", e))?,
            tables: PrefixMap::new(cfg.default_table.clone(), table_entries)
                .map_err(|e| map_err("prefix_table_dispatcher_cfg", e))?,
        })
    }

    /// Every table a key can map to: the default table first, then the dispatcher's tables.
    pub fn all_tables(&self) -> Vec<String> {
        let mut out = vec![self.tables.default_value().clone()];
        for (_, t) in self.tables.entries() {
            if !out.contains(t) {
                out.push(t.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod merge_rules {
        use super::super::*;

        fn st(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
            pairs
                .iter()
                .map(|(v, ps)| (v.to_string(), ps.iter().map(|p| p.to_string()).collect()))
                .collect()
        }

        fn rows(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, String)> {
            pairs
                .iter()
                .map(|(p, v)| (p.as_bytes().to_vec(), v.to_string()))
                .collect()
        }

        #[test]
        fn union_of_static_and_rows() {
            let m = merge(
                Dispatcher::Rw,
                &st(&[("br1w1cr0w1", &["/c/", "/d/"]), ("br0w0cr1w1", &["test_"])]),
                &rows(&[("/x/", "br0w1cr1w1")]),
                "doubandb.bdb_prefix_rw_switcher",
            )
            .unwrap();
            assert_eq!(m.len(), 4);
            assert!(m.contains(&(b"/x/".to_vec(), "br0w1cr1w1".to_string())));
            assert!(m.contains(&(b"test_".to_vec(), "br0w0cr1w1".to_string())));
        }

        #[test]
        fn messages_of_every_rule() {
            let t = "doubandb.bdb_prefix_rw_switcher";
            let e = merge(
                Dispatcher::Rw,
                &st(&[("br1w1cr0w1", &["/c/"])]),
                &rows(&[("/c/", "br0w0cr1w1")]),
                t,
            )
            .unwrap_err();
            assert_eq!(
                e.config_message(Dispatcher::Rw),
                "config: cassandra.prefix_rw_dispatcher_cfg: prefix \"/c/\" configured twice \
                 (static: br1w1cr0w1; table doubandb.bdb_prefix_rw_switcher: br0w0cr1w1)"
            );
            let e = merge(Dispatcher::Rw, &st(&[("brw", &["/c/"])]), &[], t).unwrap_err();
            assert_eq!(
                e.config_message(Dispatcher::Rw),
                "config: cassandra.prefix_rw_dispatcher_cfg: unknown status \"brw\" for prefix \
                 \"/c/\" (valid: br1w1cr0w0, br1w1cr0w1, br0w1cr1w1, br0w0cr1w1, br0w0cr1w0)"
            );
            let e = merge(Dispatcher::Rw, &st(&[("br1w1cr0w0", &[""])]), &[], t).unwrap_err();
            assert_eq!(
                e.config_message(Dispatcher::Rw),
                "config: cassandra.prefix_rw_dispatcher_cfg: empty prefix is not allowed"
            );
            let e = merge(
                Dispatcher::Table,
                &st(&[("kv-store", &["/a"])]),
                &[],
                "doubandb.bdb_prefix_table_finder",
            )
            .unwrap_err();
            assert!(e.config_message(Dispatcher::Table).starts_with(
                "config: cassandra.prefix_table_dispatcher_cfg: bad table name \"kv-store\""
            ));
            // Twice within static.
            let e = merge(
                Dispatcher::Table,
                &st(&[("a", &["/p"]), ("b", &["/p"])]),
                &[],
                "ks.t",
            )
            .unwrap_err();
            assert!(matches!(e, MapError::Twice { .. }));
            assert!(in_static(&st(&[("a", &["/p"])]), b"/p"));
            assert!(!in_static(&st(&[("a", &["/p"])]), b"/q"));
        }
    }

    fn map() -> PrefixMap<Status> {
        PrefixMap::new(
            Status::Brw,
            vec![
                (b"/test_prefix_c/".to_vec(), Status::BrwCw),
                (b"test_".to_vec(), Status::Crw),
                (b"/test".to_vec(), Status::BwCrw),
            ],
        )
        .expect("valid")
    }

    #[test]
    fn spec_example() {
        let m = map();
        assert_eq!(*m.get(b"/test_prefix_c/1"), Status::BrwCw);
        assert_eq!(*m.get(b"/test_prefix_x"), Status::BwCrw);
        assert_eq!(*m.get(b"test_1"), Status::Crw);
        assert_eq!(*m.get(b"?test_1"), Status::Crw);
        assert_eq!(*m.get(b"??/test_prefix_c/1"), Status::BrwCw);
        assert_eq!(*m.get(b"tes"), Status::Brw);
        assert_eq!(
            m.matched(b"/test_prefix_c/1").map(|(p, _)| p),
            Some(&b"/test_prefix_c/"[..])
        );
        assert_eq!(m.matched(b"x"), None);
    }

    #[test]
    fn bad_maps() {
        assert_eq!(
            PrefixMap::new(0, vec![(Vec::new(), 1)]),
            Err(PrefixMapError::EmptyPrefix)
        );
        assert_eq!(
            PrefixMap::new(
                0,
                vec![(b"a".to_vec(), 1), (b"bb".to_vec(), 2), (b"a".to_vec(), 3)]
            ),
            Err(PrefixMapError::Duplicate(b"a".to_vec()))
        );
    }

    #[test]
    fn statuses() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("brw"), None);
        let dual: Vec<_> = Status::ALL.into_iter().filter(|s| s.dual_write()).collect();
        assert_eq!(dual, [Status::BrwCw, Status::BwCrw]);
    }

    fn cfg() -> CassandraConfig {
        CassandraConfig {
            default_key_space: "doubandb".into(),
            default_table: "kvstore".into(),
            default_storage: "br1w1cr0w0".into(),
            ..CassandraConfig::default()
        }
    }

    fn load(c: &CassandraConfig) -> Result<Dispatchers, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(Dispatchers::load(c, None))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn static_maps() {
        let mut c = cfg();
        let d = load(&c).expect("no dispatchers");
        assert_eq!(*d.rw.get(b"/x"), Status::Brw);
        assert_eq!(d.tables.get(b"/x"), "kvstore");
        c.prefix_rw_dispatcher_cfg.enable = true;
        c.prefix_rw_dispatcher_cfg
            .static_
            .insert("br1w1cr0w1".into(), vec!["/a/".into()]);
        c.prefix_table_dispatcher_cfg.enable = true;
        c.prefix_table_dispatcher_cfg
            .static_
            .insert("kvstore_ark".into(), vec!["/ark".into()]);
        let d = load(&c).expect("valid");
        assert_eq!(*d.rw.get(b"/a/1"), Status::BrwCw);
        assert_eq!(d.tables.get(b"/ark/1"), "kvstore_ark");
        assert_eq!(d.all_tables(), ["kvstore", "kvstore_ark"]);

        let mut dup = c.clone();
        dup.prefix_rw_dispatcher_cfg
            .static_
            .insert("br0w0cr1w1".into(), vec!["/a/".into()]);
        assert_eq!(
            load(&dup).expect_err("duplicate"),
            "config: cassandra.prefix_rw_dispatcher_cfg: prefix \"/a/\" configured twice \
             (static: br0w0cr1w1; static: br1w1cr0w1)"
        );
        let mut bad = c.clone();
        bad.prefix_rw_dispatcher_cfg
            .static_
            .insert("nope".into(), vec!["/b/".into()]);
        assert!(load(&bad)
            .expect_err("status")
            .starts_with("config: cassandra.prefix_rw_dispatcher_cfg: unknown status \"nope\""));
        let mut empty = c.clone();
        empty
            .prefix_table_dispatcher_cfg
            .static_
            .insert("kvstore".into(), vec![String::new()]);
        assert_eq!(
            load(&empty).expect_err("empty"),
            "config: cassandra.prefix_table_dispatcher_cfg: empty prefix is not allowed"
        );
        let mut half = c;
        half.prefix_rw_dispatcher_cfg.cfg_table = "t".into();
        assert_eq!(
            load(&half).expect_err("half"),
            "config: cassandra.prefix_rw_dispatcher_cfg: cfg_table and cfg_keyspace must be \
             set together"
        );
    }
}
