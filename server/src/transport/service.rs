//! The incoming side: the `Peer` gRPC service.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::BytesMut;
use concord_proto::concordpb::peer_server::Peer;
use concord_proto::concordpb::{
    MemberInfoRequest, MemberInfoResponse, RaftAck, RaftMessageChunk, SnapshotChunk,
};
use concord_proto::etcdserverpb::{
    HashKvRequest, HashKvResponse, MemberAddRequest, MemberAddResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
};
use raft::eraftpb::Message;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use super::{CLUSTER_ID_HEADER, Common, FROM_HEADER, Inbound, PEER_URLS_HEADER, PeerTransport};

type MemberInfoFn = Arc<dyn Fn() -> MemberInfoResponse + Send + Sync>;

/// Receives raft messages and snapshots from other members (see
/// [`super::PeerTransport::service`]).
pub struct PeerService {
    common: Arc<Common>,
    /// The transport this service receives for: callers it does not know are added to
    /// it as remotes.
    transport: PeerTransport,
    member_info: MemberInfoFn,
}

impl std::fmt::Debug for PeerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerService")
            .field("local_id", &self.common.local_id)
            .finish()
    }
}

fn header_id(metadata: &MetadataMap, name: &str) -> Option<u64> {
    let text = metadata.get(name)?.to_str().ok()?;
    u64::from_str_radix(text, 16).ok()
}

impl PeerService {
    pub(super) fn new(transport: PeerTransport, member_info: MemberInfoFn) -> Self {
        Self {
            common: transport.common.clone(),
            transport,
            member_info,
        }
    }

    /// A caller this member does not know (its membership lags behind the caller's) is
    /// answered at the peer URLs its call names, as etcd's rafthttp does.
    fn add_caller_as_remote(&self, metadata: &MetadataMap) {
        let Some(from) = header_id(metadata, FROM_HEADER) else {
            return;
        };
        let Some(listed) = metadata
            .get(PEER_URLS_HEADER)
            .and_then(|value| value.to_str().ok())
        else {
            return;
        };
        let urls: Vec<url::Url> = listed
            .split(',')
            .filter_map(|url| url::Url::parse(url.trim()).ok())
            .collect();
        self.transport.add_remote(from, urls);
    }

    /// Refuses members of another cluster (ids unknown on either side are not checked).
    fn check_cluster(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let local = self.common.cluster_id.load(Ordering::Relaxed);
        let remote = header_id(metadata, CLUSTER_ID_HEADER).unwrap_or(0);
        if local != 0 && remote != 0 && local != remote {
            let from = header_id(metadata, FROM_HEADER).unwrap_or(0);
            warn!(
                from = %format_args!("{from:x}"),
                local = %format_args!("{local:x}"),
                remote = %format_args!("{remote:x}"),
                "refused a peer of another cluster"
            );
            return Err(Status::failed_precondition("cluster ID mismatch"));
        }
        Ok(())
    }

    fn deliver(&self, message: Message) -> Result<(), Status> {
        if self.common.removed.borrow().contains(&message.from) {
            // Ends the stream: the removed member learns it from the status.
            return Err(Status::permission_denied(super::MEMBER_REMOVED));
        }
        if message.to != self.common.local_id {
            // A peer with a stale view of membership; raft must not see it.
            warn!(
                to = %format_args!("{:x}", message.to),
                from = %format_args!("{:x}", message.from),
                "dropped a raft message addressed to another member"
            );
            return Ok(());
        }
        if self.common.inbound.deliver(Inbound::Message(message)) {
            Ok(())
        } else {
            Err(stopping())
        }
    }

