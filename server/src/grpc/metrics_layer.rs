//! go-grpc-prometheus's server metrics, as etcd 3.4 exports them, around the tonic
//! services: `grpc_server_started_total`, `grpc_server_handled_total` (by status
//! code), `grpc_server_msg_received_total` and `grpc_server_msg_sent_total`, each
//! labelled `grpc_method`, `grpc_service`, `grpc_type` (and `grpc_code`), plus etcd's
//! `etcd_network_client_grpc_{received,sent}_bytes_total` (message payload bytes, as
//! etcd's codec counts them) and `etcd_server_client_requests_total`. With etcd's
//! `--metrics=extensive`, also `grpc_server_handling_seconds`: each call's time from its
//! start to its status (a stream's whole life), as go-grpc-prometheus's handling-time
//! histogram measures it.
//!
//! What is counted is what reaches the client port's gRPC server, as etcd counts it:
//! the JSON gateway's calls are (etcd's gateway dials its own gRPC server), the calls
//! Lock and Election make to the member's KV, Lease and Watch are not (etcd's make them
//! as function calls, through `v3client`). Read off etcd 3.4.23: `curl /v3/kv/put`
//! counts one `Put`, and `curl /v3/lock/lock` one `Lock` and nothing else.
//!
//! Every method's series are registered once, at zero, when the layer is built (as
//! go-grpc-prometheus pre-registers a server's methods); a call then costs a lookup in
//! a fixed table by path and a few atomic adds.
//!
//! A call is handled when its status is known: the `grpc-status` of a trailers-only
//! response, or of the trailers that end the response body. A call whose response is
//! dropped before that (the client went away: a killed `etcdctl watch`, a cancelled
//! request) is handled with `Canceled`, as grpc-go reports a cancelled stream context.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Buf;
use http_body::{Frame, SizeHint};
use metrics::{Counter, Histogram, counter, histogram};
use parking_lot::RwLock;

/// How a method streams (go-grpc-prometheus's `grpc_type`; etcd has no client streams).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallType {
    Unary,
    ServerStream,
    BidiStream,
}

impl CallType {
    fn label(self) -> &'static str {
        match self {
            CallType::Unary => "unary",
            CallType::ServerStream => "server_stream",
            CallType::BidiStream => "bidi_stream",
        }
    }
}

use CallType::{BidiStream, ServerStream, Unary};

/// The services on the client port, with each method's kind (from their protos).
const METHODS: &[(&str, &[(&str, CallType)])] = &[
    (
        "etcdserverpb.KV",
        &[
            ("Range", Unary),
            ("Put", Unary),
            ("DeleteRange", Unary),
            ("Txn", Unary),
            ("Compact", Unary),
        ],
    ),
    ("etcdserverpb.Watch", &[("Watch", BidiStream)]),
    (
        "etcdserverpb.Lease",
        &[
            ("LeaseGrant", Unary),
            ("LeaseRevoke", Unary),
            ("LeaseKeepAlive", BidiStream),
            ("LeaseTimeToLive", Unary),
            ("LeaseLeases", Unary),
        ],
    ),
    (
        "etcdserverpb.Cluster",
        &[
            ("MemberAdd", Unary),
            ("MemberRemove", Unary),
            ("MemberUpdate", Unary),
            ("MemberList", Unary),
            ("MemberPromote", Unary),
        ],
    ),
    (
        "etcdserverpb.Maintenance",
        &[
            ("Alarm", Unary),
            ("Status", Unary),
            ("Defragment", Unary),
            ("Hash", Unary),
            ("HashKV", Unary),
            ("Snapshot", ServerStream),
            ("MoveLeader", Unary),
        ],
    ),
    (
        "etcdserverpb.Auth",
        &[
            ("AuthEnable", Unary),
            ("AuthDisable", Unary),
            ("Authenticate", Unary),
            ("UserAdd", Unary),
            ("UserGet", Unary),
            ("UserList", Unary),
            ("UserDelete", Unary),
            ("UserChangePassword", Unary),
            ("UserGrantRole", Unary),
            ("UserRevokeRole", Unary),
            ("RoleAdd", Unary),
            ("RoleGet", Unary),
            ("RoleList", Unary),
            ("RoleDelete", Unary),
            ("RoleGrantPermission", Unary),
            ("RoleRevokePermission", Unary),
        ],
    ),
    (
        "grpc.health.v1.Health",
        &[("Check", Unary), ("Watch", ServerStream)],
    ),
    ("v3lockpb.Lock", &[("Lock", Unary), ("Unlock", Unary)]),
    (
        "v3electionpb.Election",
        &[
            ("Campaign", Unary),
            ("Proclaim", Unary),
            ("Leader", Unary),
            ("Observe", ServerStream),
            ("Resign", Unary),
        ],
    ),
];

