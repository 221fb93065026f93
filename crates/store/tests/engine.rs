//! Engine behaviour through the public `Store` API (node.md §3.7, §3.8, §6.1–§6.3, §10).

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::sync::Arc;

use beansdb_store::record::{FLAG_CLIENT_COMPRESSED, FLAG_INCR};
use beansdb_store::{FsyncPolicy, Store, StoreConfig};
use common::*;

const KEY1: &[u8] = b"key1";

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

// ---------------------------------------------------------------------------------- versions

/// The worked sequence of §3.7 (`check_vhash: true`).
#[test]
fn version_sequence_check_vhash() {
    let d = tmp();
    let mut c = cfg(d.path(), 16);
    c.check_vhash = true;
    let s = open(&c);

    assert!(set(&s, KEY1, 0, 0, b"aaa"));
    assert_eq!(pos(&s, KEY1), (1, 0, 0));
    assert!(set(&s, KEY1, 0, 3, b"bbb"));
    assert_eq!(pos(&s, KEY1), (3, 0, 256));
    // Same bytes with a higher version: raised in place, no record.
    assert!(set(&s, KEY1, 0, 4, b"bbb"));
    assert_eq!(pos(&s, KEY1), (4, 0, 256));
    // Lower explicit version: ignored but STORED.
    assert!(set(&s, KEY1, 0, 2, b"ccc"));
    assert_eq!(pos(&s, KEY1), (4, 0, 256));
    assert_eq!(get(&s, KEY1), Some((0, b"bbb".to_vec())));
    assert!(set(&s, KEY1, 0, 0, b"bbb"));
    assert_eq!(pos(&s, KEY1), (4, 0, 256));

    assert!(delete(&s, KEY1));
    assert_eq!(pos(&s, KEY1), (-5, 0, 512));
    assert_eq!(get(&s, KEY1), None);
    let m = meta(&s, KEY1);
    assert_eq!((m.ver, m.vhash, m.flag, m.len, m.ts), (-5, 0, 0, 0, TS));
    assert!(!delete(&s, KEY1));
    assert_eq!(pos(&s, KEY1), (-5, 0, 512));
    assert!(!set(&s, KEY1, 0, -1, b"xyz"));
    assert_eq!(pos(&s, KEY1), (-5, 0, 512));
    assert!(set(&s, KEY1, 0, 0, b"ddd"));
    assert_eq!(pos(&s, KEY1), (6, 0, 768));
    assert!(set(&s, KEY1, 0, -1, b"xyz"));
    assert_eq!(pos(&s, KEY1), (-7, 0, 1024));
    assert_eq!(meta(&s, KEY1).len, 0);
    assert_eq!(get(&s, KEY1), None);
    let (n, d) = s.incr(KEY1, 5, TS).expect("incr");
    assert!(d.is_none());
    assert_eq!(n, 5);
    assert_eq!(pos(&s, KEY1), (8, 0, 1280));
    assert_eq!(get(&s, KEY1), Some((FLAG_INCR, b"5".to_vec())));
    assert_eq!(
        s.bucket(bucket_of(&s, KEY1))
            .expect("bucket")
            .info()
            .num_same_vhash,
        2
    );

    // The tombstone written by a negative-exptime set is empty, whatever the body was.
    s.close();
    let data = fs::read(bucket_dir(&s, KEY1).join("000.data")).expect("data");
    assert_eq!(data.len(), 1536);
    assert_eq!(&data[1024 + 20..1024 + 24], &[0, 0, 0, 0]);
}

#[test]
fn version_sequence_without_check_vhash() {
    let d = tmp();
    let s = open(&cfg(d.path(), 16));
    assert!(set(&s, KEY1, 0, 0, b"aaa"));
    assert!(set(&s, KEY1, 0, 3, b"bbb"));
    assert_eq!(pos(&s, KEY1), (3, 0, 256));
    assert!(set(&s, KEY1, 0, 4, b"bbb"));
    assert_eq!(pos(&s, KEY1), (4, 0, 512));
    assert!(set(&s, KEY1, 0, 2, b"ccc"));
    assert_eq!(pos(&s, KEY1), (4, 0, 512));
    assert!(set(&s, KEY1, 0, 0, b"bbb"));
    assert_eq!(pos(&s, KEY1), (5, 0, 768));
    assert!(delete(&s, KEY1));
    assert_eq!(pos(&s, KEY1), (-6, 0, 1024));
}

/// D5: equal vhash is not enough to skip a write; flag and bytes must be equal too.
#[test]
fn same_vhash_different_bytes_is_stored() {
    let mut seen = std::collections::HashMap::new();
    let mut pair = None;
    'outer: for a in b'a'..=b'z' {
        for b in b'a'..=b'z' {
            for c in b'a'..=b'z' {
                for e in b'a'..=b'z' {
                    let v = vec![a, b, c, e];
                    let h = beansdb_hash::vhash(&v);
                    if let Some(prev) = seen.insert(h, v.clone()) {
                        pair = Some((prev, v));
                        break 'outer;
                    }
                }
            }
        }
    }
    let (v1, v2) = pair.expect("a vhash collision among 4-letter values");
    assert_ne!(v1, v2);
    assert_eq!(beansdb_hash::vhash(&v1), beansdb_hash::vhash(&v2));

    let d = tmp();
    let mut c = cfg(d.path(), 16);
    c.check_vhash = true;
    let s = open(&c);
    assert!(set(&s, KEY1, 0, 0, &v1));
    assert!(set(&s, KEY1, 0, 0, &v2));
    assert_eq!(pos(&s, KEY1), (2, 0, 256));
    assert_eq!(get(&s, KEY1), Some((0, v2.clone())));
    // Same bytes, different flag: also a real update.
    assert!(set(&s, KEY1, 1, 0, &v2));
    assert_eq!(pos(&s, KEY1), (3, 0, 512));
    assert_eq!(get(&s, KEY1), Some((1, v2.clone())));
    // Really the same: skipped.
    assert!(set(&s, KEY1, 1, 0, &v2));
    assert_eq!(pos(&s, KEY1), (3, 0, 512));
}

