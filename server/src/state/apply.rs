//! [`Machine`]: committed raft entries applied to the MVCC store, one fjall batch per
//! apply round with the applied index written in the same batch, and each entry's
//! result returned to raft-core, which hands it to the proposal's outcome (so whoever
//! waits for a request waits in one place, the driver).

use std::sync::Arc;

use concord_mvcc::WriteBatch;
use concord_proto::concordpb::{
    Applied, ApplyResult, InternalRequest, MemberAttrSetRequest, apply_result, internal_request,
};
use concord_proto::etcdserverpb::{CompactionResponse, Member, TxnRequest, request_op};
use concord_proto::mvccpb::Event;
use concord_raft_core::{BoxError, Committed, StateMachine};
use prost::Message;
use raft::eraftpb::{ConfChangeType, SnapshotMetadata};

use super::alarms::Alarms;
use super::auth::{Access, AuthInfo, AuthStore, is_auth_request};
use super::backend::Backend;
use super::leases::LeaseKeeper;
use super::membership::Membership;
use super::snapshots::{SnapshotFiles, incoming_file};
use super::v2::{SharedV2Store, V2Store};
use crate::etcd_error::EtcdError;

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
pub struct Machine {
    backend: Arc<Backend>,
    member_id: u64,
    /// Founding members, written to the store when the bootstrap snapshot is applied.
    initial_membership: Membership,
    membership: Membership,
    observer: Box<dyn ApplyObserver>,
    event_sink: Option<Box<dyn EventSink>>,
    /// Events of the round being applied, published after its batch commits.
    pending_events: Vec<Event>,
    leases: Arc<LeaseKeeper>,
    auth: Arc<AuthStore>,
    alarms: Arc<Alarms>,
    snapshots: Arc<SnapshotFiles>,
    v2: SharedV2Store,
}

/// The result of an entry that answers nothing of its own.
fn applied() -> ApplyResult {
    ApplyResult {
        result: Some(apply_result::Result::Applied(Applied {})),
    }
}

