//! Node configuration (node.md §7): embedded defaults, the gobeansdb conf dir
//! (`global.yaml`, optional `local.yaml`, `route.yaml`), validation, `-dumpconf` YAML and the
//! flat `/config` JSON (§8.4).
//!
//! Files are merged at the YAML value level: every key present in a file overrides the current
//! value, including `0`, `false` and `""`; a key given as null takes its zero value (as Go's
//! yaml.v2 does, which is what the "empty struct" check exists for).

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use beansdb_route::{Route, RouteError};
use serde::{Serialize, Serializer};
use serde_norway::{Mapping, Value};

/// Largest accepted `datafile_max` (offsets are 32-bit and records 256-aligned).
pub const MAX_DATAFILE_SIZE: u64 = (4 << 30) - 256;
/// Hint split cap used by `-buildhint` when no `-confdir` is given (node.md §6.3).
pub const BUILDHINT_SPLIT_CAP_STR: &str = "3M";
/// Key-hash bytes kept per leaf item, indexed by `depth + tree_height - 1` (node.md §5.2).
pub const KHASH_LENS: [u32; 8] = [8, 8, 7, 7, 6, 6, 5, 5];
/// MIME types that are never compressed; configured entries are added to these.
pub const DEFAULT_NOT_COMPRESS: [&str; 2] = ["audio/mpeg", "audio/wave"];

/// Configuration errors; every message names the file or the key at fault.
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
        /// ` at line L column C`, or empty when the parser gave no position.
        at: String,
        detail: String,
    },
    #[error("bad config: empty struct in {path}")]
    EmptyStruct { path: String },
    #[error("config: {path}: {key}: expected {expected}, got {got}")]
    Type {
        path: String,
        key: String,
        expected: &'static str,
        got: String,
    },
    #[error(
        "config: {key}: bad size \"{value}\": expected <int>[K|M|G] with a non-negative 32-bit int"
    )]
    Size { key: String, value: String },
    #[error("config: {key}: {message}")]
    Invalid { key: String, message: String },
    #[error(transparent)]
    Route(#[from] RouteError),
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// When a record is fsynced (D6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    Never,
    #[default]
    Interval,
    Always,
}

impl FsyncPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FsyncPolicy::Never => "never",
            FsyncPolicy::Interval => "interval",
            FsyncPolicy::Always => "always",
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "never" => Ok(FsyncPolicy::Never),
            "interval" => Ok(FsyncPolicy::Interval),
            "always" => Ok(FsyncPolicy::Always),
            _ => Err(format!("must be never, interval or always, got \"{s}\"")),
        }
    }
}

/// `server:` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerConfig {
    pub hostname: String,
    pub listen: String,
    pub port: u16,
    pub webport: u16,
    pub threads: usize,
    pub errorlog: String,
    pub accesslog: String,
    pub analysislog: String,
    pub zkservers: Vec<String>,
    pub zkpath: String,
    pub staticdir: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: "127.0.0.1".into(),
            listen: "0.0.0.0".into(),
            port: 7900,
            webport: 7903,
            threads: 4,
            errorlog: "./gobeansdb.log".into(),
            accesslog: String::new(),
            analysislog: String::new(),
            zkservers: Vec::new(),
            zkpath: String::new(),
            staticdir: "./".into(),
        }
    }
}

/// `mc:` section; `body_max` … `flush_max` are derived from the `*_str` keys, in bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct McConfig {
    pub max_key_len: usize,
    pub max_req: usize,
    pub body_max_str: String,
    pub body_big_str: String,
    pub body_c_str: String,
    pub flush_max_str: String,
    pub timeout_ms: u64,
    #[serde(skip)]
    pub body_max: u64,
    #[serde(skip)]
    pub body_big: u64,
    #[serde(skip)]
    pub body_c: u64,
    #[serde(skip)]
    pub flush_max: u64,
}

impl Default for McConfig {
    fn default() -> Self {
        McConfig {
            max_key_len: 250,
            max_req: 16,
            body_max_str: "50M".into(),
            body_big_str: "1M".into(),
            body_c_str: "4K".into(),
            flush_max_str: "100M".into(),
            timeout_ms: 3000,
            body_max: 50 << 20,
            body_big: 1 << 20,
            body_c: 4 << 10,
            flush_max: 100 << 20,
        }
    }
}

/// `hstore:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct HStoreConfig {
    pub local: LocalConfig,
    pub data: DataConfig,
    pub hint: HintConfig,
    pub htree: HTreeConfig,
    pub gc: GcConfig,
}

/// `hstore.local:`; `homes: [a, …]` is read into `home` when `home` is absent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalConfig {
    pub home: String,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            home: "./testdb".into(),
        }
    }
}

/// `hstore.data:`; `datafile_max`, `flush_wake`, `bufio_cap` are derived, in bytes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataConfig {
    pub datafile_max_str: String,
    pub flush_interval: u64,
    pub flush_wake_str: String,
    pub bufio_cap_str: String,
    pub check_vhash: bool,
    pub no_gc_days: u32,
    /// Defaults plus every configured key (the configured boolean is ignored).
    #[serde(serialize_with = "serialize_set_as_map")]
    pub not_compress: BTreeSet<String>,
    pub fsync: FsyncPolicy,
    pub fsync_interval_ms: u64,
    #[serde(skip)]
    pub datafile_max: u64,
    #[serde(skip)]
    pub flush_wake: u64,
    #[serde(skip)]
    pub bufio_cap: u64,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            datafile_max_str: "4000M".into(),
            flush_interval: 0,
            flush_wake_str: "0".into(),
            bufio_cap_str: "1M".into(),
            check_vhash: false,
            no_gc_days: 0,
            not_compress: DEFAULT_NOT_COMPRESS.iter().map(|s| s.to_string()).collect(),
            fsync: FsyncPolicy::Interval,
            fsync_interval_ms: 1000,
            datafile_max: 4000 << 20,
            flush_wake: 0,
            bufio_cap: 1 << 20,
        }
    }
}

/// `hstore.hint:`; `hint_split_cap` (keys) and `hint_index_interval` (bytes) are derived.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HintConfig {
    pub hint_split_cap_str: String,
    pub hint_index_interval_str: String,
    pub hint_no_merged: bool,
    pub hint_merge_interval: u32,
    #[serde(skip)]
    pub hint_split_cap: u64,
    #[serde(skip)]
    pub hint_index_interval: u64,
}

impl Default for HintConfig {
    fn default() -> Self {
        HintConfig {
            hint_split_cap_str: "1M".into(),
            hint_index_interval_str: "4K".into(),
            hint_no_merged: false,
            hint_merge_interval: 1,
            hint_split_cap: 1 << 20,
            hint_index_interval: 4 << 10,
        }
    }
}

/// `hstore.htree:`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HTreeConfig {
    pub tree_height: u32,
    pub tree_dump: u32,
}

impl Default for HTreeConfig {
    fn default() -> Self {
        HTreeConfig {
            tree_height: 3,
            tree_dump: 3,
        }
    }
}

/// `hstore.gc:` (new keys, ignored by gobeansdb).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GcConfig {
    pub auto: bool,
    pub garbage_ratio: f64,
    pub disk_free_ratio: f64,
    /// `HH:MM-HH:MM` (may wrap past midnight) or empty for "any time".
    pub window: String,
    pub check_interval_s: u64,
    /// 0 = unlimited.
    pub max_mb_per_sec: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            auto: false,
            garbage_ratio: 0.5,
            disk_free_ratio: 0.1,
            window: String::new(),
            check_interval_s: 600,
            max_mb_per_sec: 100,
        }
    }
}

