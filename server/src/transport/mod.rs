//! The peer transport: raft messages between members over the gRPC `Peer` service.
//!
//! Outgoing, each peer has one task and one bounded queue. The task connects to the
//! peer's URLs (round robin on failure, exponential backoff with jitter from 100 ms to
//! 2 s) and streams messages, in order, over one client-streaming `Raft` call. While it is
//! disconnected, or when its queue is full, messages are dropped and the raft driver is
//! told [`Inbound::Unreachable`]; raft retries on its own. A `MsgSnapshot` goes over a
//! `SnapshotChunks` call on its own task (the message first, then the data in 1 MiB
//! chunks) and ends in an [`Inbound::SnapshotReport`].
//!
//! Incoming, [`PeerTransport::service`] is the `Peer` gRPC service to mount on the peer
//! listener; it decodes messages (and reassembles snapshots) into [`Inbound::Message`].
//!
//! Every call names its sender's advertised peer URLs ([`PEER_URLS_HEADER`], etcd's
//! `X-PeerURLs`). A member called by one it does not know adds it as a *remote*, a link
//! for answering it (etcd's `AddRemote`): a member whose membership lags behind the
//! cluster's (say, restarted before it applied the change that added its leader, or a
//! new member restarted before it installed anything) must still answer the votes and
//! appends that bring it up to date, or a cluster that needs its vote never elects.
//!
//! [`PeerTransport::send`] never blocks and may be called from any thread (the raft
//! driver runs on a plain std thread); everything async runs on the tokio runtime given
//! at construction.
//!
//! ```no_run
//! # async fn run() {
//! use concord_server::transport::{Inbound, PeerTransport};
//!
//! let (inbound_tx, inbound_rx) = std::sync::mpsc::channel();
//! let transport = PeerTransport::new(1, 0xc1, None, inbound_tx);
//! transport.add_peer(2, vec![url::Url::parse("http://127.0.0.1:2380").unwrap()]);
//! let mut heartbeat = raft::eraftpb::Message::default();
//! heartbeat.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
//! heartbeat.from = 1;
//! heartbeat.to = 2;
//! transport.send(vec![heartbeat]);
//! // The driver thread reads what peers sent (and delivery reports):
//! while let Ok(event) = inbound_rx.recv() {
//!     if let Inbound::Message(message) = event { /* raw_node.step(message) */ }
//! }
//! # }
//! ```

mod backoff;
mod connect;
mod error;
mod link;
mod metrics;
mod raft_stream;
mod service;
mod stats;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use concord_proto::concordpb::MemberInfoResponse;
use concord_proto::concordpb::peer_server::PeerServer;
use parking_lot::Mutex;
use raft::eraftpb::{Message, MessageType};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use url::Url;

pub use connect::{connect, fetch_hash_kv, fetch_member_info, lazy_channel, peer_request};
pub use error::{NetError, Result};
pub use service::PeerService;
pub use stats::{FollowerStats, RaftStats, SelfStats};

use link::PeerLink;

/// The largest gRPC message either side of the peer service accepts (raft appends can be
/// large; snapshots travel in chunks).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Size of one snapshot data chunk.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// Messages waiting for one peer beyond this are dropped (and the peer reported
/// unreachable) rather than piling up behind a slow link.
pub const PEER_QUEUE_CAPACITY: usize = 4096;
/// Request metadata naming the sender's cluster (hex); a member of another cluster is
/// refused, as etcd does with `X-Etcd-Cluster-ID`.
pub const CLUSTER_ID_HEADER: &str = "x-concord-cluster-id";
/// Request metadata naming the sending member (hex).
pub const FROM_HEADER: &str = "x-concord-from";
/// Request metadata with the sending member's advertised peer URLs, comma-separated (as
/// etcd's `X-PeerURLs`): how a member reaches a caller its membership does not name yet.
pub const PEER_URLS_HEADER: &str = "x-concord-peer-urls";

/// What the transport hands to the raft driver.
#[derive(Debug)]
pub enum Inbound {
    /// A message from a peer, to step into raft.
    Message(Message),
    /// The outcome of sending a snapshot to `to` (raft's `report_snapshot`).
    SnapshotReport { to: u64, delivered: bool },
    /// Messages to this peer were dropped (raft's `report_unreachable`).
    Unreachable(u64),
}

