//! `beansctl dev-cluster` end to end (tools.md §6, §10 tests 30–34): a real cluster of
//! `beansdb` nodes and a `beansproxy` started from the binaries next to `beansctl`, on a free
//! port range and a temp dir.
//!
//! Needs `beansdb` and `beansproxy` built into the same target dir as `beansctl`
//! (`cargo build -p beansdb-node -p beansdb-proxy`); a missing binary fails the test.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use beansdb_client::{Client, StoreReply};
use common::{beansctl_path as beansctl, rt, text};
use serde_json::Value;

const NODES: usize = 5;
const BUCKETS: u32 = 16;
/// The §6 table: buckets of node0..node4 with the default shape.
const TABLE: [&str; NODES] = [
    "0 3 4 5 8 9 a d e f",
    "0 1 4 5 6 9 a b e f",
    "0 1 2 5 6 7 a b c f",
    "1 2 3 6 7 8 b c d",
    "2 3 4 7 8 9 c d e",
];

fn require_binaries() {
    let dir = beansctl().parent().unwrap().to_path_buf();
    for b in ["beansdb", "beansproxy"] {
        assert!(
            dir.join(b).is_file(),
            "{b} not found in {}; build it first with `cargo build -p beansdb-node -p beansdb-proxy`",
            dir.display()
        );
    }
}

/// Ports of a cluster with base `b` (proxy, nodes, one backup; memcached and web).
fn cluster_ports(b: u16) -> Vec<u16> {
    let mut v = vec![b + 5, b + 8];
    for slot in 1..=NODES as u16 + 1 {
        v.extend([b + 10 * slot, b + 10 * slot + 3]);
    }
    v
}

