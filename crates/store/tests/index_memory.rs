//! node.md §5.5: with 1 M keys in one bucket (16 buckets, height 3) the index costs at most
//! 24 bytes per key, leaf arrays and per-leaf state included.

use beansdb_store::htree::{HTree, ItemMeta};

#[test]
fn one_million_keys_fit_in_24_bytes_each() {
    let bucket = 0xa;
    let mut tree = HTree::new(1, 3, bucket).expect("valid shape");
    let mut n = 0u64;
    let mut i = 0u64;
    while n < 1_000_000 {
        // Synthesise keyhashes of bucket `a` directly: the index only sees hashes.
        i += 1;
        let kh = (0xa << 60) | (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 4);
        tree.set(
            kh,
            ItemMeta {
                chunk: 0,
                offset: (n as u32 & 0xffff) << 8,
                ver: 1,
                vhash: n as u16,
            },
        );
        n += 1;
    }
    assert_eq!(tree.live_count(), 1_000_000);
    let per_key = tree.memory_bytes() as f64 / n as f64;
    assert!(per_key <= 24.0, "index uses {per_key:.2} bytes per key");
    // The item itself is K + 11 = 18 bytes; anything far below that means we measured wrong.
    assert!(per_key >= 18.0, "index accounting too small: {per_key:.2}");
}
