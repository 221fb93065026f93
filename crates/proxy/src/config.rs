//! `proxy.yaml` (proxy.md §6): embedded defaults, loading with warnings for unknown keys,
//! validation with the spec's messages, `-dumpconf` YAML and the `/config/` JSON.
//!
//! Numbers are kept as `i64` while parsing so that a negative or oversized value reaches the
//! validator and gets its precise message instead of a generic type error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use beansdb_cassandra::config::{valid_name, DispatcherCfg, DualWriteErrCfg, ShadowReadCfg};
use beansdb_cassandra::dispatch::{self as dispatch_rules, Dispatcher};
use beansdb_cassandra::{CassandraConfig, Secret};
use beansdb_route::{Route, RouteError};
use serde::Serialize;

use crate::switch::Status;
use serde_norway::Value;

/// Configuration errors. Each one is printed as is and the process exits 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config: {path}: invalid YAML{at}: {detail}")]
    Yaml {
        path: String,
        at: String,
        detail: String,
    },
    #[error("config: {key}: expected {expected}, got {got}")]
    Type {
        key: String,
        expected: &'static str,
        got: String,
    },
    #[error("config: {0}")]
    Invalid(String),
    #[error(transparent)]
    Route(#[from] RouteError),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// `proxy:` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProxySection {
    pub listen: String,
    pub port: i64,
    pub webport: i64,
    pub threads: i64,
    pub errorlog: String,
    pub accesslog: String,
    pub analysislog: String,
    pub hostname: String,
    pub staticdir: String,
    pub zkservers: Vec<String>,
    pub zkpath: String,
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            listen: "0.0.0.0".into(),
            port: 7905,
            webport: 7908,
            threads: 8,
            errorlog: "./proxy-error.log".into(),
            accesslog: "./proxy-access.log".into(),
            analysislog: String::new(),
            hostname: "127.0.0.1".into(),
            staticdir: "/var/lib/gobeansproxy".into(),
            zkservers: Vec::new(),
            zkpath: String::new(),
        }
    }
}

/// `mc:` section; the byte values of the `*_str` sizes are derived after loading.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct McSection {
    pub max_key_len: i64,
    pub max_req: i64,
    pub body_max_str: String,
    pub body_big_str: String,
    pub body_c_str: String,
    pub flush_max_str: String,
    pub timeout_ms: i64,
    #[serde(skip)]
    pub body_max: u64,
    #[serde(skip)]
    pub body_c: u64,
}

impl Default for McSection {
    fn default() -> Self {
        McSection {
            max_key_len: 250,
            max_req: 256,
            body_max_str: "50M".into(),
            body_big_str: "1M".into(),
            body_c_str: "4K".into(),
            flush_max_str: "100M".into(),
            timeout_ms: 3000,
            body_max: 50 << 20,
            body_c: 4 << 10,
        }
    }
}

/// `dstore:` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DstoreSection {
    pub enable: bool,
    pub n: i64,
    pub w: i64,
    pub r: i64,
    pub max_free_conns_per_host: i64,
    pub max_conns_per_host: i64,
    pub connect_timeout_ms: i64,
    pub write_timeout_ms: i64,
    pub read_timeout_ms: i64,
    pub dial_fail_silence_ms: i64,
    pub response_time_seconds: i64,
    pub error_seconds: i64,
    pub max_connect_errors: i64,
    pub score_deviation: i64,
    pub item_size_stats: i64,
    pub response_time_min: i64,
    pub probe_interval_ms: i64,
    pub probe_max_interval_ms: i64,
    pub scheduler: String,
}

impl Default for DstoreSection {
    fn default() -> Self {
        DstoreSection {
            enable: true,
            n: 3,
            w: 2,
            r: 1,
            max_free_conns_per_host: 20,
            max_conns_per_host: 512,
            connect_timeout_ms: 300,
            write_timeout_ms: 2000,
            read_timeout_ms: 2000,
            dial_fail_silence_ms: 5000,
            response_time_seconds: 10,
            error_seconds: 10,
            max_connect_errors: 10,
            score_deviation: 10000,
            item_size_stats: 4096,
            response_time_min: 4000,
            probe_interval_ms: 1000,
            probe_max_interval_ms: 30000,
            scheduler: String::new(),
        }
    }
}

/// One prefix dispatcher of the Cassandra section (accepted now, used by the C* backend later).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct DispatcherSection {
    pub enable: bool,
    /// `value → [prefix…]`, in file order.
    #[serde(rename = "static", serialize_with = "ser_pairs")]
    pub static_: Vec<(String, Vec<String>)>,
    pub cfg_table: String,
    pub cfg_keyspace: String,
    pub refresh_interval_sec: i64,
}

