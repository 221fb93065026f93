//! Access-log plumbing: an append-only file of complete lines that can be reopened after log
//! rotation (SIGUSR1), and the parts of the V1 line format the node and proxy share. The rest
//! of each line (targets, client naming) stays with the callers.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

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

pub struct LineFile {
    path: PathBuf,
    /// Whether (re)opening creates missing parent directories.
    create_dirs: bool,
    file: Mutex<Option<File>>,
}

impl LineFile {
    pub fn open(path: &str, create_dirs: bool) -> std::io::Result<LineFile> {
        let f = LineFile {
            path: PathBuf::from(path),
            create_dirs,
            file: Mutex::new(None),
        };
        f.reopen()?;
        Ok(f)
    }

    pub fn reopen(&self) -> std::io::Result<()> {
        let f = if self.create_dirs {
            open_append(&self.path)?
        } else {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?
        };
        *self.file.lock() = Some(f);
        Ok(())
    }

    /// Appends one complete line (ending in `\n`) in a single write, so concurrent writers
    /// never interleave within a line. Errors are dropped: logging must not fail requests.
    pub fn write_line(&self, line: &[u8]) {
        if let Some(f) = self.file.lock().as_mut() {
            let _ = f.write_all(line);
        }
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
