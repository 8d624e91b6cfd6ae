//! Membership changes as etcd 3.4 makes them: one member per change, each a single-step
//! raft conf change (`MemberAdd`, `MemberRemove`, `MemberPromote`) or a replicated
//! request (`MemberUpdate`: raft has no conf change for peer URLs).
//!
//! Every change is decided on the leader, which alone knows how far each member's log
//! matches its own and whom it heard from lately: a follower checks its caller's
//! permission itself (etcd proposes on the follower, where the caller is known by its
//! token or its client certificate), then hands the request to the leader over the peer
//! link, as etcd forwards a promotion to its leader's peer URL. The leader checks the
//! rules of etcd's `ValidateConfigurationChange` against its applied membership (no
//! other conf change can be pending: raft-core refuses a second one), and with
//! `--strict-reconfig-check` etcd's quorum rules (`IsReadyToAddVotingMember`,
//! `IsReadyToRemoveVotingMember`, `IsReadyToPromoteMember`, `isConnectedFullySince`),
//! reading "started" as etcd does (the member published its name) and "connected" from
//! raft's view of who answered within the last election timeout.

use concord_proto::concordpb::internal_request;
use concord_proto::concordpb::peer_client::PeerClient;
use concord_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberPromoteRequest, MemberPromoteResponse,
    MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use concord_raft_core::codec;
use prost::Message;
use raft::eraftpb::ConfChangeV2;
use url::Url;

use crate::config::url_text;
use crate::core::{Core, expect_result};
use crate::driver::Progress;
use crate::etcd_error::EtcdError;
use crate::state::membership::{Membership, member_id};

/// `MemberAdd`: a new member (a learner if asked), with an id etcd's way (its peer URLs
/// and the time of the request).
pub async fn add(core: &Core, request: MemberAddRequest) -> Result<MemberAddResponse, EtcdError> {
    if !core.raft.status.is_leader() {
        return forward(core, request, |mut client, request| async move {
            client.member_add(request).await
        })
        .await;
    }
    let urls = parse_urls(&request.peer_ur_ls)?;
    let peer_urls: Vec<String> = urls.iter().map(url_text).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let member = Member {
        id: member_id(&urls, "", Some(now)),
        name: String::new(),
        peer_ur_ls: peer_urls.clone(),
        client_ur_ls: Vec::new(),
        is_learner: request.is_learner,
    };
    let membership = core.membership.read().clone();
    membership.check_add(member.id, &peer_urls, member.is_learner)?;
    if core.config.strict_reconfig_check {
        let progress = leader_progress(core).await?;
        ready_to_add(&membership, &progress, core.member_id, member.is_learner)?;
    }
    let change = if member.is_learner {
        codec::add_learner(member.id)
    } else {
        codec::add_voter(member.id)
    };
    configure(core, change, &member).await?;
    Ok(MemberAddResponse {
        header: Some(core.header(0)),
        member: Some(member),
        members: members(core),
    })
}

/// `MemberRemove`.
pub async fn remove(
    core: &Core,
    request: MemberRemoveRequest,
) -> Result<MemberRemoveResponse, EtcdError> {
    if !core.raft.status.is_leader() {
        return forward(core, request, |mut client, request| async move {
            client.member_remove(request).await
        })
        .await;
    }
    let membership = core.membership.read().clone();
    membership.check_remove(request.id)?;
    let is_learner = membership.get(request.id).is_some_and(|m| m.is_learner);
    if core.config.strict_reconfig_check && !is_learner {
        let progress = leader_progress(core).await?;
        ready_to_remove_voter(&membership, &progress, core.member_id, request.id)?;
    }
    let described = membership.get(request.id).cloned().unwrap_or_default();
    configure(core, codec::remove_node(request.id), &described).await?;
    Ok(MemberRemoveResponse {
        header: Some(core.header(0)),
        members: members(core),
    })
}

/// `MemberPromote`: a learner whose log is in sync with the leader's becomes a voter.
pub async fn promote(
    core: &Core,
    request: MemberPromoteRequest,
) -> Result<MemberPromoteResponse, EtcdError> {
    if !core.raft.status.is_leader() {
        return forward(core, request, |mut client, request| async move {
            client.member_promote(request).await
        })
        .await;
    }
    let progress = leader_progress(core).await?;
    if !progress.in_sync(request.id) {
        return Err(EtcdError::learner_not_ready());
    }
    let membership = core.membership.read().clone();
    if core.config.strict_reconfig_check {
        ready_to_promote(&membership, core.member_id)?;
    }
    membership.check_promote(request.id)?;
    let described = membership.get(request.id).cloned().unwrap_or_default();
    configure(core, codec::promote_learner(request.id), &described).await?;
    Ok(MemberPromoteResponse {
        header: Some(core.header(0)),
        members: members(core),
    })
}

