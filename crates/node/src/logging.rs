//! Error log in gobeansdb's line format, plus the in-memory views behind `/loglast`,
//! `/logbuf` and `/logbufall`. SIGUSR1 reopens the file (log rotation).

use beansdb_observe::log::{Location, LogStyle};
pub use beansdb_observe::log::{LogEntry, LogSink};

/// The node's flavour: source file names, unpadded levels, history kept for the admin pages.
pub const STYLE: LogStyle = LogStyle {
    filter_env: "BEANSDB_LOG",
    location: Location::File,
    pad_level: false,
    keep_history: true,
};

/// Logs to `path` (empty = standard error).
pub fn open(path: &str) -> std::io::Result<LogSink> {
    LogSink::new(path, STYLE)
}
