//! etcd's server-side Election service (`v3electionpb.Election`), built as etcd builds
//! it: on the member's own KV and Watch services over an in-process connection, with the
//! caller's auth metadata (see [`super::lock`]).
//!
//! A candidate's key is `name/<lease in hex>`; the leader is the key under `name/` with
//! the lowest create revision. `Campaign` writes the candidate's key (or proclaims the
//! new value if the key exists) and waits until every older candidate is gone; `Proclaim`
//! and `Resign` act only while the leader key still has the create revision the caller
//! knows; `Leader` reads the leader; `Observe` streams every leader value as it changes.
//! Errors are etcd's: "election: not leader", "election: no leader",
//! `"leader" field must be provided`.

use std::pin::Pin;

use concord_proto::etcdserverpb::ResponseHeader;
use concord_proto::etcdserverpb::TxnRequest;
use concord_proto::etcdserverpb::range_request::SortOrder;
use concord_proto::mvccpb::KeyValue;
use concord_proto::mvccpb::event::EventType;
use concord_proto::v3electionpb::election_server::Election;
use concord_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::lock::{
    DeleteOnDrop, OwnClient, by_creation, created_at, delete_op, first_kv, prefix_end, put_op,
    range_of, range_op, session_key,
};

const NOT_LEADER: &str = "election: not leader";
const NO_LEADER: &str = "election: no leader";
const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";

pub struct ElectionService {
    channel: Channel,
}

impl ElectionService {
    pub fn new(channel: Channel) -> ElectionService {
        ElectionService { channel }
    }
}

/// Puts `value` on the leader key if it still has create revision `revision`.
async fn proclaim(
    client: &OwnClient,
    leader: &LeaderKey,
    value: &[u8],
) -> Result<ResponseHeader, Status> {
    let response = client
        .txn(TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![put_op(&leader.key, value, leader.lease)],
            failure: vec![],
        })
        .await?;
    if !response.succeeded {
        return Err(Status::unknown(NOT_LEADER));
    }
    Ok(response.header.unwrap_or_default())
}

/// Deletes the leader key if it still has create revision `revision`.
async fn resign(client: &OwnClient, leader: &LeaderKey) -> Result<ResponseHeader, Status> {
    let response = client
        .txn(TxnRequest {
            compare: vec![created_at(&leader.key, leader.rev)],
            success: vec![delete_op(&leader.key)],
            failure: vec![],
        })
        .await?;
    Ok(response.header.unwrap_or_default())
}

/// The current leader of the election under `prefix` (`name/`), with the read's header.
async fn current_leader(
    client: &OwnClient,
    prefix: &[u8],
) -> Result<(ResponseHeader, Option<KeyValue>), Status> {
    let response = client
        .range(by_creation(prefix, SortOrder::Ascend, 0))
        .await?;
    Ok((
        response.header.unwrap_or_default(),
        response.kvs.into_iter().next(),
    ))
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let client = OwnClient::new(self.channel.clone(), &request);
        let request = request.into_inner();
        let lease = client.session_lease(request.lease).await?;
        let prefix = [request.name.as_slice(), b"/"].concat();
        let key = session_key(&prefix, lease);
        let response = client
            .txn(TxnRequest {
                compare: vec![created_at(&key, 0)],
                success: vec![put_op(&key, &request.value, lease)],
                failure: vec![range_op(&key)],
            })
            .await?;
        let mut leader = LeaderKey {
            name: request.name.clone(),
            key: key.clone(),
            rev: response.header.as_ref().map_or(0, |h| h.revision),
            lease,
        };
        // If the caller goes away while waiting, or the wait fails, the candidacy ends.
        let mut resign_on_drop = DeleteOnDrop::new(&client, key.clone());
        if !response.succeeded {
            // The session already campaigns here: take its key over, with the new value.
            let existing = first_kv(range_of(&response, 0))
                .cloned()
                .unwrap_or_default();
            leader.rev = existing.create_revision;
            if existing.value != request.value {
                proclaim(&client, &leader, &request.value).await?;
            }
        }
        client.wait_deletes(&prefix, leader.rev - 1).await?;
        // The key must still be ours: its lease may have expired while we waited.
        let mine = client.range(super::lock::range_request(&key)).await?;
        if first_kv(Some(&mine)).is_none_or(|kv| kv.create_revision != leader.rev) {
            resign_on_drop.disarm();
            return Err(Status::unknown(NOT_LEADER));
        }
        resign_on_drop.disarm();
        Ok(Response::new(CampaignResponse {
            header: response.header,
            leader: Some(leader),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let client = OwnClient::new(self.channel.clone(), &request);
        let request = request.into_inner();
        let leader = request
            .leader
            .ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        let header = proclaim(&client, &leader, &request.value).await?;
        Ok(Response::new(ProclaimResponse {
            header: Some(header),
        }))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let client = OwnClient::new(self.channel.clone(), &request);
        let prefix = [request.into_inner().name.as_slice(), b"/"].concat();
        match current_leader(&client, &prefix).await? {
            (header, Some(kv)) => Ok(Response::new(LeaderResponse {
                header: Some(header),
                kv: Some(kv),
            })),
            (_, None) => Err(Status::unknown(NO_LEADER)),
        }
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let client = OwnClient::new(self.channel.clone(), &request);
        let prefix = [request.into_inner().name.as_slice(), b"/"].concat();
        let (sender, receiver) = mpsc::channel(16);
        tokio::spawn(async move {
            // Ends quietly when the caller goes away or a call fails, as etcd's does.
            tokio::select! {
                _ = sender.closed() => {}
                _ = observe(&client, &prefix, &sender) => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let client = OwnClient::new(self.channel.clone(), &request);
        let leader = request
            .into_inner()
            .leader
            .ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        let header = resign(&client, &leader).await?;
        Ok(Response::new(ResignResponse {
            header: Some(header),
        }))
    }
}

/// Why observing stopped: the caller went away, or a call failed.
struct Stopped;

impl From<Status> for Stopped {
    fn from(_: Status) -> Stopped {
        Stopped
    }
}

/// Sends every leader of the election under `prefix` and each value it proclaims, in
/// order (clientv3's `Election.Observe`).
async fn observe(
    client: &OwnClient,
    prefix: &[u8],
    sender: &mpsc::Sender<Result<LeaderResponse, Status>>,
) -> Result<(), Stopped> {
    loop {
        let (mut header, leader) = current_leader(client, prefix).await?;
        let leader = match leader {
            Some(kv) => kv,
            None => {
                // No leader yet: the first key put under the prefix is the next one.
                let (watch_header, event) = client
                    .watch_until(prefix, prefix_end(prefix), header.revision, |event| {
                        event.r#type == EventType::Put as i32
                    })
                    .await?;
                let kv = event.kv.unwrap_or_default();
                header = ResponseHeader {
                    revision: kv.mod_revision,
                    ..watch_header
                };
                kv
            }
        };
        let send = |header: ResponseHeader, kv: KeyValue| async move {
            sender
                .send(Ok(LeaderResponse {
                    header: Some(header),
                    kv: Some(kv),
                }))
                .await
                .map_err(|_| Stopped)
        };
        send(header, leader.clone()).await?;
        // Every value the leader proclaims, until its key goes.
        let mut watch = client
            .watch(&leader.key, Vec::new(), header.revision + 1)
            .await?;
        'leader: loop {
            let (header, events) = watch.next().await?;
            for event in events {
                if event.r#type == EventType::Delete as i32 {
                    break 'leader;
                }
                send(header, event.kv.unwrap_or_default()).await?;
            }
        }
    }
}