/// A base port whose whole range is free now, below the ephemeral range so that outgoing
/// connections do not take one of them meanwhile.
fn free_base() -> u16 {
    // Tests run in parallel, in this and maybe other test processes: spread their choices.
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let seed = (std::process::id() as u64 ^ now_ms() as u64)
        .wrapping_add(CALLS.fetch_add(1, Ordering::Relaxed) * 331);
    for attempt in 0..200u64 {
        let base = 20000 + ((seed.wrapping_mul(7919) + attempt * 977) % 1000) as u16 * 10;
        if cluster_ports(base)
            .iter()
            .all(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        {
            return base;
        }
    }
    panic!("no free port range found");
}

/// Whether the process is gone (or only a zombie waiting for a reaper that is not us).
fn gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn wait_gone(pids: &[u32], within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if pids.iter().all(|&p| gone(p)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<u32> = pids.iter().copied().filter(|&p| !gone(p)).collect();
    panic!("child processes still running after {within:?}: {left:?}");
}

struct Running {
    child: Child,
    info: Value,
    stderr: PathBuf,
}

impl Running {
    /// Starts `dev-cluster --json` and waits for its one-line ready document.
    fn start(dir: &Path, base: u16, logs: &Path) -> Running {
        Running::start_with(dir, base, logs, &[])
    }

    fn start_with(dir: &Path, base: u16, logs: &Path, extra: &[&str]) -> Running {
        let stderr = logs.join(format!("dev-cluster-{base}-{}.stderr", now_ms()));
        let mut child = Command::new(beansctl())
            .args(["dev-cluster", "--json", "--fsync", "never", "--base-port"])
            .arg(base.to_string())
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("run beansctl dev-cluster");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(90)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("not ready within 90 s; stderr:\n{}", read(&stderr));
            }
        };
        let info: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ready line is not JSON ({e}): {line:?}\nstderr:\n{}",
                read(&stderr)
            )
        });
        Running {
            child,
            info,
            stderr,
        }
    }

    fn proxy(&self) -> String {
        self.info["proxy"]["addr"].as_str().unwrap().to_string()
    }

    fn pids(&self) -> Vec<u32> {
        let mut v = vec![self.info["proxy"]["pid"].as_u64().unwrap() as u32];
        for m in self.members() {
            v.push(m["pid"].as_u64().unwrap() as u32);
        }
        v
    }

    fn members(&self) -> Vec<Value> {
        let mut v = self.info["nodes"].as_array().unwrap().clone();
        v.extend(self.info["backups"].as_array().unwrap().iter().cloned());
        v
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// Signals beansctl and returns its exit status (within `within`).
    fn stop(mut self, sig: i32, within: Duration) -> (ExitStatus, Vec<u32>, String) {
        let pids = self.pids();
        self.signal(sig);
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st, pids, read(&self.stderr));
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "beansctl did not exit within {within:?}; stderr:\n{}",
                    read(&self.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed assertion must not leave a cluster behind: SIGTERM stops the children too.
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

/// One HTTP/1.0 request on the loopback; returns (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect web port");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default()
}

/// The store-level listing `get @` of a node: per bucket digit, the item count.
async fn bucket_counts(addr: &str) -> Vec<(u32, u64)> {
    let mut c = Client::connect(addr).await.unwrap();
    let v = c.get("@").await.unwrap().expect("get @ answers a listing");
    text(&v.data)
        .lines()
        .map(|l| {
            // "<digit>/ <hash> <count>"
            let parts: Vec<&str> = l.split(' ').collect();
            assert_eq!(parts.len(), 3, "listing line {l:?}");
            let b = u32::from_str_radix(parts[0].trim_end_matches('/'), 16).unwrap();
            (b, parts[2].parse().unwrap())
        })
        .collect()
}

async fn holders(addrs: &[String], key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for a in addrs {
        let mut c = Client::connect(a).await.unwrap();
        if c.get(key).await.unwrap().is_some() {
            out.push(a.clone());
        }
    }
    out
}

#[test]
fn serves_through_the_proxy_keeps_data_and_stops_cleanly() {
    require_binaries();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let base = free_base();
    let started = Instant::now();
    let dc = Running::start(&dir, base, tmp.path());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "ready after {:?}",
        started.elapsed()
    );

    // Shape: the §6 ports and table; every bucket on 3 nodes; no node holds all 16.
    let info = &dc.info;
    assert_eq!(dc.proxy(), format!("127.0.0.1:{}", base + 5));
    let nodes = info["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), NODES);
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n["name"], format!("node{i}"));
        assert_eq!(
            n["addr"],
            format!("127.0.0.1:{}", base + 10 * (i as u16 + 1))
        );
        let buckets: Vec<String> = n["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| format!("{:x}", b.as_u64().unwrap()))
            .collect();
        assert_eq!(buckets.join(" "), TABLE[i], "node{i}");
    }
    assert_eq!(
        info["backups"][0]["addr"],
        format!("127.0.0.1:{}", base + 60)
    );
    for name in [
        "proxy/conf/proxy.yaml",
        "proxy/conf/route.yaml",
        "node3/conf/global.yaml",
    ] {
        assert!(dir.join(name).is_file(), "{name}");
    }
    assert!(dir.join(".beansdb-dev").is_file());

    let node_addrs: Vec<String> = nodes
        .iter()
        .map(|n| n["addr"].as_str().unwrap().to_string())
        .collect();
    let backup = info["backups"][0]["addr"].as_str().unwrap().to_string();
    let owned: Vec<BTreeSet<u32>> = nodes
        .iter()
        .map(|n| {
            n["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    rt().block_on(async {
        let mut c = Client::connect(&dc.proxy()).await.unwrap();
        let keys: Vec<String> = (0..64).map(|i| format!("dc:key:{i}")).collect();
        for k in &keys {
            let v = format!("value of {k}");
            assert_eq!(c.set(k, 0, 0, &v, false).await.unwrap(), StoreReply::Stored);
        }
        for k in &keys {
            let got = c.get(k).await.unwrap().expect("hit");
            assert_eq!(text(&got.data), format!("value of {k}"));
        }
        // getm with a duplicate and a miss: each present key once, in request order.
        let req = [
            "dc:key:3",
            "dc:key:40",
            "dc:missing",
            "dc:key:3",
            "dc:key:17",
        ];
        let got: Vec<String> = c
            .get_multi(&req)
            .await
            .unwrap()
            .iter()
            .map(|v| text(&v.key))
            .collect();
        assert_eq!(got, ["dc:key:3", "dc:key:40", "dc:key:17"]);

        // Placement: a key lives on exactly 3 mains (the third may still be writing after
        // W=2 acks) and not on the backup.
        for k in keys.iter().take(8) {
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut all = node_addrs.clone();
            all.push(backup.clone());
            loop {
                let h = holders(&all, k).await;
                if h.len() == 3 && !h.contains(&backup) {
                    break;
                }
                assert!(Instant::now() < deadline, "{k} held by {h:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Each node lists 16 buckets, with items only in the buckets assigned to it.
        for (i, a) in node_addrs.iter().enumerate() {
            let counts = bucket_counts(a).await;
            assert_eq!(counts.len(), BUCKETS as usize, "{a}");
            assert!(
                owned[i].len() < BUCKETS as usize,
                "node{i} holds every bucket"
            );
            let mut filled = 0;
            for (b, n) in counts {
                if n > 0 {
                    assert!(owned[i].contains(&b), "node{i} has items in bucket {b:x}");
                    filled += 1;
                }
            }
            // These 64 keys fall in buckets 5 6 7 b c d e, which reach every node.
            assert!(filled > 0, "node{i} received none of the keys");
        }
    });

    // SIGTERM: exit 0, every child gone, the ports free again.
    let (st, pids, err) = dc.stop(libc::SIGTERM, Duration::from_secs(30));
    assert_eq!(st.code(), Some(0), "{st}; stderr:\n{err}");
    wait_gone(&pids, Duration::from_secs(15));
    for p in cluster_ports(base) {
        assert!(
            TcpListener::bind(("127.0.0.1", p)).is_ok(),
            "port {p} still bound"
        );
    }

    // Same dir again: the data is kept; SIGINT stops it the same way.
    let dc = Running::start(&dir, base, tmp.path());
    rt().block_on(async {
        let mut c = Client::connect(&dc.proxy()).await.unwrap();
        let got = c
            .get("dc:key:5")
            .await
            .unwrap()
            .expect("kept across restarts");
        assert_eq!(text(&got.data), "value of dc:key:5");
    });
    let (st, pids, err) = dc.stop(libc::SIGINT, Duration::from_secs(30));
    assert_eq!(st.code(), Some(0), "{st}; stderr:\n{err}");
    wait_gone(&pids, Duration::from_secs(15));
}

#[test]
fn children_die_with_a_killed_beansctl() {
    require_binaries();
    let tmp = tempfile::tempdir().unwrap();
    let base = free_base();
    let dc = Running::start(&tmp.path().join("dev"), base, tmp.path());
    let (st, pids, _) = dc.stop(libc::SIGKILL, Duration::from_secs(10));
    assert_eq!(st.code(), None, "killed by a signal");
    // PR_SET_PDEATHSIG: each child gets SIGTERM when beansctl dies.
    wait_gone(&pids, Duration::from_secs(15));
}

#[test]
fn port_in_use_exits_3_and_starts_nothing() {
    require_binaries();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let base = free_base();
    let _taken = TcpListener::bind(("127.0.0.1", base + 20)).unwrap();
    let out = Command::new(beansctl())
        .args(["dev-cluster", "--base-port", &base.to_string(), "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr:\n{err}");
    assert!(
        err.starts_with(&format!(
            "error: port {} (node1) is in use; pass --base-port\n",
            base + 20
        )),
        "stderr:\n{err}"
    );
    assert!(
        !dir.join("node0/logs/stdout.log").exists(),
        "a node was started"
    );
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn missing_binary_and_bad_shape_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    // A beansctl with no beansdb next to it and an empty PATH.
    let lone = tmp.path().join("beansctl");
    fs::copy(beansctl(), &lone).unwrap();
    let out = Command::new(&lone)
        .args([
            "dev-cluster",
            "--base-port",
            &free_base().to_string(),
            "--dir",
        ])
        .arg(tmp.path().join("dev"))
        .env("PATH", "")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{err}");
    assert_eq!(
        err.lines().next().unwrap(),
        "error: beansdb binary not found next to beansctl or on PATH; build all binaries with: cargo build --release"
    );

    let out = Command::new(beansctl())
        .args(["dev-cluster", "--nodes", "3", "--replicas", "3", "--dir"])
        .arg(tmp.path().join("dev2"))
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{err}");
    assert!(
        err.starts_with("error: --nodes (3) must be greater than --replicas (3)"),
        "{err}"
    );
    assert!(!err.contains("panicked at"));

    // A non-empty dir that dev-cluster did not create is never used (nor cleaned).
    let foreign = tmp.path().join("foreign");
    fs::create_dir(&foreign).unwrap();
    fs::write(foreign.join("keep.txt"), "mine").unwrap();
    for extra in [&[][..], &["--clean"][..]] {
        let out = Command::new(beansctl())
            .args(["dev-cluster", "--print-config", "--dir"])
            .arg(&foreign)
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    }
    assert!(foreign.join("keep.txt").is_file());
}

#[test]
fn print_config_writes_the_route_of_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let out = Command::new(beansctl())
        .args(["dev-cluster", "--print-config", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let files: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    assert_eq!(files.len(), 2 + 2 * (NODES + 1), "{files:?}");
    let route = read(&dir.join("node2/conf/route.yaml"));
    assert_eq!(route, read(&dir.join("proxy/conf/route.yaml")));
    for (i, want) in TABLE.iter().enumerate() {
        let ids: Vec<String> = want.split(' ').map(|b| format!("\"{b}\"")).collect();
        let line = format!(
            "- addr: 127.0.0.1:{}\n  buckets: [{}]\n",
            7910 + 10 * i,
            ids.join(", ")
        );
        assert!(route.contains(&line), "{line}\nnot in\n{route}");
    }
    assert!(route.contains("backup:\n- 127.0.0.1:7960\n"), "{route}");
    // Nothing was started: no process logs.
    assert!(!dir.join("proxy/logs/stdout.log").exists());
}

/// Test 35 (tools.md §10): with `--with-cassandra` the dev keyspace exists and the proxy runs
/// with the prefix switcher on its config table; a prefix switched to crw over `/cstar-cfg`
/// writes to Cassandra.
#[test]
fn with_cassandra_enables_the_prefix_switcher() {
    use beansdb_cassandra::testing::{need_cluster, prefix, store, SUPERUSER};
    require_binaries();
    let Some(cluster) = need_cluster("dev_cluster_with_cassandra") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pw = tmp.path().join("cstar.pass");
    fs::write(&pw, format!("{SUPERUSER}\n")).unwrap();
    let dir = tmp.path().join("dev");
    let base = free_base();
    let dc = Running::start_with(
        &dir,
        base,
        tmp.path(),
        &[
            "--with-cassandra",
            &cluster.native,
            "--cassandra-username",
            SUPERUSER,
            "--cassandra-password-file",
            pw.to_str().unwrap(),
        ],
    );
    let web = base + 8;
    let yaml = read(&dir.join("proxy/conf/proxy.yaml"));
    assert!(
        yaml.contains("enable: true") && yaml.contains("br1w1cr0w0"),
        "{yaml}"
    );
    assert!(dir.join("proxy/dual-write-errors").is_dir());
    let (code, body) = http(web, "GET", "/cstar-cfg?config=rwswitcher", "");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["default"], "br1w1cr0w0");
    assert_eq!(v["message"], "success");

    let p = prefix("devcluster");
    let put = format!("{{\"prefix\": {{\"br0w0cr1w1\": [\"{p}\"]}}}}");
    let (code, body) = http(web, "PUT", "/cstar-cfg?config=rwswitcher", &put);
    assert_eq!(code, 200, "{body}");
    let key = format!("{p}k");
    rt().block_on(async {
        let mut c = Client::connect(&dc.proxy()).await.unwrap();
        assert_eq!(
            c.set(&key, 3, 0, "in cassandra", false).await.unwrap(),
            StoreReply::Stored
        );
        let row = store(cluster, "kvstore")
            .await
            .get(key.as_bytes())
            .await
            .unwrap()
            .expect("the row is in doubandb.kvstore");
        assert_eq!((row.flag, row.body.as_slice()), (3, &b"in cassandra"[..]));
    });
    // The config row is shared by every test on this Cassandra: remove it again.
    let del = format!("{{\"prefix\": \"{p}\"}}");
    let (code, body) = http(web, "DELETE", "/cstar-cfg?config=rwswitcher", &del);
    assert_eq!(code, 200, "{body}");
    let (st, _, stderr) = dc.stop(libc::SIGTERM, Duration::from_secs(40));
    assert!(st.success(), "{stderr}");
}
