//! Access log in the gobeansproxy V1 line format (tools.md §4.1), so `beansctl replay` can
//! re-issue a node's traffic. Off unless `server.accesslog` is set; SIGUSR1 reopens it.
//! The same file type carries the analysis log (`server.analysislog`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use parking_lot::Mutex;

pub struct AccessLog {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl AccessLog {
    pub fn open(path: &str) -> std::io::Result<AccessLog> {
        let log = AccessLog {
            path: PathBuf::from(path),
            file: Mutex::new(None),
        };
        log.reopen()?;
        Ok(log)
    }

    pub fn reopen(&self) -> std::io::Result<()> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        *self.file.lock() = Some(f);
        Ok(())
    }

    /// One request: `cmd` upper-case, `sizes` as the format wants them, keys as received.
    pub fn write(
        &self,
        remote: &str,
        cmd: &str,
        ok: bool,
        sizes: &str,
        micros: u128,
        keys: &[&[u8]],
    ) {
        let now = chrono::Local::now().format("%Y/%m/%d %H:%M:%S%.6f");
        let mut line = format!(
            "{now} V1 {remote} {cmd} {} {sizes} localhost {micros}",
            if ok { "SUCC" } else { "FAILED" }
        )
        .into_bytes();
        for k in keys {
            line.push(b' ');
            line.extend_from_slice(k);
        }
        line.push(b'\n');
        self.write_line(&line);
    }

    /// Appends one complete line (ending in `\n`).
    pub fn write_line(&self, line: &[u8]) {
        if let Some(f) = self.file.lock().as_mut() {
            let _ = f.write_all(line);
        }
    }
}
