//! The outgoing side: one task per peer streaming raft messages, and snapshot transfers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use concord_proto::concordpb::SnapshotChunk;
use concord_proto::concordpb::peer_client::PeerClient;
use parking_lot::Mutex;
use raft::eraftpb::Message;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tonic::transport::Channel;
use tracing::{debug, info, warn};
use url::Url;

use super::backoff::Backoff;
use super::connect::connect;
use super::raft_stream::{self, RaftConnection, SharedQueue};
use super::{
    CLUSTER_ID_HEADER, Common, FROM_HEADER, Inbound, MAX_MESSAGE_BYTES, PEER_QUEUE_CAPACITY,
    PEER_URLS_HEADER, SNAPSHOT_CHUNK_BYTES,
};
use crate::stream_tasks;

/// The handle on one peer's task.
pub(super) struct PeerLink {
    pub(super) queue: mpsc::Sender<Message>,
    urls: watch::Sender<Vec<Url>>,
    active: Arc<AtomicBool>,
    task: AbortHandle,
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PeerLink {
    pub(super) fn start(
        common: Arc<Common>,
        peer_id: u64,
        urls: Vec<Url>,
        runtime: &Handle,
    ) -> Self {
        let (queue, queue_rx) = mpsc::channel(PEER_QUEUE_CAPACITY);
        let (urls, urls_rx) = watch::channel(urls);
        let active = Arc::new(AtomicBool::new(false));
        let task = runtime
            .spawn(run(common, peer_id, queue_rx, urls_rx, active.clone()))
            .abort_handle();
        Self {
            queue,
            urls,
            active,
            task,
        }
    }

    pub(super) fn set_urls(&self, urls: Vec<Url>) {
        self.urls.send_if_modified(|current| {
            let changed = *current != urls;
            *current = urls;
            changed
        });
    }

    pub(super) fn urls(&self) -> Vec<Url> {
        self.urls.borrow().clone()
    }

    pub(super) fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }
}

/// Why a connection to the peer ended.
enum Ended {
    /// The peer was removed: the task ends.
    Removed,
    /// The peer's URLs changed and no longer include the connected one: reconnect now.
    UrlsChanged,
    /// Connecting failed or the stream broke: wait, then try the next URL.
    Failed,
}

/// The seed of a link's backoff jitter: fixed per (local, peer) pair.
fn jitter_seed(local_id: u64, peer_id: u64) -> u64 {
    local_id.rotate_left(32) ^ peer_id
}

async fn run(
    common: Arc<Common>,
    peer_id: u64,
    queue: mpsc::Receiver<Message>,
    mut urls: watch::Receiver<Vec<Url>>,
    active: Arc<AtomicBool>,
) {
    let queue: SharedQueue = Arc::new(Mutex::new(queue));
    let mut backoff = Backoff::new(jitter_seed(common.local_id, peer_id));
    let mut next_url = 0usize;
    let mut was_connected = false;
    loop {
        let candidates = urls.borrow_and_update().clone();
        let ended = match candidates.get(next_url % candidates.len().max(1)) {
            None => Ended::Failed,
            Some(url) => match raft_stream::connect(url, common.client_tls.clone()).await {
                Ok(connection) => {
                    let _active = super::metrics::ActivePeer::new(common.local_id, peer_id);
                    if !was_connected {
                        info!(peer = %format_args!("{peer_id:x}"), %url, "peer connected");
                    }
                    was_connected = true;
                    active.store(true, Ordering::Relaxed);
                    backoff.reset();
                    let ended = stream_messages(
                        &common,
                        peer_id,
                        url,
                        connection,
                        queue.clone(),
                        &mut urls,
                    )
                    .await;
                    active.store(false, Ordering::Relaxed);
                    ended
                }
                Err(error) => {
                    // A peer refusing our certificate is worth a warning even before the
                    // first connection (etcd logs the remote TLS error).
                    let refused = crate::tls::go_tls_error_text(&error);
                    if was_connected || refused.is_some() {
                        let error = refused.unwrap_or_else(|| error.to_string());
                        warn!(peer = %format_args!("{peer_id:x}"), %url, %error, "peer unreachable");
                    } else {
                        debug!(peer = %format_args!("{peer_id:x}"), %url, %error, "cannot connect to peer");
                    }
                    was_connected = false;
                    next_url = next_url.wrapping_add(1);
                    Ended::Failed
                }
            },
        };
        match ended {
            Ended::Removed => return,
            Ended::UrlsChanged => {
                next_url = 0;
                continue;
            }
            Ended::Failed => {}
        }
        if !wait_dropping(
            &common,
            peer_id,
            backoff.next_delay(),
            queue.clone(),
            &mut urls,
        )
        .await
        {
            return;
        }
    }
}

