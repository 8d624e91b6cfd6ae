//! Alarms and the backend quota (etcd's `v3alarm.AlarmStore`, `backendQuota` and its
//! capped and corrupt appliers, read off `etcdserver/apply.go`, `quota.go` and
//! `corrupt.go` of etcd 3.4.23).
//!
//! - An alarm is raised by a member (NOSPACE when a write would take its store past
//!   `--quota-backend-bytes`; CORRUPT when the members' stores diverged) through raft,
//!   so every member applies the same set. It is kept in the store's `alarm` side
//!   table, keyed by the encoded `AlarmMember` exactly as etcd's `alarm` bucket is, in
//!   the same batch as the apply round: restarts, raft snapshots and etcd-format
//!   snapshot files keep it.
//! - While NOSPACE is raised, the apply refuses puts, txns that put and lease grants
//!   ("etcdserver: mvcc: database space exceeded"); reads, deletes and compactions go on.
//!   While CORRUPT is raised it refuses every write, compaction and lease change
//!   ("etcdserver: corrupt cluster"); reads are served by the faces and go on.
//! - The quota itself is checked twice, as etcd does: by the faces before a request is
//!   proposed ([`Quota::fits`], raising NOSPACE when it does not), and after the apply of
//!   a put, txn or grant, which answers NOSPACE for a write that took the store past it
//!   (the write stays applied: every member applied it).
//!
//! ```
//! use concord_server::state::alarms::{Alarms, Quota};
//! use concord_proto::etcdserverpb::PutRequest;
//! let alarms = Alarms::new(Quota::new(Some(64 * 1024)));
//! let put = PutRequest { key: b"k".to_vec(), value: vec![0; 1024], ..Default::default() };
//! assert_eq!(Quota::put_cost(&put), 256 + 1 + 1024);
//! assert!(alarms.quota().fits(10_000, Quota::put_cost(&put)));
//! assert!(!alarms.quota().fits(64 * 1024, Quota::put_cost(&put)));
//! assert!(alarms.list(concord_proto::etcdserverpb::AlarmType::None).is_empty());
//! ```

use std::collections::BTreeSet;

use concord_mvcc::{Store, WriteBatch};
use concord_proto::concordpb::internal_request::Request;
use concord_proto::etcdserverpb::alarm_request::AlarmAction;
use concord_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, LeaseGrantRequest, PutRequest, RequestOp,
    TxnRequest, request_op,
};
use parking_lot::RwLock;
use prost::Message;

use crate::etcd_error::EtcdError;

/// The store's side table of raised alarms: the encoded `AlarmMember` → nothing, as
/// etcd's `alarm` bucket.
pub const ALARM_TABLE: &str = "alarm";

/// etcd's estimate of what a key's metadata costs in the backend.
const KV_OVERHEAD: u64 = 256;
/// etcd's estimate of what a lease costs in the backend.
const LEASE_OVERHEAD: u64 = 64;

/// `--quota-backend-bytes`: how large the store may grow before writes are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// `None`: no quota (etcd's negative `--quota-backend-bytes`).
    limit: Option<u64>,
}

impl Quota {
    pub fn new(limit: Option<u64>) -> Quota {
        Quota { limit }
    }

    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// etcd's `costPut`: the key, the value and a fixed overhead.
    pub fn put_cost(put: &PutRequest) -> u64 {
        KV_OVERHEAD + put.key.len() as u64 + put.value.len() as u64
    }

    /// etcd's `costTxn`: the puts of the costlier branch (nested txns count nothing, as
    /// in etcd 3.4).
    pub fn txn_cost(txn: &TxnRequest) -> u64 {
        let branch = |ops: &[RequestOp]| -> u64 {
            ops.iter()
                .map(|op| match &op.request {
                    Some(request_op::Request::RequestPut(put)) => Quota::put_cost(put),
                    _ => 0,
                })
                .sum()
        };
        branch(&txn.success).max(branch(&txn.failure))
    }

    pub fn lease_grant_cost(_grant: &LeaseGrantRequest) -> u64 {
        LEASE_OVERHEAD
    }

