//! Error log in gobeansdb's line format:
//! `YYYY/MM/DD HH:MM:SS.uuuuuu LEVEL where:line - message`, to a file or standard error,
//! optionally with the in-memory views behind `/loglast`, `/logbuf` and `/logbufall`.
//! [`LogSink::reopen`] exists for SIGUSR1 log rotation.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Lines kept by each in-memory ring.
const RING: usize = 200;

/// What the `where` part of a line names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// Base name of the source file (`server.rs`).
    File,
    /// Last segment of the module path (`server`).
    Module,
}

/// The per-binary differences of the log format and behaviour.
#[derive(Clone, Copy, Debug)]
pub struct LogStyle {
    /// Environment variable holding a tracing filter (default `info`).
    pub filter_env: &'static str,
    pub location: Location,
    /// Pad level names to five characters (`INFO `, `WARN `).
    pub pad_level: bool,
    /// Keep the last entry per level and the recent-lines rings.
    pub keep_history: bool,
}

/// One entry of `/loglast`, field names as gobeansdb serves them.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LogEntry {
    #[serde(rename = "TS")]
    pub ts: String,
    #[serde(rename = "Level")]
    pub level: u8,
    #[serde(rename = "File")]
    pub file: String,
    #[serde(rename = "Line")]
    pub line: u32,
    #[serde(rename = "Msg")]
    pub msg: String,
}

#[derive(Default)]
struct State {
    file: Option<File>,
    last: [Option<LogEntry>; 5],
    warn_ring: VecDeque<String>,
    all_ring: VecDeque<String>,
}

/// Shared handle to the log sink; clones write to the same file and history.
#[derive(Clone)]
pub struct LogSink {
    path: Option<PathBuf>,
    style: LogStyle,
    state: Arc<Mutex<State>>,
}

/// gobeansdb levels: DEBUG 0, INFO 1, WARN 2, ERROR 3, FATAL 4.
fn level_index(l: &Level) -> usize {
    match *l {
        Level::TRACE | Level::DEBUG => 0,
        Level::INFO => 1,
        Level::WARN => 2,
        Level::ERROR => 3,
    }
}

const NAMES: [&str; 5] = ["DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
const PADDED: [&str; 5] = ["DEBUG", "INFO ", "WARN ", "ERROR", "FATAL"];

/// One line without its newline, stamped with the local time now.
pub fn format_line(level: &str, location: &str, line: u32, msg: &str) -> String {
    format_line_at(&chrono::Local::now(), level, location, line, msg)
}

fn format_line_at(
    now: &chrono::DateTime<chrono::Local>,
    level: &str,
    location: &str,
    line: u32,
    msg: &str,
) -> String {
    format!(
        "{} {} {}:{} - {}",
        now.format("%Y/%m/%d %H:%M:%S%.6f"),
        level,
        location,
        line,
        msg
    )
}

impl LogSink {
    /// Logs to `path` (empty = standard error).
    pub fn new(path: &str, style: LogStyle) -> std::io::Result<LogSink> {
        let sink = LogSink {
            path: (!path.is_empty()).then(|| PathBuf::from(path)),
            style,
            state: Arc::default(),
        };
        sink.reopen()?;
        Ok(sink)
    }

    /// Opens the file again (after rotation); a no-op when logging to standard error.
    pub fn reopen(&self) -> std::io::Result<()> {
        if let Some(p) = &self.path {
            let f = crate::accesslog::open_append(p)?;
            self.state.lock().file = Some(f);
        }
        Ok(())
    }

    /// Installs the global subscriber, filtered by the style's environment variable.
    pub fn install(&self) {
        let filter = tracing_subscriber::EnvFilter::try_from_env(self.style.filter_env)
            // The Cassandra driver logs every connection at INFO; only its warnings matter.
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,scylla=warn"));
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(self.clone())
            .try_init();
    }

    /// Last entry per gobeansdb level (empty without history).
    pub fn last(&self) -> Vec<Option<LogEntry>> {
        self.state.lock().last.to_vec()
    }

    /// Recent lines, WARN and above unless `all`, each ending in `\n`.
    pub fn buffered(&self, all: bool) -> String {
        let st = self.state.lock();
        let ring = if all { &st.all_ring } else { &st.warn_ring };
        ring.iter().map(|l| format!("{l}\n")).collect()
    }

    /// Writes one line directly, bypassing tracing and history (e.g. config errors before
    /// the subscriber is installed).
    pub fn write_line(&self, level: &str, location: &str, msg: &str) {
        let line = format_line(level, location, 0, msg);
        emit(&mut self.state.lock(), &line);
    }
}

fn emit(st: &mut State, line: &str) {
    match st.file.as_mut() {
        Some(f) => {
            let _ = writeln!(f, "{line}");
        }
        None => eprintln!("{line}"),
    }
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

impl<S: Subscriber> Layer<S> for LogSink {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut v = MsgVisitor(String::new());
        event.record(&mut v);
        let msg = v.0.trim_start();
        let now = chrono::Local::now();
        let location = match self.style.location {
            Location::File => meta.file().unwrap_or("?").rsplit('/').next(),
            Location::Module => meta.module_path().and_then(|m| m.rsplit("::").next()),
        }
        .unwrap_or("?");
        let line_no = meta.line().unwrap_or(0);
        let lvl = level_index(meta.level());
        let names = if self.style.pad_level { PADDED } else { NAMES };
        let line = format_line_at(&now, names[lvl], location, line_no, msg);
        let mut st = self.state.lock();
        emit(&mut st, &line);
        if !self.style.keep_history {
            return;
        }
        st.last[lvl] = Some(LogEntry {
            ts: now.to_rfc3339_opts(chrono::SecondsFormat::Nanos, false),
            level: lvl as u8,
            file: location.to_string(),
            line: line_no,
            msg: msg.to_string(),
        });
        if lvl >= 2 {
            if st.warn_ring.len() == RING {
                st.warn_ring.pop_front();
            }
            st.warn_ring.push_back(line.clone());
        }
        if st.all_ring.len() == RING {
            st.all_ring.pop_front();
        }
        st.all_ring.push_back(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shape() {
        let l = format_line("INFO ", "server", 12, "hello");
        // 2026/01/02 15:04:05.123456 INFO  server:12 - hello
        assert_eq!(&l[4..5], "/");
        assert_eq!(&l[19..20], ".");
        assert!(l.ends_with(" INFO  server:12 - hello"), "{l}");
    }

    #[test]
    fn history_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/error.log");
        let style = LogStyle {
            filter_env: "BEANSDB_OBSERVE_TEST_LOG",
            location: Location::File,
            pad_level: false,
            keep_history: true,
        };
        let sink = LogSink::new(path.to_str().unwrap(), style).unwrap();
        let sub = tracing_subscriber::registry().with(sink.clone());
        tracing::subscriber::with_default(sub, || {
            tracing::info!("one");
            tracing::warn!(k = 3, "two");
        });
        let all = sink.buffered(true);
        assert_eq!(all.lines().count(), 2, "{all}");
        assert!(all.contains(" INFO log.rs:"), "{all}");
        let warn = sink.buffered(false);
        assert!(warn.trim_end().ends_with("- two k=3"), "{warn}");
        let last = sink.last();
        assert_eq!(last[2].as_ref().unwrap().msg, "two k=3");
        assert!(last[3].is_none());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, all);
    }
}