/// Waits `delay` before the next connection attempt, dropping what raft sends meanwhile
/// (reported once as unreachable). Returns early if the URLs change, and `false` if the
/// peer was removed.
async fn wait_dropping(
    common: &Common,
    peer_id: u64,
    delay: Duration,
    queue: SharedQueue,
    urls: &mut watch::Receiver<Vec<Url>>,
) -> bool {
    let mut reported = false;
    let drop_one = |reported: &mut bool| {
        if !*reported {
            common.report(Inbound::Unreachable(peer_id));
            *reported = true;
        }
    };
    // Whatever was queued for the failed connection is lost.
    loop {
        let dropped = queue.lock().try_recv().is_ok();
        if !dropped {
            break;
        }
        drop_one(&mut reported);
    }
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => return true,
            changed = urls.changed() => return changed.is_ok(),
            message = NextMessage(queue.clone()) => match message {
                Some(_) => drop_one(&mut reported),
                None => return false,
            },
        }
    }
}

/// The next message queued for the peer (the queue lock is held only while polling).
struct NextMessage(SharedQueue);

impl Future for NextMessage {
    type Output = Option<Message>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.0.lock().poll_recv(cx)
    }
}

fn add_headers<T>(request: &mut tonic::Request<T>, common: &Common) {
    let cluster_id = common.cluster_id.load(Ordering::Relaxed);
    let metadata = request.metadata_mut();
    if let Ok(value) = format!("{cluster_id:x}").parse() {
        metadata.insert(CLUSTER_ID_HEADER, value);
    }
    if let Ok(value) = format!("{:x}", common.local_id).parse() {
        metadata.insert(FROM_HEADER, value);
    }
    let peer_urls = common.advertised_peer_urls.lock().clone();
    if !peer_urls.is_empty()
        && let Ok(value) = peer_urls.parse()
    {
        metadata.insert(PEER_URLS_HEADER, value);
    }
}

