//! The Lease service. Grants and revocations go through raft (from any member); renewals
//! and TTL queries need the leader's expiry times, so a follower forwards them to the
//! leader's Lease service (keep-alives over one forwarded stream per client stream);
//! the lease list is served locally, as etcd does.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use concord_lease::MAX_LEASE_TTL;
use concord_proto::concordpb::{apply_result, internal_request};
use concord_proto::etcdserverpb::{
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest, LeaseGrantResponse,
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse, lease_client::LeaseClient, lease_server::Lease,
};
use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::core::{Core, expect_result};
use crate::etcd_error::EtcdError;
use crate::lease_expiry::propose_as_leader;
use crate::state::leases::LeaseKeeper;

/// How long to wait between attempts while there is no usable leader.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Clients of the leader's Lease service by member id, and the TLS settings for
/// reaching `https` client URLs (built on first use).
#[derive(Default)]
struct LeaderClients {
    clients: Mutex<HashMap<u64, LeaseClient<Channel>>>,
    tls: OnceLock<Option<Arc<rustls::ClientConfig>>>,
}

pub struct LeaseService {
    core: Arc<Core>,
    leases: Arc<LeaseKeeper>,
    leader_clients: Arc<LeaderClients>,
}

impl LeaseService {
    pub fn new(core: Arc<Core>, leases: Arc<LeaseKeeper>) -> LeaseService {
        LeaseService {
            core,
            leases,
            leader_clients: Arc::new(LeaderClients::default()),
        }
    }