    /// etcd's `backendQuota.Available`: a request that writes nothing always fits;
    /// one that does fits while the store's size plus its cost stays under the quota.
    pub fn fits(&self, db_size: u64, cost: u64) -> bool {
        match self.limit {
            _ if cost == 0 => true,
            None => true,
            Some(limit) => db_size.saturating_add(cost) < limit,
        }
    }
}

/// The raised alarms, shared by the apply (which changes them) and the faces (which
/// read them for `/health`, `Status` and the quota check).
#[derive(Debug)]
pub struct Alarms {
    /// `(alarm type, member id)`.
    raised: RwLock<BTreeSet<(i32, u64)>>,
    quota: Quota,
}

impl Alarms {
    pub fn new(quota: Quota) -> Alarms {
        Alarms {
            raised: RwLock::new(BTreeSet::new()),
            quota,
        }
    }

    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Reloads the alarms from the store (at start-up, and after a snapshot replaced it).
    pub fn recover(&self, store: &Store) -> Result<(), concord_mvcc::Error> {
        let mut raised = BTreeSet::new();
        for (key, _) in store.meta_scan(ALARM_TABLE)? {
            let member = AlarmMember::decode(key.as_slice()).map_err(|e| {
                concord_mvcc::Error::Corrupt(format!("alarm table entry {key:?}: {e}"))
            })?;
            raised.insert((member.alarm, member.member_id));
        }
        for &(alarm, member) in &raised {
            tracing::warn!(
                "alarm {} raised by member {member:x} is active",
                alarm_name(alarm)
            );
        }
        *self.raised.write() = raised;
        Ok(())
    }

    /// The raised alarms of `kind` (all of them for `NONE`), as etcd's `Get`.
    pub fn list(&self, kind: AlarmType) -> Vec<AlarmMember> {
        self.raised
            .read()
            .iter()
            .filter(|(alarm, _)| kind == AlarmType::None || *alarm == kind as i32)
            .map(|&(alarm, member_id)| AlarmMember { member_id, alarm })
            .collect()
    }

    pub fn is_raised(&self, kind: AlarmType) -> bool {
        self.raised
            .read()
            .iter()
            .any(|(alarm, _)| *alarm == kind as i32)
    }

    /// Applies an Alarm request (etcd's `applierV3backend.Alarm`): the response lists
    /// the alarm activated or deactivated (none if there was nothing to change for a
    /// deactivation), or the raised alarms of the asked type for GET. etcd answers it
    /// without a header.
    pub fn apply(&self, batch: &mut WriteBatch<'_>, request: &AlarmRequest) -> AlarmResponse {
        let mut response = AlarmResponse::default();
        let entry = (request.alarm, request.member_id);
        let member = AlarmMember {
            member_id: request.member_id,
            alarm: request.alarm,
        };
        match AlarmAction::try_from(request.action) {
            Ok(AlarmAction::Get) => {
                response.alarms =
                    self.list(AlarmType::try_from(request.alarm).unwrap_or(AlarmType::None));
            }
            Ok(AlarmAction::Activate) => {
                let mut raised = self.raised.write();
                let first_of_kind = !raised.iter().any(|(alarm, _)| *alarm == request.alarm);
                if raised.insert(entry) {
                    batch.meta_put(ALARM_TABLE, &member.encode_to_vec(), b"");
                    if first_of_kind {
                        tracing::warn!(
                            "alarm raised: alarm {} from {:x}",
                            alarm_name(request.alarm),
                            request.member_id
                        );
                    }
                }
                response.alarms.push(member);
            }
            Ok(AlarmAction::Deactivate) => {
                let mut raised = self.raised.write();
                if raised.remove(&entry) {
                    batch.meta_delete(ALARM_TABLE, &member.encode_to_vec());
                    if !raised.iter().any(|(alarm, _)| *alarm == request.alarm) {
                        tracing::warn!(
                            "alarm disarmed: alarm {} from {:x}",
                            alarm_name(request.alarm),
                            request.member_id
                        );
                    }
                    response.alarms.push(member);
                }
            }
            // etcd answers an unknown action with an empty response.
            Err(_) => {}
        }
        response
    }

