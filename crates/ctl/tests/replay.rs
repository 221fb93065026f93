//! `beansctl replay` end to end (tools.md §4, §10 items 21–25) against a real node with its
//! access log on.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use beansdb_client::testing::free_port;
use beansdb_client::Client;
use common::{beansctl, json_of, rt, show, text};

/// A node with its access log on, killed on drop.
struct Node {
    node: common::Node,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, webport) = common::two_free_ports();
        let access = format!(
            "  accesslog: {}\n",
            common::yaml_path(&dir.path().join("access.log"))
        );
        common::write_conf(
            dir.path(),
            &common::global_yaml(port, webport, dir.path(), &access, ""),
            &common::route_yaml(port, &format!("[{}]", common::bucket_ids(16)), ""),
        );
        Node {
            node: common::Node::start(dir.path(), port, webport),
            _dir: dir,
        }
    }

    fn addr(&self) -> String {
        self.node.addr()
    }

    fn webport(&self) -> u16 {
        self.node.webport
    }

    fn access_log(&self) -> String {
        fs::read_to_string(self.node.dir.join("access.log")).unwrap_or_default()
    }
}

/// `beansctl --json replay --target addr log extra…`.
fn replay_json(addr: &str, log: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "--json",
        "replay",
        "--target",
        addr,
        log.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    beansctl(&args)
}

fn stat(addr: &str, name: &str) -> u64 {
    rt().block_on(async {
        let mut c = Client::connect(addr).await.expect("connect");
        let s = c.stats(&[name]).await.expect("stats");
        s.get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no stat {name}: {s:?}"))
    })
}

/// `YYYY/MM/DD HH:MM:SS.ffffff` for second `s` + `ms` of a fixed day.
fn ts(ms: u64) -> String {
    format!(
        "2024/05/01 12:{:02}:{:02}.{:06}",
        ms / 60_000,
        (ms / 1000) % 60,
        (ms % 1000) * 1000
    )
}

struct Log {
    text: String,
    /// Keys of every read line that should be replayed, in order (duplicates kept).
    reads: Vec<(String, Vec<String>)>,
}

/// A log with every kind of line: reads (with duplicate keys in multi-gets), writes, a
/// counter, an admin listing, and unparsable lines.
fn mixed_log() -> Log {
    let mut lines = Vec::new();
    let mut reads = Vec::new();
    let mut t = 0u64;
    let mut line = |body: String| {
        t += 10;
        lines.push(format!("{} V1 10.0.0.{}:4000 {body}", ts(t), t % 7));
    };
    for i in 0..10 {
        let k = format!("key{}", i % 6);
        let size = if i % 6 < 4 { 6 } else { 0 };
        line(format!("GET SUCC {size} h:1,proxy:7905 120 {k}"));
        reads.push(("GET".to_string(), vec![k]));
    }
    for n in 1..=5usize {
        // Duplicates: key0 repeats in every multi-get.
        let mut keys = vec!["key0".to_string()];
        for j in 1..n {
            keys.push(format!("key{}", j % 5));
        }
        keys.push("key0".to_string());
        let sizes: Vec<&str> = keys.iter().map(|_| "6").collect();
        line(format!(
            "GETM SUCC {} h:1 300 {}",
            sizes.join(","),
            keys.join(" ")
        ));
        reads.push(("GETM".to_string(), keys));
    }
    for i in 0..2 {
        line(format!("GETS SUCC 6 h:1 90 key{i}"));
        reads.push(("GETS".to_string(), vec![format!("key{i}")]));
    }
    for i in 0..3 {
        line(format!("SET SUCC 10 h:1 200 written{i}"));
    }
    line("DELETE SUCC 0 h:1 150 key1".into());
    line("DELETE SUCC 0 h:1 150 key2".into());
    line("INCR SUCC 0 h:1 80 counter".into());
    line("GET SUCC 100 h:1 80 @".into());
    lines.push("this is not an access log line".into());
    lines.push(format!(
        "{} V1 10.0.0.1:1 GET SUCC 6 h:1 notanumber key0",
        ts(t + 5)
    ));
    Log {
        text: lines.join("\n") + "\n",
        reads,
    }
}

fn preload(addr: &str) {
    rt().block_on(async {
        let mut c = Client::connect(addr).await.expect("connect");
        for i in 0..4 {
            c.set(format!("key{i}"), 0, 0, "value!", false)
                .await
                .expect("set");
        }
    });
}

