//! beansdb on-disk formats and the log-structured storage engine (no networking).
//!
//! Formats (`record`, `hint`, `htree`, `collision`, `nextgc`, `compress`, `datafile`) are
//! bit-compatible with gobeansdb 2.1; the engine (`store`, `bucket`, `writer`) implements
//! node.md §6.
mod admin;
pub mod bucket;
pub mod buffers;
pub mod buildhint;
pub mod collision;
pub mod compress;
pub mod config;
pub mod datafile;
pub mod error;
pub mod gc;
pub mod hint;
pub mod htree;
pub mod metrics;
pub mod nextgc;
pub mod record;
pub mod store;
mod writer;

pub use bucket::{BucketInfo, Durable, KeyMeta, WriteOutcome};
pub use config::{FsyncPolicy, StoreConfig};
pub use error::StoreError;
pub use gc::{GcError, GcPlan, GcQueryEntry, GcRequest, GcState};
pub use store::{Store, Value};
