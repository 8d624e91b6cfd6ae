//! What every client-facing service shares: proposing a write (on the leader directly,
//! from a follower by forwarding it to the leader), waiting for a linearizable read
//! point, and etcd's response header.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use concord_proto::concordpb::{
    ApplyResult, ForwardRequest, ForwardResponse, InternalRequest, RequestHeader, apply_result,
    forward_client::ForwardClient, internal_request,
};
use concord_proto::etcdserverpb::ResponseHeader;
use parking_lot::{Mutex, RwLock};
use prost::Message;
use tonic::transport::Channel;

use crate::apply::Backend;
use crate::config::Config;
use crate::driver::RaftHandle;
use crate::etcd_error::EtcdError;
use crate::membership::Membership;

/// How a follower reaches the leader's `Forward` service.
pub trait LeaderConnector: Send + Sync {
    /// A channel to the member with these peer URLs.
    fn channel(&self, urls: &[url::Url]) -> Result<Channel, EtcdError>;
}

/// The member as the services see it.
pub struct Core {
    pub config: Arc<Config>,
    pub member_id: u64,
    pub cluster_id: u64,
    pub raft: RaftHandle,
    pub backend: Arc<Backend>,
    pub membership: Arc<RwLock<Membership>>,
    connector: Box<dyn LeaderConnector>,
    forward_clients: Mutex<HashMap<u64, ForwardClient<Channel>>>,
    request_timeout: Duration,
}

impl Core {
    pub fn new(
        config: Arc<Config>,
        member_id: u64,
        cluster_id: u64,
        raft: RaftHandle,
        backend: Arc<Backend>,
        membership: Arc<RwLock<Membership>>,
        connector: Box<dyn LeaderConnector>,
    ) -> Core {
        // etcd's request timeout: 5 s plus two election timeouts.
        let request_timeout = Duration::from_secs(5) + 2 * config.election_timeout;
        Core {
            config,
            member_id,
            cluster_id,
            raft,
            backend,
            membership,
            connector,
            forward_clients: Mutex::new(HashMap::new()),
            request_timeout,
        }
    }

