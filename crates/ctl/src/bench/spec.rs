//! Option values of `bench` (tools.md §5): operation mix, value sizes, key distribution and
//! ranges, with parsing and their canonical text form.

use std::fmt;
use std::str::FromStr;

use crate::units::{parse_size, short_size};

/// Operations the bench can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Get,
    Set,
    Getm,
    Delete,
}

impl Op {
    pub const ALL: [Op; 4] = [Op::Get, Op::Set, Op::Getm, Op::Delete];

    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
            Op::Getm => "getm",
            Op::Delete => "delete",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether the operation reads values (and so wants the key space preloaded).
    pub fn reads(self) -> bool {
        matches!(self, Op::Get | Op::Getm)
    }
}

/// `get:80,set:15,getm:5[,delete:N]`: integer weights, at least one non-zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 4],
}

impl Mix {
    pub fn weight(&self, op: Op) -> u32 {
        self.weights[op.index()]
    }

    pub fn total(&self) -> u64 {
        self.weights.iter().map(|&w| u64::from(w)).sum()
    }

    /// Operations with a non-zero weight, in canonical order.
    pub fn ops(&self) -> impl Iterator<Item = Op> + '_ {
        Op::ALL.into_iter().filter(|&op| self.weight(op) > 0)
    }

    /// Share of `op` in percent.
    pub fn percent(&self, op: Op) -> f64 {
        f64::from(self.weight(op)) * 100.0 / self.total() as f64
    }

    pub fn reads(&self) -> bool {
        self.ops().any(Op::reads)
    }

    /// Picks an operation for a uniform draw `r` in `0..total()`.
    pub fn pick(&self, mut r: u64) -> Op {
        for op in Op::ALL {
            let w = u64::from(self.weight(op));
            if r < w {
                return op;
            }
            r -= w;
        }
        // Unreachable for r < total; the last weighted op is a safe answer anyway.
        self.ops().last().unwrap_or(Op::Get)
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut weights = [0u32; 4];
        let mut seen = [false; 4];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = part
                .split_once(':')
                .ok_or_else(|| format!("{part:?} is not OP:WEIGHT"))?;
            let op = Op::ALL
                .into_iter()
                .find(|op| op.name() == name.trim())
                .ok_or_else(|| {
                    format!("unknown operation {name:?} (use get, set, getm, delete)")
                })?;
            let w: u32 = w
                .trim()
                .parse()
                .map_err(|_| format!("weight {w:?} of {name} is not a non-negative integer"))?;
            if std::mem::replace(&mut seen[op.index()], true) {
                return Err(format!("operation {name} is given twice"));
            }
            weights[op.index()] = w;
        }
        if weights.iter().all(|&w| w == 0) {
            return Err("the mix needs at least one operation with a weight above 0".into());
        }
        Ok(Mix { weights })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .ops()
            .map(|op| format!("{}:{}", op.name(), self.weight(op)))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Value sizes: `N`, `MIN..MAX` (uniform), or `N1:W1,N2:W2,…` (weighted). Sizes take K/M/G.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSize {
    Fixed(usize),
    Range(usize, usize),
    Weighted(Vec<(usize, u32)>),
}

/// Largest value the bench generates; beansdb accepts 50 MiB by default.
pub const MAX_VALUE_SIZE: usize = 64 << 20;

fn size_arg(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    usize::try_from(n)
        .ok()
        .filter(|&n| n <= MAX_VALUE_SIZE)
        .ok_or_else(|| format!("value size {s} is above the limit of 64M"))
}

impl ValueSize {
    pub fn max(&self) -> usize {
        match self {
            ValueSize::Fixed(n) => *n,
            ValueSize::Range(_, hi) => *hi,
            ValueSize::Weighted(v) => v.iter().map(|(n, _)| *n).max().unwrap_or(0),
        }
    }

    /// A size for the uniform draw `r` (any u64).
    pub fn pick(&self, r: u64) -> usize {
        match self {
            ValueSize::Fixed(n) => *n,
            ValueSize::Range(lo, hi) => {
                let span = (hi - lo) as u64 + 1;
                lo + (r % span) as usize
            }
            ValueSize::Weighted(v) => {
                let total: u64 = v.iter().map(|(_, w)| u64::from(*w)).sum();
                let mut r = r % total.max(1);
                for (n, w) in v {
                    if r < u64::from(*w) {
                        return *n;
                    }
                    r -= u64::from(*w);
                }
                v.last().map_or(0, |(n, _)| *n)
            }
        }
    }
}

impl FromStr for ValueSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some((lo, hi)) = s.split_once("..") {
            let (lo, hi) = (size_arg(lo)?, size_arg(hi)?);
            if lo > hi {
                return Err(format!("range {s:?} has MIN above MAX"));
            }
            return Ok(ValueSize::Range(lo, hi));
        }
        if s.contains(':') {
            let mut v = Vec::new();
            for part in s.split(',').map(str::trim) {
                let (n, w) = part
                    .split_once(':')
                    .ok_or_else(|| format!("{part:?} is not SIZE:WEIGHT"))?;
                let w: u32 = w
                    .trim()
                    .parse()
                    .map_err(|_| format!("weight {w:?} is not a non-negative integer"))?;
                v.push((size_arg(n)?, w));
            }
            if v.iter().all(|(_, w)| *w == 0) {
                return Err("weighted sizes need a weight above 0".into());
            }
            return Ok(ValueSize::Weighted(v));
        }
        Ok(ValueSize::Fixed(size_arg(s)?))
    }
}

