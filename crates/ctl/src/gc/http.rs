//! A small blocking HTTP/1.1 client for the node and proxy admin pages (`/gc/…`, `/bucket/…`,
//! `/du`, `/route/`, `/buffers`, `/metrics`). One request per connection (`Connection:
//! close`), plain http only: the admin ports speak nothing else.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Bodies larger than this are refused (admin pages are small; a route is a few KiB).
const MAX_BODY: usize = 64 << 20;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `http://host:port[/path]` split into the authority and the path (without the trailing
/// slash of a bare base URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub authority: String,
    pub path: String,
}

pub fn parse_url(url: &str) -> Result<Url> {
    if url.starts_with("https://") {
        bail!("{url}: https is not supported (node and proxy admin ports speak plain http)");
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("{url}: not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        bail!("{url}: no host");
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && !p.is_empty() && !h.ends_with('['));
    let authority = if has_port && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok(Url {
        authority,
        path: path.trim_end_matches('/').to_string(),
    })
}

fn connect(authority: &str, connect_timeout: Duration) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = authority
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {authority}"))?
        .collect();
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, connect_timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(anyhow::Error::new(e).context(format!("cannot connect to {authority}"))),
        None => bail!("{authority} resolves to no address"),
    }
}

/// `GET base + path`. `base` is `http://host:port[/prefix]`; `path` starts with `/`.
pub fn get(
    base: &str,
    path: &str,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<Response> {
    let url = parse_url(base)?;
    let full_path = format!("{}{path}", url.path);
    let full_path = if full_path.is_empty() {
        "/".to_string()
    } else {
        full_path
    };
    let mut s = connect(&url.authority, connect_timeout)?;
    let deadline = Instant::now() + timeout;
    s.set_write_timeout(Some(timeout))?;
    let req = format!(
        "GET {full_path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: beansctl\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.authority
    );
    s.write_all(req.as_bytes())
        .with_context(|| format!("cannot send the request to {}", url.authority))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    let (status, header_end, length, chunked) = loop {
        if let Some(h) = find(&buf, b"\r\n\r\n") {
            let (status, length, chunked) = parse_head(&buf[..h])?;
            break (status, h + 4, length, chunked);
        }
        read_some(&mut s, &mut buf, &mut chunk, deadline, &url.authority)?;
        if buf.len() > 1 << 20 {
            bail!("{}: response headers too long", url.authority);
        }
    };
    loop {
        let body = &buf[header_end..];
        let complete = match (length, chunked) {
            (_, true) => dechunk(body)?.is_some(),
            (Some(n), false) => body.len() >= n,
            (None, false) => false,
        };
        if complete {
            break;
        }
        if buf.len() - header_end > MAX_BODY {
            bail!("{}: response body too large", url.authority);
        }
        if read_some(&mut s, &mut buf, &mut chunk, deadline, &url.authority)? == 0 {
            // EOF: the body ends here unless a declared length is missing.
            if chunked || length.is_some_and(|n| buf.len() - header_end < n) {
                bail!(
                    "{}: connection closed in the middle of the response",
                    url.authority
                );
            }
            break;
        }
    }
    let body = &buf[header_end..];
    let body = if chunked {
        dechunk(body)?.unwrap_or_default()
    } else if let Some(n) = length {
        body[..n.min(body.len())].to_vec()
    } else {
        body.to_vec()
    };
    Ok(Response { status, body })
}

fn read_some(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
    deadline: Instant,
    authority: &str,
) -> Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        bail!("{authority}: no complete response in time");
    }
    s.set_read_timeout(Some(left))?;
    match s.read(chunk) {
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(n)
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            bail!("{authority}: no complete response in time")
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read from {authority}"))),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> Result<(u16, Option<usize>, bool)> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let (Some(proto), Some(code)) = (parts.next(), parts.next()) else {
        bail!("malformed HTTP status line {status_line:?}");
    };
    if !proto.starts_with("HTTP/") {
        bail!("not an HTTP response: {status_line:?}");
    }
    let status: u16 = code
        .parse()
        .map_err(|_| anyhow!("malformed HTTP status line {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse()
                    .map_err(|_| anyhow!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            chunked = true;
        }
    }
    Ok((status, length, chunked))
}

/// The decoded body once the final chunk is in `body`, `None` while incomplete.
fn dechunk(body: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let Some(eol) = find(&body[pos..], b"\r\n") else {
            return Ok(None);
        };
        let size_text = String::from_utf8_lossy(&body[pos..pos + eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
        pos += eol + 2;
        if size == 0 {
            return Ok(Some(out));
        }
        if body.len() < pos + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&body[pos..pos + size]);
        pos += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:7903").unwrap();
        assert_eq!(u.authority, "127.0.0.1:7903");
        assert_eq!(u.path, "");
        let u = parse_url("http://h:1/x/").unwrap();
        assert_eq!(u.path, "/x");
        assert_eq!(parse_url("http://h/").unwrap().authority, "h:80");
        assert_eq!(parse_url("http://[::1]:8/").unwrap().authority, "[::1]:8");
        assert!(parse_url("https://h:1").is_err());
        assert!(parse_url("h:1").is_err());
    }

    fn serve_once(reply: &'static [u8]) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            s.write_all(reply).unwrap();
        });
        format!("http://{addr}")
    }

    #[test]
    fn lengths_chunks_and_eof() {
        let t = Duration::from_secs(2);
        let base = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        let r = get(&base, "/x", t, t).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "hello"));
        let base = serve_once(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        );
        let r = get(&base, "/", t, t).unwrap();
        assert_eq!((r.status, r.text().as_str()), (404, "abcde"));
        let base = serve_once(b"HTTP/1.0 200 OK\r\n\r\nuntil eof");
        assert_eq!(get(&base, "/", t, t).unwrap().text(), "until eof");
    }
}
