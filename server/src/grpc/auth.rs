//! The Auth service: etcd 3.4's sixteen RPCs (and 3.5's AuthStatus). Every one is a
//! raft entry, decided at apply by [`crate::state::auth::AuthStore`] with the sender's
//! identity; passwords are hashed (or, for Authenticate, checked) here, on blocking
//! threads, before anything is proposed, so the log carries no password.

use std::sync::Arc;

use concord_proto::concordpb::{InternalAuthenticateRequest, apply_result, internal_request};
use concord_proto::etcdserverpb::{self as pb, auth_server::Auth};
use tonic::{Request, Response, Status};

use crate::core::{Core, expect_result};
use crate::etcd_error::EtcdError;

pub struct AuthService {
    core: Arc<Core>,
}

impl AuthService {
    pub fn new(core: Arc<Core>) -> AuthService {
        AuthService { core }
    }

    /// Proposes `request` as the sender of `call` and unpacks the response `pick`
    /// expects, with the member's header filled in.
    async fn run<T, R>(
        &self,
        call: &Request<T>,
        request: internal_request::Request,
        pick: impl FnOnce(apply_result::Result) -> Option<R>,
        header: impl FnOnce(&mut R) -> &mut Option<pb::ResponseHeader>,
    ) -> Result<Response<R>, Status> {
        let who = self.core.identify(call).await?;
        let result = self.core.propose_as(&who, request).await?;
        let mut response = expect_result(result, pick)?;
        self.core.complete_header(header(&mut response));
        Ok(Response::new(response))
    }

    /// Takes the password out of a request, and puts its bcrypt hash in (when `needed`
    /// and the client did not send a hash itself), so that no password enters the log.
    async fn hash_password(
        &self,
        password: &mut String,
        hashed: &mut String,
        needed: bool,
    ) -> Result<(), EtcdError> {
        let password = std::mem::take(password);
        if needed && hashed.is_empty() {
            *hashed = self.core.auth.hash_password(password).await?;
        }
        Ok(())
    }
}

/// The body of an RPC that proposes its request, as it came or as `inner` made it.
macro_rules! relay {
    ($self:ident, $request:ident, $variant:ident) => {{
        let inner = $request.get_ref().clone();
        relay!($self, $request, $variant, inner)
    }};
    ($self:ident, $request:ident, $variant:ident, $inner:expr) => {{
        $self
            .run(
                &$request,
                internal_request::Request::$variant($inner),
                |r| match r {
                    apply_result::Result::$variant(response) => Some(response),
                    _ => None,
                },
                |r| &mut r.header,
            )
            .await
    }};
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        relay!(self, request, AuthEnable)
    }
    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        relay!(self, request, AuthDisable)
    }
    async fn auth_status(
        &self,
        request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        relay!(self, request, AuthStatus)
    }
    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        relay!(self, request, AuthUserGet)
    }
    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        relay!(self, request, AuthUserList)
    }
    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        relay!(self, request, AuthUserDelete)
    }
    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        relay!(self, request, AuthUserGrantRole)
    }
    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        relay!(self, request, AuthUserRevokeRole)
    }
    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        relay!(self, request, AuthRoleAdd)
    }
    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        relay!(self, request, AuthRoleGet)
    }
    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        relay!(self, request, AuthRoleList)
    }
    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        relay!(self, request, AuthRoleDelete)
    }
    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        relay!(self, request, AuthRoleGrantPermission)
    }
    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        relay!(self, request, AuthRoleRevokePermission)
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let mut inner = request.get_ref().clone();
        // etcd's order: an empty name is refused before any hashing.
        if inner.name.is_empty() {
            return Err(EtcdError::user_empty().into());
        }
        let no_password = inner.options.as_ref().is_some_and(|o| o.no_password);
        self.hash_password(
            &mut inner.password,
            &mut inner.hashed_password,
            !no_password,
        )
        .await?;
        relay!(self, request, AuthUserAdd, inner)
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let mut inner = request.get_ref().clone();
        self.hash_password(&mut inner.password, &mut inner.hashed_password, true)
            .await?;
        relay!(self, request, AuthUserChangePassword, inner)
    }

    /// etcd's Authenticate: the password is checked here (off the async workers), the
    /// entry registers the token on every member; if the auth state changed between
    /// the check and the apply, the check runs again.
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let request = request.into_inner();
        self.core.linearizable_barrier().await?;
        let auth = &self.core.auth;
        loop {
            let checked_at = auth
                .check_password(&request.name, request.password.clone())
                .await?;
            let simple = auth.new_simple_token().unwrap_or_default();
            let result = self
                .core
                .propose(internal_request::Request::Authenticate(
                    InternalAuthenticateRequest {
                        name: request.name.clone(),
                        password: String::new(),
                        simple_token: simple,
                    },
                ))
                .await?;
            let mut response = expect_result(result, |r| match r {
                apply_result::Result::Authenticate(response) => Some(response),
                _ => None,
            })?;
            let revision = auth.store.revision();
            if revision != checked_at {
                continue;
            }
            response.token = auth.token_for(&request.name, revision, response.token)?;
            self.core.complete_header(&mut response.header);
            return Ok(Response::new(response));
        }
    }
}
