//! Against a real Apache Cassandra 5.0 (see src/testing.rs for how it is found or
//! started). One binary, so the node starts once for all of these tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use beansdb_cassandra::scylla::client::session::Session;
use beansdb_cassandra::testing::{self, admin_session, config_for, need_cluster, prefix, store};
use beansdb_cassandra::{
    cluster_name, connect, release_version, schema, BdbValue, CassandraError, CassandraStore,
    ConfigTable, ErrorKind, Replication, SchemaSpec, StoreOptions,
};

fn key(prefix: &str, k: &str) -> Vec<u8> {
    format!("{prefix}{k}").into_bytes()
}

/// Rows of a single-text-column query.
async fn texts(session: &Session, cql: &str) -> Vec<String> {
    let res = session.query_unpaged(cql, &[]).await.expect(cql);
    let rows = res.into_rows_result().expect("rows");
    rows.rows::<(String,)>()
        .expect("typed rows")
        .map(|r| r.expect("row").0)
        .collect()
}

#[tokio::test]
async fn node_identity() {
    let Some(c) = need_cluster("node_identity") else {
        return;
    };
    let s = admin_session(c).await;
    let v = release_version(&s).await.expect("release_version");
    assert!(v.starts_with("5.0."), "{v}");
    assert_eq!(cluster_name(&s).await.expect("cluster_name"), "beans-test");
}

#[tokio::test]
async fn schema_creation_is_spec_shaped_and_idempotent() {
    let Some(c) = need_cluster("schema_creation") else {
        return;
    };
    let s = admin_session(c).await;
    let ks = "beans_schema_it";
    let spec =
        SchemaSpec::new(ks, &["kvstore", "kvstore_ark"]).with_replication(Replication::Simple(1));
    spec.create(&s).await.expect("create");
    spec.create(&s).await.expect("create again");

    let mut tables = texts(
        &s,
        &format!("SELECT table_name FROM system_schema.tables WHERE keyspace_name = '{ks}'"),
    )
    .await;
    tables.sort();
    assert_eq!(
        tables,
        [
            "bdb_prefix_rw_switcher",
            "bdb_prefix_table_finder",
            "kvstore",
            "kvstore_ark"
        ]
    );

    let res = s
        .query_unpaged(
            format!(
                "SELECT field_names, field_types FROM system_schema.types \
                 WHERE keyspace_name = '{ks}' AND type_name = 'bdbvalue'"
            ),
            &[],
        )
        .await
        .expect("types");
    let (names, types) = res
        .into_rows_result()
        .expect("rows")
        .single_row::<(Vec<String>, Vec<String>)>()
        .expect("one UDT");
    assert_eq!(names, ["rtime", "flag", "exptime", "cas", "body"]);
    assert_eq!(types, ["timestamp", "int", "int", "int", "blob"]);

    let res = s
        .query_unpaged(
            format!(
                "SELECT column_name, type, kind FROM system_schema.columns \
                 WHERE keyspace_name = '{ks}' AND table_name = 'kvstore'"
            ),
            &[],
        )
        .await
        .expect("columns");
    let mut cols: Vec<(String, String, String)> = res
        .into_rows_result()
        .expect("rows")
        .rows::<(String, String, String)>()
        .expect("typed")
        .map(|r| r.expect("row"))
        .collect();
    cols.sort();
    assert_eq!(
        cols,
        [
            ("key".into(), "blob".into(), "partition_key".into()),
            // Non-frozen, as gobeansproxy deployed it.
            ("value".into(), "bdbvalue".into(), "regular".into()),
        ]
    );
    let res = s
        .query_unpaged(
            format!(
                "SELECT compression FROM system_schema.tables \
                 WHERE keyspace_name = '{ks}' AND table_name = 'kvstore'"
            ),
            &[],
        )
        .await
        .expect("compression");
    let (comp,) = res
        .into_rows_result()
        .expect("rows")
        .single_row::<(std::collections::HashMap<String, String>,)>()
        .expect("one table");
    assert!(comp["class"].contains("ZstdCompressor"), "{comp:?}");

    // The store works on a freshly created schema, for the non-frozen and the frozen shape.
    let mut frozen = SchemaSpec::new("beans_schema_frozen_it", &["kvstore"])
        .with_replication(Replication::Simple(1));
    frozen.frozen_value = true;
    frozen.create(&s).await.expect("create frozen");
    for keyspace in [ks, "beans_schema_frozen_it"] {
        let mut cfg = config_for(&c.native, testing::SUPERUSER, testing::SUPERUSER);
        cfg.default_key_space = keyspace.into();
        let st = CassandraStore::new(s.clone(), &StoreOptions::from_config(&cfg))
            .await
            .expect("prepare");
        let k = key(&prefix("schema"), keyspace);
        st.set(&k, 7, 3, b"v", beansdb_cassandra::now_micros())
            .await
            .expect("set");
        let v = st.get(&k).await.expect("get").expect("hit");
        assert_eq!((v.flag, v.exptime, v.body.as_slice()), (7, 3, &b"v"[..]));
    }
}