fn ser_pairs<S: serde::Serializer>(
    pairs: &[(String, Vec<String>)],
    ser: S,
) -> Result<S::Ok, S::Error> {
    ser.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DualWriteErrSection {
    pub dump_to_dir: String,
    pub log_file_name: String,
    pub logger_level: String,
    pub rotate_size_mb: i64,
    pub compress: bool,
    pub max_ages: i64,
    pub max_backups: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowReadSection {
    pub enable: bool,
    pub ratio: f64,
    pub prefixes: Vec<String>,
    pub max_inflight: i64,
    pub recheck_delay_ms: i64,
    pub mismatch_log: String,
}

/// `cassandra:` section (cassandra.md §3.1). Parsed and dumped; validated only when enabled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CassandraSection {
    pub enable: bool,
    pub hosts: Vec<String>,
    pub default_key_space: String,
    pub default_table: String,
    pub timeout_ms: i64,
    pub write_timeout_ms: i64,
    pub connect_timeout_ms: i64,
    pub retry_num: i64,
    pub reconnect_interval_sec: i64,
    pub num_conns: i64,
    pub max_conn_for_getm: i64,
    pub username: String,
    pub password: String,
    pub password_file: String,
    pub consistency: String,
    pub default_storage: String,
    pub prefix_rw_dispatcher_cfg: DispatcherSection,
    pub prefix_table_dispatcher_cfg: DispatcherSection,
    pub dual_write_err_cfg: DualWriteErrSection,
    pub shadow_read: ShadowReadSection,
}

/// Defaults come from the Cassandra crate's section (one place for gobeansproxy's values);
/// numbers are widened to `i64` so a bad value in proxy.yaml reaches the validator.
fn wide(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Default for DualWriteErrSection {
    fn default() -> Self {
        let d = CassandraConfig::default().dual_write_err_cfg;
        DualWriteErrSection {
            dump_to_dir: d.dump_to_dir,
            log_file_name: d.log_file_name,
            logger_level: d.logger_level,
            rotate_size_mb: wide(d.rotate_size_mb),
            compress: d.compress,
            max_ages: wide(d.max_ages),
            max_backups: wide(d.max_backups),
        }
    }
}

impl Default for ShadowReadSection {
    fn default() -> Self {
        let d = CassandraConfig::default().shadow_read;
        ShadowReadSection {
            enable: d.enable,
            ratio: d.ratio,
            prefixes: d.prefixes,
            max_inflight: wide(d.max_inflight as u64),
            recheck_delay_ms: wide(d.recheck_delay_ms),
            mismatch_log: d.mismatch_log,
        }
    }
}

impl Default for CassandraSection {
    fn default() -> Self {
        let d = CassandraConfig::default();
        CassandraSection {
            enable: d.enable,
            hosts: d.hosts,
            default_key_space: d.default_key_space,
            default_table: d.default_table,
            timeout_ms: wide(d.timeout_ms),
            write_timeout_ms: wide(d.write_timeout_ms),
            connect_timeout_ms: wide(d.connect_timeout_ms),
            retry_num: i64::from(d.retry_num),
            reconnect_interval_sec: wide(d.reconnect_interval_sec),
            num_conns: wide(d.num_conns as u64),
            max_conn_for_getm: wide(d.max_conn_for_getm as u64),
            username: d.username,
            password: String::new(),
            password_file: d.password_file,
            consistency: d.consistency,
            default_storage: d.default_storage,
            prefix_rw_dispatcher_cfg: DispatcherSection::default(),
            prefix_table_dispatcher_cfg: DispatcherSection::default(),
            dual_write_err_cfg: DualWriteErrSection::default(),
            shadow_read: ShadowReadSection::default(),
        }
    }
}

pub const REDACTED: &str = "<redacted>";

/// The effective configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub proxy: ProxySection,
    pub mc: McSection,
    pub dstore: DstoreSection,
    pub cassandra: CassandraSection,
    /// `-confdir`; `None` for the embedded defaults.
    pub confdir: Option<PathBuf>,
    /// The route (present when `dstore.enable`).
    pub route: Option<Route>,
}

impl Default for Config {
    fn default() -> Self {
        Config::embedded_defaults()
    }
}

#[derive(Serialize)]
struct Sections<'a> {
    proxy: &'a ProxySection,
    mc: &'a McSection,
    dstore: &'a DstoreSection,
    cassandra: &'a CassandraSection,
}

impl Config {
    /// Every default of §6, no route.
    pub fn embedded_defaults() -> Config {
        Config {
            proxy: ProxySection::default(),
            mc: McSection::default(),
            dstore: DstoreSection::default(),
            cassandra: CassandraSection::default(),
            confdir: None,
            route: None,
        }
    }

    pub fn proxy_yaml_path(dir: &Path) -> PathBuf {
        dir.join("proxy.yaml")
    }

    pub fn route_path(&self) -> Option<PathBuf> {
        self.confdir.as_ref().map(|d| d.join("route.yaml"))
    }

    /// Loads `DIR/proxy.yaml` over the defaults, then `DIR/route.yaml` when dstore is
    /// enabled, and validates everything. Returns the warnings to log.
    pub fn load(dir: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let path = Config::proxy_yaml_path(dir);
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut warnings = Vec::new();
        let mut cfg = Config::parse(&text, &shown, &mut warnings)?;
        cfg.confdir = Some(dir.to_path_buf());
        cfg.validate(&mut warnings)?;
        if cfg.dstore.enable {
            let (route, route_warnings) = Route::load_with_warnings(&dir.join("route.yaml"))?;
            warnings.extend(route_warnings);
            // validate() checked n ≥ 1.
            warnings.extend(route.validate_for_proxy(cfg.dstore.n as usize)?);
            cfg.route = Some(route);
        }
        Ok((cfg, warnings))
    }