/// `MemberUpdate`: a member's peer URLs, checked again when applied.
pub async fn update(
    core: &Core,
    request: MemberUpdateRequest,
) -> Result<MemberUpdateResponse, EtcdError> {
    let urls = parse_urls(&request.peer_ur_ls)?;
    let request = MemberUpdateRequest {
        id: request.id,
        peer_ur_ls: urls.iter().map(url_text).collect(),
    };
    core.membership
        .read()
        .check_update(request.id, &request.peer_ur_ls)?;
    let result = core
        .propose(internal_request::Request::MemberUpdate(request))
        .await?;
    expect_result(result, |_| Some(()))?;
    Ok(MemberUpdateResponse {
        header: Some(core.header(0)),
        members: members(core),
    })
}

fn members(core: &Core) -> Vec<Member> {
    core.membership.read().members().cloned().collect()
}

/// etcd's `types.NewURLs`: every URL parses, is http(s) and names a host and port.
fn parse_urls(texts: &[String]) -> Result<Vec<Url>, EtcdError> {
    if texts.is_empty() {
        return Err(EtcdError::member_bad_urls());
    }
    texts
        .iter()
        .map(|text| {
            let url = Url::parse(text).map_err(|_| EtcdError::member_bad_urls())?;
            let scheme_ok = matches!(url.scheme(), "http" | "https" | "unix" | "unixs");
            if !scheme_ok || url.host_str().is_none_or(str::is_empty) || url.port().is_none() {
                return Err(EtcdError::member_bad_urls());
            }
            Ok(url)
        })
        .collect()
}

/// Proposes one conf change describing `member` and waits until it is applied here.
async fn configure(
    core: &Core,
    mut change: ConfChangeV2,
    member: &Member,
) -> Result<(), EtcdError> {
    change.context = member.encode_to_vec().into();
    let timeout = crate::core::request_timeout(&core.config);
    match tokio::time::timeout(timeout, core.raft.conf_change(change)).await {
        Ok(result) => result.map(|_| ()),
        Err(_) => Err(EtcdError::timeout()),
    }
}

async fn leader_progress(core: &Core) -> Result<Progress, EtcdError> {
    core.raft
        .progress()
        .await?
        .ok_or_else(EtcdError::not_leader)
}

/// A voter has started once it published its name (etcd's `IsStarted`). The member
/// answering is serving, so it has started even if its name is still on its way
/// (etcd serves clients only after publishing; Concord may serve a moment before).
fn started(member: &Member, local_id: u64) -> bool {
    member.id == local_id || !member.name.is_empty()
}

/// etcd's `mayAddMember`: a voter needs a quorum of started members to come; a learner
/// or a voter, every voter connected.
fn ready_to_add(
    membership: &Membership,
    progress: &Progress,
    local_id: u64,
    is_learner: bool,
) -> Result<(), EtcdError> {
    let voters: Vec<&Member> = membership.voters().collect();
    let members = voters.len() + 1;
    let started = voters.iter().filter(|m| started(m, local_id)).count();
    // Adding a second member to a one-member cluster (restoring a backup) is allowed.
    let restoring = started == 1 && members == 2;
    if !is_learner && !restoring && started < members / 2 + 1 {
        return Err(EtcdError::member_not_enough_started());
    }
    let all_connected = voters
        .iter()
        .all(|m| m.id == local_id || progress.active.contains(&m.id));
    if !all_connected {
        return Err(EtcdError::unhealthy());
    }
    Ok(())
}

fn ready_to_remove_voter(
    membership: &Membership,
    progress: &Progress,
    local_id: u64,
    id: u64,
) -> Result<(), EtcdError> {
    let remaining: Vec<&Member> = membership.voters().filter(|m| m.id != id).collect();
    let started = remaining.iter().filter(|m| started(m, local_id)).count();
    if started < remaining.len() / 2 + 1 {
        return Err(EtcdError::member_not_enough_started());
    }
    // A member that is down is safe to remove: it is not part of the active quorum.
    if id != local_id && !progress.active.contains(&id) {
        return Ok(());
    }
    let voters: Vec<&Member> = membership.voters().collect();
    let active = voters
        .iter()
        .filter(|m| m.id == local_id || progress.active.contains(&m.id))
        .count();
    if active.saturating_sub(1) < 1 + (voters.len().saturating_sub(1)) / 2 {
        return Err(EtcdError::unhealthy());
    }
    Ok(())
}

fn ready_to_promote(membership: &Membership, local_id: u64) -> Result<(), EtcdError> {
    // The learner counts as a started member of the configuration to come.
    let voters: Vec<&Member> = membership.voters().collect();
    let members = voters.len() + 1;
    let started = voters.iter().filter(|m| started(m, local_id)).count() + 1;
    if started < members / 2 + 1 {
        return Err(EtcdError::member_not_enough_started());
    }
    Ok(())
}

