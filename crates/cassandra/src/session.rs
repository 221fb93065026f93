//! Building a driver session from the config (spec §3.3).

use std::num::NonZeroUsize;
use std::sync::Arc;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::client::PoolSize;

use crate::config::CassandraConfig;
use crate::error::{CassandraError, Op};
use crate::retry::RetryNumPolicy;

/// Connects to the contact points of `cfg`: pool of `num_conns` per node, `connect_timeout_ms`,
/// password authentication when `username` is set, and a default execution profile carrying
/// the consistency, `retry_num` and `timeout_ms` (statements override the timeout).
pub async fn connect(cfg: &CassandraConfig) -> Result<Session, CassandraError> {
    let hosts = cfg.contact_points()?;
    let consistency = cfg.consistency()?;
    let pool = NonZeroUsize::new(cfg.num_conns)
        .ok_or_else(|| CassandraError::Config("config: cassandra.num_conns must be ≥ 1".into()))?;
    let creds = cfg.credentials()?;

    let profile = ExecutionProfile::builder()
        .consistency(consistency)
        .request_timeout(Some(cfg.select_timeout()))
        .retry_policy(Arc::new(RetryNumPolicy::new(cfg.retry_num)))
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&hosts)
        .connection_timeout(cfg.connect_timeout())
        .pool_size(PoolSize::PerHost(pool))
        .default_execution_profile_handle(profile.into_handle());
    let mut password = String::new();
    if let Some(c) = creds {
        password = c.password.expose().to_string();
        builder = builder.user(c.username, c.password.expose());
    }
    let session = builder
        .build()
        .await
        .map_err(|e| CassandraError::connect(&hosts, &e, &password))?;
    // The pool connects lazily after build(); the first query shows whether the credentials
    // and the node actually work, so a bad setup fails here and not on the first request.
    release_version(&session).await.map_err(|e| match e {
        CassandraError::Request { kind, message, .. } => CassandraError::Connect {
            hosts: hosts.join(", "),
            kind,
            message: crate::error::scrub(&message, &password),
        },
        other => other,
    })?;
    Ok(session)
}

async fn single_text(session: &Session, cql: &str, what: &str) -> Result<String, CassandraError> {
    let res = session
        .query_unpaged(cql, &[])
        .await
        .map_err(|e| CassandraError::request(Op::Admin, &e))?;
    let rows = res
        .into_rows_result()
        .map_err(|e| CassandraError::decode(what, e))?;
    let (v,) = rows
        .first_row::<(String,)>()
        .map_err(|e| CassandraError::decode(what, e))?;
    Ok(v)
}

/// `SELECT release_version FROM system.local`, e.g. `5.0.9`.
pub async fn release_version(session: &Session) -> Result<String, CassandraError> {
    single_text(
        session,
        "SELECT release_version FROM system.local",
        "system.local",
    )
    .await
}

/// `SELECT cluster_name FROM system.local`: the access-log target of C* operations.
pub async fn cluster_name(session: &Session) -> Result<String, CassandraError> {
    single_text(
        session,
        "SELECT cluster_name FROM system.local",
        "system.local",
    )
    .await
}
