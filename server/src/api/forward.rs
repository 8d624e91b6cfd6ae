//! The leader's end of request forwarding (see [`crate::core::Core::propose`]).

use std::sync::Arc;

use concord_proto::concordpb::{ForwardRequest, ForwardResponse, forward_server::Forward};
use tonic::{Request, Response, Status};

use crate::core::Core;
use crate::etcd_error::EtcdError;

pub struct ForwardService {
    core: Arc<Core>,
}

impl ForwardService {
    pub fn new(core: Arc<Core>) -> ForwardService {
        ForwardService { core }
    }
}

#[tonic::async_trait]
impl Forward for ForwardService {
    async fn propose(
        &self,
        request: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        let request = request
            .into_inner()
            .request
            .ok_or_else(|| EtcdError::internal("forwarded request is empty"))?;
        Ok(Response::new(self.core.serve_forwarded(request).await?))
    }
}