#[tokio::test]
async fn set_get_roundtrip() {
    let Some(c) = need_cluster("set_get_roundtrip") else {
        return;
    };
    let st = store(c, "kvstore").await;
    let p = prefix("roundtrip");
    let ts = beansdb_cassandra::now_micros();
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let mut binary_key = key(&p, "bin");
    binary_key.extend_from_slice(&[0xff, 0x00, 0xfe]);
    let cases: Vec<(Vec<u8>, u32, i32, Vec<u8>)> = vec![
        (key(&p, "plain"), 0, 0, b"hello".to_vec()),
        (key(&p, "empty"), 1, 5, Vec::new()),
        (key(&p, "highflag"), 0x8000_0001, -3, b"x".to_vec()),
        (binary_key, u32::MAX, i32::MAX, vec![0, 1, 2, 255]),
        (key(&p, "big"), 0x10, 1, big),
    ];
    for (k, flag, exptime, body) in &cases {
        st.set(k, *flag, *exptime, body, ts).await.expect("set");
    }
    for (k, flag, exptime, body) in &cases {
        let v = st.get(k).await.expect("get").expect("hit");
        assert_eq!(
            v,
            BdbValue {
                rtime_ms: ts / 1000,
                flag: *flag,
                exptime: *exptime,
                cas: 0,
                body: body.clone(),
            }
        );
    }
    // An empty body is stored as an empty blob, not null.
    let admin = admin_session(c).await;
    let res = admin
        .query_unpaged(
            "SELECT value.body FROM doubandb.kvstore WHERE key = ?",
            (key(&p, "empty"),),
        )
        .await
        .expect("select field");
    let (body,) = res
        .into_rows_result()
        .expect("rows")
        .single_row::<(Option<Vec<u8>>,)>()
        .expect("row");
    assert_eq!(body, Some(Vec::new()));

    // All fields explicitly (cas, rtime ≠ timestamp): the backfill/replay/cas form.
    let full = BdbValue {
        rtime_ms: 1_700_000_000_000,
        flag: 2,
        exptime: 9,
        cas: 0xdead_beef,
        body: b"full".to_vec(),
    };
    st.set_value(&key(&p, "full"), &full, ts)
        .await
        .expect("set_value");
    assert_eq!(st.get(&key(&p, "full")).await.expect("get"), Some(full));
}

#[tokio::test]
async fn missing_rows_null_values_and_null_fields() {
    let Some(c) = need_cluster("missing_rows") else {
        return;
    };
    let st = store(c, "kvstore").await;
    let admin = admin_session(c).await;
    let p = prefix("nulls");
    assert_eq!(st.get(&key(&p, "absent")).await.expect("get"), None);

    // A row whose value is null is a miss.
    admin
        .query_unpaged(
            "INSERT INTO doubandb.kvstore (key) VALUES (?)",
            (key(&p, "nullvalue"),),
        )
        .await
        .expect("insert key only");
    assert_eq!(st.get(&key(&p, "nullvalue")).await.expect("get"), None);

    // Null fields read as 0 / empty body.
    admin
        .query_unpaged(
            "INSERT INTO doubandb.kvstore (key, value) VALUES (?, {flag: 5})",
            (key(&p, "partial"),),
        )
        .await
        .expect("insert partial UDT");
    let v = st
        .get(&key(&p, "partial"))
        .await
        .expect("get")
        .expect("hit");
    assert_eq!(
        v,
        BdbValue {
            flag: 5,
            ..BdbValue::default()
        }
    );
}

