//! `beansctl replay-errors` (cassandra.md §7.2): for every key named in dual-write error logs,
//! read beansdb's current state from the nodes and write it to Cassandra with a timestamp no
//! older than the failed write (`max(ts·1e6, ts_entry)`), so C* ends equal to beansdb while
//! later live writes still win. Running it twice yields the same state.

mod entries;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use beansdb_cassandra::BdbValue;
use beansdb_protocol::is_valid_write_key;
use clap::{ArgGroup, Args};
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::json;

use crate::cli::GlobalOpts;
use crate::error::{exit, CliError, CliResult};
use crate::interrupt::Interrupt;
use crate::migrate::cstar::{self, CstarArgs, CstarTarget, MapSource};
use crate::migrate::nodes::{BeansValue, Pool, Reader};
use crate::migrate::{
    key_text, record_row, record_ts_micros, Counter, Failures, KeyFailure, RecordRate,
};
use crate::output::{Progress, Ticker};

/// Keys replayed concurrently (cassandra.md §7.2).
const CONCURRENT_KEYS: usize = 4;

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("nodes").required(true).args(["route", "proxy"])))]
pub struct ReplayErrorsArgs {
    /// Dual-write error log files (plain or .gz)
    #[arg(long = "log", value_name = "FILE", required = true, num_args = 1..)]
    pub logs: Vec<PathBuf>,
    #[command(flatten)]
    pub cstar: CstarArgs,
    /// route.yaml path, conf dir, or http://host:port web address serving /route/
    #[arg(long, value_name = "SRC")]
    pub route: Option<String>,
    /// A proxy's web address: route from /route/, statuses and tables from /cstar-cfg
    #[arg(long, value_name = "HOST:PORT")]
    pub proxy: Option<String>,
    /// Only entries at or after TIME (RFC 3339 or unix seconds)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only entries at or before TIME (RFC 3339 or unix seconds)
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// At most N keys per second (burst N/10); 0 = unlimited
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub rate: u64,
    /// Print the planned statements and write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Append finished keys to FILE and skip keys it already lists with an equal or later entry
    #[arg(long, value_name = "FILE")]
    pub done_file: Option<PathBuf>,
}

#[derive(Default)]
struct Counters {
    lines: Counter,
    bad_lines: Counter,
    filtered: Counter,
    written: Counter,
    deleted: Counter,
    skipped_status: Counter,
    skipped_done: Counter,
    invalid_key: Counter,
    errors: Counter,
}

struct Ctx {
    target: CstarTarget,
    reader: Reader,
    dry_run: bool,
    rate: RecordRate,
    counters: Counters,
    failures: Failures<KeyFailure>,
    done_file: Option<Mutex<File>>,
    done_error: Mutex<Option<String>>,
    planned: Mutex<Vec<String>>,
    print_planned: bool,
}

/// What replay does for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Insert { value: BdbValue, ts_us: i64 },
    Delete { ts_us: i64 },
}

/// The table of cassandra.md §7.2 step 3.
fn action_for(state: BeansValue, ts_entry: i64) -> Action {
    match state {
        BeansValue::Live {
            flag, ts, value, ..
        } => Action::Insert {
            value: record_row(flag, ts, value),
            ts_us: record_ts_micros(ts, ts_entry),
        },
        BeansValue::Tomb { ts, .. } => Action::Delete {
            ts_us: record_ts_micros(ts, ts_entry),
        },
        BeansValue::Absent => Action::Delete { ts_us: ts_entry },
    }
}

impl Ctx {
    fn fail(&self, key: &[u8], error: String) {
        self.counters.errors.inc();
        self.failures.report("replay", key, error);
    }

    fn mark_done(&self, key: &[u8], ts_entry: i64, result: &str) {
        if let Some(f) = &self.done_file {
            let line = entries::done_line(key, ts_entry, result);
            if let Err(e) = f.lock().write_all(line.as_bytes()) {
                *self.done_error.lock() = Some(e.to_string());
            }
        }
    }

