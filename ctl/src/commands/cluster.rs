//! Membership and maintenance: `member`, `endpoint`, `alarm`, `defrag`,
//! `move-leader` and `snapshot save`.

use super::Context;
use crate::cli::AlarmCommand;
use crate::client::MAX_RECV_MSG_SIZE;
use crate::client::{Client, ClientConfig, Retry};
use crate::error::{CtlError, ExitCode, status_message};
use crate::printer::{EndpointHashKv, EndpointHealth, EndpointStatus, Format, MemberChange};
use concord_proto::etcdserverpb as pb;
use pb::kv_client::KvClient;
use std::future::Future;
use std::time::Instant;

pub(super) async fn member_list_response(
    client: &Client,
) -> Result<pb::MemberListResponse, CtlError> {
    client
        .call(
            Retry::Repeatable,
            pb::MemberListRequest::default(),
            |c, r| async move {
                pb::cluster_client::ClusterClient::new(c)
                    .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                    .member_list(r)
                    .await
            },
        )
        .await
}

pub(super) async fn member_list(ctx: &mut Context<'_>) -> Result<(), CtlError> {
    let client = ctx.client().await?;
    let resp = member_list_response(&client).await?;
    let out = ctx.printer.member_list(&resp)?;
    ctx.emit(&out)
}

fn member_id_arg(args: &[String]) -> Result<u64, CtlError> {
    let [id] = args else {
        return Err(CtlError::bad_args("member ID is not provided"));
    };
    u64::from_str_radix(id, 16).map_err(|_| {
        CtlError::bad_args(format!(
            "bad member ID arg (strconv.ParseUint: parsing {}: invalid syntax), expecting ID in Hex",
            crate::gofmt::quote(id.as_bytes())
        ))
    })
}

fn peer_urls_arg(peer_urls: &str) -> Result<Vec<String>, CtlError> {
    if peer_urls.is_empty() {
        return Err(CtlError::bad_args("member peer urls not provided"));
    }
    Ok(peer_urls.split(',').map(str::to_owned).collect())
}

pub(super) async fn member_add(
    args: Vec<String>,
    peer_urls: String,
    learner: bool,
    ctx: &mut Context<'_>,
) -> Result<(), CtlError> {
    let name = match args.as_slice() {
        [] => return Err(CtlError::bad_args("member name not provided")),
        [name] => name.clone(),
        _ => {
            let mut msg = String::from("too many arguments");
            for a in &args {
                if a.to_lowercase().starts_with("http") {
                    msg.push_str(&format!(", did you mean --peer-urls={a}"));
                }
            }
            return Err(CtlError::bad_args(msg));
        }
    };
    let urls = peer_urls_arg(&peer_urls)?;
    let client = ctx.client().await?;
    let req = pb::MemberAddRequest {
        peer_ur_ls: urls,
        is_learner: learner,
    };
    let resp = client
        .call(Retry::NonRepeatable, req, |c, r| async move {
            pb::cluster_client::ClusterClient::new(c)
                .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                .member_add(r)
                .await
        })
        .await?;
    let new_id = resp.member.as_ref().map_or(0, |m| m.id);
    let out = ctx.printer.member_change(
        MemberChange::Added,
        new_id,
        resp.header.as_ref(),
        prost::Message::encode_to_vec(&resp),
        || {
            crate::gojson::Obj::new()
                .msg("header", resp.header.as_ref().map(crate::gojson::header))
                .msg("member", resp.member.as_ref().map(crate::gojson::member))
                .msgs(
                    "members",
                    resp.members.iter().map(crate::gojson::member).collect(),
                )
                .finish()
        },
    )?;
    ctx.emit(&out)?;
    if ctx.printer.format == Some(Format::Simple) {
        // The environment a new member needs to join, from the latest member list.
        let list = member_list_response(&client).await?;
        let mut conf = Vec::new();
        for m in &list.members {
            for u in &m.peer_ur_ls {
                let n = if m.id == new_id {
                    name.as_str()
                } else {
                    m.name.as_str()
                };
                conf.push(format!("{n}={u}"));
            }
        }
        let q = |s: &str| crate::gofmt::quote(s.as_bytes());
        let text = format!(
            "\nETCD_NAME={}\nETCD_INITIAL_CLUSTER={}\nETCD_INITIAL_ADVERTISE_PEER_URLS={}\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n",
            q(&name),
            q(&conf.join(",")),
            q(&peer_urls)
        );
        ctx.emit(text.as_bytes())?;
    }
    Ok(())
}

