//! `beansctl sync`: merkle anti-entropy between the replicas of each bucket (tools.md §1).
//!
//! Flow: load and check the route, take the cluster lock, then process buckets with
//! `--concurrency` workers (each holding one connection per node, every node behind one
//! shared token bucket): compare roots, walk the `@` listings where hash/count differ,
//! compare key lines, resolve differing keys (fetch with `@@khash`, states with `?key`,
//! choose the winner, write with an explicit version and verify), then the backup pass.
//! One report at the end (text or `--json`).

pub(crate) mod decide;
mod engine;
mod lock;
pub(crate) mod node;
mod report;
pub(crate) mod routesrc;
pub(crate) mod wire;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use parking_lot::Mutex;
use serde_json::json;

pub use self::decide::TombstoneMinority;
use self::engine::{Conns, LiveTotals, Opts, Shared};
use self::node::NodeShared;
use self::report::BucketReport;
use crate::cli::GlobalOpts;
use crate::error::{exit, CliError, CliResult};
use crate::interrupt::Interrupt;
use crate::output::Progress;

#[derive(Debug, Clone, Args)]
pub struct SyncArgs {
    /// route.yaml path, conf dir, or http://host:port web address serving /route/
    #[arg(long, value_name = "SRC")]
    pub route: String,
    /// Hex bucket ids (comma list or repeated); default all
    #[arg(long, value_delimiter = ',', value_name = "B[,B..]")]
    pub bucket: Vec<String>,
    /// List, fetch and decide, but send no set/delete
    #[arg(long)]
    pub dry_run: bool,
    /// At most N requests/s to each node (burst max(1, N/10)); 0 = unlimited
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub rate: u64,
    /// Buckets processed in parallel
    #[arg(long, default_value_t = 4, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// Skip keys with any replica record newer than S seconds (node clock)
    #[arg(long, default_value_t = 60, value_name = "S",
          value_parser = clap::value_parser!(u32).range(0..=100_000_000))]
    pub hot_seconds: u32,
    /// Descend into every directory even when hash and count agree
    #[arg(long)]
    pub full: bool,
    /// Skip a subtree whose live counts differ by more than N; 0 = no limit
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub max_diff_keys: u64,
    /// What to do when a winning tombstone is outnumbered by live copies
    #[arg(long, value_enum, default_value_t = TombstoneMinority::Hold)]
    pub tombstone_minority: TombstoneMinority,
    /// Compare a bucket even if some mains are unreachable (needs ≥ 2 reachable)
    #[arg(long)]
    pub allow_partial: bool,
    /// Ignore backups entirely
    #[arg(long, conflicts_with = "drain_backups")]
    pub no_backups: bool,
    /// Delete a backup's copy once every main holds it at an equal or higher version
    #[arg(long)]
    pub drain_backups: bool,
    /// Lock file (default: per cluster in the OS temp dir)
    #[arg(long, value_name = "PATH")]
    pub lock_file: Option<PathBuf>,
    /// Append one JSON line per differing key to FILE
    #[arg(long, value_name = "FILE")]
    pub decisions: Option<PathBuf>,
}

/// Entry point of `beansctl sync`; returns the exit code.
pub fn run(args: SyncArgs, g: &GlobalOpts) -> CliResult<u8> {
    crate::cli::block_on(run_async(args, g))
}

