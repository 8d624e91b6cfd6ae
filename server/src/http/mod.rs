//! The HTTP endpoints served on the client port beside gRPC: `/version`, `/health`,
//! `/livez`, `/readyz`; etcd's v2 API under `/v2` with `--enable-v2`; etcd's JSON gateway
//! under `/v3/` ([`gateway`]).

pub mod gateway;
pub mod metrics;
pub mod v2;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::core::Core;
use crate::grpc::{CLUSTER_VERSION, ETCD_VERSION};

/// The client port's HTTP routes; the JSON gateway calls the member's services over
/// `gateway_channel` (see [`gateway`]).
pub fn router(core: Arc<Core>, gateway_channel: tonic::transport::Channel) -> Router {
    let v2 = v2::routes(&core);
    Router::new()
        .route("/version", get(version))
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(core.clone())
        .merge(metrics::router(core))
        .merge(v2)
        .merge(gateway::router(gateway_channel))
}

/// What `--listen-metrics-urls` serves: `/metrics` and `/health`, as etcd does.
pub fn metrics_and_health(core: Arc<Core>) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(core.clone())
        .merge(metrics::router(core))
}

async fn version() -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        format!("{{\"etcdserver\":\"{ETCD_VERSION}\",\"etcdcluster\":\"{CLUSTER_VERSION}\"}}"),
    )
}

/// etcd 3.4's /health: healthy when a leader is known and a linearizable read succeeds;
/// the body is `{"health":"true"}` (or `"false"`, with 503), as etcd 3.4.23 writes it.
pub(crate) async fn health(
    State(core): State<Arc<Core>>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let healthy = match core.linearizable_barrier().await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!("/health error: {}", error.message);
            false
        }
    };
    let outcome = if healthy {
        "etcd_server_health_success"
    } else {
        "etcd_server_health_failures"
    };
    ::metrics::counter!(outcome).increment(1);
    if healthy {
        (
            StatusCode::OK,
            [("content-type", "application/json")],
            "{\"health\":\"true\"}".to_string(),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "text/plain; charset=utf-8")],
            "{\"health\":\"false\"}\n".to_string(),
        )
    }
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
