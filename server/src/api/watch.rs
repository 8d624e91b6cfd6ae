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
use crate::etcd_error::EtcdError;
use crate::watch_hub::WatchHub;

/// Responses in flight between a stream's task and gRPC; past this the task waits and
/// the hub's queue for the stream fills instead (then its watchers are set aside).
const SEND_BUFFER: usize = 16;
/// Election timeouts without a leader after which a leader-requiring stream ends.
const NO_LEADER_CHECKS: u32 = 3;

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
        tokio::spawn(serve_stream(
            self.core.clone(),
            stream,
            inbound,
            tx,
            wake,
            require_leader,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn serve_stream(
    core: Arc<Core>,
    stream: OpenStream,
    mut inbound: Streaming<WatchRequest>,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
    wake: Arc<Notify>,
    require_leader: bool,
) {
    let id = stream.id;
    // etcd ends a leader-requiring stream once its member has seen no leader for
    // three election timeouts in a row.
    let mut leader_check = tokio::time::interval(core.config.election_timeout);
    leader_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leaderless_checks = 0;
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
            _ = leader_check.tick(), if require_leader => {
                if core.raft.status.leader() == 0 {
                    leaderless_checks += 1;
                } else {
                    leaderless_checks = 0;
                }
                if leaderless_checks >= NO_LEADER_CHECKS {
                    let _ = tx.send(Err(EtcdError::no_leader().into())).await;
                    return;
                }
            }
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