    async fn replay(&self, key: Vec<u8>, ts_entry: i64) {
        let c = &self.counters;
        if !is_valid_write_key(&key) {
            // The proxy never writes such keys to C*; nothing to repair.
            c.invalid_key.inc();
            return;
        }
        if !self.target.status_ok(&key) {
            c.skipped_status.inc();
            self.mark_done(&key, ts_entry, "skipped_status");
            return;
        }
        self.rate.acquire().await;
        let state = match self.reader.stable_read(&key).await {
            Ok(s) => s,
            Err(e) => return self.fail(&key, format!("beansdb: {e}")),
        };
        let store = match self.target.store_for(&key) {
            Ok(s) => s,
            Err(e) => return self.fail(&key, e),
        };
        let action = action_for(state, ts_entry);
        if self.dry_run {
            let line = match &action {
                Action::Insert { value, ts_us } => format!(
                    "INSERT INTO {} key={} {{rtime: {}, flag: {}, exptime: 0, cas: 0, body: {} bytes}} \
                     USING TIMESTAMP {ts_us}",
                    store.table(),
                    key_text(&key),
                    value.rtime_ms,
                    value.flag,
                    value.body.len()
                ),
                Action::Delete { ts_us } => format!(
                    "DELETE FROM {} USING TIMESTAMP {ts_us} WHERE key={}",
                    store.table(),
                    key_text(&key)
                ),
            };
            if self.print_planned {
                println!("{line}");
            }
            self.planned.lock().push(line);
            match action {
                Action::Insert { .. } => c.written.inc(),
                Action::Delete { .. } => c.deleted.inc(),
            }
            return;
        }
        let (res, counter, result) = match &action {
            Action::Insert { value, ts_us } => (
                store.set_value(&key, value, *ts_us).await,
                &c.written,
                "written",
            ),
            Action::Delete { ts_us } => (store.delete(&key, *ts_us).await, &c.deleted, "deleted"),
        };
        match res {
            Ok(()) => {
                counter.inc();
                self.mark_done(&key, ts_entry, result);
            }
            Err(e) => self.fail(&key, format!("cassandra: {e}")),
        }
    }
}

/// Entry point of `beansctl replay-errors`; returns the exit code.
pub fn run(args: ReplayErrorsArgs, g: &GlobalOpts) -> CliResult<u8> {
    crate::cli::block_on(run_async(args, g))
}

/// Reads every log: key → `ts_entry` (largest `ts_us` of its entries within the time window).
fn read_logs(
    args: &ReplayErrorsArgs,
    since: Option<i64>,
    until: Option<i64>,
    c: &Counters,
) -> CliResult<BTreeMap<Vec<u8>, i64>> {
    let mut keys: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for path in &args.logs {
        let name = path.display().to_string();
        let input = crate::replay::log::open_input(&name)
            .map_err(|e| CliError::usage(format!("cannot open log {name}: {e}")))?;
        for line in input.split(b'\n') {
            let line = line
                .map_err(|e| CliError::runtime(anyhow::anyhow!("cannot read log {name}: {e}")))?;
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            c.lines.inc();
            let Some(e) = entries::parse_line(line) else {
                c.bad_lines.inc();
                continue;
            };
            if since.is_some_and(|s| e.time_us < s) || until.is_some_and(|u| e.time_us > u) {
                c.filtered.inc();
                continue;
            }
            let ts = keys.entry(e.key).or_insert(e.ts_us);
            *ts = (*ts).max(e.ts_us);
        }
    }
    Ok(keys)
}

