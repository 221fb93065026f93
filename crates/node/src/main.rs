//! `beansdb`: the storage node binary. Flags follow gobeansdb (`-confdir`, `-dumpconf`,
//! `-version`, `-buildhint`); the double-dash spellings work too.

use std::path::PathBuf;
use std::process::ExitCode;

use beansdb_node::config::NodeConfig;
use beansdb_node::logging;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Heap profiling sampled every 512 KiB: cheap enough to leave on, needed by /debug/pprof/heap.
#[allow(non_upper_case_globals)]
#[export_name = "malloc_conf"]
pub static malloc_conf: &[u8] = b"prof:true,prof_active:true,lg_prof_sample:19\0";

struct Args {
    confdir: Option<PathBuf>,
    dumpconf: bool,
    version: bool,
    buildhint: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        confdir: None,
        dumpconf: false,
        version: false,
        buildhint: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let flag = arg.trim_start_matches('-');
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        let mut value = |n: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(format!("flag -{n} needs a value"))
        };
        match name {
            "confdir" => a.confdir = Some(PathBuf::from(value("confdir")?)),
            "buildhint" => a.buildhint = Some(PathBuf::from(value("buildhint")?)),
            "dumpconf" => a.dumpconf = true,
            "version" => a.version = true,
            "h" | "help" => {
                return Err(
                    "usage: beansdb [-confdir DIR] [-dumpconf] [-version] [-buildhint PATH]".into(),
                )
            }
            other => return Err(format!("unknown flag -{other}")),
        }
    }
    Ok(a)
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
        println!("beansdb version {}", beansdb_node::server::VERSION);
        return ExitCode::SUCCESS;
    }
    let cfg = match &args.confdir {
        Some(dir) => match NodeConfig::load_with_warnings(dir) {
            Ok((c, warnings)) => {
                for w in warnings {
                    eprintln!("config warning: {w}");
                }
                c
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        },
        None => NodeConfig::embedded_defaults(),
    };
    if args.dumpconf {
        print!("{}", cfg.dump_yaml());
        return ExitCode::SUCCESS;
    }
    let log = match logging::open(&cfg.server.errorlog) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "server.errorlog: cannot open {:?}: {e}",
                cfg.server.errorlog
            );
            return ExitCode::from(1);
        }
    };
    log.install();
    if let Some(path) = &args.buildhint {
        let cap = if args.confdir.is_some() {
            cfg.hstore.hint.hint_split_cap as usize
        } else {
            beansdb_node::config::parse_size(beansdb_node::config::BUILDHINT_SPLIT_CAP_STR)
                .unwrap_or(3 << 20) as usize
        };
        let sc = beansdb_node::run::store_config(&cfg);
        return match beansdb_store::buildhint::build_hints(path, cap, sc.hint_index_interval) {
            Ok(n) => {
                println!("rebuilt hints of {n} data file(s) under {}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("buildhint {}: {e}", path.display());
                ExitCode::from(1)
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.server.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(beansdb_node::run::serve(cfg, log)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("beansdb: {e:#}");
            ExitCode::from(1)
        }
    }
}