    /// Parses proxy.yaml text over the defaults (no validation, no route).
    pub fn parse(
        text: &str,
        path: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Config, ConfigError> {
        let doc: Value = serde_norway::from_str(text).map_err(|e| yaml_error(path, e))?;
        let mut cfg = Config::embedded_defaults();
        let mut p = Parser { warnings };
        match doc {
            Value::Null => {}
            Value::Mapping(map) => {
                for (k, v) in &map {
                    let name = key_text(k);
                    match name.as_str() {
                        "proxy" => p.section(&name, v, |p, k, v| cfg.proxy.set(p, k, v))?,
                        "mc" => p.section(&name, v, |p, k, v| cfg.mc.set(p, k, v))?,
                        "dstore" => p.section(&name, v, |p, k, v| cfg.dstore.set(p, k, v))?,
                        "cassandra" => p.section(&name, v, |p, k, v| cfg.cassandra.set(p, k, v))?,
                        _ => p.unknown(&name),
                    }
                }
            }
            other => {
                return Err(ConfigError::Type {
                    key: "(top level)".into(),
                    expected: "a mapping",
                    got: describe(&other),
                })
            }
        }
        Ok(cfg)
    }

    /// §6.6 checks, in the order of the table.
    pub fn validate(&mut self, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
        if !self.dstore.enable && !self.cassandra.enable {
            return Err(invalid(
                "at least one of dstore.enable and cassandra.enable must be true",
            ));
        }
        if self.cassandra.enable {
            self.cassandra.validate(self.dstore.enable, warnings)?;
        }
        let d = &self.dstore;
        if d.n < 1 {
            return Err(invalid("dstore.n must be ≥ 1"));
        }
        for (name, v) in [("w", d.w), ("r", d.r)] {
            if v < 1 || v > d.n {
                return Err(invalid(format!(
                    "dstore.{name} must be between 1 and dstore.n ({}), got {v}",
                    d.n
                )));
            }
        }
        for (name, v) in [("port", self.proxy.port), ("webport", self.proxy.webport)] {
            if !(1..=65535).contains(&v) {
                return Err(invalid(format!("proxy.{name} must be 1-65535")));
            }
        }
        if self.proxy.port == self.proxy.webport {
            return Err(invalid("proxy.port and proxy.webport must differ"));
        }
        for (name, v) in [
            ("dstore.read_timeout_ms", d.read_timeout_ms),
            ("dstore.connect_timeout_ms", d.connect_timeout_ms),
            ("dstore.write_timeout_ms", d.write_timeout_ms),
            ("mc.timeout_ms", self.mc.timeout_ms),
            ("dstore.probe_interval_ms", d.probe_interval_ms),
            ("dstore.probe_max_interval_ms", d.probe_max_interval_ms),
        ] {
            if v <= 0 {
                return Err(invalid(format!("{name} must be > 0")));
            }
        }
        if self.mc.max_req < 1 {
            return Err(invalid("mc.max_req must be ≥ 1"));
        }
        if self.mc.max_key_len < 1 {
            return Err(invalid("mc.max_key_len must be ≥ 1"));
        }
        if d.max_connect_errors < 1 {
            return Err(invalid("dstore.max_connect_errors must be ≥ 1"));
        }
        for (name, v) in [
            ("dstore.max_free_conns_per_host", d.max_free_conns_per_host),
            ("dstore.dial_fail_silence_ms", d.dial_fail_silence_ms),
            ("dstore.response_time_seconds", d.response_time_seconds),
            ("dstore.error_seconds", d.error_seconds),
            ("dstore.score_deviation", d.score_deviation),
            ("dstore.item_size_stats", d.item_size_stats),
            ("dstore.response_time_min", d.response_time_min),
            ("proxy.threads", self.proxy.threads),
        ] {
            if v < 0 {
                return Err(invalid(format!("{name} must be ≥ 0")));
            }
        }
        if d.max_conns_per_host < d.max_free_conns_per_host || d.max_conns_per_host < 1 {
            return Err(invalid(
                "dstore.max_conns_per_host must be ≥ max_free_conns_per_host",
            ));
        }
        let mc = &mut self.mc;
        mc.body_max = size("mc.body_max_str", &mc.body_max_str)?;
        size("mc.body_big_str", &mc.body_big_str)?;
        mc.body_c = size("mc.body_c_str", &mc.body_c_str)?;
        size("mc.flush_max_str", &mc.flush_max_str)?;
        match d.scheduler.as_str() {
            "" | "buckets_manual" => {}
            "no_buckets_rro" => {
                return Err(invalid(
                    "dstore.scheduler: scheduler no_buckets_rro is not supported; list every \
                     bucket on every host and use n: 1",
                ))
            }
            other => {
                return Err(invalid(format!(
                    "dstore.scheduler: unknown scheduler \"{other}\" (expected \"\" or \"buckets_manual\")"
                )))
            }
        }
        if !self.proxy.zkservers.is_empty() {
            warnings.push(
                "config: proxy.zkservers is set but ZooKeeper is not supported; using the local \
                 route.yaml"
                    .into(),
            );
        }
        Ok(())
    }

    /// The four sections with the password redacted.
    fn redacted(&self) -> CassandraSection {
        let mut c = self.cassandra.clone();
        if !c.password.is_empty() {
            c.password = REDACTED.into();
        }
        c
    }

    /// `-dumpconf`: the effective proxy.yaml, every key, password redacted.
    pub fn dump_yaml(&self) -> String {
        let cassandra = self.redacted();
        serde_norway::to_string(&Sections {
            proxy: &self.proxy,
            mc: &self.mc,
            dstore: &self.dstore,
            cassandra: &cassandra,
        })
        // Plain structs of strings and numbers always serialize; stay printable if not.
        .unwrap_or_else(|e| format!("# cannot dump config: {e}\n"))
    }

    /// `/config/`: the YAML key names, password redacted, plus `confdir`.
    pub fn to_json(&self) -> serde_json::Value {
        let cassandra = self.redacted();
        let mut v = serde_json::to_value(Sections {
            proxy: &self.proxy,
            mc: &self.mc,
            dstore: &self.dstore,
            cassandra: &cassandra,
        })
        .unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(m) = &mut v {
            m.insert(
                "confdir".into(),
                serde_json::Value::String(
                    self.confdir
                        .as_ref()
                        .map(|d| d.display().to_string())
                        .unwrap_or_default(),
                ),
            );
        }
        v
    }

    // Typed accessors; validate() guarantees the ranges.

    pub fn timeout(&self) -> Duration {
        ms(self.mc.timeout_ms)
    }
    pub fn n(&self) -> usize {
        self.dstore.n.max(1) as usize
    }
    pub fn w(&self) -> usize {
        self.dstore.w.max(1) as usize
    }
    pub fn r(&self) -> usize {
        self.dstore.r.max(1) as usize
    }
    /// `hostname:port`, the proxy's identity in access-log targets.
    pub fn self_target(&self) -> String {
        format!("{}:{}", self.proxy.hostname, self.proxy.port)
    }
}

/// Milliseconds from a validated config value.
pub fn ms(v: i64) -> Duration {
    Duration::from_millis(v.max(0) as u64)
}

/// `<int>[K|M|G]`, case-insensitive suffix, 1024-based; empty is 0.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    if t.is_empty() {
        return Some(0);
    }
    let (digits, unit) = match t.as_bytes()[t.len() - 1] {
        b'K' | b'k' => (&t[..t.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&t[..t.len() - 1], 1 << 20),
        b'G' | b'g' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

fn size(key: &str, s: &str) -> Result<u64, ConfigError> {
    parse_size(s).ok_or_else(|| invalid(format!("{key}: bad size \"{s}\": expected <int>[K|M|G]")))
}

fn yaml_error(path: &str, err: serde_norway::Error) -> ConfigError {
    let mut detail = err.to_string();
    let at = match err.location() {
        Some(loc) => {
            let at = format!(" at line {} column {}", loc.line(), loc.column());
            detail = detail.replacen(&at, "", 1);
            at
        }
        None => String::new(),
    };
    ConfigError::Yaml {
        path: path.to_string(),
        at,
        detail,
    }
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => describe(other),
    }
}

fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => untag(&t.value),
        other => other,
    }
}

/// How a wrong value is shown: strings quoted, scalars as written, collections by kind.
fn describe(v: &Value) -> String {
    match untag(v) {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("\"{s}\""),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(_) => "a tagged value".into(),
    }
}

