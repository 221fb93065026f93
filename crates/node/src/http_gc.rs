//! `/gc/...` endpoints (node.md §6.4, §8.1).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;

use crate::http::Admin;
use crate::server::Node;

pub fn last_gc(_node: &Node, _bucket: usize) -> Value {
    Value::Null
}

pub async fn gc(
    State(admin): State<Arc<Admin>>,
    Path(id): Path<String>,
    Query(_q): Query<BTreeMap<String, String>>,
) -> Response {
    if let Err(r) = admin.node() {
        return r;
    }
    Html(format!("<p> err : gc of bucket {id} not available </p>")).into_response()
}
