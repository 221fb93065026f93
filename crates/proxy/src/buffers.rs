//! `/buffer/` accounting (proxy.md §7.2): four live counters of value buffers.
//!
//! Accounting is tied to ownership: a [`Tracked`] guard adds its size when created and removes
//! it when dropped, so no path (error, timeout, late backend reply, closed connection, panic
//! unwinding) can release a buffer without releasing its count.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufKind {
    /// Value bytes received from backends, until written to the client or discarded.
    GetData,
    /// Value bodies of storage commands, until every backend write using them finished.
    SetData,
}

#[derive(Default)]
pub struct Counter {
    count: AtomicI64,
    size: AtomicI64,
    max_count: AtomicI64,
    max_size: AtomicI64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Snapshot {
    pub count: i64,
    pub size: i64,
    pub max_count: i64,
    pub max_size: i64,
}

impl Counter {
    const fn new() -> Counter {
        Counter {
            count: AtomicI64::new(0),
            size: AtomicI64::new(0),
            max_count: AtomicI64::new(0),
            max_size: AtomicI64::new(0),
        }
    }

    fn add(&self, size: i64) {
        let c = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let s = self.size.fetch_add(size, Ordering::Relaxed) + size;
        self.max_count.fetch_max(c, Ordering::Relaxed);
        self.max_size.fetch_max(s, Ordering::Relaxed);
    }

    fn sub(&self, size: i64) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.size.fetch_sub(size, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        // Transiently negative only if a reader races a release; never reported as such.
        Snapshot {
            count: self.count.load(Ordering::Relaxed).max(0),
            size: self.size.load(Ordering::Relaxed).max(0),
            max_count: self.max_count.load(Ordering::Relaxed),
            max_size: self.max_size.load(Ordering::Relaxed),
        }
    }
}

pub struct Buffers {
    pub alloc_rl: Counter,
    pub get_data: Counter,
    pub set_data: Counter,
    /// Always 0: the proxy has no write buffers of its own.
    pub flush_data: Counter,
    /// Buffers larger than this also count in AllocRL (`mc.body_c_str`).
    large: AtomicU64,
}

pub static BUFFERS: Buffers = Buffers {
    alloc_rl: Counter::new(),
    get_data: Counter::new(),
    set_data: Counter::new(),
    flush_data: Counter::new(),
    large: AtomicU64::new(4 << 10),
};

impl Buffers {
    pub fn set_large_threshold(&self, bytes: u64) {
        self.large.store(bytes, Ordering::Relaxed);
    }

    /// `(name, snapshot)` in the JSON order.
    pub fn all(&self) -> [(&'static str, Snapshot); 4] {
        [
            ("AllocRL", self.alloc_rl.snapshot()),
            ("GetData", self.get_data.snapshot()),
            ("SetData", self.set_data.snapshot()),
            ("FlushData", self.flush_data.snapshot()),
        ]
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (name, s) in self.all() {
            m.insert(
                name.to_string(),
                serde_json::to_value(s).unwrap_or(serde_json::Value::Null),
            );
        }
        serde_json::Value::Object(m)
    }

    fn counter(&self, kind: BufKind) -> &Counter {
        match kind {
            BufKind::GetData => &self.get_data,
            BufKind::SetData => &self.set_data,
        }
    }
}

/// Ownership of `size` accounted bytes; released on drop.
#[derive(Debug)]
pub struct Tracked {
    kind: BufKind,
    size: usize,
    large: bool,
}

impl Tracked {
    pub fn new(kind: BufKind, size: usize) -> Tracked {
        let large = size as u64 > BUFFERS.large.load(Ordering::Relaxed);
        let s = size as i64;
        BUFFERS.counter(kind).add(s);
        if large {
            BUFFERS.alloc_rl.add(s);
        }
        Tracked { kind, size, large }
    }

    pub fn size(&self) -> usize {
        self.size
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let s = self.size as i64;
        BUFFERS.counter(self.kind).sub(s);
        if self.large {
            BUFFERS.alloc_rl.sub(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_releases_on_drop() {
        // Other tests may hold guards concurrently; compare deltas of a big, unique size.
        let before = BUFFERS.set_data.snapshot();
        let g = Tracked::new(BufKind::SetData, 1 << 20);
        let during = BUFFERS.set_data.snapshot();
        assert!(during.size >= before.size + (1 << 20));
        assert!(BUFFERS.alloc_rl.snapshot().size >= 1 << 20);
        assert!(during.max_size >= 1 << 20);
        drop(g);
        let json = BUFFERS.to_json();
        for k in ["AllocRL", "GetData", "SetData", "FlushData"] {
            assert!(json[k]["Count"].is_i64(), "{json}");
            assert!(json[k]["MaxSize"].is_i64(), "{json}");
        }
    }
}
