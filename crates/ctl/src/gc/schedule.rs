//! `beansctl gc-schedule` (tools.md §2 policy, modelled on beansdbadmin): find the fullest
//! disk, dry-run GC for its buckets, start the one with the most collectable files.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use serde_json::{json, Value};

use super::nodes::{
    bucket_running, last_gc_error, load_route, route_nodes, GcReply, NodeState, NodeWeb, WebOpts,
};
use super::{bucket_text, parse_poll, report_outcome, wait_gc, WaitOutcome};
use crate::cli::GlobalOpts;
use crate::error::{exit, CliError, CliResult};
use crate::units::{human_bytes, parse_size};

#[derive(Debug, Args)]
pub struct GcScheduleArgs {
    /// Cluster route: route.yaml, a conf dir, or an http:// node/proxy web URL
    #[arg(long, value_name = "SRC")]
    pub route: String,
    /// Pick a bucket but start nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Only consider disks with less free space than this
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub min_free: Option<u64>,
    /// Never pick this node's bucket (ADDR:B; several values or repeated)
    #[arg(long, value_name = "ADDR:B", num_args = 1..)]
    pub exclude: Vec<String>,
    /// Keep chunks newer than N days (default: each node's no_gc_days)
    #[arg(long, value_name = "N")]
    pub nogcdays: Option<u32>,
    /// Write merged hint files (.idx.m)
    #[arg(long)]
    pub merge: bool,
    /// Wait until the started GC ends and report its result
    #[arg(long)]
    pub wait: bool,
    /// Poll interval while waiting
    #[arg(long, default_value = "5s", value_parser = parse_poll, value_name = "DUR")]
    pub poll: Duration,
    /// Append one JSON line per run to this file
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Lock file (default: one per cluster in the temp dir)
    #[arg(long, value_name = "PATH")]
    pub lock_file: Option<PathBuf>,
    #[command(flatten)]
    pub web: WebOpts,
}

/// An exclusive flock held for the run; released when the process exits.
struct Lock {
    _file: File,
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn default_lock_path(addrs: &[String]) -> PathBuf {
    let mut sorted = addrs.to_vec();
    sorted.sort();
    // Any stable digest works: the name only has to be equal for equal clusters.
    let digest = beansdb_hash::keyhash(sorted.join(",").as_bytes());
    std::env::temp_dir().join(format!("beansctl-gc-schedule-{digest:016x}.lock"))
}

fn take_lock(path: &PathBuf) -> CliResult<Lock> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| {
            CliError::runtime(
                anyhow::Error::new(e).context(format!("cannot open lock file {}", path.display())),
            )
        })?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let mut holder = String::new();
        let _ = f.read_to_string(&mut holder);
        let mut parts = holder.split_whitespace();
        let (pid, host, since) = (
            parts.next().unwrap_or("?"),
            parts.next().unwrap_or("?"),
            parts.next().unwrap_or("?"),
        );
        return Err(CliError::new(
            exit::LOCKED,
            anyhow!(
                "another gc-schedule is running against this cluster (pid {pid} on {host} since {since})"
            ),
        )
        .with_hint(format!("lock file {}", path.display())));
    }
    let stamp = format!(
        "{} {} {}\n",
        std::process::id(),
        hostname(),
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    );
    let _ = f.set_len(0);
    let _ = f.rewind();
    let _ = f.write_all(stamp.as_bytes());
    Ok(Lock { _file: f })
}

/// One disk of one node (`/du` `Disks` entry).
struct Disk {
    node: usize,
    root: String,
    all: u64,
    used: u64,
    free: u64,
    buckets: Vec<usize>,
}

impl Disk {
    fn used_ratio(&self) -> f64 {
        if self.all == 0 {
            0.0
        } else {
            self.used as f64 / self.all as f64
        }
    }
}

/// A dry-run result for one bucket.
struct Candidate {
    bucket: usize,
    size: u64,
    range: Result<(u32, u32), String>,
}