/// gRPC status codes by number, named as grpc-go's `codes.Code.String()`.
const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
const CANCELED: usize = 1;
const UNKNOWN: usize = 2;

/// One method's handles.
struct MethodMetrics {
    call_type: CallType,
    started: Counter,
    handled: [Counter; 17],
    received: Counter,
    sent: Counter,
    /// `grpc_server_handling_seconds`, under `--metrics=extensive` only.
    handling: Option<Histogram>,
}

/// Handles shared by every call.
struct Shared {
    methods: HashMap<String, Arc<MethodMetrics>>,
    received_bytes: Counter,
    sent_bytes: Counter,
    /// `etcd_server_client_requests_total` by client API version, for unary calls
    /// and streams: the version comes from the client, so series are made as
    /// versions are seen.
    client_requests: RwLock<HashMap<String, [Counter; 2]>>,
}

/// Clients' versions beyond this many distinct ones count as "unknown" (the label
/// comes from the client: its values must stay few).
const MAX_CLIENT_VERSIONS: usize = 32;

impl Shared {
    fn new(extensive: bool) -> Self {
        let mut methods = HashMap::new();
        for (service, list) in METHODS {
            for &(method, call_type) in *list {
                let kind = call_type.label();
                let labels = [
                    ("grpc_method", method.to_string()),
                    ("grpc_service", service.to_string()),
                    ("grpc_type", kind.to_string()),
                ];
                let handled = CODES.map(|code| {
                    counter!(
                        "grpc_server_handled_total",
                        "grpc_code" => code,
                        "grpc_method" => method,
                        "grpc_service" => *service,
                        "grpc_type" => kind
                    )
                });
                methods.insert(
                    format!("/{service}/{method}"),
                    Arc::new(MethodMetrics {
                        call_type,
                        started: counter!("grpc_server_started_total", &labels),
                        handled,
                        received: counter!("grpc_server_msg_received_total", &labels),
                        sent: counter!("grpc_server_msg_sent_total", &labels),
                        handling: extensive
                            .then(|| histogram!("grpc_server_handling_seconds", &labels)),
                    }),
                );
            }
        }
        Shared {
            methods,
            received_bytes: counter!("etcd_network_client_grpc_received_bytes_total"),
            sent_bytes: counter!("etcd_network_client_grpc_sent_bytes_total"),
            client_requests: RwLock::new(HashMap::new()),
        }
    }

    fn count_client_request(&self, version: &str, unary: bool) {
        let kind = usize::from(!unary);
        if let Some(counters) = self.client_requests.read().get(version) {
            counters[kind].increment(1);
            return;
        }
        let mut known = self.client_requests.write();
        let version = if known.len() >= MAX_CLIENT_VERSIONS && !known.contains_key(version) {
            "unknown"
        } else {
            version
        };
        known.entry(version.to_string()).or_insert_with(|| {
            ["unary", "stream"].map(|kind| {
                counter!(
                    "etcd_server_client_requests_total",
                    "client_api_version" => version.to_string(),
                    "type" => kind
                )
            })
        })[kind]
            .increment(1);
    }
}

/// go-grpc-prometheus's server metrics for one listener's routes; `extensive` (etcd's
/// `--metrics=extensive`) adds the handling-time histogram. Applied by
/// [`super::FrontLayer`], which calls [`GrpcMetrics::begin`] before a call reaches its
/// service and [`Begun::finish`] on its response.
#[derive(Clone)]
pub struct GrpcMetrics {
    shared: Arc<Shared>,
}

impl GrpcMetrics {
    pub fn new(extensive: bool) -> Self {
        GrpcMetrics {
            shared: Arc::new(Shared::new(extensive)),
        }
    }

