//! `beansctl gc` (status, plan, run, cancel) and `beansctl gc-schedule` (tools.md §2): manual
//! garbage collection through the node's HTTP admin port (node.md §6.4, §8).
//!
//! Exit codes: 0 = done; 1 = nothing to collect, a GC already running, a cancel with nothing
//! to cancel, or a waited GC that stopped with an error (gc-schedule: nothing collectable
//! under `--min-free`); 2 = usage (including a bucket the node does not serve); 3 = node
//! unreachable; 4 = another gc-schedule holds the lock; 130 = interrupted while waiting.

pub mod http;
pub mod nodes;
mod schedule;

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use self::nodes::{
    bucket_running, gc_error_class, last_gc_error, load_route, parse_bucket, route_nodes, GcReply,
    NodeState, NodeWeb, WebOpts,
};
use crate::cli::GlobalOpts;
use crate::error::{exit, CliError, CliResult};
use crate::interrupt::Interrupt;
use crate::output::Progress;
use crate::units::{human_bytes, human_duration, parse_duration};

pub use self::schedule::{run_schedule, GcScheduleArgs};

#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(subcommand)]
    pub action: GcAction,
}

#[derive(Debug, Subcommand)]
pub enum GcAction {
    /// One row per node × bucket: state, last GC, next GC chunk, disk use
    Status(StatusArgs),
    /// Dry run: the chunk range a GC would collect now
    Plan(PlanArgs),
    /// Start a GC (and with --wait, wait for its result)
    Run(RunArgs),
    /// Stop a running GC between two source chunks
    Cancel(CancelArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Cluster route: route.yaml, a conf dir, or an http:// node/proxy web URL
    #[arg(
        long,
        value_name = "SRC",
        conflicts_with = "node",
        required_unless_present = "node"
    )]
    pub route: Option<String>,
    /// Node memcached address (web port derived) or http://host:webport (repeatable)
    #[arg(long, value_name = "ADDR", num_args = 1..)]
    pub node: Vec<String>,
    /// Only these hex buckets (comma list or repeated)
    #[arg(long, value_delimiter = ',', num_args = 1.., value_parser = parse_bucket, value_name = "B")]
    pub bucket: Vec<usize>,
    #[command(flatten)]
    pub web: WebOpts,
}

/// The range options shared by `plan` and `run` (node.md §6.4 "Range").
#[derive(Debug, Clone, Args)]
pub struct RangeOpts {
    /// Node memcached address (web port derived) or http://host:webport
    #[arg(long, value_name = "ADDR")]
    pub node: String,
    /// Bucket id (hex)
    #[arg(long, value_parser = parse_bucket, value_name = "B")]
    pub bucket: usize,
    /// First chunk (default: the bucket's NextGCChunk)
    #[arg(long, value_name = "N")]
    pub start: Option<u32>,
    /// Last chunk (default: the newest chunk old enough)
    #[arg(long, value_name = "N")]
    pub end: Option<u32>,
    /// Keep chunks newer than N days (default: the node's no_gc_days)
    #[arg(long, value_name = "N")]
    pub nogcdays: Option<u32>,
    /// Write merged hint files (.idx.m)
    #[arg(long)]
    pub merge: bool,
    #[command(flatten)]
    pub web: WebOpts,
}

impl RangeOpts {
    fn params(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if let Some(s) = self.start {
            p.push(("start", s.to_string()));
        }
        if let Some(e) = self.end {
            p.push(("end", e.to_string()));
        }
        if let Some(d) = self.nogcdays {
            p.push(("nogcdays", d.to_string()));
        }
        if self.merge {
            p.push(("merge", "true".to_string()));
        }
        p
    }
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub range: RangeOpts,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub range: RangeOpts,
    /// Wait until the GC ends and report its result
    #[arg(long)]
    pub wait: bool,
    /// Poll interval while waiting
    #[arg(long, default_value = "5s", value_parser = parse_poll, value_name = "DUR")]
    pub poll: Duration,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Node memcached address (web port derived) or http://host:webport
    #[arg(long, value_name = "ADDR")]
    pub node: String,
    /// Bucket id (hex)
    #[arg(long, value_parser = parse_bucket, value_name = "B")]
    pub bucket: usize,
    #[command(flatten)]
    pub web: WebOpts,
}