impl Candidate {
    fn files(&self) -> u64 {
        match self.range {
            Ok((s, e)) => u64::from(e.saturating_sub(s)) + 1,
            Err(_) => 0,
        }
    }
}

fn parse_exclude(s: &str) -> CliResult<(String, usize)> {
    let bad = || {
        CliError::usage(format!(
            "--exclude {s:?} is not ADDR:B (e.g. 127.0.0.1:7900:3)"
        ))
    };
    let (addr, b) = s.rsplit_once(':').ok_or_else(bad)?;
    let b = super::nodes::parse_bucket(b).map_err(|_| bad())?;
    if addr.is_empty() {
        return Err(bad());
    }
    Ok((addr.to_string(), b))
}

/// Entry point of `beansctl gc-schedule`.
pub fn run_schedule(a: GcScheduleArgs, g: &GlobalOpts) -> CliResult<u8> {
    let excludes = a
        .exclude
        .iter()
        .map(|s| parse_exclude(s))
        .collect::<CliResult<Vec<_>>>()?;
    let route = load_route(&a.route, g.connect_timeout, g.timeout)?;
    let addrs = route_nodes(&route);
    let wide = route.numbucket > 16;
    let lock_path = a
        .lock_file
        .clone()
        .unwrap_or_else(|| default_lock_path(&addrs));
    let _lock = take_lock(&lock_path)?;

    let mut out = Vec::<String>::new();
    let mut nodes = Vec::new();
    let mut states = Vec::new();
    let mut dus = Vec::new();
    for addr in &addrs {
        let node = NodeWeb::new(addr, &a.web, g.connect_timeout, g.timeout)?;
        let fetched = NodeState::fetch(&node).and_then(|st| Ok((st, node.get_json("/du")?)));
        match fetched {
            Ok((st, du)) => {
                nodes.push(node);
                states.push(st);
                dus.push(du);
            }
            Err(e) => eprintln!("warning: {:#}; node left out", e.error),
        }
    }
    if nodes.is_empty() {
        return Err(CliError::runtime(anyhow!(
            "no node of the route answered on its web port"
        )));
    }

    // Step 2: never start a second GC while one runs anywhere.
    for (i, st) in states.iter().enumerate() {
        let running = st
            .buckets
            .iter()
            .find(|b| bucket_running(b))
            .and_then(|b| b["ID"].as_u64().map(|x| x as usize))
            .or_else(|| st.query_running.keys().next().copied());
        if let Some(b) = running {
            let msg = format!(
                "GC already running on {} bucket {}; nothing scheduled",
                nodes[i].addr,
                bucket_text(b, wide)
            );
            return finish(&a, g, &out, None, &msg, "already_running", exit::OK, &[]);
        }
    }

    // Step 3: candidate disks, fullest first.
    let mut disks = Vec::new();
    for (i, du) in dus.iter().enumerate() {
        let Some(m) = du["Disks"].as_object() else {
            continue;
        };
        for (root, d) in m {
            disks.push(Disk {
                node: i,
                root: root.clone(),
                all: d["All"].as_u64().unwrap_or(0),
                used: d["Used"].as_u64().unwrap_or(0),
                free: d["Free"].as_u64().unwrap_or(0),
                buckets: d["Buckets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|b| b.as_u64().map(|x| x as usize))
                    .collect(),
            });
        }
    }
    if let Some(min) = a.min_free {
        disks.retain(|d| d.free < min);
    }
    disks.sort_by(|x, y| {
        y.used_ratio()
            .partial_cmp(&x.used_ratio())
            .unwrap_or(Ordering::Equal)
            .then(x.free.cmp(&y.free))
    });

    // Step 4: dry-run the buckets of each disk until one has something to collect.
    let mut disks_json = Vec::new();
    let mut chosen: Option<(usize, Candidate, String)> = None;
    for d in &disks {
        let node = &nodes[d.node];
        let served = route.served_by(&node.addr);
        let sizes: BTreeMap<String, u64> = dus[d.node]["BucketsHex"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        let size_of = |b: usize| {
            sizes
                .get(&format!("{b:x}"))
                .or_else(|| sizes.get(&format!("{b:02x}")))
                .copied()
                .unwrap_or(0)
        };
        out.push(format!(
            "disk {} {}  used {:.1}%  free {} of {}",
            node.addr,
            d.root,
            d.used_ratio() * 100.0,
            human_bytes(d.free),
            human_bytes(d.all)
        ));
        let mut cands = Vec::new();
        for &b in &d.buckets {
            if !served.get(b).copied().unwrap_or(false)
                || excludes.iter().any(|(ad, eb)| *ad == node.addr && *eb == b)
            {
                continue;
            }
            let mut params = Vec::new();
            if let Some(n) = a.nogcdays {
                params.push(("nogcdays", n.to_string()));
            }
            if a.merge {
                params.push(("merge", "true".to_string()));
            }
            let range = match node.gc(&bucket_text(b, wide), &params) {
                Ok(GcReply::Plan { start, end, .. }) => Ok((start, end)),
                Ok(GcReply::Err(m)) => Err(m),
                Err(e) => Err(format!("{:#}", e.error)),
            };
            cands.push(Candidate {
                bucket: b,
                size: size_of(b),
                range,
            });
        }
        // Most files; ties to the larger bucket, then the lower id.
        let best = cands
            .iter()
            .enumerate()
            .filter(|(_, c)| c.files() > 0)
            .max_by(|(_, x), (_, y)| {
                x.files()
                    .cmp(&y.files())
                    .then(x.size.cmp(&y.size))
                    .then(y.bucket.cmp(&x.bucket))
            })
            .map(|(i, _)| i);
        let width = cands
            .iter()
            .map(|c| match c.range {
                Ok((s, e)) => format!("{s}..{e}").len(),
                Err(_) => 0,
            })
            .max()
            .unwrap_or(0);
        let mut bjson = Vec::new();
        for (i, c) in cands.iter().enumerate() {
            let bt = bucket_text(c.bucket, wide);
            let selected = Some(i) == best;
            match &c.range {
                Ok((s, e)) => {
                    let files = c.files();
                    out.push(format!(
                        "  bucket {bt}  chunks {:<width$}  {files} {}{}",
                        format!("{s}..{e}"),
                        if files == 1 { "file" } else { "files" },
                        if selected { "   <- selected" } else { "" }
                    ));
                    bjson.push(json!({"bucket": bt, "start": s, "end": e, "files": files,
                                      "size": c.size, "selected": selected}));
                }
                Err(m) => {
                    out.push(format!("  bucket {bt}  {m}"));
                    bjson.push(json!({"bucket": bt, "files": 0, "size": c.size,
                                      "message": m, "selected": false}));
                }
            }
        }
        disks_json.push(
            json!({"node": node.addr, "root": d.root, "all": d.all, "used": d.used,
                               "free": d.free, "used_ratio": d.used_ratio(), "buckets": bjson}),
        );
        if let Some(i) = best {
            let c = cands.swap_remove(i);
            chosen = Some((d.node, c, d.root.clone()));
            break;
        }
    }

    // Step 5: nothing anywhere.
    let Some((ni, cand, root)) = chosen else {
        let code = if a.min_free.is_some() {
            exit::FOUND
        } else {
            exit::OK
        };
        let msg = if disks.is_empty() && a.min_free.is_some() {
            "nothing collectable: no disk has less free space than --min-free".to_string()
        } else {
            "nothing collectable".to_string()
        };
        return finish(&a, g, &out, None, &msg, "nothing", code, &disks_json);
    };

    // Step 6: start it.
    let node = &nodes[ni];
    let bt = bucket_text(cand.bucket, wide);
    let (start, end) = cand.range.clone().unwrap_or((0, 0));
    let free = disks
        .iter()
        .find(|d| d.node == ni && d.root == root)
        .map_or(0, |d| d.free);
    let mut hist = json!({
        "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "node": node.addr, "bucket": bt, "disk": root, "free": free, "start": start,
        "end": end, "files": cand.files(), "dry_run": a.dry_run, "result": "dry_run",
        "released": Value::Null,
    });
    if a.dry_run {
        let msg = format!(
            "would start GC on {} bucket {bt} (chunks {start}..{end}); dry run, nothing started",
            node.addr
        );
        append_history(&a, &hist);
        return finish(
            &a,
            g,
            &out,
            Some(&hist),
            &msg,
            "dry_run",
            exit::OK,
            &disks_json,
        );
    }
    let mut params = vec![("run", "true".to_string())];
    if let Some(n) = a.nogcdays {
        params.push(("nogcdays", n.to_string()));
    }
    if a.merge {
        params.push(("merge", "true".to_string()));
    }
    let started = match node.gc(&bt, &params) {
        Ok(GcReply::Plan { start, end, .. }) => Ok((start, end)),
        Ok(GcReply::Err(m)) => Err(m),
        Err(e) => Err(format!("{:#}", e.error)),
    };
    let (start, end) = match started {
        Ok(r) => r,
        Err(m) => {
            hist["result"] = format!("error: {m}").into();
            append_history(&a, &hist);
            let msg = format!("GC could not start on {} bucket {bt}: {m}", node.addr);
            finish(
                &a,
                g,
                &out,
                Some(&hist),
                &msg,
                "error",
                exit::RUNTIME,
                &disks_json,
            )?;
            return Err(CliError::runtime(anyhow!(msg)));
        }
    };
    hist["start"] = start.into();
    hist["end"] = end.into();
    hist["result"] = "started".into();
    let msg = format!(
        "GC started on {} bucket {bt} (chunks {start}..{end})",
        node.addr
    );
    if !a.wait {
        append_history(&a, &hist);
        return finish(
            &a,
            g,
            &out,
            Some(&hist),
            &msg,
            "started",
            exit::OK,
            &disks_json,
        );
    }
    if !g.json {
        for l in &out {
            println!("{l}");
        }
        println!("{msg}");
        out.clear();
    }
    let outcome = wait_gc(node, &bt, start, end, a.poll, g)?;
    if let WaitOutcome::Done(last) = &outcome {
        hist["result"] = match last_gc_error(last) {
            Some(e) => format!("error: {e}").into(),
            None => "ok".into(),
        };
        hist["released"] = last["SizeReleased"].clone();
    }
    append_history(&a, &hist);
    report_outcome(node, &bt, &outcome, g, "beansctl gc-schedule")
}

/// Prints the report (text lines and the final message, or one JSON document).
#[allow(clippy::too_many_arguments)]
fn finish(
    a: &GcScheduleArgs,
    g: &GlobalOpts,
    out: &[String],
    selected: Option<&Value>,
    msg: &str,
    result: &str,
    code: u8,
    disks: &[Value],
) -> CliResult<u8> {
    if g.json {
        println!(
            "{}",
            json!({
                "tool": "beansctl gc-schedule",
                "version": crate::cli::version(),
                "route": a.route,
                "dry_run": a.dry_run,
                "disks": disks,
                "selected": selected,
                "result": result,
                "message": msg,
                "exit_code": code,
            })
        );
    } else {
        for l in out {
            println!("{l}");
        }
        // An error goes to stderr as `error: …` instead.
        if result != "error" {
            println!("{msg}");
        }
    }
    Ok(code)
}

fn append_history(a: &GcScheduleArgs, v: &Value) {
    let Some(path) = &a.history else { return };
    let r = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| writeln!(f, "{v}"));
    if let Err(e) = r {
        eprintln!("warning: cannot append to {}: {e}", path.display());
    }
}
