//! GC scenarios of node.md §6.4 / §10 through the public `Store` API.

mod common;

use std::collections::HashMap;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use beansdb_store::{GcError, GcRequest, GcState, Store, StoreConfig};
use common::*;

/// Records written "a while ago", so `no_gc_days: 0` lets GC take their chunks.
fn old() -> u32 {
    beansdb_store::bucket::now_secs() - 100
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn req(start: Option<u32>, end: Option<u32>) -> GcRequest {
    GcRequest {
        start,
        end,
        no_gc_days: Some(0),
        merge: false,
        run: true,
    }
}

/// Runs a GC to completion and returns its final state.
fn gc(s: &Store, bucket: usize, start: Option<u32>, end: Option<u32>) -> GcState {
    // The range rules look at bytes on disk only.
    drain(s);
    let plan = s.gc(bucket, req(start, end)).expect("gc start");
    assert!(!plan.pretend);
    s.bucket(bucket).expect("bucket").gc_wait();
    let st = s.gc_state(bucket).expect("gc state");
    assert!(!st.running);
    assert_eq!(st.err, None);
    assert!(!s.gc_running());
    st
}

fn set_old(s: &Store, key: &[u8], value: &[u8]) {
    assert!(set_ts(s, key, 0, 0, value, old()));
}

fn nextgc(dir: &std::path::Path) -> String {
    fs::read_to_string(dir.join("nextgc.txt")).expect("nextgc.txt")
}

fn key(i: usize) -> Vec<u8> {
    format!("key{i:03}").into_bytes()
}

/// Values long enough that every record is exactly 256 bytes, whatever the version.
fn val(i: usize, gen: u32) -> Vec<u8> {
    format!("value {i} gen {gen}").into_bytes()
}

// ---------------------------------------------------------------------------------- layouts

#[test]
fn updates_in_chunk0_compact_to_latest() {
    let d = tmp();
    let c = cfg(d.path(), 1);
    const N: usize = 20;
    {
        let s = open(&c);
        for gen in 0..3 {
            for i in 0..N {
                set_old(&s, &key(i), &val(i, gen));
            }
        }
        s.close();
    }
    let s = open(&c);
    set_old(&s, b"z", b"head");
    drain(&s);
    let st = gc(&s, 0, None, None);
    for i in 0..N {
        assert_eq!(pos(&s, &key(i)), (3, 0, 256 * i as u32));
        assert_eq!(get(&s, &key(i)), Some((0, val(i, 2))));
    }
    assert_eq!(pos(&s, b"z"), (1, 1, 0));
    assert_eq!(
        data_files(d.path()),
        vec![
            ("000.data".into(), 256 * N as u64),
            ("001.data".into(), 256)
        ]
    );
    assert_eq!(nextgc(d.path()), "1");
    let n = names(d.path());
    assert!(n.contains(&"000.000.idx.s".to_string()), "{n:?}");
    assert!(!n.iter().any(|x| x.ends_with(".idx.hash")), "{n:?}");
    // LastGC (§8.3).
    assert_eq!((st.begin, st.end, st.src, st.dst), (0, 0, 1, 0));
    assert!(!st.cancel_flag);
    assert_eq!(st.num_before, 3 * N as u64);
    assert_eq!(st.num_released, 2 * N as u64);
    assert_eq!(st.num_released_deleted, 0);
    assert_eq!(st.size_before, 3 * 256 * N as u64);
    assert_eq!(st.size_released, 2 * 256 * N as u64);
    assert_eq!(
        (st.size_deleted, st.size_broken, st.num_not_in_htree),
        (0, 0, 0)
    );
    assert!(st.end_ts.is_some_and(|e| e >= st.begin_ts));
    let j: serde_json::Value =
        serde_json::from_str(&st.to_json(|_| "2024-05-01T10:00:00+08:00".into())).expect("json");
    assert_eq!(j["BeginTS"], "2024-05-01T10:00:00+08:00");
    assert_eq!(j["Err"], serde_json::Value::Null);
    assert_eq!(
        (
            j["Begin"].as_u64(),
            j["End"].as_u64(),
            j["Src"].as_u64(),
            j["Dst"].as_u64()
        ),
        (Some(0), Some(0), Some(1), Some(0))
    );
    assert_eq!(j["Running"], false);
    assert_eq!(j["NumReleased"].as_u64(), Some(2 * N as u64));
    assert_eq!(j["SizeReleased"].as_u64(), Some(2 * 256 * N as u64));
    for f in [
        "CancelFlag",
        "NumBefore",
        "NumReleasedDeleted",
        "SizeBefore",
        "SizeDeleted",
        "SizeBroken",
        "NumNotInHtree",
        "EndTS",
    ] {
        assert!(j.get(f).is_some(), "{f}");
    }
    let running = GcState {
        running: true,
        end_ts: None,
        err: Some("a \"b\"".into()),
        ..st.clone()
    };
    let j: serde_json::Value =
        serde_json::from_str(&running.to_json(|_| "x".into())).expect("json");
    assert_eq!(j["EndTS"], "0001-01-01T00:00:00Z");
    assert_eq!(j["Err"], "a \"b\"");
    let info = s.bucket(0).expect("b").info();
    assert_eq!(info.last_gc, Some(st));
    assert_eq!(info.next_gc, 1);
    assert_eq!(info.hint_state & 4, 0);
    s.close();
    // The hints written by GC are complete: a reopen (with and without the htree dump) agrees.
    for drop_tree in [false, true] {
        if drop_tree {
            for n in names(d.path()) {
                if n.ends_with(".idx.hash") {
                    fs::remove_file(d.path().join(n)).expect("rm");
                }
            }
        }
        let s = open(&c);
        for i in 0..N {
            assert_eq!(pos(&s, &key(i)), (3, 0, 256 * i as u32));
            assert_eq!(get(&s, &key(i)), Some((0, val(i, 2))));
        }
        assert_eq!(s.bucket(0).expect("b").info().next_gc, 1);
        s.close();
    }
}

#[test]
fn nothing_to_drop_keeps_layout() {
    let d = tmp();
    let c = cfg(d.path(), 1);
    {
        let s = open(&c);
        for i in 0..10 {
            set_old(&s, &key(i), &val(i, 0));
        }
        s.close();
    }
    let before = fs::read(d.path().join("000.data")).expect("read");
    let s = open(&c);
    set_old(&s, b"z", b"head");
    let st = gc(&s, 0, None, None);
    assert_eq!(fs::read(d.path().join("000.data")).expect("read"), before);
    assert_eq!(
        (st.num_before, st.num_released, st.size_released),
        (10, 0, 0)
    );
    for i in 0..10 {
        assert_eq!(pos(&s, &key(i)), (1, 0, 256 * i as u32));
    }
}

#[test]
fn deleted_keys_leave_tombstones() {
    let d = tmp();
    let c = cfg(d.path(), 1);
    const N: usize = 8;
    {
        let s = open(&c);
        for i in 0..N {
            set_old(&s, &key(i), &val(i, 0));
        }
        for i in 0..N {
            assert!(delete_ts(&s, &key(i), old()));
        }
        s.close();
    }
    let s = open(&c);
    set_old(&s, b"z", b"head");
    let st = gc(&s, 0, None, None);
    for i in 0..N {
        assert_eq!(pos(&s, &key(i)), (-2, 0, 256 * i as u32));
        assert_eq!(get(&s, &key(i)), None);
    }
    assert_eq!(
        fs::metadata(d.path().join("000.data")).expect("meta").len(),
        256 * N as u64
    );
    assert_eq!(
        (st.num_released, st.num_released_deleted),
        (N as u64, N as u64)
    );
    assert_eq!(st.size_deleted, 256 * N as u64);
}

#[test]
fn range_appended_to_older_chunk() {
    let d = tmp();
    let mut c = cfg(d.path(), 1);
    c.body_max = 4096;
    c.datafile_max = 1 << 20;
    const N: usize = 6;
    {
        let s = open(&c);
        set_old(&s, b"first", b"in chunk 0");
        s.close();
        let s = open(&c);
        for i in 0..N {
            set_old(&s, &key(i), &val(i, 0));
        }
        s.close();
    }
    let s = open(&c);
    set_old(&s, b"z", b"head");
    let st = gc(&s, 0, Some(1), Some(1));
    assert_eq!((st.begin, st.end, st.src, st.dst), (1, 1, 2, 0));
    for i in 0..N {
        assert_eq!(pos(&s, &key(i)), (1, 0, 256 * (i as u32 + 1)));
        assert_eq!(get(&s, &key(i)), Some((0, val(i, 0))));
    }
    assert_eq!(pos(&s, b"first"), (1, 0, 0));
    assert_eq!(
        data_files(d.path()),
        vec![
            ("000.data".into(), 256 * (N as u64 + 1)),
            ("002.data".into(), 256)
        ]
    );
    assert_eq!(nextgc(d.path()), "2");
    let n = names(d.path());
    // Chunk 0 got a second hint split; chunk 1's hints are gone with it.
    assert!(n.contains(&"000.001.idx.s".to_string()), "{n:?}");
    assert!(!n.iter().any(|x| x.starts_with("001.")), "{n:?}");
    s.close();
    let s = open(&c);
    for i in 0..N {
        assert_eq!(pos(&s, &key(i)), (1, 0, 256 * (i as u32 + 1)));
    }
}

#[test]
fn tombstones_kept_when_start_above_zero() {
    let d = tmp();
    let mut c = cfg(d.path(), 1);
    c.body_max = 4096;
    const N: usize = 5;
    {
        let s = open(&c);
        for i in 0..N {
            set_old(&s, &key(i), &val(i, 0));
        }
        s.close();
        let s = open(&c);
        for i in 0..N {
            assert!(delete_ts(&s, &key(i), old()));
        }
        s.close();
    }
    // Without the htree dump the tombstones vanish from the index (rebuilt from hints).
    for n in names(d.path()) {
        if n.ends_with(".idx.hash") {
            fs::remove_file(d.path().join(n)).expect("rm");
        }
    }
    let s = open(&c);
    for i in 0..N {
        assert!(s.meta(&key(i)).expect("meta").is_none());
    }
    set_old(&s, b"z", b"head");
    let st = gc(&s, 0, Some(1), None);
    assert_eq!((st.begin, st.end), (1, 1));
    // Kept (they still shadow the live records of chunk 0) and appended to chunk 0.
    assert_eq!(
        (st.num_before, st.num_released, st.num_not_in_htree),
        (N as u64, 0, N as u64)
    );
    assert_eq!(
        fs::metadata(d.path().join("000.data")).expect("m").len(),
        2 * 256 * N as u64
    );
    assert!(!d.path().join("001.data").exists());
    for i in 0..N {
        assert_eq!(get(&s, &key(i)), None);
    }
    s.close();
    // After a restart without the dump, the keys are still deleted.
    for n in names(d.path()) {
        if n.ends_with(".idx.hash") {
            fs::remove_file(d.path().join(n)).expect("rm");
        }
    }
    let s = open(&c);
    for i in 0..N {
        assert_eq!(get(&s, &key(i)), None, "key{i} resurrected");
    }
    // A GC from 0 then drops both the old values and the tombstones.
    let st = gc(&s, 0, Some(0), None);
    assert_eq!(st.num_released, 2 * N as u64);
    assert!(!d.path().join("000.data").exists());
    for i in 0..N {
        assert_eq!(get(&s, &key(i)), None);
    }
    assert_eq!(get(&s, b"z"), Some((0, b"head".to_vec())));
}

#[test]
fn multiple_destinations_when_dst_fills() {
    let d = tmp();
    let mut c = cfg(d.path(), 1);
    c.datafile_max = 1024;
    c.body_max = 256;
    let k = |i: usize| format!("a{i:02}").into_bytes();
    {
        let s = open(&c);
        for i in 0..12 {
            set_old(&s, &k(i), &val(i, 0));
        }
        s.close();
        let s = open(&c);
        for i in [0, 1, 4, 5, 8, 9] {
            set_old(&s, &k(i), &val(i, 1));
        }
        s.close();
    }
    assert_eq!(data_files(d.path()).len(), 5);
    let s = open(&c);
    set_old(&s, b"z", b"head");
    assert_eq!(pos(&s, b"z"), (1, 5, 0));
    let st = gc(&s, 0, None, None);
    assert_eq!((st.begin, st.end, st.src, st.dst), (0, 4, 5, 2));
    let want: [(usize, u32, u32, u32); 12] = [
        (2, 1, 0, 0),
        (3, 1, 0, 256),
        (6, 1, 0, 512),
        (7, 1, 0, 768),
        (10, 1, 1, 0),
        (11, 1, 1, 256),
        (0, 2, 1, 512),
        (1, 2, 1, 768),
        (4, 2, 2, 0),
        (5, 2, 2, 256),
        (8, 2, 2, 512),
        (9, 2, 2, 768),
    ];
    let check = |s: &Store| {
        for (i, ver, chunk, off) in want {
            assert_eq!(pos(s, &k(i)), (ver as i32, chunk, off), "a{i:02}");
            assert_eq!(get(s, &k(i)), Some((0, val(i, ver - 1))));
        }
    };
    check(&s);
    assert_eq!(
        data_files(d.path()),
        vec![
            ("000.data".into(), 1024),
            ("001.data".into(), 1024),
            ("002.data".into(), 1024),
            ("005.data".into(), 256)
        ]
    );
    assert_eq!(nextgc(d.path()), "5");
    s.close();
    let s = open(&c);
    check(&s);
    s.close();
    for n in names(d.path()) {
        if n.contains(".idx.") {
            fs::remove_file(d.path().join(n)).expect("rm");
        }
    }
    let s = open(&c);
    check(&s);
}

#[test]
fn many_restarts_compact_into_chunk0() {
    let d = tmp();
    let c = cfg(d.path(), 1);
    const N: u32 = 30;
    for i in 0..N {
        let s = open(&c);
        set_old(&s, format!("r{i}").as_bytes(), b"v");
        s.close();
    }
    let s = open(&c);
    set_old(&s, b"z", b"head");
    let st = gc(&s, 0, None, None);
    assert_eq!((st.begin, st.end, st.src, st.dst), (0, N - 1, N, 0));
    for i in 0..N {
        assert_eq!(pos(&s, format!("r{i}").as_bytes()), (1, 0, 256 * i));
    }
    assert_eq!(
        data_files(d.path()),
        vec![
            ("000.data".into(), 256 * N as u64),
            (format!("{N:03}.data"), 256)
        ]
    );
    assert_eq!(nextgc(d.path()), N.to_string());
    s.close();
    let s = open(&c);
    for i in 0..N {
        assert_eq!(pos(&s, format!("r{i}").as_bytes()), (1, 0, 256 * i));
    }
    // A second GC without new data: nothing older to take.
    let e = s.gc(0, req(None, None)).expect_err("nothing to gc");
    assert_eq!(
        e.to_string(),
        format!("no file to gc within 0 days, start = {N}")
    );
}

// ---------------------------------------------------------------------------------- requests

#[test]
fn request_errors_and_dry_run() {
    let d = tmp();
    let mut c = cfg(d.path(), 16);
    c.served = (0..16).map(|b| b != 5).collect();
    let s = open(&c);
    assert_eq!(
        s.gc(16, req(None, None)).expect_err("bad").to_string(),
        "bad bucket id: 16"
    );
    assert_eq!(
        s.gc(5, req(None, None)).expect_err("unserved").to_string(),
        "no data for bucket id: 5"
    );
    assert_eq!(
        s.gc(3, req(Some(2), None))
            .expect_err("beyond head")
            .to_string(),
        "startChunkID > bkt.datas.newHead "
    );
    // Nothing written yet in bucket 3.
    assert_eq!(
        s.gc(3, req(None, None)).expect_err("empty").to_string(),
        "no file to gc within 0 days, start = 0"
    );
    assert_eq!(
        s.gc_cancel(3).expect_err("idle").to_string(),
        "bucket 3 is not gcing"
    );
    assert!(matches!(s.gc_cancel(5), Err(GcError::NoData(5))));
    assert!(s.gc_state(3).is_none());
    assert!(s.gc_query().is_empty());

    let k3 = keys_in_bucket(3, 4, "g");
    for k in &k3 {
        // Written now: with no_gc_days 0 a record of this second does not qualify.
        assert!(set(&s, k, 0, 0, b"v"));
    }
    s.close();
    let s = open(&c);
    assert!(set_ts(
        &s,
        &k3[0],
        0,
        0,
        b"w",
        beansdb_store::bucket::now_secs()
    ));
    drain(&s);
    let e = s.gc(3, req(None, None)).expect_err("too new");
    assert_eq!(e.to_string(), "no file to gc within 0 days, start = 0");
    let mut r = req(None, None);
    r.no_gc_days = None;
    assert!(s.gc(3, r).is_err());
    s.close();

    // Old data: a dry run reports the range and changes nothing.
    let d = tmp();
    let c = cfg(d.path(), 16);
    {
        let s = open(&c);
        for k in &k3 {
            set_old(&s, k, b"v");
        }
        s.close();
    }
    let s = open(&c);
    set_old(&s, &k3[0], b"w");
    drain(&s);
    let before = files(&c.bucket_dir(3));
    let plan = s
        .gc(
            3,
            GcRequest {
                start: None,
                end: None,
                no_gc_days: Some(0),
                merge: true,
                run: false,
            },
        )
        .expect("dry run");
    assert_eq!(
        (plan.bucket, plan.start, plan.end, plan.merge, plan.pretend),
        (3, 0, 0, true, true)
    );
    assert_eq!(files(&c.bucket_dir(3)), before);
    assert!(s.gc_state(3).is_none());
    // `days` protects chunks whose successor is younger than that.
    let mut r = req(None, None);
    r.no_gc_days = Some(1);
    r.run = false;
    assert_eq!(
        s.gc(3, r).expect_err("days").to_string(),
        "no file to gc within 1 days, start = 0"
    );
}

#[test]
fn merge_writes_idx_m() {
    let d = tmp();
    let c = cfg(d.path(), 1);
    {
        let s = open(&c);
        for i in 0..5 {
            set_old(&s, &key(i), &val(i, 0));
        }
        s.close();
        let s = open(&c);
        for i in 0..3 {
            set_old(&s, &key(i), &val(i, 1));
        }
        s.close();
    }
    let s = open(&c);
    set_old(&s, b"z", b"head");
    drain(&s);
    let plan = s
        .gc(
            0,
            GcRequest {
                start: Some(0),
                end: Some(0),
                no_gc_days: Some(0),
                merge: true,
                run: true,
            },
        )
        .expect("gc");
    assert!(plan.merge);
    s.bucket(0).expect("b").gc_wait();
    let n = names(d.path());
    assert!(n.contains(&"001.000.idx.m".to_string()), "{n:?}");
    let m = beansdb_store::hint::read_hint_file(d.path().join("001.000.idx.m")).expect("idx.m");
    assert_eq!(m.items.len(), 5);
    for it in &m.items {
        let i: usize = std::str::from_utf8(&it.key[3..])
            .expect("utf8")
            .parse()
            .expect("num");
        assert_eq!(it.chunk_id, if i < 3 { 1 } else { 0 });
    }
    // Without merge, old .idx.m files are removed at the next GC.
    s.close();
    let s = open(&c);
    set_old(&s, b"z", b"again");
    gc(&s, 0, Some(1), None);
    assert!(!names(d.path()).iter().any(|x| x.ends_with(".idx.m")));
}

#[test]
fn cancel_mid_run_and_query() {
    let d = tmp();
    let mut c = cfg(d.path(), 1);
    c.datafile_max = 64 << 10;
    c.gc_max_mb_per_sec = 1;
    {
        let s = open(&c);
        for i in 0..30 {
            set_old(&s, &key(i), &rand_bytes(i as u64, 16 << 10, None));
        }
        s.close();
    }
    assert_eq!(data_files(d.path()).len(), 10);
    let s = open(&c);
    set_old(&s, b"z", b"head");
    drain(&s);
    let plan = s.gc(0, req(None, None)).expect("gc");
    assert_eq!((plan.start, plan.end), (0, 9));
    assert!(s.gc_running());
    assert_eq!(s.bucket(0).expect("b").info().hint_state & 4, 4);
    assert!(matches!(
        s.gc(0, req(None, None)),
        Err(GcError::AlreadyRunning(0))
    ));
    assert_eq!(
        s.gc(0, req(None, None)).expect_err("running").to_string(),
        "gc on bkt: 0 already running"
    );
    let q = s.gc_query();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].bucket, 0);
    assert!(q[0].root.starts_with('/'));
    assert!(
        q[0].line().starts_with("bkt: 00, start -> "),
        "{}",
        q[0].line()
    );
    assert!(
        q[0].line().contains(", end -> 9, remain -> "),
        "{}",
        q[0].line()
    );
    // The throttle makes the whole run take about a second; cancel once two sources are done.
    let t = Instant::now();
    while s.gc_state(0).expect("state").src < 2 {
        assert!(t.elapsed() < Duration::from_secs(10), "gc made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (src, dst) = s.gc_cancel(0).expect("cancel");
    assert!(src <= 9 && dst <= src, "{src} {dst}");
    s.bucket(0).expect("b").gc_wait();
    let st = s.gc_state(0).expect("state");
    assert!(st.cancel_flag);
    assert!(!st.running);
    assert_eq!(st.err, None);
    assert!(st.src <= st.end, "src {} end {}", st.src, st.end);
    assert!(st.src > 0);
    assert_eq!(nextgc(d.path()), st.src.to_string());
    for i in 0..30 {
        assert_eq!(
            get(&s, &key(i)).expect("hit").1,
            rand_bytes(i as u64, 16 << 10, None)
        );
    }
    // A later GC continues at NextGCChunk.
    let mut c2 = c.clone();
    c2.gc_max_mb_per_sec = 0;
    s.close();
    let s = open(&c2);
    let st2 = gc(&s, 0, None, None);
    assert_eq!(st2.begin, st.src);
    for i in 0..30 {
        assert_eq!(
            get(&s, &key(i)).expect("hit").1,
            rand_bytes(i as u64, 16 << 10, None)
        );
    }
}

#[test]
fn throttle_limits_rate() {
    let d = tmp();
    let mut c = cfg(d.path(), 1);
    c.gc_max_mb_per_sec = 1;
    {
        let s = open(&c);
        for i in 0..8 {
            set_old(&s, &key(i), &rand_bytes(i as u64, 32 << 10, None));
        }
        s.close();
    }
    let s = open(&c);
    set_old(&s, b"z", b"head");
    let t = Instant::now();
    gc(&s, 0, None, None);
    // 8 × 32 KiB read and written again = 512 KiB at 1 MiB/s.
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
}

// ---------------------------------------------------------------------------------- concurrency

/// Sets, gets and deletes keep working during a GC: nothing lost, nothing resurrected.
#[test]
fn concurrent_writes_during_gc() {
    let d = tmp();
    let mut c = cfg(d.path(), 1);
    c.datafile_max = 16 << 10;
    c.gc_max_mb_per_sec = 1;
    const STATIC: usize = 400;
    const DYN: usize = 60;
    let sk = |i: usize| format!("static{i}").into_bytes();
    let dk = |i: usize| format!("dyn{i}").into_bytes();
    {
        let s = open(&c);
        for gen in 0..3 {
            for i in 0..STATIC {
                set_old(&s, &sk(i), &val(i, gen));
            }
            for i in 0..DYN {
                set_old(&s, &dk(i), &val(i, gen));
            }
        }
        s.close();
    }
    let s = Arc::new(open(&c));
    set_old(&s, b"z", b"head");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let s = s.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut model: HashMap<usize, Option<Vec<u8>>> =
                (0..DYN).map(|i| (i, Some(val(i, 2)))).collect();
            let mut n = 0u64;
            let mut during = 0u64;
            while !stop.load(Ordering::Acquire) || n < 300 {
                let i = (n as usize * 7) % DYN;
                n += 1;
                if s.gc_running() {
                    during += 1;
                }
                if n.is_multiple_of(5) {
                    let was = model[&i].is_some();
                    assert_eq!(delete(&s, &dk(i)), was, "delete dyn{i}");
                    model.insert(i, None);
                } else {
                    let v = format!("round {n} of dyn{i}").into_bytes();
                    assert!(set(&s, &dk(i), 0, 0, &v));
                    model.insert(i, Some(v));
                }
                // Paced, so the head does not run through all 998 chunks of 16 KiB.
                std::thread::sleep(Duration::from_micros(200));
                let j = (n as usize * 13) % DYN;
                let got = s
                    .get(&dk(j))
                    .expect("get during gc")
                    .map(|v| v.data.clone());
                assert_eq!(got, model[&j], "dyn{j} during gc");
            }
            (model, during)
        })
    };
    let reader = {
        let s = s.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Acquire) || n < 300 {
                let i = n % STATIC;
                n += 1;
                let got = s
                    .get(&sk(i))
                    .expect("get during gc")
                    .map(|v| v.data.clone());
                assert_eq!(got, Some(val(i, 2)), "static{i} during gc");
                let _ = s.list(b"");
            }
        })
    };
    let st = gc(&s, 0, None, None);
    stop.store(true, Ordering::Release);
    let (model, during) = writer.join().expect("writer");
    reader.join().expect("reader");
    assert!(st.num_released > 0);
    assert!(during >= 10, "only {during} writes overlapped the gc");
    let verify = |s: &Store| {
        for i in 0..STATIC {
            assert_eq!(get(s, &sk(i)), Some((0, val(i, 2))), "static{i}");
        }
        for (i, v) in &model {
            assert_eq!(get(s, &dk(*i)).map(|x| x.1), *v, "dyn{i}");
        }
    };
    verify(&s);
    s.close();
    drop(s);
    let s = open(&c);
    verify(&s);
    s.close();
    for n in names(d.path()) {
        if n.ends_with(".idx.hash") {
            fs::remove_file(d.path().join(n)).expect("rm");
        }
    }
    let s = open(&c);
    verify(&s);
}

