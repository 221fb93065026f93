//! HTTP admin (node.md §8): the gobeansdb endpoints tools use, `/metrics` and a heap profile.
//!
//! The server starts before the buckets are loaded; store-dependent endpoints answer
//! `starting` until [`Admin::set_node`] is called.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use beansdb_store::BucketInfo;
use serde_json::{json, Value};

use crate::logging::LogSink;
use crate::server::Node;

pub struct Admin {
    node: OnceLock<Arc<Node>>,
    pub config_json: Value,
    pub route_yaml: String,
    pub numbucket: usize,
    pub log: LogSink,
    pub prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

type St = State<Arc<Admin>>;

impl Admin {
    pub fn new(
        config_json: Value,
        route_yaml: String,
        numbucket: usize,
        log: LogSink,
        prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> Admin {
        Admin {
            node: OnceLock::new(),
            config_json,
            route_yaml,
            numbucket,
            log,
            prometheus,
        }
    }

    pub fn set_node(&self, node: Arc<Node>) {
        let _ = self.node.set(node);
    }

    pub(crate) fn node(&self) -> Option<&Arc<Node>> {
        self.node.get()
    }
}

pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/buffers", get(buffers))
        .route("/bucket/{id}", get(bucket))
        .route("/du", get(du))
        .route("/gc/{id}", get(crate::http_gc::gc))
        .route("/config", get(config))
        .route("/route/", get(route))
        .route("/route", get(route))
        .route("/route/version", get(|| async { "-1" }))
        .route(
            "/route/reload",
            get(|| async { "err: not using zookeeper" }),
        )
        .route("/loglast", get(loglast))
        .route("/logbuf", get(logbuf))
        .route("/logbufall", get(logbufall))
        .route("/statgetset", get(statgetset))
        .route("/collision/{id}", get(collision))
        .route("/hash/{khash}", get(hash))
        .route("/rusage", get(rusage))
        .route("/metrics", get(metrics_text))
        .route("/debug/pprof/heap", get(heap_profile))
        .with_state(admin)
}

/// Store-dependent endpoints answer this until the buckets are loaded.
pub(crate) fn starting() -> Response {
    "starting".into_response()
}

fn json_response(v: impl serde::Serialize) -> Response {
    match serde_json::to_string(&v) {
        Ok(s) => ([(header::CONTENT_TYPE, "application/json")], s).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn index() -> Html<&'static str> {
    Html(
        "<html><body><h3>beansdb</h3><ul>\
<li><a href='/buffers'>/buffers</a></li><li><a href='/bucket/all'>/bucket/all</a></li>\
<li><a href='/du'>/du</a></li><li><a href='/gc/query'>/gc/query</a></li>\
<li><a href='/config'>/config</a></li><li><a href='/route/'>/route/</a></li>\
<li><a href='/loglast'>/loglast</a></li><li><a href='/logbuf'>/logbuf</a></li>\
<li><a href='/statgetset'>/statgetset</a></li><li><a href='/rusage'>/rusage</a></li>\
<li><a href='/metrics'>/metrics</a></li><li><a href='/debug/pprof/heap'>/debug/pprof/heap</a></li>\
</ul></body></html>",
    )
}

async fn buffers() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        beansdb_store::buffers::to_json(),
    )
        .into_response()
}

fn parse_bucket(admin: &Admin, hex: &str) -> Option<usize> {
    let id = usize::from_str_radix(hex, 16).ok()?;
    (id < admin.numbucket).then_some(id)
}

pub(crate) fn bucket_links(admin: &Admin) -> String {
    let mut s = String::new();
    for i in 0..admin.numbucket {
        s.push_str(&format!("<a href='/bucket/{i:x}'>{i:x}</a> "));
    }
    s
}

fn bucket_json(node: &Node, info: &BucketInfo) -> Value {
    let last_gc = crate::http_gc::last_gc(node, info.id);
    let hint_state = info.hint_state;
    json!({
        "State": 2,
        "ID": info.id,
        "Home": info.home.display().to_string(),
        "TreeID": {"Chunk": info.tree_id.0, "Split": info.tree_id.1.max(0)},
        "NextGCChunk": info.next_gc,
        "Pos": {"ChunkID": info.head, "Offset": info.head_size},
        "LastGC": last_gc,
        "HintState": hint_state,
        "MaxDumpedHintID": {"Chunk": info.max_dumped_hint.0, "Split": info.max_dumped_hint.1},
        "DU": info.du,
        "NumSameVhash": info.num_same_vhash,
        "SizeSameVhash": info.size_same_vhash,
        "SizeVhashKey": info.same_vhash_key,
        "NumSet": info.num_set,
        "NumGet": info.num_get,
    })
}

