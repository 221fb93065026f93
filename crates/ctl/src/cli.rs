//! Command line: global options, the subcommand list, and the process entry point.
//!
//! A new subcommand is a module with an `Args` struct (clap derive) and a
//! `run(args, &GlobalOpts) -> CliResult<u8>`, plus one variant in [`Command`].

use std::future::Future;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use beansdb_client::ClientConfig;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::{exit, CliError, CliResult};
use crate::units::parse_duration;

const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("BEANSCTL_GIT_SHA"),
    ")"
);

/// `<semver> (<git sha>)`, as printed by `--version`.
pub fn version() -> &'static str {
    VERSION
}

#[derive(Debug, Parser)]
#[command(
    name = "beansctl",
    version = VERSION,
    about = "Operator tools for beansdb clusters",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

/// Options valid for every subcommand (tools.md §0).
#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// Machine output: one JSON document on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress output; errors are still printed
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log detail on stderr (repeatable; BEANSCTL_LOG also accepts info,debug,…)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Colours: only on a TTY and only when NO_COLOR is unset with `auto`
    #[arg(long, global = true, value_enum, default_value_t = ColorMode::Auto)]
    pub color: ColorMode,
    /// Per-request network timeout
    #[arg(long, global = true, default_value = "5s", value_parser = parse_positive_duration, value_name = "DUR")]
    pub timeout: Duration,
    /// TCP connect timeout
    #[arg(long, global = true, default_value = "1s", value_parser = parse_positive_duration, value_name = "DUR")]
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorMode {
    Auto,
    Always,
    Never,
}

impl GlobalOpts {
    /// Whether stderr may carry ANSI colours.
    pub fn stderr_color(&self) -> bool {
        match self.color {
            ColorMode::Always => true,
            ColorMode::Never => false,
            ColorMode::Auto => {
                std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
            }
        }
    }

    /// Whether a live progress bar is drawn (tools.md §9): stderr is a TTY, no `--quiet`,
    /// no `--json`.
    pub fn progress_bar(&self) -> bool {
        !self.quiet && !self.json && std::io::stderr().is_terminal()
    }

    /// Node client settings from `--connect-timeout` and `--timeout`.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::default()
            .connect_timeout(self.connect_timeout)
            .timeout(Some(self.timeout))
    }
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be greater than 0".into());
    }
    Ok(d)
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open-loop load generator for the memcached text protocol
    Bench(crate::bench::BenchArgs),
    /// Merkle anti-entropy between the replicas of each bucket
    Sync(crate::sync::SyncArgs),
    /// Offline listing of data files, hint files, htree dumps and one key's records
    Dump(crate::dump::DumpArgs),
    /// Offline consistency check of a data file, bucket directory or home
    Check(crate::check::CheckArgs),
    /// Replay an access log (idempotent reads by default) against a node or proxy
    Replay(crate::replay::ReplayArgs),
    /// Garbage collection of one node: status, plan, run, cancel
    Gc(crate::gc::GcArgs),
    /// Pick and start the most useful GC across a cluster
    GcSchedule(crate::gc::GcScheduleArgs),
    /// Local production-shaped cluster (nodes, backup, proxy) on embedded defaults
    DevCluster(crate::dev_cluster::DevClusterArgs),
    /// Copy the records under key prefixes from the nodes into Cassandra
    Backfill(crate::backfill::BackfillArgs),
    /// Compare the records under key prefixes between the nodes and Cassandra
    Verify(crate::verify::VerifyArgs),
    /// Make Cassandra equal to beansdb for every key of dual-write error logs
    ReplayErrors(crate::replay_errors::ReplayErrorsArgs),
}

/// Parses the command line, runs the subcommand, and returns the process exit code.
pub fn main() -> u8 {
    install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints `error: …` with usage; --help and --version go to stdout, exit 0.
            let _ = e.print();
            return if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
        }
    };
    init_logging(&cli.global);
    let result: CliResult<u8> = match cli.command {
        Command::Bench(args) => crate::bench::run(args, &cli.global),
        Command::Sync(args) => crate::sync::run(args, &cli.global),
        Command::Dump(args) => crate::dump::run(args, &cli.global),
        Command::Check(args) => crate::check::run(args, &cli.global),
        Command::Replay(args) => crate::replay::run(args, &cli.global),
        Command::Gc(args) => crate::gc::run(args, &cli.global),
        Command::GcSchedule(args) => crate::gc::run_schedule(args, &cli.global),
        Command::DevCluster(args) => crate::dev_cluster::run(args, &cli.global),
        Command::Backfill(args) => crate::backfill::run(args, &cli.global),
        Command::Verify(args) => crate::verify::run(args, &cli.global),
        Command::ReplayErrors(args) => crate::replay_errors::run(args, &cli.global),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            e.report(&mut std::io::stderr().lock());
            e.code
        }
    }
}

/// Runs a subcommand's async body on a multi-thread runtime; returns its exit code.
pub fn block_on(body: impl Future<Output = CliResult<u8>>) -> CliResult<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(CliError::runtime)?;
    rt.block_on(body)
}

/// Replaces the panic backtrace with one line (tools.md §9) and exits 101, also for panics
/// in worker threads, so a bug never looks like a normal result.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        let wants_trace = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
        eprintln!("internal error: {msg} (this is a bug; run with RUST_BACKTRACE=1 and report it)");
        if wants_trace {
            if let Some(loc) = info.location() {
                eprintln!("  at {}:{}", loc.file(), loc.line());
            }
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
        std::process::exit(i32::from(exit::INTERNAL));
    }));
}

/// Logs go to stderr: warnings by default, more with `-v` or `BEANSCTL_LOG`.
fn init_logging(g: &GlobalOpts) {
    let level = match g.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = std::env::var("BEANSCTL_LOG")
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(g.stderr_color())
        .with_target(false)
        .try_init();
}

/// `CliError` for a value that clap accepted but that fails a cross-option check.
pub fn bad_option(name: &str, msg: impl std::fmt::Display) -> CliError {
    CliError::usage(format!("invalid value for {name}: {msg}"))
}
