//! `beansctl` binary: everything lives in the library; see `cli::main`.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(beansdb_ctl::cli::main())
}
