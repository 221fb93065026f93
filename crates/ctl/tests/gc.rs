//! `beansctl gc` and `beansctl gc-schedule` (tools.md §2, §10 items 13–15): against a real
//! node whose chunks come from restarts, and the schedule policy against mock admin servers.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beansdb_client::testing::free_port;
use beansdb_client::Client;
use common::{beansctl, json_of, keys_in_bucket, rt, show, text, Acceptor, Node};
use serde_json::{json, Value};

// ------------------------------------------------------------------------------------------------
// A real node on a fixed directory, restartable (every restart starts a new chunk).

/// Buckets the test node serves: all but `f`, so `f` is "no data for bucket id".
const SERVED: &str =
    "[\"0\", \"1\", \"2\", \"3\", \"4\", \"5\", \"6\", \"7\", \"8\", \"9\", a, b, c, d, e]";

/// A node on `dir` with gc unthrottled; every restart starts a new chunk.
fn start_node(dir: &Path, port: u16, webport: u16) -> Node {
    common::write_conf(
        dir,
        &common::global_yaml(port, webport, dir, "", "  gc:\n    max_mb_per_sec: 0\n"),
        &route_yaml(port),
    );
    Node::start(dir, port, webport)
}

fn stop_node(node: &mut Node) {
    if node.stop().is_none() {
        panic!("node did not stop within 15 s");
    }
}

/// A memcached port whose web port (+3, the default --web-offset) is free too.
fn ports() -> (u16, u16) {
    loop {
        let p = free_port();
        if p < u16::MAX - 3 && TcpListener::bind(("127.0.0.1", p + 3)).is_ok() {
            return (p, p + 3);
        }
    }
}

fn route_yaml(port: u16) -> String {
    common::route_yaml(port, SERVED, "")
}

fn keys_in_bucket3(n: usize) -> Vec<String> {
    keys_in_bucket("gc:", 3, n)
}

/// `gc plan` of bucket 3 with `--nogcdays 0`.
fn plan_bucket3(addr: &str) -> Output {
    beansctl(&[
        "gc",
        "plan",
        "--node",
        addr,
        "--bucket",
        "3",
        "--nogcdays",
        "0",
    ])
}

fn write_all(addr: &str, keys: &[String], tag: &str) {
    rt().block_on(async {
        let mut c = Client::connect(addr).await.expect("connect");
        for k in keys {
            let v = format!("{tag}:{k}:").repeat(20);
            c.set(k, 0, 0, v, false).await.expect("set");
        }
    });
}

