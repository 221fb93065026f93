//! Finding nodes and talking to their admin port: `--route SRC` (tools.md §0 "Route input"),
//! the web address rule (memcached port + `--web-offset`, `--web-map`), and the `/gc/…`,
//! `/bucket/…`, `/gc/query` and `/du` replies (node.md §6.4, §8).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use beansdb_route::Route;
use clap::Args;
use serde_json::Value;

use super::http;
use crate::error::{exit, CliError, CliResult};

/// How a node's HTTP admin address is derived (tools.md §0 "Node web address").
#[derive(Debug, Clone, Args)]
pub struct WebOpts {
    /// Web port = memcached port + this
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub web_offset: u16,
    /// Override one node's web address (repeatable)
    #[arg(long, value_name = "ADDR=HOST:WEBPORT")]
    pub web_map: Vec<String>,
}

impl WebOpts {
    /// `http://host:webport` for a memcached `host:port`, or an explicit `http://…` as is.
    pub fn base(&self, addr: &str) -> CliResult<String> {
        if addr.starts_with("http://") || addr.starts_with("https://") {
            http::parse_url(addr).map_err(|e| CliError::usage(format!("{e:#}")))?;
            return Ok(addr.trim_end_matches('/').to_string());
        }
        for m in &self.web_map {
            let Some((from, to)) = m.split_once('=') else {
                return Err(CliError::usage(format!(
                    "--web-map {m:?} is not ADDR=HOST:WEBPORT"
                )));
            };
            if from == addr {
                let to = to.trim_end_matches('/');
                return Ok(if to.starts_with("http://") {
                    to.to_string()
                } else {
                    format!("http://{to}")
                });
            }
        }
        let (host, port) = addr
            .rsplit_once(':')
            .filter(|(h, p)| !h.is_empty() && !p.is_empty())
            .ok_or_else(|| CliError::usage(format!("node {addr:?} is not HOST:PORT")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| CliError::usage(format!("node {addr:?} has an invalid port")))?;
        let web = port.checked_add(self.web_offset).ok_or_else(|| {
            CliError::usage(format!(
                "node {addr}: port {port} + --web-offset {} is not a port",
                self.web_offset
            ))
        })?;
        Ok(format!("http://{host}:{web}"))
    }
}

/// One node's admin port.
#[derive(Debug, Clone)]
pub struct NodeWeb {
    /// The address as the user or the route names it.
    pub addr: String,
    pub base: String,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

/// What `/gc/<hex>` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcReply {
    /// `bucket <dec>, start <s>, end <e>, merge <bool>, pretend <bool>`.
    Plan {
        bucket: usize,
        start: u32,
        end: u32,
        merge: bool,
        pretend: bool,
    },
    /// `err : <msg>`.
    Err(String),
}

impl NodeWeb {
    pub fn new(
        addr: &str,
        web: &WebOpts,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> CliResult<NodeWeb> {
        Ok(NodeWeb {
            addr: addr.to_string(),
            base: web.base(addr)?,
            connect_timeout,
            timeout,
        })
    }

    /// The body of a 200 reply; anything else is a runtime error naming the node.
    pub fn get_text(&self, path: &str) -> CliResult<String> {
        let r = http::get(&self.base, path, self.connect_timeout, self.timeout).map_err(|e| {
            CliError::runtime(e.context(format!(
                "cannot reach node {} at {}{path}",
                self.addr, self.base
            )))
            .with_hint("is the node running, and is its web port memcached port + --web-offset (or given with --web-map)?")
        })?;
        let body = r.text();
        if r.status != 200 {
            return Err(CliError::runtime(anyhow!(
                "node {} answered {path} with HTTP {}: {}",
                self.addr,
                r.status,
                body.trim()
            )));
        }
        if body.trim() == "starting" {
            return Err(CliError::runtime(anyhow!(
                "node {} is still starting (buckets not loaded yet)",
                self.addr
            )));
        }
        Ok(body)
    }

    pub fn get_json(&self, path: &str) -> CliResult<Value> {
        let body = self.get_text(path)?;
        serde_json::from_str(&body).map_err(|e| {
            CliError::runtime(anyhow::Error::new(e).context(format!(
                "node {} answered {path} with something that is not JSON",
                self.addr
            )))
        })
    }

    /// `/gc/<hex>?…` with the given query parameters.
    pub fn gc(&self, bucket: &str, params: &[(&str, String)]) -> CliResult<GcReply> {
        let mut path = format!("/gc/{bucket}");
        for (i, (k, v)) in params.iter().enumerate() {
            path.push(if i == 0 { '?' } else { '&' });
            path.push_str(&format!("{k}={v}"));
        }
        let body = self.get_text(&path)?;
        parse_gc_reply(&body).ok_or_else(|| {
            CliError::runtime(anyhow!(
                "node {} answered {path} with an unexpected page: {}",
                self.addr,
                strip_html(&body)
            ))
        })
    }
}

/// Tags removed and whitespace collapsed, for messages.
pub fn strip_html(s: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn number_after<T: std::str::FromStr>(s: &str, label: &str) -> Option<T> {
    let i = s.find(label)? + label.len();
    let rest = s[i..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Parses the `/gc/<hex>` page (tools.md §2): the plan line or `err : <msg> </p>`.
pub fn parse_gc_reply(body: &str) -> Option<GcReply> {
    if let Some(i) = body.find("err : ") {
        let rest = &body[i + 6..];
        let msg = rest.split("</p>").next().unwrap_or(rest).trim();
        return Some(GcReply::Err(msg.to_string()));
    }
    let i = body.find("bucket ")?;
    let s = &body[i..];
    Some(GcReply::Plan {
        bucket: number_after(s, "bucket ")?,
        start: number_after(s, "start ")?,
        end: number_after(s, "end ")?,
        merge: number_after(s, "merge ")?,
        pretend: number_after(s, "pretend ")?,
    })
}

/// Exit code and hint for a `/gc` request error (node.md §6.4 messages).
pub fn gc_error_class(msg: &str) -> (u8, Option<&'static str>) {
    if msg.starts_with("bad bucket id") || msg.starts_with("no data for bucket id") {
        (
            exit::USAGE,
            Some("the node does not serve that bucket; `beansctl gc status` lists what it serves"),
        )
    } else if msg.contains("already running") {
        (
            exit::FOUND,
            Some("wait for it (`beansctl gc status`) or stop it with `beansctl gc cancel`"),
        )
    } else if is_nothing_to_gc(msg) {
        (exit::FOUND, None)
    } else {
        (exit::RUNTIME, None)
    }
}

/// Range errors meaning there is simply nothing to collect.
pub fn is_nothing_to_gc(msg: &str) -> bool {
    msg.starts_with("no file to gc")
        || msg.contains("nothing to gc")
        || msg.starts_with("startChunkID")
}

/// Reads `--route SRC`: a route.yaml path, a conf dir, or an `http://` web URL serving
/// `/route/`. Invalid routes are usage errors (exit 2); an unreachable URL is exit 3.
pub fn load_route(src: &str, connect_timeout: Duration, timeout: Duration) -> CliResult<Route> {
    if src.starts_with("http://") || src.starts_with("https://") {
        let r = http::get(src, "/route/", connect_timeout, timeout).map_err(|e| {
            CliError::runtime(e.context(format!("cannot fetch the route from {src}/route/")))
        })?;
        if r.status != 200 {
            return Err(CliError::runtime(anyhow!(
                "{src}/route/ answered HTTP {}",
                r.status
            )));
        }
        return Route::parse_with_warnings(&r.text())
            .map(|(route, _)| route)
            .map_err(|e| CliError::usage(format!("cannot read route {src:?}: {e}")));
    }
    let p = Path::new(src);
    let file = if p.is_dir() {
        p.join("route.yaml")
    } else {
        p.to_path_buf()
    };
    Route::load_with_warnings(&file)
        .map(|(route, warnings)| {
            for w in warnings {
                tracing::warn!("{w}");
            }
            route
        })
        .map_err(|e| {
            CliError::usage(format!(
                "cannot read route {:?}: {e}",
                file.display().to_string()
            ))
        })
}

/// Every node of a route: mains in file order, then backups.
pub fn route_nodes(route: &Route) -> Vec<String> {
    let mut out: Vec<String> = route.main.iter().map(|s| s.addr.clone()).collect();
    for b in &route.backup {
        if !out.contains(b) {
            out.push(b.clone());
        }
    }
    out
}

/// A bucket id as the user writes it (hex), checked.
pub fn parse_bucket(s: &str) -> Result<usize, String> {
    let t = s.trim().to_ascii_lowercase();
    if t.is_empty() || t.len() > 2 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{s:?} is not a hex bucket id"));
    }
    usize::from_str_radix(&t, 16).map_err(|_| format!("{s:?} is not a hex bucket id"))
}

/// The buckets a node serves and their states, from `/bucket/all` and `/gc/query`.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub buckets: Vec<Value>,
    /// Buckets `/gc/query` lists as running, with their query line.
    pub query_running: BTreeMap<usize, String>,
}

impl NodeState {
    pub fn fetch(node: &NodeWeb) -> CliResult<NodeState> {
        let all = node.get_json("/bucket/all")?;
        let buckets = all.as_array().cloned().ok_or_else(|| {
            CliError::runtime(anyhow!(
                "node {} answered /bucket/all with something that is not a list",
                node.addr
            ))
        })?;
        let q = node.get_json("/gc/query")?;
        Ok(NodeState {
            buckets,
            query_running: parse_gc_query(&q),
        })
    }
}

/// `{"<root>": ["bkt: 03, start -> 197, end -> 201, remain -> 3", …]}` → bucket → line.
pub fn parse_gc_query(v: &Value) -> BTreeMap<usize, String> {
    let mut out = BTreeMap::new();
    if let Some(m) = v.as_object() {
        for lines in m.values() {
            for l in lines.as_array().into_iter().flatten() {
                let Some(s) = l.as_str() else { continue };
                let id = s
                    .strip_prefix("bkt:")
                    .and_then(|r| r.split(',').next())
                    .and_then(|h| usize::from_str_radix(h.trim(), 16).ok());
                if let Some(id) = id {
                    out.insert(id, s.to_string());
                }
            }
        }
    }
    out
}

/// Whether a BucketInfo shows a running GC (`LastGC.Running` or `HintState & 4`).
pub fn bucket_running(info: &Value) -> bool {
    info["LastGC"]["Running"].as_bool() == Some(true)
        || info["HintState"].as_u64().is_some_and(|h| h & 4 != 0)
}

/// `LastGC`'s error, if any (`Err`, or `StopReason` in other builds).
pub fn last_gc_error(last: &Value) -> Option<String> {
    for k in ["Err", "StopReason"] {
        match &last[k] {
            Value::String(s) if !s.is_empty() => return Some(s.clone()),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_pages() {
        let ok = " <a href='/bucket/3'> /bucket/3 </a> <p/><p/> bucket 3, start 197, end 201, merge false, pretend false <p/>";
        assert_eq!(
            parse_gc_reply(ok),
            Some(GcReply::Plan {
                bucket: 3,
                start: 197,
                end: 201,
                merge: false,
                pretend: false
            })
        );
        let err = "<p> err : no file to gc within 7 days, start = 2 </p><a href='/bucket/0'>0</a> ";
        assert_eq!(
            parse_gc_reply(err),
            Some(GcReply::Err(
                "no file to gc within 7 days, start = 2".into()
            ))
        );
        assert_eq!(parse_gc_reply("hello"), None);
        assert_eq!(gc_error_class("no data for bucket id: 8").0, exit::USAGE);
        assert_eq!(
            gc_error_class("gc on bkt: 3 already running").0,
            exit::FOUND
        );
        assert_eq!(
            gc_error_class("end 3 < start 4, nothing to gc").0,
            exit::FOUND
        );
        assert_eq!(gc_error_class("weird").0, exit::RUNTIME);
    }

    #[test]
    fn web_addresses() {
        let w = WebOpts {
            web_offset: 3,
            web_map: vec!["10.0.0.1:7900=10.0.0.1:8000".into()],
        };
        assert_eq!(w.base("127.0.0.1:7900").unwrap(), "http://127.0.0.1:7903");
        assert_eq!(w.base("10.0.0.1:7900").unwrap(), "http://10.0.0.1:8000");
        assert_eq!(w.base("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(w.base("h:65535").unwrap_err().code, exit::USAGE);
        assert_eq!(w.base("nope").unwrap_err().code, exit::USAGE);
    }

    #[test]
    fn query_lines() {
        let v: Value = serde_json::from_str(
            r#"{"/data1": ["bkt: 03, start -> 197, end -> 201, remain -> 3"], "/d2": []}"#,
        )
        .unwrap();
        let q = parse_gc_query(&v);
        assert_eq!(q.len(), 1);
        assert!(q.contains_key(&3));
        assert_eq!(parse_bucket("a"), Ok(10));
        assert_eq!(parse_bucket("3F"), Ok(63));
        assert!(parse_bucket("g").is_err());
        assert!(parse_bucket("100").is_err());
    }
}
