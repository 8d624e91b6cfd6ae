//! The commands: each turns parsed arguments into requests, sends them, and
//! writes what etcdctl would print.

use crate::cli::{self, AlarmCommand, Command, EndpointCommand, LeaseCommand, MemberCommand};
use crate::client::{Client, ClientConfig, Retry};
use crate::error::{CtlError, ExitCode, status_message};
use crate::kv::{self, DelOptions, GetOptions, PutOptions};
use crate::printer::{
    EndpointHashKv, EndpointHealth, EndpointStatus, Format, MemberChange, Printer,
};
use concord_proto::etcdserverpb as pb;
use pb::kv_client::KvClient;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::time::Instant;

/// The etcdctl release whose interface and output concordctl reproduces.
pub const ETCDCTL_COMPAT_VERSION: &str = "3.4.23";
/// The API version etcdctl 3.4 reports.
pub const API_VERSION: &str = "3.4";

/// Everything a command needs besides its own arguments.
pub struct Context<'a> {
    pub config: ClientConfig,
    pub printer: Printer,
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    pub stdin: &'a mut dyn std::io::BufRead,
}

impl Context<'_> {
    fn emit(&mut self, bytes: &[u8]) -> Result<(), CtlError> {
        self.out
            .write_all(bytes)
            .and_then(|()| self.out.flush())
            .map_err(|e| CtlError::new(ExitCode::Io, e.to_string()))
    }

    fn emit_err(&mut self, text: &str) -> Result<(), CtlError> {
        self.err
            .write_all(text.as_bytes())
            .map_err(|e| CtlError::new(ExitCode::Io, e.to_string()))
    }

    pub(crate) async fn client(&self) -> Result<Client, CtlError> {
        Client::connect(&self.config).await
    }
}