    /// What the raised alarms forbid (etcd's capped and corrupt appliers, CORRUPT
    /// checked first as its applier wraps the capped one).
    pub fn refuse(&self, request: &Request) -> Result<(), EtcdError> {
        let raised = self.raised.read();
        if raised.is_empty() {
            return Ok(());
        }
        let has = |kind: AlarmType| raised.iter().any(|(alarm, _)| *alarm == kind as i32);
        if has(AlarmType::Corrupt)
            && matches!(
                request,
                Request::Put(_)
                    | Request::DeleteRange(_)
                    | Request::Txn(_)
                    | Request::Compaction(_)
                    | Request::LeaseGrant(_)
                    | Request::LeaseRevoke(_)
            )
        {
            return Err(EtcdError::corrupt());
        }
        if has(AlarmType::Nospace) {
            let writes = match request {
                Request::Put(_) | Request::LeaseGrant(_) => true,
                Request::Txn(txn) => Quota::txn_cost(txn) > 0,
                _ => false,
            };
            if writes {
                return Err(EtcdError::no_space());
            }
        }
        Ok(())
    }

    /// The cost of a request that the quota counts (puts, txns, lease grants), 0 for
    /// the others.
    pub fn cost(request: &Request) -> u64 {
        match request {
            Request::Put(put) => Quota::put_cost(put),
            Request::Txn(txn) => Quota::txn_cost(txn),
            Request::LeaseGrant(grant) => Quota::lease_grant_cost(grant),
            _ => 0,
        }
    }
}

/// etcd's name of an alarm type (`AlarmType.String()`).
pub fn alarm_name(alarm: i32) -> &'static str {
    AlarmType::try_from(alarm).map_or("UNKNOWN", |a| a.as_str_name())
}

/// etcd's text of one raised alarm as `Status` lists it among its errors (gogo
/// protobuf's compact text of `AlarmMember`, `memberID:<decimal> alarm:<NAME> `).
pub fn alarm_status_text(member: &AlarmMember) -> String {
    let mut text = String::new();
    if member.member_id != 0 {
        text.push_str(&format!("memberID:{} ", member.member_id));
    }
    if member.alarm != 0 {
        text.push_str(&format!("alarm:{} ", alarm_name(member.alarm)));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, RequestOp};

    fn put_op(value_len: usize) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"k".to_vec(),
                value: vec![0; value_len],
                ..Default::default()
            })),
        }
    }

    #[test]
    fn txn_cost_is_the_costlier_branch() {
        let txn = TxnRequest {
            success: vec![put_op(10), put_op(10)],
            failure: vec![put_op(100)],
            ..Default::default()
        };
        assert_eq!(Quota::txn_cost(&txn), 2 * (256 + 1 + 10));
        let reads_only = TxnRequest::default();
        assert_eq!(Quota::txn_cost(&reads_only), 0);
        assert!(Quota::new(Some(1)).fits(u64::MAX, 0));
        assert!(Quota::new(None).fits(u64::MAX, 1));
    }

    #[test]
    fn nospace_refuses_what_grows_the_store_and_corrupt_every_write() {
        let alarms = Alarms::new(Quota::new(None));
        alarms.raised.write().insert((AlarmType::Nospace as i32, 7));
        let put = Request::Put(PutRequest::default());
        let delete = Request::DeleteRange(DeleteRangeRequest::default());
        let compact = Request::Compaction(CompactionRequest::default());
        let read_txn = Request::Txn(TxnRequest::default());
        let write_txn = Request::Txn(TxnRequest {
            failure: vec![put_op(1)],
            ..Default::default()
        });
        assert_eq!(alarms.refuse(&put), Err(EtcdError::no_space()));
        assert_eq!(alarms.refuse(&write_txn), Err(EtcdError::no_space()));
        assert_eq!(alarms.refuse(&delete), Ok(()));
        assert_eq!(alarms.refuse(&compact), Ok(()));
        assert_eq!(alarms.refuse(&read_txn), Ok(()));
        alarms.raised.write().insert((AlarmType::Corrupt as i32, 0));
        for request in [&put, &delete, &compact, &read_txn] {
            assert_eq!(alarms.refuse(request), Err(EtcdError::corrupt()));
        }
    }

    #[test]
    fn status_text_is_gogo_compact_text() {
        let member = AlarmMember {
            member_id: 10276657743932975437,
            alarm: AlarmType::Nospace as i32,
        };
        assert_eq!(
            alarm_status_text(&member),
            "memberID:10276657743932975437 alarm:NOSPACE "
        );
    }
}