async fn bucket(State(admin): St, Path(id): Path<String>) -> Response {
    let Some(node) = admin.node() else {
        return starting();
    };
    if id == "all" {
        let all: Vec<Value> = node
            .store
            .buckets()
            .map(|b| bucket_json(node, &b.info()))
            .collect();
        return json_response(all);
    }
    match parse_bucket(&admin, &id) {
        Some(b) => match node.store.bucket(b) {
            Some(bk) => json_response(bucket_json(node, &bk.info())),
            None => (StatusCode::NOT_FOUND, format!("bucket {id} not served")).into_response(),
        },
        None => Html(bucket_links(&admin)).into_response(),
    }
}

fn bucket_hex(admin: &Admin, id: usize) -> String {
    match admin.numbucket {
        16 => format!("{id:x}"),
        256 => format!("{id:02x}"),
        _ => "0".into(),
    }
}

/// `/` + first component of the resolved bucket directory.
pub(crate) fn disk_root(dir: &std::path::Path) -> String {
    let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let first = real
        .components()
        .find_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .unwrap_or_default();
    format!("/{first}")
}

async fn du(State(admin): St) -> Response {
    let Some(node) = admin.node() else {
        return starting();
    };
    let mut disks: BTreeMap<String, Value> = BTreeMap::new();
    let mut hexes: BTreeMap<String, u64> = BTreeMap::new();
    for b in node.store.buckets() {
        let root = disk_root(&b.dir);
        let (free, all) = crate::stats::disk_space(&b.dir).unwrap_or((0, 0));
        let entry = disks.entry(root.clone()).or_insert_with(|| {
            json!({"Root": root, "All": all, "Used": all.saturating_sub(free), "Free": free, "Buckets": []})
        });
        if let Some(arr) = entry.get_mut("Buckets").and_then(|v| v.as_array_mut()) {
            arr.push(json!(b.id));
        }
        hexes.insert(
            bucket_hex(&admin, b.id),
            beansdb_store::bucket::dir_size(&b.dir),
        );
    }
    json_response(json!({"Disks": disks, "BucketsHex": hexes, "Errs": null}))
}

async fn config(State(admin): St) -> Response {
    json_response(&admin.config_json)
}

async fn route(State(admin): St) -> Response {
    admin.route_yaml.clone().into_response()
}

async fn loglast(State(admin): St) -> Response {
    json_response(admin.log.last())
}

async fn logbuf(State(admin): St) -> String {
    admin.log.buffered(false)
}

async fn logbufall(State(admin): St) -> String {
    admin.log.buffered(true)
}

async fn statgetset(State(admin): St) -> Response {
    let Some(node) = admin.node() else {
        return starting();
    };
    let mut s = String::new();
    for i in 0..admin.numbucket {
        let line = match node.store.bucket(i) {
            Some(b) => {
                let info = b.info();
                format!("{i}: [2, {}, {}]\n", info.num_get, info.num_set)
            }
            None => format!("{i}: [0, 0, 0]\n"),
        };
        s.push_str(&line);
    }
    s.into_response()
}

async fn collision(State(admin): St, Path(id): Path<String>) -> Response {
    let Some(node) = admin.node() else {
        return starting();
    };
    match parse_bucket(&admin, &id).and_then(|b| node.store.bucket(b)) {
        Some(b) => b.collision_yaml().into_response(),
        None => (StatusCode::NOT_FOUND, format!("bucket {id} not served")).into_response(),
    }
}

async fn hash(State(admin): St, Path(khash): Path<String>) -> Response {
    let Some(node) = admin.node() else {
        return starting();
    };
    let Ok(kh) = u64::from_str_radix(&khash, 16) else {
        return (StatusCode::BAD_REQUEST, "bad keyhash").into_response();
    };
    match node.store.raw_record(kh) {
        Ok(Some(r)) => format!(
            "{} \nTS: {}, Flag: {}, Ver: {}, ValueHash: {}, RecSize: {}\n",
            String::from_utf8_lossy(&r.key),
            r.ts,
            r.flag,
            r.ver,
            beansdb_hash::vhash(&r.client_view().1),
            r.record_len()
        )
        .into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "not found").into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn rusage() -> Response {
    json_response(json!(beansdb_observe::process::RusageReport::now()))
}

async fn metrics_text(State(admin): St) -> Response {
    if let Some(node) = admin.node() {
        crate::metrics::refresh(node);
    }
    match &admin.prometheus {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed",
        )
            .into_response(),
    }
}

async fn heap_profile() -> Response {
    let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() else {
        return (StatusCode::NOT_IMPLEMENTED, "heap profiling not available").into_response();
    };
    let mut ctl = ctl.lock().await;
    if !ctl.activated() {
        return (StatusCode::NOT_IMPLEMENTED, "heap profiling not active").into_response();
    }
    match ctl.dump_pprof() {
        Ok(p) => ([(header::CONTENT_TYPE, "application/octet-stream")], p).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