impl Machine {
    /// The state machine over `backend`, with the leases, the auth store and the
    /// alarms rebuilt from it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        backend: Arc<Backend>,
        member_id: u64,
        initial_membership: Membership,
        leases: Arc<LeaseKeeper>,
        auth: Arc<AuthStore>,
        alarms: Arc<Alarms>,
        snapshots: Arc<SnapshotFiles>,
        observer: Box<dyn ApplyObserver>,
    ) -> Result<Machine, concord_mvcc::Error> {
        let membership = Membership::load(&backend.store())?;
        leases.recover(&backend.store())?;
        auth.recover(&backend.store())?;
        alarms.recover(&backend.store())?;
        let v2 = Arc::new(parking_lot::Mutex::new(V2Store::load(&backend.store())?));
        Ok(Machine {
            backend,
            member_id,
            initial_membership,
            membership,
            observer,
            event_sink: None,
            pending_events: Vec::new(),
            leases,
            auth,
            alarms,
            snapshots,
            v2,
        })
    }

    /// The v2 store, for the v2 HTTP face.
    pub fn v2_store(&self) -> SharedV2Store {
        self.v2.clone()
    }

    fn check_lease(&self, id: i64) -> Result<(), EtcdError> {
        self.leases.check_lease(id)
    }

    /// etcd's `checkLeasePuts`: whoever writes through a lease (attaches a key to it or
    /// revokes it) must be allowed to write every key it carries.
    fn check_lease_keys(&self, info: &AuthInfo, id: i64) -> Result<(), EtcdError> {
        if id == 0 || !self.auth.is_enabled() {
            return Ok(());
        }
        match self.leases.time_to_live(id, true) {
            Some(status) => self.auth.check_keys_writable(info, &status.keys),
            None => Ok(()),
        }
    }

    /// Keeps the keys attached to leases in step with a write's events.
    fn observe_leased_keys(&self, events: &[Event]) {
        self.leases.observe(events);
    }

    /// Where the events of committed rounds go (the watch hub).
    pub fn set_event_sink(&mut self, sink: Box<dyn EventSink>) {
        self.event_sink = Some(sink);
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    fn apply_request(
        &mut self,
        batch: &mut WriteBatch<'_>,
        request: InternalRequest,
    ) -> Result<apply_result::Result, EtcdError> {
        let header = request.header;
        let Some(request) = request.request else {
            return Err(EtcdError::internal("empty internal request"));
        };
        // A client's request carries who made it; the member's own requests (lease
        // expiry, attributes) carry no header and need no permission, as etcd's
        // internally issued root token.
        let info = header.map(|h| AuthInfo {
            username: h.username,
            revision: h.auth_revision,
            follows_current_revision: false,
        });
        if is_auth_request(&request) {
            return self
                .auth
                .apply(batch, info.as_ref(), request, std::time::Instant::now());
        }
        self.alarms.refuse(&request)?;
        // etcd's quotaApplierV3: a put, txn or grant that takes this member's store
        // past its quota is applied (as on every member) but answered NOSPACE.
        let cost = Alarms::cost(&request);
        let fits = cost == 0
            || self
                .alarms
                .quota()
                .fits(self.backend.store().db_size().unwrap_or(0), cost);
        let result = self.apply_kv_request(batch, info, request)?;
        if !fits {
            return Err(EtcdError::no_space());
        }
        Ok(result)
    }

    fn apply_kv_request(
        &mut self,
        batch: &mut WriteBatch<'_>,
        info: Option<AuthInfo>,
        request: internal_request::Request,
    ) -> Result<apply_result::Result, EtcdError> {
        use internal_request::Request as R;
        match request {
            R::Put(put) => {
                if let Some(info) = &info {
                    self.auth.check_op(info, &put.key, b"", Access::Write)?;
                    self.check_lease_keys(info, put.lease)?;
                    if put.prev_kv {
                        self.auth.check_op(info, &put.key, b"", Access::Read)?;
                    }
                }
                self.check_lease(put.lease)?;
                let (response, events) = batch.put(&put)?;
                self.observe_leased_keys(&events);
                self.pending_events.extend(events);
                Ok(apply_result::Result::Put(response))
            }
            R::DeleteRange(delete) => {
                if let Some(info) = &info {
                    self.auth.check_delete(info, &delete)?;
                }
                let (response, events) = batch.delete_range(&delete)?;
                self.observe_leased_keys(&events);
                self.pending_events.extend(events);
                Ok(apply_result::Result::DeleteRange(response))
            }
            R::Txn(txn) => {
                if let Some(info) = &info {
                    self.auth.check_txn(info, &txn)?;
                }
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
            R::MemberUpdate(update) => {
                self.membership
                    .check_update(update.id, &update.peer_ur_ls)?;
                if let Some(existing) = self.membership.get(update.id) {
                    let mut member = existing.clone();
                    member.peer_ur_ls = update.peer_ur_ls;
                    self.membership.upsert(member, batch);
                    self.observer.membership_changed(&self.membership);
                    self.v2_internal(batch, |v2| v2.member_raft_attributes_updated(update.id));
                }
                Ok(apply_result::Result::Applied(Applied {}))
            }
            R::ClusterVersionSet(version) => {
                batch.meta_put("cluster", b"version", version.version.as_bytes());
                self.v2_internal(batch, V2Store::cluster_version_set);
                Ok(apply_result::Result::Applied(Applied {}))
            }
            R::LeaseGrant(grant) => {
                let response = self.leases.apply_grant(batch, &grant)?;
                Ok(apply_result::Result::LeaseGrant(response))
            }
            R::LeaseRevoke(revoke) => {
                if let Some(info) = &info {
                    self.check_lease_keys(info, revoke.id)?;
                }
                let (response, events) = self.leases.apply_revoke(batch, &revoke)?;
                self.pending_events.extend(events);
                Ok(apply_result::Result::LeaseRevoke(response))
            }
            R::LeaseCheckpoint(checkpoint) => {
                self.leases.apply_checkpoint(batch, &checkpoint);
                Ok(apply_result::Result::Applied(Applied {}))
            }
            R::V2(request) => Ok(apply_result::Result::V2(super::v2::apply_committed(
                &self.v2, batch, &request,
            ))),
            R::Alarm(alarm) => Ok(apply_result::Result::Alarm(
                self.alarms.apply(batch, &alarm),
            )),
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
        self.v2_internal(batch, |v2| v2.member_attributes_set(member.id));
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
                    let known = self.membership.get(id).cloned();
                    if known.is_some() {
                        self.v2_internal(batch, |v2| v2.member_raft_attributes_updated(id));
                    } else {
                        self.v2_internal(batch, |v2| v2.member_added(id));
                    }
                    let mut member = known.unwrap_or_else(|| Member {
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
                    if self.membership.remove(id, batch).is_some() {
                        self.v2_internal(batch, |v2| v2.member_removed(id));
                    }
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

impl StateMachine for Machine {
    /// Every entry's result (`Applied` for entries without one of their own).
    type Output = ApplyResult;

    fn apply(&mut self, entries: &[Committed]) -> Result<Vec<ApplyResult>, BoxError> {
        let backend = self.backend.clone();
        let store = backend.store();
        let mut batch = store.write_batch();
        // Events feed the watchers (previous values only if one wants them) and the
        // lease keeper, which needs each event's key-value only.
        batch.set_event_prev_kv(self.event_sink.as_ref().is_some_and(|s| s.wants_prev_kv()));
        let mut results = Vec::with_capacity(entries.len());
        let mut last_index = None;
        let mut ends_with_conf_change = false;
        for entry in entries {
            if entry.index() <= store.applied_index() {
                // Applied before a restart: nobody here waits for it any more.
                results.push(applied());
                continue;
            }
            let result = match entry {
                Committed::Normal { data, .. } => {
                    // Only this code writes entries, so one that does not decode means
                    // the log is corrupt: stop the member rather than diverge.
                    let request = InternalRequest::decode(data.as_slice()).map_err(boxed)?;
                    let started = std::time::Instant::now();
                    let result = match self.apply_request(&mut batch, request) {
                        Ok(result) => result,
                        Err(error) => apply_result::Result::Error(error.to_apply_error()),
                    };
                    // etcd's slow apply: one request taking over 100 ms.
                    if started.elapsed() > std::time::Duration::from_millis(100) {
                        metrics::counter!("etcd_server_slow_apply_total").increment(1);
                    }
                    ApplyResult {
                        result: Some(result),
                    }
                }
                Committed::ConfChange {
                    change, conf_state, ..
                } => {
                    self.apply_conf_change(&mut batch, change, conf_state.is_some());
                    ends_with_conf_change = true;
                    applied()
                }
                Committed::Empty { term, .. } => {
                    self.leases.empty_entry_applied(*term);
                    applied()
                }
            };
            results.push(result);
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
        Ok(results)
    }

    fn applied_index(&self) -> u64 {
        self.backend.store().applied_index()
    }

    /// A consistent view of the store at the applied index, handed to the transport to
    /// stream: the message carries only its descriptor (see [`super::snapshots`]).
    fn snapshot(&mut self) -> Result<Vec<u8>, BoxError> {
        Ok(self
            .snapshots
            .hand_over(self.backend.store().snapshot_reader()))
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
            // etcd applies one conf change per founding member, each a v2 write.
            for id in self.initial_membership.ids() {
                self.v2_internal(&mut batch, |v2| v2.member_added(id));
            }
            batch.set_applied_index(meta.index);
            batch.commit().map_err(boxed)?;
            self.membership = self.initial_membership.clone();
        } else if let Some(file) = incoming_file(data) {
            self.backend.restore_from_file(file).map_err(boxed)?;
            // Installed (or refused): the copy has done its work either way.
            let _ = std::fs::remove_file(file);
            self.after_restore()?;
        } else {
            self.backend.restore(data).map_err(boxed)?;
            self.after_restore()?;
        }
        self.observer.membership_changed(&self.membership);
        Ok(())
    }
}

impl Machine {
    /// A membership write that etcd also makes in its v2 store (see
    /// `state::v2::internal`), written into the round's batch.
    fn v2_internal(&self, batch: &mut WriteBatch<'_>, write: impl FnOnce(&mut V2Store)) {
        let mut v2 = self.v2.lock();
        write(&mut v2);
        v2.write_changes(batch);
    }

    /// Everything kept beside the store follows a store that a snapshot replaced.
    fn after_restore(&mut self) -> Result<(), BoxError> {
        let store = self.backend.store();
        self.membership = Membership::load(&store).map_err(boxed)?;
        self.leases.recover(&store).map_err(boxed)?;
        self.auth.recover(&store).map_err(boxed)?;
        self.alarms.recover(&store).map_err(boxed)?;
        let v2 = V2Store::load(&store).map_err(boxed)?;
        self.v2.lock().replace_with(v2);
        if let Some(sink) = &mut self.event_sink {
            sink.store_replaced(store.current_revision());
        }
        self.observer.restored();
        Ok(())
    }
}
