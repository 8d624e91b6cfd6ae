//! The replicated state machine: committed raft entries applied to the MVCC store, one
//! fjall batch per apply round, the applied index written in the same batch. Results of
//! requests this member proposed are kept by request id for their waiters.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use concord_mvcc::{Store, StoreOptions, WriteBatch};
use concord_proto::concordpb::{
    Applied, ApplyResult, InternalRequest, MemberAttrSetRequest, apply_result, internal_request,
};
use concord_proto::etcdserverpb::{CompactionResponse, Member, TxnRequest, request_op};
use concord_proto::mvccpb::Event;
use concord_raft_core::{BoxError, Committed, StateMachine};
use parking_lot::RwLock;
use prost::Message;
use raft::eraftpb::{ConfChangeType, SnapshotMetadata};
use tokio::sync::oneshot;

use crate::etcd_error::EtcdError;
use crate::lessor::LeaseKeeper;
use crate::membership::Membership;

/// The side table of what belongs to this member alone (its member and cluster ids): a
/// snapshot from another member replaces everything else but never this.
pub const MEMBER_LOCAL_TABLE: &str = "local";

/// The MVCC store, swappable as a whole when a raft snapshot replaces it.
#[derive(Debug)]
pub struct Backend {
    current: RwLock<Arc<Store>>,
    dir: PathBuf,
    options: StoreOptions,
}

impl Backend {
    pub fn open(dir: PathBuf, options: StoreOptions) -> Result<Backend, concord_mvcc::Error> {
        let store = Store::open(&dir, options.clone())?;
        Ok(Backend {
            current: RwLock::new(Arc::new(store)),
            dir,
            options,
        })
    }

    /// The store to read from now. Hold it only for the duration of one request.
    pub fn store(&self) -> Arc<Store> {
        self.current.read().clone()
    }

    /// Replaces the store's contents by a snapshot's. Readers wait meanwhile.
    fn restore(&self, bytes: &[u8]) -> Result<(), concord_mvcc::Error> {
        let mut current = self.current.write();
        // Every reader holds its clone for one request only; wait for them to let go, so
        // the old store is closed before its directory is replaced.
        while Arc::strong_count(&current) > 1 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let own_identity = current.meta_scan(MEMBER_LOCAL_TABLE)?;
        let placeholder_dir = self.dir.with_extension("closing");
        let placeholder = Store::open(&placeholder_dir, self.options.clone())?;
        drop(std::mem::replace(&mut *current, Arc::new(placeholder)));
        let restored = Store::restore_keeping(
            &self.dir,
            bytes,
            self.options.clone(),
            &[(MEMBER_LOCAL_TABLE, own_identity.as_slice())],
        )?;
        drop(std::mem::replace(&mut *current, Arc::new(restored)));
        let _ = std::fs::remove_dir_all(&placeholder_dir);
        Ok(())
    }
}

/// What a locally proposed request is waiting for.
pub type Waiter = oneshot::Sender<Result<Completed, EtcdError>>;

/// A request applied: its result and where in the log it landed.
#[derive(Debug)]
pub struct Completed {
    pub result: ApplyResult,
    pub index: u64,
    pub term: u64,
}

/// Receives the events of every committed apply round, in revision order, exactly once:
/// the watch hub's input. Called on the raft driver thread: it must not block.
pub trait EventSink: Send {
    fn publish(&mut self, events: Vec<Event>);
    /// A snapshot replaced the store, whose revision is now `current_revision`: the
    /// revisions it skipped over are never published.
    fn store_replaced(&mut self, current_revision: i64);
    /// Whether events must carry previous values (a watcher asked for them); reading
    /// one costs a store read per overwrite. Asked once per apply round.
    fn wants_prev_kv(&self) -> bool;
}