    /// Counts a call as started and its request's messages as they arrive; `None` (and
    /// the request untouched) for a path that is none of the client port's methods.
    pub(crate) fn begin(&self, request: Request) -> (Request, Option<Begun>) {
        let Some(method) = self.shared.methods.get(request.uri().path()).cloned() else {
            return (request, None);
        };
        method.started.increment(1);
        let version = request
            .headers()
            .get("client-api-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        self.shared
            .count_client_request(version, method.call_type == Unary);
        let request = request.map(|body| {
            Body::new(CountingBody {
                inner: body,
                frames: MessageFrames::default(),
                messages: method.received.clone(),
                bytes: self.shared.received_bytes.clone(),
                call: None,
            })
        });
        let call = Call {
            started: method.handling.as_ref().map(|_| Instant::now()),
            method: Some(method),
        };
        let begun = Begun {
            call,
            sent_bytes: self.shared.sent_bytes.clone(),
        };
        (request, Some(begun))
    }
}

/// A call [`GrpcMetrics::begin`] counted, waiting for its response.
pub(crate) struct Begun {
    call: Call,
    sent_bytes: Counter,
}

impl Begun {
    /// Counts the response's messages as they leave, and the call as handled when its
    /// status is known (dropped unfinished: `Canceled`).
    pub(crate) fn finish(self, response: Response) -> Response {
        let Begun {
            mut call,
            sent_bytes,
        } = self;
        if let Some(code) = status_code(response.headers()) {
            // A trailers-only answer (an error, usually): the call is over.
            call.finish(code);
            return response;
        }
        let Some(method) = call.method.clone() else {
            return response;
        };
        response.map(|body| {
            Body::new(CountingBody {
                inner: body,
                frames: MessageFrames::default(),
                messages: method.sent.clone(),
                bytes: sent_bytes,
                call: Some(call),
            })
        })
    }
}

/// The `grpc-status` of a header or trailer block, as an index into [`CODES`].
fn status_code(headers: &http::HeaderMap) -> Option<usize> {
    let value = headers.get("grpc-status")?;
    let code = value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&code| code < CODES.len())
        .unwrap_or(UNKNOWN);
    Some(code)
}

/// A call not yet counted as handled; counts it `Canceled` if dropped unfinished.
struct Call {
    method: Option<Arc<MethodMetrics>>,
    /// When it started, if its handling time is measured.
    started: Option<Instant>,
}

impl Call {
    fn finish(&mut self, code: usize) {
        let Some(method) = self.method.take() else {
            return;
        };
        if let Some(counter) = method.handled.get(code) {
            counter.increment(1);
        }
        if let (Some(histogram), Some(started)) = (&method.handling, self.started) {
            histogram.record(started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(CANCELED);
    }
}

/// Finds gRPC message boundaries in a body's bytes: each message is a 1-byte
/// compression flag, a 4-byte big-endian length, then that many bytes.
#[derive(Default)]
struct MessageFrames {
    header: [u8; 5],
    header_filled: usize,
    /// Bytes of the current message's payload still to come.
    remaining: u64,
}

impl MessageFrames {
    /// Feeds a chunk; returns (messages started, their payload bytes).
    fn feed(&mut self, mut chunk: &[u8]) -> (u64, u64) {
        let (mut messages, mut bytes) = (0, 0);
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let take = (chunk.len() as u64).min(self.remaining);
                self.remaining -= take;
                chunk = &chunk[take as usize..];
                continue;
            }
            let take = (5 - self.header_filled).min(chunk.len());
            self.header[self.header_filled..self.header_filled + take]
                .copy_from_slice(&chunk[..take]);
            self.header_filled += take;
            chunk = &chunk[take..];
            if self.header_filled == 5 {
                let length = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                self.header_filled = 0;
                self.remaining = u64::from(length);
                messages += 1;
                bytes += u64::from(length);
            }
        }
        (messages, bytes)
    }
}

/// A request or response body that counts the gRPC messages passing through it; a
/// response body also finishes its call when its trailers pass.
struct CountingBody {
    inner: Body,
    frames: MessageFrames,
    messages: Counter,
    bytes: Counter,
    call: Option<Call>,
}

impl http_body::Body for CountingBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let (messages, bytes) = this.frames.feed(data.chunk());
                    if messages > 0 {
                        this.messages.increment(messages);
                        this.bytes.increment(bytes);
                    }
                } else if let Some(trailers) = frame.trailers_ref()
                    && let Some(call) = this.call.as_mut()
                {
                    call.finish(status_code(trailers).unwrap_or(UNKNOWN));
                }
            }
            Poll::Ready(None) => {
                // Ended without trailers: grpc-go would report the stream's error.
                if let Some(call) = this.call.as_mut() {
                    call.finish(UNKNOWN);
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_counted_across_chunk_boundaries() {
        let mut frames = MessageFrames::default();
        // Two messages of 3 and 0 bytes, then a header split over two chunks.
        let stream = [0u8, 0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(frames.feed(&stream[..2]), (0, 0));
        assert_eq!(frames.feed(&stream[2..6]), (1, 3));
        assert_eq!(frames.feed(&stream[6..]), (1, 0));
        assert_eq!(frames.feed(&[0, 7, 1]), (1, 1793));
    }

    #[test]
    fn every_method_is_registered_once() {
        let shared = Shared::new(false);
        let count: usize = METHODS.iter().map(|(_, list)| list.len()).sum();
        assert_eq!(shared.methods.len(), count);
        assert_eq!(
            shared.methods["/etcdserverpb.Watch/Watch"].call_type,
            BidiStream
        );
    }
}
