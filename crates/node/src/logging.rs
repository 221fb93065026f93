//! Error log in gobeansdb's line format, plus the in-memory views behind `/loglast`,
//! `/logbuf` and `/logbufall`. SIGUSR1 reopens the file (log rotation).

use std::collections::VecDeque;
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

const RING: usize = 200;

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

/// Shared handle to the log sink.
#[derive(Clone, Default)]
pub struct LogSink {
    path: Option<PathBuf>,
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

impl LogSink {
    /// Logs to `path` (empty = standard error).
    pub fn new(path: &str) -> std::io::Result<LogSink> {
        let sink = LogSink {
            path: (!path.is_empty()).then(|| PathBuf::from(path)),
            state: Arc::default(),
        };
        sink.reopen()?;
        Ok(sink)
    }

    pub fn reopen(&self) -> std::io::Result<()> {
        if let Some(p) = &self.path {
            if let Some(dir) = p.parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir)?;
                }
            }
            let f = OpenOptions::new().create(true).append(true).open(p)?;
            self.state.lock().file = Some(f);
        }
        Ok(())
    }

    /// Installs the global subscriber; `RUST_LOG`-style filtering via `BEANSDB_LOG`.
    pub fn install(&self) {
        let filter = tracing_subscriber::EnvFilter::try_from_env("BEANSDB_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(self.clone())
            .try_init();
    }

    pub fn last(&self) -> Vec<Option<LogEntry>> {
        self.state.lock().last.to_vec()
    }

    pub fn buffered(&self, all: bool) -> String {
        let st = self.state.lock();
        let ring = if all { &st.all_ring } else { &st.warn_ring };
        ring.iter().map(|l| format!("{l}\n")).collect()
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
        let now = chrono::Local::now();
        let file = meta
            .file()
            .unwrap_or("?")
            .rsplit('/')
            .next()
            .unwrap_or("?")
            .to_string();
        let line_no = meta.line().unwrap_or(0);
        let lvl = level_index(meta.level());
        let name = ["DEBUG", "INFO", "WARN", "ERROR", "FATAL"][lvl];
        let line = format!(
            "{} {} {}:{} - {}",
            now.format("%Y/%m/%d %H:%M:%S%.6f"),
            name,
            file,
            line_no,
            v.0.trim_start()
        );
        let entry = LogEntry {
            ts: now.to_rfc3339_opts(chrono::SecondsFormat::Nanos, false),
            level: lvl as u8,
            file,
            line: line_no,
            msg: v.0.trim_start().to_string(),
        };
        let mut st = self.state.lock();
        match st.file.as_mut() {
            Some(f) => {
                let _ = writeln!(f, "{line}");
            }
            None => eprintln!("{line}"),
        }
        st.last[lvl] = Some(entry);
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
