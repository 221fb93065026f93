//! `/gc/...` endpoints (node.md §6.4, §8.1): start, dry-run, cancel and query manual GCs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use beansdb_store::gc::GcRequest;
use serde_json::Value;

use crate::http::{bucket_links, starting, Admin};
use crate::server::Node;

/// RFC 3339 with nanoseconds in local time, as Go prints `time.Time`.
fn go_time(t: SystemTime) -> String {
    let dt: chrono::DateTime<chrono::Local> = t.into();
    dt.to_rfc3339_opts(chrono::SecondsFormat::Nanos, false)
}

/// `LastGC` of BucketInfo: the most recent GC of the bucket, or null.
pub fn last_gc(node: &Node, bucket: usize) -> Value {
    node.store
        .gc_state(bucket)
        .and_then(|g| serde_json::from_str(&g.to_json(go_time)).ok())
        .unwrap_or(Value::Null)
}

pub async fn gc(
    State(admin): State<Arc<Admin>>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let Some(node) = admin.node() else {
        return starting();
    };
    if id == "query" {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in node.store.gc_query() {
            out.entry(e.root.clone()).or_default().push(e.line());
        }
        return match serde_json::to_string(&out) {
            Ok(s) => ([(header::CONTENT_TYPE, "application/json")], s + "\n").into_response(),
            Err(e) => e.to_string().into_response(),
        };
    }
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true");
    let num = |k: &str| q.get(k).and_then(|v| v.parse::<u32>().ok());
    let Ok(bid) = usize::from_str_radix(&id, 16) else {
        return Html(format!(
            "<p> err : bad bucket id: {id} </p>{}",
            bucket_links(&admin)
        ))
        .into_response();
    };
    if flag("cancel") {
        return Html(match node.store.gc_cancel(bid) {
            Ok((src, dst)) => format!("cancel gc on bucket {bid}, src: {src} -> dst: {dst}"),
            Err(_) => format!("bucket {bid} is not gcing"),
        })
        .into_response();
    }
    let req = GcRequest {
        start: num("start"),
        end: num("end"),
        no_gc_days: num("nogcdays"),
        merge: flag("merge"),
        run: flag("run"),
    };
    match node.store.gc(bid, req) {
        Ok(plan) => {
            let mut s = String::new();
            if !plan.pretend {
                s.push_str(&format!(
                    " <a href='/bucket/{bid}'> /bucket/{bid} </a> <p/>"
                ));
            }
            s.push_str(&format!(
                "<p/> bucket {}, start {}, end {}, merge {}, pretend {} <p/>",
                bid, plan.start, plan.end, plan.merge, plan.pretend
            ));
            Html(s).into_response()
        }
        Err(e) => Html(format!("<p> err : {e} </p>{}", bucket_links(&admin))).into_response(),
    }
}