pub(crate) fn parse_poll(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(10) {
        return Err("must be at least 10ms".into());
    }
    Ok(d)
}

/// Entry point of `beansctl gc`.
pub fn run(args: GcArgs, g: &GlobalOpts) -> CliResult<u8> {
    match args.action {
        GcAction::Status(a) => status(&a, g),
        GcAction::Plan(a) => plan(&a, g),
        GcAction::Run(a) => run_gc(&a, g),
        GcAction::Cancel(a) => cancel(&a, g),
    }
}

/// Bucket ids print as `%x` with up to 16 buckets, `%02x` above (as the node does).
pub(crate) fn bucket_text(b: usize, wide: bool) -> String {
    if wide {
        format!("{b:02x}")
    } else {
        format!("{b:x}")
    }
}

fn print_json(v: &Value) {
    println!("{v}");
}

// ------------------------------------------------------------------------------------------------
// status

fn status(a: &StatusArgs, g: &GlobalOpts) -> CliResult<u8> {
    let (addrs, wide) = match &a.route {
        Some(src) => {
            let route = load_route(src, g.connect_timeout, g.timeout)?;
            (route_nodes(&route), route.numbucket > 16)
        }
        None => (a.node.clone(), false),
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut nodes_json = Vec::new();
    let mut failed = 0usize;
    for addr in &addrs {
        let node = NodeWeb::new(addr, &a.web, g.connect_timeout, g.timeout)?;
        let st = match NodeState::fetch(&node) {
            Ok(s) => s,
            Err(e) => {
                failed += 1;
                if !g.json {
                    eprintln!("warning: {}", e.error);
                }
                nodes_json.push(json!({"node": addr, "web": node.base, "error": format!("{:#}", e.error), "buckets": []}));
                continue;
            }
        };
        let wide = wide
            || st
                .buckets
                .iter()
                .any(|b| b["ID"].as_u64().unwrap_or(0) >= 16);
        let mut buckets_json = Vec::new();
        for info in &st.buckets {
            let Some(id) = info["ID"].as_u64().map(|i| i as usize) else {
                continue;
            };
            if !a.bucket.is_empty() && !a.bucket.contains(&id) {
                continue;
            }
            let running = bucket_running(info) || st.query_running.contains_key(&id);
            let last = &info["LastGC"];
            let has_last = last.is_object();
            let dash = || "-".to_string();
            rows.push(vec![
                addr.clone(),
                bucket_text(id, wide),
                if running { "running" } else { "idle" }.to_string(),
                if has_last {
                    format!("{}→{}", last["Src"], last["Dst"])
                } else {
                    dash()
                },
                if has_last {
                    format!("{}..{}", last["Begin"], last["End"])
                } else {
                    dash()
                },
                last["BeginTS"]
                    .as_str()
                    .map(short_time)
                    .unwrap_or_else(dash),
                if has_last {
                    format!(
                        "{} ({} rec)",
                        human_bytes(last["SizeReleased"].as_u64().unwrap_or(0)),
                        last["NumReleased"].as_u64().unwrap_or(0)
                    )
                } else {
                    dash()
                },
                if has_last {
                    human_bytes(last["SizeBroken"].as_u64().unwrap_or(0))
                } else {
                    dash()
                },
                info["NextGCChunk"].to_string(),
                human_bytes(info["DU"].as_u64().unwrap_or(0)),
                last_gc_error(last).unwrap_or_else(dash),
            ]);
            buckets_json.push(json!({
                "bucket": bucket_text(id, wide),
                "state": if running { "running" } else { "idle" },
                "next_gc": info["NextGCChunk"],
                "du": info["DU"],
                "hint_state": info["HintState"],
                "pos": info["Pos"],
                "last_gc": last,
                "query": st.query_running.get(&id),
            }));
        }
        nodes_json
            .push(json!({"node": addr, "web": node.base, "error": null, "buckets": buckets_json}));
    }
    let code = if failed == addrs.len() && !addrs.is_empty() {
        exit::RUNTIME
    } else if failed > 0 {
        exit::FOUND
    } else {
        exit::OK
    };
    if g.json {
        print_json(&json!({
            "tool": "beansctl gc status",
            "version": crate::cli::version(),
            "nodes": nodes_json,
            "exit_code": code,
        }));
    } else {
        let header = [
            "NODE",
            "BUCKET",
            "STATE",
            "SRC→DST",
            "RANGE",
            "STARTED",
            "RELEASED",
            "BROKEN",
            "NEXTGC",
            "DU",
            "LAST_ERROR",
        ];
        print!("{}", table(&header, &rows));
    }
    if code == exit::RUNTIME {
        return Err(CliError::runtime(anyhow!("no node answered")));
    }
    Ok(code)
}

/// `2024-05-01T10:00:00.123456789+08:00` → `2024-05-01 10:00:00`.
fn short_time(ts: &str) -> String {
    if ts.starts_with("0001-") {
        return "-".into();
    }
    let t = ts.replacen('T', " ", 1);
    t.get(..19).map(str::to_string).unwrap_or(t)
}

/// Left-aligned columns separated by two spaces.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let fmt = |cells: Vec<&str>| {
        let mut line = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                line.push_str(c);
            } else {
                line.push_str(c);
                let pad = widths[i] - c.chars().count() + 2;
                line.push_str(&" ".repeat(pad));
            }
        }
        line.trim_end().to_string() + "\n"
    };
    let mut out = fmt(header.to_vec());
    for r in rows {
        out.push_str(&fmt(r.iter().map(String::as_str).collect()));
    }
    out
}

