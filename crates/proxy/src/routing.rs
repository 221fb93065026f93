//! Key → bucket → replicas (proxy.md §3.3–§3.5).
//!
//! The [`Table`] is built once per route and never changes with host health: health only
//! filters and reorders a key's replicas at request time ([`read_order`]).

use beansdb_route::Route;

/// Standard 64-bit FNV-1a over unsigned bytes (rendezvous weights, §3.4).
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// MurmurHash3's 64-bit finalizer.
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// A retrieval key the proxy answers itself (§2.5), with the node's replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// `?` alone: `SERVER_ERROR bad key ?` (single get), a miss in a multi-get.
    BadKeyQ,
    /// `??` alone: a miss.
    Miss,
    /// `@` followed by non-hex bucket digits: a zero-length value.
    EmptyValue,
    /// `@@` with missing or non-hex digits: `SERVER_ERROR bad command line format`.
    BadFormat,
}

/// Where a key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRoute {
    Bucket(usize),
    Local(Local),
}

fn hex_value(digits: &[u8]) -> Option<usize> {
    let mut v = 0usize;
    for &c in digits {
        let d = (c as char).to_digit(16)?;
        v = v * 16 + d as usize;
    }
    Some(v)
}

/// The key that chooses replicas: `?key`/`??key` use `key`, everything else the whole key.
pub fn routing_key(key: &[u8]) -> &[u8] {
    if key.first() == Some(&b'@') {
        return key;
    }
    key.strip_prefix(b"??")
        .or_else(|| key.strip_prefix(b"?"))
        .unwrap_or(key)
}

/// A route prepared for lookups. Hosts are indices into `addrs`.
#[derive(Debug, Clone)]
pub struct Table {
    pub numbucket: usize,
    /// Hex digits of a bucket id (0, 1, 2).
    pub depth: u32,
    pub n: usize,
    pub addrs: Vec<String>,
    addr_hash: Vec<u64>,
    /// Per bucket, its mains in file order.
    mains: Vec<Vec<usize>>,
    backups: Vec<usize>,
}

impl Table {
    /// Builds the table of a route that passed `validate_for_proxy(n)`.
    pub fn new(route: &Route, n: usize) -> Table {
        let mut addrs: Vec<String> = Vec::new();
        let index_of = |a: &str, addrs: &mut Vec<String>| -> usize {
            match addrs.iter().position(|x| x == a) {
                Some(i) => i,
                None => {
                    addrs.push(a.to_string());
                    addrs.len() - 1
                }
            }
        };
        let mut mains = vec![Vec::new(); route.numbucket];
        for server in &route.main {
            let i = index_of(&server.addr, &mut addrs);
            for &b in &server.buckets {
                if let Some(list) = mains.get_mut(b) {
                    if !list.contains(&i) {
                        list.push(i);
                    }
                }
            }
        }
        let backups = route
            .backup
            .iter()
            .map(|a| index_of(a, &mut addrs))
            .collect();
        let addr_hash = addrs.iter().map(|a| fnv1a64(a.as_bytes())).collect();
        Table {
            numbucket: route.numbucket,
            depth: route.depth(),
            n,
            addrs,
            addr_hash,
            mains,
            backups,
        }
    }

    /// §3.3 for any key, including the special forms.
    pub fn route_key(&self, key: &[u8]) -> KeyRoute {
        let d = self.depth as usize;
        if key == b"?" {
            return KeyRoute::Local(Local::BadKeyQ);
        }
        if key == b"??" {
            return KeyRoute::Local(Local::Miss);
        }
        if d > 0 {
            if let Some(rest) = key.strip_prefix(b"@@") {
                return match rest.get(..d).and_then(hex_value) {
                    Some(b) => KeyRoute::Bucket(b),
                    None => KeyRoute::Local(Local::BadFormat),
                };
            }
            if let Some(rest) = key.strip_prefix(b"@") {
                if rest.len() >= d {
                    return match hex_value(&rest[..d]) {
                        Some(b) => KeyRoute::Bucket(b),
                        None => KeyRoute::Local(Local::EmptyValue),
                    };
                }
            }
        }
        KeyRoute::Bucket(self.bucket_of(routing_key(key)))
    }