// ---------------------------------------------------------------------------------- §10 scenarios

#[test]
fn corruption_resync_then_gc() {
    use beansdb_store::record::Record;
    let d = tmp();
    let c = cfg(d.path(), 1);
    let ts = old();
    let mut file = Vec::new();
    for i in 0..7 {
        let (flag, value) = if i == 4 {
            (0x10, vec![b'x'; 768])
        } else {
            (0, format!("value_{i}").into_bytes())
        };
        file.extend_from_slice(
            &Record {
                ts,
                flag,
                ver: i + 1,
                key: b"key".to_vec(),
                value,
            }
            .encode_padded(),
        );
    }
    file[16] = 0;
    file[256 + 20] = 0;
    file[512 + 24] = 0;
    file[768 + 27] = 0;
    file[1024 + 256] = 0;
    fs::write(d.path().join("000.data"), &file).expect("write");
    let s = open(&c);
    assert_eq!(get(&s, b"key"), Some((0, b"value_6".to_vec())));
    set_old(&s, b"other", b"in chunk 1");
    let st = gc(&s, 0, Some(0), None);
    assert_eq!((st.begin, st.end), (0, 0));
    assert_eq!(st.size_broken, 2048);
    assert_eq!((st.num_before, st.num_released), (2, 1));
    assert_eq!(st.size_released, 256 + 2048);
    assert_eq!(pos(&s, b"key"), (7, 0, 0));
    assert_eq!(get(&s, b"key"), Some((0, b"value_6".to_vec())));
    assert_eq!(
        fs::metadata(d.path().join("000.data")).expect("m").len(),
        256
    );
    s.close();
    let s = open(&c);
    assert_eq!(get(&s, b"key"), Some((0, b"value_6".to_vec())));
}

