//! Access-log plumbing: an append-only file of complete lines that can be reopened after log
//! rotation (SIGUSR1), and the parts of the V1 line format the node and proxy share. The rest
//! of each line (targets, client naming) stays with the callers.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Opens `path` for appending, creating it and any missing parent directories.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// An append-only file of complete lines, reopened after rotation.
///
/// Unbuffered (the default) every line is one `write(2)`. Buffered, lines collect in memory and
/// go out together once the buffer holds [`FLUSH_BYTES`] or the flush interval has passed (a
/// background thread flushes an idle buffer), so a busy proxy does not pay one syscall per
/// request; a line still reaches the file within the interval.
pub struct LineFile {
    inner: Arc<Inner>,
}

/// Buffered lines are written out once this many bytes are waiting.
pub const FLUSH_BYTES: usize = 64 << 10;

struct Inner {
    path: PathBuf,
    /// Whether (re)opening creates missing parent directories.
    create_dirs: bool,
    /// `None` = every line is written at once.
    flush_every: Option<Duration>,
    state: Mutex<State>,
}

struct State {
    file: Option<File>,
    buf: Vec<u8>,
    /// When `buf` last went out (or became non-empty after that).
    since: Instant,
}

impl Inner {
    fn flush(&self, st: &mut State) {
        if !st.buf.is_empty() {
            if let Some(f) = st.file.as_mut() {
                // Logging must not fail requests: a failed write drops the lines.
                let _ = f.write_all(&st.buf);
            }
            st.buf.clear();
        }
        st.since = Instant::now();
    }
}

impl LineFile {
    pub fn open(path: &str, create_dirs: bool) -> std::io::Result<LineFile> {
        Self::open_with(path, create_dirs, None)
    }

    /// Buffered: lines reach the file within `flush_every`.
    pub fn open_buffered(
        path: &str,
        create_dirs: bool,
        flush_every: Duration,
    ) -> std::io::Result<LineFile> {
        let f = Self::open_with(path, create_dirs, Some(flush_every))?;
        let weak = Arc::downgrade(&f.inner);
        // Ends once the file is dropped.
        std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || loop {
                std::thread::sleep(flush_every);
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let mut st = inner.state.lock();
                if st.since.elapsed() >= flush_every {
                    inner.flush(&mut st);
                }
            })?;
        Ok(f)
    }

    fn open_with(
        path: &str,
        create_dirs: bool,
        flush_every: Option<Duration>,
    ) -> std::io::Result<LineFile> {
        let f = LineFile {
            inner: Arc::new(Inner {
                path: PathBuf::from(path),
                create_dirs,
                flush_every,
                state: Mutex::new(State {
                    file: None,
                    buf: Vec::new(),
                    since: Instant::now(),
                }),
            }),
        };
        f.reopen()?;
        Ok(f)
    }

    /// Writes out what is buffered, then opens the path anew (after rotation, SIGUSR1).
    pub fn reopen(&self) -> std::io::Result<()> {
        let i = &self.inner;
        let f = if i.create_dirs {
            open_append(&i.path)?
        } else {
            OpenOptions::new().create(true).append(true).open(&i.path)?
        };
        let mut st = i.state.lock();
        i.flush(&mut st);
        st.file = Some(f);
        Ok(())
    }

    /// Appends one complete line (ending in `\n`); a line is written whole, so concurrent
    /// writers never interleave within a line. Errors are dropped: logging must not fail
    /// requests.
    pub fn write_line(&self, line: &[u8]) {
        let i = &self.inner;
        let mut st = i.state.lock();
        match i.flush_every {
            None => {
                if let Some(f) = st.file.as_mut() {
                    let _ = f.write_all(line);
                }
            }
            Some(every) => {
                if st.buf.is_empty() {
                    st.since = Instant::now();
                }
                st.buf.extend_from_slice(line);
                if st.buf.len() >= FLUSH_BYTES || st.since.elapsed() >= every {
                    i.flush(&mut st);
                }
            }
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&self) {
        let mut st = self.inner.state.lock();
        self.inner.flush(&mut st);
    }
}

impl Drop for LineFile {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The V1 access-log names of a retrieval (`GET`, `GETS`, `GETM`, `GETSM`) and its sizes
/// field: one total for a single key, comma-separated per key for several.
pub fn get_name_and_sizes(nkeys: usize, gets: bool, sizes: &[usize]) -> (&'static str, String) {
    let multi = nkeys > 1;
    let name = match (multi, gets) {
        (true, true) => "GETSM",
        (true, false) => "GETM",
        (false, true) => "GETS",
        (false, false) => "GET",
    };
    let text = if multi {
        sizes
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(",")
    } else {
        sizes.iter().sum::<usize>().to_string()
    };
    (name, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffered_lines_arrive_within_the_interval_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let p = path.to_str().unwrap();
        let f = LineFile::open_buffered(p, false, Duration::from_millis(50)).unwrap();
        f.write_line(b"one\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(std::fs::read(&path).unwrap(), b"one\n");
        // A full buffer goes out at once; every line stays whole.
        let line = vec![b'x'; 1000];
        let mut l = line.clone();
        l.push(b'\n');
        for _ in 0..(FLUSH_BYTES / 1001 + 1) {
            f.write_line(&l);
        }
        let text = std::fs::read(&path).unwrap();
        assert!(text.len() > FLUSH_BYTES, "{}", text.len());
        // Rotation: reopen writes out the old buffer to the old file first.
        f.write_line(b"last-in-old\n");
        std::fs::rename(&path, dir.path().join("a.log.1")).unwrap();
        f.reopen().unwrap();
        f.write_line(b"first-in-new\n");
        drop(f);
        let old = std::fs::read_to_string(dir.path().join("a.log.1")).unwrap();
        assert!(old.ends_with("last-in-old\n"));
        assert!(old
            .lines()
            .all(|l| l == "one" || l.len() == 1000 || l == "last-in-old"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first-in-new\n");
    }

    #[test]
    fn reopen_appends() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/access.log");
        assert!(LineFile::open(p.to_str().unwrap(), false).is_err());
        let f = LineFile::open(p.to_str().unwrap(), true).unwrap();
        f.write_line(b"one\n");
        std::fs::rename(&p, dir.path().join("a/old.log")).unwrap();
        f.reopen().unwrap();
        f.write_line(b"two\n");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\n");
    }

    #[test]
    fn get_fields() {
        assert_eq!(get_name_and_sizes(1, false, &[5]), ("GET", "5".into()));
        assert_eq!(get_name_and_sizes(1, true, &[]), ("GETS", "0".into()));
        assert_eq!(
            get_name_and_sizes(3, false, &[10, 0, 7]),
            ("GETM", "10,0,7".into())
        );
        assert_eq!(
            get_name_and_sizes(2, true, &[1, 2]),
            ("GETSM", "1,2".into())
        );
    }
}
