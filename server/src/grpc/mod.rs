//! etcd's gRPC services, each a thin layer over [`crate::core::Core`].

pub mod auth;
pub mod cluster;
pub mod election;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod metrics_layer;
pub mod watch;

/// Learners answer only `Status` and serializable `Range` (etcd's
/// `isRPCSupportedForLearner`); every other call, streams included, gets etcd's "rpc not
/// supported for learner". The KV service checks `serializable` itself.
pub fn learner_gate(
    routes: tonic::service::Routes,
    status: std::sync::Arc<crate::driver::NodeStatus>,
) -> tonic::service::Routes {
    use std::sync::atomic::Ordering;
    const LEARNER_PATHS: &[&str] = &["/etcdserverpb.Maintenance/Status", "/etcdserverpb.KV/Range"];
    let gate = axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let status = status.clone();
            async move {
                let learner = status.is_learner.load(Ordering::Acquire);
                if learner && !LEARNER_PATHS.contains(&request.uri().path()) {
                    return crate::etcd_error::EtcdError::not_supported_for_learner()
                        .to_status()
                        .into_http::<axum::body::Body>();
                }
                next.run(request).await
            }
        },
    );
    tonic::service::Routes::from(routes.into_axum_router().layer(gate))
}

/// The etcd version Concord reports, for tools that check it (etcdctl, the e2e suite).
pub const ETCD_VERSION: &str = "3.4.23";
/// The cluster version Concord reports (etcd's major.minor.0).
pub const CLUSTER_VERSION: &str = "3.4.0";
