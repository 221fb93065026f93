//! The Cassandra side of the tools: the common options (cassandra.md §9.1), the resolved
//! `cassandra:` config, the session, the dispatchers and one prepared store per table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use beansdb_cassandra::scylla::client::session::Session;
use beansdb_cassandra::{
    config::valid_name, connect, CassandraConfig, CassandraError, CassandraStore, Dispatchers,
    ErrorKind, PrefixMap, Secret, Status, StoreOptions,
};
use clap::Args;
use serde::Deserialize;

use crate::cli::GlobalOpts;
use crate::error::{CliError, CliResult};

/// Keyspace without `--keyspace` or `--proxy-config`.
pub const DEFAULT_KEYSPACE: &str = "doubandb";
/// Table without `--proxy-config`.
pub const DEFAULT_TABLE: &str = "kvstore";

/// Options shared by backfill, verify and replay-errors. Never a password in argv.
#[derive(Debug, Clone, Args)]
pub struct CstarArgs {
    /// Cassandra contact points (overrides cassandra.hosts of --proxy-config)
    #[arg(long, value_name = "HOST:PORT[,..]", value_delimiter = ',')]
    pub cassandra: Vec<String>,
    /// proxy.yaml whose cassandra: section gives the keyspace, tables, dispatchers (status
    /// filter), consistency, timeouts and credentials
    #[arg(long, value_name = "FILE")]
    pub proxy_config: Option<PathBuf>,
    /// Keyspace of the data tables (default: the proxy config's, else doubandb)
    #[arg(long, value_name = "K")]
    pub keyspace: Option<String>,
    /// Cassandra user (password authentication; needs a password file)
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,
    /// File holding the Cassandra password (one trailing newline is stripped)
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// The proxy.yaml shape; only the `cassandra:` section is read.
#[derive(Deserialize)]
struct ProxyYaml {
    #[serde(default)]
    cassandra: Option<CassandraConfig>,
}

/// The resolved config and whether the dispatchers come from it.
pub struct Resolved {
    pub cfg: CassandraConfig,
    /// `--proxy-config` was given: statuses filter keys and tables come from the dispatchers.
    pub from_proxy_config: bool,
}

impl Resolved {
    /// The maps when no proxy supplies them: the proxy config's, else none.
    pub fn own_maps(&self) -> MapSource {
        if self.from_proxy_config {
            MapSource::Config
        } else {
            MapSource::None
        }
    }
}

/// `--proxy-config` plus the overriding flags → the config to connect with. Exit 2 on any
/// problem; nothing here ever formats the password.
pub fn resolve(a: &CstarArgs, g: &GlobalOpts) -> CliResult<Resolved> {
    let (mut cfg, from_proxy_config) = match &a.proxy_config {
        Some(path) => (read_proxy_config(path)?, true),
        None => (
            CassandraConfig {
                enable: true,
                default_key_space: DEFAULT_KEYSPACE.into(),
                default_table: DEFAULT_TABLE.into(),
                // Tools are not latency-bound: the global per-request timeout applies.
                timeout_ms: duration_ms(g.timeout),
                write_timeout_ms: duration_ms(g.timeout),
                connect_timeout_ms: duration_ms(g.connect_timeout.max(Duration::from_secs(3))),
                num_conns: 2,
                ..CassandraConfig::default()
            },
            false,
        ),
    };
    if !a.cassandra.is_empty() {
        cfg.hosts = a.cassandra.clone();
    }
    if let Some(k) = &a.keyspace {
        cfg.default_key_space = k.clone();
    }
    if let Some(u) = &a.username {
        cfg.username = u.clone();
    }
    if let Some(p) = &a.password_file {
        cfg.password_file = p.display().to_string();
        cfg.password = Secret::default();
    }
    if cfg.hosts.is_empty() {
        return Err(CliError::usage(
            "--cassandra HOST:PORT is required (or cassandra.hosts in --proxy-config)",
        ));
    }
    let cfg_err = |e: CassandraError| CliError::usage(e.to_string());
    cfg.contact_points().map_err(cfg_err)?;
    cfg.consistency().map_err(cfg_err)?;
    for (what, name) in [
        ("keyspace", &cfg.default_key_space),
        ("default table", &cfg.default_table),
    ] {
        if !valid_name(name) {
            return Err(CliError::usage(format!(
                "bad {what} name {name:?} (letters, digits, _; max 48)"
            )));
        }
    }
    if cfg.num_conns == 0 || cfg.timeout_ms == 0 || cfg.write_timeout_ms == 0 {
        return Err(CliError::usage(
            "config: cassandra.num_conns and the timeouts must be > 0",
        ));
    }
    match cfg.credentials().map_err(cfg_err)? {
        Some(c) if c.password.is_empty() => {
            return Err(CliError::usage(format!(
                "user {:?} has no password; pass --password-file FILE",
                c.username
            )));
        }
        _ => {}
    }
    Ok(Resolved {
        cfg,
        from_proxy_config,
    })
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn read_proxy_config(path: &Path) -> CliResult<CassandraConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::usage(format!("cannot read proxy config {}: {e}", path.display()))
    })?;
    let doc: ProxyYaml = serde_norway::from_str(&text).map_err(|e| {
        CliError::usage(format!("cannot parse proxy config {}: {e}", path.display()))
    })?;
    doc.cassandra.ok_or_else(|| {
        CliError::usage(format!(
            "proxy config {} has no cassandra: section",
            path.display()
        ))
    })
}

