//! Exit codes and the error report format shared by all subcommands (tools.md §9).

use std::fmt::Display;
use std::io::Write;

/// Process exit codes (tools.md §9).
pub mod exit {
    /// Success, nothing left to do.
    pub const OK: u8 = 0;
    /// Completed, but found something (bench: `--fail-if-errors` threshold).
    pub const FOUND: u8 = 1;
    /// Usage or configuration error.
    pub const USAGE: u8 = 2;
    /// Runtime failure (target unreachable, I/O error).
    pub const RUNTIME: u8 = 3;
    /// Another instance holds the lock.
    pub const LOCKED: u8 = 4;
    /// Internal error (panic).
    pub const INTERNAL: u8 = 101;
    /// Interrupted (Ctrl-C).
    pub const INTERRUPTED: u8 = 130;
}

/// A failure that ends a subcommand: the exit code, the error with its causes, and an
/// optional hint line.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub error: anyhow::Error,
    pub hint: Option<String>,
}

pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> CliError {
        CliError {
            code,
            error: error.into(),
            hint: None,
        }
    }

    /// Exit 2: bad flags, invalid configuration, loopback refusal.
    pub fn usage(msg: impl Display) -> CliError {
        CliError::new(exit::USAGE, anyhow::anyhow!("{msg}"))
    }

    /// Exit 3: unreachable target, I/O failure.
    pub fn runtime(error: impl Into<anyhow::Error>) -> CliError {
        CliError::new(exit::RUNTIME, error)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }

    /// Wraps the error in a higher-level message; the old one becomes a `caused by` line.
    pub fn context(mut self, msg: impl Display + Send + Sync + 'static) -> CliError {
        self.error = self.error.context(msg);
        self
    }

    /// Prints `error: …`, one `  caused by: …` per source, then `hint: …`.
    pub fn report(&self, out: &mut impl Write) {
        let _ = writeln!(out, "error: {}", self.error);
        for cause in self.error.chain().skip(1) {
            let _ = writeln!(out, "  caused by: {cause}");
        }
        if let Some(h) = &self.hint {
            let _ = writeln!(out, "hint: {h}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_format() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = CliError::runtime(anyhow::Error::new(io).context("cannot connect to 127.0.0.1:1"))
            .with_hint("is the node running?");
        let mut out = Vec::new();
        e.report(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "error: cannot connect to 127.0.0.1:1\n  caused by: refused\nhint: is the node running?\n"
        );
        assert_eq!(e.code, exit::RUNTIME);
    }
}