// ------------------------------------------------------------------------------------------------
// plan / run / cancel

/// A node's refusal as the exit code its class calls for.
fn refused(node: &NodeWeb, bucket: &str, msg: &str, g: &GlobalOpts, tool: &str) -> CliResult<u8> {
    let (code, hint) = gc_error_class(msg);
    if nodes::is_nothing_to_gc(msg) {
        if g.json {
            print_json(&json!({"tool": tool, "node": node.addr, "bucket": bucket,
                               "result": "nothing", "message": msg, "exit_code": code}));
        } else {
            println!("nothing to collect on {} bucket {bucket}: {msg}", node.addr);
        }
        return Ok(code);
    }
    let mut e = CliError::new(
        code,
        anyhow!("node {} refused gc of bucket {bucket}: {msg}", node.addr),
    );
    if let Some(h) = hint {
        e = e.with_hint(h);
    }
    Err(e)
}

fn plan(a: &PlanArgs, g: &GlobalOpts) -> CliResult<u8> {
    let r = &a.range;
    let node = NodeWeb::new(&r.node, &r.web, g.connect_timeout, g.timeout)?;
    let b = bucket_text(r.bucket, r.bucket >= 16);
    match node.gc(&b, &r.params())? {
        GcReply::Err(msg) => refused(&node, &b, &msg, g, "beansctl gc plan"),
        GcReply::Plan {
            start, end, merge, ..
        } => {
            let files = u64::from(end.saturating_sub(start)) + 1;
            if g.json {
                print_json(
                    &json!({"tool": "beansctl gc plan", "node": node.addr, "bucket": b,
                                   "start": start, "end": end, "files": files, "merge": merge,
                                   "pretend": true, "exit_code": 0}),
                );
            } else {
                println!(
                    "plan {} bucket {b}: chunks {start}..{end} ({files} {}), merge {merge}",
                    node.addr,
                    if files == 1 { "file" } else { "files" }
                );
            }
            Ok(exit::OK)
        }
    }
}

fn run_gc(a: &RunArgs, g: &GlobalOpts) -> CliResult<u8> {
    let r = &a.range;
    let node = NodeWeb::new(&r.node, &r.web, g.connect_timeout, g.timeout)?;
    let b = bucket_text(r.bucket, r.bucket >= 16);
    let mut params = r.params();
    params.insert(0, ("run", "true".to_string()));
    let (start, end) = match node.gc(&b, &params)? {
        GcReply::Err(msg) => return refused(&node, &b, &msg, g, "beansctl gc run"),
        GcReply::Plan { start, end, .. } => (start, end),
    };
    if !a.wait {
        if g.json {
            print_json(
                &json!({"tool": "beansctl gc run", "node": node.addr, "bucket": b,
                               "start": start, "end": end, "result": "started", "exit_code": 0}),
            );
        } else {
            println!(
                "GC started on {} bucket {b} (chunks {start}..{end})",
                node.addr
            );
        }
        return Ok(exit::OK);
    }
    if !g.json && !g.quiet {
        eprintln!(
            "GC started on {} bucket {b} (chunks {start}..{end}); waiting",
            node.addr
        );
    }
    let outcome = wait_gc(&node, &b, start, end, a.poll, g)?;
    report_outcome(&node, &b, &outcome, g, "beansctl gc run")
}

