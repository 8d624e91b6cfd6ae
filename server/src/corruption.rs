//! Corruption checks, as etcd 3.4.23 has them (`etcdserver/corrupt.go`; its log lines
//! are etcd's capnslog texts): members compare their stores' HashKV, which every
//! member computes identically for the same history.
//!
//! - `--experimental-initial-corrupt-check`: a member that already has data, before it
//!   starts raft or serves anyone, asks every peer for its HashKV at the member's own
//!   revision. A peer at the same compact revision with another hash means the stores
//!   diverged: the member refuses to start ("<id> found data inconsistency with
//!   peers"). Peers that cannot answer, lag behind, or compacted past that revision
//!   are logged and skipped, as etcd does.
//! - `--experimental-corrupt-check-time`: every interval, the leader hashes its store,
//!   asks the peers for theirs at that revision, waits for a linearizable read, and
//!   hashes again. A follower ahead of the leader (revision or compact revision), or
//!   one at the leader's compact revision with another hash, or a leader whose own
//!   hash of one revision changed, raises the CORRUPT alarm through raft (etcd 3.4
//!   raises it with member id 0, whoever diverged). The apply then refuses what
//!   etcd's corrupt applier refuses (see `state::alarms`).
//!
//! Hashes travel over the peer port (the peer service's `HashKv`, etcd's
//! `/members/hashkv`), under the peer listener's TLS and certificate checks. Hashing
//! reads the whole store: it runs on blocking threads, never on the apply or raft
//! threads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use concord_proto::concordpb::internal_request;
use concord_proto::etcdserverpb::alarm_request::AlarmAction;
use concord_proto::etcdserverpb::{AlarmRequest, AlarmType, HashKvResponse};
use rustls::ClientConfig;
use tokio::sync::watch;
use url::Url;

use crate::core::Core;
use crate::error::Error;
use crate::etcd_error::EtcdError;
use crate::state::backend::Backend;
use crate::state::membership::Membership;
use crate::transport::{HashKvSource, fetch_hash_kv};

/// `(hash, compact revision, hash revision)`, as `Store::hash_kv` returns them.
type LocalHash = (u32, i64, i64);

/// This member's HashKV at `revision` (0: the current one), as the Maintenance service
/// and the peer service answer it. Reads the whole store: call it on a blocking thread.
pub fn hash_kv_response(core: &Core, revision: i64) -> Result<HashKvResponse, EtcdError> {
    let store = core.backend.store();
    let started = Instant::now();
    let (hash, compact_revision, hash_revision) = store.hash_kv(revision)?;
    metrics::histogram!("etcd_mvcc_hash_rev_duration_seconds").record(started.elapsed());
    let current = store.current_revision();
    Ok(HashKvResponse {
        header: Some(core.header(current)),
        hash,
        compact_revision,
        hash_revision,
    })
}

/// Answers peers' `HashKv` calls from the member's store.
pub struct PeerHashKv(pub Arc<Core>);

impl HashKvSource for PeerHashKv {
    fn hash_kv(&self, revision: i64) -> Result<HashKvResponse, tonic::Status> {
        hash_kv_response(&self.0, revision).map_err(tonic::Status::from)
    }
}

/// What one peer answered (or the last error met trying its URLs).
struct PeerHash {
    id: u64,
    urls: Vec<Url>,
    answer: Result<HashKvResponse, tonic::Status>,
}

/// Where and as whom to ask the peers.
#[derive(Clone)]
pub struct PeerAsker {
    pub local_id: u64,
    pub cluster_id: u64,
    pub tls: Option<Arc<ClientConfig>>,
    pub timeout: Duration,
}

impl PeerAsker {
    /// Every other member's HashKV at `revision`, trying its peer URLs in turn
    /// (etcd's `getPeerHashKVs`).
    async fn peer_hashes(&self, membership: &Membership, revision: i64) -> Vec<PeerHash> {
        let peers: Vec<(u64, Vec<Url>)> = membership
            .ids()
            .into_iter()
            .filter(|&id| id != self.local_id)
            .map(|id| (id, membership.peer_urls(id)))
            .filter(|(_, urls)| !urls.is_empty())
            .collect();
        let mut answers = Vec::with_capacity(peers.len());
        for (id, urls) in peers {
            let mut last = Err(tonic::Status::unavailable("no peer URL"));
            for url in &urls {
                last = fetch_hash_kv(
                    url,
                    self.tls.clone(),
                    (self.local_id, self.cluster_id),
                    revision,
                    self.timeout,
                )
                .await;
                match &last {
                    Ok(_) => break,
                    Err(status) => tracing::warn!(
                        "{:x} hash-kv error {:?} on peer {:?} with revision {revision}",
                        self.local_id,
                        status.message(),
                        url.as_str()
                    ),
                }
            }
            answers.push(PeerHash {
                id,
                urls,
                answer: last,
            });
        }
        answers
    }
}

async fn local_hash(backend: Arc<Backend>) -> Result<LocalHash, EtcdError> {
    tokio::task::spawn_blocking(move || backend.store().hash_kv(0))
        .await
        .map_err(|e| EtcdError::internal(e.to_string()))?
        .map_err(EtcdError::from)
}

