//! `lease grant|revoke|timetolive|list|keep-alive`.

use super::Context;
use crate::cli::LeaseCommand;
use crate::client::MAX_RECV_MSG_SIZE;
use crate::client::Retry;
use crate::error::{CtlError, ExitCode, status_message};
use crate::kv;
use concord_proto::etcdserverpb as pb;

fn lease_id_arg(s: &str) -> Result<i64, CtlError> {
    kv::parse_hex_lease(s)
        .map_err(|e| CtlError::bad_args(format!("bad lease ID arg ({e}), expecting ID in Hex")))
}

pub(super) async fn lease(command: LeaseCommand, ctx: &mut Context<'_>) -> Result<(), CtlError> {
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
                    |c, r| async move {
                        LeaseClient::new(c)
                            .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                            .lease_grant(r)
                            .await
                    },
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
                    |c, r| async move {
                        LeaseClient::new(c)
                            .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                            .lease_revoke(r)
                            .await
                    },
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
                    |c, r| async move {
                        LeaseClient::new(c)
                            .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                            .lease_time_to_live(r)
                            .await
                    },
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
                    |c, r| async move {
                        LeaseClient::new(c)
                            .max_decoding_message_size(MAX_RECV_MSG_SIZE)
                            .lease_leases(r)
                            .await
                    },
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

pub(super) async fn keep_alive(id: i64, once: bool, ctx: &mut Context<'_>) -> Result<(), CtlError> {
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
        LeaseClient::new(client.channel())
            .max_decoding_message_size(MAX_RECV_MSG_SIZE)
            .lease_keep_alive(client.request(stream)),
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
