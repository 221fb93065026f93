//! Progress reporting on stderr (tools.md §9): a bar on a TTY, otherwise a plain line every
//! 10 s; nothing with `--quiet`. Results never go through here (they go to stdout).

use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;

use crate::cli::GlobalOpts;
use crate::units::hms;

/// Interval of plain progress lines when stderr is not a TTY (tools.md §9).
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(10);

/// `BEANSCTL_PROGRESS_EVERY` (a duration) overrides [`PLAIN_INTERVAL`], so tests and short
/// runs can see plain progress lines.
fn plain_interval() -> Duration {
    std::env::var("BEANSCTL_PROGRESS_EVERY")
        .ok()
        .and_then(|v| crate::units::parse_duration(&v).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(PLAIN_INTERVAL)
}

enum Mode {
    Bar(ProgressBar),
    Plain {
        last: Mutex<Instant>,
        every: Duration,
    },
    Silent,
}

pub struct Progress {
    name: &'static str,
    start: Instant,
    mode: Mode,
    /// Plain lines are the message alone (it carries its own name and elapsed time).
    raw_plain: bool,
}

impl Progress {
    /// `name` prefixes every line (`[bench 00:00:10] …`).
    pub fn new(name: &'static str, g: &GlobalOpts) -> Progress {
        let start = Instant::now();
        let mode = if g.quiet {
            Mode::Silent
        } else if g.progress_bar() {
            let bar = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr());
            // A fixed template without colour codes keeps NO_COLOR and --color never honest.
            let style = ProgressStyle::with_template(
                "[{prefix} {elapsed_precise}] {wide_bar} {percent:>3}% {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(name);
            Mode::Bar(bar)
        } else {
            Mode::Plain {
                last: Mutex::new(start),
                every: plain_interval(),
            }
        };
        Progress {
            name,
            start,
            mode,
            raw_plain: false,
        }
    }

    /// Like [`Progress::new`], but plain lines are printed as the message alone, for tools
    /// whose spec fixes the whole line (`backfill: bucket 3/16 … elapsed=00:02:10`).
    pub fn new_raw(name: &'static str, g: &GlobalOpts) -> Progress {
        Progress {
            raw_plain: true,
            ..Progress::new(name, g)
        }
    }

    /// Reports `pos` of `len` with a one-line status. Cheap to call often.
    pub fn update(&self, pos: u64, len: u64, msg: &str) {
        match &self.mode {
            Mode::Bar(bar) => {
                bar.set_length(len.max(1));
                bar.set_position(pos.min(len));
                bar.set_message(msg.to_string());
            }
            Mode::Plain { last, every } => {
                let now = Instant::now();
                let mut last = last.lock();
                if now.duration_since(*last) >= *every {
                    *last = now;
                    if self.raw_plain {
                        eprintln!("{msg}");
                    } else {
                        eprintln!("[{} {}] {msg}", self.name, hms(now - self.start));
                    }
                }
            }
            Mode::Silent => {}
        }
    }

    /// A warning line that does not tear the bar.
    pub fn warn(&self, msg: &str) {
        match &self.mode {
            Mode::Bar(bar) => bar.suspend(|| eprintln!("warning: {msg}")),
            _ => eprintln!("warning: {msg}"),
        }
    }

    /// Removes the bar before the report is printed.
    pub fn finish(&self) {
        if let Mode::Bar(bar) = &self.mode {
            bar.finish_and_clear();
        }
    }
}

/// How often a [`Ticker`] refreshes its progress line.
const TICK: Duration = Duration::from_millis(250);

/// A progress line refreshed every 250 ms on the async runtime from `status` →
/// `(pos, len, message)`, until [`Ticker::finish`].
pub struct Ticker {
    progress: Arc<Progress>,
    task: tokio::task::JoinHandle<()>,
}

impl Ticker {
    pub fn start(
        progress: Progress,
        status: impl Fn() -> (u64, u64, String) + Send + 'static,
    ) -> Ticker {
        let progress = Arc::new(progress);
        let task = {
            let progress = progress.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(TICK).await;
                    let (pos, len, msg) = status();
                    progress.update(pos, len, &msg);
                }
            })
        };
        Ticker { progress, task }
    }

    /// Stops the refreshes and removes the bar before the report is printed.
    pub fn finish(&self) {
        self.task.abort();
        self.progress.finish();
    }
}
