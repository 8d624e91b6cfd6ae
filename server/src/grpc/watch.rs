//! The Watch service: one bidirectional stream per client call, many watches on it.
//! Requests (create, cancel, progress) go to the member's [`WatchHub`] from a task that
//! reads the client's side. Responses are queued in the hub and pulled straight from
//! there by the HTTP/2 body of the call ([`Outbound`]): the hub wakes the connection's
//! writer itself, with no task or channel in between, and everything one publish queued
//! for the stream is encoded into one write ([`codec`]). The stream's watchers are freed
//! when the client goes away or closes its side (as etcd, which ends the stream then).
//!
//! The service is written out by hand rather than generated, for its codec: responses
//! carry events encoded once by the registry ([`concord_watch::Outgoing`]).

mod codec;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use concord_proto::etcdserverpb::{WatchRequest, watch_request::RequestUnion};
use concord_watch::{Outgoing, StreamId};
use futures::Stream;
use futures::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

use crate::core::Core;
use crate::etcd_error::EtcdError;
use crate::watch_hub::WatchHub;

use codec::WatchCodec;

/// Election timeouts without a leader after which a leader-requiring stream ends.
const NO_LEADER_CHECKS: u32 = 3;
const WATCH_PATH: &str = "/etcdserverpb.Watch/Watch";
/// Queued responses an idle stream keeps room for (a burst may grow its queue to the
/// registry's limit, over a hundred responses of about a hundred bytes each).
const IDLE_QUEUE_CAPACITY: usize = 16;

/// The Watch gRPC service, for the client listener's routes.
#[derive(Clone)]
pub struct WatchServer {
    core: Arc<Core>,
    hub: Arc<WatchHub>,
}

impl WatchServer {
    pub fn new(core: Arc<Core>, hub: Arc<WatchHub>) -> WatchServer {
        WatchServer { core, hub }
    }
}

impl NamedService for WatchServer {
    const NAME: &'static str = "etcdserverpb.Watch";
}

impl<B> tower::Service<http::Request<B>> for WatchServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let server = self.clone();
        Box::pin(async move {
            if request.uri().path() != WATCH_PATH {
                return Ok(Status::unimplemented("").into_http());
            }
            let mut grpc = Grpc::new(WatchCodec::new(server.core.clone()));
            Ok(grpc.streaming(server, request).await)
        })
    }
}

impl StreamingService<WatchRequest> for WatchServer {
    type Response = Outgoing;
    type ResponseStream = Outbound;
    type Future = BoxFuture<Response<Outbound>, Status>;

    fn call(&mut self, request: Request<Streaming<WatchRequest>>) -> Self::Future {
        let server = self.clone();
        Box::pin(async move { server.open(request) })
    }
}

