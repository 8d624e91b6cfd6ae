//! `elect <name> <proposal>` and `elect -l <name>`: clientv3's
//! `concurrency.Election` recipe. Campaigning is the lock queue with the
//! proposal as the key's value; observing follows the oldest key under
//! `<name>/` and prints every value it takes.

use super::Context;
use super::lock::{Interrupt, Ticket, acquire_until_signal, keep_session_alive, release};
use crate::cli;
use crate::client::MAX_RECV_MSG_SIZE;
use crate::client::{Client, Retry};
use crate::error::{CtlError, ExitCode, status_message};
use crate::kv::prefix_range_end;
use concord_proto::etcdserverpb as pb;
use concord_proto::mvccpb;
use pb::range_request::{SortOrder, SortTarget};
use std::os::unix::ffi::OsStrExt;

/// clientv3's default session TTL in seconds.
const SESSION_TTL: i64 = 60;

pub(super) async fn elect(a: cli::ElectArgs, ctx: &mut Context<'_>) -> Result<(), CtlError> {
    let (name, proposal) = match a.args.as_slice() {
        [name] => (name.as_bytes().to_vec(), None),
        [name, proposal] => (name.as_bytes().to_vec(), Some(proposal.as_bytes().to_vec())),
        _ => {
            return Err(CtlError::bad_args(
                "elect takes one election name argument and an optional proposal argument",
            ));
        }
    };
    match (proposal, a.listen) {
        (None, false) => Err(CtlError::bad_args("no proposal argument but -l not set")),
        (Some(_), true) => Err(CtlError::bad_args("proposal given but -l is set")),
        (None, true) => {
            let mut signal = Interrupt::new();
            let client = ctx.client().await?;
            tokio::select! {
                result = observe(&client, &name, ctx) => result,
                () = signal.recv() => Ok(()),
            }
        }
        (Some(value), false) => campaign(&name, &value, ctx).await,
    }
}

async fn campaign(name: &[u8], value: &[u8], ctx: &mut Context<'_>) -> Result<(), CtlError> {
    let mut signal = Interrupt::new();
    let client = ctx.client().await?;
    let grant = client
        .call(
            Retry::NonRepeatable,
            pb::LeaseGrantRequest {
                ttl: SESSION_TTL,
                id: 0,
            },
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
    let won = acquire_until_signal(&client, name, lease, value, &mut signal).await;
    let Ticket { key, .. } = match won {
        Ok(ticket) => ticket,
        Err(e) => {
            stop_session.abort();
            return Err(e);
        }
    };
    let leader = client
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
    let out = ctx.printer.get(&leader)?;
    ctx.emit(&out)?;
    tokio::select! {
        () = signal.recv() => {
            // Resign: give up leadership and close the session.
            let result = release(&client, &key, lease).await;
            stop_session.abort();
            result
        }
        _ = session => Err(CtlError::new(ExitCode::Error, "elect: session expired")),
    }
}

/// Prints the current leader's key and value, then every new proclamation and
/// every change of leader, until interrupted.
async fn observe(client: &Client, name: &[u8], ctx: &mut Context<'_>) -> Result<(), CtlError> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    // What was printed last (key, mod revision): after a broken watch the
    // observer looks again and must not print the same proclamation twice.
    let mut printed: Option<(Vec<u8>, i64)> = None;
    'observe: loop {
        let oldest = pb::RangeRequest {
            key: prefix.clone(),
            range_end: prefix_range_end(&prefix),
            sort_order: SortOrder::Ascend as i32,
            sort_target: SortTarget::Create as i32,
            limit: 1,
            ..Default::default()
        };
        let resp = client
            .call_until_done(oldest, |c, r| async move {
                pb::kv_client::KvClient::new(c)
                    .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                    .range(r)
                    .await
            })
            .await?;
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        let (header, leader) = match resp.kvs.first() {
            Some(kv) => (resp.header, kv.clone()),
            None => {
                // No candidate yet: the first key put under the prefix leads.
                let range_end = prefix_range_end(&prefix);
                let Some(mut events) = watch(client, &prefix, &range_end, revision + 1).await?
                else {
                    continue 'observe;
                };
                loop {
                    let Some(resp) = next(&mut events).await? else {
                        continue 'observe;
                    };
                    let put = resp.events.iter().find(|e| e.r#type == put_type());
                    if let Some(kv) = put.and_then(|e| e.kv.clone()) {
                        break (resp.header, kv);
                    }
                }
            }
        };
        // Follow this leader from just after what we have printed.
        let seen = revision.max(leader.mod_revision);
        print_once(ctx, &mut printed, header, &leader)?;
        let Some(mut events) = watch(client, &leader.key, &[], seen + 1).await? else {
            continue 'observe;
        };
        loop {
            let Some(resp) = next(&mut events).await? else {
                continue 'observe;
            };
            for event in &resp.events {
                if event.r#type != put_type() {
                    continue 'observe;
                }
                if let Some(kv) = &event.kv {
                    print_once(ctx, &mut printed, resp.header, kv)?;
                }
            }
        }
    }
}

fn print_once(
    ctx: &mut Context<'_>,
    printed: &mut Option<(Vec<u8>, i64)>,
    header: Option<pb::ResponseHeader>,
    kv: &mvccpb::KeyValue,
) -> Result<(), CtlError> {
    let this = (kv.key.clone(), kv.mod_revision);
    if printed.as_ref() == Some(&this) {
        return Ok(());
    }
    *printed = Some(this);
    print_leader(ctx, header, kv)
}

/// Whether a stream failed with its connection (a restarting server).
fn broken(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    ) && !s.message().starts_with("etcdserver: ")
}

/// The next watch response; `None` when the stream broke or ended (look
/// again after a pause).
async fn next(
    events: &mut tonic::Streaming<pb::WatchResponse>,
) -> Result<Option<pb::WatchResponse>, CtlError> {
    match events.message().await {
        Ok(Some(resp)) => Ok(Some(resp)),
        Ok(None) => {
            tokio::time::sleep(REWATCH_BACKOFF).await;
            Ok(None)
        }
        Err(s) if broken(&s) => {
            tokio::time::sleep(REWATCH_BACKOFF).await;
            Ok(None)
        }
        Err(s) => Err(watch_error(s)),
    }
}

const REWATCH_BACKOFF: std::time::Duration = std::time::Duration::from_millis(300);

fn put_type() -> i32 {
    mvccpb::event::EventType::Put as i32
}

fn watch_error(s: tonic::Status) -> CtlError {
    CtlError::error(status_message(&s))
}

fn print_leader(
    ctx: &mut Context<'_>,
    header: Option<pb::ResponseHeader>,
    kv: &mvccpb::KeyValue,
) -> Result<(), CtlError> {
    let resp = pb::RangeResponse {
        header,
        kvs: vec![kv.clone()],
        more: false,
        count: 1,
    };
    let out = ctx.printer.get(&resp)?;
    ctx.emit(&out)
}

/// Opens a watch; `None` when the server could not be reached (try again).
async fn watch(
    client: &Client,
    key: &[u8],
    range_end: &[u8],
    start_revision: i64,
) -> Result<Option<tonic::Streaming<pb::WatchResponse>>, CtlError> {
    let create = pb::WatchCreateRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        start_revision,
        ..Default::default()
    };
    let opened = client.open_watch(create).await;
    match opened {
        Ok(stream) => Ok(Some(stream)),
        Err(s) if broken(&s) => {
            tokio::time::sleep(REWATCH_BACKOFF).await;
            Ok(None)
        }
        Err(s) => Err(watch_error(s)),
    }
}