struct Parser<'a> {
    warnings: &'a mut Vec<String>,
}

impl Parser<'_> {
    fn unknown(&mut self, key: &str) {
        self.warnings.push(format!("config: unknown key {key}"));
    }

    /// Walks a mapping; `set` returns false for an unknown key. A null section is empty.
    fn section<F>(&mut self, prefix: &str, v: &Value, mut set: F) -> Result<(), ConfigError>
    where
        F: FnMut(&mut Self, &str, &Value) -> Result<bool, ConfigError>,
    {
        match untag(v) {
            Value::Null => Ok(()),
            Value::Mapping(map) => {
                for (k, val) in map {
                    let key = format!("{prefix}.{}", key_text(k));
                    // A null value keeps the default, like a missing key.
                    if matches!(untag(val), Value::Null) {
                        if !set(self, &key, &Value::Null)? {
                            self.unknown(&key);
                        }
                        continue;
                    }
                    if !set(self, &key, val)? {
                        self.unknown(&key);
                    }
                }
                Ok(())
            }
            other => Err(type_err(prefix, "a mapping", other)),
        }
    }

    fn int(&self, key: &str, v: &Value, cur: i64) -> Result<i64, ConfigError> {
        match untag(v) {
            Value::Null => Ok(cur),
            Value::Number(n) => n.as_i64().ok_or_else(|| type_err(key, "an integer", v)),
            other => Err(type_err(key, "an integer", other)),
        }
    }

    fn float(&self, key: &str, v: &Value, cur: f64) -> Result<f64, ConfigError> {
        match untag(v) {
            Value::Null => Ok(cur),
            Value::Number(n) => n
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| type_err(key, "a number", v)),
            other => Err(type_err(key, "a number", other)),
        }
    }

    /// YAML 1.1 spellings are accepted: gobeansproxy's files were read by yaml.v2.
    fn boolean(&self, key: &str, v: &Value, cur: bool) -> Result<bool, ConfigError> {
        match untag(v) {
            Value::Null => Ok(cur),
            Value::Bool(b) => Ok(*b),
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "y" | "on" => Ok(true),
                "false" | "no" | "n" | "off" => Ok(false),
                _ => Err(type_err(key, "a boolean", v)),
            },
            other => Err(type_err(key, "a boolean", other)),
        }
    }

    /// Any scalar is taken as its text.
    fn string(&self, key: &str, v: &Value, cur: &str) -> Result<String, ConfigError> {
        match untag(v) {
            Value::Null => Ok(cur.to_string()),
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            other => Err(type_err(key, "a string", other)),
        }
    }

    fn list(&self, key: &str, v: &Value) -> Result<Vec<String>, ConfigError> {
        match untag(v) {
            Value::Null => Ok(Vec::new()),
            Value::Sequence(items) => items.iter().map(|i| self.string(key, i, "")).collect(),
            other => Err(type_err(key, "a list", other)),
        }
    }
}

fn type_err(key: &str, expected: &'static str, v: &Value) -> ConfigError {
    ConfigError::Type {
        key: key.to_string(),
        expected,
        got: describe(v),
    }
}

