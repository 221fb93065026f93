//! `beansctl sync` end to end against real `beansdb` node processes: a production-shaped
//! cluster (4 nodes, 16 buckets, each bucket on 3 nodes, no node holding every bucket),
//! replicas diverged by direct writes, then synced and checked node by node.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use beansdb_client::{Client, StoreReply};
use common::{bucket_of, text, unique_ports, NotReady, Probe};
use serde_json::Value;

const NUMBUCKET: usize = 16;

fn bucket_hex(b: usize, numbucket: usize) -> String {
    if numbucket == 256 {
        format!("{b:02x}")
    } else {
        format!("{b:x}")
    }
}

struct Node {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    webport: u16,
}

impl Node {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        if let Err(e) = self.try_start() {
            panic!("{e}");
        }
    }

    /// Starts the node and waits until it answers; the error carries its log.
    fn try_start(&mut self) -> Result<(), String> {
        let out = fs::File::create(self.dir.join("node.out")).expect("node.out");
        let err = fs::File::create(self.dir.join("node.err")).expect("node.err");
        let child = self
            .child
            .insert(common::spawn_node(&self.dir, out.into(), err.into()));
        match common::wait_ready(child, self.port, PROBE) {
            Ok(()) => Ok(()),
            Err(NotReady::Exited(status)) => {
                self.child = None;
                Err(format!("beansdb exited with {status}: {}", self.log()))
            }
            Err(NotReady::Timeout) => Err(format!(
                "beansdb on {} not ready: {}",
                self.port,
                self.log()
            )),
        }
    }

    /// Graceful stop (SIGTERM), so everything written so far is on disk for the restart.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            common::sigterm_and_wait(&mut c, Duration::from_secs(15));
        }
    }

    fn log(&self) -> String {
        let mut s = String::new();
        for f in ["node.err", "node.out", "beansdb.log"] {
            if let Ok(t) = fs::read_to_string(self.dir.join(f)) {
                let lines: Vec<&str> = t.lines().collect();
                s.push_str(&format!(
                    "--- {f}\n{}\n",
                    lines[lines.len().saturating_sub(20)..].join("\n")
                ));
            }
        }
        s
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

/// Nodes of a whole cluster start at once: a shorter connect, a longer read.
const PROBE: Probe = Probe {
    connect_timeout: Some(Duration::from_millis(300)),
    read_timeout: Duration::from_secs(2),
};

/// Nodes sharing one route; main `i` serves every bucket `b` with `b % mains != i`.
struct Cluster {
    _tmp: tempfile::TempDir,
    nodes: Vec<Node>,
    mains: usize,
    numbucket: usize,
    route: PathBuf,
    rt: tokio::runtime::Runtime,
}

impl Cluster {
    /// `mains` main nodes (main `i` serves bucket `b` iff `b % mains != i`) and `backups`
    /// backups. Retries with fresh ports when another process took one meanwhile.
    fn start(mains: usize, backups: usize) -> Cluster {
        Cluster::start_with(mains, backups, NUMBUCKET)
    }

    fn start_with(mains: usize, backups: usize, numbucket: usize) -> Cluster {
        let mut last = String::new();
        for _ in 0..4 {
            match Cluster::try_start(mains, backups, numbucket) {
                Ok(c) => return c,
                Err(e) if e.contains("in use") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("cluster did not start: {last}");
    }

    fn try_start(mains: usize, backups: usize, numbucket: usize) -> Result<Cluster, String> {
        let tmp = tempfile::Builder::new()
            .prefix("beansctl-sync-")
            .tempdir()
            .expect("tempdir");
        let total = mains + backups;
        let ports = unique_ports(2 * total);
        let mut nodes = Vec::new();
        for (i, &port) in ports.iter().enumerate().take(total) {
            let dir = tmp.path().join(format!("n{i}"));
            fs::create_dir_all(dir.join("conf")).expect("conf dir");
            fs::create_dir_all(dir.join("home")).expect("home dir");
            nodes.push(Node {
                child: None,
                dir,
                port,
                webport: ports[total + i],
            });
        }
        let mut route = format!("numbucket: {numbucket}\nmain:\n");
        for (i, n) in nodes.iter().enumerate().take(mains) {
            let ids: Vec<String> = (0..numbucket)
                .filter(|b| b % mains != i)
                .map(|b| format!("\"{}\"", bucket_hex(b, numbucket)))
                .collect();
            route.push_str(&format!(
                "- addr: {}\n  buckets: [{}]\n",
                n.addr(),
                ids.join(", ")
            ));
        }
        route.push_str("backup:\n");
        for n in &nodes[mains..] {
            route.push_str(&format!("- \"{}\"\n", n.addr()));
        }
        if backups == 0 {
            route = route.replace("backup:\n", "backup: []\n");
        }
        for (i, n) in nodes.iter().enumerate() {
            let webport = n.webport;
            // One node skips same-value writes (check_vhash), so version raises in place are
            // exercised next to nodes that write a new record.
            let global = common::global_yaml(
                n.port,
                webport,
                &n.dir,
                "",
                &format!("  data:\n    check_vhash: {}\n", i == 0),
            );
            common::write_conf(&n.dir, &global, &route);
        }
        let route_path = tmp.path().join("route.yaml");
        fs::write(&route_path, &route).expect("route.yaml");
        for n in &mut nodes {
            // Dropping `nodes` on error kills the ones already started.
            n.try_start()?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Ok(Cluster {
            _tmp: tmp,
            nodes,
            mains,
            numbucket,
            route: route_path,
            rt,
        })
    }

    fn stop(&mut self, i: usize) {
        self.nodes[i].stop();
    }

    fn restart(&mut self, i: usize) {
        self.nodes[i].start();
    }

    fn route(&self) -> &str {
        self.route.to_str().expect("utf-8 temp path")
    }

    /// Main node indices serving `bucket`.
    fn mains_of(&self, bucket: usize) -> Vec<usize> {
        (0..self.mains)
            .filter(|i| bucket % self.mains != *i)
            .collect()
    }

    fn mains_of_key(&self, key: &str) -> Vec<usize> {
        let depth = if self.numbucket == 256 { 2 } else { 1 };
        self.mains_of(beansdb_hash::bucket_of_key(key.as_bytes(), depth))
    }

    fn addr(&self, i: usize) -> String {
        self.nodes[i].addr()
    }

    fn client(&self, i: usize) -> Client {
        let addr = self.addr(i);
        self.rt
            .block_on(Client::connect(&addr))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    fn set(&self, i: usize, key: &str, flag: u32, ver: i32, val: &[u8]) {
        let mut c = self.client(i);
        let r = self.rt.block_on(c.set(key, flag, ver, val, false));
        assert!(
            matches!(r, Ok(StoreReply::Stored)),
            "set {key} on {i}: {r:?}"
        );
    }

    fn delete(&self, i: usize, key: &str) {
        let mut c = self.client(i);
        let r = self.rt.block_on(c.delete(key));
        assert!(matches!(r, Ok(true)), "delete {key} on {i}: {r:?}");
    }

    fn get(&self, i: usize, key: &str) -> Option<(u32, Vec<u8>)> {
        let mut c = self.client(i);
        self.rt
            .block_on(c.get(key))
            .expect("get")
            .map(|v| (v.flag, v.data.to_vec()))
    }

    fn raw(&self, i: usize, key: &str) -> Option<String> {
        let mut c = self.client(i);
        self.rt
            .block_on(c.get(key))
            .expect("get")
            .map(|v| String::from_utf8_lossy(&v.data).into_owned())
    }

    /// `(ver, vhash, flag, ts)` from `?key`.
    fn meta(&self, i: usize, key: &str) -> Option<(i32, u32, u32, u64)> {
        self.raw(i, &format!("?{key}")).map(|m| {
            let f: Vec<&str> = m.split(' ').collect();
            (
                f[0].parse().expect("ver"),
                f[1].parse().expect("vhash"),
                f[2].parse().expect("flag"),
                f[f.len() - 1].parse().expect("ts"),
            )
        })
    }

    fn stat(&self, i: usize, name: &str) -> u64 {
        let mut c = self.client(i);
        let m = self.rt.block_on(c.stats(&[name])).expect("stats");
        m.get(name)
            .and_then(|v| v.parse().ok())
            .expect("stat value")
    }

    /// Every main's view of every bucket: root (hash, count) and the sorted key listing.
    fn listings(&self) -> BTreeMap<(usize, String), String> {
        assert_eq!(
            self.numbucket, NUMBUCKET,
            "listings() reads 16-bucket paths"
        );
        let mut out = BTreeMap::new();
        for b in 0..NUMBUCKET {
            for i in self.mains_of(b) {
                let top = self.raw(i, "@").unwrap_or_default();
                let root = top
                    .lines()
                    .find(|l| l.starts_with(&format!("{b:x}/")))
                    .unwrap_or_default()
                    .to_string();
                let mut keys: Vec<String> = self
                    .raw(i, &format!("@{b:x}"))
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_string)
                    .collect();
                keys.sort();
                out.insert((b, self.addr(i)), format!("{root}\n{}", keys.join("\n")));
            }
        }
        out
    }

    /// All mains of each bucket hold byte-identical listings.
    fn assert_replicas_equal(&self) {
        let l = self.listings();
        for b in 0..NUMBUCKET {
            let views: Vec<(&String, &String)> = self
                .mains_of(b)
                .into_iter()
                .map(|i| {
                    let addr = self.addr(i);
                    let (k, v) = l.get_key_value(&(b, addr)).expect("listed");
                    (&k.1, v)
                })
                .collect();
            for (addr, v) in &views[1..] {
                assert_eq!(
                    *v, views[0].1,
                    "bucket {b:x}: {addr} differs from {}",
                    views[0].0
                );
            }
        }
    }

    /// Every main of the key holds the same value, flag and version.
    fn assert_key_same(&self, key: &str) -> Option<(u32, Vec<u8>, i32)> {
        let mains = self.mains_of_key(key);
        let first_meta = self.meta(mains[0], key);
        let first_val = self.get(mains[0], key);
        for &i in &mains[1..] {
            let (m, v) = (self.meta(i, key), self.get(i, key));
            assert_eq!(
                m.map(|m| (m.0, m.1, m.2)),
                first_meta.map(|m| (m.0, m.1, m.2)),
                "{key}: ?key on node {i} vs node {}",
                mains[0]
            );
            assert_eq!(v, first_val, "{key}: value on node {i}");
        }
        first_val.map(|(f, v)| (f, v, first_meta.map(|m| m.0).unwrap_or(0)))
    }

    /// beansctl sync with the cluster's route and a per-test lock file.
    fn sync(&self, extra: &[&str]) -> Output {
        let lock = self._tmp.path().join("sync.lock");
        let mut args = vec![
            "sync",
            "--route",
            self.route(),
            "--lock-file",
            lock.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        beansctl(&args)
    }
}

fn beansctl(args: &[&str]) -> Output {
    common::beansctl_env(args, &[("NO_COLOR", "1")])
}

/// Runs and parses a `--json` sync, asserting the exit code.
fn sync_json(c: &Cluster, extra: &[&str], code: i32) -> Value {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let out = c.sync(&args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "sync {extra:?}\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        !text(&out.stderr).contains("panicked at"),
        "{}",
        text(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", text(&out.stdout)));
    assert_eq!(v["exit_code"], code, "{v}");
    v
}

fn total(v: &Value, name: &str) -> u64 {
    v["totals"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("totals.{name} missing: {}", v["totals"]))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Sleeps into the next second (+ 20 ms), so a couple of quick writes share one ts.
fn at_second_start() {
    let now = unix_now();
    let wait = 1.0 - now.fract() + 0.02;
    std::thread::sleep(Duration::from_secs_f64(wait));
}

/// (a) + (c): a replica that missed writes, updates and deletes while down is repaired; a
/// dry-run before reports exactly those differences and changes nothing.
#[test]
fn missed_writes_and_deletes_are_repaired() {
    let mut c = Cluster::start(4, 0);
    let flag_of = |i: usize| match i % 3 {
        0 => 7,
        _ => 0,
    };
    let keys: Vec<String> = (0..120).map(|i| format!("key:{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        for m in c.mains_of_key(k) {
            c.set(m, k, flag_of(i), 0, format!("v1-{i}").as_bytes());
        }
    }
    // Everything equal: in sync, no key compared.
    let v = sync_json(&c, &["--hot-seconds", "0"], 0);
    assert_eq!(total(&v, "differing"), 0);
    assert_eq!(total(&v, "keys_compared"), 0);

    let down = 1;
    c.stop(down);
    let mut expected = 0;
    let mut touch = |k: &str| {
        if c.mains_of_key(k).contains(&down) {
            expected += 1;
        }
    };
    let news: Vec<String> = (0..40).map(|i| format!("new:{i}")).collect();
    for (i, k) in news.iter().enumerate() {
        for m in c.mains_of_key(k).into_iter().filter(|&m| m != down) {
            c.set(m, k, 3, 0, format!("new-{i}").as_bytes());
        }
        touch(k);
    }
    for (i, k) in keys[0..30].iter().enumerate() {
        for m in c.mains_of_key(k).into_iter().filter(|&m| m != down) {
            c.set(m, k, flag_of(i), 0, b"updated");
        }
        touch(k);
    }
    for k in &keys[30..50] {
        for m in c.mains_of_key(k).into_iter().filter(|&m| m != down) {
            c.delete(m, k);
        }
        touch(k);
    }
    c.restart(down);
    assert!(
        expected > 20,
        "too few ops on the restarted node: {expected}"
    );

    // (c) dry-run: reports the differences, writes nothing.
    let before = c.listings();
    let sets: Vec<u64> = (0..4)
        .map(|i| c.stat(i, "cmd_set") + c.stat(i, "cmd_delete"))
        .collect();
    let v = sync_json(&c, &["--dry-run", "--hot-seconds", "0"], 1);
    assert_eq!(v["dry_run"], true);
    assert_eq!(total(&v, "differing"), expected, "{}", v["totals"]);
    assert_eq!(total(&v, "would_repair"), expected);
    assert_eq!(total(&v, "repaired"), 0);
    assert_eq!(c.listings(), before, "dry-run changed a listing");
    let after: Vec<u64> = (0..4)
        .map(|i| c.stat(i, "cmd_set") + c.stat(i, "cmd_delete"))
        .collect();
    assert_eq!(after, sets, "dry-run sent writes");
    let text_out = c.sync(&["--dry-run", "--hot-seconds", "0"]);
    assert_eq!(text_out.status.code(), Some(1));
    let t = text(&text_out.stdout);
    assert!(
        t.lines().next().is_some_and(|l| l.contains("mode=dry-run")),
        "{t}"
    );
    assert!(t.contains("WOULD_REPAIR"), "{t}");
    assert!(
        t.contains(&format!("differing {expected}, would repair {expected}")),
        "{t}"
    );

    // Repair.
    let v = sync_json(&c, &["--hot-seconds", "0"], 0);
    assert_eq!(total(&v, "differing"), expected, "{}", v["totals"]);
    assert_eq!(total(&v, "repaired"), expected);
    assert_eq!(total(&v, "failed"), 0);
    let v = sync_json(&c, &["--dry-run", "--hot-seconds", "0"], 0);
    assert_eq!(total(&v, "differing"), 0);

    c.assert_replicas_equal();
    for (i, k) in keys.iter().enumerate() {
        let got = c.assert_key_same(k);
        match i {
            0..30 => assert_eq!(got, Some((flag_of(i), b"updated".to_vec(), 2)), "{k}"),
            30..50 => {
                assert_eq!(got, None, "{k} resurrected");
                for m in c.mains_of_key(k) {
                    assert_eq!(c.meta(m, k).map(|m| m.0), Some(-2), "{k} on {m}");
                }
            }
            _ => assert_eq!(
                got,
                Some((flag_of(i), format!("v1-{i}").into_bytes(), 1)),
                "{k}"
            ),
        }
    }
    for (i, k) in news.iter().enumerate() {
        assert_eq!(
            c.assert_key_same(k),
            Some((3, format!("new-{i}").into_bytes(), 1)),
            "{k}"
        );
    }
}

/// (b): diverged values are repaired per the winner rules: higher version, newer ts at an
/// equal version, majority at an equal ts, version-only (`--full`); and a write that only
/// reached the backup is recovered to the mains (and drained with `--drain-backups`).
#[test]
fn diverged_replicas_follow_the_winner_rules() {
    let c = Cluster::start(4, 1);
    let backup = 4;
    // Higher version on one replica wins everywhere.
    let m = c.mains_of_key("div:high");
    for &i in &m {
        c.set(i, "div:high", 0, 0, b"old");
    }
    c.set(m[1], "div:high", 9, 5, b"newer-by-version");

    // Same version, different bytes, 1 s apart: the newer ts wins at ver+1.
    let m2 = c.mains_of_key("div:ts");
    c.set(m2[0], "div:ts", 0, 3, b"X");
    c.set(m2[2], "div:ts", 0, 3, b"X");
    std::thread::sleep(Duration::from_millis(1100));
    c.set(m2[1], "div:ts", 0, 3, b"Y-newer");

    // Same version within one second: the majority wins (or the newer ts if the second
    // turned between the writes).
    let m3 = c.mains_of_key("div:maj");
    at_second_start();
    c.set(m3[0], "div:maj", 0, 3, b"MAJ");
    c.set(m3[1], "div:maj", 0, 3, b"MIN");
    c.set(m3[2], "div:maj", 0, 3, b"MAJ");
    let ts: Vec<u64> = m3
        .iter()
        .map(|&i| c.meta(i, "div:maj").expect("meta").3)
        .collect();
    let maj_expected: &[u8] = if ts[1] > ts[0].max(ts[2]) {
        b"MIN"
    } else {
        b"MAJ"
    };

    // Same bytes, different versions: only the version is raised (needs --full: the
    // merkle hashes ignore versions).
    let m4 = c.mains_of_key("div:ver");
    for &i in &m4 {
        c.set(i, "div:ver", 0, 2, b"same");
    }
    c.set(m4[0], "div:ver", 0, 6, b"same");

    // Only the backup got this write.
    c.set(backup, "div:backup", 4, 0, b"from-backup");

    let decisions = c._tmp.path().join("decisions.jsonl");
    let v = sync_json(
        &c,
        &[
            "--hot-seconds",
            "0",
            "--full",
            "--decisions",
            decisions.to_str().expect("utf-8"),
        ],
        0,
    );
    assert_eq!(total(&v, "repaired"), 5, "{}", v["totals"]);
    assert_eq!(
        c.assert_key_same("div:high"),
        Some((9, b"newer-by-version".to_vec(), 5))
    );
    assert_eq!(
        c.assert_key_same("div:ts"),
        Some((0, b"Y-newer".to_vec(), 4))
    );
    assert_eq!(
        c.assert_key_same("div:maj"),
        Some((0, maj_expected.to_vec(), 4)),
        "ts {ts:?}"
    );
    assert_eq!(c.assert_key_same("div:ver"), Some((0, b"same".to_vec(), 6)));
    assert_eq!(
        c.assert_key_same("div:backup"),
        Some((4, b"from-backup".to_vec(), 1))
    );
    assert_eq!(
        c.meta(backup, "div:backup").map(|m| m.0),
        Some(1),
        "backup written"
    );
    c.assert_replicas_equal();

    let lines: Vec<Value> = fs::read_to_string(&decisions)
        .expect("decisions file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("decision line is JSON"))
        .collect();
    let by_key = |k: &str| -> &Value {
        lines
            .iter()
            .find(|l| l["key"] == k)
            .unwrap_or_else(|| panic!("no decision for {k}: {lines:?}"))
    };
    assert_eq!(by_key("div:high")["action"], "copy");
    assert_eq!(by_key("div:high")["reason"], "higher_version");
    assert_eq!(by_key("div:ts")["action"], "bump");
    assert_eq!(by_key("div:ts")["reason"], "newer_ts");
    assert_eq!(by_key("div:ver")["action"], "version_only");
    assert_eq!(by_key("div:backup")["winner"]["node"], c.addr(backup));
    for l in &lines {
        assert_eq!(l["result"], "ok", "{l}");
        for f in [
            "ts", "bucket", "khash", "action", "reason", "winner", "targets", "states",
        ] {
            assert!(l.get(f).is_some(), "decision lacks {f}: {l}");
        }
    }

    // The backup's copy goes once every main holds it.
    let v = sync_json(&c, &["--hot-seconds", "0", "--drain-backups"], 0);
    assert_eq!(total(&v, "drained"), 1, "{}", v["totals"]);
    assert_eq!(c.get(backup, "div:backup"), None);
    assert!(c.assert_key_same("div:backup").is_some());
}

/// (d): a delete that a down replica missed is applied to it on sync and never undone; a
/// tombstone at a higher version is version-aligned; a lone tombstone is held (and applied
/// with `--tombstone-minority delete`).
#[test]
fn deleted_keys_are_not_resurrected() {
    let mut c = Cluster::start(4, 0);
    let m = c.mains_of_key("del:missed");
    let down = m[2];
    // A key that also lives on the node that will be down, for the version-aligned delete.
    let aligned = (0..)
        .map(|n| format!("del:aligned:{n}"))
        .find(|k| c.mains_of_key(k).contains(&down))
        .unwrap_or_default();
    for k in ["del:missed", aligned.as_str(), "del:lone", "del:hot"] {
        for i in c.mains_of_key(k) {
            c.set(i, k, 0, 0, b"alive");
        }
    }
    // Delete on 2 of 3 while the third is down.
    c.stop(down);
    for &i in &m[..2] {
        c.delete(i, "del:missed");
    }
    // A tombstone at -6 on the replicas that stay up; the down one keeps live ver 1.
    let ma = c.mains_of_key(&aligned);
    for &i in ma.iter().filter(|&&i| i != down) {
        c.set(i, &aligned, 0, 5, b"alive");
        c.delete(i, &aligned);
    }
    c.restart(down);

    let v = sync_json(&c, &["--hot-seconds", "0"], 0);
    assert_eq!(total(&v, "failed"), 0, "{}", v["totals"]);
    assert_eq!(total(&v, "version_misaligned"), 0);
    for &i in &m {
        assert_eq!(c.get(i, "del:missed"), None, "resurrected on {i}");
        assert_eq!(c.meta(i, "del:missed").map(|x| x.0), Some(-2), "node {i}");
    }
    for &i in &ma {
        assert_eq!(
            c.meta(i, &aligned).map(|x| x.0),
            Some(-6),
            "{aligned} on node {i}"
        );
        assert_eq!(c.get(i, &aligned), None);
    }
    // Nothing left, and a second run does not bring anything back.
    let v = sync_json(&c, &["--hot-seconds", "0", "--full"], 0);
    assert_eq!(total(&v, "differing"), 0, "{}", v["totals"]);
    for &i in &m {
        assert_eq!(c.get(i, "del:missed"), None);
    }

    // A lone tombstone against two live copies is held: exit 1, nothing written.
    let ml = c.mains_of_key("del:lone");
    c.delete(ml[0], "del:lone");
    let v = sync_json(&c, &["--hot-seconds", "0"], 1);
    assert_eq!(total(&v, "held"), 1, "{}", v["totals"]);
    assert_eq!(c.get(ml[1], "del:lone"), Some((0, b"alive".to_vec())));
    assert_eq!(c.get(ml[2], "del:lone"), Some((0, b"alive".to_vec())));
    let held_bucket = v["buckets"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["held"] == 1))
        .expect("bucket with the held key");
    assert_eq!(held_bucket["state"], "unresolved");
    // Applied on request, with equal versions everywhere.
    let v = sync_json(
        &c,
        &["--hot-seconds", "0", "--tombstone-minority", "delete"],
        0,
    );
    assert_eq!(total(&v, "repaired"), 1, "{}", v["totals"]);
    for &i in &ml {
        assert_eq!(c.meta(i, "del:lone").map(|x| x.0), Some(-2), "node {i}");
    }

    // A fresh delete is hot under the default --hot-seconds: skipped, and exit 0.
    let mh = c.mains_of_key("del:hot");
    c.delete(mh[0], "del:hot");
    c.delete(mh[1], "del:hot");
    let v = sync_json(&c, &[], 0);
    assert_eq!(total(&v, "skipped_hot"), 1, "{}", v["totals"]);
    assert_eq!(c.get(mh[2], "del:hot"), Some((0, b"alive".to_vec())));
}

/// (e): report fields, text layout and exit codes (0, 1, 2, 3, 4), replica-down handling,
/// conflicts.
#[test]
fn report_and_exit_codes() {
    let mut c = Cluster::start(4, 0);
    for i in 0..40 {
        let k = format!("rep:{i}");
        for m in c.mains_of_key(&k) {
            c.set(m, &k, 0, 0, b"v");
        }
    }
    let v = sync_json(&c, &[], 0);
    for f in [
        "tool",
        "version",
        "started_at",
        "finished_at",
        "route",
        "dry_run",
        "options",
        "buckets",
        "totals",
        "exit_code",
    ] {
        assert!(v.get(f).is_some(), "report lacks {f}");
    }
    assert_eq!(v["tool"], "beansctl sync");
    assert!(v["started_at"].as_str().is_some_and(|s| s.ends_with('Z')));
    let buckets = v["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), NUMBUCKET);
    for b in buckets {
        for f in [
            "bucket",
            "replicas",
            "down",
            "backups",
            "root_equal",
            "keys",
            "dirs_listed",
            "keys_compared",
            "differing",
            "repaired",
            "would_repair",
            "skipped_hot",
            "skipped_changed",
            "held",
            "conflicts",
            "failed",
            "version_misaligned",
            "drained",
            "guard_skipped",
            "errors",
            "duration_ms",
        ] {
            assert!(b.get(f).is_some(), "bucket lacks {f}: {b}");
        }
        assert_eq!(b["replicas"].as_array().map(Vec::len), Some(3));
        assert_eq!(b["root_equal"], true);
        assert_eq!(b["state"], "in-sync");
    }
    assert_eq!(total(&v, "keys_compared"), 0);

    // Text report shape.
    let out = c.sync(&[]);
    assert_eq!(out.status.code(), Some(0));
    let t = text(&out.stdout);
    let lines: Vec<&str> = t.lines().collect();
    assert!(
        lines[0].starts_with("sync route=") && lines[0].contains("mode=repair"),
        "{t}"
    );
    assert!(lines[1].starts_with("BUCKET REPL KEYS"), "{t}");
    assert!(
        lines[2].starts_with("0 ") && lines[2].contains("3/3"),
        "{t}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("TOTAL  16 buckets: 16 in-sync;")),
        "{t}"
    );

    // The route may also come from a conf dir or a node's web address.
    let conf = c.nodes[0].dir.join("conf");
    let web = format!("http://127.0.0.1:{}", c.nodes[0].webport);
    for src in [conf.to_str().expect("utf-8"), web.as_str()] {
        let out = beansctl(&[
            "sync",
            "--route",
            src,
            "--dry-run",
            "--json",
            "--bucket",
            "1",
        ]);
        assert_eq!(out.status.code(), Some(0), "{src}: {}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["route"], src);
        assert_eq!(
            v["buckets"][0]["replicas"].as_array().map(Vec::len),
            Some(3)
        );
    }

    // Equal version, equal ts, one each (third replica absent): conflict, exit 1, no write.
    // (Not in buckets 0 and 3, which the replica-down checks below expect in sync.)
    let ck = (0..)
        .map(|n| format!("rep:conflict:{n}"))
        .find(|k| ![0, 3].contains(&bucket_of(k)))
        .unwrap_or_default();
    let m = c.mains_of_key(&ck);
    let bucket = format!("{:x}", bucket_of(&ck));
    at_second_start();
    c.set(m[0], &ck, 0, 3, b"left");
    c.set(m[1], &ck, 0, 3, b"right");
    let ts0 = c.meta(m[0], &ck).map(|x| x.3);
    let ts1 = c.meta(m[1], &ck).map(|x| x.3);
    let v = sync_json(&c, &["--hot-seconds", "0", "--bucket", &bucket], 1);
    if ts0 == ts1 {
        assert_eq!(total(&v, "conflicts"), 1, "{}", v["totals"]);
        assert_eq!(c.get(m[2], &ck), None, "a conflict wrote");
        assert_eq!(c.get(m[0], &ck), Some((0, b"left".to_vec())));
        assert_eq!(v["buckets"][0]["state"], "unresolved");
    }
    assert_eq!(v["buckets"].as_array().map(Vec::len), Some(1));

    // A main down: its buckets are skipped with exit 1; --allow-partial compares the rest.
    c.stop(3);
    let v = sync_json(&c, &["--hot-seconds", "0", "--bucket", "0,3"], 1);
    let b0 = &v["buckets"][0];
    assert_eq!(b0["state"], "replica-down", "{b0}");
    assert_eq!(b0["down"][0], c.addr(3));
    assert!(b0["errors"].as_array().is_some_and(|e| !e.is_empty()));
    assert_eq!(
        v["buckets"][1]["state"], "in-sync",
        "bucket 3 does not live on node 3"
    );
    let out = c.sync(&["--bucket", "0"]);
    assert!(text(&out.stdout).contains("2/3"), "{}", text(&out.stdout));
    let v = sync_json(
        &c,
        &["--hot-seconds", "0", "--bucket", "0", "--allow-partial"],
        1,
    );
    assert_eq!(v["buckets"][0]["root_equal"], true, "{}", v["buckets"][0]);
    c.restart(3);

    // Lock busy: exit 4 naming the holder's pid. The holder is slowed down by --rate.
    let lock = c._tmp.path().join("held.lock");
    let first = Command::new(common::beansctl_path())
        .args([
            "sync",
            "--route",
            c.route(),
            "--lock-file",
            lock.to_str().expect("utf-8"),
            "--rate",
            "4",
            "--dry-run",
            "-q",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn first sync");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_to_string(&lock).unwrap_or_default().is_empty() {
        assert!(Instant::now() < deadline, "first sync never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = beansctl(&[
        "sync",
        "--route",
        c.route(),
        "--lock-file",
        lock.to_str().expect("utf-8"),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.starts_with(&format!(
            "error: another sync is running against this cluster (pid {} on ",
            first.id()
        )),
        "{err}"
    );
    // Ctrl-C on the holder: graceful stop, partial report, exit 130.
    let _ = Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status();
    let out = first.wait_with_output().expect("first sync output");
    let t = text(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{t}\n{}", text(&out.stderr));
    assert!(
        t.contains("interrupted") && t.contains("TOTAL  16 buckets"),
        "{t}"
    );

    // Usage and route errors: exit 2; nothing reachable: exit 3.
    let bad_route = c._tmp.path().join("bad.yaml");
    fs::write(
        &bad_route,
        "numbucket: 1\nmain:\n- addr: 127.0.0.1:1\n  buckets: [\"0\"]\n",
    )
    .expect("write");
    let dead = c._tmp.path().join("dead.yaml");
    fs::write(
        &dead,
        common::route_yaml(
            unique_ports(1)[0],
            &format!("[{}]", common::bucket_ids(16)),
            "",
        ),
    )
    .expect("write");
    let missing = c._tmp.path().join("missing.yaml");
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["sync", "--route", c.route(), "--bucket", "g"], 2),
        (vec!["sync", "--route", c.route(), "--bucket", "10"], 2),
        (vec!["sync", "--route", missing.to_str().expect("utf-8")], 2),
        (
            vec!["sync", "--route", bad_route.to_str().expect("utf-8")],
            2,
        ),
        (vec!["sync", "--route", c.route(), "--no-such-flag"], 2),
        (vec!["sync"], 2),
        (
            vec![
                "sync",
                "--route",
                dead.to_str().expect("utf-8"),
                "--bucket",
                "0",
            ],
            3,
        ),
    ];
    for (args, code) in cases {
        let out = beansctl(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(
            err.starts_with("error:") || err.contains("\nerror:"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked at"), "{args:?}: {err}");
    }
}

/// Buckets of more than 256 keys answer Dir listings: the walk descends only into differing
/// children; `--max-diff-keys` guards subtrees; `--rate` paces each node.
#[test]
fn deep_walk_guard_and_rate() {
    let c = Cluster::start(4, 0);
    let target = 5;
    let keys: Vec<String> = (0..)
        .map(|n| format!("deep:{n}"))
        .filter(|k| bucket_of(k) == target)
        .take(340)
        .collect();
    let m = c.mains_of(target);
    for (n, k) in keys.iter().enumerate() {
        let holders = if (300..330).contains(&n) {
            &m[..2]
        } else {
            &m[..]
        };
        for &i in holders {
            c.set(i, k, 0, 0, k.as_bytes());
        }
        if n >= 330 {
            c.set(m[1], k, 0, 7, b"newer");
        }
    }
    let b = format!("{target:x}");

    // Every child of the root differs by 0-5 keys: a guard of 1 skips some subtrees.
    let v = sync_json(
        &c,
        &[
            "--dry-run",
            "--hot-seconds",
            "0",
            "--bucket",
            &b,
            "--max-diff-keys",
            "1",
        ],
        1,
    );
    let rep = &v["buckets"][0];
    let guarded = rep["guard_skipped"].as_array().expect("guard_skipped");
    assert!(!guarded.is_empty(), "{rep}");
    assert!(rep["dirs_listed"].as_u64().unwrap_or(0) >= 3, "{rep}");
    let g0 = &guarded[0];
    assert_eq!(g0["path"].as_str().map(str::len), Some(2), "{g0}");
    assert_eq!(g0["counts"].as_object().map(|m| m.len()), Some(3), "{g0}");
    assert!((total(&v, "differing") as usize) < 40, "{}", v["totals"]);
    let out = c.sync(&[
        "--dry-run",
        "--hot-seconds",
        "0",
        "--bucket",
        &b,
        "--max-diff-keys",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains(&format!(
            "  skipped subtree @{}",
            g0["path"].as_str().unwrap_or("?")
        )),
        "{}",
        text(&out.stdout)
    );

    // Without the guard everything is found and repaired.
    let v = sync_json(&c, &["--hot-seconds", "0"], 0);
    assert_eq!(total(&v, "differing"), 40, "{}", v["totals"]);
    assert_eq!(total(&v, "repaired"), 40);
    let rep = v["buckets"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["bucket"] == b.as_str()))
        .expect("bucket report");
    // Only the differing children were read, never the whole key space.
    assert!(rep["keys_compared"].as_u64().unwrap_or(0) < 340, "{rep}");
    c.assert_replicas_equal();
    for (n, k) in keys.iter().enumerate() {
        let want = if n >= 330 {
            (b"newer".to_vec(), 7)
        } else {
            (k.as_bytes().to_vec(), 1)
        };
        assert_eq!(c.assert_key_same(k), Some((0, want.0, want.1)), "{k}");
    }

    // --full compares every key; --rate 20 paces each node (burst 2).
    let rate = 20.0;
    let v = sync_json(
        &c,
        &[
            "--dry-run",
            "--full",
            "--hot-seconds",
            "0",
            "--bucket",
            &b,
            "--rate",
            "20",
        ],
        0,
    );
    assert_eq!(v["buckets"][0]["keys_compared"], 340, "{}", v["buckets"][0]);
    let max_req = v["nodes"]
        .as_object()
        .expect("nodes")
        .values()
        .filter_map(|n| n["requests"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(max_req >= 17, "{}", v["nodes"]);
    let min_ms = (max_req as f64 - 2.0) / rate * 1000.0;
    let took = v["duration_ms"].as_u64().unwrap_or(0) as f64;
    assert!(
        took >= min_ms * 0.95,
        "{max_req} requests in {took} ms at --rate 20"
    );
}

/// 256 buckets: roots come from `@<h>` listings and bucket paths have two digits.
#[test]
fn numbucket_256_missed_writes() {
    let mut c = Cluster::start_with(3, 0, 256);
    let keys: Vec<String> = (0..60).map(|i| format!("k256:{i}")).collect();
    for k in &keys {
        for m in c.mains_of_key(k) {
            c.set(m, k, 1, 0, b"one");
        }
    }
    let down = 0;
    c.stop(down);
    let mut expected = 0;
    for (i, k) in keys.iter().enumerate().take(30) {
        for m in c.mains_of_key(k).into_iter().filter(|&m| m != down) {
            if i % 2 == 1 {
                c.delete(m, k);
            } else {
                c.set(m, k, 2, 0, b"two");
            }
        }
        if c.mains_of_key(k).contains(&down) {
            expected += 1;
        }
    }
    c.restart(down);
    let v = sync_json(&c, &["--hot-seconds", "0"], 0);
    assert_eq!(v["buckets"].as_array().map(Vec::len), Some(256));
    assert_eq!(v["buckets"][171]["bucket"], "ab");
    assert_eq!(total(&v, "repaired"), expected, "{}", v["totals"]);
    let v = sync_json(&c, &["--hot-seconds", "0", "--dry-run", "--full"], 0);
    assert_eq!(total(&v, "differing"), 0, "{}", v["totals"]);
    assert_eq!(total(&v, "keys_compared"), 60);
    for (i, k) in keys.iter().enumerate() {
        let want = match i {
            0..30 if i % 2 == 1 => None,
            0..30 => Some((2, b"two".to_vec(), 2)),
            _ => Some((1, b"one".to_vec(), 1)),
        };
        assert_eq!(c.assert_key_same(k), want, "{k}");
    }
}