/// Maps a Cassandra failure at startup to an exit code: unreachable → 3, anything about the
/// configuration (bad credentials, missing table, bad rows) → 2.
pub fn startup_error(e: CassandraError) -> CliError {
    match &e {
        CassandraError::Connect {
            kind: ErrorKind::Auth,
            ..
        } => CliError::usage(e.to_string()).with_hint("check --username and --password-file"),
        CassandraError::Connect { .. } | CassandraError::Request { .. } => {
            CliError::runtime(anyhow::anyhow!("{e}"))
                .with_hint("check --cassandra and that Cassandra is running")
        }
        CassandraError::Config(_)
        | CassandraError::Prepare { .. }
        | CassandraError::Decode { .. } => CliError::usage(e.to_string()),
    }
}

/// Connected Cassandra with the dispatchers and a prepared store per table.
pub struct CstarTarget {
    pub session: Arc<Session>,
    pub keyspace: String,
    pub dispatchers: Dispatchers,
    /// Only keys whose status is brw_cw or bw_crw are acted on.
    pub status_filter: bool,
    stores: HashMap<String, CassandraStore>,
}

/// Where the dispatcher maps come from.
pub enum MapSource {
    /// No filter; every key in `kvstore` (or the resolved default table).
    None,
    /// The config's static maps and config tables.
    Config,
    /// Maps fetched from a proxy's `/cstar-cfg` (replay-errors `--proxy`).
    Fixed(Dispatchers),
}

impl CstarTarget {
    /// Connects, loads the dispatchers and prepares every table they can name.
    pub async fn open(r: &Resolved, maps: MapSource) -> CliResult<CstarTarget> {
        let session = Arc::new(connect(&r.cfg).await.map_err(startup_error)?);
        let (dispatchers, status_filter) = match maps {
            MapSource::None => (
                Dispatchers::fixed(Status::BrwCw, &r.cfg.default_table),
                false,
            ),
            MapSource::Fixed(d) => (d, true),
            MapSource::Config if !r.cfg.enable => {
                // The proxy treats every key as brw then (cassandra.md §4.2 rule 1).
                tracing::warn!(
                    "cassandra.enable is false in the proxy config: every key is beansdb-only \
                     and is skipped"
                );
                (
                    Dispatchers {
                        rw: PrefixMap::with_default(Status::Brw),
                        tables: PrefixMap::with_default(r.cfg.default_table.clone()),
                    },
                    true,
                )
            }
            MapSource::Config => (
                Dispatchers::load(&r.cfg, Some(&session))
                    .await
                    .map_err(startup_error)?,
                true,
            ),
        };
        let mut stores = HashMap::new();
        for table in dispatchers.all_tables() {
            let store =
                CassandraStore::new(session.clone(), &StoreOptions::for_table(&r.cfg, &table))
                    .await
                    .map_err(startup_error)?;
            stores.insert(table, store);
        }
        Ok(CstarTarget {
            session,
            keyspace: r.cfg.default_key_space.clone(),
            dispatchers,
            status_filter,
            stores,
        })
    }