#[test]
fn gc_against_a_real_node() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (port, webport) = ports();
    let keys = keys_in_bucket3(30);

    // Chunk 0: the first values; chunk 1: all overwritten; chunk 2: one more key.
    let mut node = start_node(dir, port, webport);
    write_all(&node.addr(), &keys, "one");
    stop_node(&mut node);
    let mut node = start_node(dir, port, webport);
    write_all(&node.addr(), &keys, "two");
    stop_node(&mut node);
    let node = start_node(dir, port, webport);
    write_all(&node.addr(), &keys[..1], "three");
    // nogcdays 0 still needs the next chunk's first record to be older than now.
    std::thread::sleep(Duration::from_millis(1100));
    let addr = node.addr();
    let route = dir.join("route.yaml");
    fs::write(&route, route_yaml(port)).expect("route");
    let route_s = route.to_str().expect("utf-8");

    let o = plan_bucket3(&addr);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(
        text(&o.stdout).trim(),
        format!("plan {addr} bucket 3: chunks 0..1 (2 files), merge false")
    );
    let o = beansctl(&[
        "--json",
        "gc",
        "plan",
        "--node",
        &addr,
        "--bucket",
        "3",
        "--nogcdays",
        "0",
        "--end",
        "0",
    ]);
    let v = json_of(&o);
    assert_eq!(
        (v["start"].as_u64(), v["end"].as_u64(), v["files"].as_u64()),
        (Some(0), Some(0), Some(1))
    );

    // gc-schedule --dry-run picks bucket 3 (the only one with chunks) and starts nothing.
    let o = beansctl(&[
        "--json",
        "gc-schedule",
        "--route",
        route_s,
        "--dry-run",
        "--nogcdays",
        "0",
        "--lock-file",
        dir.join("sched.lock").to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v = json_of(&o);
    assert_eq!(v["result"], "dry_run", "{v}");
    assert_eq!(v["selected"]["bucket"], "3", "{v}");
    assert_eq!(v["selected"]["files"], 2, "{v}");
    let o = beansctl(&["--json", "gc", "status", "--node", &addr, "--bucket", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v = json_of(&o);
    let b = &v["nodes"][0]["buckets"][0];
    assert_eq!(b["state"], "idle");
    assert!(b["last_gc"].is_null(), "dry run started a GC: {v}");

    // gc run --wait: completes and reports what was released.
    let o = beansctl(&[
        "--json",
        "gc",
        "run",
        "--node",
        &addr,
        "--bucket",
        "3",
        "--nogcdays",
        "0",
        "--wait",
        "--poll",
        "50ms",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v = json_of(&o);
    assert_eq!(v["result"], "ok", "{v}");
    let last = &v["last_gc"];
    assert_eq!(last["Running"], false);
    assert_eq!(
        (last["Begin"].as_u64(), last["End"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(last["NumReleased"].as_u64().unwrap_or(0) >= 30, "{v}");

    // gc status shows LastGC with released > 0.
    let o = beansctl(&["gc", "status", "--route", route_s, "--bucket", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = text(&o.stdout);
    let row = out
        .lines()
        .find(|l| l.starts_with(&addr))
        .unwrap_or_else(|| panic!("no row: {out}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[1..5], &["3", "idle", "2→0", "0..1"], "{out}");
    assert!(out.starts_with("NODE "), "{out}");
    let o = beansctl(&["--json", "gc", "status", "--node", &addr, "--bucket", "3"]);
    let v = json_of(&o);
    assert!(
        v["nodes"][0]["buckets"][0]["last_gc"]["SizeReleased"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{v}"
    );

    // Nothing left: exit 1 with a plain message; a cancel with nothing running: exit 1.
    let o = plan_bucket3(&addr);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(text(&o.stdout).starts_with(&format!("nothing to collect on {addr} bucket 3: ")));
    let o = beansctl(&["gc", "cancel", "--node", &addr, "--bucket", "3"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        text(&o.stdout).contains("bucket 3 is not gcing"),
        "{}",
        show(&o)
    );

    // Node errors surface as errors with the spec's exit codes.
    let o = beansctl(&["gc", "run", "--node", &addr, "--bucket", "f"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(
        err.starts_with(&format!(
            "error: node {addr} refused gc of bucket f: no data for bucket id: 15"
        )),
        "{err}"
    );
    assert!(err.contains("hint: "), "{err}");
    let o = beansctl(&["gc", "plan", "--node", &addr, "--bucket", "g"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let dead = format!("127.0.0.1:{}", free_port());
    let o = beansctl(&[
        "gc",
        "status",
        "--node",
        &dead,
        "--web-map",
        &format!("{dead}={dead}"),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert!(text(&o.stderr).contains("error: "), "{}", show(&o));
    assert!(!text(&o.stderr).contains("panicked"));

    // --min-free smaller than any disk's free space: pressure nowhere, nothing to do, exit 1.
    let o = beansctl(&[
        "gc-schedule",
        "--route",
        route_s,
        "--min-free",
        "1",
        "--lock-file",
        dir.join("sched.lock").to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        text(&o.stdout).contains("nothing collectable"),
        "{}",
        show(&o)
    );
    assert_eq!(node.webport, webport);
}

// ------------------------------------------------------------------------------------------------
// Mock admin servers for the schedule policy.

type Handler = Box<dyn Fn(&str) -> (u16, String) + Send + Sync>;

struct Mock {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    _server: Acceptor,
}

impl Mock {
    fn start(handler: Handler) -> Mock {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = requests.clone();
        let server = Acceptor::start(move |mut s| {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let req = String::from_utf8_lossy(&buf).into_owned();
            let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
            reqs.lock().expect("lock").push(path.clone());
            let (status, body) = handler(&path);
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
        Mock {
            port: server.addr.port(),
            requests,
            _server: server,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

/// A mock node: `/bucket/all`, `/gc/query`, `/du`, and `/gc/<b>` answered from `plans`
/// (`Ok((start, end))` or `Err(message)`).
fn mock_node(
    buckets: Vec<u64>,
    running: Option<u64>,
    du: Value,
    plans: HashMap<String, Result<(u32, u32), String>>,
) -> Mock {
    Mock::start(Box::new(move |path: &str| {
        if path == "/bucket/all" {
            let all: Vec<Value> = buckets
                .iter()
                .map(|&id| {
                    let last = if Some(id) == running {
                        json!({"Running": true, "Begin": 1, "End": 3, "Src": 2, "Dst": 1})
                    } else {
                        Value::Null
                    };
                    json!({"ID": id, "DU": 100, "NextGCChunk": 0, "HintState": 0, "LastGC": last,
                           "Pos": {"ChunkID": 9, "Offset": 0}})
                })
                .collect();
            return (200, Value::Array(all).to_string());
        }
        if path == "/gc/query" {
            return (200, "{}\n".into());
        }
        if path == "/du" {
            return (200, du.to_string());
        }
        if let Some(rest) = path.strip_prefix("/gc/") {
            let (b, q) = rest.split_once('?').unwrap_or((rest, ""));
            let run = q.contains("run=true");
            return match plans.get(b) {
                Some(Ok((s, e))) => (
                    200,
                    format!(
                        "<p/> bucket {}, start {s}, end {e}, merge false, pretend {} <p/>",
                        i64::from_str_radix(b, 16).unwrap_or(-1),
                        !run
                    ),
                ),
                Some(Err(m)) => (200, format!("<p> err : {m} </p><a href='/bucket/0'>0</a>")),
                None => (200, "<p> err : no data for bucket id: 99 </p>".into()),
            };
        }
        (404, "not found".into())
    }))
}

struct Cluster {
    a: Mock,
    b: Mock,
    route: PathBuf,
    lock: PathBuf,
    _tmp: tempfile::TempDir,
}

const A: &str = "127.0.0.1:1";
const B: &str = "127.0.0.1:2";

/// Node A: /data1 50 % used (buckets 0, 1), /data2 90 % (bucket 2 — not A's in the route).
/// Node B: /data1 95 % used with buckets 1, 2, 3: 1 and 2 have 5 files each (2 is larger),
/// 3 has nothing old enough.
fn cluster(running_on_a: Option<u64>) -> Cluster {
    let a = mock_node(
        vec![0, 1, 2],
        running_on_a,
        json!({"Disks": {
            "/data1": {"Root": "/data1", "All": 1000, "Used": 500, "Free": 500, "Buckets": [0, 1]},
            "/data2": {"Root": "/data2", "All": 1000, "Used": 900, "Free": 100, "Buckets": [2]}},
            "BucketsHex": {"0": 10, "1": 20, "2": 30}, "Errs": null}),
        HashMap::from([
            ("0".to_string(), Ok((0, 9))),
            ("1".to_string(), Ok((0, 0))),
            ("2".to_string(), Ok((0, 20))),
        ]),
    );
    let b = mock_node(
        vec![1, 2, 3],
        None,
        json!({"Disks": {
            "/data1": {"Root": "/data1", "All": 1000, "Used": 950, "Free": 50, "Buckets": [1, 2, 3]}},
            "BucketsHex": {"1": 100, "2": 200, "3": 300}, "Errs": null}),
        HashMap::from([
            ("1".to_string(), Ok((0, 4))),
            ("2".to_string(), Ok((3, 7))),
            (
                "3".to_string(),
                Err("no file to gc within 7 days, start = 2".to_string()),
            ),
        ]),
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let route = tmp.path().join("route.yaml");
    fs::write(
        &route,
        format!(
            "numbucket: 16\nmain:\n- addr: {A}\n  buckets: [\"0\", \"1\"]\n- addr: {B}\n  buckets: [\"1\", \"2\", \"3\"]\n"
        ),
    )
    .expect("route");
    Cluster {
        lock: tmp.path().join("gc.lock"),
        a,
        b,
        route,
        _tmp: tmp,
    }
}

impl Cluster {
    fn run(&self, extra: &[&str]) -> Output {
        let map_a = format!("{A}=127.0.0.1:{}", self.a.port);
        let map_b = format!("{B}=127.0.0.1:{}", self.b.port);
        let mut args = vec![
            "gc-schedule",
            "--route",
            self.route.to_str().expect("utf-8"),
            "--web-map",
            &map_a,
            "--web-map",
            &map_b,
            "--lock-file",
            self.lock.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        beansctl(&args)
    }

    fn runs(&self) -> Vec<String> {
        self.a
            .requests()
            .into_iter()
            .chain(self.b.requests())
            .filter(|p| p.contains("run=true"))
            .collect()
    }
}

#[test]
fn schedule_dry_run_picks_the_fullest_disk() {
    let c = cluster(None);
    let o = c.run(&["--dry-run", "--nogcdays", "7"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!("disk {B} /data1  used 95.0%  free 50 B of 1000 B"),
        "{out}"
    );
    assert_eq!(lines[1], "  bucket 1  chunks 0..4  5 files", "{out}");
    assert_eq!(
        lines[2], "  bucket 2  chunks 3..7  5 files   <- selected",
        "{out}"
    );
    assert_eq!(
        lines[3], "  bucket 3  no file to gc within 7 days, start = 2",
        "{out}"
    );
    assert!(
        lines[4].starts_with(&format!("would start GC on {B} bucket 2 (chunks 3..7)")),
        "{out}"
    );
    assert!(c.runs().is_empty(), "dry run sent {:?}", c.runs());
    assert!(
        c.b.requests().iter().any(|p| p.contains("nogcdays=7")),
        "{:?}",
        c.b.requests()
    );

    // Excluding B:2 leaves bucket 1.
    let o = c.run(&["--dry-run", "--exclude", &format!("{B}:2"), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v = json_of(&o);
    assert_eq!(v["selected"]["node"], B);
    assert_eq!(v["selected"]["bucket"], "1");
    assert!(c.runs().is_empty());
}

#[test]
fn schedule_starts_and_records_history() {
    let c = cluster(None);
    let history = c.route.with_file_name("history.jsonl");
    let o = c.run(&["--history", history.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        text(&o.stdout).contains(&format!("GC started on {B} bucket 2 (chunks 3..7)")),
        "{}",
        show(&o)
    );
    let runs = c.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(runs[0].starts_with("/gc/2?run=true"), "{runs:?}");
    let h = fs::read_to_string(&history).expect("history");
    let line: Value = serde_json::from_str(h.trim()).expect("history line");
    assert_eq!(line["node"], B);
    assert_eq!(line["bucket"], "2");
    assert_eq!(line["disk"], "/data1");
    assert_eq!(line["files"], 5);
    assert_eq!(line["result"], "started");
    assert_eq!(line["dry_run"], false);
}

#[test]
fn schedule_does_nothing_while_a_gc_runs() {
    let c = cluster(Some(1));
    let o = c.run(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(
        text(&o.stdout).trim(),
        format!("GC already running on {A} bucket 1; nothing scheduled")
    );
    let gc_calls: Vec<String> =
        c.a.requests()
            .into_iter()
            .chain(c.b.requests())
            .filter(|p| p.starts_with("/gc/") && p != "/gc/query")
            .collect();
    assert!(gc_calls.is_empty(), "{gc_calls:?}");
}

#[test]
fn schedule_lock_and_unreachable_nodes() {
    let c = cluster(None);
    fs::write(&c.lock, "1234 host1 2026-01-01T10:00:00Z\n").expect("lock file");
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&c.lock)
        .expect("open lock");
    // SAFETY: flock on a descriptor this test owns.
    let rc = unsafe { libc::flock(std::os::unix::io::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) };
    assert_eq!(rc, 0);
    let o = c.run(&["--dry-run"]);
    assert_eq!(o.status.code(), Some(4), "{}", show(&o));
    assert!(
        text(&o.stderr).starts_with(
            "error: another gc-schedule is running against this cluster (pid 1234 on host1 since 2026-01-01T10:00:00Z)"
        ),
        "{}",
        show(&o)
    );
    drop(f);

    // A node that does not answer is left out with a warning; the other one is used.
    let tmp = tempfile::tempdir().expect("tempdir");
    let route = tmp.path().join("route.yaml");
    let dead = format!("127.0.0.1:{}", free_port());
    fs::write(
        &route,
        format!("numbucket: 16\nmain:\n- addr: {dead}\n  buckets: [\"0\"]\n- addr: {B}\n  buckets: [\"1\", \"2\", \"3\"]\n"),
    )
    .expect("route");
    let o = beansctl(&[
        "gc-schedule",
        "--route",
        route.to_str().expect("utf-8"),
        "--dry-run",
        "--web-map",
        &format!("{dead}={dead}"),
        "--web-map",
        &format!("{B}=127.0.0.1:{}", c.b.port),
        "--lock-file",
        tmp.path().join("l").to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(text(&o.stderr).contains("warning: "), "{}", show(&o));
    assert!(text(&o.stdout).contains("<- selected"), "{}", show(&o));

    // A route that is not valid is a usage error.
    fs::write(&route, "numbucket: 7\nmain: []\n").expect("route");
    let o = beansctl(&["gc-schedule", "--route", route.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        text(&o.stderr).starts_with("error: cannot read route"),
        "{}",
        show(&o)
    );
}
