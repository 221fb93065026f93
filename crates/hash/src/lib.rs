//! Hash arithmetic shared by the node, the proxy and the tools.
//!
//! Everything here must be bit-identical with gobeansdb: the key hash decides the bucket and the
//! Merkle tree position, the value hash is compared across replicas by `beansctl sync`.

/// FNV-1a 32 with each byte **sign-extended** before the XOR (beansdb C and gobeansdb hash
/// `char`, which is signed). Equals standard FNV-1a for ASCII input only.
pub fn fnv1a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in data {
        h = (h ^ (b as i8 as i32 as u32)).wrapping_mul(0x0100_0193);
    }
    h
}

/// MurmurHash3_x86_32 with seed 0.
pub fn murmur3(data: &[u8]) -> u32 {
    let mut cursor = std::io::Cursor::new(data);
    // Reading from an in-memory cursor cannot fail.
    murmur3::murmur3_32(&mut cursor, 0).unwrap_or(0)
}

/// 64-bit key hash: `fnv1a << 32 | murmur3`.
pub fn keyhash(key: &[u8]) -> u64 {
    ((fnv1a(key) as u64) << 32) | murmur3(key) as u64
}

/// Nibble `i` (0 = most significant) of a key hash.
pub fn nibble(keyhash: u64, i: u32) -> u8 {
    ((keyhash >> (60 - 4 * i)) & 0xF) as u8
}

/// Number of hex digits that name a bucket: 0, 1 or 2 for 1, 16 or 256 buckets.
pub fn bucket_depth(numbucket: usize) -> Option<u32> {
    match numbucket {
        1 => Some(0),
        16 => Some(1),
        256 => Some(2),
        _ => None,
    }
}

/// Bucket id of a key hash for a tree of `depth` bucket nibbles.
pub fn bucket_of_hash(keyhash: u64, depth: u32) -> usize {
    if depth == 0 {
        0
    } else {
        (keyhash >> (64 - 4 * depth)) as usize
    }
}

/// Bucket id of a key. Only the FNV half matters, so this avoids the murmur pass.
pub fn bucket_of_key(key: &[u8], depth: u32) -> usize {
    bucket_of_hash((fnv1a(key) as u64) << 32, depth)
}

/// 16-bit value hash over the uncompressed value.
pub fn vhash(v: &[u8]) -> u16 {
    let n = v.len();
    let mut h = (n as u32).wrapping_mul(97);
    if n <= 1024 {
        h = h.wrapping_add(fnv1a(v));
    } else {
        h = h.wrapping_add(fnv1a(&v[..512]));
        h = h.wrapping_mul(97);
        h = h.wrapping_add(fnv1a(&v[n - 512..]));
    }
    (h & 0xFFFF) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsigned_fnv(data: &[u8]) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        for &b in data {
            h = (h ^ b as u32).wrapping_mul(0x0100_0193);
        }
        h
    }

    /// (key, fnv signed, fnv unsigned, murmur3, bucket/16, bucket/256)
    type KeyVector = (&'static [u8], u32, u32, u32, usize, usize);

    #[test]
    fn key_hash_vectors() {
        let cases: &[KeyVector] = &[
            (b"test", 0xafd071e5, 0xafd071e5, 0xba6bd213, 0xa, 0xaf),
            (b"hello", 0x4f9f2cab, 0x4f9f2cab, 0x248bfa47, 0x4, 0x4f),
            (b"key1", 0x374a6a67, 0x374a6a67, 0x9b970125, 0x3, 0x37),
            (b"foo", 0xa9f37ed7, 0xa9f37ed7, 0xf6a5c420, 0xa, 0xa9),
            (b"", 0x811c9dc5, 0x811c9dc5, 0, 0x8, 0x81),
            (
                "你好".as_bytes(),
                0x2ada87a3,
                0x86938da3,
                0x141baa24,
                0x2,
                0x2a,
            ),
            (&[0xff], 0xf9f3a14e, 0x7a0b824e, 0xfd6cf10d, 0xf, 0xf9),
            (
                b"processed_log_backup_text_20140912102821_1020_13301733",
                0xc80f7959,
                0xc80f7959,
                0x45b78f6b,
                0xc,
                0xc8,
            ),
            (
                b"/subject/10460967/props",
                0xc80f7959,
                0xc80f7959,
                0x45b78f6b,
                0xc,
                0xc8,
            ),
            (
                b"/ark/p/385242854/",
                0xc67f054e,
                0xc67f054e,
                0x00800004,
                0xc,
                0xc6,
            ),
            (
                b"/doumail/849134123/source",
                0xc0ca200b,
                0xc0ca200b,
                0x15800003,
                0xc,
                0xc0,
            ),
        ];
        for &(key, f, uf, m, b16, b256) in cases {
            assert_eq!(fnv1a(key), f, "fnv1a {key:?}");
            assert_eq!(unsigned_fnv(key), uf, "unsigned fnv {key:?}");
            assert_eq!(murmur3(key), m, "murmur3 {key:?}");
            let kh = keyhash(key);
            assert_eq!(kh, ((f as u64) << 32) | m as u64);
            assert_eq!(bucket_of_hash(kh, 1), b16);
            assert_eq!(bucket_of_hash(kh, 2), b256);
            assert_eq!(bucket_of_key(key, 1), b16);
            assert_eq!(bucket_of_key(key, 2), b256);
            assert_eq!(bucket_of_hash(kh, 0), 0);
        }
        assert_eq!(keyhash(b"hello"), 0x4f9f2cab248bfa47);
        assert_eq!(keyhash(b"/subject/10460967/props"), 14415874356564954987);
    }

    #[test]
    fn nibbles() {
        let kh = 0x4f9f2cab248bfa47u64;
        assert_eq!(nibble(kh, 0), 4);
        assert_eq!(nibble(kh, 1), 0xf);
        assert_eq!(nibble(kh, 15), 7);
    }

    #[test]
    fn value_hash_vectors() {
        let b2000: Vec<u8> = (0..2000u32).map(|i| (i % 256) as u8).collect();
        let a1024 = vec![b'a'; 1024];
        let a1025 = vec![b'a'; 1025];
        let cases: &[(&[u8], u16)] = &[
            (b"aaa", 54405),
            (b"bar", 32317),
            (b"", 40389),
            (b"world", 60024),
            (b"value", 54703),
            (b"10", 11014),
            (&a1024, 13765),
            (&a1025, 25131),
            ("你好".as_bytes(), 35305),
            (&b2000, 7482),
        ];
        for &(v, want) in cases {
            assert_eq!(vhash(v), want, "vhash of {} bytes", v.len());
        }
        // 32-bit sum before truncation for "aaa".
        assert_eq!(
            3u32.wrapping_mul(97).wrapping_add(fnv1a(b"aaa")),
            0x3445d485
        );
    }

    #[test]
    fn unsigned_fnv_gives_other_vhash() {
        let v = "你好".as_bytes();
        let h = (6u32 * 97).wrapping_add(unsigned_fnv(v)) & 0xFFFF;
        assert_eq!(h, 36841);
    }

    #[test]
    fn depth() {
        assert_eq!(bucket_depth(1), Some(0));
        assert_eq!(bucket_depth(16), Some(1));
        assert_eq!(bucket_depth(256), Some(2));
        assert_eq!(bucket_depth(15), None);
    }
}
