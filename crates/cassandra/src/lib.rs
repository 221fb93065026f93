//! Apache Cassandra backend of beansproxy and the migration tools (spec cassandra.md):
//! the `cassandra:` config section, the schema, a session built with the `scylla` driver, the
//! `bdbvalue` data store with `USING TIMESTAMP` writes, and the dispatcher config tables.
//!
//! Nothing here logs or returns the password: [`config::Secret`] hides it from `Debug` and
//! serialization, and [`CassandraError`] holds only scrubbed strings.

pub mod cfgtable;
pub mod config;
pub mod dispatch;
pub mod error;
pub mod retry;
pub mod schema;
pub mod session;
pub mod store;
#[cfg(feature = "test-util")]
pub mod testing;

pub use cfgtable::ConfigTable;
pub use config::{CassandraConfig, Credentials, Secret};
pub use dispatch::{
    lookup_key, Dispatcher, Dispatchers, MapError, PrefixMap, PrefixMapError, Status,
};
pub use error::{CassandraError, ErrorKind, Op};
pub use schema::{Replication, SchemaSpec};
pub use session::{cluster_name, connect, release_version};
pub use store::{now_micros, BdbValue, CassandraStore, StoreOptions, WriteClock};

/// The driver, re-exported so users build against the same version.
pub use scylla;
