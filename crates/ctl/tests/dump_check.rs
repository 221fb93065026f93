//! `beansctl dump` and `beansctl check` end to end (tools.md §3, §10 items 16–20): on a home
//! written by the real node, on damaged copies of it, and on the gobeansdb-written fixture.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::SystemTime;

use beansdb_client::Client;
use common::{beansctl, bucket_of, keys_in_bucket, rt, show, text};
use serde_json::Value;

/// A node on a caller-owned directory, stopped cleanly with SIGTERM (hints and the htree
/// are dumped at clean shutdown, which the checks rely on).
fn start_node(dir: &Path) -> common::Node {
    let (port, webport) = common::two_free_ports();
    fs::create_dir_all(dir.join("home")).expect("home dir");
    common::write_conf(
        dir,
        &common::global_yaml(port, webport, dir, "  accesslog: \"\"\n", ""),
        &common::route_yaml(
            port,
            &format!("[{}]", common::bucket_ids(16)),
            "backup: []\n",
        ),
    );
    common::Node::start(dir, port, webport)
}

/// SIGTERM and wait for a clean exit.
fn stop_node(node: &mut common::Node) {
    let st = node
        .stop()
        .unwrap_or_else(|| panic!("node did not stop within 15 s of SIGTERM"));
    assert!(st.success(), "node exited with {st}");
}

fn compressible_text(len: usize) -> Vec<u8> {
    let words = [
        "beansdb ", "record ", "chunk ", "hint ", "value ", "the ", "quick ",
    ];
    let mut out = Vec::with_capacity(len + 8);
    let mut i = 0usize;
    while out.len() < len {
        out.extend_from_slice(words[(i * 7 + i / 3) % words.len()].as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

struct Written {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    /// Three keys in one bucket, written in this order.
    trio: Vec<String>,
    doc: Vec<u8>,
}

/// A home written by the real node and cleanly stopped: small values, a 10 KiB compressible
/// value (`doc`, stored QuickLZ-compressed), a tombstone (`gone`) and three keys in one bucket.
fn written_home() -> Written {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut node = start_node(tmp.path());
    let doc = compressible_text(10240);
    let trio = keys_in_bucket("trio:", bucket_of("doc"), 3);
    rt().block_on(async {
        let mut c = Client::connect(&node.addr()).await.expect("connect");
        c.set("hello", 0, 0, "world", false).await.expect("set");
        c.set("doc", 0, 0, &doc, false).await.expect("set doc");
        for (i, k) in trio.iter().enumerate() {
            c.set(k, 0, 0, vec![b'a' + i as u8; 300], false)
                .await
                .expect("set trio");
        }
        for i in 0..20 {
            c.set(format!("k{i}"), 0, 0, format!("value {i}"), false)
                .await
                .expect("set");
        }
        c.set("gone", 0, 0, "soon deleted", false)
            .await
            .expect("set");
        assert!(c.delete("gone").await.expect("delete"));
    });
    stop_node(&mut node);
    Written {
        home: tmp.path().join("home"),
        _tmp: tmp,
        trio,
        doc,
    }
}

fn json_lines(o: &Output) -> Vec<Value> {
    text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn check_json(path: &Path, extra: &[&str]) -> (Output, Value) {
    let p = path.to_str().expect("utf-8 path");
    let mut args = vec!["--json", "check", p];
    args.extend_from_slice(extra);
    let o = beansctl(&args);
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("check --json is not one document ({e}): {}", show(&o)));
    (o, v)
}

fn problems(v: &Value) -> Vec<Value> {
    v["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .flat_map(|b| b["problems"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn of_kind<'a>(ps: &'a [Value], kind: &str) -> Vec<&'a Value> {
    ps.iter().filter(|p| p["kind"] == kind).collect()
}

/// sha-free fingerprint of every file: bytes and mtime.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let m = fs::metadata(&p).expect("metadata");
                out.push((
                    p.clone(),
                    fs::read(&p).expect("read"),
                    m.modified().expect("mtime"),
                ));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let p = e.path();
        let dst = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &dst);
        } else {
            fs::copy(&p, &dst).expect("copy");
            // Keep the mtime so copied files are not taken for a live node's active files.
            let mtime = fs::metadata(&p).and_then(|m| m.modified()).expect("mtime");
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&dst)
                .expect("open copy");
            f.set_modified(mtime).expect("set mtime");
        }
    }
}