    /// etcd's response header at `revision`.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft.status.term(),
        }
    }

    /// Fills in the header fields the store leaves to the server.
    pub fn complete_header(&self, header: &mut Option<ResponseHeader>) {
        let revision = header
            .as_ref()
            .map(|h| h.revision)
            .unwrap_or_else(|| self.current_revision());
        *header = Some(self.header(revision));
    }

    pub fn current_revision(&self) -> i64 {
        self.backend.store().current_revision()
    }

    /// Waits until a read on this member reflects every write acknowledged before the
    /// call (ReadIndex through the leader).
    pub async fn linearizable_barrier(&self) -> Result<(), EtcdError> {
        self.require_leader()?;
        match tokio::time::timeout(self.request_timeout, self.raft.read_barrier()).await {
            Ok(result) => result,
            Err(_) => Err(EtcdError::timeout()),
        }
    }

    /// etcd answers every request with "no leader" while the member knows of none.
    pub fn require_leader(&self) -> Result<u64, EtcdError> {
        match self.raft.status.leader() {
            0 => Err(EtcdError::no_leader()),
            leader => Ok(leader),
        }
    }

    /// Proposes a write through raft and returns its result once it is applied on this
    /// member, so the caller's next local read sees it.
    pub async fn propose(
        &self,
        request: internal_request::Request,
    ) -> Result<ApplyResult, EtcdError> {
        let request = InternalRequest {
            header: Some(RequestHeader {
                id: 0,
                username: String::new(),
                auth_revision: 0,
            }),
            request: Some(request),
        };
        let data = request.encode_to_vec();
        if data.len() as u64 > self.config.max_request_bytes {
            return Err(EtcdError::request_too_large());
        }
        match tokio::time::timeout(self.request_timeout, self.propose_encoded(request, data)).await
        {
            Ok(result) => result,
            Err(_) => Err(EtcdError::timeout()),
        }
    }

    async fn propose_encoded(
        &self,
        request: InternalRequest,
        data: Vec<u8>,
    ) -> Result<ApplyResult, EtcdError> {
        // A leader change between looking and proposing sends the request round again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let leader = self.require_leader()?;
            let outcome = if leader == self.member_id {
                self.raft
                    .propose_local(data.clone())
                    .await
                    .map(|completed| (completed.result, completed.index))
            } else {
                match self.forward(leader, request.clone()).await {
                    Err(ForwardError::NotSent) => {
                        // The leader is unreachable and the request never left: wait for
                        // raft to elect another leader, then try again.
                        self.wait_for_leader_other_than(leader).await;
                        continue;
                    }
                    Err(ForwardError::Failed(error)) => Err(error),
                    Ok(done) => Ok(done),
                }
            };
            match outcome {
                Ok((result, index)) => {
                    self.raft.wait_applied(index).await?;
                    return Ok(result);
                }
                Err(error)
                    if attempts < 3
                        && (error == EtcdError::not_leader()
                            || error == EtcdError::leader_changed()) =>
                {
                    tokio::time::sleep(self.config.heartbeat_interval).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn wait_for_leader_other_than(&self, leader: u64) {
        // An election passes through "no leader"; wait for its outcome.
        while matches!(self.raft.status.leader(), current if current == leader || current == 0) {
            tokio::time::sleep(self.config.heartbeat_interval).await;
        }
    }

    async fn forward(
        &self,
        leader: u64,
        request: InternalRequest,
    ) -> Result<(ApplyResult, u64), ForwardError> {
        let mut client = self.forward_client(leader).map_err(ForwardError::Failed)?;
        let response = client
            .propose(ForwardRequest {
                request: Some(request),
            })
            .await
            .map_err(|status| {
                if status.message().starts_with("etcdserver:") {
                    return ForwardError::Failed(EtcdError {
                        code: status.code(),
                        message: status.message().to_string(),
                    });
                }
                self.forward_clients.lock().remove(&leader);
                if never_sent(&status) {
                    ForwardError::NotSent
                } else {
                    // The request may or may not have reached the leader.
                    ForwardError::Failed(EtcdError::timeout_due_to_connection_lost())
                }
            })?;
        let response = response.into_inner();
        let result = response
            .result
            .ok_or_else(|| ForwardError::Failed(EtcdError::internal("empty forward response")))?;
        Ok((result, response.applied_index))
    }

    fn forward_client(&self, leader: u64) -> Result<ForwardClient<Channel>, EtcdError> {
        if let Some(client) = self.forward_clients.lock().get(&leader) {
            return Ok(client.clone());
        }
        let urls = self.membership.read().peer_urls(leader);
        if urls.is_empty() {
            return Err(EtcdError::no_leader());
        }
        let channel = self.connector.channel(&urls)?;
        let client = ForwardClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        self.forward_clients.lock().insert(leader, client.clone());
        Ok(client)
    }

    /// The leader's side of forwarding: propose here, answer with the applied index.
    pub async fn serve_forwarded(
        &self,
        request: InternalRequest,
    ) -> Result<ForwardResponse, EtcdError> {
        if !self.raft.status.is_leader() {
            return Err(EtcdError::not_leader());
        }
        let data = request.encode_to_vec();
        if data.len() as u64 > self.config.max_request_bytes {
            return Err(EtcdError::request_too_large());
        }
        let completed = self.raft.propose_local(data).await?;
        Ok(ForwardResponse {
            applied_index: completed.index,
            result: Some(completed.result),
            raft_term: completed.term,
        })
    }
}

/// Why forwarding to the leader failed.
enum ForwardError {
    /// No connection to the leader could be made: the request surely did not reach it.
    NotSent,
    /// The leader answered with an error, or the outcome is unknown.
    Failed(EtcdError),
}

/// Whether a transport failure happened before the request could be sent (the
/// connection was never established), as opposed to a connection lost mid-request.
fn never_sent(status: &tonic::Status) -> bool {
    let mut text = format!("{} {:?}", status.message(), status);
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        text.push_str(&error.to_string());
        source = error.source();
    }
    text.contains("Connection refused")
        || text.contains("tcp connect error")
        || text.contains("No route to host")
}

/// Unpacks an apply result into the response it must be, or its error.
pub fn expect_result<T>(
    result: ApplyResult,
    pick: impl FnOnce(apply_result::Result) -> Option<T>,
) -> Result<T, EtcdError> {
    match result.result {
        Some(apply_result::Result::Error(error)) => Err(EtcdError::from_apply_error(&error)),
        Some(other) => pick(other).ok_or_else(|| EtcdError::internal("unexpected apply result")),
        None => Err(EtcdError::internal("empty apply result")),
    }
}
