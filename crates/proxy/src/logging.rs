//! Error log (proxy.md §7.4): `YYYY/MM/DD HH:MM:SS.uuuuuu LEVEL module:line - message`,
//! LEVEL padded to 5 characters. SIGUSR1 reopens the file.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Shared handle to the error log.
#[derive(Clone, Default)]
pub struct ErrorLog {
    path: Option<PathBuf>,
    file: Arc<Mutex<Option<File>>>,
}

fn open(path: &PathBuf) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    OpenOptions::new().create(true).append(true).open(path)
}

impl ErrorLog {
    /// `path` empty = standard error.
    pub fn new(path: &str) -> std::io::Result<ErrorLog> {
        let log = ErrorLog {
            path: (!path.is_empty()).then(|| PathBuf::from(path)),
            file: Arc::default(),
        };
        log.reopen()?;
        Ok(log)
    }

    pub fn reopen(&self) -> std::io::Result<()> {
        if let Some(p) = &self.path {
            let f = open(p)?;
            *self.file.lock() = Some(f);
        }
        Ok(())
    }

    /// Installs the global subscriber; `BEANSPROXY_LOG` sets a tracing filter (default info).
    pub fn install(&self) {
        let filter = tracing_subscriber::EnvFilter::try_from_env("BEANSPROXY_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(self.clone())
            .try_init();
    }

    /// Writes one line directly (before logging is installed, e.g. config errors).
    pub fn write_line(&self, level: &str, module: &str, msg: &str) {
        let line = format_line(level, module, 0, msg);
        self.emit(&line);
    }

    fn emit(&self, line: &str) {
        let mut f = self.file.lock();
        match f.as_mut() {
            Some(f) => {
                let _ = writeln!(f, "{line}");
            }
            None => eprintln!("{line}"),
        }
    }
}

fn level_name(l: &Level) -> &'static str {
    match *l {
        Level::TRACE | Level::DEBUG => "DEBUG",
        Level::INFO => "INFO ",
        Level::WARN => "WARN ",
        Level::ERROR => "ERROR",
    }
}

fn format_line(level: &str, module: &str, line: u32, msg: &str) -> String {
    format!(
        "{} {} {}:{} - {}",
        chrono::Local::now().format("%Y/%m/%d %H:%M:%S%.6f"),
        level,
        module,
        line,
        msg
    )
}

struct MsgVisitor(String);

impl Visit for MsgVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={:?}", field.name(), value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={}", field.name(), value);
        }
    }
}

impl<S: Subscriber> Layer<S> for ErrorLog {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut v = MsgVisitor(String::new());
        event.record(&mut v);
        let module = meta
            .module_path()
            .and_then(|m| m.rsplit("::").next())
            .unwrap_or("?");
        let line = format_line(
            level_name(meta.level()),
            module,
            meta.line().unwrap_or(0),
            v.0.trim_start(),
        );
        self.emit(&line);
    }
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

    #[test]
    fn line_shape() {
        let l = format_line("INFO ", "server", 12, "hello");
        // 2026/01/02 15:04:05.123456 INFO  server:12 - hello
        assert_eq!(&l[4..5], "/");
        assert_eq!(&l[19..20], ".");
        assert!(l.ends_with(" INFO  server:12 - hello"), "{l}");
    }
}