#[test]
fn node_home_dump_and_check() {
    let w = written_home();
    let home = w.home.to_str().expect("utf-8").to_string();

    // A clean home: no errors, exit 0, and the text summary says OK.
    let before = snapshot(&w.home);
    let o = beansctl(&["check", &home]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = text(&o.stdout);
    assert!(out.contains("0 errors, 0 warnings → OK"), "{out}");
    assert!(out.contains("buckets"), "{out}");
    let (o, v) = check_json(&w.home, &["--htree-height", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["numbucket"], 16);
    assert_eq!(v["summary"]["errors"], 0, "{v}");
    assert_eq!(v["summary"]["warnings"], 0, "{v}");
    assert!(v["summary"]["htree_files"].as_u64().unwrap_or(0) > 0, "{v}");
    // Read-only: bytes and mtimes unchanged (tools.md §10 item 20).
    assert!(before == snapshot(&w.home), "check modified the home");

    // dump data: the compressed 10 KiB value shows qlz and dumps as its original bytes.
    let b = format!("{:x}", bucket_of("doc"));
    let data = w.home.join(&b).join("000.data");
    let data_s = data.to_str().expect("utf-8").to_string();
    let o = beansctl(&["dump", "data", &data_s]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = text(&o.stdout);
    assert!(out.starts_with("# 000.data size="), "{out}");
    let doc_line = out
        .lines()
        .find(|l| l.ends_with("key=doc"))
        .unwrap_or_else(|| panic!("no doc line in {out}"));
    assert!(doc_line.contains(" ok "), "{doc_line}");
    assert!(doc_line.contains("flag=0x00010000[qlz]"), "{doc_line}");
    assert!(doc_line.contains("len=10240"), "{doc_line}");
    assert!(
        doc_line.contains("khash=") && doc_line.contains("vhash="),
        "{doc_line}"
    );
    let o = beansctl(&[
        "--json",
        "dump",
        "data",
        &data_s,
        "--key",
        "doc",
        "--value",
        "base64",
        "--value-bytes",
        "20000",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 1, "{}", show(&o));
    let d = &lines[0];
    assert_eq!(d["status"], "ok");
    assert_eq!(d["compressed"], true);
    assert_eq!(d["len"], 10240);
    assert_eq!(d["flags"], serde_json::json!(["qlz"]));
    assert!(d["vsz"].as_u64().expect("vsz") < 10240, "{d}");
    assert_eq!(
        d["vhash"].as_u64(),
        Some(u64::from(beansdb_hash::vhash(&w.doc)))
    );
    use base64::Engine as _;
    let value = base64::engine::general_purpose::STANDARD
        .decode(d["value_b64"].as_str().expect("value_b64"))
        .expect("base64");
    assert_eq!(value, w.doc);

    // The tombstone dumps as one.
    let gone = w
        .home
        .join(format!("{:x}", bucket_of("gone")))
        .join("000.data");
    let o = beansctl(&[
        "dump",
        "data",
        gone.to_str().expect("utf-8"),
        "--key",
        "gone",
    ]);
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("key=gone")).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[1].contains("ver=-2") && lines[1].ends_with("tombstone"),
        "{out}"
    );
    assert!(
        lines[1].contains("vsz=0") && lines[1].contains("vhash=0 "),
        "{out}"
    );

    // dump key: every record of the key, oldest first.
    let o = beansctl(&["--json", "dump", "key", &home, "gone"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let recs = json_lines(&o);
    let vers: Vec<i64> = recs
        .iter()
        .map(|r| r["ver"].as_i64().expect("ver"))
        .collect();
    assert_eq!(vers, vec![1, -2]);

    // dump hint lists the items.
    let hint = w.home.join(&b).join("000.000.idx.s");
    let o = beansctl(&["dump", "hint", hint.to_str().expect("utf-8"), "--index"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = text(&o.stdout);
    assert!(out.lines().any(|l| l.ends_with(" doc")), "{out}");

    // Flip one value byte of the middle record of three: exactly one CORRUPT range equal to
    // that record's padded extent, the next record still dumps ok, exit 1.
    let o = beansctl(&["--json", "dump", "data", &data_s]);
    let recs = json_lines(&o);
    let find = |k: &str| {
        recs.iter()
            .find(|r| r["key"] == k)
            .unwrap_or_else(|| panic!("{k} not in dump"))
            .clone()
    };
    let mid = find(&w.trio[1]);
    let off = mid["offset"].as_u64().expect("offset");
    let size = mid["disk_size"].as_u64().expect("disk_size");
    let mut bytes = fs::read(&data).expect("read data");
    let at = off as usize + 24 + w.trio[1].len() + 10;
    bytes[at] ^= 0x55;
    fs::write(&data, &bytes).expect("write data");
    let (o, v) = check_json(&w.home, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(v["exit_code"], 1);
    let ps = problems(&v);
    let corrupt = of_kind(&ps, "CORRUPT");
    assert_eq!(corrupt.len(), 1, "{ps:?}");
    assert_eq!(corrupt[0]["start"].as_u64(), Some(off));
    assert_eq!(corrupt[0]["end"].as_u64(), Some(off + size));
    assert_eq!(corrupt[0]["severity"], "error");
    assert!(
        corrupt[0]["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("bad crc")),
        "{ps:?}"
    );
    let o = beansctl(&["check", &home]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    let want = format!(
        "CORRUPT {b}/000.data [{:#010x},{:#010x}) {size} B: bad crc",
        off,
        off + size
    );
    assert!(out.contains(&want), "want {want:?} in\n{out}");
    assert!(out.trim_end().ends_with("→ PROBLEMS"), "{out}");
    let o = beansctl(&["dump", "data", &data_s]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = text(&o.stdout);
    assert!(out.contains(&format!("{off:#010x} BAD bad crc")), "{out}");
    assert!(out.contains(&format!("resync found next record at {:#010x}", off + size)));
    let third = out
        .lines()
        .find(|l| l.ends_with(&format!("key={}", w.trio[2])))
        .unwrap_or_else(|| panic!("third record missing: {out}"));
    assert!(third.contains(" ok "), "{third}");
    bytes[at] ^= 0x55;
    fs::write(&data, &bytes).expect("restore data");

    // Truncating to a non-multiple of 256 → TORN_TAIL to EOF.
    let tail_bucket = w.home.join(format!("{:x}", bucket_of("hello")));
    let tail_file = tail_bucket.join("000.data");
    let len = fs::metadata(&tail_file).expect("meta").len();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&tail_file)
        .expect("open");
    f.set_len(len - 100).expect("truncate");
    drop(f);
    let (o, v) = check_json(&tail_bucket, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let ps = problems(&v);
    let torn = of_kind(&ps, "TORN_TAIL");
    assert_eq!(torn.len(), 1, "{ps:?}");
    assert_eq!(torn[0]["end"].as_u64(), Some(len - 100));
    assert!(of_kind(&ps, "CORRUPT").is_empty(), "{ps:?}");
}

#[test]
fn hint_problems_and_missing_hints() {
    let w = written_home();
    let b = w.home.join(format!("{:x}", bucket_of("doc")));
    let hint = b.join("000.000.idx.s");
    let orig = fs::read(&hint).expect("read hint");

    // Lower the version of the first item (offset 16: khash 8, chunk 4, offset 4, ver 4); a
    // higher one with the same vhash would read as a same-value version raise.
    let mut bytes = orig.clone();
    let ver = i32::from_le_bytes([bytes[32], bytes[33], bytes[34], bytes[35]]);
    bytes[32..36].copy_from_slice(&(ver - 1).to_le_bytes());
    fs::write(&hint, &bytes).expect("write hint");
    let (o, v) = check_json(&b, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let ps = problems(&v);
    let m = of_kind(&ps, "HINT_MISMATCH");
    assert_eq!(m.len(), 1, "{ps:?}");
    assert!(
        m[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("ver {} in hint", ver - 1))),
        "{ps:?}"
    );

    // A hint whose key count disagrees with its items is a bad file.
    let mut bytes = orig.clone();
    bytes[8] = bytes[8].wrapping_add(1);
    fs::write(&hint, &bytes).expect("write hint");
    let (o, v) = check_json(&b, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(of_kind(&problems(&v), "HINT_BAD_FILE").len(), 1, "{v}");

    // Without any hint files only NO_HINT info remains: exit 0.
    for e in fs::read_dir(&b).expect("read_dir") {
        let p = e.expect("entry").path();
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if name.contains(".idx.") {
            fs::remove_file(&p).expect("rm");
        }
    }
    let (o, v) = check_json(&b, &["--htree-height", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let ps = problems(&v);
    assert!(!ps.is_empty());
    assert!(
        ps.iter()
            .all(|p| p["kind"] == "NO_HINT" && p["severity"] == "info"),
        "{ps:?}"
    );
}

fn fixture_home() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/gobeansdb-2.1-home/home");
    assert!(
        p.is_dir(),
        "gobeansdb fixture missing at {} (it ships in shared/fixtures)",
        p.display()
    );
    p
}

#[test]
fn gobeansdb_fixture_is_clean() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("home");
    copy_dir(&fixture_home(), &home);
    let (o, v) = check_json(&home, &["--htree-height", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(v["summary"]["errors"], 0, "{v}");
    assert_eq!(v["summary"]["warnings"], 0, "{v}");
    assert_eq!(v["numbucket"], 16);
    assert_eq!(v["buckets"].as_array().map(Vec::len), Some(16));
    let o = beansctl(&["check", home.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(text(&o.stdout).contains("→ OK"));

    // Golden text of a gobeansdb-written chunk (values cross-checked with expected.json).
    let o = beansctl(&[
        "dump",
        "data",
        home.join("3/001.data").to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(text(&o.stdout), GOLDEN_3_001_DATA);
    let o = beansctl(&[
        "dump",
        "hint",
        home.join("3/001.000.idx.s").to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(text(&o.stdout), GOLDEN_3_001_HINT);
    let o = beansctl(&[
        "--json",
        "dump",
        "data",
        home.join("3/001.data").to_str().expect("utf-8"),
        "--limit",
        "1",
    ]);
    let first: Value = serde_json::from_slice(&o.stdout).expect("json line");
    assert_eq!(
        first,
        serde_json::from_str::<Value>(GOLDEN_3_001_JSON).expect("golden")
    );

    // Every key's last record agrees with what gobeansdb served (expected.json `??key`).
    let expected: Value = serde_json::from_slice(
        &fs::read(fixture_home().join("../expected.json")).expect("expected.json"),
    )
    .expect("expected.json is JSON");
    let mut last: std::collections::HashMap<String, Value> = Default::default();
    for b in 0..16 {
        let dir = home.join(format!("{b:x}"));
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .expect("bucket dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "data"))
            .collect();
        files.sort();
        for f in files {
            let chunk: u64 = f
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
                .expect("chunk");
            let o = beansctl(&["--json", "dump", "data", f.to_str().expect("utf-8")]);
            assert_eq!(o.status.code(), Some(0), "{}", show(&o));
            for mut r in json_lines(&o) {
                r["chunk"] = chunk.into();
                let k = r["key"]
                    .as_str()
                    .expect("utf-8 keys in the fixture")
                    .to_string();
                last.insert(k, r);
            }
        }
    }
    let keys = expected["keys"].as_object().expect("keys");
    assert!(keys.len() > 500);
    for (k, e) in keys {
        let r = last
            .get(k)
            .unwrap_or_else(|| panic!("{k} not found by dump"));
        let live = e["live"].as_bool().expect("live");
        assert_eq!(r["ver"].as_i64().expect("ver") > 0, live, "{k}: {r}");
        if live {
            assert_eq!(r["len"], e["len"], "{k}: {r}");
            assert_eq!(r["flag"].as_i64().map(|f| f & !0x10000), e["flag"].as_i64());
        }
        // `??key` has no answer for a key of 250 bytes (`??` makes it too long).
        let Some(meta) = e["meta"].as_str() else {
            continue;
        };
        let meta: Vec<i64> = meta
            .split(' ')
            .map(|x| x.parse().expect("number"))
            .collect();
        assert_eq!(r["vhash"].as_i64(), Some(meta[1]), "{k}: {r}");
        assert_eq!(
            r["flag"].as_i64().map(|f| f & !0x10000),
            Some(meta[2]),
            "{k}: {r}"
        );
        assert_eq!(r["len"].as_i64(), Some(meta[3]), "{k}: {r}");
        assert_eq!(r["ts"].as_i64(), Some(meta[4]), "{k}: {r}");
        assert_eq!(r["chunk"].as_i64(), Some(meta[5]), "{k}: {r}");
        assert_eq!(r["offset"].as_i64(), Some(meta[6]), "{k}: {r}");
    }

    // The collision pair shares a khash; dump key finds each key's own record.
    for key in [
        "processed_log_backup_text_20140912102821_1020_13301733",
        "/subject/10460967/props",
    ] {
        let o = beansctl(&["--json", "dump", "key", home.to_str().expect("utf-8"), key]);
        assert_eq!(o.status.code(), Some(0), "{}", show(&o));
        let recs = json_lines(&o);
        assert!(!recs.is_empty(), "{key}: {}", show(&o));
        for r in &recs {
            assert_eq!(r["key"], key);
            assert_eq!(r["khash"], "c80f795945b78f6b");
        }
    }
    // A server-compressed text value decodes to its logged length.
    let o = beansctl(&[
        "--json",
        "dump",
        "key",
        home.to_str().expect("utf-8"),
        "/text/1/中文",
    ]);
    let recs = json_lines(&o);
    assert_eq!(recs[0]["len"], 7616, "{}", show(&o));
    assert_eq!(recs[0]["vhash"], 14958);
    assert_eq!(recs[0]["compressed"], true);
}

#[test]
fn usage_errors() {
    let o = beansctl(&["check", "/nonexistent/beansdb-home"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let o = beansctl(&["dump", "data", "/nonexistent/000.data"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(text(&o.stderr).starts_with("error: "));
    let o = beansctl(&[
        "dump",
        "htree",
        "x.idx.hash",
        "--numbucket",
        "7",
        "--height",
        "3",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = beansctl(&["check", tmp.path().to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(text(&o.stderr).contains("no data files"), "{}", show(&o));
}

const GOLDEN_3_001_DATA: &str = r"# 001.data size=1792
0x00000000 ok  ts=1796023758 2026-11-30T07:29:18Z ver=2  flag=0x00010000[qlz] ksz=15 vsz=288 len=1162 vhash=27159 khash=3e1a8647ef420ec4 key=/text/79/\xe4\xb8\xad\xe6\x96\x87
0x00000200 ok  ts=1796023758 2026-11-30T07:29:18Z ver=2  flag=0x00010000[qlz] ksz=8 vsz=362 len=1596 vhash=9011  khash=3cd41910f4b0e9df key=small:42
0x00000400 ok  ts=1796023758 2026-11-30T07:29:18Z ver=2  flag=0x00000000      ksz=9 vsz=191 len=191 vhash=11643 khash=3340d2aafe5c9876 key=small:174
0x00000500 ok  ts=1796023758 2026-11-30T07:29:18Z ver=-2 flag=0x00000000      ksz=16 vsz=0   len=0   vhash=0     khash=353263fdd219eb24 key=/text/415/\xe4\xb8\xad\xe6\x96\x87 tombstone
0x00000600 ok  ts=1796023758 2026-11-30T07:29:18Z ver=-2 flag=0x00000000      ksz=7 vsz=0   len=0   vhash=0     khash=3149a967b52d253e key=big:251 tombstone
";

const GOLDEN_3_001_HINT: &str = r"# 001.000.idx.s size=186 index_offset=186 num_keys=5 data_size=1792
# khash chunk offset ver vhash ksz key
3149a967b52d253e 0 0x00000600 -2 0 7 big:251
3340d2aafe5c9876 0 0x00000400 2 11643 9 small:174
353263fdd219eb24 0 0x00000500 -2 0 16 /text/415/\xe4\xb8\xad\xe6\x96\x87
3cd41910f4b0e9df 0 0x00000200 2 9011 8 small:42
3e1a8647ef420ec4 0 0x00000000 2 27159 15 /text/79/\xe4\xb8\xad\xe6\x96\x87
";

const GOLDEN_3_001_JSON: &str = r#"{"compressed":true,"crc":1776111115,"dirty_padding":0,"disk_size":512,"error":null,"file":"001.data","flag":65536,"flags":["qlz"],"key":"/text/79/中文","khash":"3e1a8647ef420ec4","ksz":15,"len":1162,"offset":0,"status":"ok","tombstone":false,"ts":1796023758,"ver":2,"vhash":27159,"vsz":288}"#;