impl GcConfig {
    /// The window as minutes since midnight `(start, end)`; `None` = no restriction.
    pub fn window_minutes(&self) -> Option<(u32, u32)> {
        parse_gc_window(&self.window).ok().flatten()
    }
}

/// The effective node configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    pub server: ServerConfig,
    pub mc: McConfig,
    pub hstore: HStoreConfig,
    pub route: Route,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig::embedded_defaults()
    }
}

impl NodeConfig {
    /// Configuration without `-confdir`: all defaults, 16 buckets all served by this node.
    pub fn embedded_defaults() -> NodeConfig {
        let server = ServerConfig::default();
        let route = Route::all_local(&format!("{}:{}", server.hostname, server.port), 16);
        NodeConfig {
            server,
            mc: McConfig::default(),
            hstore: HStoreConfig::default(),
            route,
        }
    }

    /// Load `DIR/global.yaml`, `DIR/local.yaml` (if present) and `DIR/route.yaml` over the
    /// defaults; warnings are logged.
    pub fn load(confdir: &Path) -> Result<NodeConfig, ConfigError> {
        let (cfg, warnings) = NodeConfig::load_with_warnings(confdir)?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        Ok(cfg)
    }

    /// Like [`NodeConfig::load`] but returns the warnings: the log files are only known once the
    /// config is loaded, so the caller may want to log them later.
    pub fn load_with_warnings(confdir: &Path) -> Result<(NodeConfig, Vec<String>), ConfigError> {
        let mut cfg = NodeConfig::embedded_defaults();
        let mut warnings = Vec::new();

        let global = confdir.join("global.yaml");
        let text = read_file(&global)?;
        cfg.apply_yaml(&text, &global.display().to_string(), &mut warnings)?;

        let local = confdir.join("local.yaml");
        match std::fs::read_to_string(&local) {
            Ok(text) => cfg.apply_yaml(&text, &local.display().to_string(), &mut warnings)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ConfigError::Read {
                    path: local.display().to_string(),
                    source,
                })
            }
        }

        let (route, route_warnings) = Route::load_with_warnings(&confdir.join("route.yaml"))?;
        warnings.extend(route_warnings);
        cfg.route = route;

        cfg.finish(&mut warnings)?;
        Ok((cfg, warnings))
    }

    /// `hostname:port`, this node's identity in the route.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.server.hostname, self.server.port)
    }

    /// `numbucket` flags, true for the buckets this node serves.
    pub fn served_buckets(&self) -> Vec<bool> {
        self.route.served_by(&self.addr())
    }

    /// Hex digits of a bucket id (0, 1, 2), from the route's numbucket.
    pub fn tree_depth(&self) -> u32 {
        self.route.depth()
    }

    /// Bytes of key hash stored per leaf item.
    pub fn tree_key_hash_len(&self) -> u32 {
        let i = (self.tree_depth() + self.hstore.htree.tree_height).saturating_sub(1) as usize;
        KHASH_LENS[i.min(KHASH_LENS.len() - 1)]
    }

    /// Mask of the stored key-hash bytes.
    pub fn tree_key_hash_mask(&self) -> u64 {
        let bits = 8 * self.tree_key_hash_len();
        if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        }
    }

    /// Merge one YAML document over the current values, then apply the "empty struct" check.
    fn apply_yaml(
        &mut self,
        text: &str,
        origin: &str,
        warnings: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        let doc: Value = serde_norway::from_str(text).map_err(|e| yaml_error(origin, e))?;
        let mut ctx = Ctx {
            path: origin,
            warnings,
        };
        match &doc {
            // An empty file changes nothing.
            Value::Null => {}
            Value::Mapping(map) => {
                for (k, v) in map {
                    let name = key_name(k);
                    match name.as_str() {
                        "server" => {
                            apply_section(v, "server", ServerConfig::KEYS, &mut ctx, |k, v, c| {
                                self.server.set(k, v, c)
                            })?
                        }
                        "mc" => apply_section(v, "mc", McConfig::KEYS, &mut ctx, |k, v, c| {
                            self.mc.set(k, v, c)
                        })?,
                        "hstore" => self.hstore.apply(v, &mut ctx)?,
                        _ => ctx.unknown(&name),
                    }
                }
            }
            other => {
                return Err(ConfigError::Type {
                    path: origin.to_string(),
                    key: "(top level)".into(),
                    expected: "a mapping",
                    got: describe(other),
                })
            }
        }
        if self.mc.max_key_len == 0
            || self.hstore.hint.hint_split_cap_str.is_empty()
            || self.hstore.htree.tree_height == 0
        {
            return Err(ConfigError::EmptyStruct {
                path: origin.to_string(),
            });
        }
        Ok(())
    }

    /// Compute derived values and validate the merged config (route included).
    fn finish(&mut self, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
        let mc = &mut self.mc;
        mc.body_max = size("mc.body_max_str", &mc.body_max_str)?;
        mc.body_big = size("mc.body_big_str", &mc.body_big_str)?;
        mc.body_c = size("mc.body_c_str", &mc.body_c_str)?;
        mc.flush_max = size("mc.flush_max_str", &mc.flush_max_str)?;
        let data = &mut self.hstore.data;
        data.datafile_max = size("hstore.data.datafile_max_str", &data.datafile_max_str)?;
        data.flush_wake = size("hstore.data.flush_wake_str", &data.flush_wake_str)?;
        data.bufio_cap = size("hstore.data.bufio_cap_str", &data.bufio_cap_str)?;
        let hint = &mut self.hstore.hint;
        hint.hint_split_cap = size("hstore.hint.hint_split_cap_str", &hint.hint_split_cap_str)?;
        hint.hint_index_interval = size(
            "hstore.hint.hint_index_interval_str",
            &hint.hint_index_interval_str,
        )?;

        let data = &self.hstore.data;
        if data.datafile_max == 0 || data.datafile_max > MAX_DATAFILE_SIZE {
            return Err(invalid(
                "hstore.data.datafile_max_str",
                format!(
                    "\"{}\" = {} bytes; must be > 0 and <= {MAX_DATAFILE_SIZE} (4 GiB - 256)",
                    data.datafile_max_str, data.datafile_max
                ),
            ));
        }
        if self.hstore.hint.hint_split_cap == 0 {
            return Err(invalid("hstore.hint.hint_split_cap_str", "must be > 0"));
        }
        let h = self.hstore.htree.tree_height;
        let depth = self.route.depth();
        if h < 2 || depth + h > 8 {
            return Err(invalid(
                "hstore.htree.tree_height",
                format!(
                    "must be >= 2 and <= {} (depth {depth} for numbucket {}), got {h}",
                    8 - depth.min(8),
                    self.route.numbucket
                ),
            ));
        }
        if self.hstore.local.home.is_empty() {
            return Err(invalid("hstore.local.home", "must not be empty"));
        }
        let gc = &self.hstore.gc;
        parse_gc_window(&gc.window).map_err(|m| invalid("hstore.gc.window", m))?;
        for (key, v) in [
            ("hstore.gc.garbage_ratio", gc.garbage_ratio),
            ("hstore.gc.disk_free_ratio", gc.disk_free_ratio),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(invalid(key, format!("must be between 0 and 1, got {v}")));
            }
        }

        if !self.server.zkservers.is_empty() {
            // The servers are not echoed: a connection string may carry credentials.
            warnings.push(
                "config: server.zkservers is set but ZooKeeper is not supported; \
                 using the local route.yaml"
                    .to_string(),
            );
        }
        let addr = self.addr();
        if !self.route.has_addr(&addr) {
            warnings.push(format!(
                "route: this node ({addr}) is not listed in route.yaml: it serves no bucket"
            ));
        }
        Ok(())
    }

    /// The effective config as YAML in the `server`/`mc`/`hstore` sections, every key included.
    /// Written as `global.yaml` next to the same `route.yaml` it loads back to an equal config.
    pub fn dump_yaml(&self) -> String {
        #[derive(Serialize)]
        struct Dump<'a> {
            server: &'a ServerConfig,
            mc: &'a McConfig,
            hstore: &'a HStoreConfig,
        }
        serde_norway::to_string(&Dump {
            server: &self.server,
            mc: &self.mc,
            hstore: &self.hstore,
        })
        // Serializing plain structs of strings and numbers cannot fail; keep the output a
        // YAML comment rather than panic if it ever does.
        .unwrap_or_else(|e| format!("# cannot dump config: {e}\n"))
    }

    /// The flat `/config` object (node.md §8.4), sizes in bytes.
    pub fn config_json(&self) -> serde_json::Value {
        use serde_json::{json, Map, Value as J};
        let s = &self.server;
        let mc = &self.mc;
        let d = &self.hstore.data;
        let hint = &self.hstore.hint;
        let tree = &self.hstore.htree;
        let gc = &self.hstore.gc;
        let served = self.served_buckets();
        let mut m = Map::new();
        let mut put = |k: &str, v: J| {
            m.insert(k.to_string(), v);
        };
        put("Hostname", json!(s.hostname));
        put("ZKPath", json!(s.zkpath));
        put("ZKServers", json!(s.zkservers));
        put("Listen", json!(s.listen));
        put("Port", json!(s.port));
        put("WebPort", json!(s.webport));
        put("Threads", json!(s.threads));
        put("ErrorLog", json!(s.errorlog));
        put("AccessLog", json!(s.accesslog));
        put("AnalysisLog", json!(s.analysislog));
        put("StaticDir", json!(s.staticdir));
        put("MaxKeyLen", json!(mc.max_key_len));
        put("MaxReq", json!(mc.max_req));
        put("BodyMax", json!(mc.body_max));
        put("BodyBig", json!(mc.body_big));
        put("BodyInC", json!(mc.body_c));
        put("FlushMax", json!(mc.flush_max));
        put("FlushMaxStr", json!(mc.flush_max_str));
        put("BodyMaxStr", json!(mc.body_max_str));
        put("BodyBigStr", json!(mc.body_big_str));
        put("BodyInCStr", json!(mc.body_c_str));
        put("TimeoutMS", json!(mc.timeout_ms));
        put("NumBucket", json!(self.route.numbucket));
        put(
            "Buckets",
            json!(served.iter().map(|&b| u8::from(b)).collect::<Vec<_>>()),
        );
        put(
            "BucketsHex",
            json!(served
                .iter()
                .enumerate()
                .filter(|(_, &b)| b)
                .map(|(i, _)| self.route.bucket_hex(i))
                .collect::<Vec<_>>()),
        );
        put("Home", json!(self.hstore.local.home));
        // gobeansdb's own field; tools written against it may read it.
        put("Homes", json!([self.hstore.local.home]));
        put("FlushWake", json!(d.flush_wake));
        put("DataFileMax", json!(d.datafile_max));
        put("CheckVHash", json!(d.check_vhash));
        put("FlushInterval", json!(d.flush_interval));
        put("NoGCDays", json!(d.no_gc_days));
        put("FlushWakeStr", json!(d.flush_wake_str));
        put("DataFileMaxStr", json!(d.datafile_max_str));
        put("BufIOCap", json!(d.bufio_cap));
        put("BufIOCapStr", json!(d.bufio_cap_str));
        put(
            "NotCompress",
            J::Object(
                d.not_compress
                    .iter()
                    .map(|k| (k.clone(), J::Bool(true)))
                    .collect(),
            ),
        );
        put("NoMerged", json!(hint.hint_no_merged));
        put("MergeInterval", json!(hint.hint_merge_interval));
        put("IndexIntervalSize", json!(hint.hint_index_interval));
        put("SplitCap", json!(hint.hint_split_cap));
        put("SplitCapStr", json!(hint.hint_split_cap_str));
        put("IndexIntervalSizeStr", json!(hint.hint_index_interval_str));
        put("TreeHeight", json!(tree.tree_height));
        put("TreeDump", json!(tree.tree_dump));
        put("TreeDepth", json!(self.tree_depth()));
        put("TreeKeyHashMask", json!(self.tree_key_hash_mask()));
        put("TreeKeyHashLen", json!(self.tree_key_hash_len()));
        put("Fsync", json!(d.fsync.as_str()));
        put("FsyncIntervalMS", json!(d.fsync_interval_ms));
        put(
            "GC",
            json!({
                "Auto": gc.auto,
                "GarbageRatio": gc.garbage_ratio,
                "DiskFreeRatio": gc.disk_free_ratio,
                "Window": gc.window,
                "CheckIntervalS": gc.check_interval_s,
                "MaxMBPerSec": gc.max_mb_per_sec,
            }),
        );
        let mut out = J::Object(m);
        redact_secrets(&mut out);
        out
    }
}

