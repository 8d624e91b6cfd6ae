//! The Cluster service: the member list, and membership changes (see
//! [`crate::reconfig`] for etcd's rules). A change sent to a follower is checked
//! there, against its caller's token or client certificate, and made by the leader,
//! which takes it from the follower over the peer link ([`LeaderChanges`]).

use std::sync::Arc;

use concord_proto::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, cluster_server::Cluster,
};
use tonic::{Request, Response, Status};

use crate::core::Core;
use crate::reconfig;

pub struct ClusterService {
    core: Arc<Core>,
}

impl ClusterService {
    pub fn new(core: Arc<Core>) -> ClusterService {
        ClusterService { core }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        self.core.require_admin(&request).await?;
        Ok(Response::new(
            reconfig::add(&self.core, request.into_inner()).await?,
        ))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.core.require_admin(&request).await?;
        Ok(Response::new(
            reconfig::remove(&self.core, request.into_inner()).await?,
        ))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.core.require_admin(&request).await?;
        Ok(Response::new(
            reconfig::update(&self.core, request.into_inner()).await?,
        ))
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if request.into_inner().linearizable {
            self.core.linearizable_barrier().await?;
        }
        let members = self.core.membership.read().members().cloned().collect();
        Ok(Response::new(MemberListResponse {
            // etcd's ClusterServer fills cluster id, member id and raft term only: its
            // member list answers with revision 0 (seen side by side with etcd 3.4.23).
            header: Some(self.core.header(0)),
            members,
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.core.require_admin(&request).await?;
        // Counted by the leader, which a follower forwards the request to.
        let leading = self.core.raft.status.is_leader();
        let promoted = reconfig::promote(&self.core, request.into_inner()).await?;
        if leading {
            metrics::counter!("etcd_server_learner_promote_successes").increment(1);
        }
        Ok(Response::new(promoted))
    }
}

/// The leader's side of a member change a follower forwards: the follower checked its
/// caller, so no identity comes along (the peer link is trusted, as etcd's peer
/// `/members/promote` is). A member that is no longer the leader refuses rather than
/// forwarding again, so a change never travels in circles while leadership moves.
pub struct LeaderChanges(pub Arc<Core>);

impl LeaderChanges {
    fn require_leading(&self) -> Result<(), Status> {
        if self.0.raft.status.is_leader() {
            Ok(())
        } else {
            Err(crate::etcd_error::EtcdError::not_leader().into())
        }
    }
}

impl crate::transport::LeaderMemberChanges for LeaderChanges {
    fn add(
        &self,
        request: MemberAddRequest,
    ) -> futures::future::BoxFuture<'static, Result<MemberAddResponse, Status>> {
        let core = self.0.clone();
        let leading = self.require_leading();
        Box::pin(async move {
            leading?;
            Ok(reconfig::add(&core, request).await?)
        })
    }

    fn remove(
        &self,
        request: MemberRemoveRequest,
    ) -> futures::future::BoxFuture<'static, Result<MemberRemoveResponse, Status>> {
        let core = self.0.clone();
        let leading = self.require_leading();
        Box::pin(async move {
            leading?;
            Ok(reconfig::remove(&core, request).await?)
        })
    }

    fn promote(
        &self,
        request: MemberPromoteRequest,
    ) -> futures::future::BoxFuture<'static, Result<MemberPromoteResponse, Status>> {
        let core = self.0.clone();
        let leading = self.require_leading();
        Box::pin(async move {
            leading?;
            let promoted = reconfig::promote(&core, request).await?;
            metrics::counter!("etcd_server_learner_promote_successes").increment(1);
            Ok(promoted)
        })
    }
}
