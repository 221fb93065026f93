//! Live byte counters of value buffers (`/buffers`, node.md §8.1, D8).
//!
//! The counters and the [`Tracked`] drop guard are shared with the proxy; this module owns the
//! node's process-wide instance and its `/buffers` rendering.

pub use beansdb_observe::buffers::{BufferCounter, BufferKind, Buffers, CounterSnapshot, Tracked};

/// The node's counters; snapshots are reported as loaded (no clamping).
pub static BUFFERS: Buffers = Buffers::new(false);

/// Starts accounting `size` bytes of `kind` in [`BUFFERS`] until the guard drops.
pub fn track(kind: BufferKind, size: usize) -> Tracked {
    BUFFERS.track(kind, size)
}

/// `/buffers` JSON object.
pub fn to_json() -> String {
    let [a, g, s, f] = BUFFERS.all();
    format!(
        "{{\"{}\":{},\"{}\":{},\"{}\":{},\"{}\":{}}}",
        a.0,
        snap_json(a.1),
        g.0,
        snap_json(g.1),
        s.0,
        snap_json(s.1),
        f.0,
        snap_json(f.1),
    )
}

fn snap_json(s: CounterSnapshot) -> String {
    format!(
        "{{\"Count\":{},\"Size\":{},\"MaxCount\":{},\"MaxSize\":{}}}",
        s.count, s.size, s.max_count, s.max_size
    )
}
