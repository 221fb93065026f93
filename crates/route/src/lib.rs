//! `route.yaml` of gobeansdb / gobeansproxy: parsing, validation and the node's `/route/` dump.
//!
//! ```yaml
//! numbucket: 16                 # 1, 16 or 256
//! main:
//! - addr: 127.0.0.1:7900
//!   buckets: ["0", "1", a, b]   # hex ids; a plain `10` is bucket 0x10
//! backup:
//! - 127.0.0.1:7989              # a backup serves every bucket
//! ```
//!
//! [`Route::parse`] checks what both servers need (numbucket, addresses present, bucket ids hex
//! and in range); [`Route::validate_for_proxy`] adds the proxy's stricter rules.

use std::fmt;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

/// The bucket counts gobeansdb supports.
pub const VALID_NUMBUCKETS: [usize; 3] = [1, 16, 256];

/// One `main` entry: a host and the buckets it owns, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteServer {
    pub addr: String,
    pub buckets: Vec<usize>,
}

/// A parsed `route.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub numbucket: usize,
    pub main: Vec<RouteServer>,
    /// Every backup serves all buckets.
    pub backup: Vec<String>,
}

/// Route errors; messages follow proxy.md §3.2 (`route: …`).
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("route: cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("route: {}invalid YAML{at}: {detail}", path_prefix(.path))]
    Yaml {
        path: Option<String>,
        /// ` at line L column C`, or empty when the parser gave no position.
        at: String,
        detail: String,
    },
    #[error("route: numbucket must be 1, 16 or 256 (got {got})")]
    NumBucket { got: String },
    #[error("route: no main hosts")]
    NoMain,
    #[error("route: {list}[{index}]: addr is required")]
    MissingAddr { list: &'static str, index: usize },
    #[error("route: {list}[{index}]: bad addr \"{addr}\": expected host:port")]
    BadAddr {
        list: &'static str,
        index: usize,
        addr: String,
    },
    #[error("route: main[{index}]: duplicate addr {addr} (also main[{first}])")]
    DuplicateMain {
        index: usize,
        addr: String,
        first: usize,
    },
    /// `other` is `main[J]` or `backup[J]`.
    #[error("route: backup[{index}]: {addr} is already listed ({other})")]
    DuplicateBackup {
        index: usize,
        addr: String,
        other: String,
    },
    #[error("route: main[{index}] ({addr}): bad bucket \"{text}\": not a hex number")]
    BadBucket {
        index: usize,
        addr: String,
        text: String,
    },
    #[error("route: main[{index}] ({addr}): bucket {text} out of range for numbucket {numbucket}")]
    BucketOutOfRange {
        index: usize,
        addr: String,
        text: String,
        numbucket: usize,
    },
    #[error("route: main[{index}] ({addr}): bucket {bucket} listed twice")]
    BucketTwice {
        index: usize,
        addr: String,
        bucket: String,
    },
    #[error("route: bucket {bucket} has no main host")]
    BucketNoMain { bucket: String },
    #[error("route: bucket {bucket} has {mains} main hosts but dstore.n is {n}")]
    TooFewMains {
        bucket: String,
        mains: usize,
        n: usize,
    },
}

fn path_prefix(path: &Option<String>) -> String {
    match path {
        Some(p) => format!("{p}: "),
        None => String::new(),
    }
}

impl RouteError {
    fn with_path(self, path: &str) -> RouteError {
        match self {
            RouteError::Yaml { at, detail, .. } => RouteError::Yaml {
                path: Some(path.to_string()),
                at,
                detail,
            },
            other => other,
        }
    }
}

/// Bucket id as gobeansdb prints it: `%x` for 16 buckets, `%02x` for 256, `0` for 1.
pub fn bucket_hex(bucket: usize, numbucket: usize) -> String {
    if numbucket > 16 {
        format!("{bucket:02x}")
    } else {
        format!("{bucket:x}")
    }
}

/// Number of hex digits of a bucket id: 0, 1 or 2 for 1, 16 or 256 buckets.
pub fn depth_of(numbucket: usize) -> u32 {
    let mut n = numbucket;
    let mut depth = 0;
    while n > 1 {
        depth += 1;
        n /= 16;
    }
    depth
}

impl Route {
    /// Parse and validate route text; warnings (unknown keys) are logged.
    pub fn parse(text: &str) -> Result<Route, RouteError> {
        let (route, warnings) = Route::parse_with_warnings(text)?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        Ok(route)
    }

    /// Like [`Route::parse`], but hands the warnings back instead of logging them (a caller may
    /// need to parse before logging is set up).
    pub fn parse_with_warnings(text: &str) -> Result<(Route, Vec<String>), RouteError> {
        let raw: Option<RawRoute> = serde_norway::from_str(text).map_err(yaml_error)?;
        // An empty document is a route without numbucket.
        let raw = raw.unwrap_or_default();
        let mut warnings: Vec<String> = raw
            .unknown
            .iter()
            .map(|k| format!("route: unknown key {k} ignored"))
            .collect();

        let numbucket = match &raw.numbucket {
            None => {
                return Err(RouteError::NumBucket {
                    got: "nothing".to_string(),
                })
            }
            Some(s) => match s.0.trim().parse::<usize>() {
                Ok(n) if VALID_NUMBUCKETS.contains(&n) => n,
                _ => return Err(RouteError::NumBucket { got: s.0.clone() }),
            },
        };

        let mut main = Vec::with_capacity(raw.main.len());
        for (index, server) in raw.main.into_iter().enumerate() {
            for k in &server.unknown {
                warnings.push(format!("route: main[{index}]: unknown key {k} ignored"));
            }
            let addr = match server.addr {
                Some(a) if !a.0.trim().is_empty() => a.0.trim().to_string(),
                _ => {
                    return Err(RouteError::MissingAddr {
                        list: "main",
                        index,
                    })
                }
            };
            let mut buckets = Vec::with_capacity(server.buckets.len());
            for text in server.buckets {
                buckets.push(parse_bucket(&text.0, numbucket).map_err(|kind| match kind {
                    BucketErr::NotHex => RouteError::BadBucket {
                        index,
                        addr: addr.clone(),
                        text: text.0.clone(),
                    },
                    BucketErr::Range => RouteError::BucketOutOfRange {
                        index,
                        addr: addr.clone(),
                        text: text.0.trim().to_string(),
                        numbucket,
                    },
                })?);
            }
            main.push(RouteServer { addr, buckets });
        }

        let mut backup = Vec::with_capacity(raw.backup.len());
        for (index, addr) in raw.backup.into_iter().enumerate() {
            let addr = addr.0.trim().to_string();
            if addr.is_empty() {
                return Err(RouteError::MissingAddr {
                    list: "backup",
                    index,
                });
            }
            backup.push(addr);
        }

        Ok((
            Route {
                numbucket,
                main,
                backup,
            },
            warnings,
        ))
    }

    /// Read and parse a route file; warnings are logged.
    pub fn load(path: &Path) -> Result<Route, RouteError> {
        let (route, warnings) = Route::load_with_warnings(path)?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        Ok(route)
    }

    /// Read and parse a route file, returning its warnings.
    pub fn load_with_warnings(path: &Path) -> Result<(Route, Vec<String>), RouteError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RouteError::Read {
            path: shown.clone(),
            source,
        })?;
        Route::parse_with_warnings(&text).map_err(|e| e.with_path(&shown))
    }

    /// One node serving every bucket (the embedded default route).
    pub fn all_local(addr: &str, numbucket: usize) -> Route {
        Route {
            numbucket,
            main: vec![RouteServer {
                addr: addr.to_string(),
                buckets: (0..numbucket).collect(),
            }],
            backup: Vec::new(),
        }
    }

    /// Hex digits of a bucket id: 0, 1 or 2.
    pub fn depth(&self) -> u32 {
        depth_of(self.numbucket)
    }

    /// Bucket id formatted for messages, paths and JSON keys.
    pub fn bucket_hex(&self, bucket: usize) -> String {
        bucket_hex(bucket, self.numbucket)
    }

    /// Whether `addr` appears in `main` or `backup`.
    pub fn has_addr(&self, addr: &str) -> bool {
        self.main.iter().any(|s| s.addr == addr) || self.backup.iter().any(|b| b == addr)
    }

    /// Node view: `numbucket` flags, true for the buckets listed for `addr`; a backup address
    /// serves every bucket. An address not in the route serves nothing.
    pub fn served_by(&self, addr: &str) -> Vec<bool> {
        if self.backup.iter().any(|b| b == addr) {
            return vec![true; self.numbucket];
        }
        let mut served = vec![false; self.numbucket];
        for server in self.main.iter().filter(|s| s.addr == addr) {
            for &b in &server.buckets {
                if let Some(flag) = served.get_mut(b) {
                    *flag = true;
                }
            }
        }
        served
    }

    /// Main hosts owning `bucket`, in file order.
    pub fn mains(&self, bucket: usize) -> Vec<&str> {
        self.main
            .iter()
            .filter(|s| s.buckets.contains(&bucket))
            .map(|s| s.addr.as_str())
            .collect()
    }

    /// The proxy's extra checks (proxy.md §3.2) for `n` replicas per key. Returns the warnings
    /// (hosts owning no bucket).
    pub fn validate_for_proxy(&self, n: usize) -> Result<Vec<String>, RouteError> {
        if self.main.is_empty() {
            return Err(RouteError::NoMain);
        }
        let mut warnings = Vec::new();
        for (index, server) in self.main.iter().enumerate() {
            if !is_host_port(&server.addr) {
                return Err(RouteError::BadAddr {
                    list: "main",
                    index,
                    addr: server.addr.clone(),
                });
            }
            if let Some(first) = self.main[..index]
                .iter()
                .position(|s| s.addr == server.addr)
            {
                return Err(RouteError::DuplicateMain {
                    index,
                    addr: server.addr.clone(),
                    first,
                });
            }
            let mut seen = vec![false; self.numbucket];
            for &b in &server.buckets {
                // parse() guarantees b < numbucket; a hand-built Route is checked here too.
                let Some(flag) = seen.get_mut(b) else {
                    return Err(RouteError::BucketOutOfRange {
                        index,
                        addr: server.addr.clone(),
                        text: self.bucket_hex(b),
                        numbucket: self.numbucket,
                    });
                };
                if *flag {
                    return Err(RouteError::BucketTwice {
                        index,
                        addr: server.addr.clone(),
                        bucket: self.bucket_hex(b),
                    });
                }
                *flag = true;
            }
            if server.buckets.is_empty() {
                warnings.push(format!(
                    "route: main[{index}] ({}) owns no bucket",
                    server.addr
                ));
            }
        }
        for (index, addr) in self.backup.iter().enumerate() {
            if !is_host_port(addr) {
                return Err(RouteError::BadAddr {
                    list: "backup",
                    index,
                    addr: addr.clone(),
                });
            }
            let other = if let Some(j) = self.main.iter().position(|s| &s.addr == addr) {
                Some(format!("main[{j}]"))
            } else {
                self.backup[..index]
                    .iter()
                    .position(|b| b == addr)
                    .map(|j| format!("backup[{j}]"))
            };
            if let Some(other) = other {
                return Err(RouteError::DuplicateBackup {
                    index,
                    addr: addr.clone(),
                    other,
                });
            }
        }
        for bucket in 0..self.numbucket {
            let mains = self.mains(bucket).len();
            if mains == 0 {
                return Err(RouteError::BucketNoMain {
                    bucket: self.bucket_hex(bucket),
                });
            }
            if mains < n {
                return Err(RouteError::TooFewMains {
                    bucket: self.bucket_hex(bucket),
                    mains,
                    n,
                });
            }
        }
        Ok(warnings)
    }

    /// The node's `/route/` text: `numbucket`, `main` (addr + flow list of hex bucket ids),
    /// `backup`. It parses back into an equal route.
    pub fn to_yaml(&self) -> String {
        let mut out = format!("numbucket: {}\n", self.numbucket);
        if self.main.is_empty() {
            out.push_str("main: []\n");
        } else {
            out.push_str("main:\n");
            for server in &self.main {
                let ids: Vec<String> = server
                    .buckets
                    .iter()
                    .map(|&b| yaml_scalar(&self.bucket_hex(b)))
                    .collect();
                out.push_str(&format!(
                    "- addr: {}\n  buckets: [{}]\n",
                    yaml_scalar(&server.addr),
                    ids.join(", ")
                ));
            }
        }
        if self.backup.is_empty() {
            out.push_str("backup: []\n");
        } else {
            out.push_str("backup:\n");
            for addr in &self.backup {
                out.push_str(&format!("- {}\n", yaml_scalar(addr)));
            }
        }
        out
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_yaml())
    }
}

