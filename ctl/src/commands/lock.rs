//! `lock <name> [command ...]`: clientv3's `concurrency.Mutex` recipe. A
//! session lease is kept alive; the lock key is `<name>/<lease id in hex>`;
//! the holder is the key with the lowest create revision under `<name>/`, and a
//! waiter watches the key created just before its own until it is deleted.

use super::{Context, bytes_args};
use crate::cli;
use crate::client::MAX_RECV_MSG_SIZE;
use crate::client::{Client, Retry};
use crate::error::{CtlError, ExitCode, status_message};
use crate::kv::prefix_range_end;
use concord_proto::etcdserverpb as pb;
use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::range_request::{SortOrder, SortTarget};
use pb::request_op::Request;
use pb::response_op::Response;
use std::time::Duration;

fn first_range(resp: &pb::TxnResponse, index: usize) -> Option<&pb::RangeResponse> {
    match resp.responses.get(index).and_then(|r| r.response.as_ref()) {
        Some(Response::ResponseRange(r)) => Some(r),
        _ => None,
    }
}

/// Keeps the session lease alive every TTL/3, as clientv3's session does:
/// a broken keep-alive stream (a restarting or unreachable server) is opened
/// again, and the session only ends when the server says the lease is gone
/// or a whole TTL passes without a renewal.
pub(super) async fn keep_session_alive(client: Client, lease: i64, ttl: i64) {
    use pb::lease_client::LeaseClient;
    let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(1).max(1));
    let period = (ttl / 3).max(Duration::from_millis(500));
    let mut expires = tokio::time::Instant::now() + ttl;
    while tokio::time::Instant::now() < expires {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let opened = LeaseClient::new(client.channel())
            .max_decoding_message_size(MAX_RECV_MSG_SIZE)
            .lease_keep_alive(client.request(stream))
            .await;
        if let Ok(resp) = opened {
            let mut responses = resp.into_inner();
            loop {
                if tx
                    .send(pb::LeaseKeepAliveRequest { id: lease })
                    .await
                    .is_err()
                {
                    break;
                }
                match tokio::time::timeout_at(expires, responses.message()).await {
                    Ok(Ok(Some(r))) if r.ttl > 0 => {
                        expires = tokio::time::Instant::now()
                            + Duration::from_secs(u64::try_from(r.ttl).unwrap_or(1));
                    }
                    // The lease is gone (revoked or expired on the server).
                    Ok(Ok(Some(_))) => return,
                    Ok(Ok(None) | Err(_)) => break,
                    Err(_) => return,
                }
                tokio::time::sleep(period).await;
            }
        }
        tokio::time::sleep(RECONNECT_BACKOFF).await;
    }
}

/// The wait before opening a broken stream again.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(300);

/// SIGINT or SIGTERM, which etcdctl's `lock` and `elect` both take as "stop"
/// (Go's `signal.Notify(sigc, SIGINT, SIGTERM)`). Made once, at the start of
/// the command, so that no signal between two waits is lost. A handler that
/// cannot be installed never reports (that signal keeps its default action).
pub(super) struct Interrupt {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Interrupt {
    pub(super) fn new() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    /// Completes at the next SIGINT or SIGTERM.
    pub(super) async fn recv(&mut self) {
        async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    if s.recv().await.is_none() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = one(&mut self.int) => {}
            () = one(&mut self.term) => {}
        }
    }
}

/// Our place in the queue of `<name>/`: our key, its create revision, and
/// whether a key created before ours may still hold the lock.
pub(super) struct Ticket {
    pub key: Vec<u8>,
    pub rev: i64,
    prefix: Vec<u8>,
    behind_someone: bool,
}

