//! The outgoing `Raft` call of one peer link, on a hyper HTTP/2 connection of its own.
//!
//! Not through a tonic `Channel`: there a raft message went from the link task over a
//! channel to the request body's task, which woke the connection's task, which wrote it —
//! three task hand-overs per message, each a wake-up on a busy machine. Here the request
//! body reads the peer queue itself, and the connection, its body pipe and its response
//! future all run in the link's task ([`crate::stream_tasks`]): what the raft driver
//! queues wakes that one task, which encodes every queued message into one DATA frame and
//! writes it. On the wire it is the same gRPC client stream of `RaftMessageChunk`s.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use concord_proto::concordpb::RaftMessageChunk;
use hyper::body::{Body, Frame};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use prost::Message as _;
use raft::eraftpb::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::warn;
use url::Url;

use super::connect::{
    CONNECT_TIMEOUT, CONNECTION_WINDOW_BYTES, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT,
    STREAM_WINDOW_BYTES, Target,
};
use super::{CLUSTER_ID_HEADER, FROM_HEADER, NetError, PEER_URLS_HEADER, Result};
use crate::stream_tasks::ConnectionExecutor;

/// The gRPC method the stream calls (the `Peer` service's `Raft`).
const RAFT_METHOD_PATH: &str = "/concordpb.Peer/Raft";
/// Queued messages encoded into one DATA frame at most; the rest go in the next.
const MESSAGES_PER_FRAME: usize = 256;
/// A frame is closed once it holds this much (a large append is sent alone).
const FRAME_SOFT_LIMIT_BYTES: usize = 1024 * 1024;

/// The peer queue, shared by the link (which drains it while disconnected) and the body
/// of its current call.
pub(super) type SharedQueue = Arc<Mutex<mpsc::Receiver<Message>>>;

type PeerIo = TokioIo<Box<dyn PeerIoObject>>;

/// A connected HTTP/2 client: the handle to send the call on, and the connection future
/// with its executor (to be driven by [`crate::stream_tasks::drive`]).
pub(super) struct RaftConnection {
    pub(super) sender: SendRequest<QueueBody>,
    pub(super) connection: http2::Connection<PeerIo, QueueBody, ConnectionExecutor>,
    pub(super) executor: ConnectionExecutor,
}

/// The I/O of a peer connection: plain TCP or rustls over TCP.
pub(super) trait PeerIoObject: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PeerIoObject for T {}

async fn dial(target: &Target) -> io::Result<Box<dyn PeerIoObject>> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    // Heartbeats and appends are small and latency-bound: never wait for Nagle.
    tcp.set_nodelay(true)?;
    match &target.tls {
        None => Ok(Box::new(tcp)),
        Some((connector, server_name)) => {
            let stream = connector.connect(server_name.clone(), tcp).await?;
            Ok(Box::new(stream))
        }
    }
}

/// Connects to `url` (TCP, TLS for `https`, HTTP/2), failing after a few seconds.
pub(super) async fn connect(
    url: &Url,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<RaftConnection> {
    let target = super::connect::target(url, tls)?;
    let connecting = async {
        let io = dial(&target).await.map_err(|source| NetError::Io {
            context: format!("connecting to {url}"),
            source,
        })?;
        let executor = ConnectionExecutor::default();
        let (sender, connection) = http2::Builder::new(executor.clone())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|error| NetError::Io {
                context: format!("HTTP/2 handshake with {url}"),
                source: io::Error::other(error),
            })?;
        Ok(RaftConnection {
            sender,
            connection,
            executor,
        })
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(connected) => connected,
        Err(_) => Err(NetError::ConnectTimeout(url.to_string())),
    }
}

/// Who is calling: the cluster and member ids, and the member's advertised peer URLs
/// (comma-separated; empty if unknown).
pub(super) struct Caller<'a> {
    pub(super) cluster_id: u64,
    pub(super) local_id: u64,
    pub(super) peer_urls: &'a str,
}

