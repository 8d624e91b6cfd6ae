//! The commands: each turns parsed arguments into requests, sends them, and
//! writes what etcdctl would print.

use crate::cli::{self, Command, EndpointCommand, MemberCommand};
use crate::client::{Client, ClientConfig};
use crate::error::{CtlError, ExitCode};
use crate::printer::Printer;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

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
            .map_err(|e| match e.kind() {
                // The reader went away (`| head`): stop quietly, as Go's
                // default SIGPIPE handling would.
                std::io::ErrorKind::BrokenPipe => CtlError::silent(ExitCode::Io),
                _ => CtlError::new(ExitCode::Io, e.to_string()),
            })
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

mod check;
mod cluster;
mod elect;
mod kv;
mod lease;
mod lock;
mod mirror;
mod snapshot;
mod watch;

use cluster::{
    alarm, defrag, endpoint_hashkv, endpoint_health, endpoint_status, member_add, member_list,
    member_promote, member_remove, member_update, move_leader, snapshot_save,
};
use elect::elect;
use kv::{compaction, del, get, put, txn};
use lease::lease;
use lock::lock;
use mirror::make_mirror;
use watch::watch;

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
        Command::Defrag(a) if !a.data_dir.is_empty() => {
            // Offline: the store of a data dir no member is running on, so no writes to
            // keep the defragment's pace for.
            let store = std::path::Path::new(&a.data_dir).join("member").join("db");
            let options = concord_mvcc::StoreOptions {
                defrag_bytes_per_sec: 0,
                ..Default::default()
            };
            let result = concord_server::state::backend::Backend::open(store, options)
                .and_then(|backend| backend.store().defragment());
            match result {
                Ok(()) => ctx
                    .emit(format!("Finished defragmenting etcd data[{}]\n", a.data_dir).as_bytes()),
                Err(e) => {
                    ctx.emit_err(&format!(
                        "Failed to defragment etcd data[{}] ({e})\n",
                        a.data_dir
                    ))?;
                    Err(CtlError::silent(ExitCode::Error))
                }
            }
        }
        Command::Defrag(a) => defrag(a.cluster, ctx).await,
        Command::MoveLeader { args } => move_leader(args, ctx).await,
        Command::Snapshot(a) => match a.command {
            cli::SnapshotCommand::Save { args } => snapshot_save(args, ctx).await,
            offline => snapshot::snapshot_offline(offline, ctx),
        },
        Command::Auth(a) => crate::auth::auth(a.command, ctx).await,
        Command::User(a) => crate::auth::user(a.command, ctx).await,
        Command::Role(a) => crate::auth::role(a.command, ctx).await,
        Command::Lease(a) => lease(a.command, ctx).await,
        Command::MakeMirror(a) => make_mirror(a, ctx).await,
        Command::Lock(a) => lock(a, ctx).await,
        Command::Elect(a) => elect(a, ctx).await,
        Command::Watch(a) => watch(a, ctx).await,
        Command::Migrate(_) => Err(CtlError::error(
            "migrate (v2 store to mvcc) is not supported by concordctl",
        )),
        Command::Check(a) => check::check(a.command, ctx).await,
        Command::Version => {
            let text =
                format!("etcdctl version: {ETCDCTL_COMPAT_VERSION}\nAPI version: {API_VERSION}\n");
            ctx.emit(text.as_bytes())
        }
    }
}