fn bytes_args(args: &[OsString]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

/// Runs one parsed command.
pub async fn run(command: Command, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    match command {
        Command::Put(a) => put(a, ctx).await,
        Command::Get(a) => get(a, ctx).await,
        Command::Del(a) => del(a, ctx).await,
        Command::Txn(a) => txn(a, ctx).await,
        Command::Compaction(a) => compaction(a, ctx).await,
        Command::Endpoint(a) => match a.command {
            EndpointCommand::Health => endpoint_health(a.cluster, ctx).await,
            EndpointCommand::Status => endpoint_status(a.cluster, ctx).await,
            EndpointCommand::Hashkv { rev } => endpoint_hashkv(a.cluster, rev, ctx).await,
        },
        Command::Member(a) => match a.command {
            MemberCommand::List => member_list(ctx).await,
            MemberCommand::Add {
                args,
                peer_urls,
                learner,
            } => member_add(args, peer_urls, learner, ctx).await,
            MemberCommand::Update { args, peer_urls } => member_update(args, peer_urls, ctx).await,
            MemberCommand::Remove { args } => member_remove(args, ctx).await,
            MemberCommand::Promote { args } => member_promote(args, ctx).await,
        },
        Command::Alarm(a) => alarm(a.command, ctx).await,
        Command::Defrag(a) => defrag(a.cluster, ctx).await,
        Command::MoveLeader { args } => move_leader(args, ctx).await,
        Command::Snapshot(a) => match a.command {
            cli::SnapshotCommand::Save { args } => snapshot_save(args, ctx).await,
        },
        Command::Auth(a) => crate::auth::auth(a.command, ctx).await,
        Command::User(a) => crate::auth::user(a.command, ctx).await,
        Command::Role(a) => crate::auth::role(a.command, ctx).await,
        Command::Lease(a) => lease(a.command, ctx).await,
        Command::Watch(a) => watch(a, ctx).await,
        Command::Version => {
            let text =
                format!("etcdctl version: {ETCDCTL_COMPAT_VERSION}\nAPI version: {API_VERSION}\n");
            ctx.emit(text.as_bytes())
        }
    }
}

async fn put(a: cli::PutArgs, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    let args = bytes_args(&a.args);
    let stdin_value = if args.len() < 2 && !a.ignore_value && !args.is_empty() {
        let mut buf = Vec::new();
        ctx.stdin
            .read_to_end(&mut buf)
            .map_err(|e| CtlError::new(ExitCode::Io, e.to_string()))?;
        Some(buf)
    } else {
        None
    };
    let opts = PutOptions {
        lease: a.lease,
        prev_kv: a.prev_kv,
        ignore_value: a.ignore_value,
        ignore_lease: a.ignore_lease,
    };
    let req = kv::put_request(&args, stdin_value, &opts)?;
    let client = ctx.client().await?;
    let resp = client
        .call(Retry::NonRepeatable, req, |c, r| async move {
            KvClient::new(c).put(r).await
        })
        .await?;
    let out = ctx.printer.put(&resp)?;
    ctx.emit(&out)
}

async fn get(a: cli::GetArgs, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    let opts = GetOptions {
        consistency: a.consistency,
        order: a.order,
        sort_by: a.sort_by,
        limit: a.limit,
        prefix: a.prefix,
        from_key: a.from_key,
        rev: a.rev,
        keys_only: a.keys_only,
        count_only: a.count_only,
    };
    let req = kv::get_request(&bytes_args(&a.args), &opts)?;
    let client = ctx.client().await?;
    let resp = client
        .call(Retry::Repeatable, req, |c, r| async move {
            KvClient::new(c).range(r).await
        })
        .await?;
    if a.count_only && ctx.printer.format != Some(Format::Fields) {
        return Err(CtlError::bad_args(
            "--count-only is only for `--write-out=fields`",
        ));
    }
    let mut printer = ctx.printer;
    if a.print_value_only {
        if printer.format != Some(Format::Simple) {
            return Err(CtlError::bad_args(
                "print-value-only is only for `--write-out=simple`",
            ));
        }
        printer.value_only = true;
    }
    let out = printer.get(&resp)?;
    ctx.emit(&out)
}

async fn del(a: cli::DelArgs, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    let opts = DelOptions {
        prefix: a.prefix,
        prev_kv: a.prev_kv,
        from_key: a.from_key,
    };
    let req = kv::delete_request(&bytes_args(&a.args), &opts)?;
    let client = ctx.client().await?;
    let resp = client
        .call(Retry::NonRepeatable, req, |c, r| async move {
            KvClient::new(c).delete_range(r).await
        })
        .await?;
    let out = ctx.printer.del(&resp)?;
    ctx.emit(&out)
}

fn txn_is_mutable(txn: &pb::TxnRequest) -> bool {
    use pb::request_op::Request;
    txn.success
        .iter()
        .chain(&txn.failure)
        .any(|op| match &op.request {
            Some(Request::RequestRange(_)) | None => false,
            Some(Request::RequestTxn(inner)) => txn_is_mutable(inner),
            Some(_) => true,
        })
}

async fn txn(a: cli::TxnArgs, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    if !a.args.is_empty() {
        return Err(CtlError::bad_args("txn command does not accept argument"));
    }
    let req = crate::txn::read_txn(&mut ctx.stdin, a.interactive, &mut ctx.out)?;
    let retry = if txn_is_mutable(&req) {
        Retry::NonRepeatable
    } else {
        Retry::Repeatable
    };
    let client = ctx.client().await?;
    let resp = client
        .call(
            retry,
            req,
            |c, r| async move { KvClient::new(c).txn(r).await },
        )
        .await?;
    let out = ctx.printer.txn(&resp)?;
    ctx.emit(&out)
}

async fn compaction(a: cli::CompactionArgs, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    let [rev] = a.args.as_slice() else {
        return Err(CtlError::bad_args("compaction command needs 1 argument"));
    };
    let revision = kv::parse_decimal(rev).map_err(CtlError::error)?;
    let req = pb::CompactionRequest {
        revision,
        physical: a.physical,
    };
    let client = ctx.client().await?;
    client
        .call(Retry::Repeatable, req, |c, r| async move {
            KvClient::new(c).compact(r).await
        })
        .await?;
    ctx.emit(format!("compacted revision {revision}\n").as_bytes())
}

async fn member_list_response(client: &Client) -> Result<pb::MemberListResponse, CtlError> {
    client
        .call(
            Retry::Repeatable,
            pb::MemberListRequest::default(),
            |c, r| async move {
                pb::cluster_client::ClusterClient::new(c)
                    .member_list(r)
                    .await
            },
        )
        .await
}

async fn member_list(ctx: &mut Context<'_>) -> Result<(), CtlError> {
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

async fn member_add(
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
                .member_add(r)
                .await
        })
        .await?;
    let new_id = resp.member.as_ref().map_or(0, |m| m.id);
    let out =
        ctx.printer
            .member_change(MemberChange::Added, new_id, resp.header.as_ref(), || {
                crate::gojson::Obj::new()
                    .msg("header", resp.header.as_ref().map(crate::gojson::header))
                    .msg("member", resp.member.as_ref().map(crate::gojson::member))
                    .msgs(
                        "members",
                        resp.members.iter().map(crate::gojson::member).collect(),
                    )
                    .finish()
            })?;
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

async fn member_update(
    args: Vec<String>,
    peer_urls: String,
    ctx: &mut Context<'_>,
) -> Result<(), CtlError> {
    let id = member_id_arg(&args)?;
    let urls = peer_urls_arg(&peer_urls)?;
    let client = ctx.client().await?;
    let req = pb::MemberUpdateRequest {
        id,
        peer_ur_ls: urls,
    };
    let resp = client
        .call(Retry::NonRepeatable, req, |c, r| async move {
            pb::cluster_client::ClusterClient::new(c)
                .member_update(r)
                .await
        })
        .await?;
    let out = ctx
        .printer
        .member_change(MemberChange::Updated, id, resp.header.as_ref(), || {
            members_json(resp.header.as_ref(), &resp.members)
        })?;
    ctx.emit(&out)
}

async fn member_remove(args: Vec<String>, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    let id = member_id_arg(&args)?;
    let client = ctx.client().await?;
    let resp = client
        .call(
            Retry::NonRepeatable,
            pb::MemberRemoveRequest { id },
            |c, r| async move {
                pb::cluster_client::ClusterClient::new(c)
                    .member_remove(r)
                    .await
            },
        )
        .await?;
    let out = ctx
        .printer
        .member_change(MemberChange::Removed, id, resp.header.as_ref(), || {
            members_json(resp.header.as_ref(), &resp.members)
        })?;
    ctx.emit(&out)
}

async fn member_promote(args: Vec<String>, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    let id = member_id_arg(&args)?;
    let client = ctx.client().await?;
    let resp = client
        .call(
            Retry::NonRepeatable,
            pb::MemberPromoteRequest { id },
            |c, r| async move {
                pb::cluster_client::ClusterClient::new(c)
                    .member_promote(r)
                    .await
            },
        )
        .await?;
    let out =
        ctx.printer
            .member_change(MemberChange::Promoted, id, resp.header.as_ref(), || {
                members_json(resp.header.as_ref(), &resp.members)
            })?;
    ctx.emit(&out)
}

async fn alarm(command: AlarmCommand, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    use pb::alarm_request::AlarmAction;
    use pb::maintenance_client::MaintenanceClient;
    let client = ctx.client().await?;
    let list = client
        .call(
            Retry::Repeatable,
            pb::AlarmRequest::default(),
            |c, r| async move { MaintenanceClient::new(c).alarm(r).await },
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
                        MaintenanceClient::new(c).alarm(r).await
                    })
                    .await?;
            }
            last
        }
    };
    let out = ctx.printer.alarm(&resp)?;
    ctx.emit(&out)
}

