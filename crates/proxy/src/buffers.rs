//! `/buffer/` accounting (proxy.md §7.2): four live counters of value buffers.
//!
//! The counters and the [`Tracked`] drop guard are shared with the node. The proxy accounts
//! GetData (value bytes received from backends, until written to the client or discarded) and
//! SetData (storage-command bodies, until every backend write using them finished); FlushData
//! stays 0 because the proxy has no write buffers of its own.

pub use beansdb_observe::buffers::{BufferKind as BufKind, Buffers, Tracked};

/// The proxy's counters; a reader racing a release never reports a negative figure.
pub static BUFFERS: Buffers = Buffers::new(true);

/// Starts accounting `size` bytes of `kind` in [`BUFFERS`] until the guard drops.
pub fn track(kind: BufKind, size: usize) -> Tracked {
    BUFFERS.track(kind, size)
}

/// The `/buffer/` JSON object.
pub fn to_json() -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (name, s) in BUFFERS.all() {
        m.insert(
            name.to_string(),
            serde_json::to_value(s).unwrap_or(serde_json::Value::Null),
        );
    }
    serde_json::Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_releases_on_drop() {
        // Other tests may hold guards concurrently; compare deltas of a big, unique size.
        let before = BUFFERS.set_data.snapshot();
        let g = track(BufKind::SetData, 1 << 20);
        let during = BUFFERS.set_data.snapshot();
        assert!(during.size >= before.size + (1 << 20));
        assert!(BUFFERS.alloc_rl.snapshot().size >= 1 << 20);
        assert!(during.max_size >= 1 << 20);
        drop(g);
        let json = to_json();
        for k in ["AllocRL", "GetData", "SetData", "FlushData"] {
            assert!(json[k]["Count"].is_i64(), "{json}");
            assert!(json[k]["MaxSize"].is_i64(), "{json}");
        }
    }
}
