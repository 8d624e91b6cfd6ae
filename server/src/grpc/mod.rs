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
const LEARNER_PATHS: &[&str] = &["/etcdserverpb.Maintenance/Status", "/etcdserverpb.KV/Range"];

/// Puts the client port's checks in front of its gRPC services: the learner gate, then
/// (with `metrics`) go-grpc-prometheus's counters, as etcd chains its interceptors (a
/// call a learner refuses is not counted). One hand-written layer rather than two axum
/// `from_fn` middlewares: each of those boxed the call's future and re-boxed the route
/// behind it on every call, a dozen allocations and dynamic calls per request on the
/// hottest path of the server.
pub fn front(
    routes: tonic::service::Routes,
    status: std::sync::Arc<crate::driver::NodeStatus>,
    metrics: Option<metrics_layer::GrpcMetrics>,
) -> tonic::service::Routes {
    let layer = FrontLayer { status, metrics };
    tonic::service::Routes::from(routes.into_axum_router().layer(layer))
}

/// See [`front`].
#[derive(Clone)]
struct FrontLayer {
    status: std::sync::Arc<crate::driver::NodeStatus>,
    metrics: Option<metrics_layer::GrpcMetrics>,
}

impl<S> tower::Layer<S> for FrontLayer {
    type Service = Front<S>;

    fn layer(&self, inner: S) -> Front<S> {
        Front {
            inner,
            status: self.status.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`FrontLayer`] wraps around each route.
#[derive(Clone)]
struct Front<S> {
    inner: S,
    status: std::sync::Arc<crate::driver::NodeStatus>,
    metrics: Option<metrics_layer::GrpcMetrics>,
}

type FrontFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<axum::response::Response, std::convert::Infallible>>
            + Send,
    >,
>;

impl<S> tower::Service<axum::extract::Request> for Front<S>
where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = FrontFuture;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::extract::Request) -> FrontFuture {
        use std::sync::atomic::Ordering;
        let learner = self.status.is_learner.load(Ordering::Acquire);
        if learner && !LEARNER_PATHS.contains(&request.uri().path()) {
            let refusal = crate::etcd_error::EtcdError::not_supported_for_learner()
                .to_status()
                .into_http::<axum::body::Body>();
            return Box::pin(std::future::ready(Ok(refusal)));
        }
        let Some(metrics) = &self.metrics else {
            return Box::pin(self.inner.call(request));
        };
        let (request, begun) = metrics.begin(request);
        let response = self.inner.call(request);
        match begun {
            None => Box::pin(response),
            Some(begun) => Box::pin(async move { Ok(begun.finish(response.await?)) }),
        }
    }
}

/// The etcd version Concord reports, for tools that check it (etcdctl, the e2e suite).
pub const ETCD_VERSION: &str = "3.4.23";
/// The cluster version Concord reports (etcd's major.minor.0).
pub const CLUSTER_VERSION: &str = "3.4.0";