// ---- size strings and small parsers ----------------------------------------------------------

/// A size string: an integer fitting i32 (here also non-negative) with an optional `K/k`,
/// `M/m`, `G/g` suffix (powers of 1024); empty = 0. `None` if invalid.
pub fn parse_size(s: &str) -> Option<u64> {
    if s.is_empty() {
        return Some(0);
    }
    let (digits, unit) = match s.as_bytes()[s.len() - 1] {
        b'K' | b'k' => (&s[..s.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: i32 = digits.parse().ok()?;
    // A negative size has no meaning for any key (gobeansdb would take it and misbehave).
    u64::try_from(n).ok().map(|n| n * unit)
}

fn size(key: &str, s: &str) -> Result<u64, ConfigError> {
    parse_size(s).ok_or_else(|| ConfigError::Size {
        key: key.to_string(),
        value: s.to_string(),
    })
}

/// `HH:MM-HH:MM` → minutes since midnight; empty → `None`.
pub fn parse_gc_window(s: &str) -> Result<Option<(u32, u32)>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || format!("bad window \"{s}\": expected HH:MM-HH:MM or empty");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let hm = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        if h.is_empty() || h.len() > 2 || m.len() != 2 {
            return None;
        }
        if !h.bytes().chain(m.bytes()).all(|c| c.is_ascii_digit()) {
            return None;
        }
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    match (hm(a), hm(b)) {
        (Some(start), Some(end)) => Ok(Some((start, end))),
        _ => Err(bad()),
    }
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn yaml_error(path: &str, err: serde_norway::Error) -> ConfigError {
    let mut detail = err.to_string();
    let at = match err.location() {
        Some(loc) => {
            let at = format!(" at line {} column {}", loc.line(), loc.column());
            // Show the position once, before the detail.
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

fn serialize_set_as_map<S: Serializer>(set: &BTreeSet<String>, ser: S) -> Result<S::Ok, S::Error> {
    ser.collect_map(set.iter().map(|k| (k, true)))
}

/// Key names that would hold credentials. The node config has none today; this keeps `/config`
/// safe if one is ever added.
fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "credential",
        "apikey",
        "api_key",
    ]
    .iter()
    .any(|w| k.contains(w))
}

/// Replace secret-looking values, and `user:pass@` in connection strings, by `<redacted>`.
fn redact_secrets(v: &mut serde_json::Value) {
    use serde_json::Value as J;
    match v {
        J::Object(map) => {
            for (k, val) in map.iter_mut() {
                if looks_secret(k) {
                    let empty =
                        matches!(val, J::Null) || matches!(val, J::String(s) if s.is_empty());
                    if !empty {
                        *val = J::String("<redacted>".into());
                    }
                } else {
                    redact_secrets(val);
                }
            }
        }
        J::Array(items) => items.iter_mut().for_each(redact_secrets),
        J::String(s) => {
            if let Some(clean) = strip_userinfo(s) {
                *s = clean;
            }
        }
        _ => {}
    }
}

/// `scheme://user:pass@host` or `user:pass@host` → `<redacted>@host` (only when a `:` precedes
/// the `@` inside the authority, so e-mail-like text and paths stay as they are).
fn strip_userinfo(s: &str) -> Option<String> {
    let (scheme, rest) = match s.find("://") {
        Some(i) => (&s[..i + 3], &s[i + 3..]),
        None => ("", s),
    };
    let at = rest.find('@')?;
    let userinfo = &rest[..at];
    if !userinfo.contains(':') || userinfo.contains('/') {
        return None;
    }
    Some(format!("{scheme}<redacted>{}", &rest[at..]))
}

// ---- YAML value-level merge -----------------------------------------------------------------

/// Where values come from (for messages) and where warnings go.
struct Ctx<'a> {
    path: &'a str,
    warnings: &'a mut Vec<String>,
}

impl Ctx<'_> {
    fn unknown(&mut self, key: &str) {
        self.warnings
            .push(format!("config: {}: unknown key {key} ignored", self.path));
    }

    fn type_err(&self, key: &str, expected: &'static str, v: &Value) -> ConfigError {
        ConfigError::Type {
            path: self.path.to_string(),
            key: key.to_string(),
            expected,
            got: describe(v),
        }
    }

    /// Any scalar is accepted as text (as yaml.v2 does for string fields); null is "".
    fn string(&self, key: &str, v: &Value) -> Result<String, ConfigError> {
        match untag(v) {
            Value::Null => Ok(String::new()),
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            other => Err(self.type_err(key, "a string", other)),
        }
    }

    fn uint(&self, key: &str, v: &Value, max: u64) -> Result<u64, ConfigError> {
        match untag(v) {
            Value::Null => Ok(0),
            Value::Number(n) => match n.as_u64() {
                Some(x) if x <= max => Ok(x),
                _ => Err(self.type_err(key, "a non-negative integer in range", v)),
            },
            other => Err(self.type_err(key, "a non-negative integer", other)),
        }
    }

    fn u32(&self, key: &str, v: &Value) -> Result<u32, ConfigError> {
        // i32::MAX: the range of Go's int fields on every platform gobeansdb ran on.
        Ok(self.uint(key, v, i32::MAX as u64)? as u32)
    }

    fn usize(&self, key: &str, v: &Value) -> Result<usize, ConfigError> {
        Ok(self.uint(key, v, i32::MAX as u64)? as usize)
    }

    fn u64(&self, key: &str, v: &Value) -> Result<u64, ConfigError> {
        self.uint(key, v, i64::MAX as u64)
    }

    fn port(&self, key: &str, v: &Value) -> Result<u16, ConfigError> {
        Ok(self.uint(key, v, u16::MAX as u64)? as u16)
    }

    /// YAML 1.1 spellings (`yes`, `on`, …) are accepted too: gobeansdb's samples were read by
    /// a YAML 1.1 parser.
    fn boolean(&self, key: &str, v: &Value) -> Result<bool, ConfigError> {
        match untag(v) {
            Value::Null => Ok(false),
            Value::Bool(b) => Ok(*b),
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "y" | "on" => Ok(true),
                "false" | "no" | "n" | "off" => Ok(false),
                _ => Err(self.type_err(key, "a boolean", v)),
            },
            other => Err(self.type_err(key, "a boolean", other)),
        }
    }

    fn float(&self, key: &str, v: &Value) -> Result<f64, ConfigError> {
        match untag(v) {
            Value::Null => Ok(0.0),
            Value::Number(n) => n
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| self.type_err(key, "a number", v)),
            other => Err(self.type_err(key, "a number", other)),
        }
    }

    /// A list of scalars; a single scalar is taken as a one-entry list.
    fn string_list(&self, key: &str, v: &Value) -> Result<Vec<String>, ConfigError> {
        match untag(v) {
            Value::Null => Ok(Vec::new()),
            Value::Sequence(items) => items.iter().map(|i| self.string(key, i)).collect(),
            other => Ok(vec![self.string(key, other)?]),
        }
    }
}

fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => untag(&t.value),
        other => other,
    }
}

fn key_name(k: &Value) -> String {
    match untag(k) {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => describe(other),
    }
}

fn describe(v: &Value) -> String {
    match untag(v) {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(_) => "a tagged value".into(),
    }
}

/// A section is a mapping; null means "present but empty", which zeroes every key (yaml.v2).
fn section<'v>(v: &'v Value, key: &str, ctx: &Ctx) -> Result<Option<&'v Mapping>, ConfigError> {
    match untag(v) {
        Value::Null => Ok(None),
        Value::Mapping(m) => Ok(Some(m)),
        other => Err(ctx.type_err(key, "a mapping", other)),
    }
}

/// Apply `v` (the value of section `prefix`) with `set(key, value)`, which returns false for an
/// unknown key.
fn apply_section<F>(
    v: &Value,
    prefix: &str,
    keys: &[&str],
    ctx: &mut Ctx,
    mut set: F,
) -> Result<(), ConfigError>
where
    F: FnMut(&str, &Value, &mut Ctx) -> Result<bool, ConfigError>,
{
    match section(v, prefix, ctx)? {
        None => {
            for k in keys {
                set(k, &Value::Null, ctx)?;
            }
        }
        Some(map) => {
            for (k, val) in map {
                let name = key_name(k);
                if !set(&name, val, ctx)? {
                    ctx.unknown(&format!("{prefix}.{name}"));
                }
            }
        }
    }
    Ok(())
}

