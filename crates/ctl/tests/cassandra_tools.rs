//! `beansctl backfill`, `verify` and `replay-errors` end to end: real `beansdb` nodes (three
//! mains, 16 buckets, each bucket on two of them, so no node holds every bucket) and the real
//! Cassandra of `beansdb_cassandra::testing`. Each test uses its own cluster and key prefix;
//! shared tables are never truncated.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use beansdb_cassandra::scylla::value::CqlValue;
use beansdb_cassandra::testing::{self, need_cluster};
use beansdb_cassandra::{now_micros, BdbValue, CassandraStore};
use beansdb_client::Client;
use common::{beansctl, beansctl_path, json_of, show, text, unique_ports, Node};
use serde_json::Value;

const MAINS: usize = 3;
const PASSWORD: &str = "doubandb_test";

/// Three mains; main `i` serves bucket `b` iff `b % 3 != i`.
struct Env {
    tmp: tempfile::TempDir,
    nodes: Vec<Node>,
    /// Path of route.yaml.
    route: String,
    pwfile: PathBuf,
    native: String,
    rt: tokio::runtime::Runtime,
    kv: CassandraStore,
    ark: CassandraStore,
}

impl Env {
    fn start(name: &str) -> Option<Env> {
        let cass = need_cluster(name)?;
        let tmp = tempfile::Builder::new()
            .prefix("beansctl-cstar-")
            .tempdir()
            .expect("tempdir");
        let ports = unique_ports(2 * MAINS);
        let mut route = "numbucket: 16\nmain:\n".to_string();
        for (i, port) in ports.iter().enumerate().take(MAINS) {
            let ids: Vec<String> = (0..16usize)
                .filter(|b| b % MAINS != i)
                .map(|b| format!("\"{b:x}\""))
                .collect();
            route.push_str(&format!(
                "- addr: 127.0.0.1:{port}\n  buckets: [{}]\n",
                ids.join(", ")
            ));
        }
        route.push_str("backup: []\n");
        let mut nodes = Vec::new();
        for i in 0..MAINS {
            let dir = tmp.path().join(format!("n{i}"));
            fs::create_dir_all(dir.join("home")).expect("home dir");
            let global = common::global_yaml(ports[i], ports[MAINS + i], &dir, "", "");
            common::write_conf(&dir, &global, &route);
            nodes.push(Node::start(&dir, ports[i], ports[MAINS + i]));
        }
        let route_path = tmp.path().join("route.yaml");
        fs::write(&route_path, &route).expect("route.yaml");
        let pwfile = tmp.path().join("cstar.pass");
        fs::write(&pwfile, format!("{PASSWORD}\n")).expect("password file");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (kv, ark) = rt.block_on(async {
            (
                testing::store(cass, "kvstore").await,
                testing::store(cass, "kvstore_ark").await,
            )
        });
        Some(Env {
            tmp,
            nodes,
            route: route_path.display().to_string(),
            pwfile,
            native: cass.native.clone(),
            rt,
            kv,
            ark,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Main indices holding `key`'s bucket, in route order.
    fn mains_of(&self, key: &str) -> Vec<usize> {
        let b = common::bucket_of(key);
        (0..MAINS).filter(|i| b % MAINS != *i).collect()
    }

    fn client(&self, i: usize) -> Client {
        let addr = self.nodes[i].addr();
        self.rt
            .block_on(Client::connect(&addr))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    /// Writes `key` on every main of its bucket, as the proxy's NWR write would.
    fn set(&self, key: &str, flag: u32, value: &[u8]) {
        for i in self.mains_of(key) {
            let mut c = self.client(i);
            self.rt
                .block_on(c.set(key, flag, 0, value, false))
                .unwrap_or_else(|e| panic!("set {key}: {e}"));
        }
    }

    fn delete(&self, key: &str) {
        for i in self.mains_of(key) {
            let mut c = self.client(i);
            self.rt
                .block_on(c.delete(key))
                .unwrap_or_else(|e| panic!("delete {key}: {e}"));
        }
    }

    /// `?key` on the first main: (ver, flag, ts).
    fn meta(&self, key: &str) -> (i32, u32, u32) {
        let i = self.mains_of(key)[0];
        let mut c = self.client(i);
        let v = self
            .rt
            .block_on(c.get(format!("?{key}")))
            .expect("meta")
            .unwrap_or_else(|| panic!("no meta for {key}"));
        let t = String::from_utf8_lossy(&v.data).into_owned();
        let f: Vec<&str> = t.split_whitespace().collect();
        (
            f[0].parse().expect("ver"),
            f[2].parse().expect("flag"),
            f[f.len() - 1].parse().expect("ts"),
        )
    }

    fn row(&self, key: &str) -> Option<BdbValue> {
        self.row_in(&self.kv, key)
    }

    /// The value of `key`'s row in kvstore.
    fn body(&self, key: &str) -> Option<Vec<u8>> {
        self.row(key).map(|r| r.body)
    }

    fn row_in(&self, store: &CassandraStore, key: &str) -> Option<BdbValue> {
        self.rt
            .block_on(store.get(key.as_bytes()))
            .unwrap_or_else(|e| panic!("C* get {key}: {e}"))
    }

    fn cset(&self, key: &str, flag: u32, body: &[u8], ts_us: i64) {
        let v = BdbValue {
            rtime_ms: ts_us / 1000,
            flag,
            exptime: 0,
            cas: 0,
            body: body.to_vec(),
        };
        self.rt
            .block_on(self.kv.set_value(key.as_bytes(), &v, ts_us))
            .unwrap_or_else(|e| panic!("C* set {key}: {e}"));
    }

    fn cdelete(&self, key: &str, ts_us: i64) {
        self.rt
            .block_on(self.kv.delete(key.as_bytes(), ts_us))
            .unwrap_or_else(|e| panic!("C* delete {key}: {e}"));
    }

    /// `writetime(value)` of a row, in whatever shape Cassandra returns it.
    fn writetime(&self, key: &str) -> String {
        self.rt.block_on(async {
            let res = self
                .kv
                .session()
                .query_unpaged(
                    "SELECT writetime(value) FROM doubandb.kvstore WHERE key = ?",
                    (key.as_bytes(),),
                )
                .await
                .expect("writetime query");
            let rows = res.into_rows_result().expect("rows");
            let row = rows
                .maybe_first_row::<(Option<CqlValue>,)>()
                .expect("typed row");
            format!("{row:?}")
        })
    }

    /// The Cassandra options every tool run gets: the test role, its password from a file.
    fn cstar_args(&self) -> Vec<String> {
        vec![
            "--cassandra".into(),
            self.native.clone(),
            "--username".into(),
            "doubandb_test".into(),
            "--password-file".into(),
            self.pwfile.display().to_string(),
        ]
    }

    /// beansctl with `args` plus the Cassandra options.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(beansctl_path());
        c.args(args).args(self.cstar_args());
        c
    }

    /// Runs beansctl with `args` plus the Cassandra options; asserts the password is not shown.
    fn run(&self, args: &[&str]) -> Output {
        let o = self.command(args).output().expect("run beansctl");
        assert_no_password(&o);
        o
    }

    /// `backfill` of `prefix` over this cluster with its checkpoint in `cp`, then `extra`.
    fn backfill_args<'a>(
        &'a self,
        prefix: &'a str,
        cp: &'a str,
        extra: &[&'a str],
    ) -> Vec<&'a str> {
        let mut a = vec![
            "backfill",
            "--route",
            &self.route,
            "--prefix",
            prefix,
            "--checkpoint",
            cp,
        ];
        a.extend(extra);
        a
    }

    fn backfill(&self, prefix: &str, cp: &str, extra: &[&str]) -> Output {
        self.run(&self.backfill_args(prefix, cp, extra))
    }

    /// `verify` of `prefix` over this cluster, then `extra`.
    fn verify_args<'a>(&'a self, prefix: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec!["verify", "--route", &self.route, "--prefix", prefix];
        a.extend(extra);
        a
    }

    fn verify(&self, prefix: &str, extra: &[&str]) -> Output {
        self.run(&self.verify_args(prefix, extra))
    }

    /// `replay-errors` of `logs` with this cluster's route, then `extra`.
    fn replay_errors(&self, logs: &[&str], extra: &[&str]) -> Output {
        let mut a = vec!["replay-errors"];
        for l in logs {
            a.extend(["--log", l]);
        }
        a.extend(["--route", &self.route]);
        a.extend(extra);
        self.run(&a)
    }
}

fn assert_no_password(o: &Output) {
    // The role name equals its password; the tools print neither in normal runs.
    for s in [text(&o.stdout), text(&o.stderr)] {
        assert!(!s.contains(PASSWORD), "password shown: {}", show(o));
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn assert_exit(o: &Output, want: i32) {
    assert_eq!(code(o), want, "{}", show(o));
}

/// stdout as one JSON document, after asserting the exit code.
fn json_exit(o: &Output, want: i32) -> Value {
    let v = json_of(o);
    assert_exit(o, want);
    v
}

fn num(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

fn big_value(i: usize) -> Vec<u8> {
    // > 100 KiB and not trivially compressible, so the node stores it as is or compressed.
    (0..150 * 1024)
        .map(|j| ((j * 31 + i * 7) % 251) as u8)
        .collect()
}

/// The value written for key number `i` of a test.
fn value_of(i: usize) -> Vec<u8> {
    if i.is_multiple_of(40) {
        big_value(i)
    } else {
        format!("value-{i}").into_bytes()
    }
}

/// Keys `prefix{i}`, `i` in `0..n`, with flags `i % 7`; every key with `i % 10 == 3` is then
/// deleted. Returns (live, deleted).
fn populate(env: &Env, prefix: &str, n: usize) -> (Vec<(String, usize)>, Vec<String>) {
    let mut live = Vec::new();
    let mut deleted = Vec::new();
    for i in 0..n {
        let k = format!("{prefix}{i}");
        env.set(&k, (i % 7) as u32, &value_of(i));
        if i % 10 == 3 {
            env.delete(&k);
            deleted.push(k);
        } else {
            live.push((k, i));
        }
    }
    (live, deleted)
}

fn proxy_yaml(env: &Env, prefix: &str) -> PathBuf {
    let path = env.path("proxy.yaml");
    let yaml = format!(
        "proxy:\n  port: 7905\ncassandra:\n  enable: true\n  hosts: [\"{native}\"]\n  \
         default_key_space: doubandb\n  default_table: kvstore\n  timeout_ms: 10000\n  \
         write_timeout_ms: 10000\n  num_conns: 2\n  consistency: one\n  \
         username: doubandb_test\n  password_file: {pw:?}\n  default_storage: br1w1cr0w0\n  \
         prefix_rw_dispatcher_cfg:\n    enable: true\n    static:\n      \
         br1w1cr0w1: [\"{prefix}\"]\n      br1w1cr0w0: [\"{prefix}skip/\"]\n      \
         br0w1cr1w1: [\"{prefix}ark/\"]\n  prefix_table_dispatcher_cfg:\n    enable: true\n    \
         static:\n      kvstore_ark: [\"{prefix}ark/\"]\n",
        native = env.native,
        pw = env.pwfile.display().to_string(),
    );
    fs::write(&path, yaml).expect("proxy.yaml");
    path
}

#[test]
fn backfill_copies_prefix_then_verify_is_clean() {
    let Some(env) = Env::start("backfill_copies_prefix_then_verify_is_clean") else {
        return;
    };
    let prefix = testing::prefix("bf");
    let (live, deleted) = populate(&env, &prefix, 300);
    // Outside the prefix: never written to C*.
    let outside = testing::prefix("bfout");
    for i in 0..20 {
        env.set(&format!("{outside}{i}"), 0, b"outside");
    }
    let cp = env.path("cp").display().to_string();
    let o = env.backfill(
        &prefix,
        &cp,
        &["--json", "--concurrency", "8", "--rate", "0"],
    );
    let s = json_exit(&o, 0);
    assert_eq!(num(&s, "matched"), 300, "{s}");
    assert_eq!(num(&s, "written"), live.len() as u64, "{s}");
    assert_eq!(num(&s, "deleted"), deleted.len() as u64, "{s}");
    assert_eq!(num(&s, "errors"), 0, "{s}");
    assert_eq!(num(&s, "buckets_done"), 16, "{s}");
    assert_eq!(
        num(&s, "scanned"),
        num(&s, "matched") + num(&s, "unmatched") + num(&s, "vanished"),
        "{s}"
    );
    assert_eq!(
        num(&s, "matched"),
        num(&s, "written")
            + num(&s, "deleted")
            + num(&s, "skipped_status")
            + num(&s, "invalid_key")
            + num(&s, "errors"),
        "{s}"
    );
    assert_eq!(num(&s, "unmatched"), 20, "{s}");

    for (k, i) in &live {
        let row = env.row(k).unwrap_or_else(|| panic!("no row for {k}"));
        let (ver, flag, ts) = env.meta(k);
        assert!(ver > 0);
        assert_eq!(row.body, value_of(*i), "{k}");
        assert_eq!(row.flag, flag, "{k}");
        assert_eq!(row.flag, (*i % 7) as u32, "{k}");
        assert_eq!(row.rtime_ms, i64::from(ts) * 1000, "{k}");
        assert_eq!((row.exptime, row.cas), (0, 0), "{k}");
    }
    for k in &deleted {
        assert_eq!(env.row(k), None, "{k} is deleted in beansdb");
    }
    for i in 0..20 {
        assert_eq!(env.row(&format!("{outside}{i}")), None);
    }

    let v = json_exit(&env.verify(&prefix, &["--json"]), 0);
    assert_eq!(num(&v, "checked"), 300, "{v}");
    assert_eq!(num(&v, "equal"), 300, "{v}");
    for f in [
        "value_diff",
        "flag_diff",
        "missing_in_cstar",
        "extra_in_cstar",
        "errors",
    ] {
        assert_eq!(num(&v, f), 0, "{f}: {v}");
    }

    // A sample checks about N records and finds nothing either.
    let v = json_exit(&env.verify(&prefix, &["--sample", "50", "--json"]), 0);
    assert!(num(&v, "checked") <= 50, "{v}");

    // A rerun changes nothing: same rows, same write times.
    let probe = &live[1].0;
    let before = (env.row(probe), env.writetime(probe));
    let o = env.backfill(&prefix, &cp, &["--restart"]);
    assert_exit(&o, 0);
    assert!(text(&o.stdout).contains("written="), "{}", show(&o));
    assert_eq!((env.row(probe), env.writetime(probe)), before);
}

#[test]
fn backfill_with_proxy_config_filters_status_and_dispatches_tables() {
    let Some(env) = Env::start("backfill_with_proxy_config") else {
        return;
    };
    let prefix = testing::prefix("bfcfg");
    for i in 0..10 {
        env.set(&format!("{prefix}{i}"), 1, b"main");
        env.set(&format!("{prefix}skip/{i}"), 1, b"brw only");
        env.set(&format!("{prefix}ark/{i}"), 1, b"to the ark");
    }
    let cfg = proxy_yaml(&env, &prefix).display().to_string();
    let cp = env.path("cp").display().to_string();
    // Credentials come from the proxy config this time (no --username/--password-file).
    let with_cfg = ["--proxy-config", &cfg, "--json"];
    let o = beansctl(&env.backfill_args(&prefix, &cp, &with_cfg));
    assert_no_password(&o);
    let s = json_exit(&o, 0);
    assert_eq!(num(&s, "matched"), 30, "{s}");
    assert_eq!(num(&s, "skipped_status"), 10, "{s}");
    assert_eq!(num(&s, "written"), 20, "{s}");
    for i in 0..10 {
        assert_eq!(env.body(&format!("{prefix}{i}")), Some(b"main".to_vec()));
        assert_eq!(env.row(&format!("{prefix}skip/{i}")), None);
        let ark = format!("{prefix}ark/{i}");
        assert_eq!(
            env.row(&ark),
            None,
            "dispatched to kvstore_ark, not kvstore"
        );
        assert_eq!(
            env.row_in(&env.ark, &ark).map(|r| r.body),
            Some(b"to the ark".to_vec())
        );
    }
    let v = json_exit(&beansctl(&env.verify_args(&prefix, &with_cfg)), 0);
    assert_eq!((num(&v, "checked"), num(&v, "equal")), (20, 20), "{v}");
    assert_eq!(num(&v, "skipped_status"), 10, "{v}");
}

/// The checkpoint file name: fnv1a64 of the sorted prefixes joined by NUL.
fn checkpoint_file(dir: &Path, prefixes: &[&str]) -> PathBuf {
    let mut p: Vec<&str> = prefixes.to_vec();
    p.sort();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in p.join("\0").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    dir.join(format!("backfill-{h:016x}.json"))
}

#[test]
fn backfill_checkpoint_resume_and_restart() {
    let Some(env) = Env::start("backfill_checkpoint_resume_and_restart") else {
        return;
    };
    let prefix = testing::prefix("bfcp");
    let keys0 = common::keys_in_bucket(&format!("{prefix}b0-"), 0, 5);
    let keys5 = common::keys_in_bucket(&format!("{prefix}b5-"), 5, 5);
    for k in keys0.iter().chain(&keys5) {
        env.set(k, 0, b"first");
    }
    let cp = env.path("cp");
    let cp_s = cp.display().to_string();
    let o = env.backfill(&prefix, &cp_s, &["--bucket", "0", "--json"]);
    assert_exit(&o, 0);
    let file = checkpoint_file(&cp, &[&prefix]);
    let doc: Value = serde_json::from_str(&fs::read_to_string(&file).expect("checkpoint"))
        .expect("checkpoint JSON");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["numbucket"], 16);
    assert_eq!(doc["buckets"]["0"], "done", "{doc}");
    assert_eq!(doc["prefixes"][0], prefix.as_str());
    assert_eq!(env.row(&keys5[0]), None, "bucket 5 not walked yet");

    // Exists, neither flag: exit 2 with the documented message.
    let o = env.backfill(&prefix, &cp_s, &[]);
    assert_exit(&o, 2);
    assert!(
        text(&o.stderr).contains(&format!(
            "checkpoint {} exists; pass --resume or --restart",
            file.display()
        )),
        "{}",
        show(&o)
    );

    // A key added to the done bucket is not written by --resume, the other buckets are.
    let late = common::keys_in_bucket(&format!("{prefix}late-"), 0, 1).remove(0);
    env.set(&late, 0, b"late");
    let s = json_exit(&env.backfill(&prefix, &cp_s, &["--resume", "--json"]), 0);
    assert_eq!(num(&s, "buckets_done"), 16, "{s}");
    assert_eq!(num(&s, "written"), 5, "{s}");
    assert_eq!(env.row(&late), None, "bucket 0 was done: skipped on resume");
    for k in &keys5 {
        assert_eq!(env.body(k), Some(b"first".to_vec()));
    }

    // A checkpoint for another numbucket is refused.
    let mut other = doc.clone();
    other["numbucket"] = Value::from(256);
    fs::write(&file, other.to_string()).expect("rewrite checkpoint");
    let o = env.backfill(&prefix, &cp_s, &["--resume"]);
    assert_exit(&o, 2);
    assert!(
        text(&o.stderr).contains("was made for numbucket 256"),
        "{}",
        show(&o)
    );

    // --restart redoes everything.
    let s = json_exit(&env.backfill(&prefix, &cp_s, &["--restart", "--json"]), 0);
    assert_eq!(num(&s, "written"), 11, "{s}");
    assert_eq!(env.body(&late), Some(b"late".to_vec()));
}

#[test]
fn live_writes_during_backfill_win() {
    let Some(env) = Env::start("live_writes_during_backfill_win") else {
        return;
    };
    let prefix = testing::prefix("bflive");
    // One bucket, so both records are fetched together before the delayed writes.
    let mut pair = common::keys_in_bucket(&prefix, 7, 2);
    let (k, d) = (pair.remove(0), pair.remove(0));
    env.set(&k, 0, b"A");
    env.set(&d, 0, b"A");
    let cp = env.path("cp").display().to_string();
    let slow = ["--json", "--debug-delay-write-ms", "4000"];
    let child = env
        .command(&env.backfill_args(&prefix, &cp, &slow))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn backfill");
    // Backfill has fetched A by now and sleeps before writing it.
    std::thread::sleep(Duration::from_millis(2000));
    // What the proxy does in brw_cw: beansdb first, then C* with the receive time.
    env.set(&k, 0, b"B");
    env.cset(&k, 0, b"B", now_micros());
    env.delete(&d);
    env.cdelete(&d, now_micros());
    let o = child.wait_with_output().expect("backfill");
    assert_no_password(&o);
    assert_exit(&o, 0);
    // Both old records were fetched before the live writes and written after them.
    assert_eq!(num(&json_of(&o), "written"), 2, "{}", show(&o));
    assert_eq!(env.body(&k), Some(b"B".to_vec()));
    assert_eq!(env.row(&d), None, "the live delete stays");
}

#[test]
fn verify_finds_planted_differences() {
    let Some(env) = Env::start("verify_finds_planted_differences") else {
        return;
    };
    let prefix = testing::prefix("vf");
    for i in 0..8 {
        env.set(&format!("{prefix}{i}"), 1, format!("v{i}").as_bytes());
    }
    let gone = format!("{prefix}gone");
    env.set(&gone, 1, b"soon deleted");
    env.delete(&gone);
    let cp = env.path("cp").display().to_string();
    assert_exit(&env.backfill(&prefix, &cp, &[]), 0);

    let later = now_micros() + 1_000_000;
    let (vd, fd, mi) = (
        format!("{prefix}1"),
        format!("{prefix}2"),
        format!("{prefix}3"),
    );
    env.cset(&vd, 1, b"changed", later);
    env.cset(&fd, 9, b"v2", later);
    env.cdelete(&mi, later);
    env.cset(&gone, 1, b"resurrected", later);

    let v = json_exit(&env.verify(&prefix, &["--json"]), 1);
    assert_eq!(num(&v, "checked"), 9, "{v}");
    assert_eq!(num(&v, "equal"), 5, "{v}");
    for (field, key) in [
        ("value_diff", &vd),
        ("flag_diff", &fd),
        ("missing_in_cstar", &mi),
        ("extra_in_cstar", &gone),
    ] {
        assert_eq!(num(&v, field), 1, "{field}: {v}");
        assert_eq!(v["samples"][field][0], key.as_str(), "{field}: {v}");
    }
    // The human table names them too.
    let o = env.verify(&prefix, &[]);
    assert_exit(&o, 1);
    let out = text(&o.stdout);
    assert!(out.contains("value_diff") && out.contains(&vd), "{out}");
}

fn gzip(path: &Path, content: &str) {
    let f = fs::File::create(path).expect("gz file");
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    gz.write_all(content.as_bytes()).expect("gz write");
    gz.finish().expect("gz finish");
}

#[test]
fn replay_errors_makes_cassandra_equal_to_beansdb() {
    let Some(env) = Env::start("replay_errors_makes_cassandra_equal_to_beansdb") else {
        return;
    };
    let prefix = testing::prefix("rp");
    let (stale, missing, extra, never) = (
        format!("{prefix}stale"),
        format!("{prefix}missing"),
        format!("{prefix}extra"),
        format!("{prefix}never"),
    );
    let old = now_micros() - 10_000_000;
    env.cset(&stale, 0, b"old", old);
    env.set(&stale, 3, b"new");
    env.set(&missing, 4, b"only in beansdb");
    env.set(&extra, 0, b"x");
    env.delete(&extra);
    env.cset(&extra, 0, b"x", old);
    env.cset(&never, 0, b"never in beansdb", old);

    let ts = now_micros();
    let ours = |op: &str, key: &str, ts_us: i64| {
        format!(
            "{{\"time\":\"2026-03-01T10:20:30.123456+08:00\",\"level\":\"error\",\"op\":\"{op}\",\
             \"key\":\"{key}\",\"status\":\"br1w1cr0w1\",\"ts_us\":{ts_us},\
             \"error\":\"timeout: no response in 1000ms\",\"proxy\":\"127.0.0.1:7905\"}}\n"
        )
    };
    let gobeansproxy_time = chrono::DateTime::from_timestamp_micros(ts)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let log = env.path("dual_write_err.log");
    fs::write(
        &log,
        ours("set", &stale, ts - 5_000_000)
            + &ours("set", &stale, ts)
            + "this is not JSON\n"
            + &format!(
                "{{\"key\":\"{missing}\",\"level\":\"error\",\"msg\":\"gocql: no response\",\
                 \"op\":\"set\",\"time\":\"{gobeansproxy_time}\"}}\n"
            )
            + &ours("del", &extra, ts),
    )
    .expect("log");
    let gz = env.path("dual_write_err-2026-03-01T02-20-30.123.log.gz");
    gzip(&gz, &ours("del", &never, ts));
    let (log_s, gz_s) = (log.display().to_string(), gz.display().to_string());
    let logs = [log_s.as_str(), gz_s.as_str()];
    let done = env.path("done.jsonl").display().to_string();

    // Dry run: plans four statements, writes nothing.
    let o = env.replay_errors(&logs, &["--dry-run", "--done-file", &done, "--json"]);
    let s = json_exit(&o, 0);
    assert_eq!(s["planned"].as_array().map(Vec::len), Some(4), "{s}");
    assert_eq!(env.body(&stale), Some(b"old".to_vec()));
    assert!(!Path::new(&done).exists(), "dry run writes no done file");

    let o = env.replay_errors(&logs, &["--done-file", &done, "--json"]);
    let s = json_exit(&o, 0);
    assert_eq!(
        (num(&s, "lines"), num(&s, "bad_lines"), num(&s, "keys")),
        (6, 1, 4),
        "{s}"
    );
    assert_eq!((num(&s, "written"), num(&s, "deleted")), (2, 2), "{s}");
    assert_eq!(num(&s, "errors"), 0, "{s}");

    let row = env.row(&stale).expect("stale row replaced");
    assert_eq!((row.body.as_slice(), row.flag), (&b"new"[..], 3));
    assert_eq!(row.rtime_ms, i64::from(env.meta(&stale).2) * 1000);
    assert_eq!(env.body(&missing), Some(b"only in beansdb".to_vec()));
    assert_eq!(env.row(&extra), None);
    assert_eq!(env.row(&never), None);

    let v = json_exit(&env.verify(&prefix, &["--json"]), 0);
    assert_eq!((num(&v, "checked"), num(&v, "equal")), (3, 3), "{v}");

    // Again without the done file: same statements, so same rows and write times.
    let rows_and_times = || -> Vec<_> {
        [&stale, &missing]
            .iter()
            .map(|k| (env.row(k), env.writetime(k)))
            .collect()
    };
    let before = rows_and_times();
    assert_exit(&env.replay_errors(&logs, &["--json"]), 0);
    assert_eq!(before, rows_and_times());
    assert_eq!(env.row(&extra), None);

    // With the done file every key is skipped.
    let o = env.replay_errors(&logs, &["--done-file", &done, "--json"]);
    let s = json_exit(&o, 0);
    assert_eq!(num(&s, "skipped_done"), 4, "{s}");
    assert_eq!(num(&s, "written") + num(&s, "deleted"), 0, "{s}");

    // --since after every entry: nothing to do.
    let o = env.replay_errors(&[&log_s], &["--since", "2999-01-01T00:00:00Z", "--json"]);
    let s = json_exit(&o, 0);
    assert_eq!(num(&s, "keys"), 0, "{s}");
}

#[test]
fn usage_errors_unreachable_cassandra_and_secrets() {
    let Some(env) = Env::start("usage_errors_unreachable_cassandra_and_secrets") else {
        return;
    };
    let route = env.route.as_str();
    let cp = env.path("cp").display().to_string();
    let bad_pw = env.path("bad.pass");
    let secret = "s3cret-not-the-password-4711";
    fs::write(&bad_pw, secret).expect("bad password file");
    let bad_pw_s = bad_pw.display().to_string();
    let log = env.path("empty.log");
    fs::write(&log, "").expect("log");
    let log_s = log.display().to_string();

    fn cat<'a>(base: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
        [base, more].concat()
    }
    // Most cases are one of these plus the options they are about.
    let bf = ["backfill", "--route", route, "--prefix", "/x/"];
    let vf = ["verify", "--route", route, "--prefix", "/x/"];
    let rp = ["replay-errors", "--log", &log_s, "--route", route];
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec![
                "backfill",
                "--route",
                route,
                "--cassandra",
                "127.0.0.1:9042",
            ],
            2,
            "--prefix",
        ),
        (
            cat(
                &bf,
                &["--resume", "--restart", "--cassandra", "127.0.0.1:9042"],
            ),
            2,
            "cannot be used with",
        ),
        (bf.to_vec(), 2, "--cassandra"),
        (
            vec![
                "backfill",
                "--route",
                route,
                "--prefix",
                "",
                "--cassandra",
                "h:1",
            ],
            2,
            "empty prefix",
        ),
        (
            cat(&vf, &["--sample", "0", "--cassandra", "h:1"]),
            2,
            "--sample",
        ),
        (
            vec![
                "backfill",
                "--route",
                "/nonexistent/route.yaml",
                "--prefix",
                "/x/",
                "--cassandra",
                "h:1",
            ],
            2,
            "route",
        ),
        (
            cat(&bf, &["--cassandra", "h:1", "--username", "u"]),
            2,
            "--password-file",
        ),
        (
            vec!["replay-errors", "--log", &log_s, "--cassandra", "h:1"],
            2,
            "--route",
        ),
        (
            vec![
                "replay-errors",
                "--log",
                "/nonexistent.log",
                "--route",
                route,
                "--cassandra",
                "h:1",
            ],
            2,
            "cannot open log",
        ),
        (
            cat(&rp, &["--cassandra", "h:1", "--since", "soon"]),
            2,
            "--since",
        ),
        (
            cat(&bf, &["--checkpoint", &cp, "--cassandra", "127.0.0.1:1"]),
            3,
            "cannot connect",
        ),
        (
            cat(&vf, &["--cassandra", "127.0.0.1:1"]),
            3,
            "cannot connect",
        ),
        (
            cat(&rp, &["--cassandra", "127.0.0.1:1"]),
            3,
            "cannot connect",
        ),
        (
            cat(
                &vf,
                &[
                    "--cassandra",
                    &env.native,
                    "--username",
                    "doubandb_test",
                    "--password-file",
                    &bad_pw_s,
                ],
            ),
            2,
            "error:",
        ),
    ];
    for (args, want, msg) in cases {
        let o = beansctl(&args);
        assert_eq!(code(&o), want, "{args:?}: {}", show(&o));
        let err = text(&o.stderr);
        assert!(err.contains("error:"), "{args:?}: {}", show(&o));
        assert!(
            err.contains(msg),
            "{args:?} should mention {msg:?}: {}",
            show(&o)
        );
        assert!(!err.contains("panicked"), "{}", show(&o));
        for s in [text(&o.stdout), err] {
            assert!(!s.contains(secret), "password shown: {}", show(&o));
        }
    }
}

