//! The `cassandra:` section of proxy.yaml (spec cassandra.md §3) and its validation.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use scylla::statement::Consistency;
use serde::{Deserialize, Serialize, Serializer};

use crate::error::CassandraError;

/// Native-protocol port used when a host has none.
pub const DEFAULT_PORT: u16 = 9042;

/// The five per-prefix statuses (spec §4.1), in the order the error messages list them.
pub const STATUSES: [&str; 5] = [
    "br1w1cr0w0",
    "br1w1cr0w1",
    "br0w1cr1w1",
    "br0w0cr1w1",
    "br0w0cr1w0",
];

/// Accepted `consistency` values (gocql names), listed in error messages.
pub const CONSISTENCIES: [&str; 8] = [
    "one",
    "two",
    "three",
    "quorum",
    "all",
    "local_quorum",
    "each_quorum",
    "local_one",
];

/// A password: kept out of `Debug`, and serialized redacted so `/config/` and `-dumpconf`
/// never show it. There is deliberately no `Display`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The clear text, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"<redacted>\"")
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "<redacted>" })
    }
}

/// `prefix_rw_dispatcher_cfg` / `prefix_table_dispatcher_cfg`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct DispatcherCfg {
    pub enable: bool,
    /// status (or table) → prefixes.
    #[serde(rename = "static")]
    pub static_: BTreeMap<String, Vec<String>>,
    pub cfg_table: String,
    pub cfg_keyspace: String,
    pub refresh_interval_sec: u64,
}

/// `dual_write_err_cfg`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct DualWriteErrCfg {
    pub dump_to_dir: String,
    pub log_file_name: String,
    pub logger_level: String,
    pub rotate_size_mb: u64,
    pub compress: bool,
    pub max_ages: u64,
    pub max_backups: u64,
}

impl Default for DualWriteErrCfg {
    fn default() -> Self {
        DualWriteErrCfg {
            dump_to_dir: String::new(),
            log_file_name: "dual_write_err.log".into(),
            logger_level: "INFO".into(),
            rotate_size_mb: 100,
            compress: false,
            max_ages: 7,
            max_backups: 100,
        }
    }
}

/// `shadow_read`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ShadowReadCfg {
    pub enable: bool,
    pub ratio: f64,
    pub prefixes: Vec<String>,
    pub max_inflight: usize,
    pub recheck_delay_ms: u64,
    pub mismatch_log: String,
}

impl Default for ShadowReadCfg {
    fn default() -> Self {
        ShadowReadCfg {
            enable: false,
            ratio: 0.01,
            prefixes: Vec::new(),
            max_inflight: 64,
            recheck_delay_ms: 500,
            mismatch_log: String::new(),
        }
    }
}

/// The whole `cassandra:` section with the defaults of spec §3.1. Unknown keys are ignored so
/// gobeansproxy's sample files stay valid.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct CassandraConfig {
    pub enable: bool,
    pub hosts: Vec<String>,
    pub default_key_space: String,
    pub default_table: String,
    pub timeout_ms: u64,
    pub write_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub retry_num: u32,
    pub reconnect_interval_sec: u64,
    pub num_conns: usize,
    pub max_conn_for_getm: usize,
    pub username: String,
    pub password: Secret,
    pub password_file: String,
    pub consistency: String,
    pub default_storage: String,
    pub prefix_rw_dispatcher_cfg: DispatcherCfg,
    pub prefix_table_dispatcher_cfg: DispatcherCfg,
    pub dual_write_err_cfg: DualWriteErrCfg,
    pub shadow_read: ShadowReadCfg,
}

impl Default for CassandraConfig {
    fn default() -> Self {
        CassandraConfig {
            enable: false,
            hosts: Vec::new(),
            default_key_space: String::new(),
            default_table: String::new(),
            timeout_ms: 1000,
            write_timeout_ms: 1000,
            connect_timeout_ms: 3000,
            retry_num: 3,
            reconnect_interval_sec: 180,
            num_conns: 10,
            max_conn_for_getm: 16,
            username: String::new(),
            password: Secret::default(),
            password_file: String::new(),
            consistency: String::new(),
            default_storage: String::new(),
            prefix_rw_dispatcher_cfg: DispatcherCfg::default(),
            prefix_table_dispatcher_cfg: DispatcherCfg::default(),
            dual_write_err_cfg: DualWriteErrCfg::default(),
            shadow_read: ShadowReadCfg::default(),
        }
    }
}