/// Puts our key under `<name>/` (unless this session already has one), with
/// `value` as an election's proposal.
pub(super) async fn enqueue(
    client: &Client,
    name: &[u8],
    lease: i64,
    value: &[u8],
) -> Result<Ticket, CtlError> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    let mut key = prefix.clone();
    key.extend(format!("{lease:x}").into_bytes());
    let owner = pb::RangeRequest {
        key: prefix.clone(),
        range_end: prefix_range_end(&prefix),
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        limit: 1,
        ..Default::default()
    };
    let txn = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Create as i32,
            key: key.clone(),
            range_end: Vec::new(),
            target_union: Some(TargetUnion::CreateRevision(0)),
        }],
        success: vec![
            pb::RequestOp {
                request: Some(Request::RequestPut(pb::PutRequest {
                    key: key.clone(),
                    value: value.to_vec(),
                    lease,
                    ..Default::default()
                })),
            },
            pb::RequestOp {
                request: Some(Request::RequestRange(owner.clone())),
            },
        ],
        failure: vec![
            pb::RequestOp {
                request: Some(Request::RequestRange(pb::RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                })),
            },
            pb::RequestOp {
                request: Some(Request::RequestRange(owner)),
            },
        ],
    };
    let resp = client
        .call(Retry::NonRepeatable, txn, |c, r| async move {
            pb::kv_client::KvClient::new(c)
                .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                .txn(r)
                .await
        })
        .await?;
    let rev = if resp.succeeded {
        resp.header.as_ref().map_or(0, |h| h.revision)
    } else {
        first_range(&resp, 0)
            .and_then(|r| r.kvs.first())
            .map_or(0, |kv| kv.create_revision)
    };
    let holder = first_range(&resp, 1).and_then(|r| r.kvs.first());
    let behind_someone = holder.is_some_and(|kv| kv.create_revision != rev);
    Ok(Ticket {
        key,
        rev,
        prefix,
        behind_someone,
    })
}

/// Waits until every key queued before ours is gone: then we hold the lock
/// (or lead the election).
pub(super) async fn wait_turn(client: &Client, ticket: &Ticket) -> Result<(), CtlError> {
    if !ticket.behind_someone {
        return Ok(());
    }
    wait_for_predecessors(client, &ticket.prefix, ticket.rev - 1).await
}

/// Takes our place in the queue and waits for our turn unless a signal comes
/// first. Interrupted while queued, we withdraw our key (as clientv3's
/// `Mutex.Lock` and `Election.Campaign` do when their context is canceled)
/// and fail with the canceled context's error.
pub(super) async fn acquire_until_signal(
    client: &Client,
    name: &[u8],
    lease: i64,
    value: &[u8],
    signal: &mut Interrupt,
) -> Result<Ticket, CtlError> {
    let canceled = || CtlError::error("context canceled");
    let ticket = tokio::select! {
        ticket = enqueue(client, name, lease, value) => ticket?,
        () = signal.recv() => return Err(canceled()),
    };
    tokio::select! {
        waited = wait_turn(client, &ticket) => {
            waited?;
            Ok(ticket)
        }
        () = signal.recv() => {
            let _ = release(client, &ticket.key, lease).await;
            Err(canceled())
        }
    }
}

/// clientv3's `waitDeletes`: until no key under `prefix` was created at or
/// before `max_create_rev`, wait for the newest such key to be deleted.
async fn wait_for_predecessors(
    client: &Client,
    prefix: &[u8],
    max_create_rev: i64,
) -> Result<(), CtlError> {
    loop {
        let req = pb::RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_range_end(prefix),
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Create as i32,
            limit: 1,
            max_create_revision: max_create_rev,
            ..Default::default()
        };
        // No deadline: a waiter waits through a server restarting.
        let resp = client
            .call_until_done(req, |c, r| async move {
                pb::kv_client::KvClient::new(c)
                    .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                    .range(r)
                    .await
            })
            .await?;
        let Some(last) = resp.kvs.first() else {
            return Ok(());
        };
        let from = resp.header.as_ref().map_or(0, |h| h.revision);
        wait_for_delete(client, &last.key, from).await?;
    }
}

