//! Harness shared by the `beansctl` integration tests: running `beansctl`, starting real
//! `beansdb` nodes on temp dirs, and small socket, key and output helpers.
//!
//! Each test file compiles its own copy (`mod common;`) and uses only part of it.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use beansdb_client::testing::{free_port, node_binary};
use serde_json::Value;

// ------------------------------------------------------------------------------------------------
// Running beansctl and reading its output.

/// The `beansctl` binary built for these tests.
pub fn beansctl_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_beansctl"))
}

/// Runs `beansctl` with `args` and captures its output.
pub fn beansctl(args: &[&str]) -> Output {
    beansctl_env(args, &[])
}

/// Runs `beansctl` with `args` and extra environment variables, capturing its output.
pub fn beansctl_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(beansctl_path())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run beansctl")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Exit code, stdout and stderr of a run, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// stdout parsed as one JSON document (whatever the exit status).
pub fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", show(o)))
}

/// Asserts a successful exit, then parses stdout as one JSON document.
pub fn json_ok(o: &Output) -> Value {
    assert!(o.status.success(), "{}", show(o));
    json_of(o)
}

// ------------------------------------------------------------------------------------------------
// Keys, runtimes.

/// Bucket of a key with 16 buckets.
pub fn bucket_of(key: &str) -> usize {
    beansdb_hash::bucket_of_key(key.as_bytes(), 1)
}

/// Keys `prefix0, prefix1, …` that all fall in `bucket` (of 16).
pub fn keys_in_bucket(prefix: &str, bucket: usize, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| bucket_of(k) == bucket)
        .take(n)
        .collect()
}

/// A current-thread tokio runtime for the async client.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

// ------------------------------------------------------------------------------------------------
// Node configuration.

/// Two distinct free ports: memcached and web.
pub fn two_free_ports() -> (u16, u16) {
    (free_port(), free_port())
}

/// `n` distinct free ports (never handed out twice by this process; see `free_port`).
pub fn unique_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| free_port()).collect()
}

/// A path as a quoted YAML scalar.
pub fn yaml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// `"0", "1", …` for buckets `0..n` (hex ids).
pub fn bucket_ids(n: usize) -> String {
    let ids: Vec<String> = (0..n).map(|b| format!("\"{b:x}\"")).collect();
    ids.join(", ")
}

/// `global.yaml` of a node living in `dir` (error log `dir/beansdb.log`, home `dir/home`).
/// `server_extra` lines go at the end of the `server:` section, `hstore_extra` lines after
/// `hstore.local`.
pub fn global_yaml(
    port: u16,
    webport: u16,
    dir: &Path,
    server_extra: &str,
    hstore_extra: &str,
) -> String {
    format!(
        "server:\n  hostname: 127.0.0.1\n  listen: 127.0.0.1\n  port: {port}\n  webport: {webport}\n  \
         errorlog: {}\n{server_extra}hstore:\n  local:\n    home: {}\n{hstore_extra}",
        yaml_path(&dir.join("beansdb.log")),
        yaml_path(&dir.join("home")),
    )
}

/// A 16-bucket route with one main on `port` serving `buckets` (a YAML list), then `tail`.
pub fn route_yaml(port: u16, buckets: &str, tail: &str) -> String {
    format!("numbucket: 16\nmain:\n- addr: 127.0.0.1:{port}\n  buckets: {buckets}\n{tail}")
}

/// Writes `dir/conf/global.yaml` and `dir/conf/route.yaml`.
pub fn write_conf(dir: &Path, global: &str, route: &str) {
    let conf = dir.join("conf");
    fs::create_dir_all(&conf).expect("conf dir");
    fs::write(conf.join("global.yaml"), global).expect("global.yaml");
    fs::write(conf.join("route.yaml"), route).expect("route.yaml");
}

// ------------------------------------------------------------------------------------------------
// Node processes.

/// How patiently [`probe`] talks to a node.
#[derive(Clone, Copy)]
pub struct Probe {
    /// `None`: a plain blocking connect.
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Duration,
}

impl Probe {
    pub const DEFAULT: Probe = Probe {
        connect_timeout: None,
        read_timeout: Duration::from_secs(1),
    };
}

/// Whether a node on `port` answers `get @` with a complete listing.
pub fn probe(port: u16, how: Probe) -> bool {
    let conn = match how.connect_timeout {
        Some(t) => TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), t),
        None => TcpStream::connect(("127.0.0.1", port)),
    };
    let Ok(mut s) = conn else {
        return false;
    };
    let _ = s.set_read_timeout(Some(how.read_timeout));
    if s.write_all(b"get @\r\n").is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.ends_with(b"END\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// Spawns `beansdb -confdir dir/conf` in `dir`.
pub fn spawn_node(dir: &Path, stdout: Stdio, stderr: Stdio) -> Child {
    Command::new(node_binary())
        .arg("-confdir")
        .arg(dir.join("conf"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn beansdb")
}

/// Why a node never became ready.
pub enum NotReady {
    Exited(ExitStatus),
    Timeout,
}

/// Waits up to 30 s for the node `child` on `port` to answer.
pub fn wait_ready(child: &mut Child, port: u16, how: Probe) -> Result<(), NotReady> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if probe(port, how) {
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(NotReady::Exited(st));
        }
        if Instant::now() >= deadline {
            return Err(NotReady::Timeout);
        }
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// SIGTERM and wait up to `within` for the exit; past that the child is killed and reaped
/// and `None` returned.
pub fn sigterm_and_wait(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A node on a caller-owned directory whose `conf/` is written, stdio discarded, killed on
/// drop. Readiness failures panic with the node's error log.
pub struct Node {
    child: Option<Child>,
    pub dir: PathBuf,
    pub port: u16,
    pub webport: u16,
}

impl Node {
    pub fn start(dir: &Path, port: u16, webport: u16) -> Node {
        let mut node = Node {
            child: Some(spawn_node(dir, Stdio::null(), Stdio::null())),
            dir: dir.to_path_buf(),
            port,
            webport,
        };
        let child = node.child.as_mut().expect("just spawned");
        match wait_ready(child, port, Probe::DEFAULT) {
            Ok(()) => node,
            Err(NotReady::Exited(st)) => panic!(
                "beansdb exited with {st}: {}",
                fs::read_to_string(dir.join("beansdb.log")).unwrap_or_default()
            ),
            Err(NotReady::Timeout) => panic!("beansdb not ready in 30 s"),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGTERM and wait up to 15 s for the exit (`None`: killed after the timeout, or not
    /// running).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        sigterm_and_wait(&mut child, Duration::from_secs(15))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Mock servers.

/// A listener on an ephemeral loopback port whose accept loop hands every connection to
/// `on_conn` on one thread; stopped on drop.
pub struct Acceptor {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Acceptor {
    pub fn start(mut on_conn: impl FnMut(TcpStream) + Send + 'static) -> Acceptor {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind mock");
        let addr = l.local_addr().expect("mock addr");
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                on_conn(conn);
            }
        });
        Acceptor { addr, stop }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so the thread ends.
        let _ = TcpStream::connect(self.addr);
    }
}