/// The `Raft` call's request: gRPC headers, the caller's ids and peer URLs, and `queue`
/// as the body.
pub(super) fn request(
    url: &Url,
    caller: &Caller<'_>,
    queue: SharedQueue,
    sent_bytes: metrics::Counter,
) -> Result<http::Request<QueueBody>> {
    let uri = format!("{}://{}{RAFT_METHOD_PATH}", url.scheme(), url.authority());
    let mut builder = http::Request::builder()
        .method(http::Method::POST)
        .uri(uri)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(CLUSTER_ID_HEADER, format!("{:x}", caller.cluster_id))
        .header(FROM_HEADER, format!("{:x}", caller.local_id));
    if !caller.peer_urls.is_empty() {
        builder = builder.header(PEER_URLS_HEADER, caller.peer_urls);
    }
    builder
        .body(QueueBody { queue, sent_bytes })
        .map_err(|error| NetError::Url {
            url: url.to_string(),
            reason: error.to_string(),
        })
}

/// The request body: whatever is queued when the connection asks for data, as gRPC
/// messages in one frame.
pub(super) struct QueueBody {
    queue: SharedQueue,
    /// `etcd_network_peer_sent_bytes_total` of the peer.
    sent_bytes: metrics::Counter,
}

impl Body for QueueBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Infallible>>> {
        let mut queue = self.queue.lock();
        let mut frame = BytesMut::new();
        let mut batch = Vec::new();
        loop {
            match queue.poll_recv_many(cx, &mut batch, MESSAGES_PER_FRAME) {
                Poll::Ready(0) => break,
                Poll::Ready(_) => {
                    for message in batch.drain(..) {
                        append_grpc_message(&mut frame, &message);
                    }
                    if frame.len() >= FRAME_SOFT_LIMIT_BYTES {
                        break;
                    }
                }
                Poll::Pending => break,
            }
        }
        if !frame.is_empty() {
            self.sent_bytes.increment(frame.len() as u64);
            return Poll::Ready(Some(Ok(Frame::data(frame.freeze()))));
        }
        if queue.is_closed() && queue.is_empty() {
            // The link is gone: end the call cleanly.
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

/// Appends `message` as one length-prefixed gRPC message (uncompressed) holding a
/// `RaftMessageChunk`. A message raft's codec cannot encode is dropped (raft resends).
fn append_grpc_message(frame: &mut BytesMut, message: &Message) {
    let encoded = match concord_raft_core::codec::encode_message(message) {
        Ok(encoded) => encoded,
        Err(error) => {
            warn!(%error, "cannot encode a raft message; dropped");
            return;
        }
    };
    let chunk = RaftMessageChunk { message: encoded };
    let len = chunk.encoded_len();
    let Ok(prefix) = u32::try_from(len) else {
        warn!(bytes = len, "a raft message too large for gRPC; dropped");
        return;
    };
    frame.reserve(5 + len);
    frame.put_u8(0);
    frame.put_u32(prefix);
    // BytesMut grows as needed, so encoding cannot run out of room.
    let _ = chunk.encode(frame);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(to: u64, term: u64) -> Message {
        let mut message = Message::default();
        message.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
        message.from = 1;
        message.to = to;
        message.term = term;
        message
    }

    /// Splits a body frame back into its gRPC messages.
    fn grpc_messages(mut frame: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        while !frame.is_empty() {
            assert_eq!(frame[0], 0, "uncompressed");
            let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
            let chunk = RaftMessageChunk::decode(&frame[5..5 + len]).unwrap();
            out.push(concord_raft_core::codec::decode_message(&chunk.message).unwrap());
            frame = &frame[5 + len..];
        }
        out
    }

    #[tokio::test]
    async fn body_sends_everything_queued_in_one_frame_in_order() {
        let (tx, rx) = mpsc::channel(16);
        let mut body = QueueBody {
            queue: Arc::new(Mutex::new(rx)),
            sent_bytes: metrics::Counter::noop(),
        };
        for term in 1..=3 {
            tx.send(heartbeat(2, term)).await.unwrap();
        }
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
            .await
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap();
        let terms: Vec<u64> = grpc_messages(&frame).iter().map(|m| m.term).collect();
        assert_eq!(terms, vec![1, 2, 3]);

        // Nothing queued: the body waits; once the link drops its sender, the call ends.
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        drop(tx);
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(None)
        ));
    }
}