#[tokio::test]
async fn get_multi_keeps_order_and_limit() {
    let Some(c) = need_cluster("get_multi") else {
        return;
    };
    let mut cfg = config_for(&c.native, testing::SUPERUSER, testing::SUPERUSER);
    cfg.max_conn_for_getm = 3;
    let session = Arc::new(connect(&cfg).await.expect("connect"));
    let st = CassandraStore::new(session, &StoreOptions::from_config(&cfg))
        .await
        .expect("prepare");
    let p = prefix("getm");
    let ts = beansdb_cassandra::now_micros();
    let keys: Vec<Vec<u8>> = (0..40).map(|i| key(&p, &i.to_string())).collect();
    for (i, k) in keys.iter().enumerate().filter(|(i, _)| i % 3 != 0) {
        st.set(k, i as u32, 0, format!("v{i}").as_bytes(), ts)
            .await
            .expect("set");
    }
    let mut asked = keys.clone();
    asked.push(keys[1].clone()); // a repeated key is answered again, in place
    let got = st.get_multi(&asked).await.expect("get_multi");
    assert_eq!(got.len(), asked.len());
    for (i, v) in got.iter().enumerate() {
        let i = if i == 40 { 1 } else { i };
        if i % 3 == 0 {
            assert_eq!(v, &None, "key {i}");
        } else {
            let v = v.as_ref().expect("hit");
            assert_eq!(
                (v.flag, v.body.clone()),
                (i as u32, format!("v{i}").into_bytes())
            );
        }
    }
    let none: Vec<Vec<u8>> = Vec::new();
    assert!(st.get_multi(&none).await.expect("empty").is_empty());
}

#[tokio::test]
async fn delete_roundtrip() {
    let Some(c) = need_cluster("delete_roundtrip") else {
        return;
    };
    let st = store(c, "kvstore_ark").await;
    let k = key(&prefix("delete"), "k");
    let ts = beansdb_cassandra::now_micros();
    st.set(&k, 0, 0, b"v", ts).await.expect("set");
    assert!(st.get(&k).await.expect("get").is_some());
    st.delete(&k, ts + 1).await.expect("delete");
    assert_eq!(st.get(&k).await.expect("get"), None);
    // Deleting an absent row is fine.
    st.delete(&k, ts + 2).await.expect("delete again");
}

/// Spec C2: the later `USING TIMESTAMP` wins whatever the arrival order.
#[tokio::test]
async fn using_timestamp_semantics() {
    let Some(c) = need_cluster("using_timestamp") else {
        return;
    };
    let st = store(c, "kvstore").await;
    let k = key(&prefix("timestamp"), "k");
    let body = |st: &CassandraStore, k: Vec<u8>| {
        let st = st.clone();
        async move { st.get(&k).await.expect("get").map(|v| v.body) }
    };
    const S: i64 = 1_000_000;
    let t = beansdb_cassandra::now_micros();

    st.set(&k, 0, 0, b"live", t).await.expect("set");
    st.set(&k, 0, 0, b"older", t - S).await.expect("older set");
    assert_eq!(
        body(&st, k.clone()).await.as_deref(),
        Some(&b"live"[..]),
        "older write lost"
    );
    st.set(&k, 0, 0, b"newer", t + S).await.expect("newer set");
    assert_eq!(body(&st, k.clone()).await.as_deref(), Some(&b"newer"[..]));

    // A delete older than the current value does nothing; a newer one shadows it.
    st.delete(&k, t + S / 2).await.expect("old delete");
    assert_eq!(body(&st, k.clone()).await.as_deref(), Some(&b"newer"[..]));
    st.delete(&k, t + 2 * S).await.expect("new delete");
    assert_eq!(body(&st, k.clone()).await, None);
    // A backfill/replay write older than the delete does not resurrect the key...
    st.set(&k, 0, 0, b"backfill", t + S + S / 2)
        .await
        .expect("stale set");
    assert_eq!(body(&st, k.clone()).await, None);
    // ...a newer live write does.
    st.set(&k, 0, 0, b"again", t + 3 * S).await.expect("set");
    assert_eq!(body(&st, k.clone()).await.as_deref(), Some(&b"again"[..]));
}

