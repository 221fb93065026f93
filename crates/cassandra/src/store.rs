//! Reads and writes of `bdbvalue` rows in one data table (spec §5.1).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::stream::{self, StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;
use scylla::{DeserializeValue, SerializeValue};

use crate::config::{valid_name, CassandraConfig};
use crate::error::{CassandraError, Op};

/// A row's value as the proxy sees it. Null UDT fields read as 0 / empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BdbValue {
    /// Receive time of the write, ms since the epoch.
    pub rtime_ms: i64,
    /// Client flags (stored as the i32 with the same bits).
    pub flag: u32,
    /// Client exptime as sent (beansdb's "version").
    pub exptime: i32,
    /// casid of a `cas` command (low 32 bits), else 0.
    pub cas: u32,
    pub body: Vec<u8>,
}

/// Write side of the UDT: borrows the body so a 10 MiB value is not copied.
/// Matched to the UDT by field name (the derive's default flavour).
#[derive(SerializeValue)]
struct UdtOut<'a> {
    rtime: CqlTimestamp,
    flag: i32,
    exptime: i32,
    cas: i32,
    body: &'a [u8],
}

/// Read side: every field may be null (rows written field by field, or by other tools).
#[derive(DeserializeValue)]
struct UdtIn {
    rtime: Option<CqlTimestamp>,
    flag: Option<i32>,
    exptime: Option<i32>,
    cas: Option<i32>,
    body: Option<Vec<u8>>,
}

impl From<UdtIn> for BdbValue {
    fn from(u: UdtIn) -> Self {
        BdbValue {
            rtime_ms: u.rtime.map_or(0, |t| t.0),
            // Bit-pattern casts: the UDT has signed ints, beansdb flags and casids are u32.
            flag: u.flag.unwrap_or(0) as u32,
            exptime: u.exptime.unwrap_or(0),
            cas: u.cas.unwrap_or(0) as u32,
            body: u.body.unwrap_or_default(),
        }
    }
}

/// Statement settings of a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub keyspace: String,
    pub table: String,
    /// Request timeout of SELECTs.
    pub select_timeout: Duration,
    /// Request timeout of INSERT/DELETE.
    pub write_timeout: Duration,
    /// Concurrent SELECTs of one [`CassandraStore::get_multi`]; at least 1.
    pub max_conn_for_getm: usize,
}

impl StoreOptions {
    /// The default table of `cfg` with its timeouts.
    pub fn from_config(cfg: &CassandraConfig) -> Self {
        Self::for_table(cfg, &cfg.default_table)
    }

    /// Another table (from the table dispatcher) with the timeouts of `cfg`.
    pub fn for_table(cfg: &CassandraConfig, table: &str) -> Self {
        StoreOptions {
            keyspace: cfg.default_key_space.clone(),
            table: table.to_string(),
            select_timeout: cfg.select_timeout(),
            write_timeout: cfg.write_timeout(),
            max_conn_for_getm: cfg.max_conn_for_getm,
        }
    }
}

/// The prepared SELECT / INSERT / DELETE of one data table. Cheap to clone.
#[derive(Clone)]
pub struct CassandraStore {
    session: Arc<Session>,
    /// `ks.table`, for error messages.
    name: String,
    select: PreparedStatement,
    insert: PreparedStatement,
    delete: PreparedStatement,
    max_conn_for_getm: usize,
}

impl std::fmt::Debug for CassandraStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CassandraStore")
            .field("table", &self.name)
            .finish()
    }
}

impl CassandraStore {
    /// Prepares the three statements; fails with `cassandra: table ks.T: <server error>` when
    /// the table does not exist or has another shape.
    pub async fn new(session: Arc<Session>, opts: &StoreOptions) -> Result<Self, CassandraError> {
        for name in [&opts.keyspace, &opts.table] {
            if !valid_name(name) {
                return Err(CassandraError::Config(format!(
                    "bad table name {name:?} (letters, digits, _; max 48)"
                )));
            }
        }
        let name = format!("{}.{}", opts.keyspace, opts.table);
        let prepare = |cql: String, timeout: Duration| {
            let session = session.clone();
            let name = name.clone();
            async move {
                let mut p = session
                    .prepare(cql)
                    .await
                    .map_err(|e| CassandraError::prepare(&name, &e))?;
                // Safe to retry and to speculate: reads, and writes with explicit timestamps.
                p.set_is_idempotent(true);
                p.set_request_timeout(Some(timeout));
                Ok::<_, CassandraError>(p)
            }
        };
        let select = prepare(
            format!("SELECT value FROM {name} WHERE key = ?"),
            opts.select_timeout,
        )
        .await?;
        let insert = prepare(
            format!("INSERT INTO {name} (key, value) VALUES (?, ?) USING TIMESTAMP ?"),
            opts.write_timeout,
        )
        .await?;
        let delete = prepare(
            format!("DELETE FROM {name} USING TIMESTAMP ? WHERE key = ?"),
            opts.write_timeout,
        )
        .await?;
        Ok(CassandraStore {
            session,
            name,
            select,
            insert,
            delete,
            max_conn_for_getm: opts.max_conn_for_getm.max(1),
        })
    }

