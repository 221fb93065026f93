//! Test support (feature `test-util`): a real `beansdb` node on free loopback ports with a
//! temporary conf dir and data home, killed and removed on drop.
//!
//! The binary is `$BEANSDB_BIN`, else `beansdb` next to the running test's profile directory
//! (`target/<profile>/beansdb`), else `<workspace>/target/debug/beansdb`. A missing binary is
//! a test failure with instructions, never a skip.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use beansdb_protocol::{ReplyKind, Response, ResponseDecoder};
use bytes::BytesMut;

/// Where the node binary is expected; panics with a clear message when it is absent.
pub fn node_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BEANSDB_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "BEANSDB_BIN={} does not exist; build it with `cargo build -p beansdb-node`",
            p.display()
        );
        return p;
    }
    let mut candidates = Vec::new();
    // Test executables live in target/<profile>/deps/.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(profile_dir.join("beansdb"));
        }
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    candidates.push(workspace.join("target/debug/beansdb"));
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "beansdb node binary not found (looked at {}); build it first with \
         `cargo build -p beansdb-node` or set BEANSDB_BIN",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// A free TCP port on 127.0.0.1, never the same twice in this process (parallel tests each
/// start servers), and *below* the kernel's ephemeral range: the port is bound later by the
/// process under test, and one from the ephemeral range could meanwhile become the source
/// port of some outgoing connection. Another process may still take it before it is used.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let top = ephemeral_start().saturating_sub(1).max(20_001);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let mut x = seed();
    for _ in 0..10_000 {
        // xorshift64: enough to spread test processes over the range.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 20_000 + (x % u64::from(top - 20_000)) as u16;
        if handed_out.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        handed_out.insert(port);
        return port;
    }
    panic!("no free port between 20000 and {top}");
}

/// First port of the kernel's ephemeral range (Linux default 32768).
fn ephemeral_start() -> u16 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (t ^ (u64::from(std::process::id()) << 32)) | 1
}

/// A running node serving all 16 buckets.
pub struct TestNode {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
    pub webport: u16,
}

impl TestNode {
    /// Starts a node and waits (≤ 60 s) until `get @` answers.
    pub fn start() -> TestNode {
        let bin = node_binary();
        let mut last = String::new();
        // A port picked free may be taken by a racing process before the node binds it.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("beansdb-test-")
                .tempdir()
                .expect("create temp dir");
            let port = free_port();
            let mut webport = free_port();
            while webport == port {
                webport = free_port();
            }
            write_conf(dir.path(), port, webport);
            let out = fs::File::create(dir.path().join("node.stdout")).expect("stdout file");
            let err = fs::File::create(dir.path().join("node.stderr")).expect("stderr file");
            let child = Command::new(&bin)
                .arg("-confdir")
                .arg(dir.path().join("conf"))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut node = TestNode {
                child,
                dir,
                port,
                webport,
            };
            match node.wait_ready(Duration::from_secs(60)) {
                Ok(()) => return node,
                Err(e) => {
                    last = format!("{e}\n{}", node.log_tail());
                    if !last.to_lowercase().contains("in use") {
                        break;
                    }
                }
            }
        }
        panic!("beansdb did not start: {last}");
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of the node's log and output, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["beansdb.log", "node.stderr", "node.stdout"] {
            if let Ok(text) = fs::read_to_string(self.dir.path().join(name)) {
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(30);
                out.push_str(&format!("--- {name}\n{}\n", lines[from..].join("\n")));
            }
        }
        out
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("beansdb exited with {status} during startup"));
            }
            if probe(self.port).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("beansdb not ready after {timeout:?}"))
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_conf(dir: &Path, port: u16, webport: u16) {
    let conf = dir.join("conf");
    let home = dir.join("home");
    fs::create_dir_all(&conf).expect("conf dir");
    fs::create_dir_all(&home).expect("home dir");
    let global = format!(
        "server:\n  hostname: 127.0.0.1\n  listen: 127.0.0.1\n  port: {port}\n  webport: {webport}\n  \
         errorlog: {log}\n  accesslog: \"\"\nhstore:\n  local:\n    home: {home}\n",
        log = yaml_str(&dir.join("beansdb.log")),
        home = yaml_str(&home),
    );
    fs::write(conf.join("global.yaml"), global).expect("write global.yaml");
    let buckets: Vec<String> = (0..16).map(|b| format!("\"{b:x}\"")).collect();
    let route = format!(
        "numbucket: 16\nmain:\n- addr: 127.0.0.1:{port}\n  buckets: [{}]\nbackup: []\n",
        buckets.join(", ")
    );
    fs::write(conf.join("route.yaml"), route).expect("write route.yaml");
}

fn yaml_str(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// Readiness probe: the memcached port answers `get @` (it listens only after buckets load).
fn probe(port: u16) -> std::io::Result<()> {
    let addr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"get @\r\n")?;
    let mut dec = ResponseDecoder::new(ReplyKind::Retrieval);
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(Response::Values(_))) => return Ok(()),
            Ok(Some(other)) => return Err(std::io::Error::other(format!("{other:?}"))),
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::other(e)),
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
