//! What the bench sends: seeded random numbers, keys, values, and per-connection request
//! generation. Deterministic for a given `--seed` and connection index.

use super::spec::{CountRange, KeyDist, Mix, Op, ValueSize};

/// xoshiro256++ seeded through splitmix64: fast, good quality, and reproducible.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        Rng {
            s: [
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
            ],
        }
    }

    /// An independent stream for a stream index (connection, dispatcher, …).
    pub fn derive(seed: u64, stream: u64) -> Rng {
        let mut x = stream;
        Rng::new(seed ^ splitmix64(&mut x))
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (n > 0), without modulo bias (Lemire).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }
}

/// Zipf(s) over ranks 1..=n by rejection-inversion (Hörmann & Derflinger 1996): O(1) per
/// sample and no table, so key spaces of any size work.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: f64,
    s: f64,
    h_x1: f64,
    h_n: f64,
    cut: f64,
}

impl Zipf {
    pub fn new(n: u64, s: f64) -> Zipf {
        let mut z = Zipf {
            n: n as f64,
            s,
            h_x1: 0.0,
            h_n: 0.0,
            cut: 0.0,
        };
        z.h_x1 = z.h_integral(1.5) - 1.0;
        z.h_n = z.h_integral(z.n + 0.5);
        z.cut = 2.0 - z.h_integral_inv(z.h_integral(2.5) - z.h(2.0));
        z
    }

    /// A rank in 1..=n; rank 1 is the most popular.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        loop {
            let u = self.h_n + rng.next_f64() * (self.h_x1 - self.h_n);
            let x = self.h_integral_inv(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.cut || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
    }

    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    fn h_integral(&self, x: f64) -> f64 {
        let lx = x.ln();
        helper2((1.0 - self.s) * lx) * lx
    }

    fn h_integral_inv(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.s)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// ln(1+x)/x, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// (e^x - 1)/x, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

/// Keys `<prefix><n>`, n zero-padded to the width of `count - 1` (tools.md §5). Printable by
/// construction: beansdb refuses writes of keys with control bytes or spaces.
#[derive(Debug, Clone)]
pub struct Keyspace {
    prefix: Vec<u8>,
    width: usize,
    count: u64,
    zipf: Option<Zipf>,
}

impl Keyspace {
    pub fn new(prefix: &str, count: u64, dist: KeyDist) -> Keyspace {
        let width = (count.saturating_sub(1)).to_string().len();
        Keyspace {
            prefix: prefix.as_bytes().to_vec(),
            width,
            count,
            zipf: match dist {
                KeyDist::Uniform => None,
                KeyDist::Zipf(s) => Some(Zipf::new(count, s)),
            },
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Length of every key.
    pub fn key_len(&self) -> usize {
        self.prefix.len() + self.width
    }

    /// A key index drawn from the distribution (zipf rank 1 is index 0).
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        match &self.zipf {
            None => rng.below(self.count),
            Some(z) => z.sample(rng) - 1,
        }
    }

    /// Appends key `idx` to `out`.
    pub fn write_key(&self, idx: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.prefix);
        let mut digits = [b'0'; 20];
        let mut i = digits.len();
        let mut n = idx;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let len = digits.len() - i;
        out.extend(std::iter::repeat_n(b'0', self.width.saturating_sub(len)));
        out.extend_from_slice(&digits[i..]);
    }

    pub fn key(&self, idx: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.key_len());
        self.write_key(idx, &mut v);
        v
    }
}

/// Kind of value bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ValueKind {
    /// Incompressible pseudo-random bytes.
    Random,
    /// Compressible words (exercises the node's QuickLZ path).
    Text,
}

impl ValueKind {
    pub fn name(self) -> &'static str {
        match self {
            ValueKind::Random => "random",
            ValueKind::Text => "text",
        }
    }
}

/// Values are slices of one pre-generated seeded buffer, so generating a set costs no
/// allocation or randomness per byte.
#[derive(Debug)]
pub struct Values {
    buf: Vec<u8>,
    sizes: ValueSize,
    verify: bool,
}

const WORDS: &[&str] = &[
    "beansdb",
    "node",
    "proxy",
    "bucket",
    "record",
    "value",
    "key",
    "hint",
    "chunk",
    "merkle",
    "tree",
    "version",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "data",
    "server",
    "client",
    "memcached",
    "replica",
    "sync",
    "cache",
    "request",
    "reply",
    "stored",
];

