//! Live byte counters of value buffers (`/buffers`, node.md §8.1, D8).
//!
//! Accounting is tied to ownership: a [`Tracked`] guard adds its size when created and removes
//! it when dropped, so no path (error, timeout, closed connection, panic unwinding) can lose a
//! buffer without releasing its count.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferKind {
    /// Values read for replies and not yet released.
    GetData,
    /// Request bodies received and not yet queued.
    SetData,
    /// Records queued and not yet written to data files.
    FlushData,
}

#[derive(Default)]
pub struct BufferCounter {
    count: AtomicI64,
    size: AtomicI64,
    max_count: AtomicI64,
    max_size: AtomicI64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CounterSnapshot {
    pub count: i64,
    pub size: i64,
    pub max_count: i64,
    pub max_size: i64,
}

impl BufferCounter {
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
    large_threshold: AtomicUsize,
}

pub static BUFFERS: Buffers = Buffers {
    alloc_rl: BufferCounter {
        count: AtomicI64::new(0),
        size: AtomicI64::new(0),
        max_count: AtomicI64::new(0),
        max_size: AtomicI64::new(0),
    },
    get_data: BufferCounter {
        count: AtomicI64::new(0),
        size: AtomicI64::new(0),
        max_count: AtomicI64::new(0),
        max_size: AtomicI64::new(0),
    },
    set_data: BufferCounter {
        count: AtomicI64::new(0),
        size: AtomicI64::new(0),
        max_count: AtomicI64::new(0),
        max_size: AtomicI64::new(0),
    },
    flush_data: BufferCounter {
        count: AtomicI64::new(0),
        size: AtomicI64::new(0),
        max_count: AtomicI64::new(0),
        max_size: AtomicI64::new(0),
    },
    large_threshold: AtomicUsize::new(4096),
};

impl Buffers {
    pub fn set_large_threshold(&self, bytes: usize) {
        self.large_threshold.store(bytes, Ordering::Relaxed);
    }

    fn counter(&self, kind: BufferKind) -> &BufferCounter {
        match kind {
            BufferKind::GetData => &self.get_data,
            BufferKind::SetData => &self.set_data,
            BufferKind::FlushData => &self.flush_data,
        }
    }

    /// `/buffers` JSON object.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"AllocRL\":{},\"GetData\":{},\"SetData\":{},\"FlushData\":{}}}",
            snap_json(self.alloc_rl.snapshot()),
            snap_json(self.get_data.snapshot()),
            snap_json(self.set_data.snapshot()),
            snap_json(self.flush_data.snapshot()),
        )
    }

    pub fn all(&self) -> [(&'static str, CounterSnapshot); 4] {
        [
            ("AllocRL", self.alloc_rl.snapshot()),
            ("GetData", self.get_data.snapshot()),
            ("SetData", self.set_data.snapshot()),
            ("FlushData", self.flush_data.snapshot()),
        ]
    }
}

fn snap_json(s: CounterSnapshot) -> String {
    format!(
        "{{\"Count\":{},\"Size\":{},\"MaxCount\":{},\"MaxSize\":{}}}",
        s.count, s.size, s.max_count, s.max_size
    )
}

/// Accounting guard: counts `size` bytes of `kind` for as long as it lives.
#[derive(Debug)]
pub struct Tracked {
    kind: BufferKind,
    size: usize,
    large: bool,
}

impl Tracked {
    pub fn new(kind: BufferKind, size: usize) -> Tracked {
        let large = size > BUFFERS.large_threshold.load(Ordering::Relaxed);
        BUFFERS.counter(kind).add(size as i64);
        if large {
            BUFFERS.alloc_rl.add(size as i64);
        }
        Tracked { kind, size, large }
    }

    pub fn size(&self) -> usize {
        self.size
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        BUFFERS.counter(self.kind).sub(self.size as i64);
        if self.large {
            BUFFERS.alloc_rl.sub(self.size as i64);
        }
    }
}