    /// Bucket of a plain key: top bits of the signed FNV-1a.
    pub fn bucket_of(&self, key: &[u8]) -> usize {
        beansdb_hash::bucket_of_key(key, self.depth)
    }

    pub fn mains(&self, bucket: usize) -> &[usize] {
        self.mains.get(bucket).map(|v| v.as_slice()).unwrap_or(&[])
    }

    pub fn backups(&self) -> &[usize] {
        &self.backups
    }

    pub fn addr(&self, host: usize) -> &str {
        self.addrs.get(host).map(|s| s.as_str()).unwrap_or("")
    }

    /// The bucket's mains by rendezvous weight for `key` (descending; ties by address).
    pub fn natural_order(&self, key: &[u8], bucket: usize) -> Vec<usize> {
        let kh = fnv1a64(routing_key(key));
        let mut weighted: Vec<(u64, usize)> = self
            .mains(bucket)
            .iter()
            .map(|&h| (fmix64(kh ^ self.addr_hash[h]), h))
            .collect();
        weighted.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| self.addrs[a.1].as_bytes().cmp(self.addrs[b.1].as_bytes()))
        });
        weighted.into_iter().map(|(_, h)| h).collect()
    }

    /// The key's N replicas; the first is its primary.
    pub fn replicas(&self, key: &[u8], bucket: usize) -> Vec<usize> {
        let mut order = self.natural_order(key, bucket);
        order.truncate(self.n);
        order
    }
}

