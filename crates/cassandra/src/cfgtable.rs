//! The dispatcher config tables (spec §2.2): `prefix → value` rows.
//!
//! Tables created by hand after gobeansproxy's sample have `prefix blob`; ours have
//! `prefix text`. The type in the prepared statement's metadata decides how the prefix binds.

use std::sync::Arc;

use futures::TryStreamExt;
use scylla::client::session::Session;
use scylla::frame::response::result::{ColumnType, NativeType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlValue;

use crate::config::valid_name;
use crate::error::{CassandraError, Op};

/// One config table with its prepared statements.
#[derive(Clone)]
pub struct ConfigTable {
    session: Arc<Session>,
    name: String,
    select: PreparedStatement,
    insert: PreparedStatement,
    delete: PreparedStatement,
    prefix_is_blob: bool,
}

impl std::fmt::Debug for ConfigTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigTable")
            .field("table", &self.name)
            .field("prefix_is_blob", &self.prefix_is_blob)
            .finish()
    }
}

fn prefix_type_is_blob(name: &str, typ: &ColumnType<'_>) -> Result<bool, CassandraError> {
    match typ {
        ColumnType::Native(NativeType::Blob) => Ok(true),
        ColumnType::Native(NativeType::Text | NativeType::Ascii) => Ok(false),
        other => Err(CassandraError::decode(
            name,
            format!("prefix column has type {other:?}; want text or blob"),
        )),
    }
}

impl ConfigTable {
    pub async fn new(
        session: Arc<Session>,
        keyspace: &str,
        table: &str,
    ) -> Result<Self, CassandraError> {
        for n in [keyspace, table] {
            if !valid_name(n) {
                return Err(CassandraError::Config(format!(
                    "bad table name {n:?} (letters, digits, _; max 48)"
                )));
            }
        }
        let name = format!("{keyspace}.{table}");
        let prepare = |cql: String| {
            let session = session.clone();
            let name = name.clone();
            async move {
                let mut p = session
                    .prepare(cql)
                    .await
                    .map_err(|e| CassandraError::prepare(&name, &e))?;
                p.set_is_idempotent(true);
                Ok::<_, CassandraError>(p)
            }
        };
        let select = prepare(format!("SELECT prefix, value FROM {name}")).await?;
        let insert = prepare(format!("INSERT INTO {name} (prefix, value) VALUES (?, ?)")).await?;
        let delete = prepare(format!("DELETE FROM {name} WHERE prefix = ?")).await?;
        let specs = insert.get_variable_col_specs();
        let prefix_spec = specs
            .get_by_index(0)
            .ok_or_else(|| CassandraError::decode(&name, "INSERT has no bound columns"))?;
        let prefix_is_blob = prefix_type_is_blob(&name, prefix_spec.typ())?;
        Ok(ConfigTable {
            session,
            name,
            select,
            insert,
            delete,
            prefix_is_blob,
        })
    }

    /// `ks.table`.
    pub fn table(&self) -> &str {
        &self.name
    }

    /// Whether `prefix` is a `blob` column (else text).
    pub fn prefix_is_blob(&self) -> bool {
        self.prefix_is_blob
    }

    fn bind_prefix(&self, prefix: &[u8]) -> Result<CqlValue, CassandraError> {
        if self.prefix_is_blob {
            Ok(CqlValue::Blob(prefix.to_vec()))
        } else {
            String::from_utf8(prefix.to_vec())
                .map(CqlValue::Text)
                .map_err(|_| {
                    CassandraError::Config(format!(
                        "prefix {:?} is not UTF-8 but {}.prefix is text",
                        String::from_utf8_lossy(prefix),
                        self.name
                    ))
                })
        }
    }

    /// All rows (paged), as (prefix bytes, value).
    pub async fn load(&self) -> Result<Vec<(Vec<u8>, String)>, CassandraError> {
        let pager = self
            .session
            .execute_iter(self.select.clone(), &[])
            .await
            .map_err(|e| CassandraError::Request {
                op: Op::Cfg,
                kind: crate::error::ErrorKind::Error,
                message: crate::error::one_line(&e.to_string()),
            })?;
        let rows: Vec<(CqlValue, Option<String>)> = pager
            .rows_stream::<(CqlValue, Option<String>)>()
            .map_err(|e| CassandraError::decode(&self.name, e))?
            .try_collect()
            .await
            .map_err(|e| CassandraError::Request {
                op: Op::Cfg,
                kind: crate::error::ErrorKind::Error,
                message: crate::error::one_line(&e.to_string()),
            })?;
        rows.into_iter()
            .map(|(p, v)| {
                let prefix = match p {
                    CqlValue::Blob(b) => b,
                    CqlValue::Text(s) | CqlValue::Ascii(s) => s.into_bytes(),
                    other => {
                        return Err(CassandraError::decode(
                            &self.name,
                            format!("prefix {other:?} is neither text nor blob"),
                        ))
                    }
                };
                Ok((prefix, v.unwrap_or_default()))
            })
            .collect()
    }

    /// Inserts or overwrites one row.
    pub async fn upsert(&self, prefix: &[u8], value: &str) -> Result<(), CassandraError> {
        let p = self.bind_prefix(prefix)?;
        self.session
            .execute_unpaged(&self.insert, (p, value))
            .await
            .map(|_| ())
            .map_err(|e| CassandraError::request(Op::Cfg, &e))
    }

    /// Deletes one row (absent rows are fine).
    pub async fn remove(&self, prefix: &[u8]) -> Result<(), CassandraError> {
        let p = self.bind_prefix(prefix)?;
        self.session
            .execute_unpaged(&self.delete, (p,))
            .await
            .map(|_| ())
            .map_err(|e| CassandraError::request(Op::Cfg, &e))
    }
}
