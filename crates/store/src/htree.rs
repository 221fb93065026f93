//! The per-bucket Merkle index ("htree"): a 16-ary tree whose leaves hold packed index items.
//!
//! Layout, item encoding and node hash/count arithmetic are bit-identical with gobeansdb
//! (node.md §5), so `@` listings compare across a mixed cluster and `.idx.hash` dumps load in
//! either server. Inner node values are computed on demand from the leaves (leaves cache their
//! own count/hash behind a dirty flag), which keeps the write path O(leaf size).

use std::fmt::Write as _;

/// Bytes of keyhash kept per item, indexed by `depth + height - 1`.
const KHASH_LENS: [usize; 8] = [8, 8, 7, 7, 6, 6, 5, 5];

/// Where a key's newest record lives and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemMeta {
    pub chunk: u32,
    pub offset: u32,
    pub ver: i32,
    pub vhash: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum HTreeError {
    #[error(
        "tree height {height} invalid for depth {depth} (need 2 <= height and depth + height <= 8)"
    )]
    BadHeight { depth: u32, height: u32 },
    #[error("htree dump has {actual} bytes, expected {expected}")]
    BadSize { expected: usize, actual: usize },
    #[error("htree dump leaf {leaf} is inconsistent: {what}")]
    BadLeaf { leaf: usize, what: &'static str },
}

#[derive(Default)]
struct Leaf {
    items: Vec<u8>,
    count: u32,
    hash: u16,
    dirty: bool,
}

/// Count and hash of a tree node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeSum {
    pub count: u32,
    pub hash: u16,
}

pub struct HTree {
    depth: u32,
    height: u32,
    bucket: u64,
    khash_len: usize,
    leaves: Vec<Leaf>,
}

