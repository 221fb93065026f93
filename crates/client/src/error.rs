use std::fmt;
use std::io;
use std::time::Duration;

use beansdb_protocol::{EncodeError, ErrorKind, ResponseError};

/// Everything a client call can fail with.
///
/// After [`Error::Timeout`], [`Error::Closed`], [`Error::Io`] or [`Error::Protocol`] the
/// connection is out of step with the server and refuses further requests with
/// [`Error::Broken`]; reconnect. [`Error::Server`] leaves the connection usable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot resolve {addr}")]
    Resolve {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("{addr} resolves to no address")]
    NoAddress { addr: String },
    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("connecting to {addr} timed out after {after:?}")]
    ConnectTimeout { addr: String, after: Duration },
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("connection closed by the server")]
    Closed,
    #[error("network I/O failed")]
    Io(#[from] io::Error),
    #[error("request cannot be encoded")]
    Encode(#[from] EncodeError),
    #[error("malformed reply")]
    Protocol(#[from] ResponseError),
    /// `ERROR`, `CLIENT_ERROR <msg>` or `SERVER_ERROR <msg>`.
    #[error("server replied {kind} {msg}")]
    Server { kind: ServerErrorKind, msg: String },
    /// A well-formed reply that makes no sense for the request (e.g. `NOT_FOUND` to `version`).
    #[error("unexpected reply {0}")]
    Unexpected(String),
    #[error("connection unusable after an earlier failure; reconnect")]
    Broken,
    #[error("{0} pipelined replies are still pending")]
    Busy(usize),
    #[error("no reply is pending")]
    NothingPending,
}

impl Error {
    /// A request or connect timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_) | Error::ConnectTimeout { .. })
    }

    /// The transport failed (connect, I/O, EOF, or a connection already broken).
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            Error::Resolve { .. }
                | Error::NoAddress { .. }
                | Error::Connect { .. }
                | Error::ConnectTimeout { .. }
                | Error::Closed
                | Error::Io(_)
                | Error::Broken
        )
    }

    /// The server answered with an error line; the connection is still in step.
    pub fn is_server_reply(&self) -> bool {
        matches!(self, Error::Server { .. })
    }
}

/// Which error line the server sent; mirrors [`beansdb_protocol::ErrorKind`] with a `Display`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerErrorKind {
    /// `ERROR` (unknown command).
    Error,
    /// `CLIENT_ERROR`.
    Client,
    /// `SERVER_ERROR`.
    Server,
}

impl From<ErrorKind> for ServerErrorKind {
    fn from(k: ErrorKind) -> Self {
        match k {
            ErrorKind::Error => ServerErrorKind::Error,
            ErrorKind::Client => ServerErrorKind::Client,
            ErrorKind::Server => ServerErrorKind::Server,
        }
    }
}

impl fmt::Display for ServerErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerErrorKind::Error => "ERROR",
            ServerErrorKind::Client => "CLIENT_ERROR",
            ServerErrorKind::Server => "SERVER_ERROR",
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
