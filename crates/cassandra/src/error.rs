//! Errors of the Cassandra backend.
//!
//! Every variant holds plain strings built when the error is made, never the driver's error
//! value or the config: so nothing in `Display` or `Debug` can carry the password, and connect
//! errors are additionally scrubbed of it (see [`scrub`]).

use scylla::errors::{
    ConnectionError, ConnectionPoolError, ConnectionSetupRequestErrorKind, DbError, ExecutionError,
    MetadataError, NewSessionError, PrepareError, RequestAttemptError,
};

/// Coarse class of a failure, for metrics labels and retry decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Timeout,
    Unavailable,
    Overloaded,
    /// Bad credentials or missing permission.
    Auth,
    Error,
}

impl ErrorKind {
    /// The `result` label of `beansproxy_cstar_requests_total` (auth failures count as error).
    pub fn as_label(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Auth | ErrorKind::Error => "error",
        }
    }
}

/// What a failed request was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Select,
    Insert,
    Delete,
    /// Reads and writes of the dispatcher config tables.
    Cfg,
    /// DDL and other administrative statements.
    Admin,
}

impl Op {
    /// The `op` label of `beansproxy_cstar_requests_total`.
    pub fn as_label(self) -> &'static str {
        match self {
            Op::Select => "select",
            Op::Insert => "insert",
            Op::Delete => "delete",
            Op::Cfg => "cfg",
            Op::Admin => "admin",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CassandraError {
    /// Invalid configuration; the message is complete (spec §3.2 wording).
    #[error("{0}")]
    Config(String),
    /// No session could be established.
    #[error("cassandra: cannot connect to [{hosts}]: {message}")]
    Connect {
        hosts: String,
        kind: ErrorKind,
        message: String,
    },
    /// A statement could not be prepared (typically: the table does not exist).
    #[error("cassandra: table {table}: {message}")]
    Prepare { table: String, message: String },
    /// A statement failed after the driver's retries.
    #[error("{message}")]
    Request {
        op: Op,
        kind: ErrorKind,
        message: String,
    },
    /// A row or column did not have the expected shape.
    #[error("cassandra: bad data in {table}: {message}")]
    Decode { table: String, message: String },
}

impl CassandraError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            CassandraError::Connect { kind, .. } | CassandraError::Request { kind, .. } => *kind,
            CassandraError::Config(_)
            | CassandraError::Prepare { .. }
            | CassandraError::Decode { .. } => ErrorKind::Error,
        }
    }

    pub(crate) fn request(op: Op, e: &ExecutionError) -> Self {
        CassandraError::Request {
            op,
            kind: classify_execution(e),
            message: one_line(&e.to_string()),
        }
    }

    pub(crate) fn prepare(table: &str, e: &PrepareError) -> Self {
        CassandraError::Prepare {
            table: table.to_string(),
            message: one_line(&e.to_string()),
        }
    }

    pub(crate) fn decode(table: &str, e: impl std::fmt::Display) -> Self {
        CassandraError::Decode {
            table: table.to_string(),
            message: one_line(&e.to_string()),
        }
    }

    pub(crate) fn connect(hosts: &[String], e: &NewSessionError, password: &str) -> Self {
        CassandraError::Connect {
            hosts: hosts.join(", "),
            kind: classify_new_session(e),
            message: scrub(&one_line(&e.to_string()), password),
        }
    }
}

/// Collapses a multi-line driver message to one line (it ends up in a memcached reply line).
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Replaces every occurrence of `secret` in `msg`. The driver has no reason to echo the
/// password, but a connect error is the one place where it is in play, so do not rely on that.
pub fn scrub(msg: &str, secret: &str) -> String {
    if secret.is_empty() {
        msg.to_string()
    } else {
        msg.replace(secret, "<redacted>")
    }
}

fn classify_db(e: &DbError) -> ErrorKind {
    match e {
        DbError::ReadTimeout { .. } | DbError::WriteTimeout { .. } => ErrorKind::Timeout,
        DbError::Unavailable { .. } => ErrorKind::Unavailable,
        DbError::Overloaded | DbError::RateLimitReached { .. } => ErrorKind::Overloaded,
        DbError::AuthenticationError | DbError::Unauthorized => ErrorKind::Auth,
        _ => ErrorKind::Error,
    }
}

fn classify_attempt(e: &RequestAttemptError) -> ErrorKind {
    match e {
        RequestAttemptError::DbError(db, _) => classify_db(db),
        _ => ErrorKind::Error,
    }
}

fn classify_execution(e: &ExecutionError) -> ErrorKind {
    match e {
        ExecutionError::RequestTimeout(_) => ErrorKind::Timeout,
        ExecutionError::LastAttemptError(a) => classify_attempt(a),
        ExecutionError::ConnectionPoolError(p) => classify_pool(p),
        _ => ErrorKind::Error,
    }
}

fn classify_pool(e: &ConnectionPoolError) -> ErrorKind {
    match e {
        ConnectionPoolError::Broken {
            last_connection_error,
        } => classify_connection(last_connection_error),
        _ => ErrorKind::Error,
    }
}

fn classify_connection(e: &ConnectionError) -> ErrorKind {
    match e {
        ConnectionError::ConnectTimeout => ErrorKind::Timeout,
        ConnectionError::ConnectionSetupRequestError(s) => match s.get_error() {
            ConnectionSetupRequestErrorKind::DbError(db, _) => classify_db(db),
            _ => ErrorKind::Error,
        },
        _ => ErrorKind::Error,
    }
}

fn classify_new_session(e: &NewSessionError) -> ErrorKind {
    match e {
        NewSessionError::MetadataError(MetadataError::ConnectionPoolError(p)) => classify_pool(p),
        _ => ErrorKind::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_and_scrub() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
        assert_eq!(scrub("x pw y pw", "pw"), "x <redacted> y <redacted>");
        assert_eq!(scrub("x", ""), "x");
    }

    #[test]
    fn labels() {
        assert_eq!(ErrorKind::Auth.as_label(), "error");
        assert_eq!(Op::Insert.as_label(), "insert");
    }
}