impl HTree {
    /// A tree for bucket `bucket` of a store with `depth` bucket nibbles.
    pub fn new(depth: u32, height: u32, bucket: usize) -> Result<Self, HTreeError> {
        if height < 2 || depth + height > 8 {
            return Err(HTreeError::BadHeight { depth, height });
        }
        let n = 1usize << (4 * (height - 1));
        let mut leaves = Vec::with_capacity(n);
        leaves.resize_with(n, Leaf::default);
        Ok(HTree {
            depth,
            height,
            bucket: bucket as u64,
            khash_len: KHASH_LENS[(depth + height - 1) as usize],
            leaves,
        })
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn num_leaves(&self) -> usize {
        self.leaves.len()
    }

    /// Size of one packed item.
    pub fn item_size(&self) -> usize {
        self.khash_len + 11
    }

    fn leaf_index(&self, keyhash: u64) -> usize {
        let bits = 4 * (self.height - 1);
        let shift = 64 - 4 * self.depth - bits;
        ((keyhash >> shift) & ((1u64 << bits) - 1)) as usize
    }

    fn find(&self, leaf: &Leaf, keyhash: u64) -> Option<usize> {
        let k = self.khash_len;
        let size = k + 11;
        // Compare the stored K bytes as one masked u64 load (items are >= 16 bytes long).
        let mask = if k == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * k)) - 1
        };
        let want = keyhash & mask;
        leaf.items
            .chunks_exact(size)
            .position(|it| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&it[..8]);
                u64::from_le_bytes(b) & mask == want
            })
            .map(|i| i * size)
    }

    fn decode_item(&self, it: &[u8]) -> ItemMeta {
        let k = self.khash_len;
        let ver = i32::from_le_bytes([it[k], it[k + 1], it[k + 2], it[k + 3]]);
        let vhash = u16::from_le_bytes([it[k + 4], it[k + 5]]);
        let off = u32::from_le_bytes([it[k + 6], it[k + 7], it[k + 8], 0]) << 8;
        let chunk = u16::from_le_bytes([it[k + 9], it[k + 10]]) as u32;
        ItemMeta {
            chunk,
            offset: off,
            ver,
            vhash,
        }
    }

    fn encode_meta(&self, out: &mut [u8], m: &ItemMeta) {
        let k = self.khash_len;
        out[k..k + 4].copy_from_slice(&m.ver.to_le_bytes());
        out[k + 4..k + 6].copy_from_slice(&m.vhash.to_le_bytes());
        out[k + 6..k + 9].copy_from_slice(&(m.offset >> 8).to_le_bytes()[..3]);
        out[k + 9..k + 11].copy_from_slice(&(m.chunk as u16).to_le_bytes());
    }

    /// Full keyhash of a stored item in leaf `leaf`: the dropped top bytes come from the path.
    fn full_keyhash(&self, leaf: usize, stored: &[u8]) -> u64 {
        let k = self.khash_len;
        let mut b = [0u8; 8];
        b[..k].copy_from_slice(&stored[..k]);
        let low = u64::from_le_bytes(b);
        if k == 8 {
            return low;
        }
        let mask = (1u64 << (8 * k)) - 1;
        let path_bits = 4 * (self.depth + self.height - 1);
        let path = (self.bucket << (4 * (self.height - 1))) | leaf as u64;
        let top = path << (64 - path_bits);
        (low & mask) | (top & !mask)
    }

    pub fn get(&self, keyhash: u64) -> Option<ItemMeta> {
        let leaf = &self.leaves[self.leaf_index(keyhash)];
        self.find(leaf, keyhash)
            .map(|p| self.decode_item(&leaf.items[p..p + self.item_size()]))
    }

    /// Insert or update in place. Returns the previous entry.
    pub fn set(&mut self, keyhash: u64, meta: ItemMeta) -> Option<ItemMeta> {
        let li = self.leaf_index(keyhash);
        let size = self.item_size();
        let k = self.khash_len;
        let pos = self.find(&self.leaves[li], keyhash);
        let mut item = [0u8; 19];
        let item = &mut item[..size];
        item[..k].copy_from_slice(&keyhash.to_le_bytes()[..k]);
        self.encode_meta(item, &meta);
        let old = match pos {
            Some(p) => {
                let old = self.decode_item(&self.leaves[li].items[p..p + size]);
                self.leaves[li].items[p..p + size].copy_from_slice(item);
                Some(old)
            }
            None => {
                let leaf = &mut self.leaves[li];
                // Grow by ~1/8 instead of doubling: leaf arrays are the bulk of index memory.
                if leaf.items.len() == leaf.items.capacity() {
                    let extra = (leaf.items.len() / 8).max(size * 2);
                    leaf.items.reserve_exact(extra);
                }
                leaf.items.extend_from_slice(item);
                None
            }
        };
        self.leaves[li].dirty = true;
        old
    }

    /// Remove an entry, closing the gap so item order is preserved.
    pub fn remove(&mut self, keyhash: u64) -> Option<ItemMeta> {
        let li = self.leaf_index(keyhash);
        let size = self.item_size();
        let p = self.find(&self.leaves[li], keyhash)?;
        let old = self.decode_item(&self.leaves[li].items[p..p + size]);
        let leaf = &mut self.leaves[li];
        leaf.items.drain(p..p + size);
        leaf.dirty = true;
        Some(old)
    }

    /// Calls `f(keyhash, meta)` for every item, leaves in order.
    pub fn for_each(&self, mut f: impl FnMut(u64, ItemMeta)) {
        let size = self.item_size();
        for (li, leaf) in self.leaves.iter().enumerate() {
            for it in leaf.items.chunks_exact(size) {
                f(self.full_keyhash(li, it), self.decode_item(it));
            }
        }
    }

    /// Rewrites entries in place (used when GC moves records).
    pub fn update_all(&mut self, mut f: impl FnMut(u64, &ItemMeta) -> Option<ItemMeta>) {
        let size = self.item_size();
        for li in 0..self.leaves.len() {
            let mut changed = false;
            let n = self.leaves[li].items.len() / size;
            for i in 0..n {
                let it = &self.leaves[li].items[i * size..(i + 1) * size];
                let kh = self.full_keyhash(li, it);
                let m = self.decode_item(it);
                if let Some(new) = f(kh, &m) {
                    let mut buf = [0u8; 19];
                    buf[..size].copy_from_slice(it);
                    self.encode_meta(&mut buf[..size], &new);
                    self.leaves[li].items[i * size..(i + 1) * size].copy_from_slice(&buf[..size]);
                    changed = true;
                }
            }
            if changed {
                self.leaves[li].dirty = true;
            }
        }
    }

    fn leaf_sum(&self, li: usize) -> NodeSum {
        let leaf = &self.leaves[li];
        if !leaf.dirty {
            return NodeSum {
                count: leaf.count,
                hash: leaf.hash,
            };
        }
        compute_leaf_sum(self, li)
    }

    /// Refreshes cached leaf sums (cheap when nothing changed).
    pub fn refresh(&mut self) {
        for li in 0..self.leaves.len() {
            if self.leaves[li].dirty {
                let s = compute_leaf_sum(self, li);
                let leaf = &mut self.leaves[li];
                leaf.count = s.count;
                leaf.hash = s.hash;
                leaf.dirty = false;
            }
        }
    }

    /// Count/hash of the node at `level` (0 = root) with index `idx` within its level.
    pub fn node_sum(&self, level: u32, idx: usize) -> NodeSum {
        if level == self.height - 1 {
            return self.leaf_sum(idx);
        }
        let children: Vec<NodeSum> = (0..16)
            .map(|i| self.node_sum(level + 1, idx * 16 + i))
            .collect();
        inner_sum(&children)
    }

    pub fn root_sum(&self) -> NodeSum {
        self.node_sum(0, 0)
    }

    /// Number of live items (ver > 0).
    pub fn live_count(&self) -> u64 {
        (0..self.leaves.len())
            .map(|li| self.leaf_sum(li).count as u64)
            .sum()
    }

    /// Bytes held by leaf arrays plus fixed per-leaf state.
    pub fn memory_bytes(&self) -> usize {
        self.leaves
            .iter()
            .map(|l| l.items.capacity() + std::mem::size_of::<Leaf>())
            .sum()
    }

    /// Listing of a bucket-tree node named by the hex `path` (which includes the bucket digits).
    /// `path` must already be validated as hex of length ≥ depth and ≤ 16.
    pub fn list(&self, path: &[u8]) -> String {
        let nibbles: Vec<u8> = path.iter().filter_map(|&c| hex_val(c)).collect();
        let rel = &nibbles[self.depth as usize..];
        let level = (rel.len() as u32).min(self.height - 1);
        let mut idx = 0usize;
        for &n in &rel[..level as usize] {
            idx = idx * 16 + n as usize;
        }
        let mut out = String::new();
        let sum = self.node_sum(level, idx);
        if level == self.height - 1 || sum.count < 256 {
            // List every item of the subtree whose keyhash starts with `path`.
            let span = 1usize << (4 * (self.height - 1 - level));
            let first = idx * span;
            let plen = nibbles.len() as u32;
            let mut prefix = 0u64;
            for &n in &nibbles {
                prefix = (prefix << 4) | n as u64;
            }
            let size = self.item_size();
            for li in first..first + span {
                for it in self.leaves[li].items.chunks_exact(size) {
                    let kh = self.full_keyhash(li, it);
                    if plen > 0 && kh >> (64 - 4 * plen) != prefix {
                        continue;
                    }
                    let m = self.decode_item(it);
                    let _ = writeln!(out, "{:016x} {} {}", kh, m.vhash, m.ver);
                }
            }
        } else {
            for i in 0..16 {
                let s = self.node_sum(level + 1, idx * 16 + i);
                let _ = writeln!(out, "{:x}/ {} {}", i, s.hash, s.count);
            }
        }
        out
    }

    /// `.idx.hash` bytes: per leaf `count u32 | hash u16`, then per leaf `len u32 | items`.
    pub fn dump(&mut self) -> Vec<u8> {
        self.refresh();
        let total: usize = self.leaves.iter().map(|l| 10 + l.items.len()).sum();
        let mut out = Vec::with_capacity(total);
        for l in &self.leaves {
            out.extend_from_slice(&l.count.to_le_bytes());
            out.extend_from_slice(&l.hash.to_le_bytes());
        }
        for l in &self.leaves {
            out.extend_from_slice(&(l.items.len() as u32).to_le_bytes());
            out.extend_from_slice(&l.items);
        }
        out
    }

    /// Loads a `.idx.hash` dump, validating size, lengths and every leaf's count and hash.
    pub fn load(&mut self, data: &[u8]) -> Result<(), HTreeError> {
        let n = self.leaves.len();
        let size = self.item_size();
        if data.len() < 10 * n {
            return Err(HTreeError::BadSize {
                expected: 10 * n,
                actual: data.len(),
            });
        }
        let mut leaves: Vec<Leaf> = Vec::with_capacity(n);
        let mut p = 6 * n;
        for li in 0..n {
            let len_bytes = data.get(p..p + 4).ok_or(HTreeError::BadSize {
                expected: p + 4,
                actual: data.len(),
            })?;
            let len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]])
                as usize;
            p += 4;
            if !len.is_multiple_of(size) {
                return Err(HTreeError::BadLeaf {
                    leaf: li,
                    what: "length not a multiple of the item size",
                });
            }
            let items = data.get(p..p + len).ok_or(HTreeError::BadSize {
                expected: p + len,
                actual: data.len(),
            })?;
            p += len;
            let mut v = Vec::with_capacity(len);
            v.extend_from_slice(items);
            let c = &data[6 * li..6 * li + 6];
            leaves.push(Leaf {
                items: v,
                count: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                hash: u16::from_le_bytes([c[4], c[5]]),
                dirty: false,
            });
        }
        if p != data.len() {
            return Err(HTreeError::BadSize {
                expected: p,
                actual: data.len(),
            });
        }
        let old = std::mem::replace(&mut self.leaves, leaves);
        for li in 0..n {
            let stored = NodeSum {
                count: self.leaves[li].count,
                hash: self.leaves[li].hash,
            };
            if compute_leaf_sum(self, li) != stored {
                self.leaves = old;
                return Err(HTreeError::BadLeaf {
                    leaf: li,
                    what: "count/hash mismatch",
                });
            }
        }
        Ok(())
    }
}