const COLL_A: &[u8] = b"processed_log_backup_text_20140912102821_1020_13301733";
const COLL_B: &[u8] = b"/subject/10460967/props";
const ARK: &[u8] = b"/ark/p/385242854/";
const DOUMAIL: &[u8] = b"/doumail/849134123/source";

#[test]
fn collision_pair_gc() {
    let d = tmp();
    let c = cfg(d.path(), 16);
    let kk = |k: &[u8]| [k, k].concat();
    {
        let s = open(&c);
        for k in [COLL_A, COLL_B, ARK] {
            set_old(&s, k, k);
        }
        assert_eq!(pos(&s, COLL_A), (1, 0, 0));
        assert_eq!(pos(&s, COLL_B), (2, 0, 256));
        assert_eq!(pos(&s, ARK), (1, 0, 512));
        s.close();
        let s = open(&c);
        for k in [COLL_A, COLL_B, ARK] {
            set_old(&s, k, &kk(k));
        }
        assert_eq!(pos(&s, COLL_A), (2, 1, 0));
        assert_eq!(pos(&s, COLL_B), (3, 1, 256));
        assert_eq!(pos(&s, ARK), (2, 1, 512));
        s.close();
        let s = open(&c);
        set_old(&s, DOUMAIL, DOUMAIL);
        s.close();
    }
    let s = open(&c);
    let st = gc(&s, 0xc, Some(0), None);
    assert_eq!((st.begin, st.end), (0, 1));
    assert_eq!(pos(&s, COLL_A), (2, 0, 0));
    assert_eq!(pos(&s, COLL_B), (3, 0, 256));
    assert_eq!(pos(&s, ARK), (2, 0, 512));
    for k in [COLL_A, COLL_B, ARK] {
        assert_eq!(get(&s, k), Some((0, kk(k))));
    }
    assert_eq!(get(&s, DOUMAIL), Some((0, DOUMAIL.to_vec())));
    let dir = c.bucket_dir(0xc);
    assert!(!dir.join("001.data").exists());
    assert_eq!(fs::metadata(dir.join("000.data")).expect("m").len(), 768);
    let y = fs::read_to_string(dir.join("collision.yaml")).expect("yaml");
    assert!(
        y.contains("/subject/10460967/props")
            && y.contains("processed_log_backup_text_20140912102821_1020_13301733"),
        "{y}"
    );
    s.close();
    let s = open(&c);
    assert_eq!(pos(&s, COLL_A), (2, 0, 0));
    assert_eq!(pos(&s, COLL_B), (3, 0, 256));
    for k in [COLL_A, COLL_B, ARK, DOUMAIL] {
        assert!(get(&s, k).is_some());
    }
}

