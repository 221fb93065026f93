//! beansdb storage node: memcached server, config, HTTP admin, logging and metrics.
pub mod accesslog;
pub mod config;
pub mod http;
pub mod http_gc;
pub mod logging;
pub mod metrics;
pub mod run;
pub mod server;
pub mod stats;