impl ServerConfig {
    const KEYS: &'static [&'static str] = &[
        "hostname",
        "listen",
        "port",
        "webport",
        "threads",
        "errorlog",
        "accesslog",
        "analysislog",
        "zkservers",
        "zkpath",
        "staticdir",
    ];

    fn set(&mut self, key: &str, v: &Value, c: &mut Ctx) -> Result<bool, ConfigError> {
        match key {
            "hostname" => self.hostname = c.string("server.hostname", v)?,
            "listen" => self.listen = c.string("server.listen", v)?,
            "port" => self.port = c.port("server.port", v)?,
            "webport" => self.webport = c.port("server.webport", v)?,
            "threads" => self.threads = c.usize("server.threads", v)?,
            "errorlog" => self.errorlog = c.string("server.errorlog", v)?,
            "accesslog" => self.accesslog = c.string("server.accesslog", v)?,
            "analysislog" => self.analysislog = c.string("server.analysislog", v)?,
            "zkservers" => self.zkservers = c.string_list("server.zkservers", v)?,
            "zkpath" => self.zkpath = c.string("server.zkpath", v)?,
            "staticdir" => self.staticdir = c.string("server.staticdir", v)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl McConfig {
    const KEYS: &'static [&'static str] = &[
        "max_key_len",
        "max_req",
        "body_max_str",
        "body_big_str",
        "body_c_str",
        "flush_max_str",
        "timeout_ms",
    ];

    fn set(&mut self, key: &str, v: &Value, c: &mut Ctx) -> Result<bool, ConfigError> {
        match key {
            "max_key_len" => self.max_key_len = c.usize("mc.max_key_len", v)?,
            "max_req" => self.max_req = c.usize("mc.max_req", v)?,
            "body_max_str" => self.body_max_str = c.string("mc.body_max_str", v)?,
            "body_big_str" => self.body_big_str = c.string("mc.body_big_str", v)?,
            "body_c_str" => self.body_c_str = c.string("mc.body_c_str", v)?,
            "flush_max_str" => self.flush_max_str = c.string("mc.flush_max_str", v)?,
            "timeout_ms" => self.timeout_ms = c.u64("mc.timeout_ms", v)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl HStoreConfig {
    const KEYS: &'static [&'static str] = &["local", "data", "hint", "htree", "gc"];

    fn apply(&mut self, v: &Value, ctx: &mut Ctx) -> Result<(), ConfigError> {
        apply_section(v, "hstore", Self::KEYS, ctx, |k, v, c| {
            match k {
                "local" => self.local.apply(v, c)?,
                "data" => apply_section(v, "hstore.data", DataConfig::KEYS, c, |k, v, c| {
                    self.data.set(k, v, c)
                })?,
                "hint" => apply_section(v, "hstore.hint", HintConfig::KEYS, c, |k, v, c| {
                    self.hint.set(k, v, c)
                })?,
                "htree" => apply_section(v, "hstore.htree", HTreeConfig::KEYS, c, |k, v, c| {
                    self.htree.set(k, v, c)
                })?,
                "gc" => apply_section(v, "hstore.gc", GcConfig::KEYS, c, |k, v, c| {
                    self.gc.set(k, v, c)
                })?,
                _ => return Ok(false),
            }
            Ok(true)
        })
    }
}

impl LocalConfig {
    fn apply(&mut self, v: &Value, c: &mut Ctx) -> Result<(), ConfigError> {
        let Some(map) = section(v, "hstore.local", c)? else {
            self.home = String::new();
            return Ok(());
        };
        let mut home = None;
        let mut homes = None;
        for (k, val) in map {
            match key_name(k).as_str() {
                "home" => home = Some(c.string("hstore.local.home", val)?),
                "homes" => homes = Some(c.string_list("hstore.local.homes", val)?),
                other => c.unknown(&format!("hstore.local.{other}")),
            }
        }
        match (home, homes) {
            (Some(h), homes) => {
                if homes.is_some() {
                    c.warnings.push(format!(
                        "config: {}: hstore.local.homes ignored because hstore.local.home is set",
                        c.path
                    ));
                }
                self.home = h;
            }
            (None, Some(list)) => {
                let Some(first) = list.first() else {
                    return Err(invalid("hstore.local.homes", "empty list"));
                };
                if list.len() > 1 {
                    c.warnings.push(format!(
                        "config: {}: hstore.local.homes has {} entries; only the first ({first}) is used",
                        c.path,
                        list.len()
                    ));
                }
                self.home = first.clone();
            }
            (None, None) => {}
        }
        Ok(())
    }
}

impl DataConfig {
    const KEYS: &'static [&'static str] = &[
        "datafile_max_str",
        "flush_interval",
        "flush_wake_str",
        "bufio_cap_str",
        "check_vhash",
        "no_gc_days",
        "not_compress",
        "fsync",
        "fsync_interval_ms",
    ];

    fn set(&mut self, key: &str, v: &Value, c: &mut Ctx) -> Result<bool, ConfigError> {
        match key {
            "datafile_max_str" => {
                self.datafile_max_str = c.string("hstore.data.datafile_max_str", v)?
            }
            "flush_interval" => self.flush_interval = c.u64("hstore.data.flush_interval", v)?,
            "flush_wake_str" => self.flush_wake_str = c.string("hstore.data.flush_wake_str", v)?,
            "bufio_cap_str" => self.bufio_cap_str = c.string("hstore.data.bufio_cap_str", v)?,
            "check_vhash" => self.check_vhash = c.boolean("hstore.data.check_vhash", v)?,
            "no_gc_days" => self.no_gc_days = c.u32("hstore.data.no_gc_days", v)?,
            // Configured types are added to the defaults; their boolean is ignored.
            "not_compress" => match untag(v) {
                Value::Null => {}
                Value::Mapping(m) => self.not_compress.extend(m.keys().map(key_name)),
                Value::Sequence(_) => self
                    .not_compress
                    .extend(c.string_list("hstore.data.not_compress", v)?),
                other => return Err(c.type_err("hstore.data.not_compress", "a mapping", other)),
            },
            "fsync" => {
                self.fsync = match untag(v) {
                    // The zero value of the new key is its default.
                    Value::Null => FsyncPolicy::default(),
                    _ => c
                        .string("hstore.data.fsync", v)?
                        .parse()
                        .map_err(|m: String| invalid("hstore.data.fsync", m))?,
                }
            }
            "fsync_interval_ms" => {
                self.fsync_interval_ms = c.u64("hstore.data.fsync_interval_ms", v)?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl HintConfig {
    const KEYS: &'static [&'static str] = &[
        "hint_split_cap_str",
        "hint_index_interval_str",
        "hint_no_merged",
        "hint_merge_interval",
    ];

    fn set(&mut self, key: &str, v: &Value, c: &mut Ctx) -> Result<bool, ConfigError> {
        match key {
            "hint_split_cap_str" => {
                self.hint_split_cap_str = c.string("hstore.hint.hint_split_cap_str", v)?
            }
            "hint_index_interval_str" => {
                self.hint_index_interval_str = c.string("hstore.hint.hint_index_interval_str", v)?
            }
            "hint_no_merged" => self.hint_no_merged = c.boolean("hstore.hint.hint_no_merged", v)?,
            "hint_merge_interval" => {
                self.hint_merge_interval = c.u32("hstore.hint.hint_merge_interval", v)?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl HTreeConfig {
    const KEYS: &'static [&'static str] = &["tree_height", "tree_dump"];

    fn set(&mut self, key: &str, v: &Value, c: &mut Ctx) -> Result<bool, ConfigError> {
        match key {
            "tree_height" => self.tree_height = c.u32("hstore.htree.tree_height", v)?,
            "tree_dump" => self.tree_dump = c.u32("hstore.htree.tree_dump", v)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl GcConfig {
    const KEYS: &'static [&'static str] = &[
        "auto",
        "garbage_ratio",
        "disk_free_ratio",
        "window",
        "check_interval_s",
        "max_mb_per_sec",
    ];

    fn set(&mut self, key: &str, v: &Value, c: &mut Ctx) -> Result<bool, ConfigError> {
        match key {
            "auto" => self.auto = c.boolean("hstore.gc.auto", v)?,
            "garbage_ratio" => self.garbage_ratio = c.float("hstore.gc.garbage_ratio", v)?,
            "disk_free_ratio" => self.disk_free_ratio = c.float("hstore.gc.disk_free_ratio", v)?,
            "window" => self.window = c.string("hstore.gc.window", v)?,
            "check_interval_s" => self.check_interval_s = c.u64("hstore.gc.check_interval_s", v)?,
            "max_mb_per_sec" => self.max_mb_per_sec = c.u64("hstore.gc.max_mb_per_sec", v)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const ROUTE16: &str = "numbucket: 16\nmain:\n- addr: 127.0.0.1:7900\n  buckets: [\"0\", \"1\", \"2\", \"3\", \"4\", \"5\", \"6\", \"7\", \"8\", \"9\", a, b, c, d, e, f]\nbackup:\n- \"127.0.0.1:7989\"\n";

    const GLOBAL: &str = r#"
server:
  hostname: 127.0.0.1
  listen: 0.0.0.0
  port: 7900
  webport: 7903
  threads: 4
  errorlog: ./gobeansdb.log
  accesslog: ""
  staticdir: ./
  zkservers: []
  zkpath: ""
mc:
  max_key_len: 250
  max_req: 16
  body_max_str: 50M
  body_big_str: 5M
  body_c_str: 4K
  flush_max_str: 100M
hstore:
  local:
    home: ./testdb
  data:
    datafile_max_str: 4000M
    flush_interval: 60
    flush_wake_str: 10M
    check_vhash: true
    no_gc_days: 7
  hint:
    hint_no_merged: true
    hint_split_cap_str: 1M
    hint_index_interval_str: 32K
    hint_merge_interval: 5
  htree:
    tree_height: 3
"#;

    struct Dir {
        _tmp: tempfile::TempDir,
        path: PathBuf,
    }

    fn confdir(global: &str, local: Option<&str>, route: &str) -> Dir {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().to_path_buf();
        std::fs::write(path.join("global.yaml"), global).unwrap();
        if let Some(l) = local {
            std::fs::write(path.join("local.yaml"), l).unwrap();
        }
        std::fs::write(path.join("route.yaml"), route).unwrap();
        Dir { _tmp: tmp, path }
    }

    fn load(global: &str, local: Option<&str>, route: &str) -> Result<NodeConfig, ConfigError> {
        let d = confdir(global, local, route);
        NodeConfig::load(&d.path)
    }

    fn load_err(global: &str, local: Option<&str>, route: &str) -> String {
        load(global, local, route).unwrap_err().to_string()
    }

    #[test]
    fn embedded_defaults() {
        let c = NodeConfig::embedded_defaults();
        assert_eq!(c.addr(), "127.0.0.1:7900");
        assert_eq!(c.server.webport, 7903);
        assert_eq!(c.server.listen, "0.0.0.0");
        assert_eq!(c.server.threads, 4);
        assert_eq!(c.hstore.local.home, "./testdb");
        assert_eq!(c.route.numbucket, 16);
        assert_eq!(c.served_buckets(), vec![true; 16]);
        assert_eq!(c.mc.max_key_len, 250);
        assert_eq!(c.mc.body_max, 50 << 20);
        assert_eq!(c.mc.timeout_ms, 3000);
        assert_eq!(c.hstore.data.datafile_max, 4_194_304_000);
        assert_eq!(c.hstore.data.fsync, FsyncPolicy::Interval);
        assert_eq!(c.hstore.hint.hint_split_cap, 1 << 20);
        assert_eq!(c.hstore.htree.tree_height, 3);
        assert_eq!(c.tree_depth(), 1);
        assert_eq!(c.tree_key_hash_len(), 7);
        assert_eq!(c.tree_key_hash_mask(), 0x00ff_ffff_ffff_ffff);
        assert!(c.hstore.data.not_compress.contains("audio/wave"));
        assert_eq!(c.hstore.gc.max_mb_per_sec, 100);
        // The derived values of Default agree with re-deriving them from the strings.
        let mut again = c.clone();
        again.finish(&mut Vec::new()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn size_strings() {
        assert_eq!(parse_size(""), Some(0));
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("4000M"), Some(4_194_304_000));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("2g"), Some(2 << 30));
        assert_eq!(parse_size("7"), Some(7));
        assert_eq!(parse_size("2147483647"), Some(2_147_483_647));
        assert_eq!(parse_size("2147483648"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("5X"), None);
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("1.5M"), None);
        assert_eq!(parse_size(" 1M"), None);
    }

    #[test]
    fn gc_windows() {
        assert_eq!(parse_gc_window(""), Ok(None));
        assert_eq!(parse_gc_window("02:00-06:30"), Ok(Some((120, 390))));
        assert_eq!(parse_gc_window("22:00-4:00"), Ok(Some((1320, 240))));
        assert!(parse_gc_window("24:00-01:00").is_err());
        assert!(parse_gc_window("02:00").is_err());
        assert!(parse_gc_window("2-3").is_err());
        assert!(parse_gc_window("02:0-03:00").is_err());
    }

    #[test]
    fn global_sample() {
        let c = load(GLOBAL, None, ROUTE16).unwrap();
        assert_eq!(c.mc.body_big, 5 << 20);
        assert_eq!(c.hstore.data.flush_interval, 60);
        assert_eq!(c.hstore.data.flush_wake, 10 << 20);
        assert!(c.hstore.data.check_vhash);
        assert_eq!(c.hstore.data.no_gc_days, 7);
        assert!(c.hstore.hint.hint_no_merged);
        assert_eq!(c.hstore.hint.hint_index_interval, 32 << 10);
        assert_eq!(c.hstore.hint.hint_merge_interval, 5);
        // Keys not in the file keep their defaults.
        assert_eq!(c.hstore.data.bufio_cap, 1 << 20);
        assert_eq!(c.hstore.htree.tree_dump, 3);
        assert_eq!(c.hstore.gc, GcConfig::default());
        assert_eq!(c.served_buckets(), vec![true; 16]);
    }

    #[test]
    fn local_overrides_global_including_zero_and_false() {
        let local = "server:\n  hostname: 10.0.0.5\n  port: 7980\nhstore:\n  data:\n    check_vhash: false\n    no_gc_days: 0\n  hint:\n    hint_no_merged: no\n  local:\n    home: /data1/beansdb\n";
        let route = "numbucket: 16\nmain:\n- {addr: \"10.0.0.5:7980\", buckets: [0, 1, a]}\n";
        let c = load(GLOBAL, Some(local), route).unwrap();
        assert!(!c.hstore.data.check_vhash);
        assert_eq!(c.hstore.data.no_gc_days, 0);
        assert!(!c.hstore.hint.hint_no_merged);
        assert_eq!(c.hstore.local.home, "/data1/beansdb");
        assert_eq!(c.addr(), "10.0.0.5:7980");
        // Untouched global values survive the local layer.
        assert_eq!(c.hstore.data.flush_interval, 60);
        assert_eq!(c.mc.body_big_str, "5M");
        let served = c.served_buckets();
        assert_eq!(served.iter().filter(|&&b| b).count(), 3);
        assert!(served[0] && served[1] && served[10] && !served[2]);
        let j = c.config_json();
        assert_eq!(j["BucketsHex"], serde_json::json!(["0", "1", "a"]));
        assert_eq!(j["Buckets"][10], 1);
        assert_eq!(j["Buckets"][2], 0);
    }

    #[test]
    fn homes_alias() {
        let g = "mc: {max_key_len: 250}\nhstore:\n  local:\n    homes:\n    - /var/lib/beansdb\n";
        let d = confdir(g, None, ROUTE16);
        let (c, warnings) = NodeConfig::load_with_warnings(&d.path).unwrap();
        assert_eq!(c.hstore.local.home, "/var/lib/beansdb");
        assert!(warnings.is_empty(), "{warnings:?}");

        let g = "hstore:\n  local:\n    homes: [/d1, /d2]\n";
        let d = confdir(g, None, ROUTE16);
        let (c, warnings) = NodeConfig::load_with_warnings(&d.path).unwrap();
        assert_eq!(c.hstore.local.home, "/d1");
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("only the first (/d1)"), "{warnings:?}");

        // home wins over homes in the same file.
        let g = "hstore:\n  local:\n    home: /h\n    homes: [/d1]\n";
        let c = load(g, None, ROUTE16).unwrap();
        assert_eq!(c.hstore.local.home, "/h");

        let e = load_err("hstore:\n  local:\n    homes: []\n", None, ROUTE16);
        assert_eq!(e, "config: hstore.local.homes: empty list");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = load_err("mc:\n  body_max_str: 5X\n", None, ROUTE16);
        assert_eq!(
            e,
            "config: mc.body_max_str: bad size \"5X\": expected <int>[K|M|G] with a non-negative 32-bit int"
        );
        let e = load_err(
            "hstore:\n  data:\n    datafile_max_str: 3000000000\n",
            None,
            ROUTE16,
        );
        assert!(
            e.starts_with("config: hstore.data.datafile_max_str: bad size"),
            "{e}"
        );
        let e = load_err(
            "hstore:\n  data:\n    datafile_max_str: 4G\n",
            None,
            ROUTE16,
        );
        assert!(
            e.starts_with(
                "config: hstore.data.datafile_max_str: \"4G\" = 4294967296 bytes; must be"
            ),
            "{e}"
        );
        assert!(load(
            "hstore:\n  data:\n    datafile_max_str: 4095M\n",
            None,
            ROUTE16
        )
        .is_ok());

        let e = load_err("hstore:\n  htree:\n    tree_height: 8\n", None, ROUTE16);
        assert_eq!(
            e,
            "config: hstore.htree.tree_height: must be >= 2 and <= 7 (depth 1 for numbucket 16), got 8"
        );
        let e = load_err("hstore:\n  htree:\n    tree_height: 1\n", None, ROUTE16);
        assert!(
            e.starts_with("config: hstore.htree.tree_height: must be >= 2"),
            "{e}"
        );
        let route256 = "numbucket: 256\nmain:\n- {addr: \"127.0.0.1:7900\", buckets: [00, ff]}\n";
        let e = load_err("hstore:\n  htree:\n    tree_height: 7\n", None, route256);
        assert!(e.contains("<= 6 (depth 2 for numbucket 256), got 7"), "{e}");
        let route1 = "numbucket: 1\nmain:\n- {addr: \"127.0.0.1:7900\", buckets: [0]}\n";
        let c = load("hstore:\n  htree:\n    tree_height: 8\n", None, route1).unwrap();
        assert_eq!(c.tree_key_hash_len(), 5);

        let e = load_err("hstore:\n  data:\n    fsync: sometimes\n", None, ROUTE16);
        assert_eq!(
            e,
            "config: hstore.data.fsync: must be never, interval or always, got \"sometimes\""
        );
        let c = load("hstore:\n  data:\n    fsync: always\n", None, ROUTE16).unwrap();
        assert_eq!(c.hstore.data.fsync, FsyncPolicy::Always);

        let e = load_err("hstore:\n  gc:\n    window: 25:00-26:00\n", None, ROUTE16);
        assert!(e.starts_with("config: hstore.gc.window: bad window"), "{e}");
        let e = load_err("hstore:\n  gc:\n    garbage_ratio: 1.5\n", None, ROUTE16);
        assert_eq!(
            e,
            "config: hstore.gc.garbage_ratio: must be between 0 and 1, got 1.5"
        );

        let d = confdir("server:\n  port: seventy\n", None, ROUTE16);
        let e = NodeConfig::load(&d.path).unwrap_err().to_string();
        let g = d.path.join("global.yaml").display().to_string();
        assert_eq!(
            e,
            format!("config: {g}: server.port: expected a non-negative integer, got \"seventy\"")
        );
        let e = load_err("server:\n  port: 70000\n", None, ROUTE16);
        assert!(
            e.ends_with("server.port: expected a non-negative integer in range, got 70000"),
            "{e}"
        );
        let e = load_err("hstore:\n  data:\n    check_vhash: maybe\n", None, ROUTE16);
        assert!(
            e.ends_with("hstore.data.check_vhash: expected a boolean, got \"maybe\""),
            "{e}"
        );
        let e = load_err("mc: [1, 2]\n", None, ROUTE16);
        assert!(e.ends_with("mc: expected a mapping, got a list"), "{e}");
    }

    #[test]
    fn route_errors() {
        let e = load_err(GLOBAL, None, "numbucket: 8\nmain: []\n");
        assert_eq!(e, "route: numbucket must be 1, 16 or 256 (got 8)");
        let e = load_err(
            GLOBAL,
            None,
            "numbucket: 16\nmain:\n- {addr: \"127.0.0.1:7900\", buckets: [0, 10]}\n",
        );
        assert_eq!(
            e,
            "route: main[0] (127.0.0.1:7900): bucket 10 out of range for numbucket 16"
        );
        let e = load_err(
            GLOBAL,
            None,
            "numbucket: 16\nmain:\n- {addr: \"127.0.0.1:7900\", buckets: [g]}\n",
        );
        assert_eq!(
            e,
            "route: main[0] (127.0.0.1:7900): bad bucket \"g\": not a hex number"
        );
        let d = confdir(GLOBAL, None, ROUTE16);
        std::fs::remove_file(d.path.join("route.yaml")).unwrap();
        let e = NodeConfig::load(&d.path).unwrap_err().to_string();
        assert!(e.starts_with("route: cannot read "), "{e}");
    }

    #[test]
    fn missing_and_broken_files() {
        let tmp = tempfile::tempdir().unwrap();
        let e = NodeConfig::load(tmp.path()).unwrap_err().to_string();
        assert!(
            e.starts_with("config: cannot read ") && e.contains("global.yaml"),
            "{e}"
        );
        let e = load_err("server: {port: 1\n", None, ROUTE16);
        assert!(e.contains("global.yaml: invalid YAML at line "), "{e}");
        let e = load_err("- a\n", None, ROUTE16);
        assert!(
            e.ends_with("(top level): expected a mapping, got a list"),
            "{e}"
        );
        // An empty global.yaml is allowed (everything stays at its default).
        let c = load("# nothing\n", None, ROUTE16).unwrap();
        assert_eq!(c.server, ServerConfig::default());
    }

    #[test]
    fn empty_struct() {
        for bad in [
            "mc:\n  max_key_len: 0\n",
            "mc:\n",
            "hstore:\n  hint:\n    hint_split_cap_str: \"\"\n",
            "hstore:\n  htree:\n    tree_height: 0\n",
            "hstore:\n",
        ] {
            let d = confdir(bad, None, ROUTE16);
            let e = NodeConfig::load(&d.path).unwrap_err().to_string();
            let g = d.path.join("global.yaml").display().to_string();
            assert_eq!(e, format!("bad config: empty struct in {g}"), "{bad}");
        }
        // The check also runs after local.yaml.
        let d = confdir(
            GLOBAL,
            Some("hstore:\n  htree:\n    tree_height: 0\n"),
            ROUTE16,
        );
        let e = NodeConfig::load(&d.path).unwrap_err().to_string();
        let l = d.path.join("local.yaml").display().to_string();
        assert_eq!(e, format!("bad config: empty struct in {l}"));
    }

    #[test]
    fn unknown_keys_and_zookeeper_warn() {
        let g = "server:\n  zk: \"NO\"\n  zkservers: [zk1:2181]\n  zkpath: /gobeansdb/test\nextra: 1\nhstore:\n  data:\n    flush_max: 3\n  weird: {}\n";
        let d = confdir(g, None, ROUTE16);
        let (c, warnings) = NodeConfig::load_with_warnings(&d.path).unwrap();
        assert_eq!(c.server.zkservers, vec!["zk1:2181".to_string()]);
        assert_eq!(c.server.zkpath, "/gobeansdb/test");
        let all = warnings.join("\n");
        for needle in [
            "unknown key server.zk ignored",
            "unknown key extra ignored",
            "unknown key hstore.data.flush_max ignored",
            "unknown key hstore.weird ignored",
            "ZooKeeper is not supported",
        ] {
            assert!(all.contains(needle), "{needle} missing in {all}");
        }
    }

    #[test]
    fn node_not_in_route_serves_nothing() {
        let route = "numbucket: 16\nmain:\n- {addr: \"10.0.0.1:7900\", buckets: [0]}\n";
        let d = confdir(GLOBAL, None, route);
        let (c, warnings) = NodeConfig::load_with_warnings(&d.path).unwrap();
        assert_eq!(c.served_buckets(), vec![false; 16]);
        assert!(warnings
            .iter()
            .any(|w| w.contains("not listed in route.yaml")));
        // A backup address serves every bucket.
        let route = "numbucket: 16\nmain:\n- {addr: \"10.0.0.1:7900\", buckets: [0]}\nbackup: [\"127.0.0.1:7900\"]\n";
        let c = load(GLOBAL, None, route).unwrap();
        assert_eq!(c.served_buckets(), vec![true; 16]);
    }

    #[test]
    fn not_compress_is_additive() {
        let g = "hstore:\n  data:\n    not_compress: {image/jpeg: true, audio/wave: false}\n";
        let l = "hstore:\n  data:\n    not_compress:\n      video/mp4: false\n";
        let c = load(g, Some(l), ROUTE16).unwrap();
        let got: Vec<&str> = c
            .hstore
            .data
            .not_compress
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(
            got,
            vec!["audio/mpeg", "audio/wave", "image/jpeg", "video/mp4"]
        );
        let j = c.config_json();
        assert_eq!(j["NotCompress"]["video/mp4"], true);
    }

    /// Settings of the gobeansdb fixture home (16 buckets, height 3, check_vhash, 1M chunks).
    #[test]
    fn fixture_like_confdir() {
        let g = r#"
server:
  hostname: 127.0.0.1
  port: 7900
  webport: 7903
  errorlog: ./gobeansdb.log
mc:
  max_key_len: 250
  max_req: 16
  body_max_str: 50M
hstore:
  local:
    home: ./home
  data:
    datafile_max_str: 1M
    flush_interval: 1
    check_vhash: true
  hint:
    hint_split_cap_str: 1M
    hint_index_interval_str: 4K
  htree:
    tree_height: 3
"#;
        let c = load(g, None, ROUTE16).unwrap();
        assert_eq!(c.hstore.data.datafile_max, 1 << 20);
        assert_eq!(c.hstore.data.flush_interval, 1);
        assert!(c.hstore.data.check_vhash);
        assert_eq!(c.hstore.local.home, "./home");
        assert_eq!(c.route.numbucket, 16);
        assert_eq!(c.served_buckets(), vec![true; 16]);
        assert_eq!(c.tree_key_hash_len(), 7);
    }

    #[test]
    fn dump_reloads_to_equal_config() {
        let local = "server:\n  zkservers: [\"zk1:2181\", \"zk2:2181\"]\n  accesslog: ./access.log\nhstore:\n  data:\n    fsync: never\n    not_compress: {image/png: true}\n    flush_wake_str: 0\n  gc:\n    auto: true\n    window: \"01:00-05:00\"\n    garbage_ratio: 0.3\n    max_mb_per_sec: 0\n";
        let original = load(GLOBAL, Some(local), ROUTE16).unwrap();
        let dump = original.dump_yaml();
        assert!(dump.starts_with("server:\n"), "{dump}");
        assert!(
            dump.contains("\nmc:\n") && dump.contains("\nhstore:\n"),
            "{dump}"
        );
        assert!(dump.contains("fsync: never"), "{dump}");
        let d = confdir(&dump, None, &original.route.to_yaml());
        let (reloaded, warnings) = NodeConfig::load_with_warnings(&d.path).unwrap();
        assert_eq!(reloaded, original);
        assert!(
            warnings.iter().all(|w| !w.contains("unknown key")),
            "{warnings:?}"
        );

        let defaults = NodeConfig::embedded_defaults();
        let d = confdir(&defaults.dump_yaml(), None, &defaults.route.to_yaml());
        assert_eq!(NodeConfig::load(&d.path).unwrap(), defaults);
    }

    #[test]
    fn config_json_fields() {
        let c = load(GLOBAL, None, ROUTE16).unwrap();
        let j = c.config_json();
        for key in [
            "Hostname",
            "ZKPath",
            "ZKServers",
            "Listen",
            "Port",
            "WebPort",
            "Threads",
            "ErrorLog",
            "AccessLog",
            "AnalysisLog",
            "StaticDir",
            "MaxKeyLen",
            "MaxReq",
            "BodyMax",
            "BodyBig",
            "BodyInC",
            "FlushMax",
            "FlushMaxStr",
            "BodyMaxStr",
            "BodyBigStr",
            "BodyInCStr",
            "TimeoutMS",
            "NumBucket",
            "Buckets",
            "BucketsHex",
            "Home",
            "FlushWake",
            "DataFileMax",
            "CheckVHash",
            "FlushInterval",
            "NoGCDays",
            "FlushWakeStr",
            "DataFileMaxStr",
            "BufIOCap",
            "BufIOCapStr",
            "NotCompress",
            "NoMerged",
            "MergeInterval",
            "IndexIntervalSize",
            "SplitCap",
            "SplitCapStr",
            "IndexIntervalSizeStr",
            "TreeHeight",
            "TreeDump",
            "TreeDepth",
            "TreeKeyHashMask",
            "TreeKeyHashLen",
            "Fsync",
            "FsyncIntervalMS",
            "GC",
        ] {
            assert!(j.get(key).is_some(), "missing {key}");
        }
        assert_eq!(j["Port"], 7900);
        assert_eq!(j["BodyBig"], 5 << 20);
        assert_eq!(j["DataFileMax"], 4_194_304_000u64);
        assert_eq!(j["NumBucket"], 16);
        assert_eq!(j["Buckets"].as_array().unwrap().len(), 16);
        assert_eq!(j["BucketsHex"][15], "f");
        assert_eq!(j["TreeDepth"], 1);
        assert_eq!(j["TreeKeyHashLen"], 7);
        assert_eq!(j["TreeKeyHashMask"], 0x00ff_ffff_ffff_ffffu64);
        assert_eq!(j["Fsync"], "interval");
        assert_eq!(j["GC"]["GarbageRatio"], 0.5);
        assert_eq!(j["GC"]["MaxMBPerSec"], 100);
        assert_eq!(j["CheckVHash"], true);
        assert_eq!(j["IndexIntervalSize"], 32 << 10);
    }

    #[test]
    fn secrets_never_printed() {
        let mut c = NodeConfig::embedded_defaults();
        c.server.zkservers = vec!["digest:alice:s3cret@zk1:2181".into(), "zk2:2181".into()];
        let j = c.config_json();
        let text = j.to_string();
        assert!(!text.contains("s3cret"), "{text}");
        assert_eq!(j["ZKServers"][1], "zk2:2181");
        let mut v = serde_json::json!({"Password": "hunter2", "DbToken": "", "Nested": {"api_key": "k"}, "Addr": "127.0.0.1:7900", "Mail": "a@b"});
        redact_secrets(&mut v);
        assert_eq!(v["Password"], "<redacted>");
        assert_eq!(v["DbToken"], "");
        assert_eq!(v["Nested"]["api_key"], "<redacted>");
        assert_eq!(v["Addr"], "127.0.0.1:7900");
        assert_eq!(v["Mail"], "a@b");
    }
}