fn members_json(header: Option<&pb::ResponseHeader>, members: &[pb::Member]) -> String {
    crate::gojson::Obj::new()
        .msg("header", header.map(crate::gojson::header))
        .msgs(
            "members",
            members.iter().map(crate::gojson::member).collect(),
        )
        .finish()
}

/// The answer to a change of an existing member: what etcdctl prints of it.
trait MemberChangeResponse: prost::Message {
    fn header(&self) -> Option<&pb::ResponseHeader>;
    fn members(&self) -> &[pb::Member];
}

macro_rules! member_change_response {
    ($($response:ty),*) => {$(
        impl MemberChangeResponse for $response {
            fn header(&self) -> Option<&pb::ResponseHeader> {
                self.header.as_ref()
            }
            fn members(&self) -> &[pb::Member] {
                &self.members
            }
        }
    )*};
}

member_change_response!(
    pb::MemberUpdateResponse,
    pb::MemberRemoveResponse,
    pb::MemberPromoteResponse
);

/// Sends a change of member `id` once (a member change is not safe to repeat) and
/// prints etcdctl's answer to it.
async fn change_member<T, R, F, Fut>(
    change: MemberChange,
    id: u64,
    request: T,
    send: F,
    ctx: &mut Context<'_>,
) -> Result<(), CtlError>
where
    T: Clone + prost::Message,
    R: MemberChangeResponse,
    F: Fn(pb::cluster_client::ClusterClient<tonic::transport::Channel>, tonic::Request<T>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
{
    let client = ctx.client().await?;
    let resp = client
        .call(Retry::NonRepeatable, request, |c, r| {
            send(
                pb::cluster_client::ClusterClient::new(c)
                    .max_decoding_message_size(MAX_RECV_MSG_SIZE),
                r,
            )
        })
        .await?;
    let out = ctx
        .printer
        .member_change(change, id, resp.header(), resp.encode_to_vec(), || {
            members_json(resp.header(), resp.members())
        })?;
    ctx.emit(&out)
}

pub(super) async fn member_update(
    args: Vec<String>,
    peer_urls: String,
    ctx: &mut Context<'_>,
) -> Result<(), CtlError> {
    let id = member_id_arg(&args)?;
    let request = pb::MemberUpdateRequest {
        id,
        peer_ur_ls: peer_urls_arg(&peer_urls)?,
    };
    change_member(
        MemberChange::Updated,
        id,
        request,
        |mut c, r| async move { c.member_update(r).await },
        ctx,
    )
    .await
}

pub(super) async fn member_remove(
    args: Vec<String>,
    ctx: &mut Context<'_>,
) -> Result<(), CtlError> {
    let id = member_id_arg(&args)?;
    change_member(
        MemberChange::Removed,
        id,
        pb::MemberRemoveRequest { id },
        |mut c, r| async move { c.member_remove(r).await },
        ctx,
    )
    .await
}

pub(super) async fn member_promote(
    args: Vec<String>,
    ctx: &mut Context<'_>,
) -> Result<(), CtlError> {
    let id = member_id_arg(&args)?;
    change_member(
        MemberChange::Promoted,
        id,
        pb::MemberPromoteRequest { id },
        |mut c, r| async move { c.member_promote(r).await },
        ctx,
    )
    .await
}

pub(super) async fn alarm(command: AlarmCommand, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    use pb::alarm_request::AlarmAction;
    use pb::maintenance_client::MaintenanceClient;
    let client = ctx.client().await?;
    let list = client
        .call(
            Retry::Repeatable,
            pb::AlarmRequest::default(),
            |c, r| async move {
                MaintenanceClient::new(c)
                    .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                    .alarm(r)
                    .await
            },
        )
        .await?;
    let resp = match command {
        AlarmCommand::List => list,
        AlarmCommand::Disarm => {
            // clientv3's AlarmDisarm: deactivate every raised alarm, one by one.
            let mut last = pb::AlarmResponse::default();
            for a in &list.alarms {
                let req = pb::AlarmRequest {
                    action: AlarmAction::Deactivate as i32,
                    member_id: a.member_id,
                    alarm: a.alarm,
                };
                last = client
                    .call(Retry::NonRepeatable, req, |c, r| async move {
                        MaintenanceClient::new(c)
                            .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                            .alarm(r)
                            .await
                    })
                    .await?;
            }
            last
        }
    };
    let out = ctx.printer.alarm(&resp)?;
    ctx.emit(&out)
}

pub(super) async fn defrag(cluster: bool, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    let endpoints = target_endpoints(cluster, ctx).await?;
    let mut failed = false;
    for ep in endpoints {
        let result = async {
            let client = Client::connect_to(&ctx.config, std::slice::from_ref(&ep)).await?;
            client
                .call(
                    Retry::NonRepeatable,
                    pb::DefragmentRequest::default(),
                    |c, r| async move {
                        pb::maintenance_client::MaintenanceClient::new(c)
                            .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                            .defragment(r)
                            .await
                    },
                )
                .await
        }
        .await;
        match result {
            Ok(_) => ctx.emit(format!("Finished defragmenting etcd member[{ep}]\n").as_bytes())?,
            Err(e) => {
                failed = true;
                ctx.emit_err(&format!(
                    "Failed to defragment etcd member[{ep}] ({})\n",
                    e.message
                ))?;
            }
        }
    }
    if failed {
        return Err(CtlError::silent(ExitCode::Error));
    }
    Ok(())
}

pub(super) async fn endpoint_hashkv(
    cluster: bool,
    rev: i64,
    ctx: &mut Context<'_>,
) -> Result<(), CtlError> {
    let endpoints = target_endpoints(cluster, ctx).await?;
    let mut list = Vec::new();
    // etcdctl reports each failure, prints what it has, then exits with the
    // last error as `Error: ...` (unlike endpoint status, which exits quietly).
    let mut failed = None;
    for ep in endpoints {
        let result = async {
            let client = Client::connect_to(&ctx.config, std::slice::from_ref(&ep)).await?;
            client
                .call(
                    Retry::Repeatable,
                    pb::HashKvRequest { revision: rev },
                    |c, r| async move {
                        pb::maintenance_client::MaintenanceClient::new(c)
                            .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                            .hash_kv(r)
                            .await
                    },
                )
                .await
        }
        .await;
        match result {
            Ok(hash) => list.push(EndpointHashKv { endpoint: ep, hash }),
            Err(e) => {
                ctx.emit_err(&format!(
                    "Failed to get the hash of endpoint {ep} ({})\n",
                    e.message
                ))?;
                failed = Some(e);
            }
        }
    }
    let out = ctx.printer.endpoint_hashkv(&list)?;
    ctx.emit(&out)?;
    match failed {
        Some(e) => Err(CtlError::error(e.message)),
        None => Ok(()),
    }
}

pub(super) async fn move_leader(args: Vec<String>, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    use pb::maintenance_client::MaintenanceClient;
    let [target] = args.as_slice() else {
        return Err(CtlError::bad_args("move-leader command needs 1 argument"));
    };
    let target = u64::from_str_radix(target, 16).map_err(|_| {
        CtlError::bad_args(format!(
            "strconv.ParseUint: parsing {}: invalid syntax",
            crate::gofmt::quote(target.as_bytes())
        ))
    })?;
    // The request must go to the current leader: find it among the endpoints.
    let mut leader = None;
    for ep in &ctx.config.endpoints {
        let client = Client::connect_to(&ctx.config, std::slice::from_ref(ep)).await?;
        let status = client
            .call(
                Retry::Repeatable,
                pb::StatusRequest::default(),
                |c, r| async move {
                    MaintenanceClient::new(c)
                        .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                        .status(r)
                        .await
                },
            )
            .await?;
        if status
            .header
            .as_ref()
            .is_some_and(|h| h.member_id == status.leader)
        {
            leader = Some((client, status.leader));
            break;
        }
    }
    let Some((client, leader_id)) = leader else {
        return Err(CtlError::bad_args(format!(
            "no leader endpoint given at [{}]",
            ctx.config.endpoints.join(" ")
        )));
    };
    let resp = client
        .call(
            Retry::NonRepeatable,
            pb::MoveLeaderRequest { target_id: target },
            |c, r| async move {
                MaintenanceClient::new(c)
                    .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                    .move_leader(r)
                    .await
            },
        )
        .await?;
    let out = ctx.printer.move_leader(leader_id, target, &resp)?;
    ctx.emit(&out)
}

/// `snapshot save`: streams the member's backend into `<path>.part`, syncs it
/// and renames it into place, so a partial download never looks complete.
pub(super) async fn snapshot_save(
    args: Vec<String>,
    ctx: &mut Context<'_>,
) -> Result<(), CtlError> {
    use std::io::Write as _;
    let [path] = args.as_slice() else {
        return Err(CtlError::bad_args("snapshot save expects one argument"));
    };
    let interrupted = |m: String| CtlError::new(ExitCode::Interrupted, m);
    if ctx.config.endpoints.len() != 1 {
        return Err(interrupted(format!(
            "snapshot must be requested to one selected node, not multiple [{}]",
            ctx.config.endpoints.join(" ")
        )));
    }
    let part = format!("{path}.part");
    let mut file = {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&part).map_err(|e| {
            interrupted(format!(
                "could not open {part} ({})",
                go_io_error(&e, "open", &part)
            ))
        })?
    };
    let client = ctx.client().await?;
    let download = async {
        let mut stream = pb::maintenance_client::MaintenanceClient::new(client.channel())
            .max_decoding_message_size(MAX_RECV_MSG_SIZE)
            .snapshot(client.request(pb::SnapshotRequest {}))
            .await
            .map_err(|s| status_message(&s))?
            .into_inner();
        while let Some(chunk) = stream.message().await.map_err(|s| status_message(&s))? {
            file.write_all(&chunk.blob).map_err(|e| e.to_string())?;
        }
        file.sync_all().map_err(|e| e.to_string())
    };
    match tokio::time::timeout(client.command_timeout(), download).await {
        Ok(Ok(())) => {}
        Ok(Err(message)) => return Err(interrupted(message)),
        Err(_) => return Err(interrupted("context deadline exceeded".to_owned())),
    }
    std::fs::rename(&part, path)
        .map_err(|e| interrupted(format!("could not rename {part} to {path} ({e})")))?;
    ctx.emit(format!("Snapshot saved at {path}\n").as_bytes())
}