#[tokio::test]
async fn password_authentication() {
    let Some(c) = need_cluster("password_authentication") else {
        return;
    };
    // The role of init_test.cql logs in, with the password inline or from a file.
    let cfg = config_for(&c.native, testing::TEST_USER, "doubandb_test");
    let s = Arc::new(connect(&cfg).await.expect("login as doubandb_test"));
    let st = CassandraStore::new(s, &StoreOptions::from_config(&cfg))
        .await
        .expect("prepare as doubandb_test");
    let k = key(&prefix("auth"), "k");
    st.set(&k, 0, 0, b"v", beansdb_cassandra::now_micros())
        .await
        .expect("write as doubandb_test");

    let dir = tempfile::tempdir().expect("tempdir");
    let pass = dir.path().join("cstar.pass");
    std::fs::write(&pass, "doubandb_test\n").expect("write password file");
    let mut file_cfg = config_for(&c.native, testing::TEST_USER, "");
    file_cfg.password_file = pass.display().to_string();
    connect(&file_cfg).await.expect("login with password_file");

    // A wrong password: a clear error that never contains the password.
    let secret = "Wr0ng-pa55word-7d1e";
    let bad = config_for(&c.native, testing::TEST_USER, secret);
    let t0 = Instant::now();
    let e = connect(&bad).await.expect_err("wrong password must fail");
    let display = e.to_string();
    let debug = format!("{e:?}");
    eprintln!("wrong-password error: {display}");
    assert!(!display.contains(secret), "{display}");
    assert!(!debug.contains(secret), "{debug}");
    assert!(
        display.starts_with(&format!("cassandra: cannot connect to [{}]: ", c.native)),
        "{display}"
    );
    let lower = display.to_lowercase();
    assert!(
        lower.contains("password") || lower.contains("authenticat"),
        "error does not say it is about authentication: {display}"
    );
    assert_eq!(e.kind(), ErrorKind::Auth, "{debug}");
    assert!(t0.elapsed() < Duration::from_secs(30));

    // No credentials at all against PasswordAuthenticator: also a clear failure.
    let anon = config_for(&c.native, "", "");
    let e = connect(&anon).await.expect_err("anonymous login must fail");
    assert!(matches!(e, CassandraError::Connect { .. }), "{e:?}");
}

#[tokio::test]
async fn unreachable_node_fails_with_hosts_in_message() {
    // Needs no node, but keep the harness order: the other tests' node must not be disturbed.
    let Some(_c) = need_cluster("unreachable_node") else {
        return;
    };
    let mut cfg = config_for("127.0.0.1:1", testing::SUPERUSER, testing::SUPERUSER);
    cfg.connect_timeout_ms = 1000;
    let t0 = Instant::now();
    let e = connect(&cfg).await.expect_err("nothing listens on port 1");
    assert!(
        e.to_string()
            .starts_with("cassandra: cannot connect to [127.0.0.1:1]: "),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn prepare_of_missing_table_names_it() {
    let Some(c) = need_cluster("prepare_missing") else {
        return;
    };
    let s = admin_session(c).await;
    let cfg = config_for(&c.native, testing::SUPERUSER, testing::SUPERUSER);
    let e = CassandraStore::new(s, &StoreOptions::for_table(&cfg, "no_such_table"))
        .await
        .expect_err("table does not exist");
    assert!(
        e.to_string()
            .starts_with("cassandra: table doubandb.no_such_table: "),
        "{e}"
    );
}

#[tokio::test]
async fn config_tables_text_and_blob_prefix() {
    let Some(c) = need_cluster("config_tables") else {
        return;
    };
    let s = admin_session(c).await;
    let p = prefix("cfg");

    // Our schema: prefix text.
    let t = ConfigTable::new(s.clone(), "doubandb", schema::RW_SWITCHER_TABLE)
        .await
        .expect("prepare rw switcher");
    assert!(!t.prefix_is_blob());
    t.upsert(p.as_bytes(), "br1w1cr0w1").await.expect("upsert");
    t.upsert(p.as_bytes(), "br0w1cr1w1")
        .await
        .expect("overwrite");
    let rows = t.load().await.expect("load");
    assert!(rows.contains(&(p.clone().into_bytes(), "br0w1cr1w1".into())));
    assert!(
        t.upsert(&[0xff, 0xfe], "x").await.is_err(),
        "non-UTF-8 into text"
    );
    t.remove(p.as_bytes()).await.expect("remove");
    let rows = t.load().await.expect("load");
    assert!(!rows.iter().any(|(k, _)| k == p.as_bytes()));

    // A hand-made gobeansproxy-style table: prefix blob, raw bytes round-trip.
    schema::run_ddl(
        &s,
        "CREATE TABLE IF NOT EXISTS doubandb.switcher_blob_it (prefix blob PRIMARY KEY, value text)",
    )
    .await
    .expect("create blob table");
    let b = ConfigTable::new(s.clone(), "doubandb", "switcher_blob_it")
        .await
        .expect("prepare blob table");
    assert!(b.prefix_is_blob());
    let mut raw = p.clone().into_bytes();
    raw.extend_from_slice(&[0xff, 0x00]);
    b.upsert(&raw, "kvstore_ark").await.expect("upsert blob");
    let rows = b.load().await.expect("load blob");
    assert!(rows.contains(&(raw.clone(), "kvstore_ark".into())));
}