impl fmt::Display for ValueSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sz = |n: usize| short_size(n as u64);
        match self {
            ValueSize::Fixed(n) => f.write_str(&sz(*n)),
            ValueSize::Range(lo, hi) => write!(f, "{}..{}", sz(*lo), sz(*hi)),
            ValueSize::Weighted(v) => {
                let parts: Vec<String> = v.iter().map(|(n, w)| format!("{}:{w}", sz(*n))).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

/// Key popularity: `uniform` or `zipf:S` (S > 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyDist {
    Uniform,
    Zipf(f64),
}

impl FromStr for KeyDist {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "uniform" => Ok(KeyDist::Uniform),
            other => {
                let exp = other
                    .strip_prefix("zipf:")
                    .ok_or_else(|| format!("{s:?} is neither uniform nor zipf:S"))?;
                let e: f64 = exp
                    .parse()
                    .map_err(|_| format!("zipf exponent {exp:?} is not a number"))?;
                if !(e > 0.0 && e <= 100.0) {
                    return Err(format!(
                        "zipf exponent {exp} must be above 0 (and at most 100)"
                    ));
                }
                Ok(KeyDist::Zipf(e))
            }
        }
    }
}

impl fmt::Display for KeyDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDist::Uniform => f.write_str("uniform"),
            KeyDist::Zipf(s) => write!(f, "zipf:{s}"),
        }
    }
}

/// `N` or `MIN..MAX` (inclusive), N ≥ 1; keys per multi-get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountRange {
    pub min: u32,
    pub max: u32,
}

impl CountRange {
    pub fn pick(&self, r: u64) -> u32 {
        let span = u64::from(self.max - self.min) + 1;
        self.min + (r % span) as u32
    }
}

impl FromStr for CountRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let num = |t: &str| -> Result<u32, String> {
            t.trim()
                .parse::<u32>()
                .ok()
                .filter(|&n| (1..=10_000).contains(&n))
                .ok_or_else(|| format!("{t:?} is not a count between 1 and 10000"))
        };
        let (min, max) = match s.split_once("..") {
            Some((lo, hi)) => (num(lo)?, num(hi)?),
            None => {
                let n = num(s)?;
                (n, n)
            }
        };
        if min > max {
            return Err(format!("range {s:?} has MIN above MAX"));
        }
        Ok(CountRange { min, max })
    }
}

impl fmt::Display for CountRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}..{}", self.min, self.max)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix() {
        let m: Mix = "get:80,set:15,getm:5".parse().unwrap();
        assert_eq!(m.total(), 100);
        assert_eq!(m.weight(Op::Delete), 0);
        assert_eq!(m.to_string(), "get:80,set:15,getm:5");
        assert_eq!(m.pick(0), Op::Get);
        assert_eq!(m.pick(79), Op::Get);
        assert_eq!(m.pick(80), Op::Set);
        assert_eq!(m.pick(99), Op::Getm);
        assert!((m.percent(Op::Set) - 15.0).abs() < 1e-9);
        assert!(m.reads());
        let m: Mix = "set:1".parse().unwrap();
        assert!(!m.reads());
        assert_eq!(m.ops().collect::<Vec<_>>(), vec![Op::Set]);
        for bad in [
            "",
            "get:0",
            "put:1",
            "get",
            "get:-1",
            "get:1,get:2",
            "get:x",
        ] {
            assert!(bad.parse::<Mix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn value_size() {
        assert_eq!("100".parse(), Ok(ValueSize::Fixed(100)));
        assert_eq!("4K".parse(), Ok(ValueSize::Fixed(4096)));
        assert_eq!("100..1K".parse(), Ok(ValueSize::Range(100, 1024)));
        assert_eq!(
            "100:3,1M:1".parse(),
            Ok(ValueSize::Weighted(vec![(100, 3), (1 << 20, 1)]))
        );
        assert_eq!(
            "100..1K".parse::<ValueSize>().unwrap().to_string(),
            "100..1K"
        );
        for bad in ["", "1K..100", "x", "100:x", "100:0", "1G"] {
            assert!(bad.parse::<ValueSize>().is_err(), "{bad}");
        }
        let r = ValueSize::Range(10, 12);
        let got: Vec<usize> = (0..6).map(|i| r.pick(i)).collect();
        assert_eq!(got, vec![10, 11, 12, 10, 11, 12]);
        let w = ValueSize::Weighted(vec![(1, 1), (2, 3)]);
        let got: Vec<usize> = (0..4).map(|i| w.pick(i)).collect();
        assert_eq!(got, vec![1, 2, 2, 2]);
        assert_eq!(w.max(), 2);
    }

    #[test]
    fn key_dist_and_counts() {
        assert_eq!("uniform".parse(), Ok(KeyDist::Uniform));
        assert_eq!("zipf:0.99".parse(), Ok(KeyDist::Zipf(0.99)));
        for bad in ["zipf", "zipf:0", "zipf:-1", "zipf:x", "normal"] {
            assert!(bad.parse::<KeyDist>().is_err(), "{bad}");
        }
        assert_eq!("10".parse(), Ok(CountRange { min: 10, max: 10 }));
        assert_eq!("1..50".parse(), Ok(CountRange { min: 1, max: 50 }));
        for bad in ["0", "5..2", "x", "1..20000"] {
            assert!(bad.parse::<CountRange>().is_err(), "{bad}");
        }
    }
}