fn peer_client(channel: Channel) -> PeerClient<Channel> {
    PeerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Streams queued messages to the peer over one `Raft` call until it breaks, the peer is
/// removed or its URLs change.
async fn stream_messages(
    common: &Common,
    peer_id: u64,
    url: &Url,
    connection: RaftConnection,
    queue: SharedQueue,
    urls: &mut watch::Receiver<Vec<Url>>,
) -> Ended {
    let RaftConnection {
        mut sender,
        connection,
        executor,
    } = connection;
    let broke = |why: String| {
        warn!(peer = %format_args!("{peer_id:x}"), %url, %why, "raft stream to peer broke");
        common.report(Inbound::Unreachable(peer_id));
        Ended::Failed
    };
    // The connection and everything hyper starts for it run inside this task.
    let driving = stream_tasks::drive(connection, executor);
    tokio::pin!(driving);
    let peer_urls = common.advertised_peer_urls.lock().clone();
    let caller = raft_stream::Caller {
        cluster_id: common.cluster_id.load(Ordering::Relaxed),
        local_id: common.local_id,
        peer_urls: &peer_urls,
    };
    let request = match raft_stream::request(
        url,
        &caller,
        queue.clone(),
        common.metrics.peer(peer_id).sent_bytes.clone(),
    ) {
        Ok(request) => request,
        Err(error) => return broke(error.to_string()),
    };
    // The handshake is done; the first request is accepted at once or the connection
    // is already gone.
    tokio::select! {
        ready = sender.ready() => if let Err(error) = ready {
            return broke(failure_text(&error));
        },
        ended = &mut driving => return broke(connection_end(ended)),
    }
    let call = sender.send_request(request);
    tokio::pin!(call);
    loop {
        tokio::select! {
            ended = &mut driving => return broke(connection_end(ended)),
            response = &mut call => {
                match response {
                    Ok(response) => {
                        let status = response
                            .headers()
                            .get("grpc-status")
                            .and_then(|value| value.to_str().ok())
                            .unwrap_or("0")
                            .to_owned();
                        if status == "0" {
                            debug!(peer = %format_args!("{peer_id:x}"), "peer closed the raft stream");
                        } else if status == (tonic::Code::PermissionDenied as i32).to_string() {
                            // Only a removed member is refused so (see the service).
                            common.inbound.removed_from_cluster();
                        } else {
                            warn!(peer = %format_args!("{peer_id:x}"), %url, grpc_status = %status, "peer refused the raft stream");
                        }
                        common.report(Inbound::Unreachable(peer_id));
                        return Ended::Failed;
                    }
                    Err(error) => return broke(failure_text(&error)),
                }
            }
            changed = urls.changed() => {
                if changed.is_err() {
                    return Ended::Removed;
                }
                if !urls.borrow_and_update().contains(url) {
                    return Ended::UrlsChanged;
                }
            }
        }
    }
}

fn connection_end(ended: std::result::Result<(), hyper::Error>) -> String {
    match ended {
        Ok(()) => "connection closed".to_string(),
        Err(error) => failure_text(&error),
    }
}

/// Why a connection failed: a TLS refusal in Go's words ("remote error: tls: bad
/// certificate", as etcd logs it), else the error itself.
fn failure_text(error: &(dyn std::error::Error + 'static)) -> String {
    crate::tls::go_tls_error_text(error).unwrap_or_else(|| error.to_string())
}

/// Starts sending a `MsgSnapshot` on its own task; reports the outcome as
/// [`Inbound::SnapshotReport`].
pub(super) fn spawn_snapshot(
    common: Arc<Common>,
    urls: Vec<Url>,
    message: Message,
    runtime: &Handle,
) {
    runtime.spawn(async move {
        let to = message.to;
        let started = std::time::Instant::now();
        let delivered = send_snapshot(&common, &urls, message).await;
        super::metrics::snapshot_sent(to, delivered, started.elapsed());
        common.report(Inbound::SnapshotReport { to, delivered });
    });
}

async fn send_snapshot(common: &Common, urls: &[Url], mut message: Message) -> bool {
    let to = message.to;
    let data = message.mut_snapshot().take_data();
    let streams = common.streams.lock().clone();
    if let Some(reader) = streams.and_then(|s| s.outgoing(&data)) {
        return stream_snapshot(common, urls, message, reader).await;
    }
    let header = match concord_raft_core::codec::encode_message(&message) {
        Ok(header) => header,
        Err(error) => {
            warn!(%error, "cannot encode a snapshot message");
            return false;
        }
    };
    for url in urls {
        let channel = match connect(url, common.client_tls.clone()).await {
            Ok(channel) => channel,
            Err(error) => {
                debug!(peer = %format_args!("{to:x}"), %url, %error, "cannot connect for a snapshot");
                continue;
            }
        };
        let size = data.len();
        let mut request = tonic::Request::new(tokio_stream::iter(snapshot_chunks(
            header.clone(),
            data.clone(),
        )));
        add_headers(&mut request, common);
        return match peer_client(channel).snapshot_chunks(request).await {
            Ok(_) => {
                info!(peer = %format_args!("{to:x}"), bytes = size, "sent a snapshot");
                true
            }
            Err(status) => {
                warn!(peer = %format_args!("{to:x}"), %url, %status, "sending a snapshot failed");
                false
            }
        };
    }
    false
}

/// Sends a snapshot whose data comes from `reader`: a blocking thread reads it a chunk
/// at a time (a chunk ahead of the one in flight, to mark the last), so neither side of
/// the transfer holds more than a few chunks.
async fn stream_snapshot(
    common: &Common,
    urls: &[Url],
    message: Message,
    mut reader: Box<dyn std::io::Read + Send>,
) -> bool {
    let to = message.to;
    let header = match concord_raft_core::codec::encode_message(&message) {
        Ok(header) => header,
        Err(error) => {
            warn!(%error, "cannot encode a snapshot message");
            return false;
        }
    };
    let mut channel = None;
    for url in urls {
        match connect(url, common.client_tls.clone()).await {
            Ok(connected) => {
                channel = Some((connected, url.clone()));
                break;
            }
            Err(error) => {
                debug!(peer = %format_args!("{to:x}"), %url, %error, "cannot connect for a snapshot")
            }
        }
    }
    let Some((channel, url)) = channel else {
        return false;
    };
    let (chunks, receiver) = tokio::sync::mpsc::channel::<SnapshotChunk>(2);
    let reading = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let mut offset = 0u64;
        let mut header = Some(header);
        let mut pending: Option<Vec<u8>> = None;
        loop {
            let mut next = vec![0u8; SNAPSHOT_CHUNK_BYTES];
            let mut filled = 0;
            while filled < next.len() {
                match reader.read(&mut next[filled..])? {
                    0 => break,
                    n => filled += n,
                }
            }
            next.truncate(filled);
            let done = filled == 0;
            if let Some(data) = pending.take() {
                let len = data.len() as u64;
                let chunk = SnapshotChunk {
                    message: header.take().unwrap_or_default(),
                    data,
                    offset,
                    last: done,
                };
                offset += len;
                if chunks.blocking_send(chunk).is_err() {
                    return Err(std::io::Error::other("the snapshot stream ended"));
                }
            }
            if done {
                return Ok(offset);
            }
            pending = Some(next);
        }
    });
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(receiver));
    add_headers(&mut request, common);
    let sent = peer_client(channel).snapshot_chunks(request).await;
    let read = reading.await;
    match (sent, read) {
        (Ok(_), Ok(Ok(size))) => {
            info!(peer = %format_args!("{to:x}"), bytes = size, "sent a snapshot");
            true
        }
        (Err(status), _) => {
            warn!(peer = %format_args!("{to:x}"), %url, %status, "sending a snapshot failed");
            false
        }
        (_, Ok(Err(error))) => {
            warn!(peer = %format_args!("{to:x}"), %error, "reading a snapshot failed");
            false
        }
        (_, Err(error)) => {
            warn!(peer = %format_args!("{to:x}"), %error, "reading a snapshot failed");
            false
        }
    }
}

/// The chunks of a snapshot transfer: the message on the first, the data split into
/// [`SNAPSHOT_CHUNK_BYTES`] pieces (at least one chunk, even for empty data), `last` on
/// the final one. Chunks are copied out of `data` only as the stream pulls them.
pub(super) fn snapshot_chunks(header: Vec<u8>, data: Bytes) -> impl Iterator<Item = SnapshotChunk> {
    let count = data.len().div_ceil(SNAPSHOT_CHUNK_BYTES).max(1);
    let mut header = Some(header);
    (0..count).map(move |index| {
        let start = index * SNAPSHOT_CHUNK_BYTES;
        let end = (start + SNAPSHOT_CHUNK_BYTES).min(data.len());
        SnapshotChunk {
            message: if index == 0 {
                header.take().unwrap_or_default()
            } else {
                Vec::new()
            },
            data: data.slice(start..end).to_vec(),
            offset: start as u64,
            last: index + 1 == count,
        }
    })
}
