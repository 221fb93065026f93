//! The schema of spec §2: keyspace, the `bdbvalue` UDT, the data tables and the two config
//! tables; plus a tiny splitter for `.cql` scripts (there is no `cqlsh` on the machines).

use scylla::client::session::Session;

use crate::config::valid_name;
use crate::error::{CassandraError, Op};

/// Config table of the rw dispatcher (prefix → status).
pub const RW_SWITCHER_TABLE: &str = "bdb_prefix_rw_switcher";
/// Config table of the table dispatcher (prefix → table).
pub const TABLE_FINDER_TABLE: &str = "bdb_prefix_table_finder";
/// Name of the value UDT.
pub const UDT_NAME: &str = "bdbvalue";

/// Replication of a keyspace created by [`SchemaSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// `SimpleStrategy` with this replication factor (tests, single DC).
    Simple(u32),
    /// `NetworkTopologyStrategy` with (dc, rf) pairs.
    NetworkTopology(Vec<(String, u32)>),
}

impl Replication {
    fn to_cql(&self) -> Result<String, CassandraError> {
        Ok(match self {
            Replication::Simple(rf) => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {rf}}}")
            }
            Replication::NetworkTopology(dcs) => {
                let mut s = String::from("{'class': 'NetworkTopologyStrategy'");
                for (dc, rf) in dcs {
                    // DC names go into a string literal; refuse anything that needs escaping.
                    if dc.is_empty() || dc.contains('\'') {
                        return Err(CassandraError::Config(format!(
                            "schema: bad datacenter name {dc:?}"
                        )));
                    }
                    s.push_str(&format!(", '{dc}': {rf}"));
                }
                s.push('}');
                s
            }
        })
    }
}

/// What to create. All statements use `IF NOT EXISTS`, so creating twice is harmless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaSpec {
    pub keyspace: String,
    /// `None`: the keyspace exists already (production creates it by hand, §2.3).
    pub replication: Option<Replication>,
    /// Data tables `(key blob PRIMARY KEY, value bdbvalue)`, e.g. `kvstore`, `kvstore_ark`.
    pub data_tables: Vec<String>,
    /// Config tables `(prefix text PRIMARY KEY, value text)`.
    pub config_tables: Vec<String>,
    /// Store `value` as `frozen<bdbvalue>` (the proxy must work with both, §2.1).
    pub frozen_value: bool,
}

impl SchemaSpec {
    /// The deployed shape: `value` non-frozen, both config tables.
    pub fn new(keyspace: &str, data_tables: &[&str]) -> Self {
        SchemaSpec {
            keyspace: keyspace.to_string(),
            replication: None,
            data_tables: data_tables.iter().map(|t| t.to_string()).collect(),
            config_tables: vec![RW_SWITCHER_TABLE.into(), TABLE_FINDER_TABLE.into()],
            frozen_value: false,
        }
    }

    pub fn with_replication(mut self, r: Replication) -> Self {
        self.replication = Some(r);
        self
    }

    /// The CQL statements, in execution order.
    pub fn statements(&self) -> Result<Vec<String>, CassandraError> {
        let ks = &self.keyspace;
        for name in std::iter::once(ks)
            .chain(&self.data_tables)
            .chain(&self.config_tables)
        {
            if !valid_name(name) {
                return Err(CassandraError::Config(format!(
                    "schema: bad name {name:?} (letters, digits, _; max 48)"
                )));
            }
        }
        let mut out = Vec::new();
        if let Some(r) = &self.replication {
            out.push(format!(
                "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {}",
                r.to_cql()?
            ));
        }
        out.push(format!(
            "CREATE TYPE IF NOT EXISTS {ks}.{UDT_NAME} \
             (rtime timestamp, flag int, exptime int, cas int, body blob)"
        ));
        let value_type = if self.frozen_value {
            format!("frozen<{ks}.{UDT_NAME}>")
        } else {
            format!("{ks}.{UDT_NAME}")
        };
        for t in &self.data_tables {
            out.push(format!(
                "CREATE TABLE IF NOT EXISTS {ks}.{t} (key blob PRIMARY KEY, value {value_type}) \
                 WITH compression = {{'class': 'ZstdCompressor'}}"
            ));
        }
        for t in &self.config_tables {
            out.push(format!(
                "CREATE TABLE IF NOT EXISTS {ks}.{t} (prefix text PRIMARY KEY, value text)"
            ));
        }
        Ok(out)
    }

