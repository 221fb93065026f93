//! `--route SRC` (tools.md §0): a `route.yaml` path, a conf dir, or an `http://` web URL
//! serving `GET <url>/route/`, plus the checks sync needs on top of the route parser.

use std::path::Path;
use std::time::Duration;

use beansdb_route::Route;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{CliError, CliResult};

/// Largest route document accepted over HTTP.
const MAX_ROUTE_BYTES: usize = 4 << 20;

pub async fn load(src: &str, connect_timeout: Duration, timeout: Duration) -> CliResult<Route> {
    load_with(src, connect_timeout, timeout, false).await
}

/// [`load`], also accepting numbucket 1 when `allow_single_bucket` (the Cassandra tools walk
/// a one-bucket node from the empty path; only sync needs two levels).
pub async fn load_with(
    src: &str,
    connect_timeout: Duration,
    timeout: Duration,
    allow_single_bucket: bool,
) -> CliResult<Route> {
    let (route, warnings) = if let Some(rest) = src.strip_prefix("http://") {
        let text = fetch(rest, connect_timeout, timeout)
            .await
            .map_err(|e| CliError::runtime(anyhow::anyhow!("cannot read route from {src}: {e}")))?;
        Route::parse_with_warnings(&text)
            .map_err(|e| CliError::usage(format!("cannot read route from {src}: {e}")))?
    } else if src.starts_with("https://") {
        return Err(CliError::usage(format!(
            "cannot read route from {src}: https is not supported"
        ))
        .with_hint("pass the node's or proxy's http:// web address, or a route.yaml path"));
    } else {
        let p = Path::new(src);
        let file = if p.is_dir() {
            p.join("route.yaml")
        } else {
            p.to_path_buf()
        };
        Route::load_with_warnings(&file)
            .map_err(|e| CliError::usage(format!("cannot read route {src:?}: {e}")))?
    };
    for w in warnings {
        tracing::warn!("{w}");
    }
    check_with(&route, allow_single_bucket)
        .map_err(|m| CliError::usage(format!("invalid route {src:?}: {m}")))?;
    Ok(route)
}

/// The tools' route rules beyond parsing: numbucket 16 or 256, no address listed twice, and
/// every bucket has a main host.
fn check_with(route: &Route, allow_single_bucket: bool) -> Result<(), String> {
    if allow_single_bucket && route.numbucket == 1 {
        // Only the one-bucket case differs; the remaining rules apply as for sync.
    } else if route.numbucket != 16 && route.numbucket != 256 {
        return Err(format!(
            "sync needs numbucket 16 or 256 (got {})",
            route.numbucket
        ));
    }
    let mut seen: Vec<&str> = Vec::new();
    for addr in route
        .main
        .iter()
        .map(|s| s.addr.as_str())
        .chain(route.backup.iter().map(String::as_str))
    {
        if seen.contains(&addr) {
            return Err(format!("address {addr} is listed twice"));
        }
        seen.push(addr);
    }
    for b in 0..route.numbucket {
        if route.mains(b).is_empty() {
            return Err(format!("bucket {} has no main host", route.bucket_hex(b)));
        }
    }
    Ok(())
}

/// Minimal HTTP/1.0 GET of `<hostport>[/prefix]/route/`.
async fn fetch(rest: &str, connect_timeout: Duration, timeout: Duration) -> Result<String, String> {
    http_get(rest, "/route/", connect_timeout, timeout).await
}

/// Minimal HTTP/1.0 GET of `<hostport>[/prefix]<path>` (`rest` is a URL without `http://`);
/// HTTP/1.0 keeps the body unchunked and ends it with the connection. Non-200 is an error.
pub(crate) async fn http_get(
    rest: &str,
    path: &str,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<String, String> {
    let (hostport, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if hostport.is_empty() {
        return Err("no host in URL".into());
    }
    let target = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let mut stream = tokio::time::timeout(connect_timeout, TcpStream::connect(&target))
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let req = format!(
        "GET {prefix}{path} HTTP/1.0\r\nHost: {hostport}\r\nUser-Agent: beansctl\r\nConnection: close\r\n\r\n"
    );
    let body = tokio::time::timeout(timeout, async {
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 << 10];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_ROUTE_BYTES {
                return Err(std::io::Error::other("reply too large"));
            }
        }
        Ok::<_, std::io::Error>(buf)
    })
    .await
    .map_err(|_| "timeout".to_string())?
    .map_err(|e| e.to_string())?;
    let split = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("malformed HTTP reply")?;
    let head = String::from_utf8_lossy(&body[..split]);
    let status = head.lines().next().unwrap_or_default();
    let code = status.split(' ').nth(1).unwrap_or_default();
    if code != "200" {
        return Err(format!("HTTP status {status:?}"));
    }
    String::from_utf8(body[split + 4..].to_vec()).map_err(|_| "route is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_route_rules() {
        let ok = Route::parse(
            "numbucket: 16\nmain:\n- addr: a:1\n  buckets: [0,1,2,3,4,5,6,7,8,9,a,b,c,d,e,f]\n",
        )
        .expect("parse");
        assert!(check_with(&ok, false).is_ok());
        let one =
            Route::parse("numbucket: 1\nmain:\n- addr: a:1\n  buckets: [0]\n").expect("parse");
        assert!(check_with(&one, false).unwrap_err().contains("16 or 256"));
        let hole =
            Route::parse("numbucket: 16\nmain:\n- addr: a:1\n  buckets: [0]\n").expect("parse");
        assert!(check_with(&hole, false)
            .unwrap_err()
            .contains("bucket 1 has no main"));
        let twice = Route::parse(
            "numbucket: 16\nmain:\n- addr: a:1\n  buckets: [0,1,2,3,4,5,6,7,8,9,a,b,c,d,e,f]\nbackup: [\"a:1\"]\n",
        )
        .expect("parse");
        assert!(check_with(&twice, false)
            .unwrap_err()
            .contains("listed twice"));
    }
}