/// Where the transport delivers what arrives from peers. The server hands it straight to
/// the raft driver's command channel (no thread in between); tests use an mpsc sender.
pub trait InboundSink: Send + Sync + 'static {
    /// Delivers one event; false once the receiver is gone (the member is stopping).
    fn deliver(&self, event: Inbound) -> bool;

    /// A peer refused this member because it was removed from the cluster (etcd's
    /// rafthttp answers a removed member the same way): the member should stop.
    fn removed_from_cluster(&self) {}
}

/// Snapshot data that is streamed rather than carried in the `MsgSnapshot`: the state
/// machine puts a small descriptor in the message's `data`, and the transport asks this
/// for the bytes it stands for (sending) or for a file to write them to (receiving).
pub trait SnapshotStreams: Send + Sync + 'static {
    /// The bytes an outgoing snapshot's `data` stands for, if it is a descriptor.
    fn outgoing(&self, data: &[u8]) -> Option<Box<dyn std::io::Read + Send>>;
    /// A fresh file for an incoming snapshot, and the `data` that names it once written.
    fn incoming(&self) -> std::io::Result<(std::fs::File, Vec<u8>)>;
}

/// Answers a peer's `HashKv` (the corruption checks): this member's HashKV at a
/// revision, or the etcd error for it. Called on a blocking thread: it reads the whole
/// store.
pub trait HashKvSource: Send + Sync + 'static {
    fn hash_kv(
        &self,
        revision: i64,
    ) -> std::result::Result<concord_proto::etcdserverpb::HashKvResponse, tonic::Status>;
}

/// Makes the member changes other members hand to this one as the leader (see the
/// `Peer` service's `MemberAdd`): their callers were checked where they called.
pub trait LeaderMemberChanges: Send + Sync + 'static {
    fn add(
        &self,
        request: concord_proto::etcdserverpb::MemberAddRequest,
    ) -> futures::future::BoxFuture<
        'static,
        std::result::Result<concord_proto::etcdserverpb::MemberAddResponse, tonic::Status>,
    >;
    fn remove(
        &self,
        request: concord_proto::etcdserverpb::MemberRemoveRequest,
    ) -> futures::future::BoxFuture<
        'static,
        std::result::Result<concord_proto::etcdserverpb::MemberRemoveResponse, tonic::Status>,
    >;
    fn promote(
        &self,
        request: concord_proto::etcdserverpb::MemberPromoteRequest,
    ) -> futures::future::BoxFuture<
        'static,
        std::result::Result<concord_proto::etcdserverpb::MemberPromoteResponse, tonic::Status>,
    >;
}

/// What a peer answers a removed member (etcd's `errMemberRemoved`).
pub const MEMBER_REMOVED: &str = "the member has been permanently removed from the cluster";

impl InboundSink for std::sync::mpsc::Sender<Inbound> {
    fn deliver(&self, event: Inbound) -> bool {
        self.send(event).is_ok()
    }
}

/// State shared by the transport handle, its peer tasks and its gRPC service.
struct Common {
    local_id: u64,
    /// 0 while unknown (a member joining before it learned the cluster).
    cluster_id: AtomicU64,
    /// This member's advertised peer URLs, comma-separated ([`PEER_URLS_HEADER`]); empty
    /// until set.
    advertised_peer_urls: Mutex<String>,
    client_tls: Option<Arc<rustls::ClientConfig>>,
    inbound: Box<dyn InboundSink>,
    /// Set when the transport stops: the service ends its open streams.
    stopping: watch::Sender<bool>,
    /// Members removed from the cluster: their raft streams are refused, and those
    /// already open are ended at once (so the member learns it now, as etcd's refused
    /// stream dial tells it, not at its next message).
    removed: watch::Sender<std::collections::HashSet<u64>>,
    /// Where snapshot data is streamed from and to (carried in memory without it).
    streams: Mutex<Option<Arc<dyn SnapshotStreams>>>,
    /// Where `HashKv` calls are answered from (unavailable until set).
    hash_kv: Mutex<Option<Arc<dyn HashKvSource>>>,
    /// Where forwarded member changes are made (unavailable until set).
    member_changes: Mutex<Option<Arc<dyn LeaderMemberChanges>>>,
    metrics: metrics::PeersMetrics,
    /// What `/v2/stats/self` and `/v2/stats/leader` report.
    stats: Arc<RaftStats>,
}