    /// Runs [`Self::statements`] one by one; the driver waits for schema agreement after each.
    pub async fn create(&self, session: &Session) -> Result<(), CassandraError> {
        for stmt in self.statements()? {
            run_ddl(session, &stmt).await?;
        }
        Ok(())
    }
}

/// Runs one statement without bound values (DDL, role management).
pub async fn run_ddl(session: &Session, cql: &str) -> Result<(), CassandraError> {
    session
        .query_unpaged(cql, &[])
        .await
        .map(|_| ())
        .map_err(|e| {
            let inner = CassandraError::request(Op::Admin, &e);
            CassandraError::Request {
                op: Op::Admin,
                kind: inner.kind(),
                message: format!("{}: {inner}", first_words(cql)),
            }
        })
}

/// The start of a statement, to say which one failed without echoing a whole script (or a
/// `WITH PASSWORD` clause) into an error.
fn first_words(cql: &str) -> String {
    let upper = cql.to_ascii_uppercase();
    let cut = upper.find(" WITH ").unwrap_or(cql.len()).min(80);
    cql[..cut].trim().to_string()
}

/// Splits a `.cql` script into statements: drops `--` and `//` line comments, splits on `;`
/// outside single-quoted strings. Enough for our init scripts; not a full CQL lexer.
pub fn split_cql(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in script.lines() {
        let mut in_str = false;
        for (i, c) in line.char_indices() {
            if in_str {
                cur.push(c);
                if c == '\'' {
                    in_str = false;
                }
                continue;
            }
            match c {
                '\'' => {
                    in_str = true;
                    cur.push(c);
                }
                '-' | '/' if line[i + 1..].starts_with(c) => break,
                ';' => {
                    let s = cur.trim();
                    if !s.is_empty() {
                        out.push(s.to_string());
                    }
                    cur.clear();
                }
                _ => cur.push(c),
            }
        }
        cur.push('\n');
    }
    let s = cur.trim();
    if !s.is_empty() {
        out.push(s.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_match_spec() {
        let s = SchemaSpec::new("doubandb", &["kvstore"])
            .with_replication(Replication::Simple(1))
            .statements()
            .expect("valid");
        assert_eq!(
            s,
            [
                "CREATE KEYSPACE IF NOT EXISTS doubandb WITH replication = \
                 {'class': 'SimpleStrategy', 'replication_factor': 1}",
                "CREATE TYPE IF NOT EXISTS doubandb.bdbvalue \
                 (rtime timestamp, flag int, exptime int, cas int, body blob)",
                "CREATE TABLE IF NOT EXISTS doubandb.kvstore (key blob PRIMARY KEY, \
                 value doubandb.bdbvalue) WITH compression = {'class': 'ZstdCompressor'}",
                "CREATE TABLE IF NOT EXISTS doubandb.bdb_prefix_rw_switcher \
                 (prefix text PRIMARY KEY, value text)",
                "CREATE TABLE IF NOT EXISTS doubandb.bdb_prefix_table_finder \
                 (prefix text PRIMARY KEY, value text)",
            ]
        );
        let nts = Replication::NetworkTopology(vec![("dc1".into(), 3)]);
        assert_eq!(
            nts.to_cql().expect("ok"),
            "{'class': 'NetworkTopologyStrategy', 'dc1': 3}"
        );
    }

    #[test]
    fn bad_names_rejected() {
        let e = SchemaSpec::new("doubandb", &["kv;drop"]).statements();
        assert!(matches!(e, Err(CassandraError::Config(_))));
        let e = SchemaSpec::new("", &["kv"]).statements();
        assert!(matches!(e, Err(CassandraError::Config(_))));
    }

    #[test]
    fn split_script() {
        let s =
            "-- comment; not a statement\nCREATE ROLE r WITH PASSWORD = 'a;b' AND LOGIN = true;\n\
                 // another\nSELECT 1 -- tail ; comment\nFROM t;\n\n  ";
        assert_eq!(
            split_cql(s),
            [
                "CREATE ROLE r WITH PASSWORD = 'a;b' AND LOGIN = true",
                "SELECT 1 \nFROM t"
            ]
        );
        assert_eq!(
            first_words("CREATE ROLE x WITH PASSWORD = 's'"),
            "CREATE ROLE x"
        );
    }
}
