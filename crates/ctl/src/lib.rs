//! `beansctl`: operator tools for beansdb (tools.md). The binary's `main` only calls
//! [`cli::main`]; each subcommand is a module with its clap `Args` and a `run` function.

pub mod bench;
pub mod cli;
pub mod error;
pub mod interrupt;
pub mod output;
pub mod target;
pub mod units;