    /// The key's status as the proxy would see it.
    pub fn status(&self, key: &[u8]) -> Status {
        *self.dispatchers.rw.get(key)
    }

    /// Whether the key passes the status filter (always, without one).
    pub fn status_ok(&self, key: &[u8]) -> bool {
        !self.status_filter || self.status(key).dual_write()
    }

    /// The store of the key's table.
    pub fn store_for(&self, key: &[u8]) -> Result<&CassandraStore, String> {
        let table = self.dispatchers.tables.get(key);
        self.stores
            .get(table)
            .ok_or_else(|| format!("table {table} was not prepared"))
    }
}

/// Dispatchers from a proxy's `GET /cstar-cfg?config=rwswitcher|tablefinder` answers
/// (`{"cfg":{prefix: value}, "default": value, …}`).
pub fn dispatchers_from_cstar_cfg(rw: &str, tables: &str) -> Result<Dispatchers, String> {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(default)]
        cfg: std::collections::BTreeMap<String, String>,
        #[serde(default)]
        default: String,
    }
    let parse = |what: &str, body: &str| {
        serde_json::from_str::<Answer>(body)
            .map_err(|e| format!("/cstar-cfg?config={what}: bad JSON: {e}"))
    };
    let rw = parse("rwswitcher", rw)?;
    let tb = parse("tablefinder", tables)?;
    let default = Status::parse(&rw.default).ok_or_else(|| {
        format!(
            "/cstar-cfg?config=rwswitcher: unknown default status {:?}",
            rw.default
        )
    })?;
    let mut rw_entries = Vec::new();
    for (p, v) in rw.cfg {
        let s = Status::parse(&v)
            .ok_or_else(|| format!("/cstar-cfg: unknown status {v:?} for prefix {p:?}"))?;
        rw_entries.push((p.into_bytes(), s));
    }
    if !valid_name(&tb.default) {
        return Err(format!(
            "/cstar-cfg?config=tablefinder: bad default table {:?}",
            tb.default
        ));
    }
    let mut table_entries = Vec::new();
    for (p, t) in tb.cfg {
        if !valid_name(&t) {
            return Err(format!("/cstar-cfg: bad table name {t:?} for prefix {p:?}"));
        }
        table_entries.push((p.into_bytes(), t));
    }
    Ok(Dispatchers {
        rw: PrefixMap::new(default, rw_entries).map_err(|e| format!("/cstar-cfg: {e}"))?,
        tables: PrefixMap::new(tb.default, table_entries)
            .map_err(|e| format!("/cstar-cfg: {e}"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cstar_cfg_answers() {
        let d = dispatchers_from_cstar_cfg(
            r#"{"cfg":{"/a/":"br1w1cr0w1"},"default":"br1w1cr0w0","message":"success","error":""}"#,
            r#"{"cfg":{"/ark":"kvstore_ark"},"default":"kvstore","message":"success"}"#,
        )
        .expect("valid");
        assert_eq!(*d.rw.get(b"/a/1"), Status::BrwCw);
        assert_eq!(*d.rw.get(b"/b"), Status::Brw);
        assert_eq!(d.tables.get(b"/ark/1"), "kvstore_ark");
        assert!(dispatchers_from_cstar_cfg(r#"{"cfg":{},"default":"x"}"#, "{}").is_err());
    }
}
