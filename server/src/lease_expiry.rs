//! The leader's lease expiry task: revokes expired leases and checkpoints remaining
//! TTLs through raft, asking the [`LeaseKeeper`] which are due.

use std::sync::Arc;
use std::time::Duration;

use concord_lease::DEFAULT_REVOKE_RATE;
use concord_proto::concordpb::{InternalRequest, internal_request};
use concord_proto::etcdserverpb::{LeaseCheckpoint, LeaseCheckpointRequest, LeaseRevokeRequest};
use prost::Message;
use tokio::sync::watch;

use crate::core::Core;
use crate::etcd_error::EtcdError;
use crate::state::leases::LeaseKeeper;

/// How often the leader looks for expired leases and due checkpoints.
const EXPIRY_TICK: Duration = Duration::from_millis(100);

/// Checkpoints proposed in one raft entry at most.
const MAX_CHECKPOINTS_PER_ENTRY: usize = 1000;

/// Proposes a request on this member only if it leads (never forwarded: a former
/// leader must not revoke leases the new leader keeps alive). The request is the
/// member's own: it carries no header, so the apply checks no permission (etcd revokes
/// expired leases as root; an empty user would be refused "user name is empty" by the
/// lease's keys once auth is on, and the lease would never expire).
pub async fn propose_as_leader(
    core: &Core,
    request: internal_request::Request,
) -> Result<(), EtcdError> {
    if !core.raft.status.is_leader() {
        return Err(EtcdError::not_leader());
    }
    let request = InternalRequest {
        header: None,
        request: Some(request),
    };
    core.raft.propose_local(request.encode_to_vec()).await?;
    Ok(())
}

/// The leader's expiry task: every tick, revokes the leases that expired (at most
/// etcd's 1000 per second, each its own proposal so one failure does not hold the
/// others back) and proposes due checkpoints. Does nothing on followers.
pub async fn run_expiry(
    core: Arc<Core>,
    keeper: Arc<LeaseKeeper>,
    mut shutdown: watch::Receiver<bool>,
) {
    let per_tick = (DEFAULT_REVOKE_RATE as u128 * EXPIRY_TICK.as_millis() / 1000).max(1) as usize;
    let mut ticker = tokio::time::interval(EXPIRY_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if !core.raft.status.is_leader() || !keeper.is_primary() {
            continue;
        }
        for id in keeper.expired(per_tick) {
            let core = core.clone();
            tokio::spawn(async move {
                let request = internal_request::Request::LeaseRevoke(LeaseRevokeRequest { id });
                match propose_as_leader(&core, request).await {
                    Ok(()) => {
                        metrics::counter!("etcd_debugging_server_lease_expired_total").increment(1);
                        tracing::debug!("revoked expired lease {id:x}")
                    }
                    Err(error) => tracing::debug!("revoking expired lease {id:x}: {error}"),
                }
            });
        }
        let due = keeper.due_checkpoints(MAX_CHECKPOINTS_PER_ENTRY);
        if !due.is_empty() {
            let checkpoints = due
                .into_iter()
                .map(|(id, remaining_ttl)| LeaseCheckpoint { id, remaining_ttl })
                .collect();
            let core = core.clone();
            tokio::spawn(async move {
                let request = internal_request::Request::LeaseCheckpoint(LeaseCheckpointRequest {
                    checkpoints,
                });
                if let Err(error) = propose_as_leader(&core, request).await {
                    tracing::debug!("lease checkpoint: {error}");
                }
            });
        }
    }
}