/// `(CMD, keys)` of the node's access-log read lines.
fn logged_reads(log: &str) -> Vec<(String, Vec<String>)> {
    log.lines()
        .filter_map(|l| {
            let t: Vec<&str> = l.split(' ').collect();
            let v1 = t.iter().position(|x| *x == "V1")?;
            let cmd = t.get(v1 + 2)?.to_string();
            ["GET", "GETM", "GETS", "GETSM"]
                .contains(&cmd.as_str())
                .then(|| (cmd, t[v1 + 7..].iter().map(|k| k.to_string()).collect()))
        })
        .collect()
}

#[test]
fn reads_only_by_default_with_duplicates_kept() {
    let node = Node::start();
    let addr = node.addr();
    preload(&addr);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = mixed_log();
    let path = dir.path().join("access.log");
    fs::write(&path, &log.text).expect("write log");
    let before_log = node.access_log();
    let get0 = stat(&addr, "cmd_get");
    let set0 = stat(&addr, "cmd_set");
    let del0 = stat(&addr, "cmd_delete");

    let o = replay_json(&addr, &path, &["--rate", "500", "--connections", "4"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v = json_of(&o);
    let pc = &v["per_cmd"];
    assert_eq!(pc["GET"]["replayed"], 10, "{v}");
    assert_eq!(pc["GET"]["log"], 11, "{v}");
    assert_eq!(pc["GETM"]["replayed"], 5, "{v}");
    assert_eq!(pc["GETS"]["replayed"], 2, "{v}");
    assert_eq!(pc["SET"]["log"], 3);
    assert_eq!(pc["SET"]["replayed"], 0);
    assert_eq!(pc["DELETE"]["replayed"], 0);
    assert_eq!(pc["GET"]["ok"], 10);
    assert_eq!(v["replayed"], 17);
    assert_eq!(v["lines"], 26);
    assert_eq!(v["skipped"]["write"], 5, "{v}");
    assert_eq!(v["skipped"]["special"], 1, "{v}");
    assert_eq!(v["skipped"]["unparsable"], 2, "{v}");
    assert_eq!(v["skipped"]["unsupported"], 1, "{v}");
    assert_eq!(v["keys_per_getm"]["identical"], true);
    assert_eq!(v["keys_per_getm"]["log"]["max"], 6);
    // GET key4/key5 were never set: the log says miss (size 0) and so does the node.
    assert_eq!(pc["GET"]["hits"], pc["GET"]["log_hits"], "{v}");

    // The node saw exactly the read keys and no write. Its cmd_get counts a key repeated
    // within one request once (node.md §3.3, D4e); the access log below shows the repeats.
    let keys: usize = log
        .reads
        .iter()
        .map(|(_, k)| k.iter().collect::<std::collections::BTreeSet<_>>().len())
        .sum();
    assert_eq!(stat(&addr, "cmd_get") - get0, keys as u64);
    assert_eq!(stat(&addr, "cmd_set"), set0);
    assert_eq!(stat(&addr, "cmd_delete"), del0);
    let after = node.access_log();
    let mut seen = logged_reads(&after[before_log.len()..]);
    let mut want = log.reads.clone();
    seen.sort();
    want.sort();
    assert_eq!(
        seen, want,
        "the node's access log differs from the replayed reads"
    );

    // Text summary per tools.md §4.5.
    let o = beansctl(&[
        "replay",
        "--target",
        &addr,
        path.to_str().expect("utf-8"),
        "--max",
        "--cmd",
        "getm",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = text(&o.stdout);
    assert!(out.starts_with("replay "), "{out}");
    assert!(out.contains("lines 26  replayed 5  skipped 21 ("), "{out}");
    assert!(out.contains("filtered 13"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("GETM ") && l.split_whitespace().nth(2) == Some("5")),
        "{out}"
    );
    assert!(out.contains("keys/getm  log: mean "), "{out}");
    assert!(out.contains("replayed: identical"), "{out}");
}

#[test]
fn writes_with_allow_writes() {
    let node = Node::start();
    let addr = node.addr();
    preload(&addr);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("access.log");
    fs::write(&path, mixed_log().text).expect("write log");
    let set0 = stat(&addr, "cmd_set");
    let o = replay_json(&addr, &path, &["--max", "--allow-writes"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v = json_of(&o);
    assert_eq!(v["per_cmd"]["SET"]["replayed"], 3, "{v}");
    assert_eq!(v["per_cmd"]["DELETE"]["replayed"], 2, "{v}");
    assert_eq!(v["skipped"]["write"], 0);
    assert_eq!(stat(&addr, "cmd_set") - set0, 3);
    let got = rt().block_on(async {
        let mut c = Client::connect(&addr).await.expect("connect");
        c.get("written1").await.expect("get")
    });
    assert_eq!(got.map(|v| v.data.len()), Some(10));
}

#[test]
fn strict_pacing_gz_and_watch() {
    let node = Node::start();
    let addr = node.addr();
    let dir = tempfile::tempdir().expect("tempdir");

    // --strict: unparsable lines are fatal (exit 1); without it they are counted (exit 0).
    let bad = dir.path().join("bad.log");
    fs::write(
        &bad,
        format!("{} V1 a:1 GET SUCC 0 h 5 k\nnot a line\n", ts(0)),
    )
    .expect("write");
    let o = beansctl(&[
        "replay",
        "--target",
        &addr,
        bad.to_str().expect("utf-8"),
        "--strict",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(
        err.contains("error: ") && err.contains("bad.log:2: unparsable line"),
        "{err}"
    );
    let o = replay_json(&addr, &bad, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(json_of(&o)["skipped"]["unparsable"], 1);

    // --speed 2 on a log spanning 1.2 s takes about 0.6 s.
    let mut lines = Vec::new();
    for i in 0..=12u64 {
        lines.push(format!("{} V1 a:1 GET SUCC 0 h 0 k{i}", ts(i * 100)));
    }
    let timed = dir.path().join("timed.log");
    fs::write(&timed, lines.join("\n") + "\n").expect("write");
    let o = replay_json(&addr, &timed, &["--speed", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let e = json_of(&o)["elapsed_s"].as_f64().expect("elapsed_s");
    assert!((0.55..1.3).contains(&e), "--speed 2 took {e}s");

    // --rate 40 for 21 lines: 20 gaps of 25 ms, timestamps ignored; the input is gzipped.
    let gz = dir.path().join("timed.log.gz");
    let mut enc = flate2::write::GzEncoder::new(
        fs::File::create(&gz).expect("create gz"),
        flate2::Compression::default(),
    );
    for i in 0..21u64 {
        writeln!(enc, "{} V1 a:1 GET SUCC 0 h 0 r{i}", ts(i * 5000)).expect("gz write");
    }
    enc.finish().expect("gz finish");
    let o = replay_json(
        &addr,
        &gz,
        &[
            "--rate",
            "40",
            "--watch",
            &format!("http://127.0.0.1:{}", node.webport()),
            "--watch-interval",
            "100ms",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v = json_of(&o);
    assert_eq!(v["replayed"], 21);
    let e = v["elapsed_s"].as_f64().expect("elapsed_s");
    assert!((0.45..1.2).contains(&e), "--rate 40 took {e}s");
    let w = &v["watch"][0];
    assert!(
        w["samples"].as_array().map_or(0, Vec::len) >= 3,
        "watch samples: {w}"
    );
    for c in ["AllocRL", "GetData", "SetData", "FlushData"] {
        assert!(w["buffers"][c]["max"].is_u64(), "{c} missing in {w}");
    }
    // Live samples go to stderr.
    assert!(
        text(&o.stderr).contains("[watch http://127.0.0.1:"),
        "{}",
        show(&o)
    );

    // --limit and --duration bound the run.
    let o = replay_json(&addr, &timed, &["--limit", "3", "--max"]);
    assert_eq!(json_of(&o)["replayed"], 3, "{}", show(&o));
    let o = replay_json(
        &addr,
        &timed,
        &["--max", "--affinity", "client", "--connections", "3"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v = json_of(&o);
    assert_eq!(v["replayed"], 13, "{v}");
    assert_eq!(v["per_cmd"]["GET"]["ok"], 13, "{v}");
    let start = Instant::now();
    let o = replay_json(
        &addr,
        &timed,
        &["--loop", "--duration", "700ms", "--speed", "4"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let v = json_of(&o);
    assert!(
        v["replayed"].as_u64().unwrap_or(0) > 13,
        "--loop did not restart the input: {v}"
    );
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn usage_and_unreachable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("a.log");
    fs::write(&log, "V1 a:1 GET SUCC 0 h 5 k\n").expect("write");
    let l = log.to_str().expect("utf-8");

    let o = beansctl(&["replay", "--target", "10.0.0.5:7905", l]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert_eq!(
        text(&o.stderr).lines().next(),
        Some("error: target 10.0.0.5:7905 is not a loopback address; pass --allow-remote")
    );

    let port = free_port();
    let o = beansctl(&["replay", "--target", &format!("127.0.0.1:{port}"), l]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert!(
        text(&o.stderr).starts_with("error: cannot connect"),
        "{}",
        show(&o)
    );

    let o = beansctl(&[
        "replay",
        "--target",
        "127.0.0.1:1",
        "/nonexistent/access.log",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let o = beansctl(&["replay", "--target", "127.0.0.1:1", l, "--loop"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let o = beansctl(&["replay", "--target", "127.0.0.1:1", l, "--cmd", "incr"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(!text(&o.stderr).contains("panicked"));
}