/// Go's `*PathError` text, e.g. `open /x: no such file or directory`.
fn go_io_error(e: &std::io::Error, op: &str, path: &str) -> String {
    let reason = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    };
    format!("{op} {path}: {reason}")
}

/// The endpoints `endpoint` subcommands act on: the flag's, or with
/// `--cluster` every member's client URLs.
pub(super) async fn target_endpoints(
    cluster: bool,
    ctx: &Context<'_>,
) -> Result<Vec<String>, CtlError> {
    if !cluster {
        return Ok(ctx.config.endpoints.clone());
    }
    let mut cfg = ctx.config.clone();
    cfg.credentials = None; // MemberList needs no authentication
    let client = Client::connect(&cfg).await?;
    let members = member_list_response(&client).await.map_err(|e| {
        CtlError::error(format!(
            "failed to fetch endpoints from etcd cluster member list: {}",
            e.message
        ))
    })?;
    Ok(members
        .members
        .into_iter()
        .flat_map(|m| m.client_ur_ls)
        .collect())
}

pub(super) async fn endpoint_status(cluster: bool, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    let endpoints = target_endpoints(cluster, ctx).await?;
    let mut list = Vec::new();
    let mut failed = false;
    for ep in endpoints {
        let result = async {
            let client = Client::connect_to(&ctx.config, std::slice::from_ref(&ep)).await?;
            client
                .call(
                    Retry::Repeatable,
                    pb::StatusRequest::default(),
                    |c, r| async move {
                        pb::maintenance_client::MaintenanceClient::new(c)
                            .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                            .status(r)
                            .await
                    },
                )
                .await
        }
        .await;
        match result {
            Ok(status) => list.push(EndpointStatus {
                endpoint: ep,
                status,
            }),
            Err(e) => {
                failed = true;
                ctx.emit_err(&format!(
                    "Failed to get the status of endpoint {ep} ({})\n",
                    e.message
                ))?;
            }
        }
    }
    let out = ctx.printer.endpoint_status(&list)?;
    ctx.emit(&out)?;
    if failed {
        return Err(CtlError::silent(ExitCode::Error));
    }
    Ok(())
}

