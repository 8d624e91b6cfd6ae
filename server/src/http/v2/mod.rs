//! etcd 3.4's v2 HTTP API, served when `--enable-v2` is on: `/v2/keys` (see
//! [`keys`]), `/v2/members`, `/v2/machines` and `/v2/stats/{self,leader,store}`, plus
//! the leader's task that expires v2 TTLs through raft.

mod auth;
pub mod json;
pub mod keys;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::any;
use concord_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberRemoveRequest, MemberUpdateRequest,
};
use tokio::sync::watch;

use crate::core::Core;
// The client port's JSON answer, under the name v2's modules know it by.
use crate::etcd_error::EtcdError;
use crate::http::json_answer as json_response;
use crate::state::v2::{Method as V2Method, Request, SharedV2Store};
pub use keys::V2State;

/// How often the leader looks for expired v2 nodes (etcd syncs every 500 ms).
const SYNC_TICK: Duration = Duration::from_millis(500);

/// The v2 routes if `--enable-v2` is on (none otherwise, as etcd's default).
pub fn routes(core: &Arc<Core>) -> Router {
    if core.config.enable_v2 {
        router(core.clone(), core.v2.clone())
    } else {
        Router::new()
    }
}

/// The v2 routes over this member's v2 store.
pub fn router(core: Arc<Core>, store: SharedV2Store) -> Router {
    Router::new()
        .route("/v2/keys", any(keys::keys))
        .route("/v2/keys/", any(keys::keys))
        .route("/v2/keys/{*path}", any(keys::keys))
        .route("/v2/machines", any(machines))
        .route("/v2/members", any(members))
        .route("/v2/members/{*rest}", any(members))
        .route("/v2/stats/self", any(stats::self_stats))
        .route("/v2/stats/leader", any(stats::leader_stats))
        .route("/v2/stats/store", any(stats::store_stats))
        .merge(auth::routes())
        .with_state(V2State { core, store })
}

/// Go's http.Error for a method the route does not take.
pub fn method_not_allowed(allow: &'static str) -> Response {
    let mut response = Response::new(Body::from("Method Not Allowed\n"));
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    let headers = response.headers_mut();
    headers.insert("allow", HeaderValue::from_static(allow));
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// etcd's httptypes.HTTPError.
fn http_error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        serde_json::json!({ "message": message }).to_string(),
    )
}

fn with_cluster_id(core: &Core, mut response: Response) -> Response {
    if let Ok(value) = HeaderValue::from_str(&format!("{:x}", core.cluster_id)) {
        response.headers_mut().insert("x-etcd-cluster-id", value);
    }
    response
}

/// `/v2/machines`: every member's client URLs.
async fn machines(State(state): State<V2State>, method: Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET,HEAD");
    }
    let urls: Vec<String> = state
        .core
        .membership
        .read()
        .members()
        .flat_map(|m| m.client_ur_ls.clone())
        .collect();
    let mut response = Response::new(Body::from(urls.join(", ")));
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// etcd's httptypes.Member JSON, in its field order.
fn member_json(member: &Member) -> String {
    let text = |v: &str| serde_json::Value::from(v).to_string();
    let list = |v: &[String]| serde_json::Value::from(v.to_vec()).to_string();
    format!(
        "{{\"id\":{},\"name\":{},\"peerURLs\":{},\"clientURLs\":{}}}",
        text(&format!("{:x}", member.id)),
        text(&member.name),
        list(&member.peer_ur_ls),
        list(&member.client_ur_ls)
    )
}

#[derive(serde::Deserialize)]
struct MemberRequest {
    #[serde(rename = "peerURLs")]
    peer_urls: Vec<String>,
}

fn member_change_error(error: &EtcdError, id: &str) -> Response {
    if *error == EtcdError::member_not_found() {
        http_error(StatusCode::NOT_FOUND, &format!("No such member: {id}"))
    } else if *error == EtcdError::member_exist() {
        http_error(StatusCode::CONFLICT, "membership: ID exists")
    } else if *error == EtcdError::peer_url_exist() {
        http_error(StatusCode::CONFLICT, "membership: peerURL exists")
    } else if *error == EtcdError::member_bad_urls() {
        http_error(StatusCode::BAD_REQUEST, &error.message)
    } else {
        http_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
    }
}