/// The collision scan finds a pair nobody has read yet, so GC keeps both.
#[test]
fn collision_scan_before_gc() {
    let d = tmp();
    let c = cfg(d.path(), 16);
    {
        let s = open(&c);
        set_old(&s, COLL_A, b"a");
        set_old(&s, COLL_B, b"b");
        s.close();
    }
    let dir = c.bucket_dir(0xc);
    assert!(!dir.join("collision.yaml").exists());
    let s = open(&c);
    set_old(&s, ARK, b"head");
    gc(&s, 0xc, Some(0), None);
    let y = fs::read_to_string(dir.join("collision.yaml")).expect("yaml");
    assert!(
        y.contains("/subject/10460967/props") && y.contains("processed_log"),
        "{y}"
    );
    assert_eq!(get(&s, COLL_A), Some((0, b"a".to_vec())));
    assert_eq!(get(&s, COLL_B), Some((0, b"b".to_vec())));
    assert_eq!(pos(&s, COLL_A), (1, 0, 0));
    assert_eq!(pos(&s, COLL_B), (2, 0, 256));
}

#[test]
fn gc_after_rebuild_from_hints() {
    let d = tmp();
    let c = cfg(d.path(), 1);
    {
        let s = open(&c);
        for gen in 0..2 {
            for i in 0..10 {
                set_old(&s, &key(i), &val(i, gen));
            }
        }
        s.close();
    }
    for n in names(d.path()) {
        if n.ends_with(".idx.hash") {
            fs::remove_file(d.path().join(n)).expect("rm");
        }
    }
    let s = open(&c);
    set_old(&s, b"z", b"head");
    let st = gc(&s, 0, None, None);
    assert_eq!(st.num_released, 10);
    for i in 0..10 {
        assert_eq!(pos(&s, &key(i)), (2, 0, 256 * i as u32));
    }
}

/// Store::close during a GC stops it at a safe point; everything stays readable.
#[test]
fn close_during_gc() {
    let d = tmp();
    let mut c = cfg(d.path(), 1);
    c.datafile_max = 64 << 10;
    c.gc_max_mb_per_sec = 1;
    {
        let s = open(&c);
        for gen in 0..2 {
            for i in 0..20 {
                set_old(
                    &s,
                    &key(i),
                    &rand_bytes((i * 10 + gen) as u64, 16 << 10, None),
                );
            }
        }
        s.close();
    }
    let s = open(&c);
    set_old(&s, b"z", b"head");
    drain(&s);
    s.gc(0, req(None, None)).expect("gc");
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    s.close();
    assert!(t.elapsed() < Duration::from_secs(2));
    let st = s.gc_state(0).expect("state");
    assert!(!st.running);
    let s = open(&StoreConfig {
        gc_max_mb_per_sec: 0,
        ..c.clone()
    });
    for i in 0..20 {
        assert_eq!(
            get(&s, &key(i)).expect("hit").1,
            rand_bytes((i * 10 + 1) as u64, 16 << 10, None),
            "key{i}"
        );
    }
    assert!(!names(d.path()).iter().any(|n| n.ends_with(".tmp")));
}