async fn run_async(args: ReplayErrorsArgs, g: &GlobalOpts) -> CliResult<u8> {
    let time_arg = |flag: &str, v: &Option<String>| -> CliResult<Option<i64>> {
        v.as_deref()
            .map(|s| {
                entries::parse_time_arg(s)
                    .map_err(|e| CliError::usage(format!("invalid value for {flag}: {e}")))
            })
            .transpose()
    };
    let since = time_arg("--since", &args.since)?;
    let until = time_arg("--until", &args.until)?;
    let resolved = cstar::resolve(&args.cstar, g)?;
    let counters = Counters::default();
    let keys = read_logs(&args, since, until, &counters)?;

    let done: BTreeMap<Vec<u8>, i64> = match &args.done_file {
        Some(p) if p.exists() => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                CliError::usage(format!("cannot read done file {}: {e}", p.display()))
            })?;
            entries::parse_done(&text)
        }
        _ => BTreeMap::new(),
    };
    let done_file = match (&args.done_file, args.dry_run) {
        (Some(p), false) => Some(Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| {
                    CliError::usage(format!("cannot open done file {}: {e}", p.display()))
                })?,
        )),
        _ => None,
    };

    // Route and maps: from the proxy, or from --route plus the proxy config.
    let (route, maps) = match (&args.proxy, &args.route) {
        (Some(proxy), _) => {
            let base = proxy.strip_prefix("http://").unwrap_or(proxy).to_string();
            let route = crate::sync::routesrc::load_with(
                &format!("http://{base}"),
                g.connect_timeout,
                g.timeout,
                true,
            )
            .await?;
            let get = |which: &'static str| {
                let base = base.clone();
                async move {
                    crate::sync::routesrc::http_get(
                        &base,
                        &format!("/cstar-cfg?config={which}"),
                        g.connect_timeout,
                        g.timeout,
                    )
                    .await
                    .map_err(|e| {
                        CliError::runtime(anyhow::anyhow!(
                            "cannot read /cstar-cfg?config={which} from {base}: {e}"
                        ))
                    })
                }
            };
            let rw = get("rwswitcher").await?;
            let tables = get("tablefinder").await?;
            let d = cstar::dispatchers_from_cstar_cfg(&rw, &tables)
                .map_err(|e| CliError::usage(format!("proxy {base}: {e}")))?;
            (route, MapSource::Fixed(d))
        }
        (None, Some(src)) => {
            let route =
                crate::sync::routesrc::load_with(src, g.connect_timeout, g.timeout, true).await?;
            (route, resolved.own_maps())
        }
        (None, None) => return Err(CliError::usage("pass --route SRC or --proxy HOST:PORT")),
    };
    let target = CstarTarget::open(&resolved, maps).await?;
    let pool = Arc::new(Pool::new(&route, g.client_config()));
    let ctx = Arc::new(Ctx {
        target,
        reader: Reader::new(route.clone(), pool.clone()),
        dry_run: args.dry_run,
        rate: RecordRate::new(args.rate),
        counters,
        failures: Failures::default(),
        done_file,
        done_error: Mutex::new(None),
        planned: Mutex::new(Vec::new()),
        print_planned: !g.json,
    });

    let total_keys = keys.len();
    let mut todo = Vec::with_capacity(total_keys);
    for (key, ts_entry) in keys {
        if done.get(&key).is_some_and(|d| *d >= ts_entry) {
            ctx.counters.skipped_done.inc();
        } else {
            todo.push((key, ts_entry));
        }
    }

    let interrupt = Interrupt::install();
    let progress = Progress::new("replay-errors", g);
    let start = Instant::now();
    let ticker = {
        let ctx = ctx.clone();
        let n = total_keys as u64;
        Ticker::start(progress, move || {
            let c = &ctx.counters;
            let finished = c.written.get()
                + c.deleted.get()
                + c.skipped_status.get()
                + c.skipped_done.get()
                + c.invalid_key.get()
                + c.errors.get();
            let msg = format!(
                "keys {finished}/{n} written {} deleted {} skipped {} errors {}",
                c.written.get(),
                c.deleted.get(),
                c.skipped_status.get() + c.skipped_done.get(),
                c.errors.get()
            );
            (finished, n, msg)
        })
    };
    {
        let ctx = ctx.clone();
        let interrupt = interrupt.clone();
        futures::stream::iter(todo)
            .take_while(|_| futures::future::ready(!interrupt.fired()))
            .for_each_concurrent(CONCURRENT_KEYS, |(key, ts)| {
                let ctx = ctx.clone();
                async move { ctx.replay(key, ts).await }
            })
            .await;
    }
    ticker.finish();

    let c = &ctx.counters;
    let elapsed = (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    if let Some(e) = ctx.done_error.lock().as_ref() {
        eprintln!("error: cannot append to the done file: {e}");
    }
    if g.json {
        let mut doc = json!({
            "lines": c.lines.get(),
            "bad_lines": c.bad_lines.get(),
            "keys": total_keys,
            "written": c.written.get(),
            "deleted": c.deleted.get(),
            "skipped_status": c.skipped_status.get(),
            "skipped_done": c.skipped_done.get(),
            "errors": c.errors.get(),
            "failures": ctx.failures.snapshot(),
            "elapsed_s": elapsed,
            "filtered": c.filtered.get(),
            "invalid_key": c.invalid_key.get(),
            "dry_run": args.dry_run,
            "interrupted": interrupt.fired(),
        });
        if args.dry_run {
            doc["planned"] = json!(*ctx.planned.lock());
        }
        println!("{doc}");
    } else {
        println!(
            "replay-errors {}lines={} bad_lines={} keys={total_keys} written={} deleted={} \
             skipped_status={} skipped_done={} errors={} elapsed={elapsed:.1}s",
            if args.dry_run { "(dry run) " } else { "" },
            c.lines.get(),
            c.bad_lines.get(),
            c.written.get(),
            c.deleted.get(),
            c.skipped_status.get(),
            c.skipped_done.get(),
            c.errors.get(),
        );
    }
    let unreachable = c.errors.get() > 0 && !pool.any_answered();
    Ok(if interrupt.fired() {
        exit::INTERRUPTED
    } else if unreachable {
        exit::RUNTIME
    } else if c.errors.get() > 0 || ctx.done_error.lock().is_some() {
        exit::FOUND
    } else {
        exit::OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_table() {
        let live = BeansValue::Live {
            ver: 3,
            flag: 7,
            ts: 100,
            value: b"v".to_vec(),
        };
        match action_for(live.clone(), 5) {
            Action::Insert { value, ts_us } => {
                assert_eq!(ts_us, 100_000_000);
                assert_eq!(
                    (value.rtime_ms, value.flag, value.exptime, value.cas),
                    (100_000, 7, 0, 0)
                );
                assert_eq!(value.body, b"v");
            }
            other => panic!("{other:?}"),
        }
        // A failed write later in the same second: ts_entry wins.
        match action_for(live, 100_500_000) {
            Action::Insert { ts_us, .. } => assert_eq!(ts_us, 100_500_000),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            action_for(BeansValue::Tomb { ver: -4, ts: 100 }, 7),
            Action::Delete { ts_us: 100_000_000 }
        );
        assert_eq!(
            action_for(BeansValue::Absent, 123),
            Action::Delete { ts_us: 123 }
        );
    }
}
