//! `beansproxy`: flags as gobeansproxy (`-confdir`, `-dumpconf`, `-version`; `--` forms too).
//! Exit codes: 0 normal stop, 1 fatal runtime error, 2 usage or configuration error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use beansdb_proxy::config::{errorlog_hint, Config};
use beansdb_proxy::logging::{self, ErrorLog};
use beansdb_proxy::server::{self, ServeError, Stopped};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Heap profiling sampled every 512 KiB, active from start (for /debug/pprof/heap).
#[allow(non_upper_case_globals)]
#[export_name = "malloc_conf"]
pub static malloc_conf: &[u8] = b"prof:true,prof_active:true,lg_prof_sample:19\0";

const USAGE: &str = "usage: beansproxy -confdir DIR [-dumpconf] [-version]";

struct Args {
    confdir: Option<PathBuf>,
    dumpconf: bool,
    version: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        confdir: None,
        dumpconf: false,
        version: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(format!("unexpected argument {arg:?}\n{USAGE}"));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        match name {
            "confdir" => {
                let v = inline
                    .or_else(|| it.next())
                    .ok_or_else(|| format!("flag -confdir needs a value\n{USAGE}"))?;
                a.confdir = Some(PathBuf::from(v));
            }
            "dumpconf" => a.dumpconf = true,
            "version" => a.version = true,
            "h" | "help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown flag -{other}\n{USAGE}")),
        }
    }
    Ok(a)
}

/// A configuration error: stderr, plus the error log when its path is known.
fn config_error(dir: Option<&PathBuf>, msg: &str) -> ExitCode {
    eprintln!("{msg}");
    if let Some(path) = dir.and_then(|d| errorlog_hint(d)) {
        if !path.is_empty() {
            if let Ok(log) = logging::open(&path) {
                log.write_line("FATAL", "config", msg);
            }
        }
    }
    ExitCode::from(2)
}

fn run(cfg: Config, log: ErrorLog) -> anyhow::Result<Stopped> {
    let threads = match cfg.proxy.threads {
        t if t > 0 => t as usize,
        _ => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(4),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let stopped = rt.block_on(server::serve(cfg, log))?;
    // Background tasks that ignore shutdown (probes) must not hold the exit.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(stopped)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.version {
        println!("beansproxy version {}", beansdb_proxy::VERSION);
        return ExitCode::SUCCESS;
    }
    let (cfg, warnings) = match &args.confdir {
        Some(dir) => match Config::load(dir) {
            Ok(r) => r,
            Err(e) => return config_error(Some(dir), &e.to_string()),
        },
        None if args.dumpconf => (Config::embedded_defaults(), Vec::new()),
        None => {
            return config_error(
                None,
                "no -confdir given: beansproxy needs DIR/proxy.yaml and DIR/route.yaml",
            )
        }
    };
    if args.dumpconf {
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        print!("{}", cfg.dump_yaml());
        return ExitCode::SUCCESS;
    }
    let log = match logging::open(&cfg.proxy.errorlog) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("proxy.errorlog: cannot open {:?}: {e}", cfg.proxy.errorlog);
            return ExitCode::from(2);
        }
    };
    log.install();
    for w in &warnings {
        tracing::warn!("{w}");
        eprintln!("warning: {w}");
    }
    match run(cfg, log) {
        Ok(Stopped::Clean) => ExitCode::SUCCESS,
        Ok(Stopped::DrainTimeout) => ExitCode::from(1),
        Err(e) => {
            if e.downcast_ref::<ServeError>()
                .is_some_and(ServeError::is_config)
            {
                tracing::error!("{e}");
                eprintln!("{e}");
                return ExitCode::from(2);
            }
            tracing::error!("{e:#}");
            eprintln!("beansproxy: {e:#}");
            ExitCode::from(1)
        }
    }
}