impl Common {
    fn report(&self, event: Inbound) {
        // The receiver is gone only when the member is stopping; nothing left to tell.
        self.inbound.deliver(event);
    }
}

/// The member-to-member transport. Cheap to clone; all clones share the same peers.
#[derive(Clone)]
pub struct PeerTransport {
    common: Arc<Common>,
    peers: Arc<Mutex<HashMap<u64, PeerLink>>>,
    runtime: Handle,
}

impl std::fmt::Debug for PeerTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTransport")
            .field("local_id", &self.common.local_id)
            .field("peers", &self.peers.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PeerTransport {
    /// A transport for member `local_id` of cluster `cluster_id`, running its tasks on the
    /// current tokio runtime.
    ///
    /// # Panics
    /// When called outside a tokio runtime; use [`PeerTransport::with_runtime`] there.
    pub fn new(
        local_id: u64,
        cluster_id: u64,
        client_tls: Option<Arc<rustls::ClientConfig>>,
        inbound: impl InboundSink,
    ) -> Self {
        Self::with_runtime(local_id, cluster_id, client_tls, inbound, Handle::current())
    }

    /// Like [`PeerTransport::new`], with the runtime given explicitly.
    pub fn with_runtime(
        local_id: u64,
        cluster_id: u64,
        client_tls: Option<Arc<rustls::ClientConfig>>,
        inbound: impl InboundSink,
        runtime: Handle,
    ) -> Self {
        let (stopping, _) = watch::channel(false);
        Self {
            common: Arc::new(Common {
                local_id,
                cluster_id: AtomicU64::new(cluster_id),
                advertised_peer_urls: Mutex::new(String::new()),
                client_tls,
                inbound: Box::new(inbound),
                stopping,
                removed: watch::Sender::new(Default::default()),
                streams: Mutex::new(None),
                hash_kv: Mutex::new(None),
                member_changes: Mutex::new(None),
                metrics: Default::default(),
                stats: Arc::new(RaftStats::new(local_id)),
            }),
            peers: Arc::new(Mutex::new(HashMap::new())),
            runtime,
        }
    }

    /// The raft traffic counters of etcd's v2 stats.
    pub fn stats(&self) -> Arc<RaftStats> {
        self.common.stats.clone()
    }

    /// This member's id.
    pub fn local_id(&self) -> u64 {
        self.common.local_id
    }

    /// Sets the cluster id once it is known (a joining member learns it late).
    pub fn set_cluster_id(&self, cluster_id: u64) {
        self.common.cluster_id.store(cluster_id, Ordering::Relaxed);
    }

    /// Names this member's advertised peer URLs in every call it makes from now on, so
    /// that a peer that does not know it yet can answer it (see [`PEER_URLS_HEADER`]).
    pub fn set_advertised_peer_urls(&self, urls: &[Url]) {
        let joined = urls.iter().map(Url::as_str).collect::<Vec<_>>().join(",");
        *self.common.advertised_peer_urls.lock() = joined;
    }

    /// Starts talking to peer `id` at `urls`. Adding a known peer updates its URLs.
    pub fn add_peer(&self, id: u64, urls: Vec<Url>) {
        if id == self.common.local_id {
            return;
        }
        let mut peers = self.peers.lock();
        if let Some(link) = peers.get(&id) {
            link.set_urls(urls);
            return;
        }
        let link = PeerLink::start(self.common.clone(), id, urls, &self.runtime);
        peers.insert(id, link);
    }

    /// Changes the URLs of peer `id` (adding it if unknown). The current connection is
    /// kept if its URL is still listed.
    pub fn update_peer(&self, id: u64, urls: Vec<Url>) {
        self.add_peer(id, urls);
    }

    /// Streams snapshot data through `streams` from now on (see [`SnapshotStreams`]).
    pub fn set_snapshot_streams(&self, streams: Arc<dyn SnapshotStreams>) {
        *self.common.streams.lock() = Some(streams);
    }

    /// Answers peers' `HashKv` calls from `source` from now on.
    pub fn set_hash_kv_source(&self, source: Arc<dyn HashKvSource>) {
        *self.common.hash_kv.lock() = Some(source);
    }

    /// Makes the member changes other members forward with `changes` from now on.
    pub fn set_member_changes(&self, changes: Arc<dyn LeaderMemberChanges>) {
        *self.common.member_changes.lock() = Some(changes);
    }

    /// Member `id`, which this member does not know, called it from `urls`: talk back to
    /// it there (etcd's "remote" peer), until the membership names it (then
    /// [`PeerTransport::add_peer`] owns its URLs) or removes it. Nothing for a known or
    /// removed member, or once the transport stopped.
    pub(crate) fn add_remote(&self, id: u64, urls: Vec<Url>) {
        if id == 0
            || id == self.common.local_id
            || urls.is_empty()
            || *self.common.stopping.borrow()
            || self.common.removed.borrow().contains(&id)
        {
            return;
        }
        let mut peers = self.peers.lock();
        if peers.contains_key(&id) {
            return;
        }
        // etcd's words (rafthttp's AddRemote).
        tracing::info!(
            local_member_id = %format_args!("{:x}", self.common.local_id),
            remote_peer_id = %format_args!("{id:x}"),
            remote_peer_urls = %urls.iter().map(Url::as_str).collect::<Vec<_>>().join(","),
            "added new remote peer"
        );
        let link = PeerLink::start(self.common.clone(), id, urls, &self.runtime);
        peers.insert(id, link);
    }

    /// Peer `id` was removed from the cluster for good: stop talking to it, and tell it
    /// so when it calls.
    pub fn mark_removed(&self, id: u64) {
        self.common.removed.send_modify(|removed| {
            removed.insert(id);
        });
        self.remove_peer(id);
    }

    /// Stops talking to peer `id`; messages to it are dropped from now on.
    pub fn remove_peer(&self, id: u64) {
        self.peers.lock().remove(&id);
    }

    /// The peers currently known.
    pub fn peer_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.peers.lock().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// True while a stream to peer `id` is established.
    pub fn is_active(&self, id: u64) -> bool {
        self.peers.lock().get(&id).is_some_and(PeerLink::is_active)
    }

    /// Queues `messages` to their peers (by `msg.to`), in order per peer. Never blocks.
    /// Messages to unknown peers, or beyond a full queue, are dropped and reported as
    /// [`Inbound::Unreachable`]; snapshots start their own transfer.
    pub fn send(&self, messages: Vec<Message>) {
        let mut unreachable = BTreeSet::new();
        {
            let peers = self.peers.lock();
            for message in messages {
                let to = message.to;
                let append = message.get_msg_type() == MessageType::MsgAppend;
                if append {
                    self.common
                        .stats
                        .append_sent(to, protobuf::Message::compute_size(&message) as usize);
                }
                let Some(link) = peers.get(&to) else {
                    if append {
                        self.common.stats.append_failed(to);
                    }
                    if message.get_msg_type() == MessageType::MsgSnapshot {
                        self.common.report(Inbound::SnapshotReport {
                            to,
                            delivered: false,
                        });
                    }
                    unreachable.insert(to);
                    continue;
                };
                if message.get_msg_type() == MessageType::MsgSnapshot {
                    link::spawn_snapshot(self.common.clone(), link.urls(), message, &self.runtime);
                    continue;
                }
                let heartbeat = message.get_msg_type() == MessageType::MsgHeartbeat;
                let peer_metrics = self.common.metrics.peer(to);
                if heartbeat {
                    peer_metrics.heartbeat_sent();
                }
                if let Err(error) = link.queue.try_send(message) {
                    peer_metrics.sent_failures.increment(1);
                    if append {
                        self.common.stats.append_failed(to);
                    }
                    if heartbeat {
                        ::metrics::counter!("etcd_server_heartbeat_send_failures_total")
                            .increment(1);
                    }
                    if matches!(error, mpsc::error::TrySendError::Full(_)) {
                        tracing::debug!(peer = to, "peer queue full: dropping a message");
                    }
                    unreachable.insert(to);
                }
            }
        }
        for to in unreachable {
            self.common.report(Inbound::Unreachable(to));
        }
    }

    /// The `Peer` gRPC service for the peer listener. `member_info` answers `MemberInfo`.
    pub fn service(
        &self,
        member_info: impl Fn() -> MemberInfoResponse + Send + Sync + 'static,
    ) -> PeerServer<PeerService> {
        PeerServer::new(PeerService::new(self.clone(), Arc::new(member_info)))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Stops every peer task and ends the streams peers have open to this member's
    /// service (so a graceful shutdown of the peer listener does not wait for them).
    pub fn stop(&self) {
        self.common.stopping.send_replace(true);
        self.peers.lock().clear();
    }
}

#[cfg(test)]
mod tests;
