//! The Cluster service: the member list, and membership changes (see
//! [`crate::reconfig`] for etcd's rules).

use std::sync::Arc;

use concord_proto::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, cluster_server::Cluster,
};
use tonic::{Request, Response, Status};

use crate::auth::Credentials;
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
            reconfig::add(
                &self.core,
                request.get_ref().clone(),
                &Credentials::of(&request),
            )
            .await?,
        ))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.core.require_admin(&request).await?;
        Ok(Response::new(
            reconfig::remove(&self.core, *request.get_ref(), &Credentials::of(&request)).await?,
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
        let sender = Credentials::of(&request);
        let promoted = reconfig::promote(&self.core, request.into_inner(), &sender).await?;
        if leading {
            metrics::counter!("etcd_server_learner_promote_successes").increment(1);
        }
        Ok(Response::new(promoted))
    }
}
