//! HTTP admin (proxy.md §7.1–§7.2). Every path answers with and without a trailing slash.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Map, Value};

use crate::cluster::RoutingState;
use crate::handler::Proxy;
use crate::routing::read_order;

pub struct Admin {
    pub proxy: Arc<Proxy>,
    pub prometheus: Option<PrometheusHandle>,
}

type St = axum::extract::State<Arc<Admin>>;

/// Registers `path` and `path/` (or the reverse) for the same handler.
fn both(router: Router<Arc<Admin>>, path: &str, h: MethodRouter<Arc<Admin>>) -> Router<Arc<Admin>> {
    let trimmed = path.trim_end_matches('/');
    router
        .route(trimmed, h.clone())
        .route(&format!("{trimmed}/"), h)
}

pub fn router(admin: Arc<Admin>) -> Router {
    let mut r = Router::new().route("/", get(index));
    r = both(r, "/score/json", get(score_json));
    r = both(r, "/score", get(score_html));
    r = both(r, "/api/partition", get(partition));
    r = both(r, "/api/hosts", get(hosts));
    r = both(r, "/route", get(route));
    r = both(r, "/route/version", get(|| async { "-1" }));
    r = both(r, "/route/reload", get(reload).post(reload));
    r = both(r, "/buffer", get(buffers));
    r = both(r, "/buffers", get(buffers));
    r = both(r, "/config", get(config));
    r = both(r, "/request", get(request));
    r = both(r, "/rusage", get(rusage));
    r = both(r, "/cstar-cfg", axum::routing::any(cstar_cfg));
    r = both(r, "/metrics", get(metrics_text));
    r = both(r, "/debug/pprof/heap", get(heap_profile));
    if admin.proxy.hooks().http_panic {
        r = r.route(
            "/debug/test-panic",
            get(|| async {
                if std::hint::black_box(true) {
                    panic!("test hook: panic in an admin handler");
                }
                "unreachable"
            }),
        );
    }
    r.with_state(admin)
        .layer(axum::middleware::from_fn(catch_panic))
}

