//! The Cassandra backend at run time (cassandra.md §3–§7): the session, the dispatcher
//! snapshots and their online reloads (`/cstar-cfg`, `refresh_interval_sec`), timed data
//! statements with metrics, and the dual-write error log.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use beansdb_cassandra::scylla::client::session::Session;
use beansdb_cassandra::{
    cluster_name, connect, BdbValue, CassandraError, CassandraStore, ConfigTable, ErrorKind, Op,
    StoreOptions, WriteClock,
};
use metrics::{counter, gauge, histogram};
use serde_json::{json, Value};
use tracing::{error, info, warn};

use crate::config::{CassandraSection, Config, DispatcherSection};
use crate::dualwrite_log::{DualOp, DualWriteEntry, DualWriteLog, DualWriteLogCfg};
use crate::switch::{Dispatch, PrefixMap, Status, SwitchHandle};
use beansdb_cassandra::dispatch::{self as dispatch_rules, show_prefix, Dispatcher, MapError};

/// The C* half of a dual write ends this long before the request deadline (§5.2), so the
/// reply still makes it in time.
const DUAL_WRITE_MARGIN: Duration = Duration::from_millis(100);

/// Longest driver message in a `SERVER_ERROR cstar: …` reply (§5.2).
const REPLY_ERROR_MAX: usize = 200;

/// What made a reload happen (metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Post,
    Put,
    Delete,
    Refresh,
}

impl Trigger {
    fn label(self) -> &'static str {
        match self {
            Trigger::Post => "post",
            Trigger::Put => "put",
            Trigger::Delete => "delete",
            Trigger::Refresh => "refresh",
        }
    }
}

/// A `/cstar-cfg` failure: the HTTP status and the `error` text (§6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CfgError {
    pub status: u16,
    pub message: String,
}

impl CfgError {
    fn bad(message: impl Into<String>) -> CfgError {
        CfgError {
            status: 400,
            message: message.into(),
        }
    }

