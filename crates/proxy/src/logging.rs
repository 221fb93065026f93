//! Error log (proxy.md §7.4): `YYYY/MM/DD HH:MM:SS.uuuuuu LEVEL module:line - message`,
//! LEVEL padded to 5 characters. SIGUSR1 reopens the file.

use std::fmt::Write as _;

use beansdb_observe::log::{Location, LogSink, LogStyle};

/// Shared handle to the error log (`write_line(level, module, msg)` for pre-install lines).
pub type ErrorLog = LogSink;

/// The proxy's flavour: module names, levels padded to 5, no in-memory history (no admin
/// page reads it).
pub const STYLE: LogStyle = LogStyle {
    filter_env: "BEANSPROXY_LOG",
    location: Location::Module,
    pad_level: true,
    keep_history: false,
};

/// `path` empty = standard error.
pub fn open(path: &str) -> std::io::Result<ErrorLog> {
    LogSink::new(path, STYLE)
}

/// A key for logs: printable ASCII kept, anything else as `\xNN`.
pub fn escape(key: &[u8]) -> String {
    let mut s = String::with_capacity(key.len());
    for &b in key {
        if (0x21..0x7f).contains(&b) && b != b'\\' {
            s.push(b as char);
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(escape(b"a/b"), "a/b");
        assert_eq!(escape(b"a\x0fb \xff\\"), "a\\x0fb\\x20\\xff\\x5c");
    }
}
