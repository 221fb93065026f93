//! GC crash safety (D11): the home is snapshotted at each GC failpoint, as a kill -9 would
//! leave it, and the snapshot must serve every key at its latest version. One test in its own
//! binary: the failpoint hook is process-global.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use beansdb_store::gc::FAILPOINT;
use beansdb_store::{GcRequest, Store, StoreConfig};
use common::*;
use parking_lot::Mutex;

fn old() -> u32 {
    beansdb_store::bucket::now_secs() - 100
}

fn k(i: usize) -> Vec<u8> {
    format!("crash{i:02}").into_bytes()
}

/// Expected state: keys 0..4 at gen 1 (version 2), key 7 deleted, the rest gen 0.
fn expected(i: usize) -> Option<Vec<u8>> {
    match i {
        7 => None,
        0..=4 => Some(format!("gen1 of {i}").into_bytes()),
        _ => Some(format!("gen0 of {i}").into_bytes()),
    }
}

fn verify(s: &Store, what: &str) {
    for i in 0..15 {
        assert_eq!(
            get(s, &k(i)).map(|v| v.1),
            expected(i),
            "{what}: crash{i:02}"
        );
        if i <= 4 {
            assert_eq!(meta(s, &k(i)).ver, 2, "{what}: crash{i:02}");
        }
    }
    assert_eq!(get(s, b"z"), Some((0, b"head".to_vec())), "{what}");
}

fn build(home: &Path) -> StoreConfig {
    let c = cfg(home, 1);
    let s = open(&c);
    for i in 0..10 {
        assert!(set_ts(
            &s,
            &k(i),
            0,
            0,
            format!("gen0 of {i}").as_bytes(),
            old()
        ));
    }
    s.close();
    let s = open(&c);
    for i in 0..5 {
        assert!(set_ts(
            &s,
            &k(i),
            0,
            0,
            format!("gen1 of {i}").as_bytes(),
            old()
        ));
    }
    for i in 10..15 {
        assert!(set_ts(
            &s,
            &k(i),
            0,
            0,
            format!("gen0 of {i}").as_bytes(),
            old()
        ));
    }
    assert!(delete_ts(&s, &k(7), old()));
    s.close();
    c
}

#[test]
fn crash_at_every_gc_failpoint() {
    let points = [
        "gc_tmp_partial",
        "gc_after_rename",
        "gc_mid_append",
        "gc_before_src_delete",
    ];
    for point in points {
        let d = tempfile::tempdir().expect("tempdir");
        let home = d.path().join("home");
        let snap: PathBuf = d.path().join("snap");
        let c = build(&home);
        let s = open(&c);
        assert!(set_ts(&s, b"z", 0, 0, b"head", old()));
        drain(&s);
        let taken = Arc::new(Mutex::new(false));
        {
            let taken = taken.clone();
            let (home, snap) = (home.clone(), snap.clone());
            *FAILPOINT.write() = Some(Box::new(move |name: &str| {
                let mut t = taken.lock();
                if name == point && !*t {
                    *t = true;
                    copy_dir(&home, &snap);
                }
            }));
        }
        s.gc(
            0,
            GcRequest {
                start: Some(0),
                end: None,
                no_gc_days: Some(0),
                merge: false,
                run: true,
            },
        )
        .expect("gc");
        s.bucket(0).expect("bucket").gc_wait();
        *FAILPOINT.write() = None;
        assert!(*taken.lock(), "failpoint {point} not reached");
        let st = s.gc_state(0).expect("state");
        assert_eq!((st.begin, st.end, st.err.clone()), (0, 1, None));
        verify(&s, "after gc");
        s.close();
        verify(&open(&c), "reopened after gc");

        // The home as a kill -9 at the failpoint left it.
        let sc = StoreConfig {
            home: snap.clone(),
            ..c.clone()
        };
        let s = open(&sc);
        verify(&s, point);
        assert!(!names(&snap).iter().any(|n| n.ends_with(".tmp")), "{point}");
        // And a GC of the recovered home completes and changes nothing visible.
        let r = GcRequest {
            start: Some(0),
            end: None,
            no_gc_days: Some(0),
            merge: false,
            run: true,
        };
        s.gc(0, r).expect("gc of the recovered home");
        s.bucket(0).expect("bucket").gc_wait();
        assert_eq!(s.gc_state(0).expect("state").err, None, "{point}");
        verify(&s, point);
        s.close();
        verify(&open(&sc), point);
    }
}