pub(crate) fn parse_buckets(list: &[String], numbucket: usize) -> CliResult<Vec<usize>> {
    if list.is_empty() {
        return Ok((0..numbucket).collect());
    }
    let mut out = Vec::new();
    for s in list {
        let t = s.trim();
        let b = usize::from_str_radix(t, 16)
            .ok()
            .filter(|_| !t.is_empty() && t.len() <= 2)
            .ok_or_else(|| {
                CliError::usage(format!(
                    "invalid value for --bucket: {s:?} is not a hex bucket id"
                ))
            })?;
        if b >= numbucket {
            return Err(CliError::usage(format!(
                "invalid value for --bucket: {s} is out of range for numbucket {numbucket}"
            )));
        }
        out.push(b);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn run_async(args: SyncArgs, g: &GlobalOpts) -> CliResult<u8> {
    let route = routesrc::load(&args.route, g.connect_timeout, g.timeout).await?;
    let buckets = parse_buckets(&args.bucket, route.numbucket)?;
    let mut addrs: Vec<String> = route.main.iter().map(|s| s.addr.clone()).collect();
    addrs.extend(route.backup.iter().cloned());

    // Listening before the lock is visible: whoever sees the lock can interrupt gracefully.
    let interrupt = Interrupt::install();
    let started_at = chrono::Utc::now();
    let lock_path = args
        .lock_file
        .clone()
        .unwrap_or_else(|| lock::default_path(&addrs));
    let _lock = lock::acquire(&lock_path, &rfc3339(started_at))?;
    let decisions = match &args.decisions {
        None => None,
        Some(p) => Some(Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| {
                    CliError::usage(format!("cannot open decisions file {}: {e}", p.display()))
                })?,
        )),
    };

    let total_requests = Arc::new(AtomicU64::new(0));
    let nodes: HashMap<String, Arc<NodeShared>> = addrs
        .iter()
        .map(|a| {
            (
                a.clone(),
                Arc::new(NodeShared::new(a, args.rate, total_requests.clone())),
            )
        })
        .collect();
    let shared = Arc::new(Shared {
        opts: Opts {
            dry_run: args.dry_run,
            hot_seconds: i64::from(args.hot_seconds),
            full: args.full,
            max_diff_keys: args.max_diff_keys,
            minority: args.tombstone_minority,
            allow_partial: args.allow_partial,
            no_backups: args.no_backups,
            drain_backups: args.drain_backups,
        },
        route: route.clone(),
        nodes,
        client_config: g.client_config(),
        decisions,
        interrupt: interrupt.clone(),
        live: LiveTotals::default(),
    });

    let progress = Arc::new(Progress::new("sync", g));
    let start = Instant::now();
    let n = buckets.len();
    let next = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<Vec<Option<BucketReport>>>> = Arc::new(Mutex::new(vec![None; n]));
    let buckets = Arc::new(buckets);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..(args.concurrency as usize).min(n.max(1)) {
        let (shared, next, results, buckets) = (
            shared.clone(),
            next.clone(),
            results.clone(),
            buckets.clone(),
        );
        workers.spawn(async move {
            let mut conns = Conns::new(shared.clone());
            loop {
                if shared.interrupt.fired() {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&b) = buckets.get(i) else { break };
                let rep = engine::sync_bucket(&mut conns, b).await;
                results.lock()[i] = Some(rep);
            }
        });
    }
    let ticker = {
        let (shared, progress, total_requests) =
            (shared.clone(), progress.clone(), total_requests.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let l = &shared.live;
                let done = l.buckets_done.load(Ordering::Relaxed);
                let secs = start.elapsed().as_secs_f64().max(0.001);
                let rate = total_requests.load(Ordering::Relaxed) as f64 / secs;
                progress.update(
                    done,
                    n as u64,
                    &format!(
                        "buckets {done}/{n} keys-compared {} differing {} repaired {} rate {rate:.0}/s",
                        l.keys_compared.load(Ordering::Relaxed),
                        l.differing.load(Ordering::Relaxed),
                        l.repaired.load(Ordering::Relaxed),
                    ),
                );
            }
        })
    };
    while let Some(r) = workers.join_next().await {
        if let Err(e) = r {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    ticker.abort();
    progress.finish();
    let finished_at = chrono::Utc::now();

    let reports: Vec<BucketReport> = {
        let mut res = results.lock();
        res.iter_mut()
            .zip(buckets.iter())
            .map(|(r, &b)| {
                r.take()
                    .unwrap_or_else(|| engine::not_started(&route, b, args.no_backups))
            })
            .collect()
    };
    let answered = shared
        .nodes
        .values()
        .any(|n| n.answered.load(Ordering::Relaxed));
    let code = if interrupt.fired() {
        exit::INTERRUPTED
    } else if !answered && !reports.is_empty() {
        exit::RUNTIME
    } else if reports.iter().any(|r| r.state.leaves_work()) {
        exit::FOUND
    } else {
        exit::OK
    };

    if g.json {
        let doc = json!({
            "tool": "beansctl sync",
            "version": crate::cli::version(),
            "started_at": rfc3339(started_at),
            "finished_at": rfc3339(finished_at),
            "route": args.route,
            "dry_run": args.dry_run,
            "options": options_json(&args, &lock_path),
            "buckets": reports,
            "totals": report::totals(&reports),
            "duration_ms": start.elapsed().as_millis() as u64,
            "nodes": nodes_json(&shared),
            "interrupted": interrupt.fired(),
            "exit_code": code,
        });
        println!("{doc}");
    } else {
        print!(
            "{}",
            report::text(&header(&args, &route), &reports, args.dry_run)
        );
    }
    if code == exit::RUNTIME {
        CliError::runtime(anyhow::anyhow!("no node of the cluster is reachable"))
            .with_hint("check --route and that the nodes are running")
            .report(&mut std::io::stderr().lock());
    }
    Ok(code)
}

/// Requests sent to each node (additive field: lets operators and tests check `--rate`).
fn nodes_json(shared: &Shared) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    let mut addrs: Vec<&String> = shared.nodes.keys().collect();
    addrs.sort();
    for a in addrs {
        if let Some(n) = shared.nodes.get(a) {
            m.insert(
                a.clone(),
                json!({ "requests": n.requests.load(Ordering::Relaxed) }),
            );
        }
    }
    serde_json::Value::Object(m)
}