    /// `ks.table`.
    pub fn table(&self) -> &str {
        &self.name
    }

    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// The row of `key`; `None` when there is no row or `value` is null.
    pub async fn get(&self, key: &[u8]) -> Result<Option<BdbValue>, CassandraError> {
        let res = self
            .session
            .execute_unpaged(&self.select, (key,))
            .await
            .map_err(|e| CassandraError::request(Op::Select, &e))?;
        let rows = res
            .into_rows_result()
            .map_err(|e| CassandraError::decode(&self.name, e))?;
        let row = rows
            .maybe_first_row::<(Option<UdtIn>,)>()
            .map_err(|e| CassandraError::decode(&self.name, e))?;
        Ok(row.and_then(|(v,)| v).map(BdbValue::from))
    }

    /// One SELECT per key, at most `max_conn_for_getm` in flight; results in the order of
    /// `keys`. Any failure fails the whole call (no partial results, spec §5.4).
    pub async fn get_multi<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
    ) -> Result<Vec<Option<BdbValue>>, CassandraError> {
        stream::iter(keys)
            .map(|k| self.get(k.as_ref()))
            .buffered(self.max_conn_for_getm)
            .try_collect()
            .await
    }

    /// Writes `{rtime, flag, exptime, cas: 0, body}` with `USING TIMESTAMP write_ts_micros`;
    /// `rtime` is the write time in ms, as for a live proxy write.
    pub async fn set(
        &self,
        key: &[u8],
        flag: u32,
        exptime: i32,
        body: &[u8],
        write_ts_micros: i64,
    ) -> Result<(), CassandraError> {
        self.set_cas(key, flag, exptime, 0, body, write_ts_micros)
            .await
    }

    /// [`Self::set`] of a `cas` command: `cas` is the low 32 bits of its unique value.
    pub async fn set_cas(
        &self,
        key: &[u8],
        flag: u32,
        exptime: i32,
        cas: u32,
        body: &[u8],
        write_ts_micros: i64,
    ) -> Result<(), CassandraError> {
        let udt = UdtOut {
            rtime: CqlTimestamp(write_ts_micros.div_euclid(1000)),
            flag: flag as i32,
            exptime,
            cas: cas as i32,
            body,
        };
        self.insert(key, udt, write_ts_micros).await
    }

    /// Writes all fields of `value` with `USING TIMESTAMP write_ts_micros`: for `cas` writes,
    /// and for backfill and replay, whose `rtime` is not the write timestamp.
    pub async fn set_value(
        &self,
        key: &[u8],
        value: &BdbValue,
        write_ts_micros: i64,
    ) -> Result<(), CassandraError> {
        let udt = UdtOut {
            rtime: CqlTimestamp(value.rtime_ms),
            flag: value.flag as i32,
            exptime: value.exptime,
            cas: value.cas as i32,
            body: &value.body,
        };
        self.insert(key, udt, write_ts_micros).await
    }

    async fn insert(
        &self,
        key: &[u8],
        udt: UdtOut<'_>,
        write_ts_micros: i64,
    ) -> Result<(), CassandraError> {
        self.session
            .execute_unpaged(&self.insert, (key, udt, write_ts_micros))
            .await
            .map(|_| ())
            .map_err(|e| CassandraError::request(Op::Insert, &e))
    }

    /// Deletes the row with `USING TIMESTAMP write_ts_micros`: it shadows every older write and
    /// is shadowed by every newer one.
    pub async fn delete(&self, key: &[u8], write_ts_micros: i64) -> Result<(), CassandraError> {
        self.session
            .execute_unpaged(&self.delete, (write_ts_micros, key))
            .await
            .map(|_| ())
            .map_err(|e| CassandraError::request(Op::Delete, &e))
    }
}

/// Write timestamps in µs since the epoch, strictly increasing within the process
/// (`max(now, last + 1)`, spec §5.1), so two writes of one key never tie.
#[derive(Debug, Default)]
pub struct WriteClock {
    last: AtomicI64,
}

impl WriteClock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn next_micros(&self) -> i64 {
        let now = now_micros();
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }
}

/// Wall-clock µs since the epoch (0 if the clock is before 1970).
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_strictly_increases() {
        let c = WriteClock::new();
        let mut prev = c.next_micros();
        assert!(prev > 1_600_000_000_000_000);
        for _ in 0..10_000 {
            let t = c.next_micros();
            assert!(t > prev);
            prev = t;
        }
    }

    #[test]
    fn null_fields_read_as_zero() {
        let v = BdbValue::from(UdtIn {
            rtime: None,
            flag: Some(-1),
            exptime: None,
            cas: Some(i32::MIN),
            body: None,
        });
        assert_eq!(
            v,
            BdbValue {
                rtime_ms: 0,
                flag: u32::MAX,
                exptime: 0,
                cas: 0x8000_0000,
                body: Vec::new()
            }
        );
    }
}