fn parse_member_body(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<MemberRequest, (StatusCode, String)> {
    let json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Bad Content-Type".to_string(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))
}

/// `/v2/members`: list, add, remove, update peer URLs; `/v2/members/leader`.
async fn members(
    State(state): State<V2State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    body: Bytes,
) -> Response {
    let core = state.core.clone();
    if !matches!(
        method,
        Method::GET | Method::POST | Method::DELETE | Method::PUT
    ) {
        return method_not_allowed("GET,POST,DELETE,PUT");
    }
    if !auth::AuthStore::new(&state)
        .has_write_root_access(&method, &headers, &extensions)
        .await
    {
        return auth::no_auth();
    }
    let rest = uri
        .path()
        .trim_start_matches("/v2/members")
        .trim_start_matches('/')
        .to_string();
    let response = match method {
        Method::GET => match rest.as_str() {
            "" => {
                let list: Vec<String> = core.membership.read().members().map(member_json).collect();
                json_response(
                    StatusCode::OK,
                    format!("{{\"members\":[{}]}}\n", list.join(",")),
                )
            }
            "leader" => {
                let leader = core.raft.status.leader();
                match core.membership.read().get(leader) {
                    Some(member) if leader != 0 => {
                        json_response(StatusCode::OK, format!("{}\n", member_json(member)))
                    }
                    _ => http_error(StatusCode::SERVICE_UNAVAILABLE, "During election"),
                }
            }
            _ => http_error(StatusCode::NOT_FOUND, "Not found"),
        },
        Method::POST => {
            let request = match parse_member_body(&headers, &body) {
                Ok(request) => request,
                Err((status, message)) => {
                    return with_cluster_id(&core, http_error(status, &message));
                }
            };
            let added = crate::reconfig::add(
                &core,
                MemberAddRequest {
                    peer_ur_ls: request.peer_urls,
                    is_learner: false,
                },
            )
            .await;
            match added.map(|r| r.member) {
                Ok(Some(member)) => {
                    json_response(StatusCode::CREATED, format!("{}\n", member_json(&member)))
                }
                Ok(None) => http_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
                Err(error) => member_change_error(&error, ""),
            }
        }
        Method::DELETE => match u64::from_str_radix(&rest, 16) {
            Err(_) => http_error(StatusCode::NOT_FOUND, &format!("No such member: {rest}")),
            Ok(id) => {
                if core.membership.read().is_removed(id) {
                    http_error(
                        StatusCode::GONE,
                        &format!("Member permanently removed: {rest}"),
                    )
                } else {
                    match crate::reconfig::remove(&core, MemberRemoveRequest { id }).await {
                        Ok(_) => no_content(),
                        Err(error) => member_change_error(&error, &rest),
                    }
                }
            }
        },
        _ => {
            let Ok(id) = u64::from_str_radix(&rest, 16) else {
                return with_cluster_id(
                    &core,
                    http_error(StatusCode::NOT_FOUND, &format!("No such member: {rest}")),
                );
            };
            let request = match parse_member_body(&headers, &body) {
                Ok(request) => request,
                Err((status, message)) => {
                    return with_cluster_id(&core, http_error(status, &message));
                }
            };
            let update = MemberUpdateRequest {
                id,
                peer_ur_ls: request.peer_urls,
            };
            match crate::reconfig::update(&core, update).await {
                Ok(_) => no_content(),
                Err(error) => member_change_error(&error, &rest),
            }
        }
    };
    with_cluster_id(&core, response)
}

fn no_content() -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// The leader records the cluster version once, as etcd's leader does on its first
/// commit (a v2 write in etcd, so it moves the v2 index: see `state::v2::internal`).
async fn decide_cluster_version(core: &Core) {
    let recorded = core.backend.store().meta_get("cluster", b"version");
    if !matches!(recorded, Ok(None)) {
        return;
    }
    let request = concord_proto::concordpb::internal_request::Request::ClusterVersionSet(
        concord_proto::concordpb::ClusterVersionSetRequest {
            version: crate::grpc::CLUSTER_VERSION.to_string(),
        },
    );
    if let Err(error) = crate::lease_expiry::propose_as_leader(core, request).await {
        tracing::debug!("setting the cluster version: {error}");
    }
}

/// The leader's v2 tasks: the cluster version, then the expiry: once a node's expiration has passed on the leader's clock,
/// proposes a sync with that time, and every member expires the same nodes at the
/// same indexes. Does nothing on followers.
pub async fn run_expiry(
    core: Arc<Core>,
    store: SharedV2Store,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(SYNC_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if !core.raft.status.is_leader() {
            continue;
        }
        decide_cluster_version(&core).await;
        let now = keys::now_nanos();
        let due = store.lock().next_expiration().is_some_and(|at| at <= now);
        if !due {
            continue;
        }
        let sync = Request {
            method: V2Method::Sync,
            time: now,
            ..Request::default()
        };
        let request = concord_proto::concordpb::internal_request::Request::V2(sync.to_proto());
        if let Err(error) = crate::lease_expiry::propose_as_leader(&core, request).await {
            tracing::debug!("v2 expiry sync: {error}");
        }
    }
}