/// A panicking admin handler answers 500 instead of dropping the connection; the process and
/// the other endpoints are unaffected.
async fn catch_panic(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use futures::FutureExt;
    let path = req.uri().path().to_string();
    match std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .await
    {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!("admin handler {path} panicked: {what}");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}

fn json_response(v: Value) -> Response {
    match serde_json::to_string(&v) {
        Ok(s) => ([(header::CONTENT_TYPE, "application/json")], s).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn index() -> Html<&'static str> {
    Html(
        "<html><body><h3>beansproxy</h3><ul>\
<li><a href='/score/'>/score/</a> (<a href='/score/json'>json</a>)</li>\
<li><a href='/api/partition'>/api/partition</a></li><li><a href='/api/hosts'>/api/hosts</a></li>\
<li><a href='/route/'>/route/</a></li><li><a href='/route/version'>/route/version</a></li>\
<li><a href='/buffer/'>/buffer/</a></li><li><a href='/config/'>/config/</a></li>\
<li><a href='/request/'>/request/</a></li><li><a href='/rusage/'>/rusage/</a></li>\
<li><a href='/metrics'>/metrics</a></li><li><a href='/debug/pprof/heap'>/debug/pprof/heap</a></li>\
</ul></body></html>",
    )
}

/// A score as JSON: whole numbers without a fraction (as the example in §7.2).
fn score_value(s: f64) -> Value {
    let r = (s * 10.0).round() / 10.0;
    if r.fract() == 0.0 && r.abs() < 9.0e15 {
        json!(r as i64)
    } else {
        json!(r)
    }
}

fn scores(state: &RoutingState) -> BTreeMap<String, BTreeMap<String, f64>> {
    let t = &state.table;
    let mut out = BTreeMap::new();
    for b in 0..t.numbucket {
        let mut m = BTreeMap::new();
        for &h in t.mains(b) {
            let host = state.host(h);
            let s = if host.is_up() {
                host.health.score().unwrap_or(0.0)
            } else {
                0.0
            };
            m.insert(host.addr.clone(), s);
        }
        out.insert(state.route.bucket_hex(b), m);
    }
    out
}

async fn score_json(st: St) -> Response {
    let state = st.0.proxy.cluster.current();
    let mut j = Map::new();
    for (b, m) in scores(&state) {
        let inner: Map<String, Value> = m.into_iter().map(|(a, s)| (a, score_value(s))).collect();
        j.insert(b, Value::Object(inner));
    }
    json_response(Value::Object(j))
}

async fn score_html(st: St) -> Html<String> {
    let state = st.0.proxy.cluster.current();
    let mut s = String::from(
        "<html><body><table border=1><tr><th>bucket</th><th>host: score (µs)</th></tr>",
    );
    for (b, m) in scores(&state) {
        s.push_str(&format!("<tr><td>{b}</td><td>"));
        for (a, v) in m {
            s.push_str(&format!("{a}: {v:.1}<br>"));
        }
        s.push_str("</td></tr>");
    }
    s.push_str("</table></body></html>");
    Html(s)
}

async fn partition(st: St) -> Response {
    let p = &st.0.proxy;
    let state = p.cluster.current();
    let t = &state.table;
    let floor = p.cfg.dstore.response_time_min as f64;
    let dev = p.cfg.dstore.score_deviation as f64;
    let mut j = Map::new();
    for b in 0..t.numbucket {
        let mut counts: BTreeMap<String, u64> = t
            .mains(b)
            .iter()
            .map(|&h| (t.addr(h).to_string(), 0))
            .collect();
        for i in 0..100 {
            let key = i.to_string();
            let reps = t.natural_order(key.as_bytes(), b);
            let reps = &reps[..reps.len().min(t.n)];
            let order = read_order(
                reps,
                |h| state.is_down(h),
                |h| state.host(h).health.score().unwrap_or(floor).max(floor),
                dev,
            );
            if let Some(&first) = order.first() {
                *counts.entry(t.addr(first).to_string()).or_insert(0) += 1;
            }
        }
        j.insert(
            state.route.bucket_hex(b),
            Value::Object(counts.into_iter().map(|(a, c)| (a, json!(c))).collect()),
        );
    }
    json_response(Value::Object(j))
}

fn rfc3339(t: Option<std::time::SystemTime>) -> Value {
    match t {
        Some(t) => json!(chrono::DateTime::<chrono::Local>::from(t)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)),
        None => Value::Null,
    }
}

async fn hosts(st: St) -> Response {
    let state = st.0.proxy.cluster.current();
    let mut j = Map::new();
    for h in &state.hosts {
        let v = h.view();
        let c = h.conns();
        j.insert(
            h.addr.clone(),
            json!({
                "up": v.up,
                "score": score_value(v.score.unwrap_or(0.0)),
                "failures": v.failures,
                "down_since": rfc3339(v.down_since),
                "next_probe": rfc3339(v.next_probe),
                "conns_idle": c.idle,
                "conns_busy": c.busy,
            }),
        );
    }
    json_response(Value::Object(j))
}

async fn route(st: St) -> String {
    st.0.proxy.cluster.current().route.to_yaml()
}

async fn reload(st: St) -> String {
    let p = st.0.proxy.clone();
    if !p.cfg.dstore.enable {
        return "err: dstore not enabled".into();
    }
    // File I/O: keep it off the async workers.
    match tokio::task::spawn_blocking(move || p.cluster.reload()).await {
        Ok(Ok(())) => "ok".into(),
        Ok(Err(e)) => format!("err: {e}"),
        Err(e) => format!("err: reload task failed: {e}"),
    }
}

async fn buffers() -> Response {
    json_response(crate::buffers::to_json())
}

async fn config(st: St) -> Response {
    json_response(st.0.proxy.cfg.to_json())
}

async fn request(st: St) -> Response {
    json_response(st.0.proxy.limiter.to_json())
}

async fn rusage() -> Response {
    json_response(json!(beansdb_observe::process::RusageReport::now()))
}

/// `/cstar-cfg?config=rwswitcher|tablefinder` (cassandra.md §6).
async fn cstar_cfg(
    st: St,
    method: axum::http::Method,
    query: axum::extract::Query<BTreeMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    use axum::http::Method;
    let fail = |status: u16, msg: String| {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        (code, json_response(json!({"message": "", "error": msg}))).into_response()
    };
    let proxy = &st.0.proxy;
    let Some(c) = proxy.cstar.clone() else {
        return fail(400, "cassandra is disabled".into());
    };
    let Some(which) = query
        .get("config")
        .and_then(|c| beansdb_cassandra::Dispatcher::parse_label(c))
    else {
        return fail(
            400,
            "unsupported config query arg, must be: tablefinder/rwswitcher".into(),
        );
    };
    let r = match method {
        Method::GET => {
            return json_response(crate::cstar::CStar::view(&proxy.switch.snapshot(), which))
        }
        Method::POST => c.reload(&proxy.switch, crate::cstar::Trigger::Post).await,
        Method::PUT => c.put(&proxy.switch, which, &body).await,
        Method::DELETE => c.delete(&proxy.switch, which, &body).await,
        _ => return fail(405, "unsupported method".into()),
    };
    match r {
        Ok(()) => json_response(json!({"message": "success"})),
        Err(e) => fail(e.status, e.message),
    }
}

async fn metrics_text(st: St) -> Response {
    let state = st.0.proxy.cluster.current();
    crate::metrics::refresh(&state.hosts);
    match &st.0.prometheus {
        Some(h) => {
            h.run_upkeep();
            (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                h.render(),
            )
                .into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed",
        )
            .into_response(),
    }
}

async fn heap_profile() -> Response {
    let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() else {
        return (StatusCode::NOT_IMPLEMENTED, "heap profiling not enabled").into_response();
    };
    let mut ctl = ctl.lock().await;
    if !ctl.activated() {
        return (StatusCode::NOT_IMPLEMENTED, "heap profiling not enabled").into_response();
    }
    match ctl.dump_pprof() {
        Ok(p) => ([(header::CONTENT_TYPE, "application/octet-stream")], p).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