fn urls_text(urls: &[Url]) -> String {
    let quoted: Vec<String> = urls.iter().map(|u| format!("{:?}", u.as_str())).collect();
    format!("[{}]", quoted.join(" "))
}

/// `--experimental-initial-corrupt-check`, before raft starts: `Err` (etcd's "found
/// data inconsistency with peers") if a peer at the same compact revision hashes the
/// member's revision differently.
pub async fn initial_check(
    backend: Arc<Backend>,
    membership: &Membership,
    asker: &PeerAsker,
) -> Result<(), Error> {
    let id = asker.local_id;
    tracing::info!(
        "{id:x} starting initial corruption check with timeout {:?}...",
        asker.timeout
    );
    let (hash, compact, revision) = local_hash(backend)
        .await
        .map_err(|e| Error::Corrupt(format!("{id:x} failed to fetch hash ({})", e.message)))?;
    let future = EtcdError::from(concord_mvcc::Error::FutureRevision).message;
    let compacted = EtcdError::from(concord_mvcc::Error::Compacted).message;
    let mut mismatches = 0;
    for peer in asker.peer_hashes(membership, revision).await {
        match peer.answer {
            Ok(answer) => {
                let peer_id = answer.header.as_ref().map_or(peer.id, |h| h.member_id);
                let peer_revision = answer.header.as_ref().map_or(0, |h| h.revision);
                if answer.hash == hash {
                    continue;
                }
                if answer.compact_revision == compact {
                    tracing::error!(
                        "{id:x}'s hash {hash} != {peer_id:x}'s hash {} (revision {revision}, peer revision {peer_revision}, compact revision {compact})",
                        answer.hash
                    );
                    mismatches += 1;
                } else {
                    tracing::warn!(
                        "{id:x} cannot check hash of peer({peer_id:x}): peer has a different compact revision {} (revision:{revision})",
                        answer.compact_revision
                    );
                }
            }
            Err(status) if status.message() == future => tracing::warn!(
                "{id:x} cannot check the hash of peer({}) at revision {revision}: peer is lagging behind({:?})",
                urls_text(&peer.urls),
                status.message()
            ),
            Err(status) if status.message() == compacted => tracing::warn!(
                "{id:x} cannot check the hash of peer({}) at revision {revision}: local node is lagging behind({:?})",
                urls_text(&peer.urls),
                status.message()
            ),
            // Already logged per URL; etcd goes on without this peer.
            Err(_) => {}
        }
    }
    if mismatches > 0 {
        return Err(Error::DataInconsistency(id));
    }
    tracing::info!("{id:x} succeeded on initial corruption checking: no corruption");
    Ok(())
}

/// `--experimental-corrupt-check-time`: checks every `interval` while this member
/// leads, until `shutdown` (etcd's `monitorKVHash`).
pub async fn run_periodic(
    core: Arc<Core>,
    asker: PeerAsker,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::info!("enabled corruption checking with {interval:?} interval");
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if !core.raft.status.is_leader() {
            continue;
        }
        if let Err(error) = check_once(&core, &asker).await {
            tracing::debug!("check hash kv failed {}", error.message);
        }
    }
}

/// One pass of the leader's check (etcd's `checkHashKV`); raises CORRUPT at most once.
async fn check_once(core: &Arc<Core>, asker: &PeerAsker) -> Result<(), EtcdError> {
    let (hash, compact, revision) = local_hash(core.backend.clone()).await?;
    let membership = core.membership.read().clone();
    let peers = asker.peer_hashes(&membership, revision).await;
    core.linearizable_barrier().await?;
    let (hash_after, compact_after, revision_after) = local_hash(core.backend.clone()).await?;

    let mut diverged: Option<u64> = None;
    if hash_after != hash && revision_after == revision && compact_after == compact {
        tracing::warn!("mismatched hashes {hash} and {hash_after} for revision {revision}");
        diverged.get_or_insert(core.member_id);
    }
    for peer in &peers {
        let Ok(answer) = &peer.answer else { continue };
        let peer_revision = answer.header.as_ref().map_or(0, |h| h.revision);
        // A follower's state never runs ahead of the leader's.
        if peer_revision > revision_after {
            tracing::warn!(
                "revision {peer_revision} from member {:x}, expected at most {revision_after}",
                peer.id
            );
            diverged.get_or_insert(peer.id);
        }
        if answer.compact_revision > compact_after {
            tracing::warn!(
                "compact revision {} from member {:x}, expected at most {compact_after}",
                answer.compact_revision,
                peer.id
            );
            diverged.get_or_insert(peer.id);
        }
        // The same history up to the same revision must hash the same.
        if answer.compact_revision == compact && answer.hash != hash {
            tracing::warn!(
                "hash {} at revision {revision} from member {:x}, expected hash {hash}",
                answer.hash,
                peer.id
            );
            diverged.get_or_insert(peer.id);
        }
    }
    tracing::info!("finished peer corruption check");
    if diverged.is_some() {
        // etcd 3.4.23 raises CORRUPT under member id 0 whichever member diverged.
        let raise = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: 0,
            alarm: AlarmType::Corrupt as i32,
        };
        core.propose(internal_request::Request::Alarm(raise))
            .await?;
    }
    Ok(())
}
