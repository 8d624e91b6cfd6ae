//! The server's side of leases: the [`concord_lease::Lessor`] shared between the apply
//! loop (which applies grants, revocations, checkpoints and key attachments on every
//! member), the Lease service (renewals and TTL queries on the leader) and the leader's
//! expiry task (`crate::lease_expiry`, which revokes expired leases and checkpoints
//! remaining TTLs through raft).
//!
//! Leases are stored in the store's `lease` side table, in the same batch as the keys,
//! so they survive restarts and travel in raft snapshots; the attached-keys index is
//! rebuilt from the keys' `lease` fields when the store is opened or restored.
//!
//! Leadership: the lessor becomes primary (expiry times start, every lease with its
//! full or checkpointed TTL plus an election timeout) once this member leads *and* has
//! applied the empty entry of its term, i.e. every entry of earlier terms; it is
//! demoted as soon as leadership is lost, so followers never expire leases.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use concord_lease::{
    DEFAULT_CHECKPOINT_INTERVAL, LeaseId, LeaseRecord, LeaseStatus, Lessor, LessorConfig, Renewed,
};
use concord_mvcc::{Store, WriteBatch};
use concord_proto::etcdserverpb::{
    LeaseCheckpointRequest, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, RangeRequest, ResponseHeader,
};
use concord_proto::mvccpb::Event;
use concord_proto::mvccpb::event::EventType;
use parking_lot::Mutex;

use crate::config::Config;
use crate::etcd_error::EtcdError;

/// The store's side table holding one [`LeaseRecord`] per lease.
pub const LEASE_KEYSPACE: &str = "lease";

/// Whether this member may act as the primary lessor.
#[derive(Debug, Default)]
struct Leadership {
    /// The term this member leads, if it does.
    leader_term: Option<u64>,
    /// The term of the last empty entry applied (a leader's first entry of its term).
    applied_empty_term: u64,
}

/// Leases as the whole server shares them.
pub struct LeaseKeeper {
    lessor: Mutex<Lessor>,
    leadership: Mutex<Leadership>,
    /// What a promotion adds to every lease: one election timeout, as etcd.
    promotion_extension: Duration,
    checkpoints: bool,
    ids: AtomicU64,
}

impl std::fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeeper").finish_non_exhaustive()
    }
}

impl LeaseKeeper {
    pub fn new(config: &Config, member_id: u64) -> LeaseKeeper {
        let checkpoint_interval = config
            .lease_checkpoint
            .then_some(DEFAULT_CHECKPOINT_INTERVAL);
        let lessor = Lessor::new(LessorConfig {
            checkpoint_interval,
            ..LessorConfig::with_min_ttl(config.min_lease_ttl_seconds())
        });
        LeaseKeeper {
            lessor: Mutex::new(lessor),
            leadership: Mutex::new(Leadership::default()),
            promotion_extension: config.election_timeout,
            checkpoints: config.lease_checkpoint,
            ids: AtomicU64::new(id_seed(member_id)),
        }
    }

    /// Rebuilds the leases and their attached keys from the store (at open and after a
    /// raft snapshot replaced the store).
    pub fn recover(&self, store: &Store) -> Result<(), concord_mvcc::Error> {
        let mut records = Vec::new();
        for (key, value) in store.meta_scan(LEASE_KEYSPACE)? {
            match LeaseRecord::decode(&key, &value) {
                Ok(record) => records.push(record),
                Err(error) => {
                    return Err(concord_mvcc::Error::Corrupt(format!(
                        "lease table: {error}"
                    )));
                }
            }
        }
        let attached = if records.is_empty() {
            Vec::new()
        } else {
            let every_key = RangeRequest {
                key: vec![0],
                range_end: vec![0],
                keys_only: true,
                ..Default::default()
            };
            store
                .range(&every_key)?
                .kvs
                .into_iter()
                .filter(|kv| kv.lease != 0)
                .map(|kv| (kv.key, kv.lease))
                .collect()
        };
        let count = records.len();
        self.lessor.lock().recover(records, attached);
        if count > 0 {
            tracing::info!("recovered {count} leases");
        }
        Ok(())
    }

    /// A fresh lease id for a grant without one, chosen before proposing so that every
    /// member applies the same id: etcd's scheme (member id prefix, time, counter).
    pub fn next_id(&self) -> i64 {
        loop {
            let id = (self.ids.fetch_add(1, Ordering::Relaxed) & (i64::MAX as u64)) as i64;
            if id != 0 {
                return id;
            }
        }
    }

    pub fn contains(&self, id: LeaseId) -> bool {
        self.lessor.lock().contains(id)
    }

    /// Every lease id, soonest expiry first (etcd's `LeaseLeases` order).
    pub fn ids_by_expiry(&self) -> Vec<LeaseId> {
        self.lessor.lock().ids_by_expiry()
    }

    pub fn is_primary(&self) -> bool {
        self.lessor.lock().is_primary()
    }

    // ---- applying committed entries (the raft driver thread) ----