/// Credentials resolved from `username` / `password` / `password_file`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

fn cfg_err(msg: String) -> CassandraError {
    CassandraError::Config(msg)
}

impl CassandraConfig {
    /// Contact points as `host:port` (port 9042 added when missing).
    pub fn contact_points(&self) -> Result<Vec<String>, CassandraError> {
        if self.hosts.is_empty() {
            return Err(cfg_err("config: cassandra.hosts is empty".into()));
        }
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                normalize_host(h).ok_or_else(|| {
                    cfg_err(format!("config: cassandra.hosts[{i}]: bad address {h:?}"))
                })
            })
            .collect()
    }

    /// The parsed `consistency` (`""` = quorum).
    pub fn consistency(&self) -> Result<Consistency, CassandraError> {
        parse_consistency(&self.consistency).ok_or_else(|| {
            cfg_err(format!(
                "config: cassandra.consistency: unknown value {:?} (valid: {})",
                self.consistency,
                CONSISTENCIES.join(", ")
            ))
        })
    }

    pub fn select_timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Credentials when `username` is set. `password_file` wins over `password`; one trailing
    /// newline (`\n` or `\r\n`) is stripped because editors and `echo` add one.
    pub fn credentials(&self) -> Result<Option<Credentials>, CassandraError> {
        if self.username.is_empty() {
            return Ok(None);
        }
        let password = if self.password_file.is_empty() {
            self.password.clone()
        } else {
            Secret(read_password_file(Path::new(&self.password_file))?)
        };
        Ok(Some(Credentials {
            username: self.username.clone(),
            password,
        }))
    }

    /// Startup checks of spec §3.2 that need no Cassandra and no other proxy section: hosts,
    /// names, `default_storage`, consistency, numbers, password file. Returns the warnings.
    /// The dispatcher and error-log checks belong to the proxy, which knows `dstore`.
    pub fn validate(&self) -> Result<Vec<String>, CassandraError> {
        let mut warnings = Vec::new();
        self.contact_points()?;
        for (key, value) in [
            ("default_key_space", &self.default_key_space),
            ("default_table", &self.default_table),
        ] {
            if value.is_empty() {
                return Err(cfg_err(format!("config: cassandra.{key} is required")));
            }
            if !valid_name(value) {
                return Err(cfg_err(format!(
                    "config: cassandra.{key}: bad name {value:?} (letters, digits, _; max 48)"
                )));
            }
        }
        if self.default_storage.is_empty() {
            return Err(cfg_err(
                "config: cassandra.default_storage is required".into(),
            ));
        }
        if !STATUSES.contains(&self.default_storage.as_str()) {
            return Err(cfg_err(format!(
                "config: cassandra.default_storage: unknown status {:?} (valid: {})",
                self.default_storage,
                STATUSES.join(", ")
            )));
        }
        self.consistency()?;
        if self.max_conn_for_getm < 1 {
            return Err(cfg_err(
                "config: cassandra.max_conn_for_getm must be ≥ 1".into(),
            ));
        }
        for (key, value) in [
            ("timeout_ms", self.timeout_ms),
            ("write_timeout_ms", self.write_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
        ] {
            if value == 0 {
                return Err(cfg_err(format!("config: cassandra.{key} must be > 0")));
            }
        }
        if self.num_conns < 1 {
            return Err(cfg_err("config: cassandra.num_conns must be ≥ 1".into()));
        }
        let ratio = self.shadow_read.ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(cfg_err(
                "config: cassandra.shadow_read.ratio must be between 0 and 1".into(),
            ));
        }
        if !self.password_file.is_empty() {
            read_password_file(Path::new(&self.password_file))?;
            if !self.password.is_empty() {
                warnings.push(
                    "config: cassandra.password and cassandra.password_file are both set; \
                     using password_file"
                        .to_string(),
                );
            }
        }
        Ok(warnings)
    }
}

/// Reads a password file, stripping one trailing `\n` or `\r\n`.
pub fn read_password_file(path: &Path) -> Result<String, CassandraError> {
    let mut s = std::fs::read_to_string(path).map_err(|e| {
        cfg_err(format!(
            "config: cassandra.password_file: cannot read {}: {e}",
            path.display()
        ))
    })?;
    if s.ends_with("\r\n") {
        s.truncate(s.len() - 2);
    } else if s.ends_with('\n') {
        s.truncate(s.len() - 1);
    }
    Ok(s)
}