/// Things the apply loop tells the rest of the server about.
pub trait ApplyObserver: Send {
    /// A member's attributes or the member set changed.
    fn membership_changed(&mut self, membership: &Membership);
    /// This member's own attributes were applied: it is now published.
    fn published(&mut self, member: &Member);
    /// The store was replaced by a snapshot.
    fn restored(&mut self) {}
}

/// The state machine raft-core applies committed entries to.
pub struct ApplyMachine {
    backend: Arc<Backend>,
    member_id: u64,
    /// Founding members, written to the store when the bootstrap snapshot is applied.
    initial_membership: Membership,
    membership: Membership,
    /// Waiters of requests this member proposed, by request id.
    pub waiters: HashMap<u64, Waiter>,
    /// Results of applied requests that have a waiter, until the driver hands them over.
    results: HashMap<u64, ApplyResult>,
    observer: Box<dyn ApplyObserver>,
    event_sink: Option<Box<dyn EventSink>>,
    /// Events of the round being applied, published after its batch commits.
    pending_events: Vec<Event>,
    /// Leases; without them every put naming a lease fails (lease not found).
    leases: Option<Arc<LeaseKeeper>>,
}

impl ApplyMachine {
    pub fn new(
        backend: Arc<Backend>,
        member_id: u64,
        initial_membership: Membership,
        observer: Box<dyn ApplyObserver>,
    ) -> Result<ApplyMachine, concord_mvcc::Error> {
        let membership = Membership::load(&backend.store())?;
        Ok(ApplyMachine {
            backend,
            member_id,
            initial_membership,
            membership,
            waiters: HashMap::new(),
            results: HashMap::new(),
            observer,
            event_sink: None,
            pending_events: Vec::new(),
            leases: None,
        })
    }

    /// Where leases live; rebuilds them from the store.
    pub fn set_leases(&mut self, leases: Arc<LeaseKeeper>) -> Result<(), concord_mvcc::Error> {
        leases.recover(&self.backend.store())?;
        self.leases = Some(leases);
        Ok(())
    }

    fn check_lease(&self, id: i64) -> Result<(), EtcdError> {
        match &self.leases {
            Some(leases) => leases.check_lease(id),
            None if id != 0 => Err(EtcdError::lease_not_found()),
            None => Ok(()),
        }
    }

    /// Keeps the keys attached to leases in step with a write's events.
    fn observe_leased_keys(&self, events: &[Event]) {
        if let Some(leases) = &self.leases {
            leases.observe(events);
        }
    }

    fn lease_keeper(&self) -> Result<&Arc<LeaseKeeper>, EtcdError> {
        self.leases.as_ref().ok_or_else(EtcdError::not_capable)
    }

