//! beansproxy: the routing proxy of the beansdb system (proxy.md).
//!
//! Request path: [`handler`] decodes client requests with the shared protocol codec, takes a
//! [`limiter`] slot and runs the command through [`nwr`] (N/W/R rules, [`getm`] planning,
//! [`quorum`] arithmetic) against the hosts of the current [`cluster`] routing state
//! ([`routing`] table, [`pool`] connections, [`health`]). [`switch`] is the per-key store
//! lookup: beansdb, Cassandra ([`cstar`]) or both, per key prefix.

pub mod accesslog;
pub mod buffers;
pub mod cluster;
pub mod config;
pub mod cstar;
pub mod cstar_cmds;
pub mod dualwrite_log;
pub mod getm;
pub mod handler;
pub mod health;
pub mod http;
pub mod lanes;
pub mod limiter;
pub mod logging;
pub mod metrics;
pub mod nwr;
pub mod pool;
pub mod quorum;
pub mod routing;
pub mod server;
pub mod shadow;
pub mod stats;
pub mod switch;
#[cfg(test)]
mod test_backend;
pub mod trailing;

pub use handler::VERSION;
