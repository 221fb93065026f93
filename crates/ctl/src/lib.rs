//! `beansctl`: operator tools for beansdb (tools.md). The binary's `main` only calls
//! [`cli::main`]; each subcommand is a module with its clap `Args` and a `run` function.

pub mod backfill;
pub mod bench;
pub mod check;
pub mod cli;
pub mod dev_cluster;
pub mod dump;
pub mod error;
pub mod gc;
pub mod interrupt;
pub mod migrate;
pub mod output;
pub mod replay;
pub mod replay_errors;
pub mod sync;
pub mod target;
pub mod units;
pub mod verify;
