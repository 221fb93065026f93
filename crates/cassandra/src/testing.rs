//! Test support (feature `test-util`): one real Cassandra 5.0 per test binary run (spec
//! cassandra.md §10), used by this crate's and beansctl's integration tests.
//!
//! `CASSANDRA_NATIVE=host:port` in the environment (set by scripts/test.sh, which starts the
//! node once for the whole suite) selects a running node; otherwise the harness runs
//! `scripts/cassandra.sh start` itself, passing its pid so the script stops the node once this
//! process has exited. Either way it waits until a CQL login works, then runs
//! `cassandra/init_test.cql`. Any failure fails the tests; only an explicit
//! `BEANS_SKIP_CASSANDRA=1` (a quick local run by hand) turns them into a loud skip.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::{
    connect, release_version, schema, scylla, CassandraConfig, CassandraStore, Secret, StoreOptions,
};

pub const KEYSPACE: &str = "doubandb";
pub const SUPERUSER: &str = "cassandra";
pub const TEST_USER: &str = "doubandb_test";

pub struct Cluster {
    /// `host:port` of the native transport.
    pub native: String,
    /// The node's work dir (pid file, logs), when known.
    pub dir: Option<PathBuf>,
}

static CLUSTER: OnceLock<Result<Option<Cluster>, String>> = OnceLock::new();

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shared node, ready and with the test schema. `None` only with `BEANS_SKIP_CASSANDRA=1`.
pub fn cluster() -> Option<&'static Cluster> {
    match CLUSTER.get_or_init(init) {
        Ok(c) => c.as_ref(),
        Err(e) => panic!("real Cassandra not available: {e}"),
    }
}

/// Call at the top of every test: `let Some(c) = need_cluster("name") else { return };`
pub fn need_cluster(test: &str) -> Option<&'static Cluster> {
    let c = cluster();
    if c.is_none() {
        eprintln!("!!! SKIPPED {test}: BEANS_SKIP_CASSANDRA=1 is set; no Cassandra test ran !!!");
    }
    c
}

fn init() -> Result<Option<Cluster>, String> {
    if std::env::var("BEANS_SKIP_CASSANDRA").as_deref() == Ok("1") {
        return Ok(None);
    }
    let (native, dir) = match std::env::var("CASSANDRA_NATIVE") {
        Ok(v) if !v.trim().is_empty() => {
            let dir = std::env::var("CASSANDRA_DIR")
                .ok()
                .filter(|d| !d.is_empty())
                .or_else(|| script_value("status", false, "CASSANDRA_DIR=").ok());
            (v.trim().to_string(), dir)
        }
        _ => {
            eprintln!("CASSANDRA_NATIVE is not set: starting Cassandra with scripts/cassandra.sh");
            let native = script_value("start", true, "CASSANDRA_NATIVE=")?;
            let dir = script_value("status", false, "CASSANDRA_DIR=").ok();
            (native, dir)
        }
    };
    // The init needs a runtime of its own: tests each run on their own (dropped) runtime,
    // and this runs inside one of them, where block_on is not allowed.
    let n = native.clone();
    std::thread::spawn(move || -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        rt.block_on(wait_ready_and_init(&n))
    })
    .join()
    .map_err(|_| "init thread panicked".to_string())??;
    Ok(Some(Cluster {
        native,
        dir: dir.map(PathBuf::from),
    }))
}

/// Runs `scripts/cassandra.sh CMD` and returns the value of its `KEY=` output line. `start`
/// passes our pid so the script stops the node once this process has exited.
fn script_value(cmd: &str, owner: bool, key: &str) -> Result<String, String> {
    let script = repo_root().join("scripts/cassandra.sh");
    let mut command = Command::new("bash");
    command.arg(&script).arg(cmd).stdin(Stdio::null());
    if owner {
        command
            .env("BEANS_CASSANDRA_OWNER_PID", std::process::id().to_string())
            .stderr(Stdio::inherit());
    } else {
        command.stderr(Stdio::null());
    }
    let out = command
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/cassandra.sh {cmd} failed ({}); its messages are above",
            out.status
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|s| s.trim().to_string())
        .ok_or_else(|| format!("scripts/cassandra.sh {cmd} printed no {key}: {stdout}"))
}

/// Config for `user`/`password` against the shared node; generous timeouts because the
/// machine is shared with builds.
pub fn config_for(native: &str, user: &str, password: &str) -> CassandraConfig {
    CassandraConfig {
        enable: true,
        hosts: vec![native.to_string()],
        default_key_space: KEYSPACE.into(),
        default_table: "kvstore".into(),
        default_storage: "br0w0cr1w1".into(),
        username: user.into(),
        password: Secret::new(password),
        timeout_ms: 10_000,
        write_timeout_ms: 10_000,
        connect_timeout_ms: 5_000,
        num_conns: 2,
        ..CassandraConfig::default()
    }
}

async fn wait_ready_and_init(native: &str) -> Result<(), String> {
    // Login works only once the node serves CQL and has created the default superuser.
    let cfg = config_for(native, SUPERUSER, SUPERUSER);
    let deadline = Instant::now() + Duration::from_secs(180);
    let session = loop {
        let attempt = async {
            let s = connect(&cfg).await.map_err(|e| e.to_string())?;
            let v = release_version(&s).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((s, v))
        };
        match attempt.await {
            Ok((s, v)) if v.starts_with("5.0.") => break s,
            Ok((_, v)) => return Err(format!("{native} runs Cassandra {v}, want 5.0.x")),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("no CQL login at {native} within 180 s: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let script = std::fs::read_to_string(repo_root().join("cassandra/init_test.cql"))
        .map_err(|e| format!("cassandra/init_test.cql: {e}"))?;
    for stmt in schema::split_cql(&script) {
        schema::run_ddl(&session, &stmt)
            .await
            .map_err(|e| format!("init_test.cql: {e}"))?;
    }
    Ok(())
}

/// A superuser session.
pub async fn admin_session(c: &Cluster) -> Arc<scylla::client::session::Session> {
    let cfg = config_for(&c.native, SUPERUSER, SUPERUSER);
    Arc::new(connect(&cfg).await.expect("superuser session"))
}

/// A store on `doubandb.<table>` as the superuser.
pub async fn store(c: &Cluster, table: &str) -> CassandraStore {
    let cfg = config_for(&c.native, SUPERUSER, SUPERUSER);
    let session = admin_session(c).await;
    CassandraStore::new(session, &StoreOptions::for_table(&cfg, table))
        .await
        .expect("prepare store")
}

/// A key prefix unique to this test and run, so reruns against a kept node never collide.
pub fn prefix(test: &str) -> String {
    format!("/{test}/{}/", crate::now_micros())
}
