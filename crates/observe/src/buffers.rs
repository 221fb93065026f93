//! Live counters of value buffers (the node's `/buffers`, the proxy's `/buffer/`): four
//! counters, AllocRL / GetData / SetData / FlushData, each with count, size and their maxima.
//!
//! Accounting is tied to ownership: a [`Tracked`] guard adds its size when created and removes
//! it when dropped, so no path (error, timeout, closed connection, panic unwinding) can release
//! a buffer without releasing its count. Each process owns one `static` [`Buffers`].

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferKind {
    GetData,
    SetData,
    FlushData,
}

#[derive(Default)]
pub struct BufferCounter {
    count: AtomicI64,
    size: AtomicI64,
    max_count: AtomicI64,
    max_size: AtomicI64,
}

/// JSON field names as gobeansdb serves them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CounterSnapshot {
    pub count: i64,
    pub size: i64,
    pub max_count: i64,
    pub max_size: i64,
}

impl BufferCounter {
    pub const fn new() -> BufferCounter {
        BufferCounter {
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

    /// Current values as loaded.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            count: self.count.load(Ordering::Relaxed),
            size: self.size.load(Ordering::Relaxed),
            max_count: self.max_count.load(Ordering::Relaxed),
            max_size: self.max_size.load(Ordering::Relaxed),
        }
    }
}

/// The four process-wide counters.
pub struct Buffers {
    pub alloc_rl: BufferCounter,
    pub get_data: BufferCounter,
    pub set_data: BufferCounter,
    pub flush_data: BufferCounter,
    /// Buffers larger than this also count in `alloc_rl` (`mc.body_c_str`).
    large_threshold: AtomicU64,
    /// Report a transiently negative count or size (a reader racing a release) as 0.
    clamp: bool,
}

impl Buffers {
    pub const fn new(clamp_negative: bool) -> Buffers {
        Buffers {
            alloc_rl: BufferCounter::new(),
            get_data: BufferCounter::new(),
            set_data: BufferCounter::new(),
            flush_data: BufferCounter::new(),
            large_threshold: AtomicU64::new(4096),
            clamp: clamp_negative,
        }
    }

    pub fn set_large_threshold(&self, bytes: u64) {
        self.large_threshold.store(bytes, Ordering::Relaxed);
    }

    fn counter(&self, kind: BufferKind) -> &BufferCounter {
        match kind {
            BufferKind::GetData => &self.get_data,
            BufferKind::SetData => &self.set_data,
            BufferKind::FlushData => &self.flush_data,
        }
    }

    fn snap(&self, c: &BufferCounter) -> CounterSnapshot {
        let mut s = c.snapshot();
        if self.clamp {
            s.count = s.count.max(0);
            s.size = s.size.max(0);
        }
        s
    }

    /// `(name, snapshot)` in the JSON order.
    pub fn all(&self) -> [(&'static str, CounterSnapshot); 4] {
        [
            ("AllocRL", self.snap(&self.alloc_rl)),
            ("GetData", self.snap(&self.get_data)),
            ("SetData", self.snap(&self.set_data)),
            ("FlushData", self.snap(&self.flush_data)),
        ]
    }

    /// Starts accounting `size` bytes of `kind`; they are released when the guard drops.
    pub fn track(&'static self, kind: BufferKind, size: usize) -> Tracked {
        let large = size as u64 > self.large_threshold.load(Ordering::Relaxed);
        let s = size as i64;
        self.counter(kind).add(s);
        if large {
            self.alloc_rl.add(s);
        }
        Tracked {
            buffers: self,
            kind,
            size,
            large,
        }
    }
}

/// Accounting guard: counts `size` bytes of `kind` for as long as it lives.
pub struct Tracked {
    buffers: &'static Buffers,
    kind: BufferKind,
    size: usize,
    large: bool,
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked")
            .field("kind", &self.kind)
            .field("size", &self.size)
            .field("large", &self.large)
            .finish()
    }
}

impl Tracked {
    pub fn size(&self) -> usize {
        self.size
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let s = self.size as i64;
        self.buffers.counter(self.kind).sub(s);
        if self.large {
            self.buffers.alloc_rl.sub(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static B: Buffers = Buffers::new(false);

    #[test]
    fn guard_releases_on_drop() {
        B.set_large_threshold(100);
        let small = B.track(BufferKind::GetData, 10);
        let big = B.track(BufferKind::FlushData, 1000);
        assert_eq!(B.get_data.snapshot().size, 10);
        assert_eq!(B.alloc_rl.snapshot().size, 1000);
        drop(small);
        drop(big);
        for (_, s) in B.all() {
            assert_eq!((s.count, s.size), (0, 0));
        }
        assert_eq!(B.flush_data.snapshot().max_size, 1000);
    }
}
