//! Child processes of `dev-cluster`: finding the binaries, spawning with a parent-death signal,
//! readiness probes, log tails and signalling.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use beansdb_client::{Client, ClientConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::layout::Role;

/// `--bin-dir`, then the directory of the running `beansctl`, then `$PATH`.
pub fn find_binary(name: &str, bin_dir: Option<&Path>) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = bin_dir {
        dirs.push(d.to_path_buf());
    }
    if let Some(d) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(d);
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// A started process of the cluster.
pub struct Proc {
    pub name: String,
    pub role: Role,
    pub addr: String,
    pub web: String,
    pub child: Child,
    /// Set once the exit was seen (and reported, if unexpected).
    pub exited: Option<ExitStatus>,
    /// Log files whose tails explain a failure: stdout/stderr capture, then the error log.
    pub logs: Vec<PathBuf>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reaps the child if it has exited; returns its status the first time only.
    pub fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_some() {
            return None;
        }
        match self.child.try_wait() {
            Ok(Some(st)) => {
                self.exited = Some(st);
                Some(st)
            }
            _ => None,
        }
    }

    pub fn running(&self) -> bool {
        self.exited.is_none()
    }

    pub fn signal(&self, sig: i32) {
        if self.running() {
            // SAFETY: plain kill(2) on our own, not yet reaped child (so the pid is not reused).
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, sig);
            }
        }
    }

    /// SIGKILL to the child's whole process group (helpers it started die too), then reap;
    /// returns at once since SIGKILL cannot be caught.
    pub fn kill_now(&mut self) {
        if self.running() {
            // SAFETY: kill(2) on the group this child leads (spawned with process_group(0)).
            unsafe {
                libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
            }
            let _ = self.child.kill();
            if let Ok(st) = self.child.wait() {
                self.exited = Some(st);
            }
        }
    }

    /// The last `n` lines of each non-empty log, each under a `--- path` header.
    pub fn log_tail(&self, n: usize) -> String {
        let mut out = String::new();
        for p in &self.logs {
            let lines = tail_lines(p, n);
            if !lines.is_empty() {
                out.push_str(&format!("--- {}\n", p.display()));
                for l in lines {
                    out.push_str("    ");
                    out.push_str(&l);
                    out.push('\n');
                }
            }
        }
        if out.is_empty() {
            out.push_str("    (no log output)\n");
        }
        out
    }
}

/// Spawns `bin -confdir <conf>` in `cwd` with stdout and stderr appended to `log`.
///
/// The child gets its own process group, so a Ctrl-C typed in the terminal reaches only
/// beansctl, which then stops the proxy before the nodes; and PR_SET_PDEATHSIG=SIGTERM, so it
/// stops with beansctl even if beansctl is killed. The death signal follows the thread that
/// spawned the child, which is why all spawning happens on the main thread.
pub fn spawn(bin: &Path, conf: &Path, cwd: &Path, log: &Path) -> io::Result<Child> {
    let out = OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let parent = std::process::id();
    let mut cmd = Command::new(bin);
    cmd.arg("-confdir")
        .arg(conf)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            #[cfg(target_os = "linux")]
            {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() as u32 != parent {
                    return Err(io::Error::other("beansctl exited during spawn"));
                }
            }
            let _ = parent;
            Ok(())
        });
    }
    cmd.spawn()
}

fn tail_lines(p: &Path, n: usize) -> Vec<String> {
    let Ok(mut f) = File::open(p) else {
        return Vec::new();
    };
    // Only the end of a possibly large log is needed.
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn probe_config() -> ClientConfig {
    ClientConfig::default()
        .connect_timeout(Duration::from_millis(500))
        .timeout(Some(Duration::from_secs(2)))
}

/// `get @` answers with a listing (a node's store-level listing; through the proxy, that of
/// the nodes serving `@`'s bucket).
pub async fn listing_ready(addr: &str) -> bool {
    let Ok(mut c) = Client::connect_with(addr, probe_config()).await else {
        return false;
    };
    matches!(c.get("@").await, Ok(Some(v)) if !v.data.is_empty())
}

/// The HTTP status of `GET path`, or None when nothing answers.
pub async fn http_status(web: &str, path: &str) -> Option<u16> {
    let fut = async {
        let mut s = TcpStream::connect(web).await.ok()?;
        let req = format!("GET {path} HTTP/1.0\r\nHost: {web}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut head = [0u8; 64];
        let mut got = 0;
        while got < 12 {
            let n = s.read(&mut head[got..]).await.ok()?;
            if n == 0 {
                break;
            }
            got += n;
        }
        let line = String::from_utf8_lossy(&head[..got]).into_owned();
        let code = line.strip_prefix("HTTP/1.")?.get(2..5)?;
        code.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .ok()
        .flatten()
}

/// Set, read back and delete a key through the proxy; the error says which step failed.
pub async fn smoke(proxy: &str) -> Result<(), String> {
    const KEY: &str = "dev-cluster:smoke";
    let value = format!("smoke {}", std::process::id());
    let mut c = Client::connect_with(proxy, probe_config())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    match c.set(KEY, 0, 0, &value, false).await {
        Ok(beansdb_client::StoreReply::Stored) => {}
        Ok(other) => return Err(format!("set {KEY}: {other:?}")),
        Err(e) => return Err(format!("set {KEY}: {e}")),
    }
    match c.get(KEY).await {
        Ok(Some(v)) if v.data == value.as_bytes() => {}
        Ok(Some(v)) => {
            return Err(format!(
                "get {KEY}: read back {:?}",
                String::from_utf8_lossy(&v.data)
            ))
        }
        Ok(None) => return Err(format!("get {KEY}: miss right after set")),
        Err(e) => return Err(format!("get {KEY}: {e}")),
    }
    c.delete(KEY)
        .await
        .map_err(|e| format!("delete {KEY}: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_of_a_log() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.log");
        assert!(tail_lines(&p, 3).is_empty());
        std::fs::write(&p, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail_lines(&p, 2), vec!["c", "d"]);
        assert_eq!(tail_lines(&p, 10).len(), 4);
    }

    #[test]
    fn finds_binaries_in_bin_dir_first() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("beansdb-test-tool");
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        assert_eq!(
            find_binary("beansdb-test-tool", Some(t.path())),
            None,
            "not executable"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_binary("beansdb-test-tool", Some(t.path())), Some(p));
        assert_eq!(find_binary("beansdb-no-such-tool", Some(t.path())), None);
    }
}