enum BucketErr {
    NotHex,
    Range,
}

/// A bucket entry's text is hex (`10` is 0x10), whatever type YAML would give it.
fn parse_bucket(text: &str, numbucket: usize) -> Result<usize, BucketErr> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(BucketErr::NotHex);
    }
    let digits = t.trim_start_matches('0');
    if digits.len() > 8 {
        return Err(BucketErr::Range);
    }
    let value = if digits.is_empty() {
        0
    } else {
        usize::from_str_radix(digits, 16).map_err(|_| BucketErr::NotHex)?
    };
    if value >= numbucket {
        return Err(BucketErr::Range);
    }
    Ok(value)
}

/// `host:port` with a non-empty host and a port in 1–65535.
fn is_host_port(addr: &str) -> bool {
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !port.is_empty()
                && port.bytes().all(|c| c.is_ascii_digit())
                && matches!(port.parse::<u16>(), Ok(p) if p > 0)
        }
        None => false,
    }
}

/// A YAML scalar that reads back as the same string under YAML 1.1 and 1.2 readers
/// (gobeansdb tools use yaml.v2): plain when unambiguous, double-quoted otherwise.
fn yaml_scalar(s: &str) -> String {
    let safe_chars = !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b':' | b'/' | b'_' | b'-'))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && !s.ends_with(':');
    let numeric_like = s
        .bytes()
        .all(|c| c.is_ascii_digit() || c == b'.' || c == b'_')
        || s.parse::<f64>().is_ok();
    let keyword = matches!(
        s.to_ascii_lowercase().as_str(),
        "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
    );
    if safe_chars && !numeric_like && !keyword {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn yaml_error(err: serde_norway::Error) -> RouteError {
    let mut detail = err.to_string();
    let at = match err.location() {
        Some(loc) => {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            // The position is shown once, before the detail.
            detail = detail.replacen(&suffix, "", 1);
            suffix
        }
        None => String::new(),
    };
    RouteError::Yaml {
        path: None,
        at,
        detail,
    }
}

// ---- raw document shape -------------------------------------------------------------------

/// A scalar's source text. YAML would resolve `10` to an integer; bucket ids need the text.
struct RawScalar(String);

impl<'de> Deserialize<'de> for RawScalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawScalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawScalar, E> {
                Ok(RawScalar(v.to_string()))
            }
            // Other deserializers may hand over resolved numbers; keep their decimal text.
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawScalar, E> {
                Ok(RawScalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawScalar, E> {
                Ok(RawScalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawScalar, E> {
                Ok(RawScalar(v.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Default)]
struct RawRoute {
    numbucket: Option<RawScalar>,
    main: Vec<RawServer>,
    backup: Vec<RawScalar>,
    unknown: Vec<String>,
}

#[derive(Default)]
struct RawServer {
    addr: Option<RawScalar>,
    buckets: Vec<RawScalar>,
    unknown: Vec<String>,
}

impl<'de> Deserialize<'de> for RawRoute {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRoute;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping with numbucket, main and backup")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRoute, A::Error> {
                let mut r = RawRoute::default();
                while let Some(key) = map.next_key::<RawScalar>()? {
                    match key.0.as_str() {
                        "numbucket" => r.numbucket = map.next_value()?,
                        // A null list is an empty list.
                        "main" => {
                            r.main = map
                                .next_value::<Option<Vec<RawServer>>>()?
                                .unwrap_or_default()
                        }
                        "backup" => {
                            r.backup = map
                                .next_value::<Option<Vec<RawScalar>>>()?
                                .unwrap_or_default()
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            r.unknown.push(key.0);
                        }
                    }
                }
                Ok(r)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for RawServer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawServer;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping with addr and buckets")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawServer, A::Error> {
                let mut s = RawServer::default();
                while let Some(key) = map.next_key::<RawScalar>()? {
                    match key.0.as_str() {
                        "addr" => s.addr = map.next_value()?,
                        "buckets" => {
                            s.buckets = map
                                .next_value::<Option<Vec<RawScalar>>>()?
                                .unwrap_or_default()
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            s.unknown.push(key.0);
                        }
                    }
                }
                Ok(s)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE_SAMPLE: &str = r#"
numbucket: 16                 # 1, 16 or 256
main:
- addr: 127.0.0.1:7900
  buckets: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", a, b, c, d, e, f]   # hex ids
backup:
- "127.0.0.1:7989"
"#;

    const PROXY_SAMPLE: &str = r#"
numbucket: 16                  # 1, 16 or 256
main:                          # hosts that own buckets
- addr: 127.0.0.1:7980
  buckets: [0, 3, 4, 5, 8, 9, a, d, e, f]
- addr: 127.0.0.1:7981
  buckets: ["0", "1", "4", "5", "6", "9", a, b, e, f]
backup:                        # each backup serves every bucket
- 127.0.0.1:7989
"#;

    const SPREAD: &str = r#"
numbucket: 16
main:
- {addr: 127.0.0.1:7910, buckets: [0, 3, 4, 5, 8, 9, a, d, e, f]}
- {addr: 127.0.0.1:7920, buckets: [0, 1, 4, 5, 6, 9, a, b, e, f]}
- {addr: 127.0.0.1:7930, buckets: [0, 1, 2, 5, 6, 7, a, b, c, f]}
- {addr: 127.0.0.1:7940, buckets: [1, 2, 3, 6, 7, 8, b, c, d]}
- {addr: 127.0.0.1:7950, buckets: [2, 3, 4, 7, 8, 9, c, d, e]}
backup: [127.0.0.1:7960]
"#;

    fn err(text: &str) -> String {
        Route::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn node_sample() {
        let r = Route::parse(NODE_SAMPLE).unwrap();
        assert_eq!(r.numbucket, 16);
        assert_eq!(r.depth(), 1);
        assert_eq!(r.main.len(), 1);
        assert_eq!(r.main[0].addr, "127.0.0.1:7900");
        assert_eq!(r.main[0].buckets, (0..16).collect::<Vec<_>>());
        assert_eq!(r.backup, vec!["127.0.0.1:7989".to_string()]);
        assert_eq!(r.served_by("127.0.0.1:7900"), vec![true; 16]);
        assert_eq!(r.served_by("127.0.0.1:7989"), vec![true; 16]);
        assert_eq!(r.served_by("127.0.0.1:7901"), vec![false; 16]);
        assert!(r.has_addr("127.0.0.1:7989"));
        assert!(!r.has_addr("127.0.0.1:7901"));
        assert_eq!(r.validate_for_proxy(1).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn proxy_sample() {
        let r = Route::parse(PROXY_SAMPLE).unwrap();
        assert_eq!(r.main[0].buckets, vec![0, 3, 4, 5, 8, 9, 10, 13, 14, 15]);
        assert_eq!(r.main[1].buckets, vec![0, 1, 4, 5, 6, 9, 10, 11, 14, 15]);
        let served = r.served_by("127.0.0.1:7981");
        assert!(served[1] && !served[2] && served[11]);
        assert_eq!(r.mains(0), vec!["127.0.0.1:7980", "127.0.0.1:7981"]);
        assert_eq!(r.mains(2), Vec::<&str>::new());
        // Bucket 2 has no main: fine for a node, refused by the proxy.
        assert_eq!(
            r.validate_for_proxy(1).unwrap_err().to_string(),
            "route: bucket 2 has no main host"
        );
    }

    #[test]
    fn spread_route_for_proxy() {
        let r = Route::parse(SPREAD).unwrap();
        assert_eq!(r.main.len(), 5);
        assert_eq!(r.backup, vec!["127.0.0.1:7960"]);
        assert_eq!(
            r.mains(1),
            vec!["127.0.0.1:7920", "127.0.0.1:7930", "127.0.0.1:7940"]
        );
        for b in 0..16 {
            assert_eq!(r.mains(b).len(), 3, "bucket {b}");
        }
        assert!(r.validate_for_proxy(3).unwrap().is_empty());
        assert_eq!(
            r.validate_for_proxy(4).unwrap_err().to_string(),
            "route: bucket 0 has 3 main hosts but dstore.n is 4"
        );
    }

    #[test]
    fn integer_entries_are_hex_text() {
        let r = Route::parse(
            "numbucket: 256\nmain:\n- addr: h:1\n  buckets: [10, \"10\", ff, 0a, 09, 00, 99]\n",
        )
        .unwrap();
        assert_eq!(r.main[0].buckets, vec![0x10, 0x10, 0xff, 0x0a, 9, 0, 0x99]);
        assert_eq!(r.depth(), 2);
        assert_eq!(r.bucket_hex(10), "0a");
    }

    #[test]
    fn numbucket_one() {
        let r = Route::parse("numbucket: 1\nmain:\n- addr: h:1\n  buckets: [0]\n").unwrap();
        assert_eq!(r.depth(), 0);
        assert_eq!(r.served_by("h:1"), vec![true]);
        assert_eq!(r.bucket_hex(0), "0");
    }

    #[test]
    fn numbucket_errors() {
        assert_eq!(
            err("numbucket: 8\nmain: []\n"),
            "route: numbucket must be 1, 16 or 256 (got 8)"
        );
        assert_eq!(
            err("main: []\n"),
            "route: numbucket must be 1, 16 or 256 (got nothing)"
        );
        assert_eq!(
            err(""),
            "route: numbucket must be 1, 16 or 256 (got nothing)"
        );
        assert_eq!(
            err("numbucket: sixteen\n"),
            "route: numbucket must be 1, 16 or 256 (got sixteen)"
        );
    }

    #[test]
    fn bucket_errors() {
        assert_eq!(
            err("numbucket: 16\nmain:\n- addr: h:1\n  buckets: [0, x1]\n"),
            "route: main[0] (h:1): bad bucket \"x1\": not a hex number"
        );
        assert_eq!(
            err(
                "numbucket: 16\nmain:\n- addr: h:1\n  buckets: [0]\n- addr: h:2\n  buckets: [10]\n"
            ),
            "route: main[1] (h:2): bucket 10 out of range for numbucket 16"
        );
        assert_eq!(
            err("numbucket: 16\nmain:\n- addr: h:1\n  buckets: [\"\"]\n"),
            "route: main[0] (h:1): bad bucket \"\": not a hex number"
        );
        assert_eq!(
            err("numbucket: 16\nmain:\n- addr: h:1\n  buckets: [-1]\n"),
            "route: main[0] (h:1): bad bucket \"-1\": not a hex number"
        );
        assert_eq!(
            err("numbucket: 256\nmain:\n- addr: h:1\n  buckets: [fffffffffffffffff]\n"),
            "route: main[0] (h:1): bucket fffffffffffffffff out of range for numbucket 256"
        );
    }

    #[test]
    fn addr_errors() {
        assert_eq!(
            err("numbucket: 16\nmain:\n- buckets: [0]\n"),
            "route: main[0]: addr is required"
        );
        assert_eq!(
            err("numbucket: 16\nmain:\n- addr: h:1\n- addr:\n"),
            "route: main[1]: addr is required"
        );
        assert_eq!(
            err("numbucket: 16\nmain: []\nbackup: [\"\"]\n"),
            "route: backup[0]: addr is required"
        );
    }

    #[test]
    fn yaml_errors() {
        let e = err("numbucket: 16\nmain: [\n");
        assert!(e.starts_with("route: invalid YAML at line "), "{e}");
        let e = err("numbucket: 16\nmain:\n- addr: [a, b]\n");
        assert!(
            e.starts_with("route: invalid YAML at line 3 column "),
            "{e}"
        );
        let e = err("- 1\n- 2\n");
        assert!(e.starts_with("route: invalid YAML"), "{e}");
    }

    #[test]
    fn unknown_keys_warn() {
        let (r, warnings) = Route::parse_with_warnings(
            "numbucket: 16\nversion: 3\nmain:\n- addr: h:1\n  buckets: [0]\n  weight: 2\n",
        )
        .unwrap();
        assert_eq!(r.main[0].buckets, vec![0]);
        assert_eq!(
            warnings,
            vec![
                "route: unknown key version ignored".to_string(),
                "route: main[0]: unknown key weight ignored".to_string()
            ]
        );
    }

    #[test]
    fn null_lists_are_empty() {
        let r = Route::parse("numbucket: 16\nmain:\n- addr: h:1\n  buckets:\nbackup:\n").unwrap();
        assert!(r.main[0].buckets.is_empty());
        assert!(r.backup.is_empty());
        assert_eq!(
            r.validate_for_proxy(1).unwrap_err().to_string(),
            "route: bucket 0 has no main host"
        );
    }

    #[test]
    fn proxy_validation_errors() {
        let check = |text: &str, n: usize, want: &str| {
            let r = Route::parse(text).unwrap();
            assert_eq!(r.validate_for_proxy(n).unwrap_err().to_string(), want);
        };
        check("numbucket: 1\nmain: []\n", 1, "route: no main hosts");
        check(
            "numbucket: 1\nmain:\n- {addr: localhost, buckets: [0]}\n",
            1,
            "route: main[0]: bad addr \"localhost\": expected host:port",
        );
        check(
            "numbucket: 1\nmain:\n- {addr: \"h:0\", buckets: [0]}\n",
            1,
            "route: main[0]: bad addr \"h:0\": expected host:port",
        );
        check(
            "numbucket: 1\nmain:\n- {addr: \"h:70000\", buckets: [0]}\n",
            1,
            "route: main[0]: bad addr \"h:70000\": expected host:port",
        );
        check(
            "numbucket: 1\nmain:\n- {addr: \"h:1\", buckets: [0]}\nbackup: [nohost]\n",
            1,
            "route: backup[0]: bad addr \"nohost\": expected host:port",
        );
        check(
            "numbucket: 1\nmain:\n- {addr: \"h:1\", buckets: [0]}\n- {addr: \"h:2\", buckets: [0]}\n- {addr: \"h:1\", buckets: [0]}\n",
            1,
            "route: main[2]: duplicate addr h:1 (also main[0])",
        );
        check(
            "numbucket: 1\nmain:\n- {addr: \"h:1\", buckets: [0]}\nbackup: [\"h:1\"]\n",
            1,
            "route: backup[0]: h:1 is already listed (main[0])",
        );
        check(
            "numbucket: 1\nmain:\n- {addr: \"h:1\", buckets: [0]}\nbackup: [\"h:2\", \"h:3\", \"h:2\"]\n",
            1,
            "route: backup[2]: h:2 is already listed (backup[0])",
        );
        check(
            "numbucket: 256\nmain:\n- {addr: \"h:1\", buckets: [0a, a]}\n",
            1,
            "route: main[0] (h:1): bucket 0a listed twice",
        );
        check(
            "numbucket: 16\nmain:\n- {addr: \"h:1\", buckets: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, a, b, c, d, e]}\n",
            1,
            "route: bucket f has no main host",
        );
    }

    #[test]
    fn empty_host_warns_for_proxy() {
        let r = Route::parse(
            "numbucket: 1\nmain:\n- {addr: \"h:1\", buckets: [0]}\n- {addr: \"h:2\", buckets: []}\n",
        )
        .unwrap();
        assert_eq!(
            r.validate_for_proxy(1).unwrap(),
            vec!["route: main[1] (h:2) owns no bucket".to_string()]
        );
    }

    #[test]
    fn to_yaml_format_and_round_trip() {
        let r = Route::parse(NODE_SAMPLE).unwrap();
        assert_eq!(
            r.to_yaml(),
            "numbucket: 16\nmain:\n- addr: 127.0.0.1:7900\n  buckets: [\"0\", \"1\", \"2\", \"3\", \
             \"4\", \"5\", \"6\", \"7\", \"8\", \"9\", a, b, c, d, e, f]\nbackup:\n- 127.0.0.1:7989\n"
        );
        for text in [NODE_SAMPLE, PROXY_SAMPLE, SPREAD] {
            let r = Route::parse(text).unwrap();
            assert_eq!(Route::parse(&r.to_yaml()).unwrap(), r);
        }
        let mut big = Route::all_local("weird host: #1", 256);
        big.backup.push("yes".into());
        let text = big.to_yaml();
        assert!(text.contains("buckets: [\"00\", \"01\""), "{text}");
        assert!(text.contains(", 0a, "), "{text}");
        assert_eq!(Route::parse(&text).unwrap(), big);
        let empty = Route {
            numbucket: 1,
            main: vec![],
            backup: vec![],
        };
        assert_eq!(empty.to_yaml(), "numbucket: 1\nmain: []\nbackup: []\n");
        assert_eq!(Route::parse(&empty.to_yaml()).unwrap(), empty);
    }

    #[test]
    fn all_local_serves_everything() {
        let r = Route::all_local("127.0.0.1:7900", 16);
        assert_eq!(r.served_by("127.0.0.1:7900"), vec![true; 16]);
        assert!(r.validate_for_proxy(1).unwrap().is_empty());
        assert_eq!(depth_of(256), 2);
    }

    #[test]
    fn load_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("route.yaml");
        let e = Route::load(&path).unwrap_err().to_string();
        assert!(e.starts_with("route: cannot read "), "{e}");
        assert!(e.contains("route.yaml"), "{e}");
        std::fs::write(&path, "numbucket: 16\nmain: {\n").unwrap();
        let e = Route::load(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("route: {}: invalid YAML at line ", path.display())),
            "{e}"
        );
        std::fs::write(&path, NODE_SAMPLE).unwrap();
        assert_eq!(Route::load(&path).unwrap().main[0].buckets.len(), 16);
    }
}
