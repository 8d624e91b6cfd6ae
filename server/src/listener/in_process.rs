//! A gRPC channel to this member's own client services over an in-memory pipe: etcd's
//! JSON gateway (and its server-side Lock and Election services) dial the member's own
//! gRPC server, so their calls pass the same stack as a client's (the learner gate, the
//! services' checks) and, for the gateway, count against `--max-concurrent-streams` on
//! one HTTP/2 connection as etcd's do. Which routes a channel reaches decides what the
//! gRPC metrics count: the member wires the gateway to the instrumented routes and Lock
//! and Election to the same services without the metrics layer, as etcd counts them.

use std::sync::{Arc, OnceLock};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint, Uri};
use tracing::debug;

use super::{ConnectionInfo, UNIX_PLACEHOLDER_ADDR, route};

/// Marks a request that came over an in-process connection: the member's own call
/// (the gateway's, or Lock's and Election's on a client's behalf), never a client's.
#[derive(Clone, Copy, Debug)]
pub struct InProcessCall;

/// In-memory pipe buffer per direction.
const PIPE_BYTES: usize = 1024 * 1024;

/// The services an in-process channel reaches, set once they are built (the Lock and
/// Election services hold a channel to the routes they are part of).
pub type InProcessTarget = Arc<OnceLock<Routes>>;

/// A channel whose connection is served in-process by `target`'s routes, with at most
/// `max_concurrent_streams` streams open at once (`None`: hyper's default). It connects
/// on first use, and again if its connection ends.
pub fn in_process_channel(target: InProcessTarget, max_concurrent_streams: Option<u32>) -> Channel {
    let connector = tower::service_fn(move |_: Uri| {
        let target = target.clone();
        async move {
            let routes = target.get().cloned().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotConnected, "services not started")
            })?;
            let (client, server) = tokio::io::duplex(PIPE_BYTES);
            tokio::spawn(serve(server, routes, max_concurrent_streams));
            Ok::<_, std::io::Error>(TokioIo::new(client))
        }
    });
    // The URI names nothing: the connector above is the only way in.
    Endpoint::from_static("http://in-process.concord").connect_with_connector_lazy(connector)
}

async fn serve(io: tokio::io::DuplexStream, routes: Routes, max_concurrent_streams: Option<u32>) {
    let grpc = routes.prepare();
    let info = ConnectionInfo {
        local_addr: UNIX_PLACEHOLDER_ADDR,
        remote_addr: UNIX_PLACEHOLDER_ADDR,
        peer_certificates: None,
    };
    let http = axum::Router::new();
    let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
        request.extensions_mut().insert(InProcessCall);
        route(grpc.clone(), http.clone(), info.clone(), request)
    });
    let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(max_concurrent_streams)
        .serve_connection(TokioIo::new(io), service)
        .await;
    if let Err(error) = served {
        debug!(%error, "in-process connection ended with an error");
    }
}
