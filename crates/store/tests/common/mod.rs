//! Helpers shared by the engine and GC integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use beansdb_store::{FsyncPolicy, KeyMeta, Store, StoreConfig, WriteOutcome};

/// A fixed receive time for records whose timestamp does not matter.
pub const TS: u32 = 1_700_000_000;

/// Small, fast settings: no fsync, no GC throttle.
pub fn cfg(home: &Path, numbucket: usize) -> StoreConfig {
    let mut c = StoreConfig::new(home, numbucket);
    c.fsync = FsyncPolicy::Never;
    c.gc_max_mb_per_sec = 0;
    c
}

pub fn open(c: &StoreConfig) -> Store {
    Store::open(c.clone()).expect("open store")
}

/// set with ts `TS`; true = STORED, false = NOT_FOUND (negative exptime on a missing key).
pub fn set(s: &Store, key: &[u8], flag: u32, ver: i32, value: &[u8]) -> bool {
    set_ts(s, key, flag, ver, value, TS)
}

pub fn set_ts(s: &Store, key: &[u8], flag: u32, ver: i32, value: &[u8], ts: u32) -> bool {
    done(s.set(key, flag, ver, value, ts).expect("set"))
}

pub fn delete(s: &Store, key: &[u8]) -> bool {
    done(s.delete(key, TS).expect("delete"))
}

pub fn delete_ts(s: &Store, key: &[u8], ts: u32) -> bool {
    done(s.delete(key, ts).expect("delete"))
}

/// Waits for durability when the policy asks for it.
pub fn done(o: WriteOutcome) -> bool {
    match o {
        WriteOutcome::Done(Some(d)) => {
            d.wait_blocking();
            true
        }
        WriteOutcome::Done(None) => true,
        WriteOutcome::NotFound => false,
    }
}

pub fn get(s: &Store, key: &[u8]) -> Option<(u32, Vec<u8>)> {
    s.get(key).expect("get").map(|v| (v.flag, v.data.clone()))
}

pub fn meta(s: &Store, key: &[u8]) -> KeyMeta {
    s.meta(key)
        .expect("meta")
        .unwrap_or_else(|| panic!("no meta for {:?}", String::from_utf8_lossy(key)))
}

/// (ver, chunk, offset) of `??key`.
pub fn pos(s: &Store, key: &[u8]) -> (i32, u32, u32) {
    let m = meta(s, key);
    (m.ver, m.chunk, m.offset)
}

/// Waits until every queued record is written.
pub fn drain(s: &Store) {
    let t = Instant::now();
    while s.buckets().any(|b| b.queue_len() > 0) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "write queue did not drain"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Directory of the bucket holding `key`.
pub fn bucket_dir(s: &Store, key: &[u8]) -> PathBuf {
    let kh = beansdb_hash::keyhash(key);
    let b = beansdb_hash::bucket_of_hash(kh, s.depth());
    s.config().bucket_dir(b)
}

pub fn bucket_of(s: &Store, key: &[u8]) -> usize {
    beansdb_hash::bucket_of_hash(beansdb_hash::keyhash(key), s.depth())
}

/// Sorted `(name, size)` of the files in a directory.
pub fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_file())
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().map(|m| m.len()).unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn names(dir: &Path) -> Vec<String> {
    files(dir).into_iter().map(|(n, _)| n).collect()
}

pub fn data_files(dir: &Path) -> Vec<(String, u64)> {
    files(dir)
        .into_iter()
        .filter(|(n, _)| n.ends_with(".data"))
        .collect()
}

pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let ty = e.file_type().expect("file type");
        let dst = to.join(e.file_name());
        if ty.is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            fs::copy(e.path(), &dst).expect("copy");
            let mut p = fs::metadata(&dst).expect("meta").permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            p.set_readonly(false);
            fs::set_permissions(&dst, p).expect("chmod");
        }
    }
}

/// Keys that all fall into bucket `bucket` of a 16-bucket store.
pub fn keys_in_bucket(bucket: usize, n: usize, prefix: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0u64;
    while out.len() < n {
        let k = format!("{prefix}{i}").into_bytes();
        if beansdb_hash::bucket_of_hash(beansdb_hash::keyhash(&k), 1) == bucket {
            out.push(k);
        }
        i += 1;
    }
    out
}

/// Deterministic pseudo-random bytes (xorshift), no extra dependency.
pub fn rand_bytes(seed: u64, n: usize, alphabet: Option<&[u8]>) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match alphabet {
                Some(a) => a[(x % a.len() as u64) as usize],
                None => (x >> 24) as u8,
            }
        })
        .collect()
}
