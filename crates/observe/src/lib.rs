//! Observability plumbing shared by `beansdb` (node) and `beansproxy`.
//!
//! Only logic that is the same in both lives here; where the two differ (level padding,
//! source location, in-memory log history, snapshot clamping) the difference is a parameter
//! so neither binary's output changes.

pub mod accesslog;
pub mod buffers;
pub mod log;
pub mod process;