/// Hands a member change to the leader over the peer link (its peer URLs in turn, with
/// the peer TLS settings) and returns its answer as is. The caller's permission was
/// checked here: the leader makes the change a member asks for.
async fn forward<Q, T, F, Fut>(core: &Core, request: Q, call: F) -> Result<T, EtcdError>
where
    Q: Clone,
    F: Fn(PeerClient<tonic::transport::Channel>, tonic::Request<Q>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let leader = core.require_leader()?;
    let urls = core.membership.read().peer_urls(leader);
    let tls = crate::tls::peer_client_config(&core.config)
        .map_err(|e| EtcdError::internal(e.to_string()))?;
    let timeout = crate::core::request_timeout(&core.config);
    let deadline = tokio::time::Instant::now() + timeout;
    for url in &urls {
        let Ok(Ok(channel)) =
            tokio::time::timeout_at(deadline, crate::transport::connect(url, tls.clone())).await
        else {
            continue;
        };
        let message =
            crate::transport::peer_request(request.clone(), (core.member_id, core.cluster_id));
        return match tokio::time::timeout_at(deadline, call(PeerClient::new(channel), message))
            .await
        {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(EtcdError {
                code: status.code(),
                message: status.message().to_string(),
            }),
            Err(_) => Err(EtcdError::timeout()),
        };
    }
    Err(if urls.is_empty() {
        EtcdError::not_leader()
    } else {
        EtcdError::timeout_due_to_connection_lost()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str, is_learner: bool) -> Member {
        Member {
            id,
            name: name.into(),
            peer_ur_ls: vec![format!("http://127.0.0.1:{id}")],
            client_ur_ls: Vec::new(),
            is_learner,
        }
    }

    fn progress(active: &[u64]) -> Progress {
        Progress {
            leader_id: 1,
            matched: Default::default(),
            active: active.iter().copied().collect(),
        }
    }

    fn membership(members: &[Member]) -> Membership {
        let dir = tempfile::tempdir().unwrap();
        let store = concord_mvcc::Store::open(dir.path(), Default::default()).unwrap();
        let mut table = Membership::default();
        let mut batch = store.write_batch();
        for m in members {
            table.upsert(m.clone(), &mut batch);
        }
        table
    }

    #[test]
    fn strict_checks_follow_etcd() {
        // Three started voters, one of them unreachable: adding a voter would leave the
        // cluster without an active quorum.
        let three = membership(&[
            member(1, "a", false),
            member(2, "b", false),
            member(3, "c", false),
        ]);
        assert_eq!(
            ready_to_add(&three, &progress(&[1, 2]), 1, false),
            Err(EtcdError::unhealthy())
        );
        // So would a learner, in etcd 3.4: every voter must be connected for any add.
        assert_eq!(
            ready_to_add(&three, &progress(&[1, 2]), 1, true),
            Err(EtcdError::unhealthy())
        );
        assert_eq!(
            ready_to_add(&three, &progress(&[1, 2, 3]), 1, false),
            Ok(())
        );
        // Removing a member that is down is always allowed; removing a live one while
        // another is down would break the active quorum.
        assert_eq!(
            ready_to_remove_voter(&three, &progress(&[1, 2]), 1, 3),
            Ok(())
        );
        assert_eq!(
            ready_to_remove_voter(&three, &progress(&[1, 2]), 1, 2),
            Err(EtcdError::unhealthy())
        );
        // A voter that never started counts against the quorum of started members.
        let unstarted = membership(&[
            member(1, "a", false),
            member(2, "", false),
            member(3, "", false),
        ]);
        assert_eq!(
            ready_to_add(&unstarted, &progress(&[1, 2, 3]), 1, false),
            Err(EtcdError::member_not_enough_started())
        );
        // A learner does not count towards the quorum: the started check is the voters'.
        assert_eq!(
            ready_to_add(&unstarted, &progress(&[1, 2, 3]), 1, true),
            Ok(())
        );
        // One started member adding a second (restoring a backup) is fine.
        let one = membership(&[member(1, "a", false)]);
        assert_eq!(ready_to_add(&one, &progress(&[1]), 1, false), Ok(()));
        assert_eq!(ready_to_promote(&one, 1), Ok(()));
    }

    #[test]
    fn membership_rules_use_etcds_errors() {
        let table = membership(&[member(1, "a", false), member(2, "b", true)]);
        assert_eq!(
            table.check_add(9, &["http://127.0.0.1:1".into()], false),
            Err(EtcdError::peer_url_exist())
        );
        assert_eq!(
            table.check_add(9, &["http://127.0.0.1:9".into()], true),
            Err(EtcdError::too_many_learners())
        );
        assert_eq!(table.check_promote(1), Err(EtcdError::member_not_learner()));
        assert_eq!(table.check_promote(7), Err(EtcdError::member_not_found()));
        assert_eq!(table.check_remove(7), Err(EtcdError::member_not_found()));
        assert_eq!(table.check_promote(2), Ok(()));
        let in_sync = Progress {
            leader_id: 1,
            matched: [(1, 100), (2, 89)].into_iter().collect(),
            active: Default::default(),
        };
        assert!(!in_sync.in_sync(2), "89 of 100 is below etcd's 90%");
        assert!(
            in_sync.in_sync(7),
            "unknown members are left to the apply checks"
        );
        assert_eq!(
            EtcdError::learner_not_ready().message,
            "etcdserver: can only promote a learner member which is in sync with leader"
        );
    }
}