fn compute_leaf_sum(t: &HTree, li: usize) -> NodeSum {
    let size = t.item_size();
    let mut s = NodeSum::default();
    for it in t.leaves[li].items.chunks_exact(size) {
        let m = t.decode_item(it);
        if m.ver > 0 {
            let kh = t.full_keyhash(li, it);
            s.count += 1;
            s.hash = s.hash.wrapping_add(m.vhash.wrapping_mul((kh >> 32) as u16));
        }
    }
    s
}

/// Inner node of a bucket tree: plain sum of child hashes up to 256 keys, ×97 fold above.
pub fn inner_sum(children: &[NodeSum]) -> NodeSum {
    let count: u32 = children.iter().map(|c| c.count).sum();
    let hash = if count > 256 {
        children
            .iter()
            .fold(0u16, |h, c| h.wrapping_mul(97).wrapping_add(c.hash))
    } else {
        children.iter().fold(0u16, |h, c| h.wrapping_add(c.hash))
    };
    NodeSum { count, hash }
}

/// Store-level node above bucket roots: always the ×97 fold.
pub fn store_sum(children: &[NodeSum]) -> NodeSum {
    NodeSum {
        count: children.iter().map(|c| c.count).sum(),
        hash: children
            .iter()
            .fold(0u16, |h, c| h.wrapping_mul(97).wrapping_add(c.hash)),
    }
}