    pub fn apply_grant(
        &self,
        batch: &mut WriteBatch<'_>,
        request: &LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, EtcdError> {
        let record = self
            .lessor
            .lock()
            .grant(request.id, request.ttl, Instant::now())
            .map_err(lease_error)?;
        batch.meta_put(
            LEASE_KEYSPACE,
            &LeaseRecord::key(record.id),
            &record.encode_value(),
        );
        Ok(LeaseGrantResponse {
            header: Some(revision_header(batch.revision())),
            id: record.id,
            ttl: record.ttl,
            error: String::new(),
        })
    }

    /// Forgets the lease and deletes its keys in one revision; returns their events.
    pub fn apply_revoke(
        &self,
        batch: &mut WriteBatch<'_>,
        request: &LeaseRevokeRequest,
    ) -> Result<(LeaseRevokeResponse, Vec<Event>), EtcdError> {
        let keys = self.lessor.lock().revoke(request.id).map_err(lease_error)?;
        let events = batch.delete_keys(&keys)?;
        batch.meta_delete(LEASE_KEYSPACE, &LeaseRecord::key(request.id));
        Ok((
            LeaseRevokeResponse {
                header: Some(revision_header(batch.revision())),
            },
            events,
        ))
    }

    pub fn apply_checkpoint(&self, batch: &mut WriteBatch<'_>, request: &LeaseCheckpointRequest) {
        let now = Instant::now();
        let mut lessor = self.lessor.lock();
        for checkpoint in &request.checkpoints {
            if let Some(record) = lessor.checkpoint(checkpoint.id, checkpoint.remaining_ttl, now) {
                batch.meta_put(
                    LEASE_KEYSPACE,
                    &LeaseRecord::key(record.id),
                    &record.encode_value(),
                );
            }
        }
    }

    /// Attaches and detaches keys as a write's events say: a put attaches its key to
    /// its lease (or to none), a delete detaches it.
    pub fn observe(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let mut lessor = self.lessor.lock();
        for event in events {
            let Some(kv) = event.kv.as_ref() else {
                continue;
            };
            if event.r#type == EventType::Delete as i32 {
                lessor.detach(&kv.key);
            } else {
                lessor.attach(kv.key.clone(), kv.lease);
            }
        }
    }

    /// Whether a put may name this lease.
    pub fn check_lease(&self, id: LeaseId) -> Result<(), EtcdError> {
        if id != 0 && !self.contains(id) {
            return Err(EtcdError::lease_not_found());
        }
        Ok(())
    }

    // ---- leadership (the raft driver thread) ----

    /// Raft's role changed.
    pub fn role_changed(&self, is_leader: bool, term: u64) {
        let mut leadership = self.leadership.lock();
        if is_leader {
            leadership.leader_term = Some(term);
            self.maybe_promote(&leadership);
        } else {
            leadership.leader_term = None;
            self.lessor.lock().demote();
        }
    }

    /// An empty entry (a leader's first of its term) was applied.
    pub fn empty_entry_applied(&self, term: u64) {
        let mut leadership = self.leadership.lock();
        leadership.applied_empty_term = leadership.applied_empty_term.max(term);
        self.maybe_promote(&leadership);
    }

    fn maybe_promote(&self, leadership: &Leadership) {
        if leadership.leader_term != Some(leadership.applied_empty_term) {
            return;
        }
        let mut lessor = self.lessor.lock();
        if !lessor.is_primary() {
            lessor.promote(Instant::now(), self.promotion_extension);
            tracing::info!("lessor promoted with {} leases", lessor.len());
        }
    }

    // ---- the leader's side ----

    /// Renews a lease (primary only).
    pub fn renew(&self, id: LeaseId) -> Result<Renewed, concord_lease::Error> {
        self.lessor.lock().renew(id, Instant::now())
    }

    /// A lease's TTLs (meaningful on the primary; elsewhere the remaining TTL is the
    /// granted or checkpointed one).
    pub fn time_to_live(&self, id: LeaseId, with_keys: bool) -> Option<LeaseStatus> {
        self.lessor
            .lock()
            .time_to_live(id, Instant::now(), with_keys)
    }

    pub fn expired(&self, limit: usize) -> Vec<LeaseId> {
        self.lessor.lock().expired(Instant::now(), limit)
    }

    pub fn due_checkpoints(&self, limit: usize) -> Vec<(LeaseId, i64)> {
        if !self.checkpoints {
            return Vec::new();
        }
        self.lessor.lock().due_checkpoints(Instant::now(), limit)
    }
}

/// Request ids in etcd's layout: the member id's low 16 bits, then the time in
/// milliseconds (40 bits), then a counter (8 bits) that carries into the time.
fn id_seed(member_id: u64) -> u64 {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    ((member_id & 0xffff) << 48) | ((millis & ((1 << 40) - 1)) << 8)
}

fn revision_header(revision: i64) -> ResponseHeader {
    ResponseHeader {
        revision,
        ..Default::default()
    }
}

/// etcd's error for a lessor failure.
pub fn lease_error(error: concord_lease::Error) -> EtcdError {
    use concord_lease::Error as E;
    match error {
        E::LeaseNotFound => EtcdError::lease_not_found(),
        E::LeaseExists => EtcdError::lease_exist(),
        E::TtlTooLarge => EtcdError::lease_ttl_too_large(),
        E::NotPrimary => EtcdError::not_leader(),
        other => EtcdError::internal(other.to_string()),
    }
}