// ---------------------------------------------------------------------------------- delete / incr

#[test]
fn delete_rules() {
    let d = tmp();
    let s = open(&cfg(d.path(), 16));
    assert!(!delete(&s, b"nope"));
    assert!(!set(&s, b"nope", 0, -3, b"x"));
    assert!(s.meta(b"nope").expect("meta").is_none());
    assert!(set(&s, b"k", 7, 0, b"v"));
    assert!(delete(&s, b"k"));
    assert_eq!(get(&s, b"k"), None);
    let m = meta(&s, b"k");
    assert_eq!((m.ver, m.flag, m.len, m.vhash), (-2, 0, 0, 0));
    // After a delete a plain set continues from |old| + 1.
    assert!(set(&s, b"k", 0, 0, b"w"));
    assert_eq!(meta(&s, b"k").ver, 3);
    // An explicit version must exceed |old|.
    assert!(delete(&s, b"k"));
    assert!(set(&s, b"k", 0, 4, b"old"));
    assert_eq!(get(&s, b"k"), None);
    assert!(set(&s, b"k", 0, 5, b"new"));
    assert_eq!(get(&s, b"k"), Some((0, b"new".to_vec())));
    assert_eq!(meta(&s, b"k").ver, 5);
}

#[test]
fn incr_rules() {
    let d = tmp();
    let mut c = cfg(d.path(), 16);
    c.check_vhash = true;
    let s = open(&c);
    assert_eq!(s.incr(b"cnt", 10, TS).expect("incr").0, 10);
    assert_eq!(get(&s, b"cnt"), Some((FLAG_INCR, b"10".to_vec())));
    assert_eq!(meta(&s, b"cnt").ver, 1);
    assert_eq!(s.incr(b"cnt", -3, TS).expect("incr").0, 7);
    // incr by 0 still writes (no same-value skip for incr).
    assert_eq!(s.incr(b"cnt", 0, TS).expect("incr").0, 7);
    assert_eq!(pos(&s, b"cnt"), (3, meta(&s, b"cnt").chunk, 512));
    // Wrapping arithmetic.
    assert!(set(
        &s,
        b"big",
        FLAG_INCR,
        0,
        i64::MAX.to_string().as_bytes()
    ));
    assert_eq!(s.incr(b"big", 1, TS).expect("incr").0, i64::MIN);

    // A string value: 0, nothing written.
    assert!(set(&s, b"str", 0, 0, b"12"));
    let before = pos(&s, b"str");
    assert_eq!(s.incr(b"str", 5, TS).expect("incr").0, 0);
    assert_eq!(pos(&s, b"str"), before);
    assert_eq!(get(&s, b"str"), Some((0, b"12".to_vec())));
    // Right flag but not a number.
    assert!(set(&s, b"nan", FLAG_INCR, 0, b"abc"));
    assert_eq!(s.incr(b"nan", 5, TS).expect("incr").0, 0);
    // Too long.
    assert!(set(&s, b"long", FLAG_INCR, 0, &[b'1'; 23]));
    assert_eq!(s.incr(b"long", 5, TS).expect("incr").0, 0);

    // After a delete: counts from 0, version |old| + 1.
    assert!(delete(&s, b"cnt"));
    assert_eq!(meta(&s, b"cnt").ver, -4);
    assert_eq!(s.incr(b"cnt", 2, TS).expect("incr").0, 2);
    assert_eq!(meta(&s, b"cnt").ver, 5);
    assert_eq!(get(&s, b"cnt"), Some((FLAG_INCR, b"2".to_vec())));
}

#[test]
fn incr_concurrent_sums_exactly() {
    let d = tmp();
    let s = Arc::new(open(&cfg(d.path(), 16)));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    s.incr(b"counter", 1, TS).expect("incr");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    assert_eq!(get(&s, b"counter"), Some((FLAG_INCR, b"8000".to_vec())));
    assert_eq!(meta(&s, b"counter").ver, 8000);
    s.close();
    let s = open(&cfg(d.path(), 16));
    assert_eq!(get(&s, b"counter"), Some((FLAG_INCR, b"8000".to_vec())));
}

// ---------------------------------------------------------------------------------- positions

#[test]
fn positions_and_big_value() {
    let d = tmp();
    let s = open(&cfg(d.path(), 1));
    for i in 0..10u32 {
        assert!(set(&s, format!("p{i}").as_bytes(), 0, 0, b"v"));
        assert_eq!(pos(&s, format!("p{i}").as_bytes()), (1, 0, 256 * i));
    }
    let big = rand_bytes(7, 10 << 20, Some(b"abcdefghijklmnopqrstuvwxyz"));
    assert!(set(&s, b"bigvalue", 0, 0, &big));
    assert_eq!(pos(&s, b"bigvalue"), (1, 0, 2560));
    assert!(set(&s, b"after", 0, 0, b"x"));
    assert_eq!(pos(&s, b"after"), (1, 0, 2560 + 10_486_016));
    assert_eq!(get(&s, b"bigvalue").expect("big").1, big);
    drain(&s);
    // Read back from disk (no longer queued).
    assert_eq!(get(&s, b"bigvalue").expect("big").1, big);
    let m = meta(&s, b"bigvalue");
    assert_eq!(m.len, 10 << 20);
    s.close();
    assert_eq!(
        data_files(d.path()),
        vec![("000.data".to_string(), 2560 + 10_486_016 + 256)]
    );
    let raw = fs::read(d.path().join("000.data")).expect("read");
    // Stored uncompressed: flag without 0x10000 and vsz = the full length.
    assert_eq!(&raw[2560 + 8..2560 + 12], &[0, 0, 0, 0]);
    assert_eq!(
        u32::from_le_bytes(raw[2560 + 20..2560 + 24].try_into().expect("4")),
        10 << 20
    );
}