pub fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use beansdb_hash::{keyhash, vhash};

    fn meta(chunk: u32, offset: u32, ver: i32, v: &[u8]) -> ItemMeta {
        ItemMeta {
            chunk,
            offset,
            ver,
            vhash: vhash(v),
        }
    }

    #[test]
    fn leaf_item_example() {
        // 16 buckets, h 3, K 7: hello ver 1 vhash 60024 chunk 2 offset 0x1200.
        let mut t = HTree::new(1, 3, 4).unwrap();
        let kh = keyhash(b"hello");
        t.set(
            kh,
            ItemMeta {
                chunk: 2,
                offset: 0x1200,
                ver: 1,
                vhash: 60024,
            },
        );
        assert_eq!(t.leaf_index(kh), 0xf9);
        assert_eq!(
            t.leaves[0xf9].items,
            [
                0x47, 0xfa, 0x8b, 0x24, 0xab, 0x2c, 0x9f, 0x01, 0, 0, 0, 0x78, 0xea, 0x12, 0, 0,
                0x02, 0
            ]
        );
        let mut seen = vec![];
        t.for_each(|k, m| seen.push((k, m)));
        assert_eq!(
            seen,
            vec![(
                kh,
                ItemMeta {
                    chunk: 2,
                    offset: 0x1200,
                    ver: 1,
                    vhash: 60024
                }
            )]
        );
    }

    #[test]
    fn keyhash_reconstruction_all_shapes() {
        let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("key-{i}").into_bytes()).collect();
        for (depth, nb) in [(0u32, 1usize), (1, 16), (2, 256)] {
            // Larger heights only change the item width further (K >= 5), covered up to 6
            // nibbles; h 7/8 trees need gigabytes of fixed leaf memory.
            for h in 2..=(6 - depth).max(2) {
                let mut trees: std::collections::HashMap<usize, HTree> = Default::default();
                for k in &keys {
                    let kh = keyhash(k);
                    let b = beansdb_hash::bucket_of_hash(kh, depth);
                    let t = trees
                        .entry(b)
                        .or_insert_with(|| HTree::new(depth, h, b).unwrap());
                    t.remove(kh);
                    t.set(kh, meta(0, 256, 1, b"x"));
                    let mut found = false;
                    t.for_each(|k2, _| found |= k2 == kh);
                    assert!(found, "nb {nb} h {h}");
                    assert!(t.get(kh).is_some());
                }
            }
        }
        assert!(HTree::new(1, 8, 0).is_err());
        assert!(HTree::new(1, 1, 0).is_err());
        assert!(HTree::new(2, 7, 0).is_err());
    }

    #[test]
    fn listing_examples_16() {
        let mut t = HTree::new(1, 3, 4).unwrap();
        t.set(keyhash(b"hello"), meta(0, 0, 1, b"world"));
        assert_eq!(t.list(b"4"), "4f9f2cab248bfa47 60024 1\n");
        assert_eq!(t.list(b"4f"), "4f9f2cab248bfa47 60024 1\n");
        assert_eq!(t.list(b"40"), "");
        assert_eq!(
            t.root_sum(),
            NodeSum {
                count: 1,
                hash: 15912
            }
        );
    }

    #[test]
    fn listing_examples_256() {
        let mut a9 = HTree::new(2, 3, 0xa9).unwrap();
        a9.set(keyhash(b"foo"), meta(0, 0, 1, b"bar"));
        let mut af = HTree::new(2, 3, 0xaf).unwrap();
        af.set(keyhash(b"test"), meta(0, 0, 1, b"aaa"));
        assert_eq!(a9.list(b"a9"), "a9f37ed7f6a5c420 32317 1\n");
        assert_eq!(a9.root_sum().hash, 2875);
        assert_eq!(af.root_sum().hash, 53241);
        let mut kids = vec![NodeSum::default(); 16];
        kids[9] = a9.root_sum();
        kids[0xf] = af.root_sum();
        assert_eq!(
            store_sum(&kids),
            NodeSum {
                count: 2,
                hash: 37876
            }
        );
    }

    #[test]
    fn tombstones_listed_not_counted() {
        let mut t = HTree::new(1, 3, 4).unwrap();
        t.set(
            keyhash(b"hello"),
            ItemMeta {
                chunk: 0,
                offset: 0,
                ver: -2,
                vhash: 0,
            },
        );
        assert_eq!(t.root_sum(), NodeSum::default());
        assert_eq!(t.list(b"4"), "4f9f2cab248bfa47 0 -2\n");
    }

    #[test]
    fn inner_fold_threshold() {
        let mut kids = vec![NodeSum { count: 16, hash: 3 }; 16];
        assert_eq!(
            inner_sum(&kids),
            NodeSum {
                count: 256,
                hash: 48
            }
        );
        kids[0].count = 17;
        let folded = kids
            .iter()
            .fold(0u16, |h, c| h.wrapping_mul(97).wrapping_add(c.hash));
        assert_eq!(
            inner_sum(&kids),
            NodeSum {
                count: 257,
                hash: folded
            }
        );
    }

    /// Bucket with many keys: a node with count 255 lists keys, 256 lists children.
    #[test]
    fn list_keys_below_256() {
        let mut t = HTree::new(1, 3, 0).unwrap();
        let mut n = 0;
        let mut i = 0;
        while n < 255 {
            let k = format!("k{i}");
            i += 1;
            if beansdb_hash::bucket_of_key(k.as_bytes(), 1) == 0 {
                t.set(keyhash(k.as_bytes()), meta(0, 0, 1, k.as_bytes()));
                n += 1;
            }
        }
        assert_eq!(t.list(b"0").lines().count(), 255);
        loop {
            let k = format!("k{i}");
            i += 1;
            if beansdb_hash::bucket_of_key(k.as_bytes(), 1) == 0 {
                t.set(keyhash(k.as_bytes()), meta(0, 0, 1, k.as_bytes()));
                break;
            }
        }
        let l = t.list(b"0");
        assert_eq!(l.lines().count(), 16);
        assert!(l.lines().all(|x| x.as_bytes()[1] == b'/'));
        // plain sum at exactly 256
        let s = t.root_sum();
        let kids: Vec<NodeSum> = (0..16).map(|c| t.node_sum(1, c)).collect();
        assert_eq!(
            s.hash,
            kids.iter().fold(0u16, |h, c| h.wrapping_add(c.hash))
        );
    }

    #[test]
    fn dump_example_and_load() {
        // §4.5: 16 buckets, h 2, bucket 4 holding only hello=world at chunk 0 offset 0.
        let mut t = HTree::new(1, 2, 4).unwrap();
        t.set(keyhash(b"hello"), meta(0, 0, 1, b"world"));
        let d = t.dump();
        assert_eq!(d.len(), 178);
        assert_eq!(&d[90..96], &[1, 0, 0, 0, 0x28, 0x3e]);
        assert!(d[..90].iter().all(|&b| b == 0));
        assert!(d[96..156].iter().all(|&b| b == 0));
        assert_eq!(
            &d[156..],
            &[
                0x12, 0, 0, 0, 0x47, 0xfa, 0x8b, 0x24, 0xab, 0x2c, 0x9f, 0x01, 0, 0, 0, 0x78, 0xea,
                0, 0, 0, 0, 0
            ]
        );
        let mut t2 = HTree::new(1, 2, 4).unwrap();
        t2.load(&d).unwrap();
        assert_eq!(t2.get(keyhash(b"hello")), t.get(keyhash(b"hello")));
        // wrong size, bad len, bad count/hash
        assert!(HTree::new(1, 2, 4).unwrap().load(&d[..177]).is_err());
        let mut bad = d.clone();
        bad[156] = 0x11;
        assert!(HTree::new(1, 2, 4).unwrap().load(&bad).is_err());
        let mut bad = d.clone();
        bad[94] ^= 1;
        assert!(HTree::new(1, 2, 4).unwrap().load(&bad).is_err());
    }

    #[test]
    fn remove_keeps_order() {
        let mut t = HTree::new(0, 2, 0).unwrap();
        let khs: Vec<u64> = (0..50)
            .map(|i| keyhash(format!("x{i}").as_bytes()))
            .collect();
        for (i, &k) in khs.iter().enumerate() {
            t.set(
                k,
                ItemMeta {
                    chunk: 0,
                    offset: (i as u32) << 8,
                    ver: 1,
                    vhash: 1,
                },
            );
        }
        t.remove(khs[10]);
        assert!(t.get(khs[10]).is_none());
        assert_eq!(t.live_count(), 49);
        let mut offs = vec![];
        t.for_each(|k, m| {
            if k >> 60 == khs[11] >> 60 {
                offs.push(m.offset)
            }
        });
        let mut sorted = offs.clone();
        sorted.sort();
        assert_eq!(offs, sorted);
    }
}
