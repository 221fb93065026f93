//! Engine errors; their `Display` is what a client sees after `SERVER_ERROR `.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bucket not served")]
    NotServed,
    #[error("read failed")]
    ReadFailed(String),
    #[error("write failed")]
    WriteFailed(String),
    #[error("no chunk left")]
    NoChunkLeft,
    #[error("{0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl StoreError {
    pub fn io(path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