async fn defrag(cluster: bool, ctx: &mut Context<'_>) -> Result<(), CtlError> {
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

async fn endpoint_hashkv(cluster: bool, rev: i64, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    let endpoints = target_endpoints(cluster, ctx).await?;
    let mut list = Vec::new();
    let mut failed = false;
    for ep in endpoints {
        let result = async {
            let client = Client::connect_to(&ctx.config, std::slice::from_ref(&ep)).await?;
            client
                .call(
                    Retry::Repeatable,
                    pb::HashKvRequest { revision: rev },
                    |c, r| async move {
                        pb::maintenance_client::MaintenanceClient::new(c)
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
                failed = true;
                ctx.emit_err(&format!(
                    "Failed to get the hash of endpoint {ep} ({})\n",
                    e.message
                ))?;
            }
        }
    }
    let out = ctx.printer.endpoint_hashkv(&list)?;
    ctx.emit(&out)?;
    if failed {
        return Err(CtlError::silent(ExitCode::Error));
    }
    Ok(())
}

async fn move_leader(args: Vec<String>, ctx: &mut Context<'_>) -> Result<(), CtlError> {
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
                |c, r| async move { MaintenanceClient::new(c).status(r).await },
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
            |c, r| async move { MaintenanceClient::new(c).move_leader(r).await },
        )
        .await?;
    let out = ctx.printer.move_leader(leader_id, target, &resp)?;
    ctx.emit(&out)
}

/// `snapshot save`: streams the member's backend into `<path>.part`, syncs it
/// and renames it into place, so a partial download never looks complete.
async fn snapshot_save(args: Vec<String>, ctx: &mut Context<'_>) -> Result<(), CtlError> {
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
async fn target_endpoints(cluster: bool, ctx: &Context<'_>) -> Result<Vec<String>, CtlError> {
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

async fn endpoint_status(cluster: bool, ctx: &mut Context<'_>) -> Result<(), CtlError> {
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

async fn check_health(config: &ClientConfig, ep: String) -> EndpointHealth {
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
            KvClient::new(c).range(r).await
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

async fn endpoint_health(cluster: bool, ctx: &mut Context<'_>) -> Result<(), CtlError> {
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

fn lease_id_arg(s: &str) -> Result<i64, CtlError> {
    kv::parse_hex_lease(s)
        .map_err(|e| CtlError::bad_args(format!("bad lease ID arg ({e}), expecting ID in Hex")))
}

async fn lease(command: LeaseCommand, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    use pb::lease_client::LeaseClient;
    match command {
        LeaseCommand::Grant { args } => {
            let [ttl] = args.as_slice() else {
                return Err(CtlError::bad_args("lease grant command needs TTL argument"));
            };
            let ttl =
                kv::parse_decimal(ttl).map_err(|e| CtlError::bad_args(format!("bad TTL ({e})")))?;
            let client = ctx.client().await?;
            let resp = client
                .call(
                    Retry::NonRepeatable,
                    pb::LeaseGrantRequest { ttl, id: 0 },
                    |c, r| async move { LeaseClient::new(c).lease_grant(r).await },
                )
                .await
                .map_err(|e| CtlError::error(format!("failed to grant lease ({})", e.message)))?;
            let out = ctx.printer.lease_grant(&resp)?;
            ctx.emit(&out)
        }
        LeaseCommand::Revoke { args } => {
            let [id] = args.as_slice() else {
                return Err(CtlError::bad_args("lease revoke command needs 1 argument"));
            };
            let id = lease_id_arg(id)?;
            let client = ctx.client().await?;
            let resp = client
                .call(
                    Retry::NonRepeatable,
                    pb::LeaseRevokeRequest { id },
                    |c, r| async move { LeaseClient::new(c).lease_revoke(r).await },
                )
                .await
                .map_err(|e| CtlError::error(format!("failed to revoke lease ({})", e.message)))?;
            let out = ctx.printer.lease_revoke(id, &resp)?;
            ctx.emit(&out)
        }
        LeaseCommand::Timetolive { args, keys } => {
            let [id] = args.as_slice() else {
                return Err(CtlError::bad_args(
                    "lease timetolive command needs lease ID as argument",
                ));
            };
            let id = lease_id_arg(id)?;
            let client = ctx.client().await?;
            let resp = client
                .call(
                    Retry::Repeatable,
                    pb::LeaseTimeToLiveRequest { id, keys },
                    |c, r| async move { LeaseClient::new(c).lease_time_to_live(r).await },
                )
                .await
                .map_err(|e| CtlError::new(ExitCode::BadConnection, e.message))?;
            let out = ctx.printer.lease_time_to_live(&resp, keys)?;
            ctx.emit(&out)
        }
        LeaseCommand::List => {
            let client = ctx.client().await?;
            let resp = client
                .call(
                    Retry::Repeatable,
                    pb::LeaseLeasesRequest::default(),
                    |c, r| async move { LeaseClient::new(c).lease_leases(r).await },
                )
                .await
                .map_err(|e| CtlError::new(ExitCode::BadConnection, e.message))?;
            let out = ctx.printer.lease_list(&resp)?;
            ctx.emit(&out)
        }
        LeaseCommand::KeepAlive { args, once } => {
            let [id] = args.as_slice() else {
                return Err(CtlError::bad_args(
                    "lease keep-alive command needs lease ID as argument",
                ));
            };
            let id = lease_id_arg(id)?;
            keep_alive(id, once, ctx).await
        }
    }
}

async fn keep_alive(id: i64, once: bool, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    use pb::lease_client::LeaseClient;
    let client = ctx.client().await?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let bad_conn = |m: String| CtlError::new(ExitCode::BadConnection, m);
    let send = |tx: &tokio::sync::mpsc::Sender<pb::LeaseKeepAliveRequest>| {
        tx.try_send(pb::LeaseKeepAliveRequest { id })
            .map_err(|e| CtlError::new(ExitCode::BadConnection, e.to_string()))
    };
    send(&tx)?;
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut responses = tokio::time::timeout(
        client.command_timeout(),
        LeaseClient::new(client.channel()).lease_keep_alive(client.request(stream)),
    )
    .await
    .map_err(|_| bad_conn("context deadline exceeded".into()))?
    .map_err(|s| bad_conn(status_message(&s)))?
    .into_inner();
    loop {
        let resp = responses
            .message()
            .await
            .map_err(|s| bad_conn(status_message(&s)))?
            .ok_or_else(|| bad_conn("keep-alive stream closed".into()))?;
        if resp.ttl <= 0 {
            if once {
                return Err(bad_conn("etcdserver: requested lease not found".into()));
            }
            ctx.emit(format!("lease {id:016x} expired or revoked.\n").as_bytes())?;
            return Ok(());
        }
        let out = ctx.printer.lease_keep_alive(&resp)?;
        ctx.emit(&out)?;
        if once {
            return Ok(());
        }
        let period = u64::try_from(resp.ttl / 3).unwrap_or(0).max(1);
        tokio::time::sleep(std::time::Duration::from_secs(period)).await;
        send(&tx)?;
    }
}

async fn watch(a: cli::WatchArgs, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    use tokio_stream::StreamExt as _;
    let args = bytes_args(&a.args);
    let Some(key) = args.first() else {
        return Err(CtlError::bad_args("bad number of arguments"));
    };
    if args.len() > 2 {
        // etcdctl would run the remaining arguments as a command per event.
        return Err(CtlError::bad_args("watch exec-command is not supported"));
    }
    let mut create = pb::WatchCreateRequest {
        key: key.clone(),
        start_revision: a.rev,
        prev_kv: a.prev_kv,
        progress_notify: a.progress_notify,
        ..Default::default()
    };
    if let Some(end) = args.get(1) {
        if a.prefix {
            return Err(CtlError::bad_args("unexpected range_end with --prefix"));
        }
        create.range_end = end.clone();
    }
    if a.prefix {
        if create.key.is_empty() {
            create.key = vec![0];
            create.range_end = vec![0];
        } else {
            create.range_end = kv::prefix_range_end(&create.key);
        }
    }
    let first = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
    };
    // Keep the request stream open for as long as we watch.
    let requests = tokio_stream::iter(vec![first]).chain(tokio_stream::pending());
    let client = ctx.client().await?;
    let mut responses = pb::watch_client::WatchClient::new(client.channel())
        .watch(client.request(requests))
        .await
        .map_err(|s| CtlError::error(status_message(&s)))?
        .into_inner();
    loop {
        match responses.message().await {
            Ok(Some(resp)) => {
                if resp.created && resp.events.is_empty() {
                    continue;
                }
                if resp.canceled {
                    let reason = if resp.compact_revision != 0 {
                        "etcdserver: mvcc: required revision has been compacted".to_owned()
                    } else {
                        resp.cancel_reason.clone()
                    };
                    ctx.emit_err(&format!("watch was canceled ({reason})\n"))?;
                }
                let out = ctx.printer.watch(&resp)?;
                ctx.emit(&out)?;
                if resp.canceled {
                    break;
                }
            }
            Ok(None) => break,
            Err(s) => return Err(CtlError::error(status_message(&s))),
        }
    }
    Err(CtlError::new(
        ExitCode::Interrupted,
        "watch is canceled by the server",
    ))
}
