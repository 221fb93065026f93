//! Access log in the gobeansproxy V1 line format (tools.md §4.1), so `beansctl replay` can
//! re-issue a node's traffic. Off unless `server.accesslog` is set; SIGUSR1 reopens it.
//! The same file type carries the analysis log (`server.analysislog`).

use beansdb_observe::accesslog::LineFile;

pub struct AccessLog {
    file: LineFile,
}

impl AccessLog {
    /// Missing parent directories are an error here (unlike the proxy's access log).
    pub fn open(path: &str) -> std::io::Result<AccessLog> {
        Ok(AccessLog {
            file: LineFile::open(path, false)?,
        })
    }

    pub fn reopen(&self) -> std::io::Result<()> {
        self.file.reopen()
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
        self.file.write_line(line);
    }
}