/// Last component of a dotted key.
fn leaf(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

impl ProxySection {
    fn set(&mut self, p: &mut Parser<'_>, key: &str, v: &Value) -> Result<bool, ConfigError> {
        match leaf(key) {
            "listen" => self.listen = p.string(key, v, &self.listen)?,
            "port" => self.port = p.int(key, v, self.port)?,
            "webport" => self.webport = p.int(key, v, self.webport)?,
            "threads" => self.threads = p.int(key, v, self.threads)?,
            "errorlog" => self.errorlog = p.string(key, v, &self.errorlog)?,
            "accesslog" => self.accesslog = p.string(key, v, &self.accesslog)?,
            "analysislog" => self.analysislog = p.string(key, v, &self.analysislog)?,
            "hostname" => self.hostname = p.string(key, v, &self.hostname)?,
            "staticdir" => self.staticdir = p.string(key, v, &self.staticdir)?,
            "zkservers" => self.zkservers = p.list(key, v)?,
            "zkpath" => self.zkpath = p.string(key, v, &self.zkpath)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl McSection {
    fn set(&mut self, p: &mut Parser<'_>, key: &str, v: &Value) -> Result<bool, ConfigError> {
        match leaf(key) {
            "max_key_len" => self.max_key_len = p.int(key, v, self.max_key_len)?,
            "max_req" => self.max_req = p.int(key, v, self.max_req)?,
            "body_max_str" => self.body_max_str = p.string(key, v, &self.body_max_str)?,
            "body_big_str" => self.body_big_str = p.string(key, v, &self.body_big_str)?,
            "body_c_str" => self.body_c_str = p.string(key, v, &self.body_c_str)?,
            "flush_max_str" => self.flush_max_str = p.string(key, v, &self.flush_max_str)?,
            "timeout_ms" => self.timeout_ms = p.int(key, v, self.timeout_ms)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl DstoreSection {
    fn set(&mut self, p: &mut Parser<'_>, key: &str, v: &Value) -> Result<bool, ConfigError> {
        let d = self;
        match leaf(key) {
            "enable" => d.enable = p.boolean(key, v, d.enable)?,
            "n" => d.n = p.int(key, v, d.n)?,
            "w" => d.w = p.int(key, v, d.w)?,
            "r" => d.r = p.int(key, v, d.r)?,
            "max_free_conns_per_host" => {
                d.max_free_conns_per_host = p.int(key, v, d.max_free_conns_per_host)?
            }
            "max_conns_per_host" => d.max_conns_per_host = p.int(key, v, d.max_conns_per_host)?,
            "connect_timeout_ms" => d.connect_timeout_ms = p.int(key, v, d.connect_timeout_ms)?,
            "write_timeout_ms" => d.write_timeout_ms = p.int(key, v, d.write_timeout_ms)?,
            "read_timeout_ms" => d.read_timeout_ms = p.int(key, v, d.read_timeout_ms)?,
            "dial_fail_silence_ms" => {
                d.dial_fail_silence_ms = p.int(key, v, d.dial_fail_silence_ms)?
            }
            "response_time_seconds" => {
                d.response_time_seconds = p.int(key, v, d.response_time_seconds)?
            }
            "error_seconds" => d.error_seconds = p.int(key, v, d.error_seconds)?,
            "max_connect_errors" => d.max_connect_errors = p.int(key, v, d.max_connect_errors)?,
            "score_deviation" => d.score_deviation = p.int(key, v, d.score_deviation)?,
            "item_size_stats" => d.item_size_stats = p.int(key, v, d.item_size_stats)?,
            "response_time_min" => d.response_time_min = p.int(key, v, d.response_time_min)?,
            "probe_interval_ms" => d.probe_interval_ms = p.int(key, v, d.probe_interval_ms)?,
            "probe_max_interval_ms" => {
                d.probe_max_interval_ms = p.int(key, v, d.probe_max_interval_ms)?
            }
            "scheduler" => d.scheduler = p.string(key, v, &d.scheduler)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl DispatcherSection {
    fn set(&mut self, p: &mut Parser<'_>, key: &str, v: &Value) -> Result<bool, ConfigError> {
        match leaf(key) {
            "enable" => self.enable = p.boolean(key, v, self.enable)?,
            "static" => {
                self.static_.clear();
                match untag(v) {
                    Value::Null => {}
                    Value::Mapping(m) => {
                        for (k, list) in m {
                            let name = key_text(k);
                            let prefixes = p.list(&format!("{key}.{name}"), list)?;
                            self.static_.push((name, prefixes));
                        }
                    }
                    other => return Err(type_err(key, "a mapping", other)),
                }
            }
            "cfg_table" => self.cfg_table = p.string(key, v, &self.cfg_table)?,
            "cfg_keyspace" => self.cfg_keyspace = p.string(key, v, &self.cfg_keyspace)?,
            "refresh_interval_sec" => {
                self.refresh_interval_sec = p.int(key, v, self.refresh_interval_sec)?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl DualWriteErrSection {
    fn set(&mut self, p: &mut Parser<'_>, key: &str, v: &Value) -> Result<bool, ConfigError> {
        match leaf(key) {
            "dump_to_dir" => self.dump_to_dir = p.string(key, v, &self.dump_to_dir)?,
            "log_file_name" => self.log_file_name = p.string(key, v, &self.log_file_name)?,
            "logger_level" => self.logger_level = p.string(key, v, &self.logger_level)?,
            "rotate_size_mb" => self.rotate_size_mb = p.int(key, v, self.rotate_size_mb)?,
            "compress" => self.compress = p.boolean(key, v, self.compress)?,
            "max_ages" => self.max_ages = p.int(key, v, self.max_ages)?,
            "max_backups" => self.max_backups = p.int(key, v, self.max_backups)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl ShadowReadSection {
    fn set(&mut self, p: &mut Parser<'_>, key: &str, v: &Value) -> Result<bool, ConfigError> {
        match leaf(key) {
            "enable" => self.enable = p.boolean(key, v, self.enable)?,
            "ratio" => self.ratio = p.float(key, v, self.ratio)?,
            "prefixes" => self.prefixes = p.list(key, v)?,
            "max_inflight" => self.max_inflight = p.int(key, v, self.max_inflight)?,
            "recheck_delay_ms" => self.recheck_delay_ms = p.int(key, v, self.recheck_delay_ms)?,
            "mismatch_log" => self.mismatch_log = p.string(key, v, &self.mismatch_log)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// A §3.2 message of the Cassandra crate (which already starts with `config: `).
fn cstar_invalid(e: beansdb_cassandra::CassandraError) -> ConfigError {
    let msg = e.to_string();
    invalid(msg.strip_prefix("config: ").unwrap_or(&msg).to_string())
}

fn non_negative<T: TryFrom<i64>>(key: &str, v: i64) -> Result<T, ConfigError> {
    T::try_from(v).map_err(|_| invalid(format!("cassandra.{key} must be ≥ 0, got {v}")))
}

impl DispatcherSection {
    fn driver(&self, key: &str) -> Result<DispatcherCfg, ConfigError> {
        Ok(DispatcherCfg {
            enable: self.enable,
            static_: self.static_.iter().cloned().collect(),
            cfg_table: self.cfg_table.clone(),
            cfg_keyspace: self.cfg_keyspace.clone(),
            refresh_interval_sec: non_negative(
                &format!("{key}.refresh_interval_sec"),
                self.refresh_interval_sec,
            )?,
        })
    }

    /// The config table as `(keyspace, table)` when both are set.
    pub fn cfg_table(&self) -> Option<(&str, &str)> {
        (!self.cfg_table.is_empty() && !self.cfg_keyspace.is_empty())
            .then_some((self.cfg_keyspace.as_str(), self.cfg_table.as_str()))
    }

    /// The static map, or nothing when the dispatcher is off (§4.3).
    pub fn effective_static(&self) -> impl Iterator<Item = (&String, &Vec<String>)> {
        self.static_
            .iter()
            .filter(|_| self.enable)
            .map(|(v, ps)| (v, ps))
    }

    /// The static map whatever `enable` says.
    pub fn static_pairs(&self) -> impl Iterator<Item = (&String, &Vec<String>)> {
        self.static_.iter().map(|(v, ps)| (v, ps))
    }
}

impl CassandraSection {
    /// The section as the Cassandra crate takes it (numbers checked for sign).
    pub fn driver_config(&self) -> Result<CassandraConfig, ConfigError> {
        let d = &self.dual_write_err_cfg;
        let s = &self.shadow_read;
        Ok(CassandraConfig {
            enable: self.enable,
            hosts: self.hosts.clone(),
            default_key_space: self.default_key_space.clone(),
            default_table: self.default_table.clone(),
            timeout_ms: non_negative("timeout_ms", self.timeout_ms)?,
            write_timeout_ms: non_negative("write_timeout_ms", self.write_timeout_ms)?,
            connect_timeout_ms: non_negative("connect_timeout_ms", self.connect_timeout_ms)?,
            retry_num: non_negative("retry_num", self.retry_num)?,
            reconnect_interval_sec: non_negative(
                "reconnect_interval_sec",
                self.reconnect_interval_sec,
            )?,
            num_conns: non_negative("num_conns", self.num_conns)?,
            max_conn_for_getm: non_negative("max_conn_for_getm", self.max_conn_for_getm)?,
            username: self.username.clone(),
            password: Secret::new(self.password.clone()),
            password_file: self.password_file.clone(),
            consistency: self.consistency.clone(),
            default_storage: self.default_storage.clone(),
            prefix_rw_dispatcher_cfg: self
                .prefix_rw_dispatcher_cfg
                .driver("prefix_rw_dispatcher_cfg")?,
            prefix_table_dispatcher_cfg: self
                .prefix_table_dispatcher_cfg
                .driver("prefix_table_dispatcher_cfg")?,
            dual_write_err_cfg: DualWriteErrCfg {
                dump_to_dir: d.dump_to_dir.clone(),
                log_file_name: d.log_file_name.clone(),
                logger_level: d.logger_level.clone(),
                rotate_size_mb: non_negative(
                    "dual_write_err_cfg.rotate_size_mb",
                    d.rotate_size_mb,
                )?,
                compress: d.compress,
                max_ages: non_negative("dual_write_err_cfg.max_ages", d.max_ages)?,
                max_backups: non_negative("dual_write_err_cfg.max_backups", d.max_backups)?,
            },
            shadow_read: ShadowReadCfg {
                enable: s.enable,
                ratio: s.ratio,
                prefixes: s.prefixes.clone(),
                max_inflight: non_negative("shadow_read.max_inflight", s.max_inflight)?,
                recheck_delay_ms: non_negative("shadow_read.recheck_delay_ms", s.recheck_delay_ms)?,
                mismatch_log: s.mismatch_log.clone(),
            },
        })
    }

    /// The §3.2 checks that need no Cassandra: the crate's own, the static dispatcher maps,
    /// the error-log directory and the statuses that need beansdb when dstore is off.
    fn validate(&self, dstore: bool, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
        let c = self.driver_config()?;
        warnings.extend(c.validate().map_err(cstar_invalid)?);
        for (which, d) in [
            (Dispatcher::Rw, &self.prefix_rw_dispatcher_cfg),
            (Dispatcher::Table, &self.prefix_table_dispatcher_cfg),
        ] {
            if d.cfg_table.is_empty() != d.cfg_keyspace.is_empty() {
                return Err(invalid(format!(
                    "cassandra.{}: cfg_table and cfg_keyspace must be set together",
                    which.config_key()
                )));
            }
            for name in [&d.cfg_table, &d.cfg_keyspace] {
                if !name.is_empty() && !valid_name(name) {
                    return Err(invalid(format!(
                        "cassandra.{}: bad name {name:?} (letters, digits, _; max 48)",
                        which.config_key()
                    )));
                }
            }
            if d.enable {
                if let Err(e) = dispatch_rules::merge(which, d.static_pairs(), &[], "") {
                    let msg = e.config_message(which);
                    return Err(invalid(
                        msg.strip_prefix("config: ").unwrap_or(&msg).to_string(),
                    ));
                }
            }
        }
        if dstore {
            let dir = &self.dual_write_err_cfg.dump_to_dir;
            if dir.is_empty() || !Path::new(dir).is_dir() {
                return Err(invalid(format!(
                    "cassandra.dual_write_err_cfg.dump_to_dir: {dir:?} is not an existing directory"
                )));
            }
        } else {
            let rw = &self.prefix_rw_dispatcher_cfg;
            for (status, prefixes) in rw.effective_static() {
                if let Some(s) = Status::parse(status) {
                    if s.without_beansdb() != s {
                        for p in prefixes {
                            warnings.push(format!(
                                "prefix {p:?}: status {status} needs beansdb but dstore is disabled; using {}",
                                s.without_beansdb().as_str()
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn set(&mut self, p: &mut Parser<'_>, key: &str, v: &Value) -> Result<bool, ConfigError> {
        let c = self;
        match leaf(key) {
            "enable" => c.enable = p.boolean(key, v, c.enable)?,
            "hosts" => c.hosts = p.list(key, v)?,
            "default_key_space" => c.default_key_space = p.string(key, v, &c.default_key_space)?,
            "default_table" => c.default_table = p.string(key, v, &c.default_table)?,
            "timeout_ms" => c.timeout_ms = p.int(key, v, c.timeout_ms)?,
            "write_timeout_ms" => c.write_timeout_ms = p.int(key, v, c.write_timeout_ms)?,
            "connect_timeout_ms" => c.connect_timeout_ms = p.int(key, v, c.connect_timeout_ms)?,
            "retry_num" => c.retry_num = p.int(key, v, c.retry_num)?,
            "reconnect_interval_sec" => {
                c.reconnect_interval_sec = p.int(key, v, c.reconnect_interval_sec)?
            }
            "num_conns" => c.num_conns = p.int(key, v, c.num_conns)?,
            "max_conn_for_getm" => c.max_conn_for_getm = p.int(key, v, c.max_conn_for_getm)?,
            "username" => c.username = p.string(key, v, &c.username)?,
            "password" => c.password = p.string(key, v, &c.password)?,
            "password_file" => c.password_file = p.string(key, v, &c.password_file)?,
            "consistency" => c.consistency = p.string(key, v, &c.consistency)?,
            "default_storage" => c.default_storage = p.string(key, v, &c.default_storage)?,
            "prefix_rw_dispatcher_cfg" => {
                let d = &mut c.prefix_rw_dispatcher_cfg;
                p.section(key, v, |p, k, v| d.set(p, k, v))?
            }
            "prefix_table_dispatcher_cfg" => {
                let d = &mut c.prefix_table_dispatcher_cfg;
                p.section(key, v, |p, k, v| d.set(p, k, v))?
            }
            "dual_write_err_cfg" => {
                let d = &mut c.dual_write_err_cfg;
                p.section(key, v, |p, k, v| d.set(p, k, v))?
            }
            "shadow_read" => {
                let d = &mut c.shadow_read;
                p.section(key, v, |p, k, v| d.set(p, k, v))?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Best effort, for reporting a config error to the error log too: the `proxy.errorlog` value
/// of a proxy.yaml that may be otherwise invalid.
pub fn errorlog_hint(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(Config::proxy_yaml_path(dir)).ok()?;
    let doc: Value = serde_norway::from_str(&text).ok()?;
    match doc.get("proxy").and_then(|p| p.get("errorlog")) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => None,
        None => Some(ProxySection::default().errorlog),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPREAD: &str = "numbucket: 16\nmain:\n\
- {addr: 127.0.0.1:7910, buckets: [0, 3, 4, 5, 8, 9, a, d, e, f]}\n\
- {addr: 127.0.0.1:7920, buckets: [0, 1, 4, 5, 6, 9, a, b, e, f]}\n\
- {addr: 127.0.0.1:7930, buckets: [0, 1, 2, 5, 6, 7, a, b, c, f]}\n\
- {addr: 127.0.0.1:7940, buckets: [1, 2, 3, 6, 7, 8, b, c, d]}\n\
- {addr: 127.0.0.1:7950, buckets: [2, 3, 4, 7, 8, 9, c, d, e]}\n\
backup: [127.0.0.1:7960]\n";

    fn dir_with(proxy: &str, route: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("proxy.yaml"), proxy).unwrap();
        std::fs::write(d.path().join("route.yaml"), route).unwrap();
        d
    }

    fn load_err(proxy: &str) -> String {
        let d = dir_with(proxy, SPREAD);
        Config::load(d.path()).unwrap_err().to_string()
    }

    #[test]
    fn defaults_and_sample() {
        let d = dir_with(
            "proxy:\n  port: 7905\n  threads: 8\nmc:\n  max_req: 16\ndstore:\n  n: 3\n  w: 2\n  r: 1\ncassandra:\n  enable: false\n",
            SPREAD,
        );
        let (cfg, warnings) = Config::load(d.path()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cfg.mc.max_req, 16);
        assert_eq!(cfg.dstore.read_timeout_ms, 2000);
        assert_eq!(cfg.cassandra.max_conn_for_getm, 16);
        assert_eq!(cfg.mc.body_max, 50 << 20);
        assert_eq!(cfg.mc.body_c, 4 << 10);
        assert_eq!(cfg.route.as_ref().unwrap().main.len(), 5);
        let def = Config::embedded_defaults();
        assert_eq!(def.mc.max_req, 256);
        assert_eq!(def.proxy.webport, 7908);
    }

    #[test]
    fn unknown_keys_warn_with_path() {
        let d = dir_with(
            "proxy:\n  zkserves: [a]\nfoo: 1\ncassandra:\n  shadow_read: {bar: 2}\n",
            SPREAD,
        );
        let (_, w) = Config::load(d.path()).unwrap();
        assert_eq!(
            w,
            vec![
                "config: unknown key proxy.zkserves",
                "config: unknown key foo",
                "config: unknown key cassandra.shadow_read.bar"
            ]
        );
    }

    #[test]
    fn messages() {
        assert_eq!(
            load_err("dstore:\n  n: three\n"),
            "config: dstore.n: expected an integer, got \"three\""
        );
        assert_eq!(
            load_err("dstore:\n  enable: false\n"),
            "config: at least one of dstore.enable and cassandra.enable must be true"
        );
        assert_eq!(
            load_err("dstore:\n  n: 0\n"),
            "config: dstore.n must be ≥ 1"
        );
        assert_eq!(
            load_err("dstore:\n  w: 4\n"),
            "config: dstore.w must be between 1 and dstore.n (3), got 4"
        );
        assert_eq!(
            load_err("dstore:\n  r: 0\n"),
            "config: dstore.r must be between 1 and dstore.n (3), got 0"
        );
        assert_eq!(
            load_err("proxy:\n  port: 70000\n"),
            "config: proxy.port must be 1-65535"
        );
        assert_eq!(
            load_err("proxy:\n  port: 7908\n"),
            "config: proxy.port and proxy.webport must differ"
        );
        assert_eq!(
            load_err("dstore:\n  read_timeout_ms: 0\n"),
            "config: dstore.read_timeout_ms must be > 0"
        );
        assert_eq!(
            load_err("mc:\n  timeout_ms: -1\n"),
            "config: mc.timeout_ms must be > 0"
        );
        assert_eq!(
            load_err("mc:\n  max_req: 0\n"),
            "config: mc.max_req must be ≥ 1"
        );
        assert_eq!(
            load_err("dstore:\n  max_connect_errors: 0\n"),
            "config: dstore.max_connect_errors must be ≥ 1"
        );
        assert_eq!(
            load_err("dstore:\n  max_conns_per_host: 5\n"),
            "config: dstore.max_conns_per_host must be ≥ max_free_conns_per_host"
        );
        assert_eq!(
            load_err("mc:\n  body_max_str: 5X\n"),
            "config: mc.body_max_str: bad size \"5X\": expected <int>[K|M|G]"
        );
        assert_eq!(
            load_err("dstore:\n  scheduler: rr\n"),
            "config: dstore.scheduler: unknown scheduler \"rr\" (expected \"\" or \"buckets_manual\")"
        );
        assert!(load_err("dstore:\n  scheduler: no_buckets_rro\n")
            .contains("scheduler no_buckets_rro is not supported; list every bucket on every host and use n: 1"));
        let e = load_err("proxy: [\n");
        assert!(
            e.starts_with("config: ") && e.contains("proxy.yaml: invalid YAML at line "),
            "{e}"
        );
        assert_eq!(
            load_err("dstore:\n  enable: maybe\n"),
            "config: dstore.enable: expected a boolean, got \"maybe\""
        );
    }

    #[test]
    fn route_errors_pass_through() {
        let d = dir_with("dstore:\n  n: 4\n", SPREAD);
        assert_eq!(
            Config::load(d.path()).unwrap_err().to_string(),
            "route: bucket 0 has 3 main hosts but dstore.n is 4"
        );
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("proxy.yaml"), "").unwrap();
        let e = Config::load(d.path()).unwrap_err().to_string();
        assert!(e.starts_with("route: cannot read "), "{e}");
        let e = Config::load(&d.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config: cannot read "), "{e}");
    }

    /// A proxy.yaml with a valid Cassandra section; `extra` is one `  key: value` line that
    /// replaces the base line of the same key or is added.
    fn cstar_yaml(dump_dir: &str, extra: &str) -> String {
        let dump = format!("  dual_write_err_cfg: {{dump_to_dir: {dump_dir:?}}}\n");
        let base = [
            "  enable: true\n",
            "  hosts: [127.0.0.1:9042]\n",
            "  default_key_space: doubandb\n",
            "  default_table: kvstore\n",
            "  default_storage: br1w1cr0w0\n",
            dump.as_str(),
        ];
        let key_of = |line: &str| line.split(':').next().unwrap_or("").to_string();
        let mut out = String::from("cassandra:\n");
        for line in base {
            if extra.is_empty() || key_of(line) != key_of(extra) {
                out.push_str(line);
            }
        }
        out.push_str(extra);
        out
    }

    #[test]
    fn cassandra_section_rules_of_the_spec() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().display().to_string();
        let (cfg, _) = Config::load(dir_with(&cstar_yaml(&dir, ""), SPREAD).path()).unwrap();
        assert!(cfg.cassandra.enable);
        let cases: &[(&str, &str)] = &[
            ("  hosts: []\n", "config: cassandra.hosts is empty"),
            ("  hosts: [\"a:b:c\"]\n", "config: cassandra.hosts[0]: bad address \"a:b:c\""),
            ("  default_table: \"\"\n", "config: cassandra.default_table is required"),
            (
                "  default_table: kv-store\n",
                "config: cassandra.default_table: bad name \"kv-store\" (letters, digits, _; max 48)",
            ),
            (
                "  default_storage: brw\n",
                "config: cassandra.default_storage: unknown status \"brw\" (valid: br1w1cr0w0, \
                 br1w1cr0w1, br0w1cr1w1, br0w0cr1w1, br0w0cr1w0)",
            ),
            (
                "  consistency: most\n",
                "config: cassandra.consistency: unknown value \"most\" (valid: one, two, three, \
                 quorum, all, local_quorum, each_quorum, local_one)",
            ),
            ("  max_conn_for_getm: 0\n", "config: cassandra.max_conn_for_getm must be ≥ 1"),
            ("  timeout_ms: 0\n", "config: cassandra.timeout_ms must be > 0"),
            ("  num_conns: 0\n", "config: cassandra.num_conns must be ≥ 1"),
            (
                "  shadow_read: {ratio: 1.5}\n",
                "config: cassandra.shadow_read.ratio must be between 0 and 1",
            ),
            (
                "  prefix_rw_dispatcher_cfg: {enable: true, cfg_table: t}\n",
                "config: cassandra.prefix_rw_dispatcher_cfg: cfg_table and cfg_keyspace must be set together",
            ),
            (
                "  prefix_rw_dispatcher_cfg: {enable: true, static: {brw: [/a/]}}\n",
                "config: cassandra.prefix_rw_dispatcher_cfg: unknown status \"brw\" for prefix \"/a/\" \
                 (valid: br1w1cr0w0, br1w1cr0w1, br0w1cr1w1, br0w0cr1w1, br0w0cr1w0)",
            ),
            (
                "  prefix_rw_dispatcher_cfg: {enable: true, static: {br1w1cr0w0: [\"\"]}}\n",
                "config: cassandra.prefix_rw_dispatcher_cfg: empty prefix is not allowed",
            ),
            (
                "  prefix_table_dispatcher_cfg: {enable: true, static: {a: [/p], b: [/p]}}\n",
                "config: cassandra.prefix_table_dispatcher_cfg: prefix \"/p\" configured twice \
                 (static: a; static: b)",
            ),
        ];
        for (extra, want) in cases {
            let err = load_err(&cstar_yaml(&dir, extra));
            assert_eq!(&err, want, "for {extra:?}");
        }
        let err = load_err(&cstar_yaml("/nonexistent/dir", ""));
        assert_eq!(
            err,
            "config: cassandra.dual_write_err_cfg.dump_to_dir: \"/nonexistent/dir\" is not an existing directory"
        );
        let err = load_err(&cstar_yaml(&dir, "  password_file: /nonexistent/pw\n"));
        assert!(
            err.starts_with("config: cassandra.password_file: cannot read /nonexistent/pw"),
            "{err}"
        );
        // A disabled section is not validated.
        Config::load(dir_with("cassandra:\n  enable: false\n  hosts: []\n", SPREAD).path())
            .unwrap();
    }

    #[test]
    fn cassandra_only_statuses_warn_without_dstore() {
        let d = dir_with(
            "dstore:\n  enable: false\ncassandra:\n  enable: true\n  hosts: [h]\n  \
             default_key_space: k\n  default_table: t\n  default_storage: br0w0cr1w1\n  \
             prefix_rw_dispatcher_cfg: {enable: true, static: {br1w1cr0w1: [/a/], br0w0cr1w0: [/r/]}}\n",
            SPREAD,
        );
        let (_, warnings) = Config::load(d.path()).unwrap();
        assert!(warnings.iter().any(|w| w
            == "prefix \"/a/\": status br1w1cr0w1 needs beansdb but dstore is disabled; using br0w0cr1w1"));
        assert!(!warnings.iter().any(|w| w.contains("/r/")), "{warnings:?}");
    }

    #[test]
    fn dump_round_trips_and_redacts() {
        let d = dir_with(
            "cassandra:\n  password: hunter2\n  prefix_rw_dispatcher_cfg:\n    static: {br1w1cr0w1: [/a/, /b/]}\n",
            SPREAD,
        );
        let (cfg, _) = Config::load(d.path()).unwrap();
        let text = cfg.dump_yaml();
        assert!(!text.contains("hunter2"));
        assert!(text.contains("<redacted>"));
        for k in [
            "proxy:",
            "mc:",
            "dstore:",
            "cassandra:",
            "probe_max_interval_ms",
            "shadow_read",
        ] {
            assert!(text.contains(k), "{k} missing in {text}");
        }
        let mut w = Vec::new();
        let back = Config::parse(&text, "dump", &mut w).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(back.dstore, cfg.dstore);
        assert_eq!(back.proxy, cfg.proxy);
        assert_eq!(
            back.cassandra.prefix_rw_dispatcher_cfg,
            cfg.cassandra.prefix_rw_dispatcher_cfg
        );
        let j = cfg.to_json();
        assert_eq!(j["cassandra"]["password"], "<redacted>");
        assert_eq!(j["dstore"]["n"], 3);
        assert!(j["confdir"].as_str().unwrap().len() > 1);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50M"), Some(50 << 20));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("0K"), Some(0));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("5X"), None);
        assert_eq!(parse_size("-1M"), None);
        assert_eq!(parse_size("M"), None);
    }
}
