//! The Cluster service: the member list. Membership changes answer `Unimplemented` with
//! a message saying so.

use std::sync::Arc;

use concord_proto::etcdserverpb::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, cluster_server::Cluster,
};
use tonic::{Request, Response, Status};

use crate::core::Core;

pub struct ClusterService {
    core: Arc<Core>,
}

impl ClusterService {
    pub fn new(core: Arc<Core>) -> ClusterService {
        ClusterService { core }
    }
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("concord: {what} is not supported by this version"))
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(not_yet("member add"))
    }

    async fn member_remove(
        &self,
        _request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(not_yet("member remove"))
    }

    async fn member_update(
        &self,
        _request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(not_yet("member update"))
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
        _request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(not_yet("member promote"))
    }
}