fn options_json(a: &SyncArgs, lock_path: &std::path::Path) -> serde_json::Value {
    json!({
        "bucket": a.bucket,
        "rate": a.rate,
        "concurrency": a.concurrency,
        "hot_seconds": a.hot_seconds,
        "full": a.full,
        "max_diff_keys": a.max_diff_keys,
        "tombstone_minority": a.tombstone_minority,
        "allow_partial": a.allow_partial,
        "no_backups": a.no_backups,
        "drain_backups": a.drain_backups,
        "lock_file": lock_path.display().to_string(),
        "decisions": a.decisions.as_ref().map(|p| p.display().to_string()),
    })
}

/// The text report's first line: route, mode and options.
fn header(a: &SyncArgs, route: &beansdb_route::Route) -> String {
    let on = |b: bool| if b { "on" } else { "off" };
    let buckets = if a.bucket.is_empty() {
        format!("all({})", route.numbucket)
    } else {
        a.bucket.join(",")
    };
    let backups = if a.no_backups {
        "off"
    } else if a.drain_backups {
        "drain"
    } else {
        "source"
    };
    let minority = match a.tombstone_minority {
        TombstoneMinority::Hold => "hold",
        TombstoneMinority::Delete => "delete",
        TombstoneMinority::Restore => "restore",
    };
    format!(
        "sync route={} mode={} buckets={buckets} rate={} concurrency={} hot-seconds={} full={} \
         max-diff-keys={} tombstone-minority={minority} allow-partial={} backups={backups}",
        a.route,
        if a.dry_run { "dry-run" } else { "repair" },
        if a.rate == 0 {
            "unlimited".to_string()
        } else {
            format!("{}/s", a.rate)
        },
        a.concurrency,
        a.hot_seconds,
        on(a.full),
        a.max_diff_keys,
        on(a.allow_partial),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_ids() {
        assert_eq!(parse_buckets(&[], 16).ok(), Some((0..16).collect()));
        assert_eq!(
            parse_buckets(&["a".into(), "3".into(), "a".into()], 16).ok(),
            Some(vec![3, 10])
        );
        assert_eq!(parse_buckets(&["ff".into()], 256).ok(), Some(vec![255]));
        for bad in ["g", "10", "", "-1", "0x1"] {
            let e = parse_buckets(&[bad.into()], 16).err().map(|e| e.code);
            assert_eq!(e, Some(exit::USAGE), "{bad}");
        }
    }
}