    /// Where the events of committed rounds go (the watch hub).
    pub fn set_event_sink(&mut self, sink: Box<dyn EventSink>) {
        self.event_sink = Some(sink);
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The result of an applied request with a waiter.
    pub fn take_result(&mut self, id: u64) -> Option<ApplyResult> {
        self.results.remove(&id)
    }

    fn apply_request(
        &mut self,
        batch: &mut WriteBatch<'_>,
        request: InternalRequest,
    ) -> Result<apply_result::Result, EtcdError> {
        use internal_request::Request as R;
        let Some(request) = request.request else {
            return Err(EtcdError::internal("empty internal request"));
        };
        match request {
            R::Put(put) => {
                self.check_lease(put.lease)?;
                let (response, events) = batch.put(&put)?;
                self.observe_leased_keys(&events);
                self.pending_events.extend(events);
                Ok(apply_result::Result::Put(response))
            }
            R::DeleteRange(delete) => {
                let (response, events) = batch.delete_range(&delete)?;
                self.observe_leased_keys(&events);
                self.pending_events.extend(events);
                Ok(apply_result::Result::DeleteRange(response))
            }
            R::Txn(txn) => {
                check_txn_leases(&txn, &|id| self.check_lease(id))?;
                let (response, events) = batch.txn(&txn)?;
                self.observe_leased_keys(&events);
                self.pending_events.extend(events);
                Ok(apply_result::Result::Txn(response))
            }
            R::Compaction(compaction) => {
                batch.compact(compaction.revision)?;
                let header = concord_proto::etcdserverpb::ResponseHeader {
                    revision: batch.revision(),
                    ..Default::default()
                };
                Ok(apply_result::Result::Compaction(CompactionResponse {
                    header: Some(header),
                }))
            }
            R::MemberAttrSet(attrs) => {
                self.apply_member_attributes(batch, attrs);
                Ok(apply_result::Result::Applied(Applied {}))
            }
            R::ClusterVersionSet(version) => {
                batch.meta_put("cluster", b"version", version.version.as_bytes());
                Ok(apply_result::Result::Applied(Applied {}))
            }
            R::LeaseGrant(grant) => {
                let response = self.lease_keeper()?.apply_grant(batch, &grant)?;
                Ok(apply_result::Result::LeaseGrant(response))
            }
            R::LeaseRevoke(revoke) => {
                let (response, events) = self.lease_keeper()?.apply_revoke(batch, &revoke)?;
                self.pending_events.extend(events);
                Ok(apply_result::Result::LeaseRevoke(response))
            }
            R::LeaseCheckpoint(checkpoint) => {
                self.lease_keeper()?.apply_checkpoint(batch, &checkpoint);
                Ok(apply_result::Result::Applied(Applied {}))
            }
            _ => Err(EtcdError::not_capable()),
        }
    }

    fn apply_member_attributes(&mut self, batch: &mut WriteBatch<'_>, attrs: MemberAttrSetRequest) {
        let Some(existing) = self.membership.get(attrs.member_id) else {
            // A member removed before its attributes were applied: nothing to update.
            return;
        };
        let mut member = existing.clone();
        member.name = attrs.name;
        member.client_ur_ls = attrs.client_urls;
        self.membership.upsert(member.clone(), batch);
        self.observer.membership_changed(&self.membership);
        if member.id == self.member_id {
            self.observer.published(&member);
        }
    }

    fn apply_conf_change(
        &mut self,
        batch: &mut WriteBatch<'_>,
        change: &raft::eraftpb::ConfChangeV2,
        applied: bool,
    ) {
        if !applied {
            return;
        }
        // The member's description travels in the change's context as an etcd Member.
        let described = Member::decode(change.get_context()).ok();
        for single in change.changes.iter() {
            let id = single.node_id;
            match single.change_type {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    let is_learner = single.change_type == ConfChangeType::AddLearnerNode;
                    let mut member = self.membership.get(id).cloned().unwrap_or_else(|| Member {
                        id,
                        ..Default::default()
                    });
                    if let Some(described) = described.as_ref().filter(|m| m.id == id) {
                        member.peer_ur_ls = described.peer_ur_ls.clone();
                    }
                    member.is_learner = is_learner;
                    self.membership.upsert(member, batch);
                }
                ConfChangeType::RemoveNode => {
                    self.membership.remove(id, batch);
                }
            }
        }
        self.observer.membership_changed(&self.membership);
    }
}

/// Every put of a txn (both branches, nested txns included) must name an existing
/// lease or none. (etcd checks only the branch taken; a txn naming an unknown lease in
/// the other branch fails here.)
fn check_txn_leases(
    txn: &TxnRequest,
    check: &dyn Fn(i64) -> Result<(), EtcdError>,
) -> Result<(), EtcdError> {
    for op in txn.success.iter().chain(&txn.failure) {
        match &op.request {
            Some(request_op::Request::RequestPut(put)) => check(put.lease)?,
            Some(request_op::Request::RequestTxn(nested)) => check_txn_leases(nested, check)?,
            _ => {}
        }
    }
    Ok(())
}

fn boxed(error: impl std::error::Error + Send + Sync + 'static) -> BoxError {
    Box::new(error)
}

