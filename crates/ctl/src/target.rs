//! Resolving a `host:port` target and the loopback guard (tools.md §0).

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;

use crate::error::{CliError, CliResult};

/// True for 127.0.0.0/8, ::1 and IPv4-mapped 127.x.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Resolves `target` and refuses it unless every address is loopback or `allow_remote`.
/// Malformed → exit 2; unresolvable → exit 3; non-loopback → exit 2 with the spec message.
pub async fn resolve_target(target: &str, allow_remote: bool) -> CliResult<Vec<SocketAddr>> {
    let (host, port) = target
        .rsplit_once(':')
        .filter(|(h, p)| !h.is_empty() && !p.is_empty())
        .ok_or_else(|| CliError::usage(format!("target {target:?} is not HOST:PORT")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| CliError::usage(format!("target {target:?} has an invalid port {port:?}")))?;
    // A literal address needs no resolver, and is checked without any network activity.
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host(target)
            .await
            .with_context(|| format!("cannot resolve target {target}"))
            .map_err(CliError::runtime)?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(CliError::runtime(anyhow::anyhow!(
            "target {target} resolves to no address"
        )));
    }
    if !allow_remote && !addrs.iter().all(|a| is_loopback(a.ip())) {
        return Err(CliError::usage(format!(
            "target {target} is not a loopback address; pass --allow-remote"
        )));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn guard() {
        let ok = resolve_target("127.0.0.1:7900", false).await.unwrap();
        assert_eq!(ok, vec!["127.0.0.1:7900".parse().unwrap()]);
        assert!(resolve_target("[::1]:7900", false).await.is_ok());
        assert!(resolve_target("127.8.9.10:1", false).await.is_ok());
        let e = resolve_target("10.0.0.5:7905", false).await.unwrap_err();
        assert_eq!(e.code, 2);
        assert_eq!(
            e.error.to_string(),
            "target 10.0.0.5:7905 is not a loopback address; pass --allow-remote"
        );
        assert!(resolve_target("10.0.0.5:7905", true).await.is_ok());
        for bad in ["127.0.0.1", ":7900", "127.0.0.1:", "127.0.0.1:99999", "h:x"] {
            assert_eq!(
                resolve_target(bad, false).await.unwrap_err().code,
                2,
                "{bad}"
            );
        }
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("::ffff:10.0.0.1".parse().unwrap()));
    }
}