    /// Resolves once member `id` is removed from the cluster (never for an unknown
    /// sender, 0).
    async fn removed(&self, id: u64) {
        let mut removed = self.common.removed.subscribe();
        // `Common` holds the sender, so `wait_for` only ends when `id` is removed.
        if id == 0
            || removed
                .wait_for(|removed| removed.contains(&id))
                .await
                .is_err()
        {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves when the transport stops.
    async fn stopped(&self) {
        let mut stopping = self.common.stopping.subscribe();
        // `Common` holds the sender, so `wait_for` only ends when stopping turns true.
        let _ = stopping.wait_for(|stopping| *stopping).await;
    }
}

fn stopping() -> Status {
    Status::unavailable("member is stopping")
}

fn decode(bytes: &[u8]) -> Result<Message, Status> {
    concord_raft_core::codec::decode_message(bytes)
        .map_err(|e| Status::invalid_argument(format!("malformed raft message: {e}")))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(
        &self,
        request: Request<Streaming<RaftMessageChunk>>,
    ) -> Result<Response<RaftAck>, Status> {
        self.check_cluster(request.metadata())?;
        let from = header_id(request.metadata(), FROM_HEADER).unwrap_or(0);
        if self.common.removed.borrow().contains(&from) {
            return Err(Status::permission_denied(super::MEMBER_REMOVED));
        }
        self.add_caller_as_remote(request.metadata());
        let mut stream = request.into_inner();
        let peer_metrics = self.common.metrics.peer(from);
        let stopped = self.stopped();
        tokio::pin!(stopped);
        let removed = self.removed(from);
        tokio::pin!(removed);
        loop {
            let chunk = tokio::select! {
                chunk = stream.message() => chunk?,
                () = &mut stopped => return Err(stopping()),
                // Ends the stream: the removed member learns it from the status.
                () = &mut removed => return Err(Status::permission_denied(super::MEMBER_REMOVED)),
            };
            let Some(chunk) = chunk else {
                return Ok(Response::new(RaftAck {}));
            };
            // The gRPC framing (5 bytes) and the chunk's field header count too.
            peer_metrics
                .received_bytes
                .increment(chunk.message.len() as u64 + 8);
            let message = decode(&chunk.message)?;
            match message.get_msg_type() {
                raft::eraftpb::MessageType::MsgHeartbeatResponse => {
                    peer_metrics.heartbeat_answered();
                }
                raft::eraftpb::MessageType::MsgAppend => self
                    .common
                    .stats
                    .append_received(message.from, chunk.message.len()),
                raft::eraftpb::MessageType::MsgAppendResponse => {
                    self.common.stats.append_answered(message.from);
                }
                _ => {}
            }
            self.deliver(message)?;
        }
    }

    async fn snapshot_chunks(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftAck>, Status> {
        let from = header_id(request.metadata(), FROM_HEADER).unwrap_or(0);
        let started = Instant::now();
        let received = self.receive_snapshot(request, started).await;
        super::metrics::snapshot_received(from, received.is_ok(), started.elapsed());
        received
    }

    async fn member_info(
        &self,
        _request: Request<MemberInfoRequest>,
    ) -> Result<Response<MemberInfoResponse>, Status> {
        Ok(Response::new((self.member_info)()))
    }

    /// etcd's peer `/members/hashkv`: behind the same TLS and certificate checks as
    /// the raft traffic (the peer listener's), refused to members of other clusters.
    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        self.check_cluster(request.metadata())?;
        let source = self
            .common
            .hash_kv
            .lock()
            .clone()
            .ok_or_else(|| Status::unavailable("member is starting"))?;
        let revision = request.into_inner().revision;
        let answer = tokio::task::spawn_blocking(move || source.hash_kv(revision))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(answer))
    }

    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let changes = self.member_changes(request.metadata())?;
        Ok(Response::new(changes.add(request.into_inner()).await?))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let changes = self.member_changes(request.metadata())?;
        Ok(Response::new(changes.remove(request.into_inner()).await?))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let changes = self.member_changes(request.metadata())?;
        Ok(Response::new(changes.promote(request.into_inner()).await?))
    }
}

impl PeerService {
    /// Where a forwarded member change is made: behind the peer listener's TLS and
    /// certificate checks, refused to members of other clusters.
    fn member_changes(
        &self,
        metadata: &MetadataMap,
    ) -> Result<Arc<dyn super::LeaderMemberChanges>, Status> {
        self.check_cluster(metadata)?;
        self.common
            .member_changes
            .lock()
            .clone()
            .ok_or_else(|| Status::unavailable("member is starting"))
    }

    /// Receives one snapshot transfer (begun at `started`) and hands it to raft.
    async fn receive_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
        started: Instant,
    ) -> Result<Response<RaftAck>, Status> {
        self.check_cluster(request.metadata())?;
        self.add_caller_as_remote(request.metadata());
        let mut stream = request.into_inner();
        let stopped = self.stopped();
        tokio::pin!(stopped);
        let mut message: Option<Message> = None;
        let mut data = BytesMut::new();
        // With streams the data goes to a file as it arrives (never whole in memory).
        let streams = self.common.streams.lock().clone();
        let mut file = match &streams {
            Some(streams) => Some(
                streams
                    .incoming()
                    .map_err(|e| Status::internal(format!("snapshot file: {e}")))?,
            ),
            None => None,
        };
        let mut received = 0u64;
        loop {
            let chunk = tokio::select! {
                chunk = stream.message() => chunk?,
                () = &mut stopped => return Err(stopping()),
            };
            let Some(chunk) = chunk else {
                return Err(Status::invalid_argument(
                    "snapshot stream ended before its last chunk",
                ));
            };
            if message.is_none() {
                message = Some(decode(&chunk.message)?);
            }
            if chunk.offset != received {
                return Err(Status::invalid_argument(format!(
                    "snapshot chunk at offset {} but {received} bytes received",
                    chunk.offset,
                )));
            }
            received += chunk.data.len() as u64;
            match &mut file {
                Some((file, _)) => {
                    use std::io::Write;
                    file.write_all(&chunk.data)
                        .map_err(|e| Status::internal(format!("snapshot file: {e}")))?;
                }
                None => data.extend_from_slice(&chunk.data),
            }
            if chunk.last {
                break;
            }
        }
        let Some(mut message) = message else {
            return Err(Status::invalid_argument("snapshot without a message"));
        };
        info!(
            from = %format_args!("{:x}", message.from),
            bytes = received,
            "received a snapshot"
        );
        match file {
            Some((file, descriptor)) => {
                let syncing = Instant::now();
                file.sync_all()
                    .map_err(|e| Status::internal(format!("snapshot file: {e}")))?;
                super::metrics::snapshot_file_saved(syncing.elapsed(), started.elapsed());
                message.mut_snapshot().set_data(descriptor.into());
            }
            None => message.mut_snapshot().set_data(data.freeze()),
        }
        self.deliver(message)?;
        Ok(Response::new(RaftAck {}))
    }
}