/// A stand-in for the proxy's web port: `/route/` and `/cstar-cfg?config=…`.
fn mock_proxy_web(route: String, rw: String, tables: String) -> common::Acceptor {
    common::Acceptor::start(move |mut conn| {
        let mut buf = [0u8; 4096];
        let n = std::io::Read::read(&mut conn, &mut buf).unwrap_or(0);
        let req = String::from_utf8_lossy(&buf[..n]).into_owned();
        let target = req
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let body = match target.as_str() {
            "/route/" => route.clone(),
            "/cstar-cfg?config=rwswitcher" => rw.clone(),
            "/cstar-cfg?config=tablefinder" => tables.clone(),
            _ => String::new(),
        };
        let status = if body.is_empty() {
            "404 Not Found"
        } else {
            "200 OK"
        };
        let _ = conn.write_all(
            format!(
                "HTTP/1.0 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    })
}

#[test]
fn replay_errors_with_proxy_maps() {
    let Some(env) = Env::start("replay_errors_with_proxy_maps") else {
        return;
    };
    let prefix = testing::prefix("rpproxy");
    let (dual, brw, ark) = (
        format!("{prefix}a"),
        format!("{prefix}brw/b"),
        format!("{prefix}ark/c"),
    );
    for k in [&dual, &brw, &ark] {
        env.set(k, 0, k.as_bytes());
    }
    let web = mock_proxy_web(
        fs::read_to_string(&env.route).expect("route"),
        format!(
            "{{\"cfg\":{{\"{prefix}\":\"br1w1cr0w1\",\"{prefix}brw/\":\"br1w1cr0w0\",\
             \"{prefix}ark/\":\"br0w1cr1w1\"}},\"default\":\"br1w1cr0w0\",\
             \"message\":\"success\",\"error\":\"\"}}"
        ),
        format!(
            "{{\"cfg\":{{\"{prefix}ark/\":\"kvstore_ark\"}},\"default\":\"kvstore\",\
             \"message\":\"success\",\"error\":\"\"}}"
        ),
    );
    let ts = now_micros();
    let log = env.path("err.log");
    let mut lines = String::new();
    for k in [&dual, &brw, &ark] {
        lines.push_str(&format!(
            "{{\"time\":\"2026-03-01T10:20:30Z\",\"level\":\"error\",\"op\":\"set\",\"key\":\"{k}\",\
             \"status\":\"br1w1cr0w1\",\"ts_us\":{ts},\"error\":\"x\",\"proxy\":\"p\"}}\n"
        ));
    }
    fs::write(&log, lines).expect("log");
    let proxy = web.addr.to_string();
    let log_s = log.display().to_string();
    let o = env.run(&[
        "replay-errors",
        "--log",
        &log_s,
        "--proxy",
        &proxy,
        "--json",
    ]);
    let s = json_exit(&o, 0);
    assert_eq!(
        (num(&s, "written"), num(&s, "skipped_status")),
        (2, 1),
        "{s}"
    );
    assert_eq!(env.body(&dual), Some(dual.as_bytes().to_vec()));
    assert_eq!(env.row(&brw), None);
    assert_eq!(env.row(&ark), None, "ark keys go to kvstore_ark");
    assert_eq!(
        env.row_in(&env.ark, &ark).map(|r| r.body),
        Some(ark.as_bytes().to_vec())
    );
}