#[test]
fn compression_boundary() {
    let d = tmp();
    let s = open(&cfg(d.path(), 1));
    let k169 = vec![b'k'; 169];
    let k170 = vec![b'k'; 170];
    let v63 = vec![b'v'; 63];
    assert!(set(&s, &k169, 0, 0, &v63));
    assert!(set(&s, &k170, 0, 0, &v63));
    let k170b = [vec![b'k'; 169], b"z".to_vec()].concat();
    assert!(set(&s, &k170b, FLAG_CLIENT_COMPRESSED, 0, &v63));
    assert!(set(&s, b"end", 0, 0, b"x"));
    assert_eq!(pos(&s, &k169), (1, 0, 0));
    assert_eq!(pos(&s, &k170), (1, 0, 256));
    assert_eq!(pos(&s, &k170b), (1, 0, 512));
    assert_eq!(pos(&s, b"end"), (1, 0, 1024));
    for reopen in [false, true] {
        let s2;
        let st = if reopen {
            s.close();
            s2 = open(&cfg(d.path(), 1));
            &s2
        } else {
            &s
        };
        assert_eq!(get(st, &k169), Some((0, v63.clone())));
        assert_eq!(get(st, &k170), Some((0, v63.clone())));
        assert_eq!(get(st, &k170b), Some((FLAG_CLIENT_COMPRESSED, v63.clone())));
        let m = meta(st, &k170);
        assert_eq!((m.flag, m.len, m.vhash), (0, 63, beansdb_hash::vhash(&v63)));
    }
    let raw = fs::read(d.path().join("000.data")).expect("read");
    // Record 1 is compressed: flag 0x10000, vsz 18 (§4.2 example).
    assert_eq!(&raw[256 + 8..256 + 12], &0x10000u32.to_le_bytes());
    assert_eq!(&raw[256 + 20..256 + 24], &18u32.to_le_bytes());
    assert_eq!(&raw[8..12], &[0, 0, 0, 0]);
}

#[test]
fn rotation_at_datafile_max() {
    let d = tmp();
    let mut c = cfg(d.path(), 1);
    c.datafile_max = 1024;
    let s = open(&c);
    for i in 0..10u32 {
        assert!(set(&s, format!("r{i}").as_bytes(), 0, 0, b"v"));
        assert_eq!(
            pos(&s, format!("r{i}").as_bytes()),
            (1, i / 4, (i % 4) * 256)
        );
    }
    // A record larger than datafile_max goes alone at offset 0 of a fresh chunk.
    assert!(set(&s, b"huge", 0, 0, &rand_bytes(1, 3000, None)));
    assert_eq!(pos(&s, b"huge"), (1, 3, 0));
    assert!(set(&s, b"next", 0, 0, b"v"));
    assert_eq!(pos(&s, b"next"), (1, 4, 0));
    s.close();
    let s = open(&c);
    for i in 0..10u32 {
        assert_eq!(
            get(&s, format!("r{i}").as_bytes()),
            Some((0, b"v".to_vec()))
        );
    }
    assert_eq!(get(&s, b"huge").expect("huge").1.len(), 3000);
}

// ---------------------------------------------------------------------------------- restart

#[test]
fn restart_persistence() {
    let d = tmp();
    let c = cfg(d.path(), 16);
    let long_key = vec![b'L'; 200];
    let pickled: Vec<u8> = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01u.".to_vec();
    let mut expect = Vec::new();
    {
        let s = open(&c);
        for i in 0..100u32 {
            let k = format!("key:{i}").into_bytes();
            let v = rand_bytes(i as u64, (i as usize * 37) % 700 + 1, Some(b"abcdef "));
            assert!(set(&s, &k, i % 5, 0, &v));
            expect.push((k, v, i % 5));
        }
        assert!(set(&s, &long_key, 3, 0, b"long"));
        assert!(set(&s, b"pickle", 1, 7, &pickled));
        for i in 0..10u32 {
            assert!(delete(&s, format!("key:{i}").as_bytes()));
        }
        s.close();
    }
    let s = open(&c);
    for (i, (k, v, f)) in expect.iter().enumerate() {
        if i < 10 {
            assert_eq!(get(&s, k), None);
            // Tombstones are kept by the htree dump of a clean shutdown.
            assert_eq!(meta(&s, k).ver, -2);
        } else {
            assert_eq!(get(&s, k), Some((*f, v.clone())));
            assert_eq!(meta(&s, k).ver, 1);
        }
    }
    assert_eq!(get(&s, &long_key), Some((3, b"long".to_vec())));
    assert_eq!(get(&s, b"pickle"), Some((1, pickled.clone())));
    assert_eq!(meta(&s, b"pickle").ver, 7);
    assert_eq!(s.live_items(), 92);
    // First write after a restart: chunk N+1, offset 0.
    assert!(set(&s, b"pickle", 1, 0, b"again"));
    assert_eq!(pos(&s, b"pickle"), (8, 1, 0));
}

#[test]
fn many_restarts_give_one_chunk_each() {
    let d = tmp();
    let c = cfg(d.path(), 1);
    for i in 0..30u32 {
        let s = open(&c);
        assert!(set(&s, format!("r{i}").as_bytes(), 0, 0, b"v"));
        assert_eq!(pos(&s, format!("r{i}").as_bytes()), (1, i, 0));
        s.close();
    }
    let s = open(&c);
    let chunks: Vec<String> = data_files(d.path()).into_iter().map(|f| f.0).collect();
    let want: Vec<String> = (0..30).map(|i| format!("{i:03}.data")).collect();
    assert_eq!(chunks, want);
    for i in 0..30u32 {
        assert_eq!(pos(&s, format!("r{i}").as_bytes()), (1, i, 0));
    }
}