impl StateMachine for ApplyMachine {
    fn apply(&mut self, entries: &[Committed]) -> Result<(), BoxError> {
        let backend = self.backend.clone();
        let store = backend.store();
        let mut batch = store.write_batch();
        // Events feed the watchers (previous values only if one wants them) and the
        // lease keeper, which needs each event's key-value only.
        batch.set_event_prev_kv(self.event_sink.as_ref().is_some_and(|s| s.wants_prev_kv()));
        let mut last_index = None;
        let mut ends_with_conf_change = false;
        for entry in entries {
            if entry.index() <= store.applied_index() {
                continue;
            }
            match entry {
                Committed::Normal {
                    id, origin, data, ..
                } => {
                    // Only this code writes entries, so one that does not decode means
                    // the log is corrupt: stop the member rather than diverge.
                    let request = InternalRequest::decode(data.as_slice()).map_err(boxed)?;
                    let result = match self.apply_request(&mut batch, request) {
                        Ok(result) => result,
                        Err(error) => apply_result::Result::Error(error.to_apply_error()),
                    };
                    // Request ids are unique per member: another member's entry may
                    // carry the id of one of ours.
                    if *origin == self.member_id && self.waiters.contains_key(id) {
                        self.results.insert(
                            *id,
                            ApplyResult {
                                result: Some(result),
                            },
                        );
                    }
                }
                Committed::ConfChange {
                    change, conf_state, ..
                } => {
                    self.apply_conf_change(&mut batch, change, conf_state.is_some());
                    ends_with_conf_change = true;
                }
                Committed::Empty { term, .. } => {
                    if let Some(leases) = &self.leases {
                        leases.empty_entry_applied(*term);
                    }
                }
            }
            last_index = Some(entry.index());
        }
        if let Some(index) = last_index {
            batch.set_applied_index(index);
            batch.commit().map_err(boxed)?;
        }
        if ends_with_conf_change {
            // raft-core ends a batch at every conf change, and the configuration it put
            // in the log store must never be ahead of a state machine that would replay
            // older changes onto it after a crash: make this batch durable now.
            store.persist().map_err(boxed)?;
        }
        let events = std::mem::take(&mut self.pending_events);
        if !events.is_empty()
            && let Some(sink) = self.event_sink.as_mut()
        {
            sink.publish(events);
        }
        Ok(())
    }

    fn applied_index(&self) -> u64 {
        self.backend.store().applied_index()
    }

    fn snapshot(&mut self) -> Result<Vec<u8>, BoxError> {
        self.backend.store().snapshot_bytes().map_err(boxed)
    }

    /// The store is its own snapshot: make it durable rather than copy it into the raft
    /// log's snapshot file every `--snapshot-count` entries (and hold that copy in
    /// memory). A follower that needs a snapshot gets the store serialised when it is
    /// sent.
    fn checkpoint(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        self.backend.store().persist().map_err(boxed)?;
        Ok(None)
    }

    fn restore(&mut self, meta: &SnapshotMetadata, data: &[u8]) -> Result<(), BoxError> {
        if data.is_empty() {
            // The bootstrap snapshot of a new cluster: the founding members are the
            // whole state.
            let store = self.backend.store();
            let mut batch = store.write_batch();
            self.initial_membership.save_all(&mut batch);
            batch.set_applied_index(meta.index);
            batch.commit().map_err(boxed)?;
            self.membership = self.initial_membership.clone();
        } else {
            self.backend.restore(data).map_err(boxed)?;
            self.membership = Membership::load(&self.backend.store()).map_err(boxed)?;
            if let Some(leases) = &self.leases {
                leases.recover(&self.backend.store()).map_err(boxed)?;
            }
            if let Some(sink) = &mut self.event_sink {
                sink.store_replaced(self.backend.store().current_revision());
            }
            self.observer.restored();
        }
        self.observer.membership_changed(&self.membership);
        Ok(())
    }
}