impl Values {
    pub fn new(sizes: ValueSize, kind: ValueKind, verify: bool, seed: u64) -> Values {
        // Room for the largest value at many offsets; at least 1 MiB for variety.
        let len = (sizes.max() + (64 << 10)).max(1 << 20);
        let mut rng = Rng::derive(seed, u64::MAX);
        let mut buf = Vec::with_capacity(len + 16);
        match kind {
            ValueKind::Random => {
                while buf.len() < len {
                    buf.extend_from_slice(&rng.next_u64().to_le_bytes());
                }
            }
            ValueKind::Text => {
                while buf.len() < len {
                    let w = WORDS[rng.below(WORDS.len() as u64) as usize];
                    buf.extend_from_slice(w.as_bytes());
                    buf.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
                }
            }
        }
        buf.truncate(len);
        Values { buf, sizes, verify }
    }

    pub fn verify(&self) -> bool {
        self.verify
    }

    /// Value for `key`. Without verify a random slice of the buffer is returned; with verify
    /// `<key>:<len>:` followed by a body that depends only on key and length, built in
    /// `scratch`, so a reader can recheck it.
    pub fn value<'a>(&'a self, key: &[u8], rng: &mut Rng, scratch: &'a mut Vec<u8>) -> &'a [u8] {
        let size = self.sizes.pick(rng.next_u64());
        if !self.verify {
            let off = rng.below((self.buf.len() - size + 1) as u64) as usize;
            return &self.buf[off..off + size];
        }
        scratch.clear();
        self.write_verified(key, size, scratch);
        scratch
    }

    fn write_verified(&self, key: &[u8], size: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(key);
        out.push(b':');
        // The length written is the total value length, which includes this prefix.
        let head = key.len() + 2;
        let total = total_len(head, size);
        out.extend_from_slice(total.to_string().as_bytes());
        out.push(b':');
        let body = total - out.len();
        let off = body_offset(key, total, self.buf.len() - body);
        out.extend_from_slice(&self.buf[off..off + body]);
    }

    /// Whether `data` is exactly what [`Values::value`] writes for `key` with verify on.
    pub fn check(&self, key: &[u8], data: &[u8]) -> bool {
        let Some(rest) = data.strip_prefix(key).and_then(|r| r.strip_prefix(b":")) else {
            return false;
        };
        let Some(colon) = rest.iter().position(|&b| b == b':') else {
            return false;
        };
        let Some(total) = std::str::from_utf8(&rest[..colon])
            .ok()
            .and_then(|t| t.parse::<usize>().ok())
        else {
            return false;
        };
        if total != data.len() {
            return false;
        }
        let prefix = key.len() + 1 + colon + 1;
        let body = total - prefix;
        if body > self.buf.len() {
            return false;
        }
        let off = body_offset(key, total, self.buf.len() - body);
        data[prefix..] == self.buf[off..off + body]
    }
}

/// Total length of a verified value of requested `size`: never shorter than its own
/// `<key>:<len>:` prefix, whose length depends on the digits of the total.
fn total_len(head: usize, size: usize) -> usize {
    let mut total = size.max(head + 1);
    loop {
        let need = head + total.to_string().len();
        if total >= need {
            return total;
        }
        total = need;
    }
}

/// Deterministic body offset from key and length, in `0..=max`.
fn body_offset(key: &[u8], total: usize, max: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ total as u64).wrapping_mul(0x0100_0000_01b3);
    (h % (max as u64 + 1)) as usize
}

/// Per-connection request generator; reuses its buffers.
pub struct Generator {
    pub rng: Rng,
    mix: Mix,
    getm: CountRange,
    pub key: Vec<u8>,
    /// Keys of a multi-get, concatenated; `ends` marks where each ends.
    multi: Vec<u8>,
    ends: Vec<usize>,
    picked: Vec<u64>,
    pub scratch: Vec<u8>,
}

impl Generator {
    pub fn new(rng: Rng, mix: Mix, getm: CountRange) -> Generator {
        Generator {
            rng,
            mix,
            getm,
            key: Vec::with_capacity(64),
            multi: Vec::new(),
            ends: Vec::new(),
            picked: Vec::new(),
            scratch: Vec::new(),
        }
    }

    pub fn next_op(&mut self) -> Op {
        let r = self.rng.below(self.mix.total());
        self.mix.pick(r)
    }

    /// Sets `self.key` to a key drawn from the key space.
    pub fn draw_key(&mut self, ks: &Keyspace) {
        let idx = ks.sample(&mut self.rng);
        self.key.clear();
        ks.write_key(idx, &mut self.key);
    }

