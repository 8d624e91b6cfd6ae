//! The KV service: reads served from the local store (after a ReadIndex barrier unless
//! serializable), writes proposed through raft.

use std::sync::Arc;

use concord_proto::concordpb::{apply_result, internal_request};
use concord_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse, kv_server::Kv,
};
use tonic::{Request, Response, Status};

use crate::core::{Core, expect_result};
use crate::etcd_error::EtcdError;
use crate::state::alarms::Quota;

pub struct KvService {
    core: Arc<Core>,
}

impl KvService {
    pub fn new(core: Arc<Core>) -> KvService {
        KvService { core }
    }

    /// etcd's checks of a txn before raft (shape, op count, duplicate keys), so that their
    /// errors win over what only the apply can find (a lease that does not exist).
    fn check_txn(&self, txn: &TxnRequest) -> Result<(), EtcdError> {
        let limit = self.core.config.max_txn_ops as usize;
        concord_mvcc::check_txn(txn, limit).map_err(EtcdError::from)
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        // A learner refuses a linearizable read before anything else, as etcd's
        // interceptor does (learner_gate lets every Range through).
        if !request.get_ref().serializable
            && self
                .core
                .raft
                .status
                .is_learner
                .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(EtcdError::not_supported_for_learner().into());
        }
        let who = self.core.identify(&request).await?;
        let request = request.into_inner();
        if request.key.is_empty() {
            return Err(EtcdError::empty_key().into());
        }
        if !request.serializable {
            self.core.linearizable_barrier().await?;
        }
        // etcd's doSerialize: check, read, and if the auth state changed under the read,
        // check again as of the current revision (callers whose revision follows it).
        let auth = &self.core.auth.store;
        let mut who = who;
        let deadline = self.core.auth_retry_deadline();
        loop {
            let outcome = auth
                .check_range(&who, &request.key, &request.range_end)
                .and_then(|()| {
                    let response = self.core.backend.store().range(&request);
                    let response = response.map_err(EtcdError::from)?;
                    if who.revision != 0 && who.revision != auth.revision() {
                        return Err(EtcdError::auth_old_revision());
                    }
                    Ok(response)
                });
            match outcome {
                Ok(mut response) => {
                    self.core.complete_header(&mut response.header);
                    return Ok(Response::new(response));
                }
                Err(error)
                    if error == EtcdError::auth_old_revision()
                        && who.follows_current_revision
                        && tokio::time::Instant::now() < deadline =>
                {
                    // Lets other requests (the auth changes among them) run between tries.
                    tokio::task::yield_now().await;
                    who.revision = auth.revision();
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        // etcd's quotaKVServer checks the quota before anything else.
        let cost = Quota::put_cost(request.get_ref());
        self.core.check_quota(cost).await?;
        let who = self.core.identify(&request).await?;
        let request = request.into_inner();
        // etcd's checkPutRequest, before the request reaches raft (so before a lease is
        // looked up: `--ignore-lease --lease=<none>` is "lease is provided", not "not found").
        if request.key.is_empty() {
            return Err(EtcdError::empty_key().into());
        }
        if request.ignore_value && !request.value.is_empty() {
            return Err(EtcdError::value_provided().into());
        }
        if request.ignore_lease && request.lease != 0 {
            return Err(EtcdError::lease_provided().into());
        }
        let result = self
            .core
            .propose_as(&who, internal_request::Request::Put(request))
            .await?;
        let mut response = expect_result(result, |r| match r {
            apply_result::Result::Put(put) => Some(put),
            _ => None,
        })?;
        self.core.complete_header(&mut response.header);
        Ok(Response::new(response))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let who = self.core.identify(&request).await?;
        let request = request.into_inner();
        if request.key.is_empty() {
            return Err(EtcdError::empty_key().into());
        }
        let result = self
            .core
            .propose_as(&who, internal_request::Request::DeleteRange(request))
            .await?;
        let mut response = expect_result(result, |r| match r {
            apply_result::Result::DeleteRange(delete) => Some(delete),
            _ => None,
        })?;
        self.core.complete_header(&mut response.header);
        Ok(Response::new(response))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let cost = Quota::txn_cost(request.get_ref());
        self.core.check_quota(cost).await?;
        let who = self.core.identify(&request).await?;
        let request = request.into_inner();
        self.check_txn(&request)?;
        let result = self
            .core
            .propose_as(&who, internal_request::Request::Txn(request))
            .await?;
        let mut response = expect_result(result, |r| match r {
            apply_result::Result::Txn(txn) => Some(txn),
            _ => None,
        })?;
        self.core.complete_header(&mut response.header);
        Ok(Response::new(response))
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let who = self.core.identify(&request).await?;
        let request = request.into_inner();
        let result = self
            .core
            .propose_as(&who, internal_request::Request::Compaction(request))
            .await?;
        let mut response = expect_result(result, |r| match r {
            apply_result::Result::Compaction(compaction) => Some(compaction),
            _ => None,
        })?;
        self.core.complete_header(&mut response.header);
        Ok(Response::new(response))
    }
}