/// The end of a waited GC.
pub(crate) enum WaitOutcome {
    Done(Value),
    Interrupted,
}

/// Polls `/bucket/<hex>` until `LastGC.Running` is false (tools.md §2 `run --wait`).
pub(crate) fn wait_gc(
    node: &NodeWeb,
    bucket: &str,
    start: u32,
    end: u32,
    poll: Duration,
    g: &GlobalOpts,
) -> CliResult<WaitOutcome> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(CliError::runtime)?;
    let progress = Progress::new("gc", g);
    let began = Instant::now();
    let outcome = rt.block_on(async {
        let intr = Interrupt::install();
        loop {
            let info = node.get_json(&format!("/bucket/{bucket}"))?;
            let last = &info["LastGC"];
            if last.is_object() && !bucket_running(&info) {
                return Ok(WaitOutcome::Done(last.clone()));
            }
            let src = last["Src"].as_u64().unwrap_or(u64::from(start));
            let len = u64::from(end.saturating_sub(start)) + 1;
            progress.update(
                src.saturating_sub(u64::from(start)),
                len,
                &format!(
                    "bucket {bucket} chunk {src} of {start}..{end} released {} elapsed {}",
                    human_bytes(last["SizeReleased"].as_u64().unwrap_or(0)),
                    human_duration(began.elapsed())
                ),
            );
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = intr.wait() => return Ok(WaitOutcome::Interrupted),
            }
        }
    });
    progress.finish();
    outcome
}

pub(crate) fn report_outcome(
    node: &NodeWeb,
    bucket: &str,
    outcome: &WaitOutcome,
    g: &GlobalOpts,
    tool: &str,
) -> CliResult<u8> {
    let last = match outcome {
        WaitOutcome::Interrupted => {
            eprintln!(
                "interrupted: stopped waiting; the GC keeps running on {} (see `beansctl gc status`)",
                node.addr
            );
            return Ok(exit::INTERRUPTED);
        }
        WaitOutcome::Done(last) => last,
    };
    let err = last_gc_error(last);
    let code = if err.is_some() { exit::FOUND } else { exit::OK };
    if g.json {
        print_json(&json!({"tool": tool, "node": node.addr, "bucket": bucket,
                           "result": match &err { Some(e) => format!("error: {e}"), None => "ok".into() },
                           "last_gc": last, "exit_code": code}));
    } else {
        let what = format!(
            "chunks {}..{} → dst {}, released {} records ({}), deleted {}, broken {}",
            last["Begin"],
            last["End"],
            last["Dst"],
            last["NumReleased"].as_u64().unwrap_or(0),
            human_bytes(last["SizeReleased"].as_u64().unwrap_or(0)),
            last["NumReleasedDeleted"].as_u64().unwrap_or(0),
            human_bytes(last["SizeBroken"].as_u64().unwrap_or(0)),
        );
        match &err {
            None => println!("GC finished on {} bucket {bucket}: {what}", node.addr),
            Some(e) => println!(
                "GC on {} bucket {bucket} stopped with an error: {e} ({what})",
                node.addr
            ),
        }
    }
    Ok(code)
}

fn cancel(a: &CancelArgs, g: &GlobalOpts) -> CliResult<u8> {
    let node = NodeWeb::new(&a.node, &a.web, g.connect_timeout, g.timeout)?;
    let b = bucket_text(a.bucket, a.bucket >= 16);
    let body = node.get_text(&format!("/gc/{b}?cancel=true"))?;
    let msg = nodes::strip_html(&body);
    let cancelled = msg.contains("cancel gc on bucket");
    let code = if cancelled { exit::OK } else { exit::FOUND };
    if g.json {
        print_json(
            &json!({"tool": "beansctl gc cancel", "node": node.addr, "bucket": b,
                           "cancelled": cancelled, "message": msg, "exit_code": code}),
        );
    } else {
        println!("{}: {msg}", node.addr);
    }
    Ok(code)
}