/// §3.5: drop down replicas, keep natural order, and move the fastest one to the front when
/// the first is slower by more than `deviation` µs. `eff` is `max(score, response_time_min)`.
pub fn read_order(
    replicas: &[usize],
    down: impl Fn(usize) -> bool,
    eff: impl Fn(usize) -> f64,
    deviation: f64,
) -> Vec<usize> {
    let mut order: Vec<usize> = replicas.iter().copied().filter(|&h| !down(h)).collect();
    if order.len() > 1 {
        // Each replica's figure is read once (it takes a lock and a clock read).
        let mut stack = [0f64; 8];
        let mut heap = Vec::new();
        let effs: &mut [f64] = if order.len() <= stack.len() {
            &mut stack[..order.len()]
        } else {
            heap.resize(order.len(), 0f64);
            &mut heap
        };
        for (e, &h) in effs.iter_mut().zip(&order) {
            *e = eff(h);
        }
        let mut best = 0;
        for i in 1..order.len() {
            // Strictly smaller: ties keep natural order.
            if effs[i] < effs[best] {
                best = i;
            }
        }
        if best != 0 && effs[0] - effs[best] > deviation {
            let h = order.remove(best);
            order.insert(0, h);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPREAD: &str = "numbucket: 16\nmain:\n\
- {addr: 127.0.0.1:7910, buckets: [0, 3, 4, 5, 8, 9, a, d, e, f]}\n\
- {addr: 127.0.0.1:7920, buckets: [0, 1, 4, 5, 6, 9, a, b, e, f]}\n\
- {addr: 127.0.0.1:7930, buckets: [0, 1, 2, 5, 6, 7, a, b, c, f]}\n\
- {addr: 127.0.0.1:7940, buckets: [1, 2, 3, 6, 7, 8, b, c, d]}\n\
- {addr: 127.0.0.1:7950, buckets: [2, 3, 4, 7, 8, 9, c, d, e]}\n\
backup: [127.0.0.1:7960]\n";

    fn table(text: &str, n: usize) -> Table {
        let r = Route::parse(text).unwrap();
        r.validate_for_proxy(n).unwrap();
        Table::new(&r, n)
    }

    fn ports(t: &Table, hosts: &[usize]) -> Vec<u16> {
        hosts
            .iter()
            .map(|&h| t.addr(h).rsplit(':').next().unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn hash_vectors() {
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
        assert_eq!(fmix64(1), 0xb456bcfc34c2cb2c);
        assert_eq!(fnv1a64(b"apple"), 0xf74a62a458befdbf);
        assert_eq!(fnv1a64(b"127.0.0.1:7920"), 0xcdaf77e96cba64fa);
        let kh = fnv1a64(b"apple");
        assert_eq!(fmix64(kh ^ fnv1a64(b"127.0.0.1:7930")), 0xdb8ddb533393cca0);
        assert_eq!(fmix64(kh ^ fnv1a64(b"127.0.0.1:7920")), 0x5dc3fef771b4d83a);
        assert_eq!(fmix64(kh ^ fnv1a64(b"127.0.0.1:7940")), 0x11f596c2d4a2cb02);
    }

    #[test]
    fn bucket_vectors() {
        let t16 = table(SPREAD, 3);
        let mut r256 = Route::all_local("h:1", 256);
        r256.backup.clear();
        let t256 = Table::new(&r256, 1);
        let cases: &[(&[u8], usize, usize)] = &[
            (b"test", 0xa, 0xaf),
            (b"hello", 0x4, 0x4f),
            (b"key1", 0x3, 0x37),
            (b"foo", 0xa, 0xa9),
            (b"", 0x8, 0x81),
            ("你好".as_bytes(), 0x2, 0x2a),
            (&[0xff, 0x80, 0x61, 0x62, 0x63], 0xa, 0xac),
            (b"/subject/10460967/props", 0xc, 0xc8),
        ];
        for &(k, b16, b256) in cases {
            assert_eq!(t16.bucket_of(k), b16, "{k:?}");
            assert_eq!(t256.bucket_of(k), b256, "{k:?}");
        }
        // Special keys (§2.5, §3.3).
        for k in [&b"?test"[..], b"??test", b"test"] {
            assert_eq!(t16.route_key(k), KeyRoute::Bucket(0xa));
            assert_eq!(t256.route_key(k), KeyRoute::Bucket(0xaf));
        }
        assert_eq!(t16.route_key(b"@"), KeyRoute::Bucket(0xc));
        assert_eq!(t16.route_key(b"@af3"), KeyRoute::Bucket(0xa));
        assert_eq!(t256.route_key(b"@af3"), KeyRoute::Bucket(0xaf));
        assert_eq!(
            t256.route_key(b"@a"),
            KeyRoute::Bucket(t256.bucket_of(b"@a"))
        );
        assert_eq!(t16.route_key(b"@@afd071e5deadbeef"), KeyRoute::Bucket(0xa));
        assert_eq!(
            t256.route_key(b"@@afd071e5deadbeef"),
            KeyRoute::Bucket(0xaf)
        );
        assert_eq!(t16.route_key(b"@zz"), KeyRoute::Local(Local::EmptyValue));
        assert_eq!(t16.route_key(b"@@zz"), KeyRoute::Local(Local::BadFormat));
        assert_eq!(t16.route_key(b"@@"), KeyRoute::Local(Local::BadFormat));
        assert_eq!(t16.route_key(b"?"), KeyRoute::Local(Local::BadKeyQ));
        assert_eq!(t16.route_key(b"??"), KeyRoute::Local(Local::Miss));
        let t1 = Table::new(&Route::all_local("h:1", 1), 1);
        assert_eq!(t1.route_key(b"@zz"), KeyRoute::Bucket(0));
    }

    #[test]
    fn worked_example_order_table() {
        let t = table(SPREAD, 3);
        let want: &[(&str, usize, [u16; 3])] = &[
            ("apple", 0x1, [7930, 7920, 7940]),
            ("banana", 0xd, [7950, 7940, 7910]),
            ("cherry", 0x4, [7920, 7950, 7910]),
            ("date", 0xd, [7910, 7950, 7940]),
            ("fig", 0xc, [7930, 7950, 7940]),
            ("kiwi", 0xb, [7940, 7930, 7920]),
            ("mango", 0x0, [7920, 7910, 7930]),
        ];
        for (key, bucket, order) in want {
            let b = t.bucket_of(key.as_bytes());
            assert_eq!(b, *bucket, "{key}");
            assert_eq!(
                ports(&t, &t.natural_order(key.as_bytes(), b)),
                order,
                "{key}"
            );
            assert_eq!(ports(&t, &t.replicas(key.as_bytes(), b)), order, "{key}");
        }
        // Meta keys choose the same replicas as the key itself.
        let b = t.bucket_of(b"apple");
        assert_eq!(t.natural_order(b"?apple", b), t.natural_order(b"apple", b));
        assert_eq!(t.natural_order(b"??apple", b), t.natural_order(b"apple", b));
    }

    #[test]
    fn replica_lists_with_many_mains_and_backups() {
        // Bucket 0 on 4 mains, bucket 1 on 5 mains, 2 backups; n = 3 and n = 2.
        let text = "numbucket: 16\nmain:\n\
- {addr: 'h:1', buckets: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, a, b, c, d, e, f]}\n\
- {addr: 'h:2', buckets: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, a, b, c, d, e, f]}\n\
- {addr: 'h:3', buckets: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, a, b, c, d, e, f]}\n\
- {addr: 'h:4', buckets: [0, 1]}\n\
- {addr: 'h:5', buckets: [1]}\n\
backup: ['h:8', 'h:9']\n";
        for n in [2usize, 3] {
            let t = table(text, n);
            assert_eq!(t.backups().len(), 2);
            assert_eq!(t.addr(t.backups()[0]), "h:8");
            assert_eq!(t.addr(t.backups()[1]), "h:9");
            assert_eq!(t.mains(0).len(), 4);
            assert_eq!(t.mains(1).len(), 5);
            let mut primaries = std::collections::HashMap::new();
            for i in 0..2000 {
                let key = format!("key{i}");
                let b = t.bucket_of(key.as_bytes());
                let reps = t.replicas(key.as_bytes(), b);
                assert_eq!(reps.len(), n);
                let mut uniq = reps.clone();
                uniq.sort();
                uniq.dedup();
                assert_eq!(uniq.len(), n, "distinct replicas");
                for h in &reps {
                    assert!(t.mains(b).contains(h), "replica outside the bucket");
                    assert!(!t.backups().contains(h));
                }
                // Deterministic.
                assert_eq!(reps, t.replicas(key.as_bytes(), b));
                if b == 1 {
                    *primaries.entry(reps[0]).or_insert(0) += 1;
                }
            }
            // Primaries of bucket 1 spread over all its 5 mains.
            assert_eq!(primaries.len(), 5, "{primaries:?}");
        }
    }

    #[test]
    fn adding_a_main_changes_at_most_one_replica() {
        let before = table(SPREAD, 3);
        let grown = SPREAD.replace(
            "backup:",
            "- {addr: 127.0.0.1:7970, buckets: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, a, b, c, d, e, f]}\nbackup:",
        );
        let after = table(&grown, 3);
        for i in 0..1000 {
            let key = format!("k{i}");
            let b = before.bucket_of(key.as_bytes());
            let a: Vec<String> = before
                .replicas(key.as_bytes(), b)
                .iter()
                .map(|&h| before.addr(h).to_string())
                .collect();
            let c: Vec<String> = after
                .replicas(key.as_bytes(), b)
                .iter()
                .map(|&h| after.addr(h).to_string())
                .collect();
            let changed = c.iter().filter(|x| !a.contains(x)).count();
            assert!(changed <= 1, "{key}: {a:?} -> {c:?}");
        }
    }

    #[test]
    fn read_order_rules() {
        let reps = [5usize, 7, 9];
        let none_down = |_| false;
        // All unknown scores count as the floor: natural order.
        assert_eq!(read_order(&reps, none_down, |_| 4000.0, 10000.0), reps);
        // Down hosts are dropped, order kept.
        assert_eq!(
            read_order(&reps, |h| h == 5, |_| 4000.0, 10000.0),
            vec![7, 9]
        );
        assert_eq!(
            read_order(&reps, |_| true, |_| 4000.0, 10000.0),
            Vec::<usize>::new()
        );
        // Primary slower by more than the deviation: the fastest moves to the front.
        let eff = |h: usize| match h {
            5 => 20000.0,
            7 => 9000.0,
            _ => 4000.0,
        };
        assert_eq!(read_order(&reps, none_down, eff, 10000.0), vec![9, 5, 7]);
        // Within the deviation: unchanged.
        let eff = |h: usize| if h == 5 { 13000.0 } else { 4000.0 };
        assert_eq!(read_order(&reps, none_down, eff, 10000.0), reps);
    }
}
