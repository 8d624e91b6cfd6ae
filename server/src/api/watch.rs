//! The Watch service: one bidirectional stream per client call, many watches on it.
//! Requests (create, cancel, progress) go to the member's [`WatchHub`]; responses are
//! queued there and sent from this stream's task, which the hub wakes. The stream's
//! watchers are freed when the client goes away or closes its side (as etcd, which
//! ends the stream then).

use std::sync::Arc;

use concord_proto::etcdserverpb::{
    WatchRequest, WatchResponse, watch_request::RequestUnion, watch_server::Watch,
};
use concord_watch::StreamId;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::core::Core;
use crate::watch_hub::WatchHub;

/// Responses in flight between a stream's task and gRPC; past this the task waits and
/// the hub's queue for the stream fills instead (then its watchers are set aside).
const SEND_BUFFER: usize = 16;

pub struct WatchService {
    core: Arc<Core>,
    hub: Arc<WatchHub>,
}

impl WatchService {
    pub fn new(core: Arc<Core>, hub: Arc<WatchHub>) -> WatchService {
        WatchService { core, hub }
    }
}

/// Frees the stream's watchers however its task ends.
struct OpenStream {
    hub: Arc<WatchHub>,
    id: StreamId,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let id = self.id;
        self.hub.with_registry(|registry| registry.close_stream(id));
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // clientv3's WithRequireLeader: refuse while this member knows no leader.
        let require_leader = request
            .metadata()
            .get("hasleader")
            .is_some_and(|v| v.as_bytes() == b"true");
        if require_leader {
            self.core.require_leader()?;
        }
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(SEND_BUFFER);
        let wake = Arc::new(Notify::new());
        let waker = wake.clone();
        let id = self.hub.open_stream(Box::new(move || waker.notify_one()));
        let stream = OpenStream {
            hub: self.hub.clone(),
            id,
        };
        tokio::spawn(serve_stream(self.core.clone(), stream, inbound, tx, wake));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn serve_stream(
    core: Arc<Core>,
    stream: OpenStream,
    mut inbound: Streaming<WatchRequest>,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
    wake: Arc<Notify>,
) {
    let id = stream.id;
    loop {
        tokio::select! {
            biased;
            _ = wake.notified() => {
                let responses = stream.hub.with_registry(|registry| registry.drain(id));
                for mut response in responses {
                    let revision = response.header.as_ref().map_or(0, |h| h.revision);
                    response.header = Some(core.header(revision));
                    if tx.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
            }
            message = inbound.message() => match message {
                Ok(Some(request)) => handle(&stream, request),
                Ok(None) => return,
                Err(status) => {
                    tracing::debug!("watch stream ended: {status}");
                    return;
                }
            },
            _ = tx.closed() => return,
        }
    }
}

fn handle(stream: &OpenStream, request: WatchRequest) {
    let id = stream.id;
    match request.request_union {
        Some(RequestUnion::CreateRequest(create)) => {
            stream.hub.with_registry(|registry| {
                // A refusal is queued for the client as etcd's canceled response.
                let _ = registry.create(id, &create);
            });
        }
        Some(RequestUnion::CancelRequest(cancel)) => {
            stream
                .hub
                .with_registry(|registry| registry.cancel(id, cancel.watch_id));
        }
        Some(RequestUnion::ProgressRequest(_)) => {
            stream
                .hub
                .with_registry(|registry| registry.request_progress(id));
        }
        None => {}
    }
}