/// Waits for `key` to be deleted after `from_rev`; also returns when the
/// watch breaks on a restarting or unreachable server (the caller looks
/// again), and fails only on the server's answer.
pub(super) async fn wait_for_delete(
    client: &Client,
    key: &[u8],
    from_rev: i64,
) -> Result<(), CtlError> {
    let create = pb::WatchCreateRequest {
        key: key.to_vec(),
        start_revision: from_rev,
        filters: vec![pb::watch_create_request::FilterType::Noput as i32],
        ..Default::default()
    };
    let broken = |s: &tonic::Status| {
        matches!(
            s.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        )
    };
    let opened = client.open_watch(create).await;
    let mut stream = match opened {
        Ok(stream) => stream,
        Err(s) if broken(&s) => {
            tokio::time::sleep(RECONNECT_BACKOFF).await;
            return Ok(());
        }
        Err(s) => return Err(CtlError::error(status_message(&s))),
    };
    loop {
        match stream.message().await {
            Ok(Some(resp)) => {
                let deleted = resp
                    .events
                    .iter()
                    .any(|e| e.r#type == concord_proto::mvccpb::event::EventType::Delete as i32);
                if deleted || resp.canceled {
                    return Ok(());
                }
            }
            Ok(None) => return Ok(()),
            Err(s) if broken(&s) => {
                tokio::time::sleep(RECONNECT_BACKOFF).await;
                return Ok(());
            }
            Err(s) => return Err(CtlError::error(status_message(&s))),
        }
    }
}

pub(super) async fn release(client: &Client, key: &[u8], lease: i64) -> Result<(), CtlError> {
    let del = pb::DeleteRangeRequest {
        key: key.to_vec(),
        ..Default::default()
    };
    client
        .call(Retry::NonRepeatable, del, |c, r| async move {
            pb::kv_client::KvClient::new(c)
                .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                .delete_range(r)
                .await
        })
        .await?;
    // Closing the session revokes its lease; failure here changes nothing.
    let _ = client
        .call(
            Retry::NonRepeatable,
            pb::LeaseRevokeRequest { id: lease },
            |c, r| async move {
                pb::lease_client::LeaseClient::new(c)
                    .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                    .lease_revoke(r)
                    .await
            },
        )
        .await;
    Ok(())
}

/// Go's `exec.Cmd.Run` error texts.
fn exec_error(program: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!(
                "exec: {}: executable file not found in $PATH",
                crate::gofmt::quote(program.as_bytes())
            )
        }
        _ => e.to_string(),
    }
}

pub(super) async fn lock(a: cli::LockArgs, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    let args = bytes_args(&a.args);
    let Some(name) = args.first() else {
        return Err(CtlError::bad_args(
            "lock takes a lock name argument and an optional command to execute",
        ));
    };
    let mut signal = Interrupt::new();
    let client = ctx.client().await?;
    let grant = client
        .call(
            Retry::NonRepeatable,
            pb::LeaseGrantRequest { ttl: a.ttl, id: 0 },
            |c, r| async move {
                pb::lease_client::LeaseClient::new(c)
                    .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                    .lease_grant(r)
                    .await
            },
        )
        .await?;
    let lease = grant.id;
    let session = tokio::spawn(keep_session_alive(client.clone(), lease, grant.ttl));
    let stop_session = session.abort_handle();

    let Ticket { key, rev, .. } =
        acquire_until_signal(&client, name, lease, b"", &mut signal).await?;

    if let Some(program) = a.args.get(1) {
        ctx.emit(b"")?; // flush our buffered output before the child writes
        let status = tokio::process::Command::new(program)
            .args(&a.args[2..])
            .env(
                "ETCD_LOCK_KEY",
                std::ffi::OsStr::new(std::str::from_utf8(&key).unwrap_or_default()),
            )
            .env("ETCD_LOCK_REV", rev.to_string())
            .status()
            .await;
        let unlocked = release(&client, &key, lease).await;
        stop_session.abort();
        let program = program.to_string_lossy();
        return match status {
            Err(e) => Err(CtlError::error(exec_error(&program, &e))),
            Ok(s) if !s.success() => Err(CtlError::error(match s.code() {
                Some(code) => format!("exit status {code}"),
                None => "signal: killed".to_owned(),
            })),
            Ok(_) => unlocked,
        };
    }

    let held = client
        .call(
            Retry::Repeatable,
            pb::RangeRequest {
                key: key.clone(),
                ..Default::default()
            },
            |c, r| async move {
                pb::kv_client::KvClient::new(c)
                    .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                    .range(r)
                    .await
            },
        )
        .await?;
    if held.kvs.is_empty() {
        return Err(CtlError::error("lock lost on init"));
    }
    let out = ctx.printer.get(&held)?;
    ctx.emit(&out)?;
    tokio::select! {
        () = signal.recv() => {
            let result = release(&client, &key, lease).await;
            stop_session.abort();
            result
        }
        _ = session => Err(CtlError::new(ExitCode::Error, "session expired")),
    }
}