impl WatchServer {
    fn open(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Outbound>, Status> {
        // clientv3's WithRequireLeader: refuse while this member knows no leader.
        let require_leader = request
            .metadata()
            .get("hasleader")
            .is_some_and(|v| v.as_bytes() == b"true");
        if require_leader {
            self.core.require_leader()?;
        }
        // Who the stream's creates are checked as (etcd reads the stream's token at
        // every create, so a later auth change counts).
        let identity = crate::auth::Credentials::of(&request);
        let signal = Arc::new(Signal::default());
        let waker = signal.clone();
        let id = self.hub.open_stream(Box::new(move || {
            waker.queued.store(true, Ordering::Release);
            waker.responses.wake();
        }));
        let outbound = Outbound {
            hub: self.hub.clone(),
            id,
            signal: signal.clone(),
            ready: VecDeque::new(),
            done: false,
        };
        tokio::spawn(serve_requests(
            self.core.clone(),
            self.hub.clone(),
            id,
            request.into_inner(),
            signal,
            require_leader,
            identity,
        ));
        Ok(Response::new(outbound))
    }
}

/// What the two halves of a stream share.
struct Signal {
    /// The HTTP/2 body waiting for responses; the hub wakes it.
    responses: AtomicWaker,
    /// The hub queued responses since the body last looked: it wakes the stream when its
    /// queue goes from empty to not, and only then. The body takes the registry's lock
    /// only when this is set, not once more after every batch to find the queue empty
    /// (with a thousand single-watcher streams, that second look doubled the lock's
    /// traffic against the fan-out thread).
    queued: AtomicBool,
    /// The client's side ended: the body sends what is ready, then `error` if any, and
    /// finishes.
    ending: AtomicBool,
    error: Mutex<Option<Status>>,
    /// The body was dropped (the client went away): the request reader stops.
    body_gone: Notify,
}

impl Default for Signal {
    fn default() -> Signal {
        Signal {
            responses: AtomicWaker::new(),
            // The created response may be queued before the body first looks.
            queued: AtomicBool::new(true),
            ending: AtomicBool::new(false),
            error: Mutex::new(None),
            body_gone: Notify::new(),
        }
    }
}

impl Signal {
    fn end(&self, error: Option<Status>) {
        if error.is_some() {
            *self.error.lock() = error;
        }
        self.ending.store(true, Ordering::Release);
        self.responses.wake();
    }
}

/// The response side of one stream: pulls the stream's queued responses from the hub,
/// a whole queue at a time. Frees the stream's watchers when dropped.
pub struct Outbound {
    hub: Arc<WatchHub>,
    id: StreamId,
    signal: Arc<Signal>,
    ready: VecDeque<Outgoing>,
    done: bool,
}

impl Stream for Outbound {
    type Item = Result<Outgoing, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(response) = this.ready.pop_front() {
            return Poll::Ready(Some(Ok(response)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        // Registered before looking: a response queued after the look wakes us.
        this.signal.responses.register(cx.waker());
        if this.signal.ending.load(Ordering::Acquire) {
            this.done = true;
            return Poll::Ready(this.signal.error.lock().take().map(Err));
        }
        // Cleared before draining: a response queued after the drain wakes us again.
        if !this.signal.queued.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        // The drain trades this (empty) queue for the registry's: one that a burst grew
        // is let go of here rather than kept by an idle stream for its whole life.
        if this.ready.capacity() > IDLE_QUEUE_CAPACITY {
            this.ready = VecDeque::new();
        }
        let id = this.id;
        this.hub
            .with_registry(|registry| registry.drain_into(id, &mut this.ready));
        match this.ready.pop_front() {
            Some(response) => Poll::Ready(Some(Ok(response))),
            None => Poll::Pending,
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        let id = self.id;
        self.hub.with_registry(|registry| registry.close_stream(id));
        self.signal.body_gone.notify_one();
    }
}

/// Reads the client's requests until its side ends, the response side goes away, or a
/// leader-requiring stream has had no leader for too long.
async fn serve_requests(
    core: Arc<Core>,
    hub: Arc<WatchHub>,
    id: StreamId,
    mut inbound: Streaming<WatchRequest>,
    signal: Arc<Signal>,
    require_leader: bool,
    identity: crate::auth::Credentials,
) {
    // etcd ends a leader-requiring stream once its member has seen no leader for
    // three election timeouts in a row.
    let mut leader_check = tokio::time::interval(core.config.election_timeout);
    leader_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leaderless_checks = 0;
    // etcd keeps a stream whose client closed its sending side, with its watchers, until
    // the client goes away (the JSON gateway closes it after a request body's last
    // request, and its curl users then wait for events).
    let mut requests_open = true;
    loop {
        tokio::select! {
            _ = signal.body_gone.notified() => return,
            message = inbound.message(), if requests_open => match message {
                Ok(Some(request)) => handle(&core, &hub, id, request, &identity),
                Ok(None) => requests_open = false,
                Err(status) => {
                    tracing::debug!("watch stream ended: {status}");
                    return signal.end(None);
                }
            },
            _ = leader_check.tick(), if require_leader => {
                if core.raft.status.leader() == 0 {
                    leaderless_checks += 1;
                } else {
                    leaderless_checks = 0;
                }
                if leaderless_checks >= NO_LEADER_CHECKS {
                    return signal.end(Some(EtcdError::no_leader().into()));
                }
            }
        }
    }
}

/// etcd's `isWatchPermitted`: read permission on the watched key or range.
fn watch_permitted(
    core: &Core,
    identity: &crate::auth::Credentials,
    create: &concord_proto::etcdserverpb::WatchCreateRequest,
) -> Result<(), EtcdError> {
    let who = core
        .auth
        .identify(identity.token.as_deref(), identity.certificate_name.clone())?
        .unwrap_or_default();
    core.auth
        .store
        .check_range(&who, &create.key, &create.range_end)
}

fn handle(
    core: &Core,
    hub: &WatchHub,
    id: StreamId,
    request: WatchRequest,
    identity: &crate::auth::Credentials,
) {
    match request.request_union {
        Some(RequestUnion::CreateRequest(create)) => match watch_permitted(core, identity, &create)
        {
            Ok(()) => hub.create(id, &create),
            Err(error) => {
                hub.with_registry(|registry| registry.refuse_create(id, error.go_status_text()));
            }
        },
        Some(RequestUnion::CancelRequest(cancel)) => {
            hub.with_registry(|registry| registry.cancel(id, cancel.watch_id));
        }
        Some(RequestUnion::ProgressRequest(_)) => {
            hub.with_registry(|registry| registry.request_progress(id));
        }
        None => {}
    }
}