/// kill -9 with `fsync: always`: a copy of the live home taken after the acknowledgements holds
/// every acknowledged write.
#[test]
fn crash_copy_keeps_acknowledged_writes() {
    let d = tmp();
    let mut c = cfg(d.path().join("home").as_path(), 16);
    c.fsync = FsyncPolicy::Always;
    let s = open(&c);
    for i in 0..200u32 {
        assert!(set(
            &s,
            format!("ack:{i}").as_bytes(),
            0,
            0,
            format!("value {i}").as_bytes()
        ));
    }
    for i in 0..20u32 {
        assert!(delete(&s, format!("ack:{i}").as_bytes()));
    }
    // incr under `always` is acknowledged once durable, like a set.
    let (n, durable) = s.incr(b"ctr", 42, TS).expect("incr");
    assert_eq!(n, 42);
    durable
        .expect("incr must be waited for under fsync always")
        .wait_blocking();
    let copy = d.path().join("copy");
    copy_dir(&d.path().join("home"), &copy);
    let mut c2 = c.clone();
    c2.home = copy.clone();
    let s2 = open(&c2);
    for i in 0..200u32 {
        let want = (i >= 20).then(|| (0, format!("value {i}").into_bytes()));
        assert_eq!(get(&s2, format!("ack:{i}").as_bytes()), want, "ack:{i}");
    }
    assert_eq!(get(&s2, b"ctr"), Some((FLAG_INCR, b"42".to_vec())));
    drop(s);
}

// ---------------------------------------------------------------------------------- recovery

fn fill(s: &Store, n: u32) {
    for i in 0..n {
        assert!(set(
            s,
            format!("t{i}").as_bytes(),
            0,
            0,
            format!("val{i}").as_bytes()
        ));
    }
}

fn check(s: &Store, n: u32) {
    for i in 0..n {
        assert_eq!(
            get(s, format!("t{i}").as_bytes()),
            Some((0, format!("val{i}").into_bytes())),
            "t{i}"
        );
    }
}

#[test]
fn torn_tail_garbage_truncated() {
    let d = tmp();
    let c = cfg(d.path(), 1);
    let s = open(&c);
    fill(&s, 20);
    s.close();
    let p = d.path().join("000.data");
    let mut f = OpenOptions::new().append(true).open(&p).expect("open");
    f.write_all(&rand_bytes(3, 100, None)).expect("write");
    drop(f);
    let s = open(&c);
    assert_eq!(fs::metadata(&p).expect("meta").len(), 20 * 256);
    check(&s, 20);
    assert!(set(&s, b"t0", 0, 0, b"new"));
    assert_eq!(pos(&s, b"t0"), (2, 1, 0));
}

#[test]
fn torn_tail_half_record_truncated() {
    let d = tmp();
    let c = cfg(d.path(), 1);
    let s = open(&c);
    fill(&s, 10);
    s.close();
    // Crash during the next batch: hints are not written, a record is cut in half.
    let s = open(&c);
    assert!(set(&s, b"half", 0, 0, &rand_bytes(9, 1000, None)));
    drain(&s);
    let p1 = d.path().join("001.data");
    let full = fs::read(&p1).expect("read");
    assert_eq!(full.len(), 1280);
    let copy = d.path().join("copy");
    fs::create_dir(&copy).expect("mkdir");
    for (n, _) in files(d.path()) {
        if n != "001.data" {
            fs::copy(d.path().join(&n), copy.join(&n)).expect("copy");
        }
    }
    fs::write(copy.join("001.data"), &full[..600]).expect("write");
    let mut c2 = c.clone();
    c2.home = copy.clone();
    let s2 = open(&c2);
    check(&s2, 10);
    assert_eq!(get(&s2, b"half"), None);
    // The torn chunk holds nothing valid, so it is removed; the next write starts chunk 1.
    assert!(!copy.join("001.data").exists());
    assert!(set(&s2, b"x", 0, 0, b"y"));
    assert_eq!(pos(&s2, b"x"), (1, 1, 0));
    drop(s);
}

#[test]
fn torn_tail_after_valid_records_of_newest_chunk() {
    let d = tmp();
    let c = cfg(d.path(), 1);
    let s = open(&c);
    fill(&s, 10);
    drain(&s);
    // Crash: copy without a clean shutdown, then append half a record.
    let d2 = tmp();
    let copy = d2.path().join("copy");
    copy_dir(d.path(), &copy);
    let rec = beansdb_store::record::Record {
        ts: TS,
        flag: 0,
        ver: 1,
        key: b"cut".to_vec(),
        value: vec![b'c'; 1000],
    }
    .encode_padded();
    let mut f = OpenOptions::new()
        .append(true)
        .open(copy.join("000.data"))
        .expect("open");
    f.write_all(&rec[..100]).expect("write");
    drop(f);
    let mut c2 = c.clone();
    c2.home = copy.clone();
    let s2 = open(&c2);
    assert_eq!(
        fs::metadata(copy.join("000.data")).expect("meta").len(),
        2560
    );
    check(&s2, 10);
    drop(s);
}

#[test]
fn corrupt_middle_record_is_skipped() {
    let d = tmp();
    let c = cfg(d.path(), 1);
    let s = open(&c);
    fill(&s, 10);
    s.close();
    // Corrupt record 4 and drop hints and the htree dump, so recovery scans the file.
    let p = d.path().join("000.data");
    let mut data = fs::read(&p).expect("read");
    // Inside the value "val4" (bytes 26..30 of the record), so the CRC fails.
    data[4 * 256 + 27] ^= 0xff;
    fs::write(&p, &data).expect("write");
    for (n, _) in files(d.path()) {
        if n.contains(".idx.") {
            fs::remove_file(d.path().join(n)).expect("rm");
        }
    }
    let s = open(&c);
    for i in 0..10u32 {
        let got = get(&s, format!("t{i}").as_bytes());
        if i == 4 {
            assert_eq!(got, None);
        } else {
            assert_eq!(got, Some((0, format!("val{i}").into_bytes())));
        }
    }
    // The file is left untouched.
    assert_eq!(fs::read(&p).expect("read"), data);
}