    fn renewer(&self) -> Renewer {
        Renewer {
            core: self.core.clone(),
            leases: self.leases.clone(),
            leader_clients: self.leader_clients.clone(),
            forwarded: None,
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + request_timeout(&self.core)
    }

    /// A client for the leader's Lease service, over its client URL.
    fn leader_client(&self, leader: u64) -> Result<LeaseClient<Channel>, EtcdError> {
        leader_client(&self.core, &self.leader_clients, leader)
    }

    /// Answers a TTL query from the primary lessor (the leader's).
    fn local_time_to_live(
        &self,
        request: &LeaseTimeToLiveRequest,
    ) -> Option<LeaseTimeToLiveResponse> {
        if !self.core.raft.status.is_leader() || !self.leases.is_primary() {
            return None;
        }
        let header = Some(self.core.header(self.core.current_revision()));
        Some(match self.leases.time_to_live(request.id, request.keys) {
            Some(status) => LeaseTimeToLiveResponse {
                header,
                id: request.id,
                ttl: status.remaining_ttl,
                granted_ttl: status.granted_ttl,
                keys: status.keys,
            },
            // etcd answers an unknown lease with TTL -1, not an error.
            None => LeaseTimeToLiveResponse {
                header,
                id: request.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        })
    }
}

fn request_timeout(core: &Core) -> Duration {
    Duration::from_secs(5) + 2 * core.config.election_timeout
}

fn leader_client(
    core: &Core,
    clients: &LeaderClients,
    leader: u64,
) -> Result<LeaseClient<Channel>, EtcdError> {
    if let Some(client) = clients.clients.lock().get(&leader) {
        return Ok(client.clone());
    }
    let urls: Vec<String> = core
        .membership
        .read()
        .get(leader)
        .map(|member| member.client_ur_ls.clone())
        .unwrap_or_default();
    // Plain-text URLs first: no TLS settings needed.
    let url = urls
        .iter()
        .find(|u| u.starts_with("http://"))
        .or_else(|| urls.first())
        .ok_or_else(EtcdError::no_leader)?;
    let url = url::Url::parse(url).map_err(|e| EtcdError::internal(e.to_string()))?;
    let tls = if url.scheme() == "https" {
        clients
            .tls
            .get_or_init(|| {
                crate::tls::client_tls(&core.config)
                    .ok()
                    .flatten()
                    .map(|configs| configs.client)
            })
            .clone()
    } else {
        None
    };
    let channel = crate::transport::lazy_channel(&url, tls)
        .map_err(|e| EtcdError::internal(format!("cannot reach the leader at {url}: {e}")))?;
    let client = LeaseClient::new(channel);
    clients.clients.lock().insert(leader, client.clone());
    Ok(client)
}

/// Renews leases for one keep-alive stream: locally on the leader, else over a stream
/// forwarded to the leader.
struct Renewer {
    core: Arc<Core>,
    leases: Arc<LeaseKeeper>,
    leader_clients: Arc<LeaderClients>,
    forwarded: Option<ForwardedStream>,
}

struct ForwardedStream {
    leader: u64,
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
}

impl Renewer {
    /// The lease's TTL after renewal; 0 for a lease that does not exist or expired.
    async fn renew(&mut self, id: i64) -> Result<i64, EtcdError> {
        let deadline = Instant::now() + request_timeout(&self.core);
        loop {
            let leader = self.core.raft.status.leader();
            if leader == self.core.member_id {
                self.forwarded = None;
                match self.leases.renew(id) {
                    Ok(renewed) => {
                        if renewed.clear_checkpoint {
                            self.clear_checkpoint(id);
                        }
                        return Ok(renewed.ttl);
                    }
                    Err(concord_lease::Error::LeaseNotFound) => return Ok(0),
                    // Leading, but not yet done applying the previous terms' entries.
                    Err(_) => {}
                }
            } else if leader != 0 {
                match self.forward(leader, id).await {
                    Ok(ttl) => return Ok(ttl),
                    Err(error) => {
                        tracing::debug!("forwarding a keep-alive to {leader:x}: {error}");
                        self.forwarded = None;
                        self.leader_clients.clients.lock().remove(&leader);
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(EtcdError::timeout());
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn forward(&mut self, leader: u64, id: i64) -> Result<i64, EtcdError> {
        if self.forwarded.as_ref().is_some_and(|f| f.leader != leader) {
            self.forwarded = None;
        }
        if self.forwarded.is_none() {
            let mut client = leader_client(&self.core, &self.leader_clients, leader)?;
            let (requests, receiver) = mpsc::channel(4);
            let responses = client
                .lease_keep_alive(ReceiverStream::new(receiver))
                .await
                .map_err(status_error)?
                .into_inner();
            self.forwarded = Some(ForwardedStream {
                leader,
                requests,
                responses,
            });
        }
        let Some(forwarded) = self.forwarded.as_mut() else {
            return Err(EtcdError::no_leader());
        };
        forwarded
            .requests
            .send(LeaseKeepAliveRequest { id })
            .await
            .map_err(|_| EtcdError::leader_changed())?;
        let timeout = request_timeout(&self.core);
        match tokio::time::timeout(timeout, forwarded.responses.message()).await {
            Ok(Ok(Some(response))) => Ok(response.ttl),
            Ok(Ok(None)) => Err(EtcdError::leader_changed()),
            Ok(Err(status)) => Err(status_error(status)),
            Err(_) => Err(EtcdError::timeout()),
        }
    }

    /// A renewed lease must not come back with its old checkpointed TTL at the next
    /// leader change: clear it through raft.
    fn clear_checkpoint(&self, id: i64) {
        let core = self.core.clone();
        tokio::spawn(async move {
            let request = internal_request::Request::LeaseCheckpoint(LeaseCheckpointRequest {
                checkpoints: vec![LeaseCheckpoint {
                    id,
                    remaining_ttl: 0,
                }],
            });
            if let Err(error) = propose_as_leader(&core, request).await {
                tracing::debug!("clearing the checkpoint of lease {id:x}: {error}");
            }
        });
    }
}

fn status_error(status: Status) -> EtcdError {
    EtcdError {
        code: status.code(),
        message: status.message().to_string(),
    }
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        // etcd's quotaLeaseServer checks the quota before anything else.
        let cost = crate::state::alarms::Quota::lease_grant_cost(request.get_ref());
        self.core.check_quota(cost).await?;
        let who = self.core.identify(&request).await?;
        let mut request = request.into_inner();
        if request.ttl > MAX_LEASE_TTL {
            return Err(EtcdError::lease_ttl_too_large().into());
        }
        if request.id == 0 {
            request.id = self.leases.next_id();
        }
        let result = self
            .core
            .propose_as(&who, internal_request::Request::LeaseGrant(request))
            .await?;
        let mut response = expect_result(result, |r| match r {
            apply_result::Result::LeaseGrant(grant) => Some(grant),
            _ => None,
        })?;
        self.core.complete_header(&mut response.header);
        Ok(Response::new(response))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let who = self.core.identify(&request).await?;
        let request = request.into_inner();
        let result = self
            .core
            .propose_as(&who, internal_request::Request::LeaseRevoke(request))
            .await?;
        let mut response = expect_result(result, |r| match r {
            apply_result::Result::LeaseRevoke(revoke) => Some(revoke),
            _ => None,
        })?;
        self.core.complete_header(&mut response.header);
        Ok(Response::new(response))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let (sender, receiver) = mpsc::channel(16);
        let mut renewer = self.renewer();
        let core = self.core.clone();
        tokio::spawn(async move {
            while let Ok(Some(request)) = inbound.message().await {
                let reply = match renewer.renew(request.id).await {
                    Ok(ttl) => Ok(LeaseKeepAliveResponse {
                        header: Some(core.header(core.current_revision())),
                        id: request.id,
                        ttl,
                    }),
                    Err(error) => Err(Status::from(error)),
                };
                let failed = reply.is_err();
                if sender.send(reply).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let request = request.into_inner();
        let deadline = self.deadline();
        loop {
            if let Some(response) = self.local_time_to_live(&request) {
                return Ok(Response::new(response));
            }
            let leader = self.core.raft.status.leader();
            if leader != 0 && leader != self.core.member_id {
                match self.leader_client(leader) {
                    Ok(mut client) => match client.lease_time_to_live(request).await {
                        Ok(response) => {
                            let mut response = response.into_inner();
                            response.header = Some(self.core.header(self.core.current_revision()));
                            return Ok(Response::new(response));
                        }
                        Err(status) if status.message().starts_with("etcdserver:") => {
                            return Err(status);
                        }
                        Err(status) => {
                            tracing::debug!("forwarding a lease TTL query: {status}");
                            self.leader_clients.clients.lock().remove(&leader);
                        }
                    },
                    Err(error) => tracing::debug!("forwarding a lease TTL query: {error}"),
                }
            }
            if Instant::now() >= deadline {
                return Err(EtcdError::timeout().into());
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let leases = self
            .leases
            .ids_by_expiry()
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.core.header(self.core.current_revision())),
            leases,
        }))
    }
}