pub(super) async fn check_health(config: &ClientConfig, ep: String) -> EndpointHealth {
    let start = Instant::now();
    let client = match Client::connect_to(config, std::slice::from_ref(&ep)).await {
        Ok(c) => c,
        Err(e) => {
            return EndpointHealth {
                endpoint: ep,
                health: false,
                took: crate::gofmt::duration(start.elapsed()),
                error: e.message,
            };
        }
    };
    let req = pb::RangeRequest {
        key: b"health".to_vec(),
        ..Default::default()
    };
    let result = client
        .call(Retry::Repeatable, req, |c, r| async move {
            KvClient::new(c)
                .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                .range(r)
                .await
        })
        .await;
    let took = crate::gofmt::duration(start.elapsed());
    let mut health = EndpointHealth {
        endpoint: ep,
        health: false,
        took,
        error: String::new(),
    };
    match result {
        Ok(_) => health.health = true,
        // Permission denied still proves the proposal went through consensus.
        Err(e) if e.message == "etcdserver: permission denied" => health.health = true,
        Err(e) => health.error = e.message,
    }
    if health.health {
        let alarms = client
            .call(
                Retry::Repeatable,
                pb::AlarmRequest::default(),
                |c, r| async move {
                    pb::maintenance_client::MaintenanceClient::new(c)
                        .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                        .alarm(r)
                        .await
                },
            )
            .await;
        match alarms {
            Ok(resp) if !resp.alarms.is_empty() => {
                health.health = false;
                let mut text = String::from("Active Alarm(s): ");
                for a in &resp.alarms {
                    text.push_str(match pb::AlarmType::try_from(a.alarm) {
                        Ok(pb::AlarmType::Nospace) => "NOSPACE ",
                        Ok(pb::AlarmType::Corrupt) => "CORRUPT ",
                        _ => "UNKNOWN ",
                    });
                }
                health.error = text;
            }
            Ok(_) => {}
            Err(_) => {
                health.health = false;
                health.error = "Unable to fetch the alarm list".to_owned();
            }
        }
    }
    health
}

pub(super) async fn endpoint_health(cluster: bool, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    let endpoints = target_endpoints(cluster, ctx).await?;
    let checks = endpoints
        .into_iter()
        .map(|ep| check_health(&ctx.config, ep));
    let list = futures::future::join_all(checks).await;
    let (out, err) = ctx.printer.endpoint_health(&list)?;
    ctx.emit(&out)?;
    ctx.emit_err(&err)?;
    if list.iter().any(|h| !h.health) {
        return Err(CtlError::error("unhealthy cluster"));
    }
    Ok(())
}