/// §10: 7 records of `key`, five of them corrupted; recovery without hints serves `value_6`.
pub fn corruption_resync_file() -> Vec<u8> {
    use beansdb_store::record::Record;
    let mut out = Vec::new();
    for i in 0..7 {
        let (flag, value) = if i == 4 {
            (0x10, vec![b'x'; 768])
        } else {
            (0, format!("value_{i}").into_bytes())
        };
        let r = Record {
            ts: TS,
            flag,
            ver: i + 1,
            key: b"key".to_vec(),
            value,
        };
        out.extend_from_slice(&r.encode_padded());
    }
    assert_eq!(out.len(), 6 * 256 + 1024);
    out[16] = 0;
    out[256 + 20] = 0;
    out[512 + 24] = 0;
    out[768 + 27] = 0;
    out[1024 + 256] = 0;
    out
}

#[test]
fn corruption_resync_serves_latest() {
    let d = tmp();
    let c = cfg(d.path(), 1);
    fs::write(d.path().join("000.data"), corruption_resync_file()).expect("write");
    let s = open(&c);
    assert_eq!(get(&s, b"key"), Some((0, b"value_6".to_vec())));
    assert_eq!(pos(&s, b"key"), (7, 0, 2304));
    assert_eq!(
        fs::metadata(d.path().join("000.data")).expect("meta").len(),
        2560
    );
}

/// Bad hint files and htree dumps are rebuilt and serve the same data.
#[test]
fn damaged_hints_and_htree_are_rebuilt() {
    let d = tmp();
    let orig = d.path().join("orig");
    let mut c = cfg(&orig, 16);
    c.datafile_max = 4096;
    let keys = keys_in_bucket(5, 60, "h");
    {
        let s = open(&c);
        for (i, k) in keys.iter().enumerate() {
            assert!(set(&s, k, 0, 0, format!("v{i}").as_bytes()));
        }
        for k in &keys[..5] {
            assert!(delete(&s, k));
        }
        s.close();
        // A second session so there are hints in two generations.
        let s = open(&c);
        for (i, k) in keys[10..20].iter().enumerate() {
            assert!(set(&s, k, 0, 0, format!("w{i}").as_bytes()));
        }
        s.close();
    }
    let bdir = c.bucket_dir(5);
    type Expect = (Vec<u8>, Option<(u32, Vec<u8>)>, i32);
    let expected: Vec<Expect> = {
        let s = open(&c);
        let v = keys
            .iter()
            .map(|k| (k.clone(), get(&s, k), meta(&s, k).ver))
            .collect();
        s.close();
        v
    };
    let listing = {
        let s = open(&c);
        let l = (s.list(b"5"), s.live_items());
        s.close();
        l
    };
    type Damage = fn(&std::path::Path, &str);
    let damages: Vec<(&str, Damage)> = vec![
        ("delete", |p, _| fs::remove_file(p).expect("rm")),
        ("truncate", |p, _| {
            let n = fs::metadata(p).expect("meta").len();
            OpenOptions::new()
                .write(true)
                .open(p)
                .expect("open")
                .set_len(n / 2)
                .expect("trunc");
        }),
        ("random", |p, n| {
            let len = fs::metadata(p).expect("meta").len() as usize;
            fs::write(p, rand_bytes(n.len() as u64, len, None)).expect("write");
        }),
    ];
    for (what, damage) in damages {
        for target in ["idx.hash", "idx.s", "both"] {
            let home = d.path().join(format!("{what}-{target}"));
            copy_dir(&orig, &home);
            let hb = StoreConfig {
                home: home.clone(),
                ..c.clone()
            }
            .bucket_dir(5);
            for (n, _) in files(&hb) {
                let hit = match target {
                    "both" => n.contains(".idx."),
                    t => n.ends_with(t),
                };
                if hit {
                    damage(&hb.join(&n), &n);
                }
            }
            let s = open(&StoreConfig {
                home: home.clone(),
                ..c.clone()
            });
            for (k, v, ver) in &expected {
                assert_eq!(&get(&s, k), v, "{what} {target}");
                let m = s.meta(k).expect("meta");
                // Tombstones survive only through an htree dump; a rebuild from hints drops them.
                if *ver > 0 {
                    assert_eq!(m.map(|m| m.ver), Some(*ver), "{what} {target}");
                }
            }
            assert_eq!(s.live_items(), listing.1, "{what} {target}");
            // Same live keys (tombstone lines disappear with a rebuild, item order may differ).
            assert_eq!(
                live_lines(&s.list(b"5")),
                live_lines(&listing.0),
                "{what} {target}"
            );
            s.close();
            // Rebuilt files are valid again: a reopen loads the dump.
            assert!(names(&hb).iter().any(|n| n.ends_with(".idx.hash")));
        }
    }
    assert!(bdir.exists());
}

