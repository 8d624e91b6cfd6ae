//! What every client-facing service shares: proposing a write (raft hands a follower's
//! proposals to the leader itself), waiting for a linearizable read point, and etcd's
//! response header.

use std::sync::Arc;
use std::time::Duration;

use concord_proto::concordpb::{
    ApplyResult, InternalRequest, RequestHeader, apply_result, internal_request,
};
use concord_proto::etcdserverpb::ResponseHeader;
use parking_lot::RwLock;
use prost::Message;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::driver::RaftHandle;
use crate::etcd_error::EtcdError;
use crate::state::alarms::Alarms;
use crate::state::auth::AuthInfo;
use crate::state::backend::Backend;
use crate::state::membership::Membership;
use crate::state::v2::SharedV2Store;

/// The member as the services see it.
pub struct Core {
    pub config: Arc<Config>,
    pub member_id: u64,
    pub cluster_id: u64,
    pub raft: RaftHandle,
    pub backend: Arc<Backend>,
    pub membership: Arc<RwLock<Membership>>,
    /// Who makes a request, and the auth store that decides what they may do.
    pub auth: Arc<Authenticator>,
    /// The v2 keys store (read by the v2 HTTP face; written only by apply).
    pub v2: SharedV2Store,
    /// The raised alarms and the backend quota (written only by apply).
    pub alarms: Arc<Alarms>,
    /// The raft traffic counters the peer transport records (etcd's v2 stats).
    pub raft_stats: Arc<crate::transport::RaftStats>,
    request_timeout: Duration,
    /// etcd's `etcd_server_proposals_pending` and `etcd_server_proposals_failed_total`.
    proposals_pending: metrics::Gauge,
    proposals_failed: metrics::Counter,
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<Config>,
        member_id: u64,
        cluster_id: u64,
        raft: RaftHandle,
        backend: Arc<Backend>,
        membership: Arc<RwLock<Membership>>,
        auth: Arc<Authenticator>,
        v2: SharedV2Store,
        alarms: Arc<Alarms>,
        raft_stats: Arc<crate::transport::RaftStats>,
    ) -> Core {
        let request_timeout = request_timeout(&config);
        Core {
            config,
            member_id,
            cluster_id,
            raft,
            backend,
            membership,
            auth,
            v2,
            alarms,
            raft_stats,
            request_timeout,
            proposals_pending: metrics::gauge!("etcd_server_proposals_pending"),
            proposals_failed: metrics::counter!("etcd_server_proposals_failed_total"),
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

    /// Who sent a gRPC request (etcd's `AuthInfoFromCtx`): its token (`token` or the
    /// gateway's `authorization` metadata), or with `--client-cert-auth` its
    /// certificate's common name; nobody is an empty identity, which auth, once enabled,
    /// refuses as "user name is empty".
    pub async fn identify<T>(&self, request: &tonic::Request<T>) -> Result<AuthInfo, EtcdError> {
        let credentials = crate::auth::Credentials::of(request);
        self.identify_parts(credentials.token.as_deref(), credentials.certificate_name)
            .await
    }

    /// [`Core::identify`] from a token and a certificate name (the HTTP faces' entry).
    pub async fn identify_parts(
        &self,
        token: Option<&str>,
        certificate_name: Option<String>,
    ) -> Result<AuthInfo, EtcdError> {
        match self.auth.identify(token, certificate_name.clone()) {
            Ok(info) => Ok(info.unwrap_or_default()),
            Err(error) if token.is_some() && self.raft.status.leader() != 0 => {
                // A simple token another member issued may not be applied here yet:
                // catch up with the leader once before calling it invalid.
                if self.linearizable_barrier().await.is_err() {
                    return Err(error);
                }
                Ok(self
                    .auth
                    .identify(token, certificate_name)?
                    .unwrap_or_default())
            }
            Err(error) => Err(error),
        }
    }

    /// etcd's admin check of requests that never enter the log (snapshot, defragment,
    /// hash, member changes): the sender must hold the root role.
    pub async fn require_admin<T>(&self, request: &tonic::Request<T>) -> Result<(), EtcdError> {
        let info = self.identify(request).await?;
        self.auth.store.check_admin(&info)
    }

    /// etcd's quotaKVServer / quotaLeaseServer check, before a put, txn or lease grant
    /// of `cost` bytes is proposed: if it would take this member's store past its
    /// quota, this member raises the NOSPACE alarm through raft and the request gets
    /// "database space exceeded".
    pub async fn check_quota(&self, cost: u64) -> Result<(), EtcdError> {
        let size = self.backend.store().db_size().unwrap_or(0);
        if self.alarms.quota().fits(size, cost) {
            return Ok(());
        }
        let raise = concord_proto::etcdserverpb::AlarmRequest {
            action: concord_proto::etcdserverpb::alarm_request::AlarmAction::Activate as i32,
            member_id: self.member_id,
            alarm: concord_proto::etcdserverpb::AlarmType::Nospace as i32,
        };
        if let Err(error) = self.propose(internal_request::Request::Alarm(raise)).await {
            tracing::warn!("cannot raise the NOSPACE alarm: {}", error.message);
        }
        Err(EtcdError::no_space())
    }

    /// Until when a request refused for an old auth revision is tried again as of the
    /// current one. etcd's raftRequest loops until the request's context ends; here the
    /// context is the client's deadline (tonic drops the request when its `grpc-timeout`
    /// passes) and, for a client that sets none, one request timeout from now, so a
    /// caller racing endless user changes gets "revision of auth store is old" at last
    /// instead of holding a request worker for ever.
    pub fn auth_retry_deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.request_timeout
    }

    /// Proposes a client's write made by `who`: the entry carries the user and the auth
    /// revision the request was checked at, and the apply decides (etcd's
    /// `authApplierV3`), so a request proposed under an older auth state is refused.
    pub async fn propose_as(
        &self,
        who: &AuthInfo,
        request: internal_request::Request,
    ) -> Result<ApplyResult, EtcdError> {
        let header = |revision| RequestHeader {
            id: 0,
            username: who.username.clone(),
            auth_revision: revision,
        };
        // Users and roles changing under a request move the auth revision past the
        // caller's; etcd's raftRequest then proposes again as of the current revision.
        // Only a copy kept for that costs anything, so only those who may retry keep one.
        let mut again =
            (who.follows_current_revision && self.auth.store.is_enabled()).then(|| request.clone());
        let deadline = self.auth_retry_deadline();
        let mut outcome = self.propose_with(Some(header(who.revision)), request).await;
        while let Some(request) = again.take() {
            let refused_as_old = match &outcome {
                Ok(ApplyResult {
                    result: Some(apply_result::Result::Error(error)),
                }) => EtcdError::from_apply_error(error) == EtcdError::auth_old_revision(),
                Ok(_) => false,
                Err(error) => *error == EtcdError::auth_old_revision(),
            };
            if !refused_as_old || tokio::time::Instant::now() >= deadline {
                break;
            }
            again = Some(request.clone());
            let revision = self.auth.store.revision();
            outcome = self.propose_with(Some(header(revision)), request).await;
        }
        outcome
    }

    /// Proposes the member's own request (lease expiry, attributes): it carries no
    /// user and needs no permission. Client requests go through [`Core::propose_as`].
    pub async fn propose(
        &self,
        request: internal_request::Request,
    ) -> Result<ApplyResult, EtcdError> {
        self.propose_with(None, request).await
    }

    /// Proposes a write through raft (a follower's raft hands it to the leader) and
    /// returns its result once it is applied on this member, so the caller's next local
    /// read sees it.
    async fn propose_with(
        &self,
        header: Option<RequestHeader>,
        request: internal_request::Request,
    ) -> Result<ApplyResult, EtcdError> {
        let request = InternalRequest {
            header,
            request: Some(request),
        };
        let data = request.encode_to_vec();
        if data.len() as u64 > self.config.max_request_bytes {
            return Err(EtcdError::request_too_large());
        }
        // Pending from here until this call ends, however it ends (etcd's
        // proposalsPending); a proposal that errs or times out has failed.
        self.proposals_pending.increment(1.0);
        let _pending = scopeguard(|| self.proposals_pending.decrement(1.0));
        let outcome =
            match tokio::time::timeout(self.request_timeout, self.propose_encoded(data)).await {
                Ok(result) => result,
                Err(_) => Err(EtcdError::timeout()),
            };
        if outcome.is_err() {
            self.proposals_failed.increment(1);
        }
        outcome
    }

    async fn propose_encoded(&self, data: Vec<u8>) -> Result<ApplyResult, EtcdError> {
        // raft reports "leader changed" only for a proposal that will never commit (its
        // slot went to another entry, or the leader it was forwarded to lost its term):
        // sending it round again cannot apply it twice.
        let mut attempts = 0;
        loop {
            attempts += 1;
            self.require_leader()?;
            match self.raft.propose_local(data.clone()).await {
                Ok(completed) => return Ok(completed.result),
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
}

/// Runs `f` when dropped (also when the future holding it is cancelled).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// etcd's request timeout: 5 s plus two election timeouts.
pub fn request_timeout(config: &Config) -> Duration {
    Duration::from_secs(5) + 2 * config.election_timeout
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