    /// Draws distinct keys for a multi-get; returns them as slices.
    pub fn draw_multi(&mut self, ks: &Keyspace) -> Vec<&[u8]> {
        let n = u64::from(self.getm.pick(self.rng.next_u64())).min(ks.count()) as usize;
        self.picked.clear();
        // Rejection keeps keys distinct; skewed distributions fall back to neighbours so a
        // hot key space cannot loop for long.
        let mut attempts = 0;
        while self.picked.len() < n {
            let mut idx = ks.sample(&mut self.rng);
            attempts += 1;
            if attempts > 20 * n {
                while self.picked.contains(&idx) {
                    idx = (idx + 1) % ks.count();
                }
            }
            if !self.picked.contains(&idx) {
                self.picked.push(idx);
            }
        }
        self.multi.clear();
        self.ends.clear();
        for &idx in &self.picked {
            ks.write_key(idx, &mut self.multi);
            self.ends.push(self.multi.len());
        }
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let k = &self.multi[start..end];
                start = end;
                k
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_bounded() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut counts = [0u32; 7];
        for _ in 0..70_000 {
            counts[a.below(7) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
        let f = a.next_f64();
        assert!((0.0..1.0).contains(&f));
        assert_ne!(Rng::derive(1, 0).next_u64(), Rng::derive(1, 1).next_u64());
    }

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let z = Zipf::new(1000, 1.0);
        let mut rng = Rng::new(7);
        let mut counts = vec![0u32; 1001];
        for _ in 0..100_000 {
            let k = z.sample(&mut rng);
            assert!((1..=1000).contains(&k));
            counts[k as usize] += 1;
        }
        // P(1)/P(2) = 2 for s = 1; H(1000) ≈ 7.485 so P(1) ≈ 13.4 %.
        let p1 = f64::from(counts[1]) / 100_000.0;
        assert!((0.12..0.15).contains(&p1), "p1 {p1}");
        let ratio = f64::from(counts[1]) / f64::from(counts[2]);
        assert!((1.8..2.2).contains(&ratio), "ratio {ratio}");
        // Tiny key spaces work too.
        let z = Zipf::new(1, 0.99);
        assert_eq!(z.sample(&mut rng), 1);
    }

    #[test]
    fn keys_are_padded_and_printable() {
        let ks = Keyspace::new("bench:", 100_000, KeyDist::Uniform);
        assert_eq!(ks.key(0), b"bench:00000");
        assert_eq!(ks.key(99_999), b"bench:99999");
        assert_eq!(ks.key_len(), 11);
        let ks = Keyspace::new("k", 1, KeyDist::Uniform);
        assert_eq!(ks.key(0), b"k0");
        let ks = Keyspace::new("k", 10, KeyDist::Zipf(1.2));
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let k = ks.key(ks.sample(&mut rng));
            assert_eq!(k.len(), 2);
            assert!(beansdb_protocol::is_valid_write_key(&k));
        }
    }

    #[test]
    fn verified_values_round_trip() {
        for size in [0usize, 1, 5, 20, 100, 4096] {
            let v = Values::new(ValueSize::Fixed(size), ValueKind::Random, true, 9);
            let mut rng = Rng::new(3);
            let mut scratch = Vec::new();
            let data = v.value(b"bench:001", &mut rng, &mut scratch).to_vec();
            assert!(data.len() >= size);
            if size >= 20 {
                assert_eq!(data.len(), size);
            }
            assert!(data.starts_with(format!("bench:001:{}:", data.len()).as_bytes()));
            assert!(v.check(b"bench:001", &data), "size {size}");
            assert!(!v.check(b"bench:002", &data));
            let mut bad = data.clone();
            let last = bad.len() - 1;
            if bad.len() > 15 {
                bad[last] ^= 1;
                assert!(!v.check(b"bench:001", &bad));
            }
            assert!(!v.check(b"bench:001", &data[..data.len() - 1]));
        }
        // Without verify: plain slices of the requested size.
        let v = Values::new(ValueSize::Range(10, 20), ValueKind::Text, false, 9);
        let mut rng = Rng::new(3);
        let mut scratch = Vec::new();
        for _ in 0..100 {
            let n = v.value(b"k", &mut rng, &mut scratch).len();
            assert!((10..=20).contains(&n));
        }
    }

    #[test]
    fn multi_keys_are_distinct() {
        let ks = Keyspace::new("m:", 50, KeyDist::Zipf(3.0));
        let mix: Mix = "getm:1".parse().unwrap();
        let mut g = Generator::new(Rng::new(5), mix, CountRange { min: 50, max: 50 });
        let keys = g.draw_multi(&ks);
        assert_eq!(keys.len(), 50);
        let set: std::collections::HashSet<&[u8]> = keys.iter().copied().collect();
        assert_eq!(set.len(), 50);
    }
}