fn live_lines(l: &str) -> Vec<String> {
    let mut v: Vec<String> = l
        .lines()
        .filter(|x| !x.contains(" -"))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn leftover_tmp_files_are_removed() {
    let d = tmp();
    let c = cfg(d.path(), 1);
    let s = open(&c);
    fill(&s, 3);
    s.close();
    fs::write(d.path().join("000.data.tmp"), b"junk").expect("w");
    fs::write(d.path().join("000.000.idx.s.tmp"), b"junk").expect("w");
    fs::write(d.path().join("foreign.tmp"), b"keep").expect("w");
    let s = open(&c);
    check(&s, 3);
    let n = names(d.path());
    assert!(!n.contains(&"000.data.tmp".to_string()));
    assert!(!n.contains(&"000.000.idx.s.tmp".to_string()));
    assert!(n.contains(&"foreign.tmp".to_string()));
}

// ---------------------------------------------------------------------------------- listings

#[test]
fn listings_16_buckets() {
    let d = tmp();
    let s = open(&cfg(d.path(), 16));
    assert!(set(&s, b"hello", 0, 0, b"world"));
    let mut want = String::new();
    for i in 0..16 {
        if i == 4 {
            want.push_str("4/ 15912 1\n");
        } else {
            want.push_str(&format!("{i:x}/ 0 0\n"));
        }
    }
    assert_eq!(s.list(b""), want);
    assert_eq!(s.list(b"4"), "4f9f2cab248bfa47 60024 1\n");
    assert_eq!(s.list(b"4f"), "4f9f2cab248bfa47 60024 1\n");
    assert_eq!(s.list(b"40"), "");
    assert_eq!(s.list(b"zz"), "");
    assert_eq!(s.list(b"4f9f2cab248bfa470"), "");
    assert_eq!(s.list(b"4f9f2cab248bfa47"), "4f9f2cab248bfa47 60024 1\n");
    // Tombstones are listed with their negative version but not counted.
    assert!(delete(&s, b"hello"));
    assert_eq!(s.list(b"4"), "4f9f2cab248bfa47 0 -2\n");
    assert!(s.list(b"").starts_with("0/ 0 0\n"));
    assert!(s.list(b"").contains("4/ 0 0\n"));
}

#[test]
fn listings_256_buckets() {
    let d = tmp();
    let s = open(&cfg(d.path(), 256));
    assert!(set(&s, b"foo", 0, 0, b"bar"));
    assert!(set(&s, b"test", 0, 0, b"aaa"));
    let mut want = String::new();
    for i in 0..16 {
        if i == 10 {
            want.push_str("a/ 37876 2\n");
        } else {
            want.push_str(&format!("{i:x}/ 0 0\n"));
        }
    }
    assert_eq!(s.list(b""), want);
    let l = s.list(b"a");
    let lines: Vec<&str> = l.lines().collect();
    assert_eq!(lines.len(), 16);
    assert_eq!(lines[9], "9/ 2875 1");
    assert_eq!(lines[15], "f/ 53241 1");
    assert_eq!(lines.iter().filter(|l| l.ends_with(" 0 0")).count(), 14);
    assert_eq!(s.list(b"a9"), "a9f37ed7f6a5c420 32317 1\n");
    assert_eq!(s.list(b"b0"), "");
    s.close();
    // Bucket 0xa9 lives in home/a/9.
    assert!(d.path().join("a/9/000.data").exists());
}

#[test]
fn listing_single_bucket_and_unserved() {
    let d = tmp();
    let s = open(&cfg(d.path(), 1));
    assert!(set(&s, b"hello", 0, 0, b"world"));
    assert_eq!(s.list(b"4"), "4f9f2cab248bfa47 60024 1\n");
    let root = s.list(b"");
    assert_eq!(root, "4f9f2cab248bfa47 60024 1\n");
    drop(s);

    let d = tmp();
    let mut c = cfg(d.path(), 16);
    c.served = (0..16).map(|b| b != 4).collect();
    let s = open(&c);
    assert!(matches!(
        s.set(b"hello", 0, 0, b"world", TS),
        Err(beansdb_store::StoreError::NotServed)
    ));
    assert_eq!(
        s.set(b"hello", 0, 0, b"w", TS).err().map(|e| e.to_string()),
        Some("bucket not served".into())
    );
    assert!(get(&s, b"hello").is_none());
    assert_eq!(s.list(b"4"), "");
    assert!(s.list(b"").contains("4/ 0 0\n"));
}

#[test]
fn live_items_exact() {
    let d = tmp();
    let s = open(&cfg(d.path(), 16));
    assert_eq!(s.live_items(), 0);
    for i in 0..500u32 {
        assert!(set(&s, format!("li{i}").as_bytes(), 0, 0, b"x"));
    }
    assert_eq!(s.live_items(), 500);
    for i in 0..500u32 {
        assert!(set(&s, format!("li{i}").as_bytes(), 0, 0, b"y"));
    }
    assert_eq!(s.live_items(), 500);
    for i in 0..123u32 {
        assert!(delete(&s, format!("li{i}").as_bytes()));
    }
    assert_eq!(s.live_items(), 377);
    assert!(set(&s, b"li0", 0, 0, b"back"));
    assert_eq!(s.live_items(), 378);
    s.close();
    let s = open(&cfg(d.path(), 16));
    assert_eq!(s.live_items(), 378);
}

// ---------------------------------------------------------------------------------- collisions

pub const COLL_A: &[u8] = b"processed_log_backup_text_20140912102821_1020_13301733";
pub const COLL_B: &[u8] = b"/subject/10460967/props";

#[test]
fn collision_pair_both_readable() {
    assert_eq!(beansdb_hash::keyhash(COLL_A), 0xc80f795945b78f6b);
    assert_eq!(beansdb_hash::keyhash(COLL_B), 0xc80f795945b78f6b);
    let d = tmp();
    let c = cfg(d.path(), 16);
    {
        let s = open(&c);
        assert!(set(&s, COLL_A, 0, 0, COLL_A));
        assert!(set(&s, COLL_B, 0, 0, COLL_B));
        // The second key inherits the first one's version (§6.5).
        assert_eq!(pos(&s, COLL_B), (2, 0, 256));
        assert_eq!(get(&s, COLL_A), Some((0, COLL_A.to_vec())));
        assert_eq!(get(&s, COLL_B), Some((0, COLL_B.to_vec())));
        assert_eq!(pos(&s, COLL_A), (1, 0, 0));
        assert_eq!(pos(&s, COLL_B), (2, 0, 256));
        // The pair counts once (one index entry).
        assert_eq!(s.live_items(), 1);
        // Once known, each key has its own version.
        assert!(set(&s, COLL_A, 0, 0, b"a2"));
        assert_eq!(pos(&s, COLL_A), (2, 0, 512));
        assert_eq!(get(&s, COLL_B), Some((0, COLL_B.to_vec())));
        assert!(delete(&s, COLL_B));
        assert_eq!(get(&s, COLL_B), None);
        assert_eq!(get(&s, COLL_A), Some((0, b"a2".to_vec())));
        s.close();
        let y = fs::read_to_string(c.bucket_dir(0xc).join("collision.yaml")).expect("yaml");
        assert!(y.contains("/subject/10460967/props"), "{y}");
        assert!(
            y.contains("processed_log_backup_text_20140912102821_1020_13301733"),
            "{y}"
        );
    }
    let s = open(&c);
    assert_eq!(get(&s, COLL_A), Some((0, b"a2".to_vec())));
    assert_eq!(get(&s, COLL_B), None);
    assert_eq!(pos(&s, COLL_B), (-3, 0, 768));
    assert!(set(&s, COLL_B, 0, 0, b"b again"));
    assert_eq!(pos(&s, COLL_B), (4, 1, 0));
    assert_eq!(get(&s, COLL_A), Some((0, b"a2".to_vec())));
}

#[test]
fn collision_pair_discovered_after_restart() {
    let d = tmp();
    let c = cfg(d.path(), 16);
    {
        let s = open(&c);
        assert!(set(&s, COLL_A, 0, 0, COLL_A));
        assert!(set(&s, COLL_B, 0, 0, COLL_B));
        s.close();
    }
    let s = open(&c);
    assert_eq!(get(&s, COLL_A), Some((0, COLL_A.to_vec())));
    assert_eq!(get(&s, COLL_B), Some((0, COLL_B.to_vec())));
    assert_eq!(pos(&s, COLL_A), (1, 0, 0));
    assert_eq!(pos(&s, COLL_B), (2, 0, 256));
}

// ---------------------------------------------------------------------------------- fixture

mod sha1 {
    //! Minimal SHA-1 for comparing fixture values.
    pub fn digest(data: &[u8]) -> String {
        let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
        let mut msg = data.to_vec();
        let bits = (data.len() as u64).wrapping_mul(8);
        msg.push(0x80);
        while msg.len() % 64 != 56 {
            msg.push(0);
        }
        msg.extend_from_slice(&bits.to_be_bytes());
        for block in msg.chunks_exact(64) {
            let mut w = [0u32; 80];
            for i in 0..16 {
                w[i] = u32::from_be_bytes([
                    block[4 * i],
                    block[4 * i + 1],
                    block[4 * i + 2],
                    block[4 * i + 3],
                ]);
            }
            for i in 16..80 {
                w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
            }
            let [mut a, mut b, mut c, mut d, mut e] = h;
            for (i, wi) in w.iter().enumerate() {
                let (f, k) = match i {
                    0..=19 => ((b & c) | (!b & d), 0x5A827999),
                    20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                    40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                    _ => (b ^ c ^ d, 0xCA62C1D6u32),
                };
                let t = a
                    .rotate_left(5)
                    .wrapping_add(f)
                    .wrapping_add(e)
                    .wrapping_add(k)
                    .wrapping_add(*wi);
                e = d;
                d = c;
                c = b.rotate_left(30);
                b = a;
                a = t;
            }
            for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
                *x = x.wrapping_add(y);
            }
        }
        h.iter().map(|x| format!("{x:08x}")).collect()
    }

    #[test]
    fn vectors() {
        assert_eq!(digest(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(digest(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            digest(&[b'a'; 1000]),
            "291e9a6c66994949b57ba5e650361e98fc36b1ba"
        );
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn fixture_dir() -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/gobeansdb-2.1-home");
    assert!(
        p.join("expected.json").is_file() && p.join("home").is_dir(),
        "gobeansdb fixture missing at {} (see the project README)",
        p.display()
    );
    p
}

fn check_fixture(s: &Store, exp: &serde_json::Value) {
    let keys = exp["keys"].as_object().expect("keys");
    assert_eq!(keys.len(), 598);
    for (k, e) in keys {
        let key = k.as_bytes();
        let got = s.get(key).expect("get");
        if e["live"].as_bool().expect("live") {
            let v = got.unwrap_or_else(|| panic!("{k} missing"));
            assert_eq!(v.flag as u64, e["flag"].as_u64().expect("flag"), "{k} flag");
            assert_eq!(
                v.data.len() as u64,
                e["len"].as_u64().expect("len"),
                "{k} len"
            );
            assert_eq!(
                sha1::digest(&v.data),
                e["sha1"].as_str().expect("sha1"),
                "{k} sha1"
            );
            if let Some(h) = e["value_hex"].as_str() {
                assert_eq!(hex(&v.data), h, "{k} value");
            }
        } else {
            assert!(got.is_none(), "{k} should be deleted");
        }
        if let Some(line) = e["meta"].as_str() {
            let m = s
                .meta(key)
                .expect("meta")
                .unwrap_or_else(|| panic!("{k} has no meta"));
            let mine = format!(
                "{} {} {} {} {} {} {}",
                m.ver, m.vhash, m.flag, m.len, m.ts, m.chunk, m.offset
            );
            assert_eq!(mine, line, "{k} meta");
        }
    }
    for (path, want) in exp["listings"].as_object().expect("listings") {
        let p = path.strip_prefix('@').expect("@path");
        assert_eq!(
            s.list(p.as_bytes()),
            want.as_str().expect("listing"),
            "listing {path}"
        );
    }
    for (kh, want) in exp["raw"].as_object().expect("raw") {
        let kh = u64::from_str_radix(kh, 16).expect("hex");
        let raw = s.raw(kh).expect("raw").expect("raw record");
        assert_eq!(hex(&raw), want.as_str().expect("hex"), "raw {kh:016x}");
    }
    assert_eq!(
        s.live_items(),
        exp["stats_total_items"].as_u64().expect("total")
    );
}

#[test]
fn gobeansdb_fixture_home() {
    let fx = fixture_dir();
    let exp: serde_json::Value =
        serde_json::from_slice(&fs::read(fx.join("expected.json")).expect("expected.json"))
            .expect("json");
    assert_eq!(exp["numbucket"], 16);
    let d = tmp();
    let home = d.path().join("home");
    copy_dir(&fx.join("home"), &home);
    let mut c = cfg(&home, 16);
    c.tree_height = 3;
    c.check_vhash = true;
    c.datafile_max = 1 << 20;
    let s = open(&c);
    check_fixture(&s, &exp);
    s.close();
    // Again after our own clean shutdown (our hints/htree dumps/collision.yaml).
    let s = open(&c);
    check_fixture(&s, &exp);
    s.close();
    // And rebuilt purely from data files.
    for b in 0..16 {
        let dir = c.bucket_dir(b);
        for (n, _) in files(&dir) {
            if n.contains(".idx.") {
                fs::remove_file(dir.join(n)).expect("rm");
            }
        }
    }
    let s = open(&c);
    for (k, e) in exp["keys"].as_object().expect("keys") {
        let live = e["live"].as_bool().expect("live");
        assert_eq!(s.get(k.as_bytes()).expect("get").is_some(), live, "{k}");
    }
    assert_eq!(s.live_items(), 537);
}

// ---------------------------------------------------------------------------------- hint splits

/// Small hint splits across sessions and a crash: every split is numbered contiguously and the
/// recovered index equals what was written.
#[test]
fn small_hint_splits_and_crash_after_clean_session() {
    let d = tmp();
    let home = d.path().join("home");
    let mut c = cfg(&home, 1);
    c.hint_split_cap = 7;
    c.datafile_max = 8192;
    {
        let s = open(&c);
        for i in 0..100u32 {
            assert!(set(
                &s,
                format!("s{i}").as_bytes(),
                0,
                0,
                format!("a{i}").as_bytes()
            ));
        }
        s.close();
    }
    let n = names(&home);
    // 100 records of 256 B at 8 KiB per chunk: chunks 0..3, splits of 7 keys.
    assert!(n.contains(&"000.004.idx.s".to_string()), "{n:?}");
    assert!(n.contains(&"003.000.idx.s".to_string()), "{n:?}");
    assert!(n.iter().any(|x| x.ends_with(".idx.hash")));
    let s = open(&c);
    for i in 0..100u32 {
        if i % 3 == 0 {
            assert!(delete(&s, format!("s{i}").as_bytes()));
        } else if i % 3 == 1 {
            assert!(set(
                &s,
                format!("s{i}").as_bytes(),
                0,
                0,
                format!("b{i}").as_bytes()
            ));
        }
    }
    drain(&s);
    let d2 = tmp();
    let copy = d2.path().join("copy");
    copy_dir(&home, &copy);
    let s2 = open(&StoreConfig {
        home: copy.clone(),
        ..c.clone()
    });
    for i in 0..100u32 {
        let want = match i % 3 {
            0 => None,
            1 => Some((0, format!("b{i}").into_bytes())),
            _ => Some((0, format!("a{i}").into_bytes())),
        };
        assert_eq!(get(&s2, format!("s{i}").as_bytes()), want, "s{i}");
    }
    assert_eq!(s2.live_items(), 66);
    s2.close();
    s.close();
    let s = open(&c);
    assert_eq!(s.live_items(), 66);
    assert_eq!(get(&s, b"s1"), Some((0, b"b1".to_vec())));
}

// ---------------------------------------------------------------------------------- write errors

/// A failing data file write: queued records stay readable, new writes are refused with
/// `write failed`, and everything resumes once the writer's retry succeeds.
#[test]
fn write_error_then_recovery() {
    let d = tmp();
    let mut c = cfg(d.path(), 1);
    c.datafile_max = 512;
    let s = open(&c);
    assert!(set(&s, b"a", 0, 0, b"1"));
    assert!(set(&s, b"b", 0, 0, b"2"));
    drain(&s);
    // The next chunk's file cannot be created.
    fs::create_dir(d.path().join("001.data")).expect("mkdir");
    assert!(set(&s, b"c", 0, 0, b"3"));
    assert_eq!(pos(&s, b"c"), (1, 1, 0));
    let t = std::time::Instant::now();
    let err = loop {
        match s.set(b"d", 0, 0, b"4", TS) {
            Err(e) => break e,
            Ok(_) => {
                assert!(
                    t.elapsed() < std::time::Duration::from_secs(5),
                    "no write error reported"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    };
    assert_eq!(err.to_string(), "write failed");
    // The queued record is served from memory.
    assert_eq!(get(&s, b"c"), Some((0, b"3".to_vec())));
    fs::remove_dir(d.path().join("001.data")).expect("rmdir");
    let t = std::time::Instant::now();
    loop {
        match s.set(b"e", 0, 0, b"5", TS) {
            Ok(o) => {
                assert!(done(o));
                break;
            }
            Err(_) => {
                assert!(
                    t.elapsed() < std::time::Duration::from_secs(5),
                    "writes did not resume"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
    drain(&s);
    s.close();
    let s = open(&c);
    for (k, v) in [
        (&b"a"[..], &b"1"[..]),
        (b"b", b"2"),
        (b"c", b"3"),
        (b"e", b"5"),
    ] {
        assert_eq!(get(&s, k), Some((0, v.to_vec())));
    }
}
