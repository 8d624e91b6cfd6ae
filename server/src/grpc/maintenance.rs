//! The Maintenance service: status, hashes, leader transfer, snapshots (etcd's file
//! format, see `state::etcd_snapshot`) and defragmentation without a pause. Downgrades
//! answer `Unimplemented` with a message saying so.

use std::pin::Pin;
use std::sync::Arc;

use concord_proto::concordpb::{apply_result, internal_request};
use concord_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse,
    DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse, maintenance_server::Maintenance,
};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::core::{Core, expect_result};
use crate::driver::Command;
use crate::etcd_error::EtcdError;
use crate::grpc::ETCD_VERSION;
use crate::state::alarms::alarm_status_text;

pub struct MaintenanceService {
    core: Arc<Core>,
}

impl MaintenanceService {
    pub fn new(core: Arc<Core>) -> MaintenanceService {
        MaintenanceService { core }
    }
}

/// Bytes per `SnapshotResponse`, as etcd sends them.
const SNAPSHOT_CHUNK_BYTES: u64 = 32 * 1024;
/// Chunks read ahead of the client: what the stream holds in memory.
const SNAPSHOT_CHUNKS_IN_FLIGHT: usize = 8;

/// Writes the view as an etcd snapshot into an unlinked temporary file under `dir` (so
/// nothing is left behind whatever happens), then sends it as etcd does: the database in
/// 32 KiB chunks with the bytes remaining after each, then its sha256 in a message of its
/// own. Runs on a blocking thread; a client that goes away ends it.
fn send_snapshot(
    view: &concord_mvcc::StoreView,
    dir: &std::path::Path,
    sender: &tokio::sync::mpsc::Sender<Result<SnapshotResponse, Status>>,
) -> Result<(), Status> {
    use std::io::{Read, Seek, SeekFrom};
    let started = std::time::Instant::now();
    static EXPORTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let internal = |e: &dyn std::fmt::Display| Status::internal(e.to_string());
    let number = EXPORTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(
        "snapshot-export-{}-{number}.tmp",
        std::process::id()
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| internal(&e))?;
    // Unlinked at once: the open handle keeps the data until it is closed.
    std::fs::remove_file(&path).map_err(|e| internal(&e))?;
    let (mut file, written) =
        crate::state::etcd_snapshot::write_snapshot(view, file).map_err(|e| internal(&e))?;
    let total = written.db_size;
    tracing::info!(
        "sending database snapshot to client [{total} bytes, revision {}]",
        written.revision
    );
    file.seek(SeekFrom::Start(0)).map_err(|e| internal(&e))?;
    let mut sent = 0u64;
    while sent < total {
        let n = SNAPSHOT_CHUNK_BYTES.min(total - sent);
        let mut blob = vec![0; n as usize];
        file.read_exact(&mut blob).map_err(|e| internal(&e))?;
        sent += n;
        let chunk = SnapshotResponse {
            header: None,
            remaining_bytes: total - sent,
            blob,
            // etcd 3.4 sends no version (a 3.5 field).
            version: String::new(),
        };
        if sender.blocking_send(Ok(chunk)).is_err() {
            return Ok(());
        }
    }
    let mut sha = Vec::new();
    file.read_to_end(&mut sha).map_err(|e| internal(&e))?;
    let _ = sender.blocking_send(Ok(SnapshotResponse {
        header: None,
        remaining_bytes: 0,
        blob: sha,
        version: String::new(),
    }));
    tracing::info!("successfully sent database snapshot to client [{total} bytes]");
    metrics::histogram!("etcd_disk_backend_snapshot_duration_seconds").record(started.elapsed());
    Ok(())
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("concord: {what} is not supported by this version"))
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    /// Every action goes through raft, GET included, as etcd's does (so a GET answered
    /// by any member reflects every alarm raised before it). etcd's maintenance server
    /// answers Alarm without a header (`etcdctl alarm list -w json` prints `{}` against
    /// etcd 3.4.23, and `-w fields` dereferences the missing header). No permission is
    /// needed, as in etcd 3.4; a token given must still be valid.
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        let who = self.core.identify(&request).await?;
        let result = self
            .core
            .propose_as(&who, internal_request::Request::Alarm(request.into_inner()))
            .await?;
        let response = expect_result(result, |r| match r {
            apply_result::Result::Alarm(alarm) => Some(alarm),
            _ => None,
        })?;
        Ok(Response::new(response))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let store = self.core.backend.store();
        let db_size = store.db_size().map_err(EtcdError::from)? as i64;
        let db_size_in_use = store.db_size_in_use() as i64;
        let revision = store.current_revision();
        drop(store);
        let status = &self.core.raft.status;
        use std::sync::atomic::Ordering;
        // etcd lists "no leader" and every raised alarm among the errors.
        let mut errors = Vec::new();
        if status.leader() == 0 {
            errors.push(EtcdError::no_leader().message);
        }
        errors.extend(
            self.core
                .alarms
                .list(AlarmType::None)
                .iter()
                .map(alarm_status_text),
        );
        Ok(Response::new(StatusResponse {
            header: Some(self.core.header(revision)),
            version: ETCD_VERSION.to_string(),
            db_size,
            leader: status.leader(),
            raft_index: status.commit_index.load(Ordering::Acquire),
            raft_term: status.term(),
            raft_applied_index: status.applied_index.load(Ordering::Acquire),
            errors,
            db_size_in_use,
            is_learner: status.is_learner.load(Ordering::Acquire),
            storage_version: String::new(),
            // etcd 3.4.23, whose version this answer gives, has no dbSizeQuota: the
            // gateway's JSON would show a field etcd's does not.
            db_size_quota: 0,
            downgrade_info: None,
        }))
    }

    async fn defragment(
        &self,
        _request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.core
            .require_admin(&_request)
            .await
            .map_err(|e| e.as_auth_package_error())?;
        // A major compaction beside the running store (see `Store::defragment`): no
        // request waits for it, only this call does.
        let generation = self.core.backend.store();
        let before = generation.db_size().unwrap_or(0);
        tokio::task::spawn_blocking(move || {
            generation.defragment()?;
            let after = generation.db_size()?;
            tracing::info!("defragmented the store: {before} -> {after} bytes on disk");
            Ok::<_, concord_mvcc::Error>(())
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(EtcdError::from)?;
        // etcd answers Defragment without a header.
        Ok(Response::new(DefragmentResponse { header: None }))
    }

    async fn hash(&self, _request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.core
            .require_admin(&_request)
            .await
            .map_err(|e| e.as_auth_package_error())?;
        let store = self.core.backend.store();
        let started = std::time::Instant::now();
        let (hash, _, revision) = store.hash_kv(0).map_err(EtcdError::from)?;
        metrics::histogram!("etcd_mvcc_hash_duration_seconds").record(started.elapsed());
        Ok(Response::new(HashResponse {
            header: Some(self.core.header(revision)),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        self.core
            .require_admin(&request)
            .await
            .map_err(|e| e.as_auth_package_error())?;
        let revision = request.into_inner().revision;
        // compact_revision is -1 for a store never compacted, as etcd reports it. The
        // hash reads the whole store: off the async threads.
        let core = self.core.clone();
        let response = tokio::task::spawn_blocking(move || {
            crate::corruption::hash_kv_response(&core, revision)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(response))
    }

    type SnapshotStream =
        Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send + 'static>>;

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.core
            .require_admin(&request)
            .await
            .map_err(|e| e.as_auth_package_error())?;
        // The view is taken now (free, never blocking writes); the file is built and
        // sent off the async threads. The generation is held so that a raft snapshot
        // installed meanwhile cannot delete the files the view reads.
        let generation = self.core.backend.store();
        let view = generation.view();
        let dir = self.core.config.data_dir.join("member");
        let (sender, receiver) = tokio::sync::mpsc::channel(SNAPSHOT_CHUNKS_IN_FLIGHT);
        tokio::task::spawn_blocking(move || {
            let result = send_snapshot(&view, &dir, &sender);
            drop(view);
            drop(generation);
            if let Err(status) = result {
                let _ = sender.blocking_send(Err(status));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        if !self.core.raft.status.is_leader() {
            return Err(EtcdError::not_leader().into());
        }
        if self
            .core
            .membership
            .read()
            .get(target)
            .is_none_or(|m| m.is_learner)
        {
            return Err(EtcdError::bad_leader_transferee().into());
        }
        self.core
            .raft
            .send(Command::TransferLeader { to: target })?;
        let deadline = tokio::time::Instant::now() + self.core.config.election_timeout * 2;
        while tokio::time::Instant::now() < deadline {
            if self.core.raft.status.leader() == target {
                // etcd answers a leader move with an empty response, no header.
                return Ok(Response::new(MoveLeaderResponse::default()));
            }
            tokio::time::sleep(self.core.config.heartbeat_interval).await;
        }
        Err(EtcdError::timeout().into())
    }

    async fn downgrade(
        &self,
        _request: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(not_yet("downgrade"))
    }
}
