//! The HTTP endpoints served on the client port beside gRPC: `/version`, `/health`,
//! `/livez`, `/readyz`; etcd's v2 API under `/v2` with `--enable-v2`; etcd's JSON gateway
//! under `/v3/` ([`gateway`]).

pub mod gateway;
pub mod metrics;
pub mod v2;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use concord_proto::etcdserverpb::AlarmType;

use crate::core::Core;
use crate::grpc::{CLUSTER_VERSION, ETCD_VERSION};
use crate::state::alarms::alarm_name;

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
        .merge(metrics::router(core.clone()))
        .merge(v2)
        .merge(gateway::router(gateway_channel))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(core.config.cors.clone()),
            cors,
        ))
}

/// etcd's CORS handling (`--cors`, default `*`), which etcd applies to its whole client
/// HTTP handler (the gateway, `/metrics`, `/health`, `/version`, v2), not to gRPC nor
/// to `--listen-metrics-urls`: the allowed origin (`*` when every origin is) is named
/// in the answer's Access-Control headers, and an OPTIONS preflight is answered at once
/// with 200 and no body, whatever the path.
async fn cors(
    State(origins): State<Arc<Vec<String>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{HeaderValue, Method};
    let allowed = |origin: &str| {
        origins.iter().all(|o| o.is_empty()) || origins.iter().any(|o| o == "*" || o == origin)
    };
    let origin = if allowed("*") {
        Some("*".to_string())
    } else {
        request
            .headers()
            .get("origin")
            .and_then(|v| v.to_str().ok())
            .filter(|origin| allowed(origin))
            .map(str::to_string)
    };
    let mut response = if request.method() == Method::OPTIONS {
        axum::response::Response::new(axum::body::Body::empty())
    } else {
        next.run(request).await
    };
    if let Some(origin) = origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
        let headers = response.headers_mut();
        headers.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
        );
        headers.insert("access-control-allow-origin", origin);
        headers.insert(
            "access-control-allow-headers",
            HeaderValue::from_static("accept, content-type, authorization"),
        );
    }
    response
}

/// An answer with a JSON body (`content-type: application/json`), the one shape of the
/// gateway's and v2's answers, errors included.
pub(crate) fn json_answer(
    status: StatusCode,
    body: impl Into<axum::body::Body>,
) -> axum::response::Response {
    let mut response = axum::response::Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
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

/// etcd 3.4's /health: unhealthy while an alarm is raised (unless named in an
/// `exclude` query parameter), else healthy when a leader is known and a linearizable
/// read succeeds. The body is `{"health":"true"}`, or `{"health":"false"}` and a newline
/// with 503 (Go's `http.Error`), as etcd 3.4.23 writes them; both as `text/plain`, the
/// type Go sniffs for them.
pub(crate) async fn health(
    State(core): State<Arc<Core>>,
    Query(query): Query<Vec<(String, String)>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let excluded: Vec<&str> = query
        .iter()
        .filter(|(name, _)| name == "exclude")
        .map(|(_, alarm)| alarm.as_str())
        .collect();
    let alarm = core
        .alarms
        .list(AlarmType::None)
        .into_iter()
        .find(|a| !excluded.contains(&alarm_name(a.alarm)));
    let healthy = if let Some(alarm) = alarm {
        tracing::warn!(
            "/health error due to {}",
            crate::state::alarms::alarm_status_text(&alarm)
        );
        false
    } else {
        match core.linearizable_barrier().await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!("/health error: {}", error.message);
                false
            }
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
            [("content-type", "text/plain; charset=utf-8")],
            "{\"health\":\"true\"}",
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                ("content-type", "text/plain; charset=utf-8"),
                ("x-content-type-options", "nosniff"),
            ],
            "{\"health\":\"false\"}\n",
        )
            .into_response()
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
