//! `/buffers` accounting (D8). One test in its own binary: the counters are process-global.

mod common;

use beansdb_store::buffers::BUFFERS;
use beansdb_store::FsyncPolicy;
use common::*;

fn assert_at_rest(what: &str) {
    for (name, c) in BUFFERS.all() {
        assert_eq!((c.count, c.size), (0, 0), "{name} not at rest after {what}");
    }
}

#[test]
fn counters_return_to_zero() {
    let d = tempfile::tempdir().expect("tempdir");
    let mut c = cfg(d.path(), 16);
    c.fsync = FsyncPolicy::Always;
    let s = open(&c);
    assert_at_rest("open");

    // Queued records count in FlushData until written (checked without waiting for them).
    let big = rand_bytes(5, 100_000, None);
    match s.set(b"big", 0, 0, &big, TS).expect("set") {
        beansdb_store::WriteOutcome::Done(Some(d)) => {
            assert!(BUFFERS.flush_data.snapshot().max_size >= 100_000);
            d.wait_blocking();
        }
        _ => panic!("fsync always must hand out a Durable"),
    }
    drain(&s);
    assert_at_rest("big set");

    // A value held for a reply counts in GetData (and AllocRL when large) until dropped.
    let v = s.get(b"big").expect("get").expect("hit");
    assert_eq!(BUFFERS.get_data.snapshot().size, 100_000);
    assert_eq!(BUFFERS.alloc_rl.snapshot().count, 1);
    drop(v);
    assert_at_rest("get");

    for i in 0..200u32 {
        assert!(set(&s, format!("k{i}").as_bytes(), 0, 0, b"v"));
    }
    assert!(!set(&s, b"missing", 0, -1, b"x"));
    assert!(set(&s, b"k1", 0, -1, b"x"));
    assert!(delete(&s, b"k2"));
    assert!(!delete(&s, b"k2"));
    let (_, d1) = s.incr(b"n", 3, TS).expect("incr");
    d1.expect("durable").wait_blocking();
    assert_eq!(s.incr(b"k3", 3, TS).expect("incr").0, 0);
    let _ = s.meta(b"k4").expect("meta");
    let _ = s.raw(beansdb_hash::keyhash(b"k5")).expect("raw");
    let _ = s.list(b"");
    drain(&s);
    assert_at_rest("mixed operations");

    // Many concurrent writers, then a clean close.
    let s = std::sync::Arc::new(s);
    let ts: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..300u32 {
                    assert!(set(&s, format!("t{t}:{i}").as_bytes(), 0, 0, &[b'x'; 5000]));
                    let _ = s.get(format!("t{t}:{}", i / 2).as_bytes()).expect("get");
                }
            })
        })
        .collect();
    for t in ts {
        t.join().expect("join");
    }
    s.close();
    assert_at_rest("concurrent writers and close");
    assert_eq!(s.queued_bytes(), 0);
}