/// Keyspace and table names: `[A-Za-z][A-Za-z0-9_]{0,47}` (unquoted CQL identifiers, so they
/// can be put into statements without escaping).
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 48
        && b[0].is_ascii_alphabetic()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// `consistency` value → driver consistency; `""` is quorum, case is ignored (as gocql).
pub fn parse_consistency(s: &str) -> Option<Consistency> {
    Some(match s.to_ascii_lowercase().as_str() {
        "" | "quorum" => Consistency::Quorum,
        "one" => Consistency::One,
        "two" => Consistency::Two,
        "three" => Consistency::Three,
        "all" => Consistency::All,
        "local_quorum" => Consistency::LocalQuorum,
        "each_quorum" => Consistency::EachQuorum,
        "local_one" => Consistency::LocalOne,
        _ => return None,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` → `host:port`; None when malformed.
pub fn normalize_host(h: &str) -> Option<String> {
    let h = h.trim();
    if h.is_empty() {
        return None;
    }
    let (host, port) = if let Some(rest) = h.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if v6.is_empty() {
            return None;
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{v6}]"), port)
    } else {
        match h.split_once(':') {
            // A second colon without brackets is an unbracketed IPv6 address: ambiguous.
            Some((host, port)) if !port.contains(':') => (host.to_string(), Some(port)),
            Some(_) => return None,
            None => (h.to_string(), None),
        }
    };
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c == '/' || c == '@')
    {
        return None;
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return None,
        },
    };
    Some(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> CassandraConfig {
        CassandraConfig {
            enable: true,
            hosts: vec!["127.0.0.1:9042".into()],
            default_key_space: "doubandb".into(),
            default_table: "kvstore".into(),
            default_storage: "br1w1cr0w0".into(),
            ..CassandraConfig::default()
        }
    }

    fn err(c: &CassandraConfig) -> String {
        c.validate()
            .expect_err("config should be rejected")
            .to_string()
    }

    #[test]
    fn defaults_match_spec() {
        let c = CassandraConfig::default();
        assert_eq!(c.timeout_ms, 1000);
        assert_eq!(c.write_timeout_ms, 1000);
        assert_eq!(c.connect_timeout_ms, 3000);
        assert_eq!(c.retry_num, 3);
        assert_eq!(c.num_conns, 10);
        assert_eq!(c.max_conn_for_getm, 16);
        assert_eq!(c.dual_write_err_cfg.log_file_name, "dual_write_err.log");
        assert_eq!(c.shadow_read.ratio, 0.01);
        assert_eq!(c.consistency().ok(), Some(Consistency::Quorum));
    }

    #[test]
    fn gobeansproxy_sample_parses() {
        let yaml = r#"
enable: true
default_key_space: doubandb
default_table: kvstore
hosts: [127.0.0.1:9042]
timeout_ms: 1000
connect_timeout_ms: 3000
write_timeout_ms: 1000
retry_num: 3
reconnect_interval_sec: 180
max_conn_for_getm: 10
num_conns: 10
username: "doubandb_test"
password: "doubandb_test"
consistency: "local_one"
prefix_table_dispatcher_cfg:
  enable: true
  static:
    kvstore_ark: ["/ark"]
  cfg_table: bdb_prefix_table_finder
  cfg_keyspace: doubandb
prefix_rw_dispatcher_cfg:
  enable: true
  static:
    br1w1cr0w1: ["/test_prefix_c/", "/test_prefix_d/"]
    br0w0cr1w1: ["test_"]
  cfg_table: bdb_prefix_rw_switcher
  cfg_keyspace: doubandb
default_storage: "br1w1cr0w0"
dual_write_err_cfg:
  dump_to_dir: /tmp/
  log_file_name: "dual_write_err.log"
  logger_level: "INFO"
  rotate_size_mb: 100
  compress: true
  max_ages: 7
  max_backups: 100
"#;
        let c: CassandraConfig = serde_norway::from_str(yaml).expect("sample parses");
        assert!(c.validate().expect("valid").is_empty());
        assert_eq!(c.consistency().ok(), Some(Consistency::LocalOne));
        assert_eq!(c.prefix_rw_dispatcher_cfg.static_["br0w0cr1w1"], ["test_"]);
        assert_eq!(c.password.expose(), "doubandb_test");
    }

    #[test]
    fn hosts() {
        assert_eq!(normalize_host("10.0.0.1").as_deref(), Some("10.0.0.1:9042"));
        assert_eq!(normalize_host("db:9142").as_deref(), Some("db:9142"));
        assert_eq!(normalize_host("[::1]").as_deref(), Some("[::1]:9042"));
        assert_eq!(normalize_host("[::1]:7").as_deref(), Some("[::1]:7"));
        for bad in [
            "", ":9042", "h:", "h:0", "h:70000", "::1", "[::1", "[]:1", "a b:1",
        ] {
            assert_eq!(normalize_host(bad), None, "{bad:?}");
        }
        let mut c = valid();
        c.hosts.clear();
        assert_eq!(err(&c), "config: cassandra.hosts is empty");
        c.hosts = vec!["ok".into(), "x:y".into()];
        assert_eq!(err(&c), "config: cassandra.hosts[1]: bad address \"x:y\"");
    }

    #[test]
    fn names_and_status() {
        let mut c = valid();
        c.default_table.clear();
        assert_eq!(err(&c), "config: cassandra.default_table is required");
        c.default_table = "1bad".into();
        assert_eq!(
            err(&c),
            "config: cassandra.default_table: bad name \"1bad\" (letters, digits, _; max 48)"
        );
        assert!(valid_name(&"a".repeat(48)));
        assert!(!valid_name(&"a".repeat(49)));
        assert!(!valid_name("a-b"));
        let mut c = valid();
        c.default_storage = "brw".into();
        assert!(err(&c).starts_with("config: cassandra.default_storage: unknown status \"brw\""));
        c.default_storage.clear();
        assert_eq!(err(&c), "config: cassandra.default_storage is required");
    }

    #[test]
    fn consistency_and_numbers() {
        let mut c = valid();
        c.consistency = "LOCAL_QUORUM".into();
        assert!(c.validate().is_ok());
        c.consistency = "quorom".into();
        assert_eq!(
            err(&c),
            "config: cassandra.consistency: unknown value \"quorom\" (valid: one, two, three, \
             quorum, all, local_quorum, each_quorum, local_one)"
        );
        let mut c = valid();
        c.max_conn_for_getm = 0;
        assert_eq!(err(&c), "config: cassandra.max_conn_for_getm must be ≥ 1");
        let mut c = valid();
        c.write_timeout_ms = 0;
        assert_eq!(err(&c), "config: cassandra.write_timeout_ms must be > 0");
        let mut c = valid();
        c.num_conns = 0;
        assert_eq!(err(&c), "config: cassandra.num_conns must be ≥ 1");
        let mut c = valid();
        c.shadow_read.ratio = 1.5;
        assert_eq!(
            err(&c),
            "config: cassandra.shadow_read.ratio must be between 0 and 1"
        );
    }

    #[test]
    fn password_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pass");
        let mut c = valid();
        c.username = "u".into();
        c.password = Secret::new("inline");
        c.password_file = path.display().to_string();
        let e = err(&c);
        assert!(
            e.starts_with(&format!(
                "config: cassandra.password_file: cannot read {}: ",
                path.display()
            )),
            "{e}"
        );
        for (content, want) in [
            ("s3cret\n", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            ("s3cret", "s3cret"),
            ("s3cret\n\n", "s3cret\n"),
        ] {
            std::fs::write(&path, content).expect("write");
            let creds = c.credentials().expect("ok").expect("some");
            assert_eq!(creds.password.expose(), want);
        }
        assert_eq!(
            c.validate().expect("valid").len(),
            1,
            "both set → a warning"
        );
        c.username.clear();
        assert_eq!(c.credentials().expect("ok"), None);
    }

    #[test]
    fn secret_never_shown() {
        let mut c = valid();
        c.username = "u".into();
        c.password = Secret::new("hunter2-pw");
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2-pw"), "{debug}");
        assert!(debug.contains("<redacted>"));
        let yaml = serde_norway::to_string(&c).expect("serialize");
        assert!(!yaml.contains("hunter2-pw"), "{yaml}");
        let creds = c.credentials().expect("ok").expect("some");
        assert!(!format!("{creds:?}").contains("hunter2-pw"));
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
    }
}
