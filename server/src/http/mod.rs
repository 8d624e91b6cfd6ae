//! The HTTP endpoints served on the client port beside gRPC: `/version`, `/health`,
//! `/livez`, `/readyz`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::core::Core;
use crate::grpc::{CLUSTER_VERSION, ETCD_VERSION};

pub fn router(core: Arc<Core>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(core)
}

async fn version() -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        format!("{{\"etcdserver\":\"{ETCD_VERSION}\",\"etcdcluster\":\"{CLUSTER_VERSION}\"}}"),
    )
}

/// etcd's /health: healthy when a leader is known and a linearizable read succeeds.
async fn health(
    State(core): State<Arc<Core>>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let (healthy, reason) = match core.linearizable_barrier().await {
        Ok(()) => (true, String::new()),
        Err(error) => (false, error.message),
    };
    let body = if healthy {
        "{\"health\":\"true\",\"reason\":\"\"}".to_string()
    } else {
        serde_json::json!({"health": "false", "reason": reason}).to_string()
    };
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, [("content-type", "application/json")], body)
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(core): State<Arc<Core>>) -> (StatusCode, &'static str) {
    match core.require_leader() {
        Ok(_) => (StatusCode::OK, "ok"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: no leader"),
    }
}