    fn upstream(message: impl Into<String>) -> CfgError {
        CfgError {
            status: 502,
            message: message.into(),
        }
    }
}

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Cassandra(#[from] CassandraError),
    #[error("{0}")]
    Invalid(String),
    #[error("cassandra.dual_write_err_cfg: cannot open {path}: {source}")]
    DualWriteLog {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a candidate snapshot could not be built.
enum BuildError {
    Map(Dispatcher, MapError),
    Prepare(CassandraError),
}

impl BuildError {
    fn message(&self) -> String {
        match self {
            BuildError::Map(d, e) => e.config_message(*d),
            BuildError::Prepare(e) => e.to_string(),
        }
    }

    fn into_cfg_error(self) -> CfgError {
        match &self {
            BuildError::Map(..) => {
                CfgError::upstream(format!("load cfg from db err: {}", self.message()))
            }
            BuildError::Prepare(e) => CfgError::upstream(format!("load cfg to server err: {e}")),
        }
    }
}

/// The Cassandra side of the proxy.
pub struct CStar {
    session: Arc<Session>,
    clock: WriteClock,
    dual_log: Option<DualWriteLog>,
    /// The `cassandra:` section in effect (static maps, defaults, dispatcher switches).
    section: parking_lot::Mutex<CassandraSection>,
    /// Prepared config tables by `(keyspace, table)`.
    cfg_tables: tokio::sync::Mutex<HashMap<(String, String), ConfigTable>>,
    /// Serialises `/cstar-cfg` requests and refreshes (§6).
    api: tokio::sync::Mutex<()>,
    confdir: Option<PathBuf>,
    dstore: bool,
    /// `cluster_name` of the C* cluster: the access-log target of C* operations.
    pub cluster_name: String,
    /// `host:port` of this proxy, written in dual-write log lines.
    me: String,
    write_timeout: Duration,
    select_timeout: Duration,
    max_conn_for_getm: usize,
}

fn status_of(v: &str) -> Status {
    // merge() accepted only valid statuses.
    Status::parse(v).unwrap_or(Status::Brw)
}

impl CStar {
    /// Connects, loads both dispatchers (static + config tables), prepares every table and
    /// opens the dual-write error log. Returns the backend and the first snapshot.
    pub async fn start(cfg: &Config) -> Result<(Arc<CStar>, Dispatch), StartError> {
        let section = cfg.cassandra.clone();
        let driver = section
            .driver_config()
            .map_err(|e| StartError::Invalid(e.to_string()))?;
        let session = Arc::new(connect(&driver).await?);
        let name = cluster_name(&session)
            .await
            .unwrap_or_else(|_| "cassandra".to_string());
        let dual_log = if cfg.dstore.enable {
            let d = &section.dual_write_err_cfg;
            let lc = DualWriteLogCfg {
                dir: PathBuf::from(&d.dump_to_dir),
                file_name: d.log_file_name.clone(),
                rotate_size_mb: d.rotate_size_mb.max(0) as u64,
                compress: d.compress,
                max_ages_days: d.max_ages.max(0) as u64,
                max_backups: d.max_backups.max(0) as u64,
            };
            let path = lc.dir.join(&lc.file_name).display().to_string();
            Some(
                DualWriteLog::open(lc)
                    .map_err(|source| StartError::DualWriteLog { path, source })?,
            )
        } else {
            None
        };
        let me = CStar {
            session,
            clock: WriteClock::new(),
            dual_log,
            section: parking_lot::Mutex::new(section.clone()),
            cfg_tables: tokio::sync::Mutex::new(HashMap::new()),
            api: tokio::sync::Mutex::new(()),
            confdir: cfg.confdir.clone(),
            dstore: cfg.dstore.enable,
            cluster_name: name,
            me: cfg.self_target(),
            write_timeout: driver.write_timeout(),
            select_timeout: driver.select_timeout(),
            max_conn_for_getm: driver.max_conn_for_getm.max(1),
        };
        let rw_rows = me
            .rows(&section.prefix_rw_dispatcher_cfg)
            .await
            .map_err(StartError::Cassandra)?;
        let table_rows = me
            .rows(&section.prefix_table_dispatcher_cfg)
            .await
            .map_err(StartError::Cassandra)?;
        let dispatch = me
            .build(&section, &rw_rows, &table_rows, None)
            .await
            .map_err(|e| match e {
                BuildError::Prepare(c) => StartError::Cassandra(c),
                other => StartError::Invalid(other.message()),
            })?;
        publish_gauges(&dispatch);
        info!(
            "cassandra: connected to {} ({}); {}",
            section.hosts.join(","),
            me.cluster_name,
            describe(&dispatch)
        );
        Ok((Arc::new(me), dispatch))
    }

    /// Write timestamps (§5.1): µs, strictly increasing in this process.
    pub fn next_ts(&self) -> i64 {
        self.clock.next_micros()
    }

    /// Rows of a dispatcher's config table (none when it is off or has no table).
    async fn rows(&self, d: &DispatcherSection) -> Result<Vec<(Vec<u8>, String)>, CassandraError> {
        match (d.enable, d.cfg_table()) {
            (true, Some((ks, t))) => self.cfg_table(ks, t).await?.load().await,
            _ => Ok(Vec::new()),
        }
    }

    async fn cfg_table(&self, ks: &str, t: &str) -> Result<ConfigTable, CassandraError> {
        let mut tables = self.cfg_tables.lock().await;
        let k = (ks.to_string(), t.to_string());
        if let Some(ct) = tables.get(&k) {
            return Ok(ct.clone());
        }
        let ct = ConfigTable::new(self.session.clone(), ks, t).await?;
        tables.insert(k, ct.clone());
        Ok(ct)
    }

    /// Validates the union of static entries and rows of both dispatchers and prepares every
    /// table they name (reusing the stores of `old`).
    async fn build(
        &self,
        s: &CassandraSection,
        rw_rows: &[(Vec<u8>, String)],
        table_rows: &[(Vec<u8>, String)],
        old: Option<&Dispatch>,
    ) -> Result<Dispatch, BuildError> {
        let label = |d: &DispatcherSection| format!("{}.{}", d.cfg_keyspace, d.cfg_table);
        let rw = &s.prefix_rw_dispatcher_cfg;
        let tf = &s.prefix_table_dispatcher_cfg;
        let rw_map =
            dispatch_rules::merge(Dispatcher::Rw, rw.effective_static(), rw_rows, &label(rw))
                .map_err(|e| BuildError::Map(Dispatcher::Rw, e))?;
        let table_map = dispatch_rules::merge(
            Dispatcher::Table,
            tf.effective_static(),
            table_rows,
            &label(tf),
        )
        .map_err(|e| BuildError::Map(Dispatcher::Table, e))?;
        let adjust = |st: Status| {
            if self.dstore {
                st
            } else {
                st.without_beansdb()
            }
        };
        let default_status = adjust(Status::parse(&s.default_storage).unwrap_or(Status::Brw));
        let mut stores = HashMap::new();
        let driver = s
            .driver_config()
            .map_err(|e| BuildError::Prepare(CassandraError::Config(e.to_string())))?;
        let wanted = std::iter::once(s.default_table.as_str())
            .chain(table_map.iter().map(|(_, t)| t.as_str()));
        for t in wanted {
            if stores.contains_key(t) {
                continue;
            }
            let store = match old.and_then(|o| o.stores.get(t)) {
                Some(st) => st.clone(),
                None => {
                    CassandraStore::new(self.session.clone(), &StoreOptions::for_table(&driver, t))
                        .await
                        .map_err(BuildError::Prepare)?
                }
            };
            stores.insert(t.to_string(), store);
        }
        // merge() checked the prefixes (non-empty, unique), so these cannot fail.
        let invalid = |e: beansdb_cassandra::PrefixMapError| {
            BuildError::Prepare(CassandraError::Config(e.to_string()))
        };
        let rw_entries = rw_map
            .into_iter()
            .map(|(p, v)| (p, adjust(status_of(&v))))
            .collect();
        Ok(Dispatch {
            rw: PrefixMap::new(default_status, rw_entries).map_err(invalid)?,
            tables: PrefixMap::new(s.default_table.clone(), table_map).map_err(invalid)?,
            stores,
            beansdb: self.dstore,
        })
    }

    /// The `cassandra:` section of proxy.yaml as it is now on disk (the one in effect when
    /// the proxy runs on embedded defaults).
    fn read_section(&self) -> Result<CassandraSection, String> {
        let Some(dir) = &self.confdir else {
            return Ok(self.section.lock().clone());
        };
        let path = Config::proxy_yaml_path(dir);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut warnings = Vec::new();
        let mut cfg = Config::parse(&text, &path.display().to_string(), &mut warnings)
            .map_err(|e| e.to_string())?;
        cfg.validate(&mut warnings).map_err(|e| e.to_string())?;
        Ok(cfg.cassandra)
    }

    /// Checks what a reload may change (§4.4) and logs keys that need a restart.
    fn check_reloadable(&self, new: &CassandraSection) -> Result<(), CfgError> {
        let cur = self.section.lock().clone();
        for (which, old_d, new_d) in [
            (
                "rw",
                &cur.prefix_rw_dispatcher_cfg,
                &new.prefix_rw_dispatcher_cfg,
            ),
            (
                "table",
                &cur.prefix_table_dispatcher_cfg,
                &new.prefix_table_dispatcher_cfg,
            ),
        ] {
            if old_d.enable && !new_d.enable {
                return Err(CfgError::bad(format!(
                    "you can't disable {which} dispatcher online"
                )));
            }
        }
        // Everything but the dispatcher maps and defaults needs a restart.
        let mut a = cur.clone();
        let mut b = new.clone();
        for c in [&mut a, &mut b] {
            c.default_storage.clear();
            c.default_table.clear();
            c.prefix_rw_dispatcher_cfg = DispatcherSection::default();
            c.prefix_table_dispatcher_cfg = DispatcherSection::default();
        }
        if a != b {
            let (ja, jb) = (
                serde_json::to_value(&a).unwrap_or(Value::Null),
                serde_json::to_value(&b).unwrap_or(Value::Null),
            );
            if let (Value::Object(ma), Value::Object(mb)) = (ja, jb) {
                for (k, v) in &mb {
                    if ma.get(k) != Some(v) {
                        warn!("cassandra.{k} changed in proxy.yaml; restart required");
                    }
                }
            }
        }
        Ok(())
    }

    /// A reload (§4.4): proxy.yaml + config tables → validate → prepare → swap.
    pub async fn reload(&self, switch: &SwitchHandle, trigger: Trigger) -> Result<(), CfgError> {
        let _api = self.api.lock().await;
        let r = self.reload_locked(switch, trigger).await;
        reload_metric(None, trigger, r.is_ok());
        if let Err(e) = &r {
            warn!(
                "cassandra: reload ({}) failed: {}",
                trigger.label(),
                e.message
            );
        }
        r
    }

    async fn reload_locked(&self, switch: &SwitchHandle, trigger: Trigger) -> Result<(), CfgError> {
        let section = self
            .read_section()
            .map_err(|e| CfgError::upstream(format!("load static cfg err: {e}")))?;
        self.check_reloadable(&section)?;
        let rw_rows = self
            .rows(&section.prefix_rw_dispatcher_cfg)
            .await
            .map_err(|e| CfgError::upstream(format!("load cfg from db err: {e}")))?;
        let table_rows = self
            .rows(&section.prefix_table_dispatcher_cfg)
            .await
            .map_err(|e| CfgError::upstream(format!("load cfg from db err: {e}")))?;
        let old = switch.snapshot();
        let next = self
            .build(&section, &rw_rows, &table_rows, Some(&old))
            .await
            .map_err(BuildError::into_cfg_error)?;
        self.install(switch, &old, next, section, trigger);
        Ok(())
    }

    fn install(
        &self,
        switch: &SwitchHandle,
        old: &Dispatch,
        next: Dispatch,
        section: CassandraSection,
        trigger: Trigger,
    ) {
        // Prefixes of either map whose status moves from a beansdb-less one to a
        // beansdb-reading one: writes made meanwhile are not in beansdb (§5.6).
        let prefixes: std::collections::BTreeSet<&[u8]> = old
            .rw
            .iter()
            .chain(next.rw.iter())
            .map(|(p, _)| p)
            .collect();
        for p in prefixes {
            let (before, after) = (old.status(p), next.status(p));
            if !before.beansdb_write() && after.beansdb_read() {
                warn!(
                    "prefix {:?} moves from {} to {}: writes made in {} are not in beansdb",
                    show_prefix(p),
                    before.as_str(),
                    after.as_str(),
                    before.as_str()
                );
            }
        }
        info!(
            "cassandra: dispatchers reloaded ({}): {}",
            trigger.label(),
            describe(&next)
        );
        publish_gauges(&next);
        *self.section.lock() = section;
        switch.replace(next);
    }

    /// `PUT /cstar-cfg` (§6): validate the candidate completely, then upsert, then swap.
    pub async fn put(
        &self,
        switch: &SwitchHandle,
        which: Dispatcher,
        body: &[u8],
    ) -> Result<(), CfgError> {
        const HINT: &str =
            "doesn't match {\"prefix\": {\"<dispatch_to>\": [\"prefix1\", \"prefix2\"]}}";
        let req: HashMap<String, BTreeMap<String, Vec<String>>> =
            serde_json::from_slice::<HashMap<String, BTreeMap<String, Vec<String>>>>(body)
                .ok()
                .filter(|m| m.len() == 1 && m.contains_key("prefix"))
                .ok_or_else(|| CfgError::bad(format!("parse req err: {HINT}")))?;
        let change: Vec<(Vec<u8>, String)> = req
            .get("prefix")
            .into_iter()
            .flat_map(|m| m.iter())
            .flat_map(|(v, ps)| ps.iter().map(move |p| (p.as_bytes().to_vec(), v.clone())))
            .collect();
        for (p, v) in &change {
            if !which.value_ok(v) {
                return Err(CfgError::bad(match which {
                    Dispatcher::Rw => format!("{v} is not a validate rwstatus"),
                    Dispatcher::Table => format!("bad table name {v:?}"),
                }));
            }
            if p.is_empty() {
                return Err(CfgError::bad("empty prefix is not allowed"));
            }
        }
        let touched: Vec<Vec<u8>> = change.iter().map(|(p, _)| p.clone()).collect();
        self.edit(switch, which, Trigger::Put, &touched, |rows, ct| {
            let ct = ct.clone();
            let change = change.clone();
            for (p, v) in &change {
                rows.retain(|(q, _)| q != p);
                rows.push((p.clone(), v.clone()));
            }
            Box::pin(async move {
                for (p, v) in &change {
                    ct.upsert(p, v).await.map_err(|e| {
                        CfgError::upstream(format!("upsert data {} err: {e}", show_prefix(p)))
                    })?;
                }
                Ok(())
            })
        })
        .await
    }

    /// `DELETE /cstar-cfg` (§6).
    pub async fn delete(
        &self,
        switch: &SwitchHandle,
        which: Dispatcher,
        body: &[u8],
    ) -> Result<(), CfgError> {
        const HINT: &str = "req data should like: {\"prefix\": <your data>}";
        let req: HashMap<String, String> = serde_json::from_slice::<HashMap<String, String>>(body)
            .ok()
            .filter(|m| m.len() == 1 && m.contains_key("prefix"))
            .ok_or_else(|| CfgError::bad(format!("parse req err: {HINT}")))?;
        let prefix = req
            .get("prefix")
            .map(|p| p.as_bytes().to_vec())
            .unwrap_or_default();
        if prefix.is_empty() {
            return Err(CfgError::bad("empty prefix is not allowed"));
        }
        self.edit(
            switch,
            which,
            Trigger::Delete,
            std::slice::from_ref(&prefix),
            |rows, ct| {
                rows.retain(|(q, _)| *q != prefix);
                let ct = ct.clone();
                let prefix = prefix.clone();
                Box::pin(async move {
                    ct.remove(&prefix).await.map_err(|e| {
                        CfgError::upstream(format!("delete data {} err: {e}", show_prefix(&prefix)))
                    })
                })
            },
        )
        .await
    }

    /// The common part of PUT and DELETE: current rows → `change` → validate and prepare the
    /// candidate → `commit` the rows to C* → swap.
    async fn edit<F>(
        &self,
        switch: &SwitchHandle,
        which: Dispatcher,
        trigger: Trigger,
        touched: &[Vec<u8>],
        change: F,
    ) -> Result<(), CfgError>
    where
        F: FnOnce(
            &mut Vec<(Vec<u8>, String)>,
            &ConfigTable,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), CfgError>> + Send>,
        >,
    {
        let _api = self.api.lock().await;
        let r = async {
            let section = self
                .read_section()
                .map_err(|e| CfgError::upstream(format!("load static cfg err: {e}")))?;
            self.check_reloadable(&section)?;
            let d = match which {
                Dispatcher::Rw => &section.prefix_rw_dispatcher_cfg,
                Dispatcher::Table => &section.prefix_table_dispatcher_cfg,
            };
            if !d.enable {
                return Err(CfgError::bad("dispatcher is disabled"));
            }
            let Some((ks, t)) = d.cfg_table() else {
                return Err(CfgError::bad(
                    "no cfg_table configured; edit proxy.yaml and POST",
                ));
            };
            let ct = self
                .cfg_table(ks, t)
                .await
                .map_err(|e| CfgError::upstream(format!("load cfg from db err: {e}")))?;
            let mut rows = ct
                .load()
                .await
                .map_err(|e| CfgError::upstream(format!("load cfg from db err: {e}")))?;
            for p in touched {
                if dispatch_rules::in_static(d.static_pairs(), p) {
                    return Err(CfgError::bad(format!(
                        "prefix {:?} is defined in proxy.yaml; change it there and POST",
                        show_prefix(p)
                    )));
                }
            }
            let commit = change(&mut rows, &ct);
            let other = match which {
                Dispatcher::Rw => &section.prefix_table_dispatcher_cfg,
                Dispatcher::Table => &section.prefix_rw_dispatcher_cfg,
            };
            let other_rows = self
                .rows(other)
                .await
                .map_err(|e| CfgError::upstream(format!("load cfg from db err: {e}")))?;
            let (rw_rows, table_rows) = match which {
                Dispatcher::Rw => (&rows, &other_rows),
                Dispatcher::Table => (&other_rows, &rows),
            };
            let old = switch.snapshot();
            let next = match self.build(&section, rw_rows, table_rows, Some(&old)).await {
                Ok(n) => n,
                Err(BuildError::Map(_, e)) => return Err(CfgError::bad(api_message(which, &e))),
                Err(e) => return Err(e.into_cfg_error()),
            };
            commit.await?;
            self.install(switch, &old, next, section, trigger);
            Ok(())
        }
        .await;
        reload_metric(Some(which), trigger, r.is_ok());
        r
    }

    /// `GET /cstar-cfg` (§6).
    pub fn view(d: &Dispatch, which: Dispatcher) -> Value {
        let (cfg, default): (serde_json::Map<String, Value>, &str) = match which {
            Dispatcher::Rw => (
                d.rw.iter()
                    .map(|(p, s)| (show_prefix(p), Value::String(s.as_str().into())))
                    .collect(),
                d.rw.default_value().as_str(),
            ),
            Dispatcher::Table => (
                d.tables
                    .iter()
                    .map(|(p, t)| (show_prefix(p), Value::String(t.clone())))
                    .collect(),
                d.tables.default_value().as_str(),
            ),
        };
        json!({"cfg": cfg, "default": default, "message": "success", "error": ""})
    }

    /// The smallest non-zero `refresh_interval_sec` of the two dispatchers.
    pub fn refresh_interval(&self) -> Option<Duration> {
        let s = self.section.lock();
        [&s.prefix_rw_dispatcher_cfg, &s.prefix_table_dispatcher_cfg]
            .iter()
            .filter(|d| d.enable && d.refresh_interval_sec > 0)
            .map(|d| Duration::from_secs(d.refresh_interval_sec as u64))
            .min()
    }

    // ---- data statements ------------------------------------------------------------------

    /// One SELECT, cut at `deadline`.
    pub async fn read(
        &self,
        store: &CassandraStore,
        key: &[u8],
        deadline: Instant,
    ) -> Result<Option<BdbValue>, CassandraError> {
        timed(Op::Select, deadline, self.select_timeout, store.get(key)).await
    }

    /// One SELECT per key, at most `max_conn_for_getm` in flight, cut at `deadline`; any
    /// failure fails the whole call (§5.4).
    pub async fn read_many(
        &self,
        store: &CassandraStore,
        keys: &[bytes::Bytes],
        deadline: Instant,
    ) -> Result<Vec<Option<BdbValue>>, CassandraError> {
        use futures::stream::{self, StreamExt, TryStreamExt};
        // Owned keys in each future: a borrowing closure here makes the request future
        // not `Send` (higher-ranked lifetime of the closure argument).
        let reads = keys.iter().cloned().map(|k| {
            let store = store.clone();
            async move { store.get(&k).await }
        });
        let all = stream::iter(reads)
            .buffered(self.max_conn_for_getm)
            .try_collect();
        timed(Op::Select, deadline, self.select_timeout, all).await
    }

    /// INSERT of a live write (`USING TIMESTAMP ts_us`, `rtime` = ts in ms).
    pub async fn write(
        &self,
        store: &CassandraStore,
        w: LiveWrite<'_>,
        ts_us: i64,
        deadline: Instant,
    ) -> Result<(), CassandraError> {
        let fut = store.set_cas(w.key, w.flag, w.exptime, w.cas, w.body, ts_us);
        timed(Op::Insert, deadline, self.write_timeout, fut).await
    }

    /// DELETE `USING TIMESTAMP ts_us`.
    pub async fn remove(
        &self,
        store: &CassandraStore,
        key: &[u8],
        ts_us: i64,
        deadline: Instant,
    ) -> Result<(), CassandraError> {
        timed(
            Op::Delete,
            deadline,
            self.write_timeout,
            store.delete(key, ts_us),
        )
        .await
    }

    /// The deadline of the C* half of a dual write.
    pub fn dual_deadline(deadline: Instant) -> Instant {
        deadline.checked_sub(DUAL_WRITE_MARGIN).unwrap_or(deadline)
    }

    /// Records a failed C* half of a dual write: log line, metrics, WARN (§5.6, §7.1).
    pub fn dual_write_failed(
        &self,
        op: DualOp,
        key: &[u8],
        status: Status,
        ts_us: i64,
        err: &CassandraError,
    ) {
        let (cmd, op_label) = match op {
            DualOp::Set => ("set", "set"),
            DualOp::Del => ("del", "del"),
        };
        counter!("gobeansproxy_error_reqs", "cmd" => cmd, "store" => "bcdual").increment(1);
        counter!("beansproxy_dual_write_errors_total", "op" => op_label, "status" => status.as_str())
            .increment(1);
        let message = err.to_string();
        warn!(
            "dual write: cassandra {op_label} failed key={} status={} ts_us={ts_us}: {message}",
            crate::logging::escape(key),
            status.as_str()
        );
        let entry = DualWriteEntry {
            op,
            key,
            status: status.as_str(),
            ts_us,
            error: &message,
            proxy: &self.me,
        };
        let Some(log) = &self.dual_log else {
            return;
        };
        if let Err(e) = log.write(&entry) {
            counter!("beansproxy_dual_write_log_failures_total").increment(1);
            error!(
                "dual-write error log {}: {e}; lost line: {}",
                log.path().display(),
                crate::dualwrite_log::format_line(&entry, chrono::Local::now()).trim_end()
            );
        }
    }

    /// SIGUSR1: reopen the dual-write log.
    pub fn reopen_logs(&self) {
        if let Some(log) = &self.dual_log {
            if let Err(e) = log.reopen() {
                warn!("reopening the dual-write error log failed: {e}");
            }
        }
    }
}

/// What a client's set writes.
pub struct LiveWrite<'a> {
    pub key: &'a [u8],
    pub flag: u32,
    pub exptime: i32,
    /// Low 32 bits of a `cas` command's unique value, else 0.
    pub cas: u32,
    pub body: &'a [u8],
}

/// A C* reply line: `SERVER_ERROR cstar: <one line, ≤ 200 chars>`.
pub fn error_reply(e: &CassandraError) -> String {
    let msg = beansdb_cassandra::error::one_line(&e.to_string());
    let cut: String = msg.chars().take(REPLY_ERROR_MAX).collect();
    format!("SERVER_ERROR cstar: {cut}\r\n")
}

/// Runs a statement under `deadline` with the request metrics of §5.6.
async fn timed<T>(
    op: Op,
    deadline: Instant,
    stmt_timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, CassandraError>>,
) -> Result<T, CassandraError> {
    let start = Instant::now();
    let r = match tokio::time::timeout_at(deadline.into(), fut).await {
        Ok(r) => r,
        Err(_) => Err(CassandraError::Request {
            op,
            kind: ErrorKind::Timeout,
            message: format!(
                "timeout: no response in {}ms",
                deadline
                    .saturating_duration_since(start)
                    .min(stmt_timeout)
                    .as_millis()
            ),
        }),
    };
    let result = match &r {
        Ok(_) => "ok",
        Err(e) => e.kind().as_label(),
    };
    counter!("beansproxy_cstar_requests_total", "op" => op.as_label(), "result" => result)
        .increment(1);
    histogram!("beansproxy_cstar_duration_seconds", "op" => op.as_label())
        .record(start.elapsed().as_secs_f64());
    r
}

/// `which`: the dispatcher a PUT/DELETE changed; `None` = both (POST, refresh).
fn reload_metric(which: Option<Dispatcher>, trigger: Trigger, ok: bool) {
    let all = [Dispatcher::Rw, Dispatcher::Table];
    let ds = match &which {
        Some(d) => std::slice::from_ref(d),
        None => &all[..],
    };
    for d in ds {
        counter!(
            "beansproxy_switcher_reloads_total",
            "dispatcher" => d.label(),
            "trigger" => trigger.label(),
            "result" => if ok { "ok" } else { "error" }
        )
        .increment(1);
    }
}

fn publish_gauges(d: &Dispatch) {
    let mut rw: BTreeMap<&str, usize> = Status::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for (_, s) in d.rw.iter() {
        *rw.entry(s.as_str()).or_default() += 1;
    }
    for (v, n) in rw {
        gauge!("beansproxy_switcher_prefixes", "dispatcher" => "rwswitcher", "value" => v)
            .set(n as f64);
    }
    let mut tables: BTreeMap<String, usize> = BTreeMap::new();
    for (_, t) in d.tables.iter() {
        *tables.entry(t.clone()).or_default() += 1;
    }
    for (v, n) in tables {
        gauge!("beansproxy_switcher_prefixes", "dispatcher" => "tablefinder", "value" => v)
            .set(n as f64);
    }
}

/// The full map for the INFO line of a reload.
fn describe(d: &Dispatch) -> String {
    let rw: Vec<String> =
        d.rw.iter()
            .map(|(p, s)| format!("{:?}={}", show_prefix(p), s.as_str()))
            .collect();
    let tables: Vec<String> = d
        .tables
        .iter()
        .map(|(p, t)| format!("{:?}={t}", show_prefix(p)))
        .collect();
    format!(
        "rwswitcher {{{}}} default {}; tablefinder {{{}}} default {}",
        rw.join(", "),
        d.rw.default_value().as_str(),
        tables.join(", "),
        d.tables.default_value()
    )
}

/// The `/cstar-cfg` wording of a candidate-map error (§6).
fn api_message(which: Dispatcher, e: &MapError) -> String {
    match e {
        MapError::EmptyPrefix => "empty prefix is not allowed".into(),
        MapError::BadValue { value, .. } => match which {
            Dispatcher::Rw => format!("{value} is not a validate rwstatus"),
            Dispatcher::Table => format!("bad table name {value:?}"),
        },
        MapError::Twice { prefix, .. } => format!(
            "prefix {:?} is defined in proxy.yaml; change it there and POST",
            show_prefix(prefix)
        ),
    }
}
