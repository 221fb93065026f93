//! Async (tokio) memcached text protocol client for beansdb nodes and proxies (and any
//! memcached-compatible server), built on the sans-I/O codec of `beansdb-protocol`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), beansdb_client::Error> {
//! use beansdb_client::Client;
//! let mut c = Client::connect("127.0.0.1:7900").await?;
//! c.set("k", 0, 0, b"v", false).await?;
//! assert_eq!(c.get("k").await?.map(|v| v.data), Some("v".into()));
//! # Ok(()) }
//! ```
//!
//! * [`Client`]: one connection; convenience calls, or queued requests with `send`/`recv`.
//! * [`PipelineWriter`]/[`PipelineReader`]: a connection split for concurrent pipelining.

mod client;
mod error;
mod pipeline;
mod request;
#[cfg(feature = "test-util")]
pub mod testing;

pub use beansdb_protocol::{ReplyKind, Response, SetKind, Value};
pub use client::{Client, ClientConfig, StoreReply};
pub use error::{Error, Result, ServerErrorKind};
pub use pipeline::{PipelineReader, PipelineWriter};
pub use request::Request;
